//! The session engine: one state machine behind tus, the IETF draft and HFS's chunked API.
//!
//! Rules, in the order they apply:
//! 1. Creation checks the limits (sessions in total and per client, reserved bytes, length)
//!    and makes the data file and the record durable before the capability is returned.
//!    The limits are checked by the record store, atomically with the insert, over the open
//!    records of every instance ([`SessionRecords::insert`]).
//! 2. Appends (tus/IETF `PATCH`) hold the session's one-writer lock ([`Locker`]). A new
//!    append, an offset query or a termination for the same session preempts the holder:
//!    the old request stops reading, commits what it wrote and releases, so a client that
//!    reconnected never waits for the stale request's timeout. Record writes carry the
//!    lock's fencing token; a holder that lost its lock has its writes refused (`preempted`).
//! 3. Chunk writes (HFS) go to their own offsets concurrently, without the writer lock;
//!    completion takes it, so a session is finished once.
//! 4. Bytes are fsynced before the record that covers them is committed; an offset is only
//!    ever reported from a committed record. Without a per-request checksum, progress is
//!    committed every `commit_every` bytes, so an interrupted request keeps what it sent;
//!    with one, the request's bytes count only if the checksum matches. Every record update
//!    is a compare-and-set on the record's version, retried on a conflict.
//! 5. When every byte of a known length is present, the file is hashed, checked against an
//!    expected digest, and moved to its target without overwriting; the record is kept
//!    (completed) until it expires so clients can still ask for the offset. The record is
//!    marked just before the move, so a completion cut between the move and its record is
//!    recorded by the next query, not lost with the data file (`engine/finish.rs`).
//! 6. Only what the records say ends a session: [`Engine::expire`] collects records past
//!    their expiry (a record that changed since it was read is left alone) and their data.
//!    A data file without a record may belong to a creation in progress on another instance:
//!    it is removed only once it has been seen without a record for [`ORPHAN_GRACE_SECS`].
//!    Start-up drops only records of sessions in progress whose data file is gone (those
//!    marked as moved into place excepted, rule 5), and only with the local store ([`Engine::open`]); over a store shared by several instances
//!    ([`Engine::new`], `[cluster]`) start-up removes nothing: another instance may be
//!    creating what this one does not know yet.
//! 7. In memory, the engine keeps state only for sessions in progress: a cache of running
//!    hashes, and the locker's state while a lock is held or awaited. An id without a session
//!    never gets an entry, and a session's entry goes when it completes, is terminated or
//!    expires. Only sessions in progress count against the limits.
//! 8. The file's SHA-256 is kept as a running hash of the contiguous prefix: appends hash
//!    while they write, out-of-order chunks hash the newly contiguous bytes when the prefix
//!    grows (from the page cache), so completion does not read the file again. After a
//!    restart, or on another instance, the running hash is absent and completion hashes
//!    what it lacks.
//!
//! Time comes in as Unix seconds; nothing here reads a clock or touches a socket.
//! Writes live in `engine/write.rs`, completion in `engine/finish.rs`, tus concatenation in
//! `engine/concat.rs`, records and expiry in `engine/records.rs`, the error type in
//! [`super::errors`].

use super::checksum;
use super::session::{Kind, Origin, Session};
use crate::core::error::CoreError;
use crate::core::path::RelPath;
use crate::storage::meta::{Guard, Locker, MemLocker, Quota, SessionRecords, SessionStore};
use crate::storage::store::{PartStore, StoreError};
use sha2::Sha256;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

mod concat;
mod finish;
mod records;
mod write;

pub use records::ORPHAN_GRACE_SECS;

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

#[derive(Clone, Default)]
struct Prefix {
    sha: Sha256,
    upto: u64,
}

/// The running hash of a session in progress (rule 8).
type Hash = Arc<tokio::sync::Mutex<Prefix>>;

pub struct Engine {
    records: Arc<dyn SessionRecords>,
    locker: Arc<dyn Locker>,
    parts: Arc<dyn PartStore>,
    limits: Limits,
    /// Running hashes of sessions in progress (a cache; rule 7). A request holds its entry
    /// by `Arc`, so removal never waits for requests.
    hashes: Mutex<HashMap<String, Hash>>,
    /// Data files seen without a record: id → Unix seconds when first seen (rule 6).
    orphans: Mutex<HashMap<String, u64>>,
    /// Storage quotas: a session reserves its length at creation ([`crate::core::quota`]).
    quotas: Arc<crate::core::quota::Quotas>,
    /// `[scan]`: completed uploads are scanned before they move to their target.
    scan: Option<(
        Arc<crate::core::scan::Scanning>,
        Arc<dyn crate::core::Telemetry>,
    )>,
    /// `[deduplication]`: completed uploads share the stored copy of identical content
    /// (where the part store can); the bytes saved go to this telemetry.
    dedup: Option<Arc<dyn crate::core::Telemetry>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A poisoned lock only means another thread panicked while holding it; the maps stay
    // consistent (every update is a single insert, remove or retain).
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A storage error as the engine reports it (kinds mapped by [`CoreError`]).
fn stored(e: StoreError) -> SessionError {
    if e.is_transient() {
        // Worth retrying (S3 unreachable, timed out, 5xx): 503 with Retry-After.
        tracing::warn!(error = %e, "storage unavailable for a resumable upload");
        return SessionError::StorageUnavailable(STORAGE_RETRY_AFTER);
    }
    SessionError::from(CoreError::from(e))
}

/// What a client is told to wait after a transient storage failure of a resumable request.
const STORAGE_RETRY_AFTER: std::time::Duration = std::time::Duration::from_secs(2);

impl Engine {
    /// Opens the engine over the local redb store and an in-process locker (tokens continue
    /// above the stored ones), after start-up recovery (rule 6). Blocking (it waits for the
    /// part store with `block_on`): call it on the blocking pool.
    pub fn open(
        store: SessionStore,
        parts: Arc<dyn PartStore>,
        limits: Limits,
    ) -> Result<Engine, SessionError> {
        let max_length = limits.max_length;
        let migrated = store
            .migrate_legacy(|raw| records::summarize(raw, max_length))
            .map_err(std::io::Error::from)?;
        if migrated > 0 {
            tracing::info!(
                count = migrated,
                "converted session records to the versioned format"
            );
        }
        records::recover_blocking(&store, &parts)?;
        let last = store.max_fence_blocking().map_err(records::rec_err)?;
        Ok(Engine::new(
            Arc::new(store),
            Arc::new(MemLocker::starting_after(last)),
            parts,
            limits,
        ))
    }

    /// An engine over any record store and locker (no recovery step: what a shared store
    /// holds is collected only by [`Engine::expire`], by what the records say).
    pub fn new(
        records: Arc<dyn SessionRecords>,
        locker: Arc<dyn Locker>,
        parts: Arc<dyn PartStore>,
        limits: Limits,
    ) -> Engine {
        Engine {
            records,
            locker,
            parts,
            limits,
            hashes: Mutex::new(HashMap::new()),
            orphans: Mutex::new(HashMap::new()),
            quotas: crate::core::quota::Quotas::none(),
            scan: None,
            dedup: None,
        }
    }

    /// Puts sessions under storage quotas (before serving).
    pub fn set_quotas(&mut self, quotas: Arc<crate::core::quota::Quotas>) {
        self.quotas = quotas;
    }

    pub fn quotas(&self) -> &Arc<crate::core::quota::Quotas> {
        &self.quotas
    }

    /// Scans every completed upload with `scanning` before it becomes visible (see
    /// [`crate::core::scan`]), reporting outcomes to `telemetry`.
    pub fn with_scanning(
        mut self,
        scanning: Option<Arc<crate::core::scan::Scanning>>,
        telemetry: Arc<dyn crate::core::Telemetry>,
    ) -> Engine {
        self.scan = scanning.map(|s| (s, telemetry));
        self
    }

    /// Turns deduplication on for completed uploads (see [`crate::core::dedup`]).
    pub fn with_dedup(mut self, telemetry: Option<Arc<dyn crate::core::Telemetry>>) -> Engine {
        self.dedup = telemetry;
        self
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// How many sessions the engine keeps state for in memory: running hashes plus ids with
    /// lock state (introspection for tests).
    pub fn tracked(&self) -> usize {
        lock(&self.hashes).len() + self.locker.active()
    }

    fn quota(&self) -> Quota {
        Quota {
            max_open: self.limits.max_sessions,
            max_open_per_owner: self.limits.max_sessions_per_client,
            max_reserved: self.limits.max_reserved_bytes,
        }
    }

    /// Takes the session's one-writer lock, first telling a request holding it to stop and
    /// commit. Callers check that the session exists and is in progress first (rule 7).
    async fn take_writer(&self, id: &str) -> Result<Guard, SessionError> {
        // A lock backend fails only when it cannot be reached (or its wait ran out): the
        // upload can be resumed later, so it is "unavailable", not a storage failure.
        self.locker.lock(id).await.map_err(|e| {
            tracing::warn!(%id, error = %e, "cannot take an upload's lock");
            SessionError::StoreUnavailable
        })
    }

    /// The running hash of a session known to be in progress (inserted if absent).
    fn hash_of(&self, id: &str) -> Hash {
        lock(&self.hashes)
            .entry(id.to_string())
            .or_default()
            .clone()
    }

    /// Looks a session up for an offset query, first making any request still writing to
    /// it stop and commit (so the offset reported is the true one, not a stale request's).
    /// A session whose bytes are all in but that is not completed (the process died between
    /// the last commit and the move into place) is completed here: a client that sees the
    /// full offset sends nothing more, so nothing else would finish it.
    pub async fn info_settled(&self, id: &str, now: u64) -> Result<Session, SessionError> {
        let s = self.info(id, now).await?;
        // Only a session in progress can have a request writing to it.
        if s.completed.is_some() {
            return Ok(s);
        }
        let w = self.take_writer(id).await?;
        let s = self.info(id, now).await?;
        if s.completed.is_none() && s.data_complete() {
            return self.finish(id, Some(&w), now).await;
        }
        Ok(s)
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
        let id = format!("{:032x}", rand::random::<u128>());
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
            completing: None,
        };
        let record = records::record_of(&session, l.max_length)?;
        // A cheap check first, so a refused creation touches no file; the insert below
        // checks again, atomically, against concurrent creations.
        let counts = self
            .records
            .counts(&session.owner)
            .await
            .map_err(records::rec_err)?;
        crate::storage::meta::check_quota(&counts, &self.quota(), &record.summary)
            .map_err(records::rec_err)?;
        // Quota hook: the declared length is reserved before any byte is accepted.
        if let (Some(len), true) = (session.length, session.kind != Kind::Partial) {
            self.quotas.reserve_session(&id, &session.target, len)?;
        }
        let created = async {
            // A partial upload never becomes its target: it is sealed, then read by the
            // concatenation of its final upload. With scanning on, every upload is sealed
            // and read back before it completes (an object store can read its parts back
            // no other way).
            let made = match (session.kind == Kind::Partial, &self.scan) {
                (false, None) => self.parts.create_at(&id, &new.target).await,
                _ => self.parts.create(&id).await,
            };
            made.map_err(stored)?;
            self.records
                .insert(&id, record, self.quota())
                .await
                .map_err(records::rec_err)
        }
        .await;
        if let Err(e) = created {
            self.quotas.release_session(&id);
            if let Err(r) = self.parts.abort(&id).await {
                tracing::warn!(%id, error = %r, "cannot remove the data file of a failed creation");
            }
            return Err(e);
        }
        lock(&self.hashes).insert(id.clone(), Hash::default());
        if session.data_complete() {
            // An empty upload is complete as soon as it exists.
            return self.finish(&id, None, now).await;
        }
        Ok(session)
    }

    /// Sets a deferred length (tus `Upload-Length` after `Upload-Defer-Length: 1`).
    pub async fn set_length(&self, id: &str, len: u64, now: u64) -> Result<Session, SessionError> {
        let s = self.info(id, now).await?;
        if s.completed.is_some() {
            return match s.length {
                Some(l) if l == len => Ok(s),
                _ => Err(SessionError::AlreadyCompleted),
            };
        }
        let max = self.limits.max_length;
        self.update(id, None, |s| {
            if s.completed.is_some() {
                return Err(SessionError::AlreadyCompleted);
            }
            match s.length {
                Some(l) if l == len => return Ok(false),
                Some(_) => return Err(SessionError::LengthMismatch),
                None => {}
            }
            if len > max {
                return Err(SessionError::TooLarge { max });
            }
            if len < s.received.max_end()
                || s.signed_size
                    .is_some_and(|x| x != len && s.kind != Kind::Partial)
            {
                return Err(SessionError::LengthMismatch);
            }
            s.length = Some(len);
            Ok(true)
        })
        .await
    }

    /// Records bytes `[start, end)` as received (and, for a last append, the length).
    async fn commit_range(
        &self,
        id: &str,
        fence: Option<u64>,
        (start, end): (u64, u64),
        set_length: Option<u64>,
        now: u64,
    ) -> Result<Session, SessionError> {
        let ttl = self.limits.ttl_secs;
        self.update(id, fence, |s| {
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
            s.expires = now.saturating_add(ttl);
            Ok(true)
        })
        .await
    }

    /// Terminates a session (tus `DELETE`, IETF cancellation): a writer in flight is
    /// preempted, then data and record are removed.
    pub async fn terminate(&self, id: &str, now: u64) -> Result<(), SessionError> {
        let s = self.info(id, now).await?;
        let _w = match s.completed {
            None => Some(self.take_writer(id).await?),
            Some(_) => None,
        };
        self.remove(id, None).await?;
        Ok(())
    }
}

/// Session ids are exactly 32 lower-case hex digits.
pub fn is_session_id(id: &str) -> bool {
    id.len() == 32
        && id
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Read-only views for the admin API (`admin`): no state changes.
impl Engine {
    /// Every session in progress (not completed, not expired at `now`), in id order. Their
    /// number is bounded by `resumable.max_sessions`.
    pub async fn in_progress(&self, now: u64) -> Result<Vec<Session>, SessionError> {
        let mut out: Vec<Session> = self
            .all_sessions()
            .await?
            .into_iter()
            .filter_map(|(_, s)| s)
            .filter(|s| s.completed.is_none() && s.expires >= now)
            .collect();
        out.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(out)
    }
}
