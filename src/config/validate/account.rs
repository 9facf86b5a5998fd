//! The sending accounts: `[smtp]` or `[outbox]` (the account named `default`), and
//! `[account.NAME]` tables with the keys of `[smtp]` (or `outbox = "folder"`), each with
//! an optional `fallback` and sending limits.

use std::collections::BTreeMap;

use toml::Spanned;

use super::Validator;
use crate::config::raw::{RawJob, RawOutbox, RawSmtp};
use crate::config::types::{AccountConfig, MAX_JOB_NAME, TransportConfig};

/// The name of the account `[smtp]` or `[outbox]` is.
pub(super) const DEFAULT_ACCOUNT: &str = "default";

/// What jobs need to know of the accounts: their names, whether each sends real mail,
/// its provider's documented day limit, and which one a job without `account` uses.
#[derive(Default)]
pub(in crate::config) struct AccountNames {
    /// Name, whether it is SMTP, and its day's limit in recipients with whether it is
    /// the account's own `max_per_day` (else the provider's documented one).
    pub names: Vec<(String, bool, Option<DayLimit>)>,
    pub default: Option<usize>,
}

/// A day's limit in recipients, and whether it is the account's own `max_per_day`.
pub(in crate::config) type DayLimit = (u32, bool);

/// An account as written, before its fallback is resolved.
struct Written {
    name: String,
    transport: Option<TransportConfig>,
    fallback: Option<Spanned<String>>,
    max_per_minute: Option<u32>,
    max_per_day: Option<u32>,
}

impl Validator<'_> {
    /// Every account, in order: `default` first (when there is one), then
    /// `[account.NAME]` in name order. `None` when one of them is invalid (reported).
    pub(super) fn accounts(
        &mut self,
        smtp: Option<Spanned<RawSmtp>>,
        outbox: Option<Spanned<RawOutbox>>,
        named: BTreeMap<String, Spanned<RawSmtp>>,
    ) -> (Option<Vec<AccountConfig>>, AccountNames) {
        let errors_before = self.errors();
        let mut written = Vec::new();
        match (smtp, outbox) {
            (Some(smtp), None) => {
                if let Some(o) = &smtp.get_ref().outbox {
                    self.at(
                        Some(o.span()),
                        None,
                        "`outbox` belongs in an [account.NAME]; for the default account, use an [outbox] section instead of [smtp]",
                    );
                }
                written.push(self.account(DEFAULT_ACCOUNT.to_owned(), smtp));
            }
            (None, Some(outbox)) => {
                let dir = outbox
                    .into_inner()
                    .dir
                    .map_or_else(|| "outbox".to_owned(), Spanned::into_inner);
                written.push(Written {
                    name: DEFAULT_ACCOUNT.to_owned(),
                    transport: Some(TransportConfig::Outbox {
                        dir: self.resolve(&dir),
                    }),
                    fallback: None,
                    max_per_minute: None,
                    max_per_day: None,
                });
            }
            (Some(smtp), Some(_)) => self.at(
                Some(smtp.span()),
                None,
                "both [smtp] and [outbox] are set; keep exactly one (another account is an [account.NAME], which may be `outbox = \"folder\"`)",
            ),
            (None, None) if named.is_empty() => self.file("no [smtp] or [outbox] section; add exactly one, or name accounts in [account.NAME] tables (see `man cronmail-jobs.toml`, or docs/jobs.toml.md in the source)"),
            (None, None) => {}
        }
        for (name, raw) in named {
            let valid = !name.is_empty()
                && name.len() <= MAX_JOB_NAME
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
            if !valid {
                self.at(
                    Some(raw.span()),
                    None,
                    format!(
                        "account name `{}` must be 1 to {MAX_JOB_NAME} letters, digits, `-` or `_`",
                        name.escape_debug()
                    ),
                );
            }
            if written.iter().any(|w| w.name == name) {
                self.at(
                    Some(raw.span()),
                    None,
                    format!("[account.{name}] has the name of the account [smtp] or [outbox] is; give it another name"),
                );
                continue;
            }
            written.push(self.account(name, raw));
        }
        let known = known(&written);
        let accounts = self.resolve_fallbacks(written, &known);
        let valid = self.errors() == errors_before && !accounts.is_empty();
        (valid.then_some(accounts), known)
    }

    /// Each account's `fallback`, by name -> by index.
    fn resolve_fallbacks(
        &mut self,
        written: Vec<Written>,
        known: &AccountNames,
    ) -> Vec<AccountConfig> {
        let mut accounts = Vec::with_capacity(written.len());
        for w in written {
            let fallback = w.fallback.as_ref().and_then(|f| {
                let target = f.get_ref();
                if *target == w.name {
                    self.at(
                        Some(f.span()),
                        None,
                        format!("account `{}` cannot fall back to itself", w.name),
                    );
                    return None;
                }
                let found = known.names.iter().position(|(n, ..)| n == target);
                if found.is_none() {
                    self.at(Some(f.span()), None, unknown(target, known));
                }
                found
            });
            if let Some(transport) = w.transport {
                accounts.push(AccountConfig {
                    name: w.name.into(),
                    transport,
                    fallback,
                    max_per_minute: w.max_per_minute,
                    max_per_day: w.max_per_day,
                });
            }
        }
        accounts
    }

    /// One `[smtp]` or `[account.NAME]`.
    fn account(&mut self, name: String, raw: Spanned<RawSmtp>) -> Written {
        let section = raw.span();
        let limit = |v: &mut Self, n: Option<&Spanned<i64>>, key: &str| {
            n.and_then(|n| match u32::try_from(*n.get_ref()) {
                Ok(n) if n > 0 => Some(n),
                _ => {
                    v.at(
                        Some(n.span()),
                        None,
                        format!("`{key}` must be a positive whole number"),
                    );
                    None
                }
            })
        };
        let max_per_minute = limit(
            self,
            raw.get_ref().max_per_minute.as_ref(),
            "max_per_minute",
        );
        let max_per_day = limit(self, raw.get_ref().max_per_day.as_ref(), "max_per_day");
        let fallback = raw.get_ref().fallback.clone();
        let transport = if let Some(dir) = raw.get_ref().outbox.clone() {
            if name != DEFAULT_ACCOUNT && smtp_keys(raw.get_ref()) {
                self.at(
                    Some(section),
                    None,
                    format!("[account.{name}] has `outbox` and SMTP keys; an account is either an outbox or a server"),
                );
            }
            Some(TransportConfig::Outbox {
                dir: self.resolve(dir.get_ref()),
            })
        } else {
            self.smtp(raw).map(|s| TransportConfig::Smtp(Box::new(s)))
        };
        Written {
            name,
            transport,
            fallback,
            max_per_minute,
            max_per_day,
        }
    }

    /// The account a job sends through: `account`, else `default`, else the only one.
    pub(super) fn job_account(
        &mut self,
        raw: &RawJob,
        names: &AccountNames,
        job: Option<&str>,
    ) -> Option<usize> {
        match &raw.account {
            Some(a) => {
                let found = names.names.iter().position(|(n, ..)| n == a.get_ref());
                if found.is_none() && !names.names.is_empty() {
                    self.at(Some(a.span()), job, unknown(a.get_ref(), names));
                }
                found
            }
            None if names.default.is_none() && names.names.len() > 1 => {
                let here = raw.name.as_ref().map_or(raw.span.clone(), Spanned::span);
                self.at(
                    Some(here),
                    job,
                    format!(
                        "no `account`: there are {} accounts and none is `default`; set `account = \"{}\"` or another",
                        names.names.len(),
                        names.names[0].0
                    ),
                );
                None
            }
            None => names.default,
        }
    }

    /// A job whose recipients alone exceed what its provider documents for a day.
    pub(super) fn recipients_warning(
        &mut self,
        raw: &RawJob,
        names: &AccountNames,
        account: usize,
        (per_message, rows): (usize, Option<usize>),
        job: Option<&str>,
    ) {
        let Some((name, _, Some((day, own)))) = names.names.get(account) else {
            return;
        };
        let day = *day as usize;
        let whose = if *own {
            format!("account `{name}`'s max_per_day of {day}")
        } else {
            format!("the {day} a day the provider of account `{name}` documents")
        };
        let here = raw
            .recipients_file
            .as_ref()
            .map(Spanned::span)
            .or_else(|| raw.to.as_ref().map(Spanned::span))
            .unwrap_or_else(|| raw.span.clone());
        let message = if per_message > day {
            let then = if *own {
                "it can never be sent, and expires"
            } else {
                "expect the server to refuse it"
            };
            format!("{per_message} recipients per message, more than {whose}: {then}")
        } else if let Some(rows) = rows.filter(|r| r * per_message > day) {
            let total = rows * per_message;
            let then = if *own {
                format!(
                    "each occurrence takes {} days to send, and what is left at `retry_for` expires",
                    total.div_ceil(day)
                )
            } else {
                "set `max_per_day` to spread it over days instead of being refused".to_owned()
            };
            format!("{rows} rows make {total} recipients per occurrence, more than {whose}: {then}")
        } else {
            return;
        };
        self.warn(Some(here), job, message);
    }
}

/// The names of the accounts, for the jobs.
fn known(written: &[Written]) -> AccountNames {
    AccountNames {
        names: written
            .iter()
            .map(|w| {
                let provider = match &w.transport {
                    Some(TransportConfig::Smtp(s)) => {
                        s.effective_provider().and_then(|p| p.limits().1)
                    }
                    _ => None,
                };
                let day = w
                    .max_per_day
                    .map(|d| (d, true))
                    .or(provider.map(|d| (d, false)));
                let smtp = matches!(w.transport, Some(TransportConfig::Smtp(_)));
                (w.name.clone(), smtp, day)
            })
            .collect(),
        default: written
            .iter()
            .position(|w| w.name == DEFAULT_ACCOUNT)
            .or((written.len() == 1).then_some(0)),
    }
}

/// Whether a `[account.NAME]` with `outbox` also has keys of a server.
fn smtp_keys(raw: &RawSmtp) -> bool {
    raw.provider.is_some()
        || raw.host.is_some()
        || raw.port.is_some()
        || raw.tls.is_some()
        || raw.username.is_some()
        || raw.password_env.is_some()
        || raw.password_file.is_some()
        || raw.password_command.is_some()
        || raw.password_credential.is_some()
        || raw.oauth2.is_some()
}

fn unknown(name: &str, names: &AccountNames) -> String {
    let list: Vec<String> = names.names.iter().map(|(n, ..)| format!("`{n}`")).collect();
    format!(
        "no account is named `{name}`; the accounts are {}",
        list.join(", ")
    )
}
