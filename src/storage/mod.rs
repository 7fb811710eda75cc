//! Storage backends. Today: the local filesystem ([`fs::FsStorage`]): uploads go to a
//! temporary file beside their destination, are fsynced and renamed into place without
//! overwriting; downloads use positional reads. Object storage comes later behind the same
//! operations (create temp / write / commit / abort, stat, read at offset).

pub mod fs;

pub use fs::{FileMeta, FsStorage, TempFile};
