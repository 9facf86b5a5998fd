//! The files of a job's `attach`, read at send time: a regular file under the job's
//! folder, within the size cap, typed by its extension (`mime_guess`). A retry reads
//! them again, so "send the report when it appears" is a missing file and a retry.

use std::path::{Component, Path, PathBuf};

use crate::config::{Attachments, OnMissing};
use crate::failure::ErrorClass;
use crate::files::FileError;

/// One attached file.
#[derive(Clone, Debug)]
pub struct File {
    /// The file name the recipient sees.
    pub name: String,
    pub content_type: String,
    pub bytes: Vec<u8>,
}

/// What the attachments of one send came to.
#[derive(Debug)]
pub enum Found {
    /// The files to attach, and those left out (`on_missing_attachment = "send"`).
    Files {
        files: Vec<File>,
        missing: Vec<PathBuf>,
    },
    /// A file is missing and the job skips the occurrence.
    Skip(PathBuf),
}

#[derive(Debug, thiserror::Error)]
pub enum AttachError {
    #[error("attachment `{}` is not there (on_missing_attachment = \"fail\": retried until retry_for)", .0.display())]
    Missing(PathBuf),
    #[error("attachment `{}` is outside `{}`; set `attach_dir` to allow another folder", .path.display(), .dir.display())]
    Outside { path: PathBuf, dir: PathBuf },
    #[error("attachment {0}")]
    Read(FileError),
    #[error("the attachments total more than `attach_max_bytes` ({} bytes)", crate::files::group(*.0))]
    TooLarge(u64),
}

impl AttachError {
    /// A missing or unreadable file may appear (or be fixed) before `retry_for`; a file
    /// outside the folder, of the wrong kind or too large will not.
    pub fn class(&self) -> ErrorClass {
        match self {
            AttachError::Missing(_) | AttachError::Read(FileError::Io { .. }) => ErrorClass::Local,
            _ => ErrorClass::Permanent,
        }
    }
}

/// Reads the files `paths` (as rendered) of a job with attachments `a`.
pub fn load(a: &Attachments, paths: &[String]) -> Result<Found, AttachError> {
    let mut files = Vec::with_capacity(paths.len());
    let mut missing = Vec::new();
    let mut total = 0u64;
    for rendered in paths {
        let path = resolve(a, rendered)?;
        let left = a.max_bytes.saturating_sub(total);
        let bytes = match crate::files::read(&path, left) {
            Ok(b) => b,
            Err(e) if e.kind() == Some(std::io::ErrorKind::NotFound) => match a.on_missing {
                OnMissing::Fail => return Err(AttachError::Missing(path)),
                OnMissing::Skip => return Ok(Found::Skip(path)),
                OnMissing::Send => {
                    missing.push(path);
                    continue;
                }
            },
            Err(FileError::TooLarge { .. }) => return Err(AttachError::TooLarge(a.max_bytes)),
            Err(e) => return Err(AttachError::Read(e)),
        };
        total += bytes.len() as u64;
        let name = path.file_name().map_or_else(
            || "attachment".to_owned(),
            |n| n.to_string_lossy().into_owned(),
        );
        let content_type = mime_guess::from_path(&path)
            .first_or_octet_stream()
            .essence_str()
            .to_owned();
        files.push(File {
            name,
            content_type,
            bytes,
        });
    }
    Ok(Found::Files { files, missing })
}

/// The path of an attachment, refused when it leaves the allowed folder: by `..`, or
/// by a symbolic link that points elsewhere.
fn resolve(a: &Attachments, rendered: &str) -> Result<PathBuf, AttachError> {
    let written = Path::new(rendered.trim());
    let path = normalize(&a.base.join(written));
    let dir = normalize(&a.dir);
    let outside = || AttachError::Outside {
        path: path.clone(),
        dir: dir.clone(),
    };
    if !path.starts_with(&dir) {
        return Err(outside());
    }
    if let (Ok(real), Ok(real_dir)) = (path.canonicalize(), dir.canonicalize())
        && !real.starts_with(real_dir)
    {
        return Err(outside());
    }
    Ok(path)
}

/// `a/./b/../c` -> `a/c`, without touching the file system.
fn normalize(p: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                if !out.pop() {
                    out.push("..");
                }
            }
            other => out.push(other),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attachments(dir: &Path, on_missing: OnMissing, max_bytes: u64) -> Attachments {
        Attachments {
            base: dir.to_path_buf(),
            dir: dir.to_path_buf(),
            max_bytes,
            on_missing,
        }
    }

    #[test]
    fn types_come_from_the_extension_and_paths_stay_inside() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(tmp.path().join("r.pdf"), b"%PDF-1.4").unwrap();
        std::fs::write(tmp.path().join("notes"), b"x").unwrap();
        let a = attachments(tmp.path(), OnMissing::Fail, 100);
        let Found::Files { files, missing } =
            load(&a, &["r.pdf".into(), "./sub/../notes".into()]).unwrap()
        else {
            panic!("not files")
        };
        assert!(missing.is_empty());
        assert_eq!(files[0].content_type, "application/pdf");
        assert_eq!(files[1].content_type, "application/octet-stream");
        assert!(matches!(
            load(&a, &["../etc/passwd".into()]),
            Err(AttachError::Outside { .. })
        ));
        assert!(matches!(
            load(&a, &["/etc/passwd".into()]),
            Err(AttachError::Outside { .. })
        ));
        std::os::unix::fs::symlink("/etc/hostname", tmp.path().join("link")).unwrap();
        assert!(matches!(
            load(&a, &["link".into()]),
            Err(AttachError::Outside { .. })
        ));
    }

    #[test]
    fn missing_files_follow_the_policy_and_the_cap_holds() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(tmp.path().join("a.txt"), vec![b'a'; 60]).unwrap();
        let gone = || vec!["a.txt".to_owned(), "gone.csv".to_owned()];
        let fail = load(&attachments(tmp.path(), OnMissing::Fail, 100), &gone()).unwrap_err();
        assert!(matches!(fail, AttachError::Missing(_)));
        assert_eq!(fail.class(), ErrorClass::Local);
        assert!(fail.to_string().contains("gone.csv"), "{fail}");
        assert!(matches!(
            load(&attachments(tmp.path(), OnMissing::Skip, 100), &gone()).unwrap(),
            Found::Skip(p) if p.ends_with("gone.csv")
        ));
        let Found::Files { files, missing } =
            load(&attachments(tmp.path(), OnMissing::Send, 100), &gone()).unwrap()
        else {
            panic!("not files")
        };
        assert_eq!((files.len(), missing.len()), (1, 1));
        let twice = vec!["a.txt".to_owned(), "a.txt".to_owned()];
        let big = load(&attachments(tmp.path(), OnMissing::Fail, 100), &twice).unwrap_err();
        assert!(matches!(big, AttachError::TooLarge(100)));
        assert_eq!(big.class(), ErrorClass::Permanent);
    }
}
