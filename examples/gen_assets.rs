//! Writes the man page and shell completions, generated from the clap definitions, for
//! the Debian package: `cargo run --example gen_assets -- DIR` (see `scripts/package`).

use std::path::PathBuf;

use clap::CommandFactory as _;
use clap_complete::Shell;
use cronmail::Cli;

fn main() -> std::io::Result<()> {
    let dir = PathBuf::from(
        std::env::args()
            .nth(1)
            .unwrap_or_else(|| "target/assets".to_owned()),
    );
    std::fs::create_dir_all(&dir)?;
    let cmd = Cli::command();
    let mut man = Vec::new();
    clap_mangen::Man::new(cmd.clone()).render(&mut man)?;
    std::fs::write(dir.join("cronmail.1"), man)?;
    for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
        clap_complete::generate_to(shell, &mut cmd.clone(), "cronmail", &dir)?;
    }
    println!("wrote the man page and completions to {}", dir.display());
    Ok(())
}
