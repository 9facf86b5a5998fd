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

/// A duration, written like `30s`, `5m` or `1h 30m`.
const DURATION: &str = r"^\s*[0-9]+\s*[a-zµ]+(\s*[0-9]+\s*[a-zµ]+)*\s*$";

/// A local time, written like `2026-01-05T09:00` (seconds and an offset optional).
const LOCAL_TIME: &str = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}[T ][0-9]{2}:[0-9]{2}";

/// The top level of jobs.toml (its `[[job]]` array is added by `schema`).
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Top")]
pub(super) struct RawTop {
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
pub(super) struct RawLedger {
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
pub(super) struct RawDelivery {
    /// The first retry delay; it doubles, with jitter, up to `retry_max` (default 30s).
    #[schemars(with = "Option<String>", regex(pattern = DURATION))]
    pub retry_min: Option<Spanned<String>>,
    /// The longest retry delay (default 30m).
    #[schemars(with = "Option<String>", regex(pattern = DURATION))]
    pub retry_max: Option<Spanned<String>>,
    /// How long an occurrence is retried before it is `expired` (default 24h).
    #[schemars(with = "Option<String>", regex(pattern = DURATION))]
    pub retry_for: Option<Spanned<String>>,
    /// SMTP connections open at once, in use or kept (1-100, default 4).
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
pub(super) struct RawDefaults {
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
pub(super) struct RawHttp {
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
pub(super) struct RawMonitor {
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
pub(super) struct RawNotify {
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
pub(super) enum OneOrMany {
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
pub(super) struct RawCalendar {
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
enum OnOmitName {
    Skip,
    Before,
    After,
}

#[derive(JsonSchema)]
#[serde(rename_all = "lowercase")]
#[allow(dead_code)]
#[schemars(rename = "CatchUp")]
enum CatchUpName {
    Skip,
    Latest,
    All,
}

#[derive(JsonSchema)]
#[serde(rename_all = "lowercase")]
#[allow(dead_code)]
#[schemars(rename = "Tls")]
enum TlsName {
    Starttls,
    Implicit,
    None,
}

#[derive(JsonSchema)]
#[serde(rename_all = "lowercase")]
#[allow(dead_code)]
#[schemars(rename = "Auth")]
enum AuthName {
    Plain,
    Login,
    Xoauth2,
}

#[derive(JsonSchema)]
#[serde(rename_all = "lowercase")]
#[allow(dead_code)]
#[schemars(rename = "Provider")]
enum ProviderName {
    Gmail,
    Outlook,
    Office365,
    Yahoo,
    Aol,
    Naver,
    Fastmail,
    Icloud,
    Zoho,
    Gmx,
}

#[derive(JsonSchema)]
#[serde(rename_all = "lowercase")]
#[allow(dead_code)]
#[schemars(rename = "OAuthProvider")]
enum OAuthProviderName {
    Microsoft,
    Google,
}

/// Send over SMTP (exactly one of `[smtp]` or `[outbox]`).
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Smtp")]
pub(super) struct RawSmtp {
    /// A preset for host, port and TLS (explicit keys override it).
    #[schemars(with = "Option<ProviderName>")]
    pub provider: Option<Spanned<String>>,
    /// The submission server's host name.
    #[schemars(with = "Option<String>")]
    pub host: Option<Spanned<String>>,
    /// Default: 587 for starttls, 465 for implicit, 25 for none.
    #[schemars(with = "Option<i64>", range(min = 1, max = 65535))]
    pub port: Option<Spanned<i64>>,
    /// `starttls` (default; port 587), `implicit` (TLS from the first byte; port 465), or
    /// `none` (loopback hosts only).
    #[schemars(with = "Option<TlsName>")]
    pub tls: Option<Spanned<String>>,
    /// The login name, usually the whole address.
    #[schemars(with = "Option<String>")]
    pub username: Option<Spanned<String>>,
    /// Not allowed: jobs.toml holds no secret. Use `password_env`, `password_file`,
    /// `password_command` or `password_credential`.
    #[schemars(with = "Option<Never>")]
    pub password: Option<Spanned<serde::de::IgnoredAny>>,
    /// The password from this environment variable.
    #[schemars(with = "Option<String>")]
    pub password_env: Option<Spanned<String>>,
    /// The password from this file (its first line; keep it mode 0600).
    #[schemars(with = "Option<String>")]
    pub password_file: Option<Spanned<String>>,
    /// The password printed by this command (program and arguments).
    #[schemars(with = "Option<Vec<String>>")]
    pub password_command: Option<Spanned<Vec<String>>>,
    /// The password from this systemd credential (`LoadCredential=`).
    #[schemars(with = "Option<String>")]
    pub password_credential: Option<Spanned<String>>,
    /// `plain`, `login` or `xoauth2`; default PLAIN, or LOGIN where only that is offered.
    #[schemars(with = "Option<AuthName>")]
    pub auth: Option<Spanned<String>>,
    /// With xoauth2, instead of a password: a command that prints an access token.
    #[schemars(with = "Option<Vec<String>>")]
    pub token_command: Option<Spanned<Vec<String>>>,
    #[schemars(with = "Option<RawOAuth2>")]
    pub oauth2: Option<Spanned<RawOAuth2>>,
    /// Extra trusted roots (PEM), added to the system's.
    #[schemars(with = "Option<String>")]
    pub ca_file: Option<Spanned<String>>,
    /// A pin of the server's certificate: `sha256:AB:CD:...`.
    #[schemars(with = "Option<String>", regex(pattern = r"^sha256:"))]
    pub tls_fingerprint: Option<Spanned<String>>,
    /// A bound on one whole SMTP transaction (default 60s).
    #[schemars(with = "Option<String>", regex(pattern = DURATION))]
    pub timeout: Option<Spanned<String>>,
    /// Keep a connection 5 s after a message, for the next (default true).
    pub keep_connections: Option<bool>,
}

/// A value that is never valid (the schema of a forbidden key).
#[derive(JsonSchema)]
#[schemars(transform = never)]
#[allow(dead_code)]
struct Never;

fn never(schema: &mut schemars::Schema) {
    *schema = schemars::json_schema!({
        "description": "A value that is never valid: this key is not allowed.",
        "not": {}
    });
}

/// XOAUTH2 with tokens cronmail refreshes itself (`cronmail oauth2 authorize` signs in).
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "OAuth2")]
pub(super) struct RawOAuth2 {
    /// `microsoft` or `google`; default from `[smtp] provider`.
    #[schemars(with = "Option<OAuthProviderName>")]
    pub provider: Option<Spanned<String>>,
    /// Microsoft: the directory (tenant) ID or domain (default `common`).
    #[schemars(with = "Option<String>")]
    pub tenant: Option<Spanned<String>>,
    /// The application (client) ID of your app registration.
    #[schemars(with = "Option<String>")]
    pub client_id: Option<Spanned<String>>,
    /// Not allowed: jobs.toml holds no secret. Use `client_secret_env`, `_file`, `_command` or
    /// `_credential`.
    #[schemars(with = "Option<Never>")]
    pub client_secret: Option<Spanned<serde::de::IgnoredAny>>,
    /// The client secret from this environment variable.
    #[schemars(with = "Option<String>")]
    pub client_secret_env: Option<Spanned<String>>,
    /// The client secret from this file.
    #[schemars(with = "Option<String>")]
    pub client_secret_file: Option<Spanned<String>>,
    /// The client secret printed by this command.
    #[schemars(with = "Option<Vec<String>>")]
    pub client_secret_command: Option<Spanned<Vec<String>>>,
    /// The client secret from this systemd credential.
    #[schemars(with = "Option<String>")]
    pub client_secret_credential: Option<Spanned<String>>,
    /// Where the refresh token is kept (default `<state_dir>/oauth2-refresh-token`).
    #[schemars(with = "Option<String>")]
    pub refresh_token_file: Option<Spanned<String>>,
    /// The token endpoint (default from the provider).
    #[schemars(with = "Option<String>")]
    pub token_url: Option<Spanned<String>>,
    /// For `authorize` with a device code (Microsoft's default).
    #[schemars(with = "Option<String>")]
    pub device_code_url: Option<Spanned<String>>,
    /// For `authorize` with a browser redirect (Google's default).
    #[schemars(with = "Option<String>")]
    pub authorize_url: Option<Spanned<String>>,
    /// The scopes asked for (default from the provider).
    #[schemars(with = "Option<String>")]
    pub scope: Option<Spanned<String>>,
}

/// Write each message to a folder instead of sending it (no network, no account).
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Outbox")]
pub(super) struct RawOutbox {
    /// The folder; each message is written as `<message-id>.eml` (default `outbox`).
    #[schemars(with = "Option<String>")]
    pub dir: Option<Spanned<String>>,
}

/// One reminder: a schedule, recipients, and the message.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Job")]
pub(super) struct RawJob {
    /// Where the job's table is in the file (set after deserializing).
    #[serde(skip)]
    pub span: std::ops::Range<usize>,
    /// Keys taken out because they were wrong (reported already).
    #[serde(skip)]
    pub stripped: Vec<String>,
    /// Unique; letters, digits, `-` and `_` (at most 64).
    #[schemars(
        with = "String",
        regex(pattern = r"^[A-Za-z0-9_-]{1,64}$"),
        length(min = 1, max = 64)
    )]
    pub name: Option<Spanned<String>>,
    /// A cron expression (5 fields, or 6 with seconds first), or `@daily` and the like,
    /// in the job's time zone. A job has one of `schedule`, `rrule` or `at`.
    #[schemars(with = "Option<String>")]
    pub schedule: Option<Spanned<String>>,
    /// An RFC 5545 recurrence rule, e.g. `FREQ=WEEKLY;INTERVAL=2;BYDAY=MO`, from `start`.
    #[schemars(with = "Option<String>")]
    pub rrule: Option<Spanned<String>>,
    /// The rule's first occurrence (its DTSTART): a local time in the job's zone, in
    /// quotes, e.g. `"2026-01-05T09:00"`.
    #[schemars(with = "Option<String>", regex(pattern = LOCAL_TIME))]
    pub start: Option<Spanned<String>>,
    /// The rule's last possible occurrence, a local time like `start` (inclusive).
    #[schemars(with = "Option<String>", regex(pattern = LOCAL_TIME))]
    pub until: Option<Spanned<String>>,
    /// How many occurrences the rule has, at most.
    #[schemars(with = "Option<u32>", range(min = 1))]
    pub count: Option<Spanned<i64>>,
    /// One-shot reminders: a local time in quotes (`"2027-01-04T09:00"`), or a list.
    #[schemars(with = "Option<OneOrMany>")]
    pub at: Option<Spanned<OneOrMany>>,
    /// Allows an `rrule` that fires more than once a minute.
    pub allow_frequent: Option<bool>,
    /// Days not to fire on: `weekends`, a date (`2026-12-31`), or a calendar's name;
    /// overrides `[defaults] omit`.
    #[schemars(with = "Option<Vec<String>>")]
    pub omit: Option<Spanned<Vec<Spanned<String>>>>,
    /// What an occurrence on an omitted day does: `skip` (default), or move to the
    /// nearest earlier (`before`) or later (`after`) day that is not omitted.
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
    /// Advance warnings: one send per offset before each occurrence, e.g.
    /// `["7d", "1d", "0d"]` (`0d` is the occurrence itself).
    #[schemars(with = "Option<Vec<String>>")]
    pub before: Option<Spanned<Vec<Spanned<String>>>>,
    /// The job's time zone (IANA), overriding the top-level one.
    #[schemars(with = "Option<String>")]
    pub timezone: Option<Spanned<String>>,
    /// The recipients: a list, e.g. `["a@example.com", "Kim <kim@example.com>"]`.
    #[schemars(with = "Vec<String>", length(min = 1))]
    pub to: Option<Spanned<Vec<Spanned<String>>>>,
    /// Copy recipients.
    #[serde(default)]
    #[schemars(with = "Vec<String>")]
    pub cc: Vec<Spanned<String>>,
    /// Blind copies: in the envelope only, never in a header.
    #[serde(default)]
    #[schemars(with = "Vec<String>")]
    pub bcc: Vec<Spanned<String>>,
    /// The Reply-To address.
    #[schemars(with = "Option<String>")]
    pub reply_to: Option<Spanned<String>>,
    /// This job's sender, overriding the top-level `from`.
    #[schemars(with = "Option<String>")]
    pub from: Option<Spanned<String>>,
    /// The subject template (minijinja: `{{ date }}`, `{{ vars.owner }}`).
    #[schemars(with = "String")]
    pub subject: Option<Spanned<String>>,
    /// The body template (or `body_file`).
    #[schemars(with = "Option<String>")]
    pub body: Option<Spanned<String>>,
    /// The body template from this file, relative to jobs.toml's folder.
    #[schemars(with = "Option<String>")]
    pub body_file: Option<Spanned<String>>,
    /// An optional text/html alternative template.
    #[schemars(with = "Option<String>")]
    pub html: Option<Spanned<String>>,
    /// The text/html alternative from this file.
    #[schemars(with = "Option<String>")]
    pub html_file: Option<Spanned<String>>,
    /// Default true.
    pub enabled: Option<bool>,
    /// Overrides `[defaults] catch_up`.
    #[schemars(with = "Option<CatchUpName>")]
    pub catch_up: Option<Spanned<String>>,
    /// Overrides `[defaults] max_late`.
    #[schemars(with = "Option<String>", regex(pattern = DURATION))]
    pub max_late: Option<Spanned<String>>,
    /// Free-form strings, available in templates as `vars.NAME`.
    #[serde(default)]
    #[schemars(with = "BTreeMap<String, String>")]
    pub vars: BTreeMap<String, Spanned<String>>,
}
