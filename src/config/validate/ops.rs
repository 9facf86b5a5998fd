//! `[http]`, `[monitor]`, `[notify]` and `ping_url`: what operators see and hear. The
//! URLs may carry a token, so they are secrets: given literally, or from an environment
//! variable or a file, and never shown whole in a message.

use std::net::SocketAddr;
use std::time::Duration;

use toml::Spanned;

use super::Validator;
use crate::config::raw::{RawMonitor, RawNotify, RawTop};
use crate::config::types::OpsConfig;
use crate::secret::SecretUrl;

const DEFAULT_HEARTBEAT: Duration = Duration::from_secs(300);

/// One URL key and its two other sources.
pub(super) struct UrlKeys<'a> {
    pub key: &'a str,
    pub literal: Option<&'a Spanned<String>>,
    pub env: Option<&'a Spanned<String>>,
    pub file: Option<&'a Spanned<String>>,
    pub credential: Option<&'a Spanned<String>>,
}

impl Validator<'_> {
    /// The URL from exactly one of its sources; https, or http to a loopback host.
    pub(super) fn secret_url(&mut self, k: &UrlKeys<'_>, job: Option<&str>) -> Option<SecretUrl> {
        let key = k.key;
        let given: Vec<&Spanned<String>> = [k.literal, k.env, k.file, k.credential]
            .into_iter()
            .flatten()
            .collect();
        let first = match given.as_slice() {
            [] => return None,
            [one] => *one,
            [_, second, ..] => {
                self.at(
                    Some(second.span()),
                    job,
                    format!("give `{key}` one way: `{key}`, `{key}_env`, `{key}_file` or `{key}_credential`"),
                );
                return None;
            }
        };
        let url = if k.literal.is_some() {
            first.get_ref().trim().to_owned()
        } else if k.env.is_some() {
            match std::env::var(first.get_ref()) {
                Ok(v) if !v.trim().is_empty() => v.trim().to_owned(),
                _ => {
                    self.at(
                        Some(first.span()),
                        job,
                        format!(
                            "`{key}_env`: the environment variable `{}` is not set",
                            first.get_ref()
                        ),
                    );
                    return None;
                }
            }
        } else {
            // A credential is `$CREDENTIALS_DIRECTORY/NAME` under systemd, else the file
            // of that name beside jobs.toml (where the unit's `LoadCredential=` takes it).
            let path = match (
                k.credential.is_some(),
                std::env::var_os("CREDENTIALS_DIRECTORY"),
            ) {
                (true, Some(dir)) => std::path::PathBuf::from(dir).join(first.get_ref()),
                _ => self.resolve(first.get_ref()),
            };
            match crate::files::read(&path, crate::files::MAX_SECRET) {
                Ok(b) => String::from_utf8_lossy(&b)
                    .lines()
                    .next()
                    .unwrap_or("")
                    .trim()
                    .to_owned(),
                Err(e) => {
                    let which = if k.credential.is_some() {
                        "credential"
                    } else {
                        "file"
                    };
                    self.at(Some(first.span()), job, format!("`{key}_{which}`: {e}"));
                    return None;
                }
            }
        };
        let secret = SecretUrl::new(url);
        let shown = secret.host();
        let loopback_http = shown
            .strip_prefix("http://")
            .map(|h| h.rsplit_once(':').map_or(h, |(host, _)| host))
            .is_some_and(|h| h == "localhost" || h == "[::1]" || h.starts_with("127."));
        if !shown.starts_with("https://") && !loopback_http {
            self.at(
                Some(first.span()),
                job,
                format!("`{key}` must be an https:// URL (http:// only to a loopback host), not {shown}/…"),
            );
            return None;
        }
        Some(secret)
    }

    pub(super) fn ops(&mut self, top: &RawTop) -> Option<OpsConfig> {
        let before = self.errors();
        let listen = top.http.as_ref().and_then(|h| {
            let Some(l) = &h.get_ref().listen else {
                self.at(Some(h.span()), None, "[http] needs `listen`, e.g. \"127.0.0.1:9464\"");
                return None;
            };
            let Ok(a) = l.get_ref().parse::<SocketAddr>() else {
                self.at(
                    Some(l.span()),
                    None,
                    format!("`listen` `{}` is not an address and port like \"127.0.0.1:9464\"", l.get_ref()),
                );
                return None;
            };
            if !a.ip().is_loopback() {
                self.warn(
                    Some(l.span()),
                    None,
                    format!("[http] listens on {a}, beyond this machine: the endpoint has no authentication (metrics show job names and counts)"),
                );
            }
            Some(a)
        });
        let heartbeat = top.monitor.as_ref().and_then(|m| self.monitor(m));
        let (webhook, command) = match &top.notify {
            Some(n) => self.notify(n),
            None => (None, None),
        };
        (self.errors() == before).then_some(OpsConfig {
            listen,
            heartbeat,
            webhook,
            command,
        })
    }

    fn monitor(&mut self, m: &Spanned<RawMonitor>) -> Option<(SecretUrl, Duration)> {
        let r = m.get_ref();
        let url = self.secret_url(
            &UrlKeys {
                key: "heartbeat_url",
                literal: r.heartbeat_url.as_ref(),
                env: r.heartbeat_url_env.as_ref(),
                file: r.heartbeat_url_file.as_ref(),
                credential: r.heartbeat_url_credential.as_ref(),
            },
            None,
        );
        if url.is_none()
            && r.heartbeat_url.is_none()
            && r.heartbeat_url_env.is_none()
            && r.heartbeat_url_file.is_none()
        {
            self.at(
                Some(m.span()),
                None,
                "[monitor] needs `heartbeat_url` (or `heartbeat_url_env`, `heartbeat_url_file`, `heartbeat_url_credential`)",
            );
        }
        let every = r
            .heartbeat_every
            .as_ref()
            .map_or(Some(DEFAULT_HEARTBEAT), |d| {
                self.duration(d, "heartbeat_every")
            });
        Some((url?, every?))
    }

    fn notify(
        &mut self,
        n: &Spanned<RawNotify>,
    ) -> (Option<(SecretUrl, bool)>, Option<Vec<String>>) {
        let r = n.get_ref();
        let url = self.secret_url(
            &UrlKeys {
                key: "webhook",
                literal: r.webhook.as_ref(),
                env: r.webhook_env.as_ref(),
                file: r.webhook_file.as_ref(),
                credential: r.webhook_credential.as_ref(),
            },
            None,
        );
        let json = match r.format.as_ref().map(|f| (f, f.get_ref().as_str())) {
            None | Some((_, "json")) => true,
            Some((_, "text")) => false,
            Some((f, other)) => {
                self.at(
                    Some(f.span()),
                    None,
                    format!("unknown `format` `{other}`; expected `json` or `text`"),
                );
                true
            }
        };
        let command = r.command.as_ref().and_then(|c| {
            if c.get_ref().is_empty() || c.get_ref()[0].trim().is_empty() {
                self.at(
                    Some(c.span()),
                    None,
                    "`command` needs a program: [\"/usr/local/bin/page-me\", \"--urgent\"]",
                );
                None
            } else {
                Some(c.get_ref().clone())
            }
        });
        if url.is_none()
            && command.is_none()
            && r.webhook.is_none()
            && r.webhook_env.is_none()
            && r.webhook_file.is_none()
            && r.webhook_credential.is_none()
            && r.command.is_none()
        {
            self.at(
                Some(n.span()),
                None,
                "[notify] needs `webhook` (or `webhook_env`, `webhook_file`, `webhook_credential`) or `command`",
            );
        }
        (url.map(|u| (u, json)), command)
    }
}
