//! A problem in a configuration file, located by line and column.
//!
//! `check` prints every problem of a file at once (as ripgrep and rustc do), so
//! validation collects `Diagnostic`s instead of returning at the first one.

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

/// One problem, with where it is and, when it belongs to a job, which job.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Diagnostic {
    pub path: PathBuf,
    /// 1-based line and column; `None` when the problem is about the file as a whole.
    pub location: Option<(usize, usize)>,
    pub job: Option<String>,
    pub message: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.path.display())?;
        if let Some((line, col)) = self.location {
            write!(f, ":{line}:{col}")?;
        }
        f.write_str(": ")?;
        if let Some(job) = &self.job {
            write!(f, "job `{job}`: ")?;
        }
        f.write_str(&self.message)
    }
}

/// All the problems found in one configuration file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostics(pub Vec<Diagnostic>);

impl fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, d) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{d}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Diagnostics {}

/// Turns byte offsets into line and column numbers for one source text.
pub(crate) struct Source<'a> {
    pub path: &'a Path,
    text: &'a str,
    line_starts: Vec<usize>,
}

impl<'a> Source<'a> {
    pub fn new(path: &'a Path, text: &'a str) -> Self {
        let line_starts = std::iter::once(0)
            .chain(text.match_indices('\n').map(|(i, _)| i + 1))
            .collect();
        Source {
            path,
            text,
            line_starts,
        }
    }

    /// 1-based (line, column), the column counted in characters.
    pub fn line_col(&self, offset: usize) -> (usize, usize) {
        let offset = offset.min(self.text.len());
        let line = self.line_starts.partition_point(|&s| s <= offset).max(1);
        let start = self.line_starts[line - 1];
        let col = self
            .text
            .get(start..offset)
            .map_or(offset - start, |s| s.chars().count());
        (line, col + 1)
    }

    /// The text from `offset` to the end.
    pub fn text_at(&self, offset: usize) -> &str {
        self.text.get(offset..).unwrap_or_default()
    }

    pub fn at(
        &self,
        span: Option<Range<usize>>,
        job: Option<&str>,
        message: impl Into<String>,
    ) -> Diagnostic {
        Diagnostic {
            path: self.path.to_path_buf(),
            location: span.map(|s| self.line_col(s.start)),
            job: job.map(str::to_owned),
            message: message.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_col_counts_from_one_and_in_characters() {
        let src = Source::new(Path::new("x"), "ab\nçd = 1\n");
        assert_eq!(src.line_col(0), (1, 1));
        assert_eq!(src.line_col(3), (2, 1));
        // 'ç' is two bytes; `d` is the second character.
        assert_eq!(src.line_col(5), (2, 2));
    }
}
