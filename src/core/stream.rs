//! The streaming engine shared by every handler: request bodies into storage, stored bytes
//! into response bodies. Memory per transfer is bounded by the I/O buffer size (at most two
//! buffers in flight), whatever the client sends or requests.
//!
//! Uploads: chunks are gathered into one buffer; a full buffer is hashed (SHA-256) and
//! written at its offset on the blocking pool while the next buffer fills.
//! Downloads: a reader task fills buffers with positional reads and hands them over a
//! channel of capacity one, so the disk read of the next buffer overlaps sending this one.

use super::body::{BodyError, BodyStream};
use super::error::CoreError;
use crate::storage::fs::{read_at, write_at};
use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use sha2::{Digest, Sha256};
use std::fs::File;
use std::sync::Arc;
use tokio::task::JoinHandle;

type WriteJob = JoinHandle<std::io::Result<(File, Sha256)>>;

/// Reads exactly `expected` bytes from `body` into `file`, returning the file and the
/// SHA-256 of what was written. A short or long body is an error; the caller discards the file.
pub async fn receive(
    body: &mut BodyStream,
    file: File,
    expected: u64,
    buf_size: usize,
) -> Result<(File, [u8; 32]), CoreError> {
    let mut idle: Option<(File, Sha256)> = Some((file, Sha256::new()));
    let mut pending: Option<WriteJob> = None;
    let mut buf = BytesMut::with_capacity(buf_size);
    let mut offset = 0u64;
    let mut received = 0u64;
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|BodyError(e)| CoreError::BodyIncomplete(e))?;
        received = received.saturating_add(chunk.len() as u64);
        if received > expected {
            return Err(CoreError::SizeMismatch);
        }
        buf.extend_from_slice(&chunk);
        if buf.len() >= buf_size {
            let data = buf.split().freeze();
            let job = start_write(&mut idle, &mut pending, data, offset).await?;
            offset += job.1;
            pending = Some(job.0);
        }
    }
    if received != expected {
        return Err(CoreError::SizeMismatch);
    }
    if !buf.is_empty() {
        let data = buf.split().freeze();
        let job = start_write(&mut idle, &mut pending, data, offset).await?;
        pending = Some(job.0);
    }
    let (file, hasher) = match pending.take() {
        Some(job) => join(job).await?,
        None => idle.take().ok_or_else(|| CoreError::Storage(lost_file()))?,
    };
    Ok((file, hasher.finalize().into()))
}

async fn start_write(
    idle: &mut Option<(File, Sha256)>,
    pending: &mut Option<WriteJob>,
    data: Bytes,
    offset: u64,
) -> Result<(WriteJob, u64), CoreError> {
    let (file, mut hasher) = match pending.take() {
        Some(job) => join(job).await?,
        None => idle.take().ok_or_else(|| CoreError::Storage(lost_file()))?,
    };
    let len = data.len() as u64;
    let job = tokio::task::spawn_blocking(move || {
        hasher.update(&data);
        write_at(&file, &data, offset)?;
        Ok((file, hasher))
    });
    Ok((job, len))
}

async fn join(job: WriteJob) -> Result<(File, Sha256), CoreError> {
    job.await
        .map_err(|e| CoreError::Storage(std::io::Error::other(e.to_string())))?
        .map_err(CoreError::from)
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

/// Streams `parts` (file regions and literal bytes) in buffers of `buf_size`.
pub fn send(file: Arc<File>, parts: Vec<Part>, buf_size: usize) -> BodyStream {
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, BodyError>>(1);
    tokio::spawn(async move {
        for part in parts {
            match part {
                Part::Bytes(b) => {
                    if tx.send(Ok(b)).await.is_err() {
                        return;
                    }
                }
                Part::File { offset, len } => {
                    let end = offset.saturating_add(len);
                    let mut pos = offset;
                    while pos < end {
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
                        }
                        if tx.send(item).await.is_err() || failed {
                            return;
                        }
                    }
                }
            }
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
        let (_f, hash) = receive(&mut body, f, 11, 4).await.unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"hello world");
        assert_eq!(hash.to_vec(), Sha256::digest(b"hello world").to_vec());
    }

    #[tokio::test]
    async fn receive_refuses_wrong_sizes_and_errors() {
        let (_d, f, _) = temp();
        let r = receive(&mut body_of(vec![Ok(b"abc")]), f, 4, 4).await;
        assert!(matches!(r, Err(CoreError::SizeMismatch)));
        let (_d, f, _) = temp();
        let r = receive(&mut body_of(vec![Ok(b"abcde")]), f, 4, 4).await;
        assert!(matches!(r, Err(CoreError::SizeMismatch)));
        let (_d, f, _) = temp();
        let r = receive(&mut body_of(vec![Ok(b"ab"), Err("reset")]), f, 4, 4).await;
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
        let chunks: Vec<Bytes> = send(f, parts, 2).map(|c| c.unwrap()).collect().await;
        assert!(chunks.iter().all(|c| c.len() <= 2));
        assert_eq!(chunks.concat(), b"[23456]");
    }
}
