//! The buffer pool: power-of-two size classes between `min` and `max`, reused, with the
//! memory of buffers in use and pooled capped by `limit`.
//!
//! A transfer holds a [`Lease`] of one size class and at most two buffers of it at a time
//! (one filling, one being written or sent), so a lease accounts `2 x size` bytes. Buffers
//! given back go to their class's free list while in-use plus pooled bytes stay under the
//! limit, else they are freed. The size a lease gets is decided by [`super::sizing`] from
//! [`Pool::pressure`]; a lease may change size while it runs ([`Lease::retune`]).

use super::adaptive::Tuning;
use super::sizing::Pressure;
use bytes::BytesMut;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

#[derive(Debug)]
pub struct Pool {
    min: usize,
    max: usize,
    limit: u64,
    active: AtomicUsize,
    in_use: AtomicU64,
    idle: Mutex<Idle>,
}

#[derive(Debug, Default)]
struct Idle {
    /// Free buffers by class (index = log2(size / min)).
    lists: Vec<Vec<BytesMut>>,
    bytes: u64,
}

/// A transfer's share of the pool; returned on drop.
#[derive(Debug)]
pub struct Lease {
    pool: Arc<Pool>,
    size: usize,
    /// Set by the adaptive engine: how to re-evaluate the size while the transfer runs.
    pub(crate) tuning: Option<Tuning>,
}

impl Pool {
    /// `min` and `max` are rounded up to powers of two.
    pub fn new(min: usize, max: usize, limit: u64) -> Arc<Pool> {
        let min = min.max(1).next_power_of_two();
        let max = max.max(min).next_power_of_two();
        let classes = (max / min).trailing_zeros() as usize + 1;
        Arc::new(Pool {
            min,
            max,
            limit,
            active: AtomicUsize::new(0),
            in_use: AtomicU64::new(0),
            idle: Mutex::new(Idle {
                lists: vec![Vec::new(); classes],
                bytes: 0,
            }),
        })
    }

    pub fn min(&self) -> usize {
        self.min
    }
    pub fn max(&self) -> usize {
        self.max
    }
    pub fn limit(&self) -> u64 {
        self.limit
    }
    /// Bytes accounted to running transfers.
    pub fn in_use(&self) -> u64 {
        self.in_use.load(Ordering::Relaxed)
    }
    /// Bytes in free lists.
    pub fn pooled(&self) -> u64 {
        self.lock().bytes
    }
    pub fn active(&self) -> usize {
        self.active.load(Ordering::Relaxed)
    }

    /// The pressure a transfer sees, not counting `own` bytes it already holds.
    pub fn pressure(&self, own: u64, counting_self: bool) -> Pressure {
        Pressure {
            active: self.active() + usize::from(counting_self),
            in_use: self.in_use().saturating_sub(own),
            limit: self.limit,
        }
    }

    /// A lease of `size` (clamped to the classes).
    pub fn lease(self: &Arc<Self>, size: usize) -> Lease {
        let size = self.class_size(size);
        self.active.fetch_add(1, Ordering::Relaxed);
        self.in_use.fetch_add(2 * size as u64, Ordering::Relaxed);
        Lease {
            pool: self.clone(),
            size,
            tuning: None,
        }
    }

    fn class_size(&self, size: usize) -> usize {
        size.clamp(self.min, self.max)
            .next_power_of_two()
            .min(self.max)
    }

    fn class_of(&self, size: usize) -> Option<usize> {
        (size.is_power_of_two() && (self.min..=self.max).contains(&size))
            .then(|| (size / self.min).trailing_zeros() as usize)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Idle> {
        match self.idle.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    fn take(&self, size: usize) -> BytesMut {
        if let Some(class) = self.class_of(size) {
            let mut idle = self.lock();
            if let Some(buf) = idle.lists.get_mut(class).and_then(Vec::pop) {
                idle.bytes = idle.bytes.saturating_sub(size as u64);
                return buf;
            }
        }
        BytesMut::with_capacity(size)
    }

    fn give(&self, mut buf: BytesMut) {
        buf.clear();
        let cap = buf.capacity();
        let Some(class) = self.class_of(cap) else {
            return;
        };
        let mut idle = self.lock();
        if idle.bytes + cap as u64 + self.in_use() <= self.limit {
            if let Some(list) = idle.lists.get_mut(class) {
                list.push(buf);
                idle.bytes += cap as u64;
            }
        }
    }
}

impl Lease {
    pub fn size(&self) -> usize {
        self.size
    }

    /// An empty buffer of this lease's size, from the pool when one is free.
    pub fn buffer(&self) -> BytesMut {
        self.pool.take(self.size)
    }

    /// Gives a buffer back for reuse (it is freed if it does not fit a class or the limit).
    pub fn recycle(&self, buf: BytesMut) {
        self.pool.give(buf);
    }

    /// Moves the lease to another size class; returns whether it changed.
    pub fn resize(&mut self, size: usize) -> bool {
        let size = self.pool.class_size(size);
        if size == self.size {
            return false;
        }
        self.pool
            .in_use
            .fetch_add(2 * size as u64, Ordering::Relaxed);
        self.pool
            .in_use
            .fetch_sub(2 * self.size as u64, Ordering::Relaxed);
        self.size = size;
        true
    }

    /// Re-evaluates the size when the adaptive engine says it is time; `done` bytes of the
    /// transfer have moved. Returns the (possibly new) size.
    pub fn retune(&mut self, done: u64) -> usize {
        if let Some(mut t) = self.tuning.take() {
            t.retune(self, done);
            self.tuning = Some(t);
        }
        self.size
    }

    pub(crate) fn pool(&self) -> &Arc<Pool> {
        &self.pool
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.pool.active.fetch_sub(1, Ordering::Relaxed);
        self.pool
            .in_use
            .fetch_sub(2 * self.size as u64, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leases_are_accounted_and_clamped_to_classes() {
        let p = Pool::new(32 << 10, 1 << 20, 8 << 20);
        let a = p.lease(100 << 10);
        assert_eq!(a.size(), 128 << 10);
        let mut b = p.lease(1);
        assert_eq!(b.size(), 32 << 10);
        assert_eq!(p.in_use(), 2 * (160 << 10));
        assert_eq!(p.active(), 2);
        assert!(b.resize(4 << 20));
        assert_eq!(b.size(), 1 << 20);
        assert!(!b.resize(1 << 20));
        assert_eq!(p.in_use(), 2 * ((128 << 10) + (1 << 20)));
        drop((a, b));
        assert_eq!((p.in_use(), p.active()), (0, 0));
    }

    #[test]
    fn buffers_are_reused_within_the_limit() {
        let p = Pool::new(4096, 16384, 64 << 10);
        let l = p.lease(8192);
        let mut buf = l.buffer();
        buf.extend_from_slice(b"data");
        let ptr = buf.as_ptr();
        l.recycle(buf);
        assert_eq!(p.pooled(), 8192);
        let again = l.buffer();
        assert_eq!(again.as_ptr(), ptr, "the same allocation comes back");
        assert!(again.is_empty());
        assert_eq!(p.pooled(), 0);
        // Over the limit: freed, not pooled.
        let big = p.lease(16384);
        let _others: Vec<Lease> = (0..2).map(|_| p.lease(16384)).collect();
        big.recycle(big.buffer());
        assert_eq!(p.pooled(), 0);
        // A buffer of no class is not pooled.
        l.recycle(BytesMut::with_capacity(5000));
        assert_eq!(p.pooled(), 0);
    }
}
