//! `TCP_INFO` -> [`Readings`]: the kernel's view of a TCP connection (RTT, congestion
//! window, retransmissions, delivery rate), read with one `getsockopt` per sample.

use crate::core::readings::{Readings, Source};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::time::Duration;

/// The leading part of Linux's `struct tcp_info` (include/uapi/linux/tcp.h) up to
/// `tcpi_delivery_rate` (Linux 4.9+); older kernels fill less and the rate stays 0.
#[repr(C)]
#[derive(Default)]
struct TcpInfo {
    state: u8,
    ca_state: u8,
    retransmits: u8,
    probes: u8,
    backoff: u8,
    options: u8,
    wscale: u8,
    app_limited: u8,
    rto: u32,
    ato: u32,
    snd_mss: u32,
    rcv_mss: u32,
    unacked: u32,
    sacked: u32,
    lost: u32,
    retrans: u32,
    fackets: u32,
    last_data_sent: u32,
    last_ack_sent: u32,
    last_data_recv: u32,
    last_ack_recv: u32,
    pmtu: u32,
    rcv_ssthresh: u32,
    rtt: u32,
    rttvar: u32,
    snd_ssthresh: u32,
    snd_cwnd: u32,
    advmss: u32,
    reordering: u32,
    rcv_rtt: u32,
    rcv_space: u32,
    total_retrans: u32,
    pacing_rate: u64,
    max_pacing_rate: u64,
    bytes_acked: u64,
    bytes_received: u64,
    segs_out: u32,
    segs_in: u32,
    notsent_bytes: u32,
    min_rtt: u32,
    data_segs_in: u32,
    data_segs_out: u32,
    delivery_rate: u64,
}

/// Reads `TCP_INFO` from a connection's socket through its own duplicate of the
/// descriptor (so it can never read a reused descriptor number; the socket closes when
/// both the connection and the last request holding the probe are done).
pub struct TcpSource {
    fd: OwnedFd,
}

impl TcpSource {
    pub fn new(fd: OwnedFd) -> TcpSource {
        TcpSource { fd }
    }
}

fn read(fd: RawFd) -> Option<TcpInfo> {
    let mut info = TcpInfo::default();
    let mut len = std::mem::size_of::<TcpInfo>() as libc::socklen_t;
    // SAFETY: `info` is a plain repr(C) struct of integers, valid for `len` bytes; the
    // kernel writes at most `len` bytes and reports how many in `len`.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            (&mut info as *mut TcpInfo).cast(),
            &mut len,
        )
    };
    (rc == 0).then_some(info)
}

impl Source for TcpSource {
    fn read(&self) -> Option<Readings> {
        let i = read(self.fd.as_raw_fd())?;
        // For a server receiving an upload the receiver-side RTT estimate is the one that
        // moves; take the larger of the two.
        let rtt = i.rtt.max(i.rcv_rtt);
        Some(Readings {
            rtt: Duration::from_micros(u64::from(rtt)),
            cwnd: u64::from(i.snd_cwnd) * u64::from(i.snd_mss),
            sent_packets: u64::from(i.segs_out),
            lost_packets: u64::from(i.total_retrans),
            bytes_in: i.bytes_received,
            bytes_out: i.bytes_acked,
            delivery_rate: (i.delivery_rate > 0).then_some(i.delivery_rate),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::os::fd::AsFd;

    #[test]
    fn reads_a_live_loopback_connection() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let mut c = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (mut s, _) = l.accept().unwrap();
        c.write_all(&[7u8; 100_000]).unwrap();
        let mut buf = vec![0u8; 100_000];
        s.read_exact(&mut buf).unwrap();
        let src = TcpSource::new(s.as_fd().try_clone_to_owned().unwrap());
        let r = src.read().expect("TCP_INFO");
        assert_eq!(r.bytes_in, 100_000);
        assert!(r.cwnd > 0);
        let not_tcp = TcpSource::new(std::fs::File::open("/dev/null").unwrap().into());
        assert!(not_tcp.read().is_none());
    }
}
