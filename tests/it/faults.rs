//! Faults found by trying cronmail hard (issue "faults"): each test here failed before
//! its fix.

use std::time::Duration;

use cronmail::ledger::Ledger as _;

use crate::support::*;

const QUICK: Duration = Duration::from_secs(20);

/// `check` and `run` on a jobs.toml that points at something that is not a file.
#[track_caller]
fn refused(cfg: &ConfigDir, expected: &str) {
    for cmd in ["check", "run"] {
        let out = cronmail_within(&cfg.path, &[cmd], &[], QUICK);
        assert_eq!(out.status.code(), Some(78), "{cmd}: {}", stderr(&out));
        let err = stderr(&out);
        assert!(err.contains(expected), "{cmd}: {err}");
    }
}

#[test]
fn a_fifo_or_a_device_where_a_file_belongs_is_an_error_not_a_hang() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("pipe");
    mkfifo(&fifo);
    let fifo = fifo.display().to_string();

    for (key, value, what) in [
        (
            "body_file",
            "/dev/zero",
            "`/dev/zero` is a character device, not a regular file",
        ),
        (
            "body_file",
            fifo.as_str(),
            "is a FIFO (named pipe), not a regular file",
        ),
        (
            "html_file",
            fifo.as_str(),
            "is a FIFO (named pipe), not a regular file",
        ),
    ] {
        let body = if key == "body_file" {
            ""
        } else {
            "body = \"b\"\n"
        };
        let cfg = JobsToml::new()
            .outbox()
            .job(&format!(
                "[[job]]\nname = \"j\"\nschedule = \"@daily\"\nto = [\"a@example.com\"]\nsubject = \"s\"\n{body}{key} = \"{value}\""
            ))
            .write();
        refused(&cfg, what);
        let out = cronmail(&cfg.path, &["check"], &[]);
        assert!(
            stderr(&out).contains("jobs.toml:"),
            "no place: {}",
            stderr(&out)
        );
    }

    let cfg = smtp_for(2525, "starttls", Some(std::path::Path::new("/dev/zero")))
        .job(JOB)
        .write();
    refused(&cfg, "`ca_file`: `/dev/zero` is a character device");

    let cfg = JobsToml::new()
        .smtp(2525, "starttls", None)
        .smtp_key(&format!("password_file = \"{fifo}\""))
        .job(JOB)
        .write();
    let out = cronmail_within(&cfg.path, &["check"], &[], QUICK);
    assert_eq!(out.status.code(), Some(78), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("is a FIFO (named pipe), not a regular file"),
        "{}",
        stderr(&out)
    );

    // jobs.toml itself.
    let out = cronmail_within(std::path::Path::new(&fifo), &["check"], &[], QUICK);
    assert_eq!(out.status.code(), Some(78), "{}", stderr(&out));
    assert!(stderr(&out).contains("FIFO"), "{}", stderr(&out));
}

#[test]
fn a_password_command_that_never_stops_printing_is_cut_off() {
    let cfg = JobsToml::new()
        .smtp(2525, "starttls", None)
        .smtp_key("password_command = [\"cat\", \"/dev/zero\"]")
        .job(JOB)
        .write();
    let out = cronmail_within(&cfg.path, &["check"], &[], QUICK);
    assert_eq!(out.status.code(), Some(78), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("printed more than 65,536 bytes"),
        "{}",
        stderr(&out)
    );
}

/// The exact bytes the server received for each body, against `prepare` (what
/// `render` prints and the outbox writes).
#[tokio::test]
async fn smtp_carries_exactly_the_bytes_render_prints() {
    let pki = Pki::new();
    let server = ServerSpec::starttls(&pki).user("alice", "pw").start();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("crlf.txt"), "one\r\ntwo\r\n").unwrap();
    let bodies = [
        ("plain", "body = \"two words\""),
        ("newline", "body = \"two words\\n\""),
        ("dot", "body = \"before\\n.\\n..two\\nafter\""),
        ("crlf", "body_file = \"crlf.txt\""),
    ];
    let mut jobs = JobsToml::new()
        .top("timezone = \"UTC\"")
        .smtp(server.port, "starttls", Some(&pki.ca))
        .smtp_key("password_file = \"pw\"");
    for (name, body) in bodies {
        jobs = jobs.job(&format!(
            "[[job]]\nname = \"{name}\"\nschedule = \"@daily\"\nto = [\"a@example.com\"]\nsubject = \"s\"\n{body}"
        ));
    }
    std::fs::write(dir.path().join("jobs.toml"), jobs.text()).unwrap();
    std::fs::write(dir.path().join("pw"), "pw").unwrap();
    let at = chrono::DateTime::from_timestamp(1_800_000_000, 0).unwrap();
    let cfg = cronmail::config::load(
        &dir.path().join("jobs.toml"),
        &cronmail::config::Host::fixed(at),
    )
    .unwrap();
    let password = Some(secrecy::SecretString::from("pw"));
    let mailer = cronmail::Mailer::new(&cfg.accounts[0].transport, password, 1).unwrap();
    for (i, (name, _)) in bodies.iter().enumerate() {
        let job = cfg.job(name).unwrap();
        let out = cronmail::prepare(&cfg, job, at, at, None, None).unwrap();
        mailer.send(&out).await.unwrap();
        let got = server.messages()[i].data.clone();
        assert_eq!(got.as_bytes(), &out.bytes[..], "{name}");
        assert!(
            got.ends_with("\r\n"),
            "{name}: the message must end with CRLF"
        );
    }
    mailer.close().await;
}

#[test]
fn a_stall_after_the_message_is_a_timeout_in_data_that_says_the_server_may_have_it() {
    let pki = Pki::new();
    let server = ServerSpec::starttls(&pki)
        .user("alice", "pw")
        .set("data_sleep", 6)
        .start();
    let cfg = JobsToml::new()
        .smtp(server.port, "starttls", Some(&pki.ca))
        .smtp_key("password_env = \"PW\"")
        .smtp_key("timeout = \"2s\"")
        .job(JOB)
        .write();
    let out = cronmail_within(&cfg.path, &["send", "weekly"], &[("PW", "pw")], QUICK);
    assert_eq!(out.status.code(), Some(75), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("DATA failed (timeout)"), "{err}");
    assert!(err.contains("phase=\"DATA\""), "{err}");
    assert!(err.contains("may or may not have accepted it"), "{err}");
    assert!(err.contains("same Message-ID"), "{err}");
    assert!(!err.contains("connecting failed"), "{err}");
}

#[test]
fn check_smtp_classes_a_refused_connection_and_a_dns_failure_as_connect_like_send() {
    for host in ["127.0.0.1", "no-such-host.invalid"] {
        let port = free_port();
        let cfg = ConfigDir::new(&format!(
            "{FROM}[smtp]\nhost = \"{host}\"\nport = {port}\ntls = \"starttls\"\ntimeout = \"5s\"\n{JOB}"
        ));
        for args in [&["check", "--smtp"][..], &["send", "weekly"][..]] {
            let out = cronmail_within(&cfg.path, args, &[], QUICK);
            assert_eq!(
                out.status.code(),
                Some(69),
                "{host} {args:?}: {}",
                stderr(&out)
            );
            let err = stderr(&out);
            assert!(
                err.contains("connecting failed (connect)"),
                "{host} {args:?}: {err}"
            );
            assert!(!err.contains("(tls)"), "{host} {args:?}: {err}");
        }
    }
}

#[tokio::test(start_paused = true)]
async fn history_keeps_the_reply_code_of_a_refused_recipient() {
    let pki = Pki::new();
    let server = ServerSpec::starttls(&pki)
        .user("alice", "pw")
        .set("rcpt_reply", "550 5.1.1 <a@example.com>: no such user")
        .start();
    let cfg = JobsToml::new()
        .top("timezone = \"UTC\"")
        .top("state_dir = \"state\"")
        .smtp(server.port, "starttls", Some(&pki.ca))
        .smtp_key("password_file = \"pw\"")
        .every("daily", "0 9 * * *", "")
        .write();
    std::fs::write(cfg.dir.path().join("pw"), "pw").unwrap();
    let at = chrono::DateTime::parse_from_rfc3339("2026-03-02T08:59:59Z")
        .unwrap()
        .to_utc();
    let daemon = InProcess::start(&cfg, at);
    tokio::time::sleep(Duration::from_secs(5)).await;
    daemon.stop().await.unwrap();
    let out = cronmail(&cfg.path, &["history"], &[]);
    assert!(
        stdout(&out).contains("failed\tattempts=1"),
        "{}",
        stdout(&out)
    );
    assert!(
        stdout(&out).contains("550 5.1.1 <a@example.com>: no such user"),
        "{}",
        stdout(&out)
    );
}

const GMAIL_535: &str = "535-5.7.8 Username and Password not accepted. For more information, go to\r\n\
535 5.7.8  https://support.google.com/mail/?p=BadCredentials x - gsmtp";

const GMAIL_LIMIT: &str = "550-5.4.5 Daily user sending limit exceeded. For more information on Gmail\r\n\
550-5.4.5 sending limits go to\r\n\
550 5.4.5  https://support.google.com/a/answer/166852 x - gsmtp";

fn utc(s: &str) -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::parse_from_rfc3339(s).unwrap().to_utc()
}

/// In UTC, state in `state/`, `[smtp]` for `server` with the password in a file.
fn in_process(server: &SmtpServer, pki: &Pki, password: &str, jobs: JobsToml) -> ConfigDir {
    let cfg = jobs
        .top("timezone = \"UTC\"")
        .top("state_dir = \"state\"")
        .smtp(server.port, "starttls", Some(&pki.ca))
        .smtp_key("password_file = \"pw\"")
        .section("[delivery]\nretry_min = \"30s\"\nretry_max = \"2m\"")
        .write();
    std::fs::write(cfg.dir.path().join("pw"), password).unwrap();
    cfg
}

#[tokio::test(start_paused = true)]
async fn a_held_account_is_tested_by_one_login_per_backoff_step_never_a_burst() {
    let pki = Pki::new();
    let server = ServerSpec::starttls(&pki)
        .user("alice", "right")
        .set("auth_fail_reply", GMAIL_535)
        .start();
    // Four jobs a minute for five minutes: 20 occurrences, four of them due at once.
    let mut jobs = JobsToml::new();
    for name in ["a", "b", "c", "d"] {
        jobs = jobs.every(name, "* * * * *", "");
    }
    let cfg = in_process(&server, &pki, "wrong", jobs);
    let daemon = InProcess::start(&cfg, utc("2026-03-02T10:00:30Z"));
    let auths = || server.commands().iter().filter(|c| *c == "AUTH").count();
    let mut per_second = Vec::new();
    let mut before = 0;
    for _ in 0..(5 * 60 + 60) {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let now = auths();
        per_second.push(now - before);
        before = now;
    }
    assert!(
        per_second.iter().all(|n| *n <= 1),
        "two logins within one second: {per_second:?}"
    );
    // One login per backoff step: each at least `retry_min` (30 s) after the last.
    let total = auths();
    let at: Vec<usize> = (0..per_second.len())
        .filter(|&i| per_second[i] > 0)
        .collect();
    eprintln!("{total} failed logins in six minutes, at seconds {at:?}");
    assert!(total >= 2, "the hold's end was never tested: {at:?}");
    assert!(
        at.windows(2).all(|w| w[1] - w[0] >= 30),
        "two logins within one backoff step: {at:?}"
    );
    assert!(server.messages().is_empty());
    let pending = ledger(&cfg.dir.path().join("state"))
        .unfinished()
        .unwrap()
        .len();
    assert_eq!(pending, 24, "every occurrence waits, none is lost");
    daemon.stop().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_daily_limit_is_class_quota_held_and_sent_later_not_failed() {
    let pki = Pki::new();
    let server = ServerSpec::starttls(&pki)
        .user("alice", "right")
        .set("data_replies", serde_json::json!([GMAIL_LIMIT]))
        .start();
    let cfg = in_process(
        &server,
        &pki,
        "right",
        JobsToml::new().every("daily", "0 9 * * *", ""),
    );
    let daemon = InProcess::start(&cfg, utc("2026-03-02T08:59:59Z"));
    tokio::time::sleep(Duration::from_secs(5)).await;
    let key = cronmail::ledger::Key::new("daily", utc("2026-03-02T09:00:00Z"));
    let rec = ledger(&cfg.dir.path().join("state"))
        .get(&key)
        .unwrap()
        .unwrap();
    assert_eq!(rec.state, cronmail::ledger::State::Pending, "{rec:?}");
    assert_eq!(rec.last_error_class.as_deref(), Some("quota"));
    assert!(rec.last_reply.unwrap().starts_with("550 5.4.5"));
    tokio::time::sleep(Duration::from_secs(60)).await;
    let rec = ledger(&cfg.dir.path().join("state"))
        .get(&key)
        .unwrap()
        .unwrap();
    assert_eq!(rec.state, cronmail::ledger::State::Sent);
    assert_eq!(server.messages().len(), 1);
    daemon.stop().await.unwrap();
}

#[test]
fn too_many_login_attempts_is_a_limit_not_bad_credentials() {
    let pki = Pki::new();
    let server = ServerSpec::starttls(&pki)
        .user("alice", "right")
        .set(
            "auth_fail_reply",
            "454 4.7.0 Too many login attempts, please try again later. x - gsmtp",
        )
        .start();
    let cfg = JobsToml::new()
        .smtp(server.port, "starttls", Some(&pki.ca))
        .smtp_key("password_env = \"PW\"")
        .job(JOB)
        .write();
    for args in [&["check", "--smtp"][..], &["send", "weekly"][..]] {
        let out = cronmail_within(&cfg.path, args, &[("PW", "wrong")], QUICK);
        assert_eq!(out.status.code(), Some(75), "{args:?}: {}", stderr(&out));
        let err = stderr(&out);
        assert!(err.contains("(quota)"), "{args:?}: {err}");
        assert!(err.contains("rate-limiting logins"), "{args:?}: {err}");
        assert!(!err.contains("App Password"), "{args:?}: {err}");
    }
}

#[tokio::test(start_paused = true)]
async fn after_a_three_hour_clock_jump_sixty_every_second_jobs_resume_at_once() {
    let mut jobs = JobsToml::new()
        .top("timezone = \"UTC\"")
        .top("state_dir = \"state\"");
    for i in 0..60 {
        jobs = jobs.every(&format!("j{i}"), "* * * * * *", "");
    }
    let cfg = jobs.outbox().write();
    let clock = std::sync::Arc::new(JumpClock::at(utc("2026-03-02T10:00:00.5Z")));
    let daemon = InProcess::start_with(&cfg, std::sync::Arc::clone(&clock));
    tokio::time::sleep(Duration::from_secs(10)).await;
    clock.jump(3 * 3600);
    tokio::time::sleep(Duration::from_secs(20)).await; // the wall clock reads 13:00:30.5
    daemon.stop().await.unwrap();

    let rows = ledger(&cfg.dir.path().join("state"))
        .history(None, 1_000_000)
        .unwrap();
    let jump = utc("2026-03-02T13:00:10Z");
    for i in 0..60 {
        let name = format!("j{i}");
        let after: Vec<_> = rows
            .iter()
            .filter(|r| *r.key.job == *name && r.key.scheduled_at > utc("2026-03-02T10:00:10Z"))
            .collect();
        // One row for the three skipped hours, then one per second again from 13:00:10.
        let skipped: Vec<_> = after
            .iter()
            .filter(|r| r.state == cronmail::ledger::State::Skipped)
            .collect();
        assert_eq!(skipped.len(), 1, "{name}: {skipped:?}");
        let sent: Vec<_> = after
            .iter()
            .filter(|r| r.state == cronmail::ledger::State::Sent && r.key.scheduled_at >= jump)
            .map(|r| r.key.scheduled_at)
            .collect();
        assert!(
            sent.len() >= 19,
            "{name}: regular sends did not resume: {sent:?}"
        );
        assert!(sent.iter().all(|t| *t <= utc("2026-03-02T13:00:31Z")));
    }
}

#[test]
fn a_ledger_deleted_under_a_running_daemon_is_recreated_with_everything_it_held() {
    for wal_too in [false, true] {
        let cfg = JobsToml::new()
            .top("state_dir = \"state\"")
            .outbox()
            .every("tick", "* * * * * *", "")
            .write();
        let state = cfg.dir.path().join("state");
        let daemon = Daemon::start(&cfg.path, &[]);
        daemon.wait_log("INFO sent", 3, QUICK);
        std::fs::remove_file(state.join("ledger.sqlite3")).unwrap();
        if wal_too {
            let _ = std::fs::remove_file(state.join("ledger.sqlite3-wal"));
            let _ = std::fs::remove_file(state.join("ledger.sqlite3-shm"));
        }
        let sent_before = daemon.log_text().matches("INFO sent").count();
        daemon.wait_log("INFO sent", sent_before + 3, QUICK);
        let log = daemon.log_text();
        assert!(daemon.stop().success());
        assert!(
            log.contains("the ledger file was deleted or replaced while cronmail ran"),
            "{log}"
        );
        assert!(
            log.contains(&state.join("ledger.sqlite3").display().to_string()),
            "{log}"
        );
        // Every message in the outbox has its `sent` row; nothing was sent twice.
        let files = std::fs::read_dir(cfg.dir.path().join("outbox"))
            .unwrap()
            .count();
        let sent = ledger(&state)
            .history(None, 100_000)
            .unwrap()
            .into_iter()
            .filter(|r| r.state == cronmail::ledger::State::Sent)
            .count();
        assert!(files >= 6, "{files}");
        assert_eq!(sent, files, "wal removed too: {wal_too}");
        // And `status` sees it ran.
        let out = cronmail(&cfg.path, &["status"], &[]);
        assert!(
            !stdout(&out).contains("last sent:    never"),
            "{}",
            stdout(&out)
        );
    }
}

/// The EIO shim, built once per test run.
pub(crate) fn eio_shim() -> std::path::PathBuf {
    static SHIM: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    SHIM.get_or_init(|| {
        let out = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("eio-shim.so");
        let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/it/support/eio.c");
        let status = std::process::Command::new("cc")
            .args(["-shared", "-fPIC", "-O1", "-o"])
            .arg(&out)
            .arg(&src)
            .arg("-ldl")
            .status()
            .unwrap();
        assert!(status.success(), "building the EIO shim");
        out
    })
    .clone()
}

#[test]
fn an_io_error_from_the_file_system_is_called_one_and_nothing_is_lost() {
    let cfg = JobsToml::new()
        .top("state_dir = \"state\"")
        .outbox()
        .every("tick", "* * * * * *", "")
        .write();
    let flag = cfg.dir.path().join("fail-now");
    let shim = eio_shim();
    let env = [
        ("LD_PRELOAD", shim.to_str().unwrap()),
        ("EIO_FLAG", flag.to_str().unwrap()),
        ("EIO_MATCH", "ledger.sqlite3"),
    ];
    let daemon = Daemon::start(&cfg.path, &env);
    daemon.wait_log("INFO sent", 2, QUICK);
    std::fs::write(&flag, "").unwrap();
    daemon.wait_log("I/O error", 1, QUICK);
    let out = cronmail_within(&cfg.path, &["status"], &env, QUICK);
    std::fs::remove_file(&flag).unwrap();
    let before = daemon.log_text().matches("INFO sent").count();
    daemon.wait_log("INFO sent", before + 2, QUICK);
    let log = daemon.log_text();
    assert!(daemon.stop().success());

    let ledger_path = cfg
        .dir
        .path()
        .join("state/ledger.sqlite3")
        .display()
        .to_string();
    for text in [&log, &stderr(&out)] {
        assert!(!text.contains("malformed"), "{text}");
    }
    assert!(
        log.contains("the file system failed to read or write it"),
        "{log}"
    );
    assert!(log.contains(&ledger_path), "{log}");
    assert!(
        stderr(&out).contains("the file system failed to read"),
        "{}",
        stderr(&out)
    );
    // What was sent while the disk failed was not sent twice, nor lost from the ledger.
    let files = std::fs::read_dir(cfg.dir.path().join("outbox"))
        .unwrap()
        .count();
    let sent = ledger(&cfg.dir.path().join("state"))
        .history(None, 100_000)
        .unwrap()
        .into_iter()
        .filter(|r| r.state == cronmail::ledger::State::Sent)
        .count();
    assert_eq!(sent, files);
}

#[test]
fn a_state_dir_that_is_a_file_is_called_one() {
    let cfg = JobsToml::new()
        .top("state_dir = \"state\"")
        .outbox()
        .job(JOB)
        .write();
    std::fs::write(cfg.dir.path().join("state"), "").unwrap();
    let out = cronmail_within(&cfg.path, &["run"], &[], QUICK);
    assert_eq!(out.status.code(), Some(73), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("is a file, not a folder"),
        "{}",
        stderr(&out)
    );
    assert!(!stderr(&out).contains("os error 17"), "{}", stderr(&out));
}
