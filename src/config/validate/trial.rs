//! The test render of every valid job's templates, for its first occurrence: on another
//! thread while the jobs are still being read, and on this one too once they are.
//!
//! The loop in `Validator::jobs` hands over one `Task` a template as each job passes;
//! a render thread (and, after the loop, the loop's own thread) take them in batches,
//! each with a `Templates` of its own that renders the sources the loop kept. The
//! mistakes come back in the order the tasks went in, so they are reported in the
//! file's order. Rendering after the loop, on both cores, left the second core idle
//! for the whole loop: at a million jobs that was 3 s of a 17 s `check`.

use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Arc, Mutex, PoisonError};

use chrono_tz::Tz;

use crate::config::Job;
use crate::config::types::{header_control, unsubscribe_url};
use crate::render::{Occasion, Part, Source, Templates, Vars};

/// A template's problem: its line, when known, and what is wrong.
pub(super) type Mistake = Option<(Option<usize>, String)>;

/// The mistakes found, each with its task's number: only these are kept (a
/// `Mistake` for every template was 40 bytes each, 80 MB at a million jobs).
pub(super) type Found = Vec<(usize, (Option<usize>, String))>;

/// Templates a batch: one hand-over for this many.
const BATCH: usize = 256;

/// Batches waiting for a renderer, at most: the loop waits rather than run ahead.
const QUEUED: usize = 16;

/// The test render of one template of one valid job.
pub(super) struct Task {
    job: Arc<str>,
    part: Part,
    source: Source,
    /// The first occurrence and the job's zone; none when there is none to render
    /// for (then the template is compiled, at least).
    when: Option<(Occasion, Tz)>,
    vars: Vars,
    row: Option<Vars>,
}

impl Task {
    /// The task for `part` of `job`, whose source is `source`; `row` is the first row
    /// of its `recipients_file`, if it has one.
    pub(super) fn new(job: &Job, part: Part, source: Source, row: Option<&Vars>) -> Self {
        let when = job
            .first
            .filter(|_| job.recipients_file.is_none() || row.is_some())
            .map(|next| (job.occasion(next), job.tz()));
        Task {
            job: Arc::clone(&job.base),
            part,
            source,
            when,
            vars: job.vars.clone(),
            row: row.cloned(),
        }
    }

    fn run(&self, templates: &mut Templates) -> Mistake {
        let text = &self.source.text;
        if self.source.shared {
            templates.compile_shared(text);
        }
        let Some((occasion, tz)) = self.when else {
            // No occurrence (the schedule's problem is reported) or no row: compile it.
            return templates
                .check_source(&self.job, self.part, text)
                .err()
                .map(|e| (e.line, e.message));
        };
        let next = occasion.at;
        match templates.render_source(
            &self.job,
            self.part,
            text,
            occasion,
            tz,
            &self.vars,
            self.row.as_ref(),
        ) {
            Ok(out) if self.part == Part::Unsubscribe && !unsubscribe_url(&out) => Some((
                None,
                format!(
                    "`list_unsubscribe` renders as `{out}`; it must be a `mailto:` or `https://` URL"
                ),
            )),
            Ok(out) if self.part == Part::Subject => header_control(&out).map(|bad| {
                (
                    None,
                    format!(
                        "the subject renders with {bad} for {next}; header values must be one line"
                    ),
                )
            }),
            Ok(_) => None,
            Err(e) => Some((e.line, e.message)),
        }
    }
}

type Batches = Arc<Mutex<Receiver<(usize, Vec<Task>)>>>;

/// Takes the loop's tasks and renders them, on a thread of `scope` when there is a
/// core for it (else all at `finish`).
pub(super) struct Trial<'scope> {
    send: Option<SyncSender<(usize, Vec<Task>)>>,
    batches: Batches,
    thread: Option<std::thread::ScopedJoinHandle<'scope, Found>>,
    batch: Vec<Task>,
    sent: usize,
    /// Every task, when no thread renders during the loop.
    kept: Vec<Task>,
}

impl<'scope> Trial<'scope> {
    /// A render thread when this machine has a core to spare and the file has more
    /// than a few jobs.
    pub(super) fn start<'env>(
        scope: &'scope std::thread::Scope<'scope, 'env>,
        jobs: usize,
    ) -> Self {
        let threads = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
        let (send, receive) = sync_channel(QUEUED);
        let batches: Batches = Arc::new(Mutex::new(receive));
        let thread = (threads >= 2 && jobs >= 512)
            .then(|| {
                let batches = Arc::clone(&batches);
                std::thread::Builder::new()
                    .name("cronmail-render".into())
                    .spawn_scoped(scope, move || render(&batches))
                    .ok()
            })
            .flatten();
        Trial {
            send: thread.is_some().then_some(send),
            batches,
            thread,
            batch: Vec::with_capacity(BATCH),
            sent: 0,
            kept: Vec::new(),
        }
    }

    pub(super) fn push(&mut self, task: Task) {
        let Some(send) = &self.send else {
            self.kept.push(task);
            return;
        };
        self.batch.push(task);
        if self.batch.len() == BATCH {
            let batch = std::mem::replace(&mut self.batch, Vec::with_capacity(BATCH));
            // The render thread only stops when this sender is gone.
            let _ = send.send((self.sent * BATCH, batch));
            self.sent += 1;
        }
    }

    /// The mistakes, by the number of their task in the order they were pushed.
    pub(super) fn finish(mut self) -> Found {
        let Some(send) = self.send.take() else {
            let mut templates = Templates::new();
            return found(0, &self.kept, &mut templates);
        };
        if !self.batch.is_empty() {
            let _ = send.send((self.sent * BATCH, std::mem::take(&mut self.batch)));
        }
        drop(send);
        // This thread helps with what is still queued.
        let mut done = render(&self.batches);
        if let Some(thread) = self.thread.take() {
            done.extend(
                thread
                    .join()
                    .unwrap_or_else(|e| std::panic::resume_unwind(e)),
            );
        }
        done.sort_unstable_by_key(|(i, _)| *i);
        done
    }
}

/// The mistakes of `tasks`, numbered from `first`.
fn found(first: usize, tasks: &[Task], templates: &mut Templates) -> Found {
    tasks
        .iter()
        .enumerate()
        .filter_map(|(i, t)| Some((first + i, t.run(templates)?)))
        .collect()
}

/// Renders batches until there are no more, with a `Templates` of its own.
fn render(batches: &Batches) -> Found {
    let mut templates = Templates::new();
    let mut done = Vec::new();
    loop {
        let next = batches
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .recv();
        let Ok((first, batch)) = next else {
            return done;
        };
        done.extend(found(first, &batch, &mut templates));
    }
}

#[cfg(test)]
mod tests {
    use std::fmt::Write as _;
    use std::path::Path;

    use chrono::{TimeZone, Utc};

    use crate::config::{Host, parse};

    const HEAD: &str =
        "from = \"bot@example.com\"\ntimezone = \"Europe/Berlin\"\n[outbox]\ndir = \"o\"\n";

    fn job(i: usize, subject: &str, body: &str) -> String {
        format!(
            "[[job]]\nname = \"j{i}\"\nschedule = \"{} 9 * * *\"\nto = [\"a@example.com\"]\n\
             subject = {subject}\nbody = {body}\n",
            i % 60
        )
    }

    /// (job, line, message) of each error, in the order reported.
    fn errors(text: &str) -> Vec<(Option<String>, usize, String)> {
        let now = Utc.with_ymd_and_hms(2026, 3, 28, 12, 0, 0).unwrap();
        parse(Path::new("jobs.toml"), text, &Host::fixed(now))
            .unwrap_err()
            .0
            .iter()
            .map(|d| (d.job.clone(), d.location.unwrap().0, d.message.clone()))
            .collect()
    }

    /// Enough jobs for the render thread and several batches, the last one short:
    /// every template mistake is reported once, at its line, in the file's order, with
    /// the message the same job gets in a file of its own (rendered without a thread).
    #[test]
    fn mistakes_found_on_the_render_thread_are_the_ones_found_without_it() {
        let shared = "\"Hi {{ job }}, due {{ date }}.\"";
        let bad = [
            (3, "\"{{ vars.nope }}\"", shared),
            (300, "\"s\"", "\"\"\"\nfine\n{% if %}\n\"\"\""),
            (777, "\"{{ 'a' ~ '\\n' ~ 'b' }}\"", shared),
            (1299, "\"s {{ scheduled_at | strftime('%Q') }}\"", shared),
        ];
        let mut text = String::from(HEAD);
        let mut alone = Vec::new();
        for i in 0..1300 {
            let subject = format!("\"s {i}\"");
            let (subject, body) = match bad.iter().find(|b| b.0 == i) {
                Some(&(_, s, b)) => (s.to_owned(), b),
                None => (subject, shared),
            };
            let piece = job(i, &subject, body);
            if bad.iter().any(|b| b.0 == i) {
                let own = format!("{HEAD}{piece}");
                let head_lines = HEAD.matches('\n').count();
                let here = text.matches('\n').count();
                alone.extend(
                    errors(&own)
                        .into_iter()
                        .map(|(j, line, m)| (j, line - head_lines + here, m)),
                );
            }
            text.push_str(&piece);
        }
        assert_eq!(alone.len(), bad.len(), "{alone:#?}");
        let found = errors(&text);
        assert_eq!(found, alone);
        let jobs: Vec<_> = found.iter().map(|(j, _, _)| j.clone().unwrap()).collect();
        assert_eq!(jobs, ["j3", "j300", "j777", "j1299"]);
        assert!(found[0].2.contains("nope"), "{}", found[0].2);
        assert!(found[2].2.contains("line break"), "{}", found[2].2);
        let mut valid = String::from(HEAD);
        for i in 0..600 {
            write!(valid, "{}", job(i, &format!("\"s {i}\""), shared)).unwrap();
        }
        let now = Utc.with_ymd_and_hms(2026, 3, 28, 12, 0, 0).unwrap();
        assert_eq!(
            parse(Path::new("jobs.toml"), &valid, &Host::fixed(now))
                .unwrap()
                .jobs
                .len(),
            600
        );
    }
}
