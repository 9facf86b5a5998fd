//! The raw layer: jobs.toml as written. serde structs with `deny_unknown_fields`, every
//! value `Spanned` so that validation can point at its line and column. Nothing here is
//! checked beyond its TOML type; `validate` turns these into `types`.
//!
//! The same structs are the editor schema (`cronmail schema`): each field's doc comment
//! is its description there, and `schemars(with)` names the type under the span.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::Deserialize;
use toml::Spanned;

mod job;
mod mail;

pub(in crate::config) use job::RawJob;
pub(in crate::config) use mail::{RawOAuth2, RawOutbox, RawSmtp};

/// A duration, written like `30s`, `5m` or `1h 30m`.
pub(super) const DURATION: &str = r"^\s*[0-9]+\s*[a-zµ]+(\s*[0-9]+\s*[a-zµ]+)*\s*$";

/// A local time, written like `2026-01-05T09:00` (seconds and an offset optional).
pub(super) const LOCAL_TIME: &str = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}[T ][0-9]{2}:[0-9]{2}";

/// The top level of jobs.toml (its `[[job]]` array is added by `schema`).
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Top")]
pub(in crate::config) struct RawTop {
    /// Keys taken out because they were wrong (reported already).
    #[serde(skip)]
    pub stripped: Vec<String>,
    /// The default sender of every job: `name@example.com` or `Name <name@example.com>`.
    #[schemars(with = "Option<String>")]
    pub from: Option<Spanned<String>>,
    /// The default time zone (IANA, e.g. `Europe/Berlin`); if absent: $TZ, then
    /// /etc/localtime, then UTC.
    #[schemars(with = "Option<String>")]
    pub timezone: Option<Spanned<String>>,
    #[schemars(with = "Option<RawSmtp>")]
    pub smtp: Option<Spanned<RawSmtp>>,
    #[schemars(with = "Option<RawOutbox>")]
    pub outbox: Option<Spanned<RawOutbox>>,
    /// More sending accounts, by name: `[account.billing]` takes the keys of `[smtp]`
    /// (or `outbox = "folder"`); a job picks one with `account`.
    #[serde(default)]
    #[schemars(with = "BTreeMap<String, RawSmtp>")]
    pub account: BTreeMap<String, Spanned<RawSmtp>>,
    pub defaults: Option<RawDefaults>,
    /// The folder of the ledger; default `$STATE_DIRECTORY` (systemd), else
    /// /var/lib/cronmail.
    #[schemars(with = "Option<String>")]
    pub state_dir: Option<Spanned<String>>,
    pub delivery: Option<RawDelivery>,
    #[schemars(with = "Option<RawLedger>")]
    pub ledger: Option<Spanned<RawLedger>>,
    #[schemars(with = "Option<RawHttp>")]
    pub http: Option<Spanned<RawHttp>>,
    #[schemars(with = "Option<RawMonitor>")]
    pub monitor: Option<Spanned<RawMonitor>>,
    #[schemars(with = "Option<RawNotify>")]
    pub notify: Option<Spanned<RawNotify>>,
    /// Calendars of days to omit, by name: `[calendars.holidays]`.
    #[serde(default)]
    #[schemars(with = "BTreeMap<String, RawCalendar>")]
    pub calendars: BTreeMap<String, Spanned<RawCalendar>>,
}

/// A shared `PostgreSQL` ledger, for several nodes; absent: `SQLite` in `state_dir`.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Ledger")]
// A build without the `postgres` feature reads the section only to refuse it.
#[cfg_attr(not(feature = "postgres"), allow(dead_code))]
pub(in crate::config) struct RawLedger {
    /// `postgres://user@host/database`, without a password.
    #[schemars(with = "Option<String>", regex(pattern = r"^postgres(ql)?://"))]
    pub url: Option<Spanned<String>>,
    /// The database password from this environment variable.
    #[schemars(with = "Option<String>")]
    pub password_env: Option<Spanned<String>>,
    /// The database password from this file (its first line).
    #[schemars(with = "Option<String>")]
    pub password_file: Option<Spanned<String>>,
    /// The database password printed by this command (program and arguments).
    #[schemars(with = "Option<Vec<String>>")]
    pub password_command: Option<Spanned<Vec<String>>>,
    /// The database password from this systemd credential (`LoadCredential=`).
    #[schemars(with = "Option<String>")]
    pub password_credential: Option<Spanned<String>>,
    /// This node's name; default `$CRONMAIL_NODE`, then the host name.
    #[schemars(with = "Option<String>")]
    pub node: Option<Spanned<String>>,
    /// How long a claim is held; at least `[smtp] timeout` + 5s (default 2m).
    #[schemars(with = "Option<String>", regex(pattern = DURATION))]
    pub lease: Option<Spanned<String>>,
    /// How often to look for work other nodes left (default 5s).
    #[schemars(with = "Option<String>", regex(pattern = DURATION))]
    pub poll: Option<Spanned<String>>,
    /// Extra trusted roots (PEM) for the database's TLS.
    #[schemars(with = "Option<String>")]
    pub ca_file: Option<Spanned<String>>,
}

/// Retries, connections and shutdown.
#[derive(Deserialize, Default, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Delivery")]
pub(in crate::config) struct RawDelivery {
    /// The first retry delay; it doubles, with jitter, up to `retry_max` (default 30s).
    #[schemars(with = "Option<String>", regex(pattern = DURATION))]
    pub retry_min: Option<Spanned<String>>,
    /// The longest retry delay (default 30m).
    #[schemars(with = "Option<String>", regex(pattern = DURATION))]
    pub retry_max: Option<Spanned<String>>,
    /// How long an occurrence is retried before it is `expired` (default 24h).
    #[schemars(with = "Option<String>", regex(pattern = DURATION))]
    pub retry_for: Option<Spanned<String>>,
    /// SMTP connections open at once per account, in use or kept (1-100, default 4).
    #[schemars(with = "Option<i64>", range(min = 1, max = 100))]
    pub max_connections: Option<Spanned<i64>>,
    /// On SIGTERM, how long sends in progress may finish (default 20s).
    #[schemars(with = "Option<String>", regex(pattern = DURATION))]
    pub shutdown_grace: Option<Spanned<String>>,
}

/// Defaults each job may override.
#[derive(Deserialize, Default, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Defaults")]
pub(in crate::config) struct RawDefaults {
    /// What to do with occurrences missed while cronmail was not running: `skip`,
    /// `latest` (default) or `all`.
    #[schemars(with = "Option<CatchUpName>")]
    pub catch_up: Option<Spanned<String>>,
    /// A missed occurrence later than this is skipped (default 6h).
    #[schemars(with = "Option<String>", regex(pattern = DURATION))]
    pub max_late: Option<Spanned<String>>,
    /// Days no job fires on, unless it has its own `omit`.
    #[schemars(with = "Option<Vec<String>>")]
    pub omit: Option<Spanned<Vec<Spanned<String>>>>,
    /// What an occurrence on an omitted day does, unless a job says.
    #[schemars(with = "Option<OnOmitName>")]
    pub on_omit: Option<Spanned<String>>,
    /// A dead-man's switch (healthchecks.io protocol): `GET URL/start` before each
    /// attempt, `GET URL` after a delivery, `POST URL/fail` on a failure or a hold.
    /// It may hold a token: never logged whole.
    #[schemars(with = "Option<String>", regex(pattern = r"^https?://"))]
    pub ping_url: Option<Spanned<String>>,
    /// `ping_url` from this environment variable.
    #[schemars(with = "Option<String>")]
    pub ping_url_env: Option<Spanned<String>>,
    /// `ping_url` from this file (its first line).
    #[schemars(with = "Option<String>")]
    pub ping_url_file: Option<Spanned<String>>,
    /// `ping_url` from this systemd credential (`LoadCredential=`).
    #[schemars(with = "Option<String>")]
    pub ping_url_credential: Option<Spanned<String>>,
}

/// The HTTP listener: `/metrics`, `/healthz` and a status page. Off unless set.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Http")]
pub(in crate::config) struct RawHttp {
    /// Where to listen, e.g. `127.0.0.1:9464`. There is no authentication: keep it on
    /// loopback or behind a proxy that has some.
    #[schemars(with = "String")]
    pub listen: Option<Spanned<String>>,
}

/// A heartbeat, so that a dead daemon is noticed by the pings that stop.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Monitor")]
#[allow(clippy::struct_field_names)] // they are jobs.toml's keys
pub(in crate::config) struct RawMonitor {
    /// Pinged (GET) every `heartbeat_every` while the daemon runs; never logged whole.
    #[schemars(with = "Option<String>", regex(pattern = r"^https?://"))]
    pub heartbeat_url: Option<Spanned<String>>,
    /// `heartbeat_url` from this environment variable.
    #[schemars(with = "Option<String>")]
    pub heartbeat_url_env: Option<Spanned<String>>,
    /// `heartbeat_url` from this file (its first line).
    #[schemars(with = "Option<String>")]
    pub heartbeat_url_file: Option<Spanned<String>>,
    /// `heartbeat_url` from this systemd credential (`LoadCredential=`).
    #[schemars(with = "Option<String>")]
    pub heartbeat_url_credential: Option<Spanned<String>>,
    /// How often (default 5m).
    #[schemars(with = "Option<String>", regex(pattern = DURATION))]
    pub heartbeat_every: Option<Spanned<String>>,
}

/// Failure alerts: each final failure and each hold.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Notify")]
pub(in crate::config) struct RawNotify {
    /// Gets a JSON object by POST (job, occurrence, class, reply, hint, `message_id`);
    /// never logged whole.
    #[schemars(with = "Option<String>", regex(pattern = r"^https?://"))]
    pub webhook: Option<Spanned<String>>,
    /// `webhook` from this environment variable.
    #[schemars(with = "Option<String>")]
    pub webhook_env: Option<Spanned<String>>,
    /// `webhook` from this file (its first line).
    #[schemars(with = "Option<String>")]
    pub webhook_file: Option<Spanned<String>>,
    /// `webhook` from this systemd credential (`LoadCredential=`).
    #[schemars(with = "Option<String>")]
    pub webhook_credential: Option<Spanned<String>>,
    /// `json` (default) or `text` (a plain body, as ntfy takes).
    #[schemars(with = "Option<FormatName>")]
    pub format: Option<Spanned<String>>,
    /// A command run without a shell, with the same fields in `CRONMAIL_*`, at most 30 s.
    #[schemars(with = "Option<Vec<String>>", length(min = 1))]
    pub command: Option<Spanned<Vec<String>>>,
}

#[derive(JsonSchema)]
#[serde(rename_all = "lowercase")]
#[allow(dead_code)]
#[schemars(rename = "Format")]
enum FormatName {
    Json,
    Text,
}

/// A string or a list of strings.
#[derive(Deserialize, JsonSchema)]
#[serde(untagged)]
pub(in crate::config) enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    pub fn items(&self) -> Vec<&str> {
        match self {
            OneOrMany::One(s) => vec![s.as_str()],
            OneOrMany::Many(v) => v.iter().map(String::as_str).collect(),
        }
    }
}

/// A calendar of days to omit: an iCalendar file of all-day events, read from `file`
/// or fetched from `url`.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Calendar")]
pub(in crate::config) struct RawCalendar {
    /// An .ics file, relative to jobs.toml's folder.
    #[schemars(with = "Option<String>")]
    pub file: Option<Spanned<String>>,
    /// An .ics over HTTPS, cached in `state_dir` and refreshed daily.
    #[schemars(with = "Option<String>", regex(pattern = r"^https://"))]
    pub url: Option<Spanned<String>>,
    /// Extra trusted roots (PEM) for `url`, besides the system's.
    #[schemars(with = "Option<String>")]
    pub ca_file: Option<Spanned<String>>,
}

#[derive(JsonSchema)]
#[serde(rename_all = "lowercase")]
#[allow(dead_code)]
#[schemars(rename = "OnOmit")]
pub(super) enum OnOmitName {
    Skip,
    Before,
    After,
}

#[derive(JsonSchema)]
#[serde(rename_all = "lowercase")]
#[allow(dead_code)]
#[schemars(rename = "CatchUp")]
pub(super) enum CatchUpName {
    Skip,
    Latest,
    All,
}
