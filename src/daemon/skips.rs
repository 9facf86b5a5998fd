//! A stretch of occurrences the catch-up policy skips (a week of a per-minute job after
//! cronmail was down): counted on the blocking pool, then one log line and one ledger
//! row keyed at the newest skipped instant, so that catch-up after a restart resumes
//! after it.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use tracing::{error, warn};

use super::recorder::Recorder;
use crate::config::Job;
use crate::deliver::{local, utc};
use crate::files::group;
use crate::ledger::Key;
use crate::message;
use crate::timer::{SkipReason, count_between};

/// Most occurrences of one skipped stretch counted (a per-second job for 11 days).
const COUNT_CAP: u64 = 1_000_000;

/// One stretch to count and record.
pub(super) struct Stretch {
    pub job: Arc<Job>,
    pub first: DateTime<Utc>,
    pub last: DateTime<Utc>,
    pub reason: SkipReason,
    pub now: DateTime<Utc>,
}

/// Counts and records stretches one at a time, in the order they came: a thousand
/// jobs back after a week is ten million schedule steps, which must not take the
/// cores from the sends that go out meanwhile.
pub(super) async fn run(recorder: Recorder, mut rx: tokio::sync::mpsc::UnboundedReceiver<Stretch>) {
    while let Some(s) = rx.recv().await {
        record_range(&recorder, s).await;
    }
}

async fn record_range(recorder: &Recorder, stretch: Stretch) {
    let Stretch {
        job,
        first,
        last,
        reason,
        now,
    } = stretch;
    let schedule = job.schedule.clone();
    let count =
        tokio::task::spawn_blocking(move || count_between(&schedule, first, last, COUNT_CAP))
            .await
            .ok()
            .flatten();
    let counted = count.map_or_else(|| format!("more than {}", group(COUNT_CAP)), group);
    let text = format!(
        "skipped {counted} occurrences of `{}` from {} to {} ({})",
        job.name,
        local(&job, first),
        local(&job, last),
        reason.policy(&job)
    );
    warn!(job = %job.name, occurrence = %utc(last), first = %utc(first), count = count.unwrap_or(0), "{text}");
    let key = Key::new(Arc::clone(&job.name), last);
    let id = message::message_id(&job, last);
    if let Err(e) = recorder.call(move |l| l.skip(&key, &id, &text, now)).await {
        error!(error = %e, "recording skipped occurrences in the ledger failed");
    }
}
