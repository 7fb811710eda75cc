//! The transfer buffer budget: every streaming transfer leases its buffer size here.
//!
//! Rule: a transfer holds at most two buffers (one filling, one being written or sent), so
//! with `n` transfers active a new lease gets the largest power of two not above
//! `budget / (2 n)`, clamped to `[min, max]`. Memory for buffers therefore stays near the
//! budget however many clients connect, and a lone transfer gets the largest buffer.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// Smallest buffer handed out (unless `max` is smaller).
pub const MIN_BUFFER: usize = 32 << 10;

#[derive(Debug)]
pub struct Buffers {
    max: usize,
    budget: u64,
    active: AtomicUsize,
}

/// A transfer's buffer size; returned to the budget on drop.
#[derive(Debug)]
pub struct Lease {
    pool: Arc<Buffers>,
    pub size: usize,
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.pool.active.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Buffers {
    pub fn new(max: usize, budget: u64) -> Arc<Buffers> {
        Arc::new(Buffers {
            max: max.max(1),
            budget,
            active: AtomicUsize::new(0),
        })
    }

    /// Buffer size for `active` concurrent transfers (pure; see the module rule).
    pub fn size_for(&self, active: usize) -> usize {
        let share = self.budget / (2 * active.max(1) as u64);
        let share = usize::try_from(share).unwrap_or(usize::MAX);
        let pow2 = if share == 0 {
            1
        } else {
            1usize << (usize::BITS - 1 - share.leading_zeros())
        };
        pow2.clamp(MIN_BUFFER.min(self.max), self.max)
    }

    pub fn lease(self: &Arc<Self>) -> Lease {
        let active = self.active.fetch_add(1, Ordering::Relaxed) + 1;
        Lease {
            pool: self.clone(),
            size: self.size_for(active),
        }
    }

    pub fn active(&self) -> usize {
        self.active.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shrinks_with_load_within_bounds() {
        let b = Buffers::new(256 << 10, 32 << 20);
        assert_eq!(b.size_for(1), 256 << 10);
        assert_eq!(b.size_for(64), 256 << 10);
        assert_eq!(b.size_for(100), 128 << 10);
        assert_eq!(b.size_for(10_000), 32 << 10);
        let mut last = usize::MAX;
        for n in 1..2000 {
            let s = b.size_for(n);
            assert!(s <= last && s.is_power_of_two() && (32 << 10..=256 << 10).contains(&s));
            last = s;
        }
        let small = Buffers::new(4096, 1 << 20);
        assert_eq!(small.size_for(1), 4096);
    }

    #[test]
    fn leases_are_counted() {
        let b = Buffers::new(256 << 10, 1 << 20);
        let l1 = b.lease();
        let l2 = b.lease();
        assert_eq!(b.active(), 2);
        assert_eq!(l1.size, 256 << 10);
        assert_eq!(l2.size, 256 << 10);
        drop((l1, l2));
        assert_eq!(b.active(), 0);
    }
}
