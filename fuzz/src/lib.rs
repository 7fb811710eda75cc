//! Fuzz harnesses for xferd's parsers, one module per target.
//!
//! Every harness takes the raw fuzz input, never panics on its own account, and asserts
//! properties of xferd's answer (an `assert!` failing is a finding, just like a panic inside
//! xferd). The binaries in `fuzz_targets/` only call these functions, so the committed
//! corpora can also be replayed on stable Rust by `cargo test` in this directory
//! (`tests/corpus.rs`).
//!
//! Inputs are text, one field per line (see each module), so the seeds in `corpus/` are
//! readable and were written from the test vectors of the main crate.

pub mod conditional;
pub mod config;
pub mod core_request;
pub mod form;
pub mod hfs;
pub mod resumable;
pub mod signature;
pub mod uri;

/// The input as lines (lossy UTF-8, `\r` kept: a header value with a stray `\r` is input
/// too).
pub fn lines(data: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(data)
        .split('\n')
        .map(str::to_string)
        .collect()
}

/// `Name: value` lines -> a header map; lines that are not a valid header are skipped
/// (hyper and h3 would refuse them before the core sees them).
pub fn headers<'a>(lines: impl IntoIterator<Item = &'a String>) -> http::HeaderMap {
    let mut h = http::HeaderMap::new();
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let (Ok(name), Ok(value)) = (
            http::HeaderName::from_bytes(name.trim().as_bytes()),
            http::HeaderValue::from_str(value.strip_prefix(' ').unwrap_or(value)),
        ) else {
            continue;
        };
        h.append(name, value);
    }
    h
}

/// The first value of header `name` as text, as the core reads it.
pub fn header<'a>(h: &'a http::HeaderMap, name: &str) -> Option<&'a str> {
    h.get(name).and_then(|v| v.to_str().ok())
}

/// Parses a decimal `u64` field, or derives a number from the text (so any input gives one).
pub fn number(text: &str) -> u64 {
    text.trim().parse().unwrap_or_else(|_| {
        text.bytes()
            .fold(0u64, |a, b| a.wrapping_mul(131).wrapping_add(u64::from(b)))
    })
}
