//! The S3 backend: [`S3Store`] implements the storage contract over any S3-compatible
//! object store (AWS, R2, Ceph RGW, MinIO, SeaweedFS), with its own small client
//! ([`client`], SigV4 in [`sigv4`], XML in [`xml`]).
//!
//! - Keys are objects `prefix + key` in one bucket, path-style addressed.
//! - [`Store::begin`] checks the key first (taken, a "directory" of other keys, or below
//!   an object); a staged write (`staged.rs`) is one PutObject below `part_size`, else a
//!   multipart upload of equal parts of `part_size` with at most `max_parts_in_flight`
//!   parts in memory (the one filling included); commit is PutObject or
//!   CompleteMultipartUpload with `If-None-Match: *` (412 or 409: [`StoreError::Exists`]),
//!   commits of one key serialized per instance and, on a cluster, in Redis
//!   ([`S3Store::set_cluster_commits`]);
//!   any failure, an abort or a drop aborts the multipart upload; those a killed process
//!   left are aborted by the start-up sweep (`sweep.rs`, [`S3Store::sweep_uploads`]).
//! - Reads (`object.rs`) are ranged GETs pinned to the ETag (`If-Match`); consecutive
//!   `read_at` calls are served from one streaming GET (windows that double, 4 MiB to
//!   1 GiB), re-issued on a seek or after an error.
//! - Lists are ListObjectsV2 in the store's (byte) order of keys, paged with `start-after`.
//! - Resumable uploads in progress live in the bucket ([`parts::S3Parts`]): a multipart
//!   upload per session, its state (upload id, part ETags, tail) in a state object, so any
//!   instance continues them.
//!
//! Error kinds: 5xx, 429, timeouts and connection failures are transient (the breaker's
//! business); 403 is a backend failure (credentials); 404 is a missing object; a taken key
//! or a path conflict is the client's.

mod append;
mod chunks;
pub mod client;
mod copy;
mod manifest;
mod object;
pub mod parts;
mod seal;
#[cfg(test)]
mod session_tests;
pub mod sigv4;
mod staged;
mod sweep;
pub mod xml;

use super::key::Key;
use super::store::{
    BoxFuture, Capabilities, Listed, Object, ObjectMeta, Result, Staged, Store, StoreError,
};
pub use client::{Client, Endpoint, Observer, Op};
use http::{Method, StatusCode};
pub use sigv4::Credentials;
use std::io;
use std::sync::Arc;
use std::time::SystemTime;

/// The smallest part S3 accepts (all but the last).
pub const MIN_PART_SIZE: u64 = 5 << 20;

/// What the store needs to know (the `[storage.s3]` section, resolved).
#[derive(Clone, Debug)]
pub struct S3Options {
    /// `https://host[:port]` (or `http://` with `allow_http`).
    pub endpoint: String,
    pub region: String,
    pub bucket: String,
    /// Prepended to every key (`""` or ending in `/`).
    pub prefix: String,
    pub allow_http: bool,
    /// Size of every part but the last (at least [`MIN_PART_SIZE`]).
    pub part_size: u64,
    /// Parts in memory per upload, the one filling included (at least 1).
    pub max_parts_in_flight: usize,
    pub credentials: Credentials,
}

/// The S3 capabilities: sequential writes only, parts of at least 5 MiB, no free space.
pub const S3_CAPABILITIES: Capabilities = Capabilities {
    random_write: false,
    concat: false,
    free_space: false,
    min_part_size: MIN_PART_SIZE,
    // No links in S3: see the README ("Deduplication").
    dedup: false,
};

#[derive(Clone, Debug)]
pub struct S3Store {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    client: Client,
    prefix: String,
    part_size: usize,
    max_in_flight: usize,
    /// One lock per key being committed: this instance's commits of a key run one after
    /// the other, so the store's `If-None-Match: *` sees the first one's object. (Some
    /// stores do not check it atomically: SeaweedFS 4.48 let two concurrent
    /// CompleteMultipartUploads of one key both succeed.) Across instances the same holds
    /// through [`Inner::cluster_commits`].
    commits: std::sync::Mutex<std::collections::HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// On a cluster, the shared lock (`commit:<object key>` in Redis) taken after the local
    /// one, so that the commits of one key run one after the other on every instance (the
    /// interop/cluster same-key race got two 201s and a silently replaced object without
    /// it). When Redis cannot be reached the commit goes on under the local lock only (a
    /// plain PUT must not need Redis), with a warning: atomicity is then the store's.
    cluster_commits: std::sync::OnceLock<SharedLocker>,
}

/// The cluster's lock service (no Debug of its own).
struct SharedLocker(Arc<dyn crate::storage::meta::Locker>);

impl std::fmt::Debug for SharedLocker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SharedLocker")
    }
}

/// A held commit lock, local and (on a cluster) shared; released on drop (the map entry
/// goes at the next lookup).
pub(crate) struct CommitGuard(
    #[allow(dead_code)] tokio::sync::OwnedMutexGuard<()>,
    #[allow(dead_code)] Option<crate::storage::meta::Guard>,
);

/// The user metadata naming the resumable session an object was completed from, set on
/// every write of a session into its target (so a completion cut after it can be told
/// from a taken key: see `parts.rs`).
pub(crate) const SESSION_META: &str = "x-amz-meta-xferd-session";

/// What HEAD says about an object.
#[derive(Debug, Clone)]
pub(crate) struct Head {
    pub meta: ObjectMeta,
    pub etag: String,
    /// The session it was completed from ([`SESSION_META`]), if any.
    pub session: Option<String>,
}

/// The ETag as a version number (its SHA-256's first 16 bytes).
fn version_of(etag: &str) -> u128 {
    let d = <sha2::Sha256 as sha2::Digest>::digest(etag.trim_matches('"').as_bytes());
    let mut b = [0u8; 16];
    b.copy_from_slice(&d[..16]);
    u128::from_be_bytes(b)
}

fn conflict(what: &str) -> StoreError {
    StoreError::PathConflict(io::Error::other(what.to_string()))
}

impl S3Store {
    pub fn new(
        opts: S3Options,
        observer: Option<Observer>,
    ) -> std::result::Result<S3Store, String> {
        let (https, host, port) = Endpoint::parse(&opts.endpoint, opts.allow_http)?;
        if opts.part_size < MIN_PART_SIZE {
            return Err(format!("part_size must be at least {MIN_PART_SIZE} bytes"));
        }
        let part_size = usize::try_from(opts.part_size).map_err(|e| e.to_string())?;
        let client = Client::new(
            Endpoint {
                https,
                host,
                port,
                region: opts.region,
                bucket: opts.bucket,
                credentials: opts.credentials,
            },
            observer,
        )?;
        let mut prefix = opts.prefix.trim_start_matches('/').to_string();
        if !prefix.is_empty() && !prefix.ends_with('/') {
            prefix.push('/');
        }
        Ok(S3Store {
            inner: Arc::new(Inner {
                client,
                prefix,
                part_size,
                max_in_flight: opts.max_parts_in_flight.max(1),
                commits: Default::default(),
                cluster_commits: Default::default(),
            }),
        })
    }

    /// Serializes commits of a key across the instances of a cluster with `locker` (the
    /// lock `commit:<object key>`, taken after this instance's own; a commit goes on under
    /// the local lock alone when `locker` fails); set once, at start-up.
    pub fn set_cluster_commits(&self, locker: Arc<dyn crate::storage::meta::Locker>) {
        let _ = self.inner.cluster_commits.set(SharedLocker(locker));
    }

    pub fn client(&self) -> &Client {
        &self.inner.client
    }

    fn full(&self, key: &str) -> String {
        format!("{}{key}", self.inner.prefix)
    }

    /// Start-up check: the bucket answers HeadBucket with these credentials. The error says
    /// what is wrong (name resolution, connection, credentials, a missing bucket).
    pub async fn check(&self) -> std::result::Result<(), String> {
        let c = &self.inner.client;
        let resp = c
            .send(client::Call::new(Op::HeadBucket, Method::HEAD, None))
            .await
            .map_err(|e| format!("S3 endpoint unreachable: {}", e.into_io()))?;
        let status = resp.status;
        let region = resp.header("x-amz-bucket-region").map(str::to_string);
        let _ = resp.drain().await;
        let bucket = c.bucket();
        match status.as_u16() {
            200 => Ok(()),
            404 => Err(format!("S3 bucket `{bucket}` does not exist (HeadBucket: 404); create it first")),
            403 | 401 => Err(format!(
                "S3 refused the credentials for bucket `{bucket}` (HeadBucket: {status}): check the access key id and secret"
            )),
            301 | 400 if region.is_some() => Err(format!(
                "S3 bucket `{bucket}` is in region `{}`: set storage.s3.region",
                region.unwrap_or_default()
            )),
            _ => Err(format!("S3 bucket `{bucket}` check failed: HeadBucket answered {status}")),
        }
    }

    pub(crate) async fn head(&self, full: &str) -> Result<Option<Head>> {
        let resp = self
            .inner
            .client
            .send(client::Call::new(Op::HeadObject, Method::HEAD, Some(full)))
            .await?;
        match resp.status {
            StatusCode::OK => {
                let len = resp
                    .header("content-length")
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0);
                let etag = resp.header("etag").unwrap_or("").to_string();
                let session = resp.header(SESSION_META).map(str::to_string);
                let modified = resp
                    .header("last-modified")
                    .and_then(|v| httpdate::parse_http_date(v).ok())
                    .unwrap_or(SystemTime::UNIX_EPOCH);
                let _ = resp.drain().await;
                Ok(Some(Head {
                    meta: ObjectMeta {
                        len,
                        modified,
                        version: version_of(&etag),
                    },
                    etag,
                    session,
                }))
            }
            StatusCode::NOT_FOUND => {
                let _ = resp.drain().await;
                Ok(None)
            }
            _ => Err(resp.error().await),
        }
    }

    /// One page of ListObjectsV2 (full keys, decoded) and the continuation token.
    async fn list_page(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        token: Option<&str>,
        max: usize,
    ) -> Result<(Vec<(String, ObjectMeta)>, Option<String>)> {
        let mut call = client::Call::new(Op::ListObjectsV2, Method::GET, None)
            .query("list-type", "2")
            .query("prefix", prefix)
            .query("max-keys", max.clamp(1, 1000).to_string());
        if let Some(a) = start_after {
            call = call.query("start-after", a);
        }
        if let Some(t) = token {
            call = call.query("continuation-token", t);
        }
        let resp = self.inner.client.send(call).await?;
        if resp.status != StatusCode::OK {
            return Err(resp.error().await);
        }
        let text = resp.text().await?;
        let mut out = Vec::new();
        for c in xml::all(&text, "Contents") {
            let Some(key) = xml::text(c, "Key") else {
                continue;
            };
            let len = xml::text(c, "Size")
                .and_then(|s| s.parse().ok())
                .unwrap_or(0);
            let modified = xml::text(c, "LastModified")
                .and_then(|t| xml::parse_iso8601(&t))
                .unwrap_or(SystemTime::UNIX_EPOCH);
            let etag = xml::text(c, "ETag").unwrap_or_default();
            out.push((
                key,
                ObjectMeta {
                    len,
                    modified,
                    version: version_of(&etag),
                },
            ));
        }
        let next = (xml::text(&text, "IsTruncated").as_deref() == Some("true"))
            .then(|| xml::text(&text, "NextContinuationToken"))
            .flatten();
        Ok((out, next))
    }

    /// Whether any object lies below `full` + `/`.
    async fn is_directory(&self, full: &str) -> Result<bool> {
        let (page, _) = self.list_page(&format!("{full}/"), None, None, 1).await?;
        Ok(!page.is_empty())
    }

    /// The write check: taken (an object or a "directory"), or below an object (a path
    /// conflict). All requests at once: HEAD of the key and of each ancestor, one LIST.
    async fn occupied(&self, key: &Key) -> Result<bool> {
        let full = self.full(key.as_str());
        let ancestors: Vec<String> = key
            .as_str()
            .match_indices('/')
            .map(|(i, _)| self.full(&key.as_str()[..i]))
            .collect();
        let (this, dir, above) = futures_util::future::join3(
            self.head(&full),
            self.is_directory(&full),
            futures_util::future::join_all(ancestors.iter().map(|a| self.head(a))),
        )
        .await;
        for a in above {
            if a?.is_some() {
                return Err(conflict("a prefix of the key is an object"));
            }
        }
        Ok(this?.is_some() || dir?)
    }

    /// Holds this instance's commit lock of `full` (see [`Inner::commits`]).
    pub(crate) async fn commit_lock(&self, full: &str) -> CommitGuard {
        let lock = {
            let mut map = self.inner.commits.lock().unwrap_or_else(|e| e.into_inner());
            map.retain(|_, l| Arc::strong_count(l) > 1);
            map.entry(full.to_string()).or_default().clone()
        };
        let local = lock.lock_owned().await;
        let shared = match self.inner.cluster_commits.get() {
            None => None,
            Some(SharedLocker(locker)) => match locker.lock(&format!("commit:{full}")).await {
                Ok(g) => Some(g),
                Err(e) => {
                    tracing::warn!(error = %e, "cluster commit lock unavailable; committing under this instance's lock only");
                    None
                }
            },
        };
        CommitGuard(local, shared)
    }

    /// AbortMultipartUpload (a missing upload is fine).
    pub(crate) async fn abort_upload(&self, full: &str, upload_id: &str) -> Result<()> {
        let resp = self
            .inner
            .client
            .send(
                client::Call::new(Op::AbortMultipartUpload, Method::DELETE, Some(full))
                    .query("uploadId", upload_id),
            )
            .await?;
        match resp.status.as_u16() {
            200..=299 | 404 => resp.drain().await,
            _ => Err(resp.error().await),
        }
    }

    /// [`S3Store::upload_part`] with the payload's SHA-256 computed here, on the blocking
    /// pool (the staged PUT's parts and a completion's last part).
    pub(crate) async fn upload_part_hashing(
        &self,
        full: &str,
        upload_id: &str,
        number: u32,
        body: bytes::Bytes,
    ) -> Result<String> {
        let hashed = body.clone();
        let sha = tokio::task::spawn_blocking(move || {
            hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&hashed))
        })
        .await
        .map_err(|e| StoreError::Other(io::Error::other(e.to_string())))?;
        self.upload_part(full, upload_id, number, body, sha).await
    }

    /// UploadPart: `body` as part `number` of `upload_id` on the object `full`, signed with
    /// its SHA-256 (`sha256`, hex); the part's ETag.
    pub(crate) async fn upload_part(
        &self,
        full: &str,
        upload_id: &str,
        number: u32,
        body: bytes::Bytes,
        sha256: String,
    ) -> Result<String> {
        let resp = self
            .inner
            .client
            .send(
                client::Call::new(Op::UploadPart, Method::PUT, Some(full))
                    .query("partNumber", number.to_string())
                    .query("uploadId", upload_id)
                    .body(body, Some(sha256)),
            )
            .await?;
        if !resp.status.is_success() {
            return Err(resp.error().await);
        }
        let etag = resp
            .header("etag")
            .map(str::to_string)
            .ok_or_else(|| StoreError::Other(io::Error::other("UploadPart answered no ETag")))?;
        resp.drain().await?;
        Ok(etag)
    }

    /// Unfinished multipart uploads under the store's prefix, every page: (key, upload id).
    pub async fn multipart_uploads(&self) -> Result<Vec<(String, String)>> {
        Ok(self
            .pending_uploads()
            .await?
            .into_iter()
            .map(|p| (p.key, p.id))
            .collect())
    }
}

impl Store for S3Store {
    fn capabilities(&self) -> Capabilities {
        S3_CAPABILITIES
    }

    fn stat(&self, key: &Key) -> BoxFuture<'static, Result<Option<ObjectMeta>>> {
        let (st, full) = (self.clone(), self.full(key.as_str()));
        Box::pin(async move { Ok(st.head(&full).await?.map(|h| h.meta)) })
    }

    fn exists(&self, key: &Key) -> BoxFuture<'static, Result<bool>> {
        let (st, key) = (self.clone(), key.clone());
        Box::pin(async move { st.occupied(&key).await })
    }

    fn open(&self, key: &Key) -> BoxFuture<'static, Result<Option<Arc<dyn Object>>>> {
        let (st, full) = (self.clone(), self.full(key.as_str()));
        Box::pin(async move {
            let Some(head) = st.head(&full).await? else {
                return Ok(None);
            };
            let obj: Arc<dyn Object> =
                Arc::new(object::S3Object::new(st.inner.client.clone(), full, head));
            Ok(Some(obj))
        })
    }

    fn begin(&self, key: &Key, len: Option<u64>) -> BoxFuture<'static, Result<Box<dyn Staged>>> {
        let (st, key) = (self.clone(), key.clone());
        Box::pin(async move {
            if st.occupied(&key).await? {
                return Err(StoreError::Exists);
            }
            let staged: Box<dyn Staged> = Box::new(
                staged::S3Staged::new(
                    st.clone(),
                    st.full(key.as_str()),
                    st.inner.part_size,
                    st.inner.max_in_flight,
                )
                .expecting(len),
            );
            Ok(staged)
        })
    }

    fn delete(&self, key: &Key) -> BoxFuture<'static, Result<bool>> {
        let (st, full) = (self.clone(), self.full(key.as_str()));
        Box::pin(async move {
            if st.head(&full).await?.is_none() {
                return Ok(false);
            }
            let resp = st
                .inner
                .client
                .send(client::Call::new(
                    Op::DeleteObject,
                    Method::DELETE,
                    Some(&full),
                ))
                .await?;
            match resp.status.as_u16() {
                200..=299 | 404 => resp.drain().await.map(|()| true),
                _ => Err(resp.error().await),
            }
        })
    }

    fn list(
        &self,
        prefix: &str,
        after: Option<&Key>,
        limit: usize,
    ) -> BoxFuture<'static, Result<Vec<Listed>>> {
        let st = self.clone();
        let full_prefix = self.full(prefix);
        let start = after.map(|a| self.full(a.as_str()));
        Box::pin(async move {
            let mut out = Vec::new();
            let mut token = None;
            while out.len() < limit {
                let (page, next) = st
                    .list_page(
                        &full_prefix,
                        start.as_deref(),
                        token.as_deref(),
                        limit - out.len(),
                    )
                    .await?;
                for (full, meta) in page {
                    let rel = full.strip_prefix(&st.inner.prefix).unwrap_or(&full);
                    // Objects that are not keys (another tool's) are not listed.
                    if let Ok(key) = Key::parse(rel) {
                        out.push(Listed { key, meta });
                    }
                }
                match next {
                    Some(t) => token = Some(t),
                    None => break,
                }
            }
            out.truncate(limit);
            Ok(out)
        })
    }

    fn free_space(&self) -> BoxFuture<'static, Result<Option<u64>>> {
        Box::pin(async { Ok(None) })
    }
}
