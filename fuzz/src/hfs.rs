//! Target `hfs_chunk`: HFS chunked-upload headers (`X-Filename`, `X-Total-Size`,
//! `X-Chunk-Number`) and the chunk arithmetic behind them.

use crate::uri::check_rel;
use crate::{headers, lines, number};
use percent_encoding::percent_decode_str;
use xferd::core::resumable::common::header_u64;
use xferd::core::resumable::hfs::{chunk_span, target_of, total_chunks};

/// Input: line 1 the chunk size, then `Name: value` header lines.
///
/// Properties: an accepted `X-Filename` stays beneath the root and is the value without its
/// leading `/`, percent-decoded once; chunk `n` exists exactly when `n < total_chunks`, lies
/// inside the upload, is `size` bytes except the last, and the chunks tile the upload.
pub fn hfs_chunk(data: &[u8]) {
    let l = lines(data);
    let size = (number(&l[0]) % (1 << 40)).max(1);
    let h = headers(l.iter().skip(1));
    if let Some(name) = h.get("x-filename").and_then(|v| v.to_str().ok()) {
        if let Ok(rel) = target_of(name) {
            check_rel(&rel);
            let once = percent_decode_str(name.trim_start_matches('/'))
                .decode_utf8()
                .expect("accepted names decode");
            assert_eq!(*once, *rel.as_str());
        }
    }
    crate::resumable::check_u64(&h, "x-total-size");
    crate::resumable::check_u64(&h, "x-chunk-number");
    let total = header_u64(&h, "x-total-size").ok().flatten().unwrap_or(0);
    let Some(n) = header_u64(&h, "x-chunk-number").ok().flatten() else {
        return;
    };
    let count = total_chunks(total, size);
    assert!(u128::from(count) * u128::from(size) >= u128::from(total));
    match chunk_span(n, size, total) {
        None => assert!(n >= count, "chunk {n} of {count} refused"),
        Some((offset, len)) => {
            assert!(n < count, "chunk {n} of {count} accepted");
            assert_eq!(u128::from(offset), u128::from(n) * u128::from(size));
            assert!(len >= 1 && len <= size && offset + len <= total);
            if n + 1 < count {
                assert_eq!(len, size);
                assert_eq!(
                    chunk_span(n + 1, size, total).map(|s| s.0),
                    Some(offset + len)
                );
            } else {
                assert_eq!(offset + len, total, "the last chunk ends the upload");
                assert_eq!(chunk_span(n + 1, size, total), None);
            }
        }
    }
}
