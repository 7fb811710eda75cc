//! Target `conditional`: `If-Match`, `If-None-Match`, `If-Modified-Since`,
//! `If-Unmodified-Since` and `If-Range` against a stored file's validators.

use crate::{header, headers, lines, number};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use xferd::core::download::{if_range_holds, preconditions, Precondition};

fn date(v: &str) -> Option<SystemTime> {
    httpdate::parse_http_date(v.trim()).ok()
}

/// `*` or an entity tag in a comma-separated list; a weak match allows `W/"…"`.
fn listed(list: &str, etag: &str, weak: bool) -> bool {
    list.split(',').any(|t| {
        let t = t.trim();
        t == "*" || t == etag || (weak && t.len() > 2 && &t[..2] == "W/" && &t[2..] == etag)
    })
}

/// Whether header `name` lists `etag`; `None` when absent. A value that is not visible
/// ASCII lists nothing (it cannot name an ASCII tag), but is still present.
fn list_header(h: &http::HeaderMap, name: &str, etag: &str, weak: bool) -> Option<bool> {
    h.get(name)
        .map(|v| v.to_str().is_ok_and(|v| listed(v, etag, weak)))
}

/// RFC 9110 section 13.2.2, steps 1 to 4, for a `GET`.
fn reference(h: &http::HeaderMap, etag: &str, modified: SystemTime) -> Precondition {
    let step1 = list_header(h, "if-match", etag, false);
    let step2 = header(h, "if-unmodified-since")
        .and_then(date)
        .map(|d| modified <= d);
    if step1 == Some(false) || (step1.is_none() && step2 == Some(false)) {
        return Precondition::Failed;
    }
    let step3 = list_header(h, "if-none-match", etag, true);
    let step4 = header(h, "if-modified-since")
        .and_then(date)
        .map(|d| modified <= d);
    if step3 == Some(true) || (step3.is_none() && step4 == Some(true)) {
        return Precondition::NotModified;
    }
    Precondition::Proceed
}

/// Input: line 1 the file size, line 2 its modification time in nanoseconds, then
/// `Name: value` header lines.
///
/// Properties: the preconditions agree with [`reference`]; `If-Range` holds when absent,
/// when it is exactly the (strong) entity tag, or when it is the modification date to the
/// second, and never for a weak tag or any other date or tag.
pub fn conditional(data: &[u8]) {
    let l = lines(data);
    let size = number(&l[0]);
    let nanos = l.get(1).map_or(0, |n| number(n)) % (1 << 62);
    let etag = format!("\"{size:x}-{nanos:x}\"");
    let modified = UNIX_EPOCH + Duration::from_nanos(nanos);
    let seconds = UNIX_EPOCH + Duration::from_secs(nanos / 1_000_000_000);
    let h = headers(l.iter().skip(2));
    assert_eq!(
        preconditions(&h, &etag, modified),
        reference(&h, &etag, seconds),
        "{h:?}"
    );
    let holds = if_range_holds(&h, &etag, modified);
    let want = match header(&h, "if-range") {
        // An If-Range that cannot be read cannot match: the Range is ignored.
        None => h.get("if-range").is_none(),
        Some(v) if v.trim_start().starts_with('"') => v.trim() == etag,
        Some(v) => date(v) == Some(seconds),
    };
    assert_eq!(holds, want, "If-Range {:?}", h.get("if-range"));
    // The file's own validators always satisfy the matching conditions.
    let mut own = http::HeaderMap::new();
    own.insert("if-match", etag.parse().expect("etag is a header value"));
    own.insert("if-range", etag.parse().expect("etag is a header value"));
    assert_eq!(preconditions(&own, &etag, modified), Precondition::Proceed);
    assert!(if_range_holds(&own, &etag, modified));
    own.insert("if-none-match", format!("W/{etag}").parse().expect("value"));
    assert_eq!(
        preconditions(&own, &etag, modified),
        Precondition::NotModified
    );
    let stamp = httpdate::fmt_http_date(modified);
    own.insert("if-range", stamp.parse().expect("a date is a header value"));
    assert!(if_range_holds(&own, &etag, modified));
}
