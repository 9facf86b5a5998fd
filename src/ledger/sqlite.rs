//! The embedded ledger: `<state_dir>/ledger.sqlite3`, for one node. WAL,
//! `synchronous=FULL` (a commit survives a power cut), the schema versioned with
//! `PRAGMA user_version` and migrated forward at open.

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use chrono::{DateTime, Utc};
use rusqlite::{Connection, OptionalExtension, params};

use super::{JobSummary, Key, Ledger, LedgerError, Receipt, Record, State};

/// Schema migrations: entry `i` takes `user_version` from `i` to `i + 1`. Released
/// versions are never edited; each has a fixture in `tests/fixtures/` that must open.
const MIGRATIONS: &[&str] = &[
    // 0 -> 1
    "CREATE TABLE occurrences (
        job TEXT NOT NULL,
        scheduled_at INTEGER NOT NULL,
        state TEXT NOT NULL CHECK (state IN ('pending','sending','sent','failed','expired','skipped')),
        message_id TEXT NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        next_attempt_at INTEGER,
        last_error_class TEXT,
        last_reply TEXT,
        final_reply TEXT,
        created_at INTEGER NOT NULL,
        updated_at INTEGER NOT NULL,
        PRIMARY KEY (job, scheduled_at)
    ) WITHOUT ROWID;
    CREATE INDEX occurrences_unfinished ON occurrences (state) WHERE state IN ('pending', 'sending');",
    // 1 -> 2: when the last failure happened (`updated_at` moves on when it is sent).
    "ALTER TABLE occurrences ADD COLUMN last_error_at INTEGER;",
    // 2 -> 3: orders of `cronmail skip`, `pause`, `resume` and `trigger`.
    "CREATE TABLE controls (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        job TEXT NOT NULL,
        action TEXT NOT NULL CHECK (action IN ('skip','pause','resume','trigger')),
        at INTEGER,
        created_at INTEGER NOT NULL
    );",
    // 3 -> 4: the account that sent it and to how many recipients, for sending limits.
    "ALTER TABLE occurrences ADD COLUMN account TEXT;
    ALTER TABLE occurrences ADD COLUMN recipients INTEGER;
    CREATE INDEX occurrences_sent ON occurrences (account, updated_at) WHERE state = 'sent';",
];

pub const SCHEMA_VERSION: i64 = 4;

/// The embedded ledger: `<state_dir>/ledger.sqlite3`.
pub struct SqliteLedger {
    path: PathBuf,
    /// The connection, and the file it has open (device, inode): compared with the
    /// path before each call, to notice a ledger deleted or replaced under us.
    conn: Mutex<(Connection, (u64, u64))>,
    /// Held for the process's lifetime by `open_exclusive`; never read.
    lock: Option<File>,
}

fn ts(t: DateTime<Utc>) -> i64 {
    t.timestamp()
}

fn from_ts(s: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(s, 0).unwrap_or_default()
}

impl SqliteLedger {
    /// Opens (creating if needed) the ledger in `state_dir`, and takes the lock that
    /// keeps a second `cronmail run` away.
    pub fn open_exclusive(state_dir: &Path) -> Result<Self, LedgerError> {
        if std::fs::metadata(state_dir).is_ok_and(|m| !m.is_dir()) {
            return Err(LedgerError::NotAFolder(state_dir.to_path_buf()));
        }
        std::fs::create_dir_all(state_dir).map_err(|error| LedgerError::Dir {
            path: state_dir.to_path_buf(),
            error,
        })?;
        let lock_path = state_dir.join("cronmail.lock");
        let lock = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|error| LedgerError::Dir {
                path: lock_path.clone(),
                error,
            })?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(LedgerError::Locked(state_dir.to_path_buf()));
            }
            Err(std::fs::TryLockError::Error(error)) => {
                return Err(LedgerError::Dir {
                    path: lock_path,
                    error,
                });
            }
        }
        let mut ledger = Self::open_at(&state_dir.join("ledger.sqlite3"))?;
        ledger.lock = Some(lock);
        Ok(ledger)
    }

    /// Opens the ledger file itself without the lock: for `status` and `history`, which
    /// read while a daemon runs, and for tests.
    pub fn open_at(path: &Path) -> Result<Self, LedgerError> {
        Self::unlocked(path, connect(path)?)
    }

    /// The ledger at `path` on `conn`, without the lock.
    fn unlocked(path: &Path, conn: Connection) -> Result<Self, LedgerError> {
        let id = identity(path).map_err(|error| LedgerError::Dir {
            path: path.to_path_buf(),
            error,
        })?;
        Ok(SqliteLedger {
            path: path.to_path_buf(),
            conn: Mutex::new((conn, id)),
            lock: None,
        })
    }

    /// Opens the ledger file read-only, without migrating: for `status` and `history`
    /// run by a user who may read it but not write beside it.
    pub fn open_read_only(path: &Path) -> Result<Self, LedgerError> {
        let sql = |error| LedgerError::Sql {
            path: path.to_path_buf(),
            error,
        };
        let conn = Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .map_err(sql)?;
        conn.busy_timeout(std::time::Duration::from_secs(10))
            .map_err(sql)?;
        conn.query_row("SELECT COUNT(*) FROM occurrences", [], |r| {
            r.get::<_, i64>(0)
        })
        .map_err(sql)?;
        Self::unlocked(path, conn)
    }

    fn with<T>(
        &self,
        f: impl FnOnce(&mut Connection) -> rusqlite::Result<T>,
    ) -> Result<T, LedgerError> {
        let mut guard = self
            .conn
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if identity(&self.path).ok() != Some(guard.1) {
            self.recreate(&mut guard)?;
        }
        f(&mut guard.0).map_err(|error| LedgerError::Sql {
            path: self.path.clone(),
            error,
        })
    }

    /// The ledger file was deleted or replaced while we held it open: write what the
    /// open connection still has (every row, the WAL included) to a new file at the
    /// path, and go on with that. Nothing recorded is lost, pending retries included.
    fn recreate(&self, guard: &mut (Connection, (u64, u64))) -> Result<(), LedgerError> {
        let path = &self.path;
        tracing::error!(
            path = %path.display(),
            "the ledger file was deleted or replaced while cronmail ran; recreating it from the open database"
        );
        let failed = |what: &str, detail: String| LedgerError::Gone {
            path: path.clone(),
            error: format!("{what}: {detail}"),
        };
        let dir = path.parent().unwrap_or_else(|| Path::new("."));
        std::fs::create_dir_all(dir).map_err(|e| failed("creating its folder", e.to_string()))?;
        let name = path
            .file_name()
            .map_or_else(Default::default, |n| n.to_string_lossy().into_owned());
        let tmp = dir.join(format!(".{name}.recovered"));
        let _ = std::fs::remove_file(&tmp);
        guard
            .0
            .execute("VACUUM INTO ?1", [tmp.to_string_lossy()])
            .map_err(|e| failed("copying the open database", e.to_string()))?;
        // Close the old connection first: it checkpoints into the deleted file and
        // removes its WAL, which must not be taken for the new file's.
        let fresh = Connection::open_in_memory()
            .map_err(|e| failed("closing the old connection", e.to_string()))?;
        drop(std::mem::replace(&mut guard.0, fresh));
        std::fs::rename(&tmp, path).map_err(|e| failed("putting it in place", e.to_string()))?;
        guard.0 = connect(path)?;
        guard.1 = identity(path).map_err(|e| failed("reading it back", e.to_string()))?;
        let rows: i64 = guard
            .0
            .query_row("SELECT COUNT(*) FROM occurrences", [], |r| r.get(0))
            .unwrap_or(-1);
        tracing::error!(path = %path.display(), rows, "the ledger was recreated with every occurrence it had");
        Ok(())
    }
}

/// The device and inode of the file at `path`.
fn identity(path: &Path) -> std::io::Result<(u64, u64)> {
    use std::os::unix::fs::MetadataExt as _;
    let m = std::fs::metadata(path)?;
    Ok((m.dev(), m.ino()))
}

/// Opens (creating if needed) and migrates the ledger file at `path`.
fn connect(path: &Path) -> Result<Connection, LedgerError> {
    let sql = |error| LedgerError::Sql {
        path: path.to_path_buf(),
        error,
    };
    let mut conn = Connection::open(path).map_err(sql)?;
    conn.busy_timeout(std::time::Duration::from_secs(10))
        .map_err(sql)?;
    conn.pragma_update(None, "journal_mode", "WAL")
        .map_err(sql)?;
    conn.pragma_update(None, "synchronous", "FULL")
        .map_err(sql)?;
    // Read the version and migrate under one write lock (BEGIN IMMEDIATE): two
    // processes opening a new ledger at once (the daemon starting, `status`) must
    // not both run the same migration.
    let tx = conn
        .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
        .map_err(sql)?;
    let version: i64 = tx
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .map_err(sql)?;
    if version > SCHEMA_VERSION {
        return Err(LedgerError::TooNew {
            path: path.to_path_buf(),
            found: version,
            known: SCHEMA_VERSION,
        });
    }
    for (i, step) in MIGRATIONS
        .iter()
        .enumerate()
        .skip(usize::try_from(version).unwrap_or(0))
    {
        tx.execute_batch(step).map_err(sql)?;
        tx.pragma_update(None, "user_version", i + 1).map_err(sql)?;
    }
    tx.commit().map_err(sql)?;
    Ok(conn)
}

const SQLITE_START: &str =
    "UPDATE occurrences SET state = 'sending', attempts = attempts + 1, updated_at = ?3
     WHERE job = ?1 AND scheduled_at = ?2 AND state IN ('pending', 'sending') RETURNING attempts";
const SQLITE_SENT: &str = "UPDATE occurrences SET state = 'sent', final_reply = ?3, next_attempt_at = NULL, updated_at = ?4,
     account = ?5, recipients = ?6
     WHERE job = ?1 AND scheduled_at = ?2";

const RECORD_COLUMNS: &str = "job, scheduled_at, state, message_id, attempts, next_attempt_at, last_error_class, last_reply, final_reply, updated_at";

fn record(r: &rusqlite::Row<'_>) -> rusqlite::Result<Record> {
    Ok(Record {
        key: Key {
            job: r.get::<_, String>(0)?.into(),
            scheduled_at: from_ts(r.get(1)?),
        },
        state: State::parse(&r.get::<_, String>(2)?),
        message_id: r.get(3)?,
        attempts: r.get(4)?,
        next_attempt_at: r.get::<_, Option<i64>>(5)?.map(from_ts),
        last_error_class: r.get(6)?,
        last_reply: r.get(7)?,
        final_reply: r.get(8)?,
        updated_at: from_ts(r.get(9)?),
        node: None,
    })
}

impl Ledger for SqliteLedger {
    fn add_control(&self, control: &super::Control) -> Result<i64, LedgerError> {
        let (name, at) = control.action.parts();
        self.with(|c| {
            c.execute(
                "INSERT INTO controls (job, action, at, created_at) VALUES (?1, ?2, ?3, ?4)",
                params![control.job, name, at.map(ts), ts(control.created_at)],
            )?;
            Ok(c.last_insert_rowid())
        })
    }

    fn controls_after(&self, id: i64) -> Result<Vec<(i64, super::Control)>, LedgerError> {
        self.with(|c| {
            // A ledger read-only at schema 2 (not migrated) has no orders.
            let version: i64 = c.query_row("PRAGMA user_version", [], |r| r.get(0))?;
            if version < 3 {
                return Ok(Vec::new());
            }
            let mut stmt = c.prepare_cached(
                "SELECT id, job, action, at, created_at FROM controls WHERE id > ?1 ORDER BY id",
            )?;
            let rows = stmt.query_map(params![id], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, Option<i64>>(3)?,
                    r.get::<_, i64>(4)?,
                ))
            })?;
            let mut out = Vec::new();
            for row in rows {
                let (id, job, action, at, created) = row?;
                if let Some(action) = super::Action::from_parts(&action, at.map(from_ts)) {
                    out.push((
                        id,
                        super::Control {
                            job,
                            action,
                            created_at: from_ts(created),
                        },
                    ));
                }
            }
            Ok(out)
        })
    }

    fn claim(&self, items: &[(Key, String)], now: DateTime<Utc>) -> Result<Vec<bool>, LedgerError> {
        self.with(|c| {
            let tx = c.transaction()?;
            let mut out = Vec::with_capacity(items.len());
            {
                let mut stmt = tx.prepare_cached(
                    "INSERT INTO occurrences (job, scheduled_at, state, message_id, created_at, updated_at)
                     VALUES (?1, ?2, 'pending', ?3, ?4, ?4) ON CONFLICT DO NOTHING",
                )?;
                for (key, message_id) in items {
                    out.push(stmt.execute(params![&*key.job, ts(key.scheduled_at), message_id, ts(now)])? == 1);
                }
            }
            tx.commit()?;
            Ok(out)
        })
    }

    fn skip(
        &self,
        key: &Key,
        message_id: &str,
        reason: &str,
        now: DateTime<Utc>,
    ) -> Result<(), LedgerError> {
        self.with(|c| {
            c.execute(
                "INSERT INTO occurrences (job, scheduled_at, state, message_id, final_reply, created_at, updated_at)
                 VALUES (?1, ?2, 'skipped', ?3, ?4, ?5, ?5) ON CONFLICT DO NOTHING",
                params![&*key.job, ts(key.scheduled_at), message_id, reason, ts(now)],
            )?;
            Ok(())
        })
    }

    fn start_attempt(&self, key: &Key, now: DateTime<Utc>) -> Result<Option<u32>, LedgerError> {
        self.with(|c| {
            c.query_row(
                SQLITE_START,
                params![&*key.job, ts(key.scheduled_at), ts(now)],
                |r| r.get(0),
            )
            .optional()
        })
    }

    fn sent(&self, r: &Receipt) -> Result<(), LedgerError> {
        self.record(&[], std::slice::from_ref(r), r.at).map(drop)
    }

    fn sent_since(
        &self,
        account: &str,
        since: DateTime<Utc>,
    ) -> Result<Vec<(DateTime<Utc>, u32)>, LedgerError> {
        self.with(|c| {
            let mut stmt = c.prepare_cached(
                "SELECT updated_at, COALESCE(recipients, 1) FROM occurrences
                 WHERE state = 'sent' AND account = ?1 AND updated_at >= ?2 ORDER BY updated_at",
            )?;
            let rows = stmt.query_map(params![account, ts(since)], |r| {
                Ok((from_ts(r.get(0)?), r.get(1)?))
            })?;
            rows.collect()
        })
    }

    fn record(
        &self,
        starts: &[Key],
        sent: &[Receipt],
        now: DateTime<Utc>,
    ) -> Result<Vec<Option<u32>>, LedgerError> {
        self.with(|c| {
            let tx = c.transaction()?;
            let mut out = Vec::with_capacity(starts.len());
            {
                let mut record_sent = tx.prepare_cached(SQLITE_SENT)?;
                for r in sent {
                    record_sent.execute(params![
                        &*r.key.job,
                        ts(r.key.scheduled_at),
                        r.reply,
                        ts(r.at),
                        &*r.account,
                        r.recipients
                    ])?;
                }
                let mut start = tx.prepare_cached(SQLITE_START)?;
                for key in starts {
                    out.push(
                        start
                            .query_row(params![&*key.job, ts(key.scheduled_at), ts(now)], |r| {
                                r.get(0)
                            })
                            .optional()?,
                    );
                }
            }
            tx.commit()?;
            Ok(out)
        })
    }

    fn retry_later(
        &self,
        key: &Key,
        class: &str,
        reply: &str,
        next_at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<(), LedgerError> {
        self.with(|c| {
            c.execute(
                "UPDATE occurrences SET state = 'pending', last_error_class = ?3, last_reply = ?4,
                 next_attempt_at = ?5, updated_at = ?6, last_error_at = ?6 WHERE job = ?1 AND scheduled_at = ?2",
                params![
                    &*key.job,
                    ts(key.scheduled_at),
                    class,
                    reply,
                    ts(next_at),
                    ts(now)
                ],
            )?;
            Ok(())
        })
    }

    fn give_up(
        &self,
        key: &Key,
        state: State,
        class: &str,
        reply: &str,
        now: DateTime<Utc>,
    ) -> Result<(), LedgerError> {
        self.with(|c| {
            c.execute(
                "UPDATE occurrences SET state = ?3, last_error_class = ?4, last_reply = ?5,
                 next_attempt_at = NULL, updated_at = ?6, last_error_at = ?6 WHERE job = ?1 AND scheduled_at = ?2",
                params![
                    &*key.job,
                    ts(key.scheduled_at),
                    state.name(),
                    class,
                    reply,
                    ts(now)
                ],
            )?;
            Ok(())
        })
    }

    fn unfinished(&self) -> Result<Vec<Record>, LedgerError> {
        self.with(|c| {
            let mut stmt = c.prepare(&format!(
                "SELECT {RECORD_COLUMNS} FROM occurrences WHERE state IN ('pending', 'sending') ORDER BY scheduled_at, job"
            ))?;
            stmt.query_map([], record)?.collect()
        })
    }

    fn last_handled(&self) -> Result<HashMap<String, DateTime<Utc>>, LedgerError> {
        self.with(|c| {
            let mut stmt =
                c.prepare("SELECT job, MAX(scheduled_at) FROM occurrences GROUP BY job")?;
            let rows: rusqlite::Result<Vec<_>> = stmt
                .query_map([], |r| Ok((r.get::<_, String>(0)?, from_ts(r.get(1)?))))?
                .collect();
            rows.map(super::fold_handled)
        })
    }

    fn history(&self, job: Option<&str>, limit: usize) -> Result<Vec<Record>, LedgerError> {
        self.with(|c| {
            let mut stmt = c.prepare(&format!(
                "SELECT {RECORD_COLUMNS} FROM occurrences
                 WHERE ?1 IS NULL OR job = ?1 OR substr(job, 1, length(?1) + 1) = ?1 || '/'
                 ORDER BY scheduled_at DESC, job LIMIT ?2"
            ))?;
            stmt.query_map(
                params![job, i64::try_from(limit).unwrap_or(i64::MAX)],
                record,
            )?
            .collect()
        })
    }

    fn summary(&self) -> Result<HashMap<String, JobSummary>, LedgerError> {
        self.with(|c| {
            let mut out: HashMap<String, JobSummary> = HashMap::new();
            let mut stmt = c.prepare(
                "SELECT job, scheduled_at, message_id FROM occurrences o WHERE state = 'sent'
                 AND scheduled_at = (SELECT MAX(scheduled_at) FROM occurrences WHERE job = o.job AND state = 'sent')",
            )?;
            for row in stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, from_ts(r.get(1)?), r.get::<_, String>(2)?)))? {
                let (job, at, id) = row?;
                out.entry(job).or_default().last_sent = Some((at, id));
            }
            let mut stmt = c.prepare(
                "SELECT job, COALESCE(last_error_at, updated_at) AS failed_at, COALESCE(last_error_class, ''),
                 COALESCE(last_reply, '') FROM occurrences o
                 WHERE last_error_class IS NOT NULL AND COALESCE(last_error_at, updated_at) = (
                     SELECT MAX(COALESCE(last_error_at, updated_at)) FROM occurrences
                     WHERE job = o.job AND last_error_class IS NOT NULL) GROUP BY job",
            )?;
            for row in stmt.query_map([], |r| {
                Ok((r.get::<_, String>(0)?, from_ts(r.get(1)?), r.get::<_, String>(2)?, r.get::<_, String>(3)?))
            })? {
                let (job, at, class, reply) = row?;
                out.entry(job).or_default().last_failure = Some((at, class, reply));
            }
            let mut stmt = c.prepare("SELECT job, COUNT(*) FROM occurrences WHERE state IN ('pending', 'sending') GROUP BY job")?;
            for row in stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, u32>(1)?)))? {
                let (job, n) = row?;
                out.entry(job).or_default().pending = n;
            }
            Ok(super::fold_summary(out))
        })
    }

    fn get(&self, key: &Key) -> Result<Option<Record>, LedgerError> {
        self.with(|c| {
            c.query_row(
                &format!(
                    "SELECT {RECORD_COLUMNS} FROM occurrences WHERE job = ?1 AND scheduled_at = ?2"
                ),
                params![&*key.job, ts(key.scheduled_at)],
                record,
            )
            .optional()
        })
    }
}
