//! Validation: the raw file -> the validated types, every problem collected.
//!
//! One function per section, in its own file: `smtp` (and `oauth2`, its sub-section),
//! `job`, `ledger` (with `[delivery]`). This file holds the `Validator` they share and
//! the checks of single values (a zone, an address, a duration, a secret source).

mod account;
mod job;
mod ledger;
mod oauth2;
mod ops;
mod shape;
mod smtp;
mod trial;
mod when;

use std::net::IpAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use chrono_tz::Tz;
use lettre::message::Mailbox;
use toml::Spanned;

use self::job::Rendered;
use super::Host;
use super::diagnostic::{Diagnostic, Diagnostics, Source};
use super::raw::RawTop;
use super::types::{
    CatchUp, Config, DEFAULT_MAX_LATE, DEFAULT_STATE_DIR, LedgerConfig, TransportConfig,
    header_control,
};
use crate::render::Templates;
use crate::schedule::Interner;
use crate::secret::SecretSource;

/// The validation of one jobs.toml: the source text (to turn spans into line and
/// column), the problems found so far, and the file's folder (relative paths in the file
/// resolve against it).
///
/// Every section's check is a method that reports what is wrong through `at` and goes
/// on, returning `None` for a value it could not build, so one pass finds every problem
/// of the file. Only `build` turns the whole into a `Config`, and only when no problem
/// was found.
pub(super) struct Validator<'a> {
    /// The file being read now: jobs.toml, or one of jobs.d.
    src: &'a Source<'a>,
    /// jobs.toml, then the files of jobs.d.
    sources: &'a [Source<'a>],
    diags: Vec<Diagnostic>,
    /// Worth saying, but not wrong: `check` prints them and exits 0.
    warnings: Vec<Diagnostic>,
    dir: PathBuf,
    /// Warnings about a schedule, by expression, zone and whether mail is real.
    schedule_notes: std::collections::HashMap<(String, Tz, bool), Vec<String>>,
    /// `[calendars.NAME]`, loaded before the jobs.
    calendars: when::Calendars,
    omit_cache: when::OmitCache,
    /// The first row of each job's `recipients_file`: its templates are test-rendered with it.
    /// With the number of rows.
    first_rows: std::collections::HashMap<String, (crate::render::Vars, usize)>,
    /// Address lists already read, by their text: jobs with the same `to` share one.
    lists: std::collections::HashMap<Vec<String>, Arc<[Mailbox]>>,
}

/// A job with `before = [...]`: one job per offset, `NAME.7d` (and `NAME` for `0d`),
/// each with its own ledger entries and Message-IDs; the others are the job itself.
fn advance_warnings(
    job: super::types::Job,
    lead: &[u32],
    now: chrono::DateTime<chrono::Utc>,
) -> Vec<super::types::Job> {
    if lead == [0] {
        return vec![job];
    }
    lead.iter()
        .map(|&days| {
            let schedule = job.schedule.clone().with_lead(days);
            let name: Arc<str> = if days == 0 {
                Arc::clone(&job.base)
            } else {
                format!("{}.{days}d", job.base).into()
            };
            super::types::Job {
                name,
                first: schedule.validate(now).ok(),
                schedule,
                ..job.clone()
            }
        })
        .collect()
}

/// `[defaults]` and the top-level fallbacks, resolved; `None` where the value was
/// invalid (already reported).
pub(super) struct Defaults {
    pub catch_up: Option<CatchUp>,
    pub max_late: Option<Duration>,
    pub tz: Option<Tz>,
    pub from: Option<Arc<Mailbox>>,
    /// A top-level `from` was written (if `from` is `None`, it was invalid, and said so).
    pub from_given: bool,
    /// The accounts jobs may name.
    pub accounts: account::AccountNames,
    pub omit: Option<Spanned<Vec<Spanned<String>>>>,
    /// `[defaults] ping_url`; `None` also when it was invalid (reported).
    pub ping_url: Option<crate::secret::SecretUrl>,
    /// `None` when `[defaults] on_omit` is invalid (reported).
    pub on_omit: Option<crate::schedule::OnOmit>,
}

impl<'a> Validator<'a> {
    pub fn new(sources: &'a [Source<'a>], path: &Path) -> Self {
        Validator {
            src: &sources[0],
            sources,
            diags: Vec::new(),
            warnings: Vec::new(),
            schedule_notes: std::collections::HashMap::new(),
            calendars: when::Calendars::new(),
            omit_cache: when::OmitCache::new(),
            first_rows: std::collections::HashMap::new(),
            lists: std::collections::HashMap::new(),
            dir: path.parent().map(Path::to_path_buf).unwrap_or_default(),
        }
    }

    /// Spans from now on are of file number `file` (0: jobs.toml).
    pub fn in_file(&mut self, file: usize) {
        self.src = &self.sources[file];
    }

    /// Reports a problem at `span` (of the file), for `job` when it belongs to one.
    pub fn at(
        &mut self,
        span: Option<Range<usize>>,
        job: Option<&str>,
        message: impl Into<String>,
    ) {
        self.diags.push(self.src.at(span, job, message));
    }

    /// Says something worth knowing at `span` that does not make the file invalid.
    pub fn warn(
        &mut self,
        span: Option<Range<usize>>,
        job: Option<&str>,
        message: impl Into<String>,
    ) {
        let mut d = self.src.at(span, job, message);
        d.warning = true;
        self.warnings.push(d);
    }

    /// Reports a problem of the file as a whole.
    pub fn file(&mut self, message: impl Into<String>) {
        self.diags.push(self.src.at(None, None, message));
    }

    pub fn is_clean(&self) -> bool {
        self.diags.is_empty()
    }

    /// How many problems were reported so far: a section compares the count before
    /// and after, to tell whether it is valid.
    fn errors(&self) -> usize {
        self.diags.len()
    }

    /// The problems and the warnings, in the order of the file.
    pub fn into_diagnostics(mut self) -> Diagnostics {
        self.diags.append(&mut self.warnings);
        let main = self.sources[0].path.to_path_buf();
        self.diags
            .sort_by_key(|d| (d.path != main, d.location.is_some(), d.location));
        Diagnostics(self.diags)
    }

    /// `p` as written, against jobs.toml's folder when relative.
    fn resolve(&self, p: &str) -> PathBuf {
        let p = Path::new(p);
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.dir.join(p)
        }
    }

    /// The whole file: sections first (the jobs fall back on them), then the jobs.
    pub fn build(
        &mut self,
        top: RawTop,
        feed: &mut super::feed::Feed<'_>,
        host: &Host,
    ) -> Option<Config> {
        let mut defaults = self.defaults(&top, host);
        let ops = self.ops(&top);
        let (accounts, names) = self.accounts(top.smtp, top.outbox, top.account);
        defaults.accounts = names;

        let state_dir = match &top.state_dir {
            Some(d) => self.resolve(d.get_ref()),
            None => host
                .state_directory
                .clone()
                .unwrap_or_else(|| PathBuf::from(DEFAULT_STATE_DIR)),
        };
        self.calendars = self.calendars(&top.calendars, &state_dir, host.now);
        let fetched_calendars = top
            .calendars
            .iter()
            .filter(|(_, c)| c.get_ref().url.is_some())
            .map(|(n, _)| n.clone())
            .collect();
        let mut templates = Templates::new();
        let jobs = self.jobs(feed, &defaults, &mut templates, host);

        let delivery = self.delivery(&top.delivery.unwrap_or_default());
        let ledger = match &top.ledger {
            None => Some(LedgerConfig::Sqlite),
            Some(raw) => {
                let longest = accounts
                    .iter()
                    .flatten()
                    .filter_map(|a| match &a.transport {
                        TransportConfig::Smtp(s) => Some(s.timeout),
                        TransportConfig::Outbox { .. } => None,
                    })
                    .max();
                self.ledger(raw, host, longest)
            }
        };

        let mut accounts = accounts?;
        for a in &mut accounts {
            if let TransportConfig::Smtp(smtp) = &mut a.transport
                && let Some(o) = &mut smtp.oauth2
                && o.refresh_token_file.as_os_str().is_empty()
            {
                // Each account's refresh token in a file of its own.
                o.refresh_token_file = state_dir.join(if &*a.name == account::DEFAULT_ACCOUNT {
                    "oauth2-refresh-token".to_owned()
                } else {
                    format!("oauth2-refresh-token-{}", a.name)
                });
            }
        }
        if !self.is_clean() {
            return None;
        }
        Some(Config {
            path: self.sources[0].path.to_path_buf(),
            accounts,
            state_dir,
            delivery: delivery?,
            ledger: ledger?,
            by_name: {
                let mut order: Vec<u32> = (0..u32::try_from(jobs.len()).ok()?).collect();
                order.sort_unstable_by(|&a, &b| jobs[a as usize].name.cmp(&jobs[b as usize].name));
                order.into()
            },
            jobs: jobs.into_iter().map(Arc::new).collect(),
            templates: Arc::new(templates.loaded()),
            fetched_calendars,
            ops: ops?,
            timezone: defaults.tz.unwrap_or(chrono_tz::UTC),
            warnings: {
                let mut w = std::mem::take(&mut self.warnings);
                w.sort_by_key(|d| d.location);
                w
            },
        })
    }

    fn defaults(&mut self, top: &RawTop, host: &Host) -> Defaults {
        let tz = match &top.timezone {
            Some(tz) => self.tz(tz, None),
            None => match &host.default_tz {
                Ok(tz) => Some(*tz),
                Err(e) => {
                    self.file(e.to_string());
                    None
                }
            },
        };
        let from = top
            .from
            .as_ref()
            .and_then(|f| self.mailbox(f, None, "from"))
            .map(Arc::new);
        let raw = top.defaults.as_ref();
        Defaults {
            catch_up: raw
                .and_then(|d| d.catch_up.as_ref())
                .map_or(Some(CatchUp::Latest), |c| self.catch_up(c, None)),
            max_late: raw
                .and_then(|d| d.max_late.as_ref())
                .map_or(Some(DEFAULT_MAX_LATE), |d| self.duration(d, "max_late")),
            tz,
            from,
            from_given: top.from.is_some() || top.stripped.iter().any(|k| k == "from"),
            accounts: account::AccountNames::default(),
            omit: raw.and_then(|d| d.omit.clone()),
            ping_url: raw.and_then(|d| {
                self.secret_url(
                    &ops::UrlKeys {
                        key: "ping_url",
                        literal: d.ping_url.as_ref(),
                        env: d.ping_url_env.as_ref(),
                        file: d.ping_url_file.as_ref(),
                        credential: d.ping_url_credential.as_ref(),
                    },
                    None,
                )
            }),
            on_omit: raw
                .and_then(|d| d.on_omit.as_ref())
                .map_or(Some(crate::schedule::OnOmit::Skip), |o| {
                    self.on_omit(o, None)
                }),
        }
    }

    fn jobs(
        &mut self,
        feed: &mut super::feed::Feed<'_>,
        defaults: &Defaults,
        templates: &mut Templates,
        host: &Host,
    ) -> Vec<crate::config::Job> {
        // Other threads check the jobs' cron expressions ahead of this loop (feed.rs);
        // the loop still reads, validates and reports every job here, in file order.
        let ahead = std::sync::Arc::new(crate::schedule::Ahead::default());
        let mut interner = Interner::with_ahead(std::sync::Arc::clone(&ahead));
        // Each job is read, validated and its `RawJob` freed before the next is read.
        let mut jobs = Vec::with_capacity(feed.count);
        let mut seen: std::collections::HashMap<
            Arc<str>,
            (usize, usize),
            foldhash::fast::RandomState,
        > = std::collections::HashMap::default();
        // Nothing a job keeps only while loading is allocated a job: such
        // allocations, freed together at the end, leave holes between the jobs.
        let mut rendered = Vec::with_capacity(feed.count * 2);
        let mut origins = Vec::new();
        let mistakes = std::thread::scope(|scope| {
            let mut reading = feed.read_ahead(scope, defaults.tz, host.now, &ahead);
            let mut trial = trial::Trial::start(scope, feed.count);
            while let Some(raw) = feed.next_from(self, reading.as_mut()) {
                let file = raw.file;
                self.in_file(file);
                let mut known = None;
                if let Some(raw_name) = &raw.name {
                    if let Some(&(first_file, first)) = seen.get(raw_name.get_ref().as_str()) {
                        let name = raw_name.get_ref();
                        let (line, _) = self.sources[first_file].line_col(first);
                        let place = if first_file == file {
                            format!("line {line}")
                        } else {
                            format!("{}:{line}", self.sources[first_file].path.display())
                        };
                        self.at(
                            Some(raw_name.span()),
                            Some(name),
                            format!("duplicate job name (first defined on {place})"),
                        );
                        continue;
                    }
                    let name: Arc<str> = Arc::from(raw_name.get_ref().as_str());
                    seen.insert(Arc::clone(&name), (file, raw_name.span().start));
                    known = Some(name);
                }
                if let Some((job, lead)) = self.job(
                    raw,
                    known,
                    defaults,
                    templates,
                    &mut interner,
                    host.now,
                    &mut origins,
                ) {
                    let row = self.first_rows.get(&*job.base).map(|(r, _)| r);
                    for (part, origin, source) in origins.drain(..) {
                        trial.push(trial::Task::new(&job, part, source, row));
                        rendered.push(Rendered {
                            job: jobs.len(),
                            file,
                            part,
                            origin,
                        });
                    }
                    jobs.extend(advance_warnings(job, &lead, host.now));
                }
            }
            trial.finish()
        });
        self.test_render(&jobs, &rendered, mistakes);
        self.in_file(0);
        jobs
    }

    fn tz(&mut self, tz: &Spanned<String>, job: Option<&str>) -> Option<Tz> {
        if let Ok(tz) = Tz::from_str(tz.get_ref()) {
            return Some(tz);
        }
        self.at(
            Some(tz.span()),
            job,
            format!(
                "unknown time zone `{}`; expected an IANA name such as `Europe/Berlin` or `UTC`",
                tz.get_ref()
            ),
        );
        None
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

    /// The one `<key>_env`, `_file`, `_command` or `_credential` source given. A second
    /// one is reported; so is a command or a credential name that names nothing.
    fn secret_source(
        &mut self,
        key: &str,
        env: Option<&Spanned<String>>,
        file: Option<&Spanned<String>>,
        command: Option<&Spanned<Vec<String>>>,
        credential: Option<&Spanned<String>>,
    ) -> Option<(Range<usize>, SecretSource)> {
        let mut given = [
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
        .flatten();
        let first = given.next();
        if let Some((span, _)) = given.next() {
            self.at(
                Some(span),
                None,
                format!(
                    "set only one of `{key}_env`, `{key}_file`, `{key}_command`, `{key}_credential`"
                ),
            );
        }
        match &first {
            Some((span, SecretSource::Command(argv)))
                if argv.first().is_none_or(String::is_empty) =>
            {
                self.at(
                    Some(span.clone()),
                    None,
                    format!(
                        "`{key}_command` must name a program, e.g. [\"pass\", \"show\", \"smtp\"]"
                    ),
                );
            }
            Some((span, SecretSource::File(path))) => {
                // Missing or unreadable now means missing at 9:00 on Monday: say it here,
                // with its place, rather than after "ok".
                if let Err(e) = crate::files::read(path, crate::files::MAX_SECRET) {
                    self.at(Some(span.clone()), None, format!("`{key}_file`: {e}"));
                }
            }
            Some((span, SecretSource::Credential { name, .. }))
                if name.is_empty() || name.contains('/') =>
            {
                self.at(
                    Some(span.clone()),
                    None,
                    format!("`{key}_credential` must be a credential name such as `smtp-password`"),
                );
            }
            _ => {}
        }
        first
    }

    /// The DER certificates of a `ca_file`, or the problem reported at its key.
    fn ca_file(&mut self, raw: Option<&Spanned<String>>) -> (Option<PathBuf>, Vec<Vec<u8>>) {
        let Some(raw) = raw else {
            return (None, Vec::new());
        };
        let path = self.resolve(raw.get_ref());
        match read_pem_certs(&path) {
            Ok(certs) => (Some(path), certs),
            Err(e) => {
                self.at(Some(raw.span()), None, e);
                (Some(path), Vec::new())
            }
        }
    }
}

/// Why a secret may not be written in jobs.toml, and where to put it instead.
pub(super) fn literal_secret(key: &str) -> String {
    format!(
        "a literal `{key}` is not allowed in jobs.toml; use one of `{key}_env`, `{key}_file`, \
         `{key}_command` (or `{key}_credential` under systemd)"
    )
}

/// `sha256:HEX` (64 hex digits, colons optional, any case), as `check --smtp` prints it.
pub(crate) fn parse_fingerprint(s: &str) -> Result<[u8; 32], String> {
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
    let bytes = crate::files::read(path, crate::files::MAX_CA_FILE)
        .map_err(|e| format!("`ca_file`: {e}"))?;
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
