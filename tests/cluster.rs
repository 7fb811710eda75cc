//! Several instances (issue 11, sections 3 and 4): two real `xferd serve` processes, A and B,
//! sharing one storage backend, one Redis (a private redis-server per test, see
//! `common/redis.rs`), the secret and the certificate. A tus upload half-sent to A resumes
//! on B after A is SIGKILLed; a client reconnecting to B makes A's stale request commit;
//! HFS chunks of one upload go to A and B in parallel; the same key PUT on both gives one
//! 201 and one 409; a file uploaded through A downloads from B with ranges; B starting does
//! not delete A's uploads in progress; with Redis down resumable requests get 503 +
//! Retry-After while signed PUT and GET keep working, and service resumes when it is back;
//! a cluster refuses to start with a generated secret or certificate.
//!
//! The backend is a parameter (`fixture::BACKENDS`); today the fs backend over one shared root
//! (two instances on a shared disk). Every wait is bounded; every test has a time limit.

mod common;

#[path = "cluster/fixture.rs"]
mod fixture;

use bytes::Bytes;
use common::*;
use fixture::*;
use http::Request;
use std::path::Path;
use std::time::{Duration, Instant};

#[tokio::test]
async fn a_tus_upload_half_sent_to_a_resumes_on_b_after_a_is_killed() {
    limited(async {
        for &backend in BACKENDS {
            let Some(cl) = Cluster::new(backend, 2, 64 << 10) else {
                return;
            };
            let (mut a, b) = (cl.spawn("a").await, cl.spawn("b").await);
            let data = pattern(1, 0, 1 << 20);
            let mut ca = cl.client(&a).await;
            let loc = tus_create(&mut ca, "cluster/killed.bin", data.len()).await;
            let half = 512 << 10;
            // Half of it on its way: A has written (and committed, every 64 KiB) part of it;
            // the rest may still sit in A's buffer.
            let stale = hanging_patch(ca, &loc, data.slice(..half), data.len() as u64);
            backend
                .wait_written(cl.shared(), session_id(&loc), 256 << 10)
                .await;
            // A dies mid-request: its lock stays in Redis until its lease runs out.
            a.kill();
            let _ = stale.await;
            let mut cb = cl.client(&b).await;
            let started = Instant::now();
            let offset = tus_offset(&mut cb, &loc).await;
            assert!(
                started.elapsed() < Duration::from_secs(cl.lease_secs * 3 + 2),
                "{backend:?}: B waited {:?} for a dead holder's lock",
                started.elapsed()
            );
            // The dead holder's lock was shared: B got it only when its lease ran out.
            assert!(
                started.elapsed() >= Duration::from_millis(cl.lease_secs * 1000 / 2),
                "{backend:?}: B took the lock of a live lease after {:?}",
                started.elapsed()
            );
            // Progress is committed every 64 KiB or so: what A committed before it died.
            assert!(
                offset > 0 && offset <= half as u64,
                "{backend:?}: offset {offset}"
            );
            let r = tus_patch(&cb, &loc, offset, data.slice(offset as usize..)).await;
            assert_eq!(r.status, 204, "{backend:?}: resume on B: {:?}", r.body);
            let got = get(&mut cb, "/cluster/killed.bin", &[]).await;
            assert_eq!(got.status, 200, "{backend:?}");
            assert_eq!(
                sha(&got.body),
                sha(&data),
                "{backend:?}: SHA-256 of the file"
            );
        }
    })
    .await;
}

#[tokio::test]
async fn a_client_reconnecting_to_b_makes_the_stale_request_on_a_commit() {
    limited(async {
        for &backend in BACKENDS {
            // A long lease: B must not get the lock by its expiry, only by A releasing it.
            let Some(cl) = Cluster::new(backend, 30, 64 << 20) else {
                return;
            };
            let (a, b) = (cl.spawn("a").await, cl.spawn("b").await);
            let data = pattern(2, 0, 600_000);
            let mut ca = cl.client(&a).await;
            let loc = tus_create(&mut ca, "cluster/reconnect.bin", data.len()).await;
            let sent = 333_333;
            let stale = hanging_patch(ca, &loc, data.slice(..sent), data.len() as u64);
            // A holds the bytes in its buffer (nothing reaches the data file before a
            // commit is due): give them time to arrive.
            tokio::time::sleep(Duration::from_millis(1500)).await;
            let mut cb = cl.client(&b).await;
            let started = Instant::now();
            // Nothing was committed yet (commit_every is 64 MiB): B's offset query asks A's
            // request to stop, A commits every byte it had, then B answers.
            let offset = tus_offset(&mut cb, &loc).await;
            assert_eq!(offset, sent as u64, "{backend:?}: A committed what it had");
            assert!(
                started.elapsed() < Duration::from_secs(5),
                "{backend:?}: took {:?} (waited for the lease?)",
                started.elapsed()
            );
            let status = tokio::time::timeout(Duration::from_secs(10), stale)
                .await
                .expect("the stale request ends")
                .unwrap();
            // Told with a 409 (preempted), unless its connection closed before the answer.
            assert!(
                matches!(status, Ok(409) | Err(_)),
                "{backend:?}: the stale request got {status:?}"
            );
            let r = tus_patch(&cb, &loc, offset, data.slice(sent..)).await;
            assert_eq!(r.status, 204, "{backend:?}: {:?}", r.body);
            let got = get(&mut cb, "/cluster/reconnect.bin", &[]).await;
            assert_eq!(sha(&got.body), sha(&data), "{backend:?}");
            drop(a);
        }
    })
    .await;
}

#[tokio::test]
async fn hfs_chunks_of_one_upload_go_to_a_and_b_in_parallel() {
    limited(async {
        for &backend in BACKENDS {
            let Some(cl) = Cluster::new(backend, 5, 64 << 10) else {
                return;
            };
            let (a, b) = (cl.spawn("a").await, cl.spawn("b").await);
            let rel = "cluster/hfs chunks.bin";
            let data = pattern(3, 0, 10 * 65536 + 1234);
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
            assert_eq!(r.status, 201, "{backend:?}: {:?}", r.body);
            let id = r.json()["session_id"].as_str().unwrap().to_string();
            let chunks = r.json()["total_chunks"].as_u64().unwrap();
            assert_eq!(chunks, 11);
            // One connection per chunk, odd chunks to A, even ones to B, all at once.
            let cl = &cl;
            let sends = (0..chunks).map(|n| {
                let target = if n % 2 == 1 { &a } else { &b };
                let (data, id) = (data.clone(), id.clone());
                async move {
                    let mut c = cl.client(target).await;
                    let start = (n * 65536) as usize;
                    let end = (start + 65536).min(data.len());
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
                assert_eq!(r.status, 200, "{backend:?} chunk {n}: {:?}", r.body);
            }
            let mut cb = cl.client(&b).await;
            let s = get(&mut cb, &format!("/upload-status?session_id={id}"), &[]).await;
            assert_eq!(s.json()["completed"].as_bool(), Some(true), "{:?}", s.body);
            assert_eq!(s.json()["uploaded_bytes"].as_u64(), Some(data.len() as u64));
            let got = get(&mut ca, &format!("/{}", encode_path(rel)), &[]).await;
            assert_eq!(sha(&got.body), sha(&data), "{backend:?}");
        }
    })
    .await;
}

#[tokio::test]
async fn the_same_key_put_on_a_and_b_gives_one_201_and_one_409() {
    limited(async {
        for &backend in BACKENDS {
            let Some(cl) = Cluster::new(backend, 5, 64 << 10) else {
                return;
            };
            let (a, b) = (cl.spawn("a").await, cl.spawn("b").await);
            for round in 0..5u64 {
                let rel = format!("cluster/race-{round}.bin");
                let (da, db) = (
                    pattern(10 + round, 0, 300_000),
                    pattern(20 + round, 0, 300_000),
                );
                let url = signed_v(&rel, da.len() as u64);
                let (mut ca, mut cb) = (cl.client(&a).await, cl.client(&b).await);
                let (ra, rb) =
                    tokio::join!(put(&mut ca, &url, &da, &[]), put(&mut cb, &url, &db, &[]));
                let mut statuses = [ra.status.as_u16(), rb.status.as_u16()];
                statuses.sort();
                assert_eq!(statuses, [201, 409], "{backend:?} round {round}");
                let got = get(&mut ca, &format!("/{rel}"), &[]).await;
                let winner = if ra.status == 201 { &da } else { &db };
                assert_eq!(&got.body, winner, "{backend:?}: the 201's bytes are stored");
            }
        }
    })
    .await;
}

#[tokio::test]
async fn a_file_uploaded_through_a_downloads_from_b_with_ranges() {
    limited(async {
        for &backend in BACKENDS {
            let Some(cl) = Cluster::new(backend, 5, 64 << 10) else {
                return;
            };
            let (a, b) = (cl.spawn("a").await, cl.spawn("b").await);
            let data = pattern(4, 0, 200_000);
            let mut ca = cl.client(&a).await;
            let r = put(
                &mut ca,
                &signed_v("cluster/ranges.bin", 200_000),
                &data,
                &[],
            )
            .await;
            assert_eq!(r.status, 201, "{backend:?}");
            let mut cb = cl.client(&b).await;
            let r = get(
                &mut cb,
                "/cluster/ranges.bin",
                &[("range", "bytes=1000-1999")],
            )
            .await;
            assert_eq!(r.status, 206, "{backend:?}");
            assert_eq!(r.header("content-range"), Some("bytes 1000-1999/200000"));
            assert_eq!(r.body, data.slice(1000..2000));
            let r = get(&mut cb, "/cluster/ranges.bin", &[("range", "bytes=-500")]).await;
            assert_eq!(r.status, 206, "{backend:?}");
            assert_eq!(r.body, data.slice(199_500..));
            let r = get(&mut cb, "/cluster/ranges.bin", &[]).await;
            assert_eq!(sha(&r.body), sha(&data), "{backend:?}");
        }
    })
    .await;
}

#[tokio::test]
async fn b_starting_does_not_delete_what_a_has_in_progress() {
    limited(async {
        for &backend in BACKENDS {
            let Some(cl) = Cluster::new(backend, 5, 64 << 10) else {
                return;
            };
            let a = cl.spawn("a").await;
            let data = pattern(5, 0, 400_000);
            // A tus upload with committed progress, and a plain PUT still streaming.
            let mut ca = cl.client(&a).await;
            let loc = tus_create(&mut ca, "cluster/in-progress.bin", data.len()).await;
            let r = tus_patch(&ca, &loc, 0, data.slice(..131_072)).await;
            assert_eq!(r.status, 204, "{backend:?}");
            let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(4);
            let body: xferd::core::body::BodyStream =
                Box::pin(futures_util::stream::unfold(rx, |mut rx| async move {
                    rx.recv().await.map(|b| (Ok(b), rx))
                }));
            let plain = pattern(6, 0, 200_000);
            let put_url = signed_v("cluster/plain-in-progress.bin", plain.len() as u64);
            let pc = cl.client(&a).await;
            let putting = tokio::spawn(async move {
                let req = Request::builder()
                    .method("PUT")
                    .uri(put_url)
                    .header("content-length", "200000")
                    .body(())
                    .unwrap();
                pc.send(req, Some(body)).await.map(|r| r.status.as_u16())
            });
            tx.send(plain.slice(..100_000)).await.unwrap();
            let deadline = Instant::now() + Duration::from_secs(10);
            while backend.temp_files(cl.shared(), "cluster").is_empty() {
                assert!(
                    Instant::now() < deadline,
                    "the PUT's temporary file never appeared"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            let temps = backend.temp_files(cl.shared(), "cluster");
            let b = cl.spawn("b").await;
            assert_eq!(
                backend.temp_files(cl.shared(), "cluster"),
                temps,
                "{backend:?}: B's start-up sweep removed A's upload in progress"
            );
            tx.send(plain.slice(100_000..)).await.unwrap();
            let status = tokio::time::timeout(Duration::from_secs(10), putting)
                .await
                .expect("the PUT finishes")
                .unwrap()
                .expect("PUT");
            assert_eq!(status, 201, "{backend:?}: A's PUT completes");
            let mut cb = cl.client(&b).await;
            assert_eq!(tus_offset(&mut cb, &loc).await, 131_072, "{backend:?}");
            let r = tus_patch(&cb, &loc, 131_072, data.slice(131_072..)).await;
            assert_eq!(r.status, 204, "{backend:?}: {:?}", r.body);
            let got = get(&mut cb, "/cluster/in-progress.bin", &[]).await;
            assert_eq!(sha(&got.body), sha(&data), "{backend:?}");
            let got = get(&mut cb, "/cluster/plain-in-progress.bin", &[]).await;
            assert_eq!(got.body, plain, "{backend:?}");
        }
    })
    .await;
}

#[tokio::test]
async fn with_redis_down_resumable_uploads_get_503_and_plain_put_and_get_keep_working() {
    limited(async {
        for &backend in BACKENDS {
            let Some(mut cl) = Cluster::new(backend, 5, 64 << 10) else {
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
            let r = tus_patch(&c, &loc, 0, Bytes::from_static(b"abc")).await;
            assert_store_unavailable(&r, "tus append");
            let url = format!(
                "/chunked-upload?{}",
                v3("POST", "cluster/h.bin").split_once('?').unwrap().1
            );
            let h = [("x-filename", "cluster/h.bin"), ("x-total-size", "10")];
            let r = request(&mut c, "POST", &url, &h, None).await;
            assert_store_unavailable(&r, "hfs creation");
            // Signed PUT and GET do not need the session store.
            let plain = pattern(8, 0, 7000);
            let r = put(&mut c, &signed_v("cluster/during.bin", 7000), &plain, &[]).await;
            assert_eq!(r.status, 201, "{backend:?}: PUT with Redis down");
            assert_eq!(get(&mut c, "/cluster/during.bin", &[]).await.body, plain);
            assert_eq!(get(&mut c, "/cluster/stored.bin", &[]).await.body, stored);

            // Back (empty: this Redis keeps nothing): service resumes by itself.
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
            assert_eq!(r.status, 204, "{backend:?}: {:?}", r.body);
            assert_eq!(
                get(&mut c, "/cluster/after.bin", &[]).await.body,
                pattern(9, 0, 1000)
            );
        }
    })
    .await;
}

/// `xferd serve` on `cfg` refuses to start within 20 s; what it said.
fn refused(cfg: &Path) -> String {
    serve_must_fail(cfg, Duration::from_secs(20))
}

#[test]
fn a_cluster_refuses_to_start_with_a_generated_secret_or_certificate() {
    // The refusal comes before any connection: no Redis needed (nothing listens there).
    let dir = tempfile::tempdir().unwrap();
    let cluster = "[cluster]\nredis_url = \"redis://127.0.0.1:1/0\"\n";
    let state = dir.path().join("state");
    let write = |name: &str, body: &str| {
        let p = dir.path().join(name);
        let server = format!(
            "[server]\nlisten = \"127.0.0.1:0\"\nstorage_path = \"{}\"\nstate_path = \"{}\"\n",
            dir.path().join("data").display(),
            state.display()
        );
        std::fs::write(&p, format!("{server}{body}{cluster}")).unwrap();
        p
    };
    let err = refused(&write("no-secret.toml", ""));
    assert!(err.contains("security.secret"), "{err}");
    let err = refused(&write(
        "no-cert.toml",
        &format!("[security]\nsecret = \"{SECRET}\"\n"),
    ));
    assert!(err.contains("tls.cert"), "{err}");
    // Nothing was generated on the way.
    assert!(!state.join("secret").exists() && !state.join("cert.pem").exists());
}
