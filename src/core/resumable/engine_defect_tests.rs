//! Engine regression tests for issue 10, without sockets: no in-memory state for ids
//! without a session and none kept for sessions that ended (item 8); completed sessions do
//! not count against the limits, before or after a restart (item 9); a repeated chunk's
//! body is read only up to the chunk's size (item 13).

use super::engine::*;
use super::engine_tests::{append, body, data, env_with, limits, new, open_engine};
use crate::core::body::{BodyError, BodyStream};
use bytes::Bytes;
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
