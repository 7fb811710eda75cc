//! Virus scanning (`[scan]`) end to end against a real, private clamd (tests/common/clamd.rs)
//! over HTTP/1.1 and HTTP/3: EICAR and a hash-signature file are refused with 422
//! `virus_found` and never stored (single-shot PUT and a tus upload), clean files are
//! stored, a stopped clamd gives 503 `scanner_unavailable` failing closed and a stored file
//! failing open, and a file over `scan.max_size` is stored unscanned; the same on the s3
//! backend (SeaweedFS). Every outcome is counted in `xferd_scans_total`.

mod common;
#[path = "common/s3_env.rs"]
mod s3_env;

use bytes::Bytes;
use common::clamd::{self, Clamd};
use common::*;
use std::time::Duration;
use xferd::client::Proto;
use xferd::core::auth::Scheme;

const PROTOS: [Proto; 2] = [Proto::H1, Proto::H3];

async fn server(clamd: &Clamd, fail_open: bool, max_size: u64) -> TestServer {
    let socket = clamd.socket.clone();
    TestServer::start_with(move |c| {
        c.scan.enabled = true;
        c.scan.socket = socket;
        c.scan.fail_open = fail_open;
        c.scan.max_size = max_size;
        c.scan.timeout = Duration::from_secs(10);
    })
    .await
}

fn scans(srv: &TestServer, outcome: &str) -> u64 {
    let text = srv
        .server
        .as_ref()
        .unwrap()
        .core
        .telemetry()
        .render()
        .unwrap();
    let prefix = format!("xferd_scans_total{{outcome=\"{outcome}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("no {prefix} in metrics"))
        .trim()
        .parse()
        .unwrap()
}

fn no_files_named(srv: &TestServer, name: &str) {
    let files = srv.stored_files();
    assert!(
        !files.iter().any(|f| f.contains(name)),
        "{name} stored: {files:?}"
    );
}

/// A whole tus upload (create, one PATCH); the PATCH's reply.
async fn tus_upload(c: &mut xferd::client::Client, rel: &str, data: &[u8]) -> Reply {
    let url = signed("", Scheme::V3, "POST", rel, 0, "", now_unix() + 600);
    let len = data.len().to_string();
    let r = request(c, "POST", &url, &[TUS, ("upload-length", &len)], None).await;
    assert_eq!(r.status, 201, "tus create: {:?}", r.body);
    let loc = r.header("location").unwrap().to_string();
    request(
        c,
        "PATCH",
        &loc,
        &[
            TUS,
            ("content-type", "application/offset+octet-stream"),
            ("upload-offset", "0"),
            ("content-length", &len),
        ],
        Some(body_once(Bytes::copy_from_slice(data))),
    )
    .await
}

#[tokio::test]
async fn infected_uploads_are_refused_and_clean_ones_stored() {
    let Some(clamd) = Clamd::start() else { return };
    let srv = server(&clamd, false, clamd::STREAM_MAX).await;
    for proto in PROTOS {
        let l = label(proto);
        let mut c = srv.client(proto).await;

        let rel = format!("{l}/eicar.com");
        let r = put(&mut c, &signed_v(&rel, 68), &clamd::eicar(), &[]).await;
        assert_eq!(r.status, 422, "{l} eicar: {:?}", r.body);
        assert_eq!(r.json()["error"], "virus_found", "{l}");
        assert_eq!(r.header("xferd-error"), Some("virus_found"));
        assert!(
            r.json()["message"]
                .as_str()
                .unwrap()
                .contains(clamd::EICAR_SIG),
            "{l}: {:?}",
            r.body
        );
        no_files_named(&srv, "eicar");
        let g = get(&mut c, &format!("/{rel}"), &[]).await;
        assert_eq!(g.status, 404, "{l}");

        let sig = clamd::hash_sig_file();
        let rel = format!("{l}/hash-signed.txt");
        let r = put(&mut c, &signed_v(&rel, sig.len() as u64), &sig, &[]).await;
        assert_eq!(r.status, 422, "{l} hash signature: {:?}", r.body);
        assert!(String::from_utf8_lossy(&r.body).contains(clamd::HASH_SIG));
        no_files_named(&srv, "hash-signed");

        // One byte different: no signature matches.
        let mut clean = sig.clone();
        clean[0] ^= 1;
        let rel = format!("{l}/clean.txt");
        let r = put(&mut c, &signed_v(&rel, clean.len() as u64), &clean, &[]).await;
        assert_eq!(r.status, 201, "{l} clean: {:?}", r.body);
        let g = get(&mut c, &format!("/{rel}"), &[]).await;
        assert_eq!((g.status.as_u16(), &g.body[..]), (200, &clean[..]), "{l}");

        // Resumable: scanned when complete, before it moves to its target.
        let rel = format!("{l}/tus-eicar.com");
        let r = tus_upload(&mut c, &rel, &clamd::eicar()).await;
        assert_eq!(r.status, 422, "{l} tus eicar: {:?}", r.body);
        assert_eq!(r.header("xferd-error"), Some("virus_found"));
        no_files_named(&srv, "tus-eicar");
        let rel = format!("{l}/tus-clean.bin");
        let r = tus_upload(&mut c, &rel, &clean).await;
        assert_eq!(r.status, 204, "{l} tus clean: {:?}", r.body);
        let g = get(&mut c, &format!("/{rel}"), &[]).await;
        assert_eq!(g.status, 200, "{l}");
    }
    assert_eq!(scans(&srv, "infected"), 6);
    assert_eq!(scans(&srv, "clean"), 4);
    // Only the clean files remain (no temporary or session data left behind).
    let files: Vec<String> = srv
        .stored_files()
        .into_iter()
        .filter(|f| !f.starts_with(".xferd"))
        .collect();
    assert_eq!(
        files,
        [
            "h1/clean.txt",
            "h1/tus-clean.bin",
            "h3/clean.txt",
            "h3/tus-clean.bin"
        ],
        "{:?}",
        srv.stored_files()
    );
    srv.stop().await;
}

#[tokio::test]
async fn a_stopped_clamd_fails_closed_or_open_as_configured() {
    let Some(mut clamd) = Clamd::start() else {
        return;
    };
    let closed = server(&clamd, false, clamd::STREAM_MAX).await;
    let open = server(&clamd, true, clamd::STREAM_MAX).await;
    let data = pattern(3, 0, 5000);
    {
        let mut c = closed.client(Proto::H1).await;
        let r = put(&mut c, &signed_v("before.bin", 5000), &data, &[]).await;
        assert_eq!(r.status, 201, "clamd up: {:?}", r.body);
    }
    clamd.stop();
    for proto in PROTOS {
        let l = label(proto);
        let rel = format!("{l}/after.bin");
        let mut c = closed.client(proto).await;
        let r = put(&mut c, &signed_v(&rel, 5000), &data, &[]).await;
        assert_eq!(r.status, 503, "{l} fail closed: {:?}", r.body);
        assert_eq!(r.json()["error"], "scanner_unavailable", "{l}");
        assert_eq!(r.header("retry-after"), Some("30"), "{l}");
        no_files_named(&closed, &rel);

        let mut c = open.client(proto).await;
        let r = put(&mut c, &signed_v(&rel, 5000), &data, &[]).await;
        assert_eq!(r.status, 201, "{l} fail open: {:?}", r.body);
        let g = get(&mut c, &format!("/{rel}"), &[]).await;
        assert_eq!(g.status, 200, "{l}");
    }
    assert_eq!(scans(&closed, "failed_closed"), 2);
    assert_eq!(scans(&open, "failed_open"), 2);
    assert_eq!(scans(&open, "clean"), 0);
    closed.stop().await;
    open.stop().await;
}

#[tokio::test]
async fn files_over_the_scan_limit_are_stored_unscanned() {
    let Some(clamd) = Clamd::start() else { return };
    let srv = server(&clamd, false, 1024).await;
    // EICAR followed by padding: infected, but over scan.max_size, so not scanned.
    let mut big = clamd::eicar();
    big.extend_from_slice(&[b' '; 2000]);
    for proto in PROTOS {
        let l = label(proto);
        let mut c = srv.client(proto).await;
        let rel = format!("{l}/big.txt");
        let r = put(&mut c, &signed_v(&rel, big.len() as u64), &big, &[]).await;
        assert_eq!(r.status, 201, "{l}: {:?}", r.body);
        // Under the limit it is still refused.
        let rel = format!("{l}/small.com");
        let r = put(&mut c, &signed_v(&rel, 68), &clamd::eicar(), &[]).await;
        assert_eq!(r.status, 422, "{l}");
        // A resumable upload over the limit is skipped too.
        let rel = format!("{l}/tus-big.txt");
        let r = tus_upload(&mut c, &rel, &big).await;
        assert_eq!(r.status, 204, "{l} tus: {:?}", r.body);
    }
    assert_eq!(scans(&srv, "skipped"), 4);
    assert_eq!(scans(&srv, "infected"), 2);
    srv.stop().await;
}

/// On the s3 backend a resumable upload is sealed into an object of its own, scanned from
/// there and then copied into its key server-side: infected, nothing of it is left in the
/// bucket; clean (past a part), stored whole. Single-shot PUTs are scanned as on fs.
#[tokio::test]
async fn uploads_on_s3_are_scanned_before_they_are_stored() {
    let Some(clamd) = Clamd::start() else { return };
    let Some(w) = s3_env::seaweed() else { return };
    let (socket, prefix) = (clamd.socket.clone(), s3_env::unique_prefix("scan"));
    let (endpoint, p) = (w.endpoint.clone(), prefix.clone());
    let srv = TestServer::start_with(move |c| {
        s3_env::use_s3(c, endpoint, p);
        c.storage.s3.part_size = s3_env::PART;
        c.scan.enabled = true;
        c.scan.socket = socket;
        c.scan.max_size = clamd::STREAM_MAX;
        c.scan.timeout = Duration::from_secs(10);
    })
    .await;
    let store = s3_env::store_at(&w.endpoint, &prefix);
    let mut c = srv.client(Proto::H1).await;
    let r = tus_upload(&mut c, "s3/tus-eicar.com", &clamd::eicar()).await;
    assert_eq!(r.status, 422, "tus eicar: {:?}", r.body);
    assert_eq!(r.header("xferd-error"), Some("virus_found"));
    let r = put(&mut c, &signed_v("s3/eicar.com", 68), &clamd::eicar(), &[]).await;
    assert_eq!(r.status, 422, "eicar: {:?}", r.body);
    let clean = pattern(3, 0, 7 << 20);
    let r = tus_upload(&mut c, "s3/tus-clean.bin", &clean).await;
    assert_eq!(r.status, 204, "tus clean: {:?}", r.body);
    let g = get(&mut c, "/s3/tus-clean.bin", &[]).await;
    assert_eq!(g.status, 200);
    assert!(g.body == clean, "the stored bytes differ");
    assert_eq!((scans(&srv, "infected"), scans(&srv, "clean")), (2, 1));
    use xferd::storage::store::{PartStore, Store};
    let left = store.list("", None, 100).await.unwrap();
    let keys: Vec<&str> = left.iter().map(|l| l.key.as_str()).collect();
    assert_eq!(keys, ["s3/tus-clean.bin"]);
    let parts = xferd::storage::s3::parts::S3Parts::new(store.clone());
    assert!(parts.list().await.unwrap().is_empty(), "session data left");
    assert!(store.multipart_uploads().await.unwrap().is_empty());
    srv.stop().await;
}
