//! [`Store`] for [`FsStorage`]: the contract over today's filesystem semantics (see
//! [`super::fs`]): a staged write is a `.xferd-tmp-*` file beside the destination written
//! with `pwrite` on the blocking pool; commit is fsync + `renameat2(RENAME_NOREPLACE)` +
//! directory fsync; reads are positional reads of the opened descriptor (so a download
//! reads the object it stat-ed); every name is resolved beneath the root without following
//! links. Every blocking call runs on tokio's blocking pool, except a download's open, `fstat`
//! and small read with `[performance] inline_small_reads` (see
//! [`FsStorage::set_inline_small_reads`]); a staged write starts write-back every
//! [`WRITEBACK_EVERY`] bytes (see [`FsSink`]).

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
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::SystemTime;

/// The filesystem's abilities: positional writes, local copies, `statvfs`, any part size.
pub const FS_CAPABILITIES: Capabilities = Capabilities {
    random_write: true,
    concat: true,
    free_space: true,
    min_part_size: 0,
    dedup: true,
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

/// Bytes written to a file between two starts of its write-back (see [`FsSink`]).
pub const WRITEBACK_EVERY: u64 = 8 << 20;

/// Writes to an open file at offsets, on the blocking pool.
///
/// Every [`WRITEBACK_EVERY`] bytes written, the kernel is asked to start writing the file's
/// dirty pages out (`sync_file_range(SYNC_FILE_RANGE_WRITE)`, which does not wait for them):
/// the disk then works while the body is still arriving, and the `fdatasync` before the
/// commit finds little left to write instead of the whole file. Durability is unchanged: only
/// that `fdatasync` (and the commit's fsyncs) promise anything.
pub struct FsSink(Arc<File>, Arc<AtomicU64>);

impl FsSink {
    pub fn new(file: File) -> FsSink {
        FsSink(Arc::new(file), Arc::new(AtomicU64::new(0)))
    }
}

/// `pwrite`, then counts the bytes towards the next write-back start (see [`FsSink`]).
fn write_counted(file: &File, unflushed: &AtomicU64, data: &[u8], offset: u64) -> io::Result<()> {
    write_at(file, data, offset)?;
    let len = data.len() as u64;
    if unflushed.fetch_add(len, Ordering::Relaxed) + len >= WRITEBACK_EVERY {
        unflushed.store(0, Ordering::Relaxed);
        start_writeback(file);
    }
    Ok(())
}

/// Starts write-back of the whole file's dirty pages, without waiting. A failure here is not
/// the upload's: an I/O error on these pages is reported by the `fdatasync` that follows.
fn start_writeback(file: &File) {
    // SAFETY: a valid descriptor owned by `file`; offset 0 and length 0 mean the whole file.
    let _ = unsafe { libc::sync_file_range(file.as_raw_fd(), 0, 0, libc::SYNC_FILE_RANGE_WRITE) };
}

impl Sink for FsSink {
    fn write(&self, offset: u64, data: Bytes) -> BoxFuture<'static, Result<()>> {
        let (file, unflushed) = (self.0.clone(), self.1.clone());
        Box::pin(on_pool(move || {
            write_counted(&file, &unflushed, &data, offset)
        }))
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
        write_counted(&self.0, &self.1, data, offset).map_err(StoreError::from)
    }
}

/// A staged write: the temporary file and its descriptor (and, for the content-addressed
/// commit, the storage and the key).
struct FsStaged {
    temp: TempFile,
    sink: Arc<FsSink>,
    st: FsStorage,
    key: Key,
}

impl Staged for FsStaged {
    fn sink(&self) -> Arc<dyn Sink> {
        self.sink.clone()
    }
    fn commit(self: Box<Self>) -> BoxFuture<'static, Result<()>> {
        let FsStaged { temp, sink, .. } = *self;
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
    fn commit_dedup(
        self: Box<Self>,
        sha256: [u8; 32],
        len: u64,
    ) -> BoxFuture<'static, Result<u64>> {
        let FsStaged {
            temp,
            sink,
            st,
            key,
        } = *self;
        let file = sink.0.clone();
        drop(sink);
        Box::pin(async move {
            let job = move || {
                let (dir, tmp) = temp.location();
                let r = super::cas::commit_blocking(&st, dir, tmp, Some(&file), &key, &sha256, len);
                // On an error the temporary file (if still there) goes with `temp`.
                if r.is_ok() {
                    temp.forget();
                }
                r
            };
            match tokio::task::spawn_blocking(job).await {
                Ok(Ok(saved)) => Ok(saved),
                Ok(Err(CommitError::Exists)) => Err(StoreError::Exists),
                Ok(Err(CommitError::Io(e))) => Err(StoreError::from(e)),
                Err(e) => Err(StoreError::Other(io::Error::other(e.to_string()))),
            }
        })
    }
}

/// Files up to this size are read whole when opened, in the same job on the blocking pool
/// as the open and the `fstat`: serving a small file then takes one trip to the pool, not
/// two (a profile of 4 KiB GETs showed the second trip's thread wake-ups per request). The
/// bytes are those of the inode opened, as a read of the descriptor later would be; at most
/// this much per open object, for as long as the object (or a response body) holds it.
pub const PREFETCH_MAX: u64 = 32 << 10;

struct FsObject {
    file: Arc<File>,
    meta: ObjectMeta,
    /// The whole file, when it is at most [`PREFETCH_MAX`] bytes.
    whole: Option<Bytes>,
}

impl Object for FsObject {
    fn meta(&self) -> ObjectMeta {
        self.meta
    }
    fn read_at(&self, offset: u64, len: usize) -> BoxFuture<'static, Result<Bytes>> {
        if let Some(whole) = &self.whole {
            // Short only at the end of the file, as a read would be.
            let start = usize::try_from(offset)
                .unwrap_or(usize::MAX)
                .min(whole.len());
            let end = start.saturating_add(len).min(whole.len());
            return Box::pin(std::future::ready(Ok(whole.slice(start..end))));
        }
        let file = self.file.clone();
        Box::pin(on_pool(move || read_at(&file, len, offset)))
    }
}

impl FsStorage {
    /// The regular file under `key` and its metadata (blocking; `None`: missing, a link on
    /// the way, or not a regular file).
    /// With `prefetch`, a file of at most [`PREFETCH_MAX`] bytes is read whole too.
    fn open_object_blocking(dir: &Dir, key: &Key, prefetch: bool) -> io::Result<Option<FsObject>> {
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
        let whole = match usize::try_from(md.len()) {
            Ok(len) if prefetch && md.len() <= PREFETCH_MAX => Some(read_at(&file, len, 0)?),
            _ => None,
        };
        Ok(Some(FsObject {
            meta: meta_of(&md)?,
            file: Arc::new(file),
            whole,
        }))
    }

    /// Up to `limit` regular files under `prefix` after `after`, in segment order, skipping
    /// the storage's own names and links. Walks the tree in key order (each directory's
    /// names sorted) and stops at the `limit`-th file, so a page opens only the files it
    /// returns; subtrees wholly before `after` or outside `prefix` are not entered. Memory:
    /// the page, plus the names of the directories on the current path. Cost of a page: a
    /// `readdir` of each directory from the root to the cursor, plus one open per file
    /// returned (a whole listing of N files in pages of P re-reads the cursor's directories
    /// N/P times).
    fn list_blocking(
        root: &Dir,
        prefix: &str,
        after: Option<&Key>,
        limit: usize,
    ) -> io::Result<Vec<Listed>> {
        let after: Vec<&str> = after.map(|k| k.segments().collect()).unwrap_or_default();
        let mut out: Vec<Listed> = Vec::new();
        if limit > 0 {
            let mut path = Vec::new();
            list_walk(root, &mut path, prefix, &after, limit, &mut out)?;
        }
        Ok(out)
    }
}

/// One directory of [`FsStorage::list_blocking`]'s ordered walk; `true` once `out` is full.
fn list_walk(
    dir: &Dir,
    path: &mut Vec<String>,
    prefix: &str,
    after: &[&str],
    limit: usize,
    out: &mut Vec<Listed>,
) -> io::Result<bool> {
    let mut entries: Vec<(String, Kind)> = dir
        .entries()?
        .into_iter()
        .filter_map(|(name, kind)| name.to_str().map(|n| (n.to_string(), kind)))
        .filter(|(name, _)| !name.starts_with(RESERVED_PREFIX))
        .collect();
    entries.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    for (name, kind) in entries {
        path.push(name);
        let joined = path.join("/");
        let cut = joined.len().min(prefix.len());
        let head: Vec<&str> = path.iter().map(String::as_str).collect();
        let depth = head.len().min(after.len());
        let in_prefix = joined.as_bytes().get(..cut) == prefix.as_bytes().get(..cut);
        let full = match kind {
            Kind::Dir if in_prefix && head.get(..depth) >= after.get(..depth) => {
                let name = path.last().map(String::as_str).unwrap_or_default();
                match dir.open_child_dir(&os_cstr(name.as_ref())?) {
                    Ok(d) => list_walk(&d, path, prefix, after, limit, out)?,
                    Err(e) if is_not_found(&e) => false,
                    Err(e) => return Err(e),
                }
            }
            Kind::File
                if in_prefix
                    && (after.is_empty() || head.as_slice() > after)
                    && joined.starts_with(prefix) =>
            {
                list_file(dir, path, &joined, out)?;
                out.len() >= limit
            }
            _ => false,
        };
        path.pop();
        if full {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Adds the file at `path` (in `dir`) to a listing, unless it vanished or is no key.
fn list_file(dir: &Dir, path: &[String], joined: &str, out: &mut Vec<Listed>) -> io::Result<()> {
    let Ok(key) = Key::parse(joined) else {
        return Ok(());
    };
    let name = path.last().map(String::as_str).unwrap_or_default();
    let flags = libc::O_RDONLY | libc::O_NONBLOCK;
    let f = match dir.open_file(&cstr(name)?, flags, 0) {
        Ok(f) => f,
        Err(e) if is_not_found(&e) => return Ok(()),
        Err(e) => return Err(e),
    };
    out.push(Listed {
        key,
        meta: meta_of(&f.metadata()?)?,
    });
    Ok(())
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
            Ok(FsStorage::open_object_blocking(&dir, &key, false)?.map(|o| o.meta))
        }))
    }

    fn exists(&self, key: &Key) -> BoxFuture<'static, Result<bool>> {
        let (st, key) = (self.clone(), key.clone());
        Box::pin(on_pool(move || st.exists_blocking(&key)))
    }

    fn open(&self, key: &Key) -> BoxFuture<'static, Result<Option<Arc<dyn Object>>>> {
        let (dir, key) = (self.root_arc().clone(), key.clone());
        let open = move || {
            Ok(FsStorage::open_object_blocking(&dir, &key, true)?
                .map(|o| Arc::new(o) as Arc<dyn Object>))
        };
        if self.inline_small_reads() {
            // On the polling thread, when first polled (see `set_inline_small_reads`).
            return Box::pin(async move { open().map_err(StoreError::from) });
        }
        Box::pin(on_pool(open))
    }

    fn begin(&self, key: &Key, _len: Option<u64>) -> BoxFuture<'static, Result<Box<dyn Staged>>> {
        let (st, key) = (self.clone(), key.clone());
        Box::pin(async move {
            let Some((temp, file)) = st.create_temp(&key).await.map_err(StoreError::from)? else {
                return Err(StoreError::Exists);
            };
            let staged = FsStaged {
                temp,
                sink: Arc::new(FsSink::new(file)),
                st,
                key,
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
                    // Kept open across the unlink: a regular file left with one link may be
                    // held only by its content-addressed entry, which then goes too.
                    let held = d
                        .open_file(&name, libc::O_RDONLY | libc::O_NONBLOCK, 0)
                        .ok();
                    d.unlink(&name)?;
                    d.sync()?;
                    prune_empty_parents(&dir, parent);
                    let last = held.as_ref().and_then(|f| f.metadata().ok());
                    if let (Some(f), Some(md)) = (&held, last) {
                        if md.is_file() && md.nlink() == 1 {
                            if let Err(e) = super::cas::release_blocking(&dir, f) {
                                tracing::warn!(error = %e, "dedup: content-addressed copy not freed");
                            }
                        }
                    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::store::block_on;

    fn key(s: &str) -> Key {
        Key::parse(s).unwrap()
    }

    #[tokio::test]
    async fn delete_removes_the_directories_it_empties() {
        let t = tempfile::tempdir().unwrap();
        let st = FsStorage::open(t.path()).unwrap();
        for k in ["a/b/c/one.txt", "a/two.txt"] {
            let p = t.path().join(k);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(&p, b"x").unwrap();
        }
        assert!(st.delete(&key("a/b/c/one.txt")).await.unwrap());
        // a/b/c and a/b are gone; a still holds two.txt; the root stays.
        assert!(!t.path().join("a/b").exists());
        assert!(t.path().join("a/two.txt").exists());
        assert!(st.delete(&key("a/two.txt")).await.unwrap());
        assert!(!t.path().join("a").exists());
        assert!(t.path().is_dir());
        // A file created after the prune gets its directory again.
        let staged = st.begin(&key("a/b/new.txt"), None).await.unwrap();
        staged
            .sink()
            .write(0, Bytes::from_static(b"y"))
            .await
            .unwrap();
        staged.commit().await.unwrap();
        assert!(t.path().join("a/b/new.txt").exists());
    }

    /// A small file is read whole when opened: reads are served from those bytes (short only
    /// at the end), they are the bytes of the inode opened, and a later open sees a file
    /// replaced or deleted meanwhile (nothing is cached past the object).
    #[tokio::test]
    async fn small_files_are_read_at_open_and_never_served_stale() {
        let t = tempfile::tempdir().unwrap();
        let st = FsStorage::open(t.path()).unwrap();
        let p = t.path().join("s.bin");
        std::fs::write(&p, b"0123456789").unwrap();
        let obj = st.open(&key("s.bin")).await.unwrap().unwrap();
        assert_eq!(obj.meta().len, 10);
        // Replaced after the open: the object keeps the bytes of what it opened.
        std::fs::write(t.path().join("n.bin"), b"abcdefghij").unwrap();
        std::fs::rename(t.path().join("n.bin"), &p).unwrap();
        assert_eq!(obj.read_at(0, 10).await.unwrap(), &b"0123456789"[..]);
        assert_eq!(obj.read_at(7, 100).await.unwrap(), &b"789"[..]);
        assert_eq!(obj.read_at(10, 4).await.unwrap(), &b""[..]);
        assert_eq!(obj.read_at(u64::MAX, 4).await.unwrap(), &b""[..]);
        // A new open sees the new file, then its deletion.
        let again = st.open(&key("s.bin")).await.unwrap().unwrap();
        assert_eq!(again.read_at(0, 10).await.unwrap(), &b"abcdefghij"[..]);
        std::fs::remove_file(&p).unwrap();
        assert!(st.open(&key("s.bin")).await.unwrap().is_none());
        // A file over the limit is read from its descriptor, with the same results.
        let big = vec![7u8; PREFETCH_MAX as usize + 1];
        std::fs::write(t.path().join("b.bin"), &big).unwrap();
        let obj = st.open(&key("b.bin")).await.unwrap().unwrap();
        assert_eq!(obj.read_at(PREFETCH_MAX, 10).await.unwrap(), &[7u8][..]);
        assert_eq!(obj.read_at(0, big.len()).await.unwrap().len(), big.len());
    }

    /// Listing in pages returns every file once, in key order; prints the time of a whole
    /// paged listing (the start-up cost of quotas, a sweep's listing).
    #[test]
    fn paged_listing_of_many_files_is_complete_and_ordered() {
        let t = tempfile::tempdir().unwrap();
        let st = FsStorage::open(t.path()).unwrap();
        let n = 20_000;
        for i in 0..n {
            let p = t.path().join(format!("d{:02}/f{i:05}", i % 40));
            if i < 40 {
                std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            }
            std::fs::write(&p, b"").unwrap();
        }
        std::fs::write(t.path().join(".xferd-tmp"), b"").unwrap();
        let started = std::time::Instant::now();
        let mut all: Vec<String> = Vec::new();
        let mut after = None;
        loop {
            let page = block_on(st.list("", after.as_ref(), 1000)).unwrap();
            all.extend(page.iter().map(|l| l.key.as_str().to_string()));
            if page.len() < 1000 {
                break;
            }
            after = page.last().map(|l| l.key.clone());
        }
        eprintln!(
            "listed {n} files in pages of 1000 in {:?}",
            started.elapsed()
        );
        assert_eq!(all.len(), n);
        let mut sorted = all.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(all, sorted);
        // A prefix and a page inside one directory.
        let page = block_on(st.list("d07/", Some(&key("d07/f00047")), 2)).unwrap();
        let names: Vec<&str> = page.iter().map(|l| l.key.as_str()).collect();
        assert_eq!(names, ["d07/f00087", "d07/f00127"]);
    }
}

#[cfg(test)]
#[path = "fs_io_tests.rs"]
mod io_tests;
