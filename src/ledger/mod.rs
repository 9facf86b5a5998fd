//! What was sent, durably. The only module that writes state.
//!
//! Every occurrence `(job, scheduled instant)` is claimed with a unique key **before**
//! any send, and moves through `pending -> sending -> sent | failed | expired`; missed
//! occurrences that the catch-up policy drops are recorded as `skipped`. A sent
//! occurrence is never sent again.
//!
//! The one window that cannot be closed: the server accepted the message (its reply to
//! DATA) and the process died before the ledger recorded `sent`. At the next start the
//! row is still `sending`, and the occurrence is sent again with the same Message-ID,
//! so the recipient's mail client can tell it is a duplicate.
//!
//! The interface is the `Ledger` trait, kept small so that both backends pass the same
//! test suite: `sqlite` (embedded, one node) and `pg` (a shared `PostgreSQL`, several
//! nodes). `open` is the one way to either, for the daemon (which locks it) and for the
//! commands that only read it.

mod control;
mod diagnose;
#[cfg(feature = "postgres")]
mod pg;
mod sqlite;

use std::collections::HashMap;
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use secrecy::SecretString;

use crate::config::{Config, LedgerConfig};

pub use control::{Action, Control, paused};
#[cfg(feature = "postgres")]
pub use pg::{PG_SCHEMA_VERSION, PgLedger};
pub use sqlite::{SCHEMA_VERSION, SqliteLedger};

/// The unique key of one occurrence.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Key {
    /// The job's name, shared with the job itself.
    pub job: Arc<str>,
    pub scheduled_at: DateTime<Utc>,
}

pub use crate::config::job_of;

impl Key {
    /// A row of a `recipients_file`: the job `NAME/ROWKEY`, which the ledger keys as a job
    /// of its own, so each row is claimed, retried and recorded on its own.
    pub fn row(job: &str, row: &str, scheduled_at: DateTime<Utc>) -> Self {
        Key::new(format!("{job}/{row}"), scheduled_at)
    }

    /// The row key, for a row's occurrence.
    pub fn row_key(&self) -> Option<&str> {
        self.job.split_once('/').map(|(_, r)| r)
    }

    pub fn new(job: impl Into<Arc<str>>, scheduled_at: DateTime<Utc>) -> Self {
        Key {
            job: job.into(),
            scheduled_at,
        }
    }
}

/// A delivery, as the ledger records it: which occurrence, the server's reply, when,
/// and through which account to how many recipients (what sending limits count).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Receipt {
    pub key: Key,
    pub reply: String,
    pub at: DateTime<Utc>,
    pub account: Arc<str>,
    pub recipients: u32,
}

impl Receipt {
    /// A delivery through the account `default` to one recipient.
    pub fn new(key: Key, reply: impl Into<String>, at: DateTime<Utc>) -> Self {
        Receipt {
            key,
            reply: reply.into(),
            at,
            account: "default".into(),
            recipients: 1,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    Pending,
    Sending,
    Sent,
    Failed,
    Expired,
    Skipped,
}

impl State {
    pub fn name(self) -> &'static str {
        match self {
            State::Pending => "pending",
            State::Sending => "sending",
            State::Sent => "sent",
            State::Failed => "failed",
            State::Expired => "expired",
            State::Skipped => "skipped",
        }
    }

    pub(crate) fn parse(s: &str) -> State {
        match s {
            "sending" => State::Sending,
            "sent" => State::Sent,
            "failed" => State::Failed,
            "expired" => State::Expired,
            "skipped" => State::Skipped,
            _ => State::Pending,
        }
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One occurrence as the ledger knows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    pub key: Key,
    pub state: State,
    pub message_id: String,
    pub attempts: u32,
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub last_error_class: Option<String>,
    pub last_reply: Option<String>,
    /// The server's reply to the accepted message, or why it was skipped.
    pub final_reply: Option<String>,
    pub updated_at: DateTime<Utc>,
    /// The node that last worked on it (a shared ledger only).
    pub node: Option<String>,
}

/// The rows of a `recipients_file` (`NAME/ROWKEY`) counted as their job: the latest
/// occurrence handled of each job, where catch-up starts.
pub(crate) fn fold_handled(
    by_key: impl IntoIterator<Item = (String, DateTime<Utc>)>,
) -> HashMap<String, DateTime<Utc>> {
    let mut out: HashMap<String, DateTime<Utc>> = HashMap::new();
    for (job, at) in by_key {
        let e = out.entry(job_of(&job).to_owned()).or_insert(at);
        *e = (*e).max(at);
    }
    out
}

/// The rows of a `recipients_file` summed into their job, for `status`.
pub(crate) fn fold_summary(by_key: HashMap<String, JobSummary>) -> HashMap<String, JobSummary> {
    let mut out: HashMap<String, JobSummary> = HashMap::new();
    for (job, s) in by_key {
        let e = out.entry(job_of(&job).to_owned()).or_default();
        if s.last_sent.as_ref().map(|l| l.0) > e.last_sent.as_ref().map(|l| l.0) {
            e.last_sent = s.last_sent;
        }
        if s.last_failure.as_ref().map(|l| l.0) > e.last_failure.as_ref().map(|l| l.0) {
            e.last_failure = s.last_failure;
        }
        e.pending += s.pending;
    }
    out
}

/// Per job, for `cronmail status`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct JobSummary {
    pub last_sent: Option<(DateTime<Utc>, String)>,
    pub last_failure: Option<(DateTime<Utc>, String, String)>,
    pub pending: u32,
}

#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    #[error("the state directory `{path}`: {error}")]
    Dir {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error(
        "another `cronmail run` is using the state directory `{0}` (its lock file is held); stop it first, or give this one another `state_dir`"
    )]
    Locked(PathBuf),
    #[error("the ledger `{path}`: {}", diagnose::describe(.path, .error))]
    Sql {
        path: PathBuf,
        error: rusqlite::Error,
    },
    #[error(
        "`state_dir` `{0}` is a file, not a folder; point `state_dir` at a folder (it is created if missing)"
    )]
    NotAFolder(PathBuf),
    #[error(
        "the ledger `{path}` has schema version {found}, newer than this cronmail knows ({known}); upgrade cronmail"
    )]
    TooNew {
        path: PathBuf,
        found: i64,
        known: i64,
    },
    /// The shared ledger cannot be reached (at start-up: exit 69).
    #[error("the ledger database {url}: {error}")]
    Unreachable { url: String, error: String },
    /// A query on the shared ledger failed.
    #[error("the ledger database {url}: {error}")]
    Db { url: String, error: String },
    #[error(
        "another cronmail with node name `{node}` is connected to the ledger database {url}; give each node its own `node` (or $CRONMAIL_NODE)"
    )]
    NodeTaken { url: String, node: String },
    /// `status` or `history` before any `cronmail run` with this `state_dir`.
    #[error("no ledger at `{0}`: `cronmail run` has not run with this `state_dir` yet")]
    Missing(PathBuf),
    /// The ledger database's password could not be read.
    #[error("the ledger database password cannot be read: {0}")]
    Password(#[from] crate::secret::SecretError),
    /// The ledger file was deleted or replaced while the daemon ran, and could not be
    /// recreated (nothing is sent until it can record).
    #[error("the ledger `{path}` was deleted or replaced, and recreating it failed ({error})")]
    Gone { path: PathBuf, error: String },
    /// `status` or `history` by a user who may not read the ledger.
    #[error(
        "cannot read the ledger `{0}`: permission denied; run as root or as the service's user (for example `sudo cronmail status`)"
    )]
    NoAccess(PathBuf),
    /// The ledger writer stopped (the daemon is shutting down).
    #[error("the ledger writer stopped")]
    Stopped,
}

impl LedgerError {
    /// Whether opening failed only because this user may not write the ledger (or
    /// beside it): then a read-only open may still serve `status`.
    fn is_no_write(&self) -> bool {
        use rusqlite::ErrorCode::{CannotOpen, PermissionDenied, ReadOnly};
        match self {
            LedgerError::Sql { error, .. } => matches!(
                error.sqlite_error_code(),
                Some(ReadOnly | CannotOpen | PermissionDenied)
            ),
            LedgerError::Dir { error, .. } => error.kind() == std::io::ErrorKind::PermissionDenied,
            _ => false,
        }
    }
}

/// The durable record of occurrences. Every method is one transaction.
pub trait Ledger: Send + Sync {
    /// Claims occurrences before any send. Returns, for each, whether it was new: an
    /// occurrence already in the ledger (in any state) must not be started again here.
    fn claim(&self, items: &[(Key, String)], now: DateTime<Utc>) -> Result<Vec<bool>, LedgerError>;
    /// Records an occurrence dropped by the catch-up policy (if not already known).
    fn skip(
        &self,
        key: &Key,
        message_id: &str,
        reason: &str,
        now: DateTime<Utc>,
    ) -> Result<(), LedgerError>;
    /// `sending`, one more attempt, by this node. Returns the attempt number, or `None`
    /// when another node holds the occurrence (its lease has not expired) or it is done.
    fn start_attempt(&self, key: &Key, now: DateTime<Utc>) -> Result<Option<u32>, LedgerError>;
    fn sent(&self, receipt: &Receipt) -> Result<(), LedgerError>;
    /// The deliveries through `account` at or after `since`: when, and to how many
    /// recipients. What `max_per_minute` and `max_per_day` count, on every node.
    fn sent_since(
        &self,
        account: &str,
        since: DateTime<Utc>,
    ) -> Result<Vec<(DateTime<Utc>, u32)>, LedgerError>;
    /// Back to `pending`, to be tried at `next_at`.
    fn retry_later(
        &self,
        key: &Key,
        class: &str,
        reply: &str,
        next_at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<(), LedgerError>;
    /// A final failure: `failed` or `expired`.
    fn give_up(
        &self,
        key: &Key,
        state: State,
        class: &str,
        reply: &str,
        now: DateTime<Utc>,
    ) -> Result<(), LedgerError>;
    /// `pending` and `sending` occurrences, oldest first: the queue to resume at start-up.
    fn unfinished(&self) -> Result<Vec<Record>, LedgerError>;
    /// The latest occurrence of each job in any state: where catch-up starts.
    fn last_handled(&self) -> Result<HashMap<String, DateTime<Utc>>, LedgerError>;
    fn history(&self, job: Option<&str>, limit: usize) -> Result<Vec<Record>, LedgerError>;
    fn summary(&self) -> Result<HashMap<String, JobSummary>, LedgerError>;
    fn get(&self, key: &Key) -> Result<Option<Record>, LedgerError>;
    /// Stores an order of `cronmail skip`, `pause`, `resume` or `trigger`; its id.
    fn add_control(&self, control: &Control) -> Result<i64, LedgerError>;
    /// The orders stored after `id`, oldest first.
    fn controls_after(&self, id: i64) -> Result<Vec<(i64, Control)>, LedgerError>;
    /// The delivery path's writes, group-committed: each of `sent` as `sent` records it,
    /// then each of `starts` as `start_attempt` does (its result in order). One
    /// transaction where the backend allows, so a burst costs few commits.
    fn record(
        &self,
        starts: &[Key],
        sent: &[Receipt],
        now: DateTime<Utc>,
    ) -> Result<Vec<Option<u32>>, LedgerError> {
        for receipt in sent {
            self.sent(receipt)?;
        }
        starts.iter().map(|k| self.start_attempt(k, now)).collect()
    }
    /// Whether other nodes share this ledger, so that work they leave must be looked for.
    fn shared(&self) -> bool {
        false
    }
    /// Occurrences whose lease lapsed: a retry due whose node did not come back to it, or
    /// a send whose node stopped. Any node (this one too) may take them over. Oldest first.
    fn takeable(&self, _now: DateTime<Utc>) -> Result<Vec<Key>, LedgerError> {
        Ok(Vec::new())
    }
}

/// How a command opens the ledger.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// The daemon: created if missing, and locked (`SQLite`: the state directory's lock
    /// file; `PostgreSQL`: this node's name), so that no second daemon shares it.
    Exclusive,
    /// `status` and `history`: no lock, since a daemon may be running; never created.
    Read,
}

/// The configured ledger: `SQLite` in `state_dir`, or the shared `PostgreSQL` database.
/// Blocking (it connects, migrates and fsyncs): async callers run it on the blocking
/// pool. `password` is the database's, already read from its source.
pub fn open(
    config: &Config,
    password: Option<&SecretString>,
    mode: Mode,
) -> Result<Box<dyn Ledger>, LedgerError> {
    match &config.ledger {
        LedgerConfig::Sqlite => {
            let dir = &config.state_dir;
            Ok(Box::new(match mode {
                Mode::Exclusive => SqliteLedger::open_exclusive(dir)?,
                Mode::Read => {
                    let path = dir.join("ledger.sqlite3");
                    match std::fs::File::open(&path) {
                        Ok(_) => {}
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                            return Err(LedgerError::Missing(path));
                        }
                        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
                            return Err(LedgerError::NoAccess(path));
                        }
                        Err(error) => return Err(LedgerError::Dir { path, error }),
                    }
                    // Read-write when allowed (it may migrate an old schema); else, as
                    // a user who may only read, read-only.
                    match SqliteLedger::open_at(&path) {
                        Ok(l) => l,
                        Err(e) if e.is_no_write() => SqliteLedger::open_read_only(&path)
                            .map_err(|_| LedgerError::NoAccess(path))?,
                        Err(e) => return Err(e),
                    }
                }
            }))
        }
        #[cfg(feature = "postgres")]
        LedgerConfig::Postgres(pg) => Ok(Box::new(PgLedger::connect(
            pg,
            password,
            mode == Mode::Exclusive,
        )?)),
        // Validation refuses [ledger] in such a build; this is for a Config built otherwise.
        #[cfg(not(feature = "postgres"))]
        LedgerConfig::Postgres(pg) => {
            let _ = password;
            Err(LedgerError::Db {
                url: pg.url.clone(),
                error: NO_POSTGRES.to_owned(),
            })
        }
    }
}

/// What a build without the `postgres` feature says of a [ledger] section.
#[cfg(not(feature = "postgres"))]
pub const NO_POSTGRES: &str = "this cronmail was built without the PostgreSQL ledger (cargo feature `postgres`); leave [ledger] out for the embedded SQLite ledger, or install a build with it (the Debian package has it)";

/// The ledger database's password source, if the configured ledger has one.
pub fn password_source(config: &Config) -> Option<&crate::secret::SecretSource> {
    match &config.ledger {
        LedgerConfig::Postgres(pg) => pg.password.as_ref(),
        LedgerConfig::Sqlite => None,
    }
}

/// Which ledger a config uses, to tell a reload that changed it.
pub fn identity(config: &Config) -> String {
    match &config.ledger {
        LedgerConfig::Sqlite => format!("sqlite:{}", config.state_dir.display()),
        LedgerConfig::Postgres(pg) => format!("postgres:{}:{}", pg.url, pg.node),
    }
}
