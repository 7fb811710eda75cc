//! Resumable uploads: one session engine ([`engine`]) behind three wire protocols - tus
//! 1.0 ([`tus`]), the IETF resumable-upload draft ([`ietf`]) and HFS's chunked API
//! ([`hfs`]). Sessions are created from a signed URL (the signature
//! authorises a target path, and for v/v2 a size, whatever protocol delivers the bytes);
//! follow-up requests are authorised by the session's unguessable id alone.

pub mod checksum;
pub mod common;
pub mod engine;
pub mod errors;
pub mod form;
pub mod hfs;
pub mod ietf;
pub mod ranges;
pub mod session;
pub mod tus;

pub use engine::{Engine, Limits, NewSession, Placement, SessionError, Write, ORPHAN_GRACE_SECS};
pub use session::{Kind, Origin, Session};

#[cfg(test)]
mod engine_defect_tests;
#[cfg(test)]
mod engine_tests;
