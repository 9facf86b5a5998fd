//! Which occurrences are due: a min-heap of every job's next instant, and the
//! missed-run policy. Pure: `now` is an argument, nothing here sleeps or spawns.
//!
//! The daemon's loop sleeps until `next_deadline()` (see `daemon::timer_loop`),
//! then asks `due(now)`. Only the **newest** due occurrence of a job may be on time (at
//! most `ON_TIME` late), and it fires normally. Every older one was missed (the machine
//! was suspended, cronmail was down, the clock jumped), and so is a newest one later
//! than `ON_TIME`: the job's `catch_up` policy decides whether it is sent or skipped.
//!
//! A catch-up costs a few schedule searches per job, not one step per missed
//! occurrence: the newest due occurrence is found by an exponential search back from
//! `now`, a stretch of skipped occurrences is reported as one range (`SkipRange`), and
//! `all` walks only the window it can send, `max_late`.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::config::{CatchUp, Job};
use crate::schedule::Schedule;

/// Lateness below which the newest due occurrence counts as on time. A burst of 10,000
/// jobs in one second, or a busy machine, makes fires late by milliseconds.
pub const ON_TIME: Duration = Duration::from_secs(60);

/// What to do with one occurrence, or a stretch of them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Send it. `late` is how far behind its scheduled instant it is (zero-ish normally).
    Fire {
        job: usize,
        occurrence: DateTime<Utc>,
        late: Duration,
        caught_up: bool,
    },
    /// Do not send it, and say why.
    Skip {
        job: usize,
        occurrence: DateTime<Utc>,
        late: Duration,
        reason: SkipReason,
    },
    /// Do not send any occurrence from `first` to `last` (both included, at least two):
    /// one decision, however many there are (`count_between` counts them).
    SkipRange {
        job: usize,
        first: DateTime<Utc>,
        last: DateTime<Utc>,
        reason: SkipReason,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SkipReason {
    /// `catch_up = "skip"`.
    Policy,
    /// `catch_up = "latest"` and a later occurrence was also missed.
    Superseded,
    /// Later than `max_late`.
    TooLate,
}
impl SkipReason {
    pub fn describe(self) -> &'static str {
        match self {
            SkipReason::Policy => "missed, and catch_up = \"skip\"",
            SkipReason::Superseded => {
                "missed, and catch_up = \"latest\" sends only the newest missed one"
            }
            SkipReason::TooLate => "missed by more than max_late",
        }
    }

    /// The policy behind the skip, for the line that reports a stretch of them.
    pub fn policy(self, job: &Job) -> String {
        match self {
            SkipReason::Policy => "catch_up = skip".to_owned(),
            SkipReason::Superseded => "catch_up = latest sends only the newest".to_owned(),
            SkipReason::TooLate => format!(
                "missed by more than max_late = {}",
                humantime::format_duration(job.max_late)
            ),
        }
    }
}

/// The jobs' schedules and the heap of their next occurrences.
pub struct Timer {
    jobs: Arc<[Arc<Job>]>,
    heap: BinaryHeap<Reverse<(DateTime<Utc>, usize)>>,
}

impl Timer {
    /// Starts every enabled job. A job with a `handled` instant (the last occurrence
    /// the ledger has seen) resumes after it, so occurrences missed while cronmail was
    /// down come due at once and meet the catch-up policy; others start after `now`.
    pub fn new(
        jobs: Arc<[Arc<Job>]>,
        now: DateTime<Utc>,
        handled: &HashMap<String, DateTime<Utc>>,
    ) -> Self {
        let mut heap = BinaryHeap::with_capacity(jobs.len());
        for (i, job) in jobs.iter().enumerate() {
            if !job.enabled {
                continue;
            }
            let from = handled.get(&*job.name).copied().map_or(now, |h| h.min(now));
            if let Some(next) = job.schedule.next_after(from) {
                heap.push(Reverse((next, i)));
            }
        }
        Timer { jobs, heap }
    }

    pub fn job(&self, i: usize) -> &Arc<Job> {
        &self.jobs[i]
    }

    /// The earliest pending occurrence and its job.
    pub fn peek(&self) -> Option<(DateTime<Utc>, usize)> {
        self.heap.peek().map(|Reverse(e)| *e)
    }

    pub fn next_deadline(&self) -> Option<DateTime<Utc>> {
        self.peek().map(|(t, _)| t)
    }

    /// Pops every occurrence due at `now` and decides each one. Calls `out` in order.
    ///
    /// A fire less than a second late is certainly its job's newest due occurrence (no
    /// two occurrences are less than a second apart), so it is handed to `out` before
    /// any next occurrence is computed: in a burst of thousands of jobs the first is not
    /// kept waiting for the last's cron arithmetic.
    pub fn due(&mut self, now: DateTime<Utc>, mut out: impl FnMut(&Arc<Job>, Decision)) {
        let mut popped = Vec::new();
        loop {
            popped.clear();
            while let Some(&Reverse((t, i))) = self.heap.peek() {
                if t > now {
                    break;
                }
                self.heap.pop();
                let late = (now - t).to_std().unwrap_or_default();
                let fast = late < Duration::from_secs(1);
                if fast {
                    out(
                        &self.jobs[i],
                        Decision::Fire {
                            job: i,
                            occurrence: t,
                            late,
                            caught_up: false,
                        },
                    );
                }
                popped.push((t, i, fast));
            }
            if popped.is_empty() {
                return;
            }
            for &(t, i, fast) in &popped {
                let job = &self.jobs[i];
                let next = if fast {
                    job.schedule.next_after(t)
                } else {
                    catch_up(job, i, t, now, &mut |d| out(job, d))
                };
                if let Some(next) = next {
                    self.heap.push(Reverse((next, i)));
                }
            }
        }
    }
}

/// The first occurrence at or after `t`.
fn at_or_after(s: &Schedule, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
    s.next_after(t - chrono::Duration::nanoseconds(1))
}

/// The last occurrence `o` with `floor <= o < x`, found by searching back from `x` in
/// doubling steps: a few searches, however far back `floor` is.
pub fn last_before(s: &Schedule, x: DateTime<Utc>, floor: DateTime<Utc>) -> Option<DateTime<Utc>> {
    let mut back = chrono::Duration::seconds(1);
    loop {
        let from = (x - back).max(floor);
        if let Some(mut c) = at_or_after(s, from).filter(|c| *c < x) {
            while let Some(n) = s.next_after(c).filter(|n| *n < x) {
                c = n;
            }
            return Some(c);
        }
        if from == floor {
            return None;
        }
        back = back * 2;
    }
}

/// How many occurrences lie in `[first, last]`, counted up to `cap` (`None` past it).
pub fn count_between(
    s: &Schedule,
    first: DateTime<Utc>,
    last: DateTime<Utc>,
    cap: u64,
) -> Option<u64> {
    let mut n = 0;
    let mut t = at_or_after(s, first);
    while let Some(o) = t.filter(|o| *o <= last) {
        n += 1;
        if n > cap {
            return None;
        }
        t = s.next_after(o);
    }
    Some(n)
}

/// Decides the occurrences of `job` from `first` (due, at least a second late) up to
/// `now`, and returns its first occurrence after `now`.
fn catch_up(
    job: &Job,
    i: usize,
    first: DateTime<Utc>,
    now: DateTime<Utc>,
    out: &mut impl FnMut(Decision),
) -> Option<DateTime<Utc>> {
    let s = &job.schedule;
    let after_first = s.next_after(first);
    let newest = match after_first {
        Some(n) if n <= now => {
            last_before(s, now + chrono::Duration::nanoseconds(1), first).unwrap_or(first)
        }
        _ => first,
    };
    let late = |t: DateTime<Utc>| (now - t).to_std().unwrap_or_default();
    let within = |t: DateTime<Utc>| late(t) <= job.max_late;
    // The newest: on time, or missed and then up to the policy.
    let newest_fires = late(newest) <= ON_TIME || (job.catch_up != CatchUp::Skip && within(newest));
    let newest_reason = match job.catch_up {
        _ if newest_fires => None,
        CatchUp::Skip => Some(SkipReason::Policy),
        _ => Some(SkipReason::TooLate),
    };
    // The older ones, [first, before newest]: all skipped, except, with `all`, those
    // within `max_late`.
    let older_last = (newest > first).then(|| last_before(s, newest, first).unwrap_or(first));
    let mut fire_older = Vec::new();
    let mut skipped: Option<(DateTime<Utc>, DateTime<Utc>, SkipReason)> = None;
    if let Some(older_last) = older_last {
        match job.catch_up {
            CatchUp::Skip => skipped = Some((first, older_last, SkipReason::Policy)),
            CatchUp::Latest => skipped = Some((first, older_last, SkipReason::Superseded)),
            CatchUp::All => {
                let window = now - chrono::Duration::from_std(job.max_late).unwrap_or_default();
                let from = at_or_after(s, first.max(window)).filter(|t| *t <= older_last);
                match from {
                    None => skipped = Some((first, older_last, SkipReason::TooLate)),
                    Some(from) => {
                        if from > first {
                            let before = last_before(s, from, first).unwrap_or(first);
                            skipped = Some((first, before, SkipReason::TooLate));
                        }
                        let mut t = Some(from);
                        while let Some(o) = t.filter(|o| *o <= older_last) {
                            fire_older.push(o);
                            t = s.next_after(o);
                        }
                    }
                }
            }
        }
    }
    // A newest that is not sent joins the range before it: one decision, one record.
    match (skipped, newest_reason) {
        (Some((a, _, _)), Some(reason)) if fire_older.is_empty() => {
            out(Decision::SkipRange {
                job: i,
                first: a,
                last: newest,
                reason,
            });
        }
        (skipped, newest_reason) => {
            if let Some((a, b, reason)) = skipped {
                out(if a == b {
                    Decision::Skip {
                        job: i,
                        occurrence: a,
                        late: late(a),
                        reason,
                    }
                } else {
                    Decision::SkipRange {
                        job: i,
                        first: a,
                        last: b,
                        reason,
                    }
                });
            }
            for o in fire_older {
                out(Decision::Fire {
                    job: i,
                    occurrence: o,
                    late: late(o),
                    caught_up: true,
                });
            }
            out(match newest_reason {
                None => Decision::Fire {
                    job: i,
                    occurrence: newest,
                    late: late(newest),
                    caught_up: late(newest) > ON_TIME,
                },
                Some(reason) => Decision::Skip {
                    job: i,
                    occurrence: newest,
                    late: late(newest),
                    reason,
                },
            });
        }
    }
    s.next_after(newest.max(now))
}
