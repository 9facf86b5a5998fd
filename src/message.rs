//! One occurrence of a job -> the exact RFC 5322 bytes and the SMTP envelope.
//!
//! Pure, given the rendered parts and the instant used for the `Date` header. The
//! outbox writes these same bytes, so `render` and the outbox show what SMTP sends.

use std::fmt::Write as _;
use std::time::SystemTime;

use chrono::{DateTime, Utc};
use lettre::address::Envelope;
use lettre::message::header::{ContentType, HeaderName, HeaderValue};
use lettre::message::{Mailbox, MultiPart, SinglePart};
use sha2::{Digest, Sha256};

use crate::config::{Job, header_control};
use crate::render::Rendered;

/// A message ready for a transport.
#[derive(Clone, Debug)]
pub struct Outgoing {
    pub job: std::sync::Arc<str>,
    /// The occurrence's scheduled instant.
    pub occurrence: DateTime<Utc>,
    /// Without angle brackets.
    pub message_id: String,
    pub envelope: Envelope,
    pub bytes: Vec<u8>,
}

impl Outgoing {
    pub fn recipient_count(&self) -> usize {
        self.envelope.to().len()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ComposeError {
    #[error("the rendered subject contains {0}; header values must be one line")]
    HeaderInjection(&'static str),
    #[error("building the message: {0}")]
    Build(#[from] lettre::error::Error),
}

/// `JOB.UNIXSECONDS.HASH@FROM-DOMAIN`: the same occurrence always gets the same id, so
/// a resend after a crash is recognisable as a duplicate by the recipient's client.
pub fn message_id(job: &Job, occurrence: DateTime<Utc>) -> String {
    let mut h = Sha256::new();
    h.update(job.name.as_bytes());
    h.update([0]);
    h.update(occurrence.timestamp().to_be_bytes());
    h.update(job.from.email.to_string().as_bytes());
    let digest = h.finalize();
    let hash = digest[..6].iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    });
    format!(
        "{}.{}.{hash}@{}",
        job.name,
        occurrence.timestamp(),
        job.from.email.domain()
    )
}

/// Builds the message for `job` at `occurrence`. `date` is the `Date` header's instant
/// (shown in the job's zone). `redirect` replaces every recipient (`cronmail send --to`).
pub fn compose(
    job: &Job,
    rendered: &Rendered,
    occurrence: DateTime<Utc>,
    date: DateTime<Utc>,
    redirect: Option<&[Mailbox]>,
) -> Result<Outgoing, ComposeError> {
    // lettre would encode a line break in a Subject, but a reminder whose subject spans
    // lines is a template bug or an injection attempt: refuse it.
    if let Some(bad) = header_control(&rendered.subject) {
        return Err(ComposeError::HeaderInjection(bad));
    }
    let id = message_id(job, occurrence);
    let mut b = lettre::Message::builder()
        .from(job.from.clone())
        .subject(rendered.subject.clone())
        .date(SystemTime::from(date))
        .message_id(Some(format!("<{id}>")));
    if let Some(to) = redirect {
        for m in to {
            b = b.to(m.clone());
        }
    } else {
        for m in &job.to {
            b = b.to(m.clone());
        }
        for m in &job.cc {
            b = b.cc(m.clone());
        }
        // lettre keeps Bcc in the envelope and drops the header when formatting.
        for m in &job.bcc {
            b = b.bcc(m.clone());
        }
    }
    if let Some(r) = &job.reply_to {
        b = b.reply_to(r.clone());
    }
    let text = SinglePart::builder()
        .header(ContentType::TEXT_PLAIN)
        .body(rendered.body.clone());
    let mut message = match &rendered.html {
        None => b.singlepart(text)?,
        Some(html) => b.multipart(
            MultiPart::alternative().singlepart(text).singlepart(
                SinglePart::builder()
                    .header(ContentType::TEXT_HTML)
                    .body(html.clone()),
            ),
        )?,
    };
    // lettre writes Date in UTC; RFC 5322 allows any offset, and the job's zone is what
    // the reader expects to see.
    let local_date = date.with_timezone(&job.tz()).to_rfc2822();
    let headers = message.headers_mut();
    headers.insert_raw(HeaderValue::dangerous_new_pre_encoded(
        HeaderName::new_from_ascii_str("Date"),
        local_date.clone(),
        local_date,
    ));
    // RFC 3834: tells auto-responders (vacation replies) not to answer.
    headers.insert_raw(HeaderValue::new(
        HeaderName::new_from_ascii_str("Auto-Submitted"),
        "auto-generated".to_owned(),
    ));
    Ok(Outgoing {
        job: job.name.clone(),
        occurrence,
        message_id: id,
        envelope: message.envelope().clone(),
        bytes: {
            // RFC 5322: every line ends with CRLF, the last one too.
            let mut bytes = message.formatted();
            if !bytes.ends_with(b"\r\n") {
                bytes.extend_from_slice(b"\r\n");
            }
            bytes
        },
    })
}
