//! The appending sink of an S3 session ([`super::parts::S3Parts`]'s `open_sink`): bytes
//! buffered into parts of the session's part size (uploaded as they fill), the rest kept as
//! the tail in the state object; a sync ends with one PutObject of the state (and a
//! CopyObject to `prev` when it added parts). The first write of a request may start
//! before the stored end (the session record lags the bucket): the sink rewinds into the
//! tail, or to `prev`.
//!
//! Rules:
//! 1. A full part is hashed in order (the session's running SHA-256 and the part's own
//!    payload hash), then uploaded by a task of its own while the next part fills, as the
//!    staged PUT does: at most `max_parts_in_flight` parts are in memory, the filling one
//!    (the tail) included, so with 1 the parts go one after the other.
//! 2. A part enters the manifest only once S3 has answered for it, in part order; a sync
//!    waits for every part in flight before it writes the state object, so an offset is
//!    acknowledged only for bytes the bucket holds.
//! 3. A failed part fails the write or sync that collects it, and every later one; parts
//!    still in flight when the sink is dropped are cancelled (their bytes were never
//!    acknowledged).
//! 4. Every part but the last has the session's part size, chosen at its first sink and
//!    kept in the state (an instance configured otherwise follows it): a sync never
//!    uploads a short part, so the upload completes on stores that require equal parts
//!    (Cloudflare R2). A session without a target (a tus partial upload) uploads its parts
//!    for its own `data` object, which sealing completes.

use super::manifest::{Manifest, PartRec};
use super::parts::{other, part_number, S3Parts, MAX_STATE};
use crate::storage::store::{BoxFuture, Result, Sink, StoreError};
use bytes::{Bytes, BytesMut};
use sha2::{Digest, Sha256};
use std::collections::VecDeque;
use std::io;
use std::sync::Arc;
use tokio::task::JoinHandle;

/// A part being uploaded (rule 1): its record once S3 has answered.
type PartJob = JoinHandle<Result<PartRec>>;

/// The sink of one request over a loaded state.
pub(crate) fn sink(parts: S3Parts, id: String, max_in_flight: usize, st: AState) -> Arc<dyn Sink> {
    Arc::new(AppendSink(Arc::new(Append {
        parts,
        id,
        max_in_flight: max_in_flight.max(1),
        st: tokio::sync::Mutex::new(st),
    })))
}

/// The appending sink of one request (see the module doc); cloned into its futures.
#[derive(Clone)]
struct AppendSink(Arc<Append>);

struct Append {
    parts: S3Parts,
    id: String,
    max_in_flight: usize,
    st: tokio::sync::Mutex<AState>,
}

impl Drop for Append {
    fn drop(&mut self) {
        // Rule 3: nothing of these parts was acknowledged.
        for job in self.st.get_mut().in_flight.drain(..) {
            job.abort();
        }
    }
}

pub(crate) struct AState {
    /// Parts and upload as known here (its `tail` is unused: see `tail`).
    pub(crate) m: Manifest,
    pub(crate) tail: BytesMut,
    /// The size parts are cut at (rule 4).
    pub(crate) cut: usize,
    /// SHA-256 of bytes `[0, m.parts_end())`.
    pub(crate) sha: Sha256,
    /// Parts were added since the state object was last written.
    pub(crate) parts_changed: bool,
    /// The state object in the bucket is past the last sync point (after a rewind to
    /// `prev`): it must not become `prev`.
    pub(crate) stale_state: bool,
    pub(crate) dirty: bool,
    pub(crate) started: bool,
    pub(crate) failed: bool,
    /// Parts uploading (rule 1), oldest first, and how many bytes they hold.
    pub(crate) in_flight: VecDeque<PartJob>,
    pub(crate) in_flight_len: u64,
}

impl AState {
    /// The state of a session as its state object describes it; `part_size` is this
    /// instance's, used when the session has none yet (rule 4).
    pub(crate) fn new(mut m: Manifest, part_size: usize) -> Result<AState> {
        if m.sealed.is_some() {
            return Err(other("the session is sealed: its data are only read"));
        }
        if m.psize.is_none() && m.parts.is_empty() {
            m.psize = Some(part_size as u64);
        }
        let cut = m
            .psize
            .map_or(part_size, |p| usize::try_from(p).unwrap_or(usize::MAX));
        let tail = BytesMut::from(&std::mem::take(&mut m.tail)[..]);
        Ok(AState {
            tail,
            cut,
            sha: m.hasher()?,
            m,
            parts_changed: false,
            stale_state: false,
            dirty: false,
            started: false,
            failed: false,
            in_flight: VecDeque::new(),
            in_flight_len: 0,
        })
    }

    /// The end of the bytes in parts, those in flight included.
    fn parts_end(&self) -> u64 {
        self.m.parts_end() + self.in_flight_len
    }
}

impl Append {
    async fn upload(&self, st: &mut AState, part: Bytes) -> Result<()> {
        let start = st.parts_end();
        let number = part_number(start, st.m.grain())?;
        let target = match &st.m.target {
            Some(t) => t.clone(),
            None => self.parts.data_key(&self.id)?,
        };
        let upload_id = match &st.m.upload_id {
            Some(u) => u.clone(),
            None => {
                let u = self.parts.create_upload(&target, &self.id).await?;
                st.m.upload_id = Some(u.clone());
                u
            }
        };
        let len = part.len() as u64;
        // Rule 1: hashed in order, uploaded by a task.
        let (hashed, mut running) = (part.clone(), st.sha.clone());
        let (payload, running) = tokio::task::spawn_blocking(move || {
            running.update(&hashed);
            (hex::encode(Sha256::digest(&hashed)), running)
        })
        .await
        .map_err(|e| other(e.to_string()))?;
        st.sha = running;
        let s3 = self.parts.s3.clone();
        st.in_flight.push_back(tokio::spawn(async move {
            let etag = s3
                .upload_part(&target, &upload_id, number, part, payload)
                .await?;
            Ok(PartRec {
                number,
                start,
                len,
                etag,
            })
        }));
        st.in_flight_len += len;
        // The tail fills next: it counts against the bound too.
        while st.in_flight.len() >= self.max_in_flight {
            Self::settle_oldest(st).await?;
        }
        Ok(())
    }

    /// Waits for the oldest part in flight and records it (rule 2).
    async fn settle_oldest(st: &mut AState) -> Result<()> {
        let Some(job) = st.in_flight.pop_front() else {
            return Ok(());
        };
        let rec = job.await.map_err(|e| other(e.to_string()))??;
        st.in_flight_len -= rec.len;
        st.m.parts.push(rec);
        st.parts_changed = true;
        Ok(())
    }

    /// The first write of a request starts before the stored end: the session record lags
    /// the bucket (see the module doc).
    async fn rewind(&self, st: &mut AState, offset: u64) -> Result<()> {
        // The first write of a request: nothing is in flight yet.
        let pe = st.parts_end();
        if offset >= pe {
            st.tail.truncate(usize::try_from(offset - pe).unwrap_or(0));
            st.dirty = true;
            return Ok(());
        }
        if st.m.has_prev {
            let key = format!("{}prev", self.parts.base(&self.id)?);
            if let Some(raw) = self.parts.get(&key, MAX_STATE).await? {
                let p = Manifest::decode(raw)?;
                if p.end() == offset {
                    st.sha = p.hasher()?;
                    st.tail = BytesMut::from(&p.tail[..]);
                    let upload = st.m.upload_id.clone();
                    st.m = p;
                    st.m.upload_id = upload;
                    st.m.has_prev = true;
                    (st.stale_state, st.parts_changed, st.dirty) = (true, true, true);
                    return Ok(());
                }
            }
        }
        Err(other("cannot rewind an S3 upload into its uploaded parts"))
    }

    async fn write_locked(&self, st: &mut AState, offset: u64, data: Bytes) -> Result<()> {
        let end = st.parts_end() + st.tail.len() as u64;
        if offset != end {
            if st.started || offset > end {
                return Err(StoreError::Other(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "writes to S3 must be sequential",
                )));
            }
            self.rewind(st, offset).await?;
        }
        st.started = true;
        st.dirty = true;
        st.tail.extend_from_slice(&data);
        while st.tail.len() >= st.cut {
            let part = st.tail.split_to(st.cut).freeze();
            self.upload(st, part).await?;
        }
        Ok(())
    }

    async fn sync_locked(&self, st: &mut AState) -> Result<()> {
        // Rule 2: the state names only parts the bucket holds.
        while !st.in_flight.is_empty() {
            Self::settle_oldest(st).await?;
        }
        if !st.dirty {
            return Ok(());
        }
        let base = self.parts.base(&self.id)?;
        if st.parts_changed {
            if !st.stale_state {
                (self.parts)
                    .copy(&format!("{base}state"), &format!("{base}prev"))
                    .await?;
            }
            st.m.has_prev = true;
        }
        let sha = st.sha.clone();
        st.m.set_hasher(&sha);
        let mut m = st.m.clone();
        m.tail = Bytes::copy_from_slice(&st.tail);
        self.parts.put(&format!("{base}state"), m.encode()).await?;
        (st.parts_changed, st.stale_state, st.dirty) = (false, false, false);
        Ok(())
    }
}

impl Sink for AppendSink {
    fn write(&self, offset: u64, data: Bytes) -> BoxFuture<'static, Result<()>> {
        let me = self.0.clone();
        Box::pin(async move {
            let mut st = me.st.lock().await;
            if st.failed {
                return Err(other("write after a failed write"));
            }
            let r = me.write_locked(&mut st, offset, data).await;
            st.failed = r.is_err();
            r
        })
    }

    fn sync(&self) -> BoxFuture<'static, Result<()>> {
        let me = self.0.clone();
        Box::pin(async move {
            let mut st = me.st.lock().await;
            if st.failed {
                return Err(other("sync after a failed write"));
            }
            let r = me.sync_locked(&mut st).await;
            st.failed = r.is_err();
            r
        })
    }
}
