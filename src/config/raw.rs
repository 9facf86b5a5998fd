//! The raw layer: jobs.toml as written. serde structs with `deny_unknown_fields`, every
//! value `Spanned` so that validation can point at its line and column. Nothing here is
//! checked beyond its TOML type; `validate` turns these into `types`.

use std::collections::BTreeMap;

use serde::Deserialize;
use toml::Spanned;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTop {
    /// Keys taken out because they were wrong (reported already).
    #[serde(skip)]
    pub stripped: Vec<String>,
    pub from: Option<Spanned<String>>,
    pub timezone: Option<Spanned<String>>,
    pub smtp: Option<Spanned<RawSmtp>>,
    pub outbox: Option<Spanned<RawOutbox>>,
    pub defaults: Option<RawDefaults>,
    pub state_dir: Option<Spanned<String>>,
    pub delivery: Option<RawDelivery>,
    pub ledger: Option<Spanned<RawLedger>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLedger {
    pub url: Option<Spanned<String>>,
    pub password_env: Option<Spanned<String>>,
    pub password_file: Option<Spanned<String>>,
    pub password_command: Option<Spanned<Vec<String>>>,
    pub password_credential: Option<Spanned<String>>,
    pub node: Option<Spanned<String>>,
    pub lease: Option<Spanned<String>>,
    pub poll: Option<Spanned<String>>,
    pub ca_file: Option<Spanned<String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDelivery {
    pub retry_min: Option<Spanned<String>>,
    pub retry_max: Option<Spanned<String>>,
    pub retry_for: Option<Spanned<String>>,
    pub max_connections: Option<Spanned<i64>>,
    pub shutdown_grace: Option<Spanned<String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDefaults {
    pub catch_up: Option<Spanned<String>>,
    pub max_late: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSmtp {
    pub provider: Option<Spanned<String>>,
    pub host: Option<Spanned<String>>,
    pub port: Option<Spanned<i64>>,
    pub tls: Option<Spanned<String>>,
    pub username: Option<Spanned<String>>,
    pub password: Option<Spanned<serde::de::IgnoredAny>>,
    pub password_env: Option<Spanned<String>>,
    pub password_file: Option<Spanned<String>>,
    pub password_command: Option<Spanned<Vec<String>>>,
    pub password_credential: Option<Spanned<String>>,
    pub auth: Option<Spanned<String>>,
    pub token_command: Option<Spanned<Vec<String>>>,
    pub oauth2: Option<Spanned<RawOAuth2>>,
    pub ca_file: Option<Spanned<String>>,
    pub tls_fingerprint: Option<Spanned<String>>,
    pub timeout: Option<Spanned<String>>,
    pub keep_connections: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawOAuth2 {
    pub provider: Option<Spanned<String>>,
    pub tenant: Option<Spanned<String>>,
    pub client_id: Option<Spanned<String>>,
    pub client_secret: Option<Spanned<serde::de::IgnoredAny>>,
    pub client_secret_env: Option<Spanned<String>>,
    pub client_secret_file: Option<Spanned<String>>,
    pub client_secret_command: Option<Spanned<Vec<String>>>,
    pub client_secret_credential: Option<Spanned<String>>,
    pub refresh_token_file: Option<Spanned<String>>,
    pub token_url: Option<Spanned<String>>,
    pub device_code_url: Option<Spanned<String>>,
    pub authorize_url: Option<Spanned<String>>,
    pub scope: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawOutbox {
    pub dir: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawJob {
    /// Where the job's table is in the file (set after deserializing).
    #[serde(skip)]
    pub span: std::ops::Range<usize>,
    /// Keys taken out because they were wrong (reported already).
    #[serde(skip)]
    pub stripped: Vec<String>,
    pub name: Option<Spanned<String>>,
    pub schedule: Option<Spanned<String>>,
    pub timezone: Option<Spanned<String>>,
    pub to: Option<Spanned<Vec<Spanned<String>>>>,
    #[serde(default)]
    pub cc: Vec<Spanned<String>>,
    #[serde(default)]
    pub bcc: Vec<Spanned<String>>,
    pub reply_to: Option<Spanned<String>>,
    pub from: Option<Spanned<String>>,
    pub subject: Option<Spanned<String>>,
    pub body: Option<Spanned<String>>,
    pub body_file: Option<Spanned<String>>,
    pub html: Option<Spanned<String>>,
    pub html_file: Option<Spanned<String>>,
    pub enabled: Option<bool>,
    pub catch_up: Option<Spanned<String>>,
    pub max_late: Option<Spanned<String>>,
    #[serde(default)]
    pub vars: BTreeMap<String, Spanned<String>>,
}
