//! The manual, the man pages and the editor schema agree with the code: every key of
//! jobs.toml is documented and exists, every command, option and exit code is in
//! `cronmail(1)`, every TOML example validates against the schema with an independent
//! validator (Python's `jsonschema`), and the man pages format cleanly.

#[path = "../../examples/support/man.rs"]
mod man;

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use clap::CommandFactory as _;
use serde_json::Value;

use crate::support::*;

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(repo().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

fn schema() -> Value {
    let out = Command::new(env!("CARGO_BIN_EXE_cronmail"))
        .arg("schema")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The properties of one table of the schema, following `$ref`s; keys whose schema is
/// `Never` (a literal `password`, refused with its own message) are left out.
fn properties(schema: &Value, table: &Value) -> BTreeMap<String, Value> {
    let resolve = |v: &Value| -> Value {
        match v.get("$ref").and_then(Value::as_str) {
            Some(r) => schema["$defs"][r.trim_start_matches("#/$defs/")].clone(),
            None => v.clone(),
        }
    };
    let table = resolve(table);
    let mut out = BTreeMap::new();
    for (k, v) in table["properties"].as_object().unwrap() {
        if v.get("$ref").and_then(Value::as_str) == Some("#/$defs/Never") {
            continue;
        }
        let v = if v["type"] == "array" {
            resolve(&v["items"])
        } else {
            resolve(v)
        };
        out.insert(k.clone(), v);
    }
    out
}

/// The keys in the first column of the table under `### {heading}` in jobs.toml.md.
fn documented(doc: &str, heading: &str) -> BTreeSet<String> {
    let start = doc
        .find(&format!("\n### {heading}\n"))
        .unwrap_or_else(|| panic!("docs/jobs.toml.md has no `### {heading}`"));
    let section = &doc[start + heading.len() + 6..];
    let section = &section[..section.find("\n#").unwrap_or(section.len())];
    let mut keys = BTreeSet::new();
    for line in section.lines().filter(|l| l.starts_with("| `")) {
        let first = line.split('|').nth(1).unwrap();
        for key in first.split(',') {
            let key = key.trim().trim_matches('`');
            keys.insert(key.to_owned());
        }
    }
    keys
}

#[test]
fn every_key_of_the_schema_is_documented_and_every_documented_key_exists() {
    let schema = schema();
    let doc = read("docs/jobs.toml.md");
    let top = properties(&schema, &schema);
    let smtp = properties(&schema, &top["smtp"]);
    let job = properties(&schema, &top["job"]);
    let name = |k: &str, v: &Value| {
        // A table is written `[name]`, an array of tables `[[name]]`, as in TOML.
        if v.get("properties").is_some()
            || v.get("additionalProperties") == Some(&Value::Bool(true))
        {
            format!("[{k}]")
        } else {
            k.to_owned()
        }
    };
    let keys = |table: &BTreeMap<String, Value>, parent: &str| -> BTreeSet<String> {
        table
            .iter()
            .map(|(k, v)| match (parent, k.as_str()) {
                ("", "job") => "[[job]]".to_owned(),
                ("smtp", "oauth2") => "[smtp.oauth2]".to_owned(),
                ("job", "vars") => "[job.vars]".to_owned(),
                ("job", "invite") => "[job.invite]".to_owned(),
                _ => name(k, v),
            })
            .collect()
    };
    let mut checked = 0;
    for (heading, table, parent) in [
        ("Top level", top.clone(), ""),
        ("[smtp]", smtp.clone(), "smtp"),
        ("[smtp.oauth2]", properties(&schema, &smtp["oauth2"]), ""),
        ("[outbox]", properties(&schema, &top["outbox"]), ""),
        ("[delivery]", properties(&schema, &top["delivery"]), ""),
        ("[defaults]", properties(&schema, &top["defaults"]), ""),
        ("[ledger]", properties(&schema, &top["ledger"]), ""),
        (
            "[calendars.NAME]",
            properties(&schema, &schema["$defs"]["Calendar"]),
            "",
        ),
        ("[[job]]", job.clone(), "job"),
        ("[job.invite]", properties(&schema, &job["invite"]), ""),
    ] {
        let in_schema = keys(&table, parent);
        let in_docs = documented(&doc, heading);
        assert_eq!(
            in_docs, in_schema,
            "`### {heading}` of docs/jobs.toml.md (left) and the schema (right) disagree"
        );
        checked += in_schema.len();
    }
    assert!(checked > 60, "only {checked} keys compared");
    for refused in ["literal `password`", "literal `client_secret`"] {
        assert!(
            doc.contains(refused),
            "docs/jobs.toml.md does not say `{refused}` is refused"
        );
    }
}

#[test]
fn the_checked_in_schema_is_what_cronmail_schema_prints() {
    let printed = serde_json::to_string_pretty(&schema()).unwrap() + "\n";
    let path = repo().join("docs/jobs.schema.json");
    if std::env::var_os("CRONMAIL_BLESS").is_some() {
        std::fs::write(&path, &printed).unwrap();
    }
    assert!(
        read("docs/jobs.schema.json") == printed,
        "docs/jobs.schema.json is stale: run `cargo run -- schema > docs/jobs.schema.json` (or this test with CRONMAIL_BLESS=1)"
    );
}

#[test]
fn cronmail_1_names_every_command_option_exit_code_and_variable() {
    let doc = read("docs/cronmail.md");
    let section = |start: &str| -> &str {
        let i = doc
            .find(start)
            .unwrap_or_else(|| panic!("docs/cronmail.md has no `{start}`"));
        let rest = &doc[i + start.len()..];
        &rest[..rest.find("\n#").unwrap_or(rest.len())]
    };
    let cli = cronmail::Cli::command();
    let mut commands = 0;
    for sub in cli.get_subcommands() {
        // `oauth2` has its own subcommands; each is a heading `### oauth2 authorize`.
        let leaves: Vec<(String, &clap::Command)> = if sub.has_subcommands() {
            sub.get_subcommands()
                .map(|s| (format!("{} {}", sub.get_name(), s.get_name()), s))
                .collect()
        } else {
            vec![(sub.get_name().to_owned(), sub)]
        };
        for (name, cmd) in leaves {
            let text = section(&format!("\n### {name}"));
            for arg in cmd.get_arguments().filter(|a| !a.is_global_set()) {
                if let Some(long) = arg.get_long() {
                    assert!(
                        text.contains(&format!("--{long}")),
                        "`### {name}` of docs/cronmail.md does not mention --{long}"
                    );
                }
            }
            commands += 1;
        }
    }
    assert!(commands >= 9, "{commands} commands");
    let globals = section("## Global options");
    for arg in cli.get_arguments() {
        if let Some(long) = arg.get_long() {
            assert!(
                globals.contains(&format!("`--{long}`")),
                "Global options lack --{long}"
            );
        }
    }
    let exits = section("## Exit status");
    let listed: BTreeSet<u8> = exits
        .lines()
        .filter_map(|l| l.strip_prefix("| ")?.split(' ').next()?.parse().ok())
        .collect();
    let all: BTreeSet<u8> = cronmail::Exit::ALL.iter().map(|e| e.code()).collect();
    assert_eq!(
        listed, all,
        "the exit status table (left) and `Exit` (right)"
    );
    let env = section("## Environment");
    for var in [
        "CRONMAIL_CONFIG",
        "CRONMAIL_LOG",
        "CRONMAIL_NODE",
        "TZ",
        "STATE_DIRECTORY",
        "CREDENTIALS_DIRECTORY",
        "NOTIFY_SOCKET",
        "JOURNAL_STREAM",
    ] {
        assert!(env.contains(&format!("`{var}`")), "Environment lacks {var}");
    }
}

/// Every TOML code block of the README and `docs/`, with where it starts.
fn toml_blocks() -> Vec<(String, String)> {
    let mut files: Vec<PathBuf> = vec![repo().join("README.md"), repo().join("CONTRIBUTING.md")];
    let mut docs: Vec<PathBuf> = std::fs::read_dir(repo().join("docs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    docs.sort();
    files.extend(docs);
    let mut blocks = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        let rel = file.strip_prefix(repo()).unwrap().display().to_string();
        let mut current: Option<(usize, String)> = None;
        for (n, line) in text.lines().enumerate() {
            // A block inside a list item is indented.
            let fence = line.trim_start();
            match &mut current {
                None if fence == "```toml" => current = Some((n + 1, String::new())),
                None => {}
                Some(_) if fence == "```" => {
                    let (start, body) = current.take().unwrap();
                    blocks.push((format!("{rel}:{start}"), body));
                }
                Some((_, body)) => {
                    body.push_str(line);
                    body.push('\n');
                }
            }
        }
        assert!(current.is_none(), "{rel}: an unclosed ```toml block");
    }
    blocks
}

/// Validates documents with Python's `jsonschema`: (label, errors) for each.
fn python_validate(docs: &[(String, String)]) -> Vec<(String, Vec<String>)> {
    let dir = tempfile::tempdir().unwrap();
    let schema_path = dir.path().join("jobs.schema.json");
    std::fs::write(&schema_path, schema().to_string()).unwrap();
    let input: Vec<Value> = docs
        .iter()
        .map(|(label, toml)| serde_json::json!({"label": label, "toml": toml}))
        .collect();
    let mut child = Command::new(python())
        .arg(repo().join("tests/it/support/schema_check.py"))
        .arg(&schema_path)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    serde_json::to_writer(child.stdin.take().unwrap(), &input).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "schema_check.py (needs jsonschema; ./scripts/test installs it): {}",
        stderr(&out)
    );
    let results: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    results
        .into_iter()
        .map(|r| {
            let errors = r["errors"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| e.as_str().unwrap().to_owned())
                .collect();
            (r["label"].as_str().unwrap().to_owned(), errors)
        })
        .collect()
}

#[test]
fn every_example_jobs_toml_and_every_toml_block_of_the_docs_validates_against_the_schema() {
    let mut docs = toml_blocks();
    assert!(docs.len() >= 5, "only {} ```toml blocks found", docs.len());
    for file in [
        "jobs.toml",
        "packaging/jobs.toml",
        "fuzz/corpus/config/example.toml",
        "fuzz/corpus/config/packaged.toml",
    ] {
        docs.push((file.to_owned(), read(file)));
    }
    let failures: Vec<String> = python_validate(&docs)
        .into_iter()
        .filter(|(_, errors)| !errors.is_empty())
        .map(|(label, errors)| format!("{label}: {}", errors.join("; ")))
        .collect();
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn what_the_schema_refuses_cronmail_check_refuses_too() {
    let base = "from = \"a@example.com\"\n[outbox]\n";
    let job = "[[job]]\nname = \"j\"\nschedule = \"0 9 * * *\"\nto = [\"a@example.com\"]\nsubject = \"s\"\nbody = \"b\"\n";
    let cases = [
        ("valid", format!("{base}{job}"), true),
        (
            "typo",
            format!("{base}{}", job.replace("subject", "subjetc")),
            false,
        ),
        (
            "to string",
            format!(
                "{base}{}",
                job.replace("[\"a@example.com\"]", "\"a@example.com\"")
            ),
            false,
        ),
        (
            "unknown table",
            format!("{base}[smpt]\nhost = \"x\"\n{job}"),
            false,
        ),
        (
            "literal password",
            format!(
                "from = \"a@example.com\"\n[smtp]\nhost = \"smtp.example.com\"\npassword = \"hunter2\"\n{job}"
            ),
            false,
        ),
        (
            "bad tls",
            format!(
                "from = \"a@example.com\"\n[smtp]\nhost = \"smtp.example.com\"\npassword_env = \"P\"\ntls = \"ssl\"\n{job}"
            ),
            false,
        ),
        (
            "bad catch_up",
            format!("{base}[defaults]\ncatch_up = \"every\"\n{job}"),
            false,
        ),
        (
            "no name",
            format!("{base}{}", job.replace("name = \"j\"\n", "")),
            false,
        ),
        (
            "max_connections 0",
            format!("{base}[delivery]\nmax_connections = 0\n{job}"),
            false,
        ),
    ];
    let docs: Vec<(String, String)> = cases
        .iter()
        .map(|(l, t, _)| ((*l).to_owned(), t.clone()))
        .collect();
    for ((label, errors), (_, text, valid)) in python_validate(&docs).into_iter().zip(&cases) {
        assert_eq!(errors.is_empty(), *valid, "schema on {label}: {errors:?}");
        let cfg = ConfigDir::new(text);
        let out = cronmail(&cfg.path, &["check"], &[("P", "pw")]);
        assert_eq!(
            out.status.success(),
            *valid,
            "check on {label}: {}",
            stderr(&out)
        );
    }
}

#[test]
fn the_readme_gmail_recipe_passes_check_and_the_shipped_files_point_at_the_schema() {
    let recipe = toml_blocks()
        .into_iter()
        .find(|(label, body)| label.starts_with("README.md") && body.contains("water-plants"))
        .expect("the README's Gmail recipe")
        .1;
    let cfg = ConfigDir::new(&recipe);
    let password = cfg.dir.path().join("gmail-password");
    std::fs::write(&password, "abcd efgh ijkl mnop\n").unwrap();
    std::fs::set_permissions(&password, std::fs::Permissions::from_mode(0o600)).unwrap();
    let out = cronmail(&cfg.path, &["check"], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("ok, 1 jobs"), "{}", stdout(&out));

    assert!(read("jobs.toml").starts_with("#:schema ./docs/jobs.schema.json\n"));
    assert!(repo().join("docs/jobs.schema.json").is_file());
    assert!(
        read("packaging/jobs.toml")
            .starts_with("#:schema file:///usr/share/cronmail/jobs.schema.json\n")
    );
    // The packaged file names docs the package ships.
    let cargo = read("Cargo.toml");
    for shipped in [
        "usr/share/cronmail/jobs.schema.json",
        "usr/share/doc/cronmail/jobs.toml.md",
        "usr/share/man/man5/cronmail-jobs.toml.5",
    ] {
        assert!(cargo.contains(shipped), "the .deb does not ship {shipped}");
    }
    let packaged = read("packaging/jobs.toml");
    assert!(packaged.contains("/usr/share/doc/cronmail/jobs.toml.md"));
    assert!(!packaged.contains(".md.gz"));
}

#[test]
fn the_man_pages_are_made_from_docs_and_format_without_warnings() {
    let dir = tempfile::tempdir().unwrap();
    for (name, section, source) in man::PAGES {
        let roff = man::page(&read(&format!("docs/{source}")), name, section);
        assert!(
            roff.starts_with(&format!(".TH \"{}\" {section}", name.to_uppercase())),
            "{}",
            &roff[..80]
        );
        // The NAME section is `name \- what`, as mandb and whatis read it.
        let name_section = roff.split(".SH \"NAME\"").nth(1).unwrap();
        let first = name_section
            .lines()
            .find(|l| !l.is_empty() && !l.starts_with('.'))
            .unwrap();
        assert!(first.contains(" \\- "), "{name}: NAME is `{first}`");
        for heading in ["SYNOPSIS", "DESCRIPTION", "SEE ALSO"] {
            assert!(
                roff.contains(&format!(".SH \"{heading}\"")),
                "{name}: no {heading}"
            );
        }
        let path = dir.path().join(format!("{name}.{section}"));
        std::fs::write(&path, &roff).unwrap();
        if Path::new("/usr/bin/groff").exists() {
            let out = Command::new("groff")
                .args(["-man", "-ww", "-z", "-Tutf8"])
                .arg(&path)
                .output()
                .unwrap();
            assert!(
                out.status.success() && out.stderr.is_empty(),
                "{name}.{section}: {}",
                stderr(&out)
            );
        }
    }
    let page1 = std::fs::read_to_string(dir.path().join("cronmail.1")).unwrap();
    for needle in ["EXIT STATUS", "FILES", "ENVIRONMENT", "oauth2 authorize"] {
        assert!(page1.contains(needle), "cronmail.1 lacks {needle}");
    }
    let page5 = std::fs::read_to_string(dir.path().join("cronmail-jobs.toml.5")).unwrap();
    for needle in ["max_connections", "refresh_token_file", "catch_up"] {
        assert!(
            page5.contains(needle),
            "cronmail-jobs.toml.5 lacks {needle}"
        );
    }
}
