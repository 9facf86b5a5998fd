//! The real `cronmail` binary: one command at a time (`cronmail`), or `cronmail run` as
//! a process that a test signals, kills and reads the log of (`Daemon`).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

use super::wait_until;

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

/// Runs the real binary, and fails the test (killing it) if it takes longer than
/// `limit`: for inputs that once made cronmail hang.
#[track_caller]
pub fn cronmail_within(
    config: &Path,
    args: &[&str],
    env: &[(&str, &str)],
    limit: std::time::Duration,
) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_cronmail"));
    cmd.arg("--config")
        .arg(config)
        .args(args)
        .env_remove("CRONMAIL_LOG")
        .env_remove("NOTIFY_SOCKET")
        .env("TZ", "UTC")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap();
    let start = std::time::Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > limit {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "cronmail {args:?} did not finish within {limit:?}; stderr: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

/// A named pipe at `path`.
pub fn mkfifo(path: &Path) {
    assert!(
        Command::new("mkfifo").arg(path).status().unwrap().success(),
        "mkfifo {}",
        path.display()
    );
}
