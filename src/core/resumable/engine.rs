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
//! 7. The file's SHA-256 is kept as a running hash of the contiguous prefix: appends hash
//!    while they write, out-of-order chunks hash the newly contiguous bytes when the prefix
//!    grows (from the page cache), so completion does not read the file again. After a
//!    restart the running hash is gone and completion hashes what it lacks.
//!
//! Time comes in as Unix seconds; nothing here reads a clock or touches a socket.

use super::checksum;
use super::session::{Completed, Kind, Origin, Session};
use crate::core::body::BodyStream;
use crate::core::error::CoreError;
use crate::core::path::{self, RelPath};
use crate::core::stream::{Digests, Writer};
use crate::storage::fs::CommitError;
use crate::storage::{PartStore, SessionStore};
use futures_util::StreamExt;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::sync::watch;

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
    #[error("the server's buffer memory is exhausted; try again shortly")]
    BuffersExhausted,
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
            SessionError::BuffersExhausted => "buffers_exhausted",
        }
    }
}

impl From<std::io::Error> for SessionError {
    fn from(e: std::io::Error) -> Self {
        SessionError::Storage(e.to_string())
    }
}

impl From<CoreError> for SessionError {
    fn from(e: CoreError) -> Self {
        match e {
            CoreError::InsufficientStorage => SessionError::ReservedBytesExceeded,
            CoreError::BodyIncomplete(m) => SessionError::Interrupted(m),
            CoreError::BuffersExhausted => SessionError::BuffersExhausted,
            other => SessionError::Storage(other.to_string()),
        }
    }
}

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
    /// Takes the writer lock, first telling a request still writing to stop and commit.
    async fn take_writer(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.preempt.send_modify(|g| *g += 1);
        self.writer.lock().await
    }
}

#[derive(Clone, Default)]
struct Prefix {
    sha: Sha256,
    upto: u64,
}

#[derive(Clone)]
struct IndexEntry {
    owner: String,
    reserved: u64,
}

pub struct Engine {
    store: Arc<SessionStore>,
    parts: PartStore,
    limits: Limits,
    index: Mutex<HashMap<String, IndexEntry>>,
    slots: Mutex<HashMap<String, Arc<Slot>>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A poisoned lock only means another thread panicked while holding it; the maps stay
    // consistent (every update is a single insert or remove).
    m.lock().unwrap_or_else(|p| p.into_inner())
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
    /// whose data file is gone.
    pub fn open(
        store: SessionStore,
        parts: PartStore,
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
            if s.completed.is_none() && !parts.exists(&id) {
                tracing::warn!(%id, "dropping session whose data file is missing");
                store.delete(&id).map_err(std::io::Error::from)?;
                continue;
            }
            with_data.insert(id.clone());
            index.insert(
                id,
                IndexEntry {
                    owner: s.owner.clone(),
                    reserved: s.reserved(limits.max_length),
                },
            );
        }
        for id in parts.list()? {
            if !with_data.contains(&id) {
                parts.remove(&id)?;
            }
        }
        Ok(Engine {
            store,
            parts,
            limits,
            index: Mutex::new(index),
            slots: Mutex::new(HashMap::new()),
        })
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    fn slot(&self, id: &str) -> Arc<Slot> {
        lock(&self.slots)
            .entry(id.to_string())
            .or_insert_with(|| {
                Arc::new(Slot {
                    record: tokio::sync::Mutex::new(()),
                    writer: tokio::sync::Mutex::new(()),
                    preempt: watch::channel(0).0,
                    prefix: tokio::sync::Mutex::new(Prefix::default()),
                })
            })
            .clone()
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
        let slot = self.slot(id);
        let _w = slot.take_writer().await;
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
        if new.kind != Kind::Partial {
            let parts = self.parts.clone();
            let target = new.target.clone();
            if blocking(move || Ok(parts.target_exists(&target)?)).await? {
                return Err(SessionError::TargetExists);
            }
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
            index.insert(
                id.clone(),
                IndexEntry {
                    owner: new.owner.clone(),
                    reserved: reserve,
                },
            );
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
        let parts = self.parts.clone();
        let pid = id.clone();
        let created = async {
            blocking(move || Ok(parts.create(&pid)?)).await?;
            self.save(&session).await
        }
        .await;
        if let Err(e) = created {
            lock(&self.index).remove(&id);
            let _ = self.parts.remove(&id);
            return Err(e);
        }
        if session.data_complete() {
            // An empty upload is complete as soon as it exists.
            return self.finish(&id, now).await;
        }
        Ok(session)
    }

    /// Sets a deferred length (tus `Upload-Length` after `Upload-Defer-Length: 1`).
    pub async fn set_length(&self, id: &str, len: u64, now: u64) -> Result<Session, SessionError> {
        let slot = self.slot(id);
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

    /// Writes one request's body into a session; returns the session after the write
    /// (completed, if this write finished it).
    pub async fn write(
        &self,
        id: &str,
        mut w: Write,
        body: &mut BodyStream,
        now: u64,
    ) -> Result<Session, SessionError> {
        let slot = self.slot(id);
        let (_writer, mut preempted) = match w.placement {
            Placement::Append { .. } => {
                let guard = slot.take_writer().await;
                let mut rx = slot.preempt.subscribe();
                rx.mark_unchanged();
                (Some(guard), Some(rx))
            }
            Placement::At { .. } => (None, None),
        };
        let s = self.info(id, now).await?;
        if s.completed.is_some() {
            return Err(SessionError::AlreadyCompleted);
        }
        let (start, expected_len) = match w.placement {
            Placement::Append { offset } => {
                if offset != s.offset() {
                    return Err(SessionError::OffsetMismatch {
                        expected: s.offset(),
                        provided: offset,
                    });
                }
                (offset, w.declared_len)
            }
            Placement::At { offset, len } => {
                if s.received.contains(offset, offset + len) {
                    // A repeated chunk: acknowledged again, its bytes discarded.
                    while let Some(Ok(_)) = body.next().await {}
                    return Ok(s);
                }
                (offset, Some(len))
            }
        };
        let limit = s.length.unwrap_or(self.limits.max_length);
        if expected_len.is_some_and(|n| start.saturating_add(n) > limit) {
            return Err(if s.length.is_some() {
                SessionError::LengthExceeded
            } else {
                SessionError::TooLarge {
                    max: self.limits.max_length,
                }
            });
        }
        let parts = self.parts.clone();
        let pid = id.to_string();
        let file = blocking(move || Ok(parts.open_write(&pid)?)).await?;
        // An append that continues the running hash carries it (exclusive: writer lock).
        let mut prefix = match w.placement {
            Placement::Append { .. } => Some(slot.prefix.lock().await),
            Placement::At { .. } => None,
        };
        let carry = prefix
            .as_ref()
            .filter(|p| p.upto == start)
            .map(|p| p.sha.clone());
        let digests = Digests {
            sha256: carry,
            check: w.checksum.as_ref().map(checksum::Wanted::hasher),
        };
        let lease = match w.lease.take() {
            Some(lease) => lease,
            None => (self.limits.pool.lease_wait(self.limits.pool.max()).await)
                .map_err(|_| SessionError::BuffersExhausted)?,
        };
        let mut writer = Writer::new(file, start, lease, digests);
        let mut committed = start;
        let mut failure: Option<SessionError> = None;
        loop {
            let next = match preempted.as_mut() {
                Some(rx) => tokio::select! {
                    c = body.next() => c,
                    _ = rx.changed() => { failure = Some(SessionError::Preempted); break }
                },
                None => body.next().await,
            };
            match next {
                Some(Ok(chunk)) => {
                    if writer.end().saturating_add(chunk.len() as u64) > limit
                        || expected_len.is_some_and(|n| writer.accepted() + chunk.len() as u64 > n)
                    {
                        failure = Some(SessionError::LengthExceeded);
                        break;
                    }
                    writer.push(&chunk).await.map_err(SessionError::from)?;
                    if w.checksum.is_none() && writer.end() - committed >= self.limits.commit_every
                    {
                        writer.sync().await.map_err(SessionError::from)?;
                        self.commit_range(id, committed, writer.end(), None, now)
                            .await?;
                        committed = writer.end();
                    }
                }
                Some(Err(e)) => {
                    failure = Some(SessionError::Interrupted(e.0));
                    break;
                }
                None => break,
            }
        }
        writer.sync().await.map_err(SessionError::from)?;
        let end = writer.end();
        let accepted = writer.accepted();
        let (_file, digests) = writer.finish().await.map_err(SessionError::from)?;
        if failure.is_none() && expected_len.is_some_and(|n| accepted != n) {
            failure = Some(SessionError::Interrupted(format!(
                "body ended after {accepted} of {} bytes",
                expected_len.unwrap_or(0)
            )));
        }
        if let (Some(wanted), Some(hash)) = (&w.checksum, digests.check) {
            // With a checksum, the request's bytes count all or nothing.
            if let Some(f) = failure {
                return Err(f);
            }
            if !wanted.verify(hash)? {
                return Err(SessionError::ChecksumMismatch);
            }
        }
        if matches!(w.placement, Placement::At { .. }) && failure.is_some() {
            // A chunk counts only whole.
            return Err(failure.unwrap_or(SessionError::Preempted));
        }
        let set_len = (w.last && failure.is_none()).then_some(end);
        let s = self.commit_range(id, committed, end, set_len, now).await?;
        match (prefix.as_mut(), digests.sha256) {
            (Some(p), Some(sha)) => {
                p.sha = sha;
                p.upto = end;
            }
            // An append behind the running hash (after a restart): completion hashes the rest.
            (Some(_), None) => {}
            (None, _) => {
                self.extend_prefix(id, &slot, s.received.prefix_end())
                    .await?;
            }
        }
        drop(prefix);
        if let Some(f) = failure {
            return Err(f);
        }
        if s.data_complete() {
            return self.finish(id, now).await;
        }
        Ok(s)
    }

    /// Hashes newly contiguous bytes into the running prefix hash (out-of-order chunks).
    async fn extend_prefix(
        &self,
        id: &str,
        slot: &Slot,
        prefix_end: u64,
    ) -> Result<(), SessionError> {
        let mut p = slot.prefix.lock().await;
        if p.upto >= prefix_end {
            return Ok(());
        }
        let (parts, pid, mut sha, from) =
            (self.parts.clone(), id.to_string(), p.sha.clone(), p.upto);
        let sha = blocking(move || {
            parts.hash_range(&pid, &mut sha, from, prefix_end)?;
            Ok(sha)
        })
        .await?;
        p.sha = sha;
        p.upto = prefix_end;
        Ok(())
    }

    async fn commit_range(
        &self,
        id: &str,
        start: u64,
        end: u64,
        set_length: Option<u64>,
        now: u64,
    ) -> Result<Session, SessionError> {
        let slot = self.slot(id);
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
    async fn finish(&self, id: &str, now: u64) -> Result<Session, SessionError> {
        let slot = self.slot(id);
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
        let parts = self.parts.clone();
        let pid = id.to_string();
        let sha: [u8; 32] = blocking(move || {
            let mut sha = running.sha;
            parts.hash_range(&pid, &mut sha, running.upto, len)?;
            Ok(sha.finalize().into())
        })
        .await?;
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
            let parts = self.parts.clone();
            let pid = id.to_string();
            let moved = blocking(move || match parts.commit(&pid, len, &target) {
                Ok(()) => Ok(Ok(())),
                Err(CommitError::Exists) => Ok(Err(SessionError::TargetExists)),
                Err(CommitError::Io(e)) => Err(e.into()),
            })
            .await?;
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
        drop(_r);
        if s.kind == Kind::Partial {
            self.finish_waiting_finals(id, now).await;
        }
        Ok(s)
    }

    /// Creates the concatenation of `part_ids` (tus `Upload-Concat: final`). Finished at
    /// once when every part is complete, otherwise when the last one completes.
    pub async fn create_final(
        &self,
        mut new: NewSession,
        part_ids: Vec<String>,
        now: u64,
    ) -> Result<Session, SessionError> {
        if part_ids.is_empty() {
            return Err(SessionError::InvalidConcat("no parts".into()));
        }
        for pid in &part_ids {
            let p = self
                .info(pid, now)
                .await
                .map_err(|_| SessionError::InvalidConcat(format!("unknown part {pid}")))?;
            if p.kind != Kind::Partial || p.owner != new.owner || p.target != new.target.as_str() {
                return Err(SessionError::InvalidConcat(format!(
                    "{pid} is not a partial upload of this target"
                )));
            }
        }
        new.kind = Kind::Final {
            parts: part_ids.clone(),
        };
        new.length = None;
        let s = self.create(new, now).await?;
        self.try_concat(&s.id, now).await
    }

    async fn try_concat(&self, id: &str, now: u64) -> Result<Session, SessionError> {
        let s = self.load(id).await?;
        let Kind::Final { parts: part_ids } = &s.kind else {
            return Ok(s);
        };
        if s.completed.is_some() {
            return Ok(s);
        }
        let mut sources = Vec::new();
        for pid in part_ids {
            let p = self.load(pid).await?;
            match (&p.completed, p.length) {
                (Some(_), Some(len)) => sources.push((pid.clone(), len)),
                _ => return Ok(s),
            }
        }
        let total: u64 = sources.iter().map(|x| x.1).sum();
        if s.signed_size.is_some_and(|x| x != total) {
            self.remove(id).await?;
            return Err(SessionError::LengthMismatch);
        }
        let parts = self.parts.clone();
        let dest = id.to_string();
        let srcs = sources.clone();
        blocking(move || Ok(parts.concat(&dest, &srcs)?)).await?;
        self.commit_range(id, 0, total, Some(total), now).await?;
        let done = self.finish(id, now).await?;
        for (pid, _) in sources {
            self.remove(&pid).await?;
        }
        Ok(done)
    }

    async fn finish_waiting_finals(&self, part_id: &str, now: u64) {
        let all = match self.all_sessions().await {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(error = %e, "cannot scan for waiting concatenations");
                return;
            }
        };
        for (id, s) in all {
            let Some(s) = s else { continue };
            if matches!(&s.kind, Kind::Final { parts } if parts.iter().any(|p| p == part_id)) {
                if let Err(e) = Box::pin(self.try_concat(&id, now)).await {
                    tracing::warn!(%id, error = %e, "concatenation failed");
                }
            }
        }
    }

    /// Terminates a session (tus `DELETE`, IETF cancellation): a writer in flight is
    /// preempted, then data and record are removed.
    pub async fn terminate(&self, id: &str, now: u64) -> Result<(), SessionError> {
        self.info(id, now).await?;
        let slot = self.slot(id);
        let _w = slot.take_writer().await;
        self.remove(id).await
    }

    async fn remove(&self, id: &str) -> Result<(), SessionError> {
        let parts = self.parts.clone();
        let store = self.store.clone();
        let key = id.to_string();
        blocking(move || {
            parts.remove(&key)?;
            store.delete(&key).map_err(std::io::Error::from)?;
            Ok(())
        })
        .await?;
        lock(&self.index).remove(id);
        lock(&self.slots).remove(id);
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
