//! jobs.toml for a test: `ConfigDir` (a file in its own folder) and `JobsToml`, the one
//! builder the tests write configurations with, and the literal job most tests send.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use super::{cronmail, stderr};

/// A jobs.toml in its own folder.
pub struct ConfigDir {
    pub dir: tempfile::TempDir,
    pub path: PathBuf,
}

impl ConfigDir {
    pub fn new(text: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("jobs.toml");
        std::fs::write(&path, text).unwrap();
        ConfigDir { dir, path }
    }
}

/// The one jobs.toml builder. Top-level keys, then `[smtp]` (or `[outbox]`), then other
/// sections, then the jobs, whatever order they were added in.
#[must_use]
#[derive(Clone, Default)]
pub struct JobsToml {
    top: String,
    smtp: Option<String>,
    user: Option<String>,
    sections: String,
    jobs: String,
}

impl JobsToml {
    /// With the usual sender, `FROM`.
    pub fn new() -> Self {
        JobsToml {
            top: FROM.to_owned(),
            ..JobsToml::default()
        }
    }

    /// A top-level line: `timezone = "UTC"`, `state_dir = "state"`.
    pub fn top(mut self, line: &str) -> Self {
        let _ = writeln!(self.top, "{line}");
        self
    }

    /// `[smtp]` for a test server on loopback `port`: `username = "alice"` (see `user`),
    /// the `tls` mode, and `ca_file` when given. Add keys with `smtp_key` (before or after).
    pub fn smtp(mut self, port: u16, tls: &str, ca: Option<&Path>) -> Self {
        let mut s = format!("[smtp]\nhost = \"localhost\"\nport = {port}\ntls = \"{tls}\"\n");
        self.user.get_or_insert_with(|| "alice".to_owned());
        if let Some(ca) = ca {
            let _ = writeln!(s, "ca_file = \"{}\"", ca.display());
        }
        if let Some(earlier) = self.smtp.take() {
            s.push_str(earlier.trim_start_matches("[smtp]\n"));
        }
        self.smtp = Some(s);
        self
    }

    /// The `[smtp]` username, in place of `alice`.
    pub fn user(mut self, name: &str) -> Self {
        self.user = Some(name.to_owned());
        self
    }

    /// One more `[smtp]` line (`password_env = "PW"`, `timeout = "5s"`).
    pub fn smtp_key(mut self, line: &str) -> Self {
        let smtp = self.smtp.get_or_insert_with(|| "[smtp]\n".to_owned());
        let _ = writeln!(smtp, "{line}");
        self
    }

    /// `[outbox]` (messages written to `outbox/` beside jobs.toml).
    pub fn outbox(self) -> Self {
        self.section("[outbox]")
    }

    /// Any other section, as written (`[delivery]\nretry_min = "1s"`).
    pub fn section(mut self, text: &str) -> Self {
        let _ = writeln!(self.sections, "{}", text.trim_end());
        self
    }

    /// Retries after 1 to 2 s and a 5 s shutdown grace, for tests of retries.
    pub fn fast_retries(self) -> Self {
        self.section("[delivery]\nretry_min = \"1s\"\nretry_max = \"2s\"\nshutdown_grace = \"5s\"")
    }

    /// A job, as written (`[[job]]\n...`).
    pub fn job(mut self, text: &str) -> Self {
        let _ = writeln!(self.jobs, "{}", text.trim_end());
        self
    }

    /// Job `name` on `schedule`, to a@example.com, subject `NAME HH:MM`, plus `extra` keys.
    pub fn every(self, name: &str, schedule: &str, extra: &str) -> Self {
        self.job(&format!(
            "[[job]]\nname = \"{name}\"\nschedule = \"{schedule}\"\nto = [\"a@example.com\"]\n\
             subject = \"{name} {{{{ time }}}}\"\nbody = \"b\"\n{extra}"
        ))
    }

    pub fn text(&self) -> String {
        let mut out = self.top.clone();
        if let Some(smtp) = &self.smtp {
            out.push_str(smtp);
            if let Some(user) = &self.user {
                let _ = writeln!(out, "username = \"{user}\"");
            }
        }
        out.push_str(&self.sections);
        out.push_str(&self.jobs);
        out
    }

    pub fn write(&self) -> ConfigDir {
        ConfigDir::new(&self.text())
    }
}

/// jobs.toml with `FROM`, `[smtp]` for `port` (password in `$TEST_SMTP_PASSWORD`,
/// timeout 10 s) and `JOB`.
pub fn job_config(port: u16, tls: &str, ca: Option<&Path>) -> ConfigDir {
    smtp_for(port, tls, ca).job(JOB).write()
}

/// `FROM` and `[smtp]` for `port`, with the password in `$TEST_SMTP_PASSWORD`.
pub fn smtp_for(port: u16, tls: &str, ca: Option<&Path>) -> JobsToml {
    JobsToml::new()
        .smtp(port, tls, ca)
        .smtp_key("password_env = \"TEST_SMTP_PASSWORD\"")
        .smtp_key("timeout = \"10s\"")
}

/// A job that never fires by itself (used with `cronmail send`).
pub const JOB: &str = r#"
[[job]]
name = "weekly"
schedule = "0 9 * * MON"
timezone = "Europe/Berlin"
to = ["Team <team@example.com>"]
cc = ["cc@example.com"]
bcc = ["hidden@example.com"]
subject = "Weekly report due {{ date }}"
body = "Hi {{ vars.owner }}, week {{ scheduled_at | strftime('%V') }}."
[job.vars]
owner = "Junho"
"#;

pub const FROM: &str = "from = \"Reminders <bot@example.com>\"\n";

/// For each `(section, expected)`: `check` on `FROM` + `section` + `JOB` exits 78 with
/// `expected` at a `jobs.toml:LINE:COL` place, and never echoes `hunter2` (the secret
/// the cases may put where secrets do not belong).
#[track_caller]
pub fn assert_config_mistakes(cases: &[(String, &str)]) {
    for (section, expected) in cases {
        let cfg = ConfigDir::new(&format!("{FROM}{section}{JOB}"));
        let out = cronmail(&cfg.path, &["check"], &[]);
        assert_eq!(out.status.code(), Some(78), "{section}: {}", stderr(&out));
        let err = stderr(&out);
        assert!(err.contains(expected), "{section}: {err}");
        assert!(err.contains("jobs.toml:"), "no place: {err}");
        assert!(!err.contains("hunter2"), "a secret was echoed: {err}");
    }
}
