//! The local, durable stores in embedded redb databases: [`SessionStore`] (resumable
//! records, behind [`SessionRecords`]) and [`ProfileStore`] (client profiles, in a file of
//! their own: redb opens a file once per process).
//!
//! Why redb: pure Rust (no C toolchain), ACID transactions with fsync on commit (a record
//! is durable before an offset is acknowledged), crash-safe without a recovery step, and a
//! single file. A session value is `version (8) | fence (8) | summary length (4) | summary
//! (JSON) | body`, big-endian. Records written before the store had versions (the table
//! `sessions`, the body alone) are converted once by [`SessionStore::migrate_legacy`].
//!
//! redb calls block: the trait methods run them on the blocking pool; the inherent
//! `*_blocking` ones are for callers already there (start-up). Because the database file is
//! this process's alone, the counts of open records are kept in memory, maintained under
//! the same lock as every write, and equal what a scan would compute.

use super::{
    check_fence, check_quota, Counts, Quota, Record, RecordError, RecordResult, SessionRecords,
    Stored, Summary, Version,
};
use futures_util::future::BoxFuture;
use redb::{Database, ReadableTable, TableDefinition};
use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

const RECORDS: TableDefinition<&str, &[u8]> = TableDefinition::new("records");
const LEGACY: TableDefinition<&str, &[u8]> = TableDefinition::new("sessions");
const PROFILES: TableDefinition<&str, &[u8]> = TableDefinition::new("profiles");

#[derive(Debug, thiserror::Error)]
#[error("session store: {0}")]
pub struct MetaError(String);

fn err(e: impl std::fmt::Display) -> MetaError {
    MetaError(e.to_string())
}

fn rerr(e: impl std::fmt::Display) -> RecordError {
    let m = e.to_string();
    // A full state filesystem (ENOSPC, EDQUOT) is the client's 507, not a store failure.
    // redb's error types pass the `io::Error` on only in their text, hence the match on it.
    if m.contains("(os error 28)") || m.contains("(os error 122)") {
        RecordError::Full(m)
    } else {
        RecordError::Store(m)
    }
}

impl From<MetaError> for std::io::Error {
    fn from(e: MetaError) -> Self {
        std::io::Error::other(e.0)
    }
}

fn open_db(
    path: &Path,
    tables: &[TableDefinition<'static, &'static str, &'static [u8]>],
) -> Result<Database, MetaError> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(err)?;
    }
    let db = Database::create(path).map_err(err)?;
    let txn = db.begin_write().map_err(err)?;
    for t in tables {
        txn.open_table(*t).map_err(err)?;
    }
    txn.commit().map_err(err)?;
    Ok(db)
}

fn encode(s: &Stored) -> RecordResult<Vec<u8>> {
    let summary = serde_json::to_vec(&s.record.summary).map_err(rerr)?;
    let len = u32::try_from(summary.len()).map_err(rerr)?;
    let mut v = Vec::with_capacity(20 + summary.len() + s.record.body.len());
    v.extend_from_slice(&s.version.to_be_bytes());
    v.extend_from_slice(&s.fence.to_be_bytes());
    v.extend_from_slice(&len.to_be_bytes());
    v.extend_from_slice(&summary);
    v.extend_from_slice(&s.record.body);
    Ok(v)
}

fn decode(raw: &[u8]) -> RecordResult<Stored> {
    let bad = || RecordError::Store("malformed record".into());
    let u64_at = |at: usize| -> RecordResult<u64> {
        let b: [u8; 8] = raw
            .get(at..at + 8)
            .ok_or_else(bad)?
            .try_into()
            .map_err(rerr)?;
        Ok(u64::from_be_bytes(b))
    };
    let (version, fence) = (u64_at(0)?, u64_at(8)?);
    let len: [u8; 4] = raw.get(16..20).ok_or_else(bad)?.try_into().map_err(rerr)?;
    let end = 20usize.saturating_add(u32::from_be_bytes(len) as usize);
    let summary = serde_json::from_slice(raw.get(20..end).ok_or_else(bad)?).map_err(rerr)?;
    Ok(Stored {
        version,
        fence,
        record: Record {
            summary,
            body: raw.get(end..).unwrap_or_default().to_vec(),
        },
    })
}

/// Open records: id → (owner, reserved).
type OpenIndex = HashMap<String, (String, u64)>;

struct Inner {
    path: std::path::PathBuf,
    /// `None` after an I/O failure: reopened by the next operation (see [`SessionStore::db`]).
    db: Db,
    /// Kept equal to the open records in the table; locked across every write transaction.
    open: Mutex<OpenIndex>,
}

/// Resumable records in redb (see the module docs).
#[derive(Clone)]
pub struct SessionStore {
    inner: Arc<Inner>,
}

type Db = std::sync::RwLock<Option<Database>>;

fn read(g: &Db) -> std::sync::RwLockReadGuard<'_, Option<Database>> {
    g.read().unwrap_or_else(|p| p.into_inner())
}

fn write(g: &Db) -> std::sync::RwLockWriteGuard<'_, Option<Database>> {
    g.write().unwrap_or_else(|p| p.into_inner())
}

fn lock(m: &Mutex<OpenIndex>) -> std::sync::MutexGuard<'_, OpenIndex> {
    // A panic while holding the lock cannot leave the map half-updated (single inserts and
    // removes after a committed transaction).
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn index_update(open: &mut OpenIndex, id: &str, s: &Summary) {
    if s.open {
        open.insert(id.to_string(), (s.owner.clone(), s.reserved));
    } else {
        open.remove(id);
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> RecordResult<T> + Send + 'static,
) -> RecordResult<T> {
    tokio::task::spawn_blocking(f).await.map_err(rerr)?
}

impl SessionStore {
    /// Runs `f` on the database. After an I/O failure (a full state filesystem, say) redb
    /// refuses every later transaction (`PreviousIo`) until the database is reopened: such
    /// a failure closes it, and the next operation reopens it (a failed commit wrote
    /// nothing, so the open index stays right).
    fn db<T>(&self, f: impl FnOnce(&Database) -> RecordResult<T>) -> RecordResult<T> {
        if read(&self.inner.db).is_none() {
            let mut g = write(&self.inner.db);
            if g.is_none() {
                let db = open_db(&self.inner.path, &[RECORDS, LEGACY]).map_err(|e| rerr(e.0))?;
                tracing::info!("session store reopened after an I/O failure");
                *g = Some(db);
            }
        }
        let out = {
            let g = read(&self.inner.db);
            match g.as_ref() {
                Some(db) => f(db),
                None => Err(RecordError::Store("session store closed".into())),
            }
        };
        if let Err(RecordError::Full(m) | RecordError::Store(m)) = &out {
            if m.contains("(os error") || m.contains("Previous I/O error") {
                tracing::warn!(error = %m, "session store I/O failure: reopening it");
                *write(&self.inner.db) = None;
            }
        }
        out
    }

    pub fn open(path: &Path) -> Result<SessionStore, MetaError> {
        let db = open_db(path, &[RECORDS, LEGACY])?;
        let store = SessionStore {
            inner: Arc::new(Inner {
                path: path.to_path_buf(),
                db: std::sync::RwLock::new(Some(db)),
                open: Mutex::new(HashMap::new()),
            }),
        };
        let mut open = HashMap::new();
        for (id, s) in store.scan_blocking().map_err(err)? {
            index_update(&mut open, &id, &s.record.summary);
        }
        *lock(&store.inner.open) = open;
        Ok(store)
    }

    /// Converts records of the unversioned format (table `sessions`) with `summarize`,
    /// dropping those it cannot read; returns how many were converted.
    pub fn migrate_legacy(
        &self,
        summarize: impl Fn(&[u8]) -> Option<Summary>,
    ) -> Result<usize, MetaError> {
        let mut open = lock(&self.inner.open);
        let g = read(&self.inner.db);
        let db = g
            .as_ref()
            .ok_or_else(|| MetaError("session store closed".into()))?;
        let txn = db.begin_write().map_err(err)?;
        let mut n = 0;
        {
            let mut legacy = txn.open_table(LEGACY).map_err(err)?;
            let mut records = txn.open_table(RECORDS).map_err(err)?;
            let mut rows = Vec::new();
            for item in legacy.iter().map_err(err)? {
                let (k, v) = item.map_err(err)?;
                rows.push((k.value().to_string(), v.value().to_vec()));
            }
            for (id, body) in rows {
                legacy.remove(id.as_str()).map_err(err)?;
                let Some(summary) = summarize(&body) else {
                    tracing::warn!(%id, "dropping unreadable legacy session record");
                    continue;
                };
                index_update(&mut open, &id, &summary);
                let s = Stored {
                    version: 1,
                    fence: 0,
                    record: Record { summary, body },
                };
                records
                    .insert(id.as_str(), encode(&s).map_err(err)?.as_slice())
                    .map_err(err)?;
                n += 1;
            }
        }
        txn.commit().map_err(err)?;
        Ok(n)
    }

    /// The highest fencing token any record was written with (a local locker's tokens
    /// start above it, so they keep increasing across restarts).
    pub fn max_fence_blocking(&self) -> RecordResult<u64> {
        Ok(self
            .scan_blocking()?
            .iter()
            .map(|(_, s)| s.fence)
            .max()
            .unwrap_or(0))
    }

    pub fn get_blocking(&self, id: &str) -> RecordResult<Option<Stored>> {
        self.db(|db| {
            let txn = db.begin_read().map_err(rerr)?;
            let t = txn.open_table(RECORDS).map_err(rerr)?;
            let raw = t.get(id).map_err(rerr)?;
            raw.map(|v| decode(v.value())).transpose()
        })
    }

    pub fn scan_blocking(&self) -> RecordResult<Vec<(String, Stored)>> {
        self.db(Self::scan_in)
    }

    fn scan_in(db: &Database) -> RecordResult<Vec<(String, Stored)>> {
        let txn = db.begin_read().map_err(rerr)?;
        let t = txn.open_table(RECORDS).map_err(rerr)?;
        let mut out = Vec::new();
        for item in t.iter().map_err(rerr)? {
            let (k, v) = item.map_err(rerr)?;
            let id = k.value().to_string();
            match decode(v.value()) {
                Ok(s) => out.push((id, s)),
                Err(e) => tracing::warn!(%id, error = %e, "skipping a malformed record"),
            }
        }
        Ok(out)
    }

    /// One write transaction: `decide` sees the current record and returns what to store
    /// (`Some`) or to delete (`None`); the open index follows the commit.
    fn write_blocking<T>(
        &self,
        id: &str,
        decide: impl FnOnce(Option<Stored>, &OpenIndex) -> RecordResult<(Option<Stored>, T)>,
    ) -> RecordResult<T> {
        let mut open = lock(&self.inner.open);
        let out = self.db(|db| {
            let txn = db.begin_write().map_err(rerr)?;
            let out = {
                let mut t = txn.open_table(RECORDS).map_err(rerr)?;
                let current = t.get(id).map_err(rerr)?.map(|v| decode(v.value()));
                let (next, out) = decide(current.transpose()?, &open)?;
                match &next {
                    Some(s) => {
                        t.insert(id, encode(s)?.as_slice()).map_err(rerr)?;
                    }
                    None => {
                        t.remove(id).map_err(rerr)?;
                    }
                }
                (next, out)
            };
            txn.commit().map_err(rerr)?;
            Ok(out)
        })?;
        match &out.0 {
            Some(s) => index_update(&mut open, id, &s.record.summary),
            None => {
                open.remove(id);
            }
        }
        Ok(out.1)
    }

    pub fn insert_blocking(&self, id: &str, record: Record, quota: Quota) -> RecordResult<Version> {
        self.write_blocking(id, |current, open| {
            if current.is_some() {
                return Err(RecordError::Conflict);
            }
            check_quota(
                &counts_of(open, &record.summary.owner),
                &quota,
                &record.summary,
            )?;
            let s = Stored {
                version: 1,
                fence: 0,
                record,
            };
            Ok((Some(s), 1))
        })
    }

    pub fn put_if_blocking(
        &self,
        id: &str,
        record: Record,
        expected: Version,
        fence: Option<u64>,
    ) -> RecordResult<Version> {
        self.write_blocking(id, |current, _| {
            let cur = current.ok_or(RecordError::Conflict)?;
            let fence = check_fence(cur.fence, fence)?;
            if cur.version != expected {
                return Err(RecordError::Conflict);
            }
            let version = expected + 1;
            let s = Stored {
                version,
                fence,
                record,
            };
            Ok((Some(s), version))
        })
    }

    pub fn delete_blocking(&self, id: &str, expected: Option<Version>) -> RecordResult<bool> {
        self.write_blocking(id, |current, _| match current {
            None => Ok((None, false)),
            Some(cur) if expected.is_some_and(|v| v != cur.version) => Err(RecordError::Conflict),
            Some(_) => Ok((None, true)),
        })
    }
}

fn counts_of(open: &OpenIndex, owner: &str) -> Counts {
    Counts {
        open: open.len(),
        open_for_owner: open.values().filter(|(o, _)| o == owner).count(),
        reserved: open.values().map(|(_, r)| *r).sum(),
    }
}

impl SessionRecords for SessionStore {
    fn get<'a>(&'a self, id: &'a str) -> BoxFuture<'a, RecordResult<Option<Stored>>> {
        let (me, id) = (self.clone(), id.to_string());
        Box::pin(blocking(move || me.get_blocking(&id)))
    }

    fn insert<'a>(
        &'a self,
        id: &'a str,
        record: Record,
        quota: Quota,
    ) -> BoxFuture<'a, RecordResult<Version>> {
        let (me, id) = (self.clone(), id.to_string());
        Box::pin(blocking(move || me.insert_blocking(&id, record, quota)))
    }

    fn put_if<'a>(
        &'a self,
        id: &'a str,
        record: Record,
        expected: Version,
        fence: Option<u64>,
    ) -> BoxFuture<'a, RecordResult<Version>> {
        let (me, id) = (self.clone(), id.to_string());
        Box::pin(blocking(move || {
            me.put_if_blocking(&id, record, expected, fence)
        }))
    }

    fn delete<'a>(
        &'a self,
        id: &'a str,
        expected: Option<Version>,
    ) -> BoxFuture<'a, RecordResult<bool>> {
        let (me, id) = (self.clone(), id.to_string());
        Box::pin(blocking(move || me.delete_blocking(&id, expected)))
    }

    fn scan(&self) -> BoxFuture<'_, RecordResult<Vec<(String, Stored)>>> {
        let me = self.clone();
        Box::pin(blocking(move || me.scan_blocking()))
    }

    fn counts<'a>(&'a self, owner: &'a str) -> BoxFuture<'a, RecordResult<Counts>> {
        let c = counts_of(&lock(&self.inner.open), owner);
        Box::pin(async move { Ok(c) })
    }
}

/// Client profiles in redb: opaque values by profile key.
pub struct ProfileStore {
    db: Database,
}

impl ProfileStore {
    pub fn open(path: &Path) -> Result<ProfileStore, MetaError> {
        Ok(ProfileStore {
            db: open_db(path, &[PROFILES])?,
        })
    }

    /// Writes and deletes several profiles in one transaction.
    pub fn apply(&self, put: &[(String, Vec<u8>)], delete: &[String]) -> Result<(), MetaError> {
        let txn = self.db.begin_write().map_err(err)?;
        {
            let mut t = txn.open_table(PROFILES).map_err(err)?;
            for (k, v) in put {
                t.insert(k.as_str(), v.as_slice()).map_err(err)?;
            }
            for k in delete {
                t.remove(k.as_str()).map_err(err)?;
            }
        }
        txn.commit().map_err(err)
    }

    /// Every stored profile.
    pub fn all(&self) -> Result<Vec<(String, Vec<u8>)>, MetaError> {
        let txn = self.db.begin_read().map_err(err)?;
        let t = txn.open_table(PROFILES).map_err(err)?;
        let mut out = Vec::new();
        for item in t.iter().map_err(err)? {
            let (k, v) = item.map_err(err)?;
            out.push((k.value().to_string(), v.value().to_vec()));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(owner: &str, open: bool, body: &[u8]) -> Record {
        Record {
            summary: Summary {
                owner: owner.into(),
                open,
                reserved: 10,
                expires: 5,
            },
            body: body.to_vec(),
        }
    }

    #[test]
    fn records_and_counts_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("s.redb");
        let q = Quota {
            max_open: 10,
            max_open_per_owner: 10,
            max_reserved: 100,
        };
        {
            let s = SessionStore::open(&p).unwrap();
            s.insert_blocking("a", rec("x", true, b"1"), q).unwrap();
            s.insert_blocking("b", rec("x", true, b"2"), q).unwrap();
            s.put_if_blocking("a", rec("x", true, b"3"), 1, Some(7))
                .unwrap();
            s.delete_blocking("b", None).unwrap();
        }
        let s = SessionStore::open(&p).unwrap();
        let a = s.get_blocking("a").unwrap().unwrap();
        assert_eq!((a.version, a.fence, &a.record.body[..]), (2, 7, &b"3"[..]));
        assert_eq!(s.get_blocking("b").unwrap(), None);
        assert_eq!(s.scan_blocking().unwrap().len(), 1);
        assert_eq!(s.max_fence_blocking().unwrap(), 7);
        let c = counts_of(&lock(&s.inner.open), "x");
        assert_eq!((c.open, c.open_for_owner, c.reserved), (1, 1, 10));
    }

    #[test]
    fn legacy_records_are_converted_once() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("s.redb");
        {
            let db = open_db(&p, &[LEGACY]).unwrap();
            let txn = db.begin_write().unwrap();
            {
                let mut t = txn.open_table(LEGACY).unwrap();
                t.insert("good", &b"open"[..]).unwrap();
                t.insert("bad", &b"?"[..]).unwrap();
            }
            txn.commit().unwrap();
        }
        let s = SessionStore::open(&p).unwrap();
        let summarize = |raw: &[u8]| (raw == b"open").then(|| rec("x", true, b"").summary);
        assert_eq!(s.migrate_legacy(summarize).unwrap(), 1);
        assert_eq!(s.migrate_legacy(summarize).unwrap(), 0);
        let good = s.get_blocking("good").unwrap().unwrap();
        assert_eq!((good.version, &good.record.body[..]), (1, &b"open"[..]));
        assert_eq!(counts_of(&lock(&s.inner.open), "x").open, 1);
        assert_eq!(s.scan_blocking().unwrap().len(), 1);
    }

    #[test]
    fn profiles_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("p.redb");
        {
            let s = ProfileStore::open(&p).unwrap();
            s.apply(
                &[("a".into(), b"1".to_vec()), ("b".into(), b"2".to_vec())],
                &[],
            )
            .unwrap();
            s.apply(&[], &["b".into()]).unwrap();
        }
        let s = ProfileStore::open(&p).unwrap();
        assert_eq!(s.all().unwrap(), vec![("a".to_string(), b"1".to_vec())]);
    }
}
