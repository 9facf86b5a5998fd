//! `GET /` on the `[http]` listener: one read-only HTML page, without JavaScript, that
//! refreshes itself every 30 s: health, holds, the coming week, recent outcomes and
//! failures. It shows no secret (no URL, no password source).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use chrono::{DateTime, Duration, NaiveDate, Utc};

use super::Ops;
use crate::agenda::{coming, midnight};

/// Days of the coming week shown.
const DAYS: i64 = 7;

/// Occurrences the page's week looks at, over all jobs: a few milliseconds.
const PAGE_BUDGET: usize = 50_000;

/// Recent outcomes shown (the failures are all shown above them).
const RECENT_SHOWN: usize = 30;

fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

const STYLE: &str = "body{font:15px/1.4 system-ui,sans-serif;margin:2em auto;max-width:60em;padding:0 1em;color:#222}\
h1{font-size:1.4em}h2{font-size:1.1em;margin-top:1.6em;border-bottom:1px solid #ccc}\
table{border-collapse:collapse;width:100%}td,th{text-align:left;padding:.2em .6em .2em 0;vertical-align:top}\
.ok{color:#176b2c}.bad{color:#a11}.dim{color:#777}.day{font-weight:600;padding-top:.6em}";

/// The page at `now`.
pub fn render(ops: &Ops, now: DateTime<Utc>) -> String {
    let config = ops.config();
    let tz = config.timezone;
    let mut h = String::new();
    let _ = write!(
        h,
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><meta http-equiv=\"refresh\" content=\"30\">\
         <title>cronmail</title><style>{STYLE}</style></head><body><h1>cronmail {}</h1>",
        env!("CARGO_PKG_VERSION")
    );
    let _ = write!(
        h,
        "<p>{} &middot; {} jobs &middot; times in {}</p>",
        esc(&now
            .with_timezone(&tz)
            .format("%a %Y-%m-%d %H:%M:%S %Z")
            .to_string()),
        config.jobs.iter().filter(|j| j.enabled).count(),
        esc(tz.name())
    );
    match ops.health.check(now) {
        Ok(()) => h.push_str(
            "<p class=\"ok\">Healthy: the timer loop is awake and the ledger takes writes.</p>",
        ),
        Err(why) => {
            let _ = write!(h, "<p class=\"bad\">Unhealthy: {}</p>", esc(&why));
        }
    }
    let recent = ops.recent();
    h.push_str("<h2>Holds</h2>");
    let held = ops.metrics.held_accounts();
    if held.is_empty() {
        h.push_str("<p class=\"ok\">None: no account is held.</p>");
    } else {
        let why = recent
            .iter()
            .find(|r| r.state == "held")
            .map(|r| format!(": {}", r.reply))
            .unwrap_or_default();
        let names: Vec<String> = held.iter().map(|n| format!("`{n}`")).collect();
        let _ = write!(
            h,
            "<p class=\"bad\">Held after an authentication or quota failure: account {}{}; its sends wait for one test login.</p>",
            esc(&names.join(", ")),
            esc(&why)
        );
    }
    h.push_str("<h2>Failures</h2>");
    table(
        &mut h,
        recent
            .iter()
            .filter(|r| !matches!(r.state, "sent" | "skipped")),
        tz,
    );
    week(&mut h, ops, now);
    h.push_str("<h2>Recent</h2>");
    table(&mut h, recent.iter().take(RECENT_SHOWN), tz);
    h.push_str("</body></html>\n");
    h
}

fn table<'a>(h: &mut String, rows: impl Iterator<Item = &'a super::Recent>, tz: chrono_tz::Tz) {
    let mut any = false;
    for r in rows {
        if !any {
            h.push_str(
                "<table><tr><th>occurrence</th><th>job</th><th>state</th><th>reply</th></tr>",
            );
            any = true;
        }
        let class = match r.state {
            "sent" => "ok",
            "skipped" => "dim",
            _ => "bad",
        };
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{}</td><td class=\"{class}\">{}</td><td>{}</td></tr>",
            esc(&r
                .occurrence
                .with_timezone(&tz)
                .format("%Y-%m-%d %H:%M:%S")
                .to_string()),
            esc(&r.job),
            esc(r.state),
            esc(&r.reply)
        );
    }
    if any {
        h.push_str("</table>");
    } else {
        h.push_str("<p class=\"dim\">None.</p>");
    }
}

/// The coming week, a row per day, from the schedules.
fn week(h: &mut String, ops: &Ops, now: DateTime<Utc>) {
    let config = ops.config();
    let tz = config.timezone;
    let today = now.with_timezone(&tz).date_naive();
    let until = midnight(tz, today + Duration::days(DAYS));
    let (items, more) = coming(&config, &ops.orders(), None, now, until, PAGE_BUDGET);
    let mut by_day: BTreeMap<NaiveDate, Vec<&crate::agenda::Item>> = BTreeMap::new();
    for i in &items {
        by_day
            .entry(i.at.with_timezone(&tz).date_naive())
            .or_default()
            .push(i);
    }
    h.push_str("<h2>Coming week</h2><table>");
    for n in 0..DAYS {
        let day = today + Duration::days(n);
        let _ = write!(
            h,
            "<tr><td class=\"day\" colspan=\"3\">{}</td></tr>",
            esc(&day.format("%a %Y-%m-%d").to_string())
        );
        let mut list = by_day.remove(&day).unwrap_or_default();
        list.sort_by_key(|i| i.at);
        if list.is_empty() {
            h.push_str("<tr><td class=\"dim\" colspan=\"3\">-</td></tr>");
        }
        for i in list {
            let _ = write!(
                h,
                "<tr><td>{}</td><td>{}</td><td class=\"dim\">{}</td></tr>",
                esc(&i.at.with_timezone(&tz).format("%H:%M:%S").to_string()),
                esc(&i.job),
                esc(&match (i.state, i.note.as_deref()) {
                    ("held", Some(n)) => format!("held: {n}"),
                    (_, n) => n.unwrap_or("").to_owned(),
                })
            );
        }
        for ((_, job), n) in more
            .range((day, String::new())..)
            .take_while(|((d, _), _)| *d == day)
        {
            let plus = if *n >= crate::agenda::MORE_CAP {
                "+"
            } else {
                ""
            };
            let _ = write!(
                h,
                "<tr><td></td><td class=\"dim\" colspan=\"2\">and {n}{plus} more of {}</td></tr>",
                esc(job)
            );
        }
    }
    h.push_str("</table>");
}
