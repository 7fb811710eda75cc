//! Module boundaries, checked on the source text.
//!
//! 1. External crates: the transfer core and the storage layer never use a transport or an
//!    exporter (hyper, h3, quinn, tokio's networking, prometheus, rustls).
//! 2. Internal layering (the crate's modules form a DAG; see `src/lib.rs`):
//!
//!    ```text
//!    storage    (leaf)
//!    core       -> storage (the contract only)
//!    metrics    -> core
//!    tls        (leaf)
//!    transport  -> core, metrics, tls
//!    config     -> core, transport   (their option types)
//!    client     -> core, tls, transport
//!    server     -> config, core, metrics, storage, tls, transport
//!    relay      (leaf)
//!    ```
//!
//!    Every `crate::a::...` path and every `super::...` path (resolved against the file's
//!    module) in `src/` names a unit `a`; [`ALLOWED`] lists which units each unit may use.
//!    The core may use only the storage contract (`storage::{key, store, mem}`, and
//!    `storage::meta` for session records), never a backend (`fs`, `parts`, `dirfd`);
//!    test-only modules (`*_tests.rs`) may choose a real backend.
//!    Inside the core, the buffer pool does not use the adaptive engine (it owns the
//!    `Retune` trait the engine implements).
//!
//! The checker is a plain function over (path, text) pairs, and
//! [`the_checker_catches_planted_violations`] feeds it violations, so it cannot pass by
//! checking nothing.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

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

/// What the S3 backend (`src/storage/s3/`) may use of [`FORBIDDEN`]: its HTTP client.
const S3_CLIENT: &[&str] = &["hyper", "tokio::net", "rustls", "tokio_rustls"];

/// Unit -> the units it may use (besides itself).
const ALLOWED: &[(&str, &[&str])] = &[
    ("storage", &[]),
    ("tls", &[]),
    ("relay", &[]),
    ("core", &["storage"]),
    ("config", &["core", "transport"]),
    ("metrics", &["core"]),
    ("transport", &["core", "metrics", "tls"]),
    ("client", &["core", "tls", "transport"]),
    (
        "server",
        &[
            "config",
            "core",
            "metrics",
            "storage",
            "tls",
            "transport",
            "scan",
            "admin",
        ],
    ),
    ("scan", &["core", "storage"]),
    ("admin", &["core", "storage", "metrics"]),
];

/// Finer rules: a module (prefix) that may use only these sub-modules of a unit.
const ONLY: &[(&str, &str, &[&str])] = &[
    ("core", "storage", &["key", "store", "mem", "meta"]),
    ("scan", "storage", &["store"]),
    ("admin", "storage", &["key", "store"]),
];

/// Module (prefix) -> module (prefix) it must not use.
const NEVER: &[(&str, &str)] = &[("core::buffers", "core::adaptive")];

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// `src/core/resumable/engine/write.rs` -> `["core", "resumable", "engine", "write"]`.
fn module_of(rel: &str) -> Vec<String> {
    let rel = rel.strip_prefix("src/").unwrap_or(rel);
    let rel = rel.strip_suffix(".rs").unwrap_or(rel);
    let mut m: Vec<String> = rel.split('/').map(str::to_string).collect();
    if m.last()
        .is_some_and(|l| l == "mod" || l == "lib" || l == "main")
    {
        m.pop();
    }
    m
}

/// Code of a line without its comment.
fn code_of(line: &str) -> &str {
    line.split("//").next().unwrap_or("")
}

fn is_ident(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_'
}

/// The path starting at `code[i..]` (identifiers and `::`), and where it ends.
fn path_at(code: &str, i: usize) -> (&str, usize) {
    let b = code.as_bytes();
    let mut j = i;
    while j < b.len() && (is_ident(b[j]) || b[j] == b':') {
        j += 1;
    }
    (&code[i..j], j)
}

/// The items of the `{...}` group opening at `code[open]`, each expanded against `prefix`
/// (nested groups included), and the index just past the closing brace.
fn expand_group(code: &str, open: usize, prefix: &[String], out: &mut Vec<Vec<String>>) -> usize {
    let b = code.as_bytes();
    let mut i = open + 1;
    loop {
        while i < b.len() && (b[i].is_ascii_whitespace() || b[i] == b',') {
            i += 1;
        }
        if i >= b.len() {
            return i;
        }
        if b[i] == b'}' {
            return i + 1;
        }
        let (path, end) = path_at(code, i);
        let mut full = prefix.to_vec();
        full.extend(
            path.split("::")
                .filter(|s| !s.is_empty() && *s != "self")
                .map(str::to_string),
        );
        if code[end..].starts_with('{') {
            i = expand_group(code, end, &full, out);
        } else {
            out.push(full);
            // Skip `as name`, `*` and the like up to the next item.
            i = end;
            while i < b.len() && b[i] != b',' && b[i] != b'}' {
                i += 1;
            }
        }
    }
}

/// Every module path `text` refers to through `crate::` or `super::` (brace groups
/// expanded, over several lines too), made absolute, with its line number. Comments are
/// not code.
fn references(module: &[String], text: &str) -> Vec<(usize, Vec<String>)> {
    let code: String = text.lines().map(code_of).collect::<Vec<_>>().join("\n");
    let bytes = code.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < code.len() {
        let rest = &code[i..];
        let starts_word = i == 0 || !is_ident(bytes[i - 1]);
        if !(starts_word && (rest.starts_with("crate::") || rest.starts_with("super::"))) {
            i += rest.chars().next().map_or(1, char::len_utf8);
            continue;
        }
        let line = code[..i].matches('\n').count() + 1;
        let (path, end) = path_at(&code, i);
        let segs: Vec<&str> = path.split("::").filter(|s| !s.is_empty()).collect();
        let mut abs: Vec<String> = Vec::new();
        let mut rest_segs = segs.as_slice();
        if rest_segs.first() == Some(&"crate") {
            rest_segs = &rest_segs[1..];
        } else {
            // `super::` from a file module: its parent (inside an inline `mod tests` this
            // over-approximates upwards, which is stricter, never laxer).
            abs = module.to_vec();
            while rest_segs.first() == Some(&"super") {
                abs.pop();
                rest_segs = &rest_segs[1..];
            }
        }
        abs.extend(rest_segs.iter().map(|s| s.to_string()));
        let mut found = Vec::new();
        i = if code[end..].starts_with('{') {
            expand_group(&code, end, &abs, &mut found)
        } else {
            found.push(abs);
            end.max(i + 1)
        };
        out.extend(found.into_iter().map(|f| (line, f)));
    }
    out
}

fn units() -> BTreeSet<&'static str> {
    ALLOWED.iter().map(|(u, _)| *u).collect()
}

/// The violations of the layering in `files` (path relative to the crate, text).
fn layering_violations(files: &[(String, String)]) -> Vec<String> {
    let units = units();
    let mut out = Vec::new();
    for (path, text) in files {
        let module = module_of(path);
        let Some(unit) = module.first().map(String::as_str) else {
            continue;
        };
        if !units.contains(unit) {
            continue;
        }
        let allowed = ALLOWED.iter().find(|(u, _)| *u == unit).unwrap().1;
        let lines: Vec<&str> = text.lines().collect();
        for (n, target) in references(&module, text) {
            let line = lines.get(n - 1).copied().unwrap_or("");
            {
                let Some(to) = target.first().map(String::as_str) else {
                    continue;
                };
                let mut why = None;
                if to != unit && units.contains(to) && !allowed.contains(&to) {
                    why = Some(format!("{unit} may not use {to}"));
                }
                for (from, of, only) in ONLY {
                    // Test-only modules (`*_tests.rs`, compiled under `cfg(test)`) may pick
                    // a real backend to run against.
                    let test_module = path.ends_with("_tests.rs");
                    if unit == *from && to == *of && !test_module {
                        let sub = target.get(1).map(String::as_str).unwrap_or("");
                        if !only.contains(&sub) {
                            why = Some(format!("{from} may use only {of}::{only:?}"));
                        }
                    }
                }
                let joined = module.join("::");
                let target_joined = target.join("::");
                for (from, to) in NEVER {
                    if joined.starts_with(from) && target_joined.starts_with(to) {
                        why = Some(format!("{from} may not use {to}"));
                    }
                }
                if let Some(why) = why {
                    out.push(format!("{path}:{n}: {why}: {}", line.trim()));
                }
            }
        }
    }
    out
}

fn sources() -> Vec<(String, String)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    rust_files(&root.join("src"), &mut files);
    files
        .into_iter()
        .map(|f| {
            let rel = f.strip_prefix(root).unwrap().to_string_lossy().into_owned();
            (rel, std::fs::read_to_string(&f).unwrap())
        })
        .collect()
}

#[test]
fn modules_respect_the_layering() {
    let files = sources();
    assert!(files.len() >= 40, "source files found: {}", files.len());
    // The parser sees the crate's real references (so "no violations" means something).
    let seen: usize = files
        .iter()
        .map(|(p, t)| references(&module_of(p), t).len())
        .sum();
    assert!(
        seen >= 300,
        "only {seen} crate:: / super:: references found"
    );
    let v = layering_violations(&files);
    assert!(v.is_empty(), "layering violated:\n{}", v.join("\n"));
}

#[test]
fn the_layering_table_is_acyclic() {
    // Depth-first search over ALLOWED: a cycle would make "layers" meaningless.
    fn visit(u: &str, path: &mut Vec<String>) {
        assert!(!path.iter().any(|p| p == u), "cycle: {path:?} -> {u}");
        path.push(u.to_string());
        if let Some((_, deps)) = ALLOWED.iter().find(|(x, _)| *x == u) {
            for d in *deps {
                visit(d, path);
            }
        }
        path.pop();
    }
    for (u, _) in ALLOWED {
        visit(u, &mut Vec::new());
    }
}

#[test]
fn the_checker_catches_planted_violations() {
    let planted = |path: &str, line: &str| layering_violations(&[(path.into(), line.into())]);
    // Storage is a leaf.
    assert_eq!(
        planted("src/storage/fs.rs", "use crate::core::path::RelPath;").len(),
        1
    );
    // The core does not know the configuration, directly or through `super`.
    assert_eq!(
        planted("src/core/mod.rs", "fn f(c: &crate::config::Config) {}").len(),
        1
    );
    assert_eq!(
        planted(
            "src/core/resumable/engine/write.rs",
            "use super::super::super::super::config::Config;"
        )
        .len(),
        1
    );
    // Nor a storage backend.
    assert_eq!(
        planted("src/core/upload.rs", "use crate::storage::fs::TempFile;").len(),
        1
    );
    // Intra-core rule.
    assert_eq!(
        planted("src/core/buffers.rs", "use super::adaptive::Tuning;").len(),
        1
    );
    // A test-only module may run against a real backend; the same line elsewhere may not.
    assert!(planted(
        "src/core/resumable/engine_tests.rs",
        "use crate::storage::FsParts;"
    )
    .is_empty());
    assert_eq!(
        planted(
            "src/core/resumable/engine.rs",
            "use crate::storage::FsParts;"
        )
        .len(),
        1
    );
    // Brace groups, nested and over several lines, are expanded.
    assert_eq!(
        planted(
            "src/storage/x.rs",
            "use crate::{\n    key::Key,\n    core::{path, error::E},\n};"
        )
        .len(),
        2
    );
    assert_eq!(
        planted(
            "src/core/x.rs",
            "use crate::{storage::{store::Store, fs::FsStorage}};"
        )
        .len(),
        1
    );
    // Allowed uses and comments pass.
    assert!(planted("src/core/upload.rs", "use crate::storage::store::Store;").is_empty());
    assert!(planted("src/core/upload.rs", "use super::path; // crate::config::X").is_empty());
    assert!(planted("src/server.rs", "use crate::config::Config;").is_empty());
    assert!(planted("src/core/upload.rs", "let x = mycrate::config::y;").is_empty());
}

#[test]
fn core_imports_no_transport() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    rust_files(&root.join("src/core"), &mut files);
    rust_files(&root.join("src/storage"), &mut files);
    assert!(files.len() >= 8, "core files found: {files:?}");
    let mut offences = Vec::new();
    for f in &files {
        let text = std::fs::read_to_string(f).unwrap();
        let s3 = f.starts_with(root.join("src/storage/s3"));
        for (n, line) in text.lines().enumerate() {
            let code = code_of(line);
            for name in FORBIDDEN {
                // The S3 backend is an HTTP client: it may use hyper, TCP and TLS (still no
                // exporter, no QUIC).
                if s3 && S3_CLIENT.contains(name) {
                    continue;
                }
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
