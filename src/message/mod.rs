//! One occurrence of a job -> the exact RFC 5322 bytes and the SMTP envelope.
//!
//! Pure, given the rendered parts and the instant used for the `Date` header. The
//! outbox writes these same bytes, so `render` and the outbox show what SMTP sends.

use std::fmt::Write as _;
use std::time::SystemTime;

use chrono::{DateTime, Utc};
use lettre::address::Envelope;
use lettre::message::header::{ContentType, HeaderName, HeaderValue};
use lettre::message::{Attachment, Mailbox, MultiPart, SinglePart};
use sha2::{Digest, Sha256};

use crate::config::{Job, Method, header_control};
use crate::render::Rendered;

pub mod attach;
pub mod invite;

/// What a message carries besides its text.
#[derive(Debug, Default)]
pub struct Extras {
    pub files: Vec<attach::File>,
    /// An invitation: its iCalendar text and method.
    pub invite: Option<(String, Method)>,
    /// The row of a `recipients_file` this message is for: its `To`, and its own
    /// Message-ID.
    pub row: Option<std::sync::Arc<crate::recipients::Row>>,
}

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
    #[error("building the message: {0}")]
    Attachment(String),
    #[error("`list_unsubscribe` renders as `{0}`; it must be a `mailto:` or `https://` URL")]
    Unsubscribe(String),
}

enum Body {
    Single(SinglePart),
    Multi(MultiPart),
}

/// The text, the HTML alternative and the invitation as alternatives of one another;
/// with files (and the invitation's .ics file), all of that and the files, mixed.
fn body(rendered: &Rendered, extras: &Extras) -> Result<Body, ComposeError> {
    let text = SinglePart::builder()
        .header(ContentType::TEXT_PLAIN)
        .body(rendered.body.clone());
    let mut alternatives = vec![text];
    if let Some(html) = &rendered.html {
        alternatives.push(
            SinglePart::builder()
                .header(ContentType::TEXT_HTML)
                .body(html.clone()),
        );
    }
    if let Some((ics, method)) = &extras.invite {
        let ct = ContentType::parse(&format!(
            "text/calendar; charset=utf-8; method={}",
            method.name()
        ))
        .map_err(|e| ComposeError::Attachment(e.to_string()))?;
        alternatives.push(SinglePart::builder().header(ct).body(ics.clone()));
    }
    let mut files: Vec<SinglePart> = Vec::new();
    for f in &extras.files {
        let ct = ContentType::parse(&f.content_type)
            .unwrap_or_else(|_| ContentType::parse("application/octet-stream").expect("valid"));
        files.push(Attachment::new(f.name.clone()).body(f.bytes.clone(), ct));
    }
    if let Some((ics, _)) = &extras.invite {
        let ct = ContentType::parse("application/ics").expect("valid");
        files.push(Attachment::new("invite.ics".to_owned()).body(ics.clone(), ct));
    }
    let mut alternatives = alternatives.into_iter();
    let first = alternatives.next().expect("the text part");
    let rest: Vec<SinglePart> = alternatives.collect();
    let main = if rest.is_empty() {
        Body::Single(first)
    } else {
        Body::Multi(rest.into_iter().fold(
            MultiPart::alternative().singlepart(first),
            MultiPart::singlepart,
        ))
    };
    if files.is_empty() {
        return Ok(main);
    }
    let mixed = match main {
        Body::Single(part) => MultiPart::mixed().singlepart(part),
        Body::Multi(alt) => MultiPart::mixed().multipart(alt),
    };
    Ok(Body::Multi(
        files.into_iter().fold(mixed, MultiPart::singlepart),
    ))
}

/// `JOB.UNIXSECONDS.HASH@FROM-DOMAIN`: the same occurrence always gets the same id, so
/// a resend after a crash is recognisable as a duplicate by the recipient's client.
pub fn message_id(job: &Job, occurrence: DateTime<Utc>) -> String {
    message_id_for(job, None, occurrence)
}

/// The Message-ID of one row's message (its key in the hash): each row has its own.
pub fn message_id_for(job: &Job, row: Option<&str>, occurrence: DateTime<Utc>) -> String {
    let mut h = Sha256::new();
    h.update(job.name.as_bytes());
    h.update([0]);
    h.update(occurrence.timestamp().to_be_bytes());
    h.update(job.from.email.to_string().as_bytes());
    if let Some(row) = row {
        h.update([0]);
        h.update(row.as_bytes());
    }
    stamped_id(&job.name, occurrence, h, job.from.email.domain())
}

/// `NAME.UNIXSECONDS.HASH@DOMAIN`, HASH the first 6 bytes of `h` in hex: the shape of
/// every id cronmail derives (a Message-ID, an invitation's UID).
pub(crate) fn stamped_id(name: &str, at: DateTime<Utc>, h: Sha256, domain: &str) -> String {
    let hash = h.finalize()[..6].iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    });
    format!("{name}.{}.{hash}@{domain}", at.timestamp())
}

/// Builds the message for `job` at `occurrence`. `date` is the `Date` header's instant
/// (shown in the job's zone). `redirect` replaces every recipient (`cronmail send --to`).
pub fn compose(
    job: &Job,
    rendered: &Rendered,
    occurrence: DateTime<Utc>,
    date: DateTime<Utc>,
    redirect: Option<&[Mailbox]>,
    extras: &Extras,
) -> Result<Outgoing, ComposeError> {
    // lettre would encode a line break in a Subject, but a reminder whose subject spans
    // lines is a template bug or an injection attempt: refuse it.
    if let Some(bad) = header_control(&rendered.subject) {
        return Err(ComposeError::HeaderInjection(bad));
    }
    let id = message_id_for(job, extras.row.as_ref().map(|r| &*r.key), occurrence);
    let mut b = lettre::Message::builder()
        .from((*job.from).clone())
        .subject(rendered.subject.clone())
        .date(SystemTime::from(date))
        .message_id(Some(format!("<{id}>")));
    if let Some(to) = redirect {
        for m in to {
            b = b.to(m.clone());
        }
    } else {
        match &extras.row {
            Some(row) => b = b.to(row.to.clone()),
            None => {
                for m in job.to.iter() {
                    b = b.to(m.clone());
                }
            }
        }
        for m in job.cc.iter() {
            b = b.cc(m.clone());
        }
        // lettre keeps Bcc in the envelope and drops the header when formatting.
        for m in job.bcc.iter() {
            b = b.bcc(m.clone());
        }
    }
    if let Some(r) = &job.reply_to {
        b = b.reply_to((**r).clone());
    }
    let mut message = match body(rendered, extras)? {
        Body::Single(part) => b.singlepart(part)?,
        Body::Multi(parts) => b.multipart(parts)?,
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
    if let Some(url) = &rendered.unsubscribe {
        if !crate::config::unsubscribe_url(url) {
            return Err(ComposeError::Unsubscribe(url.clone()));
        }
        // RFC 2369, and RFC 8058's one-click POST for an https URL (Gmail and Yahoo
        // require both of bulk senders).
        headers.insert_raw(HeaderValue::new(
            HeaderName::new_from_ascii_str("List-Unsubscribe"),
            format!("<{url}>"),
        ));
        if url.starts_with("https://") {
            headers.insert_raw(HeaderValue::new(
                HeaderName::new_from_ascii_str("List-Unsubscribe-Post"),
                "List-Unsubscribe=One-Click".to_owned(),
            ));
        }
    }
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
