//! Transport limits over raw HTTP/3 (issue 10, items 3 and 4): request heads bounded in
//! size and time, written as hand-made frames on raw QUIC streams, and a refused head that
//! must not hold up a graceful shutdown. (The TCP cap and early-refused uploads:
//! tests/transport_limits.rs.)

mod common;

use common::*;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

// ---------------------------------------------------------------------------------------
// Raw HTTP/3: frames and QPACK written by hand.

fn varint(v: u64) -> Vec<u8> {
    if v < 1 << 6 {
        vec![v as u8]
    } else if v < 1 << 14 {
        ((v as u16) | 0x4000).to_be_bytes().to_vec()
    } else if v < 1 << 30 {
        ((v as u32) | 0x8000_0000).to_be_bytes().to_vec()
    } else {
        (v | 0xc000_0000_0000_0000).to_be_bytes().to_vec()
    }
}

fn frame(ty: u64, payload: &[u8]) -> Vec<u8> {
    let mut f = varint(ty);
    f.extend(varint(payload.len() as u64));
    f.extend_from_slice(payload);
    f
}

/// QPACK prefix integer (RFC 7541 section 5.1).
fn pint(out: &mut Vec<u8>, flags: u8, bits: u8, mut v: usize) {
    let max = (1usize << bits) - 1;
    if v < max {
        out.push(flags | v as u8);
        return;
    }
    out.push(flags | max as u8);
    v -= max;
    while v >= 128 {
        out.push((v % 128) as u8 | 0x80);
        v /= 128;
    }
    out.push(v as u8);
}

fn string(out: &mut Vec<u8>, s: &[u8]) {
    pint(out, 0x00, 7, s.len());
    out.extend_from_slice(s);
}

/// A QPACK field section (static table only) for `GET https://localhost<path>` plus `extra`.
fn get_head(path: &str, extra: &[(&str, &[u8])]) -> Vec<u8> {
    let mut b = vec![0x00, 0x00];
    b.push(0xc0 | 17); // :method GET
    b.push(0xc0 | 23); // :scheme https
    pint(&mut b, 0x50, 4, 0); // :authority
    string(&mut b, b"localhost");
    pint(&mut b, 0x50, 4, 1); // :path
    string(&mut b, path.as_bytes());
    for (name, value) in extra {
        pint(&mut b, 0x20, 3, name.len());
        b.extend_from_slice(name.as_bytes());
        string(&mut b, value);
    }
    b
}

/// `:status` of a response HEADERS payload (static-table encodings only).
fn status_of(payload: &[u8]) -> Option<u16> {
    let b = *payload.get(2)?;
    let index = |first: u8, bits: u8| -> Option<(usize, usize)> {
        let max = (1usize << bits) - 1;
        let v = (first as usize) & max;
        if v < max {
            return Some((v, 3));
        }
        let next = *payload.get(3)? as usize;
        Some((max + (next & 0x7f), 4))
    };
    if b & 0xc0 == 0xc0 {
        let (i, _) = index(b, 6)?;
        let table = [
            (24, 103),
            (25, 200),
            (26, 304),
            (27, 404),
            (28, 503),
            (63, 100),
            (64, 204),
            (65, 206),
            (66, 302),
            (67, 400),
            (68, 403),
            (69, 421),
            (70, 425),
            (71, 500),
        ];
        return table.iter().find(|(k, _)| *k == i).map(|(_, s)| *s);
    }
    if b & 0xf0 == 0x50 {
        let (_, at) = index(b, 4)?;
        let len = (*payload.get(at)? & 0x7f) as usize;
        let v = payload.get(at + 1..at + 1 + len)?;
        return std::str::from_utf8(v).ok()?.parse().ok();
    }
    None
}

/// The status of the first HEADERS frame in `bytes`.
fn response_status(bytes: &[u8]) -> Option<u16> {
    fn read_varint(b: &[u8]) -> Option<(u64, usize)> {
        let first = *b.first()?;
        let len = 1usize << (first >> 6);
        let mut v = u64::from(first & 0x3f);
        for x in b.get(1..len)? {
            v = (v << 8) | u64::from(*x);
        }
        Some((v, len))
    }
    let (ty, a) = read_varint(bytes)?;
    let (len, b) = read_varint(&bytes[a..])?;
    if ty != 0x01 {
        return None;
    }
    status_of(bytes.get(a + b..a + b + len as usize)?)
}

struct RawH3 {
    _endpoint: quinn::Endpoint,
    conn: quinn::Connection,
    _control: quinn::SendStream,
}

/// A QUIC connection with ALPN h3 and a control stream carrying an empty SETTINGS frame.
async fn raw_h3(srv: &TestServer) -> RawH3 {
    let tls = xferd::client::tls_config(&srv.roots, &[b"h3"]).unwrap();
    let quic = quinn::crypto::rustls::QuicClientConfig::try_from(tls).unwrap();
    let mut cfg = quinn::ClientConfig::new(Arc::new(quic));
    let mut transport = quinn::TransportConfig::default();
    // Little unacknowledged data on our side, so our own buffers barely show in the RSS.
    transport.send_window(2 << 20);
    cfg.transport_config(Arc::new(transport));
    let mut endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    endpoint.set_default_client_config(cfg);
    let conn = tokio::time::timeout(
        Duration::from_secs(5),
        endpoint.connect(srv.addr(), "localhost").unwrap(),
    )
    .await
    .expect("QUIC handshake in time")
    .expect("QUIC handshake");
    let mut control = conn.open_uni().await.unwrap();
    let mut c = vec![0x00];
    c.extend(frame(0x04, &[]));
    control.write_all(&c).await.unwrap();
    RawH3 {
        _endpoint: endpoint,
        conn,
        _control: control,
    }
}

impl RawH3 {
    /// `GET /health` on a new request stream; the response's status.
    async fn health(&self) -> Result<Option<u16>, String> {
        let (mut s, mut r) = self.conn.open_bi().await.map_err(|e| e.to_string())?;
        s.write_all(&frame(0x01, &get_head("/health", &[])))
            .await
            .map_err(|e| e.to_string())?;
        s.finish().map_err(|e| e.to_string())?;
        read_status(&mut r, Duration::from_secs(5)).await
    }
}

/// Reads a whole response stream (bounded), returning its status.
async fn read_status(recv: &mut quinn::RecvStream, limit: Duration) -> Result<Option<u16>, String> {
    match tokio::time::timeout(limit, recv.read_to_end(1 << 20)).await {
        Err(_) => Err("no response in time".into()),
        Ok(Err(e)) => Err(format!("response stream: {e}")),
        Ok(Ok(bytes)) => Ok(response_status(&bytes)),
    }
}

fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    let kb: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kb << 10
}

/// Runs test `name` of this binary alone in a child process (so that its RSS readings are
/// not disturbed by the tests running beside it); true if it passed.
fn run_isolated(name: &str) -> bool {
    let mut cmd = std::process::Command::new(std::env::current_exe().unwrap());
    cmd.args([name, "--exact", "--test-threads=1", "--nocapture"])
        .env(ISOLATED, "1");
    let (code, out, err) = run_bounded(cmd, Duration::from_secs(120));
    eprintln!("{out}{err}");
    code == Some(0) && out.contains("1 passed")
}

const ISOLATED: &str = "XFERD_TEST_ISOLATED";

/// Item 3: a HEADERS frame announcing 64 MiB, followed by 16 MB on each of four streams, is
/// refused with 431 and not buffered by the server.
#[test]
fn h3_huge_headers_frame_is_refused_and_not_buffered() {
    if std::env::var_os(ISOLATED).is_none() {
        assert!(
            run_isolated("h3_huge_headers_frame_is_refused_and_not_buffered"),
            "see the child's output above"
        );
        return;
    }
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
        .block_on(huge_headers_frame());
}

async fn huge_headers_frame() {
    let srv = TestServer::start().await;
    let h3 = raw_h3(&srv).await;
    // Warm up (allocator arenas, the handler path) before the baseline.
    assert_eq!(h3.health().await, Ok(Some(200)));
    let before = rss_bytes();
    const PER_STREAM: usize = 16 << 20;
    let mut streams = Vec::new();
    for _ in 0..4 {
        let (mut send, recv) = h3.conn.open_bi().await.unwrap();
        let mut head = varint(0x01);
        head.extend(varint(64 << 20));
        send.write_all(&head).await.unwrap();
        streams.push((send, recv));
    }
    let chunk = vec![0x41u8; 64 << 10];
    let mut sent = 0usize;
    let deadline = Instant::now() + Duration::from_secs(30);
    for (send, _) in &mut streams {
        let mut n = 0;
        while n < PER_STREAM && Instant::now() < deadline {
            match tokio::time::timeout(Duration::from_secs(2), send.write_all(&chunk)).await {
                Ok(Ok(())) => n += chunk.len(),
                // Stopped by the server (or blocked by flow control): it reads no more.
                _ => break,
            }
        }
        sent += n;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let grown = rss_bytes().saturating_sub(before);
    eprintln!("sent {sent} bytes on 4 streams; RSS grew by {grown} bytes");
    assert!(
        grown < 20 << 20,
        "server memory grew by {} MB for oversized HEADERS frames",
        grown >> 20
    );
    for (_, recv) in &mut streams {
        assert_eq!(
            read_status(recv, Duration::from_secs(3)).await,
            Ok(Some(431)),
            "an oversized head is answered 431"
        );
    }
    // The connection still serves requests.
    assert_eq!(h3.health().await, Ok(Some(200)));
    h3.conn.close(0u32.into(), b"done");
    srv.stop().await;
}

/// The status of a `GET /health` sent on a new stream of `h3` with one extra field.
async fn get_with_field(h3: &RawH3, name: &str, value: &[u8]) -> Result<Option<u16>, String> {
    let (mut s, mut r) = h3.conn.open_bi().await.unwrap();
    s.write_all(&frame(0x01, &get_head("/health", &[(name, value)])))
        .await
        .unwrap();
    let _ = s.finish();
    read_status(&mut r, Duration::from_secs(5)).await
}

/// Item 3: a complete 200 KB header block over HTTP/3 gets 431, as HTTP/1.1 does.
#[tokio::test]
async fn h3_200kb_header_block_gets_431() {
    let srv = TestServer::start().await;
    let h3 = raw_h3(&srv).await;
    let big = vec![b'a'; 200_000];
    assert_eq!(get_with_field(&h3, "x-big", &big).await, Ok(Some(431)));
    // Just under the limit is fine.
    let fits = vec![b'a'; 60_000];
    assert_eq!(get_with_field(&h3, "x-fits", &fits).await, Ok(Some(200)));
    // HTTP/1.1 for comparison.
    let mut tls = raw_tls(srv.addr(), &srv.roots).await;
    let mut req = b"GET /health HTTP/1.1\r\nHost: localhost\r\nX-Big: ".to_vec();
    req.extend_from_slice(&big);
    req.extend_from_slice(b"\r\n\r\n");
    let _ = tls.write_all(&req).await;
    let mut head = [0u8; 12];
    let _ = tokio::time::timeout(Duration::from_secs(5), tls.read_exact(&mut head)).await;
    assert_eq!(&head, b"HTTP/1.1 431");
    h3.conn.close(0u32.into(), b"done");
    srv.stop().await;
}

/// A refused head must not hold up a graceful shutdown: h3 keeps the id of a stream whose
/// request it could not resolve among the requests it waits for, so a draining connection
/// waited for the whole shutdown grace (5 s here) although nothing was in flight.
#[tokio::test]
async fn h3_refused_head_does_not_hold_up_shutdown() {
    let mut srv = TestServer::start().await;
    let h3 = raw_h3(&srv).await;
    let big = vec![b'a'; 200_000];
    assert_eq!(get_with_field(&h3, "x-big", &big).await, Ok(Some(431)));
    let start = Instant::now();
    // The client keeps its connection open: the server closes it after its short linger.
    let server = srv.server.take().unwrap();
    tokio::time::timeout(Duration::from_secs(20), server.shutdown())
        .await
        .expect("shutdown ends");
    let took = start.elapsed();
    assert!(took < Duration::from_millis(4500), "shutdown took {took:?}");
    drop(h3);
}

/// Item 4: a request head trickled one byte at a time is reset (H3_REQUEST_INCOMPLETE) at
/// the header deadline; the connection's other streams keep working.
#[tokio::test]
async fn h3_trickled_head_is_reset_at_the_deadline() {
    let srv =
        TestServer::start_with(|c| c.server.header_read_timeout = Duration::from_secs(1)).await;
    let h3 = raw_h3(&srv).await;
    let (mut send, mut recv) = h3.conn.open_bi().await.unwrap();
    let head = frame(0x01, &get_head("/health", &[("x-slow", &[b'z'; 64])]));
    let start = Instant::now();
    let trickle = async {
        for b in &head {
            if send.write_all(&[*b]).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    let mut buf = [0u8; 64];
    let outcome = tokio::select! {
        r = recv.read(&mut buf) => Some(r),
        _ = trickle => None,
        _ = tokio::time::sleep(Duration::from_secs(6)) => None,
    };
    let took = start.elapsed();
    match outcome {
        Some(Err(quinn::ReadError::Reset(code))) => {
            assert_eq!(code.into_inner(), 0x10d, "H3_REQUEST_INCOMPLETE")
        }
        other => panic!("expected a reset at the deadline, got {other:?} after {took:?}"),
    }
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(3),
        "reset after {took:?}"
    );
    // Another request on the same connection is served.
    assert_eq!(h3.health().await, Ok(Some(200)));
    h3.conn.close(0u32.into(), b"done");
    srv.stop().await;
}
