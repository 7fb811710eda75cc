//! The UDP socket under the QUIC endpoint: bound with large buffers (what a burst or a flood
//! has to fill before datagrams are dropped), forced past the kernel's cap where the process
//! may.

use std::net::SocketAddr;

/// UDP socket settings.
#[derive(Debug, Clone, Copy)]
pub struct UdpTuning {
    pub recv_buffer: usize,
    pub send_buffer: usize,
}

/// Binds a UDP socket with the requested buffer sizes; returns the socket and the sizes
/// actually granted (as Linux reports them: twice what was set, the half for its own
/// bookkeeping). The kernel caps `SO_RCVBUF`/`SO_SNDBUF` at `net.core.rmem_max`/`wmem_max`
/// (208 KiB by default, 4 MiB on the machines here); a process with `CAP_NET_ADMIN` (xferd
/// run as root to bind 443) gets the configured sizes through `SO_RCVBUFFORCE`/
/// `SO_SNDBUFFORCE` instead. The receive buffer is what a flood has to fill before a good
/// client's datagram is dropped: under interop/hostile quic-initials (1.3 million junk
/// Initials in 12 s beside 3,200 half-open handshakes) the server's socket dropped up to
/// 6,700 datagrams with 4 MiB, and 0-468 with the configured 8 MiB.
pub fn bind_udp(
    addr: SocketAddr,
    t: UdpTuning,
) -> std::io::Result<(std::net::UdpSocket, usize, usize)> {
    use socket2::{Domain, Socket, Type};
    let sock = Socket::new(
        Domain::for_address(addr),
        Type::DGRAM,
        Some(socket2::Protocol::UDP),
    )?;
    if addr.is_ipv6() {
        let _ = sock.set_only_v6(false);
    }
    // Past the kernel's cap where the process may, else as far as the cap allows.
    let _ = force_buffer(&sock, Buffer::Recv, t.recv_buffer)
        .or_else(|_| sock.set_recv_buffer_size(t.recv_buffer));
    let _ = force_buffer(&sock, Buffer::Send, t.send_buffer)
        .or_else(|_| sock.set_send_buffer_size(t.send_buffer));
    sock.bind(&addr.into())?;
    sock.set_nonblocking(true)?;
    let granted = (sock.recv_buffer_size()?, sock.send_buffer_size()?);
    Ok((sock.into(), granted.0, granted.1))
}

#[derive(Clone, Copy)]
enum Buffer {
    Recv,
    Send,
}

/// Sets a buffer's size ignoring the kernel's cap (`SO_RCVBUFFORCE`/`SO_SNDBUFFORCE`): an
/// error without `CAP_NET_ADMIN` (EPERM), and off Linux.
fn force_buffer(sock: &socket2::Socket, which: Buffer, size: usize) -> std::io::Result<()> {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        let name = match which {
            Buffer::Recv => libc::SO_RCVBUFFORCE,
            Buffer::Send => libc::SO_SNDBUFFORCE,
        };
        let value = libc::c_int::try_from(size).unwrap_or(libc::c_int::MAX);
        // SAFETY: a valid socket descriptor and a c_int option value of the stated size.
        let rc = unsafe {
            libc::setsockopt(
                sock.as_raw_fd(),
                libc::SOL_SOCKET,
                name,
                (&value as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if rc == 0 {
            Ok(())
        } else {
            Err(std::io::Error::last_os_error())
        }
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = (sock, which, size);
        Err(std::io::ErrorKind::Unsupported.into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sysctl(name: &str) -> usize {
        std::fs::read_to_string(format!("/proc/sys/net/core/{name}"))
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    }

    /// Whether this process has CAP_NET_ADMIN (bit 12 of the effective set).
    fn net_admin() -> bool {
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        let eff = status
            .lines()
            .find_map(|l| l.strip_prefix("CapEff:"))
            .unwrap()
            .trim();
        u64::from_str_radix(eff, 16).unwrap() & (1 << 12) != 0
    }

    #[test]
    fn buffers_above_the_kernel_cap_are_forced_where_the_process_may() {
        let (rmax, wmax) = (sysctl("rmem_max"), sysctl("wmem_max"));
        let want = UdpTuning {
            recv_buffer: 2 * rmax + 4096,
            send_buffer: 2 * wmax + 4096,
        };
        let (_sock, rx, tx) = bind_udp("127.0.0.1:0".parse().unwrap(), want).unwrap();
        if net_admin() {
            assert_eq!((rx / 2, tx / 2), (want.recv_buffer, want.send_buffer));
        } else {
            assert_eq!((rx / 2, tx / 2), (rmax, wmax), "capped, as granted");
        }
        // Below the cap the size set is the size granted, forced or not.
        let small = UdpTuning {
            recv_buffer: 64 << 10,
            send_buffer: 64 << 10,
        };
        let (_sock, rx, tx) = bind_udp("127.0.0.1:0".parse().unwrap(), small).unwrap();
        assert_eq!((rx / 2, tx / 2), (64 << 10, 64 << 10));
    }
}
