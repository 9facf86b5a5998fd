//! Durable delivery with real processes, a real SMTP server, real `SQLite` and real
//! signals: outages, retries, auth holds, kill -9, catch-up, reload, `sd_notify`.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use chrono::{DateTime, Utc};
use cronmail::ledger::{Key, Ledger, State};

use crate::support::*;

const PASSWORD: &str = "s3cret-pw";

/// A jobs.toml with `[smtp]` for `port`, state in `state/`, short retries, and `jobs`.
fn smtp_config(port: u16, pki: &Pki, extra_smtp: &str, jobs: &str) -> ConfigDir {
    JobsToml::new()
        .top("timezone = \"UTC\"")
        .top("state_dir = \"state\"")
        .smtp(port, "starttls", Some(&pki.ca))
        .smtp_key("timeout = \"5s\"")
        .smtp_key(extra_smtp)
        .fast_retries()
        .job(jobs)
        .write()
}

/// One job, as text for `smtp_config`.
fn every(name: &str, schedule: &str, extra: &str) -> String {
    JobsToml::default().every(name, schedule, extra).text()
}

/// Every occurrence in the ledger; none before the daemon has created it (opening it
/// here first could race the daemon's schema migration).
fn records(cfg: &ConfigDir) -> Vec<cronmail::ledger::Record> {
    let state = cfg.dir.path().join("state");
    if !state.join("ledger.sqlite3").exists() {
        return Vec::new();
    }
    ledger(&state).history(None, 100_000).unwrap()
}

/// Asserts no Message-ID arrived twice, and returns the set.
#[track_caller]
fn unique_ids(server: &SmtpServer) -> HashSet<String> {
    let ids = received_ids(server);
    let set: HashSet<String> = ids.iter().cloned().collect();
    assert_eq!(set.len(), ids.len(), "a message arrived twice: {ids:?}");
    set
}

#[test]
fn server_down_then_up_delivers_each_occurrence_exactly_once() {
    let pki = Pki::new();
    let port = free_port();
    let cfg = smtp_config(
        port,
        &pki,
        "password_env = \"PW\"",
        &every("tick", "*/2 * * * * *", ""),
    );
    let daemon = Daemon::start(&cfg.path, &[("PW", PASSWORD)]);
    // Let a few occurrences fail against the closed port.
    daemon.wait_log("class=connect", 3, Duration::from_secs(20));
    let outage_end: DateTime<Utc> = Utc::now();
    let server = ServerSpec::starttls(&pki)
        .user("alice", PASSWORD)
        .set("port", port)
        .start();

    // Every occurrence scheduled during the outage gets delivered.
    let ok = wait_until(Duration::from_secs(30), || {
        let recs = records(&cfg);
        let outage: Vec<_> = recs
            .iter()
            .filter(|r| r.key.scheduled_at <= outage_end)
            .collect();
        !outage.is_empty() && outage.iter().all(|r| r.state == State::Sent)
    });
    assert!(
        ok,
        "outage occurrences not all sent: {:?}\n{}",
        records(&cfg),
        daemon.log_text()
    );
    assert!(daemon.stop().success());

    let ids = unique_ids(&server);
    let recs = records(&cfg);
    let outage: Vec<_> = recs
        .iter()
        .filter(|r| r.key.scheduled_at <= outage_end)
        .collect();
    for r in &recs {
        if r.state == State::Sent {
            assert!(ids.contains(&r.message_id), "sent but not received: {r:?}");
        }
    }
    assert!(outage.len() >= 2, "{outage:?}");
    assert!(
        outage.iter().all(|r| r.attempts >= 2),
        "outage occurrences should have been retried: {outage:?}"
    );
    eprintln!(
        "outage: {} occurrences during the outage, {} attempts in all, all delivered once",
        outage.len(),
        outage.iter().map(|r| r.attempts).sum::<u32>()
    );
}

#[test]
fn a_451_at_data_is_retried_and_delivered_once_a_550_at_rcpt_is_not_retried() {
    let pki = Pki::new();
    let server = ServerSpec::starttls(&pki)
        .user("alice", PASSWORD)
        .set(
            "data_replies",
            vec!["451 4.3.0 Mail server temporarily rejected message"],
        )
        .start();
    let cfg = smtp_config(
        server.port,
        &pki,
        "password_env = \"PW\"",
        &every("tick", "*/3 * * * * *", ""),
    );
    let daemon = Daemon::start(&cfg.path, &[("PW", PASSWORD)]);
    let ok = wait_until(Duration::from_secs(20), || {
        records(&cfg)
            .iter()
            .filter(|r| r.state == State::Sent)
            .count()
            >= 2
    });
    assert!(ok, "{}", daemon.log_text());
    assert!(daemon.stop().success());
    unique_ids(&server);
    let mut recs = records(&cfg);
    recs.sort_by_key(|r| r.key.scheduled_at);
    assert_eq!(recs[0].state, State::Sent);
    assert_eq!(
        recs[0].attempts, 2,
        "the first occurrence met the 451 once: {:?}",
        recs[0]
    );
    assert_eq!(recs[0].last_error_class.as_deref(), Some("transient"));

    // 550 at RCPT: failed at once, never retried, one ERROR line per occurrence.
    let server = ServerSpec::starttls(&pki)
        .user("alice", PASSWORD)
        .set("rcpt_reply", "550 5.1.1 No such user")
        .start();
    let cfg = smtp_config(
        server.port,
        &pki,
        "password_env = \"PW\"",
        &every("tick", "*/2 * * * * *", ""),
    );
    let daemon = Daemon::start(&cfg.path, &[("PW", PASSWORD)]);
    daemon.wait_log("class=permanent", 2, Duration::from_secs(20));
    // Long enough for a retry to have happened, were there one (retry_min is 1 s).
    std::thread::sleep(Duration::from_millis(2500));
    assert!(daemon.stop().success());
    let recs = records(&cfg);
    let failed: Vec<_> = recs.iter().filter(|r| r.state == State::Failed).collect();
    assert!(failed.len() >= 2);
    assert!(failed.iter().all(|r| r.attempts == 1), "{failed:?}");
    let rcpts = server.commands().iter().filter(|c| *c == "RCPT").count();
    let attempts: u32 = recs.iter().map(|r| r.attempts).sum();
    assert_eq!(rcpts, attempts as usize, "a RCPT per attempt, no retries");
    assert!(server.messages().is_empty());
}

#[test]
fn wrong_password_holds_sends_then_a_reload_with_the_right_one_delivers_them() {
    let pki = Pki::new();
    let server = ServerSpec::starttls(&pki).user("alice", PASSWORD).start();
    let dir_probe = ConfigDir::new("");
    let pw = dir_probe.dir.path().join("pw");
    std::fs::write(&pw, "wrong\n").unwrap();
    let cfg = smtp_config(
        server.port,
        &pki,
        &format!("password_file = \"{}\"", pw.display()),
        // A long hold, so only the reload can release it within the test.
        &every("tick", "*/2 * * * * *", ""),
    );
    let text = std::fs::read_to_string(&cfg.path).unwrap().replace(
        "retry_min = \"1s\"\nretry_max = \"2s\"",
        "retry_min = \"5m\"\nretry_max = \"10m\"",
    );
    std::fs::write(&cfg.path, text).unwrap();

    let daemon = Daemon::start(&cfg.path, &[]);
    daemon.wait_log("class=auth", 1, Duration::from_secs(15));
    // Later occurrences are held, not tried: one ERROR each, no login storm.
    daemon.wait_log("held: sends are paused", 2, Duration::from_secs(15));
    let auth_before = server.commands().iter().filter(|c| *c == "AUTH").count();
    assert_eq!(auth_before, 1, "one failed login, then a hold");
    assert!(daemon.log_text().contains("App Password") || daemon.log_text().contains("hint="));

    // What is held now (read before the reload: released sends go out at once).
    let held: Vec<Key> = records(&cfg)
        .into_iter()
        .filter(|r| r.state != State::Sent)
        .map(|r| r.key)
        .collect();
    assert!(held.len() >= 3, "{held:?}");
    std::fs::write(&pw, format!("{PASSWORD}\n")).unwrap();
    daemon.signal(libc_sighup());
    daemon.wait_log("configuration reloaded", 1, Duration::from_secs(10));
    let ok = wait_until(Duration::from_secs(20), || {
        let recs: HashMap<Key, State> = records(&cfg)
            .into_iter()
            .map(|r| (r.key, r.state))
            .collect();
        held.iter().all(|k| recs.get(k) == Some(&State::Sent))
    });
    assert!(
        ok,
        "held occurrences not delivered after the reload:\n{}",
        daemon.log_text()
    );
    assert!(daemon.stop().success());
    unique_ids(&server);
}

#[test]
fn kill_9_twenty_times_loses_nothing() {
    let pki = Pki::new();
    let server = ServerSpec::starttls(&pki).user("alice", PASSWORD).start();
    let jobs = every("tick", "* * * * * *", "catch_up = \"all\"");
    let cfg = smtp_config(server.port, &pki, "password_env = \"PW\"", &jobs);
    let started = Utc::now();
    let mut rng_state = 0x2545_f491_4f6c_dd1d_u64;
    let mut next_rand = move || {
        rng_state ^= rng_state << 13;
        rng_state ^= rng_state >> 7;
        rng_state ^= rng_state << 17;
        rng_state
    };
    let kills = 20;
    // When the first run that got as far as starting started: on a loaded machine the
    // first runs may be killed before that, and then there is nothing to catch up.
    let mut first_start: Option<chrono::DateTime<Utc>> = None;
    for _ in 0..kills {
        let daemon = Daemon::start(&cfg.path, &[("PW", PASSWORD)]);
        // A random moment between 0.2 s and 2.2 s into the run.
        std::thread::sleep(Duration::from_millis(200 + next_rand() % 2000));
        let log = daemon.log.clone();
        daemon.kill9();
        if first_start.is_none() {
            first_start = std::fs::read_to_string(&log)
                .unwrap_or_default()
                .lines()
                .find(|l| l.contains("cronmail started"))
                .and_then(|l| l.split_whitespace().next())
                .and_then(|t| t.parse().ok());
        }
    }
    let started = first_start.unwrap_or(started);
    // A last run catches up; then the job is disabled so the queue can drain.
    let daemon = Daemon::start(&cfg.path, &[("PW", PASSWORD)]);
    daemon.wait_log("sent", 3, Duration::from_secs(20));
    let last_fire = Utc::now();
    std::fs::write(
        &cfg.path,
        std::fs::read_to_string(&cfg.path)
            .unwrap()
            .replace("catch_up = \"all\"", "catch_up = \"all\"\nenabled = false"),
    )
    .unwrap();
    daemon.signal(libc_sighup());
    daemon.wait_log("configuration reloaded", 1, Duration::from_secs(10));
    let drained = wait_until(Duration::from_secs(30), || {
        records(&cfg).iter().all(|r| r.state == State::Sent)
    });
    assert!(
        drained,
        "{:?}",
        records(&cfg)
            .iter()
            .filter(|r| r.state != State::Sent)
            .collect::<Vec<_>>()
    );
    assert!(daemon.stop().success());

    // Every second from the first occurrence to the last is in the ledger, sent.
    let mut recs = records(&cfg);
    recs.sort_by_key(|r| r.key.scheduled_at);
    let first = recs.first().unwrap().key.scheduled_at;
    let last = recs.last().unwrap().key.scheduled_at;
    assert!(
        first <= started + chrono::Duration::seconds(2),
        "{first} vs {started}"
    );
    assert!(last >= last_fire - chrono::Duration::seconds(2));
    let expected = usize::try_from((last - first).num_seconds() + 1).unwrap();
    assert_eq!(
        recs.len(),
        expected,
        "an occurrence is missing from the window {first}..{last}"
    );
    assert!(recs.iter().all(|r| r.state == State::Sent));

    // Each was received; duplicates (the post-DATA window) are counted and reported.
    let ids = received_ids(&server);
    let distinct: HashSet<&String> = ids.iter().collect();
    for r in &recs {
        assert!(distinct.contains(&r.message_id), "never received: {r:?}");
    }
    let duplicates = ids.len() - distinct.len();
    // Every duplicate is a resend of an attempt that was interrupted after the server
    // had taken the message (the post-DATA window): its ledger row has 2+ attempts.
    let mut seen = HashSet::new();
    for dup in ids.iter().filter(|i| !seen.insert(*i)) {
        let r = recs.iter().find(|r| &r.message_id == dup).unwrap();
        assert!(
            r.attempts >= 2,
            "a duplicate outside the post-DATA window: {r:?}"
        );
    }
    let resent = recs.iter().filter(|r| r.attempts > 1).count();
    eprintln!(
        "kill test: {kills} kill -9, {} occurrences over {} s, all delivered; {} messages received, {duplicates} duplicate(s) by Message-ID; {resent} occurrence(s) needed more than one attempt",
        recs.len(),
        (last - first).num_seconds() + 1,
        ids.len()
    );
    // A duplicate is only possible when the kill fell between the server's reply to
    // DATA and the ledger's commit: at most one per kill.
    assert!(
        duplicates <= kills,
        "{duplicates} duplicates for {kills} kills"
    );
}

#[test]
fn catch_up_policies_after_downtime_do_what_they_say() {
    // The ledger says each job last ran ten minutes ago: cronmail was down since.
    let cfg = ConfigDir::new(&format!(
        "from = \"bot@example.com\"\ntimezone = \"UTC\"\nstate_dir = \"state\"\n[outbox]\n{}{}{}{}",
        every("skip", "* * * * *", "catch_up = \"skip\""),
        every("latest", "* * * * *", "catch_up = \"latest\""),
        every("all", "* * * * *", "catch_up = \"all\""),
        every(
            "recent",
            "* * * * *",
            "catch_up = \"all\"\nmax_late = \"5m\""
        ),
    ));
    // Stay clear of a minute boundary between here and the daemon's start-up.
    if Utc::now().timestamp() % 60 > 45 {
        std::thread::sleep(Duration::from_secs(
            u64::try_from(61 - Utc::now().timestamp() % 60).unwrap(),
        ));
    }
    let state = cfg.dir.path().join("state");
    std::fs::create_dir_all(&state).unwrap();
    let now = Utc::now();
    let minute = DateTime::from_timestamp(now.timestamp() / 60 * 60, 0).unwrap();
    let last = minute - chrono::Duration::minutes(10);
    {
        let l = ledger(&state);
        for job in ["skip", "latest", "all", "recent"] {
            let key = Key {
                job: job.into(),
                scheduled_at: last,
            };
            l.claim(&[(key.clone(), format!("{job}.x@example.com"))], last)
                .unwrap();
            l.start_attempt(&key, last).unwrap();
            l.sent(&cronmail::ledger::Receipt::new(key.clone(), "250 ok", last))
                .unwrap();
        }
    }
    let daemon = Daemon::start(&cfg.path, &[]);
    // skip and latest send the newest (on time, under a minute late); all sends the
    // ten; recent (max_late 5m) the last five. Each skipped stretch is one line.
    daemon.wait_log("INFO sent", 1 + 1 + 10 + 5, Duration::from_secs(20));
    daemon.wait_log("occurrences of `", 3, Duration::from_secs(20));
    let log = daemon.log_text();
    assert!(daemon.stop().success());

    let recs = records(&cfg);
    let missed = |job: &str| -> Vec<&cronmail::ledger::Record> {
        let mut v: Vec<_> = recs
            .iter()
            .filter(|r| {
                *r.key.job == *job && r.key.scheduled_at > last && r.key.scheduled_at <= minute
            })
            .collect();
        v.sort_by_key(|r| r.key.scheduled_at);
        v
    };
    let states = |job: &str| -> Vec<State> { missed(job).iter().map(|r| r.state).collect() };
    // One row per skipped stretch (at its newest instant), one per send.
    assert_eq!(states("skip"), [State::Skipped, State::Sent]);
    assert_eq!(states("latest"), [State::Skipped, State::Sent]);
    assert_eq!(states("all"), [State::Sent; 10]);
    assert_eq!(
        states("recent")[0],
        State::Skipped,
        "{:?}",
        missed("recent")
    );
    assert!(states("recent")[1..].iter().all(|s| *s == State::Sent));
    assert!(log.contains("skipped 9 occurrences of `skip`"), "{log}");
    assert!(log.contains("(catch_up = skip)"), "{log}");
    assert!(log.contains("skipped 9 occurrences of `latest`"), "{log}");
    assert!(log.contains("occurrences of `recent`"), "{log}");
    assert!(!log.contains("occurrences of `all`"), "{log}");
    let files = std::fs::read_dir(cfg.dir.path().join("outbox"))
        .unwrap()
        .count();
    assert_eq!(
        files,
        recs.iter()
            .filter(|r| r.state == State::Sent && r.key.scheduled_at > last)
            .count()
    );
}

#[test]
fn a_broken_reload_keeps_the_old_jobs_a_good_one_swaps_them() {
    let cfg = ConfigDir::new(&format!(
        "from = \"bot@example.com\"\ntimezone = \"UTC\"\nstate_dir = \"state\"\n[outbox]\n{}",
        every("old", "* * * * * *", "")
    ));
    let daemon = Daemon::start(&cfg.path, &[]);
    daemon.wait_log("job=old", 2, Duration::from_secs(10));
    let good = std::fs::read_to_string(&cfg.path).unwrap();

    std::fs::write(
        &cfg.path,
        format!("{good}\n[[job]]\nname = \"broken\"\nschedule = \"61 * * * *\"\n"),
    )
    .unwrap();
    daemon.signal(libc_sighup());
    daemon.wait_log("reload refused", 1, Duration::from_secs(10));
    let sent_old = daemon.log_text().matches("INFO sent").count();
    daemon.wait_log("INFO sent", sent_old + 2, Duration::from_secs(10));

    std::fs::write(&cfg.path, good.replace("name = \"old\"", "name = \"new\"")).unwrap();
    daemon.signal(libc_sighup());
    daemon.wait_log("configuration reloaded", 1, Duration::from_secs(10));
    daemon.wait_log("job=new", 2, Duration::from_secs(10));
    let reloaded_at = Utc::now();
    std::thread::sleep(Duration::from_millis(1500));
    assert!(daemon.stop().success());
    let recs = records(&cfg);
    assert!(
        recs.iter()
            .filter(|r| &*r.key.job == "old")
            .all(|r| r.key.scheduled_at <= reloaded_at),
        "the removed job kept firing"
    );
    assert!(recs.iter().filter(|r| &*r.key.job == "new").count() >= 2);
}

#[test]
fn a_second_daemon_on_the_same_state_dir_refuses_to_start() {
    let cfg = ConfigDir::new(&format!(
        "from = \"bot@example.com\"\ntimezone = \"UTC\"\nstate_dir = \"state\"\n[outbox]\n{}",
        every("a", "0 0 1 1 *", "")
    ));
    let first = Daemon::start(&cfg.path, &[]);
    first.wait_log("cronmail started", 1, Duration::from_secs(10));
    let second = cronmail(&cfg.path, &["run"], &[]);
    assert_eq!(second.status.code(), Some(75), "{}", stderr(&second));
    assert!(
        stderr(&second).contains("another `cronmail run` is using the state directory"),
        "{}",
        stderr(&second)
    );
    assert!(first.stop().success());
}

#[test]
fn sd_notify_sees_ready_reloading_ready_stopping_in_order() {
    use std::os::unix::net::UnixDatagram;
    let cfg = ConfigDir::new(&format!(
        "from = \"bot@example.com\"\ntimezone = \"UTC\"\nstate_dir = \"state\"\n[outbox]\n{}",
        every("a", "0 0 1 1 *", "")
    ));
    let sock_path = cfg.dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let daemon = Daemon::start(&cfg.path, &[("NOTIFY_SOCKET", sock_path.to_str().unwrap())]);
    let mut messages = Vec::new();
    let mut recv = |until: &str| {
        let mut buf = [0u8; 4096];
        loop {
            let n = sock.recv(&mut buf).expect("no sd_notify message in time");
            let m = String::from_utf8_lossy(&buf[..n]).to_string();
            let done = m.contains(until);
            messages.push(m);
            if done {
                break;
            }
        }
    };
    recv("READY=1");
    daemon.signal(libc_sighup());
    recv("RELOADING=1");
    recv("READY=1");
    daemon.signal(libc_sigterm());
    recv("STOPPING=1");
    assert!(daemon.wait().success());
    let joined = messages.join("|");
    let ready = joined.find("READY=1").unwrap();
    let reloading = joined.find("RELOADING=1").unwrap();
    let ready2 = joined[reloading..].find("READY=1").unwrap() + reloading;
    let stopping = joined.find("STOPPING=1").unwrap();
    assert!(
        ready < reloading && reloading < ready2 && ready2 < stopping,
        "{joined}"
    );
    assert!(
        messages
            .iter()
            .any(|m| m.contains("RELOADING=1") && m.contains("MONOTONIC_USEC=")),
        "{joined}"
    );
    assert!(joined.contains("STATUS=next: a at"), "{joined}");
}

#[test]
fn a_burst_reuses_at_most_max_connections_connections() {
    let pki = Pki::new();
    let server = ServerSpec::starttls(&pki).user("alice", PASSWORD).start();
    let at = Utc::now() + chrono::Duration::seconds(3);
    let schedule = format!(
        "{} {} {} * * *",
        at.format("%-S"),
        at.format("%-M"),
        at.format("%-H")
    );
    let jobs: String = (0..20)
        .map(|i| every(&format!("j{i}"), &schedule, ""))
        .collect();
    let cfg = smtp_config(server.port, &pki, "password_env = \"PW\"", &jobs);
    let text = std::fs::read_to_string(&cfg.path)
        .unwrap()
        .replace("[delivery]\n", "[delivery]\nmax_connections = 2\n");
    std::fs::write(&cfg.path, text).unwrap();
    let daemon = Daemon::start(&cfg.path, &[("PW", PASSWORD)]);
    daemon.wait_log(" sent", 20, Duration::from_secs(20));
    assert!(daemon.stop().success());
    assert_eq!(unique_ids(&server).len(), 20);
    let connections = server
        .commands()
        .iter()
        .filter(|c| *c == "STARTTLS")
        .count();
    let logins = server.commands().iter().filter(|c| *c == "AUTH").count();
    assert!(
        (1..=2).contains(&connections),
        "20 messages over {connections} connections (max_connections = 2)"
    );
    assert_eq!(logins, connections, "one login per connection");
}

#[test]
fn a_kept_connection_the_server_closed_is_replaced_without_a_failure() {
    let pki = Pki::new();
    // The server hangs up after 1 s of silence; cronmail keeps connections 5 s.
    let server = ServerSpec::starttls(&pki)
        .user("alice", PASSWORD)
        .set("idle_timeout", 1)
        .start();
    let cfg = smtp_config(
        server.port,
        &pki,
        "password_env = \"PW\"",
        &every("tick", "*/2 * * * * *", ""),
    );
    let daemon = Daemon::start(&cfg.path, &[("PW", PASSWORD)]);
    daemon.wait_log(" sent", 3, Duration::from_secs(20));
    let log_path = daemon.log.clone();
    assert!(daemon.stop().success());
    let log = std::fs::read_to_string(log_path).unwrap_or_default();
    assert!(!log.contains("not sent"), "{log}");
    let connections = server
        .commands()
        .iter()
        .filter(|c| *c == "STARTTLS")
        .count();
    assert!(
        connections >= 3,
        "each send found the kept connection closed: {connections}"
    );
    unique_ids(&server);
}
