//! The wall clock, as an input.
//!
//! Scheduling is a pure function of "now"; the daemon asks a `Clock` and tests give it
//! one that follows tokio's paused time, so a test can jump over a DST change in
//! microseconds of real time.

use chrono::{DateTime, Utc};

/// The source of "now" for the timer loop.
pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> DateTime<Utc>;

    /// How long before a deadline the timer loop stops sleeping and waits actively.
    /// tokio's timer has a 1 ms resolution and rounds up, so a sleep alone is 1-2 ms
    /// late; a clock that runs in real time may finish the wait by spinning. A clock
    /// on paused tokio time must not (spinning does not advance it).
    fn spin_window(&self) -> std::time::Duration {
        std::time::Duration::ZERO
    }

    /// Whether this clock runs in real time. The worker wakes every second to read
    /// orders (`cronmail pause`) only then: on paused tokio time that would be a wake
    /// per virtual second, and a test's virtual week 600,000 of them.
    fn real_time(&self) -> bool {
        false
    }

    /// A watch on the wall clock's steps, where this clock can have one (the system's).
    /// Without one the timer loop looks at the clock every `MAX_SLEEP`.
    fn steps(&self) -> Option<Steps> {
        None
    }

    /// The timer loop says when it next means to wake (`/healthz` judges it stuck only
    /// well after that).
    fn sleeping_until(&self, _wake: DateTime<Utc>) {}
}

/// The system's real-time clock.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }

    fn spin_window(&self) -> std::time::Duration {
        std::time::Duration::from_millis(2)
    }

    fn real_time(&self) -> bool {
        true
    }

    fn steps(&self) -> Option<Steps> {
        match Steps::new() {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::debug!(error = %e, "no timerfd: the timer loop looks at the wall clock every minute");
                None
            }
        }
    }
}

/// Wall time = `base` + tokio time elapsed since creation. Under
/// `tokio::time::pause()` it advances exactly as far as the test's timers do.
#[derive(Clone, Copy, Debug)]
pub struct TokioClock {
    base: DateTime<Utc>,
    start: tokio::time::Instant,
}

impl TokioClock {
    pub fn starting_at(base: DateTime<Utc>) -> Self {
        TokioClock {
            base,
            start: tokio::time::Instant::now(),
        }
    }
}

impl Clock for TokioClock {
    fn now(&self) -> DateTime<Utc> {
        let elapsed = self.start.elapsed();
        self.base + chrono::Duration::from_std(elapsed).unwrap_or(chrono::Duration::MAX)
    }
}

/// Why `Steps::wait` returned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Woke {
    /// The armed time passed on the wall clock (also after a resume from suspend, when
    /// a monotonic sleep would still have the suspended time left).
    Reached,
    /// The wall clock was set (an NTP step, `date -s`, a resume that moved it).
    Stepped,
}

/// Learns of the wall clock's steps as they happen: a timer on `CLOCK_REALTIME` armed
/// at an absolute time with `TFD_TIMER_CANCEL_ON_SET`, which the kernel cancels when the
/// clock is set. With it the timer loop sleeps until the next occurrence however far
/// off, where it otherwise wakes every `MAX_SLEEP` to look at the clock.
pub struct Steps {
    fd: tokio::io::unix::AsyncFd<std::os::fd::OwnedFd>,
}

impl std::fmt::Debug for Steps {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Steps")
    }
}

impl Steps {
    /// A disarmed timer; fails outside a tokio runtime or where timerfd is refused.
    pub fn new() -> std::io::Result<Self> {
        use rustix::time::{TimerfdClockId, TimerfdFlags, timerfd_create};
        let fd = timerfd_create(
            TimerfdClockId::Realtime,
            TimerfdFlags::NONBLOCK | TimerfdFlags::CLOEXEC,
        )?;
        // Deprecated in tokio 1.53 for types whose descriptor can be closed or replaced
        // under the registration (tokio#8587); the AsyncFd owns this OwnedFd outright.
        #[allow(deprecated)]
        let fd = tokio::io::unix::AsyncFd::with_interest(fd, tokio::io::Interest::READABLE)?;
        Ok(Steps { fd })
    }

    /// Arms the timer for the wall time `at` (a time already past fires at once),
    /// replacing what was armed before.
    pub fn arm(&mut self, at: DateTime<Utc>) -> std::io::Result<()> {
        use rustix::time::{Itimerspec, TimerfdTimerFlags, Timespec, timerfd_settime};
        // tv_sec 0 and tv_nsec 0 would disarm it; no wall time cronmail arms is 1970.
        let at = Timespec {
            tv_sec: at.timestamp().max(1),
            tv_nsec: i64::from(at.timestamp_subsec_nanos()).min(999_999_999) as _,
        };
        let zero = Timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        timerfd_settime(
            self.fd.get_ref(),
            TimerfdTimerFlags::ABSTIME | TimerfdTimerFlags::CANCEL_ON_SET,
            &Itimerspec {
                it_interval: zero,
                it_value: at,
            },
        )?;
        Ok(())
    }

    /// Until the armed time is reached or the wall clock is set.
    pub async fn wait(&self) -> std::io::Result<Woke> {
        loop {
            let mut ready = self.fd.readable().await?;
            let mut ticks = [0u8; 8];
            match ready.try_io(|fd| {
                rustix::io::read(fd.get_ref(), &mut ticks).map_err(std::io::Error::from)
            }) {
                Ok(Ok(_)) => return Ok(Woke::Reached),
                Ok(Err(e))
                    if e.raw_os_error() == Some(rustix::io::Errno::CANCELED.raw_os_error()) =>
                {
                    return Ok(Woke::Stepped);
                }
                Ok(Err(e)) => return Err(e),
                // Readiness left over from a time armed before: wait again.
                Err(_would_block) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const BOUND: Duration = Duration::from_secs(10);

    #[tokio::test]
    async fn the_wall_clock_timer_wakes_at_its_time_and_not_before() {
        let mut steps = Steps::new().unwrap();
        // Armed in the past, then re-armed: the readiness left by the first must not
        // end the wait for the second.
        steps
            .arm(Utc::now() - chrono::Duration::seconds(1))
            .unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
        let at = Utc::now() + chrono::Duration::milliseconds(300);
        steps.arm(at).unwrap();
        let woke = tokio::time::timeout(BOUND, steps.wait())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(woke, Woke::Reached);
        assert!(Utc::now() >= at, "woke {} before {at}", Utc::now());
    }

    #[tokio::test]
    async fn the_wall_clock_timer_armed_in_the_past_wakes_at_once() {
        let mut steps = Steps::new().unwrap();
        steps.arm(Utc::now() - chrono::Duration::hours(1)).unwrap();
        let woke = tokio::time::timeout(BOUND, steps.wait())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(woke, Woke::Reached);
    }

    /// Setting the clock (here to what it reads, a step of microseconds) cancels a
    /// timer an hour away, and the wait ends at once. Needs `CAP_SYS_TIME`: `.ci/run`
    /// runs as root; as another user the test says it skipped.
    #[tokio::test]
    async fn setting_the_wall_clock_wakes_the_timer_at_once() {
        use rustix::time::{ClockId, clock_gettime, clock_settime};
        let mut steps = Steps::new().unwrap();
        steps.arm(Utc::now() + chrono::Duration::hours(1)).unwrap();
        let root = std::fs::read_to_string("/proc/self/status")
            .unwrap()
            .lines()
            .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(2) == Some("0"));
        match clock_settime(ClockId::Realtime, clock_gettime(ClockId::Realtime)) {
            Ok(()) => {}
            Err(e) if !root => {
                eprintln!("skipped: setting the clock needs CAP_SYS_TIME ({e})");
                return;
            }
            Err(e) => panic!("root, and setting the clock failed: {e}"),
        }
        let woke = tokio::time::timeout(BOUND, steps.wait()).await;
        assert_eq!(woke.unwrap().unwrap(), Woke::Stepped);
    }
}
