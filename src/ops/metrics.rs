//! The Prometheus metrics (`OpenMetrics`, on the `prometheus-client` crate). The worker
//! and the timer loop update them as things happen; `/metrics` encodes them, adding
//! each job's next fire from the configuration in force.

use std::sync::Mutex;
use std::sync::atomic::AtomicU64;

use chrono::{DateTime, Utc};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::{Registry, Unit};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct JobLabel {
    pub job: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FailureLabels {
    pub job: String,
    pub class: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AccountLabel {
    pub account: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    version: String,
}

type TimeGauge = Gauge<f64, AtomicU64>;

/// Every metric cronmail exports.
pub struct Metrics {
    registry: Registry,
    next_fire: Family<JobLabel, TimeGauge>,
    last_success: Family<JobLabel, TimeGauge>,
    sent: Family<JobLabel, Counter>,
    failures: Family<FailureLabels, Counter>,
    pending: Family<JobLabel, Gauge>,
    held: Family<AccountLabel, Gauge>,
    /// The accounts whose gauge is 1, for the status page and `/healthz`.
    held_now: Mutex<std::collections::BTreeSet<String>>,
    send_duration: Histogram,
    lateness: Histogram,
    /// The jobs whose next fire was exported last time, to drop removed ones.
    exported: Mutex<Vec<String>>,
    /// The jobs with a `cronmail_pending` series.
    pending_shown: Mutex<std::collections::HashSet<String>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let next_fire = Family::<JobLabel, TimeGauge>::default();
        let last_success = Family::<JobLabel, TimeGauge>::default();
        let sent = Family::<JobLabel, Counter>::default();
        let failures = Family::<FailureLabels, Counter>::default();
        let pending = Family::<JobLabel, Gauge>::default();
        let held = Family::<AccountLabel, Gauge>::default();
        // 5 ms to about 2.7 min: a send is bounded by `timeout`.
        let send_duration = Histogram::new(exponential_buckets(0.005, 2.0, 16));
        // 1 ms to about 65 s: past a minute a fire is a missed occurrence.
        let lateness = Histogram::new(exponential_buckets(0.001, 2.0, 17));
        registry.register_with_unit(
            "cronmail_next_fire_timestamp",
            "When each job fires next (Unix time)",
            Unit::Seconds,
            next_fire.clone(),
        );
        registry.register_with_unit(
            "cronmail_last_success_timestamp",
            "When each job last delivered (Unix time)",
            Unit::Seconds,
            last_success.clone(),
        );
        registry.register("cronmail_sent", "Occurrences delivered", sent.clone());
        registry.register(
            "cronmail_failures",
            "Failed attempts, by class (auth, quota, tls, connect, timeout, transient, permanent, ...)",
            failures.clone(),
        );
        registry.register(
            "cronmail_pending",
            "Occurrences claimed and not yet finished: in flight, waiting to retry, or held",
            pending.clone(),
        );
        registry.register(
            "cronmail_held",
            "1 while an authentication or quota hold is on for the account",
            held.clone(),
        );
        registry.register_with_unit(
            "cronmail_send_duration",
            "How long each attempt took, connection to reply",
            Unit::Seconds,
            send_duration.clone(),
        );
        registry.register_with_unit(
            "cronmail_fire_lateness",
            "How late each fire was handed to delivery after its instant",
            Unit::Seconds,
            lateness.clone(),
        );
        registry.register(
            "cronmail_build",
            "The running version",
            Info::new(BuildLabels {
                version: env!("CARGO_PKG_VERSION").to_owned(),
            }),
        );
        Metrics {
            registry,
            next_fire,
            last_success,
            sent,
            failures,
            pending,
            held,
            held_now: Mutex::new(std::collections::BTreeSet::new()),
            send_duration,
            lateness,
            exported: Mutex::new(Vec::new()),
            pending_shown: Mutex::new(std::collections::HashSet::new()),
        }
    }

    fn job(job: &str) -> JobLabel {
        JobLabel {
            job: job.to_owned(),
        }
    }

    pub fn sent(&self, job: &str, at: DateTime<Utc>, duration: std::time::Duration) {
        self.sent.get_or_create(&Self::job(job)).inc();
        #[allow(clippy::cast_precision_loss)] // Unix seconds fit an f64 exactly until 2^53
        self.last_success
            .get_or_create(&Self::job(job))
            .set(at.timestamp_millis() as f64 / 1000.0);
        self.send_duration.observe(duration.as_secs_f64());
    }

    pub fn failed(&self, job: &str, class: &str, duration: std::time::Duration) {
        self.failures
            .get_or_create(&FailureLabels {
                job: job.to_owned(),
                class: class.to_owned(),
            })
            .inc();
        self.send_duration.observe(duration.as_secs_f64());
    }

    pub fn fired(&self, lateness: std::time::Duration) {
        self.lateness.observe(lateness.as_secs_f64());
    }

    /// The accounts held now (by name).
    pub fn held_accounts(&self) -> Vec<String> {
        self.held_now
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .cloned()
            .collect()
    }

    /// Every account of the configuration, so each gauge is present from the start.
    pub fn accounts(&self, names: &[&str]) {
        for name in names {
            drop(self.held.get_or_create(&AccountLabel {
                account: (*name).to_owned(),
            }));
        }
    }

    pub fn held(&self, account: &str, on: bool) {
        self.held
            .get_or_create(&AccountLabel {
                account: account.to_owned(),
            })
            .set(i64::from(on));
        let mut now = self
            .held_now
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if on {
            now.insert(account.to_owned());
        } else {
            now.remove(account);
        }
    }

    /// Sets each job's pending count (jobs not listed are 0). A job's series appears with
    /// its first claim and stays, at 0 when nothing is pending: 10,000 jobs that have
    /// sent nothing since the start hold no series.
    pub fn pending(&self, counts: &std::collections::HashMap<&str, i64>) {
        let mut shown = self
            .pending_shown
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for (job, n) in counts {
            self.pending.get_or_create(&Self::job(job)).set(*n);
            if !shown.contains(*job) {
                shown.insert((*job).to_owned());
            }
        }
        for job in shown.iter().filter(|j| !counts.contains_key(j.as_str())) {
            if let Some(gauge) = self.pending.get(&Self::job(job)) {
                gauge.set(0);
            }
        }
    }

    /// The exposition, with each job's next fire after `now` (a job without one, or
    /// removed from the configuration, has none).
    pub fn encode(&self, next: &[(String, Option<DateTime<Utc>>)]) -> String {
        let mut exported = self
            .exported
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for old in exported.drain(..) {
            self.next_fire.remove(&Self::job(&old));
        }
        for (job, at) in next {
            if let Some(at) = at {
                #[allow(clippy::cast_precision_loss)]
                self.next_fire
                    .get_or_create(&Self::job(job))
                    .set(at.timestamp() as f64);
                exported.push(job.clone());
            }
        }
        drop(exported);
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}
