//! Write batching for HTTP/2 over TLS: the responses of several streams leave in one write.
//!
//! hyper serves each HTTP/2 stream in a task of its own and the connection's frames from the
//! connection's task. When a stream's response is ready it wakes the connection, which tokio
//! runs next (the LIFO slot), so a client with ten requests in flight got ten TLS writes of
//! one small response each, ten `writev`s and ten TCP segments. [`Batch`] sits between TLS
//! and the socket and lets the connection's first small write of a poll wait one turn of the
//! scheduler, so that the other streams' handlers run and their frames join it. Rules:
//!
//! 1. Off (HTTP/1.1, the TLS handshake, plaintext), or outside a poll of the connection (the
//!    close_notify that the linger drain writes once the connection is dropped, from a task
//!    of its own which no later poll would release), every write goes to the socket at once.
//! 2. On, a write of less than [`BATCH_BELOW`] bytes in all, the first of a poll of the
//!    connection (a [`Rounds::drive`] poll), waits: `Pending`, with the task woken, which
//!    tokio queues behind the tasks already ready (the stream handlers).
//! 3. Every write of that same poll then waits too (the task is already woken: no extra
//!    wake), so TLS keeps the records queued and writes them together later.
//! 4. In the next poll the write goes to the socket, whatever its size: a write waits at most
//!    one turn of the scheduler, and never for a timer or for more data.
//! 5. A write of [`BATCH_BELOW`] bytes or more (a download's full records) never waits.
//! 6. Reads, flushes and shutdown pass through unchanged.

use std::future::Future;
use std::io::IoSlice;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Writes of at least this many bytes are not held (rule 5): one 16 KiB TLS record is a
/// download under way, which gains nothing from waiting.
pub const BATCH_BELOW: usize = 16 << 10;

/// The poll count of one connection, and whether batching is on for it.
#[derive(Clone, Default)]
pub struct Rounds {
    inner: Arc<RoundsInner>,
}

#[derive(Default)]
struct RoundsInner {
    round: AtomicU32,
    on: AtomicBool,
    /// Whether the connection is being polled now (rule 1).
    polling: AtomicBool,
}

impl Rounds {
    pub fn new() -> Rounds {
        Rounds::default()
    }
    /// Turns batching on (after the handshake, for an HTTP/2 connection).
    pub fn enable(&self) {
        self.inner.on.store(true, Ordering::Relaxed);
    }
    fn on(&self) -> bool {
        self.inner.on.load(Ordering::Relaxed) && self.inner.polling.load(Ordering::Relaxed)
    }
    fn current(&self) -> u32 {
        self.inner.round.load(Ordering::Relaxed)
    }
    /// `conn`, counting its polls: a write can tell a new poll from the one it waited in.
    pub fn drive<F: Future>(&self, conn: F) -> impl Future<Output = F::Output> {
        let rounds = self.clone();
        async move {
            let mut conn = std::pin::pin!(conn);
            std::future::poll_fn(|cx| {
                rounds.inner.round.fetch_add(1, Ordering::Relaxed);
                rounds.inner.polling.store(true, Ordering::Relaxed);
                let out = conn.as_mut().poll(cx);
                rounds.inner.polling.store(false, Ordering::Relaxed);
                out
            })
            .await
        }
    }
}

/// `T` whose small writes may wait one turn (see the module rules).
pub struct Batch<T> {
    inner: T,
    rounds: Rounds,
    /// The poll in which a write was held, until a later poll lets it through.
    held_in: Option<u32>,
}

impl<T> Batch<T> {
    pub fn new(inner: T, rounds: Rounds) -> Self {
        Batch {
            inner,
            rounds,
            held_in: None,
        }
    }

    /// Whether a write of `len` bytes waits now (rules 1 to 5).
    fn hold(&mut self, len: usize, cx: &mut Context<'_>) -> bool {
        if !self.rounds.on() {
            return false;
        }
        let now = self.rounds.current();
        match self.held_in {
            Some(round) if round == now => true,
            Some(_) => {
                self.held_in = None;
                false
            }
            None if len < BATCH_BELOW => {
                self.held_in = Some(now);
                cx.waker().wake_by_ref();
                true
            }
            None => false,
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Batch<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Batch<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        if self.hold(data.len(), cx) {
            return Poll::Pending;
        }
        Pin::new(&mut self.inner).poll_write(cx, data)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let len = bufs.iter().map(|b| b.len()).sum();
        if self.hold(len, cx) {
            return Poll::Pending;
        }
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use std::task::{Wake, Waker};
    use tokio::io::AsyncReadExt;

    struct Count(AtomicUsize);
    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
        fn wake_by_ref(self: &Arc<Self>) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn write(
        b: &mut Batch<tokio::io::DuplexStream>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<usize> {
        Pin::new(b).poll_write(cx, data).map(|r| r.unwrap())
    }

    fn new_round(rounds: &Rounds) {
        rounds.inner.round.fetch_add(1, Ordering::Relaxed);
        rounds.inner.polling.store(true, Ordering::Relaxed);
    }

    #[tokio::test]
    async fn small_writes_wait_one_poll_and_large_ones_never() {
        let (a, mut peer) = tokio::io::duplex(1 << 20);
        let rounds = Rounds::new();
        let mut b = Batch::new(a, rounds.clone());
        let wakes = Arc::new(Count(AtomicUsize::new(0)));
        let waker = Waker::from(wakes.clone());
        let mut cx = Context::from_waker(&waker);

        // Rule 1: off, a small write goes at once.
        new_round(&rounds);
        assert_eq!(write(&mut b, &mut cx, b"abc"), Poll::Ready(3));
        assert_eq!(wakes.0.load(Ordering::Relaxed), 0);

        // Rule 2: on, the first small write of a poll waits, the task woken once.
        rounds.enable();
        new_round(&rounds);
        assert_eq!(write(&mut b, &mut cx, b"de"), Poll::Pending);
        assert_eq!(wakes.0.load(Ordering::Relaxed), 1);
        // Rule 3: the rest of that poll waits too, without another wake; a large write too.
        assert_eq!(write(&mut b, &mut cx, b"fg"), Poll::Pending);
        assert_eq!(write(&mut b, &mut cx, &[0; BATCH_BELOW]), Poll::Pending);
        assert_eq!(wakes.0.load(Ordering::Relaxed), 1);
        // Rule 6: flushes pass.
        assert!(Pin::new(&mut b).poll_flush(&mut cx).is_ready());
        // Rule 4: the next poll writes.
        new_round(&rounds);
        assert_eq!(write(&mut b, &mut cx, b"de"), Poll::Ready(2));
        // Rule 5: a large write, first of its poll, does not wait.
        new_round(&rounds);
        assert_eq!(
            write(&mut b, &mut cx, &[7; BATCH_BELOW]),
            Poll::Ready(BATCH_BELOW)
        );
        assert_eq!(wakes.0.load(Ordering::Relaxed), 1);
        // Rule 1: outside a poll of the connection (a drain after it was dropped), a small
        // write goes at once, held or not before.
        assert_eq!(write(&mut b, &mut cx, b"h"), Poll::Pending);
        rounds.inner.polling.store(false, Ordering::Relaxed);
        assert_eq!(write(&mut b, &mut cx, b"h"), Poll::Ready(1));
        assert_eq!(wakes.0.load(Ordering::Relaxed), 2);

        drop(b);
        let mut got = Vec::new();
        peer.read_to_end(&mut got).await.unwrap();
        assert_eq!(&got[..5], b"abcde");
        assert_eq!(got.len(), 5 + BATCH_BELOW + 1);
        assert_eq!(got.last(), Some(&b'h'));
    }

    #[tokio::test]
    async fn drive_counts_polls() {
        let rounds = Rounds::new();
        let mut polls = 0;
        let fut = std::future::poll_fn(|cx| {
            polls += 1;
            if polls < 3 {
                cx.waker().wake_by_ref();
                Poll::Pending
            } else {
                Poll::Ready(())
            }
        });
        rounds.drive(fut).await;
        assert_eq!(rounds.current(), 3);
    }
}
