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
