//! HFS chunks of an S3 session ([`super::parts::S3Parts`]): each chunk is an object of its
//! own (`<prefix>.xferd-parts/<id>/c/<offset, 20 digits>`), written by one staged write
//! (parts of `part_size`, memory bounded like a PUT) and committed only when the chunk is
//! whole, so chunks sent in parallel to several instances share nothing but the bucket.
//! Chunks tile the upload from offset 0 (chunk *n* starts at *n* x `chunk_size`), so a walk
//! from 0 (one HeadObject per chunk) finds them without a listing.
//!
//! Reading back (hash, scan) is ranged GETs of those objects. Completion copies them as
//! the parts of the target server-side (UploadPartCopy, `copy.rs`) when they are equal
//! parts of at least 5 MiB, as the advised chunk size makes them; otherwise it streams
//! them, in order, into a create-only staged write.

use super::copy::{copyable, Piece};
use super::object::S3Object;
use super::parts::{other, S3Parts, READ_CHUNK};
use super::staged::S3Staged;
use crate::storage::store::{read_range, Object, Result, Sink, Staged, StoreError};
use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use sha2::Sha256;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// A planned read: (object, offset in it, length, its full key).
type Planned = (Arc<dyn Object>, u64, u64, String);

/// One chunk's sink: bytes at `[start, start + len)` into the chunk's staged write,
/// committed at the sync that sees it whole (a short chunk is never committed).
struct ChunkSink {
    start: u64,
    len: u64,
    written: AtomicU64,
    inner: Arc<dyn Sink>,
    staged: tokio::sync::Mutex<Option<Box<dyn Staged>>>,
}

impl Sink for ChunkSink {
    fn write(
        &self,
        offset: u64,
        data: Bytes,
    ) -> crate::storage::store::BoxFuture<'static, Result<()>> {
        let n = data.len() as u64;
        let inside = offset >= self.start && offset + n <= self.start + self.len;
        let rel = offset.saturating_sub(self.start);
        self.written.fetch_add(n, Ordering::SeqCst);
        let write = self.inner.write(rel, data);
        Box::pin(async move {
            if !inside {
                return Err(other("a write outside its chunk"));
            }
            write.await
        })
    }

    fn sync(&self) -> crate::storage::store::BoxFuture<'static, Result<()>> {
        let whole = self.written.load(Ordering::SeqCst) == self.len;
        let staged = whole.then(|| self.staged.try_lock().ok().and_then(|mut s| s.take()));
        Box::pin(async move {
            match staged.flatten() {
                Some(s) => s.commit().await,
                None => Ok(()),
            }
        })
    }
}

impl S3Parts {
    fn chunk_key(&self, id: &str, offset: u64) -> Result<String> {
        Ok(format!("{}c/{offset:020}", self.base(id)?))
    }

    pub(crate) fn chunk_sink(&self, id: &str, offset: u64, len: u64) -> Result<Arc<dyn Sink>> {
        let inner = &self.s3.inner;
        let staged = S3Staged::overwriting(
            self.s3.clone(),
            self.chunk_key(id, offset)?,
            inner.part_size,
            inner.max_in_flight,
        );
        let sink: Arc<dyn Sink> = Arc::new(ChunkSink {
            start: offset,
            len,
            written: AtomicU64::new(0),
            inner: staged.sink(),
            staged: tokio::sync::Mutex::new(Some(Box::new(staged))),
        });
        Ok(sink)
    }

    /// The chunks covering `[from, to)`: (object, offset in it, length, full key). Stops at
    /// the first missing chunk (the end of what is stored).
    async fn plan(&self, id: &str, from: u64, to: u64) -> Result<Vec<Planned>> {
        // A walk from `from` when a chunk starts there (the running hash's case), else
        // from 0.
        let mut pos = from;
        let mut head = self.s3.head(&self.chunk_key(id, from)?).await?;
        if head.is_none() && from > 0 {
            pos = 0;
            head = self.s3.head(&self.chunk_key(id, 0)?).await?;
        }
        let mut out = Vec::new();
        while let Some(h) = head {
            let len = h.meta.len;
            if len == 0 {
                break;
            }
            let (a, b) = (from.max(pos), to.min(pos + len));
            if a < b {
                let key = self.chunk_key(id, pos)?;
                let obj: Arc<dyn Object> =
                    Arc::new(S3Object::new(self.s3.client().clone(), key.clone(), h));
                out.push((obj, a - pos, b - a, key));
            }
            pos += len;
            if pos >= to {
                break;
            }
            head = self.s3.head(&self.chunk_key(id, pos)?).await?;
        }
        Ok(out)
    }

    fn short() -> StoreError {
        other("the session's chunks end before the requested range")
    }

    pub(crate) async fn hash_chunks(
        &self,
        id: &str,
        mut sha: Sha256,
        from: u64,
        to: u64,
    ) -> Result<Sha256> {
        let mut seen = 0u64;
        for (obj, off, len, _) in self.plan(id, from, to).await? {
            let (next, n) = S3Parts::hash_object(obj, sha, off, len).await?;
            (sha, seen) = (next, seen + n);
        }
        if seen != to - from {
            return Err(S3Parts::short());
        }
        Ok(sha)
    }

    pub(crate) async fn read_chunks(&self, id: &str, offset: u64, len: usize) -> Result<Bytes> {
        let mut out = BytesMut::new();
        let to = offset.saturating_add(len as u64);
        for (obj, off, n, _) in self.plan(id, offset, to).await? {
            let mut body = read_range(obj, off, n, READ_CHUNK);
            while let Some(b) = body.next().await {
                out.extend_from_slice(&b?);
            }
        }
        Ok(out.freeze())
    }

    /// Makes `full` of the chunks, create-only, then removes them: server-side where the
    /// chunks can be the parts (`copy.rs`), else streamed through a staged write.
    pub(crate) async fn complete_chunks(&self, id: &str, len: u64, full: String) -> Result<()> {
        let inner = &self.s3.inner;
        let plan = self.plan(id, 0, len).await?;
        if plan.iter().map(|p| p.2).sum::<u64>() != len {
            return Err(S3Parts::short());
        }
        let pieces: Vec<Piece> = (plan.iter())
            .map(|(_, off, n, key)| (key.clone(), *off, off + n))
            .collect();
        if copyable(&pieces) {
            self.assemble(&full, pieces, id).await?;
        } else {
            let staged = S3Staged::new(self.s3.clone(), full, inner.part_size, inner.max_in_flight)
                .marked(id);
            let sink = staged.sink();
            let mut pos = 0u64;
            for (obj, off, n, _) in plan {
                let mut body = read_range(obj, off, n, READ_CHUNK);
                while let Some(b) = body.next().await {
                    let b = b?;
                    let step = b.len() as u64;
                    sink.write(pos, b).await?;
                    pos += step;
                }
            }
            drop(sink);
            Box::new(staged).commit().await?;
        }
        self.clean_up_all(id).await;
        Ok(())
    }
}
