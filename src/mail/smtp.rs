//! One SMTP transaction over TLS: connect (our own socket, for `TCP_NODELAY`), STARTTLS
//! or implicit TLS, the certificate pin, then MAIL, RCPT and DATA on a logged-in
//! connection (`auth`), kept for the next message (`pool`). Every failure is classed
//! here, where its phase is known, and gets its hint once, in `send`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};

use lettre::transport::smtp::client::{AsyncSmtpConnection, Certificate, TlsParameters};
use lettre::transport::smtp::commands::{Data, Mail, Rcpt};
use lettre::transport::smtp::extension::{ClientId, Extension, MailBodyParameter, MailParameter};
use lettre::transport::smtp::response::Response;
use secrecy::{ExposeSecret as _, SecretString};

use super::Delivered;
use super::hint;
use super::pool::Pool;
use crate::config::{SmtpConfig, TlsMode};
use crate::failure::{ErrorClass, Failure, Phase, error_chain};
use crate::message::Outgoing;
use crate::oauth2::TokenSource;
use crate::tls;

/// How long a plain (STARTTLS or no-TLS) connection waits for the server's greeting.
/// Submission servers greet at once; one that stays silent wants a TLS handshake.
const GREETING_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

tokio::task_local! {
    /// How far the send in this task has got, for the timeout to name the phase it
    /// interrupted (the transaction's future is gone by then).
    static PROGRESS: Arc<AtomicU8>;
}

/// Notes that the send in this task entered `phase`.
pub(super) fn entering(phase: Phase) {
    let _ = PROGRESS.try_with(|p| p.store(phase.index(), Ordering::Relaxed));
}

/// Runs `work` with its progress recorded; on `timeout`, the phase it had reached.
pub(super) async fn bounded<T>(
    timeout: std::time::Duration,
    work: impl std::future::Future<Output = Result<T, Failure>>,
) -> Result<T, Failure> {
    let progress = Arc::new(AtomicU8::new(Phase::Connect.index()));
    if let Ok(r) = tokio::time::timeout(timeout, PROGRESS.scope(Arc::clone(&progress), work)).await
    {
        return r;
    }
    let phase = Phase::from_index(progress.load(Ordering::Relaxed));
    Err(Failure::new(
        ErrorClass::Timeout,
        Some(phase),
        format!(
            "no answer within {} ({})",
            humantime::format_duration(timeout),
            phase.name()
        ),
    ))
}

/// Sends over SMTP with TLS as configured.
pub struct SmtpMailer {
    pub(super) config: SmtpConfig,
    pub(super) password: Option<SecretString>,
    /// For implicit TLS, which cronmail sets up itself (see `connect`).
    implicit: Arc<rustls::ClientConfig>,
    /// The built-in `OAuth2` refresh flow, with its cached access token.
    pub(super) oauth: Option<TokenSource>,
    pool: Pool,
    /// lettre's parameters for STARTTLS: the same roots (or the pin) as `implicit`.
    starttls: TlsParameters,
    /// The name we give in EHLO: this host's.
    hello: ClientId,
}

impl SmtpMailer {
    pub fn new(
        config: &SmtpConfig,
        password: Option<SecretString>,
        max_connections: usize,
    ) -> Result<Self, Failure> {
        tls::install_crypto_provider();
        let mut builder = TlsParameters::builder(config.host.clone());
        for der in &config.extra_roots {
            let cert = Certificate::from_der(der.clone())
                .map_err(|e| Failure::local(format!("`ca_file`: {e}")))?;
            builder = builder.add_root_certificate(cert);
        }
        // With a pin, the chain and host name are not checked against roots: the pin is
        // the trust. rustls still verifies the handshake signature with the presented
        // certificate's key, and `connect` compares that certificate to the pin before
        // anything else is sent.
        if config.tls_fingerprint.is_some() {
            builder = builder.dangerous_accept_invalid_certs(true);
        }
        let starttls = builder
            .build_rustls()
            .map_err(|e| Failure::local(format!("setting up TLS: {e}")))?;
        let oauth = match &config.oauth2 {
            Some(o) => Some(TokenSource::new(o, &config.extra_roots)?),
            None => None,
        };
        // A Gmail App Password pasted as Google shows it, with spaces: the password is
        // the 16 letters.
        let gmail = config.effective_provider() == Some(crate::config::Provider::Gmail);
        let password = password.map(|p| {
            if gmail && super::auth::spaced_app_password(p.expose_secret()) {
                SecretString::from(p.expose_secret().replace(' ', ""))
            } else {
                p
            }
        });
        Ok(SmtpMailer {
            config: config.clone(),
            password,
            implicit: Arc::new(tls::smtp_client_config(
                config.tls_fingerprint,
                &config.extra_roots,
            )),
            oauth,
            pool: Pool::new(max_connections, config.keep_connections),
            starttls,
            hello: ClientId::default(),
        })
    }

    pub fn server(&self) -> String {
        format!("{}:{}", self.config.host, self.config.port)
    }

    pub fn username(&self) -> &str {
        self.config.username.as_deref().unwrap_or("")
    }

    /// Sends one message, bounded by `timeout` for the whole transaction.
    pub async fn send(&self, out: &Outgoing) -> Result<Delivered, Failure> {
        let Some(permit) = self.pool.permit().await else {
            return Err(Failure::local("the mailer is shutting down"));
        };
        // Boxed: a transaction's future is tens of kilobytes (TLS state), too much to move.
        let result = bounded(self.config.timeout, Box::pin(self.transaction(out, permit))).await;
        result
            .map(|response| Delivered {
                code: Some(u16::from(response.code())),
                reply: reply_text(&response),
            })
            .map_err(|e| self.hinted(e))
    }

    /// The failure with its hint, computed here once for every failure of a send.
    pub(super) fn hinted(&self, mut e: Failure) -> Failure {
        if e.hint.is_none() {
            e.hint = hint::hint(&e, &self.config);
        }
        e
    }

    /// One message: on a kept connection if there is one (a burst reuses its
    /// connections), else on a new one. A kept connection the server has closed in the
    /// meantime fails at MAIL, before anything was accepted: then once more on a new one.
    async fn transaction(
        &self,
        out: &Outgoing,
        permit: tokio::sync::OwnedSemaphorePermit,
    ) -> Result<Response, Failure> {
        if let Some(kept) = self.pool.take() {
            let mut conn = kept.conn;
            match self.deliver_on(&mut conn, out).await {
                Ok(response) => {
                    self.pool.keep(conn, kept.used + 1, permit);
                    return Ok(response);
                }
                Err(e)
                    if e.phase == Some(Phase::Mail)
                        && (e.class == ErrorClass::Connect || e.code == Some(421)) =>
                {
                    tracing::debug!(error = %e, "a kept connection was closed by the server; opening a new one");
                }
                Err(e) => return Err(e),
            }
        }
        let mut conn = self.open().await?;
        let response = self.deliver_on(&mut conn, out).await?;
        self.pool.keep(conn, 1, permit);
        Ok(response)
    }

    /// QUITs every kept connection: at shutdown.
    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// Connects and secures (STARTTLS or implicit TLS, and the pin), without logging in.
    pub(super) async fn connect(&self) -> Result<AsyncSmtpConnection, Failure> {
        let cfg = &self.config;
        entering(Phase::Connect);
        // Our own socket, for TCP_NODELAY: lettre writes a message's final "\r\n.\r\n"
        // on its own, and with Nagle's algorithm that small write waits for the
        // server's delayed ACK, 40 ms per message on Linux.
        let tcp = tokio::time::timeout(
            cfg.timeout,
            tokio::net::TcpStream::connect((cfg.host.as_str(), cfg.port)),
        )
        .await
        .map_err(|_| {
            Failure::new(
                ErrorClass::Timeout,
                Some(Phase::Connect),
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
                Failure::local(format!("`{}` is not a valid host name: {e}", cfg.host))
            })?;
            entering(Phase::Tls);
            let tls = tokio_rustls::TlsConnector::from(Arc::clone(&self.implicit))
                .connect(name, tcp)
                .await
                .map_err(|e| self.classify_io(&e))?;
            Box::new(ImplicitTls(tls))
        } else {
            Box::new(tcp)
        };
        entering(Phase::Greeting);
        // A server that says nothing after the connection is most often one that waits
        // for a TLS handshake (port 465 with `tls = "starttls"`): do not wait the whole
        // `timeout` to say so.
        let wait = if cfg.tls == TlsMode::Implicit {
            cfg.timeout
        } else {
            cfg.timeout.min(GREETING_TIMEOUT)
        };
        let mut conn = tokio::time::timeout(
            wait,
            AsyncSmtpConnection::connect_with_transport(stream, &self.hello),
        )
        .await
        .map_err(|_| {
            Failure::new(
                ErrorClass::Timeout,
                Some(Phase::Greeting),
                format!(
                    "{} accepted the connection but sent no greeting within {}",
                    self.server(),
                    humantime::format_duration(wait)
                ),
            )
        })?
        .map_err(|e| classify(Phase::Greeting, &e))?;

        if cfg.tls == TlsMode::Starttls {
            if !conn.server_info().supports_feature(Extension::StartTls) {
                // Nothing has been sent but EHLO: no AUTH, no message.
                let _ = conn.quit().await;
                return Err(Failure::new(
                    ErrorClass::Tls,
                    Some(Phase::Starttls),
                    "the server did not offer STARTTLS, and `tls = \"starttls\"` requires it; nothing was sent",
                ));
            }
            entering(Phase::Starttls);
            conn.starttls(self.starttls.clone(), &self.hello)
                .await
                .map_err(|e| classify(Phase::Starttls, &e))?;
        }
        // Implicit TLS was set up above (lettre sees our stream as plain).
        if cfg.tls == TlsMode::Starttls && !conn.is_encrypted() {
            conn.abort().await;
            return Err(Failure::new(
                ErrorClass::Tls,
                Some(Phase::Starttls),
                "the connection is not encrypted; nothing was sent",
            ));
        }
        self.check_pin(&mut conn).await?;
        Ok(conn)
    }

    /// After STARTTLS, the presented certificate against `tls_fingerprint` (with implicit
    /// TLS the pin was checked in the handshake itself).
    async fn check_pin(&self, conn: &mut AsyncSmtpConnection) -> Result<(), Failure> {
        let cfg = &self.config;
        if let (Some(pin), TlsMode::Starttls) = (&cfg.tls_fingerprint, cfg.tls) {
            let presented = conn
                .peer_certificate()
                .ok()
                .map(|der| tls::fingerprint(&der));
            let expected = tls::format_fingerprint(pin);
            if presented.as_deref() != Some(expected.as_str()) {
                conn.abort().await;
                return Err(Failure::new(
                    ErrorClass::Tls,
                    Some(Phase::Starttls),
                    format!(
                        "the server's certificate fingerprint {} does not match `tls_fingerprint` {expected}; nothing was sent",
                        presented.as_deref().unwrap_or("(none)")
                    ),
                ));
            }
        }
        Ok(())
    }

    /// MAIL, RCPT, DATA and the message on an open, authenticated connection.
    async fn deliver_on(
        &self,
        conn: &mut AsyncSmtpConnection,
        out: &Outgoing,
    ) -> Result<Response, Failure> {
        let envelope = &out.envelope;

        let mut options = Vec::new();
        let non_ascii = envelope
            .from()
            .into_iter()
            .chain(envelope.to())
            .any(|a| !AsRef::<str>::as_ref(a).is_ascii());
        if non_ascii {
            if !conn.server_info().supports_feature(Extension::SmtpUtfEight) {
                return Err(Failure::new(
                    ErrorClass::Permanent,
                    Some(Phase::Mail),
                    "an address is not ASCII and the server does not support SMTPUTF8",
                ));
            }
            options.push(MailParameter::SmtpUtfEight);
        }
        if !out.bytes.is_ascii() && conn.server_info().supports_feature(Extension::EightBitMime) {
            options.push(MailParameter::Body(MailBodyParameter::EightBitMime));
        }
        entering(Phase::Mail);
        conn.command(Mail::new(envelope.from().cloned(), options))
            .await
            .map_err(|e| classify(Phase::Mail, &e))?;
        entering(Phase::Rcpt);
        for rcpt in envelope.to() {
            conn.command(Rcpt::new(rcpt.clone(), vec![]))
                .await
                .map_err(|e| classify(Phase::Rcpt, &e))?;
        }
        entering(Phase::Data);
        conn.command(Data)
            .await
            .map_err(|e| classify(Phase::Data, &e))?;
        // lettre ends the data with "\r\n.\r\n", whose CRLF is the message's last line
        // ending: without this, the server would get one blank line more than the
        // outbox and `render` show.
        let bytes = out.bytes.strip_suffix(b"\r\n").unwrap_or(&out.bytes);
        conn.message(bytes)
            .await
            .map_err(|e| classify(Phase::Data, &e))
    }

    /// A connection or implicit-TLS handshake failure.
    fn classify_io(&self, e: &std::io::Error) -> Failure {
        let (class, detail) = if tls::is_tls_error(e) {
            (ErrorClass::Tls, tls::describe_failure(e))
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
        Failure::new(class, Some(Phase::Connect), detail)
    }
}

/// Turns a lettre error into a classified failure of `phase`.
pub(super) fn classify(phase: Phase, e: &lettre::transport::smtp::Error) -> Failure {
    let code = e.status().map(u16::from);
    let reply = code.map(|_| {
        std::error::Error::source(e)
            .map(ToString::to_string)
            .unwrap_or_default()
    });
    let class = match (phase, code) {
        (_, Some(c)) if is_quota(c, reply.as_deref().unwrap_or("")) => ErrorClass::Quota,
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
        (_, None) if tls::is_tls_failure(e) => ErrorClass::Tls,
        (_, None) => ErrorClass::Connect,
    };
    let detail = if class == ErrorClass::Tls && code.is_none() {
        tls::describe_failure(e)
    } else {
        error_chain(e)
    };
    Failure {
        class,
        phase: Some(phase),
        code,
        reply,
        detail,
        hint: None,
    }
}

/// A reply that says an account's limit is reached, not that the message or the login
/// is wrong (`shared/providers.md`, section 6): matched on code, enhanced code and a
/// stable phrase, never on the whole line.
pub(super) fn is_quota(code: u16, reply: &str) -> bool {
    let r = reply.to_ascii_lowercase();
    let has = |s: &str| r.contains(&s.to_ascii_lowercase());
    (has("5.4.5") && (has("daily user sending") || has("sending quota") || has("sending limit")))
        || has("SubmissionQuotaExceeded")
        || has("5.1.90")
        || (code == 454 && has("4.7.0") && has("too many login attempts"))
        || has("exceeded your daily sending limit")
}

/// A reply's lines joined with a space, as one log field.
fn reply_text(r: &Response) -> String {
    r.message().collect::<Vec<_>>().join(" ")
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
