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
use rand::{Rng, SeedableRng};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use wire::*;
use xferd::client::{Client, Proto};

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
    let cycles: usize = std::env::var("XFERD_CRASH_CYCLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10);
    let seed: u64 = std::env::var("XFERD_CRASH_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(rand::random);
    const WORKERS: usize = 6;
    eprintln!(
        "crash: seed {seed} (XFERD_CRASH_SEED={seed} replays), {cycles} cycles, {WORKERS} clients"
    );
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let cfg = write_config(dir.path(), port);
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let data = dir.path().join("data");
    let cert = dir.path().join("state/cert.pem");
    let l: Shared = Arc::default();
    let started = std::time::Instant::now();

    for cycle in 0..cycles {
        let mut proc = spawn_server(&cfg);
        let roots = wait_ready(addr, &cert).await;
        if cycle > 0 {
            check_storage(&data, &l, cycle, true);
            // Every session: offset at least the acknowledged one; about half are completed
            // now (and their bytes checked), the rest are left to later cycles' clients.
            let c = Client::connect(Proto::H2, addr, "localhost", &roots)
                .await
                .expect("client after restart");
            let sids: Vec<u64> = l.lock().unwrap().sessions.keys().copied().collect();
            for sid in sids {
                let all = rng.random_bool(0.5);
                advance(&c, &l, sid, if all { None } else { Some(0) }, &mut rng).await;
            }
        }
        let workers: Vec<_> = (0..WORKERS)
            .map(|w| {
                tokio::spawn(worker(
                    addr,
                    roots.clone(),
                    l.clone(),
                    format!("c{cycle}/w{w}"),
                    rng.random(),
                    MAX_LEN,
                ))
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(rng.random_range(200..1500))).await;
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(proc.0.id() as i32, libc::SIGKILL) };
        proc.0.wait().unwrap();
        for w in &workers {
            w.abort();
        }
        for w in workers {
            let _ = w.await;
        }
        for s in l.lock().unwrap().sessions.values_mut() {
            s.busy = false;
        }
    }
    // Last restart: check, then complete every session.
    let _proc = spawn_server(&cfg);
    let roots = wait_ready(addr, &cert).await;
    check_storage(&data, &l, cycles, true);
    let c = Client::connect(Proto::H2, addr, "localhost", &roots)
        .await
        .unwrap();
    let sids: Vec<u64> = l.lock().unwrap().sessions.keys().copied().collect();
    for sid in sids {
        if !advance(&c, &l, sid, None, &mut rng).await {
            let s = l.lock().unwrap().sessions.get(&sid).cloned();
            if let Some(s) = s {
                l.lock().unwrap().violations.push(format!(
                    "{:?} session {} ({}): did not complete when resumed",
                    s.kind, s.loc, s.rel
                ));
            }
        }
    }
    // One acknowledged file per protocol, read back through the server too.
    let some: Vec<(String, String)> = l
        .lock()
        .unwrap()
        .done
        .iter()
        .take(3)
        .map(|(rel, (want, _, _))| (rel.clone(), want.clone()))
        .collect();
    for (proto, (rel, want)) in Proto::ALL.iter().zip(some) {
        let c = Client::connect(*proto, addr, "localhost", &roots)
            .await
            .unwrap();
        let r = try_req(&c, "GET", &format!("/{}", encode_path(&rel)), &[], None).await;
        if r.as_ref().map(|r| sha(&r.body)) != Some(want) {
            panic!("GET /{rel} over {}: wrong bytes", label(*proto));
        }
    }
    check_storage(&data, &l, cycles + 1, false);
    let g = l.lock().unwrap();
    eprintln!(
        "crash report: seed {seed} | cycles {cycles} | acknowledged uploads {} ({} bytes) | requests cut by kills {} | sessions left {} | uploads verified {} | bytes verified {} | violations {} | {:.1} s",
        g.acked_uploads,
        g.acked_bytes,
        CUT.load(std::sync::atomic::Ordering::Relaxed),
        g.sessions.len(),
        g.uploads_verified,
        g.bytes_verified,
        g.violations.len(),
        started.elapsed().as_secs_f64()
    );
    for v in &g.violations {
        eprintln!("VIOLATION (seed {seed}): {v}");
    }
    assert!(
        g.violations.is_empty(),
        "{} violations (seed {seed})",
        g.violations.len()
    );
}
