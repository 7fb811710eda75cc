//! Uploads a file with the project's client: as one `PUT` stream, or as parallel chunk
//! streams over one connection through the chunked-upload API (the chunk size is the
//! server's; each stream takes the next chunk index when it finishes one).

use super::{Client, ClientResponse};
use crate::core::body::{BodyError, BodyStream};
use anyhow::Context;
use bytes::Bytes;
use http::Request;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Read size when streaming a file into a request body.
const READ_SIZE: usize = 256 << 10;

/// Streams `len` bytes of `file` from `offset` as a request body.
pub fn file_body(file: Arc<std::fs::File>, offset: u64, len: u64) -> BodyStream {
    Box::pin(futures_util::stream::unfold(0u64, move |done| {
        let file = file.clone();
        async move {
            if done >= len {
                return None;
            }
            let n = usize::try_from((len - done).min(READ_SIZE as u64)).unwrap_or(READ_SIZE);
            let pos = offset + done;
            let read = tokio::task::spawn_blocking(move || {
                let mut buf = vec![0u8; n];
                file.read_exact_at(&mut buf, pos).map(|()| Bytes::from(buf))
            })
            .await;
            let item = match read {
                Ok(Ok(b)) => Ok(b),
                Ok(Err(e)) => Err(BodyError(e.to_string())),
                Err(e) => Err(BodyError(e.to_string())),
            };
            Some((item, done + n as u64))
        }
    }))
}

async fn read_body(resp: ClientResponse) -> anyhow::Result<(http::StatusCode, Bytes)> {
    let status = resp.status;
    Ok((status, resp.bytes().await?))
}

/// `PUT`s the whole file to `path_q` (a signed URL's path and query).
pub async fn put_file(
    client: &Client,
    file: &Path,
    path_q: &str,
) -> anyhow::Result<serde_json::Value> {
    let f =
        Arc::new(std::fs::File::open(file).with_context(|| format!("opening {}", file.display()))?);
    let len = f.metadata()?.len();
    let req = Request::builder()
        .method("PUT")
        .uri(path_q)
        .header("content-length", len)
        .body(())?;
    let (status, body) = read_body(client.send(req, Some(file_body(f, 0, len))).await?).await?;
    anyhow::ensure!(
        status.is_success(),
        "PUT failed: {status} {}",
        String::from_utf8_lossy(&body)
    );
    Ok(serde_json::from_slice(&body).unwrap_or_default())
}

/// Uploads through `/chunked-upload` with `streams` concurrent chunk requests.
/// `query` is a v3 `POST` signature over `target` (`v3=...&expires=...`).
pub async fn chunked_file(
    client: &Client,
    file: &Path,
    target: &str,
    query: &str,
    streams: usize,
) -> anyhow::Result<serde_json::Value> {
    let f =
        Arc::new(std::fs::File::open(file).with_context(|| format!("opening {}", file.display()))?);
    let len = f.metadata()?.len();
    let req = Request::builder()
        .method("POST")
        .uri(format!("/chunked-upload?{query}"))
        .header("x-filename", target)
        .header("x-total-size", len)
        .header("content-length", 0)
        .body(())?;
    let (status, body) = read_body(client.send(req, None).await?).await?;
    anyhow::ensure!(
        status.is_success(),
        "creating the upload failed: {status} {}",
        String::from_utf8_lossy(&body)
    );
    let created: serde_json::Value = serde_json::from_slice(&body)?;
    let id = created["session_id"]
        .as_str()
        .context("no session_id")?
        .to_string();
    let chunk = created["chunk_size"]
        .as_u64()
        .context("no chunk_size")?
        .max(1);
    let total = created["total_chunks"]
        .as_u64()
        .context("no total_chunks")?;
    let next = Arc::new(AtomicU64::new(0));
    let workers = (0..streams.max(1)).map(|_| {
        let (next, f, id) = (next.clone(), f.clone(), id.clone());
        async move {
            let mut last = serde_json::Value::Null;
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= total {
                    return Ok::<_, anyhow::Error>(last);
                }
                let offset = n * chunk;
                let size = chunk.min(len - offset);
                let req = Request::builder()
                    .method("PUT")
                    .uri("/chunked-upload")
                    .header("x-upload-session-id", &id)
                    .header("x-chunk-number", n)
                    .header("content-length", size)
                    .body(())?;
                let (status, body) = read_body(
                    client
                        .send(req, Some(file_body(f.clone(), offset, size)))
                        .await?,
                )
                .await?;
                anyhow::ensure!(
                    status.is_success(),
                    "chunk {n} failed: {status} {}",
                    String::from_utf8_lossy(&body)
                );
                last = serde_json::from_slice(&body).unwrap_or_default();
            }
        }
    });
    let results = futures_util::future::try_join_all(workers).await?;
    let done = results
        .into_iter()
        .find(|v| v["completed"] == true)
        .unwrap_or_default();
    anyhow::ensure!(
        done["completed"] == true,
        "the server did not report the upload complete"
    );
    Ok(done)
}
