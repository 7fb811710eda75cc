//! Request bodies read from a file region, for the client ([`super::chunked`] is the
//! upload logic).

use crate::core::body::{BodyError, BodyStream};
use bytes::Bytes;
use std::os::unix::fs::FileExt;
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
