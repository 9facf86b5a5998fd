//! When a job sends: exactly one of `schedule` (cron), `rrule` with `start`, or `at`;
//! its omitted days (`omit`, `on_omit`, `[calendars.NAME]`); and its advance warnings
//! (`before`).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;
use std::sync::Arc;

use chrono::{DateTime, Datelike, Duration, NaiveDate, Utc};
use chrono_tz::Tz;
use toml::Spanned;

use super::Validator;
use crate::config::raw::{RawCalendar, RawJob};
use crate::schedule::{Interner, Omit, OnOmit, RuleSpec, Schedule};

/// Each calendar's days, by name.
pub(super) type Calendars = BTreeMap<String, Arc<BTreeSet<NaiveDate>>>;

/// Omitted-day sets already built, by their items and policy: jobs share one.
pub(super) type OmitCache = HashMap<(Vec<String>, OnOmitKey), Arc<Omit>>;

type OnOmitKey = u8;

/// How far ahead calendars are expanded: as far as `validate` looks for a first
/// occurrence, and a year more.
const CALENDAR_YEARS: i32 = 10;

/// How long a fetched calendar's copy is used before it is fetched again: less than
/// the daemon's daily reload, so that each reload fetches it.
const REFRESH: Duration = Duration::hours(23);

/// The most advance warnings a job may have.
const MAX_BEFORE: usize = 16;

impl Validator<'_> {
    /// `[calendars.NAME]`: each a `file`, or a `url` fetched over HTTPS and cached in
    /// `<state_dir>/calendars/NAME.ics` for a day.
    pub(super) fn calendars(
        &mut self,
        raw: &BTreeMap<String, Spanned<RawCalendar>>,
        state_dir: &Path,
        now: DateTime<Utc>,
    ) -> Calendars {
        let mut out = Calendars::new();
        let today = now.date_naive();
        let until = NaiveDate::from_ymd_opt(today.year() + CALENDAR_YEARS, 12, 31).unwrap_or(today);
        for (name, cal) in raw {
            if name == "weekends" {
                self.at(
                    Some(cal.span()),
                    None,
                    "a calendar may not be named `weekends`: `omit` uses that word for Saturdays and Sundays",
                );
                continue;
            }
            let c = cal.get_ref();
            let (text, span) = match (&c.file, &c.url) {
                (Some(f), None) => {
                    if let Some(ca) = &c.ca_file {
                        self.at(
                            Some(ca.span()),
                            None,
                            format!(
                                "calendar `{name}`: `ca_file` is for a `url`; a `file` needs none"
                            ),
                        );
                    }
                    let path = self.resolve(f.get_ref());
                    let text = crate::files::read(&path, crate::files::MAX_CALENDAR)
                        .map_err(|e| e.to_string())
                        .and_then(|b| {
                            String::from_utf8(b)
                                .map_err(|_| format!("`{}` is not valid UTF-8", path.display()))
                        })
                        .and_then(|text| {
                            crate::schedule::ics_days(&text, until)
                                .map_err(|e| format!("`{}`: {e}", path.display()))
                        });
                    (text, f.span())
                }
                (None, Some(u)) => {
                    let (_, roots) = self.ca_file(c.ca_file.as_ref());
                    let fetched = self.fetched(name, u, &roots, state_dir, now, until);
                    (fetched, u.span())
                }
                (Some(f), Some(_)) => {
                    self.at(
                        Some(f.span()),
                        None,
                        format!("calendar `{name}` has both `file` and `url`; keep one"),
                    );
                    continue;
                }
                (None, None) => {
                    self.at(
                        Some(cal.span()),
                        None,
                        format!("calendar `{name}` needs a `file` or a `url` (an .ics of all-day events)"),
                    );
                    continue;
                }
            };
            match text {
                Ok(days) => {
                    let year = today + Duration::days(365);
                    if days.range(today..=year).next().is_none() {
                        self.warn(
                            Some(span),
                            None,
                            format!(
                                "calendar `{name}` has no event in the next 12 months ({today} to {year}); is it the current year's file?"
                            ),
                        );
                    }
                    out.insert(name.clone(), Arc::new(days));
                }
                Err(e) => self.at(Some(span), None, format!("calendar `{name}`: {e}")),
            }
        }
        out
    }

    /// A `url` calendar's days: from its cached copy while that is less than a day old,
    /// else fetched again (and cached). A failed refresh keeps the last good copy, with
    /// a warning; with no copy at all, it is an error.
    fn fetched(
        &mut self,
        name: &str,
        url: &Spanned<String>,
        roots: &[Vec<u8>],
        state_dir: &Path,
        now: DateTime<Utc>,
        until: NaiveDate,
    ) -> Result<BTreeSet<NaiveDate>, String> {
        if !url.get_ref().starts_with("https://") {
            return Err(format!("`url` must be https://, not `{}`", url.get_ref()));
        }
        let dir = state_dir.join("calendars");
        let file = format!("{name}.ics");
        let cached = dir.join(&file);
        let copy = || -> Option<(String, DateTime<Utc>)> {
            let saved: DateTime<Utc> = std::fs::metadata(&cached).ok()?.modified().ok()?.into();
            let bytes = crate::files::read(&cached, crate::files::MAX_CALENDAR).ok()?;
            Some((String::from_utf8(bytes).ok()?, saved))
        };
        let old = copy();
        if let Some((text, saved)) = &old
            && now - *saved < REFRESH
            && *saved <= now
            && let Ok(days) = crate::schedule::ics_days(text, until)
        {
            return Ok(days);
        }
        let fresh = crate::fetch::get(url.get_ref(), roots, crate::files::MAX_CALENDAR)
            .and_then(|b| {
                String::from_utf8(b).map_err(|_| "the answer is not UTF-8 text".to_owned())
            })
            .and_then(|text| crate::schedule::ics_days(&text, until).map(|days| (text, days)));
        match (fresh, old) {
            (Ok((text, days)), _) => {
                // Not cached (a `check` by a user who may not write `state_dir`) is fine:
                // it is fetched again next time.
                let _ = crate::persist::write_atomically(&dir, &file, text.as_bytes());
                Ok(days)
            }
            (Err(e), Some((text, saved))) => {
                let days = crate::schedule::ics_days(&text, until)?;
                self.warn(
                    Some(url.span()),
                    None,
                    format!(
                        "calendar `{name}`: refreshing it failed ({e}); using the copy fetched at {}",
                        saved.format("%Y-%m-%d %H:%M UTC")
                    ),
                );
                Ok(days)
            }
            (Err(e), None) => Err(format!("fetching {} failed: {e}", url.get_ref())),
        }
    }

    pub(super) fn on_omit(&mut self, s: &Spanned<String>, job: Option<&str>) -> Option<OnOmit> {
        match s.get_ref().as_str() {
            "skip" => Some(OnOmit::Skip),
            "before" => Some(OnOmit::Before),
            "after" => Some(OnOmit::After),
            other => {
                self.at(
                    Some(s.span()),
                    job,
                    format!("unknown `on_omit` `{other}`; expected `skip`, `before` or `after`"),
                );
                None
            }
        }
    }

    /// `omit = [...]` with its policy: `None` when an item is wrong (reported).
    pub(super) fn omit(
        &mut self,
        items: &Spanned<Vec<Spanned<String>>>,
        on_omit: OnOmit,
        calendars: &Calendars,
        cache: &mut OmitCache,
        job: Option<&str>,
    ) -> Option<Arc<Omit>> {
        let key: Vec<String> = items
            .get_ref()
            .iter()
            .map(|i| i.get_ref().clone())
            .collect();
        let policy = on_omit as OnOmitKey;
        if let Some(o) = cache.get(&(key.clone(), policy)) {
            return Some(Arc::clone(o));
        }
        let mut weekends = false;
        let mut dates: Vec<(NaiveDate, Arc<str>)> = Vec::new();
        let mut ok = true;
        for item in items.get_ref() {
            let text = item.get_ref().trim();
            if text == "weekends" {
                weekends = true;
            } else if let Ok(d) = NaiveDate::parse_from_str(text, "%Y-%m-%d") {
                dates.push((d, Arc::from(text)));
            } else if let Some(days) = calendars.get(text) {
                let why: Arc<str> = Arc::from(text);
                dates.extend(days.iter().map(|d| (*d, Arc::clone(&why))));
            } else {
                let known: Vec<String> = calendars.keys().map(|k| format!("`{k}`")).collect();
                self.at(
                    Some(item.span()),
                    job,
                    format!(
                        "`omit` item `{text}` is not `weekends`, a date (2026-12-31) or a calendar{}",
                        if known.is_empty() {
                            " (no [calendars.NAME] is defined)".to_owned()
                        } else {
                            format!(" (defined: {})", known.join(", "))
                        }
                    ),
                );
                ok = false;
            }
        }
        if !ok {
            return None;
        }
        let omit = Arc::new(Omit::new(weekends, dates, on_omit));
        cache.insert((key, policy), Arc::clone(&omit));
        Some(omit)
    }

    /// `before = ["7d", "1d", "0d"]`: the days before each occurrence, in the order
    /// written, without duplicates.
    pub(super) fn before(
        &mut self,
        raw: &Spanned<Vec<Spanned<String>>>,
        job: Option<&str>,
    ) -> Option<Vec<u32>> {
        let mut out = Vec::new();
        if raw.get_ref().is_empty() || raw.get_ref().len() > MAX_BEFORE {
            self.at(
                Some(raw.span()),
                job,
                format!("`before` lists 1 to {MAX_BEFORE} offsets, e.g. [\"7d\", \"1d\", \"0d\"]"),
            );
            return None;
        }
        for item in raw.get_ref() {
            let text = item.get_ref().trim();
            let days = text
                .strip_suffix('d')
                .and_then(|n| n.parse::<u32>().ok())
                .filter(|n| *n <= 366);
            match days {
                Some(n) if out.contains(&n) => self.at(
                    Some(item.span()),
                    job,
                    format!("`before` lists `{text}` twice"),
                ),
                Some(n) => out.push(n),
                None => {
                    self.at(
                        Some(item.span()),
                        job,
                        format!(
                            "`before` offset `{text}` is not a number of days from 0d to 366d, e.g. \"7d\""
                        ),
                    );
                    return None;
                }
            }
        }
        Some(out)
    }

    /// The job's schedule from `schedule`, `rrule` + `start` or `at`, exactly one of
    /// them; and its first occurrence after `now` (a schedule that never fires is
    /// reported, and still returned so that the job's other problems show).
    pub(super) fn when(
        &mut self,
        raw: &RawJob,
        tz: Tz,
        interner: &mut Interner,
        now: DateTime<Utc>,
        job: Option<&str>,
    ) -> Option<(Schedule, Option<DateTime<Utc>>)> {
        let given: Vec<(&str, std::ops::Range<usize>)> = [
            ("schedule", raw.schedule.as_ref().map(Spanned::span)),
            ("rrule", raw.rrule.as_ref().map(Spanned::span)),
            ("at", raw.at.as_ref().map(Spanned::span)),
        ]
        .into_iter()
        .filter_map(|(k, s)| s.map(|s| (k, s)))
        .collect();
        if let [(first, _), (second, span), ..] = given.as_slice() {
            self.at(
                Some(span.clone()),
                job,
                format!("both `{first}` and `{second}` are set; a job has exactly one of `schedule`, `rrule` or `at`"),
            );
            return None;
        }
        if raw.rrule.is_none() {
            for (key, span) in [
                ("start", raw.start.as_ref().map(Spanned::span)),
                ("until", raw.until.as_ref().map(Spanned::span)),
                ("count", raw.count.as_ref().map(Spanned::span)),
            ] {
                if let Some(span) = span {
                    self.at(
                        Some(span),
                        job,
                        format!("`{key}` belongs to an `rrule`, and this job has none"),
                    );
                }
            }
        }
        if let Some(expr) = &raw.schedule {
            return self.cron(expr, tz, interner, now, job);
        }
        let (result, span) = if let Some(rule) = &raw.rrule {
            let Some(start) = &raw.start else {
                self.at(
                    Some(rule.span()),
                    job,
                    "`rrule` needs a `start`: its first occurrence, a local time like \"2026-01-05T09:00\"",
                );
                return None;
            };
            let count = match raw.count.as_ref().map(|c| (c, u32::try_from(*c.get_ref()))) {
                None => None,
                Some((_, Ok(n))) if n > 0 => Some(n),
                Some((c, _)) => {
                    self.at(Some(c.span()), job, "`count` must be a whole number from 1");
                    return None;
                }
            };
            let spec = RuleSpec {
                rrule: rule.get_ref(),
                start: start.get_ref(),
                until: raw.until.as_ref().map(|u| u.get_ref().as_str()),
                count,
                allow_frequent: raw.allow_frequent.unwrap_or(false),
            };
            let e = Schedule::rule(&spec, tz);
            // Point at the key the problem is about.
            let span = match &e {
                Err(e) if e.0.starts_with("start:") => start.span(),
                Err(e) if e.0.starts_with("until:") => {
                    raw.until.as_ref().map_or(rule.span(), Spanned::span)
                }
                _ => rule.span(),
            };
            (e, span)
        } else if let Some(at) = &raw.at {
            (Schedule::at(&at.get_ref().items(), tz), at.span())
        } else {
            if !raw
                .stripped
                .iter()
                .any(|k| k == "schedule" || k == "rrule" || k == "at")
            {
                self.at(
                    Some(raw.name.as_ref().map_or(raw.span.clone(), Spanned::span)),
                    job,
                    "missing `schedule`: a cron expression such as \"0 9 * * MON\" (Mondays at 09:00); or an `rrule` with its `start`, or `at` one-shot times",
                );
            }
            return None;
        };
        match result {
            Ok(s) => {
                let first = s.validate(now).ok();
                Some((s, first))
            }
            Err(e) => {
                self.at(Some(span), job, e.to_string());
                None
            }
        }
    }

    fn cron(
        &mut self,
        raw: &Spanned<String>,
        tz: Tz,
        interner: &mut Interner,
        now: DateTime<Utc>,
        job: Option<&str>,
    ) -> Option<(Schedule, Option<DateTime<Utc>>)> {
        match interner.parse_validated(raw.get_ref(), tz, now) {
            Ok((s, fires)) => match fires {
                Ok(t) => Some((s, Some(t))),
                Err(e) => {
                    self.at(Some(raw.span()), job, e.to_string());
                    Some((s, None))
                }
            },
            Err(e) => {
                self.at(
                    Some(raw.span()),
                    job,
                    format!("invalid schedule `{}`: {e}", raw.get_ref()),
                );
                None
            }
        }
    }
}

impl Validator<'_> {
    /// The schedule with the job's omitted days (its own `omit`, or `[defaults]`'s),
    /// and its first occurrence after `now` once they are taken out. A schedule that
    /// no longer fires because of them is an error; one-shot times or a rule that are
    /// all in the past are a warning (they are sent only as the catch-up policy allows).
    pub(super) fn omitted(
        &mut self,
        raw: &RawJob,
        defaults: &super::Defaults,
        schedule: Schedule,
        first: Option<DateTime<Utc>>,
        now: DateTime<Utc>,
        job: Option<&str>,
    ) -> (Schedule, Option<DateTime<Utc>>) {
        let span = [raw.schedule.as_ref(), raw.rrule.as_ref()]
            .into_iter()
            .flatten()
            .map(Spanned::span)
            .next()
            .or_else(|| raw.at.as_ref().map(Spanned::span))
            .unwrap_or_else(|| raw.span.clone());
        let on_omit = match &raw.on_omit {
            Some(o) => self.on_omit(o, job),
            None => defaults.on_omit,
        };
        let items = raw.omit.as_ref().or(defaults.omit.as_ref());
        let omit = match (items, on_omit) {
            (Some(items), Some(on_omit)) if !items.get_ref().is_empty() => {
                let calendars = std::mem::take(&mut self.calendars);
                let mut cache = std::mem::take(&mut self.omit_cache);
                let omit = self.omit(items, on_omit, &calendars, &mut cache, job);
                self.calendars = calendars;
                self.omit_cache = cache;
                omit
            }
            _ => None,
        };
        if raw.rrule.is_some() && first.is_none() {
            let epoch = DateTime::<Utc>::UNIX_EPOCH;
            if schedule.next_after(epoch).is_none() {
                self.at(
                    Some(span),
                    job,
                    format!(
                        "`{}` never fires: the rule has no occurrence at all",
                        schedule.expr()
                    ),
                );
                return (schedule, None);
            }
        }
        if raw.schedule.is_none() && first.is_none() {
            let what = if raw.at.is_some() {
                "every `at` time is"
            } else {
                "every occurrence of the rule is"
            };
            self.warn(
                Some(span),
                job,
                format!(
                    "{what} in the past: nothing more will be sent, except what the catch-up policy still sends at start-up"
                ),
            );
            return (
                omit.map_or(schedule.clone(), |o| schedule.with_omit(o)),
                None,
            );
        }
        let Some(omit) = omit else {
            return (schedule, first);
        };
        let schedule = schedule.with_omit(omit);
        match schedule.validate(now) {
            Ok(t) => (schedule, Some(t)),
            Err(e) => {
                if first.is_some() {
                    self.at(Some(span), job, e.to_string());
                }
                (schedule, None)
            }
        }
    }
}
