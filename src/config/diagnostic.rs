//! A problem in a configuration file, located by line and column.
//!
//! `check` prints every problem of a file at once (as ripgrep and rustc do), so
//! validation collects `Diagnostic`s instead of returning at the first one.

use std::fmt::{self, Write as _};
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
    /// A warning: worth saying, but the file is valid (`check` exits 0).
    pub warning: bool,
    /// The line of the file the location is on, to show under the message.
    pub snippet: Option<String>,
}

impl Diagnostic {
    /// A problem of the file as a whole (it cannot be read, it is empty).
    pub fn file(path: &Path, message: impl Into<String>) -> Self {
        Diagnostic {
            path: path.to_path_buf(),
            location: None,
            job: None,
            message: message.into(),
            warning: false,
            snippet: None,
        }
    }

    /// The message, then the line it is about with a caret under the column, as rustc
    /// and taplo show it.
    pub fn with_snippet(&self) -> String {
        let mut out = self.to_string();
        if let (Some((line, col)), Some(text)) = (self.location, &self.snippet) {
            let num = line.to_string();
            let pad = " ".repeat(num.len());
            // The caret goes under the column's character, tabs kept as tabs.
            let lead: String = text
                .chars()
                .take(col.saturating_sub(1))
                .map(|c| if c == '\t' { '\t' } else { ' ' })
                .collect();
            let _ = write!(out, "\n{pad} |\n{num} | {text}\n{pad} | {lead}^");
        }
        out
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.path.display())?;
        if let Some((line, col)) = self.location {
            write!(f, ":{line}:{col}")?;
        }
        f.write_str(": ")?;
        if self.warning {
            f.write_str("warning: ")?;
        }
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

impl Diagnostics {
    /// How many are errors (the rest are warnings).
    pub fn errors(&self) -> usize {
        self.0.iter().filter(|d| !d.warning).count()
    }
}

/// A line of jobs.toml fit to print: a value that may be a secret is masked (a literal
/// `password` or `client_secret`, a password inside a URL, the path of a ping or
/// webhook URL, where its token is).
pub(crate) fn redact(line: &str) -> String {
    const URL_KEYS: [&str; 3] = ["ping_url", "heartbeat_url", "webhook"];
    const SECRET_KEYS: [&str; 5] = [
        "password",
        "client_secret",
        "secret",
        "token",
        "refresh_token",
    ];
    if let Some((key, value)) = line.split_once('=')
        && URL_KEYS.contains(&key.trim().trim_matches('"'))
    {
        let v = value.trim().trim_matches(['"', '\'']);
        let (scheme, rest) = v.split_once("://").unwrap_or(("", v));
        let host = rest.split(['/', '?', '#']).next().unwrap_or("");
        let host = host.rsplit('@').next().unwrap_or(host);
        return format!("{} = \"{scheme}://{host}/********\"", key.trim_end());
    }
    if let Some((key, _)) = line.split_once('=') {
        let key = key.trim().trim_matches('"');
        if SECRET_KEYS.contains(&key) {
            return format!(
                "{} = \"********\"",
                line.split_once('=').map_or("", |(k, _)| k.trim_end())
            );
        }
    }
    // scheme://user:password@host -> scheme://user:********@host
    let mut out = String::with_capacity(line.len());
    let mut rest = line;
    while let Some(i) = rest.find("://") {
        let (head, tail) = rest.split_at(i + 3);
        out.push_str(head);
        let end = tail.find(['/', ' ', '"', '\'', '?']).unwrap_or(tail.len());
        let authority = &tail[..end];
        match authority
            .rfind('@')
            .and_then(|at| authority[..at].find(':').map(|c| (c, at)))
        {
            Some((colon, at)) => {
                out.push_str(&authority[..=colon]);
                out.push_str("********");
                out.push_str(&authority[at..]);
            }
            None => out.push_str(authority),
        }
        rest = &tail[end..];
    }
    out.push_str(rest);
    out
}

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
        let location = span.map(|s| self.line_col(s.start));
        Diagnostic {
            path: self.path.to_path_buf(),
            location,
            job: job.map(str::to_owned),
            message: message.into(),
            warning: false,
            snippet: location.map(|(line, _)| redact(self.line(line))),
        }
    }

    /// The text of 1-based `line`, without its line break.
    pub fn line(&self, line: usize) -> &str {
        let start = self
            .line_starts
            .get(line.wrapping_sub(1))
            .copied()
            .unwrap_or(0);
        let end = self
            .line_starts
            .get(line)
            .copied()
            .unwrap_or(self.text.len());
        self.text
            .get(start..end)
            .unwrap_or_default()
            .trim_end_matches(['\n', '\r'])
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

    #[test]
    fn a_secret_on_the_line_shown_is_masked() {
        assert_eq!(
            redact("ping_url = \"https://hc-ping.com/abc-token\""),
            "ping_url = \"https://hc-ping.com/********\""
        );
        assert_eq!(redact("password = \"hunter2\""), "password = \"********\"");
        assert_eq!(
            redact("  client_secret = 'x'"),
            "  client_secret = \"********\""
        );
        assert_eq!(
            redact("url = \"postgres://u:hunter2@db/c\""),
            "url = \"postgres://u:********@db/c\""
        );
        assert_eq!(redact("password_env = \"PW\""), "password_env = \"PW\"");
        assert_eq!(redact("to = [\"a@b\"]"), "to = [\"a@b\"]");
    }
}
