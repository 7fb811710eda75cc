//! The s3 backend's part store through a running server (issue 11, sections 2 and 3), over
//! a private SeaweedFS (`common/s3.rs`): SeaweedFS killed mid-upload and started again gives
//! clear 503s with a stable code, no partial object, then the upload completes; the S3
//! requests of each tus PATCH, counted by the server's own metric; tus partials past a part
//! concatenate on S3. (The part store alone: tests/s3_parts.rs.)
//!
//! Services rule: without `weed` a test prints `SKIPPED` and returns, unless `CI` or
//! `XFERD_REQUIRE_SERVICES` is set. Every test is bounded in time.

mod common;
#[path = "common/s3_env.rs"]
mod s3_env;

use common::*;
use s3_env::*;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::time::Duration;
use xferd::storage::s3::parts::S3Parts;
use xferd::storage::store::{PartStore, Store};

const MIB: usize = 1 << 20;

/// Every test is bounded in time.
async fn bounded<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(120), f)
        .await
        .expect("test finished within its time limit")
}

/// Waits (bounded, 30 s) until the bucket of `w` answers a signed HeadBucket.
fn wait_ready(w: &common::s3::SeaweedFs) {
    let probe = std::sync::Arc::new(store_at(&w.endpoint, ""));
    w.wait_bucket(move || {
        let probe = probe.clone();
        async move { probe.check().await.is_ok() }
    });
}

fn assert_unavailable(r: &Reply, what: &str) -> bool {
    assert!(
        r.status.as_u16() >= 500,
        "{what}: {} {:?}",
        r.status,
        r.body
    );
    if r.status != 503 {
        return false;
    }
    assert_eq!(
        r.header("xferd-error"),
        Some("storage_unavailable"),
        "{what}"
    );
    assert!(r.retry_after_secs() >= 1, "{what}");
    true
}

/// SeaweedFS killed in the middle of a tus upload and started again on the same ports and
/// data: the next appends and a plain PUT get 5xx then 503 + Retry-After with a stable
/// code, the acknowledged offset stays what is in the bucket, no partial object appears,
/// and once SeaweedFS is back the upload continues and completes with its SHA-256.
#[tokio::test]
async fn seaweedfs_stopped_mid_upload_gives_503s_then_the_upload_completes() {
    bounded(async {
        let Some(mut w) = common::s3::start_restartable() else {
            return;
        };
        wait_ready(&w);
        let prefix = unique_prefix("restart");
        let (endpoint, p) = (w.endpoint.clone(), prefix.clone());
        let srv = TestServer::start_with(move |c| {
            c.storage.backend = xferd::config::StorageBackend::S3;
            let s = &mut c.storage.s3;
            s.endpoint = endpoint;
            s.allow_http = true;
            s.bucket = common::s3::BUCKET.into();
            s.prefix = p;
            s.part_size = PART;
            s.max_parts_in_flight = 2;
            s.access_key_id = Some(common::s3::ACCESS_KEY.into());
            s.secret_access_key = Some(common::s3::SECRET_KEY.into());
            c.resumable.commit_every = 1 << 20;
        })
        .await;
        let st = store_at(&w.endpoint, &prefix);
        let mut c = srv.client(xferd::client::Proto::H1).await;
        let data = pattern(9, 0, 12 * MIB);
        let rel = "restart/tus.bin";
        let loc = tus_create(&mut c, rel, data.len()).await;
        let first = 6 * MIB;
        let r = tus_patch(&c, &loc, 0, data.slice(..first)).await;
        assert_eq!(r.status, 204, "{:?}", r.body);
        // An object to read back after the restart (see `wait_serving`).
        let r = put(&mut c, &signed_v("restart/probe.bin", 5), b"probe", &[]).await;
        assert_eq!(r.status, 201);

        w.stop();
        let mut saw_503 = false;
        for i in 0..10 {
            let r = tus_patch(&c, &loc, first as u64, data.slice(first..first + MIB)).await;
            if assert_unavailable(&r, &format!("PATCH {i} with SeaweedFS down")) {
                saw_503 = true;
                break;
            }
        }
        assert!(saw_503, "the PATCHes never became 503");
        let put_url = signed_v("restart/plain.bin", 3 * MIB as u64);
        let r = put(&mut c, &put_url, &data.slice(..3 * MIB), &[]).await;
        assert_unavailable(&r, "PUT with SeaweedFS down");
        let r = request(&mut c, "HEAD", &loc, &[("tus-resumable", "1.0.0")], None).await;
        assert_eq!(r.status, 200);
        assert_eq!(
            r.header("upload-offset"),
            Some(first.to_string().as_str()),
            "nothing acknowledged past what is in the bucket"
        );

        w.restart();
        wait_serving(&w, &format!("{prefix}restart/probe.bin"));
        // The breaker lets a probe through after its cool-down: bounded retries.
        let (mut done, mut last) = (None, String::new());
        for _ in 0..60 {
            let r = request(&mut c, "HEAD", &loc, &[("tus-resumable", "1.0.0")], None).await;
            let offset: u64 = r.header("upload-offset").unwrap().parse().unwrap();
            let r = tus_patch(&c, &loc, offset, data.slice(offset as usize..)).await;
            if r.status == 204 {
                done = Some(r);
                break;
            }
            assert!(r.status.as_u16() >= 500, "{} {:?}", r.status, r.body);
            last = format!(
                "offset {offset}: {} {:?} {}",
                r.status,
                r.header("xferd-error"),
                String::from_utf8_lossy(&r.body)
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        assert!(
            done.is_some(),
            "the upload never resumed after SeaweedFS came back; last answer {last}; weed: {}",
            w.log_tail()
        );
        let got = get(&mut c, &format!("/{rel}"), &[]).await;
        assert_eq!(got.status, 200);
        assert_eq!(Sha256::digest(&got.body), Sha256::digest(&data));
        assert!(
            st.stat(&key("restart/plain.bin")).await.unwrap().is_none(),
            "no partial object of the PUT cut by the outage"
        );
        srv.stop().await;
    })
    .await;
}

/// `xferd_s3_requests_total{op}` of a server, by operation (from `/metrics`).
async fn metric_ops(srv: &TestServer) -> BTreeMap<String, u64> {
    let mut c = srv.client(xferd::client::Proto::H1).await;
    let r = get(&mut c, "/metrics", &[]).await;
    assert_eq!(r.status, 200);
    String::from_utf8_lossy(&r.body)
        .lines()
        .filter_map(|l| l.strip_prefix("xferd_s3_requests_total{op=\""))
        .filter_map(|l| {
            let (op, rest) = l.split_once('"')?;
            let n = rest.rsplit(' ').next()?.parse::<f64>().ok()?;
            Some((op.to_string(), n as u64))
        })
        .collect()
}

fn diff(after: &BTreeMap<String, u64>, before: &BTreeMap<String, u64>) -> BTreeMap<String, u64> {
    after
        .iter()
        .map(|(op, n)| (op.clone(), n - before.get(op).copied().unwrap_or(0)))
        .filter(|(_, n)| *n > 0)
        .collect()
}

fn owned(pairs: &[(&str, u64)]) -> BTreeMap<String, u64> {
    pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
}

/// The figures of the note, asserted through the server's metric: S3 requests of a tus
/// PATCH of 1 MiB and of 8 MiB, and of the PATCH that completes (part_size 5 MiB here).
#[tokio::test]
async fn s3_requests_per_tus_patch_through_the_server() {
    bounded(async {
        let Some(e) = env("patches").await else {
            return;
        };
        let mut c = e.srv.client(xferd::client::Proto::H1).await;
        let data = pattern(12, 0, 10 * MIB);
        let rel = "counted/tus.bin";
        let loc = tus_create(&mut c, rel, data.len()).await;
        let mut costs = Vec::new();
        for (from, to) in [(0, MIB), (MIB, 9 * MIB), (9 * MIB, 10 * MIB)] {
            let before = metric_ops(&e.srv).await;
            let r = tus_patch(&c, &loc, from as u64, data.slice(from..to)).await;
            assert_eq!(r.status, 204, "PATCH at {from}: {:?}", r.body);
            costs.push(diff(&metric_ops(&e.srv).await, &before));
        }
        // 1 MiB, below a part: the state object read and written.
        assert_eq!(costs[0], owned(&[("GetObject", 1), ("PutObject", 1)]));
        // 8 MiB on a 1 MiB tail: one part of 5 MiB (the upload begun), 4 MiB of tail.
        assert_eq!(
            costs[1],
            owned(&[
                ("CopyObject", 1),
                ("CreateMultipartUpload", 1),
                ("GetObject", 1),
                ("PutObject", 1),
                ("UploadPart", 1),
            ])
        );
        // The last 1 MiB: the part of 5 MiB filled, the state written; completion.
        assert_eq!(
            costs[2],
            owned(&[
                ("CompleteMultipartUpload", 1),
                ("CopyObject", 1),
                ("DeleteObject", 2),
                ("GetObject", 2),
                ("PutObject", 1),
                ("UploadPart", 1),
            ])
        );
        let got = get(&mut c, &format!("/{rel}"), &[]).await;
        assert_eq!(Sha256::digest(&got.body), Sha256::digest(&data));
        e.srv.stop().await;
    })
    .await;
}

/// tus concatenation on s3 (tus-js-client's `parallelUploads`): partials past a part are
/// sealed into objects of their own, the final upload copies what it can of them
/// server-side; the final object is whole, the partials leave nothing behind.
#[tokio::test]
async fn tus_partials_past_a_part_concatenate_on_s3() {
    bounded(async {
        let Some(e) = env("concat").await else {
            return;
        };
        let mut c = e.srv.client(xferd::client::Proto::H2).await;
        let rel = "joined/parallel.bin";
        let d = pattern(21, 0, 13 * MIB + 5);
        let mut locs = Vec::new();
        for part in [d.slice(..7 * MIB), d.slice(7 * MIB..)] {
            let len = part.len().to_string();
            let r = request(
                &mut c,
                "POST",
                &v3("POST", rel),
                &[TUS, ("upload-concat", "partial"), ("upload-length", &len)],
                None,
            )
            .await;
            assert_eq!(r.status, 201, "partial: {:?}", r.body);
            let loc = r.header("location").unwrap().to_string();
            for (from, to) in [(0, part.len() / 2), (part.len() / 2, part.len())] {
                let r = tus_patch(&c, &loc, from as u64, part.slice(from..to)).await;
                assert_eq!(r.status, 204, "PATCH at {from}: {:?}", r.body);
            }
            locs.push(loc);
        }
        let fin = format!("final;{} {}", locs[0], locs[1]);
        let before = metric_ops(&e.srv).await;
        let r = request(
            &mut c,
            "POST",
            &v3("POST", rel),
            &[TUS, ("upload-concat", &fin)],
            None,
        )
        .await;
        assert_eq!(r.status, 201, "final: {:?}", r.body);
        // Parts of 5 MiB: the first lies inside the first partial and is copied
        // server-side, the second spans both and is uploaded, the rest is the last part.
        let used = diff(&metric_ops(&e.srv).await, &before);
        assert_eq!(used.get("UploadPartCopy"), Some(&1), "{used:?}");
        assert_eq!(used.get("UploadPart"), Some(&2), "{used:?}");
        let got = get(&mut c, &format!("/{rel}"), &[]).await;
        assert_eq!(got.status, 200);
        assert_eq!(Sha256::digest(&got.body), Sha256::digest(&d));
        // Only the final object is left: no session data, no multipart upload.
        let left = e.store.list("", None, 100).await.unwrap();
        let keys: Vec<&str> = left.iter().map(|l| l.key.as_str()).collect();
        assert_eq!(keys, [rel]);
        let sessions = S3Parts::new(e.store.clone()).list().await.unwrap();
        assert!(sessions.is_empty(), "{sessions:?}");
        assert!(e.store.multipart_uploads().await.unwrap().is_empty());
        e.srv.stop().await;
    })
    .await;
}
