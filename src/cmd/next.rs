//! `cronmail next` (upcoming occurrences) and `cronmail render` (one occurrence's
//! exact message): what cronmail will do, without doing it.

use std::io::Write as _;
use std::path::Path;
use std::sync::Arc;

use chrono::{SecondsFormat, Utc};

use super::{find_job, load_config, parse_instant, print_error};
use crate::config::Job;
use crate::deliver;
use crate::exit::Exit;

/// `cronmail next`'s options.
pub struct NextArgs<'a> {
    pub job: Option<&'a str>,
    pub count: usize,
    pub from: Option<&'a str>,
    pub explain: bool,
    pub json: bool,
}

/// One line of `next --json` (fields in cronmail(1), "JSON output").
pub(super) fn occurrence_json(job: &Job, o: &crate::schedule::Occurrence) -> serde_json::Value {
    serde_json::json!({
        "job": &*job.name,
        "at": o.at.to_rfc3339_opts(SecondsFormat::Secs, true),
        "local": o.at.with_timezone(&job.tz()).to_rfc3339_opts(SecondsFormat::Secs, true),
        "moved_from": o.moved_from.as_ref().map(|(d, why)| serde_json::json!({"date": d.to_string(), "why": &**why})),
        "event": o.event.to_rfc3339_opts(SecondsFormat::Secs, true),
        "days_before": job.schedule.lead_days(),
    })
}

pub fn next(path: &Path, args: &NextArgs<'_>) -> Exit {
    let NextArgs {
        job,
        count,
        from,
        explain,
        json,
    } = *args;
    let config = match load_config(path) {
        Ok(c) => c,
        Err(exit) => return exit,
    };
    let from = match from.map(|f| parse_instant("--from", f)).transpose() {
        Ok(f) => f.unwrap_or_else(Utc::now),
        Err(exit) => return exit,
    };
    // A job with advance warnings is one job per offset (`NAME.7d`); `--job NAME`
    // shows the next `count` sends of all of them.
    let warnings = job.filter(|name| {
        config
            .jobs
            .iter()
            .any(|j| &*j.base == *name && &*j.name != *name)
    });
    let jobs: Vec<&Arc<Job>> = match job {
        Some(name) if warnings.is_some() => {
            config.jobs.iter().filter(|j| &*j.base == name).collect()
        }
        Some(name) => match find_job(&config, name) {
            Ok(j) => vec![j],
            Err(exit) => return exit,
        },
        None => config.jobs.iter().filter(|j| j.enabled).collect(),
    };
    if explain {
        let mut err = std::io::stderr().lock();
        for job in &jobs {
            let _ = writeln!(
                err,
                "{}: {} in {}",
                job.name,
                super::check::how_read(job),
                job.tz()
            );
        }
    }
    let mut lines = Vec::new();
    for job in jobs {
        let mut t = from;
        for _ in 0..count {
            let Some(o) = job.schedule.next_occurrence(t) else {
                break;
            };
            t = o.at;
            lines.push((o, job));
        }
    }
    lines.sort_by(|a, b| a.0.at.cmp(&b.0.at).then_with(|| a.1.name.cmp(&b.1.name)));
    if warnings.is_some() {
        lines.truncate(count);
    }
    if json {
        let items = lines
            .iter()
            .map(|(o, job)| occurrence_json(job, o))
            .collect();
        return super::status::print_json(&serde_json::Value::Array(items));
    }
    let mut out = std::io::stdout().lock();
    for (o, job) in lines {
        let local = |t: chrono::DateTime<Utc>| {
            t.with_timezone(&job.tz())
                .to_rfc3339_opts(SecondsFormat::Secs, true)
        };
        // A fourth column says why a send is where it is, when there is a reason.
        let mut why = Vec::new();
        if let Some((day, what)) = &o.moved_from {
            why.push(format!("moved from {day} ({what})"));
        }
        if job.schedule.lead_days() > 0 {
            let days = job.schedule.lead_days();
            let unit = if days == 1 { "day" } else { "days" };
            why.push(format!("{days} {unit} before {}", local(o.event)));
        }
        let _ = write!(
            out,
            "{}\t{}\t{}",
            job.name,
            local(o.at),
            o.at.to_rfc3339_opts(SecondsFormat::Secs, true)
        );
        if why.is_empty() {
            let _ = writeln!(out);
        } else {
            let _ = writeln!(out, "\t{}", why.join("; "));
        }
    }
    Exit::Ok
}

pub fn render(path: &Path, name: &str, at: Option<&str>) -> Exit {
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
    let second = chrono::Duration::seconds(1);
    if job.schedule.next_after(at - second) != Some(at) {
        let around = |t: Option<chrono::DateTime<Utc>>| {
            t.map_or_else(|| "none".to_owned(), |t| deliver::local(job, t))
        };
        let before = crate::timer::last_before(&job.schedule, at, at - chrono::Duration::days(366));
        let _ = writeln!(
            std::io::stderr(),
            "warning: {} is not an occurrence of `{name}` (the one before is {}, the next {}); rendering it anyway",
            deliver::local(job, at),
            around(before),
            around(job.schedule.next_after(at))
        );
    }
    // The Date header is the occurrence itself, so the output is reproducible.
    let row = match deliver::first_row(job) {
        Ok(row) => row,
        Err(e) => {
            print_error(&format!("job `{name}`: {e}"));
            return Exit::Config;
        }
    };
    match deliver::prepare(&config, job, at, at, None, row.as_ref()) {
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
