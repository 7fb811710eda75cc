//! Tests of the retry policy and the breakers (`super`).

use super::*;
use crate::core::telemetry::Silent;
use std::io::ErrorKind;
use std::sync::atomic::{AtomicU32, Ordering};

fn io(kind: ErrorKind) -> std::io::Error {
    std::io::Error::new(kind, "test")
}

#[test]
fn breaker_opens_cools_down_and_probes() {
    let t0 = Instant::now();
    let mut b = Breaker::default();
    for i in 1..THRESHOLD {
        assert_eq!(b.record(t0, true), None, "failure {i}");
        assert!(b.admit(t0).is_ok());
    }
    assert_eq!(b.record(t0, true), Some(true));
    assert_eq!(
        b.admit(t0 + Duration::from_secs(1)),
        Err(COOL_DOWN - Duration::from_secs(1))
    );
    // After the cool-down one probe goes through; others wait for it.
    let later = t0 + COOL_DOWN;
    assert!(b.admit(later).is_ok());
    assert!(b.admit(later).is_err());
    assert_eq!(b.record(later, true), None);
    assert!(b.admit(later).is_err(), "a failed probe re-opens");
    let later = later + COOL_DOWN;
    assert!(b.admit(later).is_ok());
    assert_eq!(b.record(later, false), Some(false));
    assert_eq!(b.state, BreakerState::Closed { failures: 0 });
    // A success resets the count.
    b.record(later, true);
    b.record(later, false);
    assert_eq!(b.state, BreakerState::Closed { failures: 0 });
}

#[test]
fn classification() {
    assert!(transient(&io(ErrorKind::Interrupted)));
    assert!(!transient(&io(ErrorKind::PermissionDenied)));
    assert!(backend_failure(&io(ErrorKind::PermissionDenied)));
    assert!(!backend_failure(&io(ErrorKind::NotFound)));
    assert!(!backend_failure(&std::io::Error::from_raw_os_error(
        libc::ENOSPC
    )));
}

#[test]
fn path_conflicts_are_not_backend_failures() {
    for errno in [libc::ENOTDIR, libc::EISDIR, libc::EEXIST, libc::ELOOP] {
        let e = std::io::Error::from_raw_os_error(errno);
        assert!(!backend_failure(&e), "{e}");
        assert!(matches!(CoreError::from(e), CoreError::PathConflict));
    }
    assert!(backend_failure(&std::io::Error::from_raw_os_error(
        libc::EIO
    )));
}

#[test]
fn a_probe_that_never_reports_does_not_hold_the_breaker_half_open() {
    let t0 = Instant::now();
    let mut b = Breaker::new(1, Duration::from_secs(30));
    assert_eq!(b.record(t0, true), Some(true));
    let later = t0 + Duration::from_secs(30);
    assert!(b.admit(later).is_ok(), "the probe");
    assert!(b.admit(later + Duration::from_secs(1)).is_err());
    // The probe never reports (lost): later another probe is let through.
    assert!(b.admit(later + Duration::from_secs(120)).is_ok());
    assert!(b.admit(later + Duration::from_secs(121)).is_err());
}

#[test]
fn an_abandoned_probe_frees_the_probe_slot_only_for_itself() {
    let t0 = Instant::now();
    let mut b = Breaker::new(1, Duration::from_secs(30));
    b.record(t0, true);
    let t1 = t0 + Duration::from_secs(30);
    let first = b.admit(t1).unwrap();
    // The first probe hangs past the deadline; a second probe is admitted.
    let t2 = t1 + PROBE_DEADLINE;
    let second = b.admit(t2).unwrap();
    b.abandon(first);
    assert!(
        b.admit(t2).is_err(),
        "a stale ticket does not free the slot"
    );
    b.abandon(second);
    assert!(b.admit(t2).is_ok(), "the running probe was cancelled");
    // A non-probe admission (breaker closed) changes nothing when abandoned.
    let mut c = Breaker::default();
    let t = c.admit(t0).unwrap();
    c.abandon(t);
    assert_eq!(c.state, BreakerState::Closed { failures: 0 });
}

fn quick(threshold: u32) -> Resilience {
    Resilience {
        retry: false,
        exponential: false,
        breakers: Some(Mutex::new(Breakers {
            read: Breaker::new(threshold, Duration::from_millis(20)),
            write: Breaker::new(threshold, Duration::from_millis(20)),
        })),
        telemetry: Arc::new(Silent),
    }
}

#[tokio::test]
async fn successful_checks_do_not_reset_the_count_of_failing_writes() {
    // Read-only storage: every request's existence check works, its write fails.
    let calls = AtomicU32::new(0);
    let r = quick(3);
    for _ in 0..3 {
        let check = r
            .run_check("exists", || async { Ok::<_, std::io::Error>(false) })
            .await;
        assert!(check.is_ok());
        let _ = run_failing(&r, ErrorKind::PermissionDenied, &calls).await;
    }
    assert!(matches!(
        r.with_breaker("test", |b| b.state),
        Some(BreakerState::Open { .. })
    ));
    // While open, checks are refused too; a failing check counts like any failure.
    let check = r
        .run_check("exists", || async { Ok::<_, std::io::Error>(false) })
        .await;
    assert!(matches!(check, Err(CoreError::Unavailable(_))), "{check:?}");
    let r = quick(2);
    for _ in 0..2 {
        let _ = r
            .run_check("exists", || async {
                Err::<bool, _>(io(ErrorKind::PermissionDenied))
            })
            .await;
    }
    assert!(matches!(
        r.with_breaker("test", |b| b.state),
        Some(BreakerState::Open { .. })
    ));
}

#[tokio::test]
async fn a_cancelled_probe_lets_the_next_operation_probe() {
    let calls = AtomicU32::new(0);
    let r = quick(1);
    let e = run_failing(&r, ErrorKind::PermissionDenied, &calls).await;
    assert!(matches!(e, Err(CoreError::Storage(_))));
    tokio::time::sleep(Duration::from_millis(40)).await;
    // The probe's request is cancelled (client gone) while storage works on it.
    let probe = r.run_once("probe", std::future::pending::<Result<(), CoreError>>());
    assert!(tokio::time::timeout(Duration::from_millis(20), probe)
        .await
        .is_err());
    let next = r
        .run("next", || async { Ok::<_, std::io::Error>(()) })
        .await;
    assert!(next.is_ok(), "{next:?}");
    let state = r.with_breaker("test", |b| b.state);
    assert_eq!(state, Some(BreakerState::Closed { failures: 0 }));
}

#[tokio::test]
async fn a_panicking_probe_does_not_hold_the_breaker_half_open() {
    let calls = AtomicU32::new(0);
    let r = Arc::new(quick(1));
    let _ = run_failing(&r, ErrorKind::PermissionDenied, &calls).await;
    tokio::time::sleep(Duration::from_millis(40)).await;
    let probe = {
        let r = r.clone();
        tokio::spawn(async move {
            r.run("probe", || async {
                panic!("probe panics (expected by this test)");
                #[allow(unreachable_code)]
                Ok::<(), std::io::Error>(())
            })
            .await
        })
    };
    assert!(probe.await.is_err(), "the probe panicked");
    // A panic counts as a failure: open again for the cool-down, then a new probe.
    tokio::time::sleep(Duration::from_millis(40)).await;
    let next = r
        .run("next", || async { Ok::<_, std::io::Error>(()) })
        .await;
    assert!(next.is_ok(), "{next:?}");
}

async fn run_failing(r: &Resilience, kind: ErrorKind, calls: &AtomicU32) -> Result<(), CoreError> {
    r.run("test", || async {
        calls.fetch_add(1, Ordering::Relaxed);
        Err::<(), _>(io(kind))
    })
    .await
}

#[tokio::test]
async fn retries_transient_errors_only_when_enabled() {
    let calls = AtomicU32::new(0);
    let on = Resilience::new(true, true, false, Arc::new(Silent));
    assert!(run_failing(&on, ErrorKind::Interrupted, &calls)
        .await
        .is_err());
    assert_eq!(calls.swap(0, Ordering::Relaxed), MAX_ATTEMPTS);
    assert!(run_failing(&on, ErrorKind::PermissionDenied, &calls)
        .await
        .is_err());
    assert_eq!(calls.swap(0, Ordering::Relaxed), 1);
    let off = Resilience::new(false, true, false, Arc::new(Silent));
    assert!(run_failing(&off, ErrorKind::Interrupted, &calls)
        .await
        .is_err());
    assert_eq!(calls.swap(0, Ordering::Relaxed), 1);
    // Backoff doubles, or stays constant.
    assert_eq!(on.delay(3), BASE_DELAY * 4);
    let constant = Resilience::new(true, false, false, Arc::new(Silent));
    assert_eq!(constant.delay(3), BASE_DELAY);
}

#[tokio::test]
async fn breaker_fails_fast_when_enabled() {
    let calls = AtomicU32::new(0);
    let r = Resilience::new(false, false, true, Arc::new(Silent));
    for _ in 0..THRESHOLD {
        let e = run_failing(&r, ErrorKind::PermissionDenied, &calls).await;
        assert!(matches!(e, Err(CoreError::Storage(_))));
    }
    let e = run_failing(&r, ErrorKind::PermissionDenied, &calls).await;
    assert!(matches!(e, Err(CoreError::Unavailable(_))));
    assert_eq!(
        calls.load(Ordering::Relaxed),
        THRESHOLD,
        "not called while open"
    );
    let off = Resilience::new(false, false, false, Arc::new(Silent));
    for _ in 0..THRESHOLD + 1 {
        let e = run_failing(&off, ErrorKind::PermissionDenied, &calls).await;
        assert!(matches!(e, Err(CoreError::Storage(_))));
    }
}

#[tokio::test]
async fn failing_writes_open_the_write_breaker_and_downloads_go_on() {
    let calls = AtomicU32::new(0);
    let r = quick(2);
    for _ in 0..2 {
        let _ = run_failing(&r, ErrorKind::PermissionDenied, &calls).await;
    }
    assert!(matches!(
        r.with_breaker("commit", |b| b.state),
        Some(BreakerState::Open { .. })
    ));
    let write = r
        .run("create", || async { Ok::<_, std::io::Error>(()) })
        .await;
    assert!(matches!(write, Err(CoreError::Unavailable(_))), "{write:?}");
    // Downloads (`open`) have a breaker of their own, still closed.
    let read = r.run("open", || async { Ok::<_, std::io::Error>(7) }).await;
    assert_eq!(read.ok(), Some(7));
    // And failing reads open it without touching the write side's state.
    for _ in 0..2 {
        let _ = r
            .run("open", || async {
                Err::<(), _>(io(ErrorKind::PermissionDenied))
            })
            .await;
    }
    let read = r.run("open", || async { Ok::<_, std::io::Error>(7) }).await;
    assert!(matches!(read, Err(CoreError::Unavailable(_))), "{read:?}");
    let r = quick(2);
    for _ in 0..2 {
        let _ = r
            .run("open", || async {
                Err::<(), _>(io(ErrorKind::PermissionDenied))
            })
            .await;
    }
    let write = r
        .run("commit", || async { Ok::<_, std::io::Error>(()) })
        .await;
    assert!(write.is_ok(), "reads failing do not stop writes: {write:?}");
}
