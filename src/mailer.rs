//! A message -> SMTP over TLS, or the outbox. Classifies every failure.
//!
//! We drive lettre's `AsyncSmtpConnection` one phase at a time (connect, STARTTLS,
//! AUTH, MAIL, RCPT, DATA) instead of its `AsyncSmtpTransport`, for three reasons:
//! - STARTTLS is checked here, before any AUTH: lettre's `Tls::Opportunistic` would send
//!   credentials in clear to a server that does not offer it, and we never downgrade.
//! - Knowing the phase of a failure is what makes the class and the hint right (a 535
//!   at AUTH is a credential problem; a 550 at RCPT is a bad recipient).
//! - lettre's async transport has no read timeout and its pool no connection cap; the
//!   whole transaction is bounded by `timeout` and concurrent connections by a semaphore.

use std::fmt;
use std::io::Write as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use lettre::transport::smtp::authentication::{Credentials, Mechanism};
use lettre::transport::smtp::client::{AsyncSmtpConnection, Certificate, TlsParameters};
use lettre::transport::smtp::commands::{Data, Mail, Rcpt};
use lettre::transport::smtp::extension::{ClientId, Extension, MailBodyParameter, MailParameter};
use lettre::transport::smtp::response::Response;
use secrecy::{ExposeSecret, SecretString};
use tokio::sync::Semaphore;

use crate::config::{AuthMethod, SmtpConfig, TlsMode, TransportConfig};
use crate::diagnose;
use crate::exit::Exit;
use crate::message::Outgoing;

/// How long the background QUIT after an accepted message may take.
const QUIT_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a connection is kept open for the next message, after one was accepted.
/// Long enough for a burst; short enough not to hold a server's connection slot.
const IDLE_KEEP: Duration = Duration::from_secs(5);

/// Messages one connection carries before it is closed (servers limit this too).
const REUSE_MAX: u32 = 100;

/// An authenticated connection waiting for the next message.
struct Idle {
    conn: AsyncSmtpConnection,
    used: u32,
    id: u64,
}

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
            ErrorClass::Transient => "transient",
            ErrorClass::Permanent => "permanent",
            ErrorClass::Local => "local",
        }
    }

    pub fn exit(self) -> Exit {
        match self {
            ErrorClass::Auth => Exit::NoPerm,
            ErrorClass::Tls | ErrorClass::Connect => Exit::Unavailable,
            ErrorClass::Timeout | ErrorClass::Transient => Exit::TempFail,
            ErrorClass::Permanent => Exit::Rejected,
            ErrorClass::Local => Exit::Io,
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
    Starttls,
    Auth,
    Mail,
    Rcpt,
    Data,
    Write,
}

impl Phase {
    pub fn name(self) -> &'static str {
        match self {
            Phase::Connect => "connecting",
            Phase::Starttls => "STARTTLS",
            Phase::Auth => "AUTH",
            Phase::Mail => "MAIL FROM",
            Phase::Rcpt => "RCPT TO",
            Phase::Data => "DATA",
            Phase::Write => "writing",
        }
    }
}

/// A failed send, with everything the log line and the user need.
#[derive(Clone, Debug)]
pub struct SendError {
    pub class: ErrorClass,
    pub phase: Phase,
    /// The server's reply code, when the failure was a reply.
    pub code: Option<u16>,
    /// The server's exact reply text (all lines), when there was one.
    pub reply: Option<String>,
    /// What went wrong, in words; the reply when there was one.
    pub detail: String,
    /// What to do about it.
    pub hint: Option<String>,
}

impl fmt::Display for SendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} failed ({}): ", self.phase.name(), self.class)?;
        match (self.code, &self.reply) {
            (Some(code), Some(reply)) => write!(f, "{code} {reply}")?,
            _ => f.write_str(&self.detail)?,
        }
        Ok(())
    }
}

impl std::error::Error for SendError {}

/// The server's answer to a delivered message.
#[derive(Clone, Debug)]
pub struct Delivered {
    pub code: u16,
    pub reply: String,
}

/// Facts from `check --smtp`.
#[derive(Clone, Debug)]
pub struct ProbeReport {
    pub server: String,
    pub greeting: String,
    pub tls: Option<crate::tls::PeerInfo>,
    pub auth: Option<String>,
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
    ) -> Result<Self, SendError> {
        match config {
            TransportConfig::Smtp(smtp) => Ok(Mailer::Smtp(Box::new(SmtpMailer::new(
                smtp,
                password,
                max_connections,
            )?))),
            TransportConfig::Outbox { dir } => Ok(Mailer::Outbox(Outbox { dir: dir.clone() })),
        }
    }

    pub async fn send(&self, out: &Outgoing) -> Result<Delivered, SendError> {
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
            Mailer::Outbox(o) => format!("outbox {}", o.dir.display()),
        }
    }
}

/// Writes each message to `<dir>/<message-id>.eml`.
pub struct Outbox {
    pub dir: PathBuf,
}

impl Outbox {
    async fn send(&self, out: &Outgoing) -> Result<Delivered, SendError> {
        let dir = self.dir.clone();
        let name = format!("{}.eml", out.message_id.replace('/', "_"));
        let bytes = out.bytes.clone();
        let path = dir.join(&name);
        let result =
            tokio::task::spawn_blocking(move || write_atomically(&dir, &name, &bytes)).await;
        match result {
            Ok(Ok(())) => Ok(Delivered {
                code: 250,
                reply: format!("written to {}", path.display()),
            }),
            Ok(Err(e)) => Err(SendError {
                class: ErrorClass::Local,
                phase: Phase::Write,
                code: None,
                reply: None,
                detail: format!("writing `{}`: {e}", path.display()),
                hint: Some(format!(
                    "make sure `{}` exists and cronmail may write to it",
                    self.dir.display()
                )),
            }),
            Err(e) => Err(SendError {
                class: ErrorClass::Local,
                phase: Phase::Write,
                code: None,
                reply: None,
                detail: format!("writing `{}`: {e}", path.display()),
                hint: None,
            }),
        }
    }
}

/// Write to a temporary file, fsync, rename, fsync the folder: a reader never sees
/// half a message, and a crash leaves either nothing or the whole file.
fn write_atomically(dir: &std::path::Path, name: &str, bytes: &[u8]) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let tmp = dir.join(format!(".{name}.tmp"));
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, dir.join(name))?;
    std::fs::File::open(dir)?.sync_all()
}

/// Sends over SMTP with TLS as configured, one connection per message.
pub struct SmtpMailer {
    config: SmtpConfig,
    password: Option<SecretString>,
    /// For implicit TLS, which cronmail sets up itself (see `connect`).
    implicit: Arc<rustls::ClientConfig>,
    /// The built-in `OAuth2` refresh flow, with its cached access token.
    oauth: Option<crate::oauth2::TokenSource>,
    /// Connections kept after a message, for the next: never more, with those in use,
    /// than `max_connections` (a sender holding a permit takes a kept one first).
    idle: Arc<std::sync::Mutex<Vec<Idle>>>,
    next_idle_id: std::sync::atomic::AtomicU64,
    tls: TlsParameters,
    hello: ClientId,
    permits: Arc<Semaphore>,
}

impl SmtpMailer {
    pub fn new(
        config: &SmtpConfig,
        password: Option<SecretString>,
        max_connections: usize,
    ) -> Result<Self, SendError> {
        crate::tls::install_crypto_provider();
        let mut builder = TlsParameters::builder(config.host.clone());
        for der in &config.extra_roots {
            let cert = Certificate::from_der(der.clone())
                .map_err(|e| local_tls_error(&format!("`ca_file`: {e}")))?;
            builder = builder.add_root_certificate(cert);
        }
        // With a pin, the chain and host name are not checked against roots: the pin is
        // the trust. rustls still verifies the handshake signature with the presented
        // certificate's key, and `open` compares that certificate to the pin before
        // anything else is sent.
        if config.tls_fingerprint.is_some() {
            builder = builder.dangerous_accept_invalid_certs(true);
        }
        let tls = builder
            .build_rustls()
            .map_err(|e| local_tls_error(&format!("setting up TLS: {e}")))?;
        let oauth = match &config.oauth2 {
            Some(o) => Some(
                crate::oauth2::TokenSource::new(o, &config.extra_roots)
                    .map_err(|e| token_error(&e))?,
            ),
            None => None,
        };
        Ok(SmtpMailer {
            config: config.clone(),
            password,
            implicit: Arc::new(crate::tls::smtp_client_config(config)),
            oauth,
            idle: Arc::new(std::sync::Mutex::new(Vec::new())),
            next_idle_id: std::sync::atomic::AtomicU64::new(0),
            tls,
            hello: ClientId::default(),
            permits: Arc::new(Semaphore::new(max_connections.max(1))),
        })
    }

    pub fn server(&self) -> String {
        format!("{}:{}", self.config.host, self.config.port)
    }

    /// Sends one message, bounded by `timeout` for the whole transaction.
    pub async fn send(&self, out: &Outgoing) -> Result<Delivered, SendError> {
        let permit = Arc::clone(&self.permits)
            .acquire_owned()
            .await
            .map_err(|_| SendError {
                class: ErrorClass::Local,
                phase: Phase::Connect,
                code: None,
                reply: None,
                detail: "the mailer is shutting down".to_owned(),
                hint: None,
            })?;
        let result = match tokio::time::timeout(self.config.timeout, self.transaction(out, permit)).await {
            Ok(r) => r,
            Err(_) => Err(SendError {
                class: ErrorClass::Timeout,
                phase: Phase::Connect,
                code: None,
                reply: None,
                detail: format!("no complete answer within {}", humantime::format_duration(self.config.timeout)),
                hint: Some("the server is slow or unreachable; cronmail will try again. Raise `timeout` if this server is always slow".to_owned()),
            }),
        };
        result.map(|response| Delivered {
            code: u16::from(response.code()),
            reply: reply_text(&response),
        })
    }

    /// Connects and secures (STARTTLS or implicit TLS, and the pin), without logging in.
    async fn connect(&self) -> Result<AsyncSmtpConnection, SendError> {
        let cfg = &self.config;
        // Our own socket, for TCP_NODELAY: lettre writes a message's final "\r\n.\r\n"
        // on its own, and with Nagle's algorithm that small write waits for the
        // server's delayed ACK, 40 ms per message on Linux.
        let tcp = tokio::time::timeout(
            cfg.timeout,
            tokio::net::TcpStream::connect((cfg.host.as_str(), cfg.port)),
        )
        .await
        .map_err(|_| {
            self.fail(
                ErrorClass::Timeout,
                Phase::Connect,
                None,
                format!(
                    "connecting to {}: no answer within {}",
                    self.server(),
                    humantime::format_duration(cfg.timeout)
                ),
            )
        })?
        .map_err(|e| self.classify_io(&e))?;
        let _ = tcp.set_nodelay(true);
        let stream: Box<dyn lettre::transport::smtp::client::AsyncTokioStream> = if cfg.tls
            == TlsMode::Implicit
        {
            let name = rustls::pki_types::ServerName::try_from(cfg.host.clone()).map_err(|e| {
                local_tls_error(&format!("`{}` is not a valid host name: {e}", cfg.host))
            })?;
            let tls = tokio_rustls::TlsConnector::from(Arc::clone(&self.implicit))
                .connect(name, tcp)
                .await
                .map_err(|e| self.classify_io(&e))?;
            Box::new(ImplicitTls(tls))
        } else {
            Box::new(tcp)
        };
        let mut conn = AsyncSmtpConnection::connect_with_transport(stream, &self.hello)
            .await
            .map_err(|e| self.classify(Phase::Connect, &e))?;

        if cfg.tls == TlsMode::Starttls {
            if !conn.server_info().supports_feature(Extension::StartTls) {
                // Nothing has been sent but EHLO: no AUTH, no message.
                let _ = conn.quit().await;
                return Err(self.fail(ErrorClass::Tls, Phase::Starttls, None, "the server did not offer STARTTLS, and `tls = \"starttls\"` requires it; nothing was sent".to_owned()));
            }
            conn.starttls(self.tls.clone(), &self.hello)
                .await
                .map_err(|e| {
                    let mut err = self.classify(Phase::Starttls, &e);
                    err.class = ErrorClass::Tls;
                    err.hint = diagnose::hint(&err, cfg);
                    err
                })?;
        }
        // Implicit TLS was set up above (lettre sees our stream as plain).
        if cfg.tls == TlsMode::Starttls && !conn.is_encrypted() {
            conn.abort().await;
            return Err(self.fail(
                ErrorClass::Tls,
                Phase::Starttls,
                None,
                "the connection is not encrypted; nothing was sent".to_owned(),
            ));
        }
        // With implicit TLS the pin was checked in the handshake itself.
        if let (Some(pin), TlsMode::Starttls) = (&cfg.tls_fingerprint, cfg.tls) {
            let presented = conn
                .peer_certificate()
                .ok()
                .map(|der| crate::tls::fingerprint(&der));
            let expected = crate::tls::format_fingerprint(pin);
            if presented.as_deref() != Some(expected.as_str()) {
                conn.abort().await;
                return Err(self.fail(
                    ErrorClass::Tls,
                    Phase::Starttls,
                    None,
                    format!(
                        "the server's certificate fingerprint {} does not match `tls_fingerprint` {expected}; nothing was sent",
                        presented.as_deref().unwrap_or("(none)")
                    ),
                ));
            }
        }

        Ok(conn)
    }

    /// Connects, secures and authenticates, then leaves the connection to the caller.
    async fn open(&self) -> Result<AsyncSmtpConnection, SendError> {
        let cfg = &self.config;
        if let (Some(user), AuthMethod::Xoauth2) = (&cfg.username, cfg.auth) {
            // The token first: no connection is opened for a login that cannot happen.
            let (token, fresh) = self.access_token().await?;
            let mut conn = self.connect().await?;
            let Err(e) = xoauth2(&mut conn, user, &token).await else {
                return Ok(conn);
            };
            conn.abort().await;
            let err = self.xoauth2_error(&e, &token);
            // A refused cached token may have been revoked or expired early: refresh it
            // and try once more. A token fetched just now is not retried: a second
            // identical refusal would only add a login attempt.
            let (Some(oauth), false, Some(500..)) = (&self.oauth, fresh, err.code) else {
                return Err(err);
            };
            tracing::info!(
                smtp_code = err.code,
                "the server refused the cached OAuth2 access token; refreshing it and trying once more"
            );
            oauth.forget().await;
            let (token, _) = self.access_token().await?;
            let mut conn = self.connect().await?;
            if let Err(e) = xoauth2(&mut conn, user, &token).await {
                conn.abort().await;
                return Err(self.xoauth2_error(&e, &token));
            }
            return Ok(conn);
        }
        let mut conn = self.connect().await?;
        if let (Some(user), Some(password)) = (&cfg.username, &self.password) {
            let creds = Credentials::new(user.clone(), password.expose_secret().to_owned());
            let mechanisms: &[Mechanism] = match cfg.auth {
                AuthMethod::Plain => &[Mechanism::Plain],
                AuthMethod::Login => &[Mechanism::Login],
                AuthMethod::Auto | AuthMethod::Xoauth2 => &[Mechanism::Plain, Mechanism::Login],
            };
            if let Err(e) = conn.auth(mechanisms, &creds).await {
                conn.abort().await;
                let mut err = self.classify(Phase::Auth, &e);
                if err.code.is_none() && e.is_client() {
                    err.detail = format!("{e}; the server offers: {}", conn.server_info());
                }
                err.class = ErrorClass::Auth;
                err.hint = diagnose::hint(&err, cfg);
                return Err(err);
            }
        }
        Ok(conn)
    }

    /// An XOAUTH2 access token, and whether it was obtained just now (not from the cache).
    async fn access_token(&self) -> Result<(SecretString, bool), SendError> {
        if let Some(oauth) = &self.oauth {
            return oauth
                .access_token(tokio::time::Instant::now())
                .await
                .map(|t| (t.token, t.fresh))
                .map_err(|e| token_error(&e));
        }
        let Some(source) = &self.config.token_command else {
            return Err(self.fail(
                ErrorClass::Local,
                Phase::Auth,
                None,
                "XOAUTH2 has no token source".to_owned(),
            ));
        };
        let token = source.read().await.map_err(|e| {
            self.fail(
                ErrorClass::Auth,
                Phase::Auth,
                None,
                format!("getting the OAuth2 access token: {e}"),
            )
        })?;
        Ok((token, true))
    }

    fn xoauth2_error(&self, e: &lettre::transport::smtp::Error, token: &SecretString) -> SendError {
        let mut err = self.classify(Phase::Auth, e);
        err.class = ErrorClass::Auth;
        err.hint = diagnose::hint(&err, &self.config);
        if looks_like_app_password(token.expose_secret()) {
            err.hint = Some(format!(
                "the access token looks like an App Password (16 letters), which works only \
                 with `auth = \"plain\"` or `\"login\"`; XOAUTH2 needs an OAuth2 access token. {}",
                err.hint.unwrap_or_default()
            ));
        }
        err
    }

    /// One message: on a kept connection if there is one (a burst reuses its
    /// connections), else on a new one. A kept connection the server has closed in the
    /// meantime fails at MAIL, before anything was accepted: then once more on a new one.
    async fn transaction(
        &self,
        out: &Outgoing,
        permit: tokio::sync::OwnedSemaphorePermit,
    ) -> Result<Response, SendError> {
        if let Some(kept) = self.take_idle() {
            let mut conn = kept.conn;
            match self.deliver_on(&mut conn, out).await {
                Ok(response) => {
                    self.keep(conn, kept.used + 1, permit);
                    return Ok(response);
                }
                Err(e)
                    if e.phase == Phase::Mail
                        && (e.class == ErrorClass::Connect || e.code == Some(421)) =>
                {
                    tracing::debug!(error = %e, "a kept connection was closed by the server; opening a new one");
                }
                Err(e) => return Err(e),
            }
        }
        let mut conn = self.open().await?;
        let response = self.deliver_on(&mut conn, out).await?;
        self.keep(conn, 1, permit);
        Ok(response)
    }

    /// A kept connection, if one is waiting (the most recently used).
    fn take_idle(&self) -> Option<Idle> {
        self.idle
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .pop()
    }

    /// After an accepted message: keeps the connection for the next one for a few
    /// seconds (then QUITs it), or QUITs it now after `REUSE_MAX` messages. Either way in
    /// the background, so the caller can record the delivery at once: the window in
    /// which a crash causes a resend is the time from the server's reply to the ledger's
    /// commit, and a QUIT round trip need not be in it.
    fn keep(
        &self,
        mut conn: AsyncSmtpConnection,
        used: u32,
        permit: tokio::sync::OwnedSemaphorePermit,
    ) {
        if used >= REUSE_MAX || !self.config.keep_connections {
            // The permit stays held until the QUIT is done.
            tokio::spawn(async move {
                let _permit = permit;
                let _ = tokio::time::timeout(QUIT_TIMEOUT, conn.quit()).await;
            });
            return;
        }
        let id = self
            .next_idle_id
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.idle
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(Idle { conn, used, id });
        drop(permit);
        let idle = Arc::clone(&self.idle);
        tokio::spawn(async move {
            tokio::time::sleep(IDLE_KEEP).await;
            let expired = {
                let mut list = idle
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                list.iter()
                    .position(|i| i.id == id)
                    .map(|at| list.remove(at))
            };
            if let Some(mut kept) = expired {
                let _ = tokio::time::timeout(QUIT_TIMEOUT, kept.conn.quit()).await;
            }
        });
    }

    /// QUITs every kept connection: at shutdown.
    pub async fn close(&self) {
        let kept = std::mem::take(
            &mut *self
                .idle
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        );
        for mut k in kept {
            let _ = tokio::time::timeout(QUIT_TIMEOUT, k.conn.quit()).await;
        }
    }

    /// MAIL, RCPT, DATA and the message on an open, authenticated connection.
    async fn deliver_on(
        &self,
        conn: &mut AsyncSmtpConnection,
        out: &Outgoing,
    ) -> Result<Response, SendError> {
        let envelope = &out.envelope;

        let mut options = Vec::new();
        let non_ascii = envelope
            .from()
            .into_iter()
            .chain(envelope.to())
            .any(|a| !AsRef::<str>::as_ref(a).is_ascii());
        if non_ascii {
            if !conn.server_info().supports_feature(Extension::SmtpUtfEight) {
                return Err(self.fail(
                    ErrorClass::Permanent,
                    Phase::Mail,
                    None,
                    "an address is not ASCII and the server does not support SMTPUTF8".to_owned(),
                ));
            }
            options.push(MailParameter::SmtpUtfEight);
        }
        if !out.bytes.is_ascii() && conn.server_info().supports_feature(Extension::EightBitMime) {
            options.push(MailParameter::Body(MailBodyParameter::EightBitMime));
        }
        conn.command(Mail::new(envelope.from().cloned(), options))
            .await
            .map_err(|e| self.classify(Phase::Mail, &e))?;
        for rcpt in envelope.to() {
            conn.command(Rcpt::new(rcpt.clone(), vec![]))
                .await
                .map_err(|e| self.classify(Phase::Rcpt, &e))?;
        }
        conn.command(Data)
            .await
            .map_err(|e| self.classify(Phase::Data, &e))?;
        conn.message(&out.bytes)
            .await
            .map_err(|e| self.classify(Phase::Data, &e))
    }

    /// `check --smtp`: connect, TLS, AUTH, QUIT, without sending anything.
    pub async fn probe(&self) -> Result<ProbeReport, SendError> {
        let cfg = &self.config;
        let work = async {
            let tls = if cfg.tls == TlsMode::None {
                None
            } else {
                match crate::tls::inspect(cfg, false).await {
                    Ok(info) => Some(info),
                    Err(e) => {
                        // Show the fingerprint of a certificate that failed verification,
                        // so the user can check it out of band and pin it.
                        let mut detail = e;
                        if let Ok(info) = crate::tls::inspect(cfg, true).await {
                            detail = format!(
                                "{detail}; the server presents `{}` issued by `{}`, expiring {}, fingerprint {}",
                                info.subject, info.issuer, info.not_after, info.fingerprint
                            );
                        }
                        return Err(self.fail(ErrorClass::Tls, Phase::Starttls, None, detail));
                    }
                }
            };
            let mut conn = self.open().await?;
            let greeting = conn.server_info().name().to_owned();
            let logs_in = self.password.is_some() || cfg.auth == AuthMethod::Xoauth2;
            let auth = match &cfg.username {
                Some(user) if logs_in => Some(format!("accepted for `{user}`")),
                _ => None,
            };
            let _ = conn.quit().await;
            Ok(ProbeReport {
                server: self.server(),
                greeting,
                tls,
                auth,
            })
        };
        tokio::time::timeout(cfg.timeout, work)
            .await
            .unwrap_or_else(|_| {
                Err(self.fail(
                    ErrorClass::Timeout,
                    Phase::Connect,
                    None,
                    format!(
                        "no answer within {}",
                        humantime::format_duration(cfg.timeout)
                    ),
                ))
            })
    }

    fn fail(
        &self,
        class: ErrorClass,
        phase: Phase,
        code: Option<u16>,
        detail: String,
    ) -> SendError {
        let mut err = SendError {
            class,
            phase,
            code,
            reply: None,
            detail,
            hint: None,
        };
        err.hint = diagnose::hint(&err, &self.config);
        err
    }

    /// A connection or implicit-TLS handshake failure.
    fn classify_io(&self, e: &std::io::Error) -> SendError {
        let (class, detail) = if crate::tls::is_tls_error(e) {
            (ErrorClass::Tls, crate::tls::describe_failure(e))
        } else if e.kind() == std::io::ErrorKind::TimedOut {
            (
                ErrorClass::Timeout,
                format!("connecting to {}: {e}", self.server()),
            )
        } else {
            (
                ErrorClass::Connect,
                format!("connecting to {}: {e}", self.server()),
            )
        };
        self.fail(class, Phase::Connect, None, detail)
    }

    /// Turns a lettre error into a classified `SendError` for `phase`.
    fn classify(&self, phase: Phase, e: &lettre::transport::smtp::Error) -> SendError {
        let code = e.status().map(u16::from);
        let reply = code.map(|_| {
            std::error::Error::source(e)
                .map(ToString::to_string)
                .unwrap_or_default()
        });
        let class = match (phase, code) {
            (Phase::Auth, _) => ErrorClass::Auth,
            (Phase::Starttls, _) => ErrorClass::Tls,
            // 530 5.7.0 Authentication required (and Microsoft's 5.7.57): credentials are
            // needed and none were given; unless it is Gmail's "Must issue a STARTTLS".
            (Phase::Mail | Phase::Rcpt, Some(530)) => {
                if reply.as_deref().is_some_and(|r| r.contains("STARTTLS")) {
                    ErrorClass::Tls
                } else {
                    ErrorClass::Auth
                }
            }
            (_, Some(c)) if (400..500).contains(&c) => ErrorClass::Transient,
            (_, Some(_)) => ErrorClass::Permanent,
            (_, None) if e.is_timeout() => ErrorClass::Timeout,
            (_, None) if crate::tls::is_tls_failure(e) => ErrorClass::Tls,
            (_, None) => ErrorClass::Connect,
        };
        let detail = if class == ErrorClass::Tls && code.is_none() {
            crate::tls::describe_failure(e)
        } else {
            error_chain(e)
        };
        let mut err = SendError {
            class,
            phase,
            code,
            reply,
            detail,
            hint: None,
        };
        err.hint = diagnose::hint(&err, &self.config);
        err
    }
}

fn local_tls_error(detail: &str) -> SendError {
    SendError {
        class: ErrorClass::Local,
        phase: Phase::Connect,
        code: None,
        reply: None,
        detail: detail.to_owned(),
        hint: None,
    }
}

/// An implicit-TLS stream handed to lettre, which then drives SMTP over it.
#[derive(Debug)]
struct ImplicitTls(tokio_rustls::client::TlsStream<tokio::net::TcpStream>);

impl lettre::transport::smtp::client::AsyncTokioStream for ImplicitTls {
    fn peer_addr(&self) -> std::io::Result<std::net::SocketAddr> {
        self.0.get_ref().0.peer_addr()
    }
}

impl tokio::io::AsyncRead for ImplicitTls {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for ImplicitTls {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

/// A token endpoint failure as a send failure at AUTH (no SMTP reply: the server was
/// not asked).
fn token_error(e: &crate::oauth2::TokenError) -> SendError {
    SendError {
        class: e.class,
        phase: Phase::Auth,
        code: None,
        reply: None,
        detail: format!("getting an OAuth2 access token: {}", e.detail),
        hint: e.hint.clone(),
    }
}

/// A reply's lines joined with a space, as one log field.
fn reply_text(r: &Response) -> String {
    r.message().collect::<Vec<_>>().join(" ")
}

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

/// `AUTH XOAUTH2` with the initial response `user=U^Aauth=Bearer T^A^A` (base64), as
/// Google and Microsoft document it. On a bad token Google answers `334` with a base64
/// JSON error and expects an empty line before its final `535`: that final reply is the
/// one that explains, so it is read (lettre's own XOAUTH2 stops at the 334).
async fn xoauth2(
    conn: &mut AsyncSmtpConnection,
    user: &str,
    token: &SecretString,
) -> Result<Response, lettre::transport::smtp::Error> {
    use base64::Engine as _;
    /// One raw command line. Its text holds the token: it is written to the socket only.
    struct Line(String);
    impl fmt::Display for Line {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(f, "{}\r\n", self.0)
        }
    }
    let blob = base64::engine::general_purpose::STANDARD.encode(format!(
        "user={user}\x01auth=Bearer {}\x01\x01",
        token.expose_secret()
    ));
    let response = conn.command(Line(format!("AUTH XOAUTH2 {blob}"))).await?;
    if response.has_code(334) {
        return conn.command(Line(String::new())).await;
    }
    Ok(response)
}

/// Google's App Passwords are 16 lowercase letters, often shown in groups of four.
pub fn looks_like_app_password(token: &str) -> bool {
    let letters: String = token.chars().filter(|c| *c != ' ').collect();
    letters.len() == 16 && letters.chars().all(|c| c.is_ascii_lowercase())
}
