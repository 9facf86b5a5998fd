//! After an attempt: log its outcome, tell metrics and alerts, and record what comes
//! next (delivered, retry at, hold, or give up).

use std::cmp::Reverse;

use tracing::{error, warn};

use super::super::attempt::Done;
use super::{LEDGER_RETRY, Worker};
use crate::deliver::{self, utc};
use crate::ops::{FailureEvent, Ping};
use crate::retry::{self, Next};

impl Worker {
    /// `cronmail_pending`: what is claimed and not finished, per job.
    pub(super) fn publish_pending(&self) {
        let mut counts: std::collections::HashMap<&str, i64> = std::collections::HashMap::new();
        let keys = self
            .running
            .iter()
            .chain(self.retries.iter().map(|Reverse((_, k))| k))
            .chain(self.unclaimed.iter().map(|(k, _)| k));
        let mut seen = std::collections::HashSet::new();
        for k in keys {
            if seen.insert(k) {
                *counts.entry(&*k.job).or_default() += 1;
            }
        }
        let jobs: Vec<&str> = self.current.config.jobs.iter().map(|j| &*j.name).collect();
        self.ops.metrics.pending(&jobs, &counts);
    }

    /// Logs an attempt's outcome, and records what comes next.
    pub(super) async fn finish(&mut self, done: Done) {
        let now = self.clock.now();
        let Done {
            key,
            job,
            attempt,
            started,
            result,
            elsewhere,
            unrecorded,
        } = done;
        if elsewhere {
            self.late.remove(&key);
            self.running.remove(&key);
            tracing::debug!(job = %key.job, occurrence = %utc(key.scheduled_at), "another node holds this occurrence");
            for k in self.account.abandoned(&key) {
                self.start(k);
            }
            return;
        }
        let line = deliver::LogContext {
            job: &job,
            occurrence: key.scheduled_at,
            attempt,
            transport: &*self.current.transport,
            elapsed: started.elapsed(),
            late: self.late.remove(&key),
        };
        let err = match result {
            Ok(sent) => {
                deliver::log_outcome(&line, Ok(&sent), "");
                self.observe_success(&job, &key, &sent.delivered.reply, now, line.elapsed);
                if let Some((reply, at)) = unrecorded {
                    // Stays in `running` until recorded: not started again meanwhile.
                    self.unrecorded.push((key, reply, at));
                    self.next_poll = tokio::time::Instant::now() + LEDGER_RETRY;
                    return;
                }
                self.running.remove(&key);
                for k in self.account.succeeded(&key) {
                    self.start(k);
                }
                return;
            }
            Err(failed) => failed,
        };
        self.running.remove(&key);
        let (message_id, err) = err;
        if self.job(&key).is_none() {
            warn!(job = %key.job, occurrence = %utc(key.scheduled_at), "not sent: the job was removed from jobs.toml while this attempt ran; recorded as skipped");
            for k in self.account.abandoned(&key) {
                self.start(k);
            }
            self.give_up_removed(key).await;
            return;
        }
        let delivery = self.current.config.delivery;
        let class = err.class();
        let was_held = self.account.hold().is_some();
        let decision = retry::decide(
            class,
            attempt,
            key.scheduled_at,
            now,
            &delivery,
            self.account.hold(),
            fastrand::f64(),
        );
        for (at, k) in self.account.failed(&key, &decision, now) {
            self.retries.push(Reverse((at, k)));
        }
        let then = retry::then(decision.next, &delivery);
        deliver::log_outcome(&line, Err((message_id.as_deref(), &err)), &then);
        self.observe_failure(
            &job,
            &key,
            &err,
            message_id.as_deref(),
            &decision,
            was_held,
            line.elapsed,
        );
        let class_name = class.name();
        let reply = err.reply();
        let result = match decision.next {
            Next::RetryAt(at) => {
                self.retries.push(Reverse((at, key.clone())));
                self.recorder
                    .call(move |l| l.retry_later(&key, class_name, &reply, at, now))
                    .await
            }
            Next::GiveUp(state) => {
                self.recorder
                    .call(move |l| l.give_up(&key, state, class_name, &reply, now))
                    .await
            }
        };
        if let Err(e) = result {
            error!(error = %e, "recording the failure in the ledger failed");
        }
    }

    /// Metrics and the job's ping for a delivery.
    fn observe_success(
        &self,
        job: &crate::config::Job,
        key: &crate::ledger::Key,
        reply: &str,
        now: chrono::DateTime<chrono::Utc>,
        elapsed: std::time::Duration,
    ) {
        self.ops.metrics.sent(&job.name, now, elapsed);
        self.ops.metrics.held(false);
        self.ops.outcome(crate::ops::Recent {
            job: job.name.to_string(),
            occurrence: key.scheduled_at,
            state: "sent",
            reply: reply.to_owned(),
        });
        if let Some(url) = &job.ping_url {
            self.ops.alerts.ping(url, Ping::Success, None);
        }
    }

    /// Metrics and alerts for a failed attempt: a final failure, or the start of a
    /// hold, is told to the job's ping (`/fail`), the webhook and the command.
    #[allow(clippy::too_many_arguments)] // each is a different fact of one failure
    fn observe_failure(
        &self,
        job: &crate::config::Job,
        key: &crate::ledger::Key,
        err: &deliver::DeliverError,
        message_id: Option<&str>,
        decision: &retry::Decision,
        was_held: bool,
        elapsed: std::time::Duration,
    ) {
        let class = err.class();
        self.ops.metrics.failed(&job.name, class.name(), elapsed);
        let held = self.account.hold().is_some();
        self.ops.metrics.held(held);
        self.ops.outcome(crate::ops::Recent {
            job: job.name.to_string(),
            occurrence: key.scheduled_at,
            state: match decision.next {
                Next::GiveUp(state) => state.name(),
                Next::RetryAt(_) if held => "held",
                Next::RetryAt(_) => "retrying",
            },
            reply: format!("{class}: {}", err.reply()),
        });
        let state = match decision.next {
            Next::GiveUp(state) => state.name(),
            Next::RetryAt(_) if held && !was_held => "held",
            Next::RetryAt(_) => return,
        };
        let hint = match err {
            deliver::DeliverError::Send(e) => e.hint.clone().unwrap_or_default(),
            _ => String::new(),
        };
        let event = FailureEvent {
            job: String::from(&*job.name),
            occurrence: utc(key.scheduled_at),
            state,
            class: class.name().to_owned(),
            reply: err.reply(),
            hint,
            message_id: message_id.unwrap_or_default().to_owned(),
        };
        if let Some(url) = &job.ping_url {
            self.ops.alerts.ping(url, Ping::Fail, Some(event.line()));
        }
        self.ops.alerts.failure(&event);
    }
}
