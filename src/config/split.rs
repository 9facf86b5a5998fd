//! A TOML file cut at its `[[job]]` headers, so that each job's table is parsed, validated
//! and freed before the next is parsed, and the whole document never exists at once.
//!
//! Parsing 100,000 jobs as one document held the lexer's tokens, the parser's events and
//! the document's tables (about 1.4 KB a job) at the same time as the jobs built from it;
//! cut, the load holds the text, one job's table, and the jobs built so far.
//!
//! The cut is made with toml's own lexer (`toml_parser`), so a `[[job]]` inside a string
//! or an array is never taken for a header. Each piece is a table header and the lines up
//! to the next header: a `[[job]]` starts a job, a `[job.NAME]` header goes with the job
//! before it (`[job.vars]`, `[job.invite]`), and any other header belongs to the rest of
//! the file. When the file cannot be cut with certainty (a bracket never closed, a
//! quoted first key in a header, a stray `]`), `split` says so and the caller parses the
//! file whole, as before.

use std::borrow::Cow;
use std::ops::Range;

use toml::Spanned;
use toml::de::{DeTable, DeValue};
use toml_parser::Source;
use toml_parser::lexer::{Token, TokenKind};

/// A file, cut.
pub(super) struct Split<'t> {
    /// Everything but the jobs, at the same offsets: the jobs' bytes are blanked (line
    /// ends kept), so that a span or line in it is the file's.
    pub rest: Cow<'t, str>,
    /// Each `[[job]]` with its sub-tables: from its `[` to the next header not under it.
    pub jobs: Vec<Range<usize>>,
}

/// What a header starts.
#[derive(PartialEq)]
enum Piece {
    Job,
    UnderJob,
    Other,
}

/// Cuts `text` at its headers; `None` when it cannot be sure where they are.
pub(super) fn split(text: &str) -> Option<Split<'_>> {
    let mut tokens = Source::new(text).lex().peekable();
    let mut depth = 0usize;
    let mut line_start = true;
    // The pieces of the file that are jobs, and where the last non-job piece ends.
    let mut jobs: Vec<Range<usize>> = Vec::new();
    let mut in_job = false;
    let mut rest_end = 0;
    let mut piece_start = 0;
    while let Some(token) = tokens.next() {
        match token.kind() {
            TokenKind::Newline => line_start = true,
            TokenKind::Whitespace | TokenKind::Comment => {}
            TokenKind::LeftSquareBracket if depth == 0 && line_start => {
                let start = token.span().start();
                let piece = header(text, &mut tokens)?;
                // The piece before this header ends here.
                if in_job {
                    if piece != Piece::UnderJob {
                        jobs.push(piece_start..start);
                    }
                } else {
                    rest_end = start;
                }
                match piece {
                    Piece::Job => {
                        in_job = true;
                        piece_start = start;
                    }
                    Piece::UnderJob if in_job => {}
                    Piece::UnderJob | Piece::Other => in_job = false,
                }
                line_start = false;
            }
            TokenKind::LeftSquareBracket | TokenKind::LeftCurlyBracket => {
                depth += 1;
                line_start = false;
            }
            TokenKind::RightSquareBracket | TokenKind::RightCurlyBracket => {
                depth = depth.checked_sub(1)?;
                line_start = false;
            }
            TokenKind::Eof => break,
            _ => line_start = false,
        }
    }
    if depth != 0 {
        return None;
    }
    if in_job {
        jobs.push(piece_start..text.len());
    } else {
        rest_end = text.len();
    }
    let rest = if jobs.first().is_none_or(|j| j.start >= rest_end) {
        Cow::Borrowed(&text[..rest_end])
    } else {
        let mut bytes = text.as_bytes()[..rest_end].to_vec();
        for job in jobs.iter().take_while(|j| j.start < rest_end) {
            for b in &mut bytes[job.clone()] {
                if *b != b'\n' && *b != b'\r' {
                    *b = b' ';
                }
            }
        }
        // Only ASCII bytes were written, over whole characters: still UTF-8.
        Cow::Owned(String::from_utf8(bytes).ok()?)
    };
    Some(Split { rest, jobs })
}

/// Reads a header after its first `[`, up to its last `]`, and says what it starts.
fn header(
    text: &str,
    tokens: &mut std::iter::Peekable<impl Iterator<Item = Token>>,
) -> Option<Piece> {
    let array = tokens
        .next_if(|t| t.kind() == TokenKind::LeftSquareBracket)
        .is_some();
    let mut keys = 0;
    let mut first_is_job = false;
    loop {
        let token = tokens.next()?;
        let raw = &text[token.span().start()..token.span().end()];
        match token.kind() {
            TokenKind::Whitespace | TokenKind::Dot => {}
            TokenKind::Atom => {
                if keys == 0 {
                    first_is_job = raw == "job";
                }
                keys += 1;
            }
            TokenKind::BasicString | TokenKind::LiteralString => {
                // `["job"]` is `[job]`: too rare to decode, so the file is parsed whole.
                if keys == 0 {
                    return None;
                }
                keys += 1;
            }
            TokenKind::RightSquareBracket => break,
            _ => return None,
        }
    }
    if array && tokens.next()?.kind() != TokenKind::RightSquareBracket {
        return None;
    }
    Some(match (first_is_job, keys, array) {
        (true, 1, true) => Piece::Job,
        (true, 1, false) | (false, _, _) => Piece::Other,
        (true, _, _) => Piece::UnderJob,
    })
}

/// A toml error and where it is in the file.
pub(super) type Located = (Option<Range<usize>>, toml::de::Error);

/// The table of one piece cut by `split`, parsed, with every span moved to the file's
/// offsets; or toml's errors, at the file's offsets too.
pub(super) fn parse_piece(
    text: &str,
    piece: Range<usize>,
) -> Result<Spanned<DeTable<'_>>, Vec<Located>> {
    let at = piece.start;
    let (root, errors) = DeTable::parse_recoverable(&text[piece]);
    if !errors.is_empty() {
        return Err(errors
            .into_iter()
            .map(|e| (e.span().map(|s| s.start + at..s.end + at), e))
            .collect());
    }
    Ok(shift_table(root, at))
}

fn shift_span(span: Range<usize>, by: usize) -> Range<usize> {
    span.start + by..span.end + by
}

fn shift_table(table: Spanned<DeTable<'_>>, by: usize) -> Spanned<DeTable<'_>> {
    let span = shift_span(table.span(), by);
    let inner = table
        .into_inner()
        .into_iter()
        .map(|(k, v)| {
            let kspan = shift_span(k.span(), by);
            (Spanned::new(kspan, k.into_inner()), shift_value(v, by))
        })
        .collect();
    Spanned::new(span, inner)
}

fn shift_value(value: Spanned<DeValue<'_>>, by: usize) -> Spanned<DeValue<'_>> {
    let span = value.span();
    match value.into_inner() {
        DeValue::Table(t) => {
            let t = shift_table(Spanned::new(span, t), by);
            let span = t.span();
            Spanned::new(span, DeValue::Table(t.into_inner()))
        }
        DeValue::Array(mut items) => {
            for item in items.iter_mut() {
                let old = std::mem::replace(item, Spanned::new(0..0, DeValue::Boolean(false)));
                *item = shift_value(old, by);
            }
            Spanned::new(shift_span(span, by), DeValue::Array(items))
        }
        other => Spanned::new(shift_span(span, by), other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pieces(text: &str) -> Option<(String, Vec<&str>)> {
        let s = split(text)?;
        Some((
            s.rest.into_owned(),
            s.jobs.iter().map(|r| &text[r.clone()]).collect(),
        ))
    }

    #[test]
    fn jobs_are_cut_at_their_headers_with_their_sub_tables() {
        let text = "from = \"a@b.c\"\n[outbox]\ndir = \"o\"\n[[job]]\nname = \"a\"\n[job.vars]\nx = 1\n[[job]]\nname = \"b\"\n[smtp]\nhost = \"h\"\n";
        let (rest, jobs) = pieces(text).unwrap();
        assert_eq!(
            jobs,
            [
                "[[job]]\nname = \"a\"\n[job.vars]\nx = 1\n",
                "[[job]]\nname = \"b\"\n"
            ]
        );
        assert_eq!(rest.len(), text.len());
        assert_eq!(rest.lines().count(), text.lines().count());
        assert!(rest.starts_with("from = \"a@b.c\"\n[outbox]\ndir = \"o\"\n"));
        assert!(rest.ends_with("[smtp]\nhost = \"h\"\n"));
        assert!(!rest.contains("job"));
        // Nothing after the jobs: the rest is the file's beginning, not a copy.
        let s = split("[outbox]\n[[job]]\nname = \"a\"\n").unwrap();
        assert!(matches!(s.rest, Cow::Borrowed("[outbox]\n")));
    }

    #[test]
    fn headers_inside_strings_and_arrays_are_not_headers() {
        let text = "[[job]]\nbody = \"\"\"\n[[job]]\n\"\"\"\nm = [\n[1],\n]\n[[job]]\nname = 'x'\n";
        let (_, jobs) = pieces(text).unwrap();
        assert_eq!(jobs.len(), 2);
        assert!(jobs[0].contains("\"\"\"\n[[job]]\n\"\"\""));
    }

    #[test]
    fn uncertain_files_are_parsed_whole() {
        assert!(split("[\"job\"]\nx = 1\n").is_none());
        assert!(split("[[job]]\nto = [\"a\",\n[[job]]\n").is_none());
        assert!(split("]\n").is_none());
        // A sub-table before any job goes with the rest, where it is an error.
        let (rest, jobs) = pieces("[job.vars]\nx = 1\n").unwrap();
        assert!(jobs.is_empty());
        assert_eq!(rest, "[job.vars]\nx = 1\n");
    }

    #[test]
    fn pieces_parse_at_the_files_offsets() {
        let text = "[outbox]\n[[job]]\nname = \"a\"\nto = [\"x@y.z\"]\n[job.vars]\nk = { a = 1 }\n";
        let s = split(text).unwrap();
        let table = parse_piece(text, s.jobs[0].clone()).unwrap();
        let whole = DeTable::parse(text).unwrap();
        let job = |t: &DeTable<'_>| format!("{:?}", t.get("job"));
        // The same values and spans as the whole file's parse.
        assert_eq!(job(table.get_ref()), job(whole.get_ref()));
        let bad = "[outbox]\n[[job]]\nname = = 1\n";
        let errs = parse_piece(bad, split(bad).unwrap().jobs[0].clone()).unwrap_err();
        assert_eq!(
            errs[0].0.as_ref().map(|s| &bad[s.start..]).map(|s| &s[..1]),
            Some("=")
        );
    }
}
