//! Per-recipient lists: a job with `recipients_file` sends one message per CSV row,
//! each its own ledger entry and Message-ID, read again at each occurrence; mistakes of
//! the file are located at `check`.

use std::collections::BTreeSet;
use std::time::Duration;

use chrono::{DateTime, Utc};
use cronmail::ledger::{Key, Ledger as _, Receipt, State};

use crate::support::*;

const PASSWORD: &str = "s3cret-pw";

fn utc(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

const RENT: &str = r#"
[[job]]
name = "rent"
schedule = "0 9 1 * *"
recipients_file = "tenants.csv"
cc = ["landlord@example.com"]
subject = "Rent for flat {{ row.flat }}"
body = "Dear {{ row.name }}, the rent of {{ row.rent }} is due on {{ date }}."
list_unsubscribe = "https://example.com/unsubscribe?flat={{ row.flat }}"
"#;

fn with_tenants(server: &SmtpServer, pki: &Pki, jobs: &str, csv: &str) -> ConfigDir {
    let cfg = service_config(server, pki, PASSWORD, JobsToml::new().job(jobs));
    std::fs::write(cfg.dir.path().join("tenants.csv"), csv).unwrap();
    cfg
}

#[test]
fn check_locates_the_mistakes_of_a_recipients_file() {
    let cfg = JobsToml::new().outbox().job(RENT).write();
    let csv = cfg.dir.path().join("tenants.csv");
    std::fs::write(
        &csv,
        "email,name,flat,rent\nkim@example.com,Kim,2B,900\nnot-an-address,X,3A,800\njo@example.com,Jo,4D,650\nKim@example.com,Kim,2C,700\n",
    )
    .unwrap();
    let out = cronmail(&cfg.path, &["check"], &[]);
    assert_eq!(out.status.code(), Some(78), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains(
            "tenants.csv:3:1: job `rent`: recipients_file: `not-an-address` is not a valid address"
        ),
        "{err}"
    );
    assert!(err.contains("tenants.csv:5:1: job `rent`: recipients_file: duplicate key `kim@example.com` (first on line 2)"), "{err}");

    // A template that uses a column the file does not have.
    std::fs::write(&csv, "email,name,flat\nkim@example.com,Kim,2B\n").unwrap();
    let out = cronmail(&cfg.path, &["check"], &[]);
    assert_eq!(out.status.code(), Some(78));
    assert!(
        stderr(&out).contains("undefined variable `row.rent`"),
        "{}",
        stderr(&out)
    );

    std::fs::write(&csv, "mail,name\nkim@example.com,Kim\n").unwrap();
    let out = cronmail(&cfg.path, &["check"], &[]);
    assert!(stderr(&out).contains("tenants.csv:1:1: job `rent`: recipients_file: no `email` column; the header is `mail,name`"), "{}", stderr(&out));

    std::fs::write(&csv, "email,name,flat,rent\nkim@example.com,Kim,2B,900\n").unwrap();
    let text = std::fs::read_to_string(&cfg.path).unwrap();
    std::fs::write(
        &cfg.path,
        text.replace("cc = [", "to = [\"x@example.com\"]\ncc = ["),
    )
    .unwrap();
    let out = cronmail(&cfg.path, &["check"], &[]);
    assert!(
        stderr(&out).contains("with `recipients_file`, each row is the message's To"),
        "{}",
        stderr(&out)
    );
    std::fs::write(
        &cfg.path,
        text.replace("https://example.com", "http://example.com"),
    )
    .unwrap();
    let out = cronmail(&cfg.path, &["check"], &[]);
    assert!(
        stderr(&out).contains("it must be a `mailto:` or `https://` URL"),
        "{}",
        stderr(&out)
    );
}

#[tokio::test(start_paused = true)]
async fn each_row_gets_its_own_message_and_an_edit_of_the_file_takes_effect_at_the_next_occurrence()
{
    let pki = Pki::new();
    let server = ServerSpec::starttls(&pki).user("alice", PASSWORD).start();
    let cfg = with_tenants(
        &server,
        &pki,
        RENT,
        "email,name,flat,rent\nkim@example.com,Kim Lee,2B,900\njo@example.com,Jo,4D,650\nal@example.com,Al,1A,700\n",
    );
    let daemon = InProcess::start(&cfg, utc("2026-03-01T08:59:58Z"));
    tokio::time::sleep(Duration::from_secs(10)).await;
    let messages = server.messages();
    assert_eq!(messages.len(), 3);
    let kim = messages
        .iter()
        .find(|m| m.data.contains("To: \"Kim Lee\" <kim@example.com>"))
        .unwrap();
    assert_eq!(
        kim.rcpt_tos.iter().collect::<BTreeSet<_>>(),
        ["kim@example.com", "landlord@example.com"]
            .iter()
            .map(ToString::to_string)
            .collect::<BTreeSet<_>>()
            .iter()
            .collect()
    );
    assert!(
        kim.data.contains("Subject: Rent for flat 2B"),
        "{}",
        kim.data
    );
    assert!(
        kim.data
            .contains("Dear Kim Lee, the rent of 900 is due on 2026-03-01."),
        "{}",
        kim.data
    );
    assert!(
        kim.data
            .contains("List-Unsubscribe: <https://example.com/unsubscribe?flat=2B>"),
        "{}",
        kim.data
    );
    assert!(
        kim.data
            .contains("List-Unsubscribe-Post: List-Unsubscribe=One-Click"),
        "{}",
        kim.data
    );
    let ids: BTreeSet<String> = received_ids(&server).into_iter().collect();
    assert_eq!(ids.len(), 3, "each row its own Message-ID");
    let l = ledger(&cfg.dir.path().join("state"));
    let kim_key = Key::row("rent", "kim@example.com", utc("2026-03-01T09:00:00Z"));
    let rec = l.get(&kim_key).unwrap().unwrap();
    assert_eq!(rec.state, State::Sent);
    assert!(
        kim.data
            .contains(&format!("Message-ID: <{}>", rec.message_id))
    );
    let history = cronmail(&cfg.path, &["history", "--job", "rent"], &[]);
    assert_eq!(
        stdout(&history)
            .lines()
            .filter(|l| l.contains("\tsent\t"))
            .count(),
        3,
        "{}",
        stdout(&history)
    );
    assert!(
        stdout(&history).contains("rent/jo@example.com"),
        "{}",
        stdout(&history)
    );

    // Jo moves out and Mia moves in: the next month's reminder follows the file.
    std::fs::write(
        cfg.dir.path().join("tenants.csv"),
        "email,name,flat,rent\nkim@example.com,Kim Lee,2B,920\nmia@example.com,Mia,4D,650\nal@example.com,Al,1A,700\n",
    )
    .unwrap();
    tokio::time::sleep(Duration::from_secs(31 * 24 * 3600)).await;
    let april: Vec<_> = server.messages().into_iter().skip(3).collect();
    let to: BTreeSet<&str> = april.iter().map(|m| m.rcpt_tos[0].as_str()).collect();
    assert_eq!(
        to,
        BTreeSet::from(["al@example.com", "kim@example.com", "mia@example.com"])
    );
    assert!(april.iter().any(|m| m.data.contains("the rent of 920")));
    daemon.stop().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn after_a_crash_halfway_through_400_rows_the_rest_are_sent_and_no_row_twice() {
    let pki = Pki::new();
    let server = ServerSpec::starttls(&pki).user("alice", PASSWORD).start();
    let csv: String = std::iter::once("email,name,flat,rent\n".to_owned())
        .chain((0..400).map(|i| format!("t{i}@example.com,T{i},{i},500\n")))
        .collect();
    let cfg = with_tenants(&server, &pki, RENT, &csv);
    // The run that crashed: it claimed the 400 rows of 1 March, sent 200, and one was
    // in the middle of its send.
    let at = utc("2026-03-01T09:00:00Z");
    let state = cfg.dir.path().join("state");
    std::fs::create_dir_all(&state).unwrap();
    {
        let l = ledger(&state);
        let claims: Vec<_> = (0..400)
            .map(|i| {
                (
                    Key::row("rent", &format!("t{i}@example.com"), at),
                    format!("rent.{i}@example.com"),
                )
            })
            .collect();
        l.claim(&claims, at).unwrap();
        for (key, _) in &claims[..200] {
            l.start_attempt(key, at).unwrap();
            l.sent(&Receipt::new(key.clone(), "250 ok", at)).unwrap();
        }
        l.start_attempt(&claims[200].0, at).unwrap();
    }
    let daemon = InProcess::start(&cfg, utc("2026-03-01T09:05:00Z"));
    tokio::time::sleep(Duration::from_secs(60)).await;
    let got: Vec<String> = server
        .messages()
        .iter()
        .map(|m| m.rcpt_tos[0].clone())
        .collect();
    let unique: BTreeSet<&String> = got.iter().collect();
    assert_eq!(got.len(), 200, "the 200 left, each once");
    assert_eq!(unique.len(), 200);
    assert!(got.iter().all(|t| {
        t.trim_start_matches('t')
            .trim_end_matches("@example.com")
            .parse::<u32>()
            .unwrap()
            >= 200
    }));
    let l = ledger(&state);
    let sent = l
        .history(Some("rent"), 1000)
        .unwrap()
        .into_iter()
        .filter(|r| r.state == State::Sent)
        .count();
    assert_eq!(sent, 400);
    daemon.stop().await.unwrap();
}

#[test]
fn check_warns_when_a_list_exceeds_what_its_provider_allows_a_day() {
    let cfg = JobsToml::new()
        .section("[smtp]\nprovider = \"gmail\"\nusername = \"me@gmail.com\"\npassword_env = \"PW\"")
        .job(RENT)
        .write();
    let csv: String = std::iter::once("email,name,flat,rent\n".to_owned())
        .chain((0..600).map(|i| format!("t{i}@example.com,T{i},{i},500\n")))
        .collect();
    std::fs::write(cfg.dir.path().join("tenants.csv"), csv).unwrap();
    let out = cronmail(&cfg.path, &["check"], &[("PW", "abcdabcdabcdabcd")]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("job `rent`: 600 rows make 1200 recipients per occurrence, more than the 500 a day the provider of account `default` documents: set `max_per_day`"),
        "{}",
        stderr(&out)
    );
}
