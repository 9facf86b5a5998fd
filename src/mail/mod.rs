//! The mail stage: a message -> SMTP over TLS, or the outbox folder.
//!
//! We drive lettre's `AsyncSmtpConnection` one phase at a time (connect, STARTTLS,
//! AUTH, MAIL, RCPT, DATA) instead of its `AsyncSmtpTransport`, for three reasons:
//! - STARTTLS is checked here, before any AUTH: lettre's `Tls::Opportunistic` would send
//!   credentials in clear to a server that does not offer it, and we never downgrade.
//! - Knowing the phase of a failure is what makes the class and the hint right (a 535
//!   at AUTH is a credential problem; a 550 at RCPT is a bad recipient).
//! - lettre's async transport has no read timeout and its pool no connection cap; the
//!   whole transaction is bounded by `timeout` and concurrent connections by a semaphore.
//!
//! Files: `smtp` (connect, TLS, the pin, MAIL/RCPT/DATA, classifying), `auth` (PLAIN,
//! LOGIN, XOAUTH2), `pool` (kept connections and the cap), `outbox`, `probe`
//! (`check --smtp`), `hint` (what to tell the user, computed once per failure).

mod auth;
pub mod hint;
mod outbox;
mod pool;
mod probe;
mod smtp;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use secrecy::SecretString;

use crate::config::{AccountConfig, Config, TransportConfig};
use crate::failure::Failure;
use crate::message::Outgoing;

pub use auth::{looks_like_app_password, spaced_app_password};
pub(crate) use hint::OAUTH2_GUIDE;
pub use outbox::Outbox;
pub use smtp::SmtpMailer;

/// The server's answer to a delivered message.
#[derive(Clone, Debug)]
pub struct Delivered {
    /// The server's reply code; `None` for the outbox, which has no server.
    pub code: Option<u16>,
    pub reply: String,
}

impl Delivered {
    /// `250 2.0.0 Ok: queued as X` (or the outbox's `written to PATH`): what the ledger keeps.
    pub fn reply_line(&self) -> String {
        match self.code {
            Some(code) => format!("{code} {}", self.reply),
            None => self.reply.clone(),
        }
    }
}

/// A boxed future, for the object-safe `Transport`.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Where the daemon's messages go. `Mailer` is the real one; the daemon takes it as an
/// input (`MakeTransport`), so that a test can run the whole service in-process.
pub trait Transport: Send + Sync {
    /// Sends one message; the failure is classed, with its hint.
    fn send<'a>(&'a self, out: &'a Outgoing) -> BoxFuture<'a, Result<Delivered, Failure>>;
    /// Closes kept connections, at shutdown.
    fn close(&self) -> BoxFuture<'_, ()>;
    /// `smtp.example.com:587` or the outbox folder, for log lines.
    fn destination(&self) -> String;
    /// The account's user name, for log lines (empty for the outbox).
    fn username(&self) -> &str;
    /// `smtp` or `outbox`, for log lines.
    fn kind(&self) -> &'static str;
}

/// Builds the transport of one account of a configuration, with its password (read
/// from its source).
pub type MakeTransport = Arc<
    dyn Fn(&Config, &AccountConfig, Option<SecretString>) -> Result<Arc<dyn Transport>, Failure>
        + Send
        + Sync,
>;

/// The real transport: `Mailer::new` for an account's `[smtp]` or outbox. Each account
/// has its own connections, up to `max_connections`.
pub fn make_mailer() -> MakeTransport {
    Arc::new(|config: &Config, account: &AccountConfig, password| {
        let mailer = Mailer::new(
            &account.transport,
            password,
            config.delivery.max_connections,
        )?;
        Ok(Arc::new(mailer) as Arc<dyn Transport>)
    })
}

impl Transport for Mailer {
    fn send<'a>(&'a self, out: &'a Outgoing) -> BoxFuture<'a, Result<Delivered, Failure>> {
        Box::pin(Mailer::send(self, out))
    }

    fn close(&self) -> BoxFuture<'_, ()> {
        Box::pin(Mailer::close(self))
    }

    fn destination(&self) -> String {
        Mailer::destination(self)
    }

    fn username(&self) -> &str {
        Mailer::username(self)
    }

    fn kind(&self) -> &'static str {
        match self {
            Mailer::Smtp(_) => "smtp",
            Mailer::Outbox(_) => "outbox",
        }
    }
}

/// Sends messages: over SMTP, or into the outbox folder.
pub enum Mailer {
    Smtp(Box<SmtpMailer>),
    Outbox(Outbox),
}

impl Mailer {
    /// Builds the transport for `config`. `password` is the secret read from the
    /// configured source, if any.
    pub fn new(
        config: &TransportConfig,
        password: Option<SecretString>,
        max_connections: usize,
    ) -> Result<Self, Failure> {
        match config {
            TransportConfig::Smtp(smtp) => Ok(Mailer::Smtp(Box::new(SmtpMailer::new(
                smtp,
                password,
                max_connections,
            )?))),
            TransportConfig::Outbox { dir } => Ok(Mailer::Outbox(Outbox { dir: dir.clone() })),
        }
    }

    pub async fn send(&self, out: &Outgoing) -> Result<Delivered, Failure> {
        match self {
            Mailer::Smtp(s) => s.send(out).await,
            Mailer::Outbox(o) => o.send(out).await,
        }
    }

    /// QUITs the connections kept for reuse: at shutdown.
    pub async fn close(&self) {
        if let Mailer::Smtp(s) = self {
            s.close().await;
        }
    }

    /// Where messages go, for logs: `smtp.example.com:587` or the outbox folder.
    pub fn destination(&self) -> String {
        match self {
            Mailer::Smtp(s) => s.server(),
            Mailer::Outbox(o) => o.dir.display().to_string(),
        }
    }

    /// The account's user name, for log lines (empty for the outbox).
    pub fn username(&self) -> &str {
        match self {
            Mailer::Smtp(s) => s.username(),
            Mailer::Outbox(_) => "",
        }
    }
}
