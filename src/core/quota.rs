//! Storage quotas: a cap on all stored bytes and caps per key prefix (an XMPP upload
//! component signs URLs under its own prefix; a signed XEP-0363 URL names no user, so the
//! prefix is what a quota can be about).
//!
//! Rules:
//! 1. Usage is stored bytes per rule (the total, and every prefix rule a key starts with),
//!    computed at start-up from [`Store::list`] ([`Quotas::recompute`], pages of
//!    [`LIST_PAGE`] keys: memory is one page whatever the number of files) and then kept by
//!    the events that change it: a commit ([`Reservation::commit`], [`Quotas::settle_session`]),
//!    a delete or an expiry ([`Quotas::removed`]).
//! 2. An upload reserves its length before its body is read: a `PUT` its `Content-Length`,
//!    a resumable upload its declared length at creation (tus `Upload-Length`, IETF
//!    `Upload-Length`, HFS `X-Total-Size`). Used + reserved + the new length must fit every
//!    rule the key falls under, checked and reserved under one lock, so concurrent uploads
//!    cannot overshoot. A reservation is released when the upload fails (dropping a
//!    [`Reservation`]; a session's on termination or expiry) and becomes usage on commit.
//! 3. Refusal is `quota_exceeded`: 413 when the upload is larger than a cap it falls under
//!    (it can never fit: XEP-0363's answer for a file too large for the service), else 507
//!    Insufficient Storage (space may come back through deletes and expiry).
//! 4. Uploads of unknown length (tus `Upload-Defer-Length`, tus partial uploads, chunked
//!    form bodies) are counted when they are stored; they are bounded by
//!    `resumable.max_reserved_bytes` and `server.max_upload_size` meanwhile.
//! 5. Sessions in progress after a restart are reserved again from their records
//!    ([`crate::core::resumable::Engine::reserve_open`]), without a check: they were admitted.
//!
//! Memory: one entry per rule, plus one per resumable session in progress (bounded by
//! `resumable.max_sessions`). Nothing here reads a clock or touches a socket.

use super::error::CoreError;
use crate::storage::store::{Store, StoreError};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Keys per [`Store::list`] page while computing usage.
pub const LIST_PAGE: usize = 1000;

/// One cap: keys starting with `prefix` (a storage path prefix such as `xmpp/`; empty = all
/// keys, the total cap) may hold at most `max` bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub prefix: String,
    pub max: u64,
}

/// Used and reserved bytes of one rule (for metrics and tests).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Usage {
    pub prefix: String,
    pub max: u64,
    pub used: u64,
    pub reserved: u64,
}

#[derive(Debug, Default)]
struct State {
    used: Vec<u64>,
    reserved: Vec<u64>,
    /// Resumable sessions' reservations: id -> (key, bytes).
    sessions: HashMap<String, (String, u64)>,
}

/// The quotas in force (see the module doc). Without rules every call is a no-op.
#[derive(Debug, Default)]
pub struct Quotas {
    rules: Vec<Rule>,
    state: Mutex<State>,
}

fn lock(m: &Mutex<State>) -> std::sync::MutexGuard<'_, State> {
    // Poisoning only means a panic elsewhere; every update below is a few additions.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Quotas {
    /// Quotas over `rules` (a total cap is the rule with an empty prefix).
    pub fn new(rules: Vec<Rule>) -> Quotas {
        let n = rules.len();
        Quotas {
            rules,
            state: Mutex::new(State {
                used: vec![0; n],
                reserved: vec![0; n],
                sessions: HashMap::new(),
            }),
        }
    }

    /// No quotas.
    pub fn none() -> Arc<Quotas> {
        Arc::new(Quotas::default())
    }

    pub fn enabled(&self) -> bool {
        !self.rules.is_empty()
    }

    /// The indices of the rules `key` falls under.
    fn matching<'a>(&'a self, key: &'a str) -> impl Iterator<Item = usize> + 'a {
        self.rules
            .iter()
            .enumerate()
            .filter(move |(_, r)| key.starts_with(r.prefix.as_str()))
            .map(|(i, _)| i)
    }

    /// Checks `size` more bytes under `key` against every rule and reserves them.
    fn take(&self, st: &mut State, key: &str, size: u64) -> Result<(), CoreError> {
        for i in self.matching(key) {
            let (Some(rule), Some(used), Some(res)) =
                (self.rules.get(i), st.used.get(i), st.reserved.get(i))
            else {
                continue;
            };
            if size > rule.max {
                return Err(CoreError::QuotaExceeded {
                    larger_than_cap: true,
                });
            }
            if used.saturating_add(*res).saturating_add(size) > rule.max {
                return Err(CoreError::QuotaExceeded {
                    larger_than_cap: false,
                });
            }
        }
        self.add(&mut st.reserved, key, size);
        Ok(())
    }

    fn add(&self, v: &mut [u64], key: &str, n: u64) {
        for i in self.matching(key) {
            if let Some(x) = v.get_mut(i) {
                *x = x.saturating_add(n);
            }
        }
    }

    fn sub(&self, v: &mut [u64], key: &str, n: u64) {
        for i in self.matching(key) {
            if let Some(x) = v.get_mut(i) {
                *x = x.saturating_sub(n);
            }
        }
    }

    /// Reserves `size` bytes for an upload to `key` (rule 2); released when the returned
    /// reservation is dropped, usage once committed.
    pub fn reserve(self: &Arc<Self>, key: &str, size: u64) -> Result<Reservation, CoreError> {
        if self.enabled() {
            self.take(&mut lock(&self.state), key, size)?;
        }
        Ok(Reservation {
            quotas: self.clone(),
            key: key.to_string(),
            size,
            done: !self.enabled(),
        })
    }

    /// Reserves a resumable session's length (rule 2), held until the session is settled or
    /// released.
    pub fn reserve_session(&self, id: &str, key: &str, size: u64) -> Result<(), CoreError> {
        if !self.enabled() {
            return Ok(());
        }
        let mut st = lock(&self.state);
        self.take(&mut st, key, size)?;
        st.sessions.insert(id.to_string(), (key.to_string(), size));
        Ok(())
    }

    /// A session admitted before a restart (rule 5): reserved without a check.
    pub fn restore_session(&self, id: &str, key: &str, size: u64) {
        if !self.enabled() {
            return;
        }
        let mut st = lock(&self.state);
        if st.sessions.contains_key(id) {
            return;
        }
        self.add(&mut st.reserved, key, size);
        st.sessions.insert(id.to_string(), (key.to_string(), size));
    }

    /// A session's file of `len` bytes was stored under `key`: its reservation (if any)
    /// becomes usage.
    pub fn settle_session(&self, id: &str, key: &str, len: u64) {
        if !self.enabled() {
            return;
        }
        let mut st = lock(&self.state);
        if let Some((k, n)) = st.sessions.remove(id) {
            self.sub(&mut st.reserved, &k, n);
        }
        self.add(&mut st.used, key, len);
    }

    /// A session ended without storing a file (terminated, expired, refused).
    pub fn release_session(&self, id: &str) {
        if !self.enabled() {
            return;
        }
        let mut st = lock(&self.state);
        if let Some((k, n)) = st.sessions.remove(id) {
            self.sub(&mut st.reserved, &k, n);
        }
    }

    /// A stored file of `len` bytes under `key` was deleted (or expired).
    pub fn removed(&self, key: &str, len: u64) {
        if self.enabled() {
            self.sub(&mut lock(&self.state).used, key, len);
        }
    }

    /// Usage from the store itself (rule 1): every object listed, page by page. Replaces
    /// the usage counted so far (reservations stay). Returns (files, bytes) listed.
    pub async fn recompute(&self, store: &dyn Store) -> Result<(u64, u64), StoreError> {
        let mut used = vec![0u64; self.rules.len()];
        let (mut files, mut bytes) = (0u64, 0u64);
        if !self.enabled() {
            return Ok((0, 0));
        }
        let mut after = None;
        loop {
            let page = store.list("", after.as_ref(), LIST_PAGE).await?;
            for l in &page {
                files += 1;
                bytes = bytes.saturating_add(l.meta.len);
                self.add(&mut used, l.key.as_str(), l.meta.len);
            }
            if page.len() < LIST_PAGE {
                break;
            }
            after = page.last().map(|l| l.key.clone());
        }
        lock(&self.state).used = used;
        Ok((files, bytes))
    }

    /// Every rule with its usage.
    pub fn usage(&self) -> Vec<Usage> {
        let st = lock(&self.state);
        self.rules
            .iter()
            .enumerate()
            .map(|(i, r)| Usage {
                prefix: r.prefix.clone(),
                max: r.max,
                used: st.used.get(i).copied().unwrap_or(0),
                reserved: st.reserved.get(i).copied().unwrap_or(0),
            })
            .collect()
    }
}

/// Bytes reserved for one upload in progress (see [`Quotas::reserve`]).
#[derive(Debug)]
pub struct Reservation {
    quotas: Arc<Quotas>,
    key: String,
    size: u64,
    done: bool,
}

impl Reservation {
    /// The upload was stored with its reserved size.
    pub fn commit(self) {
        let n = self.size;
        self.commit_as(n);
    }

    /// The upload was stored with `len` bytes (a form upload reserves its request length).
    pub fn commit_as(mut self, len: u64) {
        if !self.done {
            let q = &self.quotas;
            let mut st = lock(&q.state);
            q.sub(&mut st.reserved, &self.key, self.size);
            q.add(&mut st.used, &self.key, len);
        }
        self.done = true;
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if !self.done {
            let q = &self.quotas;
            q.sub(&mut lock(&q.state).reserved, &self.key, self.size);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q() -> Arc<Quotas> {
        Arc::new(Quotas::new(vec![
            Rule {
                prefix: String::new(),
                max: 100,
            },
            Rule {
                prefix: "xmpp/".into(),
                max: 40,
            },
        ]))
    }

    fn refused(r: Result<Reservation, CoreError>) -> Option<bool> {
        match r {
            Err(CoreError::QuotaExceeded { larger_than_cap }) => Some(larger_than_cap),
            _ => None,
        }
    }

    #[test]
    fn reservations_count_until_released_or_committed() {
        let q = q();
        let a = q.reserve("xmpp/a", 30).unwrap();
        // 30 reserved + 20 > 40 under xmpp/.
        assert_eq!(refused(q.reserve("xmpp/b", 20)), Some(false));
        // Elsewhere only the total applies.
        let b = q.reserve("other/b", 60).unwrap();
        assert_eq!(refused(q.reserve("other/c", 20)), Some(false));
        drop(b);
        a.commit();
        assert_eq!(q.usage()[1].used, 30);
        assert_eq!(q.usage()[1].reserved, 0);
        assert_eq!(q.usage()[0].reserved, 0);
        // Larger than the cap itself: it never fits.
        assert_eq!(refused(q.reserve("xmpp/big", 41)), Some(true));
        q.removed("xmpp/a", 30);
        assert!(q.reserve("xmpp/b", 40).is_ok());
    }

    #[test]
    fn sessions_reserve_settle_and_release() {
        let q = q();
        q.reserve_session("s1", "xmpp/a", 40).unwrap();
        assert!(q.reserve_session("s2", "xmpp/b", 1).is_err());
        q.settle_session("s1", "xmpp/a", 40);
        assert_eq!(q.usage()[1].used, 40);
        assert_eq!(q.usage()[1].reserved, 0);
        q.reserve_session("s3", "z", 50).unwrap();
        q.release_session("s3");
        q.release_session("s3");
        assert_eq!(q.usage()[0].reserved, 0);
        assert_eq!(q.usage()[0].used, 40);
    }

    #[test]
    fn no_rules_no_checks() {
        let q = Quotas::none();
        let r = q.reserve("a", u64::MAX).unwrap();
        r.commit();
        assert!(q.usage().is_empty());
    }
}
