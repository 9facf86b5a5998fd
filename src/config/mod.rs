//! jobs.toml -> a validated `Config`. The only module that sees TOML.
//!
//! Two layers, as ripgrep does with its flags: `raw` structs that mirror the file
//! (`deny_unknown_fields`, spans kept for line:column), then the `types` that cannot
//! hold an invalid value (`Schedule`, `Mailbox`, `Tz`, compiled templates), built by the
//! `validate` step. After `Config` is built, no other module can fail on bad user input.
//!
//! Every problem of a file is reported at once: the TOML is parsed with recovery, each
//! `[[job]]` is deserialized on its own, and validation collects `Diagnostic`s.

mod diagnostic;
mod host;
mod provider;
mod raw;
mod types;
mod validate;

use std::path::Path;

use serde::Deserialize;
use serde::de::IntoDeserializer;
use toml::Spanned;
use toml::de::{DeTable, DeValue};

pub(crate) use diagnostic::Source;
pub use diagnostic::{Diagnostic, Diagnostics};
pub use host::{Host, ZoneError, system_timezone};
pub use provider::{OAuthProvider, Provider, Submission};
pub use types::*;

use raw::{RawJob, RawTop};
use validate::Validator;

/// Reads and validates `path`. Every problem found is in the returned `Diagnostics`.
pub fn load(path: &Path, host: &Host) -> Result<Config, Diagnostics> {
    let text = read_limited(path).map_err(|message| {
        Diagnostics(vec![Diagnostic {
            path: path.to_path_buf(),
            location: None,
            job: None,
            message,
        }])
    })?;
    parse(path, &text, host)
}

fn read_limited(path: &Path) -> Result<String, String> {
    let bytes = crate::files::read(path, MAX_FILE_BYTES).map_err(|e| match e {
        crate::files::FileError::NotRegular {
            what: "a folder", ..
        } => "is a directory; expected a jobs.toml file".to_owned(),
        crate::files::FileError::TooLarge { .. } => format!(
            "the file is {} bytes, more than the limit of {} (about 2.5 million jobs)",
            crate::files::group(std::fs::metadata(path).map_or(0, |m| m.len())),
            crate::files::group(MAX_FILE_BYTES)
        ),
        other => format!("cannot read the configuration: {other}"),
    })?;
    String::from_utf8(bytes).map_err(|e| {
        let offset = e.utf8_error().valid_up_to();
        let valid = String::from_utf8_lossy(&e.as_bytes()[..offset]).into_owned();
        let (line, col) = Source::new(path, &valid).line_col(offset);
        format!("{line}:{col}: the file is not valid UTF-8 (TOML files must be UTF-8)")
    })
}

/// Validates the text of a jobs.toml that lives at `path` (relative paths in it resolve
/// against `path`'s folder).
pub fn parse(path: &Path, text: &str, host: &Host) -> Result<Config, Diagnostics> {
    let src = Source::new(path, text);
    let mut v = Validator::new(&src, path);

    if text.trim().is_empty() {
        v.file("the file is empty; expected an [outbox] or [smtp] section and [[job]] entries (see the README)");
        return Err(v.into_diagnostics());
    }

    let (root, errors) = DeTable::parse_recoverable(text);
    if !errors.is_empty() {
        for e in errors {
            v.at(e.span(), None, toml_message(&e));
        }
        return Err(v.into_diagnostics());
    }
    let root_span = root.span();
    let mut table = root.into_inner();

    // Jobs are deserialized one by one, so a mistake in one does not hide the others.
    let jobs_value = table.remove("job");
    let top: Option<RawTop> =
        match RawTop::deserialize(toml::de::Deserializer::from(Spanned::new(root_span, table))) {
            Ok(top) => Some(top),
            Err(e) => {
                v.at(e.span(), None, toml_message(&e));
                None
            }
        };
    let mut raw_jobs = Vec::new();
    match jobs_value.map(Spanned::into_inner) {
        None => {}
        Some(DeValue::Array(items)) => {
            for item in items {
                let span = item.span();
                let name = item
                    .get_ref()
                    .get("name")
                    .and_then(|n| n.get_ref().as_str())
                    .map(str::to_owned);
                match RawJob::deserialize(item.into_deserializer()) {
                    Ok(job) => raw_jobs.push(job),
                    Err(e) => v.at(e.span().or(Some(span)), name.as_deref(), toml_message(&e)),
                }
            }
        }
        Some(_) => v.file("`job` must be an array of tables, written as [[job]]"),
    }

    let Some(top) = top else {
        return Err(v.into_diagnostics());
    };
    match v.build(top, raw_jobs, host) {
        Some(config) if v.is_clean() => Ok(config),
        _ => Err(v.into_diagnostics()),
    }
}

/// toml's message without its own "TOML parse error at line ..." framing and snippet,
/// since we print `PATH:LINE:COL` ourselves.
fn toml_message(e: &toml::de::Error) -> String {
    let msg = e.message().trim();
    let msg = msg
        .strip_prefix("unknown field")
        .map_or_else(|| msg.to_owned(), |rest| format!("unknown key{rest}"));
    if msg.contains("unknown key `password`,") {
        return validate::literal_secret("password");
    }
    msg
}
