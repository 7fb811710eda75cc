//! Targets `path` (percent-decoding and path validation) and `range` (`Range` headers).

use crate::{lines, number};
use percent_encoding::{percent_decode_str, utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use std::path::{Component, Path};
use xferd::core::path::{self, RelPath, MAX_PATH, MAX_SEGMENT, RESERVED_PREFIX};
use xferd::core::range::{self, ByteRange, RangeDecision, MAX_SPECS, MERGE_GAP};

/// Everything but `/` is encoded when a key is written back into a URL.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC.remove(b'/');

/// The invariants of every accepted path: it stays beneath the storage root.
pub fn check_rel(rel: &RelPath) {
    let s = rel.as_str();
    assert!(!s.is_empty() && s.len() <= MAX_PATH, "length of {s:?}");
    assert!(!s.starts_with('/'), "absolute {s:?}");
    for seg in s.split('/') {
        assert!(
            !seg.is_empty() && seg != "." && seg != "..",
            "segment in {s:?}"
        );
        assert!(seg.len() <= MAX_SEGMENT, "segment length in {s:?}");
        assert!(!seg.contains('\\'), "backslash in {s:?}");
        assert!(!seg.chars().any(char::is_control), "control in {s:?}");
        assert!(!seg.starts_with(RESERVED_PREFIX), "reserved in {s:?}");
    }
    let root = Path::new("/srv/xferd");
    let joined = root.join(s);
    assert!(joined.starts_with(root), "{s:?} leaves the root");
    assert!(
        Path::new(s)
            .components()
            .all(|c| matches!(c, Component::Normal(_))),
        "{s:?} has a non-normal component"
    );
    assert_eq!(
        path::validate(s).as_ref(),
        Ok(rel),
        "validate is not idempotent"
    );
}

/// Input: line 1 the raw URL path, line 2 the configured prefix (optional).
///
/// Properties: an accepted path satisfies [`check_rel`]; it is the input percent-decoded
/// exactly once (prefix stripped); writing it back into a URL and resolving again gives the
/// same key; a path without a leading `/` is refused as traversal.
pub fn path(data: &[u8]) {
    let l = lines(data);
    let raw = l[0].as_str();
    let prefix = l.get(1).map_or("", |p| p.trim_matches('/'));
    if let Ok(rel) = path::validate(raw) {
        check_rel(&rel);
        assert_eq!(rel.as_str(), raw, "validate changed its input");
    }
    match path::resolve(raw, prefix) {
        Ok(rel) => {
            check_rel(&rel);
            let once = percent_decode_str(&raw[1..])
                .decode_utf8()
                .expect("an accepted path decodes");
            let stripped = format!("{prefix}/{}", rel.as_str());
            assert!(
                *once == *rel.as_str() || (!prefix.is_empty() && *once == stripped),
                "{raw:?} -> {rel:?} is not one decoding"
            );
            let url = format!("/{}", utf8_percent_encode(rel.as_str(), SEGMENT));
            assert_eq!(path::resolve(&url, "").as_ref(), Ok(&rel), "round trip");
        }
        Err(e) => {
            if !raw.starts_with('/') {
                assert_eq!(e, path::PathError::Traversal);
            }
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Reference {
    Full,
    Unsatisfiable,
    /// The requested ranges resolved against the length, unmerged, in request order.
    Requested(Vec<(u64, u64)>),
}

/// RFC 9110 section 14.1.1 `bytes=` sets, parsed strictly (digits only, no sign, no
/// whitespace inside a spec), with xferd's policy: any bad spec or more than `MAX_SPECS`
/// specs -> the whole file.
fn reference(header: &str, len: u64) -> Reference {
    let Some(rest) = header.trim().strip_prefix("bytes=") else {
        return Reference::Full;
    };
    let specs: Vec<&str> = rest
        .split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .collect();
    if specs.is_empty() || specs.len() > MAX_SPECS {
        return Reference::Full;
    }
    let digits = |s: &str| -> Option<Option<u64>> {
        if s.is_empty() {
            return Some(None);
        }
        if !s.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let v: u128 = s.trim_start_matches('0').parse().unwrap_or(0);
        if s.trim_start_matches('0').len() > 20 || v > u128::from(u64::MAX) {
            return None;
        }
        Some(Some(v as u64))
    };
    let mut out = Vec::new();
    for spec in specs {
        let Some(dash) = spec.find('-') else {
            return Reference::Full;
        };
        let (Some(a), Some(b)) = (digits(&spec[..dash]), digits(&spec[dash + 1..])) else {
            return Reference::Full;
        };
        match (a, b) {
            (None, None) => return Reference::Full,
            (None, Some(n)) => {
                if n > 0 && len > 0 {
                    out.push((len - n.min(len), len - 1));
                }
            }
            (Some(first), last) => {
                if matches!(last, Some(l) if l < first) {
                    return Reference::Full;
                }
                if first < len {
                    out.push((first, last.map_or(len - 1, |l| l.min(len - 1))));
                }
            }
        }
    }
    if out.is_empty() {
        Reference::Unsatisfiable
    } else {
        Reference::Requested(out)
    }
}

/// Input: line 1 the file length, line 2 `max_ranges`, the rest the `Range` value.
///
/// Properties: the decision agrees with [`reference`] on whole file / 416 / partial; every
/// range served lies inside the file, ranges are sorted and separated by more than
/// `MERGE_GAP`, each starts and ends on a requested byte, together they cover every
/// requested byte, there are at most `max_ranges` of them and they never send a byte twice.
pub fn range(data: &[u8]) {
    let l = lines(data);
    let len = number(&l[0]) % (1 << 40);
    let max_ranges = l.get(1).map_or(1, |m| number(m) % 200) as usize;
    let header = l.get(2..).map_or(String::new(), |r| r.join("\n"));
    let got = range::decide(&header, len, max_ranges);
    match (reference(&header, len), &got) {
        (Reference::Full, RangeDecision::Full) => {}
        (Reference::Unsatisfiable, RangeDecision::Unsatisfiable) => {}
        (Reference::Requested(req), got) => {
            let ranges: &[ByteRange] = match got {
                RangeDecision::Partial(r) => r,
                RangeDecision::Full => {
                    assert!(merged_count(&req) > max_ranges, "{header:?} ignored");
                    return;
                }
                RangeDecision::Unsatisfiable => panic!("{header:?}: 416 for satisfiable"),
            };
            assert!(!ranges.is_empty() && ranges.len() <= max_ranges);
            let mut total = 0u64;
            for (i, r) in ranges.iter().enumerate() {
                assert!(r.start <= r.end && r.end < len, "{r:?} outside {len}");
                total += r.len();
                if i > 0 {
                    assert!(r.start > ranges[i - 1].end.saturating_add(MERGE_GAP));
                }
                assert!(req.iter().any(|&(s, _)| s == r.start), "{r:?} start");
                assert!(req.iter().any(|&(_, e)| e == r.end), "{r:?} end");
            }
            assert!(total <= len);
            for &(s, e) in &req {
                assert!(
                    ranges.iter().any(|r| r.start <= s && e <= r.end),
                    "requested {s}-{e} not served"
                );
            }
            assert_eq!(ranges.len(), merged_count(&req));
        }
        (want, got) => panic!("{header:?} len {len}: want {want:?}, got {got:?}"),
    }
}

/// How many ranges `req` makes once overlapping or nearly adjacent ones are joined.
fn merged_count(req: &[(u64, u64)]) -> usize {
    let mut v = req.to_vec();
    v.sort_unstable();
    let mut count = 0;
    let mut end: Option<u64> = None;
    for (s, e) in v {
        match end {
            Some(x) if s <= x.saturating_add(MERGE_GAP) => end = Some(x.max(e)),
            _ => {
                count += 1;
                end = Some(e);
            }
        }
    }
    count
}
