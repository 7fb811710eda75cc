//! Disk full and storage errors (issue 15, section 3), on real size-limited tmpfs mounts
//! (root needed: without it these tests say SKIPPED and pass, unless CI,
//! XFERD_REQUIRE_SERVICES=1 or XFERD_REQUIRE_ROOT=1 is set, where they fail):
//!
//! - a PUT whose `Content-Length` exceeds the free space is refused (507) before its body is
//!   read; one that runs out mid-body is 507 and leaves nothing; downloads go on while the
//!   disk is full; once space is freed uploads succeed again (each over h1, h2 and h3);
//!   resumable appends on a full disk are covered by tests/resumable_defects.rs;
//! - a full state directory (the session store cannot commit) refuses new sessions and
//!   appends with a stable code, leaves no session data behind, and recovers;
//! - a read-only remount of the storage mid-run gives 5xx with stable codes, the storage
//!   breaker for writes opens (503 with `Retry-After`) while downloads go on, it closes
//!   again once the storage is writable, and nothing stored before is changed.

use super::walk;
use crate::common::*;
use crate::fsfull::Tmpfs;
use bytes::Bytes;
use std::path::Path;
use std::time::Duration;
use xferd::client::{Client, Proto};
use xferd::core::body::{BodyError, BodyStream};

async fn bounded<T>(what: &str, f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(120), f)
        .await
        .unwrap_or_else(|_| panic!("timed out: {what}"))
}

fn code(r: &Reply) -> (u16, String) {
    (
        r.status.as_u16(),
        r.json()["error"].as_str().unwrap_or("").to_string(),
    )
}

fn files(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

/// `first` bytes of `data`, then the rest once `go` fires (or never, if it is dropped).
fn gated(data: Bytes, first: usize, go: tokio::sync::oneshot::Receiver<()>) -> BodyStream {
    let head = futures_util::stream::iter(vec![Ok::<_, BodyError>(data.slice(..first))]);
    let tail = futures_util::stream::once(async move {
        if go.await.is_err() {
            futures_util::future::pending::<()>().await;
        }
        Ok::<_, BodyError>(data.slice(first..))
    });
    Box::pin(futures_util::StreamExt::chain(head, tail))
}

/// A body that never yields a byte.
fn never() -> BodyStream {
    Box::pin(futures_util::stream::pending())
}

async fn put_len(c: &Client, rel: &str, len: u64, body: BodyStream) -> Reply {
    let l = len.to_string();
    request_on(
        c,
        "PUT",
        &signed_v(rel, len),
        &[("content-length", &l)],
        Some(body),
    )
    .await
}

#[tokio::test]
async fn a_full_disk_refuses_puts_cleanly_keeps_serving_and_recovers() {
    let Some(fs) = Tmpfs::mount(48 << 20) else {
        return;
    };
    let data = fs.path().join("data");
    let d2 = data.clone();
    let srv = TestServer::start_with(move |c| c.server.storage_path = d2).await;
    let full = (507, "insufficient_storage".to_string());
    bounded("disk full", async {
        for proto in Proto::ALL {
            let (l, c) = (label(proto), srv.client(proto).await);
            let keep = pattern(1, 0, 200_000);
            let r = put_len(
                &c,
                &format!("{l}-keep.bin"),
                200_000,
                body_once(keep.clone()),
            )
            .await;
            assert_eq!(r.status, 201, "{l}");

            // A Content-Length above the free space: refused before any body byte (the body
            // never yields one: a server that read it would wait forever).
            fs.fill_leaving(8 << 20);
            let r = tokio::time::timeout(
                Duration::from_secs(10),
                put_len(&c, &format!("{l}-big.bin"), 12 << 20, never()),
            )
            .await
            .unwrap_or_else(|_| panic!("{l}: refused without reading the body"));
            // (Over HTTP/2 the refusal ends the stream before the client sent its body; the
            // status arrives, the JSON may not.)
            assert_eq!(r.status, 507, "{l} Content-Length above the free space");
            assert!(r.body.is_empty() || code(&r) == full, "{l}: {:?}", r.body);
            fs.unfill();

            // Admitted (free space above the length and the margin), then the disk fills
            // mid-body: 507, and neither the file nor a temporary file is left.
            fs.fill_leaving(20 << 20);
            let mid = pattern(2, 0, 2 << 20);
            let (go, gate) = tokio::sync::oneshot::channel();
            let c2 = srv.client(proto).await;
            let rel = format!("{l}-mid.bin");
            let up = {
                let (rel, mid) = (rel.clone(), mid.clone());
                tokio::spawn(async move {
                    put_len(&c2, &rel, 2 << 20, gated(mid, 256 << 10, gate)).await
                })
            };
            let dd = data.clone();
            eventually("the upload's temporary file", || {
                files(&dd).iter().any(|f| f.contains(".xferd-tmp-"))
            })
            .await;
            fs.fill_rest();
            go.send(()).unwrap();
            let r = up.await.unwrap();
            assert_eq!(r.status, 507, "{l} out of space mid-body");
            assert!(r.body.is_empty() || code(&r) == full, "{l}: {:?}", r.body);
            // (The staged file is removed as the request ends, just after the response.)
            let dd = data.clone();
            eventually("nothing left of the refused upload", || {
                !files(&dd)
                    .iter()
                    .any(|f| *f == rel || f.contains(".xferd-tmp-"))
            })
            .await;

            // Downloads go on while the disk is full (a new connection: HTTP/1.1 closes one
            // whose request body was refused unread).
            let c = srv.client(proto).await;
            let g = request_on(&c, "GET", &format!("/{l}-keep.bin"), &[], None).await;
            assert_eq!((g.status.as_u16(), g.body == keep), (200, true), "{l} GET");

            // Space freed: the same upload succeeds.
            fs.unfill_rest();
            fs.unfill();
            let r = put_len(&c, &rel, 2 << 20, body_once(mid.clone())).await;
            assert_eq!(r.status, 201, "{l} after freeing space: {:?}", r.body);
            assert_eq!(std::fs::read(data.join(&rel)).unwrap(), mid, "{l}");
        }
    })
    .await;
    srv.stop().await;
}

#[tokio::test]
async fn a_full_state_directory_refuses_sessions_cleanly_and_recovers() {
    let Some(fs) = Tmpfs::mount(16 << 20) else {
        return;
    };
    let state = fs.path().join("state");
    let s2 = state.clone();
    let srv = TestServer::start_with(move |c| c.server.state_path = s2).await;
    let data = srv.storage();
    bounded("state full", async {
        let c = srv.client(Proto::H2).await;
        let body = pattern(5, 0, 300_000);
        let r = request_on(
            &c,
            "POST",
            &v3("POST", "s/a.bin"),
            &[TUS, ("upload-length", "300000")],
            None,
        )
        .await;
        assert_eq!(r.status, 201);
        let loc = r.header("location").unwrap().to_string();
        let patch = |off: u64, b: Bytes| {
            let c = &c;
            let loc = loc.clone();
            async move { tus_patch(c, &loc, off, b).await }
        };
        let r = patch(0, body.slice(..100_000)).await;
        assert_eq!(r.status, 204);
        let parts_before = files(&data);

        fs.fill_leaving(0);
        let mut codes = Vec::new();
        // New sessions: refused with a stable code, nothing left behind.
        for (i, proto) in Proto::ALL.iter().enumerate() {
            let c = srv.client(*proto).await;
            let r = request_on(
                &c,
                "POST",
                &v3("POST", &format!("s/new{i}.bin")),
                &[TUS, ("upload-length", "1000")],
                None,
            )
            .await;
            eprintln!("state full, creation over {}: {:?}", label(*proto), r.body);
            codes.push(code(&r));
        }
        // An append to the open session: refused too, its committed offset unchanged.
        let r = patch(100_000, body.slice(100_000..200_000)).await;
        codes.push(code(&r));
        eprintln!("state directory full: {codes:?}");
        let full = (507, "insufficient_storage".to_string());
        assert!(codes.iter().all(|c| *c == full), "state full: {codes:?}");
        assert_eq!(
            files(&data),
            parts_before,
            "no session data of refused creations"
        );
        // Plain PUTs need no session store: still served.
        let mut c1 = srv.client(Proto::H1).await;
        assert_eq!(
            put(&mut c1, &signed_v("s/plain.bin", 3), b"abc", &[])
                .await
                .status,
            201
        );

        fs.unfill();
        let h = request_on(&c, "HEAD", &loc, &[TUS], None).await;
        assert_eq!(h.status, 200, "the session survives a full state directory");
        let off: u64 = h.header("upload-offset").unwrap().parse().unwrap();
        assert!(off >= 100_000, "offset {off} kept");
        let r = patch(off, body.slice(off as usize..)).await;
        assert_eq!(r.status, 204, "completes once there is room: {:?}", r.body);
        assert_eq!(std::fs::read(data.join("s/a.bin")).unwrap(), body);
        let r = request_on(
            &c,
            "POST",
            &v3("POST", "s/later.bin"),
            &[TUS, ("upload-length", "10")],
            None,
        )
        .await;
        assert_eq!(r.status, 201, "new sessions once there is room");
    })
    .await;
    srv.stop().await;
}

fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

async fn breaker_open(c: &Client) -> Option<f64> {
    let r = request_on(c, "GET", "/metrics", &[], None).await;
    sample(
        std::str::from_utf8(&r.body).unwrap_or(""),
        "xferd_storage_circuit_open",
    )
}

#[tokio::test]
async fn a_read_only_remount_is_5xx_opens_the_breaker_and_recovers() {
    let Some(fs) = Tmpfs::mount(64 << 20) else {
        return;
    };
    let data = fs.path().join("data");
    let d2 = data.clone();
    let srv = TestServer::start_with(move |c| c.server.storage_path = d2).await;
    bounded("read-only", async {
        let mut c = srv.client(Proto::H1).await;
        let keep = pattern(9, 0, 100_000);
        assert_eq!(
            put(&mut c, &signed_v("ro/keep.bin", 100_000), &keep, &[])
                .await
                .status,
            201
        );
        let total = pattern(10, 0, 200_000);
        let r = request(
            &mut c,
            "POST",
            &v3("POST", "ro/sess.bin"),
            &[TUS, ("upload-length", "200000")],
            None,
        )
        .await;
        assert_eq!(r.status, 201);
        let loc = r.header("location").unwrap().to_string();
        let patch = |off: usize, end: usize| {
            let b = total.slice(off..end);
            let srv = &srv;
            let loc = loc.clone();
            async move {
                let c = srv.client(Proto::H2).await;
                tus_patch(&c, &loc, off as u64, b).await
            }
        };
        assert_eq!(patch(0, 50_000).await.status, 204);

        fs.remount(true);
        let mut seen = Vec::new();
        for (i, proto) in Proto::ALL.iter().cycle().take(9).enumerate() {
            let mut c = srv.client(*proto).await;
            let r = put(&mut c, &signed_v(&format!("ro/x{i}.bin"), 3), b"abc", &[]).await;
            seen.push((code(&r), r.header("retry-after").is_some()));
        }
        let r = patch(50_000, 100_000).await;
        seen.push((code(&r), r.header("retry-after").is_some()));
        eprintln!("read-only storage: {seen:?}");
        for ((s, e), _) in &seen {
            assert!((500..600).contains(s), "5xx on read-only storage: {s} {e}");
            assert!(
                [
                    "storage_error",
                    "storage_unavailable",
                    "session_store_unavailable"
                ]
                .contains(&e.as_str()),
                "stable code: {s} {e}"
            );
        }
        let ((s, e), retry) = &seen[8];
        assert_eq!(
            (*s, e.as_str(), *retry),
            (503, "storage_unavailable", true),
            "breaker open"
        );
        assert_eq!(breaker_open(&c).await, Some(1.0));
        // Reads have a breaker of their own: downloads go on while writes are refused.
        let g = get(&mut c, "/ro/keep.bin", &[]).await;
        assert_eq!(
            (g.status.as_u16(), crate::sha(&g.body)),
            (200, crate::sha(&keep)),
            "a download while the write breaker is open"
        );

        fs.remount(false);
        // After the breaker's cool-down, a probe succeeds and closes it.
        let mut ok = None;
        for _ in 0..60 {
            let r = put(&mut c, &signed_v("ro/after.bin", 3), b"xyz", &[]).await;
            if r.status == 201 {
                ok = Some(());
                break;
            }
            assert_eq!(code(&r).1, "storage_unavailable");
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        assert!(ok.is_some(), "uploads succeed once the storage is writable");
        assert_eq!(breaker_open(&c).await, Some(0.0));
        // Nothing corrupted: the stored file, the session (resumes from a committed offset).
        assert_eq!(std::fs::read(data.join("ro/keep.bin")).unwrap(), keep);
        let h = request(&mut c, "HEAD", &loc, &[TUS], None).await;
        let off: usize = h.header("upload-offset").unwrap().parse().unwrap();
        assert!((50_000..=100_000).contains(&off), "offset {off}");
        assert_eq!(patch(off, 200_000).await.status, 204);
        assert_eq!(std::fs::read(data.join("ro/sess.bin")).unwrap(), total);
        let left: Vec<_> = files(&data)
            .into_iter()
            .filter(|f| f.contains(".xferd-tmp-"))
            .collect();
        assert!(left.is_empty(), "no temporary files: {left:?}");
    })
    .await;
    srv.stop().await;
}

/// Session writes go under the storage breaker (issue 15): on read-only storage tus PATCHes
/// (and IETF appends) first fail with 500 `storage_error`, open the breaker, and are then
/// refused with 503 `storage_unavailable` and `Retry-After` without being tried; the offset
/// stays what was acknowledged, and once the storage is writable again (after the breaker's
/// cool-down) both uploads complete with the right SHA-256.
#[tokio::test]
async fn session_writes_on_read_only_storage_open_the_breaker_and_resume() {
    use sha2::{Digest, Sha256};
    let Some(fs) = Tmpfs::mount(64 << 20) else {
        return;
    };
    let data = fs.path().join("data");
    let d2 = data.clone();
    let srv = TestServer::start_with(move |c| c.server.storage_path = d2).await;
    bounded("session writes under the breaker", async {
        let c = srv.client(Proto::H2).await;
        let total = pattern(11, 0, 100_000);
        let r = request_on(
            &c,
            "POST",
            &v3("POST", "rs/tus.bin"),
            &[TUS, ("upload-length", "100000")],
            None,
        )
        .await;
        assert_eq!(r.status, 201);
        let tus = r.header("location").unwrap().to_string();
        assert_eq!(
            tus_patch(&c, &tus, 0, total.slice(..40_000)).await.status,
            204
        );
        // An IETF upload with its first 10 000 bytes.
        let r = request_on(
            &c,
            "POST",
            &signed_v("rs/ietf.bin", 100_000),
            &[
                ("upload-complete", "?0"),
                ("upload-length", "100000"),
                ("content-length", "10000"),
            ],
            Some(body_once(total.slice(..10_000))),
        )
        .await;
        assert_eq!(r.status, 201, "{:?}", r.body);
        let ietf = r.header("location").unwrap().to_string();
        let ietf_append = |off: usize, end: usize| {
            let (c, ietf, b) = (&c, ietf.clone(), total.slice(off..end));
            async move {
                let (o, l) = (off.to_string(), (end - off).to_string());
                let h = [
                    ("upload-offset", o.as_str()),
                    ("upload-complete", if end == 100_000 { "?1" } else { "?0" }),
                    ("content-type", "application/partial-upload"),
                    ("content-length", l.as_str()),
                ];
                request_on(c, "PATCH", &ietf, &h, Some(body_once(b))).await
            }
        };

        fs.remount(true);
        let mut seen = Vec::new();
        for _ in 0..8 {
            let r = tus_patch(&c, &tus, 40_000, total.slice(40_000..70_000)).await;
            let (s, e) = code(&r);
            seen.push((s, e.clone(), r.header("retry-after").is_some()));
            if s == 503 {
                break;
            }
        }
        eprintln!("tus PATCH on read-only storage: {seen:?}");
        assert_eq!(
            (seen[0].0, seen[0].1.as_str()),
            (500, "storage_error"),
            "a failing write is a storage error"
        );
        assert!(
            seen[..seen.len() - 1]
                .iter()
                .all(|(s, e, _)| (*s, e.as_str()) == (500, "storage_error")),
            "{seen:?}"
        );
        let last = seen.last().unwrap();
        assert_eq!(
            (last.0, last.1.as_str(), last.2),
            (503, "storage_unavailable", true),
            "failing session writes open the breaker: {seen:?}"
        );
        assert!(
            seen.len() <= xferd::core::retry::THRESHOLD as usize + 1,
            "{seen:?}"
        );
        let r = ietf_append(10_000, 20_000).await;
        assert_eq!(
            (code(&r), r.header("retry-after").is_some()),
            ((503, "storage_unavailable".to_string()), true),
            "an IETF append while the breaker is open"
        );
        assert_eq!(breaker_open(&c).await, Some(1.0));
        let h = request_on(&c, "HEAD", &tus, &[TUS], None).await;
        assert_eq!(h.header("upload-offset"), Some("40000"), "offset unchanged");

        fs.remount(false);
        // After the cool-down one write probes, succeeds and closes the breaker.
        let mut done = false;
        for _ in 0..60 {
            let r = tus_patch(&c, &tus, 40_000, total.slice(40_000..)).await;
            if r.status == 204 {
                done = true;
                break;
            }
            assert_eq!(code(&r), (503, "storage_unavailable".to_string()));
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        assert!(
            done,
            "the tus upload completes once the storage is writable"
        );
        assert_eq!(breaker_open(&c).await, Some(0.0));
        let h = request_on(&c, "HEAD", &ietf, &[], None).await;
        assert_eq!(
            h.header("upload-offset"),
            Some("10000"),
            "IETF offset unchanged"
        );
        let r = ietf_append(10_000, 100_000).await;
        assert!(
            r.status.is_success(),
            "IETF completes: {} {:?}",
            r.status,
            r.body
        );
        for rel in ["rs/tus.bin", "rs/ietf.bin"] {
            let stored = std::fs::read(data.join(rel)).unwrap();
            assert_eq!(Sha256::digest(&stored), Sha256::digest(&total), "{rel}");
        }
    })
    .await;
    srv.stop().await;
}
