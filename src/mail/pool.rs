//! Kept connections and the connection cap.
//!
//! After an accepted message the connection is kept a few seconds for the next one (a
//! burst reuses its connections), then QUIT. Never more connections, kept and in use,
//! than `max_connections`: a sender holds a permit for as long as its connection lives,
//! and takes a kept connection before opening a new one.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use lettre::transport::smtp::client::AsyncSmtpConnection;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// How long the background QUIT after an accepted message may take.
pub(super) const QUIT_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a connection is kept open for the next message, after one was accepted.
/// Long enough for a burst; short enough not to hold a server's connection slot.
const IDLE_KEEP: Duration = Duration::from_secs(5);

/// Messages one connection carries before it is closed (servers limit this too).
const REUSE_MAX: u32 = 100;

/// An authenticated connection waiting for the next message.
pub(super) struct Idle {
    pub conn: AsyncSmtpConnection,
    /// Messages it has carried.
    pub used: u32,
    id: u64,
}

pub(super) struct Pool {
    idle: Arc<Mutex<Vec<Idle>>>,
    next_id: AtomicU64,
    permits: Arc<Semaphore>,
    /// `keep_connections`: with `false`, every connection is QUIT after its message.
    keep: bool,
}

impl Pool {
    pub fn new(max_connections: usize, keep: bool) -> Self {
        Pool {
            idle: Arc::new(Mutex::new(Vec::new())),
            next_id: AtomicU64::new(0),
            permits: Arc::new(Semaphore::new(max_connections.max(1))),
            keep,
        }
    }

    /// Waits for a connection slot; `None` once the pool is closed.
    pub async fn permit(&self) -> Option<OwnedSemaphorePermit> {
        Arc::clone(&self.permits).acquire_owned().await.ok()
    }

    /// A kept connection, if one is waiting (the most recently used).
    pub fn take(&self) -> Option<Idle> {
        self.idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop()
    }

    /// After an accepted message: keeps the connection for the next one for a few
    /// seconds (then QUITs it), or QUITs it now after `REUSE_MAX` messages. Either way in
    /// the background, so the caller can record the delivery at once: the window in
    /// which a crash causes a resend is the time from the server's reply to the ledger's
    /// commit, and a QUIT round trip need not be in it.
    pub fn keep(&self, mut conn: AsyncSmtpConnection, used: u32, permit: OwnedSemaphorePermit) {
        if used >= REUSE_MAX || !self.keep {
            // The permit stays held until the QUIT is done.
            tokio::spawn(async move {
                let _permit = permit;
                let _ = tokio::time::timeout(QUIT_TIMEOUT, conn.quit()).await;
            });
            return;
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        self.idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(Idle { conn, used, id });
        drop(permit);
        let idle = Arc::clone(&self.idle);
        tokio::spawn(async move {
            tokio::time::sleep(IDLE_KEEP).await;
            let expired = {
                let mut list = idle.lock().unwrap_or_else(PoisonError::into_inner);
                list.iter()
                    .position(|i| i.id == id)
                    .map(|at| list.remove(at))
            };
            if let Some(mut kept) = expired {
                let _ = tokio::time::timeout(QUIT_TIMEOUT, kept.conn.quit()).await;
            }
        });
    }

    /// QUITs every kept connection: at shutdown.
    pub async fn close(&self) {
        let kept = std::mem::take(&mut *self.idle.lock().unwrap_or_else(PoisonError::into_inner));
        for mut k in kept {
            let _ = tokio::time::timeout(QUIT_TIMEOUT, k.conn.quit()).await;
        }
    }
}
