//! The `[[job]]` tables of jobs.toml and of the files of jobs.d, each parsed and
//! deserialized only when validation asks for the next job, so that a job's table and
//! its `RawJob` (1.6 KB, whatever the table holds) are freed before the next is read.
//! Validation holds the jobs it has built and one `RawJob`; never every `RawJob` at once.

use std::ops::Range;
use std::str::FromStr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use toml::Spanned;
use toml::de::{DeTable, DeValue};

use super::raw::RawJob;
use super::split::{Split, parse_piece};
use super::validate::Validator;
use crate::schedule::Ahead;

/// Fewer pieces than this are read on the validating thread alone: a thread costs
/// more than it saves.
const READ_AHEAD_MIN: usize = 256;

/// How many pieces the checking threads may run ahead of validation, so that what they
/// find and validation has not taken stays small.
const READ_AHEAD_WINDOW: usize = 1024;

/// How far validation has read, shared with the checking threads.
struct Progress {
    taken: AtomicUsize,
    lock: Mutex<()>,
    moved: Condvar,
}

impl Progress {
    /// Validation is done (or gone): the threads stop at their next piece.
    const DONE: usize = usize::MAX / 2;

    fn set(&self, taken: usize) {
        self.taken.store(taken, Ordering::Release);
        let _held = self
            .lock
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        self.moved.notify_all();
    }

    /// Waits until piece `i` is within the window of what validation has taken;
    /// `false` when validation has passed it (or is done).
    fn wait_for(&self, i: usize) -> bool {
        let mut held = self
            .lock
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        loop {
            let taken = self.taken.load(Ordering::Acquire);
            if i < taken {
                return false;
            }
            if i < taken + READ_AHEAD_WINDOW {
                return true;
            }
            // Timed, so that a missed wake-up costs a few milliseconds, never a hang.
            held = self
                .moved
                .wait_timeout(held, std::time::Duration::from_millis(5))
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .0;
        }
    }
}

/// Threads that check the cron expressions of the jobs still to be read into an
/// `Ahead`, a window ahead of validation, so that croner's parse and the search for the
/// first occurrence (a third of `check`) run beside the rest of validation. They read
/// `schedule` and `timezone` off each piece's text; a guess validation does not confirm
/// is never used (`Ahead` is keyed by expression and zone). Dropping this stops them.
pub(super) struct ReadAhead {
    progress: Arc<Progress>,
    taken: usize,
}

impl ReadAhead {
    fn took(&mut self) {
        self.taken += 1;
        if self.taken.is_multiple_of(128) {
            self.progress.set(self.taken);
        }
    }
}

impl Drop for ReadAhead {
    fn drop(&mut self) {
        self.progress.set(Progress::DONE);
    }
}

/// The value of `key = "..."` (or `'...'`) on a line of its own in `piece`, if it is a
/// plain string: enough for a guess.
fn plain_string<'a>(piece: &'a str, key: &str) -> Option<&'a str> {
    piece.lines().find_map(|line| {
        let rest = line.trim_start().strip_prefix(key)?.trim_start();
        let rest = rest.strip_prefix('=')?.trim_start();
        let quote = rest.chars().next().filter(|c| *c == '"' || *c == '\'')?;
        let (value, _) = rest[1..].split_once(quote)?;
        (!value.contains('\\')).then_some(value)
    })
}

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

    /// Starts threads in `scope` that check the cron expressions of the pieces still to
    /// be read (in `tz`, unless a job names its own zone) into `ahead`; `None` when there
    /// are too few pieces, or one core.
    pub fn read_ahead<'scope>(
        &self,
        scope: &'scope std::thread::Scope<'scope, '_>,
        tz: Option<Tz>,
        now: DateTime<Utc>,
        ahead: &Arc<Ahead>,
    ) -> Option<ReadAhead>
    where
        't: 'scope,
    {
        let pieces: Arc<[&'t str]> = self
            .files
            .iter()
            .flat_map(|f| f.pieces.as_slice().iter().map(|p| &f.text[p.clone()]))
            .collect();
        // Validation keeps one core; the others check.
        let threads = std::thread::available_parallelism()
            .map_or(1, std::num::NonZero::get)
            .min(4)
            - 1;
        if pieces.len() < READ_AHEAD_MIN || threads == 0 {
            return None;
        }
        let progress = Arc::new(Progress {
            taken: AtomicUsize::new(0),
            lock: Mutex::new(()),
            moved: Condvar::new(),
        });
        for first in 0..threads {
            let (pieces, ahead, progress) = (
                Arc::clone(&pieces),
                Arc::clone(ahead),
                Arc::clone(&progress),
            );
            let spawned = std::thread::Builder::new()
                .name("cronmail-check".into())
                .spawn_scoped(scope, move || {
                    for (i, piece) in pieces.iter().enumerate().skip(first).step_by(threads) {
                        if !progress.wait_for(i) {
                            if progress.taken.load(Ordering::Acquire) >= Progress::DONE {
                                return;
                            }
                            continue;
                        }
                        let Some(expr) = plain_string(piece, "schedule") else {
                            continue;
                        };
                        let zone = plain_string(piece, "timezone");
                        if let Some(tz) = zone.map_or(tz, |z| Tz::from_str(z).ok()) {
                            ahead.check(expr, tz, now);
                        }
                    }
                });
            if spawned.is_err() {
                break;
            }
        }
        Some(ReadAhead { progress, taken: 0 })
    }

    /// The next job, deserialized (its mistakes reported through `v`, which is moved to
    /// the job's file); `None` when every file's jobs were read.
    pub fn next(&mut self, v: &mut Validator<'_>) -> Option<RawJob> {
        self.next_from(v, None)
    }

    /// `next`, telling `reading` (started on this feed, and told of every piece taken
    /// since) how far it has read.
    pub fn next_from(
        &mut self,
        v: &mut Validator<'_>,
        mut reading: Option<&mut ReadAhead>,
    ) -> Option<RawJob> {
        loop {
            let f = self.files.front_mut()?;
            v.in_file(f.file);
            if let Some(item) = f.items.next() {
                if let Some(job) = job_of(v, item, f.file) {
                    return Some(job);
                }
                continue;
            }
            let piece = f.pieces.next();
            if piece.is_some()
                && let Some(r) = reading.as_deref_mut()
            {
                r.took();
            }
            match piece {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Host;
    use crate::schedule::Schedule;
    use std::fmt::Write as _;

    #[test]
    fn plain_strings_are_read_off_their_line_and_nothing_else_is() {
        let piece =
            "[[job]]\nname = \"a\"\n  schedule='0 9 * * *'\ntimezone = \"Europe/Paris\" # here\n";
        assert_eq!(plain_string(piece, "schedule"), Some("0 9 * * *"));
        assert_eq!(plain_string(piece, "timezone"), Some("Europe/Paris"));
        assert_eq!(plain_string(piece, "to"), None);
        // Escapes, other types and keys that only begin alike are left to the parse.
        assert_eq!(
            plain_string("schedule = \"0 9 \\u002a * *\"\n", "schedule"),
            None
        );
        assert_eq!(plain_string("schedule = 5\n", "schedule"), None);
        assert_eq!(plain_string("schedules = \"x\"\n", "schedule"), None);
        assert_eq!(plain_string("schedule = \"open\n", "schedule"), None);
    }

    /// Enough jobs for the checking threads to start, with zones of their own, guesses
    /// they get wrong and mistakes: every job's first occurrence is the one its schedule
    /// has on its own, and every mistake is reported at its line, as without them.
    #[test]
    fn checks_made_ahead_change_nothing_validation_finds() {
        let now = chrono::TimeZone::with_ymd_and_hms(&Utc, 2026, 3, 28, 12, 0, 0).unwrap();
        let zones = [
            "UTC",
            "Europe/London",
            "America/New_York",
            "Australia/Lord_Howe",
        ];
        let mut text = String::from(
            "from = \"bot@example.com\"\ntimezone = \"Europe/Berlin\"\n[outbox]\ndir = \"o\"\n",
        );
        let mut expected = Vec::new();
        for i in 0..400 {
            let expr = format!("{} {} {} * *", i % 60, (i / 3) % 24, 1 + i % 28);
            let zone = (i % 5 < 4).then(|| zones[i % 4]);
            writeln!(text, "[[job]]\nname = \"j{i}\"").unwrap();
            match i % 10 {
                // A decoy the threads take for the schedule.
                3 => text.push_str("body = \"\"\"\nschedule = \"* * * * *\"\n\"\"\"\n"),
                _ => text.push_str("body = \"b\"\n"),
            }
            match i % 10 {
                // Written with an escape: the threads cannot read it.
                7 => writeln!(text, "schedule = \"{}\"", expr.replacen(' ', "\\u0020", 1)).unwrap(),
                _ => writeln!(text, "schedule = \"{expr}\"").unwrap(),
            }
            if let Some(z) = zone {
                writeln!(text, "timezone = \"{z}\"").unwrap();
            }
            text.push_str("to = [\"a@example.com\"]\nsubject = \"s\"\n");
            let tz: Tz = zone.unwrap_or("Europe/Berlin").parse().unwrap();
            let first = Schedule::parse(&expr, tz).unwrap().validate(now).unwrap();
            expected.push((format!("j{i}"), first));
        }
        let cfg = crate::config::parse(std::path::Path::new("jobs.toml"), &text, &Host::fixed(now))
            .unwrap();
        let found: Vec<(String, DateTime<Utc>)> = cfg
            .jobs
            .iter()
            .map(|j| (j.name.to_string(), j.first.unwrap()))
            .collect();
        assert_eq!(found, expected);

        // Mistakes among many: reported where they are, once each.
        let bad = text
            .replacen("schedule = \"10 3 11 * *\"", "schedule = \"0 0 30 2 *\"", 1)
            .replacen("schedule = \"20 6 21 * *\"", "schedule = \"61 * * * *\"", 1);
        let errs = crate::config::parse(std::path::Path::new("jobs.toml"), &bad, &Host::fixed(now))
            .unwrap_err()
            .0;
        let line = |s: &str| bad[..bad.find(s).unwrap()].matches('\n').count() + 1;
        let at: Vec<(Option<String>, usize, bool)> = errs
            .iter()
            .map(|d| {
                (
                    d.job.clone(),
                    d.location.unwrap().0,
                    d.message.contains("never fires"),
                )
            })
            .collect();
        assert_eq!(
            at,
            [
                (Some("j10".to_owned()), line("\"0 0 30 2 *\""), true),
                (Some("j20".to_owned()), line("\"61 * * * *\""), false),
            ]
        );
    }
}
