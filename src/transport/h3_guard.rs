//! Bounds on what a client may make the HTTP/3 stack hold: a [`quic::Connection`] over
//! h3-quinn's whose streams watch the HTTP/3 frames passing through them.
//!
//! Why: h3 0.0.8 decodes a frame other than DATA only once the whole frame is buffered
//! (`Frame::decode` waits for the announced length), and it reads the QUIC stream into its
//! own buffer, which hands the flow-control credit back to the peer. So quinn's stream and
//! connection windows do not bound it: one unfinished HEADERS frame announcing 64 MiB was
//! buffered whole (RSS +93 MB per stream, no signature needed), and h3's
//! `max_field_section_size` only applies once a frame is complete. Here:
//!
//! - a request stream's head (every frame up to and including its first HEADERS) may take
//!   at most `max_head` bytes; any later frame other than DATA (trailers, unknown types),
//!   and any frame on the control stream, at most `max_head` bytes too. A head over the
//!   limit is answered `431` (a hand-encoded HEADERS frame, then FIN) and the rest of the
//!   request refused with STOP_SENDING(H3_NO_ERROR) (RFC 9114 section 4.1); a later
//!   oversized frame stops the stream with H3_EXCESSIVE_LOAD. Nothing is read past the
//!   frame header that gave it away, so h3 never holds more than the limit per stream.
//! - a request's head must be complete within `head_deadline` of the stream's arrival
//!   (the TCP front door's header read timeout); otherwise the stream is reset with
//!   H3_REQUEST_INCOMPLETE. The connection and its other streams carry on.
//!
//! Violations reach h3 as a stream-level error (`StreamErrorIncoming::Unknown`), which it
//! reports for that request only.
//!
//! The streams also hand h3 what they read in pieces cut at frame boundaries
//! ([`super::h3_frames::Frames::piece`]), one piece per read. Why: h3 0.0.8 reads one chunk
//! from the QUIC stream into its buffer on every poll and gives back at most what is left of
//! the current frame from the buffer's first chunk, so a chunk holding a frame boundary left
//! a chunk more in the buffer each frame. Under a fast upload quinn's chunks are large
//! (its reassembly buffer coalesces to megabytes when the reader lags), the buffer grew
//! without bound (the read already returned the flow-control credit), and each chunk left in
//! it kept a multi-megabyte allocation alive: 57-122 MiB over an idle server for one 1 GiB upload.
//! With pieces, a poll takes the buffer's first piece whole, so the buffer stays at a piece
//! or two, and the rest of a chunk waits here, not read past, so flow control bounds it.

use bytes::{Buf, Bytes};
use h3::quic::{self, ConnectionErrorIncoming, StreamErrorIncoming, StreamId, WriteBuf};
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::time::Instant;

use super::h3_frames::{Frames, Phase, Verdict};

/// HTTP/3 error codes used here (RFC 9114 section 8.1).
const H3_NO_ERROR: u64 = 0x100;
const H3_EXCESSIVE_LOAD: u64 = 0x107;
const H3_REQUEST_INCOMPLETE: u64 = 0x10d;

/// `HEADERS` with `:status: 431` (QPACK: empty prefix, literal with static name reference
/// 24 (`:status`), value "431"), sent for a request head over the limit.
const RESPONSE_431: &[u8] = &[0x01, 0x08, 0x00, 0x00, 0x5f, 0x09, 0x03, b'4', b'3', b'1'];

/// What one connection's streams may hold.
#[derive(Debug, Clone, Copy)]
pub struct Bounds {
    /// Most bytes of a request head, and of any one frame other than DATA.
    pub max_head: u64,
    /// Time from a request stream's arrival to the end of its head.
    pub head_deadline: Duration,
}

/// h3-quinn's connection, its streams watched (see the module doc).
pub struct Conn {
    inner: h3_quinn::Connection,
    bounds: Bounds,
}

impl Conn {
    pub fn new(conn: quinn::Connection, bounds: Bounds) -> Conn {
        Conn {
            inner: h3_quinn::Connection::new(conn),
            bounds,
        }
    }
}

impl quic::Connection<Bytes> for Conn {
    type RecvStream = Recv<h3_quinn::RecvStream>;
    type OpenStreams = Opener;

    fn poll_accept_recv(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Self::RecvStream, ConnectionErrorIncoming>> {
        let s = std::task::ready!(quic::Connection::<Bytes>::poll_accept_recv(
            &mut self.inner,
            cx
        ))?;
        Poll::Ready(Ok(Recv::new(s, Frames::uni(self.bounds.max_head), None)))
    }

    fn poll_accept_bidi(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Self::BidiStream, ConnectionErrorIncoming>> {
        let s = std::task::ready!(quic::Connection::<Bytes>::poll_accept_bidi(
            &mut self.inner,
            cx
        ))?;
        let deadline = Instant::now() + self.bounds.head_deadline;
        Poll::Ready(Ok(Bidi::new(s, self.bounds.max_head, Some(deadline))))
    }

    fn opener(&self) -> Self::OpenStreams {
        Opener {
            inner: quic::Connection::<Bytes>::opener(&self.inner),
            max_head: self.bounds.max_head,
        }
    }
}

/// `quic::OpenStreams` for a wrapper around one of h3-quinn's stream openers (`$inner`):
/// bidirectional streams come back guarded by `$max_head` (no deadline: the server opens
/// them, so no request head arrives on them); the rest passes through.
macro_rules! guarded_open_streams {
    ($ty:ty, $inner:ident, |$me:ident| $max_head:expr) => {
        impl quic::OpenStreams<Bytes> for $ty {
            type BidiStream = Bidi;
            type SendStream = h3_quinn::SendStream<Bytes>;

            fn poll_open_bidi(
                &mut self,
                cx: &mut Context<'_>,
            ) -> Poll<Result<Self::BidiStream, StreamErrorIncoming>> {
                let s = std::task::ready!(quic::OpenStreams::<Bytes>::poll_open_bidi(
                    &mut self.$inner,
                    cx
                ))?;
                let $me = &*self;
                Poll::Ready(Ok(Bidi::new(s, $max_head, None)))
            }

            fn poll_open_send(
                &mut self,
                cx: &mut Context<'_>,
            ) -> Poll<Result<Self::SendStream, StreamErrorIncoming>> {
                quic::OpenStreams::<Bytes>::poll_open_send(&mut self.$inner, cx)
            }

            fn close(&mut self, code: h3::error::Code, reason: &[u8]) {
                quic::OpenStreams::<Bytes>::close(&mut self.$inner, code, reason)
            }
        }
    };
}

guarded_open_streams!(Conn, inner, |me| me.bounds.max_head);

/// Opens streams for h3 (the server opens its control and QPACK streams with it).
pub struct Opener {
    inner: h3_quinn::OpenStreams,
    max_head: u64,
}

guarded_open_streams!(Opener, inner, |me| me.max_head);

#[derive(Debug)]
struct Refused(Verdict);

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Verdict::HeadTooLarge => write!(f, "request head over the size limit"),
            Verdict::FrameTooLarge => write!(f, "frame over the size limit"),
            Verdict::Deadline => write!(f, "request head not complete in time"),
        }
    }
}

impl std::error::Error for Refused {}

/// A receive stream whose frames are watched.
pub struct Recv<R> {
    inner: R,
    frames: Frames,
    /// Head deadline (request streams until their head is complete).
    deadline: Option<Instant>,
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
    /// A read of `inner` is in progress: h3-quinn's stream is then inside its read future
    /// and `stop_sending` on it would panic.
    reading: bool,
    verdict: Option<Verdict>,
    /// Kept: h3-quinn's `recv_id` panics while a read is in flight.
    id: StreamId,
    /// What is left of the last chunk read, handed to h3 piece by piece.
    held: Bytes,
}

impl<R: quic::RecvStream<Buf = Bytes>> Recv<R> {
    fn new(inner: R, frames: Frames, deadline: Option<Instant>) -> Recv<R> {
        Recv {
            id: inner.recv_id(),
            inner,
            frames,
            deadline,
            timer: None,
            reading: false,
            verdict: None,
            held: Bytes::new(),
        }
    }

    fn refuse(&mut self, v: Verdict) -> Poll<Result<Option<Bytes>, StreamErrorIncoming>> {
        self.verdict = Some(v);
        if !self.reading {
            let code = match v {
                Verdict::HeadTooLarge => H3_NO_ERROR,
                Verdict::FrameTooLarge => H3_EXCESSIVE_LOAD,
                Verdict::Deadline => H3_REQUEST_INCOMPLETE,
            };
            self.inner.stop_sending(code);
        }
        Poll::Ready(Err(StreamErrorIncoming::Unknown(Box::new(Refused(v)))))
    }

    fn poll_data(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Option<Bytes>, StreamErrorIncoming>> {
        if let Some(v) = self.verdict {
            return Poll::Ready(Err(StreamErrorIncoming::Unknown(Box::new(Refused(v)))));
        }
        if self.held.is_empty() {
            match self.inner.poll_data(cx) {
                Poll::Ready(Ok(Some(chunk))) => {
                    self.reading = false;
                    self.held = chunk;
                }
                other => return self.not_read(other, cx),
            }
        }
        let n = match self.frames.piece(&self.held) {
            Ok(n) => n,
            Err(v) => return self.refuse(v),
        };
        if !self.frames.in_head() {
            self.deadline = None;
            self.timer = None;
        }
        let piece = if n == 0 || n >= self.held.len() {
            std::mem::take(&mut self.held)
        } else {
            self.held.split_to(n)
        };
        Poll::Ready(Ok(Some(piece)))
    }

    /// The inner stream gave no chunk: its end, an error, or nothing yet.
    fn not_read(
        &mut self,
        polled: Poll<Result<Option<Bytes>, StreamErrorIncoming>>,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Option<Bytes>, StreamErrorIncoming>> {
        match polled {
            Poll::Ready(other) => {
                self.reading = false;
                Poll::Ready(other)
            }
            Poll::Pending => {
                self.reading = true;
                let Some(at) = self.deadline else {
                    return Poll::Pending;
                };
                let timer = self
                    .timer
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(at)));
                match timer.as_mut().poll(cx) {
                    Poll::Ready(()) => self.refuse(Verdict::Deadline),
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }

    fn stop_sending(&mut self, code: u64) {
        // While a read is in flight the stream cannot be stopped here; dropping it
        // (quinn stops an unfinished stream on drop) does the same a moment later.
        if !self.reading {
            self.inner.stop_sending(code);
        }
    }
}

impl<R: quic::RecvStream<Buf = Bytes>> quic::RecvStream for Recv<R> {
    type Buf = Bytes;
    fn poll_data(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Option<Self::Buf>, StreamErrorIncoming>> {
        Recv::poll_data(self, cx)
    }
    fn stop_sending(&mut self, error_code: u64) {
        Recv::stop_sending(self, error_code)
    }
    fn recv_id(&self) -> StreamId {
        self.id
    }
}

/// A request stream: both halves, so that a refused head can be answered or reset.
pub struct Bidi {
    send: SendHalf,
    recv: Recv<h3_quinn::RecvStream>,
}

impl Bidi {
    fn new(s: h3_quinn::BidiStream<Bytes>, max_head: u64, deadline: Option<Instant>) -> Bidi {
        let (send, recv) = quic::BidiStream::split(s);
        let frames = if deadline.is_some() {
            Frames::request(max_head)
        } else {
            // A stream we opened: its peer sends a response, framed like a request.
            Frames::new(Phase::Frames, max_head)
        };
        let recv = Recv::new(recv, frames, deadline);
        Bidi {
            send: SendHalf {
                id: recv.id,
                inner: Some(send),
            },
            recv,
        }
    }
}

impl quic::RecvStream for Bidi {
    type Buf = Bytes;
    fn poll_data(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Option<Self::Buf>, StreamErrorIncoming>> {
        let r = self.recv.poll_data(cx);
        if let (true, Some(v)) = (r.is_ready(), self.recv.verdict) {
            if let Some(mut send) = self.send.inner.take() {
                match v {
                    Verdict::HeadTooLarge => {
                        if let Ok(rt) = tokio::runtime::Handle::try_current() {
                            rt.spawn(answer_431(send));
                        }
                    }
                    Verdict::Deadline => {
                        quic::SendStream::<Bytes>::reset(&mut send, H3_REQUEST_INCOMPLETE)
                    }
                    Verdict::FrameTooLarge => {
                        quic::SendStream::<Bytes>::reset(&mut send, H3_EXCESSIVE_LOAD)
                    }
                }
            }
        }
        r
    }
    fn stop_sending(&mut self, error_code: u64) {
        self.recv.stop_sending(error_code)
    }
    fn recv_id(&self) -> StreamId {
        self.recv.id
    }
}

impl quic::SendStream<Bytes> for Bidi {
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), StreamErrorIncoming>> {
        self.send.poll_ready(cx)
    }
    fn send_data<T: Into<WriteBuf<Bytes>>>(&mut self, data: T) -> Result<(), StreamErrorIncoming> {
        self.send.send_data(data)
    }
    fn poll_finish(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), StreamErrorIncoming>> {
        self.send.poll_finish(cx)
    }
    fn reset(&mut self, reset_code: u64) {
        self.send.reset(reset_code)
    }
    fn send_id(&self) -> StreamId {
        self.send.id
    }
}

impl quic::BidiStream<Bytes> for Bidi {
    type SendStream = SendHalf;
    type RecvStream = Recv<h3_quinn::RecvStream>;

    fn split(self) -> (Self::SendStream, Self::RecvStream) {
        (self.send, self.recv)
    }
}

/// A request stream's send half; gone once a refused head has been answered or reset.
pub struct SendHalf {
    id: StreamId,
    inner: Option<h3_quinn::SendStream<Bytes>>,
}

impl SendHalf {
    fn get(&mut self) -> Result<&mut h3_quinn::SendStream<Bytes>, StreamErrorIncoming> {
        self.inner
            .as_mut()
            .ok_or_else(|| StreamErrorIncoming::Unknown(Box::new(Refused(Verdict::FrameTooLarge))))
    }
}

impl quic::SendStream<Bytes> for SendHalf {
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), StreamErrorIncoming>> {
        self.get()?.poll_ready(cx)
    }
    fn send_data<T: Into<WriteBuf<Bytes>>>(&mut self, data: T) -> Result<(), StreamErrorIncoming> {
        self.get()?.send_data(data)
    }
    fn poll_finish(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), StreamErrorIncoming>> {
        self.get()?.poll_finish(cx)
    }
    fn reset(&mut self, reset_code: u64) {
        if let Some(s) = self.inner.as_mut() {
            quic::SendStream::<Bytes>::reset(s, reset_code)
        }
    }
    fn send_id(&self) -> StreamId {
        self.id
    }
}

/// Longest the 431 answer to an oversized head may take to be written.
const ANSWER_TIME: Duration = Duration::from_secs(1);

async fn answer_431(mut send: h3_quinn::SendStream<Bytes>) {
    let written = tokio::time::timeout(ANSWER_TIME, async {
        let mut buf = RESPONSE_431;
        while buf.has_remaining() {
            let n = std::future::poll_fn(|cx| {
                quic::SendStreamUnframed::<Bytes>::poll_send(&mut send, cx, &mut buf)
            })
            .await?;
            if n == 0 {
                break;
            }
        }
        std::future::poll_fn(|cx| quic::SendStream::<Bytes>::poll_finish(&mut send, cx)).await
    })
    .await;
    if !matches!(written, Ok(Ok(()))) {
        quic::SendStream::<Bytes>::reset(&mut send, H3_EXCESSIVE_LOAD);
    }
}
