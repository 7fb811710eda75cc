//! Crash consistency on the s3 backend (issue 15, section 3): the kill -9 loop of
//! `tests/crash.rs` (the same upload mix and ledger, `crash/mix.rs`) against the real binary
//! on `backend = "s3"`, one private SeaweedFS kept running for the whole test (only xferd is
//! killed). After each restart the bucket itself is checked, through signed S3 requests
//! (ListObjectsV2, GetObject, ListMultipartUploads):
//!
//! - every upload that got its 201 (or its completing 204) is an object with the right
//!   SHA-256;
//! - no object under a final name holds anything but the complete bytes of an upload;
//! - every resumable session reports an offset at least what was acknowledged, and completes
//!   with the right SHA-256 when resumed;
//! - no multipart upload is left in progress but those of live resumable sessions (the
//!   staged PUTs a kill cut are aborted by the start-up sweep).
//!
//! The object store full and the loss of write permission are in `crash/faults_s3.rs`.
//!
//! Uploads go up to 12 MiB on a 5 MiB part size, so staged PUTs and sessions really use
//! multipart uploads. `cargo test` runs 5 cycles; `interop/crash/run.sh` runs more
//! (`S3_CYCLES`). `XFERD_CRASH_SEED` replays a run, `XFERD_CRASH_CYCLES` sets the count.
//! Without SeaweedFS installed the test says SKIPPED and passes (unless CI or
//! XFERD_REQUIRE_SERVICES is set).

mod common;
#[path = "crash/cycles.rs"]
mod cycles;
#[path = "crash/faults_s3.rs"]
mod faults_s3;
#[path = "common/fsfull.rs"]
mod fsfull;
#[path = "crash/mix.rs"]
mod mix;
#[path = "common/s3_env.rs"]
mod s3_env;
#[path = "crash/wire.rs"]
mod wire;

use common::*;
use mix::*;
use rand::SeedableRng;
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use wire::v3; // an hour of validity, not common's 10 minutes
use wire::*;
use xferd::client::{Client, Proto};
use xferd::storage::key::Key;
use xferd::storage::s3::S3Store;
use xferd::storage::store::Store;

const MAX_LEN: u64 = 12 << 20;
const HFS_CHUNK: u64 = 256 << 10;

fn write_s3_config(dir: &Path, port: u16, endpoint: &str, prefix: &str) -> PathBuf {
    let cfg = wire::write_config(dir, port);
    let mut text = std::fs::read_to_string(&cfg).unwrap();
    text.push_str(&format!(
        "[storage]\nbackend = \"s3\"\n\
         [storage.s3]\nendpoint = \"{endpoint}\"\nbucket = \"{b}\"\nprefix = \"{prefix}\"\n\
         allow_http = true\npart_size = {part}\nmax_parts_in_flight = 2\n\
         access_key_id = \"{k}\"\nsecret_access_key = \"{s}\"\n",
        b = common::s3::BUCKET,
        part = s3_env::PART,
        k = common::s3::ACCESS_KEY,
        s = common::s3::SECRET_KEY,
    ));
    std::fs::write(&cfg, text).unwrap();
    cfg
}

/// Every key in the bucket under the store's prefix (paged ListObjectsV2).
async fn keys(store: &S3Store) -> Vec<Key> {
    let mut out: Vec<Key> = Vec::new();
    loop {
        let page = store
            .list("", out.last(), 1000)
            .await
            .expect("ListObjectsV2");
        let n = page.len();
        out.extend(page.into_iter().map(|l| l.key));
        if n < 1000 {
            return out;
        }
    }
}

/// The whole object under `rel` (signed GetObject), `None` when there is none.
async fn read(store: &S3Store, rel: &str) -> Option<Vec<u8>> {
    let obj = store
        .open(&Key::parse(rel).ok()?)
        .await
        .expect("GetObject")?;
    let len = obj.meta().len;
    let mut out = Vec::with_capacity(len as usize);
    while (out.len() as u64) < len {
        let b = obj
            .read_at(out.len() as u64, (len - out.len() as u64) as usize)
            .await
            .expect("GetObject");
        if b.is_empty() {
            break;
        }
        out.extend_from_slice(&b);
    }
    Some(out)
}

/// The invariants in the bucket after a restart (see the module doc).
async fn check_bucket(store: &S3Store, prefix: &str, l: &Shared, cycle: usize, remove: bool) {
    let (done, live): (Vec<_>, HashSet<String>) = {
        let g = l.lock().unwrap();
        (
            g.done.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
            g.sessions.values().map(|s| s.rel.clone()).collect(),
        )
    };
    let mut v = Vec::new();
    let mut verified = 0u64;
    let mut pruned = Vec::new();
    for (rel, (want, len, how)) in &done {
        match read(store, rel).await {
            Some(b) if sha(&b) == *want => {
                verified += *len;
                pruned.push(rel.clone());
            }
            Some(b) => v.push(format!(
                "cycle {cycle}: {rel}: acknowledged upload ({how}) has {} bytes, SHA-256 {} (want {len}, {want})",
                b.len(),
                sha(&b)
            )),
            None => v.push(format!(
                "cycle {cycle}: {rel}: acknowledged upload ({how}) missing from the bucket"
            )),
        }
    }
    let done_names: HashSet<&String> = done.iter().map(|(k, _)| k).collect();
    for key in keys(store).await {
        let f = key.as_str().to_string();
        if f.starts_with(".xferd-") || done_names.contains(&f) {
            continue; // session parts and other server-private state; checked above
        }
        let want = l.lock().unwrap().attempted.get(&f).cloned();
        match (want, read(store, &f).await) {
            (Some((want, _)), Some(b)) if sha(&b) == want => verified += b.len() as u64,
            (a, b) => v.push(format!(
                "cycle {cycle}: {f}: an object under a final name with {:?} bytes, not a complete upload (attempted: {})",
                b.map(|b| b.len()),
                a.is_some()
            )),
        }
    }
    // Multipart uploads in progress: only live sessions' (their target is the final name).
    for (key, id) in store
        .multipart_uploads()
        .await
        .expect("ListMultipartUploads")
    {
        let rel = key.strip_prefix(prefix).unwrap_or(&key);
        if !live.contains(rel) {
            v.push(format!(
                "cycle {cycle}: multipart upload {id} on {rel} left in progress (no live session)"
            ));
        }
    }
    // An object is checked after two restarts, then deleted (by the test, with the server
    // idle), so the bucket stays small over many cycles.
    let mut gone = Vec::new();
    {
        let mut g = l.lock().unwrap();
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
                g.done.remove(&rel);
                g.attempted.remove(&rel);
                g.checked.remove(&rel);
                gone.push(rel);
            }
        }
        g.bytes_verified += verified;
        g.violations.extend(v);
    }
    for rel in gone {
        store
            .delete(&Key::parse(&rel).unwrap())
            .await
            .expect("DeleteObject");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_9_cycles_on_s3_keep_every_acknowledged_byte() {
    let Some(weed) = s3_env::seaweed() else {
        return;
    };
    let (cycles, seed) = cycles::cycles_and_seed(5);
    eprintln!(
        "crash s3: seed {seed} (XFERD_CRASH_SEED={seed} replays), {cycles} cycles, {} clients",
        cycles::WORKERS
    );
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let prefix = s3_env::unique_prefix("crash");
    let store = s3_env::store_at(&weed.endpoint, &prefix);
    let lp = cycles::Loop {
        cfg: write_s3_config(dir.path(), port, &weed.endpoint, &prefix),
        addr: format!("127.0.0.1:{port}").parse().unwrap(),
        cert: dir.path().join("state/cert.pem"),
        max_len: MAX_LEN,
        kill_after_ms: 300..2000,
    };
    let l: Shared = Arc::default();
    let started = std::time::Instant::now();
    let _proc = cycles::run(&lp, cycles, &mut rng, &l, |cycle, remove| {
        check_bucket(&store, &prefix, &l, cycle, remove)
    })
    .await;
    // Every session is complete now: no multipart upload may be left at all.
    check_bucket(&store, &prefix, &l, cycles + 1, false).await;
    cycles::report("s3", seed, cycles, &l, started);
}

/// `first` bytes of `data` (paced), then nothing ever: a PUT that stays in progress.
fn stalled(data: bytes::Bytes, first: usize) -> xferd::core::body::BodyStream {
    let head = paced(data.slice(..first));
    Box::pin(futures_util::StreamExt::chain(
        head,
        futures_util::stream::pending(),
    ))
}

/// Waits (bounded, 20 s) until the bucket holds `n` multipart uploads in progress.
async fn uploads_become(store: &S3Store, n: usize) -> Vec<(String, String)> {
    let mut last = Vec::new();
    for _ in 0..200 {
        last = store
            .multipart_uploads()
            .await
            .expect("ListMultipartUploads");
        if last.len() == n {
            return last;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("expected {n} multipart uploads in progress, the bucket has {last:?}");
}

/// The defect the loop found: a staged PUT killed after its first part left its multipart
/// upload in the bucket for ever. The restarted server aborts it (the start-up sweep) and
/// keeps the upload of a live tus session, which then completes with the right bytes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_aborts_the_multipart_upload_of_a_killed_put_and_keeps_sessions() {
    let Some(weed) = s3_env::seaweed() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let prefix = s3_env::unique_prefix("sweep");
    let cfg = write_s3_config(dir.path(), port, &weed.endpoint, &prefix);
    let store = s3_env::store_at(&weed.endpoint, &prefix);
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let cert = dir.path().join("state/cert.pem");
    let mut proc = spawn_server(&cfg);
    let roots = wait_ready(addr, &cert).await;
    let c = Client::connect(Proto::H2, addr, "localhost", &roots)
        .await
        .unwrap();

    // A tus session with 6 MiB acknowledged: one part in its multipart upload.
    let total: u64 = 7 << 20;
    let data = content(7, total);
    let t = total.to_string();
    let r = try_req(
        &c,
        "POST",
        &v3("POST", "s/tus.bin"),
        &[TUS, ("upload-length", &t)],
        None,
    )
    .await
    .unwrap();
    assert_eq!(r.status, 201);
    let loc = r.header("location").unwrap().to_string();
    let sess = Sess {
        kind: Kind::Tus,
        loc: loc.clone(),
        rel: "s/tus.bin".into(),
        seed: 7,
        total,
        chunk: 1,
        acked: 0,
        busy: false,
    };
    assert_eq!(
        append(&c, &sess, &data, 0, 6 << 20).await,
        Ok((6 << 20, false))
    );
    let session_upload = uploads_become(&store, 1).await;

    // A 12 MiB PUT that stalls after 6 MiB: its first part is uploaded, then the kill.
    let put = content(8, 12 << 20);
    let url = signed_v("s/put.bin", 12 << 20);
    let c2 = Client::connect(Proto::H1, addr, "localhost", &roots)
        .await
        .unwrap();
    let len = (12u64 << 20).to_string();
    let stalled_put = tokio::spawn(async move {
        try_req(
            &c2,
            "PUT",
            &url,
            &[("content-length", &len)],
            Some(stalled(put, 6 << 20)),
        )
        .await
        .map(|r| r.status)
    });
    uploads_become(&store, 2).await;
    // SAFETY: kill(2) on our own child's pid.
    unsafe { libc::kill(proc.0.id() as i32, libc::SIGKILL) };
    proc.0.wait().unwrap();
    assert_eq!(
        stalled_put.await.unwrap(),
        None,
        "the PUT was cut by the kill"
    );

    let _proc = spawn_server(&cfg);
    let roots = wait_ready(addr, &cert).await;
    // Ready means swept: only the session's upload is left.
    assert_eq!(
        store.multipart_uploads().await.unwrap(),
        session_upload,
        "after the restart only the live session's multipart upload is left"
    );
    assert_eq!(
        read(&store, "s/put.bin").await,
        None,
        "no object of the cut PUT"
    );
    let c = Client::connect(Proto::H2, addr, "localhost", &roots)
        .await
        .unwrap();
    assert_eq!(query(&c, &sess).await, Some((200, 6 << 20)));
    assert_eq!(
        append(&c, &sess, &data, 6 << 20, total).await,
        Ok((total, true))
    );
    assert_eq!(
        read(&store, "s/tus.bin").await.map(|b| sha(&b)),
        Some(sha(&data))
    );
    uploads_become(&store, 0).await;
}
