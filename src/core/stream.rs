//! The streaming engine shared by every handler: request bodies into storage, stored bytes
//! into response bodies. Memory per transfer is bounded by the I/O buffer size (at most two
//! buffers in flight), whatever the client sends or requests.
//!
//! Buffers come from a [`Lease`] on the pool; the adaptive engine may change the lease's
//! size between buffers ([`Lease::retune`]), so a long transfer follows its connection.
//!
//! Uploads: chunks are gathered into one buffer; a full buffer is hashed (SHA-256) and
//! written at its offset on the blocking pool while the next buffer fills; written buffers
//! go back to the pool.
//! Downloads: a reader task fills buffers with positional reads and hands them over a
//! channel of capacity one, so the disk read of the next buffer overlaps sending this one
//! (those buffers leave with the response and are not reused).

use super::body::{BodyError, BodyStream};
use super::buffers::Lease;
use super::error::CoreError;
use crate::storage::fs::{read_at, write_at};
use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use sha2::{Digest, Sha256};
use std::fs::File;
use std::sync::Arc;
use tokio::task::JoinHandle;

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

type WriteJob = JoinHandle<std::io::Result<(File, Digests, Bytes)>>;

/// Writes a stream of chunks to a file at increasing offsets from `start`, in buffers of
/// `buf_size`, hashing on the blocking pool while the next buffer fills. At most two
/// buffers exist at once.
pub struct Writer {
    idle: Option<(File, Digests)>,
    pending: Option<WriteJob>,
    buf: BytesMut,
    lease: Lease,
    /// Offset where the buffered bytes will be written.
    next: u64,
    start: u64,
}

impl Writer {
    pub fn new(file: File, start: u64, lease: Lease, digests: Digests) -> Writer {
        Writer {
            idle: Some((file, digests)),
            pending: None,
            buf: lease.buffer(),
            lease,
            next: start,
            start,
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
            self.buf.extend_from_slice(now);
            chunk = later;
            if self.buf.len() >= self.lease.size() {
                self.write_buffer().await?;
            }
        }
        Ok(())
    }

    async fn write_buffer(&mut self) -> Result<(), CoreError> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let (file, mut digests) = self.take().await?;
        let written = self.next - self.start;
        self.lease.retune(written);
        let data = std::mem::replace(&mut self.buf, self.lease.buffer()).freeze();
        let offset = self.next;
        self.next += data.len() as u64;
        self.pending = Some(tokio::task::spawn_blocking(move || {
            digests.update(&data);
            write_at(&file, &data, offset)?;
            Ok((file, digests, data))
        }));
        Ok(())
    }

    async fn take(&mut self) -> Result<(File, Digests), CoreError> {
        match self.pending.take() {
            Some(job) => {
                let (file, digests, data) = job
                    .await
                    .map_err(|e| CoreError::Storage(std::io::Error::other(e.to_string())))?
                    .map_err(CoreError::from)?;
                if let Ok(buf) = data.try_into_mut() {
                    self.lease.recycle(buf);
                }
                Ok((file, digests))
            }
            None => self
                .idle
                .take()
                .ok_or_else(|| CoreError::Storage(lost_file())),
        }
    }

    /// Writes everything accepted and makes it durable (`fdatasync`).
    pub async fn sync(&mut self) -> Result<(), CoreError> {
        self.write_buffer().await?;
        let (file, digests) = self.take().await?;
        let file = tokio::task::spawn_blocking(move || file.sync_data().map(|()| file))
            .await
            .map_err(|e| CoreError::Storage(std::io::Error::other(e.to_string())))??;
        self.idle = Some((file, digests));
        Ok(())
    }

    /// Writes everything accepted (without fsync) and returns the file and digests.
    pub async fn finish(mut self) -> Result<(File, Digests), CoreError> {
        self.write_buffer().await?;
        self.take().await
    }
}

/// Reads exactly `expected` bytes from `body` into `file`, returning the file and the
/// SHA-256 of what was written. A short or long body is an error; the caller discards the file.
pub async fn receive(
    body: &mut BodyStream,
    file: File,
    expected: u64,
    lease: Lease,
) -> Result<(File, [u8; 32]), CoreError> {
    let digests = Digests {
        sha256: Some(Sha256::new()),
        check: None,
    };
    let mut w = Writer::new(file, 0, lease, digests);
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
    let (file, digests) = w.finish().await?;
    let hash = digests.sha256.unwrap_or_default().finalize().into();
    Ok((file, hash))
}

fn lost_file() -> std::io::Error {
    std::io::Error::other("upload file handle lost")
}

/// One piece of a response body.
#[derive(Debug, Clone)]
pub enum Part {
    /// Literal bytes (multipart headers).
    Bytes(Bytes),
    /// `len` bytes of the file from `offset`.
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

/// Streams `parts` (file regions and literal bytes) in buffers of the lease's size.
pub fn send(file: Arc<File>, parts: Vec<Part>, lease: Lease, done: Option<Done>) -> BodyStream {
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
                        let buf_size = lease.retune(sent);
                        let want =
                            usize::try_from((end - pos).min(buf_size as u64)).unwrap_or(buf_size);
                        let f = file.clone();
                        let read = tokio::task::spawn_blocking(move || read_at(&f, want, pos))
                            .await
                            .map_err(|e| e.to_string())
                            .and_then(|r| r.map_err(|e| e.to_string()));
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

#[cfg(test)]
mod tests {
    use super::*;

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

    fn temp() -> (tempfile::TempDir, File, std::path::PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        let f = File::create(&p).unwrap();
        (dir, f, p)
    }

    #[tokio::test]
    async fn receive_writes_and_hashes() {
        let (_d, f, p) = temp();
        let mut body = body_of(vec![Ok(b"hello "), Ok(b"wor"), Ok(b"ld")]);
        let (_f, hash) = receive(&mut body, f, 11, lease(4)).await.unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"hello world");
        assert_eq!(hash.to_vec(), Sha256::digest(b"hello world").to_vec());
    }

    #[tokio::test]
    async fn receive_refuses_wrong_sizes_and_errors() {
        let (_d, f, _) = temp();
        let r = receive(&mut body_of(vec![Ok(b"abc")]), f, 4, lease(4)).await;
        assert!(matches!(r, Err(CoreError::SizeMismatch)));
        let (_d, f, _) = temp();
        let r = receive(&mut body_of(vec![Ok(b"abcde")]), f, 4, lease(4)).await;
        assert!(matches!(r, Err(CoreError::SizeMismatch)));
        let (_d, f, _) = temp();
        let r = receive(&mut body_of(vec![Ok(b"ab"), Err("reset")]), f, 4, lease(4)).await;
        assert!(matches!(r, Err(CoreError::BodyIncomplete(_))));
    }

    #[tokio::test]
    async fn send_streams_regions_in_buffers() {
        let (_d, _f, p) = temp();
        std::fs::write(&p, b"0123456789").unwrap();
        let f = Arc::new(File::open(&p).unwrap());
        let parts = vec![
            Part::Bytes(Bytes::from_static(b"[")),
            Part::File { offset: 2, len: 5 },
            Part::Bytes(Bytes::from_static(b"]")),
        ];
        let chunks: Vec<Bytes> = send(f, parts, lease(2), None)
            .map(|c| c.unwrap())
            .collect()
            .await;
        assert!(chunks.iter().all(|c| c.len() <= 2));
        assert_eq!(chunks.concat(), b"[23456]");
    }
}
