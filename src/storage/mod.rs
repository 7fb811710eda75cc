//! Storage backends. Today: the local filesystem ([`fs::FsStorage`]): uploads go to a
//! temporary file beside their destination, are fsynced and renamed into place without
//! overwriting; downloads use positional reads; names are resolved beneath the root's
//! directory descriptor without following links ([`dirfd`]). Object storage comes later
//! behind the same operations (create temp / write / commit / abort, stat, read at offset).
//! Resumable uploads keep their bytes in a [`store::PartStore`] ([`parts::FsParts`] on the
//! filesystem) and their records in a
//! [`meta::SessionStore`].

pub mod dirfd;
pub mod fs;
pub mod fs_store;
pub mod key;
pub mod mem;
pub mod meta;
pub mod parts;
pub mod store;

#[cfg(test)]
mod contract_tests;

pub use fs::{FileMeta, FsStorage, TempFile};
pub use meta::SessionStore;
pub use parts::FsParts;
pub use store::PartStore;
