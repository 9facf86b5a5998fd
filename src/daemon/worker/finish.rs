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
                *counts.entry(crate::config::job_of(&k.job)).or_default() += 1;
            }
        }
        self.ops.metrics.pending(&counts);
    }

    /// Logs an attempt's outcome, and records what comes next.
    pub(super) async fn finish(&mut self, done: Done) {
        let now = self.clock.now();
        let Done {
            key,
            job,
            account,
            attempt,
            started,
            result,
            elsewhere,
            unrecorded,
        } = done;
        self.ended(account, &key, result.as_ref().ok().map(|_| now));
        if elsewhere {
            self.elsewhere(account, &key);
            return;
        }
        // A reload may have removed the account: its state is gone, and so is the claim.
        let account = account.min(self.accounts.len().saturating_sub(1));
        let current = std::sync::Arc::clone(&self.current);
        let line = deliver::LogContext {
            job: &job,
            row: key.row_key(),
            occurrence: key.scheduled_at,
            attempt,
            transport: &**current.transport(account.min(current.transports.len() - 1)),
            elapsed: started.elapsed(),
            late: self.late.remove(&key),
        };
        let err = match result {
            Ok(sent) => {
                deliver::log_outcome(&line, Ok(&sent), "");
                self.observe_success(
                    (&job, account),
                    &key,
                    &sent.delivered.reply,
                    now,
                    line.elapsed,
                );
                self.via.remove(&key);
                if let Some(receipt) = unrecorded {
                    // Stays in `running` until recorded: not started again meanwhile.
                    self.unrecorded.push(receipt);
                    self.next_poll = tokio::time::Instant::now() + LEDGER_RETRY;
                    return;
                }
                self.running.remove(&key);
                for k in self.accounts[account].login.succeeded(&key) {
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
            self.abandoned(account, &key);
            self.give_up_removed(key).await;
            return;
        }
        if let deliver::DeliverError::Skipped(why) = err {
            self.skipped_by_job(&job, account, key, why).await;
            return;
        }
        let delivery = self.current.config.delivery;
        let class = err.class();
        let was_held = self.accounts[account].login.hold().is_some();
        let mut decision = retry::decide(
            class,
            attempt,
            key.scheduled_at,
            now,
            &delivery,
            self.accounts[account].login.hold(),
            fastrand::f64(),
        );
        let unblocked = self.account_after(account, &key, &err, &decision, now);
        let mut then = retry::then(decision.next, &delivery);
        if let Some(other) = self.fall_back(&job, account, &key, class, &decision) {
            // A different server: no reason to wait out the backoff.
            decision.next = Next::RetryAt(now);
            then = format!("falling back to account `{other}` for the next attempt, now");
        }
        deliver::log_outcome(&line, Err((message_id.as_deref(), &err)), &then);
        self.observe_failure(
            &job,
            &key,
            &err,
            message_id.as_deref(),
            &decision,
            (account, was_held),
            line.elapsed,
        );
        for k in unblocked {
            self.start(k);
        }
        self.record_decision(key, class.name(), err.reply(), decision.next, now)
            .await;
    }

    /// Records what comes next for a failed occurrence: a retry, or the end.
    async fn record_decision(
        &mut self,
        key: crate::ledger::Key,
        class_name: &'static str,
        reply: String,
        next: Next,
        now: chrono::DateTime<chrono::Utc>,
    ) {
        let result = match next {
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

    /// What a failed attempt tells of the account: those it held back come due, now or
    /// with its next try (returned: to start now).
    fn account_after(
        &mut self,
        account: usize,
        key: &crate::ledger::Key,
        err: &deliver::DeliverError,
        decision: &retry::Decision,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Vec<crate::ledger::Key> {
        let login = &mut self.accounts[account].login;
        if !matches!(err, deliver::DeliverError::Send(_)) {
            // Not sent at all (a template, a missing file): nothing learnt of the account.
            return login.abandoned(key);
        }
        for (at, k) in login.failed(key, decision, now) {
            self.retries.push(Reverse((at, k)));
        }
        Vec::new()
    }

    /// The attempt's place in its account's sending-limit window: a delivery at `sent`,
    /// or nothing.
    fn ended(
        &mut self,
        account: usize,
        key: &crate::ledger::Key,
        sent: Option<chrono::DateTime<chrono::Utc>>,
    ) {
        if let Some(state) = self.accounts.get_mut(account) {
            state.window.ended(key, sent);
        }
    }

    /// Another node holds the occurrence: nothing was sent here.
    fn elsewhere(&mut self, account: usize, key: &crate::ledger::Key) {
        self.late.remove(key);
        self.running.remove(key);
        tracing::debug!(job = %key.job, occurrence = %utc(key.scheduled_at), "another node holds this occurrence");
        self.abandoned(account, key);
    }

    /// An attempt through `account` ended without a verdict on it: whatever waited for
    /// it starts.
    fn abandoned(&mut self, account: usize, key: &crate::ledger::Key) {
        let waiting = match self.accounts.get_mut(account) {
            Some(s) => s.login.abandoned(key),
            None => Vec::new(),
        };
        for k in waiting {
            self.start(k);
        }
    }

    /// After a connect, TLS, timeout or quota failure through a job's own account, the
    /// next attempt goes through the account's `fallback` (same message, same
    /// Message-ID); after a failure through the fallback, back to the job's own, with
    /// the backoff. Returns the fallback's name when it is used.
    fn fall_back(
        &mut self,
        job: &crate::config::Job,
        account: usize,
        key: &crate::ledger::Key,
        class: crate::failure::ErrorClass,
        decision: &retry::Decision,
    ) -> Option<String> {
        use crate::failure::ErrorClass as C;
        let fallback = self.current.config.accounts[account].fallback;
        let worth = matches!(class, C::Connect | C::Tls | C::Timeout | C::Quota);
        match (fallback, decision.next) {
            (Some(f), Next::RetryAt(_)) if worth && account == job.account => {
                self.via.insert(key.clone(), f);
                Some(self.current.config.accounts[f].name.to_string())
            }
            _ => {
                self.via.remove(key);
                None
            }
        }
    }

    /// The job skips this occurrence (`on_missing_attachment = "skip"`): recorded as
    /// skipped; the attempt said nothing about the account.
    async fn skipped_by_job(
        &mut self,
        job: &crate::config::Job,
        account: usize,
        key: crate::ledger::Key,
        why: String,
    ) {
        let now = self.clock.now();
        tracing::info!(job = %job.name, occurrence = %utc(key.scheduled_at), "skipped: {why}");
        self.ops.outcome(crate::ops::Recent {
            job: job.name.to_string(),
            occurrence: key.scheduled_at,
            state: "skipped",
            reply: why.clone(),
        });
        self.abandoned(account, &key);
        let result = self
            .recorder
            .call(move |l| l.give_up(&key, crate::ledger::State::Skipped, "attachment", &why, now))
            .await;
        if let Err(e) = result {
            error!(error = %e, "recording the skip in the ledger failed");
        }
    }

    /// Metrics and the job's ping for a delivery.
    fn observe_success(
        &self,
        (job, account): (&crate::config::Job, usize),
        key: &crate::ledger::Key,
        reply: &str,
        now: chrono::DateTime<chrono::Utc>,
        elapsed: std::time::Duration,
    ) {
        self.ops.metrics.sent(&job.name, now, elapsed);
        if let Some(a) = self.current.config.accounts.get(account) {
            self.ops.metrics.held(&a.name, false);
        }
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
        (account, was_held): (usize, bool),
        elapsed: std::time::Duration,
    ) {
        let class = err.class();
        self.ops.metrics.failed(&job.name, class.name(), elapsed);
        let held = self.accounts[account].login.hold().is_some();
        let name = &self.current.config.accounts[account].name;
        self.ops.metrics.held(name, held);
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
