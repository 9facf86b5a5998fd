//! One HTTPS GET of a calendar feed, on our rustls configuration (ring, the system
//! roots, a `ca_file`, https only, redirects only to https), with a timeout and a cap
//! on what it reads. Blocking: configuration loading is synchronous, so the request
//! runs on a thread of its own with a small runtime, which is safe to call from inside
//! the daemon's runtime too.

use std::time::Duration;

use crate::failure::error_chain;

/// A calendar feed may take this long, connection and body.
pub const TIMEOUT: Duration = Duration::from_secs(10);

/// Fetches `url`, at most `limit` bytes; the error names what failed, in words.
pub fn get(url: &str, extra_roots: &[Vec<u8>], limit: u64) -> Result<Vec<u8>, String> {
    let url = url.to_owned();
    let roots = extra_roots.to_vec();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("starting the HTTPS client: {e}"))?;
        runtime.block_on(get_async(&url, &roots, limit))
    })
    .join()
    .unwrap_or_else(|_| Err("the HTTPS client stopped unexpectedly".to_owned()))
}

async fn get_async(url: &str, roots: &[Vec<u8>], limit: u64) -> Result<Vec<u8>, String> {
    let client = reqwest::Client::builder()
        .use_preconfigured_tls(crate::tls::https_client_config(roots))
        .https_only(true)
        .redirect(reqwest::redirect::Policy::limited(5))
        .timeout(TIMEOUT)
        .user_agent(concat!("cronmail/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| format!("setting up HTTPS: {}", error_chain(&e)))?;
    let mut response = client.get(url).send().await.map_err(|e| error_chain(&e))?;
    let status = response.status();
    if !status.is_success() {
        return Err(format!("the server answered {status}"));
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| error_chain(&e))? {
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
