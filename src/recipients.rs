//! A job's `recipients_file`: a CSV with a header, one message per row (mail merge).
//!
//! The `email` column is the row's recipient, `name` (optional) its display name, and
//! `key` (optional) what the ledger knows the row by; without `key`, the address is.
//! Every column is `row.COLUMN` in the job's templates. Read with the `csv` crate, as a
//! regular file under a cap, at `check` (every problem, with its line) and again at each
//! occurrence (so an edit takes effect without a reload).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::str::FromStr as _;
use std::sync::Arc;

use lettre::message::Mailbox;

use crate::render::Vars;

/// Largest recipients file: about 300,000 rows of a few columns.
pub const MAX_RECIPIENTS_FILE: u64 = 32 * 1024 * 1024;

/// Longest row key; it is part of the ledger's key.
const MAX_KEY: usize = 200;

/// One row: its key, its recipient, and every column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    pub key: Box<str>,
    pub to: Mailbox,
    pub columns: Vars,
    /// Its line in the file (1-based; the header is line 1).
    pub line: u64,
}

/// A problem of the file, or of one of its rows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The line in the file, when it is one row's.
    pub line: Option<u64>,
    pub message: String,
}

/// What was read: the rows that can be sent, in file order, and the problems.
#[derive(Debug, Default)]
pub struct Rows {
    pub rows: Vec<Arc<Row>>,
    pub columns: Vec<String>,
    pub problems: Vec<Problem>,
    /// Each row's index in `rows`, by key.
    index: HashMap<Box<str>, usize>,
}

impl Rows {
    /// The row of this key.
    pub fn get(&self, key: &str) -> Option<&Arc<Row>> {
        self.index.get(key).map(|&i| &self.rows[i])
    }
}

/// Reads `path`. A file that cannot be read at all is the only `Err`.
pub fn read(path: &Path) -> Result<Rows, crate::files::FileError> {
    let bytes = crate::files::read(path, MAX_RECIPIENTS_FILE)?;
    Ok(parse(&bytes))
}

/// The rows of a CSV text.
pub fn parse(bytes: &[u8]) -> Rows {
    let mut out = Rows::default();
    let mut reader = csv::ReaderBuilder::new()
        .trim(csv::Trim::All)
        .flexible(false)
        .from_reader(bytes);
    let headers = match reader.headers() {
        Ok(h) => h.iter().map(str::to_owned).collect::<Vec<_>>(),
        Err(e) => {
            out.problems
                .push(problem(None, format!("not a CSV file: {e}")));
            return out;
        }
    };
    let find = |name: &str| headers.iter().position(|h| h.eq_ignore_ascii_case(name));
    let Some(email) = find("email") else {
        out.problems.push(problem(
            Some(1),
            format!(
                "no `email` column; the header is `{}` (the first line names the columns, one of them `email`)",
                headers.join(",")
            ),
        ));
        return out;
    };
    let (name, key) = (find("name"), find("key"));
    out.columns.clone_from(&headers);
    let mut seen: HashMap<Box<str>, u64> = HashMap::new();
    // The csv crate's own line count skips blank lines; the file's lines do not.
    let newlines: Vec<u64> = bytes
        .iter()
        .enumerate()
        .filter(|(_, b)| **b == b'\n')
        .map(|(i, _)| i as u64)
        .collect();
    for record in reader.records() {
        let record = match record {
            Ok(r) => r,
            Err(e) => {
                let line = e.position().map(|p| line_at(bytes, &newlines, p.byte()));
                out.problems.push(problem(line, format!("{e}")));
                continue;
            }
        };
        let line = record
            .position()
            .map_or(0, |p| line_at(bytes, &newlines, p.byte()));
        if record.iter().all(str::is_empty) {
            continue;
        }
        let address = record.get(email).unwrap_or_default();
        let display = name.and_then(|i| record.get(i)).filter(|n| !n.is_empty());
        let to = match recipient(address, display) {
            Ok(to) => to,
            Err(message) => {
                out.problems.push(problem(Some(line), message));
                continue;
            }
        };
        let row_key = match key.and_then(|i| record.get(i)).filter(|k| !k.is_empty()) {
            Some(k) => k.to_owned(),
            None => to.email.to_string().to_ascii_lowercase(),
        };
        if row_key.len() > MAX_KEY || row_key.chars().any(char::is_control) {
            out.problems.push(problem(
                Some(line),
                format!("the key must be at most {MAX_KEY} characters, without control characters"),
            ));
            continue;
        }
        if let Some(first) = seen.get(row_key.as_str()) {
            out.problems.push(problem(
                Some(line),
                format!(
                    "duplicate key `{row_key}` (first on line {first}); each row needs its own {}",
                    if key.is_some() {
                        "`key`"
                    } else {
                        "address, or a `key` column"
                    }
                ),
            ));
            continue;
        }
        seen.insert(row_key.clone().into(), line);
        out.index.insert(row_key.clone().into(), out.rows.len());
        let columns: Vars = headers
            .iter()
            .zip(record.iter())
            .map(|(h, v)| (h.clone(), v.to_owned()))
            .collect();
        out.rows.push(Arc::new(Row {
            key: row_key.into(),
            to,
            columns,
            line,
        }));
    }
    out
}

/// A row's recipient: its `email`, with its `name` when it has one.
fn recipient(address: &str, display: Option<&str>) -> Result<Mailbox, String> {
    if address.chars().any(char::is_control) {
        return Err("the address contains a line break or a control character".to_owned());
    }
    let m = Mailbox::from_str(address)
        .map_err(|e| format!("`{address}` is not a valid address ({e})"))?;
    Ok(Mailbox::new(display.map(str::to_owned).or(m.name), m.email))
}

/// The 1-based line of a record the csv crate says starts at byte `offset` (which is
/// before the blank lines it skipped), given where the file's newlines are.
fn line_at(bytes: &[u8], newlines: &[u64], offset: u64) -> u64 {
    let skipped = bytes
        .iter()
        .skip(usize::try_from(offset).unwrap_or(usize::MAX))
        .take_while(|b| matches!(b, b'\n' | b'\r'))
        .count() as u64;
    newlines.partition_point(|&n| n < offset + skipped) as u64 + 1
}

fn problem(line: Option<u64>, message: String) -> Problem {
    Problem { line, message }
}

/// A file's size and time: when either changes, it is read again.
type Stamp = Option<(u64, std::time::SystemTime)>;

/// A file's rows, read again only when the file changed (its size or time).
#[derive(Default)]
pub struct Cache {
    files: HashMap<PathBuf, (Stamp, Arc<Rows>)>,
}

impl Cache {
    /// The rows of `path`, read now if it changed since the last read.
    pub fn get(&mut self, path: &Path) -> Result<Arc<Rows>, crate::files::FileError> {
        let stamp = std::fs::metadata(path)
            .ok()
            .and_then(|m| Some((m.len(), m.modified().ok()?)));
        if let Some((seen, rows)) = self.files.get(path)
            && stamp.is_some()
            && *seen == stamp
        {
            return Ok(Arc::clone(rows));
        }
        let rows = Arc::new(read(path)?);
        self.files
            .insert(path.to_path_buf(), (stamp, Arc::clone(&rows)));
        Ok(rows)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_have_their_columns_a_key_and_problems_their_lines() {
        let rows = parse(
            b"email,name,flat,rent\n\
              kim@example.com,Kim Lee,2B,900\n\
              not-an-address,X,3A,800\n\
              \n\
              KIM@example.com,Kim again,2C,700\n\
              jo@example.com,,4D,650\n",
        );
        assert_eq!(rows.rows.len(), 2, "{rows:?}");
        let kim = &rows.rows[0];
        assert_eq!(&*kim.key, "kim@example.com");
        assert_eq!(kim.to.to_string(), "Kim Lee <kim@example.com>");
        assert_eq!(kim.columns.get("flat"), Some("2B"));
        assert_eq!(kim.line, 2);
        assert_eq!(rows.rows[1].to.name, None);
        let lines: Vec<_> = rows.problems.iter().map(|p| p.line).collect();
        assert_eq!(lines, [Some(3), Some(5)], "{:?}", rows.problems);
        assert!(
            rows.problems[0]
                .message
                .contains("`not-an-address` is not a valid address")
        );
        assert!(
            rows.problems[1]
                .message
                .contains("duplicate key `kim@example.com` (first on line 2)")
        );
    }

    #[test]
    fn a_key_column_keys_the_rows_and_no_email_column_is_said() {
        let rows = parse(b"key,email\nflat-1,a@example.com\nflat-2,a@example.com\n");
        let keys: Vec<&str> = rows.rows.iter().map(|r| &*r.key).collect();
        assert_eq!(keys, ["flat-1", "flat-2"]);
        let none = parse(b"mail,name\na@example.com,A\n");
        assert!(none.rows.is_empty());
        assert!(
            none.problems[0].message.starts_with("no `email` column"),
            "{:?}",
            none.problems
        );
        let ragged = parse(b"email,name\na@example.com\n");
        assert!(
            ragged.problems[0]
                .message
                .contains("found record with 1 fields"),
            "{:?}",
            ragged.problems
        );
    }
}
