//! TCP front door: TLS with ALPN (h2, http/1.1) or plaintext (HTTP/1.1 + h2c), served by
//! hyper's auto builder.
//!
//! Accept loop: accept, then take a connection permit (the cap is shared with QUIC); at the
//! cap, close the idlest keep-alive connection and take its permit or, if all are busy, close
//! the new one at once (see [`super::slots`]); the loop never waits for a slot. Back off exponentially on accept errors (e.g.
//! EMFILE), stop accepting on shutdown and let hyper's graceful shutdown finish in-flight
//! requests. Each connection has a TLS handshake deadline, hyper's header-read timeout (an
//! HTTP/2 connection: its first request head within the same time) and an idle watchdog.

use super::batch::{Batch, Rounds};
use super::idle::{Activity, IdleIo};
use super::linger::Linger;
use super::slots::{Busy, Registration, Registry};
use super::tcp_info::TcpSource;
use super::{shutdown_signalled, Protocol, Shared};
use crate::core::body::{Body, BodyError};
type CoreBody = crate::core::body::BodyStream;
use crate::core::readings::Probe;
use crate::core::Ctx;
use bytes::Bytes;
use futures_util::TryStreamExt;
use http::{HeaderValue, Request, Response};
use http_body_util::{combinators::UnsyncBoxBody, BodyExt, BodyStream, Empty, Full};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;

/// The body type handed to hyper.
pub type HyperBody = UnsyncBoxBody<Bytes, BodyError>;

/// HTTP/2 streams per connection, and response bytes h2 may buffer per stream. A client that
/// opens streams and never reads makes the server hold up to their product per connection
/// (plus one read chunk per stream): with 256 streams of 1 MiB, 200 unread downloads on one
/// connection held 243 MB (interop/hostile never-read). 128 x 256 KiB is 32 MiB at most;
/// RFC 9113 section 6.5.2 asks for no fewer than 100 streams.
const H2_STREAMS: u32 = 128;
const H2_SEND_BUF: usize = 256 << 10;

/// Length of the kernel's queue of connections not yet accepted (Linux clamps it to
/// `net.core.somaxconn`, 4096 by default). tokio's `TcpListener::bind` asks for 1024; a
/// connect flood that outruns the accept loop overflows the queue and a well-behaved
/// client's dropped SYN costs it the 1 s retransmission timeout.
pub const LISTEN_BACKLOG: u32 = 4096;

/// A listening TCP socket on `addr` with [`LISTEN_BACKLOG`] (and `SO_REUSEADDR`, as
/// `TcpListener::bind` sets).
pub fn listen(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// Serves `listener` until shutdown, then waits up to `grace` for connections to finish.
pub async fn run(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    alt_svc: Option<HeaderValue>,
    shared: Shared,
    grace: Duration,
) {
    let graceful = GracefulShutdown::new();
    let mut shutdown = shared.shutdown.clone();
    let mut backoff = Duration::from_millis(5);
    let registry = Registry::new();
    loop {
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => { backoff = Duration::from_millis(5); x }
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed; backing off {:?}", backoff);
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                    continue;
                }
            },
            _ = shutdown_signalled(&mut shutdown) => break,
        };
        let permit = match shared.connections.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(tokio::sync::TryAcquireError::Closed) => break,
            // At the cap: the idlest connection's slot, handed over without waiting for it
            // to close (super::slots, rule 2).
            Err(tokio::sync::TryAcquireError::NoPermits) => match registry.shed_idlest() {
                Some(p) => p,
                None => {
                    tracing::debug!(%peer, "connection cap reached and no connection idle; closing the new one");
                    drop(stream);
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let watcher = graceful.watcher();
        let tls = tls.clone();
        let alt_svc = alt_svc.clone();
        let shared = shared.clone();
        let slot = registry.register(Activity::new(), permit);
        tokio::spawn(async move {
            serve_connection(stream, peer, tls, alt_svc, &shared, watcher, slot).await;
        });
    }
    drop(listener);
    if tokio::time::timeout(grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("TCP connections still open after the shutdown grace period; closing");
    }
}

async fn serve_connection(
    stream: TcpStream,
    peer: SocketAddr,
    tls: Option<TlsAcceptor>,
    alt_svc: Option<HeaderValue>,
    shared: &Shared,
    watcher: hyper_util::server::graceful::Watcher,
    slot: Registration,
) {
    let limits = shared.limits;
    let activity = slot.activity();
    let core = shared.core.clone();
    let in_flight = slot.counter();
    // The probe (its own duplicate of the socket) is made at the first request: a
    // connection that never sends one holds one descriptor, not two (10,000 idle TLS
    // connections once ran into a 20,000 RLIMIT_NOFILE).
    let socket = stream.as_raw_fd();
    let probe_cell = limits
        .readings
        .then(Arc::<std::sync::OnceLock<Option<Arc<Probe>>>>::default);
    let metrics = shared.metrics.clone();
    let started = Arc::new(AtomicBool::new(false));
    let any_request = started.clone();
    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
        any_request.store(true, Ordering::Relaxed);
        let core = core.clone();
        let alt_svc = alt_svc.clone();
        let probe = probe_cell
            .as_ref()
            .and_then(|cell| cell.get_or_init(|| duplicate_probe(socket)).clone());
        let metrics = metrics.clone();
        let busy = Busy::new(in_flight.clone());
        async move { Ok::<_, Infallible>(handle(core, req, peer, alt_svc, probe, metrics, busy).await) }
    });
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        // hyper's read buffer grows to this; 128 KiB keeps uploads fast and memory per
        // connection small (the default allows about 400 KiB).
        .max_buf_size(128 << 10)
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(if limits.multiplexing { H2_STREAMS } else { 1 })
        .initial_stream_window_size(4 << 20)
        .initial_connection_window_size(16 << 20)
        .max_send_buf_size(H2_SEND_BUF)
        .max_header_list_size(u32::try_from(limits.max_header_size).unwrap_or(u32::MAX))
        .keep_alive_interval(Duration::from_secs(30));
    let result = match tls {
        Some(acceptor) => {
            // Bytes count as activity from the first one, the handshake's included, so that
            // shedding tells a client mid-handshake from one that never spoke.
            let rounds = Rounds::new();
            let stream = Batch::new(IdleIo::new(stream, activity.clone()), rounds.clone());
            let handshake =
                tokio::time::timeout(limits.header_read_timeout, acceptor.accept(stream));
            let handshake = tokio::select! {
                r = handshake => r,
                _ = slot.shed() => {
                    tracing::debug!(%peer, "closing a connection still in its TLS handshake to make room");
                    return;
                }
            };
            let tls_stream = match handshake {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%peer, "TLS handshake timed out");
                    return;
                }
            };
            let protocol = match tls_stream.get_ref().1.alpn_protocol() {
                Some(b"h2") => Protocol::H2,
                _ => Protocol::H1,
            };
            if protocol == Protocol::H2 && limits.multiplexing {
                rounds.enable();
            }
            let _open = shared.metrics.connection(protocol);
            let io = TokioIo::new(Linger::new(tls_stream));
            let conn = rounds.drive(watcher.watch(builder.serve_connection(io, service)));
            tokio::select! {
                r = conn => r,
                _ = activity.expired(limits.idle_timeout) => {
                    tracing::debug!(%peer, "closing idle connection");
                    Ok(())
                }
                _ = slot.shed() => {
                    tracing::debug!(%peer, "closing idle connection to make room for a new one");
                    Ok(())
                }
                _ = no_first_request(protocol, limits.header_read_timeout, &started) => {
                    tracing::debug!(%peer, "closing an HTTP/2 connection that sent no request head in time");
                    Ok(())
                }
            }
        }
        None => {
            // Plaintext: prior-knowledge h2c is rare behind a proxy; counted as h1.
            let _open = shared.metrics.connection(Protocol::H1);
            let io = TokioIo::new(Linger::new(IdleIo::new(stream, activity.clone())));
            let conn = watcher.watch(builder.serve_connection(io, service));
            tokio::select! {
                r = conn => r,
                _ = activity.expired(limits.idle_timeout) => Ok(()),
                _ = slot.shed() => Ok(()),
            }
        }
    };
    if let Err(e) = result {
        tracing::debug!(%peer, error = %e, "connection ended with an error");
    }
}

/// A connection probe reading `TCP_INFO` through its own duplicate of `socket` (see
/// [`TcpSource`]); `None` when the descriptor cannot be duplicated (EMFILE).
///
/// Called only from the connection's service, which hyper calls while it owns the
/// connection's I/O: `socket` is then open and is this connection's.
fn duplicate_probe(socket: std::os::fd::RawFd) -> Option<Arc<Probe>> {
    // SAFETY: see above: the descriptor is open for the duration of this call, which only
    // borrows it to duplicate it.
    let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(socket) };
    let dup = fd.try_clone_to_owned().ok()?;
    Some(Arc::new(Probe::new(Box::new(TcpSource::new(dup)))))
}

/// Resolves when an HTTP/2 connection has not completed its first request head within
/// `limit` of its TLS handshake; never for HTTP/1.1, where hyper's `header_read_timeout`
/// covers every head. hyper has no head timeout for HTTP/2, so a client dripping a HEADERS
/// frame (or only SETTINGS and PINGs) held its connection, and its slot, for as long as it
/// kept moving bytes (the idle watchdog counts bytes).
async fn no_first_request(protocol: Protocol, limit: Duration, started: &AtomicBool) {
    if protocol == Protocol::H2 {
        tokio::time::sleep(limit).await;
        if !started.load(Ordering::Relaxed) {
            return;
        }
    }
    std::future::pending::<()>().await
}

async fn handle(
    core: Arc<crate::core::Core>,
    req: Request<Incoming>,
    peer: SocketAddr,
    alt_svc: Option<HeaderValue>,
    probe: Option<Arc<Probe>>,
    metrics: Arc<crate::metrics::Metrics>,
    busy: Busy,
) -> Response<HyperBody> {
    let protocol = if req.version() == http::Version::HTTP_2 {
        Protocol::H2
    } else {
        Protocol::H1
    };
    let _stream = metrics.stream(protocol);
    // A GET or HEAD whose request has ended has nothing to commit when cut short: it is
    // handled in this task, without a task of its own (a spawn and a wake-up per request).
    let inline = matches!(*req.method(), http::Method::GET | http::Method::HEAD)
        && hyper::body::Body::is_end_stream(req.body());
    let (parts, incoming) = req.into_parts();
    let trailers: crate::core::body::Trailers = Default::default();
    let slot = trailers.clone();
    let (keep_tx, keep_rx) = tokio::sync::oneshot::channel();
    let body: CoreBody = Box::pin(
        TryStreamExt::map_err(BodyStream::new(incoming), move |e| {
            BodyError(format!("{}: {e}", protocol.label()))
        })
        .try_filter_map(move |frame| {
            let data = match frame.into_data() {
                Ok(d) => Some(d),
                Err(frame) => {
                    if let (Ok(t), Ok(mut g)) = (frame.into_trailers(), slot.lock()) {
                        *g = Some(t);
                    }
                    None
                }
            };
            futures_util::future::ready(Ok(data))
        }),
    );
    let body: CoreBody = Box::pin(Kept::new(body, keep_tx));
    // Spawned (unless `inline`), so that a client resetting its stream (hyper then drops
    // this future) does not cancel the handler half-way: it sees the body end with an error and commits
    // what arrived, as on the other transports.
    let mut ctx = Ctx::new(peer.ip(), protocol);
    ctx.probe = probe;
    ctx.trailers = Some(trailers);
    // (Inline, a panic is caught as the spawned task's would be. Boxed: the handler's future
    // is about 11 KiB, which hyper's stream task and tokio's task cell each copied by value.)
    let resp = if inline {
        let handling = std::panic::AssertUnwindSafe(Box::pin(core.handle(parts, body, ctx)));
        futures_util::FutureExt::catch_unwind(handling)
            .await
            .map_err(|_| "panicked".to_string())
    } else {
        tokio::spawn(async move { core.handle(parts, body, ctx).await })
            .await
            .map_err(|e| e.to_string())
    };
    let resp = match resp {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(error = %e, "request handler failed");
            let err =
                crate::core::error::CoreError::Storage(std::io::Error::other("handler failed"));
            crate::core::response::error(&err, http::StatusCode::INTERNAL_SERVER_ERROR)
        }
    };
    let (mut parts, body) = resp.into_parts();
    if let Some(v) = alt_svc {
        parts.headers.insert(http::header::ALT_SVC, v);
    }
    // What the handler left unread of the request body lives until the response is sent.
    // (The handler has returned, so the body has been handed back unless it lives on.)
    let mut keep_rx = keep_rx;
    let unread = keep_rx.try_recv().ok().and_then(unless_ended);
    let drain = parts
        .extensions
        .get::<crate::core::DrainAfterResponse>()
        .is_some();
    let body = if drain && unread.is_some() && protocol == Protocol::H2 {
        headers_only(&mut parts.headers)
    } else {
        body
    };
    let body = Holding {
        inner: to_hyper(body),
        unread,
        drain,
        _busy: busy,
    };
    Response::from_parts(parts, BodyExt::boxed_unsync(body))
}

/// The unread rest of a request body, unless it has already ended: what has arrived of it
/// (at most [`SETTLE_LIMIT`] bytes) is read and discarded without waiting. `None`: the
/// client has sent its whole request, so there is nothing to drain and no reset to come.
fn unless_ended(mut body: CoreBody) -> Option<CoreBody> {
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    let mut seen = 0usize;
    while seen <= SETTLE_LIMIT {
        match body.as_mut().poll_next(&mut cx) {
            std::task::Poll::Ready(None) => return None,
            std::task::Poll::Ready(Some(Ok(chunk))) => seen += chunk.len(),
            std::task::Poll::Ready(Some(Err(_))) => return None,
            std::task::Poll::Pending => break,
        }
    }
    Some(body)
}

/// Most bytes [`unless_ended`] reads to find a body's end.
const SETTLE_LIMIT: usize = 1 << 20;

/// An HTTP/2 upload refused while its client is still sending is answered with one HEADERS
/// frame carrying END_STREAM: the status and the `xferd-error` code, no body.
///
/// Why: curl 7.88 (nghttp2), on seeing a status of 300 or more while uploading, stops with an
/// early END_STREAM, a request shorter than its Content-Length. The h2 crate rightly answers
/// that malformed request with RST_STREAM(PROTOCOL_ERROR) (RFC 9113 section 8.1.1), which
/// drops whatever of the response is still queued. A response body goes out as DATA after
/// the HEADERS, from another task; when that task ran late (a loaded machine: 9 ms between
/// the two frames was seen), curl's END_STREAM came first, the JSON body was dropped, and curl
/// failed with error 92 ("stream was not closed cleanly: PROTOCOL_ERROR") instead of
/// reporting the status. A response that is a single frame is complete before the client can
/// react to it.
fn headers_only(headers: &mut http::HeaderMap) -> Body {
    headers.remove(http::header::CONTENT_TYPE);
    headers.remove(http::header::CONTENT_LENGTH);
    Body::Empty
}

/// A request body that, when the handler lets go of it, is handed back (through `back`)
/// instead of being dropped.
///
/// Why: dropping a request body whose client is still sending makes HTTP/2 reset the
/// stream. Before the response is complete that reset is RST_STREAM(CANCEL), and clients
/// (curl 7.88, for one) then discard the response: a refused 50 MB upload showed curl error
/// 92 and no status. Kept until the response body has been sent (see [`Holding`]), then
/// drained for a while if the core asks for it ([`crate::core::DrainAfterResponse`]: curl
/// 7.88 also fails on an immediate reset while it still sends), its drop becomes
/// RST_STREAM(NO_ERROR) after the response, which RFC 9113 section 8.1 defines for exactly
/// this: "stop sending, the response is complete". HTTP/1.1 closes the connection after
/// such a response unless the body ended during the drain.
struct Kept {
    inner: Option<CoreBody>,
    back: Option<tokio::sync::oneshot::Sender<CoreBody>>,
}

impl Kept {
    fn new(inner: CoreBody, back: tokio::sync::oneshot::Sender<CoreBody>) -> Kept {
        Kept {
            inner: Some(inner),
            back: Some(back),
        }
    }
}

impl futures_util::Stream for Kept {
    type Item = Result<Bytes, BodyError>;
    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        match self.inner.as_mut() {
            Some(s) => s.as_mut().poll_next(cx),
            None => std::task::Poll::Ready(None),
        }
    }
}

impl Drop for Kept {
    fn drop(&mut self) {
        // A body that has ended is handed back too: `unless_ended` sees its end at once.
        if let (Some(body), Some(back)) = (self.inner.take(), self.back.take()) {
            // The receiver may be gone (the request was abandoned): then it drops here.
            let _ = back.send(body);
        }
    }
}

/// A response body that keeps the request's unread body alive until it is dropped itself,
/// which hyper does once the response has been sent (or abandoned). Then the unread body is
/// drained if the core asked for it ([`crate::core::DrainAfterResponse`]) and let go.
struct Holding {
    inner: HyperBody,
    unread: Option<CoreBody>,
    drain: bool,
    /// The request counts as in flight until its response is sent.
    _busy: Busy,
}

impl Drop for Holding {
    fn drop(&mut self) {
        let Some(mut unread) = self.unread.take() else {
            return;
        };
        if !self.drain {
            return;
        }
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                crate::core::drain(&mut unread).await;
            });
        }
    }
}

impl hyper::body::Body for Holding {
    type Data = Bytes;
    type Error = BodyError;
    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        std::pin::Pin::new(&mut self.inner).poll_frame(cx)
    }
    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }
    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

fn to_hyper(body: Body) -> HyperBody {
    match body {
        Body::Empty => Empty::new().map_err(|never| match never {}).boxed_unsync(),
        Body::Full(b) => Full::new(b).map_err(|never| match never {}).boxed_unsync(),
        Body::Stream { stream, len } => BodyExt::boxed_unsync(Measured { stream, left: len }),
    }
}

/// A streamed response body of known length. hyper is told the length and, once `left`
/// reaches zero, that the body has ended: HTTP/2 then sets END_STREAM on the last DATA
/// frame instead of sending an empty DATA frame after it (one frame and one write fewer
/// per response), and HTTP/1.1 ends the message without polling the stream again.
struct Measured {
    stream: CoreBody,
    left: u64,
}

impl hyper::body::Body for Measured {
    type Data = Bytes;
    type Error = BodyError;
    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let polled = self.stream.as_mut().poll_next(cx);
        if let std::task::Poll::Ready(Some(Ok(chunk))) = &polled {
            self.left = self.left.saturating_sub(chunk.len() as u64);
        }
        polled.map(|item| item.map(|r| r.map(Frame::data)))
    }
    fn is_end_stream(&self) -> bool {
        self.left == 0
    }
    fn size_hint(&self) -> hyper::body::SizeHint {
        hyper::body::SizeHint::with_exact(self.left)
    }
}

/// Serves `GET /metrics` (plaintext HTTP/1.1) on a separate listener until shutdown.
pub async fn serve_metrics(
    listener: TcpListener,
    metrics: Arc<crate::metrics::Metrics>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    use crate::core::Telemetry;
    loop {
        let (stream, _) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(error = %e, "metrics listener accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = shutdown_signalled(&mut shutdown) => return,
        };
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                let metrics = metrics.clone();
                async move {
                    let resp = if req.uri().path() == "/metrics" {
                        let text = metrics.render().unwrap_or_default();
                        Response::builder()
                            .header(
                                http::header::CONTENT_TYPE,
                                "text/plain; version=0.0.4; charset=utf-8",
                            )
                            .body(Full::new(Bytes::from(text)))
                    } else {
                        Response::builder()
                            .status(http::StatusCode::NOT_FOUND)
                            .body(Full::new(Bytes::from_static(b"not found\n")))
                    };
                    Ok::<_, Infallible>(resp.unwrap_or_default())
                }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(Duration::from_secs(10))
                .serve_connection(TokioIo::new(stream), service);
            let _ = tokio::time::timeout(Duration::from_secs(60), conn).await;
        });
    }
}
