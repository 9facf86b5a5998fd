//! HTTPS to the provider's endpoints, for the `oauth2` crate.
//!
//! The crate builds each request (form, PKCE, client authentication) and parses each
//! answer; this file is the HTTP client it calls, on *our* rustls configuration (ring,
//! the system roots, `ca_file`, https only), with a timeout and a cap on what it reads.
//! It also says what a refused or failed request means, as a `Failure` with a hint.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use oauth2::{AsyncHttpClient, HttpRequest, HttpResponse, RequestTokenError};

use crate::config::OAuth2Config;
use crate::failure::{ErrorClass, Failure, error_chain};
use crate::tls;

/// One request to the token endpoint may take this long.
const HTTP_TIMEOUT: Duration = Duration::from_secs(30);

/// A token endpoint's answer larger than this is not a token response.
const MAX_RESPONSE: usize = 256 * 1024;

/// Why a request got no usable answer. Holds no form value: tokens are never in it.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// No answer: connection, TLS or timeout.
    #[error("{}", error_chain(.0))]
    Transport(#[source] reqwest::Error),
    /// An answer that is not for the `oauth2` crate to parse: a 5xx or 429 (the
    /// endpoint is having trouble), or an error page that is not JSON (a proxy's 502, a
    /// 404). `said` is the endpoint's `error: description`, when it gave one.
    #[error("answered {status}{}", said.as_ref().map(|s| format!(" ({s})")).unwrap_or_default())]
    Status {
        status: reqwest::StatusCode,
        said: Option<String>,
    },
    #[error("answered {status} with more than {MAX_RESPONSE} bytes, too many for a token response")]
    TooLarge { status: reqwest::StatusCode },
}

/// The HTTP client the `oauth2` crate calls.
pub struct Http {
    client: reqwest::Client,
}

impl Http {
    pub fn new(extra_roots: &[Vec<u8>]) -> Result<Self, Failure> {
        let client = reqwest::Client::builder()
            .use_preconfigured_tls(tls::https_client_config(extra_roots))
            .https_only(true)
            // Following redirects would send a client secret wherever a page points.
            .redirect(reqwest::redirect::Policy::none())
            .timeout(HTTP_TIMEOUT)
            .user_agent(concat!("cronmail/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| {
                Failure::local(format!("setting up HTTPS for OAuth2: {}", error_chain(&e)))
            })?;
        Ok(Http { client })
    }

    async fn call_inner(&self, request: HttpRequest) -> Result<HttpResponse, HttpError> {
        let request = reqwest::Request::try_from(request).map_err(HttpError::Transport)?;
        let mut response = self
            .client
            .execute(request)
            .await
            .map_err(HttpError::Transport)?;
        let status = response.status();
        let content_type = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .cloned();
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(HttpError::Transport)? {
            if body.len() + chunk.len() > MAX_RESPONSE {
                return Err(HttpError::TooLarge { status });
            }
            body.extend_from_slice(&chunk);
        }
        let json = serde_json::from_slice::<serde_json::Value>(&body).ok();
        if status.is_server_error()
            || status == reqwest::StatusCode::TOO_MANY_REQUESTS
            || (!status.is_success() && json.is_none())
        {
            return Err(HttpError::Status {
                status,
                said: json.as_ref().and_then(said),
            });
        }
        let mut out = oauth2::http::Response::builder().status(status.as_u16());
        if let Some(ct) = content_type {
            out = out.header(oauth2::http::header::CONTENT_TYPE, ct.as_bytes());
        }
        // The status and header came from a valid response, so the builder cannot fail.
        out.body(body)
            .map_err(|_| HttpError::Status { status, said: None })
    }
}

impl<'c> AsyncHttpClient<'c> for Http {
    type Error = HttpError;
    type Future = Pin<Box<dyn Future<Output = Result<HttpResponse, HttpError>> + Send + 'c>>;

    fn call(&'c self, request: HttpRequest) -> Self::Future {
        Box::pin(self.call_inner(request))
    }
}

/// `error: first line of error_description` from an error body.
fn said(json: &serde_json::Value) -> Option<String> {
    let error = json.get("error")?.as_str()?;
    Some(
        match json.get("error_description").and_then(|d| d.as_str()) {
            Some(d) => format!("{error}: {}", d.lines().next().unwrap_or_default()),
            None => error.to_owned(),
        },
    )
}

/// What a failed request to `url` means; `code` reads the refusal's error code.
pub fn request_failure<E: oauth2::ErrorResponse + 'static>(
    url: &str,
    e: &RequestTokenError<HttpError, E>,
    code: impl Fn(&E) -> (String, Option<String>),
    config: &OAuth2Config,
) -> Failure {
    match e {
        RequestTokenError::ServerResponse(r) => {
            let (error, description) = code(r);
            refused(url, &error, description.as_deref(), config)
        }
        RequestTokenError::Request(HttpError::Transport(t)) => transport_failure(url, t),
        RequestTokenError::Request(status @ HttpError::Status { status: s, .. }) => {
            if s.is_server_error() || *s == reqwest::StatusCode::TOO_MANY_REQUESTS {
                Failure::new(
                    ErrorClass::Transient,
                    None,
                    format!("the token endpoint {url} {status}"),
                )
                .with_hint("the token endpoint is having trouble; a later attempt may work")
            } else {
                Failure::new(ErrorClass::Auth, None, format!("the token endpoint {url} {status}"))
                    .with_hint(format!(
                        "check `token_url` ({url}) and the app registration, or sign in again with `cronmail oauth2 authorize`"
                    ))
            }
        }
        RequestTokenError::Request(large @ HttpError::TooLarge { .. }) => {
            Failure::new(ErrorClass::Transient, None, format!("{url} {large}"))
        }
        // A 200 that is not a token response: the body is never shown (it may hold one).
        RequestTokenError::Parse(..) | RequestTokenError::Other(_) => Failure::new(
            ErrorClass::Transient,
            None,
            format!("{url} answered with something that is not a JSON token response"),
        )
        .with_hint("check `token_url`"),
    }
}

/// `error` and `error_description` of a token endpoint's refusal.
pub fn error_code<T: oauth2::ErrorResponseType + AsRef<str>>(
    r: &oauth2::StandardErrorResponse<T>,
) -> (String, Option<String>) {
    (
        r.error().as_ref().to_owned(),
        r.error_description().cloned(),
    )
}

/// Names what the token endpoint refused, and what to do.
pub fn refused(
    url: &str,
    error: &str,
    description: Option<&str>,
    config: &OAuth2Config,
) -> Failure {
    let said = match description {
        Some(d) => format!("{error}: {}", d.lines().next().unwrap_or_default()),
        None => error.to_owned(),
    };
    let detail = format!("the token endpoint {url} refused the request ({said})");
    let file = config.refresh_token_file.display();
    let (class, hint) = match error {
        "invalid_grant" => (
            ErrorClass::Auth,
            format!(
                "the refresh token in `{file}` is no longer valid: it was revoked, it expired (Google: after 7 days \
                 while the app is in \"Testing\"; Microsoft: after 90 days unused), or the account's password changed. \
                 Sign in again with `cronmail oauth2 authorize`"
            ),
        ),
        "invalid_client" | "unauthorized_client" => (
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
        "invalid_scope" => (
            ErrorClass::Auth,
            format!(
                "the scope `{}` is not granted to this client; add it to the app registration",
                config.scope
            ),
        ),
        "temporarily_unavailable" | "server_error" => (
            ErrorClass::Transient,
            "the token endpoint is having trouble; a later attempt may work".to_owned(),
        ),
        _ => (
            ErrorClass::Auth,
            format!(
                "check `token_url` ({url}) and the app registration, or sign in again with `cronmail oauth2 authorize`"
            ),
        ),
    };
    Failure::new(class, None, detail).with_hint(hint)
}

fn transport_failure(url: &str, e: &reqwest::Error) -> Failure {
    if let Some(r) = tls::rustls_error(e) {
        return Failure::new(
            ErrorClass::Tls,
            None,
            format!("HTTPS to {url}: {}", tls::describe_rustls(r)),
        )
        .with_hint(
            "the token endpoint's certificate is not trusted; add its CA with `ca_file` (or SSL_CERT_FILE)",
        );
    }
    let class = if e.is_timeout() {
        ErrorClass::Timeout
    } else {
        ErrorClass::Connect
    };
    // reqwest's messages name the URL, never the form (which holds the tokens).
    Failure::new(
        class,
        None,
        format!("reaching the token endpoint: {}", error_chain(e)),
    )
    .with_hint("check the network and DNS; a later attempt may work")
}
