//! `[smtp]`, `[account.NAME]`, `[smtp.oauth2]` and `[outbox]` as written.

use schemars::JsonSchema;
use serde::Deserialize;
use toml::Spanned;

use super::DURATION;

#[derive(JsonSchema)]
#[serde(rename_all = "lowercase")]
#[allow(dead_code)]
#[schemars(rename = "Tls")]
enum TlsName {
    Starttls,
    Implicit,
    None,
}

#[derive(JsonSchema)]
#[serde(rename_all = "lowercase")]
#[allow(dead_code)]
#[schemars(rename = "Auth")]
enum AuthName {
    Plain,
    Login,
    Xoauth2,
}

#[derive(JsonSchema)]
#[serde(rename_all = "lowercase")]
#[allow(dead_code)]
#[schemars(rename = "Provider")]
enum ProviderName {
    Gmail,
    Outlook,
    Office365,
    Yahoo,
    Aol,
    Naver,
    Fastmail,
    Icloud,
    Zoho,
    Gmx,
}

#[derive(JsonSchema)]
#[serde(rename_all = "lowercase")]
#[allow(dead_code)]
#[schemars(rename = "OAuthProvider")]
enum OAuthProviderName {
    Microsoft,
    Google,
}

/// Send over SMTP: the account named `default` (or, as `[account.NAME]`, another one).
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Smtp")]
pub(in crate::config) struct RawSmtp {
    /// A preset for host, port and TLS (explicit keys override it).
    #[schemars(with = "Option<ProviderName>")]
    pub provider: Option<Spanned<String>>,
    /// The submission server's host name.
    #[schemars(with = "Option<String>")]
    pub host: Option<Spanned<String>>,
    /// Default: 587 for starttls, 465 for implicit, 25 for none.
    #[schemars(with = "Option<i64>", range(min = 1, max = 65535))]
    pub port: Option<Spanned<i64>>,
    /// `starttls` (default; port 587), `implicit` (TLS from the first byte; port 465), or
    /// `none` (loopback hosts only).
    #[schemars(with = "Option<TlsName>")]
    pub tls: Option<Spanned<String>>,
    /// The login name, usually the whole address.
    #[schemars(with = "Option<String>")]
    pub username: Option<Spanned<String>>,
    /// Not allowed: jobs.toml holds no secret. Use `password_env`, `password_file`,
    /// `password_command` or `password_credential`.
    #[schemars(with = "Option<Never>")]
    pub password: Option<Spanned<serde::de::IgnoredAny>>,
    /// The password from this environment variable.
    #[schemars(with = "Option<String>")]
    pub password_env: Option<Spanned<String>>,
    /// The password from this file (its first line; keep it mode 0600).
    #[schemars(with = "Option<String>")]
    pub password_file: Option<Spanned<String>>,
    /// The password printed by this command (program and arguments).
    #[schemars(with = "Option<Vec<String>>")]
    pub password_command: Option<Spanned<Vec<String>>>,
    /// The password from this systemd credential (`LoadCredential=`).
    #[schemars(with = "Option<String>")]
    pub password_credential: Option<Spanned<String>>,
    /// `plain`, `login` or `xoauth2`; default PLAIN, or LOGIN where only that is offered.
    #[schemars(with = "Option<AuthName>")]
    pub auth: Option<Spanned<String>>,
    /// With xoauth2, instead of a password: a command that prints an access token.
    #[schemars(with = "Option<Vec<String>>")]
    pub token_command: Option<Spanned<Vec<String>>>,
    #[schemars(with = "Option<RawOAuth2>")]
    pub oauth2: Option<Spanned<RawOAuth2>>,
    /// Extra trusted roots (PEM), added to the system's.
    #[schemars(with = "Option<String>")]
    pub ca_file: Option<Spanned<String>>,
    /// A pin of the server's certificate: `sha256:AB:CD:...`.
    #[schemars(with = "Option<String>", regex(pattern = r"^sha256:"))]
    pub tls_fingerprint: Option<Spanned<String>>,
    /// A bound on one whole SMTP transaction (default 60s).
    #[schemars(with = "Option<String>", regex(pattern = DURATION))]
    pub timeout: Option<Spanned<String>>,
    /// Keep a connection 5 s after a message, for the next (default true).
    pub keep_connections: Option<bool>,
    /// After a connect, TLS, timeout or quota failure, the next attempt goes through
    /// this account (with the same message and Message-ID).
    #[schemars(with = "Option<String>")]
    pub fallback: Option<Spanned<String>>,
    /// At most this many messages through the account in any 60 seconds.
    #[schemars(with = "Option<i64>", range(min = 1))]
    pub max_per_minute: Option<Spanned<i64>>,
    /// At most this many recipients (to + cc + bcc) through the account in any 24 hours,
    /// counted from the ledger.
    #[schemars(with = "Option<i64>", range(min = 1))]
    pub max_per_day: Option<Spanned<i64>>,
    /// `[account.NAME]` only: an outbox account; messages are written to this folder
    /// instead of sent (no other key but `fallback` and the limits).
    #[schemars(with = "Option<String>")]
    pub outbox: Option<Spanned<String>>,
}

/// A value that is never valid (the schema of a forbidden key).
#[derive(JsonSchema)]
#[schemars(transform = never)]
#[allow(dead_code)]
struct Never;

fn never(schema: &mut schemars::Schema) {
    *schema = schemars::json_schema!({
        "description": "A value that is never valid: this key is not allowed.",
        "not": {}
    });
}

/// XOAUTH2 with tokens cronmail refreshes itself (`cronmail oauth2 authorize` signs in).
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "OAuth2")]
pub(in crate::config) struct RawOAuth2 {
    /// `microsoft` or `google`; default from `[smtp] provider`.
    #[schemars(with = "Option<OAuthProviderName>")]
    pub provider: Option<Spanned<String>>,
    /// Microsoft: the directory (tenant) ID or domain (default `common`).
    #[schemars(with = "Option<String>")]
    pub tenant: Option<Spanned<String>>,
    /// The application (client) ID of your app registration.
    #[schemars(with = "Option<String>")]
    pub client_id: Option<Spanned<String>>,
    /// Not allowed: jobs.toml holds no secret. Use `client_secret_env`, `_file`, `_command` or
    /// `_credential`.
    #[schemars(with = "Option<Never>")]
    pub client_secret: Option<Spanned<serde::de::IgnoredAny>>,
    /// The client secret from this environment variable.
    #[schemars(with = "Option<String>")]
    pub client_secret_env: Option<Spanned<String>>,
    /// The client secret from this file.
    #[schemars(with = "Option<String>")]
    pub client_secret_file: Option<Spanned<String>>,
    /// The client secret printed by this command.
    #[schemars(with = "Option<Vec<String>>")]
    pub client_secret_command: Option<Spanned<Vec<String>>>,
    /// The client secret from this systemd credential.
    #[schemars(with = "Option<String>")]
    pub client_secret_credential: Option<Spanned<String>>,
    /// Where the refresh token is kept (default `<state_dir>/oauth2-refresh-token`).
    #[schemars(with = "Option<String>")]
    pub refresh_token_file: Option<Spanned<String>>,
    /// The token endpoint (default from the provider).
    #[schemars(with = "Option<String>")]
    pub token_url: Option<Spanned<String>>,
    /// For `authorize` with a device code (Microsoft's default).
    #[schemars(with = "Option<String>")]
    pub device_code_url: Option<Spanned<String>>,
    /// For `authorize` with a browser redirect (Google's default).
    #[schemars(with = "Option<String>")]
    pub authorize_url: Option<Spanned<String>>,
    /// The scopes asked for (default from the provider).
    #[schemars(with = "Option<String>")]
    pub scope: Option<Spanned<String>>,
}

/// Write each message to a folder instead of sending it (no network, no account).
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Outbox")]
pub(in crate::config) struct RawOutbox {
    /// The folder; each message is written as `<message-id>.eml` (default `outbox`).
    #[schemars(with = "Option<String>")]
    pub dir: Option<Spanned<String>>,
}
