//! Log output: text or JSON on stderr, level from `--log-level` or `$CRONMAIL_LOG`.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

use crate::cli::LogFormat;

/// Is stderr the systemd journal? systemd sets `JOURNAL_STREAM=DEV:INODE` for the
/// stream it connects; if stderr is that stream, the journal adds timestamps itself.
fn stderr_is_journal() -> bool {
    use std::os::unix::fs::MetadataExt;
    let Ok(value) = std::env::var("JOURNAL_STREAM") else {
        return false;
    };
    let Some((dev, ino)) = value.split_once(':') else {
        return false;
    };
    let Ok(meta) = std::fs::metadata("/proc/self/fd/2") else {
        return false;
    };
    dev.parse() == Ok(meta.dev()) && ino.parse() == Ok(meta.ino())
}

/// Why logging could not be set up: a bad `--log-level` filter, or a second init.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct LogError(String);

/// Installs the global subscriber.
pub fn init(format: LogFormat, level: Option<&str>) -> Result<(), LogError> {
    let spec = level
        .map(str::to_owned)
        .or_else(|| std::env::var("CRONMAIL_LOG").ok())
        .unwrap_or_else(|| "info".to_owned());
    let filter = EnvFilter::try_new(&spec)
        .map_err(|e| LogError(format!("invalid log level `{spec}`: {e}")))?;
    let journal = stderr_is_journal();
    if journal && format == LogFormat::Text {
        // Straight to journald, with every field its own journal field (JOB=,
        // OCCURRENCE=, MESSAGE_ID=, SMTP_CODE=, CLASS=, ...), so that
        // `journalctl -u cronmail JOB=weekly-report` works. Not also to stderr, which
        // is the journal too.
        if let Ok(layer) = tracing_journald::layer() {
            let layer = layer
                .with_field_prefix(None)
                .with_syslog_identifier("cronmail".to_owned());
            return tracing_subscriber::registry()
                .with(filter)
                .with(layer)
                .try_init()
                .map_err(|e| LogError(e.to_string()));
        }
    }
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal() && !journal)
        .with_target(false);
    let result = match (format, journal) {
        (LogFormat::Json, _) => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .try_init(),
        (LogFormat::Text, true) => builder.without_time().try_init(),
        (LogFormat::Text, false) => builder.try_init(),
    };
    result.map_err(|e| LogError(e.to_string()))
}
