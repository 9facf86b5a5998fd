//! What the worker knows of the sending account: whether its login is proven, and
//! whether it is held (after an authentication failure or a limit reached).
//!
//! Until a send through the account has worked (at start-up, after a reload with new
//! credentials, after an authentication or quota failure), one attempt at a time goes
//! out: the *probe*. The others wait for its result and follow it on success, or wait
//! for the next hold's end on failure. So a wrong password costs one failed login per
//! backoff step, never a burst of them (Gmail and Yahoo lock accounts for less).

use std::collections::HashSet;

use chrono::{DateTime, Utc};
use tracing::{error, info};

use crate::config::Job;
use crate::deliver::{local, utc};
use crate::failure::ErrorClass;
use crate::ledger::Key;
use crate::retry::{Decision, Hold, Next};

/// What to do with an attempt that is due.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Admit {
    /// Start it now.
    Start,
    /// The account is held: try again at this instant.
    Later(DateTime<Utc>),
    /// The probe is out: it waits for its result.
    Wait,
}

#[derive(Default)]
pub(super) struct Account {
    hold: Option<Hold>,
    /// A send through the account has worked since the last auth or quota failure.
    proven: bool,
    /// The one attempt in flight while the account is not proven.
    probe: Option<Key>,
    /// Attempts waiting for the probe's result.
    waiting: Vec<Key>,
    /// Occurrences already logged as held, so each is logged once.
    held_logged: HashSet<Key>,
}

impl Account {
    pub fn admit(&mut self, key: &Key, job: &Job, now: DateTime<Utc>) -> Admit {
        if let Some(hold) = self.hold
            && now < hold.until
        {
            if self.held_logged.insert(key.clone()) {
                let why = match hold.class {
                    ErrorClass::Quota => "the account's sending limit is reached",
                    _ => "an authentication failure",
                };
                error!(
                    job = %job.name,
                    occurrence = %utc(key.scheduled_at),
                    local = %local(job, key.scheduled_at),
                    class = %hold.class,
                    until = %utc(hold.until),
                    "held: sends are paused after {why}; at `until` one attempt tests the account, and the others follow it (a reload with new credentials also releases them)"
                );
            }
            return Admit::Later(hold.until);
        }
        if self.proven {
            return Admit::Start;
        }
        match &self.probe {
            Some(probe) if probe != key => {
                self.waiting.push(key.clone());
                Admit::Wait
            }
            Some(_) => Admit::Start,
            None => {
                if self.hold.is_some() {
                    info!(job = %job.name, occurrence = %utc(key.scheduled_at), "the hold ends: one attempt tests the account before the others follow");
                }
                self.probe = Some(key.clone());
                Admit::Start
            }
        }
    }

    /// A send through the account worked: it is proven, and whatever waited follows.
    pub fn succeeded(&mut self, key: &Key) -> Vec<Key> {
        self.forget_probe(key);
        self.held_logged.remove(key);
        self.hold = None;
        self.proven = true;
        std::mem::take(&mut self.waiting)
    }

    /// An attempt failed, and `decision` is what comes next for it. Returns the
    /// attempts that waited for it, with when to try them again.
    pub fn failed(
        &mut self,
        key: &Key,
        decision: &Decision,
        now: DateTime<Utc>,
    ) -> Vec<(DateTime<Utc>, Key)> {
        let was_probe = self.forget_probe(key);
        if let Some(hold) = decision.hold {
            self.hold = Some(hold);
            self.proven = false;
            self.held_logged.insert(key.clone());
        }
        if !was_probe && self.probe.is_some() {
            return Vec::new();
        }
        // The probe failed: those behind it come due with its own next try, where the
        // first of them is the next probe.
        let at = match (self.hold, decision.next) {
            (Some(h), _) if h.until > now => h.until,
            (_, Next::RetryAt(at)) => at,
            _ => now,
        };
        let waiting = std::mem::take(&mut self.waiting);
        if self.hold.is_some() {
            // Held too, so that a reload releases them with the others.
            self.held_logged.extend(waiting.iter().cloned());
        }
        waiting.into_iter().map(|k| (at, k)).collect()
    }

    /// The account in force now, for `decide`.
    pub fn hold(&self) -> Option<Hold> {
        self.hold
    }

    /// An attempt that ended without a verdict on the account (another node holds the
    /// occurrence; its job was removed). Returns what waited for it, to start again.
    pub fn abandoned(&mut self, key: &Key) -> Vec<Key> {
        if self.forget_probe(key) {
            std::mem::take(&mut self.waiting)
        } else {
            Vec::new()
        }
    }

    /// New configuration and credentials: the hold ends, and the login must be proven
    /// again. Returns whether a hold was released, the occurrences it held (to try now),
    /// and those that waited for a probe.
    pub fn reloaded(&mut self) -> (bool, HashSet<Key>, Vec<Key>) {
        self.proven = false;
        let released = self.hold.take().is_some();
        let held = std::mem::take(&mut self.held_logged);
        (released, held, std::mem::take(&mut self.waiting))
    }

    fn forget_probe(&mut self, key: &Key) -> bool {
        if self.probe.as_ref() == Some(key) {
            self.probe = None;
            true
        } else {
            false
        }
    }
}
