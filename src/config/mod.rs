//! jobs.toml -> a validated `Config`. The only module that sees TOML.
//!
//! Two layers, as ripgrep does with its flags: `raw` structs that mirror the file
//! (`deny_unknown_fields`, spans kept for line:column), then the `types` that cannot
//! hold an invalid value (`Schedule`, `Mailbox`, `Tz`, compiled templates), built by the
//! `validate` step. After `Config` is built, no other module can fail on bad user input.
//!
//! Every problem of a file is reported at once: the TOML is parsed with recovery, each
//! `[[job]]` is parsed and deserialized on its own (`split`, `feed`: one at a time, so
//! the whole document is never held), and validation collects `Diagnostic`s.

mod diagnostic;
mod dropin;
mod feed;
mod host;
mod provider;
mod raw;
mod schema;
mod split;
mod types;
mod validate;

use std::path::Path;

use toml::Spanned;
use toml::de::{DeTable, DeValue};

pub(crate) use diagnostic::Source;
pub use diagnostic::{Diagnostic, Diagnostics};
pub use host::{Host, ZoneError, system_timezone};
pub use provider::{OAuthProvider, Provider, Submission};
pub use types::*;

use raw::RawTop;
pub use schema::schema;
use validate::Validator;

/// Reads and validates `path`, and the `*.toml` files of the `jobs.d` folder beside it.
/// Every problem found is in the returned `Diagnostics`.
pub fn load(path: &Path, host: &Host) -> Result<Config, Diagnostics> {
    let text =
        read_limited(path).map_err(|message| Diagnostics(vec![Diagnostic::file(path, message)]))?;
    let dropins = dropin::read(path)?;
    parse_with(path, &text, &dropins, host)
}

pub(crate) fn read_limited(path: &Path) -> Result<String, String> {
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
    parse_with(path, text, &[], host)
}

/// Validates jobs.toml and the files of its `jobs.d` (each a path and its text), whose
/// jobs follow the main file's, in the order given.
pub fn parse_with(
    path: &Path,
    text: &str,
    dropins: &[(std::path::PathBuf, String)],
    host: &Host,
) -> Result<Config, Diagnostics> {
    let sources: Vec<Source<'_>> = std::iter::once(Source::new(path, text))
        .chain(dropins.iter().map(|(p, t)| Source::new(p, t)))
        .collect();
    let mut v = Validator::new(&sources, path);

    if text.trim().is_empty() {
        v.file("the file is empty; expected an [outbox] or [smtp] section and [[job]] entries (see `man cronmail-jobs.toml`, or docs/jobs.toml.md in the source)");
        return Err(v.into_diagnostics());
    }

    // Each file is cut at its [[job]] headers: the jobs are parsed one at a time as
    // validation takes them (feed.rs), the rest of the file now.
    let mut cuts: Vec<Option<split::Split<'_>>> = std::iter::once(text)
        .chain(dropins.iter().map(|(_, t)| t.as_str()))
        .map(split::split)
        .collect();
    let (main_cut, dropin_cuts) = cuts.split_at_mut(1);
    let mut feed = feed::Feed::new();
    let Some(main) = feed::open(&mut v, text, &mut main_cut[0], 0) else {
        if let Some(other) = other_format(text) {
            v.file(format!(
                "this file looks like {other}, not TOML: jobs.toml is TOML (`key = \"value\"`, [section], [[job]]); see `cronmail schema` or the example jobs.toml"
            ));
        }
        return Err(v.into_diagnostics());
    };
    let root = feed.push(main);
    let (top, top_stripped) = deserialize_all::<RawTop>(&mut v, root, None);
    let top = top.map(|mut t| {
        t.stripped = top_stripped;
        t
    });
    for (i, ((_, text), cut)) in dropins.iter().zip(dropin_cuts).enumerate() {
        v.in_file(i + 1);
        if let Some(opened) = feed::open(&mut v, text, cut, i + 1) {
            dropin::only_jobs(&mut v, &feed.push(opened));
        }
    }
    v.in_file(0);

    let Some(top) = top else {
        // Still read every job, for its own mistakes.
        while feed.next(&mut v).is_some() {}
        return Err(v.into_diagnostics());
    };
    match v.build(top, &mut feed, host) {
        Some(config) if v.is_clean() => Ok(config),
        _ => Err(v.into_diagnostics()),
    }
}

/// Deserializes `table`, reporting every key it cannot take: after each error, the key
/// at fault is taken out and the rest deserialized again, so an unknown key or a value
/// of the wrong type hides nothing else in the section.
/// Returns the keys taken out (dotted), so that validation does not report them again
/// as missing.
fn deserialize_all<T: serde::de::DeserializeOwned>(
    v: &mut Validator<'_>,
    mut table: Spanned<DeTable<'_>>,
    job: Option<&str>,
) -> (Option<T>, Vec<String>) {
    let mut stripped = Vec::new();
    for _ in 0..256 {
        let err = match T::deserialize(toml::de::Deserializer::from(table.clone())) {
            Ok(t) => return (Some(t), stripped),
            Err(e) => e,
        };
        let Some(span) = err.span() else {
            v.at(Some(table.span()), job, toml_message(&err, None));
            return (None, stripped);
        };
        let removed = strip_at(table.get_mut(), span.start);
        v.at(Some(span), job, toml_message(&err, removed.as_deref()));
        match removed {
            Some(key) => stripped.push(key),
            None => return (None, stripped),
        }
    }
    (None, stripped)
}

/// Removes the innermost key whose key or value holds byte `at`; returns its dotted path.
fn strip_at(table: &mut DeTable<'_>, at: usize) -> Option<String> {
    let (key, in_key) = table.iter().find_map(|(k, val)| {
        let in_key = k.span().contains(&at);
        (in_key || val.span().contains(&at)).then(|| (k.get_ref().to_string(), in_key))
    })?;
    if !in_key {
        let inner = table
            .iter_mut()
            .find(|(k, _)| **k.get_ref() == *key)
            .and_then(|(_, val)| match val.get_mut() {
                DeValue::Table(t) => strip_at(t, at),
                DeValue::Array(items) => items.iter_mut().find_map(|item| match item.get_mut() {
                    DeValue::Table(t) => strip_at(t, at),
                    _ => None,
                }),
                _ => None,
            });
        if let Some(inner) = inner {
            return Some(format!("{key}.{inner}"));
        }
    }
    table.remove(key.as_str());
    Some(key)
}

/// JSON or YAML given where TOML is expected.
fn other_format(text: &str) -> Option<&'static str> {
    let t = text.trim_start();
    if t.starts_with('{') || (t.starts_with('[') && t[1..].trim_start().starts_with(['{', '"'])) {
        return Some("JSON");
    }
    let lines: Vec<&str> = t
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    let yaml = lines
        .iter()
        .filter(|l| {
            l.starts_with("- ") || (l.contains(": ") && !l.contains('=')) || l.ends_with(':')
        })
        .count();
    (t.starts_with("---") || (!lines.is_empty() && yaml * 2 > lines.len())).then_some("YAML")
}

/// toml's message without its own "TOML parse error at line ..." framing and snippet,
/// since we print `PATH:LINE:COL` ourselves; said about `key` when it is known.
fn toml_message(e: &toml::de::Error, key: Option<&str>) -> String {
    let msg = e.message().trim();
    let last = key.map(|k| k.rsplit('.').next().unwrap_or(k));
    if let Some(rest) = msg.strip_prefix("unknown field") {
        if msg.contains("unknown field `password`,") {
            return validate::literal_secret("password");
        }
        let mut out = format!("unknown key{rest}");
        if let (Some(k), Some(expected)) = (last, rest.split_once("expected")) {
            let names: Vec<&str> = expected.1.split('`').skip(1).step_by(2).collect();
            if let Some(near) = names
                .iter()
                .copied()
                .filter(|n| strsim::damerau_levenshtein(n, k) <= 2)
                .min_by_key(|n| strsim::damerau_levenshtein(n, k))
            {
                out = format!(
                    "unknown key `{k}`; did you mean `{near}`? (expected one of{})",
                    expected
                        .1
                        .trim_end_matches('.')
                        .trim_start_matches(" one of")
                );
            }
        }
        return out;
    }
    match last {
        Some(k @ ("to" | "cc" | "bcc")) if msg.contains("expected a sequence") => {
            format!("`{k}` is a list of addresses, even for one: `{k} = [\"you@example.com\"]`")
        }
        Some(k) if msg.starts_with("invalid type") => {
            let expected = msg.split_once("expected ").map_or("", |(_, e)| e);
            let wanted = match expected {
                "a sequence" => "a list, in [brackets]",
                "a string" => "a string, in \"quotes\"",
                "i64" | "u16" | "u32" | "u64" => "a whole number",
                "a boolean" => "`true` or `false`",
                other => other,
            };
            format!("`{k}` must be {wanted} ({msg})")
        }
        _ => msg.to_owned(),
    }
}
