//! A build without the `oauth2` cargo feature: no built-in `OAuth2` refresh flow (the
//! `oauth2` crate and its HTTP client are left out). Validation refuses `[smtp.oauth2]`
//! at its line with `NO_OAUTH2`, so no `TokenSource` is ever made: it is a type without
//! values, and what uses it compiles unchanged. `token_command` (XOAUTH2 with a token
//! from a command) works in either build.

// The same items as the real module, for the same callers; some are never read here.
#![allow(dead_code)]

use std::path::PathBuf;
use std::time::Duration;

use secrecy::SecretString;
use tokio::time::Instant;

use crate::config::OAuth2Config;
use crate::failure::Failure;

/// Why `[smtp.oauth2]` is refused in this build.
pub const NO_OAUTH2: &str = "this cronmail was built without the built-in OAuth2 flow (cargo feature `oauth2`); use `token_command` for XOAUTH2, or install a build with it (the Debian package has it)";

/// What `authorize` tells the person at the terminal.
pub trait Prompt {
    fn say(&mut self, text: &str);
}

impl<W: std::io::Write> Prompt for W {
    fn say(&mut self, text: &str) {
        let _ = writeln!(self, "{text}");
    }
}

/// A successful token response.
pub struct Tokens {
    pub access_token: SecretString,
    pub expires_in: Duration,
    pub refresh_token: Option<SecretString>,
}

/// An access token as handed out, and whether it was fetched just now.
pub struct AccessToken {
    pub token: SecretString,
    pub fresh: bool,
}

/// No values: nothing in this build refreshes a token.
pub enum TokenSource {}

impl TokenSource {
    pub fn new(_config: &OAuth2Config, _extra_roots: &[Vec<u8>]) -> Result<Self, Failure> {
        Err(Failure::local(NO_OAUTH2.to_owned()))
    }

    #[allow(clippy::unused_async)] // the same signature as the real one
    pub async fn access_token(&self, _now: Instant) -> Result<AccessToken, Failure> {
        match *self {}
    }

    #[allow(clippy::unused_async)]
    pub async fn forget(&self) {
        match *self {}
    }

    #[allow(clippy::unused_async)]
    pub async fn refresh(&self) -> Result<Tokens, Failure> {
        match *self {}
    }
}

/// `cronmail oauth2 authorize` in this build: says why it cannot.
#[allow(clippy::unused_async)]
pub async fn authorize(
    _config: &OAuth2Config,
    _extra_roots: &[Vec<u8>],
    _port: u16,
    _prompt: &mut dyn Prompt,
) -> Result<PathBuf, Failure> {
    Err(Failure::local(NO_OAUTH2.to_owned()))
}
