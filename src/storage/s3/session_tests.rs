//! S3 sessions against a private SeaweedFS, checked through their state objects: parts of
//! one size whatever the instance and the sync points (`append.rs` rule 4), and sealed
//! partial uploads joined by a concatenation (`seal.rs`). Without `weed` these skip, as
//! the storage contract does (and fail under `XFERD_REQUIRE_SERVICES`).

use super::client::Op;
use super::parts::S3Parts;
use super::{S3Store, MIN_PART_SIZE};
use crate::storage::contract_tests::s3_store_with;
use crate::storage::key::Key;
use crate::storage::store::{PartStore, Store, StoreError};
use bytes::Bytes;
use sha2::{Digest, Sha256};

const MIB: usize = 1 << 20;

fn data(seed: u8, n: usize) -> Bytes {
    (0..n)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect::<Vec<u8>>()
        .into()
}

/// Appends `bytes` at `at` in writes of 1 MiB, then one sync (one request).
async fn append(parts: &S3Parts, id: &str, at: u64, bytes: &Bytes) {
    let sink = PartStore::open_sink(parts, id).await.unwrap();
    for (i, piece) in bytes.chunks(MIB).enumerate() {
        let off = at + (i * MIB) as u64;
        sink.write(off, bytes.slice_ref(piece)).await.unwrap();
    }
    sink.sync().await.unwrap();
}

async fn read_all(st: &S3Store, k: &str) -> Vec<u8> {
    let obj = Store::open(st, &Key::parse(k).unwrap())
        .await
        .unwrap()
        .unwrap();
    let n = obj.meta().len as usize;
    obj.read_at(0, n).await.unwrap().to_vec()
}

/// Nothing of a prefix is left: no object, no multipart upload.
async fn nothing_left(st: &S3Store) {
    let (objects, _) = st.list_page(&st.full(""), None, None, 10).await.unwrap();
    assert!(objects.is_empty(), "{objects:?}");
    assert!(st.multipart_uploads().await.unwrap().is_empty());
}

#[tokio::test]
async fn every_part_but_the_last_has_the_sessions_size_on_every_instance() {
    let Some(a) = s3_store_with(6 << 20, None) else {
        return;
    };
    // Instance B shares A's prefix with a smaller configured part size.
    let b = s3_store_with(MIN_PART_SIZE, Some(&a.inner.prefix)).unwrap();
    let (pa, pb) = (S3Parts::new(a.clone()), S3Parts::new(b));
    let id = "0123456789abcdef0123456789abcdef";
    PartStore::create_at(&pa, id, &Key::parse("eq/parts.bin").unwrap())
        .await
        .unwrap();
    let all = data(7, 20 * MIB + 123);
    // Sync points at 5.5, 7, 11.5, 15 and 20 MiB: several tails of 5 MiB and more.
    let cuts = [0, 11 * MIB / 2, 7 * MIB, 23 * MIB / 2, 15 * MIB, all.len()];
    for (i, w) in cuts.windows(2).enumerate() {
        let parts = if i % 2 == 0 { &pa } else { &pb };
        append(parts, id, w[0] as u64, &all.slice(w[0]..w[1])).await;
        let m = pa.load(id).await.unwrap().unwrap();
        assert_eq!(m.psize, Some(6 << 20), "sync at {}", w[1]);
        for p in &m.parts {
            assert_eq!(
                p.len,
                6 << 20,
                "part {} after the sync at {}",
                p.number,
                w[1]
            );
            assert_eq!(u64::from(p.number - 1) * (6 << 20), p.start);
        }
        assert_eq!(m.end(), w[1] as u64);
        assert!(m.tail.len() < 6 << 20);
    }
    PartStore::complete(
        &pb,
        id,
        all.len() as u64,
        &Key::parse("eq/parts.bin").unwrap(),
    )
    .await
    .unwrap();
    assert_eq!(read_all(&a, "eq/parts.bin").await, all);
    Store::delete(&a, &Key::parse("eq/parts.bin").unwrap())
        .await
        .unwrap();
    nothing_left(&a).await;
}

#[tokio::test]
async fn sealed_partial_uploads_concatenate_past_a_part() {
    let Some(st) = s3_store_with(MIN_PART_SIZE, None) else {
        return;
    };
    let parts = S3Parts::new(st.clone());
    let (one, two, fin) = (
        "11111111111111111111111111111111",
        "22222222222222222222222222222222",
        "ffffffffffffffffffffffffffffffff",
    );
    // One partial with two parts and a tail, one below a part.
    let (d1, d2) = (data(1, 12 * MIB + 7), data(2, 3 * MIB));
    for (id, d) in [(one, &d1), (two, &d2)] {
        PartStore::create(&parts, id).await.unwrap();
        let half = d.len() / 2;
        append(&parts, id, 0, &d.slice(..half)).await;
        append(&parts, id, half as u64, &d.slice(half..)).await;
        PartStore::seal(&parts, id, d.len() as u64).await.unwrap();
        // Idempotent; then read only.
        PartStore::seal(&parts, id, d.len() as u64).await.unwrap();
        assert!(PartStore::open_sink(&parts, id).await.is_err());
    }
    let m = parts.load(one).await.unwrap().unwrap();
    assert_eq!(
        (m.sealed, m.parts.len(), m.tail.len()),
        (Some(d1.len() as u64), 0, 0)
    );
    let back = PartStore::read_at(&parts, one, (5 * MIB - 3) as u64, 10)
        .await
        .unwrap();
    assert_eq!(back, d1.slice(5 * MIB - 3..5 * MIB + 7));
    let sha = PartStore::hash_range(&parts, one, Sha256::new(), 0, d1.len() as u64)
        .await
        .unwrap();
    assert_eq!(sha.finalize(), Sha256::digest(&d1));

    let target = Key::parse("joined/both.bin").unwrap();
    PartStore::create_at(&parts, fin, &target).await.unwrap();
    let sources = vec![
        (one.to_string(), d1.len() as u64),
        (two.to_string(), d2.len() as u64),
    ];
    let before = st.client().counts();
    PartStore::concat(&parts, fin, sources.clone())
        .await
        .unwrap();
    // Parts of 5 MiB: the first two inside `one` are copied, the third (10 to 15 MiB)
    // spans both and is uploaded; the 7 bytes past it are the tail.
    let used = |op: Op| {
        let n = |c: &[(Op, u64)]| c.iter().find(|x| x.0 == op).map_or(0, |x| x.1);
        n(&st.client().counts()) - n(&before)
    };
    assert_eq!(used(Op::UploadPartCopy), 2);
    assert_eq!(used(Op::UploadPart), 1);
    let m = parts.load(fin).await.unwrap().unwrap();
    assert_eq!((m.parts.len(), m.tail.len()), (3, 7));
    assert!(m.parts.iter().all(|p| p.len == MIN_PART_SIZE));
    // Again (the engine retries when its record was not updated): nothing more is done.
    PartStore::concat(&parts, fin, sources).await.unwrap();
    assert_eq!(used(Op::UploadPartCopy), 2);
    let total = (d1.len() + d2.len()) as u64;
    let sha = PartStore::hash_range(&parts, fin, Sha256::new(), 0, total)
        .await
        .unwrap();
    let want = [&d1[..], &d2[..]].concat();
    assert_eq!(sha.finalize(), Sha256::digest(&want));
    PartStore::complete(&parts, fin, total, &target)
        .await
        .unwrap();
    assert_eq!(read_all(&st, "joined/both.bin").await, want);
    for id in [one, two] {
        PartStore::abort(&parts, id).await.unwrap();
    }
    Store::delete(&st, &target).await.unwrap();
    nothing_left(&st).await;
}

/// Every object of a session: (full key, bytes).
async fn objects_of(parts: &S3Parts, id: &str) -> Vec<(String, Bytes)> {
    let mut out = Vec::new();
    for k in parts.keys_of(id).await.unwrap() {
        let b = parts.get(&k, 64 * MIB).await.unwrap().unwrap();
        out.push((k, b));
    }
    out
}

/// Writes `d` as HFS chunks of 1 MiB (each its own object), in reverse order.
async fn chunks(parts: &S3Parts, id: &str, d: &Bytes) {
    for at in (0..d.len()).step_by(MIB).rev() {
        let piece = d.slice(at..(at + MIB).min(d.len()));
        let sink = PartStore::open_chunk_sink(parts, id, at as u64, piece.len() as u64)
            .await
            .unwrap();
        sink.write(at as u64, piece).await.unwrap();
        sink.sync().await.unwrap();
    }
}

/// A process killed after a completion put its object in place, before it removed the
/// session's objects (or before the engine recorded the completion), is asked for the
/// completion again after its restart: the crash loop's "did not complete when resumed"
/// (the retry found its own object, took it for a taken key and the engine dropped the
/// session). It finds the object its session made and only cleans up, for every kind of
/// session; an object someone else put at the target, the same bytes even, stays a taken
/// key and the session is kept.
#[tokio::test]
async fn a_completion_cut_after_its_object_was_in_place_completes_when_asked_again() {
    let Some(st) = s3_store_with(MIN_PART_SIZE, None) else {
        return;
    };
    let parts = S3Parts::new(st.clone());
    let cases = [
        ("appends in the tail", MIB + 5),
        ("appends in parts", 2 * MIN_PART_SIZE as usize + 9),
        ("chunks", 3 * MIB + 1),
        ("a sealed partial", MIB + 3),
    ];
    for (n, (how, len)) in cases.into_iter().enumerate() {
        let id = format!("{n:032x}");
        let key = Key::parse(&format!("cut/{n}.bin")).unwrap();
        let d = data(n as u8, len);
        match how {
            "chunks" => {
                PartStore::create_at(&parts, &id, &key).await.unwrap();
                chunks(&parts, &id, &d).await;
            }
            "a sealed partial" => {
                PartStore::create(&parts, &id).await.unwrap();
                append(&parts, &id, 0, &d).await;
                PartStore::seal(&parts, &id, len as u64).await.unwrap();
            }
            _ => {
                PartStore::create_at(&parts, &id, &key).await.unwrap();
                append(&parts, &id, 0, &d).await;
            }
        }
        let before = objects_of(&parts, &id).await;
        PartStore::complete(&parts, &id, len as u64, &key)
            .await
            .unwrap();
        // The kill: the session's objects are still there (its upload is completed).
        for (k, b) in &before {
            parts.put(k, b.clone()).await.unwrap();
        }
        PartStore::complete(&parts, &id, len as u64, &key)
            .await
            .unwrap_or_else(|e| panic!("{how}: completed again: {e}"));
        assert_eq!(read_all(&st, key.as_str()).await, d, "{how}");
        assert_eq!(
            parts.keys_of(&id).await.unwrap(),
            Vec::<String>::new(),
            "{how}: the session's objects are removed"
        );
        Store::delete(&st, &key).await.unwrap();
    }

    let (id, key) = ("ffffffffffffffffffffffffffffffff", "cut/taken.bin");
    let d = data(9, MIB);
    PartStore::create_at(&parts, id, &Key::parse(key).unwrap())
        .await
        .unwrap();
    append(&parts, id, 0, &d).await;
    parts.put(&st.full(key), d.clone()).await.unwrap();
    let r = PartStore::complete(&parts, id, MIB as u64, &Key::parse(key).unwrap()).await;
    assert!(matches!(r, Err(StoreError::Exists)), "{r:?}");
    assert!(PartStore::exists(&parts, id).await.unwrap());
    PartStore::abort(&parts, id).await.unwrap();
    Store::delete(&st, &Key::parse(key).unwrap()).await.unwrap();
    nothing_left(&st).await;
}
