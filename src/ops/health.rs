//! What `/healthz` answers: 200 while the timer loop is alive and the ledger takes
//! writes, 503 with the reason otherwise.

use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, Ordering};

use chrono::{DateTime, Utc};

/// The timer loop says when it means to wake (at the next occurrence, within the hour);
/// this long past that, or past its last wake when it said nothing, without a wake-up
/// means it is stuck.
const LOOP_STALE_S: i64 = 150;

#[derive(Default)]
pub struct Health {
    /// When the timer loop last woke (Unix seconds), 0 before it ran.
    loop_beat: AtomicI64,
    /// When the timer loop means to wake next (Unix seconds), 0 until it says.
    loop_plan: AtomicI64,
    /// Why the ledger last refused a write, until one succeeds.
    ledger: Mutex<Option<String>>,
}

impl Health {
    pub fn beat(&self, now: DateTime<Utc>) {
        self.loop_beat.store(now.timestamp(), Ordering::Relaxed);
    }

    /// The timer loop is going to sleep until `wake`.
    pub fn sleeping_until(&self, wake: DateTime<Utc>) {
        self.loop_plan.store(wake.timestamp(), Ordering::Relaxed);
    }

    pub fn ledger(&self, result: Result<(), String>) {
        let mut l = self
            .ledger
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *l = result.err();
    }

    /// `Ok` when healthy at `now`, else why not.
    pub fn check(&self, now: DateTime<Utc>) -> Result<(), String> {
        let beat = self.loop_beat.load(Ordering::Relaxed);
        if beat == 0 {
            return Err("the timer loop has not started".to_owned());
        }
        let since = now.timestamp() - beat.max(self.loop_plan.load(Ordering::Relaxed));
        if since > LOOP_STALE_S {
            return Err(format!("the timer loop has not woken for {since} s"));
        }
        if let Some(e) = &*self
            .ledger
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
        {
            return Err(format!("the ledger refuses writes: {e}"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unhealthy_before_the_loop_runs_when_it_stalls_and_while_the_ledger_refuses() {
        let h = Health::default();
        let t0: DateTime<Utc> = "2026-03-02T09:00:00Z".parse().unwrap();
        assert!(h.check(t0).unwrap_err().contains("not started"));
        h.beat(t0);
        assert_eq!(h.check(t0 + chrono::Duration::seconds(60)), Ok(()));
        let e = h.check(t0 + chrono::Duration::seconds(200)).unwrap_err();
        assert!(e.contains("has not woken for 200 s"), "{e}");
        // Asleep until an occurrence an hour away: healthy until well after it.
        h.sleeping_until(t0 + chrono::Duration::seconds(3600));
        assert_eq!(h.check(t0 + chrono::Duration::seconds(3700)), Ok(()));
        let e = h.check(t0 + chrono::Duration::seconds(3800)).unwrap_err();
        assert!(e.contains("has not woken for 200 s"), "{e}");
        h.sleeping_until(t0);
        h.ledger(Err("disk I/O error".to_owned()));
        let e = h.check(t0).unwrap_err();
        assert!(
            e.contains("the ledger refuses writes: disk I/O error"),
            "{e}"
        );
        h.ledger(Ok(()));
        assert_eq!(h.check(t0), Ok(()));
    }
}
