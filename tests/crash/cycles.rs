//! The kill -9 loop shared by tests/crash.rs (fs) and tests/crash_s3.rs (s3): start the
//! real binary, check what survived (the backend's own check), bring the sessions forward,
//! let the clients of [`super::mix`] upload, `kill -9` at a random moment, and again; then
//! one last restart that completes every session and reads uploads back over h1, h2 and h3.
//! The caller makes the final check of its storage and prints [`report`].

use super::common::*;
use super::mix::*;
use super::wire::*;
use rand::Rng;
use std::future::Future;
use std::net::SocketAddr;
use std::ops::Range;
use std::path::PathBuf;
use std::time::Duration;
use xferd::client::{Client, Proto};

/// Clients uploading at once in every cycle.
pub(crate) const WORKERS: usize = 6;

/// One loop's server and its pacing.
pub(crate) struct Loop {
    pub cfg: PathBuf,
    pub addr: SocketAddr,
    pub cert: PathBuf,
    /// Largest upload the clients make.
    pub max_len: u64,
    /// How long the clients run before the kill, in milliseconds.
    pub kill_after_ms: Range<u64>,
}

/// Runs `cycles` kill -9 cycles and the last restart. `check(cycle, remove)` checks the
/// storage after every restart (pruning what it has checked twice when `remove`). Returns
/// the server left running.
pub(crate) async fn run<C, F>(
    lp: &Loop,
    cycles: usize,
    rng: &mut rand::rngs::StdRng,
    l: &Shared,
    mut check: C,
) -> Proc
where
    C: FnMut(usize, bool) -> F,
    F: Future<Output = ()>,
{
    for cycle in 0..cycles {
        let mut proc = spawn_server(&lp.cfg);
        let roots = wait_ready(lp.addr, &lp.cert).await;
        if cycle > 0 {
            check(cycle, true).await;
            // Every session: offset at least the acknowledged one; about half are completed
            // now (and their bytes checked), the rest are left to later cycles' clients.
            let c = Client::connect(Proto::H2, lp.addr, "localhost", &roots)
                .await
                .expect("client after restart");
            let sids: Vec<u64> = l.lock().unwrap().sessions.keys().copied().collect();
            for sid in sids {
                let all = rng.random_bool(0.5);
                let _ = advance(&c, l, sid, if all { None } else { Some(0) }, rng).await;
            }
        }
        let workers: Vec<_> = (0..WORKERS)
            .map(|w| {
                tokio::spawn(worker(
                    lp.addr,
                    roots.clone(),
                    l.clone(),
                    format!("c{cycle}/w{w}"),
                    rng.random(),
                    lp.max_len,
                ))
            })
            .collect();
        let wait = rng.random_range(lp.kill_after_ms.clone());
        tokio::time::sleep(Duration::from_millis(wait)).await;
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
    let proc = spawn_server(&lp.cfg);
    let roots = wait_ready(lp.addr, &lp.cert).await;
    check(cycles, true).await;
    let c = Client::connect(Proto::H2, lp.addr, "localhost", &roots)
        .await
        .unwrap();
    let sids: Vec<u64> = l.lock().unwrap().sessions.keys().copied().collect();
    for sid in sids {
        let outcome = advance(&c, l, sid, None, rng).await;
        if outcome != Ok(true) {
            let s = l.lock().unwrap().sessions.get(&sid).cloned();
            if let Some(s) = s {
                let why = outcome.err().unwrap_or_else(|| "stopped short".into());
                l.lock().unwrap().violations.push(format!(
                    "{:?} session {} ({}): did not complete when resumed: {why}",
                    s.kind, s.loc, s.rel
                ));
            }
        }
    }
    // One acknowledged upload per protocol, read back through the server too.
    let some: Vec<(String, String)> = l
        .lock()
        .unwrap()
        .done
        .iter()
        .take(3)
        .map(|(rel, (want, _, _))| (rel.clone(), want.clone()))
        .collect();
    for (proto, (rel, want)) in Proto::ALL.iter().zip(some) {
        let c = Client::connect(*proto, lp.addr, "localhost", &roots)
            .await
            .unwrap();
        let r = try_req(&c, "GET", &format!("/{}", encode_path(&rel)), &[], None).await;
        if r.as_ref().map(|r| sha(&r.body)) != Some(want) {
            panic!("GET /{rel} over {}: wrong bytes", label(*proto));
        }
    }
    proc
}

/// Prints the report line (interop/crash/run.sh reads its fields) and every violation, and
/// fails the test on any.
pub(crate) fn report(
    backend: &str,
    seed: u64,
    cycles: usize,
    l: &Shared,
    started: std::time::Instant,
) {
    let g = l.lock().unwrap();
    let secs = started.elapsed().as_secs_f64();
    eprintln!(
        "crash report: backend {backend} | seed {seed} | cycles {cycles} | acknowledged uploads {} ({} bytes) | requests cut by kills {} | sessions left {} | uploads verified {} | bytes verified {} | violations {} | {secs:.1} s | {:.2} s per cycle |",
        g.acked_uploads,
        g.acked_bytes,
        CUT.load(std::sync::atomic::Ordering::Relaxed),
        g.sessions.len(),
        g.uploads_verified,
        g.bytes_verified,
        g.violations.len(),
        secs / (cycles.max(1) as f64)
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

/// `XFERD_CRASH_CYCLES` (else `default`) and `XFERD_CRASH_SEED` (else random).
pub(crate) fn cycles_and_seed(default: usize) -> (usize, u64) {
    let cycles = std::env::var("XFERD_CRASH_CYCLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default);
    let seed = std::env::var("XFERD_CRASH_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(rand::random);
    (cycles, seed)
}
