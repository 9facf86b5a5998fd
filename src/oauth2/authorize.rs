//! `cronmail oauth2 authorize`: the one interactive sign-in that yields a refresh token.
//!
//! - With a device-code endpoint (Microsoft's default), RFC 8628: show a code, let the
//!   person sign in on any device, and poll the token endpoint (the `oauth2` crate
//!   polls, honouring `slow_down`).
//! - With a sign-in page (Google's default), RFC 8252: the browser is redirected to a
//!   listener on 127.0.0.1, with PKCE (RFC 7636) so that the code is useless to anyone
//!   who sees the redirect, and a `state` that is checked.
//!
//! Runs at a terminal, once; what runs on every send is in `mod.rs`.

use std::path::PathBuf;
use std::time::Duration;

use oauth2::basic::BasicClient;
use oauth2::{
    AuthUrl, AuthorizationCode, ClientId, CsrfToken, DeviceAuthorizationUrl,
    ExtraDeviceAuthorizationFields, PkceCodeChallenge, RedirectUrl, Scope,
};
use oauth2::{DeviceAuthorizationResponse, DeviceCodeErrorResponseType};
use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use super::endpoint::{Http, error_code, request_failure};
use super::{Tokens, client_secret, token_client};
use crate::config::{OAuth2Config, OAuthProvider};
use crate::failure::{ErrorClass, Failure};

/// How long the browser's redirect request may take to arrive whole.
const REDIRECT_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Largest redirect request read.
const MAX_REDIRECT_REQUEST: usize = 16 * 1024;

/// What `authorize` tells the person at the terminal.
pub trait Prompt {
    fn say(&mut self, text: &str);
}

impl<W: std::io::Write> Prompt for W {
    fn say(&mut self, text: &str) {
        let _ = writeln!(self, "{text}");
        let _ = self.flush();
    }
}

/// Microsoft adds a ready-made sentence to its device-code answer.
#[derive(Debug, Deserialize, Serialize)]
struct DeviceMessage {
    message: Option<String>,
}

impl ExtraDeviceAuthorizationFields for DeviceMessage {}

/// Signs in interactively and writes the refresh token file. Returns the file written.
pub async fn authorize(
    config: &OAuth2Config,
    extra_roots: &[Vec<u8>],
    port: u16,
    prompt: &mut dyn Prompt,
) -> Result<PathBuf, Failure> {
    let http = Http::new(extra_roots)?;
    let tokens = match (&config.device_code_url, &config.authorize_url) {
        (Some(url), _) => device_flow(&http, url, config, prompt).await?,
        (None, Some(url)) => loopback_flow(&http, url, config, port, prompt).await?,
        (None, None) => {
            return Err(Failure::local(
                "[smtp.oauth2] names neither `device_code_url` nor `authorize_url`, so there is no way to sign in",
            )
            .with_hint("set `provider = \"microsoft\"` or `\"google\"`, or one of those URLs"));
        }
    };
    let Some(refresh) = tokens.refresh_token else {
        return Err(Failure::new(
            ErrorClass::Auth,
            None,
            "the sign-in worked, but the endpoint gave no refresh token",
        )
        .with_hint(match config.provider {
            Some(OAuthProvider::Microsoft) => "the scope must include `offline_access`",
            _ => {
                "Google gives one only with `access_type=offline` and consent; remove cronmail's access at \
                 https://myaccount.google.com/permissions and run authorize again"
            }
        }));
    };
    let path = config.refresh_token_file.clone();
    let target = path.clone();
    tokio::task::spawn_blocking(move || {
        if let Some(dir) = target.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        crate::persist::write_secret_file(&target, refresh.expose_secret())
    })
    .await
    .map_err(|e| Failure::local(e.to_string()))?
    .map_err(|e| {
        Failure::local(format!("writing `{}`: {e}", path.display()))
            .with_hint("run as a user that may write there (e.g. with sudo)")
    })?;
    Ok(path)
}

fn scopes(config: &OAuth2Config) -> impl Iterator<Item = Scope> + '_ {
    config
        .scope
        .split_whitespace()
        .map(|s| Scope::new(s.to_owned()))
}

/// RFC 8628: show a code, let the person sign in anywhere, poll the token endpoint.
async fn device_flow(
    http: &Http,
    url: &str,
    config: &OAuth2Config,
    prompt: &mut dyn Prompt,
) -> Result<Tokens, Failure> {
    let device_url = DeviceAuthorizationUrl::new(url.to_owned())
        .map_err(|e| Failure::local(format!("`device_code_url` {url}: {e}")))?;
    let client = token_client(config)
        .await?
        .set_device_authorization_url(device_url);
    let details: DeviceAuthorizationResponse<DeviceMessage> = client
        .exchange_device_code()
        .add_scopes(scopes(config))
        .request_async(http)
        .await
        .map_err(|e| request_failure(url, &e, error_code, config))?;
    prompt.say(&details.extra_fields().message.clone().unwrap_or_else(|| {
        format!(
            "To sign in, open {} in a browser and enter the code {}",
            details.verification_uri().as_str(),
            details.user_code().secret()
        )
    }));
    prompt.say("Waiting for the sign-in to finish (Ctrl-C to give up)...");
    let response = client
        .exchange_device_access_token(&details)
        .request_async(http, tokio::time::sleep, None)
        .await
        .map_err(|e| {
            let mut failure = request_failure(&config.token_url, &e, error_code, config);
            if let oauth2::RequestTokenError::ServerResponse(r) = &e {
                match r.error() {
                    DeviceCodeErrorResponseType::AccessDenied => {
                        failure.hint = Some("the sign-in was declined in the browser".to_owned());
                    }
                    DeviceCodeErrorResponseType::ExpiredToken => {
                        failure.hint = Some(
                            "the code expired before the sign-in finished; run `cronmail oauth2 authorize` again"
                                .to_owned(),
                        );
                    }
                    DeviceCodeErrorResponseType::Basic(b) if b.as_ref() == "authorization_declined" => {
                        failure.hint = Some("the sign-in was declined in the browser".to_owned());
                    }
                    _ => {}
                }
            }
            failure
        })?;
    Ok(Tokens::from_response(&response))
}

/// RFC 8252: the browser signs in and is redirected to a listener on 127.0.0.1.
async fn loopback_flow(
    http: &Http,
    url: &str,
    config: &OAuth2Config,
    port: u16,
    prompt: &mut dyn Prompt,
) -> Result<Tokens, Failure> {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .map_err(|e| Failure::local(format!("listening on 127.0.0.1:{port}: {e}")))?;
    let port = listener
        .local_addr()
        .map_err(|e| Failure::local(e.to_string()))?
        .port();
    let redirect_uri = format!("http://127.0.0.1:{port}/");
    let auth_url = AuthUrl::new(url.to_owned())
        .map_err(|e| Failure::local(format!("`authorize_url` {url}: {e}")))?;
    let redirect = RedirectUrl::new(redirect_uri.clone())
        .map_err(|e| Failure::local(format!("the redirect {redirect_uri}: {e}")))?;
    let mut client = BasicClient::new(ClientId::new(config.client_id.clone()))
        .set_auth_uri(auth_url)
        .set_redirect_uri(redirect.clone());
    if let Some(secret) = client_secret(config).await? {
        client = client.set_client_secret(secret);
    }
    let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
    let (sign_in, state) = client
        .authorize_url(CsrfToken::new_random)
        .add_scopes(scopes(config))
        // Google hands out a refresh token only for offline access, with consent.
        .add_extra_param("access_type", "offline")
        .add_extra_param("prompt", "consent")
        .set_pkce_challenge(challenge)
        .url();
    prompt.say(&format!(
        "Open this address in a browser and sign in as the account in `username`:\n\n  {sign_in}\n"
    ));
    prompt.say(&format!(
        "The browser is then sent back to {redirect_uri}. If the browser runs on another machine, forward \
         the port first: ssh -L {port}:127.0.0.1:{port} THIS-HOST (and fix it with --port)."
    ));
    prompt.say("Waiting for the sign-in to finish (Ctrl-C to give up)...");

    let code = wait_for_code(&listener, state.secret()).await?;
    let response = token_client(config)
        .await?
        .set_redirect_uri(redirect)
        .exchange_code(AuthorizationCode::new(code))
        .set_pkce_verifier(verifier)
        .request_async(http)
        .await
        .map_err(|e| request_failure(&config.token_url, &e, error_code, config))?;
    Ok(Tokens::from_response(&response))
}

/// Serves the browser's requests on the listener until one is the sign-in redirect
/// with our `state`: its code, or the error the sign-in page gave.
async fn wait_for_code(listener: &tokio::net::TcpListener, state: &str) -> Result<String, Failure> {
    loop {
        let (mut stream, _) = listener
            .accept()
            .await
            .map_err(|e| Failure::local(format!("accepting the browser's connection: {e}")))?;
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
        match param("state") {
            None => {
                let _ = respond(&mut stream, "404 Not Found", "Not the sign-in redirect.").await;
                continue;
            }
            Some(s) if s != state => {
                let _ = respond(
                    &mut stream,
                    "400 Bad Request",
                    "This redirect is not from the sign-in cronmail started.",
                )
                .await;
                continue;
            }
            Some(_) => {}
        }
        if let Some(error) = param("error") {
            let _ = respond(
                &mut stream,
                "200 OK",
                "cronmail: the sign-in did not complete. You can close this tab.",
            )
            .await;
            return Err(Failure::new(
                ErrorClass::Auth,
                None,
                format!("the sign-in page answered `{error}`"),
            )
            .with_hint("run `cronmail oauth2 authorize` again and allow access"));
        }
        if let Some(code) = param("code") {
            let _ = respond(
                &mut stream,
                "200 OK",
                "cronmail is signed in. You can close this tab.",
            )
            .await;
            return Ok(code);
        }
        let _ = respond(&mut stream, "400 Bad Request", "No code in this redirect.").await;
    }
}

/// The request target of one HTTP request (`/?code=...`), from at most 16 KiB.
async fn read_request_target(
    stream: &mut tokio::net::TcpStream,
) -> std::io::Result<Option<String>> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 2048];
    let read = async {
        while !buf.windows(4).any(|w| w == b"\r\n\r\n") && buf.len() < MAX_REDIRECT_REQUEST {
            let n = stream.read(&mut chunk).await?;
            if n == 0 {
                break;
            }
            buf.extend_from_slice(&chunk[..n]);
        }
        Ok::<_, std::io::Error>(())
    };
    if tokio::time::timeout(REDIRECT_READ_TIMEOUT, read)
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
