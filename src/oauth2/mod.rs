//! `OAuth2` for XOAUTH2: refresh tokens exchanged for access tokens over HTTPS, cached
//! until shortly before they expire, and the first refresh token obtained interactively
//! (`authorize`: the device-code flow for Microsoft, a loopback redirect with PKCE for
//! Google).
//!
//! The protocol (forms, token and error responses, PKCE, the device-code polling) is
//! the `oauth2` crate's. Ours are the parts no crate does for us: the HTTPS client on
//! the same trust as SMTP (`endpoint`), the cache and the refresh-once rule, the
//! rotated refresh token saved atomically, what each refusal means, and the loopback
//! listener (`authorize`).
//!
//! Tokens are secrets: they live in `SecretString`s, are written only to the token
//! endpoint, the SMTP socket and the refresh-token file, and never reach a log line or
//! an error message. Error messages carry the endpoint's `error` and
//! `error_description`, which hold no secret.

mod authorize;
mod endpoint;

use std::time::Duration;

use oauth2::AuthType;
use oauth2::basic::BasicClient;
use oauth2::{ClientId, ClientSecret, EndpointNotSet, EndpointSet, RefreshToken, Scope, TokenUrl};
use secrecy::{ExposeSecret, SecretString};
use tokio::time::Instant;

pub use authorize::authorize;
use endpoint::{Http, error_code, request_failure};

use crate::config::{OAuth2Config, OAuthProvider};
use crate::failure::{ErrorClass, Failure};
use crate::secret::SecretSource;

/// A cached access token is used until this long before it expires, so that it does
/// not expire between the check and the server's verdict.
pub const EXPIRY_MARGIN: Duration = Duration::from_secs(60);

/// Assumed lifetime when the endpoint does not say (`expires_in` is optional in RFC 6749).
const DEFAULT_LIFETIME: Duration = Duration::from_secs(3600);

/// A successful token response.
pub struct Tokens {
    pub access_token: SecretString,
    pub expires_in: Duration,
    pub refresh_token: Option<SecretString>,
}

impl Tokens {
    fn from_response(r: &impl oauth2::TokenResponse) -> Self {
        Tokens {
            access_token: SecretString::from(r.access_token().secret().clone()),
            expires_in: r.expires_in().unwrap_or(DEFAULT_LIFETIME),
            refresh_token: r
                .refresh_token()
                .map(|t| SecretString::from(t.secret().clone())),
        }
    }
}

/// An access token and when to stop using it.
struct Cached {
    token: SecretString,
    usable_until: Instant,
}

impl Cached {
    fn new(token: SecretString, obtained: Instant, expires_in: Duration) -> Self {
        Cached {
            token,
            usable_until: obtained + expires_in.saturating_sub(EXPIRY_MARGIN),
        }
    }

    fn usable(&self, now: Instant) -> bool {
        now < self.usable_until
    }
}

/// An access token as handed out, and whether it was fetched just now.
pub struct AccessToken {
    pub token: SecretString,
    pub fresh: bool,
}

/// The crate's client for a config's token endpoint, with the client's id and secret
/// sent in the form (as Microsoft and Google both accept, and as cronmail always did).
type TokenClient =
    BasicClient<EndpointNotSet, EndpointNotSet, EndpointNotSet, EndpointNotSet, EndpointSet>;

async fn token_client(config: &OAuth2Config) -> Result<TokenClient, Failure> {
    let token_url = TokenUrl::new(config.token_url.clone())
        .map_err(|e| Failure::local(format!("`token_url` {}: {e}", config.token_url)))?;
    let mut client = BasicClient::new(ClientId::new(config.client_id.clone()))
        .set_auth_type(AuthType::RequestBody)
        .set_token_uri(token_url);
    if let Some(secret) = client_secret(config).await? {
        client = client.set_client_secret(secret);
    }
    Ok(client)
}

/// The client secret, read from its source at each use.
async fn client_secret(config: &OAuth2Config) -> Result<Option<ClientSecret>, Failure> {
    let Some(src) = &config.client_secret else {
        return Ok(None);
    };
    let secret = src.read().await.map_err(|e| {
        Failure::new(
            ErrorClass::Auth,
            None,
            format!("reading the OAuth2 client secret: {e}"),
        )
    })?;
    Ok(Some(ClientSecret::new(secret.expose_secret().to_owned())))
}

/// Access tokens from a refresh token, cached in memory. Concurrent callers wait for
/// one refresh instead of each making their own.
pub struct TokenSource {
    config: OAuth2Config,
    http: Http,
    cache: tokio::sync::Mutex<Option<Cached>>,
}

impl TokenSource {
    pub fn new(config: &OAuth2Config, extra_roots: &[Vec<u8>]) -> Result<Self, Failure> {
        Ok(TokenSource {
            config: config.clone(),
            http: Http::new(extra_roots)?,
            cache: tokio::sync::Mutex::new(None),
        })
    }

    /// A usable access token: the cached one, or a new one from the refresh token.
    pub async fn access_token(&self, now: Instant) -> Result<AccessToken, Failure> {
        let mut cache = self.cache.lock().await;
        if let Some(c) = cache.as_ref().filter(|c| c.usable(now)) {
            return Ok(AccessToken {
                token: c.token.clone(),
                fresh: false,
            });
        }
        *cache = None;
        let tokens = self.refresh().await?;
        let token = tokens.access_token.clone();
        *cache = Some(Cached::new(tokens.access_token, now, tokens.expires_in));
        Ok(AccessToken { token, fresh: true })
    }

    /// Drops the cached token, after the server refused it.
    pub async fn forget(&self) {
        *self.cache.lock().await = None;
    }

    /// Exchanges the refresh token for an access token, and persists a rotated refresh token.
    pub async fn refresh(&self) -> Result<Tokens, Failure> {
        let file = &self.config.refresh_token_file;
        let refresh_token = SecretSource::File(file.clone()).read().await.map_err(|e| {
            Failure::new(
                ErrorClass::Auth,
                None,
                format!("reading the OAuth2 refresh token: {e}"),
            )
            .with_hint(format!(
                "run `cronmail oauth2 authorize` once to sign in and write `{}`",
                file.display()
            ))
        })?;
        let client = token_client(&self.config).await?;
        let rt = RefreshToken::new(refresh_token.expose_secret().to_owned());
        let mut request = client.exchange_refresh_token(&rt);
        // Microsoft issues a token for the scope asked for at each refresh.
        if self.config.provider == Some(OAuthProvider::Microsoft) {
            for s in self.config.scope.split_whitespace() {
                request = request.add_scope(Scope::new(s.to_owned()));
            }
        }
        let response = request
            .request_async(&self.http)
            .await
            .map_err(|e| request_failure(&self.config.token_url, &e, error_code, &self.config))?;
        let tokens = Tokens::from_response(&response);
        if let Some(new) = &tokens.refresh_token
            && new.expose_secret() != refresh_token.expose_secret()
        {
            self.save_rotated(new.clone()).await;
        }
        Ok(tokens)
    }

    /// Saves a refresh token the endpoint rotated. A failure is logged, not returned:
    /// the access token in hand is good, and the old refresh token may still work.
    async fn save_rotated(&self, value: SecretString) {
        let file = self.config.refresh_token_file.clone();
        let path = file.clone();
        let written = tokio::task::spawn_blocking(move || {
            crate::persist::write_secret_file(&path, value.expose_secret())
        })
        .await;
        match written {
            Ok(Ok(())) => tracing::info!(
                file = %file.display(),
                "the token endpoint rotated the OAuth2 refresh token; saved the new one"
            ),
            Ok(Err(e)) => tracing::error!(
                file = %file.display(),
                "the token endpoint rotated the OAuth2 refresh token, and saving the new one failed: {e}. \
                 The old one may stop working; make the file writable, or run `cronmail oauth2 authorize` again"
            ),
            Err(e) => tracing::error!("saving the rotated OAuth2 refresh token: {e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    #[test]
    fn a_cached_token_is_used_until_the_margin_before_expiry() {
        let t0 = Instant::now();
        let c = Cached::new(SecretString::from("tok"), t0, Duration::from_secs(3600));
        assert!(c.usable(t0));
        assert!(c.usable(t0 + Duration::from_secs(3539)));
        assert!(!c.usable(t0 + Duration::from_secs(3540)));
        assert!(!c.usable(t0 + Duration::from_secs(7200)));
    }

    #[test]
    fn a_token_shorter_lived_than_the_margin_is_never_reused() {
        let t0 = Instant::now();
        let c = Cached::new(SecretString::from("tok"), t0, Duration::from_secs(30));
        assert!(!c.usable(t0));
    }

    #[test]
    fn invalid_grant_says_to_sign_in_again_and_is_an_auth_failure() {
        let config = OAuth2Config {
            provider: Some(OAuthProvider::Microsoft),
            client_id: "id".into(),
            client_secret: None,
            refresh_token_file: PathBuf::from("/var/lib/cronmail/oauth2-refresh-token"),
            token_url: "https://login.example/token".into(),
            device_code_url: None,
            authorize_url: None,
            scope: "s".into(),
        };
        let e = endpoint::refused(
            "https://login.example/token",
            "invalid_grant",
            Some("AADSTS70008: The refresh token has expired due to inactivity.\r\nTrace ID: x"),
            &config,
        );
        assert_eq!(e.class, ErrorClass::Auth);
        assert!(
            e.detail.contains("invalid_grant: AADSTS70008"),
            "{}",
            e.detail
        );
        assert!(!e.detail.contains("Trace ID"), "{}", e.detail);
        assert!(e.hint.unwrap().contains("cronmail oauth2 authorize"));
        let e = endpoint::refused("u", "temporarily_unavailable", None, &config);
        assert_eq!(e.class, ErrorClass::Transient);
    }
}
