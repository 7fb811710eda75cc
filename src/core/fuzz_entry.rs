//! A socket- and disk-free [`Core`] for the `core_request` fuzz target (`fuzz/`), not an API.
//!
//! [`mem_core`] builds the core over [`MemStore`] / [`crate::storage::mem::MemParts`] and
//! in-memory session records ([`MemRecords`], [`MemLocker`]), so one fuzz input costs no file;
//! [`exchange`] runs one request through [`Core::handle`] and reads the whole response
//! body. The settings are fixed and small (see [`MAX_UPLOAD`]), so the fuzzer reaches limits.

use super::adaptive::{Adaptive, Options};
use super::auth::Keys;
use super::body::{Body, BodyError, BodyStream};
use super::resumable::{Engine, Limits};
use super::sizing::{Algorithm, Bounds};
use super::telemetry::Silent;
use super::{Core, Ctx, Protocol, Settings};
use crate::storage::mem::MemStore;
use crate::storage::meta::{MemLocker, MemRecords};
use bytes::Bytes;
use futures_util::StreamExt;
use http::{HeaderMap, StatusCode};
use std::sync::Arc;
use std::time::Duration;

/// `max_upload_size` and the session engine's `max_length`.
pub const MAX_UPLOAD: u64 = 1 << 16;
/// The memory store's capacity: single-shot uploads keep 16 MiB free (`upload.rs`'s
/// margin), so 256 KiB of uploads fit above it, then 507.
pub const CAPACITY: u64 = (16 << 20) + (1 << 18);
/// The tus collection and the IETF collection.
pub const TUS_PATH: &str = "/files/";
pub const IETF_PATH: &str = "/uploads/";
/// Where `POST /upload` (HFS multipart form) stores its files.
pub const FORM_DIR: &str = "forms";

/// The core and the store behind it (to check what was stored).
#[doc(hidden)]
pub struct FuzzCore {
    pub core: Core,
    pub store: MemStore,
}

/// A fresh core over an empty memory store, signing with `secret`.
#[doc(hidden)]
pub fn mem_core(secret: &str) -> FuzzCore {
    let store = MemStore::new(CAPACITY);
    let pool = super::buffers::Pool::new(64, 4096, 1 << 20);
    let limits = Limits {
        max_sessions: 8,
        max_sessions_per_client: 4,
        max_reserved_bytes: CAPACITY,
        max_length: MAX_UPLOAD,
        ttl_secs: 3600,
        pool: pool.clone(),
        commit_every: 1024,
    };
    let engine = Engine::new(
        Arc::new(MemRecords::new()),
        Arc::new(MemLocker::new()),
        Arc::new(store.parts()),
        limits,
    );
    let telemetry: Arc<dyn super::Telemetry> = Arc::new(Silent);
    let adaptive = Arc::new(Adaptive {
        options: Options {
            bounds: Bounds {
                min_buffer: 64,
                max_buffer: 4096,
                min_chunk: 64,
                max_chunk: 4096,
            },
            adaptive_buffers: false,
            interval: Duration::from_secs(1),
            intelligent_chunking: false,
            algorithm: Algorithm::Fixed,
            configured_chunk: 1024,
            bandwidth_estimation: false,
            quality_adaptation: false,
        },
        pool,
        profiles: Arc::new(super::profiles::Profiles::new(false, false, 10, 10)),
        telemetry: telemetry.clone(),
    });
    let settings = Settings {
        prefix: String::new(),
        max_upload_size: MAX_UPLOAD,
        allowed_extensions: Vec::new(),
        auth_failure_status: StatusCode::FORBIDDEN,
        allowed_clock_skew: Duration::from_secs(60),
        require_download_signature: false,
        max_ranges: 4,
        tus_path: TUS_PATH.into(),
        ietf_path: IETF_PATH.into(),
        form_upload_dir: FORM_DIR.into(),
        compat_hfs_x_signature: false,
        range_requests: true,
        metrics_route: false,
        parallel_streams: 1,
        rate_limit: Default::default(),
        proxies: Default::default(),
        dedup: false,
    };
    let resilience = super::retry::Resilience::new(false, false, true, telemetry);
    let core = Core::new(
        settings,
        Keys::new(secret, &[], false),
        Arc::new(store.clone()),
        engine,
        adaptive,
        resilience,
    );
    FuzzCore { core, store }
}

/// What [`exchange`] saw: the response head, its body, and the length the body announced.
#[doc(hidden)]
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
    /// [`Body::len`] of the response before it was read (`None` for HEAD, whose body the core
    /// empties).
    pub announced: u64,
    /// The response body stream failed (a defect over the memory store).
    pub body_error: Option<String>,
}

/// Runs one request through [`Core::handle`] (peer 127.0.0.1, HTTP/1.1) and reads the whole
/// response body.
#[doc(hidden)]
pub async fn exchange(
    fc: &FuzzCore,
    head: http::request::Parts,
    frames: Vec<Result<Bytes, BodyError>>,
) -> Answer {
    let stream: BodyStream = Box::pin(futures_util::stream::iter(frames));
    let ctx = Ctx::new([127, 0, 0, 1].into(), Protocol::H1);
    let (parts, body) = fc.core.handle(head, stream, ctx).await.into_parts();
    let announced = body.len();
    let mut body_error = None;
    let bytes = match body {
        Body::Empty => Vec::new(),
        Body::Full(b) => b.to_vec(),
        Body::Stream { mut stream, .. } => {
            let mut out = Vec::new();
            while let Some(chunk) = stream.next().await {
                match chunk {
                    Ok(c) => out.extend_from_slice(&c),
                    Err(e) => {
                        body_error = Some(e.0);
                        break;
                    }
                }
            }
            out
        }
    };
    Answer {
        status: parts.status,
        headers: parts.headers,
        body: bytes,
        announced,
        body_error,
    }
}

thread_local! {
    static RUNTIME: Option<tokio::runtime::Runtime> = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .ok();
}

/// Runs `fut` to completion on this thread's single-threaded runtime (built once per thread,
/// so the fuzz crate needs no runtime of its own). `None` if no runtime could be built.
#[doc(hidden)]
pub fn block_on<F: std::future::Future>(fut: F) -> Option<F::Output> {
    RUNTIME.with(|rt| rt.as_ref().map(|rt| rt.block_on(fut)))
}
