//! Template render with arbitrary vars and templates: never panics, never injects a header.
#![no_main]
#[path = "common.rs"]
mod common;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let p = common::parts(data, 3);
    let text = format!(
        "from = \"bot@example.com\"\n[outbox]\n[[job]]\nname = \"a\"\nschedule = \"@daily\"\nto = [\"a@example.com\"]\nsubject = {}\nbody = {}\n[job.vars]\nv = {}\n",
        common::toml_str(&p[0]),
        common::toml_str(&p[1]),
        common::toml_str(&p[2]),
    );
    if let Ok(cfg) = cronmail::config::parse(std::path::Path::new("/fuzz/jobs.toml"), &text, &common::host()) {
        let at = chrono::DateTime::from_timestamp(1_800_086_400, 0).unwrap();
        if let Ok(out) = cronmail::prepare(&cfg, &cfg.jobs[0], at, at, None) {
            let msg = String::from_utf8_lossy(&out.bytes);
            let headers = msg.split("\r\n\r\n").next().unwrap_or_default().to_ascii_lowercase();
            assert!(!headers.contains("\nbcc:"), "a Bcc header: {headers}");
            assert_eq!(out.envelope.to().len(), 1);
        }
    }
});
