//! Shared helpers for the end-to-end tests: a server started in-process on 127.0.0.1 port 0
//! over a temporary directory, URL signing, and request helpers over h1, h2 and h3.
#![allow(dead_code)]

pub mod redis;

use bytes::Bytes;
use futures_util::TryStreamExt;
use http::{HeaderMap, Request, StatusCode, Version};
use rustls::pki_types::CertificateDer;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};
use xferd::client::{Client, Proto};
use xferd::config::Config;
use xferd::core::auth::{message_for, Keys, Scheme};
use xferd::core::body::{BodyError, BodyStream};

pub mod clamd;
/// A private SeaweedFS (S3) for the s3 backend's tests.
pub mod s3;

pub const SECRET: &str = "test-secret";

pub struct TestServer {
    pub server: Option<xferd::server::Server>,
    pub dir: tempfile::TempDir,
    pub roots: Vec<CertificateDer<'static>>,
    pub prefix: String,
}

pub struct Reply {
    pub interim: Vec<(StatusCode, HeaderMap)>,
    pub status: StatusCode,
    pub version: Version,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }
    /// The `Retry-After` seconds (panics when absent or not a number).
    pub fn retry_after_secs(&self) -> u64 {
        self.header("retry-after")
            .expect("Retry-After")
            .parse()
            .unwrap()
    }
}

impl TestServer {
    pub async fn start() -> TestServer {
        Self::start_with(|_| {}).await
    }

    pub async fn start_with(tweak: impl FnOnce(&mut Config)) -> TestServer {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut config = Config::default();
        config.server.listen = "127.0.0.1:0".parse().unwrap();
        config.server.storage_path = dir.path().join("data");
        config.server.state_path = dir.path().join("state");
        config.server.shutdown_grace = Duration::from_secs(5);
        config.security.secret = Some(SECRET.to_string());
        tweak(&mut config);
        let prefix = config.normalized_prefix();
        let server = xferd::server::start(config).await.expect("server starts");
        let roots = xferd::tls::read_certs(&server.cert_path).expect("cert");
        TestServer {
            server: Some(server),
            dir,
            roots,
            prefix,
        }
    }

    pub fn addr(&self) -> std::net::SocketAddr {
        self.server.as_ref().expect("running").addr
    }

    pub fn storage(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    pub async fn client(&self, proto: Proto) -> Client {
        Client::connect(proto, self.addr(), "localhost", &self.roots)
            .await
            .expect("client connects")
    }

    /// Every regular file under the storage root (relative names), temp files included.
    pub fn stored_files(&self) -> Vec<String> {
        fn walk(base: &Path, dir: &Path, out: &mut Vec<String>) {
            if let Ok(rd) = std::fs::read_dir(dir) {
                for e in rd.flatten() {
                    let p = e.path();
                    if p.is_dir() {
                        walk(base, &p, out);
                    } else {
                        out.push(p.strip_prefix(base).unwrap().display().to_string());
                    }
                }
            }
        }
        let mut out = Vec::new();
        walk(&self.storage(), &self.storage(), &mut out);
        out.sort();
        out
    }

    pub async fn stop(mut self) {
        if let Some(s) = self.server.take() {
            s.shutdown().await;
        }
    }
}

/// Percent-encodes each segment of a relative path for a URL.
pub fn encode_path(rel: &str) -> String {
    const SET: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'.')
        .remove(b'_')
        .remove(b'~');
    rel.split('/')
        .map(|s| percent_encoding::utf8_percent_encode(s, SET).to_string())
        .collect::<Vec<_>>()
        .join("/")
}

pub fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// `/<path>?<scheme>=<mac>[&expires=..]` for `rel` (the MAC covers `rel`, not the prefix).
pub fn signed(
    prefix: &str,
    scheme: Scheme,
    method: &str,
    rel: &str,
    size: u64,
    ct: &str,
    expires: u64,
) -> String {
    let mac =
        Keys::new(SECRET, &[], false).sign(&message_for(scheme, method, rel, size, ct, expires));
    let p = if prefix.is_empty() {
        String::new()
    } else {
        format!("{prefix}/")
    };
    let mut u = format!("/{p}{}?{}={mac}", encode_path(rel), scheme.param());
    if scheme == Scheme::V3 {
        u.push_str(&format!("&expires={expires}"));
    }
    u
}

pub fn signed_v(rel: &str, size: u64) -> String {
    signed("", Scheme::V, "PUT", rel, size, "", 0)
}

pub fn body_once(data: Bytes) -> BodyStream {
    Box::pin(futures_util::stream::iter(vec![Ok::<_, BodyError>(data)]))
}

/// A body of `len` pseudo-random bytes made on the fly (never all in memory).
pub fn generated_body(len: u64, seed: u64, chunk: usize) -> BodyStream {
    Box::pin(futures_util::stream::unfold(0u64, move |sent| async move {
        if sent >= len {
            return None;
        }
        let n = (len - sent).min(chunk as u64) as usize;
        Some((Ok(pattern(seed, sent, n)), sent + n as u64))
    }))
}

/// Deterministic bytes: position-dependent, so misplaced chunks change the hash.
pub fn pattern(seed: u64, offset: u64, n: usize) -> Bytes {
    let mut v = Vec::with_capacity(n);
    let mut x = seed ^ offset.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    for _ in 0..n {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.push((x >> 24) as u8);
    }
    Bytes::from(v)
}

pub async fn request(
    client: &mut Client,
    method: &str,
    path_q: &str,
    headers: &[(&str, &str)],
    body: Option<BodyStream>,
) -> Reply {
    request_on(client, method, path_q, headers, body).await
}

/// Like [`request`], on a shared client (HTTP/2 and HTTP/3 multiplex concurrent calls).
pub async fn request_on(
    client: &Client,
    method: &str,
    path_q: &str,
    headers: &[(&str, &str)],
    body: Option<BodyStream>,
) -> Reply {
    let mut b = Request::builder().method(method).uri(path_q);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    let resp = client
        .send(b.body(()).unwrap(), body)
        .await
        .unwrap_or_else(|e| panic!("{method} {path_q}: {e:#}"));
    let status = resp.status;
    let interim = resp.interim.clone();
    let version = resp.version;
    let headers = resp.headers.clone();
    let chunks: Vec<Bytes> = resp.body.try_collect().await.expect("response body");
    Reply {
        interim,
        status,
        version,
        headers,
        body: Bytes::from(chunks.concat()),
    }
}

pub async fn put(
    client: &mut Client,
    path_q: &str,
    data: &[u8],
    headers: &[(&str, &str)],
) -> Reply {
    let len = data.len().to_string();
    let mut h: Vec<(&str, &str)> = vec![("content-length", &len)];
    h.extend_from_slice(headers);
    request(
        client,
        "PUT",
        path_q,
        &h,
        Some(body_once(Bytes::copy_from_slice(data))),
    )
    .await
}

/// A tus PATCH of `data` at `offset` to the upload at `loc`.
pub async fn tus_patch(c: &Client, loc: &str, offset: u64, data: Bytes) -> Reply {
    let (off, len) = (offset.to_string(), data.len().to_string());
    let h = [
        ("tus-resumable", "1.0.0"),
        ("content-type", "application/offset+octet-stream"),
        ("upload-offset", off.as_str()),
        ("content-length", len.as_str()),
    ];
    request_on(c, "PATCH", loc, &h, Some(body_once(data))).await
}

pub async fn get(client: &mut Client, path_q: &str, headers: &[(&str, &str)]) -> Reply {
    request(client, "GET", path_q, headers, None).await
}

pub fn version_of(p: Proto) -> Version {
    match p {
        Proto::H1 => Version::HTTP_11,
        Proto::H2 => Version::HTTP_2,
        Proto::H3 => Version::HTTP_3,
    }
}

pub fn label(p: Proto) -> &'static str {
    match p {
        Proto::H1 => "h1",
        Proto::H2 => "h2",
        Proto::H3 => "h3",
    }
}

/// Waits (bounded) until `cond` holds.
pub async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    for _ in 0..100 {
        if cond() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for: {what}");
}

/// A raw TLS connection (for tests that misbehave below HTTP).
pub async fn raw_tls(
    addr: std::net::SocketAddr,
    roots: &[CertificateDer<'static>],
) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    let cfg = xferd::client::tls_config(roots, &[b"http/1.1"]).unwrap();
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    tokio_rustls::TlsConnector::from(std::sync::Arc::new(cfg))
        .connect(name, tcp)
        .await
        .unwrap()
}

/// Options for xferd's own upload client against `srv`: trusting its certificate, `streams`
/// chunk streams, retries 50 ms apart, no state file, no progress bar.
pub fn client_options(
    srv: &TestServer,
    only: Option<Proto>,
    streams: usize,
) -> xferd::client::chunked::Options {
    xferd::client::chunked::Options {
        only,
        trust: xferd::client::trust::Trust::Roots(srv.roots.clone()),
        streams: Some(streams),
        policy: xferd::client::retry::Policy {
            base: Duration::from_millis(50),
            ..xferd::client::retry::Policy::default()
        },
        state: None,
        progress: false,
        congestion: xferd::client::DEFAULT_CONGESTION,
        local_probe: Default::default(),
    }
}

/// The tus protocol header.
pub const TUS: (&str, &str) = ("tus-resumable", "1.0.0");

/// A v3-signed URL (path and query) for `method` on `rel`, valid for 10 minutes.
pub fn v3(method: &str, rel: &str) -> String {
    signed(
        "",
        xferd::core::auth::Scheme::V3,
        method,
        rel,
        0,
        "",
        now_unix() + 600,
    )
}

/// Creates a tus upload of `len` bytes at `rel` (v3-signed); its location.
pub async fn tus_create(c: &mut Client, rel: &str, len: usize) -> String {
    let len = len.to_string();
    let r = request(
        c,
        "POST",
        &v3("POST", rel),
        &[TUS, ("upload-length", &len)],
        None,
    )
    .await;
    assert_eq!(r.status, 201, "tus create: {:?}", r.body);
    r.header("location").unwrap().to_string()
}

/// Runs `cmd` for at most `limit`; returns (exit code, stdout, stderr).
pub fn run_bounded(
    mut cmd: std::process::Command,
    limit: Duration,
) -> (Option<i32>, String, String) {
    use std::process::Stdio;
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    let start = std::time::Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let out = child.wait_with_output().unwrap();
            return (
                status.code(),
                String::from_utf8_lossy(&out.stdout).into_owned(),
                String::from_utf8_lossy(&out.stderr).into_owned(),
            );
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            return (
                None,
                String::from_utf8_lossy(&out.stdout).into_owned(),
                String::from_utf8_lossy(&out.stderr).into_owned(),
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `xferd serve --config cfg` must refuse to start: it exits by itself, non-zero, within
/// `limit` (a timeout or a death by signal fails the test too). Its stderr, then stdout.
pub fn serve_must_fail(cfg: &std::path::Path, limit: Duration) -> String {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_xferd"));
    cmd.args(["serve", "--config"]).arg(cfg);
    let (code, out, err) = run_bounded(cmd, limit);
    match code {
        Some(0) => panic!("xferd started on {}: {err}", cfg.display()),
        Some(_) => err + &out,
        None => {
            panic!("xferd did not exit by itself within {limit:?} (or a signal killed it): {err}")
        }
    }
}
