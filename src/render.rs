//! Templates -> subject and bodies for one occurrence. Pure: no clock, no I/O.
//!
//! minijinja with strict undefined variables: a typo such as `{{ var.owner }}` is an
//! error, not an empty string in someone's inbox. Every template is compiled and
//! test-rendered when the config loads, so mistakes show at `check` time.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::{self, Write as _};
use std::sync::Arc;

use chrono::format::{Item, StrftimeItems};
use chrono::{DateTime, Datelike, Timelike, Utc};
use chrono_tz::Tz;
use minijinja::value::{Object, Value};
use minijinja::{Environment, ErrorKind, UndefinedBehavior};

/// The hash of the maps filled once a job while loading (foldhash, not `SipHash`).
type Quick = foldhash::fast::RandomState;

/// Fuel for one render: minijinja counts instructions, and a template with a runaway
/// loop or recursion stops with an error instead of hanging the daemon. A typical
/// reminder uses well under a thousand.
pub const FUEL: u64 = 200_000;

/// Largest rendered subject or body, in bytes.
pub const MAX_OUTPUT: usize = 1024 * 1024;

/// Which part of a message a template produces.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Part {
    Subject,
    Body,
    Html,
    /// The path of the job's attachment number N (`attach`).
    Attach(u8),
    /// `[job.invite]`'s `summary`, `location` and `description`.
    InviteSummary,
    InviteLocation,
    InviteDescription,
    /// `list_unsubscribe`.
    Unsubscribe,
}

impl Part {
    pub fn key(self) -> &'static str {
        match self {
            Part::Subject => "subject",
            Part::Body => "body",
            Part::Html => "html",
            Part::Attach(_) => "attach",
            Part::InviteSummary => "invite.summary",
            Part::InviteLocation => "invite.location",
            Part::InviteDescription => "invite.description",
            Part::Unsubscribe => "list_unsubscribe",
        }
    }
}

/// A job's name and its templates' sources.
type JobSources = (Arc<str>, Box<[(Part, Arc<str>)]>);

/// A job's sources while the jobs are read.
type PartSources = Vec<(Part, Arc<str>)>;

/// The templates of every job.
///
/// A source used by one job is kept as text and compiled at each render (microseconds
/// for a reminder): a compiled minijinja template costs about 10 KB, which for 10,000
/// jobs with a subject and a body is 200 MB. A source shared by several jobs (a common
/// `body_file`) is stored once and compiled once.
pub struct Templates {
    env: Environment<'static>,
    /// Each job's sources, by its name (shared with the `Job`): one entry a job, while
    /// the jobs are read.
    sources: HashMap<Arc<str>, PartSources, Quick>,
    /// The same, once loaded: sorted by name for a binary search (32 bytes a job, where
    /// the map took 67).
    by_name: Box<[JobSources]>,
    interned: HashSet<Arc<str>, Quick>,
    /// Shared sources, compiled into `env` under these names, by the address of the
    /// source's one `Arc` (sources are interned, so the same text is the same `Arc`;
    /// the entry keeps it alive). Looking up by address spares hashing the whole text
    /// at each render.
    shared: HashMap<usize, (Arc<str>, String), Quick>,
    /// Jobs whose messages carry a calendar invitation.
    invites: HashSet<String>,
}

impl fmt::Debug for Templates {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Templates")
    }
}

/// A template that failed to compile or render, with its 1-based line when known.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct TemplateError {
    pub line: Option<usize>,
    pub message: String,
}

impl TemplateError {
    fn from_minijinja(e: &minijinja::Error, vars: Option<&Vars>) -> Self {
        if e.kind() == ErrorKind::UndefinedError
            && let Some(expr) = e
                .template_source()
                .zip(e.range())
                .and_then(|(src, range)| src.get(range))
        {
            return TemplateError {
                line: e.line(),
                message: undefined(expr, vars),
            };
        }
        let mut message = match e.kind() {
            ErrorKind::OutOfFuel => {
                "template ran too long (loop or recursion limit reached)".to_owned()
            }
            _ => e.kind().to_string(),
        };
        if let Some(detail) = e.detail() {
            let _ = write!(message, ": {detail}");
        }
        if let Some(source) = std::error::Error::source(e) {
            let _ = write!(message, ": {source}");
        }
        TemplateError {
            line: e.line(),
            message,
        }
    }
}

/// The variables a template sees, with the job's `vars`.
fn available(vars: Option<&Vars>) -> Vec<String> {
    let mut names: Vec<String> = [
        "job",
        "scheduled_at",
        "date",
        "time",
        "weekday",
        "event_at",
        "days_before",
    ]
    .map(str::to_owned)
    .to_vec();
    match vars {
        Some(v) if !v.is_empty() => names.extend(v.0.iter().map(|(k, _)| format!("vars.{k}"))),
        Some(_) => {}
        None => names.push("vars.*".to_owned()),
    }
    names
}

/// An undefined variable, named, with the nearest known one and the list of them.
fn undefined(expr: &str, vars: Option<&Vars>) -> String {
    let expr = expr.trim();
    // The variable itself, without filters or arguments: `vars.ownr | upper` -> `vars.ownr`.
    let name: String = expr
        .chars()
        .take_while(|c| c.is_alphanumeric() || *c == '_' || *c == '.')
        .collect();
    let name = if name.is_empty() {
        expr.to_owned()
    } else {
        name
    };
    let known = available(vars);
    let near = known
        .iter()
        .filter(|k| !k.ends_with('*'))
        .map(|k| (strsim::damerau_levenshtein(k, &name), k))
        .filter(|(d, k)| *d <= 2.max(k.len() / 4))
        .min_by_key(|(d, _)| *d)
        .map_or_else(|| ".".to_owned(), |(_, k)| format!("; did you mean `{k}`?"));
    format!(
        "undefined variable `{name}`{near} Variables: {}",
        known.join(", ")
    )
}

/// A job's `vars`, sorted by name. A slice, not a `BTreeMap`: a map's first node
/// holds room for eleven entries, about 500 bytes for a job's one or two variables.
/// Templates see it as a map (`vars.owner`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Vars(Box<[(Box<str>, Box<str>)]>);

impl Vars {
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .binary_search_by(|(k, _)| (**k).cmp(name))
            .ok()
            .map(|i| &*self.0[i].1)
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl<K: Into<String>, V: Into<String>> FromIterator<(K, V)> for Vars {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        let map: BTreeMap<String, String> = iter
            .into_iter()
            .map(|(k, v)| (k.into(), v.into()))
            .collect();
        Vars(
            map.into_iter()
                .map(|(k, v)| (k.into_boxed_str(), v.into_boxed_str()))
                .collect(),
        )
    }
}

impl serde::Serialize for Vars {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(self.0.iter().map(|(k, v)| (&**k, &**v)))
    }
}

/// The rendered parts of one message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    pub subject: String,
    pub body: String,
    pub html: Option<String>,
    /// The paths of the attachments, as rendered (not yet resolved).
    pub attach: Vec<String>,
    /// `[job.invite]`'s summary (the subject when absent), location and description.
    pub invite: Option<InviteText>,
    /// `list_unsubscribe`, rendered.
    pub unsubscribe: Option<String>,
}

/// The rendered text of a calendar invitation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InviteText {
    pub summary: String,
    pub location: Option<String>,
    pub description: Option<String>,
}

/// A template's source as `Templates::add` kept it: the one `Arc` of its text, and
/// whether a job before had the same text (then it is compiled once, for all).
#[derive(Clone, Debug)]
pub struct Source {
    pub text: Arc<str>,
    pub shared: bool,
}

/// The key of a shared source in `Templates::shared`.
fn shared_key(source: &Arc<str>) -> usize {
    Arc::as_ptr(source).cast::<u8>() as usize
}

/// `%A` of chrono's strftime, in English as chrono has it.
fn weekday_name(day: chrono::Weekday) -> &'static str {
    use chrono::Weekday::{Fri, Mon, Sat, Sun, Thu, Tue, Wed};
    match day {
        Mon => "Monday",
        Tue => "Tuesday",
        Wed => "Wednesday",
        Thu => "Thursday",
        Fri => "Friday",
        Sat => "Saturday",
        Sun => "Sunday",
    }
}

fn name(job: &str, part: Part) -> String {
    match part {
        Part::Attach(i) => format!("{job}.attach.{i}"),
        _ => format!("{job}.{}", part.key()),
    }
}

impl Default for Templates {
    fn default() -> Self {
        Self::new()
    }
}

impl Templates {
    pub fn new() -> Self {
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        env.set_fuel(Some(FUEL));
        // Mail is plain text: never HTML-escape, even in `html` (the author writes HTML).
        env.set_auto_escape_callback(|_| minijinja::AutoEscape::None);
        env.set_keep_trailing_newline(true);
        env.add_filter("strftime", strftime);
        Templates {
            env,
            sources: HashMap::default(),
            by_name: Box::new([]),
            interned: HashSet::default(),
            shared: HashMap::default(),
            invites: HashSet::new(),
        }
    }

    /// Keeps the source of one template of one job. It is compiled when rendered (the
    /// config's test render reports its mistakes), or by `check`.
    pub fn add(&mut self, job: &Arc<str>, part: Part, source: String) -> Source {
        let source = if let Some(known) = self.interned.get(source.as_str()) {
            let known = Arc::clone(known);
            // A second job uses it: compile it once, for all of them.
            self.compile_shared(&known);
            Source {
                text: known,
                shared: true,
            }
        } else {
            let owned: Arc<str> = Arc::from(source);
            self.interned.insert(Arc::clone(&owned));
            Source {
                text: owned,
                shared: false,
            }
        };
        if let Some(parts) = self.sources.get_mut(&**job) {
            parts.push((part, Arc::clone(&source.text)));
        } else {
            let mut parts = Vec::with_capacity(2);
            parts.push((part, Arc::clone(&source.text)));
            self.sources.insert(Arc::clone(job), parts);
        }
        source
    }

    /// Compiles a source that several jobs use, once: `render_source` then finds it.
    /// `add` does it for its own; a second `Templates` that renders sources kept by
    /// another (the test render on another thread) does it itself.
    pub fn compile_shared(&mut self, source: &Arc<str>) {
        let key = shared_key(source);
        if !self.shared.contains_key(&key) {
            let name = format!("shared:{}", self.shared.len());
            if self
                .env
                .add_template_owned(name.clone(), source.to_string())
                .is_ok()
            {
                self.shared.insert(key, (Arc::clone(source), name));
            }
        }
    }

    /// Done adding: what only `add` needed goes (the index of sources seen, 40 bytes
    /// a job), and the sources move into one sorted list, exactly sized.
    #[must_use]
    pub fn loaded(mut self) -> Self {
        self.interned = HashSet::default();
        let mut all: Vec<JobSources> = std::mem::take(&mut self.sources)
            .into_iter()
            .map(|(job, parts)| (job, parts.into_boxed_slice()))
            .chain(std::mem::take(&mut self.by_name))
            .collect();
        all.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        self.by_name = all.into_boxed_slice();
        self
    }

    /// Compiles one template without rendering it, from its source as given (a `Source`'s
    /// text): for a job with no occurrence to render for, so that its template mistakes
    /// are reported too.
    pub fn check_source(&self, job: &str, part: Part, source: &str) -> Result<(), TemplateError> {
        self.env
            .template_from_named_str(&name(job, part), source)
            .map(drop)
            .map_err(|e| TemplateError::from_minijinja(&e, None))
    }

    fn source(&self, job: &str, part: Part) -> Result<&Arc<str>, TemplateError> {
        self.get(job, part).ok_or_else(|| TemplateError {
            line: None,
            message: format!("job `{job}` has no {} template", part.key()),
        })
    }

    /// Renders one part of a job for the send `at` (an instant, or an `Occasion`).
    pub fn render_part(
        &self,
        job: &str,
        part: Part,
        at: impl Into<Occasion>,
        tz: Tz,
        vars: &Vars,
    ) -> Result<String, TemplateError> {
        self.render_with(job, part, at, tz, vars, None)
    }

    /// `render_part`, with the columns of one row of a `recipients_file` as `row.*`.
    pub fn render_with(
        &self,
        job: &str,
        part: Part,
        at: impl Into<Occasion>,
        tz: Tz,
        vars: &Vars,
        row: Option<&Vars>,
    ) -> Result<String, TemplateError> {
        let source = self.source(job, part)?;
        self.render_source(job, part, source, at.into(), tz, vars, row)
    }

    /// Renders `source` as template `part` of `job`: what `render_with` does with the
    /// source it kept. A shared source is found compiled (`compile_shared`).
    #[allow(clippy::too_many_arguments)]
    pub fn render_source(
        &self,
        job: &str,
        part: Part,
        source: &Arc<str>,
        occasion: Occasion,
        tz: Tz,
        vars: &Vars,
        row: Option<&Vars>,
    ) -> Result<String, TemplateError> {
        let at = occasion.at;
        // A shared source was compiled once, by `add`; any other is compiled now.
        let own_name;
        let template = if let Some((_, shared)) = self.shared.get(&shared_key(source)) {
            self.env.get_template(shared)
        } else {
            own_name = name(job, part);
            self.env.template_from_named_str(&own_name, source)
        }
        .map_err(|e| TemplateError::from_minijinja(&e, Some(vars)))?;
        let local = at.with_timezone(&tz);
        // `date`, `time` and `weekday` are what "%Y-%m-%d", "%H:%M" and "%A" give
        // (a unit test holds them to it), without parsing a format at each render.
        let ctx = minijinja::context! {
            job => job,
            scheduled_at => Value::from_object(ScheduledAt(local)),
            date => format!("{:04}-{:02}-{:02}", local.year(), local.month(), local.day()),
            time => format!("{:02}:{:02}", local.hour(), local.minute()),
            weekday => weekday_name(local.weekday()),
            event_at => Value::from_object(ScheduledAt(occasion.event_at.with_timezone(&tz))),
            days_before => occasion.days_before,
            vars => vars,
            row => row.map(Value::from_serialize),
        };
        let out = template
            .render(ctx)
            .map_err(|e| TemplateError::from_minijinja(&e, Some(vars)))?;
        if out.len() > MAX_OUTPUT {
            return Err(TemplateError {
                line: None,
                message: format!(
                    "rendered output is {} bytes, more than the limit of {MAX_OUTPUT}",
                    out.len()
                ),
            });
        }
        Ok(out)
    }

    pub fn has(&self, job: &str, part: Part) -> bool {
        self.get(job, part).is_some()
    }

    fn get(&self, job: &str, part: Part) -> Option<&Arc<str>> {
        let parts = if let Some(parts) = self.sources.get(job) {
            &parts[..]
        } else {
            let i = self
                .by_name
                .binary_search_by(|(name, _)| (**name).cmp(job))
                .ok()?;
            &self.by_name[i].1[..]
        };
        parts
            .iter()
            .find_map(|(p, source)| (*p == part).then_some(source))
    }

    /// Renders every part a job has.
    pub fn render(
        &self,
        job: &str,
        at: impl Into<Occasion>,
        tz: Tz,
        vars: &Vars,
    ) -> Result<Rendered, (Part, TemplateError)> {
        self.render_row(job, at, tz, vars, None)
    }

    /// Renders every part a job has, for one row of its `recipients_file` when it has
    /// one (the row's columns are `row.*`). `invite` says whether the job has one.
    pub fn render_row(
        &self,
        job: &str,
        at: impl Into<Occasion>,
        tz: Tz,
        vars: &Vars,
        row: Option<&Vars>,
    ) -> Result<Rendered, (Part, TemplateError)> {
        let at = at.into();
        let part = |p| {
            self.render_with(job, p, at, tz, vars, row)
                .map_err(|e| (p, e))
        };
        let optional = |p| {
            if self.has(job, p) {
                part(p).map(Some)
            } else {
                Ok(None)
            }
        };
        let subject = part(Part::Subject)?;
        let mut attach = Vec::new();
        for i in 0..=u8::MAX {
            match optional(Part::Attach(i))? {
                Some(path) => attach.push(path),
                None => break,
            }
        }
        let invite = if self.invites.contains(job) {
            Some(InviteText {
                summary: optional(Part::InviteSummary)?.unwrap_or_else(|| subject.clone()),
                location: optional(Part::InviteLocation)?,
                description: optional(Part::InviteDescription)?,
            })
        } else {
            None
        };
        Ok(Rendered {
            body: part(Part::Body)?,
            html: optional(Part::Html)?,
            unsubscribe: optional(Part::Unsubscribe)?,
            subject,
            attach,
            invite,
        })
    }

    /// Marks `job` as one whose messages carry an invitation.
    pub fn add_invite(&mut self, job: &str) {
        self.invites.insert(job.to_owned());
    }
}

/// What a send is: its instant, and the occurrence it is about (itself, or for an
/// advance warning, the occurrence `days_before` days later).
#[derive(Clone, Copy, Debug)]
pub struct Occasion {
    pub at: DateTime<Utc>,
    pub event_at: DateTime<Utc>,
    pub days_before: u32,
}

impl From<DateTime<Utc>> for Occasion {
    fn from(at: DateTime<Utc>) -> Self {
        Self {
            at,
            event_at: at,
            days_before: 0,
        }
    }
}

/// `scheduled_at`: prints as RFC 3339 in the job's zone, and keeps the zone for `strftime`.
#[derive(Debug)]
struct ScheduledAt(DateTime<Tz>);

impl Object for ScheduledAt {
    fn render(self: &Arc<Self>, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.to_rfc3339())
    }
}

/// `{{ scheduled_at | strftime("%V") }}`: chrono's strftime in the job's zone.
fn strftime(value: &Value, format: &str) -> Result<String, minijinja::Error> {
    let Some(at) = value.downcast_object_ref::<ScheduledAt>() else {
        return Err(minijinja::Error::new(
            ErrorKind::InvalidOperation,
            "strftime applies to `scheduled_at` and `event_at` only",
        ));
    };
    // chrono panics when Display meets a bad specifier; check the items first.
    let items: Vec<Item<'_>> = StrftimeItems::new(format).collect();
    if items.iter().any(|i| matches!(i, Item::Error)) {
        return Err(minijinja::Error::new(
            ErrorKind::InvalidOperation,
            format!("invalid strftime format `{format}`"),
        ));
    }
    let mut out = String::new();
    write!(out, "{}", at.0.format_with_items(items.into_iter())).map_err(|_| {
        minijinja::Error::new(
            ErrorKind::InvalidOperation,
            format!("cannot format with `{format}`"),
        )
    })?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn one(src: &str) -> Result<String, TemplateError> {
        let mut t = Templates::new();
        t.add(&Arc::from("j"), Part::Subject, src.to_owned());
        let at = Utc.with_ymd_and_hms(2026, 3, 2, 8, 0, 0).unwrap();
        let vars: Vars = [("owner", "Junho")].into_iter().collect();
        t.render_part("j", Part::Subject, at, chrono_tz::Europe::Berlin, &vars)
    }

    #[test]
    fn date_time_and_weekday_are_what_strftime_gives() {
        let mut t = Templates::new();
        t.add(
            &Arc::from("j"),
            Part::Subject,
            "{{ date }}|{{ time }}|{{ weekday }}".to_owned(),
        );
        let vars = Vars::default();
        let zones = [
            chrono_tz::UTC,
            chrono_tz::Europe::Berlin,
            chrono_tz::America::St_Johns,
            chrono_tz::Pacific::Kiritimati,
        ];
        // Every 7 h 13 min over three years, through every weekday, hour and DST change.
        let mut at = Utc.with_ymd_and_hms(2025, 1, 1, 0, 0, 0).unwrap();
        while at.year() < 2028 {
            for tz in zones {
                let local = at.with_timezone(&tz);
                let want = local.format("%Y-%m-%d|%H:%M|%A").to_string();
                assert_eq!(
                    t.render_part("j", Part::Subject, at, tz, &vars).unwrap(),
                    want
                );
            }
            at += chrono::Duration::minutes(7 * 60 + 13);
        }
    }

    #[test]
    fn context_has_every_documented_name() {
        let out = one("{{ job }}|{{ scheduled_at }}|{{ date }}|{{ time }}|{{ weekday }}|{{ vars.owner }}|{{ scheduled_at | strftime('%V %Z') }}").unwrap();
        assert_eq!(
            out,
            "j|2026-03-02T09:00:00+01:00|2026-03-02|09:00|Monday|Junho|10 CET"
        );
    }

    #[test]
    fn undefined_variables_are_errors_with_a_line() {
        let err = one("Hi\n{{ vars.onwer }}").unwrap_err();
        assert_eq!(err.line, Some(2));
        assert!(err.message.contains("undefined"), "{}", err.message);
    }

    #[test]
    fn bad_strftime_is_an_error_not_a_panic() {
        let err = one("{{ scheduled_at | strftime('%Q') }}").unwrap_err();
        assert!(
            err.message.contains("invalid strftime format"),
            "{}",
            err.message
        );
    }

    #[test]
    fn runaway_loops_run_out_of_fuel() {
        let err = one(
            "{% for i in range(100000) %}{% for j in range(100000) %}x{% endfor %}{% endfor %}",
        )
        .unwrap_err();
        assert!(err.message.contains("too long"), "{}", err.message);
    }

    #[test]
    fn syntax_errors_report_their_line() {
        let err = one("ok\n{% if %}").unwrap_err();
        assert_eq!(err.line, Some(2));
    }

    #[test]
    fn html_is_not_escaped() {
        assert_eq!(one("{{ '<b>' }}").unwrap(), "<b>");
    }
}
