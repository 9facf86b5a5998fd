//! A real SMTP server (aiosmtpd in `smtpd.py`, installed by `scripts/test`) driven by a
//! spec, and what it received, read back from its own records.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use serde_json::Value;

use super::Pki;

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
