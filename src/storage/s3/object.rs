//! Reads of one S3 object, pinned to the ETag it had when opened (`If-Match`: a changed
//! object fails the read instead of mixing versions). A sequential reader is served from
//! one streaming ranged GET: consecutive `read_at` calls take the next bytes of its body
//! (memory: one frame). The GET asks for a window that starts at 4 MiB (or the read's
//! length) and doubles with every window read to its end, up to 1 GiB, so a small range
//! does not pull the whole object and a whole download costs a handful of GETs. A seek
//! (an offset other than the next) or a failed body re-issues the GET at the offset.

use super::client::{Call, Client, Op};
use super::Head;
use crate::storage::store::{BoxFuture, ByteStream, Object, ObjectMeta, Result, StoreError};
use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use http::Method;
use std::io;
use std::sync::Arc;

const FIRST_WINDOW: u64 = 4 << 20;
const MAX_WINDOW: u64 = 1 << 30;

pub struct S3Object {
    client: Client,
    key: String,
    head: Head,
    reader: Arc<tokio::sync::Mutex<Reader>>,
}

#[derive(Default)]
struct Reader {
    /// Offset of the next byte the open GET (or `pending`) yields.
    pos: u64,
    /// End (exclusive) of the open GET's window.
    window_end: u64,
    window: u64,
    stream: Option<ByteStream>,
    pending: Bytes,
}

impl S3Object {
    pub fn new(client: Client, key: String, head: Head) -> S3Object {
        S3Object {
            client,
            key,
            head,
            reader: Arc::default(),
        }
    }
}

fn changed(what: &str) -> StoreError {
    StoreError::Other(io::Error::other(format!(
        "S3 object {what} while being read"
    )))
}

async fn open_window(
    client: &Client,
    key: &str,
    etag: &str,
    from: u64,
    end: u64,
) -> Result<ByteStream> {
    let mut call = Call::new(Op::GetObject, Method::GET, Some(key))
        .header("range", format!("bytes={from}-{}", end - 1));
    if !etag.is_empty() {
        call = call.header("if-match", etag);
    }
    let resp = client.send(call).await?;
    match resp.status.as_u16() {
        206 => Ok(resp.into_stream()),
        200 if from == 0 => Ok(resp.into_stream()),
        412 => {
            let _ = resp.drain().await;
            Err(changed("changed"))
        }
        404 => {
            let _ = resp.drain().await;
            Err(changed("removed"))
        }
        _ => Err(resp.error().await),
    }
}

impl Object for S3Object {
    fn meta(&self) -> ObjectMeta {
        self.head.meta
    }

    fn read_at(&self, offset: u64, len: usize) -> BoxFuture<'static, Result<Bytes>> {
        let (client, key, etag) = (
            self.client.clone(),
            self.key.clone(),
            self.head.etag.clone(),
        );
        let total = self.head.meta.len;
        let reader = self.reader.clone();
        Box::pin(async move {
            if offset >= total || len == 0 {
                return Ok(Bytes::new());
            }
            let want = usize::try_from((total - offset).min(len as u64)).unwrap_or(len);
            let mut r = reader.lock().await;
            if r.pos != offset {
                // A seek: what the open GET would yield is not wanted.
                r.stream = None;
                r.pending = Bytes::new();
                r.window = 0;
                r.pos = offset;
                r.window_end = offset;
            }
            let mut out = BytesMut::new();
            let mut retried = false;
            while out.len() < want {
                if r.pending.is_empty() {
                    if r.stream.is_none() || r.pos >= r.window_end {
                        let grown = (r.window.saturating_mul(2)).clamp(FIRST_WINDOW, MAX_WINDOW);
                        let window = grown.max(want as u64);
                        let end = r.pos.saturating_add(window).min(total);
                        let stream = open_window(&client, &key, &etag, r.pos, end).await?;
                        r.stream = Some(stream);
                        r.window = window;
                        r.window_end = end;
                    }
                    let next = match r.stream.as_mut() {
                        Some(s) => s.next().await,
                        None => None,
                    };
                    match next {
                        Some(Ok(b)) => r.pending = b,
                        None if r.pos >= r.window_end => continue,
                        None | Some(Err(_)) if !retried => {
                            // A body cut short (or failed): once more from here.
                            retried = true;
                            r.stream = None;
                            r.window_end = r.pos;
                            continue;
                        }
                        None => return Err(changed("ended early")),
                        Some(Err(e)) => return Err(e),
                    }
                }
                let n = (want - out.len()).min(r.pending.len());
                let piece = r.pending.split_to(n);
                r.pos += n as u64;
                if out.is_empty() && n == want {
                    return Ok(piece);
                }
                out.extend_from_slice(&piece);
            }
            Ok(out.freeze())
        })
    }
}
