//! `cronmail agenda`: the coming days drawn in the terminal, one row per day and each
//! reminder at its local time; what is past comes from the ledger with its state, what
//! is to come from the schedules. What `systemctl list-timers` is for timers, over days.

use std::collections::BTreeMap;
use std::io::{IsTerminal as _, Write as _};
use std::path::Path;

use chrono::{DateTime, Duration, NaiveDate, SecondsFormat, Utc};
use chrono_tz::Tz;

use super::print_error;
use super::status::{open_ledger_if_any, print_json};
use crate::agenda::{Item, Orders, coming, midnight, selected};
use crate::config::Config;
use crate::exit::Exit;
use crate::ledger::Record;

/// Past occurrences read from the ledger, at most.
const HISTORY: usize = 100_000;

/// What has been, from the ledger.
fn past(
    config: &Config,
    records: Vec<Record>,
    only: Option<&str>,
    from: DateTime<Utc>,
) -> Vec<Item> {
    records
        .into_iter()
        .filter(|r| r.key.scheduled_at >= from)
        .filter(|r| config.job(&r.key.job).is_none_or(|j| selected(j, only)))
        .filter(|r| only.is_none() || config.job(&r.key.job).is_some())
        .map(|r| Item {
            at: r.key.scheduled_at,
            tz: config.job(&r.key.job).map_or(config.timezone, |j| j.tz()),
            job: r.key.job.to_string(),
            state: r.state.name(),
            note: r
                .final_reply
                .or(r.last_reply)
                .filter(|_| r.state.name() != "sent")
                .map(|t| t.replace(['\r', '\n'], " ")),
        })
        .collect()
}

pub fn agenda(path: &Path, days: u32, past_days: u32, only: Option<&str>, json: bool) -> Exit {
    let config = match super::load_config(path) {
        Ok(c) => c,
        Err(exit) => return exit,
    };
    // No ledger yet: nothing has happened, and what is to come is still shown.
    let ledger = match open_ledger_if_any(&config) {
        Ok(l) => l,
        Err(exit) => return exit,
    };
    if let Some(name) = only
        && !config.jobs.iter().any(|j| selected(j, Some(name)))
    {
        print_error(&format!(
            "no job `{name}` in {}; jobs: {}",
            config.path.display(),
            config.job_names().join(", ")
        ));
        return Exit::Usage;
    }
    let tz = config.timezone;
    let now = Utc::now();
    let today = now.with_timezone(&tz).date_naive();
    let first = today - Duration::days(i64::from(past_days));
    let last = today + Duration::days(i64::from(days.max(1)) - 1);
    let from = midnight(tz, first);
    let until = midnight(tz, last + Duration::days(1));
    let orders = Orders::read(
        &ledger
            .as_ref()
            .and_then(|l| l.controls_after(0).ok())
            .unwrap_or_default(),
        now,
    );
    let records = match ledger.map(|l| l.history(None, HISTORY)) {
        None => Vec::new(),
        Some(Ok(r)) => r,
        Some(Err(e)) => {
            print_error(&e.to_string());
            return Exit::CantCreate;
        }
    };
    let mut items = past(&config, records, only, from);
    let (coming, more) = coming(&config, &orders, only, now, until, usize::MAX);
    items.extend(coming);
    items.sort_by(|a, b| a.at.cmp(&b.at).then_with(|| a.job.cmp(&b.job)));
    let mut by_day: BTreeMap<NaiveDate, Vec<Item>> = BTreeMap::new();
    let mut d = first;
    while d <= last {
        by_day.insert(d, Vec::new());
        d += Duration::days(1);
    }
    for item in items {
        if let Some(v) = by_day.get_mut(&item.at.with_timezone(&tz).date_naive()) {
            v.push(item);
        }
    }
    if json {
        return print_json(&agenda_json(tz, &by_day, &more));
    }
    let colour = std::io::stdout().is_terminal()
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
        && std::env::var("TERM").map_or(true, |t| t != "dumb");
    draw(tz, today, &by_day, &more, colour)
}

fn agenda_json(
    tz: Tz,
    by_day: &BTreeMap<NaiveDate, Vec<Item>>,
    more: &BTreeMap<(NaiveDate, String), usize>,
) -> serde_json::Value {
    let days: Vec<serde_json::Value> = by_day
        .iter()
        .map(|(day, items)| {
            let items: Vec<serde_json::Value> = items
                .iter()
                .map(|i| {
                    serde_json::json!({
                        "job": i.job,
                        "at": i.at.to_rfc3339_opts(SecondsFormat::Secs, true),
                        "local": i.at.with_timezone(&i.tz).to_rfc3339_opts(SecondsFormat::Secs, true),
                        "state": i.state,
                        "note": i.note,
                    })
                })
                .collect();
            let hidden: serde_json::Map<String, serde_json::Value> = more
                .range((*day, String::new())..)
                .take_while(|((d, _), _)| d == day)
                .map(|((_, job), n)| (job.clone(), (*n).into()))
                .collect();
            serde_json::json!({"date": day.to_string(), "items": items, "more": hidden})
        })
        .collect();
    serde_json::json!({"timezone": tz.name(), "days": days})
}

fn draw(
    tz: Tz,
    today: NaiveDate,
    by_day: &BTreeMap<NaiveDate, Vec<Item>>,
    more: &BTreeMap<(NaiveDate, String), usize>,
    colour: bool,
) -> Exit {
    let paint = |code: &str, text: &str| {
        if colour {
            format!("\x1b[{code}m{text}\x1b[0m")
        } else {
            text.to_owned()
        }
    };
    let mut out = String::new();
    let width = by_day
        .values()
        .flatten()
        .map(|i| i.job.len())
        .max()
        .unwrap_or(0);
    for (day, items) in by_day {
        let mut title = day.format("%a %Y-%m-%d").to_string();
        if *day == today {
            title.push_str("  (today)");
        }
        out.push_str(&paint("1", &title));
        out.push('\n');
        if items.is_empty() {
            out.push_str(&paint("2", "  -"));
            out.push('\n');
        }
        for i in items {
            let (mark, code) = match i.state {
                "sent" => ("✓ sent     ", "32"),
                "failed" => ("✗ failed   ", "31"),
                "expired" => ("✗ expired  ", "31"),
                "skipped" => ("- skipped  ", "2"),
                "pending" | "sending" => ("… pending  ", "33"),
                "held" => ("- held     ", "2"),
                _ => ("· scheduled", "0"),
            };
            let local = i.at.with_timezone(&tz);
            let time = if chrono::Timelike::second(&local) == 0 {
                local.format("%H:%M   ").to_string()
            } else {
                local.format("%H:%M:%S").to_string()
            };
            let mut line = format!("  {time}  {}  {:width$}", paint(code, mark), i.job);
            if let Some(note) = &i.note {
                line.push_str("  ");
                line.push_str(&paint("2", note));
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        for ((_, job), n) in more
            .range((*day, String::new())..)
            .take_while(|((d, _), _)| d == day)
        {
            let plus = if *n >= crate::agenda::MORE_CAP {
                "+"
            } else {
                ""
            };
            out.push_str(&paint("2", &format!("  … and {n}{plus} more of {job}")));
            out.push('\n');
        }
    }
    match std::io::stdout().write_all(out.as_bytes()) {
        Ok(()) => Exit::Ok,
        Err(_) => Exit::Io,
    }
}
