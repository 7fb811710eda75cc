//! A set of received byte ranges (half-open `[start, end)`), kept sorted and merged.
//! Chunks may arrive in any order and in parallel; the upload's offset is the end of the
//! contiguous prefix from 0, and it is complete when that prefix covers the whole length.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RangeSet(Vec<(u64, u64)>);

impl RangeSet {
    pub fn new() -> RangeSet {
        RangeSet(Vec::new())
    }

    /// Adds `[start, end)`, merging with overlapping or touching ranges.
    pub fn insert(&mut self, start: u64, end: u64) {
        if start >= end {
            return;
        }
        let mut merged = (start, end);
        let mut out = Vec::with_capacity(self.0.len() + 1);
        let mut placed = false;
        for &(s, e) in &self.0 {
            if e < merged.0 {
                out.push((s, e));
            } else if s > merged.1 {
                if !placed {
                    out.push(merged);
                    placed = true;
                }
                out.push((s, e));
            } else {
                merged = (merged.0.min(s), merged.1.max(e));
            }
        }
        if !placed {
            out.push(merged);
        }
        self.0 = out;
    }

    /// End of the contiguous prefix starting at 0.
    pub fn prefix_end(&self) -> u64 {
        match self.0.first() {
            Some(&(0, e)) => e,
            _ => 0,
        }
    }

    /// Total bytes covered.
    pub fn covered(&self) -> u64 {
        self.0.iter().map(|(s, e)| e - s).sum()
    }

    /// True when `[start, end)` is entirely covered.
    pub fn contains(&self, start: u64, end: u64) -> bool {
        start >= end || self.0.iter().any(|&(s, e)| s <= start && end <= e)
    }

    /// The highest byte end received (0 if none).
    pub fn max_end(&self) -> u64 {
        self.0.last().map_or(0, |r| r.1)
    }

    pub fn ranges(&self) -> &[(u64, u64)] {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merges_in_any_order() {
        let mut r = RangeSet::new();
        r.insert(10, 20);
        assert_eq!(r.prefix_end(), 0);
        r.insert(30, 40);
        r.insert(0, 5);
        assert_eq!(r.prefix_end(), 5);
        r.insert(5, 10);
        assert_eq!(r.ranges(), &[(0, 20), (30, 40)]);
        r.insert(15, 35);
        assert_eq!(r.ranges(), &[(0, 40)]);
        assert_eq!(r.covered(), 40);
        assert!(r.contains(3, 39));
        r.insert(7, 7);
        assert_eq!(r.ranges(), &[(0, 40)]);
    }

    proptest::proptest! {
        #[test]
        fn matches_a_bitmap(ops in proptest::collection::vec((0u64..200, 0u64..50), 0..40)) {
            let mut set = RangeSet::new();
            let mut bits = [false; 256];
            for (s, l) in ops {
                set.insert(s, s + l);
                for b in bits.iter_mut().skip(s as usize).take(l as usize) { *b = true; }
            }
            let covered = bits.iter().filter(|b| **b).count() as u64;
            proptest::prop_assert_eq!(set.covered(), covered);
            let prefix = bits.iter().take_while(|b| **b).count() as u64;
            proptest::prop_assert_eq!(set.prefix_end(), prefix);
            for w in set.ranges().windows(2) {
                proptest::prop_assert!(w[0].1 < w[1].0);
            }
        }
    }
}
