//! The whole daemon in this process, on paused tokio time: `cronmail::daemon::run` with
//! a clock that follows tokio's time, the notices it sends recorded, and the real
//! mailer, whose network I/O runs in real time on a runtime of its own.
//!
//! Why that works without a wall-clock sleep anywhere: paused time jumps ahead only
//! when every task is idle, and a blocking task (the ledger's writes, and here each
//! SMTP transaction) holds the jump off until it is done. So after
//! `tokio::time::sleep(d).await` in a test, the service has done everything it would
//! have done by then, in order.

use std::sync::{Arc, Mutex, OnceLock};

use chrono::{DateTime, Utc};
use cronmail::clock::{Clock as _, TokioClock};
use cronmail::config::{Config, Host};
use cronmail::daemon::{Control, Notice, Notify, Service, StartError};
use cronmail::{BoxFuture, Delivered, Failure, Mailer, MakeTransport, Outgoing, Transport};
use secrecy::SecretString;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::ConfigDir;

/// The notices the daemon sent, in order.
#[derive(Default)]
pub struct Notices(Mutex<Vec<Notice>>);

impl Notify for Notices {
    fn notify(&self, notices: &[Notice]) {
        self.0.lock().unwrap().extend_from_slice(notices);
    }
}

impl Notices {
    /// The notices without the status lines.
    pub fn states(&self) -> Vec<Notice> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .filter(|n| !matches!(n, Notice::Status(_)))
            .cloned()
            .collect()
    }
}

/// `jobs` in UTC with state in `state/`, and `[smtp]` (with its keys so far) for
/// `server` over STARTTLS, trusting `pki`, the password read from the file
/// `smtp-password` (holding `password`), a 10 s timeout.
pub fn service_config(
    server: &super::SmtpServer,
    pki: &super::Pki,
    password: &str,
    jobs: super::JobsToml,
) -> ConfigDir {
    let cfg = jobs
        .top("timezone = \"UTC\"")
        .top("state_dir = \"state\"")
        .smtp(server.port, "starttls", Some(&pki.ca))
        .smtp_key("password_file = \"smtp-password\"")
        .smtp_key("timeout = \"10s\"")
        .write();
    std::fs::write(cfg.dir.path().join("smtp-password"), password).unwrap();
    cfg
}

/// A running in-process daemon. Drop it only after `stop`.
pub struct InProcess {
    events: mpsc::Sender<Control>,
    task: JoinHandle<Result<(), StartError>>,
    pub notices: Arc<Notices>,
    clock: Arc<JumpClock>,
}

/// The wall clock on paused tokio time, which a test can also step, as NTP or a
/// suspend/resume would.
pub struct JumpClock {
    inner: TokioClock,
    jumped: std::sync::atomic::AtomicI64,
}

impl JumpClock {
    pub fn at(at: DateTime<Utc>) -> Self {
        JumpClock {
            inner: TokioClock::starting_at(at),
            jumped: std::sync::atomic::AtomicI64::new(0),
        }
    }

    /// Steps the wall clock by `seconds` (negative: back).
    pub fn jump(&self, seconds: i64) {
        self.jumped
            .fetch_add(seconds, std::sync::atomic::Ordering::SeqCst);
    }
}

impl cronmail::clock::Clock for JumpClock {
    fn now(&self) -> DateTime<Utc> {
        self.inner.now()
            + chrono::Duration::seconds(self.jumped.load(std::sync::atomic::Ordering::SeqCst))
    }
}

impl InProcess {
    /// Starts the daemon on `config` with the wall clock at `at` (paused time must be on).
    pub fn start(config: &ConfigDir, at: DateTime<Utc>) -> Self {
        Self::start_with(config, Arc::new(JumpClock::at(at)))
    }

    /// Starts the daemon with `clock`, which a test may jump.
    pub fn start_with(config: &ConfigDir, clock: Arc<JumpClock>) -> Self {
        let at = clock.now();
        let notices = Arc::new(Notices::default());
        let service = Service {
            config: config.path.clone(),
            host: Host::fixed(at),
            clock: Arc::clone(&clock) as Arc<dyn cronmail::clock::Clock>,
            notify: Arc::clone(&notices) as Arc<dyn Notify>,
            transport: real_time_mailer(),
        };
        let (events, rx) = mpsc::channel(8);
        let task = tokio::spawn(cronmail::daemon::run(service, rx));
        InProcess {
            events,
            task,
            notices,
            clock,
        }
    }

    /// The daemon's wall clock.
    pub fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }

    /// SIGHUP, in-process.
    pub async fn reload(&self) {
        self.events.send(Control::Reload).await.unwrap();
    }

    /// SIGTERM, in-process: the daemon's own result once it has stopped.
    pub async fn stop(self) -> Result<(), StartError> {
        let _ = self.events.send(Control::Shutdown).await;
        self.task.await.unwrap()
    }

    /// The daemon's result, when it stopped by itself (it could not start).
    pub async fn finished(self) -> Result<(), StartError> {
        self.task.await.unwrap()
    }
}

/// A runtime in real time, for the mailer's I/O; one for the whole test binary (a
/// runtime must not be dropped inside another).
fn real_time() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap()
    })
}

/// The real mailer, each call run to its end on the real-time runtime from a blocking
/// task, so that paused time waits for the server's answers.
struct RealTime(Arc<Mailer>);

impl Transport for RealTime {
    fn send<'a>(&'a self, out: &'a Outgoing) -> BoxFuture<'a, Result<Delivered, Failure>> {
        let mailer = Arc::clone(&self.0);
        let out = out.clone();
        Box::pin(async move {
            tokio::task::spawn_blocking(move || real_time().block_on(mailer.send(&out)))
                .await
                .unwrap()
        })
    }

    fn close(&self) -> BoxFuture<'_, ()> {
        let mailer = Arc::clone(&self.0);
        Box::pin(async move {
            tokio::task::spawn_blocking(move || real_time().block_on(mailer.close()))
                .await
                .unwrap();
        })
    }

    fn destination(&self) -> String {
        self.0.destination()
    }

    fn username(&self) -> &str {
        self.0.username()
    }

    fn kind(&self) -> &'static str {
        "smtp"
    }
}

fn real_time_mailer() -> MakeTransport {
    Arc::new(
        |config: &Config,
         account: &cronmail::config::AccountConfig,
         password: Option<SecretString>| {
            let _guard = real_time().enter();
            let mailer = Mailer::new(
                &account.transport,
                password,
                config.delivery.max_connections,
            )?;
            Ok(Arc::new(RealTime(Arc::new(mailer))) as Arc<dyn Transport>)
        },
    )
}
