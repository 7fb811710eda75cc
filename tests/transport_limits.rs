//! Transport limits (issue 10, items 5 and 20): the TCP connection cap answering new clients
//! at once, and early-refused large uploads whose status HTTP/2 clients (curl, Node's
//! `http2`) see. (HTTP/3 request heads bounded in size and time: tests/h3_limits.rs.)

mod common;

use common::*;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use xferd::client::Proto;

// ---------------------------------------------------------------------------------------
// Item 5: the TCP connection cap.

type Tls = tokio_rustls::client::TlsStream<tokio::net::TcpStream>;

async fn try_tls(addr: std::net::SocketAddr, srv: &TestServer) -> std::io::Result<Tls> {
    let cfg = xferd::client::tls_config(&srv.roots, &[b"http/1.1"]).unwrap();
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    tokio_rustls::TlsConnector::from(Arc::new(cfg))
        .connect(name, tcp)
        .await
}

async fn health_on(tls: &mut Tls) -> std::io::Result<Vec<u8>> {
    tls.write_all(b"GET /health HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await?;
    let mut head = vec![0u8; 12];
    tls.read_exact(&mut head).await?;
    // Rest of the small response.
    let mut rest = [0u8; 4096];
    let _ = tokio::time::timeout(Duration::from_millis(100), tls.read(&mut rest)).await;
    Ok(head)
}

/// At the cap, a new client is served at once: the idlest keep-alive connection is closed
/// to make room.
#[tokio::test]
async fn tcp_cap_closes_the_idlest_keepalive_connection_for_a_new_client() {
    let srv = TestServer::start_with(|c| c.server.max_connections = 8).await;
    let mut idle = Vec::new();
    for _ in 0..8 {
        let mut c = try_tls(srv.addr(), &srv).await.unwrap();
        assert_eq!(health_on(&mut c).await.unwrap(), b"HTTP/1.1 200");
        idle.push(c);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let start = Instant::now();
    let fresh = tokio::time::timeout(Duration::from_secs(5), async {
        let mut c = try_tls(srv.addr(), &srv).await?;
        health_on(&mut c).await
    })
    .await;
    let took = start.elapsed();
    assert!(
        matches!(&fresh, Ok(Ok(h)) if h == b"HTTP/1.1 200"),
        "the new client is served (got {fresh:?} after {took:?})"
    );
    assert!(took < Duration::from_secs(2), "served after {took:?}");
    // The first (idlest) connection was the one closed.
    let mut first = idle.remove(0);
    let mut b = [0u8; 16];
    let closed = tokio::time::timeout(Duration::from_secs(3), first.read(&mut b)).await;
    assert!(
        matches!(closed, Ok(Ok(0)) | Ok(Err(_))),
        "the idlest connection is closed: {closed:?}"
    );
    srv.stop().await;
}

/// At the cap with every connection mid-request, a new client is turned away at once
/// instead of waiting in the backlog.
#[tokio::test]
async fn tcp_cap_refuses_a_new_client_at_once_when_all_are_busy() {
    let srv = TestServer::start_with(|c| c.server.max_connections = 8).await;
    let mut busy = Vec::new();
    for i in 0..8 {
        let mut c = try_tls(srv.addr(), &srv).await.unwrap();
        let url = signed_v(&format!("slow{i}.bin"), 1_000_000);
        let req =
            format!("PUT {url} HTTP/1.1\r\nHost: localhost\r\nContent-Length: 1000000\r\n\r\n");
        c.write_all(req.as_bytes()).await.unwrap();
        c.write_all(&[7u8; 1000]).await.unwrap();
        c.flush().await.unwrap();
        busy.push(c);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let start = Instant::now();
    let fresh = tokio::time::timeout(Duration::from_secs(5), async {
        let mut c = try_tls(srv.addr(), &srv).await?;
        health_on(&mut c).await
    })
    .await;
    let took = start.elapsed();
    assert!(
        matches!(fresh, Ok(Err(_))),
        "the new client is refused (got {fresh:?} after {took:?})"
    );
    assert!(took < Duration::from_secs(2), "refused after {took:?}");
    // The busy uploads were not disturbed: one of them finishes.
    let c = &mut busy[0];
    c.write_all(&vec![7u8; 999_000]).await.unwrap();
    let mut head = [0u8; 12];
    tokio::time::timeout(Duration::from_secs(5), c.read_exact(&mut head))
        .await
        .expect("upload answered in time")
        .unwrap();
    assert_eq!(&head, b"HTTP/1.1 201");
    srv.stop().await;
}

// ---------------------------------------------------------------------------------------
// Item 20: early-refused large uploads over HTTP/2, seen by curl and Node's http2 client.

async fn curl_put(
    http: &str,
    url: String,
    file: std::path::PathBuf,
) -> (Option<i32>, String, String) {
    let http = http.to_string();
    tokio::task::spawn_blocking(move || {
        let mut cmd = std::process::Command::new("curl");
        cmd.args(["-skS", &http, "-o", "/dev/null"])
            .args(["-w", "%{http_code} %header{xferd-error}", "-T"])
            .arg(&file)
            .arg(&url);
        run_bounded(cmd, Duration::from_secs(60))
    })
    .await
    .unwrap()
}

async fn node_put(url: String, file: std::path::PathBuf) -> (Option<i32>, String, String) {
    tokio::task::spawn_blocking(move || {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/h2_put.js");
        let mut cmd = std::process::Command::new("node");
        cmd.arg(script).arg(&url).arg(&file);
        run_bounded(cmd, Duration::from_secs(60))
    })
    .await
    .unwrap()
}

fn big_file(dir: &std::path::Path, name: &str, len: usize) -> std::path::PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, pattern(3, 0, len)).unwrap();
    p
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_clients_see_the_status_of_an_early_refused_large_upload() {
    const MAX: u64 = 40_000_000;
    let srv = TestServer::start_with(|c| c.server.max_upload_size = MAX).await;
    let files = tempfile::tempdir().unwrap();
    // Larger than the 8 MiB the server used to read before answering.
    let over = big_file(files.path(), "over.bin", 50_000_000); // > MAX: 413
    let under = big_file(files.path(), "under.bin", 30_000_000); // onto an existing path: 409
    let base = format!("https://localhost:{}", srv.addr().port());
    {
        let mut c = srv.client(Proto::H2).await;
        assert_eq!(
            put(&mut c, &signed_v("exists.bin", 3), b"abc", &[])
                .await
                .status,
            201
        );
    }
    let cases = [
        ("413 too_large", signed_v("a.bin", 50_000_000), over.clone()),
        (
            "403 signature_invalid",
            "/a.bin?v=00".to_string(),
            over.clone(),
        ),
        (
            "409 file_exists",
            signed_v("exists.bin", 30_000_000),
            under.clone(),
        ),
    ];
    for (want, path, file) in &cases {
        let url = format!("{base}{path}");
        // curl resolves localhost itself; the server listens on 127.0.0.1.
        let url = url.replace("localhost", "127.0.0.1");
        for http in ["--http2", "--http1.1"] {
            let (code, status, err) = curl_put(http, url.clone(), file.clone()).await;
            let err: Vec<&str> = err.lines().filter(|l| !l.starts_with(['{', '}'])).collect();
            assert_eq!(
                (code, status.as_str()),
                (Some(0), *want),
                "curl {http} PUT {path} ({} bytes): {}",
                std::fs::metadata(file).unwrap().len(),
                err.join("\n")
            );
        }
        let (code, out, err) = node_put(url.clone(), file.clone()).await;
        assert_eq!(
            (code, out.trim()),
            (Some(0), *want),
            "node http2 PUT {path}: {err}"
        );
    }
    // HTTP/3 (xferd's client) sees the status too.
    let mut c = srv.client(Proto::H3).await;
    let len = 50_000_000u64;
    let r = request(
        &mut c,
        "PUT",
        "/a.bin?v=00",
        &[("content-length", &len.to_string())],
        Some(generated_body(len, 5, 1 << 16)),
    )
    .await;
    assert_eq!(r.status, 403);
    assert_eq!(srv.stored_files(), vec!["exists.bin".to_string()]);
    srv.stop().await;
}
