//! Several accounts, a fallback, and sending limits: jobs.toml mistakes located, the
//! fallback through a second real server with the same Message-ID, and limits counted
//! from the ledger on paused time.

use std::time::Duration;

use chrono::{DateTime, Utc};
use cronmail::ledger::{Key, Ledger as _, Receipt, State};

use crate::support::*;

const PASSWORD: &str = "s3cret-pw";

fn utc(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

fn job(name: &str, extra: &str) -> String {
    format!(
        "[[job]]\nname = \"{name}\"\nschedule = \"0 9 * * *\"\nto = [\"a@example.com\"]\nsubject = \"{name}\"\nbody = \"b\"\n{extra}\n"
    )
}

#[test]
fn check_names_every_account_and_locates_account_mistakes() {
    let cfg = JobsToml::new()
        .top("timezone = \"UTC\"")
        .outbox()
        .section("[account.billing]\noutbox = \"billing-out\"\nmax_per_day = 2")
        .job(&job("team", ""))
        .job(&job(
            "invoices",
            "account = \"billing\"\nbcc = [\"b@example.com\", \"c@example.com\"]",
        ))
        .write();
    let out = cronmail(&cfg.path, &["check"], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(
        text.contains("account `default`: transport: outbox"),
        "{text}"
    );
    assert!(
        text.contains("account `billing`: transport: outbox"),
        "{text}"
    );
    assert!(
        stderr(&out).contains("job `invoices`: 3 recipients per message, more than account `billing`'s max_per_day of 2"),
        "{}",
        stderr(&out)
    );

    let cases = [
        (
            "[account.billing]\noutbox = \"o\"\nfallback = \"backup\"\n".to_owned() + &job("j", ""),
            "no account is named `backup`; the accounts are `default`, `billing`",
        ),
        (
            job("j", "account = \"biling\""),
            "no account is named `biling`; the accounts are `default`",
        ),
        (
            "[account.billing]\noutbox = \"o\"\nmax_per_minute = 0\n".to_owned() + &job("j", ""),
            "`max_per_minute` must be a positive whole number",
        ),
        (
            "[account.default]\noutbox = \"o\"\n".to_owned() + &job("j", ""),
            "[account.default] has the name of the account [smtp] or [outbox] is",
        ),
        (
            "[account.me]\noutbox = \"o\"\nfallback = \"me\"\n".to_owned() + &job("j", ""),
            "account `me` cannot fall back to itself",
        ),
        (
            "[account.x]\noutbox = \"o\"\nhost = \"smtp.example.com\"\n".to_owned() + &job("j", ""),
            "[account.x] has `outbox` and SMTP keys",
        ),
    ];
    for (text, expected) in cases {
        let cfg = ConfigDir::new(&format!("{FROM}[outbox]\n{text}"));
        let out = cronmail(&cfg.path, &["check"], &[]);
        assert_eq!(out.status.code(), Some(78), "{text}: {}", stderr(&out));
        assert!(stderr(&out).contains(expected), "{text}: {}", stderr(&out));
        assert!(
            stderr(&out).contains("jobs.toml:"),
            "no place: {}",
            stderr(&out)
        );
    }
    // Two accounts and neither is `default`: a job must say which.
    let cfg = ConfigDir::new(&format!(
        "{FROM}[account.a]\noutbox = \"a\"\n[account.b]\noutbox = \"b\"\n{}",
        job("j", "")
    ));
    let out = cronmail(&cfg.path, &["check"], &[]);
    assert_eq!(out.status.code(), Some(78));
    assert!(
        stderr(&out).contains(
            "no `account`: there are 2 accounts and none is `default`; set `account = \"a\"`"
        ),
        "{}",
        stderr(&out)
    );
}

#[test]
fn a_refused_connection_falls_back_to_the_other_account_with_the_same_message_id() {
    let pki = Pki::new();
    let backup = ServerSpec::starttls(&pki).user("bob", PASSWORD).start();
    // Nothing listens on the default account's port: connect fails at once.
    let closed = free_port();
    let cfg = JobsToml::new()
        .top("timezone = \"UTC\"")
        .top("state_dir = \"state\"")
        .smtp(closed, "starttls", Some(&pki.ca))
        .smtp_key("password_env = \"TEST_SMTP_PASSWORD\"")
        .smtp_key("timeout = \"5s\"")
        .smtp_key("fallback = \"backup\"")
        .section(&format!(
            "[account.backup]\nhost = \"localhost\"\nport = {}\ntls = \"starttls\"\nca_file = \"{}\"\nusername = \"bob\"\npassword_env = \"TEST_SMTP_PASSWORD\"\ntimeout = \"5s\"",
            backup.port,
            pki.ca.display()
        ))
        .every("often", "*/3 * * * * *", "catch_up = \"skip\"")
        .write();
    let out = cronmail(
        &cfg.path,
        &["check", "--smtp"],
        &[("TEST_SMTP_PASSWORD", PASSWORD)],
    );
    assert_eq!(out.status.code(), Some(69), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("account `backup`:\nserver: localhost"),
        "{}",
        stdout(&out)
    );

    let daemon = Daemon::start(&cfg.path, &[("TEST_SMTP_PASSWORD", PASSWORD)]);
    daemon.wait_log(
        "falling back to account `backup` for the next attempt, now",
        1,
        Duration::from_secs(20),
    );
    assert!(wait_until(Duration::from_secs(20), || !backup
        .messages()
        .is_empty()));
    daemon.stop();
    let received = &backup.messages()[0];
    assert_eq!(received.rcpt_tos, ["a@example.com"]);
    let l = ledger(&cfg.dir.path().join("state"));
    let sent: Vec<_> = l
        .history(Some("often"), 100)
        .unwrap()
        .into_iter()
        .filter(|r| r.state == State::Sent)
        .collect();
    let first = sent.last().unwrap();
    assert_eq!(first.attempts, 2, "{first:?}");
    assert!(
        received
            .data
            .contains(&format!("Message-ID: <{}>", first.message_id)),
        "{}",
        received.data
    );
}

/// The in-process daemon against aiosmtpd, with `[smtp]` limits.
fn limited(server: &SmtpServer, pki: &Pki, limits: &str, jobs: &str) -> ConfigDir {
    service_config(
        server,
        pki,
        PASSWORD,
        JobsToml::new().smtp_key(limits).job(jobs),
    )
}

fn sent_at(cfg: &ConfigDir, job: &str, at: &str) -> (State, DateTime<Utc>) {
    let r = ledger(&cfg.dir.path().join("state"))
        .get(&Key::new(job, utc(at)))
        .unwrap()
        .unwrap();
    (r.state, r.updated_at)
}

#[tokio::test(start_paused = true)]
async fn over_max_per_minute_an_occurrence_waits_for_the_window_and_goes_when_it_allows() {
    let pki = Pki::new();
    let server = ServerSpec::starttls(&pki).user("alice", PASSWORD).start();
    let jobs: String = ["a", "b", "c"].iter().map(|n| job(n, "")).collect();
    let cfg = limited(&server, &pki, "max_per_minute = 2", &jobs);
    let daemon = InProcess::start(&cfg, utc("2026-03-02T08:59:58Z"));
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert_eq!(server.messages().len(), 2, "two within the minute");
    tokio::time::sleep(Duration::from_secs(55)).await;
    assert_eq!(server.messages().len(), 3);
    let mut times: Vec<_> = ["a", "b", "c"]
        .iter()
        .map(|j| sent_at(&cfg, j, "2026-03-02T09:00:00Z"))
        .collect();
    times.sort_by_key(|(_, t)| *t);
    assert!(times.iter().all(|(s, _)| *s == State::Sent));
    assert!(times[1].1 < utc("2026-03-02T09:00:05Z"), "{times:?}");
    // The third goes when the first send is 60 s old: within a few seconds of 09:01:00.
    assert!(
        times[2].1 >= utc("2026-03-02T09:01:00Z") && times[2].1 <= utc("2026-03-02T09:01:03Z"),
        "{times:?}"
    );
    daemon.stop().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn max_per_day_counts_recipients_from_the_ledger_across_a_restart() {
    let pki = Pki::new();
    let server = ServerSpec::starttls(&pki).user("alice", PASSWORD).start();
    let two = "cc = [\"c@example.com\"]";
    let jobs = job("a", two) + &job("b", two);
    let cfg = limited(&server, &pki, "max_per_day = 5", &jobs);
    // Yesterday at 10:00 a send to 3 recipients went through `default` (another run).
    {
        std::fs::create_dir_all(cfg.dir.path().join("state")).unwrap();
        let l = ledger(&cfg.dir.path().join("state"));
        let key = Key::new("earlier", utc("2026-03-01T10:00:00Z"));
        l.claim(
            &[(key.clone(), "earlier@example.com".into())],
            utc("2026-03-01T10:00:00Z"),
        )
        .unwrap();
        l.start_attempt(&key, utc("2026-03-01T10:00:00Z")).unwrap();
        l.sent(&Receipt {
            recipients: 3,
            ..Receipt::new(key, "250 ok", utc("2026-03-01T10:00:00Z"))
        })
        .unwrap();
    }
    let daemon = InProcess::start(&cfg, utc("2026-03-02T08:59:58Z"));
    tokio::time::sleep(Duration::from_secs(10)).await;
    // 3 + 2 = 5 fits; the second message of 2 waits for yesterday's 3 to leave the window.
    assert_eq!(server.messages().len(), 1);
    tokio::time::sleep(Duration::from_secs(3600)).await;
    assert_eq!(server.messages().len(), 2);
    let mut times: Vec<_> = ["a", "b"]
        .iter()
        .map(|j| sent_at(&cfg, j, "2026-03-02T09:00:00Z"))
        .collect();
    times.sort_by_key(|(_, t)| *t);
    assert!(
        times[1].1 >= utc("2026-03-02T10:00:00Z") && times[1].1 <= utc("2026-03-02T10:00:03Z"),
        "{times:?}"
    );
    daemon.stop().await.unwrap();
}
