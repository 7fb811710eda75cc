//! The core's one error type. Each variant has a stable machine-readable code; the HTTP
//! status lives in [`super::response`], so the core's logic never speaks in status codes.

use super::auth::AuthError;
use super::path::PathError;
use crate::storage::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum CoreError {
    #[error("bad path: {0}")]
    BadPath(#[from] PathError),
    #[error("not authorised: {0}")]
    Auth(#[from] AuthError),
    #[error("Content-Length is required for signed uploads")]
    LengthRequired,
    #[error("upload of {size} bytes exceeds the limit of {max} bytes")]
    TooLarge { size: u64, max: u64 },
    #[error("body length does not match the declared size")]
    SizeMismatch,
    #[error("the request body ended before the declared size: {0}")]
    BodyIncomplete(String),
    #[error("file extension `{0}` is not allowed")]
    ExtensionNotAllowed(String),
    #[error("a file already exists at this path")]
    Exists,
    #[error("no such file")]
    NotFound,
    #[error("method not allowed")]
    MethodNotAllowed,
    #[error("not enough storage space")]
    InsufficientStorage,
    #[error("storage error: {0}")]
    Storage(std::io::Error),
    #[error("{0}")]
    Session(#[from] super::resumable::SessionError),
    #[error("bad request: {0}")]
    BadRequest(String),
    #[error("forbidden: {0}")]
    Forbidden(&'static str),
    #[error("sent in 0-RTT early data before the handshake completed; repeat it")]
    TooEarly,
    #[error("storage is failing; try again in {}s", .0.as_secs().max(1))]
    Unavailable(std::time::Duration),
    /// The path collides with what is stored: a component is a file, or the target is a
    /// directory (ENOTDIR, EISDIR, EEXIST, ELOOP). The client's mistake, not a storage failure.
    #[error("the path conflicts with an existing file or directory")]
    PathConflict,
    /// The buffer memory cap (`performance.buffer_memory_limit`) stayed reached for the
    /// whole wait; not a storage failure.
    #[error("the server's buffer memory is exhausted; try again shortly")]
    BuffersExhausted,
    /// A `[rate_limit]` bucket of this client or path is empty; a token is back after this
    /// long. The client's doing, not a storage failure.
    #[error("too many requests; try again in {}s", retry_after_secs(.0))]
    RateLimited(std::time::Duration),
    /// A `[quota]` cap would be exceeded by this upload's length (`larger_than_cap`: the
    /// upload alone is larger than a cap it falls under, so it can never fit).
    #[error("storage quota exceeded")]
    QuotaExceeded { larger_than_cap: bool },
    /// `[scan]`: the virus scanner found this signature; nothing was stored.
    #[error("the upload contains a virus ({0}); it was not stored")]
    VirusFound(String),
    /// `[scan]`: the virus scanner failed and `scan.fail_open` is off; nothing was stored.
    #[error("the virus scanner is unavailable; try again in {}s", retry_after_secs(.0))]
    ScannerUnavailable(std::time::Duration),
}

/// Whole seconds to wait, rounded up, at least 1 (`Retry-After`).
pub fn retry_after_secs(wait: &std::time::Duration) -> u64 {
    let s = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    s.max(1)
}

impl CoreError {
    /// The stable code sent in error bodies and used as a metrics label.
    pub fn code(&self) -> &'static str {
        match self {
            CoreError::BadPath(_) => "bad_path",
            CoreError::Auth(AuthError::Expired) => "signature_expired",
            CoreError::Auth(AuthError::Missing) => "signature_missing",
            CoreError::Auth(AuthError::Repeated) => "signature_parameter_repeated",
            CoreError::Auth(AuthError::LifetimeExceeded) => "signature_lifetime_exceeded",
            CoreError::Auth(_) => "signature_invalid",
            CoreError::LengthRequired => "length_required",
            CoreError::TooLarge { .. } => "too_large",
            CoreError::SizeMismatch => "size_mismatch",
            CoreError::BodyIncomplete(_) => "body_incomplete",
            CoreError::ExtensionNotAllowed(_) => "extension_not_allowed",
            CoreError::Exists => "file_exists",
            CoreError::NotFound => "not_found",
            CoreError::MethodNotAllowed => "method_not_allowed",
            CoreError::InsufficientStorage => "insufficient_storage",
            CoreError::Storage(_) => "storage_error",
            CoreError::Session(e) => e.code(),
            CoreError::BadRequest(_) => "bad_request",
            CoreError::Forbidden(_) => "forbidden",
            CoreError::Unavailable(_) => "storage_unavailable",
            CoreError::TooEarly => "too_early",
            CoreError::PathConflict => "path_conflict",
            CoreError::BuffersExhausted => "buffers_exhausted",
            CoreError::RateLimited(_) => "rate_limited",
            CoreError::QuotaExceeded { .. } => "quota_exceeded",
            CoreError::VirusFound(_) => "virus_found",
            CoreError::ScannerUnavailable(_) => "scanner_unavailable",
        }
    }
}

/// Every stable code a [`CoreError`] (and through it a session error) can have, for
/// metrics series that exist from start-up. Kept complete by a test below.
pub const ALL_CODES: &[&str] = &[
    "bad_path",
    "signature_expired",
    "signature_missing",
    "signature_invalid",
    "length_required",
    "too_large",
    "size_mismatch",
    "body_incomplete",
    "extension_not_allowed",
    "file_exists",
    "not_found",
    "method_not_allowed",
    "insufficient_storage",
    "storage_error",
    "bad_request",
    "forbidden",
    "storage_unavailable",
    "too_early",
    "signature_parameter_repeated",
    "signature_lifetime_exceeded",
    "path_conflict",
    "buffers_exhausted",
    "rate_limited",
    // Session errors (tus, IETF, HFS uploads).
    "upload_not_found",
    "upload_gone",
    "mismatching_upload_offset",
    "completed_upload",
    "length_exceeded",
    "inconsistent_upload_length",
    "too_many_uploads",
    "too_many_uploads_for_client",
    "storage_reservation_exceeded",
    "checksum_mismatch",
    "checksum_unsupported",
    "checksum_trailer_missing",
    "checksum_malformed",
    "digest_mismatch",
    "invalid_concatenation",
    "preempted",
    // Quotas (PUT, form and resumable uploads alike).
    "quota_exceeded",
    // Virus scanning (`[scan]`), single-shot and resumable.
    "virus_found",
    "scanner_unavailable",
    "session_store_unavailable",
    // Download refusals built in `download.rs` (see `response::mark_error`).
    "precondition_failed",
    "range_not_satisfiable",
];

/// Seconds a client is told to wait when the shared session store is unavailable.
pub const SESSION_STORE_RETRY_AFTER: u64 = 2;

impl From<std::io::Error> for CoreError {
    fn from(e: std::io::Error) -> Self {
        CoreError::from(StoreError::from(e))
    }
}

/// Storage error kinds -> core errors (the backend classified its own failures).
impl From<StoreError> for CoreError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound => CoreError::NotFound,
            StoreError::Exists => CoreError::Exists,
            StoreError::PathConflict(_) => CoreError::PathConflict,
            StoreError::NoSpace(_) => CoreError::InsufficientStorage,
            StoreError::Transient(e) | StoreError::Other(e) => CoreError::Storage(e),
        }
    }
}

/// Whether an I/O error says the request's path collides with what is stored (a component
/// is a file: ENOTDIR; the target is a directory: EISDIR or EEXIST; a symlinked component
/// refused: ELOOP). Such errors are the client's (409), never a backend failure. The
/// classification is the storage layer's ([`crate::storage::store::is_path_conflict`]).
pub fn path_conflict(e: &std::io::Error) -> bool {
    crate::storage::store::is_path_conflict(e)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::resumable::checksum::ChecksumError;
    use crate::core::resumable::SessionError as S;

    /// Fails to compile when a variant is added: add it to `samples` (and its code to
    /// [`ALL_CODES`]).
    fn exhaustive(e: &CoreError) {
        match e {
            CoreError::BadPath(_)
            | CoreError::Auth(_)
            | CoreError::LengthRequired
            | CoreError::TooLarge { .. }
            | CoreError::SizeMismatch
            | CoreError::BodyIncomplete(_)
            | CoreError::ExtensionNotAllowed(_)
            | CoreError::Exists
            | CoreError::NotFound
            | CoreError::MethodNotAllowed
            | CoreError::InsufficientStorage
            | CoreError::Storage(_)
            | CoreError::Session(_)
            | CoreError::BadRequest(_)
            | CoreError::Forbidden(_)
            | CoreError::TooEarly
            | CoreError::Unavailable(_)
            | CoreError::PathConflict
            | CoreError::BuffersExhausted
            | CoreError::RateLimited(_)
            | CoreError::QuotaExceeded { .. } => {}
            CoreError::VirusFound(_) | CoreError::ScannerUnavailable(_) => {}
        }
    }

    /// Same for session errors: a new variant must be added to [`samples`].
    fn exhaustive_session(e: &S) {
        match e {
            S::NotFound
            | S::Gone
            | S::OffsetMismatch { .. }
            | S::AlreadyCompleted
            | S::LengthExceeded
            | S::LengthMismatch
            | S::TooLarge { .. }
            | S::TooManySessions
            | S::TooManyForClient
            | S::ReservedBytesExceeded
            | S::ChecksumMismatch
            | S::Checksum(_)
            | S::DigestMismatch
            | S::TargetExists
            | S::InvalidConcat(_)
            | S::Interrupted(_)
            | S::Preempted
            | S::Storage(_)
            | S::BuffersExhausted
            | S::InsufficientStorage
            | S::PathConflict
            | S::QuotaExceeded { .. } => {}
            S::VirusFound(_) | S::ScannerUnavailable(_) => {}
            S::StoreUnavailable => {}
            S::StorageUnavailable(_) => {}
        }
    }

    /// Same for signature errors.
    fn exhaustive_auth(e: &AuthError) {
        match e {
            AuthError::Missing
            | AuthError::Malformed
            | AuthError::Mismatch
            | AuthError::Expired
            | AuthError::SizeRequired
            | AuthError::Repeated
            | AuthError::LifetimeExceeded => {}
        }
    }

    fn samples() -> Vec<CoreError> {
        let sessions = vec![
            S::NotFound,
            S::Gone,
            S::OffsetMismatch {
                expected: 1,
                provided: 2,
            },
            S::AlreadyCompleted,
            S::LengthExceeded,
            S::LengthMismatch,
            S::TooLarge { max: 1 },
            S::TooManySessions,
            S::TooManyForClient,
            S::ReservedBytesExceeded,
            S::ChecksumMismatch,
            S::Checksum(ChecksumError::Unsupported("x".into())),
            S::Checksum(ChecksumError::MissingTrailer),
            S::DigestMismatch,
            S::TargetExists,
            S::InvalidConcat("x".into()),
            S::Interrupted("x".into()),
            S::Preempted,
            S::Storage("x".into()),
            S::BuffersExhausted,
            S::InsufficientStorage,
            S::PathConflict,
            S::QuotaExceeded {
                larger_than_cap: false,
            },
            S::VirusFound("Eicar".into()),
            S::ScannerUnavailable(std::time::Duration::from_secs(5)),
            S::StoreUnavailable,
            S::StorageUnavailable(std::time::Duration::from_secs(2)),
        ];
        for s in &sessions {
            exhaustive_session(s);
        }
        let mut all = vec![
            CoreError::BadPath(PathError::Traversal),
            CoreError::Auth(AuthError::Expired),
            CoreError::Auth(AuthError::Missing),
            CoreError::Auth(AuthError::Mismatch),
            CoreError::Auth(AuthError::Malformed),
            CoreError::Auth(AuthError::SizeRequired),
            CoreError::Auth(AuthError::Repeated),
            CoreError::Auth(AuthError::LifetimeExceeded),
            CoreError::LengthRequired,
            CoreError::TooLarge { size: 2, max: 1 },
            CoreError::SizeMismatch,
            CoreError::BodyIncomplete("x".into()),
            CoreError::ExtensionNotAllowed("x".into()),
            CoreError::Exists,
            CoreError::NotFound,
            CoreError::MethodNotAllowed,
            CoreError::InsufficientStorage,
            CoreError::Storage(std::io::Error::other("x")),
            CoreError::BadRequest("x".into()),
            CoreError::Forbidden("x"),
            CoreError::TooEarly,
            CoreError::Unavailable(std::time::Duration::from_secs(1)),
            CoreError::PathConflict,
            CoreError::BuffersExhausted,
            CoreError::RateLimited(std::time::Duration::from_millis(1500)),
            CoreError::QuotaExceeded {
                larger_than_cap: true,
            },
            CoreError::VirusFound("Eicar".into()),
            CoreError::ScannerUnavailable(std::time::Duration::from_secs(5)),
        ];
        all.extend(sessions.into_iter().map(CoreError::Session));
        all
    }

    #[test]
    fn retry_after_rounds_up() {
        use std::time::Duration;
        assert_eq!(retry_after_secs(&Duration::from_millis(1500)), 2);
        assert_eq!(retry_after_secs(&Duration::from_secs(3)), 3);
        assert_eq!(retry_after_secs(&Duration::ZERO), 1);
    }

    #[test]
    fn every_code_is_listed_once() {
        for e in samples() {
            exhaustive(&e);
            if let CoreError::Auth(a) = &e {
                exhaustive_auth(a);
            }
            assert!(ALL_CODES.contains(&e.code()), "{} missing", e.code());
        }
        let mut seen = std::collections::HashSet::new();
        for c in ALL_CODES {
            assert!(seen.insert(c), "{c} listed twice");
            assert!(
                c.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'),
                "{c}: a metrics label value"
            );
        }
    }
}
