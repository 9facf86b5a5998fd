//! Orders from `cronmail skip`, `pause`, `resume` and `trigger`: read from the ledger
//! every `POLL` (so every node sees them), and applied as fires come.
//!
//! `POLL` is a second of real time (`std::time::Instant`), looked at on each wake of the
//! worker, which wakes at least every `POLL` when its clock is real time
//! (`Clock::real_time`): on paused tokio time, a test's virtual week is neither 600,000
//! wakes nor 600,000 ledger reads, and orders are read at the worker's other wakes.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tracing::{error, info};

use super::{Claim, Worker};
use crate::config::Job;
use crate::deliver::{local, utc};
use crate::ledger::{Action, Key};
use crate::message;

/// How often the ledger is read for new orders.
pub(super) const POLL: Duration = Duration::from_secs(1);

/// What the orders say now.
#[derive(Default)]
pub(super) struct Steering {
    /// The last order read.
    last: i64,
    /// The orders stored before start-up were read (they are applied, not logged).
    read_once: bool,
    /// Paused jobs (by the name given), until when (`None`: until resumed).
    paused: HashMap<String, Option<DateTime<Utc>>>,
    /// Occurrences to skip, by job (the name given) and instant.
    skips: HashSet<(String, DateTime<Utc>)>,
    next_poll: Option<std::time::Instant>,
    /// The embedded ledger's files (size and time of each) at the last read: while
    /// they have not changed, no order can be new, and the ledger is not read.
    stamp: Option<LedgerStamp>,
}

/// The size and time of the ledger file and of its WAL.
type LedgerStamp = [Option<(u64, std::time::SystemTime)>; 2];

/// What the embedded ledger's files look like now (`None` for a shared ledger, which
/// is read each time).
fn ledger_stamp(config: &crate::config::Config) -> Option<LedgerStamp> {
    if !matches!(config.ledger, crate::config::LedgerConfig::Sqlite) {
        return None;
    }
    let db = config.state_dir.join("ledger.sqlite3");
    let wal = config.state_dir.join("ledger.sqlite3-wal");
    let of = |p: &std::path::Path| {
        std::fs::metadata(p)
            .ok()
            .and_then(|m| Some((m.len(), m.modified().ok()?)))
    };
    Some([of(&db), of(&wal)])
}

impl Steering {
    /// Whether the ledger is due to be read again.
    pub(super) fn due(&self) -> bool {
        self.next_poll
            .is_none_or(|at| at <= std::time::Instant::now())
    }

    /// Why an occurrence of `job` at `at` is held back by an order, if it is.
    pub(super) fn holds_back(&self, job: &Job, at: DateTime<Utc>) -> Option<String> {
        let names = [&*job.name, &*job.base];
        if names
            .iter()
            .any(|n| self.skips.contains(&((*n).to_owned(), at)))
        {
            return Some("skipped by hand (cronmail skip)".to_owned());
        }
        for n in names {
            if let Some(until) = self.paused.get(n)
                && until.is_none_or(|u| at < u)
            {
                return Some(match until {
                    Some(u) => format!("paused by hand until {}", utc(*u)),
                    None => "paused by hand (cronmail resume ends it)".to_owned(),
                });
            }
        }
        None
    }
}

impl Worker {
    /// Reads the orders stored since the last look, and applies them.
    pub(super) async fn poll_controls(&mut self) {
        self.steering.next_poll = Some(std::time::Instant::now() + POLL);
        // An idle daemon then costs a stat a second, not a ledger query and two threads.
        let stamp = ledger_stamp(&self.current.config);
        if stamp.is_some() && stamp == self.steering.stamp && self.steering.read_once {
            self.expire_orders();
            return;
        }
        self.steering.stamp = stamp;
        let last = self.steering.last;
        let read = self.recorder.read(move |l| l.controls_after(last)).await;
        let controls = match read {
            Ok(c) => c,
            Err(e) => {
                error!(error = %e, "reading skip/pause/trigger orders from the ledger failed");
                return;
            }
        };
        let first_look = !self.steering.read_once;
        self.steering.read_once = true;
        let mut claims: Vec<Claim> = Vec::new();
        let changed = !controls.is_empty();
        for (id, c) in controls {
            self.steering.last = id;
            match c.action {
                Action::Skip(at) => {
                    self.steering.skips.insert((c.job.clone(), at));
                    if !first_look {
                        info!(job = %c.job, occurrence = %utc(at), "this occurrence will not be sent (cronmail skip)");
                    }
                }
                Action::Pause(until) => {
                    self.steering.paused.insert(c.job.clone(), until);
                    if !first_look {
                        info!(job = %c.job, until = %until.map_or_else(|| "resumed".to_owned(), utc), "paused (cronmail pause)");
                    }
                }
                Action::Resume => {
                    if self.steering.paused.remove(&c.job).is_some() && !first_look {
                        info!(job = %c.job, "resumed (cronmail resume)");
                    }
                }
                Action::Trigger(at) => {
                    // A trigger already handled is in the ledger: its claim is refused.
                    if let Some(job) = self.triggered(&c.job) {
                        if !first_look {
                            info!(job = %job.name, occurrence = %local(&job, at), "sending one occurrence now (cronmail trigger)");
                        }
                        claims.push((
                            Key::new(Arc::clone(&job.name), at),
                            message::message_id(&job, at),
                        ));
                    }
                }
            }
        }
        if changed {
            self.publish_orders();
        }
        self.expire_orders();
        if !claims.is_empty() {
            self.claim(claims).await;
        }
    }

    /// Pauses that ended and skips a day gone are done with.
    fn expire_orders(&mut self) {
        let now = self.clock.now();
        let before = (self.steering.paused.len(), self.steering.skips.len());
        self.steering
            .paused
            .retain(|_, until| until.is_none_or(|u| u > now));
        let done = now - chrono::Duration::days(1);
        self.steering.skips.retain(|(_, at)| *at > done);
        if before != (self.steering.paused.len(), self.steering.skips.len()) {
            self.publish_orders();
        }
    }

    /// The orders in force, for the status page.
    fn publish_orders(&self) {
        self.ops.set_orders(crate::agenda::Orders {
            skips: self.steering.skips.clone(),
            paused: self.steering.paused.clone(),
        });
    }

    /// The job a trigger names: the job of that name, else the first of its advance
    /// warnings.
    fn triggered(&self, name: &str) -> Option<Arc<Job>> {
        let jobs = &self.current.config.jobs;
        jobs.iter()
            .find(|j| &*j.name == name)
            .or_else(|| jobs.iter().find(|j| &*j.base == name))
            .cloned()
    }
}
