//! Live heap after loading a jobs.toml, by a counting allocator: where memory goes.
//! This is how the 240 MB of 10,000 jobs was found (compiled templates, croner's
//! per-year table, duplicated jobs) and brought to 8 MB.
//!
//!     cargo run --release --example mem_profile -- jobs.toml
//!     cargo run --release --example mem_profile -- --schedules   # 10,000 distinct schedules
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

struct Counting;
static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards every call to the system allocator unchanged, and only counts.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        let n = LIVE.fetch_add(l.size(), Ordering::Relaxed) + l.size();
        PEAK.fetch_max(n, Ordering::Relaxed);
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        LIVE.fetch_sub(l.size(), Ordering::Relaxed);
        unsafe { System.dealloc(p, l) }
    }
}

#[global_allocator]
static A: Counting = Counting;

fn mb(n: usize) -> String {
    #[allow(clippy::cast_precision_loss)]
    let m = n as f64 / 1_048_576.0;
    format!("{m:.1} MB")
}

fn live() -> usize {
    LIVE.load(Ordering::Relaxed)
}

fn schedules() {
    let before = live();
    let v: Vec<_> = (0..10_000)
        .map(|i| {
            cronmail::schedule::Schedule::parse(
                &format!("{} {} {} * *", i % 60, (i / 60) % 24, 1 + (i / 1440) % 28),
                chrono_tz::UTC,
            )
            .expect("a valid schedule")
        })
        .collect();
    println!("10,000 distinct schedules: {}", mb(live() - before));
    drop(v);
}

fn main() {
    let Some(arg) = std::env::args().nth(1) else {
        eprintln!("usage: mem_profile JOBS.TOML | --schedules");
        std::process::exit(64);
    };
    if arg == "--schedules" {
        schedules();
        return;
    }
    let before = live();
    let cfg = cronmail::config::load(
        std::path::Path::new(&arg),
        &cronmail::config::Host::from_env(),
    )
    .unwrap_or_else(|e| {
        eprintln!("{} problems in {arg}", e.0.len());
        std::process::exit(78)
    });
    println!(
        "config: live {} (peak during load {}), {} jobs",
        mb(live() - before),
        mb(PEAK.load(Ordering::Relaxed)),
        cfg.jobs.len()
    );
    let timer = cronmail::timer::Timer::new(
        cfg.jobs.clone(),
        chrono::Utc::now(),
        &std::collections::HashMap::new(),
    );
    println!("+ timer: live {}", mb(live() - before));
    drop(timer);
    let templates = std::sync::Arc::clone(&cfg.templates);
    drop(cfg);
    println!("templates alone: live {}", mb(live() - before));
    drop(templates);
}
