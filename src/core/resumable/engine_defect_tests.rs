//! Engine regression tests for issue 10, without sockets: no in-memory state for ids
//! without a session and none kept for sessions that ended (item 8); completed sessions do
//! not count against the limits, before or after a restart (item 9); a repeated chunk's
//! body is read only up to the chunk's size (item 13). Issue 11: two engines over one
//! storage root, one record store and one locker behave as two instances of one service
//! (limits count both, a reconnect to one stops the stale request on the other, expiry and
//! orphan collection delete only what the records say).

use super::engine::*;
use super::engine_tests::{append, body, data, env_with, limits, new, open_engine};
use super::session::{Kind, Origin, Session};
use crate::core::body::{BodyError, BodyStream};
use crate::storage::meta::{Locker, MemLocker, MemRecords, Quota, Record, SessionRecords, Summary};
use crate::storage::parts::FsParts;
use crate::storage::FsStorage;
use bytes::Bytes;
use futures_util::StreamExt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

fn random_id() -> String {
    format!("{:032x}", rand::random::<u128>())
}

fn chunk(offset: u64, len: u64) -> Write {
    Write {
        placement: Placement::At { offset, len },
        declared_len: None,
        checksum: None,
        last: false,
        lease: None,
    }
}

#[tokio::test]
async fn no_state_for_unknown_ids_and_none_kept_for_ended_sessions() {
    let e = env_with(limits());
    let en = &e.engine;
    for _ in 0..1000 {
        let id = random_id();
        assert!(matches!(
            en.info_settled(&id, 0).await,
            Err(SessionError::NotFound)
        ));
        let mut b = body(vec![Ok(vec![1; 4])]);
        assert!(en.write(&id, append(0, 4), &mut b, 0).await.is_err());
        let mut b = body(vec![Ok(vec![1; 4])]);
        assert!(en.write(&id, chunk(0, 4), &mut b, 0).await.is_err());
        assert!(en.set_length(&id, 4, 0).await.is_err());
        assert!(en.terminate(&id, 0).await.is_err());
    }
    assert_eq!(en.tracked(), 0, "state kept for ids without a session");

    // Completed: the record answers offset queries, the engine keeps nothing for it.
    let s = en.create(new("ended/done.bin", Some(4)), 0).await.unwrap();
    assert_eq!(en.tracked(), 1);
    let mut b = body(vec![Ok(data(4, 1))]);
    let done = en.write(&s.id, append(0, 4), &mut b, 1).await.unwrap();
    assert!(done.completed.is_some());
    assert_eq!(en.tracked(), 0, "state kept for a completed session");
    assert_eq!(en.info_settled(&s.id, 2).await.unwrap().offset(), 4);
    let mut b = body(vec![Ok(data(4, 1))]);
    assert!(matches!(
        en.write(&s.id, append(4, 4), &mut b, 2).await,
        Err(SessionError::AlreadyCompleted)
    ));
    assert_eq!(en.tracked(), 0);
    // Terminated, and expired.
    let s = en.create(new("ended/t.bin", Some(4)), 0).await.unwrap();
    en.terminate(&s.id, 0).await.unwrap();
    en.create(new("ended/x.bin", Some(4)), 0).await.unwrap();
    assert_eq!(en.tracked(), 1);
    assert_eq!(
        en.expire(1000).await.unwrap(),
        2,
        "the completed and the stale one"
    );
    assert_eq!(
        en.tracked(),
        0,
        "state kept for terminated or expired sessions"
    );
}

#[tokio::test]
async fn completed_sessions_do_not_count_against_the_limits() {
    let small = Limits {
        max_sessions: 2,
        max_sessions_per_client: 2,
        max_reserved_bytes: 200,
        max_length: 100,
        ..limits()
    };
    let e = env_with(small.clone());
    for i in 0..5 {
        let s = e
            .engine
            .create(new(&format!("done/{i}.bin"), Some(100)), 0)
            .await
            .unwrap_or_else(|err| panic!("creation {i} after {i} completed: {err}"));
        let mut b = body(vec![Ok(data(100, i))]);
        let s = e
            .engine
            .write(&s.id, append(0, 100), &mut b, 0)
            .await
            .unwrap();
        assert!(s.completed.is_some());
    }
    // After a restart, the completed records still do not count.
    let dir = e.dir;
    drop(e.engine);
    let engine = open_engine(dir.path(), small);
    assert_eq!(engine.tracked(), 0);
    for i in 0..2 {
        engine
            .create(new(&format!("busy/{i}.bin"), Some(10)), 0)
            .await
            .unwrap_or_else(|err| panic!("in progress {i}: {err}"));
    }
    let err = engine
        .create(new("busy/2.bin", Some(10)), 0)
        .await
        .unwrap_err();
    assert_eq!(err.code(), "too_many_uploads");
}

/// A body of `frames` frames of `size` bytes that counts the frames taken from it.
fn counted(frames: u64, size: usize, taken: Arc<AtomicU64>) -> BodyStream {
    Box::pin(futures_util::stream::unfold(0u64, move |n| {
        let taken = taken.clone();
        async move {
            if n >= frames {
                return None;
            }
            taken.fetch_add(1, Ordering::Relaxed);
            Some((Ok::<_, BodyError>(Bytes::from(vec![7u8; size])), n + 1))
        }
    }))
}

#[tokio::test]
async fn a_repeated_chunk_is_read_only_up_to_its_size() {
    let e = env_with(limits());
    let s = e
        .engine
        .create(new("rep/x.bin", Some(2000)), 0)
        .await
        .unwrap();
    let mut b = body(vec![Ok(data(1000, 3))]);
    e.engine
        .write(&s.id, chunk(0, 1000), &mut b, 0)
        .await
        .unwrap();
    // The same chunk again, exactly: acknowledged.
    let mut b = body(vec![Ok(data(1000, 3))]);
    e.engine
        .write(&s.id, chunk(0, 1000), &mut b, 0)
        .await
        .unwrap();
    // Again, with a body that never ends in practice: refused after the chunk's size.
    let taken = Arc::new(AtomicU64::new(0));
    let mut b = counted(1 << 20, 100, taken.clone());
    let err = e
        .engine
        .write(&s.id, chunk(0, 1000), &mut b, 0)
        .await
        .unwrap_err();
    assert_eq!(err.code(), "length_exceeded");
    assert_eq!(
        taken.load(Ordering::Relaxed),
        11,
        "frames read past the chunk"
    );
    // Short: not acknowledged either.
    let mut b = body(vec![Ok(data(10, 3))]);
    let err = e
        .engine
        .write(&s.id, chunk(0, 1000), &mut b, 0)
        .await
        .unwrap_err();
    assert_eq!(err.code(), "body_incomplete");
    // A first chunk is bounded the same way.
    let taken = Arc::new(AtomicU64::new(0));
    let mut b = counted(1 << 20, 100, taken.clone());
    let err = e
        .engine
        .write(&s.id, chunk(1000, 1000), &mut b, 0)
        .await
        .unwrap_err();
    assert_eq!(err.code(), "length_exceeded");
    assert_eq!(taken.load(Ordering::Relaxed), 11);
    let s = e.engine.info(&s.id, 0).await.unwrap();
    assert_eq!(s.received.covered(), 1000, "the session is intact");
}

/// A chunk counts only whole: a refused one records none of its bytes, even past
/// `commit_every`, so sending it again writes it and completes the upload (before, the
/// overrun chunk was recorded, its resend was taken for a repeat, and nothing completed).
#[tokio::test]
async fn a_refused_chunk_records_nothing() {
    let e = env_with(limits());
    let s = e
        .engine
        .create(new("whole/x.bin", Some(2000)), 0)
        .await
        .unwrap();
    let (a, b) = (data(1000, 5), data(1000, 6));
    let mut r = body(vec![Ok(a.clone())]);
    e.engine
        .write(&s.id, chunk(0, 1000), &mut r, 0)
        .await
        .unwrap();
    let mut r = body(vec![Ok(b.clone()), Ok(vec![0; 100])]);
    let err = e.engine.write(&s.id, chunk(1000, 1000), &mut r, 0).await;
    assert_eq!(err.unwrap_err().code(), "length_exceeded");
    let mut r = body(vec![Ok(b[..500].to_vec()), Err("connection reset")]);
    let err = e.engine.write(&s.id, chunk(1000, 1000), &mut r, 0).await;
    assert_eq!(err.unwrap_err().code(), "body_incomplete");
    assert_eq!(
        e.engine.info(&s.id, 0).await.unwrap().received.covered(),
        1000
    );
    let mut r = body(vec![Ok(b.clone())]);
    let s = e
        .engine
        .write(&s.id, chunk(1000, 1000), &mut r, 0)
        .await
        .unwrap();
    assert!(
        s.completed.is_some(),
        "the resent chunk completes the upload"
    );
    assert_eq!(e.stored("whole/x.bin"), Some([a, b].concat()));
}

/// Two engines sharing a storage root, a record store and a locker: two instances.
fn two_instances(l: Limits) -> (tempfile::TempDir, Arc<MemRecords>, Engine, Engine) {
    let dir = tempfile::tempdir().unwrap();
    let fs = FsStorage::open(&dir.path().join("data")).unwrap();
    let records = Arc::new(MemRecords::new());
    let locker: Arc<dyn Locker> = Arc::new(MemLocker::new());
    let shared: Arc<dyn SessionRecords> = records.clone();
    let a = Engine::new(
        shared.clone(),
        locker.clone(),
        Arc::new(FsParts::open(&fs).unwrap()),
        l.clone(),
    );
    let b = Engine::new(shared, locker, Arc::new(FsParts::open(&fs).unwrap()), l);
    (dir, records, a, b)
}

#[tokio::test]
async fn limits_count_the_sessions_of_every_instance() {
    let (dir, _, a, b) = two_instances(Limits {
        max_sessions: 2,
        ..limits()
    });
    let first = a.create(new("two/a.bin", Some(4)), 0).await.unwrap();
    b.create(new("two/b.bin", Some(4)), 0).await.unwrap();
    let err = a.create(new("two/c.bin", Some(4)), 0).await.unwrap_err();
    assert_eq!(
        err.code(),
        "too_many_uploads",
        "instance A must see B's session"
    );
    // The session created on A is finished on B; then it counts for neither.
    let mut w = body(vec![Ok(data(4, 9))]);
    let done = b.write(&first.id, append(0, 4), &mut w, 1).await.unwrap();
    assert!(done.completed.is_some());
    assert_eq!(
        std::fs::read(dir.path().join("data/two/a.bin")).unwrap(),
        data(4, 9)
    );
    a.create(new("two/c.bin", Some(4)), 1).await.unwrap();
    assert_eq!(a.info(&first.id, 2).await.unwrap().offset(), 4);
}

#[tokio::test]
async fn a_reconnect_to_another_instance_stops_the_stale_request_there() {
    let (dir, _, a, b) = two_instances(limits());
    let s = a.create(new("move/x.bin", Some(200)), 0).await.unwrap();
    // On A: 100 bytes arrive, then the phone's network goes away (the body never ends).
    let first = futures_util::stream::iter(vec![Ok::<_, BodyError>(Bytes::from(data(100, 4)))]);
    let mut stale: BodyStream = Box::pin(first.chain(futures_util::stream::pending()));
    let stale_write = a.write(&s.id, append(0, 200), &mut stale, 1);
    let reconnect = async {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        // The phone reconnects to B and asks for the offset: A's request stops and commits.
        let info = b.info_settled(&s.id, 2).await.unwrap();
        assert_eq!(info.offset(), 100);
        let mut rest = body(vec![Ok(data(200, 4)[100..].to_vec())]);
        b.write(&s.id, append(100, 100), &mut rest, 3).await
    };
    let (old, new) = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        futures_util::future::join(stale_write, reconnect),
    )
    .await
    .expect("no waiting for the stale request");
    assert!(matches!(old, Err(SessionError::Preempted)), "{old:?}");
    assert!(new.unwrap().completed.is_some());
    assert_eq!(
        std::fs::read(dir.path().join("data/move/x.bin")).unwrap(),
        data(200, 4)
    );
    assert_eq!(b.tracked(), 0);
    // A's running hash of the session is a cache: dropped by A's next expiry pass.
    assert_eq!(a.tracked(), 1);
    assert_eq!(a.expire(4).await.unwrap(), 0);
    assert_eq!(
        a.tracked(),
        0,
        "state kept for a session finished elsewhere"
    );
}

/// A record for `id` as another instance would insert it.
fn record_for(id: &str, expires: u64) -> Record {
    let s = Session {
        id: id.into(),
        origin: Origin::Tus,
        kind: Kind::Whole,
        target: "late/x.bin".into(),
        length: Some(4),
        signed_size: None,
        received: Default::default(),
        metadata: None,
        owner: "client-c".into(),
        created: 0,
        expires,
        expected_sha256: None,
        chunk_size: None,
        completed: None,
        part_etags: Vec::new(),
        completing: None,
    };
    Record {
        summary: Summary {
            owner: s.owner.clone(),
            open: true,
            reserved: 4,
            expires,
        },
        body: serde_json::to_vec(&s).unwrap(),
    }
}

#[tokio::test]
async fn expiry_deletes_only_what_the_records_say() {
    let (dir, records, a, b) = two_instances(limits());
    let parts = dir.path().join("data/.xferd-sessions");
    let s = a.create(new("keep/x.bin", Some(10)), 1000).await.unwrap();
    let mut w = body(vec![Ok(data(4, 1))]);
    a.write(&s.id, append(0, 4), &mut w, 1000).await.unwrap();
    // Another instance's creation in progress: the data file exists, its record not yet.
    let late = random_id();
    let late_file = parts.join(format!("{late}.part"));
    std::fs::write(&late_file, b"").unwrap();
    let never = random_id();
    let never_file = parts.join(format!("{never}.part"));
    std::fs::write(&never_file, b"").unwrap();
    assert_eq!(b.expire(1001).await.unwrap(), 0);
    assert!(
        parts.join(format!("{}.part", s.id)).exists(),
        "A's upload in progress"
    );
    assert!(
        late_file.exists() && never_file.exists(),
        "young files without records"
    );
    let quota = Quota {
        max_open: 100,
        max_open_per_owner: 100,
        max_reserved: 1 << 30,
    };
    records
        .insert(&late, record_for(&late, 1_000_000), quota)
        .await
        .unwrap();
    // Past the grace period, and past A's session's expiry: the records decide.
    let later = 1001 + ORPHAN_GRACE_SECS;
    assert_eq!(b.expire(later).await.unwrap(), 1, "A's expired session");
    assert!(!parts.join(format!("{}.part", s.id)).exists());
    assert!(late_file.exists(), "its record appeared: not an orphan");
    assert!(!never_file.exists(), "orphaned for the grace period");
    assert!(matches!(
        a.info(&s.id, later).await,
        Err(SessionError::NotFound)
    ));
    assert_eq!(b.info(&late, later).await.unwrap().owner, "client-c");
}

/// The local locker's fencing tokens continue above the ones stored records were written
/// with, so after a restart the new holder's writes are not refused as stale.
#[tokio::test]
async fn fencing_tokens_keep_increasing_across_restarts() {
    let e = env_with(limits());
    let s = e
        .engine
        .create(new("fence/x.bin", Some(40)), 0)
        .await
        .unwrap();
    for i in 0..3u64 {
        let mut b = body(vec![Ok(data(40, 2)[i as usize * 10..][..10].to_vec())]);
        e.engine
            .write(&s.id, append(i * 10, 10), &mut b, 1)
            .await
            .unwrap();
    }
    let dir = e.dir;
    drop(e.engine);
    let engine = open_engine(dir.path(), limits());
    let mut b = body(vec![Ok(data(40, 2)[30..].to_vec())]);
    let done = engine.write(&s.id, append(30, 10), &mut b, 2).await;
    assert!(done.unwrap().completed.is_some());
    assert_eq!(
        std::fs::read(dir.path().join("data/fence/x.bin")).unwrap(),
        data(40, 2)
    );
}

/// An instance that died holding an upload's lock (its guard is never dropped) does not
/// lock the client out: on a locker with a lease, the next request takes over once the
/// lease has run out, and the dead holder's token can no longer write the record.
#[tokio::test]
async fn a_dead_holders_lock_is_taken_over_after_its_lease() {
    let dir = tempfile::tempdir().unwrap();
    let fs = FsStorage::open(&dir.path().join("data")).unwrap();
    let records = Arc::new(MemRecords::new());
    let lease = std::time::Duration::from_millis(200);
    let locker = Arc::new(MemLocker::with_lease(0, lease));
    let engine = Engine::new(
        records.clone(),
        locker.clone(),
        Arc::new(FsParts::open(&fs).unwrap()),
        limits(),
    );
    let s = engine.create(new("dead/x.bin", Some(8)), 0).await.unwrap();
    let dead = locker.lock(&s.id).await.unwrap();
    let started = std::time::Instant::now();
    let mut b = body(vec![Ok(data(8, 3))]);
    let done = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        engine.write(&s.id, append(0, 8), &mut b, 1),
    )
    .await
    .expect("locked out by a dead holder")
    .unwrap();
    assert!(
        started.elapsed() >= lease,
        "taken over before the lease ran out"
    );
    assert!(done.completed.is_some());
    let stored = records.get(&s.id).await.unwrap().unwrap();
    assert!(stored.fence > dead.token());
    let stale = records
        .put_if(
            &s.id,
            stored.record.clone(),
            stored.version,
            Some(dead.token()),
        )
        .await;
    assert!(
        matches!(stale, Err(crate::storage::meta::RecordError::Fenced)),
        "{stale:?}"
    );
}

/// The record a process killed just before it recorded `done` complete leaves: in progress,
/// marked `completing` with the digest when `marked` (`engine/finish.rs` rule 1).
fn cut_record(done: &Session, marked: bool) -> Record {
    let mut s = done.clone();
    let sha = s.completed.take().map(|c| c.sha256);
    s.completing = sha.filter(|_| marked);
    Record {
        summary: Summary {
            owner: s.owner.clone(),
            open: true,
            reserved: s.length.unwrap_or(0),
            expires: s.expires,
        },
        body: serde_json::to_vec(&s).unwrap(),
    }
}

/// Creates a session for `target` and writes `bytes` to it in one append (it completes).
async fn completed(engine: &Engine, target: &str, bytes: &[u8]) -> Session {
    let n = bytes.len() as u64;
    let s = engine.create(new(target, Some(n)), 0).await.unwrap();
    let mut b = body(vec![Ok(bytes.to_vec())]);
    let done = engine
        .write(&s.id, append(0, n as usize), &mut b, 1)
        .await
        .unwrap();
    assert!(done.completed.is_some());
    done
}

/// A process killed between the move of a completed upload into place and the record of
/// the completion (`engine/finish.rs` rules 1 and 2): the record is in progress and marked,
/// the data file is gone, the target is there. Start-up used to drop such a record as a
/// session without data, so a client resuming got 404 (and then 409 when it created the
/// upload again, its target being taken). Now its next offset query records it complete
/// with the marked digest, after a restart (local store) and on a shared store (no
/// start-up recovery). A session without its data and without the mark is still dropped.
#[tokio::test]
async fn a_completion_cut_after_the_move_is_recorded_at_the_next_query() {
    let e = env_with(limits());
    let (want, other) = (data(40, 3), data(30, 4));
    let moved = completed(&e.engine, "cut/moved.bin", &want).await;
    let lost = completed(&e.engine, "cut/lost.bin", &other).await;
    let dir = e.dir;
    drop(e.engine);
    let store =
        crate::storage::SessionStore::open(&dir.path().join("state/sessions.redb")).unwrap();
    for (s, marked) in [(&moved, true), (&lost, false)] {
        let cur = store.get_blocking(&s.id).unwrap().unwrap();
        (store.put_if_blocking(&s.id, cut_record(s, marked), cur.version, None)).unwrap();
    }
    drop(store);
    let engine = open_engine(dir.path(), limits());
    let s = engine.info_settled(&moved.id, 2).await.unwrap();
    assert_eq!(
        s.completed,
        Some(super::session::Completed {
            sha256: moved.completed.clone().unwrap().sha256,
            at: 2
        })
    );
    assert_eq!((s.offset(), s.completing.is_some()), (40, true));
    assert_eq!(
        std::fs::read(dir.path().join("data/cut/moved.bin")).unwrap(),
        want
    );
    assert!(matches!(
        engine.info(&lost.id, 2).await,
        Err(SessionError::NotFound)
    ));

    // A shared record store: nothing happens at start-up, the query records it.
    let (_dir, records, a, _b) = two_instances(limits());
    let moved = completed(&a, "cut/shared.bin", &want).await;
    let cur = records.get(&moved.id).await.unwrap().unwrap();
    (records
        .put_if(&moved.id, cut_record(&moved, true), cur.version, None)
        .await)
        .unwrap();
    let s = a.info_settled(&moved.id, 3).await.unwrap();
    assert_eq!(
        s.completed.map(|c| c.sha256),
        moved.completed.map(|c| c.sha256)
    );
}
