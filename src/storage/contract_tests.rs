//! The storage contract's behaviour, checked identically on every backend: each test is a
//! function of a [`Store`] and runs on [`FsStorage`] (a temporary directory),
//! [`MemStore`] and [`S3Store`] (a private SeaweedFS, when installed); the part-store checks
//! on [`FsParts`], [`super::mem::MemParts`] and [`S3Parts`]. A new
//! backend (S3) adds itself to [`backends`] and [`part_backends`].

use super::fs::FsStorage;
use super::key::Key;
use super::mem::MemStore;
use super::parts::FsParts;
use super::s3::{parts::S3Parts, Credentials, S3Options, S3Store, MIN_PART_SIZE};
use super::store::{read_range, PartStore, Store, StoreError};
use bytes::Bytes;
use futures_util::StreamExt;
use sha2::{Digest, Sha256};
use std::sync::Arc;

/// Every backend, with a name for failure messages (and the guard of the fs directory).
/// S3 runs against a private SeaweedFS (one per test process, a fresh key prefix per call)
/// when `weed` is installed (see `tests/common/s3.rs` for the skip rule).
fn backends() -> Vec<(&'static str, Arc<dyn Store>, Option<tempfile::TempDir>)> {
    let dir = tempfile::tempdir().unwrap();
    let fs = FsStorage::open(dir.path()).unwrap();
    let mut all: Vec<(&'static str, Arc<dyn Store>, Option<tempfile::TempDir>)> = vec![
        ("fs", Arc::new(fs), Some(dir)),
        ("mem", Arc::new(MemStore::new(1 << 20)), None),
    ];
    if let Some(s3) = s3_store() {
        all.push(("s3", Arc::new(s3), None));
    }
    all
}

#[path = "../../tests/common/s3.rs"]
mod seaweed;

/// An [`S3Store`] on the process's SeaweedFS under a prefix of its own, if `weed` is here.
fn s3_store() -> Option<S3Store> {
    s3_store_with(MIN_PART_SIZE, None)
}

/// [`s3_store`] with parts of `part_size`, on `prefix` when given (stores on one prefix
/// are instances sharing a bucket).
pub(crate) fn s3_store_with(part_size: u64, prefix: Option<&str>) -> Option<S3Store> {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static WEED: std::sync::OnceLock<Option<seaweed::SeaweedFs>> = std::sync::OnceLock::new();
    static N: AtomicUsize = AtomicUsize::new(0);
    let make = |endpoint: &str, prefix: String| {
        S3Store::new(
            S3Options {
                endpoint: endpoint.to_string(),
                region: "us-east-1".into(),
                bucket: seaweed::BUCKET.into(),
                prefix,
                allow_http: true,
                part_size,
                max_parts_in_flight: 2,
                credentials: Credentials {
                    access_key_id: seaweed::ACCESS_KEY.into(),
                    secret_access_key: seaweed::SECRET_KEY.into(),
                    session_token: None,
                },
            },
            None,
        )
        .unwrap()
    };
    let weed = WEED
        .get_or_init(|| {
            let weed = seaweed::start()?;
            let probe = Arc::new(make(&weed.endpoint, String::new()));
            weed.wait_bucket(move || {
                let probe = probe.clone();
                async move { probe.check().await.is_ok() }
            });
            Some(weed)
        })
        .as_ref()?;
    let n = N.fetch_add(1, Ordering::Relaxed);
    let prefix = match prefix {
        Some(p) => p.to_string(),
        None => format!("contract-{}-{n}/", std::process::id()),
    };
    Some(make(&weed.endpoint, prefix))
}

fn key(s: &str) -> Key {
    Key::parse(s).unwrap()
}

async fn put(st: &dyn Store, k: &str, data: &'static [u8]) -> Result<(), StoreError> {
    let staged = st.begin(&key(k), Some(data.len() as u64)).await?;
    staged.sink().write(0, Bytes::from_static(data)).await?;
    staged.commit().await
}

async fn read_all(st: &dyn Store, k: &str) -> Option<Vec<u8>> {
    let obj = st.open(&key(k)).await.unwrap()?;
    let len = obj.meta().len;
    let chunks: Vec<_> = read_range(obj, 0, len, 3).collect().await;
    Some(chunks.into_iter().flat_map(|c| c.unwrap()).collect())
}

#[tokio::test]
async fn nothing_is_visible_before_commit() {
    for (name, st, _d) in backends() {
        let staged = st.begin(&key("a/b.txt"), None).await.unwrap();
        staged
            .sink()
            .write(0, Bytes::from_static(b"hello"))
            .await
            .unwrap();
        assert!(st.stat(&key("a/b.txt")).await.unwrap().is_none(), "{name}");
        assert!(st.list("", None, 10).await.unwrap().is_empty(), "{name}");
        staged.commit().await.unwrap();
        let meta = st.stat(&key("a/b.txt")).await.unwrap().expect(name);
        assert_eq!(meta.len, 5, "{name}");
        assert_eq!(read_all(&*st, "a/b.txt").await.unwrap(), b"hello", "{name}");
    }
}

#[tokio::test]
async fn a_commit_never_overwrites() {
    for (name, st, _d) in backends() {
        let first = st.begin(&key("x.bin"), None).await.unwrap();
        let second = st.begin(&key("x.bin"), None).await.unwrap();
        first
            .sink()
            .write(0, Bytes::from_static(b"one"))
            .await
            .unwrap();
        second
            .sink()
            .write(0, Bytes::from_static(b"two!"))
            .await
            .unwrap();
        first.commit().await.unwrap();
        assert!(
            matches!(second.commit().await, Err(StoreError::Exists)),
            "{name}"
        );
        assert_eq!(read_all(&*st, "x.bin").await.unwrap(), b"one", "{name}");
        // A "directory" is taken too.
        put(&*st, "d/inner", b"i").await.unwrap();
        assert!(st.exists(&key("d")).await.unwrap(), "{name}");
        assert!(
            matches!(put(&*st, "d", b"x").await, Err(StoreError::Exists)),
            "{name}"
        );
        assert_eq!(st.list("", None, 10).await.unwrap().len(), 2, "{name}");
    }
}

/// `begin` refuses a key that is taken (an object, or a prefix of other keys) before any
/// byte is sent: the core's `PUT` and form uploads rely on it for their 409.
#[tokio::test]
async fn begin_refuses_a_taken_key() {
    for (name, st, _d) in backends() {
        put(&*st, "t/obj", b"o").await.unwrap();
        for taken in ["t/obj", "t"] {
            let r = st.begin(&key(taken), None).await;
            assert!(matches!(r, Err(StoreError::Exists)), "{name}: {taken}");
        }
        let r = st.begin(&key("t/obj/below"), None).await;
        assert!(
            matches!(r, Err(StoreError::PathConflict(_))),
            "{name}: below an object"
        );
        assert!(st.begin(&key("t/free"), None).await.is_ok(), "{name}");
        assert_eq!(st.list("", None, 10).await.unwrap().len(), 1, "{name}");
    }
}

#[tokio::test]
async fn a_key_below_an_object_is_a_path_conflict() {
    for (name, st, _d) in backends() {
        put(&*st, "f", b"file").await.unwrap();
        assert!(
            matches!(
                st.exists(&key("f/g")).await,
                Err(StoreError::PathConflict(_))
            ),
            "{name}"
        );
        let r = st.begin(&key("f/g"), None).await.map(|_| ());
        assert!(
            matches!(r, Err(StoreError::PathConflict(_))),
            "{name}: {r:?}"
        );
    }
}

#[tokio::test]
async fn abort_and_drop_leave_nothing() {
    for (name, st, d) in backends() {
        let staged = st.begin(&key("p/q.bin"), None).await.unwrap();
        staged
            .sink()
            .write(0, Bytes::from_static(b"partial"))
            .await
            .unwrap();
        staged.abort().await;
        let dropped = st.begin(&key("p/r.bin"), None).await.unwrap();
        dropped
            .sink()
            .write(0, Bytes::from_static(b"partial"))
            .await
            .unwrap();
        drop(dropped);
        assert!(st.stat(&key("p/q.bin")).await.unwrap().is_none(), "{name}");
        assert!(st.list("", None, 10).await.unwrap().is_empty(), "{name}");
        if let Some(d) = d {
            // The dropped one is unlinked on the blocking pool: wait for it (bounded).
            for _ in 0..200 {
                if std::fs::read_dir(d.path().join("p")).unwrap().count() == 0 {
                    break;
                }
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
            assert_eq!(std::fs::read_dir(d.path().join("p")).unwrap().count(), 0);
        }
        // Nothing is held any more: the whole capacity (or disk) is free again.
        if st.capabilities().free_space {
            assert!(st.free_space().await.unwrap().is_some(), "{name}");
        }
    }
}

#[tokio::test]
async fn writes_land_at_their_offsets_and_ranges_read_back() {
    for (name, st, _d) in backends() {
        let staged = st.begin(&key("r.bin"), Some(10)).await.unwrap();
        let sink = staged.sink();
        if st.capabilities().random_write {
            sink.write(5, Bytes::from_static(b"56789")).await.unwrap();
            sink.write(0, Bytes::from_static(b"01234")).await.unwrap();
        } else {
            // Sequential only (an object store): an out-of-order write is refused.
            assert!(
                sink.write(5, Bytes::from_static(b"5")).await.is_err(),
                "{name}"
            );
            sink.write(0, Bytes::from_static(b"01234")).await.unwrap();
            sink.write(5, Bytes::from_static(b"56789")).await.unwrap();
        }
        sink.sync().await.unwrap();
        drop(sink);
        staged.commit().await.unwrap();
        let obj = st.open(&key("r.bin")).await.unwrap().unwrap();
        assert_eq!(
            &obj.read_at(8, 10).await.unwrap()[..],
            b"89",
            "{name}: short at end"
        );
        let chunks: Vec<Bytes> = read_range(obj, 2, 5, 2).map(|c| c.unwrap()).collect().await;
        assert!(chunks.iter().all(|c| c.len() <= 2), "{name}");
        assert_eq!(chunks.concat(), b"23456", "{name}");
    }
}

#[tokio::test]
async fn a_range_past_the_end_is_an_error() {
    for (name, st, _d) in backends() {
        put(&*st, "s", b"abc").await.unwrap();
        let obj = st.open(&key("s")).await.unwrap().unwrap();
        let items: Vec<_> = read_range(obj, 1, 5, 10).collect().await;
        assert_eq!(items.len(), 2, "{name}");
        assert!(items[1].is_err(), "{name}");
    }
}

#[tokio::test]
async fn list_pages_in_key_order_and_delete_removes() {
    for (name, st, _d) in backends() {
        for k in ["b/2", "a.txt", "a/1", "b/1", "c"] {
            put(&*st, k, b"x").await.unwrap();
        }
        let all: Vec<String> = st
            .list("", None, 100)
            .await
            .unwrap()
            .into_iter()
            .map(|l| l.key.to_string())
            .collect();
        // Key order: by segment on fs and mem; S3 lists in the store's order - byte order
        // on AWS (`.`, 0x2E, before `/`), by segment on SeaweedFS (a directory tree).
        // Either way, `after` pages through each key once.
        if name == "s3" && all[0] == "a.txt" {
            assert_eq!(all, ["a.txt", "a/1", "b/1", "b/2", "c"], "{name}");
        } else {
            assert_eq!(all, ["a/1", "a.txt", "b/1", "b/2", "c"], "{name}");
        }
        let page = st.list("", None, 2).await.unwrap();
        assert_eq!(page.len(), 2, "{name}");
        let next = st.list("", Some(&page[1].key), 2).await.unwrap();
        let keys: Vec<String> = next.iter().map(|l| l.key.to_string()).collect();
        assert_eq!(keys, ["b/1", "b/2"], "{name}");
        let under_b = st.list("b/", None, 10).await.unwrap();
        assert_eq!(under_b.len(), 2, "{name}");
        assert!(st.delete(&key("b/1")).await.unwrap(), "{name}");
        assert!(!st.delete(&key("b/1")).await.unwrap(), "{name}");
        assert!(st.stat(&key("b/1")).await.unwrap().is_none(), "{name}");
    }
}

#[tokio::test]
async fn the_memory_store_is_bounded() {
    let st = MemStore::new(8);
    let staged = st.begin(&key("big"), None).await.unwrap();
    let r = staged
        .sink()
        .write(0, Bytes::from_static(b"123456789"))
        .await;
    assert!(matches!(r, Err(StoreError::NoSpace(_))));
    assert_eq!(st.free_space().await.unwrap(), Some(8));
    put(&st, "small", b"1234").await.unwrap();
    assert_eq!(st.free_space().await.unwrap(), Some(4));
}

/// Every part store, with the store its sessions complete into.
type PartBackend = (
    &'static str,
    Arc<dyn Store>,
    Arc<dyn PartStore>,
    Option<tempfile::TempDir>,
);

fn part_backends() -> Vec<PartBackend> {
    let dir = tempfile::tempdir().unwrap();
    let fs = FsStorage::open(dir.path()).unwrap();
    let parts = FsParts::open(&fs).unwrap();
    let mem = MemStore::new(1 << 20);
    let mem_parts = mem.parts();
    let mut all: Vec<PartBackend> = vec![
        ("fs", Arc::new(fs), Arc::new(parts), Some(dir)),
        ("mem", Arc::new(mem), Arc::new(mem_parts), None),
    ];
    if let Some(s3) = s3_store() {
        let parts = S3Parts::new(s3.clone());
        all.push(("s3", Arc::new(s3), Arc::new(parts), None));
    }
    all
}

const ID: &str = "0123456789abcdef0123456789abcdef";
const ID2: &str = "fedcba9876543210fedcba9876543210";

#[tokio::test]
async fn parts_are_written_at_placements_and_complete_into_a_key() {
    for (name, st, parts, _d) in part_backends() {
        parts.create(ID).await.unwrap();
        assert!(parts.exists(ID).await.unwrap(), "{name}");
        assert_eq!(parts.list().await.unwrap(), [ID.to_string()], "{name}");
        // Chunks out of order (HFS), and garbage past the length that completes.
        for (at, data) in [(4, &b"efgh"[..]), (0, b"abcd"), (8, b"XX")] {
            let sink = parts
                .open_chunk_sink(ID, at, data.len() as u64)
                .await
                .unwrap();
            sink.write(at, Bytes::from_static(data)).await.unwrap();
            sink.sync().await.unwrap();
        }
        let sha = parts
            .hash_range(ID, Sha256::new(), 2, 6)
            .await
            .unwrap()
            .finalize();
        assert_eq!(sha, Sha256::digest(b"cdef"), "{name}");
        assert!(
            !parts.target_taken(&key("out/f.bin")).await.unwrap(),
            "{name}"
        );
        parts.complete(ID, 8, &key("out/f.bin")).await.unwrap();
        assert_eq!(
            read_all(&*st, "out/f.bin").await.unwrap(),
            b"abcdefgh",
            "{name}"
        );
        assert!(!parts.exists(ID).await.unwrap(), "{name}");
        assert!(parts.list().await.unwrap().is_empty(), "{name}");
        assert!(
            parts.target_taken(&key("out/f.bin")).await.unwrap(),
            "{name}"
        );
    }
}

#[tokio::test]
async fn completing_onto_a_taken_key_never_overwrites() {
    for (name, st, parts, _d) in part_backends() {
        put(&*st, "taken", b"first").await.unwrap();
        parts.create(ID).await.unwrap();
        let sink = parts.open_sink(ID).await.unwrap();
        sink.write(0, Bytes::from_static(b"second")).await.unwrap();
        sink.sync().await.unwrap();
        drop(sink);
        let r = parts.complete(ID, 6, &key("taken")).await;
        assert!(matches!(r, Err(StoreError::Exists)), "{name}: {r:?}");
        assert_eq!(read_all(&*st, "taken").await.unwrap(), b"first", "{name}");
        // The session keeps its data until it is aborted.
        assert!(parts.exists(ID).await.unwrap(), "{name}");
        parts.abort(ID).await.unwrap();
        parts.abort(ID).await.unwrap();
        assert!(!parts.exists(ID).await.unwrap(), "{name}");
        let below = parts.target_taken(&key("taken/x")).await;
        assert!(matches!(below, Err(StoreError::PathConflict(_))), "{name}");
    }
}

#[tokio::test]
async fn parts_concatenate() {
    for (name, st, parts, _d) in part_backends() {
        assert!(parts.capabilities().concat, "{name}");
        for (id, data) in [(ID, &b"one+"[..]), (ID2, &b"two"[..])] {
            parts.create(id).await.unwrap();
            let sink = parts.open_sink(id).await.unwrap();
            sink.write(0, Bytes::copy_from_slice(data)).await.unwrap();
            sink.sync().await.unwrap();
        }
        let dest = "00000000000000000000000000000000";
        parts.create(dest).await.unwrap();
        let sources = vec![(ID.to_string(), 4), (ID2.to_string(), 3)];
        parts.concat(dest, sources).await.unwrap();
        parts.complete(dest, 7, &key("joined")).await.unwrap();
        assert_eq!(
            read_all(&*st, "joined").await.unwrap(),
            b"one+two",
            "{name}"
        );
        let short = vec![(ID.to_string(), 40)];
        parts.create(dest).await.unwrap();
        assert!(parts.concat(dest, short).await.is_err(), "{name}");
    }
}

/// Start-up recovery calls the part store through `block_on` on a blocking thread. With
/// that thread the pool's only one, the fs backend must do its work inline, not queue it
/// behind itself (which waits forever).
#[test]
fn block_on_from_the_only_blocking_thread_completes() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .max_blocking_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let parts = FsParts::open(&FsStorage::open(dir.path()).unwrap()).unwrap();
    let listed = rt.block_on(async move {
        let job = tokio::task::spawn_blocking(move || {
            super::store::block_on(async {
                PartStore::create(&parts, ID).await?;
                PartStore::list(&parts).await
            })
        });
        tokio::time::timeout(std::time::Duration::from_secs(10), job).await
    });
    // Not joined on failure: a deadlocked blocking thread must not hang the test too.
    rt.shutdown_background();
    let ids = listed.expect("block_on finished").unwrap().unwrap();
    assert_eq!(ids, [ID.to_string()]);
}
