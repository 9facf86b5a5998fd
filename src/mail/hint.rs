//! What to tell the user when a send fails: the `hint` field of the ERROR line.
//!
//! Matching follows the research sheet's advice: on (basic code, enhanced code, a stable
//! phrase), never on the whole line, since Gmail appends `<id> - gsmtp` and Microsoft
//! `[HOST.PROD.OUTLOOK.COM ...]`. A provider's hint applies when the reply matches it,
//! or when the host is that provider's and the reply is a generic auth failure.

use crate::config::{AuthMethod, Provider, SmtpConfig, TlsMode};
use crate::failure::{ErrorClass, Failure, Phase};

/// The hint for a failed send, if there is something useful to say.
pub fn hint(err: &Failure, cfg: &SmtpConfig) -> Option<String> {
    let reply = err.reply.as_deref().unwrap_or("");
    let has = |s: &str| reply.to_ascii_lowercase().contains(&s.to_ascii_lowercase());
    let code = err.code;
    let provider = cfg.effective_provider();
    let credential = credential_note(cfg);

    // Bytes that are not an SMTP reply where the greeting was due: TLS, most likely.
    let garbled = err.class == ErrorClass::Tls
        || (err.class == ErrorClass::Connect
            && (err.detail.contains("parse") || err.detail.contains("nvalid response")));
    if garbled && err.phase == Some(Phase::Greeting) && cfg.tls != TlsMode::Implicit {
        return Some(greeting_hint(cfg));
    }
    match err.class {
        ErrorClass::Auth => Some(auth_hint(code, &has, provider, cfg, &credential)),
        ErrorClass::Tls => Some(tls_hint(err, cfg)),
        ErrorClass::Connect => Some(format!(
            "cronmail could not reach {}:{}. Check `host` and `port`, DNS and the firewall; \
             port 465 needs `tls = \"implicit\"` and port 587 `tls = \"starttls\"`",
            cfg.host, cfg.port
        )),
        ErrorClass::Quota => Some(quota_hint(&has, provider)),
        ErrorClass::Transient => {
            if has("4.5.3") && has("sender thread limit") || has("432 4.3.2") {
                Some("Microsoft 365 allows at most 3 concurrent connections per mailbox; lower `max_connections`".to_owned())
            } else {
                Some(
                    "the server asked to try again later (a 4xx reply): a later attempt may work"
                        .to_owned(),
                )
            }
        }
        ErrorClass::Permanent => Some(permanent_hint(err, &has)),
        ErrorClass::Timeout => Some(timeout_hint(err, cfg)),
        ErrorClass::Local => None,
    }
}

fn credential_note(cfg: &SmtpConfig) -> String {
    match (&cfg.username, &cfg.password, &cfg.token_command) {
        (Some(u), _, _) if cfg.auth == AuthMethod::Xoauth2 && cfg.oauth2.is_some() => {
            format!(" (username `{u}`, XOAUTH2 token refreshed by cronmail)")
        }
        (Some(u), _, Some(src)) if cfg.auth == AuthMethod::Xoauth2 => {
            format!(" (username `{u}`, XOAUTH2 token from {src})")
        }
        (Some(u), Some(src), _) => format!(" (username `{u}`, password from {src})"),
        _ => " (no `username` is configured)".to_owned(),
    }
}

/// What to write in `[smtp]` to switch to XOAUTH2.
const XOAUTH2_EXAMPLE: &str = "in place of the password source, an [smtp.oauth2] section with \
    provider = \"microsoft\" and client_id = \"YOUR-APP-ID\", then run `cronmail oauth2 authorize` once \
    (the app registration is in the OAuth2 guide, /usr/share/doc/cronmail/oauth2.md or \
    docs/oauth2.md in the source)";

/// Where the `OAuth2` guide is, installed and in the source.
pub(crate) const OAUTH2_GUIDE: &str =
    "/usr/share/doc/cronmail/oauth2.md (docs/oauth2.md in the source)";

fn auth_hint(
    code: Option<u16>,
    has: &dyn Fn(&str) -> bool,
    provider: Option<Provider>,
    cfg: &SmtpConfig,
    credential: &str,
) -> String {
    if cfg.auth == AuthMethod::Xoauth2 {
        return xoauth2_hint(has, provider, cfg, credential);
    }
    // Gmail: BadCredentials (535 5.7.8) and InvalidSecondFactor (534 5.7.9).
    if has("5.7.8") && (has("BadCredentials") || has("Username and Password not accepted"))
        || has("5.7.9") && has("Application-specific password required")
    {
        return format!("{}{credential}", Provider::Gmail.credential_advice());
    }
    if has("5.7.14") && has("web browser") {
        return format!(
            "Google wants a sign-in in a web browser first: sign in at https://mail.google.com once, \
             then use an App Password or XOAUTH2{credential}"
        );
    }
    if has("5.7.139") && has("SmtpClientAuthentication is disabled") {
        return format!(
            "SMTP AUTH is disabled for the whole Microsoft 365 tenant. An admin can enable it \
             (Set-TransportConfig -SmtpClientAuthenticationDisabled $false, or per mailbox \
             Set-CASMailbox -SmtpClientAuthenticationDisabled $false), or use XOAUTH2{credential}"
        );
    }
    if has("5.7.139") && has("credentials were incorrect") {
        return format!("Microsoft says the username or password is wrong{credential}");
    }
    if has("5.7.139") && has("security defaults") {
        return format!(
            "the tenant's security defaults block basic authentication; use XOAUTH2, or ask an admin \
             for an exception{credential}"
        );
    }
    if has("5.7.139") || has("5.7.3") && has("Authentication unsuccessful") || has("5.7.30") {
        let who = if provider == Some(Provider::Outlook) {
            Provider::Outlook
        } else {
            Provider::Office365
        };
        return format!(
            "{}. To use XOAUTH2: {XOAUTH2_EXAMPLE}{credential}",
            who.credential_advice()
        );
    }
    if code == Some(504) && has("5.7.4") {
        return format!(
            "the server does not accept this login mechanism here; Microsoft offers only LOGIN and \
             XOAUTH2, and only after STARTTLS{credential}"
        );
    }
    if has("#AUTH005") {
        return format!("{}{credential}", Provider::Yahoo.credential_advice());
    }
    if has("#MBR1212") {
        return format!(
            "Yahoo says the username or password is wrong; use an app password{credential}"
        );
    }
    if code == Some(530) {
        if cfg.username.is_none() {
            return "the server requires authentication: set `username` and a password source in [smtp]".to_owned();
        }
        return format!("the server requires authentication before sending{credential}");
    }
    if code == Some(538) {
        return format!(
            "the server allows AUTH only over TLS; use `tls = \"starttls\"` or `\"implicit\"`{credential}"
        );
    }
    if code.is_none() {
        return format!(
            "no login mechanism in common with the server (cronmail offers PLAIN and LOGIN){credential}"
        );
    }
    match provider {
        Some(p) => format!("{}{credential}", p.credential_advice()),
        None => format!(
            "the server refused the login. Check the username and the password; many providers \
             require an app password for SMTP instead of the account password{credential}"
        ),
    }
}

/// A refused XOAUTH2 token.
fn xoauth2_hint(
    has: &dyn Fn(&str) -> bool,
    provider: Option<Provider>,
    cfg: &SmtpConfig,
    credential: &str,
) -> String {
    if has("5.7.139") && has("SmtpClientAuthentication is disabled") {
        return format!(
            "SMTP AUTH is disabled for the whole Microsoft 365 tenant, even for OAuth2; an admin must \
             enable it (Set-TransportConfig -SmtpClientAuthenticationDisabled $false){credential}"
        );
    }
    let freshness = if cfg.oauth2.is_some() {
        "cronmail refreshed it, so it was"
    } else {
        "it may be expired or revoked (check that `token_command` prints a fresh one), or"
    };
    let mailbox = if has("5.7.139")
        || provider == Some(Provider::Office365)
        || provider == Some(Provider::Outlook)
    {
        ". Microsoft also needs SMTP AUTH enabled for the mailbox (Set-CASMailbox -SmtpClientAuthenticationDisabled $false)"
    } else {
        ""
    };
    format!(
        "the server refused the OAuth2 token: {freshness} issued for another account than `username`, or lacks the scope \
         (https://mail.google.com/ for Gmail; https://outlook.office.com/SMTP.Send for Microsoft){mailbox}{credential}"
    )
}

/// An account's limit: which one, when it resets, and what cronmail does meanwhile.
fn quota_hint(has: &dyn Fn(&str) -> bool, provider: Option<Provider>) -> String {
    let then = "the daemon holds this account's sends (nothing is lost) and tries again with backoff, \
                one attempt first, until `retry_for`";
    if has("too many login attempts") {
        return format!(
            "Google is rate-limiting logins to this account: wait before trying again. Many logins in \
             a row come from a wrong password retried, or from reconnecting per message; {then}"
        );
    }
    if has("SubmissionQuotaExceeded") || has("5.1.90") {
        return format!(
            "the Microsoft 365 mailbox reached its limit of 10,000 recipients a day, counted over a \
             rolling 24 hours; {then}"
        );
    }
    let limit = if provider == Some(Provider::Gmail) || has("gsmtp") {
        "Gmail's daily sending limit (about 500 recipients a day for a personal account, 2,000 \
         messages for Google Workspace), counted over a rolling 24 hours: it resets 24 hours after \
         the earlier sends"
    } else {
        "the account's daily sending limit; most providers count a rolling 24 hours"
    };
    format!("the account reached {limit}; {then}")
}

/// No SMTP greeting, or TLS where a plain greeting was due: the port wants implicit TLS.
fn greeting_hint(cfg: &SmtpConfig) -> String {
    if cfg.port == 465 && cfg.tls != TlsMode::Implicit {
        return "port 465 expects implicit TLS: set `tls = \"implicit\"`".to_owned();
    }
    format!(
        "{}:{} did not greet as an SMTP server does over a plain connection; a server that waits in \
         silence, or answers with TLS, expects implicit TLS from the first byte (usually port 465): \
         set `tls = \"implicit\"`",
        cfg.host, cfg.port
    )
}

/// A timeout, by the phase it interrupted.
fn timeout_hint(err: &Failure, cfg: &SmtpConfig) -> String {
    match err.phase {
        Some(Phase::Data) => {
            "the server stopped answering during DATA: if the whole message had been \
             sent, the server may or may not have accepted it. A retry carries the same Message-ID, so \
             a duplicate is recognisable as one"
                .to_owned()
        }
        Some(Phase::Greeting) => greeting_hint(cfg),
        Some(Phase::Tls | Phase::Starttls) => {
            "the TLS handshake did not finish in time; nothing was \
             sent"
                .to_owned()
        }
        Some(Phase::Auth) => "the server did not answer the login in time; nothing was sent"
            .to_owned(),
        Some(Phase::Mail | Phase::Rcpt) => "the server stopped answering before the message was \
             sent; nothing was delivered"
            .to_owned(),
        _ => "the server is slow or unreachable. Raise `timeout` if this \
              server is always slow"
            .to_owned(),
    }
}

fn tls_hint(err: &Failure, cfg: &SmtpConfig) -> String {
    let d = err.detail.as_str();
    if err.phase == Some(Phase::Starttls) && d.contains("did not offer STARTTLS") {
        return format!(
            "{}:{} does not offer STARTTLS. If this port expects TLS from the first byte (usually 465), \
             set `tls = \"implicit\"`; cronmail never falls back to plain text",
            cfg.host, cfg.port
        );
    }
    if d.contains("does not match `tls_fingerprint`") {
        return "the server presents another certificate than the pinned one. If it renewed its \
                certificate, check the new one out of band, then put the fingerprint `cronmail check --smtp` \
                prints in `tls_fingerprint`; otherwise the connection may be intercepted"
            .to_owned();
    }
    if err.phase == Some(Phase::Starttls) && err.code.is_some() {
        return "the server refused STARTTLS; nothing was sent. Try again later, or ask the server's operator".to_owned();
    }
    if d.contains("not trusted") || d.contains("unknown issuer") {
        return "if the server uses a private certificate authority, add its certificate in PEM form with \
                `ca_file`; for a self-signed certificate, pin it with `tls_fingerprint = \"sha256:...\"` \
                (`cronmail check --smtp` prints it). cronmail never skips verification"
            .to_owned();
    }
    if d.contains("another host name") {
        return format!(
            "connect with the host name the certificate was issued for; `host` is `{}`",
            cfg.host
        );
    }
    if d.contains("expired") {
        return "the server's operator must renew its certificate".to_owned();
    }
    if d.contains("TLS 1.2 and 1.3 only") || d.contains("no TLS version or cipher") {
        return "the server's TLS is too old or incompatible: cronmail speaks TLS 1.2 and 1.3 only, as \
                current providers require (Microsoft refuses TLS 1.0/1.1 with 421 4.7.66). Ask the server's \
                operator to enable TLS 1.2; cronmail does not downgrade"
            .to_owned();
    }
    if d.contains("InvalidContentType")
        || d.contains("wrong version")
        || d.contains("CorruptMessage")
    {
        let other = if cfg.tls == TlsMode::Implicit {
            "starttls"
        } else {
            "implicit"
        };
        return format!(
            "the server did not speak TLS as `tls = \"{}\"` expects; port 465 usually wants `implicit`, \
             587 `starttls`. Try `tls = \"{other}\"`",
            cfg.tls
        );
    }
    "TLS could not be established; nothing was sent".to_owned()
}

fn permanent_hint(err: &Failure, has: &dyn Fn(&str) -> bool) -> String {
    if has("SendAsDenied")
        || has("5.7.60")
        || has("Relaying disallowed")
        || has("Sender address is not allowed")
    {
        return "the server does not let this account send as the `from` address; use the account's own \
                address or an alias it may send as"
            .to_owned();
    }
    match err.phase {
        Some(Phase::Rcpt) => {
            "the server refused a recipient; check the addresses in `to`, `cc` and `bcc`".to_owned()
        }
        Some(Phase::Mail) => "the server refused the sender; check `from`".to_owned(),
        _ => "the server refused the message permanently; cronmail will not retry it".to_owned(),
    }
}
