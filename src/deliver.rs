//! One occurrence, end to end: load the configuration and its transport, prepare the
//! message (render, compose), send it, and the log line that says how it went.
//!
//! Shared by the daemon and by `cronmail send`, so a manual test sends exactly what the
//! daemon would, and both log `sent` and `not sent` the same way, from `log_outcome`.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use lettre::message::Mailbox;
use tracing::{error, info};

use crate::config::{self, Config, Diagnostics, Host, Job};
use crate::failure::{ErrorClass, Failure, Phase};
use crate::mail::{Delivered, MakeTransport, Transport};
use crate::message::{self, ComposeError, Outgoing};
use crate::recipients::Row;
use crate::render::{Part, TemplateError};
use crate::secret::SecretError;

/// A loaded configuration and the transport built for it: what one generation of the
/// daemon runs on, swapped whole at a reload.
pub struct Loaded {
    pub config: Arc<Config>,
    /// One per account, in the order of `config.accounts`.
    pub transports: Vec<Arc<dyn Transport>>,
}

impl Loaded {
    /// Where messages go, for the start-up line: `smtp.example.com:587`, or with
    /// several accounts `default=smtp.example.com:587, billing=...`.
    pub fn destinations(&self) -> String {
        if self.transports.len() == 1 {
            return self.transports[0].destination();
        }
        let each: Vec<String> = self
            .config
            .accounts
            .iter()
            .zip(&self.transports)
            .map(|(a, t)| format!("{}={}", a.name, t.destination()))
            .collect();
        each.join(", ")
    }

    /// The transport of account `i` (an index in `config.accounts`).
    pub fn transport(&self, i: usize) -> &Arc<dyn Transport> {
        &self.transports[i]
    }
}

/// Why a configuration could not be loaded (at start-up, at a reload, for `send`).
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("{0}")]
    Config(Diagnostics),
    #[error("reading the SMTP password: {0}")]
    Secret(#[from] SecretError),
    #[error("setting up the mailer: {0}")]
    Transport(Failure),
}

/// Loads jobs.toml, reads each account's password, builds each account's transport.
pub async fn load(path: &Path, host: &Host, make: &MakeTransport) -> Result<Loaded, LoadError> {
    let config = config::load(path, host).map_err(LoadError::Config)?;
    let mut transports = Vec::with_capacity(config.accounts.len());
    for account in &config.accounts {
        let password = match &account.transport {
            config::TransportConfig::Smtp(s) => match &s.password {
                Some(src) => Some(src.read().await?),
                None => None,
            },
            config::TransportConfig::Outbox { .. } => None,
        };
        transports.push(make(&config, account, password).map_err(LoadError::Transport)?);
    }
    Ok(Loaded {
        config: Arc::new(config),
        transports,
    })
}

/// Why one occurrence was not delivered.
#[derive(Debug, thiserror::Error)]
pub enum DeliverError {
    #[error("rendering template `{}`: {}", .0.key(), .1)]
    Render(Part, TemplateError),
    #[error("{0}")]
    Compose(#[from] ComposeError),
    #[error("{0}")]
    Attach(#[from] crate::message::attach::AttachError),
    /// Not an error: the job says to skip this occurrence (a missing attachment).
    #[error("{0}")]
    Skipped(String),
    #[error("{0}")]
    Send(#[from] Failure),
    /// The ledger could not record the attempt's start; nothing was sent.
    #[error("the ledger: {0}")]
    Ledger(Arc<crate::ledger::LedgerError>),
}

impl DeliverError {
    /// The class that decides what happens next: a message that cannot be built is a
    /// permanent failure (retrying cannot help); a ledger that cannot record is local.
    pub fn class(&self) -> ErrorClass {
        match self {
            DeliverError::Send(e) => e.class,
            DeliverError::Ledger(_) => ErrorClass::Local,
            DeliverError::Attach(e) => e.class(),
            DeliverError::Render(..) | DeliverError::Compose(_) | DeliverError::Skipped(_) => {
                ErrorClass::Permanent
            }
        }
    }

    /// What the ledger keeps of it: the server's reply with its code (`550 5.1.1 ...`),
    /// else the failure in words.
    pub fn reply(&self) -> String {
        match self {
            DeliverError::Send(e) => match (e.code, &e.reply) {
                (Some(code), Some(reply)) => format!("{code} {reply}"),
                _ => e.detail.clone(),
            },
            other => other.to_string(),
        }
    }
}

/// Renders and composes one occurrence of `job`. `date` is the Date header's instant.
pub fn prepare(
    config: &Config,
    job: &Job,
    occurrence: DateTime<Utc>,
    date: DateTime<Utc>,
    redirect: Option<&[Mailbox]>,
    row: Option<&Arc<Row>>,
) -> Result<Outgoing, DeliverError> {
    let rendered = config
        .templates
        .render_row(
            &job.base,
            job.occasion(occurrence),
            job.tz(),
            &job.vars,
            row.map(|r| &r.columns),
        )
        .map_err(|(part, e)| DeliverError::Render(part, e))?;
    let mut extras = extras(job, &rendered, occurrence, date, redirect, row)?;
    extras.row = row.cloned();
    Ok(message::compose(
        job, &rendered, occurrence, date, redirect, &extras,
    )?)
}

/// The files and the invitation of one send.
fn extras(
    job: &Job,
    rendered: &crate::render::Rendered,
    occurrence: DateTime<Utc>,
    date: DateTime<Utc>,
    redirect: Option<&[Mailbox]>,
    row: Option<&Arc<Row>>,
) -> Result<message::Extras, DeliverError> {
    let mut extras = message::Extras::default();
    if let Some(a) = &job.attachments {
        match message::attach::load(a, &rendered.attach)? {
            message::attach::Found::Skip(path) => {
                return Err(DeliverError::Skipped(format!(
                    "the attachment `{}` is not there (on_missing_attachment = \"skip\")",
                    path.display()
                )));
            }
            message::attach::Found::Files { files, missing } => {
                for path in missing {
                    tracing::warn!(job = %job.name, occurrence = %utc(occurrence), path = %path.display(), "sending without the attachment `{}`: it is not there (on_missing_attachment = \"send\")", path.display());
                }
                extras.files = files;
            }
        }
    }
    if let (Some(invite), Some(text)) = (&job.invite, &rendered.invite) {
        let attendees: Vec<Mailbox> = match (redirect, row) {
            (Some(to), _) => to.to_vec(),
            (None, Some(row)) => std::iter::once(&row.to)
                .chain(job.cc.iter())
                .cloned()
                .collect(),
            (None, None) => job.to.iter().chain(job.cc.iter()).cloned().collect(),
        };
        let event = message::invite::Event {
            job,
            invite,
            text,
            starts: job.schedule.event_of(occurrence),
            stamp: date,
            attendees: &attendees,
            row: row.map(|r| &*r.key),
        };
        extras.invite = Some((message::invite::ics(&event), invite.method));
    }
    Ok(extras)
}

/// For `render` and `send` of a job with a `recipients_file`: its first row (said on
/// stderr), or why there is none. `None` for a job without one.
pub fn first_row(job: &Job) -> Result<Option<Arc<Row>>, String> {
    let Some(path) = &job.recipients_file else {
        return Ok(None);
    };
    let rows = crate::recipients::read(path).map_err(|e| format!("`recipients_file`: {e}"))?;
    let Some(row) = rows.rows.first() else {
        return Err(format!("`{}` has no rows to send", path.display()));
    };
    let _ = std::io::Write::write_fmt(
        &mut std::io::stderr(),
        format_args!(
            "note: the message of the first of {} rows of `{}` (line {}, `{}`)\n",
            rows.rows.len(),
            path.display(),
            row.line,
            row.key
        ),
    );
    Ok(Some(Arc::clone(row)))
}

/// One attempt's result: the message (when it could be built) and the server's answer.
pub struct Sent {
    pub out: Outgoing,
    pub delivered: Delivered,
}

/// Renders and sends one occurrence (or one row's message of it) through `account`
/// (the job's own, or its fallback). `now` is the Date header's instant.
pub async fn deliver(
    loaded: &Loaded,
    job: &Job,
    account: usize,
    (occurrence, row): (DateTime<Utc>, Option<&Arc<Row>>),
    now: DateTime<Utc>,
    redirect: Option<&[Mailbox]>,
) -> Result<Sent, (Option<String>, DeliverError)> {
    let out =
        prepare(&loaded.config, job, occurrence, now, redirect, row).map_err(|e| (None, e))?;
    match loaded.transport(account).send(&out).await {
        Ok(delivered) => Ok(Sent { out, delivered }),
        Err(e) => Err((Some(out.message_id), e.into())),
    }
}

/// An instant as the `occurrence` field of every log line: UTC, RFC 3339, with `Z`, so
/// that one `journalctl OCCURRENCE=...` finds every line about it.
pub fn utc(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// The same instant in the job's zone, for the `local` field beside it.
pub fn local(job: &Job, t: DateTime<Utc>) -> String {
    t.with_timezone(&job.tz())
        .to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// What one attempt was about, for its log line.
pub struct LogContext<'a> {
    pub job: &'a Job,
    /// The row of a `recipients_file` the message was for.
    pub row: Option<&'a str>,
    pub occurrence: DateTime<Utc>,
    pub attempt: u32,
    pub transport: &'a dyn Transport,
    pub elapsed: Duration,
    /// How late the fire was handed off, when more than a second, and whether it was a
    /// missed occurrence sent by the catch-up policy.
    pub late: Option<(Duration, bool)>,
}

/// The one place that logs an attempt's outcome: INFO `sent` with the server's reply,
/// or ERROR `not sent` with the class, the exact reply, the hint, and what happens
/// next (`then`).
pub fn log_outcome(
    a: &LogContext<'_>,
    outcome: Result<&Sent, (Option<&str>, &DeliverError)>,
    then: &str,
) {
    let elapsed_ms = u64::try_from(a.elapsed.as_millis()).unwrap_or(u64::MAX);
    let late_ms = a
        .late
        .map(|(l, _)| u64::try_from(l.as_millis()).unwrap_or(u64::MAX));
    let caught_up = a.late.map(|(_, c)| c);
    match outcome {
        Ok(sent) => info!(
            job = %a.job.name,
            row = a.row,
            occurrence = %utc(a.occurrence),
            local = %local(a.job, a.occurrence),
            attempt = a.attempt,
            recipients = sent.out.recipient_count(),
            message_id = %sent.out.message_id,
            smtp_code = sent.delivered.code,
            transport = a.transport.kind(),
            reply = %sent.delivered.reply,
            elapsed_ms,
            late_ms,
            caught_up,
            "sent"
        ),
        Err((message_id, DeliverError::Send(e))) => error!(
            job = %a.job.name,
            row = a.row,
            occurrence = %utc(a.occurrence),
            local = %local(a.job, a.occurrence),
            message_id = message_id.unwrap_or(""),
            attempt = a.attempt,
            server = %a.transport.destination(),
            username = a.transport.username(),
            class = %e.class,
            phase = e.phase.map_or("", Phase::name),
            smtp_code = e.code.unwrap_or(0),
            reply = e.reply.as_deref().unwrap_or(""),
            hint = e.hint.as_deref().unwrap_or(""),
            elapsed_ms,
            then,
            "not sent: {e}"
        ),
        Err((_, other @ DeliverError::Attach(_))) => error!(
            job = %a.job.name,
            row = a.row,
            occurrence = %utc(a.occurrence),
            local = %local(a.job, a.occurrence),
            attempt = a.attempt,
            class = %other.class(),
            then,
            "not sent: {other}"
        ),
        Err((_, other)) => error!(
            job = %a.job.name,
            row = a.row,
            occurrence = %utc(a.occurrence),
            local = %local(a.job, a.occurrence),
            attempt = a.attempt,
            class = if matches!(other, DeliverError::Ledger(_)) { "local" } else { "render" },
            error = %other,
            then,
            "not sent: the message could not be built"
        ),
    }
}
