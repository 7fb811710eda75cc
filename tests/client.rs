//! xferd's own client through the link emulator (short scenarios; the long ones are in
//! `benches/mobile.sh`): a blackout mid-upload, a changed client address (QUIC migration),
//! the client killed and restarted, UDP blocked (fallback to TCP), an untrusted certificate.
//! Every upload ends with a SHA-256 comparison of the stored file.

mod common;

use common::*;
use sha2::Digest;
use std::time::Duration;
use xferd::client::chunked::{self, Options, Target};
use xferd::client::trust::Trust;
use xferd::client::Proto;
use xferd::core::auth::Scheme;
use xferd::relay::{self, Link};

const MB: u64 = 1 << 20;

async fn server() -> TestServer {
    TestServer::start_with(|c| {
        c.performance.intelligent_chunking = false;
        c.performance.min_chunk_size = 256 << 10;
        c.resumable.chunk_size = MB;
    })
    .await
}

fn post_url(rel: &str) -> String {
    signed("", Scheme::V3, "POST", rel, 0, "", now_unix() + 600)
}

fn source(dir: &std::path::Path, len: u64, seed: u64) -> (std::path::PathBuf, Vec<u8>) {
    let data = pattern(seed, 0, len as usize).to_vec();
    let p = dir.join(format!("src-{seed}.bin"));
    std::fs::write(&p, &data).unwrap();
    (p, data)
}

fn options(srv: &TestServer, only: Option<Proto>) -> Options {
    client_options(srv, only, 4)
}

/// The link emulator's UDP relay in front of the test server.
async fn udp_relay(srv: &TestServer, link: Link) -> relay::Relay {
    relay::udp("127.0.0.1:0".parse().unwrap(), srv.addr(), link)
        .await
        .unwrap()
}

/// Where the client goes: `addr` (the server or a relay), named `localhost` for TLS.
fn target(addr: std::net::SocketAddr, path_q: impl Into<String>) -> Target {
    Target {
        addr,
        host: "localhost".into(),
        path_q: path_q.into(),
    }
}

/// Starts an HTTP/3 upload of `len` bytes (pattern `seed`) to `rel` through a UDP relay
/// with `link`; returns the relay, the running upload and the data.
async fn upload_via_relay(
    srv: &TestServer,
    link: Link,
    len: u64,
    seed: u64,
    rel: &str,
    opts: Options,
) -> (
    relay::Relay,
    tokio::task::JoinHandle<anyhow::Result<chunked::Report>>,
    Vec<u8>,
) {
    let relay = udp_relay(srv, link).await;
    let (file, data) = source(srv.dir.path(), len, seed);
    let target = target(relay.addr, post_url(rel));
    let up = tokio::spawn(async move { chunked::upload(&file, target, opts).await });
    (relay, up, data)
}

fn assert_stored(srv: &TestServer, rel: &str, data: &[u8]) {
    let got = std::fs::read(srv.storage().join(rel)).expect("stored file");
    assert_eq!(
        hex::encode(sha2::Sha256::digest(&got)),
        hex::encode(sha2::Sha256::digest(data)),
        "{rel}: SHA-256"
    );
}

#[tokio::test]
async fn blackout_mid_upload_completes_without_restarting_chunks() {
    let srv = server().await;
    let link = Link {
        rate: 20 * MB,
        delay: Duration::from_millis(5),
        ..Link::default()
    };
    let opts = options(&srv, Some(Proto::H3));
    let (relay, up, data) = upload_via_relay(&srv, link, 24 * MB, 1, "c/blackout.bin", opts).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    relay.blackout(true);
    tokio::time::sleep(Duration::from_secs(3)).await;
    relay.blackout(false);
    let report = up
        .await
        .unwrap()
        .expect("upload completes after the blackout");
    assert_eq!(report.transfer.protocol, "h3");
    assert!(
        report.transfer.retries <= report.transfer.streams as u64,
        "at most one chunk per stream sent again: {report:?}"
    );
    assert!(
        relay
            .controls
            .counters
            .dropped
            .load(std::sync::atomic::Ordering::Relaxed)
            > 0
    );
    assert_stored(&srv, "c/blackout.bin", &data);
    srv.stop().await;
}

/// The client notices its own local address change (as on a move from Wi-Fi to cellular)
/// and moves its QUIC endpoint to a new socket: the server sees the connection arrive from a
/// new port, validates the path, and the upload carries on with nothing sent again. The
/// route lookup is swapped for one the test flips; the socket move and the migration are real
/// (the old socket is closed, so without the server's path validation the upload would stall
/// and reconnect).
#[tokio::test]
async fn local_address_change_rebinds_and_migrates() {
    use std::sync::atomic::{AtomicBool, Ordering};
    let srv = server().await;
    let link = Link {
        rate: 16 * MB,
        ..Link::default()
    };
    let moved = std::sync::Arc::new(AtomicBool::new(false));
    let flag = moved.clone();
    let mut opts = options(&srv, Some(Proto::H3));
    opts.local_probe = xferd::client::migrate::Probe::new(move |_| {
        Some(if flag.load(Ordering::SeqCst) {
            "192.0.2.2".parse().unwrap()
        } else {
            "192.0.2.1".parse().unwrap()
        })
    });
    let (_relay, up, data) = upload_via_relay(&srv, link, 24 * MB, 7, "c/rebind.bin", opts).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    moved.store(true, Ordering::SeqCst);
    let report = up.await.unwrap().expect("upload completes");
    assert_eq!(
        (
            report.transfer.migrations,
            report.transfer.retries,
            report.transfer.reconnects
        ),
        (1, 0, 0),
        "one move to a new socket, the same connection, no chunk sent again: {report:?}"
    );
    assert_stored(&srv, "c/rebind.bin", &data);
    srv.stop().await;
}

#[tokio::test]
async fn address_change_migrates_the_quic_connection() {
    let srv = server().await;
    let link = Link {
        rate: 30 * MB,
        ..Link::default()
    };
    let opts = options(&srv, Some(Proto::H3));
    let (relay, up, data) = upload_via_relay(&srv, link, 24 * MB, 2, "c/migrate.bin", opts).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    relay.change();
    let report = up.await.unwrap().expect("upload completes");
    assert_eq!(
        (report.transfer.retries, report.transfer.reconnects),
        (0, 0),
        "the connection migrated; no chunk restarted: {report:?}"
    );
    assert_stored(&srv, "c/migrate.bin", &data);
    srv.stop().await;
}

#[tokio::test]
async fn killed_client_resumes_from_its_state_file() {
    let srv = server().await;
    let link = Link {
        rate: 8 * MB,
        ..Link::default()
    };
    let relay = udp_relay(&srv, link).await;
    let (file, data) = source(srv.dir.path(), 24 * MB, 3);
    let state = srv.dir.path().join("upload-state.json");
    let ca = srv.server.as_ref().unwrap().cert_path.clone();
    let url = |port: u16| format!("https://localhost:{port}{}", post_url("c/killed.bin"));
    let bin = env!("CARGO_BIN_EXE_xferd");
    // Through the slow link, so that it is killed half-way.
    let mut child = std::process::Command::new(bin)
        .args(["upload", file.to_str().unwrap(), &url(relay.addr.port())])
        .args(["--ca", ca.to_str().unwrap(), "--http", "3", "--quiet"])
        .args(["--state", state.to_str().unwrap()])
        .env("XFERD_LOG", "off")
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut done = 0;
    for _ in 0..400 {
        tokio::time::sleep(Duration::from_millis(20)).await;
        if let Ok(s) = std::fs::read(&state) {
            let j: serde_json::Value = serde_json::from_slice(&s).unwrap_or_default();
            done = j["done"].as_array().map(|a| a.len()).unwrap_or(0);
            if done >= 4 {
                break;
            }
        }
    }
    assert!(done >= 4, "client made progress before the kill");
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    assert!(!srv.storage().join("c/killed.bin").exists());
    // Restarted (in-process this time, straight to the server).
    let target = target(srv.addr(), post_url("c/killed.bin"));
    let mut opts = options(&srv, Some(Proto::H3));
    opts.state = Some(state.clone());
    let report = chunked::upload(&file, target, opts)
        .await
        .expect("resumed upload");
    assert!(
        report.chunks_resumed >= 4,
        "resumed from the state file: {report:?}"
    );
    assert!(!state.exists(), "state file removed when complete");
    assert_stored(&srv, "c/killed.bin", &data);
    srv.stop().await;
}

#[tokio::test]
async fn udp_blocked_falls_back_to_tcp() {
    let srv = server().await;
    // Only TCP is relayed: a QUIC handshake to this port goes nowhere.
    let relay = relay::tcp("127.0.0.1:0".parse().unwrap(), srv.addr(), Link::default())
        .await
        .unwrap();
    let (file, data) = source(srv.dir.path(), 3 * MB, 4);
    let target = target(relay.addr, post_url("c/fallback.bin"));
    let report = chunked::upload(&file, target, options(&srv, None))
        .await
        .expect("upload over TCP");
    assert_eq!(report.transfer.protocol, "h2");
    assert_stored(&srv, "c/fallback.bin", &data);
    srv.stop().await;
}

#[tokio::test]
async fn untrusted_certificate_fails_fast_with_advice() {
    let srv = server().await;
    let (file, _) = source(srv.dir.path(), 1000, 5);
    let target = target(srv.addr(), post_url("c/untrusted.bin"));
    let mut opts = options(&srv, None);
    opts.trust = Trust::Roots(Vec::new());
    let t0 = std::time::Instant::now();
    let err = chunked::upload(&file, target, opts).await.unwrap_err();
    let text = format!("{err:#}");
    assert!(
        text.contains("--ca") && text.contains("--insecure"),
        "{text}"
    );
    assert!(t0.elapsed() < Duration::from_secs(5), "not retried");
    srv.stop().await;
}

#[tokio::test]
async fn refusals_end_the_upload_with_a_clear_message() {
    let srv = server().await;
    let (file, _) = source(srv.dir.path(), 1000, 6);
    // A PUT URL signed for another size: 403, not retried.
    let target = target(srv.addr(), signed_v("c/wrong.bin", 999));
    let err = chunked::upload(&file, target, options(&srv, Some(Proto::H2)))
        .await
        .unwrap_err();
    let text = format!("{err:#}");
    assert!(
        text.contains("403") && text.contains("signed URL was refused"),
        "{text}"
    );
    srv.stop().await;
}

#[tokio::test]
async fn reconnect_uses_0rtt_and_holds_its_own_puts() {
    use xferd::client::chunked::Connector;
    let srv = TestServer::start_with(|c| c.server.zero_rtt = true).await;
    // 40 ms each way, so that early data is read well before the handshake completes.
    let link = Link {
        delay: Duration::from_millis(40),
        ..Link::default()
    };
    let relay = udp_relay(&srv, link).await;
    let target = target(relay.addr, "/");
    let conn = Connector::new(
        target,
        Trust::Roots(srv.roots.clone()),
        Some(Proto::H3),
        false,
    );
    let (first, c1) = conn.get().await.unwrap();
    assert!(!c1.zero_rtt, "no ticket yet: a full handshake");
    assert_eq!(
        request_on(&c1, "GET", "/health", &[], None).await.status,
        200
    );
    tokio::time::sleep(Duration::from_millis(300)).await; // the session ticket arrives
    conn.broken(first).await;
    drop(c1);
    let (_, c2) = conn.get().await.unwrap();
    assert!(c2.zero_rtt, "the reconnection resumed with 0-RTT");
    // The client itself sends only safe requests in early data: a PUT waits for the
    // handshake and is stored.
    let held = request_on(
        &c2,
        "PUT",
        &signed_v("z/held.bin", 3),
        &[("content-length", "3")],
        Some(body_once(bytes::Bytes::from_static(b"abc"))),
    )
    .await;
    assert_eq!(held.status, 201, "a PUT held until the handshake completed");
    // What the server does with a PUT sent in early data: tests/zero_rtt.rs.
    srv.stop().await;
}

#[tokio::test]
async fn parallel_range_download_resumes_after_interruption() {
    let srv = server().await;
    let data = pattern(8, 0, (20 * MB) as usize);
    let mut c = srv.client(Proto::H2).await;
    let r = put(&mut c, &signed_v("d/big.bin", 20 * MB), &data, &[]).await;
    assert_eq!(r.status, 201);
    let relay = relay::udp(
        "127.0.0.1:0".parse().unwrap(),
        srv.addr(),
        Link {
            rate: 6 * MB,
            ..Link::default()
        },
    )
    .await
    .unwrap();
    let out = srv.dir.path().join("downloaded.bin");
    let state = srv.dir.path().join("downloaded.bin.xferd-download.json");
    let (t, o) = (target(relay.addr, "/d/big.bin"), out.clone());
    let opts = options(&srv, Some(Proto::H3));
    let first = tokio::spawn(async move { xferd::client::download::download(t, &o, opts).await });
    let mut parts = 0;
    for _ in 0..300 {
        tokio::time::sleep(Duration::from_millis(20)).await;
        let j: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&state).unwrap_or_default()).unwrap_or_default();
        parts = j["done"].as_array().map(|a| a.len()).unwrap_or(0);
        if parts >= 1 {
            break;
        }
    }
    first.abort(); // interrupted
    let _ = first.await;
    assert!(parts >= 1, "progress before the interruption");
    assert!(!out.exists(), "nothing visible under the final name yet");
    let report = xferd::client::download::download(
        target(srv.addr(), "/d/big.bin"),
        &out,
        options(&srv, None),
    )
    .await
    .expect("resumed download");
    assert!(report.parts_resumed >= 1, "{report:?}");
    assert_eq!(report.transfer.streams, 4);
    assert_eq!(
        hex::encode(sha2::Sha256::digest(std::fs::read(&out).unwrap())),
        hex::encode(sha2::Sha256::digest(&data))
    );
    assert!(!state.exists());
    srv.stop().await;
}

/// `[performance] quic_congestion_control = "bbr"`: the server's downloads over HTTP/3 use
/// BBR, and a download through a lossy, delayed link arrives intact.
#[tokio::test]
async fn bbr_server_download_over_lossy_link() {
    let srv = TestServer::start_with(|c| {
        c.performance.quic_congestion_control = xferd::transport::congestion::Congestion::Bbr;
    })
    .await;
    let data = pattern(11, 0, (8 * MB) as usize);
    let mut c = srv.client(Proto::H2).await;
    assert_eq!(
        put(&mut c, &signed_v("d/bbr.bin", 8 * MB), &data, &[])
            .await
            .status,
        201
    );
    let relay = udp_relay(
        &srv,
        Link {
            delay: Duration::from_millis(10),
            rate: 8 * MB,
            loss: 0.03,
            ..Link::default()
        },
    )
    .await;
    let out = srv.dir.path().join("bbr.bin");
    let report = xferd::client::download::download(
        target(relay.addr, "/d/bbr.bin"),
        &out,
        options(&srv, Some(Proto::H3)),
    )
    .await
    .expect("download over the lossy link");
    assert_eq!(report.transfer.protocol, "h3");
    assert!(
        relay
            .controls
            .counters
            .dropped
            .load(std::sync::atomic::Ordering::Relaxed)
            > 0,
        "the link dropped datagrams"
    );
    assert_eq!(
        hex::encode(sha2::Sha256::digest(std::fs::read(&out).unwrap())),
        hex::encode(sha2::Sha256::digest(&data))
    );
    srv.stop().await;
}
