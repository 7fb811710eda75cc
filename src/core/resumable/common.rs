//! Pieces shared by the resumable-upload protocols: authorising a creation with the
//! target's signed URL (it authorises a path, and for v/v2 a size), the owner key used for per-client limits,
//! and strict header parsing.

use crate::core::auth::{AuthError, Claim, Scheme, SignedQuery};
use crate::core::error::CoreError;
use crate::core::path::{self, RelPath};
use crate::core::{unix_secs, Core};
use http::HeaderMap;
use std::net::IpAddr;
use std::time::SystemTime;

/// What a signature authorised.
#[derive(Debug, Clone)]
pub struct Authorised {
    pub target: RelPath,
    /// For v/v2, the size the MAC binds; the upload must end up exactly this long.
    pub signed_size: Option<u64>,
}

/// Checks the signature of a creation request against `target` (the URL's path unless
/// given, e.g. HFS's `X-Filename`). `size` is the upload's total length when known; v/v2
/// signatures bind it and therefore need it. `methods` are the v3 methods accepted.
pub fn authorise(
    core: &Core,
    head: &http::request::Parts,
    target: Option<RelPath>,
    size: Option<u64>,
    methods: &[&str],
    extra_types: &[&str],
    now: SystemTime,
) -> Result<Authorised, CoreError> {
    let s = &core.settings;
    // An upload-page token (`Authorization: Bearer`) on the tus collection itself.
    if head.uri.path() == s.tus_path
        && crate::core::page::bearer(&head.headers).is_some()
        && !SignedQuery::parse(head.uri.query()).is_signed()
    {
        return crate::core::page::authorise(core, head, size, now);
    }
    let rel = match target {
        Some(t) => t,
        None => path::resolve(head.uri.path(), &s.prefix)?,
    };
    let query = SignedQuery::parse(head.uri.query());
    let scheme = query
        .scheme
        .as_ref()
        .map(|x| x.0)
        .ok_or(AuthError::Missing)?;
    let mut types = crate::core::upload::signed_content_types(&head.headers, &rel, extra_types);
    if !types.contains(&"application/octet-stream") {
        types.push("application/octet-stream");
    }
    if scheme != Scheme::V3 && size.is_none() {
        return Err(CoreError::LengthRequired);
    }
    let skew = s.allowed_clock_skew.as_secs();
    let mut last = AuthError::Mismatch;
    let candidates: &[&str] = if scheme == Scheme::V3 {
        methods
    } else {
        &["PUT"]
    };
    for m in candidates {
        let claim = Claim {
            method: m,
            path: rel.as_str(),
            size,
            content_types: &types,
        };
        match core.keys.verify(&query, &claim, unix_secs(now), skew) {
            Ok(_) => {
                return Ok(Authorised {
                    target: rel,
                    signed_size: if scheme == Scheme::V3 { None } else { size },
                })
            }
            Err(e) => last = e,
        }
    }
    Err(last.into())
}

/// The key per-client limits count by: the IP address, with IPv6 reduced to its /64.
pub fn owner_of(peer: IpAddr) -> String {
    match peer {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.to_string(),
            None => {
                let s = v6.segments();
                format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
            }
        },
    }
}

/// A header that must be a plain non-negative decimal integer.
pub fn header_u64(h: &HeaderMap, name: &str) -> Result<Option<u64>, CoreError> {
    match present(h, name) {
        None => Ok(None),
        Some(v) => {
            let v = v.trim();
            if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
                return Err(CoreError::BadRequest(format!(
                    "`{name}` must be a non-negative integer"
                )));
            }
            v.parse()
                .map(Some)
                .map_err(|_| CoreError::BadRequest(format!("`{name}` is out of range")))
        }
    }
}

/// A structured-field boolean (`?1` / `?0`).
pub fn header_sf_bool(h: &HeaderMap, name: &str) -> Result<Option<bool>, CoreError> {
    match present(h, name).map(str::trim) {
        None => Ok(None),
        Some("?1") => Ok(Some(true)),
        Some("?0") => Ok(Some(false)),
        Some(_) => Err(CoreError::BadRequest(format!("`{name}` must be ?1 or ?0"))),
    }
}

/// A header's text; present but not visible ASCII reads as empty (refused by the parsers
/// above), never as absent.
fn present<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a str> {
    h.get(name).map(|v| v.to_str().unwrap_or(""))
}

/// The request's `Content-Length`, if any.
pub fn content_length(h: &HeaderMap) -> Result<Option<u64>, CoreError> {
    header_u64(h, "content-length")
}

/// The session id in `path` under `base` (`/files/` + 32 hex), if the path is exactly that.
pub fn session_id<'a>(path: &'a str, base: &str) -> Option<&'a str> {
    let id = path.strip_prefix(base)?;
    super::engine::is_session_id(id).then_some(id)
}

/// Writes a request body into session `id` with a buffer lease from the adaptive engine,
/// and reports the request as one chunk (size, latency) to metrics and the client profile.
pub async fn write(
    core: &Core,
    ctx: &crate::core::Ctx,
    id: &str,
    mut w: super::Write,
    body: &mut crate::core::body::BodyStream,
) -> Result<super::Session, super::SessionError> {
    use super::Placement;
    w.lease = Some(core.adaptive.lease(ctx, w.declared_len).await?);
    let placement = w.placement;
    let started = std::time::Instant::now();
    // Under the storage breaker (see [`crate::core::retry::Resilience::run_session`]).
    let result = core
        .resilience
        .run_session("append", core.engine.write(id, w, body, ctx.unix()))
        .await;
    if let Ok(s) = &result {
        let bytes = match placement {
            Placement::At { len, .. } => len,
            Placement::Append { offset } => s.offset().saturating_sub(offset),
        };
        if bytes > 0 {
            core.adaptive.observe(
                ctx,
                crate::core::Direction::Upload,
                bytes,
                started.elapsed(),
                Some(bytes),
            );
        }
    }
    result
}

/// Name of the header carrying the chunk-size hint on every acknowledgement.
pub const CHUNK_HINT: &str = "xferd-chunk-size";

/// Adds the adaptive engine's chunk-size hint (`Xferd-Chunk-Size`, see
/// [`crate::core::adaptive`]) for an upload of
/// `length` bytes; returns the size advised.
pub fn add_hint(
    core: &Core,
    ctx: &crate::core::Ctx,
    h: &mut HeaderMap,
    length: Option<u64>,
) -> u64 {
    let c = core.adaptive.chunk(ctx, length);
    h.insert(CHUNK_HINT, http::HeaderValue::from(c));
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owners() {
        assert_eq!(owner_of("192.0.2.7".parse().unwrap()), "192.0.2.7");
        assert_eq!(
            owner_of("2001:db8:1:2:3:4:5:6".parse().unwrap()),
            "2001:db8:1:2::/64"
        );
        assert_eq!(owner_of("::ffff:10.1.2.3".parse().unwrap()), "10.1.2.3");
    }

    #[test]
    fn header_parsing() {
        let mut h = HeaderMap::new();
        h.insert("upload-offset", "42".parse().unwrap());
        h.insert("bad", "-1".parse().unwrap());
        h.insert("upload-complete", "?1".parse().unwrap());
        assert_eq!(header_u64(&h, "upload-offset").unwrap(), Some(42));
        assert!(header_u64(&h, "bad").is_err());
        assert_eq!(header_u64(&h, "missing").unwrap(), None);
        assert_eq!(header_sf_bool(&h, "upload-complete").unwrap(), Some(true));
        assert!(header_sf_bool(&h, "upload-offset").is_err());
        assert_eq!(
            session_id("/files/0123456789abcdef0123456789abcdef", "/files/"),
            Some("0123456789abcdef0123456789abcdef")
        );
        assert_eq!(session_id("/files/../x", "/files/"), None);
        // Found by `fuzz/` (target `ietf_headers`): a value that is not visible ASCII was
        // read as an absent header (`Upload-Complete` then defaulted to complete).
        let odd = http::HeaderValue::from_bytes(b"?1\xff").unwrap();
        h.insert("upload-complete", odd.clone());
        h.insert("upload-length", odd);
        assert!(header_sf_bool(&h, "upload-complete").is_err());
        assert!(header_u64(&h, "upload-length").is_err());
        assert_eq!(
            session_id("/files/0123456789ABCDEF0123456789abcdef", "/files/"),
            None
        );
    }
}
