//! Downloads: `GET`/`HEAD` with conditional requests and ranges (RFC 9110 sections 13
//! and 14).
//!
//! Steps: resolve the path -> optional v3 `GET` signature -> open the file -> evaluate
//! preconditions in RFC 9110 section 13.2.2 order (`If-Match`, `If-Unmodified-Since` -> 412;
//! `If-None-Match`, `If-Modified-Since` -> 304) -> `Range` (honoured only for `GET` and when
//! `If-Range` still matches; see [`super::range`] for merging and caps) -> a 200, a single
//! 206, a `multipart/byteranges` 206 of exactly computed length, or a 416.

use super::auth::{Claim, SignedQuery};
use super::body::Body;
use super::error::CoreError;
use super::range::{self, ByteRange, RangeDecision};
use super::stream::{self, Part};
use super::{header_str, path, response, unix_secs, Core};
use crate::storage::store::ObjectMeta;
use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Response, StatusCode};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Types a browser would render or execute: served as attachments.
const UNSAFE_INLINE: &[&str] = &[
    "text/html",
    "image/svg+xml",
    "application/xhtml+xml",
    "text/javascript",
    "application/javascript",
    "application/ecmascript",
    "text/xml",
    "application/xml",
];
const CSP: &str =
    "default-src 'none'; img-src 'self'; media-src 'self'; style-src 'unsafe-inline'; sandbox";
const IMMUTABLE: &str = "public, max-age=31536000, immutable";

pub async fn serve(
    core: &Core,
    head: &http::request::Parts,
    ctx: &super::Ctx,
) -> Result<Response<Body>, CoreError> {
    let now = ctx.now;
    let s = &core.settings;
    let rel = path::resolve(head.uri.path(), &s.prefix)?;
    if s.require_download_signature {
        let query = SignedQuery::parse(head.uri.query());
        let claim = Claim {
            method: "GET",
            path: rel.as_str(),
            size: None,
            content_types: &[],
        };
        core.keys.verify(
            &query,
            &claim,
            unix_secs(now),
            s.allowed_clock_skew.as_secs(),
        )?;
    }
    let file = core
        .resilience
        .run("open", || core.storage.open(&rel))
        .await?
        .ok_or(CoreError::NotFound)?;
    let meta = file.meta();
    let etag = etag_of(&meta);
    let ctype = mime_guess::from_path(rel.file_name())
        .first_raw()
        .unwrap_or("application/octet-stream");

    let mut base = HeaderMap::new();
    base.insert(header::ETAG, hv(&etag));
    base.insert(
        header::LAST_MODIFIED,
        hv(&httpdate::fmt_http_date(meta.modified)),
    );
    base.insert(header::CACHE_CONTROL, HeaderValue::from_static(IMMUTABLE));
    base.insert(
        header::ACCEPT_RANGES,
        HeaderValue::from_static(if s.range_requests { "bytes" } else { "none" }),
    );
    base.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );

    match preconditions(&head.headers, &etag, meta.modified) {
        Precondition::Failed => {
            let mut r = with(StatusCode::PRECONDITION_FAILED, Body::Empty, base);
            response::mark_error(&mut r, response::PRECONDITION_FAILED);
            return Ok(r);
        }
        Precondition::NotModified => {
            let mut r = with(StatusCode::NOT_MODIFIED, Body::Empty, base);
            r.headers_mut().remove(header::CONTENT_LENGTH);
            return Ok(r);
        }
        Precondition::Proceed => {}
    }
    base.insert(header::CONTENT_TYPE, hv(ctype));
    if UNSAFE_INLINE.contains(&ctype) {
        base.insert(
            header::CONTENT_DISPOSITION,
            HeaderValue::from_static("attachment"),
        );
    }

    let decision = match header_str(&head.headers, header::RANGE) {
        Some(r)
            if s.range_requests
                && head.method == Method::GET
                && if_range_holds(&head.headers, &etag, meta.modified) =>
        {
            core.telemetry().range_request(ctx.protocol);
            range::decide(r, meta.len, s.max_ranges)
        }
        _ => RangeDecision::Full,
    };
    // The buffer lease is taken (waiting, bounded, for memory) before the response starts.
    let wanted: u64 = match &decision {
        RangeDecision::Full => meta.len,
        RangeDecision::Unsatisfiable => 0,
        RangeDecision::Partial(ranges) => ranges.iter().map(|r| r.len()).sum(),
    };
    let mut lease = match wanted {
        0 => None,
        _ if head.method == Method::HEAD => None,
        n => Some(core.adaptive.lease(ctx, Some(n)).await?),
    };
    let started = std::time::Instant::now();
    let observer = || -> stream::Done {
        let adaptive = core.adaptive.clone();
        let ctx = ctx.clone();
        Box::new(move |sent| {
            adaptive.observe(
                &ctx,
                super::Direction::Download,
                sent,
                started.elapsed(),
                None,
            )
        })
    };
    // A body that fits in the lease's buffer (a small file, a short range) is read now, in
    // one read, and sent as one chunk: no reader task, no channel, and a storage error is
    // an error response instead of a response cut short.
    let ready = match (&decision, lease.as_ref()) {
        (RangeDecision::Full, Some(l)) if meta.len <= l.size() as u64 => Some((0, meta.len)),
        (RangeDecision::Partial(r), Some(l)) if r.len() == 1 && r[0].len() <= l.size() as u64 => {
            Some((r[0].start, r[0].len()))
        }
        _ => None,
    };
    let mut early = None;
    // (`lease` is taken only when the body is read here: the streamed path needs it.)
    if let Some((offset, len, l)) = ready.and_then(|(o, n)| Some((o, n, lease.take()?))) {
        let want = usize::try_from(len).map_err(|_| CoreError::Storage(shrank()))?;
        let data = file.read_at(offset, want).await.map_err(CoreError::from)?;
        if data.len() != want {
            return Err(CoreError::Storage(shrank()));
        }
        early = Some(stream::ready(data, l, Some(observer())));
    }
    let mut body_of = |parts: Vec<Part>| {
        let len = parts.iter().map(Part::len).sum();
        if let Some(stream) = early.take() {
            return Body::Stream { stream, len };
        }
        let taken = lease
            .take()
            .filter(|_| head.method != Method::HEAD && len > 0);
        if let Some(lease) = taken {
            Body::Stream {
                stream: stream::send(file.clone(), parts, lease, Some(observer())),
                len,
            }
        } else {
            Body::Stream {
                stream: super::body::empty_stream(),
                len,
            }
        }
    };
    Ok(match decision {
        RangeDecision::Full => with(
            StatusCode::OK,
            body_of(vec![Part::File {
                offset: 0,
                len: meta.len,
            }]),
            base,
        ),
        RangeDecision::Unsatisfiable => {
            base.insert(header::CONTENT_RANGE, hv(&format!("bytes */{}", meta.len)));
            base.remove(header::CONTENT_TYPE);
            let mut r = with(StatusCode::RANGE_NOT_SATISFIABLE, Body::Empty, base);
            response::mark_error(&mut r, response::RANGE_NOT_SATISFIABLE);
            r
        }
        RangeDecision::Partial(ranges) if ranges.len() == 1 => {
            let r = ranges[0];
            base.insert(header::CONTENT_RANGE, hv(&content_range(r, meta.len)));
            let part = Part::File {
                offset: r.start,
                len: r.len(),
            };
            with(StatusCode::PARTIAL_CONTENT, body_of(vec![part]), base)
        }
        RangeDecision::Partial(ranges) => {
            let boundary = format!("{:032x}", rand::random::<u128>());
            let parts = multipart_parts(&ranges, meta.len, ctype, &boundary);
            base.insert(
                header::CONTENT_TYPE,
                hv(&format!("multipart/byteranges; boundary={boundary}")),
            );
            with(StatusCode::PARTIAL_CONTENT, body_of(parts), base)
        }
    })
}

/// A stored file shorter than its metadata said (files never change once stored).
fn shrank() -> std::io::Error {
    std::io::Error::other("file shrank while being read")
}

fn multipart_parts(ranges: &[ByteRange], len: u64, ctype: &str, boundary: &str) -> Vec<Part> {
    let mut parts = Vec::with_capacity(ranges.len() * 2 + 1);
    for r in ranges {
        let head = format!(
            "\r\n--{boundary}\r\nContent-Type: {ctype}\r\nContent-Range: {}\r\n\r\n",
            content_range(*r, len)
        );
        parts.push(Part::Bytes(Bytes::from(head)));
        parts.push(Part::File {
            offset: r.start,
            len: r.len(),
        });
    }
    parts.push(Part::Bytes(Bytes::from(format!("\r\n--{boundary}--\r\n"))));
    parts
}

fn content_range(r: ByteRange, len: u64) -> String {
    format!("bytes {}-{}/{}", r.start, r.end, len)
}

fn with(status: StatusCode, body: Body, headers: HeaderMap) -> Response<Body> {
    let mut r = response::build(status, body);
    r.headers_mut().extend(headers);
    r
}

fn hv(s: &str) -> HeaderValue {
    // Every value passed here is built from ASCII we control (dates, numbers, hex, MIME types).
    HeaderValue::from_str(s).unwrap_or_else(|_| HeaderValue::from_static("invalid"))
}

/// A strong validator from size and the backend's version (the modification time in
/// nanoseconds on a filesystem; files never change once stored).
pub fn etag_of(meta: &ObjectMeta) -> String {
    format!("\"{:x}-{:x}\"", meta.len, meta.version)
}

/// The outcome of the RFC 9110 section 13.2.2 preconditions.
#[derive(Debug, PartialEq, Eq)]
pub enum Precondition {
    Proceed,
    NotModified,
    Failed,
}

/// Evaluates `If-Match`, `If-Unmodified-Since`, `If-None-Match`, `If-Modified-Since`.
pub fn preconditions(h: &HeaderMap, etag: &str, modified: SystemTime) -> Precondition {
    let modified = truncate_to_secs(modified);
    if let Some(im) = tag_list(h, header::IF_MATCH) {
        if !etag_list_matches(im, etag, false) {
            return Precondition::Failed;
        }
    } else if let Some(ius) = header_str(h, header::IF_UNMODIFIED_SINCE).and_then(parse_date) {
        if modified > ius {
            return Precondition::Failed;
        }
    }
    if let Some(inm) = tag_list(h, header::IF_NONE_MATCH) {
        if etag_list_matches(inm, etag, true) {
            return Precondition::NotModified;
        }
    } else if let Some(ims) = header_str(h, header::IF_MODIFIED_SINCE).and_then(parse_date) {
        if modified <= ims {
            return Precondition::NotModified;
        }
    }
    Precondition::Proceed
}

/// True when `If-Range` is absent or still matches (strong etag or exact date).
pub fn if_range_holds(h: &HeaderMap, etag: &str, modified: SystemTime) -> bool {
    match tag_list(h, header::IF_RANGE) {
        None => true,
        Some(v) if v.trim_start().starts_with('"') => v.trim() == etag,
        Some(v) => parse_date(v) == Some(truncate_to_secs(modified)),
    }
}

/// A conditional header's text; one that is present but not visible ASCII reads as empty, so
/// it matches no (ASCII) tag or date instead of counting as absent.
fn tag_list(h: &HeaderMap, name: header::HeaderName) -> Option<&str> {
    h.get(name).map(|v| v.to_str().unwrap_or(""))
}

/// `*` or a comma-separated list of entity tags; `weak` allows `W/` tags to match.
fn etag_list_matches(list: &str, etag: &str, weak: bool) -> bool {
    list.split(',')
        .map(str::trim)
        .any(|t| t == "*" || t == etag || (weak && t.strip_prefix("W/") == Some(etag)))
}

fn parse_date(v: &str) -> Option<SystemTime> {
    httpdate::parse_http_date(v.trim()).ok()
}

fn truncate_to_secs(t: SystemTime) -> SystemTime {
    let secs = t
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    UNIX_EPOCH + Duration::from_secs(secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn precondition_table() {
        let t = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let date = httpdate::fmt_http_date(t);
        let older = httpdate::fmt_http_date(t - Duration::from_secs(10));
        let e = "\"a-b\"";
        use Precondition::*;
        let cases: Vec<(Vec<(&str, &str)>, Precondition)> = vec![
            (vec![], Proceed),
            (vec![("if-none-match", e)], NotModified),
            (vec![("if-none-match", "W/\"a-b\"")], NotModified),
            (vec![("if-none-match", "\"x\", \"a-b\"")], NotModified),
            (vec![("if-none-match", "*")], NotModified),
            (vec![("if-none-match", "\"x\"")], Proceed),
            (vec![("if-modified-since", &date)], NotModified),
            (vec![("if-modified-since", &older)], Proceed),
            (
                vec![("if-none-match", "\"x\""), ("if-modified-since", &date)],
                Proceed,
            ),
            (vec![("if-match", "\"x\"")], Failed),
            (vec![("if-match", e)], Proceed),
            (vec![("if-match", "W/\"a-b\"")], Failed),
            (vec![("if-unmodified-since", &older)], Failed),
            (vec![("if-unmodified-since", &date)], Proceed),
            (vec![("if-modified-since", "garbage")], Proceed),
        ];
        for (h, want) in cases {
            assert_eq!(preconditions(&headers(&h), e, t), want, "{h:?}");
        }
    }

    #[test]
    fn if_range() {
        let t = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let e = "\"a-b\"";
        assert!(if_range_holds(&headers(&[]), e, t));
        assert!(if_range_holds(&headers(&[("if-range", e)]), e, t));
        assert!(!if_range_holds(&headers(&[("if-range", "\"zz\"")]), e, t));
        assert!(if_range_holds(
            &headers(&[("if-range", &httpdate::fmt_http_date(t))]),
            e,
            t
        ));
        assert!(!if_range_holds(
            &headers(&[("if-range", "W/\"a-b\"")]),
            e,
            t
        ));
    }

    /// Found by `fuzz/` (target `conditional`): a value with non-ASCII bytes read as an
    /// absent header, so `If-Match` passed and `If-Range` let the range through.
    #[test]
    fn unreadable_conditionals_match_nothing() {
        let t = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let e = "\"a-b\"";
        let odd = |name: &'static str| {
            let mut h = HeaderMap::new();
            h.insert(name, HeaderValue::from_bytes(b"\xc3\xa9").unwrap());
            h
        };
        assert_eq!(preconditions(&odd("if-match"), e, t), Precondition::Failed);
        let mut h = odd("if-none-match");
        h.insert("if-modified-since", hv(&httpdate::fmt_http_date(t)));
        assert_eq!(preconditions(&h, e, t), Precondition::Proceed);
        assert!(!if_range_holds(&odd("if-range"), e, t));
    }

    #[test]
    fn multipart_length_is_exact() {
        let ranges = [
            ByteRange { start: 0, end: 9 },
            ByteRange {
                start: 100,
                end: 109,
            },
        ];
        let parts = multipart_parts(&ranges, 200, "text/plain", "B");
        let total: u64 = parts.iter().map(Part::len).sum();
        let headers: u64 = parts
            .iter()
            .filter_map(|p| match p {
                Part::Bytes(b) => Some(b.len() as u64),
                _ => None,
            })
            .sum();
        assert_eq!(total, headers + 20);
    }
}
