//! tus concatenation over the engine: a final upload is the concatenation of partial ones,
//! finished at once when every part is complete, otherwise when the last one completes.

use super::{stored, Engine, NewSession, SessionError};
use crate::core::resumable::session::{Kind, Session};

impl Engine {
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

    pub(super) async fn try_concat(&self, id: &str, now: u64) -> Result<Session, SessionError> {
        let (s, _) = self.load(id).await?;
        let Kind::Final { parts: part_ids } = &s.kind else {
            return Ok(s);
        };
        if s.completed.is_some() {
            return Ok(s);
        }
        let mut sources = Vec::new();
        for pid in part_ids {
            let (p, _) = self.load(pid).await?;
            match (&p.completed, p.length) {
                (Some(_), Some(len)) => sources.push((pid.clone(), len)),
                _ => return Ok(s),
            }
        }
        let total: u64 = sources.iter().map(|x| x.1).sum();
        if s.signed_size.is_some_and(|x| x != total) {
            self.remove(id, None).await?;
            return Err(SessionError::LengthMismatch);
        }
        // One concatenation at a time: under the final upload's writer lock, looked at again.
        let guard = self.take_writer(id).await?;
        let (current, _) = self.load(id).await?;
        if current.completed.is_some() {
            return Ok(current);
        }
        (self.parts.concat(id, sources.clone()).await).map_err(stored)?;
        self.commit_range(id, Some(guard.token()), (0, total), Some(total), now)
            .await?;
        let done = self.finish(id, Some(&guard), now).await?;
        drop(guard);
        for (pid, _) in sources {
            self.remove(&pid, None).await?;
        }
        Ok(done)
    }

    pub(super) async fn finish_waiting_finals(&self, part_id: &str, now: u64) {
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
}
