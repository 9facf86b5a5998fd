//! What each subcommand does. `main` parses the command line and calls `execute`;
//! integration tests call the binary, so the exit codes and output are the real ones.

use std::io::Write as _;
use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;

use chrono::{DateTime, SecondsFormat, Utc};
use lettre::message::Mailbox;

use crate::cli::{Command, OAuth2Command, OAuthProviderArg};
use crate::clock::SystemClock;
use crate::config::{self, Config, Host, TransportConfig};
use crate::daemon::{self, StartError};
use crate::exit::Exit;
use crate::failure::Failure;
use crate::mail::Mailer;

/// Runs one command and returns its exit status. Errors are printed here, once.
pub async fn execute(config_path: &Path, command: Command) -> Exit {
    match command {
        Command::Run => run(config_path).await,
        Command::Check { smtp } => check(config_path, smtp).await,
        Command::Next { job, count, from } => {
            next(config_path, job.as_deref(), count, from.as_deref())
        }
        Command::Render { job, at } => render(config_path, &job, at.as_deref()),
        Command::Send { job, to } => send(config_path, &job, to.as_deref()).await,
        Command::Oauth2 {
            command: OAuth2Command::Authorize { provider, port },
        } => oauth2_authorize(config_path, provider, port).await,
        Command::Status => tokio::task::block_in_place(|| status(config_path)),
        Command::History { job, limit } => {
            tokio::task::block_in_place(|| history(config_path, job.as_deref(), limit))
        }
    }
}

fn print_error(message: &str) {
    let _ = writeln!(std::io::stderr(), "error: {message}");
}

/// Loads the config, or prints every problem and returns `Exit::Config`.
fn load_config(path: &Path) -> Result<Config, Exit> {
    config::load(path, &Host::from_env()).map_err(|diags| {
        let mut err = std::io::stderr().lock();
        for d in &diags.0 {
            let _ = writeln!(err, "{d}");
        }
        let n = diags.0.len();
        let _ = writeln!(
            err,
            "error: {n} problem{} in {}",
            if n == 1 { "" } else { "s" },
            path.display()
        );
        Exit::Config
    })
}

fn start_error_exit(e: &StartError) -> Exit {
    match e {
        StartError::Config(diags) => {
            let mut err = std::io::stderr().lock();
            for d in &diags.0 {
                let _ = writeln!(err, "{d}");
            }
            Exit::Config
        }
        StartError::Secret(_) | StartError::Mailer(_) => {
            print_error(&e.to_string());
            Exit::Config
        }
        StartError::Ledger(l) => {
            print_error(&e.to_string());
            match l {
                crate::ledger::LedgerError::Locked(_)
                | crate::ledger::LedgerError::NodeTaken { .. } => Exit::TempFail,
                crate::ledger::LedgerError::Unreachable { .. }
                | crate::ledger::LedgerError::Db { .. } => Exit::Unavailable,
                _ => Exit::CantCreate,
            }
        }
    }
}

fn parse_instant(flag: &str, value: &str) -> Result<DateTime<Utc>, Exit> {
    DateTime::parse_from_rfc3339(value)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| {
            print_error(&format!(
                "{flag} `{value}` is not an RFC 3339 time such as 2026-03-02T09:00:00+01:00: {e}"
            ));
            Exit::Usage
        })
}

fn find_job<'c>(config: &'c Config, name: &str) -> Result<&'c config::Job, Exit> {
    config.job(name).ok_or_else(|| {
        let names: Vec<&str> = config.jobs.iter().map(|j| j.name.as_str()).collect();
        print_error(&format!(
            "no job `{name}` in {}; jobs: {}",
            config.path.display(),
            names.join(", ")
        ));
        Exit::Usage
    })
}

async fn run(path: &Path) -> Exit {
    let events = match daemon::signal_events() {
        Ok(events) => events,
        Err(e) => {
            print_error(&format!("installing signal handlers: {e}"));
            return Exit::Software;
        }
    };
    match daemon::run(path.to_path_buf(), Arc::new(SystemClock), events).await {
        Ok(()) => Exit::Ok,
        Err(e) => start_error_exit(&e),
    }
}

#[allow(clippy::too_many_lines)] // until `check` has its own file (cmd/check.rs)
async fn check(path: &Path, smtp: bool) -> Exit {
    let config = match load_config(path) {
        Ok(c) => c,
        Err(exit) => return exit,
    };
    let mut out = std::io::stdout().lock();
    let enabled = config.jobs.iter().filter(|j| j.enabled).count();
    let _ = writeln!(
        out,
        "{}: ok, {} jobs ({enabled} enabled)",
        path.display(),
        config.jobs.len()
    );

    let mut password = None;
    match &config.transport {
        TransportConfig::Outbox { dir } => {
            let _ = writeln!(out, "transport: outbox `{}`", dir.display());
        }
        TransportConfig::Smtp(s) => {
            let _ = writeln!(out, "transport: smtp {}:{} tls={}", s.host, s.port, s.tls);
            if let Some(o) = &s.oauth2 {
                let source = match crate::oauth2::TokenSource::new(o, &s.extra_roots) {
                    Ok(source) => source,
                    Err(e) => return report_token_error(&e),
                };
                match source.refresh().await {
                    Ok(tokens) => {
                        let _ = writeln!(
                            out,
                            "token: {} gave an access token for the refresh token in `{}` (valid for {})",
                            o.token_url,
                            o.refresh_token_file.display(),
                            humantime::format_duration(tokens.expires_in)
                        );
                    }
                    Err(e) => return report_token_error(&e),
                }
            }
            if let Some(src) = &s.token_command {
                match src.read().await {
                    Ok(token) => {
                        let _ = writeln!(out, "token: {src} printed an access token");
                        if crate::mail::looks_like_app_password(
                            secrecy::ExposeSecret::expose_secret(&token),
                        ) {
                            let _ = writeln!(
                                std::io::stderr(),
                                "warning: the token from {src} looks like an App Password (16 letters); XOAUTH2 needs an OAuth2 access token"
                            );
                        }
                    }
                    Err(e) => {
                        print_error(&format!("the OAuth2 access token cannot be read: {e}"));
                        return Exit::Config;
                    }
                }
            }
            if let Some(src) = &s.password {
                if let Some(warning) = permission_warning(src, path) {
                    let _ = writeln!(std::io::stderr(), "warning: {warning}");
                }
                match src.read().await {
                    Ok(p) => {
                        let _ = writeln!(out, "password: readable from {src}");
                        password = Some(p);
                    }
                    Err(e) => {
                        print_error(&format!("the SMTP password cannot be read: {e}"));
                        return Exit::Config;
                    }
                }
            }
        }
    }
    for job in config.jobs.iter().filter(|j| j.enabled) {
        // Found while loading, a moment ago: parsing 10,000 schedules again costs more
        // than the whole check.
        if let Some(t) = job.first {
            let _ = writeln!(
                out,
                "next: {}\t{}",
                job.name,
                t.with_timezone(&job.tz())
                    .to_rfc3339_opts(SecondsFormat::Secs, true)
            );
        }
    }
    drop(out);
    if !smtp {
        return Exit::Ok;
    }
    let TransportConfig::Smtp(_) = &config.transport else {
        print_error("`check --smtp` needs an [smtp] section; this file uses [outbox]");
        return Exit::Usage;
    };
    let mailer = match Mailer::new(&config.transport, password, 1) {
        Ok(Mailer::Smtp(m)) => m,
        Ok(Mailer::Outbox(_)) => return Exit::Software,
        Err(e) => return report_send_error(&e),
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
        Err(e) => report_send_error(&e),
    }
}

/// Warns when a password file, or jobs.toml naming a password command, can be read or
/// changed by other users.
fn permission_warning(src: &crate::secret::SecretSource, config: &Path) -> Option<String> {
    use std::os::unix::fs::PermissionsExt;
    let (path, what) = match src {
        crate::secret::SecretSource::File(p) => (p.as_path(), "the password file"),
        crate::secret::SecretSource::Command(_) => {
            (config, "jobs.toml, which names the password command,")
        }
        _ => return None,
    };
    let mode = std::fs::metadata(path).ok()?.permissions().mode();
    let readable = matches!(src, crate::secret::SecretSource::File(_)) && mode & 0o044 != 0;
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

fn report_token_error(e: &Failure) -> Exit {
    print_error(&format!("getting an OAuth2 access token: {}", e.detail));
    if let Some(hint) = &e.hint {
        let _ = writeln!(std::io::stderr(), "hint: {hint}");
    }
    Exit::from(e.class)
}

async fn oauth2_authorize(path: &Path, provider: Option<OAuthProviderArg>, port: u16) -> Exit {
    let config = match load_config(path) {
        Ok(c) => c,
        Err(exit) => return exit,
    };
    let TransportConfig::Smtp(smtp) = &config.transport else {
        print_error(
            "`oauth2 authorize` needs an [smtp] section with [smtp.oauth2]; this file uses [outbox]",
        );
        return Exit::Config;
    };
    let Some(oauth2) = &smtp.oauth2 else {
        print_error(&format!(
            "{} has no [smtp.oauth2] section. For Microsoft 365, add:\n\n  \
             [smtp.oauth2]\n  provider = \"microsoft\"\n  client_id = \"YOUR-APP-ID\"\n\n\
             (the README's \"OAuth2\" section shows how to register the app)",
            path.display()
        ));
        return Exit::Config;
    };
    let wanted = provider.map(|p| match p {
        OAuthProviderArg::Microsoft => crate::config::OAuthProvider::Microsoft,
        OAuthProviderArg::Google => crate::config::OAuthProvider::Google,
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
        Err(e) => {
            print_error(&format!("signing in: {}", e.detail));
            if let Some(hint) = &e.hint {
                let _ = writeln!(std::io::stderr(), "hint: {hint}");
            }
            Exit::from(e.class)
        }
    }
}

fn report_send_error(e: &Failure) -> Exit {
    print_error(&e.to_string());
    if let Some(hint) = &e.hint {
        let _ = writeln!(std::io::stderr(), "hint: {hint}");
    }
    Exit::from(e.class)
}

fn next(path: &Path, job: Option<&str>, count: usize, from: Option<&str>) -> Exit {
    let config = match load_config(path) {
        Ok(c) => c,
        Err(exit) => return exit,
    };
    let from = match from.map(|f| parse_instant("--from", f)).transpose() {
        Ok(f) => f.unwrap_or_else(Utc::now),
        Err(exit) => return exit,
    };
    let jobs: Vec<&config::Job> = match job {
        Some(name) => match find_job(&config, name) {
            Ok(j) => vec![j],
            Err(exit) => return exit,
        },
        None => config.jobs.iter().filter(|j| j.enabled).collect(),
    };
    let mut lines = Vec::new();
    for job in jobs {
        let mut t = from;
        for _ in 0..count {
            let Some(n) = job.schedule.next_after(t) else {
                break;
            };
            lines.push((n, job));
            t = n;
        }
    }
    lines.sort_by(|a, b| a.0.cmp(&b.0).then_with(|| a.1.name.cmp(&b.1.name)));
    let mut out = std::io::stdout().lock();
    for (t, job) in lines {
        let _ = writeln!(
            out,
            "{}\t{}\t{}",
            job.name,
            t.with_timezone(&job.tz())
                .to_rfc3339_opts(SecondsFormat::Secs, true),
            t.to_rfc3339_opts(SecondsFormat::Secs, true)
        );
    }
    Exit::Ok
}

fn render(path: &Path, name: &str, at: Option<&str>) -> Exit {
    let config = match load_config(path) {
        Ok(c) => c,
        Err(exit) => return exit,
    };
    let job = match find_job(&config, name) {
        Ok(j) => j,
        Err(exit) => return exit,
    };
    let at = match at.map(|a| parse_instant("--at", a)).transpose() {
        Ok(Some(a)) => a,
        Ok(None) => {
            let Some(t) = job.schedule.next_after(Utc::now()) else {
                print_error(&format!("job `{name}` has no next occurrence"));
                return Exit::Config;
            };
            t
        }
        Err(exit) => return exit,
    };
    // The Date header is the occurrence itself, so the output is reproducible.
    match daemon::prepare(&config, job, at, at, None) {
        Ok(out) => {
            let _ = std::io::stdout().write_all(&out.bytes);
            Exit::Ok
        }
        Err(e) => {
            print_error(&format!("job `{name}`: {e}"));
            Exit::Config
        }
    }
}

async fn send(path: &Path, name: &str, to: Option<&str>) -> Exit {
    let redirect = match to.map(Mailbox::from_str).transpose() {
        Ok(r) => r,
        Err(e) => {
            print_error(&format!(
                "--to `{}` is not a valid address: {e}",
                to.unwrap_or_default()
            ));
            return Exit::Usage;
        }
    };
    if to.is_some_and(|t| config::header_control(t).is_some()) {
        print_error("--to contains a line break or control character");
        return Exit::Usage;
    }
    let rt = match daemon::load(path, &Host::from_env()).await {
        Ok(rt) => rt,
        Err(e) => return start_error_exit(&e),
    };
    let Some(job) = rt.config.job(name).cloned() else {
        return find_job(&rt.config, name).err().unwrap_or(Exit::Usage);
    };
    // A manual send is its own occurrence: now, to the second.
    let now = Utc::now();
    let occurrence = DateTime::from_timestamp(now.timestamp(), 0).unwrap_or(now);
    match daemon::deliver(&rt, &job, occurrence, now, redirect.as_ref()).await {
        Ok((out, d)) => {
            let _ = writeln!(
                std::io::stdout(),
                "sent `{name}` to {} recipient(s): {} {} (Message-ID <{}>)",
                out.recipient_count(),
                d.code,
                d.reply,
                out.message_id
            );
            Exit::Ok
        }
        Err((message_id, e)) => {
            daemon::log_failure(
                &rt,
                &job,
                occurrence,
                message_id.as_deref(),
                &e,
                1,
                "not retried (a manual send)",
            );
            match e {
                daemon::DeliverError::Send(e) => report_send_error(&e),
                other => {
                    print_error(&format!("job `{name}`: {other}"));
                    Exit::Config
                }
            }
        }
    }
}

/// Opens the ledger of `config` for reading (no lock: a daemon may be running).
fn open_ledger(config: &Config) -> Result<Box<dyn crate::ledger::Ledger>, Exit> {
    let password = match crate::ledger::password_source(config) {
        Some(src) => match tokio::runtime::Handle::current().block_on(src.read()) {
            Ok(p) => Some(p),
            Err(e) => {
                print_error(&format!("the ledger database password cannot be read: {e}"));
                return Err(Exit::Config);
            }
        },
        None => None,
    };
    crate::ledger::open(config, password.as_ref(), crate::ledger::Mode::Read).map_err(|e| {
        print_error(&e.to_string());
        match e {
            crate::ledger::LedgerError::Unreachable { .. }
            | crate::ledger::LedgerError::Db { .. } => Exit::Unavailable,
            _ => Exit::CantCreate,
        }
    })
}

/// The config at `path` and its ledger, for the commands that read the ledger. Run
/// inside `block_in_place`: the `PostgreSQL` client blocks.
fn config_and_ledger(path: &Path) -> Result<(Config, Box<dyn crate::ledger::Ledger>), Exit> {
    let config = load_config(path)?;
    let ledger = open_ledger(&config)?;
    Ok((config, ledger))
}

fn status(path: &Path) -> Exit {
    let (config, ledger) = match config_and_ledger(path) {
        Ok(v) => v,
        Err(exit) => return exit,
    };
    let summary = match ledger.summary() {
        Ok(s) => s,
        Err(e) => {
            print_error(&e.to_string());
            return Exit::CantCreate;
        }
    };
    let now = Utc::now();
    let mut out = std::io::stdout().lock();
    let fmt = |job: &config::Job, t: DateTime<Utc>| {
        t.with_timezone(&job.tz())
            .to_rfc3339_opts(SecondsFormat::Secs, true)
    };
    for job in config.jobs.iter() {
        let s = summary.get(&job.name).cloned().unwrap_or_default();
        let next = if job.enabled {
            job.schedule
                .next_after(now)
                .map_or_else(|| "never".to_owned(), |t| fmt(job, t))
        } else {
            "disabled".to_owned()
        };
        let _ = writeln!(out, "{}", job.name);
        let _ = writeln!(out, "  next:         {next}");
        let _ = writeln!(
            out,
            "  last sent:    {}",
            s.last_sent.map_or_else(
                || "never".to_owned(),
                |(t, id)| format!("{} <{id}>", fmt(job, t))
            )
        );
        let _ = writeln!(
            out,
            "  last failure: {}",
            s.last_failure.map_or_else(
                || "none".to_owned(),
                |(t, class, reply)| format!("{} {class}: {reply}", fmt(job, t))
            )
        );
        let _ = writeln!(out, "  pending:      {}", s.pending);
    }
    Exit::Ok
}

fn history(path: &Path, job: Option<&str>, limit: usize) -> Exit {
    let (config, ledger) = match config_and_ledger(path) {
        Ok(v) => v,
        Err(exit) => return exit,
    };
    let records = match ledger.history(job, limit) {
        Ok(r) => r,
        Err(e) => {
            print_error(&e.to_string());
            return Exit::CantCreate;
        }
    };
    let mut out = std::io::stdout().lock();
    for r in records {
        let tz = config
            .job(&r.key.job)
            .map_or(chrono_tz::UTC, config::Job::tz);
        let reply = r
            .final_reply
            .as_deref()
            .or(r.last_reply.as_deref())
            .unwrap_or("");
        let node = r
            .node
            .as_deref()
            .map(|n| format!("\tnode={n}"))
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "{}\t{}\t{}\tattempts={}\t<{}>\t{}{node}",
            r.key
                .scheduled_at
                .with_timezone(&tz)
                .to_rfc3339_opts(SecondsFormat::Secs, true),
            r.key.job,
            r.state,
            r.attempts,
            r.message_id,
            reply.replace(['\r', '\n'], " ")
        );
    }
    Exit::Ok
}
