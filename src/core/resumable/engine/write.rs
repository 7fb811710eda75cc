//! Writes into a session: appends (tus/IETF `PATCH`, under the writer lock, preemptible)
//! and chunks (HFS, at their own offsets, concurrently), with progress commits, checksums
//! and the running prefix hash (rules 2 to 4 and 8 of [`super`]).

use super::{checksum, stored, Engine, Hash, Placement, SessionError, Write};
use crate::core::body::BodyStream;
use crate::core::resumable::session::Session;
use crate::core::stream::{Digests, Writer};
use futures_util::StreamExt;

impl Engine {
    /// Writes one request's body into a session; returns the session after the write
    /// (completed, if this write finished it).
    pub async fn write(
        &self,
        id: &str,
        mut w: Write,
        body: &mut BodyStream,
        now: u64,
    ) -> Result<Session, SessionError> {
        // The session must exist and be in progress before any state is made for it.
        if self.info(id, now).await?.completed.is_some() {
            return Err(SessionError::AlreadyCompleted);
        }
        let mut writer_lock = match w.placement {
            Placement::Append { .. } => Some(self.take_writer(id).await?),
            Placement::At { .. } => None,
        };
        let fence = writer_lock.as_ref().map(super::Guard::token);
        let s = self.info(id, now).await?;
        if s.completed.is_some() {
            return Err(SessionError::AlreadyCompleted);
        }
        let hash = self.hash_of(id);
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
                    // A repeated chunk: acknowledged again, its bytes discarded. If every
                    // byte is in but the session was not completed (the process died
                    // before the move into place), the retry completes it.
                    discard_chunk(body, len).await?;
                    if s.data_complete() {
                        return self.finish(id, None, now).await;
                    }
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
        let file = match w.placement {
            Placement::Append { .. } => self.parts.open_sink(id).await,
            Placement::At { offset, len } => self.parts.open_chunk_sink(id, offset, len).await,
        }
        .map_err(stored)?;
        // An append that continues the running hash carries it (exclusive: writer lock).
        let mut prefix = match w.placement {
            Placement::Append { .. } => Some(hash.lock().await),
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
            None => (self.limits.pool.lease_growing(self.limits.pool.max()).await)
                .map_err(|_| SessionError::BuffersExhausted)?,
        };
        let mut writer = Writer::new(file, start, lease, digests);
        let mut committed = start;
        let appending = matches!(w.placement, Placement::Append { .. });
        let mut failure: Option<SessionError> = None;
        loop {
            let next = match writer_lock.as_mut() {
                Some(g) => tokio::select! {
                    c = body.next() => c,
                    _ = g.preempted() => { failure = Some(SessionError::Preempted); break }
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
                    // Progress within a request is committed for appends only: a chunk
                    // counts only whole, so none of it may be recorded before it all is.
                    if appending
                        && w.checksum.is_none()
                        && writer.end() - committed >= self.limits.commit_every
                    {
                        writer.sync().await.map_err(SessionError::from)?;
                        self.commit_range(id, fence, (committed, writer.end()), None, now)
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
        let s = self
            .commit_range(id, fence, (committed, end), set_len, now)
            .await?;
        match (prefix.as_mut(), digests.sha256) {
            (Some(p), Some(sha)) => {
                p.sha = sha;
                p.upto = end;
            }
            // An append behind the running hash (after a restart): completion hashes the rest.
            (Some(_), None) => {}
            (None, _) => {
                self.extend_prefix(id, &hash, s.received.prefix_end())
                    .await?;
            }
        }
        drop(prefix);
        if let Some(f) = failure {
            return Err(f);
        }
        if s.data_complete() {
            return self.finish(id, writer_lock.as_ref(), now).await;
        }
        Ok(s)
    }

    /// Hashes newly contiguous bytes into the running prefix hash (out-of-order chunks).
    async fn extend_prefix(
        &self,
        id: &str,
        hash: &Hash,
        prefix_end: u64,
    ) -> Result<(), SessionError> {
        let mut p = hash.lock().await;
        if p.upto >= prefix_end {
            return Ok(());
        }
        let sha = (self
            .parts
            .hash_range(id, p.sha.clone(), p.upto, prefix_end)
            .await)
            .map_err(stored)?;
        p.sha = sha;
        p.upto = prefix_end;
        Ok(())
    }
}

/// Reads and discards the body of a chunk already stored, which must be exactly `len`
/// bytes: reading stops at the first byte past `len`, so a body without `Content-Length`
/// is never read without a bound.
async fn discard_chunk(body: &mut BodyStream, len: u64) -> Result<(), SessionError> {
    let mut seen = 0u64;
    while let Some(next) = body.next().await {
        let chunk = next.map_err(|e| SessionError::Interrupted(e.0))?;
        seen = seen.saturating_add(chunk.len() as u64);
        if seen > len {
            return Err(SessionError::LengthExceeded);
        }
    }
    if seen != len {
        return Err(SessionError::Interrupted(format!(
            "body ended after {seen} of {len} bytes"
        )));
    }
    Ok(())
}
