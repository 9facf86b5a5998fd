//! `cronmail skip`, `pause`, `resume` and `trigger`: orders written to the ledger,
//! which the running daemon (every node, with `PostgreSQL`) reads within a second.

use std::io::Write as _;
use std::path::Path;
use std::sync::Arc;

use chrono::{DateTime, Utc};

use super::status::{ledger_failed, open_in, open_ledger_if_any};
use super::{load_config, parse_instant, print_error};
use crate::config::{Config, Job};
use crate::deliver::local;
use crate::exit::Exit;
use crate::ledger::{self, Action, Control, Key, Ledger};

/// Occurrences `skip --next` passes over (already skipped), at most.
const SKIPPED_AHEAD: usize = 1000;

/// The jobs a name on the command line means: the job, or all of a `[[job]]`'s advance
/// warnings (`NAME.7d`, ..., `NAME`). Exit 64 with the known names when there is none.
fn jobs<'c>(config: &'c Config, name: &str) -> Result<Vec<&'c Arc<Job>>, Exit> {
    let found: Vec<&Arc<Job>> = config
        .jobs
        .iter()
        .filter(|j| &*j.name == name || &*j.base == name)
        .collect();
    if found.is_empty() {
        print_error(&format!(
            "no job `{name}` in {}; jobs: {}",
            config.path.display(),
            config.job_names().join(", ")
        ));
        return Err(Exit::Usage);
    }
    Ok(found)
}

/// The config and its ledger, opened to write (created if no daemon ran yet).
fn open(path: &Path, name: &str) -> Result<(Config, Box<dyn Ledger>), Exit> {
    let config = load_config(path)?;
    jobs(&config, name)?;
    let ledger = match open_ledger_if_any(&config)? {
        Some(l) => l,
        None => open_in(&config, ledger::Mode::Exclusive)?.map_err(|e| ledger_failed(&e))?,
    };
    Ok((config, ledger))
}

fn store(ledger: &dyn Ledger, job: &str, action: Action) -> Result<(), Exit> {
    let control = Control {
        job: job.to_owned(),
        action,
        created_at: Utc::now(),
    };
    ledger.add_control(&control).map(drop).map_err(|e| {
        print_error(&format!("writing the order to the ledger: {e}"));
        super::ledger_exit(&e)
    })
}

fn say(text: &str) -> Exit {
    match writeln!(std::io::stdout(), "{text}") {
        Ok(()) => Exit::Ok,
        Err(_) => Exit::Io,
    }
}

pub fn skip(path: &Path, name: &str, at: Option<&str>) -> Exit {
    let (config, ledger) = match open(path, name) {
        Ok(v) => v,
        Err(exit) => return exit,
    };
    let Ok(jobs) = jobs(&config, name) else {
        return Exit::Usage;
    };
    let orders = ledger.controls_after(0).unwrap_or_default();
    let skipped: std::collections::HashSet<DateTime<Utc>> = orders
        .iter()
        .filter(|(_, c)| c.job == name)
        .filter_map(|(_, c)| match c.action {
            Action::Skip(t) => Some(t),
            _ => None,
        })
        .collect();
    let second = chrono::Duration::seconds(1);
    let chosen = match at.map(|a| parse_instant("--at", a)).transpose() {
        Err(exit) => return exit,
        Ok(Some(t)) => {
            let Some(job) = jobs
                .iter()
                .find(|j| j.schedule.next_after(t - second) == Some(t))
            else {
                let next = jobs
                    .iter()
                    .filter_map(|j| j.schedule.next_after(t).map(|n| (n, j)))
                    .min_by_key(|(n, _)| *n);
                print_error(&format!(
                    "{t} is not an occurrence of `{name}`{}",
                    next.map(|(n, j)| format!(" (the next is {})", local(j, n)))
                        .unwrap_or_default()
                ));
                return Exit::Usage;
            };
            if let Ok(Some(r)) = ledger.get(&Key::new(Arc::clone(&job.name), t)) {
                print_error(&format!(
                    "`{}` at {} is already {}: it cannot be skipped",
                    job.name,
                    local(job, t),
                    r.state
                ));
                return Exit::Usage;
            }
            (t, Arc::clone(job))
        }
        Ok(None) => {
            let now = Utc::now();
            let next = jobs
                .iter()
                .filter_map(|j| {
                    let mut t = now;
                    for _ in 0..SKIPPED_AHEAD {
                        let n = j.schedule.next_after(t)?;
                        if !skipped.contains(&n) {
                            return Some((n, Arc::clone(j)));
                        }
                        t = n;
                    }
                    None
                })
                .min_by_key(|(n, _)| *n);
            let Some(next) = next else {
                print_error(&format!("`{name}` has no next occurrence to skip"));
                return Exit::Usage;
            };
            next
        }
    };
    let (t, job) = chosen;
    if let Err(exit) = store(&*ledger, name, Action::Skip(t)) {
        return exit;
    }
    say(&format!(
        "`{}`: the occurrence at {} will not be sent (skipped by hand)",
        job.name,
        local(&job, t)
    ))
}

pub fn pause(path: &Path, name: &str, until: Option<&str>) -> Exit {
    let until = match until.map(|u| parse_instant("--until", u)).transpose() {
        Ok(Some(u)) if u <= Utc::now() => {
            print_error(&format!("--until {u} is in the past"));
            return Exit::Usage;
        }
        Ok(u) => u,
        Err(exit) => return exit,
    };
    let (_, ledger) = match open(path, name) {
        Ok(v) => v,
        Err(exit) => return exit,
    };
    if let Err(exit) = store(&*ledger, name, Action::Pause(until)) {
        return exit;
    }
    say(&match until {
        Some(u) => format!(
            "`{name}` is paused until {}: its occurrences are skipped and recorded",
            crate::deliver::utc(u)
        ),
        None => format!(
            "`{name}` is paused until `cronmail resume {name}`: its occurrences are skipped and recorded"
        ),
    })
}

pub fn resume(path: &Path, name: &str) -> Exit {
    let (_, ledger) = match open(path, name) {
        Ok(v) => v,
        Err(exit) => return exit,
    };
    let paused = ledger::paused(&ledger.controls_after(0).unwrap_or_default(), Utc::now());
    if !paused.contains_key(name) {
        return say(&format!("`{name}` is not paused"));
    }
    if let Err(exit) = store(&*ledger, name, Action::Resume) {
        return exit;
    }
    say(&format!("`{name}` is resumed: its next occurrence is sent"))
}

pub fn trigger(path: &Path, name: &str) -> Exit {
    let (config, ledger) = match open(path, name) {
        Ok(v) => v,
        Err(exit) => return exit,
    };
    let Some(job) = config.triggered(name) else {
        return Exit::Usage;
    };
    let Some(at) = trigger_instant(&config, &*ledger, job, Utc::now()) else {
        print_error(&format!(
            "`{name}`: each of the next {TRIGGER_AHEAD} seconds already has an occurrence or a trigger; try again later"
        ));
        return Exit::TempFail;
    };
    if let Err(exit) = store(&*ledger, name, Action::Trigger(at)) {
        return exit;
    }
    say(&format!(
        "`{name}`: one occurrence at {} is queued; the running daemon sends it within a second (`cronmail history --job {name}` shows it), or `cronmail run` when it starts",
        local(job, at)
    ))
}

/// Seconds `trigger` looks ahead for one of its own, at most.
const TRIGGER_AHEAD: i64 = 3600;

/// The instant of a new trigger of `job`: whole seconds, as every occurrence (the
/// Message-ID and the ledger's key), from `now` on, and the first second that neither
/// an earlier trigger of the same job, an occurrence in the ledger, nor one of its
/// schedule holds. Two triggers in one second are two occurrences, not one whose second
/// claim is refused.
fn trigger_instant(
    config: &Config,
    ledger: &dyn Ledger,
    job: &Job,
    now: DateTime<Utc>,
) -> Option<DateTime<Utc>> {
    let first = DateTime::from_timestamp(now.timestamp(), 0).unwrap_or(now);
    let second = chrono::Duration::seconds(1);
    let resolves_to_job = |given: &str| config.triggered(given).is_some_and(|j| j.name == job.name);
    let triggered: std::collections::HashSet<DateTime<Utc>> = ledger
        .controls_after(0)
        .unwrap_or_default()
        .into_iter()
        .filter_map(|(_, c)| match c.action {
            Action::Trigger(t) if t >= first && resolves_to_job(&c.job) => Some(t),
            _ => None,
        })
        .collect();
    (0..TRIGGER_AHEAD)
        .map(|s| first + chrono::Duration::seconds(s))
        .find(|t| {
            !triggered.contains(t)
                && job.schedule.next_after(*t - second) != Some(*t)
                && !matches!(
                    ledger.get(&Key::new(Arc::clone(&job.name), *t)),
                    Ok(Some(_))
                )
        })
}
