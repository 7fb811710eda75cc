//! [`MemStore`]: an in-process [`Store`] with the filesystem's semantics, for tests of the
//! core (and of the contract itself: `storage::contract_tests` runs the same checks here and
//! on the filesystem).
//!
//! Same rules as [`super::fs`]: nothing is visible before commit, a commit never overwrites
//! (a key that is an object, or a "directory" - a prefix of other keys - is taken), a key
//! below an object is a path conflict, abort or drop leaves nothing. Memory is bounded by
//! the capacity given to [`MemStore::new`]: staged and stored bytes together; a write past
//! it is [`StoreError::NoSpace`].

use super::key::Key;
use super::store::{
    BoxFuture, Capabilities, Listed, Object, ObjectMeta, PartStore, Result, Sink, Staged, Store,
    StoreError,
};
use bytes::Bytes;
use std::collections::BTreeMap;
use std::io;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;

#[derive(Debug, Default)]
struct State {
    objects: BTreeMap<String, (Bytes, ObjectMeta)>,
    /// Bytes held: stored objects plus staged buffers.
    used: u64,
    next_version: u128,
}

/// See the module doc.
#[derive(Debug, Clone)]
pub struct MemStore {
    state: Arc<Mutex<State>>,
    capacity: u64,
}

fn lock(m: &Mutex<State>) -> MutexGuard<'_, State> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn conflict(what: &str) -> StoreError {
    StoreError::PathConflict(io::Error::other(what.to_string()))
}

impl State {
    /// An object is a strict prefix ("directory") of `key`.
    fn ancestor_is_object(&self, key: &Key) -> bool {
        let s = key.as_str();
        s.match_indices('/')
            .any(|(i, _)| self.objects.contains_key(&s[..i]))
    }

    /// Objects below `key` (it is a "directory").
    fn has_children(&self, key: &Key) -> bool {
        let dir = format!("{}/", key.as_str());
        self.objects
            .range(dir.clone()..)
            .next()
            .is_some_and(|(k, _)| k.starts_with(&dir))
    }

    /// An object, or objects below it, occupy `key` (what [`Store::exists`] reports).
    fn taken(&self, key: &Key) -> bool {
        self.objects.contains_key(key.as_str()) || self.has_children(key)
    }

    /// Stores `data` under `key` unless taken (the bytes are already accounted).
    fn insert(&mut self, key: &Key, data: Bytes) -> Result<()> {
        if self.taken(key) {
            return Err(StoreError::Exists);
        }
        if self.ancestor_is_object(key) {
            return Err(conflict("a prefix of the key is an object"));
        }
        self.next_version += 1;
        let meta = ObjectMeta {
            len: data.len() as u64,
            modified: SystemTime::now(),
            version: self.next_version,
        };
        self.objects.insert(key.as_str().to_string(), (data, meta));
        Ok(())
    }

    fn reserve(&mut self, capacity: u64, add: u64) -> Result<()> {
        match self.used.checked_add(add).filter(|n| *n <= capacity) {
            Some(n) => {
                self.used = n;
                Ok(())
            }
            None => Err(StoreError::NoSpace(io::Error::other("memory store full"))),
        }
    }
}

impl MemStore {
    /// A store holding at most `capacity` bytes (staged and stored).
    pub fn new(capacity: u64) -> MemStore {
        MemStore {
            state: Arc::new(Mutex::new(State::default())),
            capacity,
        }
    }

    /// A part store whose sessions complete into this store (sharing its capacity).
    pub fn parts(&self) -> MemParts {
        MemParts {
            store: self.clone(),
            parts: Arc::new(Mutex::new(BTreeMap::new())),
        }
    }

    fn new_sink(&self) -> Arc<MemSink> {
        Arc::new(MemSink {
            state: self.state.clone(),
            capacity: self.capacity,
            data: Mutex::new(Vec::new()),
        })
    }
}

fn ready<T: Send + 'static>(v: T) -> BoxFuture<'static, T> {
    Box::pin(std::future::ready(v))
}

struct MemSink {
    state: Arc<Mutex<State>>,
    capacity: u64,
    data: Mutex<Vec<u8>>,
}

impl MemSink {
    fn bytes(&self) -> MutexGuard<'_, Vec<u8>> {
        self.data.lock().unwrap_or_else(|p| p.into_inner())
    }
    fn take(&self) -> Vec<u8> {
        std::mem::take(&mut *self.bytes())
    }
}

impl Sink for MemSink {
    fn write(&self, offset: u64, data: Bytes) -> BoxFuture<'static, Result<()>> {
        let r = (|| {
            let mut buf = self.data.lock().unwrap_or_else(|p| p.into_inner());
            let end = offset
                .checked_add(data.len() as u64)
                .and_then(|e| usize::try_from(e).ok())
                .ok_or_else(|| StoreError::Other(io::Error::other("offset too large")))?;
            let start = offset as usize;
            if end > buf.len() {
                lock(&self.state).reserve(self.capacity, (end - buf.len()) as u64)?;
                buf.resize(end, 0);
            }
            buf[start..end].copy_from_slice(&data);
            Ok(())
        })();
        ready(r)
    }
    fn sync(&self) -> BoxFuture<'static, Result<()>> {
        ready(Ok(()))
    }
}

impl Drop for MemSink {
    fn drop(&mut self) {
        let held = self.take().len() as u64;
        let mut st = lock(&self.state);
        st.used = st.used.saturating_sub(held);
    }
}

struct MemStaged {
    key: Key,
    sink: Arc<MemSink>,
}

impl Staged for MemStaged {
    fn sink(&self) -> Arc<dyn Sink> {
        self.sink.clone()
    }
    fn commit(self: Box<Self>) -> BoxFuture<'static, Result<()>> {
        let data = Bytes::from(self.sink.take());
        let mut st = lock(&self.sink.state);
        let held = data.len() as u64;
        let r = st.insert(&self.key, data);
        if r.is_err() {
            // Discarded: its bytes are no longer held.
            st.used = st.used.saturating_sub(held);
        }
        ready(r)
    }
    fn abort(self: Box<Self>) -> BoxFuture<'static, ()> {
        ready(())
    }
}

struct MemObject {
    data: Bytes,
    meta: ObjectMeta,
}

impl Object for MemObject {
    fn meta(&self) -> ObjectMeta {
        self.meta
    }
    fn read_at(&self, offset: u64, len: usize) -> BoxFuture<'static, Result<Bytes>> {
        let start = usize::try_from(offset)
            .unwrap_or(usize::MAX)
            .min(self.data.len());
        let end = start.saturating_add(len).min(self.data.len());
        ready(Ok(self.data.slice(start..end)))
    }
}

impl Store for MemStore {
    fn capabilities(&self) -> Capabilities {
        Capabilities {
            random_write: true,
            concat: false,
            free_space: true,
            min_part_size: 0,
            dedup: false,
        }
    }

    fn stat(&self, key: &Key) -> BoxFuture<'static, Result<Option<ObjectMeta>>> {
        let st = lock(&self.state);
        ready(Ok(st.objects.get(key.as_str()).map(|(_, m)| *m)))
    }

    fn exists(&self, key: &Key) -> BoxFuture<'static, Result<bool>> {
        let st = lock(&self.state);
        ready(if st.ancestor_is_object(key) {
            Err(conflict("a prefix of the key is an object"))
        } else {
            Ok(st.taken(key))
        })
    }

    fn open(&self, key: &Key) -> BoxFuture<'static, Result<Option<Arc<dyn Object>>>> {
        let st = lock(&self.state);
        let found = st.objects.get(key.as_str()).map(|(data, meta)| {
            Arc::new(MemObject {
                data: data.clone(),
                meta: *meta,
            }) as Arc<dyn Object>
        });
        ready(Ok(found))
    }

    fn begin(&self, key: &Key, _len: Option<u64>) -> BoxFuture<'static, Result<Box<dyn Staged>>> {
        {
            let st = lock(&self.state);
            if st.ancestor_is_object(key) {
                return ready(Err(conflict("a prefix of the key is an object")));
            }
            if st.taken(key) {
                return ready(Err(StoreError::Exists));
            }
        }
        let staged = MemStaged {
            key: key.clone(),
            sink: self.new_sink(),
        };
        ready(Ok(Box::new(staged) as Box<dyn Staged>))
    }

    fn delete(&self, key: &Key) -> BoxFuture<'static, Result<bool>> {
        let mut st = lock(&self.state);
        let r = match st.objects.remove(key.as_str()) {
            Some((data, _)) => {
                st.used = st.used.saturating_sub(data.len() as u64);
                Ok(true)
            }
            None => Ok(false),
        };
        ready(r)
    }

    fn list(
        &self,
        prefix: &str,
        after: Option<&Key>,
        limit: usize,
    ) -> BoxFuture<'static, Result<Vec<Listed>>> {
        let st = lock(&self.state);
        let mut out: Vec<Listed> = st
            .objects
            .iter()
            .filter(|(k, _)| k.starts_with(prefix))
            .filter_map(|(k, (_, meta))| Key::parse(k).ok().map(|key| Listed { key, meta: *meta }))
            .filter(|l| after.is_none_or(|a| l.key.segments().gt(a.segments())))
            .collect();
        out.sort_by(|a, b| a.key.segments().cmp(b.key.segments()));
        out.truncate(limit);
        ready(Ok(out))
    }

    fn free_space(&self) -> BoxFuture<'static, Result<Option<u64>>> {
        let st = lock(&self.state);
        ready(Ok(Some(self.capacity.saturating_sub(st.used))))
    }
}

/// [`PartStore`] in memory: one buffer per session, completed into its [`MemStore`].
#[derive(Debug, Clone)]
pub struct MemParts {
    store: MemStore,
    parts: Arc<Mutex<BTreeMap<String, Arc<MemSink>>>>,
}

impl std::fmt::Debug for MemSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "MemSink({} bytes)", self.bytes().len())
    }
}

impl MemParts {
    fn map(&self) -> MutexGuard<'_, BTreeMap<String, Arc<MemSink>>> {
        self.parts.lock().unwrap_or_else(|p| p.into_inner())
    }
    fn get(&self, id: &str) -> Result<Arc<MemSink>> {
        self.map().get(id).cloned().ok_or(StoreError::NotFound)
    }
}

fn short(what: &str) -> StoreError {
    StoreError::Other(io::Error::new(
        io::ErrorKind::UnexpectedEof,
        what.to_string(),
    ))
}

impl PartStore for MemParts {
    fn capabilities(&self) -> Capabilities {
        Capabilities {
            concat: true,
            ..self.store.capabilities()
        }
    }
    fn create(&self, id: &str) -> BoxFuture<'static, Result<()>> {
        let mut map = self.map();
        ready(if map.contains_key(id) {
            Err(StoreError::Exists)
        } else {
            map.insert(id.to_string(), self.store.new_sink());
            Ok(())
        })
    }
    fn open_sink(&self, id: &str) -> BoxFuture<'static, Result<Arc<dyn Sink>>> {
        ready(self.get(id).map(|s| s as Arc<dyn Sink>))
    }
    fn exists(&self, id: &str) -> BoxFuture<'static, Result<bool>> {
        ready(Ok(self.map().contains_key(id)))
    }
    fn abort(&self, id: &str) -> BoxFuture<'static, Result<()>> {
        // Dropping the last handle of the buffer releases its bytes.
        let removed = self.map().remove(id);
        drop(removed);
        ready(Ok(()))
    }
    fn concat(&self, dest: &str, sources: Vec<(String, u64)>) -> BoxFuture<'static, Result<()>> {
        let r = (|| {
            let out = self.get(dest)?;
            let mut offset = 0u64;
            for (id, len) in sources {
                let data = {
                    let src = self.get(&id)?;
                    let b = src.bytes();
                    let n = usize::try_from(len).unwrap_or(usize::MAX);
                    if b.len() < n {
                        return Err(short("partial upload is short"));
                    }
                    Bytes::copy_from_slice(&b[..n])
                };
                // A memory sink's write is ready at once.
                futures_util::FutureExt::now_or_never(out.write(offset, data))
                    .unwrap_or_else(|| Err(StoreError::Other(io::Error::other("write pending"))))?;
                offset += len;
            }
            Ok(())
        })();
        ready(r)
    }
    fn hash_range(
        &self,
        id: &str,
        mut sha: sha2::Sha256,
        from: u64,
        to: u64,
    ) -> BoxFuture<'static, Result<sha2::Sha256>> {
        use sha2::Digest;
        let r = self.get(id).map(|s| {
            let b = s.bytes();
            let end = usize::try_from(to).unwrap_or(usize::MAX).min(b.len());
            let start = usize::try_from(from).unwrap_or(usize::MAX).min(end);
            sha.update(&b[start..end]);
            sha
        });
        ready(r)
    }
    fn complete(&self, id: &str, len: u64, key: &Key) -> BoxFuture<'static, Result<()>> {
        let r = (|| {
            let sink = self.get(id)?;
            let mut data = sink.bytes();
            let n = usize::try_from(len).unwrap_or(usize::MAX);
            if data.len() < n {
                return Err(short("session data is short"));
            }
            let mut st = lock(&self.store.state);
            st.insert(key, Bytes::copy_from_slice(&data[..n]))?;
            // The first `n` bytes now belong to the object; the rest (garbage past the
            // committed length) is released with the session's buffer.
            st.used = st.used.saturating_sub((data.len() - n) as u64);
            data.clear();
            drop((data, st));
            self.map().remove(id);
            Ok(())
        })();
        ready(r)
    }
    fn target_taken(&self, key: &Key) -> BoxFuture<'static, Result<bool>> {
        self.store.exists(key)
    }
    fn list(&self) -> BoxFuture<'static, Result<Vec<String>>> {
        ready(Ok(self.map().keys().cloned().collect()))
    }
}
