//! Reading a file that the configuration points at (jobs.toml, a template, a password
//! or client-secret file, a CA file, the refresh token): a regular file only, and never
//! more than a cap.
//!
//! A FIFO named as a `body_file` would block `check` and `run` forever, and
//! `/dev/zero` would fill memory. So the file is opened without blocking, checked to be
//! a regular file by its open descriptor (no race with a rename), and read up to its
//! cap plus one byte. A leaf: it imports nothing of the crate.

use std::fmt;
use std::io::Read as _;
use std::os::unix::fs::{FileTypeExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};

/// Largest template file (`body_file`, `html_file`): a rendered part has the same cap.
pub const MAX_TEMPLATE: u64 = 1024 * 1024;

/// Largest secret (a password or client-secret file, a systemd credential, the refresh
/// token) and largest output of a `password_command` or `token_command`.
pub const MAX_SECRET: u64 = 64 * 1024;

/// Largest `ca_file`: a bundle of every public root is about 220 KB.
pub const MAX_CA_FILE: u64 = 1024 * 1024;

/// An iCalendar file of omitted days (public holiday feeds are tens of KB).
pub const MAX_CALENDAR: u64 = 8 * 1024 * 1024;

/// Why a file could not be read. Names the path; never holds the content.
#[derive(Debug)]
pub enum FileError {
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
    /// A FIFO, a device, a socket or a folder where a file was expected.
    NotRegular {
        path: PathBuf,
        what: &'static str,
    },
    TooLarge {
        path: PathBuf,
        limit: u64,
    },
}

impl FileError {
    pub fn path(&self) -> &Path {
        match self {
            FileError::Io { path, .. }
            | FileError::NotRegular { path, .. }
            | FileError::TooLarge { path, .. } => path,
        }
    }

    /// What is wrong, without the path (for messages that name the file already).
    pub fn reason(&self) -> String {
        match self {
            FileError::Io { error, .. } => error.to_string(),
            FileError::NotRegular { what, .. } => format!("it is {what}, not a regular file"),
            FileError::TooLarge { limit, .. } => {
                format!("it is larger than the limit of {} bytes", group(*limit))
            }
        }
    }

    /// The I/O error's kind, when there was one (`NotFound` for a missing file).
    pub fn kind(&self) -> Option<std::io::ErrorKind> {
        match self {
            FileError::Io { error, .. } => Some(error.kind()),
            _ => None,
        }
    }
}

impl fmt::Display for FileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FileError::Io { path, error } => write!(f, "cannot read `{}`: {error}", path.display()),
            FileError::NotRegular { path, what } => {
                write!(f, "`{}` is {what}, not a regular file", path.display())
            }
            FileError::TooLarge { path, limit } => write!(
                f,
                "`{}` is larger than the limit of {} bytes",
                path.display(),
                group(*limit)
            ),
        }
    }
}

impl std::error::Error for FileError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            FileError::Io { error, .. } => Some(error),
            _ => None,
        }
    }
}

/// The whole of `path`, a regular file of at most `limit` bytes.
pub fn read(path: &Path, limit: u64) -> Result<Vec<u8>, FileError> {
    let io = |error| FileError::Io {
        path: path.to_path_buf(),
        error,
    };
    // O_NONBLOCK: opening a FIFO for reading would otherwise wait for a writer.
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(io)?;
    let meta = file.metadata().map_err(io)?;
    let t = meta.file_type();
    let what = if t.is_file() {
        None
    } else if t.is_dir() {
        Some("a folder")
    } else if t.is_fifo() {
        Some("a FIFO (named pipe)")
    } else if t.is_char_device() {
        Some("a character device")
    } else if t.is_block_device() {
        Some("a block device")
    } else if t.is_socket() {
        Some("a socket")
    } else {
        Some("not a file")
    };
    if let Some(what) = what {
        return Err(FileError::NotRegular {
            path: path.to_path_buf(),
            what,
        });
    }
    let too_large = || FileError::TooLarge {
        path: path.to_path_buf(),
        limit,
    };
    if meta.len() > limit {
        return Err(too_large());
    }
    let mut bytes = Vec::with_capacity(usize::try_from(meta.len()).unwrap_or(0));
    // The file may grow after the check: read one byte past the cap, at most.
    file.take(limit.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(io)?;
    if bytes.len() as u64 > limit {
        return Err(too_large());
    }
    Ok(bytes)
}

/// A number with thousands separators: `1,048,576`.
pub fn group(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fifo_a_device_and_a_folder_are_refused_without_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("pipe");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: mkfifo reads a NUL-terminated path that lives for the call.
        #[allow(unsafe_code)]
        let made = unsafe { libc::mkfifo(c.as_ptr(), 0o600) };
        assert_eq!(made, 0);
        let e = read(&fifo, 10).unwrap_err();
        assert!(
            e.to_string()
                .contains("a FIFO (named pipe), not a regular file"),
            "{e}"
        );
        let e = read(Path::new("/dev/zero"), 10).unwrap_err();
        assert!(e.to_string().contains("a character device"), "{e}");
        let e = read(dir.path(), 10).unwrap_err();
        assert!(e.to_string().contains("a folder"), "{e}");
    }

    #[test]
    fn a_file_over_its_cap_is_refused_and_one_at_it_is_read() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        std::fs::write(&p, vec![b'x'; 11]).unwrap();
        let e = read(&p, 10).unwrap_err();
        assert!(
            e.to_string().contains("larger than the limit of 10 bytes"),
            "{e}"
        );
        assert_eq!(read(&p, 11).unwrap().len(), 11);
        assert_eq!(group(1_048_576), "1,048,576");
        assert_eq!(group(999), "999");
    }
}
