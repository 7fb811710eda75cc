//! The client's resilience: which failures are retried, how long to wait (exponential
//! backoff with full jitter, or a constant delay), and a circuit breaker shared by every
//! stream of a transfer (the core's [`Breaker`] state machine), so that N streams hitting a
//! dead network pause together instead of burning their retries.

use crate::core::retry::Breaker;
use http::StatusCode;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Retry settings (`xferd upload --retries --backoff ...`).
#[derive(Debug, Clone)]
pub struct Policy {
    /// Attempts per request, the first included.
    pub attempts: u32,
    pub base: Duration,
    pub max: Duration,
    pub exponential: bool,
    /// Consecutive failures that open the breaker, and how long it stays open.
    pub breaker: Option<(u32, Duration)>,
    pub verbose: bool,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            attempts: 10,
            base: Duration::from_millis(250),
            max: Duration::from_secs(15),
            exponential: true,
            breaker: Some((6, Duration::from_secs(5))),
            verbose: false,
        }
    }
}

impl Policy {
    /// The wait before retry `attempt` (1-based): up to `base x 2^(attempt-1)` (capped at
    /// `max`), uniformly jittered between half and all of it.
    pub fn delay(&self, attempt: u32) -> Duration {
        let ceiling = if self.exponential {
            self.base
                .saturating_mul(2u32.saturating_pow(attempt.saturating_sub(1).min(16)))
        } else {
            self.base
        }
        .min(self.max);
        ceiling.mul_f64(0.5 + rand::random::<f64>() * 0.5)
    }
}

/// Statuses worth another try: timeouts, "too early", rate limits and server-side trouble.
pub fn retryable(status: StatusCode) -> bool {
    matches!(status.as_u16(), 408 | 425 | 429 | 500 | 502 | 503 | 504)
}

/// The breaker shared by a transfer's streams.
pub struct Guard {
    policy: Policy,
    breaker: Option<Mutex<Breaker>>,
}

impl Guard {
    pub fn new(policy: Policy) -> Guard {
        let breaker = policy
            .breaker
            .map(|(n, cool)| Mutex::new(Breaker::new(n, cool)));
        Guard { policy, breaker }
    }

    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// Waits while the breaker is open.
    pub async fn admit(&self) {
        let Some(m) = &self.breaker else { return };
        loop {
            let wait = match m.lock() {
                Ok(mut b) => b.admit(Instant::now()).err(),
                Err(_) => None,
            };
            match wait {
                None => return,
                Some(w) => {
                    let w = w.max(Duration::from_millis(50));
                    tokio::time::sleep(w).await;
                }
            }
        }
    }

    /// Records an outcome; says when the breaker opens or closes (with `-v`, always).
    pub fn record(&self, failed: bool) {
        let Some(m) = &self.breaker else { return };
        let change = match m.lock() {
            Ok(mut b) => b.record(Instant::now(), failed),
            Err(_) => None,
        };
        match change {
            Some(true) => eprintln!(
                "xferd: {} failures in a row: pausing all streams for {:?} (circuit breaker open)",
                self.policy.breaker.map(|b| b.0).unwrap_or(0),
                self.policy.breaker.map(|b| b.1).unwrap_or_default()
            ),
            Some(false) if self.policy.verbose => {
                eprintln!("xferd: a request succeeded again: circuit breaker closed")
            }
            _ => {}
        }
    }

    /// `-v`: says what was decided and why.
    pub fn say(&self, what: std::fmt::Arguments<'_>) {
        if self.policy.verbose {
            eprintln!("xferd: {what}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_with_jitter_and_caps() {
        let p = Policy {
            base: Duration::from_millis(100),
            max: Duration::from_secs(1),
            ..Policy::default()
        };
        for attempt in 1..20 {
            let ceiling = (Duration::from_millis(100) * 2u32.pow((attempt - 1).min(16)))
                .min(Duration::from_secs(1));
            let d = p.delay(attempt);
            assert!(d >= ceiling / 2 && d <= ceiling, "{attempt}: {d:?}");
        }
        let constant = Policy {
            exponential: false,
            ..p
        };
        assert!(constant.delay(9) <= Duration::from_millis(100));
    }

    #[test]
    fn which_statuses_are_retried() {
        for s in [408, 425, 429, 500, 503] {
            assert!(retryable(StatusCode::from_u16(s).unwrap()), "{s}");
        }
        for s in [400, 403, 404, 409, 413, 460, 507] {
            assert!(!retryable(StatusCode::from_u16(s).unwrap()), "{s}");
        }
    }
}
