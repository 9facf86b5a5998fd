//! Operations against real clients and servers: `/metrics` parsed by Python's
//! `prometheus_client` after a success and a failure, `/healthz`, a listener that slow
//! clients cannot block, and pings, the heartbeat, the webhook and the command, each
//! recorded by a real HTTP server, with the URLs' tokens never in the log.

use std::io::{Read as _, Write as _};
use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use crate::support::*;

const REFUSED: &str = "550 5.1.1 <nobody@example.com>: no such user";

/// A free loopback port for `[http] listen`.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `GET path` on the daemon's listener: (status, body).
fn get(port: u16, path: &str) -> (u16, String) {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let status = out
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = out.split_once("\r\n\r\n").map_or("", |(_, b)| b).to_owned();
    (status, body)
}

/// The samples of an exposition, parsed by the `OpenMetrics` parser of `prometheus_client`:
/// [{"name", "labels", "value"}].
fn parse_openmetrics(text: &str) -> Vec<Value> {
    let script = r#"
import json, sys
from prometheus_client.openmetrics.parser import text_string_to_metric_families
out = []
for family in text_string_to_metric_families(sys.stdin.read()):
    for s in family.samples:
        out.append({"family": family.name, "type": family.type, "name": s.name, "labels": s.labels, "value": s.value})
print(json.dumps(out))
"#;
    let mut child = Command::new(python())
        .args(["-c", script])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "prometheus_client refused the exposition: {}\n{text}",
        stderr(&out)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn sample(samples: &[Value], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    samples
        .iter()
        .find(|s| {
            s["name"] == name
                && labels
                    .iter()
                    .all(|(k, v)| s["labels"][*k].as_str() == Some(*v))
        })
        .and_then(|s| s["value"].as_f64())
}

/// Two jobs every 2 s through real SMTP: `ok` is delivered, `bad`'s recipient refused.
fn two_jobs(
    server: &SmtpServer,
    pki: &Pki,
    extra: &str,
    ok_extra: &str,
    bad_extra: &str,
) -> ConfigDir {
    let cfg = JobsToml::new()
        .top("timezone = \"UTC\"")
        .top("state_dir = \"state\"")
        .smtp(server.port, "starttls", Some(&pki.ca))
        .smtp_key("password_file = \"pw\"")
        .section(extra)
        .job(&format!(
            "[[job]]\nname = \"ok\"\nschedule = \"*/2 * * * * *\"\nto = [\"a@example.com\"]\nsubject = \"ok\"\nbody = \"b\"\n{ok_extra}"
        ))
        .job(&format!(
            "[[job]]\nname = \"bad\"\nschedule = \"*/2 * * * * *\"\nto = [\"nobody@example.com\"]\nsubject = \"bad\"\nbody = \"b\"\n{bad_extra}"
        ))
        .write();
    std::fs::write(cfg.dir.path().join("pw"), "pw").unwrap();
    cfg
}

fn refusing_server(pki: &Pki) -> SmtpServer {
    ServerSpec::starttls(pki)
        .user("alice", "pw")
        .set(
            "rcpt_refuse",
            serde_json::json!({ "nobody@example.com": REFUSED }),
        )
        .start()
}

/// `two_jobs` with `[http]` on a free port, running: its config, the daemon, the port.
fn serving(server: &SmtpServer, pki: &Pki) -> (ConfigDir, Daemon, u16) {
    let port = free_port();
    let cfg = two_jobs(
        server,
        pki,
        &format!("[http]\nlisten = \"127.0.0.1:{port}\""),
        "",
        "",
    );
    let daemon = Daemon::start(&cfg.path, &[]);
    daemon.wait_log(
        "serving the status page, /metrics",
        1,
        Duration::from_secs(20),
    );
    (cfg, daemon, port)
}

#[test]
fn metrics_after_a_success_and_a_failure_parse_with_prometheus_client_and_healthz_is_200() {
    let pki = Pki::new();
    let server = refusing_server(&pki);
    let (_cfg, daemon, port) = serving(&server, &pki);
    // Before anything is sent, the account's hold is there, at 0.
    let before = parse_openmetrics(&get(port, "/metrics").1);
    assert_eq!(
        sample(&before, "cronmail_held", &[("account", "default")]),
        Some(0.0)
    );
    daemon.wait_log("job=ok", 1, Duration::from_secs(20));
    daemon.wait_log("job=bad", 1, Duration::from_secs(20));
    let (status, text) = get(port, "/metrics");
    assert_eq!(status, 200);
    let m = parse_openmetrics(&text);
    #[allow(clippy::cast_precision_loss)] // Unix milliseconds fit an f64 exactly
    let now = chrono::Utc::now().timestamp_millis() as f64 / 1000.0;
    assert!(
        sample(&m, "cronmail_sent_total", &[("job", "ok")]).unwrap() >= 1.0,
        "{text}"
    );
    assert_eq!(
        sample(&m, "cronmail_sent_total", &[("job", "bad")]),
        None,
        "{text}"
    );
    assert!(
        sample(
            &m,
            "cronmail_failures_total",
            &[("job", "bad"), ("class", "permanent")]
        )
        .unwrap()
            >= 1.0,
        "{text}"
    );
    let last = sample(
        &m,
        "cronmail_last_success_timestamp_seconds",
        &[("job", "ok")],
    )
    .unwrap();
    assert!((now - last).abs() < 30.0, "last success {last}, now {now}");
    let next = sample(
        &m,
        "cronmail_next_fire_timestamp_seconds",
        &[("job", "bad")],
    )
    .unwrap();
    assert!(
        next > now - 1.0 && next <= now + 3.0,
        "next fire {next}, now {now}"
    );
    assert_eq!(
        sample(&m, "cronmail_held", &[("account", "default")]),
        Some(0.0)
    );
    assert_eq!(
        sample(&m, "cronmail_pending", &[("job", "ok")]).map(|v| v <= 1.0),
        Some(true)
    );
    assert!(sample(&m, "cronmail_send_duration_seconds_count", &[]).unwrap() >= 2.0);
    assert!(sample(&m, "cronmail_fire_lateness_seconds_count", &[]).unwrap() >= 2.0);
    assert!(
        sample(
            &m,
            "cronmail_build_info",
            &[("version", env!("CARGO_PKG_VERSION"))]
        )
        .is_some(),
        "{text}"
    );
    assert_eq!(get(port, "/healthz"), (200, "ok\n".to_owned()));
    assert_eq!(get(port, "/nothing").0, 404);
    daemon.stop();
}

#[test]
fn slow_clients_cannot_block_the_listener() {
    let pki = Pki::new();
    let server = refusing_server(&pki);
    let (_cfg, daemon, port) = serving(&server, &pki);
    // Twenty connections that send half a header and wait, more than it serves at once.
    let idle: Vec<std::net::TcpStream> = (0..20)
        .map(|_| {
            let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
            s.write_all(b"GET /metrics HTTP/1.1\r\nX-Slow: ").unwrap();
            s
        })
        .collect();
    // The header timeout (5 s) frees their slots; a real request is served after it.
    let started = std::time::Instant::now();
    assert_eq!(get(port, "/healthz").0, 200);
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "took {:?}",
        started.elapsed()
    );
    // A header larger than the limit is refused, not read forever.
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let big = format!("GET / HTTP/1.1\r\nX-Big: {}\r\n\r\n", "a".repeat(64 * 1024));
    let _ = s.write_all(big.as_bytes());
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    assert!(out.is_empty() || out.starts_with("HTTP/1.1 431"), "{out}");
    drop(idle);
    // The daemon went on delivering meanwhile.
    daemon.wait_log("job=ok", 2, Duration::from_secs(20));
    daemon.stop();
}

#[test]
fn pings_the_heartbeat_the_webhook_and_the_command_report_without_showing_their_tokens() {
    let pki = Pki::new();
    let server = refusing_server(&pki);
    let hooks = HttpRecorder::start();
    let out = tempfile::tempdir().unwrap();
    let env_file = out.path().join("env.txt");
    let cfg = two_jobs(
        &server,
        &pki,
        &format!(
            "[monitor]\nheartbeat_url = \"{}\"\nheartbeat_every = \"1s\"\n[notify]\nwebhook = \"{}\"\ncommand = [\"sh\", \"-c\", \"env > \\\"$0\\\"\", \"{}\"]",
            hooks.url("/hb/SECRET-HB"),
            hooks.url("/hook/SECRET-HOOK"),
            env_file.display()
        ),
        &format!("ping_url = \"{}\"", hooks.url("/ping/SECRET-OK")),
        &format!("ping_url = \"{}\"", hooks.url("/ping/SECRET-BAD")),
    );
    let daemon = Daemon::start(&cfg.path, &[("CRONMAIL_LOG", "trace")]);
    let has = |method: &str, path: &str| {
        hooks
            .requests()
            .iter()
            .any(|r| r.method == method && r.path == path)
    };
    let ok = wait_until(Duration::from_secs(30), || {
        has("GET", "/ping/SECRET-OK/start")
            && has("GET", "/ping/SECRET-OK")
            && has("GET", "/ping/SECRET-BAD/start")
            && has("POST", "/ping/SECRET-BAD/fail")
            && has("POST", "/hook/SECRET-HOOK")
            && hooks
                .requests()
                .iter()
                .filter(|r| r.path == "/hb/SECRET-HB")
                .count()
                >= 2
            && std::fs::read_to_string(&env_file).is_ok_and(|e| e.contains("CRONMAIL_MESSAGE_ID"))
    });
    let log = daemon.log_text();
    daemon.stop();
    assert!(ok, "requests: {:?}", hooks.requests());
    let reqs = hooks.requests();
    // healthchecks.io's order for each attempt: /start, then the outcome.
    let ok_paths: Vec<&str> = reqs
        .iter()
        .filter(|r| r.path.starts_with("/ping/SECRET-OK"))
        .map(|r| r.path.as_str())
        .collect();
    assert_eq!(&ok_paths[..2], ["/ping/SECRET-OK/start", "/ping/SECRET-OK"]);
    assert!(!reqs.iter().any(|r| r.path == "/ping/SECRET-OK/fail"));
    let fail = reqs
        .iter()
        .find(|r| r.path == "/ping/SECRET-BAD/fail")
        .unwrap();
    assert!(
        fail.body.contains(REFUSED) && fail.body.contains("permanent"),
        "{}",
        fail.body
    );
    let hook = reqs.iter().find(|r| r.path == "/hook/SECRET-HOOK").unwrap();
    assert_eq!(hook.content_type, "application/json");
    let event: Value = serde_json::from_str(&hook.body).unwrap();
    assert_eq!(event["job"], "bad");
    assert_eq!(event["state"], "failed");
    assert_eq!(event["class"], "permanent");
    assert_eq!(event["reply"], REFUSED);
    assert!(
        event["message_id"].as_str().unwrap().starts_with("bad."),
        "{event}"
    );
    assert!(event["occurrence"].as_str().unwrap().ends_with('Z'));
    let env = std::fs::read_to_string(&env_file).unwrap();
    assert!(
        env.contains("CRONMAIL_JOB=bad") && env.contains("CRONMAIL_CLASS=permanent"),
        "{env}"
    );
    assert!(
        !env.contains("SECRET"),
        "the command's environment has no URL"
    );
    // Even at TRACE, no URL is logged whole.
    assert!(!log.contains("SECRET"), "a token was logged:\n{log}");
}

#[test]
fn a_webhook_that_keeps_failing_is_retried_and_warned_about_once_per_streak_and_deliveries_go_on() {
    let pki = Pki::new();
    let server = refusing_server(&pki);
    let hooks = HttpRecorder::start();
    hooks.answer(500);
    let cfg = two_jobs(
        &server,
        &pki,
        &format!(
            "[notify]\nwebhook = \"{}\"\nformat = \"text\"",
            hooks.url("/hook/SECRET")
        ),
        "",
        "",
    );
    let daemon = Daemon::start(&cfg.path, &[]);
    // Two failures' alerts, each tried three times.
    let ok = wait_until(Duration::from_secs(40), || hooks.requests().len() >= 6);
    daemon.wait_log("job=ok", 3, Duration::from_secs(20));
    let log = daemon.log_text();
    daemon.stop();
    assert!(ok, "{:?}", hooks.requests());
    let reqs = hooks.requests();
    assert_eq!(reqs[0].content_type, "text/plain; charset=utf-8");
    assert!(
        reqs[0].body.starts_with("cronmail: job `bad` occurrence "),
        "{}",
        reqs[0].body
    );
    assert_eq!(log.matches("failed after 3 tries").count(), 1, "{log}");
    assert!(log.contains("target=webhook http://127.0.0.1"), "{log}");
    assert!(!log.contains("SECRET"), "{log}");
}

#[test]
fn ops_mistakes_are_located_errors() {
    let cases = [
        (
            "[http]\nlisten = \"localhost\"\n",
            "`listen` `localhost` is not an address and port",
        ),
        (
            "[notify]\nwebhook = \"http://example.com/hook/t0k3n\"\n",
            "`webhook` must be an https:// URL (http:// only to a loopback host), not http://example.com/…",
        ),
        (
            "[notify]\nformat = \"xml\"\nwebhook = \"https://example.com/x\"\n",
            "unknown `format` `xml`",
        ),
        (
            "[monitor]\nheartbeat_every = \"1m\"\n",
            "[monitor] needs `heartbeat_url`",
        ),
        (
            "[defaults]\nping_url = \"https://hc-ping.com/a\"\nping_url_env = \"X\"\n",
            "give `ping_url` one way",
        ),
    ];
    for (section, message) in cases {
        let cfg = ConfigDir::new(&format!("{FROM}[outbox]\n{section}{JOB}"));
        let out = cronmail(&cfg.path, &["check"], &[]);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(78), "{section}: {err}");
        assert!(
            err.contains(message),
            "{section}: expected {message:?} in {err}"
        );
        assert!(!err.contains("t0k3n"), "a token was shown: {err}");
    }
    // A listener beyond loopback is allowed, with a warning.
    let cfg = ConfigDir::new(&format!(
        "{FROM}[outbox]\n[http]\nlisten = \"0.0.0.0:9464\"\n{JOB}"
    ));
    let out = cronmail(&cfg.path, &["check"], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("has no authentication"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn healthz_is_503_with_the_reason_while_the_ledger_refuses_writes_and_200_after() {
    let port = free_port();
    let cfg = JobsToml::new()
        .top("state_dir = \"state\"")
        .outbox()
        .section(&format!("[http]\nlisten = \"127.0.0.1:{port}\""))
        .every("tick", "* * * * * *", "")
        .write();
    let flag = cfg.dir.path().join("fail-now");
    let shim = crate::faults::eio_shim();
    let env = [
        ("LD_PRELOAD", shim.to_str().unwrap()),
        ("EIO_FLAG", flag.to_str().unwrap()),
        ("EIO_MATCH", "ledger.sqlite3"),
    ];
    let daemon = Daemon::start(&cfg.path, &env);
    daemon.wait_log("INFO sent", 1, Duration::from_secs(20));
    assert_eq!(get(port, "/healthz").0, 200);
    std::fs::write(&flag, "").unwrap();
    let sick = wait_until(Duration::from_secs(20), || get(port, "/healthz").0 == 503);
    let (_, why) = get(port, "/healthz");
    std::fs::remove_file(&flag).unwrap();
    let well = wait_until(Duration::from_secs(20), || get(port, "/healthz").0 == 200);
    daemon.stop();
    assert!(sick, "never 503");
    assert!(why.starts_with("the ledger refuses writes:"), "{why}");
    assert!(well, "never 200 again");
}

#[test]
fn agenda_and_json_show_what_was_sent_and_what_is_to_come() {
    let cfg = JobsToml::new()
        .top("state_dir = \"state\"")
        .top("timezone = \"UTC\"")
        .outbox()
        .every("tick", "* * * * * *", "")
        .job(
            "[[job]]\nname = \"standup\"\nschedule = \"0 9 * * *\"\nomit = [\"weekends\"]\non_omit = \"after\"\n\
             to = [\"a@example.com\"]\nsubject = \"s\"\nbody = \"b\"",
        )
        .write();
    let daemon = Daemon::start(&cfg.path, &[]);
    daemon.wait_log("INFO sent", 2, Duration::from_secs(20));
    daemon.stop();
    let run = |args: &[&str]| {
        let out = cronmail(&cfg.path, args, &[]);
        assert!(out.status.success(), "{args:?}: {}", stderr(&out));
        stdout(&out)
    };
    // JSON: one document each, with the documented fields.
    let agenda: Value = serde_json::from_str(&run(&["agenda", "--days", "8", "--json"])).unwrap();
    assert_eq!(agenda["timezone"], "UTC");
    let days = agenda["days"].as_array().unwrap();
    assert_eq!(days.len(), 9, "yesterday, today and 7 more");
    let items: Vec<&Value> = days
        .iter()
        .flat_map(|d| d["items"].as_array().unwrap())
        .collect();
    assert!(
        items
            .iter()
            .any(|i| i["job"] == "tick" && i["state"] == "sent"),
        "{agenda}"
    );
    // What is to come is what `next` says, up to the agenda's last day.
    let standups: Vec<&str> = items
        .iter()
        .filter(|i| i["job"] == "standup")
        .map(|i| i["at"].as_str().unwrap())
        .collect();
    assert!(
        items
            .iter()
            .filter(|i| i["job"] == "standup")
            .all(|i| i["state"] == "scheduled")
    );
    let end = format!(
        "{}T23:59:59Z",
        days.last().unwrap()["date"].as_str().unwrap()
    );
    let next: Value = serde_json::from_str(&run(&[
        "next", "--json", "--job", "standup", "--count", "20",
    ]))
    .unwrap();
    let expected: Vec<&str> = next
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["at"].as_str().unwrap())
        .filter(|at| **at <= *end)
        .collect();
    assert_eq!(standups, expected);
    assert!(standups.len() >= 4, "a working week: {standups:?}");
    // Every day after today: a job every second is counted (up to 999), not listed.
    assert!(
        days[2..]
            .iter()
            .all(|d| d["more"]["tick"].as_u64() == Some(999)),
        "a job every second is counted, not listed: {agenda}"
    );
    the_other_commands_json_and_text(&cfg);
}

/// `status`, `history` and `next` in JSON, and `agenda` as text, after
/// `agenda_and_json_...` ran its daemon.
fn the_other_commands_json_and_text(cfg: &ConfigDir) {
    let run = |args: &[&str]| {
        let out = cronmail(&cfg.path, args, &[]);
        assert!(out.status.success(), "{args:?}: {}", stderr(&out));
        stdout(&out)
    };
    let status: Value = serde_json::from_str(&run(&["status", "--json"])).unwrap();
    let tick = status
        .as_array()
        .unwrap()
        .iter()
        .find(|j| j["job"] == "tick")
        .unwrap();
    assert!(
        tick["last_sent"]["message_id"]
            .as_str()
            .unwrap()
            .starts_with("tick.")
    );
    assert_eq!(tick["pending"], 0);
    let history: Value =
        serde_json::from_str(&run(&["history", "--json", "--limit", "1"])).unwrap();
    assert_eq!(history[0]["state"], "sent");
    assert_eq!(history[0]["attempts"], 1);
    let next: Value = serde_json::from_str(&run(&[
        "next",
        "--json",
        "--job",
        "standup",
        "--count",
        "7",
        "--from",
        "2026-12-04T12:00:00Z",
    ]))
    .unwrap();
    // Saturday 5 December moves to Monday the 7th, where Monday's own is: one send.
    assert_eq!(next[0]["at"], "2026-12-07T09:00:00Z");
    assert_eq!(next[0]["moved_from"]["date"], "2026-12-05");
    assert_eq!(next[0]["moved_from"]["why"], "weekends");
    // Text, to a pipe: no colour codes.
    let text = run(&["agenda", "--job", "standup", "--past", "0"]);
    assert!(
        text.contains("(today)") && text.contains("09:00") && text.contains("· scheduled"),
        "{text}"
    );
    assert!(!text.contains('\x1b'), "{text}");
    let out = cronmail(&cfg.path, &["agenda", "--job", "nope"], &[]);
    assert_eq!(out.status.code(), Some(64));
    assert!(
        stderr(&out).contains("jobs: tick, standup"),
        "{}",
        stderr(&out)
    );
}

/// Debian's Chromium (`scripts/setup` installs it as root).
fn chromium() -> std::path::PathBuf {
    std::env::var_os("CRONMAIL_TEST_CHROMIUM")
        .filter(|p| !p.is_empty())
        .map_or_else(|| "/usr/bin/chromium".into(), Into::into)
}

/// Headless Chromium, with what this machine's closed network needs.
fn headless(extra: &[&str], url: &str) -> std::process::Output {
    let profile = tempfile::tempdir().unwrap();
    let out = Command::new(chromium())
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-extensions",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(extra)
        .arg(url)
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "running {} (./scripts/test installs Debian's chromium as root): {e}",
                chromium().display()
            )
        });
    assert!(out.status.success(), "chromium: {}", stderr(&out));
    out
}

#[test]
fn the_status_page_renders_in_a_real_browser_with_failures_and_the_week_and_no_secret() {
    let pki = Pki::new();
    let server = refusing_server(&pki);
    let port = free_port();
    let cfg = two_jobs(
        &server,
        &pki,
        &format!("[http]\nlisten = \"127.0.0.1:{port}\""),
        "ping_url = \"https://hc-ping.com/SECRET-PAGE\"",
        "",
    );
    let daemon = Daemon::start(&cfg.path, &[]);
    daemon.wait_log("job=ok", 1, Duration::from_secs(20));
    daemon.wait_log("job=bad", 1, Duration::from_secs(20));
    let url = format!("http://127.0.0.1:{port}/");
    let dom = stdout(&headless(&["--dump-dom"], &url));
    // The screenshot is kept for CI's artifacts.
    let artifacts = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .unwrap()
        .join("ci-artifacts");
    std::fs::create_dir_all(&artifacts).unwrap();
    let shot = artifacts.join("status-page.png");
    let _ = std::fs::remove_file(&shot);
    headless(
        &[
            "--window-size=1200,1400",
            &format!("--screenshot={}", shot.display()),
        ],
        &url,
    );
    daemon.stop();
    for text in [
        "<h1>cronmail",
        "Healthy",
        "Holds",
        "None: no account is held",
        "Failures",
        "Coming week",
        "Recent",
    ] {
        assert!(dom.contains(text), "{text:?} not on the page:\n{dom}");
    }
    let escaped = REFUSED.replace('<', "&lt;").replace('>', "&gt;");
    assert!(
        dom.contains(&escaped),
        "the failure's reply is shown:\n{dom}"
    );
    // The whole week, even for jobs every two seconds.
    let week = dom
        .split("Coming week")
        .nth(1)
        .unwrap()
        .split("<h2>")
        .next()
        .unwrap();
    assert!(week.matches("999+ more of ok").count() >= 6, "{week}");
    assert!(dom.contains(">failed<") && dom.contains(">sent<"), "{dom}");
    assert!(
        dom.contains("http-equiv=\"refresh\" content=\"30\""),
        "{dom}"
    );
    assert!(!dom.contains("<script"), "no JavaScript");
    assert!(
        !dom.contains("SECRET") && !dom.contains("pw"),
        "a secret is on the page:\n{dom}"
    );
    let png = std::fs::read(&shot).unwrap();
    assert!(
        png.len() > 10_000 && png.starts_with(b"\x89PNG"),
        "screenshot at {}",
        shot.display()
    );
}

#[test]
fn a_refused_login_holds_the_account_in_metrics_and_the_webhook_hears_the_hold_once() {
    let pki = Pki::new();
    let server = ServerSpec::starttls(&pki).user("alice", "right").start();
    let hooks = HttpRecorder::start();
    let port = free_port();
    let cfg = JobsToml::new()
        .top("timezone = \"UTC\"")
        .top("state_dir = \"state\"")
        .smtp(server.port, "starttls", Some(&pki.ca))
        .smtp_key("password_file = \"pw\"")
        .section(&format!(
            "[http]\nlisten = \"127.0.0.1:{port}\"\n[notify]\nwebhook = \"{}\"",
            hooks.url("/hook")
        ))
        .every("tick", "* * * * * *", "")
        .write();
    std::fs::write(cfg.dir.path().join("pw"), "wrong").unwrap();
    let daemon = Daemon::start(&cfg.path, &[]);
    daemon.wait_log("serving the status page", 1, Duration::from_secs(20));
    let held = wait_until(Duration::from_secs(20), || {
        get(port, "/metrics")
            .1
            .contains("cronmail_held{account=\"default\"} 1")
    });
    let heard = wait_until(Duration::from_secs(20), || !hooks.requests().is_empty());
    let (_, text) = get(port, "/metrics");
    let page = get(port, "/").1;
    daemon.stop();
    assert!(held, "{text}");
    let m = parse_openmetrics(&text);
    assert!(
        sample(
            &m,
            "cronmail_failures_total",
            &[("job", "tick"), ("class", "auth")]
        )
        .unwrap()
            >= 1.0
    );
    assert!(heard);
    let holds: Vec<Value> = hooks
        .requests()
        .iter()
        .map(|r| serde_json::from_str(&r.body).unwrap())
        .filter(|e: &Value| e["state"] == "held")
        .collect();
    assert_eq!(
        holds.len(),
        1,
        "one alert when the hold starts, not one per held occurrence: {:?}",
        hooks.requests()
    );
    assert_eq!(holds[0]["class"], "auth");
    assert!(
        page.contains("Held after an authentication or quota failure: account `default`"),
        "{page}"
    );
}

#[test]
fn a_webhook_from_a_systemd_credential_is_read_there_or_beside_jobs_toml() {
    let cfg = ConfigDir::new(&format!(
        "{FROM}[outbox]\n[notify]\nwebhook_credential = \"hook\"\n{JOB}"
    ));
    let out = cronmail(&cfg.path, &["check"], &[]);
    assert_eq!(out.status.code(), Some(78));
    assert!(
        stderr(&out).contains("`webhook_credential`:"),
        "{}",
        stderr(&out)
    );
    std::fs::write(cfg.dir.path().join("hook"), "https://ntfy.example/t0k3n\n").unwrap();
    let out = cronmail(&cfg.path, &["check"], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let creds = tempfile::tempdir().unwrap();
    std::fs::write(creds.path().join("hook"), "http://example.com/t0k3n\n").unwrap();
    let out = cronmail(
        &cfg.path,
        &["check"],
        &[("CREDENTIALS_DIRECTORY", creds.path().to_str().unwrap())],
    );
    assert_eq!(
        out.status.code(),
        Some(78),
        "under systemd the credential's own file is read"
    );
    assert!(
        stderr(&out).contains("not http://example.com/…"),
        "{}",
        stderr(&out)
    );
    assert!(!stderr(&out).contains("t0k3n"), "{}", stderr(&out));
}
