//! `Range: bytes=...` parsing, merging and caps (RFC 9110 section 14).
//!
//! 1. Parse every spec (`a-b`, `a-`, `-n`); any syntax error -> the header is ignored (the
//!    whole file is served, as RFC 9110 allows).
//! 2. Too many specs in the header (over [`MAX_SPECS`]) -> ignored too: the work a header
//!    can cause is bounded before anything is resolved.
//! 3. Resolve against the file length, drop unsatisfiable specs; none left -> 416.
//! 4. Sort and merge overlapping or nearly adjacent ranges (gap < [`MERGE_GAP`]), so a client
//!    cannot make the server send the same bytes many times.
//! 5. More than `max_ranges` left -> ignored (serve the whole file once).

/// The most specs parsed from one header.
pub const MAX_SPECS: usize = 100;
/// Ranges closer than this are merged (saves part headers, bounds overhead).
pub const MERGE_GAP: u64 = 80;

/// An inclusive byte range `[start, end]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteRange {
    pub start: u64,
    pub end: u64,
}

impl ByteRange {
    pub fn len(&self) -> u64 {
        self.end - self.start + 1
    }
    pub fn is_empty(&self) -> bool {
        false
    }
}

/// What to do with a `Range` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RangeDecision {
    /// Serve the whole representation (no header, bad syntax, or too many ranges).
    Full,
    /// Serve these ranges (sorted, merged, non-empty).
    Partial(Vec<ByteRange>),
    /// 416 Range Not Satisfiable.
    Unsatisfiable,
}

enum Spec {
    FromTo(u64, Option<u64>),
    Suffix(u64),
}

fn parse_specs(header: &str) -> Option<Vec<Spec>> {
    let rest = header.trim().strip_prefix("bytes=")?;
    let mut specs = Vec::new();
    for part in rest.split(',') {
        let part = part.trim();
        if part.is_empty() {
            continue;
        }
        if specs.len() == MAX_SPECS {
            return None;
        }
        let (a, b) = part.split_once('-')?;
        let num = |s: &str| -> Option<u64> {
            (!s.is_empty() && s.bytes().all(|c| c.is_ascii_digit()))
                .then(|| s.parse().ok())
                .flatten()
        };
        let spec = if a.is_empty() {
            Spec::Suffix(num(b)?)
        } else {
            let start = num(a)?;
            let end = if b.is_empty() { None } else { Some(num(b)?) };
            if matches!(end, Some(e) if e < start) {
                return None;
            }
            Spec::FromTo(start, end)
        };
        specs.push(spec);
    }
    (!specs.is_empty()).then_some(specs)
}

/// Decides how to answer `header` for a representation of `len` bytes.
pub fn decide(header: &str, len: u64, max_ranges: usize) -> RangeDecision {
    let Some(specs) = parse_specs(header) else {
        return RangeDecision::Full;
    };
    let mut ranges: Vec<ByteRange> = specs
        .into_iter()
        .filter_map(|s| match s {
            Spec::FromTo(start, end) if start < len => Some(ByteRange {
                start,
                end: end.map_or(len - 1, |e| e.min(len - 1)),
            }),
            Spec::Suffix(n) if n > 0 && len > 0 => Some(ByteRange {
                start: len.saturating_sub(n),
                end: len - 1,
            }),
            _ => None,
        })
        .collect();
    if ranges.is_empty() {
        return RangeDecision::Unsatisfiable;
    }
    ranges.sort_by_key(|r| r.start);
    let mut merged: Vec<ByteRange> = Vec::with_capacity(ranges.len());
    for r in ranges {
        match merged.last_mut() {
            Some(last) if r.start <= last.end.saturating_add(MERGE_GAP) => {
                last.end = last.end.max(r.end)
            }
            _ => merged.push(r),
        }
    }
    if merged.len() > max_ranges {
        return RangeDecision::Full;
    }
    RangeDecision::Partial(merged)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(start: u64, end: u64) -> ByteRange {
        ByteRange { start, end }
    }

    #[test]
    fn table() {
        use RangeDecision::*;
        let cases: Vec<(&str, u64, RangeDecision)> = vec![
            ("bytes=0-99", 1000, Partial(vec![r(0, 99)])),
            ("bytes=100-", 1000, Partial(vec![r(100, 999)])),
            ("bytes=-100", 1000, Partial(vec![r(900, 999)])),
            ("bytes=-5000", 1000, Partial(vec![r(0, 999)])),
            ("bytes=900-5000", 1000, Partial(vec![r(900, 999)])),
            ("bytes=0-0,-1", 1000, Partial(vec![r(0, 0), r(999, 999)])),
            ("bytes=0-99,50-149", 1000, Partial(vec![r(0, 149)])),
            ("bytes=0-9,20-29", 1000, Partial(vec![r(0, 29)])),
            (
                "bytes=500-599,0-99",
                1000,
                Partial(vec![r(0, 99), r(500, 599)]),
            ),
            ("bytes=1000-", 1000, Unsatisfiable),
            ("bytes=-0", 1000, Unsatisfiable),
            ("bytes=0-", 0, Unsatisfiable),
            ("bytes=5-1", 1000, Full),
            ("bytes=a-b", 1000, Full),
            ("items=0-1", 1000, Full),
            ("bytes=", 1000, Full),
            ("bytes=0-99, 1000-2000", 1000, Partial(vec![r(0, 99)])),
        ];
        for (h, len, want) in cases {
            assert_eq!(decide(h, len, 16), want, "{h}");
        }
    }

    #[test]
    fn caps() {
        let many: Vec<String> = (0..50)
            .map(|i| format!("{}-{}", i * 1000, i * 1000))
            .collect();
        let h = format!("bytes={}", many.join(","));
        assert_eq!(decide(&h, 100_000, 16), RangeDecision::Full);
        assert!(matches!(decide(&h, 100_000, 64), RangeDecision::Partial(v) if v.len() == 50));
        let too_many: Vec<String> = (0..101).map(|_| "0-1".to_string()).collect();
        let h = format!("bytes={}", too_many.join(","));
        assert_eq!(decide(&h, 10, 16), RangeDecision::Full);
        // The same range repeated collapses to one.
        let h = format!("bytes={}", vec!["0-99"; 100].join(","));
        assert_eq!(decide(&h, 1000, 16), RangeDecision::Partial(vec![r(0, 99)]));
    }

    proptest::proptest! {
        #[test]
        fn ranges_are_sorted_disjoint_and_inside(h in "bytes=[0-9,\\- ]{0,30}", len in 0u64..5000) {
            if let RangeDecision::Partial(v) = decide(&h, len, 16) {
                proptest::prop_assert!(!v.is_empty() && v.len() <= 16);
                for w in v.windows(2) {
                    proptest::prop_assert!(w[0].end + MERGE_GAP < w[1].start);
                }
                for x in &v {
                    proptest::prop_assert!(x.start <= x.end && x.end < len);
                }
            }
        }
    }
}
