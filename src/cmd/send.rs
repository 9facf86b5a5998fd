//! `cronmail send JOB [--to ADDR]`: render and send one occurrence now, the "send me a
//! test" command. Not recorded in the ledger, and never retried.

use std::io::Write as _;
use std::path::Path;
use std::str::FromStr;
use std::time::Instant;

use chrono::{DateTime, Utc};
use lettre::message::Mailbox;

use super::{find_job, print_error, report, report_load_error};
use crate::config::{Host, header_control};
use crate::deliver::{self, DeliverError};
use crate::exit::Exit;

pub async fn send(path: &Path, name: &str, to: &[String]) -> Exit {
    let mut redirect = Vec::new();
    for t in to.iter().map(|t| t.trim()).filter(|t| !t.is_empty()) {
        if header_control(t).is_some() {
            print_error("--to contains a line break or control character");
            return Exit::Usage;
        }
        match Mailbox::from_str(t) {
            Ok(m) => redirect.push(m),
            Err(e) => {
                print_error(&format!("--to `{t}` is not a valid address: {e}"));
                return Exit::Usage;
            }
        }
    }
    let redirect = (!redirect.is_empty()).then_some(redirect);
    let loaded = match deliver::load(path, &Host::from_env(), &crate::mail::make_mailer()).await {
        Ok(l) => l,
        Err(e) => return report_load_error(&e, path),
    };
    let job = match find_job(&loaded.config, name) {
        Ok(j) => std::sync::Arc::clone(j),
        Err(exit) => return exit,
    };
    // A manual send is its own occurrence: now, to the second.
    let now = Utc::now();
    let occurrence = DateTime::from_timestamp(now.timestamp(), 0).unwrap_or(now);
    let started = Instant::now();
    let row = match deliver::first_row(&job) {
        Ok(row) => row,
        Err(e) => {
            print_error(&format!("job `{name}`: {e}"));
            return Exit::Config;
        }
    };
    let result = deliver::deliver(
        &loaded,
        &job,
        job.account,
        (occurrence, row.as_ref()),
        now,
        redirect.as_deref(),
    )
    .await;
    let line = deliver::LogContext {
        job: &job,
        row: row.as_ref().map(|r| &*r.key),
        occurrence,
        attempt: 1,
        transport: &**loaded.transport(job.account),
        elapsed: started.elapsed(),
        late: None,
    };
    match result {
        Ok(sent) => {
            deliver::log_outcome(&line, Ok(&sent), "");
            let _ = writeln!(
                std::io::stdout(),
                "sent `{name}` to {} recipient(s): {} (Message-ID <{}>)",
                sent.out.recipient_count(),
                sent.delivered.reply_line(),
                sent.out.message_id
            );
            Exit::Ok
        }
        Err((message_id, e)) => {
            deliver::log_outcome(
                &line,
                Err((message_id.as_deref(), &e)),
                "not retried (a manual send)",
            );
            match e {
                DeliverError::Send(e) => report(None, &e),
                // A file not there yet (or, with `skip`, a skip): a later send may work.
                other @ (DeliverError::Attach(_) | DeliverError::Skipped(_))
                    if matches!(other, DeliverError::Skipped(_))
                        || other.class() == crate::failure::ErrorClass::Local =>
                {
                    print_error(&format!("job `{name}`: not sent: {other}"));
                    Exit::TempFail
                }
                other => {
                    print_error(&format!("job `{name}`: {other}"));
                    Exit::Config
                }
            }
        }
    }
}
