//! Storage: the contract the core stores through, and its backends. The leaf layer: it
//! imports nothing else of the crate (`tests/boundaries.rs`).
//!
//! - [`key`]: [`key::Key`], a validated relative name (the core's `RelPath`).
//! - [`store`]: the contract. [`store::Store`] (stat, range reads, staged writes that commit
//!   without overwriting, delete, paged list, declared capabilities) for finished files,
//!   [`store::PartStore`] (create, write at a placement, complete into a key, abort, list)
//!   for resumable uploads in progress; [`store::StoreError`] kinds instead of errnos.
//! - Filesystem backend: [`fs::FsStorage`] (temporary file beside the destination, fsync,
//!   `renameat2(RENAME_NOREPLACE)`, directory fsync, positional reads; [`fs_store`] is its
//!   contract impl) and [`parts::FsParts`] (one file per session under `.xferd-sessions/`,
//!   `pwrite` at offsets); names resolved beneath the root's descriptor without following
//!   links ([`dirfd`]).
//! - [`mem`]: the same semantics in memory, bounded (core and contract tests).
//! - [`meta`]: the session records (redb).
//!
//! - [`s3`]: the S3 backend (any S3-compatible store): its own SigV4 client, multipart
//!   staged writes committed with `If-None-Match: *`, streamed ranged reads.
//!
//! An object-store backend implements the same two traits (see [`store`]'s module doc).

pub mod cas;
pub mod dirfd;
pub mod fs;
pub mod fs_store;
pub mod key;
pub mod mem;
pub mod meta;
pub mod parts;
pub mod s3;
pub mod store;

#[cfg(test)]
mod contract_tests;

pub use fs::{FsStorage, TempFile};
pub use meta::SessionStore;
pub use parts::FsParts;
pub use store::PartStore;
