//! Server-side assembly: an object made of ranges of objects already in the bucket, by
//! UploadPartCopy, with no byte through this instance (HFS completion from its chunk
//! objects), and tus concatenation of sealed partial uploads (`seal.rs`) with copies
//! where a part lies inside one partial.
//!
//! Rules:
//! 1. Only where every piece but the last is at least the minimum part and all of them
//!    have one length (Cloudflare R2 requires equal parts), and there are at most 10,000;
//!    otherwise the caller streams the bytes through a staged write as before.
//! 2. Create-only: CompleteMultipartUpload with `If-None-Match: *` under the store's
//!    commit lock, as every commit; a failure anywhere aborts the multipart upload, so
//!    nothing partial is ever visible.
//! 3. At most `max_parts_in_flight` copies at once, their ETags kept in part order.
//! 4. A concatenation keeps the session's part size: part `k` is copied when it lies
//!    inside one source, else uploaded from the bytes read; the sources are read once,
//!    in order, for the SHA-256 (the engine checks it before anything becomes visible),
//!    and only the bytes of uploaded parts and of the tail are kept, at most one part.
//!    The result is an ordinary appended session (upload, parts, tail, hash state), so
//!    completion is unchanged.

use super::client::{Call, Op};
use super::manifest::{Manifest, PartRec};
use super::parts::{other, S3Parts, READ_CHUNK};
use super::MIN_PART_SIZE;
use crate::storage::store::{read_range, Object, Result, StoreError};
use bytes::{Bytes, BytesMut};
use futures_util::{StreamExt, TryStreamExt};
use http::Method;
use sha2::{Digest, Sha256};
use std::io;
use std::sync::Arc;

/// A range `[from, to)` of the object under the full key.
pub(crate) type Piece = (String, u64, u64);

/// The part number of the part at index `k`.
fn part_no(k: usize) -> Result<u32> {
    u32::try_from(k + 1).map_err(|_| other("part number"))
}

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

/// The answer of a server-side copy (CopyObject, UploadPartCopy): its body, or the error,
/// also when it is a 200 with an `<Error>` body (which those calls may answer).
pub(crate) async fn copy_answer(resp: super::client::Response, what: &str) -> Result<String> {
    if !resp.status.is_success() {
        return Err(resp.error().await);
    }
    let text = resp.text().await?;
    if text.contains("<Error>") {
        let code = super::xml::text(&text, "Code").unwrap_or_default();
        return Err(StoreError::Transient(io::Error::other(format!(
            "S3 {what} failed: {code}"
        ))));
    }
    Ok(text)
}

impl S3Parts {
    /// The `x-amz-copy-source` of the object under the full key `src`.
    pub(crate) fn copy_source(&self, src: &str) -> String {
        format!(
            "/{}/{}",
            self.s3.client().bucket(),
            super::sigv4::encode_path(src)
        )
    }

    /// UploadPartCopy of `piece` as part `number` of `upload_id` on `full`.
    async fn upload_part_copy(
        &self,
        full: &str,
        upload_id: &str,
        number: u32,
        piece: &Piece,
    ) -> Result<String> {
        let (src, from, to) = piece;
        let resp = (self.s3.client())
            .send(
                Call::new(Op::UploadPartCopy, Method::PUT, Some(full))
                    .query("partNumber", number.to_string())
                    .query("uploadId", upload_id)
                    .header("x-amz-copy-source", self.copy_source(src))
                    .header(
                        "x-amz-copy-source-range",
                        format!("bytes={from}-{}", to - 1),
                    ),
            )
            .await?;
        let text = copy_answer(resp, "UploadPartCopy").await?;
        super::xml::text(&text, "ETag")
            .filter(|e| !e.is_empty())
            .ok_or_else(|| other("UploadPartCopy answered no ETag"))
    }

    /// Makes `full` (create-only, marked as session `id`'s) of `pieces`, in order,
    /// server-side (the rules above; the caller checked [`copyable`]).
    pub(crate) async fn assemble(&self, full: &str, pieces: Vec<Piece>, id: &str) -> Result<()> {
        let up = self.create_upload(full, id).await?;
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
        let mut copied = self
            .copy_parts(full, up, pieces.into_iter().enumerate())
            .await?;
        copied.sort_unstable_by_key(|c| c.0);
        let list = copied
            .into_iter()
            .map(|(k, etag)| Ok((part_no(k)?, etag)))
            .collect::<Result<Vec<_>>>()?;
        let _serial = self.s3.commit_lock(full).await;
        self.complete_upload(full, up, &list, true).await
    }

    /// Rule 3: UploadPartCopy of each `(index, piece)` as part `index + 1`, at most
    /// `max_parts_in_flight` at once; `(index, ETag)` in the order they finish.
    async fn copy_parts(
        &self,
        full: &str,
        up: &str,
        todo: impl Iterator<Item = (usize, Piece)>,
    ) -> Result<Vec<(usize, String)>> {
        // Owned futures: borrowed ones trip the `Send` of the caller's boxed future.
        let copies = todo.map(|(k, piece)| {
            let (me, full, up) = (self.clone(), full.to_string(), up.to_string());
            async move {
                let etag = me.upload_part_copy(&full, &up, part_no(k)?, &piece).await?;
                Ok::<_, StoreError>((k, etag))
            }
        });
        futures_util::stream::iter(copies)
            .buffer_unordered(self.s3.inner.max_in_flight.max(1))
            .try_collect()
            .await
    }
}

/// Rule 4: for each whole part of `psize` over the concatenation of `sources` (full key,
/// length), the range to copy when it lies inside one source (`None`: upload it).
pub(crate) fn plan_concat(sources: &[(String, u64)], psize: u64) -> Vec<Option<Piece>> {
    let total: u64 = sources.iter().map(|s| s.1).sum();
    let mut starts = Vec::with_capacity(sources.len());
    let mut at = 0u64;
    for (_, n) in sources {
        starts.push(at);
        at += n;
    }
    (0..total / psize.max(1))
        .map(|k| {
            let (a, b) = (k * psize, (k + 1) * psize);
            let i = starts.partition_point(|&s| s <= a).checked_sub(1)?;
            let (key, n) = &sources[i];
            (b <= starts[i] + n).then(|| (key.clone(), a - starts[i], b - starts[i]))
        })
        .collect()
}

/// A source of a concatenation: its full key, object and length.
pub(crate) type Source = (String, Arc<dyn Object>, u64);

/// What reading the sources gave: uploaded parts (index, ETag), the hash of the bytes
/// in whole parts, the tail.
type Read = (Vec<(usize, String)>, Sha256, Bytes);

async fn hashed(sha: Sha256, bytes: Bytes) -> Result<Sha256> {
    tokio::task::spawn_blocking(move || {
        let mut sha = sha;
        sha.update(&bytes);
        sha
    })
    .await
    .map_err(|e| other(e.to_string()))
}

impl S3Parts {
    /// Rule 4: `dest` (fresh, with a target) becomes the concatenation of `sources`.
    pub(crate) async fn concat_copying(
        &self,
        dest: &str,
        mut dm: Manifest,
        sources: Vec<Source>,
    ) -> Result<()> {
        let target = dm.target.clone().ok_or_else(|| other("no target"))?;
        let psize = dm.psize.unwrap_or(self.s3.inner.part_size as u64);
        let keyed: Vec<(String, u64)> = sources.iter().map(|(k, _, n)| (k.clone(), *n)).collect();
        let plan = plan_concat(&keyed, psize);
        let up = self.create_upload(&target, dest).await?;
        let built = async {
            let todo: Vec<(usize, Piece)> = (plan.iter().enumerate())
                .filter_map(|(k, p)| Some((k, p.clone()?)))
                .collect();
            let copying = self.copy_parts(&target, &up, todo.into_iter());
            let reading = self.read_for_concat(&target, &up, &sources, &plan, psize);
            let (copied, (uploaded, sha, tail)) = tokio::try_join!(copying, reading)?;
            let mut etags: Vec<Option<String>> = vec![None; plan.len()];
            for (k, e) in copied.into_iter().chain(uploaded) {
                etags[k] = Some(e);
            }
            let mut parts = Vec::with_capacity(plan.len());
            for (k, e) in etags.into_iter().enumerate() {
                parts.push(PartRec {
                    number: part_no(k)?,
                    start: k as u64 * psize,
                    len: psize,
                    etag: e.ok_or_else(|| other("a concatenated part has no ETag"))?,
                });
            }
            (dm.parts, dm.upload_id, dm.psize) = (parts, Some(up.clone()), Some(psize));
            dm.set_hasher(&sha);
            dm.tail = tail;
            self.put(&format!("{}state", self.base(dest)?), dm.encode())
                .await
        }
        .await;
        if built.is_err() {
            if let Err(e) = self.s3.abort_upload(&target, &up).await {
                tracing::warn!(error = %e, "cannot abort a failed concatenation");
            }
        }
        built
    }

    /// Rule 4's one read of the sources: hashed, the bytes of uploaded parts uploaded.
    async fn read_for_concat(
        &self,
        target: &str,
        up: &str,
        sources: &[Source],
        plan: &[Option<Piece>],
        psize: u64,
    ) -> Result<Read> {
        let parts_end = plan.len() as u64 * psize;
        let (mut sha, mut pos) = (Sha256::new(), 0u64);
        let mut in_parts = (parts_end == 0).then(Sha256::new);
        let (mut cur, mut uploaded) = (BytesMut::new(), Vec::new());
        for (_, obj, n) in sources {
            let (mut body, mut seen) = (read_range(obj.clone(), 0, *n, READ_CHUNK), 0u64);
            while let Some(b) = body.next().await {
                let mut b = b?;
                seen += b.len() as u64;
                while !b.is_empty() {
                    let k = usize::try_from(pos / psize).unwrap_or(usize::MAX);
                    let room = (pos / psize + 1) * psize - pos;
                    let piece =
                        b.split_to(b.len().min(usize::try_from(room).unwrap_or(usize::MAX)));
                    let kept = plan.get(k).is_none_or(Option::is_none);
                    if kept {
                        cur.extend_from_slice(&piece);
                    }
                    pos += piece.len() as u64;
                    sha = hashed(sha, piece).await?;
                    if pos == parts_end && in_parts.is_none() {
                        in_parts = Some(sha.clone());
                    }
                    if kept && k < plan.len() && pos % psize == 0 {
                        let number = u32::try_from(k + 1).map_err(|_| other("part number"))?;
                        let part = std::mem::take(&mut cur).freeze();
                        let etag = (self.s3)
                            .upload_part_hashing(target, up, number, part)
                            .await?;
                        uploaded.push((k, etag));
                    }
                }
            }
            if seen != *n {
                return Err(other("a concatenation source is shorter than its length"));
            }
        }
        Ok((uploaded, in_parts.unwrap_or(sha), cur.freeze()))
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

    #[test]
    fn a_concatenation_copies_the_parts_inside_one_source() {
        let s = |k: &str, n: u64| (k.to_string(), n);
        let plan = plan_concat(&[s("a", 12), s("b", 3), s("c", 10)], 5);
        let want = [
            Some(("a".to_string(), 0, 5)),
            Some(("a".to_string(), 5, 10)),
            None, // 10..15 spans a and b
            Some(("c".to_string(), 0, 5)),
            Some(("c".to_string(), 5, 10)),
        ];
        assert_eq!(plan, want);
        assert!(plan_concat(&[s("a", 4)], 5).is_empty(), "all tail");
        assert_eq!(plan_concat(&[s("a", 5), s("b", 5)], 5).len(), 2);
        assert!(plan_concat(&[s("a", 5), s("b", 5)], 5)
            .iter()
            .all(Option::is_some));
    }
}
