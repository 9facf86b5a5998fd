//! Pings and failure alerts, in the background: a job's `ping_url` (healthchecks.io's
//! protocol: `/start`, success, `/fail`), the `[monitor]` heartbeat, and `[notify]`'s
//! webhook and command.
//!
//! None of them delays a delivery: the worker only queues (and drops, with a WARN, when
//! a lane is full). Each lane sends in order, each request bounded by
//! `fetch::TIMEOUT` (10 s) and tried up to `TRIES` times. A target that keeps failing is
//! logged at WARN once per streak, and at INFO when it works again. URLs are secrets:
//! logs name their host only.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc;
use tracing::{info, warn};

use crate::config::OpsConfig;
use crate::secret::SecretUrl;

/// Tries per request: the first, and two retries after 1 s and 2 s.
const TRIES: u32 = 3;

/// Requests waiting in a lane, at most; past it they are dropped, with a WARN.
const LANE_DEPTH: usize = 256;

/// How long a `[notify] command` may run.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);

/// A failure worth telling someone about: an occurrence that ended failed or expired,
/// or a failure that holds the account.
#[derive(Clone, Debug, serde::Serialize)]
pub struct FailureEvent {
    pub job: String,
    /// RFC 3339, UTC.
    pub occurrence: String,
    /// `failed`, `expired` or `held`.
    pub state: &'static str,
    pub class: String,
    pub reply: String,
    pub hint: String,
    pub message_id: String,
}

impl FailureEvent {
    /// One line: what a ping's `/fail` body and a text webhook carry.
    pub fn line(&self) -> String {
        let mut out = format!(
            "cronmail: job `{}` occurrence {} {} ({}): {}",
            self.job, self.occurrence, self.state, self.class, self.reply
        );
        if !self.hint.is_empty() {
            out.push_str(" | hint: ");
            out.push_str(&self.hint);
        }
        out
    }

    fn env(&self) -> [(&'static str, String); 7] {
        [
            ("CRONMAIL_JOB", self.job.clone()),
            ("CRONMAIL_OCCURRENCE", self.occurrence.clone()),
            ("CRONMAIL_STATE", self.state.to_owned()),
            ("CRONMAIL_CLASS", self.class.clone()),
            ("CRONMAIL_REPLY", self.reply.clone()),
            ("CRONMAIL_HINT", self.hint.clone()),
            ("CRONMAIL_MESSAGE_ID", self.message_id.clone()),
        ]
    }
}

/// A job's ping: healthchecks.io's three calls.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ping {
    Start,
    Success,
    Fail,
}

enum Work {
    Http {
        what: &'static str,
        url: SecretUrl,
        suffix: &'static str,
        body: Option<(&'static str, Vec<u8>)>,
    },
    Command(Vec<String>, FailureEvent),
}

/// The lanes, and what is configured now (a reload swaps it).
pub struct Alerts {
    pings: mpsc::Sender<Work>,
    notify: mpsc::Sender<Work>,
    current: Mutex<OpsConfig>,
    failing: Arc<Mutex<HashSet<String>>>,
}

impl Alerts {
    /// Starts the lanes. `roots`: extra trusted roots (the SMTP `ca_file`).
    pub fn spawn(config: OpsConfig, roots: Vec<Vec<u8>>) -> Arc<Self> {
        let failing = Arc::new(Mutex::new(HashSet::new()));
        let roots = Arc::new(roots);
        let alerts = Arc::new(Alerts {
            pings: lane(Arc::clone(&roots), Arc::clone(&failing)),
            notify: lane(roots, Arc::clone(&failing)),
            current: Mutex::new(config),
            failing,
        });
        if let Some((_, every)) = alerts.config().heartbeat {
            let weak = Arc::downgrade(&alerts);
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(every);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tick.tick().await;
                    let Some(alerts) = weak.upgrade() else { break };
                    if let Some((url, _)) = alerts.config().heartbeat {
                        alerts.queue(
                            &alerts.pings,
                            Work::Http {
                                what: "heartbeat",
                                url,
                                suffix: "",
                                body: None,
                            },
                        );
                    }
                }
            });
        }
        alerts
    }

    fn config(&self) -> OpsConfig {
        self.current
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// A reload's configuration (the heartbeat's period stays as started).
    pub fn set_config(&self, config: OpsConfig) {
        *self
            .current
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = config;
    }

    fn queue(&self, lane: &mpsc::Sender<Work>, work: Work) {
        if lane.try_send(work).is_err() {
            let mut failing = self
                .failing
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if failing.insert("queue".to_owned()) {
                warn!(
                    "pings and alerts are backing up; dropping some (deliveries are not affected)"
                );
            }
        }
    }

    /// A job's ping (`url` is its `ping_url`); `Fail` carries the failure line.
    pub fn ping(&self, url: &SecretUrl, ping: Ping, body: Option<String>) {
        let (suffix, body) = match ping {
            Ping::Start => ("/start", None),
            Ping::Success => ("", None),
            Ping::Fail => (
                "/fail",
                Some((
                    "text/plain; charset=utf-8",
                    body.unwrap_or_default().into_bytes(),
                )),
            ),
        };
        self.queue(
            &self.pings,
            Work::Http {
                what: "ping_url",
                url: url.clone(),
                suffix,
                body,
            },
        );
    }

    /// A final failure or a hold: to the webhook and the command, when configured.
    pub fn failure(&self, event: &FailureEvent) {
        let config = self.config();
        if let Some((url, json)) = config.webhook {
            let body = if json {
                (
                    "application/json",
                    serde_json::to_vec(event).unwrap_or_default(),
                )
            } else {
                ("text/plain; charset=utf-8", event.line().into_bytes())
            };
            self.queue(
                &self.notify,
                Work::Http {
                    what: "webhook",
                    url,
                    suffix: "",
                    body: Some(body),
                },
            );
        }
        if let Some(command) = config.command {
            self.queue(&self.notify, Work::Command(command, event.clone()));
        }
    }
}

/// One lane: a task that does its work in order.
fn lane(roots: Arc<Vec<Vec<u8>>>, failing: Arc<Mutex<HashSet<String>>>) -> mpsc::Sender<Work> {
    let (tx, mut rx) = mpsc::channel::<Work>(LANE_DEPTH);
    tokio::spawn(async move {
        while let Some(work) = rx.recv().await {
            let (target, result) = run(work, &roots).await;
            let mut failing = failing
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            match result {
                Ok(()) => {
                    if failing.remove(&target) {
                        info!(target = %target, "works again");
                    }
                }
                Err(e) => {
                    if failing.insert(target.clone()) {
                        warn!(target = %target, error = %e, "failed after {TRIES} tries; not logged again until it works (deliveries are not affected)");
                    }
                }
            }
        }
    });
    tx
}

/// Does one piece of work, with retries: what it was (for the log) and how it ended.
async fn run(work: Work, roots: &Arc<Vec<Vec<u8>>>) -> (String, Result<(), String>) {
    match work {
        Work::Http {
            what,
            url,
            suffix,
            body,
        } => {
            let target = format!("{what} {}", url.host());
            let mut last = Err(String::new());
            for n in 0..TRIES {
                if n > 0 {
                    tokio::time::sleep(Duration::from_secs(1 << (n - 1))).await;
                }
                let req = crate::fetch::Request {
                    url: format!("{}{suffix}", url.expose().trim_end_matches('/')),
                    body: body.clone(),
                    allow_http: true,
                    roots: roots.to_vec(),
                    limit: 64 * 1024,
                };
                last = tokio::task::spawn_blocking(move || crate::fetch::request(&req).map(drop))
                    .await
                    .unwrap_or_else(|_| Err("the request stopped unexpectedly".to_owned()));
                if last.is_ok() {
                    break;
                }
            }
            (target, last)
        }
        Work::Command(argv, event) => {
            let target = format!("command {}", argv[0]);
            (target, command(&argv, &event).await)
        }
    }
}

async fn command(argv: &[String], event: &FailureEvent) -> Result<(), String> {
    let mut cmd = tokio::process::Command::new(&argv[0]);
    cmd.args(&argv[1..])
        .envs(event.env())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true);
    let mut child = cmd.spawn().map_err(|e| format!("could not start: {e}"))?;
    match tokio::time::timeout(COMMAND_TIMEOUT, child.wait()).await {
        Ok(Ok(status)) if status.success() => Ok(()),
        Ok(Ok(status)) => Err(format!("exited with {status}")),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => {
            let _ = child.kill().await;
            Err(format!(
                "still running after {} s; stopped",
                COMMAND_TIMEOUT.as_secs()
            ))
        }
    }
}
