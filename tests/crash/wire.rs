//! The process and protocol side of the crash loop: the real binary started on a config,
//! requests that may be cut by a kill, paced bodies, and the three resumable protocols'
//! offset queries and appends.

use super::{HFS_CHUNK, TUS};
use crate::common::*;
use bytes::Bytes;
use rand::Rng;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use xferd::client::{Client, Proto};
use xferd::core::auth::Scheme;
use xferd::core::body::{BodyError, BodyStream};

pub(crate) struct Proc(pub(crate) Child);
impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub(crate) fn free_port() -> u16 {
    loop {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        if std::net::UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

pub(crate) fn write_config(dir: &Path, port: u16) -> PathBuf {
    let cfg = dir.join("xferd.toml");
    std::fs::write(
        &cfg,
        format!(
            "[server]\nlisten = \"127.0.0.1:{port}\"\nstorage_path = \"{d}/data\"\nstate_path = \"{d}/state\"\nshutdown_grace = \"2s\"\n\
             [security]\nsecret = \"{SECRET}\"\n\
             [resumable]\nchunk_size = {HFS_CHUNK}\ncommit_every = 65536\n\
             [performance]\nintelligent_chunking = false\nmin_chunk_size = {HFS_CHUNK}\n",
            d = dir.display()
        ),
    )
    .unwrap();
    cfg
}

/// The real binary on `cfg`; its log is appended to `$XFERD_CRASH_LOG` when that is set
/// (for a failed run), else discarded.
pub(crate) fn spawn_server(cfg: &Path) -> Proc {
    let log = || match std::env::var_os("XFERD_CRASH_LOG") {
        Some(p) => std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(p)
            .map(Stdio::from)
            .unwrap_or_else(|_| Stdio::null()),
        None => Stdio::null(),
    };
    Proc(
        Command::new(env!("CARGO_BIN_EXE_xferd"))
            .args(["serve", "--config"])
            .arg(cfg)
            .stdout(log())
            .stderr(log())
            .spawn()
            .unwrap(),
    )
}

pub(crate) async fn wait_ready(
    addr: std::net::SocketAddr,
    roots_path: &Path,
) -> Vec<rustls::pki_types::CertificateDer<'static>> {
    for _ in 0..400 {
        if let Ok(roots) = xferd::tls::read_certs(roots_path) {
            if let Ok(c) = Client::connect(Proto::H1, addr, "localhost", &roots).await {
                if let Some(r) = try_req(&c, "GET", "/health", &[], None).await {
                    if r.status == 200 {
                        return roots;
                    }
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("server did not become ready");
}

/// Requests cut by a kill (no response).
pub(crate) static CUT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// A request that may fail (the server is killed under it): `None` then.
pub(crate) async fn try_req(
    c: &Client,
    method: &str,
    path_q: &str,
    headers: &[(&str, &str)],
    body: Option<BodyStream>,
) -> Option<Reply> {
    use futures_util::TryStreamExt;
    let mut b = http::Request::builder().method(method).uri(path_q);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    let Ok(resp) = c.send(b.body(()).unwrap(), body).await else {
        CUT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        return None;
    };
    let (status, version, headers) = (resp.status, resp.version, resp.headers.clone());
    let chunks: Vec<Bytes> = resp.body.try_collect().await.ok()?;
    Some(Reply {
        interim: Vec::new(),
        status,
        version,
        headers,
        body: Bytes::from(chunks.concat()),
    })
}

/// `data` in 64 KiB pieces with a short pause between them, so kills land mid-body.
pub(crate) fn paced(data: Bytes) -> BodyStream {
    Box::pin(futures_util::stream::unfold(0usize, move |at| {
        let data = data.clone();
        async move {
            if at >= data.len() {
                return None;
            }
            if at > 0 {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            let end = (at + (64 << 10)).min(data.len());
            Some((Ok::<_, BodyError>(data.slice(at..end)), end))
        }
    }))
}

pub(crate) fn content(seed: u64, len: u64) -> Bytes {
    pattern(seed, 0, len as usize)
}

pub(crate) fn sha(b: &[u8]) -> String {
    hex::encode(Sha256::digest(b))
}

pub(crate) fn v3(method: &str, rel: &str) -> String {
    signed("", Scheme::V3, method, rel, 0, "", now_unix() + 3600)
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Kind {
    Tus,
    Ietf,
    Hfs,
}

#[derive(Clone, Debug)]
pub(crate) struct Sess {
    pub(crate) kind: Kind,
    /// The tus/IETF upload URL, or the HFS session id.
    pub(crate) loc: String,
    pub(crate) rel: String,
    pub(crate) seed: u64,
    pub(crate) total: u64,
    /// HFS: the session's chunk size (from the server's answer to the creation).
    pub(crate) chunk: u64,
    /// The highest offset the server acknowledged.
    pub(crate) acked: u64,
    pub(crate) busy: bool,
}

/// The server's offset for a session, `None` when it has no such session (or failed).
pub(crate) async fn query(c: &Client, s: &Sess) -> Option<(u16, u64)> {
    match s.kind {
        Kind::Tus => {
            let r = try_req(c, "HEAD", &s.loc, &[TUS], None).await?;
            let off = r.header("upload-offset").and_then(|v| v.parse().ok());
            Some((r.status.as_u16(), off.unwrap_or(0)))
        }
        Kind::Ietf => {
            let r = try_req(c, "HEAD", &s.loc, &[], None).await?;
            let off = r.header("upload-offset").and_then(|v| v.parse().ok());
            Some((r.status.as_u16(), off.unwrap_or(0)))
        }
        Kind::Hfs => {
            let r = try_req(
                c,
                "GET",
                &format!("/upload-status?session_id={}", s.loc),
                &[],
                None,
            )
            .await?;
            let off = r.json()["uploaded_bytes"].as_u64();
            Some((r.status.as_u16(), off.unwrap_or(0)))
        }
    }
}

/// Sends the piece `[off, end)` of a session; returns the acknowledged offset and whether
/// that completed the upload, or what went wrong (for a violation's message).
pub(crate) async fn append(
    c: &Client,
    s: &Sess,
    data: &Bytes,
    off: u64,
    end: u64,
) -> Result<(u64, bool), String> {
    let piece = data.slice(off as usize..end as usize);
    let (o, len) = (off.to_string(), piece.len().to_string());
    let last = end == s.total;
    match s.kind {
        Kind::Tus => {
            let h = [
                TUS,
                ("content-type", "application/offset+octet-stream"),
                ("upload-offset", o.as_str()),
                ("content-length", len.as_str()),
            ];
            let r = sent(c, "PATCH", &s.loc, &h, piece, off, end).await?;
            if r.status != 204 {
                return Err(refused("PATCH", off, end, &r));
            }
            let at: u64 = r
                .header("upload-offset")
                .and_then(|v| v.parse().ok())
                .ok_or_else(|| refused("PATCH (no Upload-Offset)", off, end, &r))?;
            Ok((at, at == s.total))
        }
        Kind::Ietf => {
            let h = [
                ("content-type", "application/partial-upload"),
                ("upload-offset", o.as_str()),
                ("upload-complete", if last { "?1" } else { "?0" }),
                ("content-length", len.as_str()),
            ];
            let r = sent(c, "PATCH", &s.loc, &h, piece, off, end).await?;
            if !r.status.is_success() {
                return Err(refused("PATCH", off, end, &r));
            }
            let at = r
                .header("upload-offset")
                .and_then(|v| v.parse().ok())
                .unwrap_or(end);
            Ok((at, last && at == s.total))
        }
        Kind::Hfs => {
            let n = (off / s.chunk).to_string();
            let h = [
                ("x-upload-session-id", s.loc.as_str()),
                ("x-chunk-number", n.as_str()),
                ("content-length", len.as_str()),
            ];
            let r = sent(c, "PUT", "/chunked-upload", &h, piece, off, end).await?;
            if r.status != 200 {
                return Err(refused(&format!("chunk {n}"), off, end, &r));
            }
            let done = r.json()["completed"] == true;
            Ok((if done { s.total } else { end }, done))
        }
    }
}

/// `piece` (paced) sent as the body of `method path_q`; no response is an error.
async fn sent(
    c: &Client,
    method: &str,
    path_q: &str,
    headers: &[(&str, &str)],
    piece: Bytes,
    off: u64,
    end: u64,
) -> Result<Reply, String> {
    try_req(c, method, path_q, headers, Some(paced(piece)))
        .await
        .ok_or_else(|| format!("{method} [{off}, {end}): no response"))
}

/// The message of a piece the server refused: what was sent, the status and the body.
fn refused(what: &str, off: u64, end: u64, r: &Reply) -> String {
    format!(
        "{what} [{off}, {end}): {} {}",
        r.status,
        String::from_utf8_lossy(&r.body).trim()
    )
}

/// The end of the next piece of `s` from `off`: HFS pieces are whole chunks, others random.
pub(crate) fn piece_end(s: &Sess, off: u64, rng: &mut impl Rng) -> u64 {
    match s.kind {
        Kind::Hfs => (off / s.chunk * s.chunk + s.chunk).min(s.total),
        _ => (off + rng.random_range(32u64 << 10..=384 << 10)).min(s.total),
    }
}
