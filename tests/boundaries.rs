//! Module-boundary check: the transfer core must not depend on a transport or exporter.
//! It may use `http`, `bytes`, tokio's tasks and fs, and the storage layer - never hyper,
//! h3, quinn, tokio's networking or prometheus.

use std::path::Path;

const FORBIDDEN: &[&str] = &[
    "hyper",
    "h3",
    "h3_quinn",
    "quinn",
    "tokio::net",
    "prometheus",
    "rustls",
    "tokio_rustls",
];

fn rust_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

#[test]
fn core_imports_no_transport() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    rust_files(&root.join("src/core"), &mut files);
    files.push(root.join("src/storage/fs.rs"));
    assert!(files.len() >= 8, "core files found: {files:?}");
    let mut offences = Vec::new();
    for f in &files {
        let text = std::fs::read_to_string(f).unwrap();
        for (n, line) in text.lines().enumerate() {
            let code = line.split("//").next().unwrap_or("");
            for name in FORBIDDEN {
                let hit = code.contains(&format!("use {name}"))
                    || code.contains(&format!("{name}::"))
                    || code.contains(&format!("use ::{name}"));
                // `tokio::net` must not appear; `h3` as a word inside other names is fine.
                if hit && !code.contains(&format!("_{name}::")) {
                    offences.push(format!("{}:{}: {}", f.display(), n + 1, line.trim()));
                }
            }
        }
    }
    assert!(
        offences.is_empty(),
        "core imports a transport:\n{}",
        offences.join("\n")
    );
}

#[test]
fn the_check_catches_an_import() {
    // Guard against a check that can never fail: the front ends do import these.
    let tcp =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("src/transport/tcp.rs"))
            .unwrap();
    assert!(tcp.contains("hyper::") || tcp.contains("use hyper"));
}
