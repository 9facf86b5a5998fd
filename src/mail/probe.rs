//! `check --smtp`: what the server presents (its TLS version and certificate), and a
//! real login, then QUIT without sending anything.

use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::ServerName;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use super::SmtpMailer;
use crate::config::{AuthMethod, SmtpConfig, TlsMode};
use crate::failure::{ErrorClass, Failure, Phase};
use crate::tls::{self, PeerInfo, Trust};

/// Facts from `check --smtp`.
#[derive(Clone, Debug)]
pub struct ProbeReport {
    pub server: String,
    pub greeting: String,
    pub tls: Option<PeerInfo>,
    pub auth: Option<String>,
}

impl SmtpMailer {
    /// Connects, does TLS, logs in and QUITs, without sending anything.
    pub async fn probe(&self) -> Result<ProbeReport, Failure> {
        let cfg = &self.config;
        let work = async {
            // The same connection, TLS and login as a send, so a failure is classed the
            // same way (a refused connection is `connect`, not `tls`).
            let mut conn = match self.open().await {
                Ok(conn) => conn,
                Err(mut e) => {
                    // Show the fingerprint of a certificate that failed verification,
                    // so the user can check it out of band and pin it.
                    if e.class == ErrorClass::Tls
                        && cfg.tls != TlsMode::None
                        && let Ok(info) = inspect(cfg, true).await
                    {
                        e.detail = format!(
                            "{}; the server presents `{}` issued by `{}`, expiring {}, fingerprint {}",
                            e.detail, info.subject, info.issuer, info.not_after, info.fingerprint
                        );
                    }
                    return Err(e);
                }
            };
            let greeting = conn.server_info().name().to_owned();
            let logs_in = self.password.is_some() || cfg.auth == AuthMethod::Xoauth2;
            let auth = match &cfg.username {
                Some(user) if logs_in => Some(format!("accepted for `{user}`")),
                _ => None,
            };
            let _ = conn.quit().await;
            // What the server presents, on a second connection that only looks.
            let tls = if cfg.tls == TlsMode::None {
                None
            } else {
                Some(
                    inspect(cfg, false)
                        .await
                        .map_err(|e| Failure::new(ErrorClass::Tls, Some(Phase::Starttls), e))?,
                )
            };
            Ok(ProbeReport {
                server: self.server(),
                greeting,
                tls,
                auth,
            })
        };
        super::smtp::bounded(cfg.timeout, Box::pin(work))
            .await
            .map_err(|e| self.hinted(e))
    }
}

/// Connects, does TLS (implicit, or after EHLO and STARTTLS) and reports the session.
/// Verification is the same as for sending: system roots plus `ca_file`.
/// With `any_certificate`, no certificate is refused: only to show the fingerprint of
/// one that failed verification, so the user can check it and pin it. Nothing is sent.
async fn inspect(cfg: &SmtpConfig, any_certificate: bool) -> Result<PeerInfo, String> {
    let trust = match (cfg.tls_fingerprint, any_certificate) {
        (_, true) => Trust::AnyCertificate,
        (Some(pin), false) => Trust::Pinned(pin),
        (None, false) => Trust::Roots(&cfg.extra_roots),
    };
    let config = Arc::new(tls::client_config(trust));
    let name = ServerName::try_from(cfg.host.clone())
        .map_err(|e| format!("`{}` is not a valid host name: {e}", cfg.host))?;
    let tcp = TcpStream::connect((cfg.host.as_str(), cfg.port))
        .await
        .map_err(|e| format!("connecting to {}:{}: {e}", cfg.host, cfg.port))?;
    let mut tcp = BufReader::new(tcp);
    if cfg.tls == TlsMode::Starttls {
        read_reply(&mut tcp).await?;
        tcp.get_mut()
            .write_all(b"EHLO cronmail-check\r\n")
            .await
            .map_err(|e| e.to_string())?;
        let ehlo = read_reply(&mut tcp).await?;
        if !ehlo.iter().any(|l| {
            l.get(4..)
                .is_some_and(|k| k.eq_ignore_ascii_case("STARTTLS"))
        }) {
            return Err("the server did not offer STARTTLS".to_owned());
        }
        tcp.get_mut()
            .write_all(b"STARTTLS\r\n")
            .await
            .map_err(|e| e.to_string())?;
        let reply = read_reply(&mut tcp).await?;
        if !reply.last().is_some_and(|l| l.starts_with("220")) {
            return Err(format!("the server refused STARTTLS: {}", reply.join(" ")));
        }
    }
    let connector = tokio_rustls::TlsConnector::from(config);
    let mut tls = connector
        .connect(name, tcp.into_inner())
        .await
        .map_err(|e| {
            e.get_ref()
                .and_then(|inner| inner.downcast_ref::<rustls::Error>())
                .map_or_else(|| format!("TLS handshake: {e}"), tls::describe_rustls)
        })?;
    let (_, session) = tls.get_ref();
    let version = session.protocol_version().map_or_else(
        || "unknown".to_owned(),
        |v| format!("{v:?}").replace('_', "."),
    );
    let leaf = session
        .peer_certificates()
        .and_then(|c| c.first())
        .ok_or("the server sent no certificate")?
        .clone();
    let _ = tls.write_all(b"QUIT\r\n").await;
    let _ = tls.shutdown().await;
    let mut info = tls::describe_certificate(&leaf);
    info.version = version;
    Ok(info)
}

/// Reads one (possibly multi-line) SMTP reply.
async fn read_reply(r: &mut BufReader<TcpStream>) -> Result<Vec<String>, String> {
    let mut lines = Vec::new();
    loop {
        let mut line = String::new();
        let n = tokio::time::timeout(Duration::from_secs(30), r.read_line(&mut line))
            .await
            .map_err(|_| "the server did not answer".to_owned())?
            .map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("the server closed the connection".to_owned());
        }
        let line = line.trim_end().to_owned();
        let last = line.as_bytes().get(3) != Some(&b'-');
        lines.push(line);
        if last || lines.len() > 100 {
            return Ok(lines);
        }
    }
}
