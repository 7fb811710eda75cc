//! Outcomes and typed errors -> response heads. The only place that maps [`CoreError`] to
//! HTTP status codes (XEP-0363 section 5 and Prosody's
//! `mod_http_upload_external` protocol), and that sets the headers every
//! response carries (CORS, `nosniff`).

use super::auth::AuthError;
use super::body::Body;
use super::error::CoreError;
use super::resumable::SessionError;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Response, StatusCode};

/// Methods the server answers, for `Allow` and CORS preflight.
pub const ALLOWED_METHODS: &str = "GET, HEAD, PUT, POST, PATCH, DELETE, OPTIONS";
const ALLOWED_HEADERS: &str =
    "Content-Type, Content-Length, Range, If-Range, If-None-Match, If-Modified-Since, \
     If-Match, If-Unmodified-Since, Authorization, Tus-Resumable, Upload-Length, Upload-Offset, \
     Upload-Metadata, Upload-Defer-Length, Upload-Concat, Upload-Checksum, Upload-Complete, \
     Upload-Draft-Interop-Version, Repr-Digest, X-Filename, X-Total-Size, X-Upload-Session-ID, \
     X-Chunk-Number, X-Requested-With";
const EXPOSED_HEADERS: &str =
    "Content-Length, Content-Range, Content-Type, ETag, Last-Modified, Accept-Ranges, Location, \
     Repr-Digest, Tus-Resumable, Tus-Version, Tus-Extension, Tus-Max-Size, Tus-Checksum-Algorithm, \
     Upload-Offset, Upload-Length, Upload-Metadata, Upload-Expires, Upload-Concat, \
     Upload-Defer-Length, Upload-Complete, Upload-Limit, Xferd-Chunk-Size, Xferd-Error, \
     Retry-After";

/// The HTTP status for an error; `auth_status` is the configured 401/403.
pub fn status_of(err: &CoreError, auth_status: StatusCode) -> StatusCode {
    match err {
        CoreError::BadPath(_) => StatusCode::BAD_REQUEST,
        CoreError::Auth(AuthError::SizeRequired) => StatusCode::LENGTH_REQUIRED,
        // A malformed request, not a failed authentication.
        CoreError::Auth(AuthError::Repeated) => StatusCode::BAD_REQUEST,
        CoreError::Auth(_) => auth_status,
        CoreError::LengthRequired => StatusCode::LENGTH_REQUIRED,
        CoreError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
        CoreError::SizeMismatch | CoreError::BodyIncomplete(_) => StatusCode::BAD_REQUEST,
        CoreError::ExtensionNotAllowed(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
        CoreError::Exists => StatusCode::CONFLICT,
        CoreError::NotFound => StatusCode::NOT_FOUND,
        CoreError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
        CoreError::InsufficientStorage => StatusCode::INSUFFICIENT_STORAGE,
        CoreError::Storage(_) => StatusCode::INTERNAL_SERVER_ERROR,
        CoreError::BadRequest(_) => StatusCode::BAD_REQUEST,
        CoreError::Forbidden(_) => StatusCode::FORBIDDEN,
        CoreError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        CoreError::TooEarly => StatusCode::from_u16(425).unwrap_or(StatusCode::CONFLICT),
        CoreError::Session(e) => session_status(e),
        CoreError::PathConflict => StatusCode::CONFLICT,
        CoreError::BuffersExhausted => StatusCode::SERVICE_UNAVAILABLE,
        CoreError::RateLimited(_) => StatusCode::TOO_MANY_REQUESTS,
        CoreError::QuotaExceeded { larger_than_cap } => quota_status(*larger_than_cap),
        // The request is well-formed and authorised, but its content is refused (not 403:
        // that reads as a permissions problem, and clients would not show why).
        CoreError::VirusFound(_) => StatusCode::UNPROCESSABLE_ENTITY,
        CoreError::ScannerUnavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
    }
}

/// Default statuses of session errors (a protocol may override some, e.g. tus's 460).
pub fn session_status(e: &SessionError) -> StatusCode {
    use SessionError as S;
    match e {
        S::NotFound => StatusCode::NOT_FOUND,
        S::Gone => StatusCode::GONE,
        S::OffsetMismatch { .. } | S::TargetExists | S::Preempted => StatusCode::CONFLICT,
        S::TooLarge { .. } | S::ReservedBytesExceeded => StatusCode::PAYLOAD_TOO_LARGE,
        S::TooManySessions | S::TooManyForClient => StatusCode::TOO_MANY_REQUESTS,
        S::Storage(_) => StatusCode::INTERNAL_SERVER_ERROR,
        S::InsufficientStorage => StatusCode::INSUFFICIENT_STORAGE,
        S::BuffersExhausted => StatusCode::SERVICE_UNAVAILABLE,
        S::StoreUnavailable => StatusCode::SERVICE_UNAVAILABLE,
        S::StorageUnavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        S::PathConflict => StatusCode::CONFLICT,
        S::QuotaExceeded { larger_than_cap } => quota_status(*larger_than_cap),
        S::VirusFound(_) => StatusCode::UNPROCESSABLE_ENTITY,
        S::ScannerUnavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        S::AlreadyCompleted
        | S::LengthExceeded
        | S::LengthMismatch
        | S::ChecksumMismatch
        | S::Checksum(_)
        | S::DigestMismatch
        | S::InvalidConcat(_)
        | S::Interrupted(_) => StatusCode::BAD_REQUEST,
    }
}

/// `quota_exceeded`: 413 for an upload larger than a cap it falls under (it can never fit:
/// XEP-0363's answer for a file too large for the service), else 507 (space may come back).
fn quota_status(larger_than_cap: bool) -> StatusCode {
    if larger_than_cap {
        StatusCode::PAYLOAD_TOO_LARGE
    } else {
        StatusCode::INSUFFICIENT_STORAGE
    }
}

/// The stable code of an error response, kept in its extensions for metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ErrorCode(pub &'static str);

/// Every error response carries its stable code (the JSON body's `error`, the metric label)
/// in this header too, so that it survives where a body cannot be sent: an HTTP/2 upload
/// refused early is answered with headers only (see [`super::DrainAfterResponse`]).
pub const ERROR_HEADER: http::HeaderName = http::HeaderName::from_static("xferd-error");

/// A JSON error response `{"error": code, "message": ...}`.
pub fn error(err: &CoreError, auth_status: StatusCode) -> Response<Body> {
    let status = status_of(err, auth_status);
    // Internal details stay in the log, not in the response.
    let message = match err {
        CoreError::Storage(_) | CoreError::Session(SessionError::Storage(_)) => {
            "internal storage error".to_string()
        }
        other => other.to_string(),
    };
    let body = Body::json(&serde_json::json!({ "error": err.code(), "message": message }));
    let mut resp = build(status, body);
    resp.headers_mut()
        .insert(ERROR_HEADER, HeaderValue::from_static(err.code()));
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if matches!(
        err,
        CoreError::Session(SessionError::TooManySessions | SessionError::TooManyForClient)
    ) {
        resp.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("60"));
    }
    if let CoreError::RateLimited(wait) = err {
        resp.headers_mut().insert(
            header::RETRY_AFTER,
            HeaderValue::from(super::error::retry_after_secs(wait)),
        );
    }
    if let CoreError::Unavailable(wait) = err {
        resp.headers_mut().insert(
            header::RETRY_AFTER,
            HeaderValue::from(wait.as_secs().max(1)),
        );
    }
    if matches!(
        err,
        CoreError::BuffersExhausted | CoreError::Session(SessionError::BuffersExhausted)
    ) {
        resp.headers_mut().insert(
            header::RETRY_AFTER,
            HeaderValue::from(super::buffers::RETRY_AFTER.as_secs().max(1)),
        );
    }
    // `[scan]` failing closed: when to try again.
    if let CoreError::ScannerUnavailable(wait)
    | CoreError::Session(SessionError::ScannerUnavailable(wait)) = err
    {
        resp.headers_mut().insert(
            header::RETRY_AFTER,
            HeaderValue::from(super::error::retry_after_secs(wait)),
        );
    }
    // A transient storage failure or the storage breaker refusing a session write: when to
    // try again.
    if let CoreError::Session(SessionError::StorageUnavailable(wait)) = err {
        resp.headers_mut().insert(
            header::RETRY_AFTER,
            HeaderValue::from(super::error::retry_after_secs(wait)),
        );
    }
    if matches!(err, CoreError::Session(SessionError::StoreUnavailable)) {
        resp.headers_mut().insert(
            header::RETRY_AFTER,
            HeaderValue::from(super::error::SESSION_STORE_RETRY_AFTER),
        );
    }
    resp.extensions_mut().insert(ErrorCode(err.code()));
    if matches!(err, CoreError::MethodNotAllowed) {
        resp.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static(ALLOWED_METHODS));
    }
    resp
}

/// A response with `body`, its `Content-Length`, and nothing else yet.
pub fn build(status: StatusCode, body: Body) -> Response<Body> {
    let len = body.len();
    let mut resp = Response::new(body);
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    resp
}

/// The CORS preflight answer.
pub fn preflight() -> Response<Body> {
    let mut resp = build(StatusCode::NO_CONTENT, Body::Empty);
    let h = resp.headers_mut();
    h.remove(header::CONTENT_LENGTH);
    h.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static(ALLOWED_METHODS),
    );
    h.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static(ALLOWED_HEADERS),
    );
    h.insert(
        header::ACCESS_CONTROL_MAX_AGE,
        HeaderValue::from_static("86400"),
    );
    h.insert(header::ALLOW, HeaderValue::from_static(ALLOWED_METHODS));
    resp
}

/// Headers every response carries.
pub fn add_common(h: &mut HeaderMap) {
    h.insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    h.insert(
        header::ACCESS_CONTROL_EXPOSE_HEADERS,
        HeaderValue::from_static(EXPOSED_HEADERS),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
}

/// The stable codes of the download errors the core answers without a [`CoreError`] (their
/// responses keep the validators and `Content-Range` a client needs, so they are built in
/// `download.rs`).
pub const PRECONDITION_FAILED: &str = "precondition_failed";
pub const RANGE_NOT_SATISFIABLE: &str = "range_not_satisfiable";

/// Marks a response the core built itself with a 4xx status as an error, as
/// [`error`] does: its stable `code` in [`ERROR_HEADER`] and in the [`ErrorCode`] extension.
/// (Found by the `core_request` fuzz target: a 416 carried no `xferd-error`.)
pub fn mark_error(resp: &mut Response<Body>, code: &'static str) {
    resp.headers_mut()
        .insert(ERROR_HEADER, HeaderValue::from_static(code));
    resp.extensions_mut().insert(ErrorCode(code));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::path::PathError;

    #[test]
    fn xep0363_statuses() {
        let f = StatusCode::FORBIDDEN;
        let cases: Vec<(CoreError, u16)> = vec![
            (CoreError::Auth(AuthError::Mismatch), 403),
            (CoreError::Auth(AuthError::Expired), 403),
            (CoreError::Auth(AuthError::SizeRequired), 411),
            (CoreError::Exists, 409),
            (CoreError::LengthRequired, 411),
            (CoreError::TooLarge { size: 2, max: 1 }, 413),
            (CoreError::SizeMismatch, 400),
            (CoreError::ExtensionNotAllowed("exe".into()), 415),
            (CoreError::InsufficientStorage, 507),
            (CoreError::BadPath(PathError::Traversal), 400),
            (CoreError::NotFound, 404),
            (
                CoreError::QuotaExceeded {
                    larger_than_cap: false,
                },
                507,
            ),
            (
                CoreError::QuotaExceeded {
                    larger_than_cap: true,
                },
                413,
            ),
        ];
        for (e, want) in cases {
            assert_eq!(status_of(&e, f).as_u16(), want, "{e:?}");
        }
        assert_eq!(
            status_of(
                &CoreError::Auth(AuthError::Mismatch),
                StatusCode::UNAUTHORIZED
            )
            .as_u16(),
            401
        );
    }

    #[test]
    fn storage_errors_do_not_leak_details() {
        let e = CoreError::Storage(std::io::Error::other("/secret/path exploded"));
        let r = error(&e, StatusCode::FORBIDDEN);
        match r.body() {
            Body::Full(b) => assert!(!String::from_utf8_lossy(b).contains("/secret")),
            _ => panic!("error bodies are in memory"),
        }
    }

    #[test]
    fn rate_limited_is_429_with_retry_after() {
        let e = CoreError::RateLimited(std::time::Duration::from_millis(2100));
        let r = error(&e, StatusCode::FORBIDDEN);
        assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(r.headers()[header::RETRY_AFTER], "3");
        assert_eq!(r.extensions().get(), Some(&ErrorCode("rate_limited")));
    }
}
