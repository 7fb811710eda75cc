//! Resilience for the server's outbound dependency, storage: retry with (exponential)
//! backoff and jitter for transient failures, and a circuit breaker that fails fast while
//! storage keeps failing. Each part is switched by `[streaming]` keys.
//!
//! Retry: an operation failing with a transient error (interrupted, would block, timed out,
//! busy) is tried again, at most [`MAX_ATTEMPTS`] times, after [`BASE_DELAY`] doubled per
//! attempt (exponential backoff) or constant, each plus up to 50% random jitter.
//!
//! Breaker ([`Breaker`], pure, time passed in): closed until [`THRESHOLD`] backend failures
//! in a row; then open for [`COOL_DOWN`] (storage work is refused with 503 and
//! `Retry-After`); then half-open: one operation is let through, and its outcome closes or
//! re-opens the breaker. A probe that never reports cannot hold the breaker half-open:
//! when its request is cancelled its admission (`Admission`) lets the next operation
//! probe, when it panics it counts as a failure, and one that hangs is replaced by another
//! probe after [`PROBE_DEADLINE`]. A client's mistake (no such file, file exists, a path
//! that collides with a stored file or directory) and a full disk are not backend failures.

use super::error::CoreError;
use super::resumable::SessionError;
use super::telemetry::Telemetry;
use crate::storage::store::StoreError;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const MAX_ATTEMPTS: u32 = 3;
pub const BASE_DELAY: Duration = Duration::from_millis(20);
pub const THRESHOLD: u32 = 5;
pub const COOL_DOWN: Duration = Duration::from_secs(30);
/// The storage operations run under the policy (the `op` label of the retry metric).
pub const OPS: &[&str] = &["create", "open", "commit"];
/// How long a half-open breaker waits for its probe's outcome before admitting another.
pub const PROBE_DEADLINE: Duration = Duration::from_secs(10);

/// Whether an error is worth retrying.
pub fn transient(e: &std::io::Error) -> bool {
    crate::storage::store::is_transient(e)
}

/// Whether an error says the backend is failing (as opposed to the request or a full disk).
/// A path conflict (a component is a file, the target is a directory) is the request's.
/// The classification is the storage layer's (errno lives there).
pub fn backend_failure(e: &std::io::Error) -> bool {
    crate::storage::store::is_backend_failure(e)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    Closed {
        failures: u32,
    },
    Open {
        until: Instant,
    },
    /// `probe`: when the probe now running (if any) was admitted.
    HalfOpen {
        probe: Option<Instant>,
    },
}

/// What [`Breaker::admit`] let through: the probe of a half-open breaker, or not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ticket {
    probe: Option<Instant>,
}

/// The circuit breaker's state machine (see the module doc).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Breaker {
    pub state: BreakerState,
    pub threshold: u32,
    pub cool_down: Duration,
    pub probe_deadline: Duration,
}

impl Default for Breaker {
    fn default() -> Self {
        Breaker::new(THRESHOLD, COOL_DOWN)
    }
}

impl Breaker {
    /// Opens after `threshold` failures in a row, for `cool_down`.
    pub fn new(threshold: u32, cool_down: Duration) -> Breaker {
        Breaker {
            state: BreakerState::Closed { failures: 0 },
            threshold: threshold.max(1),
            cool_down,
            probe_deadline: PROBE_DEADLINE,
        }
    }

    /// May an operation start now? `Err(wait)` when open, or while a probe runs (for at
    /// most the probe deadline).
    pub fn admit(&mut self, now: Instant) -> Result<Ticket, Duration> {
        match self.state {
            BreakerState::Closed { .. } => Ok(Ticket { probe: None }),
            BreakerState::Open { until } if now < until => Err(until - now),
            BreakerState::HalfOpen { probe: Some(since) } if now < since + self.probe_deadline => {
                Err((since + self.probe_deadline - now).min(Duration::from_secs(1)))
            }
            BreakerState::Open { .. } | BreakerState::HalfOpen { .. } => {
                self.state = BreakerState::HalfOpen { probe: Some(now) };
                Ok(Ticket { probe: Some(now) })
            }
        }
    }

    /// An admitted operation ended without an outcome (cancelled): if it was the running
    /// probe, the next operation may probe.
    pub fn abandon(&mut self, ticket: Ticket) {
        if let (BreakerState::HalfOpen { probe: Some(since) }, Some(mine)) =
            (self.state, ticket.probe)
        {
            if since == mine {
                self.state = BreakerState::HalfOpen { probe: None };
            }
        }
    }

    /// Records an outcome; returns `Some(open)` when the breaker changed between open and closed.
    pub fn record(&mut self, now: Instant, failed: bool) -> Option<bool> {
        match (self.state, failed) {
            (BreakerState::Closed { failures }, true) => {
                let failures = failures + 1;
                if failures >= self.threshold {
                    self.state = BreakerState::Open {
                        until: now + self.cool_down,
                    };
                    return Some(true);
                }
                self.state = BreakerState::Closed { failures };
                None
            }
            (BreakerState::Closed { .. }, false) => {
                self.state = BreakerState::Closed { failures: 0 };
                None
            }
            (BreakerState::HalfOpen { .. }, true) => {
                self.state = BreakerState::Open {
                    until: now + self.cool_down,
                };
                None
            }
            (BreakerState::HalfOpen { .. }, false) => {
                self.state = BreakerState::Closed { failures: 0 };
                Some(false)
            }
            (BreakerState::Open { .. }, _) => None,
        }
    }
}

/// Retry and breaker settings plus the breaker's shared state.
pub struct Resilience {
    pub retry: bool,
    pub exponential: bool,
    breaker: Option<Mutex<Breaker>>,
    telemetry: Arc<dyn Telemetry>,
}

impl Resilience {
    pub fn new(
        retry: bool,
        exponential: bool,
        breaker: bool,
        telemetry: Arc<dyn Telemetry>,
    ) -> Resilience {
        Resilience {
            retry,
            exponential,
            breaker: breaker.then(|| Mutex::new(Breaker::default())),
            telemetry,
        }
    }

    fn with_breaker<T>(&self, f: impl FnOnce(&mut Breaker) -> T) -> Option<T> {
        self.breaker.as_ref().map(|m| match m.lock() {
            Ok(mut g) => f(&mut g),
            Err(p) => f(&mut p.into_inner()),
        })
    }

    /// Delay before retry number `attempt` (1-based), without jitter.
    pub fn delay(&self, attempt: u32) -> Duration {
        if self.exponential {
            BASE_DELAY * 2u32.saturating_pow(attempt.saturating_sub(1))
        } else {
            BASE_DELAY
        }
    }

    /// Runs a storage operation that cannot be repeated (it consumes its input) under the
    /// breaker only.
    pub async fn run_once<T>(
        &self,
        op: &'static str,
        fut: impl std::future::Future<Output = Result<T, CoreError>>,
    ) -> Result<T, CoreError> {
        let admission = self.admit(op)?;
        let result = fut.await;
        admission.settle(matches!(&result, Err(CoreError::Storage(e)) if backend_failure(e)));
        result
    }

    /// Runs a resumable session's storage write (an append, a creation, a concatenation)
    /// under the breaker only: its body cannot be replayed, so it is not retried. While the
    /// breaker is open the write is not tried ([`SessionError::StorageUnavailable`]: 503 with
    /// `Retry-After`, the session keeps its offset). A storage failure
    /// ([`SessionError::Storage`], or a transient one the engine reports as
    /// [`SessionError::StorageUnavailable`]) counts towards opening it and a completed write closes
    /// it; any other outcome (the client's mistake, an interrupted body, a full disk, the
    /// session store) says nothing about the storage and is not recorded.
    pub async fn run_session<T>(
        &self,
        op: &'static str,
        fut: impl std::future::Future<Output = Result<T, SessionError>>,
    ) -> Result<T, SessionError> {
        let admission = self.admit(op)?;
        let result = fut.await;
        match &result {
            Ok(_) => admission.settle(false),
            // A transient failure of the write itself (S3 unreachable: 503 for the client)
            // is a storage failure too; the breaker's own refusal returned above.
            Err(SessionError::Storage(_) | SessionError::StorageUnavailable(_)) => {
                admission.settle(true)
            }
            // Dropped unsettled: a probe ticket is given back.
            Err(_) => {}
        }
        result
    }

    fn admit(&self, op: &'static str) -> Result<Admission<'_>, CoreError> {
        match self.with_breaker(|b| b.admit(Instant::now())) {
            Some(Err(wait)) => Err(CoreError::Unavailable(wait)),
            Some(Ok(ticket)) => Ok(Admission {
                resilience: self,
                op,
                ticket: Some(ticket),
            }),
            None => Ok(Admission {
                resilience: self,
                op,
                ticket: None,
            }),
        }
    }

    fn settle(&self, op: &'static str, failed: bool) {
        if let Some(Some(open)) = self.with_breaker(|b| b.record(Instant::now(), failed)) {
            if open {
                tracing::error!(
                    op,
                    "storage keeps failing: circuit breaker open for {:?}",
                    COOL_DOWN
                );
            } else {
                tracing::info!(op, "storage recovered: circuit breaker closed");
            }
            self.telemetry.breaker_open(open);
        }
    }

    /// Runs a storage operation under the retry policy and the breaker.
    pub async fn run<T, E, F, Fut>(&self, op: &'static str, f: F) -> Result<T, CoreError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, E>>,
        E: Into<StoreError>,
    {
        self.run_recording(op, f, true).await
    }

    /// Runs a check that only reads (does the target exist, how much space is free) under
    /// the retry policy and the breaker, recording its failures but not its successes: a
    /// store that answers reads says nothing about its writes, and a success here would
    /// reset the count of the failing writes that follow it (read-only storage would then
    /// never open the breaker).
    pub async fn run_check<T, E, F, Fut>(&self, op: &'static str, f: F) -> Result<T, CoreError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, E>>,
        E: Into<StoreError>,
    {
        self.run_recording(op, f, false).await
    }

    async fn run_recording<T, E, F, Fut>(
        &self,
        op: &'static str,
        mut f: F,
        record_success: bool,
    ) -> Result<T, CoreError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, E>>,
        E: Into<StoreError>,
    {
        let admission = self.admit(op)?;
        let mut attempt = 0;
        let result = loop {
            attempt += 1;
            match f().await.map_err(Into::into) {
                Err(e) if self.retry && attempt < MAX_ATTEMPTS && e.is_transient() => {
                    let base = self.delay(attempt);
                    let jitter = base.mul_f64(rand::random::<f64>() * 0.5);
                    tracing::debug!(op, attempt, error = %e, "storage operation failed; retrying in {:?}", base + jitter);
                    self.telemetry.storage_retry(op);
                    tokio::time::sleep(base + jitter).await;
                }
                other => break other,
            }
        };
        let failed = matches!(&result, Err(e) if e.is_backend_failure());
        if failed || record_success {
            admission.settle(failed);
        }
        // Otherwise the admission is dropped unsettled: a probe ticket is given back.
        result.map_err(CoreError::from)
    }
}

/// An operation let through the breaker. Its outcome is recorded by [`Admission::settle`];
/// dropped unsettled, it was cancelled (the probe slot is freed) or panicked (a failure).
struct Admission<'a> {
    resilience: &'a Resilience,
    op: &'static str,
    /// `None` once settled, or when the breaker is off.
    ticket: Option<Ticket>,
}

impl Admission<'_> {
    fn settle(mut self, failed: bool) {
        if self.ticket.take().is_some() {
            self.resilience.settle(self.op, failed);
        }
    }
}

impl Drop for Admission<'_> {
    fn drop(&mut self) {
        let Some(ticket) = self.ticket.take() else {
            return;
        };
        if std::thread::panicking() {
            tracing::warn!(op = self.op, "storage operation panicked");
            self.resilience.settle(self.op, true);
        } else {
            self.resilience.with_breaker(|b| b.abandon(ticket));
        }
    }
}

#[cfg(test)]
mod tests {
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
            breaker: Some(Mutex::new(Breaker::new(
                threshold,
                Duration::from_millis(20),
            ))),
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
            r.with_breaker(|b| b.state),
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
            r.with_breaker(|b| b.state),
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
        let state = r.with_breaker(|b| b.state);
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

    async fn run_failing(
        r: &Resilience,
        kind: ErrorKind,
        calls: &AtomicU32,
    ) -> Result<(), CoreError> {
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
}
