//! cronmail sends scheduled reminder emails over TLS-secured SMTP.
//!
//! People describe jobs in `jobs.toml` (a cron schedule, recipients, a subject and body
//! template); the daemon sends each job's email at the local time written, across DST
//! changes, and logs every success and every failure with what to do about it.
//!
//! # Layout
//! - [`config`]: jobs.toml -> a validated [`config::Config`]; the only module that sees TOML.
//! - [`schedule`]: a cron expression in a time zone -> its next occurrence (pure).
//! - [`timer`]: which occurrences are due, and the missed-run policy (pure).
//! - [`render`]: templates -> subject and bodies for one occurrence (pure).
//! - [`message`]: rendered parts -> RFC 5322 bytes and an envelope (pure).
//! - [`mailer`]: a message -> SMTP over TLS, or the outbox; classifies failures, keeps
//!   connections for bursts.
//! - [`oauth2`]: XOAUTH2 access tokens from a refresh token, and `oauth2 authorize`.
//! - [`ledger`]: what was sent, durably: `SQLite` for one node, `PostgreSQL` for several.
//! - [`diagnose`], [`provider`]: hints for failures, provider presets.
//! - [`daemon`]: the timer loop, deliveries, signals, reload, shutdown, `sd_notify`.
//! - [`app`], [`cli`], [`logging`]: the command line.
//!
//! # Theory of operation
//! One task runs the timer loop: a min-heap holds every enabled job's next occurrence;
//! the loop sleeps until the earliest (never more than `daemon::MAX_SLEEP`, re-reading
//! the wall clock on wake), decides what is due, and hands each fire to the delivery
//! worker, which renders, sends (bounded by `timeout`, at most a few connections at a
//! time), and logs. SIGHUP swaps the whole configuration or keeps the old one; SIGTERM
//! stops firing and lets sends in progress finish.

pub mod cli;
pub mod clock;
pub mod cmd;
pub mod config;
pub mod daemon;
pub mod deliver;
pub mod exit;
pub mod failure;
pub mod ledger;
pub mod logging;
pub mod mail;
pub mod message;
pub mod oauth2;
pub mod persist;
pub mod render;
pub mod retry;
pub mod schedule;
pub mod secret;
pub mod timer;
pub mod tls;
