//! Client profiles: what worked for a client before, so its next upload starts well sized.
//!
//! Key ([`key`]): xferd's signed URLs carry no user identity, so a client is its network
//! (IPv4 /24, IPv6 /48) plus its user-agent family (the first product token, lower-case,
//! version dropped: `curl`, `conversations`, `tus-js-client`). Stable across a phone's
//! restarts and DHCP renewals within its network, coarse enough that it is not a tracker.
//!
//! Each finished transfer folds in as an EWMA (alpha 0.3) of throughput, RTT and loss; the
//! chunk size with the best throughput seen (within 10% counts as a tie, the newer wins) is
//! the profile's best chunk. Profiles live in memory, bounded (least recently seen evicted),
//! expire after `ttl` without use, and are exported for persistence by the server.

use super::readings::Estimate;
use super::sizing::{connection_type, ConnectionType, History};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Profile {
    pub samples: u32,
    /// Bytes per second (EWMA).
    pub throughput: f64,
    pub rtt_ms: f64,
    pub loss: f64,
    pub best_chunk: u64,
    best_chunk_rate: f64,
    /// `h1`, `h2` or `h3`: the protocol of the client's last transfer.
    pub protocol: String,
    pub connection_type: ConnectionType,
    /// Unix seconds.
    pub last_seen: u64,
}

impl Profile {
    pub fn history(&self) -> History {
        History {
            samples: self.samples,
            throughput: self.throughput,
            best_chunk: self.best_chunk,
        }
    }
}

/// One finished transfer.
#[derive(Debug, Clone, Copy)]
pub struct Observation<'a> {
    pub bytes: u64,
    pub seconds: f64,
    pub estimate: Option<Estimate>,
    /// The chunk size the client used, for chunked uploads.
    pub chunk: Option<u64>,
    pub protocol: &'a str,
    pub loopback: bool,
    pub now: u64,
}

const ALPHA: f64 = 0.3;
/// Transfers shorter than this say little about throughput.
const MIN_BYTES: u64 = 256 << 10;

/// The profile key for a peer and its `User-Agent`.
pub fn key(peer: IpAddr, user_agent: Option<&str>) -> String {
    let net = match peer {
        IpAddr::V4(a) => {
            let o = a.octets();
            format!("{}.{}.{}.0/24", o[0], o[1], o[2])
        }
        IpAddr::V6(a) => match a.to_ipv4_mapped() {
            Some(v4) => return key(IpAddr::V4(v4), user_agent),
            None => {
                let s = a.segments();
                format!("{:x}:{:x}:{:x}::/48", s[0], s[1], s[2])
            }
        },
    };
    let family: String = user_agent
        .and_then(|ua| ua.split_whitespace().next())
        .map(|tok| tok.split('/').next().unwrap_or(tok))
        .unwrap_or("-")
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        .take(32)
        .collect::<String>()
        .to_ascii_lowercase();
    let family = if family.is_empty() {
        "-".into()
    } else {
        family
    };
    format!("{net} {family}")
}

pub struct Profiles {
    enabled: bool,
    detect_type: bool,
    max: usize,
    ttl_secs: u64,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    map: HashMap<String, Profile>,
    dirty: Vec<String>,
}

impl Profiles {
    pub fn new(enabled: bool, detect_type: bool, max: usize, ttl_secs: u64) -> Profiles {
        Profiles {
            enabled,
            detect_type,
            max: max.max(1),
            ttl_secs,
            inner: Mutex::new(Inner::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        match self.inner.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    pub fn enabled(&self) -> bool {
        self.enabled
    }

    pub fn len(&self) -> usize {
        self.lock().map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn get(&self, key: &str, now: u64) -> Option<Profile> {
        if !self.enabled {
            return None;
        }
        let g = self.lock();
        g.map
            .get(key)
            .filter(|p| now.saturating_sub(p.last_seen) < self.ttl_secs)
            .cloned()
    }

    /// Folds a finished transfer into its client's profile.
    pub fn record(&self, key: &str, o: &Observation<'_>) {
        if !self.enabled || o.bytes < MIN_BYTES || o.seconds <= 0.0 {
            return;
        }
        let rate = o.bytes as f64 / o.seconds;
        let kind = if self.detect_type {
            connection_type(o.loopback, o.estimate.as_ref())
        } else {
            ConnectionType::Unknown
        };
        let mut g = self.lock();
        if !g.map.contains_key(key) && g.map.len() >= self.max {
            if let Some(oldest) = g
                .map
                .iter()
                .min_by_key(|(_, p)| p.last_seen)
                .map(|(k, _)| k.clone())
            {
                g.map.remove(&oldest);
            }
        }
        let p = g.map.entry(key.to_string()).or_insert_with(|| Profile {
            samples: 0,
            throughput: rate,
            rtt_ms: 0.0,
            loss: 0.0,
            best_chunk: 0,
            best_chunk_rate: 0.0,
            protocol: String::new(),
            connection_type: ConnectionType::Unknown,
            last_seen: o.now,
        });
        let blend = |old: f64, new: f64, first: bool| {
            if first {
                new
            } else {
                old + ALPHA * (new - old)
            }
        };
        let first = p.samples == 0;
        p.throughput = blend(p.throughput, rate, first);
        if let Some(e) = o.estimate {
            p.rtt_ms = blend(p.rtt_ms, e.rtt.as_secs_f64() * 1000.0, first);
            p.loss = blend(p.loss, e.loss, first);
        }
        if let Some(c) = o.chunk {
            if rate >= p.best_chunk_rate * 0.9 {
                p.best_chunk = c;
                p.best_chunk_rate = rate;
            }
        }
        p.samples = p.samples.saturating_add(1);
        p.protocol = o.protocol.to_string();
        if kind != ConnectionType::Unknown {
            p.connection_type = kind;
        }
        p.last_seen = o.now;
        g.dirty.push(key.to_string());
    }

    /// Profiles changed since the last call (for persistence).
    pub fn take_dirty(&self) -> Vec<(String, Profile)> {
        let mut g = self.lock();
        let mut keys = std::mem::take(&mut g.dirty);
        keys.sort();
        keys.dedup();
        keys.into_iter()
            .filter_map(|k| g.map.get(&k).cloned().map(|p| (k, p)))
            .collect()
    }

    /// Drops expired profiles; returns their keys (to delete from disk).
    pub fn prune(&self, now: u64) -> Vec<String> {
        let mut g = self.lock();
        let gone: Vec<String> = g
            .map
            .iter()
            .filter(|(_, p)| now.saturating_sub(p.last_seen) >= self.ttl_secs)
            .map(|(k, _)| k.clone())
            .collect();
        for k in &gone {
            g.map.remove(k);
        }
        gone
    }

    /// Loads persisted profiles (start-up); expired ones and any beyond the bound are skipped.
    pub fn load(&self, items: Vec<(String, Profile)>, now: u64) {
        let mut items: Vec<_> = items
            .into_iter()
            .filter(|(_, p)| now.saturating_sub(p.last_seen) < self.ttl_secs)
            .collect();
        items.sort_by_key(|(_, p)| std::cmp::Reverse(p.last_seen));
        items.truncate(self.max);
        let mut g = self.lock();
        g.map.extend(items);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn obs(bytes: u64, seconds: f64, chunk: Option<u64>, now: u64) -> Observation<'static> {
        Observation {
            bytes,
            seconds,
            estimate: Some(Estimate {
                bandwidth: 1,
                rtt: Duration::from_millis(80),
                loss: 0.02,
                measured: true,
            }),
            chunk,
            protocol: "h3",
            loopback: false,
            now,
        }
    }

    #[test]
    fn keys_are_network_and_agent_family() {
        let k = |ip: &str, ua: Option<&str>| key(ip.parse().unwrap(), ua);
        assert_eq!(
            k("203.0.113.77", Some("curl/7.88.1")),
            "203.0.113.0/24 curl"
        );
        assert_eq!(
            k("2001:db8:1:2::5", Some("Conversations/2.16 (Android)")),
            "2001:db8:1::/48 conversations"
        );
        assert_eq!(k("::ffff:10.1.2.3", None), "10.1.2.0/24 -");
        assert_eq!(k("10.1.2.3", Some("\u{1F600}/1")), "10.1.2.0/24 -");
    }

    #[test]
    fn ewma_best_chunk_and_connection_type() {
        let p = Profiles::new(true, true, 10, 3600);
        p.record("a", &obs(10_000_000, 1.0, Some(1 << 20), 100));
        p.record("a", &obs(20_000_000, 1.0, Some(4 << 20), 101));
        p.record("a", &obs(5_000_000, 1.0, Some(8 << 20), 102));
        let got = p.get("a", 103).unwrap();
        assert_eq!(got.samples, 3);
        // 10 -> 13 -> 10.6 MB/s
        assert!(
            (got.throughput - 10_600_000.0).abs() < 1.0,
            "{}",
            got.throughput
        );
        assert_eq!(got.best_chunk, 4 << 20);
        assert_eq!(got.connection_type, ConnectionType::Mobile);
        assert_eq!(got.protocol, "h3");
        // Small transfers say nothing.
        p.record("b", &obs(1000, 1.0, None, 100));
        assert!(p.get("b", 100).is_none());
    }

    #[test]
    fn bounded_expiring_and_persistable() {
        let p = Profiles::new(true, true, 2, 100);
        p.record("a", &obs(1 << 20, 1.0, None, 10));
        p.record("b", &obs(1 << 20, 1.0, None, 20));
        p.record("c", &obs(1 << 20, 1.0, None, 30));
        assert_eq!(p.len(), 2);
        assert!(p.get("a", 30).is_none(), "least recently seen evicted");
        let dirty = p.take_dirty();
        assert_eq!(dirty.len(), 2);
        assert!(p.take_dirty().is_empty());
        assert!(p.get("b", 125).is_none(), "expired after ttl");
        assert_eq!(p.prune(125), vec!["b".to_string()]);
        let q = Profiles::new(true, true, 2, 100);
        q.load(dirty, 40);
        assert_eq!(q.get("c", 40).unwrap().samples, 1);
        let off = Profiles::new(false, true, 2, 100);
        off.record("a", &obs(1 << 20, 1.0, None, 10));
        assert!(off.get("a", 10).is_none() && off.is_empty());
    }
}
