//! What operators see and hear: Prometheus metrics and a health check on an HTTP
//! listener (`http.rs`), and pings and failure alerts sent in the background
//! (`alert.rs`). The worker and the timer loop report to one `Ops`; nothing here ever
//! waits on a delivery, or makes one wait.

mod alert;
mod health;
mod http;
mod metrics;

use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};

pub use alert::{Alerts, FailureEvent, Ping};
pub use health::Health;
pub use http::serve;
pub use metrics::Metrics;

use crate::config::Config;

/// Everything operators see and hear, shared by the daemon's tasks.
pub struct Ops {
    pub metrics: Metrics,
    pub health: Health,
    pub alerts: Arc<Alerts>,
    /// The configuration in force, for `/metrics`' next fires.
    config: Mutex<Arc<Config>>,
}

impl Ops {
    pub fn new(config: Arc<Config>, roots: Vec<Vec<u8>>) -> Arc<Self> {
        Arc::new(Ops {
            metrics: Metrics::new(),
            health: Health::default(),
            alerts: Alerts::spawn(config.ops.clone(), roots),
            config: Mutex::new(config),
        })
    }

    /// A reload's configuration.
    pub fn set_config(&self, config: Arc<Config>) {
        self.alerts.set_config(config.ops.clone());
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
