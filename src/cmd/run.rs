//! `cronmail run`: the daemon, on the system clock, `sd_notify` and OS signals.

use std::path::Path;

use super::{print_error, report_start_error};
use crate::daemon::{self, Service};
use crate::exit::Exit;

pub async fn run(path: &Path) -> Exit {
    let events = match daemon::signal_events() {
        Ok(events) => events,
        Err(e) => {
            print_error(&format!("installing signal handlers: {e}"));
            return Exit::Software;
        }
    };
    match daemon::run(Service::system(path.to_path_buf()), events).await {
        Ok(()) => Exit::Ok,
        Err(e) => report_start_error(&e, path),
    }
}
