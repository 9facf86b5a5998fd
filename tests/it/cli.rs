//! The command line as a user meets it: `check`, `next`, `render`, and bad input.

use std::path::Path;

use crate::support::*;

fn repo_jobs() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("jobs.toml")
}

#[test]
fn check_accepts_the_repository_example() {
    let out = cronmail(&repo_jobs(), &["check"], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("ok, 2 jobs"), "{}", stdout(&out));
}

#[test]
fn check_reports_every_problem_with_line_and_column() {
    let cfg = ConfigDir::new(
        r#"from = "Reminders <bot@example.com>"
[outbox]
[[job]]
name = "a"
schedule = "0 25 * * *"
to = ["not an address"]
subject = "x"
body = "y"
[[job]]
name = "b"
schedule = "0 9 * * *"
timezone = "Mars/Olympus"
to = ["b@example.com"]
subject = "{{ nope }}"
body = "ok"
"#,
    );
    let out = cronmail(&cfg.path, &["check"], &[]);
    assert_eq!(out.status.code(), Some(78));
    let err = stderr(&out);
    let p = cfg.path.display().to_string();
    assert!(
        err.contains(&format!("{p}:5:12: job `a`: invalid schedule `0 25 * * *`")),
        "{err}"
    );
    assert!(
        err.contains(&format!(
            "{p}:6:7: job `a`: `to`: `not an address` is not a valid address"
        )),
        "{err}"
    );
    assert!(
        err.contains(&format!(
            "{p}:12:12: job `b`: unknown time zone `Mars/Olympus`"
        )),
        "{err}"
    );
    // Job `b`'s template is rendered too, although the job is invalid: one pass.
    assert!(
        err.contains(&format!(
            "{p}:14:11: job `b`: template `subject`: undefined variable `nope`"
        )),
        "{err}"
    );
    // Each problem shows its line, with a caret under the column.
    assert!(
        err.contains("5 | schedule = \"0 25 * * *\"\n  |            ^"),
        "{err}"
    );
    assert!(err.contains("4 problems"), "{err}");
}

#[test]
fn a_template_error_points_at_the_template_line() {
    let cfg = ConfigDir::new(
        "from = \"bot@example.com\"\n[outbox]\n[[job]]\nname = \"a\"\nschedule = \"@daily\"\nto = [\"a@example.com\"]\nsubject = \"s\"\nbody = \"\"\"\nline one\nHi {{ vars.onwer }}\n\"\"\"\n[job.vars]\nowner = \"x\"\n",
    );
    let out = cronmail(&cfg.path, &["check"], &[]);
    assert_eq!(out.status.code(), Some(78));
    let err = stderr(&out);
    // Line 10 of the file is the template's second line.
    assert!(
        err.contains(&format!(
            "{}:10:1: job `a`: template `body`: undefined variable `vars.onwer`; did you mean `vars.owner`?",
            cfg.path.display()
        )),
        "{err}"
    );
    assert!(err.contains("vars.onwer"), "{err}");
}

#[test]
fn unknown_keys_and_literal_passwords_are_errors() {
    let cfg = ConfigDir::new(
        "from = \"bot@example.com\"\n[smtp]\nhost = \"smtp.example.com\"\nusername = \"me\"\npassword = \"hunter2\"\n[[job]]\nname = \"a\"\nschedule = \"@daily\"\nto = [\"a@example.com\"]\nsubject = \"s\"\nbody = \"b\"\nsubjetc = \"typo\"\n",
    );
    let out = cronmail(&cfg.path, &["check"], &[]);
    assert_eq!(out.status.code(), Some(78));
    let err = stderr(&out);
    assert!(err.contains("password_env"), "{err}");
    assert!(err.contains("password_file"), "{err}");
    assert!(err.contains("password_command"), "{err}");
    assert!(!err.contains("hunter2"), "{err}");
    assert!(err.contains("unknown key `subjetc`"), "{err}");
}

#[test]
fn bad_files_get_clear_errors_and_exit_78() {
    let dir = tempfile::tempdir().unwrap();
    let cases: Vec<(std::path::PathBuf, &str)> = vec![
        (
            dir.path().join("missing.toml"),
            "cannot read the configuration",
        ),
        (dir.path().to_path_buf(), "is a directory"),
        (
            {
                let p = dir.path().join("empty.toml");
                std::fs::write(&p, "  \n").unwrap();
                p
            },
            "the file is empty",
        ),
        (
            {
                let p = dir.path().join("latin1.toml");
                std::fs::write(&p, b"from = \"caf\xe9\"\n").unwrap();
                p
            },
            "1:12: the file is not valid UTF-8",
        ),
        (
            {
                let p = dir.path().join("syntax.toml");
                std::fs::write(&p, "[outbox\n").unwrap();
                p
            },
            "syntax.toml:1:",
        ),
        (
            {
                let p = dir.path().join("huge.toml");
                let f = std::fs::File::create(&p).unwrap();
                f.set_len(100 * 1024 * 1024).unwrap();
                p
            },
            "more than the limit",
        ),
    ];
    for (path, expected) in cases {
        let started = std::time::Instant::now();
        let out = cronmail(&path, &["check"], &[]);
        assert_eq!(
            out.status.code(),
            Some(78),
            "{}: {}",
            path.display(),
            stderr(&out)
        );
        assert!(
            stderr(&out).contains(expected),
            "{}: {}",
            path.display(),
            stderr(&out)
        );
        assert!(!stderr(&out).contains("panicked"), "{}", stderr(&out));
        assert!(
            started.elapsed() < std::time::Duration::from_secs(5),
            "{} took {:?}",
            path.display(),
            started.elapsed()
        );
    }
}

#[test]
fn duplicate_names_impossible_cron_and_bad_durations_are_reported() {
    let cfg = ConfigDir::new(
        r#"from = "bot@example.com"
[smtp]
host = "smtp.example.com"
timeout = "0s"
[defaults]
max_late = "-5m"
[[job]]
name = "dup"
schedule = "0 0 30 2 *"
to = ["a@example.com"]
subject = "s"
body = "b"
[[job]]
name = "dup"
schedule = "@daily"
to = ["a@example.com"]
subject = "s"
body = "b"
"#,
    );
    let out = cronmail(&cfg.path, &["check"], &[]);
    assert_eq!(out.status.code(), Some(78));
    let err = stderr(&out);
    assert!(err.contains("`timeout` must be greater than zero"), "{err}");
    assert!(err.contains("`max_late`: `-5m` is not a duration"), "{err}");
    assert!(err.contains("never fires"), "{err}");
    assert!(
        err.contains("duplicate job name (first defined on line 8)"),
        "{err}"
    );
}

#[test]
fn tls_none_is_refused_for_a_remote_host() {
    let cfg = ConfigDir::new(&format!(
        "{FROM}[smtp]\nhost = \"smtp.example.com\"\ntls = \"none\"\n{JOB}"
    ));
    let out = cronmail(&cfg.path, &["check"], &[]);
    assert_eq!(out.status.code(), Some(78));
    assert!(
        stderr(&out).contains("only for a loopback host"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn an_unreadable_password_source_fails_check() {
    let cfg = ConfigDir::new(&format!(
        "{FROM}[smtp]\nhost = \"smtp.example.com\"\nusername = \"me\"\npassword_file = \"nope/pw\"\n{JOB}"
    ));
    let out = cronmail(&cfg.path, &["check"], &[]);
    assert_eq!(out.status.code(), Some(78));
    // Found while validating, with its place, and never after "ok".
    assert!(
        stderr(&out).contains("jobs.toml:5:17: `password_file`: cannot read"),
        "{}",
        stderr(&out)
    );
    assert!(!stdout(&out).contains("ok"), "{}", stdout(&out));
}

#[test]
fn a_world_readable_password_file_gets_a_warning() {
    use std::os::unix::fs::PermissionsExt;
    let cfg = ConfigDir::new(&format!(
        "{FROM}[smtp]\nhost = \"smtp.example.com\"\nusername = \"me\"\npassword_file = \"pw\"\n{JOB}"
    ));
    let pw = cfg.dir.path().join("pw");
    std::fs::write(&pw, "secret\n").unwrap();
    std::fs::set_permissions(&pw, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = cronmail(&cfg.path, &["check"], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("warning: the password file"),
        "{}",
        stderr(&out)
    );
    assert!(stderr(&out).contains("chmod 600"), "{}", stderr(&out));

    std::fs::set_permissions(&pw, std::fs::Permissions::from_mode(0o600)).unwrap();
    let out = cronmail(&cfg.path, &["check"], &[]);
    assert!(!stderr(&out).contains("warning"), "{}", stderr(&out));
}

#[test]
fn next_prints_local_and_utc_times() {
    let out = cronmail(
        &repo_jobs(),
        &[
            "next",
            "--job",
            "weekly-report",
            "--count",
            "2",
            "--from",
            "2026-03-20T00:00:00Z",
        ],
        &[],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    // Berlin springs forward on 29 March 2026.
    assert_eq!(
        stdout(&out),
        "weekly-report\t2026-03-23T09:00:00+01:00\t2026-03-23T08:00:00Z\n\
         weekly-report\t2026-03-30T09:00:00+02:00\t2026-03-30T07:00:00Z\n"
    );
}

#[test]
fn render_prints_the_exact_message() {
    let out = cronmail(
        &repo_jobs(),
        &[
            "render",
            "weekly-report",
            "--at",
            "2026-03-02T09:00:00+01:00",
        ],
        &[],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(
        text.contains("Date: Mon, 2 Mar 2026 09:00:00 +0100\r\n"),
        "{text}"
    );
    assert!(
        text.contains("Message-ID: <weekly-report.1772438400."),
        "{text}"
    );
    assert!(
        text.contains("Subject: Weekly report due 2026-03-02\r\n"),
        "{text}"
    );
    assert!(
        text.contains("the report for week 10 is due today."),
        "{text}"
    );
    // Deterministic: the same occurrence gives the same bytes.
    let again = cronmail(
        &repo_jobs(),
        &["render", "weekly-report", "--at", "2026-03-02T08:00:00Z"],
        &[],
    );
    assert_eq!(again.stdout, out.stdout);
}

#[test]
fn usage_errors_exit_64() {
    let out = cronmail(&repo_jobs(), &["render", "no-such-job"], &[]);
    assert_eq!(out.status.code(), Some(64));
    assert!(
        stderr(&out).contains("no job `no-such-job`"),
        "{}",
        stderr(&out)
    );
    let out = cronmail(&repo_jobs(), &["frobnicate"], &[]);
    assert_eq!(out.status.code(), Some(64));
    let out = cronmail(&repo_jobs(), &["next", "--from", "yesterday"], &[]);
    assert_eq!(out.status.code(), Some(64));
}

#[test]
fn injected_header_in_a_rendered_subject_is_refused_at_check() {
    let cfg = ConfigDir::new(
        "from = \"bot@example.com\"\n[outbox]\n[[job]]\nname = \"a\"\nschedule = \"@daily\"\nto = [\"a@example.com\"]\nsubject = \"Hi {{ vars.x }}\"\nbody = \"b\"\n[job.vars]\nx = \"there\\r\\nBcc: attacker@example.net\"\n",
    );
    let out = cronmail(&cfg.path, &["check"], &[]);
    assert_eq!(out.status.code(), Some(78), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("the subject renders with a line break"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn send_to_the_outbox_writes_the_rendered_message() {
    let cfg = ConfigDir::new(&format!("{FROM}[outbox]\ndir = \"mail\"\n{JOB}"));
    let out = cronmail(&cfg.path, &["send", "weekly"], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let files: Vec<_> = std::fs::read_dir(cfg.dir.path().join("mail"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(files.len(), 1);
    let name = files[0].file_name().unwrap().to_string_lossy().to_string();
    assert!(
        name.starts_with("weekly.") && name.ends_with("@example.com.eml"),
        "{name}"
    );
    let text = std::fs::read_to_string(&files[0]).unwrap();
    assert!(text.contains("To: Team <team@example.com>"), "{text}");
    assert!(!text.contains("hidden@example.com"), "{text}");
}

#[test]
fn a_systemd_credential_is_read_from_credentials_directory_or_beside_jobs_toml() {
    let cfg = ConfigDir::new(&format!(
        "{FROM}[smtp]\nhost = \"smtp.example.com\"\nusername = \"me\"\npassword_credential = \"smtp-password\"\n{JOB}"
    ));
    // By hand (no $CREDENTIALS_DIRECTORY) and no file beside jobs.toml: a clear error.
    let out = cronmail(&cfg.path, &["check"], &[]);
    assert_eq!(out.status.code(), Some(78), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("$CREDENTIALS_DIRECTORY is set only when systemd starts cronmail"),
        "{}",
        stderr(&out)
    );
    // By hand, with the file beside jobs.toml, where the shipped unit takes it from.
    std::fs::write(cfg.dir.path().join("smtp-password"), "pw\n").unwrap();
    let out = cronmail(&cfg.path, &["check"], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    // Under systemd: $CREDENTIALS_DIRECTORY wins.
    let creds = tempfile::tempdir().unwrap();
    let out = cronmail(
        &cfg.path,
        &["check"],
        &[("CREDENTIALS_DIRECTORY", creds.path().to_str().unwrap())],
    );
    assert_eq!(out.status.code(), Some(78), "{}", stderr(&out));
    std::fs::write(creds.path().join("smtp-password"), "pw\n").unwrap();
    let out = cronmail(
        &cfg.path,
        &["check"],
        &[("CREDENTIALS_DIRECTORY", creds.path().to_str().unwrap())],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("password: readable from systemd credential `smtp-password`"),
        "{}",
        stdout(&out)
    );
}

#[test]
fn status_and_history_read_the_ledger() {
    use cronmail::ledger::{Key, Ledger as _};
    let cfg = ConfigDir::new(&format!("{FROM}state_dir = \"state\"\n[outbox]\n{JOB}"));
    let out = cronmail(&cfg.path, &["status"], &[]);
    assert_eq!(out.status.code(), Some(73), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("has not run with this `state_dir` yet"),
        "{}",
        stderr(&out)
    );

    let state = cfg.dir.path().join("state");
    let l = cronmail::ledger::SqliteLedger::open_exclusive(&state).unwrap();
    let t = |s: i64| chrono::DateTime::from_timestamp(1_800_000_000 + s, 0).unwrap();
    let sent = Key {
        job: "weekly".into(),
        scheduled_at: t(0),
    };
    let failed = Key {
        job: "weekly".into(),
        scheduled_at: t(604_800),
    };
    l.claim(
        &[
            (sent.clone(), "weekly.1.a@example.com".into()),
            (failed.clone(), "weekly.2.b@example.com".into()),
        ],
        t(0),
    )
    .unwrap();
    l.start_attempt(&sent, t(0)).unwrap();
    l.sent(&cronmail::ledger::Receipt::new(
        sent.clone(),
        "250 2.0.0 OK queued",
        t(1),
    ))
    .unwrap();
    l.start_attempt(&failed, t(604_800)).unwrap();
    l.give_up(
        &failed,
        cronmail::ledger::State::Failed,
        "permanent",
        "550 5.1.1 no such user",
        t(604_801),
    )
    .unwrap();
    drop(l);

    let out = cronmail(&cfg.path, &["status"], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(
        text.contains("last sent:    2027-01-15T09:00:00+01:00 <weekly.1.a@example.com>"),
        "{text}"
    );
    assert!(
        text.contains("last failure: 2027-01-22T09:00:01+01:00 permanent: 550 5.1.1 no such user"),
        "{text}"
    );
    assert!(text.contains("pending:      0"), "{text}");

    let out = cronmail(
        &cfg.path,
        &["history", "--job", "weekly", "--limit", "1"],
        &[],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        stdout(&out),
        "2027-01-22T09:00:00+01:00\tweekly\tfailed\tattempts=1\t<weekly.2.b@example.com>\t550 5.1.1 no such user\n"
    );
}

#[test]
fn an_unreadable_password_file_is_a_clear_config_error() {
    let cfg = ConfigDir::new(&format!(
        "{FROM}[smtp]\nhost = \"smtp.example.com\"\nusername = \"me\"\npassword_file = \"pwdir\"\n{JOB}"
    ));
    std::fs::create_dir(cfg.dir.path().join("pwdir")).unwrap();
    for cmd in [&["check"][..], &["send", "weekly"], &["run"]] {
        let out = cronmail(&cfg.path, cmd, &[]);
        assert_eq!(out.status.code(), Some(78), "{cmd:?}: {}", stderr(&out));
        assert!(
            stderr(&out).contains("is a folder, not a regular file"),
            "{cmd:?}: {}",
            stderr(&out)
        );
        assert!(!stderr(&out).contains("panicked"), "{cmd:?}");
    }
}
