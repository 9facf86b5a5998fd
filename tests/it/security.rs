//! Failing closed: TLS policy proven from the server side, certificate pinning, header
//! injection, limits, and properties over arbitrary input.

use std::time::Duration;

use proptest::prelude::*;

use crate::support::*;

const PASSWORD: &str = "pw-7f3a";

fn send_with(cfg: &ConfigDir) -> std::process::Output {
    cronmail(
        &cfg.path,
        &["send", "weekly"],
        &[("TEST_SMTP_PASSWORD", PASSWORD)],
    )
}

#[test]
fn expired_certificate_is_refused_and_nothing_is_sent() {
    let past = time::OffsetDateTime::now_utc() - time::Duration::days(30);
    let pki = Pki::with_leaf(
        &["localhost", "127.0.0.1"],
        Some((past - time::Duration::days(60), past)),
    );
    let server = ServerSpec::starttls(&pki).user("alice", PASSWORD).start();
    let cfg = job_config(server.port, "starttls", Some(&pki.ca));
    let out = send_with(&cfg);
    assert_eq!(out.status.code(), Some(69), "{}", stderr(&out));
    assert!(stderr(&out).contains("has expired"), "{}", stderr(&out));
    server.assert_nothing_sent();
}

#[test]
fn a_server_offering_only_tls_1_0_or_1_1_is_refused_and_nothing_is_sent() {
    for version in ["TLSv1", "TLSv1_1"] {
        let pki = Pki::new();
        let server = ServerSpec::implicit(&pki)
            .user("alice", PASSWORD)
            .set("legacy_tls", true)
            .set("min_tls", version)
            .set("max_tls", version)
            .start();
        let cfg = job_config(server.port, "implicit", Some(&pki.ca));
        let out = send_with(&cfg);
        assert_eq!(out.status.code(), Some(69), "{version}: {}", stderr(&out));
        assert!(
            stderr(&out).contains("class=tls"),
            "{version}: {}",
            stderr(&out)
        );
        server.assert_nothing_sent();
    }
}

#[test]
fn a_pinned_self_signed_certificate_is_accepted_exactly_when_it_matches() {
    let pki = Pki::self_signed();
    let server = ServerSpec::starttls(&pki).user("alice", PASSWORD).start();
    let base = smtp_for(server.port, "starttls", None);

    // Without a pin: untrusted, and `check --smtp` shows the fingerprint to pin.
    let cfg = base.clone().job(JOB).write();
    let out = cronmail(
        &cfg.path,
        &["check", "--smtp"],
        &[("TEST_SMTP_PASSWORD", PASSWORD)],
    );
    assert_eq!(out.status.code(), Some(69), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(&format!("fingerprint {}", pki.fingerprint())),
        "{}",
        stderr(&out)
    );
    server.assert_nothing_sent();

    // The right pin, copied from that output: delivered.
    let pinned = base
        .clone()
        .smtp_key(&format!("tls_fingerprint = \"{}\"", pki.fingerprint()))
        .job(JOB)
        .write();
    let out = send_with(&pinned);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(server.messages().len(), 1);
    let out = cronmail(
        &pinned.path,
        &["check", "--smtp"],
        &[("TEST_SMTP_PASSWORD", PASSWORD)],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains(&format!("fingerprint: {}", pki.fingerprint())),
        "{}",
        stdout(&out)
    );

    // Another pin: refused before AUTH.
    let auths = server.commands().iter().filter(|c| *c == "AUTH").count();
    let wrong = format!("sha256:{}", "AB".repeat(32));
    let other = base
        .smtp_key(&format!("tls_fingerprint = \"{wrong}\""))
        .job(JOB)
        .write();
    let out = send_with(&other);
    assert_eq!(out.status.code(), Some(69), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("does not match `tls_fingerprint`"),
        "{}",
        stderr(&out)
    );
    assert_eq!(
        server.commands().iter().filter(|c| *c == "AUTH").count(),
        auths,
        "AUTH was sent to an unpinned server"
    );
    assert_eq!(server.messages().len(), 1);
}

#[test]
fn a_malformed_pin_is_a_config_error() {
    let cfg = ConfigDir::new(&format!(
        "{FROM}[smtp]\nhost = \"smtp.example.com\"\ntls_fingerprint = \"md5:1234\"\n{JOB}"
    ));
    let out = cronmail(&cfg.path, &["check"], &[]);
    assert_eq!(out.status.code(), Some(78));
    assert!(
        stderr(&out).contains("is not `sha256:` and 64 hex digits"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn a_bcc_injected_through_a_rendered_subject_never_reaches_the_server() {
    let pki = Pki::new();
    let server = ServerSpec::starttls(&pki).user("alice", PASSWORD).start();
    // Clean for the next occurrence (on the hour, which `check` test-renders), but the
    // subject of a manual send (now, to the second) carries a header.
    let job = r#"
[[job]]
name = "weekly"
schedule = "0 * * * *"
to = ["team@example.com"]
subject = "Report{% if scheduled_at | strftime('%M%S') != '0000' %}{{ vars.evil }}{% endif %}"
body = "b"
[job.vars]
evil = "x\r\nBcc: attacker@example.net"
"#;
    let cfg = smtp_for(server.port, "starttls", Some(&pki.ca))
        .job(job)
        .write();
    assert!(
        cronmail(&cfg.path, &["check"], &[("TEST_SMTP_PASSWORD", PASSWORD)])
            .status
            .success()
    );
    if chrono::Utc::now().timestamp() % 3600 >= 3598 {
        std::thread::sleep(Duration::from_secs(3));
    }
    let out = send_with(&cfg);
    assert_eq!(out.status.code(), Some(78), "{}", stderr(&out));
    assert!(stderr(&out).contains("line break"), "{}", stderr(&out));
    assert!(!stderr(&out).contains("panicked"));
    server.assert_nothing_sent();
}

#[test]
fn header_values_from_the_config_with_line_breaks_are_refused_at_check() {
    for (key, value) in [
        ("to", "[\"Eve\\r\\nBcc: x@example.net <eve@example.com>\"]"),
        ("reply_to", "\"a@example.com\\nBcc: x@example.net\""),
        ("from", "\"Bot\\u0000 <bot@example.com>\""),
    ] {
        let cfg = ConfigDir::new(&format!(
            "from = \"bot@example.com\"\n[outbox]\n[[job]]\nname = \"a\"\nschedule = \"@daily\"\nsubject = \"s\"\nbody = \"b\"\n{}{key} = {value}\n",
            if key == "to" {
                ""
            } else {
                "to = [\"a@example.com\"]\n"
            }
        ));
        let out = cronmail(&cfg.path, &["check"], &[]);
        assert_eq!(out.status.code(), Some(78), "{key}: {}", stderr(&out));
        assert!(
            stderr(&out).contains("an address must be one line"),
            "{key}: {}",
            stderr(&out)
        );
    }
}

#[test]
fn too_many_recipients_is_a_config_error() {
    let to: Vec<String> = (0..501).map(|i| format!("\"u{i}@example.com\"")).collect();
    let cfg = ConfigDir::new(&format!(
        "from = \"bot@example.com\"\n[outbox]\n[[job]]\nname = \"a\"\nschedule = \"@daily\"\nsubject = \"s\"\nbody = \"b\"\nto = [{}]\n",
        to.join(", ")
    ));
    let out = cronmail(&cfg.path, &["check"], &[]);
    assert_eq!(out.status.code(), Some(78));
    assert!(
        stderr(&out).contains("501 recipients, more than the limit of 500"),
        "{}",
        stderr(&out)
    );
}

fn host() -> cronmail::config::Host {
    cronmail::config::Host::fixed(chrono::DateTime::from_timestamp(1_800_000_000, 0).unwrap())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    /// Config parse + validate: any text gives a Config or diagnostics, never a panic.
    #[test]
    fn config_never_panics(text in "\\PC{0,400}") {
        let _ = cronmail::config::parse(std::path::Path::new("/x/jobs.toml"), &text, &host());
    }

    /// Config-shaped input: mutate values inside a valid skeleton.
    #[test]
    fn config_values_never_panic(
        schedule in "[0-9*/,LW#+@a-zA-Z -]{0,30}",
        tz in "[A-Za-z/_+-]{0,20}",
        addr in "\\PC{0,40}",
        subject in "\\PC{0,60}",
        dur in "[0-9a-z -]{0,10}",
    ) {
        let text = format!(
            "from = {addr:?}\n[outbox]\n[delivery]\nretry_min = {dur:?}\n[[job]]\nname = \"a\"\nschedule = {schedule:?}\ntimezone = {tz:?}\nto = [{addr:?}]\nsubject = {subject:?}\nbody = \"b\"\n"
        );
        let _ = cronmail::config::parse(std::path::Path::new("/x/jobs.toml"), &text, &host());
    }

    /// Cron parse + next occurrence: never panics; when it fires, strictly increasing.
    #[test]
    fn cron_never_panics_and_next_increases(expr in "[0-9*/,LW#?+ -]{0,24}", start in 0i64..4_000_000_000) {
        if let Ok(s) = cronmail::schedule::Schedule::parse(&expr, chrono_tz::Europe::Berlin) {
            let t0 = chrono::DateTime::from_timestamp(start, 0).unwrap();
            if let Some(t1) = s.next_after(t0) {
                prop_assert!(t1 > t0);
                if let Some(t2) = s.next_after(t1) {
                    prop_assert!(t2 > t1);
                }
            }
        }
    }

    /// Render with arbitrary vars: never panics, and a subject with a line break never
    /// becomes a message.
    #[test]
    fn render_and_compose_never_inject(value in "\\PC{0,80}", template in "[{}% a-z.|()'\"]{0,40}") {
        let text = format!(
            "from = \"bot@example.com\"\n[outbox]\n[[job]]\nname = \"a\"\nschedule = \"@daily\"\nto = [\"a@example.com\"]\nsubject = \"{{{{ vars.v }}}}\"\nbody = {template:?}\n[job.vars]\nv = {value:?}\n"
        );
        if let Ok(cfg) = cronmail::config::parse(std::path::Path::new("/x/jobs.toml"), &text, &host()) {
            let job = &cfg.jobs[0];
            let at = chrono::DateTime::from_timestamp(1_800_000_000, 0).unwrap();
            if let Ok(out) = cronmail::prepare(&cfg, job, at, at, None, None) {
                let text = String::from_utf8_lossy(&out.bytes);
                let headers = text.split("\r\n\r\n").next().unwrap_or_default();
                prop_assert!(!headers.to_ascii_lowercase().contains("\r\nbcc:"));
                prop_assert_eq!(out.envelope.to().len(), 1);
            }
        }
    }

    /// Address parsing for headers: never panics; whatever passes has no line break.
    #[test]
    fn addresses_never_panic(addr in "\\PC{0,60}") {
        let text = format!("from = \"bot@example.com\"\n[outbox]\n[[job]]\nname = \"a\"\nschedule = \"@daily\"\nto = [{addr:?}]\nsubject = \"s\"\nbody = \"b\"\n");
        if let Ok(cfg) = cronmail::config::parse(std::path::Path::new("/x/jobs.toml"), &text, &host()) {
            let at = chrono::DateTime::from_timestamp(1_800_000_000, 0).unwrap();
            let out = cronmail::prepare(&cfg, &cfg.jobs[0], at, at, None, None);
            prop_assert!(out.is_ok());
        }
    }
}
