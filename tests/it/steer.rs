//! `cronmail skip`, `pause`, `resume` and `trigger` on a running daemon (a real
//! process): each order is seen within seconds, without a restart, recorded in the
//! ledger, and loses nothing that was not meant to be skipped; with `PostgreSQL`,
//! every node honours it.

use std::time::Duration;

use cronmail::ledger::{Ledger as _, State};

use crate::support::*;

const WAIT: Duration = Duration::from_secs(20);

fn steer_config() -> ConfigDir {
    JobsToml::new()
        .top("state_dir = \"state\"")
        .top("timezone = \"UTC\"")
        .outbox()
        .every("tick", "* * * * * *", "")
        .every("daily", "0 9 * * *", "")
        .write()
}

fn records(cfg: &ConfigDir, job: &str) -> Vec<cronmail::ledger::Record> {
    ledger(&cfg.dir.path().join("state"))
        .history(Some(job), 100_000)
        .unwrap()
}

/// How many of `job`'s occurrences the ledger has as sent.
fn sent(cfg: &ConfigDir, job: &str) -> usize {
    records(cfg, job)
        .iter()
        .filter(|r| r.state == State::Sent)
        .count()
}

#[track_caller]
fn ok(cfg: &ConfigDir, args: &[&str]) -> String {
    let out = cronmail(&cfg.path, args, &[]);
    assert!(out.status.success(), "{args:?}: {}", stderr(&out));
    stdout(&out)
}

#[test]
fn pause_and_resume_a_running_daemon_without_a_restart_every_occurrence_recorded() {
    let cfg = steer_config();
    let daemon = Daemon::start(&cfg.path, &[]);
    daemon.wait_log("INFO sent", 2, WAIT);
    assert!(ok(&cfg, &["pause", "tick"]).contains("paused until `cronmail resume tick`"));
    daemon.wait_log("paused by hand", 2, WAIT);
    assert!(ok(&cfg, &["status"]).contains("paused:       until `cronmail resume tick`"));
    let status: serde_json::Value = serde_json::from_str(&ok(&cfg, &["status", "--json"])).unwrap();
    let tick = status
        .as_array()
        .unwrap()
        .iter()
        .find(|j| j["job"] == "tick")
        .unwrap();
    assert_eq!(tick["paused"], serde_json::json!({"until": null}));
    assert!(ok(&cfg, &["resume", "tick"]).contains("resumed"));
    let sent_before = daemon.log_text().matches("INFO sent").count();
    daemon.wait_log("INFO sent", sent_before + 2, WAIT);
    daemon.stop();
    // Every second from the first to the last is in the ledger: sent, or skipped by the
    // pause; none lost, none sent during the pause.
    let mut recs = records(&cfg, "tick");
    recs.sort_by_key(|r| r.key.scheduled_at);
    for pair in recs.windows(2) {
        assert_eq!(
            (pair[1].key.scheduled_at - pair[0].key.scheduled_at).num_seconds(),
            1,
            "a second is missing"
        );
    }
    let paused: Vec<_> = recs.iter().filter(|r| r.state == State::Skipped).collect();
    assert!(paused.len() >= 2, "{recs:?}");
    assert!(
        paused
            .iter()
            .all(|r| r.final_reply.as_deref() == Some("paused by hand (cronmail resume ends it)"))
    );
    let files = std::fs::read_dir(cfg.dir.path().join("outbox"))
        .unwrap()
        .count();
    assert_eq!(
        files,
        recs.iter().filter(|r| r.state == State::Sent).count()
    );
    assert!(ok(&cfg, &["resume", "tick"]).contains("is not paused"));
}

#[test]
fn skip_the_next_occurrence_and_trigger_one_now_each_recorded_with_its_own_message_id() {
    let cfg = steer_config();
    // Before any daemon ran: the orders wait in the ledger.
    let said = ok(&cfg, &["skip", "daily"]);
    assert!(
        said.contains("will not be sent (skipped by hand)"),
        "{said}"
    );
    let first = said
        .split(" at ")
        .nth(1)
        .unwrap()
        .split(' ')
        .next()
        .unwrap()
        .to_owned();
    let said = ok(&cfg, &["skip", "daily", "--next"]);
    assert!(
        !said.contains(&first),
        "--next passes over the one already skipped: {said}"
    );
    let agenda: serde_json::Value = serde_json::from_str(&ok(
        &cfg,
        &["agenda", "--job", "daily", "--json", "--past", "0"],
    ))
    .unwrap();
    let held: Vec<&serde_json::Value> = agenda["days"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|d| d["items"].as_array().unwrap())
        .filter(|i| i["state"] == "held")
        .collect();
    assert_eq!(held.len(), 2, "{agenda}");
    let daemon = Daemon::start(&cfg.path, &[]);
    daemon.wait_log("INFO sent", 1, WAIT);
    ok(&cfg, &["trigger", "daily"]);
    daemon.wait_log("job=daily", 2, WAIT);
    ok(&cfg, &["trigger", "daily"]);
    let ok_twice = wait_until(WAIT, || sent(&cfg, "daily") == 2);
    daemon.stop();
    assert!(ok_twice, "{:?}", records(&cfg, "daily"));
    let both: Vec<_> = records(&cfg, "daily")
        .into_iter()
        .filter(|r| r.state == State::Sent)
        .collect();
    assert_ne!(both[0].message_id, both[1].message_id);
    let files: Vec<String> = std::fs::read_dir(cfg.dir.path().join("outbox"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("daily."))
        .collect();
    assert_eq!(files.len(), 2, "{files:?}");
    // A restart does not send the triggers again.
    let daemon = Daemon::start(&cfg.path, &[]);
    daemon.wait_log("INFO sent", 1, WAIT);
    daemon.stop();
    assert_eq!(sent(&cfg, "daily"), 2);
}

/// The instant `trigger` says it queued.
fn queued_at(said: &str) -> String {
    said.split(" at ")
        .nth(1)
        .unwrap()
        .split(' ')
        .next()
        .unwrap()
        .to_owned()
}

#[test]
fn two_triggers_in_one_second_are_two_occurrences_both_sent() {
    let cfg = steer_config();
    let first = ok(&cfg, &["trigger", "daily"]);
    let second = ok(&cfg, &["trigger", "daily"]);
    // Each takes a second of its own (the second one, the next free second).
    assert_ne!(queued_at(&first), queued_at(&second), "{first}\n{second}");
    let daemon = Daemon::start(&cfg.path, &[]);
    let sent_twice = wait_until(WAIT, || sent(&cfg, "daily") == 2);
    daemon.stop();
    assert!(sent_twice, "{:?}", records(&cfg, "daily"));
}

#[test]
fn an_idle_daemon_reads_an_order_as_soon_as_it_is_written() {
    // Nothing due for hours: the daemon only sleeps, and the orders it reads are the ones
    // its watch of the state folder tells it of (it would otherwise look every 5 minutes).
    let cfg = JobsToml::new()
        .top("state_dir = \"state\"")
        .top("timezone = \"UTC\"")
        .outbox()
        .every("daily", "0 9 1 1 *", "")
        .write();
    let daemon = Daemon::start(&cfg.path, &[]);
    daemon.wait_log("cronmail started", 1, WAIT);
    for n in 1..=2 {
        ok(&cfg, &["trigger", "daily"]);
        let done = wait_until(Duration::from_secs(10), || sent(&cfg, "daily") == n);
        assert!(done, "trigger {n}: {}", daemon.log_text());
    }
    ok(&cfg, &["pause", "daily"]);
    daemon.wait_log("paused (cronmail pause)", 1, Duration::from_secs(10));
    daemon.stop();
}

#[test]
fn orders_for_what_does_not_exist_or_cannot_be_skipped_are_usage_errors() {
    let cfg = steer_config();
    for args in [
        &["skip", "nope"][..],
        &["pause", "nope"],
        &["resume", "nope"],
        &["trigger", "nope"],
    ] {
        let out = cronmail(&cfg.path, args, &[]);
        assert_eq!(out.status.code(), Some(64), "{args:?}");
        assert!(
            stderr(&out).contains("jobs: tick, daily"),
            "{}",
            stderr(&out)
        );
    }
    let out = cronmail(
        &cfg.path,
        &["skip", "daily", "--at", "2030-01-01T09:30:00Z"],
        &[],
    );
    assert_eq!(out.status.code(), Some(64));
    assert!(
        stderr(&out).contains("is not an occurrence of `daily` (the next is 2030-01-02T09:00:00Z)"),
        "{}",
        stderr(&out)
    );
    let out = cronmail(
        &cfg.path,
        &["pause", "tick", "--until", "2020-01-01T00:00:00Z"],
        &[],
    );
    assert_eq!(out.status.code(), Some(64));
    assert!(stderr(&out).contains("is in the past"), "{}", stderr(&out));
    // An occurrence already sent cannot be skipped.
    let daemon = Daemon::start(&cfg.path, &[]);
    daemon.wait_log("INFO sent", 1, WAIT);
    daemon.stop();
    let sent = records(&cfg, "tick")
        .into_iter()
        .find(|r| r.state == State::Sent)
        .unwrap();
    let at = sent
        .key
        .scheduled_at
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let out = cronmail(&cfg.path, &["skip", "tick", "--at", &at], &[]);
    assert_eq!(out.status.code(), Some(64));
    assert!(stderr(&out).contains("is already sent"), "{}", stderr(&out));
}

#[test]
fn with_postgresql_every_node_honours_a_pause() {
    let pki = Pki::new();
    let pg = PgServer::start(Some(&pki));
    let cfg = JobsToml::new()
        .top("timezone = \"UTC\"")
        .top("state_dir = \"state\"")
        .outbox()
        .section(&format!(
            "[ledger]\nurl = \"{}\"\nlease = \"8s\"\npoll = \"1s\"\nca_file = \"{}\"",
            pg.url(),
            pki.ca.display()
        ))
        .every("tick", "* * * * * *", "")
        .write();
    let a = Daemon::start(&cfg.path, &[("CRONMAIL_NODE", "a")]);
    let b = Daemon::start(&cfg.path, &[("CRONMAIL_NODE", "b")]);
    a.wait_log("cronmail started", 1, WAIT);
    b.wait_log("cronmail started", 1, WAIT);
    ok(&cfg, &["pause", "tick"]);
    a.wait_log("paused (cronmail pause)", 1, WAIT);
    b.wait_log("paused (cronmail pause)", 1, WAIT);
    // Once both have seen it, no node sends: three seconds in a row skipped.
    let since = chrono::Utc::now() + chrono::Duration::seconds(1);
    let skipped = wait_until(WAIT, || {
        let rows: Vec<(chrono::DateTime<chrono::Utc>, String)> = pg
            .client()
            .query("SELECT scheduled_at, state FROM cronmail_occurrences WHERE scheduled_at > $1 ORDER BY scheduled_at", &[&since])
            .unwrap_or_default()
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect();
        rows.len() >= 3 && rows.iter().all(|(_, s)| s == "skipped")
    });
    a.stop();
    b.stop();
    assert!(skipped, "{}", pg.log());
}

#[test]
fn the_status_page_shows_what_a_pause_holds_back() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let cfg = JobsToml::new()
        .top("state_dir = \"state\"")
        .top("timezone = \"UTC\"")
        .outbox()
        .section(&format!("[http]\nlisten = \"127.0.0.1:{port}\""))
        .every("daily", "0 9 * * *", "")
        .write();
    let daemon = Daemon::start(&cfg.path, &[]);
    daemon.wait_log("serving the status page", 1, WAIT);
    ok(&cfg, &["pause", "daily"]);
    daemon.wait_log("paused (cronmail pause)", 1, WAIT);
    let page = wait_until(WAIT, || {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        std::io::Write::write_all(
            &mut s,
            b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        )
        .unwrap();
        let mut out = String::new();
        std::io::Read::read_to_string(&mut s, &mut out).unwrap();
        out.matches("held: paused by hand").count() >= 6
    });
    daemon.stop();
    assert!(
        page,
        "the week's occurrences are shown as held by the pause"
    );
}
