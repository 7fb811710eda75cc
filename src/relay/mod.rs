//! A userspace link emulator for tests and benchmarks (this kernel has no netem): a UDP
//! relay and a TCP relay between a client and a server, on loopback or in namespaces.
//!
//! Both relays add one-way delay (plus uniform jitter) and a rate limit (token bucket) in
//! each direction and can black out (nothing passes; TCP stalls, UDP drops). The UDP relay
//! also drops a share of datagrams at random (which reorders what follows a delayed one
//! when jitter is on) and can change the source address it uses towards the server, which a
//! QUIC server sees as the client migrating. The TCP relay can also cut every connection.
//!
//! Everything runs as tokio tasks owned by the returned handle; dropping it stops them.
//!
//! A relay terminates TCP, so its delay is invisible to TCP's congestion control on the
//! lossy leg; when TCP and QUIC must cross the same packet-level link, use [`wire`].

pub mod wire;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::{TcpListener, TcpStream, UdpSocket};

/// Link properties, applied in both directions.
#[derive(Debug, Clone, Copy, Default)]
pub struct Link {
    pub delay: Duration,
    pub jitter: Duration,
    /// Bytes per second; 0 = unlimited.
    pub rate: u64,
    /// Share of UDP datagrams dropped, 0..1.
    pub loss: f64,
}

/// What the relay did (for reports).
#[derive(Debug, Default)]
pub struct Counters {
    pub forwarded: AtomicU64,
    pub dropped: AtomicU64,
    pub bytes: AtomicU64,
}

/// Shared controls of a running relay.
#[derive(Debug, Default)]
pub struct Controls {
    blackout: AtomicBool,
    /// Bumped to make the UDP relay use new source sockets / the TCP relay cut connections.
    epoch: AtomicU64,
    pub counters: Counters,
}

/// A running relay; dropping it stops it.
pub struct Relay {
    pub addr: SocketAddr,
    pub controls: Arc<Controls>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for Relay {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl Relay {
    /// Nothing passes while `on`.
    pub fn blackout(&self, on: bool) {
        self.controls.blackout.store(on, Ordering::SeqCst);
    }

    /// UDP: later datagrams reach the server from a new source port (a migration).
    /// TCP: every open connection is cut.
    pub fn change(&self) {
        self.controls.epoch.fetch_add(1, Ordering::SeqCst);
    }
}

/// Paces sends to `rate` bytes/s (token bucket with 64 KiB of burst).
struct Pacer {
    rate: u64,
    next: Instant,
}

impl Pacer {
    fn new(rate: u64) -> Pacer {
        Pacer {
            rate,
            next: Instant::now(),
        }
    }

    async fn take(&mut self, bytes: usize) {
        if self.rate == 0 {
            return;
        }
        let now = Instant::now();
        let burst = Duration::from_secs_f64(65_536.0 / self.rate as f64);
        if self.next + burst < now {
            self.next = now - burst;
        }
        self.next += Duration::from_secs_f64(bytes as f64 / self.rate as f64);
        if self.next > now {
            tokio::time::sleep_until(self.next.into()).await;
        }
    }
}

fn jittered(link: &Link) -> Duration {
    if link.jitter.is_zero() {
        link.delay
    } else {
        link.delay + link.jitter.mul_f64(rand::random::<f64>())
    }
}

/// A one-direction pipe: items are released after their delay, paced to the rate.
fn pipe<T: Send + 'static>(
    link: Link,
    mut deliver: impl FnMut(T) -> futures_util::future::BoxFuture<'static, ()> + Send + 'static,
) -> tokio::sync::mpsc::UnboundedSender<(T, usize)> {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(T, usize)>();
    let (dtx, mut drx) = tokio::sync::mpsc::unbounded_channel::<(Instant, T)>();
    // Pacing in arrival order, then delay (with jitter, which may reorder).
    tokio::spawn(async move {
        let mut pacer = Pacer::new(link.rate);
        while let Some((item, len)) = rx.recv().await {
            pacer.take(len).await;
            let due = Instant::now() + jittered(&link);
            if dtx.send((due, item)).is_err() {
                return;
            }
        }
    });
    tokio::spawn(async move {
        while let Some((due, item)) = drx.recv().await {
            tokio::time::sleep_until(due.into()).await;
            deliver(item).await;
        }
    });
    tx
}

/// Relays UDP datagrams from clients on `listen` to `server`.
pub async fn udp(listen: SocketAddr, server: SocketAddr, link: Link) -> std::io::Result<Relay> {
    let front = Arc::new(UdpSocket::bind(listen).await?);
    let addr = front.local_addr()?;
    let controls = Arc::new(Controls::default());
    let c = controls.clone();
    let task = tokio::spawn(async move {
        // One upstream socket per (client, epoch).
        let mut sessions: std::collections::HashMap<SocketAddr, (u64, Arc<UdpSocket>)> =
            std::collections::HashMap::new();
        let to_client = {
            let front = front.clone();
            pipe::<(Vec<u8>, SocketAddr)>(link, move |(data, to)| {
                let front = front.clone();
                Box::pin(async move {
                    let _ = front.send_to(&data, to).await;
                })
            })
        };
        let to_server = pipe::<(Vec<u8>, Arc<UdpSocket>)>(link, move |(data, up)| {
            Box::pin(async move {
                let _ = up.send_to(&data, server).await;
            })
        });
        let mut buf = vec![0u8; 65_536];
        loop {
            let Ok((n, client)) = front.recv_from(&mut buf).await else {
                return;
            };
            if c.blackout.load(Ordering::SeqCst) || rand::random::<f64>() < link.loss {
                c.counters.dropped.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            let epoch = c.epoch.load(Ordering::SeqCst);
            let up = {
                let s = &mut sessions;
                match s.get(&client) {
                    Some((e, sock)) if *e == epoch => sock.clone(),
                    _ => {
                        let bind: SocketAddr = if server.is_ipv6() {
                            "[::]:0".parse().unwrap_or(listen)
                        } else {
                            SocketAddr::new(listen.ip(), 0)
                        };
                        let Ok(sock) = UdpSocket::bind(bind).await else {
                            continue;
                        };
                        let sock = Arc::new(sock);
                        s.insert(client, (epoch, sock.clone()));
                        // Replies from the server go back to this client.
                        let (reader, c2, back) = (sock.clone(), c.clone(), to_client.clone());
                        tokio::spawn(async move {
                            let mut b = vec![0u8; 65_536];
                            while let Ok((n, _)) = reader.recv_from(&mut b).await {
                                if c2.blackout.load(Ordering::SeqCst)
                                    || rand::random::<f64>() < link.loss
                                {
                                    c2.counters.dropped.fetch_add(1, Ordering::Relaxed);
                                    continue;
                                }
                                let data = b.get(..n).map(<[u8]>::to_vec).unwrap_or_default();
                                if back.send(((data, client), n)).is_err() {
                                    return;
                                }
                            }
                        });
                        sock
                    }
                }
            };
            c.counters.forwarded.fetch_add(1, Ordering::Relaxed);
            c.counters.bytes.fetch_add(n as u64, Ordering::Relaxed);
            let data = buf.get(..n).map(<[u8]>::to_vec).unwrap_or_default();
            if to_server.send(((data, up), n)).is_err() {
                return;
            }
        }
    });
    Ok(Relay {
        addr,
        controls,
        tasks: vec![task],
    })
}

/// Relays TCP connections accepted on `listen` to `server`.
pub async fn tcp(listen: SocketAddr, server: SocketAddr, link: Link) -> std::io::Result<Relay> {
    let listener = TcpListener::bind(listen).await?;
    let addr = listener.local_addr()?;
    let controls = Arc::new(Controls::default());
    let c = controls.clone();
    let task = tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let c = c.clone();
            tokio::spawn(async move {
                let Ok(up) = TcpStream::connect(server).await else {
                    return;
                };
                let _ = client.set_nodelay(true);
                let _ = up.set_nodelay(true);
                let epoch = c.epoch.load(Ordering::SeqCst);
                let (cr, cw) = client.into_split();
                let (ur, uw) = up.into_split();
                let a = copy(cr, uw, link, c.clone(), epoch);
                let b = copy(ur, cw, link, c.clone(), epoch);
                tokio::select! { _ = a => {}, _ = b => {} }
            });
        }
    });
    Ok(Relay {
        addr,
        controls,
        tasks: vec![task],
    })
}

async fn copy(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    link: Link,
    c: Arc<Controls>,
    epoch: u64,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut pacer = Pacer::new(link.rate);
    let mut buf = vec![0u8; 16_384];
    loop {
        let n = tokio::select! {
            r = from.read(&mut buf) => match r { Ok(0) | Err(_) => return, Ok(n) => n },
            _ = wait_cut(&c, epoch) => return,
        };
        while c.blackout.load(Ordering::SeqCst) {
            if c.epoch.load(Ordering::SeqCst) != epoch {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        pacer.take(n).await;
        let d = jittered(&link);
        if !d.is_zero() {
            tokio::time::sleep(d).await;
        }
        c.counters.bytes.fetch_add(n as u64, Ordering::Relaxed);
        let Some(data) = buf.get(..n) else { return };
        if to.write_all(data).await.is_err() {
            return;
        }
    }
}

async fn wait_cut(c: &Controls, epoch: u64) {
    while c.epoch.load(Ordering::SeqCst) == epoch {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn udp_relay_delays_drops_and_changes_source() {
        let server = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let link = Link {
            delay: Duration::from_millis(30),
            ..Link::default()
        };
        let relay = udp(
            "127.0.0.1:0".parse().unwrap(),
            server.local_addr().unwrap(),
            link,
        )
        .await
        .unwrap();
        let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let t0 = Instant::now();
        client.send_to(b"ping", relay.addr).await.unwrap();
        let mut b = [0u8; 16];
        let (n, from1) = server.recv_from(&mut b).await.unwrap();
        assert_eq!(&b[..n], b"ping");
        assert!(t0.elapsed() >= Duration::from_millis(30));
        server.send_to(b"pong", from1).await.unwrap();
        let (n, _) = client.recv_from(&mut b).await.unwrap();
        assert_eq!(&b[..n], b"pong");
        assert!(t0.elapsed() >= Duration::from_millis(60));
        relay.change();
        client.send_to(b"again", relay.addr).await.unwrap();
        let (_, from2) = server.recv_from(&mut b).await.unwrap();
        assert_ne!(from1, from2, "a new source address after change()");
        relay.blackout(true);
        client.send_to(b"lost", relay.addr).await.unwrap();
        let r = tokio::time::timeout(Duration::from_millis(100), server.recv_from(&mut b)).await;
        assert!(r.is_err());
        assert_eq!(relay.controls.counters.dropped.load(Ordering::Relaxed), 1);
    }

    #[tokio::test]
    async fn tcp_relay_paces_and_cuts() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let server = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let link = Link {
            rate: 1_000_000,
            ..Link::default()
        };
        let relay = tcp(
            "127.0.0.1:0".parse().unwrap(),
            server.local_addr().unwrap(),
            link,
        )
        .await
        .unwrap();
        let mut client = TcpStream::connect(relay.addr).await.unwrap();
        let (mut s, _) = server.accept().await.unwrap();
        let t0 = Instant::now();
        let data = vec![7u8; 300_000];
        let w = tokio::spawn(async move {
            client.write_all(&data).await.unwrap();
            client
        });
        let mut got = vec![0u8; 300_000];
        s.read_exact(&mut got).await.unwrap();
        let secs = t0.elapsed().as_secs_f64();
        assert!(secs > 0.15, "300 kB at 1 MB/s took only {secs}s");
        let mut client = w.await.unwrap();
        relay.change();
        let mut b = [0u8; 1];
        let r = tokio::time::timeout(Duration::from_secs(2), client.read(&mut b)).await;
        assert!(matches!(r, Ok(Ok(0)) | Ok(Err(_))), "connection cut: {r:?}");
    }
}
