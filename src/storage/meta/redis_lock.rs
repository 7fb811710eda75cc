//! [`RedisLocker`]: the one-writer lock per upload in the shared Redis, keeping the rules of
//! [`super::lock`] across instances.
//!
//! - The lock is the key `P lock:<id>`, set only if absent with an expiry (the lease), its
//!   value the holder's fencing token from `INCR P fence` (one counter for every upload, so
//!   tokens only grow; the records' writes carry them, rule 2).
//! - The holder renews the lease while it holds the lock: every [`POLL`] one script call
//!   renews it and reads the upload's release request.
//! - "Please release" is a key the waiter sets (`P release:<id>`, a fresh number from
//!   `INCR P seq` each time) and the holder polls: simpler and more robust than pub/sub (no
//!   subscription to lose across reconnects; a request made while the holder's connection
//!   was down is still seen). When it changes, the holder's [`Guard::preempted`] resolves:
//!   the stale request stops, commits what it wrote and drops its guard, which deletes the
//!   lock key if it still holds it.
//! - A holder that does not release within a lease of being asked stops renewing, so its
//!   key expires one lease later and a waiter takes over (rule 3); so does a holder that
//!   died (its instance killed): its key expires within a lease. Its late writes are fenced.
//! - Every wait is bounded: a waiter gives up after [`RedisLocker::max_wait`] (three leases
//!   plus a second) with [`LockError::Backend`]; Redis unreachable fails at once.
//!
//! Costs per lock: one script call to acquire (plus one to request release and one per
//! [`POLL`] while waiting), one per [`POLL`] while held, one to release.

use super::lock::{Guard, LockError, Locker};
use super::redis::Redis;
use futures_util::future::BoxFuture;
use redis::Script;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// How often a holder renews its lease and looks for a release request, and a waiter
/// retries.
pub const POLL: Duration = Duration::from_millis(100);

/// ARGV: prefix, id, lease ms. {token, release request} when taken, {0, holder} when not.
const ACQUIRE: &str = r#"
local p, id = ARGV[1], ARGV[2]
local lk = p .. 'lock:' .. id
local holder = redis.call('GET', lk)
if holder then return {0, holder} end
local t = redis.call('INCR', p .. 'fence')
redis.call('SET', lk, t, 'PX', ARGV[3])
return {t, redis.call('GET', p .. 'release:' .. id) or ''}
"#;

/// ARGV: prefix, id, ms to keep the request. A fresh request number.
const REQUEST: &str = r#"
local p, id = ARGV[1], ARGV[2]
local n = redis.call('INCR', p .. 'seq')
redis.call('SET', p .. 'release:' .. id, n, 'PX', ARGV[3])
return n
"#;

/// ARGV: prefix, id, token, lease ms, renew (0/1). {1, release request} while held, {0, ''}
/// once the lock is someone else's (or expired).
const RENEW: &str = r#"
local p, id = ARGV[1], ARGV[2]
local lk = p .. 'lock:' .. id
if redis.call('GET', lk) ~= ARGV[3] then return {0, ''} end
if ARGV[5] == '1' then redis.call('PEXPIRE', lk, ARGV[4]) end
return {1, redis.call('GET', p .. 'release:' .. id) or ''}
"#;

/// ARGV: prefix, id, token. Deletes the lock if it is still this token's.
const RELEASE: &str = r#"
local lk = ARGV[1] .. 'lock:' .. ARGV[2]
if redis.call('GET', lk) == ARGV[3] then redis.call('DEL', lk) return 1 end
return 0
"#;

struct Scripts {
    acquire: Script,
    request: Script,
    renew: Script,
    release: Script,
}

/// The shared lock (see the module docs).
#[derive(Clone)]
pub struct RedisLocker {
    redis: Arc<Redis>,
    scripts: Arc<Scripts>,
    lease: Duration,
    active: Arc<AtomicUsize>,
}

/// Counts one id with lock state in this process while it lives.
struct Active(Arc<AtomicUsize>);

impl Active {
    fn new(n: &Arc<AtomicUsize>) -> Active {
        n.fetch_add(1, Ordering::SeqCst);
        Active(n.clone())
    }
}

impl Drop for Active {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

fn ms(d: Duration) -> String {
    d.as_millis().max(1).to_string()
}

fn backend(e: impl std::fmt::Display) -> LockError {
    LockError::Backend(e.to_string())
}

impl RedisLocker {
    /// `lease`: how long a lock outlives a holder that stopped renewing it (a dead instance).
    pub fn new(redis: Arc<Redis>, lease: Duration) -> RedisLocker {
        RedisLocker {
            redis,
            scripts: Arc::new(Scripts {
                acquire: Script::new(ACQUIRE),
                request: Script::new(REQUEST),
                renew: Script::new(RENEW),
                release: Script::new(RELEASE),
            }),
            lease: lease.max(POLL * 4),
            active: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// The longest a [`Locker::lock`] call waits before giving up.
    pub fn max_wait(&self) -> Duration {
        self.lease * 3 + Duration::from_secs(1)
    }

    async fn acquire(&self, id: &str) -> Result<Guard, LockError> {
        let active = Active::new(&self.active);
        let (lease, deadline) = (ms(self.lease), Instant::now() + self.max_wait());
        // The holder last asked to release; asked again when the holder changes.
        let mut asked: Option<String> = None;
        loop {
            let (token, seen): (u64, String) = self
                .redis
                .script(&self.scripts.acquire, &[id.as_bytes(), lease.as_bytes()])
                .await
                .map_err(backend)?;
            if token > 0 {
                return Ok(self.hold(id, token, seen, active));
            }
            if asked.as_deref() != Some(seen.as_str()) {
                let keep = ms(self.max_wait());
                self.redis
                    .script::<u64>(&self.scripts.request, &[id.as_bytes(), keep.as_bytes()])
                    .await
                    .map_err(backend)?;
                asked = Some(seen);
            }
            if Instant::now() >= deadline {
                return Err(backend("timed out waiting for the upload's lock"));
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// A guard whose task renews the lease and watches for release requests.
    fn hold(&self, id: &str, token: u64, seen: String, active: Active) -> Guard {
        let (tx, rx) = watch::channel(0u64);
        let task = tokio::spawn(renew(self.clone(), id.to_string(), token, seen, tx));
        let held = Held {
            task,
            locker: self.clone(),
            id: id.to_string(),
            token,
            _active: active,
        };
        Guard::new(token, rx, Box::new(held))
    }
}

/// While held: renew every [`POLL`]; on a release request, tell the holder (once per
/// request) and stop renewing a lease after it; end (closing the channel, which also
/// preempts) once the lock is no longer this token's.
async fn renew(l: RedisLocker, id: String, token: u64, mut seen: String, tx: watch::Sender<u64>) {
    let (token_s, lease) = (token.to_string(), ms(l.lease));
    let mut asked: Option<Instant> = None;
    let mut failing: Option<Instant> = None;
    loop {
        tokio::time::sleep(POLL).await;
        let keep = asked.is_none_or(|at| at.elapsed() < l.lease);
        let args: [&[u8]; 4] = [
            id.as_bytes(),
            token_s.as_bytes(),
            lease.as_bytes(),
            if keep { b"1" } else { b"0" },
        ];
        match l
            .redis
            .script::<(u8, String)>(&l.scripts.renew, &args)
            .await
        {
            Ok((1, request)) => {
                failing = None;
                if request != seen {
                    seen = request;
                    asked.get_or_insert_with(Instant::now);
                    tx.send_modify(|n| *n = n.wrapping_add(1));
                }
            }
            Ok(_) => return,
            Err(e) => {
                // Cannot renew: the lease runs out in Redis. Stop the holder now, and end
                // once the lease must have run out.
                let since = *failing.get_or_insert_with(Instant::now);
                if since.elapsed() < POLL * 2 {
                    tracing::warn!(%id, error = %e, "cannot renew an upload's lock");
                    tx.send_modify(|n| *n = n.wrapping_add(1));
                }
                if since.elapsed() >= l.lease {
                    return;
                }
            }
        }
    }
}

/// The held lock; dropping it stops the renewals and deletes the lock key if still ours.
struct Held {
    task: tokio::task::JoinHandle<()>,
    locker: RedisLocker,
    id: String,
    token: u64,
    _active: Active,
}

impl Drop for Held {
    fn drop(&mut self) {
        self.task.abort();
        let (l, id, token) = (self.locker.clone(), self.id.clone(), self.token.to_string());
        // Without a runtime (process exit), the lease expires on its own.
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                let args: [&[u8]; 2] = [id.as_bytes(), token.as_bytes()];
                if let Err(e) = l.redis.script::<u8>(&l.scripts.release, &args).await {
                    tracing::warn!(%id, error = %e, "cannot release an upload's lock; it expires with its lease");
                }
            });
        }
    }
}

impl Locker for RedisLocker {
    fn lock<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<Guard, LockError>> {
        Box::pin(self.acquire(id))
    }

    fn active(&self) -> usize {
        self.active.load(Ordering::SeqCst)
    }
}
