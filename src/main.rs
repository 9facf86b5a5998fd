//! `cronmail`: parse the command line, set up logging, call the library, exit.

use std::process::ExitCode;

use clap::Parser as _;
use cronmail::{Cli, Exit};

fn main() -> ExitCode {
    // A bug must not print a backtrace at a user: one line, and EX_SOFTWARE.
    std::panic::set_hook(Box::new(|info| {
        eprintln!("error: cronmail hit a bug and stopped ({info}); please report it");
    }));
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                Exit::Usage.into()
            } else {
                Exit::Ok.into()
            };
        }
    };
    // The daemon stays resident: one malloc arena (before any thread starts). The other
    // commands exit soon, and `check` renders on every core.
    if matches!(cli.command, cronmail::Command::Run) {
        cronmail::daemon::one_arena();
    }
    if let Err(e) = cronmail::init_logging(cli.log_format, cli.log_level.as_deref()) {
        eprintln!("error: {e}");
        return Exit::Usage.into();
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: starting the async runtime: {e}");
            return Exit::Software.into();
        }
    };
    let exit = runtime.block_on(cronmail::execute(&cli.config, cli.command));
    // Do not wait for blocking tasks (a hung password command) at exit.
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    exit.into()
}
