//! The days of an iCalendar file (`.ics`): every day that one of its events covers,
//! recurring events (RRULE, EXDATE) expanded. Parsed with the `icalendar` crate,
//! recurrences with the `rrule` crate. Pure: the text in, the days out.

use std::collections::BTreeSet;

use chrono::{Duration, NaiveDate, NaiveDateTime, TimeZone};
use icalendar::{CalendarComponent, CalendarDateTime, Component, DatePerhapsTime};
use rrule::{RRule, Unvalidated};

/// Days an event of a holiday calendar covers, at most (a longer one is a mistake of
/// the file, not a holiday).
const MAX_EVENT_DAYS: i64 = 366;

/// The date an event's start or end names, as written (a holiday is a day in the place
/// it is published for, whatever its time zone).
fn date_of(d: &DatePerhapsTime) -> NaiveDate {
    match d {
        DatePerhapsTime::Date(d) => *d,
        DatePerhapsTime::DateTime(CalendarDateTime::Floating(t)) => t.date(),
        DatePerhapsTime::DateTime(CalendarDateTime::Utc(t)) => t.date_naive(),
        DatePerhapsTime::DateTime(CalendarDateTime::WithTimezone { date_time, .. }) => {
            date_time.date()
        }
    }
}

/// EXDATE values: `20261225`, `20261225T000000`, `20261225T000000Z`, comma-separated.
fn exdates(event: &icalendar::Event) -> BTreeSet<NaiveDate> {
    let mut out = BTreeSet::new();
    for p in event.multi_properties().get("EXDATE").into_iter().flatten() {
        for v in p.value().split(',') {
            let v = v.trim();
            if let Ok(d) = NaiveDate::parse_from_str(v.get(..8).unwrap_or(v), "%Y%m%d") {
                out.insert(d);
            }
        }
    }
    if let Some(v) = event.property_value("EXDATE") {
        for v in v.split(',') {
            let v = v.trim();
            if let Ok(d) = NaiveDate::parse_from_str(v.get(..8).unwrap_or(v), "%Y%m%d") {
                out.insert(d);
            }
        }
    }
    out
}

/// The first days of a recurring event's instances up to `until`.
fn recurrences(rule: &str, start: NaiveDate, until: NaiveDate) -> Result<Vec<NaiveDate>, String> {
    let parsed: RRule<Unvalidated> = rule.parse().map_err(|e| format!("RRULE `{rule}`: {e}"))?;
    let midnight = |d: NaiveDate| -> NaiveDateTime { d.and_hms_opt(0, 0, 0).unwrap_or_default() };
    let set = parsed
        .build(rrule::Tz::UTC.from_utc_datetime(&midnight(start)))
        .map_err(|e| format!("RRULE `{rule}`: {e}"))?;
    let mut out = Vec::new();
    for instance in &set {
        let d = instance.naive_utc().date();
        if d > until {
            break;
        }
        out.push(d);
    }
    Ok(out)
}

/// Every day the events of `text` cover, up to `until`. An error says why the text is
/// not an iCalendar file, or which event could not be read.
pub fn ics_days(text: &str, until: NaiveDate) -> Result<BTreeSet<NaiveDate>, String> {
    let head = text.trim_start_matches('\u{feff}').trim_start();
    if !head
        .get(..15)
        .is_some_and(|h| h.eq_ignore_ascii_case("BEGIN:VCALENDAR"))
    {
        return Err("not an iCalendar file: it does not begin with BEGIN:VCALENDAR".to_owned());
    }
    let calendar: icalendar::Calendar = text
        .parse()
        .map_err(|e: String| format!("not a valid iCalendar file: {}", e.trim()))?;
    let mut days = BTreeSet::new();
    for component in &calendar.components {
        let CalendarComponent::Event(event) = component else {
            continue;
        };
        let summary = event.property_value("SUMMARY").unwrap_or("an event");
        let Some(start) = event.get_start() else {
            return Err(format!("`{summary}` has no DTSTART"));
        };
        let first = date_of(&start);
        // DTEND is exclusive for all-day events; a timed event covers the day it is on.
        let length = match (event.get_end(), &start) {
            (Some(end @ DatePerhapsTime::Date(_)), DatePerhapsTime::Date(_)) => {
                (date_of(&end) - first).num_days().max(1)
            }
            (Some(end), _) => (date_of(&end) - first).num_days() + 1,
            (None, _) => 1,
        };
        if !(1..=MAX_EVENT_DAYS).contains(&length) {
            return Err(format!(
                "`{summary}` on {first} lasts {length} days; expected all-day events of 1 to {MAX_EVENT_DAYS} days"
            ));
        }
        let starts = match event.property_value("RRULE") {
            Some(rule) => {
                recurrences(rule, first, until).map_err(|e| format!("`{summary}`: {e}"))?
            }
            None => vec![first],
        };
        let skip = exdates(event);
        for s in starts.into_iter().filter(|s| !skip.contains(s)) {
            for n in 0..length {
                days.insert(s + Duration::days(n));
            }
        }
    }
    Ok(days)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ICS: &str = "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//test//EN\r\n\
BEGIN:VEVENT\r\nUID:1\r\nDTSTAMP:20260101T000000Z\r\nDTSTART;VALUE=DATE:20261225\r\nDTEND;VALUE=DATE:20261226\r\nSUMMARY:Christmas\r\nEND:VEVENT\r\n\
BEGIN:VEVENT\r\nUID:2\r\nDTSTAMP:20260101T000000Z\r\nDTSTART;VALUE=DATE:20260101\r\nDTEND;VALUE=DATE:20260102\r\nRRULE:FREQ=YEARLY\r\nEXDATE;VALUE=DATE:20280101\r\nSUMMARY:New Year\r\nEND:VEVENT\r\n\
BEGIN:VEVENT\r\nUID:3\r\nDTSTAMP:20260101T000000Z\r\nDTSTART;VALUE=DATE:20260924\r\nDTEND;VALUE=DATE:20260927\r\nSUMMARY:Chuseok\r\nEND:VEVENT\r\n\
END:VCALENDAR\r\n";

    fn d(s: &str) -> NaiveDate {
        s.parse().unwrap()
    }

    #[test]
    fn all_day_events_recurrences_and_exceptions() {
        let days = ics_days(ICS, d("2029-12-31")).unwrap();
        for day in [
            "2026-12-25",
            "2026-01-01",
            "2027-01-01",
            "2029-01-01",
            "2026-09-24",
            "2026-09-26",
        ] {
            assert!(days.contains(&d(day)), "{day}");
        }
        for day in ["2026-12-26", "2028-01-01", "2026-09-27", "2030-01-01"] {
            assert!(!days.contains(&d(day)), "{day}");
        }
    }

    #[test]
    fn what_is_not_icalendar_says_so() {
        let e = ics_days("<html>Not found</html>", d("2030-01-01")).unwrap_err();
        assert!(e.contains("not an iCalendar file"), "{e}");
        let e = ics_days(
            "BEGIN:VCALENDAR\r\nBEGIN:VEVENT\r\nSUMMARY:x\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n",
            d("2030-01-01"),
        )
        .unwrap_err();
        assert!(e.contains("no DTSTART"), "{e}");
    }
}
