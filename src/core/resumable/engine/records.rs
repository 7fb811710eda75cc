//! The engine's records: reading and compare-and-set updates of [`Session`]s in the record
//! store, removal, expiry and start-up recovery (rules 4, 6 and 7 of [`super`]).

use super::{is_session_id, lock, stored, Engine, SessionError};
use crate::core::resumable::session::{Kind, Session};
use crate::storage::meta::{Record, RecordError, SessionStore, Summary, Version};
use crate::storage::store::{block_on, PartStore};
use std::collections::HashSet;
use std::sync::Arc;

/// How long a data file must have been seen without a record before it is removed: a
/// creation in progress (possibly on another instance sharing the storage) writes its data
/// file just before its record.
pub const ORPHAN_GRACE_SECS: u64 = 3600;

/// Attempts of one compare-and-set update before giving up (each conflict means another
/// writer got in between, so this bounds only a pathological race).
const CAS_ATTEMPTS: usize = 64;

/// Maps a record store error to the engine's.
pub(super) fn rec_err(e: RecordError) -> SessionError {
    match e {
        RecordError::Fenced => SessionError::Preempted,
        RecordError::TooManyOpen => SessionError::TooManySessions,
        RecordError::TooManyForOwner => SessionError::TooManyForClient,
        RecordError::ReservedExceeded => SessionError::ReservedBytesExceeded,
        RecordError::Conflict => SessionError::Storage("concurrent record update".into()),
        RecordError::Store(m) => SessionError::Storage(m),
        RecordError::Full(m) => {
            tracing::warn!(error = %m, "session store full");
            SessionError::InsufficientStorage
        }
        RecordError::Unavailable(m) => {
            tracing::warn!(error = %m, "session store unavailable");
            SessionError::StoreUnavailable
        }
    }
}

fn summary(s: &Session, max_length: u64) -> Summary {
    Summary {
        owner: s.owner.clone(),
        open: s.completed.is_none(),
        reserved: s.reserved(max_length),
        expires: s.expires,
    }
}

pub(super) fn record_of(s: &Session, max_length: u64) -> Result<Record, SessionError> {
    Ok(Record {
        summary: summary(s, max_length),
        body: serde_json::to_vec(s).map_err(|e| SessionError::Storage(e.to_string()))?,
    })
}

/// The summary of a record in the unversioned format (the JSON session alone).
pub(super) fn summarize(raw: &[u8], max_length: u64) -> Option<Summary> {
    serde_json::from_slice::<Session>(raw)
        .ok()
        .map(|s| summary(&s, max_length))
}

/// Start-up: drops records of sessions in progress whose data file is gone (nothing can
/// resume them), except those moved into place whose record did not follow
/// (`finish.rs` rule 2: the next query records them complete). Nothing else: expiry and
/// orphans are [`Engine::expire`]'s.
pub(super) fn recover_blocking(
    store: &SessionStore,
    parts: &Arc<dyn PartStore>,
) -> Result<(), SessionError> {
    for (id, s) in store.scan_blocking().map_err(rec_err)? {
        if s.record.summary.open && !block_on(parts.exists(&id)).map_err(stored)? {
            let moving = serde_json::from_slice::<Session>(&s.record.body)
                .ok()
                .and_then(|s| s.moving_to());
            if let Some(target) = moving {
                if block_on(parts.target_taken(&target)).map_err(stored)? {
                    tracing::info!(%id, %target, "session moved into place before a crash: its completion is recorded at its next query");
                    continue;
                }
            }
            tracing::warn!(%id, "dropping session whose data file is missing");
            match store.delete_blocking(&id, Some(s.version)) {
                Ok(_) | Err(RecordError::Conflict) => {}
                Err(e) => return Err(rec_err(e)),
            }
        }
    }
    Ok(())
}

impl Engine {
    pub(super) async fn load(&self, id: &str) -> Result<(Session, Version), SessionError> {
        if !is_session_id(id) {
            return Err(SessionError::NotFound);
        }
        let stored = self.records.get(id).await.map_err(rec_err)?;
        let stored = stored.ok_or(SessionError::NotFound)?;
        let s = serde_json::from_slice(&stored.record.body)
            .map_err(|e| SessionError::Storage(e.to_string()))?;
        Ok((s, stored.version))
    }

    /// Read, change, compare-and-set, retried on a conflict. `change` returns whether it
    /// changed anything (`false`: nothing is written).
    pub(super) async fn update(
        &self,
        id: &str,
        fence: Option<u64>,
        mut change: impl FnMut(&mut Session) -> Result<bool, SessionError>,
    ) -> Result<Session, SessionError> {
        let mut attempt = 0;
        loop {
            let (mut s, version) = self.load(id).await?;
            if !change(&mut s)? {
                return Ok(s);
            }
            let record = record_of(&s, self.limits.max_length)?;
            match self.records.put_if(id, record, version, fence).await {
                Ok(_) => return Ok(s),
                Err(RecordError::Conflict) if attempt + 1 < CAS_ATTEMPTS => attempt += 1,
                Err(e) => return Err(rec_err(e)),
            }
        }
    }

    /// Looks a session up; an expired one is collected and reported gone.
    pub async fn info(&self, id: &str, now: u64) -> Result<Session, SessionError> {
        for _ in 0..CAS_ATTEMPTS {
            let (s, version) = self.load(id).await?;
            if now <= s.expires {
                return Ok(s);
            }
            if self.remove(id, Some(version)).await? {
                return Err(SessionError::Gone);
            }
            // Changed since it was read (perhaps extended): look again.
        }
        Err(SessionError::Storage("concurrent record update".into()))
    }

    /// Deletes a session's record (if still at `expected`, when given), then its data.
    /// `false`: the record changed since it was read, and nothing was removed.
    pub(super) async fn remove(
        &self,
        id: &str,
        expected: Option<Version>,
    ) -> Result<bool, SessionError> {
        match self.records.delete(id, expected).await {
            Ok(_) => {}
            Err(RecordError::Conflict) => return Ok(false),
            Err(e) => return Err(rec_err(e)),
        }
        lock(&self.hashes).remove(id);
        // Quota hook: a session removed without its file stored frees its reservation.
        self.quotas.release_session(id);
        self.parts.abort(id).await.map_err(stored)?;
        Ok(true)
    }

    /// Targets of the sessions in progress (expiry never deletes them).
    pub async fn open_targets(&self) -> Result<HashSet<String>, SessionError> {
        Ok(self
            .all_sessions()
            .await?
            .into_iter()
            .filter_map(|(_, s)| s.filter(|s| s.completed.is_none()).map(|s| s.target))
            .collect())
    }

    /// Start-up: the reservations of sessions in progress restored into the quotas (quota
    /// rule 5); returns how many.
    pub async fn reserve_open(&self) -> Result<usize, SessionError> {
        let mut n = 0;
        for (id, s) in self.all_sessions().await? {
            let Some(s) = s.filter(|s| s.completed.is_none()) else {
                continue;
            };
            if let (Some(len), false) = (s.length, s.kind == Kind::Partial) {
                self.quotas.restore_session(&id, &s.target, len);
                n += 1;
            }
        }
        Ok(n)
    }

    /// Every stored record, decoded (`None` for one this version cannot read).
    pub(super) async fn all_sessions(
        &self,
    ) -> Result<Vec<(String, Option<Session>)>, SessionError> {
        let all = self.records.scan().await.map_err(rec_err)?;
        Ok(all
            .into_iter()
            .map(|(id, s)| (id, serde_json::from_slice::<Session>(&s.record.body).ok()))
            .collect())
    }

    /// Removes every session its record says is past its expiry, and data files that have
    /// been without a record for [`ORPHAN_GRACE_SECS`]; returns how many sessions.
    pub async fn expire(&self, now: u64) -> Result<usize, SessionError> {
        // Data files first: a record inserted after this listing only makes a file known.
        let files = self.parts.list().await.map_err(stored)?;
        let all = self.records.scan().await.map_err(rec_err)?;
        let mut n = 0;
        let mut known = HashSet::new();
        let mut open = HashSet::new();
        for (id, s) in all {
            if now > s.record.summary.expires {
                if self.remove(&id, Some(s.version)).await? {
                    n += 1;
                }
                continue;
            }
            if s.record.summary.open {
                open.insert(id.clone());
            }
            known.insert(id);
        }
        // Running hashes of sessions no longer in progress (ended on another instance).
        lock(&self.hashes).retain(|id, _| open.contains(id));
        let unrecorded: HashSet<String> =
            files.into_iter().filter(|f| !known.contains(f)).collect();
        let dead: Vec<String> = {
            let mut orphans = lock(&self.orphans);
            orphans.retain(|id, _| unrecorded.contains(id));
            unrecorded
                .into_iter()
                .filter(|id| {
                    now.saturating_sub(*orphans.entry(id.clone()).or_insert(now))
                        >= ORPHAN_GRACE_SECS
                })
                .collect()
        };
        for id in dead {
            // Looked up once more: its record may have appeared since the scan.
            if self.records.get(&id).await.map_err(rec_err)?.is_some() {
                continue;
            }
            tracing::info!(%id, "removing a data file without a session record");
            self.parts.abort(&id).await.map_err(stored)?;
            lock(&self.orphans).remove(&id);
        }
        Ok(n)
    }
}
