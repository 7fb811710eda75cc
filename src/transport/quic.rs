//! QUIC front door: a quinn endpoint on a tuned UDP socket ([`super::udp`]; GSO on by
//! default in quinn-udp), HTTP/3 through h3 + h3-quinn.
//!
//! Connections beyond the shared cap are refused at the `Incoming` stage. Handshakes without
//! SNI are accepted (one certificate for every name). On shutdown each connection sends a
//! GOAWAY and keeps serving its in-flight requests; after the grace period the endpoint
//! closes with H3_NO_ERROR.
//!
//! 0-RTT (`[server] zero_rtt`, on by default): connections are accepted with 0.5-RTT
//! (`into_0rtt`), so requests sent in early data are read before the handshake completes.
//! Each request's [`Ctx::handshake`] tells the core when it does, or drops without telling
//! when the connection is lost first; the core serves safe methods at once and holds the
//! others until then (see [`crate::core::Core::handle`]). What early data a held request can
//! carry is bounded by flow control: nothing of its body is read while it is held, so the
//! client can send no more than the stream and connection receive windows it remembers from
//! the earlier connection (`stream_receive_window`, `receive_window` below), and no more
//! streams than `max_concurrent_bidi_streams`.

use super::quic_info::QuicSource;
use super::{shutdown_signalled, Protocol, Shared};
use crate::core::body::{Body, BodyError, BodyStream};
use crate::core::readings::Probe;
use crate::core::Ctx;
use bytes::{Buf, Bytes};
use futures_util::StreamExt;
use h3::server::RequestResolver;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// HTTP/3's "no error" code, for closing connections cleanly.
const H3_NO_ERROR: u32 = 0x100;
/// Closes a connection whose handshake did not complete in time (nothing of it was served).
const H3_REQUEST_REJECTED: u32 = 0x10b;

/// A quinn runtime whose drivers (the endpoint's and every connection's) run on a runtime
/// of their own, `[performance] quic_threads` threads (1 by default), where [`run`] also
/// serves the HTTP/3 requests (not the connections: see below).
///
/// Why apart from the TCP runtime: quinn hands received datagrams to a connection through
/// an unbounded channel. When the connection's driver is starved of CPU by request handlers
/// on the same workers, that queue grows without bound (measured: 780 MB for one fast 1 GiB
/// upload with 32 KB buffers; quinn-rs/quinn#599). On a runtime of its own the driver keeps
/// up, acknowledges, and flow control bounds the memory again. (What remained after that,
/// h3's own receive buffer growing past flow control under a fast upload, hyperium/h3#308,
/// is bounded by the guard in [`super::h3_guard`].)
///
/// Why the requests run there too: a request handler and its connection's driver wake each
/// other for every piece of stream data (data readable; window or send buffer freed). With
/// the handlers on the TCP runtime each of those wake-ups crossed threads (a futex wake and
/// a context switch: `finish_task_switch` and the scheduler's spin unlocks were 21% of an
/// h3 upload's profile); on the driver's thread the woken task runs next. Measured with
/// `WORKLOADS="put-h3 get-h3" PUT_MB=512 bash benches/profile.sh`, two runs each: a 512 MiB
/// PUT 6.0-6.6 -> 3.5-3.9 server CPU-s per GiB and 3.5-4.2 s -> 2.2-2.5 s, a 256 MiB GET
/// 4.3-4.9 -> 2.6-2.8 CPU-s per GiB; peak RSS of a 1 GiB h3 upload unchanged (22 MiB). Two
/// threads instead of one were slower on 2 cores (GET 3.6 CPU-s per GiB: tasks stolen
/// between the two threads wake across them again).
///
/// Why the connections do not: everything a connection does before and between requests
/// (waiting for its handshake, h3's SETTINGS and control streams, the handshake watch) is
/// what a flood of half-open handshakes multiplies, and on the one driver thread it took
/// the CPU the endpoint needs to drain the UDP socket. Under interop/hostile quic-initials
/// the socket's receive-buffer drops (`RcvbufErrors`) went from 440-2,300 per run to
/// 9,200-16,800 with the connections there, and one good client's dropped Initial waited
/// out its 1 s retransmission (the failed CI run after the change).
#[derive(Debug)]
pub struct QuicRuntime(pub tokio::runtime::Handle);

impl quinn::Runtime for QuicRuntime {
    fn new_timer(&self, t: std::time::Instant) -> std::pin::Pin<Box<dyn quinn::AsyncTimer>> {
        let _entered = self.0.enter();
        Box::pin(tokio::time::sleep_until(t.into()))
    }

    fn spawn(&self, future: std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>) {
        self.0.spawn(future);
    }

    fn wrap_udp_socket(
        &self,
        sock: std::net::UdpSocket,
    ) -> std::io::Result<Arc<dyn quinn::AsyncUdpSocket>> {
        let _entered = self.0.enter();
        quinn::Runtime::wrap_udp_socket(&quinn::TokioRuntime, sock)
    }

    fn now(&self) -> std::time::Instant {
        std::time::Instant::now()
    }
}

/// Builds the quinn endpoint on `socket`; its drivers run on `drivers`.
pub fn endpoint(
    socket: std::net::UdpSocket,
    rustls_config: rustls::ServerConfig,
    idle_timeout: Duration,
    multiplexing: bool,
    congestion: super::congestion::Congestion,
    drivers: tokio::runtime::Handle,
) -> anyhow::Result<quinn::Endpoint> {
    let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(rustls_config)?;
    let mut server_config = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    let mut transport = quinn::TransportConfig::default();
    transport
        .max_concurrent_bidi_streams(if multiplexing { 256u32 } else { 1 }.into())
        .max_concurrent_uni_streams(16u32.into())
        .stream_receive_window((4u32 << 20).into())
        .receive_window((12u32 << 20).into())
        .send_window(32 << 20)
        .max_idle_timeout(Some(idle_timeout.try_into()?));
    congestion.apply(&mut transport);
    server_config.transport_config(Arc::new(transport));
    server_config.migration(true);
    let endpoint = quinn::Endpoint::new(
        quinn::EndpointConfig::default(),
        Some(server_config),
        socket,
        Arc::new(QuicRuntime(drivers)),
    )?;
    Ok(endpoint)
}

/// Accepts connections until shutdown; then waits up to `grace` for them to finish. Each
/// connection's requests are served on `drivers`, the runtime its quinn driver runs on
/// (see [`QuicRuntime`]); the connections themselves on the runtime this runs on.
pub async fn run(
    endpoint: quinn::Endpoint,
    shared: Shared,
    grace: Duration,
    drivers: tokio::runtime::Handle,
) {
    let mut shutdown = shared.shutdown.clone();
    let mut tasks = tokio::task::JoinSet::new();
    // The cap: the slots free before QUIC took any (TCP may hold a few at this instant).
    let cap = shared.connections.available_permits();
    loop {
        let incoming = tokio::select! {
            i = endpoint.accept() => match i { Some(i) => i, None => break },
            _ = shutdown_signalled(&mut shutdown) => break,
        };
        if !incoming.remote_address_validated()
            && incoming.may_retry()
            && super::slots::quic_needs_retry(shared.connections.available_permits(), cap)
        {
            if let Err(e) = incoming.retry() {
                e.into_incoming().ignore();
            }
            continue;
        }
        let Ok(permit) = shared.connections.clone().try_acquire_owned() else {
            tracing::warn!(peer = %incoming.remote_address(), "connection cap reached; refusing QUIC connection");
            incoming.refuse();
            continue;
        };
        let shared = shared.clone();
        let drivers = drivers.clone();
        tasks.spawn(async move {
            let peer = incoming.remote_address();
            let mut connecting = match incoming.accept() {
                Ok(c) => c,
                Err(e) => {
                    tracing::debug!(%peer, error = %e, "QUIC connection refused");
                    return;
                }
            };
            let early = if shared.limits.zero_rtt {
                // Wait (locally, no round trip) until the client's Initial has been read:
                // only then does quinn know the client's stream limits. A 0.5-RTT connection
                // taken earlier opens h3's control and QPACK streams against a limit of zero,
                // and quinn-proto 0.11 raises the limit from the transport parameters without
                // waking the waiting `open_uni` (`StreamsState::set_params` pushes no
                // `StreamEvent::Available`): the SETTINGS are never sent and no request is
                // ever answered. That was the pycurl HTTP/3 request hanging until its timeout
                // with 0-RTT on (tests/zero_rtt.rs; quinn alone: tests/quinn_upstream.rs).
                let deadline = shared.limits.header_read_timeout;
                match tokio::time::timeout(deadline, connecting.handshake_data()).await {
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => {
                        tracing::debug!(%peer, error = %e, "QUIC handshake failed");
                        return;
                    }
                    Err(_) => {
                        tracing::debug!(%peer, "no complete ClientHello in time; dropped");
                        return;
                    }
                }
                connecting.into_0rtt()
            } else {
                Err(connecting)
            };
            match early {
                Ok((conn, handshake)) => {
                    let (tx, confirmed) = tokio::sync::watch::channel(false);
                    let handshake = futures_util::FutureExt::shared(handshake);
                    let early = Early {
                        confirmed,
                        completed: handshake.clone(),
                        conn: conn.clone(),
                    };
                    let watched = conn.clone();
                    let deadline = shared.limits.header_read_timeout;
                    tokio::spawn(async move {
                        // On a server the future's value says nothing (quinn resolves it to
                        // false both when the handshake completes and when the connection is
                        // lost first), so the connection's state decides: only a live one has
                        // completed its handshake. A connection lost first (a replay never
                        // completes) drops `tx` unsent, and every held request is let go
                        // unprocessed.
                        //
                        // Bounded like a TLS handshake over TCP: a connection that sent
                        // early data but does not finish (a replay) is closed, and what it
                        // holds is let go, after `header_read_timeout` rather than idling on.
                        if tokio::time::timeout(deadline, handshake).await.is_err() {
                            watched.close(H3_REQUEST_REJECTED.into(), b"handshake timeout");
                        }
                        if watched.close_reason().is_none() {
                            let _ = tx.send(true);
                        } else {
                            tracing::debug!(%peer, "QUIC connection lost before its handshake completed");
                        }
                    });
                    serve_connection(conn, shared, Some(early), &drivers).await
                }
                Err(connecting) => match connecting.await {
                    Ok(conn) => serve_connection(conn, shared, None, &drivers).await,
                    Err(e) => tracing::debug!(%peer, error = %e, "QUIC handshake failed"),
                },
            }
            drop(permit);
        });
        while tasks.try_join_next().is_some() {}
    }
    endpoint.set_server_config(None);
    let drain = async { while tasks.join_next().await.is_some() {} };
    if tokio::time::timeout(grace, drain).await.is_err() {
        tracing::warn!("QUIC connections still open after the shutdown grace period; closing");
    }
    endpoint.close(H3_NO_ERROR.into(), b"shutdown");
    let _ = tokio::time::timeout(Duration::from_secs(1), endpoint.wait_idle()).await;
}

/// What a request on a connection accepted with 0-RTT needs to know about its handshake.
#[derive(Clone)]
struct Early {
    /// Becomes `true` once the handshake completed (dropped unsent if the connection is lost
    /// first); a held request waits on it.
    confirmed: tokio::sync::watch::Receiver<bool>,
    /// quinn's own signal, resolved in the same driver step that makes the first 1-RTT
    /// stream data readable: polled once when a request head has been read, it tells
    /// exactly whether that head could only have come from early data (`confirmed` is set
    /// by a task, a moment later).
    completed: futures_util::future::Shared<quinn::ZeroRttAccepted>,
    conn: quinn::Connection,
}

impl Early {
    /// For a request whose head has been read: `None` when the handshake had completed
    /// (so the request came in 1-RTT packets, which quinn processes only after it), the
    /// handshake watch when the request was read from early data.
    fn for_request(self) -> Option<tokio::sync::watch::Receiver<bool>> {
        let completed = futures_util::FutureExt::now_or_never(self.completed).is_some()
            && self.conn.close_reason().is_none();
        (!completed).then_some(self.confirmed)
    }
}

async fn serve_connection(
    conn: quinn::Connection,
    shared: Shared,
    handshake: Option<Early>,
    drivers: &tokio::runtime::Handle,
) {
    let peer = conn.remote_address();
    // Kept beside the h3 connection: h3-quinn hides it; its stats feed the readings.
    let quinn_conn = conn.clone();
    let _open = shared.metrics.connection(Protocol::H3);
    let probe = shared
        .limits
        .readings
        .then(|| Arc::new(Probe::new(Box::new(QuicSource(conn.clone())))));
    let bounds = super::h3_guard::Bounds {
        max_head: shared.limits.max_header_size,
        head_deadline: shared.limits.header_read_timeout,
    };
    let mut h3 = match h3::server::builder()
        .max_field_section_size(shared.limits.max_header_size)
        .build::<_, Bytes>(super::h3_guard::Conn::new(conn, bounds))
        .await
    {
        Ok(h) => h,
        Err(e) => {
            tracing::debug!(%peer, error = %e, "HTTP/3 setup failed");
            return;
        }
    };
    let mut shutdown = shared.shutdown.clone();
    let mut requests = tokio::task::JoinSet::new();
    let mut draining = false;
    loop {
        // After GOAWAY no new request can arrive, so once ours are done the connection is.
        // (h3's own `accept` would wait longer: a stream whose request it could not resolve,
        // such as a refused head, stays among the requests it waits for.)
        if draining && requests.is_empty() {
            break;
        }
        let next = tokio::select! {
            r = h3.accept() => r,
            _ = shutdown_signalled(&mut shutdown), if !draining => {
                draining = true;
                // GOAWAY: no new requests; in-flight ones continue.
                let _ = h3.shutdown(0).await;
                continue;
            }
            Some(_) = requests.join_next(), if draining => continue,
        };
        match next {
            Ok(Some(resolver)) => {
                let core = shared.core.clone();
                let stream = shared.metrics.stream(Protocol::H3);
                requests.spawn_on(
                    handle_request(
                        core,
                        resolver,
                        peer,
                        probe.clone(),
                        stream,
                        handshake.clone(),
                    ),
                    drivers,
                );
            }
            Ok(None) => break,
            Err(e) => {
                if !e.is_h3_no_error() {
                    tracing::debug!(%peer, error = %e, "HTTP/3 connection ended");
                }
                break;
            }
        }
        while requests.try_join_next().is_some() {}
    }
    while requests.join_next().await.is_some() {}
    if draining {
        // Finished responses may still sit in quinn's send buffers; closing now would cut
        // them off. Give the client a moment to read them and close first.
        let _ = tokio::time::timeout(DRAIN_LINGER, quinn_conn.closed()).await;
    }
    quinn_conn.close(H3_NO_ERROR.into(), b"");
}

/// How long a connection told to go away may linger for its last bytes to be delivered.
const DRAIN_LINGER: Duration = Duration::from_secs(2);

type Resolver = RequestResolver<super::h3_guard::Conn, Bytes>;

async fn handle_request(
    core: Arc<crate::core::Core>,
    resolver: Resolver,
    peer: SocketAddr,
    probe: Option<Arc<Probe>>,
    _stream: crate::metrics::Gauged,
    handshake: Option<Early>,
) {
    let (req, stream) = match resolver.resolve_request().await {
        Ok(x) => x,
        Err(e) => {
            tracing::debug!(error = %e, "bad HTTP/3 request");
            return;
        }
    };
    let (mut send, recv) = stream.split();
    let trailers: crate::core::body::Trailers = Default::default();
    let slot = trailers.clone();
    // The request half outlives the handler: dropped unread, quinn would send STOP_SENDING
    // while the response is still going out, and some clients then abandon the exchange.
    let recv = Arc::new(tokio::sync::Mutex::new(Some(recv)));
    let held = recv.clone();
    let body: BodyStream = Box::pin(futures_util::stream::unfold(
        Some((recv, slot)),
        |state| async move {
            let (shared, slot) = state?;
            let mut guard = shared.lock().await;
            let recv = guard.as_mut()?;
            match recv.recv_data().await {
                Ok(Some(mut buf)) => {
                    let bytes = buf.copy_to_bytes(buf.remaining());
                    drop(guard);
                    Some((Ok(bytes), Some((shared, slot))))
                }
                Ok(None) => match recv.recv_trailers().await {
                    Ok(t) => {
                        if let (Some(t), Ok(mut g)) = (t, slot.lock()) {
                            *g = Some(t);
                        }
                        None
                    }
                    Err(e) => Some((Err(BodyError(format!("h3 trailers: {e}"))), None)),
                },
                Err(e) => Some((Err(BodyError(format!("h3: {e}"))), None)),
            }
        },
    ));
    let (parts, _) = req.into_parts();
    // Informational responses (104) are sent on this stream while the core works.
    let (tx, mut rx) = tokio::sync::mpsc::channel::<http::Response<()>>(4);
    let mut ctx = Ctx::new(peer.ip(), Protocol::H3);
    ctx.interim = Some(tx);
    ctx.probe = probe;
    ctx.handshake = handshake.and_then(Early::for_request);
    ctx.trailers = Some(trailers);
    let handling = core.handle(parts, body, ctx);
    tokio::pin!(handling);
    let resp = loop {
        tokio::select! {
            r = &mut handling => break r,
            Some(interim) = rx.recv() => {
                if let Err(e) = send.send_response(interim).await {
                    tracing::debug!(error = %e, "sending an informational response failed");
                }
            }
        }
    };
    let (parts, body) = resp.into_parts();
    let drain = parts
        .extensions
        .get::<crate::core::DrainAfterResponse>()
        .is_some();
    if let Err(e) = send
        .send_response(http::Response::from_parts(parts, ()))
        .await
    {
        tracing::debug!(error = %e, "sending HTTP/3 response head failed");
        return;
    }
    let sent = match body {
        Body::Empty => Ok(()),
        Body::Full(b) => send.send_data(b).await,
        Body::Stream { mut stream, .. } => loop {
            match stream.next().await {
                Some(Ok(b)) => {
                    if let Err(e) = send.send_data(b).await {
                        break Err(e);
                    }
                }
                Some(Err(e)) => {
                    tracing::warn!(error = %e, "response body failed; resetting stream");
                    send.stop_stream(h3::error::Code::H3_INTERNAL_ERROR);
                    return;
                }
                None => break Ok(()),
            }
        },
    };
    let finished = match sent {
        Ok(()) => send.finish().await,
        Err(e) => Err(e),
    };
    if let Err(e) = finished {
        tracing::debug!(error = %e, "HTTP/3 response not completed");
    }
    // Read the request's end (a GET's FIN is already here) before letting it go; a refused
    // upload's rest is discarded for a while (see [`crate::core::DrainAfterResponse`]).
    // Whatever is still unread then is refused with STOP_SENDING(H3_NO_ERROR): the response
    // is complete (RFC 9114 section 4.1).
    let rest = held.lock().await.take();
    if let Some(mut r) = rest {
        let ended = if drain {
            drain_h3(&mut r).await
        } else {
            matches!(
                tokio::time::timeout(Duration::from_millis(50), r.recv_data()).await,
                Ok(Ok(None))
            )
        };
        if !ended {
            r.stop_sending(h3::error::Code::H3_NO_ERROR);
        }
    }
}

/// [`crate::core::drain`] for an HTTP/3 request body; true when it ended in time.
async fn drain_h3(r: &mut h3::server::RequestStream<H3Recv, Bytes>) -> bool {
    let mut seen = 0u64;
    tokio::time::timeout(crate::core::DRAIN_TIME, async {
        loop {
            match r.recv_data().await {
                Ok(Some(mut b)) => {
                    seen += b.remaining() as u64;
                    b.advance(b.remaining());
                    if seen > crate::core::DRAIN_LIMIT {
                        return false;
                    }
                }
                Ok(None) => return true,
                Err(_) => return false,
            }
        }
    })
    .await
    .unwrap_or(false)
}

type H3Recv = super::h3_guard::Recv<h3_quinn::RecvStream>;
