//! Connection readings: what a transport measured about one connection (QUIC stats, TCP_INFO)
//! and the smoothed [`Estimate`] the sizing engine consumes.
//!
//! A transport implements [`Source`]; the core wraps it in a [`Probe`], which samples it at
//! most once per [`MIN_SAMPLE_INTERVAL`] (never per packet) and keeps the estimate:
//!
//! 1. Rate: between two samples at least [`RATE_WINDOW`] apart, bytes moved (both
//!    directions) / elapsed time, smoothed with an EWMA (alpha 1/4). A window in which
//!    nothing moved is idle, not slow, and is skipped.
//! 2. Bandwidth: the smoothed rate once there is one (`measured`); before that the
//!    transport's delivery rate, else congestion window / RTT, stands in. (TCP's delivery
//!    rate and cwnd describe the server's sending direction, which says little about an
//!    upload, so a measured rate always wins.)
//! 3. Loss: lost / sent packets between the two samples (when at least 64 were sent),
//!    smoothed the same way; before that the connection's lifetime ratio.
//! 4. RTT: the transport's smoothed RTT as is.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Fewest time between two samples of one connection.
pub const MIN_SAMPLE_INTERVAL: Duration = Duration::from_millis(5);
/// Shortest window over which a rate is measured.
pub const RATE_WINDOW: Duration = Duration::from_millis(50);

/// One sample of a connection's state (cumulative counters since it opened).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Readings {
    pub rtt: Duration,
    /// Congestion window in bytes.
    pub cwnd: u64,
    pub sent_packets: u64,
    pub lost_packets: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    /// The transport's own delivery-rate estimate in bytes/s (TCP), if any.
    pub delivery_rate: Option<u64>,
}

/// Where readings come from (implemented by the transports).
pub trait Source: Send + Sync {
    /// A fresh sample, or `None` when the connection is gone or cannot be read.
    fn read(&self) -> Option<Readings>;
}

/// What the sizing engine knows about a connection.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Estimate {
    /// Bytes per second.
    pub bandwidth: u64,
    pub rtt: Duration,
    /// Lost fraction of packets, 0..=1.
    pub loss: f64,
    /// Whether `bandwidth` was measured from bytes moved (else it is the transport's guess).
    pub measured: bool,
}

impl Estimate {
    /// Delivery reliability, 1 - loss.
    pub fn reliability(&self) -> f64 {
        (1.0 - self.loss).clamp(0.0, 1.0)
    }
}

#[derive(Default)]
struct State {
    last_sample: Option<Instant>,
    /// The sample a rate is measured from, and when it was taken.
    base: Option<(Instant, Readings)>,
    rate: Option<f64>,
    loss: Option<f64>,
    estimate: Option<Estimate>,
}

/// A connection's sampler and its smoothed estimate. Cheap to share (`Arc`).
pub struct Probe {
    source: Box<dyn Source>,
    state: Mutex<State>,
}

impl std::fmt::Debug for Probe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Probe").finish_non_exhaustive()
    }
}

const ALPHA: f64 = 0.25;

fn ewma(old: Option<f64>, new: f64) -> f64 {
    match old {
        Some(o) => o + ALPHA * (new - o),
        None => new,
    }
}

impl Probe {
    pub fn new(source: Box<dyn Source>) -> Probe {
        Probe {
            source,
            state: Mutex::new(State::default()),
        }
    }

    /// The current estimate, sampling the source if the last sample is old enough.
    pub fn estimate(&self, now: Instant) -> Option<Estimate> {
        let mut st = match self.state.lock() {
            Ok(s) => s,
            Err(poisoned) => poisoned.into_inner(),
        };
        let due = st
            .last_sample
            .is_none_or(|t| now.saturating_duration_since(t) >= MIN_SAMPLE_INTERVAL);
        if due {
            st.last_sample = Some(now);
            if let Some(r) = self.source.read() {
                update(&mut st, now, r);
            }
        }
        st.estimate
    }
}

/// Folds one sample into the state (steps 1-4 of the module doc).
fn update(st: &mut State, now: Instant, r: Readings) {
    match st.base {
        None => st.base = Some((now, r)),
        Some((t0, r0)) => {
            let dt = now.saturating_duration_since(t0);
            if dt >= RATE_WINDOW {
                let moved =
                    (r.bytes_in + r.bytes_out).saturating_sub(r0.bytes_in + r0.bytes_out) as f64;
                if moved > 0.0 {
                    st.rate = Some(ewma(st.rate, moved / dt.as_secs_f64()));
                }
                let sent = r.sent_packets.saturating_sub(r0.sent_packets);
                if sent >= 64 {
                    let lost = r.lost_packets.saturating_sub(r0.lost_packets) as f64;
                    st.loss = Some(ewma(st.loss, (lost / sent as f64).clamp(0.0, 1.0)));
                }
                st.base = Some((now, r));
            }
        }
    }
    let prior = r.delivery_rate.map(|d| d as f64).or_else(|| {
        let rtt = r.rtt.as_secs_f64();
        (rtt > 0.0 && r.cwnd > 0).then(|| r.cwnd as f64 / rtt)
    });
    let bandwidth = st.rate.or(prior).unwrap_or(0.0);
    let loss = st.loss.unwrap_or_else(|| {
        if r.sent_packets >= 64 {
            (r.lost_packets as f64 / r.sent_packets as f64).clamp(0.0, 1.0)
        } else {
            0.0
        }
    });
    st.estimate = Some(Estimate {
        bandwidth: bandwidth.max(0.0).min(u64::MAX as f64) as u64,
        rtt: r.rtt,
        loss,
        measured: st.rate.is_some(),
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    /// A source whose next reading the test sets.
    struct Scripted(Arc<Mutex<Option<Readings>>>);
    impl Source for Scripted {
        fn read(&self) -> Option<Readings> {
            *self.0.lock().unwrap()
        }
    }

    fn reading(bytes: u64, sent: u64, lost: u64) -> Readings {
        Readings {
            rtt: Duration::from_millis(40),
            cwnd: 400_000,
            sent_packets: sent,
            lost_packets: lost,
            bytes_in: bytes,
            bytes_out: 0,
            delivery_rate: None,
        }
    }

    #[test]
    fn first_sample_uses_cwnd_over_rtt_then_measured_rate() {
        let cell = Arc::new(Mutex::new(Some(reading(0, 0, 0))));
        let p = Probe::new(Box::new(Scripted(cell.clone())));
        let t0 = Instant::now();
        let e = p.estimate(t0).unwrap();
        assert_eq!(e.bandwidth, 10_000_000); // 400 kB / 40 ms
        assert!(!e.measured);
        assert_eq!(e.loss, 0.0);
        // 1 MB in 100 ms = 10 MB/s measured; 2% loss over 1000 packets.
        *cell.lock().unwrap() = Some(reading(1_000_000, 1000, 20));
        let e = p.estimate(t0 + Duration::from_millis(100)).unwrap();
        assert_eq!(e.bandwidth, 10_000_000);
        assert!(e.measured);
        assert!((e.loss - 0.02).abs() < 1e-9);
        assert_eq!(e.rtt, Duration::from_millis(40));
    }

    #[test]
    fn samples_at_most_every_interval_and_smooths() {
        let cell = Arc::new(Mutex::new(Some(reading(0, 0, 0))));
        let p = Probe::new(Box::new(Scripted(cell.clone())));
        let t0 = Instant::now();
        p.estimate(t0);
        *cell.lock().unwrap() = Some(reading(2_000_000, 100, 0));
        let e = p.estimate(t0 + Duration::from_millis(100)).unwrap();
        assert_eq!(e.bandwidth, 20_000_000);
        // Within MIN_SAMPLE_INTERVAL: the source is not read again.
        *cell.lock().unwrap() = Some(reading(9_000_000, 200, 50));
        assert_eq!(p.estimate(t0 + Duration::from_millis(101)).unwrap(), e);
        // Next window: 3 MB in 100 ms -> EWMA moves a quarter of the way up.
        *cell.lock().unwrap() = Some(reading(5_000_000, 100, 0));
        let e = p.estimate(t0 + Duration::from_millis(200)).unwrap();
        assert_eq!(e.bandwidth, 22_500_000);
        // An idle window is skipped, not averaged in.
        let e2 = p.estimate(t0 + Duration::from_millis(400)).unwrap();
        assert_eq!(e2.bandwidth, 22_500_000);
    }

    #[test]
    fn a_gone_connection_keeps_the_last_estimate() {
        let cell = Arc::new(Mutex::new(Some(reading(0, 0, 0))));
        let p = Probe::new(Box::new(Scripted(cell.clone())));
        let t0 = Instant::now();
        let e = p.estimate(t0);
        *cell.lock().unwrap() = None;
        assert_eq!(p.estimate(t0 + Duration::from_secs(1)), e);
    }
}
