//! What messages carry besides their text: attachments read at send time and calendar
//! invitations, read back by independent parsers (Python's `email` with
//! `policy.strict`, and `icalendar`).

use std::fmt::Write as _;
use std::process::Command;
use std::time::Duration;

use chrono::{DateTime, Utc};
use cronmail::ledger::{Key, Ledger as _, State};
use serde_json::Value;
use sha2::{Digest as _, Sha256};

use crate::support::*;

fn utc(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

/// What `mime_check.py` reads in each message file.
fn read_back(paths: &[std::path::PathBuf]) -> Vec<Value> {
    let script =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/it/support/mime_check.py");
    let out = Command::new(python())
        .arg(script)
        .args(paths)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "mime_check.py (needs icalendar; ./scripts/test installs it): {}",
        stderr(&out)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn sha(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .fold(String::new(), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

fn render(cfg: &ConfigDir, job: &str, at: &str) -> std::path::PathBuf {
    let out = cronmail(&cfg.path, &["render", job, "--at", at], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let path = cfg
        .dir
        .path()
        .join(format!("{job}-{}.eml", at.replace(':', "")));
    std::fs::write(&path, &out.stdout).unwrap();
    path
}

const INVITE_JOB: &str = r#"
[[job]]
name = "standup"
schedule = "0 9 * * MON"
timezone = "Europe/Berlin"
to = ["Team <team@example.com>", "kim@example.com"]
subject = "Stand-up {{ date }}"
body = "The report and the agenda are attached."
attach = ["reports/{{ date }}.pdf", "static/agenda.txt"]
[job.invite]
summary = "Stand-up ({{ weekday }})"
location = "Room {{ vars.room }}"
duration = "1h"
method = "REQUEST"
alarm = "15m"
[job.vars]
room = "4.12"
"#;

#[test]
fn attachments_and_an_invitation_read_back_with_email_strict_and_icalendar() {
    let cfg = JobsToml::new().outbox().job(INVITE_JOB).write();
    let dir = cfg.dir.path();
    std::fs::create_dir_all(dir.join("reports")).unwrap();
    std::fs::create_dir_all(dir.join("static")).unwrap();
    let pdf = b"%PDF-1.4\n% a report\n\xff\xfe binary".to_vec();
    std::fs::write(dir.join("reports/2026-03-30.pdf"), &pdf).unwrap();
    std::fs::write(dir.join("static/agenda.txt"), "1. news\n2. plans\n").unwrap();

    // 30 March 2026 is the first Monday of summer time in Berlin; 6 April the next.
    let first = render(&cfg, "standup", "2026-03-30T07:00:00Z");
    let again = render(&cfg, "standup", "2026-03-30T07:00:00Z");
    std::fs::copy(
        dir.join("reports/2026-03-30.pdf"),
        dir.join("reports/2026-04-06.pdf"),
    )
    .unwrap();
    let next = render(&cfg, "standup", "2026-04-06T07:00:00Z");
    let got = read_back(&[first, again, next]);
    let m = &got[0];
    let types: Vec<&str> = m["parts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["type"].as_str().unwrap())
        .collect();
    assert_eq!(
        types,
        [
            "multipart/mixed",
            "multipart/alternative",
            "text/plain",
            "text/calendar",
            "application/pdf",
            "text/plain",
            "application/ics"
        ],
        "{m}"
    );
    let parts = m["parts"].as_array().unwrap();
    assert_eq!(parts[4]["filename"], "2026-03-30.pdf");
    assert_eq!(parts[4]["sha256"], sha(&pdf));
    assert_eq!(parts[5]["filename"], "agenda.txt");
    assert_eq!(parts[6]["filename"], "invite.ics");
    assert_eq!(parts[3]["method"], "REQUEST");
    assert_eq!(
        parts[3]["sha256"], parts[6]["sha256"],
        "the .ics file is the calendar part"
    );

    let cal = &parts[3]["calendar"];
    assert_eq!(cal["method"], "REQUEST");
    assert_eq!(cal["timezones"], serde_json::json!(["Europe/Berlin"]));
    let ev = &cal["events"][0];
    assert_eq!(ev["tzid"], "Europe/Berlin");
    assert_eq!(ev["start"], "2026-03-30T09:00:00+02:00");
    assert_eq!(ev["duration_s"], 3600);
    assert_eq!(ev["sequence"], 0);
    assert_eq!(ev["summary"], "Stand-up (Monday)");
    assert_eq!(ev["location"], "Room 4.12");
    assert_eq!(ev["organizer"], "mailto:bot@example.com");
    assert_eq!(
        ev["attendees"],
        serde_json::json!(["mailto:team@example.com", "mailto:kim@example.com"])
    );
    assert_eq!(ev["alarms_s"], serde_json::json!([-900]));
    let uid = ev["uid"].as_str().unwrap();
    assert!(
        uid.starts_with("standup.1774854000.") && uid.ends_with("@example.com"),
        "{uid}"
    );
    // The same occurrence, rendered again: the same UID (a resend updates the event).
    assert_eq!(got[1]["parts"][3]["calendar"]["events"][0]["uid"], uid);
    assert_eq!(got[1]["message_id"], m["message_id"]);
    let week_later = &got[2]["parts"][3]["calendar"]["events"][0];
    assert_ne!(week_later["uid"], uid);
    assert_eq!(week_later["start"], "2026-04-06T09:00:00+02:00");
}

#[test]
fn an_invitation_to_publish_has_no_attendees_and_an_advance_warning_carries_the_event() {
    let cfg = JobsToml::new()
        .outbox()
        .job(
            r#"
[[job]]
name = "dentist"
at = "2026-11-02T08:30"
timezone = "America/New_York"
before = ["7d", "0d"]
to = ["me@example.com"]
subject = "Dentist {{ event_at | strftime('%b %d') }}"
body = "b"
[job.invite]
"#,
        )
        .write();
    let early = render(&cfg, "dentist.7d", "2026-10-26T12:30:00Z");
    let on_the_day = render(&cfg, "dentist", "2026-11-02T13:30:00Z");
    let got = read_back(&[early, on_the_day]);
    let ev = |i: usize| got[i]["parts"][3]["calendar"]["events"][0].clone();
    assert_eq!(got[0]["parts"][3]["calendar"]["method"], "PUBLISH");
    assert_eq!(got[0]["parts"][4]["filename"], "invite.ics");
    // New York leaves summer time on 1 November: the event is in EST.
    assert_eq!(ev(0)["start"], "2026-11-02T08:30:00-05:00");
    assert_eq!(ev(0)["duration_s"], 1800);
    assert_eq!(ev(0)["summary"], "Dentist Nov 02");
    assert_eq!(ev(0)["attendees"], serde_json::json!([]));
    // The warning a week before and the reminder on the day are one event.
    assert_eq!(ev(0)["uid"], ev(1)["uid"]);
    assert_ne!(got[0]["message_id"], got[1]["message_id"]);
}

#[test]
fn attachment_mistakes_are_located_at_check_and_refused_at_send() {
    let cfg = JobsToml::new()
        .outbox()
        .job(
            r#"
[[job]]
name = "leak"
schedule = "0 9 * * *"
to = ["a@example.com"]
subject = "s"
body = "b"
attach = ["../{{ vars.file }}"]
on_missing_attachment = "ignore"
[job.vars]
file = "secret.txt"
"#,
        )
        .write();
    let out = cronmail(&cfg.path, &["check"], &[]);
    assert_eq!(out.status.code(), Some(78), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("jobs.toml:11:25: job `leak`: unknown `on_missing_attachment` `ignore`; expected `fail`, `send` or `skip`"),
        "{}",
        stderr(&out)
    );
    let text = std::fs::read_to_string(&cfg.path)
        .unwrap()
        .replace("on_missing_attachment = \"ignore\"\n", "");
    std::fs::write(&cfg.path, text).unwrap();
    std::fs::write(cfg.dir.path().parent().unwrap().join("secret.txt"), "x").ok();
    let out = cronmail(&cfg.path, &["send", "leak"], &[]);
    assert_eq!(out.status.code(), Some(78), "{}", stderr(&out));
    assert!(stderr(&out).contains("is outside"), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("set `attach_dir`"),
        "{}",
        stderr(&out)
    );
}

const PASSWORD: &str = "s3cret-pw";

/// The in-process daemon on paused time, against aiosmtpd over STARTTLS.
fn retrying(server: &SmtpServer, pki: &Pki, jobs: &str) -> ConfigDir {
    let jobs = JobsToml::new()
        .section("[delivery]\nretry_min = \"30s\"\nretry_max = \"30s\"")
        .job(jobs);
    service_config(server, pki, PASSWORD, jobs)
}

#[tokio::test(start_paused = true)]
async fn a_missing_attachment_fails_and_is_retried_until_it_appears_or_skips_or_sends_without() {
    let pki = Pki::new();
    let server = ServerSpec::starttls(&pki).user("alice", PASSWORD).start();
    let cfg = retrying(
        &server,
        &pki,
        r#"
[[job]]
name = "report"
schedule = "0 9 * * *"
to = ["a@example.com"]
subject = "report"
body = "b"
attach = ["out/{{ date }}.csv"]

[[job]]
name = "optional"
schedule = "0 9 * * *"
to = ["a@example.com"]
subject = "optional"
body = "b"
attach = ["out/{{ date }}.csv"]
on_missing_attachment = "skip"

[[job]]
name = "anyway"
schedule = "0 9 * * *"
to = ["a@example.com"]
subject = "anyway"
body = "b"
attach = ["out/{{ date }}.csv"]
on_missing_attachment = "send"
"#,
    );
    let daemon = InProcess::start(&cfg, utc("2026-03-02T08:59:58Z"));
    tokio::time::sleep(Duration::from_secs(5)).await;
    let ledger = ledger(&cfg.dir.path().join("state"));
    let get = |job: &str| {
        ledger
            .get(&Key::new(job, utc("2026-03-02T09:00:00Z")))
            .unwrap()
            .unwrap()
    };
    let report = get("report");
    assert_eq!(report.state, State::Pending, "{report:?}");
    assert!(
        report
            .last_reply
            .as_deref()
            .unwrap_or("")
            .contains("out/2026-03-02.csv"),
        "{report:?}"
    );
    assert_eq!(get("optional").state, State::Skipped);
    assert_eq!(get("anyway").state, State::Sent);
    assert_eq!(
        server.messages().len(),
        1,
        "only `anyway`, without its file"
    );
    assert!(!server.messages()[0].data.contains("filename="));

    // The script leaves the file; the next attempt, 30 s later, sends it.
    std::fs::create_dir_all(cfg.dir.path().join("out")).unwrap();
    std::fs::write(cfg.dir.path().join("out/2026-03-02.csv"), "a,b\n1,2\n").unwrap();
    tokio::time::sleep(Duration::from_secs(30)).await;
    let report = get("report");
    assert_eq!(report.state, State::Sent, "{report:?}");
    assert_eq!(report.attempts, 2);
    let messages = server.messages();
    assert_eq!(messages.len(), 2);
    assert!(
        messages[1].data.contains("filename=\"2026-03-02.csv\""),
        "{}",
        messages[1].data
    );
    assert!(
        messages[1].data.contains("Content-Type: text/csv"),
        "{}",
        messages[1].data
    );
    daemon.stop().await.unwrap();
}
