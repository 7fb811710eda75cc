//! Table tests of the session engine, without sockets: appends, out-of-order and concurrent
//! chunks, preemption, checksums, crash points, restart, expiry with a manual clock,
//! limits and concatenation.

use super::checksum::{Expected, Wanted};
use super::engine::*;
use super::session::{Kind, Origin};
use crate::core::body::{BodyError, BodyStream};
use crate::core::path::validate;
use crate::storage::{FsParts, FsStorage, SessionStore};
use bytes::Bytes;
use futures_util::StreamExt;
use sha2::{Digest, Sha256};

pub(super) struct Env {
    pub(super) dir: tempfile::TempDir,
    pub(super) engine: Engine,
}

pub(super) fn limits() -> Limits {
    Limits {
        max_sessions: 10,
        max_sessions_per_client: 5,
        max_reserved_bytes: 1 << 20,
        max_length: 100_000,
        ttl_secs: 100,
        pool: crate::core::buffers::Pool::new(64, 64, 1 << 20),
        commit_every: 100,
    }
}

pub(super) fn open_engine(dir: &std::path::Path, l: Limits) -> Engine {
    let fs = FsStorage::open(&dir.join("data")).unwrap();
    let parts = std::sync::Arc::new(FsParts::open(&fs).unwrap());
    let store = SessionStore::open(&dir.join("state/sessions.redb")).unwrap();
    Engine::open(store, parts, l).unwrap()
}

fn env() -> Env {
    env_with(limits())
}

pub(super) fn env_with(l: Limits) -> Env {
    let dir = tempfile::tempdir().unwrap();
    let engine = open_engine(dir.path(), l);
    Env { dir, engine }
}

impl Env {
    pub(super) fn stored(&self, rel: &str) -> Option<Vec<u8>> {
        std::fs::read(self.dir.path().join("data").join(rel)).ok()
    }
    fn reopen(self) -> Env {
        let Env { dir, engine } = self;
        drop(engine);
        let engine = open_engine(dir.path(), limits());
        Env { dir, engine }
    }
}

pub(super) fn new(target: &str, length: Option<u64>) -> NewSession {
    NewSession {
        origin: Origin::Tus,
        kind: Kind::Whole,
        target: validate(target).unwrap(),
        length,
        signed_size: None,
        metadata: None,
        owner: "client-a".into(),
        expected_sha256: None,
        chunk_size: None,
    }
}

pub(super) fn body(chunks: Vec<Result<Vec<u8>, &'static str>>) -> BodyStream {
    Box::pin(futures_util::stream::iter(chunks.into_iter().map(|c| {
        c.map(Bytes::from).map_err(|e| BodyError(e.to_string()))
    })))
}

pub(super) fn data(n: usize, seed: u8) -> Vec<u8> {
    (0..n)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

pub(super) fn append(offset: u64, len: usize) -> Write {
    Write {
        placement: Placement::Append { offset },
        declared_len: Some(len as u64),
        checksum: None,
        last: false,
        lease: None,
    }
}

#[tokio::test]
async fn sequential_appends_complete_into_the_target() {
    let e = env();
    let d = data(250, 1);
    let s = e
        .engine
        .create(new("a/file.bin", Some(250)), 0)
        .await
        .unwrap();
    let s1 = e
        .engine
        .write(
            &s.id,
            append(0, 100),
            &mut body(vec![Ok(d[..100].to_vec())]),
            1,
        )
        .await
        .unwrap();
    assert_eq!(s1.offset(), 100);
    assert!(s1.completed.is_none());
    assert!(
        e.stored("a/file.bin").is_none(),
        "nothing visible before completion"
    );
    let err = e
        .engine
        .write(
            &s.id,
            append(50, 10),
            &mut body(vec![Ok(d[50..60].to_vec())]),
            2,
        )
        .await
        .unwrap_err();
    assert!(matches!(
        err,
        SessionError::OffsetMismatch {
            expected: 100,
            provided: 50
        }
    ));
    let s2 = e
        .engine
        .write(
            &s.id,
            append(100, 150),
            &mut body(vec![Ok(d[100..].to_vec())]),
            3,
        )
        .await
        .unwrap();
    assert_eq!(
        s2.completed.as_ref().unwrap().sha256,
        hex::encode(Sha256::digest(&d))
    );
    assert_eq!(e.stored("a/file.bin").unwrap(), d);
    // Completed sessions still answer offset queries, and refuse more data.
    assert_eq!(e.engine.info(&s.id, 4).await.unwrap().offset(), 250);
    let err = e
        .engine
        .write(&s.id, append(250, 1), &mut body(vec![Ok(vec![0])]), 5)
        .await
        .unwrap_err();
    assert!(matches!(err, SessionError::AlreadyCompleted));
}

#[tokio::test]
async fn chunks_out_of_order_and_concurrently() {
    let e = env();
    let d = data(1000, 2);
    let mut n = new("c/chunks.bin", Some(1000));
    n.chunk_size = Some(128);
    let s = e.engine.create(n, 0).await.unwrap();
    let order = [7usize, 2, 0, 5, 1, 6, 3, 4];
    let futs = order.iter().map(|&i| {
        let start = i * 128;
        let end = (start + 128).min(1000);
        let chunk = d[start..end].to_vec();
        let w = Write {
            placement: Placement::At {
                offset: start as u64,
                len: (end - start) as u64,
            },
            declared_len: Some((end - start) as u64),
            checksum: None,
            last: false,
            lease: None,
        };
        let engine = &e.engine;
        let id = s.id.clone();
        async move {
            let mut b = body(vec![Ok(chunk[..10].to_vec()), Ok(chunk[10..].to_vec())]);
            engine.write(&id, w, &mut b, 1).await
        }
    });
    let results = futures_util::future::join_all(futs).await;
    assert!(
        results.iter().all(|r| r.is_ok()),
        "{:?}",
        results
            .iter()
            .filter_map(|r| r.as_ref().err())
            .collect::<Vec<_>>()
    );
    assert_eq!(e.stored("c/chunks.bin").unwrap(), d);
    // A repeated chunk after completion is refused as complete; before, it is re-acknowledged.
    let s2 = e
        .engine
        .create(
            {
                let mut n = new("c/two.bin", Some(20));
                n.chunk_size = Some(10);
                n
            },
            0,
        )
        .await
        .unwrap();
    let w = || Write {
        placement: Placement::At { offset: 0, len: 10 },
        declared_len: Some(10),
        checksum: None,
        last: false,
        lease: None,
    };
    e.engine
        .write(&s2.id, w(), &mut body(vec![Ok(vec![1; 10])]), 1)
        .await
        .unwrap();
    let again = e
        .engine
        .write(&s2.id, w(), &mut body(vec![Ok(vec![9; 10])]), 1)
        .await
        .unwrap();
    assert_eq!(again.received.covered(), 10);
}

#[tokio::test]
async fn interrupted_appends_keep_what_arrived() {
    let e = env();
    let d = data(300, 3);
    let s = e.engine.create(new("i/x.bin", Some(300)), 0).await.unwrap();
    let err = e
        .engine
        .write(
            &s.id,
            append(0, 300),
            &mut body(vec![
                Ok(d[..70].to_vec()),
                Ok(d[70..170].to_vec()),
                Err("reset"),
            ]),
            1,
        )
        .await
        .unwrap_err();
    assert!(matches!(err, SessionError::Interrupted(_)));
    assert_eq!(e.engine.info(&s.id, 2).await.unwrap().offset(), 170);
    e.engine
        .write(
            &s.id,
            append(170, 130),
            &mut body(vec![Ok(d[170..].to_vec())]),
            3,
        )
        .await
        .unwrap();
    assert_eq!(e.stored("i/x.bin").unwrap(), d);
}

#[tokio::test]
async fn checksum_mismatch_discards_the_request() {
    let e = env();
    let s = e.engine.create(new("k/x.bin", Some(10)), 0).await.unwrap();
    let sum = |b: &[u8]| {
        use base64::Engine as _;
        format!(
            "sha1 {}",
            base64::engine::general_purpose::STANDARD.encode(sha1::Sha1::digest(b))
        )
    };
    let mut w = append(0, 5);
    w.checksum = Some(Wanted::Header(Expected::parse_tus(&sum(b"right")).unwrap()));
    let err = e
        .engine
        .write(&s.id, w, &mut body(vec![Ok(b"wrong".to_vec())]), 1)
        .await
        .unwrap_err();
    assert!(matches!(err, SessionError::ChecksumMismatch));
    assert_eq!(e.engine.info(&s.id, 1).await.unwrap().offset(), 0);
    let mut w = append(0, 5);
    w.checksum = Some(Wanted::Header(Expected::parse_tus(&sum(b"right")).unwrap()));
    let s1 = e
        .engine
        .write(&s.id, w, &mut body(vec![Ok(b"right".to_vec())]), 1)
        .await
        .unwrap();
    assert_eq!(s1.offset(), 5);
}

#[tokio::test]
async fn a_new_request_preempts_a_stale_one() {
    let e = env();
    let s = e.engine.create(new("p/x.bin", Some(200)), 0).await.unwrap();
    // The stale request sent 100 bytes, then its network went away (the stream never ends).
    let first = futures_util::stream::iter(vec![Ok::<_, BodyError>(Bytes::from(data(100, 4)))]);
    let mut stale: BodyStream = Box::pin(first.chain(futures_util::stream::pending()));
    let engine = &e.engine;
    let id = s.id.clone();
    let stale_write = engine.write(&id, append(0, 200), &mut stale, 1);
    let reconnect = async {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        // The reconnecting client asks for the offset: the stale request is told to stop.
        let info = engine.info_settled(&id, 2).await.unwrap();
        assert_eq!(info.offset(), 100);
        engine
            .write(
                &id,
                append(100, 100),
                &mut body(vec![Ok(data(200, 4)[100..].to_vec())]),
                3,
            )
            .await
    };
    let (old, new) = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        futures_util::future::join(stale_write, reconnect),
    )
    .await
    .expect("no waiting for the stale request");
    assert!(matches!(old, Err(SessionError::Preempted)));
    assert!(new.unwrap().completed.is_some());
    assert_eq!(e.stored("p/x.bin").unwrap(), data(200, 4));
}

#[tokio::test]
async fn crash_between_data_write_and_commit_reports_the_committed_offset() {
    let e = env();
    let d = data(400, 5);
    let s = e.engine.create(new("z/x.bin", Some(400)), 0).await.unwrap();
    e.engine
        .write(
            &s.id,
            append(0, 150),
            &mut body(vec![Ok(d[..150].to_vec())]),
            1,
        )
        .await
        .unwrap();
    // Crash point: bytes reached the data file, the record was never committed.
    let part = e
        .dir
        .path()
        .join("data/.xferd-sessions")
        .join(format!("{}.part", s.id));
    {
        use std::os::unix::fs::FileExt;
        let f = std::fs::OpenOptions::new().write(true).open(&part).unwrap();
        f.write_all_at(&[0xEE; 100], 150).unwrap();
    }
    // An orphan data file (record never written) survives start-up (it may be another
    // instance's creation in progress) and is collected once orphaned for the grace period.
    let orphan = e
        .dir
        .path()
        .join("data/.xferd-sessions/0123456789abcdef0123456789abcdef.part");
    std::fs::write(&orphan, b"x").unwrap();
    let e = e.reopen();
    assert!(orphan.exists(), "a young orphan is kept at start-up");
    assert_eq!(e.engine.expire(2).await.unwrap(), 0);
    assert!(orphan.exists());
    let info = e.engine.info(&s.id, 2).await.unwrap();
    assert_eq!(info.offset(), 150, "offset is the committed one");
    e.engine
        .write(
            &s.id,
            append(150, 250),
            &mut body(vec![Ok(d[150..].to_vec())]),
            3,
        )
        .await
        .unwrap();
    assert_eq!(
        e.stored("z/x.bin").unwrap(),
        d,
        "garbage past the committed offset is overwritten"
    );
    assert!(orphan.exists());
    e.engine.expire(2 + ORPHAN_GRACE_SECS).await.unwrap();
    assert!(
        !orphan.exists(),
        "an orphan past the grace period is collected"
    );
}

#[tokio::test]
async fn expiry_with_a_manual_clock() {
    let e = env();
    let s = e
        .engine
        .create(new("e/x.bin", Some(10)), 1000)
        .await
        .unwrap();
    e.engine
        .write(&s.id, append(0, 4), &mut body(vec![Ok(vec![1; 4])]), 1050)
        .await
        .unwrap();
    assert_eq!(
        e.engine.expire(1100).await.unwrap(),
        0,
        "a write extends the expiry"
    );
    assert_eq!(e.engine.expire(1151).await.unwrap(), 1);
    assert!(matches!(
        e.engine.info(&s.id, 1151).await,
        Err(SessionError::NotFound)
    ));
    assert_eq!(
        std::fs::read_dir(e.dir.path().join("data/.xferd-sessions"))
            .unwrap()
            .count(),
        0
    );
    let s = e.engine.create(new("e/y.bin", Some(10)), 0).await.unwrap();
    assert!(matches!(
        e.engine.info(&s.id, 101).await,
        Err(SessionError::Gone)
    ));
}

#[tokio::test]
async fn limits_are_enforced_with_stable_codes() {
    let e = env_with(Limits {
        max_sessions: 3,
        max_sessions_per_client: 2,
        max_reserved_bytes: 250_000,
        ..limits()
    });
    let err = e
        .engine
        .create(new("l/big.bin", Some(100_001)), 0)
        .await
        .unwrap_err();
    assert_eq!(err.code(), "too_large");
    e.engine
        .create(new("l/a.bin", Some(100_000)), 0)
        .await
        .unwrap();
    e.engine
        .create(new("l/b.bin", Some(100_000)), 0)
        .await
        .unwrap();
    assert_eq!(
        e.engine
            .create(new("l/c.bin", Some(10)), 0)
            .await
            .unwrap_err()
            .code(),
        "too_many_uploads_for_client"
    );
    let mut other = new("l/d.bin", Some(100_000));
    other.owner = "client-b".into();
    assert_eq!(
        e.engine.create(other.clone(), 0).await.unwrap_err().code(),
        "storage_reservation_exceeded"
    );
    other.length = Some(10);
    e.engine.create(other.clone(), 0).await.unwrap();
    other.target = validate("l/e.bin").unwrap();
    assert_eq!(
        e.engine.create(other, 0).await.unwrap_err().code(),
        "too_many_uploads"
    );
}

#[tokio::test]
async fn concatenation_finished_and_unfinished() {
    let e = env();
    let d = data(300, 6);
    let partial = |len| {
        let mut n = new("cat/x.bin", Some(len));
        n.kind = Kind::Partial;
        n
    };
    let a = e.engine.create(partial(100), 0).await.unwrap();
    let b = e.engine.create(partial(200), 0).await.unwrap();
    e.engine
        .write(
            &b.id,
            append(0, 200),
            &mut body(vec![Ok(d[100..].to_vec())]),
            1,
        )
        .await
        .unwrap();
    assert!(
        e.stored("cat/x.bin").is_none(),
        "a partial never lands on its own"
    );
    // concatenation-unfinished: the final is declared before part `a` is done.
    let f = e
        .engine
        .create_final(new("cat/x.bin", None), vec![a.id.clone(), b.id.clone()], 1)
        .await
        .unwrap();
    assert!(f.completed.is_none());
    e.engine
        .write(
            &a.id,
            append(0, 100),
            &mut body(vec![Ok(d[..100].to_vec())]),
            2,
        )
        .await
        .unwrap();
    assert_eq!(e.stored("cat/x.bin").unwrap(), d);
    let f = e.engine.info(&f.id, 3).await.unwrap();
    assert_eq!(f.length, Some(300));
    assert!(f.completed.is_some());
    // Parts of another target cannot be used.
    let c = e
        .engine
        .create(
            {
                let mut n = new("cat/other.bin", Some(5));
                n.kind = Kind::Partial;
                n
            },
            0,
        )
        .await
        .unwrap();
    let err = e
        .engine
        .create_final(new("cat/y.bin", None), vec![c.id], 1)
        .await
        .unwrap_err();
    assert_eq!(err.code(), "invalid_concatenation");
}

#[tokio::test]
async fn deferred_length_digest_and_existing_targets() {
    let e = env();
    let d = data(50, 7);
    let s = e.engine.create(new("d/x.bin", None), 0).await.unwrap();
    e.engine
        .write(
            &s.id,
            append(0, 30),
            &mut body(vec![Ok(d[..30].to_vec())]),
            1,
        )
        .await
        .unwrap();
    assert_eq!(
        e.engine.set_length(&s.id, 20, 1).await.unwrap_err().code(),
        "inconsistent_upload_length"
    );
    e.engine.set_length(&s.id, 50, 1).await.unwrap();
    e.engine
        .write(
            &s.id,
            append(30, 20),
            &mut body(vec![Ok(d[30..].to_vec())]),
            2,
        )
        .await
        .unwrap();
    assert_eq!(e.stored("d/x.bin").unwrap(), d);
    // The target now exists: a new session for it is refused.
    assert_eq!(
        e.engine
            .create(new("d/x.bin", Some(1)), 3)
            .await
            .unwrap_err()
            .code(),
        "file_exists"
    );
    // IETF-style `last`: the length becomes known with the final byte.
    let s = e.engine.create(new("d/y.bin", None), 0).await.unwrap();
    let mut w = append(0, 10);
    w.last = true;
    let done = e
        .engine
        .write(&s.id, w, &mut body(vec![Ok(vec![3; 10])]), 1)
        .await
        .unwrap();
    assert_eq!(done.length, Some(10));
    assert!(done.completed.is_some());
    // A wrong expected digest: refused, nothing stored.
    let mut n = new("d/z.bin", Some(3));
    n.expected_sha256 = Some(Sha256::digest(b"abc").into());
    let s = e.engine.create(n, 0).await.unwrap();
    let err = e
        .engine
        .write(&s.id, append(0, 3), &mut body(vec![Ok(b"abd".to_vec())]), 1)
        .await
        .unwrap_err();
    assert_eq!(err.code(), "digest_mismatch");
    assert!(e.stored("d/z.bin").is_none());
}
