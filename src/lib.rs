//! cronmail sends scheduled reminder emails over TLS-secured SMTP.
//!
//! People describe jobs in `jobs.toml` (a cron schedule, recipients, a subject and body
//! template); the daemon sends each job's email at the local time written, across DST
//! changes, and logs every success and every failure with what to do about it.
//!
//! # Layout
//!
//! The tree is the pipeline: a reminder goes down it from the file to the SMTP reply.
//!
//! ```text
//! main.rs          parse the command line -> logging -> cmd::execute -> exit code
//! cli.rs           clap: the subcommands and flags, nothing else
//! logging.rs       tracing to stderr, or to journald under systemd
//! cmd/             one file per subcommand; errors are printed there, once
//! config/          jobs.toml -> Config; the only module that sees TOML
//!   raw/             the file as written (serde, spans): the top, [[job]], the accounts
//!   types.rs         what the rest reads (Config, Job, SmtpConfig, ...)
//!   validate/        raw -> types, every problem collected (Validator); account.rs the
//!                    accounts, shape.rs attachments, invitations and recipients files
//!   host.rs          facts of the machine, injected
//!   provider.rs      provider facts: presets, OAuth2 endpoints
//!   diagnostic.rs    PATH:LINE:COL problems
//! schedule.rs      cron + zone -> next occurrence (pure)
//! timer.rs         the heap of next occurrences, the catch-up policy (pure)
//! clock.rs         now, as an input
//! render.rs        templates -> subject and bodies (pure)
//! message/         rendered parts -> RFC 5322 bytes and an envelope; attach.rs (files read
//!                  at send time), invite.rs (the iCalendar invitation)
//! recipients.rs    a `recipients_file`: CSV rows, one message each
//! deliver.rs       one occurrence end to end: load, prepare, send, the log line
//! mail/            a message -> SMTP over TLS (smtp, auth, pool, probe, hint), or the outbox
//! oauth2/          XOAUTH2 access tokens (on the oauth2 crate), and `oauth2 authorize`
//! tls.rs           rustls configurations, the pin, naming TLS failures
//! secret.rs        where a secret comes from
//! retry.rs         after a failure: retry at, hold, or give up (pure)
//! ledger/          what was sent, durably: sqlite.rs (one node), pg.rs (several), one open
//! daemon/          the service: timer_loop, worker (admit: accounts, fallback, limits),
//!                  attempt, account (a login's hold), limit (sending limits), recorder,
//!                  signals, notify
//! persist.rs       the one atomic write (temp, fsync, rename)
//! files.rs         the one reader: regular files only, under a cap
//! failure.rs       the failure vocabulary (ErrorClass, Phase, Failure), at the bottom
//! exit.rs          sysexits codes, and a failure class's code
//! ```
//!
//! Imports go down the tree: `failure`, `persist` and `tls` import nothing of the
//! crate but each other's leaves; `config` imports only the pure core it builds (a
//! `Schedule`, `Templates`); `mail` knows `config` and `message`, never the daemon;
//! `daemon` and `cmd` sit on top. No two files reach each other in a loop
//! (`shared/tools/import-loops` checks it in CI).
//!
//! Modules are private where only the crate uses them; what the binary, the tests and
//! the examples need is public (`config`, `schedule`, `timer`, `clock`, `ledger`,
//! `daemon`) or re-exported below.
//!
//! # Theory of operation
//! One task runs the timer loop: a min-heap holds every enabled job's next occurrence;
//! the loop sleeps until the earliest (woken at once by a wall-clock step, see
//! `clock::Steps`, else never more than `daemon::MAX_SLEEP`), decides what is due, and hands each fire to the delivery
//! worker. The worker claims it in the ledger, then runs the attempt as a task of its
//! own, which marks it `sending`, renders, sends (bounded by `timeout`, at most a few
//! connections at a time), and records `sent`; a failure comes back to the worker,
//! which retries it, holds the account, or gives up (`retry::decide`). SIGHUP swaps the
//! whole configuration or keeps the old one; SIGTERM stops firing and lets sends in
//! progress finish.

mod agenda;
mod cli;
pub mod clock;
mod cmd;
pub mod config;
pub mod daemon;
mod deliver;
mod exit;
mod failure;
mod fetch;
mod files;
pub mod ledger;
mod logging;
mod mail;
mod message;
#[cfg(feature = "oauth2")]
mod oauth2;
#[cfg(not(feature = "oauth2"))]
#[path = "oauth2/absent.rs"]
mod oauth2;
mod ops;
mod persist;
pub mod recipients;
mod render;
mod retry;
pub mod schedule;
mod secret;
pub mod timer;
mod tls;

pub use cli::{Cli, Command, LogFormat};
pub use cmd::execute;
pub use deliver::{DeliverError, LoadError, Loaded, prepare};
pub use exit::Exit;
pub use failure::{ErrorClass, Failure, Phase};
pub use logging::{LogError, init as init_logging};
pub use mail::{BoxFuture, Delivered, Mailer, MakeTransport, Transport, make_mailer};
pub use message::Outgoing;
pub use render::{Part, Templates, Vars};
pub use secret::{SecretError, SecretSource};
pub use tls::https_client_config;
