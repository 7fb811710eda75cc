//! Crash consistency (issue 15, section 3): cycles of `kill -9` at random moments during a
//! mix of concurrent uploads (PUT over HTTP/1.1, HTTP/2 and HTTP/3, tus, IETF, HFS chunks,
//! multipart POST) against the real binary, each followed by a restart on the same storage
//! and state directories and a check of the invariants against a ledger of what the server
//! acknowledged:
//!
//! - every upload that got its 201 (or its completing 204) is present with the right SHA-256;
//! - no file under a final name holds anything but the complete bytes of an upload;
//! - every resumable session reports an offset at least what was acknowledged, and completes
//!   with the right SHA-256 when resumed (so its stored bytes were right);
//! - no `.xferd-tmp-*` file is left once the restarted server is ready (the sweep).
//!
//! Disk full, a full state directory and a read-only remount are in `crash/faults.rs`; the
//! upload mix and its ledger are in `crash/mix.rs` (shared with `crash_s3.rs`).
//!
//! `cargo test` runs 10 cycles (about a minute); `interop/crash/run.sh` runs 100. The seed is
//! printed; `XFERD_CRASH_SEED` replays a run, `XFERD_CRASH_CYCLES` sets the cycle count.

mod common;
#[path = "crash/cycles.rs"]
mod cycles;
#[path = "crash/faults.rs"]
mod faults;
#[path = "common/fsfull.rs"]
mod fsfull;
#[path = "crash/mix.rs"]
mod mix;
#[path = "crash/wire.rs"]
mod wire;

use common::*;
use mix::*;
use rand::SeedableRng;
use std::path::Path;
use std::sync::Arc;
use wire::*;

const MAX_LEN: u64 = 1 << 20;
const HFS_CHUNK: u64 = 256 << 10;

/// Relative names of the regular files under `dir` (recursive).
pub(crate) fn walk(base: &Path, dir: &Path, out: &mut Vec<String>) {
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(base, &p, out);
            } else {
                out.push(p.strip_prefix(base).unwrap().display().to_string());
            }
        }
    }
}

/// The invariants on disk after a restart (see the module doc).
fn check_storage(data: &Path, l: &Shared, cycle: usize, remove: bool) {
    let mut g = l.lock().unwrap();
    let mut v = Vec::new();
    let mut verified = 0u64;
    let mut pruned = Vec::new();
    for (rel, (want, len, how)) in &g.done {
        match std::fs::read(data.join(rel)) {
            Ok(b) if sha(&b) == *want => {
                verified += *len;
                pruned.push(rel.clone());
            }
            Ok(b) => v.push(format!(
                "cycle {cycle}: {rel}: acknowledged upload ({how}) has {} bytes, SHA-256 {} (want {len}, {want})",
                b.len(),
                sha(&b)
            )),
            Err(e) => v.push(format!(
                "cycle {cycle}: {rel}: acknowledged upload ({how}) missing: {e}"
            )),
        }
    }
    let mut files = Vec::new();
    walk(data, data, &mut files);
    for f in files {
        let name = f.rsplit('/').next().unwrap_or(&f);
        if name.starts_with(".xferd-tmp-") {
            v.push(format!(
                "cycle {cycle}: temporary file left after the sweep: {f}"
            ));
            continue;
        }
        if f.starts_with(".xferd-") {
            continue; // session parts and other server-private state
        }
        if g.done.contains_key(&f) {
            continue;
        }
        match (g.attempted.get(&f), std::fs::read(data.join(&f))) {
            (Some((want, _)), Ok(b)) if sha(&b) == *want => verified += b.len() as u64,
            (a, b) => v.push(format!(
                "cycle {cycle}: {f}: visible under a final name with {:?} bytes, not a complete upload (attempted: {})",
                b.map(|b| b.len()).ok(),
                a.is_some()
            )),
        }
    }
    // A file is checked after two restarts, then removed (by the test, with the server
    // stopped or idle), so the storage stays small over 100 cycles.
    for rel in pruned {
        let n = {
            let n = g.checked.entry(rel.clone()).or_insert(0);
            *n += 1;
            *n
        };
        if n == 1 {
            g.uploads_verified += 1;
        }
        if n >= 2 && remove {
            let _ = std::fs::remove_file(data.join(&rel));
            g.done.remove(&rel);
            g.attempted.remove(&rel);
            g.checked.remove(&rel);
        }
    }
    g.bytes_verified += verified;
    g.violations.extend(v);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_9_cycles_keep_every_acknowledged_byte() {
    let (cycles, seed) = cycles::cycles_and_seed(10);
    eprintln!(
        "crash: seed {seed} (XFERD_CRASH_SEED={seed} replays), {cycles} cycles, {} clients",
        cycles::WORKERS
    );
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let lp = cycles::Loop {
        cfg: write_config(dir.path(), port),
        addr: format!("127.0.0.1:{port}").parse().unwrap(),
        cert: dir.path().join("state/cert.pem"),
        max_len: MAX_LEN,
        kill_after_ms: 200..1500,
    };
    let data = dir.path().join("data");
    let l: Shared = Arc::default();
    let started = std::time::Instant::now();
    let _proc = cycles::run(&lp, cycles, &mut rng, &l, |cycle, remove| {
        check_storage(&data, &l, cycle, remove);
        std::future::ready(())
    })
    .await;
    check_storage(&data, &l, cycles + 1, false);
    cycles::report("fs", seed, cycles, &l, started);
}
