//! What `cronmail skip`, `pause`, `resume` and `trigger` write to the ledger for the
//! running daemon (every node, with `PostgreSQL`) to act on within a second.

use chrono::{DateTime, Utc};

/// One order, as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Control {
    /// The job as named on the command line (a `[[job]]` name, or one of its advance
    /// warnings, `NAME.7d`).
    pub job: String,
    pub action: Action,
    pub created_at: DateTime<Utc>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// This occurrence is not sent (recorded `skipped`, "skipped by hand").
    Skip(DateTime<Utc>),
    /// Occurrences until then (or until `Resume`) are skipped and recorded.
    Pause(Option<DateTime<Utc>>),
    Resume,
    /// One occurrence now, at this instant: recorded and retried like any other.
    Trigger(DateTime<Utc>),
}

impl Action {
    /// The stored form: the action's name and its instant.
    pub fn parts(self) -> (&'static str, Option<DateTime<Utc>>) {
        match self {
            Action::Skip(t) => ("skip", Some(t)),
            Action::Pause(t) => ("pause", t),
            Action::Resume => ("resume", None),
            Action::Trigger(t) => ("trigger", Some(t)),
        }
    }

    pub fn from_parts(name: &str, at: Option<DateTime<Utc>>) -> Option<Self> {
        Some(match (name, at) {
            ("skip", Some(t)) => Action::Skip(t),
            ("pause", t) => Action::Pause(t),
            ("resume", _) => Action::Resume,
            ("trigger", Some(t)) => Action::Trigger(t),
            _ => return None,
        })
    }
}

/// Whether each job is paused, from the orders in the order given: `job -> until`
/// (`None`: until resumed), for jobs paused at `now`.
pub fn paused(
    controls: &[(i64, Control)],
    now: DateTime<Utc>,
) -> std::collections::HashMap<String, Option<DateTime<Utc>>> {
    let mut out = std::collections::HashMap::new();
    for (_, c) in controls {
        match c.action {
            Action::Pause(until) => {
                out.insert(c.job.clone(), until);
            }
            Action::Resume => {
                out.remove(&c.job);
            }
            _ => {}
        }
    }
    out.retain(|_, until| until.is_none_or(|u| u > now));
    out
}
