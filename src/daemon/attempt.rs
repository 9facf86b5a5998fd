//! One attempt at one occurrence, as a task of its own: mark it `sending` in the
//! ledger, deliver it, and record `sent` at once. The worker gets the outcome back
//! (`Done`) and decides what comes next.

use std::sync::Arc;
use std::time::Instant;

use tracing::error;

use super::recorder::Recorder;
use crate::clock::Clock;
use crate::config::Job;
use crate::deliver::{self, DeliverError, Loaded, Sent};
use crate::ledger::{Key, Receipt};

/// The outcome of one attempt.
pub(super) struct Done {
    pub key: Key,
    pub job: Arc<Job>,
    /// The account it went through (an index in the configuration's accounts).
    pub account: usize,
    /// The attempt's number (from the ledger); 0 when none was started.
    pub attempt: u32,
    pub started: Instant,
    pub result: Result<Sent, (Option<String>, DeliverError)>,
    /// Another node holds the occurrence (or finished it): nothing was sent here.
    pub elsewhere: bool,
    /// Sent, but the ledger could not record it: to record again.
    pub unrecorded: Option<Receipt>,
}

/// Everything one attempt needs.
pub(super) struct Attempt {
    pub loaded: Arc<Loaded>,
    pub job: Arc<Job>,
    pub account: usize,
    /// The row of a `recipients_file` this attempt is for.
    pub row: Option<Arc<crate::recipients::Row>>,
    pub key: Key,
    pub recorder: Recorder,
    pub clock: Arc<dyn Clock>,
}

impl Attempt {
    pub async fn run(self) -> Done {
        let Attempt {
            loaded,
            job,
            account,
            row,
            key,
            recorder,
            clock,
        } = self;
        let started = Instant::now();
        let done = |attempt, result, elsewhere| Done {
            key: key.clone(),
            job: Arc::clone(&job),
            account,
            attempt,
            started,
            result,
            elsewhere,
            unrecorded: None,
        };
        let attempt = match recorder.start(key.clone(), clock.now()).await {
            Ok(Some(n)) => n,
            Ok(None) => {
                let nothing = Err((
                    None,
                    DeliverError::Ledger(Arc::new(crate::ledger::LedgerError::Stopped)),
                ));
                return done(0, nothing, true);
            }
            Err(e) => return done(0, Err((None, DeliverError::Ledger(e))), false),
        };
        let result = deliver::deliver(
            &loaded,
            &job,
            account,
            (key.scheduled_at, row.as_ref()),
            clock.now(),
            None,
        )
        .await;
        // Record the delivery here, not after the worker picks this task up: the
        // shorter the gap after the server's reply, the rarer a resend after a crash.
        let mut unrecorded = None;
        if let Ok(sent) = &result {
            let receipt = Receipt {
                key: key.clone(),
                reply: sent.delivered.reply_line(),
                at: clock.now(),
                account: Arc::clone(&loaded.config.accounts[account].name),
                recipients: u32::try_from(sent.out.recipient_count()).unwrap_or(u32::MAX),
            };
            if let Err(e) = recorder.sent(receipt.clone()).await {
                error!(job = %job.name, occurrence = %deliver::utc(key.scheduled_at), error = %e, "the message was sent but the ledger could not record it; recording it again until it can (if cronmail stops first, it may be sent again, with the same Message-ID)");
                unrecorded = Some(receipt);
            }
        }
        Done {
            unrecorded,
            ..done(attempt, result, false)
        }
    }
}
