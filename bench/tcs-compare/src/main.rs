//! tokio-cron-scheduler 0.15.1, measured the way cronmail's fire_lateness example
//! measures cronmail: `cargo run --release` in this folder.
//!
//! 1. lateness of 1,000 jobs due in the same second (scheduled instant -> job runs),
//!    counting a job as run if it ran within 20 s;
//! 2. 10,000 jobs due in the same second: how many run;
//! 3. 100 tasks adding 100 jobs each at once: does `add` finish within 60 s.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Timelike, Utc};
use tokio_cron_scheduler::{Job, JobScheduler};

fn pct(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    if v.is_empty() { return f64::NAN; }
    v[((v.len() - 1) as f64 * p).round() as usize]
}

/// Adds `n` jobs due at the same second a few seconds ahead; returns run lateness (ms).
async fn burst(n: usize) -> (usize, Vec<f64>) {
    let mut sched = JobScheduler::new().await.unwrap();
    let now = Utc::now();
    let target_s = (now.second() + 8) % 60;
    let at: DateTime<Utc> = {
        let base = now.with_nanosecond(0).unwrap();
        let mut t = base + chrono::Duration::seconds(1);
        while t.second() != target_s { t += chrono::Duration::seconds(1); }
        t
    };
    let late = Arc::new(Mutex::new(Vec::new()));
    for _ in 0..n {
        let late = late.clone();
        let job = Job::new_async(format!("{target_s} * * * * *").as_str(), move |_, _| {
            let late = late.clone();
            Box::pin(async move {
                let ms = (Utc::now() - at).num_microseconds().unwrap() as f64 / 1000.0;
                late.lock().unwrap().push(ms);
            })
        }).unwrap();
        sched.add(job).await.unwrap();
    }
    sched.start().await.unwrap();
    let wait = (at - Utc::now()).to_std().unwrap_or_default() + Duration::from_secs(20);
    tokio::time::sleep(wait).await;
    let _ = sched.shutdown().await;
    let v = late.lock().unwrap().clone();
    (v.iter().filter(|&&l| l < 30_000.0).count(), v)
}

#[tokio::main]
async fn main() {
    let (ran, mut v) = burst(1_000).await;
    println!("1k same second: ran {ran}/1000  p50={:.1} ms p99={:.1} ms max={:.1} ms",
        pct(&mut v, 0.5), pct(&mut v, 0.99), pct(&mut v, 1.0));
    let (ran, mut v) = burst(10_000).await;
    println!("10k same second: ran {ran}/10000 ({:.0}% dropped)  p50={:.1} ms p99={:.1} ms",
        100.0 - ran as f64 / 100.0, pct(&mut v, 0.5), pct(&mut v, 0.99));

    let mut sched = JobScheduler::new().await.unwrap();
    sched.start().await.unwrap();
    let errors = Arc::new(Mutex::new(0usize));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..100 {
        let sched = sched.clone();
        let errors = errors.clone();
        tasks.spawn(async move {
            for _ in 0..100 {
                let job = Job::new_async("0 0 9 * * *", |_, _| Box::pin(async {})).unwrap();
                if sched.add(job).await.is_err() {
                    *errors.lock().unwrap() += 1;
                }
            }
        });
    }
    let started = std::time::Instant::now();
    match tokio::time::timeout(Duration::from_secs(60), async { while tasks.join_next().await.is_some() {} }).await {
        Ok(()) => println!("concurrent adds: 100 tasks x 100 adds finished in {:?}, {} errors", started.elapsed(), errors.lock().unwrap()),
        Err(_) => println!("concurrent adds: not finished after 60 s ({} of 100 tasks still waiting, {} errors): hang", tasks.len(), errors.lock().unwrap()),
    }
    std::process::exit(0);
}
