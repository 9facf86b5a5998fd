//! The service: one timer loop, deliveries, signals, reload, shutdown, `sd_notify`.
//! The only module that spawns tasks.
//!
//! Shape (after mini-redis): `run(path, clock, events)` takes its clock and its control
//! events as inputs, so tests drive it with paused time and a channel, and `main` with
//! the system clock and OS signals. One loop `select!`s between "the next occurrence is
//! due" and "a control event arrived"; it never polls per job.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, SecondsFormat, Utc};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinSet;
use tracing::{Instrument, error, info, info_span, warn};

use crate::clock::Clock;
use crate::config::Diagnostics;
use crate::config::{self, Config, Host};
use crate::failure::{ErrorClass, Failure};
use crate::ledger::{Key, Ledger, LedgerError, State};
use crate::mail::{Delivered, Mailer};
use crate::message::{self, ComposeError, Outgoing};
use crate::render::TemplateError;
use crate::retry;
use crate::secret::SecretError;
use crate::timer::SkipReason;
use crate::timer::{Decision, Timer};

/// Longest single sleep of the timer loop. The loop re-reads the wall clock when it
/// wakes, so a suspend, an NTP step or a manual clock change delays a reminder by at
/// most this much, not by however long a monotonic sleep had left.
pub const MAX_SLEEP: Duration = Duration::from_secs(60);

/// A fire handed off later than this after its instant gets its own log line.
const LATE_NOTICE: Duration = Duration::from_secs(1);

/// A wall-clock jump larger than this between two wakes is logged as a suspend/resume
/// or a clock change.
const JUMP_WARNING: Duration = Duration::from_secs(5);

/// What the outside world asks of a running daemon.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Control {
    /// Re-read jobs.toml (SIGHUP).
    Reload,
    /// Stop firing, let in-flight sends finish, exit (SIGTERM, SIGINT).
    Shutdown,
}

/// Why the daemon could not start (or a reload was refused).
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("{0}")]
    Config(Diagnostics),
    #[error("reading the SMTP password: {0}")]
    Secret(#[from] SecretError),
    #[error("setting up the mailer: {0}")]
    Mailer(Failure),
    #[error("{0}")]
    Ledger(#[from] LedgerError),
}

/// A loaded configuration and the transport built for it.
pub struct Runtime {
    pub config: Arc<Config>,
    pub mailer: Arc<Mailer>,
}

/// Loads jobs.toml, reads the password, builds the transport.
pub async fn load(path: &Path, host: &Host) -> Result<Runtime, StartError> {
    let config = config::load(path, host).map_err(StartError::Config)?;
    let password = match &config.transport {
        config::TransportConfig::Smtp(s) => match &s.password {
            Some(src) => Some(src.read().await?),
            None => None,
        },
        config::TransportConfig::Outbox { .. } => None,
    };
    let mailer = Mailer::new(&config.transport, password, config.delivery.max_connections)
        .map_err(StartError::Mailer)?;
    Ok(Runtime {
        config: Arc::new(config),
        mailer: Arc::new(mailer),
    })
}

/// Why one occurrence was not delivered.
#[derive(Debug, thiserror::Error)]
pub enum DeliverError {
    #[error("rendering template `{}`: {}", .0.key(), .1)]
    Render(crate::render::Part, TemplateError),
    #[error("{0}")]
    Compose(#[from] ComposeError),
    #[error("{0}")]
    Send(#[from] Failure),
    #[error("the ledger: {0}")]
    Ledger(String),
}

/// Renders and composes one occurrence of `job`. `date` is the Date header's instant.
pub fn prepare(
    config: &Config,
    job: &config::Job,
    occurrence: DateTime<Utc>,
    date: DateTime<Utc>,
    redirect: Option<&lettre::message::Mailbox>,
) -> Result<Outgoing, DeliverError> {
    let rendered = config
        .templates
        .render(&job.name, occurrence, job.tz(), &job.vars)
        .map_err(|(part, e)| DeliverError::Render(part, e))?;
    Ok(message::compose(
        job, &rendered, occurrence, date, redirect,
    )?)
}

/// Renders and sends one occurrence, and logs the INFO `sent` line on success.
/// Failures are returned for the caller to log with what happens next (`log_failure`).
pub async fn deliver(
    rt: &Runtime,
    job: &config::Job,
    occurrence: DateTime<Utc>,
    now: DateTime<Utc>,
    redirect: Option<&lettre::message::Mailbox>,
) -> Result<(Outgoing, Delivered), (Option<String>, DeliverError)> {
    let started = Instant::now();
    let out = prepare(&rt.config, job, occurrence, now, redirect).map_err(|e| (None, e))?;
    match rt.mailer.send(&out).await {
        Ok(d) => {
            info!(
                job = %job.name,
                occurrence = %local_rfc3339(job, occurrence),
                recipients = out.recipient_count(),
                message_id = %out.message_id,
                smtp_code = d.code,
                reply = %d.reply,
                elapsed_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
                "sent"
            );
            Ok((out, d))
        }
        Err(e) => Err((Some(out.message_id), e.into())),
    }
}

fn local_rfc3339(job: &config::Job, t: DateTime<Utc>) -> String {
    t.with_timezone(&job.tz())
        .to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// The ERROR line for a failed attempt: job, server, username, class, the server's
/// exact reply, the hint, and what happens next (`then`).
pub fn log_failure(
    rt: &Runtime,
    job: &config::Job,
    occurrence: DateTime<Utc>,
    message_id: Option<&str>,
    err: &DeliverError,
    attempt: u32,
    then: &str,
) {
    let (server, username) = match &rt.config.transport {
        config::TransportConfig::Smtp(s) => (
            format!("{}:{}", s.host, s.port),
            s.username.clone().unwrap_or_default(),
        ),
        config::TransportConfig::Outbox { dir } => (dir.display().to_string(), String::new()),
    };
    let occurrence = local_rfc3339(job, occurrence);
    let message_id = message_id.unwrap_or("");
    match err {
        DeliverError::Send(e) => error!(
            job = %job.name,
            occurrence = %occurrence,
            message_id,
            attempt,
            server = %server,
            username = %username,
            class = %e.class,
            phase = e.phase.map_or("", crate::failure::Phase::name),
            smtp_code = e.code.unwrap_or(0),
            reply = e.reply.as_deref().unwrap_or(""),
            hint = e.hint.as_deref().unwrap_or(""),
            then,
            "not sent: {e}"
        ),
        other => error!(
            job = %job.name,
            occurrence = %occurrence,
            attempt,
            class = "render",
            error = %other,
            then,
            "not sent: the message could not be built"
        ),
    }
}

/// Turns SIGHUP into `Reload` and SIGTERM/SIGINT into `Shutdown`.
pub fn signal_events() -> std::io::Result<mpsc::Receiver<Control>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut hup = signal(SignalKind::hangup())?;
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let (tx, rx) = mpsc::channel(8);
    tokio::spawn(async move {
        loop {
            let event = tokio::select! {
                _ = hup.recv() => Control::Reload,
                _ = term.recv() => Control::Shutdown,
                _ = int.recv() => Control::Shutdown,
            };
            if tx.send(event).await.is_err() {
                break;
            }
        }
    });
    Ok(rx)
}

/// Tells systemd about our state when `NOTIFY_SOCKET` is set; otherwise does nothing.
struct Notifier {
    enabled: bool,
    watchdog: Option<Duration>,
}

impl Notifier {
    fn from_env() -> Self {
        let enabled = std::env::var_os("NOTIFY_SOCKET").is_some();
        let mut usec = 0;
        let watchdog = (enabled && sd_notify::watchdog_enabled(false, &mut usec))
            .then(|| Duration::from_micros(usec / 2));
        Notifier { enabled, watchdog }
    }

    fn send(&self, states: &[sd_notify::NotifyState<'_>]) {
        if self.enabled
            && let Err(e) = sd_notify::notify(false, states)
        {
            warn!(error = %e, "could not notify systemd");
        }
    }

    fn status(&self, timer: &Timer) {
        if !self.enabled {
            return;
        }
        let status = match timer.peek() {
            Some((t, i)) => format!(
                "next: {} at {}",
                timer.job(i).name,
                t.with_timezone(&timer.job(i).tz())
                    .to_rfc3339_opts(SecondsFormat::Secs, true)
            ),
            None => "no job scheduled".to_owned(),
        };
        self.send(&[sd_notify::NotifyState::Status(&status)]);
    }
}

/// One fire handed from the timer loop to delivery, with how late the hand-off was.
#[derive(Clone, Debug)]
pub struct Fire {
    pub job: usize,
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
        job: usize,
        occurrence: DateTime<Utc>,
        reason: SkipReason,
    },
}

/// The timer loop alone: sleeps until the next occurrence, decides what is due, and
/// reports each decision to `on`. Returns when `events` yields `Shutdown` or closes.
/// `on_reload` is asked for a new `Timer` on `Reload`; it returns `None` to keep the old.
pub async fn timer_loop(
    mut timer: Timer,
    clock: &dyn Clock,
    events: &mut mpsc::Receiver<Control>,
    mut on: impl FnMut(TimerEvent),
    mut on_reload: impl AsyncFnMut(DateTime<Utc>) -> Option<Timer>,
) {
    let mut last_wake = clock.now();
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
        let sleep_for = deadline.map_or(MAX_SLEEP, |t| {
            (t - clock.now())
                .to_std()
                .unwrap_or_default()
                .saturating_sub(clock.spin_window())
                .min(MAX_SLEEP)
        });
        let expected_wake = clock.now() + chrono::Duration::from_std(sleep_for).unwrap_or_default();
        tokio::select! {
            () = tokio::time::sleep(sleep_for) => {
                let late = (clock.now() - expected_wake).to_std().unwrap_or_default();
                if late > JUMP_WARNING {
                    warn!(by_s = late.as_secs(), "the wall clock jumped forward (suspend/resume or clock change); checking for missed occurrences");
                }
                if let Some(d) = deadline
                    && d - clock.now() <= chrono::Duration::from_std(clock.spin_window()).unwrap_or_default() {
                        spin_until(clock, d);
                    }
            }
            event = events.recv() => match event {
                Some(Control::Reload) => {
                    // Fire whatever is due under the old jobs first, so nothing falls
                    // between the old timer and the new one.
                    fire_due(&mut timer, clock, &mut on);
                    if let Some(new) = on_reload(clock.now()).await {
                        timer = new;
                    }
                }
                Some(Control::Shutdown) | None => return,
            }
        }
    }
}

/// Decides everything due now, logs skips, and reports each decision.
fn fire_due(timer: &mut Timer, clock: &dyn Clock, on: &mut impl FnMut(TimerEvent)) {
    timer.due(clock.now(), |job, d| match d {
        Decision::Fire { job: i, occurrence, caught_up, .. } => {
            // Stamp the hand-off itself: this is the lateness the design notes report.
            on(TimerEvent::Fire(Fire { job: i, occurrence, fired_at: clock.now(), caught_up }));
        }
        Decision::Skip { job: i, occurrence, late, reason } => {
            warn!(job = %job.name, occurrence = %occurrence.to_rfc3339(), late_s = late.as_secs(), reason = reason.describe(), "skipped");
            on(TimerEvent::Skip { job: i, occurrence, reason });
        }
        Decision::SkipMany { count, first, last, .. } => {
            warn!(job = %job.name, count, first = %first.to_rfc3339(), last = %last.to_rfc3339(), "skipped many missed occurrences");
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

/// Opens the configured ledger for this daemon (locked), on the blocking pool.
async fn open_ledger(config: &Arc<Config>) -> Result<Arc<dyn Ledger>, StartError> {
    let password = match crate::ledger::password_source(config) {
        Some(src) => Some(src.read().await?),
        None => None,
    };
    let config = Arc::clone(config);
    let opened = on_blocking_pool(move || {
        crate::ledger::open(&config, password.as_ref(), crate::ledger::Mode::Exclusive)
    })
    .await?;
    Ok(Arc::from(opened))
}

/// Runs the daemon on the config at `path` until `Shutdown`.
pub async fn run(
    path: PathBuf,
    clock: Arc<dyn Clock>,
    mut events: mpsc::Receiver<Control>,
) -> Result<(), StartError> {
    let notifier = Notifier::from_env();
    let rt = load(&path, &Host::from_env()).await?;
    release_freed_memory();
    let state_dir = rt.config.state_dir.clone();
    let ledger = open_ledger(&rt.config).await?;
    let enabled = rt.config.jobs.iter().filter(|j| j.enabled).count();
    info!(config = %path.display(), jobs = enabled, transport = %rt.mailer.destination(), state_dir = %state_dir.display(), "cronmail started");

    // Jobs resume after the last occurrence the ledger has seen, so what was missed
    // while cronmail was down meets the catch-up policy.
    let ledger_id = crate::ledger::identity(&rt.config);
    let (handled, unfinished) =
        match blocking(&ledger, |l| Ok((l.last_handled()?, l.unfinished()?))).await {
            Ok(found) => found,
            Err(e) => {
                let _ = tokio::task::spawn_blocking(move || drop(ledger)).await;
                return Err(e.into());
            }
        };
    let timer = Timer::new(rt.config.jobs.clone(), clock.now(), &handled);
    notifier.send(&[sd_notify::NotifyState::Ready]);
    notifier.status(&timer);

    let rt = Arc::new(rt);
    let current = std::sync::Mutex::new(Arc::clone(&rt));
    let (tx, rx) = mpsc::unbounded_channel();
    let worker = Worker::new(rt, Arc::clone(&ledger), Arc::clone(&clock));
    let worker = tokio::spawn(worker.run(rx, unfinished));

    let loop_fut = timer_loop(
        timer,
        &*clock,
        &mut events,
        |event| {
            let rt = current
                .lock()
                .map_or_else(|p| Arc::clone(&p.into_inner()), |g| Arc::clone(&g));
            // The worker outlives the loop, so a send only fails if it panicked.
            let _ = tx.send(Msg::Timer(rt, event));
        },
        async |_now| {
            notifier.send(&[
                sd_notify::NotifyState::Reloading,
                sd_notify::NotifyState::monotonic_usec_now()
                    .unwrap_or(sd_notify::NotifyState::MonotonicUsec(0)),
            ]);
            let loaded = load(&path, &Host::from_env()).await;
            release_freed_memory();
            let timer = match loaded {
                Ok(new) => {
                    let jobs = new.config.jobs.iter().filter(|j| j.enabled).count();
                    info!(config = %path.display(), jobs, transport = %new.mailer.destination(), "configuration reloaded");
                    if new.config.state_dir != state_dir {
                        warn!(state_dir = %new.config.state_dir.display(), "`state_dir` changed; the new folder is used only after a restart");
                    }
                    if crate::ledger::identity(&new.config) != ledger_id {
                        warn!("[ledger] changed; the new ledger is used only after a restart");
                    }
                    // A changed schedule takes effect from now: occurrences already
                    // handled stay handled, nothing in between is caught up.
                    let timer = Timer::new(new.config.jobs.clone(), clock.now(), &HashMap::new());
                    let new = Arc::new(new);
                    if let Ok(mut g) = current.lock() {
                        *g = Arc::clone(&new);
                    }
                    let _ = tx.send(Msg::Reload(new));
                    notifier.status(&timer);
                    Some(timer)
                }
                Err(e) => {
                    error!(config = %path.display(), error = %e, "reload refused; the previous configuration keeps running");
                    None
                }
            };
            notifier.send(&[sd_notify::NotifyState::Ready]);
            timer
        },
    );

    match notifier.watchdog {
        None => loop_fut.await,
        Some(period) => {
            // WATCHDOG=1 only while the timer loop itself is alive: both run in this task.
            tokio::pin!(loop_fut);
            let mut tick = tokio::time::interval(period);
            loop {
                tokio::select! {
                    () = &mut loop_fut => break,
                    _ = tick.tick() => notifier.send(&[sd_notify::NotifyState::Watchdog]),
                }
            }
        }
    }

    notifier.send(&[sd_notify::NotifyState::Stopping]);
    drop(tx);
    if let Err(e) = worker.await {
        error!(error = %e, "the delivery worker failed");
    }
    // The PostgreSQL client owns a runtime of its own, which must not be dropped on an
    // async thread.
    let _ = tokio::task::spawn_blocking(move || drop(ledger)).await;
    info!("cronmail stopped");
    Ok(())
}

/// Gives the heap that loading jobs.toml used and freed back to the system. Parsing
/// holds the whole document with its spans (about 50 MB for 10,000 jobs), and glibc
/// keeps freed memory in its arenas: without this, the daemon's RSS stays at that peak.
fn release_freed_memory() {
    // SAFETY: malloc_trim takes no pointer and only returns free pages of glibc's own
    // heap to the kernel; it is safe to call at any time from any thread.
    #[allow(unsafe_code)]
    #[cfg(target_env = "gnu")]
    unsafe {
        libc::malloc_trim(0);
    }
}

/// What the delivery worker is told.
enum Msg {
    /// A decision of the timer, about a job of this runtime.
    Timer(Arc<Runtime>, TimerEvent),
    /// A new configuration (and credentials): releases an authentication hold.
    Reload(Arc<Runtime>),
}

/// The outcome of one attempt.
struct Done {
    key: Key,
    attempt: u32,
    result: Result<Delivered, (Option<String>, DeliverError)>,
    /// Another node holds the occurrence (or finished it): nothing was sent here.
    elsewhere: bool,
    /// Sent, but the ledger could not record it: `(reply, when)`, to record again.
    unrecorded: Option<(String, DateTime<Utc>)>,
}

/// Sends are paused after an authentication failure, until `until` or a reload.
struct Hold {
    until: DateTime<Utc>,
    /// Failures in a row, for the backoff.
    level: u32,
}

/// Claims occurrences in the ledger, sends them, retries them, and records the outcome.
/// One task; each attempt runs in a task of its own.
struct Worker {
    rt: Arc<Runtime>,
    ledger: Arc<dyn Ledger>,
    clock: Arc<dyn Clock>,
    retries: BinaryHeap<Reverse<(DateTime<Utc>, Key)>>,
    inflight: JoinSet<Done>,
    hold: Option<Hold>,
    /// Occurrences already logged as held, so each is logged once.
    held_logged: HashSet<Key>,
    /// Occurrences with an attempt running here: never started twice at once.
    running: HashSet<Key>,
    /// Fired occurrences whose claim the ledger could not record (it was unreachable):
    /// claimed again at each tick, so an outage of the ledger loses none.
    unclaimed: Vec<(Key, String)>,
    /// Sent occurrences the ledger could not record as sent: recorded again at each tick,
    /// before anything else, so that no other node takes them over.
    unrecorded: Vec<(Key, String, DateTime<Utc>)>,
    /// When to look for work other nodes left, or to retry the two queues above.
    next_poll: tokio::time::Instant,
    recorder: Recorder,
}

/// How often the queues of unrecorded claims and deliveries are retried.
const LEDGER_RETRY: Duration = Duration::from_secs(1);

/// One write of the delivery path, with where to send its result.
enum WriteReq {
    Start(
        Key,
        DateTime<Utc>,
        oneshot::Sender<Result<Option<u32>, String>>,
    ),
    Sent(
        Key,
        String,
        DateTime<Utc>,
        oneshot::Sender<Result<(), String>>,
    ),
}

/// Group commit for the delivery path: attempts starting and deliveries to record are
/// queued, and whatever has queued while the previous commit ran goes into the next
/// one. A burst of a thousand messages costs tens of commits, not two thousand.
#[derive(Clone)]
struct Recorder {
    tx: mpsc::UnboundedSender<WriteReq>,
}

/// Writes in one commit at most.
const GROUP_COMMIT_MAX: usize = 1024;

impl Recorder {
    fn spawn(ledger: Arc<dyn Ledger>) -> Self {
        let (tx, mut rx) = mpsc::unbounded_channel::<WriteReq>();
        tokio::spawn(async move {
            while let Some(first) = rx.recv().await {
                let mut batch = vec![first];
                while batch.len() < GROUP_COMMIT_MAX {
                    match rx.try_recv() {
                        Ok(req) => batch.push(req),
                        Err(_) => break,
                    }
                }
                let mut starts = Vec::new();
                let mut start_replies = Vec::new();
                let mut sent = Vec::new();
                let mut sent_replies = Vec::new();
                let mut now = None;
                for req in batch {
                    match req {
                        WriteReq::Start(key, at, reply) => {
                            now = Some(now.map_or(at, |n: DateTime<Utc>| n.max(at)));
                            starts.push(key);
                            start_replies.push(reply);
                        }
                        WriteReq::Sent(key, text, at, reply) => {
                            sent.push((key, text, at));
                            sent_replies.push(reply);
                        }
                    }
                }
                let now = now.unwrap_or_else(Utc::now);
                match blocking(&ledger, move |l| l.record(&starts, &sent, now)).await {
                    Ok(started) => {
                        for (reply, n) in start_replies.into_iter().zip(started) {
                            let _ = reply.send(Ok(n));
                        }
                        for reply in sent_replies {
                            let _ = reply.send(Ok(()));
                        }
                    }
                    Err(e) => {
                        let e = e.to_string();
                        for reply in start_replies {
                            let _ = reply.send(Err(e.clone()));
                        }
                        for reply in sent_replies {
                            let _ = reply.send(Err(e.clone()));
                        }
                    }
                }
            }
            // The PostgreSQL client must not be dropped on an async thread.
            let _ = tokio::task::spawn_blocking(move || drop(ledger)).await;
        });
        Recorder { tx }
    }

    async fn start(&self, key: Key, now: DateTime<Utc>) -> Result<Option<u32>, String> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(WriteReq::Start(key, now, reply))
            .map_err(|_| "the ledger writer stopped".to_owned())?;
        rx.await
            .map_err(|_| "the ledger writer stopped".to_owned())?
    }

    async fn sent(&self, key: Key, text: String, at: DateTime<Utc>) -> Result<(), String> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(WriteReq::Sent(key, text, at, reply))
            .map_err(|_| "the ledger writer stopped".to_owned())?;
        rx.await
            .map_err(|_| "the ledger writer stopped".to_owned())?
    }
}

/// Runs a ledger call off the async threads: `SQLite` with `synchronous=FULL` fsyncs.
async fn blocking<T: Send + 'static>(
    ledger: &Arc<dyn Ledger>,
    f: impl FnOnce(&dyn Ledger) -> Result<T, LedgerError> + Send + 'static,
) -> Result<T, LedgerError> {
    let ledger = Arc::clone(ledger);
    on_blocking_pool(move || f(&*ledger)).await
}

/// Runs `f` on the blocking pool; a panic in it is a panic here.
async fn on_blocking_pool<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    match tokio::task::spawn_blocking(f).await {
        Ok(r) => r,
        Err(e) => std::panic::resume_unwind(e.into_panic()),
    }
}

impl Worker {
    fn new(rt: Arc<Runtime>, ledger: Arc<dyn Ledger>, clock: Arc<dyn Clock>) -> Self {
        let recorder = Recorder::spawn(Arc::clone(&ledger));
        Worker {
            rt,
            ledger,
            clock,
            retries: BinaryHeap::new(),
            inflight: JoinSet::new(),
            hold: None,
            held_logged: HashSet::new(),
            running: HashSet::new(),
            unclaimed: Vec::new(),
            unrecorded: Vec::new(),
            next_poll: tokio::time::Instant::now(),
            recorder,
        }
    }

    /// The poll period: the ledger's when it is shared, else only while something waits
    /// to be recorded.
    fn poll_every(&self) -> Option<Duration> {
        let waiting = !self.unclaimed.is_empty() || !self.unrecorded.is_empty();
        match &self.rt.config.ledger {
            crate::config::LedgerConfig::Postgres(pg) if waiting => Some(pg.poll.min(LEDGER_RETRY)),
            crate::config::LedgerConfig::Postgres(pg) => Some(pg.poll),
            crate::config::LedgerConfig::Sqlite if waiting => Some(LEDGER_RETRY),
            crate::config::LedgerConfig::Sqlite => None,
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
            let waiting = std::mem::take(&mut self.unrecorded);
            let keys: Vec<Key> = waiting.iter().map(|(k, ..)| k.clone()).collect();
            let result = blocking(&self.ledger, move |l| {
                let mut left = Vec::new();
                let mut first_error = None;
                for (key, reply, at) in waiting {
                    if let Err(e) = l.sent(&key, &reply, at) {
                        first_error.get_or_insert(e);
                        left.push((key, reply, at));
                    }
                }
                Ok((left, first_error))
            })
            .await;
            if let Ok((left, error)) = result {
                for key in &keys {
                    self.running.remove(key);
                }
                for (key, ..) in &left {
                    self.running.insert(key.clone());
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
            // Until these are recorded, nothing else: another node must not resend them.
            if !self.unrecorded.is_empty() {
                return;
            }
        }
        if !self.unclaimed.is_empty() {
            let claims = std::mem::take(&mut self.unclaimed);
            self.claim(claims).await;
        }
        if !self.ledger.shared() {
            return;
        }
        let now = self.clock.now();
        match blocking(&self.ledger, move |l| l.takeable(now)).await {
            Ok(keys) => {
                for key in keys {
                    if !self.running.contains(&key) && self.rt.config.job(&key.job).is_some() {
                        info!(job = %key.job, occurrence = %key.scheduled_at.to_rfc3339(), "taking over an occurrence another node left (its lease lapsed)");
                        self.start(key);
                    }
                }
            }
            Err(e) => warn!(error = %e, "looking for work other nodes left failed; trying again"),
        }
    }

    /// Claims fired occurrences and starts those this node won. A claim the ledger
    /// could not record waits in `unclaimed`: sending unrecorded could send twice.
    async fn claim(&mut self, claims: Vec<(Key, String)>) {
        let now = self.clock.now();
        let retry = claims.clone();
        let keys: Vec<Key> = claims.iter().map(|(k, _)| k.clone()).collect();
        match blocking(&self.ledger, move |l| l.claim(&claims, now)).await {
            Ok(fresh) => {
                for (key, new) in keys.into_iter().zip(fresh) {
                    if new {
                        self.start(key);
                    }
                }
            }
            Err(e) => {
                let expired = |k: &Key| {
                    (now - k.scheduled_at).to_std().unwrap_or_default()
                        > self.rt.config.delivery.retry_for
                };
                let (dropped, keep): (Vec<_>, Vec<_>) =
                    retry.into_iter().partition(|(k, _)| expired(k));
                for (k, _) in &dropped {
                    error!(job = %k.job, occurrence = %k.scheduled_at.to_rfc3339(), error = %e, "not sent: the ledger could not record the claim within retry_for");
                }
                if self.unclaimed.is_empty() && !keep.is_empty() {
                    error!(error = %e, occurrences = keep.len(), "the ledger cannot record claims; holding these occurrences until it can (nothing is sent unrecorded)");
                }
                self.unclaimed.extend(keep);
                self.next_poll = tokio::time::Instant::now() + LEDGER_RETRY;
            }
        }
    }

    async fn run(
        mut self,
        mut rx: mpsc::UnboundedReceiver<Msg>,
        unfinished: Vec<crate::ledger::Record>,
    ) {
        self.resume(unfinished).await;
        loop {
            let now = self.clock.now();
            let mut sleep_for = self.retries.peek().map_or(MAX_SLEEP, |Reverse((t, _))| {
                (*t - now).to_std().unwrap_or_default().min(MAX_SLEEP)
            });
            if self.poll_every().is_some() {
                sleep_for = sleep_for.min(
                    self.next_poll
                        .saturating_duration_since(tokio::time::Instant::now()),
                );
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
                Some(done) = self.inflight.join_next(), if !self.inflight.is_empty() => match done {
                    Ok(done) => self.finish(done).await,
                    Err(e) => error!(error = %e, "a delivery task failed"),
                },
                () = tokio::time::sleep(sleep_for) => {
                    self.retry_due().await;
                    self.poll().await;
                }
            }
        }
        // Shutdown: nothing new starts; sends in progress get the grace period. Whatever
        // is still pending stays pending in the ledger and resumes at the next start.
        let grace = self.rt.config.delivery.shutdown_grace;
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
        self.rt.mailer.close().await;
    }

    /// Requeues what the ledger says was unfinished when cronmail last stopped.
    async fn resume(&mut self, unfinished: Vec<crate::ledger::Record>) {
        let now = self.clock.now();
        for r in unfinished {
            let Some(job) = self.rt.config.job(&r.key.job) else {
                warn!(job = %r.key.job, occurrence = %r.key.scheduled_at.to_rfc3339(), "not sent: the job is no longer in jobs.toml; recorded as skipped");
                self.give_up_removed(r.key).await;
                continue;
            };
            if r.state == State::Sending {
                warn!(
                    job = %job.name,
                    occurrence = %local_rfc3339(job, r.key.scheduled_at),
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
        let res = blocking(&self.ledger, move |l| {
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
        let mut claims: Vec<(Key, String)> = Vec::new();
        let mut skips: Vec<(Key, String, &'static str)> = Vec::new();
        for msg in batch {
            match msg {
                Msg::Reload(rt) => {
                    self.rt = rt;
                    if self.hold.take().is_some() {
                        info!(
                            "configuration reloaded: resuming the sends held after an authentication failure"
                        );
                        self.release_held(now);
                    }
                }
                Msg::Timer(rt, TimerEvent::Fire(f)) => {
                    let job = &rt.config.jobs[f.job];
                    let late = (f.fired_at - f.occurrence).to_std().unwrap_or_default();
                    if f.caught_up {
                        info!(job = %job.name, occurrence = %local_rfc3339(job, f.occurrence), late_s = late.as_secs(), "sending a missed occurrence late (catch_up)");
                    } else if late > LATE_NOTICE {
                        info!(job = %job.name, occurrence = %local_rfc3339(job, f.occurrence), late_ms = u64::try_from(late.as_millis()).unwrap_or(u64::MAX), "sending late (cronmail was not running, or the machine was busy)");
                    }
                    let key = Key {
                        job: job.name.clone(),
                        scheduled_at: f.occurrence,
                    };
                    claims.push((key, message::message_id(job, f.occurrence)));
                }
                Msg::Timer(
                    rt,
                    TimerEvent::Skip {
                        job,
                        occurrence,
                        reason,
                    },
                ) => {
                    let job = &rt.config.jobs[job];
                    let key = Key {
                        job: job.name.clone(),
                        scheduled_at: occurrence,
                    };
                    skips.push((key, message::message_id(job, occurrence), reason.describe()));
                }
            }
        }
        if !skips.is_empty() {
            let res = blocking(&self.ledger, move |l| {
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

    /// Moves every held occurrence to "now".
    fn release_held(&mut self, now: DateTime<Utc>) {
        let all: Vec<_> = std::mem::take(&mut self.retries)
            .into_iter()
            .map(|Reverse((t, k))| (t, k))
            .collect();
        for (t, key) in all {
            let at = if self.held_logged.remove(&key) {
                now
            } else {
                t
            };
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
            if self.rt.config.job(&key.job).is_none() {
                warn!(job = %key.job, occurrence = %key.scheduled_at.to_rfc3339(), "not sent: the job was removed from jobs.toml; recorded as skipped");
                self.give_up_removed(key).await;
                continue;
            }
            self.start(key);
        }
    }

    /// Starts an attempt, or holds it while authentication is failing.
    fn start(&mut self, key: Key) {
        let now = self.clock.now();
        if let Some(hold) = &self.hold
            && now < hold.until
        {
            if self.held_logged.insert(key.clone())
                && let Some(job) = self.rt.config.job(&key.job)
            {
                error!(
                    job = %job.name,
                    occurrence = %local_rfc3339(job, key.scheduled_at),
                    class = "auth",
                    until = %hold.until.to_rfc3339(),
                    "held: sends are paused after an authentication failure; they resume after a reload with new credentials or at `until`"
                );
            }
            self.retries.push(Reverse((hold.until, key)));
            return;
        }
        let Some(job) = self.rt.config.job(&key.job).cloned() else {
            return;
        };
        if !self.running.insert(key.clone()) {
            return;
        }
        let rt = Arc::clone(&self.rt);
        let recorder = self.recorder.clone();
        let clock = Arc::clone(&self.clock);
        let span =
            info_span!("deliver", job = %key.job, occurrence = %key.scheduled_at.to_rfc3339());
        self.inflight.spawn(
            async move {
                let attempt = match recorder.start(key.clone(), now).await {
                    Ok(Some(n)) => n,
                    Ok(None) => {
                        return Done {
                            key,
                            attempt: 0,
                            result: Err((None, DeliverError::Ledger(String::new()))),
                            elsewhere: true,
                            unrecorded: None,
                        };
                    }
                    Err(e) => {
                        return Done {
                            key,
                            attempt: 0,
                            result: Err((None, DeliverError::Ledger(e))),
                            elsewhere: false,
                            unrecorded: None,
                        };
                    }
                };
                let result = deliver(&rt, &job, key.scheduled_at, clock.now(), None)
                    .await
                    .map(|(_, d)| d);
                // Record the delivery here, not after the worker picks this task up: the
                // shorter the gap after the server's reply, the rarer a resend after a crash.
                let mut unrecorded = None;
                if let Ok(d) = &result {
                    let reply = format!("{} {}", d.code, d.reply);
                    let done_at = clock.now();
                    if let Err(e) = recorder.sent(key.clone(), reply.clone(), done_at).await {
                        error!(error = %e, "the message was sent but the ledger could not record it; recording it again until it can (if cronmail stops first, it may be sent again, with the same Message-ID)");
                        unrecorded = Some((reply, done_at));
                    }
                }
                Done {
                    key,
                    attempt,
                    result,
                    elsewhere: false,
                    unrecorded,
                }
            }
            .instrument(span),
        );
    }

    /// Records an attempt's outcome and decides what comes next.
    async fn finish(&mut self, done: Done) {
        let now = self.clock.now();
        let Done {
            key,
            attempt,
            result,
            elsewhere,
            unrecorded,
        } = done;
        if let Some((reply, at)) = unrecorded {
            // Stays in `running` until recorded: not started again meanwhile.
            self.unrecorded.push((key, reply, at));
            self.next_poll = tokio::time::Instant::now() + LEDGER_RETRY;
            return;
        }
        self.running.remove(&key);
        if elsewhere {
            tracing::debug!(job = %key.job, occurrence = %key.scheduled_at.to_rfc3339(), "another node holds this occurrence");
            return;
        }
        let Err((message_id, err)) = result else {
            // Already recorded as sent by the attempt itself.
            self.held_logged.remove(&key);
            if let Some(h) = &mut self.hold {
                h.level = 0;
            }
            return;
        };
        let Some(job) = self.rt.config.job(&key.job).cloned() else {
            warn!(job = %key.job, occurrence = %key.scheduled_at.to_rfc3339(), "not sent: the job was removed from jobs.toml while this attempt ran; recorded as skipped");
            self.give_up_removed(key).await;
            return;
        };
        let (class, reply) = match &err {
            DeliverError::Send(e) => (e.class, e.reply.clone().unwrap_or_else(|| e.detail.clone())),
            DeliverError::Ledger(_) => (ErrorClass::Local, err.to_string()),
            _ => (ErrorClass::Permanent, err.to_string()),
        };
        let delivery = self.rt.config.delivery;
        let next = if class == ErrorClass::Auth {
            // Hold the whole account: one failed login, not one per occurrence.
            let level = self.hold.as_ref().map_or(0, |h| h.level) + 1;
            let until = now
                + chrono::Duration::from_std(retry::backoff(&delivery, level, fastrand::f64()))
                    .unwrap_or_default();
            self.hold = Some(Hold { until, level });
            self.held_logged.insert(key.clone());
            retry::expire_or(until, key.scheduled_at, &delivery)
        } else if matches!(err, DeliverError::Send(_) | DeliverError::Ledger(_)) {
            retry::after_failure(
                class,
                attempt.max(1),
                key.scheduled_at,
                now,
                &delivery,
                fastrand::f64(),
            )
        } else {
            // The message cannot be built (a render error): retrying cannot help.
            retry::Next::GiveUp(State::Failed)
        };
        let then = match next {
            retry::Next::RetryAt(at) => format!(
                "retrying at {}",
                at.to_rfc3339_opts(SecondsFormat::Secs, true)
            ),
            retry::Next::GiveUp(State::Expired) => format!(
                "expired: not delivered within retry_for ({}) of its scheduled time; giving up",
                humantime::format_duration(delivery.retry_for)
            ),
            retry::Next::GiveUp(_) => "failed permanently; not retrying".to_owned(),
        };
        log_failure(
            &self.rt,
            &job,
            key.scheduled_at,
            message_id.as_deref(),
            &err,
            attempt,
            &then,
        );
        let class_name = class.name();
        let result = match next {
            retry::Next::RetryAt(at) => {
                self.retries.push(Reverse((at, key.clone())));
                blocking(&self.ledger, move |l| {
                    l.retry_later(&key, class_name, &reply, at, now)
                })
                .await
            }
            retry::Next::GiveUp(state) => {
                blocking(&self.ledger, move |l| {
                    l.give_up(&key, state, class_name, &reply, now)
                })
                .await
            }
        };
        if let Err(e) = result {
            error!(error = %e, "recording the failure in the ledger failed");
        }
    }
}
