//! The built-in `OAuth2` flow against a real token endpoint (HTTPS on loopback, a test
//! CA) whose access tokens are the only ones the SMTP server's XOAUTH2 accepts: caching,
//! refresh on expiry, refresh-once on a refused token, a rotated refresh token saved,
//! `invalid_grant`, and `cronmail oauth2 authorize` (device code and loopback + PKCE).

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::os::unix::fs::PermissionsExt as _;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};

use crate::support::*;

const USER: &str = "alice@example.com";
const CLIENT: &str = "cronmail-test";
const REFRESH: &str = "rt-initial-0001";

fn oauth_server(pki: &Pki, oauth: &Value) -> SmtpServer {
    let mut spec = json!({"user": USER, "client_id": CLIENT, "refresh_tokens": [REFRESH]});
    for (k, v) in oauth.as_object().unwrap() {
        spec[k] = v.clone();
    }
    ServerSpec::starttls(pki).set("oauth", spec).start()
}

/// jobs.toml using [smtp.oauth2] against `server`'s token endpoint, with the refresh
/// token file written (`refresh-token` beside jobs.toml) unless `refresh` is None.
/// `keep_connections = false`: every send logs in, so what each login presents shows.
fn oauth_config(server: &SmtpServer, pki: &Pki, refresh: Option<&str>, jobs: &str) -> ConfigDir {
    let https = server.https_port.unwrap();
    let cfg = JobsToml::new()
        .top("state_dir = \"state\"")
        .smtp(server.port, "starttls", Some(&pki.ca))
        .user(USER)
        .smtp_key("timeout = \"10s\"")
        .smtp_key("keep_connections = false")
        .section(&format!(
            "[smtp.oauth2]\nclient_id = \"{CLIENT}\"\ntoken_url = \"https://localhost:{https}/token\"\n\
             device_code_url = \"https://localhost:{https}/devicecode\"\n\
             scope = \"https://outlook.office.com/SMTP.Send offline_access\"\n\
             refresh_token_file = \"refresh-token\""
        ))
        .fast_retries()
        .job(jobs)
        .write();
    if let Some(rt) = refresh {
        std::fs::write(cfg.dir.path().join("refresh-token"), format!("{rt}\n")).unwrap();
    }
    cfg
}

const EVERY_SECOND: &str = "[[job]]\nname = \"tick\"\nschedule = \"* * * * * *\"\ntimezone = \"UTC\"\n\
    to = [\"a@example.com\"]\nsubject = \"tick {{ time }}\"\nbody = \"b\"\n";

/// The token endpoint requests the server received, as (path, form).
fn token_posts(server: &SmtpServer) -> Vec<Value> {
    server
        .events()
        .into_iter()
        .filter(|e| e.cmd == "HTTP-POST")
        .map(|e| e.raw)
        .collect()
}

/// The access tokens XOAUTH2 presented, in order.
fn presented_tokens(server: &SmtpServer) -> Vec<String> {
    server
        .events()
        .iter()
        .filter(|e| e.cmd == "XOAUTH2")
        .map(|e| {
            let prefix = format!("user={USER}\u{1}auth=Bearer ");
            assert!(
                e.arg.starts_with(&prefix) && e.arg.ends_with("\u{1}\u{1}"),
                "not the documented XOAUTH2 format: {:?}",
                e.arg
            );
            assert!(e.tls, "XOAUTH2 before TLS");
            e.arg[prefix.len()..e.arg.len() - 2].to_owned()
        })
        .collect()
}

#[track_caller]
fn assert_no_secret_in(log: &str, server: &SmtpServer) {
    assert!(!log.contains(REFRESH), "the refresh token reached the log");
    for token in presented_tokens(server) {
        assert!(!log.contains(&token), "an access token reached the log");
    }
    for post in token_posts(server) {
        if let Some(rt) = post["form"]["refresh_token"].as_str() {
            assert!(!log.contains(rt), "a refresh token reached the log");
        }
    }
}

#[test]
fn one_refresh_serves_many_sends_while_the_token_is_valid() {
    let pki = Pki::new();
    let server = oauth_server(&pki, &json!({"expires_in": 3600}));
    let cfg = oauth_config(&server, &pki, Some(REFRESH), EVERY_SECOND);
    let daemon = Daemon::start(&cfg.path, &[]);
    let log_path = daemon.log.clone();
    daemon.wait_log(" sent", 3, Duration::from_secs(30));
    assert!(daemon.stop().success());

    let posts = token_posts(&server);
    assert_eq!(posts.len(), 1, "one refresh for all sends: {posts:?}");
    assert_eq!(posts[0]["arg"], "/token");
    assert_eq!(posts[0]["form"]["grant_type"], "refresh_token");
    assert_eq!(posts[0]["form"]["refresh_token"], REFRESH);
    assert_eq!(posts[0]["form"]["client_id"], CLIENT);
    let tokens = presented_tokens(&server);
    assert!(tokens.len() >= 3, "{tokens:?}");
    assert!(
        tokens.iter().all(|t| *t == tokens[0]),
        "the cached token was not reused: {tokens:?}"
    );
    assert!(server.messages().len() >= 3);
    assert_no_secret_in(&std::fs::read_to_string(&log_path).unwrap(), &server);
}

#[test]
fn a_token_near_its_expiry_is_refreshed_before_the_send() {
    let pki = Pki::new();
    // 60 s is within cronmail's one-minute margin: every send needs a new token.
    let server = oauth_server(&pki, &json!({"expires_in": 60}));
    let cfg = oauth_config(&server, &pki, Some(REFRESH), EVERY_SECOND);
    let daemon = Daemon::start(&cfg.path, &[]);
    let log_path = daemon.log.clone();
    daemon.wait_log(" sent", 3, Duration::from_secs(30));
    assert!(daemon.stop().success());

    let tokens = presented_tokens(&server);
    let posts = token_posts(&server);
    assert!(tokens.len() >= 3, "{tokens:?}");
    assert_eq!(posts.len(), tokens.len(), "one refresh per send");
    let distinct: std::collections::HashSet<_> = tokens.iter().collect();
    assert_eq!(
        distinct.len(),
        tokens.len(),
        "a token was reused past its margin"
    );
    assert_no_secret_in(&std::fs::read_to_string(&log_path).unwrap(), &server);
}

#[test]
fn a_refused_cached_token_is_refreshed_once_and_the_send_retried_at_once() {
    let pki = Pki::new();
    // Each access token works for one login: the server "revokes" it after that.
    let server = oauth_server(&pki, &json!({"expires_in": 3600, "token_uses": 1}));
    let cfg = oauth_config(&server, &pki, Some(REFRESH), EVERY_SECOND);
    let daemon = Daemon::start(&cfg.path, &[]);
    let log_path = daemon.log.clone();
    daemon.wait_log(" sent", 3, Duration::from_secs(30));
    assert!(daemon.stop().success());
    let log = std::fs::read_to_string(&log_path).unwrap();

    assert!(log.contains("refreshing it and trying once more"), "{log}");
    assert!(
        !log.contains("not sent"),
        "a send failed instead of being retried: {log}"
    );
    let messages = server.messages().len();
    let posts = token_posts(&server).len();
    assert_eq!(
        posts, messages,
        "one refresh per message (the first fresh, then one per refusal)"
    );
    // Each message after the first: the refused cached token, then the fresh one.
    assert_eq!(presented_tokens(&server).len(), 2 * messages - 1);
    assert_no_secret_in(&log, &server);
}

#[test]
fn a_rotated_refresh_token_replaces_the_old_one_atomically_with_mode_0600() {
    let pki = Pki::new();
    let server = oauth_server(&pki, &json!({"rotate": true}));
    let cfg = oauth_config(&server, &pki, Some(REFRESH), JOB);
    let file = cfg.dir.path().join("refresh-token");
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o640)).unwrap();

    let out = cronmail(&cfg.path, &["send", "weekly"], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("rotated the OAuth2 refresh token"),
        "{}",
        stderr(&out)
    );
    let saved = std::fs::read_to_string(&file).unwrap();
    let rotated = token_posts(&server)[0].clone();
    assert_ne!(saved.trim(), REFRESH);
    assert!(saved.starts_with("rt-"), "{saved}");
    let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let leftovers: Vec<_> = std::fs::read_dir(cfg.dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");

    // The server no longer accepts the old refresh token: a second send works only
    // because the new one was saved and read.
    let out = cronmail(&cfg.path, &["send", "weekly"], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let posts = token_posts(&server);
    assert_eq!(posts[1]["form"]["refresh_token"], saved.trim());
    assert_eq!(rotated["form"]["refresh_token"], REFRESH);
    assert_eq!(server.messages().len(), 2);
    assert_no_secret_in(&stderr(&out), &server);
}

#[test]
fn invalid_grant_says_to_sign_in_again_and_holds_sends_instead_of_hammering() {
    let pki = Pki::new();
    let server = oauth_server(
        &pki,
        &json!({"fail": {"status": 400, "error": "invalid_grant",
            "error_description": "AADSTS700082: The refresh token has expired due to inactivity."}}),
    );
    let cfg = oauth_config(&server, &pki, Some(REFRESH), JOB);
    let out = cronmail(&cfg.path, &["send", "weekly"], &[]);
    assert_eq!(out.status.code(), Some(77), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("invalid_grant: AADSTS700082"), "{err}");
    assert!(err.contains("cronmail oauth2 authorize"), "{err}");
    assert!(
        !server.commands().iter().any(|c| c == "EHLO"),
        "no SMTP connection without a token"
    );

    // The daemon: a job every second, the default 30 s hold after an auth failure.
    let cfg = ConfigDir::new(
        &std::fs::read_to_string(&cfg.path)
            .unwrap()
            .replace("retry_min = \"1s\"\nretry_max = \"2s\"\n", "")
            .replace(JOB, EVERY_SECOND),
    );
    std::fs::write(cfg.dir.path().join("refresh-token"), REFRESH).unwrap();
    let before = token_posts(&server).len();
    let daemon = Daemon::start(&cfg.path, &[]);
    let log_path = daemon.log.clone();
    daemon.wait_log("invalid_grant", 1, Duration::from_secs(20));
    daemon.wait_log("held:", 3, Duration::from_secs(20));
    assert!(daemon.stop().success());
    let log = std::fs::read_to_string(&log_path).unwrap();
    assert!(log.contains("class=auth"), "{log}");
    assert_eq!(
        token_posts(&server).len() - before,
        1,
        "later occurrences must wait, not each ask the endpoint: {log}"
    );
}

#[test]
fn an_untrusted_token_endpoint_is_refused_as_tls() {
    let pki = Pki::new();
    let server = oauth_server(&pki, &json!({}));
    let cfg = oauth_config(&server, &pki, Some(REFRESH), JOB);
    // Trust a different CA: the endpoint's certificate no longer verifies.
    let other = Pki::new();
    let text = std::fs::read_to_string(&cfg.path).unwrap().replace(
        &pki.ca.display().to_string(),
        &other.ca.display().to_string(),
    );
    std::fs::write(&cfg.path, text).unwrap();
    let out = cronmail(&cfg.path, &["send", "weekly"], &[]);
    assert_eq!(out.status.code(), Some(69), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("class=tls"), "{err}");
    assert!(err.contains("certificate was refused"), "{err}");
    assert!(err.contains("ca_file"), "{err}");
    assert!(
        token_posts(&server).is_empty(),
        "the form went to an unverified server"
    );
}

#[test]
fn check_exchanges_the_refresh_token_and_says_so() {
    let pki = Pki::new();
    let server = oauth_server(&pki, &json!({"expires_in": 3599}));
    let cfg = oauth_config(&server, &pki, Some(REFRESH), JOB);
    let out = cronmail(&cfg.path, &["check", "--smtp"], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("gave an access token"), "{text}");
    assert!(text.contains("59m 59s"), "{text}");
    assert!(
        text.contains(&format!("auth: accepted for `{USER}`")),
        "{text}"
    );

    std::fs::remove_file(cfg.dir.path().join("refresh-token")).unwrap();
    let out = cronmail(&cfg.path, &["check"], &[]);
    assert_eq!(out.status.code(), Some(77), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("cronmail oauth2 authorize"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn authorize_with_a_device_code_writes_a_refresh_token_that_then_sends() {
    let pki = Pki::new();
    let server = oauth_server(&pki, &json!({"device_pending": 2}));
    let cfg = oauth_config(&server, &pki, None, JOB);
    let out = cronmail(&cfg.path, &["oauth2", "authorize"], &[]);
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("enter the code ABCD-EFGH"), "{text}");
    assert!(text.contains("Saved the refresh token"), "{text}");

    let posts = token_posts(&server);
    let paths: Vec<_> = posts.iter().map(|p| p["arg"].as_str().unwrap()).collect();
    assert_eq!(
        paths,
        ["/devicecode", "/token", "/token", "/token"],
        "2 pending polls, then tokens"
    );
    assert_eq!(
        posts[0]["form"]["scope"],
        "https://outlook.office.com/SMTP.Send offline_access"
    );
    assert_eq!(
        posts[3]["form"]["grant_type"],
        "urn:ietf:params:oauth:grant-type:device_code"
    );
    let file = cfg.dir.path().join("refresh-token");
    let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let saved = std::fs::read_to_string(&file).unwrap();
    assert!(
        !text.contains(saved.trim()),
        "the refresh token was printed"
    );

    let out = cronmail(&cfg.path, &["send", "weekly"], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(server.messages().len(), 1);
}

#[test]
fn authorize_with_a_loopback_redirect_uses_pkce_and_checks_state() {
    let pki = Pki::new();
    let server = oauth_server(&pki, &json!({}));
    let https = server.https_port.unwrap();
    let cfg = oauth_config(&server, &pki, None, JOB);
    let text = std::fs::read_to_string(&cfg.path).unwrap().replace(
        &format!("device_code_url = \"https://localhost:{https}/devicecode\"\n"),
        &format!("authorize_url = \"https://localhost:{https}/authorize\"\n"),
    );
    std::fs::write(&cfg.path, text).unwrap();

    let mut child = Command::new(env!("CARGO_BIN_EXE_cronmail"))
        .args([
            "--config",
            cfg.path.to_str().unwrap(),
            "oauth2",
            "authorize",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let sign_in = loop {
        let line = lines.next().expect("no sign-in address printed").unwrap();
        if let Some(url) = line
            .trim()
            .strip_prefix(&format!("https://localhost:{https}/authorize?"))
        {
            break format!("https://localhost:{https}/authorize?{url}");
        }
    };
    let query: Vec<(String, String)> = reqwest::Url::parse(&sign_in)
        .unwrap()
        .query_pairs()
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    let get = |k: &str| {
        query
            .iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.clone())
            .unwrap()
    };
    assert_eq!(get("code_challenge_method"), "S256");
    assert_eq!(get("access_type"), "offline");
    let redirect = get("redirect_uri");
    assert!(redirect.starts_with("http://127.0.0.1:"), "{redirect}");

    // A redirect with the wrong state is turned away, and the flow goes on waiting.
    let wrong = http_get(&format!("{redirect}?code=stolen&state=forged"));
    assert!(wrong.starts_with("HTTP/1.1 400"), "{wrong}");

    // The browser: the sign-in page redirects to cronmail's listener.
    let location = tokio::runtime::Runtime::new().unwrap().block_on(async {
        let ca = std::fs::read(&pki.ca).unwrap();
        let der: Vec<Vec<u8>> = rustls_pemfile::certs(&mut ca.as_slice())
            .map(|c| c.unwrap().to_vec())
            .collect();
        let client = reqwest::Client::builder()
            .use_preconfigured_tls(cronmail::https_client_config(&der))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        let r = client.get(&sign_in).send().await.unwrap();
        assert_eq!(r.status(), 302);
        r.headers()["location"].to_str().unwrap().to_owned()
    });
    let page = http_get(&location);
    assert!(page.starts_with("HTTP/1.1 200"), "{page}");
    assert!(page.contains("signed in"), "{page}");
    let status = child.wait().unwrap();
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert!(status.success(), "{err}");

    let posts = token_posts(&server);
    let exchange = posts.last().unwrap();
    assert_eq!(exchange["form"]["grant_type"], "authorization_code");
    assert_eq!(exchange["form"]["redirect_uri"], redirect.as_str());
    assert!(exchange["form"]["code_verifier"].as_str().unwrap().len() >= 43);
    let saved = std::fs::read_to_string(cfg.dir.path().join("refresh-token")).unwrap();
    assert!(saved.starts_with("rt-"), "{saved}");
}

/// One plain-HTTP GET (the browser following a redirect to 127.0.0.1); the whole answer.
fn http_get(url: &str) -> String {
    let url = reqwest::Url::parse(url).unwrap();
    let mut stream =
        std::net::TcpStream::connect((url.host_str().unwrap(), url.port().unwrap())).unwrap();
    let target = format!("{}?{}", url.path(), url.query().unwrap_or_default());
    write!(stream, "GET {target} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n").unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    answer
}

#[test]
fn oauth2_config_mistakes_are_reported_with_their_place() {
    let smtp = "[smtp]\nhost = \"smtp.office365.com\"\nusername = \"a@example.com\"\n";
    let cases = [
        (
            "[smtp.oauth2]\nprovider = \"microsoft\"\n",
            "needs `client_id`",
        ),
        (
            "[smtp.oauth2]\nprovider = \"yahoo\"\nclient_id = \"x\"\n",
            "unknown OAuth2 provider `yahoo`",
        ),
        (
            "[smtp.oauth2]\nclient_id = \"x\"\ntoken_url = \"http://login.example/token\"\nscope = \"s\"\n",
            "must be an https:// URL",
        ),
        (
            "[smtp.oauth2]\nprovider = \"google\"\nclient_id = \"x\"\nclient_secret = \"hunter2\"\n",
            "a literal `client_secret` is not allowed",
        ),
        ("[smtp.oauth2]\nclient_id = \"x\"\n", "needs `provider"),
        (
            "token_command = [\"t\"]\n[smtp.oauth2]\nprovider = \"microsoft\"\nclient_id = \"x\"\n",
            "either `token_command` or [smtp.oauth2]",
        ),
        (
            "auth = \"login\"\npassword_env = \"P\"\n[smtp.oauth2]\nprovider = \"microsoft\"\nclient_id = \"x\"\n",
            "goes with `auth = \"xoauth2\"`",
        ),
        (
            "[smtp.oauth2]\nprovider = \"google\"\ntenant = \"contoso\"\nclient_id = \"x\"\n",
            "`tenant` goes with",
        ),
    ];
    assert_config_mistakes(
        &cases
            .iter()
            .map(|(extra, expected)| (format!("{smtp}{extra}"), *expected))
            .collect::<Vec<_>>(),
    );
}
