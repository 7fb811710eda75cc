//! The [`SessionRecords`] and [`Locker`] contract, run against every implementation (redb,
//! mem, and Redis: a private redis-server started by each test, see
//! `tests/common/redis.rs`): compare-and-set conflicts, counts of open records and quota
//! refusals, scans that find expired records, preemption with increasing fencing tokens,
//! and fencing of a stale holder's writes, also after a lease takeover.

use super::*;
use std::sync::Arc;
use std::time::Duration;

#[path = "../../../tests/common/redis.rs"]
mod redis_server;

fn rec(owner: &str, open: bool, reserved: u64, expires: u64) -> Record {
    Record {
        summary: Summary {
            owner: owner.into(),
            open,
            reserved,
            expires,
        },
        body: format!("{owner}-{open}-{reserved}").into_bytes(),
    }
}

const ROOMY: Quota = Quota {
    max_open: 100,
    max_open_per_owner: 100,
    max_reserved: 1 << 40,
};

/// Bounds every wait in these tests.
async fn soon<T>(what: &str, f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(5), f)
        .await
        .unwrap_or_else(|_| panic!("timed out: {what}"))
}

/// The implementations under test, each with a name for failure messages.
type Stores = Vec<(&'static str, Arc<dyn SessionRecords>)>;

/// What the stores live in: the redb file's directory, the private Redis (when installed).
struct Env {
    _dir: tempfile::TempDir,
    redis: Option<(redis_server::RedisServer, Arc<Redis>)>,
}

impl Env {
    /// Lockers to pair with the records: in-process (for redb and mem) and, with Redis,
    /// the shared one. `last`: tokens start above it; `lease`: with a lease.
    fn lockers(&self, last: u64, lease: Option<Duration>) -> Vec<(&'static str, Arc<dyn Locker>)> {
        let mem: Arc<dyn Locker> = match lease {
            Some(l) => Arc::new(MemLocker::with_lease(last, l)),
            None => Arc::new(MemLocker::starting_after(last)),
        };
        let mut out = vec![("mem", mem)];
        if let Some((_, r)) = &self.redis {
            let l = RedisLocker::new(r.clone(), lease.unwrap_or(Duration::from_secs(10)));
            out.push(("redis", Arc::new(l)));
        }
        out
    }
}

/// Every implementation (the redb file lives in the returned directory).
fn stores() -> (Env, Stores) {
    let dir = tempfile::tempdir().unwrap();
    let redb = SessionStore::open(&dir.path().join("s.redb")).unwrap();
    let mut all: Stores = vec![
        ("redb", Arc::new(redb)),
        ("mem", Arc::new(MemRecords::new())),
    ];
    let redis = redis_server::RedisServer::start().map(|srv| {
        let r = Redis::new(&srv.url(), "t:", Duration::from_secs(2)).unwrap();
        (srv, Arc::new(r))
    });
    if let Some((_, r)) = &redis {
        all.push(("redis", Arc::new(RedisRecords::new(r.clone()))));
    }
    (Env { _dir: dir, redis }, all)
}

/// Sets the shared fencing counter, so that Redis tokens start above `last`.
async fn fence_after(env: &Env, last: u64) {
    if let Some((_, r)) = &env.redis {
        let mut c = ::redis::cmd("SET");
        c.arg("t:fence").arg(last);
        r.cmd::<String>(&c).await.unwrap();
    }
}

#[tokio::test]
async fn compare_and_set_detects_conflicts() {
    let (_env, stores) = stores();
    for (name, s) in stores {
        let v1 = s.insert("a", rec("x", true, 1, 9), ROOMY).await.unwrap();
        assert!(
            matches!(
                s.insert("a", rec("x", true, 1, 9), ROOMY).await,
                Err(RecordError::Conflict)
            ),
            "{name}: an existing id is never inserted over"
        );
        let v2 = s.put_if("a", rec("x", true, 2, 9), v1, None).await.unwrap();
        assert!(v2 > v1, "{name}");
        let lost = s.put_if("a", rec("x", true, 3, 9), v1, None).await;
        assert!(
            matches!(lost, Err(RecordError::Conflict)),
            "{name}: {lost:?}"
        );
        let got = s.get("a").await.unwrap().unwrap();
        assert_eq!(
            (got.version, got.record),
            (v2, rec("x", true, 2, 9)),
            "{name}"
        );
        assert!(
            matches!(s.delete("a", Some(v1)).await, Err(RecordError::Conflict)),
            "{name}"
        );
        assert!(s.delete("a", Some(v2)).await.unwrap(), "{name}");
        assert!(!s.delete("a", None).await.unwrap(), "{name}: already gone");
        assert!(
            matches!(
                s.put_if("a", rec("x", true, 1, 9), v2, None).await,
                Err(RecordError::Conflict)
            ),
            "{name}: a deleted record is not written back"
        );
        assert_eq!(s.get("a").await.unwrap(), None, "{name}");
    }
}

#[tokio::test]
async fn counts_cover_open_records_only_and_quotas_are_atomic() {
    let (_env, stores) = stores();
    for (name, s) in stores {
        s.insert("a", rec("x", true, 10, 9), ROOMY).await.unwrap();
        s.insert("b", rec("y", true, 20, 9), ROOMY).await.unwrap();
        let v = s.insert("c", rec("x", true, 40, 9), ROOMY).await.unwrap();
        // Completing a record takes it out of every count.
        s.put_if("c", rec("x", false, 0, 9), v, None).await.unwrap();
        let c = s.counts("x").await.unwrap();
        assert_eq!((c.open, c.open_for_owner, c.reserved), (2, 1, 30), "{name}");
        assert_eq!(s.counts("z").await.unwrap().open_for_owner, 0, "{name}");
        let q = Quota {
            max_open: 3,
            max_open_per_owner: 1,
            max_reserved: 100,
        };
        let r = s.insert("d", rec("x", true, 1, 9), q).await;
        assert!(
            matches!(r, Err(RecordError::TooManyForOwner)),
            "{name}: {r:?}"
        );
        let r = s.insert("d", rec("z", true, 71, 9), q).await;
        assert!(
            matches!(r, Err(RecordError::ReservedExceeded)),
            "{name}: {r:?}"
        );
        s.insert("d", rec("z", true, 70, 9), q).await.unwrap();
        let r = s.insert("e", rec("w", true, 0, 9), q).await;
        assert!(matches!(r, Err(RecordError::TooManyOpen)), "{name}: {r:?}");
        assert_eq!(
            s.get("e").await.unwrap(),
            None,
            "{name}: a refused insert stores nothing"
        );
        // Concurrent creations cannot overshoot: of 20 racing inserts, exactly the room left.
        let q = Quota {
            max_open: 8,
            ..ROOMY
        };
        let racing = (0..20).map(|i| {
            let s = s.clone();
            async move {
                s.insert(&format!("r{i}"), rec(&format!("o{i}"), true, 1, 9), q)
                    .await
            }
        });
        let won = futures_util::future::join_all(racing)
            .await
            .into_iter()
            .filter(Result::is_ok)
            .count();
        assert_eq!(won, 5, "{name}: 3 open before, room for 5");
        assert_eq!(s.counts("x").await.unwrap().open, 8, "{name}");
        assert_eq!(
            s.scan().await.unwrap().len(),
            9,
            "{name}: 8 open and 1 completed"
        );
    }
}

#[tokio::test]
async fn a_scan_finds_the_expired_records() {
    let (_env, stores) = stores();
    for (name, s) in stores {
        s.insert("old", rec("x", true, 1, 5), ROOMY).await.unwrap();
        s.insert("new", rec("x", true, 1, 50), ROOMY).await.unwrap();
        let v = s
            .insert("done", rec("x", true, 1, 50), ROOMY)
            .await
            .unwrap();
        s.put_if("done", rec("x", false, 0, 7), v, None)
            .await
            .unwrap();
        let mut expired: Vec<String> = s
            .scan()
            .await
            .unwrap()
            .into_iter()
            .filter(|(_, st)| 10 > st.record.summary.expires)
            .map(|(id, _)| id)
            .collect();
        expired.sort();
        assert_eq!(expired, ["done", "old"], "{name}");
    }
}

#[tokio::test]
async fn a_second_acquirer_preempts_the_holder_and_fences_it_out() {
    let (env, stores) = stores();
    let pairs = stores.into_iter().flat_map(|(n, s)| {
        let lockers = env.lockers(0, None);
        // The shared locker goes with the shared records; the local one with each store.
        lockers
            .into_iter()
            .filter(move |(l, _)| (*l == "redis") == (n == "redis"))
            .map(move |(_, l)| (n, s.clone(), l))
    });
    for (name, s, locker) in pairs.collect::<Vec<_>>() {
        let v = s.insert("a", rec("x", true, 1, 9), ROOMY).await.unwrap();
        let mut first = locker.lock("a").await.unwrap();
        let v = s
            .put_if("a", rec("x", true, 2, 9), v, Some(first.token()))
            .await
            .unwrap();
        let second = tokio::spawn({
            let locker = locker.clone();
            async move { locker.lock("a").await.unwrap() }
        });
        // The holder hears the request, and the second waits until it releases.
        soon("the preemption signal", first.preempted()).await;
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(
            !second.is_finished(),
            "{name}: the lock was handed over while held"
        );
        let stale = first.token();
        drop(first);
        let second = soon("the handover", second).await.unwrap();
        assert!(second.token() > stale, "{name}: tokens increase");
        let v = s
            .put_if("a", rec("x", true, 3, 9), v, Some(second.token()))
            .await
            .unwrap();
        // A stale holder's write, even with the current version, is refused.
        let r = s.put_if("a", rec("x", true, 4, 9), v, Some(stale)).await;
        assert!(matches!(r, Err(RecordError::Fenced)), "{name}: {r:?}");
        let got = s.get("a").await.unwrap().unwrap();
        assert_eq!(got.record, rec("x", true, 3, 9), "{name}");
        drop(second);
        assert_eq!(locker.active(), 0, "{name}: no lock state once released");
    }
}

#[tokio::test]
async fn a_holder_that_does_not_release_loses_the_lock_after_its_lease() {
    let (env, stores) = stores();
    let lease = Duration::from_millis(400);
    fence_after(&env, 41).await;
    let pairs = stores.into_iter().flat_map(|(n, s)| {
        let lockers = env.lockers(41, Some(lease));
        lockers
            .into_iter()
            .filter(move |(l, _)| (*l == "redis") == (n == "redis"))
            .map(move |(_, l)| (n, s.clone(), l))
    });
    for (name, s, locker) in pairs.collect::<Vec<_>>() {
        let v = s.insert("a", rec("x", true, 1, 9), ROOMY).await.unwrap();
        // The holder is stuck: it never drops its guard while asked.
        let mut dead = locker.lock("a").await.unwrap();
        assert!(
            dead.token() > 41,
            "{name}: tokens start above the given one"
        );
        let v = s
            .put_if("a", rec("x", true, 2, 9), v, Some(dead.token()))
            .await
            .unwrap();
        let started = std::time::Instant::now();
        let mut fresh = soon("the takeover", locker.lock("a")).await.unwrap();
        assert!(
            started.elapsed() >= lease,
            "{name}: taken over before the lease ran out"
        );
        assert!(fresh.token() > dead.token(), "{name}");
        soon("the stale holder is told", dead.preempted()).await;
        let v = s
            .put_if("a", rec("x", true, 3, 9), v, Some(fresh.token()))
            .await
            .unwrap();
        let r = s
            .put_if("a", rec("x", true, 4, 9), v, Some(dead.token()))
            .await;
        assert!(matches!(r, Err(RecordError::Fenced)), "{name}: {r:?}");
        // The stale guard going away does not release the new holder's lock.
        drop(dead);
        let third = tokio::spawn({
            let locker = locker.clone();
            async move { locker.lock("a").await.unwrap().token() }
        });
        soon("the new holder is asked", fresh.preempted()).await;
        assert!(!third.is_finished(), "{name}: two holders at once");
        let t = fresh.token();
        drop(fresh);
        assert!(
            soon("the third acquirer", third).await.unwrap() > t,
            "{name}"
        );
        assert_eq!(locker.active(), 0, "{name}");
    }
}

#[tokio::test]
async fn redis_down_is_unavailable_and_service_resumes_when_it_is_back() {
    let (mut env, _) = stores();
    let Some((srv, r)) = env.redis.as_mut() else {
        return;
    };
    let (records, locker) = (
        RedisRecords::new(r.clone()),
        RedisLocker::new(r.clone(), Duration::from_secs(1)),
    );
    records
        .insert("a", rec("x", true, 1, 9), ROOMY)
        .await
        .unwrap();
    let mut held = locker.lock("a").await.unwrap();
    srv.stop();
    // The holder cannot renew its lease: it is told to stop (and commit) at once.
    soon("the holder hears that Redis is gone", held.preempted()).await;
    let r1 = soon("get", records.get("a")).await;
    assert!(matches!(r1, Err(RecordError::Unavailable(_))), "{r1:?}");
    let r2 = soon("insert", records.insert("b", rec("x", true, 1, 9), ROOMY)).await;
    assert!(matches!(r2, Err(RecordError::Unavailable(_))), "{r2:?}");
    let r3 = soon("lock", locker.lock("b")).await;
    assert!(r3.is_err(), "a lock without Redis");
    drop(held);
    srv.restart();
    // Empty after the restart (it keeps nothing); every call works again.
    assert_eq!(soon("get", records.get("a")).await.unwrap(), None);
    records
        .insert("b", rec("x", true, 1, 9), ROOMY)
        .await
        .unwrap();
    assert_eq!(records.counts("x").await.unwrap().open, 1);
    let g = soon("lock", locker.lock("b")).await.unwrap();
    assert!(g.token() > 0);
    drop(g);
    soon("lock state goes", async {
        while locker.active() > 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
}
