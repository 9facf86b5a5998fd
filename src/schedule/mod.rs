//! When a job sends: its occurrences, and the instant of each.
//!
//! Pure: no clock, no I/O. The daemon asks `next_after(now)`; tests ask it with any
//! instant they like, across DST changes. A job's occurrences come in three layers:
//!
//! 1. what fires: a cron expression (`cron.rs`), an RFC 5545 rule (`rule.rs`), or
//!    one-shot times (`rule.rs`);
//! 2. omitted days (`omit.rs`): an occurrence on one is skipped or moved to the
//!    nearest earlier or later day, at the same local time;
//! 3. an advance warning (`before = ["7d"]`): each occurrence, that many days earlier
//!    at the same local time. A job with several offsets is one `Schedule` per offset.
//!
//! Wall times that layers 1 (rules, one-shot times), 2 and 3 compute are mapped to
//! instants by one policy, `local::resolve`.

mod calendar;
mod cron;
mod local;
mod omit;
mod rule;

use std::fmt;
use std::sync::Arc;

use chrono::{DateTime, Duration, NaiveDate, Utc};
use chrono_tz::Tz;

pub use calendar::ics_days;
use cron::CronSchedule;
pub use cron::{Ahead, Interner, explain};
pub use local::parse_local;
use local::{resolve, wall};
pub use omit::{MAX_MOVE_DAYS, Omit, OnOmit};
pub use rule::RuleSpec;
use rule::{OneShot, Rule};

/// How far ahead `validate` looks for a first occurrence. A schedule with none in
/// this window (`0 0 30 2 *`) is treated as one that never fires. Leap days
/// (`0 0 29 2 *`) recur within 8 years, so 9 covers every real calendar.
const HORIZON_YEARS: i64 = 9;

/// See `rule::SLACK_HOURS`: how far mapping a wall time can move it.
const SLACK: Duration = Duration::hours(26);

/// Bases looked at for one answer, at most (a schedule every second, omitted for
/// days, stops here rather than searching on).
const SEARCH_CAP: usize = 1_000_000;

/// Occurrences looked at for one advance warning, at most.
const LEAD_SEARCH_CAP: usize = 100_000;

/// Why an expression is not a schedule, or never fires, in words.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ScheduleError(pub String);

impl ScheduleError {
    pub fn contains(&self, text: &str) -> bool {
        self.0.contains(text)
    }
}

/// What fires.
#[derive(Clone, Debug)]
enum When {
    Cron(CronSchedule),
    Rule(Arc<Rule>),
    At(Arc<OneShot>),
}

impl When {
    fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        match self {
            When::Cron(c) => c.next_after(after),
            When::Rule(r) => r.next_after(after),
            When::At(a) => a.next_after(after),
        }
    }

    fn tz(&self) -> Tz {
        match self {
            When::Cron(c) => c.tz(),
            When::Rule(r) => r.tz(),
            When::At(a) => a.tz(),
        }
    }
}

/// A job's schedule: what fires, its omitted days, and its advance warning.
#[derive(Clone)]
pub struct Schedule {
    when: When,
    omit: Option<Arc<Omit>>,
    /// Days before each occurrence (`before = ["7d"]`), 0 for the occurrence itself.
    lead_days: u32,
}

impl fmt::Debug for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Schedule({:?} in {}", self.expr(), self.tz())?;
        if self.omit.is_some() {
            f.write_str(", with omitted days")?;
        }
        if self.lead_days > 0 {
            write!(f, ", {} days before", self.lead_days)?;
        }
        f.write_str(")")
    }
}

impl From<CronSchedule> for Schedule {
    fn from(c: CronSchedule) -> Self {
        Self {
            when: When::Cron(c),
            omit: None,
            lead_days: 0,
        }
    }
}

/// One send of a schedule, and why it is where it is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Occurrence {
    /// When it is sent.
    pub at: DateTime<Utc>,
    /// The occurrence it is about (after any move): `at` itself, or for an advance
    /// warning, the occurrence that many days later.
    pub event: DateTime<Utc>,
    /// The omitted day it was moved from, and what omits it.
    pub moved_from: Option<(NaiveDate, Arc<str>)>,
}

impl Schedule {
    /// A cron expression.
    pub fn parse(expr: &str, tz: Tz) -> Result<Self, ScheduleError> {
        Interner::default().parse(expr, tz)
    }

    /// An RFC 5545 rule from its start.
    pub fn rule(spec: &RuleSpec<'_>, tz: Tz) -> Result<Self, ScheduleError> {
        Ok(Self {
            when: When::Rule(Arc::new(Rule::new(spec, tz)?)),
            omit: None,
            lead_days: 0,
        })
    }

    /// One-shot local times.
    pub fn at(times: &[&str], tz: Tz) -> Result<Self, ScheduleError> {
        Ok(Self {
            when: When::At(Arc::new(OneShot::new(times, tz)?)),
            omit: None,
            lead_days: 0,
        })
    }

    #[must_use]
    pub fn with_omit(mut self, omit: Arc<Omit>) -> Self {
        self.omit = Some(omit);
        self
    }

    /// The same schedule, each send `days` earlier (an advance warning).
    #[must_use]
    pub fn with_lead(mut self, days: u32) -> Self {
        self.lead_days = days;
        self
    }

    pub fn lead_days(&self) -> u32 {
        self.lead_days
    }

    /// The occurrence a send at `at` is about: `at` itself, or for an advance warning,
    /// the same local time `lead_days` later.
    pub fn event_of(&self, at: DateTime<Utc>) -> DateTime<Utc> {
        if self.lead_days == 0 {
            return at;
        }
        let tz = self.tz();
        resolve(tz, wall(tz, at) + Duration::days(i64::from(self.lead_days)))
    }

    /// What fires, as written: the cron expression, the rule and its start, or the
    /// one-shot times.
    pub fn expr(&self) -> &str {
        match &self.when {
            When::Cron(c) => c.expr(),
            When::Rule(r) => r.text(),
            When::At(a) => a.text(),
        }
    }

    /// The cron expression, for a cron schedule.
    pub fn cron_expr(&self) -> Option<&str> {
        match &self.when {
            When::Cron(c) => Some(c.expr()),
            _ => None,
        }
    }

    /// The last one-shot time, for a job of `at` times.
    pub fn last_one_shot(&self) -> Option<DateTime<Utc>> {
        match &self.when {
            When::At(a) => a.last(),
            _ => None,
        }
    }

    pub fn tz(&self) -> Tz {
        self.when.tz()
    }

    /// The first send strictly after `after`, or `None` if there is none.
    pub fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        if self.omit.is_none() && self.lead_days == 0 {
            return self.when.next_after(after);
        }
        self.next_occurrence(after).map(|o| o.at)
    }

    /// The first send strictly after `after`, with the occurrence it is about.
    pub fn next_occurrence(&self, after: DateTime<Utc>) -> Option<Occurrence> {
        if self.lead_days == 0 {
            return self.next_kept(after);
        }
        let lead = Duration::days(i64::from(self.lead_days));
        let tz = self.tz();
        let horizon = after + Duration::days(366 * HORIZON_YEARS);
        // Sends are occurrences moved back `lead` in wall time; which of them is first
        // after `after` is searched around it, as DST can reorder them by an hour.
        let mut t = after + lead - SLACK;
        let mut best: Option<Occurrence> = None;
        for _ in 0..LEAD_SEARCH_CAP {
            let Some(o) = self.next_kept(t) else { break };
            if o.at > horizon + lead || best.as_ref().is_some_and(|b| o.at > b.event + SLACK * 2) {
                break;
            }
            let at = resolve(tz, wall(tz, o.at) - lead);
            if at > after && best.as_ref().is_none_or(|b| at < b.at) {
                best = Some(Occurrence {
                    at,
                    event: o.at,
                    moved_from: o.moved_from,
                });
            }
            t = o.at;
        }
        best
    }

    /// The first occurrence after `after` once omitted days are skipped or moved.
    fn next_kept(&self, after: DateTime<Utc>) -> Option<Occurrence> {
        let plain = |at| Occurrence {
            at,
            event: at,
            moved_from: None,
        };
        let Some(omit) = &self.omit else {
            return self.when.next_after(after).map(plain);
        };
        let tz = self.tz();
        let reach = Duration::days(omit.reach_days()) + SLACK;
        let horizon = after + Duration::days(366 * HORIZON_YEARS);
        // A later day's occurrence can move back before an earlier one (`before`), and
        // an earlier one forward past `after` (`after`): look that far either side.
        let (mut t, beyond) = match omit.on_omit {
            OnOmit::After => (after - reach, Duration::zero()),
            OnOmit::Before => (after, reach),
            OnOmit::Skip => (after, Duration::zero()),
        };
        let end_of_day = |day: NaiveDate| {
            day.succ_opt()
                .and_then(|d| d.and_hms_opt(0, 0, 0))
                .map(|midnight| resolve(tz, midnight) - Duration::nanoseconds(1))
        };
        let mut best: Option<Occurrence> = None;
        for _ in 0..SEARCH_CAP {
            let Some(b) = self.when.next_after(t) else {
                break;
            };
            if b > horizon || best.as_ref().is_some_and(|o| b > o.at + beyond) {
                break;
            }
            let local = wall(tz, b);
            let day = local.date();
            let candidate = match omit.why(day) {
                None => Some(plain(b)),
                Some(why) => omit.move_from(day).map(|to| {
                    let at = resolve(tz, to.and_time(local.time()));
                    Occurrence {
                        at,
                        event: at,
                        moved_from: Some((day, Arc::from(why))),
                    }
                }),
            };
            let moved = candidate.as_ref().is_some_and(|c| c.moved_from.is_some());
            if let Some(c) = candidate.filter(|c| c.at > after)
                && best.as_ref().is_none_or(|o| c.at < o.at)
            {
                best = Some(c);
            }
            // Within a day that is kept, or skipped whole, only its first base matters
            // (before `after`: none of it up to `after`); each base of a day moved
            // elsewhere keeps its own time of day.
            t = if moved {
                b
            } else {
                let eod = end_of_day(day).unwrap_or(b).max(b);
                if b <= after {
                    eod.min(after).max(b)
                } else {
                    eod
                }
            };
        }
        best
    }

    /// How many sends fall in `(from, until]`, counted up to `cap`.
    pub fn count_in(&self, from: DateTime<Utc>, until: DateTime<Utc>, cap: usize) -> usize {
        let mut n = 0;
        let mut t = from;
        while n < cap {
            match self.next_after(t) {
                Some(next) if next <= until => {
                    n += 1;
                    t = next;
                }
                _ => break,
            }
        }
        n
    }

    /// Checks that the schedule sends at all within `HORIZON_YEARS` of `now`.
    pub fn validate(&self, now: DateTime<Utc>) -> Result<DateTime<Utc>, ScheduleError> {
        match self.next_after(now) {
            Some(t) if t - now <= Duration::days(366 * HORIZON_YEARS) => Ok(t),
            _ => Err(ScheduleError(format!(
                "`{}` never fires (no occurrence in the next {HORIZON_YEARS} years{})",
                self.expr(),
                if self.omit.is_some() {
                    ", once omitted days are taken out"
                } else {
                    ""
                }
            ))),
        }
    }
}
