//! An account's sending limits: `max_per_minute` messages in any 60 s, and
//! `max_per_day` recipients in any 24 h (as Gmail counts).
//!
//! The window holds the account's deliveries of the last 24 h, read from the ledger at
//! start-up (and, with a shared ledger, at each poll, so every node's count), plus the
//! attempts in flight here. An occurrence over a limit waits until the instant the
//! window allows it: the oldest delivery that keeps it out is 60 s (or 24 h) old.

use std::collections::{HashMap, HashSet, VecDeque};

use chrono::{DateTime, Duration, Utc};

use crate::ledger::Key;

/// Why an occurrence waits, and until when.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Wait {
    pub until: DateTime<Utc>,
    pub why: String,
}

#[derive(Default)]
pub(super) struct Window {
    /// Deliveries of the last 24 h: when, and to how many recipients; oldest first.
    sent: VecDeque<(DateTime<Utc>, u32)>,
    /// Attempts in flight, counted from their start until they end.
    reserved: HashMap<Key, (DateTime<Utc>, u32)>,
    /// Occurrences already logged as waiting, so each is logged once.
    pub logged: HashSet<Key>,
}

const MINUTE: i64 = 60;
const DAY: i64 = 24 * 3600;

impl Window {
    /// The deliveries the ledger has of the last 24 h (every node's, when shared).
    pub fn seed(&mut self, mut rows: Vec<(DateTime<Utc>, u32)>) {
        rows.sort_by_key(|(t, _)| *t);
        self.sent = rows.into();
    }

    /// `None` when a message to `recipients` may go now; else when it may.
    pub fn wait(
        &mut self,
        now: DateTime<Utc>,
        recipients: u32,
        per_minute: Option<u32>,
        per_day: Option<u32>,
    ) -> Option<Wait> {
        while self
            .sent
            .front()
            .is_some_and(|(t, _)| *t <= now - Duration::seconds(DAY))
        {
            self.sent.pop_front();
        }
        let mut entries: Vec<(DateTime<Utc>, u32)> = self
            .sent
            .iter()
            .copied()
            .chain(self.reserved.values().copied())
            .filter(|(t, _)| *t > now - Duration::seconds(DAY))
            .collect();
        entries.sort_by_key(|(t, _)| *t);
        let mut wait: Option<Wait> = None;
        if let Some(max) = per_minute {
            let recent: Vec<_> = entries
                .iter()
                .filter(|(t, _)| *t > now - Duration::seconds(MINUTE))
                .collect();
            if recent.len() >= max as usize {
                let kth = recent[recent.len() - max as usize].0;
                wait = Some(Wait {
                    until: kth + Duration::seconds(MINUTE),
                    why: format!(
                        "{} messages in the last minute (max_per_minute = {max})",
                        recent.len()
                    ),
                });
            }
        }
        if let Some(max) = per_day {
            let total: u64 = entries.iter().map(|(_, n)| u64::from(*n)).sum();
            if total + u64::from(recipients) > u64::from(max) {
                let why = format!(
                    "{total} recipients in the last 24 hours (max_per_day = {max}), and this message has {recipients}"
                );
                let mut left = total;
                let until = entries
                    .iter()
                    .find_map(|(t, n)| {
                        left -= u64::from(*n);
                        (left + u64::from(recipients) <= u64::from(max))
                            .then(|| *t + Duration::seconds(DAY))
                    })
                    // More recipients than the day allows: never (it expires).
                    .unwrap_or(DateTime::<Utc>::MAX_UTC);
                if wait.as_ref().is_none_or(|w| w.until < until) {
                    wait = Some(Wait { until, why });
                }
            }
        }
        wait
    }

    /// An attempt starts: it counts from now until it ends.
    pub fn reserve(&mut self, key: &Key, now: DateTime<Utc>, recipients: u32) {
        self.logged.remove(key);
        self.reserved.insert(key.clone(), (now, recipients));
    }

    /// The attempt ended: counted as a delivery at `sent`, or not at all.
    pub fn ended(&mut self, key: &Key, sent: Option<DateTime<Utc>>) {
        if let Some((_, n)) = self.reserved.remove(key)
            && let Some(at) = sent
        {
            let at_pos = self.sent.partition_point(|(t, _)| *t <= at);
            self.sent.insert(at_pos, (at, n));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone as _;

    fn t(s: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(1_800_000_000 + s, 0).unwrap()
    }

    #[test]
    fn a_minute_limit_waits_for_the_oldest_send_to_leave_the_window() {
        let mut w = Window::default();
        w.seed(vec![(t(0), 1), (t(10), 1), (t(20), 1)]);
        assert_eq!(w.wait(t(30), 1, Some(4), None), None);
        let k = Key::new("j", t(30));
        w.reserve(&k, t(30), 1);
        let wait = w.wait(t(31), 1, Some(4), None).unwrap();
        assert_eq!(wait.until, t(60));
        assert!(wait.why.contains("4 messages"), "{}", wait.why);
        // Exactly when t(0) is 60 s old, one more may go.
        assert_eq!(w.wait(t(60), 1, Some(4), None), None);
        // A failed attempt is not counted.
        w.ended(&k, None);
        assert_eq!(w.wait(t(31), 1, Some(4), None), None);
    }

    #[test]
    fn a_day_limit_counts_recipients_over_a_rolling_24_hours() {
        let mut w = Window::default();
        w.seed(vec![(t(0), 300), (t(3600), 150), (t(7200), 40)]);
        // 490 sent: a message to 10 fits, one to 11 waits for the 300 to leave.
        assert_eq!(w.wait(t(8000), 10, None, Some(500)), None);
        assert_eq!(w.wait(t(8000), 11, None, Some(500)).unwrap().until, t(DAY));
        // To 320 it waits for the 300 and the 150 both.
        assert_eq!(
            w.wait(t(8000), 320, None, Some(500)).unwrap().until,
            t(3600 + DAY)
        );
        // More than the day allows can never go.
        assert_eq!(
            w.wait(t(8000), 501, None, Some(500)).unwrap().until,
            DateTime::<Utc>::MAX_UTC
        );
        // After a day the first row has left the window.
        assert_eq!(w.wait(t(DAY), 11, None, Some(500)), None);
    }
}
