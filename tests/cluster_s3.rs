//! Two instances on the s3 backend (issue 11, section 4): A and B are real `xferd serve`
//! processes sharing one private SeaweedFS bucket (`common/s3.rs`, one per test process, a
//! key prefix per cluster) and one private Redis. A tus upload half-sent to A resumes on B
//! after A is SIGKILLed, with the SHA-256 intact (its parts and tail are in the bucket, not
//! on A's disk); HFS chunks of one upload go to A and B in parallel; the same key PUT on
//! both gives one 201 and one 409; a file uploaded through A downloads from B with ranges;
//! with Redis stopped, resumable requests get 503 while signed PUT and GET keep working.
//!
//! Services rule: without `weed` or `redis-server` a test prints `SKIPPED` and returns,
//! unless `CI` or `XFERD_REQUIRE_SERVICES` is set (then it fails). Every wait is bounded;
//! every test has a time limit.

mod common;

#[path = "cluster/fixture.rs"]
mod fixture;

use common::*;
use fixture::*;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

const MIB: usize = 1 << 20;

/// The process's SeaweedFS (bucket ready), its endpoint published for [`Backend::S3`].
fn seaweed() -> bool {
    static WEED: OnceLock<Option<common::s3::SeaweedFs>> = OnceLock::new();
    WEED.get_or_init(|| {
        let w = common::s3::start()?;
        let endpoint = w.endpoint.clone();
        w.wait_bucket(move || {
            let endpoint = endpoint.clone();
            async move { bucket_answers(&endpoint).await }
        });
        let _ = S3_ENDPOINT.set(w.endpoint.clone());
        Some(w)
    })
    .is_some()
}

fn store(endpoint: &str, prefix: &str) -> Result<xferd::storage::s3::S3Store, String> {
    xferd::storage::s3::S3Store::new(
        xferd::storage::s3::S3Options {
            endpoint: endpoint.into(),
            region: "us-east-1".into(),
            bucket: common::s3::BUCKET.into(),
            prefix: prefix.into(),
            allow_http: true,
            part_size: 5 << 20,
            max_parts_in_flight: 1,
            credentials: xferd::storage::s3::Credentials {
                access_key_id: common::s3::ACCESS_KEY.into(),
                secret_access_key: common::s3::SECRET_KEY.into(),
                session_token: None,
            },
        },
        None,
    )
}

async fn bucket_answers(endpoint: &str) -> bool {
    match store(endpoint, "") {
        Ok(st) => st.check().await.is_ok(),
        Err(_) => false,
    }
}

/// The cluster's session data in the bucket, read as another instance would.
struct PartsView(xferd::storage::s3::parts::S3Parts);

impl PartsView {
    fn new(cl: &Cluster) -> PartsView {
        let st = store(S3_ENDPOINT.get().unwrap(), &s3_prefix(cl.shared())).unwrap();
        PartsView(xferd::storage::s3::parts::S3Parts::new(st))
    }

    /// Whether at least `n` bytes of session `id` are durably in the bucket.
    async fn holds(&self, id: &str, n: u64) -> Result<(), String> {
        use xferd::storage::store::PartStore;
        let sha = <sha2::Sha256 as sha2::Digest>::new();
        self.0
            .hash_range(id, sha, 0, n)
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    }
}

/// A cluster on the s3 backend, or `None` (skipped) without SeaweedFS or Redis.
fn s3_cluster(lease_secs: u64, commit_every: u64) -> Option<Cluster> {
    if !seaweed() {
        return None;
    }
    Cluster::new(Backend::S3, lease_secs, commit_every)
}

#[tokio::test]
async fn a_tus_upload_half_sent_to_a_resumes_on_b_after_a_is_killed() {
    limited(async {
        let Some(cl) = s3_cluster(2, MIB as u64) else {
            return;
        };
        let (mut a, b) = (cl.spawn("a").await, cl.spawn("b").await);
        // 13 MiB: parts of 5 MiB and a tail, on both sides of the kill.
        let data = pattern(1, 0, 13 * MIB);
        let mut ca = cl.client(&a).await;
        let loc = tus_create(&mut ca, "cluster/killed.bin", data.len()).await;
        let half = 7 * MIB;
        let stale = hanging_patch(ca, &loc, data.slice(..half), data.len() as u64);
        // A commits every MiB: wait (bounded) until the bucket holds 6 MiB of it, and a
        // moment for the record of that commit, which follows it.
        let mut cb = cl.client(&b).await;
        let parts = PartsView::new(&cl);
        let deadline = Instant::now() + Duration::from_secs(30);
        while let Err(e) = parts.holds(session_id(&loc), 6 * MIB as u64).await {
            assert!(
                Instant::now() < deadline,
                "A never stored 6 MiB: {e} ({loc})"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        a.kill();
        let _ = stale.await;
        let started = Instant::now();
        let offset = tus_offset(&mut cb, &loc).await;
        assert!(
            started.elapsed() < Duration::from_secs(cl.lease_secs * 3 + 2),
            "B waited {:?} for a dead holder's lock",
            started.elapsed()
        );
        assert!(
            offset > 5 * MIB as u64 && offset <= half as u64,
            "offset {offset}: A committed past its first part before it died"
        );
        let r = tus_patch(&cb, &loc, offset, data.slice(offset as usize..)).await;
        assert_eq!(r.status, 204, "resume on B: {:?}", r.body);
        let got = get(&mut cb, "/cluster/killed.bin", &[]).await;
        assert_eq!(got.status, 200);
        assert_eq!(got.body.len(), data.len());
        assert_eq!(sha(&got.body), sha(&data), "SHA-256 of the file");
        let mut ca2 = cl.client(&b).await;
        let h = request(&mut ca2, "HEAD", &loc, &[TUS], None).await;
        assert_eq!(
            h.header("upload-offset"),
            Some(data.len().to_string().as_str())
        );
    })
    .await;
}

#[tokio::test]
async fn hfs_chunks_of_one_upload_go_to_a_and_b_in_parallel() {
    limited(async {
        let Some(cl) = s3_cluster(5, MIB as u64) else {
            return;
        };
        let (a, b) = (cl.spawn("a").await, cl.spawn("b").await);
        let rel = "cluster/hfs chunks.bin";
        let data = pattern(3, 0, 12 * MIB + 1234);
        let url = format!(
            "/chunked-upload?{}",
            v3("POST", rel).split_once('?').unwrap().1
        );
        let total = data.len().to_string();
        let mut ca = cl.client(&a).await;
        let r = request(
            &mut ca,
            "POST",
            &url,
            &[("x-filename", rel), ("x-total-size", &total)],
            None,
        )
        .await;
        assert_eq!(r.status, 201, "{:?}", r.body);
        let id = r.json()["session_id"].as_str().unwrap().to_string();
        // The configured chunk size is 64 KiB; on S3 the advice is never below a part.
        let chunk = r.json()["chunk_size"].as_u64().unwrap() as usize;
        assert_eq!(chunk, 5 * MIB, "chunk advice on S3");
        let chunks = r.json()["total_chunks"].as_u64().unwrap();
        assert_eq!(chunks, 3);
        let cl = &cl;
        let sends = (0..chunks).map(|n| {
            let target = if n % 2 == 1 { &a } else { &b };
            let (data, id) = (data.clone(), id.clone());
            async move {
                let mut c = cl.client(target).await;
                let start = n as usize * chunk;
                let end = (start + chunk).min(data.len());
                let (len, num) = ((end - start).to_string(), n.to_string());
                let h = [
                    ("x-upload-session-id", id.as_str()),
                    ("x-chunk-number", num.as_str()),
                    ("content-length", len.as_str()),
                ];
                let body = Some(body_once(data.slice(start..end)));
                (n, request(&mut c, "PUT", "/chunked-upload", &h, body).await)
            }
        });
        for (n, r) in futures_util::future::join_all(sends).await {
            assert_eq!(r.status, 200, "chunk {n}: {:?}", r.body);
        }
        let mut cb = cl.client(&b).await;
        let s = get(&mut cb, &format!("/upload-status?session_id={id}"), &[]).await;
        assert_eq!(s.json()["completed"].as_bool(), Some(true), "{:?}", s.body);
        let got = get(&mut ca, &format!("/{}", encode_path(rel)), &[]).await;
        assert_eq!(got.body.len(), data.len());
        assert_eq!(sha(&got.body), sha(&data));
    })
    .await;
}

#[tokio::test]
async fn the_same_key_put_on_a_and_b_gives_one_201_and_one_409() {
    limited(async {
        let Some(cl) = s3_cluster(5, MIB as u64) else {
            return;
        };
        let (a, b) = (cl.spawn("a").await, cl.spawn("b").await);
        // Rounds 0-2 are single PutObjects; rounds 3-5 are multipart (past the 5 MiB part),
        // whose CompleteMultipartUploads SeaweedFS does not check atomically: without the
        // shared commit lock both got 201 and one object silently replaced the other
        // (interop/cluster).
        for round in 0..10u64 {
            let rel = format!("cluster/race-{round}.bin");
            let len = if round < 3 { 300_000 } else { 11 * MIB + 1 };
            let (da, db) = (pattern(10 + round, 0, len), pattern(20 + round, 0, len));
            let url = signed_v(&rel, da.len() as u64);
            let (mut ca, mut cb) = (cl.client(&a).await, cl.client(&b).await);
            let (ra, rb) = tokio::join!(put(&mut ca, &url, &da, &[]), put(&mut cb, &url, &db, &[]));
            let mut statuses = [ra.status.as_u16(), rb.status.as_u16()];
            statuses.sort();
            assert_eq!(statuses, [201, 409], "round {round}");
            let got = get(&mut ca, &format!("/{rel}"), &[]).await;
            let winner = if ra.status == 201 { &da } else { &db };
            assert_eq!(&got.body, winner, "the 201's bytes are stored");
        }
    })
    .await;
}

#[tokio::test]
async fn a_file_uploaded_through_a_downloads_from_b_with_ranges() {
    limited(async {
        let Some(cl) = s3_cluster(5, MIB as u64) else {
            return;
        };
        let (a, b) = (cl.spawn("a").await, cl.spawn("b").await);
        let n = 6 * MIB + 7;
        let data = pattern(4, 0, n);
        let mut ca = cl.client(&a).await;
        let r = put(
            &mut ca,
            &signed_v("cluster/ranges.bin", n as u64),
            &data,
            &[],
        )
        .await;
        assert_eq!(r.status, 201);
        let mut cb = cl.client(&b).await;
        let r = get(
            &mut cb,
            "/cluster/ranges.bin",
            &[("range", "bytes=5242000-5243999")],
        )
        .await;
        assert_eq!(r.status, 206);
        assert_eq!(
            r.header("content-range"),
            Some(format!("bytes 5242000-5243999/{n}").as_str())
        );
        assert_eq!(r.body, data.slice(5_242_000..5_244_000));
        let r = get(&mut cb, "/cluster/ranges.bin", &[("range", "bytes=-500")]).await;
        assert_eq!(r.status, 206);
        assert_eq!(r.body, data.slice(n - 500..));
        let r = get(&mut cb, "/cluster/ranges.bin", &[]).await;
        assert_eq!(sha(&r.body), sha(&data));
    })
    .await;
}

/// Redis stopped, on the s3 backend: resumable requests get 503 + Retry-After with a
/// stable code, signed PUT and GET keep working, and service resumes when Redis is back.
#[tokio::test]
async fn with_redis_down_resumable_uploads_get_503_and_plain_put_and_get_keep_working() {
    limited(async {
        let Some(mut cl) = s3_cluster(5, MIB as u64) else {
            return;
        };
        let a = cl.spawn("a").await;
        let mut c = cl.client(&a).await;
        let loc = tus_create(&mut c, "cluster/before.bin", 1000).await;
        let stored = pattern(7, 0, 5000);
        let r = put(&mut c, &signed_v("cluster/stored.bin", 5000), &stored, &[]).await;
        assert_eq!(r.status, 201);

        cl.redis.stop();
        let len = [TUS, ("upload-length", "1000")];
        let r = request(&mut c, "POST", &v3("POST", "cluster/x.bin"), &len, None).await;
        assert_store_unavailable(&r, "tus creation");
        let r = request(&mut c, "HEAD", &loc, &[TUS], None).await;
        assert_store_unavailable(&r, "tus offset");
        let r = tus_patch(&c, &loc, 0, bytes::Bytes::from_static(b"abc")).await;
        assert_store_unavailable(&r, "tus append");
        let plain = pattern(8, 0, 7000);
        let r = put(&mut c, &signed_v("cluster/during.bin", 7000), &plain, &[]).await;
        assert_eq!(r.status, 201, "PUT with Redis down");
        assert_eq!(get(&mut c, "/cluster/during.bin", &[]).await.body, plain);
        assert_eq!(get(&mut c, "/cluster/stored.bin", &[]).await.body, stored);

        cl.redis.restart();
        let deadline = Instant::now() + Duration::from_secs(10);
        let loc = loop {
            let r = request(&mut c, "POST", &v3("POST", "cluster/after.bin"), &len, None).await;
            if r.status == 201 {
                break r.header("location").unwrap().to_string();
            }
            assert_store_unavailable(&r, "while Redis comes back");
            assert!(Instant::now() < deadline, "service did not resume");
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        let r = tus_patch(&c, &loc, 0, pattern(9, 0, 1000)).await;
        assert_eq!(r.status, 204, "{:?}", r.body);
        assert_eq!(
            get(&mut c, "/cluster/after.bin", &[]).await.body,
            pattern(9, 0, 1000)
        );
    })
    .await;
}
