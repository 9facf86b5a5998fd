//! `cronmail send` against a real SMTP server (aiosmtpd) over real TLS on loopback.

use crate::support::*;

const PASSWORD: &str = "correct horse battery staple";

const GMAIL_535: &str = "535-5.7.8 Username and Password not accepted. For more information, go to\r\n\
535 5.7.8  https://support.google.com/mail/?p=BadCredentials a640c23a62f3a-ab7f2c0e0d3sm123456766b.42 - gsmtp";

fn send(cfg: &ConfigDir, password: &str, extra: &[&str]) -> std::process::Output {
    let mut args = vec!["send", "weekly"];
    args.extend_from_slice(extra);
    cronmail(&cfg.path, &args, &[("TEST_SMTP_PASSWORD", password)])
}

#[test]
fn starttls_with_auth_delivers_the_message() {
    let pki = Pki::new();
    let server = ServerSpec::starttls(&pki).user("alice", PASSWORD).start();
    let cfg = job_config(server.port, "starttls", Some(&pki.ca));

    let out = send(&cfg, PASSWORD, &[]);
    assert!(out.status.success(), "{}", stderr(&out));

    // The conversation went EHLO, STARTTLS, then AUTH only once TLS was up.
    let events = server.events();
    let starttls = events
        .iter()
        .position(|e| e.cmd == "STARTTLS")
        .expect("no STARTTLS");
    let auth = events
        .iter()
        .position(|e| e.cmd == "AUTH")
        .expect("no AUTH");
    assert!(starttls < auth);
    assert!(events[auth].tls, "AUTH before TLS: {events:?}");

    let msgs = server.messages();
    assert_eq!(msgs.len(), 1);
    let m = &msgs[0];
    assert!(m.tls);
    assert_eq!(m.mail_from, "bot@example.com");
    assert_eq!(
        m.rcpt_tos,
        ["team@example.com", "cc@example.com", "hidden@example.com"]
    );
    assert!(m.data.contains("Subject: Weekly report due "), "{}", m.data);
    assert!(
        m.data.contains("Auto-Submitted: auto-generated"),
        "{}",
        m.data
    );
    assert!(m.data.contains("Message-ID: <weekly."), "{}", m.data);
    assert!(m.data.contains("@example.com>"), "{}", m.data);
    assert!(m.data.contains("Cc: cc@example.com"), "{}", m.data);
    assert!(
        !m.data.to_ascii_lowercase().contains("bcc"),
        "Bcc leaked into the headers: {}",
        m.data
    );
    assert!(m.data.contains("Hi Junho, week "), "{}", m.data);

    // One INFO line for the delivery, with the fields the README promises.
    let log = stderr(&out);
    for field in [
        "job=weekly",
        "recipients=3",
        "message_id=weekly.",
        "smtp_code=250",
        "elapsed_ms=",
    ] {
        assert!(log.contains(field), "missing {field} in {log}");
    }
}

#[test]
fn implicit_tls_delivers_the_message() {
    let pki = Pki::new();
    let server = ServerSpec::implicit(&pki).user("alice", PASSWORD).start();
    let cfg = job_config(server.port, "implicit", Some(&pki.ca));

    let out = send(&cfg, PASSWORD, &["--to", "me@example.org"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let msgs = server.messages();
    assert_eq!(msgs.len(), 1);
    assert!(msgs[0].tls);
    // --to replaces every recipient, Bcc included.
    assert_eq!(msgs[0].rcpt_tos, ["me@example.org"]);
}

#[test]
fn gmail_bad_credentials_is_class_auth_with_the_app_password_hint() {
    let pki = Pki::new();
    let server = ServerSpec::starttls(&pki)
        .user("alice", PASSWORD)
        .set("auth_fail_reply", GMAIL_535)
        .start();
    let cfg = job_config(server.port, "starttls", Some(&pki.ca));

    let out = send(&cfg, "my-google-account-password", &[]);
    assert_eq!(out.status.code(), Some(77), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("class=auth"), "{err}");
    assert!(err.contains("535"), "{err}");
    assert!(err.contains("Username and Password not accepted"), "{err}");
    assert!(err.contains("BadCredentials"), "{err}");
    assert!(err.contains("App Password"), "{err}");
    assert!(err.contains("2-Step Verification"), "{err}");
    assert!(err.contains("XOAUTH2"), "{err}");
    // Which credential was used is named; its value never is.
    assert!(err.contains("TEST_SMTP_PASSWORD"), "{err}");
    assert!(!err.contains("my-google-account-password"), "{err}");
    assert!(server.messages().is_empty());
    assert!(!server.commands().contains(&"MAIL".to_owned()));
}

#[test]
fn no_starttls_offered_means_no_auth_and_no_message() {
    let server = ServerSpec::plain().user("alice", PASSWORD).start();
    let cfg = job_config(server.port, "starttls", None);

    let out = send(&cfg, PASSWORD, &[]);
    assert_eq!(out.status.code(), Some(69), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("class=tls"), "{err}");
    assert!(err.contains("did not offer STARTTLS"), "{err}");
    server.assert_nothing_sent();
}

#[test]
fn starttls_refused_with_454_means_no_auth_and_no_message() {
    let pki = Pki::new();
    let server = ServerSpec::starttls(&pki)
        .user("alice", PASSWORD)
        .set(
            "starttls_reply",
            "454 4.7.0 TLS not available due to temporary reason",
        )
        .start();
    let cfg = job_config(server.port, "starttls", Some(&pki.ca));

    let out = send(&cfg, PASSWORD, &[]);
    assert_eq!(out.status.code(), Some(69), "{}", stderr(&out));
    assert!(stderr(&out).contains("class=tls"), "{}", stderr(&out));
    server.assert_nothing_sent();
}

#[test]
fn untrusted_certificate_is_refused_before_auth() {
    let pki = Pki::new();
    let server = ServerSpec::starttls(&pki).user("alice", PASSWORD).start();
    // No ca_file: the test CA is not among the system roots.
    let cfg = job_config(server.port, "starttls", None);

    let out = send(&cfg, PASSWORD, &[]);
    assert_eq!(out.status.code(), Some(69), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("class=tls"), "{err}");
    assert!(err.contains("not trusted"), "{err}");
    assert!(err.contains("ca_file"), "{err}");
    server.assert_nothing_sent();
}

#[test]
fn certificate_for_another_host_is_refused() {
    let pki = Pki::with_leaf(&["mail.example.net"], None);
    let server = ServerSpec::implicit(&pki).user("alice", PASSWORD).start();
    let cfg = job_config(server.port, "implicit", Some(&pki.ca));

    let out = send(&cfg, PASSWORD, &[]);
    assert_eq!(out.status.code(), Some(69), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("another host name"),
        "{}",
        stderr(&out)
    );
    server.assert_nothing_sent();
}

#[test]
fn transient_4xx_at_data_is_class_transient() {
    let pki = Pki::new();
    let server = ServerSpec::starttls(&pki)
        .user("alice", PASSWORD)
        .set(
            "data_replies",
            vec!["451 4.3.0 Mail server temporarily rejected message"],
        )
        .start();
    let cfg = job_config(server.port, "starttls", Some(&pki.ca));

    let out = send(&cfg, PASSWORD, &[]);
    assert_eq!(out.status.code(), Some(75), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("class=transient"), "{err}");
    assert!(err.contains("451"), "{err}");
}

#[test]
fn permanent_5xx_at_rcpt_is_class_permanent() {
    let pki = Pki::new();
    let server = ServerSpec::starttls(&pki)
        .user("alice", PASSWORD)
        .set(
            "rcpt_reply",
            "550 5.1.1 The email account that you tried to reach does not exist",
        )
        .start();
    let cfg = job_config(server.port, "starttls", Some(&pki.ca));

    let out = send(&cfg, PASSWORD, &[]);
    assert_eq!(out.status.code(), Some(65), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("class=permanent"), "{err}");
    assert!(err.contains("phase=\"RCPT TO\""), "{err}");
    assert!(err.contains("does not exist"), "{err}");
    assert!(server.messages().is_empty());
}

#[test]
fn connection_refused_is_class_connect() {
    // Bind and drop to get a port nobody listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let cfg = ConfigDir::new(&format!(
        "{FROM}[smtp]\nhost = \"127.0.0.1\"\nport = {port}\ntls = \"implicit\"\n{JOB}"
    ));
    let out = cronmail(&cfg.path, &["send", "weekly"], &[]);
    assert_eq!(out.status.code(), Some(69), "{}", stderr(&out));
    assert!(stderr(&out).contains("class=connect"), "{}", stderr(&out));
}

#[test]
fn secrets_never_reach_the_logs_even_at_trace() {
    use base64::Engine as _;
    let pki = Pki::new();
    let server = ServerSpec::starttls(&pki).user("alice", PASSWORD).start();
    let cfg = job_config(server.port, "starttls", Some(&pki.ca));

    let out = cronmail(
        &cfg.path,
        &["--log-level", "trace", "send", "weekly"],
        &[("TEST_SMTP_PASSWORD", PASSWORD)],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let all = [out.stdout.as_slice(), out.stderr.as_slice()].concat();
    let text = String::from_utf8_lossy(&all);
    let plain = base64::engine::general_purpose::STANDARD.encode(format!("\0alice\0{PASSWORD}"));
    assert!(!text.contains(PASSWORD), "password in logs");
    assert!(!text.contains(&plain), "AUTH PLAIN blob in logs");
    // The server did receive that exact AUTH PLAIN blob, so the search was meaningful.
    assert!(
        server
            .events()
            .iter()
            .any(|e| e.cmd == "AUTH" && e.arg.contains(&plain))
    );
}

#[test]
fn check_smtp_reports_tls_and_auth_without_sending() {
    let pki = Pki::new();
    let server = ServerSpec::starttls(&pki).user("alice", PASSWORD).start();
    let cfg = job_config(server.port, "starttls", Some(&pki.ca));

    let out = cronmail(
        &cfg.path,
        &["check", "--smtp"],
        &[("TEST_SMTP_PASSWORD", PASSWORD)],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("tls: TLSv1.3"), "{text}");
    assert!(text.contains("certificate: CN=localhost"), "{text}");
    assert!(text.contains("fingerprint: sha256:"), "{text}");
    assert!(text.contains("auth: accepted for `alice`"), "{text}");
    assert!(server.events().iter().any(|e| e.cmd == "AUTH"));
    assert!(server.messages().is_empty());
    assert!(!server.commands().contains(&"MAIL".to_owned()));

    let bad = cronmail(
        &cfg.path,
        &["check", "--smtp"],
        &[("TEST_SMTP_PASSWORD", "wrong")],
    );
    assert_eq!(bad.status.code(), Some(77), "{}", stderr(&bad));
    assert!(stderr(&bad).contains("hint:"), "{}", stderr(&bad));
}
