//! The delivery worker: one task that claims fired occurrences in the ledger, starts
//! an attempt for each (`attempt`), and decides after each failure (`retry::decide`):
//! retry later, hold the account, or give up. It also resumes what the ledger says was
//! unfinished, keeps what the ledger could not record until it can, takes over work
//! other nodes left, and drains the attempts in progress at shutdown.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tracing::{error, info, warn};

use super::attempt::Done;
use super::recorder::Recorder;
use super::timer_loop::{MAX_SLEEP, TimerEvent, WATCHED_SLEEP};
use crate::clock::Clock;
use crate::config::{Job, LedgerConfig};
use crate::deliver::{Loaded, local, utc};
use crate::ledger::{Key, Record, State};
use crate::message;

use crate::timer::SkipReason;

mod admit;
mod control;
mod finish;

/// A fire handed off later than this after its instant gets its own log line.
const LATE_NOTICE: Duration = Duration::from_secs(1);

/// How often `cronmail_pending` is counted while attempts are in flight.
const PENDING_EVERY: Duration = Duration::from_millis(250);

/// How often the queues of unrecorded claims and deliveries are retried.
const LEDGER_RETRY: Duration = Duration::from_secs(1);

/// What the worker is told.
pub(super) enum Msg {
    /// A decision of the timer.
    Timer(TimerEvent),
    /// A new configuration (and credentials): releases an authentication hold.
    Reload(Arc<Loaded>),
}

/// A fired occurrence to claim: its key and its stable Message-ID.
type Claim = (Key, String);

pub(super) struct Worker {
    /// The configuration and transport in force: the one copy the worker reads.
    current: Arc<Loaded>,
    recorder: Recorder,
    clock: Arc<dyn Clock>,
    retries: BinaryHeap<Reverse<(DateTime<Utc>, Key)>>,
    inflight: JoinSet<Done>,
    /// Fires handed off late, for their `sent` line: lateness, and whether caught up.
    late: std::collections::HashMap<Key, (Duration, bool)>,
    /// The task that counts and records skipped stretches, one at a time.
    background: JoinSet<()>,
    stretches: Option<mpsc::UnboundedSender<super::skips::Stretch>>,
    /// Per account (in the order of the configuration's): its login and hold (one
    /// attempt at a time until a send worked), and its sending-limit window.
    accounts: Vec<admit::AccountState>,
    /// Occurrences whose next attempt goes through another account than their job's
    /// (`fallback`).
    via: std::collections::HashMap<Key, usize>,
    /// Occurrences `start` gave up on (a sending limit past `retry_for`, a row gone
    /// from its file): to record, with the state, class and why.
    give_ups: Vec<(Key, State, &'static str, String)>,
    /// The rows of `recipients_file`s, read again when a file changes.
    rows: crate::recipients::Cache,
    /// A reload changed the accounts: their windows are read from the ledger again.
    reseed: bool,
    /// Occurrences with an attempt running here: never started twice at once.
    running: HashSet<Key>,
    /// Fired occurrences whose claim the ledger could not record (it was unreachable):
    /// claimed again at each tick, so an outage of the ledger loses none.
    unclaimed: Vec<Claim>,
    /// Sent occurrences the ledger could not record as sent: recorded again at each tick,
    /// before anything else, so that no other node takes them over.
    unrecorded: Vec<crate::ledger::Receipt>,
    /// When to look for work other nodes left, or to retry the two queues above.
    next_poll: tokio::time::Instant,
    /// Metrics, pings and alerts.
    ops: Arc<crate::ops::Ops>,
    /// Orders of `cronmail skip`, `pause`, `resume` and `trigger`.
    steering: control::Steering,
    /// The ledger's folder, watched for new orders.
    watch: control::Watch,
    /// When `cronmail_pending` was last counted.
    pending_published: tokio::time::Instant,
}

impl Worker {
    pub fn new(
        current: Arc<Loaded>,
        recorder: Recorder,
        clock: Arc<dyn Clock>,
        ops: Arc<crate::ops::Ops>,
    ) -> Self {
        let accounts = admit::AccountState::for_config(&current.config, Vec::new());
        Worker {
            current,
            recorder,
            clock,
            retries: BinaryHeap::new(),
            inflight: JoinSet::new(),
            late: std::collections::HashMap::new(),
            background: JoinSet::new(),
            stretches: None,
            accounts,
            via: std::collections::HashMap::new(),
            give_ups: Vec::new(),
            rows: crate::recipients::Cache::default(),
            reseed: false,
            running: HashSet::new(),
            unclaimed: Vec::new(),
            unrecorded: Vec::new(),
            next_poll: tokio::time::Instant::now(),
            ops,
            steering: control::Steering::default(),
            watch: control::Watch::default(),
            pending_published: tokio::time::Instant::now(),
        }
    }

    pub async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Msg>, unfinished: Vec<Record>) {
        self.watch = control::Watch::new(&self.current.config);
        self.resume(unfinished).await;
        self.seed_windows().await;
        self.poll_controls().await;
        loop {
            let now = self.clock.now();
            // A retry's time is on the wall clock: looked at every MAX_SLEEP while one
            // waits, so that a clock step moves it by at most that. With none, nothing
            // here is due at a time (orders and the ledger's poll set their own below).
            let mut sleep_for = self
                .retries
                .peek()
                .map_or(WATCHED_SLEEP, |Reverse((t, _))| {
                    (*t - now).to_std().unwrap_or_default().min(MAX_SLEEP)
                });
            if self.poll_every().is_some() {
                sleep_for = sleep_for.min(
                    self.next_poll
                        .saturating_duration_since(tokio::time::Instant::now()),
                );
            }
            if self.clock.real_time() {
                let now = std::time::Instant::now();
                let orders = self.steering.next_read(self.watch.active()).unwrap_or(now);
                sleep_for = sleep_for.min(orders.saturating_duration_since(now));
            }
            tokio::select! {
                msg = rx.recv() => {
                    let Some(msg) = msg else { break };
                    // Take everything already queued: a burst is claimed in one transaction.
                    let mut batch = vec![msg];
                    while let Ok(m) = rx.try_recv() {
                        batch.push(m);
                    }
                    self.handle(batch).await;
                }
                Some(_) = self.background.join_next(), if !self.background.is_empty() => {}
                Some(done) = self.inflight.join_next(), if !self.inflight.is_empty() => match done {
                    Ok(done) => self.finish(done).await,
                    Err(e) => error!(error = %e, "a delivery task failed"),
                },
                () = self.watch.changed(), if !self.steering.changed => {
                    self.steering.changed = true;
                }
                () = tokio::time::sleep(sleep_for) => {
                    self.retry_due().await;
                    self.poll().await;
                }
            }
            if self.steering.due(self.watch.active()) {
                self.poll_controls().await;
            }
            if !self.give_ups.is_empty() {
                self.record_give_ups().await;
            }
            // Counting what is pending costs a pass over it: during a burst, at most
            // every PENDING_EVERY; when nothing is in flight, at once.
            let tick = tokio::time::Instant::now();
            if self.inflight.is_empty() || tick >= self.pending_published + PENDING_EVERY {
                self.publish_pending();
                self.pending_published = tick;
            }
        }
        self.drain().await;
    }

    /// Shutdown: nothing new starts; sends in progress get the grace period. Whatever
    /// is still pending stays pending in the ledger and resumes at the next start.
    async fn drain(&mut self) {
        let grace = self.current.config.delivery.shutdown_grace;
        if !self.inflight.is_empty() {
            info!(
                in_flight = self.inflight.len(),
                grace_s = grace.as_secs(),
                "stopping: waiting for sends in progress"
            );
        }
        let deadline = tokio::time::Instant::now() + grace;
        while !self.inflight.is_empty() {
            match tokio::time::timeout_at(deadline, self.inflight.join_next()).await {
                Ok(Some(Ok(done))) => self.finish(done).await,
                Ok(Some(Err(e))) => error!(error = %e, "a delivery task failed"),
                Ok(None) => break,
                Err(_) => {
                    warn!(
                        abandoned = self.inflight.len(),
                        "stopping: sends still in progress after the grace period were abandoned; they stay in the ledger and are sent again, with the same Message-ID, at the next start"
                    );
                    self.inflight.abort_all();
                    break;
                }
            }
        }
        self.stretches = None;
        while tokio::time::timeout_at(deadline, self.background.join_next())
            .await
            .is_ok_and(|r| r.is_some())
        {}
        for t in &self.current.transports {
            t.close().await;
        }
    }

    /// The job of `key` in the configuration in force.
    fn job(&self, key: &Key) -> Option<Arc<Job>> {
        self.current.config.job(&key.job).cloned()
    }

    /// The poll period: the ledger's when it is shared, else only while something waits
    /// to be recorded.
    fn poll_every(&self) -> Option<Duration> {
        let waiting = !self.unclaimed.is_empty() || !self.unrecorded.is_empty();
        match &self.current.config.ledger {
            LedgerConfig::Postgres(pg) if waiting => Some(pg.poll.min(LEDGER_RETRY)),
            LedgerConfig::Postgres(pg) => Some(pg.poll),
            LedgerConfig::Sqlite if waiting => Some(LEDGER_RETRY),
            LedgerConfig::Sqlite => None,
        }
    }

    /// Records what waits to be recorded, then takes over work other nodes left.
    async fn poll(&mut self) {
        let Some(every) = self.poll_every() else {
            return;
        };
        if tokio::time::Instant::now() < self.next_poll {
            return;
        }
        self.next_poll = tokio::time::Instant::now() + every;
        if !self.unrecorded.is_empty() {
            self.record_unrecorded().await;
            // Until these are recorded, nothing else: another node must not resend them.
            if !self.unrecorded.is_empty() {
                return;
            }
        }
        if !self.unclaimed.is_empty() {
            let claims = std::mem::take(&mut self.unclaimed);
            self.claim(claims).await;
        }
        if !self.recorder.shared() {
            return;
        }
        // Every node's deliveries count towards the limits.
        self.seed_windows().await;
        let now = self.clock.now();
        match self.recorder.read(move |l| l.takeable(now)).await {
            Ok(keys) => {
                for key in keys {
                    if !self.running.contains(&key) && self.job(&key).is_some() {
                        info!(job = %key.job, occurrence = %utc(key.scheduled_at), "taking over an occurrence another node left (its lease lapsed)");
                        self.start(key);
                    }
                }
            }
            Err(e) => warn!(error = %e, "looking for work other nodes left failed; trying again"),
        }
    }

    async fn record_unrecorded(&mut self) {
        let waiting = std::mem::take(&mut self.unrecorded);
        let keys: Vec<Key> = waiting.iter().map(|r| r.key.clone()).collect();
        let result = self
            .recorder
            .call(move |l| {
                let mut left = Vec::new();
                let mut first_error = None;
                for receipt in waiting {
                    if let Err(e) = l.sent(&receipt) {
                        first_error.get_or_insert(e);
                        left.push(receipt);
                    }
                }
                Ok((left, first_error))
            })
            .await;
        match result {
            Ok((left, error)) => {
                for key in &keys {
                    self.running.remove(key);
                }
                for r in &left {
                    self.running.insert(r.key.clone());
                }
                self.unrecorded = left;
                if let Some(e) = error {
                    warn!(waiting = self.unrecorded.len(), error = %e, "the ledger still cannot record deliveries; trying again");
                } else {
                    info!(
                        recorded = keys.len(),
                        "the ledger is back: recorded the deliveries it had missed"
                    );
                }
            }
            Err(e) => error!(error = %e, "the ledger writer stopped with deliveries unrecorded"),
        }
    }

    /// Claims fired occurrences and starts those this node won. A claim the ledger
    /// could not record waits in `unclaimed`: sending unrecorded could send twice.
    async fn claim(&mut self, claims: Vec<Claim>) {
        let now = self.clock.now();
        let retry = claims.clone();
        let keys: Vec<Key> = claims.iter().map(|(k, _)| k.clone()).collect();
        match self.recorder.call(move |l| l.claim(&claims, now)).await {
            Ok(fresh) => {
                for (key, new) in keys.into_iter().zip(fresh) {
                    if new {
                        self.start(key);
                    } else {
                        self.late.remove(&key);
                    }
                }
            }
            Err(e) => {
                let retry_for = self.current.config.delivery.retry_for;
                let expired =
                    |k: &Key| (now - k.scheduled_at).to_std().unwrap_or_default() > retry_for;
                let (dropped, keep): (Vec<_>, Vec<_>) =
                    retry.into_iter().partition(|(k, _)| expired(k));
                for (k, _) in &dropped {
                    error!(job = %k.job, occurrence = %utc(k.scheduled_at), error = %e, "not sent: the ledger could not record the claim within retry_for");
                }
                if self.unclaimed.is_empty() && !keep.is_empty() {
                    error!(error = %e, occurrences = keep.len(), "the ledger cannot record claims; holding these occurrences until it can (nothing is sent unrecorded)");
                }
                self.unclaimed.extend(keep);
                self.next_poll = tokio::time::Instant::now() + LEDGER_RETRY;
            }
        }
    }

    /// Requeues what the ledger says was unfinished when cronmail last stopped.
    async fn resume(&mut self, unfinished: Vec<Record>) {
        let now = self.clock.now();
        for r in unfinished {
            let Some(job) = self.job(&r.key) else {
                warn!(job = %r.key.job, occurrence = %utc(r.key.scheduled_at), "not sent: the job is no longer in jobs.toml; recorded as skipped");
                self.give_up_removed(r.key).await;
                continue;
            };
            if r.state == State::Sending {
                warn!(
                    job = %job.name,
                    occurrence = %utc(r.key.scheduled_at),
                    local = %local(&job, r.key.scheduled_at),
                    message_id = %r.message_id,
                    "an attempt was interrupted (cronmail stopped or crashed while sending); sending again with the same Message-ID, so a duplicate is recognisable"
                );
            }
            let at = r.next_attempt_at.unwrap_or(now).max(now);
            self.retries.push(Reverse((at, r.key)));
        }
        if !self.retries.is_empty() {
            info!(
                queued = self.retries.len(),
                "resuming unfinished occurrences from the ledger"
            );
        }
    }

    /// Records an unfinished occurrence of a job no longer in jobs.toml as `skipped`.
    async fn give_up_removed(&mut self, key: Key) {
        let now = self.clock.now();
        let res = self
            .recorder
            .call(move |l| {
                l.give_up(
                    &key,
                    State::Skipped,
                    "removed",
                    "the job was removed from jobs.toml",
                    now,
                )
            })
            .await;
        if let Err(e) = res {
            error!(error = %e, "recording in the ledger failed");
        }
    }

    async fn handle(&mut self, batch: Vec<Msg>) {
        let now = self.clock.now();
        let mut claims: Vec<Claim> = Vec::new();
        let mut skips: Vec<(Key, String, String)> = Vec::new();
        let mut unreadable: Vec<(Key, String, String)> = Vec::new();
        for msg in batch {
            match msg {
                Msg::Reload(loaded) => self.reloaded(loaded, now),
                Msg::Timer(TimerEvent::Fire(f)) => {
                    let job = &f.job;
                    let late = (f.fired_at - f.occurrence).to_std().unwrap_or_default();
                    let key = Key::new(Arc::clone(&job.name), f.occurrence);
                    if let Some(why) = self.steering.holds_back(job, f.occurrence) {
                        info!(job = %job.name, occurrence = %utc(f.occurrence), "skipped: {why}");
                        self.ops.outcome(crate::ops::Recent {
                            job: job.name.to_string(),
                            occurrence: f.occurrence,
                            state: "skipped",
                            reply: why.clone(),
                        });
                        skips.push((key, message::message_id(job, f.occurrence), why));
                        continue;
                    }
                    let keys = match &job.recipients_file {
                        None => vec![(key, message::message_id(job, f.occurrence))],
                        Some(path) => match self.fan_out(job, path, f.occurrence) {
                            Ok(rows) => rows,
                            Err(why) => {
                                unreadable.push((key, message::message_id(job, f.occurrence), why));
                                continue;
                            }
                        },
                    };
                    for (key, id) in keys {
                        // Said on the `sent` line (`late_ms`, `caught_up`), not a line of its own.
                        if f.caught_up || late > LATE_NOTICE {
                            self.late.insert(key.clone(), (late, f.caught_up));
                        }
                        claims.push((key, id));
                    }
                }
                Msg::Timer(TimerEvent::Skip {
                    job,
                    occurrence,
                    reason,
                }) => {
                    let key = Key::new(Arc::clone(&job.name), occurrence);
                    skips.push((
                        key,
                        message::message_id(&job, occurrence),
                        reason.describe().to_owned(),
                    ));
                }
                Msg::Timer(TimerEvent::SkipRange {
                    job,
                    first,
                    last,
                    reason,
                }) => self.skip_range(job, first, last, reason),
            }
        }
        if std::mem::take(&mut self.reseed) {
            self.seed_windows().await;
        }
        if !unreadable.is_empty() {
            self.record_unreadable(unreadable, now).await;
        }
        if !skips.is_empty() {
            let res = self
                .recorder
                .call(move |l| {
                    for (key, id, reason) in &skips {
                        l.skip(key, id, reason, now)?;
                    }
                    Ok(())
                })
                .await;
            if let Err(e) = res {
                error!(error = %e, "recording skipped occurrences in the ledger failed");
            }
        }
        if claims.is_empty() {
            return;
        }
        if !self.unclaimed.is_empty() {
            // The ledger was unreachable a moment ago: queue behind the others, in order.
            self.unclaimed.extend(claims);
            return;
        }
        self.claim(claims).await;
    }

    /// A stretch of skipped occurrences, recorded in the background (`skips`): fires
    /// meanwhile go ahead.
    fn skip_range(
        &mut self,
        job: Arc<Job>,
        first: DateTime<Utc>,
        last: DateTime<Utc>,
        reason: SkipReason,
    ) {
        let now = self.clock.now();
        let tx = if let Some(tx) = &self.stretches {
            tx.clone()
        } else {
            let (tx, rx) = mpsc::unbounded_channel();
            self.background
                .spawn(super::skips::run(self.recorder.clone(), rx));
            self.stretches = Some(tx.clone());
            tx
        };
        let _ = tx.send(super::skips::Stretch {
            job,
            first,
            last,
            reason,
            now,
        });
    }

    /// Moves every held occurrence to "now".
    fn release_held(&mut self, now: DateTime<Utc>, held: &HashSet<Key>) {
        if held.is_empty() {
            return;
        }
        let all: Vec<_> = std::mem::take(&mut self.retries)
            .into_iter()
            .map(|Reverse((t, k))| (t, k))
            .collect();
        for (t, key) in all {
            let at = if held.contains(&key) { now } else { t };
            self.retries.push(Reverse((at, key)));
        }
    }

    async fn retry_due(&mut self) {
        let now = self.clock.now();
        while let Some(Reverse((t, _))) = self.retries.peek() {
            if *t > now {
                break;
            }
            let Some(Reverse((_, key))) = self.retries.pop() else {
                break;
            };
            if self.job(&key).is_none() {
                warn!(job = %key.job, occurrence = %utc(key.scheduled_at), "not sent: the job was removed from jobs.toml; recorded as skipped");
                self.give_up_removed(key).await;
                continue;
            }
            self.start(key);
        }
    }
}
