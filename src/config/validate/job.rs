//! `[[job]]`: a name, a schedule in a zone, the sender and recipients, templates, and
//! what to do with missed occurrences. Templates are test-rendered for the job's first
//! occurrence, so that an undefined variable shows at `check`, not at 9:00 on Monday.

use std::ops::Range;
use std::path::PathBuf;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use lettre::message::Mailbox;
use toml::Spanned;

use super::trial::Found;
use super::{Defaults, Validator};
use crate::config::diagnostic::Diagnostic;
use crate::config::raw::RawJob;
use crate::config::types::{Job, MAX_JOB_NAME, MAX_RECIPIENTS};
use crate::render::{Part, Source, Templates, Vars};
use crate::schedule::{Interner, Schedule};

/// Where a template's text came from, to point errors at the right file and line.
pub(super) enum TemplateOrigin {
    Inline(Range<usize>),
    File(PathBuf),
}

/// A job's templates: each part, where it came from, and its source as kept.
pub(super) type Origins = Vec<(Part, TemplateOrigin, Source)>;

/// One template of a valid job, for the test render after the loop: the job (an
/// index in the jobs), its file, and where the template came from. The loop keeps
/// them in one flat list: a list a job, alive until the end of loading and freed
/// then, left a hole of about 150 bytes a job between the jobs' own allocations,
/// which the settled daemon carried as resident memory.
pub(super) struct Rendered {
    pub(super) job: usize,
    pub(super) file: usize,
    pub(super) part: Part,
    pub(super) origin: TemplateOrigin,
}

/// Keeps one template of job `name` in `templates`, and where it came from.
pub(super) fn keep(
    templates: &mut Templates,
    origins: &mut Origins,
    name: &Arc<str>,
    (part, origin): (Part, TemplateOrigin),
    text: String,
) {
    let source = templates.add(name, part, text);
    origins.push((part, origin, source));
}

/// Sender and recipients of one job.
struct Addresses {
    from: Option<Arc<Mailbox>>,
    to: Arc<[Mailbox]>,
    cc: Arc<[Mailbox]>,
    bcc: Arc<[Mailbox]>,
    reply_to: Option<Box<Mailbox>>,
}

impl Validator<'_> {
    /// Validates one `[[job]]`. `known` is its name when the caller already holds it
    /// (shared, rather than copied again); `origins` is emptied and receives where
    /// each of its templates came from.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn job(
        &mut self,
        raw: RawJob,
        known: Option<Arc<str>>,
        defaults: &Defaults,
        templates: &mut Templates,
        interner: &mut Interner,
        now: DateTime<Utc>,
        origins: &mut Origins,
    ) -> Option<(Job, Vec<u32>)> {
        let errors_before = self.errors();
        // Shared by the job and its templates' entry.
        let name = self.job_name(&raw, known);
        let job = (!name.is_empty()).then_some(&*name);

        let account = self.job_account(&raw, &defaults.accounts, job);
        let tz = match &raw.timezone {
            Some(tz) => self.tz(tz, job),
            None => defaults.tz,
        };
        let (schedule, first) = match tz {
            Some(tz) => match self.when(&raw, tz, interner, now, job) {
                Some((s, first)) => {
                    let smtp = account
                        .and_then(|a| defaults.accounts.names.get(a))
                        .is_some_and(|(_, smtp, _)| *smtp);
                    if let (Some(expr), Some(first)) = (&raw.schedule, first) {
                        self.schedule_warnings(expr, &s, first, smtp, job);
                    }
                    let (s, first) = self.omitted(&raw, defaults, s, first, now, job);
                    (Some(s), first)
                }
                None => (None, None),
            },
            None => (None, None),
        };
        let ping_url = self.ping_url(&raw, defaults, job);
        let lead = match &raw.before {
            Some(b) => self.before(b, job),
            None => Some(vec![0]),
        };
        let addresses = self.addresses(&raw, defaults, job);
        let catch_up = raw
            .catch_up
            .as_ref()
            .map_or(defaults.catch_up, |c| self.catch_up(c, job));
        let max_late = raw
            .max_late
            .as_ref()
            .map_or(defaults.max_late, |d| self.duration(d, "max_late"));
        origins.clear();
        self.templates(&raw, &name, templates, origins);
        let attachments = self.attachments(&raw, &name, templates, origins);
        let invite = self.invite(&raw, &name, templates, origins);
        let recipients_file = self.recipients_file(&raw, &name, templates, origins);
        if let Some(a) = account {
            let rows = self.first_rows.get(&*name).map(|(_, n)| *n);
            let to = if rows.is_some() {
                1
            } else {
                addresses.to.len()
            };
            let per_message = to + addresses.cc.len() + addresses.bcc.len();
            self.recipients_warning(&raw, &defaults.accounts, a, (per_message, rows), job);
        }

        let vars: Vars = raw
            .vars
            .into_iter()
            .map(|(k, v)| (k, v.into_inner()))
            .collect();
        let complete = account.is_some()
            && schedule.is_some()
            && lead.is_some()
            && addresses.from.is_some()
            && catch_up.is_some()
            && max_late.is_some();
        if self.errors() > errors_before || !complete {
            // The job is invalid and will not be test-rendered with the others: still
            // render its templates now (for its first occurrence, or for now), so that
            // their mistakes show in the same pass as everything else.
            let at = first.unwrap_or(now);
            let tz = tz.unwrap_or(chrono_tz::UTC);
            let row = self.first_rows.get(&*name).map(|(r, _)| r.clone());
            for (part, origin, _) in origins.iter() {
                if let Err(e) = templates.render_with(&name, *part, at, tz, &vars, row.as_ref()) {
                    self.template_error(origin, &name, *part, e.line, &e.message);
                }
            }
            return None;
        }
        Some((
            Job {
                schedule: schedule?,
                account: account?,
                from: addresses.from?,
                to: addresses.to,
                cc: addresses.cc,
                bcc: addresses.bcc,
                reply_to: addresses.reply_to,
                vars,
                enabled: raw.enabled.unwrap_or(true),
                catch_up: catch_up?,
                max_late: max_late?,
                first,
                base: Arc::clone(&name),
                name,
                ping_url,
                attachments,
                invite,
                recipients_file,
            },
            lead?,
        ))
    }

    /// The job's `name`, reported when missing or malformed (then possibly empty);
    /// `known` when it is the same text.
    fn job_name(&mut self, raw: &RawJob, known: Option<Arc<str>>) -> Arc<str> {
        let Some(raw_name) = &raw.name else {
            self.at(
                Some(raw.span.clone()),
                None,
                "missing `name`: every [[job]] needs one, e.g. `name = \"weekly-report\"`",
            );
            return Arc::from("");
        };
        let name = match known {
            Some(k) if *k == **raw_name.get_ref() => k,
            _ => Arc::from(raw_name.get_ref().as_str()),
        };

        if raw.name.is_some() && name.is_empty()
            || name.len() > MAX_JOB_NAME
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            self.at(
                Some(raw_name.span()),
                None,
                format!(
                    "job name `{}` must be 1 to {MAX_JOB_NAME} letters, digits, `-` or `_`",
                    name.escape_debug()
                ),
            );
        }

        name
    }

    /// The job's `ping_url`, else `[defaults]`'s.
    fn ping_url(
        &mut self,
        raw: &RawJob,
        defaults: &Defaults,
        job: Option<&str>,
    ) -> Option<crate::secret::SecretUrl> {
        self.secret_url(
            &super::ops::UrlKeys {
                key: "ping_url",
                literal: raw.ping_url.as_ref(),
                env: raw.ping_url_env.as_ref(),
                file: raw.ping_url_file.as_ref(),
                credential: raw.ping_url_credential.as_ref(),
            },
            job,
        )
        .or_else(|| defaults.ping_url.clone())
    }

    /// A valid schedule that is likely not what was meant. Worked out once per
    /// expression and zone: 10,000 jobs often share a few schedules.
    fn schedule_warnings(
        &mut self,
        raw: &Spanned<String>,
        s: &Schedule,
        first: DateTime<Utc>,
        smtp: bool,
        job: Option<&str>,
    ) {
        let key = (s.expr().to_owned(), s.tz(), smtp);
        let found = if let Some(found) = self.schedule_notes.get(&key) {
            found.clone()
        } else {
            let found = schedule_notes(s, first, smtp);
            self.schedule_notes.insert(key, found.clone());
            found
        };
        for note in found {
            let note = note.replace("{job}", job.unwrap_or("NAME"));
            self.warn(Some(raw.span()), job, note);
        }
    }

    fn addresses(&mut self, raw: &RawJob, defaults: &Defaults, job: Option<&str>) -> Addresses {
        let here = raw.name.as_ref().map_or(raw.span.clone(), Spanned::span);
        let from = if let Some(f) = &raw.from {
            self.mailbox(f, job, "from").map(Arc::new)
        } else {
            // A top-level `from` that is invalid was reported already: no second error.
            if defaults.from.is_none()
                && !defaults.from_given
                && !raw.stripped.iter().any(|k| k == "from")
            {
                self.at(
                    Some(here.clone()),
                    job,
                    "no sender: set `from` in the job or at the top of the file",
                );
            }
            defaults.from.clone()
        };
        let list = |v: &mut Self, items: &[Spanned<String>], key: &str| -> Arc<[Mailbox]> {
            let text: Vec<String> = items.iter().map(|s| s.get_ref().clone()).collect();
            if let Some(known) = v.lists.get(&text) {
                return Arc::clone(known);
            }
            let list: Arc<[Mailbox]> = items
                .iter()
                .filter_map(|s| v.mailbox(s, job, key))
                .collect();
            // Only a list read without a mistake is shared: a wrong one is reported
            // for every job that has it.
            if list.len() == items.len() {
                v.lists.insert(text, Arc::clone(&list));
            }
            list
        };
        let raw_to: &[Spanned<String>] = raw.to.as_ref().map_or(&[], |t| t.get_ref());
        let to_span = raw.to.as_ref().map_or(here, Spanned::span);
        let to = list(self, raw_to, "to");
        let cc = list(self, &raw.cc, "cc");
        let bcc = list(self, &raw.bcc, "bcc");
        let stripped = |k: &str| raw.stripped.iter().any(|s| s == k);
        let rows = raw.recipients_file.is_some();
        if raw_to.is_empty() && raw.cc.is_empty() && raw.bcc.is_empty() && !stripped("to") && !rows
        {
            let message = if raw.to.is_some() {
                "no recipients: `to` is empty"
            } else {
                "no recipients: set `to`, e.g. `to = [\"you@example.com\"]`"
            };
            self.at(Some(to_span.clone()), job, message);
        }
        let recipients = raw_to.len() + raw.cc.len() + raw.bcc.len();
        if recipients > MAX_RECIPIENTS {
            self.at(
                Some(to_span),
                job,
                format!("{recipients} recipients, more than the limit of {MAX_RECIPIENTS} per job"),
            );
        }
        let reply_to = raw
            .reply_to
            .as_ref()
            .and_then(|r| self.mailbox(r, job, "reply_to"))
            .map(Box::new);
        Addresses {
            from,
            to,
            cc,
            bcc,
            reply_to,
        }
    }

    /// Keeps the source of each template (inline, or read from its `*_file`).
    fn templates(
        &mut self,
        raw: &RawJob,
        name: &Arc<str>,
        templates: &mut Templates,
        origins: &mut Origins,
    ) {
        let job = Some(&**name);
        let parts = [
            (Part::Subject, raw.subject.as_ref(), None, true),
            (Part::Body, raw.body.as_ref(), raw.body_file.as_ref(), true),
            (Part::Html, raw.html.as_ref(), raw.html_file.as_ref(), false),
        ];
        for (part, inline, file, required) in parts {
            let key = part.key();
            let (source, origin) = match (inline, file) {
                (Some(s), None) => (s.get_ref().clone(), TemplateOrigin::Inline(s.span())),
                (None, Some(f)) => {
                    let path = self.resolve(f.get_ref());
                    let text = crate::files::read(&path, crate::files::MAX_TEMPLATE)
                        .map_err(|e| e.to_string())
                        .and_then(|b| {
                            String::from_utf8(b)
                                .map_err(|_| format!("`{}` is not valid UTF-8", path.display()))
                        });
                    match text {
                        Ok(text) => (text, TemplateOrigin::File(path)),
                        Err(e) => {
                            self.at(Some(f.span()), job, format!("`{key}_file`: {e}"));
                            continue;
                        }
                    }
                }
                (Some(s), Some(_)) => {
                    self.at(
                        Some(s.span()),
                        job,
                        format!("set only one of `{key}` and `{key}_file`"),
                    );
                    continue;
                }
                (None, None) => {
                    if required && !raw.stripped.iter().any(|k| k == key) {
                        self.at(
                            Some(raw.name.as_ref().map_or(raw.span.clone(), Spanned::span)),
                            job,
                            format!("missing `{key}` (or `{key}_file`)"),
                        );
                    }
                    continue;
                }
            };
            keep(templates, origins, name, (part, origin), source);
        }
    }

    /// Reports the mistakes the test render found (`trial`), numbered as `rendered`,
    /// in the file's order.
    pub(super) fn test_render(&mut self, jobs: &[Job], rendered: &[Rendered], found: Found) {
        for (i, (line, message)) in found {
            let r = &rendered[i];
            self.in_file(r.file);
            self.template_error(&r.origin, &jobs[r.job].base, r.part, line, &message);
        }
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
                    warning: false,
                    snippet: Some(crate::config::diagnostic::redact(self.src.line(location.0))),
                });
            }
            TemplateOrigin::File(path) => self.diags.push(Diagnostic {
                path: path.clone(),
                location: line.map(|l| (l, 1)),
                job: Some(job.to_owned()),
                message: format!("template `{key}_file`: {message}"),
                warning: false,
                snippet: None,
            }),
        }
    }
}

/// What is likely not meant about schedule `s`, whose first occurrence is `first`.
fn schedule_notes(s: &Schedule, first: DateTime<Utc>, smtp: bool) -> Vec<String> {
    let mut notes = Vec::new();
    let week = first + chrono::Duration::days(7);
    let expr = s.expr();
    let fields: Vec<&str> = expr.split_whitespace().collect();
    // `30 9 * * 1-5 *`: five fields and a stray one, read seconds first.
    if fields.len() == 6 {
        let five = fields[..5].join(" ");
        if let Ok(as_five) = Schedule::parse(&five, s.tz()) {
            // A plausible 5-field reminder fires at most hourly; the 6-field reading at
            // least. Each count stops as soon as it decides that, so an every-minute
            // 6-field schedule is walked a few hundred times, not ten thousand; only the
            // note's own figure walks further.
            let n5 = as_five.count_in(first - chrono::Duration::seconds(1), week, 7 * 24 + 1);
            let needed = (7 * 24).max(4 * n5.max(1) + 1);
            let likely = n5 <= 7 * 24 && 1 + s.count_in(first, week, needed - 1) >= needed;
            if likely {
                let n6 = 1 + s.count_in(first, week, 10_000);
                let many = if n6 > 10_000 {
                    "more than 10,000".to_owned()
                } else {
                    n6.to_string()
                };
                notes.push(format!(
                    "`{expr}` has 6 fields, so it is read seconds first ({}) and fires {many} times in the next week; \
                     if you meant the 5 fields `{five}` ({}), which fire {n5} times, remove the last one",
                    crate::schedule::explain(expr),
                    crate::schedule::explain(&five),
                ));
            }
        }
    }
    // A real server, mailed more than once an hour, is rarely meant.
    let hour = first + chrono::Duration::minutes(59) + chrono::Duration::seconds(59);
    if smtp && s.count_in(first, hour, 1) >= 1 {
        let per_hour = 1 + s.count_in(first, hour, 3_599);
        notes.push(format!(
            "`{expr}` fires {per_hour} times an hour, and [smtp] sends each as real mail; \
             check the schedule (`cronmail next --job {{job}} --count 5`)"
        ));
    }
    notes
}
