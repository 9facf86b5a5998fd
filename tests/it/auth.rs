//! XOAUTH2 with a token from `token_command`, against a server that checks the wire
//! format and answers a bad token the way Google does.

use crate::support::*;

const GMAIL_535: &str = "535-5.7.8 Username and Password not accepted. For more information, go to\r\n\
535 5.7.8  https://support.google.com/mail/?p=BadCredentials x - gsmtp";

fn config(server: &SmtpServer, pki: &Pki, token_script: &str) -> ConfigDir {
    let cfg = ConfigDir::new("");
    let script = cfg.dir.path().join("token.sh");
    std::fs::write(&script, format!("#!/bin/sh\n{token_script}\n")).unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
    let text = JobsToml::new()
        .smtp(server.port, "starttls", Some(&pki.ca))
        .user("alice@example.com")
        .smtp_key("auth = \"xoauth2\"")
        .smtp_key(&format!("token_command = [\"{}\"]", script.display()))
        .smtp_key("timeout = \"10s\"")
        .job(JOB)
        .text();
    std::fs::write(&cfg.path, text).unwrap();
    cfg
}

fn server(pki: &Pki) -> SmtpServer {
    ServerSpec::starttls(pki)
        .set(
            "xoauth2",
            serde_json::json!({"user": "alice@example.com", "token": "ya29.a0Af-good"}),
        )
        .set("auth_fail_reply", GMAIL_535)
        .start()
}

#[test]
fn a_token_from_token_command_logs_in_with_the_documented_wire_format() {
    let pki = Pki::new();
    let server = server(&pki);
    let cfg = config(&server, &pki, "echo ya29.a0Af-good");
    let out = cronmail(&cfg.path, &["send", "weekly"], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let events = server.events();
    let x = events
        .iter()
        .find(|e| e.cmd == "XOAUTH2")
        .expect("no XOAUTH2");
    assert_eq!(
        x.arg,
        "user=alice@example.com\u{1}auth=Bearer ya29.a0Af-good\u{1}\u{1}"
    );
    assert!(x.tls, "XOAUTH2 before TLS");
    assert_eq!(server.messages().len(), 1);
    let log = stderr(&out);
    assert!(
        !log.contains("ya29.a0Af-good"),
        "the token reached the log: {log}"
    );

    let check = cronmail(&cfg.path, &["check"], &[]);
    assert!(check.status.success(), "{}", stderr(&check));
    assert!(
        stdout(&check).contains("printed an access token"),
        "{}",
        stdout(&check)
    );
}

#[test]
fn a_refused_token_reads_googles_final_reply_and_hints_at_the_token() {
    let pki = Pki::new();
    let server = server(&pki);
    let cfg = config(&server, &pki, "echo ya29.expired");
    let out = cronmail(&cfg.path, &["send", "weekly"], &[]);
    assert_eq!(out.status.code(), Some(77), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("535"), "{err}");
    assert!(err.contains("BadCredentials"), "{err}");
    assert!(err.contains("refused the OAuth2 token"), "{err}");
    assert!(err.contains("XOAUTH2 token from command"), "{err}");
    assert!(!err.contains("ya29.expired"), "{err}");
    // The client answered the 334 challenge with an empty line, as Google expects.
    assert!(
        server
            .events()
            .iter()
            .any(|e| e.cmd == "XOAUTH2-CONTINUE" && e.arg.is_empty())
    );
    server.assert_nothing_sent_after_auth();
}

#[test]
fn an_app_password_sent_as_a_token_is_called_out() {
    let pki = Pki::new();
    let server = server(&pki);
    let cfg = config(&server, &pki, "echo 'abcd efgh ijkl mnop'");
    let check = cronmail(&cfg.path, &["check"], &[]);
    assert!(
        stderr(&check).contains("looks like an App Password"),
        "{}",
        stderr(&check)
    );
    let out = cronmail(&cfg.path, &["send", "weekly"], &[]);
    assert_eq!(out.status.code(), Some(77), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("looks like an App Password"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn a_failing_token_command_is_an_auth_failure_with_its_stderr() {
    let pki = Pki::new();
    let server = server(&pki);
    let cfg = config(&server, &pki, "echo 'refresh token revoked' >&2; exit 4");
    let out = cronmail(&cfg.path, &["send", "weekly"], &[]);
    assert_eq!(out.status.code(), Some(77), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("refresh token revoked"),
        "{}",
        stderr(&out)
    );
    assert!(!server.events().iter().any(|e| e.cmd == "XOAUTH2"));
}

#[test]
fn xoauth2_config_mistakes_are_reported() {
    let cases = [
        (
            "auth = \"xoauth2\"\nusername = \"a@example.com\"\n",
            "needs an [smtp.oauth2] section",
        ),
        (
            "auth = \"xoauth2\"\nusername = \"a@example.com\"\ntoken_command = [\"t\"]\npassword_env = \"X\"\n",
            "not a password",
        ),
        (
            "username = \"a@example.com\"\npassword_env = \"X\"\nauth = \"cram-md5\"\n",
            "unknown `auth` `cram-md5`",
        ),
        ("token_command = [\"t\"]\n", "XOAUTH2 needs `username`"),
    ];
    assert_config_mistakes(
        &cases
            .iter()
            .map(|(smtp, expected)| {
                (
                    format!("[smtp]\nhost = \"smtp.example.com\"\n{smtp}"),
                    *expected,
                )
            })
            .collect::<Vec<_>>(),
    );
}
