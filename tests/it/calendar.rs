//! Calendar reminders: RFC 5545 rules checked against Python's `dateutil.rrule` across
//! DST in both hemispheres and Lord Howe; one-shot times; omitted days from weekends,
//! dates and an iCalendar file (checked against Python's `icalendar`), moved before or
//! after; advance warnings; and every mistake as PATH:LINE:COL with exit 78.

use std::process::Command;

use chrono::{DateTime, NaiveDateTime, Utc};
use cronmail::schedule::{RuleSpec, Schedule};
use serde_json::Value;

use crate::support::*;

/// A Christmas, a New Year that recurs yearly (except 2028), and a three-day Chuseok.
const HOLIDAYS: &str = "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//cronmail test//EN\r\n\
BEGIN:VEVENT\r\nUID:xmas@test\r\nDTSTAMP:20260101T000000Z\r\nDTSTART;VALUE=DATE:20261225\r\nDTEND;VALUE=DATE:20261226\r\nSUMMARY:Christmas\r\nEND:VEVENT\r\n\
BEGIN:VEVENT\r\nUID:ny@test\r\nDTSTAMP:20260101T000000Z\r\nDTSTART;VALUE=DATE:20260101\r\nDTEND;VALUE=DATE:20260102\r\nRRULE:FREQ=YEARLY\r\nEXDATE;VALUE=DATE:20280101\r\nSUMMARY:New Year\r\nEND:VEVENT\r\n\
BEGIN:VEVENT\r\nUID:chuseok@test\r\nDTSTAMP:20260101T000000Z\r\nDTSTART;VALUE=DATE:20260924\r\nDTEND;VALUE=DATE:20260927\r\nSUMMARY:Chuseok\r\nEND:VEVENT\r\n\
END:VCALENDAR\r\n";

fn utc(s: &str) -> DateTime<Utc> {
    s.parse().unwrap()
}

#[test]
fn rrule_expansions_agree_with_dateutil_across_dst_in_both_hemispheres() {
    let out = Command::new(python())
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/it/support/rrule_oracle.py"
        ))
        .args(["20261201", "400"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "rrule_oracle.py (needs python-dateutil; ./scripts/test installs it): {}",
        stderr(&out)
    );
    let cases: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(cases.len(), 400);
    let end = NaiveDateTime::parse_from_str("2035-12-31T23:59:59", "%Y-%m-%dT%H:%M:%S").unwrap();
    let (mut instants, mut near_transitions, mut failures) = (0, 0, Vec::new());
    for case in &cases {
        let rule = case["rrule"].as_str().unwrap();
        let start = case["start"].as_str().unwrap();
        let tz: chrono_tz::Tz = case["tz"].as_str().unwrap().parse().unwrap();
        let spec = RuleSpec {
            rrule: rule,
            start,
            until: None,
            count: None,
            allow_frequent: false,
        };
        let s = Schedule::rule(&spec, tz).unwrap_or_else(|e| panic!("{rule}: {e}"));
        let expected: Vec<DateTime<Utc>> = case["expected"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| utc(v.as_str().unwrap()))
            .collect();
        let mut got = Vec::new();
        let mut t = utc(case["from"].as_str().unwrap());
        while got.len() < expected.len().max(1) {
            match s.next_after(t) {
                Some(n) if n.with_timezone(&tz).naive_local() <= end => {
                    got.push(n);
                    t = n;
                }
                _ => break,
            }
        }
        if got.len() > expected.len() {
            got.truncate(expected.len());
        }
        instants += expected.len();
        near_transitions += expected
            .iter()
            .filter(|t| {
                let off = |t: DateTime<Utc>| {
                    use chrono::Offset as _;
                    t.with_timezone(&tz).offset().fix()
                };
                off(**t - chrono::Duration::hours(3)) != off(**t + chrono::Duration::hours(3))
            })
            .count();
        if got != expected {
            failures.push(format!(
                "{rule} from {start} in {tz}, after {}:\n  cronmail {got:?}\n  dateutil {expected:?}",
                case["from"]
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of 400 differ:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert!(instants > 3000, "only {instants} instants compared");
    assert!(
        near_transitions > 0,
        "no instant within 3 h of a DST change was compared"
    );
    eprintln!(
        "rrule: 400 rules, {instants} instants agree with dateutil ({near_transitions} within 3 h of a DST change)"
    );
}

fn next(cfg: &ConfigDir, args: &[&str]) -> Vec<Vec<String>> {
    let mut all = vec!["next"];
    all.extend_from_slice(args);
    let out = cronmail(&cfg.path, &all, &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    stdout(&out)
        .lines()
        .map(|l| l.split('\t').map(str::to_owned).collect())
        .collect()
}

fn calendar_dir(jobs: &str) -> ConfigDir {
    let cfg = ConfigDir::new(&format!(
        "{FROM}timezone = \"Asia/Seoul\"\n[outbox]\n[calendars.holidays]\nfile = \"holidays.ics\"\n{jobs}"
    ));
    std::fs::write(cfg.dir.path().join("holidays.ics"), HOLIDAYS).unwrap();
    cfg
}

const MSG: &str = "to = [\"a@example.com\"]\nsubject = \"{{ job }} {{ date }}\"\nbody = \"b\"\n";

#[test]
fn the_last_working_day_of_each_month_moves_before_weekends_and_holidays() {
    let cfg = calendar_dir(&format!(
        "[[job]]\nname = \"timesheet\"\nschedule = \"0 17 L * *\"\nomit = [\"weekends\", \"holidays\"]\non_omit = \"before\"\n{MSG}"
    ));
    let lines = next(&cfg, &["--count", "4", "--from", "2026-09-01T00:00:00Z"]);
    let got: Vec<(&str, Option<&str>)> = lines
        .iter()
        .map(|l| (l[1].as_str(), l.get(3).map(String::as_str)))
        .collect();
    assert_eq!(
        got,
        [
            // Wednesday 30 September.
            ("2026-09-30T17:00:00+09:00", None),
            // Saturday 31 October: Friday the 30th.
            (
                "2026-10-30T17:00:00+09:00",
                Some("moved from 2026-10-31 (weekends)")
            ),
            ("2026-11-30T17:00:00+09:00", None),
            ("2026-12-31T17:00:00+09:00", None),
        ]
    );
    // The three columns before the reason are as for every job.
    assert_eq!(lines[1][0], "timesheet");
    assert_eq!(lines[1][2], "2026-10-30T08:00:00Z");
    // A holiday on a weekday moves too, and says which calendar: Friday 25 December.
    let cfg = calendar_dir(&format!(
        "[[job]]\nname = \"standup\"\nschedule = \"0 9 * * FRI\"\nomit = [\"holidays\", \"2027-01-08\"]\non_omit = \"after\"\n{MSG}"
    ));
    let lines = next(&cfg, &["--count", "3", "--from", "2026-12-20T00:00:00Z"]);
    assert_eq!(lines[0][1], "2026-12-26T09:00:00+09:00");
    assert_eq!(lines[0][3], "moved from 2026-12-25 (holidays)");
    assert_eq!(
        lines[1][1], "2027-01-02T09:00:00+09:00",
        "New Year is omitted too"
    );
    assert_eq!(lines[1][3], "moved from 2027-01-01 (holidays)");
    assert_eq!(lines[2][1], "2027-01-09T09:00:00+09:00");
    assert_eq!(lines[2][3], "moved from 2027-01-08 (2027-01-08)");
    // Skipped (the default): no send on the omitted day, nothing moved.
    let cfg = calendar_dir(&format!(
        "[defaults]\nomit = [\"holidays\"]\n[[job]]\nname = \"standup\"\nschedule = \"0 9 * * FRI\"\n{MSG}"
    ));
    let lines = next(&cfg, &["--count", "2", "--from", "2026-12-20T00:00:00Z"]);
    assert_eq!(
        lines[0][1], "2027-01-08T09:00:00+09:00",
        "25 Dec and 1 Jan are skipped: {lines:?}"
    );
    assert_eq!(lines[0].len(), 3);
}

#[test]
fn the_calendars_days_agree_with_python_icalendar() {
    // Python's icalendar reads the same file; dateutil expands its RRULE and EXDATE.
    let script = r#"
import sys, datetime, icalendar
from dateutil.rrule import rrulestr
cal = icalendar.Calendar.from_ical(open(sys.argv[1], 'rb').read())
days = set()
end = datetime.date(2030, 12, 31)
for ev in cal.walk('VEVENT'):
    start = ev.decoded('DTSTART')
    length = (ev.decoded('DTEND') - start).days if 'DTEND' in ev else 1
    starts = [start]
    if 'RRULE' in ev:
        rule = ev['RRULE'].to_ical().decode()
        ex = set()
        for e in ([ev['EXDATE']] if not isinstance(ev.get('EXDATE'), list) else ev['EXDATE']) if 'EXDATE' in ev else []:
            ex |= {d.dt for d in e.dts}
        starts = [d.date() for d in rrulestr(rule, dtstart=datetime.datetime.combine(start, datetime.time())) if d.date() <= end and d.date() not in ex]
    for s in starts:
        for n in range(length):
            days.add(s + datetime.timedelta(days=n))
print("\n".join(sorted(d.isoformat() for d in days if d <= end)))
"#;
    let dir = tempfile::tempdir().unwrap();
    let ics = dir.path().join("holidays.ics");
    std::fs::write(&ics, HOLIDAYS).unwrap();
    let out = Command::new(python())
        .args(["-c", script])
        .arg(&ics)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let python: Vec<String> = stdout(&out).lines().map(str::to_owned).collect();
    let end = "2030-12-31".parse().unwrap();
    let ours: Vec<String> = cronmail::schedule::ics_days(HOLIDAYS, end)
        .unwrap()
        .into_iter()
        .filter(|d| *d <= end)
        .map(|d| d.to_string())
        .collect();
    assert_eq!(ours, python);
    assert!(ours.contains(&"2026-09-26".to_owned()) && !ours.contains(&"2028-01-01".to_owned()));
}

#[test]
fn one_shot_times_and_advance_warnings_are_each_a_send_with_its_own_message_id() {
    let cfg = ConfigDir::new(&format!(
        "{FROM}timezone = \"Europe/Berlin\"\n[outbox]\n\
[[job]]\nname = \"once\"\nat = [\"2027-01-04T09:00\", \"2026-12-24T18:00\"]\n{MSG}\
[[job]]\nname = \"tax\"\nrrule = \"FREQ=YEARLY;BYMONTH=5;BYMONTHDAY=31\"\nstart = \"2027-05-31T12:00\"\nbefore = [\"7d\", \"1d\", \"0d\"]\n\
to = [\"a@example.com\"]\nsubject = \"{{{{ days_before }}}} days: {{{{ event_at | strftime('%d %B') }}}}\"\nbody = \"b\"\n"
    ));
    let lines = next(
        &cfg,
        &[
            "--count",
            "2",
            "--from",
            "2026-12-01T00:00:00Z",
            "--job",
            "once",
        ],
    );
    let got: Vec<&str> = lines.iter().map(|l| l[1].as_str()).collect();
    assert_eq!(
        got,
        ["2026-12-24T18:00:00+01:00", "2027-01-04T09:00:00+01:00"]
    );
    // `--count` counts sends: the three warnings of one occurrence, then the next 7d one.
    let lines = next(
        &cfg,
        &[
            "--job",
            "tax",
            "--count",
            "4",
            "--from",
            "2027-01-01T00:00:00Z",
        ],
    );
    let got: Vec<(&str, &str)> = lines
        .iter()
        .map(|l| (l[0].as_str(), l[1].as_str()))
        .collect();
    assert_eq!(
        got,
        [
            ("tax.7d", "2027-05-24T12:00:00+02:00"),
            ("tax.1d", "2027-05-30T12:00:00+02:00"),
            ("tax", "2027-05-31T12:00:00+02:00"),
            ("tax.7d", "2028-05-24T12:00:00+02:00"),
        ]
    );
    assert_eq!(lines[0][3], "7 days before 2027-05-31T12:00:00+02:00");
    assert_eq!(lines[1][3], "1 day before 2027-05-31T12:00:00+02:00");
    // Each warning renders with its own event and a Message-ID of its own.
    let render = |job: &str, at: &str| {
        let out = cronmail(&cfg.path, &["render", job, "--at", at], &[]);
        assert!(out.status.success(), "{}", stderr(&out));
        stdout(&out)
    };
    let week = render("tax.7d", "2027-05-24T10:00:00Z");
    let day = render("tax.1d", "2027-05-30T10:00:00Z");
    assert!(week.contains("Subject: 7 days: 31 May"), "{week}");
    assert!(day.contains("Subject: 1 days: 31 May"), "{day}");
    let id = |m: &str| {
        m.lines()
            .find(|l| l.starts_with("Message-ID:"))
            .unwrap()
            .to_owned()
    };
    assert_ne!(id(&week), id(&day));
    assert!(id(&week).contains("<tax.7d."), "{}", id(&week));
}

#[test]
fn calendar_mistakes_are_located_errors_with_exit_78() {
    let cases: [(&str, &str, &str); 10] = [
        (
            "rrule = \"FREQ=YEARLY;BYMONTH=2;BYMONTHDAY=30\"\nstart = \"2027-01-04T09:00\"\n",
            "never fires: the rule has no occurrence at all",
            "rrule",
        ),
        (
            "schedule = \"0 9 * * *\"\nat = \"2027-01-04T09:00\"\n",
            "both `schedule` and `at` are set",
            "at",
        ),
        (
            "rrule = \"FREQ=WEEKLY;BYDAY=XX\"\nstart = \"2027-01-04T09:00\"\n",
            "RRULE `FREQ=WEEKLY;BYDAY=XX`",
            "rrule",
        ),
        (
            "rrule = \"FREQ=SECONDLY\"\nstart = \"2027-01-04T09:00\"\n",
            "allow_frequent = true",
            "rrule",
        ),
        (
            "rrule = \"FREQ=DAILY\"\nstart = \"2027-01-04T09:00+01:00\"\n",
            "Asia/Seoul is at +09:00",
            "start",
        ),
        (
            "rrule = \"FREQ=DAILY\"\n",
            "`rrule` needs a `start`",
            "rrule",
        ),
        (
            "schedule = \"0 9 * * *\"\nomit = [\"holiday\"]\n",
            "`omit` item `holiday` is not",
            "omit",
        ),
        (
            "schedule = \"0 9 * * *\"\nbefore = [\"7x\"]\n",
            "`before` offset `7x`",
            "before",
        ),
        (
            "schedule = \"0 9 * * SAT\"\nomit = [\"weekends\"]\n",
            "never fires",
            "schedule",
        ),
        (
            "schedule = \"0 9 * * *\"\non_omit = \"later\"\n",
            "unknown `on_omit` `later`",
            "on_omit",
        ),
    ];
    for (keys, message, key) in cases {
        let text = format!(
            "{FROM}timezone = \"Asia/Seoul\"\n[outbox]\n[calendars.holidays]\nfile = \"holidays.ics\"\n[[job]]\nname = \"j\"\n{keys}{MSG}"
        );
        let cfg = ConfigDir::new(&text);
        std::fs::write(cfg.dir.path().join("holidays.ics"), HOLIDAYS).unwrap();
        let out = cronmail(&cfg.path, &["check"], &[]);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(78), "{keys}: {err}");
        assert!(
            err.contains(message),
            "{keys}: expected {message:?} in {err}"
        );
        // PATH:LINE:COL at the key it is about.
        let line = text
            .lines()
            .position(|l| l.starts_with(&format!("{key} ")))
            .unwrap()
            + 1;
        assert!(
            err.contains(&format!("jobs.toml:{line}:")),
            "{keys}: expected line {line} ({key}) in {err}"
        );
        assert!(
            err.contains("job `j`") || err.contains("[j]") || err.contains("j:"),
            "{keys}: the job is named: {err}"
        );
    }
}

#[test]
fn a_file_that_is_not_icalendar_is_an_error_and_past_times_and_stale_calendars_warnings() {
    // A calendar file that is not iCalendar, at its `file` key.
    let cfg = ConfigDir::new(&format!(
        "{FROM}[outbox]\n[calendars.holidays]\nfile = \"holidays.ics\"\n[[job]]\nname = \"j\"\nschedule = \"0 9 * * *\"\nomit = [\"holidays\"]\n{MSG}"
    ));
    std::fs::write(cfg.dir.path().join("holidays.ics"), "<html>404</html>").unwrap();
    let out = cronmail(&cfg.path, &["check"], &[]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(78), "{err}");
    assert!(
        err.contains("jobs.toml:4:") && err.contains("not an iCalendar file"),
        "{err}"
    );
    // A past one-shot time and a stale calendar are warnings: exit 0.
    let cfg = ConfigDir::new(&format!(
        "{FROM}[outbox]\n[calendars.old]\nfile = \"old.ics\"\n[[job]]\nname = \"j\"\nat = \"2020-01-01T09:00\"\nomit = [\"old\"]\n{MSG}"
    ));
    std::fs::write(
        cfg.dir.path().join("old.ics"),
        HOLIDAYS
            .replace("RRULE:FREQ=YEARLY\r\n", "")
            .replace("2026", "2020"),
    )
    .unwrap();
    let out = cronmail(&cfg.path, &["check"], &[]);
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("every `at` time is in the past"), "{err}");
    assert!(
        err.contains("calendar `old` has no event in the next 12 months"),
        "{err}"
    );
}

#[test]
fn a_calendar_from_a_url_is_fetched_over_https_cached_for_a_day_and_a_failed_refresh_keeps_the_copy()
 {
    let pki = Pki::new();
    let server = FileServer::start(&pki);
    std::fs::write(server.path("kr.ics"), HOLIDAYS).unwrap();
    let write = |url: &str, ca: bool| {
        ConfigDir::new(&format!(
            "{FROM}timezone = \"Asia/Seoul\"\nstate_dir = \"state\"\n[outbox]\n[calendars.holidays]\nurl = \"{url}\"\n{}\
[[job]]\nname = \"standup\"\nschedule = \"0 9 * * FRI\"\nomit = [\"holidays\"]\non_omit = \"before\"\n{MSG}",
            if ca {
                format!("ca_file = \"{}\"\n", pki.ca.display())
            } else {
                String::new()
            }
        ))
    };
    let cfg = write(&server.url("kr.ics"), true);
    let lines = next(&cfg, &["--count", "1", "--from", "2026-12-20T00:00:00Z"]);
    assert_eq!(lines[0][1], "2026-12-24T09:00:00+09:00");
    assert_eq!(lines[0][3], "moved from 2026-12-25 (holidays)");
    let cached = cfg.dir.path().join("state/calendars/holidays.ics");
    assert_eq!(std::fs::read_to_string(&cached).unwrap(), HOLIDAYS);
    assert_eq!(server.requests(), ["/kr.ics"]);
    // Within a day, the copy serves.
    let out = cronmail(&cfg.path, &["check"], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(server.requests().len(), 1);

    // A day later the server fails: the copy is kept, with a warning, and still used.
    let old = std::time::SystemTime::now() - std::time::Duration::from_secs(25 * 3600);
    std::fs::File::options()
        .write(true)
        .open(&cached)
        .unwrap()
        .set_modified(old)
        .unwrap();
    std::fs::write(server.path("kr.ics.status"), "503").unwrap();
    let out = cronmail(&cfg.path, &["check"], &[]);
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("calendar `holidays`: refreshing it failed (the server answered 503"),
        "{err}"
    );
    assert!(err.contains("using the copy fetched at"), "{err}");
    assert_eq!(server.requests().len(), 2);
    let lines = next(&cfg, &["--count", "1", "--from", "2026-12-20T00:00:00Z"]);
    assert_eq!(lines[0][1], "2026-12-24T09:00:00+09:00");

    // No copy and no answer: an error at the `url`, exit 78.
    std::fs::remove_file(&cached).unwrap();
    let out = cronmail(&cfg.path, &["check"], &[]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(78), "{err}");
    assert!(
        err.contains("jobs.toml:6:") && err.contains("fetching https://localhost"),
        "{err}"
    );
    // A page that is not iCalendar is a failed fetch, not a calendar.
    std::fs::remove_file(server.path("kr.ics.status")).unwrap();
    std::fs::write(server.path("page.ics"), "<html>Sign in</html>").unwrap();
    let out = cronmail(&write(&server.url("page.ics"), true).path, &["check"], &[]);
    assert_eq!(out.status.code(), Some(78));
    assert!(
        stderr(&out).contains("not an iCalendar file"),
        "{}",
        stderr(&out)
    );
    // Without the test CA the server is not trusted, and nothing is cached.
    let cfg = write(&server.url("kr.ics"), false);
    let out = cronmail(&cfg.path, &["check"], &[]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(78), "{err}");
    assert!(err.to_lowercase().contains("certificate"), "{err}");
    assert!(!cfg.dir.path().join("state/calendars/holidays.ics").exists());
}
