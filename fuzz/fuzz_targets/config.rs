//! Config parse + validate: any bytes give a Config or diagnostics, never a panic.
#![no_main]
#[path = "common.rs"]
mod common;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = cronmail::config::parse(std::path::Path::new("/fuzz/jobs.toml"), text, &common::host());
    }
});
