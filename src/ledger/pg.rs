//! The shared ledger: one `PostgreSQL` database for several nodes that run the same
//! jobs.toml. Claiming is the whole protocol:
//!
//! - Every node computes the same occurrences. A node sends one only after its claim
//!   (`INSERT ... ON CONFLICT`) on `(job, scheduled_at)` succeeded.
//! - A claim carries the node's name and a lease. An attempt is started only by the
//!   node that holds the occurrence, or by any node once the lease has lapsed, so a dead
//!   node's work is taken over after `lease`. Leases are compared with the database's
//!   clock (`now()`), never a node's: the nodes share no clock.
//! - Retries and catch-up go through the same rows, so any live node can finish
//!   another's work. A resend after a takeover carries the same Message-ID.
//!
//! The client is the sync facade of tokio-postgres (calls run on the blocking pool, as
//! `SQLite`'s do), over rustls. A broken connection is re-opened at the next call.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::Duration;

use chrono::{DateTime, Utc};
use postgres::{Client, Row};
use secrecy::{ExposeSecret, SecretString};

use super::{JobSummary, Key, Ledger, LedgerError, Record, State};
use crate::config::PgConfig;

/// Migrations: entry `i` takes the schema from version `i` to `i + 1`. Released
/// versions are never edited.
const MIGRATIONS: &[&str] = &[
    // 0 -> 1
    "CREATE TABLE cronmail_occurrences (
        job TEXT NOT NULL,
        scheduled_at TIMESTAMPTZ NOT NULL,
        state TEXT NOT NULL CHECK (state IN ('pending','sending','sent','failed','expired','skipped')),
        message_id TEXT NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        next_attempt_at TIMESTAMPTZ,
        last_error_class TEXT,
        last_reply TEXT,
        final_reply TEXT,
        node TEXT,
        lease_until TIMESTAMPTZ,
        created_at TIMESTAMPTZ NOT NULL,
        updated_at TIMESTAMPTZ NOT NULL,
        PRIMARY KEY (job, scheduled_at)
    );
    CREATE INDEX cronmail_occurrences_unfinished ON cronmail_occurrences (scheduled_at)
        WHERE state IN ('pending', 'sending');",
    // 1 -> 2: when the last failure happened (`updated_at` moves on when it is sent).
    "ALTER TABLE cronmail_occurrences ADD COLUMN last_error_at TIMESTAMPTZ;",
    // 2 -> 3: orders of `cronmail skip`, `pause`, `resume` and `trigger`, for every node.
    "CREATE TABLE cronmail_controls (
        id BIGSERIAL PRIMARY KEY,
        job TEXT NOT NULL,
        action TEXT NOT NULL CHECK (action IN ('skip','pause','resume','trigger')),
        at TIMESTAMPTZ,
        created_at TIMESTAMPTZ NOT NULL
    );",
    // 3 -> 4: the account that sent it and to how many recipients, for sending limits.
    "ALTER TABLE cronmail_occurrences ADD COLUMN account TEXT;
    ALTER TABLE cronmail_occurrences ADD COLUMN recipients INTEGER;
    CREATE INDEX cronmail_occurrences_sent ON cronmail_occurrences (account, updated_at)
        WHERE state = 'sent';",
];

pub const PG_SCHEMA_VERSION: i32 = 4;

/// Advisory lock keys: one for migrations, and a class for "this node name is connected".
const MIGRATION_LOCK: i64 = 0x6372_6f6e_6d61_696c; // "cronmail"
const NODE_LOCK_CLASS: i32 = 0x636d; // "cm"

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

const COLUMNS: &str = "job, scheduled_at, state, message_id, attempts, next_attempt_at, \
    last_error_class, last_reply, final_reply, updated_at, node";

pub struct PgLedger {
    /// For messages: the URL as written, which holds no password.
    url: String,
    config: postgres::Config,
    tls: tokio_postgres_rustls::MakeRustlsConnect,
    node: String,
    lease_s: f64,
    /// Whether this connection holds the node-name lock (the daemon does; `status` does not).
    exclusive: bool,
    client: Mutex<Option<Client>>,
}

impl PgLedger {
    /// Connects, migrates the schema under an advisory lock, and (with `exclusive`)
    /// takes the lock on this node's name, so two daemons cannot share one.
    pub fn connect(
        cfg: &PgConfig,
        password: Option<&SecretString>,
        exclusive: bool,
    ) -> Result<Self, LedgerError> {
        let url = cfg.url.clone();
        let mut config: postgres::Config = cfg.url.parse().map_err(|e| LedgerError::Db {
            url: url.clone(),
            error: format!("{e}"),
        })?;
        if let Some(p) = password {
            config.password(p.expose_secret());
        }
        if cfg.tls_required {
            config.ssl_mode(postgres::config::SslMode::Require);
        }
        config.connect_timeout(CONNECT_TIMEOUT);
        config.keepalives(true);
        config.keepalives_idle(Duration::from_secs(30));
        config.application_name(&format!("cronmail@{}", cfg.node));
        let tls = tokio_postgres_rustls::MakeRustlsConnect::new(crate::tls::https_client_config(
            &cfg.extra_roots,
        ));
        let ledger = PgLedger {
            url,
            config,
            tls,
            node: cfg.node.clone(),
            lease_s: cfg.lease.as_secs_f64(),
            exclusive,
            client: Mutex::new(None),
        };
        let mut client = ledger.open().map_err(|e| match e {
            LedgerError::Db { url, error } => LedgerError::Unreachable { url, error },
            other => other,
        })?;
        ledger.migrate(&mut client)?;
        *ledger
            .client
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(client);
        Ok(ledger)
    }

    pub fn node(&self) -> &str {
        &self.node
    }

    fn db_error(&self, e: &postgres::Error) -> LedgerError {
        let error = match e.as_db_error() {
            Some(db) => format!("{}: {}", db.severity(), db.message()),
            None => crate::failure::error_chain(e),
        };
        LedgerError::Db {
            url: self.url.clone(),
            error,
        }
    }

    /// A new connection, holding the node lock when exclusive.
    fn open(&self) -> Result<Client, LedgerError> {
        let mut client = self
            .config
            .connect(self.tls.clone())
            .map_err(|e| self.db_error(&e))?;
        if self.exclusive {
            let got: bool = client
                .query_one(
                    "SELECT pg_try_advisory_lock($1, hashtext($2))",
                    &[&NODE_LOCK_CLASS, &self.node],
                )
                .and_then(|r| r.try_get(0))
                .map_err(|e| self.db_error(&e))?;
            if !got {
                return Err(LedgerError::NodeTaken {
                    url: self.url.clone(),
                    node: self.node.clone(),
                });
            }
        }
        Ok(client)
    }

    /// Brings the schema to `PG_SCHEMA_VERSION` in one transaction, under a lock that
    /// makes nodes starting together take turns.
    fn migrate(&self, client: &mut Client) -> Result<(), LedgerError> {
        let run = |client: &mut Client| -> Result<Result<(), LedgerError>, postgres::Error> {
            let mut tx = client.transaction()?;
            tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])?;
            tx.batch_execute(
                "CREATE TABLE IF NOT EXISTS cronmail_schema (version INTEGER NOT NULL)",
            )?;
            let version: i32 =
                if let Some(row) = tx.query_opt("SELECT version FROM cronmail_schema", &[])? {
                    row.try_get(0)?
                } else {
                    tx.execute("INSERT INTO cronmail_schema (version) VALUES (0)", &[])?;
                    0
                };
            if version > PG_SCHEMA_VERSION {
                return Ok(Err(LedgerError::TooNew {
                    path: self.url.clone().into(),
                    found: i64::from(version),
                    known: i64::from(PG_SCHEMA_VERSION),
                }));
            }
            for (i, step) in MIGRATIONS
                .iter()
                .enumerate()
                .skip(usize::try_from(version).unwrap_or(0))
            {
                tx.batch_execute(step)?;
                let next = i32::try_from(i + 1).unwrap_or(i32::MAX);
                tx.execute("UPDATE cronmail_schema SET version = $1", &[&next])?;
            }
            tx.commit()?;
            Ok(Ok(()))
        };
        run(client).map_err(|e| self.db_error(&e))?
    }

    /// Runs `f` on the connection, re-opening it first if it broke.
    fn with<T>(
        &self,
        f: impl FnOnce(&mut Client) -> Result<T, postgres::Error>,
    ) -> Result<T, LedgerError> {
        let mut guard = self
            .client
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if guard.as_ref().is_none_or(Client::is_closed) {
            *guard = None;
            let client = self.open()?;
            tracing::info!(node = %self.node, "connected to the ledger database again");
            *guard = Some(client);
        }
        let Some(client) = guard.as_mut() else {
            return Err(LedgerError::Db {
                url: self.url.clone(),
                error: "not connected".to_owned(),
            });
        };
        let result = f(client);
        if result.is_err() && client.is_closed() {
            *guard = None;
        }
        result.map_err(|e| self.db_error(&e))
    }
}

fn record(r: &Row) -> Result<Record, postgres::Error> {
    Ok(Record {
        key: Key {
            job: r.try_get::<_, String>(0)?.into(),
            scheduled_at: r.try_get(1)?,
        },
        state: State::parse(r.try_get(2)?),
        message_id: r.try_get(3)?,
        attempts: u32::try_from(r.try_get::<_, i32>(4)?).unwrap_or(0),
        next_attempt_at: r.try_get(5)?,
        last_error_class: r.try_get(6)?,
        last_reply: r.try_get(7)?,
        final_reply: r.try_get(8)?,
        updated_at: r.try_get(9)?,
        node: r.try_get(10)?,
    })
}

/// Seconds from `now` to `at`, for a lease measured on the database's clock.
fn secs_until(at: DateTime<Utc>, now: DateTime<Utc>) -> f64 {
    let ms = (at - now).num_milliseconds().max(0);
    // Millisecond precision is plenty for a lease; the cast cannot lose more.
    #[allow(clippy::cast_precision_loss)]
    let secs = ms as f64 / 1000.0;
    secs
}

impl Ledger for PgLedger {
    fn add_control(&self, control: &super::Control) -> Result<i64, LedgerError> {
        let (name, at) = control.action.parts();
        self.with(|c| {
            c.query_one(
                "INSERT INTO cronmail_controls (job, action, at, created_at) VALUES ($1, $2, $3, $4) RETURNING id",
                &[&control.job, &name, &at, &control.created_at],
            )
            .map(|r| r.get::<_, i64>(0))
        })
    }

    fn controls_after(&self, id: i64) -> Result<Vec<(i64, super::Control)>, LedgerError> {
        self.with(|c| {
            let rows = c.query(
                "SELECT id, job, action, at, created_at FROM cronmail_controls WHERE id > $1 ORDER BY id",
                &[&id],
            )?;
            Ok(rows
                .iter()
                .filter_map(|r| {
                    let action = super::Action::from_parts(
                        &r.get::<_, String>(2),
                        r.get::<_, Option<DateTime<Utc>>>(3),
                    )?;
                    Some((
                        r.get::<_, i64>(0),
                        super::Control {
                            job: r.get(1),
                            action,
                            created_at: r.get(4),
                        },
                    ))
                })
                .collect())
        })
    }

    fn claim(&self, items: &[(Key, String)], now: DateTime<Utc>) -> Result<Vec<bool>, LedgerError> {
        let mut seen = HashSet::new();
        let (mut jobs, mut times, mut ids) = (Vec::new(), Vec::new(), Vec::new());
        for (key, id) in items {
            if seen.insert(key) {
                jobs.push(&*key.job);
                times.push(key.scheduled_at);
                ids.push(id.as_str());
            }
        }
        // A claim whose reply was lost (the connection broke after the commit) reads as
        // refused when retried; the row then waits for its lease, and any node, this one
        // included, takes it over (`takeable`). Nothing is lost, and nothing sent twice.
        let won: HashSet<Key> = self.with(|c| {
            let rows = c.query(
                "INSERT INTO cronmail_occurrences
                     (job, scheduled_at, state, message_id, node, lease_until, created_at, updated_at)
                 SELECT j, t, 'pending', m, $4, now() + make_interval(secs => $5), $6, $6
                 FROM unnest($1::text[], $2::timestamptz[], $3::text[]) AS u(j, t, m)
                 ON CONFLICT (job, scheduled_at) DO NOTHING
                 RETURNING job, scheduled_at",
                &[&jobs, &times, &ids, &self.node, &self.lease_s, &now],
            )?;
            rows.iter()
                .map(|r| {
                    Ok(Key {
                        job: r.try_get::<_, String>(0)?.into(),
                        scheduled_at: r.try_get(1)?,
                    })
                })
                .collect()
        })?;
        let mut granted = HashSet::new();
        Ok(items
            .iter()
            .map(|(k, _)| won.contains(k) && granted.insert(k))
            .collect())
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
                "INSERT INTO cronmail_occurrences
                     (job, scheduled_at, state, message_id, final_reply, node, created_at, updated_at)
                 VALUES ($1, $2, 'skipped', $3, $4, $5, $6, $6) ON CONFLICT DO NOTHING",
                &[&&*key.job, &key.scheduled_at, &message_id, &reason, &self.node, &now],
            )
            .map(drop)
        })
    }

    fn start_attempt(&self, key: &Key, now: DateTime<Utc>) -> Result<Option<u32>, LedgerError> {
        self.with(|c| {
            let row = c.query_opt(
                "UPDATE cronmail_occurrences SET state = 'sending', attempts = attempts + 1,
                     node = $3, lease_until = now() + make_interval(secs => $4), updated_at = $5
                 WHERE job = $1 AND scheduled_at = $2 AND state IN ('pending', 'sending')
                     AND (node = $3 OR node IS NULL OR lease_until IS NULL OR lease_until < now())
                 RETURNING attempts",
                &[
                    &&*key.job,
                    &key.scheduled_at,
                    &self.node,
                    &self.lease_s,
                    &now,
                ],
            )?;
            row.map(|r| r.try_get::<_, i32>(0))
                .transpose()
                .map(|n| n.map(|n| u32::try_from(n).unwrap_or(0)))
        })
    }

    fn sent(&self, r: &super::Receipt) -> Result<(), LedgerError> {
        let recipients = i32::try_from(r.recipients).unwrap_or(i32::MAX);
        self.with(|c| {
            c.execute(
                "UPDATE cronmail_occurrences SET state = 'sent', final_reply = $3, next_attempt_at = NULL,
                     lease_until = NULL, node = $4, updated_at = $5, account = $6, recipients = $7
                 WHERE job = $1 AND scheduled_at = $2",
                &[
                    &&*r.key.job,
                    &r.key.scheduled_at,
                    &r.reply,
                    &self.node,
                    &r.at,
                    &&*r.account,
                    &recipients,
                ],
            )
            .map(drop)
        })
    }

    fn sent_since(
        &self,
        account: &str,
        since: DateTime<Utc>,
    ) -> Result<Vec<(DateTime<Utc>, u32)>, LedgerError> {
        self.with(|c| {
            let rows = c.query(
                "SELECT updated_at, COALESCE(recipients, 1) FROM cronmail_occurrences
                 WHERE state = 'sent' AND account = $1 AND updated_at >= $2 ORDER BY updated_at",
                &[&account, &since],
            )?;
            rows.iter()
                .map(|r| {
                    Ok((
                        r.try_get(0)?,
                        u32::try_from(r.try_get::<_, i32>(1)?).unwrap_or(0),
                    ))
                })
                .collect()
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
        // This node keeps the retry until `lease` after it is due; then anyone may.
        let hold = secs_until(next_at, now) + self.lease_s;
        self.with(|c| {
            c.execute(
                "UPDATE cronmail_occurrences SET state = 'pending', last_error_class = $3, last_reply = $4,
                     next_attempt_at = $5, node = $6, lease_until = now() + make_interval(secs => $7),
                     updated_at = $8, last_error_at = $8
                 WHERE job = $1 AND scheduled_at = $2",
                &[&&*key.job, &key.scheduled_at, &class, &reply, &next_at, &self.node, &hold, &now],
            )
            .map(drop)
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
                "UPDATE cronmail_occurrences SET state = $3, last_error_class = $4, last_reply = $5,
                     next_attempt_at = NULL, lease_until = NULL, node = $6, updated_at = $7, last_error_at = $7
                 WHERE job = $1 AND scheduled_at = $2",
                &[&&*key.job, &key.scheduled_at, &state.name(), &class, &reply, &self.node, &now],
            )
            .map(drop)
        })
    }

    fn unfinished(&self) -> Result<Vec<Record>, LedgerError> {
        self.with(|c| {
            c.query(
                &format!(
                    "SELECT {COLUMNS} FROM cronmail_occurrences
                     WHERE state IN ('pending', 'sending')
                       AND (node = $1 OR node IS NULL OR lease_until IS NULL OR lease_until < now())
                     ORDER BY scheduled_at, job"
                ),
                &[&self.node],
            )?
            .iter()
            .map(record)
            .collect()
        })
    }

    fn last_handled(&self) -> Result<HashMap<String, DateTime<Utc>>, LedgerError> {
        self.with(|c| {
            c.query(
                "SELECT job, MAX(scheduled_at) FROM cronmail_occurrences GROUP BY job",
                &[],
            )?
            .iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
            .collect::<Result<Vec<_>, postgres::Error>>()
            .map(super::fold_handled)
        })
    }

    fn history(&self, job: Option<&str>, limit: usize) -> Result<Vec<Record>, LedgerError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.with(|c| {
            c.query(
                &format!(
                    "SELECT {COLUMNS} FROM cronmail_occurrences
                     WHERE $1::text IS NULL OR job = $1 OR left(job, length($1) + 1) = $1 || '/'
                     ORDER BY scheduled_at DESC, job LIMIT $2"
                ),
                &[&job, &limit],
            )?
            .iter()
            .map(record)
            .collect()
        })
    }

    fn summary(&self) -> Result<HashMap<String, JobSummary>, LedgerError> {
        self.with(|c| {
            let mut out: HashMap<String, JobSummary> = HashMap::new();
            for r in c.query(
                "SELECT DISTINCT ON (job) job, scheduled_at, message_id FROM cronmail_occurrences
                 WHERE state = 'sent' ORDER BY job, scheduled_at DESC",
                &[],
            )? {
                out.entry(r.try_get(0)?).or_default().last_sent =
                    Some((r.try_get(1)?, r.try_get(2)?));
            }
            for r in c.query(
                "SELECT DISTINCT ON (job) job, COALESCE(last_error_at, updated_at), last_error_class,
                     COALESCE(last_reply, '')
                 FROM cronmail_occurrences WHERE last_error_class IS NOT NULL
                 ORDER BY job, COALESCE(last_error_at, updated_at) DESC",
                &[],
            )? {
                out.entry(r.try_get(0)?).or_default().last_failure =
                    Some((r.try_get(1)?, r.try_get(2)?, r.try_get(3)?));
            }
            for r in c.query(
                "SELECT job, COUNT(*) FROM cronmail_occurrences
                 WHERE state IN ('pending', 'sending') GROUP BY job",
                &[],
            )? {
                out.entry(r.try_get(0)?).or_default().pending =
                    u32::try_from(r.try_get::<_, i64>(1)?).unwrap_or(u32::MAX);
            }
            Ok(super::fold_summary(out))
        })
    }

    fn get(&self, key: &Key) -> Result<Option<Record>, LedgerError> {
        self.with(|c| {
            c.query_opt(
                &format!(
                    "SELECT {COLUMNS} FROM cronmail_occurrences WHERE job = $1 AND scheduled_at = $2"
                ),
                &[&&*key.job, &key.scheduled_at],
            )?
            .as_ref()
            .map(record)
            .transpose()
        })
    }

    fn shared(&self) -> bool {
        true
    }

    fn takeable(&self, now: DateTime<Utc>) -> Result<Vec<Key>, LedgerError> {
        self.with(|c| {
            c.query(
                "SELECT job, scheduled_at FROM cronmail_occurrences
                 WHERE state IN ('pending', 'sending')
                   AND (lease_until IS NULL OR lease_until < now())
                   AND (next_attempt_at IS NULL OR next_attempt_at <= $1)
                 ORDER BY scheduled_at, job LIMIT 1000",
                &[&now],
            )?
            .iter()
            .map(|r| {
                Ok(Key {
                    job: r.try_get::<_, String>(0)?.into(),
                    scheduled_at: r.try_get(1)?,
                })
            })
            .collect()
        })
    }
}
