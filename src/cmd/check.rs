//! `cronmail check [--smtp]`: validate jobs.toml and read every credential; with
//! `--smtp`, also connect, set up TLS, log in, and QUIT without sending.

use std::io::Write as _;
use std::path::Path;

use chrono::SecondsFormat;
use secrecy::{ExposeSecret as _, SecretString};

use super::{load_config, print_error, report};
use crate::config::{AccountConfig, Config, SmtpConfig, TransportConfig};
use crate::exit::Exit;
use crate::mail::{Mailer, looks_like_app_password, spaced_app_password};
use crate::oauth2::TokenSource;
use crate::secret::SecretSource;

pub async fn check(path: &Path, smtp: bool, explain: bool) -> Exit {
    let config = match load_config(path) {
        Ok(c) => c,
        Err(exit) => return exit,
    };
    {
        let mut err = std::io::stderr().lock();
        for w in &config.warnings {
            let _ = writeln!(err, "{}", w.with_snippet());
        }
    }
    let mut passwords = Vec::with_capacity(config.accounts.len());
    for account in &config.accounts {
        // One account says nothing of names; several name each.
        let label = if config.accounts.len() > 1 {
            format!("account `{}`: ", account.name)
        } else {
            String::new()
        };
        match &account.transport {
            TransportConfig::Outbox { dir } => {
                let _ = writeln!(
                    std::io::stdout(),
                    "{label}transport: outbox `{}`",
                    dir.display()
                );
                passwords.push(None);
            }
            TransportConfig::Smtp(s) => match credentials(s, path, &label).await {
                Ok(p) => passwords.push(p),
                Err(exit) => return exit,
            },
        }
    }
    print_next(&config, explain);
    // Last, once everything that can be checked without a server was: a file with a
    // problem never says "ok".
    let enabled = config.jobs.iter().filter(|j| j.enabled).count();
    let warnings = match config.warnings.len() {
        0 => String::new(),
        1 => ", 1 warning".to_owned(),
        n => format!(", {n} warnings"),
    };
    let _ = writeln!(
        std::io::stdout(),
        "{}: ok, {} jobs ({enabled} enabled){warnings}",
        path.display(),
        config.jobs.len()
    );
    if !smtp {
        // The process ends here: freeing 10,000 jobs one allocation at a time takes
        // longer (a tenth of `check`) than the kernel takes to drop the whole heap.
        std::mem::forget(config);
        return Exit::Ok;
    }
    let mut exit = Exit::Ok;
    let mut probed = 0;
    for (account, password) in config.accounts.iter().zip(passwords) {
        if !account.is_smtp() {
            continue;
        }
        if config.accounts.len() > 1 {
            let _ = writeln!(std::io::stdout(), "account `{}`:", account.name);
        }
        probed += 1;
        let this = probe(account, password).await;
        if exit == Exit::Ok {
            exit = this;
        }
    }
    if probed == 0 {
        print_error(
            "`check --smtp` needs an [smtp] section or an SMTP [account.NAME]; this file has only outboxes",
        );
        return Exit::Usage;
    }
    exit
}

/// Reads every credential of `[smtp]` once, as a send would.
async fn credentials(
    s: &SmtpConfig,
    path: &Path,
    label: &str,
) -> Result<Option<SecretString>, Exit> {
    let mut out = std::io::stdout();
    let _ = writeln!(
        out,
        "{label}transport: smtp {}:{} tls={}",
        s.host, s.port, s.tls
    );
    if let Some(o) = &s.oauth2 {
        let tokens = match TokenSource::new(o, &s.extra_roots) {
            Ok(source) => source.refresh().await,
            Err(e) => Err(e),
        };
        match tokens {
            Ok(tokens) => {
                let _ = writeln!(
                    out,
                    "token: {} gave an access token for the refresh token in `{}` (valid for {})",
                    o.token_url,
                    o.refresh_token_file.display(),
                    humantime::format_duration(tokens.expires_in)
                );
            }
            Err(e) => return Err(report(Some("getting an OAuth2 access token"), &e)),
        }
    }
    if let Some(src) = &s.token_command {
        match src.read().await {
            Ok(token) => {
                let _ = writeln!(out, "token: {src} printed an access token");
                if looks_like_app_password(token.expose_secret()) {
                    let _ = writeln!(
                        std::io::stderr(),
                        "warning: the token from {src} looks like an App Password (16 letters); XOAUTH2 needs an OAuth2 access token"
                    );
                }
            }
            Err(e) => {
                print_error(&format!("the OAuth2 access token cannot be read: {e}"));
                return Err(Exit::Config);
            }
        }
    }
    let Some(src) = &s.password else {
        return Ok(None);
    };
    if let Some(warning) = permission_warning(src, path) {
        let _ = writeln!(std::io::stderr(), "warning: {warning}");
    }
    match src.read().await {
        Ok(p) => {
            let _ = writeln!(out, "password: readable from {src}");
            if spaced_app_password(p.expose_secret()) {
                let gmail = s.effective_provider() == Some(crate::config::Provider::Gmail);
                let _ = writeln!(
                    std::io::stderr(),
                    "{}",
                    if gmail {
                        format!(
                            "warning: the password from {src} is a Google App Password with the spaces Google shows; they are only for reading, and cronmail removes them before logging in"
                        )
                    } else {
                        format!(
                            "warning: the password from {src} looks like a Google App Password with its spaces; cronmail removes them only for Gmail (`provider = \"gmail\"` or an smtp.gmail.com host), so remove them yourself if this server wants the 16 letters"
                        )
                    }
                );
            }
            Ok(Some(p))
        }
        Err(e) => {
            print_error(&format!("the SMTP password cannot be read: {e}"));
            Err(Exit::Config)
        }
    }
}

/// Each enabled job's first occurrence, found while loading a moment ago: parsing
/// 10,000 schedules again costs more than the whole check. With `explain`, how each
/// schedule was read, field by field.
fn print_next(config: &Config, explain: bool) {
    // Buffered: stdout alone flushes at each line, a write(2) a job.
    let mut out = std::io::BufWriter::with_capacity(64 * 1024, std::io::stdout().lock());
    for job in config.jobs.iter().filter(|j| j.enabled) {
        if let Some(t) = job.first {
            let _ = writeln!(
                out,
                "next: {}\t{}",
                job.name,
                t.with_timezone(&job.tz())
                    .to_rfc3339_opts(SecondsFormat::Secs, true)
            );
        }
        if explain {
            let _ = writeln!(out, "read: {}\t{} in {}", job.name, how_read(job), job.tz());
        }
    }
    let _ = out.flush();
}

/// How a job's schedule was read: a cron expression field by field, or the rule or
/// times as written.
pub(super) fn how_read(job: &crate::config::Job) -> String {
    let mut out = match job.schedule.cron_expr() {
        Some(expr) => format!("`{expr}` = {}", crate::schedule::explain(expr)),
        None => format!("`{}`", job.schedule.expr()),
    };
    match job.schedule.lead_days() {
        0 => {}
        1 => out.push_str(", 1 day before"),
        n => out = format!("{out}, {n} days before"),
    }
    out
}

/// `--smtp`: TLS, the certificate, and a real login.
async fn probe(account: &AccountConfig, password: Option<SecretString>) -> Exit {
    let mailer = match Mailer::new(&account.transport, password, 1) {
        Ok(Mailer::Smtp(m)) => m,
        Ok(Mailer::Outbox(_)) => return Exit::Software,
        Err(e) => return report(None, &e),
    };
    match mailer.probe().await {
        Ok(report) => {
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "server: {} ({})", report.server, report.greeting);
            if let Some(tls) = &report.tls {
                let _ = writeln!(out, "tls: {}", tls.version);
                let _ = writeln!(out, "certificate: {}", tls.subject);
                let _ = writeln!(out, "issuer: {}", tls.issuer);
                let _ = writeln!(out, "expires: {}", tls.not_after);
                let _ = writeln!(out, "fingerprint: {}", tls.fingerprint);
            } else {
                let _ = writeln!(out, "tls: none (loopback)");
            }
            let _ = writeln!(
                out,
                "auth: {}",
                report.auth.as_deref().unwrap_or("not configured")
            );
            Exit::Ok
        }
        Err(e) => report(None, &e),
    }
}

/// Warns when a password file, or jobs.toml naming a password command, can be read or
/// changed by other users.
fn permission_warning(src: &SecretSource, config: &Path) -> Option<String> {
    use std::os::unix::fs::PermissionsExt;
    let (path, what) = match src {
        SecretSource::File(p) => (p.as_path(), "the password file"),
        SecretSource::Command(_) => (config, "jobs.toml, which names the password command,"),
        _ => return None,
    };
    let mode = std::fs::metadata(path).ok()?.permissions().mode();
    let readable = matches!(src, SecretSource::File(_)) && mode & 0o044 != 0;
    let writable = mode & 0o022 != 0;
    (readable || writable).then(|| {
        format!(
            "{what} `{}` has mode {:03o}: other users can {}; run `chmod 600 {}`",
            path.display(),
            mode & 0o777,
            if writable { "change it" } else { "read it" },
            path.display()
        )
    })
}
