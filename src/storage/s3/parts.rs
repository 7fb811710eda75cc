//! Resumable uploads with the S3 backend, first cut: the bytes of sessions in progress are
//! kept on this instance's local disk ([`FsParts`] under a directory of the state path),
//! and completion streams them into the bucket through [`S3Store`]'s staged write (parts of
//! `part_size`, `If-None-Match: *`), then removes the local data. A taken key leaves the
//! session's data in place (the contract), so the session can still be aborted.
//!
//! What this is not (yet): sessions that another instance can continue. That needs the
//! parts in the bucket (a multipart upload per session, its upload id and part ETags in the
//! session record, tails below the minimum part as tail objects) - see the module doc of
//! [`crate::storage::store`]'s `PartStore`.

use super::S3Store;
use crate::storage::fs::FsStorage;
use crate::storage::key::Key;
use crate::storage::parts::{FsParts, PARTS_DIR};
use crate::storage::store::{BoxFuture, Capabilities, PartStore, Result, Sink, Store, StoreError};
use bytes::Bytes;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::Arc;

/// Bytes read from local data per write into the bucket.
const COPY_CHUNK: u64 = 4 << 20;

#[derive(Debug, Clone)]
pub struct S3Parts {
    local: FsParts,
    root: PathBuf,
    s3: S3Store,
}

impl S3Parts {
    /// Session data under `local_root` (created if missing), completed into `s3`.
    pub fn open(local_root: &std::path::Path, s3: S3Store) -> io::Result<S3Parts> {
        std::fs::create_dir_all(local_root)?;
        let storage = FsStorage::open(local_root)?;
        Ok(S3Parts {
            local: FsParts::open(&storage)?,
            root: local_root.to_path_buf(),
            s3,
        })
    }

    fn data_path(&self, id: &str) -> Result<PathBuf> {
        if id.is_empty() || !id.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err(StoreError::Other(io::Error::new(
                io::ErrorKind::InvalidInput,
                "bad session id",
            )));
        }
        Ok(self.root.join(PARTS_DIR).join(format!("{id}.part")))
    }
}

async fn read_chunk(file: Arc<std::fs::File>, offset: u64, len: u64) -> Result<Bytes> {
    let job = tokio::task::spawn_blocking(move || {
        let mut buf = vec![0u8; usize::try_from(len).unwrap_or(0)];
        file.read_exact_at(&mut buf, offset)?;
        Ok::<_, io::Error>(Bytes::from(buf))
    });
    job.await
        .map_err(|e| StoreError::Other(io::Error::other(e.to_string())))?
        .map_err(StoreError::from)
}

impl PartStore for S3Parts {
    fn capabilities(&self) -> Capabilities {
        self.local.capabilities()
    }
    fn create(&self, id: &str) -> BoxFuture<'static, Result<()>> {
        PartStore::create(&self.local, id)
    }
    fn open_sink(&self, id: &str) -> BoxFuture<'static, Result<Arc<dyn Sink>>> {
        PartStore::open_sink(&self.local, id)
    }
    fn exists(&self, id: &str) -> BoxFuture<'static, Result<bool>> {
        PartStore::exists(&self.local, id)
    }
    fn abort(&self, id: &str) -> BoxFuture<'static, Result<()>> {
        PartStore::abort(&self.local, id)
    }
    fn concat(&self, dest: &str, sources: Vec<(String, u64)>) -> BoxFuture<'static, Result<()>> {
        PartStore::concat(&self.local, dest, sources)
    }
    fn hash_range(
        &self,
        id: &str,
        sha: sha2::Sha256,
        from: u64,
        to: u64,
    ) -> BoxFuture<'static, Result<sha2::Sha256>> {
        PartStore::hash_range(&self.local, id, sha, from, to)
    }
    fn complete(&self, id: &str, len: u64, key: &Key) -> BoxFuture<'static, Result<()>> {
        let (me, id, key) = (self.clone(), id.to_string(), key.clone());
        Box::pin(async move {
            let path = me.data_path(&id)?;
            let file = tokio::task::spawn_blocking(move || std::fs::File::open(path))
                .await
                .map_err(|e| StoreError::Other(io::Error::other(e.to_string())))??;
            let file = Arc::new(file);
            let staged = me.s3.begin(&key, Some(len)).await?;
            let sink = staged.sink();
            let mut offset = 0;
            while offset < len {
                let n = (len - offset).min(COPY_CHUNK);
                let data = read_chunk(file.clone(), offset, n).await?;
                sink.write(offset, data).await?;
                offset += n;
            }
            drop(sink);
            staged.commit().await?;
            PartStore::abort(&me.local, &id).await
        })
    }
    fn target_taken(&self, key: &Key) -> BoxFuture<'static, Result<bool>> {
        self.s3.exists(key)
    }
    fn list(&self) -> BoxFuture<'static, Result<Vec<String>>> {
        PartStore::list(&self.local)
    }
}
