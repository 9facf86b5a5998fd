//! `[[job]]`: a name, a schedule in a zone, the sender and recipients, templates, and
//! what to do with missed occurrences. Templates are test-rendered for the job's first
//! occurrence, so that an undefined variable shows at `check`, not at 9:00 on Monday.

use std::ops::Range;
use std::path::PathBuf;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use lettre::message::Mailbox;
use toml::Spanned;

use super::{Defaults, Validator};
use crate::config::diagnostic::Diagnostic;
use crate::config::raw::RawJob;
use crate::config::types::{Job, MAX_JOB_NAME, MAX_RECIPIENTS, header_control};
use crate::render::{Part, Templates, Vars};
use crate::schedule::{Interner, Schedule};

/// Where a template's text came from, to point errors at the right file and line.
pub(super) enum TemplateOrigin {
    Inline(Range<usize>),
    File(PathBuf),
}

/// A job's templates and where each came from.
pub(super) type Origins = Vec<(Part, TemplateOrigin)>;

/// Sender and recipients of one job.
struct Addresses {
    from: Option<Mailbox>,
    to: Vec<Mailbox>,
    cc: Vec<Mailbox>,
    bcc: Vec<Mailbox>,
    reply_to: Option<Mailbox>,
}

impl Validator<'_> {
    pub(super) fn job(
        &mut self,
        raw: RawJob,
        defaults: &Defaults,
        templates: &mut Templates,
        interner: &mut Interner,
        now: DateTime<Utc>,
    ) -> Option<(Job, Origins)> {
        let errors_before = self.errors();
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
        let (schedule, first) = match tz {
            Some(tz) => self.schedule(&raw.schedule, tz, interner, now, job),
            None => (None, None),
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
        let origins = self.templates(&raw, &name, templates);

        if self.errors() > errors_before {
            // The job is invalid and will not be test-rendered: still report its
            // template mistakes now, with everything else.
            for (part, origin) in &origins {
                if let Err(e) = templates.check(&name, *part) {
                    self.template_error(origin, &name, *part, e.line, &e.message);
                }
            }
            return None;
        }
        let vars: Vars = raw
            .vars
            .into_iter()
            .map(|(k, v)| (k, v.into_inner()))
            .collect();
        Some((
            Job {
                name: name.into(),
                schedule: schedule?,
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
            },
            origins,
        ))
    }

    /// The schedule, and its first occurrence after `now` (a schedule that never fires
    /// is reported, and still returned so that the job's other problems show).
    fn schedule(
        &mut self,
        raw: &Spanned<String>,
        tz: Tz,
        interner: &mut Interner,
        now: DateTime<Utc>,
        job: Option<&str>,
    ) -> (Option<Schedule>, Option<DateTime<Utc>>) {
        match interner.parse_validated(raw.get_ref(), tz, now) {
            Ok((s, fires)) => match fires {
                Ok(t) => (Some(s), Some(t)),
                Err(e) => {
                    self.at(Some(raw.span()), job, e.to_string());
                    (Some(s), None)
                }
            },
            Err(e) => {
                self.at(
                    Some(raw.span()),
                    job,
                    format!("invalid schedule `{}`: {e}", raw.get_ref()),
                );
                (None, None)
            }
        }
    }

    fn addresses(&mut self, raw: &RawJob, defaults: &Defaults, job: Option<&str>) -> Addresses {
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
        let list = |v: &mut Self, items: &[Spanned<String>], key: &str| -> Vec<Mailbox> {
            items
                .iter()
                .filter_map(|s| v.mailbox(s, job, key))
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
        Addresses {
            from,
            to,
            cc,
            bcc,
            reply_to,
        }
    }

    /// Keeps the source of each template (inline, or read from its `*_file`).
    fn templates(&mut self, raw: &RawJob, name: &str, templates: &mut Templates) -> Origins {
        let job = Some(name);
        let mut origins = Vec::new();
        let parts = [
            (Part::Subject, Some(&raw.subject), None, true),
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
                    if required {
                        self.at(
                            Some(raw.name.span()),
                            job,
                            format!("missing `{key}` (or `{key}_file`)"),
                        );
                    }
                    continue;
                }
            };
            templates.add(name, part, source);
            origins.push((part, origin));
        }
        origins
    }

    /// Renders every template of every valid job for its first occurrence.
    pub(super) fn test_render(&mut self, jobs: &[Job], origins: &[Origins], templates: &Templates) {
        for (job, spans) in jobs.iter().zip(origins) {
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
