//! The command line: subcommands and flags, nothing else.

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

/// Sends scheduled reminder emails over TLS-secured SMTP.
#[derive(Debug, Parser)]
#[command(name = "cronmail", version, about, propagate_version = true)]
pub struct Cli {
    /// The jobs file.
    #[arg(
        short,
        long,
        global = true,
        env = "CRONMAIL_CONFIG",
        default_value = "/etc/cronmail/jobs.toml",
        value_name = "PATH"
    )]
    pub config: PathBuf,

    /// Log line format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// Log level (error, warn, info, debug, trace) or a tracing filter; overrides `$CRONMAIL_LOG`.
    #[arg(long, global = true, value_name = "LEVEL")]
    pub log_level: Option<String>,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon: send every job's email on its schedule until SIGTERM.
    Run,
    /// Validate the jobs file and report every problem as PATH:LINE:COL.
    Check {
        /// Also connect to the SMTP server: TLS and AUTH, then QUIT without sending.
        #[arg(long)]
        smtp: bool,
    },
    /// Print upcoming occurrences: JOB<TAB>LOCAL TIME<TAB>UTC TIME.
    Next {
        /// Only this job.
        #[arg(long, value_name = "NAME")]
        job: Option<String>,
        /// Occurrences per job.
        #[arg(long, default_value_t = 1, value_name = "N")]
        count: usize,
        /// Start after this instant (RFC 3339) instead of now.
        #[arg(long, value_name = "RFC3339")]
        from: Option<String>,
    },
    /// Print the exact RFC 5322 message of one occurrence.
    Render {
        /// The job's name.
        job: String,
        /// The occurrence (RFC 3339); default: the job's next one.
        #[arg(long, value_name = "RFC3339")]
        at: Option<String>,
    },
    /// Per job: next fire, last sent, last failure, pending count (from the ledger).
    Status,
    /// Recent occurrences with their state and the server's reply.
    History {
        /// Only this job.
        #[arg(long, value_name = "NAME")]
        job: Option<String>,
        /// How many, newest first.
        #[arg(long, default_value_t = 20, value_name = "N")]
        limit: usize,
    },
    /// Render and send one occurrence now: the "send me a test" command.
    Send {
        /// The job's name.
        job: String,
        /// Send to this address instead of the job's recipients.
        #[arg(long, value_name = "ADDR")]
        to: Option<String>,
    },
}
