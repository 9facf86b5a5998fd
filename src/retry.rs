//! What to do after a failed attempt. Pure: the clock and the random draw are inputs.
//!
//! - transient failures (4xx, timeouts, refused connections, TLS set-up) are retried
//!   with exponential backoff and jitter between `retry_min` and `retry_max`;
//! - a permanent 5xx is `failed` at once, never retried;
//! - an authentication failure holds every send of the account (`Hold`), so a wrong
//!   password does not turn into a login storm that locks the account;
//! - an occurrence still undelivered `retry_for` after its scheduled instant expires.

use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::config::Delivery;
use crate::failure::ErrorClass;
use crate::ledger::State;

/// What to do with one occurrence after a failed attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Next {
    /// Try again at this instant.
    RetryAt(DateTime<Utc>),
    /// Stop: `failed` or `expired`.
    GiveUp(State),
}

/// The delay before retry number `n` (1-based): uniformly drawn (by `draw` in [0, 1))
/// between `retry_min` and `min(retry_max, retry_min * 2^(n-1))`. The jitter spreads
/// the retries of a burst, so a server coming back is not hit by all of them at once.
pub fn backoff(d: &Delivery, n: u32, draw: f64) -> Duration {
    let cap = d
        .retry_min
        .saturating_mul(1u32 << n.saturating_sub(1).min(20))
        .min(d.retry_max);
    let span = cap.saturating_sub(d.retry_min);
    d.retry_min + span.mul_f64(draw.clamp(0.0, 1.0))
}

/// Decides after attempt number `attempts` of the occurrence scheduled at `occurrence`
/// failed with `class`. Authentication failures are retried like transient ones here;
/// the hold that pauses the whole account is the daemon's.
pub fn after_failure(
    class: ErrorClass,
    attempts: u32,
    occurrence: DateTime<Utc>,
    now: DateTime<Utc>,
    d: &Delivery,
    draw: f64,
) -> Next {
    if class == ErrorClass::Permanent {
        return Next::GiveUp(State::Failed);
    }
    let at = now + chrono::Duration::from_std(backoff(d, attempts, draw)).unwrap_or_default();
    expire_or(at, occurrence, d)
}

/// Sends of an account are paused after an authentication failure, until `until` (or
/// a reload with new credentials).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Hold {
    pub until: DateTime<Utc>,
    /// Failures in a row, for the backoff.
    pub level: u32,
    /// `Auth` or `Quota`: what the account is held for.
    pub class: ErrorClass,
}

/// What to do after a failed attempt, and the account's hold after it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decision {
    pub next: Next,
    /// `Some` when this failure holds (or keeps holding) the account.
    pub hold: Option<Hold>,
}

/// Whether a failure of this class holds the whole account: a wrong credential or a
/// limit reached is the account's, not the message's.
pub fn holds_account(class: ErrorClass) -> bool {
    matches!(class, ErrorClass::Auth | ErrorClass::Quota)
}

/// Decides after attempt number `attempts` failed with `class`, with the account's
/// current `hold`. An authentication failure or a limit holds the whole account: one
/// failed attempt, not one per occurrence, and the occurrence waits for the hold's end.
pub fn decide(
    class: ErrorClass,
    attempts: u32,
    occurrence: DateTime<Utc>,
    now: DateTime<Utc>,
    d: &Delivery,
    hold: Option<Hold>,
    draw: f64,
) -> Decision {
    if holds_account(class) {
        let level = hold.map_or(0, |h| h.level) + 1;
        let until = now + chrono::Duration::from_std(backoff(d, level, draw)).unwrap_or_default();
        return Decision {
            next: expire_or(until, occurrence, d),
            hold: Some(Hold {
                until,
                level,
                class,
            }),
        };
    }
    Decision {
        next: after_failure(class, attempts.max(1), occurrence, now, d, draw),
        hold: None,
    }
}

/// What happens next, for the `then` field of the `not sent` line.
pub fn then(next: Next, d: &Delivery) -> String {
    match next {
        Next::RetryAt(at) => format!(
            "retrying at {}",
            at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        ),
        Next::GiveUp(State::Expired) => format!(
            "expired: not delivered within retry_for ({}) of its scheduled time; giving up",
            humantime::format_duration(d.retry_for)
        ),
        Next::GiveUp(_) => "failed permanently; not retrying".to_owned(),
    }
}

/// `RetryAt(at)`, unless `at` is past the occurrence's `retry_for`.
pub fn expire_or(at: DateTime<Utc>, occurrence: DateTime<Utc>, d: &Delivery) -> Next {
    let deadline =
        occurrence + chrono::Duration::from_std(d.retry_for).unwrap_or(chrono::Duration::MAX);
    if at > deadline {
        Next::GiveUp(State::Expired)
    } else {
        Next::RetryAt(at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d() -> Delivery {
        Delivery {
            retry_min: Duration::from_secs(30),
            retry_max: Duration::from_secs(1800),
            retry_for: Duration::from_secs(86400),
            ..Delivery::default()
        }
    }

    #[test]
    fn backoff_doubles_between_min_and_max() {
        assert_eq!(backoff(&d(), 1, 0.99), Duration::from_secs(30));
        assert_eq!(backoff(&d(), 2, 0.0), Duration::from_secs(30));
        assert_eq!(backoff(&d(), 2, 1.0), Duration::from_secs(60));
        assert_eq!(backoff(&d(), 4, 1.0), Duration::from_secs(240));
        assert_eq!(backoff(&d(), 30, 1.0), Duration::from_secs(1800));
        assert!(
            backoff(&d(), 4, 0.5) > Duration::from_secs(30)
                && backoff(&d(), 4, 0.5) < Duration::from_secs(240)
        );
    }

    #[test]
    fn an_auth_failure_holds_the_account_with_growing_backoff() {
        let occ = DateTime::from_timestamp(1_000_000, 0).unwrap();
        let first = decide(ErrorClass::Auth, 1, occ, occ, &d(), None, 1.0);
        let hold = first.hold.unwrap();
        assert_eq!(hold.level, 1);
        assert_eq!(first.next, Next::RetryAt(hold.until));
        let second = decide(ErrorClass::Auth, 1, occ, occ, &d(), Some(hold), 1.0);
        assert_eq!(second.hold.unwrap().level, 2);
        assert!(second.hold.unwrap().until > hold.until);
        let transient = decide(ErrorClass::Transient, 1, occ, occ, &d(), Some(hold), 0.0);
        assert_eq!(transient.hold, None);
        assert_eq!(
            then(Next::GiveUp(State::Failed), &d()),
            "failed permanently; not retrying"
        );
    }

    #[test]
    fn permanent_fails_transient_retries_late_expires() {
        let occ = DateTime::from_timestamp(1_000_000, 0).unwrap();
        assert_eq!(
            after_failure(ErrorClass::Permanent, 1, occ, occ, &d(), 0.5),
            Next::GiveUp(State::Failed)
        );
        assert_eq!(
            after_failure(ErrorClass::Transient, 1, occ, occ, &d(), 0.5),
            Next::RetryAt(occ + chrono::Duration::seconds(30))
        );
        let late = occ + chrono::Duration::hours(24);
        assert_eq!(
            after_failure(ErrorClass::Connect, 9, occ, late, &d(), 0.5),
            Next::GiveUp(State::Expired)
        );
    }
}
