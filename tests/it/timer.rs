//! The timer loop under paused tokio time, and the missed-run policy.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};
use cronmail::clock::{Clock, TokioClock};
use cronmail::config::{self, Config, Host};
use cronmail::daemon::{Control, Fire, NoReload, TimerEvent, timer_loop};
use cronmail::timer::{Decision, SkipReason, Timer};
use tokio::sync::mpsc;

use crate::support::JobsToml;

fn utc(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

fn config(jobs: &str) -> Config {
    let text = JobsToml::new()
        .top("timezone = \"UTC\"")
        .outbox()
        .job(jobs)
        .text();
    let host = Host::fixed(utc("2026-01-01T00:00:00Z"));
    config::parse(std::path::Path::new("/t/jobs.toml"), &text, &host).unwrap()
}

fn job(name: &str, schedule: &str, extra: &str) -> String {
    JobsToml::default().every(name, schedule, extra).text()
}

/// A clock on paused tokio time that a test can also jump, like a suspend/resume.
struct JumpClock {
    inner: TokioClock,
    jump_s: AtomicI64,
}

impl Clock for JumpClock {
    fn now(&self) -> DateTime<Utc> {
        self.inner.now() + chrono::Duration::seconds(self.jump_s.load(Ordering::SeqCst))
    }
}

/// Runs the timer loop from `start` for `run_for` of paused time; returns the fires.
async fn run_loop(
    cfg: Config,
    clock: Arc<JumpClock>,
    run_for: Duration,
    jump: Option<(Duration, i64)>,
) -> Vec<Fire> {
    let timer = Timer::new(cfg.jobs.clone(), clock.now(), &HashMap::new());
    let (tx, mut rx) = mpsc::channel(1);
    let fires = RefCell::new(Vec::new());
    let driver = async {
        if let Some((at, by)) = jump {
            tokio::time::sleep(at).await;
            clock.jump_s.fetch_add(by, Ordering::SeqCst);
            tokio::time::sleep(run_for.saturating_sub(at)).await;
        } else {
            tokio::time::sleep(run_for).await;
        }
        tx.send(Control::Shutdown).await.unwrap();
    };
    let looping = timer_loop(
        timer,
        &*clock,
        &mut rx,
        |e| {
            if let TimerEvent::Fire(f) = e {
                fires.borrow_mut().push(f);
            }
        },
        NoReload,
    );
    tokio::join!(looping, driver);
    fires.into_inner()
}

fn clock_at(s: &str) -> Arc<JumpClock> {
    Arc::new(JumpClock {
        inner: TokioClock::starting_at(utc(s)),
        jump_s: AtomicI64::new(0),
    })
}

#[tokio::test(start_paused = true)]
async fn every_second_for_an_hour_fires_each_once_on_time() {
    let cfg = config(&job("tick", "* * * * * *", ""));
    let fires = run_loop(
        cfg,
        clock_at("2026-01-01T00:00:00Z"),
        Duration::from_secs(3600),
        None,
    )
    .await;
    assert_eq!(fires.len(), 3600);
    for (i, f) in fires.iter().enumerate() {
        assert_eq!(
            f.occurrence,
            utc("2026-01-01T00:00:01Z") + chrono::Duration::seconds(i64::try_from(i).unwrap())
        );
        // Paused time: the loop wakes exactly when asked (tokio rounds up to 1 ms).
        assert!(
            (f.fired_at - f.occurrence) <= chrono::Duration::milliseconds(1),
            "{f:?}"
        );
        assert!(!f.caught_up);
    }
}

#[tokio::test(start_paused = true)]
async fn a_daily_job_across_berlins_spring_forward_fires_daily_once() {
    let cfg = config(&job("night", "30 2 * * *", "timezone = \"Europe/Berlin\""));
    let fires = run_loop(
        cfg,
        clock_at("2026-03-27T12:00:00Z"),
        Duration::from_secs(4 * 86400),
        None,
    )
    .await;
    let got: Vec<String> = fires
        .iter()
        .map(|f| {
            f.occurrence
                .with_timezone(&chrono_tz::Europe::Berlin)
                .to_rfc3339()
        })
        .collect();
    assert_eq!(
        got,
        [
            "2026-03-28T02:30:00+01:00",
            "2026-03-29T03:00:00+02:00",
            "2026-03-30T02:30:00+02:00",
            "2026-03-31T02:30:00+02:00"
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn ten_thousand_jobs_in_one_second_all_fire_once() {
    let jobs: String = (0..10_000)
        .map(|i| job(&format!("j{i}"), "5 0 0 * * *", ""))
        .collect();
    let cfg = config(&jobs);
    let fires = run_loop(
        cfg,
        clock_at("2026-01-01T23:59:00Z"),
        Duration::from_secs(120),
        None,
    )
    .await;
    assert_eq!(fires.len(), 10_000);
    let mut seen: Vec<&str> = fires.iter().map(|f| &*f.job.name).collect();
    seen.sort_unstable();
    seen.dedup();
    assert_eq!(seen.len(), 10_000, "a job fired twice or not at all");
}

#[tokio::test(start_paused = true)]
async fn a_suspend_is_caught_up_by_policy_within_max_sleep() {
    // Every 10 minutes. Two hours after start the machine "resumes" three hours later.
    let cfg = config(&format!(
        "{}{}{}",
        job("latest", "*/10 * * * *", ""),
        job("skip", "*/10 * * * *", "catch_up = \"skip\""),
        job(
            "all",
            "*/10 * * * *",
            "catch_up = \"all\"\nmax_late = \"1h\""
        ),
    ));
    let clock = clock_at("2026-01-01T00:00:00Z");
    let fires = run_loop(
        cfg,
        clock,
        Duration::from_secs(4 * 3600),
        Some((Duration::from_secs(2 * 3600 + 300), 3 * 3600)),
    )
    .await;
    let names = ["latest", "skip", "all"];
    let of =
        |i: usize| -> Vec<&Fire> { fires.iter().filter(|f| *f.job.name == *names[i]).collect() };

    // Before the jump: 00:10 .. 02:00, on time, for all three jobs.
    for i in 0..3 {
        assert_eq!(of(i).iter().filter(|f| !f.caught_up).take(12).count(), 12);
    }
    // The jump happens at 02:05 while the loop sleeps towards 02:10. Its sleep is capped
    // at MAX_SLEEP (60 s), so it wakes at 02:06 monotonic, reads 05:06 on the wall clock,
    // and finds 02:10 .. 05:00 missed.
    let late = |i: usize| -> Vec<DateTime<Utc>> {
        of(i)
            .iter()
            .filter(|f| f.caught_up)
            .map(|f| f.occurrence)
            .collect()
    };
    assert_eq!(
        late(0),
        [utc("2026-01-01T05:00:00Z")],
        "latest sends only the newest"
    );
    assert!(late(1).is_empty(), "skip sends none");
    // all, but only those at most an hour late: 04:10 .. 05:00.
    assert_eq!(late(2).len(), 6, "{:?}", late(2));
    assert_eq!(late(2)[0], utc("2026-01-01T04:10:00Z"));
    // The catch-up happened within one MAX_SLEEP of the jump.
    for f in fires.iter().filter(|f| f.caught_up) {
        assert!(
            f.fired_at <= utc("2026-01-01T05:06:00Z") + chrono::Duration::milliseconds(5),
            "{f:?}"
        );
    }
    // And normal firing resumed afterwards, none twice.
    for i in 0..3 {
        let mut occ: Vec<_> = of(i).iter().map(|f| f.occurrence).collect();
        let n = occ.len();
        occ.dedup();
        assert_eq!(occ.len(), n, "job {i} fired an occurrence twice");
        assert!(occ.contains(&utc("2026-01-01T06:50:00Z")));
    }
}

#[test]
fn restart_resumes_after_the_last_handled_occurrence() {
    let cfg = config(&format!(
        "{}{}",
        job("latest", "0 * * * *", ""),
        job("all", "0 * * * *", "catch_up = \"all\"")
    ));
    let handled = HashMap::from([
        ("latest".to_owned(), utc("2026-01-01T00:00:00Z")),
        ("all".to_owned(), utc("2026-01-01T00:00:00Z")),
    ]);
    let now = utc("2026-01-01T03:30:00Z");
    let mut timer = Timer::new(cfg.jobs.clone(), now, &handled);
    let mut decisions = Vec::new();
    timer.due(now, |_, d| decisions.push(d));
    let fires: Vec<_> = decisions
        .iter()
        .filter_map(|d| match d {
            Decision::Fire {
                job,
                occurrence,
                caught_up: true,
                ..
            } => Some((*job, *occurrence)),
            _ => None,
        })
        .collect();
    assert_eq!(
        fires,
        [
            (0, utc("2026-01-01T03:00:00Z")),
            (1, utc("2026-01-01T01:00:00Z")),
            (1, utc("2026-01-01T02:00:00Z")),
            (1, utc("2026-01-01T03:00:00Z"))
        ]
    );
    // The two older ones of `latest`, as one stretch; `all` skips none (max_late 6 h).
    let skipped: Vec<_> = decisions
        .iter()
        .filter(|d| !matches!(d, Decision::Fire { .. }))
        .collect();
    assert_eq!(
        skipped,
        [&Decision::SkipRange {
            job: 0,
            first: utc("2026-01-01T01:00:00Z"),
            last: utc("2026-01-01T02:00:00Z"),
            reason: SkipReason::Superseded
        }]
    );
    assert_eq!(timer.next_deadline(), Some(utc("2026-01-01T04:00:00Z")));
}

#[test]
fn after_a_short_gap_only_the_newest_occurrence_is_on_time() {
    // A job every 2 s, restarted after 9 s: four occurrences are due, each under a
    // minute late. Only the newest counts as on time; `skip` sends that one alone.
    let cfg = config(&format!(
        "{}{}{}",
        job("skip", "*/2 * * * * *", "catch_up = \"skip\""),
        job("latest", "*/2 * * * * *", ""),
        job("all", "*/2 * * * * *", "catch_up = \"all\""),
    ));
    let handled = HashMap::from([
        ("skip".to_owned(), utc("2026-01-01T00:00:00Z")),
        ("latest".to_owned(), utc("2026-01-01T00:00:00Z")),
        ("all".to_owned(), utc("2026-01-01T00:00:00Z")),
    ]);
    let now = utc("2026-01-01T00:00:09Z");
    let mut timer = Timer::new(cfg.jobs.clone(), now, &handled);
    let mut decisions = Vec::new();
    timer.due(now, |_, d| decisions.push(d));
    let fires = |j: usize| -> Vec<DateTime<Utc>> {
        decisions
            .iter()
            .filter_map(|d| match d {
                Decision::Fire {
                    job, occurrence, ..
                } if *job == j => Some(*occurrence),
                _ => None,
            })
            .collect()
    };
    assert_eq!(fires(0), [utc("2026-01-01T00:00:08Z")]);
    assert_eq!(fires(1), [utc("2026-01-01T00:00:08Z")]);
    assert_eq!(
        fires(2),
        ["02", "04", "06", "08"].map(|s| utc(&format!("2026-01-01T00:00:{s}Z")))
    );
    assert!(decisions.contains(&Decision::SkipRange {
        job: 0,
        first: utc("2026-01-01T00:00:02Z"),
        last: utc("2026-01-01T00:00:06Z"),
        reason: SkipReason::Policy
    }));
}

#[test]
fn a_week_of_missed_minutes_is_decided_in_a_few_searches_per_job() {
    let cfg = config(&format!(
        "{}{}{}",
        job("skip", "* * * * *", "catch_up = \"skip\""),
        job("latest", "* * * * *", ""),
        job("all", "* * * * *", "catch_up = \"all\"\nmax_late = \"1h\""),
    ));
    let last = utc("2026-01-01T00:00:00Z");
    let handled = HashMap::from([
        ("skip".to_owned(), last),
        ("latest".to_owned(), last),
        ("all".to_owned(), last),
    ]);
    let now = utc("2026-01-08T00:00:30Z");
    let mut timer = Timer::new(cfg.jobs.clone(), now, &handled);
    let mut decisions = Vec::new();
    timer.due(now, |_, d| decisions.push(d));
    let of = |j: usize| {
        decisions
            .iter()
            .filter(|d| match d {
                Decision::Fire { job, .. }
                | Decision::Skip { job, .. }
                | Decision::SkipRange { job, .. } => *job == j,
            })
            .count()
    };
    // skip: the newest is on time (30 s late) and sent, the week before is one range.
    assert_eq!(of(0), 2);
    // latest: the same.
    assert_eq!(of(1), 2);
    // all: one range before the hour of max_late, then the 60 minutes within it.
    assert_eq!(of(2), 1 + 60);
    let range = decisions
        .iter()
        .find_map(|d| match d {
            Decision::SkipRange {
                job: 1,
                first,
                last,
                ..
            } => Some((*first, *last)),
            _ => None,
        })
        .unwrap();
    assert_eq!(
        range,
        (utc("2026-01-01T00:01:00Z"), utc("2026-01-07T23:59:00Z"))
    );
    let s = &cfg.jobs[1].schedule;
    assert_eq!(
        cronmail::timer::count_between(s, range.0, range.1, 1_000_000),
        Some(10_079)
    );
    assert_eq!(timer.next_deadline(), Some(utc("2026-01-08T00:01:00Z")));
}

#[test]
fn disabled_jobs_never_fire() {
    let cfg = config(&job("off", "* * * * *", "enabled = false"));
    let timer = Timer::new(
        cfg.jobs.clone(),
        utc("2026-01-01T00:00:00Z"),
        &HashMap::new(),
    );
    assert_eq!(timer.next_deadline(), None);
}
