//! Lingering close for TCP connections. When a server closes a socket while the client's
//! last frames (HTTP/2 WINDOW_UPDATE, a PING ack) sit unread in its receive buffer, the
//! kernel answers with a reset, and the client's kernel then throws away response bytes
//! the client had received but not yet read: the end of a download is lost although it was
//! sent. So a connection that hyper lets go is not closed at once: its write side is shut
//! (TLS close_notify, FIN) and whatever still arrives is read and dropped until the client
//! closes too, for at most [`LINGER`] and [`LINGER_BYTES`].

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};

/// Longest a closed connection is drained.
pub const LINGER: Duration = Duration::from_secs(2);
/// Most bytes read (and dropped) while draining.
pub const LINGER_BYTES: usize = 1 << 20;

/// `T`, drained in the background when dropped (inside a tokio runtime).
pub struct Linger<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> {
    inner: Option<T>,
}

impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> Linger<T> {
    pub fn new(inner: T) -> Self {
        Linger { inner: Some(inner) }
    }

    fn io(&mut self) -> std::io::Result<&mut T> {
        self.inner
            .as_mut()
            .ok_or_else(|| std::io::Error::from(std::io::ErrorKind::NotConnected))
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> Drop for Linger<T> {
    fn drop(&mut self) {
        let Some(io) = self.inner.take() else { return };
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(drain(io));
        }
    }
}

async fn drain<T: AsyncRead + AsyncWrite + Unpin>(mut io: T) {
    let _ = tokio::time::timeout(LINGER, async {
        let _ = io.shutdown().await;
        let mut buf = [0u8; 8192];
        let mut total = 0;
        while total < LINGER_BYTES {
            match io.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => total += n,
            }
        }
    })
    .await;
}

impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> AsyncRead for Linger<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.io() {
            Ok(io) => Pin::new(io).poll_read(cx, buf),
            Err(e) => Poll::Ready(Err(e)),
        }
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> AsyncWrite for Linger<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.io() {
            Ok(io) => Pin::new(io).poll_write(cx, data),
            Err(e) => Poll::Ready(Err(e)),
        }
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        match self.io() {
            Ok(io) => Pin::new(io).poll_write_vectored(cx, bufs),
            Err(e) => Poll::Ready(Err(e)),
        }
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.as_ref().is_some_and(|io| io.is_write_vectored())
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.io() {
            Ok(io) => Pin::new(io).poll_flush(cx),
            Err(e) => Poll::Ready(Err(e)),
        }
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.io() {
            Ok(io) => Pin::new(io).poll_shutdown(cx),
            Err(e) => Poll::Ready(Err(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::{TcpListener, TcpStream};

    /// The server side writes a response and is dropped while the client's last bytes are
    /// unread; the client still reads the whole response (no reset), then EOF.
    #[tokio::test]
    async fn dropped_connection_is_drained_not_reset() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (s, _) = listener.accept().await.unwrap();
            let mut io = Linger::new(s);
            // Wait for the client's first bytes, leave the rest unread.
            let mut one = [0u8; 1];
            io.read_exact(&mut one).await.unwrap();
            io.write_all(&vec![7u8; 128 << 10]).await.unwrap();
            // Dropped here with the client's extra bytes unread.
        });
        let mut c = TcpStream::connect(addr).await.unwrap();
        c.write_all(&[1u8; 64 << 10]).await.unwrap();
        server.await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        let mut got = Vec::new();
        c.read_to_end(&mut got).await.expect("no reset");
        assert_eq!(got.len(), 128 << 10);
    }
}
