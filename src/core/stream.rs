//! The streaming engine shared by every handler: request bodies into storage, stored bytes
//! into response bodies. Memory per transfer is bounded by the I/O buffer size (at most two
//! buffers in flight), whatever the client sends or requests.
//!
//! Buffers come from a [`Lease`] on the pool; the adaptive engine may change the lease's
//! size between buffers ([`Lease::retune`]), so a long transfer follows its connection. A
//! lease starts small and doubles after a buffer that filled (upload) or was read and
//! taken (download) within one service time (buffers rule 4), so memory follows the rate.
//!
//! Uploads: chunks are gathered into one buffer; a full buffer is hashed (SHA-256, on the
//! blocking pool) and written at its offset through the storage [`Sink`] (on the
//! filesystem: `pwrite` on the blocking pool, from the same buffer: no copy), both while the
//! next buffer fills; written buffers go back to the pool.
//! Downloads: a reader task fills buffers with reads of the stored [`Object`] and hands them
//! over a channel of capacity one, so the read of the next buffer overlaps sending this one
//! (those buffers leave with the response and are not reused). A body that fits in one
//! buffer is read before the response starts and sent as one chunk ([`ready`]).

use super::body::{BodyError, BodyStream};
use super::buffers::Lease;
use super::error::CoreError;
use super::sizing::SERVICE_TIME;
use crate::storage::store::{BlockingSink, Object, Sink};
use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use sha2::{Digest, Sha256};
use std::sync::Arc;
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// Digests computed while bytes are written: an optional SHA-256 of everything, and an
/// optional per-request checksum (tus `Upload-Checksum`).
#[derive(Clone, Default)]
pub struct Digests {
    pub sha256: Option<Sha256>,
    pub check: Option<super::resumable::checksum::Hasher>,
}

impl Digests {
    fn update(&mut self, data: &[u8]) {
        if let Some(h) = &mut self.sha256 {
            h.update(data);
        }
        if let Some(h) = &mut self.check {
            h.update(data);
        }
    }
}

type WriteJob = JoinHandle<Result<(Digests, Bytes), CoreError>>;

/// Writes a stream of chunks to a sink at increasing offsets from `start`, in buffers of
/// the lease's size, hashing on the blocking pool while the next buffer fills. At most two
/// buffers exist at once.
pub struct Writer {
    sink: Arc<dyn Sink>,
    /// The sink's synchronous side, if it has one: hash and write in one blocking job.
    local: Option<Arc<dyn BlockingSink>>,
    idle: Option<Digests>,
    pending: Option<WriteJob>,
    buf: BytesMut,
    lease: Lease,
    /// Offset where the buffered bytes will be written.
    next: u64,
    start: u64,
    /// When the buffer being filled received its first byte.
    filling_since: Option<Instant>,
}

impl Writer {
    pub fn new(sink: Arc<dyn Sink>, start: u64, lease: Lease, digests: Digests) -> Writer {
        Writer {
            local: sink.clone().blocking(),
            sink,
            idle: Some(digests),
            pending: None,
            buf: lease.buffer(),
            lease,
            next: start,
            start,
            filling_since: None,
        }
    }

    /// Bytes accepted so far (written or buffered).
    pub fn accepted(&self) -> u64 {
        self.next - self.start + self.buf.len() as u64
    }

    /// The offset just past the last accepted byte.
    pub fn end(&self) -> u64 {
        self.start + self.accepted()
    }

    /// Accepts `chunk`; full buffers (never grown past the lease's size) are written.
    pub async fn push(&mut self, mut chunk: &[u8]) -> Result<(), CoreError> {
        while !chunk.is_empty() {
            let room = self.lease.size().saturating_sub(self.buf.len()).max(1);
            let (now, later) = chunk.split_at(room.min(chunk.len()));
            let started = *self.filling_since.get_or_insert_with(Instant::now);
            self.buf.extend_from_slice(now);
            chunk = later;
            if self.buf.len() >= self.lease.size() {
                // A buffer that filled within one service time is too small for this
                // client's rate (buffers rule 4).
                let fast = started.elapsed() < SERVICE_TIME;
                self.write_buffer().await?;
                if fast {
                    self.lease.grow();
                    if self.buf.capacity() < self.lease.size() {
                        let small = std::mem::replace(&mut self.buf, self.lease.buffer());
                        self.lease.recycle(small);
                    }
                }
            }
        }
        Ok(())
    }

    async fn write_buffer(&mut self) -> Result<(), CoreError> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let mut digests = self.take().await?;
        self.filling_since = None;
        let written = self.next - self.start;
        self.lease.retune(written);
        let data = std::mem::replace(&mut self.buf, self.lease.buffer()).freeze();
        let offset = self.next;
        self.next += data.len() as u64;
        if let Some(local) = self.local.clone() {
            // A local file: hash, then pwrite, in one job on the blocking pool (no copy).
            self.pending = Some(tokio::task::spawn_blocking(move || {
                digests.update(&data);
                local.write_at(offset, &data)?;
                Ok((digests, data))
            }));
            return Ok(());
        }
        // Elsewhere: hash on the blocking pool while the sink writes.
        let write = self.sink.write(offset, data.clone());
        let hashed = data.clone();
        self.pending = Some(tokio::spawn(async move {
            let hash = tokio::task::spawn_blocking(move || {
                digests.update(&hashed);
                digests
            });
            let (hash, written) = futures_util::future::join(hash, write).await;
            written?;
            let digests =
                hash.map_err(|e| CoreError::Storage(std::io::Error::other(e.to_string())))?;
            Ok((digests, data))
        }));
        Ok(())
    }

    async fn take(&mut self) -> Result<Digests, CoreError> {
        match self.pending.take() {
            Some(job) => {
                let (digests, data) = job
                    .await
                    .map_err(|e| CoreError::Storage(std::io::Error::other(e.to_string())))??;
                if let Ok(buf) = data.try_into_mut() {
                    self.lease.recycle(buf);
                }
                Ok(digests)
            }
            None => self
                .idle
                .take()
                .ok_or_else(|| CoreError::Storage(lost_file())),
        }
    }

    /// Writes everything accepted and makes it durable (`fdatasync` on a filesystem).
    pub async fn sync(&mut self) -> Result<(), CoreError> {
        self.write_buffer().await?;
        let digests = self.take().await?;
        self.sink.sync().await?;
        self.idle = Some(digests);
        Ok(())
    }

    /// Writes everything accepted (without a sync) and returns the sink and digests.
    pub async fn finish(mut self) -> Result<(Arc<dyn Sink>, Digests), CoreError> {
        self.write_buffer().await?;
        let digests = self.take().await?;
        Ok((self.sink.clone(), digests))
    }
}

/// Reads exactly `expected` bytes from `body` into `sink`, returning the SHA-256 of what
/// was written. A short or long body is an error; the caller discards the staged write.
pub async fn receive(
    body: &mut BodyStream,
    sink: Arc<dyn Sink>,
    expected: u64,
    lease: Lease,
) -> Result<[u8; 32], CoreError> {
    let digests = Digests {
        sha256: Some(Sha256::new()),
        check: None,
    };
    let mut w = Writer::new(sink, 0, lease, digests);
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|BodyError(e)| CoreError::BodyIncomplete(e))?;
        if w.accepted() + chunk.len() as u64 > expected {
            return Err(CoreError::SizeMismatch);
        }
        w.push(&chunk).await?;
    }
    if w.accepted() != expected {
        return Err(CoreError::SizeMismatch);
    }
    let (_sink, digests) = w.finish().await?;
    Ok(digests.sha256.unwrap_or_default().finalize().into())
}

fn lost_file() -> std::io::Error {
    std::io::Error::other("upload file handle lost")
}

/// One piece of a response body.
#[derive(Debug, Clone)]
pub enum Part {
    /// Literal bytes (multipart headers).
    Bytes(Bytes),
    /// `len` bytes of the object from `offset`.
    File { offset: u64, len: u64 },
}

impl Part {
    pub fn len(&self) -> u64 {
        match self {
            Part::Bytes(b) => b.len() as u64,
            Part::File { len, .. } => *len,
        }
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Called with the bytes sent when a response body has been handed over completely.
pub type Done = Box<dyn FnOnce(u64) + Send>;

/// Streams `parts` (object regions and literal bytes) in buffers of the lease's size.
pub fn send(
    object: Arc<dyn Object>,
    parts: Vec<Part>,
    lease: Lease,
    done: Option<Done>,
) -> BodyStream {
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, BodyError>>(1);
    tokio::spawn(async move {
        let mut lease = lease;
        let mut sent = 0u64;
        for part in parts {
            match part {
                Part::Bytes(b) => {
                    sent += b.len() as u64;
                    if tx.send(Ok(b)).await.is_err() {
                        return;
                    }
                }
                Part::File { offset, len } => {
                    let end = offset.saturating_add(len);
                    let mut pos = offset;
                    while pos < end {
                        let started = Instant::now();
                        let buf_size = lease.retune(sent);
                        let want =
                            usize::try_from((end - pos).min(buf_size as u64)).unwrap_or(buf_size);
                        let read = object.read_at(pos, want).await.map_err(|e| e.to_string());
                        let item = match read {
                            Ok(b) if b.is_empty() => {
                                Err(BodyError("file shrank while sending".into()))
                            }
                            Ok(b) => Ok(b),
                            Err(e) => Err(BodyError(e)),
                        };
                        let failed = item.is_err();
                        if let Ok(b) = &item {
                            pos += b.len() as u64;
                            sent += b.len() as u64;
                        }
                        if tx.send(item).await.is_err() || failed {
                            return;
                        }
                        // Read and taken by the client within one service time: the
                        // buffer is too small for its rate (buffers rule 4).
                        if buf_size == lease.size() && started.elapsed() < SERVICE_TIME {
                            lease.grow();
                        }
                    }
                }
            }
        }
        drop(tx);
        if let Some(done) = done {
            done(sent);
        }
    });
    Box::pin(futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    }))
}

/// A response body read already (one buffer's worth, see [`super::download`]): `data` in
/// one chunk, with no reader task and no channel. Holds `lease` (the memory the bytes are
/// accounted to) until the body is dropped; `done` is called as the chunk is handed over.
pub fn ready(data: Bytes, lease: Lease, done: Option<Done>) -> BodyStream {
    Box::pin(Ready {
        data: Some(data),
        _lease: lease,
        done,
    })
}

struct Ready {
    data: Option<Bytes>,
    _lease: Lease,
    done: Option<Done>,
}

impl futures_util::Stream for Ready {
    type Item = Result<Bytes, BodyError>;
    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        let item = self.data.take();
        if let (Some(data), Some(done)) = (&item, self.done.take()) {
            done(data.len() as u64);
        }
        std::task::Poll::Ready(item.map(Ok))
    }
}

#[cfg(test)]
mod tests {
    //! With the in-memory store: the engine's behaviour does not depend on the backend
    //! (the fs backend is exercised by the integration tests).
    use super::*;
    use crate::storage::key::Key;
    use crate::storage::mem::MemStore;
    use crate::storage::store::{Staged, Store};

    fn body_of(chunks: Vec<Result<&'static [u8], &'static str>>) -> BodyStream {
        Box::pin(futures_util::stream::iter(chunks.into_iter().map(|c| {
            c.map(Bytes::from_static)
                .map_err(|e| BodyError(e.to_string()))
        })))
    }

    fn lease(size: usize) -> Lease {
        crate::core::buffers::Pool::new(size, size, 1 << 20)
            .try_lease(size)
            .unwrap()
    }

    fn key() -> Key {
        Key::parse("f").unwrap()
    }

    async fn staged(st: &MemStore) -> Box<dyn Staged> {
        st.begin(&key(), None).await.unwrap()
    }

    async fn stored(st: &MemStore) -> Option<Vec<u8>> {
        let obj = st.open(&key()).await.unwrap()?;
        Some(obj.read_at(0, 1 << 20).await.unwrap().to_vec())
    }

    #[tokio::test]
    async fn receive_writes_and_hashes() {
        let st = MemStore::new(1 << 20);
        let w = staged(&st).await;
        let mut body = body_of(vec![Ok(b"hello "), Ok(b"wor"), Ok(b"ld")]);
        let hash = receive(&mut body, w.sink(), 11, lease(4)).await.unwrap();
        assert_eq!(stored(&st).await, None, "visible before the commit");
        w.commit().await.unwrap();
        assert_eq!(stored(&st).await.unwrap(), b"hello world");
        assert_eq!(hash.to_vec(), Sha256::digest(b"hello world").to_vec());
    }

    #[tokio::test]
    async fn buffers_grow_with_a_fast_body_and_stay_small_for_a_slow_one() {
        // Buffers rule 4, seen from the writer.
        let pool = crate::core::buffers::Pool::new(4, 64, 1 << 20);
        let st = MemStore::new(1 << 20);
        let fast = pool.lease_growing(64).await.unwrap();
        let mut w = Writer::new(staged(&st).await.sink(), 0, fast, Digests::default());
        w.push(&[7u8; 1000]).await.unwrap();
        assert_eq!(
            w.lease.size(),
            64,
            "a body that comes at once grows to the cap"
        );
        let slow = pool.lease_growing(64).await.unwrap();
        let mut w = Writer::new(staged(&st).await.sink(), 0, slow, Digests::default());
        for _ in 0..6 {
            w.push(&[7u8; 2]).await.unwrap();
            tokio::time::sleep(SERVICE_TIME * 2).await;
        }
        assert_eq!(
            w.lease.size(),
            4,
            "a buffer that took longer than a service time"
        );
    }

    #[tokio::test]
    async fn receive_refuses_wrong_sizes_and_errors() {
        let st = MemStore::new(1 << 20);
        let r = receive(
            &mut body_of(vec![Ok(b"abc")]),
            staged(&st).await.sink(),
            4,
            lease(4),
        )
        .await;
        assert!(matches!(r, Err(CoreError::SizeMismatch)));
        let r = receive(
            &mut body_of(vec![Ok(b"abcde")]),
            staged(&st).await.sink(),
            4,
            lease(4),
        )
        .await;
        assert!(matches!(r, Err(CoreError::SizeMismatch)));
        let body = vec![Ok(&b"ab"[..]), Err("reset")];
        let r = receive(&mut body_of(body), staged(&st).await.sink(), 4, lease(4)).await;
        assert!(matches!(r, Err(CoreError::BodyIncomplete(_))));
    }

    #[tokio::test]
    async fn a_full_store_is_insufficient_storage() {
        let st = MemStore::new(6);
        let body = vec![Ok(&b"abcd"[..]), Ok(b"efgh")];
        let r = receive(&mut body_of(body), staged(&st).await.sink(), 8, lease(4)).await;
        assert!(matches!(r, Err(CoreError::InsufficientStorage)), "{r:?}");
    }

    #[tokio::test]
    async fn send_streams_regions_in_buffers() {
        let st = MemStore::new(1 << 20);
        let w = staged(&st).await;
        w.sink()
            .write(0, Bytes::from_static(b"0123456789"))
            .await
            .unwrap();
        w.commit().await.unwrap();
        let obj = st.open(&key()).await.unwrap().unwrap();
        let parts = vec![
            Part::Bytes(Bytes::from_static(b"[")),
            Part::File { offset: 2, len: 5 },
            Part::Bytes(Bytes::from_static(b"]")),
        ];
        let chunks: Vec<Bytes> = send(obj, parts, lease(2), None)
            .map(|c| c.unwrap())
            .collect()
            .await;
        assert!(chunks.iter().all(|c| c.len() <= 2));
        assert_eq!(chunks.concat(), b"[23456]");
    }

    #[tokio::test]
    async fn ready_yields_its_bytes_once_and_reports_them() {
        let pool = crate::core::buffers::Pool::new(4, 4, 1 << 20);
        let lease = pool.try_lease(4).unwrap();
        assert!(pool.in_use() > 0);
        let seen = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let s2 = seen.clone();
        let done: Done = Box::new(move |n| s2.store(n + 1, std::sync::atomic::Ordering::SeqCst));
        let mut body = ready(Bytes::from_static(b"abc"), lease, Some(done));
        assert_eq!(
            seen.load(std::sync::atomic::Ordering::SeqCst),
            0,
            "not before"
        );
        assert_eq!(body.next().await.unwrap().unwrap(), &b"abc"[..]);
        assert_eq!(
            seen.load(std::sync::atomic::Ordering::SeqCst),
            4,
            "3 bytes, once"
        );
        assert!(body.next().await.is_none());
        assert!(pool.in_use() > 0, "the lease lives as long as the body");
        drop(body);
        assert_eq!(pool.in_use(), 0);
    }
}
