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
//!
//! Reads and writes have a breaker each: downloads (`open`) go through the read breaker,
//! everything else (creating, committing, appending) through the write breaker. Storage that
//! refuses writes only (a read-only remount, a revoked write permission, S3 answering 500 to
//! every upload) opens the write breaker and keeps serving downloads. The breaker gauge is 1
//! while either is open.

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

/// Retry and breaker settings plus the breakers' shared state.
pub struct Resilience {
    pub retry: bool,
    pub exponential: bool,
    breakers: Option<Mutex<Breakers>>,
    telemetry: Arc<dyn Telemetry>,
}

/// The read breaker and the write breaker (see the module doc).
#[derive(Default)]
struct Breakers {
    read: Breaker,
    write: Breaker,
}

/// Whether `op` goes through the read breaker: downloads (`open`); everything else writes.
fn reads(op: &str) -> bool {
    op == "open"
}

impl Breakers {
    fn side(&mut self, op: &str) -> &mut Breaker {
        if reads(op) {
            &mut self.read
        } else {
            &mut self.write
        }
    }

    fn any_open(&self) -> bool {
        [self.read, self.write]
            .iter()
            .any(|b| !matches!(b.state, BreakerState::Closed { .. }))
    }
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
            breakers: breaker.then(|| Mutex::new(Breakers::default())),
            telemetry,
        }
    }

    fn with_breakers<T>(&self, f: impl FnOnce(&mut Breakers) -> T) -> Option<T> {
        self.breakers.as_ref().map(|m| match m.lock() {
            Ok(mut g) => f(&mut g),
            Err(p) => f(&mut p.into_inner()),
        })
    }

    /// `f` on the breaker of `op`'s side (read for `open`, write for the rest).
    fn with_breaker<T>(&self, op: &str, f: impl FnOnce(&mut Breaker) -> T) -> Option<T> {
        self.with_breakers(|b| f(b.side(op)))
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
        match self.with_breaker(op, |b| b.admit(Instant::now())) {
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
        let changed = self.with_breakers(|b| {
            let open = b.side(op).record(Instant::now(), failed)?;
            Some((open, b.any_open()))
        });
        if let Some(Some((open, any))) = changed {
            let side = if reads(op) { "reads" } else { "writes" };
            if open {
                tracing::error!(
                    op,
                    "storage keeps failing: circuit breaker for {side} open for {:?}",
                    COOL_DOWN
                );
            } else {
                tracing::info!(op, "storage recovered: circuit breaker for {side} closed");
            }
            self.telemetry.breaker_open(any);
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
            self.resilience.with_breaker(self.op, |b| b.abandon(ticket));
        }
    }
}

#[cfg(test)]
#[path = "retry_tests.rs"]
mod tests;
