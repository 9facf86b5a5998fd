//! Days a job must not fire on, and what happens instead (remind's OMIT model):
//! `omit = ["weekends", "2026-12-31", "holidays"]` with `on_omit = "skip" | "before" |
//! "after"`.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{Datelike, NaiveDate, Weekday};

/// What an occurrence on an omitted day does.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum OnOmit {
    /// Not sent.
    #[default]
    Skip,
    /// Sent on the nearest earlier day that is not omitted, at the same local time.
    Before,
    /// Sent on the nearest later day that is not omitted, at the same local time.
    After,
}

/// The longest stretch of omitted days a move crosses. Past it, an occurrence has no
/// day to move to and is not sent (`check` reports a job that then never fires).
pub const MAX_MOVE_DAYS: i64 = 366;

/// A job's omitted days.
#[derive(Debug)]
pub struct Omit {
    weekends: bool,
    /// Each omitted date, with what omits it: the date as written, or a calendar's name.
    dates: BTreeMap<NaiveDate, Arc<str>>,
    pub on_omit: OnOmit,
    /// One more than the longest run of omitted days: how far a move can reach.
    reach: i64,
}

impl Omit {
    pub fn new(
        weekends: bool,
        dates: impl IntoIterator<Item = (NaiveDate, Arc<str>)>,
        on_omit: OnOmit,
    ) -> Self {
        let mut map = BTreeMap::new();
        for (d, why) in dates {
            // The first reason given is kept: a date written in the job before a calendar.
            map.entry(d).or_insert(why);
        }
        let mut omit = Self {
            weekends,
            dates: map,
            on_omit,
            reach: 1,
        };
        omit.reach = omit.longest_run() + 1;
        omit
    }

    /// Why `d` is omitted (`weekends`, `2026-12-31`, `holidays`), or `None`.
    pub fn why(&self, d: NaiveDate) -> Option<&str> {
        if self.weekends && matches!(d.weekday(), Weekday::Sat | Weekday::Sun) {
            return Some("weekends");
        }
        self.dates.get(&d).map(|w| &**w)
    }

    /// Days a move can cross, at most.
    pub fn reach_days(&self) -> i64 {
        self.reach
    }

    /// The day an occurrence on `d` moves to, or `None` when it is skipped (or every
    /// day within `MAX_MOVE_DAYS` is omitted).
    pub fn move_from(&self, d: NaiveDate) -> Option<NaiveDate> {
        let step = match self.on_omit {
            OnOmit::Skip => return None,
            OnOmit::Before => -1,
            OnOmit::After => 1,
        };
        (1..=MAX_MOVE_DAYS)
            .map(|n| d + chrono::Duration::days(n * step))
            .find(|c| self.why(*c).is_none())
    }

    /// The longest run of consecutive omitted days (weekends are two).
    fn longest_run(&self) -> i64 {
        let mut longest = if self.weekends { 2 } else { 0 };
        let (Some((&first, _)), Some((&last, _))) =
            (self.dates.first_key_value(), self.dates.last_key_value())
        else {
            return longest;
        };
        let mut run = 0;
        let mut d = first - chrono::Duration::days(2);
        let end = last + chrono::Duration::days(2);
        while d <= end {
            if self.why(d).is_some() {
                run += 1;
                longest = longest.max(run);
                if run > MAX_MOVE_DAYS {
                    return MAX_MOVE_DAYS;
                }
            } else {
                run = 0;
            }
            d += chrono::Duration::days(1);
        }
        longest
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> NaiveDate {
        s.parse().unwrap()
    }

    #[test]
    fn weekends_and_a_holiday_move_before_and_after() {
        let holidays = [(d("2026-12-25"), Arc::from("holidays"))];
        let before = Omit::new(true, holidays.clone(), OnOmit::Before);
        // Friday 25 December: moved to Thursday the 24th.
        assert_eq!(before.why(d("2026-12-25")), Some("holidays"));
        assert_eq!(before.move_from(d("2026-12-25")), Some(d("2026-12-24")));
        // Saturday 26th: back over the Friday holiday to Thursday.
        assert_eq!(before.move_from(d("2026-12-26")), Some(d("2026-12-24")));
        assert_eq!(before.reach_days(), 4, "Fri, Sat, Sun in a row, plus one");
        let after = Omit::new(true, holidays, OnOmit::After);
        assert_eq!(after.move_from(d("2026-12-25")), Some(d("2026-12-28")));
        let skip = Omit::new(true, [], OnOmit::Skip);
        assert_eq!(skip.move_from(d("2026-12-26")), None);
        assert_eq!(skip.why(d("2026-12-24")), None);
    }
}
