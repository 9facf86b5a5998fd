//! Where a password comes from, and reading it without ever showing it.
//!
//! jobs.toml never holds a secret: it names a source (an environment variable, a file,
//! a command, or a systemd credential). Errors and logs name the source, never the value.

use std::fmt;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use secrecy::SecretString;

use crate::files::{self, FileError, MAX_SECRET};

/// How long a `password_command` may run. A password manager that waits for a PIN
/// nobody will type must not hang the daemon.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);

/// Bytes of a failing command's stderr kept for the error message.
const STDERR_LIMIT: usize = 2000;

/// A configured source of one secret.
#[derive(Clone, PartialEq, Eq)]
pub enum SecretSource {
    Env(String),
    File(PathBuf),
    Command(Vec<String>),
    /// A systemd credential: `$CREDENTIALS_DIRECTORY/<name>` under systemd. Run by hand
    /// (`cronmail check`, `send`), the file of that name beside jobs.toml, which is
    /// where the shipped unit's `LoadCredential=` takes it from.
    Credential {
        name: String,
        beside_config: PathBuf,
    },
}

impl fmt::Debug for SecretSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretSource({self})")
    }
}

impl fmt::Display for SecretSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SecretSource::Env(name) => write!(f, "environment variable `{name}`"),
            SecretSource::File(path) => write!(f, "file `{}`", path.display()),
            SecretSource::Command(argv) => write!(f, "command `{}`", argv.join(" ")),
            SecretSource::Credential { name, .. } => write!(f, "systemd credential `{name}`"),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("{source_desc} is not set")]
    EnvMissing { source_desc: String },
    #[error("{source_desc} is empty")]
    Empty { source_desc: String },
    #[error("reading {source_desc}: {}", .error.reason())]
    Read {
        source_desc: String,
        error: FileError,
    },
    #[error(
        "{source_desc} printed more than {} bytes; a secret is one line",
        crate::files::group(MAX_SECRET)
    )]
    TooLong { source_desc: String },
    #[error("{source_desc} is not valid UTF-8")]
    NotUtf8 { source_desc: String },
    #[error(
        "{source_desc} is not there: $CREDENTIALS_DIRECTORY is set only when systemd starts cronmail with LoadCredential=, and outside systemd the file of that name beside jobs.toml is read"
    )]
    NoCredentialsDirectory { source_desc: String },
    #[error("running {source_desc}: {error}")]
    Spawn {
        source_desc: String,
        error: std::io::Error,
    },
    #[error("{source_desc} did not finish within {}s", COMMAND_TIMEOUT.as_secs())]
    Timeout { source_desc: String },
    #[error("{source_desc} failed ({status}){}", if stderr.is_empty() { String::new() } else { format!(": {stderr}") })]
    CommandFailed {
        source_desc: String,
        status: String,
        stderr: String,
    },
}

impl SecretSource {
    /// Reads the secret. File contents lose one trailing newline; command output is trimmed.
    pub async fn read(&self) -> Result<SecretString, SecretError> {
        let source_desc = self.to_string();
        let value = match self {
            SecretSource::Env(name) => match std::env::var(name) {
                Ok(v) => v,
                Err(std::env::VarError::NotPresent) => {
                    return Err(SecretError::EnvMissing { source_desc });
                }
                Err(std::env::VarError::NotUnicode(_)) => {
                    return Err(SecretError::NotUtf8 { source_desc });
                }
            },
            SecretSource::File(path) => read_file(path.clone(), &source_desc).await?,
            SecretSource::Credential {
                name,
                beside_config,
            } => match std::env::var_os("CREDENTIALS_DIRECTORY") {
                Some(dir) => read_file(PathBuf::from(dir).join(name), &source_desc).await?,
                None => read_file(
                    beside_config.clone(),
                    &format!(
                        "{source_desc} (outside systemd: `{}`)",
                        beside_config.display()
                    ),
                )
                .await
                .map_err(|e| match e {
                    SecretError::Read { source_desc, error }
                        if error.kind() == Some(std::io::ErrorKind::NotFound) =>
                    {
                        SecretError::NoCredentialsDirectory { source_desc }
                    }
                    other => other,
                })?,
            },
            SecretSource::Command(argv) => run_command(argv, &source_desc).await?,
        };
        if value.is_empty() {
            return Err(SecretError::Empty { source_desc });
        }
        Ok(SecretString::from(value))
    }
}

async fn read_file(path: PathBuf, source_desc: &str) -> Result<String, SecretError> {
    let read = tokio::task::spawn_blocking(move || files::read(&path, MAX_SECRET)).await;
    let bytes = match read {
        Ok(r) => r.map_err(|error| SecretError::Read {
            source_desc: source_desc.to_owned(),
            error,
        })?,
        Err(e) => std::panic::resume_unwind(e.into_panic()),
    };
    let mut text = String::from_utf8(bytes).map_err(|_| SecretError::NotUtf8 {
        source_desc: source_desc.to_owned(),
    })?;
    if text.ends_with('\n') {
        text.pop();
        if text.ends_with('\r') {
            text.pop();
        }
    }
    Ok(text)
}

/// Reads `r` to its end, keeping at most `cap` bytes; `true` when there was more.
async fn read_capped(
    mut r: impl tokio::io::AsyncRead + Unpin,
    cap: usize,
    stop_at_cap: bool,
) -> std::io::Result<(Vec<u8>, bool)> {
    use tokio::io::AsyncReadExt as _;
    let mut kept = Vec::new();
    let mut over = false;
    let mut chunk = [0u8; 4096];
    loop {
        let n = r.read(&mut chunk).await?;
        if n == 0 {
            return Ok((kept, over));
        }
        let room = cap.saturating_sub(kept.len());
        kept.extend_from_slice(&chunk[..n.min(room)]);
        if n > room {
            over = true;
            if stop_at_cap {
                return Ok((kept, over));
            }
        }
    }
}

async fn run_command(argv: &[String], source_desc: &str) -> Result<String, SecretError> {
    let (program, rest) = argv.split_first().ok_or_else(|| SecretError::Empty {
        source_desc: source_desc.to_owned(),
    })?;
    let spawn_error = |error| SecretError::Spawn {
        source_desc: source_desc.to_owned(),
        error,
    };
    let mut child = tokio::process::Command::new(program)
        .args(rest)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(spawn_error)?;
    let (Some(stdout), Some(stderr)) = (child.stdout.take(), child.stderr.take()) else {
        return Err(spawn_error(std::io::Error::other(
            "no pipes to the command",
        )));
    };
    let cap = usize::try_from(MAX_SECRET).unwrap_or(usize::MAX);
    let work = async {
        // Both pipes at once: a command that fills one while we wait on the other
        // would hang. Output past the cap stops the command.
        let (out, err) = tokio::join!(
            read_capped(stdout, cap, true),
            read_capped(stderr, STDERR_LIMIT, false)
        );
        let (out, too_long) = out?;
        if too_long {
            let _ = child.kill().await;
            return Ok(None);
        }
        let status = child.wait().await?;
        Ok::<_, std::io::Error>(Some((status, out, err.map(|(e, _)| e).unwrap_or_default())))
    };
    let Some((status, stdout, stderr)) = tokio::time::timeout(COMMAND_TIMEOUT, work)
        .await
        .map_err(|_| SecretError::Timeout {
            source_desc: source_desc.to_owned(),
        })?
        .map_err(spawn_error)?
    else {
        return Err(SecretError::TooLong {
            source_desc: source_desc.to_owned(),
        });
    };
    if !status.success() {
        // stdout may hold part of a secret; only stderr and the status are shown.
        let mut stderr = String::from_utf8_lossy(&stderr).trim().to_owned();
        if stderr.len() >= STDERR_LIMIT {
            let cut = (0..STDERR_LIMIT)
                .rev()
                .find(|&i| stderr.is_char_boundary(i))
                .unwrap_or(0);
            stderr.truncate(cut);
            stderr.push('…');
        }
        return Err(SecretError::CommandFailed {
            source_desc: source_desc.to_owned(),
            status: status.to_string(),
            stderr,
        });
    }
    let text = String::from_utf8(stdout).map_err(|_| SecretError::NotUtf8 {
        source_desc: source_desc.to_owned(),
    })?;
    Ok(text.trim().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;

    #[tokio::test]
    async fn file_loses_one_trailing_newline() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pw");
        std::fs::write(&path, "hunter2\n\n").unwrap();
        let secret = SecretSource::File(path).read().await.unwrap();
        assert_eq!(secret.expose_secret(), "hunter2\n");
    }

    #[tokio::test]
    async fn failing_command_shows_status_and_stderr_not_stdout() {
        let argv = [
            "sh",
            "-c",
            "printf '%s-%s' s3cr3t out; echo 'vault locked' >&2; exit 3",
        ]
        .map(String::from)
        .to_vec();
        let err = SecretSource::Command(argv)
            .read()
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("vault locked"), "{err}");
        assert!(err.contains("exit status: 3"), "{err}");
        assert!(!err.contains("s3cr3t-out"), "{err}");
    }

    #[tokio::test]
    async fn command_output_is_trimmed() {
        let argv = ["printf", "  pw \\n"].map(String::from).to_vec();
        let secret = SecretSource::Command(argv).read().await.unwrap();
        assert_eq!(secret.expose_secret(), "pw");
    }

    #[tokio::test]
    async fn a_fifo_a_device_and_endless_output_are_refused_not_waited_for() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("pw");
        assert!(
            std::process::Command::new("mkfifo")
                .arg(&fifo)
                .status()
                .unwrap()
                .success()
        );
        let err = SecretSource::File(fifo)
            .read()
            .await
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("a FIFO (named pipe), not a regular file"),
            "{err}"
        );
        let err = SecretSource::File("/dev/zero".into())
            .read()
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("a character device"), "{err}");
        let argv = ["cat", "/dev/zero"].map(String::from).to_vec();
        let err = SecretSource::Command(argv)
            .read()
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("printed more than 65,536 bytes"), "{err}");
    }

    #[test]
    fn debug_names_the_source_only() {
        let s = SecretSource::Env("SMTP_PW".into());
        assert_eq!(
            format!("{s:?}"),
            "SecretSource(environment variable `SMTP_PW`)"
        );
    }
}

/// A URL that may carry a token (a healthchecks.io ping, a webhook): shown and logged
/// by its host only, never whole.
#[derive(Clone)]
pub struct SecretUrl(std::sync::Arc<SecretString>);

impl SecretUrl {
    pub fn new(url: String) -> Self {
        SecretUrl(std::sync::Arc::new(SecretString::from(url)))
    }

    /// The whole URL, to make the request with: never to print.
    pub fn expose(&self) -> &str {
        use secrecy::ExposeSecret as _;
        self.0.expose_secret()
    }

    /// What logs show: the scheme and host (`https://hc-ping.com`).
    pub fn host(&self) -> String {
        let url = self.expose();
        let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
        let host = rest.split(['/', '?', '#']).next().unwrap_or("");
        // Drop user:password@ if present.
        let host = host.rsplit('@').next().unwrap_or(host);
        format!("{scheme}://{host}")
    }
}

impl fmt::Debug for SecretUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretUrl({}/…)", self.host())
    }
}

impl fmt::Display for SecretUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/…", self.host())
    }
}
