//! The daemon's one way to the ledger: a writer task that owns it and runs every call
//! in order, off the async threads (`SQLite` with `synchronous=FULL` fsyncs; the
//! `PostgreSQL` client blocks).
//!
//! The delivery path's writes (an attempt starting, a delivery to record) are group
//! committed: whatever has queued while the previous commit ran goes into the next one,
//! so a burst of a thousand messages costs tens of commits, not two thousand.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::ledger::{Key, Ledger, LedgerError, Receipt};

/// Writes in one commit at most.
const GROUP_COMMIT_MAX: usize = 1024;

/// A failure of a group commit, shared by every write in it.
pub type Shared = Arc<LedgerError>;

type Call = Box<dyn FnOnce(&dyn Ledger) + Send>;

enum Req {
    Start(
        Key,
        DateTime<Utc>,
        oneshot::Sender<Result<Option<u32>, Shared>>,
    ),
    Sent(Receipt, oneshot::Sender<Result<(), Shared>>),
    Call(Call),
}

/// A handle on the writer. Cheap to clone; the writer stops when every handle is gone.
#[derive(Clone)]
pub struct Recorder {
    tx: mpsc::UnboundedSender<Req>,
    shared: bool,
    /// Told whether each call's write worked, for `/healthz`.
    ops: Option<Arc<crate::ops::Ops>>,
}

impl Recorder {
    /// Starts the writer on `ledger`. Await the returned handle after dropping every
    /// `Recorder`: it drops the ledger on the blocking pool (the `PostgreSQL` client
    /// owns a runtime, which must not be dropped on an async thread).
    pub fn spawn(ledger: Box<dyn Ledger>) -> (Self, JoinHandle<()>) {
        let shared = ledger.shared();
        let ledger: Arc<dyn Ledger> = Arc::from(ledger);
        let (tx, mut rx) = mpsc::unbounded_channel::<Req>();
        let task = tokio::spawn(async move {
            while let Some(first) = rx.recv().await {
                let mut batch = vec![first];
                while batch.len() < GROUP_COMMIT_MAX {
                    match rx.try_recv() {
                        Ok(req) => batch.push(req),
                        Err(_) => break,
                    }
                }
                let ledger = Arc::clone(&ledger);
                on_blocking_pool(move || run_batch(&*ledger, batch)).await;
            }
            on_blocking_pool(move || drop(ledger)).await;
        });
        (
            Recorder {
                tx,
                shared,
                ops: None,
            },
            task,
        )
    }

    /// The same handle, telling `ops` whether the ledger takes writes.
    #[must_use]
    pub fn watched_by(mut self, ops: Arc<crate::ops::Ops>) -> Self {
        self.ops = Some(ops);
        self
    }

    fn note<T, E: std::fmt::Display>(&self, r: &Result<T, E>) {
        if let Some(ops) = &self.ops {
            ops.health
                .ledger(r.as_ref().map(drop).map_err(ToString::to_string));
        }
    }

    /// Whether other nodes share the ledger, so that work they leave must be looked for.
    pub fn shared(&self) -> bool {
        self.shared
    }

    /// Runs `f` on the ledger, after every call queued before it; how it ended tells
    /// `/healthz` whether the ledger takes writes.
    pub async fn call<T: Send + 'static>(
        &self,
        f: impl FnOnce(&dyn Ledger) -> Result<T, LedgerError> + Send + 'static,
    ) -> Result<T, LedgerError> {
        let r = self.read(f).await;
        if !matches!(r, Err(LedgerError::Stopped)) {
            self.note(&r);
        }
        r
    }

    /// Runs `f`, a read, on the ledger: like `call`, but its success says nothing of
    /// whether the ledger takes writes (`/healthz`).
    pub async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&dyn Ledger) -> Result<T, LedgerError> + Send + 'static,
    ) -> Result<T, LedgerError> {
        let (reply, rx) = oneshot::channel();
        let call: Call = Box::new(move |l| {
            let _ = reply.send(f(l));
        });
        self.tx
            .send(Req::Call(call))
            .map_err(|_| LedgerError::Stopped)?;
        rx.await.map_err(|_| LedgerError::Stopped)?
    }

    /// `sending`, one more attempt: the attempt number, or `None` when another node
    /// holds the occurrence or it is done (group-committed).
    pub async fn start(&self, key: Key, now: DateTime<Utc>) -> Result<Option<u32>, Shared> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Req::Start(key, now, reply))
            .map_err(|_| Arc::new(LedgerError::Stopped))?;
        let r = rx.await.map_err(|_| Arc::new(LedgerError::Stopped))?;
        self.note(&r);
        r
    }

    /// Records a delivery (group-committed).
    pub async fn sent(&self, receipt: Receipt) -> Result<(), Shared> {
        let (done, rx) = oneshot::channel();
        self.tx
            .send(Req::Sent(receipt, done))
            .map_err(|_| Arc::new(LedgerError::Stopped))?;
        let r = rx.await.map_err(|_| Arc::new(LedgerError::Stopped))?;
        self.note(&r);
        r
    }
}

/// Runs one batch in order: each run of starts and deliveries as one `record`
/// transaction, each other call on its own.
fn run_batch(ledger: &dyn Ledger, batch: Vec<Req>) {
    let mut group: Vec<Req> = Vec::new();
    for req in batch {
        match req {
            Req::Call(f) => {
                commit(ledger, std::mem::take(&mut group));
                f(ledger);
            }
            write => group.push(write),
        }
    }
    commit(ledger, group);
}

/// One group commit of starts and deliveries, its result sent to each writer.
fn commit(ledger: &dyn Ledger, group: Vec<Req>) {
    if group.is_empty() {
        return;
    }
    let mut starts = Vec::new();
    let mut start_replies = Vec::new();
    let mut sent = Vec::new();
    let mut sent_replies = Vec::new();
    let mut now: Option<DateTime<Utc>> = None;
    for req in group {
        match req {
            Req::Start(key, at, reply) => {
                now = Some(now.map_or(at, |n| n.max(at)));
                starts.push(key);
                start_replies.push(reply);
            }
            Req::Sent(receipt, reply) => {
                sent.push(receipt);
                sent_replies.push(reply);
            }
            Req::Call(_) => {}
        }
    }
    let now = now.unwrap_or_else(Utc::now);
    match ledger.record(&starts, &sent, now) {
        Ok(started) => {
            for (reply, n) in start_replies.into_iter().zip(started) {
                let _ = reply.send(Ok(n));
            }
            for reply in sent_replies {
                let _ = reply.send(Ok(()));
            }
        }
        Err(e) => {
            let e = Arc::new(e);
            for reply in start_replies {
                let _ = reply.send(Err(Arc::clone(&e)));
            }
            for reply in sent_replies {
                let _ = reply.send(Err(Arc::clone(&e)));
            }
        }
    }
}

/// Runs `f` on the blocking pool; a panic in it is a panic here.
pub async fn on_blocking_pool<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    match tokio::task::spawn_blocking(f).await {
        Ok(r) => r,
        Err(e) => std::panic::resume_unwind(e.into_panic()),
    }
}
