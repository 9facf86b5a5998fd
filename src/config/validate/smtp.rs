//! `[smtp]`: where the server is (a provider preset, or host, port and TLS mode), how
//! cronmail logs in (a password source, or XOAUTH2), and whom it trusts (`ca_file`,
//! `tls_fingerprint`).

use std::ops::Range;

use toml::Spanned;

use super::{Validator, is_loopback, literal_secret, parse_fingerprint};
use crate::config::provider::{Provider, Submission};
use crate::config::raw::RawSmtp;
use crate::config::types::{
    AuthMethod, DEFAULT_TIMEOUT, OAuth2Config, SmtpConfig, TlsMode, header_control,
};
use crate::secret::SecretSource;

/// Host, port and TLS mode, resolved from the keys and the preset.
struct Endpoint {
    provider: Option<Provider>,
    host: Option<String>,
    port: Option<u16>,
    tls: Option<TlsMode>,
}

/// How cronmail logs in.
struct Login {
    username: Option<String>,
    password: Option<SecretSource>,
    auth: AuthMethod,
    token_command: Option<SecretSource>,
    oauth2: Option<OAuth2Config>,
}

impl Validator<'_> {
    pub(super) fn smtp(&mut self, raw: Spanned<RawSmtp>) -> Option<SmtpConfig> {
        let section = raw.span();
        let raw = raw.into_inner();
        let errors_before = self.errors();

        let endpoint = self.smtp_endpoint(&raw, &section);
        let login = self.smtp_login(&raw);
        let (ca_file, extra_roots) = self.ca_file(raw.ca_file.as_ref());
        let tls_fingerprint =
            raw.tls_fingerprint
                .as_ref()
                .and_then(|f| match parse_fingerprint(f.get_ref()) {
                    Ok(fp) => Some(fp),
                    Err(e) => {
                        self.at(Some(f.span()), None, e);
                        None
                    }
                });
        if let (Some(f), Some(TlsMode::None)) = (&raw.tls_fingerprint, endpoint.tls) {
            self.at(
                Some(f.span()),
                None,
                "`tls_fingerprint` needs TLS; `tls = \"none\"` has none",
            );
        }
        let timeout = match &raw.timeout {
            Some(t) => self.duration(t, "timeout"),
            None => Some(DEFAULT_TIMEOUT),
        };

        if self.errors() > errors_before {
            return None;
        }
        Some(SmtpConfig {
            provider: endpoint.provider,
            host: endpoint.host?,
            port: endpoint.port?,
            tls: endpoint.tls?,
            username: login.username,
            password: login.password,
            auth: login.auth,
            token_command: login.token_command,
            oauth2: login.oauth2,
            extra_roots,
            ca_file,
            tls_fingerprint,
            timeout: timeout?,
            keep_connections: raw.keep_connections.unwrap_or(true),
        })
    }

    fn smtp_endpoint(&mut self, raw: &RawSmtp, section: &Range<usize>) -> Endpoint {
        let provider = raw.provider.as_ref().and_then(|p| {
            let found = Provider::from_name(p.get_ref());
            if found.is_none() {
                let names: Vec<_> = Provider::ALL.iter().map(|p| p.name()).collect();
                self.at(
                    Some(p.span()),
                    None,
                    format!(
                        "unknown provider `{}`; expected one of {}",
                        p.get_ref(),
                        names.join(", ")
                    ),
                );
            }
            found
        });
        let preset: Option<Submission> = provider.map(Provider::submission);

        let tls = match &raw.tls {
            Some(t) => match t.get_ref().as_str() {
                "starttls" => Some(TlsMode::Starttls),
                "implicit" => Some(TlsMode::Implicit),
                "none" => Some(TlsMode::None),
                other => {
                    self.at(Some(t.span()), None, format!(
                        "unknown `tls` mode `{other}`; expected `starttls`, `implicit` or `none`"
                    ));
                    None
                }
            },
            None => Some(match preset {
                Some(p) if p.implicit_tls => TlsMode::Implicit,
                _ => TlsMode::Starttls,
            }),
        };

        let host = raw
            .host
            .as_ref()
            .map(|h| h.get_ref().trim().to_owned())
            .or_else(|| preset.map(|p| p.host.to_owned()));
        let host = match host {
            Some(h) if !h.is_empty() => Some(h),
            _ => {
                self.at(
                    Some(section.clone()),
                    None,
                    "[smtp] needs `host` (or a `provider` preset)",
                );
                None
            }
        };

        let port = match &raw.port {
            Some(p) => match u16::try_from(*p.get_ref()) {
                Ok(port) if port > 0 => Some(port),
                _ => {
                    self.at(
                        Some(p.span()),
                        None,
                        format!("`port` must be between 1 and 65535, not {}", p.get_ref()),
                    );
                    None
                }
            },
            // An explicit `tls` overrides the preset's mode, and with it the port.
            None => tls.map(|t| match (raw.tls.is_some(), preset) {
                (false, Some(p)) => p.port,
                _ => t.default_port(),
            }),
        };

        self.port_warnings(raw, section, port, tls);

        if let (Some(TlsMode::None), Some(h)) = (tls, &host)
            && !is_loopback(h)
        {
            let span = raw.tls.as_ref().map(Spanned::span);
            self.at(span, None, format!(
                    "`tls = \"none\"` is allowed only for a loopback host (localhost, 127.0.0.1, ::1), not `{h}`; \
                     use `starttls` or `implicit`"
                ));
        }
        Endpoint {
            provider,
            host,
            port,
            tls,
        }
    }

    fn smtp_login(&mut self, raw: &RawSmtp) -> Login {
        if let Some(p) = &raw.password {
            self.at(Some(p.span()), None, literal_secret("password"));
        }
        let password = self.secret_source(
            "password",
            raw.password_env.as_ref(),
            raw.password_file.as_ref(),
            raw.password_command.as_ref(),
            raw.password_credential.as_ref(),
        );
        let username = raw.username.as_ref().map(|u| u.get_ref().clone());
        let oauth2 = raw.oauth2.as_ref().map(|o| {
            let span = o.span();
            (span.clone(), self.oauth2_section(span, o.get_ref()))
        });
        let auth = match raw.auth.as_ref().map(|a| (a.span(), a.get_ref().as_str())) {
            None if raw.token_command.is_some() || oauth2.is_some() => AuthMethod::Xoauth2,
            None => AuthMethod::Auto,
            Some((_, "plain")) => AuthMethod::Plain,
            Some((_, "login")) => AuthMethod::Login,
            Some((_, "xoauth2")) => AuthMethod::Xoauth2,
            Some((span, other)) => {
                self.at(
                    Some(span),
                    None,
                    format!("unknown `auth` `{other}`; expected `plain`, `login` or `xoauth2`"),
                );
                AuthMethod::Auto
            }
        };
        let token_command = raw
            .token_command
            .as_ref()
            .map(|t| (t.span(), SecretSource::Command(t.get_ref().clone())));
        if auth == AuthMethod::Xoauth2 {
            self.xoauth2_sources(
                raw,
                token_command.as_ref(),
                oauth2.as_ref(),
                password.as_ref(),
            );
            if username.is_none() {
                let span = raw.auth.as_ref().map(Spanned::span);
                self.at(
                    span.or_else(|| oauth2.as_ref().map(|o| o.0.clone())),
                    None,
                    "XOAUTH2 needs `username` (the mailbox the token is for)",
                );
            }
        } else if let Some((span, _)) = &token_command {
            self.at(
                Some(span.clone()),
                None,
                "`token_command` goes with `auth = \"xoauth2\"`",
            );
        } else if let Some((span, _)) = &oauth2 {
            self.at(
                Some(span.clone()),
                None,
                "[smtp.oauth2] goes with `auth = \"xoauth2\"`",
            );
        }
        match (&username, &password) {
            // A literal `password` was reported: no second error for the same mistake.
            (Some(_), None) if auth == AuthMethod::Xoauth2 || raw.password.is_some() => {}
            (Some(_), None) => {
                let span = raw.username.as_ref().map(Spanned::span);
                self.at(
                    span,
                    None,
                    "`username` is set but no password source is: add `password_env`, \
                    `password_file`, `password_command` or `password_credential`",
                );
            }
            (None, Some((span, _))) => {
                self.at(
                    Some(span.clone()),
                    None,
                    "a password source is set but `username` is not",
                );
            }
            _ => {}
        }
        if let Some(u) = &raw.username
            && let Some(bad) = header_control(u.get_ref())
        {
            self.at(Some(u.span()), None, format!("`username` contains {bad}"));
        }
        Login {
            username,
            password: password.map(|(_, s)| s),
            auth,
            token_command: token_command.map(|(_, s)| s),
            oauth2: oauth2.and_then(|(_, o)| o),
        }
    }

    /// With XOAUTH2: exactly one token source, and no password.
    fn xoauth2_sources(
        &mut self,
        raw: &RawSmtp,
        token_command: Option<&(Range<usize>, SecretSource)>,
        oauth2: Option<&(Range<usize>, Option<OAuth2Config>)>,
        password: Option<&(Range<usize>, SecretSource)>,
    ) {
        match (token_command, oauth2, password) {
            (None, None, _) => {
                let span = raw.auth.as_ref().map(Spanned::span);
                self.at(span, None, "`auth = \"xoauth2\"` needs an [smtp.oauth2] section (cronmail refreshes \
                    the token itself) or `token_command` (a command that prints an OAuth2 access token)");
            }
            (Some(_), Some((span, _)), _) => {
                self.at(
                    Some(span.clone()),
                    None,
                    "set either `token_command` or [smtp.oauth2], not both",
                );
            }
            (_, _, Some((span, _))) => {
                self.at(Some(span.clone()), None, "XOAUTH2 logs in with an OAuth2 token, not a password; remove the password source");
            }
            (Some((span, SecretSource::Command(argv))), None, None)
                if argv.first().is_none_or(String::is_empty) =>
            {
                self.at(
                    Some(span.clone()),
                    None,
                    "`token_command` must name a program, e.g. [\"oauth-helper\", \"token\"]",
                );
            }
            _ => {}
        }
    }

    /// The two commonest mix-ups of port and TLS mode, said before anything connects.
    fn port_warnings(
        &mut self,
        raw: &RawSmtp,
        section: &Range<usize>,
        port: Option<u16>,
        tls: Option<TlsMode>,
    ) {
        let at = raw
            .port
            .as_ref()
            .map(Spanned::span)
            .or_else(|| raw.tls.as_ref().map(Spanned::span))
            .unwrap_or_else(|| section.clone());
        match (port, tls) {
            (Some(465), Some(TlsMode::Starttls)) => self.warn(
                Some(at),
                None,
                "port 465 expects implicit TLS (TLS from the first byte), but `tls` is `starttls`: set `tls = \"implicit\"`, or use port 587 with STARTTLS",
            ),
            (Some(587), Some(TlsMode::Implicit)) => self.warn(
                Some(at),
                None,
                "port 587 expects STARTTLS, but `tls` is `implicit`: set `tls = \"starttls\"`, or use port 465 with implicit TLS",
            ),
            _ => {}
        }
    }
}
