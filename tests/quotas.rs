//! Storage quotas end to end (`[quota]`): over h1, h2 and h3 an upload over a cap is refused
//! by its `Content-Length` before any body byte is stored (507 `quota_exceeded`; 413 when it
//! is larger than the cap itself), tus, IETF and HFS chunked creations are checked against
//! their declared length,
//! concurrent uploads cannot overshoot, expiry gives space back, and a restart counts the
//! same usage (sessions in progress included).

mod common;

use bytes::Bytes;
use common::*;
use std::path::Path;
use std::time::Duration;
use xferd::client::Proto;
use xferd::config::{Config, QuotaPrefixConfig};
use xferd::core::auth::Scheme;
use xferd::core::quota::Usage;

fn caps(c: &mut Config) {
    c.quota.total = 100_000;
    c.quota.prefixes = Proto::ALL
        .iter()
        .map(|p| QuotaPrefixConfig {
            prefix: format!("{}/", label(*p)),
            max: 300,
        })
        .collect();
}

fn usage(srv: &TestServer, prefix: &str) -> Usage {
    let core = &srv.server.as_ref().unwrap().core;
    core.quotas
        .usage()
        .into_iter()
        .find(|u| u.prefix == prefix)
        .unwrap()
}

fn files_under(dir: &Path) -> usize {
    std::fs::read_dir(dir).map(|d| d.count()).unwrap_or(0)
}

#[tokio::test]
async fn over_quota_is_refused_before_the_body() {
    let srv = TestServer::start_with(caps).await;
    for proto in Proto::ALL {
        let l = label(proto);
        let mut c = srv.client(proto).await;
        let r = put(
            &mut c,
            &signed_v(&format!("{l}/a.bin"), 200),
            &[7; 200],
            &[],
        )
        .await;
        assert_eq!(r.status, 201, "{l}");
        assert_eq!(usage(&srv, &format!("{l}/")).used, 200);
        // 200 + 200 > 300: 507, and nothing of it is stored (no file, no temp file).
        let r = put(
            &mut c,
            &signed_v(&format!("{l}/b.bin"), 200),
            &[8; 200],
            &[],
        )
        .await;
        assert_eq!(r.status, 507, "{l}: {:?}", r.body);
        assert_eq!(r.header("xferd-error"), Some("quota_exceeded"), "{l}");
        assert_eq!(files_under(&srv.storage().join(l)), 1, "{l}");
        // Larger than the cap itself: it can never fit, 413.
        let r = put(
            &mut c,
            &signed_v(&format!("{l}/c.bin"), 301),
            &[9; 301],
            &[],
        )
        .await;
        assert_eq!(r.status, 413, "{l}");
        assert_eq!(r.header("xferd-error"), Some("quota_exceeded"), "{l}");
        // Resumable creation is checked against its declared length.
        let r = request(
            &mut c,
            "POST",
            &signed_v(&format!("{l}/t.bin"), 150),
            &[TUS, ("upload-length", "150")],
            None,
        )
        .await;
        assert_eq!(r.status, 507, "{l} tus: {:?}", r.body);
        assert_eq!(r.header("xferd-error"), Some("quota_exceeded"), "{l}");
        // So are HFS chunked and IETF creations.
        let rel = format!("{l}/hfs.bin");
        let v3 = signed("", Scheme::V3, "POST", &rel, 0, "", now_unix() + 600);
        let url = format!("/chunked-upload?{}", v3.split_once('?').unwrap().1);
        let h = [("x-filename", rel.as_str()), ("x-total-size", "150")];
        let r = request(&mut c, "POST", &url, &h, None).await;
        assert_eq!(r.status, 507, "{l} hfs: {:?}", r.body);
        assert_eq!(r.header("xferd-error"), Some("quota_exceeded"), "{l}");
        let h = [
            ("upload-draft-interop-version", "6"),
            ("upload-complete", "?0"),
            ("upload-length", "150"),
            ("content-length", "0"),
        ];
        let r = request(
            &mut c,
            "PUT",
            &signed_v(&format!("{l}/i.bin"), 150),
            &h,
            None,
        )
        .await;
        assert_eq!(r.status, 507, "{l} ietf: {:?}", r.body);
        assert_eq!(r.header("xferd-error"), Some("quota_exceeded"), "{l}");
        assert_eq!(files_under(&srv.storage().join(l)), 1, "{l}");
        // What still fits does.
        let r = put(
            &mut c,
            &signed_v(&format!("{l}/d.bin"), 100),
            &[1; 100],
            &[],
        )
        .await;
        assert_eq!(r.status, 201, "{l}");
        let u = usage(&srv, &format!("{l}/"));
        assert_eq!((u.used, u.reserved), (300, 0), "{l}");
    }
    assert_eq!(usage(&srv, "").used, 900);
    // The metric shows the usage per scope.
    let mut c = srv.client(Proto::H1).await;
    let text = String::from_utf8_lossy(&get(&mut c, "/metrics", &[]).await.body).to_string();
    assert!(
        text.contains("xferd_quota_used_bytes{scope=\"h3/\"} 300"),
        "{text}"
    );
    assert!(text.contains("xferd_quota_used_bytes{scope=\"total\"} 900"));
    srv.stop().await;
}

/// A body that sends nothing until `go` fires, then `data`.
fn held_body(data: Bytes, go: tokio::sync::oneshot::Receiver<()>) -> xferd::core::body::BodyStream {
    Box::pin(futures_util::stream::unfold(
        Some((data, go)),
        |state| async move {
            let (data, go) = state?;
            let _ = go.await;
            Some((Ok::<_, xferd::core::body::BodyError>(data), None))
        },
    ))
}

#[tokio::test]
async fn concurrent_uploads_cannot_overshoot() {
    let srv = TestServer::start_with(caps).await;
    for proto in [Proto::H1, Proto::H3] {
        let l = label(proto);
        let first = srv.client(proto).await;
        let second = srv.client(proto).await;
        let (go, wait) = tokio::sync::oneshot::channel();
        let url = signed_v(&format!("{l}/slow.bin"), 200);
        let slow = request_on(
            &first,
            "PUT",
            &url,
            &[("content-length", "200")],
            Some(held_body(Bytes::from(vec![3u8; 200]), wait)),
        );
        let other = async {
            // The slow upload's reservation is in place before its body arrives.
            let prefix = format!("{l}/");
            for _ in 0..200 {
                if usage(&srv, &prefix).reserved == 200 {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            assert_eq!(usage(&srv, &prefix).reserved, 200, "{l}");
            let r = request_on(
                &second,
                "PUT",
                &signed_v(&format!("{l}/fast.bin"), 200),
                &[("content-length", "200")],
                Some(body_once(Bytes::from(vec![4u8; 200]))),
            )
            .await;
            let _ = go.send(());
            r
        };
        let (a, b) =
            tokio::time::timeout(Duration::from_secs(30), async { tokio::join!(slow, other) })
                .await
                .expect("bounded");
        assert_eq!(a.status, 201, "{l} slow");
        assert_eq!(b.status, 507, "{l} concurrent");
        let u = usage(&srv, &format!("{l}/"));
        assert_eq!((u.used, u.reserved), (200, 0), "{l}");
    }
    srv.stop().await;
}

#[tokio::test]
async fn expiry_gives_space_back() {
    let srv = TestServer::start_with(|c| {
        caps(c);
        c.expiry.enabled = true;
        c.expiry.max_age = Duration::from_secs(2);
        c.expiry.sweep_interval = Duration::from_millis(300);
    })
    .await;
    for proto in [Proto::H1, Proto::H3] {
        let l = label(proto);
        let mut c = srv.client(proto).await;
        let r = put(
            &mut c,
            &signed_v(&format!("{l}/a.bin"), 250),
            &[7; 250],
            &[],
        )
        .await;
        assert_eq!(r.status, 201, "{l}");
        let r = put(
            &mut c,
            &signed_v(&format!("{l}/b.bin"), 250),
            &[8; 250],
            &[],
        )
        .await;
        assert_eq!(r.status, 507, "{l}");
    }
    let storage = srv.storage();
    common::eventually("files expire", || {
        !storage.join("h1/a.bin").exists() && !storage.join("h3/a.bin").exists()
    })
    .await;
    for proto in [Proto::H1, Proto::H3] {
        let l = label(proto);
        assert_eq!(usage(&srv, &format!("{l}/")).used, 0, "{l}");
        let mut c = srv.client(proto).await;
        let r = put(
            &mut c,
            &signed_v(&format!("{l}/b.bin"), 250),
            &[8; 250],
            &[],
        )
        .await;
        assert_eq!(r.status, 201, "{l}");
    }
    srv.stop().await;
}

#[tokio::test]
async fn a_restart_counts_the_same_usage() {
    let dir = tempfile::tempdir().unwrap();
    let (data, state) = (dir.path().join("data"), dir.path().join("state"));
    let at = |c: &mut Config| {
        caps(c);
        c.server.storage_path = data.clone();
        c.server.state_path = state.clone();
    };
    let srv = TestServer::start_with(at).await;
    let mut c = srv.client(Proto::H3).await;
    let r = put(&mut c, &signed_v("h3/x/a.bin", 120), &[1; 120], &[]).await;
    assert_eq!(r.status, 201);
    let mut c1 = srv.client(Proto::H1).await;
    let r = put(&mut c1, &signed_v("h1/b.bin", 30), &[2; 30], &[]).await;
    assert_eq!(r.status, 201);
    // A tus upload in progress reserves its length.
    let r = request(
        &mut c,
        "POST",
        &signed_v("h3/t.bin", 100),
        &[TUS, ("upload-length", "100")],
        None,
    )
    .await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    let loc = r.header("location").unwrap().to_string();
    let before: Vec<Usage> = srv.server.as_ref().unwrap().core.quotas.usage();
    assert_eq!(usage(&srv, "h3/").reserved, 100);
    assert_eq!(usage(&srv, "h3/").used, 120);
    srv.stop().await;

    let srv = TestServer::start_with(at).await;
    let after: Vec<Usage> = srv.server.as_ref().unwrap().core.quotas.usage();
    assert_eq!(before, after);
    // And the restored reservation still counts: 120 + 100 + 81 > 300.
    let mut c = srv.client(Proto::H3).await;
    let r = put(&mut c, &signed_v("h3/c.bin", 81), &[3; 81], &[]).await;
    assert_eq!(r.status, 507);
    // Terminating the session gives its reservation back.
    let r = request(&mut c, "DELETE", &loc, &[TUS], None).await;
    assert_eq!(r.status, 204);
    assert_eq!(usage(&srv, "h3/").reserved, 0);
    let r = put(&mut c, &signed_v("h3/c.bin", 81), &[3; 81], &[]).await;
    assert_eq!(r.status, 201);
    assert_eq!(usage(&srv, "h3/").used, 201);
    srv.stop().await;
}
