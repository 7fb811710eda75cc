//! The TCP connections of one listener, so that at the connection cap room can be made.
//!
//! At the cap a new connection is accepted at once (never left in the kernel's backlog, where
//! a client waited about 30 s for a slot) and then either the idlest keep-alive connection is
//! closed for it (no request in flight, no bytes moved for the longest time, as if its idle
//! timeout had struck) or, when every connection is busy, the new one is closed straight
//! away. A TLS client then sees its handshake fail at once; a status (503) would need the
//! handshake the cap is there to avoid.
//!
//! Rules (tests below and interop/hostile idle-5000 check them):
//! 1. A registered connection holds its slot (its semaphore permit) in its entry; the slot is
//!    given back when the connection's [`Registration`] is dropped.
//! 2. Shedding hands the victim's slot straight to the new connection: the accept loop never
//!    waits for the victim to go. While victims close, the open sockets exceed the cap by the
//!    number of victims still closing (each is told at once and closes on its next poll).
//!    Why: when the loop waited for each victim, a connect flood outran it, the kernel's accept
//!    queue overflowed (742 SYNs dropped in one 12 s idle-5000 run) and a well-behaved client
//!    whose SYN was dropped waited for its 1 s retransmission.
//! 3. A connection with a request in flight is never shed.
//! 4. A connection that has not moved a byte since it was accepted goes before any that has
//!    (each group idlest first); bytes of the TLS handshake count. Why: under a flood of
//!    silent connections (idle-5000: 2,000 connects a second against 1,024 slots) an
//!    accepted connection lives about half a second, and a well-behaved client whose
//!    handshake stalled that long on a busy CPU was closed as if it were one of them.

use super::idle::Activity;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::{Notify, OwnedSemaphorePermit};

/// The open connections of a listener.
#[derive(Default)]
pub struct Registry {
    entries: Mutex<HashMap<u64, Entry>>,
    next: AtomicU64,
}

struct Entry {
    activity: Activity,
    busy: Arc<AtomicUsize>,
    shed: Arc<Notify>,
    /// The connection's slot (rule 1), taken by whoever sheds it (rule 2).
    permit: OwnedSemaphorePermit,
}

/// One connection's place in the registry (removed on drop).
pub struct Registration {
    id: u64,
    activity: Activity,
    registry: Arc<Registry>,
    busy: Arc<AtomicUsize>,
    shed: Arc<Notify>,
}

impl Registry {
    pub fn new() -> Arc<Registry> {
        Arc::new(Registry::default())
    }

    /// Adds a connection whose byte movements `activity` records, holding its slot `permit`.
    pub fn register(
        self: &Arc<Self>,
        activity: Activity,
        permit: OwnedSemaphorePermit,
    ) -> Registration {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let busy = Arc::new(AtomicUsize::new(0));
        let shed = Arc::new(Notify::new());
        if let Ok(mut e) = self.entries.lock() {
            e.insert(
                id,
                Entry {
                    activity: activity.clone(),
                    busy: busy.clone(),
                    shed: shed.clone(),
                    permit,
                },
            );
        }
        Registration {
            id,
            activity,
            registry: self.clone(),
            busy,
            shed,
        }
    }

    /// Tells the connection with no request in flight that has been idle longest (rule 4:
    /// silent ones first) to close
    /// and returns its slot for the new connection; `None` when every connection is busy.
    pub fn shed_idlest(&self) -> Option<OwnedSemaphorePermit> {
        let Ok(mut entries) = self.entries.lock() else {
            return None;
        };
        let victim = entries
            .iter()
            .filter(|(_, e)| e.busy.load(Ordering::Acquire) == 0)
            .max_by_key(|(_, e)| (!e.activity.moved(), e.activity.idle_for()))
            .map(|(id, _)| *id);
        match victim.and_then(|id| entries.remove(&id)) {
            Some(e) => {
                e.shed.notify_one();
                Some(e.permit)
            }
            None => None,
        }
    }

    fn remove(&self, id: u64) {
        if let Ok(mut e) = self.entries.lock() {
            e.remove(&id);
        }
    }
}

impl Registration {
    /// The connection's byte movements, as registered.
    pub fn activity(&self) -> Activity {
        self.activity.clone()
    }

    /// Resolves when the connection is to close to make room.
    pub async fn shed(&self) {
        self.shed.notified().await
    }

    /// Marks a request in flight until the returned guard is dropped.
    pub fn busy(&self) -> Busy {
        Busy::new(self.busy.clone())
    }

    /// A handle for marking requests in flight from elsewhere (the service).
    pub fn counter(&self) -> Arc<AtomicUsize> {
        self.busy.clone()
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.registry.remove(self.id);
    }
}

/// A request in flight on a connection (the connection is not idle while it lives).
pub struct Busy(Arc<AtomicUsize>);

impl Busy {
    pub fn new(counter: Arc<AtomicUsize>) -> Busy {
        counter.fetch_add(1, Ordering::AcqRel);
        Busy(counter)
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Whether a QUIC handshake from an address not yet validated gets a Retry (RFC 9000
/// section 8.1.2) instead of a connection slot: when no more than half of the `cap` slots
/// are `free`.
///
/// Why: a QUIC handshake holds its slot until it completes or `header_read_timeout` passes
/// (30 s by default), and the slots are shared with TCP. First flights replayed from ports
/// that never answer (interop/hostile quic-initials: 2,400 in 12 s) filled the cap, and new
/// TCP and QUIC clients alike were turned away. A Retry costs the server no state; a client
/// that receives at its address answers it within one round trip, so such a flood holds at
/// most half of the slots. Below that load handshakes keep 0-RTT (a Retry discards early
/// data).
pub fn quic_needs_retry(free: usize, cap: usize) -> bool {
    free <= cap / 2
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quic_retry_when_half_the_slots_are_taken() {
        assert!(!quic_needs_retry(1024, 1024));
        assert!(!quic_needs_retry(513, 1024));
        assert!(quic_needs_retry(512, 1024));
        assert!(quic_needs_retry(0, 1024));
        assert!(
            !quic_needs_retry(1, 1),
            "a cap of one keeps 0-RTT while free"
        );
        assert!(quic_needs_retry(0, 1));
    }

    #[tokio::test]
    async fn the_idlest_connection_without_requests_is_shed_and_hands_over_its_slot() {
        let slots = Arc::new(tokio::sync::Semaphore::new(3));
        let take = || slots.clone().try_acquire_owned().expect("a free slot");
        let reg = Registry::new();
        let old = reg.register(Activity::new(), take());
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        let busy_old = reg.register(Activity::new(), take());
        let _req = busy_old.busy();
        let young = reg.register(Activity::new(), take());
        assert_eq!(slots.available_permits(), 0, "rule 1: each holds its slot");
        // `busy_old` is idler than `young` but has a request in flight (rule 3).
        let handed = reg.shed_idlest().expect("an idle connection to shed");
        assert_eq!(
            slots.available_permits(),
            0,
            "rule 2: the slot goes to the new connection, not back to the pool"
        );
        tokio::time::timeout(std::time::Duration::from_secs(1), old.shed())
            .await
            .expect("the oldest idle connection is told to close");
        drop(old);
        assert_eq!(
            slots.available_permits(),
            0,
            "the shed connection closing gives back nothing: its slot was handed over"
        );
        drop(handed);
        assert_eq!(slots.available_permits(), 1);
        let _young_slot = reg.shed_idlest().expect("then the young idle one");
        tokio::time::timeout(std::time::Duration::from_secs(1), young.shed())
            .await
            .expect("young shed");
        assert!(
            reg.shed_idlest().is_none(),
            "only a busy connection is left"
        );
        drop(busy_old);
        assert_eq!(
            slots.available_permits(),
            2,
            "rule 1: a closed connection's slot returns"
        );
    }

    #[tokio::test]
    async fn a_connection_that_never_spoke_goes_before_one_that_did() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let slots = Arc::new(tokio::sync::Semaphore::new(2));
        let take = || slots.clone().try_acquire_owned().expect("a free slot");
        let reg = Registry::new();
        let spoke = Activity::new();
        let talker = reg.register(spoke.clone(), take());
        let (near, mut far) = tokio::io::duplex(64);
        let mut io = super::super::idle::IdleIo::new(near, spoke.clone());
        far.write_all(b"x").await.unwrap();
        let mut b = [0u8; 1];
        io.read_exact(&mut b).await.unwrap();
        assert!(spoke.moved());
        tokio::time::sleep(std::time::Duration::from_millis(30)).await;
        let silent = reg.register(Activity::new(), take());
        // `talker` has been idle longer, but `silent` never moved a byte (rule 4).
        let _slot = reg.shed_idlest().expect("one to shed");
        tokio::time::timeout(std::time::Duration::from_secs(1), silent.shed())
            .await
            .expect("the silent connection is told to close first");
        let _slot = reg.shed_idlest().expect("then the one that spoke");
        tokio::time::timeout(std::time::Duration::from_secs(1), talker.shed())
            .await
            .expect("talker shed");
    }
}
