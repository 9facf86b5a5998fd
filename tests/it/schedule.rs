//! Schedules: cron syntax, the crontab OR rule, and DST in three zones.

use chrono::{DateTime, TimeZone, Utc};
use chrono_tz::Tz;
use cronmail::schedule::Schedule;

fn utc(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

/// The first `n` occurrences after `from`, as local RFC 3339 strings.
fn next_n(expr: &str, tz: &str, from: &str, n: usize) -> Vec<String> {
    let tz: Tz = tz.parse().unwrap();
    let s = Schedule::parse(expr, tz).unwrap();
    let mut t = utc(from);
    (0..n)
        .map(|_| {
            t = s.next_after(t).unwrap();
            t.with_timezone(&tz).to_rfc3339()
        })
        .collect()
}

#[test]
fn berlin_spring_forward_fires_once_right_after_the_gap() {
    // 29 March 2026: 02:00 CET -> 03:00 CEST; 02:30 does not exist.
    assert_eq!(
        next_n("30 2 * * *", "Europe/Berlin", "2026-03-27T12:00:00Z", 3),
        [
            "2026-03-28T02:30:00+01:00",
            "2026-03-29T03:00:00+02:00",
            "2026-03-30T02:30:00+02:00"
        ]
    );
}

#[test]
fn berlin_fall_back_fires_once_at_the_first_occurrence() {
    // 25 October 2026: 03:00 CEST -> 02:00 CET; 02:30 happens twice.
    assert_eq!(
        next_n("30 2 * * *", "Europe/Berlin", "2026-10-24T12:00:00Z", 3),
        [
            "2026-10-25T02:30:00+02:00",
            "2026-10-26T02:30:00+01:00",
            "2026-10-27T02:30:00+01:00"
        ]
    );
}

#[test]
fn new_york_both_transitions() {
    // 8 March 2026: 02:00 EST -> 03:00 EDT.
    assert_eq!(
        next_n("30 2 * * *", "America/New_York", "2026-03-07T12:00:00Z", 2),
        ["2026-03-08T03:00:00-04:00", "2026-03-09T02:30:00-04:00"]
    );
    // 1 November 2026: 02:00 EDT -> 01:00 EST; 01:30 happens twice, fires once.
    assert_eq!(
        next_n("30 1 * * *", "America/New_York", "2026-10-31T12:00:00Z", 2),
        ["2026-11-01T01:30:00-04:00", "2026-11-02T01:30:00-05:00"]
    );
}

#[test]
fn sydney_southern_hemisphere_both_transitions() {
    // 5 April 2026: 03:00 AEDT -> 02:00 AEST; 02:30 twice, fires once.
    assert_eq!(
        next_n("30 2 * * *", "Australia/Sydney", "2026-04-04T12:00:00Z", 3),
        [
            "2026-04-05T02:30:00+11:00",
            "2026-04-06T02:30:00+10:00",
            "2026-04-07T02:30:00+10:00"
        ]
    );
    // 4 October 2026: 02:00 AEST -> 03:00 AEDT.
    assert_eq!(
        next_n("30 2 * * *", "Australia/Sydney", "2026-10-02T12:00:00Z", 3),
        [
            "2026-10-03T02:30:00+10:00",
            "2026-10-04T03:00:00+11:00",
            "2026-10-05T02:30:00+11:00"
        ]
    );
}

#[test]
fn every_half_hour_across_the_gap_fires_once_after_it() {
    assert_eq!(
        next_n("*/30 * * * *", "Europe/Berlin", "2026-03-29T00:10:00Z", 3),
        [
            "2026-03-29T01:30:00+01:00",
            "2026-03-29T03:00:00+02:00",
            "2026-03-29T03:30:00+02:00"
        ]
    );
}

#[test]
fn hourly_across_fall_back_fires_every_real_hour() {
    // A schedule with a wildcard hour is an interval: it fires every real hour, both
    // 01:00 EDT and 01:00 EST, as Vixie cron does. Fixed-hour schedules fire once
    // (see the tests above).
    assert_eq!(
        next_n("0 * * * *", "America/New_York", "2026-11-01T04:30:00Z", 3),
        [
            "2026-11-01T01:00:00-04:00",
            "2026-11-01T01:00:00-05:00",
            "2026-11-01T02:00:00-05:00"
        ]
    );
}

#[test]
fn five_and_six_fields_names_ranges_steps_lists() {
    assert_eq!(
        next_n("*/20 * * * * *", "UTC", "2026-01-01T00:00:00Z", 3),
        [
            "2026-01-01T00:00:20+00:00",
            "2026-01-01T00:00:40+00:00",
            "2026-01-01T00:01:00+00:00"
        ]
    );
    assert_eq!(
        next_n(
            "0 9-17/4 * JAN MON-WED,FRI",
            "UTC",
            "2026-01-01T00:00:00Z",
            4
        ),
        [
            "2026-01-02T09:00:00+00:00",
            "2026-01-02T13:00:00+00:00",
            "2026-01-02T17:00:00+00:00",
            "2026-01-05T09:00:00+00:00"
        ]
    );
}

#[test]
fn aliases() {
    assert_eq!(
        next_n("@yearly", "UTC", "2026-05-01T00:00:00Z", 1),
        ["2027-01-01T00:00:00+00:00"]
    );
    assert_eq!(
        next_n("@annually", "UTC", "2026-05-01T00:00:00Z", 1),
        ["2027-01-01T00:00:00+00:00"]
    );
    assert_eq!(
        next_n("@monthly", "UTC", "2026-05-02T00:00:00Z", 1),
        ["2026-06-01T00:00:00+00:00"]
    );
    assert_eq!(
        next_n("@weekly", "UTC", "2026-05-02T00:00:00Z", 1),
        ["2026-05-03T00:00:00+00:00"]
    );
    assert_eq!(
        next_n("@daily", "UTC", "2026-05-02T10:00:00Z", 1),
        ["2026-05-03T00:00:00+00:00"]
    );
    assert_eq!(
        next_n("@midnight", "UTC", "2026-05-02T10:00:00Z", 1),
        ["2026-05-03T00:00:00+00:00"]
    );
    assert_eq!(
        next_n("@hourly", "UTC", "2026-05-02T10:10:00Z", 1),
        ["2026-05-02T11:00:00+00:00"]
    );
}

#[test]
fn day_of_month_and_day_of_week_follow_crontab_or() {
    // The 13th, or any Friday: crontab's rule, not "Friday the 13th".
    assert_eq!(
        next_n("0 0 13 * FRI", "UTC", "2026-02-01T00:00:00Z", 4),
        [
            "2026-02-06T00:00:00+00:00",
            "2026-02-13T00:00:00+00:00",
            "2026-02-20T00:00:00+00:00",
            "2026-02-27T00:00:00+00:00"
        ]
    );
    // croner's `+` asks for AND: Friday the 13th.
    assert_eq!(
        next_n("0 0 13 * +FRI", "UTC", "2026-01-01T00:00:00Z", 1),
        ["2026-02-13T00:00:00+00:00"]
    );
}

#[test]
fn bad_expressions_carry_crons_reason() {
    let err = Schedule::parse("0 25 * * *", chrono_tz::UTC).unwrap_err();
    assert!(err.contains("out of bounds"), "{err}");
    let err = Schedule::parse("* * *", chrono_tz::UTC).unwrap_err();
    assert!(err.contains("found 3"), "{err}");
    // Found by fuzzing: croner took `,` as a list matching nothing.
    let err = Schedule::parse(", 4 * * *", chrono_tz::UTC).unwrap_err();
    assert!(err.contains("field 1 `,` has an empty item"), "{err}");
    assert!(Schedule::parse("0 1,,2 * * *", chrono_tz::UTC).is_err());
    let never = Schedule::parse("0 0 30 2 *", chrono_tz::UTC).unwrap();
    assert!(
        never
            .validate(Utc::now())
            .unwrap_err()
            .contains("never fires")
    );
    let leap = Schedule::parse("0 0 29 2 *", chrono_tz::UTC).unwrap();
    assert_eq!(
        leap.validate(utc("2026-03-01T00:00:00Z")).unwrap(),
        utc("2028-02-29T00:00:00Z")
    );
}

/// The next minute at or after `from` + 1 min whose wall-clock fields match, found by
/// walking real minutes: an oracle that knows nothing of croner.
fn brute_force(minute: u32, hour: u32, tz: Tz, from: DateTime<Utc>) -> DateTime<Utc> {
    use chrono::{Duration, Timelike};
    let mut t = Utc
        .timestamp_opt(from.timestamp() / 60 * 60 + 60, 0)
        .unwrap();
    let mut prev_local = (from.with_timezone(&tz)).naive_local();
    loop {
        let local = t.with_timezone(&tz).naive_local();
        // Matches plainly, or the wall clock jumped over the wanted time (a DST gap).
        let wanted = local.date().and_hms_opt(hour, minute, 0).unwrap();
        if local.hour() == hour && local.minute() == minute && local > prev_local {
            return t;
        }
        if prev_local < wanted && local > wanted && (local - prev_local) > Duration::minutes(1) {
            return t;
        }
        // Fall back: the wall clock goes back; a time already passed must not match again.
        if local > prev_local {
            prev_local = local;
        }
        t += Duration::minutes(1);
    }
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(200))]

    #[test]
    fn next_after_agrees_with_a_minute_by_minute_oracle(
        minute in 0u32..60,
        hour in 0u32..24,
        zone in 0usize..3,
        start in 0i64..(366 * 24 * 60),
    ) {
        let tz: Tz = ["Europe/Berlin", "America/New_York", "Australia/Sydney"][zone].parse().unwrap();
        let s = Schedule::parse(&format!("{minute} {hour} * * *"), tz).unwrap();
        let from = utc("2026-01-01T00:00:00Z") + chrono::Duration::minutes(start);
        let got = s.next_after(from).unwrap();
        proptest::prop_assert!(got > from);
        proptest::prop_assert_eq!(got, brute_force(minute, hour, tz, from));
    }
}
