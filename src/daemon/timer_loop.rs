//! The timer loop: sleeps until the earliest next occurrence, asks the `Timer` what is
//! due, and hands each decision on. It never polls per job. On the system clock a
//! wall-clock timer (`clock::Steps`) wakes it at once when the clock is set or a resume
//! from suspend passes the next occurrence, so an idle daemon does not wake; on a clock
//! without one it looks at the clock every `MAX_SLEEP`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use tokio::sync::mpsc;
use tracing::warn;

use super::signals::Control;
use crate::clock::{Clock, Steps, Woke};
use crate::config::Job;
use crate::deliver::utc;
use crate::timer::{Decision, SkipReason, Timer};

/// Longest single sleep of the timer loop on a clock without a step watch. The loop
/// re-reads the wall clock when it wakes, so a suspend, an NTP step or a manual clock
/// change delays a reminder by at most this much, not by however long a monotonic sleep
/// had left.
pub const MAX_SLEEP: Duration = Duration::from_secs(60);

/// Longest single sleep with a step watch, which wakes the loop itself on a step or a
/// resume: a look an hour in case the watch ever misses one.
pub const WATCHED_SLEEP: Duration = Duration::from_secs(3600);

/// The wall-clock timer is armed this long after the monotonic sleep ends, so that the
/// two do not both wake the loop for one occurrence; after a resume from suspend the
/// catch-up is at most this late.
const WALL_AFTER: Duration = Duration::from_secs(1);

/// A wall-clock jump larger than this between two wakes is logged as a suspend/resume
/// or a clock change.
const JUMP_WARNING: Duration = Duration::from_secs(5);

/// What the timer loop asks at `Control::Reload`: a new `Timer` (the configuration was
/// swapped), or `None` (it was refused, and the old one keeps running). A trait rather
/// than an async closure, so that the daemon's future is provably `Send`.
pub trait Reload {
    fn reload(
        &mut self,
        now: DateTime<Utc>,
    ) -> impl std::future::Future<Output = Option<Timer>> + Send;
}

/// Never reloads: for a timer loop without a configuration file (tests, benchmarks).
pub struct NoReload;

impl Reload for NoReload {
    #[allow(clippy::manual_async_fn)] // the trait's future must be `Send`
    fn reload(
        &mut self,
        _now: DateTime<Utc>,
    ) -> impl std::future::Future<Output = Option<Timer>> + Send {
        async { None }
    }
}

/// One fire handed from the timer loop to delivery, with how late the hand-off was.
#[derive(Clone, Debug)]
pub struct Fire {
    pub job: Arc<Job>,
    pub occurrence: DateTime<Utc>,
    pub fired_at: DateTime<Utc>,
    pub caught_up: bool,
}

/// What the timer loop reports.
#[derive(Clone, Debug)]
pub enum TimerEvent {
    Fire(Fire),
    /// A missed occurrence the catch-up policy drops (already logged).
    Skip {
        job: Arc<Job>,
        occurrence: DateTime<Utc>,
        reason: SkipReason,
    },
    /// Missed occurrences from `first` to `last` that the policy drops, as one: the
    /// worker counts them off the loop, logs one line and records one row.
    SkipRange {
        job: Arc<Job>,
        first: DateTime<Utc>,
        last: DateTime<Utc>,
        reason: SkipReason,
    },
}

/// The timer loop alone: sleeps until the next occurrence, decides what is due, and
/// reports each decision to `on`. Returns when `events` yields `Shutdown` or closes.
/// `reload` is asked for a new `Timer` on `Reload`; it returns `None` to keep the old.
pub async fn timer_loop(
    mut timer: Timer,
    clock: &dyn Clock,
    events: &mut mpsc::Receiver<Control>,
    mut on: impl FnMut(TimerEvent),
    mut reload: impl Reload,
) {
    let mut last_wake = clock.now();
    let mut steps = clock.steps();
    loop {
        let now = clock.now();
        if now + chrono::Duration::from_std(JUMP_WARNING).unwrap_or_default() < last_wake {
            warn!(
                by_s = (last_wake - now).num_seconds(),
                "the wall clock went back; occurrences already handled are not sent again"
            );
        }
        last_wake = now;
        fire_due(&mut timer, clock, &mut on);

        let deadline = timer.next_deadline();
        let longest = if steps.is_some() {
            WATCHED_SLEEP
        } else {
            MAX_SLEEP
        };
        let sleep_for = deadline.map_or(longest, |t| {
            (t - clock.now())
                .to_std()
                .unwrap_or_default()
                .saturating_sub(clock.spin_window())
                .min(longest)
        });
        let expected_wake = clock.now() + chrono::Duration::from_std(sleep_for).unwrap_or_default();
        clock.sleeping_until(expected_wake);
        if let Some(watch) = &mut steps
            && let Err(e) = watch
                .arm(expected_wake + chrono::Duration::from_std(WALL_AFTER).unwrap_or_default())
        {
            warn!(error = %e, "the wall-clock timer failed; looking at the clock every minute instead");
            steps = None;
            // The sleep above was reckoned with the timer: reckon it again without.
            continue;
        }
        tokio::select! {
            () = tokio::time::sleep(sleep_for) => {
                warn_if_jumped(clock, expected_wake);
                if let Some(d) = deadline
                    && d - clock.now() <= chrono::Duration::from_std(clock.spin_window()).unwrap_or_default() {
                        spin_until(clock, d);
                    }
            }
            woke = wall(steps.as_ref()) => match woke {
                Ok(Woke::Stepped | Woke::Reached) => {
                    warn_if_jumped(clock, expected_wake);
                }
                Err(e) => {
                    warn!(error = %e, "the wall-clock timer failed; looking at the clock every minute instead");
                    steps = None;
                }
            },
            event = events.recv() => match event {
                Some(Control::Reload) => {
                    // Fire whatever is due under the old jobs first, so nothing falls
                    // between the old timer and the new one.
                    fire_due(&mut timer, clock, &mut on);
                    if let Some(new) = reload.reload(clock.now()).await {
                        timer = new;
                    }
                }
                Some(Control::Shutdown) | None => return,
            }
        }
    }
}

/// Warns when the loop woke more than `JUMP_WARNING` after it meant to.
fn warn_if_jumped(clock: &dyn Clock, expected_wake: DateTime<Utc>) {
    let late = (clock.now() - expected_wake).to_std().unwrap_or_default();
    if late > JUMP_WARNING {
        warn!(
            by_s = late.as_secs(),
            "the wall clock jumped forward (suspend/resume or clock change); checking for missed occurrences"
        );
    }
}

/// The wall-clock timer's wake, or never without one.
async fn wall(steps: Option<&Steps>) -> std::io::Result<Woke> {
    match steps {
        Some(s) => s.wait().await,
        None => std::future::pending().await,
    }
}

/// Decides everything due now, logs skips, and reports each decision.
fn fire_due(timer: &mut Timer, clock: &dyn Clock, on: &mut impl FnMut(TimerEvent)) {
    timer.due(clock.now(), |job, d| match d {
        Decision::Fire { occurrence, caught_up, .. } => {
            // Stamp the hand-off itself: this is the lateness the design notes report.
            on(TimerEvent::Fire(Fire { job: Arc::clone(job), occurrence, fired_at: clock.now(), caught_up }));
        }
        Decision::Skip { occurrence, late, reason, .. } => {
            warn!(job = %job.name, occurrence = %utc(occurrence), late_s = late.as_secs(), reason = reason.describe(), "skipped");
            on(TimerEvent::Skip { job: Arc::clone(job), occurrence, reason });
        }
        Decision::SkipRange { first, last, reason, .. } => {
            on(TimerEvent::SkipRange { job: Arc::clone(job), first, last, reason });
        }
    });
}

/// Waits actively for the last moments before `deadline`, on clocks that allow it.
fn spin_until(clock: &dyn Clock, deadline: DateTime<Utc>) {
    let window = clock.spin_window();
    if window.is_zero() {
        return;
    }
    // Bounded in real time, whatever the clock says.
    let limit = Instant::now() + window * 2;
    while clock.now() < deadline && Instant::now() < limit {
        std::thread::yield_now();
    }
}
