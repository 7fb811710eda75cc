//! What the core reports about transfers, as plain events. The core does not know
//! Prometheus; [`crate::metrics`] implements [`Telemetry`] and renders `/metrics`.

use super::readings::Estimate;
use std::time::Duration;

/// Which HTTP version carried a request (a metrics label).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Protocol {
    H1,
    H2,
    H3,
}

impl Protocol {
    pub const ALL: [Protocol; 3] = [Protocol::H1, Protocol::H2, Protocol::H3];

    pub fn label(self) -> &'static str {
        match self {
            Protocol::H1 => "h1",
            Protocol::H2 => "h2",
            Protocol::H3 => "h3",
        }
    }
}

/// The direction of a transfer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Upload,
    Download,
}

/// Receives the core's events. Every method must be cheap and must not block.
pub trait Telemetry: Send + Sync {
    /// A whole upload (PUT, form upload, or a resumable upload's completion) or download.
    fn transfer(&self, dir: Direction, protocol: Protocol, bytes: u64, elapsed: Duration);
    /// One resumable chunk (a tus PATCH, an IETF append, an HFS chunk) was stored.
    fn chunk(&self, protocol: Protocol, bytes: u64, elapsed: Duration);
    /// A request failed with a stable error code.
    fn error(&self, dir: Direction, protocol: Protocol, code: &'static str);
    fn range_request(&self, protocol: Protocol);
    /// A transfer's I/O buffer size was chosen; `changed` when it differs from before.
    fn buffer_size(&self, protocol: Protocol, size: usize, changed: bool);
    /// A chunk size was advised to a client.
    fn chunk_advised(&self, protocol: Protocol, size: u64);
    /// A connection's latest estimate.
    fn network(&self, protocol: Protocol, estimate: &Estimate);
    /// A storage operation was retried / the circuit breaker opened or closed.
    fn storage_retry(&self, op: &'static str);
    fn breaker_open(&self, open: bool);
    /// Files expired by a sweep, and their bytes.
    fn expired(&self, _files: u64, _bytes: u64) {}
    /// The text exposition for `/metrics`, or `None` when metrics are off here.
    fn render(&self) -> Option<String>;
    /// A virus scan ended (`[scan]`; see [`super::scan`]).
    fn scan(&self, _outcome: super::scan::Outcome) {}
    /// An upload of `bytes` was linked to the stored copy of identical content instead of
    /// stored (`[deduplication]`; see [`super::dedup`]).
    fn deduplicated(&self, _bytes: u64) {}
}

/// Reports nothing (for tests of core parts that need a `Telemetry`).
#[derive(Debug, Default)]
pub struct Silent;

impl Telemetry for Silent {
    fn transfer(&self, _: Direction, _: Protocol, _: u64, _: Duration) {}
    fn chunk(&self, _: Protocol, _: u64, _: Duration) {}
    fn error(&self, _: Direction, _: Protocol, _: &'static str) {}
    fn range_request(&self, _: Protocol) {}
    fn buffer_size(&self, _: Protocol, _: usize, _: bool) {}
    fn chunk_advised(&self, _: Protocol, _: u64) {}
    fn network(&self, _: Protocol, _: &Estimate) {}
    fn storage_retry(&self, _: &'static str) {}
    fn breaker_open(&self, _: bool) {}
    fn render(&self) -> Option<String> {
        None
    }
}
