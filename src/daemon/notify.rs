//! What the daemon tells its supervisor: ready, reloading, stopping, a status line, and
//! the watchdog's keep-alive. systemd's `sd_notify` in production; a test's recorder in
//! the in-process service tests.

use std::time::Duration;

use tracing::warn;

/// One thing the daemon says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Notice {
    Ready,
    /// A reload began (with systemd's monotonic timestamp, which `SdNotify` adds).
    Reloading,
    Stopping,
    /// The status line (`systemctl status` shows it): the next occurrence.
    Status(String),
    /// The watchdog's keep-alive, sent while the timer loop lives.
    Watchdog,
}

/// Where notices go.
pub trait Notify: Send + Sync {
    fn notify(&self, notices: &[Notice]);
    /// How often to send `Watchdog`, when a watchdog is armed.
    fn watchdog(&self) -> Option<Duration> {
        None
    }
}

/// systemd's `NOTIFY_SOCKET`, when set; otherwise nothing is sent.
pub struct SdNotify {
    enabled: bool,
    watchdog: Option<Duration>,
}

impl SdNotify {
    pub fn from_env() -> Self {
        let enabled = std::env::var_os("NOTIFY_SOCKET").is_some();
        let mut usec = 0;
        let watchdog = (enabled && sd_notify::watchdog_enabled(false, &mut usec))
            .then(|| Duration::from_micros(usec / 2));
        SdNotify { enabled, watchdog }
    }
}

impl Notify for SdNotify {
    fn notify(&self, notices: &[Notice]) {
        if !self.enabled {
            return;
        }
        let mut states = Vec::with_capacity(notices.len() + 1);
        for n in notices {
            match n {
                Notice::Ready => states.push(sd_notify::NotifyState::Ready),
                Notice::Reloading => {
                    states.push(sd_notify::NotifyState::Reloading);
                    states.push(
                        sd_notify::NotifyState::monotonic_usec_now()
                            .unwrap_or(sd_notify::NotifyState::MonotonicUsec(0)),
                    );
                }
                Notice::Stopping => states.push(sd_notify::NotifyState::Stopping),
                Notice::Status(s) => states.push(sd_notify::NotifyState::Status(s)),
                Notice::Watchdog => states.push(sd_notify::NotifyState::Watchdog),
            }
        }
        if let Err(e) = sd_notify::notify(false, &states) {
            warn!(error = %e, "could not notify systemd");
        }
    }

    fn watchdog(&self) -> Option<Duration> {
        self.watchdog
    }
}
