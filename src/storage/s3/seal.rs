//! Sealed S3 sessions ([`PartStore::seal`](crate::storage::store::PartStore::seal)): a tus
//! partial upload, once whole, is moved into an object of its own, `<prefix>.xferd-parts/
//! <id>/data`, so that a later concatenation (and any read) can get its bytes, which the
//! parts of an unfinished multipart upload never give back.
//!
//! Rules:
//! 1. A session created without a target (the engine creates tus partial uploads so)
//!    uploads its parts for `data` from the first part on; sealing uploads the tail as
//!    the last part and completes that upload, or puts the tail as `data` when there
//!    are no parts. A session begun for a target with parts in it cannot be sealed.
//! 2. The state is rewritten only after `data` is complete, with the length sealed, no
//!    parts and no tail; a seal cut between the two finds `data` whole (its length) and
//!    only rewrites the state. Sealing again with the same length does nothing.
//! 3. A sealed session accepts no more writes; it is read with ranged GETs of `data`,
//!    and removed (abort, or after its concatenation) with the rest of its objects.
//! 4. A sealed session completes into its target by server-side copies of `data`
//!    (ranges of the session's part size, `copy.rs`), create-only: what `[scan]` needs,
//!    since the engine creates every session without a target when scanning is on, seals
//!    it, scans `data`, then completes. A session of HFS chunks is readable as it is:
//!    sealing it does nothing.
//! 5. The objects of the last few sealed sessions read are kept (their bytes never
//!    change), so a scan reading one back in small pieces costs ranged GETs only.

use super::manifest::Manifest;
use super::object::S3Object;
use super::parts::{other, S3Parts, READ_CHUNK};
use crate::storage::store::{read_range, Object, Result, StoreError};
use bytes::Bytes;
use futures_util::StreamExt;
use sha2::{Digest, Sha256};
use std::io;
use std::sync::{Arc, Mutex, MutexGuard};

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn unsupported(msg: &str) -> StoreError {
    StoreError::Other(io::Error::new(io::ErrorKind::Unsupported, msg.to_string()))
}

impl S3Parts {
    /// The key the session's multipart upload is for: its target, else `data` (rule 1).
    pub(crate) fn upload_key(&self, id: &str, m: &Manifest) -> Result<String> {
        match &m.target {
            Some(t) => Ok(t.clone()),
            None => self.data_key(id),
        }
    }

    pub(crate) async fn seal_session(&self, id: &str, len: u64) -> Result<()> {
        let Some(m) = self.load(id).await? else {
            return Err(StoreError::NotFound);
        };
        match m.sealed {
            Some(n) if n == len => return Ok(()),
            Some(_) => return Err(other("the session was sealed with another length")),
            None => {}
        }
        if m.end() == 0 && m.upload_id.is_none() && len > 0 {
            // Rule 4: HFS chunks (or nothing): read back from their own objects.
            return Ok(());
        }
        if m.end() != len {
            return Err(other("the sealed length does not match the stored bytes"));
        }
        if m.target.is_some() && !m.parts.is_empty() {
            return Err(unsupported(
                "a session begun for a target completes into it, it is not sealed",
            ));
        }
        let data = self.data_key(id)?;
        // Rule 2: a seal cut after `data` was completed.
        let done = self
            .s3
            .head(&data)
            .await?
            .is_some_and(|h| h.meta.len == len);
        if !done {
            // Rule 1: the session's bytes become the object `data`.
            self.finish_upload(id, &m, m.tail.clone(), &data, false)
                .await?;
        }
        let sealed = Manifest {
            psize: m.psize,
            target: m.target.clone(),
            sha: m.sha.clone(),
            sealed: Some(len),
            ..Manifest::default()
        };
        let base = self.base(id)?;
        self.put(&format!("{base}state"), sealed.encode()).await?;
        if m.has_prev {
            if let Err(e) = self.remove(&format!("{base}prev")).await {
                tracing::warn!(%id, error = %e, "cannot remove a sealed session's previous state");
            }
        }
        Ok(())
    }

    /// Rule 4: `full` made of the sealed `data`, create-only; then the session's objects go.
    pub(crate) async fn complete_sealed(
        &self,
        id: &str,
        m: Manifest,
        sealed: u64,
        len: u64,
        full: String,
    ) -> Result<()> {
        if len != sealed {
            return Err(other(
                "the completed length does not match the sealed bytes",
            ));
        }
        let (data, psize) = (self.data_key(id)?, m.grain());
        let mut pieces = Vec::new();
        let mut at = 0u64;
        while at < len {
            let to = (at + psize).min(len);
            pieces.push((data.clone(), at, to));
            at = to;
        }
        if pieces.is_empty() {
            self.finish_upload(id, &Manifest::default(), Bytes::new(), &full, true)
                .await?;
        } else {
            self.assemble(&full, pieces, id).await?;
        }
        self.forget_sealed(id);
        let base = self.base(id)?;
        self.clean_up(id, vec![format!("{base}state"), data]).await;
        Ok(())
    }

    /// Rule 5: the session is gone (aborted).
    pub(crate) fn forget_sealed(&self, id: &str) {
        lock(&self.sealed).retain(|(k, _)| k != id);
    }

    /// Rule 5.
    pub(crate) fn cached_sealed(&self, id: &str) -> Option<Arc<dyn Object>> {
        let cache = lock(&self.sealed);
        cache.iter().find(|(k, _)| k == id).map(|(_, o)| o.clone())
    }

    pub(crate) fn cache_sealed(&self, id: &str, obj: Arc<dyn Object>) {
        let mut cache = lock(&self.sealed);
        cache.retain(|(k, _)| k != id);
        if cache.len() >= 8 {
            cache.remove(0);
        }
        cache.push((id.to_string(), obj));
    }

    /// The object of a sealed session's bytes, from the cache (rule 5) or looked up and
    /// cached.
    pub(crate) async fn open_sealed(&self, id: &str, len: u64) -> Result<Arc<dyn Object>> {
        if let Some(obj) = self.cached_sealed(id) {
            return Ok(obj);
        }
        let obj = self.sealed_object(id, len).await?;
        self.cache_sealed(id, obj.clone());
        Ok(obj)
    }

    /// The object of a sealed session's bytes (rule 3).
    async fn sealed_object(&self, id: &str, len: u64) -> Result<Arc<dyn Object>> {
        let data = self.data_key(id)?;
        match self.s3.head(&data).await? {
            Some(h) if h.meta.len == len => {
                Ok(Arc::new(S3Object::new(self.s3.client().clone(), data, h)))
            }
            _ => Err(other("a sealed session's data object is missing or short")),
        }
    }

    /// `sha` fed with `len` bytes of `obj` from `off`.
    pub(crate) async fn hash_object(
        obj: Arc<dyn Object>,
        mut sha: Sha256,
        off: u64,
        len: u64,
    ) -> Result<(Sha256, u64)> {
        let mut seen = 0u64;
        let mut body = read_range(obj, off, len, READ_CHUNK);
        while let Some(b) = body.next().await {
            let b = b?;
            seen += b.len() as u64;
            sha = tokio::task::spawn_blocking(move || {
                sha.update(&b);
                sha
            })
            .await
            .map_err(|e| other(e.to_string()))?;
        }
        Ok((sha, seen))
    }

    /// [`PartStore::concat`](crate::storage::store::PartStore::concat): copied server-side
    /// where it can be, else the sources' bytes, read back (sealed ones from `data`),
    /// appended to `dest`'s sink.
    pub(crate) async fn concat_sessions(
        &self,
        dest: &str,
        sources: Vec<(String, u64)>,
    ) -> Result<()> {
        use crate::storage::store::PartStore;
        // Server-side copies (`copy.rs` rule 4) for a fresh session with a target whose
        // sources are all sealed and at least one part long in all.
        let dm = self.load(dest).await?.ok_or(StoreError::NotFound)?;
        let psize = dm.psize.unwrap_or(self.s3.inner.part_size as u64);
        let total: u64 = sources.iter().map(|s| s.1).sum();
        if total > 0 && dm.end() == total && dm.sealed.is_none() {
            // Done before, and the record not updated after (the engine retries).
            return Ok(());
        }
        if dm.target.is_some() && dm.end() == 0 && dm.upload_id.is_none() && total >= psize {
            let mut sealed = Vec::with_capacity(sources.len());
            for (src, n) in &sources {
                match self.load(src).await?.and_then(|m| m.sealed) {
                    Some(len) if len >= *n => {
                        sealed.push((self.data_key(src)?, self.open_sealed(src, len).await?, *n))
                    }
                    _ => break,
                }
            }
            if sealed.len() == sources.len() {
                return self.concat_copying(dest, dm, sealed).await;
            }
        }
        let sink = PartStore::open_sink(self, dest).await?;
        let mut pos = 0u64;
        for (src, n) in sources {
            let sealed = self.load(&src).await?.and_then(|m| m.sealed);
            let mut off = 0u64;
            let mut body = match sealed {
                Some(len) if len >= n => Some(read_range(
                    self.open_sealed(&src, len).await?,
                    0,
                    n,
                    READ_CHUNK,
                )),
                _ => None,
            };
            while off < n {
                let b = match &mut body {
                    Some(s) => s.next().await.transpose()?.unwrap_or_default(),
                    None => {
                        let want = usize::try_from((n - off).min(READ_CHUNK as u64)).unwrap_or(0);
                        PartStore::read_at(self, &src, off, want).await?
                    }
                };
                if b.is_empty() {
                    return Err(other("a concatenation source is shorter than its length"));
                }
                let step = b.len() as u64;
                sink.write(pos, b).await?;
                (off, pos) = (off + step, pos + step);
            }
        }
        sink.sync().await
    }
}
