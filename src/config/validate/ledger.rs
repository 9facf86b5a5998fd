//! `[ledger]` (a shared `PostgreSQL` database, or the embedded `SQLite`) and `[delivery]`
//! (retries, the connection cap, the shutdown grace).

#[cfg(feature = "postgres")]
use std::str::FromStr;
use std::time::Duration;

use toml::Spanned;

use super::Validator;
#[cfg(feature = "postgres")]
use super::is_loopback;
use crate::config::Host;
use crate::config::raw::{RawDelivery, RawLedger};
#[cfg(feature = "postgres")]
use crate::config::types::{DEFAULT_LEASE, DEFAULT_POLL, PgConfig};
use crate::config::types::{Delivery, LedgerConfig};

impl Validator<'_> {
    /// A build without the `PostgreSQL` ledger: the section is an error that says so.
    #[cfg(not(feature = "postgres"))]
    #[allow(clippy::unused_self)]
    pub(super) fn ledger(
        &mut self,
        raw: &Spanned<RawLedger>,
        _host: &Host,
        _smtp_timeout: Option<Duration>,
    ) -> Option<LedgerConfig> {
        self.at(Some(raw.span()), None, crate::ledger::NO_POSTGRES);
        None
    }

    #[cfg(feature = "postgres")]
    pub(super) fn ledger(
        &mut self,
        raw: &Spanned<RawLedger>,
        host: &Host,
        smtp_timeout: Option<Duration>,
    ) -> Option<LedgerConfig> {
        let section = raw.span();
        let raw = raw.get_ref();
        let errors_before = self.errors();
        let Some(url) = &raw.url else {
            self.at(
                Some(section),
                None,
                "[ledger] needs `url`, e.g. \"postgres://cronmail@db.example.com/cronmail\" (leave [ledger] out for the embedded SQLite ledger)",
            );
            return None;
        };
        let mut tls_required = false;
        match postgres::Config::from_str(url.get_ref()) {
            Err(e) => self.at(
                Some(url.span()),
                None,
                format!("`url` is not a PostgreSQL connection URL: {e}; expected postgres://USER@HOST[:PORT]/DATABASE"),
            ),
            Ok(pg) => {
                if pg.get_password().is_some() {
                    self.at(Some(url.span()), None, "`url` holds a password; jobs.toml never holds a secret: use `password_env`, `password_file`, `password_command` or `password_credential`");
                }
                let remote = pg.get_hosts().iter().any(|h| match h {
                    postgres::config::Host::Tcp(name) => !is_loopback(name),
                    postgres::config::Host::Unix(_) => false,
                }) || pg.get_hostaddrs().iter().any(|ip| !ip.is_loopback());
                if pg.get_hosts().is_empty() {
                    self.at(Some(url.span()), None, "`url` names no host");
                }
                if remote {
                    if pg.get_ssl_mode() == postgres::config::SslMode::Disable {
                        self.at(Some(url.span()), None, "`sslmode=disable` is allowed only for a loopback host; the ledger's connection to another host must use TLS");
                    }
                    tls_required = true;
                }
            }
        }
        let password = self.secret_source(
            "password",
            raw.password_env.as_ref(),
            raw.password_file.as_ref(),
            raw.password_command.as_ref(),
            raw.password_credential.as_ref(),
        );
        let node = match &raw.node {
            Some(n)
                if n.get_ref().is_empty()
                    || n.get_ref().len() > 100
                    || n.get_ref().chars().any(char::is_control) =>
            {
                self.at(
                    Some(n.span()),
                    None,
                    "`node` must be a short name without control characters",
                );
                String::new()
            }
            Some(n) => n.get_ref().clone(),
            None => host.node.clone(),
        };
        let lease = match &raw.lease {
            Some(l) => self.duration(l, "lease"),
            None => Some(DEFAULT_LEASE),
        };
        let poll = match &raw.poll {
            Some(p) => self.duration(p, "poll"),
            None => Some(DEFAULT_POLL),
        };
        // A lease shorter than one send would let another node take a send in progress.
        if let (Some(lease), Some(smtp_timeout)) = (lease, smtp_timeout)
            && lease < smtp_timeout + Duration::from_secs(5)
        {
            let span = raw.lease.as_ref().map_or(section.clone(), Spanned::span);
            self.at(
                Some(span),
                None,
                format!(
                    "`lease` ({}) must be at least [smtp] `timeout` ({}) plus 5s: a send still in progress must not be taken over",
                    humantime::format_duration(lease),
                    humantime::format_duration(smtp_timeout)
                ),
            );
        }
        let (_, extra_roots) = self.ca_file(raw.ca_file.as_ref());
        if self.errors() > errors_before {
            return None;
        }
        Some(LedgerConfig::Postgres(Box::new(PgConfig {
            url: url.get_ref().clone(),
            password: password.map(|(_, s)| s),
            node,
            lease: lease?,
            poll: poll?,
            tls_required,
            extra_roots,
        })))
    }

    pub(super) fn delivery(&mut self, raw: &RawDelivery) -> Option<Delivery> {
        let d = Delivery::default();
        let dur = |cx: &mut Self, v: &Option<Spanned<String>>, key: &str, default: Duration| {
            v.as_ref().map_or(Some(default), |s| cx.duration(s, key))
        };
        let retry_min = dur(self, &raw.retry_min, "retry_min", d.retry_min);
        let retry_max = dur(self, &raw.retry_max, "retry_max", d.retry_max);
        let retry_for = dur(self, &raw.retry_for, "retry_for", d.retry_for);
        let shutdown_grace = dur(
            self,
            &raw.shutdown_grace,
            "shutdown_grace",
            d.shutdown_grace,
        );
        let max_connections = match &raw.max_connections {
            None => Some(d.max_connections),
            Some(n) => match usize::try_from(*n.get_ref()) {
                Ok(v) if (1..=100).contains(&v) => Some(v),
                _ => {
                    self.at(
                        Some(n.span()),
                        None,
                        format!(
                            "`max_connections` must be between 1 and 100, not {}",
                            n.get_ref()
                        ),
                    );
                    None
                }
            },
        };
        if let (Some(min), Some(max)) = (retry_min, retry_max)
            && min > max
        {
            let span = raw.retry_min.as_ref().map(Spanned::span);
            self.at(span, None, "`retry_min` is longer than `retry_max`");
            return None;
        }
        Some(Delivery {
            retry_min: retry_min?,
            retry_max: retry_max?,
            retry_for: retry_for?,
            max_connections: max_connections?,
            shutdown_grace: shutdown_grace?,
        })
    }
}

#[cfg(all(test, not(feature = "postgres")))]
mod tests {
    use std::path::Path;

    use crate::config::Host;

    /// `cargo test --no-default-features --lib` (in .ci/run).
    #[test]
    fn a_build_without_postgres_refuses_the_ledger_section_where_it_is() {
        let text = "from = \"a@example.com\"\n[outbox]\n[ledger]\nurl = \"postgres://c@db/c\"\n\
                    [[job]]\nname = \"j\"\nschedule = \"0 9 * * *\"\nto = [\"b@example.com\"]\n\
                    subject = \"s\"\nbody = \"b\"\n";
        let err = crate::config::parse(Path::new("jobs.toml"), text, &Host::from_env())
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("jobs.toml:3:1"), "{err}");
        assert!(err.contains("built without the PostgreSQL ledger"), "{err}");
    }
}
