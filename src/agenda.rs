//! The agenda: what each job will send over the coming days (from its schedule, with
//! what `cronmail skip` and `pause` hold back), a day at a time. Pure: `cronmail
//! agenda` adds the past from the ledger and draws it; the status page shows it.

use std::collections::BTreeMap;

use chrono::{DateTime, NaiveDate, TimeZone, Utc};
use chrono_tz::Tz;

use crate::config::{Config, Job};

/// Sends of one job shown in a day, at most; the rest are counted.
pub const PER_DAY: usize = 12;

/// Occurrences looked at per job, at most (a job every second, over a week).
pub const PER_JOB: usize = 20_000;

/// Sends past `PER_DAY` counted in a day, at most: then the count reads `999+` and the
/// search goes on at the next day, so that a job every second costs a few thousand
/// steps a week, not 600,000.
pub const MORE_CAP: usize = 999;

/// One reminder in the agenda.
pub struct Item {
    pub at: DateTime<Utc>,
    pub job: String,
    pub tz: Tz,
    /// `sent`, `failed`, ... from the ledger; `scheduled` for what is to come, `held`
    /// for what an order holds back.
    pub state: &'static str,
    pub note: Option<String>,
}

/// The local midnight that starts `day` in `tz`.
pub fn midnight(tz: Tz, day: NaiveDate) -> DateTime<Utc> {
    let local = day.and_hms_opt(0, 0, 0).unwrap_or_default();
    tz.from_local_datetime(&local)
        .earliest()
        .map_or_else(|| Utc.from_utc_datetime(&local), |t| t.with_timezone(&Utc))
}

pub fn selected(job: &Job, only: Option<&str>) -> bool {
    only.is_none_or(|name| &*job.name == name || &*job.base == name)
}

/// What `cronmail skip` and `pause` hold back.
#[derive(Clone, Default)]
pub struct Orders {
    pub skips: std::collections::HashSet<(String, DateTime<Utc>)>,
    pub paused: std::collections::HashMap<String, Option<DateTime<Utc>>>,
}

impl Orders {
    pub fn read(controls: &[(i64, crate::ledger::Control)], now: DateTime<Utc>) -> Self {
        Orders {
            skips: controls
                .iter()
                .filter_map(|(_, c)| match c.action {
                    crate::ledger::Action::Skip(t) => Some((c.job.clone(), t)),
                    _ => None,
                })
                .collect(),
            paused: crate::ledger::paused(controls, now),
        }
    }

    pub fn held(&self, job: &Job, at: DateTime<Utc>) -> Option<&'static str> {
        let names = [&*job.name, &*job.base];
        if names
            .iter()
            .any(|n| self.skips.contains(&((*n).to_owned(), at)))
        {
            return Some("skipped by hand");
        }
        names
            .iter()
            .filter_map(|n| self.paused.get(*n))
            .any(|until| until.is_none_or(|u| at < u))
            .then_some("paused by hand")
    }
}

/// What is to come, from each job's schedule: (items, the count not shown per day).
///
/// `budget` bounds the steps over all jobs (the status page's, so that a page of
/// 10,000 jobs every second answers quickly); a job past it is not expanded.
pub fn coming(
    config: &Config,
    orders: &Orders,
    only: Option<&str>,
    now: DateTime<Utc>,
    until: DateTime<Utc>,
    budget: usize,
) -> (Vec<Item>, BTreeMap<(NaiveDate, String), usize>) {
    let mut budget = budget;
    let tz = config.timezone;
    let mut items = Vec::new();
    let mut more: BTreeMap<(NaiveDate, String), usize> = BTreeMap::new();
    for job in config
        .jobs
        .iter()
        .filter(|j| j.enabled && selected(j, only))
    {
        let mut shown: BTreeMap<NaiveDate, usize> = BTreeMap::new();
        let mut t = now;
        for _ in 0..PER_JOB {
            if budget == 0 {
                break;
            }
            budget -= 1;
            let Some(o) = job.schedule.next_occurrence(t) else {
                break;
            };
            if o.at >= until {
                break;
            }
            t = o.at;
            let day = o.at.with_timezone(&tz).date_naive();
            let n = shown.entry(day).or_default();
            if *n >= PER_DAY {
                let m = more.entry((day, job.name.to_string())).or_default();
                *m += 1;
                if *m >= MORE_CAP
                    && let Some(next) = day.succ_opt()
                {
                    t = midnight(tz, next) - chrono::Duration::nanoseconds(1);
                }
                continue;
            }
            *n += 1;
            let note = o
                .moved_from
                .map(|(d, why)| format!("moved from {d} ({why})"))
                .or_else(|| {
                    let days = job.schedule.lead_days();
                    (days > 0)
                        .then(|| format!("{days}d before {}", crate::deliver::local(job, o.event)))
                });
            let held = orders.held(job, o.at);
            items.push(Item {
                at: o.at,
                job: job.name.to_string(),
                tz: job.tz(),
                state: if held.is_some() { "held" } else { "scheduled" },
                note: held.map(str::to_owned).or(note),
            });
        }
    }
    (items, more)
}
