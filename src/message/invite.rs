//! `[job.invite]` -> an iCalendar object (RFC 5545, with RFC 5546's METHOD), built with
//! the `icalendar` crate.
//!
//! The event starts at the occurrence (for an advance warning, at the event it warns of)
//! in the job's zone, with a `VTIMEZONE` for that zone. Its `UID` is derived from the
//! job and the event's instant as the Message-ID is, so a resend (or the 7-day and the
//! 1-day warning of one event) updates the one event instead of adding another.
//!
//! The crate builds no `VTIMEZONE` from a zone name: ours is made from chrono-tz's
//! offsets (each change in the two years around the event) and parsed into a component
//! by the crate's own parser.

use std::fmt::Write as _;
use std::str::FromStr as _;

use chrono::{DateTime, Datelike as _, Duration, NaiveDateTime, Offset as _, TimeZone as _, Utc};
use chrono_tz::{OffsetComponents as _, OffsetName as _, Tz};
use icalendar::{
    Alarm, Calendar, CalendarComponent, CalendarDateTime, Component as _, EventLike as _, Property,
    Trigger,
};
use lettre::message::Mailbox;
use sha2::{Digest as _, Sha256};

use crate::config::{Invite, Job, Method};
use crate::render::InviteText;

/// What one invitation is about.
pub struct Event<'a> {
    pub job: &'a Job,
    pub invite: &'a Invite,
    pub text: &'a InviteText,
    /// When the event starts: the occurrence, or the event of an advance warning.
    pub starts: DateTime<Utc>,
    /// `DTSTAMP`: when this copy was made.
    pub stamp: DateTime<Utc>,
    pub attendees: &'a [Mailbox],
    /// The row of a `recipients_file`, whose event is its own.
    pub row: Option<&'a str>,
}

/// The event's `UID`: the same for every send about one event.
pub fn uid(job: &Job, starts: DateTime<Utc>, row: Option<&str>) -> String {
    let mut h = Sha256::new();
    h.update(job.base.as_bytes());
    h.update([0]);
    h.update(starts.timestamp().to_be_bytes());
    if let Some(row) = row {
        h.update([0]);
        h.update(row.as_bytes());
    }
    super::stamped_id(&job.base, starts, h, job.from.email.domain())
}

/// The iCalendar text of the invitation, CRLF line ends.
pub fn ics(e: &Event<'_>) -> String {
    let tz = e.job.tz();
    let local = |t: DateTime<Utc>| t.with_timezone(&tz).naive_local();
    let zoned = |t: DateTime<Utc>| CalendarDateTime::WithTimezone {
        date_time: local(t),
        tzid: tz.name().to_owned(),
    };
    let ends = e.starts + Duration::from_std(e.invite.duration).unwrap_or_default();
    let mut event = icalendar::Event::new();
    event
        .uid(&uid(e.job, e.starts, e.row))
        .sequence(0)
        .timestamp(e.stamp)
        .starts(zoned(e.starts))
        .ends(zoned(ends))
        .summary(&e.text.summary);
    if let Some(l) = &e.text.location {
        event.location(l);
    }
    if let Some(d) = &e.text.description {
        event.description(d);
    }
    event.append_property(mailbox_property("ORGANIZER", &e.job.from));
    if e.invite.method == Method::Request {
        for a in e.attendees {
            let mut p = mailbox_property("ATTENDEE", a);
            p.add_parameter("ROLE", "REQ-PARTICIPANT")
                .add_parameter("PARTSTAT", "NEEDS-ACTION")
                .add_parameter("RSVP", "TRUE");
            event.append_multi_property(p);
        }
    }
    if let Some(before) = e.invite.alarm {
        let before = Duration::from_std(before).unwrap_or_default();
        event.alarm(Alarm::display(
            &e.text.summary,
            Trigger::before_start(before),
        ));
    }
    let mut cal = Calendar::empty();
    cal.append_property(Property::new("VERSION", "2.0"))
        .append_property(Property::new("PRODID", "-//cronmail//cronmail//EN"))
        .append_property(Property::new("CALSCALE", "GREGORIAN"))
        .append_property(Property::new("METHOD", e.invite.method.name()));
    if let Ok(vtimezone) = CalendarComponent::from_str(&vtimezone(tz, e.starts)) {
        cal.push(vtimezone);
    }
    cal.push(event.done());
    cal.done().to_string()
}

fn mailbox_property(key: &str, m: &Mailbox) -> Property {
    let mut p = Property::new(key, format!("mailto:{}", m.email));
    if let Some(name) = &m.name {
        p.add_parameter("CN", name);
    }
    p
}

/// A `VTIMEZONE` for `tz` with each change of offset from a year before `around` to a
/// year after (or one fixed offset, for a zone without changes).
fn vtimezone(tz: Tz, around: DateTime<Utc>) -> String {
    let offset = |t: DateTime<Utc>| tz.offset_from_utc_datetime(&t.naive_utc());
    let seconds = |t: DateTime<Utc>| offset(t).fix().local_minus_utc();
    let year = around.year();
    let from = Utc
        .with_ymd_and_hms(year - 1, 1, 1, 0, 0, 0)
        .single()
        .unwrap_or(around);
    let to = Utc
        .with_ymd_and_hms(year + 2, 1, 1, 0, 0, 0)
        .single()
        .unwrap_or(around);
    let mut changes = Vec::new();
    let mut t = from;
    while t < to {
        let next = t + Duration::hours(6);
        if seconds(t) != seconds(next) {
            // Narrow it down to the second.
            let (mut lo, mut hi) = (t, next);
            while hi - lo > Duration::seconds(1) {
                let mid = lo + (hi - lo) / 2;
                if seconds(mid) == seconds(lo) {
                    lo = mid;
                } else {
                    hi = mid;
                }
            }
            changes.push(hi);
        }
        t = next;
    }
    let mut out = format!("BEGIN:VTIMEZONE\r\nTZID:{}\r\n", tz.name());
    let mut part = |kind: &str, at: NaiveDateTime, before: i32, after: i32, name: &str| {
        let _ = write!(
            out,
            "BEGIN:{kind}\r\nDTSTART:{}\r\nTZOFFSETFROM:{}\r\nTZOFFSETTO:{}\r\nTZNAME:{name}\r\nEND:{kind}\r\n",
            at.format("%Y%m%dT%H%M%S"),
            utc_offset(before),
            utc_offset(after),
        );
    };
    if changes.is_empty() {
        let now = seconds(around);
        let name = offset(around).abbreviation().unwrap_or("").to_owned();
        part("STANDARD", NaiveDateTime::default(), now, now, &name);
    }
    for at in changes {
        let before = seconds(at - Duration::seconds(1));
        let after = offset(at);
        let kind = if after.dst_offset().is_zero() {
            "STANDARD"
        } else {
            "DAYLIGHT"
        };
        let local = at.naive_utc() + Duration::seconds(i64::from(before));
        part(
            kind,
            local,
            before,
            after.fix().local_minus_utc(),
            after.abbreviation().unwrap_or(""),
        );
    }
    out.push_str("END:VTIMEZONE\r\n");
    out
}

/// `+0100`, `-0330`.
fn utc_offset(seconds: i32) -> String {
    let sign = if seconds < 0 { '-' } else { '+' };
    let s = seconds.unsigned_abs();
    format!("{sign}{:02}{:02}", s / 3600, s / 60 % 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_zone_with_daylight_saving_has_both_changes_of_each_year() {
        let around = Utc.with_ymd_and_hms(2026, 6, 1, 0, 0, 0).unwrap();
        let v = vtimezone(chrono_tz::Europe::Berlin, around);
        // 2025, 2026 and 2027: three springs and three autumns.
        assert_eq!(v.matches("BEGIN:DAYLIGHT").count(), 3, "{v}");
        assert_eq!(v.matches("BEGIN:STANDARD").count(), 3, "{v}");
        assert!(
            v.contains("DTSTART:20260329T020000\r\nTZOFFSETFROM:+0100\r\nTZOFFSETTO:+0200"),
            "{v}"
        );
        assert!(
            v.contains("DTSTART:20261025T030000\r\nTZOFFSETFROM:+0200\r\nTZOFFSETTO:+0100"),
            "{v}"
        );
        let fixed = vtimezone(chrono_tz::Asia::Kolkata, around);
        assert!(
            fixed.contains("TZOFFSETFROM:+0530\r\nTZOFFSETTO:+0530"),
            "{fixed}"
        );
    }
}
