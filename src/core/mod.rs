//! The protocol-neutral transfer core.
//!
//! Input: an `http` request head, a [`body::BodyStream`] and the current time. Output: an
//! `http::Response<`[`body::Body`]`>`. Everything about upload and download semantics
//! lives here; the front ends in [`crate::transport`] only translate. This module imports
//! neither hyper, h3, quinn, tokio's networking nor prometheus, nor `config`, nor a storage
//! backend: it stores through [`crate::storage::store`] (`tests/boundaries.rs`).

pub mod adaptive;
pub mod auth;
pub mod body;
pub mod buffers;
pub mod client_addr;
pub mod download;
pub mod error;
pub mod page;
pub mod path;
pub mod profiles;
pub mod range;
pub mod ratelimit;
pub mod readings;
pub mod response;
pub mod resumable;
pub mod retry;
pub mod scan;
pub mod sizing;
pub mod stream;
pub mod telemetry;
pub mod upload;
// Issue 12: audit trail, file expiry, storage quotas.
pub mod audit;
pub mod dedup;
pub mod expiry;
pub mod quota;
// Issue 15: the core_request fuzz target's socket-free core (not an API).
#[doc(hidden)]
pub mod fuzz_entry;

#[cfg(test)]
mod mem_tests;

use crate::storage::store::Store;
use body::{Body, BodyStream};
use error::CoreError;
use http::{Method, Response, StatusCode};
use std::sync::Arc;
use std::time::{Duration, SystemTime};
pub use telemetry::{Direction, Protocol, Telemetry};

/// The core's settings (the server derives them from the configuration: the core does not
/// know `config`).
#[derive(Debug, Clone)]
pub struct Settings {
    /// Path prefix without slashes at the ends (`upload`), or empty.
    pub prefix: String,
    pub max_upload_size: u64,
    /// Lower-case extensions; empty = all.
    pub allowed_extensions: Vec<String>,
    pub auth_failure_status: StatusCode,
    pub allowed_clock_skew: Duration,
    pub require_download_signature: bool,
    pub max_ranges: usize,
    pub tus_path: String,
    pub ietf_path: String,
    pub form_upload_dir: String,
    pub compat_hfs_x_signature: bool,
    /// `[streaming] range_requests`.
    pub range_requests: bool,
    /// `[metrics]`: serve `/metrics` on this listener's routes.
    pub metrics_route: bool,
    /// Concurrent chunk streams advised to chunked-upload clients (1 without multiplexing).
    pub parallel_streams: u64,
    /// `[rate_limit]` buckets and exemptions.
    pub rate_limit: ratelimit::Limits,
    /// `rate_limit.trusted_proxies`: who may name the client in a forwarding header (at
    /// start; the rate limiter holds the ones in force).
    pub proxies: client_addr::Proxies,
    /// `[deduplication] enabled` (applied where the backend can: [`dedup::applies`]).
    pub dedup: bool,
}

/// The transfer core: settings, keys, storage, the resumable-upload engine, the adaptive
/// engine and the storage resilience policy.
pub struct Core {
    pub settings: Settings,
    pub keys: auth::Keys,
    /// Where files are stored (the contract: [`crate::storage::store`]).
    pub storage: Arc<dyn Store>,
    pub engine: resumable::Engine,
    pub adaptive: Arc<adaptive::Adaptive>,
    pub resilience: retry::Resilience,
    pub rate_limiter: ratelimit::RateLimiter,
    /// Storage quotas (shared with the engine's sessions).
    pub quotas: Arc<quota::Quotas>,
    /// Where audit events go, when the audit log is on.
    pub audit: Option<Arc<dyn audit::AuditSink>>,
    /// `[scan]`: the virus scanner single-shot uploads pass through (see [`scan`]).
    pub scanning: Option<Arc<scan::Scanning>>,
}

/// Sends informational (1xx) responses where the transport can (HTTP/3 here).
pub type Interim = tokio::sync::mpsc::Sender<http::Response<()>>;

/// What the core knows about a request besides its head and body.
#[derive(Clone)]
pub struct Ctx {
    pub now: SystemTime,
    pub peer: std::net::IpAddr,
    pub interim: Option<Interim>,
    pub protocol: Protocol,
    /// The connection's readings, when the transport provides them.
    pub probe: Option<Arc<readings::Probe>>,
    /// The request's `User-Agent` (set by [`Core::handle`]; part of the profile key).
    pub user_agent: Option<http::HeaderValue>,
    /// Filled with the request's trailers when its body ends (if the transport has them).
    pub trailers: Option<body::Trailers>,
    /// For a connection that accepted 0-RTT early data: becomes `true` when its handshake
    /// completes. `None`: the handshake was complete before the request was read.
    pub handshake: Option<tokio::sync::watch::Receiver<bool>>,
}

impl Ctx {
    pub fn new(peer: std::net::IpAddr, protocol: Protocol) -> Ctx {
        Ctx {
            now: SystemTime::now(),
            peer,
            interim: None,
            protocol,
            probe: None,
            user_agent: None,
            trailers: None,
            handshake: None,
        }
    }
    pub fn unix(&self) -> u64 {
        unix_secs(self.now)
    }

    /// The client's profile key (see [`profiles::key`]); built only when profiles are used.
    pub fn client_key(&self) -> String {
        profiles::key(
            self.peer,
            self.user_agent.as_ref().and_then(|v| v.to_str().ok()),
        )
    }
}

impl Core {
    pub fn new(
        settings: Settings,
        keys: auth::Keys,
        storage: Arc<dyn Store>,
        engine: resumable::Engine,
        adaptive: Arc<adaptive::Adaptive>,
        resilience: retry::Resilience,
    ) -> Core {
        Core {
            rate_limiter: ratelimit::RateLimiter::new(
                settings.rate_limit.clone(),
                settings.proxies.clone(),
            ),
            quotas: engine.quotas().clone(),
            audit: None,
            settings,
            keys,
            storage,
            engine,
            adaptive,
            resilience,
            scanning: None,
        }
    }

    /// Sends an audit event per request to `sink`.
    pub fn with_audit(mut self, sink: Arc<dyn audit::AuditSink>) -> Core {
        self.audit = Some(sink);
        self
    }

    /// Scans every upload with `scanning` before it is stored (single-shot uploads here,
    /// resumable ones through [`resumable::Engine::with_scanning`]).
    pub fn with_scanning(mut self, scanning: Option<Arc<scan::Scanning>>) -> Core {
        self.scanning = scanning;
        self
    }

    pub fn telemetry(&self) -> &dyn Telemetry {
        self.adaptive.telemetry.as_ref()
    }

    /// Answers one request. Never fails: errors become JSON error responses.
    pub async fn handle(
        &self,
        head: http::request::Parts,
        body: BodyStream,
        mut ctx: Ctx,
    ) -> Response<Body> {
        ctx.user_agent = head.headers.get(http::header::USER_AGENT).cloned();
        // The one place the client's address is decided (profiles, session counts, limits).
        ctx.peer = self.rate_limiter.client(ctx.peer, &head.headers);
        // Fused: handlers and the drain below may poll a body after it ended.
        let mut body: BodyStream = Box::pin(futures_util::StreamExt::fuse(body));
        let early_data = handshake_done(&head.method, &ctx).await;
        if let Some(outcome) = early_data {
            self.telemetry().early_data(outcome);
        }
        let early = early_data == Some(telemetry::EarlyData::Refused);
        let result = if early {
            Err(CoreError::TooEarly)
        } else if let Err(e) = self.admit(&head, &ctx) {
            Err(e)
        } else {
            self.route(&head, &mut body, &ctx).await
        };
        let has_body = matches!(head.method, Method::PUT | Method::POST | Method::PATCH);
        let discard = has_body
            && !early
            && !result.as_ref().is_ok_and(|r| r.status().is_success())
            && !expects_continue(&head.headers);
        let mut resp = match result {
            Ok(r) => r,
            Err(e) => {
                match &e {
                    CoreError::Storage(io) => {
                        tracing::error!(method = %head.method, path = head.uri.path(), error = %io, "storage failure")
                    }
                    other => {
                        tracing::info!(method = %head.method, path = head.uri.path(), code = other.code(), "refused: {other}")
                    }
                }
                response::error(&e, self.settings.auth_failure_status)
            }
        };
        if let Some(response::ErrorCode(code)) = resp.extensions().get() {
            let dir = if has_body || matches!(head.method, Method::DELETE) {
                Direction::Upload
            } else {
                Direction::Download
            };
            self.telemetry().error(dir, ctx.protocol, code);
        }
        let route = telemetry::Route::of(&head, &self.settings.tus_path, &self.settings.ietf_path);
        let agent = telemetry::Agent::of(ctx.user_agent.as_ref().and_then(|v| v.to_str().ok()));
        self.telemetry().request(route, agent, ctx.protocol);
        if discard {
            resp.extensions_mut().insert(DrainAfterResponse);
        }
        if head.method == Method::HEAD {
            // HEAD keeps the GET headers (Content-Length included) but sends no body.
            *resp.body_mut() = Body::Empty;
        }
        response::add_common(resp.headers_mut());
        // Audit hook: one event per request (see [`audit`]), never waiting on the sink.
        if let Some(sink) = &self.audit {
            if let Some(e) = audit::event(&head, &ctx, &resp) {
                sink.record(e);
            }
        }
        resp
    }

    /// The `[rate_limit]` check: uploads (PUT, POST, PATCH, DELETE) and downloads (GET,
    /// HEAD) take a token; OPTIONS, `/health` and `/metrics` are not limited.
    fn admit(&self, head: &http::request::Parts, ctx: &Ctx) -> Result<(), CoreError> {
        let path = head.uri.path();
        let dir = match head.method {
            _ if path == "/health" || path == "/metrics" => return Ok(()),
            Method::GET | Method::HEAD => Direction::Download,
            Method::PUT | Method::POST | Method::PATCH | Method::DELETE => Direction::Upload,
            _ => return Ok(()),
        };
        self.rate_limiter
            .check(ctx.peer, path, dir, ctx.now)
            .map_err(CoreError::RateLimited)
    }

    async fn route(
        &self,
        head: &http::request::Parts,
        body: &mut BodyStream,
        ctx: &Ctx,
    ) -> Result<Response<Body>, CoreError> {
        let path = head.uri.path();
        let s = &self.settings;
        let h = &head.headers;
        // Only the collection itself and `<path><32 hex id>` are upload resources; any other
        // path under them (`/files/photo.jpg`) is an ordinary storage path.
        let is_resource =
            |base: &str| path == base || resumable::common::session_id(path, base).is_some();
        if is_resource(&s.tus_path) {
            return Ok(resumable::tus::resource(self, head, body, ctx).await);
        }
        if is_resource(&s.ietf_path) {
            return Ok(resumable::ietf::resource(self, head, body, ctx).await);
        }
        match (&head.method, path) {
            (&Method::OPTIONS, _) => {
                let mut r = response::preflight();
                r.headers_mut()
                    .insert("upload-limit", resumable::ietf::upload_limit(self, None));
                Ok(r)
            }
            (&Method::GET | &Method::HEAD, "/health") => Ok(health()),
            (&Method::GET, "/metrics") if s.metrics_route => Ok(metrics(self)),
            (&Method::POST | &Method::PUT, "/chunked-upload") => {
                resumable::hfs::chunked(self, head, body, ctx).await
            }
            (&Method::GET, "/upload-status") => resumable::hfs::status(self, head, ctx).await,
            (&Method::POST, "/upload") => resumable::form::upload(self, head, body, ctx).await,
            (&Method::GET | &Method::HEAD, p) if page::is_page(p) => page::serve(self, head),
            (&Method::GET | &Method::HEAD, _) => download::serve(self, head, ctx).await,
            (&Method::POST, _) if resumable::tus::is_tus(h) => {
                Ok(resumable::tus::create(self, head, body, ctx).await)
            }
            (&Method::POST | &Method::PUT, _) if resumable::ietf::is_creation(h) => {
                Ok(resumable::ietf::create(self, head, body, ctx).await)
            }
            (&Method::PUT, _) => upload::put(self, head, body, ctx).await,
            _ => Err(CoreError::MethodNotAllowed),
        }
    }
}

/// Whether `GET /<key>` is answered by one of the GET arms of `Core::route` (keep the two
/// in step) instead of the download of `key` (`/health`, `/metrics`, HFS's `/upload-status`,
/// the upload page and its files): such a key would be stored and then never served, so no upload may create it
/// (400 `bad_path`, "reserved name"). Found by the `core_request` fuzz target: a signed PUT of
/// `/upload-page` got 201, and its GET returned the page.
pub fn shadowed_by_route(key: &path::RelPath) -> bool {
    let url = format!("/{}", key.as_str());
    matches!(url.as_str(), "/health" | "/metrics" | "/upload-status") || page::is_page(&url)
}

/// The longest a request that is not safe, read from 0-RTT early data, is held for its
/// connection's handshake. A backstop only: the wait ends sooner when the connection is lost
/// (a handshake that does not complete ends with the connection's idle timeout, as quinn
/// arms the idle timer from the first packet), and a held request needs no more than that.
const EARLY_DATA_HOLD: Duration = Duration::from_secs(60);

/// The 0-RTT rule (RFC 8470 section 3; RFC 9001 section 9.2 on replay): early data can be
/// replayed, but a replayed connection never completes its handshake (the client's Finished
/// depends on the server's fresh key share). So GET, HEAD and OPTIONS are served at once;
/// any other method, which may change state, is held until the handshake completes and then
/// served as usual. Holding reads nothing of the body, so flow control bounds the early data
/// held (see [`crate::transport::quic`]).
///
/// `None` for a request read after its connection's handshake completed. For one read from
/// early data: [`EarlyData::Served`] for a safe method, [`EarlyData::Held`] once the
/// handshake completed, and [`EarlyData::Refused`] (the caller answers 425) only where
/// holding is impossible: the connection was lost before its handshake completed (a replay,
/// or a client gone; no answer can reach anyone then), or [`EARLY_DATA_HOLD`] passed.
///
/// [`EarlyData::Served`]: telemetry::EarlyData::Served
/// [`EarlyData::Held`]: telemetry::EarlyData::Held
/// [`EarlyData::Refused`]: telemetry::EarlyData::Refused
async fn handshake_done(method: &Method, ctx: &Ctx) -> Option<telemetry::EarlyData> {
    use telemetry::EarlyData;
    let rx = ctx.handshake.as_ref()?;
    if *rx.borrow() {
        return None;
    }
    if matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS) {
        return Some(EarlyData::Served);
    }
    let mut rx = rx.clone();
    let done = tokio::time::timeout(EARLY_DATA_HOLD, rx.wait_for(|done| *done))
        .await
        .is_ok_and(|r| r.is_ok());
    Some(if done {
        EarlyData::Held
    } else {
        EarlyData::Refused
    })
}

/// How an early-refused upload ends (409, 403, 413 and the like, answered before the body
/// has arrived): the response is sent at once, and *then* what is left of the body is read
/// and discarded by the transport ([`drain`]) for up to [`DRAIN_TIME`] / [`DRAIN_LIMIT`]
/// before the transport stops the request: HTTP/2 with RST_STREAM(NO_ERROR) (RFC 9113
/// section 8.1), HTTP/3 with STOP_SENDING(H3_NO_ERROR) (RFC 9114 section 4.1), HTTP/1.1 by
/// closing the connection. A body that ends within the bound needs no reset at all (and an
/// HTTP/1.1 connection stays usable).
///
/// Why after and not before: clients read the status while still sending. Why a while and
/// not at once: curl 7.88 (nghttp2) fails a transfer with error 92 and no status when the
/// stream is reset while it still has body data to send, even after a complete response;
/// given a moment it sees the status, stops sending by itself ("HTTP error before end of
/// send, stop sending") and ends the exchange. The old way, reading 8 MiB before answering
/// and then resetting, lost the status for any larger body. On HTTP/2 such a response is
/// headers only (status and `xferd-error`, see [`response::ERROR_HEADER`]): curl stops with
/// an early END_STREAM, which the h2 crate resets with PROTOCOL_ERROR, dropping a response
/// body not yet sent.
///
/// Set on a response whose request body is to be drained after the response (see above).
#[derive(Debug, Clone, Copy)]
pub struct DrainAfterResponse;

/// Longest a refused request's body is read and discarded after its response.
///
/// 20 s: a client that sees the status stops sending at once (curl, Node, xferd's own
/// client), so the bound only matters when a client is slow to read its answer - as curl
/// was on a loaded 2-core CI machine, where 5 s was not enough for it to notice a 413 while
/// pushing 50 MB and it then failed with error 92. The drain holds no memory; its bytes are
/// bounded by [`DRAIN_LIMIT`].
pub const DRAIN_TIME: Duration = Duration::from_secs(20);
/// Most bytes of a refused request's body read and discarded after its response.
pub const DRAIN_LIMIT: u64 = 1 << 30;

/// Reads and discards what is left of a refused body, bounded by [`DRAIN_TIME`] and
/// [`DRAIN_LIMIT`]; true when the body ended within them.
pub async fn drain(body: &mut BodyStream) -> bool {
    use futures_util::StreamExt;
    let mut seen = 0u64;
    tokio::time::timeout(DRAIN_TIME, async {
        loop {
            match body.next().await {
                None => return true,
                Some(Err(_)) => return false,
                Some(Ok(chunk)) => {
                    seen += chunk.len() as u64;
                    if seen > DRAIN_LIMIT {
                        return false;
                    }
                }
            }
        }
    })
    .await
    .unwrap_or(false)
}

fn expects_continue(h: &http::HeaderMap) -> bool {
    header_str(h, http::header::EXPECT).is_some_and(|v| v.eq_ignore_ascii_case("100-continue"))
}

/// Prometheus text exposition of the server's metrics.
pub fn metrics(core: &Core) -> Response<Body> {
    let Some(text) = core.telemetry().render() else {
        return response::error(&CoreError::NotFound, StatusCode::FORBIDDEN);
    };
    let mut r = response::build(StatusCode::OK, Body::Full(bytes::Bytes::from(text)));
    let h = r.headers_mut();
    h.insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    h.insert(
        http::header::CACHE_CONTROL,
        http::HeaderValue::from_static("no-store"),
    );
    r
}

fn health() -> Response<Body> {
    let mut r = response::build(
        StatusCode::OK,
        Body::Full(bytes::Bytes::from_static(b"ok\n")),
    );
    r.headers_mut().insert(
        http::header::CACHE_CONTROL,
        http::HeaderValue::from_static("no-store"),
    );
    r
}

/// Unix seconds of `now` (0 before the epoch).
pub fn unix_secs(now: SystemTime) -> u64 {
    now.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// A header's value as text, if present and visible ASCII.
pub fn header_str(h: &http::HeaderMap, name: impl http::header::AsHeaderName) -> Option<&str> {
    h.get(name).and_then(|v| v.to_str().ok())
}
