//! Storage faults on the s3 backend (issue 15, section 3), each against a private SeaweedFS
//! of its own (not the crash loop's):
//!
//! - the object store full: weed's data directory on a small tmpfs (root needed, like the
//!   fs disk-full test) that is then filled. SeaweedFS 4.48 answers a write it cannot store
//!   with `500 InternalError` (its log: "failed to write to local disk"), nothing that tells
//!   a full disk from another failure, so xferd sees a failing backend: a PUT that runs out
//!   gets a 5xx with a stable `xferd-error` code and leaves no object and no multipart
//!   upload; a resumable append fails and keeps its offset; downloads keep working; once
//!   space is freed (and the breaker's cool-down is over) uploads succeed again;
//! - permission removal: weed restarted with an identity that may only read and list: PUTs
//!   get a stable 5xx (our backend's fault, never the client's 4xx), the storage breaker
//!   opens (503 + `Retry-After`) and closes once the permission is back; GETs keep working
//!   and nothing stored is changed.

use super::common::s3 as weed;
use super::common::*;
use super::fsfull::Tmpfs;
use super::s3_env;
use super::wire::{content, sha};
use std::time::Duration;
use xferd::client::{Client, Proto};
use xferd::storage::s3::S3Store;

async fn bounded<T>(what: &str, f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(150), f)
        .await
        .unwrap_or_else(|_| panic!("timed out: {what}"))
}

/// Status, `xferd-error` code, whether `Retry-After` was sent.
fn code(r: &Reply) -> (u16, String, bool) {
    (
        r.status.as_u16(),
        r.header("xferd-error").unwrap_or("").to_string(),
        r.header("retry-after").is_some(),
    )
}

/// The codes a failing backend may answer with (5xx, never the client's 4xx).
const BACKEND_CODES: [&str; 3] = [
    "storage_error",
    "storage_unavailable",
    "insufficient_storage",
];

fn assert_backend_failure(seen: &[(u16, String, bool)], what: &str) {
    for (s, e, _) in seen {
        assert!((500..600).contains(s), "{what}: a 5xx, not {s} {e}");
        assert!(
            BACKEND_CODES.contains(&e.as_str()),
            "{what}: a stable code, not {s} {e:?}"
        );
    }
}

/// A private weed (restartable) and a store on `prefix` once its bucket answers.
fn weed_with(data: Option<std::path::PathBuf>, extra: &[&str]) -> Option<weed::SeaweedFs> {
    let w = weed::start_custom(data, extra)?;
    let probe = std::sync::Arc::new(s3_env::store_at(&w.endpoint, ""));
    w.wait_bucket(move || {
        let probe = probe.clone();
        async move { probe.check().await.is_ok() }
    });
    Some(w)
}

async fn server_on(endpoint: &str, prefix: &str) -> TestServer {
    let (endpoint, prefix) = (endpoint.to_string(), prefix.to_string());
    TestServer::start_with(move |c| {
        s3_env::use_s3(c, endpoint, prefix);
        let s = &mut c.storage.s3;
        s.part_size = s3_env::PART;
        s.max_parts_in_flight = 2;
    })
    .await
}

/// A download through the server: status and the SHA-256 of the body.
async fn get_sha(c: &mut Client, rel: &str) -> (u16, String) {
    let r = get(c, &format!("/{}", encode_path(rel)), &[]).await;
    (r.status.as_u16(), sha(&r.body))
}

async fn object(store: &S3Store, rel: &str) -> Option<ObjectSeen> {
    use xferd::storage::store::Store;
    let key = xferd::storage::key::Key::parse(rel).unwrap();
    let obj = store.open(&key).await.expect("GetObject")?;
    let len = obj.meta().len;
    let b = obj.read_at(0, len as usize).await.expect("GetObject");
    Some(ObjectSeen { len, sha: sha(&b) })
}

#[derive(Debug, PartialEq)]
struct ObjectSeen {
    len: u64,
    sha: String,
}

async fn tus_create(c: &mut Client, rel: &str, total: u64) -> String {
    let t = total.to_string();
    let r = request(
        c,
        "POST",
        &v3("POST", rel),
        &[TUS, ("upload-length", &t)],
        None,
    )
    .await;
    assert_eq!(r.status, 201, "tus creation");
    r.header("location").unwrap().to_string()
}

async fn tus_offset(c: &mut Client, loc: &str) -> u64 {
    let r = request(c, "HEAD", loc, &[TUS], None).await;
    r.header("upload-offset").unwrap().parse().unwrap()
}

/// PUTs `rel` until it is stored (201), at most 60 s (the breaker's cool-down is 30 s);
/// every refusal on the way must be a backend failure.
async fn put_until_stored(c: &mut Client, rel: &str, data: &[u8]) {
    for _ in 0..60 {
        let r = put(c, &signed_v(rel, data.len() as u64), data, &[]).await;
        if r.status == 201 {
            return;
        }
        assert_backend_failure(&[code(&r)], "while recovering");
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    panic!("{rel}: uploads did not succeed again within 60 s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_object_store_is_a_stable_5xx_leaves_nothing_and_recovers() {
    let Some(fs) = Tmpfs::mount(192 << 20) else {
        return;
    };
    // Small volumes, so the volume files grow into the space that is left.
    let Some(w) = weed_with(
        Some(fs.path().join("weed")),
        &["-master.volumeSizeLimitMB=8"],
    ) else {
        return;
    };
    let prefix = s3_env::unique_prefix("full");
    let store = s3_env::store_at(&w.endpoint, &prefix);
    let srv = server_on(&w.endpoint, &prefix).await;
    bounded("object store full", async {
        let mut c = srv.client(Proto::H1).await;
        let keep = content(1, 300_000);
        let r = put(&mut c, &signed_v("f/keep.bin", 300_000), &keep, &[]).await;
        assert_eq!(r.status, 201);
        let total = 3u64 << 20;
        let sess = content(2, total);
        let loc = tus_create(&mut c, "f/sess.bin", total).await;
        let h2 = srv.client(Proto::H2).await;
        assert_eq!(
            tus_patch(&h2, &loc, 0, sess.slice(..1 << 20)).await.status,
            204
        );

        fs.fill_leaving(2 << 20);
        let big = content(3, 12 << 20);
        let mut seen = Vec::new();
        for (i, proto) in Proto::ALL.iter().enumerate() {
            let mut c = srv.client(*proto).await;
            let rel = format!("f/big{i}.bin");
            let r = put(&mut c, &signed_v(&rel, big.len() as u64), &big, &[]).await;
            seen.push(code(&r));
            assert_eq!(object(&store, &rel).await, None, "{rel}: no object");
        }
        let r = tus_patch(&h2, &loc, 1 << 20, sess.slice(1 << 20..)).await;
        seen.push(code(&r));
        eprintln!("object store full: {seen:?}");
        assert_backend_failure(&seen, "object store full");
        assert_eq!(tus_offset(&mut c, &loc).await, 1 << 20, "offset kept");
        // No multipart upload is left of the PUTs that failed (aborted at once).
        let left = store.multipart_uploads().await.unwrap();
        assert!(left.is_empty(), "multipart uploads left: {left:?}");
        // Downloads go on while the store is full.
        assert_eq!(get_sha(&mut c, "f/keep.bin").await, (200, sha(&keep)));

        fs.unfill();
        put_until_stored(&mut c, "f/after.bin", &big).await;
        assert_eq!(
            object(&store, "f/after.bin").await.map(|o| o.sha),
            Some(sha(&big))
        );
        let off = tus_offset(&mut c, &loc).await;
        assert_eq!(off, 1 << 20);
        assert_eq!(
            tus_patch(&h2, &loc, off, sess.slice(off as usize..))
                .await
                .status,
            204
        );
        assert_eq!(
            object(&store, "f/sess.bin").await.map(|o| o.sha),
            Some(sha(&sess))
        );
        assert_eq!(
            object(&store, "f/keep.bin").await.map(|o| o.sha),
            Some(sha(&keep))
        );
    })
    .await;
    srv.stop().await;
    drop(w);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn losing_write_permission_is_5xx_opens_the_breaker_and_recovers() {
    let Some(mut w) = weed_with(None, &[]) else {
        return;
    };
    let prefix = s3_env::unique_prefix("perm");
    let store = s3_env::store_at(&w.endpoint, &prefix);
    let srv = server_on(&w.endpoint, &prefix).await;
    let mut c = srv.client(Proto::H1).await;
    let keep = content(4, 200_000);
    let r = put(&mut c, &signed_v("p/keep.bin", 200_000), &keep, &[]).await;
    assert_eq!(r.status, 201);
    let total = 400_000u64;
    let sess = content(5, total);
    let loc = tus_create(&mut c, "p/sess.bin", total).await;
    let h2 = srv.client(Proto::H2).await;
    assert_eq!(
        tus_patch(&h2, &loc, 0, sess.slice(..100_000)).await.status,
        204
    );

    // The identity may read and list, no more.
    w.set_actions(&["Read", "List"]);
    w.stop();
    w.restart();
    let ro = std::sync::Arc::new(s3_env::store_at(&w.endpoint, ""));
    w.wait_bucket(move || {
        let ro = ro.clone();
        async move { ro.check().await.is_ok() }
    });
    s3_env::wait_serving(&w, &format!("{prefix}p/keep.bin"));
    bounded("permission removed", async {
        let mut seen = Vec::new();
        for (i, proto) in Proto::ALL.iter().cycle().take(8).enumerate() {
            let mut c = srv.client(*proto).await;
            let r = put(&mut c, &signed_v(&format!("p/x{i}.bin"), 3), b"abc", &[]).await;
            seen.push(code(&r));
        }
        let r = tus_patch(&h2, &loc, 100_000, sess.slice(100_000..200_000)).await;
        seen.push(code(&r));
        eprintln!("write permission removed: {seen:?}");
        assert_backend_failure(&seen, "write permission removed");
        assert_eq!(
            seen.last().unwrap(),
            &(503, "storage_unavailable".to_string(), true),
            "the breaker is open"
        );
        // Reads have a breaker of their own: downloads go on while writes are refused.
        assert_eq!(
            get_sha(&mut c, "p/keep.bin").await,
            (200, sha(&keep)),
            "a download while the write breaker is open"
        );
        assert_eq!(tus_offset(&mut c, &loc).await, 100_000, "offset kept");
    })
    .await;

    w.set_actions(&["Admin", "Read", "Write", "List", "Tagging"]);
    w.stop();
    w.restart();
    let rw = std::sync::Arc::new(s3_env::store_at(&w.endpoint, ""));
    w.wait_bucket(move || {
        let rw = rw.clone();
        async move { rw.check().await.is_ok() }
    });
    s3_env::wait_serving(&w, &format!("{prefix}p/keep.bin"));
    bounded("permission back", async {
        put_until_stored(&mut c, "p/after.bin", b"xyz").await;
        assert_eq!(
            object(&store, "p/keep.bin").await.map(|o| o.sha),
            Some(sha(&keep)),
            "nothing stored changed"
        );
        assert_eq!(
            tus_patch(&h2, &loc, 100_000, sess.slice(100_000..))
                .await
                .status,
            204
        );
        assert_eq!(
            object(&store, "p/sess.bin").await.map(|o| o.sha),
            Some(sha(&sess))
        );
        for i in 0..8 {
            assert_eq!(object(&store, &format!("p/x{i}.bin")).await, None);
        }
    })
    .await;
    srv.stop().await;
}
