//! Fire lateness of the timer loop, on the real clock: how long after each scheduled
//! instant the occurrence is handed to delivery.
//!
//!     cargo run --release --example fire_lateness -- [JOBS]
//!     cargo run --release --example fire_lateness -- --jobs N --mode spread|burst [--window S] --json
//!
//! Without `--mode`, two runs of JOBS jobs (default 10,000), each with a baseline in the
//! same process:
//! - spread: job i fires at second i % 60 of every minute (about JOBS/60 per second);
//!   `--window S` spreads them over S seconds instead;
//! - burst: every job fires at the same second.
//!
//! With `--json`, one JSON object per run on stdout (for `bench/run`).
//!
//! The baseline is one tokio task per distinct instant doing `sleep_until` and reading
//! the clock: the timer's own floor on this machine, measured alongside.

use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, Timelike, Utc};
use cronmail::clock::{Clock, SystemClock};
use cronmail::config::{self, Host};
use cronmail::daemon::{Control, NoReload, TimerEvent, timer_loop};
use cronmail::timer::Timer;
use tokio::sync::mpsc;

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        clippy::cast_precision_loss
    )]
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i]
}

/// `(p50, p99, max)` in ms.
fn stats(mut ms: Vec<f64>) -> (f64, f64, f64) {
    ms.sort_by(f64::total_cmp);
    (
        percentile(&ms, 0.5),
        percentile(&ms, 0.99),
        ms.last().copied().unwrap_or(f64::NAN),
    )
}

/// Counts per bin of 40 log-spaced bins from 1 µs to 100 ms (the last bin takes the
/// rest), as a JSON array: for the histogram `bench/run` draws.
fn histogram(ms: &[f64]) -> String {
    let mut bins = [0u32; 40];
    for &x in ms {
        let b = ((x.max(0.001) / 0.001).log10() / 5.0 * 40.0).floor();
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let b = (b.max(0.0) as usize).min(39);
        bins[b] += 1;
    }
    let items: Vec<String> = bins.iter().map(u32::to_string).collect();
    format!("[{}]", items.join(","))
}

fn summary(name: &str, n: usize, (p50, p99, max): (f64, f64, f64)) {
    println!("{name:<28} n={n:<6} p50={p50:>7.3} ms  p99={p99:>7.3} ms  max={max:>7.3} ms");
}

fn late_ms(at: DateTime<Utc>, scheduled: DateTime<Utc>) -> f64 {
    #[allow(clippy::cast_precision_loss)]
    let us = (at - scheduled).num_microseconds().unwrap_or(i64::MAX) as f64;
    us / 1000.0
}

/// Builds a jobs.toml with `n` jobs whose second field is `second(i)`.
fn jobs_toml(n: usize, second: impl Fn(usize) -> u32) -> String {
    use std::fmt::Write as _;
    let mut s = String::from("from = \"bot@example.com\"\ntimezone = \"UTC\"\n[outbox]\n");
    for i in 0..n {
        let _ = write!(
            s,
            "[[job]]\nname = \"j{i}\"\nschedule = \"{} * * * * *\"\nto = [\"a@example.com\"]\nsubject = \"s\"\nbody = \"b\"\n",
            second(i)
        );
    }
    s
}

/// Runs the timer loop until every job fired once, and the baseline beside it.
async fn run(label: &str, n: usize, second: impl Fn(usize) -> u32 + Copy, json: bool) {
    let text = jobs_toml(n, second);
    let started = std::time::Instant::now();
    let cfg = config::parse(std::path::Path::new("bench.toml"), &text, &Host::from_env())
        .expect("valid config");
    let parse_ms = started.elapsed().as_secs_f64() * 1000.0;
    if !json {
        println!("{label}: {n} jobs parsed and validated in {parse_ms:.0} ms");
    }

    let clock = SystemClock;
    let now = clock.now();
    let timer = Timer::new(cfg.jobs.clone(), now, &HashMap::new());
    // Baseline: one sleeper per distinct instant over the next minute.
    let mut instants: Vec<DateTime<Utc>> = cfg
        .jobs
        .iter()
        .filter_map(|j| j.schedule.next_after(now))
        .collect();
    instants.sort();
    instants.dedup();
    let baseline = tokio::spawn(async move {
        let mut set = tokio::task::JoinSet::new();
        for at in instants {
            set.spawn(async move {
                let wait = (at - Utc::now()).to_std().unwrap_or_default();
                tokio::time::sleep_until(tokio::time::Instant::now() + wait).await;
                late_ms(Utc::now(), at)
            });
        }
        set.join_all().await
    });

    let (tx, mut rx) = mpsc::channel(1);
    let index: HashMap<&str, usize> = cfg
        .jobs
        .iter()
        .enumerate()
        .map(|(i, j)| (&*j.name, i))
        .collect();
    let mut counts = vec![0u32; n];
    let mut lateness = Vec::with_capacity(n);
    let mut done = Some(tx);
    let looping = timer_loop(
        timer,
        &clock,
        &mut rx,
        |e| {
            let TimerEvent::Fire(f) = e else { return };
            counts[index[&*f.job.name]] += 1;
            lateness.push(late_ms(f.fired_at, f.occurrence));
            if lateness.len() == n
                && let Some(tx) = done.take()
            {
                let _ = tx.try_send(Control::Shutdown);
            }
        },
        NoReload,
    );
    // Every job fires within the next minute; stop at 65 s regardless.
    let _ = tokio::time::timeout(Duration::from_secs(65), looping).await;
    let base = baseline.await.unwrap_or_default();

    let missed = counts.iter().filter(|&&c| c == 0).count();
    let duplicated = counts.iter().filter(|&&c| c > 1).count();
    let fired = lateness.len();
    let (hist, base_hist) = (histogram(&lateness), histogram(&base));
    let (ours, floor) = (stats(lateness), stats(base));
    if json {
        println!(
            "{{\"label\":\"{label}\",\"jobs\":{n},\"fired\":{fired},\"hist\":{hist},\"baseline_hist\":{base_hist},\"p50_ms\":{:.4},\"p99_ms\":{:.4},\"max_ms\":{:.4},\"baseline_p50_ms\":{:.4},\"baseline_p99_ms\":{:.4},\"baseline_max_ms\":{:.4},\"missed\":{missed},\"duplicated\":{duplicated},\"parse_ms\":{parse_ms:.1}}}",
            ours.0, ours.1, ours.2, floor.0, floor.1, floor.2
        );
    } else {
        summary(&format!("{label} cronmail"), fired, ours);
        summary(&format!("{label} baseline sleep_until"), n, floor);
        println!("{label}: missed={missed} duplicated={duplicated}");
    }
}

fn flag(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let json = args.iter().any(|a| a == "--json");
    let n: usize = flag(&args, "--jobs")
        .or_else(|| args.first().filter(|a| !a.starts_with("--")).cloned())
        .and_then(|a| a.parse().ok())
        .unwrap_or(10_000);
    let mode = flag(&args, "--mode");
    if mode.as_deref() != Some("burst") {
        let window: usize = flag(&args, "--window")
            .and_then(|w| w.parse().ok())
            .filter(|w| (1..=60).contains(w))
            .unwrap_or(60);
        // Starting a couple of seconds ahead, so no job is due while the loop starts.
        let first = Utc::now().second() as usize + 2;
        let label = format!("spread over {window} s");
        run(
            &label,
            n,
            move |i| u32::try_from((first + i % window) % 60).unwrap_or(0),
            json,
        )
        .await;
    }
    if mode.as_deref() != Some("spread") {
        // Due in one second: a few seconds from now, so the loop is asleep when it comes.
        let s = (Utc::now().second() + 5) % 60;
        run("same second", n, move |_| s, json).await;
    }
}
