//! `jobs.d/*.toml` beside jobs.toml: jobs that other packages and configuration
//! management drop in, instead of editing one file. Only `[[job]]` tables (and a
//! `#:schema` line) belong there; `[smtp]`, `[outbox]` and every other section stay in
//! jobs.toml. The files are read in name order, each under the size cap of jobs.toml,
//! and their jobs follow jobs.toml's. A job name is unique across all of them.

use std::path::{Path, PathBuf};

use toml::Spanned;
use toml::de::DeTable;

use super::diagnostic::{Diagnostic, Diagnostics};
use super::validate::Validator;

/// The folder's name, beside jobs.toml.
pub const DIR: &str = "jobs.d";

/// The `*.toml` files of `jobs.d` beside `config`, in name order, with their text.
/// No folder: none. Hidden files and other extensions (`.dpkg-old`) are left alone.
pub fn read(config: &Path) -> Result<Vec<(PathBuf, String)>, Diagnostics> {
    let dir = config.parent().unwrap_or_else(|| Path::new(".")).join(DIR);
    let entries = match std::fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) if e.kind() == std::io::ErrorKind::NotADirectory => {
            return Err(Diagnostics(vec![Diagnostic::file(
                &dir,
                "is not a folder; jobs.d beside jobs.toml holds more jobs, as `*.toml` files",
            )]));
        }
        Err(e) => {
            return Err(Diagnostics(vec![Diagnostic::file(
                &dir,
                format!("cannot read the folder: {e}"),
            )]));
        }
    };
    let mut paths: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            let name = p
                .file_name()
                .map(|n| n.to_string_lossy())
                .unwrap_or_default();
            !name.starts_with('.') && p.extension().is_some_and(|x| x == "toml")
        })
        .collect();
    paths.sort();
    let mut out = Vec::with_capacity(paths.len());
    let mut problems = Vec::new();
    for path in paths {
        match super::read_limited(&path) {
            Ok(text) => out.push((path, text)),
            Err(message) => problems.push(Diagnostic::file(&path, message)),
        }
    }
    if problems.is_empty() {
        Ok(out)
    } else {
        Err(Diagnostics(problems))
    }
}

/// Reports each table of a drop-in file's `rest` (all but its jobs): none belongs there.
pub(super) fn only_jobs(v: &mut Validator<'_>, rest: &Spanned<DeTable<'_>>) {
    for (key, value) in rest.get_ref() {
        let name = key.get_ref();
        v.at(
            Some(key.span().start..value.span().end),
            None,
            format!(
                "`{name}` does not belong in a jobs.d file: only [[job]] tables do; [smtp], [outbox] and the other sections stay in jobs.toml"
            ),
        );
    }
}
