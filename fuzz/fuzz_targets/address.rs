//! Address and header building: never panics; what builds has exactly its recipients.
#![no_main]
#[path = "common.rs"]
mod common;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let p = common::parts(data, 3);
    let text = format!(
        "from = {}\n[outbox]\n[[job]]\nname = \"a\"\nschedule = \"@daily\"\nto = [{}]\nreply_to = {}\nsubject = \"s\"\nbody = \"b\"\n",
        common::toml_str(&p[0]),
        common::toml_str(&p[1]),
        common::toml_str(&p[2]),
    );
    if let Ok(cfg) = cronmail::config::parse(std::path::Path::new("/fuzz/jobs.toml"), &text, &common::host()) {
        let at = chrono::DateTime::from_timestamp(1_800_086_400, 0).unwrap();
        let out = cronmail::prepare(&cfg, &cfg.jobs[0], at, at, None).expect("a validated job always builds");
        assert_eq!(out.envelope.to().len(), 1);
    }
});
