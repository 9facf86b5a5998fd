//! What a job's messages carry besides their text: `attach` (files read at send time)
//! and `[job.invite]` (a calendar invitation).

use std::sync::Arc;
use std::time::Duration;

use toml::Spanned;

use super::Validator;
use super::job::{Origins, TemplateOrigin, keep};
use crate::config::raw::RawJob;
use crate::config::types::{Attachments, DEFAULT_ATTACH_MAX, Invite, Method, OnMissing};
use crate::render::{Part, Templates};

/// How many problems of one recipients file are reported (the rest are counted).
const MAX_LIST_PROBLEMS: usize = 20;

/// Most attachments one job may name.
const MAX_ATTACH: usize = 32;

impl Validator<'_> {
    /// `recipients_file` (read now: every problem with its line) and `list_unsubscribe`.
    /// The first row is kept to test-render the templates with (`row.*`).
    pub(super) fn recipients_file(
        &mut self,
        raw: &RawJob,
        name: &std::sync::Arc<str>,
        templates: &mut Templates,
        origins: &mut Origins,
    ) -> Option<Arc<std::path::PathBuf>> {
        let job = Some(&**name);
        if let Some(u) = &raw.list_unsubscribe {
            let origin = (Part::Unsubscribe, TemplateOrigin::Inline(u.span()));
            keep(templates, origins, name, origin, u.get_ref().clone());
        }
        let file = raw.recipients_file.as_ref()?;
        let path = self.resolve(file.get_ref());
        if let Some(to) = &raw.to {
            self.at(
                Some(to.span()),
                job,
                "with `recipients_file`, each row is the message's To; put addresses every message goes to in `cc` or `bcc`",
            );
        }
        let rows = match crate::recipients::read(&path) {
            Ok(rows) => rows,
            Err(e) => {
                self.at(Some(file.span()), job, format!("`recipients_file`: {e}"));
                return None;
            }
        };
        let shown = rows.problems.len().min(MAX_LIST_PROBLEMS);
        for p in &rows.problems[..shown] {
            self.diags.push(crate::config::Diagnostic {
                path: path.clone(),
                location: p
                    .line
                    .map(|l| (usize::try_from(l).unwrap_or(usize::MAX), 1)),
                job: Some(name.to_string()),
                message: format!("recipients_file: {}", p.message),
                warning: false,
                snippet: None,
            });
        }
        if rows.problems.len() > shown {
            self.at(
                Some(file.span()),
                job,
                format!(
                    "`recipients_file` has {} more problems",
                    rows.problems.len() - shown
                ),
            );
        }
        match rows.rows.first() {
            Some(first) => {
                self.first_rows
                    .insert(name.to_string(), (first.columns.clone(), rows.rows.len()));
            }
            None if rows.problems.is_empty() => {
                self.warn(
                    Some(file.span()),
                    job,
                    format!("`{}` has no rows: nothing is sent", path.display()),
                );
            }
            None => {}
        }
        Some(Arc::new(path))
    }

    /// `attach`, `attach_dir`, `attach_max_bytes` and `on_missing_attachment`. The paths
    /// are templates, kept with the job's others (and test-rendered with them).
    pub(super) fn attachments(
        &mut self,
        raw: &RawJob,
        name: &std::sync::Arc<str>,
        templates: &mut Templates,
        origins: &mut Origins,
    ) -> Option<Arc<Attachments>> {
        let job = Some(&**name);
        let Some(list) = &raw.attach else {
            for (key, span) in [
                ("attach_dir", raw.attach_dir.as_ref().map(Spanned::span)),
                (
                    "attach_max_bytes",
                    raw.attach_max_bytes.as_ref().map(Spanned::span),
                ),
                (
                    "on_missing_attachment",
                    raw.on_missing_attachment.as_ref().map(Spanned::span),
                ),
            ] {
                if let Some(span) = span {
                    self.warn(
                        Some(span),
                        job,
                        format!("`{key}` has no effect without `attach`"),
                    );
                }
            }
            return None;
        };
        if list.get_ref().len() > MAX_ATTACH {
            self.at(
                Some(list.span()),
                job,
                format!("at most {MAX_ATTACH} attachments per job"),
            );
        }
        for (i, path) in list.get_ref().iter().take(MAX_ATTACH).enumerate() {
            if path.get_ref().trim().is_empty() {
                self.at(Some(path.span()), job, "an attachment path is empty");
                continue;
            }
            let part = Part::Attach(u8::try_from(i).unwrap_or(u8::MAX));
            let origin = (part, TemplateOrigin::Inline(path.span()));
            keep(templates, origins, name, origin, path.get_ref().clone());
        }
        let dir = match &raw.attach_dir {
            Some(d) => {
                let dir = self.resolve(d.get_ref());
                if !dir.is_dir() {
                    self.warn(
                        Some(d.span()),
                        job,
                        format!("`attach_dir`: `{}` is not a folder (yet)", dir.display()),
                    );
                }
                dir
            }
            None => self.dir.clone(),
        };
        let max_bytes = match &raw.attach_max_bytes {
            Some(n) => match u64::try_from(*n.get_ref()) {
                Ok(n) if n > 0 => n,
                _ => {
                    self.at(
                        Some(n.span()),
                        job,
                        "`attach_max_bytes` must be a positive number of bytes",
                    );
                    DEFAULT_ATTACH_MAX
                }
            },
            None => DEFAULT_ATTACH_MAX,
        };
        let on_missing = match raw.on_missing_attachment.as_ref() {
            None => OnMissing::Fail,
            Some(s) => match s.get_ref().as_str() {
                "fail" => OnMissing::Fail,
                "send" => OnMissing::Send,
                "skip" => OnMissing::Skip,
                other => {
                    self.at(
                        Some(s.span()),
                        job,
                        format!("unknown `on_missing_attachment` `{other}`; expected `fail`, `send` or `skip`"),
                    );
                    OnMissing::Fail
                }
            },
        };
        Some(Arc::new(Attachments {
            base: self.dir.clone(),
            dir,
            max_bytes,
            on_missing,
        }))
    }

    /// `[job.invite]`: its texts are templates; `summary` defaults to the subject.
    pub(super) fn invite(
        &mut self,
        raw: &RawJob,
        name: &std::sync::Arc<str>,
        templates: &mut Templates,
        origins: &mut Origins,
    ) -> Option<Arc<Invite>> {
        let job = Some(&**name);
        let invite = raw.invite.as_ref()?.get_ref();
        for (part, text) in [
            (Part::InviteSummary, &invite.summary),
            (Part::InviteLocation, &invite.location),
            (Part::InviteDescription, &invite.description),
        ] {
            if let Some(t) = text {
                let origin = (part, TemplateOrigin::Inline(t.span()));
                keep(templates, origins, name, origin, t.get_ref().clone());
            }
        }
        templates.add_invite(name);
        let mut duration = |d: &Option<Spanned<String>>, key: &str| -> Option<Duration> {
            let d = d.as_ref()?;
            let parsed = self.duration(d, key)?;
            if parsed > Duration::from_secs(366 * 24 * 3600) {
                self.at(
                    Some(d.span()),
                    job,
                    format!("`{key}` must be at most a year"),
                );
                return None;
            }
            Some(parsed)
        };
        let length = duration(&invite.duration, "duration").unwrap_or(Duration::from_secs(1800));
        let alarm = duration(&invite.alarm, "alarm");
        let method = match invite.method.as_ref() {
            None => Method::Publish,
            Some(m) => {
                match m.get_ref().to_ascii_uppercase().as_str() {
                    "PUBLISH" => Method::Publish,
                    "REQUEST" => Method::Request,
                    other => {
                        self.at(
                        Some(m.span()),
                        job,
                        format!("unknown invitation `method` `{other}`; expected `PUBLISH` or `REQUEST`"),
                    );
                        Method::Publish
                    }
                }
            }
        };
        Some(Arc::new(Invite {
            duration: length,
            method,
            alarm,
        }))
    }
}
