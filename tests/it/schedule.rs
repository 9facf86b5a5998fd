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
    assert!(err.contains("hour 25 is out of range 0-23"), "{err}");
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

/// A minute or hour field as the oracle reads it: a single value, a list, a range, a
/// step, or `*`, with the set of values it matches.
#[derive(Clone, Debug)]
struct Field {
    text: String,
    values: Vec<u32>,
    interval: bool,
}

fn field(kind: u8, a: u32, b: u32, step: u32, max: u32) -> Field {
    let (lo, hi) = (a.min(b), a.max(b).max(a.min(b) + 1).min(max));
    let (text, values): (String, Vec<u32>) = match kind % 6 {
        1 if a != b => (format!("{lo},{hi}"), vec![lo, hi]),
        0 | 1 => (a.to_string(), vec![a]),
        2 => (format!("{lo}-{hi}"), (lo..=hi).collect()),
        3 => (
            format!("*/{step}"),
            (0..=max).step_by(step as usize).collect(),
        ),
        4 => (
            format!("{lo}-{hi}/{step}"),
            (lo..=hi).step_by(step as usize).collect(),
        ),
        _ => ("*".to_owned(), (0..=max).collect()),
    };
    Field {
        interval: text.contains('*') || text.contains('/'),
        text,
        values,
    }
}

/// The schedule's next occurrence after `from`, by walking real minutes with the README's
/// policy, knowing nothing of croner:
/// - a wall-clock minute that a spring-forward gap removes fires once, at the first
///   instant after the gap (whatever the hour field);
/// - in a fall-back's repeated hour, a fixed-time schedule (the hour field has no `*`
///   or step) fires at the first instance only; an interval fires at both.
fn oracle(minute: &Field, hour: &Field, tz: Tz, from: DateTime<Utc>) -> DateTime<Utc> {
    use chrono::{Duration, NaiveDateTime, Timelike};
    let local = |t: DateTime<Utc>| t.with_timezone(&tz).naive_local();
    let matches =
        |l: NaiveDateTime| minute.values.contains(&l.minute()) && hour.values.contains(&l.hour());
    let mut t = Utc
        .timestamp_opt(from.timestamp() / 60 * 60 + 60, 0)
        .unwrap();
    // The latest wall time already seen, from the hours before `from` too: a fixed-time
    // occurrence seen there must not fire again in a repeated hour.
    let mut max_wall = (1..=240)
        .map(|k| local(t - Duration::minutes(k)))
        .max()
        .unwrap();
    loop {
        let prev = local(t - Duration::minutes(1));
        let cur = local(t);
        if cur - prev > Duration::minutes(1) {
            let mut w = prev + Duration::minutes(1);
            let mut gap_match = false;
            while w < cur {
                gap_match |= matches(w);
                w += Duration::minutes(1);
            }
            if gap_match || matches(cur) {
                return t;
            }
        } else if matches(cur) && (hour.interval || cur > max_wall) {
            return t;
        }
        max_wall = max_wall.max(cur);
        t += Duration::minutes(1);
    }
}

/// Every IANA zone whose offset changes between 2026 and 2035, with those instants.
fn transitions() -> &'static [(Tz, Vec<DateTime<Utc>>)] {
    use chrono::Offset;
    static ZONES: std::sync::LazyLock<Vec<(Tz, Vec<DateTime<Utc>>)>> =
        std::sync::LazyLock::new(|| {
            let start = utc("2026-01-01T00:00:00Z");
            let end = utc("2036-01-01T00:00:00Z");
            let offset =
                |tz: Tz, t: DateTime<Utc>| tz.offset_from_utc_datetime(&t.naive_utc()).fix();
            chrono_tz::TZ_VARIANTS
                .iter()
                .filter_map(|&tz| {
                    let mut found = Vec::new();
                    let mut t = start;
                    let step = chrono::Duration::hours(6);
                    while t < end {
                        let n = t + step;
                        if offset(tz, t) != offset(tz, n) {
                            let (mut a, mut b) = (t, n);
                            while b - a > chrono::Duration::minutes(1) {
                                let m = a + (b - a) / 2;
                                if offset(tz, m) == offset(tz, a) {
                                    a = m;
                                } else {
                                    b = m;
                                }
                            }
                            found.push(b);
                        }
                        t = n;
                    }
                    (!found.is_empty()).then_some((tz, found))
                })
                .collect()
        });
    &ZONES
}

#[test]
fn the_oracle_covers_both_hemispheres_and_half_hour_shifts() {
    let zones: Vec<String> = transitions()
        .iter()
        .map(|(tz, _)| tz.name().to_owned())
        .collect();
    for z in [
        "Europe/Berlin",
        "America/New_York",
        "Australia/Sydney",
        "Australia/Lord_Howe",
        "America/Havana",
    ] {
        assert!(
            zones.iter().any(|n| n == z),
            "{z} missing from {} zones",
            zones.len()
        );
    }
}

#[test]
fn the_two_dst_misfires_are_fixed() {
    // A list or range in the hour is fixed-time: once in the repeated hour.
    assert_eq!(
        next_n(
            "15 1-3 * * *",
            "America/New_York",
            "2026-11-01T04:00:00Z",
            4
        ),
        [
            "2026-11-01T01:15:00-04:00",
            "2026-11-01T02:15:00-05:00",
            "2026-11-01T03:15:00-05:00",
            "2026-11-02T01:15:00-05:00"
        ]
    );
    assert_eq!(
        next_n("0,30 2 * * *", "Europe/Berlin", "2026-10-24T23:00:00Z", 3),
        [
            "2026-10-25T02:00:00+02:00",
            "2026-10-25T02:30:00+02:00",
            "2026-10-26T02:00:00+01:00"
        ]
    );
    // A match at the first second of a gap fires at its end, wherever the search starts.
    for from in [
        "2026-03-28T22:00:00Z",
        "2026-03-28T23:00:00Z",
        "2026-03-29T00:59:59Z",
    ] {
        assert_eq!(
            next_n("0,30 2 * * *", "Europe/Berlin", from, 2),
            ["2026-03-29T03:00:00+02:00", "2026-03-30T02:00:00+02:00"],
            "from {from}"
        );
    }
    for (expr, tz, from) in [
        ("0 2,3 * * *", "Europe/Athens", "2026-03-28T23:30:00Z"),
        ("*/20 0 * * *", "America/Havana", "2026-03-07T23:00:00Z"),
        ("0 */2 * * *", "Europe/Berlin", "2026-03-29T00:30:00Z"),
    ] {
        let tz_: Tz = tz.parse().unwrap();
        let s = Schedule::parse(expr, tz_).unwrap();
        let got = s.next_after(utc(from)).unwrap();
        let m = expr.split(' ').next().unwrap();
        let h = expr.split(' ').nth(1).unwrap();
        let parse = |f: &str, max: u32| -> Field {
            let values: Vec<u32> = (0..=max)
                .filter(|v| {
                    f.split(',').any(|p| {
                        let (range, step) = p
                            .split_once('/')
                            .map_or((p, 1), |(r, s)| (r, s.parse().unwrap()));
                        let (lo, hi) = if range == "*" {
                            (0, max)
                        } else if let Some((a, b)) = range.split_once('-') {
                            (a.parse().unwrap(), b.parse().unwrap())
                        } else {
                            let x = range.parse().unwrap();
                            (x, x)
                        };
                        *v >= lo && *v <= hi && (*v - lo) % step == 0
                    })
                })
                .collect();
            Field {
                text: f.to_owned(),
                values,
                interval: f.contains('*') || f.contains('/'),
            }
        };
        let want = oracle(&parse(m, 59), &parse(h, 23), tz_, utc(from));
        assert_eq!(got, want, "{expr} in {tz} from {from}");
    }
}

proptest::proptest! {
    // `CRONMAIL_ORACLE_CASES=20000` for a deeper run than the suite's.
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(
        std::env::var("CRONMAIL_ORACLE_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(600)
    ))]

    /// `next_after` agrees with the minute-by-minute oracle, for lists, ranges and
    /// steps in the minute and hour fields, in every zone that changes its offset in
    /// 2026-2035, from a start up to two days before one of its transitions.
    #[test]
    fn next_after_agrees_with_a_minute_by_minute_oracle(
        mk in 0u8..6, ma in 0u32..60, mb in 0u32..60, ms in proptest::sample::select(vec![5u32, 10, 15, 20, 30]),
        hk in 0u8..6, ha in 0u32..24, hb in 0u32..24, hs in proptest::sample::select(vec![2u32, 3, 4, 6]),
        zone in 0usize..10_000,
        which in 0usize..10_000,
        before in 0i64..(2 * 24 * 60 * 60),
    ) {
        let zones = transitions();
        let (tz, instants) = &zones[zone % zones.len()];
        let at = instants[which % instants.len()];
        let minute = field(mk, ma, mb, ms, 59);
        let hour = field(hk, ha, hb, hs, 23);
        let expr = format!("{} {} * * *", minute.text, hour.text);
        let s = Schedule::parse(&expr, *tz).unwrap();
        let from = at - chrono::Duration::seconds(before);
        let got = s.next_after(from).unwrap();
        proptest::prop_assert!(got > from);
        proptest::prop_assert_eq!(got, oracle(&minute, &hour, *tz, from), "{} in {} from {}", expr, tz.name(), from);
    }
}
