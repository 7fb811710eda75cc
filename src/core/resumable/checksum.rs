//! Per-request checksums (tus `Upload-Checksum: <algo> <base64>`): sha1 (mandatory in tus),
//! sha256 and md5, given as a header or, with tus checksum-trailer, as a trailer field after
//! the body (then all three are computed, since the algorithm is named only at the end);
//! and the whole-file digest (`Repr-Digest: sha-256=:<base64>:`, RFC 9530).

use base64::Engine as _;
use sha2::Digest;

/// Algorithms offered in `Tus-Checksum-Algorithm`.
pub const ALGORITHMS: &str = "sha1,sha256,md5";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChecksumError {
    #[error("unsupported checksum algorithm `{0}`")]
    Unsupported(String),
    #[error("malformed checksum header")]
    Malformed,
    #[error("the Upload-Checksum trailer announced in `Trailer` did not arrive")]
    MissingTrailer,
}

/// A running hash of one of the supported algorithms.
#[derive(Clone)]
pub enum Hasher {
    Sha1(sha1::Sha1),
    Sha256(sha2::Sha256),
    Md5(md5::Md5),
    /// Every algorithm at once (the trailer names one only after the body).
    All(Box<(sha1::Sha1, sha2::Sha256, md5::Md5)>),
}

impl Hasher {
    pub fn update(&mut self, data: &[u8]) {
        match self {
            Hasher::Sha1(h) => h.update(data),
            Hasher::Sha256(h) => h.update(data),
            Hasher::Md5(h) => h.update(data),
            Hasher::All(b) => {
                b.0.update(data);
                b.1.update(data);
                b.2.update(data);
            }
        }
    }
    pub fn finish(self) -> Vec<u8> {
        match self {
            Hasher::Sha1(h) => h.finalize().to_vec(),
            Hasher::Sha256(h) => h.finalize().to_vec(),
            Hasher::Md5(h) => h.finalize().to_vec(),
            Hasher::All(b) => b.1.finalize().to_vec(),
        }
    }
    /// The digest for `algorithm` (as [`Expected::algorithm`] spells it).
    pub fn finish_as(self, algorithm: &str) -> Vec<u8> {
        match (self, algorithm) {
            (Hasher::All(b), "sha1") => b.0.finalize().to_vec(),
            (Hasher::All(b), "md5") => b.2.finalize().to_vec(),
            (other, _) => other.finish(),
        }
    }
}

/// Where a request's expected checksum comes from.
#[derive(Clone)]
pub enum Wanted {
    Header(Expected),
    /// Announced with `Trailer: Upload-Checksum`; read from the slot after the body.
    Trailer(crate::core::body::Trailers),
}

impl Wanted {
    pub fn hasher(&self) -> Hasher {
        match self {
            Wanted::Header(e) => e.hasher(),
            Wanted::Trailer(_) => Hasher::All(Box::default()),
        }
    }

    /// After the body ended: whether `hash` matches what the client said.
    pub fn verify(&self, hash: Hasher) -> Result<bool, ChecksumError> {
        let expected = match self {
            Wanted::Header(e) => e.clone(),
            Wanted::Trailer(slot) => {
                let value = slot
                    .lock()
                    .ok()
                    .and_then(|g| {
                        g.as_ref()?
                            .get("upload-checksum")?
                            .to_str()
                            .ok()
                            .map(str::to_string)
                    })
                    .ok_or(ChecksumError::MissingTrailer)?;
                Expected::parse_tus(&value)?
            }
        };
        Ok(expected.matches(&hash.finish_as(&expected.algorithm)))
    }
}

/// An expected checksum for the bytes of one request.
#[derive(Clone)]
pub struct Expected {
    pub algorithm: String,
    pub digest: Vec<u8>,
}

impl Expected {
    /// Parses `sha1 <base64>`.
    pub fn parse_tus(header: &str) -> Result<Expected, ChecksumError> {
        let (algo, b64) = header
            .trim()
            .split_once(' ')
            .ok_or(ChecksumError::Malformed)?;
        let mut algorithm = algo.to_ascii_lowercase();
        if algorithm == "sha-256" {
            algorithm = "sha256".into();
        }
        hasher_for(&algorithm)?;
        let digest = base64::engine::general_purpose::STANDARD
            .decode(b64.trim())
            .map_err(|_| ChecksumError::Malformed)?;
        Ok(Expected { algorithm, digest })
    }

    pub fn hasher(&self) -> Hasher {
        // `parse_tus` only builds `Expected` for algorithms `hasher_for` knows.
        hasher_for(&self.algorithm).unwrap_or(Hasher::Sha256(sha2::Sha256::new()))
    }

    /// Constant-time comparison of a finished hash with the expected digest.
    pub fn matches(&self, got: &[u8]) -> bool {
        use subtle::ConstantTimeEq;
        got.len() == self.digest.len() && bool::from(got.ct_eq(&self.digest))
    }
}

fn hasher_for(algorithm: &str) -> Result<Hasher, ChecksumError> {
    match algorithm {
        "sha1" => Ok(Hasher::Sha1(sha1::Sha1::new())),
        "sha256" => Ok(Hasher::Sha256(sha2::Sha256::new())),
        "md5" => Ok(Hasher::Md5(md5::Md5::new())),
        other => Err(ChecksumError::Unsupported(other.to_string())),
    }
}

/// Extracts the `sha-256` member of a `Repr-Digest`/`Content-Digest` dictionary
/// (`sha-256=:<base64>:`); other algorithms are ignored.
pub fn parse_repr_digest(header: &str) -> Result<Option<[u8; 32]>, ChecksumError> {
    for member in header.split(',') {
        let Some((key, value)) = member.trim().split_once('=') else {
            continue;
        };
        if key.trim() != "sha-256" {
            continue;
        }
        let inner = value
            .trim()
            .strip_prefix(':')
            .and_then(|v| v.strip_suffix(':'))
            .ok_or(ChecksumError::Malformed)?;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(inner)
            .map_err(|_| ChecksumError::Malformed)?;
        let arr: [u8; 32] = bytes.try_into().map_err(|_| ChecksumError::Malformed)?;
        return Ok(Some(arr));
    }
    Ok(None)
}

/// `sha-256=:<base64>:` for a digest.
pub fn repr_digest(sha256: &[u8]) -> String {
    format!(
        "sha-256=:{}:",
        base64::engine::general_purpose::STANDARD.encode(sha256)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tus_checksums() {
        // sha1("hello") = aaf4c61ddcc5e8a2dabede0f3b482cd9aea9434d
        let e = Expected::parse_tus("sha1 qvTGHdzF6KLavt4PO0gs2a6pQ00=").unwrap();
        let mut h = e.hasher();
        h.update(b"hello");
        assert!(e.matches(&h.finish()));
        let mut h = e.hasher();
        h.update(b"hellO");
        assert!(!e.matches(&h.finish()));
        assert_eq!(
            Expected::parse_tus("crc32 AAAA").err(),
            Some(ChecksumError::Unsupported("crc32".into()))
        );
        assert!(Expected::parse_tus("sha1").is_err());
        assert!(Expected::parse_tus("sha1 !!!").is_err());
        let md5 = Expected::parse_tus("md5 XUFAKrxLKna5cZ2REBfFkg==").unwrap();
        let mut h = md5.hasher();
        h.update(b"hello");
        assert!(md5.matches(&h.finish()));
    }

    #[test]
    fn trailer_checksums() {
        use crate::core::body::Trailers;
        let slot: Trailers = Default::default();
        let w = Wanted::Trailer(slot.clone());
        let hashed = |data: &[u8]| {
            let mut h = w.hasher();
            h.update(data);
            h
        };
        assert_eq!(
            w.verify(hashed(b"hello")),
            Err(ChecksumError::MissingTrailer)
        );
        for (value, ok) in [
            ("sha1 qvTGHdzF6KLavt4PO0gs2a6pQ00=", true),
            ("md5 XUFAKrxLKna5cZ2REBfFkg==", true),
            ("sha256 LPJNul+wow4m6DsqxbninhsWHlwfp0JecwQzYpOLmCQ=", true),
            ("sha256 LPJNul+wow4m6DsqxbninhsWHlwfp0JecwQzYpOLmCA=", false),
        ] {
            let mut h = http::HeaderMap::new();
            h.insert("upload-checksum", value.parse().unwrap());
            *slot.lock().unwrap() = Some(h);
            assert_eq!(w.verify(hashed(b"hello")), Ok(ok), "{value}");
        }
        let mut h = http::HeaderMap::new();
        h.insert("upload-checksum", "crc32 AAAA".parse().unwrap());
        *slot.lock().unwrap() = Some(h);
        assert!(w.verify(hashed(b"hello")).is_err());
    }

    #[test]
    fn repr_digest_round_trip() {
        let d = sha2::Sha256::digest(b"hello");
        let header = repr_digest(&d);
        assert_eq!(
            header,
            "sha-256=:LPJNul+wow4m6DsqxbninhsWHlwfp0JecwQzYpOLmCQ=:"
        );
        assert_eq!(
            parse_repr_digest(&format!("sha-512=:AA==:, {header}")).unwrap(),
            Some(d.into())
        );
        assert_eq!(parse_repr_digest("md5=:AA==:").unwrap(), None);
        assert!(parse_repr_digest("sha-256=abc").is_err());
    }
}
