//! Request rate limits (`[rate_limit]`): token buckets, pure, with the time passed in.
//!
//! - **Per client**: one bucket per client address for uploads (PUT, POST, PATCH, DELETE)
//!   and one for downloads (GET, HEAD). An IPv6 client is bucketed by its /64
//!   (`rate_limit.ipv6_prefix`): one subscriber gets a whole /64 and picks addresses from it
//!   at will (privacy extensions), so per-address buckets would give one host 2^64 of them.
//! - **Per prefix**: `[[rate_limit.prefixes]]` lists path prefixes (matched against the
//!   request path as sent, longest first; end one with `/` to match a directory) with their
//!   own rates; each prefix has one bucket per direction shared by all clients, so the
//!   prefix as a whole gets at most that rate. XMPP upload components put every file in a
//!   fresh random directory, so "one bucket per first path segment" would give every upload
//!   its own bucket; a configured list is what means something.
//! - A request must get a token from every bucket that applies; if one is empty, none is
//!   taken and the refusal says when the emptiest will have one again (`Retry-After`).
//! - Exempt addresses are a configured list of CIDR blocks; none by default (HFS always
//!   exempts loopback, which a reverse proxy on the same host makes everyone).
//!
//! Memory is bounded: at most `rate_limit.max_clients` buckets per direction. A bucket that
//! has refilled to full is the same as no bucket, so such buckets are dropped as requests
//! arrive (least recently used first); when the table is full anyway, the least recently
//! used bucket is dropped (its client starts again with a full bucket). A bucket costs about
//! 100 bytes, so the default 100 000 is about 20 MB for both directions.

use super::client_addr::{mask, Cidr, Proxies};
use super::telemetry::Direction;
use std::collections::{BTreeMap, HashMap};
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};

/// A bucket's refill rate and size. `per_minute == 0` means unlimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Rate {
    pub per_minute: u32,
    pub burst: u32,
}

impl Rate {
    fn limited(&self) -> bool {
        self.per_minute > 0
    }
}

/// One path prefix with its own rates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrefixRule {
    pub path: String,
    pub upload: Rate,
    pub download: Rate,
}

/// The rate limit settings (from `[rate_limit]`).
#[derive(Debug, Clone, Default)]
pub struct Limits {
    pub enabled: bool,
    pub upload: Rate,
    pub download: Rate,
    pub prefixes: Vec<PrefixRule>,
    pub exempt: Vec<Cidr>,
    /// Bits of an IPv6 address that name a client (64).
    pub ipv6_prefix: u8,
    /// Most buckets kept per direction.
    pub max_clients: usize,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    last: SystemTime,
}

impl Bucket {
    fn full(rate: Rate, now: SystemTime) -> Bucket {
        Bucket {
            tokens: f64::from(rate.burst),
            last: now,
        }
    }

    fn refill(&mut self, rate: Rate, now: SystemTime) {
        // A clock that went back adds nothing (and never panics).
        let elapsed = now.duration_since(self.last).unwrap_or(Duration::ZERO);
        let added = elapsed.as_secs_f64() * f64::from(rate.per_minute) / 60.0;
        self.tokens = (self.tokens + added).min(f64::from(rate.burst));
        if now > self.last {
            self.last = now;
        }
    }

    fn is_full(&self, rate: Rate) -> bool {
        self.tokens >= f64::from(rate.burst)
    }

    /// How long until a token is there; `None` if one is there now.
    fn wait(&self, rate: Rate) -> Option<Duration> {
        if self.tokens >= 1.0 {
            return None;
        }
        let secs = (1.0 - self.tokens) * 60.0 / f64::from(rate.per_minute.max(1));
        Some(Duration::from_secs_f64(secs.clamp(0.0, 86400.0)))
    }
}

/// Buckets by key, least recently used first, at most `cap` of them.
struct Table<K> {
    map: HashMap<K, (Bucket, u64)>,
    order: BTreeMap<u64, K>,
    seq: u64,
    cap: usize,
}

impl<K: Hash + Eq + Clone> Table<K> {
    fn new(cap: usize) -> Table<K> {
        Table {
            map: HashMap::new(),
            order: BTreeMap::new(),
            seq: 0,
            cap: cap.max(1),
        }
    }

    /// The key's bucket, refilled to `now`; created full when absent.
    fn bucket(&mut self, key: &K, rate: Rate, now: SystemTime) -> Option<&mut Bucket> {
        self.seq += 1;
        let seq = self.seq;
        if let Some((_, old)) = self.map.get(key) {
            let old = *old;
            self.order.remove(&old);
        } else {
            self.evict_idle(rate, now);
            while self.map.len() >= self.cap {
                let Some((_, oldest)) = self.order.pop_first() else {
                    break;
                };
                self.map.remove(&oldest);
            }
            self.map.insert(key.clone(), (Bucket::full(rate, now), seq));
        }
        self.order.insert(seq, key.clone());
        let entry = self.map.get_mut(key)?;
        entry.1 = seq;
        entry.0.refill(rate, now);
        Some(&mut entry.0)
    }

    /// Drops a few least recently used buckets that have refilled to full.
    fn evict_idle(&mut self, rate: Rate, now: SystemTime) {
        for _ in 0..4 {
            let Some((&seq, key)) = self.order.first_key_value() else {
                return;
            };
            let Some((bucket, _)) = self.map.get(key) else {
                self.order.remove(&seq);
                continue;
            };
            let mut b = *bucket;
            b.refill(rate, now);
            if !b.is_full(rate) {
                return;
            }
            if let Some(key) = self.order.remove(&seq) {
                self.map.remove(&key);
            }
        }
    }

    fn len(&self) -> usize {
        self.map.len()
    }
}

struct State {
    upload: Table<IpAddr>,
    download: Table<IpAddr>,
    /// (index of the rule in `Limits::prefixes`, upload?)
    prefixes: Table<(usize, bool)>,
}

impl State {
    fn new(limits: &Limits) -> State {
        let cap = limits.max_clients;
        State {
            upload: Table::new(cap),
            download: Table::new(cap),
            prefixes: Table::new(limits.prefixes.len().saturating_mul(2)),
        }
    }
}

/// The rate limiter: the settings, the trusted proxies and the buckets; the settings can be
/// replaced while requests run ([`RateLimiter::reload`]).
pub struct RateLimiter {
    conf: RwLock<Arc<(Limits, Proxies)>>,
    state: Mutex<State>,
}

impl RateLimiter {
    pub fn new(limits: Limits, proxies: Proxies) -> RateLimiter {
        RateLimiter {
            state: Mutex::new(State::new(&limits)),
            conf: RwLock::new(Arc::new((limits, proxies))),
        }
    }

    fn conf(&self) -> Arc<(Limits, Proxies)> {
        self.conf.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The settings in force.
    pub fn limits(&self) -> Limits {
        self.conf().0.clone()
    }

    /// New settings; every bucket starts full again.
    pub fn reload(&self, limits: Limits, proxies: Proxies) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        *state = State::new(&limits);
        *self.conf.write().unwrap_or_else(|e| e.into_inner()) = Arc::new((limits, proxies));
    }

    /// The client's address (see [`super::client_addr`]) under the trusted proxies in force.
    pub fn client(&self, peer: IpAddr, headers: &http::HeaderMap) -> IpAddr {
        let conf = self.conf();
        conf.1.client(peer, headers)
    }

    /// Takes a token for a request of `client` to `path`; `Err(wait)` when a bucket is empty
    /// (nothing is taken then).
    pub fn check(
        &self,
        client: IpAddr,
        path: &str,
        dir: Direction,
        now: SystemTime,
    ) -> Result<(), Duration> {
        let conf = self.conf();
        let l = &conf.0;
        if !l.enabled || l.exempt.iter().any(|c| c.contains(client)) {
            return Ok(());
        }
        let upload = matches!(dir, Direction::Upload);
        let pick = |up: Rate, down: Rate| if upload { up } else { down };
        let rate = pick(l.upload, l.download);
        let rule = l
            .prefixes
            .iter()
            .enumerate()
            .filter(|(_, r)| path.starts_with(r.path.as_str()))
            .max_by_key(|(_, r)| r.path.len())
            .map(|(i, r)| (i, pick(r.upload, r.download)))
            .filter(|(_, r)| r.limited());
        let key = match client.to_canonical() {
            ip @ IpAddr::V4(_) => ip,
            ip @ IpAddr::V6(_) => mask(ip, l.ipv6_prefix),
        };
        let mut guard = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let state = &mut *guard;
        let table = if upload {
            &mut state.upload
        } else {
            &mut state.download
        };
        let mut client_bucket = if rate.limited() {
            table.bucket(&key, rate, now)
        } else {
            None
        };
        let mut prefix_bucket = match rule {
            Some((i, r)) => state.prefixes.bucket(&(i, upload), r, now).map(|b| (b, r)),
            None => None,
        };
        let waits = [
            client_bucket.as_ref().and_then(|b| b.wait(rate)),
            prefix_bucket.as_ref().and_then(|(b, r)| b.wait(*r)),
        ];
        if let Some(wait) = waits.into_iter().flatten().max() {
            return Err(wait);
        }
        if let Some(b) = client_bucket.as_mut() {
            b.tokens -= 1.0;
        }
        if let Some((b, _)) = prefix_bucket.as_mut() {
            b.tokens -= 1.0;
        }
        Ok(())
    }

    /// Buckets held per direction: (uploads, downloads).
    pub fn tracked(&self) -> (usize, usize) {
        let s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        (s.upload.len(), s.download.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: SystemTime = SystemTime::UNIX_EPOCH;

    fn at(secs: f64) -> SystemTime {
        T0 + Duration::from_secs_f64(1_000_000.0 + secs)
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn limits(per_minute: u32, burst: u32) -> Limits {
        Limits {
            enabled: true,
            upload: Rate { per_minute, burst },
            download: Rate {
                per_minute: per_minute * 10,
                burst: burst * 10,
            },
            prefixes: Vec::new(),
            exempt: Vec::new(),
            ipv6_prefix: 64,
            max_clients: 1000,
        }
    }

    const UP: Direction = Direction::Upload;
    const DOWN: Direction = Direction::Download;

    #[test]
    fn burst_then_refill_at_the_rate() {
        let r = RateLimiter::new(limits(60, 3), Proxies::default());
        let a = ip("192.0.2.1");
        for _ in 0..3 {
            assert_eq!(r.check(a, "/x", UP, at(0.0)), Ok(()));
        }
        let wait = r.check(a, "/x", UP, at(0.0)).unwrap_err();
        assert_eq!(wait, Duration::from_secs(1), "60/min: one token a second");
        assert!(r.check(a, "/x", UP, at(0.5)).is_err());
        assert_eq!(r.check(a, "/x", UP, at(1.0)), Ok(()));
        assert!(r.check(a, "/x", UP, at(1.0)).is_err());
        // Refill stops at the burst size.
        for _ in 0..3 {
            assert_eq!(r.check(a, "/x", UP, at(100.0)), Ok(()));
        }
        assert!(r.check(a, "/x", UP, at(100.0)).is_err());
    }

    #[test]
    fn clients_and_directions_are_separate() {
        let r = RateLimiter::new(limits(60, 1), Proxies::default());
        let (a, b) = (ip("192.0.2.1"), ip("192.0.2.2"));
        assert_eq!(r.check(a, "/x", UP, at(0.0)), Ok(()));
        assert!(r.check(a, "/x", UP, at(0.0)).is_err());
        assert_eq!(r.check(b, "/x", UP, at(0.0)), Ok(()));
        // Downloads have their own (larger) bucket.
        for _ in 0..10 {
            assert_eq!(r.check(a, "/x", DOWN, at(0.0)), Ok(()));
        }
        assert!(r.check(a, "/x", DOWN, at(0.0)).is_err());
    }

    #[test]
    fn ipv6_clients_share_their_64() {
        let r = RateLimiter::new(limits(60, 1), Proxies::default());
        assert_eq!(r.check(ip("2001:db8:1:2::1"), "/x", UP, at(0.0)), Ok(()));
        assert!(r
            .check(ip("2001:db8:1:2::ffff"), "/x", UP, at(0.0))
            .is_err());
        assert_eq!(r.check(ip("2001:db8:1:3::1"), "/x", UP, at(0.0)), Ok(()));
        // IPv4-mapped is the IPv4 client.
        assert_eq!(r.check(ip("192.0.2.9"), "/x", UP, at(0.0)), Ok(()));
        assert!(r.check(ip("::ffff:192.0.2.9"), "/x", UP, at(0.0)).is_err());
    }

    #[test]
    fn exempt_blocks_and_disabled() {
        let mut l = limits(60, 1);
        l.exempt = vec!["10.0.0.0/8".parse().unwrap()];
        let r = RateLimiter::new(l.clone(), Proxies::default());
        for _ in 0..100 {
            assert_eq!(r.check(ip("10.2.3.4"), "/x", UP, at(0.0)), Ok(()));
        }
        // Loopback is not exempt unless listed.
        assert_eq!(r.check(ip("127.0.0.1"), "/x", UP, at(0.0)), Ok(()));
        assert!(r.check(ip("127.0.0.1"), "/x", UP, at(0.0)).is_err());
        l.enabled = false;
        let off = RateLimiter::new(l, Proxies::default());
        for _ in 0..100 {
            assert_eq!(off.check(ip("127.0.0.1"), "/x", UP, at(0.0)), Ok(()));
        }
        assert_eq!(off.tracked(), (0, 0));
    }

    #[test]
    fn unlimited_direction_tracks_nothing() {
        let mut l = limits(60, 1);
        l.download = Rate::default();
        let r = RateLimiter::new(l, Proxies::default());
        for _ in 0..100 {
            assert_eq!(r.check(ip("192.0.2.1"), "/x", DOWN, at(0.0)), Ok(()));
        }
        assert_eq!(r.tracked(), (0, 0));
    }

    #[test]
    fn prefix_bucket_is_shared_and_longest_prefix_wins() {
        let mut l = limits(600, 100);
        l.prefixes = vec![
            PrefixRule {
                path: "/upload/".into(),
                upload: Rate {
                    per_minute: 60,
                    burst: 3,
                },
                download: Rate::default(),
            },
            PrefixRule {
                path: "/upload/bots/".into(),
                upload: Rate {
                    per_minute: 60,
                    burst: 1,
                },
                download: Rate::default(),
            },
        ];
        let r = RateLimiter::new(l, Proxies::default());
        // Three different clients share /upload/'s 3 tokens.
        for i in 1..=3 {
            let a = ip(&format!("192.0.2.{i}"));
            assert_eq!(r.check(a, "/upload/abc/f", UP, at(0.0)), Ok(()));
        }
        let wait = r.check(ip("192.0.2.4"), "/upload/def/g", UP, at(0.0));
        assert_eq!(wait, Err(Duration::from_secs(1)));
        // /upload/bots/ has its own bucket, and its own rule.
        assert_eq!(
            r.check(ip("192.0.2.5"), "/upload/bots/a", UP, at(0.0)),
            Ok(())
        );
        assert!(r
            .check(ip("192.0.2.6"), "/upload/bots/b", UP, at(0.0))
            .is_err());
        // Downloads under the prefix are unlimited there (but still per client).
        assert_eq!(
            r.check(ip("192.0.2.4"), "/upload/abc/f", DOWN, at(0.0)),
            Ok(())
        );
        // Outside the prefixes only the client bucket counts.
        assert_eq!(r.check(ip("192.0.2.4"), "/other/x", UP, at(0.0)), Ok(()));
    }

    #[test]
    fn a_refusal_takes_no_token() {
        let mut l = limits(60, 2);
        l.prefixes = vec![PrefixRule {
            path: "/p/".into(),
            upload: Rate {
                per_minute: 60,
                burst: 1,
            },
            download: Rate::default(),
        }];
        let r = RateLimiter::new(l, Proxies::default());
        let a = ip("192.0.2.1");
        assert_eq!(r.check(a, "/p/1", UP, at(0.0)), Ok(()));
        // The prefix bucket is empty: refused, and the client's second token stays.
        assert!(r.check(a, "/p/2", UP, at(0.0)).is_err());
        assert!(r.check(a, "/p/2", UP, at(0.0)).is_err());
        assert_eq!(r.check(a, "/q/1", UP, at(0.0)), Ok(()));
        assert!(r.check(a, "/q/2", UP, at(0.0)).is_err());
    }

    #[test]
    fn flood_of_addresses_is_bounded() {
        let mut l = limits(60, 1);
        l.max_clients = 100;
        let r = RateLimiter::new(l, Proxies::default());
        for i in 0..10_000u32 {
            let a = IpAddr::from((0xC000_0000u32 + i).to_be_bytes());
            assert_eq!(r.check(a, "/x", UP, at(0.0)), Ok(()));
            assert!(r.tracked().0 <= 100);
        }
        assert_eq!(r.tracked().0, 100);
        // IPv6 flood from distinct /64s too.
        for i in 0..10_000u128 {
            let a = IpAddr::from(((0x2001_0db8u128 << 96) + (i << 64)).to_be_bytes());
            let _ = r.check(a, "/x", UP, at(0.0));
        }
        assert_eq!(r.tracked().0, 100);
    }

    #[test]
    fn idle_buckets_are_dropped() {
        let r = RateLimiter::new(limits(60, 1), Proxies::default());
        for i in 0..50u32 {
            let a = IpAddr::from((0xC000_0000u32 + i).to_be_bytes());
            assert_eq!(r.check(a, "/x", UP, at(0.0)), Ok(()));
        }
        assert_eq!(r.tracked().0, 50);
        // A minute later every bucket is full again: new requests drop them as they go.
        for _ in 0..20 {
            let _ = r.check(ip("198.51.100.1"), "/x", UP, at(60.0));
            let _ = r.check(ip("198.51.100.2"), "/x", UP, at(60.0));
        }
        assert!(r.tracked().0 < 50, "{:?}", r.tracked());
    }

    #[test]
    fn clock_going_back_does_not_panic_or_refill() {
        let r = RateLimiter::new(limits(60, 1), Proxies::default());
        let a = ip("192.0.2.1");
        assert_eq!(r.check(a, "/x", UP, at(10.0)), Ok(()));
        assert!(r.check(a, "/x", UP, at(0.0)).is_err());
        assert!(r.check(a, "/x", UP, at(10.5)).is_err());
        assert_eq!(r.check(a, "/x", UP, at(11.0)), Ok(()));
    }

    #[test]
    fn reload_replaces_limits_and_proxies() {
        let r = RateLimiter::new(limits(60, 1), Proxies::default());
        let a = ip("192.0.2.1");
        assert_eq!(r.check(a, "/x", UP, at(0.0)), Ok(()));
        assert!(r.check(a, "/x", UP, at(0.0)).is_err());
        let mut h = http::HeaderMap::new();
        h.insert("x-forwarded-for", "198.51.100.1".parse().unwrap());
        assert_eq!(r.client(ip("127.0.0.1"), &h), ip("127.0.0.1"));
        let proxies = Proxies {
            trusted: vec!["127.0.0.1".parse().unwrap()],
            header: Default::default(),
        };
        r.reload(limits(60, 3), proxies);
        assert_eq!(r.limits().upload.burst, 3);
        assert_eq!(r.client(ip("127.0.0.1"), &h), ip("198.51.100.1"));
        for _ in 0..3 {
            assert_eq!(r.check(a, "/x", UP, at(0.0)), Ok(()));
        }
        assert!(r.check(a, "/x", UP, at(0.0)).is_err());
        let mut off = limits(60, 1);
        off.enabled = false;
        r.reload(off, Proxies::default());
        assert_eq!(r.check(a, "/x", UP, at(0.0)), Ok(()));
    }
}
