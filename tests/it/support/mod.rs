//! Helpers so a test reads like a specification, split by purpose: a test PKI (`pki`),
//! a real SMTP server (`smtpd`), the real binary and `cronmail run` as a process
//! (`daemon`), the daemon in this process on paused time (`service`), jobs.toml
//! (`jobs`), and a real `PostgreSQL` (`pg`).

#![allow(dead_code)]

mod daemon;
mod https_files;
mod jobs;
mod pg;
mod pki;
mod service;
mod smtpd;

use std::path::Path;

pub use daemon::*;
pub use https_files::{FileServer, HttpRecorder};
pub use jobs::*;
pub use pg::PgServer;
pub use pki::Pki;
pub use service::*;
pub use smtpd::*;

/// Polls `cond` every 50 ms until it holds or `timeout` passes: for tests of real
/// processes only (in-process tests use paused time).
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
