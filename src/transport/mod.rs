//! The two front doors. They translate request heads and bodies into core calls and core
//! responses back into wire responses; nothing here decides upload or download semantics.
//!
//! - [`tcp`]: TLS (ALPN h2, http/1.1) and plaintext listeners served by hyper's auto builder.
//! - [`quic`]: a quinn endpoint on the same port number, HTTP/3 through h3 + h3-quinn.
//! - [`idle`]: an I/O wrapper that notes the time of the last byte moved, for idle timeouts.

pub mod idle;
pub mod quic;
pub mod tcp;

use std::sync::Arc;
use tokio::sync::{watch, Semaphore};

/// Which HTTP version carried a request (for logs and metrics labels).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    H1,
    H2,
    H3,
}

impl Protocol {
    pub fn label(self) -> &'static str {
        match self {
            Protocol::H1 => "h1",
            Protocol::H2 => "h2",
            Protocol::H3 => "h3",
        }
    }
}

/// What every accept loop shares: the connection cap and the shutdown signal.
#[derive(Clone)]
pub struct Shared {
    pub core: Arc<crate::core::Core>,
    pub connections: Arc<Semaphore>,
    pub shutdown: watch::Receiver<bool>,
    pub limits: Limits,
}

/// Timeouts applied by the front ends.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub header_read_timeout: std::time::Duration,
    pub idle_timeout: std::time::Duration,
}

/// Resolves when shutdown has been signalled.
pub async fn shutdown_signalled(rx: &mut watch::Receiver<bool>) {
    // An error means the sender is gone, which also means shutdown.
    let _ = rx.wait_for(|stop| *stop).await;
}
