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
        help_heading = "Global options",
        env = "CRONMAIL_CONFIG",
        default_value = "/etc/cronmail/jobs.toml",
        value_name = "PATH"
    )]
    pub config: PathBuf,

    /// Log line format on stderr.
    #[arg(long, global = true, help_heading = "Global options", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// Log level (error, warn, info, debug, trace) or a tracing filter; overrides `$CRONMAIL_LOG`.
    #[arg(
        long,
        global = true,
        help_heading = "Global options",
        value_name = "LEVEL"
    )]
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
        /// Also show how each schedule was read, field by field.
        #[arg(long)]
        explain: bool,
    },
    /// Print upcoming occurrences: JOB<TAB>LOCAL TIME<TAB>UTC TIME.
    Next {
        /// Only this job.
        #[arg(long, value_name = "NAME")]
        job: Option<String>,
        /// Occurrences per job.
        #[arg(long, default_value_t = 1, value_name = "N")]
        count: usize,
        /// Start after this instant (RFC 3339, exclusive) instead of now.
        #[arg(long, value_name = "RFC3339")]
        from: Option<String>,
        /// Also show how each schedule was read, field by field.
        #[arg(long)]
        explain: bool,
        /// Print JSON (see the manual for the fields).
        #[arg(long)]
        json: bool,
    },
    /// Draw the coming days: each reminder at its local time, past ones with their state.
    Agenda {
        /// How many days, from today.
        #[arg(long, default_value_t = 7, value_name = "N")]
        days: u32,
        /// Also this many days before today (from the ledger).
        #[arg(long, default_value_t = 1, value_name = "N")]
        past: u32,
        /// Only this job.
        #[arg(long, value_name = "NAME")]
        job: Option<String>,
        /// Print JSON (see the manual for the fields).
        #[arg(long)]
        json: bool,
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
    Status {
        /// Print JSON (see the manual for the fields).
        #[arg(long)]
        json: bool,
    },
    /// Recent occurrences with their state and the server's reply.
    History {
        /// Only this job.
        #[arg(long, value_name = "NAME")]
        job: Option<String>,
        /// How many, newest first.
        #[arg(long, default_value_t = 20, value_name = "N")]
        limit: usize,
        /// Print JSON (see the manual for the fields).
        #[arg(long)]
        json: bool,
    },
    /// `OAuth2` for `auth = "xoauth2"` with `[smtp.oauth2]`.
    Oauth2 {
        #[command(subcommand)]
        command: OAuth2Command,
    },
    /// Render and send one occurrence now: the "send me a test" command.
    Send {
        /// The job's name.
        job: String,
        /// Send to these addresses instead of the job's recipients (repeat, or separate
        /// with commas).
        #[arg(long, value_name = "ADDR", value_delimiter = ',')]
        to: Vec<String>,
    },
    /// Print the JSON Schema of the jobs file, for editors (taplo, Even Better TOML).
    Schema,
    /// Do not send one occurrence of a job (recorded as skipped by hand).
    Skip {
        /// The job's name.
        job: String,
        /// The next occurrence not already skipped (the default).
        #[arg(long, conflicts_with = "at")]
        next: bool,
        /// This occurrence (RFC 3339).
        #[arg(long, value_name = "RFC3339")]
        at: Option<String>,
    },
    /// Skip a job's occurrences (recorded) until --until, or until `cronmail resume`.
    Pause {
        /// The job's name.
        job: String,
        /// The end of the pause (RFC 3339); default: until resumed.
        #[arg(long, value_name = "RFC3339")]
        until: Option<String>,
    },
    /// End a job's pause.
    Resume {
        /// The job's name.
        job: String,
    },
    /// Send one occurrence of a job now, recorded and retried like any other.
    Trigger {
        /// The job's name.
        job: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum OAuth2Command {
    /// Sign in once, interactively, and write the refresh token to `refresh_token_file`:
    /// a code to enter at the provider's page (Microsoft), or a sign-in page that sends
    /// the browser back to a listener on 127.0.0.1 (Google).
    Authorize {
        /// The provider; must agree with [smtp.oauth2] `provider`, which it defaults to.
        #[arg(long, value_enum)]
        provider: Option<OAuthProviderArg>,
        /// The loopback port for the browser's redirect (Google); default: any free one.
        #[arg(long, default_value_t = 0, value_name = "PORT")]
        port: u16,
        /// The account to sign in for (`default` is [smtp]); default: the only one with `OAuth2`.
        #[arg(long, value_name = "NAME")]
        account: Option<String>,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum OAuthProviderArg {
    Microsoft,
    Google,
}
