//! Follows the HTTP/3 frames of one stream as its bytes pass, without buffering them: the
//! frame types and lengths tell [`super::h3_guard`] when a request head is complete and
//! when a frame would be larger than the limit, before h3 buffers any of it.
//!
//! They also cut what passes into pieces at frame boundaries ([`Frames::piece`]), which
//! keeps h3's own receive buffer from growing (see [`super::h3_guard`]).

/// Frame types (RFC 9114 section 7.2).
const DATA: u64 = 0x00;
const HEADERS: u64 = 0x01;
/// WebTransport's bidirectional stream signal: no length follows.
const WEBTRANSPORT_BI: u64 = 0x41;
/// Unidirectional stream type of the control stream.
const CONTROL: u64 = 0x00;

/// Why a stream was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The request head is over the limit: answer 431.
    HeadTooLarge,
    /// A frame after the head is over the limit.
    FrameTooLarge,
    /// The head did not arrive in time.
    Deadline,
}

/// Where a stream's frame walk is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Unidirectional stream: its type comes first.
    StreamType,
    /// Request stream, before the end of its first HEADERS frame.
    Head,
    /// Frames whose non-DATA members are bounded.
    Frames,
    /// Not framed (QPACK streams, unknown stream types, WebTransport): passed through.
    Raw,
}

/// Follows the HTTP/3 frames of one stream without buffering them.
#[derive(Debug)]
pub struct Frames {
    phase: Phase,
    limit: u64,
    /// A frame header (type and length varints) being assembled.
    header: [u8; 16],
    header_len: usize,
    /// Payload bytes of the current frame still to pass.
    remaining: u64,
    /// The current payload is the request's HEADERS: the head ends with it.
    heading: bool,
    /// The current payload is a DATA frame's.
    in_data: bool,
    /// Bytes of the head so far.
    head_bytes: u64,
}

impl Frames {
    pub fn new(phase: Phase, limit: u64) -> Frames {
        Frames {
            phase,
            limit,
            header: [0; 16],
            header_len: 0,
            remaining: 0,
            heading: false,
            in_data: false,
            head_bytes: 0,
        }
    }
    pub fn request(limit: u64) -> Frames {
        Frames::new(Phase::Head, limit)
    }
    pub fn uni(limit: u64) -> Frames {
        Frames::new(Phase::StreamType, limit)
    }

    pub fn in_head(&self) -> bool {
        self.phase == Phase::Head
    }

    /// Walks `data`; an error names the first violation.
    pub fn feed(&mut self, mut data: &[u8]) -> Result<(), Verdict> {
        while !data.is_empty() {
            let n = self.piece(data)?;
            match data.get(n..) {
                Some(rest) if n > 0 => data = rest,
                _ => break,
            }
        }
        Ok(())
    }

    /// Walks `data` up to the end of its first piece and returns that piece's length (at
    /// least 1 for a non-empty `data`); an error names the first violation. Pieces end at
    /// every frame boundary and between a DATA frame's header and its payload, so one piece
    /// is a DATA header, part of one DATA payload, or one whole other frame (or as much of
    /// it as `data` holds). Unframed streams are one piece.
    pub fn piece(&mut self, data: &[u8]) -> Result<usize, Verdict> {
        let mut i = 0;
        while i < data.len() {
            if self.phase == Phase::Raw {
                return Ok(data.len());
            }
            if self.remaining > 0 {
                let n = self.remaining.min((data.len() - i) as u64);
                self.remaining -= n;
                i += n as usize; // n <= data.len() - i
                if self.remaining == 0 && self.heading {
                    self.heading = false;
                    self.phase = Phase::Frames;
                }
                if self.remaining == 0 || self.in_data {
                    return Ok(i);
                }
                continue;
            }
            if self.header_len >= self.header.len() {
                // Cannot happen (two varints fit in 16 bytes); refuse rather than panic.
                return Err(Verdict::FrameTooLarge);
            }
            self.header[self.header_len] = data[i];
            self.header_len += 1;
            i += 1;
            self.parse_header()?;
            // A complete header (or stream type): a DATA payload or the next frame follows.
            if self.header_len == 0 && (self.in_data || self.remaining == 0) {
                return Ok(i);
            }
        }
        Ok(i)
    }

    /// Acts on the frame header (or stream type) collected so far, once complete.
    fn parse_header(&mut self) -> Result<(), Verdict> {
        let h = &self.header[..self.header_len];
        let Some((first, used)) = varint(h) else {
            return Ok(());
        };
        if self.phase == Phase::StreamType {
            self.header_len = 0;
            self.phase = if first == CONTROL {
                Phase::Frames
            } else {
                Phase::Raw
            };
            return Ok(());
        }
        if first == WEBTRANSPORT_BI && self.phase == Phase::Head {
            self.phase = Phase::Raw;
            return Ok(());
        }
        let Some((len, used2)) = varint(&h[used..]) else {
            return Ok(());
        };
        let header_bytes = (used + used2) as u64;
        self.header_len = 0;
        self.remaining = len;
        self.in_data = first == DATA;
        if first == DATA {
            if self.in_head() {
                self.head_bytes += header_bytes;
            }
            return Ok(());
        }
        if len > self.limit {
            return Err(if self.in_head() {
                Verdict::HeadTooLarge
            } else {
                Verdict::FrameTooLarge
            });
        }
        if self.in_head() {
            self.head_bytes += header_bytes + len;
            if self.head_bytes > self.limit {
                return Err(Verdict::HeadTooLarge);
            }
            if first == HEADERS {
                if len == 0 {
                    self.phase = Phase::Frames;
                } else {
                    self.heading = true;
                }
            }
        }
        Ok(())
    }
}

/// A QUIC varint at the start of `b`: (value, bytes used), or `None` if incomplete.
fn varint(b: &[u8]) -> Option<(u64, usize)> {
    let first = *b.first()?;
    let len = 1usize << (first >> 6);
    if b.len() < len {
        return None;
    }
    let mut v = u64::from(first & 0x3f);
    for byte in &b[1..len] {
        v = (v << 8) | u64::from(*byte);
    }
    Some((v, len))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(ty: u8, len: usize) -> Vec<u8> {
        let mut f = vec![ty];
        f.extend_from_slice(&(len as u32 | 0x8000_0000).to_be_bytes());
        f.extend(std::iter::repeat_n(0u8, len));
        f
    }

    #[test]
    fn head_ends_after_the_first_headers_frame_even_byte_by_byte() {
        let mut f = Frames::request(100);
        let mut bytes = vec![0x21, 0x02, 9, 9]; // a reserved frame type first
        bytes.extend(frame(0x01, 50));
        for (i, b) in bytes.iter().enumerate() {
            assert!(f.in_head(), "still in the head at byte {i}");
            f.feed(&[*b]).unwrap();
        }
        assert!(!f.in_head());
        // DATA of any length passes after the head.
        let mut data = vec![0x00, 0xc0, 0, 0, 0, 0x10, 0, 0, 0];
        data.extend([1u8; 1000]);
        f.feed(&data).unwrap();
    }

    #[test]
    fn oversized_frames_are_named_before_their_payload() {
        let mut f = Frames::request(100);
        assert_eq!(f.feed(&frame(0x01, 101)[..5]), Err(Verdict::HeadTooLarge));
        // Many small frames before HEADERS add up.
        let mut f = Frames::request(100);
        let grease: Vec<u8> = (0..20).flat_map(|_| vec![0x21, 0x04, 1, 2, 3, 4]).collect();
        assert_eq!(f.feed(&grease), Err(Verdict::HeadTooLarge));
        // After the head: trailers or unknown frames over the limit.
        let mut f = Frames::request(100);
        f.feed(&frame(0x01, 10)).unwrap();
        assert_eq!(f.feed(&frame(0x21, 200)), Err(Verdict::FrameTooLarge));
    }

    #[test]
    fn only_the_control_stream_is_followed_among_unidirectional_streams() {
        let mut control = Frames::uni(100);
        control.feed(&[0x00]).unwrap();
        assert_eq!(
            control.feed(&frame(0x04, 1000)),
            Err(Verdict::FrameTooLarge)
        );
        let mut qpack = Frames::uni(100);
        qpack.feed(&[0x02]).unwrap();
        qpack.feed(&[0xffu8; 5000]).unwrap();
    }

    #[test]
    fn pieces_end_at_frame_boundaries_and_after_data_headers() {
        let mut f = Frames::request(100);
        let mut bytes = frame(0x01, 10); // HEADERS: 5 + 10
        bytes.extend(frame(0x00, 1000)); // DATA header 5, payload 1000
        bytes.extend(frame(0x00, 0)); // empty DATA
        bytes.extend(frame(0x21, 3)); // a reserved frame: 5 + 3
        bytes.extend(frame(0x00, 7));
        let mut pieces = Vec::new();
        let mut rest = &bytes[..];
        while !rest.is_empty() {
            let n = f.piece(rest).unwrap();
            pieces.push(n);
            rest = &rest[n..];
        }
        assert_eq!(pieces, [15, 5, 1000, 5, 8, 5, 7]);
        // Cut short by the end of what arrived, a DATA payload continues as its own piece.
        let mut f = Frames::request(100);
        f.feed(&frame(0x01, 10)).unwrap();
        let data = frame(0x00, 1000);
        assert_eq!(f.piece(&data[..3]), Ok(3)); // part of a header
        assert_eq!(f.piece(&data[3..100]), Ok(2)); // its rest
        assert_eq!(f.piece(&data[5..100]), Ok(95));
        let mut next = data[100..].to_vec();
        next.extend(frame(0x00, 4));
        assert_eq!(f.piece(&next), Ok(905));
        // Unframed streams pass whole.
        let mut qpack = Frames::uni(100);
        assert_eq!(qpack.piece(&[0x02]), Ok(1));
        assert_eq!(qpack.piece(&[0xff; 300]), Ok(300));
    }

    #[test]
    fn varints_of_every_width() {
        assert_eq!(varint(&[0x25]), Some((37, 1)));
        assert_eq!(varint(&[0x7b, 0xbd]), Some((15293, 2)));
        assert_eq!(varint(&[0x9d, 0x7f, 0x3e, 0x7d]), Some((494878333, 4)));
        assert_eq!(
            varint(&[0xc2, 0x19, 0x7c, 0x5e, 0xff, 0x14, 0xe8, 0x8c]),
            Some((151288809941952652, 8))
        );
        assert_eq!(varint(&[0x9d, 0x7f]), None);
        assert_eq!(varint(&[]), None);
    }
}
