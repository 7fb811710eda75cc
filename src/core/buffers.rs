//! The buffer pool: power-of-two size classes between `min` and `max`, reused, with the
//! memory of buffers in use and pooled capped by `limit` (a hard cap).
//!
//! A transfer holds a [`Lease`] of one size class and at most two buffers of it at a time
//! (one filling, one being written or sent), so a lease accounts `2 x size` bytes. The
//! invariant, kept under one lock: accounted in-use bytes plus pooled bytes never exceed
//! `limit`.
//!
//! 1. A new lease ([`Pool::try_lease`]) gets the asked size class, or the largest smaller
//!    class that fits; pooled buffers are freed first to make room. When not even the
//!    minimum fits, there is no lease: [`Pool::lease_wait`] waits (at most [`LEASE_WAIT`])
//!    for memory to be given back, then refuses ([`Exhausted`], a 503 with `Retry-After`).
//! 2. A lease grows ([`Lease::resize`]) only as far as the limit allows; shrinking and
//!    dropping give memory back and wake waiting transfers.
//! 3. Buffers given back go to their class's free list while the invariant holds, else
//!    they are freed.
//! 4. Memory follows the data rate: a transfer's lease starts at the smallest class
//!    ([`Pool::lease_growing`]) and doubles ([`Lease::grow`]) only when a buffer of its
//!    current size filled (or drained) within one service time
//!    ([`super::sizing::SERVICE_TIME`]), up to its cap (the size [`super::sizing`] chose;
//!    [`Lease::set_cap`] lowers it under pressure and shrinks the lease to it). So a slow
//!    client holds one small class, however early it came: a thousand phones uploading at
//!    64 KiB/s fit in the default 64 MiB, where leases granted at their cap let the first
//!    32 uploads take all of it and refused the rest.
//!
//! The size a lease asks for is decided by [`super::sizing`] from [`Pool::pressure`]; a
//! lease may change size while it runs ([`Lease::retune`]).

use super::sizing::Pressure;
use bytes::BytesMut;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How long a transfer waits for buffer memory before it is refused.
pub const LEASE_WAIT: Duration = Duration::from_secs(5);
/// The `Retry-After` of a refusal for want of buffer memory.
pub const RETRY_AFTER: Duration = Duration::from_secs(2);

/// No buffer memory became free within the wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exhausted;

#[derive(Debug)]
pub struct Pool {
    min: usize,
    max: usize,
    limit: u64,
    wait: Duration,
    active: AtomicUsize,
    /// A copy of `State::in_use` for lock-free reads (written under the lock).
    in_use: AtomicU64,
    state: Mutex<State>,
    freed: tokio::sync::Notify,
}

#[derive(Debug, Default)]
struct State {
    /// Free buffers by class (index = log2(size / min)).
    lists: Vec<Vec<BytesMut>>,
    /// Bytes in the free lists.
    pooled: u64,
    /// Bytes accounted to leases (2 x size each).
    in_use: u64,
}

/// How a lease's size is re-evaluated while its transfer runs. Owned here and implemented
/// by the adaptive engine, so the pool does not depend on it (no buffers <-> adaptive
/// cycle; `tests/boundaries.rs`).
pub trait Retune: Send + Sync + std::fmt::Debug {
    /// Re-sizes `lease` if it is time to; `done` bytes of the transfer have moved.
    fn retune(&mut self, lease: &mut Lease, done: u64);
}

/// A transfer's share of the pool; returned on drop.
#[derive(Debug)]
pub struct Lease {
    pool: Arc<Pool>,
    size: usize,
    /// The most [`Lease::grow`] may reach.
    cap: usize,
    /// Set by the adaptive engine: how to re-evaluate the size while the transfer runs.
    pub(crate) tuning: Option<Box<dyn Retune>>,
}

impl Pool {
    /// `min` and `max` are rounded up to powers of two.
    pub fn new(min: usize, max: usize, limit: u64) -> Arc<Pool> {
        Self::with_wait(min, max, limit, LEASE_WAIT)
    }

    /// Like [`Pool::new`], waiting at most `wait` for memory in [`Pool::lease_wait`].
    pub fn with_wait(min: usize, max: usize, limit: u64, wait: Duration) -> Arc<Pool> {
        let min = min.max(1).next_power_of_two();
        let max = max.max(min).next_power_of_two();
        let classes = (max / min).trailing_zeros() as usize + 1;
        Arc::new(Pool {
            min,
            max,
            limit,
            wait,
            active: AtomicUsize::new(0),
            in_use: AtomicU64::new(0),
            state: Mutex::new(State {
                lists: vec![Vec::new(); classes],
                pooled: 0,
                in_use: 0,
            }),
            freed: tokio::sync::Notify::new(),
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
        self.lock().pooled
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

    /// A lease of `size` (clamped to the classes), or of the largest smaller class that
    /// fits under the limit; `None` when not even the minimum fits.
    pub fn try_lease(self: &Arc<Self>, size: usize) -> Option<Lease> {
        let want = self.class_size(size);
        let mut st = self.lock();
        let size = self.fitting(&mut st, self.min, want, 0)?;
        self.account(&mut st, 2 * size as u64, 0);
        drop(st);
        self.active.fetch_add(1, Ordering::Relaxed);
        Some(Lease {
            pool: self.clone(),
            size,
            cap: size,
            tuning: None,
        })
    }

    /// A lease of the smallest class that may grow up to `cap` (rule 4), waiting (at most
    /// the pool's wait) for memory.
    pub async fn lease_growing(self: &Arc<Self>, cap: usize) -> Result<Lease, Exhausted> {
        let mut lease = self.lease_wait(self.min).await?;
        lease.cap = self.class_size(cap);
        Ok(lease)
    }

    /// A lease as [`Pool::try_lease`], waiting (at most the pool's wait) for memory.
    pub async fn lease_wait(self: &Arc<Self>, size: usize) -> Result<Lease, Exhausted> {
        let deadline = tokio::time::Instant::now() + self.wait;
        loop {
            // Registered before the check, so a release between the two is not missed.
            let freed = self.freed.notified();
            tokio::pin!(freed);
            freed.as_mut().enable();
            if let Some(lease) = self.try_lease(size) {
                return Ok(lease);
            }
            if tokio::time::timeout_at(deadline, freed).await.is_err() {
                return self.try_lease(size).ok_or(Exhausted);
            }
        }
    }

    /// The largest class in `lo..=hi` whose `2 x size` fits besides `held` bytes already
    /// accounted to the caller, freeing pooled buffers to make room.
    fn fitting(&self, st: &mut State, lo: usize, hi: usize, held: u64) -> Option<usize> {
        let free = self.limit.saturating_sub(st.in_use.saturating_sub(held));
        let mut size = hi;
        while 2 * size as u64 > free {
            if size <= lo {
                return None;
            }
            size /= 2;
        }
        let size = size.max(lo);
        // Make room in the free lists, largest classes first.
        let need = st
            .in_use
            .saturating_sub(held)
            .saturating_add(2 * size as u64);
        for list in st.lists.iter_mut().rev() {
            while st.pooled.saturating_add(need) > self.limit {
                match list.pop() {
                    Some(buf) => st.pooled = st.pooled.saturating_sub(buf.capacity() as u64),
                    None => break,
                }
            }
        }
        Some(size)
    }

    /// Adds `add` and removes `sub` accounted bytes.
    fn account(&self, st: &mut State, add: u64, sub: u64) {
        st.in_use = st.in_use.saturating_add(add).saturating_sub(sub);
        self.in_use.store(st.in_use, Ordering::Relaxed);
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

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        match self.state.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    fn take(&self, size: usize) -> BytesMut {
        if let Some(class) = self.class_of(size) {
            let mut st = self.lock();
            if let Some(buf) = st.lists.get_mut(class).and_then(Vec::pop) {
                st.pooled = st.pooled.saturating_sub(buf.capacity() as u64);
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
        let mut st = self.lock();
        if st
            .pooled
            .saturating_add(cap as u64)
            .saturating_add(st.in_use)
            <= self.limit
        {
            if let Some(list) = st.lists.get_mut(class) {
                list.push(buf);
                st.pooled += cap as u64;
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

    /// Moves the lease to another size class, growing only as far as the limit allows;
    /// returns whether it changed.
    pub fn resize(&mut self, size: usize) -> bool {
        let pool = self.pool.clone();
        let want = pool.class_size(size);
        if want == self.size {
            return false;
        }
        let old = self.size;
        let mut st = pool.lock();
        let new = if want < old {
            want
        } else {
            // Never shrinks here: `old` itself fits, being held.
            pool.fitting(&mut st, old, want, 2 * old as u64)
                .unwrap_or(old)
        };
        pool.account(&mut st, 2 * new as u64, 2 * old as u64);
        drop(st);
        if new < old {
            pool.freed.notify_waiters();
        }
        self.size = new;
        new != old
    }

    /// The most this lease may grow to.
    pub fn cap(&self) -> usize {
        self.cap
    }

    /// Sets the cap (rule 4), shrinking the lease to it if it is larger; returns whether
    /// the size changed.
    pub fn set_cap(&mut self, cap: usize) -> bool {
        self.cap = self.pool.class_size(cap);
        if self.size > self.cap {
            self.resize(self.cap)
        } else {
            false
        }
    }

    /// One class larger, within the cap and as far as the limit allows (rule 4); returns
    /// whether the size changed.
    pub fn grow(&mut self) -> bool {
        if self.size >= self.cap {
            return false;
        }
        self.resize(self.size.saturating_mul(2).min(self.cap))
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
        let mut st = self.pool.lock();
        self.pool.account(&mut st, 0, 2 * self.size as u64);
        drop(st);
        self.pool.active.fetch_sub(1, Ordering::Relaxed);
        self.pool.freed.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn growing_leases_start_small_and_double_up_to_their_cap() {
        // Rule 4.
        let p = Pool::new(32 << 10, 1 << 20, 8 << 20);
        let mut l = p.lease_growing(300 << 10).await.unwrap();
        assert_eq!((l.size(), l.cap()), (32 << 10, 512 << 10));
        assert_eq!(p.in_use(), 64 << 10);
        let mut sizes = vec![l.size()];
        while l.grow() {
            sizes.push(l.size());
        }
        assert_eq!(sizes, [32 << 10, 64 << 10, 128 << 10, 256 << 10, 512 << 10]);
        assert_eq!(p.in_use(), 1 << 20);
        // A lower cap shrinks at once; growth stops there.
        assert!(l.set_cap(100 << 10));
        assert_eq!((l.size(), l.cap()), (128 << 10, 128 << 10));
        assert!(!l.grow());
        assert_eq!(p.in_use(), 256 << 10);
        // Growth stays under the limit.
        let _big: Vec<Lease> = (0..3).map(|_| p.try_lease(1 << 20).unwrap()).collect();
        assert!(!l.set_cap(1 << 20));
        assert!(l.grow() && l.grow());
        assert_eq!(l.size(), 512 << 10);
        let last = p.try_lease(1 << 20).unwrap();
        assert_eq!(last.size(), 512 << 10, "what was left");
        assert_eq!(p.in_use(), p.limit());
        assert!(!l.grow(), "1 MiB more would pass the 8 MiB limit");
        assert_eq!(l.size(), 512 << 10);
        assert!(p.in_use() <= p.limit());
    }

    #[test]
    fn leases_are_accounted_and_clamped_to_classes() {
        let p = Pool::new(32 << 10, 1 << 20, 8 << 20);
        let a = p.try_lease(100 << 10).unwrap();
        assert_eq!(a.size(), 128 << 10);
        let mut b = p.try_lease(1).unwrap();
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
        let l = p.try_lease(8192).unwrap();
        let mut buf = l.buffer();
        buf.extend_from_slice(b"data");
        let ptr = buf.as_ptr();
        l.recycle(buf);
        assert_eq!(p.pooled(), 8192);
        let again = l.buffer();
        assert_eq!(again.as_ptr(), ptr, "the same allocation comes back");
        assert!(again.is_empty());
        assert_eq!(p.pooled(), 0);
        // At the limit: freed, not pooled.
        let big = p.try_lease(16384).unwrap();
        let other = p.try_lease(16384).unwrap();
        assert_eq!(other.size(), 8192, "what was left");
        assert_eq!(p.in_use(), 64 << 10);
        big.recycle(big.buffer());
        assert_eq!(p.pooled(), 0);
        // A buffer of no class is not pooled.
        l.recycle(BytesMut::with_capacity(5000));
        assert_eq!(p.pooled(), 0);
    }

    #[test]
    fn the_limit_is_hard() {
        // Room for two minimum leases (2 x 2 x 4 KiB).
        let p = Pool::new(4096, 65536, 16384);
        let mut a = p.try_lease(65536).unwrap();
        assert_eq!(a.size(), 8192, "the largest class that fits");
        assert!(p.try_lease(4096).is_none(), "full");
        assert!(a.resize(4096));
        let b = p.try_lease(65536).unwrap();
        assert_eq!(b.size(), 4096);
        assert!(!a.resize(65536), "cannot grow past the limit");
        assert!(p.try_lease(1).is_none());
        drop(b);
        assert!(a.resize(65536));
        assert_eq!(a.size(), 8192);
        assert_eq!(p.in_use(), 16384);
    }

    #[test]
    fn pooled_buffers_make_room_for_leases() {
        let p = Pool::new(4096, 4096, 16384);
        let a = p.try_lease(4096).unwrap();
        let bufs = [a.buffer(), a.buffer()];
        drop(a);
        for b in bufs {
            p.give(b);
        }
        assert_eq!(p.pooled(), 8192);
        let x = p.try_lease(4096).unwrap();
        let y = p.try_lease(4096).unwrap();
        assert_eq!(p.in_use() + p.pooled(), 16384, "pooled buffers were freed");
        drop((x, y));
    }

    #[tokio::test]
    async fn a_lease_waits_for_memory_then_is_refused() {
        let p = Pool::with_wait(4096, 4096, 8192, Duration::from_millis(300));
        let a = p.try_lease(4096).unwrap();
        let started = std::time::Instant::now();
        assert_eq!(p.lease_wait(4096).await.err(), Some(Exhausted));
        assert!(started.elapsed() >= Duration::from_millis(300));
        // A release wakes a waiter.
        let waiter = {
            let p = p.clone();
            tokio::spawn(async move { p.lease_wait(4096).await.map(|l| l.size()) })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        drop(a);
        let got = tokio::time::timeout(Duration::from_secs(5), waiter).await;
        assert_eq!(got.unwrap().unwrap(), Ok(4096));
    }

    #[derive(Debug, Clone)]
    enum Op {
        Lease(usize),
        Resize(usize, usize),
        Drop(usize),
        Buffer(usize),
        Recycle(usize),
    }

    fn op() -> impl proptest::strategy::Strategy<Value = Op> {
        use proptest::prelude::*;
        prop_oneof![
            (0usize..200_000).prop_map(Op::Lease),
            (0usize..8, 0usize..200_000).prop_map(|(i, s)| Op::Resize(i, s)),
            (0usize..8).prop_map(Op::Drop),
            (0usize..8).prop_map(Op::Buffer),
            (0usize..8).prop_map(Op::Recycle),
        ]
    }

    proptest::proptest! {
        #[test]
        fn in_use_plus_pooled_never_exceeds_the_limit(
            limit in 8192u64..300_000,
            ops in proptest::collection::vec(op(), 1..200),
        ) {
            let p = Pool::new(4096, 65536, limit);
            let mut leases: Vec<Lease> = Vec::new();
            let mut bufs: Vec<BytesMut> = Vec::new();
            for op in ops {
                match op {
                    Op::Lease(s) => leases.extend(p.try_lease(s)),
                    Op::Resize(i, s) => {
                        if let Some(l) = leases.get_mut(i) {
                            l.resize(s);
                        }
                    }
                    Op::Drop(i) => {
                        if i < leases.len() {
                            leases.swap_remove(i);
                        }
                    }
                    Op::Buffer(i) => {
                        if let Some(l) = leases.get(i) {
                            bufs.push(l.buffer());
                        }
                    }
                    Op::Recycle(i) => {
                        if i < bufs.len() {
                            p.give(bufs.swap_remove(i));
                        }
                    }
                }
                let held: u64 = leases.iter().map(|l| 2 * l.size() as u64).sum();
                proptest::prop_assert_eq!(p.in_use(), held);
                proptest::prop_assert!(p.in_use() + p.pooled() <= limit);
                proptest::prop_assert_eq!(p.active(), leases.len());
            }
            drop(leases);
            proptest::prop_assert_eq!(p.in_use(), 0);
        }
    }
}
