//! The adaptive engine: joins a request's connection readings ([`super::readings`]), the
//! client's profile ([`super::profiles`]), the buffer pool ([`super::buffers`]) and the pure
//! rules of [`super::sizing`], and reports what it decides through [`super::telemetry`].
//!
//! - [`Adaptive::lease`]: a buffer lease sized for this transfer (waiting, bounded, for
//!   memory under `buffer_memory_limit`, else refused with 503); with `quality_adaptation`
//!   the lease re-evaluates its size every `buffer_optimization_interval` as bytes move.
//! - [`Adaptive::chunk`]: the chunk size advised to a resumable upload's client.
//! - [`Adaptive::observe`]: a finished transfer updates the client's profile and metrics.

use super::buffers::{Lease, Pool};
use super::error::CoreError;
use super::profiles::{Observation, Profiles};
use super::readings::{Estimate, Probe};
use super::sizing::{self, Algorithm, Bounds};
use super::telemetry::{Direction, Protocol, Telemetry};
use super::Ctx;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Switches and bounds (from `[performance]` and `[streaming]`).
#[derive(Debug, Clone)]
pub struct Options {
    pub bounds: Bounds,
    pub adaptive_buffers: bool,
    pub interval: Duration,
    pub intelligent_chunking: bool,
    pub algorithm: Algorithm,
    /// `resumable.chunk_size`: the fixed chunk size.
    pub configured_chunk: u64,
    pub bandwidth_estimation: bool,
    pub quality_adaptation: bool,
}

pub struct Adaptive {
    pub options: Options,
    pub pool: Arc<Pool>,
    pub profiles: Arc<Profiles>,
    pub telemetry: Arc<dyn Telemetry>,
}

/// When a new transfer first re-evaluates its buffer (at most).
pub const FIRST_RETUNE: Duration = Duration::from_millis(120);

/// A lease's re-evaluation state.
#[derive(Debug)]
pub struct Tuning {
    engine: Arc<Adaptive>,
    probe: Option<Arc<Probe>>,
    protocol: Protocol,
    body_len: Option<u64>,
    next: Instant,
}

impl std::fmt::Debug for Adaptive {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Adaptive")
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl Adaptive {
    /// The connection's estimate now (and reported), if readings are on and available.
    pub fn estimate(&self, ctx: &Ctx) -> Option<Estimate> {
        if !self.options.bandwidth_estimation {
            return None;
        }
        let e = ctx.probe.as_ref()?.estimate(Instant::now())?;
        self.telemetry.network(ctx.protocol, &e);
        Some(e)
    }

    /// A buffer lease for a transfer of `body_len` bytes (if known), waiting (bounded) for
    /// buffer memory under the pool's limit; refused with [`CoreError::BuffersExhausted`].
    pub async fn lease(
        self: &Arc<Self>,
        ctx: &Ctx,
        body_len: Option<u64>,
    ) -> Result<Lease, CoreError> {
        let est = self.estimate(ctx);
        let size = sizing::buffer_size(
            &self.options.bounds,
            est.as_ref(),
            self.options.adaptive_buffers,
            body_len,
            self.pool.pressure(0, true),
        );
        let mut lease = self
            .pool
            .lease_growing(size)
            .await
            .map_err(|_| CoreError::BuffersExhausted)?;
        self.telemetry
            .buffer_size(ctx.protocol, lease.size(), false);
        if self.options.quality_adaptation {
            lease.tuning = Some(Box::new(Tuning {
                engine: self.clone(),
                probe: ctx.probe.clone(),
                protocol: ctx.protocol,
                body_len,
                // The first look comes early: at the start only the transport's guess is
                // known; a measured rate exists after a couple of rate windows.
                next: Instant::now() + self.options.interval.min(FIRST_RETUNE),
            }));
        }
        Ok(lease)
    }

    /// The chunk size to advise for an upload of `file_size` bytes (reported as a gauge).
    pub fn chunk(&self, ctx: &Ctx, file_size: Option<u64>) -> u64 {
        let algo = if self.options.intelligent_chunking {
            self.options.algorithm
        } else {
            Algorithm::Fixed
        };
        let est = self.estimate(ctx);
        let history = self
            .profiles
            .enabled()
            .then(|| self.profiles.get(&ctx.client_key(), ctx.unix()))
            .flatten()
            .map(|p| p.history());
        let c = sizing::chunk_size(
            &self.options.bounds,
            algo,
            self.options.configured_chunk,
            file_size,
            est.as_ref(),
            history.as_ref(),
        );
        self.telemetry.chunk_advised(ctx.protocol, c);
        c
    }

    /// A finished transfer: metrics and the client's profile.
    pub fn observe(
        &self,
        ctx: &Ctx,
        dir: Direction,
        bytes: u64,
        elapsed: Duration,
        chunk: Option<u64>,
    ) {
        if chunk.is_some() {
            self.telemetry.chunk(ctx.protocol, bytes, elapsed);
        } else {
            self.telemetry.transfer(dir, ctx.protocol, bytes, elapsed);
        }
        let estimate = self.estimate(ctx);
        if !self.profiles.enabled() {
            return;
        }
        self.profiles.record(
            &ctx.client_key(),
            &Observation {
                bytes,
                seconds: elapsed.as_secs_f64(),
                estimate,
                chunk,
                protocol: ctx.protocol.label(),
                loopback: ctx.peer.is_loopback(),
                now: ctx.unix(),
            },
        );
    }
}

impl super::buffers::Retune for Tuning {
    /// Re-sizes `lease` if the interval has passed (see [`Lease::retune`]).
    fn retune(&mut self, lease: &mut Lease, done: u64) {
        let now = Instant::now();
        if now < self.next {
            return;
        }
        self.next = now + self.engine.options.interval;
        let e = &self.engine;
        let est = if e.options.bandwidth_estimation {
            self.probe.as_ref().and_then(|p| p.estimate(now))
        } else {
            None
        };
        if let Some(est) = &est {
            e.telemetry.network(self.protocol, est);
        }
        let own = 2 * lease.size() as u64;
        let size = sizing::buffer_size(
            &e.options.bounds,
            est.as_ref(),
            e.options.adaptive_buffers,
            self.body_len.map(|n| n.saturating_sub(done)),
            lease.pool().pressure(own, false),
        );
        // The engine's answer is the cap; the lease grows to it only as fast as its data
        // comes (buffers rule 4).
        let changed = lease.set_cap(size);
        e.telemetry
            .buffer_size(self.protocol, lease.size(), changed);
    }
}
