//! Server-side assembly: an object made of ranges of objects already in the bucket, by
//! UploadPartCopy, with no byte through this instance (HFS completion from its chunk
//! objects).
//!
//! Rules:
//! 1. Only where every piece but the last is at least the minimum part and all of them
//!    have one length (Cloudflare R2 requires equal parts), and there are at most 10,000;
//!    otherwise the caller streams the bytes through a staged write as before.
//! 2. Create-only: CompleteMultipartUpload with `If-None-Match: *` under the store's
//!    commit lock, as every commit; a failure anywhere aborts the multipart upload, so
//!    nothing partial is ever visible.
//! 3. At most `max_parts_in_flight` copies at once, their ETags kept in part order.

use super::client::{Call, Op};
use super::parts::{other, S3Parts};
use super::{staged, MIN_PART_SIZE};
use crate::storage::store::{Result, StoreError};
use bytes::Bytes;
use futures_util::{StreamExt, TryStreamExt};
use http::Method;
use std::io;

/// A range `[from, to)` of the object under the full key.
pub(crate) type Piece = (String, u64, u64);

/// Rule 1: whether `pieces` can be parts of one upload.
pub(crate) fn copyable(pieces: &[Piece]) -> bool {
    let Some(((_, a, b), rest)) = pieces.split_first() else {
        return false;
    };
    let first = b - a;
    let but_last = &pieces[..pieces.len() - 1];
    let last = pieces[pieces.len() - 1].2 - pieces[pieces.len() - 1].1;
    pieces.len() <= 10_000
        && (rest.is_empty() || (first >= MIN_PART_SIZE && last <= first))
        && but_last.iter().all(|(_, a, b)| b - a == first)
        && pieces.iter().all(|(_, a, b)| b > a)
}

impl S3Parts {
    /// UploadPartCopy of `piece` as part `number` of `upload_id` on `full`.
    async fn upload_part_copy(
        &self,
        full: &str,
        upload_id: &str,
        number: u32,
        piece: &Piece,
    ) -> Result<String> {
        let (src, from, to) = piece;
        let source = format!(
            "/{}/{}",
            self.s3.client().bucket(),
            super::sigv4::encode_path(src)
        );
        let resp = (self.s3.client())
            .send(
                Call::new(Op::UploadPartCopy, Method::PUT, Some(full))
                    .query("partNumber", number.to_string())
                    .query("uploadId", upload_id)
                    .header("x-amz-copy-source", source)
                    .header(
                        "x-amz-copy-source-range",
                        format!("bytes={from}-{}", to - 1),
                    ),
            )
            .await?;
        if !resp.status.is_success() {
            return Err(resp.error().await);
        }
        // May answer 200 with an <Error> body, as CopyObject.
        let text = resp.text().await?;
        if text.contains("<Error>") {
            let code = super::xml::text(&text, "Code").unwrap_or_default();
            return Err(StoreError::Transient(io::Error::other(format!(
                "S3 UploadPartCopy failed: {code}"
            ))));
        }
        super::xml::text(&text, "ETag")
            .filter(|e| !e.is_empty())
            .ok_or_else(|| other("UploadPartCopy answered no ETag"))
    }

    /// Makes `full` (create-only) of `pieces`, in order, server-side (the rules above;
    /// the caller checked [`copyable`]).
    pub(crate) async fn assemble(&self, full: &str, pieces: Vec<Piece>) -> Result<()> {
        let up = self.create_upload(full).await?;
        let r = self.assemble_into(full, &up, pieces).await;
        if r.is_err() {
            // Rule 2.
            if let Err(e) = self.s3.abort_upload(full, &up).await {
                tracing::warn!(error = %e, "cannot abort a failed server-side assembly");
            }
        }
        r
    }

    async fn assemble_into(&self, full: &str, up: &str, pieces: Vec<Piece>) -> Result<()> {
        let in_flight = self.s3.inner.max_in_flight.max(1);
        // Owned futures: borrowed ones trip the `Send` of the caller's boxed future.
        let copies = pieces.into_iter().enumerate().map(|(i, p)| {
            let (me, full, up) = (self.clone(), full.to_string(), up.to_string());
            async move {
                let number = u32::try_from(i + 1).map_err(|_| other("part number"))?;
                let etag = me.upload_part_copy(&full, &up, number, &p).await?;
                Ok::<_, StoreError>((number, etag))
            }
        });
        let list: Vec<(u32, String)> = futures_util::stream::iter(copies)
            .buffered(in_flight)
            .try_collect()
            .await?;
        let _serial = self.s3.commit_lock(full).await;
        let resp = (self.s3.client())
            .send(
                Call::new(Op::CompleteMultipartUpload, Method::POST, Some(full))
                    .query("uploadId", up.to_string())
                    .header("if-none-match", "*")
                    .header("content-type", "application/xml")
                    .body(Bytes::from(super::xml::complete_body(&list)), None),
            )
            .await?;
        staged::committed(resp).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(len: u64) -> Piece {
        ("k".into(), 0, len)
    }

    #[test]
    fn pieces_are_copied_only_as_equal_parts_of_the_minimum_or_more() {
        let m = MIN_PART_SIZE;
        assert!(copyable(&[p(1)]), "one piece: the last part, any size");
        assert!(copyable(&[p(m), p(m), p(3)]));
        assert!(copyable(&[p(2 * m), p(2 * m)]));
        assert!(!copyable(&[]));
        assert!(!copyable(&[p(m - 1), p(1)]), "a short part");
        assert!(!copyable(&[p(m), p(m + 1), p(1)]), "unequal parts (R2)");
        assert!(!copyable(&[p(m), p(0)]), "an empty range");
        assert!(!copyable(&[p(m), p(m + 1)]), "a last part above the others");
        assert!(!copyable(&vec![p(m); 10_001]), "more than S3's parts");
    }
}
