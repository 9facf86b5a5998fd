//! Orders from `cronmail skip`, `pause`, `resume` and `trigger`: read from the ledger
//! (so every node sees them), and applied as fires come.
//!
//! With the embedded ledger, its folder is watched (`Watch`, inotify): an order written
//! there wakes the worker, which reads it at most `POLL` after its read before (at once
//! when the ledger was quiet, every `POLL` while it keeps changing with its own
//! deliveries); an idle daemon reads it only every `IDLE_POLL`, and otherwise sleeps. A
//! shared ledger (`PostgreSQL`, written from other machines), or a folder that cannot
//! be watched, is read every `POLL`.
//!
//! The periods are real time (`std::time::Instant`), looked at on each wake of the
//! worker, which wakes for them only when its clock is real time (`Clock::real_time`):
//! on paused tokio time, a test's virtual week is neither 600,000 wakes nor 600,000
//! ledger reads, and orders are read at the worker's other wakes.

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

/// How often the ledger is read for new orders, while it changes (or is not watched).
pub(super) const POLL: Duration = Duration::from_secs(1);

/// How often a watched ledger that did not change is read all the same: an order a
/// missed change would have announced is applied then.
pub(super) const IDLE_POLL: Duration = Duration::from_secs(300);

/// The embedded ledger's folder, watched for changes to the ledger's files.
#[derive(Default)]
pub(super) struct Watch {
    events: Option<inotify::EventStream<Vec<u8>>>,
}

impl Watch {
    /// Watches the ledger's folder: not for a shared ledger, and not when inotify is not
    /// there or refuses (then the worker reads every `POLL`, as without it). Needs the
    /// tokio runtime.
    pub(super) fn new(config: &crate::config::Config) -> Watch {
        use inotify::WatchMask;
        if !matches!(config.ledger, crate::config::LedgerConfig::Sqlite) {
            return Watch { events: None };
        }
        // A write of the database or its WAL, and the close after a commit (another
        // process's, whose update of the WAL index is not itself an event).
        let mask = WatchMask::MODIFY
            | WatchMask::CLOSE_WRITE
            | WatchMask::CREATE
            | WatchMask::MOVED_TO
            | WatchMask::DELETE;
        let started = inotify::Inotify::init().and_then(|inotify| {
            inotify.watches().add(&config.state_dir, mask)?;
            inotify.into_event_stream(vec![0; 4096])
        });
        match started {
            Ok(events) => Watch {
                events: Some(events),
            },
            Err(e) => {
                info!(error = %e, folder = %config.state_dir.display(), "the state folder cannot be watched: orders (skip, pause, resume, trigger) are read every second");
                Watch { events: None }
            }
        }
    }

    /// Whether changes are watched.
    pub(super) fn active(&self) -> bool {
        self.events.is_some()
    }

    /// Waits for a change to the ledger's files (pending forever when not watching),
    /// then takes the events already there with it. Cancel-safe: an event is taken
    /// only by the call that returns.
    pub(super) async fn changed(&mut self) {
        use futures_util::{FutureExt as _, StreamExt as _};
        let Some(events) = self.events.as_mut() else {
            return std::future::pending().await;
        };
        loop {
            match events.next().await {
                Some(Ok(e)) if e.name.as_deref().is_none_or(is_ledger_file) => {
                    while let Some(Some(Ok(_))) = events.next().now_or_never() {}
                    return;
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => {
                    error!(error = %e, "watching the state folder failed: orders (skip, pause, resume, trigger) are read every second from now on");
                    self.events = None;
                    return;
                }
                None => {
                    self.events = None;
                    return;
                }
            }
        }
    }
}

/// The ledger's own files: the database, its WAL and its journal (an event without a
/// name, such as an overflow of the queue, counts as a change too).
fn is_ledger_file(name: &std::ffi::OsStr) -> bool {
    name.as_encoded_bytes().starts_with(b"ledger.sqlite3")
}

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
    /// When the ledger was last read for orders.
    last_read: Option<std::time::Instant>,
    /// The watched ledger changed since that read.
    pub(super) changed: bool,
    /// The embedded ledger's files (size and time of each) at the last read: while
    /// they have not changed, no order can be new, and the ledger is not read (when
    /// the folder is not watched).
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
    /// When the ledger is due to be read again (`None`: now, it never was).
    pub(super) fn next_read(&self, watched: bool) -> Option<std::time::Instant> {
        let every = if watched && !self.changed {
            IDLE_POLL
        } else {
            POLL
        };
        self.last_read.map(|at| at + every)
    }

    /// Whether the ledger is due to be read again.
    pub(super) fn due(&self, watched: bool) -> bool {
        self.next_read(watched)
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
        self.steering.last_read = Some(std::time::Instant::now());
        // A change the read may miss (before its commit shows) comes with an event of
        // its own after it (the writer's close): this read forgets only those before.
        self.steering.changed = false;
        if !self.watch.active() {
            // Unwatched, an idle daemon costs a stat a second, not a ledger query.
            let stamp = ledger_stamp(&self.current.config);
            if stamp.is_some() && stamp == self.steering.stamp && self.steering.read_once {
                self.expire_orders();
                return;
            }
            self.steering.stamp = stamp;
        }
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
                    if let Some(job) = self.current.config.triggered(&c.job).cloned() {
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
}
