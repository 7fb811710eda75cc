//! quinn's connection statistics -> [`Readings`]: path RTT, congestion window, lost and
//! sent packets, UDP bytes in and out. Read through a clone of the `quinn::Connection`
//! kept beside the h3 connection (h3-quinn does not expose it).

use crate::core::readings::{Readings, Source};

pub struct QuicSource(pub quinn::Connection);

impl Source for QuicSource {
    fn read(&self) -> Option<Readings> {
        if self.0.close_reason().is_some() {
            return None;
        }
        let s = self.0.stats();
        Some(Readings {
            rtt: s.path.rtt,
            cwnd: s.path.cwnd,
            sent_packets: s.path.sent_packets,
            lost_packets: s.path.lost_packets,
            bytes_in: s.udp_rx.bytes,
            bytes_out: s.udp_tx.bytes,
            delivery_rate: None,
        })
    }
}
