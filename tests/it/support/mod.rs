//! Helpers so a test reads like a specification: real certificates, a real SMTP server
//! (aiosmtpd, installed by `scripts/test`), and the real `cronmail` binary.

#![allow(dead_code)]

use std::fmt::Write as _;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};

mod pg;
pub use pg::PgServer;
use serde_json::Value;

/// The Python with aiosmtpd: `$CRONMAIL_TEST_PYTHON`, else the repo's `.venv`.
pub fn python() -> PathBuf {
    if let Some(p) = std::env::var_os("CRONMAIL_TEST_PYTHON") {
        return PathBuf::from(p);
    }
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python");
    assert!(
        venv.exists(),
        "no Python with aiosmtpd at {}: run ./scripts/test once to set it up",
        venv.display()
    );
    venv
}

/// A CA and a server certificate it signed, as PEM files in a temp folder.
pub struct Pki {
    pub dir: tempfile::TempDir,
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl Pki {
    /// A CA and a leaf for `localhost` and 127.0.0.1, valid now.
    pub fn new() -> Self {
        Self::with_leaf(&["localhost", "127.0.0.1"], None)
    }

    /// A leaf for other names, or with another validity window.
    pub fn with_leaf(
        names: &[&str],
        validity: Option<(time::OffsetDateTime, time::OffsetDateTime)>,
    ) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let ca_key = KeyPair::generate().unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "cronmail test CA");
        let ca = ca_params.self_signed(&ca_key).unwrap();

        let leaf_key = KeyPair::generate().unwrap();
        let mut params =
            CertificateParams::new(names.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>())
                .unwrap();
        params.distinguished_name.push(DnType::CommonName, names[0]);
        if let Some((from, to)) = validity {
            params.not_before = from;
            params.not_after = to;
        }
        let leaf = params.signed_by(&leaf_key, &ca, &ca_key).unwrap();

        let write = |name: &str, text: String| {
            let p = dir.path().join(name);
            std::fs::write(&p, text).unwrap();
            p
        };
        Pki {
            ca: write("ca.pem", ca.pem()),
            cert: write("cert.pem", leaf.pem()),
            key: write("key.pem", leaf_key.serialize_pem()),
            dir,
        }
    }
}

impl Pki {
    /// A self-signed certificate for `localhost` (no CA); `ca` is the certificate itself.
    pub fn self_signed() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let key = KeyPair::generate().unwrap();
        let mut params =
            CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, "localhost");
        let cert = params.self_signed(&key).unwrap();
        let write = |name: &str, text: String| {
            let p = dir.path().join(name);
            std::fs::write(&p, text).unwrap();
            p
        };
        Pki {
            ca: write("cert.pem", cert.pem()),
            cert: dir.path().join("cert.pem"),
            key: write("key.pem", key.serialize_pem()),
            dir,
        }
    }

    /// `sha256:AB:CD:...` of the server certificate.
    pub fn fingerprint(&self) -> String {
        use sha2::Digest as _;
        let pem = std::fs::read(&self.cert).unwrap();
        let der = rustls_pemfile::certs(&mut pem.as_slice())
            .next()
            .unwrap()
            .unwrap();
        let hex: Vec<String> = sha2::Sha256::digest(der.as_ref())
            .iter()
            .map(|b| format!("{b:02X}"))
            .collect();
        format!("sha256:{}", hex.join(":"))
    }
}

/// A running aiosmtpd; killed on drop.
pub struct SmtpServer {
    pub port: u16,
    /// The `OAuth2` server's HTTPS port, when the spec has `oauth`.
    pub https_port: Option<u16>,
    pub out: tempfile::TempDir,
    child: Child,
}

impl Drop for SmtpServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What the server should do; see smtpd.py.
#[must_use]
pub struct ServerSpec(serde_json::Map<String, Value>);

impl ServerSpec {
    pub fn starttls(pki: &Pki) -> Self {
        Self::mode("starttls").tls(pki)
    }

    pub fn implicit(pki: &Pki) -> Self {
        Self::mode("implicit").tls(pki)
    }

    /// No TLS at all: STARTTLS is never advertised.
    pub fn plain() -> Self {
        Self::mode("plain")
    }

    fn mode(mode: &str) -> Self {
        let mut m = serde_json::Map::new();
        m.insert("mode".into(), mode.into());
        ServerSpec(m)
    }

    fn tls(mut self, pki: &Pki) -> Self {
        self.0
            .insert("cert".into(), pki.cert.display().to_string().into());
        self.0
            .insert("key".into(), pki.key.display().to_string().into());
        self
    }

    pub fn user(mut self, name: &str, password: &str) -> Self {
        let users = self
            .0
            .entry("users")
            .or_insert_with(|| Value::Object(serde_json::Map::default()));
        users
            .as_object_mut()
            .unwrap()
            .insert(name.into(), password.into());
        self
    }

    pub fn set(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.0.insert(key.into(), value.into());
        self
    }

    #[track_caller]
    pub fn start(mut self) -> SmtpServer {
        let out = tempfile::tempdir().unwrap();
        self.0
            .insert("out".into(), out.path().display().to_string().into());
        let spec_path = out.path().join("spec.json");
        std::fs::write(&spec_path, Value::Object(self.0).to_string()).unwrap();
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/it/support/smtpd.py");
        let mut child = Command::new(python())
            .arg(script)
            .arg(&spec_path)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("starting the test SMTP server");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let mut ports = line
            .trim()
            .strip_prefix("READY ")
            .unwrap_or_else(|| panic!("the test SMTP server did not start: {line:?}"))
            .split(' ')
            .map(|p| p.parse::<u16>().unwrap());
        let port = ports.next().unwrap();
        let https_port = ports.next();
        SmtpServer {
            port,
            https_port,
            out,
            child,
        }
    }
}

/// One command the server received.
#[derive(Debug, Clone)]
pub struct Event {
    pub cmd: String,
    pub arg: String,
    pub tls: bool,
    /// The whole event (an HTTP request's `form` or `query`, say).
    pub raw: Value,
}

/// One message the server accepted.
#[derive(Debug, Clone)]
pub struct Received {
    pub mail_from: String,
    pub rcpt_tos: Vec<String>,
    pub data: String,
    pub tls: bool,
}

impl SmtpServer {
    pub fn events(&self) -> Vec<Event> {
        let Ok(text) = std::fs::read_to_string(self.out.path().join("events.jsonl")) else {
            return Vec::new();
        };
        text.lines()
            .map(|l| {
                let v: Value = serde_json::from_str(l).unwrap();
                Event {
                    cmd: v["cmd"].as_str().unwrap_or_default().to_owned(),
                    arg: v["arg"].as_str().unwrap_or_default().to_owned(),
                    tls: v["tls"].as_bool().unwrap_or(false),
                    raw: v,
                }
            })
            .collect()
    }

    pub fn commands(&self) -> Vec<String> {
        self.events().into_iter().map(|e| e.cmd).collect()
    }

    pub fn messages(&self) -> Vec<Received> {
        let mut files: Vec<_> = std::fs::read_dir(self.out.path())
            .unwrap()
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| {
                p.file_name().unwrap().to_string_lossy().starts_with("msg-")
                    && p.extension().is_some_and(|e| e == "json")
            })
            .collect();
        files.sort_by_key(|p| {
            let name = p.file_stem().unwrap().to_string_lossy().to_string();
            name.trim_start_matches("msg-").parse::<u32>().unwrap_or(0)
        });
        files
            .iter()
            .map(|p| {
                let v: Value = serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap();
                Received {
                    mail_from: v["mail_from"].as_str().unwrap_or_default().to_owned(),
                    rcpt_tos: v["rcpt_tos"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|r| r.as_str().unwrap().to_owned())
                        .collect(),
                    data: v["data"].as_str().unwrap_or_default().to_owned(),
                    tls: v["tls"].as_bool().unwrap_or(false),
                }
            })
            .collect()
    }

    /// Asserts that no MAIL, RCPT or DATA (and so no message) followed the login.
    #[track_caller]
    pub fn assert_nothing_sent_after_auth(&self) {
        let cmds = self.commands();
        for forbidden in ["MAIL", "RCPT", "DATA"] {
            assert!(
                !cmds.iter().any(|c| c == forbidden),
                "the server received {forbidden}: {cmds:?}"
            );
        }
        assert!(self.messages().is_empty(), "the server received a message");
    }

    /// Asserts that the server never saw AUTH, MAIL, RCPT or DATA.
    #[track_caller]
    pub fn assert_nothing_sent(&self) {
        let cmds = self.commands();
        for forbidden in ["AUTH", "MAIL", "RCPT", "DATA"] {
            assert!(
                !cmds.iter().any(|c| c == forbidden),
                "the server received {forbidden}: {cmds:?}"
            );
        }
        assert!(self.messages().is_empty(), "the server received a message");
    }
}

/// A jobs.toml in its own folder.
pub struct ConfigDir {
    pub dir: tempfile::TempDir,
    pub path: PathBuf,
}

impl ConfigDir {
    pub fn new(text: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("jobs.toml");
        std::fs::write(&path, text).unwrap();
        ConfigDir { dir, path }
    }
}

/// `[smtp]` for a test server, with the password in `$TEST_SMTP_PASSWORD`.
pub fn smtp_section(server: &SmtpServer, tls: &str, ca: Option<&Path>) -> String {
    let mut s = format!(
        "[smtp]\nhost = \"localhost\"\nport = {}\ntls = \"{tls}\"\nusername = \"alice\"\npassword_env = \"TEST_SMTP_PASSWORD\"\ntimeout = \"10s\"\n",
        server.port
    );
    if let Some(ca) = ca {
        let _ = writeln!(s, "ca_file = \"{}\"", ca.display());
    }
    s
}

/// jobs.toml with `FROM`, `[smtp]` for `server` (see `smtp_section`) and `JOB`.
pub fn job_config(server: &SmtpServer, tls: &str, ca: Option<&Path>) -> ConfigDir {
    ConfigDir::new(&format!("{FROM}{}{JOB}", smtp_section(server, tls, ca)))
}

/// A job that never fires by itself (used with `cronmail send`).
pub const JOB: &str = r#"
[[job]]
name = "weekly"
schedule = "0 9 * * MON"
timezone = "Europe/Berlin"
to = ["Team <team@example.com>"]
cc = ["cc@example.com"]
bcc = ["hidden@example.com"]
subject = "Weekly report due {{ date }}"
body = "Hi {{ vars.owner }}, week {{ scheduled_at | strftime('%V') }}."
[job.vars]
owner = "Junho"
"#;

pub const FROM: &str = "from = \"Reminders <bot@example.com>\"\n";

/// For each `(section, expected)`: `check` on `FROM` + `section` + `JOB` exits 78 with
/// `expected` at a `jobs.toml:LINE:COL` place, and never echoes `hunter2` (the secret
/// the cases may put where secrets do not belong).
#[track_caller]
pub fn assert_config_mistakes(cases: &[(String, &str)]) {
    for (section, expected) in cases {
        let cfg = ConfigDir::new(&format!("{FROM}{section}{JOB}"));
        let out = cronmail(&cfg.path, &["check"], &[]);
        assert_eq!(out.status.code(), Some(78), "{section}: {}", stderr(&out));
        let err = stderr(&out);
        assert!(err.contains(expected), "{section}: {err}");
        assert!(err.contains("jobs.toml:"), "no place: {err}");
        assert!(!err.contains("hunter2"), "a secret was echoed: {err}");
    }
}

/// Runs the real binary.
pub fn cronmail(config: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_cronmail"));
    cmd.arg("--config")
        .arg(config)
        .args(args)
        .env_remove("CRONMAIL_LOG")
        .env("TZ", "UTC");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// A running `cronmail run`, its stderr captured in a file. Killed on drop.
pub struct Daemon {
    child: Option<Child>,
    pub log: PathBuf,
}

impl Daemon {
    pub fn start(config: &Path, env: &[(&str, &str)]) -> Self {
        let log = config.with_file_name(format!(
            "daemon-{}.log",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        ));
        let file = std::fs::File::create(&log).unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_cronmail"));
        cmd.arg("--config")
            .arg(config)
            .arg("run")
            .env_remove("CRONMAIL_LOG")
            .env_remove("NOTIFY_SOCKET")
            .env("TZ", "UTC");
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.stdout(Stdio::null()).stderr(file).spawn().unwrap();
        Daemon {
            child: Some(child),
            log,
        }
    }

    pub fn pid(&self) -> i32 {
        i32::try_from(self.child.as_ref().unwrap().id()).unwrap()
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY-free: libc::kill on our own child's pid.
        assert_eq!(unsafe_kill(self.pid(), sig), 0);
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until the log contains `needle` `count` times.
    #[track_caller]
    pub fn wait_log(&self, needle: &str, count: usize, timeout: std::time::Duration) {
        let ok = wait_until(timeout, || self.log_text().matches(needle).count() >= count);
        assert!(
            ok,
            "timed out waiting for {count}x {needle:?} in the log:\n{}",
            self.log_text()
        );
    }

    /// SIGTERM, then the exit status.
    pub fn stop(self) -> std::process::ExitStatus {
        self.signal(libc_sigterm());
        self.wait()
    }

    /// The exit status, once the process ends by itself.
    pub fn wait(mut self) -> std::process::ExitStatus {
        self.child.take().unwrap().wait().unwrap()
    }

    /// SIGKILL: no chance to clean up.
    pub fn kill9(mut self) {
        let mut child = self.child.take().unwrap();
        child.kill().unwrap();
        child.wait().unwrap();
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

pub(crate) fn unsafe_kill(pid: i32, sig: i32) -> i32 {
    // The test crate forbids no unsafe, but keep it in one place.
    #[allow(unsafe_code)]
    unsafe {
        libc::kill(pid, sig)
    }
}

pub fn libc_sigterm() -> i32 {
    libc::SIGTERM
}

pub fn libc_sighup() -> i32 {
    libc::SIGHUP
}

/// Polls `cond` every 50 ms until it holds or `timeout` passes.
pub fn wait_until(timeout: std::time::Duration, mut cond: impl FnMut() -> bool) -> bool {
    let start = std::time::Instant::now();
    while start.elapsed() < timeout {
        if cond() {
            return true;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    cond()
}

/// A free loopback port (bound, then released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The ledger of a state directory, opened read-write without the lock.
pub fn ledger(state_dir: &Path) -> cronmail::ledger::SqliteLedger {
    cronmail::ledger::SqliteLedger::open_at(&state_dir.join("ledger.sqlite3")).unwrap()
}

/// Message-IDs the server received, in order.
pub fn received_ids(server: &SmtpServer) -> Vec<String> {
    server
        .messages()
        .iter()
        .filter_map(|m| {
            m.data.lines().find_map(|l| {
                l.strip_prefix("Message-ID: <")
                    .map(|r| r.trim_end_matches('>').to_owned())
            })
        })
        .collect()
}
