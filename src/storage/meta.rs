//! The session store: resumable-upload records in an embedded redb database (and, in a
//! second file, client profiles).
//!
//! Why redb: pure Rust (no C toolchain), ACID transactions with fsync on commit (a record
//! is durable before an offset is acknowledged), crash-safe without a recovery step, and a
//! single file. Values are opaque bytes (the engine serialises its records); keys are the
//! session ids. All calls block: run them on the blocking pool.

use redb::{Database, ReadableTable, TableDefinition};
use std::path::Path;

const SESSIONS: TableDefinition<&str, &[u8]> = TableDefinition::new("sessions");

#[derive(Debug, thiserror::Error)]
#[error("session store: {0}")]
pub struct MetaError(String);

fn err(e: impl std::fmt::Display) -> MetaError {
    MetaError(e.to_string())
}

impl From<MetaError> for std::io::Error {
    fn from(e: MetaError) -> Self {
        std::io::Error::other(e.0)
    }
}

const PROFILES: TableDefinition<&str, &[u8]> = TableDefinition::new("profiles");

pub struct SessionStore {
    db: Database,
    table: TableDefinition<'static, &'static str, &'static [u8]>,
}

impl SessionStore {
    /// The resumable-session records.
    pub fn open(path: &Path) -> Result<SessionStore, MetaError> {
        Self::open_table(path, SESSIONS)
    }

    /// Client profiles (a separate file: redb opens a file once per process).
    pub fn open_profiles(path: &Path) -> Result<SessionStore, MetaError> {
        Self::open_table(path, PROFILES)
    }

    fn open_table(
        path: &Path,
        table: TableDefinition<'static, &'static str, &'static [u8]>,
    ) -> Result<SessionStore, MetaError> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(err)?;
        }
        let db = Database::create(path).map_err(err)?;
        let txn = db.begin_write().map_err(err)?;
        txn.open_table(table).map_err(err)?;
        txn.commit().map_err(err)?;
        Ok(SessionStore { db, table })
    }

    /// Writes and deletes several records in one transaction.
    pub fn apply(&self, put: &[(String, Vec<u8>)], delete: &[String]) -> Result<(), MetaError> {
        let txn = self.db.begin_write().map_err(err)?;
        {
            let mut t = txn.open_table(self.table).map_err(err)?;
            for (k, v) in put {
                t.insert(k.as_str(), v.as_slice()).map_err(err)?;
            }
            for k in delete {
                t.remove(k.as_str()).map_err(err)?;
            }
        }
        txn.commit().map_err(err)
    }

    /// Inserts or replaces a record; durable when this returns.
    pub fn put(&self, id: &str, value: &[u8]) -> Result<(), MetaError> {
        let txn = self.db.begin_write().map_err(err)?;
        {
            let mut t = txn.open_table(self.table).map_err(err)?;
            t.insert(id, value).map_err(err)?;
        }
        txn.commit().map_err(err)
    }

    pub fn get(&self, id: &str) -> Result<Option<Vec<u8>>, MetaError> {
        let txn = self.db.begin_read().map_err(err)?;
        let t = txn.open_table(self.table).map_err(err)?;
        Ok(t.get(id).map_err(err)?.map(|v| v.value().to_vec()))
    }

    pub fn delete(&self, id: &str) -> Result<(), MetaError> {
        let txn = self.db.begin_write().map_err(err)?;
        {
            let mut t = txn.open_table(self.table).map_err(err)?;
            t.remove(id).map_err(err)?;
        }
        txn.commit().map_err(err)
    }

    /// Every record (start-up recovery, expiry sweeps).
    pub fn all(&self) -> Result<Vec<(String, Vec<u8>)>, MetaError> {
        let txn = self.db.begin_read().map_err(err)?;
        let t = txn.open_table(self.table).map_err(err)?;
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

    #[test]
    fn records_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("s.redb");
        {
            let s = SessionStore::open(&p).unwrap();
            s.put("a", b"1").unwrap();
            s.put("b", b"2").unwrap();
            s.put("a", b"3").unwrap();
            s.delete("b").unwrap();
        }
        let s = SessionStore::open(&p).unwrap();
        assert_eq!(s.get("a").unwrap().as_deref(), Some(&b"3"[..]));
        assert_eq!(s.get("b").unwrap(), None);
        assert_eq!(s.all().unwrap().len(), 1);
    }
}
