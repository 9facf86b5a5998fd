//! A real HTTPS file server on loopback (`https_files.py`), for calendars fetched from
//! a `url`: it serves the files of its folder with the test PKI's certificate and logs
//! each request.

use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use super::{Pki, python};

/// Starts `tests/it/support/SCRIPT` with `args`, and waits for its `READY <port>`.
fn spawn_ready(script: &str, args: &[&std::ffi::OsStr]) -> (Child, u16) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/it/support")
        .join(script);
    let mut child = Command::new(python())
        .arg(path)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap_or_else(|e| panic!("starting {script}: {e}"));
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let port = line
        .trim()
        .strip_prefix("READY ")
        .unwrap_or_else(|| panic!("{script} did not start: {line:?}"))
        .parse()
        .unwrap();
    (child, port)
}

pub struct FileServer {
    pub port: u16,
    pub dir: tempfile::TempDir,
    child: Child,
}

impl FileServer {
    pub fn start(pki: &Pki) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let (child, port) = spawn_ready(
            "https_files.py",
            &[
                pki.cert.as_os_str(),
                pki.key.as_os_str(),
                dir.path().as_os_str(),
            ],
        );
        FileServer { port, dir, child }
    }

    pub fn url(&self, name: &str) -> String {
        format!("https://localhost:{}/{name}", self.port)
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The paths asked for, in order.
    pub fn requests(&self) -> Vec<String> {
        std::fs::read_to_string(self.path("requests.log"))
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }
}

impl Drop for FileServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A real HTTP server on loopback that records each request (`http_recorder.py`).
pub struct HttpRecorder {
    pub port: u16,
    dir: tempfile::TempDir,
    child: Child,
}

/// One request the recorder received.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    pub body: String,
    pub content_type: String,
}

impl HttpRecorder {
    pub fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("requests.jsonl");
        let (child, port) = spawn_ready("http_recorder.py", &[log.as_os_str()]);
        HttpRecorder { port, dir, child }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// Answer every request with `status` from now on.
    pub fn answer(&self, status: u16) {
        std::fs::write(
            self.dir.path().join("requests.jsonl.status"),
            status.to_string(),
        )
        .unwrap();
    }

    pub fn requests(&self) -> Vec<Recorded> {
        std::fs::read_to_string(self.dir.path().join("requests.jsonl"))
            .unwrap_or_default()
            .lines()
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).unwrap();
                let s = |k: &str| v[k].as_str().unwrap_or_default().to_owned();
                Recorded {
                    method: s("method"),
                    path: s("path"),
                    body: s("body"),
                    content_type: s("type"),
                }
            })
            .collect()
    }
}

impl Drop for HttpRecorder {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
