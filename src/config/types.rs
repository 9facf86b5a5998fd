//! The validated configuration: what the rest of cronmail reads. Every value here was
//! checked when jobs.toml was loaded, so no other module fails on bad user input.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use lettre::message::Mailbox;

use super::provider::{OAuthProvider, Provider};
use crate::render::{Templates, Vars};
use crate::schedule::Schedule;
use crate::secret::SecretSource;

/// Largest jobs.toml accepted. 100,000 jobs take about 12 MB; a file much larger than
/// that is a mistake (a log, a binary), and is refused before it is read.
pub const MAX_FILE_BYTES: u64 = 32 * 1024 * 1024;

/// Most recipients (to + cc + bcc) one job may have. Providers cap a message at 100
/// (Gmail) to 500 (Microsoft 365); past that a reminder is a mailing list.
pub const MAX_RECIPIENTS: usize = 500;

/// Longest job name; it appears in Message-IDs and journal fields.
pub(crate) const MAX_JOB_NAME: usize = 64;

pub(crate) const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

/// How late a missed occurrence may still be sent (`max_late`). A reminder for a 9:00
/// meeting is still useful at 14:00, and rarely the next day.
pub const DEFAULT_MAX_LATE: Duration = Duration::from_secs(6 * 3600);

/// What to do with occurrences missed while cronmail was not running (or the machine
/// was suspended).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CatchUp {
    /// Send none of them.
    Skip,
    /// Send only the newest one (if within `max_late`). The default: one reminder, not a flood.
    Latest,
    /// Send every one within `max_late`, oldest first.
    All,
}

impl CatchUp {
    pub fn name(self) -> &'static str {
        match self {
            CatchUp::Skip => "skip",
            CatchUp::Latest => "latest",
            CatchUp::All => "all",
        }
    }
}

/// `[delivery]`: retries, connection cap, shutdown grace.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Delivery {
    /// First retry delay; later ones double, with jitter, up to `retry_max`.
    pub retry_min: Duration,
    pub retry_max: Duration,
    /// After this long past its scheduled instant, an undelivered occurrence expires.
    pub retry_for: Duration,
    /// Most concurrent SMTP connections.
    pub max_connections: usize,
    /// How long in-flight sends may finish after SIGTERM.
    pub shutdown_grace: Duration,
}

impl Default for Delivery {
    fn default() -> Self {
        Delivery {
            retry_min: Duration::from_secs(30),
            retry_max: Duration::from_secs(30 * 60),
            retry_for: Duration::from_secs(24 * 3600),
            max_connections: 4,
            shutdown_grace: Duration::from_secs(20),
        }
    }
}

/// Where the ledger lives when jobs.toml does not say: systemd's `StateDirectory=`.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/cronmail";

/// How a connection to the SMTP server is secured.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TlsMode {
    /// Plain connect, then STARTTLS, which is required: no AUTH or mail without it.
    Starttls,
    /// TLS from the first byte (SMTPS, usually port 465).
    Implicit,
    /// No TLS at all; accepted only for a loopback host.
    None,
}

impl TlsMode {
    pub fn name(self) -> &'static str {
        match self {
            TlsMode::Starttls => "starttls",
            TlsMode::Implicit => "implicit",
            TlsMode::None => "none",
        }
    }

    pub(crate) fn default_port(self) -> u16 {
        match self {
            TlsMode::Starttls => 587,
            TlsMode::Implicit => 465,
            TlsMode::None => 25,
        }
    }
}

/// How cronmail logs in (`auth`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuthMethod {
    /// PLAIN, or LOGIN where the server offers only that (Microsoft).
    Auto,
    Plain,
    Login,
    /// An `OAuth2` access token, from `token_command` or `[smtp.oauth2]`.
    Xoauth2,
}

/// The validated `[smtp]` section.
#[derive(Clone, Debug)]
pub struct SmtpConfig {
    pub provider: Option<Provider>,
    pub host: String,
    pub port: u16,
    pub tls: TlsMode,
    pub username: Option<String>,
    pub password: Option<SecretSource>,
    pub auth: AuthMethod,
    /// With `auth = "xoauth2"`: the command that prints a current access token, run for
    /// each connection (tokens expire within the hour; the helper refreshes them).
    pub token_command: Option<SecretSource>,
    /// With `auth = "xoauth2"`: the built-in refresh flow (`[smtp.oauth2]`).
    pub oauth2: Option<OAuth2Config>,
    /// Extra trusted roots, DER-encoded, read from `ca_file` at load time.
    pub extra_roots: Vec<Vec<u8>>,
    pub ca_file: Option<PathBuf>,
    /// `tls_fingerprint`: the SHA-256 of the server's certificate (DER). With a pin,
    /// that certificate is trusted exactly, self-signed or not, and no other is.
    pub tls_fingerprint: Option<[u8; 32]>,
    pub timeout: Duration,
    /// Keep a connection a few seconds after a message, for the next one (bursts).
    pub keep_connections: bool,
}

impl SmtpConfig {
    /// The provider named in the config, or guessed from the host, for hints.
    pub fn effective_provider(&self) -> Option<Provider> {
        self.provider.or_else(|| Provider::from_host(&self.host))
    }
}

/// The validated `[smtp.oauth2]` section.
#[derive(Clone, Debug)]
pub struct OAuth2Config {
    pub provider: Option<OAuthProvider>,
    pub client_id: String,
    pub client_secret: Option<SecretSource>,
    /// Holds the refresh token; rewritten (mode 0600) when the provider rotates it.
    pub refresh_token_file: PathBuf,
    pub token_url: String,
    /// The device-code endpoint, for `authorize` (Microsoft's by default).
    pub device_code_url: Option<String>,
    /// The browser sign-in page, for `authorize` with a loopback redirect (Google's by default).
    pub authorize_url: Option<String>,
    pub scope: String,
}

/// Where messages go.
#[derive(Clone, Debug)]
pub enum TransportConfig {
    Smtp(Box<SmtpConfig>),
    /// Each message is written as `<dir>/<message-id>.eml`.
    Outbox {
        dir: PathBuf,
    },
}

/// One sending account: `[smtp]` or `[outbox]` (named `default`), or `[account.NAME]`.
#[derive(Clone, Debug)]
pub struct AccountConfig {
    pub name: Arc<str>,
    pub transport: TransportConfig,
    /// The account the next attempt goes through after a connect, TLS, timeout or
    /// quota failure (an index in `Config::accounts`).
    pub fallback: Option<usize>,
    /// At most this many messages in any 60 s.
    pub max_per_minute: Option<u32>,
    /// At most this many recipients in any 24 h, counted from the ledger.
    pub max_per_day: Option<u32>,
}

impl AccountConfig {
    pub fn is_smtp(&self) -> bool {
        matches!(self.transport, TransportConfig::Smtp(_))
    }

    pub fn limited(&self) -> bool {
        self.max_per_minute.is_some() || self.max_per_day.is_some()
    }
}

/// One validated `[[job]]`.
#[derive(Clone, Debug)]
pub struct Job {
    /// Shared with every `ledger::Key` of its occurrences. An advance warning of a
    /// `[[job]]` with `before` is a job of its own, `NAME.7d` (a dot: no job name has
    /// one, and it is safe in a Message-ID and a file name); the `0d` one is `NAME`.
    pub name: Arc<str>,
    /// The `[[job]]`'s own name: its templates, `{{ job }}`, and `--job`.
    pub base: Arc<str>,
    pub schedule: Schedule,
    /// The account that sends it (an index in `Config::accounts`).
    pub account: usize,
    /// Shared by the jobs that take the file's `from` (and, below, by the jobs with the
    /// same list): one copy for 10,000 jobs rather than one each.
    pub from: Arc<Mailbox>,
    pub to: Arc<[Mailbox]>,
    pub cc: Arc<[Mailbox]>,
    pub bcc: Arc<[Mailbox]>,
    pub reply_to: Option<Box<Mailbox>>,
    pub vars: Vars,
    pub enabled: bool,
    pub catch_up: CatchUp,
    pub max_late: Duration,
    /// The first occurrence after the instant the config was loaded (`Host::now`).
    pub first: Option<DateTime<Utc>>,
    /// A dead-man's switch in the healthchecks.io protocol (`ping_url`).
    pub ping_url: Option<crate::secret::SecretUrl>,
    /// `attach`: files read at each send (the paths are templates, `Part::Attach`).
    pub attachments: Option<Arc<Attachments>>,
    /// `[job.invite]`: a calendar invitation in each message.
    pub invite: Option<Arc<Invite>>,
    /// `recipients_file`: one message per row, read at each occurrence.
    pub recipients_file: Option<Arc<PathBuf>>,
}

impl Job {
    /// How many recipients one message of it has (a row's message: the row and cc/bcc).
    pub fn recipients(&self) -> u32 {
        let to = if self.recipients_file.is_some() {
            1
        } else {
            self.to.len()
        };
        u32::try_from(to + self.cc.len() + self.bcc.len()).unwrap_or(u32::MAX)
    }
}

/// Largest total of a job's attached files by default: Gmail's message limit.
pub const DEFAULT_ATTACH_MAX: u64 = 25 * 1024 * 1024;

/// What a job does when an attachment is not there at send time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OnMissing {
    /// The occurrence fails and is retried until `retry_for` ("send it when it appears").
    Fail,
    /// Sent without the file, and said in the log.
    Send,
    /// The occurrence is skipped.
    Skip,
}

/// A job's attachments: where relative paths start, the folder they must stay in,
/// the cap on their total size, and what a missing one does.
#[derive(Clone, Debug)]
pub struct Attachments {
    /// jobs.toml's folder: relative paths start here.
    pub base: PathBuf,
    /// `attach_dir` (default `base`): a path that resolves outside it is refused.
    pub dir: PathBuf,
    pub max_bytes: u64,
    pub on_missing: OnMissing,
}

/// `method` of an invitation (RFC 5546).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    /// An event to add to a calendar; no replies expected.
    Publish,
    /// An invitation: the recipients are attendees, the sender the organizer.
    Request,
}

impl Method {
    pub fn name(self) -> &'static str {
        match self {
            Method::Publish => "PUBLISH",
            Method::Request => "REQUEST",
        }
    }
}

/// `[job.invite]`, validated (its texts are templates, `Part::Invite*`).
#[derive(Clone, Debug)]
pub struct Invite {
    pub duration: Duration,
    pub method: Method,
    /// A display alarm this long before the event.
    pub alarm: Option<Duration>,
}

impl Job {
    pub fn tz(&self) -> Tz {
        self.schedule.tz()
    }

    /// What the send at `at` is about, for its templates.
    pub fn occasion(&self, at: DateTime<Utc>) -> crate::render::Occasion {
        crate::render::Occasion {
            at,
            event_at: self.schedule.event_of(at),
            days_before: self.schedule.lead_days(),
        }
    }
}

/// A whole validated jobs.toml.
#[derive(Clone, Debug)]
pub struct Config {
    pub path: PathBuf,
    /// The sending accounts; a job's `account` is an index here. Never empty.
    pub accounts: Vec<AccountConfig>,
    /// The ledger's folder.
    pub state_dir: PathBuf,
    pub delivery: Delivery,
    /// Where occurrences are recorded: `SQLite` in `state_dir`, or a shared `PostgreSQL`.
    pub ledger: LedgerConfig,
    /// In file order; shared with the timer (a job is about 1 KB; 10,000 of them once,
    /// not twice), and each job with the deliveries of its occurrences.
    pub jobs: Arc<[Arc<Job>]>,
    /// The indexes of `jobs`, in the order of their names, for a binary search (4 bytes
    /// a job, where a hash map took 40).
    pub(crate) by_name: Arc<[u32]>,
    pub templates: Arc<Templates>,
    /// The calendars fetched from a `url`: the daemon reloads daily to refresh them.
    pub fetched_calendars: Vec<String>,
    /// `[http]`, `[monitor]` and `[notify]`.
    pub ops: OpsConfig,
    /// The top-level `timezone` (or the machine's): the zone of `agenda`'s days.
    pub timezone: Tz,
    /// What `check` warns about (valid, but likely not what was meant).
    pub warnings: Vec<super::Diagnostic>,
}

/// What operators see and hear: the HTTP listener, the heartbeat, failure alerts.
#[derive(Clone, Debug, Default)]
pub struct OpsConfig {
    /// `[http] listen`: `/metrics`, `/healthz` and the status page.
    pub listen: Option<std::net::SocketAddr>,
    /// `[monitor] heartbeat_url`, pinged every `heartbeat_every`.
    pub heartbeat: Option<(crate::secret::SecretUrl, Duration)>,
    /// `[notify] webhook`, and whether its body is JSON (or plain text).
    pub webhook: Option<(crate::secret::SecretUrl, bool)>,
    /// `[notify] command`: run without a shell, the fields in `CRONMAIL_*`.
    pub command: Option<Vec<String>>,
}

/// The `[ledger]` section.
#[derive(Clone, Debug)]
pub enum LedgerConfig {
    /// `<state_dir>/ledger.sqlite3`, for one node.
    Sqlite,
    /// One database shared by several nodes running the same jobs.toml.
    Postgres(Box<PgConfig>),
}

/// A validated `[ledger] url = "postgres://..."`.
#[derive(Clone, Debug)]
pub struct PgConfig {
    /// The URL as written (it holds no password: that comes from `password`).
    pub url: String,
    pub password: Option<SecretSource>,
    /// This node's name in the ledger: `node`, else `$CRONMAIL_NODE`, else the host name.
    pub node: String,
    /// How long a claim in `sending` stays this node's before another may take it over.
    pub lease: Duration,
    /// How often to look for work another node left (a retry due, an expired lease).
    pub poll: Duration,
    /// TLS is required (every host not on loopback); a server without it is refused.
    pub tls_required: bool,
    pub extra_roots: Vec<Vec<u8>>,
}

/// Default for `[ledger] lease`: a send is bounded by `timeout` (60 s by default).
#[cfg(feature = "postgres")]
pub(crate) const DEFAULT_LEASE: Duration = Duration::from_secs(120);
#[cfg(feature = "postgres")]
pub(crate) const DEFAULT_POLL: Duration = Duration::from_secs(5);

impl Config {
    /// The job of this name, if the configuration has one; for a row of a
    /// `recipients_file` (`NAME/ROWKEY`), the job of its rows.
    pub fn job(&self, name: &str) -> Option<&Arc<Job>> {
        self.find(name).or_else(|| self.find(job_of(name)))
    }

    /// The job `cronmail trigger NAME` sends: the job of that name, else the first of
    /// a `[[job]]`'s advance warnings (`NAME.7d`, ...).
    pub fn triggered(&self, name: &str) -> Option<&Arc<Job>> {
        self.find(name)
            .or_else(|| self.jobs.iter().find(|j| &*j.base == name))
    }

    fn find(&self, name: &str) -> Option<&Arc<Job>> {
        let i = self
            .by_name
            .binary_search_by(|&i| (*self.jobs[i as usize].name).cmp(name))
            .ok()?;
        Some(&self.jobs[self.by_name[i] as usize])
    }

    /// The account that sends `job`'s messages.
    pub fn account_of(&self, job: &Job) -> &AccountConfig {
        &self.accounts[job.account]
    }

    /// The account of this name.
    pub fn account_named(&self, name: &str) -> Option<usize> {
        self.accounts.iter().position(|a| &*a.name == name)
    }

    /// The names of every job, in file order, for messages that list them.
    pub fn job_names(&self) -> Vec<&str> {
        self.jobs.iter().map(|j| &*j.name).collect()
    }
}

impl fmt::Display for TlsMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The job a ledger key's job belongs to: `NAME` for a row `NAME/ROWKEY` of a
/// `recipients_file` (no job name has a `/`), else the name itself.
pub fn job_of(name: &str) -> &str {
    name.split_once('/').map_or(name, |(job, _)| job)
}

/// A `List-Unsubscribe` target: `mailto:` or `https://`, one line.
pub fn unsubscribe_url(s: &str) -> bool {
    (s.starts_with("mailto:") || s.starts_with("https://"))
        && !s
            .chars()
            .any(|c| c.is_control() || c.is_whitespace() || c == '<' || c == '>')
}

/// Names the first character that may not appear in a header value, if any.
pub fn header_control(s: &str) -> Option<&'static str> {
    s.chars().find_map(|c| match c {
        '\r' | '\n' => Some("a line break"),
        '\0' => Some("a NUL byte"),
        c if c.is_control() && c != '\t' => Some("a control character"),
        _ => None,
    })
}
