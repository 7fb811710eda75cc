//! Resumable uploads whose bytes live in the bucket ([`S3Parts`]), so any instance can
//! continue them: nothing of a session is on an instance's local disk.
//!
//! Everything of a session is under `<prefix>.xferd-parts/<id>/` (a reserved segment: no
//! client key can name it):
//!
//! - **Appends** (tus, IETF: [`PartStore::open_sink`]) go to one multipart upload per
//!   session, begun for the session's target ([`PartStore::create_at`]) at the first full
//!   part. Every part but the last has the session's part size (`part_size` of the
//!   instance that began it, kept in the state: Cloudflare R2 requires equal parts), and
//!   is uploaded as soon as that many bytes are buffered; what is past the last part is
//!   the *tail*, kept in the session's state object (`state`, see `manifest.rs`) together
//!   with the upload id, every part's number, offset, length and ETag, and the SHA-256
//!   state of the bytes in parts. A sync ends with one PutObject of `state`, so what the
//!   engine acknowledges after it is durably in S3. The part number is `first byte / part
//!   size + 1` (a retried part gets its old number and replaces it).
//! - Before a sync that added parts, `state` is copied (CopyObject, no data moved) to
//!   `prev`: if the session record lags the bucket (the process died, or Redis failed,
//!   between the sync and the record's update), the next append starts at the previous
//!   sync point, which `prev` describes (its tail holds the bytes that went into the part).
//! - **Chunks** (HFS: [`PartStore::open_chunk_sink`]) are objects of their own,
//!   `c/<offset>`, one staged write each (a retried chunk replaces its object), so chunks
//!   sent in parallel to several instances never share a state object. Completion reads
//!   them back in order (the engine needs the SHA-256 before the object becomes visible)
//!   and streams them into the target through a create-only staged write.
//! - [`PartStore::complete`]: the tail becomes the last part, CompleteMultipartUpload with
//!   `If-None-Match: *` (a taken key: [`StoreError::Exists`], the session's data kept);
//!   an upload that never filled a part is one create-only PutObject. Then the session's
//!   objects are removed, `state` first (without it the session is gone).
//! - Completion survives being cut: every object a session writes into its target
//!   (multipart upload, PutObject, server-side assembly, staged write) carries
//!   `x-amz-meta-xferd-session: <id>`. A completion that fails where the target already
//!   holds `len` bytes marked with the session's id was cut after the object was in
//!   place (the process died before it removed the session's objects, or before the
//!   engine recorded the completion): it is done, and what is left is the clean-up. A
//!   target someone else wrote stays a taken key.
//! - **Sealed sessions** (tus partial uploads, created without a target): their parts go
//!   to the session's own `data` object, which [`PartStore::seal`] completes once the
//!   partial is whole; a concatenation then copies the parts that lie inside one partial
//!   server-side and reads the partials once, for the hash and the parts between two
//!   (`seal.rs`, `copy.rs`).
//! - [`PartStore::hash_range`] uses the carried SHA-256 state plus the tail (appends) or
//!   reads chunk objects (chunks); [`PartStore::read_at`] can read tails and chunks, not
//!   the parts of an unfinished upload (scanning then fails, by its policy).
//!
//! Requests (`xferd_s3_requests_total{op}`): an append within a part costs GetObject
//! (`state`) + PutObject (`state`); one that fills parts adds UploadPart per part and one
//! CopyObject (`prev`); the first part adds CreateMultipartUpload. Completion: GetObject,
//! UploadPart (tail), CompleteMultipartUpload, DeleteObject (`state`, and `prev` if any).
//! Nothing grows with the number of appends beyond the one part upload each.

use super::client::{Call, Op};
use super::manifest::Manifest;
use super::{staged, S3Store, MIN_PART_SIZE};
use crate::storage::key::Key;
use crate::storage::store::{BoxFuture, Capabilities, Object, PartStore, Result, Sink, StoreError};
use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use http::{Method, StatusCode};
use sha2::{Digest, Sha256};
use std::io;
use std::sync::Arc;

/// The reserved key segment of session data.
pub const PARTS_PREFIX: &str = ".xferd-parts/";
/// S3's limit on part numbers.
const MAX_PARTS: u64 = 10_000;
/// The largest state object read back: a tail below the largest part `[storage.s3]`
/// allows (5 GiB; a session's tail is below its own part size) and a header of 10,000 parts.
pub(crate) const MAX_STATE: usize = (5 << 30) + (2 << 20);
/// Bytes per read when data is read back.
pub(crate) const READ_CHUNK: usize = 4 << 20;

/// Sequential appends, parts of at least 5 MiB, no free-space query. `concat`: sealed
/// partial uploads are joined with server-side copies (`copy.rs`); other sources are read
/// back and uploaded again.
pub const S3_PART_CAPABILITIES: Capabilities = Capabilities {
    random_write: false,
    concat: true,
    free_space: false,
    min_part_size: MIN_PART_SIZE,
    dedup: false,
};

/// Sealed sessions' objects by session id, oldest first.
pub(crate) type SealedCache = Vec<(String, Arc<dyn Object>)>;

#[derive(Clone)]
pub struct S3Parts {
    pub(crate) s3: S3Store,
    /// The objects of sessions sealed and read lately (`seal.rs` rule 5).
    pub(crate) sealed: Arc<std::sync::Mutex<SealedCache>>,
}

impl std::fmt::Debug for S3Parts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Parts")
            .field("s3", &self.s3)
            .finish_non_exhaustive()
    }
}

pub(crate) fn other(msg: impl Into<String>) -> StoreError {
    StoreError::Other(io::Error::other(msg.into()))
}

impl S3Parts {
    /// Session data in `s3`'s bucket, under its prefix.
    pub fn new(s3: S3Store) -> S3Parts {
        S3Parts {
            s3,
            sealed: Arc::default(),
        }
    }

    /// The object a session without a target uploads its parts for, and that sealing
    /// completes (`…/.xferd-parts/<id>/data`).
    pub(crate) fn data_key(&self, id: &str) -> Result<String> {
        Ok(format!("{}data", self.base(id)?))
    }

    /// The full key prefix of a session's objects (`…/.xferd-parts/<id>/`).
    pub(crate) fn base(&self, id: &str) -> Result<String> {
        if id.is_empty() || !id.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err(StoreError::Other(io::Error::new(
                io::ErrorKind::InvalidInput,
                "bad session id",
            )));
        }
        Ok(self.s3.full(&format!("{PARTS_PREFIX}{id}/")))
    }

    /// GetObject of a whole small object (`None`: there is none).
    pub(crate) async fn get(&self, full: &str, max: usize) -> Result<Option<Bytes>> {
        let c = self.s3.client();
        let resp = c
            .send(Call::new(Op::GetObject, Method::GET, Some(full)))
            .await?;
        match resp.status {
            StatusCode::OK => {}
            StatusCode::NOT_FOUND => {
                let _ = resp.drain().await;
                return Ok(None);
            }
            _ => return Err(resp.error().await),
        }
        let mut out = BytesMut::new();
        let mut body = resp.into_stream();
        while let Some(chunk) = body.next().await {
            let chunk = chunk?;
            if out.len() + chunk.len() > max {
                return Err(other("S3 session object larger than expected"));
            }
            out.extend_from_slice(&chunk);
        }
        Ok(Some(out.freeze()))
    }

    pub(crate) async fn put(&self, full: &str, body: Bytes) -> Result<()> {
        let resp = (self.s3.client())
            .send(Call::new(Op::PutObject, Method::PUT, Some(full)).body(body, None))
            .await?;
        if !resp.status.is_success() {
            return Err(resp.error().await);
        }
        resp.drain().await
    }

    pub(crate) async fn remove(&self, full: &str) -> Result<()> {
        let resp = (self.s3.client())
            .send(Call::new(Op::DeleteObject, Method::DELETE, Some(full)))
            .await?;
        match resp.status.as_u16() {
            200..=299 | 404 => resp.drain().await,
            _ => Err(resp.error().await),
        }
    }

    /// CopyObject within the bucket (server-side; no bytes through this instance).
    pub(crate) async fn copy(&self, from: &str, to: &str) -> Result<()> {
        let resp = (self.s3.client())
            .send(
                Call::new(Op::CopyObject, Method::PUT, Some(to))
                    .header("x-amz-copy-source", self.copy_source(from)),
            )
            .await?;
        super::copy::copy_answer(resp, "CopyObject").await.map(drop)
    }

    /// The session's state object, if it has one.
    pub(crate) async fn load(&self, id: &str) -> Result<Option<Manifest>> {
        let key = format!("{}state", self.base(id)?);
        match self.get(&key, MAX_STATE).await? {
            Some(raw) => Manifest::decode(raw).map(Some),
            None => Ok(None),
        }
    }

    async fn load_req(&self, id: &str) -> Result<Manifest> {
        self.load(id).await?.ok_or(StoreError::NotFound)
    }

    /// CreateMultipartUpload for `target`, marked as session `id`'s.
    pub(crate) async fn create_upload(&self, target: &str, id: &str) -> Result<String> {
        let resp = (self.s3.client())
            .send(
                Call::new(Op::CreateMultipartUpload, Method::POST, Some(target))
                    .query("uploads", "")
                    .header(super::SESSION_META, id),
            )
            .await?;
        if !resp.status.is_success() {
            return Err(resp.error().await);
        }
        let text = resp.text().await?;
        super::xml::text(&text, "UploadId")
            .filter(|id| !id.is_empty())
            .ok_or_else(|| other("CreateMultipartUpload answered no UploadId"))
    }

    /// Every object key of a session (for removal).
    pub(crate) async fn keys_of(&self, id: &str) -> Result<Vec<String>> {
        self.keys_under(&self.base(id)?).await
    }

    async fn keys_under(&self, prefix: &str) -> Result<Vec<String>> {
        let (mut out, mut token) = (Vec::new(), None);
        loop {
            let (page, next) = self
                .s3
                .list_page(prefix, None, token.as_deref(), 1000)
                .await?;
            out.extend(page.into_iter().map(|(k, _)| k));
            match next {
                Some(t) => token = Some(t),
                None => return Ok(out),
            }
        }
    }

    /// Whether a session's data are appends (a state with bytes or an upload), not chunks.
    fn is_appends(m: &Manifest) -> bool {
        m.end() > 0 || m.upload_id.is_some()
    }

    async fn complete_appends(&self, id: &str, m: Manifest, len: u64, full: String) -> Result<()> {
        let pe = m.parts_end();
        if len < pe || len > m.end() {
            return Err(other(
                "the completed length does not match the stored bytes",
            ));
        }
        let tail = m.tail.slice(..usize::try_from(len - pe).unwrap_or(0));
        let _serial = self.s3.commit_lock(&full).await;
        if m.upload_id.is_some() && !m.parts.is_empty() && m.target.as_deref() != Some(&full) {
            return Err(other("the upload was begun for another key"));
        }
        self.finish_upload(id, &m, tail, &full, true).await?;
        let base = self.base(id)?;
        let mut gone = vec![format!("{base}state")];
        if m.has_prev {
            gone.push(format!("{base}prev"));
        }
        self.clean_up(id, gone).await;
        Ok(())
    }

    /// The session's parts and then `tail` as the object `key`: the tail as the last part
    /// and CompleteMultipartUpload, or, without parts, one PutObject of the tail (an upload
    /// begun is aborted). `create_only` for a client's key (a taken one: `Exists`), not for
    /// the session's own `data`.
    pub(crate) async fn finish_upload(
        &self,
        id: &str,
        m: &Manifest,
        tail: Bytes,
        key: &str,
        create_only: bool,
    ) -> Result<()> {
        match (&m.upload_id, m.parts.is_empty()) {
            (Some(up), false) => {
                let mut list: Vec<(u32, String)> =
                    m.parts.iter().map(|p| (p.number, p.etag.clone())).collect();
                if !tail.is_empty() {
                    let number = part_number(m.parts_end(), m.grain())?;
                    let etag = self.s3.upload_part_hashing(key, up, number, tail).await?;
                    list.push((number, etag));
                }
                self.complete_upload(key, up, &list, create_only).await
            }
            _ => {
                let mut call = Call::new(Op::PutObject, Method::PUT, Some(key))
                    .header(super::SESSION_META, id)
                    .body(tail, None);
                if create_only {
                    call = call.header("if-none-match", "*");
                }
                staged::committed(self.s3.client().send(call).await?).await?;
                if let Some(up) = &m.upload_id {
                    let _ = self.s3.abort_upload(&self.upload_key(id, m)?, up).await;
                }
                Ok(())
            }
        }
    }

    /// CompleteMultipartUpload of `list` ((number, ETag), in order), with `If-None-Match:
    /// *` when `create_only`.
    pub(crate) async fn complete_upload(
        &self,
        key: &str,
        up: &str,
        list: &[(u32, String)],
        create_only: bool,
    ) -> Result<()> {
        let mut call = Call::new(Op::CompleteMultipartUpload, Method::POST, Some(key))
            .query("uploadId", up)
            .header("content-type", "application/xml")
            .body(Bytes::from(super::xml::complete_body(list)), None);
        if create_only {
            call = call.header("if-none-match", "*");
        }
        staged::committed(self.s3.client().send(call).await?).await
    }

    /// Whether `full` holds `len` bytes that session `id` put there (see the module doc: a
    /// completion cut after its object was in place). Unknown (HEAD failed) is no.
    async fn placed_before(&self, id: &str, full: &str, len: u64) -> bool {
        match self.s3.head(full).await {
            Ok(Some(h)) => h.meta.len == len && h.session.as_deref() == Some(id),
            _ => false,
        }
    }

    /// [`S3Parts::clean_up`] of every object of the session, `state` first: a removal cut
    /// after it leaves a session that is gone, not one with some chunks missing.
    pub(crate) async fn clean_up_all(&self, id: &str) {
        let mut gone = self.keys_of(id).await.unwrap_or_default();
        gone.sort_by_key(|k| !k.ends_with("/state"));
        self.clean_up(id, gone).await;
    }

    /// After a completion the object is in place: what is left is cleanup (a failure
    /// leaves objects that the session's removal deletes later), never a failed one.
    pub(crate) async fn clean_up(&self, id: &str, keys: Vec<String>) {
        for k in keys {
            if let Err(e) = self.remove(&k).await {
                tracing::warn!(%id, error = %e, "cannot remove a completed session's object from S3");
            }
        }
    }
}

/// The part number of a part starting at `start` (parts start at multiples of `grain`).
pub(crate) fn part_number(start: u64, grain: u64) -> Result<u32> {
    let n = start / grain.max(1) + 1;
    if n > MAX_PARTS {
        return Err(StoreError::Other(io::Error::new(
            io::ErrorKind::FileTooLarge,
            "upload too large for S3's 10,000 parts",
        )));
    }
    u32::try_from(n).map_err(|_| other("part number"))
}

impl PartStore for S3Parts {
    fn capabilities(&self) -> Capabilities {
        S3_PART_CAPABILITIES
    }

    fn create(&self, id: &str) -> BoxFuture<'static, Result<()>> {
        self.create_for(id, None)
    }

    fn create_at(&self, id: &str, target: &Key) -> BoxFuture<'static, Result<()>> {
        let full = self.s3.full(target.as_str());
        self.create_for(id, Some(full))
    }

    fn open_sink(&self, id: &str) -> BoxFuture<'static, Result<Arc<dyn Sink>>> {
        let (me, id) = (self.clone(), id.to_string());
        Box::pin(async move {
            let st = super::append::AState::new(me.load_req(&id).await?, me.s3.inner.part_size)?;
            let max_in_flight = me.s3.inner.max_in_flight;
            Ok(super::append::sink(me, id, max_in_flight, st))
        })
    }

    fn open_chunk_sink(
        &self,
        id: &str,
        offset: u64,
        len: u64,
    ) -> BoxFuture<'static, Result<Arc<dyn Sink>>> {
        let (me, id) = (self.clone(), id.to_string());
        Box::pin(async move { me.chunk_sink(&id, offset, len) })
    }

    fn exists(&self, id: &str) -> BoxFuture<'static, Result<bool>> {
        let (me, id) = (self.clone(), id.to_string());
        Box::pin(async move {
            let key = format!("{}state", me.base(&id)?);
            Ok(me.s3.head(&key).await?.is_some())
        })
    }

    fn abort(&self, id: &str) -> BoxFuture<'static, Result<()>> {
        let (me, id) = (self.clone(), id.to_string());
        Box::pin(async move {
            me.forget_sealed(&id);
            if let Some(m) = me.load(&id).await? {
                if let Some(up) = &m.upload_id {
                    me.s3.abort_upload(&me.upload_key(&id, &m)?, up).await?;
                }
            }
            for k in me.keys_of(&id).await? {
                me.remove(&k).await?;
            }
            Ok(())
        })
    }

    fn concat(&self, dest: &str, sources: Vec<(String, u64)>) -> BoxFuture<'static, Result<()>> {
        let (me, dest) = (self.clone(), dest.to_string());
        Box::pin(async move { me.concat_sessions(&dest, sources).await })
    }

    fn seal(&self, id: &str, len: u64) -> BoxFuture<'static, Result<()>> {
        let (me, id) = (self.clone(), id.to_string());
        Box::pin(async move { me.seal_session(&id, len).await })
    }

    fn hash_range(
        &self,
        id: &str,
        sha: Sha256,
        from: u64,
        to: u64,
    ) -> BoxFuture<'static, Result<Sha256>> {
        let (me, id) = (self.clone(), id.to_string());
        Box::pin(async move {
            if from >= to {
                return Ok(sha);
            }
            let m = me.load_req(&id).await?;
            if let Some(len) = m.sealed {
                let obj = me.open_sealed(&id, len).await?;
                let (sha, seen) = S3Parts::hash_object(obj, sha, from, to - from).await?;
                return match seen == to - from {
                    true => Ok(sha),
                    false => Err(other("hash past a sealed session's bytes")),
                };
            }
            if !S3Parts::is_appends(&m) {
                return me.hash_chunks(&id, sha, from, to).await;
            }
            let pe = m.parts_end();
            if to > m.end() {
                return Err(other(format!(
                    "hash to {to} past the stored bytes ({})",
                    m.end()
                )));
            }
            let at = |x: u64| usize::try_from(x - pe).unwrap_or(0);
            let (mut h, bytes) = if from >= pe {
                (sha, m.tail.slice(at(from)..at(to)))
            } else if to >= pe {
                // The carried state covers [0, parts_end): the caller's prefix is the same
                // bytes, so the result is the same digest.
                (m.hasher()?, m.tail.slice(..at(to)))
            } else {
                return Err(StoreError::Other(io::Error::new(
                    io::ErrorKind::Unsupported,
                    "the parts of an unfinished S3 upload cannot be read back",
                )));
            };
            tokio::task::spawn_blocking(move || {
                h.update(&bytes);
                h
            })
            .await
            .map_err(|e| other(e.to_string()))
        })
    }

    fn complete(&self, id: &str, len: u64, key: &Key) -> BoxFuture<'static, Result<()>> {
        let (me, id, full) = (self.clone(), id.to_string(), self.s3.full(key.as_str()));
        Box::pin(async move {
            let done = async {
                let m = me.load_req(&id).await?;
                if let Some(n) = m.sealed {
                    me.complete_sealed(&id, m, n, len, full.clone()).await
                } else if S3Parts::is_appends(&m) {
                    me.complete_appends(&id, m, len, full.clone()).await
                } else {
                    me.complete_chunks(&id, len, full.clone()).await
                }
            }
            .await;
            match done {
                Err(e) if me.placed_before(&id, &full, len).await => {
                    tracing::info!(%id, error = %e, "a completion cut after its object was in place: cleaning up");
                    me.forget_sealed(&id);
                    me.clean_up_all(&id).await;
                    Ok(())
                }
                r => r,
            }
        })
    }

    fn target_taken(&self, key: &Key) -> BoxFuture<'static, Result<bool>> {
        crate::storage::store::Store::exists(&self.s3, key)
    }

    fn list(&self) -> BoxFuture<'static, Result<Vec<String>>> {
        let me = self.clone();
        Box::pin(async move {
            let root = me.s3.full(PARTS_PREFIX);
            let mut ids: Vec<String> = me
                .keys_under(&root)
                .await?
                .into_iter()
                .filter_map(|k| {
                    let rest = k.strip_prefix(&root)?;
                    let (id, obj) = rest.split_once('/')?;
                    (obj == "state").then(|| id.to_string())
                })
                .collect();
            ids.sort();
            ids.dedup();
            Ok(ids)
        })
    }

    fn read_at(&self, id: &str, offset: u64, len: usize) -> BoxFuture<'static, Result<Bytes>> {
        let (me, id) = (self.clone(), id.to_string());
        Box::pin(async move {
            if let Some(obj) = me.cached_sealed(&id) {
                return obj.read_at(offset, len).await;
            }
            let m = me.load_req(&id).await?;
            if let Some(n) = m.sealed {
                return me.open_sealed(&id, n).await?.read_at(offset, len).await;
            }
            if !S3Parts::is_appends(&m) {
                return me.read_chunks(&id, offset, len).await;
            }
            let pe = m.parts_end();
            if offset < pe {
                return Err(StoreError::Other(io::Error::new(
                    io::ErrorKind::Unsupported,
                    "the parts of an unfinished S3 upload cannot be read back",
                )));
            }
            let from = usize::try_from(offset - pe)
                .unwrap_or(usize::MAX)
                .min(m.tail.len());
            let to = from.saturating_add(len).min(m.tail.len());
            Ok(m.tail.slice(from..to))
        })
    }
}

impl S3Parts {
    fn create_for(&self, id: &str, target: Option<String>) -> BoxFuture<'static, Result<()>> {
        let (me, id) = (self.clone(), id.to_string());
        Box::pin(async move {
            let m = Manifest {
                target,
                ..Manifest::default()
            };
            me.put(&format!("{}state", me.base(&id)?), m.encode()).await
        })
    }
}
