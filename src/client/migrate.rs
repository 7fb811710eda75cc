//! Connection migration from the client's side. A phone moving from Wi-Fi to cellular (or
//! getting a new lease) changes the local address its packets to the server leave from.
//! The watcher here asks the routing table, every half second, which local address reaches
//! the server; when that changes it moves the QUIC endpoint onto a new socket
//! (`Endpoint::rebind`), so the connection carries on over the new path (the server
//! validates it) instead of idling out on the old one and reconnecting.

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// How often the route is looked up.
pub const EVERY: Duration = Duration::from_millis(500);

/// Which local address reaches a server; `None` when there is no route.
#[derive(Clone)]
pub struct Probe(Arc<dyn Fn(SocketAddr) -> Option<IpAddr> + Send + Sync>);

impl Probe {
    /// A probe from a function (tests give one whose answer they change).
    pub fn new(f: impl Fn(SocketAddr) -> Option<IpAddr> + Send + Sync + 'static) -> Probe {
        Probe(Arc::new(f))
    }

    /// The routing table's answer.
    pub fn route() -> Probe {
        Probe::new(route_source)
    }

    fn get(&self, server: SocketAddr) -> Option<IpAddr> {
        (self.0)(server)
    }
}

impl std::fmt::Debug for Probe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Probe")
    }
}

impl Default for Probe {
    fn default() -> Probe {
        Probe::route()
    }
}

/// The source address the kernel picks for `server`: connecting a UDP socket only does the
/// route lookup; nothing is sent.
pub fn route_source(server: SocketAddr) -> Option<IpAddr> {
    let bind: SocketAddr = if server.is_ipv6() {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    } else {
        (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
    };
    let s = UdpSocket::bind(bind).ok()?;
    s.connect(server).ok()?;
    s.local_addr().ok().map(|a| a.ip())
}

/// A running watcher; dropping it stops it.
pub struct Watcher {
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Watches the local address towards `server` and rebinds `endpoint` to a new socket of the
/// same family when it changes; `migrations` counts the moves.
pub fn watch(
    endpoint: quinn::Endpoint,
    server: SocketAddr,
    probe: Probe,
    migrations: Arc<AtomicU64>,
    verbose: bool,
) -> Watcher {
    let task = tokio::spawn(async move {
        let mut last = probe.get(server);
        let mut tick = tokio::time::interval(EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let now = probe.get(server);
            if now == last || now.is_none() {
                // No route at all: keep the socket; the connection rides it out or times out.
                continue;
            }
            let wildcard: SocketAddr = match endpoint.local_addr() {
                Ok(a) if a.is_ipv6() => (std::net::Ipv6Addr::UNSPECIFIED, 0).into(),
                _ => (std::net::Ipv4Addr::UNSPECIFIED, 0).into(),
            };
            let moved = UdpSocket::bind(wildcard).and_then(|s| {
                let port = s.local_addr()?.port();
                endpoint.rebind(s)?;
                Ok(port)
            });
            match moved {
                Ok(port) => {
                    migrations.fetch_add(1, Ordering::Relaxed);
                    if verbose {
                        eprintln!(
                            "xferd: the local address towards {server} changed ({} -> {}): \
                             moved the QUIC connection to a new socket (port {port})",
                            fmt(last),
                            fmt(now)
                        );
                    }
                    last = now;
                }
                Err(e) => {
                    if verbose {
                        eprintln!(
                            "xferd: the local address changed but rebinding failed: {e}; retrying"
                        );
                    }
                }
            }
        }
    });
    Watcher { task }
}

fn fmt(a: Option<IpAddr>) -> String {
    a.map_or_else(|| "none".into(), |a| a.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_routes_from_loopback() {
        let src = route_source("127.0.0.1:443".parse().unwrap());
        assert_eq!(src, Some("127.0.0.1".parse().unwrap()));
    }
}
