//! The man pages, made from `docs/` (one source): `docs/cronmail.md` is `cronmail(1)`,
//! `docs/jobs.toml.md` is `cronmail-jobs.toml(5)`. Used by `gen_assets` (the package
//! build) and by the tests that check the pages.

/// Each page: its name, its section, and its Markdown source under `docs/`.
pub const PAGES: [(&str, u8, &str); 2] = [
    ("cronmail", 1, "cronmail.md"),
    ("cronmail-jobs.toml", 5, "jobs.toml.md"),
];

/// Converts one doc to roff. The doc's `# title` line is dropped and its first
/// paragraph (`name - what it is`) becomes the NAME section; `##` headings are the
/// page's sections (in capitals, as man pages write them), `###` its subsections;
/// inline code is bold.
pub fn page(markdown: &str, name: &str, section: u8) -> String {
    let body = markdown.split_once('\n').map_or(markdown, |(first, rest)| {
        if first.starts_with("# ") {
            rest
        } else {
            markdown
        }
    });
    let mut out = String::from("## NAME\n");
    let mut fenced = false;
    for line in body.lines() {
        if line.starts_with("```") {
            fenced = !fenced;
        }
        match line.strip_prefix("## ") {
            Some(title) if !fenced => {
                out.push_str("## ");
                out.push_str(&title.to_uppercase());
            }
            _ => out.push_str(line),
        }
        out.push('\n');
    }
    // mandown sets inline code in a constant-width font but keeps its backticks; a
    // man page shows literals in bold, without them.
    mandown::convert(&out, &name.to_uppercase(), section)
        .replace("`\\f[CR]", "\\fB")
        .replace("\\fP`", "\\fR")
}
