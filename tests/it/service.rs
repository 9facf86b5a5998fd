//! The whole daemon in this process, on paused tokio time, against a real SMTP server
//! and a real `SQLite` ledger: a due fire, a 4xx retried after its backoff, catch-up
//! after a gap, a reload that swaps the jobs, an authentication hold. No wall-clock
//! sleep: `tokio::time::sleep` here advances the daemon's clock exactly (see
//! `support::service`).

use std::time::Duration;

use chrono::{DateTime, Utc};
use cronmail::daemon::Notice;
use cronmail::ledger::{Key, Ledger as _, Record, State};

use crate::support::*;

const PASSWORD: &str = "s3cret-pw";

fn utc(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

/// jobs.toml in UTC with state in `state/`, `[smtp]` for `server` with the password
/// read from the file `smtp-password` (holding `password`), `delivery` and `jobs`.
fn config(
    server: &SmtpServer,
    pki: &Pki,
    password: &str,
    delivery: &str,
    jobs: JobsToml,
) -> ConfigDir {
    service_config(server, pki, password, jobs.section(delivery))
}

fn records(cfg: &ConfigDir) -> Vec<Record> {
    ledger(&cfg.dir.path().join("state"))
        .history(None, 1000)
        .unwrap()
}

fn record(cfg: &ConfigDir, job: &str, at: &str) -> Option<Record> {
    ledger(&cfg.dir.path().join("state"))
        .get(&Key::new(job, utc(at)))
        .unwrap()
}

fn subjects(server: &SmtpServer) -> Vec<String> {
    server
        .messages()
        .iter()
        .map(|m| {
            m.data
                .lines()
                .find_map(|l| l.strip_prefix("Subject: "))
                .unwrap_or_default()
                .to_owned()
        })
        .collect()
}

/// Advances the daemon's clock (paused time) by `secs`.
async fn pass(secs: u64) {
    tokio::time::sleep(Duration::from_secs(secs)).await;
}

#[tokio::test(start_paused = true)]
async fn a_due_fire_is_delivered_to_a_real_smtp_server_and_recorded() {
    let pki = Pki::new();
    let server = ServerSpec::starttls(&pki).user("alice", PASSWORD).start();
    let cfg = config(
        &server,
        &pki,
        PASSWORD,
        "",
        JobsToml::new().every("daily", "0 9 * * *", ""),
    );
    let daemon = InProcess::start(&cfg, utc("2026-03-02T08:59:50Z"));

    pass(5).await;
    assert!(server.messages().is_empty(), "sent before its time");
    pass(10).await;
    assert_eq!(subjects(&server), ["daily 09:00"]);
    let rec = record(&cfg, "daily", "2026-03-02T09:00:00Z").unwrap();
    assert_eq!(rec.state, State::Sent);
    assert_eq!(rec.attempts, 1);
    assert!(
        server.messages()[0]
            .data
            .contains(&format!("Message-ID: <{}>", rec.message_id))
    );
    assert_eq!(daemon.now(), utc("2026-03-02T09:00:05Z"));

    daemon.stop().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_4xx_is_retried_after_exactly_its_backoff_then_delivered() {
    let pki = Pki::new();
    let server = ServerSpec::starttls(&pki)
        .user("alice", PASSWORD)
        .set(
            "data_replies",
            serde_json::json!(["451 4.3.0 Try again later"]),
        )
        .start();
    // retry_min = retry_max: the first backoff is exactly 30 s, without jitter.
    let cfg = config(
        &server,
        &pki,
        PASSWORD,
        "[delivery]\nretry_min = \"30s\"\nretry_max = \"30s\"",
        JobsToml::new().every("daily", "0 9 * * *", ""),
    );
    let daemon = InProcess::start(&cfg, utc("2026-03-02T08:59:58Z"));

    pass(5).await; // 09:00:03
    assert!(server.messages().is_empty());
    let rec = record(&cfg, "daily", "2026-03-02T09:00:00Z").unwrap();
    assert_eq!(rec.state, State::Pending);
    assert_eq!(rec.last_error_class.as_deref(), Some("transient"));
    assert!(rec.last_reply.unwrap().contains("Try again later"));
    assert_eq!(rec.next_attempt_at, Some(utc("2026-03-02T09:00:30Z")));

    pass(26).await; // 09:00:29
    assert!(server.messages().is_empty(), "retried before the backoff");
    pass(2).await; // 09:00:31
    assert_eq!(subjects(&server), ["daily 09:00"]);
    let rec = record(&cfg, "daily", "2026-03-02T09:00:00Z").unwrap();
    assert_eq!((rec.state, rec.attempts), (State::Sent, 2));

    daemon.stop().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn catch_up_after_a_gap_sends_what_each_policy_says() {
    let pki = Pki::new();
    let server = ServerSpec::starttls(&pki).user("alice", PASSWORD).start();
    let cfg = config(
        &server,
        &pki,
        PASSWORD,
        "",
        JobsToml::new()
            .every("latest", "*/10 * * * *", "catch_up = \"latest\"")
            .every(
                "all",
                "*/10 * * * *",
                "catch_up = \"all\"\nmax_late = \"1h\"",
            )
            .every("skip", "*/10 * * * *", "catch_up = \"skip\""),
    );
    // The last run handled 09:00; cronmail comes back at 12:05.
    {
        let state = cfg.dir.path().join("state");
        let l = cronmail::ledger::SqliteLedger::open_exclusive(&state).unwrap();
        for job in ["latest", "all", "skip"] {
            let key = Key::new(job, utc("2026-03-02T09:00:00Z"));
            l.claim(
                &[(key.clone(), format!("{job}@x"))],
                utc("2026-03-02T09:00:00Z"),
            )
            .unwrap();
            l.sent(&cronmail::ledger::Receipt::new(
                key.clone(),
                "250 ok",
                utc("2026-03-02T09:00:01Z"),
            ))
            .unwrap();
        }
    }
    let daemon = InProcess::start(&cfg, utc("2026-03-02T12:05:00Z"));
    pass(2).await;

    let mut got = subjects(&server);
    got.sort();
    let mut want = vec!["latest 12:00".to_owned()];
    want.extend(["11:10", "11:20", "11:30", "11:40", "11:50", "12:00"].map(|t| format!("all {t}")));
    want.sort();
    assert_eq!(got, want);
    // 09:10 .. 12:00 is 18 occurrences; what was not sent is one skipped row per job,
    // at the newest skipped instant, that says how many.
    let skipped = |job: &str| -> Vec<(DateTime<Utc>, String)> {
        records(&cfg)
            .iter()
            .filter(|r| &*r.key.job == job && r.state == State::Skipped)
            .map(|r| {
                (
                    r.key.scheduled_at,
                    r.final_reply.clone().unwrap_or_default(),
                )
            })
            .collect()
    };
    assert_eq!(
        skipped("latest"),
        [(
            utc("2026-03-02T11:50:00Z"),
            "skipped 17 occurrences of `latest` from 2026-03-02T09:10:00Z to 2026-03-02T11:50:00Z \
             (catch_up = latest sends only the newest)"
                .to_owned()
        )]
    );
    assert_eq!(
        skipped("all"),
        [(
            utc("2026-03-02T11:00:00Z"),
            "skipped 12 occurrences of `all` from 2026-03-02T09:10:00Z to 2026-03-02T11:00:00Z \
             (missed by more than max_late = 1h)"
                .to_owned()
        )]
    );
    assert_eq!(skipped("skip").len(), 1);
    assert!(skipped("skip")[0].1.starts_with("skipped 18 occurrences"));

    // Then each job is back on its schedule.
    pass(5 * 60).await; // 12:10:02
    assert_eq!(
        subjects(&server)
            .iter()
            .filter(|s| s.ends_with("12:10"))
            .count(),
        3
    );
    daemon.stop().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_reload_swaps_the_jobs_and_a_broken_one_keeps_them() {
    let pki = Pki::new();
    let server = ServerSpec::starttls(&pki).user("alice", PASSWORD).start();
    let cfg = config(
        &server,
        &pki,
        PASSWORD,
        "",
        JobsToml::new().every("old", "* * * * *", ""),
    );
    let daemon = InProcess::start(&cfg, utc("2026-03-02T10:00:30Z"));
    pass(60).await; // 10:01:30
    assert_eq!(subjects(&server), ["old 10:01"]);

    // A broken file is refused; the old job keeps running.
    std::fs::write(&cfg.path, "this is not toml [").unwrap();
    daemon.reload().await;
    pass(60).await; // 10:02:30
    assert_eq!(subjects(&server), ["old 10:01", "old 10:02"]);

    let new = config(
        &server,
        &pki,
        PASSWORD,
        "",
        JobsToml::new().every("new", "* * * * *", ""),
    );
    std::fs::copy(&new.path, &cfg.path).unwrap();
    daemon.reload().await;
    pass(60).await; // 10:03:30
    assert_eq!(subjects(&server), ["old 10:01", "old 10:02", "new 10:03"]);
    assert_eq!(
        daemon.notices.states(),
        [
            Notice::Ready,
            Notice::Reloading,
            Notice::Ready,
            Notice::Reloading,
            Notice::Ready
        ]
    );
    daemon.stop().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn an_authentication_hold_logs_in_rarely_and_a_reload_with_the_right_password_sends_all() {
    let pki = Pki::new();
    let server = ServerSpec::starttls(&pki).user("alice", PASSWORD).start();
    let cfg = config(
        &server,
        &pki,
        "the-wrong-password",
        "[delivery]\nretry_min = \"2m\"\nretry_max = \"10m\"",
        JobsToml::new().every("tick", "* * * * *", ""),
    );
    let daemon = InProcess::start(&cfg, utc("2026-03-02T10:00:30Z"));
    pass(10 * 60).await; // 10:10:30: ten occurrences, 10:01 .. 10:10

    assert!(server.messages().is_empty());
    let auths = server.commands().iter().filter(|c| *c == "AUTH").count();
    // Without the hold, each of the ten would have logged in at least once.
    assert!((1..10).contains(&auths), "{auths} logins in ten minutes");
    let held = records(&cfg)
        .iter()
        .filter(|r| r.state == State::Pending)
        .count();
    assert_eq!(held, 10, "every occurrence waits, none is lost");

    std::fs::write(cfg.dir.path().join("smtp-password"), PASSWORD).unwrap();
    daemon.reload().await;
    pass(30).await;
    let mut got = subjects(&server);
    got.sort();
    let want: Vec<String> = (1..=10).map(|m| format!("tick 10:{m:02}")).collect();
    assert_eq!(got, want);
    assert!(
        records(&cfg).iter().all(|r| r.state == State::Sent),
        "{:?}",
        records(&cfg)
    );
    daemon.stop().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn calendar_jobs_send_each_warning_once_moved_days_on_theirs_and_a_restart_sends_nothing_twice()
 {
    let pki = Pki::new();
    let server = ServerSpec::starttls(&pki).user("alice", PASSWORD).start();
    let jobs = JobsToml::new()
        .job(
            "[[job]]\nname = \"renewal\"\nat = \"2026-03-04T09:00\"\nbefore = [\"2d\", \"1d\", \"0d\"]\n\
             to = [\"a@example.com\"]\nsubject = \"{{ job }} in {{ days_before }} ({{ date }})\"\nbody = \"b\"",
        )
        .job(
            "[[job]]\nname = \"standup\"\nrrule = \"FREQ=DAILY\"\nstart = \"2026-03-01T10:00\"\n\
             omit = [\"weekends\", \"2026-03-03\"]\non_omit = \"after\"\n\
             to = [\"a@example.com\"]\nsubject = \"{{ job }} {{ date }}\"\nbody = \"b\"",
        );
    let cfg = config(&server, &pki, PASSWORD, "", jobs);
    // Sunday 1 March 2026, before anything is due.
    let daemon = InProcess::start(&cfg, utc("2026-03-01T08:00:00Z"));
    pass(3 * 86_400 + 2 * 3600 + 30).await; // to Wednesday 4 March, 10:00:30
    daemon.stop().await.unwrap();
    let sent = subjects(&server);
    assert_eq!(
        sent,
        [
            "renewal in 2 (2026-03-02)",
            // Sunday's standup moved to Monday 10:00, where Monday's own is: one message.
            "standup 2026-03-02",
            "renewal in 1 (2026-03-03)",
            "renewal in 0 (2026-03-04)",
            // Tuesday's (omitted) moved to Wednesday's: one message again.
            "standup 2026-03-04",
        ],
        "in order of sending"
    );
    let recs = records(&cfg);
    let ids: std::collections::BTreeSet<&str> =
        recs.iter().map(|r| r.message_id.as_str()).collect();
    assert_eq!(
        ids.len(),
        recs.len(),
        "every send has a Message-ID of its own"
    );
    assert!(record(&cfg, "renewal.2d", "2026-03-02T09:00:00Z").is_some());
    assert!(record(&cfg, "renewal.1d", "2026-03-03T09:00:00Z").is_some());
    assert!(record(&cfg, "renewal", "2026-03-04T09:00:00Z").is_some());

    // A restart a minute later sends nothing again.
    let daemon = InProcess::start(&cfg, utc("2026-03-04T10:01:00Z"));
    pass(60).await;
    daemon.stop().await.unwrap();
    assert_eq!(
        subjects(&server).len(),
        sent.len(),
        "{:?}",
        subjects(&server)
    );
}

#[tokio::test(start_paused = true)]
async fn a_calendar_from_a_url_is_fetched_again_each_day_and_the_new_days_take_effect() {
    let pki = Pki::new();
    let server = ServerSpec::starttls(&pki).user("alice", PASSWORD).start();
    let files = FileServer::start(&pki);
    let ics = |day: &str| {
        format!(
            "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//t//EN\r\nBEGIN:VEVENT\r\nUID:1@t\r\nDTSTAMP:20260101T000000Z\r\n\
             DTSTART;VALUE=DATE:{day}\r\nSUMMARY:closed\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n"
        )
    };
    // Closed on the 3rd; the next day's copy says the 4th instead.
    std::fs::write(files.path("days.ics"), ics("20260303")).unwrap();
    let jobs = JobsToml::new()
        .section(&format!(
            "[calendars.closed]\nurl = \"{}\"\nca_file = \"{}\"",
            files.url("days.ics"),
            pki.ca.display()
        ))
        .every("daily", "0 9 * * *", "omit = [\"closed\"]");
    let cfg = config(&server, &pki, PASSWORD, "", jobs);
    let daemon = InProcess::start(&cfg, utc("2026-03-02T08:00:00Z"));
    pass(3600).await; // 2 March 09:00: sent
    assert_eq!(files.requests().len(), 1);
    std::fs::write(files.path("days.ics"), ics("20260304")).unwrap();
    pass(24 * 3600).await; // the daily reload fetches again; 3 March is open now
    pass(24 * 3600).await; // 4 March: closed
    daemon.stop().await.unwrap();
    assert_eq!(files.requests().len(), 3, "{:?}", files.requests());
    assert!(record(&cfg, "daily", "2026-03-03T09:00:00Z").is_some());
    assert!(record(&cfg, "daily", "2026-03-04T09:00:00Z").is_none());
    assert_eq!(subjects(&server), ["daily 09:00", "daily 09:00"]);
}

#[tokio::test(start_paused = true)]
async fn catch_up_treats_rule_and_moved_occurrences_as_it_treats_cron_ones() {
    let pki = Pki::new();
    let server = ServerSpec::starttls(&pki).user("alice", PASSWORD).start();
    let msg =
        "to = [\"a@example.com\"]\nsubject = \"{{ job }} {{ date }} {{ time }}\"\nbody = \"b\"";
    let jobs = JobsToml::new()
        .job(&format!(
            "[[job]]\nname = \"rule-latest\"\nrrule = \"FREQ=HOURLY\"\nstart = \"2026-03-01T00:30\"\ncatch_up = \"latest\"\n{msg}"
        ))
        .job(&format!(
            "[[job]]\nname = \"rule-all\"\nrrule = \"FREQ=HOURLY\"\nstart = \"2026-03-01T00:30\"\ncatch_up = \"all\"\nmax_late = \"2h\"\n{msg}"
        ))
        // Saturday 7 March is omitted and moves to Monday the 9th, 09:00.
        .job(&format!(
            "[[job]]\nname = \"moved\"\nat = \"2026-03-07T09:00\"\nomit = [\"weekends\"]\non_omit = \"after\"\ncatch_up = \"latest\"\n{msg}"
        ));
    let cfg = config(&server, &pki, PASSWORD, "", jobs);
    // The last run handled 2 March 08:30; cronmail comes back at 12:40.
    {
        let state = cfg.dir.path().join("state");
        let l = cronmail::ledger::SqliteLedger::open_exclusive(&state).unwrap();
        for job in ["rule-latest", "rule-all"] {
            let key = Key::new(job, utc("2026-03-02T08:30:00Z"));
            l.claim(
                &[(key.clone(), format!("{job}@x"))],
                utc("2026-03-02T08:30:00Z"),
            )
            .unwrap();
            l.sent(&cronmail::ledger::Receipt::new(
                key.clone(),
                "250 ok",
                utc("2026-03-02T08:30:01Z"),
            ))
            .unwrap();
        }
    }
    let daemon = InProcess::start(&cfg, utc("2026-03-02T12:40:00Z"));
    pass(2).await;
    let mut got = subjects(&server);
    got.sort();
    // latest: only 12:30; all: what is within 2 h (10:40 on): 11:30 and 12:30.
    assert_eq!(
        got,
        [
            "rule-all 2026-03-02 11:30",
            "rule-all 2026-03-02 12:30",
            "rule-latest 2026-03-02 12:30"
        ]
    );
    // The one-shot time, moved off the weekend, is sent on the Monday.
    pass(7 * 86_400).await;
    daemon.stop().await.unwrap();
    assert!(
        subjects(&server).contains(&"moved 2026-03-09 09:00".to_owned()),
        "{:?}",
        subjects(&server)
    );
    assert!(record(&cfg, "moved", "2026-03-09T09:00:00Z").is_some_and(|r| r.state == State::Sent));
}
