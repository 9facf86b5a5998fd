//! jobs.toml -> a validated `Config`. The only module that sees TOML.
//!
//! Two layers, as ripgrep does with its flags: raw serde structs that mirror the file
//! (`deny_unknown_fields`, spans kept for line:column), then domain types that cannot
//! hold an invalid value (`Schedule`, `Mailbox`, `Tz`, compiled templates). After
//! `Config` is built, no other module can fail on bad user input.
//!
//! Every problem of a file is reported at once: the TOML is parsed with recovery, each
//! `[[job]]` is deserialized on its own, and validation collects diagnostics.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::net::IpAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use lettre::message::Mailbox;
use serde::Deserialize;
use serde::de::IntoDeserializer;
use toml::Spanned;
use toml::de::{DeTable, DeValue};

use crate::diagnostic::{Diagnostic, Diagnostics, Source};
pub use crate::provider::{OAuthProvider, Provider};
use crate::render::{Part, Templates};
use crate::schedule::{Interner, Schedule};
use crate::secret::SecretSource;

/// Largest jobs.toml accepted. 100,000 jobs take about 12 MB; a file much larger than
/// that is a mistake (a log, a binary), and is refused before it is read.
pub const MAX_FILE_BYTES: u64 = 32 * 1024 * 1024;

/// Most recipients (to + cc + bcc) one job may have. Providers cap a message at 100
/// (Gmail) to 500 (Microsoft 365); past that a reminder is a mailing list.
pub const MAX_RECIPIENTS: usize = 500;

/// Longest job name; it appears in Message-IDs and journal fields.
const MAX_JOB_NAME: usize = 64;

const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

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

    fn default_port(self) -> u16 {
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

/// One validated `[[job]]`.
#[derive(Clone, Debug)]
pub struct Job {
    pub name: String,
    pub schedule: Schedule,
    pub from: Mailbox,
    pub to: Vec<Mailbox>,
    pub cc: Vec<Mailbox>,
    pub bcc: Vec<Mailbox>,
    pub reply_to: Option<Mailbox>,
    pub vars: crate::render::Vars,
    pub enabled: bool,
    pub catch_up: CatchUp,
    pub max_late: Duration,
    /// The first occurrence after the instant the config was loaded (`Host::now`).
    pub first: Option<DateTime<Utc>>,
}

impl Job {
    pub fn tz(&self) -> Tz {
        self.schedule.tz()
    }
}

/// A whole validated jobs.toml.
#[derive(Clone, Debug)]
pub struct Config {
    pub path: PathBuf,
    pub transport: TransportConfig,
    /// The ledger's folder.
    pub state_dir: PathBuf,
    pub delivery: Delivery,
    /// Where occurrences are recorded: `SQLite` in `state_dir`, or a shared `PostgreSQL`.
    pub ledger: LedgerConfig,
    /// Shared with the timer (a job is about 1 KB; 10,000 of them once, not twice).
    pub jobs: Arc<Vec<Job>>,
    pub templates: Arc<Templates>,
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
const DEFAULT_LEASE: Duration = Duration::from_secs(120);
const DEFAULT_POLL: Duration = Duration::from_secs(5);

impl Config {
    pub fn job(&self, name: &str) -> Option<&Job> {
        self.jobs.iter().find(|j| j.name == name)
    }
}

/// Facts about the machine that a config may fall back on, injected so tests control them.
#[derive(Clone, Debug)]
pub struct Host {
    /// Used to test-render templates and to check that schedules fire.
    pub now: DateTime<Utc>,
    /// The zone used when jobs.toml names none: `TZ`, then /etc/localtime, then UTC.
    pub default_tz: Result<Tz, String>,
    /// `$STATE_DIRECTORY`, which systemd sets for `StateDirectory=`.
    pub state_directory: Option<PathBuf>,
    /// The node name when `[ledger]` gives none: `$CRONMAIL_NODE`, else the host name.
    pub node: String,
}

impl Host {
    pub fn from_env() -> Self {
        Host {
            now: Utc::now(),
            default_tz: system_timezone(),
            // systemd may list several folders, separated by colons; ours is the first.
            state_directory: std::env::var_os("STATE_DIRECTORY")
                .and_then(|v| {
                    v.to_str()
                        .and_then(|s| s.split(':').next())
                        .map(PathBuf::from)
                })
                .filter(|p| !p.as_os_str().is_empty()),
            node: std::env::var("CRONMAIL_NODE")
                .ok()
                .filter(|n| !n.is_empty())
                .or_else(|| hostname::get().ok()?.into_string().ok())
                .unwrap_or_else(|| "cronmail".to_owned()),
        }
    }
}

/// `TZ` if set (a leading `:` is allowed, as glibc does), else the zone /etc/localtime
/// names, else UTC.
pub fn system_timezone() -> Result<Tz, String> {
    if let Ok(tz) = std::env::var("TZ") {
        let name = tz.strip_prefix(':').unwrap_or(&tz);
        if !name.is_empty() {
            return Tz::from_str(name).map_err(|_| {
                format!("the TZ environment variable is `{tz}`, which is not an IANA time zone; set `timezone` in jobs.toml")
            });
        }
    }
    Ok(iana_time_zone::get_timezone()
        .ok()
        .and_then(|n| Tz::from_str(&n).ok())
        .unwrap_or(Tz::UTC))
}

// ---------------------------------------------------------------------------------
// Raw layer: the file as written.

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTop {
    from: Option<Spanned<String>>,
    timezone: Option<Spanned<String>>,
    smtp: Option<Spanned<RawSmtp>>,
    outbox: Option<Spanned<RawOutbox>>,
    defaults: Option<RawDefaults>,
    state_dir: Option<Spanned<String>>,
    delivery: Option<RawDelivery>,
    ledger: Option<Spanned<RawLedger>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLedger {
    url: Option<Spanned<String>>,
    password_env: Option<Spanned<String>>,
    password_file: Option<Spanned<String>>,
    password_command: Option<Spanned<Vec<String>>>,
    password_credential: Option<Spanned<String>>,
    node: Option<Spanned<String>>,
    lease: Option<Spanned<String>>,
    poll: Option<Spanned<String>>,
    ca_file: Option<Spanned<String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawDelivery {
    retry_min: Option<Spanned<String>>,
    retry_max: Option<Spanned<String>>,
    retry_for: Option<Spanned<String>>,
    max_connections: Option<Spanned<i64>>,
    shutdown_grace: Option<Spanned<String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawDefaults {
    catch_up: Option<Spanned<String>>,
    max_late: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSmtp {
    provider: Option<Spanned<String>>,
    host: Option<Spanned<String>>,
    port: Option<Spanned<i64>>,
    tls: Option<Spanned<String>>,
    username: Option<Spanned<String>>,
    password: Option<Spanned<serde::de::IgnoredAny>>,
    password_env: Option<Spanned<String>>,
    password_file: Option<Spanned<String>>,
    password_command: Option<Spanned<Vec<String>>>,
    password_credential: Option<Spanned<String>>,
    auth: Option<Spanned<String>>,
    token_command: Option<Spanned<Vec<String>>>,
    oauth2: Option<Spanned<RawOAuth2>>,
    ca_file: Option<Spanned<String>>,
    tls_fingerprint: Option<Spanned<String>>,
    timeout: Option<Spanned<String>>,
    keep_connections: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOAuth2 {
    provider: Option<Spanned<String>>,
    tenant: Option<Spanned<String>>,
    client_id: Option<Spanned<String>>,
    client_secret: Option<Spanned<serde::de::IgnoredAny>>,
    client_secret_env: Option<Spanned<String>>,
    client_secret_file: Option<Spanned<String>>,
    client_secret_command: Option<Spanned<Vec<String>>>,
    client_secret_credential: Option<Spanned<String>>,
    refresh_token_file: Option<Spanned<String>>,
    token_url: Option<Spanned<String>>,
    device_code_url: Option<Spanned<String>>,
    authorize_url: Option<Spanned<String>>,
    scope: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOutbox {
    dir: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawJob {
    name: Spanned<String>,
    schedule: Spanned<String>,
    timezone: Option<Spanned<String>>,
    to: Spanned<Vec<Spanned<String>>>,
    #[serde(default)]
    cc: Vec<Spanned<String>>,
    #[serde(default)]
    bcc: Vec<Spanned<String>>,
    reply_to: Option<Spanned<String>>,
    from: Option<Spanned<String>>,
    subject: Spanned<String>,
    body: Option<Spanned<String>>,
    body_file: Option<Spanned<String>>,
    html: Option<Spanned<String>>,
    html_file: Option<Spanned<String>>,
    enabled: Option<bool>,
    catch_up: Option<Spanned<String>>,
    max_late: Option<Spanned<String>>,
    #[serde(default)]
    vars: BTreeMap<String, Spanned<String>>,
}

// ---------------------------------------------------------------------------------
// Loading.

/// Reads and validates `path`. Every problem found is in the returned `Diagnostics`.
pub fn load(path: &Path, host: &Host) -> Result<Config, Diagnostics> {
    let text = read_limited(path).map_err(|message| {
        Diagnostics(vec![Diagnostic {
            path: path.to_path_buf(),
            location: None,
            job: None,
            message,
        }])
    })?;
    parse(path, &text, host)
}

fn read_limited(path: &Path) -> Result<String, String> {
    let meta =
        std::fs::metadata(path).map_err(|e| format!("cannot read the configuration: {e}"))?;
    if meta.is_dir() {
        return Err("is a directory; expected a jobs.toml file".to_owned());
    }
    if meta.len() > MAX_FILE_BYTES {
        return Err(format!(
            "the file is {} bytes, more than the limit of {MAX_FILE_BYTES} (about 2.5 million jobs)",
            meta.len()
        ));
    }
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read the configuration: {e}"))?;
    String::from_utf8(bytes).map_err(|e| {
        let offset = e.utf8_error().valid_up_to();
        let valid = String::from_utf8_lossy(&e.as_bytes()[..offset]).into_owned();
        let (line, col) = Source::new(path, &valid).line_col(offset);
        format!("{line}:{col}: the file is not valid UTF-8 (TOML files must be UTF-8)")
    })
}

/// Validates the text of a jobs.toml that lives at `path` (relative paths in it resolve
/// against `path`'s folder).
pub fn parse(path: &Path, text: &str, host: &Host) -> Result<Config, Diagnostics> {
    let src = Source::new(path, text);
    let mut cx = Cx {
        src: &src,
        diags: Vec::new(),
        dir: path.parent().map(Path::to_path_buf).unwrap_or_default(),
    };

    if text.trim().is_empty() {
        cx.file("the file is empty; expected an [outbox] or [smtp] section and [[job]] entries (see the README)");
        return Err(Diagnostics(cx.diags));
    }

    let (root, errors) = DeTable::parse_recoverable(text);
    if !errors.is_empty() {
        for e in errors {
            cx.at(e.span(), None, toml_message(&e));
        }
        return Err(Diagnostics(cx.diags));
    }
    let root_span = root.span();
    let mut table = root.into_inner();

    // Jobs are deserialized one by one, so a mistake in one does not hide the others.
    let jobs_value = table.remove("job");
    let top: Option<RawTop> =
        match RawTop::deserialize(toml::de::Deserializer::from(Spanned::new(root_span, table))) {
            Ok(top) => Some(top),
            Err(e) => {
                cx.at(e.span(), None, toml_message(&e));
                None
            }
        };
    let mut raw_jobs = Vec::new();
    match jobs_value.map(Spanned::into_inner) {
        None => {}
        Some(DeValue::Array(items)) => {
            for item in items {
                let span = item.span();
                let name = item
                    .get_ref()
                    .get("name")
                    .and_then(|n| n.get_ref().as_str())
                    .map(str::to_owned);
                match RawJob::deserialize(item.into_deserializer()) {
                    Ok(job) => raw_jobs.push(job),
                    Err(e) => cx.at(e.span().or(Some(span)), name.as_deref(), toml_message(&e)),
                }
            }
        }
        Some(_) => cx.file("`job` must be an array of tables, written as [[job]]"),
    }

    let Some(top) = top else {
        return Err(Diagnostics(cx.diags));
    };
    let built = cx.build(top, raw_jobs, host);
    match built {
        Some(config) if cx.diags.is_empty() => Ok(config),
        _ => Err(Diagnostics(cx.diags)),
    }
}

/// toml's message without its own "TOML parse error at line ..." framing and snippet,
/// since we print `PATH:LINE:COL` ourselves.
fn toml_message(e: &toml::de::Error) -> String {
    let msg = e.message().trim();
    let msg = msg
        .strip_prefix("unknown field")
        .map_or_else(|| msg.to_owned(), |rest| format!("unknown key{rest}"));
    if msg.contains("unknown key `password`,") {
        return "a literal `password` is not allowed in jobs.toml; use one of `password_env`, `password_file`, \
                `password_command` (or `password_credential` under systemd)"
            .to_owned();
    }
    msg
}

struct Cx<'a> {
    src: &'a Source<'a>,
    diags: Vec<Diagnostic>,
    dir: PathBuf,
}

impl Cx<'_> {
    fn at(&mut self, span: Option<Range<usize>>, job: Option<&str>, message: impl Into<String>) {
        self.diags.push(self.src.at(span, job, message));
    }

    fn file(&mut self, message: impl Into<String>) {
        self.diags.push(self.src.at(None, None, message));
    }

    fn resolve(&self, p: &str) -> PathBuf {
        let p = Path::new(p);
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.dir.join(p)
        }
    }

    fn build(&mut self, top: RawTop, raw_jobs: Vec<RawJob>, host: &Host) -> Option<Config> {
        let default_tz = match &top.timezone {
            Some(tz) => self.tz(tz, None),
            None => match &host.default_tz {
                Ok(tz) => Some(*tz),
                Err(e) => {
                    self.file(e.clone());
                    None
                }
            },
        };
        let default_from = top
            .from
            .as_ref()
            .and_then(|f| self.mailbox(f, None, "from"));
        let raw_defaults = top.defaults.unwrap_or_default();
        let defaults = Defaults {
            catch_up: raw_defaults
                .catch_up
                .as_ref()
                .map_or(Some(CatchUp::Latest), |c| self.catch_up(c, None)),
            max_late: raw_defaults
                .max_late
                .as_ref()
                .map_or(Some(DEFAULT_MAX_LATE), |d| self.duration(d, "max_late")),
            tz: default_tz,
            from: default_from,
        };

        let transport = match (top.smtp, top.outbox) {
            (Some(smtp), None) => self.smtp(smtp).map(|s| TransportConfig::Smtp(Box::new(s))),
            (None, Some(outbox)) => {
                let dir = outbox
                    .into_inner()
                    .dir
                    .map_or_else(|| "outbox".to_owned(), Spanned::into_inner);
                Some(TransportConfig::Outbox {
                    dir: self.resolve(&dir),
                })
            }
            (Some(smtp), Some(_)) => {
                self.at(
                    Some(smtp.span()),
                    None,
                    "both [smtp] and [outbox] are set; keep exactly one",
                );
                None
            }
            (None, None) => {
                self.file("no [smtp] or [outbox] section; add exactly one (see the README)");
                None
            }
        };

        let mut templates = Templates::new();
        let mut interner = Interner::default();
        let mut jobs = Vec::with_capacity(raw_jobs.len());
        let mut seen: HashMap<String, usize> = HashMap::new();
        let mut template_spans = Vec::with_capacity(raw_jobs.len());
        for raw in raw_jobs {
            let name = raw.name.get_ref().clone();
            if let Some(first) = seen.get(&name) {
                let (line, _) = self.src.line_col(*first);
                self.at(
                    Some(raw.name.span()),
                    Some(&name),
                    format!("duplicate job name (first defined on line {line})"),
                );
                continue;
            }
            seen.insert(name.clone(), raw.name.span().start);
            if let Some((job, spans)) =
                self.job(raw, &defaults, &mut templates, &mut interner, host.now)
            {
                jobs.push(job);
                template_spans.push(spans);
            }
        }

        // Test-render every template for the job's next occurrence, so that an undefined
        // variable or a bad strftime shows now and not at 9:00 on Monday.
        for (job, spans) in jobs.iter().zip(&template_spans) {
            let Some(next) = job.first else {
                // No occurrence to render for (the schedule's problem is reported): at
                // least compile them.
                for (part, origin) in spans {
                    if let Err(e) = templates.check(&job.name, *part) {
                        self.template_error(origin, &job.name, *part, e.line, &e.message);
                    }
                }
                continue;
            };
            for (part, origin) in spans {
                match templates.render_part(&job.name, *part, next, job.tz(), &job.vars) {
                    Ok(out) if *part == Part::Subject => {
                        if let Some(bad) = header_control(&out) {
                            let message = format!(
                                "the subject renders with {bad} for {next}; header values must be one line"
                            );
                            self.template_error(origin, &job.name, *part, None, &message);
                        }
                    }
                    Ok(_) => {}
                    Err(e) => self.template_error(origin, &job.name, *part, e.line, &e.message),
                }
            }
        }

        let state_dir = match &top.state_dir {
            Some(d) => self.resolve(d.get_ref()),
            None => host
                .state_directory
                .clone()
                .unwrap_or_else(|| PathBuf::from(DEFAULT_STATE_DIR)),
        };
        let delivery = self.delivery(&top.delivery.unwrap_or_default());
        let ledger = match &top.ledger {
            None => Some(LedgerConfig::Sqlite),
            Some(raw) => self.ledger(raw, host, transport.as_ref()),
        };

        let mut transport = transport?;
        if let TransportConfig::Smtp(smtp) = &mut transport
            && let Some(o) = &mut smtp.oauth2
            && o.refresh_token_file.as_os_str().is_empty()
        {
            o.refresh_token_file = state_dir.join("oauth2-refresh-token");
        }
        if !self.diags.is_empty() {
            return None;
        }
        Some(Config {
            path: self.src.path.to_path_buf(),
            transport,
            state_dir,
            delivery: delivery?,
            ledger: ledger?,
            jobs: Arc::new(jobs),
            templates: Arc::new(templates),
        })
    }

    fn ledger(
        &mut self,
        raw: &Spanned<RawLedger>,
        host: &Host,
        transport: Option<&TransportConfig>,
    ) -> Option<LedgerConfig> {
        let section = raw.span();
        let raw = raw.get_ref();
        let errors_before = self.diags.len();
        let Some(url) = &raw.url else {
            self.at(
                Some(section),
                None,
                "[ledger] needs `url`, e.g. \"postgres://cronmail@db.example.com/cronmail\" (leave [ledger] out for the embedded SQLite ledger)",
            );
            return None;
        };
        let mut tls_required = false;
        match postgres::Config::from_str(url.get_ref()) {
            Err(e) => self.at(
                Some(url.span()),
                None,
                format!("`url` is not a PostgreSQL connection URL: {e}; expected postgres://USER@HOST[:PORT]/DATABASE"),
            ),
            Ok(pg) => {
                if pg.get_password().is_some() {
                    self.at(Some(url.span()), None, "`url` holds a password; jobs.toml never holds a secret: use `password_env`, `password_file`, `password_command` or `password_credential`");
                }
                let remote = pg.get_hosts().iter().any(|h| match h {
                    postgres::config::Host::Tcp(name) => !is_loopback(name),
                    postgres::config::Host::Unix(_) => false,
                }) || pg.get_hostaddrs().iter().any(|ip| !ip.is_loopback());
                if pg.get_hosts().is_empty() {
                    self.at(Some(url.span()), None, "`url` names no host");
                }
                if remote {
                    if pg.get_ssl_mode() == postgres::config::SslMode::Disable {
                        self.at(Some(url.span()), None, "`sslmode=disable` is allowed only for a loopback host; the ledger's connection to another host must use TLS");
                    }
                    tls_required = true;
                }
            }
        }
        let sources = self.secret_sources(
            raw.password_env.as_ref(),
            raw.password_file.as_ref(),
            raw.password_command.as_ref(),
            raw.password_credential.as_ref(),
        );
        if sources.len() > 1 {
            self.at(
                Some(sources[1].0.clone()),
                None,
                "set only one of `password_env`, `password_file`, `password_command`, `password_credential`",
            );
        }
        let node = match &raw.node {
            Some(n)
                if n.get_ref().is_empty()
                    || n.get_ref().len() > 100
                    || n.get_ref().chars().any(char::is_control) =>
            {
                self.at(
                    Some(n.span()),
                    None,
                    "`node` must be a short name without control characters",
                );
                String::new()
            }
            Some(n) => n.get_ref().clone(),
            None => host.node.clone(),
        };
        let lease = match &raw.lease {
            Some(l) => self.duration(l, "lease"),
            None => Some(DEFAULT_LEASE),
        };
        let poll = match &raw.poll {
            Some(p) => self.duration(p, "poll"),
            None => Some(DEFAULT_POLL),
        };
        // A lease shorter than one send would let another node take a send in progress.
        if let (Some(lease), Some(TransportConfig::Smtp(smtp))) = (lease, transport)
            && lease < smtp.timeout + Duration::from_secs(5)
        {
            let span = raw.lease.as_ref().map_or(section.clone(), Spanned::span);
            self.at(
                Some(span),
                None,
                format!(
                    "`lease` ({}) must be at least [smtp] `timeout` ({}) plus 5s: a send still in progress must not be taken over",
                    humantime::format_duration(lease),
                    humantime::format_duration(smtp.timeout)
                ),
            );
        }
        let extra_roots = match &raw.ca_file {
            None => Vec::new(),
            Some(c) => match read_pem_certs(&self.resolve(c.get_ref())) {
                Ok(certs) => certs,
                Err(e) => {
                    self.at(Some(c.span()), None, e);
                    Vec::new()
                }
            },
        };
        if self.diags.len() > errors_before {
            return None;
        }
        Some(LedgerConfig::Postgres(Box::new(PgConfig {
            url: url.get_ref().clone(),
            password: sources.into_iter().next().map(|(_, s)| s),
            node,
            lease: lease?,
            poll: poll?,
            tls_required,
            extra_roots,
        })))
    }

    fn tz(&mut self, tz: &Spanned<String>, job: Option<&str>) -> Option<Tz> {
        if let Ok(tz) = Tz::from_str(tz.get_ref()) {
            Some(tz)
        } else {
            {
                self.at(Some(tz.span()), job, format!(
                    "unknown time zone `{}`; expected an IANA name such as `Europe/Berlin` or `UTC`",
                    tz.get_ref()
                ));
                None
            }
        }
    }

    fn mailbox(&mut self, s: &Spanned<String>, job: Option<&str>, key: &str) -> Option<Mailbox> {
        let value = s.get_ref();
        if let Some(bad) = header_control(value) {
            self.at(
                Some(s.span()),
                job,
                format!("`{key}` contains {bad}; an address must be one line"),
            );
            return None;
        }
        match Mailbox::from_str(value) {
            Ok(m) => Some(m),
            Err(e) => {
                self.at(Some(s.span()), job, format!(
                    "`{key}`: `{value}` is not a valid address ({e}); expected `name@example.com` or `Name <name@example.com>`"
                ));
                None
            }
        }
    }

    fn delivery(&mut self, raw: &RawDelivery) -> Option<Delivery> {
        let d = Delivery::default();
        let dur = |cx: &mut Self, v: &Option<Spanned<String>>, key: &str, default: Duration| {
            v.as_ref().map_or(Some(default), |s| cx.duration(s, key))
        };
        let retry_min = dur(self, &raw.retry_min, "retry_min", d.retry_min);
        let retry_max = dur(self, &raw.retry_max, "retry_max", d.retry_max);
        let retry_for = dur(self, &raw.retry_for, "retry_for", d.retry_for);
        let shutdown_grace = dur(
            self,
            &raw.shutdown_grace,
            "shutdown_grace",
            d.shutdown_grace,
        );
        let max_connections = match &raw.max_connections {
            None => Some(d.max_connections),
            Some(n) => match usize::try_from(*n.get_ref()) {
                Ok(v) if (1..=100).contains(&v) => Some(v),
                _ => {
                    self.at(
                        Some(n.span()),
                        None,
                        format!(
                            "`max_connections` must be between 1 and 100, not {}",
                            n.get_ref()
                        ),
                    );
                    None
                }
            },
        };
        if let (Some(min), Some(max)) = (retry_min, retry_max)
            && min > max
        {
            let span = raw.retry_min.as_ref().map(Spanned::span);
            self.at(span, None, "`retry_min` is longer than `retry_max`");
            return None;
        }
        Some(Delivery {
            retry_min: retry_min?,
            retry_max: retry_max?,
            retry_for: retry_for?,
            max_connections: max_connections?,
            shutdown_grace: shutdown_grace?,
        })
    }

    fn catch_up(&mut self, s: &Spanned<String>, job: Option<&str>) -> Option<CatchUp> {
        match s.get_ref().as_str() {
            "skip" => Some(CatchUp::Skip),
            "latest" => Some(CatchUp::Latest),
            "all" => Some(CatchUp::All),
            other => {
                self.at(
                    Some(s.span()),
                    job,
                    format!(
                        "unknown `catch_up` policy `{other}`; expected `skip`, `latest` or `all`"
                    ),
                );
                None
            }
        }
    }

    fn duration(&mut self, s: &Spanned<String>, key: &str) -> Option<Duration> {
        match humantime::parse_duration(s.get_ref()) {
            Ok(d) if d.is_zero() => {
                self.at(
                    Some(s.span()),
                    None,
                    format!("`{key}` must be greater than zero"),
                );
                None
            }
            Ok(d) => Some(d),
            Err(e) => {
                self.at(Some(s.span()), None, format!(
                    "`{key}`: `{}` is not a duration ({e}); expected something like `60s`, `5m` or `1h 30m`",
                    s.get_ref()
                ));
                None
            }
        }
    }

    fn smtp(&mut self, raw: Spanned<RawSmtp>) -> Option<SmtpConfig> {
        let section = raw.span();
        let raw = raw.into_inner();
        let errors_before = self.diags.len();

        let provider = raw.provider.as_ref().and_then(|p| {
            let found = Provider::from_name(p.get_ref());
            if found.is_none() {
                let names: Vec<_> = Provider::ALL.iter().map(|p| p.name()).collect();
                self.at(
                    Some(p.span()),
                    None,
                    format!(
                        "unknown provider `{}`; expected one of {}",
                        p.get_ref(),
                        names.join(", ")
                    ),
                );
            }
            found
        });
        let preset = provider.map(Provider::submission);

        let tls = match &raw.tls {
            Some(t) => match t.get_ref().as_str() {
                "starttls" => Some(TlsMode::Starttls),
                "implicit" => Some(TlsMode::Implicit),
                "none" => Some(TlsMode::None),
                other => {
                    self.at(Some(t.span()), None, format!(
                        "unknown `tls` mode `{other}`; expected `starttls`, `implicit` or `none`"
                    ));
                    None
                }
            },
            None => Some(preset.map_or(TlsMode::Starttls, |p| {
                if p.implicit_tls {
                    TlsMode::Implicit
                } else {
                    TlsMode::Starttls
                }
            })),
        };

        let host = raw
            .host
            .as_ref()
            .map(|h| h.get_ref().trim().to_owned())
            .or_else(|| preset.map(|p| p.host.to_owned()));
        let host = match host {
            Some(h) if !h.is_empty() => Some(h),
            _ => {
                self.at(
                    Some(section.clone()),
                    None,
                    "[smtp] needs `host` (or a `provider` preset)",
                );
                None
            }
        };

        let port = match &raw.port {
            Some(p) => match u16::try_from(*p.get_ref()) {
                Ok(port) if port > 0 => Some(port),
                _ => {
                    self.at(
                        Some(p.span()),
                        None,
                        format!("`port` must be between 1 and 65535, not {}", p.get_ref()),
                    );
                    None
                }
            },
            // An explicit `tls` overrides the preset's mode, and with it the port.
            None => tls.map(|t| match (raw.tls.is_some(), preset) {
                (false, Some(p)) => p.port,
                _ => t.default_port(),
            }),
        };

        if let (Some(TlsMode::None), Some(h)) = (tls, &host)
            && !is_loopback(h)
        {
            let span = raw.tls.as_ref().map(Spanned::span);
            self.at(span, None, format!(
                    "`tls = \"none\"` is allowed only for a loopback host (localhost, 127.0.0.1, ::1), not `{h}`; \
                     use `starttls` or `implicit`"
                ));
        }

        let sources = self.secret_sources(
            raw.password_env.as_ref(),
            raw.password_file.as_ref(),
            raw.password_command.as_ref(),
            raw.password_credential.as_ref(),
        );
        if let Some(p) = &raw.password {
            self.at(Some(p.span()), None, "a literal `password` is not allowed in jobs.toml; use one of \
                `password_env`, `password_file`, `password_command` (or `password_credential` under systemd)");
        }
        if sources.len() > 1 {
            self.at(
                Some(sources[1].0.clone()),
                None,
                "set only one of `password_env`, `password_file`, \
                `password_command`, `password_credential`",
            );
        }
        if let Some((span, SecretSource::Command(argv))) = sources.first()
            && (argv.is_empty() || argv[0].is_empty())
        {
            self.at(
                Some(span.clone()),
                None,
                "`password_command` must name a program, e.g. [\"pass\", \"show\", \"smtp\"]",
            );
        }
        if let Some((span, SecretSource::Credential { name, .. })) = sources.first()
            && (name.is_empty() || name.contains('/'))
        {
            self.at(
                Some(span.clone()),
                None,
                "`password_credential` must be a credential name such as `smtp-password`",
            );
        }
        let username = raw.username.as_ref().map(|u| u.get_ref().clone());
        let oauth2 = raw.oauth2.map(|o| {
            let span = o.span();
            (span.clone(), self.oauth2(span, o.get_ref()))
        });
        let auth = match raw.auth.as_ref().map(|a| (a.span(), a.get_ref().as_str())) {
            None if raw.token_command.is_some() || oauth2.is_some() => AuthMethod::Xoauth2,
            None => AuthMethod::Auto,
            Some((_, "plain")) => AuthMethod::Plain,
            Some((_, "login")) => AuthMethod::Login,
            Some((_, "xoauth2")) => AuthMethod::Xoauth2,
            Some((span, other)) => {
                self.at(
                    Some(span),
                    None,
                    format!("unknown `auth` `{other}`; expected `plain`, `login` or `xoauth2`"),
                );
                AuthMethod::Auto
            }
        };
        let token_command = raw
            .token_command
            .as_ref()
            .map(|t| (t.span(), SecretSource::Command(t.get_ref().clone())));
        if auth == AuthMethod::Xoauth2 {
            match (&token_command, &oauth2, sources.first()) {
                (None, None, _) => {
                    let span = raw.auth.as_ref().map(Spanned::span);
                    self.at(span, None, "`auth = \"xoauth2\"` needs an [smtp.oauth2] section (cronmail refreshes \
                        the token itself) or `token_command` (a command that prints an OAuth2 access token)");
                }
                (Some(_), Some((span, _)), _) => {
                    self.at(
                        Some(span.clone()),
                        None,
                        "set either `token_command` or [smtp.oauth2], not both",
                    );
                }
                (_, _, Some((span, _))) => {
                    self.at(Some(span.clone()), None, "XOAUTH2 logs in with an OAuth2 token, not a password; remove the password source");
                }
                (Some((span, SecretSource::Command(argv))), None, None)
                    if argv.first().is_none_or(String::is_empty) =>
                {
                    self.at(
                        Some(span.clone()),
                        None,
                        "`token_command` must name a program, e.g. [\"oauth-helper\", \"token\"]",
                    );
                }
                _ => {}
            }
            if username.is_none() {
                let span = raw.auth.as_ref().map(Spanned::span);
                self.at(
                    span.or_else(|| oauth2.as_ref().map(|o| o.0.clone())),
                    None,
                    "XOAUTH2 needs `username` (the mailbox the token is for)",
                );
            }
        } else if let Some((span, _)) = &token_command {
            self.at(
                Some(span.clone()),
                None,
                "`token_command` goes with `auth = \"xoauth2\"`",
            );
        } else if let Some((span, _)) = &oauth2 {
            self.at(
                Some(span.clone()),
                None,
                "[smtp.oauth2] goes with `auth = \"xoauth2\"`",
            );
        }
        match (&username, sources.first()) {
            (Some(_), None) if auth == AuthMethod::Xoauth2 => {}
            (Some(_), None) => {
                let span = raw.username.as_ref().map(Spanned::span);
                self.at(
                    span,
                    None,
                    "`username` is set but no password source is: add `password_env`, \
                    `password_file`, `password_command` or `password_credential`",
                );
            }
            (None, Some((span, _))) => {
                self.at(
                    Some(span.clone()),
                    None,
                    "a password source is set but `username` is not",
                );
            }
            _ => {}
        }
        if let Some(u) = &raw.username
            && let Some(bad) = header_control(u.get_ref())
        {
            self.at(Some(u.span()), None, format!("`username` contains {bad}"));
        }

        let ca_file = raw
            .ca_file
            .as_ref()
            .map(|c| (c.span(), self.resolve(c.get_ref())));
        let extra_roots = match &ca_file {
            None => Vec::new(),
            Some((span, path)) => match read_pem_certs(path) {
                Ok(certs) => certs,
                Err(e) => {
                    self.at(Some(span.clone()), None, e);
                    Vec::new()
                }
            },
        };

        let tls_fingerprint =
            raw.tls_fingerprint
                .as_ref()
                .and_then(|f| match parse_fingerprint(f.get_ref()) {
                    Ok(fp) => Some(fp),
                    Err(e) => {
                        self.at(Some(f.span()), None, e);
                        None
                    }
                });
        if let (Some(f), Some(TlsMode::None)) = (&raw.tls_fingerprint, tls) {
            self.at(
                Some(f.span()),
                None,
                "`tls_fingerprint` needs TLS; `tls = \"none\"` has none",
            );
        }

        let timeout = match &raw.timeout {
            Some(t) => self.duration(t, "timeout"),
            None => Some(DEFAULT_TIMEOUT),
        };

        if self.diags.len() > errors_before {
            return None;
        }
        Some(SmtpConfig {
            provider,
            host: host?,
            port: port?,
            tls: tls?,
            username,
            password: sources.into_iter().next().map(|(_, s)| s),
            auth,
            token_command: token_command.map(|(_, s)| s),
            oauth2: oauth2.and_then(|(_, o)| o),
            extra_roots,
            ca_file: ca_file.map(|(_, p)| p),
            tls_fingerprint,
            timeout: timeout?,
            keep_connections: raw.keep_connections.unwrap_or(true),
        })
    }

    /// The `<key>_env`, `_file`, `_command` and `_credential` sources given, in that order.
    fn secret_sources(
        &self,
        env: Option<&Spanned<String>>,
        file: Option<&Spanned<String>>,
        command: Option<&Spanned<Vec<String>>>,
        credential: Option<&Spanned<String>>,
    ) -> Vec<(Range<usize>, SecretSource)> {
        [
            env.map(|s| (s.span(), SecretSource::Env(s.get_ref().clone()))),
            file.map(|s| (s.span(), SecretSource::File(self.resolve(s.get_ref())))),
            command.map(|s| (s.span(), SecretSource::Command(s.get_ref().clone()))),
            credential.map(|s| {
                (
                    s.span(),
                    SecretSource::Credential {
                        name: s.get_ref().clone(),
                        beside_config: self.resolve(s.get_ref()),
                    },
                )
            }),
        ]
        .into_iter()
        .flatten()
        .collect()
    }

    /// `[smtp.oauth2]`. The refresh token file is left empty when not given: the caller
    /// puts it in `state_dir`.
    fn oauth2(&mut self, section: Range<usize>, raw: &RawOAuth2) -> Option<OAuth2Config> {
        let errors_before = self.diags.len();
        let provider = raw.provider.as_ref().and_then(|p| {
            let found = OAuthProvider::from_name(p.get_ref());
            if found.is_none() {
                self.at(
                    Some(p.span()),
                    None,
                    format!(
                        "unknown OAuth2 provider `{}`; expected `microsoft` or `google` (or leave it out and set `token_url`)",
                        p.get_ref()
                    ),
                );
            }
            found
        });
        let tenant = match (&raw.tenant, provider) {
            (Some(t), Some(OAuthProvider::Microsoft)) => {
                let t = t.get_ref();
                if t.is_empty()
                    || !t
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || "-.".contains(c))
                {
                    let span = raw.tenant.as_ref().map(Spanned::span);
                    self.at(span, None, "`tenant` must be a tenant id or domain, or `common`, `organizations`, `consumers`");
                }
                t.clone()
            }
            (Some(t), _) => {
                self.at(
                    Some(t.span()),
                    None,
                    "`tenant` goes with `provider = \"microsoft\"`",
                );
                String::new()
            }
            (None, _) => "common".to_owned(),
        };
        let client_id = match &raw.client_id {
            Some(c) if !c.get_ref().trim().is_empty() => Some(c.get_ref().trim().to_owned()),
            Some(c) => {
                self.at(Some(c.span()), None, "`client_id` is empty");
                None
            }
            None => {
                self.at(
                    Some(section.clone()),
                    None,
                    "[smtp.oauth2] needs `client_id`, the application (client) id of your app registration",
                );
                None
            }
        };
        if let Some(p) = &raw.client_secret {
            self.at(Some(p.span()), None, "a literal `client_secret` is not allowed in jobs.toml; use one of \
                `client_secret_env`, `client_secret_file`, `client_secret_command` or `client_secret_credential`");
        }
        let secrets = self.secret_sources(
            raw.client_secret_env.as_ref(),
            raw.client_secret_file.as_ref(),
            raw.client_secret_command.as_ref(),
            raw.client_secret_credential.as_ref(),
        );
        if secrets.len() > 1 {
            self.at(
                Some(secrets[1].0.clone()),
                None,
                "set only one of `client_secret_env`, `client_secret_file`, `client_secret_command`, `client_secret_credential`",
            );
        }
        let mut url =
            |given: &Option<Spanned<String>>, default: Option<String>, key: &str| match given {
                Some(u) => match reqwest::Url::parse(u.get_ref()) {
                    Ok(parsed) if parsed.scheme() == "https" && parsed.host().is_some() => {
                        Some(u.get_ref().clone())
                    }
                    _ => {
                        self.at(
                            Some(u.span()),
                            None,
                            format!("`{key}` must be an https:// URL, not `{}`", u.get_ref()),
                        );
                        None
                    }
                },
                None => default,
            };
        let token_url = url(
            &raw.token_url,
            provider.map(|p| p.token_url(&tenant)),
            "token_url",
        );
        let device_code_url = url(
            &raw.device_code_url,
            provider.and_then(|p| p.device_code_url(&tenant)),
            "device_code_url",
        );
        let authorize_url = url(
            &raw.authorize_url,
            provider.and_then(OAuthProvider::authorize_url),
            "authorize_url",
        );
        if token_url.is_none()
            && raw.token_url.is_none()
            && provider.is_none()
            && raw.provider.is_none()
        {
            self.at(
                Some(section.clone()),
                None,
                "[smtp.oauth2] needs `provider = \"microsoft\"` or `\"google\"`, or an explicit `token_url`",
            );
        }
        let scope = match (&raw.scope, provider) {
            (Some(s), _) => s.get_ref().clone(),
            (None, Some(p)) => p.scope().to_owned(),
            (None, None) => {
                if raw.provider.is_none() {
                    self.at(
                        Some(section.clone()),
                        None,
                        "[smtp.oauth2] without a `provider` needs `scope`",
                    );
                }
                String::new()
            }
        };
        let refresh_token_file = raw
            .refresh_token_file
            .as_ref()
            .map_or_else(PathBuf::new, |f| self.resolve(f.get_ref()));
        if self.diags.len() > errors_before {
            return None;
        }
        Some(OAuth2Config {
            provider,
            client_id: client_id?,
            client_secret: secrets.into_iter().next().map(|(_, s)| s),
            refresh_token_file,
            token_url: token_url?,
            device_code_url,
            authorize_url,
            scope,
        })
    }

    fn job(
        &mut self,
        raw: RawJob,
        defaults: &Defaults,
        templates: &mut Templates,
        interner: &mut Interner,
        now: DateTime<Utc>,
    ) -> Option<(Job, Vec<(Part, TemplateOrigin)>)> {
        let errors_before = self.diags.len();
        let name = raw.name.get_ref().clone();
        let job = Some(name.as_str());

        if name.is_empty()
            || name.len() > MAX_JOB_NAME
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            self.at(
                Some(raw.name.span()),
                None,
                format!(
                    "job name `{}` must be 1 to {MAX_JOB_NAME} letters, digits, `-` or `_`",
                    name.escape_debug()
                ),
            );
        }

        let tz = match &raw.timezone {
            Some(tz) => self.tz(tz, job),
            None => defaults.tz,
        };
        let mut first = None;
        let schedule =
            tz.and_then(
                |tz| match interner.parse_validated(raw.schedule.get_ref(), tz, now) {
                    Ok((s, fires)) => {
                        match fires {
                            Ok(t) => first = Some(t),
                            Err(e) => self.at(Some(raw.schedule.span()), job, e),
                        }
                        Some(s)
                    }
                    Err(e) => {
                        self.at(
                            Some(raw.schedule.span()),
                            job,
                            format!("invalid schedule `{}`: {e}", raw.schedule.get_ref()),
                        );
                        None
                    }
                },
            );

        let from = if let Some(f) = &raw.from {
            self.mailbox(f, job, "from")
        } else {
            if defaults.from.is_none() {
                self.at(
                    Some(raw.name.span()),
                    job,
                    "no sender: set `from` in the job or at the top of the file",
                );
            }
            defaults.from.clone()
        };
        let list = |cx: &mut Self, items: &[Spanned<String>], key: &str| -> Vec<Mailbox> {
            items
                .iter()
                .filter_map(|s| cx.mailbox(s, job, key))
                .collect()
        };
        let to = list(self, raw.to.get_ref(), "to");
        let cc = list(self, &raw.cc, "cc");
        let bcc = list(self, &raw.bcc, "bcc");
        if raw.to.get_ref().is_empty() && raw.cc.is_empty() && raw.bcc.is_empty() {
            self.at(Some(raw.to.span()), job, "no recipients: `to` is empty");
        }
        let recipients = raw.to.get_ref().len() + raw.cc.len() + raw.bcc.len();
        if recipients > MAX_RECIPIENTS {
            self.at(
                Some(raw.to.span()),
                job,
                format!("{recipients} recipients, more than the limit of {MAX_RECIPIENTS} per job"),
            );
        }
        let reply_to = raw
            .reply_to
            .as_ref()
            .and_then(|r| self.mailbox(r, job, "reply_to"));

        let catch_up = raw
            .catch_up
            .as_ref()
            .map_or(defaults.catch_up, |c| self.catch_up(c, job));
        let max_late = raw
            .max_late
            .as_ref()
            .map_or(defaults.max_late, |d| self.duration(d, "max_late"));

        let vars: crate::render::Vars = raw
            .vars
            .into_iter()
            .map(|(k, v)| (k, v.into_inner()))
            .collect();

        let mut origins = Vec::new();
        let mut add = |cx: &mut Self,
                       part: Part,
                       inline: Option<&Spanned<String>>,
                       file: Option<&Spanned<String>>,
                       required: bool| {
            let key = part.key();
            let (source, origin) = match (inline, file) {
                (Some(s), None) => (s.get_ref().clone(), TemplateOrigin::Inline(s.span())),
                (None, Some(f)) => {
                    let path = cx.resolve(f.get_ref());
                    match std::fs::read_to_string(&path) {
                        Ok(text) => (text, TemplateOrigin::File(path)),
                        Err(e) => {
                            cx.at(
                                Some(f.span()),
                                job,
                                format!("`{key}_file`: cannot read `{}`: {e}", path.display()),
                            );
                            return;
                        }
                    }
                }
                (Some(s), Some(_)) => {
                    cx.at(
                        Some(s.span()),
                        job,
                        format!("set only one of `{key}` and `{key}_file`"),
                    );
                    return;
                }
                (None, None) => {
                    if required {
                        cx.at(
                            Some(raw.name.span()),
                            job,
                            format!("missing `{key}` (or `{key}_file`)"),
                        );
                    }
                    return;
                }
            };
            templates.add(&name, part, source);
            origins.push((part, origin));
        };
        add(self, Part::Subject, Some(&raw.subject), None, true);
        add(
            self,
            Part::Body,
            raw.body.as_ref(),
            raw.body_file.as_ref(),
            true,
        );
        add(
            self,
            Part::Html,
            raw.html.as_ref(),
            raw.html_file.as_ref(),
            false,
        );

        if self.diags.len() > errors_before {
            // The job is invalid and will not be test-rendered: still report its
            // template mistakes now, with everything else.
            for (part, origin) in &origins {
                if let Err(e) = templates.check(&name, *part) {
                    self.template_error(origin, &name, *part, e.line, &e.message);
                }
            }
            return None;
        }
        Some((
            Job {
                name,
                schedule: schedule?,
                from: from?,
                to,
                cc,
                bcc,
                reply_to,
                vars,
                enabled: raw.enabled.unwrap_or(true),
                catch_up: catch_up?,
                max_late: max_late?,
                first,
            },
            origins,
        ))
    }

    /// Reports a template problem at the template's own line: inside the TOML string,
    /// or inside the `*_file`.
    fn template_error(
        &mut self,
        origin: &TemplateOrigin,
        job: &str,
        part: Part,
        line: Option<usize>,
        message: &str,
    ) {
        let key = part.key();
        match origin {
            TemplateOrigin::Inline(span) => {
                let (start_line, start_col) = self.src.line_col(span.start);
                // A multi-line string that opens with a newline starts on the next line.
                let rest = self.src.text_at(span.start);
                let skip = usize::from(
                    rest.starts_with("\"\"\"\n")
                        || rest.starts_with("'''\n")
                        || rest.starts_with("\"\"\"\r\n")
                        || rest.starts_with("'''\r\n"),
                );
                let location = match line {
                    Some(l) if l > 1 || skip == 1 => (start_line + skip + l - 1, 1),
                    _ => (start_line, start_col),
                };
                self.diags.push(Diagnostic {
                    path: self.src.path.to_path_buf(),
                    location: Some(location),
                    job: Some(job.to_owned()),
                    message: format!("template `{key}`: {message}"),
                });
            }
            TemplateOrigin::File(path) => self.diags.push(Diagnostic {
                path: path.clone(),
                location: line.map(|l| (l, 1)),
                job: Some(job.to_owned()),
                message: format!("template `{key}_file`: {message}"),
            }),
        }
    }
}

/// `[defaults]`, resolved; `None` where the value was invalid (already reported).
struct Defaults {
    catch_up: Option<CatchUp>,
    max_late: Option<Duration>,
    tz: Option<Tz>,
    from: Option<Mailbox>,
}

/// Where a template's text came from, to point errors at the right file and line.
enum TemplateOrigin {
    Inline(Range<usize>),
    File(PathBuf),
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

/// `sha256:HEX` (64 hex digits, colons optional, any case), as `check --smtp` prints it.
pub fn parse_fingerprint(s: &str) -> Result<[u8; 32], String> {
    let bad = || {
        format!(
            "`tls_fingerprint`: `{s}` is not `sha256:` and 64 hex digits (the certificate's SHA-256, as `cronmail check --smtp` prints it)"
        )
    };
    let hex: String = s
        .trim()
        .strip_prefix("sha256:")
        .ok_or_else(bad)?
        .chars()
        .filter(|c| *c != ':')
        .collect();
    if hex.len() != 64 {
        return Err(bad());
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(hex.get(2 * i..2 * i + 2).ok_or_else(bad)?, 16)
            .map_err(|_| bad())?;
    }
    Ok(out)
}

fn is_loopback(host: &str) -> bool {
    let h = host.trim_start_matches('[').trim_end_matches(']');
    h.eq_ignore_ascii_case("localhost") || h.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

fn read_pem_certs(path: &Path) -> Result<Vec<Vec<u8>>, String> {
    let bytes = std::fs::read(path)
        .map_err(|e| format!("`ca_file`: cannot read `{}`: {e}", path.display()))?;
    let certs: Result<Vec<_>, _> = rustls_pemfile::certs(&mut bytes.as_slice()).collect();
    match certs {
        Ok(certs) if !certs.is_empty() => Ok(certs.into_iter().map(|c| c.to_vec()).collect()),
        Ok(_) => Err(format!(
            "`ca_file`: `{}` holds no PEM certificate",
            path.display()
        )),
        Err(e) => Err(format!(
            "`ca_file`: `{}` is not valid PEM: {e}",
            path.display()
        )),
    }
}

impl fmt::Display for TlsMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}
