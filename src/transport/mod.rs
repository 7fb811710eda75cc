//! The two front doors. They translate request heads and bodies into core calls and core
//! responses back into wire responses; nothing here decides upload or download semantics.
//!
//! - [`tcp`]: TLS (ALPN h2, http/1.1) and plaintext listeners served by hyper's auto builder.
//! - [`quic`]: a quinn endpoint on the same port number, HTTP/3 through h3 + h3-quinn.
//! - [`tcp_info`], [`quic_info`]: connection readings (`TCP_INFO`, quinn stats) for the
//!   adaptive engine.
//! - [`idle`]: an I/O wrapper that notes the time of the last byte moved, for idle timeouts.
//! - [`slots`]: a listener's TCP connections, for making room at the connection cap.
//! - [`h3_guard`]: bounds on HTTP/3 request heads (size, deadline) below h3.

pub mod batch;
pub mod congestion;
pub mod h3_frames;
pub mod h3_guard;
pub mod idle;
pub mod linger;
pub mod quic;
pub mod quic_info;
pub mod slots;
pub mod tcp;
pub mod tcp_info;
pub mod udp;

use std::sync::Arc;
use tokio::sync::{watch, Semaphore};

pub use crate::core::Protocol;

/// What every accept loop shares: the connection cap and the shutdown signal.
#[derive(Clone)]
pub struct Shared {
    pub core: Arc<crate::core::Core>,
    pub connections: Arc<Semaphore>,
    pub shutdown: watch::Receiver<bool>,
    pub limits: Limits,
    pub metrics: Arc<crate::metrics::Metrics>,
}

/// Timeouts applied by the front ends.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub header_read_timeout: std::time::Duration,
    pub idle_timeout: std::time::Duration,
    /// `[streaming] connection_multiplexing`: many requests per h2/h3 connection.
    pub multiplexing: bool,
    /// `[streaming] bandwidth_estimation`: give requests a connection probe.
    pub readings: bool,
    /// `[server] zero_rtt`: accept HTTP/3 early data (non-safe methods wait for the handshake).
    pub zero_rtt: bool,
    /// `[server] max_header_size`: largest request head over HTTP/2 and HTTP/3.
    pub max_header_size: u64,
}

/// Resolves when shutdown has been signalled.
pub async fn shutdown_signalled(rx: &mut watch::Receiver<bool>) {
    // An error means the sender is gone, which also means shutdown.
    let _ = rx.wait_for(|stop| *stop).await;
}
