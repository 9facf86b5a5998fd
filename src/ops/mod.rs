//! What operators see and hear: Prometheus metrics and a health check on an HTTP
//! listener (`http.rs`), and pings and failure alerts sent in the background
//! (`alert.rs`). The worker and the timer loop report to one `Ops`; nothing here ever
//! waits on a delivery, or makes one wait.

mod alert;
mod health;
mod http;
mod metrics;
mod page;

use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};

pub use alert::{Alerts, FailureEvent, Ping};
pub use health::Health;
pub use http::serve;
pub use metrics::Metrics;

use crate::config::Config;

/// Outcomes the status page lists, newest last.
const RECENT: usize = 100;

/// One outcome, for the status page.
#[derive(Clone, Debug)]
pub struct Recent {
    pub job: String,
    pub occurrence: DateTime<Utc>,
    /// `sent`, `failed`, `expired`, `skipped`, or `retrying`.
    pub state: &'static str,
    /// The server's reply, or why it was skipped; the failure's class first.
    pub reply: String,
}

/// Everything operators see and hear, shared by the daemon's tasks.
pub struct Ops {
    pub metrics: Metrics,
    pub health: Health,
    pub alerts: Arc<Alerts>,
    /// The configuration in force, for `/metrics`' next fires.
    config: Mutex<Arc<Config>>,
    recent: Mutex<std::collections::VecDeque<Recent>>,
    /// The skip and pause orders in force, for the status page's week.
    orders: Mutex<crate::agenda::Orders>,
}

impl Ops {
    pub fn new(config: Arc<Config>, roots: Vec<Vec<u8>>) -> Arc<Self> {
        let metrics = Metrics::new();
        metrics.accounts(&config.accounts.iter().map(|a| &*a.name).collect::<Vec<_>>());
        Arc::new(Ops {
            metrics,
            health: Health::default(),
            alerts: Alerts::spawn(config.ops.clone(), roots),
            config: Mutex::new(config),
            recent: Mutex::new(std::collections::VecDeque::new()),
            orders: Mutex::new(crate::agenda::Orders::default()),
        })
    }

    pub fn set_orders(&self, orders: crate::agenda::Orders) {
        *self
            .orders
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = orders;
    }

    pub fn orders(&self) -> crate::agenda::Orders {
        self.orders
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Notes an outcome for the status page (the oldest beyond `RECENT` is dropped).
    pub fn outcome(&self, r: Recent) {
        let mut recent = self
            .recent
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if recent.len() >= RECENT {
            recent.pop_front();
        }
        recent.push_back(r);
    }

    /// The outcomes noted, newest first.
    pub fn recent(&self) -> Vec<Recent> {
        self.recent
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .rev()
            .cloned()
            .collect()
    }

    /// A reload's configuration.
    pub fn set_config(&self, config: Arc<Config>) {
        self.alerts.set_config(config.ops.clone());
        self.metrics
            .accounts(&config.accounts.iter().map(|a| &*a.name).collect::<Vec<_>>());
        *self
            .config
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = config;
    }

    pub fn config(&self) -> Arc<Config> {
        Arc::clone(
            &self
                .config
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        )
    }

    /// Each enabled job's next fire after `now`, for `/metrics`.
    pub fn next_fires(&self, now: DateTime<Utc>) -> Vec<(String, Option<DateTime<Utc>>)> {
        self.config()
            .jobs
            .iter()
            .filter(|j| j.enabled)
            .map(|j| (j.name.to_string(), j.schedule.next_after(now)))
            .collect()
    }
}
