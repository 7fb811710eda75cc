//! Pure sizing rules: readings x profile x bounds -> an I/O buffer size and a chunk size.
//! No clock, no I/O; the adaptive engine ([`super::adaptive`]) calls these.
//!
//! Buffer size ([`buffer_size`]), for one transfer:
//! 1. Want: with adaptive buffers and an estimate, the bandwidth-delay product, with the
//!    delay floored at [`SERVICE_TIME`] (the cost of handling one buffer, so a fast
//!    low-latency link still gets buffers that amortise it); without an estimate, or with
//!    adaptive buffers off, the maximum.
//! 2. Never more than the body (rounded up to a power of two).
//! 3. Rounded up to a power of two and clamped to `[min, max]` (size classes).
//! 4. Memory pressure: at most `limit / (2 * active)` (a fair share; each transfer holds two
//!    buffers) and at most half of what is free, rounded down to a power of two; never
//!    below `min` (a transfer always gets a buffer).
//!
//! Chunk size ([`chunk_size`]), advised to a resumable upload's client:
//! 1. `fixed`: the configured chunk size, clamped to the bounds. Otherwise:
//! 2. Bandwidth: the estimate's if measured (a fresh connection's guess from its congestion
//!    window is not a measurement), else the profile's, else `fixed`'s answer.
//! 3. Target time per chunk: [`CHUNK_SECONDS`] x reliability factor, where the factor is
//!    `1 - 10 * loss`, clamped to `[0.1, 1]` (a lost chunk costs less to send again), and at
//!    least 8 RTTs (so the round trip after each chunk costs at most about 12%).
//! 4. Chunk = bandwidth x target time, at most the file (rounded up to a power of two).
//! 5. `predictive`: with a profile of at least 3 samples and a best chunk, the geometric
//!    mean of step 4's answer and the best chunk, the history weighted `min(samples, 10)/20`.
//! 6. Rounded down to a power of two (small fluctuations do not move it) and clamped.
//!
//! Properties (tested): always within bounds; monotone non-decreasing in bandwidth;
//! non-increasing in loss; the same input gives the same output.

use super::readings::Estimate;
use std::time::Duration;

/// Delay floor for the buffer rule: roughly one buffer's handling cost.
pub const SERVICE_TIME: Duration = Duration::from_millis(2);
/// Seconds of transfer one chunk aims at on a clean link.
pub const CHUNK_SECONDS: f64 = 4.0;

/// Configured bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bounds {
    pub min_buffer: usize,
    pub max_buffer: usize,
    pub min_chunk: u64,
    pub max_chunk: u64,
}

/// Memory state of the buffer pool when a size is chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pressure {
    /// Transfers holding buffers, this one included.
    pub active: usize,
    /// Bytes accounted to other transfers.
    pub in_use: u64,
    pub limit: u64,
}

fn pow2_up(n: u64) -> u64 {
    n.max(1).checked_next_power_of_two().unwrap_or(1 << 63)
}

fn pow2_down(n: u64) -> u64 {
    if n == 0 {
        0
    } else {
        1 << (63 - n.leading_zeros())
    }
}

/// Buffer size for a transfer (steps 1-4 of the module doc).
pub fn buffer_size(
    b: &Bounds,
    est: Option<&Estimate>,
    adaptive: bool,
    body_len: Option<u64>,
    p: Pressure,
) -> usize {
    let (min, max) = (b.min_buffer as u64, b.max_buffer.max(b.min_buffer) as u64);
    let want = match est {
        Some(e) if adaptive => {
            let delay = e.rtt.max(SERVICE_TIME).as_secs_f64();
            (e.bandwidth as f64 * delay).min(u64::MAX as f64) as u64
        }
        _ => max,
    };
    let want = match body_len {
        Some(len) => want.min(pow2_up(len)),
        None => want,
    };
    let sized = pow2_up(want).clamp(min, max);
    let fair = p.limit / (2 * p.active.max(1) as u64);
    let free = p.limit.saturating_sub(p.in_use) / 2;
    let cap = pow2_down(fair.min(free)).max(min);
    usize::try_from(sized.min(cap)).unwrap_or(b.min_buffer)
}

/// How chunk sizes are chosen (`[performance] chunk_adaptation_algorithm`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Algorithm {
    Fixed,
    Adaptive,
    Predictive,
}

/// What a client's history says (see [`super::profiles`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct History {
    pub samples: u32,
    /// Bytes per second.
    pub throughput: f64,
    pub best_chunk: u64,
}

/// Chunk size for an upload of `file_size` bytes (steps 1-6 of the module doc).
pub fn chunk_size(
    b: &Bounds,
    algo: Algorithm,
    configured: u64,
    file_size: Option<u64>,
    est: Option<&Estimate>,
    history: Option<&History>,
) -> u64 {
    let (min, max) = (b.min_chunk.max(1), b.max_chunk.max(b.min_chunk.max(1)));
    let fixed = configured.clamp(min, max);
    if algo == Algorithm::Fixed {
        return fixed;
    }
    let bandwidth = est
        .filter(|e| e.measured)
        .map(|e| e.bandwidth as f64)
        .filter(|b| *b > 0.0)
        .or_else(|| history.map(|h| h.throughput).filter(|t| *t > 0.0));
    let Some(bandwidth) = bandwidth else {
        return fixed;
    };
    let loss = est.map(|e| e.loss).unwrap_or(0.0);
    let factor = (1.0 - 10.0 * loss).clamp(0.1, 1.0);
    let rtt = est.map(|e| e.rtt.as_secs_f64()).unwrap_or(0.0);
    let seconds = (CHUNK_SECONDS * factor).max(8.0 * rtt);
    let mut chunk = bandwidth * seconds;
    if let Some(size) = file_size {
        chunk = chunk.min(pow2_up(size) as f64);
    }
    if algo == Algorithm::Predictive {
        if let Some(h) = history.filter(|h| h.samples >= 3 && h.best_chunk > 0) {
            let w = f64::from(h.samples.min(10)) / 20.0;
            chunk = ((1.0 - w) * chunk.max(1.0).ln() + w * (h.best_chunk as f64).ln()).exp();
        }
    }
    let chunk = chunk.clamp(1.0, u64::MAX as f64) as u64;
    pow2_down(chunk).clamp(min, max)
}

/// What kind of link a connection looks like.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ConnectionType {
    Loopback,
    Lan,
    Broadband,
    Mobile,
    Satellite,
    Unknown,
}

impl ConnectionType {
    pub fn label(self) -> &'static str {
        match self {
            ConnectionType::Loopback => "loopback",
            ConnectionType::Lan => "lan",
            ConnectionType::Broadband => "broadband",
            ConnectionType::Mobile => "mobile",
            ConnectionType::Satellite => "satellite",
            ConnectionType::Unknown => "unknown",
        }
    }
}

/// Classifies a connection: loopback peers; RTT under 5 ms = LAN; 450 ms or more =
/// satellite; loss of 1% or more, or under 2 MB/s with an RTT of 40 ms or more = mobile;
/// else broadband.
pub fn connection_type(peer_is_loopback: bool, est: Option<&Estimate>) -> ConnectionType {
    if peer_is_loopback {
        return ConnectionType::Loopback;
    }
    let Some(e) = est else {
        return ConnectionType::Unknown;
    };
    let rtt = e.rtt;
    if rtt < Duration::from_millis(5) {
        ConnectionType::Lan
    } else if rtt >= Duration::from_millis(450) {
        ConnectionType::Satellite
    } else if e.loss >= 0.01 || (rtt >= Duration::from_millis(40) && e.bandwidth < 2_000_000) {
        ConnectionType::Mobile
    } else {
        ConnectionType::Broadband
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const KB: usize = 1 << 10;
    const MB: u64 = 1 << 20;

    fn bounds() -> Bounds {
        Bounds {
            min_buffer: 32 * KB,
            max_buffer: 1024 * KB,
            min_chunk: 256 << 10,
            max_chunk: 64 * MB,
        }
    }

    fn est(bandwidth: u64, rtt_ms: u64, loss: f64) -> Estimate {
        Estimate {
            bandwidth,
            rtt: Duration::from_millis(rtt_ms),
            loss,
            measured: true,
        }
    }

    const IDLE: Pressure = Pressure {
        active: 1,
        in_use: 0,
        limit: 64 << 20,
    };

    #[test]
    fn buffer_table() {
        let b = bounds();
        type Case = (Option<Estimate>, bool, Option<u64>, Pressure, usize);
        let cases: &[Case] = &[
            // Loopback at 1 GB/s: 2 ms service floor -> 2 MB -> max.
            (
                Some(est(1_000_000_000, 0, 0.0)),
                true,
                None,
                IDLE,
                1024 * KB,
            ),
            // 50 Mbit/s, 50 ms: BDP 312 kB -> 512 KB class.
            (Some(est(6_250_000, 50, 0.0)), true, None, IDLE, 512 * KB),
            // 1 Mbit/s, 20 ms: 2.5 kB -> min.
            (Some(est(125_000, 20, 0.0)), true, None, IDLE, 32 * KB),
            // No readings yet: max.
            (None, true, None, IDLE, 1024 * KB),
            // Adaptive off: max whatever the link.
            (Some(est(125_000, 20, 0.0)), false, None, IDLE, 1024 * KB),
            // Small body: 100 kB -> 128 KB.
            (None, true, Some(100_000), IDLE, 128 * KB),
            // Tiny body: min.
            (None, true, Some(10), IDLE, 32 * KB),
            // 100 transfers share 64 MB: 320 kB fair share -> 256 KB.
            (
                None,
                true,
                None,
                Pressure {
                    active: 100,
                    in_use: 0,
                    limit: 64 << 20,
                },
                256 * KB,
            ),
            // Nearly full pool: min.
            (
                None,
                true,
                None,
                Pressure {
                    active: 2,
                    in_use: 64 << 20,
                    limit: 64 << 20,
                },
                32 * KB,
            ),
        ];
        for (i, (e, adaptive, len, p, want)) in cases.iter().enumerate() {
            assert_eq!(
                buffer_size(&b, e.as_ref(), *adaptive, *len, *p),
                *want,
                "case {i}"
            );
        }
    }

    #[test]
    fn chunk_table() {
        let b = bounds();
        let h = History {
            samples: 10,
            throughput: 1_000_000.0,
            best_chunk: 2 * MB,
        };
        type Case = (
            Algorithm,
            Option<Estimate>,
            Option<History>,
            Option<u64>,
            u64,
        );
        let cases: &[Case] = &[
            (
                Algorithm::Fixed,
                Some(est(100_000_000, 1, 0.0)),
                None,
                None,
                8 * MB,
            ),
            // No information: the configured size.
            (Algorithm::Adaptive, None, None, None, 8 * MB),
            // 50 Mbit/s clean: 25 MB in 4 s -> 16 MB.
            (
                Algorithm::Adaptive,
                Some(est(6_250_000, 50, 0.0)),
                None,
                None,
                16 * MB,
            ),
            // Same with 2% loss: factor 0.8 -> 20 MB -> 16 MB.
            (
                Algorithm::Adaptive,
                Some(est(6_250_000, 50, 0.02)),
                None,
                None,
                16 * MB,
            ),
            // 5% loss: factor 0.5 -> 12.5 MB -> 8 MB.
            (
                Algorithm::Adaptive,
                Some(est(6_250_000, 50, 0.05)),
                None,
                None,
                8 * MB,
            ),
            // 1 Mbit/s mobile, 10% loss: 50 kB -> min.
            (
                Algorithm::Adaptive,
                Some(est(125_000, 120, 0.10)),
                None,
                None,
                256 << 10,
            ),
            // Fast link: max.
            (
                Algorithm::Adaptive,
                Some(est(1_000_000_000, 0, 0.0)),
                None,
                None,
                64 * MB,
            ),
            // Small file caps it: 3 MB file -> 4 MB class.
            (
                Algorithm::Adaptive,
                Some(est(1_000_000_000, 0, 0.0)),
                None,
                Some(3 * MB),
                4 * MB,
            ),
            // History only: 1 MB/s x 4 s = 3.8 MiB -> 2 MiB.
            (Algorithm::Adaptive, None, Some(h), None, 2 * MB),
            // A guessed (unmeasured) bandwidth is ignored: history, then the fixed size.
            (
                Algorithm::Adaptive,
                Some(Estimate {
                    measured: false,
                    ..est(1_000_000_000, 0, 0.0)
                }),
                Some(h),
                None,
                2 * MB,
            ),
            (
                Algorithm::Adaptive,
                Some(Estimate {
                    measured: false,
                    ..est(1_000_000_000, 0, 0.0)
                }),
                None,
                None,
                8 * MB,
            ),
            // Predictive: 25 MB (readings) blended half-way (log) with 2 MiB -> 7.2 MB -> 4 MiB.
            (
                Algorithm::Predictive,
                Some(est(6_250_000, 50, 0.0)),
                Some(h),
                None,
                4 * MB,
            ),
        ];
        for (i, (algo, e, hist, size, want)) in cases.iter().enumerate() {
            let got = chunk_size(&b, *algo, 8 * MB, *size, e.as_ref(), hist.as_ref());
            assert_eq!(got, *want, "case {i}");
        }
    }

    #[test]
    fn connection_types() {
        use ConnectionType::*;
        let cases = [
            (true, None, Loopback),
            (false, None, Unknown),
            (false, Some(est(100_000_000, 1, 0.0)), Lan),
            (false, Some(est(10_000_000, 30, 0.0)), Broadband),
            (false, Some(est(1_000_000, 80, 0.0)), Mobile),
            (false, Some(est(10_000_000, 60, 0.03)), Mobile),
            (false, Some(est(5_000_000, 600, 0.0)), Satellite),
        ];
        for (lo, e, want) in cases {
            assert_eq!(connection_type(lo, e.as_ref()), want, "{e:?}");
        }
    }

    fn any_bounds() -> impl Strategy<Value = Bounds> {
        (12u32..20, 0u32..6, 16u32..24, 0u32..8).prop_map(|(a, da, c, dc)| Bounds {
            min_buffer: 1 << a,
            max_buffer: 1 << (a + da),
            min_chunk: 1 << c,
            max_chunk: 1 << (c + dc),
        })
    }

    fn any_algo() -> impl Strategy<Value = Algorithm> {
        prop_oneof![
            Just(Algorithm::Fixed),
            Just(Algorithm::Adaptive),
            Just(Algorithm::Predictive)
        ]
    }

    fn any_history() -> impl Strategy<Value = Option<History>> {
        proptest::option::of((0u32..50, 0.0f64..1e9, 0u64..(1 << 30)).prop_map(
            |(samples, throughput, best_chunk)| History {
                samples,
                throughput,
                best_chunk,
            },
        ))
    }

    proptest! {
        #[test]
        fn chunk_properties(
            b in any_bounds(), algo in any_algo(), hist in any_history(),
            bw in 1u64..10_000_000_000, bw2 in 1u64..10_000_000_000,
            rtt in 0u64..2000, loss in 0.0f64..1.0, loss2 in 0.0f64..1.0,
            size in proptest::option::of(1u64..(1 << 40)), configured in 1u64..(1 << 32),
        ) {
            let e = est(bw, rtt, loss);
            let c = chunk_size(&b, algo, configured, size, Some(&e), hist.as_ref());
            prop_assert!(c >= b.min_chunk && c <= b.max_chunk);
            prop_assert_eq!(c, chunk_size(&b, algo, configured, size, Some(&e), hist.as_ref()));
            let (lo, hi) = (bw.min(bw2), bw.max(bw2));
            prop_assert!(
                chunk_size(&b, algo, configured, size, Some(&est(lo, rtt, loss)), hist.as_ref())
                <= chunk_size(&b, algo, configured, size, Some(&est(hi, rtt, loss)), hist.as_ref())
            );
            let (l1, l2) = (loss.min(loss2), loss.max(loss2));
            prop_assert!(
                chunk_size(&b, algo, configured, size, Some(&est(bw, rtt, l1)), hist.as_ref())
                >= chunk_size(&b, algo, configured, size, Some(&est(bw, rtt, l2)), hist.as_ref())
            );
        }

        #[test]
        fn buffer_properties(
            b in any_bounds(), bw in 0u64..10_000_000_000, bw2 in 0u64..10_000_000_000,
            rtt in 0u64..2000, len in proptest::option::of(0u64..(1 << 40)),
            active in 1usize..10_000, in_use in 0u64..(1 << 30), limit in 1u64..(1 << 30),
            adaptive: bool,
        ) {
            let p = Pressure { active, in_use, limit };
            let s = buffer_size(&b, Some(&est(bw, rtt, 0.0)), adaptive, len, p);
            prop_assert!(s >= b.min_buffer && s <= b.max_buffer && s.is_power_of_two());
            let (lo, hi) = (bw.min(bw2), bw.max(bw2));
            prop_assert!(
                buffer_size(&b, Some(&est(lo, rtt, 0.0)), adaptive, len, p)
                <= buffer_size(&b, Some(&est(hi, rtt, 0.0)), adaptive, len, p)
            );
            prop_assert_eq!(s, buffer_size(&b, Some(&est(bw, rtt, 0.0)), adaptive, len, p));
        }
    }
}
