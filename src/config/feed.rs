//! The `[[job]]` tables of jobs.toml and of the files of jobs.d, each parsed and
//! deserialized only when validation asks for the next job, so that a job's table and
//! its `RawJob` (1.6 KB, whatever the table holds) are freed before the next is read.
//! Validation holds the jobs it has built and one `RawJob`; never every `RawJob` at once.

use std::ops::Range;

use toml::Spanned;
use toml::de::{DeTable, DeValue};

use super::raw::RawJob;
use super::split::{Split, parse_piece};
use super::validate::Validator;

/// One file's jobs: pieces cut by `split` and not yet parsed, and the tables of the
/// piece being read (or of the whole file, when it could not be cut).
struct FileJobs<'t> {
    file: usize,
    text: &'t str,
    pieces: std::vec::IntoIter<Range<usize>>,
    items: std::vec::IntoIter<Spanned<DeValue<'t>>>,
}

/// Every file's jobs, in order: jobs.toml's, then each jobs.d file's.
pub(super) struct Feed<'t> {
    files: std::collections::VecDeque<FileJobs<'t>>,
    /// How many `[[job]]` tables there are (to size the list of jobs once).
    pub count: usize,
}

/// A file read for its jobs: its other tables, and its jobs still to be read.
pub(super) struct Opened<'t> {
    pub rest: Spanned<DeTable<'t>>,
    jobs: FileJobs<'t>,
}

/// Parses `text` (file number `file`, whose source `v` is in), cut as `cut` says, but
/// for its jobs; `None` when its TOML is broken (every error reported).
pub(super) fn open<'t, 's: 't>(
    v: &mut Validator<'_>,
    text: &'t str,
    cut: &'t mut Option<Split<'s>>,
    file: usize,
) -> Option<Opened<'t>> {
    if let Some(c) = cut.as_mut().filter(|c| !c.jobs.is_empty()) {
        let pieces = std::mem::take(&mut c.jobs);
        let c: &'t Split<'s> = cut.as_ref()?;
        match DeTable::parse_recoverable(&c.rest) {
            (rest, errors) if errors.is_empty() && !rest.get_ref().contains_key("job") => {
                return Some(Opened {
                    rest,
                    jobs: FileJobs {
                        file,
                        text,
                        items: Vec::new().into_iter(),
                        pieces: pieces.into_iter(),
                    },
                });
            }
            // Broken, or `job` written twice over (`job = [...]` and [[job]]): toml's
            // own parse of the whole file says what is wrong.
            _ => {}
        }
    }
    let (root, errors) = DeTable::parse_recoverable(text);
    if !errors.is_empty() {
        for e in errors {
            v.at(e.span(), None, super::toml_message(&e, None));
        }
        return None;
    }
    let span = root.span();
    let mut table = root.into_inner();
    let items = match table.remove("job").map(Spanned::into_inner) {
        None => Vec::new(),
        Some(DeValue::Array(items)) => items.into_iter().collect(),
        Some(_) => {
            v.file("`job` must be an array of tables, written as [[job]]");
            Vec::new()
        }
    };
    Some(Opened {
        rest: Spanned::new(span, table),
        jobs: FileJobs {
            file,
            text,
            items: items.into_iter(),
            pieces: Vec::new().into_iter(),
        },
    })
}

impl<'t> Feed<'t> {
    pub fn new() -> Self {
        Feed {
            files: std::collections::VecDeque::new(),
            count: 0,
        }
    }

    /// Adds a file's jobs after those added before.
    pub fn push(&mut self, opened: Opened<'t>) -> Spanned<DeTable<'t>> {
        self.count += opened.jobs.pieces.len() + opened.jobs.items.len();
        self.files.push_back(opened.jobs);
        opened.rest
    }

    /// The next job, deserialized (its mistakes reported through `v`, which is moved to
    /// the job's file); `None` when every file's jobs were read.
    pub fn next(&mut self, v: &mut Validator<'_>) -> Option<RawJob> {
        loop {
            let f = self.files.front_mut()?;
            v.in_file(f.file);
            if let Some(item) = f.items.next() {
                if let Some(job) = job_of(v, item, f.file) {
                    return Some(job);
                }
                continue;
            }
            match f.pieces.next() {
                Some(piece) => match parse_piece(f.text, piece) {
                    Ok(table) => {
                        let mut table = table.into_inner();
                        if let Some(DeValue::Array(items)) =
                            table.remove("job").map(Spanned::into_inner)
                        {
                            f.items = items.into_iter().collect::<Vec<_>>().into_iter();
                        }
                    }
                    Err(errors) => {
                        for (span, e) in errors {
                            v.at(span, None, super::toml_message(&e, None));
                        }
                    }
                },
                None => {
                    self.files.pop_front();
                }
            }
        }
    }
}

/// One `[[job]]` table, deserialized; `None` when it could not be (reported).
fn job_of(v: &mut Validator<'_>, item: Spanned<DeValue<'_>>, file: usize) -> Option<RawJob> {
    let span = item.span();
    let name = item
        .get_ref()
        .as_table()
        .and_then(|t| t.get("name"))
        .and_then(|n| n.get_ref().as_str())
        .map(str::to_owned);
    let DeValue::Table(t) = item.into_inner() else {
        v.at(Some(span), None, "each [[job]] must be a table");
        return None;
    };
    let (job, stripped) =
        super::deserialize_all::<RawJob>(v, Spanned::new(span.clone(), t), name.as_deref());
    let mut job = job?;
    job.span = span;
    job.stripped = stripped;
    job.file = file;
    Some(job)
}
