//! Which occurrences are due: a min-heap of every job's next instant, and the
//! missed-run policy. Pure: `now` is an argument, nothing here sleeps or spawns.
//!
//! The daemon's loop sleeps until `next_deadline()` (capped, see `daemon::MAX_SLEEP`),
//! then asks `due(now)`. An occurrence at most `ON_TIME` late fires normally. One later
//! than that was missed (the machine was suspended or cronmail was down), and the job's
//! `catch_up` policy decides whether it is sent or skipped.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::config::{CatchUp, Job};

/// Lateness below which an occurrence counts as on time. A burst of 10,000 jobs in one
/// second, or a busy machine, makes fires late by milliseconds, not by a minute.
pub const ON_TIME: Duration = Duration::from_secs(60);

/// Most missed occurrences of one job examined in one catch-up, so a per-second job
/// after a month offline cannot stall the loop. Older ones are skipped in bulk.
pub const MAX_CATCH_UP: usize = 10_000;

/// What to do with one occurrence.
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
    /// This many older missed occurrences were skipped without being listed.
    SkipMany {
        job: usize,
        count: usize,
        first: DateTime<Utc>,
        last: DateTime<Utc>,
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
    /// On-time fires are handed to `out` before any next occurrence is computed, so in
    /// a burst of thousands of jobs the first is not kept waiting for the last's cron
    /// arithmetic.
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
                if late <= ON_TIME {
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
                popped.push((t, i, late));
            }
            if popped.is_empty() {
                return;
            }
            for &(t, i, late) in &popped {
                let job = &self.jobs[i];
                let next = if late <= ON_TIME {
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

/// Applies `job`'s policy to the occurrences from `first` up to `now`, all missed.
/// Returns the first occurrence after `now`.
fn catch_up(
    job: &Job,
    i: usize,
    first: DateTime<Utc>,
    now: DateTime<Utc>,
    out: &mut impl FnMut(Decision),
) -> Option<DateTime<Utc>> {
    // Collect the missed occurrences, keeping only the newest MAX_CATCH_UP.
    let mut missed = std::collections::VecDeque::new();
    let mut dropped: Option<(usize, DateTime<Utc>, DateTime<Utc>)> = None;
    let mut t = Some(first);
    while let Some(o) = t.filter(|o| *o <= now) {
        if missed.len() == MAX_CATCH_UP {
            let old = missed.pop_front().unwrap_or(o);
            dropped = Some(match dropped {
                None => (1, old, old),
                Some((n, f, _)) => (n + 1, f, old),
            });
        }
        missed.push_back(o);
        t = job.schedule.next_after(o);
    }
    if let Some((count, first, last)) = dropped {
        out(Decision::SkipMany {
            job: i,
            count,
            first,
            last,
        });
    }
    let newest = missed.len().saturating_sub(1);
    for (k, o) in missed.into_iter().enumerate() {
        let late = (now - o).to_std().unwrap_or_default();
        let reason = match job.catch_up {
            CatchUp::Skip => Some(SkipReason::Policy),
            CatchUp::Latest if k != newest => Some(SkipReason::Superseded),
            _ if late > job.max_late => Some(SkipReason::TooLate),
            _ => None,
        };
        out(match reason {
            Some(reason) => Decision::Skip {
                job: i,
                occurrence: o,
                late,
                reason,
            },
            None => Decision::Fire {
                job: i,
                occurrence: o,
                late,
                caught_up: true,
            },
        });
    }
    t
}
