//! The core over the in-memory backend: requests go through [`Core::handle`] with
//! [`MemStore`] and [`crate::storage::mem::MemParts`] behind it (no files, no sockets), so
//! the core's behaviour is shown to come from the contract, not from the filesystem.

use super::adaptive::{Adaptive, Options};
use super::auth::{message_for, Keys, Scheme};
use super::body::{Body, BodyError, BodyStream};
use super::resumable::{Engine, Kind, Limits, NewSession, Origin, Placement, Write};
use super::sizing::{Algorithm, Bounds};
use super::telemetry::Silent;
use super::{Core, Ctx, Protocol, Settings};
use crate::storage::key::Key;
use crate::storage::mem::MemStore;
use crate::storage::meta::SessionStore;
use crate::storage::store::Store;
use bytes::Bytes;
use futures_util::StreamExt;
use http::{Method, Request, StatusCode};
use std::sync::Arc;
use std::time::Duration;

const SECRET: &str = "mem-test-secret";

fn settings() -> Settings {
    Settings {
        prefix: String::new(),
        max_upload_size: 1 << 20,
        allowed_extensions: Vec::new(),
        auth_failure_status: StatusCode::FORBIDDEN,
        allowed_clock_skew: Duration::from_secs(60),
        require_download_signature: false,
        max_ranges: 4,
        tus_path: "/files/".into(),
        ietf_path: "/uploads/".into(),
        form_upload_dir: "forms".into(),
        compat_hfs_x_signature: false,
        range_requests: true,
        metrics_route: false,
        parallel_streams: 1,
        rate_limit: Default::default(),
        proxies: Default::default(),
        dedup: false,
    }
}

struct Env {
    core: Core,
    store: MemStore,
    _state: tempfile::TempDir,
}

fn env(capacity: u64) -> Env {
    let store = MemStore::new(capacity);
    let pool = super::buffers::Pool::new(64, 1024, 1 << 20);
    let limits = Limits {
        max_sessions: 10,
        max_sessions_per_client: 5,
        max_reserved_bytes: 1 << 20,
        max_length: 1 << 20,
        ttl_secs: 100,
        pool: pool.clone(),
        commit_every: 64,
    };
    let state = tempfile::tempdir().unwrap();
    let sessions = SessionStore::open(&state.path().join("sessions.redb")).unwrap();
    let engine = Engine::open(sessions, Arc::new(store.parts()), limits).unwrap();
    let telemetry: Arc<dyn super::Telemetry> = Arc::new(Silent);
    let adaptive = Arc::new(Adaptive {
        options: Options {
            bounds: Bounds {
                min_buffer: 64,
                max_buffer: 1024,
                min_chunk: 64,
                max_chunk: 1024,
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
    let resilience = super::retry::Resilience::new(false, false, true, telemetry);
    let core = Core::new(
        settings(),
        Keys::new(SECRET, &[], false),
        Arc::new(store.clone()),
        engine,
        adaptive,
        resilience,
    );
    Env {
        core,
        store,
        _state: state,
    }
}

fn signed_put(rel: &str, size: u64) -> String {
    let mac = Keys::new(SECRET, &[], false).sign(&message_for(Scheme::V, "PUT", rel, size, "", 0));
    format!("/{rel}?v={mac}")
}

async fn request(
    e: &Env,
    method: Method,
    uri: &str,
    headers: &[(&str, &str)],
    body: Vec<Bytes>,
) -> (StatusCode, http::HeaderMap, Vec<u8>) {
    let mut b = Request::builder().method(method).uri(uri);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    let (head, ()) = b.body(()).unwrap().into_parts();
    let stream: BodyStream = Box::pin(futures_util::stream::iter(
        body.into_iter().map(Ok::<_, BodyError>),
    ));
    let ctx = Ctx::new([127, 0, 0, 1].into(), Protocol::H1);
    let resp = e.core.handle(head, stream, ctx).await;
    let (parts, body) = resp.into_parts();
    let bytes = match body {
        Body::Empty => Vec::new(),
        Body::Full(b) => b.to_vec(),
        Body::Stream { stream, .. } => {
            let chunks: Vec<_> = tokio::time::timeout(Duration::from_secs(10), stream.collect())
                .await
                .expect("the body ends");
            chunks.into_iter().flat_map(|c| c.unwrap()).collect()
        }
    };
    (parts.status, parts.headers, bytes)
}

async fn put(e: &Env, rel: &str, data: &'static [u8]) -> StatusCode {
    let len = data.len().to_string();
    let uri = signed_put(rel, data.len() as u64);
    let halves = data.split_at(data.len() / 2);
    let body = vec![Bytes::from_static(halves.0), Bytes::from_static(halves.1)];
    request(e, Method::PUT, &uri, &[("content-length", &len)], body)
        .await
        .0
}

#[tokio::test]
async fn put_then_get_and_range_on_the_memory_store() {
    let e = env(64 << 20);
    assert_eq!(
        put(&e, "d/hello.txt", b"hello world").await,
        StatusCode::CREATED
    );
    let (status, h, body) = request(&e, Method::GET, "/d/hello.txt", &[], vec![]).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, b"hello world");
    let etag = h.get("etag").unwrap().to_str().unwrap().to_string();
    let (status, _, body) = request(
        &e,
        Method::GET,
        "/d/hello.txt",
        &[("range", "bytes=6-")],
        vec![],
    )
    .await;
    assert_eq!(status, StatusCode::PARTIAL_CONTENT);
    assert_eq!(body, b"world");
    let (status, _, _) = request(
        &e,
        Method::GET,
        "/d/hello.txt",
        &[("if-none-match", &etag)],
        vec![],
    )
    .await;
    assert_eq!(status, StatusCode::NOT_MODIFIED);
    // Never overwritten; below a file is a path conflict; a missing file is 404.
    assert_eq!(put(&e, "d/hello.txt", b"other").await, StatusCode::CONFLICT);
    assert_eq!(put(&e, "d/hello.txt/x", b"x").await, StatusCode::CONFLICT);
    let (status, _, _) = request(&e, Method::GET, "/d/missing", &[], vec![]).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let obj = e.store.open(&Key::parse("d/hello.txt").unwrap()).await;
    assert_eq!(obj.unwrap().unwrap().meta().len, 11);
}

#[tokio::test]
async fn a_failed_put_leaves_nothing_and_a_full_store_is_507() {
    let e = env(64 << 20);
    // Content-Length says 10, the body has 11 bytes: refused, nothing stored.
    let uri = signed_put("short.bin", 10);
    let body = vec![Bytes::from_static(b"hello world")];
    let (status, _, _) = request(&e, Method::PUT, &uri, &[("content-length", "10")], body).await;
    assert!(status.is_client_error(), "{status}");
    assert!(e.store.list("", None, 10).await.unwrap().is_empty());
    assert_eq!(e.store.free_space().await.unwrap(), Some(64 << 20));
    // The free-space capability: too little room is 507 before any byte is read.
    let small = env(1 << 10);
    assert_eq!(
        put(&small, "big.bin", b"more than the margin allows").await,
        StatusCode::INSUFFICIENT_STORAGE
    );
}

#[tokio::test]
async fn a_resumable_upload_completes_into_the_memory_store() {
    let e = env(64 << 20);
    let engine = &e.core.engine;
    let new = NewSession {
        origin: Origin::Tus,
        kind: Kind::Whole,
        target: Key::parse("r/up.bin").unwrap(),
        length: Some(8),
        signed_size: None,
        metadata: None,
        owner: "a".into(),
        expected_sha256: None,
        chunk_size: None,
    };
    let s = engine.create(new, 0).await.unwrap();
    for (offset, data) in [(0u64, &b"abcd"[..]), (4, &b"efgh"[..])] {
        let w = Write {
            placement: Placement::Append { offset },
            declared_len: Some(4),
            checksum: None,
            last: false,
            lease: None,
        };
        let mut body: BodyStream = Box::pin(futures_util::stream::iter(vec![Ok::<_, BodyError>(
            Bytes::from_static(data),
        )]));
        let key = Key::parse("r/up.bin").unwrap();
        assert!(e.store.stat(&key).await.unwrap().is_none(), "visible early");
        engine.write(&s.id, w, &mut body, 1).await.unwrap();
    }
    let (status, _, body) = request(&e, Method::GET, "/r/up.bin", &[], vec![]).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, b"abcdefgh");
}

/// Found by the `core_request` fuzz target: a 416 (and a 412) carried no `xferd-error`,
/// unlike every other response of 400 or more.
#[tokio::test]
async fn download_refusals_carry_their_stable_code() {
    let e = env(64 << 20);
    assert_eq!(put(&e, "d/r.txt", b"hello").await, StatusCode::CREATED);
    for (headers, status, code) in [
        (
            [("range", "bytes=9-")],
            StatusCode::RANGE_NOT_SATISFIABLE,
            "range_not_satisfiable",
        ),
        (
            [("if-match", "\"nope\"")],
            StatusCode::PRECONDITION_FAILED,
            "precondition_failed",
        ),
    ] {
        let (s, h, _) = request(&e, Method::GET, "/d/r.txt", &headers, vec![]).await;
        assert_eq!(s, status);
        assert_eq!(
            h.get("xferd-error").map(|v| v.to_str().unwrap()),
            Some(code)
        );
    }
}

/// Found by the `core_request` fuzz target: a zero-length upload completes at creation, so a
/// tus creation whose `Content-Length` was malformed answered 400 for a stored file, and an
/// IETF creation with `Upload-Complete: ?1` and no content answered 400 `completed_upload`.
#[tokio::test]
async fn zero_length_resumable_creations_answer_for_what_they_store() {
    let e = env(64 << 20);
    let tus = [
        ("tus-resumable", "1.0.0"),
        ("upload-length", "0"),
        ("content-length", "0x"),
    ];
    let (s, _, _) = request(&e, Method::POST, &signed_put("z/t.bin", 0), &tus, vec![]).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(
        e.store.list("", None, 10).await.unwrap().is_empty(),
        "400 stored nothing"
    );
    let ietf = [("upload-complete", "?1"), ("content-length", "0")];
    let (s, _, _) = request(&e, Method::PUT, &signed_put("z/i.bin", 0), &ietf, vec![]).await;
    assert_eq!(s, StatusCode::CREATED);
    let obj = e.store.open(&Key::parse("z/i.bin").unwrap()).await;
    assert_eq!(obj.unwrap().unwrap().meta().len, 0);
    // Content for a zero-length upload is refused before anything is stored.
    let tus = [
        ("tus-resumable", "1.0.0"),
        ("upload-length", "0"),
        ("content-type", "application/offset+octet-stream"),
        ("content-length", "3"),
    ];
    let body = vec![Bytes::from_static(b"abc")];
    let (s, _, _) = request(&e, Method::POST, &signed_put("z/t3.bin", 0), &tus, body).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let ietf = [
        ("upload-complete", "?0"),
        ("upload-length", "0"),
        ("content-length", "3"),
    ];
    let body = vec![Bytes::from_static(b"abc")];
    let (s, _, _) = request(&e, Method::PUT, &signed_put("z/i3.bin", 0), &ietf, body).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let keys: Vec<_> = e.store.list("", None, 10).await.unwrap();
    assert_eq!(keys.len(), 1, "only z/i.bin: {keys:?}");
}

/// Found by the `core_request` fuzz target: a signed PUT of `/upload-page` got 201 and its
/// GET then returned the upload page. No upload may create a key that one of the server's
/// own GET routes answers for; neighbours of those names are ordinary keys.
#[tokio::test]
async fn keys_shadowed_by_a_route_are_refused_before_anything_is_stored() {
    let e = env(64 << 20);
    for rel in [
        "upload-page",
        "upload-page/app.js",
        "health",
        "metrics",
        "upload-status",
    ] {
        assert_eq!(
            put(&e, rel, b"other").await,
            StatusCode::BAD_REQUEST,
            "{rel}"
        );
        let tus = [("tus-resumable", "1.0.0"), ("upload-length", "5")];
        let (s, h, _) = request(&e, Method::POST, &signed_put(rel, 5), &tus, vec![]).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "tus {rel}");
        assert_eq!(h.get("xferd-error").unwrap(), "bad_path");
    }
    assert!(e.store.list("", None, 10).await.unwrap().is_empty());
    for rel in ["upload-pages", "x/upload-page", "health.txt", "x/metrics"] {
        assert_eq!(put(&e, rel, b"other").await, StatusCode::CREATED, "{rel}");
    }
}
