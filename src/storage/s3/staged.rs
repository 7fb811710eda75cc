//! A staged write to S3: bytes arrive at sequential offsets and are cut into parts of
//! exactly `part_size` (equal parts: R2 requires them); the first full part starts a
//! multipart upload, each part is uploaded (SHA-256 signed) by a task while the next one
//! fills, with at most `max_parts_in_flight` parts in memory, the filling one included. A
//! body shorter than one part is one PutObject. Commit never overwrites
//! (`If-None-Match: *`); a failed write or commit, an abort or a drop aborts the upload.

use super::client::{Call, Op};
use super::S3Store;
use crate::storage::store::{BoxFuture, Result, Sink, Staged, StoreError};
use bytes::{Bytes, BytesMut};
use http::Method;
use std::collections::VecDeque;
use std::io;
use std::sync::Arc;
use tokio::task::JoinHandle;

type PartJob = JoinHandle<Result<(u32, String)>>;

struct Shared {
    store: S3Store,
    key: String,
    part_size: usize,
    max_in_flight: usize,
    /// Commit with `If-None-Match: *` (off for the session's own chunk objects, which a
    /// retried chunk overwrites).
    create_only: bool,
    /// The resumable session this object completes ([`super::SESSION_META`]), if any.
    session: Option<String>,
    /// The body's declared length, if known: a part buffer is allocated once at the size
    /// it will reach (no regrowth copies), never larger than what is still to come.
    expect: Option<u64>,
    state: tokio::sync::Mutex<State>,
}

#[derive(Default)]
struct State {
    buf: BytesMut,
    next: u64,
    upload_id: Option<String>,
    /// Acknowledged parts: (number, ETag), in order.
    parts: Vec<(u32, String)>,
    in_flight: VecDeque<PartJob>,
    failed: bool,
    finished: bool,
}

pub struct S3Staged {
    shared: Arc<Shared>,
    done: bool,
}

struct S3Sink(Arc<Shared>);

fn other(msg: &str) -> StoreError {
    StoreError::Other(io::Error::other(msg.to_string()))
}

impl S3Staged {
    pub fn new(store: S3Store, key: String, part_size: usize, max_in_flight: usize) -> S3Staged {
        S3Staged {
            shared: Arc::new(Shared {
                store,
                key,
                part_size,
                max_in_flight: max_in_flight.max(1),
                create_only: true,
                session: None,
                expect: None,
                state: tokio::sync::Mutex::new(State::default()),
            }),
            done: false,
        }
    }

    /// The same write, committed without the create-only condition (an object of xferd's
    /// own that a retry replaces).
    pub fn overwriting(
        store: S3Store,
        key: String,
        part_size: usize,
        max_in_flight: usize,
    ) -> S3Staged {
        let mut s = S3Staged::new(store, key, part_size, max_in_flight);
        if let Some(sh) = Arc::get_mut(&mut s.shared) {
            sh.create_only = false;
        }
        s
    }
}

impl S3Staged {
    /// The same write, marked as completing resumable session `id`.
    pub fn marked(mut self, id: &str) -> S3Staged {
        if let Some(sh) = Arc::get_mut(&mut self.shared) {
            sh.session = Some(id.to_string());
        }
        self
    }

    /// The same write, told the body's declared length (sizes its part buffers).
    pub fn expecting(mut self, len: Option<u64>) -> S3Staged {
        if let Some(sh) = Arc::get_mut(&mut self.shared) {
            sh.expect = len;
        }
        self
    }
}

/// The outcome of a create-only PutObject or CompleteMultipartUpload: 412 or 409 is a
/// taken key; a 200 with an `<Error>` body (CompleteMultipartUpload) is a failure.
pub(crate) async fn committed(resp: super::client::Response) -> Result<()> {
    match resp.status.as_u16() {
        // 412: the key exists; 409 ConditionalRequestConflict: another create of the
        // same key is in progress and wins (AWS's advice is to start again, which
        // would find the key taken): both are a taken key.
        412 | 409 => {
            let _ = resp.drain().await;
            Err(StoreError::Exists)
        }
        200..=299 => {
            // CompleteMultipartUpload may answer 200 with an <Error> body.
            let text = resp.text().await?;
            if text.contains("<Error>") {
                let code = super::xml::text(&text, "Code").unwrap_or_default();
                return Err(if code == "PreconditionFailed" {
                    StoreError::Exists
                } else {
                    StoreError::Transient(io::Error::other(format!(
                        "S3 CompleteMultipartUpload failed: {code}"
                    )))
                });
            }
            Ok(())
        }
        _ => Err(resp.error().await),
    }
}

impl Shared {
    /// `call` with the session's mark, if any.
    fn mark<'a>(&self, call: Call<'a>) -> Call<'a> {
        match &self.session {
            Some(id) => call.header(super::SESSION_META, id.clone()),
            None => call,
        }
    }

    async fn create_upload(&self) -> Result<String> {
        let c = self.store.client();
        let resp = c
            .send(
                self.mark(
                    Call::new(Op::CreateMultipartUpload, Method::POST, Some(&self.key))
                        .query("uploads", ""),
                ),
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

    /// Hands a full part to an upload task, then waits while too many parts are held.
    async fn start_part(self: &Arc<Self>, st: &mut State, part: Bytes) -> Result<()> {
        if st.upload_id.is_none() {
            st.upload_id = Some(self.create_upload().await?);
        }
        let number = u32::try_from(st.parts.len() + st.in_flight.len() + 1)
            .map_err(|_| other("too many parts"))?;
        let (me, id) = (self.clone(), st.upload_id.clone().unwrap_or_default());
        st.in_flight.push_back(tokio::spawn(async move {
            me.upload_part(&id, number, part).await
        }));
        while st.in_flight.len() >= self.max_in_flight {
            self.settle_one(st).await?;
        }
        Ok(())
    }

    async fn settle_one(&self, st: &mut State) -> Result<()> {
        let Some(job) = st.in_flight.pop_front() else {
            return Ok(());
        };
        let done = job
            .await
            .map_err(|e| other(&format!("part upload task: {e}")))??;
        st.parts.push(done);
        Ok(())
    }

    async fn upload_part(
        &self,
        upload_id: &str,
        number: u32,
        body: Bytes,
    ) -> Result<(u32, String)> {
        let etag = (self.store)
            .upload_part_hashing(&self.key, upload_id, number, body)
            .await?;
        Ok((number, etag))
    }

    /// Uploads what is left and makes the object visible, create-only.
    async fn commit(self: &Arc<Self>, st: &mut State) -> Result<()> {
        while !st.in_flight.is_empty() {
            self.settle_one(st).await?;
        }
        let c = self.store.client();
        let rest = std::mem::take(&mut st.buf).freeze();
        let create_only = self.create_only;
        fn cond(call: Call<'_>, create_only: bool) -> Call<'_> {
            if create_only {
                call.header("if-none-match", "*")
            } else {
                call
            }
        }
        let resp = match st.upload_id.clone() {
            None => {
                c.send(cond(
                    self.mark(Call::new(Op::PutObject, Method::PUT, Some(&self.key)))
                        .body(rest, None),
                    create_only,
                ))
                .await?
            }
            Some(id) => {
                if !rest.is_empty() {
                    let number = u32::try_from(st.parts.len() + 1).unwrap_or(u32::MAX);
                    let last = self.upload_part(&id, number, rest).await?;
                    st.parts.push(last);
                }
                let body = super::xml::complete_body(&st.parts);
                c.send(cond(
                    Call::new(Op::CompleteMultipartUpload, Method::POST, Some(&self.key))
                        .query("uploadId", id)
                        .header("content-type", "application/xml")
                        .body(Bytes::from(body), None),
                    create_only,
                ))
                .await?
            }
        };
        committed(resp).await?;
        st.finished = true;
        Ok(())
    }

    /// Stops part uploads and aborts the multipart upload (best effort: a failure leaves it
    /// to the bucket's lifecycle rule).
    async fn discard(&self, st: &mut State) {
        for job in st.in_flight.drain(..) {
            job.abort();
        }
        st.buf = BytesMut::new();
        if let Some(id) = st.upload_id.take() {
            if let Err(e) = self.store.abort_upload(&self.key, &id).await {
                tracing::warn!(key = %self.key, error = %e, "aborting an S3 multipart upload failed");
            }
        }
    }
}

impl Sink for S3Sink {
    fn write(&self, offset: u64, mut data: Bytes) -> BoxFuture<'static, Result<()>> {
        let sh = self.0.clone();
        Box::pin(async move {
            let mut st = sh.state.lock().await;
            if st.failed || st.finished {
                return Err(other("write after a failed write or a commit"));
            }
            if offset != st.next {
                return Err(StoreError::Other(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "writes to S3 must be sequential",
                )));
            }
            st.next += data.len() as u64;
            while !data.is_empty() {
                if st.buf.capacity() == 0 {
                    // A fresh part: allocate it whole once (or what is left of a declared
                    // body), not by doubling from a few KB (a copy of every part).
                    let at = st.next - data.len() as u64;
                    let left = sh.expect.map_or(u64::MAX, |e| e.saturating_sub(at));
                    let want = (sh.part_size as u64).min(left.max(data.len() as u64));
                    st.buf.reserve(want as usize);
                }
                let room = sh.part_size - st.buf.len();
                let now = data.split_to(room.min(data.len()));
                st.buf.extend_from_slice(&now);
                if st.buf.len() >= sh.part_size {
                    let part = std::mem::take(&mut st.buf).freeze();
                    if let Err(e) = sh.start_part(&mut st, part).await {
                        st.failed = true;
                        return Err(e);
                    }
                }
            }
            Ok(())
        })
    }

    fn sync(&self) -> BoxFuture<'static, Result<()>> {
        Box::pin(async { Ok(()) })
    }
}

impl Staged for S3Staged {
    fn sink(&self) -> Arc<dyn Sink> {
        Arc::new(S3Sink(self.shared.clone()))
    }

    fn commit(mut self: Box<Self>) -> BoxFuture<'static, Result<()>> {
        self.done = true;
        let sh = self.shared.clone();
        Box::pin(async move {
            let mut st = sh.state.lock().await;
            if st.failed {
                sh.discard(&mut st).await;
                return Err(other("an earlier write failed"));
            }
            let _serial = sh.store.commit_lock(&sh.key).await;
            let r = sh.commit(&mut st).await;
            if r.is_err() {
                sh.discard(&mut st).await;
            }
            r
        })
    }

    fn abort(mut self: Box<Self>) -> BoxFuture<'static, ()> {
        self.done = true;
        let sh = self.shared.clone();
        Box::pin(async move {
            let mut st = sh.state.lock().await;
            sh.discard(&mut st).await;
        })
    }
}

impl Drop for S3Staged {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        let sh = self.shared.clone();
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                let mut st = sh.state.lock().await;
                sh.discard(&mut st).await;
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::s3::{Credentials, S3Options};

    const PART: usize = 5 << 20;

    /// A store that is never reached: writes below one part stay in the buffer.
    fn store() -> S3Store {
        S3Store::new(
            S3Options {
                endpoint: "http://127.0.0.1:9".into(),
                region: "us-east-1".into(),
                bucket: "b".into(),
                prefix: String::new(),
                allow_http: true,
                part_size: PART as u64,
                max_parts_in_flight: 2,
                credentials: Credentials {
                    access_key_id: "k".into(),
                    secret_access_key: "s".into(),
                    session_token: None,
                },
            },
            None,
        )
        .unwrap()
    }

    /// The part buffer's capacity after writing `writes` (sizes) to a staged write told
    /// `expect`.
    async fn capacity_after(expect: Option<u64>, writes: &[usize]) -> usize {
        let staged = S3Staged::new(store(), "k".into(), PART, 2).expecting(expect);
        let sink = staged.sink();
        let mut at = 0u64;
        for &n in writes {
            sink.write(at, Bytes::from(vec![7u8; n])).await.unwrap();
            at += n as u64;
        }
        let cap = staged.shared.state.lock().await.buf.capacity();
        Box::new(staged).abort().await;
        cap
    }

    #[tokio::test]
    async fn a_part_buffer_is_allocated_once_at_the_size_it_will_reach() {
        // A declared body below one part: its whole length at the first write.
        assert_eq!(capacity_after(Some(10_000), &[1_000]).await, 10_000);
        assert_eq!(
            capacity_after(Some(10_000), &[1_000, 1_000, 8_000]).await,
            10_000
        );
        // A larger or unknown body: one whole part, never more (the memory bound).
        assert_eq!(capacity_after(Some(1 << 30), &[1_000]).await, PART);
        assert_eq!(capacity_after(None, &[1_000, 2_000]).await, PART);
    }

    #[tokio::test]
    async fn a_body_longer_than_declared_still_buffers_all_of_it() {
        // The core rejects it; the sink must not lose or truncate bytes meanwhile.
        let staged = S3Staged::new(store(), "k".into(), PART, 2).expecting(Some(100));
        let sink = staged.sink();
        sink.write(0, Bytes::from(vec![1u8; 100])).await.unwrap();
        sink.write(100, Bytes::from(vec![2u8; 300])).await.unwrap();
        assert_eq!(staged.shared.state.lock().await.buf.len(), 400);
        Box::new(staged).abort().await;
    }
}
