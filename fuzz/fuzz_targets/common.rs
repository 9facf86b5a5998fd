#![allow(dead_code)]
// Shared by the fuzz targets.
pub fn host() -> cronmail::config::Host {
    cronmail::config::Host::fixed(chrono::DateTime::from_timestamp(1_800_000_000, 0).unwrap())
}

/// Escapes `s` as a TOML basic string.
pub fn toml_str(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 || c == '\u{7f}' => out.push_str(&format!("\\u{:04X}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Splits fuzz input into `n` strings at 0xFF bytes (lossy UTF-8).
pub fn parts(data: &[u8], n: usize) -> Vec<String> {
    let mut v: Vec<String> = data.splitn(n, |b| *b == 0xFF).map(|p| String::from_utf8_lossy(p).into_owned()).collect();
    v.resize(n, String::new());
    v
}
