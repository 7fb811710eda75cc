//! The audit trail: one [`Event`] per upload, download, delete and refused request, handed
//! to an [`AuditSink`] (the server's is `crate::audit`, a bounded queue to a file or
//! stdout). The core builds the event from what it already has - the request head, the
//! client address it decided, the response - and never waits on the sink.
//!
//! Fields, exactly: `time` (when the request arrived; RFC 3339, UTC, milliseconds), `client` (the address
//! [`super::client_addr`] decided: a forwarding header only from a trusted proxy), `protocol`
//! (`h1`, `h2`, `h3`), `method`, `path` (as sent, without the query: signatures never reach
//! the log), `status`, `bytes` (the body bytes of an accepted upload request - its
//! `Content-Length` - or of a download response; 0 for a refusal or a HEAD), `sha256` (hex,
//! where the response states it: a `PUT`, a form upload, an IETF completion; else `null`)
//! and `code` (the stable error code, `null` on success).
//!
//! Not audited: `OPTIONS`, `/health` and `/metrics` answered successfully (no transfer).

use super::{header_str, Ctx};
use http::{Method, Response};
use serde::Serialize;
use std::time::SystemTime;

/// One audit line (see the module doc for the fields).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Event {
    pub time: String,
    pub client: String,
    pub protocol: &'static str,
    pub method: String,
    pub path: String,
    pub status: u16,
    pub bytes: u64,
    pub sha256: Option<String>,
    pub code: Option<&'static str>,
}

/// Where events go. Must not block: a full queue drops the event (and counts it).
pub trait AuditSink: Send + Sync {
    fn record(&self, event: Event);
}

/// The event for a request and its response, or `None` when it is not audited.
pub fn event<B>(head: &http::request::Parts, ctx: &Ctx, resp: &Response<B>) -> Option<Event> {
    let path = head.uri.path();
    let status = resp.status();
    let code = resp
        .extensions()
        .get::<super::response::ErrorCode>()
        .map(|c| c.0);
    let quiet = head.method == Method::OPTIONS || path == "/health" || path == "/metrics";
    if quiet && code.is_none() {
        return None;
    }
    let ok = status.is_success();
    let upload = matches!(head.method, Method::PUT | Method::POST | Method::PATCH);
    let length = |h: &http::HeaderMap| {
        header_str(h, http::header::CONTENT_LENGTH).and_then(|v| v.trim().parse::<u64>().ok())
    };
    let bytes = match () {
        _ if !ok => None,
        _ if upload => length(&head.headers),
        _ if head.method == Method::GET => length(resp.headers()),
        _ => None,
    };
    Some(Event {
        time: rfc3339(ctx.now),
        client: ctx.peer.to_string(),
        protocol: ctx.protocol.label(),
        method: head.method.as_str().to_string(),
        path: path.to_string(),
        status: status.as_u16(),
        bytes: bytes.unwrap_or(0),
        sha256: header_str(resp.headers(), "repr-digest").and_then(sha256_of_repr_digest),
        code,
    })
}

/// `sha-256=:<base64>:` -> hex.
fn sha256_of_repr_digest(v: &str) -> Option<String> {
    use base64::Engine as _;
    let b64 = v
        .split(',')
        .map(str::trim)
        .find_map(|p| p.strip_prefix("sha-256=:"))?
        .strip_suffix(':')?;
    let raw = base64::engine::general_purpose::STANDARD.decode(b64).ok()?;
    (raw.len() == 32).then(|| hex::encode(raw))
}

/// `2026-12-01T23:15:18.123Z`.
pub fn rfc3339(t: SystemTime) -> String {
    let d = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let (days, rem) = (secs / 86400, secs % 86400);
    let (y, m, day) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        d.subsec_millis()
    )
}

/// Days since 1970-01-01 -> (year, month, day), proleptic Gregorian (H. Hinnant's
/// algorithm; all arithmetic on non-negative values, within `u64`).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn times_are_rfc3339_utc() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_millis(1_795_043_718_123);
        assert_eq!(rfc3339(t), "2026-11-18T23:15:18.123Z");
        assert_eq!(rfc3339(SystemTime::UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        // A leap day.
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(951_782_400);
        assert_eq!(rfc3339(t), "2000-02-29T00:00:00.000Z");
    }

    #[test]
    fn digest_header_to_hex() {
        let hex = sha256_of_repr_digest("sha-256=:47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=:");
        assert_eq!(
            hex.as_deref(),
            Some("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
        );
        assert_eq!(sha256_of_repr_digest("md5=:abc:"), None);
    }

    #[test]
    fn query_never_logged_and_quiet_routes_skipped() {
        let (head, _) = http::Request::builder()
            .method("GET")
            .uri("/a/b.txt?v=secretmac&x=1")
            .body(())
            .unwrap()
            .into_parts();
        let ctx = Ctx::new("127.0.0.1".parse().unwrap(), super::super::Protocol::H1);
        let resp = http::Response::builder()
            .status(200)
            .header("content-length", "5")
            .body(())
            .unwrap();
        let e = event(&head, &ctx, &resp).unwrap();
        assert_eq!(e.path, "/a/b.txt");
        assert_eq!(e.bytes, 5);
        assert!(!serde_json::to_string(&e).unwrap().contains("secretmac"));
        let (head, _) = http::Request::builder()
            .uri("/health")
            .body(())
            .unwrap()
            .into_parts();
        assert!(event(&head, &ctx, &resp).is_none());
    }
}
