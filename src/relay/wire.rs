//! A packet-level link between two network namespaces, for benchmarks that need TCP and
//! QUIC to cross the same emulated link (this kernel has no netem).
//!
//! Each namespace holds a TUN device (made by the caller, e.g. `ip tuntap add mode tun`,
//! addressed and up). One process attaches to both and forwards every IP packet between
//! them, per direction: random loss, then a rate limit with a bounded queue (a packet that
//! would wait longer than the queue allows is dropped, as a router's tail drop), then a
//! fixed one-way delay. Order is kept. Because whole IP packets cross, TCP sees the real
//! RTT, loss and queueing end to end, which a relay that terminates TCP cannot give.
//!
//! Threads, not tasks: two per direction (reader and delayed writer), stopped through
//! [`Wire::stop`] or on drop. Linux only; needs CAP_NET_ADMIN and CAP_SYS_ADMIN (setns).

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Link properties, the same in both directions.
#[derive(Debug, Clone, Copy)]
pub struct WireLink {
    /// One-way delay.
    pub delay: Duration,
    /// Bytes per second; 0 = unlimited.
    pub rate: u64,
    /// Share of packets dropped at random, 0..1.
    pub loss: f64,
    /// Longest a packet may wait for the rate limit before it is dropped instead.
    pub queue: Duration,
}

/// One end: a TUN device inside a network namespace.
#[derive(Debug, Clone)]
pub struct End {
    /// A name under /run/netns (as `ip netns add` makes) or a path such as /proc/PID/ns/net.
    pub netns: String,
    pub dev: String,
}

/// Counts for one direction.
#[derive(Debug, Default)]
pub struct DirStats {
    pub forwarded: AtomicU64,
    pub bytes: AtomicU64,
    /// Dropped at random (the loss rate).
    pub lost: AtomicU64,
    /// Dropped because the rate limiter's queue was full.
    pub overflow: AtomicU64,
    /// Dropped during a blackout.
    pub blacked_out: AtomicU64,
}

impl DirStats {
    pub fn summary(&self) -> String {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        format!(
            "forwarded {} ({} bytes), lost {}, queue drops {}, blackout drops {}",
            g(&self.forwarded),
            g(&self.bytes),
            g(&self.lost),
            g(&self.overflow),
            g(&self.blacked_out)
        )
    }
}

/// A running wire; dropping it stops it.
pub struct Wire {
    /// [a -> b, b -> a].
    pub stats: Arc<[DirStats; 2]>,
    blackout: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl Wire {
    /// Nothing passes while `on`.
    pub fn blackout(&self, on: bool) {
        self.blackout.store(on, Ordering::SeqCst);
    }

    /// Stops forwarding and waits for the threads.
    pub fn stop(mut self) {
        self.halt();
    }

    fn halt(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl Drop for Wire {
    fn drop(&mut self) {
        self.halt();
    }
}

/// Rate limit with a bounded queue: when each packet leaves the limiter.
#[derive(Debug)]
pub struct Shaper {
    rate: u64,
    queue: Duration,
    free_at: Option<Instant>,
}

impl Shaper {
    pub fn new(rate: u64, queue: Duration) -> Shaper {
        Shaper {
            rate,
            queue,
            free_at: None,
        }
    }

    /// A packet of `len` bytes arriving at `now`: when it has been sent, or `None` when the
    /// queue ahead of it is longer than the limit (tail drop).
    pub fn admit(&mut self, now: Instant, len: usize) -> Option<Instant> {
        if self.rate == 0 {
            return Some(now);
        }
        let start = self.free_at.map_or(now, |f| f.max(now));
        if start - now > self.queue {
            return None;
        }
        let done = start + Duration::from_secs_f64(len as f64 / self.rate as f64);
        self.free_at = Some(done);
        Some(done)
    }
}

const TUNSETIFF: libc::c_ulong = 0x4004_54ca;
const IFF_TUN: libc::c_short = 0x0001;
const IFF_NO_PI: libc::c_short = 0x1000;

#[repr(C)]
struct IfReq {
    name: [u8; libc::IFNAMSIZ],
    flags: libc::c_short,
    _pad: [u8; 22],
}

/// Attaches to TUN device `end.dev` inside `end.netns`. setns changes only the calling
/// thread's namespace, so this runs on a short-lived thread; the descriptor stays bound to
/// the device in that namespace.
fn open_tun(end: &End) -> std::io::Result<File> {
    let end = end.clone();
    std::thread::spawn(move || -> std::io::Result<File> {
        let path = if end.netns.contains('/') {
            end.netns.clone()
        } else {
            format!("/run/netns/{}", end.netns)
        };
        let ns =
            File::open(&path).map_err(|e| std::io::Error::new(e.kind(), format!("{path}: {e}")))?;
        // SAFETY: setns on a descriptor we own; affects only this thread.
        if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        let tun = OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/net/tun")?;
        let name = end.dev.as_bytes();
        if name.is_empty() || name.len() >= libc::IFNAMSIZ {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("bad device name {:?}", end.dev),
            ));
        }
        let mut req = IfReq {
            name: [0; libc::IFNAMSIZ],
            flags: IFF_TUN | IFF_NO_PI,
            _pad: [0; 22],
        };
        req.name[..name.len()].copy_from_slice(name);
        // SAFETY: TUNSETIFF reads and writes an ifreq, which IfReq lays out (40 bytes).
        if unsafe { libc::ioctl(tun.as_raw_fd(), TUNSETIFF, &mut req as *mut IfReq) } != 0 {
            let e = std::io::Error::last_os_error();
            return Err(std::io::Error::new(
                e.kind(),
                format!("attach to {} in {}: {e}", end.dev, end.netns),
            ));
        }
        Ok(tun)
    })
    .join()
    .map_err(|_| std::io::Error::other("tun thread panicked"))?
}

/// Waits up to 200 ms for `fd` to be readable.
fn readable(fd: &File) -> bool {
    let mut p = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd.
    unsafe { libc::poll(&mut p, 1, 200) > 0 }
}

/// Forwards packets read from `from` into `to`, shaped by `link`.
fn direction(
    from: Arc<File>,
    to: Arc<File>,
    link: WireLink,
    stats: Arc<[DirStats; 2]>,
    dir: usize,
    blackout: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
) -> [JoinHandle<()>; 2] {
    let (tx, rx) = mpsc::channel::<(Instant, Vec<u8>)>();
    let st = stats.clone();
    let stop_r = stop.clone();
    let reader = std::thread::spawn(move || {
        let s = &st[dir];
        let mut shaper = Shaper::new(link.rate, link.queue);
        let mut buf = vec![0u8; 65_536];
        while !stop_r.load(Ordering::Relaxed) {
            if !readable(&from) {
                continue;
            }
            let n = match (&*from).read(&mut buf) {
                Ok(0) => return,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(_) => return,
            };
            if blackout.load(Ordering::Relaxed) {
                s.blacked_out.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            if link.loss > 0.0 && rand::random::<f64>() < link.loss {
                s.lost.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            let Some(sent) = shaper.admit(Instant::now(), n) else {
                s.overflow.fetch_add(1, Ordering::Relaxed);
                continue;
            };
            if tx.send((sent + link.delay, buf[..n].to_vec())).is_err() {
                return;
            }
        }
    });
    let writer = std::thread::spawn(move || {
        let s = &stats[dir];
        loop {
            let (due, pkt) = match rx.recv_timeout(Duration::from_millis(200)) {
                Ok(p) => p,
                Err(mpsc::RecvTimeoutError::Timeout) if !stop.load(Ordering::Relaxed) => continue,
                Err(_) => return,
            };
            let now = Instant::now();
            if due > now {
                std::thread::sleep(due - now);
            }
            // A write fails only when the device is down; the packet is then lost, as on a wire.
            if (&*to).write(&pkt).is_ok() {
                s.forwarded.fetch_add(1, Ordering::Relaxed);
                s.bytes.fetch_add(pkt.len() as u64, Ordering::Relaxed);
            }
        }
    });
    [reader, writer]
}

/// Starts forwarding between the TUN devices `a` and `b`.
pub fn start(a: &End, b: &End, link: WireLink) -> std::io::Result<Wire> {
    let ta = Arc::new(open_tun(a)?);
    let tb = Arc::new(open_tun(b)?);
    let stats: Arc<[DirStats; 2]> = Arc::new(Default::default());
    let blackout = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let mut threads = Vec::with_capacity(4);
    threads.extend(direction(
        ta.clone(),
        tb.clone(),
        link,
        stats.clone(),
        0,
        blackout.clone(),
        stop.clone(),
    ));
    threads.extend(direction(
        tb,
        ta,
        link,
        stats.clone(),
        1,
        blackout.clone(),
        stop.clone(),
    ));
    Ok(Wire {
        stats,
        blackout,
        stop,
        threads,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ifreq_is_the_kernels_size() {
        assert_eq!(std::mem::size_of::<IfReq>(), 40);
    }

    #[test]
    fn unlimited_rate_sends_at_once() {
        let mut s = Shaper::new(0, Duration::ZERO);
        let now = Instant::now();
        assert_eq!(s.admit(now, 1500), Some(now));
        assert_eq!(s.admit(now, 1500), Some(now));
    }

    #[test]
    fn packets_leave_at_the_rate_and_queue_behind_each_other() {
        // 1,000,000 B/s: 1000 bytes take 1 ms.
        let mut s = Shaper::new(1_000_000, Duration::from_millis(10));
        let t0 = Instant::now();
        assert_eq!(s.admit(t0, 1000), Some(t0 + Duration::from_millis(1)));
        assert_eq!(s.admit(t0, 1000), Some(t0 + Duration::from_millis(2)));
        // After the link went idle, a packet starts when it arrives.
        let later = t0 + Duration::from_millis(50);
        assert_eq!(
            s.admit(later, 500),
            Some(later + Duration::from_micros(500))
        );
    }

    #[test]
    fn a_full_queue_drops_the_arrival_and_recovers() {
        let mut s = Shaper::new(1_000_000, Duration::from_millis(5));
        let t0 = Instant::now();
        let mut sent = 0;
        for _ in 0..20 {
            if s.admit(t0, 1000).is_some() {
                sent += 1;
            }
        }
        // Packets may start while the wait ahead is <= 5 ms: the 1st at 0 ms .. the 6th at 5 ms.
        assert_eq!(sent, 6);
        let drained = t0 + Duration::from_millis(6);
        assert!(s.admit(drained, 1000).is_some());
    }
}
