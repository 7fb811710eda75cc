//! Signature verification for signed URLs (XEP-0363 leaves the scheme to the
//! deployment; these are Prosody's `mod_http_upload_external` protocols v1 and v2, which
//! ejabberd's `external_secret` and Metronome also use, and HMAC File Server 3.4's v3).
//!
//! Schemes, selected by the query parameter present:
//! - `v`: HMAC over `path + " " + size` (Prosody protocol v1, ejabberd);
//! - `v2` / `token`: HMAC over `path + "\0" + size + "\0" + content_type` (Prosody v2);
//! - `v3` + `expires`: HMAC over `METHOD + "\n" + expires + "\n" + "/" + path`.
//!
//! The MAC is HMAC-SHA256 keyed with the raw secret bytes, hex on the wire (either case),
//! compared in constant time through `Mac::verify_slice`. Several keys may be configured for
//! rotation. Time is passed in as Unix seconds; nothing here reads a clock.

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// Why a request's signature was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("no signature in the URL")]
    Missing,
    #[error("malformed signature parameter")]
    Malformed,
    #[error("signature does not match")]
    Mismatch,
    #[error("signed URL has expired")]
    Expired,
    #[error("signature scheme needs the size (Content-Length)")]
    SizeRequired,
}

/// A signature scheme, as chosen by the query parameter name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    V,
    V2,
    Token,
    V3,
}

impl Scheme {
    pub fn parse(name: &str) -> Option<Scheme> {
        match name {
            "v" | "v1" => Some(Scheme::V),
            "v2" => Some(Scheme::V2),
            "token" => Some(Scheme::Token),
            "v3" => Some(Scheme::V3),
            _ => None,
        }
    }
    pub fn param(self) -> &'static str {
        match self {
            Scheme::V => "v",
            Scheme::V2 => "v2",
            Scheme::Token => "token",
            Scheme::V3 => "v3",
        }
    }
}

/// The shared secrets: the current one first, then the previous ones (rotation).
#[derive(Clone)]
pub struct Keys {
    keys: Vec<Vec<u8>>,
    path_only_compat: bool,
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Keys({} keys, redacted)", self.keys.len())
    }
}

/// What a request claims, to be checked against its signature.
#[derive(Debug, Clone, Copy)]
pub struct Claim<'a> {
    /// HTTP method, upper case.
    pub method: &'a str,
    /// Decoded path, prefix stripped, without the leading `/`.
    pub path: &'a str,
    /// The declared size (`Content-Length`), when the request has one.
    pub size: Option<u64>,
    /// Candidate content types for v2, tried in order (declared, then guessed).
    pub content_types: &'a [&'a str],
}

/// The signature parameters found in a query string.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SignedQuery {
    pub scheme: Option<(Scheme, String)>,
    pub expires: Option<String>,
}

impl SignedQuery {
    /// Extracts the signature parameters; the first signature parameter wins.
    pub fn parse(query: Option<&str>) -> SignedQuery {
        let mut out = SignedQuery::default();
        for pair in query.unwrap_or("").split('&') {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            let value = percent_encoding::percent_decode_str(value)
                .decode_utf8_lossy()
                .into_owned();
            if name == "expires" {
                out.expires.get_or_insert(value);
            } else if let Some(scheme) = Scheme::parse(name) {
                if out.scheme.is_none() {
                    out.scheme = Some((scheme, value));
                }
            }
        }
        out
    }

    pub fn is_signed(&self) -> bool {
        self.scheme.is_some()
    }
}

impl Keys {
    pub fn new(current: &str, previous: &[String], path_only_compat: bool) -> Keys {
        let mut keys = vec![current.as_bytes().to_vec()];
        keys.extend(previous.iter().map(|k| k.as_bytes().to_vec()));
        Keys {
            keys,
            path_only_compat,
        }
    }

    /// Checks `query`'s signature against `claim`. `now` is Unix seconds.
    pub fn verify(
        &self,
        query: &SignedQuery,
        claim: &Claim<'_>,
        now: u64,
        skew_secs: u64,
    ) -> Result<Scheme, AuthError> {
        let (scheme, hex_mac) = query.scheme.as_ref().ok_or(AuthError::Missing)?;
        let tag = hex::decode(hex_mac.trim()).map_err(|_| AuthError::Malformed)?;
        if tag.len() != 32 {
            return Err(AuthError::Malformed);
        }
        let mut messages: Vec<Vec<u8>> = Vec::new();
        match scheme {
            Scheme::V => {
                let size = claim.size.ok_or(AuthError::SizeRequired)?;
                messages.push(format!("{} {}", claim.path, size).into_bytes());
            }
            Scheme::V2 | Scheme::Token => {
                let size = claim.size.ok_or(AuthError::SizeRequired)?;
                for ct in claim.content_types {
                    messages.push(format!("{}\0{}\0{}", claim.path, size, ct).into_bytes());
                }
            }
            Scheme::V3 => {
                let expires_text = query.expires.as_deref().ok_or(AuthError::Malformed)?;
                let expires: u64 = expires_text.parse().map_err(|_| AuthError::Malformed)?;
                // Verify first, so an expired URL with a forged MAC is still "mismatch".
                let msg = v3_message(claim.method, expires, claim.path);
                if !self.any_key_verifies(&msg, &tag) {
                    return Err(AuthError::Mismatch);
                }
                if now > expires.saturating_add(skew_secs) {
                    return Err(AuthError::Expired);
                }
                return Ok(Scheme::V3);
            }
        }
        if self.path_only_compat {
            messages.push(claim.path.as_bytes().to_vec());
        }
        if messages.iter().any(|m| self.any_key_verifies(m, &tag)) {
            Ok(*scheme)
        } else {
            Err(AuthError::Mismatch)
        }
    }

    /// Constant-time check of a raw MAC over `message` (for HFS's legacy header).
    pub fn verify_raw(&self, message: &[u8], tag: &[u8]) -> bool {
        tag.len() == 32 && self.any_key_verifies(message, tag)
    }

    fn any_key_verifies(&self, message: &[u8], tag: &[u8]) -> bool {
        // Every key is tried (no early exit), so timing does not reveal which key matched.
        let mut ok = false;
        for key in &self.keys {
            ok |= mac(key, message).verify_slice(tag).is_ok();
        }
        ok
    }

    /// Mints a hex MAC with the current key (for `xferd sign` and tests).
    pub fn sign(&self, message: &[u8]) -> String {
        let key = self.keys.first().map(Vec::as_slice).unwrap_or_default();
        hex::encode(mac(key, message).finalize().into_bytes())
    }
}

fn mac(key: &[u8], message: &[u8]) -> HmacSha256 {
    // HMAC accepts keys of any length, so this cannot fail.
    let mut m = <HmacSha256 as KeyInit>::new_from_slice(key).expect("HMAC takes any key length");
    m.update(message);
    m
}

/// The v3 message: `METHOD\nexpires\n/path`.
pub fn v3_message(method: &str, expires: u64, path: &str) -> Vec<u8> {
    format!("{method}\n{expires}\n/{path}").into_bytes()
}

/// The message a scheme signs, for minting URLs.
pub fn message_for(
    scheme: Scheme,
    method: &str,
    path: &str,
    size: u64,
    content_type: &str,
    expires: u64,
) -> Vec<u8> {
    match scheme {
        Scheme::V => format!("{path} {size}").into_bytes(),
        Scheme::V2 | Scheme::Token => format!("{path}\0{size}\0{content_type}").into_bytes(),
        Scheme::V3 => v3_message(method, expires, path),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> Keys {
        Keys::new("secret", &[], false)
    }

    // Test vectors computed independently (Python `hmac` and `openssl dgst -sha256 -hmac`):
    // secret `secret`, path `foo/bar.jpg`, size 1234, type `image/jpeg`, expires 1700000000.
    const V: &str = "fae9d934536a2d0385ab11c726b010b9ccd5212304135d576df9db1fc653ad94";
    const V2: &str = "626eedc59396fdc5958bbfaba9a319d689caa556550e67c2e0e7950bb6a17a36";
    const V3_PUT: &str = "6b129c374f9d37df8f117d3c564653dcb29549c4d2b292359e3bfc39f9c57559";
    const V3_GET: &str = "edfc90be0782e97b878c9345ed5d3831b60c03ff4132a921ef313df7cbf5c35c";
    const V3_POST: &str = "58af41e3531f2a8ca45431ee06c13a397c76a19af2c5b5ea51d1c6d1b7b8ed92";
    const V_UTF8: &str = "258ff63d592de4bfb3aa4930a62e801c64d4032a8f41efcf6c0d9c9ebfaa81bc";
    const PATH_ONLY: &str = "19c63eea7fe1b7e65a6bdadcf438bfa4cf844eac9f7bb106af2b513f614597b3";

    #[test]
    fn minting_reproduces_every_vector() {
        let k = keys();
        let p = "foo/bar.jpg";
        let cases: &[(&[u8], &str)] = &[
            (&message_for(Scheme::V, "PUT", p, 1234, "", 0), V),
            (
                &message_for(Scheme::V2, "PUT", p, 1234, "image/jpeg", 0),
                V2,
            ),
            (
                &message_for(Scheme::V3, "PUT", p, 0, "", 1_700_000_000),
                V3_PUT,
            ),
            (
                &message_for(Scheme::V3, "GET", p, 0, "", 1_700_000_000),
                V3_GET,
            ),
            (
                &message_for(Scheme::V3, "POST", "upload", 0, "", 1_700_000_000),
                V3_POST,
            ),
            (
                &message_for(Scheme::V, "PUT", "d6a1c3e0/My Photo é.jpg", 5, "", 0),
                V_UTF8,
            ),
            (b"foo/bar.jpg", PATH_ONLY),
        ];
        for (msg, want) in cases {
            assert_eq!(
                k.sign(msg),
                *want,
                "message {:?}",
                String::from_utf8_lossy(msg)
            );
        }
    }

    fn claim<'a>(
        method: &'a str,
        path: &'a str,
        size: Option<u64>,
        ct: &'a [&'a str],
    ) -> Claim<'a> {
        Claim {
            method,
            path,
            size,
            content_types: ct,
        }
    }

    fn q(s: &str) -> SignedQuery {
        SignedQuery::parse(Some(s))
    }

    #[test]
    fn verification_table() {
        let k = keys();
        let p = "foo/bar.jpg";
        let jpeg: &[&str] = &["image/jpeg"];
        let octet_then_jpeg: &[&str] = &["application/octet-stream", "image/jpeg"];
        let now = 1_700_000_000;
        let cases: Vec<(String, Claim, u64, Result<Scheme, AuthError>)> = vec![
            (
                format!("v={V}"),
                claim("PUT", p, Some(1234), &[]),
                now,
                Ok(Scheme::V),
            ),
            (
                format!("v={}", V.to_uppercase()),
                claim("PUT", p, Some(1234), &[]),
                now,
                Ok(Scheme::V),
            ),
            (
                format!("v={V}"),
                claim("PUT", p, Some(1235), &[]),
                now,
                Err(AuthError::Mismatch),
            ),
            (
                format!("v={V}"),
                claim("PUT", "foo/baz.jpg", Some(1234), &[]),
                now,
                Err(AuthError::Mismatch),
            ),
            (
                format!("v={V}"),
                claim("PUT", p, None, &[]),
                now,
                Err(AuthError::SizeRequired),
            ),
            (
                format!("v2={V2}"),
                claim("PUT", p, Some(1234), jpeg),
                now,
                Ok(Scheme::V2),
            ),
            (
                format!("token={V2}"),
                claim("PUT", p, Some(1234), jpeg),
                now,
                Ok(Scheme::Token),
            ),
            // Declared type tried first, then the guess: still verifies.
            (
                format!("v2={V2}"),
                claim("PUT", p, Some(1234), octet_then_jpeg),
                now,
                Ok(Scheme::V2),
            ),
            (
                format!("v2={V2}"),
                claim("PUT", p, Some(1234), &["text/plain"]),
                now,
                Err(AuthError::Mismatch),
            ),
            (
                format!("v3={V3_PUT}&expires=1700000000"),
                claim("PUT", p, None, &[]),
                now,
                Ok(Scheme::V3),
            ),
            (
                format!("v3={V3_PUT}&expires=1700000000"),
                claim("PUT", p, None, &[]),
                now + 60,
                Ok(Scheme::V3),
            ),
            (
                format!("v3={V3_PUT}&expires=1700000000"),
                claim("PUT", p, None, &[]),
                now + 61,
                Err(AuthError::Expired),
            ),
            (
                format!("v3={V3_PUT}&expires=1700000001"),
                claim("PUT", p, None, &[]),
                now,
                Err(AuthError::Mismatch),
            ),
            (
                format!("v3={V3_PUT}&expires=1700000000"),
                claim("GET", p, None, &[]),
                now,
                Err(AuthError::Mismatch),
            ),
            (
                format!("v3={V3_GET}&expires=1700000000"),
                claim("GET", p, None, &[]),
                now,
                Ok(Scheme::V3),
            ),
            (
                format!("v3={V3_POST}&expires=1700000000"),
                claim("POST", "upload", None, &[]),
                now,
                Ok(Scheme::V3),
            ),
            (
                format!("v3={V3_PUT}"),
                claim("PUT", p, None, &[]),
                now,
                Err(AuthError::Malformed),
            ),
            (
                "v=zz".to_string(),
                claim("PUT", p, Some(1234), &[]),
                now,
                Err(AuthError::Malformed),
            ),
            (
                "v=abcd".to_string(),
                claim("PUT", p, Some(1234), &[]),
                now,
                Err(AuthError::Malformed),
            ),
            (
                "x=1".to_string(),
                claim("PUT", p, Some(1234), &[]),
                now,
                Err(AuthError::Missing),
            ),
            // Path-only MACs are refused unless the compatibility switch is on.
            (
                format!("v={PATH_ONLY}"),
                claim("PUT", p, Some(1234), &[]),
                now,
                Err(AuthError::Mismatch),
            ),
        ];
        for (query, c, now, want) in cases {
            assert_eq!(k.verify(&q(&query), &c, now, 60), want, "{query} {c:?}");
        }
        let utf8 = claim("PUT", "d6a1c3e0/My Photo é.jpg", Some(5), &[]);
        assert_eq!(
            k.verify(&q(&format!("v={V_UTF8}")), &utf8, now, 60),
            Ok(Scheme::V)
        );
    }

    #[test]
    fn rotation_and_compat_switch() {
        let rotated = Keys::new("new-secret", &["secret".to_string()], false);
        let c = claim("PUT", "foo/bar.jpg", Some(1234), &[]);
        assert_eq!(
            rotated.verify(&q(&format!("v={V}")), &c, 0, 60),
            Ok(Scheme::V)
        );
        let compat = Keys::new("secret", &[], true);
        assert_eq!(
            compat.verify(&q(&format!("v={PATH_ONLY}")), &c, 0, 60),
            Ok(Scheme::V)
        );
    }

    #[test]
    fn query_parsing() {
        let s = SignedQuery::parse(Some("expires=5&v3=ab%63d&v=zz"));
        assert_eq!(s.scheme, Some((Scheme::V3, "abcd".to_string())));
        assert_eq!(s.expires.as_deref(), Some("5"));
        assert!(!SignedQuery::parse(None).is_signed());
    }
}
