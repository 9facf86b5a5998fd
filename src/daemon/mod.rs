//! The service: the timer loop, the delivery worker, reload, shutdown and the
//! supervisor's notices. The only module that spawns long-lived tasks.
//!
//! Shape (after mini-redis): `run(service, events)` takes everything that varies as
//! inputs (`Service`: the clock, the machine's facts, the notice sink, the transport,
//! and the channel of control events), so that tests drive the whole service on paused
//! time in-process, and `main` with the system clock, `sd_notify` and OS signals.
//!
//! Files: `timer_loop` (what is due, when), `worker` (claims, retries, holds),
//! `attempt` (one send as a task), `recorder` (the one way to the ledger, with group
//! commit), `signals`, `notify`.

mod account;
mod attempt;
mod limit;
mod notify;
mod recorder;
mod signals;
mod skips;
mod timer_loop;
mod trim;
pub use trim::one_arena;
mod worker;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use chrono::SecondsFormat;
use tokio::sync::mpsc;
use tracing::{error, info, warn};

pub use notify::{Notice, Notify, SdNotify};
pub use signals::{Control, signal_events};
pub use timer_loop::{Fire, MAX_SLEEP, NoReload, Reload, TimerEvent, WATCHED_SLEEP, timer_loop};

use crate::clock::{Clock, SystemClock};
use crate::config::{Config, Host};
use crate::deliver::{self, LoadError, Loaded};
use crate::ledger::{self, LedgerError};
use crate::mail::MakeTransport;
use crate::secret::SecretError;
use crate::timer::Timer;
use recorder::{Recorder, on_blocking_pool};
use worker::{Msg, Worker};

/// Why the daemon could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("{0}")]
    Load(#[from] LoadError),
    #[error("reading the ledger database password: {0}")]
    Secret(#[from] SecretError),
    #[error("{0}")]
    Ledger(#[from] LedgerError),
    /// `[http] listen` could not be bound.
    #[error("[http] cannot listen on {addr}: {error}")]
    Listen {
        addr: std::net::SocketAddr,
        error: std::io::Error,
    },
}

/// What the daemon runs with: everything that a test replaces.
pub struct Service {
    /// jobs.toml.
    pub config: PathBuf,
    /// The machine's facts; `now` is replaced by the clock's at each load.
    pub host: Host,
    pub clock: Arc<dyn Clock>,
    pub notify: Arc<dyn Notify>,
    /// Builds the transport for each configuration loaded.
    pub transport: MakeTransport,
}

impl Service {
    /// The real one: the system clock, the machine's facts, `sd_notify`, the real mailer.
    pub fn system(config: PathBuf) -> Self {
        Service {
            config,
            host: Host::from_env(),
            clock: Arc::new(SystemClock),
            notify: Arc::new(SdNotify::from_env()),
            transport: crate::mail::make_mailer(),
        }
    }

    async fn load(&self) -> Result<Loaded, LoadError> {
        let host = Host {
            now: self.clock.now(),
            ..self.host.clone()
        };
        let loaded = deliver::load(&self.config, &host, &self.transport).await;
        if let Ok(l) = &loaded {
            for w in &l.config.warnings {
                warn!(job = w.job.as_deref().unwrap_or(""), "{w}");
            }
        }
        loaded
    }
}

/// Runs the daemon until `events` yields `Shutdown` (or closes).
pub async fn run(service: Service, events: mpsc::Receiver<Control>) -> Result<(), StartError> {
    let clock = Arc::clone(&service.clock);
    let notify = Arc::clone(&service.notify);
    let first = Arc::new(service.load().await?);
    let state_dir = first.config.state_dir.clone();
    let ledger = open_ledger(&first.config).await?;
    let ops = crate::ops::Ops::new(Arc::clone(&first.config), https_roots(&first.config));
    let (recorder, writer) = Recorder::spawn(ledger);
    let recorder = recorder.watched_by(Arc::clone(&ops));
    let http = start_http(&first.config, &ops, &clock).await?;
    let enabled = first.config.jobs.iter().filter(|j| j.enabled).count();
    info!(config = %service.config.display(), jobs = enabled, transport = first.transport(0).kind(), to = %first.destinations(), state_dir = %state_dir.display(), "cronmail started");

    // Jobs resume after the last occurrence the ledger has seen, so what was missed
    // while cronmail was down meets the catch-up policy.
    let ledger_id = ledger::identity(&first.config);
    let found = recorder
        .call(|l| Ok((l.last_handled()?, l.unfinished()?)))
        .await;
    seed_recent(&recorder, &ops).await;
    let (handled, unfinished) = match found {
        Ok(found) => found,
        Err(e) => {
            drop(recorder);
            let _ = writer.await;
            return Err(e.into());
        }
    };
    let mut events = daily_reload(events, !first.config.fetched_calendars.is_empty());
    let timer = Timer::new(first.config.jobs.clone(), clock.now(), &handled);
    notify.notify(&[Notice::Ready, status(&timer)]);

    let (tx, rx) = mpsc::unbounded_channel();
    let worker = Worker::new(
        Arc::clone(&first),
        recorder,
        Arc::clone(&clock),
        Arc::clone(&ops),
    );
    let worker = tokio::spawn(worker.run(rx, unfinished));
    drop(first);
    trim::after_load();

    let reloader = Reloader {
        service: &service,
        tx: &tx,
        state_dir: &state_dir,
        ledger_id: &ledger_id,
        ops: &ops,
    };
    // The loop reads the clock at each wake: that is its heartbeat for /healthz.
    let beating = Beating {
        inner: Arc::clone(&clock),
        ops: Arc::clone(&ops),
    };
    let loop_fut = timer_loop(
        timer,
        &beating,
        &mut events,
        |event| {
            if let TimerEvent::Fire(f) = &event {
                ops.metrics
                    .fired((f.fired_at - f.occurrence).to_std().unwrap_or_default());
            }
            // The worker outlives the loop, so a send only fails if it panicked.
            let _ = tx.send(Msg::Timer(event));
        },
        reloader,
    );

    match notify.watchdog() {
        None => loop_fut.await,
        Some(period) => {
            // WATCHDOG=1 only while the timer loop itself is alive: both run in this task.
            tokio::pin!(loop_fut);
            let mut tick = tokio::time::interval(period);
            loop {
                tokio::select! {
                    () = &mut loop_fut => break,
                    _ = tick.tick() => notify.notify(&[Notice::Watchdog]),
                }
            }
        }
    }

    notify.notify(&[Notice::Stopping]);
    drop(tx);
    if let Err(e) = worker.await {
        error!(error = %e, "the delivery worker failed");
    }
    // Every handle on the ledger is gone with the worker: the writer stops and drops it.
    if let Err(e) = writer.await {
        error!(error = %e, "the ledger writer failed");
    }
    if let Some(http) = http {
        http.abort();
    }
    info!("cronmail stopped");
    Ok(())
}

/// How often calendars fetched from a `url` are fetched again.
pub const CALENDAR_REFRESH: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

/// `events`, and when `daily`, a `Reload` every `CALENDAR_REFRESH`: calendars fetched
/// from a `url` are refreshed by reloading the configuration, the one path that swaps
/// what the jobs omit (a failed refresh keeps the last good copy, see `config`).
fn daily_reload(mut events: mpsc::Receiver<Control>, daily: bool) -> mpsc::Receiver<Control> {
    if !daily {
        return events;
    }
    let (tx, rx) = mpsc::channel(8);
    tokio::spawn(async move {
        let start = tokio::time::Instant::now() + CALENDAR_REFRESH;
        let mut tick = tokio::time::interval_at(start, CALENDAR_REFRESH);
        loop {
            let event = tokio::select! {
                e = events.recv() => match e {
                    Some(e) => e,
                    None => break,
                },
                _ = tick.tick() => {
                    info!("refreshing the calendars fetched from a url (a daily reload)");
                    Control::Reload
                }
            };
            if tx.send(event).await.is_err() {
                break;
            }
        }
    });
    rx
}

/// `[http] listen`: the status page, `/metrics` and `/healthz`, served until aborted.
async fn start_http(
    config: &crate::config::Config,
    ops: &Arc<crate::ops::Ops>,
    clock: &Arc<dyn Clock>,
) -> Result<Option<tokio::task::JoinHandle<()>>, StartError> {
    let Some(addr) = config.ops.listen else {
        return Ok(None);
    };
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|error| StartError::Listen { addr, error })?;
    info!(listen = %addr, "serving the status page, /metrics and /healthz");
    Ok(Some(tokio::spawn(crate::ops::serve(
        listener,
        Arc::clone(ops),
        Arc::clone(clock),
    ))))
}

/// The status page's recent outcomes start with what the ledger has.
async fn seed_recent(recorder: &Recorder, ops: &crate::ops::Ops) {
    if let Ok(records) = recorder.read(|l| l.history(None, 100)).await {
        for r in records.into_iter().rev() {
            ops.outcome(crate::ops::Recent {
                job: r.key.job.to_string(),
                occurrence: r.key.scheduled_at,
                state: r.state.name(),
                reply: r.final_reply.or(r.last_reply).unwrap_or_default(),
            });
        }
    }
}

/// Extra trusted roots for pings and webhooks: the SMTP `ca_file`s ("the SMTP trust").
fn https_roots(config: &crate::config::Config) -> Vec<Vec<u8>> {
    config
        .accounts
        .iter()
        .flat_map(|a| match &a.transport {
            crate::config::TransportConfig::Smtp(s) => s.extra_roots.clone(),
            crate::config::TransportConfig::Outbox { .. } => Vec::new(),
        })
        .collect()
}

/// The daemon's clock, noting each read in `/healthz`'s heartbeat.
struct Beating {
    inner: Arc<dyn Clock>,
    ops: Arc<crate::ops::Ops>,
}

impl Clock for Beating {
    fn now(&self) -> chrono::DateTime<chrono::Utc> {
        let now = self.inner.now();
        self.ops.health.beat(now);
        now
    }

    fn spin_window(&self) -> std::time::Duration {
        self.inner.spin_window()
    }

    fn real_time(&self) -> bool {
        self.inner.real_time()
    }

    fn steps(&self) -> Option<crate::clock::Steps> {
        self.inner.steps()
    }

    fn sleeping_until(&self, wake: chrono::DateTime<chrono::Utc>) {
        self.ops.health.sleeping_until(wake);
    }
}

/// A reload: load jobs.toml again, and swap the whole configuration or keep the old.
struct Reloader<'a> {
    service: &'a Service,
    tx: &'a mpsc::UnboundedSender<Msg>,
    state_dir: &'a std::path::Path,
    ledger_id: &'a str,
    ops: &'a Arc<crate::ops::Ops>,
}

impl Reload for Reloader<'_> {
    async fn reload(&mut self, _now: chrono::DateTime<chrono::Utc>) -> Option<Timer> {
        let service = self.service;
        service.notify.notify(&[Notice::Reloading]);
        let timer = match service.load().await {
            Ok(new) => {
                let jobs = new.config.jobs.iter().filter(|j| j.enabled).count();
                info!(config = %service.config.display(), jobs, transport = new.transport(0).kind(), to = %new.destinations(), "configuration reloaded");
                if new.config.state_dir != self.state_dir {
                    warn!(state_dir = %new.config.state_dir.display(), "`state_dir` changed; the new folder is used only after a restart");
                }
                if ledger::identity(&new.config) != self.ledger_id {
                    warn!("[ledger] changed; the new ledger is used only after a restart");
                }
                // A changed schedule takes effect from now: occurrences already handled
                // stay handled, nothing in between is caught up.
                let timer = Timer::new(
                    new.config.jobs.clone(),
                    service.clock.now(),
                    &HashMap::new(),
                );
                if new.config.ops.listen != self.ops.config().ops.listen {
                    warn!("[http] listen changed; the new address is used only after a restart");
                }
                self.ops.set_config(Arc::clone(&new.config));
                let _ = self.tx.send(Msg::Reload(Arc::new(new)));
                service.notify.notify(&[status(&timer)]);
                trim::after_load();
                Some(timer)
            }
            Err(e) => {
                error!(config = %service.config.display(), error = %e, "reload refused; the previous configuration keeps running");
                None
            }
        };
        service.notify.notify(&[Notice::Ready]);
        timer
    }
}

/// Opens the configured ledger for this daemon (locked), on the blocking pool.
async fn open_ledger(config: &Arc<Config>) -> Result<Box<dyn ledger::Ledger>, StartError> {
    let password = match ledger::password_source(config) {
        Some(src) => Some(src.read().await?),
        None => None,
    };
    let config = Arc::clone(config);
    Ok(
        on_blocking_pool(move || ledger::open(&config, password.as_ref(), ledger::Mode::Exclusive))
            .await?,
    )
}

/// The status line: the next occurrence.
fn status(timer: &Timer) -> Notice {
    Notice::Status(match timer.peek() {
        Some((t, i)) => format!(
            "next: {} at {}",
            timer.job(i).name,
            t.with_timezone(&timer.job(i).tz())
                .to_rfc3339_opts(SecondsFormat::Secs, true)
        ),
        None => "no job scheduled".to_owned(),
    })
}
