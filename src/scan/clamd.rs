//! A clamd client: `zINSTREAM` over a Unix socket or TCP.
//!
//! The protocol (clamd(8)): send `zINSTREAM\0`, then chunks, each a 4-byte big-endian
//! length and that many bytes, then a zero length; clamd answers one NUL-terminated line:
//! `stream: OK`, `stream: <signature> FOUND`, or an error such as
//! `INSTREAM size limit exceeded. ERROR` (more than clamd's `StreamMaxLength`). `zPING\0`
//! is answered `PONG`. Every step is bounded by the configured timeout; an answer longer
//! than [`MAX_REPLY`] is an error. Chunks are at most [`MAX_CHUNK`] bytes.
//!
//! clamd may close the connection early (size limit): a failed write then tries to read
//! its answer, so the failure says why.

use crate::core::scan::{ScanFailure, ScanStream, Scanner, Verdict};
use crate::storage::store::BoxFuture;
use bytes::Bytes;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Longest reply read from clamd.
pub const MAX_REPLY: usize = 4096;
/// Largest chunk sent in one INSTREAM frame.
pub const MAX_CHUNK: usize = 256 << 10;

/// Where clamd listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClamdAddr {
    Unix(PathBuf),
    Tcp(SocketAddr),
}

impl std::fmt::Display for ClamdAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ClamdAddr::Unix(p) => write!(f, "unix:{}", p.display()),
            ClamdAddr::Tcp(a) => write!(f, "tcp:{a}"),
        }
    }
}

trait Conn: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Conn for T {}

/// A clamd at an address, with a timeout for each step (connect, each write, the answer).
#[derive(Debug, Clone)]
pub struct Clamd {
    pub addr: ClamdAddr,
    pub timeout: Duration,
}

fn fail(what: &str, e: impl std::fmt::Display) -> ScanFailure {
    ScanFailure(format!("clamd {what}: {e}"))
}

impl Clamd {
    async fn connect(&self) -> Result<Box<dyn Conn>, ScanFailure> {
        let conn = async {
            Ok::<Box<dyn Conn>, std::io::Error>(match &self.addr {
                ClamdAddr::Unix(p) => Box::new(tokio::net::UnixStream::connect(p).await?),
                ClamdAddr::Tcp(a) => Box::new(tokio::net::TcpStream::connect(a).await?),
            })
        };
        match tokio::time::timeout(self.timeout, conn).await {
            Ok(Ok(c)) => Ok(c),
            Ok(Err(e)) => Err(fail(&format!("connect {}", self.addr), e)),
            Err(_) => Err(fail(&format!("connect {}", self.addr), "timed out")),
        }
    }

    /// `PING` -> `PONG` (start-up check, admin health).
    pub async fn ping(&self) -> Result<(), ScanFailure> {
        let mut c = self.connect().await?;
        let t = self.timeout;
        step(t, "write", c.write_all(b"zPING\0")).await?;
        let reply = read_reply(&mut c, t).await?;
        if reply == "PONG" {
            Ok(())
        } else {
            Err(fail("ping", format!("unexpected answer {reply:?}")))
        }
    }
}

async fn step<T>(
    t: Duration,
    what: &str,
    f: impl std::future::Future<Output = std::io::Result<T>>,
) -> Result<T, ScanFailure> {
    match tokio::time::timeout(t, f).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(fail(what, e)),
        Err(_) => Err(fail(what, "timed out")),
    }
}

/// Reads one NUL- (or EOF-) terminated answer, at most [`MAX_REPLY`] bytes.
async fn read_reply(c: &mut Box<dyn Conn>, t: Duration) -> Result<String, ScanFailure> {
    let mut out = Vec::new();
    let read = async {
        let mut buf = [0u8; 512];
        loop {
            let n = c.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            out.extend_from_slice(&buf[..n]);
            if out.contains(&0) || out.len() > MAX_REPLY {
                break;
            }
        }
        Ok::<(), std::io::Error>(())
    };
    step(t, "read", read).await?;
    if out.len() > MAX_REPLY {
        return Err(fail("read", "answer too long"));
    }
    let end = out.iter().position(|b| *b == 0).unwrap_or(out.len());
    Ok(String::from_utf8_lossy(&out[..end]).trim().to_string())
}

/// Parses an INSTREAM answer.
pub fn parse_reply(reply: &str) -> Result<Verdict, ScanFailure> {
    let body = reply.strip_prefix("stream:").map(str::trim);
    match body {
        Some("OK") => Ok(Verdict::Clean),
        Some(rest) if rest.ends_with(" FOUND") => {
            let name = rest.trim_end_matches(" FOUND").trim();
            Ok(Verdict::Infected(name.to_string()))
        }
        _ => Err(fail("scan", format!("answered {reply:?}"))),
    }
}

struct Stream {
    conn: Box<dyn Conn>,
    timeout: Duration,
}

impl Stream {
    async fn send(&mut self, data: &[u8]) -> Result<(), ScanFailure> {
        for chunk in data.chunks(MAX_CHUNK) {
            // MAX_CHUNK fits a u32.
            let len = u32::try_from(chunk.len()).unwrap_or(u32::MAX).to_be_bytes();
            let t = self.timeout;
            let written = async {
                self.conn.write_all(&len).await?;
                self.conn.write_all(chunk).await
            };
            if let Err(e) = step(t, "write", written).await {
                // clamd hangs up early with a reason (size limit): report that instead.
                return match read_reply(&mut self.conn, t).await {
                    Ok(reply) if !reply.is_empty() => {
                        Err(fail("scan", format!("answered {reply:?}")))
                    }
                    _ => Err(e),
                };
            }
        }
        Ok(())
    }
}

impl ScanStream for Stream {
    fn feed(&mut self, data: Bytes) -> BoxFuture<'_, Result<(), ScanFailure>> {
        Box::pin(async move { self.send(&data).await })
    }
    fn finish(mut self: Box<Self>) -> BoxFuture<'static, Result<Verdict, ScanFailure>> {
        Box::pin(async move {
            let t = self.timeout;
            step(t, "write", self.conn.write_all(&[0, 0, 0, 0])).await?;
            let reply = read_reply(&mut self.conn, t).await?;
            parse_reply(&reply)
        })
    }
}

impl Scanner for Clamd {
    fn start(&self) -> BoxFuture<'static, Result<Box<dyn ScanStream>, ScanFailure>> {
        let me = self.clone();
        Box::pin(async move {
            let mut conn = me.connect().await?;
            step(me.timeout, "write", conn.write_all(b"zINSTREAM\0")).await?;
            Ok(Box::new(Stream {
                conn,
                timeout: me.timeout,
            }) as Box<dyn ScanStream>)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_parse() {
        assert_eq!(parse_reply("stream: OK"), Ok(Verdict::Clean));
        assert_eq!(
            parse_reply("stream: Eicar-Test-Signature FOUND"),
            Ok(Verdict::Infected("Eicar-Test-Signature".into()))
        );
        assert!(parse_reply("INSTREAM size limit exceeded. ERROR").is_err());
        assert!(parse_reply("stream: lstat() failed ERROR").is_err());
        assert!(parse_reply("").is_err());
    }

    /// A fake clamd on a Unix socket that records the frames it receives (the framing is
    /// checked here; the real clamd runs in tests/scan.rs).
    #[tokio::test]
    async fn instream_framing_and_verdict() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("clamd.sock");
        let l = tokio::net::UnixListener::bind(&path).unwrap();
        let server = tokio::spawn(async move {
            let (mut s, _) = l.accept().await.unwrap();
            let mut cmd = [0u8; 10];
            s.read_exact(&mut cmd).await.unwrap();
            assert_eq!(&cmd, b"zINSTREAM\0");
            let mut got = Vec::new();
            loop {
                let mut len = [0u8; 4];
                s.read_exact(&mut len).await.unwrap();
                let n = u32::from_be_bytes(len) as usize;
                if n == 0 {
                    break;
                }
                assert!(n <= MAX_CHUNK);
                let mut b = vec![0u8; n];
                s.read_exact(&mut b).await.unwrap();
                got.extend_from_slice(&b);
            }
            s.write_all(b"stream: Fake.Sig FOUND\0").await.unwrap();
            got
        });
        let c = Clamd {
            addr: ClamdAddr::Unix(path),
            timeout: Duration::from_secs(5),
        };
        let mut st = c.start().await.unwrap();
        let big = vec![7u8; MAX_CHUNK + 10];
        st.feed(Bytes::from_static(b"hello ")).await.unwrap();
        st.feed(Bytes::from(big.clone())).await.unwrap();
        let v = st.finish().await.unwrap();
        assert_eq!(v, Verdict::Infected("Fake.Sig".into()));
        let got = server.await.unwrap();
        assert_eq!(got.len(), 6 + big.len());
        assert_eq!(&got[..6], b"hello ");
    }

    #[tokio::test]
    async fn unreachable_is_a_failure() {
        let dir = tempfile::tempdir().unwrap();
        let c = Clamd {
            addr: ClamdAddr::Unix(dir.path().join("none.sock")),
            timeout: Duration::from_secs(2),
        };
        assert!(c.start().await.is_err());
        assert!(c.ping().await.is_err());
    }
}
