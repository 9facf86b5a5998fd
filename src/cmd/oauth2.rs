//! `cronmail oauth2 authorize`: the one interactive sign-in that writes the refresh
//! token for `[smtp.oauth2]`.

use std::io::Write as _;
use std::path::Path;

use super::{load_config, print_error, report};
use crate::cli::OAuthProviderArg;
use crate::config::{OAuthProvider, TransportConfig};
use crate::exit::Exit;

pub async fn authorize(
    path: &Path,
    provider: Option<OAuthProviderArg>,
    port: u16,
    account: Option<&str>,
) -> Exit {
    let config = match load_config(path) {
        Ok(c) => c,
        Err(exit) => return exit,
    };
    let chosen = match choose(&config, account) {
        Ok(c) => c,
        Err(exit) => return exit,
    };
    let Some(smtp) = chosen else {
        print_error(
            "`oauth2 authorize` needs an [smtp] section with [smtp.oauth2]; this account is an outbox",
        );
        return Exit::Config;
    };
    let Some(oauth2) = &smtp.oauth2 else {
        print_error(&format!(
            "{} has no [smtp.oauth2] section. For Microsoft 365, add:\n\n  \
             [smtp.oauth2]\n  provider = \"microsoft\"\n  client_id = \"YOUR-APP-ID\"\n\n\
             (how to register the app: {})",
            path.display(),
            crate::mail::OAUTH2_GUIDE
        ));
        return Exit::Config;
    };
    let wanted = provider.map(|p| match p {
        OAuthProviderArg::Microsoft => OAuthProvider::Microsoft,
        OAuthProviderArg::Google => OAuthProvider::Google,
    });
    if let Some(w) = wanted
        && oauth2.provider != Some(w)
    {
        print_error(&format!(
            "--provider {} does not match [smtp.oauth2] in {} ({}); the client id and endpoints come from there",
            w.name(),
            path.display(),
            oauth2
                .provider
                .map_or("no provider, explicit URLs", |p| p.name())
        ));
        return Exit::Usage;
    }
    let mut stdout = std::io::stdout();
    match crate::oauth2::authorize(oauth2, &smtp.extra_roots, port, &mut stdout).await {
        Ok(file) => {
            let _ = writeln!(
                stdout,
                "Signed in. Saved the refresh token to `{}` (mode 0600).\nNext: cronmail -c {} check --smtp",
                file.display(),
                path.display()
            );
            Exit::Ok
        }
        Err(e) => report(Some("signing in"), &e),
    }
}

fn smtp_of(a: &crate::config::AccountConfig) -> Option<&crate::config::SmtpConfig> {
    match &a.transport {
        TransportConfig::Smtp(s) => Some(s),
        TransportConfig::Outbox { .. } => None,
    }
}

/// The account `--account` names; else the only one with `[smtp.oauth2]`; else the first.
fn choose<'a>(
    config: &'a crate::config::Config,
    account: Option<&str>,
) -> Result<Option<&'a crate::config::SmtpConfig>, Exit> {
    let names = |list: &mut dyn Iterator<Item = &crate::config::AccountConfig>| -> String {
        list.map(|a| format!("`{}`", a.name))
            .collect::<Vec<_>>()
            .join(", ")
    };
    if let Some(name) = account {
        let Some(i) = config.account_named(name) else {
            print_error(&format!(
                "--account `{name}`: no such account; the accounts are {}",
                names(&mut config.accounts.iter())
            ));
            return Err(Exit::Usage);
        };
        return Ok(smtp_of(&config.accounts[i]));
    }
    let with: Vec<_> = config
        .accounts
        .iter()
        .filter(|a| smtp_of(a).is_some_and(|s| s.oauth2.is_some()))
        .collect();
    if with.len() > 1 {
        print_error(&format!(
            "several accounts use OAuth2 ({}); name one with --account",
            names(&mut with.iter().copied())
        ));
        return Err(Exit::Usage);
    }
    Ok(with
        .first()
        .and_then(|a| smtp_of(a))
        .or_else(|| smtp_of(&config.accounts[0])))
}
