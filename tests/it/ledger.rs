//! The ledger contract, as one suite any backend must pass, and old schemas that must
//! keep opening.

use chrono::{DateTime, Utc};
use std::time::Duration;

use cronmail::config::PgConfig;
use cronmail::ledger::{
    Key, Ledger, LedgerError, PgLedger, Receipt, SCHEMA_VERSION, SqliteLedger, State,
};

use crate::support::PgServer;

fn t(s: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(1_800_000_000 + s, 0).unwrap()
}

fn key(job: &str, s: i64) -> Key {
    Key {
        job: job.into(),
        scheduled_at: t(s),
    }
}

/// What sending limits count: deliveries through an account, with their recipients.
/// (After `suite`'s first delivery, of `a` at `t(3)` through `default`.)
fn limits(l: &dyn Ledger) {
    l.claim(&[(key("lim", 0), "lim.0@x".into())], t(0)).unwrap();
    l.start_attempt(&key("lim", 0), t(5)).unwrap();
    l.sent(&Receipt {
        account: "billing".into(),
        recipients: 3,
        ..Receipt::new(key("lim", 0), "250 ok", t(6))
    })
    .unwrap();
    assert_eq!(l.sent_since("billing", t(6)).unwrap(), [(t(6), 3)]);
    assert_eq!(l.sent_since("billing", t(7)).unwrap(), []);
    assert_eq!(l.sent_since("default", t(0)).unwrap(), [(t(3), 1)]);
}

/// The contract every backend passes.
pub fn suite(l: &dyn Ledger) {
    // A claim is made once; a second claim of the same occurrence is refused.
    let fresh = l
        .claim(
            &[
                (key("a", 0), "a.0@x".into()),
                (key("a", 60), "a.60@x".into()),
            ],
            t(0),
        )
        .unwrap();
    assert_eq!(fresh, [true, true]);
    assert_eq!(
        l.claim(
            &[(key("a", 0), "a.0@x".into()), (key("b", 0), "b.0@x".into())],
            t(1)
        )
        .unwrap(),
        [false, true]
    );

    // pending -> sending -> sent, attempts counted.
    assert_eq!(l.start_attempt(&key("a", 0), t(2)).unwrap(), Some(1));
    l.sent(&Receipt::new(key("a", 0), "250 ok", t(3))).unwrap();
    // A sent occurrence is never attempted again.
    assert_eq!(l.start_attempt(&key("a", 0), t(4)).unwrap(), None);
    limits(l);

    let r = l.get(&key("a", 0)).unwrap().unwrap();
    assert_eq!(
        (
            r.state,
            r.attempts,
            r.final_reply.as_deref(),
            r.message_id.as_str()
        ),
        (State::Sent, 1, Some("250 ok"), "a.0@x")
    );

    // A transient failure goes back to pending with its next attempt; a second try.
    assert_eq!(l.start_attempt(&key("a", 60), t(60)).unwrap(), Some(1));
    l.retry_later(&key("a", 60), "transient", "451 later", t(90), t(61))
        .unwrap();
    let r = l.get(&key("a", 60)).unwrap().unwrap();
    assert_eq!(
        (r.state, r.next_attempt_at, r.last_error_class.as_deref()),
        (State::Pending, Some(t(90)), Some("transient"))
    );
    assert_eq!(l.start_attempt(&key("a", 60), t(90)).unwrap(), Some(2));

    // An attempt in progress counts as unfinished: resumed at start-up.
    let unfinished: Vec<_> = l
        .unfinished()
        .unwrap()
        .into_iter()
        .map(|r| (r.key, r.state))
        .collect();
    assert_eq!(
        unfinished,
        [
            (key("b", 0), State::Pending),
            (key("a", 60), State::Sending)
        ]
    );

    l.give_up(&key("a", 60), State::Failed, "permanent", "550 no", t(91))
        .unwrap();
    l.give_up(&key("b", 0), State::Expired, "connect", "refused", t(92))
        .unwrap();
    assert!(l.unfinished().unwrap().is_empty());

    // Skips are recorded once, and never overwrite a known occurrence.
    l.skip(&key("a", 120), "a.120@x", "missed", t(200)).unwrap();
    l.skip(&key("a", 0), "a.0@x", "missed", t(200)).unwrap();
    assert_eq!(l.get(&key("a", 0)).unwrap().unwrap().state, State::Sent);
    assert_eq!(
        l.get(&key("a", 120)).unwrap().unwrap().state,
        State::Skipped
    );

    // Where catch-up starts: the newest occurrence of each job, in any state.
    let handled = l.last_handled().unwrap();
    assert_eq!(handled.get("a"), Some(&t(120)));
    assert_eq!(handled.get("b"), Some(&t(0)));

    let h = l.history(Some("a"), 2).unwrap();
    assert_eq!(
        h.iter().map(|r| r.key.scheduled_at).collect::<Vec<_>>(),
        [t(120), t(60)]
    );
    let s = l.summary().unwrap();
    assert_eq!(s["a"].last_sent, Some((t(0), "a.0@x".to_owned())));
    assert_eq!(
        s["a"].last_failure.as_ref().map(|f| f.1.as_str()),
        Some("permanent")
    );
    assert_eq!(s["b"].pending, 0);
    assert!(l.get(&key("zzz", 0)).unwrap().is_none());

    // The last failure is shown at the time it failed, not when it was later sent.
    l.claim(&[(key("c", 0), "c.0@x".into())], t(0)).unwrap();
    l.start_attempt(&key("c", 0), t(0)).unwrap();
    l.retry_later(&key("c", 0), "transient", "451 later", t(30), t(5))
        .unwrap();
    l.start_attempt(&key("c", 0), t(30)).unwrap();
    l.sent(&Receipt::new(key("c", 0), "250 ok", t(31))).unwrap();
    let s = l.summary().unwrap();
    assert_eq!(
        s["c"].last_failure,
        Some((t(5), "transient".to_owned(), "451 later".to_owned()))
    );
}

#[test]
fn sqlite_passes_the_ledger_suite() {
    let dir = tempfile::tempdir().unwrap();
    suite(&SqliteLedger::open_exclusive(dir.path()).unwrap());
}

fn pg_config(server: &PgServer, node: &str, lease: Duration) -> PgConfig {
    PgConfig {
        url: server.url(),
        password: None,
        node: node.to_owned(),
        lease,
        poll: Duration::from_secs(1),
        tls_required: false,
        extra_roots: Vec::new(),
    }
}

#[test]
fn postgres_passes_the_ledger_suite() {
    let server = PgServer::start(None);
    let l = PgLedger::connect(
        &pg_config(&server, "a", Duration::from_secs(60)),
        None,
        true,
    )
    .unwrap();
    suite(&l);
    let r = l.get(&key("a", 0)).unwrap().unwrap();
    assert_eq!(
        r.node.as_deref(),
        Some("a"),
        "the ledger says which node sent it"
    );
}

#[test]
fn postgres_nodes_claim_once_and_take_over_only_after_the_lease() {
    let server = PgServer::start(None);
    let long = Duration::from_secs(3600);
    let a = PgLedger::connect(&pg_config(&server, "a", long), None, true).unwrap();
    let b = PgLedger::connect(&pg_config(&server, "b", long), None, true).unwrap();

    // Both nodes fire the same occurrence: exactly one claim wins.
    let items = [(key("j", 0), "j.0@x".to_owned())];
    assert_eq!(a.claim(&items, t(0)).unwrap(), [true]);
    assert_eq!(b.claim(&items, t(0)).unwrap(), [false]);
    assert_eq!(
        a.claim(&items, t(0)).unwrap(),
        [false],
        "claimed once, even by the same node"
    );
    // The other node cannot start it while the lease holds, nor see it as takeable.
    assert_eq!(b.start_attempt(&key("j", 0), t(1)).unwrap(), None);
    assert!(b.takeable(t(1)).unwrap().is_empty());
    assert_eq!(a.start_attempt(&key("j", 0), t(1)).unwrap(), Some(1));
    assert_eq!(b.start_attempt(&key("j", 0), t(1)).unwrap(), None);

    // A node with a zero lease "dies" mid-send: the other takes over at once.
    let dying = PgLedger::connect(&pg_config(&server, "c", Duration::ZERO), None, true).unwrap();
    let items = [(key("k", 0), "k.0@x".to_owned())];
    assert_eq!(dying.claim(&items, t(0)).unwrap(), [true]);
    assert_eq!(dying.start_attempt(&key("k", 0), t(0)).unwrap(), Some(1));
    std::thread::sleep(Duration::from_millis(20)); // the database's clock must pass the lease
    assert_eq!(b.takeable(t(2)).unwrap(), [key("k", 0)]);
    assert_eq!(b.start_attempt(&key("k", 0), t(2)).unwrap(), Some(2));
    b.sent(&Receipt::new(key("k", 0), "250 ok", t(3))).unwrap();
    let r = b.get(&key("k", 0)).unwrap().unwrap();
    assert_eq!(
        (r.state, r.attempts, r.node.as_deref()),
        (State::Sent, 2, Some("b"))
    );
    assert_eq!(
        r.message_id, "k.0@x",
        "a takeover resends with the same Message-ID"
    );

    // A retry stays with its node until due plus the lease.
    let items = [(key("r", 0), "r.0@x".to_owned())];
    assert_eq!(dying.claim(&items, t(0)).unwrap(), [true]);
    dying.start_attempt(&key("r", 0), t(0)).unwrap();
    dying
        .retry_later(&key("r", 0), "transient", "451", t(10), t(0))
        .unwrap();
    assert!(b.takeable(t(5)).unwrap().is_empty(), "not due yet");
    std::thread::sleep(Duration::from_millis(20));
    // Due by the node's clock, lease (zero) lapsed by the database's.
    assert!(
        b.takeable(t(0) + chrono::Duration::seconds(10))
            .unwrap()
            .is_empty(),
        "held for 10 s of database time"
    );
}

#[test]
fn postgres_refuses_a_second_daemon_with_the_same_node_name() {
    let server = PgServer::start(None);
    let cfg = pg_config(&server, "same", Duration::from_secs(60));
    let first = PgLedger::connect(&cfg, None, true).unwrap();
    let err = PgLedger::connect(&cfg, None, true).err().unwrap();
    assert!(matches!(err, LedgerError::NodeTaken { .. }), "{err}");
    // Readers (status, history) do not take the lock.
    PgLedger::connect(&cfg, None, false).unwrap();
    drop(first);
    PgLedger::connect(&cfg, None, true).unwrap();
}

#[test]
fn postgres_migrations_from_nodes_starting_together_do_not_race() {
    let server = PgServer::start(None);
    let cfgs: Vec<_> = (0..6)
        .map(|i| pg_config(&server, &format!("n{i}"), Duration::from_secs(60)))
        .collect();
    let handles: Vec<_> = cfgs
        .into_iter()
        .map(|cfg| std::thread::spawn(move || PgLedger::connect(&cfg, None, true).map(drop)))
        .collect();
    for h in handles {
        h.join().unwrap().unwrap();
    }
    let mut c = server.client();
    let version: i32 = c
        .query_one("SELECT version FROM cronmail_schema", &[])
        .unwrap()
        .get(0);
    let rows: i64 = c
        .query_one("SELECT count(*) FROM cronmail_schema", &[])
        .unwrap()
        .get(0);
    assert_eq!((version, rows), (cronmail::ledger::PG_SCHEMA_VERSION, 1));
}

#[test]
fn sqlite_survives_reopening() {
    let dir = tempfile::tempdir().unwrap();
    {
        let l = SqliteLedger::open_exclusive(dir.path()).unwrap();
        l.claim(&[(key("a", 0), "id".into())], t(0)).unwrap();
        l.start_attempt(&key("a", 0), t(0)).unwrap();
        l.sent(&Receipt::new(key("a", 0), "250", t(0))).unwrap();
    }
    let l = SqliteLedger::open_exclusive(dir.path()).unwrap();
    assert_eq!(l.get(&key("a", 0)).unwrap().unwrap().state, State::Sent);
}

#[test]
fn the_lock_is_exclusive_and_released_on_drop() {
    let dir = tempfile::tempdir().unwrap();
    let first = SqliteLedger::open_exclusive(dir.path()).unwrap();
    let err = SqliteLedger::open_exclusive(dir.path())
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("another `cronmail run`"), "{err}");
    drop(first);
    SqliteLedger::open_exclusive(dir.path()).unwrap();
}

/// Every released schema, as a file written by that release, must open and read.
#[test]
fn released_schema_fixtures_open() {
    for version in 1..=SCHEMA_VERSION {
        fixture_opens(version);
    }
}

fn fixture_opens(version: i64) {
    let fixture = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join(format!("tests/fixtures/ledger-v{version}.sqlite3"));
    assert!(
        fixture.exists(),
        "schema version {version} needs its fixture: {}",
        fixture.display()
    );
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("ledger.sqlite3");
    std::fs::copy(&fixture, &copy).unwrap();
    let l = SqliteLedger::open_at(&copy).unwrap();
    let r = l
        .get(&key("weekly-report", 0))
        .unwrap()
        .expect("the fixture's row");
    assert_eq!(
        (r.state, r.attempts, r.message_id.as_str()),
        (State::Sent, 1, "weekly-report.1800000000.abc@example.com")
    );
    assert_eq!(l.unfinished().unwrap().len(), 1);
    // And it is writable after opening.
    l.claim(
        &[(key("weekly-report", 604_800), "next".into())],
        t(604_800),
    )
    .unwrap();
}

/// Writes the fixture of the current schema version. Run once per version, with
/// `cargo test --test it write_fixture -- --ignored`, and commit the file.
#[test]
#[ignore = "writes tests/fixtures; run by hand when a schema version is released"]
fn write_fixture() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join(format!("tests/fixtures/ledger-v{SCHEMA_VERSION}.sqlite3"));
    let _ = std::fs::remove_file(&path);
    let l = SqliteLedger::open_at(&path).unwrap();
    l.claim(
        &[
            (
                key("weekly-report", 0),
                "weekly-report.1800000000.abc@example.com".into(),
            ),
            (
                key("weekly-report", 60),
                "weekly-report.1800000060.def@example.com".into(),
            ),
        ],
        t(0),
    )
    .unwrap();
    l.start_attempt(&key("weekly-report", 0), t(0)).unwrap();
    l.sent(&Receipt::new(key("weekly-report", 0), "250 2.0.0 OK", t(1)))
        .unwrap();
    l.start_attempt(&key("weekly-report", 60), t(60)).unwrap();
    l.retry_later(
        &key("weekly-report", 60),
        "transient",
        "451 later",
        t(90),
        t(61),
    )
    .unwrap();
    drop(l);
    // A single file: fold the WAL in.
    let c = rusqlite::Connection::open(&path).unwrap();
    c.pragma_update(None, "journal_mode", "DELETE").unwrap();
}
