//! What a `SQLite` error of the ledger means, in words: a fault of the disk or the
//! file system is said to be one (with the OS's own error when it gives one), even
//! where `SQLite` calls the file malformed.

use std::fs::File;
use std::path::{Path, PathBuf};

/// What a `SQLite` error means, in words that name the real problem: a fault of the
/// disk or file system is said to be one, even where `SQLite` calls the file malformed.
pub(super) fn describe(path: &Path, e: &rusqlite::Error) -> String {
    use rusqlite::ErrorCode;
    let said = e.to_string();
    match e.sqlite_error_code() {
        Some(ErrorCode::SystemIoFailure) => os_read_error(path).map_or_else(
            || format!("the file system failed to read or write it, an I/O error ({said})"),
            |os| format!("the file system failed to read or write it: {os} ({said})"),
        ),
        Some(ErrorCode::DiskFull) => format!("the disk is full ({said})"),
        Some(ErrorCode::ReadOnly) => {
            format!(
                "it cannot be written: the file system is read-only, or the file not writable by this user ({said})"
            )
        }
        Some(ErrorCode::DatabaseCorrupt | ErrorCode::NotADatabase) => match os_read_error(path) {
            Some(os) => format!("the file system failed to read it: {os} (SQLite saw: {said})"),
            None => format!(
                "it is damaged or not a cronmail ledger ({said}); move it aside to start a new one (its history is lost), or restore a backup"
            ),
        },
        _ => said,
    }
}

/// The OS's own error reading the ledger or its WAL through, if it gives one (EIO).
fn os_read_error(path: &Path) -> Option<String> {
    use std::io::Read as _;
    let mut wal = path.as_os_str().to_owned();
    wal.push("-wal");
    for p in [path.to_path_buf(), PathBuf::from(wal)] {
        let Ok(mut f) = File::open(&p) else { continue };
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match f.read(&mut buf) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) => return Some(format!("reading `{}`: {e}", p.display())),
            }
        }
    }
    None
}
