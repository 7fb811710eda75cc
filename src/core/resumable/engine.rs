//! The session engine: one state machine behind tus, the IETF draft and HFS's chunked API.
//!
//! Rules, in the order they apply:
//! 1. Creation checks the limits (sessions in total and per client, reserved bytes, length)
//!    and makes the data file and the record durable before the capability is returned.
//! 2. Appends (tus/IETF `PATCH`) hold the session's writer lock. A new append for the same
//!    session preempts the holder: the old request stops reading, commits what it wrote and
//!    releases, so a client that reconnected never waits for the stale request's timeout.
//! 3. Chunk writes (HFS) go to their own offsets concurrently, without the writer lock.
//! 4. Bytes are fsynced before the record that covers them is committed; an offset is only
//!    ever reported from a committed record. Without a per-request checksum, progress is
//!    committed every `commit_every` bytes, so an interrupted request keeps what it sent;
//!    with one, the request's bytes count only if the checksum matches.
//! 5. When every byte of a known length is present, the file is hashed, checked against an
//!    expected digest, and moved to its target without overwriting; the record is kept
//!    (completed) until it expires so clients can still ask for the offset.
//! 6. Records and data of sessions past their expiry are collected by [`Engine::expire`].
//!    In memory, the engine keeps state only for sessions in progress (the index, bounded by
//!    `max_sessions`): an id without a session never gets an entry, and a session's entry
//!    goes when it completes, is terminated or expires. Only sessions in progress count
//!    against the limits; a completed one is just a record kept for offset queries.
//! 7. The file's SHA-256 is kept as a running hash of the contiguous prefix: appends hash
//!    while they write, out-of-order chunks hash the newly contiguous bytes when the prefix
//!    grows (from the page cache), so completion does not read the file again. After a
//!    restart the running hash is gone and completion hashes what it lacks.
//!
//! Time comes in as Unix seconds; nothing here reads a clock or touches a socket.
//! Writes live in `engine/write.rs`, tus concatenation in `engine/concat.rs`, the error type
//! in [`super::errors`].

use super::checksum;
use super::session::{Completed, Kind, Origin, Session};
use crate::core::error::CoreError;
use crate::core::path::{self, RelPath};
use crate::storage::meta::SessionStore;
use crate::storage::store::{block_on, PartStore, StoreError};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::sync::watch;

mod concat;
mod write;

/// Limits and tuning of the engine.
#[derive(Debug, Clone)]
pub struct Limits {
    pub max_sessions: usize,
    pub max_sessions_per_client: usize,
    pub max_reserved_bytes: u64,
    pub max_length: u64,
    /// Seconds a session lives after its last write.
    pub ttl_secs: u64,
    pub pool: Arc<crate::core::buffers::Pool>,
    /// Bytes between progress commits within one request.
    pub commit_every: u64,
}

pub use super::errors::SessionError;

/// What a new session starts as.
#[derive(Debug, Clone)]
pub struct NewSession {
    pub origin: Origin,
    pub kind: Kind,
    pub target: RelPath,
    pub length: Option<u64>,
    pub signed_size: Option<u64>,
    pub metadata: Option<String>,
    pub owner: String,
    pub expected_sha256: Option<[u8; 32]>,
    pub chunk_size: Option<u64>,
}

/// How a write places its bytes.
#[derive(Debug, Clone, Copy)]
pub enum Placement {
    /// Append at `offset`, which must equal the current offset (tus, IETF).
    Append { offset: u64 },
    /// Write `len` bytes at `offset`, in any order and concurrently (HFS chunks).
    At { offset: u64, len: u64 },
}

/// One write request.
pub struct Write {
    pub placement: Placement,
    /// `Content-Length` of the request, when known.
    pub declared_len: Option<u64>,
    pub checksum: Option<checksum::Wanted>,
    /// IETF `Upload-Complete: ?1`: the upload ends with this request's last byte.
    pub last: bool,
    /// The transfer's buffer lease (from the adaptive engine); `None` = the largest class.
    pub lease: Option<crate::core::buffers::Lease>,
}

struct Slot {
    record: tokio::sync::Mutex<()>,
    writer: tokio::sync::Mutex<()>,
    preempt: watch::Sender<u64>,
    /// Running SHA-256 of the bytes `[0, upto)`.
    prefix: tokio::sync::Mutex<Prefix>,
}

impl Slot {
    fn new() -> Slot {
        Slot {
            record: tokio::sync::Mutex::new(()),
            writer: tokio::sync::Mutex::new(()),
            preempt: watch::channel(0).0,
            prefix: tokio::sync::Mutex::new(Prefix::default()),
        }
    }

    /// Takes the writer lock, first telling a request still writing to stop and commit.
    async fn take_writer(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.preempt.send_modify(|g| *g += 1);
        self.writer.lock().await
    }
}

impl IndexEntry {
    fn new(owner: &str, reserved: u64) -> IndexEntry {
        IndexEntry {
            owner: owner.to_string(),
            reserved,
            slot: Arc::new(Slot::new()),
        }
    }
}

#[derive(Clone, Default)]
struct Prefix {
    sha: Sha256,
    upto: u64,
}

/// A session in progress: what the limits count, and its locks and running hash.
struct IndexEntry {
    owner: String,
    reserved: u64,
    slot: Arc<Slot>,
}

pub struct Engine {
    store: Arc<SessionStore>,
    parts: Arc<dyn PartStore>,
    limits: Limits,
    /// Sessions in progress, and only those (created here or found at start-up; removed
    /// when they complete or are removed). A request holds its session's slot by `Arc`, so
    /// removal never waits for requests and never strands a lock.
    index: Mutex<HashMap<String, IndexEntry>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A poisoned lock only means another thread panicked while holding it; the maps stay
    // consistent (every update is a single insert or remove).
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A storage error as the engine reports it (kinds mapped by [`CoreError`]).
fn stored(e: StoreError) -> SessionError {
    SessionError::from(CoreError::from(e))
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, SessionError> + Send + 'static,
) -> Result<T, SessionError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| SessionError::Storage(e.to_string()))?
}

impl Engine {
    /// Opens the engine over its stores, dropping data files without records and records
    /// whose data file is gone. Blocking (it waits for the part store with
    /// [`block_on`]): call it on the blocking pool.
    pub fn open(
        store: SessionStore,
        parts: Arc<dyn PartStore>,
        limits: Limits,
    ) -> Result<Engine, SessionError> {
        let store = Arc::new(store);
        let mut index = HashMap::new();
        let mut with_data = std::collections::HashSet::new();
        for (id, raw) in store.all().map_err(std::io::Error::from)? {
            let Ok(s) = serde_json::from_slice::<Session>(&raw) else {
                tracing::warn!(%id, "dropping unreadable session record");
                store.delete(&id).map_err(std::io::Error::from)?;
                continue;
            };
            if s.completed.is_none() && !block_on(parts.exists(&id)).map_err(stored)? {
                tracing::warn!(%id, "dropping session whose data file is missing");
                store.delete(&id).map_err(std::io::Error::from)?;
                continue;
            }
            with_data.insert(id.clone());
            if s.completed.is_none() {
                index.insert(id, IndexEntry::new(&s.owner, s.reserved(limits.max_length)));
            }
        }
        for id in block_on(parts.list()).map_err(stored)? {
            if !with_data.contains(&id) {
                block_on(parts.abort(&id)).map_err(stored)?;
            }
        }
        Ok(Engine {
            store,
            parts,
            limits,
            index: Mutex::new(index),
        })
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// How many sessions the engine keeps state for in memory (introspection for tests).
    pub fn tracked(&self) -> usize {
        lock(&self.index).len()
    }

    /// The slot of a session in progress; `None` for any other id (never inserts).
    fn slot(&self, id: &str) -> Option<Arc<Slot>> {
        lock(&self.index).get(id).map(|e| e.slot.clone())
    }

    /// The error for a request that needs a session in progress but found none: the
    /// record tells whether it completed, expired or never existed.
    async fn not_in_progress(&self, id: &str, now: u64) -> SessionError {
        match self.info(id, now).await {
            Ok(s) if s.completed.is_some() => SessionError::AlreadyCompleted,
            // A record without an index entry is being removed.
            Ok(_) => SessionError::Gone,
            Err(e) => e,
        }
    }

    async fn load(&self, id: &str) -> Result<Session, SessionError> {
        if !is_session_id(id) {
            return Err(SessionError::NotFound);
        }
        let store = self.store.clone();
        let key = id.to_string();
        let raw = blocking(move || Ok(store.get(&key).map_err(std::io::Error::from)?)).await?;
        let raw = raw.ok_or(SessionError::NotFound)?;
        serde_json::from_slice(&raw).map_err(|e| SessionError::Storage(e.to_string()))
    }

    async fn save(&self, s: &Session) -> Result<(), SessionError> {
        let store = self.store.clone();
        let raw = serde_json::to_vec(s).map_err(|e| SessionError::Storage(e.to_string()))?;
        let id = s.id.clone();
        blocking(move || Ok(store.put(&id, &raw).map_err(std::io::Error::from)?)).await?;
        let mut index = lock(&self.index);
        if let Some(e) = index.get_mut(&s.id) {
            e.reserved = s.reserved(self.limits.max_length);
        }
        Ok(())
    }

    /// Looks a session up; an expired one is collected and reported gone.
    pub async fn info(&self, id: &str, now: u64) -> Result<Session, SessionError> {
        let s = self.load(id).await?;
        if now > s.expires {
            self.remove(id).await?;
            return Err(SessionError::Gone);
        }
        Ok(s)
    }

    /// Looks a session up for an offset query, first making any request still writing to
    /// it stop and commit (so the offset reported is the true one, not a stale request's).
    pub async fn info_settled(&self, id: &str, now: u64) -> Result<Session, SessionError> {
        if !is_session_id(id) {
            return Err(SessionError::NotFound);
        }
        // Only a session in progress can have a request writing to it.
        let slot = self.slot(id);
        let _w = match &slot {
            Some(slot) => Some(slot.take_writer().await),
            None => None,
        };
        self.info(id, now).await
    }

    /// Creates a session; durable when this returns.
    pub async fn create(&self, new: NewSession, now: u64) -> Result<Session, SessionError> {
        let l = &self.limits;
        if let Some(len) = new.length {
            if len > l.max_length {
                return Err(SessionError::TooLarge { max: l.max_length });
            }
            if new.signed_size.is_some_and(|s| s != len) && new.kind != Kind::Partial {
                return Err(SessionError::LengthMismatch);
            }
        }
        if new.kind != Kind::Partial
            && self.parts.target_taken(&new.target).await.map_err(stored)?
        {
            return Err(SessionError::TargetExists);
        }
        let reserve = new.length.unwrap_or(l.max_length);
        let id = format!("{:032x}", rand::random::<u128>());
        {
            let mut index = lock(&self.index);
            if index.len() >= l.max_sessions {
                return Err(SessionError::TooManySessions);
            }
            if index.values().filter(|e| e.owner == new.owner).count() >= l.max_sessions_per_client
            {
                return Err(SessionError::TooManyForClient);
            }
            let reserved: u64 = index.values().map(|e| e.reserved).sum();
            if reserved.saturating_add(reserve) > l.max_reserved_bytes {
                return Err(SessionError::ReservedBytesExceeded);
            }
            // Reserve now, so concurrent creations cannot overshoot the limits.
            index.insert(id.clone(), IndexEntry::new(&new.owner, reserve));
        }
        let session = Session {
            id: id.clone(),
            origin: new.origin,
            kind: new.kind,
            target: new.target.as_str().to_string(),
            length: new.length,
            signed_size: new.signed_size,
            received: Default::default(),
            metadata: new.metadata,
            owner: new.owner,
            created: now,
            expires: now.saturating_add(l.ttl_secs),
            expected_sha256: new.expected_sha256.map(hex::encode),
            chunk_size: new.chunk_size,
            completed: None,
            part_etags: Vec::new(),
        };
        let created = async {
            self.parts.create(&id).await.map_err(stored)?;
            self.save(&session).await
        }
        .await;
        if let Err(e) = created {
            lock(&self.index).remove(&id);
            if let Err(r) = self.parts.abort(&id).await {
                tracing::warn!(%id, error = %r, "cannot remove the data file of a failed creation");
            }
            return Err(e);
        }
        if session.data_complete() {
            // An empty upload is complete as soon as it exists.
            if let Some(slot) = self.slot(&id) {
                return self.finish(&id, &slot, now).await;
            }
        }
        Ok(session)
    }

    /// Sets a deferred length (tus `Upload-Length` after `Upload-Defer-Length: 1`).
    pub async fn set_length(&self, id: &str, len: u64, now: u64) -> Result<Session, SessionError> {
        let Some(slot) = self.slot(id) else {
            let s = self.info(id, now).await?;
            return match s.length {
                Some(l) if l == len => Ok(s),
                _ if s.completed.is_some() => Err(SessionError::AlreadyCompleted),
                _ => Err(SessionError::Gone),
            };
        };
        let _r = slot.record.lock().await;
        let mut s = self.info(id, now).await?;
        match s.length {
            Some(l) if l == len => return Ok(s),
            Some(_) => return Err(SessionError::LengthMismatch),
            None => {}
        }
        if len > self.limits.max_length {
            return Err(SessionError::TooLarge {
                max: self.limits.max_length,
            });
        }
        if len < s.received.max_end()
            || s.signed_size
                .is_some_and(|x| x != len && s.kind != Kind::Partial)
        {
            return Err(SessionError::LengthMismatch);
        }
        s.length = Some(len);
        self.save(&s).await?;
        Ok(s)
    }

    async fn commit_range(
        &self,
        id: &str,
        slot: &Slot,
        start: u64,
        end: u64,
        set_length: Option<u64>,
        now: u64,
    ) -> Result<Session, SessionError> {
        let _r = slot.record.lock().await;
        let mut s = self.load(id).await?;
        s.received.insert(start, end);
        if let Some(len) = set_length {
            if s.length.is_some_and(|l| l != len)
                || s.signed_size
                    .is_some_and(|x| x != len && s.kind != Kind::Partial)
            {
                return Err(SessionError::LengthMismatch);
            }
            s.length = Some(len);
        }
        s.expires = now.saturating_add(self.limits.ttl_secs);
        self.save(&s).await?;
        Ok(s)
    }

    /// Completes a session whose data is all present: hash, digest check, move into place.
    async fn finish(&self, id: &str, slot: &Slot, now: u64) -> Result<Session, SessionError> {
        let _r = slot.record.lock().await;
        let mut s = self.load(id).await?;
        if s.completed.is_some() || !s.data_complete() {
            return Ok(s);
        }
        let len = s.length.unwrap_or(0);
        let running = {
            let p = slot.prefix.lock().await;
            if p.upto <= len {
                p.clone()
            } else {
                Prefix::default()
            }
        };
        let sha: [u8; 32] = (self.parts)
            .hash_range(id, running.sha, running.upto, len)
            .await
            .map_err(stored)?
            .finalize()
            .into();
        if let Some(expected) = &s.expected_sha256 {
            if *expected != hex::encode(sha) {
                drop(_r);
                self.remove(id).await?;
                return Err(SessionError::DigestMismatch);
            }
        }
        if s.kind != Kind::Partial {
            let target =
                path::validate(&s.target).map_err(|e| SessionError::Storage(e.to_string()))?;
            let moved = match self.parts.complete(id, len, &target).await {
                Ok(()) => Ok(()),
                Err(StoreError::Exists) => Err(SessionError::TargetExists),
                Err(e) => return Err(stored(e)),
            };
            if let Err(e) = moved {
                drop(_r);
                self.remove(id).await?;
                return Err(e);
            }
            tracing::info!(id, target = %s.target, size = len, sha256 = %hex::encode(sha), "resumable upload stored");
        }
        s.completed = Some(Completed {
            sha256: hex::encode(sha),
            at: now,
        });
        s.expires = now.saturating_add(self.limits.ttl_secs);
        self.save(&s).await?;
        // No longer in progress: out of the limits and out of memory.
        lock(&self.index).remove(id);
        drop(_r);
        if s.kind == Kind::Partial {
            self.finish_waiting_finals(id, now).await;
        }
        Ok(s)
    }

    /// Terminates a session (tus `DELETE`, IETF cancellation): a writer in flight is
    /// preempted, then data and record are removed.
    pub async fn terminate(&self, id: &str, now: u64) -> Result<(), SessionError> {
        self.info(id, now).await?;
        let slot = self.slot(id);
        let _w = match &slot {
            Some(slot) => Some(slot.take_writer().await),
            None => None,
        };
        self.remove(id).await
    }

    async fn remove(&self, id: &str) -> Result<(), SessionError> {
        self.parts.abort(id).await.map_err(stored)?;
        let store = self.store.clone();
        let key = id.to_string();
        blocking(move || {
            store.delete(&key).map_err(std::io::Error::from)?;
            Ok(())
        })
        .await?;
        lock(&self.index).remove(id);
        Ok(())
    }

    /// Every stored record, decoded (`None` for an unreadable one).
    async fn all_sessions(&self) -> Result<Vec<(String, Option<Session>)>, SessionError> {
        let store = self.store.clone();
        let all = blocking(move || Ok(store.all().map_err(std::io::Error::from)?)).await?;
        Ok(all
            .into_iter()
            .map(|(id, raw)| (id, serde_json::from_slice::<Session>(&raw).ok()))
            .collect())
    }

    /// Removes every session past its expiry (and unreadable records); returns how many.
    pub async fn expire(&self, now: u64) -> Result<usize, SessionError> {
        let mut n = 0;
        for (id, s) in self.all_sessions().await? {
            if s.is_none_or(|s| now > s.expires) {
                self.remove(&id).await?;
                n += 1;
            }
        }
        Ok(n)
    }
}

/// Session ids are exactly 32 lower-case hex digits.
pub fn is_session_id(id: &str) -> bool {
    id.len() == 32
        && id
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}
