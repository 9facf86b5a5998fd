//! The failure vocabulary: how a failure is classed, and the one record that tells it.
//!
//! A leaf: it imports nothing of the crate, so every stage (mail, `OAuth2`, TLS, the
//! ledger, retries) can class its failures without importing another stage. Failures are
//! classified once, at the bottom, where the cause is known; the hint is attached by the
//! mail stage (`mail::hint`), and whoever presents a failure (the daemon's log line, a
//! command's stderr and exit code) presents it. Sorted by consequence, as watchexec's
//! errors are: the class decides retrying, holds and the exit code.

use std::fmt;

/// What kind of failure a send met, which decides retrying, the exit code and the hint.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorClass {
    /// The server refused the credentials (or wants some).
    Auth,
    /// TLS could not be set up: no STARTTLS, an untrusted or wrong certificate, a handshake failure.
    Tls,
    /// No connection: refused, reset, unreachable, DNS.
    Connect,
    /// The whole transaction took longer than `timeout`.
    Timeout,
    /// A sending or login limit of the account (Gmail's daily limit, Microsoft's
    /// recipient quota, Google's "too many login attempts"): the account is held and its
    /// occurrences wait, with backoff, until `retry_for`.
    Quota,
    /// A 4xx reply: try again later.
    Transient,
    /// A 5xx reply: the server will not take this message.
    Permanent,
    /// A local failure, such as the outbox folder not being writable.
    Local,
}

impl ErrorClass {
    pub fn name(self) -> &'static str {
        match self {
            ErrorClass::Auth => "auth",
            ErrorClass::Tls => "tls",
            ErrorClass::Connect => "connect",
            ErrorClass::Timeout => "timeout",
            ErrorClass::Quota => "quota",
            ErrorClass::Transient => "transient",
            ErrorClass::Permanent => "permanent",
            ErrorClass::Local => "local",
        }
    }
}

impl fmt::Display for ErrorClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The step of the SMTP conversation a failure happened in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    Connect,
    /// The implicit-TLS handshake, before the server's first byte.
    Tls,
    /// Waiting for the server's greeting (and the answer to EHLO).
    Greeting,
    Starttls,
    Auth,
    Mail,
    Rcpt,
    Data,
    Write,
}

impl Phase {
    const ALL: [Phase; 9] = [
        Phase::Connect,
        Phase::Tls,
        Phase::Greeting,
        Phase::Starttls,
        Phase::Auth,
        Phase::Mail,
        Phase::Rcpt,
        Phase::Data,
        Phase::Write,
    ];

    /// A small number for the phase, to keep it in an atomic while a send runs.
    pub fn index(self) -> u8 {
        u8::try_from(Self::ALL.iter().position(|p| *p == self).unwrap_or(0)).unwrap_or(0)
    }

    pub fn from_index(i: u8) -> Phase {
        Self::ALL
            .get(usize::from(i))
            .copied()
            .unwrap_or(Phase::Connect)
    }

    pub fn name(self) -> &'static str {
        match self {
            Phase::Connect => "connecting",
            Phase::Tls => "TLS handshake",
            Phase::Greeting => "greeting",
            Phase::Starttls => "STARTTLS",
            Phase::Auth => "AUTH",
            Phase::Mail => "MAIL FROM",
            Phase::Rcpt => "RCPT TO",
            Phase::Data => "DATA",
            Phase::Write => "writing",
        }
    }
}

/// One failure of the mail path (a send, a login, a token refresh), with everything the
/// log line and the user need. No secret is ever put in it.
#[derive(Clone, Debug)]
pub struct Failure {
    pub class: ErrorClass,
    /// Where in the SMTP conversation, when it happened in one.
    pub phase: Option<Phase>,
    /// The server's reply code, when the failure was a reply.
    pub code: Option<u16>,
    /// The server's exact reply text (all lines), when there was one.
    pub reply: Option<String>,
    /// What went wrong, in words.
    pub detail: String,
    /// What to do about it.
    pub hint: Option<String>,
}

impl Failure {
    /// A failure without a server reply.
    pub fn new(class: ErrorClass, phase: Option<Phase>, detail: impl Into<String>) -> Self {
        Failure {
            class,
            phase,
            code: None,
            reply: None,
            detail: detail.into(),
            hint: None,
        }
    }

    /// A local failure (a file, the set-up of TLS), outside any SMTP phase.
    pub fn local(detail: impl Into<String>) -> Self {
        Self::new(ErrorClass::Local, None, detail)
    }

    #[must_use]
    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    /// The same failure, as met in `phase` of a send.
    #[must_use]
    pub fn in_phase(mut self, phase: Phase) -> Self {
        self.phase = Some(phase);
        self
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(phase) = self.phase {
            write!(f, "{} failed ({}): ", phase.name(), self.class)?;
        }
        match (self.code, &self.reply) {
            (Some(code), Some(reply)) => write!(f, "{code} {reply}"),
            _ => f.write_str(&self.detail),
        }
    }
}

impl std::error::Error for Failure {}

/// An error and its sources, joined with `: `, without repeating a source already
/// contained in its parent's text (lettre's Display includes its source).
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}
