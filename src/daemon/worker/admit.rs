//! Starting an attempt: which account it goes through (the job's own, or its fallback
//! after a failure or while the own is held), whether the account admits it (a hold, a
//! probe out), and whether its sending limits do. Also the reload of the accounts.

use std::cmp::Reverse;
use std::collections::HashSet;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use tracing::{Instrument as _, error, info, info_span, warn};

use super::super::account::{Account, Admit};
use super::super::attempt::Attempt;
use super::super::limit::Window;
use super::Worker;
use crate::config::{Config, Job};
use crate::deliver::{Loaded, local, utc};
use crate::ledger::{Key, State};

/// What the worker keeps of one account.
#[derive(Default)]
pub(super) struct AccountState {
    pub login: Account,
    pub window: Window,
}

impl AccountState {
    /// One state per account of `config`; the windows of accounts that keep their name
    /// are carried over from `old` (name, state).
    pub fn for_config(config: &Config, mut old: Vec<(Arc<str>, AccountState)>) -> Vec<Self> {
        config
            .accounts
            .iter()
            .map(|a| {
                let window = old
                    .iter()
                    .position(|(n, _)| *n == a.name)
                    .map(|i| old.swap_remove(i).1.window)
                    .unwrap_or_default();
                AccountState {
                    login: Account::default(),
                    window,
                }
            })
            .collect()
    }
}

impl Worker {
    /// Starts an attempt, unless the account is held, a probe is out, or a sending
    /// limit says to wait.
    pub(super) fn start(&mut self, key: Key) {
        let now = self.clock.now();
        let Some(job) = self.job(&key) else {
            return;
        };
        if self.running.contains(&key) {
            return;
        }
        let row = match key.row_key() {
            None => None,
            Some(row_key) => match self.row_of(&job, row_key) {
                Ok(row) => Some(row),
                Err(why) => {
                    self.give_ups.push((key, State::Skipped, "removed", why));
                    return;
                }
            },
        };
        let account = self.route(&key, &job, now);
        if !self.within_limits(&key, &job, account, now) {
            return;
        }
        match self.accounts[account].login.admit(&key, &job, now) {
            Admit::Start => {}
            Admit::Later(at) => {
                self.retries.push(Reverse((at, key)));
                return;
            }
            Admit::Wait => return,
        }
        if !self.running.insert(key.clone()) {
            return;
        }
        self.accounts[account]
            .window
            .reserve(&key, now, job.recipients());
        if let Some(url) = &job.ping_url {
            self.ops.alerts.ping(url, crate::ops::Ping::Start, None);
        }
        let span = info_span!("deliver", job = %key.job, occurrence = %utc(key.scheduled_at));
        let attempt = Attempt {
            loaded: Arc::clone(&self.current),
            job,
            account,
            row,
            key,
            recorder: self.recorder.clone(),
            clock: Arc::clone(&self.clock),
        };
        self.inflight.spawn(attempt.run().instrument(span));
    }

    /// The account the next attempt of `key` goes through: its job's, unless a failure
    /// sent it to the fallback, or the job's account is held and its fallback is not.
    fn route(&mut self, key: &Key, job: &Job, now: DateTime<Utc>) -> usize {
        if let Some(&via) = self.via.get(key) {
            return via;
        }
        let own = job.account;
        let config = &self.current.config;
        let held = |s: &AccountState| s.login.hold().is_some_and(|h| now < h.until);
        match config.accounts[own].fallback {
            Some(f) if held(&self.accounts[own]) && !held(&self.accounts[f]) => {
                info!(
                    job = %job.name,
                    occurrence = %utc(key.scheduled_at),
                    "falling back to account `{}`: account `{}` is held",
                    config.accounts[f].name,
                    config.accounts[own].name
                );
                self.via.insert(key.clone(), f);
                f
            }
            _ => own,
        }
    }

    /// Whether `account`'s limits let `key` go now; if not, it is queued for the
    /// instant they do (logged once), or expires when that is past `retry_for`.
    fn within_limits(&mut self, key: &Key, job: &Job, account: usize, now: DateTime<Utc>) -> bool {
        let config = Arc::clone(&self.current.config);
        let a = &config.accounts[account];
        if !a.limited() {
            return true;
        }
        let state = &mut self.accounts[account];
        let Some(wait) = state
            .window
            .wait(now, job.recipients(), a.max_per_minute, a.max_per_day)
        else {
            return true;
        };
        let retry_for = chrono::Duration::from_std(config.delivery.retry_for).unwrap_or_default();
        let expires = key.scheduled_at + retry_for;
        if now >= expires {
            state.window.logged.remove(key);
            error!(job = %key.job, occurrence = %utc(key.scheduled_at), "not sent: expired: the account's sending limit did not allow it within retry_for");
            self.give_ups.push((
                key.clone(),
                State::Expired,
                "quota",
                "the account's sending limit (max_per_minute or max_per_day) did not allow it within retry_for".to_owned(),
            ));
            return false;
        }
        if state.window.logged.insert(key.clone()) {
            let at = if wait.until > expires {
                "it expires first, at retry_for".to_owned()
            } else {
                format!("sending at {}", utc(wait.until))
            };
            warn!(
                job = %job.name,
                occurrence = %utc(key.scheduled_at),
                local = %local(job, key.scheduled_at),
                account = %a.name,
                until = %utc(wait.until.min(expires)),
                "waiting: account `{}` has sent {}; {at}",
                a.name,
                wait.why
            );
        }
        self.retries
            .push(Reverse((wait.until.min(expires), key.clone())));
        false
    }

    /// Records the occurrences `start` gave up on: expired by a sending limit, or a row
    /// no longer in its file.
    pub(super) async fn record_give_ups(&mut self) {
        let now = self.clock.now();
        let give_ups = std::mem::take(&mut self.give_ups);
        let res = self
            .recorder
            .call(move |l| {
                for (key, state, class, why) in &give_ups {
                    l.give_up(key, *state, class, why, now)?;
                }
                Ok(())
            })
            .await;
        if let Err(e) = res {
            error!(error = %e, "recording in the ledger failed");
        }
    }

    /// The row `row_key` of `job`'s `recipients_file`, as the file is now.
    fn row_of(&mut self, job: &Job, row_key: &str) -> Result<Arc<crate::recipients::Row>, String> {
        let Some(path) = &job.recipients_file else {
            return Err("the job no longer has a `recipients_file`".to_owned());
        };
        let rows = self
            .rows
            .get(path)
            .map_err(|e| format!("`recipients_file`: {e}"))?;
        rows.get(row_key).cloned().ok_or_else(|| {
            warn!(job = %job.name, row = row_key, "not sent: the row is no longer in `{}`; recorded as skipped", path.display());
            format!("the row `{row_key}` is no longer in `{}`", path.display())
        })
    }

    /// Reads each limited account's deliveries of the last 24 h from the ledger.
    pub(super) async fn seed_windows(&mut self) {
        let since = self.clock.now() - chrono::Duration::hours(24);
        let config = Arc::clone(&self.current.config);
        for (i, a) in config.accounts.iter().enumerate() {
            if !a.limited() {
                continue;
            }
            let name = Arc::clone(&a.name);
            match self
                .recorder
                .read(move |l| l.sent_since(&name, since))
                .await
            {
                Ok(rows) => self.accounts[i].window.seed(rows),
                Err(e) => {
                    warn!(account = %a.name, error = %e, "reading the account's recent deliveries for its sending limits failed; counting only this node's");
                }
            }
        }
    }

    /// A new configuration and credentials: every hold ends, the logins are proven
    /// again, fallbacks start over.
    pub(super) fn reloaded(&mut self, loaded: Arc<Loaded>, now: DateTime<Utc>) {
        let old_config = Arc::clone(&self.current.config);
        self.current = loaded;
        let mut released_any = false;
        let mut held = HashSet::new();
        let mut waiting = Vec::new();
        let old: Vec<(Arc<str>, AccountState)> = std::mem::take(&mut self.accounts)
            .into_iter()
            .zip(&old_config.accounts)
            .map(|(mut s, a)| {
                let (released, h, w) = s.login.reloaded();
                released_any |= released;
                held.extend(h);
                waiting.extend(w);
                (Arc::clone(&a.name), s)
            })
            .collect();
        self.accounts = AccountState::for_config(&self.current.config, old);
        self.via.clear();
        self.reseed = true;
        if released_any {
            info!("configuration reloaded: resuming the held sends, one attempt first");
        }
        self.release_held(now, &held);
        for key in waiting {
            self.retries.push(Reverse((now, key)));
        }
    }
}

impl Worker {
    /// The claims of one occurrence of a job with a `recipients_file`: one per row of
    /// the file as it is now, each with its own key and Message-ID.
    pub(super) fn fan_out(
        &mut self,
        job: &Job,
        path: &std::path::Path,
        occurrence: DateTime<Utc>,
    ) -> Result<Vec<(Key, String)>, String> {
        let rows = self
            .rows
            .get(path)
            .map_err(|e| format!("`recipients_file` cannot be read, so no row was sent: {e}"))?;
        for p in &rows.problems {
            warn!(job = %job.name, occurrence = %utc(occurrence), line = p.line, "a row of `{}` is not sent: {}", path.display(), p.message);
        }
        Ok(rows
            .rows
            .iter()
            .map(|row| {
                (
                    Key::row(&job.name, &row.key, occurrence),
                    crate::message::message_id_for(job, Some(&row.key), occurrence),
                )
            })
            .collect())
    }

    /// An occurrence whose `recipients_file` could not be read: recorded as failed
    /// (class `local`), with why, so that `status` and `history` show it.
    pub(super) async fn record_unreadable(
        &mut self,
        occurrences: Vec<(Key, String, String)>,
        now: DateTime<Utc>,
    ) {
        for (key, _, why) in &occurrences {
            error!(job = %key.job, occurrence = %utc(key.scheduled_at), "not sent: {why}");
        }
        let res = self
            .recorder
            .call(move |l| {
                for (key, id, why) in &occurrences {
                    l.claim(&[(key.clone(), id.clone())], now)?;
                    l.give_up(key, State::Failed, "local", why, now)?;
                }
                Ok(())
            })
            .await;
        if let Err(e) = res {
            error!(error = %e, "recording in the ledger failed");
        }
    }
}
