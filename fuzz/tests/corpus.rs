//! Replays every committed corpus file through its harness on stable Rust
//! (`cargo test` in `fuzz/`), so the seeds and the findings fixed so far stay regression
//! tests without libFuzzer.

use std::path::Path;

type Harness = fn(&[u8]);

const TARGETS: &[(&str, Harness)] = &[
    ("path", xferd_fuzz::uri::path),
    ("range", xferd_fuzz::uri::range),
    ("conditional", xferd_fuzz::conditional::conditional),
    ("signature", xferd_fuzz::signature::signature),
    ("tus_headers", xferd_fuzz::resumable::tus_headers),
    ("ietf_headers", xferd_fuzz::resumable::ietf_headers),
    ("hfs_chunk", xferd_fuzz::hfs::hfs_chunk),
    ("multipart_form", xferd_fuzz::form::multipart_form),
    ("config", xferd_fuzz::config::config),
    ("core_request", xferd_fuzz::core_request::core_request),
];

#[test]
fn every_corpus_file_passes_its_harness() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");
    let mut failed = Vec::new();
    for (name, harness) in TARGETS {
        let dir = root.join(name);
        let mut files: Vec<_> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|e| e.expect("directory entry").path())
            .collect();
        files.sort();
        assert!(files.len() >= 3, "{name}: only {} seeds", files.len());
        for file in files {
            let data = std::fs::read(&file).expect("corpus file");
            let outcome = std::panic::catch_unwind(|| harness(&data));
            if outcome.is_err() {
                failed.push(file.display().to_string());
            }
        }
    }
    assert!(failed.is_empty(), "failing corpus files: {failed:#?}");
}

#[test]
fn every_target_has_a_binary_and_a_corpus() {
    let manifest = include_str!("../Cargo.toml");
    for (name, _) in TARGETS {
        assert!(manifest.contains(&format!("name = \"{name}\"")), "{name}");
        let bin = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("fuzz_targets/{name}.rs"));
        assert!(bin.exists(), "{}", bin.display());
    }
    let bins = manifest.matches("[[bin]]").count();
    assert_eq!(bins, TARGETS.len(), "a target is missing from TARGETS");
}
