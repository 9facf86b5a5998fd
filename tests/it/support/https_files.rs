//! A real HTTPS file server on loopback (`https_files.py`), for calendars fetched from
//! a `url`: it serves the files of its folder with the test PKI's certificate and logs
//! each request.

use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use super::{Pki, python};

pub struct FileServer {
    pub port: u16,
    pub dir: tempfile::TempDir,
    child: Child,
}

impl FileServer {
    pub fn start(pki: &Pki) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/it/support/https_files.py");
        let mut child = Command::new(python())
            .arg(script)
            .arg(&pki.cert)
            .arg(&pki.key)
            .arg(dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("starting the test HTTPS server");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let port = line
            .trim()
            .strip_prefix("READY ")
            .unwrap_or_else(|| panic!("the test HTTPS server did not start: {line:?}"))
            .parse()
            .unwrap();
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
