//! Writing state atomically: a temporary file beside the target, fsync'd, renamed over
//! it, and the folder fsync'd. A reader never sees half a file, and a crash leaves the
//! old file or the whole new one. Used for outbox messages and the `OAuth2` refresh token.

use std::io::Write as _;
use std::path::{Path, PathBuf};

/// Replaces `dir/name` with `bytes` (creating `dir` if needed).
pub fn write_atomically(dir: &Path, name: &str, bytes: &[u8]) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    replace(&dir.join(name), bytes, None)
}

/// Replaces `path` with `value` and a newline, mode 0600. The file keeps the owner of
/// the file it replaces (or of its folder), so that root running `cronmail oauth2
/// authorize` leaves a file the service's user can still rewrite.
#[cfg_attr(not(feature = "oauth2"), allow(dead_code))] // a rotated refresh token
pub fn write_secret_file(path: &Path, value: &str) -> std::io::Result<()> {
    let mut bytes = Vec::with_capacity(value.len() + 1);
    bytes.extend_from_slice(value.as_bytes());
    bytes.push(b'\n');
    let written = replace(path, &bytes, Some(0o600));
    // The copy of the secret is wiped as far as Rust lets us; the page cache is the
    // kernel's.
    bytes.fill(0);
    written
}

/// temp + fsync + rename + fsync of the folder; `mode` also keeps the owner (see above).
fn replace(path: &Path, bytes: &[u8], mode: Option<u32>) -> std::io::Result<()> {
    use std::os::unix::fs::{MetadataExt as _, OpenOptionsExt as _};
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = path
        .file_name()
        .ok_or_else(|| std::io::Error::other("not a file name"))?
        .to_string_lossy()
        .into_owned();
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    if let Some(mode) = mode {
        options.mode(mode);
    }
    let mut f = options.open(&tmp)?;
    let result = (|| {
        f.write_all(bytes)?;
        f.sync_all()?;
        if mode.is_some() {
            let owner = std::fs::metadata(path).or_else(|_| std::fs::metadata(&dir))?;
            let mine = f.metadata()?;
            if (owner.uid(), owner.gid()) != (mine.uid(), mine.gid()) {
                // Only root may give a file away; anyone else keeps their own file.
                let _ = std::os::unix::fs::fchown(&f, Some(owner.uid()), Some(owner.gid()));
            }
        }
        std::fs::rename(&tmp, path)?;
        std::fs::File::open(&dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_file_is_replaced_whole_with_mode_0600() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rt");
        std::fs::write(&path, "old\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        write_secret_file(&path, "new").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "new\n");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            1,
            "a temporary file was left"
        );
    }

    #[test]
    fn a_message_is_written_whole_and_no_temporary_file_stays() {
        let dir = tempfile::tempdir().unwrap();
        write_atomically(&dir.path().join("out"), "m.eml", b"hello").unwrap();
        assert_eq!(
            std::fs::read(dir.path().join("out/m.eml")).unwrap(),
            b"hello"
        );
        assert_eq!(
            std::fs::read_dir(dir.path().join("out")).unwrap().count(),
            1
        );
    }
}
