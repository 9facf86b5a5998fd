//! Calendar rules (RFC 5545 RRULEs, on the `rrule` crate) and one-shot times.
//!
//! A rule is expanded in the job's wall-clock time, then each instance is mapped to an
//! instant by `local::resolve`. Expanding in wall time sidesteps the `rrule` crate's
//! open DST issues (duplicated and missing instances near transitions): the crate only
//! ever sees a zone without transitions (UTC standing in for the wall clock), and the
//! DST policy is ours, in one place.

use std::fmt;

use chrono::{DateTime, Duration, NaiveDateTime, TimeZone, Utc};
use chrono_tz::Tz;
use rrule::{Frequency, RRule, RRuleSet, Unvalidated};

use super::local::{parse_local, resolve, wall};
use super::{HORIZON_YEARS, ScheduleError};

/// How far the mapping of a wall time can move it from its neighbours: a DST gap, or a
/// zone skipping a whole day (Pacific/Apia in 2011). Instances are searched this far
/// either side of the answer, as the order of wall times and of instants can differ
/// inside a gap (02:30 in the gap is 03:30, after 03:00).
const SLACK_HOURS: i64 = 26;

/// An RRULE with its DTSTART, in a zone.
#[derive(Clone)]
pub struct Rule {
    /// As written, for messages: `FREQ=WEEKLY;INTERVAL=2;BYDAY=MO from 2026-01-05T09:00`.
    text: String,
    tz: Tz,
    /// Expanded in wall time: UTC stands for the job's local clock.
    set: RRuleSet,
}

impl fmt::Debug for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Rule({:?} in {})", self.text, self.tz)
    }
}

/// The fields of a rule job in jobs.toml.
pub struct RuleSpec<'a> {
    pub rrule: &'a str,
    pub start: &'a str,
    pub until: Option<&'a str>,
    pub count: Option<u32>,
    /// Allows rules that fire more than once a minute.
    pub allow_frequent: bool,
}

fn wall_clock(local: NaiveDateTime) -> DateTime<rrule::Tz> {
    rrule::Tz::UTC.from_utc_datetime(&local)
}

/// `UNTIL=` as RFC 5545 writes it: a date (the whole day counts), a local date-time,
/// or a UTC one (`Z`), as a wall time in `tz`.
fn parse_until(value: &str, tz: Tz) -> Result<NaiveDateTime, ScheduleError> {
    let bad = || {
        ScheduleError(format!(
            "UNTIL={value} is not a date (20271231), a local time (20271231T170000) or a UTC time (20271231T080000Z)"
        ))
    };
    if let Some(utc) = value.strip_suffix(['Z', 'z']) {
        let t = NaiveDateTime::parse_from_str(utc, "%Y%m%dT%H%M%S").map_err(|_| bad())?;
        return Ok(wall(tz, Utc.from_utc_datetime(&t)));
    }
    if let Ok(t) = NaiveDateTime::parse_from_str(value, "%Y%m%dT%H%M%S") {
        return Ok(t);
    }
    let d = chrono::NaiveDate::parse_from_str(value, "%Y%m%d").map_err(|_| bad())?;
    d.and_hms_opt(23, 59, 59).ok_or_else(bad)
}

impl Rule {
    pub fn new(spec: &RuleSpec<'_>, tz: Tz) -> Result<Self, ScheduleError> {
        let start =
            parse_local(spec.start, tz).map_err(|e| ScheduleError(format!("start: {e}")))?;
        let written = spec.rrule.trim();
        let body = written
            .strip_prefix("RRULE:")
            .or_else(|| written.strip_prefix("rrule:"))
            .unwrap_or(written);
        // UNTIL is taken out and given back as a wall time (see the module's comment).
        let mut until = None;
        let mut parts = Vec::new();
        for part in body.split(';').filter(|p| !p.trim().is_empty()) {
            match part.split_once('=') {
                Some((k, v)) if k.trim().eq_ignore_ascii_case("UNTIL") => {
                    until = Some(parse_until(v.trim(), tz)?);
                }
                _ => parts.push(part.trim()),
            }
        }
        let mut rule: RRule<Unvalidated> = parts
            .join(";")
            .parse()
            .map_err(|e: rrule::RRuleError| ScheduleError(format!("RRULE `{written}`: {e}")))?;
        if let Some(u) = spec.until {
            if until.is_some() {
                return Err(ScheduleError(
                    "both `until` and UNTIL in the rule: keep one".to_owned(),
                ));
            }
            until = Some(parse_local(u, tz).map_err(|e| ScheduleError(format!("until: {e}")))?);
        }
        if let Some(u) = until {
            if u < start {
                return Err(ScheduleError(format!(
                    "the rule ends ({u}) before it starts ({start})"
                )));
            }
            rule = rule.until(wall_clock(u));
        }
        if let Some(n) = spec.count {
            if rule.get_count().is_some() {
                return Err(ScheduleError(
                    "both `count` and COUNT in the rule: keep one".to_owned(),
                ));
            }
            rule = rule.count(n);
        }
        if !spec.allow_frequent
            && (rule.get_freq() == Frequency::Secondly || rule.get_by_second().len() > 1)
        {
            return Err(ScheduleError(format!(
                "RRULE `{written}` fires more than once a minute; if that is meant, set `allow_frequent = true`"
            )));
        }
        let set = rule
            .build(wall_clock(start))
            .map_err(|e| ScheduleError(format!("RRULE `{written}`: {e}")))?;
        Ok(Self {
            text: format!("{written} from {}", start.format("%Y-%m-%dT%H:%M:%S")),
            tz,
            set,
        })
    }

    pub fn text(&self) -> &str {
        &self.text
    }

    pub fn tz(&self) -> Tz {
        self.tz
    }

    /// The first instance strictly after `after`.
    pub fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let slack = Duration::hours(SLACK_HOURS);
        let floor = wall(self.tz, after) - slack;
        let horizon = wall(self.tz, after) + Duration::days(366 * HORIZON_YEARS);
        let mut best: Option<(DateTime<Utc>, NaiveDateTime)> = None;
        for instance in &self.set {
            let local = instance.naive_utc();
            if local < floor {
                continue;
            }
            if local > horizon || best.is_some_and(|(_, b)| local > b + slack) {
                break;
            }
            let at = resolve(self.tz, local);
            if at > after && best.is_none_or(|(b, _)| at < b) {
                best = Some((at, local));
            }
        }
        best.map(|(at, _)| at)
    }
}

/// One or more fixed local times: `at = "2027-01-04T09:00"`.
#[derive(Clone)]
pub struct OneShot {
    text: String,
    tz: Tz,
    /// Ascending, without duplicates.
    times: Vec<DateTime<Utc>>,
}

impl fmt::Debug for OneShot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "OneShot({:?} in {})", self.text, self.tz)
    }
}

impl OneShot {
    pub fn new(times: &[&str], tz: Tz) -> Result<Self, ScheduleError> {
        if times.is_empty() {
            return Err(ScheduleError(
                "`at` is an empty list: give at least one local time".to_owned(),
            ));
        }
        let mut parsed = Vec::with_capacity(times.len());
        for t in times {
            let local = parse_local(t, tz).map_err(ScheduleError)?;
            parsed.push(resolve(tz, local));
        }
        parsed.sort_unstable();
        parsed.dedup();
        Ok(Self {
            text: format!("at {}", times.join(", ")),
            tz,
            times: parsed,
        })
    }

    pub fn text(&self) -> &str {
        &self.text
    }

    pub fn tz(&self) -> Tz {
        self.tz
    }

    pub fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let i = self.times.partition_point(|t| *t <= after);
        self.times.get(i).copied()
    }

    /// The last time, for `check`'s warning about one-shot times in the past.
    pub fn last(&self) -> Option<DateTime<Utc>> {
        self.times.last().copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(rrule: &str, start: &str, tz: Tz) -> Result<Rule, ScheduleError> {
        Rule::new(
            &RuleSpec {
                rrule,
                start,
                until: None,
                count: None,
                allow_frequent: false,
            },
            tz,
        )
    }

    fn take(r: &Rule, from: &str, n: usize) -> Vec<String> {
        let mut t: DateTime<Utc> = from.parse().unwrap();
        let mut out = Vec::new();
        for _ in 0..n {
            let Some(next) = r.next_after(t) else { break };
            out.push(next.with_timezone(&r.tz).to_rfc3339());
            t = next;
        }
        out
    }

    #[test]
    fn every_other_monday_from_the_fifth_of_january() {
        let r = rule(
            "FREQ=WEEKLY;INTERVAL=2;BYDAY=MO",
            "2026-01-05T09:00",
            chrono_tz::Asia::Seoul,
        )
        .unwrap();
        assert_eq!(
            take(&r, "2026-01-01T00:00:00Z", 3),
            [
                "2026-01-05T09:00:00+09:00",
                "2026-01-19T09:00:00+09:00",
                "2026-02-02T09:00:00+09:00"
            ]
        );
    }

    #[test]
    fn a_daily_rule_across_both_berlin_transitions() {
        let berlin = chrono_tz::Europe::Berlin;
        let r = rule("FREQ=DAILY", "2026-03-27T02:30", berlin).unwrap();
        // 03-29 02:30 is in the gap: 03:30 CEST. 10-25 02:30 happens twice: once, CEST.
        assert_eq!(
            take(&r, "2026-03-27T00:00:00Z", 3),
            [
                "2026-03-27T02:30:00+01:00",
                "2026-03-28T02:30:00+01:00",
                "2026-03-29T03:30:00+02:00"
            ]
        );
        assert_eq!(
            take(&r, "2026-10-24T12:00:00Z", 2),
            ["2026-10-25T02:30:00+02:00", "2026-10-26T02:30:00+01:00"]
        );
    }

    #[test]
    fn until_in_utc_count_and_bad_rules() {
        let seoul = chrono_tz::Asia::Seoul;
        let r = rule(
            "FREQ=DAILY;UNTIL=20260102T010000Z",
            "2026-01-01T09:00",
            seoul,
        )
        .unwrap();
        assert_eq!(
            take(&r, "2025-12-31T00:00:00Z", 9).len(),
            2,
            "01:00Z is 10:00 KST: the 2nd is in, read as local time it would not be"
        );
        let r = rule("FREQ=DAILY;COUNT=3", "2026-01-01T09:00", seoul).unwrap();
        assert_eq!(take(&r, "2025-12-31T00:00:00Z", 9).len(), 3);
        assert!(
            rule("FREQ=FORTNIGHTLY", "2026-01-01T09:00", seoul)
                .unwrap_err()
                .0
                .contains("FORTNIGHTLY")
        );
        let e = rule("FREQ=SECONDLY", "2026-01-01T09:00", seoul).unwrap_err();
        assert!(e.0.contains("allow_frequent"), "{e}");
        let e = rule("FREQ=MINUTELY;BYSECOND=0,30", "2026-01-01T09:00", seoul).unwrap_err();
        assert!(e.0.contains("more than once a minute"), "{e}");
        assert!(rule("FREQ=MINUTELY", "2026-01-01T09:00", seoul).is_ok());
    }

    #[test]
    fn one_shot_times_fire_once_each_in_order() {
        let s = OneShot::new(
            &["2027-01-04T09:00", "2026-12-24T18:00"],
            chrono_tz::Asia::Seoul,
        )
        .unwrap();
        let t0: DateTime<Utc> = "2026-01-01T00:00:00Z".parse().unwrap();
        let a = s.next_after(t0).unwrap();
        let b = s.next_after(a).unwrap();
        assert_eq!(a.to_rfc3339(), "2026-12-24T09:00:00+00:00");
        assert_eq!(b.to_rfc3339(), "2027-01-04T00:00:00+00:00");
        assert_eq!(s.next_after(b), None);
    }
}
