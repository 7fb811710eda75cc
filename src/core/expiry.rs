//! File expiry: [`sweep`] deletes stored files older than `max_age`, through the storage
//! contract only (so it works on every backend: [`Store::list`], [`Store::stat`],
//! [`Store::delete`]), with time passed in.
//!
//! Rules:
//! 1. A file's age is `now - ObjectMeta::modified`: the time the upload was committed. On
//!    the filesystem that is the file's mtime, set by the upload's last write before the
//!    no-overwrite rename (nothing writes a committed file again); in memory the commit time;
//!    on S3 `Last-Modified`, the completion of the (multipart) upload.
//! 2. Only listed objects are candidates: bytes being uploaded are staged (temporary files,
//!    session data under `.xferd*` names, multipart uploads in progress) and never listed, so
//!    they are never expired. The target of a resumable session in progress is skipped too
//!    (`in_progress`), whatever is stored there.
//! 3. A candidate is looked up again just before it is deleted, and kept unless it is still
//!    the same object (same version) and still old: a file uploaded again in the meantime
//!    stays.
//! 4. Listing is paged ([`Store::list`] with a cursor, `page` keys at a time): memory is one
//!    page, whatever the number of files. Deleting behind the cursor does not disturb it.
//! 5. Empty directories: on the filesystem, [`Store::delete`] removes the parent directories
//!    it leaves empty (a detail of that backend behind the contract; object stores have no
//!    directories).
//! 6. Every deletion gives its bytes back to the quotas ([`Quotas::removed`]).

use super::quota::Quotas;
use crate::storage::store::{Store, StoreError};
use std::collections::HashSet;
use std::time::{Duration, SystemTime};

/// Keys per listing page.
pub const PAGE: usize = 1000;

/// What one sweep did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Swept {
    /// Files listed.
    pub seen: u64,
    /// Files deleted, and their bytes.
    pub files: u64,
    pub bytes: u64,
}

/// Whether a file modified at `modified` is older than `max_age` at `now`.
pub fn expired(modified: SystemTime, now: SystemTime, max_age: Duration) -> bool {
    now.duration_since(modified).is_ok_and(|age| age > max_age)
}

/// One pass over the store (see the module rules). A storage error stops the pass; what
/// was deleted before it stays deleted and counted.
pub async fn sweep(
    store: &dyn Store,
    quotas: &Quotas,
    in_progress: &HashSet<String>,
    max_age: Duration,
    now: SystemTime,
    page: usize,
) -> Result<Swept, (Swept, StoreError)> {
    let page = page.max(1);
    let mut done = Swept::default();
    let mut after = None;
    loop {
        let listed = match store.list("", after.as_ref(), page).await {
            Ok(l) => l,
            Err(e) => return Err((done, e)),
        };
        for l in &listed {
            done.seen += 1;
            if !expired(l.meta.modified, now, max_age) || in_progress.contains(l.key.as_str()) {
                continue;
            }
            // Rule 3: still the same, still old.
            match store.stat(&l.key).await {
                Ok(Some(m)) if m.version == l.meta.version && expired(m.modified, now, max_age) => {
                }
                Ok(_) => continue,
                Err(e) => return Err((done, e)),
            }
            match store.delete(&l.key).await {
                Ok(true) => {
                    done.files += 1;
                    done.bytes = done.bytes.saturating_add(l.meta.len);
                    quotas.removed(l.key.as_str(), l.meta.len);
                    tracing::info!(path = %l.key.as_str(), size = l.meta.len, "expired");
                }
                Ok(false) => {}
                Err(e) => return Err((done, e)),
            }
        }
        if listed.len() < page {
            return Ok(done);
        }
        after = listed.last().map(|l| l.key.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::quota::Rule;
    use crate::storage::key::Key;
    use crate::storage::mem::MemStore;
    use bytes::Bytes;

    async fn put(store: &MemStore, key: &str, data: &'static [u8]) {
        let staged = store.begin(&Key::parse(key).unwrap(), None).await.unwrap();
        staged
            .sink()
            .write(0, Bytes::from_static(data))
            .await
            .unwrap();
        staged.commit().await.unwrap();
    }

    #[tokio::test]
    async fn old_files_go_recent_and_in_progress_targets_stay() {
        let store = MemStore::new(1 << 20);
        let quotas = std::sync::Arc::new(Quotas::new(vec![Rule {
            prefix: String::new(),
            max: 1 << 20,
        }]));
        // Fifteen old files (more than a page of 4), one the target of a session.
        for i in 0..15 {
            put(&store, &format!("d{}/f{i}.bin", i % 3), b"0123456789").await;
        }
        quotas.recompute(&store).await.unwrap();
        assert_eq!(quotas.usage()[0].used, 150);
        let hour = Duration::from_secs(3600);
        let busy: HashSet<String> = ["d1/f4.bin".to_string()].into();
        // Now: every file is recent.
        let swept = sweep(&store, &quotas, &busy, hour, SystemTime::now(), 4)
            .await
            .unwrap();
        assert_eq!((swept.seen, swept.files), (15, 0));
        // Two hours later: all old; only the target of the session in progress stays.
        let later = SystemTime::now() + 2 * hour;
        let swept = sweep(&store, &quotas, &busy, hour, later, 4).await.unwrap();
        assert_eq!((swept.seen, swept.files, swept.bytes), (15, 14, 140));
        let left = store.list("", None, 100).await.unwrap();
        let names: Vec<&str> = left.iter().map(|l| l.key.as_str()).collect();
        assert_eq!(names, ["d1/f4.bin"]);
        assert_eq!(quotas.usage()[0].used, 10);
    }

    #[test]
    fn age_rule_is_strictly_older() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1000);
        let max = Duration::from_secs(10);
        assert!(!expired(t, t + max, max));
        assert!(expired(t, t + max + Duration::from_millis(1), max));
        // A file from the future (clock step back) is not old.
        assert!(!expired(t + max, t, max));
    }
}
