//! The subcommands, one file each. `main` parses the command line and calls `execute`;
//! every error is printed here, once, and becomes a sysexits code.

mod agenda;
mod check;
mod next;
mod oauth2;
mod run;
mod send;
mod status;
mod steer;

use std::io::Write as _;
use std::path::Path;

use chrono::{DateTime, Utc};

use crate::cli::{Command, OAuth2Command};
use crate::config::{self, Config, Host, Job};
use crate::daemon::StartError;
use crate::deliver::LoadError;
use crate::exit::Exit;
use crate::failure::Failure;
use crate::ledger::LedgerError;

/// Runs one command and returns its exit status. Errors are printed here, once.
pub async fn execute(config_path: &Path, command: Command) -> Exit {
    match command {
        Command::Run => run::run(config_path).await,
        Command::Check { smtp, explain } => check::check(config_path, smtp, explain).await,
        Command::Next {
            job,
            count,
            from,
            explain,
            json,
        } => next::next(
            config_path,
            &next::NextArgs {
                job: job.as_deref(),
                count,
                from: from.as_deref(),
                explain,
                json,
            },
        ),
        Command::Agenda {
            days,
            past,
            job,
            json,
        } => tokio::task::block_in_place(|| {
            agenda::agenda(config_path, days, past, job.as_deref(), json)
        }),
        Command::Render { job, at } => next::render(config_path, &job, at.as_deref()),
        Command::Send { job, to } => send::send(config_path, &job, &to).await,
        Command::Oauth2 {
            command:
                OAuth2Command::Authorize {
                    provider,
                    port,
                    account,
                },
        } => oauth2::authorize(config_path, provider, port, account.as_deref()).await,
        Command::Schema => schema(),
        Command::Skip { job, next: _, at } => {
            tokio::task::block_in_place(|| steer::skip(config_path, &job, at.as_deref()))
        }
        Command::Pause { job, until } => {
            tokio::task::block_in_place(|| steer::pause(config_path, &job, until.as_deref()))
        }
        Command::Resume { job } => tokio::task::block_in_place(|| steer::resume(config_path, &job)),
        Command::Trigger { job } => {
            tokio::task::block_in_place(|| steer::trigger(config_path, &job))
        }
        Command::Status { json } => {
            tokio::task::block_in_place(|| status::status(config_path, json))
        }
        Command::History { job, limit, json } => tokio::task::block_in_place(|| {
            status::history(config_path, job.as_deref(), limit, json)
        }),
    }
}

fn schema() -> Exit {
    let text = serde_json::to_string_pretty(&config::schema()).unwrap_or_default();
    match writeln!(std::io::stdout(), "{text}") {
        Ok(()) => Exit::Ok,
        Err(_) => Exit::Io,
    }
}

fn print_error(message: &str) {
    let _ = writeln!(std::io::stderr(), "error: {message}");
}

fn print_hint(hint: Option<&str>) {
    if let Some(hint) = hint {
        let _ = writeln!(std::io::stderr(), "hint: {hint}");
    }
}

/// Prints every problem of a configuration file.
fn print_diagnostics(diags: &config::Diagnostics, path: &Path, summary: bool) {
    let mut err = std::io::stderr().lock();
    for d in &diags.0 {
        let _ = writeln!(err, "{}", d.with_snippet());
    }
    if summary {
        let n = diags.errors();
        let _ = writeln!(
            err,
            "error: {n} problem{} in {}",
            if n == 1 { "" } else { "s" },
            path.display()
        );
    }
}

/// Loads the config, or prints every problem and returns `Exit::Config`.
fn load_config(path: &Path) -> Result<Config, Exit> {
    config::load(path, &Host::from_env()).map_err(|diags| {
        print_diagnostics(&diags, path, true);
        Exit::Config
    })
}

/// Prints a failure of the mail path (`what` it was doing) with its hint; its class
/// is the exit code.
fn report(what: Option<&str>, e: &Failure) -> Exit {
    match what {
        Some(what) => print_error(&format!("{what}: {}", e.detail)),
        None => print_error(&e.to_string()),
    }
    print_hint(e.hint.as_deref());
    Exit::from(e.class)
}

fn report_load_error(e: &LoadError, path: &Path) -> Exit {
    match e {
        LoadError::Config(diags) => print_diagnostics(diags, path, false),
        LoadError::Secret(_) | LoadError::Transport(_) => print_error(&e.to_string()),
    }
    Exit::Config
}

fn report_start_error(e: &StartError, path: &Path) -> Exit {
    match e {
        StartError::Load(l) => report_load_error(l, path),
        StartError::Secret(_) => {
            print_error(&e.to_string());
            Exit::Config
        }
        StartError::Ledger(l) => {
            print_error(&e.to_string());
            ledger_exit(l)
        }
        StartError::Listen { error, .. } => {
            print_error(&e.to_string());
            if error.kind() == std::io::ErrorKind::PermissionDenied {
                Exit::NoPerm
            } else {
                Exit::Unavailable
            }
        }
    }
}

/// The exit code for a ledger that cannot be used.
fn ledger_exit(e: &LedgerError) -> Exit {
    match e {
        LedgerError::Locked(_) | LedgerError::NodeTaken { .. } => Exit::TempFail,
        LedgerError::Unreachable { .. } | LedgerError::Db { .. } => Exit::Unavailable,
        LedgerError::Password(_) => Exit::Config,
        LedgerError::NoAccess(_) => Exit::NoPerm,
        _ => Exit::CantCreate,
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

fn find_job<'c>(config: &'c Config, name: &str) -> Result<&'c std::sync::Arc<Job>, Exit> {
    config.job(name).ok_or_else(|| {
        print_error(&format!(
            "no job `{name}` in {}; jobs: {}",
            config.path.display(),
            config.job_names().join(", ")
        ));
        Exit::Usage
    })
}
