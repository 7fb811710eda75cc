//! [`Store`] for [`FsStorage`]: the contract over today's filesystem semantics (see
//! [`super::fs`]): a staged write is a `.xferd-tmp-*` file beside the destination written
//! with `pwrite` on the blocking pool; commit is fsync + `renameat2(RENAME_NOREPLACE)` +
//! directory fsync; reads are positional reads of the opened descriptor (so a download
//! reads the object it stat-ed); every name is resolved beneath the root without following
//! links. Every blocking call runs on tokio's blocking pool.

use super::dirfd::{cstr, os_cstr, Dir, Kind};
use super::fs::{blocking, is_not_found, read_at, write_at, CommitError, FsStorage, TempFile};
use super::key::{Key, RESERVED_PREFIX};
use super::store::{
    BlockingSink, BoxFuture, Capabilities, Listed, Object, ObjectMeta, Result, Sink, Staged, Store,
    StoreError,
};
use bytes::Bytes;
use std::fs::File;
use std::io;
use std::sync::Arc;
use std::time::SystemTime;

/// The filesystem's abilities: positional writes, local copies, `statvfs`, any part size.
pub const FS_CAPABILITIES: Capabilities = Capabilities {
    random_write: true,
    concat: true,
    free_space: true,
    min_part_size: 0,
};

fn meta_of(md: &std::fs::Metadata) -> io::Result<ObjectMeta> {
    let modified = md.modified()?;
    let version = modified
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    Ok(ObjectMeta {
        len: md.len(),
        modified,
        version,
    })
}

async fn on_pool<T: Send + 'static>(
    f: impl FnOnce() -> io::Result<T> + Send + 'static,
) -> Result<T> {
    blocking(f).await.map_err(StoreError::from)
}

/// Writes to an open file at offsets, on the blocking pool.
pub struct FsSink(Arc<File>);

impl FsSink {
    pub fn new(file: File) -> FsSink {
        FsSink(Arc::new(file))
    }
}

impl Sink for FsSink {
    fn write(&self, offset: u64, data: Bytes) -> BoxFuture<'static, Result<()>> {
        let file = self.0.clone();
        Box::pin(on_pool(move || write_at(&file, &data, offset)))
    }
    fn sync(&self) -> BoxFuture<'static, Result<()>> {
        let file = self.0.clone();
        Box::pin(on_pool(move || file.sync_data()))
    }
    fn blocking(self: Arc<Self>) -> Option<Arc<dyn BlockingSink>> {
        Some(self)
    }
}

impl BlockingSink for FsSink {
    fn write_at(&self, offset: u64, data: &[u8]) -> Result<()> {
        write_at(&self.0, data, offset).map_err(StoreError::from)
    }
}

/// A staged write: the temporary file and its descriptor.
struct FsStaged {
    temp: TempFile,
    sink: Arc<FsSink>,
}

impl Staged for FsStaged {
    fn sink(&self) -> Arc<dyn Sink> {
        self.sink.clone()
    }
    fn commit(self: Box<Self>) -> BoxFuture<'static, Result<()>> {
        let FsStaged { temp, sink } = *self;
        let file = sink.0.clone();
        drop(sink);
        Box::pin(async move {
            match tokio::task::spawn_blocking(move || temp.commit_blocking(file)).await {
                Ok(Ok(())) => Ok(()),
                Ok(Err(CommitError::Exists)) => Err(StoreError::Exists),
                Ok(Err(CommitError::Io(e))) => Err(StoreError::from(e)),
                Err(e) => Err(StoreError::Other(io::Error::other(e.to_string()))),
            }
        })
    }
    fn abort(self: Box<Self>) -> BoxFuture<'static, ()> {
        let temp = self.temp;
        Box::pin(async move {
            let _ = tokio::task::spawn_blocking(move || temp.abort_blocking()).await;
        })
    }
}

struct FsObject {
    file: Arc<File>,
    meta: ObjectMeta,
}

impl Object for FsObject {
    fn meta(&self) -> ObjectMeta {
        self.meta
    }
    fn read_at(&self, offset: u64, len: usize) -> BoxFuture<'static, Result<Bytes>> {
        let file = self.file.clone();
        Box::pin(on_pool(move || read_at(&file, len, offset)))
    }
}

impl FsStorage {
    /// The regular file under `key` and its metadata (blocking; `None`: missing, a link on
    /// the way, or not a regular file).
    fn open_object_blocking(dir: &Dir, key: &Key) -> io::Result<Option<FsObject>> {
        // O_NONBLOCK: opening a FIFO planted in storage must not hang a blocking thread.
        let flags = libc::O_RDONLY | libc::O_NONBLOCK;
        let file = match dir.open_beneath(key.as_str(), flags, 0) {
            Ok(fd) => File::from(fd),
            Err(e) if is_not_found(&e) => return Ok(None),
            Err(e) => return Err(e),
        };
        let md = file.metadata()?;
        if !md.is_file() {
            return Ok(None);
        }
        Ok(Some(FsObject {
            meta: meta_of(&md)?,
            file: Arc::new(file),
        }))
    }

    /// Up to `limit` regular files under `prefix` after `after`, in segment order, skipping
    /// the storage's own names and links. Memory: at most `2 * limit` entries kept (plus
    /// one directory's names) however many files there are; subtrees wholly before `after`
    /// or outside `prefix` are not entered.
    fn list_blocking(
        root: &Dir,
        prefix: &str,
        after: Option<&Key>,
        limit: usize,
    ) -> io::Result<Vec<Listed>> {
        let after: Vec<&str> = after.map(|k| k.segments().collect()).unwrap_or_default();
        let by_segments = |a: &Listed, b: &Listed| a.key.segments().cmp(b.key.segments());
        let mut out: Vec<Listed> = Vec::new();
        let mut stack: Vec<(Dir, Vec<String>)> = vec![(root.try_clone()?, Vec::new())];
        while let Some((dir, path)) = stack.pop() {
            for (name, kind) in dir.entries()? {
                let Some(name) = name.to_str().map(str::to_string) else {
                    continue;
                };
                if name.starts_with(RESERVED_PREFIX) {
                    continue;
                }
                let mut p = path.clone();
                p.push(name.clone());
                let joined = p.join("/");
                let cut = joined.len().min(prefix.len());
                if joined.as_bytes()[..cut] != prefix.as_bytes()[..cut] {
                    continue;
                }
                let head: Vec<&str> = p.iter().map(String::as_str).collect();
                let depth = head.len().min(after.len());
                match kind {
                    Kind::Dir if head[..depth] >= after[..depth] => {
                        match dir.open_child_dir(&os_cstr(name.as_ref())?) {
                            Ok(d) => stack.push((d, p)),
                            Err(e) if is_not_found(&e) => {}
                            Err(e) => return Err(e),
                        }
                    }
                    Kind::File
                        if (after.is_empty() || head > after) && joined.starts_with(prefix) =>
                    {
                        let Ok(key) = Key::parse(&joined) else {
                            continue;
                        };
                        let flags = libc::O_RDONLY | libc::O_NONBLOCK;
                        let f = match dir.open_file(&cstr(&name)?, flags, 0) {
                            Ok(f) => f,
                            Err(e) if is_not_found(&e) => continue,
                            Err(e) => return Err(e),
                        };
                        out.push(Listed {
                            key,
                            meta: meta_of(&f.metadata()?)?,
                        });
                        if out.len() >= limit.saturating_mul(2).max(64) {
                            out.sort_by(by_segments);
                            out.truncate(limit);
                        }
                    }
                    _ => {}
                }
            }
        }
        out.sort_by(by_segments);
        out.truncate(limit);
        Ok(out)
    }
}

/// Removes the directories of `parent` (a key's directory) that are now empty, deepest
/// first, stopping at the first that is not (or cannot be removed): the filesystem detail of
/// [`Store::delete`] (file expiry leaves no empty directories behind). `rmdir` itself refuses
/// a directory that is not empty, so a file created meanwhile keeps its directory; an upload
/// that finds its new directory removed in between creates it again (see
/// [`FsStorage::create_temp`]).
fn prune_empty_parents(root: &Dir, parent: &str) {
    let mut rel = parent;
    while !rel.is_empty() {
        let (up, name) = rel.rsplit_once('/').unwrap_or(("", rel));
        let removed = root
            .open_dir(up)
            .and_then(|d| cstr(name).and_then(|n| d.remove_empty_dir(&n).map(|()| d)));
        match removed {
            Ok(d) => {
                let _ = d.sync();
            }
            Err(_) => return,
        }
        rel = up;
    }
}

impl Store for FsStorage {
    fn capabilities(&self) -> Capabilities {
        FS_CAPABILITIES
    }

    fn stat(&self, key: &Key) -> BoxFuture<'static, Result<Option<ObjectMeta>>> {
        let (dir, key) = (self.root_arc().clone(), key.clone());
        Box::pin(on_pool(move || {
            Ok(FsStorage::open_object_blocking(&dir, &key)?.map(|o| o.meta))
        }))
    }

    fn exists(&self, key: &Key) -> BoxFuture<'static, Result<bool>> {
        let (st, key) = (self.clone(), key.clone());
        Box::pin(on_pool(move || st.exists_blocking(&key)))
    }

    fn open(&self, key: &Key) -> BoxFuture<'static, Result<Option<Arc<dyn Object>>>> {
        let (dir, key) = (self.root_arc().clone(), key.clone());
        Box::pin(on_pool(move || {
            Ok(
                FsStorage::open_object_blocking(&dir, &key)?
                    .map(|o| Arc::new(o) as Arc<dyn Object>),
            )
        }))
    }

    fn begin(&self, key: &Key, _len: Option<u64>) -> BoxFuture<'static, Result<Box<dyn Staged>>> {
        let (st, key) = (self.clone(), key.clone());
        Box::pin(async move {
            let (temp, file) = st.create_temp(&key).await.map_err(StoreError::from)?;
            let staged = FsStaged {
                temp,
                sink: Arc::new(FsSink::new(file)),
            };
            Ok(Box::new(staged) as Box<dyn Staged>)
        })
    }

    fn delete(&self, key: &Key) -> BoxFuture<'static, Result<bool>> {
        let (dir, key) = (self.root_arc().clone(), key.clone());
        Box::pin(on_pool(move || {
            let (parent, name) = key.split();
            let d = match dir.open_dir(parent) {
                Ok(d) => d,
                Err(e) if is_not_found(&e) => return Ok(false),
                Err(e) => return Err(e),
            };
            let name = cstr(name)?;
            match d.kind_of(&name)? {
                None => Ok(false),
                Some(Kind::Dir) => Err(io::Error::from_raw_os_error(libc::EISDIR)),
                Some(_) => {
                    d.unlink(&name)?;
                    d.sync()?;
                    prune_empty_parents(&dir, parent);
                    Ok(true)
                }
            }
        }))
    }

    fn list(
        &self,
        prefix: &str,
        after: Option<&Key>,
        limit: usize,
    ) -> BoxFuture<'static, Result<Vec<Listed>>> {
        let (dir, prefix, after) = (self.root_arc().clone(), prefix.to_string(), after.cloned());
        Box::pin(on_pool(move || {
            FsStorage::list_blocking(&dir, &prefix, after.as_ref(), limit)
        }))
    }

    fn free_space(&self) -> BoxFuture<'static, Result<Option<u64>>> {
        let dir = self.root_arc().clone();
        Box::pin(on_pool(move || dir.available_bytes().map(Some)))
    }
}
