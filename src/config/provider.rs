//! Mailbox providers: connection presets, and what to tell a user whose login failed.
//!
//! Facts come from the team's research sheet (`shared/providers.md`). Rows marked
//! "unverified" there are not used as match patterns: a hint only quotes a reply we
//! have seen in a real transcript, and otherwise gives the provider's general advice.

/// A provider's submission service, the defaults a `provider = "..."` preset gives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Submission {
    pub host: &'static str,
    pub port: u16,
    /// TLS from the first byte (port 465), else STARTTLS.
    pub implicit_tls: bool,
}

/// A provider preset named by `provider = "..."` in `[smtp]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Provider {
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

impl Provider {
    pub const ALL: [Provider; 10] = [
        Provider::Gmail,
        Provider::Outlook,
        Provider::Office365,
        Provider::Yahoo,
        Provider::Aol,
        Provider::Naver,
        Provider::Fastmail,
        Provider::Icloud,
        Provider::Zoho,
        Provider::Gmx,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Provider::Gmail => "gmail",
            Provider::Outlook => "outlook",
            Provider::Office365 => "office365",
            Provider::Yahoo => "yahoo",
            Provider::Aol => "aol",
            Provider::Naver => "naver",
            Provider::Fastmail => "fastmail",
            Provider::Icloud => "icloud",
            Provider::Zoho => "zoho",
            Provider::Gmx => "gmx",
        }
    }

    /// The provider named (any case: `Gmail` is `gmail`).
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|p| p.name().eq_ignore_ascii_case(name.trim()))
    }

    /// The documented sending limits, as suggestions for `max_per_minute` and
    /// `max_per_day` (recipients): `check` warns about a job whose recipients alone
    /// exceed the day's. From shared/providers.md section 5; Gmail's and Yahoo's are the
    /// widely cited figures, not a page of theirs.
    pub fn limits(self) -> (Option<u32>, Option<u32>) {
        match self {
            Provider::Gmail | Provider::Yahoo | Provider::Aol => (None, Some(500)),
            Provider::Office365 => (Some(30), Some(10_000)),
            Provider::Outlook => (None, Some(5_000)),
            Provider::Icloud => (None, Some(1_000)),
            _ => (None, None),
        }
    }

    /// The submission service: host, port, and whether TLS starts at the first byte.
    pub fn submission(self) -> Submission {
        let (host, port, implicit_tls) = match self {
            Provider::Gmail => ("smtp.gmail.com", 587, false),
            Provider::Outlook => ("smtp-mail.outlook.com", 587, false),
            Provider::Office365 => ("smtp.office365.com", 587, false),
            Provider::Yahoo => ("smtp.mail.yahoo.com", 465, true),
            Provider::Aol => ("smtp.aol.com", 465, true),
            Provider::Naver => ("smtp.naver.com", 587, false),
            Provider::Fastmail => ("smtp.fastmail.com", 465, true),
            Provider::Icloud => ("smtp.mail.me.com", 587, false),
            Provider::Zoho => ("smtp.zoho.com", 465, true),
            Provider::Gmx => ("mail.gmx.net", 587, false),
        };
        Submission {
            host,
            port,
            implicit_tls,
        }
    }

    /// Guesses the provider from a host name, for hints when no preset was named.
    pub fn from_host(host: &str) -> Option<Self> {
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        let ends = |suffix: &str| host == suffix || host.ends_with(&format!(".{suffix}"));
        if ends("gmail.com") || ends("google.com") || ends("googlemail.com") {
            Some(Provider::Gmail)
        } else if ends("office365.com") {
            Some(Provider::Office365)
        } else if ends("outlook.com") || ends("hotmail.com") || ends("live.com") {
            Some(Provider::Outlook)
        } else if ends("yahoo.com") {
            Some(Provider::Yahoo)
        } else if ends("aol.com") {
            Some(Provider::Aol)
        } else if ends("naver.com") {
            Some(Provider::Naver)
        } else if ends("fastmail.com") {
            Some(Provider::Fastmail)
        } else if ends("me.com") || ends("icloud.com") {
            Some(Provider::Icloud)
        } else if host.contains("zoho") || ends("zohocloud.ca") {
            Some(Provider::Zoho)
        } else if ends("gmx.net") || ends("gmx.com") {
            Some(Provider::Gmx)
        } else {
            None
        }
    }

    /// The credential that works in 2026, for the providers table and for hints.
    pub fn credential_advice(self) -> &'static str {
        match self {
            Provider::Gmail => {
                "Gmail no longer accepts the account password for SMTP, and \"less secure apps\" no longer exists. \
                 Turn on 2-Step Verification, create an App Password (https://myaccount.google.com/apppasswords), \
                 and use its 16 letters without spaces; or use XOAUTH2"
            }
            Provider::Outlook => {
                "Outlook.com refuses passwords and app passwords for SMTP since September 2024; \
                 only OAuth2 (XOAUTH2) works"
            }
            Provider::Office365 => {
                "basic authentication for SMTP AUTH is disabled for the tenant or the mailbox. \
                 An admin can enable SMTP AUTH (Set-CASMailbox -SmtpClientAuthenticationDisabled $false), \
                 or use XOAUTH2; Microsoft disables basic SMTP AUTH by default from the end of December 2026"
            }
            Provider::Yahoo | Provider::Aol => {
                "use an app password (Account security > Generate app password), not the account password; \
                 wait before retrying, as repeated failures lock the account (#AUTH005)"
            }
            Provider::Naver => {
                "Naver requires an application password (2-step verification on), and IMAP/SMTP must be \
                 enabled under 환경설정 > POP3/IMAP 설정"
            }
            Provider::Fastmail => {
                "Fastmail always requires an app password for SMTP, even without 2FA"
            }
            Provider::Icloud => {
                "iCloud requires an app-specific password (two-factor authentication on), created at appleid.apple.com"
            }
            Provider::Zoho => {
                "use the account password, or an application-specific password when two-factor auth is on, \
                 and the host of your data centre (smtp.zoho.eu, smtp.zoho.in, ...)"
            }
            Provider::Gmx => {
                "enable POP3/IMAP/SMTP access in the GMX mail settings (off by default), and use an \
                 application-specific password when 2FA is on"
            }
        }
    }
}

/// Where the built-in flow's defaults come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OAuthProvider {
    Microsoft,
    Google,
}

impl OAuthProvider {
    pub fn name(self) -> &'static str {
        match self {
            OAuthProvider::Microsoft => "microsoft",
            OAuthProvider::Google => "google",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        match name.trim().to_ascii_lowercase().as_str() {
            "microsoft" => Some(OAuthProvider::Microsoft),
            "google" => Some(OAuthProvider::Google),
            _ => None,
        }
    }

    /// The scope SMTP sending needs (Microsoft's `offline_access` gets a refresh token).
    pub fn scope(self) -> &'static str {
        match self {
            OAuthProvider::Microsoft => "https://outlook.office.com/SMTP.Send offline_access",
            OAuthProvider::Google => "https://mail.google.com/",
        }
    }

    pub fn token_url(self, tenant: &str) -> String {
        match self {
            OAuthProvider::Microsoft => {
                format!("https://login.microsoftonline.com/{tenant}/oauth2/v2.0/token")
            }
            OAuthProvider::Google => "https://oauth2.googleapis.com/token".to_owned(),
        }
    }

    pub fn device_code_url(self, tenant: &str) -> Option<String> {
        match self {
            OAuthProvider::Microsoft => Some(format!(
                "https://login.microsoftonline.com/{tenant}/oauth2/v2.0/devicecode"
            )),
            OAuthProvider::Google => None,
        }
    }

    pub fn authorize_url(self) -> Option<String> {
        match self {
            OAuthProvider::Microsoft => None,
            OAuthProvider::Google => {
                Some("https://accounts.google.com/o/oauth2/v2/auth".to_owned())
            }
        }
    }
}
