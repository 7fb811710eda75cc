//! The durable record of one resumable upload. Stored as JSON in the session store and
//! updated only after the bytes it describes are on disk (fsync before commit).

use super::ranges::RangeSet;
use serde::{Deserialize, Serialize};

/// Which wire protocol created the session (for logs and metrics; the engine ignores it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Origin {
    Tus,
    Ietf,
    Hfs,
}

/// How the session relates to others (tus concatenation).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", tag = "type")]
pub enum Kind {
    /// An upload of a whole file to its target.
    Whole,
    /// A piece of a later concatenation; never lands at a path on its own.
    Partial,
    /// The concatenation of `parts`, in order.
    Final { parts: Vec<String> },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session {
    /// The capability: 128 random bits, hex.
    pub id: String,
    pub origin: Origin,
    pub kind: Kind,
    /// Where the finished file lands (validated relative path).
    pub target: String,
    /// Total length, unless deferred.
    pub length: Option<u64>,
    /// The size bound by a v/v2 signature, which the final length must equal.
    pub signed_size: Option<u64>,
    pub received: RangeSet,
    /// tus `Upload-Metadata`, verbatim.
    pub metadata: Option<String>,
    /// Who created it (limits per client).
    pub owner: String,
    /// Unix seconds.
    pub created: u64,
    pub expires: u64,
    /// Expected SHA-256 of the whole file (`Repr-Digest`), hex.
    pub expected_sha256: Option<String>,
    /// Chunk size advertised for HFS chunked uploads.
    pub chunk_size: Option<u64>,
    /// Set once the file is complete (and, for whole and final uploads, stored at `target`).
    pub completed: Option<Completed>,
    /// Part identifiers of an object-store multipart upload (unused by the filesystem store).
    #[serde(default)]
    pub part_etags: Vec<String>,
    /// SHA-256 (hex) of the data, set just before they move to `target`: a session found
    /// with it and without its data was moved and not yet recorded complete (the process
    /// died between; `engine/finish.rs`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completing: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Completed {
    pub sha256: String,
    pub at: u64,
}

impl Session {
    /// Bytes received contiguously from the start: the offset a client resumes from.
    pub fn offset(&self) -> u64 {
        if self.completed.is_some() {
            return self.length.unwrap_or_else(|| self.received.prefix_end());
        }
        self.received.prefix_end()
    }

    /// True when every byte of a known length has been received.
    pub fn data_complete(&self) -> bool {
        self.length
            .is_some_and(|len| self.received.prefix_end() >= len)
    }

    /// The target of a session marked `completing` (a whole or final upload about to move
    /// into place; `engine/finish.rs` rule 1); `None` for any other.
    pub fn moving_to(&self) -> Option<crate::core::path::RelPath> {
        if self.completing.is_none() || self.kind == Kind::Partial {
            return None;
        }
        crate::core::path::validate(&self.target).ok()
    }

    /// Bytes this session may occupy (for the reserved-bytes limit).
    pub fn reserved(&self, max_length: u64) -> u64 {
        if self.completed.is_some() {
            return 0;
        }
        self.length.unwrap_or(max_length)
    }
}
