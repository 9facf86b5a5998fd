//! The ledger contract, as one suite any backend must pass, and old schemas that must
//! keep opening.

use chrono::{DateTime, Utc};
use cronmail::ledger::{Key, Ledger, SCHEMA_VERSION, SqliteLedger, State};

fn t(s: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(1_800_000_000 + s, 0).unwrap()
}

fn key(job: &str, s: i64) -> Key {
    Key {
        job: job.to_owned(),
        scheduled_at: t(s),
    }
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
    assert_eq!(l.start_attempt(&key("a", 0), t(2)).unwrap(), 1);
    l.sent(&key("a", 0), "250 ok", t(3)).unwrap();
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
    assert_eq!(l.start_attempt(&key("a", 60), t(60)).unwrap(), 1);
    l.retry_later(&key("a", 60), "transient", "451 later", t(90), t(61))
        .unwrap();
    let r = l.get(&key("a", 60)).unwrap().unwrap();
    assert_eq!(
        (r.state, r.next_attempt_at, r.last_error_class.as_deref()),
        (State::Pending, Some(t(90)), Some("transient"))
    );
    assert_eq!(l.start_attempt(&key("a", 60), t(90)).unwrap(), 2);

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
}

#[test]
fn sqlite_passes_the_ledger_suite() {
    let dir = tempfile::tempdir().unwrap();
    suite(&SqliteLedger::open_exclusive(dir.path()).unwrap());
}

#[test]
fn sqlite_survives_reopening() {
    let dir = tempfile::tempdir().unwrap();
    {
        let l = SqliteLedger::open_exclusive(dir.path()).unwrap();
        l.claim(&[(key("a", 0), "id".into())], t(0)).unwrap();
        l.start_attempt(&key("a", 0), t(0)).unwrap();
        l.sent(&key("a", 0), "250", t(0)).unwrap();
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
    assert_eq!(
        SCHEMA_VERSION, 1,
        "a new schema version needs its fixture in tests/fixtures/"
    );
    let fixture =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/ledger-v1.sqlite3");
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

/// Writes the v1 fixture. Run once per schema version, with
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
    l.sent(&key("weekly-report", 0), "250 2.0.0 OK", t(1))
        .unwrap();
    drop(l);
    // A single file: fold the WAL in.
    let c = rusqlite::Connection::open(&path).unwrap();
    c.pragma_update(None, "journal_mode", "DELETE").unwrap();
}
