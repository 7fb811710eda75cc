//! The core's one error type. Each variant has a stable machine-readable code; the HTTP
//! status lives in [`super::response`], so the core's logic never speaks in status codes.

use super::auth::AuthError;
use super::path::PathError;

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
}

impl CoreError {
    /// The stable code sent in error bodies and used as a metrics label.
    pub fn code(&self) -> &'static str {
        match self {
            CoreError::BadPath(_) => "bad_path",
            CoreError::Auth(AuthError::Expired) => "signature_expired",
            CoreError::Auth(AuthError::Missing) => "signature_missing",
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
        }
    }
}

impl From<std::io::Error> for CoreError {
    fn from(e: std::io::Error) -> Self {
        if e.raw_os_error() == Some(libc::ENOSPC) || e.raw_os_error() == Some(libc::EDQUOT) {
            CoreError::InsufficientStorage
        } else if path_conflict(&e) {
            CoreError::PathConflict
        } else {
            CoreError::Storage(e)
        }
    }
}

/// Whether an I/O error says the request's path collides with what is stored (a component
/// is a file: ENOTDIR; the target is a directory: EISDIR or EEXIST; a symlinked component
/// refused: ELOOP). Such errors are the client's (409), never a backend failure.
pub fn path_conflict(e: &std::io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::ENOTDIR) | Some(libc::EISDIR) | Some(libc::EEXIST) | Some(libc::ELOOP)
    )
}
