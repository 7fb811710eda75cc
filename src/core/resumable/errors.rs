//! The engine's typed errors, each with a stable code (HTTP statuses are mapped in
//! [`crate::core::response`]).

use super::checksum;
use crate::core::error::CoreError;

/// Why a session operation failed. Each has a stable code; statuses are the protocols'.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error("no such upload")]
    NotFound,
    #[error("upload expired or was terminated")]
    Gone,
    #[error("offset {provided} does not match the upload's offset {expected}")]
    OffsetMismatch { expected: u64, provided: u64 },
    #[error("upload is already complete")]
    AlreadyCompleted,
    #[error("data beyond the upload's length")]
    LengthExceeded,
    #[error("length does not match the signed or declared size")]
    LengthMismatch,
    #[error("upload length exceeds the maximum of {max} bytes")]
    TooLarge { max: u64 },
    #[error("too many uploads in progress on this server")]
    TooManySessions,
    #[error("too many uploads in progress for this client")]
    TooManyForClient,
    #[error("not enough reservable storage for this upload")]
    ReservedBytesExceeded,
    #[error("checksum mismatch")]
    ChecksumMismatch,
    #[error("{0}")]
    Checksum(#[from] checksum::ChecksumError),
    #[error("the complete file does not match the expected digest")]
    DigestMismatch,
    #[error("a file already exists at the target path")]
    TargetExists,
    #[error("invalid concatenation: {0}")]
    InvalidConcat(String),
    #[error("request body interrupted: {0}")]
    Interrupted(String),
    #[error("a newer request for this upload took over")]
    Preempted,
    #[error("storage error: {0}")]
    Storage(String),
    #[error("not enough storage space")]
    InsufficientStorage,
    #[error("the server's buffer memory is exhausted; try again shortly")]
    BuffersExhausted,
    /// The target path runs through a stored file, or is a directory (the client's mistake).
    #[error("the path conflicts with an existing file or directory")]
    PathConflict,
    /// A `[quota]` cap would be exceeded by the upload's length.
    #[error("storage quota exceeded")]
    QuotaExceeded { larger_than_cap: bool },
    /// `[scan]`: the completed upload contains a virus; it was removed, nothing stored.
    #[error("the upload contains a virus ({0}); it was not stored")]
    VirusFound(String),
    /// `[scan]`: the scanner failed (fail closed); the upload was removed, nothing stored.
    #[error("the virus scanner is unavailable; try again in {}s", crate::core::error::retry_after_secs(.0))]
    ScannerUnavailable(std::time::Duration),
    /// The shared session store (Redis) cannot be reached; the upload can be resumed later.
    #[error("the session store is unavailable; try again shortly")]
    StoreUnavailable,
    /// Storage is unavailable for now: the backend failed in a way worth retrying (S3
    /// unreachable, timed out, 5xx), or the storage breaker is open (storage keeps failing,
    /// and the write was not tried). Nothing past what is stored was acknowledged; the
    /// upload can be resumed from its offset after the wait.
    #[error("storage is unavailable; try again in {}s", crate::core::error::retry_after_secs(.0))]
    StorageUnavailable(std::time::Duration),
}

impl SessionError {
    pub fn code(&self) -> &'static str {
        match self {
            SessionError::NotFound => "upload_not_found",
            SessionError::Gone => "upload_gone",
            SessionError::OffsetMismatch { .. } => "mismatching_upload_offset",
            SessionError::AlreadyCompleted => "completed_upload",
            SessionError::LengthExceeded => "length_exceeded",
            SessionError::LengthMismatch => "inconsistent_upload_length",
            SessionError::TooLarge { .. } => "too_large",
            SessionError::TooManySessions => "too_many_uploads",
            SessionError::TooManyForClient => "too_many_uploads_for_client",
            SessionError::ReservedBytesExceeded => "storage_reservation_exceeded",
            SessionError::ChecksumMismatch => "checksum_mismatch",
            SessionError::Checksum(checksum::ChecksumError::Unsupported(_)) => {
                "checksum_unsupported"
            }
            SessionError::Checksum(checksum::ChecksumError::MissingTrailer) => {
                "checksum_trailer_missing"
            }
            SessionError::Checksum(_) => "checksum_malformed",
            SessionError::DigestMismatch => "digest_mismatch",
            SessionError::TargetExists => "file_exists",
            SessionError::InvalidConcat(_) => "invalid_concatenation",
            SessionError::Interrupted(_) => "body_incomplete",
            SessionError::Preempted => "preempted",
            SessionError::Storage(_) => "storage_error",
            SessionError::InsufficientStorage => "insufficient_storage",
            SessionError::BuffersExhausted => "buffers_exhausted",
            SessionError::PathConflict => "path_conflict",
            SessionError::QuotaExceeded { .. } => "quota_exceeded",
            SessionError::VirusFound(_) => "virus_found",
            SessionError::ScannerUnavailable(_) => "scanner_unavailable",
            SessionError::StoreUnavailable => "session_store_unavailable",
            SessionError::StorageUnavailable(_) => "storage_unavailable",
        }
    }
}

impl From<std::io::Error> for SessionError {
    fn from(e: std::io::Error) -> Self {
        SessionError::from(CoreError::from(e))
    }
}

impl From<CoreError> for SessionError {
    fn from(e: CoreError) -> Self {
        match e {
            // A full disk (ENOSPC, EDQUOT) is not the reservation limit: 507, not 413.
            CoreError::InsufficientStorage => SessionError::InsufficientStorage,
            CoreError::BodyIncomplete(m) => SessionError::Interrupted(m),
            CoreError::BuffersExhausted => SessionError::BuffersExhausted,
            CoreError::PathConflict => SessionError::PathConflict,
            CoreError::QuotaExceeded { larger_than_cap } => {
                SessionError::QuotaExceeded { larger_than_cap }
            }
            CoreError::VirusFound(name) => SessionError::VirusFound(name),
            CoreError::ScannerUnavailable(wait) => SessionError::ScannerUnavailable(wait),
            CoreError::Unavailable(wait) => SessionError::StorageUnavailable(wait),
            other => SessionError::Storage(other.to_string()),
        }
    }
}
