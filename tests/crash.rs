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
//! Disk full, a full state directory and a read-only remount are in `crash/faults.rs`.
//!
//! `cargo test` runs 10 cycles (about a minute); `interop/crash/run.sh` runs 100. The seed is
//! printed; `XFERD_CRASH_SEED` replays a run, `XFERD_CRASH_CYCLES` sets the cycle count.

mod common;
#[path = "crash/faults.rs"]
mod faults;
#[path = "common/fsfull.rs"]
mod fsfull;
#[path = "crash/wire.rs"]
mod wire;

use bytes::Bytes;
use common::*;
use rand::{Rng, SeedableRng};
use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use wire::v3; // an hour of validity for the long crash loop, not common's 10 minutes
use wire::*;
use xferd::client::{Client, Proto};
use xferd::core::auth::Scheme;

const MAX_LEN: u64 = 1 << 20;
const HFS_CHUNK: u64 = 256 << 10;

#[derive(Default)]
struct Ledger {
    /// Every final name an upload was attempted under: (SHA-256, length) of its full bytes.
    attempted: HashMap<String, (String, u64)>,
    /// Acknowledged complete uploads.
    /// Acknowledged complete uploads (with how they were acknowledged).
    done: HashMap<String, (String, u64, String)>,
    sessions: HashMap<u64, Sess>,
    next_sid: u64,
    acked_uploads: u64,
    acked_bytes: u64,
    bytes_verified: u64,
    /// How many checks each acknowledged upload passed; distinct uploads verified.
    checked: HashMap<String, u32>,
    uploads_verified: u64,
    violations: Vec<String>,
}

type Shared = Arc<Mutex<Ledger>>;

fn attempt(l: &Shared, rel: &str, data: &[u8]) {
    l.lock()
        .unwrap()
        .attempted
        .insert(rel.to_string(), (sha(data), data.len() as u64));
}

fn ack_done(l: &Shared, rel: &str, data: &[u8], how: String) {
    let mut g = l.lock().unwrap();
    g.done
        .insert(rel.to_string(), (sha(data), data.len() as u64, how));
    g.acked_uploads += 1;
    g.acked_bytes += data.len() as u64;
}

/// Drives session `sid` from the server's offset for at most `pieces` pieces (all when
/// `None`); records acknowledgements and checks the offset against the ledger.
async fn advance(
    c: &Client,
    l: &Shared,
    sid: u64,
    pieces: Option<usize>,
    rng: &mut rand::rngs::StdRng,
) -> bool {
    let Some(s) = l.lock().unwrap().sessions.get(&sid).cloned() else {
        return false;
    };
    let data = content(s.seed, s.total);
    let Some((status, mut off)) = query(c, &s).await else {
        return false;
    };
    if status == 404 || status == 410 {
        // Gone: only a completed upload may go (its file is then checked like any other;
        // a session lost without its file shows as an acknowledged upload missing).
        let mut g = l.lock().unwrap();
        g.sessions.remove(&sid);
        g.done.insert(
            s.rel.clone(),
            (
                sha(&data),
                s.total,
                format!("{:?} session gone ({status})", s.kind),
            ),
        );
        return false;
    }
    if !(200..300).contains(&status) {
        return false;
    }
    if off < s.acked {
        l.lock().unwrap().violations.push(format!(
            "{:?} session {} ({}): offset {off} below the acknowledged {}",
            s.kind, s.loc, s.rel, s.acked
        ));
        return false;
    }
    if off >= s.total {
        // Every byte is in: the upload is complete, or completes on this query (tus, IETF)
        // or on a repeated last chunk (HFS); the file is then checked like any other.
        if s.kind == Kind::Hfs {
            let last = (s.total - 1) / HFS_CHUNK * HFS_CHUNK;
            let _ = append(c, &s, &data, last, s.total).await;
        }
        let mut g = l.lock().unwrap();
        g.sessions.remove(&sid);
        g.done.insert(
            s.rel.clone(),
            (sha(&data), s.total, format!("{:?} offset at total", s.kind)),
        );
        return true;
    }
    if s.kind == Kind::Hfs {
        off = off / HFS_CHUNK * HFS_CHUNK;
    }
    let mut sent = 0usize;
    while off < s.total && pieces.is_none_or(|p| sent < p) {
        let end = piece_end(s.kind, off, s.total, rng);
        let Some((at, complete)) = append(c, &s, &data, off, end).await else {
            return false;
        };
        sent += 1;
        let mut g = l.lock().unwrap();
        if let Some(e) = g.sessions.get_mut(&sid) {
            e.acked = e.acked.max(at);
        }
        if complete {
            g.sessions.remove(&sid);
            g.done.insert(
                s.rel.clone(),
                (sha(&data), s.total, format!("{:?} completed", s.kind)),
            );
            g.acked_uploads += 1;
            g.acked_bytes += s.total;
            return true;
        }
        off = at;
    }
    off >= s.total
}

/// Creates a resumable session and registers it once the server acknowledged it.
async fn create(
    c: &Client,
    l: &Shared,
    kind: Kind,
    rel: &str,
    seed: u64,
    total: u64,
) -> Option<u64> {
    attempt(l, rel, &content(seed, total));
    let t = total.to_string();
    let loc = match kind {
        Kind::Tus => {
            let r = try_req(
                c,
                "POST",
                &v3("POST", rel),
                &[TUS, ("upload-length", &t)],
                None,
            )
            .await?;
            (r.status == 201).then_some(())?;
            r.header("location")?.to_string()
        }
        Kind::Ietf => {
            let h = [
                ("upload-complete", "?0"),
                ("upload-length", t.as_str()),
                ("content-length", "0"),
            ];
            let r = try_req(c, "POST", &v3("POST", rel), &h, Some(paced(Bytes::new()))).await?;
            (r.status == 201).then_some(())?;
            r.header("location")?.to_string()
        }
        Kind::Hfs => {
            let url = format!(
                "/chunked-upload?{}",
                v3("POST", rel).split_once('?').unwrap().1
            );
            let h = [("x-filename", rel), ("x-total-size", t.as_str())];
            let r = try_req(c, "POST", &url, &h, None).await?;
            (r.status == 201).then_some(())?;
            r.json()["session_id"].as_str()?.to_string()
        }
    };
    let mut g = l.lock().unwrap();
    let sid = g.next_sid;
    g.next_sid += 1;
    g.sessions.insert(
        sid,
        Sess {
            kind,
            loc,
            rel: rel.to_string(),
            seed,
            total,
            acked: 0,
            busy: true,
        },
    );
    Some(sid)
}

fn release(l: &Shared, sid: u64) {
    if let Some(s) = l.lock().unwrap().sessions.get_mut(&sid) {
        s.busy = false;
    }
}

/// One client of the mix: random operations until its task is aborted (at the kill).
async fn worker(
    addr: std::net::SocketAddr,
    roots: Vec<rustls::pki_types::CertificateDer<'static>>,
    l: Shared,
    name: String,
    seed: u64,
) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut clients: HashMap<u8, Client> = HashMap::new();
    for n in 0u64.. {
        let proto = Proto::ALL[rng.random_range(0..3)];
        let key = proto as u8;
        let c = match clients.entry(key) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(e) => {
                match Client::connect(proto, addr, "localhost", &roots).await {
                    Ok(c) => e.insert(c),
                    Err(_) => return,
                }
            }
        };
        let c = &*c;
        let total = rng.random_range(1..=MAX_LEN);
        let dseed = rng.random::<u64>();
        let rel = format!("{name}-{n}.bin");
        match rng.random_range(0..7) {
            0 | 1 => {
                let data = content(dseed, total);
                attempt(&l, &rel, &data);
                let len = total.to_string();
                let r = try_req(
                    c,
                    "PUT",
                    &signed_v(&rel, total),
                    &[("content-length", &len)],
                    Some(paced(data.clone())),
                )
                .await;
                match r {
                    Some(r) if r.status == 201 => {
                        ack_done(&l, &rel, &data, format!("PUT {}", label(proto)))
                    }
                    Some(_) => {}
                    None => return,
                }
            }
            2 => {
                let data = content(dseed, total);
                let fname = format!("{name}-{n}-form.bin");
                let rel = format!("uploads/{fname}");
                attempt(&l, &rel, &data);
                let b = "CrashBoundary9";
                let mut form = format!("--{b}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{fname}\"\r\nContent-Type: application/octet-stream\r\n\r\n").into_bytes();
                form.extend_from_slice(&data);
                form.extend_from_slice(format!("\r\n--{b}--\r\n").as_bytes());
                let (len, ct) = (
                    form.len().to_string(),
                    format!("multipart/form-data; boundary={b}"),
                );
                let url = signed("", Scheme::V3, "POST", "upload", 0, "", now_unix() + 3600);
                let r = try_req(
                    c,
                    "POST",
                    &url,
                    &[("content-type", &ct), ("content-length", &len)],
                    Some(paced(Bytes::from(form))),
                )
                .await;
                match r {
                    Some(r) if r.status == 201 => {
                        ack_done(&l, &rel, &data, format!("POST form {}", label(proto)))
                    }
                    Some(_) => {}
                    None => return,
                }
            }
            3..=5 => {
                let kind = [Kind::Tus, Kind::Ietf, Kind::Hfs][rng.random_range(0..3)];
                let Some(sid) = create(c, &l, kind, &rel, dseed, total).await else {
                    return;
                };
                let pieces = rng.random_range(1..=4);
                advance(c, &l, sid, Some(pieces), &mut rng).await;
                release(&l, sid);
            }
            _ => {
                // Continue a session left by an earlier client or cycle.
                let sid = {
                    let mut g = l.lock().unwrap();
                    let free: Vec<u64> = g
                        .sessions
                        .iter()
                        .filter(|(_, s)| !s.busy)
                        .map(|(k, _)| *k)
                        .collect();
                    if free.is_empty() {
                        continue;
                    }
                    let sid = free[rng.random_range(0..free.len())];
                    g.sessions.get_mut(&sid).unwrap().busy = true;
                    sid
                };
                let pieces = rng.random_range(1..=3);
                advance(c, &l, sid, Some(pieces), &mut rng).await;
                release(&l, sid);
            }
        }
    }
}

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
