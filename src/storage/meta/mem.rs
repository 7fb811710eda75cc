//! [`MemRecords`]: session records in a map, for tests (not durable). Same rules as every
//! [`SessionRecords`]: versions, fencing, atomic quota checks, counts of open records.

use super::{
    check_fence, check_quota, Counts, Quota, Record, RecordError, RecordResult, SessionRecords,
    Stored, Version,
};
use futures_util::future::BoxFuture;
use std::collections::HashMap;
use std::sync::Mutex;

#[derive(Default)]
pub struct MemRecords {
    map: Mutex<HashMap<String, Stored>>,
}

impl MemRecords {
    pub fn new() -> MemRecords {
        MemRecords::default()
    }

    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<String, Stored>> {
        // Every update is a single insert or remove: a poisoned map is still consistent.
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn counts(map: &HashMap<String, Stored>, owner: &str) -> Counts {
    let open = || map.values().map(|s| &s.record.summary).filter(|s| s.open);
    Counts {
        open: open().count(),
        open_for_owner: open().filter(|s| s.owner == owner).count(),
        reserved: open().map(|s| s.reserved).sum(),
    }
}

fn ready<'a, T: Send + 'a>(v: T) -> BoxFuture<'a, T> {
    Box::pin(std::future::ready(v))
}

impl SessionRecords for MemRecords {
    fn get<'a>(&'a self, id: &'a str) -> BoxFuture<'a, RecordResult<Option<Stored>>> {
        ready(Ok(self.map().get(id).cloned()))
    }

    fn insert<'a>(
        &'a self,
        id: &'a str,
        record: Record,
        quota: Quota,
    ) -> BoxFuture<'a, RecordResult<Version>> {
        let mut map = self.map();
        let r = if map.contains_key(id) {
            Err(RecordError::Conflict)
        } else {
            check_quota(
                &counts(&map, &record.summary.owner),
                &quota,
                &record.summary,
            )
            .map(|()| {
                let s = Stored {
                    version: 1,
                    fence: 0,
                    record,
                };
                map.insert(id.to_string(), s);
                1
            })
        };
        ready(r)
    }

    fn put_if<'a>(
        &'a self,
        id: &'a str,
        record: Record,
        expected: Version,
        fence: Option<u64>,
    ) -> BoxFuture<'a, RecordResult<Version>> {
        let mut map = self.map();
        let r = match map.get_mut(id) {
            None => Err(RecordError::Conflict),
            Some(cur) => check_fence(cur.fence, fence).and_then(|fence| {
                if cur.version != expected {
                    return Err(RecordError::Conflict);
                }
                *cur = Stored {
                    version: expected + 1,
                    fence,
                    record,
                };
                Ok(cur.version)
            }),
        };
        ready(r)
    }

    fn delete<'a>(
        &'a self,
        id: &'a str,
        expected: Option<Version>,
    ) -> BoxFuture<'a, RecordResult<bool>> {
        let mut map = self.map();
        let r = match map.get(id) {
            None => Ok(false),
            Some(cur) if expected.is_some_and(|v| v != cur.version) => Err(RecordError::Conflict),
            Some(_) => Ok(map.remove(id).is_some()),
        };
        ready(r)
    }

    fn scan(&self) -> BoxFuture<'_, RecordResult<Vec<(String, Stored)>>> {
        let all = self
            .map()
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        ready(Ok(all))
    }

    fn counts<'a>(&'a self, owner: &'a str) -> BoxFuture<'a, RecordResult<Counts>> {
        ready(Ok(counts(&self.map(), owner)))
    }
}
