//! The service: one timer loop, deliveries, signals, reload, shutdown, `sd_notify`.
//! The only module that spawns tasks.
//!
//! Shape (after mini-redis): `run(path, clock, events)` takes its clock and its control
//! events as inputs, so tests drive it with paused time and a channel, and `main` with
//! the system clock and OS signals. One loop `select!`s between "the next occurrence is
//! due" and "a control event arrived"; it never polls per job.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, SecondsFormat, Utc};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tracing::{Instrument, error, info, info_span, warn};

use crate::clock::Clock;
use crate::config::{self, Config, Host};
use crate::diagnostic::Diagnostics;
use crate::mailer::{DEFAULT_MAX_CONNECTIONS, Delivered, Mailer, SendError};
use crate::message::{self, ComposeError, Outgoing};
use crate::render::TemplateError;
use crate::secret::SecretError;
use crate::timer::{Decision, Timer};

/// Longest single sleep of the timer loop. The loop re-reads the wall clock when it
/// wakes, so a suspend, an NTP step or a manual clock change delays a reminder by at
/// most this much, not by however long a monotonic sleep had left.
pub const MAX_SLEEP: Duration = Duration::from_secs(60);

/// How long in-flight sends may finish after SIGTERM before the process exits anyway.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(20);

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
    Mailer(SendError),
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
    let mailer = Mailer::new(&config.transport, password, DEFAULT_MAX_CONNECTIONS)
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
    Send(#[from] SendError),
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

/// Renders, sends and logs one occurrence: an INFO line on success, an ERROR line with
/// class, reply and hint on failure.
pub async fn deliver(
    rt: &Runtime,
    job: &config::Job,
    occurrence: DateTime<Utc>,
    now: DateTime<Utc>,
    redirect: Option<&lettre::message::Mailbox>,
) -> Result<(Outgoing, Delivered), DeliverError> {
    let started = Instant::now();
    let occurrence_text = occurrence
        .with_timezone(&job.tz())
        .to_rfc3339_opts(SecondsFormat::Secs, true);
    let out = match prepare(&rt.config, job, occurrence, now, redirect) {
        Ok(out) => out,
        Err(e) => {
            error!(job = %job.name, occurrence = %occurrence_text, class = "render", error = %e, "not sent: the message could not be built");
            return Err(e);
        }
    };
    match rt.mailer.send(&out).await {
        Ok(d) => {
            info!(
                job = %job.name,
                occurrence = %occurrence_text,
                recipients = out.recipient_count(),
                message_id = %out.message_id,
                smtp_code = d.code,
                reply = %d.reply,
                elapsed_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
                "sent"
            );
            Ok((out, d))
        }
        Err(e) => {
            let (server, username) = match &rt.config.transport {
                config::TransportConfig::Smtp(s) => (
                    format!("{}:{}", s.host, s.port),
                    s.username.clone().unwrap_or_default(),
                ),
                config::TransportConfig::Outbox { dir } => {
                    (dir.display().to_string(), String::new())
                }
            };
            error!(
                job = %job.name,
                occurrence = %occurrence_text,
                message_id = %out.message_id,
                server = %server,
                username = %username,
                class = %e.class,
                phase = e.phase.name(),
                smtp_code = e.code.unwrap_or(0),
                reply = e.reply.as_deref().unwrap_or(""),
                hint = e.hint.as_deref().unwrap_or(""),
                "not sent: {e}"
            );
            Err(e.into())
        }
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
        if self.enabled {
            if let Err(e) = sd_notify::notify(false, states) {
                warn!(error = %e, "could not notify systemd");
            }
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

/// The timer loop alone: sleeps until the next occurrence, decides what is due, and
/// hands each fire to `fire`. Returns when `events` yields `Shutdown` or closes.
/// `on_reload` is asked for a new `Timer` on `Reload`; it returns `None` to keep the old.
pub async fn timer_loop(
    mut timer: Timer,
    clock: &dyn Clock,
    events: &mut mpsc::Receiver<Control>,
    mut fire: impl FnMut(Fire),
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
        fire_due(&mut timer, clock, &mut fire);

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
                if let Some(d) = deadline {
                    if d - clock.now() <= chrono::Duration::from_std(clock.spin_window()).unwrap_or_default() {
                        spin_until(clock, d);
                    }
                }
            }
            event = events.recv() => match event {
                Some(Control::Reload) => {
                    // Fire whatever is due under the old jobs first, so nothing falls
                    // between the old timer and the new one.
                    fire_due(&mut timer, clock, &mut fire);
                    if let Some(new) = on_reload(clock.now()).await {
                        timer = new;
                    }
                }
                Some(Control::Shutdown) | None => return,
            }
        }
    }
}

/// Decides everything due now, logs skips, and hands each fire over.
fn fire_due(timer: &mut Timer, clock: &dyn Clock, fire: &mut impl FnMut(Fire)) {
    timer.due(clock.now(), |job, d| match d {
        Decision::Fire { job: i, occurrence, caught_up, .. } => {
            // Stamp the hand-off itself: this is the lateness the design notes report.
            fire(Fire { job: i, occurrence, fired_at: clock.now(), caught_up });
        }
        Decision::Skip { occurrence, late, reason, .. } => {
            warn!(job = %job.name, occurrence = %occurrence.to_rfc3339(), late_s = late.as_secs(), reason = reason.describe(), "skipped");
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

/// Runs the daemon on the config at `path` until `Shutdown`.
pub async fn run(
    path: PathBuf,
    clock: Arc<dyn Clock>,
    mut events: mpsc::Receiver<Control>,
) -> Result<(), StartError> {
    let notifier = Notifier::from_env();
    let rt = load(&path, &Host::from_env()).await?;
    let enabled = rt.config.jobs.iter().filter(|j| j.enabled).count();
    info!(config = %path.display(), jobs = enabled, transport = %rt.mailer.destination(), "cronmail started");
    let timer = Timer::new(rt.config.jobs.clone(), clock.now(), &HashMap::default());
    notifier.send(&[sd_notify::NotifyState::Ready]);
    notifier.status(&timer);

    let current = std::sync::Mutex::new(Arc::new(rt));
    let (tx, rx) = mpsc::unbounded_channel();
    let worker = tokio::spawn(delivery_worker(rx, Arc::clone(&clock)));

    let loop_fut = timer_loop(
        timer,
        &*clock,
        &mut events,
        |f| {
            let rt = current
                .lock()
                .map_or_else(|p| Arc::clone(&p.into_inner()), |g| Arc::clone(&g));
            // The worker outlives the loop, so a send only fails if it panicked.
            let _ = tx.send((rt, f));
        },
        async |_now| {
            notifier.send(&[
                sd_notify::NotifyState::Reloading,
                sd_notify::NotifyState::monotonic_usec_now()
                    .unwrap_or(sd_notify::NotifyState::MonotonicUsec(0)),
            ]);
            let timer = match load(&path, &Host::from_env()).await {
                Ok(new) => {
                    let jobs = new.config.jobs.iter().filter(|j| j.enabled).count();
                    info!(config = %path.display(), jobs, transport = %new.mailer.destination(), "configuration reloaded");
                    let timer =
                        Timer::new(new.config.jobs.clone(), clock.now(), &HashMap::default());
                    if let Ok(mut g) = current.lock() {
                        *g = Arc::new(new);
                    }
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
    info!("cronmail stopped");
    Ok(())
}

/// Spawns a delivery per fire, reaps finished ones, and at shutdown (the channel
/// closed) gives those in flight `SHUTDOWN_GRACE` to finish.
async fn delivery_worker(
    mut rx: mpsc::UnboundedReceiver<(Arc<Runtime>, Fire)>,
    clock: Arc<dyn Clock>,
) {
    let mut inflight: JoinSet<()> = JoinSet::new();
    loop {
        tokio::select! {
            msg = rx.recv() => {
                let Some((rt, f)) = msg else { break };
                let job = rt.config.jobs[f.job].clone();
                let span = info_span!("deliver", job = %job.name, occurrence = %f.occurrence.to_rfc3339());
                if f.caught_up {
                    let late = (f.fired_at - f.occurrence).to_std().unwrap_or_default();
                    info!(job = %job.name, occurrence = %f.occurrence.to_rfc3339(), late_s = late.as_secs(), "sending a missed occurrence late (catch_up)");
                }
                let clock = Arc::clone(&clock);
                inflight.spawn(async move {
                    let _ = deliver(&rt, &job, f.occurrence, clock.now(), None).await;
                }.instrument(span));
            }
            Some(done) = inflight.join_next(), if !inflight.is_empty() => {
                if let Err(e) = done {
                    error!(error = %e, "a delivery task failed");
                }
            }
        }
    }
    if !inflight.is_empty() {
        info!(
            in_flight = inflight.len(),
            grace_s = SHUTDOWN_GRACE.as_secs(),
            "stopping: waiting for sends in progress"
        );
    }
    let drained = tokio::time::timeout(SHUTDOWN_GRACE, async {
        while inflight.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        warn!(
            abandoned = inflight.len(),
            "stopping: sends still in progress after the grace period were abandoned"
        );
        inflight.abort_all();
    }
}
