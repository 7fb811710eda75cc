//! Targets `tus_headers` (Upload-Metadata, Upload-Concat, Upload-Checksum,
//! Upload-Length/Offset) and `ietf_headers` (Upload-Complete, Upload-Offset, Upload-Length,
//! Upload-Draft-Interop-Version, Repr-Digest).

use crate::{header, headers, lines};
use base64::Engine as _;
use xferd::core::resumable::checksum::{parse_repr_digest, repr_digest, Expected};
use xferd::core::resumable::common::{header_sf_bool, header_u64};
use xferd::core::resumable::engine::is_session_id;
use xferd::core::resumable::{ietf, tus};

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// A non-negative decimal integer header: only ASCII digits (no sign, no `+`), within u64.
pub fn check_u64(h: &http::HeaderMap, name: &str) {
    let got = header_u64(h, name).ok();
    let want = match header(h, name) {
        None if h.get(name).is_none() => Some(None),
        // Present but not visible ASCII: refused, never read as absent.
        None => None,
        Some(v) => {
            let v = v.trim();
            let digits = v.trim_start_matches('0');
            if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) || digits.len() > 20 {
                None
            } else {
                u64::try_from(digits.parse::<u128>().unwrap_or(0))
                    .ok()
                    .map(Some)
            }
        }
    };
    assert_eq!(got, want, "{name}: {:?}", h.get(name));
}

/// The first pair for `key` whose value is valid base64 of UTF-8 (the tus spec allows a key
/// without a value: it decodes as empty).
fn metadata_reference(metadata: &str, key: &str) -> Option<String> {
    metadata.split(',').find_map(|pair| {
        let pair = pair.trim();
        let (k, v) = pair.split_once(' ').unwrap_or((pair, ""));
        if k != key {
            return None;
        }
        String::from_utf8(B64.decode(v).ok()?).ok()
    })
}

/// Input: `Name: value` header lines.
///
/// Properties: integer headers per [`check_u64`]; each metadata key reads as
/// [`metadata_reference`] says and the decoded pairs encode back to the same values;
/// an accepted checksum names a supported algorithm and its base64 re-encodes to the input;
/// an accepted `Upload-Concat: final;…` lists 1 to 1000 session ids, each taken from it.
pub fn tus_headers(data: &[u8]) {
    let l = lines(data);
    let h = headers(&l);
    for name in ["upload-length", "upload-offset", "content-length"] {
        check_u64(&h, name);
    }
    if let Some(m) = header(&h, "upload-metadata") {
        let mut pairs: Vec<(String, String)> = Vec::new();
        for pair in m.split(',') {
            let key = pair.trim().split(' ').next().unwrap_or("");
            let got = tus::metadata_value(m, key);
            assert_eq!(got, metadata_reference(m, key), "{m:?} key {key:?}");
            if let Some(v) = got {
                assert!(v.len() <= m.len(), "decoded value larger than the header");
                if !key.is_empty() && !pairs.iter().any(|(k, _)| k == key) {
                    pairs.push((key.to_string(), v));
                }
            }
        }
        let rebuilt: Vec<String> = pairs
            .iter()
            .map(|(k, v)| format!("{k} {}", B64.encode(v)))
            .collect();
        let rebuilt = rebuilt.join(",");
        for (k, v) in &pairs {
            assert_eq!(tus::metadata_value(&rebuilt, k).as_ref(), Some(v));
        }
    }
    if let Some(c) = header(&h, "upload-checksum") {
        if let Ok(e) = Expected::parse_tus(c) {
            assert!(matches!(e.algorithm.as_str(), "sha1" | "sha256" | "md5"));
            let (algo, b64) = c.trim().split_once(' ').expect("accepted means two parts");
            assert!(
                algo.eq_ignore_ascii_case(&e.algorithm) || algo.eq_ignore_ascii_case("sha-256")
            );
            assert_eq!(B64.encode(&e.digest), b64.trim(), "base64 not canonical");
            assert!(e.matches(&e.digest));
            let mut other = e.digest.clone();
            other.push(0);
            assert!(!e.matches(&other));
        }
    }
    if let Some(c) = header(&h, "upload-concat") {
        let c = c.trim();
        if let Ok(ids) = tus::parse_final(c, "/files/") {
            assert!(c.starts_with("final;"));
            assert!((1..=1000).contains(&ids.len()));
            for id in &ids {
                assert!(is_session_id(id) && c.contains(id.as_str()), "{id:?}");
            }
        }
    }
}

/// Input: `Name: value` header lines.
///
/// Properties: `Upload-Complete` is exactly `?0`/`?1` (structured-field boolean);
/// integer headers per [`check_u64`]; the interop version is 6 to 10 written as plain
/// digits, absent meaning the newest; an accepted `Repr-Digest` is the first `sha-256`
/// member's 32-byte value, and `repr_digest` of it parses back to it.
pub fn ietf_headers(data: &[u8]) {
    let l = lines(data);
    let h = headers(&l);
    let complete = header_sf_bool(&h, "upload-complete").ok();
    let want = match header(&h, "upload-complete").map(str::trim) {
        None if h.get("upload-complete").is_none() => Some(None),
        Some("?1") => Some(Some(true)),
        Some("?0") => Some(Some(false)),
        _ => None,
    };
    assert_eq!(complete, want, "{:?}", h.get("upload-complete"));
    for name in ["upload-offset", "upload-length", "content-length"] {
        check_u64(&h, name);
    }
    let version = ietf::version(&h).ok();
    let want = match header(&h, "upload-draft-interop-version").map(str::trim) {
        None if h.get("upload-draft-interop-version").is_none() => Some(ietf::NEWEST),
        Some(v) if !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()) => v
            .parse::<u32>()
            .ok()
            .filter(|n| (ietf::OLDEST..=ietf::NEWEST).contains(n)),
        _ => None,
    };
    assert_eq!(version, want, "{:?}", h.get("upload-draft-interop-version"));
    if let Some(d) = header(&h, "repr-digest") {
        let got = parse_repr_digest(d);
        let first = d.split(',').find_map(|m| {
            let (k, v) = m.trim().split_once('=')?;
            (k.trim() == "sha-256").then_some(v.trim())
        });
        match (&got, first) {
            (Ok(None), None) => {}
            (Ok(Some(digest)), Some(v)) => {
                assert_eq!(v, format!(":{}:", B64.encode(digest)));
                assert_eq!(
                    parse_repr_digest(&repr_digest(digest)).ok(),
                    Some(Some(*digest))
                );
            }
            (Err(_), Some(v)) => {
                let inner = v.strip_prefix(':').and_then(|v| v.strip_suffix(':'));
                let ok = inner.and_then(|i| B64.decode(i).ok()).map(|b| b.len());
                assert_ne!(ok, Some(32), "{v:?} refused");
            }
            (got, first) => panic!("{d:?}: {got:?} but first sha-256 member {first:?}"),
        }
    }
}
