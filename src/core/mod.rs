//! The protocol-neutral transfer core.
//!
//! Input: an `http` request head, a [`body::BodyStream`] and the current time. Output: an
//! `http::Response<`[`body::Body`]`>`. Everything about upload and download semantics
//! lives here; the front ends in [`crate::transport`] only translate. This module imports
//! neither hyper, h3, quinn, tokio's networking nor prometheus (`tests/boundaries.rs`).

pub mod auth;
pub mod body;
pub mod download;
pub mod error;
pub mod path;
pub mod range;
pub mod response;
pub mod resumable;
pub mod stream;
pub mod upload;

use crate::storage::FsStorage;
use body::{Body, BodyStream};
use error::CoreError;
use http::{Method, Response, StatusCode};
use std::time::{Duration, SystemTime};

/// The core's settings, derived from the configuration.
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
    pub io_buffer_size: usize,
}

impl Settings {
    pub fn from_config(c: &crate::config::Config) -> Settings {
        Settings {
            prefix: c.normalized_prefix(),
            max_upload_size: c.server.max_upload_size,
            allowed_extensions: c.server.allowed_extensions.clone(),
            auth_failure_status: StatusCode::from_u16(c.security.auth_failure_status)
                .unwrap_or(StatusCode::FORBIDDEN),
            allowed_clock_skew: c.security.allowed_clock_skew,
            require_download_signature: c.downloads.require_signature,
            max_ranges: c.downloads.max_ranges,
            io_buffer_size: usize::try_from(c.server.io_buffer_size).unwrap_or(256 << 10),
        }
    }
}

/// The transfer core: settings, keys and storage.
pub struct Core {
    pub settings: Settings,
    pub keys: auth::Keys,
    pub storage: FsStorage,
}

impl Core {
    pub fn new(settings: Settings, keys: auth::Keys, storage: FsStorage) -> Core {
        Core {
            settings,
            keys,
            storage,
        }
    }

    /// Answers one request. Never fails: errors become JSON error responses.
    pub async fn handle(
        &self,
        head: http::request::Parts,
        body: BodyStream,
        now: SystemTime,
    ) -> Response<Body> {
        let mut body = body;
        let result = self.route(&head, &mut body, now).await;
        if result.is_err() && head.method == Method::PUT && !expects_continue(&head.headers) {
            drain(&mut body).await;
        }
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
        if head.method == Method::HEAD {
            // HEAD keeps the GET headers (Content-Length included) but sends no body.
            *resp.body_mut() = Body::Empty;
        }
        response::add_common(resp.headers_mut());
        resp
    }

    async fn route(
        &self,
        head: &http::request::Parts,
        body: &mut BodyStream,
        now: SystemTime,
    ) -> Result<Response<Body>, CoreError> {
        let path = head.uri.path();
        match head.method {
            Method::OPTIONS => Ok(response::preflight()),
            Method::GET | Method::HEAD if path == "/health" => Ok(health()),
            Method::GET | Method::HEAD => download::serve(self, head, now).await,
            Method::PUT => upload::put(self, head, body, now).await,
            _ => Err(CoreError::MethodNotAllowed),
        }
    }
}

/// Most bytes of a refused request's body read and discarded before answering.
const DRAIN_LIMIT: u64 = 8 << 20;
const DRAIN_TIME: Duration = Duration::from_secs(2);

/// Reads and discards what is left of a small refused body (bounded in bytes and time).
///
/// Some clients (curl 7.88 over HTTP/2, for one) drop a response that arrives, followed by
/// a stream reset, while they are still sending. Draining a little lets them read the
/// error; a large body is not read: the response goes out and the stream is reset.
async fn drain(body: &mut BodyStream) {
    use futures_util::StreamExt;
    let mut seen = 0u64;
    let _ = tokio::time::timeout(DRAIN_TIME, async {
        while let Some(Ok(chunk)) = body.next().await {
            seen += chunk.len() as u64;
            if seen > DRAIN_LIMIT {
                break;
            }
        }
    })
    .await;
}

fn expects_continue(h: &http::HeaderMap) -> bool {
    header_str(h, http::header::EXPECT).is_some_and(|v| v.eq_ignore_ascii_case("100-continue"))
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
