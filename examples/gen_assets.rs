//! Writes the package's generated files: the man pages (from `docs/`), the JSON Schema
//! of jobs.toml, and the shell completions (from the clap definitions):
//! `cargo run --example gen_assets -- DIR` (see `scripts/package`).

#[path = "support/man.rs"]
mod man;

use std::path::{Path, PathBuf};

use clap::CommandFactory as _;
use clap_complete::Shell;
use cronmail::Cli;

fn main() -> std::io::Result<()> {
    let dir = PathBuf::from(
        std::env::args()
            .nth(1)
            .unwrap_or_else(|| "target/assets".to_owned()),
    );
    if dir.to_string_lossy().starts_with('-') {
        eprintln!("usage: cargo run --example gen_assets -- [DIR]  (default target/assets)");
        std::process::exit(64);
    }
    std::fs::create_dir_all(&dir)?;
    let docs = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs");
    for (name, section, source) in man::PAGES {
        let markdown = std::fs::read_to_string(docs.join(source))?;
        std::fs::write(
            dir.join(format!("{name}.{section}")),
            man::page(&markdown, name, section),
        )?;
    }
    let schema = serde_json::to_string_pretty(&cronmail::config::schema())?;
    std::fs::write(dir.join("jobs.schema.json"), schema + "\n")?;
    let mut cmd = Cli::command();
    for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
        clap_complete::generate_to(shell, &mut cmd, "cronmail", &dir)?;
    }
    println!(
        "wrote the man pages, the schema and the completions to {}",
        dir.display()
    );
    Ok(())
}
