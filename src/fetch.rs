//! One HTTP request: a calendar feed, a ping, a webhook. On our rustls configuration
//! (ring, the system roots, a `ca_file`), https only unless the caller allows plain
//! http (to loopback, checked by the configuration), with a timeout and a cap on what
//! it reads. Blocking: configuration loading is synchronous, so the request runs on a
//! thread of its own with a small runtime, which is safe to call from inside the
//! daemon's runtime too (the daemon calls it on the blocking pool).

use std::time::Duration;

use crate::failure::error_chain;

/// A calendar feed may take this long, connection and body.
pub const TIMEOUT: Duration = Duration::from_secs(10);

/// Fetches `url`, at most `limit` bytes; the error names what failed, in words.
pub fn get(url: &str, extra_roots: &[Vec<u8>], limit: u64) -> Result<Vec<u8>, String> {
    request(&Request {
        url: url.to_owned(),
        body: None,
        allow_http: false,
        roots: extra_roots.to_vec(),
        limit,
    })
}

/// A request: a GET, or a POST of `body` (content type, bytes).
#[derive(Clone)]
pub struct Request {
    pub url: String,
    pub body: Option<(&'static str, Vec<u8>)>,
    /// Plain http allowed (the configuration allows it to loopback only).
    pub allow_http: bool,
    pub roots: Vec<Vec<u8>>,
    pub limit: u64,
}

/// Makes `req`; the answer's body on a 2xx. Errors never contain the URL (it may hold
/// a token): the caller names the host.
pub fn request(req: &Request) -> Result<Vec<u8>, String> {
    let req = req.clone();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("starting the HTTPS client: {e}"))?;
        runtime.block_on(request_async(&req))
    })
    .join()
    .unwrap_or_else(|_| Err("the HTTPS client stopped unexpectedly".to_owned()))
}

async fn request_async(req: &Request) -> Result<Vec<u8>, String> {
    let limit = req.limit;
    let client = reqwest::Client::builder()
        .use_preconfigured_tls(crate::tls::https_client_config(&req.roots))
        .https_only(!req.allow_http)
        .redirect(reqwest::redirect::Policy::limited(5))
        .timeout(TIMEOUT)
        .user_agent(concat!("cronmail/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| format!("setting up HTTPS: {}", error_chain(&e)))?;
    let builder = match &req.body {
        None => client.get(&req.url),
        Some((content_type, body)) => client
            .post(&req.url)
            .header(reqwest::header::CONTENT_TYPE, *content_type)
            .body(body.clone()),
    };
    // reqwest's errors name the URL, which may hold a token: say what failed without it.
    let mut response = builder
        .send()
        .await
        .map_err(|e| error_chain(&e.without_url()))?;
    let status = response.status();
    if !status.is_success() {
        return Err(format!("the server answered {status}"));
    }
    let mut body = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| error_chain(&e.without_url()))?
    {
        if (body.len() + chunk.len()) as u64 > limit {
            return Err(format!(
                "the answer is larger than the limit of {} bytes",
                crate::files::group(limit)
            ));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}
