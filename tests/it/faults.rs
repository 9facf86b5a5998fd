//! Faults found by trying cronmail hard (issue "faults"): each test here failed before
//! its fix.

use std::time::Duration;

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
    let mailer = cronmail::Mailer::new(&cfg.transport, password, 1).unwrap();
    for (i, (name, _)) in bodies.iter().enumerate() {
        let job = cfg.job(name).unwrap();
        let out = cronmail::prepare(&cfg, job, at, at, None).unwrap();
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
