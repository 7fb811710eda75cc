//! The start-up sweep of multipart uploads left in progress ([`S3Store::sweep_uploads`]).
//!
//! A staged PUT aborts its multipart upload on failure or drop, but a process that is
//! killed (or loses power) mid-upload cannot: the upload and its parts stay in the bucket,
//! invisible to clients and costing storage, until something aborts it (S3 never does by
//! itself without a lifecycle rule). The sweep lists the unfinished uploads under the
//! store's prefix (ListMultipartUploads, paged) and aborts every one that no resumable
//! session's state object (`state` or `prev`, see `parts.rs`) names; uploads begun less
//! than `min_age` ago are left alone (on a bucket shared by several instances they may be
//! another instance's PUT in progress, like the fs backend's temporary files).

use super::client::{Call, Op};
use super::manifest::Manifest;
use super::parts::{S3Parts, MAX_STATE, PARTS_PREFIX};
use super::{xml, S3Store};
use crate::storage::store::Result;
use http::{Method, StatusCode};
use std::collections::HashSet;
use std::time::{Duration, SystemTime};

/// One unfinished multipart upload: full key, upload id, when it was begun.
pub(super) struct Pending {
    pub(super) key: String,
    pub(super) id: String,
    initiated: Option<SystemTime>,
}

impl S3Store {
    /// Every unfinished multipart upload under the prefix (all pages).
    pub(super) async fn pending_uploads(&self) -> Result<Vec<Pending>> {
        let mut out = Vec::new();
        let mut markers: Option<(String, String)> = None;
        loop {
            let mut call = Call::new(Op::ListMultipartUploads, Method::GET, None)
                .query("uploads", "")
                .query("prefix", self.inner.prefix.clone());
            if let Some((k, u)) = &markers {
                call = call
                    .query("key-marker", k.clone())
                    .query("upload-id-marker", u.clone());
            }
            let resp = self.inner.client.send(call).await?;
            if resp.status != StatusCode::OK {
                return Err(resp.error().await);
            }
            let text = resp.text().await?;
            for u in xml::all(&text, "Upload") {
                if let (Some(key), Some(id)) = (xml::text(u, "Key"), xml::text(u, "UploadId")) {
                    let initiated = xml::text(u, "Initiated").and_then(|t| xml::parse_iso8601(&t));
                    out.push(Pending { key, id, initiated });
                }
            }
            let next = (
                xml::text(&text, "NextKeyMarker"),
                xml::text(&text, "NextUploadIdMarker"),
            );
            match (xml::text(&text, "IsTruncated").as_deref(), next) {
                (Some("true"), (Some(k), Some(u)))
                    if markers.as_ref() != Some(&(k.clone(), u.clone())) =>
                {
                    markers = Some((k, u));
                }
                _ => return Ok(out),
            }
        }
    }

    /// The upload ids that resumable sessions' state objects name.
    async fn session_uploads(&self) -> Result<HashSet<String>> {
        let parts = S3Parts::new(self.clone());
        let base = self.full(PARTS_PREFIX);
        let (mut ids, mut token) = (HashSet::new(), None);
        loop {
            let (page, next) = self.list_page(&base, None, token.as_deref(), 1000).await?;
            for (key, _) in page {
                if !(key.ends_with("/state") || key.ends_with("/prev")) {
                    continue;
                }
                let Some(raw) = parts.get(&key, MAX_STATE).await? else {
                    continue; // removed meanwhile
                };
                // An unreadable state keeps nothing alive: its session cannot go on either.
                if let Ok(Manifest {
                    upload_id: Some(id),
                    ..
                }) = Manifest::decode(raw)
                {
                    ids.insert(id);
                }
            }
            match next {
                Some(t) => token = Some(t),
                None => return Ok(ids),
            }
        }
    }

    /// Aborts the multipart uploads under the prefix that no session names and that were
    /// begun at least `min_age` ago (`None`: any age); how many it aborted. Run at
    /// start-up, before this instance begins any upload of its own.
    pub async fn sweep_uploads(&self, min_age: Option<Duration>) -> Result<usize> {
        let pending = self.pending_uploads().await?;
        if pending.is_empty() {
            return Ok(0);
        }
        let keep = self.session_uploads().await?;
        let now = SystemTime::now();
        let old_enough = |p: &Pending| match (min_age, p.initiated) {
            (None, _) => true,
            // Without a start time, a shared bucket's upload is left alone.
            (Some(_), None) => false,
            (Some(age), Some(t)) => now.duration_since(t).is_ok_and(|d| d >= age),
        };
        let mut aborted = 0;
        for p in pending {
            if keep.contains(&p.id) || !old_enough(&p) {
                continue;
            }
            self.abort_upload(&p.key, &p.id).await?;
            aborted += 1;
        }
        Ok(aborted)
    }
}
