//! From a wall-clock time in a zone to an instant, for calendar rules, one-shot times,
//! moved days and advance warnings: RFC 5545's reading of a local DATE-TIME.
//!
//! - A time that occurs twice (fall back) is its first instance.
//! - A time that does not exist (spring forward) is read with the offset in force
//!   before the gap (RFC 5545 §3.3.5), so 02:30 in a one-hour gap is 03:30. RFC 5545
//!   §3.3.10 would instead drop a recurrence instance in a gap; a reminder must not be
//!   dropped, so cronmail sends it at the shifted instant.
//!
//! Cron schedules differ in one case, a time in a gap: crontab fires at the gap's end
//! (02:30 -> 03:00), see `cron.rs`.

use chrono::{DateTime, Duration, LocalResult, NaiveDateTime, Offset, TimeZone, Utc};
use chrono_tz::Tz;

/// The instant of `local` in `tz`.
pub fn resolve(tz: Tz, local: NaiveDateTime) -> DateTime<Utc> {
    match tz.from_local_datetime(&local) {
        LocalResult::Single(t) | LocalResult::Ambiguous(t, _) => t.with_timezone(&Utc),
        LocalResult::None => {
            // The offset a day earlier is the one before the gap: zones change offset
            // months apart.
            let before = tz
                .offset_from_utc_datetime(&(local - Duration::days(1)))
                .fix()
                .local_minus_utc();
            Utc.from_utc_datetime(&(local - Duration::seconds(i64::from(before))))
        }
    }
}

/// The wall-clock time of `t` in `tz`.
pub fn wall(tz: Tz, t: DateTime<Utc>) -> NaiveDateTime {
    t.with_timezone(&tz).naive_local()
}

/// Parses a local time as jobs.toml writes it: `2027-01-04T09:00`, with seconds, or
/// with a space for the `T`. An offset (`+09:00`, `Z`) is accepted when it is the
/// zone's own offset at that time, and refused when it contradicts the zone.
pub fn parse_local(text: &str, tz: Tz) -> Result<NaiveDateTime, String> {
    let text = text.trim();
    for format in [
        "%Y-%m-%dT%H:%M",
        "%Y-%m-%dT%H:%M:%S",
        "%Y-%m-%d %H:%M",
        "%Y-%m-%d %H:%M:%S",
    ] {
        if let Ok(t) = NaiveDateTime::parse_from_str(text, format) {
            return Ok(t);
        }
    }
    let with_offset = DateTime::parse_from_rfc3339(text)
        .or_else(|_| DateTime::parse_from_str(text, "%Y-%m-%dT%H:%M%:z"))
        .or_else(|_| DateTime::parse_from_rfc3339(&text.replace('z', "Z")));
    if let Ok(t) = with_offset {
        let local = t.naive_local();
        let zone = resolve(tz, local).with_timezone(&tz).offset().fix();
        if zone == *t.offset() {
            return Ok(local);
        }
        return Err(format!(
            "`{text}` has the offset {}, but {tz} is at {zone} then; write the local time without an offset",
            t.offset()
        ));
    }
    if chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d").is_ok() {
        return Err(format!(
            "`{text}` has no time of day; write it as `{text}T09:00`"
        ));
    }
    Err(format!(
        "`{text}` is not a local time like `2027-01-04T09:00` (year-month-day, `T`, hour:minute)"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    fn local(s: &str) -> NaiveDateTime {
        NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M").unwrap()
    }

    #[test]
    fn a_gap_time_takes_the_offset_before_it_and_a_repeated_time_its_first_instance() {
        let berlin = chrono_tz::Europe::Berlin;
        // 02:30 on 2026-03-29 does not exist: +01:00 before the gap, so 01:30Z (03:30 CEST).
        assert_eq!(
            resolve(berlin, local("2026-03-29T02:30")),
            utc("2026-03-29T01:30:00Z")
        );
        // 02:30 on 2026-10-25 happens twice: the first, in CEST.
        assert_eq!(
            resolve(berlin, local("2026-10-25T02:30")),
            utc("2026-10-25T00:30:00Z")
        );
        // Lord Howe moves by 30 minutes: 02:15 on 2026-10-04 is in its gap (+10:30 before).
        let lh = chrono_tz::Australia::Lord_Howe;
        assert_eq!(
            resolve(lh, local("2026-10-04T02:15")),
            utc("2026-10-03T15:45:00Z")
        );
    }

    #[test]
    fn an_offset_must_agree_with_the_zone() {
        let seoul = chrono_tz::Asia::Seoul;
        assert_eq!(
            parse_local("2027-01-04T09:00", seoul).unwrap(),
            local("2027-01-04T09:00")
        );
        assert!(parse_local("2027-01-04T09:00+09:00", seoul).is_ok());
        let e = parse_local("2027-01-04T09:00+01:00", seoul).unwrap_err();
        assert!(e.contains("+01:00") && e.contains("+09:00"), "{e}");
        assert!(
            parse_local("2027-01-04", seoul)
                .unwrap_err()
                .contains("no time of day")
        );
        assert!(
            parse_local("tomorrow", seoul)
                .unwrap_err()
                .contains("not a local time")
        );
    }
}
