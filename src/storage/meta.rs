//! Session state behind two traits, so that more than one instance can serve the same
//! uploads: [`SessionRecords`] (the durable records of resumable uploads) and [`Locker`]
//! (the one-writer lock per upload, with a fencing token and a "please release" signal).
//!
//! Rules every implementation keeps:
//! 1. A record is opaque bytes plus a [`Summary`] the store can read (owner, open or not,
//!    reserved bytes, expiry). Counts and reserved bytes are computed by the store from the
//!    summaries of *open* records, so a shared store answers for every instance; a
//!    completed record counts for nothing.
//! 2. Every record has a version. [`SessionRecords::put_if`] and [`SessionRecords::delete`]
//!    compare it and refuse with [`RecordError::Conflict`] when the record changed since it
//!    was read (compare-and-set), so no read-modify-write is lost between instances.
//! 3. A write made under a lock carries the lock's fencing token. The store keeps the
//!    highest token that wrote the record and refuses a lower one ([`RecordError::Fenced`]):
//!    a stale holder that lost its lock cannot overwrite what the new holder committed.
//! 4. Creation ([`SessionRecords::insert`]) checks the limits ([`Quota`]) and inserts in one
//!    atomic step, so concurrent creations on any instance cannot overshoot them.
//! 5. Durable means durable: the redb store fsyncs on commit, before a call returns.
//!
//! Implementations: [`SessionStore`] (redb, local and durable: redb opens its file once per
//! process, so its in-memory counts are authoritative), [`MemRecords`] (in-process, for
//! tests), [`MemLocker`] (in-process lock, used with redb), and for several instances
//! [`RedisRecords`] and [`RedisLocker`] (one shared Redis, `[cluster] redis_url`: Lua
//! scripts make each write one atomic step; the lock is a lease with a polled release
//! request). Client profiles have their own store, [`ProfileStore`].

use futures_util::future::BoxFuture;
use serde::{Deserialize, Serialize};

mod lock;
mod mem;
mod redb_store;
mod redis;
mod redis_lock;

#[cfg(test)]
mod contract_tests;

pub use lock::{Guard, LockError, Locker, MemLocker};
pub use mem::MemRecords;
pub use redb_store::{MetaError, ProfileStore, SessionStore};
pub use redis::{Redis, RedisRecords};
pub use redis_lock::RedisLocker;

/// A record's version, for compare-and-set. Starts at 1; every write increments it.
pub type Version = u64;

/// What the store itself knows about a record (the rest is the engine's bytes).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary {
    /// Who created it (per-client limits).
    pub owner: String,
    /// In progress: counts against the limits. A completed record is not open.
    pub open: bool,
    /// Bytes it may still occupy (open records only).
    pub reserved: u64,
    /// Unix seconds after which it may be collected.
    pub expires: u64,
}

/// A record as written: the summary and the engine's opaque body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub summary: Summary,
    pub body: Vec<u8>,
}

/// A record as read, with its version and the highest fencing token that wrote it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    pub version: Version,
    pub fence: u64,
    pub record: Record,
}

/// The limits a creation must fit in (rule 4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quota {
    pub max_open: usize,
    pub max_open_per_owner: usize,
    pub max_reserved: u64,
}

/// Open records: in total, for one owner, and the bytes they reserve.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Counts {
    pub open: usize,
    pub open_for_owner: usize,
    pub reserved: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    /// The record changed (or vanished, or appeared) since it was read.
    #[error("the record changed since it was read")]
    Conflict,
    /// A newer lock holder has written the record.
    #[error("a newer lock holder wrote the record")]
    Fenced,
    #[error("too many open records")]
    TooManyOpen,
    #[error("too many open records for this owner")]
    TooManyForOwner,
    #[error("not enough reservable bytes")]
    ReservedExceeded,
    #[error("session store: {0}")]
    Store(String),
    /// The store's filesystem is full: nothing was written (try again once there is room).
    #[error("session store full: {0}")]
    Full(String),
    /// The shared store cannot be reached or did not answer in time (try again later).
    #[error("session store unavailable: {0}")]
    Unavailable(String),
}

pub type RecordResult<T> = Result<T, RecordError>;

/// The durable records of resumable uploads (see the module rules). Object-safe; used as
/// `Arc<dyn SessionRecords>`.
pub trait SessionRecords: Send + Sync {
    fn get<'a>(&'a self, id: &'a str) -> BoxFuture<'a, RecordResult<Option<Stored>>>;

    /// Inserts a new record if it fits `quota` (and the id is free: else `Conflict`).
    fn insert<'a>(
        &'a self,
        id: &'a str,
        record: Record,
        quota: Quota,
    ) -> BoxFuture<'a, RecordResult<Version>>;

    /// Replaces the record if its version is still `expected` and no newer fencing token
    /// has written it; returns the new version.
    fn put_if<'a>(
        &'a self,
        id: &'a str,
        record: Record,
        expected: Version,
        fence: Option<u64>,
    ) -> BoxFuture<'a, RecordResult<Version>>;

    /// Deletes the record (only if still at `expected`, when given). `Ok(false)`: it was
    /// already gone.
    fn delete<'a>(
        &'a self,
        id: &'a str,
        expected: Option<Version>,
    ) -> BoxFuture<'a, RecordResult<bool>>;

    /// Every record (expiry, recovery, concatenation lookups).
    fn scan(&self) -> BoxFuture<'_, RecordResult<Vec<(String, Stored)>>>;

    /// Open records in total and for `owner`, and the bytes they reserve.
    fn counts<'a>(&'a self, owner: &'a str) -> BoxFuture<'a, RecordResult<Counts>>;
}

/// Checks a creation against a quota, given the current counts (shared by the stores).
pub(crate) fn check_quota(c: &Counts, quota: &Quota, new: &Summary) -> RecordResult<()> {
    if !new.open {
        return Ok(());
    }
    if c.open >= quota.max_open {
        return Err(RecordError::TooManyOpen);
    }
    if c.open_for_owner >= quota.max_open_per_owner {
        return Err(RecordError::TooManyForOwner);
    }
    if c.reserved.saturating_add(new.reserved) > quota.max_reserved {
        return Err(RecordError::ReservedExceeded);
    }
    Ok(())
}

/// The fencing rule (rule 3), shared by the stores: `Ok(new stored fence)` or `Fenced`.
pub(crate) fn check_fence(stored: u64, fence: Option<u64>) -> RecordResult<u64> {
    match fence {
        Some(t) if t < stored => Err(RecordError::Fenced),
        Some(t) => Ok(t),
        None => Ok(stored),
    }
}
