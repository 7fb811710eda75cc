//! Documentation stays true to the repository: every markdown file a source file, script
//! or document cites exists in the repository (files outside it, such as the team's shared
//! notes, are not there for a reader of the code). Intra-doc links are checked by
//! `cargo doc` with `-D warnings` in `.ci/run`.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// Folders whose files are read for citations (generated and vendored trees are skipped).
const SCANNED: &[&str] = &["src", "tests", "interop", "benches", "config", ".ci"];
/// (`hfs-configs`: third-party files kept verbatim, whose headers cite their own repository's
/// files.)
const SKIPPED_DIRS: &[&str] = &[
    "node_modules",
    "target",
    "corpus",
    "artifacts",
    "hfs-configs",
];

fn files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        let name = e.file_name();
        if p.is_dir() {
            if !SKIPPED_DIRS.iter().any(|s| name == *s) {
                files(&p, out);
            }
        } else {
            out.push(p);
        }
    }
}

/// Markdown file names cited in `text` (letters, digits, `_`, `-`, `/`, `.` before `.md`).
fn cited_md(text: &str) -> Vec<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while let Some(pos) = text[i..].find(".md") {
        let end = i + pos + 3;
        let after_ok = bytes
            .get(end)
            .is_none_or(|b| !(b.is_ascii_alphanumeric() || *b == b'_'));
        let mut start = i + pos;
        while start > 0 {
            let b = bytes[start - 1];
            if b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'/' | b'.') {
                start -= 1;
            } else {
                break;
            }
        }
        if after_ok && start < i + pos {
            out.push(text[start..end].trim_start_matches("./").to_string());
        }
        i = end;
    }
    out
}

#[test]
fn cited_markdown_files_exist_in_the_repository() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut all = Vec::new();
    for d in SCANNED {
        files(&root.join(d), &mut all);
    }
    all.push(root.join("README.md"));
    // Every markdown file the repository has, by file name and by path from the root.
    let mut present = BTreeSet::new();
    for f in &all {
        if f.extension().is_some_and(|x| x == "md") {
            present.insert(f.file_name().unwrap().to_string_lossy().to_string());
            present.insert(f.strip_prefix(root).unwrap().to_string_lossy().to_string());
        }
    }
    let mut missing = Vec::new();
    for f in &all {
        let Ok(text) = std::fs::read_to_string(f) else {
            continue; // binary
        };
        for cited in cited_md(&text) {
            let base = cited.rsplit('/').next().unwrap_or(&cited).to_string();
            if !present.contains(&cited) && !present.contains(&base) {
                missing.push(format!(
                    "{}: {cited}",
                    f.strip_prefix(root).unwrap().display()
                ));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "cited but not in the repository:\n{}",
        missing.join("\n")
    );
}

#[test]
fn the_citation_scanner_finds_citations() {
    // Guard against a check that can never fail.
    assert_eq!(
        cited_md(concat!(
            "see PROTOCOLS",
            ".md section 1 and `benches/README.md`; not a.mdx"
        )),
        vec![concat!("PROTOCOLS", ".md"), "benches/README.md"]
    );
    assert!(cited_md("no citation here: md5 and .md alone").is_empty());
}
