//! Cron parse + next occurrence: never panics; occurrences strictly increase.
#![no_main]
#[path = "common.rs"]
mod common;

const ZONES: [chrono_tz::Tz; 4] = [chrono_tz::UTC, chrono_tz::Europe::Berlin, chrono_tz::America::New_York, chrono_tz::Australia::Lord_Howe];

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if data.len() < 9 {
        return;
    }
    let start = i64::from_le_bytes(data[..8].try_into().unwrap()).rem_euclid(4_102_444_800);
    let tz = ZONES[usize::from(data[8]) % ZONES.len()];
    let Ok(expr) = std::str::from_utf8(&data[9..]) else { return };
    if let Ok(s) = cronmail::schedule::Schedule::parse(expr, tz) {
        let mut t = chrono::DateTime::from_timestamp(start, 0).unwrap();
        for _ in 0..3 {
            match s.next_after(t) {
                Some(n) => {
                    assert!(n > t, "next_after({t}) = {n} for {expr:?} in {tz}");
                    t = n;
                }
                None => break,
            }
        }
    }
});
