//! `OAuth2` for XOAUTH2: refresh tokens exchanged for access tokens over HTTPS, cached
//! until shortly before they expire, and the first refresh token obtained interactively
//! (`cronmail oauth2 authorize`: the device-code flow for Microsoft, a loopback redirect
//! with PKCE for Google).
//!
//! Tokens are secrets: they live in `SecretString`s, are written only to the token
//! endpoint, the SMTP socket and the refresh-token file, and never reach a log line or
//! an error message. Error messages carry the endpoint's `error` and
//! `error_description`, which hold no secret.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::time::Instant;

use crate::config::{OAuth2Config, OAuthProvider};
use crate::failure::{ErrorClass, Failure, error_chain};
use crate::secret::SecretSource;

/// A cached access token is used until this long before it expires, so that it does
/// not expire between the check and the server's verdict.
pub const EXPIRY_MARGIN: Duration = Duration::from_secs(60);

/// Assumed lifetime when the endpoint does not say (`expires_in` is optional in RFC 6749).
const DEFAULT_LIFETIME: Duration = Duration::from_secs(3600);

/// One request to the token endpoint may take this long.
const HTTP_TIMEOUT: Duration = Duration::from_secs(30);

/// A token endpoint's answer larger than this is not a token response.
const MAX_RESPONSE: usize = 256 * 1024;

/// A token endpoint failure, classed like a send failure.
#[derive(Clone, Debug)]
pub struct TokenError {
    pub class: ErrorClass,
    pub detail: String,
    pub hint: Option<String>,
    /// The endpoint's `error` code (`invalid_grant`, `authorization_pending`, ...).
    pub oauth_error: Option<String>,
}

impl fmt::Display for TokenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.detail)?;
        if let Some(h) = &self.hint {
            write!(f, " (hint: {h})")?;
        }
        Ok(())
    }
}

impl std::error::Error for TokenError {}

impl From<TokenError> for Failure {
    fn from(e: TokenError) -> Self {
        Failure {
            class: e.class,
            phase: None,
            code: None,
            reply: None,
            detail: e.detail,
            hint: e.hint,
        }
    }
}

/// A token endpoint's JSON answer, success or error (RFC 6749 5.1, 5.2; RFC 8628 3.5).
/// No `Debug`: it holds tokens.
#[derive(Deserialize, Default)]
struct TokenResponse {
    access_token: Option<String>,
    expires_in: Option<serde_json::Value>,
    refresh_token: Option<String>,
    error: Option<String>,
    error_description: Option<String>,
}

/// A successful token response.
pub struct Tokens {
    pub access_token: SecretString,
    pub expires_in: Duration,
    pub refresh_token: Option<SecretString>,
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

/// Access tokens from a refresh token, cached in memory. Concurrent callers wait for
/// one refresh instead of each making their own.
pub struct TokenSource {
    config: OAuth2Config,
    http: Endpoint,
    cache: tokio::sync::Mutex<Option<Cached>>,
}

impl TokenSource {
    pub fn new(config: &OAuth2Config, extra_roots: &[Vec<u8>]) -> Result<Self, TokenError> {
        Ok(TokenSource {
            config: config.clone(),
            http: Endpoint::new(extra_roots)?,
            cache: tokio::sync::Mutex::new(None),
        })
    }

    pub fn config(&self) -> &OAuth2Config {
        &self.config
    }

    /// A usable access token: the cached one, or a new one from the refresh token.
    pub async fn access_token(&self, now: Instant) -> Result<AccessToken, TokenError> {
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
    pub async fn refresh(&self) -> Result<Tokens, TokenError> {
        let file = &self.config.refresh_token_file;
        let refresh_token =
            SecretSource::File(file.clone())
                .read()
                .await
                .map_err(|e| TokenError {
                    class: ErrorClass::Auth,
                    detail: format!("reading the OAuth2 refresh token: {e}"),
                    hint: Some(format!(
                        "run `cronmail oauth2 authorize` once to sign in and write `{}`",
                        file.display()
                    )),
                    oauth_error: None,
                })?;
        let mut form = vec![
            ("grant_type", "refresh_token".to_owned()),
            ("refresh_token", refresh_token.expose_secret().to_owned()),
        ];
        if self.config.provider == Some(OAuthProvider::Microsoft) {
            form.push(("scope", self.config.scope.clone()));
        }
        let tokens = self.http.token_request(form, &self.config).await?;
        if let Some(new) = &tokens.refresh_token
            && new.expose_secret() != refresh_token.expose_secret()
        {
            let path = file.clone();
            let value = new.clone();
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
        Ok(tokens)
    }
}

/// HTTPS to the provider's endpoints, verified like the SMTP server (system roots and `ca_file`).
pub struct Endpoint {
    client: reqwest::Client,
}

impl Endpoint {
    pub fn new(extra_roots: &[Vec<u8>]) -> Result<Self, TokenError> {
        let client = reqwest::Client::builder()
            .use_preconfigured_tls(crate::tls::https_client_config(extra_roots))
            .https_only(true)
            .timeout(HTTP_TIMEOUT)
            .user_agent(concat!("cronmail/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| TokenError {
                class: ErrorClass::Local,
                detail: format!("setting up HTTPS for OAuth2: {}", error_chain(&e)),
                hint: None,
                oauth_error: None,
            })?;
        Ok(Endpoint { client })
    }

    /// POSTs `form` (plus the client's id and secret) to `url`: the status and the body.
    async fn post(
        &self,
        url: &str,
        mut form: Vec<(&'static str, String)>,
        config: &OAuth2Config,
    ) -> Result<(reqwest::StatusCode, Vec<u8>), TokenError> {
        form.push(("client_id", config.client_id.clone()));
        if let Some(src) = &config.client_secret {
            let secret = src.read().await.map_err(|e| TokenError {
                class: ErrorClass::Auth,
                detail: format!("reading the OAuth2 client secret: {e}"),
                hint: None,
                oauth_error: None,
            })?;
            form.push(("client_secret", secret.expose_secret().to_owned()));
        }
        let response = self
            .client
            .post(url)
            .header(reqwest::header::ACCEPT, "application/json")
            .form(&form)
            .send()
            .await
            .map_err(|e| http_error(url, &e))?;
        let status = response.status();
        let body = response.bytes().await.map_err(|e| http_error(url, &e))?;
        if body.len() > MAX_RESPONSE {
            return Err(TokenError {
                class: ErrorClass::Transient,
                detail: format!(
                    "{url} answered {status} with {} bytes, too many for a token response",
                    body.len()
                ),
                hint: None,
                oauth_error: None,
            });
        }
        Ok((status, body.to_vec()))
    }

    /// A token request (refresh, authorization code or device code) and its tokens.
    async fn token_request(
        &self,
        form: Vec<(&'static str, String)>,
        config: &OAuth2Config,
    ) -> Result<Tokens, TokenError> {
        let url = &config.token_url;
        let (status, body) = self.post(url, form, config).await?;
        let r = match serde_json::from_slice::<TokenResponse>(&body) {
            Ok(r) => r,
            Err(_) if status.is_success() => {
                return Err(TokenError {
                    class: ErrorClass::Transient,
                    detail: format!(
                        "{url} answered {status} with something that is not a JSON token response"
                    ),
                    hint: Some("check `token_url`".to_owned()),
                    oauth_error: None,
                });
            }
            // Error pages (a proxy's 502, a 404) are not JSON; the status says enough.
            Err(_) => TokenResponse::default(),
        };
        if let (true, Some(access)) = (status.is_success(), r.access_token) {
            let expires_in = r
                .expires_in
                .as_ref()
                .and_then(|v| v.as_u64().or_else(|| v.as_str()?.parse().ok()))
                .map_or(DEFAULT_LIFETIME, Duration::from_secs);
            return Ok(Tokens {
                access_token: SecretString::from(access),
                expires_in,
                refresh_token: r.refresh_token.map(SecretString::from),
            });
        }
        Err(endpoint_error(
            url,
            status,
            r.error.as_deref(),
            r.error_description.as_deref(),
            config,
        ))
    }
}

/// Names what the token endpoint refused, and what to do.
fn endpoint_error(
    url: &str,
    status: reqwest::StatusCode,
    error: Option<&str>,
    description: Option<&str>,
    config: &OAuth2Config,
) -> TokenError {
    let said = match (error, description) {
        (Some(e), Some(d)) => format!("{e}: {}", d.lines().next().unwrap_or_default()),
        (Some(e), None) => e.to_owned(),
        (None, _) => "no OAuth2 error code".to_owned(),
    };
    let detail = format!("the token endpoint {url} answered {status} ({said})");
    let file = config.refresh_token_file.display();
    let (class, hint) = match error {
        Some("invalid_grant") => (
            ErrorClass::Auth,
            format!(
                "the refresh token in `{file}` is no longer valid: it was revoked, it expired (Google: after 7 days \
                 while the app is in \"Testing\"; Microsoft: after 90 days unused), or the account's password changed. \
                 Sign in again with `cronmail oauth2 authorize`"
            ),
        ),
        Some("invalid_client" | "unauthorized_client") => (
            ErrorClass::Auth,
            if description.is_some_and(|d| d.contains("AADSTS7000218")) {
                "Microsoft wants a client secret: in the app registration, under Authentication, set \
                 \"Allow public client flows\" to Yes (or configure `client_secret_*`)"
                    .to_owned()
            } else {
                "the endpoint does not accept this client: check `client_id` and the client secret \
                 (Google's Desktop-app clients need `client_secret_*`; Microsoft's public clients need none)"
                    .to_owned()
            },
        ),
        Some("invalid_scope") => (
            ErrorClass::Auth,
            format!(
                "the scope `{}` is not granted to this client; add it to the app registration",
                config.scope
            ),
        ),
        _ if status.is_server_error() || status == reqwest::StatusCode::TOO_MANY_REQUESTS => (
            ErrorClass::Transient,
            "the token endpoint is having trouble; cronmail will try again".to_owned(),
        ),
        _ => (
            ErrorClass::Auth,
            format!(
                "check `token_url` ({url}) and the app registration, or sign in again with `cronmail oauth2 authorize`"
            ),
        ),
    };
    TokenError {
        class,
        detail,
        hint: Some(hint),
        oauth_error: error.map(str::to_owned),
    }
}

fn http_error(url: &str, e: &reqwest::Error) -> TokenError {
    if let Some(r) = crate::tls::rustls_error(e) {
        return TokenError {
            class: ErrorClass::Tls,
            detail: format!("HTTPS to {url}: {}", crate::tls::describe_rustls(r)),
            hint: Some(
                "the token endpoint's certificate is not trusted; add its CA with `ca_file` (or SSL_CERT_FILE)"
                    .to_owned(),
            ),
            oauth_error: None,
        };
    }
    let class = if e.is_timeout() {
        ErrorClass::Timeout
    } else {
        ErrorClass::Connect
    };
    // reqwest's messages name the URL, never the form (which holds the tokens).
    TokenError {
        class,
        detail: format!("reaching the token endpoint: {}", error_chain(e)),
        hint: Some("cronmail will try again".to_owned()),
        oauth_error: None,
    }
}

// ---------------------------------------------------------------------------------------
// `cronmail oauth2 authorize`

/// What `authorize` tells the person at the terminal, and where it saved the token.
pub trait Prompt {
    fn say(&mut self, text: &str);
}

impl<W: std::io::Write> Prompt for W {
    fn say(&mut self, text: &str) {
        let _ = writeln!(self, "{text}");
        let _ = self.flush();
    }
}

#[derive(Deserialize)]
#[allow(clippy::struct_field_names)] // RFC 8628's names
struct DeviceCode {
    device_code: String,
    user_code: String,
    verification_uri: String,
    expires_in: Option<u64>,
    interval: Option<u64>,
    message: Option<String>,
}

/// Signs in interactively and writes the refresh token file. Returns the file written.
pub async fn authorize(
    config: &OAuth2Config,
    extra_roots: &[Vec<u8>],
    port: u16,
    prompt: &mut dyn Prompt,
) -> Result<PathBuf, TokenError> {
    let endpoint = Endpoint::new(extra_roots)?;
    let tokens = match (&config.device_code_url, &config.authorize_url) {
        (Some(url), _) => device_flow(&endpoint, url, config, prompt).await?,
        (None, Some(url)) => loopback_flow(&endpoint, url, config, port, prompt).await?,
        (None, None) => {
            return Err(TokenError {
                class: ErrorClass::Local,
                detail: "[smtp.oauth2] names neither `device_code_url` nor `authorize_url`, so there is no way to sign in"
                    .to_owned(),
                hint: Some("set `provider = \"microsoft\"` or `\"google\"`, or one of those URLs".to_owned()),
                oauth_error: None,
            });
        }
    };
    let Some(refresh) = tokens.refresh_token else {
        return Err(TokenError {
            class: ErrorClass::Auth,
            detail: "the sign-in worked, but the endpoint gave no refresh token".to_owned(),
            hint: Some(match config.provider {
                Some(OAuthProvider::Microsoft) => "the scope must include `offline_access`".to_owned(),
                _ => "Google gives one only with `access_type=offline` and consent; remove cronmail's access at \
                      https://myaccount.google.com/permissions and run authorize again"
                    .to_owned(),
            }),
            oauth_error: None,
        });
    };
    let path = config.refresh_token_file.clone();
    let value = refresh.expose_secret().to_owned();
    let target = path.clone();
    tokio::task::spawn_blocking(move || {
        if let Some(dir) = target.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        crate::persist::write_secret_file(&target, &value)
    })
    .await
    .map_err(|e| TokenError {
        class: ErrorClass::Local,
        detail: e.to_string(),
        hint: None,
        oauth_error: None,
    })?
    .map_err(|e| TokenError {
        class: ErrorClass::Local,
        detail: format!("writing `{}`: {e}", path.display()),
        hint: Some("run as a user that may write there (e.g. with sudo)".to_owned()),
        oauth_error: None,
    })?;
    Ok(path)
}

/// RFC 8628: show a code, let the person sign in anywhere, poll the token endpoint.
async fn device_flow(
    endpoint: &Endpoint,
    url: &str,
    config: &OAuth2Config,
    prompt: &mut dyn Prompt,
) -> Result<Tokens, TokenError> {
    let form = vec![("scope", config.scope.clone())];
    let (status, body) = endpoint.post(url, form, config).await?;
    let code: DeviceCode = match serde_json::from_slice(&body) {
        Ok(c) if status.is_success() => c,
        _ => {
            let r: TokenResponse = serde_json::from_slice(&body).unwrap_or_default();
            return Err(endpoint_error(
                url,
                status,
                r.error.as_deref(),
                r.error_description.as_deref(),
                config,
            ));
        }
    };
    prompt.say(&code.message.clone().unwrap_or_else(|| {
        format!(
            "To sign in, open {} in a browser and enter the code {}",
            code.verification_uri, code.user_code
        )
    }));
    prompt.say("Waiting for the sign-in to finish (Ctrl-C to give up)...");
    let mut interval = Duration::from_secs(code.interval.unwrap_or(5));
    let deadline = Instant::now() + Duration::from_secs(code.expires_in.unwrap_or(900));
    loop {
        tokio::time::sleep(interval).await;
        if Instant::now() > deadline {
            return Err(TokenError {
                class: ErrorClass::Auth,
                detail: "the code expired before the sign-in finished".to_owned(),
                hint: Some("run `cronmail oauth2 authorize` again".to_owned()),
                oauth_error: None,
            });
        }
        let form = vec![
            (
                "grant_type",
                "urn:ietf:params:oauth:grant-type:device_code".to_owned(),
            ),
            ("device_code", code.device_code.clone()),
        ];
        match endpoint.token_request(form, config).await {
            Ok(tokens) => return Ok(tokens),
            Err(mut e) => match e.oauth_error.as_deref() {
                Some("authorization_pending") => {}
                Some("slow_down") => interval += Duration::from_secs(5),
                Some("authorization_declined" | "access_denied") => {
                    e.hint = Some("the sign-in was declined in the browser".to_owned());
                    return Err(e);
                }
                Some("expired_token") => {
                    e.hint =
                        Some("the code expired; run `cronmail oauth2 authorize` again".to_owned());
                    return Err(e);
                }
                _ => return Err(e),
            },
        }
    }
}

/// RFC 8252: the browser signs in and is redirected to a listener on 127.0.0.1, with
/// PKCE (RFC 7636) so that the code is useless to anyone who sees the redirect.
#[allow(clippy::too_many_lines)] // until the oauth2 crate takes the protocol (oauth2/authorize.rs)
async fn loopback_flow(
    endpoint: &Endpoint,
    url: &str,
    config: &OAuth2Config,
    port: u16,
    prompt: &mut dyn Prompt,
) -> Result<Tokens, TokenError> {
    use base64::Engine as _;
    use sha2::Digest as _;
    let local = |detail: String| TokenError {
        class: ErrorClass::Local,
        detail,
        hint: None,
        oauth_error: None,
    };
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .map_err(|e| local(format!("listening on 127.0.0.1:{port}: {e}")))?;
    let port = listener
        .local_addr()
        .map_err(|e| local(e.to_string()))?
        .port();
    let redirect_uri = format!("http://127.0.0.1:{port}/");
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let verifier = b64.encode(random_bytes::<32>().map_err(local)?);
    let state = b64.encode(random_bytes::<16>().map_err(local)?);
    let challenge = b64.encode(sha2::Sha256::digest(verifier.as_bytes()));
    let sign_in = reqwest::Url::parse_with_params(
        url,
        &[
            ("client_id", config.client_id.as_str()),
            ("redirect_uri", redirect_uri.as_str()),
            ("response_type", "code"),
            ("scope", config.scope.as_str()),
            ("access_type", "offline"),
            ("prompt", "consent"),
            ("code_challenge", challenge.as_str()),
            ("code_challenge_method", "S256"),
            ("state", state.as_str()),
        ],
    )
    .map_err(|e| local(format!("`authorize_url` {url}: {e}")))?;
    prompt.say(&format!(
        "Open this address in a browser and sign in as the account in `username`:\n\n  {sign_in}\n"
    ));
    prompt.say(&format!(
        "The browser is then sent back to {redirect_uri}. If the browser runs on another machine, forward \
         the port first: ssh -L {port}:127.0.0.1:{port} THIS-HOST (and fix it with --port)."
    ));
    prompt.say("Waiting for the sign-in to finish (Ctrl-C to give up)...");

    let code = loop {
        let (mut stream, _) = listener
            .accept()
            .await
            .map_err(|e| local(format!("accepting the browser's connection: {e}")))?;
        let Ok(Some(target)) = read_request_target(&mut stream).await else {
            continue;
        };
        let Ok(got) = reqwest::Url::parse(&format!("http://127.0.0.1{target}")) else {
            continue;
        };
        let param = |k: &str| {
            got.query_pairs()
                .find(|(key, _)| key == k)
                .map(|(_, v)| v.into_owned())
        };
        if param("state").is_none() {
            let _ = respond(&mut stream, "404 Not Found", "Not the sign-in redirect.").await;
            continue;
        }
        if param("state").as_deref() != Some(state.as_str()) {
            let _ = respond(
                &mut stream,
                "400 Bad Request",
                "This redirect is not from the sign-in cronmail started.",
            )
            .await;
            continue;
        }
        if let Some(error) = param("error") {
            let _ = respond(
                &mut stream,
                "200 OK",
                "cronmail: the sign-in did not complete. You can close this tab.",
            )
            .await;
            return Err(TokenError {
                class: ErrorClass::Auth,
                detail: format!("the sign-in page answered `{error}`"),
                hint: Some("run `cronmail oauth2 authorize` again and allow access".to_owned()),
                oauth_error: None,
            });
        }
        if let Some(code) = param("code") {
            let _ = respond(
                &mut stream,
                "200 OK",
                "cronmail is signed in. You can close this tab.",
            )
            .await;
            break code;
        }
        let _ = respond(&mut stream, "400 Bad Request", "No code in this redirect.").await;
    };
    let form = vec![
        ("grant_type", "authorization_code".to_owned()),
        ("code", code),
        ("redirect_uri", redirect_uri),
        ("code_verifier", verifier),
    ];
    endpoint.token_request(form, config).await
}

/// The request target of one HTTP request (`/?code=...`), from at most 16 KiB.
async fn read_request_target(
    stream: &mut tokio::net::TcpStream,
) -> std::io::Result<Option<String>> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 2048];
    let read = async {
        while !buf.windows(4).any(|w| w == b"\r\n\r\n") && buf.len() < 16 * 1024 {
            let n = stream.read(&mut chunk).await?;
            if n == 0 {
                break;
            }
            buf.extend_from_slice(&chunk[..n]);
        }
        Ok::<_, std::io::Error>(())
    };
    if tokio::time::timeout(Duration::from_secs(10), read)
        .await
        .is_err()
    {
        return Ok(None);
    }
    let text = String::from_utf8_lossy(&buf);
    let mut parts = text.lines().next().unwrap_or_default().split(' ');
    Ok(match (parts.next(), parts.next()) {
        (Some("GET"), Some(target)) if target.starts_with('/') => Some(target.to_owned()),
        _ => None,
    })
}

async fn respond(
    stream: &mut tokio::net::TcpStream,
    status: &str,
    text: &str,
) -> std::io::Result<()> {
    let body = format!("<!doctype html><title>cronmail</title><p>{text}</p>\n");
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/html; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body.as_bytes()).await?;
    stream.shutdown().await
}

fn random_bytes<const N: usize>() -> Result<[u8; N], String> {
    let mut out = [0u8; N];
    rustls::crypto::ring::default_provider()
        .secure_random
        .fill(&mut out)
        .map_err(|_| "no secure random numbers".to_owned())?;
    Ok(out)
}

#[cfg(test)]
mod tests {
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
        let e = endpoint_error(
            "https://login.example/token",
            reqwest::StatusCode::BAD_REQUEST,
            Some("invalid_grant"),
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
        let e = endpoint_error(
            "u",
            reqwest::StatusCode::SERVICE_UNAVAILABLE,
            None,
            None,
            &config,
        );
        assert_eq!(e.class, ErrorClass::Transient);
    }
}
