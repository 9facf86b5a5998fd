//! `[smtp.oauth2]`: the built-in refresh flow, with each provider's endpoints and scope
//! as defaults.

// A build without the `oauth2` feature refuses the section before any of this.
#![cfg_attr(not(feature = "oauth2"), allow(dead_code))]

use std::ops::Range;
use std::path::PathBuf;

use toml::Spanned;

use super::{Validator, literal_secret};
use crate::config::provider::OAuthProvider;
use crate::config::raw::RawOAuth2;
use crate::config::types::OAuth2Config;

impl Validator<'_> {
    /// `[smtp.oauth2]`, in a build without the built-in flow: refused at its line.
    #[cfg(not(feature = "oauth2"))]
    pub(super) fn oauth2_section(
        &mut self,
        section: Range<usize>,
        _raw: &RawOAuth2,
    ) -> Option<OAuth2Config> {
        self.at(Some(section), None, crate::oauth2::NO_OAUTH2);
        None
    }

    #[cfg(feature = "oauth2")]
    pub(super) fn oauth2_section(
        &mut self,
        section: Range<usize>,
        raw: &RawOAuth2,
    ) -> Option<OAuth2Config> {
        self.oauth2(section, raw)
    }

    /// `[smtp.oauth2]`. The refresh token file is left empty when not given: the caller
    /// puts it in `state_dir`.
    pub(super) fn oauth2(
        &mut self,
        section: Range<usize>,
        raw: &RawOAuth2,
    ) -> Option<OAuth2Config> {
        let errors_before = self.errors();
        let provider = raw.provider.as_ref().and_then(|p| {
            let found = OAuthProvider::from_name(p.get_ref());
            if found.is_none() {
                self.at(
                    Some(p.span()),
                    None,
                    format!(
                        "unknown OAuth2 provider `{}`; expected `microsoft` or `google` (or leave it out and set `token_url`)",
                        p.get_ref()
                    ),
                );
            }
            found
        });
        let tenant = self.tenant(raw, provider);
        let client_id = match &raw.client_id {
            Some(c) if !c.get_ref().trim().is_empty() => Some(c.get_ref().trim().to_owned()),
            Some(c) => {
                self.at(Some(c.span()), None, "`client_id` is empty");
                None
            }
            None => {
                self.at(
                    Some(section.clone()),
                    None,
                    "[smtp.oauth2] needs `client_id`, the application (client) id of your app registration",
                );
                None
            }
        };
        if let Some(p) = &raw.client_secret {
            self.at(Some(p.span()), None, literal_secret("client_secret"));
        }
        let client_secret = self.secret_source(
            "client_secret",
            raw.client_secret_env.as_ref(),
            raw.client_secret_file.as_ref(),
            raw.client_secret_command.as_ref(),
            raw.client_secret_credential.as_ref(),
        );
        let token_url = self.https_url(
            raw.token_url.as_ref(),
            provider.map(|p| p.token_url(&tenant)),
            "token_url",
        );
        let device_code_url = self.https_url(
            raw.device_code_url.as_ref(),
            provider.and_then(|p| p.device_code_url(&tenant)),
            "device_code_url",
        );
        let authorize_url = self.https_url(
            raw.authorize_url.as_ref(),
            provider.and_then(OAuthProvider::authorize_url),
            "authorize_url",
        );
        if token_url.is_none()
            && raw.token_url.is_none()
            && provider.is_none()
            && raw.provider.is_none()
        {
            self.at(
                Some(section.clone()),
                None,
                "[smtp.oauth2] needs `provider = \"microsoft\"` or `\"google\"`, or an explicit `token_url`",
            );
        }
        let scope = match (&raw.scope, provider) {
            (Some(s), _) => s.get_ref().clone(),
            (None, Some(p)) => p.scope().to_owned(),
            (None, None) => {
                if raw.provider.is_none() {
                    self.at(
                        Some(section.clone()),
                        None,
                        "[smtp.oauth2] without a `provider` needs `scope`",
                    );
                }
                String::new()
            }
        };
        let refresh_token_file = raw
            .refresh_token_file
            .as_ref()
            .map_or_else(PathBuf::new, |f| self.resolve(f.get_ref()));
        if self.errors() > errors_before {
            return None;
        }
        Some(OAuth2Config {
            provider,
            client_id: client_id?,
            client_secret: client_secret.map(|(_, s)| s),
            refresh_token_file,
            token_url: token_url?,
            device_code_url,
            authorize_url,
            scope,
        })
    }

    /// Microsoft's `tenant`, `common` by default; refused with another provider.
    fn tenant(&mut self, raw: &RawOAuth2, provider: Option<OAuthProvider>) -> String {
        match (&raw.tenant, provider) {
            (Some(t), Some(OAuthProvider::Microsoft)) => {
                let t = t.get_ref();
                if t.is_empty()
                    || !t
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || "-.".contains(c))
                {
                    let span = raw.tenant.as_ref().map(Spanned::span);
                    self.at(span, None, "`tenant` must be a tenant id or domain, or `common`, `organizations`, `consumers`");
                }
                t.clone()
            }
            (Some(t), _) => {
                self.at(
                    Some(t.span()),
                    None,
                    "`tenant` goes with `provider = \"microsoft\"`",
                );
                String::new()
            }
            (None, _) => "common".to_owned(),
        }
    }

    /// An endpoint URL as given, which must be https, or the provider's default.
    fn https_url(
        &mut self,
        given: Option<&Spanned<String>>,
        default: Option<String>,
        key: &str,
    ) -> Option<String> {
        match given {
            Some(u) => match reqwest::Url::parse(u.get_ref()) {
                Ok(parsed) if parsed.scheme() == "https" && parsed.host().is_some() => {
                    Some(u.get_ref().clone())
                }
                _ => {
                    self.at(
                        Some(u.span()),
                        None,
                        format!("`{key}` must be an https:// URL, not `{}`", u.get_ref()),
                    );
                    None
                }
            },
            None => default,
        }
    }
}

#[cfg(all(test, not(feature = "oauth2")))]
mod tests {
    use std::path::Path;

    use crate::config::Host;

    /// `cargo test --no-default-features --lib` (in .ci/run).
    #[test]
    fn a_build_without_oauth2_refuses_the_section_where_it_is() {
        let text = "from = \"a@example.com\"\n[smtp]\nhost = \"smtp.office365.com\"\n\
                    username = \"a@example.com\"\n[smtp.oauth2]\nprovider = \"microsoft\"\n\
                    client_id = \"x\"\n[[job]]\nname = \"j\"\nschedule = \"0 9 * * *\"\n\
                    to = [\"b@example.com\"]\nsubject = \"s\"\nbody = \"b\"\n";
        let err = crate::config::parse(Path::new("jobs.toml"), text, &Host::from_env())
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("jobs.toml:5:1"), "{err}");
        assert!(
            err.contains("built without the built-in OAuth2 flow"),
            "{err}"
        );
        assert!(err.contains("token_command"), "{err}");
    }
}
