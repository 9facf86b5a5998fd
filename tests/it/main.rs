#![allow(clippy::unwrap_used)] // test helpers: a failed setup step should panic with its location
//! cronmail's integration tests: one binary, real servers, real processes.
//!
//! SMTP tests need Python's aiosmtpd; `./scripts/test` installs it into `.venv`.

mod accounts;
mod auth;
mod calendar;
mod cli;
mod delivery;
mod docs;
mod dropin;
mod faults;
mod first_hour;
mod ha;
mod ledger;
mod merge;
mod oauth2;
mod ops;
mod schedule;
mod security;
mod service;
mod shapes;
mod smtp;
mod steer;
mod support;
mod timer;
