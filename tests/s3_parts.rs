//! The S3 part store (issue 11, section 2: resumable uploads whose bytes live in the bucket)
//! against a private SeaweedFS (`common/s3.rs`): appends continue on another instance (a
//! second store with its own client) and complete with their SHA-256; the S3 requests of
//! each append and of a completion are counted, op by op (nothing grows with the number of
//! appends beyond one part upload each); a session record that lags the bucket rewinds to
//! the previous sync point; a taken key keeps the session, abort leaves nothing (no object,
//! no multipart upload); HFS chunks written in parallel by two instances complete. (The
//! same store through a running server: tests/s3_server.rs.)
//!
//! Services rule: without `weed` a test prints `SKIPPED` and returns, unless `CI` or
//! `XFERD_REQUIRE_SERVICES` is set. Every test is bounded in time.

mod common;
#[path = "common/s3_env.rs"]
mod s3_env;

use bytes::Bytes;
use common::*;
use s3_env::*;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::time::Duration;
use xferd::storage::s3::parts::S3Parts;
use xferd::storage::s3::S3Store;
use xferd::storage::store::{PartStore, Store, StoreError};

const MIB: usize = 1 << 20;
const ID: &str = "0123456789abcdef0123456789abcdef";

/// Two "instances": stores with clients of their own on one prefix.
fn two(name: &str) -> Option<(S3Store, S3Store)> {
    let w = seaweed()?;
    let prefix = unique_prefix(name);
    Some((
        store_at(&w.endpoint, &prefix),
        store_at(&w.endpoint, &prefix),
    ))
}

fn ops(st: &S3Store) -> BTreeMap<&'static str, u64> {
    st.client()
        .counts()
        .into_iter()
        .filter(|(_, n)| *n > 0)
        .map(|(op, n)| (op.name(), n))
        .collect()
}

/// The requests `f` sent through `st`, by operation.
async fn counted<T>(
    st: &S3Store,
    f: impl std::future::Future<Output = T>,
) -> (T, BTreeMap<&'static str, u64>) {
    let before = ops(st);
    let out = f.await;
    let mut diff = ops(st);
    for (op, n) in diff.iter_mut() {
        *n -= before.get(op).copied().unwrap_or(0);
    }
    diff.retain(|_, n| *n > 0);
    (out, diff)
}

fn expect(pairs: &[(&'static str, u64)]) -> BTreeMap<&'static str, u64> {
    pairs.iter().copied().collect()
}

/// One append as a request makes it: a sink opened for it, writes of at most 1 MiB (the
/// streaming engine's buffers), one sync at the end.
async fn append(parts: &S3Parts, offset: u64, data: Bytes) -> Result<(), StoreError> {
    let sink = parts.open_sink(ID).await?;
    let mut at = 0;
    while at < data.len() {
        let n = (data.len() - at).min(MIB);
        sink.write(offset + at as u64, data.slice(at..at + n))
            .await?;
        at += n;
    }
    sink.sync().await
}

async fn bounded<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(120), f)
        .await
        .expect("test finished within its time limit")
}

#[tokio::test]
async fn appends_continue_on_another_instance_with_counted_requests() {
    bounded(async {
        let Some((sa, sb)) = two("appends") else {
            return;
        };
        let (pa, pb) = (S3Parts::new(sa.clone()), S3Parts::new(sb.clone()));
        let target = key("out/appended.bin");
        pa.create_at(ID, &target).await.unwrap();
        let data = pattern(7, 0, 14 * MIB + 12345);
        // 1 MiB appends, alternately on A and B: below a part, GetObject (state) +
        // PutObject (state); the append that fills the first part adds
        // CreateMultipartUpload, UploadPart and CopyObject (state -> prev); later ones that
        // fill a part add UploadPart and CopyObject only.
        let small = expect(&[("GetObject", 1), ("PutObject", 1)]);
        let first_part = expect(&[
            ("CopyObject", 1),
            ("CreateMultipartUpload", 1),
            ("GetObject", 1),
            ("PutObject", 1),
            ("UploadPart", 1),
        ]);
        let next_part = expect(&[
            ("CopyObject", 1),
            ("GetObject", 1),
            ("PutObject", 1),
            ("UploadPart", 1),
        ]);
        let mut at = 0usize;
        let mut n = 0;
        while at < data.len() {
            let len = (data.len() - at).min(MIB);
            let (p, st) = if n % 2 == 0 { (&pa, &sa) } else { (&pb, &sb) };
            let (r, used) = counted(st, append(p, at as u64, data.slice(at..at + len))).await;
            r.unwrap();
            let want = match n {
                4 => &first_part,
                9 => &next_part,
                _ => &small,
            };
            assert_eq!(&used, want, "append {n} at {at}");
            at += len;
            n += 1;
        }
        // The digest from B (fresh hasher): the carried state of the parts + the tail.
        let (sha, used) =
            counted(&sb, pb.hash_range(ID, Sha256::new(), 0, data.len() as u64)).await;
        assert_eq!(sha.unwrap().finalize(), Sha256::digest(&data));
        assert_eq!(used, expect(&[("GetObject", 1)]));
        // Completion on A: GetObject (state), UploadPart (tail), CompleteMultipartUpload,
        // DeleteObject (state, prev).
        let (r, used) = counted(&sa, pa.complete(ID, data.len() as u64, &target)).await;
        r.unwrap();
        assert_eq!(
            used,
            expect(&[
                ("CompleteMultipartUpload", 1),
                ("DeleteObject", 2),
                ("GetObject", 1),
                ("UploadPart", 1),
            ])
        );
        let obj = sa.open(&target).await.unwrap().unwrap();
        assert_eq!(obj.meta().len, data.len() as u64);
        let got = obj.read_at(0, data.len()).await.unwrap();
        assert_eq!(Sha256::digest(&got), Sha256::digest(&data));
        assert!(!pa.exists(ID).await.unwrap());
        assert!(pb.list().await.unwrap().is_empty());
        assert!(sa.multipart_uploads().await.unwrap().is_empty());
    })
    .await;
}

#[tokio::test]
async fn an_8_mib_append_is_one_part_and_a_tail() {
    bounded(async {
        let Some((sa, _)) = two("eight") else {
            return;
        };
        let pa = S3Parts::new(sa.clone());
        let target = key("out/eight.bin");
        pa.create_at(ID, &target).await.unwrap();
        let data = pattern(8, 0, 16 * MIB);
        let (r, used) = counted(&sa, append(&pa, 0, data.slice(..8 * MIB))).await;
        r.unwrap();
        assert_eq!(
            used,
            expect(&[
                ("CopyObject", 1),
                ("CreateMultipartUpload", 1),
                ("GetObject", 1),
                ("PutObject", 1),
                ("UploadPart", 1),
            ])
        );
        // 3 MiB of tail + 8 MiB: two parts of 5 MiB, 1 MiB of tail.
        let (r, used) = counted(&sa, append(&pa, 8 << 20, data.slice(8 * MIB..))).await;
        r.unwrap();
        assert_eq!(
            used,
            expect(&[
                ("CopyObject", 1),
                ("GetObject", 1),
                ("PutObject", 1),
                ("UploadPart", 2),
            ])
        );
        pa.complete(ID, data.len() as u64, &target).await.unwrap();
        let got = sa.open(&target).await.unwrap().unwrap();
        assert_eq!(
            Sha256::digest(got.read_at(0, data.len()).await.unwrap()),
            Sha256::digest(&data)
        );
    })
    .await;
}

#[tokio::test]
async fn a_record_that_lags_the_bucket_rewinds_to_the_previous_sync_point() {
    bounded(async {
        let Some((sa, sb)) = two("rewind") else {
            return;
        };
        let (pa, pb) = (S3Parts::new(sa.clone()), S3Parts::new(sb.clone()));
        let target = key("out/rewound.bin");
        pa.create_at(ID, &target).await.unwrap();
        let old = pattern(1, 0, 7 * MIB);
        append(&pa, 0, old.slice(..3 * MIB)).await.unwrap();
        // This sync uploads the first part ([0, 5 MiB)) and leaves 2 MiB of tail; the
        // record of it is lost (the process died before updating it): the record says 3 MiB.
        append(&pa, 3 << 20, old.slice(3 * MIB..)).await.unwrap();
        // Further back than the previous sync point: refused, never guessed.
        assert!(append(&pb, 1 << 20, old.slice(MIB..2 * MIB)).await.is_err());
        // The client resends from 3 MiB (other bytes: the first part must not survive).
        let new = pattern(2, 0, 6 * MIB);
        append(&pb, 3 << 20, new.clone()).await.unwrap();
        let mut want = old.slice(..3 * MIB).to_vec();
        want.extend_from_slice(&new);
        let sha = pb.hash_range(ID, Sha256::new(), 0, want.len() as u64).await;
        assert_eq!(sha.unwrap().finalize(), Sha256::digest(&want));
        pb.complete(ID, want.len() as u64, &target).await.unwrap();
        let got = sb.open(&target).await.unwrap().unwrap();
        assert_eq!(got.read_at(0, want.len()).await.unwrap(), want);
    })
    .await;
}

#[tokio::test]
async fn a_taken_key_keeps_the_session_and_abort_leaves_nothing() {
    bounded(async {
        let Some((sa, _)) = two("taken") else {
            return;
        };
        let pa = S3Parts::new(sa.clone());
        let target = key("out/taken.bin");
        let staged = sa.begin(&target, None).await.unwrap();
        staged
            .sink()
            .write(0, Bytes::from_static(b"first"))
            .await
            .unwrap();
        staged.commit().await.unwrap();
        pa.create_at(ID, &target).await.unwrap();
        let data = pattern(3, 0, 6 * MIB);
        append(&pa, 0, data.clone()).await.unwrap();
        let r = pa.complete(ID, data.len() as u64, &target).await;
        assert!(matches!(r, Err(StoreError::Exists)), "{r:?}");
        let obj = sa.open(&target).await.unwrap().unwrap();
        assert_eq!(obj.read_at(0, 100).await.unwrap(), &b"first"[..]);
        assert!(pa.exists(ID).await.unwrap(), "the session keeps its data");
        assert_eq!(pa.list().await.unwrap(), [ID.to_string()]);
        pa.abort(ID).await.unwrap();
        assert!(!pa.exists(ID).await.unwrap());
        assert!(pa.list().await.unwrap().is_empty());
        assert!(sa.multipart_uploads().await.unwrap().is_empty());
        // Only the taken key's object is left under the prefix.
        let left = sa.list("", None, 100).await.unwrap();
        assert_eq!(left.len(), 1, "{left:?}");
    })
    .await;
}

#[tokio::test]
async fn chunks_written_in_parallel_by_two_instances_complete() {
    bounded(async {
        let Some((sa, sb)) = two("chunks") else {
            return;
        };
        let (pa, pb) = (S3Parts::new(sa.clone()), S3Parts::new(sb.clone()));
        let target = key("out/chunked.bin");
        pa.create_at(ID, &target).await.unwrap();
        let chunk = 5 * MIB;
        let data = pattern(5, 0, 2 * chunk + 777);
        let write = |p: S3Parts, n: usize, data: Bytes| async move {
            let start = n * chunk;
            let end = (start + chunk).min(data.len());
            let sink = p
                .open_chunk_sink(ID, start as u64, (end - start) as u64)
                .await?;
            let mut at = start;
            while at < end {
                let k = (end - at).min(MIB);
                sink.write(at as u64, data.slice(at..at + k)).await?;
                at += k;
            }
            sink.sync().await
        };
        // A chunk cut short is never counted: its object is not committed.
        let short = pb
            .open_chunk_sink(ID, chunk as u64, chunk as u64)
            .await
            .unwrap();
        short
            .write(chunk as u64, data.slice(chunk..chunk + 10))
            .await
            .unwrap();
        short.sync().await.unwrap();
        drop(short);
        assert!(pa.read_at(ID, chunk as u64, 10).await.unwrap().is_empty());
        let (r2, r0, r1) = tokio::join!(
            write(pa.clone(), 2, data.clone()),
            write(pb.clone(), 0, data.clone()),
            write(pa.clone(), 1, data.clone()),
        );
        r0.unwrap();
        r1.unwrap();
        r2.unwrap();
        let sha = pb.hash_range(ID, Sha256::new(), 0, data.len() as u64).await;
        assert_eq!(sha.unwrap().finalize(), Sha256::digest(&data));
        assert_eq!(
            pa.read_at(ID, chunk as u64 - 3, 6).await.unwrap(),
            data.slice(chunk - 3..chunk + 3)
        );
        // Completion copies the chunks server-side as the parts: no byte read or sent.
        let (r, used) = counted(&sb, pb.complete(ID, data.len() as u64, &target)).await;
        r.unwrap();
        assert_eq!(used.get("UploadPartCopy"), Some(&3), "{used:?}");
        assert_eq!(used.get("UploadPart"), None, "{used:?}");
        assert_eq!(used.get("GetObject"), Some(&1), "the state only: {used:?}");
        let got = sa.open(&target).await.unwrap().unwrap();
        assert_eq!(
            Sha256::digest(got.read_at(0, data.len()).await.unwrap()),
            Sha256::digest(&data)
        );
        assert!(!pa.exists(ID).await.unwrap());
        assert_eq!(sa.list("", None, 100).await.unwrap().len(), 1);
    })
    .await;
}
