//! Logging in: PLAIN or LOGIN with the password, or XOAUTH2 with an access token from
//! `token_command` or the built-in refresh flow, and the one retry of a refused cached
//! token. Credentials are written to the socket only.

use std::fmt;

use lettre::transport::smtp::authentication::{Credentials, Mechanism};
use lettre::transport::smtp::client::AsyncSmtpConnection;
use lettre::transport::smtp::response::Response;
use secrecy::{ExposeSecret, SecretString};

use super::hint;
use super::smtp::{SmtpMailer, classify, entering};
use crate::config::AuthMethod;
use crate::failure::{ErrorClass, Failure, Phase};

impl SmtpMailer {
    /// Connects, secures and authenticates, then leaves the connection to the caller.
    pub(super) async fn open(&self) -> Result<AsyncSmtpConnection, Failure> {
        let cfg = &self.config;
        if let (Some(user), AuthMethod::Xoauth2) = (&cfg.username, cfg.auth) {
            // The token first: no connection is opened for a login that cannot happen.
            let (token, fresh) = self.access_token().await?;
            let mut conn = self.connect().await?;
            entering(Phase::Auth);
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
            entering(Phase::Auth);
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
            entering(Phase::Auth);
            if let Err(e) = conn.auth(mechanisms, &creds).await {
                conn.abort().await;
                let mut err = classify(Phase::Auth, &e);
                if err.code.is_none() && e.is_client() {
                    err.detail = format!("{e}; the server offers: {}", conn.server_info());
                }
                return Err(err);
            }
        }
        Ok(conn)
    }

    /// An XOAUTH2 access token, and whether it was obtained just now (not from the cache).
    async fn access_token(&self) -> Result<(SecretString, bool), Failure> {
        if let Some(oauth) = &self.oauth {
            return oauth
                .access_token(tokio::time::Instant::now())
                .await
                .map(|t| (t.token, t.fresh))
                .map_err(|e| {
                    let e = e.in_phase(Phase::Auth);
                    Failure {
                        detail: format!("getting an OAuth2 access token: {}", e.detail),
                        ..e
                    }
                });
        }
        let Some(source) = &self.config.token_command else {
            return Err(Failure::local("XOAUTH2 has no token source"));
        };
        let token = source.read().await.map_err(|e| {
            Failure::new(
                ErrorClass::Auth,
                Some(Phase::Auth),
                format!("getting the OAuth2 access token: {e}"),
            )
        })?;
        Ok((token, true))
    }

    /// A refused token. A token that looks like an App Password gets its own hint, which
    /// is then the hint of this failure (`send` computes no other).
    fn xoauth2_error(&self, e: &lettre::transport::smtp::Error, token: &SecretString) -> Failure {
        let mut err = classify(Phase::Auth, e);
        if looks_like_app_password(token.expose_secret()) {
            err.hint = Some(format!(
                "the access token looks like an App Password (16 letters), which works only \
                 with `auth = \"plain\"` or `\"login\"`; XOAUTH2 needs an OAuth2 access token. {}",
                hint::hint(&err, &self.config).unwrap_or_default()
            ));
        }
        err
    }
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

/// A Google App Password as Google shows it, in four groups of four letters with
/// spaces between (`abcd efgh ijkl mnop`). The spaces are only for reading: the password
/// is the 16 letters, and cronmail logs in with those (see `SmtpMailer::new`).
pub fn spaced_app_password(p: &str) -> bool {
    let groups: Vec<&str> = p.split(' ').collect();
    groups.len() == 4
        && groups
            .iter()
            .all(|g| g.len() == 4 && g.chars().all(|c| c.is_ascii_lowercase()))
}

/// Google's App Passwords are 16 lowercase letters, often shown in groups of four.
pub fn looks_like_app_password(token: &str) -> bool {
    let letters: String = token.chars().filter(|c| *c != ' ').collect();
    letters.len() == 16 && letters.chars().all(|c| c.is_ascii_lowercase())
}
