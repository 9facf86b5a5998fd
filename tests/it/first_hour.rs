//! The mistakes a beginner makes in the first hour, and the answers they get (issue
//! "first hour"): each in one `check`, with its place, before anything connects.

use std::time::Duration;

use crate::support::*;

fn check(text: &str) -> std::process::Output {
    let cfg = ConfigDir::new(text);
    cronmail(&cfg.path, &["check"], &[])
}

fn job(schedule: &str) -> String {
    format!(
        "[[job]]\nname = \"j\"\nschedule = \"{schedule}\"\nto = [\"a@example.com\"]\nsubject = \"s\"\nbody = \"b\"\n"
    )
}

#[test]
fn port_465_with_starttls_and_587_with_implicit_are_warned_about_without_connecting() {
    for (port, tls, expected) in [
        (465, "starttls", "port 465 expects implicit TLS"),
        (587, "implicit", "port 587 expects STARTTLS"),
    ] {
        let out = check(&format!(
            "{FROM}[smtp]\nhost = \"smtp.example.invalid\"\nport = {port}\ntls = \"{tls}\"\n{JOB}"
        ));
        assert!(out.status.success(), "{}", stderr(&out));
        let err = stderr(&out);
        assert!(err.contains(expected), "{err}");
        assert!(err.contains("jobs.toml:4:8: warning:"), "{err}");
        assert!(
            stdout(&out).contains("ok, 1 jobs (1 enabled), 1 warning"),
            "{}",
            stdout(&out)
        );
    }
}

#[test]
fn a_silent_server_where_a_greeting_is_due_is_said_to_want_implicit_tls_within_seconds() {
    let pki = Pki::new();
    // An implicit-TLS server waits for a handshake and says nothing to a plain client.
    let server = ServerSpec::implicit(&pki).user("alice", "pw").start();
    let cfg = JobsToml::new()
        .smtp(server.port, "starttls", Some(&pki.ca))
        .smtp_key("password_env = \"PW\"")
        .smtp_key("timeout = \"60s\"")
        .job(JOB)
        .write();
    let started = std::time::Instant::now();
    let out = cronmail_within(
        &cfg.path,
        &["check", "--smtp"],
        &[("PW", "pw")],
        Duration::from_secs(30),
    );
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "waited {:?}",
        started.elapsed()
    );
    assert_eq!(out.status.code(), Some(75), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("sent no greeting"), "{err}");
    assert!(err.contains("set `tls = \"implicit\"`"), "{err}");
    server.assert_nothing_sent();
}

#[test]
fn a_six_field_schedule_that_is_five_fields_and_a_stray_one_is_called_out_and_explained() {
    let out = check(&format!("{FROM}[outbox]\n{}", job("30 9 * * 1-5 *")));
    assert!(out.status.success(), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("has 6 fields, so it is read seconds first"),
        "{err}"
    );
    assert!(
        err.contains("second=30 minute=9 hour=* day-of-month=* month=1-5 day-of-week=*"),
        "{err}"
    );
    assert!(err.contains("`30 9 * * 1-5`"), "{err}");
    // A six-field schedule that means it is not warned about.
    let out = check(&format!("{FROM}[outbox]\n{}", job("*/20 * * * * *")));
    assert!(!stderr(&out).contains("6 fields"), "{}", stderr(&out));

    let cfg = ConfigDir::new(&format!("{FROM}[outbox]\n{}", job("30 9 * * 1-5")));
    let out = cronmail(&cfg.path, &["next", "--explain"], &[]);
    assert!(
        stderr(&out)
            .contains("`30 9 * * 1-5` = minute=30 hour=9 day-of-month=* month=* day-of-week=1-5"),
        "{}",
        stderr(&out)
    );
    assert_eq!(stdout(&out).lines().count(), 1, "{}", stdout(&out));
    let out = cronmail(&cfg.path, &["check", "--explain"], &[]);
    assert!(
        stdout(&out).contains("read: j\t`30 9 * * 1-5` = minute=30"),
        "{}",
        stdout(&out)
    );

    let out = check(&format!("{FROM}[outbox]\n{}", job("61 9 * * *")));
    assert!(
        stderr(&out).contains("minute 61 is out of range 0-59"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn one_check_reports_every_problem_in_one_pass_with_its_line_and_a_caret() {
    let text = format!(
        "{FROM}[smtp]\nhost = \"smtp.example.com\"\nusername = \"me\"\npassword_file = \"no-such-file\"\n\
         [[job]]\nname = \"j\"\nschedule = \"0 9 * * *\"\nto = [\"a@example.com\"]\nsubject = \"Hi {{{{ vars.ownr }}}}\"\nbody = \"b\"\nbodyy = \"typo\"\n\
         [job.vars]\nowner = \"Kim\"\n\
         [[job]]\nname = \"k\"\nschedule = \"0 9 * *\"\nto = \"a@example.com\"\nsubject = \"s\"\nbody = \"b\"\n"
    );
    let out = check(&text);
    assert_eq!(out.status.code(), Some(78));
    let err = stderr(&out);
    for expected in [
        "jobs.toml:5:17: `password_file`: cannot read",
        "jobs.toml:10:11: job `j`: template `subject`: undefined variable `vars.ownr`; did you mean `vars.owner`?",
        "jobs.toml:12:1: job `j`: unknown key `bodyy`; did you mean `body`?",
        "jobs.toml:17:12: job `k`: invalid schedule `0 9 * *`",
        "jobs.toml:18:6: job `k`: `to` is a list of addresses, even for one: `to = [\"you@example.com\"]`",
        "12 | bodyy = \"typo\"\n   | ^",
        "5 problems",
    ] {
        assert!(err.contains(expected), "missing {expected:?} in:\n{err}");
    }
    assert!(!err.contains("no recipients"), "a follow-on error: {err}");
    assert!(!stdout(&out).contains("ok"), "{}", stdout(&out));
}

#[test]
fn mistakes_are_said_once_in_words_a_beginner_understands() {
    // A literal password: one error, not also "no password source".
    let out = check(&format!(
        "{FROM}[smtp]\nhost = \"smtp.example.com\"\nusername = \"me\"\npassword = \"hunter2\"\n{JOB}"
    ));
    let err = stderr(&out);
    assert!(err.contains("a literal `password`"), "{err}");
    assert!(!err.contains("no password source"), "{err}");
    assert!(!err.contains("hunter2"), "a secret was echoed: {err}");
    // A bad `from`: one error, not also "no sender" for each job.
    let out = check(&format!("from = \"not an address\"\n[outbox]\n{JOB}"));
    let err = stderr(&out);
    assert!(
        err.contains("`from`: `not an address` is not a valid address"),
        "{err}"
    );
    assert!(!err.contains("no sender"), "{err}");
    assert!(err.contains("1 problem"), "{err}");
    // Provider names in any case.
    let out = check(&format!("{FROM}[smtp]\nprovider = \"Gmail\"\n{JOB}"));
    assert!(out.status.success(), "{}", stderr(&out));
    // JSON and YAML are called what they are.
    for (text, what) in [
        (
            "{\"from\": \"a@b\", \"outbox\": {}}",
            "looks like JSON, not TOML",
        ),
        (
            "from: a@example.com\noutbox:\n  dir: out\n",
            "looks like YAML, not TOML",
        ),
    ] {
        let out = check(text);
        assert_eq!(out.status.code(), Some(78));
        assert!(stderr(&out).contains(what), "{}", stderr(&out));
    }
}

#[test]
fn a_real_account_mailed_more_than_hourly_is_warned_about() {
    let out = check(&format!(
        "{FROM}[smtp]\nhost = \"smtp.example.com\"\n{}",
        job("* * * * *")
    ));
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("fires 60 times an hour, and [smtp] sends each as real mail"),
        "{}",
        stderr(&out)
    );
    let out = check(&format!(
        "{FROM}[smtp]\nhost = \"smtp.example.com\"\n{}",
        job("0 * * * *")
    ));
    assert!(
        !stderr(&out).contains("times an hour"),
        "hourly is fine: {}",
        stderr(&out)
    );
    let out = check(&format!("{FROM}[outbox]\n{}", job("* * * * *")));
    assert!(
        !stderr(&out).contains("times an hour"),
        "the outbox is fine: {}",
        stderr(&out)
    );
}

#[test]
fn small_things_found_on_the_way() {
    // `send --to` takes several addresses.
    let cfg = JobsToml::new()
        .top("state_dir = \"state\"")
        .outbox()
        .job(JOB)
        .write();
    let out = cronmail(
        &cfg.path,
        &[
            "send",
            "weekly",
            "--to",
            "a@example.com,b@example.com",
            "--to",
            "c@example.com",
        ],
        &[],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("to 3 recipient(s)"),
        "{}",
        stdout(&out)
    );
    // The outbox has no server, so no SMTP code in its log line; the start-up line is plain.
    assert!(!stderr(&out).contains("smtp_code"), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("transport=\"outbox\"") || stderr(&out).contains("transport=outbox"),
        "{}",
        stderr(&out)
    );
    // `render --at` an instant that is not an occurrence says so.
    let out = cronmail(
        &cfg.path,
        &["render", "weekly", "--at", "2026-03-03T10:00:00+01:00"],
        &[],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("is not an occurrence of `weekly` (the one before is 2026-03-02T09:00:00+01:00, the next 2026-03-09T09:00:00+01:00)"),
        "{}",
        stderr(&out)
    );
    let out = cronmail(
        &cfg.path,
        &["render", "weekly", "--at", "2026-03-02T09:00:00+01:00"],
        &[],
    );
    assert!(
        !stderr(&out).contains("not an occurrence"),
        "{}",
        stderr(&out)
    );
    // Global options are apart from each command's own.
    let out = cronmail(&cfg.path, &["check", "--help"], &[]);
    let help = stdout(&out);
    let own = help.find("--smtp").unwrap();
    let global = help.find("Global options:").unwrap();
    assert!(
        own < global && help[global..].contains("--config"),
        "{help}"
    );
    // A hint of a manual send never promises a retry.
    let out = cronmail(
        &ConfigDir::new(&format!(
            "{FROM}[smtp]\nhost = \"127.0.0.1\"\nport = {}\n{JOB}",
            free_port()
        ))
        .path,
        &["send", "weekly"],
        &[],
    );
    assert!(
        !stderr(&out).contains("will retry") && !stderr(&out).contains("will try again"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn status_as_a_user_who_may_not_read_the_ledger_says_to_run_as_root() {
    use std::os::unix::fs::PermissionsExt as _;
    if unsafe_geteuid() != 0 {
        eprintln!("skipped: needs root, to run `status` as nobody");
        return;
    }
    let cfg = JobsToml::new()
        .top("state_dir = \"state\"")
        .outbox()
        .job(JOB)
        .write();
    let state = cfg.dir.path().join("state");
    cronmail::ledger::SqliteLedger::open_exclusive(&state).unwrap();
    std::fs::set_permissions(cfg.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&cfg.path, std::fs::Permissions::from_mode(0o644)).unwrap();
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o700)).unwrap();
    let out = std::process::Command::new("runuser")
        .args([
            "-u",
            "nobody",
            "--",
            env!("CARGO_BIN_EXE_cronmail"),
            "--config",
        ])
        .arg(&cfg.path)
        .arg("status")
        .env("TZ", "UTC")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(77), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("run as root or as the service's user"),
        "{}",
        stderr(&out)
    );
    assert!(
        !stderr(&out).contains("readonly database"),
        "{}",
        stderr(&out)
    );
}

fn unsafe_geteuid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    #[allow(unsafe_code)]
    unsafe {
        libc::geteuid()
    }
}

#[test]
fn a_gmail_app_password_pasted_with_its_spaces_works_and_check_says_why() {
    let pki = Pki::new();
    let server = ServerSpec::starttls(&pki)
        .user("alice", "abcdefghijklmnop")
        .start();
    let cfg = JobsToml::new()
        .smtp(server.port, "starttls", Some(&pki.ca))
        .smtp_key("provider = \"gmail\"")
        .smtp_key("password_env = \"PW\"")
        .job(JOB)
        .write();
    let env = [("PW", "abcd efgh ijkl mnop")];
    let out = cronmail(&cfg.path, &["check"], &env);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("is a Google App Password with the spaces Google shows; they are only for reading, and cronmail removes them"),
        "{}",
        stderr(&out)
    );
    let out = cronmail(&cfg.path, &["send", "weekly"], &env);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(server.messages().len(), 1);
}
