//! What start-up leaves resident and the steady state does not use, given back.
//!
//! Two kinds, measured in BENCHMARKS.md ("memory"):
//! - heap that loading jobs.toml used and freed (one job's table at a time, the parse
//!   caches, the test render): glibc keeps freed memory in its arena;
//! - pages of the binary and its libraries that start-up ran or read once (argument
//!   parsing, TOML, validation, the test render of every template, TLS set-up). The
//!   kernel maps 64 KB around each page touched, so start-up leaves most of cronmail's
//!   12 MB of code resident though the timer loop runs a few hundred KB of it.
//!
//! The second is the kernel's `MADV_DONTNEED` on each file mapping that is not writable
//! and holds no private copy (`Anonymous: 0 kB` in smaps): its pages are the file's,
//! they stay in the page cache, and a page used again is mapped again by a minor fault.
//! Relocated read-only data (RELRO) has private copies and is left alone.

use std::io::Read;

/// How long after start-up (or a reload) the second pass runs: the worker's first
/// round over unfinished occurrences, the first order poll and the HTTP listener's
/// start touch code after the first pass.
const SETTLE: std::time::Duration = std::time::Duration::from_secs(10);

/// Gives back both, after start-up and after each reload, now and once settled. Each
/// pass reads `/proc/self/smaps` (a millisecond at 10,000 jobs, more at a million), so
/// it runs on the blocking pool, never on a thread that fires jobs.
pub fn after_load() {
    drop(tokio::task::spawn_blocking(release));
    tokio::spawn(async {
        tokio::time::sleep(SETTLE).await;
        drop(tokio::task::spawn_blocking(release));
    });
}

/// Makes every thread allocate from glibc's one main arena. By default each thread that
/// meets a locked arena gets one of its own (up to 8 a core), and the parallel test render
/// and the runtime's threads each kept one with what loading left in it: 0.65 MB more
/// settled at 10,000 jobs. Per-thread caches (tcache) still serve small allocations
/// without the lock. Called by `run` first thing, before any thread starts (`check`
/// keeps an arena a thread: its test render is 15% slower at 100,000 jobs with one).
pub fn one_arena() {
    // SAFETY: mallopt takes no pointer and only sets a tunable of glibc's allocator.
    #[allow(unsafe_code)]
    #[cfg(target_env = "gnu")]
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }
}

fn release() {
    // The file pages first: reading smaps takes a buffer the heap trim then gives back.
    release_clean_file_pages();
    release_freed_heap();
}

/// Returns free pages of glibc's heap to the kernel.
fn release_freed_heap() {
    // SAFETY: malloc_trim takes no pointer and only returns free pages of glibc's own
    // heap to the kernel; it is safe to call at any time from any thread.
    #[allow(unsafe_code)]
    #[cfg(target_env = "gnu")]
    unsafe {
        libc::malloc_trim(0);
    }
}

/// The mappings `release_clean_file_pages` may drop: `(start, length)`. A mapping counts
/// only once its own `Anonymous: 0 kB` line was read, so an entry cut short (a read
/// that stopped at its cap) is never taken for clean.
fn clean_file_mappings(smaps: &str) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    // (start, end, a file's non-writable mapping, its Anonymous line read and 0)
    let mut current: Option<(usize, usize, bool, bool)> = None;
    let finish = |m: Option<(usize, usize, bool, bool)>, out: &mut Vec<(usize, usize)>| {
        if let Some((start, end, true, true)) = m {
            out.push((start, end - start));
        }
    };
    for line in smaps.lines() {
        let mut words = line.split_whitespace();
        let Some(first) = words.next() else { continue };
        if let Some((a, b)) = first.split_once('-')
            && let (Ok(start), Ok(end)) =
                (usize::from_str_radix(a, 16), usize::from_str_radix(b, 16))
        {
            finish(current.take(), &mut out);
            let perms = words.next().unwrap_or("");
            let path = words.nth(3).unwrap_or("");
            // A file's pages, never written: text and read-only data, not [vdso] & co.
            let candidate = path.starts_with('/') && perms.len() == 4 && !perms.contains('w');
            current = Some((start, end, candidate, false));
        } else if first == "Anonymous:"
            && let Some(m) = current.as_mut()
        {
            // Private copies (relocations, breakpoints) are not the file's: keep those.
            m.3 = words.next() == Some("0");
        }
    }
    finish(current, &mut out);
    out
}

/// Unmaps the clean file pages that start-up left mapped (see the module's comment).
fn release_clean_file_pages() {
    let mut smaps = String::new();
    let read = std::fs::File::open("/proc/self/smaps")
        .and_then(|f| f.take(4 << 20).read_to_string(&mut smaps));
    if read.is_err() {
        return;
    }
    for (start, len) in clean_file_mappings(&smaps) {
        // SAFETY: the range is a whole mapping of a file that is not writable and has
        // no private (anonymous) pages, so every page in it is the file's own content:
        // MADV_DONTNEED only removes the mapping of those pages, and the next access
        // maps the same bytes again from the page cache. No memory that Rust owns is
        // freed or changed. A mapping that went away meanwhile gives ENOMEM, ignored.
        #[allow(unsafe_code)]
        unsafe {
            libc::madvise(start as *mut libc::c_void, len, libc::MADV_DONTNEED);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_clean_read_only_file_mappings() {
        let smaps = "\
55d332d53000-55d333903000 r-xp 00454000 fd:01 1234 /usr/bin/cronmail
Rss:                8300 kB
Anonymous:             0 kB
55d333903000-55d333a5b000 r--p 01000000 fd:01 1234 /usr/bin/cronmail
Rss:                1356 kB
Anonymous:          1356 kB
55d333a5b000-55d333a6b000 rw-p 01158000 fd:01 1234 /usr/bin/cronmail
Anonymous:            64 kB
55d369c10000-55d369c6e000 rw-p 00000000 00:00 0 [heap]
Anonymous:           376 kB
7f09a48f8000-7f09a4a4e000 r-xp 00028000 fd:01 99 /usr/lib/x86_64-linux-gnu/libc.so.6
Anonymous:             0 kB
7ffc2259b000-7ffc2259d000 r-xp 00000000 00:00 0 [vdso]
Anonymous:             0 kB
7f09a4c00000-7f09a4c10000 r--s 00000000 00:1a 77 /dev/shm/some file
Anonymous:             0 kB
7f09a4d00000-7f09a4d10000 r--p 00000000 fd:01 99 /usr/lib/x86_64-linux-gnu/libm.so.6
Rss:                  64 kB
";
        assert_eq!(
            clean_file_mappings(smaps),
            vec![
                (0x55d3_32d5_3000, 0x55d3_3390_3000 - 0x55d3_32d5_3000),
                (0x7f09_a48f_8000, 0x7f09_a4a4_e000 - 0x7f09_a48f_8000),
                (0x7f09_a4c0_0000, 0x1_0000),
            ]
        );
    }

    /// The pages of the mappings it may drop, resident now, in kB.
    fn resident() -> u64 {
        let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap_or_default();
        let mut sum = 0;
        let mut take = false;
        let keep: Vec<usize> = clean_file_mappings(&smaps).iter().map(|m| m.0).collect();
        for line in smaps.lines() {
            if let Some((a, _)) = line
                .split_whitespace()
                .next()
                .and_then(|w| w.split_once('-'))
                && let Ok(start) = usize::from_str_radix(a, 16)
            {
                take = keep.contains(&start);
            } else if take && let Some(kb) = line.strip_prefix("Rss:") {
                sum += kb
                    .trim()
                    .trim_end_matches(" kB")
                    .parse::<u64>()
                    .unwrap_or(0);
            }
        }
        sum
    }

    /// On this very process: the test binary's text and libraries are dropped (fewer
    /// resident pages), and it runs on.
    #[test]
    fn this_process_gives_back_its_clean_pages_and_runs_on() {
        // The other tests run in this process at the same time and fault pages back in
        // between the release and the count; a few tries keep that from deciding.
        let mut seen = Vec::new();
        for _ in 0..5 {
            let before = resident();
            release_clean_file_pages();
            let after = resident();
            assert!(before > 1024, "{before} kB of clean file pages before");
            seen.push((before, after));
            if after < before / 2 {
                break;
            }
        }
        assert!(
            seen.iter().any(|(before, after)| after < &(before / 2)),
            "kB before and after each try: {seen:?}"
        );
        assert_eq!(format!("{}", 6 * 7), "42");
    }
}
