//! A small HTTP client over HTTP/1.1, HTTP/2 (hyper + rustls) and HTTP/3 (quinn + h3), with
//! streamed request and response bodies. The end-to-end tests drive the server with it, and
//! it is the base of xferd's own upload/download client.

pub mod chunked;
pub mod download;
pub mod migrate;
pub mod retry;
pub mod trust;
pub mod upload;

use crate::core::body::{BodyError, BodyStream};
use bytes::{Buf, Bytes};
use futures_util::{StreamExt, TryStreamExt};
use http::{HeaderMap, Request, StatusCode, Version};
use http_body_util::{combinators::UnsyncBoxBody, BodyDataStream, BodyExt, Empty, StreamBody};
use hyper::body::Frame;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::{CertificateDer, ServerName};
use std::net::SocketAddr;
use std::sync::Arc;

/// HTTP version to speak (the core's protocol labels: h1, h2, h3).
pub use crate::core::Protocol as Proto;

/// A response with a streamed body.
pub struct ClientResponse {
    /// Informational (1xx) responses received before the final one (HTTP/3 only).
    pub interim: Vec<(StatusCode, HeaderMap)>,
    pub status: StatusCode,
    pub version: Version,
    pub headers: HeaderMap,
    pub body: BodyStream,
}

impl ClientResponse {
    /// Reads the whole body into memory (for small bodies).
    pub async fn bytes(self) -> anyhow::Result<Bytes> {
        let chunks: Vec<Bytes> = self.body.try_collect().await.map_err(anyhow::Error::msg)?;
        Ok(Bytes::from(chunks.concat()))
    }
}

type ReqBody = UnsyncBoxBody<Bytes, BodyError>;

enum Conn {
    /// HTTP/1.1 carries one request at a time.
    H1(tokio::sync::Mutex<hyper::client::conn::http1::SendRequest<ReqBody>>),
    H2(hyper::client::conn::http2::SendRequest<ReqBody>),
    H3 {
        send: h3::client::SendRequest<h3_quinn::OpenStreams, Bytes>,
        conn: quinn::Connection,
        _endpoint: quinn::Endpoint,
        /// 0-RTT connections: becomes true when the handshake completes. Until then only
        /// safe requests (GET, HEAD, OPTIONS) go out in early data; others wait (RFC 8470).
        handshake: Option<tokio::sync::watch::Receiver<bool>>,
        /// Send every request at once, early data or not (tests, benches/zerortt.sh).
        unsafe_early: std::sync::atomic::AtomicBool,
    },
}

/// One connection to a server.
pub struct Client {
    conn: Conn,
    authority: String,
    proto: Proto,
    /// HTTP/3 only: the connection was resumed and may send requests in 0-RTT early data.
    pub zero_rtt: bool,
}

/// QUIC congestion control of the client (the sender of an upload); BBR by default.
pub use crate::transport::congestion::Congestion;

/// The `User-Agent` of every request this client sends (unless the request has its own).
pub const USER_AGENT: &str = concat!("xferd/", env!("CARGO_PKG_VERSION"));

/// The client's congestion control unless told otherwise: uploads over lossy radio links.
pub const DEFAULT_CONGESTION: Congestion = Congestion::Bbr;

/// What HTTP/3 reconnections share: one endpoint and one TLS config, so that the session
/// tickets of earlier connections allow 0-RTT resumption.
pub struct H3Context {
    endpoint: quinn::Endpoint,
    config: quinn::ClientConfig,
    /// Moves the endpoint to a new socket when the local address changes.
    watcher: Option<migrate::Watcher>,
}

impl H3Context {
    pub fn new(
        trust: &trust::Trust,
        ipv6: bool,
        congestion: Congestion,
    ) -> anyhow::Result<H3Context> {
        let cfg = trust.client_config(&[b"h3"])?;
        let quic_cfg = quinn::crypto::rustls::QuicClientConfig::try_from(cfg)?;
        let mut client_cfg = quinn::ClientConfig::new(Arc::new(quic_cfg));
        let mut transport = quinn::TransportConfig::default();
        transport
            .stream_receive_window((8u32 << 20).into())
            .receive_window((32u32 << 20).into())
            .send_window(32 << 20);
        congestion.apply(&mut transport);
        client_cfg.transport_config(Arc::new(transport));
        let bind: SocketAddr = if ipv6 {
            "[::]:0".parse()?
        } else {
            "0.0.0.0:0".parse()?
        };
        let endpoint = quinn::Endpoint::client(bind)?;
        Ok(H3Context {
            endpoint,
            config: client_cfg,
            watcher: None,
        })
    }

    /// The endpoint (e.g. to `rebind` it to a new local address: connection migration).
    pub fn endpoint(&self) -> &quinn::Endpoint {
        &self.endpoint
    }
}

/// A rustls client config trusting exactly `roots`, with the given ALPN.
pub fn tls_config(
    roots: &[CertificateDer<'static>],
    alpn: &[&[u8]],
) -> anyhow::Result<rustls::ClientConfig> {
    trust::Trust::Roots(roots.to_vec()).client_config(alpn)
}

impl Client {
    /// Connects to `addr` with TLS, verifying the server as `server_name` against `roots`.
    pub async fn connect(
        proto: Proto,
        addr: SocketAddr,
        server_name: &str,
        roots: &[CertificateDer<'static>],
    ) -> anyhow::Result<Client> {
        Self::connect_with(
            proto,
            addr,
            server_name,
            &trust::Trust::Roots(roots.to_vec()),
        )
        .await
    }

    /// Connects to `addr` with TLS, verifying the server as `server_name` per `trust`.
    pub async fn connect_with(
        proto: Proto,
        addr: SocketAddr,
        server_name: &str,
        trust: &trust::Trust,
    ) -> anyhow::Result<Client> {
        let authority = format!("{server_name}:{}", addr.port());
        let conn = match proto {
            Proto::H1 | Proto::H2 => {
                let alpn: &[u8] = if proto == Proto::H1 {
                    b"http/1.1"
                } else {
                    b"h2"
                };
                let cfg = trust.client_config(&[alpn])?;
                let tcp = tokio::net::TcpStream::connect(addr).await?;
                tcp.set_nodelay(true)?;
                let name = ServerName::try_from(server_name.to_string())?;
                let tls = tokio_rustls::TlsConnector::from(Arc::new(cfg))
                    .connect(name, tcp)
                    .await?;
                let io = TokioIo::new(tls);
                if proto == Proto::H1 {
                    let (send, conn) = hyper::client::conn::http1::handshake(io).await?;
                    tokio::spawn(conn);
                    Conn::H1(tokio::sync::Mutex::new(send))
                } else {
                    let (send, conn) =
                        hyper::client::conn::http2::Builder::new(TokioExecutor::new())
                            .initial_stream_window_size(4 << 20)
                            .initial_connection_window_size(16 << 20)
                            .handshake(io)
                            .await?;
                    tokio::spawn(conn);
                    Conn::H2(send)
                }
            }
            Proto::H3 => {
                let ctx = H3Context::new(trust, addr.is_ipv6(), DEFAULT_CONGESTION)?;
                return Self::connect_h3(&ctx, addr, server_name).await;
            }
        };
        Ok(Client {
            conn,
            authority,
            proto,
            zero_rtt: false,
        })
    }

    /// An HTTP/3 connection from `ctx`'s endpoint; resumes with 0-RTT when a session ticket
    /// from an earlier connection allows it (`zero_rtt`).
    pub async fn connect_h3(
        ctx: &H3Context,
        addr: SocketAddr,
        server_name: &str,
    ) -> anyhow::Result<Client> {
        let connecting = ctx
            .endpoint
            .connect_with(ctx.config.clone(), addr, server_name)?;
        let (conn, handshake) = match connecting.into_0rtt() {
            Ok((conn, accepted)) => {
                let (tx, rx) = tokio::sync::watch::channel(false);
                tokio::spawn(async move {
                    // Resolves when the handshake completes (whether or not the server took
                    // the early data; rejected early requests fail and are retried).
                    let _ = accepted.await;
                    let _ = tx.send(true);
                });
                (conn, Some(rx))
            }
            Err(connecting) => (connecting.await?, None),
        };
        let zero_rtt = handshake.is_some();
        let (mut driver, send) = h3::client::new(h3_quinn::Connection::new(conn.clone())).await?;
        tokio::spawn(async move {
            let _ = std::future::poll_fn(|cx| driver.poll_close(cx)).await;
        });
        Ok(Client {
            conn: Conn::H3 {
                send,
                conn,
                _endpoint: ctx.endpoint.clone(),
                handshake,
                unsafe_early: false.into(),
            },
            authority: format!("{server_name}:{}", addr.port()),
            proto: Proto::H3,
            zero_rtt,
        })
    }

    /// The HTTP version this connection speaks.
    pub fn proto(&self) -> Proto {
        self.proto
    }

    /// Sends `req` (path and query in its URI; headers as given) with an optional body.
    /// Over HTTP/2 and HTTP/3, concurrent calls are multiplexed on the one connection.
    pub async fn send(
        &self,
        req: Request<()>,
        body: Option<BodyStream>,
    ) -> anyhow::Result<ClientResponse> {
        self.send_with_trailers(req, body, None).await
    }

    /// Like [`Client::send`], with trailer fields after the body (HTTP/1.1 then uses chunked
    /// encoding; announce them in a `Trailer` header).
    pub async fn send_with_trailers(
        &self,
        req: Request<()>,
        body: Option<BodyStream>,
        trailers: Option<http::HeaderMap>,
    ) -> anyhow::Result<ClientResponse> {
        let (mut parts, ()) = req.into_parts();
        // Who we are (servers count clients by family; xferd's own is `xferd_client`).
        parts
            .headers
            .entry(http::header::USER_AGENT)
            .or_insert(http::HeaderValue::from_static(USER_AGENT));
        let path_q = parts
            .uri
            .path_and_query()
            .map(|p| p.as_str().to_string())
            .unwrap_or_else(|| "/".into());
        match &self.conn {
            Conn::H1(send) => {
                let mut send = send.lock().await;
                parts
                    .headers
                    .insert(http::header::HOST, self.authority.parse()?);
                parts.uri = path_q.parse()?;
                parts.version = Version::HTTP_11;
                send.ready().await?;
                let resp = send
                    .send_request(Request::from_parts(
                        parts,
                        hyper_body(body, trailers.clone()),
                    ))
                    .await?;
                Ok(from_hyper(resp))
            }
            Conn::H2(send) => {
                let mut send = send.clone();
                parts.uri = format!("https://{}{}", self.authority, path_q).parse()?;
                parts.version = Version::HTTP_2;
                send.ready().await?;
                let resp = send
                    .send_request(Request::from_parts(
                        parts,
                        hyper_body(body, trailers.clone()),
                    ))
                    .await?;
                Ok(from_hyper(resp))
            }
            Conn::H3 {
                send,
                handshake,
                unsafe_early,
                ..
            } => {
                let safe = matches!(
                    parts.method,
                    http::Method::GET | http::Method::HEAD | http::Method::OPTIONS
                );
                if let Some(h) = handshake {
                    if !safe && !unsafe_early.load(std::sync::atomic::Ordering::Relaxed) {
                        // An error means the watcher is gone with the connection: send and
                        // let the request fail like any other on a dead connection.
                        let _ = h.clone().wait_for(|done| *done).await;
                    }
                }
                let mut send = send.clone();
                parts.uri = format!("https://{}{}", self.authority, path_q).parse()?;
                parts.version = Version::HTTP_3;
                let stream = send.send_request(Request::from_parts(parts, ())).await?;
                let (mut tx, mut rx) = stream.split();
                // A server may answer before it has read the whole body (a 409, a 413) and
                // then stop reading (STOP_SENDING). RFC 9114 section 4.1: clients must not
                // discard a complete response because their request was cut short. So the
                // body is sent while the response is awaited: an error answer that arrives
                // first ends the sending (the rest of the body is of no use to anyone); a
                // failure to send is kept, the response is still read, and the send error
                // is returned only when no response comes.
                let mut sending = Box::pin(async {
                    if let Some(mut body) = body {
                        while let Some(chunk) = body.next().await {
                            match chunk {
                                Ok(b) => {
                                    if let Err(e) = tx.send_data(b).await {
                                        return Sent::Refused(e);
                                    }
                                }
                                Err(e) => return Sent::BodyFailed(e),
                            }
                        }
                    }
                    if let Some(t) = trailers {
                        if let Err(e) = tx.send_trailers(t).await {
                            return Sent::Refused(e);
                        }
                    }
                    match tx.finish().await {
                        Ok(()) => Sent::Done,
                        Err(e) => Sent::Refused(e),
                    }
                });
                let mut interim = Vec::new();
                let mut receiving = Box::pin(async {
                    loop {
                        let r = rx.recv_response().await?;
                        if !r.status().is_informational() || interim.len() >= 16 {
                            return Ok::<_, h3::error::StreamError>(r);
                        }
                        interim.push((r.status(), r.headers().clone()));
                    }
                });
                let (sent, early) = tokio::select! {
                    sent = &mut sending => (Some(sent), None),
                    r = &mut receiving => (None, Some(r)),
                };
                let mut abandoned = false;
                let (sent, resp) = match (sent, early) {
                    // The answer came first: an error ends the upload, anything else
                    // waits for the body to go out.
                    (None, Some(Ok(r))) if r.status().as_u16() >= 400 => {
                        abandoned = true;
                        (Sent::Done, Ok(r))
                    }
                    (None, Some(r)) => ((&mut sending).await, r),
                    (Some(Sent::BodyFailed(e)), _) => {
                        drop(sending);
                        drop(receiving);
                        tx.stop_stream(h3::error::Code::H3_REQUEST_CANCELLED);
                        anyhow::bail!("request body failed: {e}");
                    }
                    (Some(sent), _) => {
                        // After a refusal the answer is already on its way; bound the wait.
                        let wait = if matches!(sent, Sent::Refused(_)) {
                            RESPONSE_AFTER_REFUSAL
                        } else {
                            std::time::Duration::MAX
                        };
                        let r = match tokio::time::timeout(wait, &mut receiving).await {
                            Ok(r) => r,
                            Err(_) => match sent {
                                Sent::Refused(e) => return Err(e.into()),
                                _ => anyhow::bail!("no HTTP/3 response"),
                            },
                        };
                        (sent, r)
                    }
                    (None, None) => unreachable!("select! yields one branch"),
                };
                drop(sending);
                drop(receiving);
                let resp = match (sent, resp) {
                    (Sent::BodyFailed(e), _) => {
                        tx.stop_stream(h3::error::Code::H3_REQUEST_CANCELLED);
                        anyhow::bail!("request body failed: {e}");
                    }
                    (_, Ok(r)) => r,
                    // No answer: the failure to send is the cause worth reporting.
                    (Sent::Refused(e), Err(_)) => return Err(e.into()),
                    (Sent::Done, Err(e)) => return Err(e.into()),
                };
                if abandoned {
                    // What of the body was not sent yet never will be.
                    tx.stop_stream(h3::error::Code::H3_REQUEST_CANCELLED);
                }
                let stream = rx;
                let body: BodyStream =
                    Box::pin(futures_util::stream::unfold(Some(stream), |s| async move {
                        let mut s = s?;
                        match s.recv_data().await {
                            Ok(Some(mut b)) => Some((Ok(b.copy_to_bytes(b.remaining())), Some(s))),
                            Ok(None) => None,
                            Err(e) => Some((Err(BodyError(e.to_string())), None)),
                        }
                    }));
                Ok(ClientResponse {
                    interim,
                    status: resp.status(),
                    version: Version::HTTP_3,
                    headers: resp.headers().clone(),
                    body,
                })
            }
        }
    }

    /// Send requests that are not safe in 0-RTT early data too, instead of holding them
    /// until the handshake completes. xferd holds such a request itself until then (a
    /// replay never gets that far), so this saves the PUT a round trip (benches/zerortt.sh);
    /// a server that refuses early data answers 425. Used by tests and the benchmark.
    pub fn send_unsafe_requests_early(&self) {
        if let Conn::H3 { unsafe_early, .. } = &self.conn {
            unsafe_early.store(true, std::sync::atomic::Ordering::Relaxed);
        }
    }

    /// The QUIC connection, for HTTP/3 clients (statistics, migration).
    pub fn quic(&self) -> Option<&quinn::Connection> {
        match &self.conn {
            Conn::H3 { conn, .. } => Some(conn),
            _ => None,
        }
    }
}

/// How an HTTP/3 request body went out.
enum Sent {
    Done,
    /// The body stream itself failed (the request is cancelled).
    BodyFailed(BodyError),
    /// The server stopped or reset the stream: it may have answered already.
    Refused(h3::error::StreamError),
}

/// How long a response may take once the server has refused the rest of the request body.
const RESPONSE_AFTER_REFUSAL: std::time::Duration = std::time::Duration::from_secs(30);

fn hyper_body(body: Option<BodyStream>, trailers: Option<http::HeaderMap>) -> ReqBody {
    match (body, trailers) {
        (None, None) => Empty::new().map_err(|never| match never {}).boxed_unsync(),
        (body, trailers) => {
            let data = body
                .unwrap_or_else(crate::core::body::empty_stream)
                .map(|r| r.map(Frame::data));
            let tail = futures_util::stream::iter(trailers.map(|t| Ok(Frame::trailers(t))));
            BodyExt::boxed_unsync(StreamBody::new(data.chain(tail)))
        }
    }
}

fn from_hyper(resp: http::Response<hyper::body::Incoming>) -> ClientResponse {
    let (parts, incoming) = resp.into_parts();
    ClientResponse {
        interim: Vec::new(),
        status: parts.status,
        version: parts.version,
        headers: parts.headers,
        body: Box::pin(BodyDataStream::new(incoming).map_err(|e| BodyError(error_chain(&e)))),
    }
}

/// An error with its causes ("error reading a body from connection: stream error ...").
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cause = c.source();
    }
    s
}
