//! Completion of a session whose data is all present (rule 5 of [`super`]): hash, digest
//! check, scan, move into place, record.
//!
//! Rules:
//! 1. Just before the data move to the target, the record is marked `completing` with the
//!    data's SHA-256 (fenced, like every record write). The store removes a session's
//!    data only once the data are in place (a completion) or after its record is gone (a
//!    removal deletes the record first), so a record marked `completing` whose data are
//!    gone, with its target present, is an upload that was moved and not yet recorded
//!    complete: the process died between the two.
//! 2. Such a session is recorded complete, with the marked digest, by start-up recovery
//!    (the local store, [`super::records`]) and by the next completion attempt (any store:
//!    the next offset query or write), never dropped as a session without data. A client
//!    that resumes after the crash learns that its upload is complete.
//! 3. A target someone else took is a taken key (`target exists`): the session is removed,
//!    record first.

use super::{lock, stored, Engine, Prefix, SessionError};
use crate::core::path;
use crate::core::resumable::session::{Completed, Kind, Session};
use crate::storage::meta::Guard;
use crate::storage::store::StoreError;
use sha2::Digest;

impl Engine {
    /// Completes a session whose data is all present: hash, digest check, move into place.
    /// Runs under the writer lock: the caller's `held`, or taken here.
    pub(super) async fn finish(
        &self,
        id: &str,
        held: Option<&Guard>,
        now: u64,
    ) -> Result<Session, SessionError> {
        let own = match held {
            Some(_) => None,
            None => Some(self.take_writer(id).await?),
        };
        let fence = held.or(own.as_ref()).map(Guard::token);
        let (s, _) = self.load(id).await?;
        if s.completed.is_some() || !s.data_complete() {
            return Ok(s);
        }
        let len = s.length.unwrap_or(0);
        if let (Some(target), Some(sha)) = (s.moving_to(), s.completing.clone()) {
            // Rule 2: moved when its data are gone and its target is there.
            if !self.parts.exists(id).await.map_err(stored)?
                && self.parts.target_taken(&target).await.map_err(stored)?
            {
                tracing::info!(id, target = %s.target, "recording a completion cut after the move into place");
                self.quotas.settle_session(id, &s.target, len);
                return self.recorded_complete(id, fence, sha, now).await;
            }
        }
        let cached = lock(&self.hashes).get(id).cloned();
        let running = match cached {
            Some(h) => {
                let p = h.lock().await;
                if p.upto <= len {
                    p.clone()
                } else {
                    Prefix::default()
                }
            }
            None => Prefix::default(),
        };
        let sha: [u8; 32] = (self.parts)
            .hash_range(id, running.sha, running.upto, len)
            .await
            .map_err(stored)?
            .finalize()
            .into();
        let sha_hex = hex::encode(sha);
        if let Some(expected) = &s.expected_sha256 {
            if *expected != sha_hex {
                self.remove(id, None).await?;
                return Err(SessionError::DigestMismatch);
            }
        }
        if s.kind == Kind::Partial {
            (self.parts.seal(id, len).await).map_err(stored)?;
        } else {
            let target =
                path::validate(&s.target).map_err(|e| SessionError::Storage(e.to_string()))?;
            // [scan] hook: the assembled data is scanned before it moves to its target; an
            // infected upload (or a failed scan, failing closed) is removed, never stored.
            if let Some((scanning, telemetry)) = &self.scan {
                let parts = &self.parts;
                match parts.seal(id, len).await {
                    // Begun before scanning was on: read back as it is (or the scan fails
                    // by its policy).
                    Err(StoreError::Other(e)) if e.kind() == std::io::ErrorKind::Unsupported => {
                        tracing::warn!(%id, error = %e, "scanning an upload that cannot be sealed");
                    }
                    r => r.map_err(stored)?,
                }
                let scanned = scanning
                    .scan_parts(parts, id, len, &s.target, telemetry.as_ref())
                    .await;
                if let Err(e) = scanned {
                    self.remove(id, None).await?;
                    return Err(SessionError::from(e));
                }
            }
            // Rule 1 (a retried completion is marked already: nothing is written).
            self.update(id, fence, |s| {
                let unmarked = s.completing.as_ref() != Some(&sha_hex);
                s.completing = Some(sha_hex.clone());
                Ok(unmarked)
            })
            .await?;
            let completed = match &self.dedup {
                Some(t) => {
                    crate::core::dedup::complete(
                        self.parts.as_ref(),
                        t.as_ref(),
                        id,
                        len,
                        &target,
                        sha,
                    )
                    .await
                }
                None => self.parts.complete(id, len, &target).await,
            };
            match completed {
                Ok(()) => {}
                Err(StoreError::Exists) => {
                    // Rule 3.
                    self.remove(id, None).await?;
                    return Err(SessionError::TargetExists);
                }
                Err(e) => return Err(stored(e)),
            }
            // Quota hook: the session's reservation becomes usage.
            self.quotas.settle_session(id, target.as_str(), len);
            tracing::info!(id, target = %s.target, size = len, sha256 = %sha_hex, "resumable upload stored");
        }
        let s = self.recorded_complete(id, fence, sha_hex, now).await?;
        drop(own);
        if s.kind == Kind::Partial {
            self.finish_waiting_finals(id, now).await;
        }
        Ok(s)
    }

    /// The record says complete (with `sha256`); the session leaves memory.
    async fn recorded_complete(
        &self,
        id: &str,
        fence: Option<u64>,
        sha256: String,
        now: u64,
    ) -> Result<Session, SessionError> {
        let done = Completed { sha256, at: now };
        let expires = now.saturating_add(self.limits.ttl_secs);
        let s = self
            .update(id, fence, |s| {
                s.completed = Some(done.clone());
                s.expires = expires;
                Ok(true)
            })
            .await?;
        // No longer in progress: out of the limits and out of memory.
        lock(&self.hashes).remove(id);
        Ok(s)
    }
}
