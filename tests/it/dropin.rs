//! Jobs in `jobs.d/*.toml` beside jobs.toml: loaded in name order after jobs.toml's,
//! jobs only, names unique across the files, seen by `check`, the daemon and a reload,
//! and valid under the same JSON Schema.

use std::time::Duration;

use crate::support::*;

fn job(name: &str, schedule: &str) -> String {
    format!(
        "[[job]]\nname = \"{name}\"\nschedule = \"{schedule}\"\nto = [\"a@example.com\"]\nsubject = \"{name}\"\nbody = \"b\"\n"
    )
}

fn with_dropins(files: &[(&str, String)]) -> ConfigDir {
    let cfg = JobsToml::new()
        .top("timezone = \"UTC\"")
        .top("state_dir = \"state\"")
        .outbox()
        .job(&job("main", "0 9 * * *"))
        .write();
    let dir = cfg.dir.path().join("jobs.d");
    std::fs::create_dir_all(&dir).unwrap();
    for (name, text) in files {
        std::fs::write(dir.join(name), text).unwrap();
    }
    cfg
}

#[test]
fn check_and_next_see_the_jobs_of_jobs_d_in_name_order() {
    let cfg = with_dropins(&[
        ("20-billing.toml", job("invoices", "0 8 1 * *")),
        (
            "10-backup.toml",
            format!(
                "#:schema ../jobs.schema.json\n{}{}",
                job("backup", "0 2 * * *"),
                job("rotate", "0 3 * * SUN")
            ),
        ),
        ("notes.txt", "not a job file".to_owned()),
        (".hidden.toml", "this is not TOML".to_owned()),
    ]);
    let out = cronmail(&cfg.path, &["check"], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("ok, 4 jobs (4 enabled)"),
        "{}",
        stdout(&out)
    );
    // `check` lists each job's next occurrence in the order of the files.
    let text = stdout(&out);
    let names: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("next: "))
        .filter_map(|l| l.split('\t').next())
        .collect();
    assert_eq!(
        names,
        ["main", "backup", "rotate", "invoices"],
        "{}",
        stdout(&out)
    );
}

#[test]
fn a_duplicate_name_across_files_names_both_places_and_sections_stay_in_jobs_toml() {
    let cfg = with_dropins(&[
        ("10-a.toml", format!("\n\n{}", job("main", "0 7 * * *"))),
        ("20-b.toml", format!("[smtp]\nhost = \"smtp.example.com\"\n\n{}", job("ok", "0 7 * * *"))),
        ("30-c.toml", "[[job]]\nname = \"broken\"\nschedule = \"61 9 * * *\"\nto = [\"a@example.com\"]\nsubject = \"s\"\nbody = \"b\"\n".to_owned()),
    ]);
    let out = cronmail(&cfg.path, &["check"], &[]);
    assert_eq!(out.status.code(), Some(78), "{}", stderr(&out));
    let err = stderr(&out);
    let main = cfg.path.display().to_string();
    assert!(
        err.contains(&format!(
            "jobs.d/10-a.toml:4:8: job `main`: duplicate job name (first defined on {main}:"
        )),
        "{err}"
    );
    assert!(
        err.contains(
            "jobs.d/20-b.toml:1:2: `smtp` does not belong in a jobs.d file: only [[job]] tables do"
        ),
        "{err}"
    );
    assert!(
        err.contains("jobs.d/30-c.toml:3:12: job `broken`: invalid schedule `61 9 * * *`: minute 61 is out of range 0-59"),
        "{err}"
    );
}

#[test]
fn a_reload_picks_up_a_dropped_in_file() {
    let cfg = with_dropins(&[]);
    let daemon = Daemon::start(&cfg.path, &[]);
    daemon.wait_log("cronmail started", 1, Duration::from_secs(10));
    std::fs::write(
        cfg.dir.path().join("jobs.d/50-tick.toml"),
        job("tick", "* * * * * *"),
    )
    .unwrap();
    daemon.signal(libc_sighup());
    daemon.wait_log("configuration reloaded", 1, Duration::from_secs(10));
    let outbox = cfg.dir.path().join("outbox");
    let tick_sent = || {
        std::fs::read_dir(&outbox).is_ok_and(|d| {
            d.filter_map(Result::ok)
                .any(|e| e.file_name().to_string_lossy().starts_with("tick."))
        })
    };
    assert!(wait_until(Duration::from_secs(10), tick_sent));
    daemon.stop();
}
