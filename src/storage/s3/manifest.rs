//! The state object of a resumable upload kept in the bucket (`<prefix>.xferd-parts/<id>/
//! state`): what [`super::parts::S3Parts`] needs to continue the upload on any instance.
//!
//! One object holds a small text header and, after it, the tail (the bytes past the last
//! uploaded part, shorter than the session's part size): one PutObject makes both durable
//! at once. The header lists the session's part size (every part but the last has exactly
//! that size, as Cloudflare R2 requires; a state written before it was recorded has none,
//! and its parts are numbered by 5 MiB), the multipart upload id, every uploaded part
//! (number, first byte, length, ETag), the SHA-256 state of the bytes in parts (the `sha2`
//! serialized state: parts cannot be read back before completion, so the digest is carried
//! along) and, once the session is sealed, its length (its bytes are then the object
//! `data` beside `state`). Offsets and ETags come from here only, never from ListParts
//! (eventually consistent on several stores: tusd #376, #497).
//!
//! ```text
//! xferd-parts 1
//! psize <part size>
//! key <hex of the object key the multipart upload is for>
//! upload <hex of the upload id>
//! sha <hex of the serialized SHA-256 state>
//! part <number> <first byte> <length> <hex of the ETag>
//! prev <0|1>
//! sealed <length>
//! tail <length>
//!
//! <tail bytes>
//! ```

use super::MIN_PART_SIZE;
use crate::storage::store::{Result, StoreError};
use bytes::Bytes;
use sha2::digest::common::hazmat::{SerializableState, SerializedState};
use sha2::Sha256;
use std::io;

const MAGIC: &str = "xferd-parts 1";

/// One uploaded part.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PartRec {
    pub number: u32,
    pub start: u64,
    pub len: u64,
    pub etag: String,
}

/// A decoded state object.
#[derive(Debug, Clone, Default)]
pub(crate) struct Manifest {
    /// The size of every part but the last (`None`: not chosen yet, or a state written
    /// before part sizes were recorded).
    pub psize: Option<u64>,
    /// The full object key the multipart upload is for (the session's target).
    pub target: Option<String>,
    pub upload_id: Option<String>,
    pub parts: Vec<PartRec>,
    /// Serialized SHA-256 state of bytes `[0, parts_end)` (`None`: no part yet).
    pub sha: Option<Vec<u8>>,
    /// Whether `prev` holds the state before the last part was added (for a rewind).
    pub has_prev: bool,
    /// The session's length once it is sealed (its bytes are the object `data`).
    pub sealed: Option<u64>,
    pub tail: Bytes,
}

fn bad(what: &str) -> StoreError {
    StoreError::Other(io::Error::new(
        io::ErrorKind::InvalidData,
        format!("S3 session state: {what}"),
    ))
}

impl Manifest {
    /// The end of the bytes in parts (where the tail starts).
    pub fn parts_end(&self) -> u64 {
        self.parts.last().map_or(0, |p| p.start + p.len)
    }

    /// The end of the stored bytes.
    pub fn end(&self) -> u64 {
        self.parts_end() + self.tail.len() as u64
    }

    /// What part numbers count in: part `n` starts at `(n - 1) x grain`.
    pub fn grain(&self) -> u64 {
        self.psize.unwrap_or(MIN_PART_SIZE)
    }

    /// The running hash of the bytes in parts.
    pub fn hasher(&self) -> Result<Sha256> {
        match &self.sha {
            None => Ok(Sha256::default()),
            Some(raw) => {
                let state = SerializedState::<Sha256>::try_from(raw.as_slice())
                    .map_err(|_| bad("hash state size"))?;
                Sha256::deserialize(&state).map_err(|_| bad("hash state"))
            }
        }
    }

    pub fn set_hasher(&mut self, sha: &Sha256) {
        self.sha = Some(sha.serialize().to_vec());
    }

    pub fn encode(&self) -> Bytes {
        let mut h = format!("{MAGIC}\n");
        if let Some(p) = self.psize {
            h.push_str(&format!("psize {p}\n"));
        }
        if let Some(t) = &self.target {
            h.push_str(&format!("key {}\n", hex::encode(t)));
        }
        if let Some(id) = &self.upload_id {
            h.push_str(&format!("upload {}\n", hex::encode(id)));
        }
        if let Some(sha) = &self.sha {
            h.push_str(&format!("sha {}\n", hex::encode(sha)));
        }
        for p in &self.parts {
            h.push_str(&format!(
                "part {} {} {} {}\n",
                p.number,
                p.start,
                p.len,
                hex::encode(&p.etag)
            ));
        }
        h.push_str(&format!("prev {}\n", u8::from(self.has_prev)));
        if let Some(n) = self.sealed {
            h.push_str(&format!("sealed {n}\n"));
        }
        h.push_str(&format!("tail {}\n\n", self.tail.len()));
        let mut out = Vec::with_capacity(h.len() + self.tail.len());
        out.extend_from_slice(h.as_bytes());
        out.extend_from_slice(&self.tail);
        Bytes::from(out)
    }

    pub fn decode(raw: Bytes) -> Result<Manifest> {
        let split = raw
            .windows(2)
            .position(|w| w == b"\n\n")
            .ok_or_else(|| bad("no header end"))?;
        let header = std::str::from_utf8(&raw[..split]).map_err(|_| bad("header not UTF-8"))?;
        let mut lines = header.lines();
        if lines.next() != Some(MAGIC) {
            return Err(bad("unknown format"));
        }
        let unhex = |s: Option<&str>| -> Result<Vec<u8>> {
            hex::decode(s.ok_or_else(|| bad("missing field"))?).map_err(|_| bad("bad hex"))
        };
        let num = |s: Option<&str>| -> Result<u64> {
            s.and_then(|s| s.parse().ok())
                .ok_or_else(|| bad("bad number"))
        };
        let mut m = Manifest::default();
        let mut tail_len = None;
        for line in lines {
            let mut f = line.split(' ');
            match f.next() {
                Some("upload") => {
                    let id = String::from_utf8(unhex(f.next())?).map_err(|_| bad("upload id"))?;
                    m.upload_id = Some(id);
                }
                Some("key") => {
                    let t = String::from_utf8(unhex(f.next())?).map_err(|_| bad("key"))?;
                    m.target = Some(t);
                }
                Some("sha") => m.sha = Some(unhex(f.next())?),
                Some("part") => {
                    let number = u32::try_from(num(f.next())?).map_err(|_| bad("part number"))?;
                    let (start, len) = (num(f.next())?, num(f.next())?);
                    let etag = String::from_utf8(unhex(f.next())?).map_err(|_| bad("etag"))?;
                    if start != m.parts_end() {
                        return Err(bad("parts are not contiguous"));
                    }
                    m.parts.push(PartRec {
                        number,
                        start,
                        len,
                        etag,
                    });
                }
                Some("prev") => m.has_prev = f.next() == Some("1"),
                Some("psize") => {
                    let p = num(f.next())?;
                    if p < MIN_PART_SIZE {
                        return Err(bad("part size below the minimum"));
                    }
                    m.psize = Some(p);
                }
                Some("sealed") => m.sealed = Some(num(f.next())?),
                Some("tail") => tail_len = Some(num(f.next())?),
                _ => return Err(bad("unknown line")),
            }
        }
        let tail = raw.slice(split + 2..);
        if tail_len != Some(tail.len() as u64) {
            return Err(bad("tail length"));
        }
        m.tail = tail;
        Ok(m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::Digest;

    #[test]
    fn a_state_round_trips_with_its_hash() {
        let mut sha = Sha256::new();
        sha.update(b"abc");
        let mut m = Manifest {
            psize: Some(6 << 20),
            sealed: Some(19),
            target: Some("a/b c".into()),
            upload_id: Some("up/load id=1".into()),
            parts: vec![
                PartRec {
                    number: 1,
                    start: 0,
                    len: 3,
                    etag: "\"e1\"".into(),
                },
                PartRec {
                    number: 2,
                    start: 3,
                    len: 5,
                    etag: "\"e2-1\"".into(),
                },
            ],
            sha: None,
            has_prev: true,
            tail: Bytes::from_static(b"tail\n\nbytes"),
        };
        m.set_hasher(&sha);
        let back = Manifest::decode(m.encode()).unwrap();
        assert_eq!(back.upload_id, m.upload_id);
        assert_eq!(back.target, m.target);
        assert_eq!(back.parts, m.parts);
        assert!(back.has_prev);
        assert_eq!(
            (back.psize, back.sealed, back.grain()),
            (Some(6 << 20), Some(19), 6 << 20)
        );
        assert_eq!(
            Manifest::default().grain(),
            MIN_PART_SIZE,
            "states without a size"
        );
        assert_eq!(&back.tail[..], b"tail\n\nbytes");
        assert_eq!((back.parts_end(), back.end()), (8, 19));
        let mut h = back.hasher().unwrap();
        h.update(b"def");
        assert_eq!(h.finalize(), Sha256::digest(b"abcdef"));
    }

    #[test]
    fn damaged_states_are_errors_not_panics() {
        let good = Manifest::default().encode();
        assert!(Manifest::decode(good.clone()).is_ok());
        let mut longer = good.to_vec();
        longer.push(b'x');
        for raw in [
            Bytes::new(),
            Bytes::from_static(b"xferd-parts 2\ntail 0\n\n"),
            Bytes::from_static(b"xferd-parts 1\npart 1 5 3 00\ntail 0\n\n"),
            Bytes::from_static(b"xferd-parts 1\nsha zz\ntail 0\n\n"),
            Bytes::from_static(b"xferd-parts 1\npsize 1024\ntail 0\n\n"),
            Bytes::from(longer),
        ] {
            assert!(Manifest::decode(raw).is_err());
        }
        let m = Manifest {
            sha: Some(vec![1, 2, 3]),
            ..Manifest::default()
        };
        assert!(m.hasher().is_err());
    }
}
