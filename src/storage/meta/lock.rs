//! The one-writer lock per upload (tusd's locker with its "please release" request).
//!
//! 1. [`Locker::lock`] asks the current holder, if any, to release (its
//!    [`Guard::preempted`] resolves), then waits for the lock. The holder stops reading,
//!    commits what it wrote and drops its guard, so a client that reconnected never waits
//!    for the stale request's timeout.
//! 2. Every acquisition gets a fencing token, larger than any earlier one for that id. Writes
//!    to the records carry it; a store refuses a token lower than one that already wrote.
//! 3. A lock with a lease ([`MemLocker::with_lease`], and later a shared locker) is taken
//!    over when its holder does not release within the lease of being asked: the holder
//!    is presumed dead (on another instance: its lease ran out). Its late record writes are
//!    then refused by rule 2. The local locker the server uses has no lease: in one process a
//!    holder always hears the request, and bytes a stale holder is still writing could not
//!    be fenced on a file system.
//! 4. Dropping the guard releases. A lock's state exists only while someone holds or waits.

use futures_util::future::BoxFuture;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("lock backend: {0}")]
    Backend(String),
}

/// Held lock: its fencing token and the release request. Dropping it releases the lock.
pub struct Guard {
    token: u64,
    preempt: watch::Receiver<u64>,
    _release: Box<dyn Send + Sync>,
}

impl Guard {
    /// A guard over `release` (dropped to release). `preempt` changes when the holder is
    /// asked to release; changes before this call are not requests to this holder.
    pub fn new(
        token: u64,
        mut preempt: watch::Receiver<u64>,
        release: Box<dyn Send + Sync>,
    ) -> Guard {
        preempt.mark_unchanged();
        Guard {
            token,
            preempt,
            _release: release,
        }
    }

    pub fn token(&self) -> u64 {
        self.token
    }

    /// Resolves when another request asks for this lock (cancel-safe).
    pub async fn preempted(&mut self) {
        // A closed channel means the lock's state is gone (taken over): stop as well.
        let _ = self.preempt.changed().await;
    }
}

/// The one-writer lock per upload id. Object-safe; used as `Arc<dyn Locker>`.
pub trait Locker: Send + Sync {
    fn lock<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<Guard, LockError>>;

    /// Ids with lock state in this process (held or awaited); for tests and introspection.
    fn active(&self) -> usize;
}

struct Entry {
    mutex: Arc<tokio::sync::Mutex<()>>,
    preempt: watch::Sender<u64>,
    /// Holders and waiters; the entry goes when none is left.
    users: usize,
}

impl Entry {
    fn new() -> Entry {
        Entry {
            mutex: Arc::new(tokio::sync::Mutex::new(())),
            preempt: watch::channel(0).0,
            users: 0,
        }
    }
}

type Map = Mutex<HashMap<String, Entry>>;

struct Shared {
    map: Map,
    next: AtomicU64,
    lease: Option<Duration>,
}

fn lock_map(m: &Map) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
    // Updates are single inserts, removes and field writes: a poisoned map is consistent.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// In-process locker (see the module rules).
#[derive(Clone)]
pub struct MemLocker {
    shared: Arc<Shared>,
}

/// One holder or waiter of an entry; the last one out removes it.
struct User {
    shared: Arc<Shared>,
    id: String,
}

impl Drop for User {
    fn drop(&mut self) {
        let mut map = lock_map(&self.shared.map);
        if let Some(e) = map.get_mut(&self.id) {
            e.users = e.users.saturating_sub(1);
            if e.users == 0 {
                map.remove(&self.id);
            }
        }
    }
}

impl Default for MemLocker {
    fn default() -> Self {
        MemLocker::new()
    }
}

impl MemLocker {
    /// Without a lease: a holder keeps the lock until it releases.
    pub fn new() -> MemLocker {
        MemLocker::build(0, None)
    }

    /// Tokens start above `last` (the highest token stored records were written with).
    pub fn starting_after(last: u64) -> MemLocker {
        MemLocker::build(last, None)
    }

    /// With a lease: a holder that does not release within `lease` of being asked loses
    /// the lock (rule 3; models a shared locker whose holder died).
    pub fn with_lease(last: u64, lease: Duration) -> MemLocker {
        MemLocker::build(last, Some(lease))
    }

    fn build(last: u64, lease: Option<Duration>) -> MemLocker {
        MemLocker {
            shared: Arc::new(Shared {
                map: Mutex::new(HashMap::new()),
                next: AtomicU64::new(last),
                lease,
            }),
        }
    }

    async fn acquire(&self, id: &str) -> Guard {
        let sh = &self.shared;
        let mut mutex = {
            let mut map = lock_map(&sh.map);
            let e = map.entry(id.to_string()).or_insert_with(Entry::new);
            e.users += 1;
            // Rule 1: ask whoever holds it to release.
            e.preempt.send_modify(|g| *g = g.wrapping_add(1));
            e.mutex.clone()
        };
        let user = User {
            shared: sh.clone(),
            id: id.to_string(),
        };
        loop {
            let held = match sh.lease {
                None => mutex.clone().lock_owned().await,
                Some(lease) => {
                    match tokio::time::timeout(lease, mutex.clone().lock_owned()).await {
                        Ok(g) => g,
                        Err(_) => {
                            mutex = self.take_over(id, &mutex);
                            continue;
                        }
                    }
                }
            };
            let map = lock_map(&sh.map);
            let Some(e) = map.get(id) else {
                // Unreachable while `user` counts; start over rather than hold a stale lock.
                drop(map);
                drop(held);
                continue;
            };
            if !Arc::ptr_eq(&e.mutex, &mutex) {
                // Taken over while waiting: the old mutex no longer guards anything.
                mutex = e.mutex.clone();
                continue;
            }
            let rx = e.preempt.subscribe();
            let token = sh.next.fetch_add(1, Ordering::SeqCst) + 1;
            return Guard::new(token, rx, Box::new((held, user)));
        }
    }

    /// Rule 3: replaces the lock's mutex (the stale holder keeps the old one), telling the
    /// stale holder to stop; returns the mutex to wait on.
    fn take_over(
        &self,
        id: &str,
        waited: &Arc<tokio::sync::Mutex<()>>,
    ) -> Arc<tokio::sync::Mutex<()>> {
        let mut map = lock_map(&self.shared.map);
        let e = map.entry(id.to_string()).or_insert_with(Entry::new);
        if Arc::ptr_eq(&e.mutex, waited) {
            tracing::warn!(
                id,
                "a lock holder did not release within its lease; taking over"
            );
            e.mutex = Arc::new(tokio::sync::Mutex::new(()));
            e.preempt.send_modify(|g| *g = g.wrapping_add(1));
            e.preempt = watch::channel(0).0;
        }
        e.mutex.clone()
    }
}

impl Locker for MemLocker {
    fn lock<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<Guard, LockError>> {
        Box::pin(async move { Ok(self.acquire(id).await) })
    }

    fn active(&self) -> usize {
        lock_map(&self.shared.map).len()
    }
}
