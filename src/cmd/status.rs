//! `cronmail status` (per job: next, last sent, last failure, pending) and `cronmail
//! history` (recent occurrences with their state and reply): read from the ledger while
//! a daemon may be running.

use std::io::Write as _;
use std::path::Path;

use chrono::{DateTime, SecondsFormat, Utc};

use super::{ledger_exit, load_config, print_error};
use crate::config::{Config, Job};
use crate::exit::Exit;
use crate::ledger::{self, Ledger};

/// Opens the ledger of `config` in `mode`, its database password read first: the
/// ledger, or why it could not be opened (the outer error: the password, said already).
pub(super) fn open_in(
    config: &Config,
    mode: ledger::Mode,
) -> Result<Result<Box<dyn Ledger>, ledger::LedgerError>, Exit> {
    let password = match ledger::password_source(config) {
        Some(src) => match tokio::runtime::Handle::current().block_on(src.read()) {
            Ok(p) => Some(p),
            Err(e) => {
                print_error(&format!("the ledger database password cannot be read: {e}"));
                return Err(Exit::Config);
            }
        },
        None => None,
    };
    Ok(ledger::open(config, password.as_ref(), mode))
}

/// Says why the ledger could not be opened; its exit code.
pub(super) fn ledger_failed(e: &ledger::LedgerError) -> Exit {
    print_error(&e.to_string());
    ledger_exit(e)
}

/// Opens the ledger of `config` for reading (no lock: a daemon may be running); `None`
/// when there is none yet.
pub(super) fn open_ledger_if_any(config: &Config) -> Result<Option<Box<dyn Ledger>>, Exit> {
    match open_in(config, ledger::Mode::Read)? {
        Ok(l) => Ok(Some(l)),
        Err(ledger::LedgerError::Missing(_)) => Ok(None),
        Err(e) => Err(ledger_failed(&e)),
    }
}

/// Opens the ledger of `config` for reading (no lock: a daemon may be running).
pub(super) fn open_ledger(config: &Config) -> Result<Box<dyn Ledger>, Exit> {
    open_in(config, ledger::Mode::Read)?.map_err(|e| ledger_failed(&e))
}

/// The config at `path` and its ledger, for the commands that read the ledger. Run
/// inside `block_in_place`: the `PostgreSQL` client blocks.
pub(super) fn config_and_ledger(path: &Path) -> Result<(Config, Box<dyn Ledger>), Exit> {
    let config = load_config(path)?;
    let ledger = open_ledger(&config)?;
    Ok((config, ledger))
}

/// Prints `value` as JSON, one document.
pub(super) fn print_json(value: &serde_json::Value) -> Exit {
    let text = serde_json::to_string_pretty(value).unwrap_or_default();
    match writeln!(std::io::stdout(), "{text}") {
        Ok(()) => Exit::Ok,
        Err(_) => Exit::Io,
    }
}

fn rfc3339(t: DateTime<Utc>, job: &Job) -> String {
    t.with_timezone(&job.tz())
        .to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// `status --json`: one object per job (fields in cronmail(1), "JSON output").
fn status_json(
    config: &Config,
    summary: &std::collections::HashMap<String, ledger::JobSummary>,
    paused: &std::collections::HashMap<String, Option<DateTime<Utc>>>,
    now: DateTime<Utc>,
) -> Exit {
    let jobs: Vec<serde_json::Value> = config
        .jobs
        .iter()
        .map(|job| {
            let s = summary.get(&*job.name).cloned().unwrap_or_default();
            serde_json::json!({
                "job": &*job.name,
                "account": &*config.account_of(job).name,
                "enabled": job.enabled,
                "next": job.enabled.then(|| job.schedule.next_after(now)).flatten().map(|t| rfc3339(t, job)),
                "last_sent": s.last_sent.map(|(t, id)| serde_json::json!({"at": rfc3339(t, job), "message_id": id})),
                "last_failure": s.last_failure.map(|(t, class, reply)| serde_json::json!({"at": rfc3339(t, job), "class": class, "reply": reply})),
                "pending": s.pending,
                "paused": pause_of(job, paused).map(|until| serde_json::json!({"until": until.map(|u| rfc3339(u, job))})),
            })
        })
        .collect();
    print_json(&serde_json::Value::Array(jobs))
}

/// Whether `job` (or its `[[job]]`) is paused, and until when (`Some(None)`: until
/// resumed).
#[allow(clippy::option_option)] // not paused / until resumed / until a time
fn pause_of(
    job: &Job,
    paused: &std::collections::HashMap<String, Option<DateTime<Utc>>>,
) -> Option<Option<DateTime<Utc>>> {
    paused
        .get(&*job.name)
        .or_else(|| paused.get(&*job.base))
        .copied()
}

pub fn status(path: &Path, json: bool) -> Exit {
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
    let paused = ledger::paused(&ledger.controls_after(0).unwrap_or_default(), now);
    if json {
        return status_json(&config, &summary, &paused, now);
    }
    let mut out = std::io::stdout().lock();
    let fmt = |job: &Job, t: DateTime<Utc>| {
        t.with_timezone(&job.tz())
            .to_rfc3339_opts(SecondsFormat::Secs, true)
    };
    for job in config.jobs.iter() {
        let s = summary.get(&*job.name).cloned().unwrap_or_default();
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
        if let Some(until) = pause_of(job, &paused) {
            let _ = writeln!(
                out,
                "  paused:       {}",
                until.map_or_else(
                    || format!("until `cronmail resume {}`", job.base),
                    |u| format!("until {}", fmt(job, u))
                )
            );
        }
    }
    print_accounts(&mut out, &config, &*ledger, now);
    Exit::Ok
}

/// With several accounts or sending limits: each account, where it sends, and what it
/// sent in the last 24 hours and the last minute, against its limits.
fn print_accounts(
    out: &mut impl std::io::Write,
    config: &Config,
    ledger: &dyn Ledger,
    now: DateTime<Utc>,
) {
    if config.accounts.len() < 2
        && !config
            .accounts
            .iter()
            .any(crate::config::AccountConfig::limited)
    {
        return;
    }
    for a in &config.accounts {
        let place = match &a.transport {
            crate::config::TransportConfig::Smtp(s) => format!("smtp {}:{}", s.host, s.port),
            crate::config::TransportConfig::Outbox { dir } => format!("outbox {}", dir.display()),
        };
        let sent = ledger
            .sent_since(&a.name, now - chrono::Duration::hours(24))
            .unwrap_or_default();
        let recipients: u64 = sent.iter().map(|(_, n)| u64::from(*n)).sum();
        let minute = sent
            .iter()
            .filter(|(t, _)| *t > now - chrono::Duration::minutes(1))
            .count();
        let of = |limit: Option<u32>, key: &str| {
            limit.map(|l| format!(" ({key} {l})")).unwrap_or_default()
        };
        let fallback = a
            .fallback
            .map(|f| format!("; falls back to `{}`", config.accounts[f].name))
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "account {}: {place}{fallback}\n  last 24 h:    {} messages to {recipients} recipients{}\n  last minute:  {minute} messages{}",
            a.name,
            sent.len(),
            of(a.max_per_day, "max_per_day"),
            of(a.max_per_minute, "max_per_minute"),
        );
    }
}

pub fn history(path: &Path, job: Option<&str>, limit: usize, json: bool) -> Exit {
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
    if json {
        let items: Vec<serde_json::Value> = records
            .iter()
            .map(|r| {
                let tz = config.job(&r.key.job).map_or(chrono_tz::UTC, |j| j.tz());
                serde_json::json!({
                    "job": &*r.key.job,
                    "occurrence": crate::deliver::utc(r.key.scheduled_at),
                    "local": r.key.scheduled_at.with_timezone(&tz).to_rfc3339_opts(SecondsFormat::Secs, true),
                    "state": r.state.name(),
                    "attempts": r.attempts,
                    "message_id": r.message_id,
                    "reply": r.final_reply.as_deref().or(r.last_reply.as_deref()),
                    "node": r.node,
                })
            })
            .collect();
        return print_json(&serde_json::Value::Array(items));
    }
    let mut out = std::io::stdout().lock();
    for r in records {
        let tz = config.job(&r.key.job).map_or(chrono_tz::UTC, |j| j.tz());
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
