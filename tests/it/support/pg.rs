//! A real `PostgreSQL` server per test: `initdb` on a temporary folder, `postgres` on a
//! free loopback port (with TLS from a test CA when asked). `scripts/test` installs
//! Debian's server binaries and sets `$CRONMAIL_TEST_PG_BIN`.

use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{Pki, free_port};

fn bin_dir() -> PathBuf {
    if let Some(p) = std::env::var_os("CRONMAIL_TEST_PG_BIN") {
        return PathBuf::from(p);
    }
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|d| {
            d.filter_map(Result::ok)
                .map(|e| e.path().join("bin"))
                .collect()
        })
        .unwrap_or_default();
    found.sort();
    found.pop().unwrap_or_else(|| {
        panic!("no PostgreSQL server binaries: run ./scripts/test (it installs them), or set CRONMAIL_TEST_PG_BIN")
    })
}

/// The uid and gid of `postgres` when we are root (initdb and postgres refuse root).
fn server_user() -> Option<(u32, u32)> {
    let meta = std::fs::metadata("/proc/self").ok()?;
    if std::os::unix::fs::MetadataExt::uid(&meta) != 0 {
        return None;
    }
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    let line = passwd.lines().find(|l| l.starts_with("postgres:")).expect(
        "running as root needs the `postgres` user (Debian's postgresql package creates it)",
    );
    let f: Vec<&str> = line.split(':').collect();
    Some((f[2].parse().ok()?, f[3].parse().ok()?))
}

fn as_server_user(cmd: &mut Command) -> &mut Command {
    if let Some((uid, gid)) = server_user() {
        cmd.uid(uid).gid(gid);
    }
    cmd
}

fn chown_tree(path: &Path) {
    if let Some((uid, gid)) = server_user() {
        let status = Command::new("chown")
            .arg("-R")
            .arg(format!("{uid}:{gid}"))
            .arg(path)
            .status()
            .unwrap();
        assert!(status.success());
    }
}

pub struct PgServer {
    pub port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
    tls: bool,
}

impl PgServer {
    /// A new server; `pki` turns TLS on with its certificate.
    pub fn start(pki: Option<&Pki>) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        if let Some(pki) = pki {
            std::fs::copy(&pki.cert, dir.path().join("server.crt")).unwrap();
            std::fs::copy(&pki.key, dir.path().join("server.key")).unwrap();
            std::fs::set_permissions(
                dir.path().join("server.key"),
                std::os::unix::fs::PermissionsExt::from_mode(0o600),
            )
            .unwrap();
        }
        chown_tree(dir.path());
        let out = as_server_user(
            Command::new(bin_dir().join("initdb"))
                .arg("-D")
                .arg(&data)
                .args([
                    "-A",
                    "trust",
                    "-U",
                    "cronmail",
                    "-E",
                    "UTF8",
                    "-N",
                    "--no-instructions",
                ])
                .stdout(Stdio::null())
                .stderr(Stdio::piped()),
        )
        .output()
        .unwrap();
        assert!(
            out.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut server = PgServer {
            port: free_port(),
            dir,
            child: None,
            tls: pki.is_some(),
        };
        server.run();
        server
    }

    fn run(&mut self) {
        let data = self.dir.path().join("data");
        let log = std::fs::File::options()
            .create(true)
            .append(true)
            .open(self.dir.path().join("postgres.log"))
            .unwrap();
        let mut cmd = Command::new(bin_dir().join("postgres"));
        cmd.arg("-D")
            .arg(&data)
            .args(["-p", &self.port.to_string()])
            .arg("-k")
            .arg(self.dir.path())
            .args(["-c", "listen_addresses=127.0.0.1", "-c", "fsync=off"])
            .args(["-c", "full_page_writes=off", "-c", "max_connections=50"])
            .stdout(Stdio::null())
            .stderr(log);
        if self.tls {
            cmd.args(["-c", "ssl=on"])
                .arg("-c")
                .arg(format!(
                    "ssl_cert_file={}",
                    self.dir.path().join("server.crt").display()
                ))
                .arg("-c")
                .arg(format!(
                    "ssl_key_file={}",
                    self.dir.path().join("server.key").display()
                ));
        }
        self.child = Some(as_server_user(&mut cmd).spawn().unwrap());
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ready = postgres::Client::connect(
                &format!(
                    "host=127.0.0.1 port={} user=cronmail dbname=postgres",
                    self.port
                ),
                postgres::NoTls,
            )
            .is_ok();
            if ready {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "PostgreSQL did not start: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// A fast shutdown (SIGINT): open connections are cut, as in a crash of the client's view.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let pid = i32::try_from(child.id()).unwrap();
            super::unsafe_kill(pid, 2);
            child.wait().unwrap();
        }
    }

    pub fn restart(&mut self) {
        self.stop();
        self.run();
    }

    /// `postgres://cronmail@127.0.0.1:PORT/postgres`, with `sslmode=require` under TLS.
    pub fn url(&self) -> String {
        let ssl = if self.tls { "?sslmode=require" } else { "" };
        format!("postgres://cronmail@127.0.0.1:{}/postgres{ssl}", self.port)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("postgres.log")).unwrap_or_default()
    }

    /// A plain client, for assertions.
    pub fn client(&self) -> postgres::Client {
        postgres::Client::connect(
            &format!(
                "host=127.0.0.1 port={} user=cronmail dbname=postgres",
                self.port
            ),
            postgres::NoTls,
        )
        .unwrap()
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        self.stop();
    }
}
