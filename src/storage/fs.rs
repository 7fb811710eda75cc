//! Local-filesystem storage.
//!
//! Invariants: a file is visible under its final name only complete and fsynced (temp file,
//! `fsync`, `renameat2(RENAME_NOREPLACE)`, directory `fsync`); an existing file is never
//! overwritten; temporary files are named `.xferd-tmp-*` (a name the path rules refuse, so
//! they are never served) and are removed on abort, on drop and, after a crash, by
//! [`FsStorage::sweep_temp_files`] at start-up. Blocking calls run on tokio's blocking pool
//! (a small download's open and read may run inline: [`FsStorage::set_inline_small_reads`]);
//! a [`TempFile`] dropped on a runtime thread hands its unlink to that pool too.
//!
//! No symbolic link inside the root is ever followed ([`super::dirfd`]): every name is
//! resolved from the root's directory descriptor. A link as a path component reads as "not
//! found" and refuses writes with `ELOOP`; a link as the last component exists (so it is
//! never overwritten) but is never opened.
//!
//! Directories made for an upload are never removed, not even when it aborts: another
//! upload may have just found the directory and be about to create its own temporary file
//! there, and any "remove if empty" would race with it (issue 10, item 15). An empty
//! directory left behind costs an inode and exposes nothing (no listings are served).

use super::dirfd::{cstr, os_cstr, Dir, Kind};
use super::key::Key as RelPath;
use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub(crate) const TEMP_PREFIX: &str = ".xferd-tmp-";

#[derive(Debug, Clone)]
pub struct FsStorage {
    root: PathBuf,
    dir: Arc<Dir>,
    /// Open, `fstat` and (at most [`super::fs_store::PREFETCH_MAX`] bytes) read a file for a
    /// download on the calling runtime thread instead of the blocking pool (see
    /// [`FsStorage::set_inline_small_reads`]).
    inline_small_reads: bool,
}

/// `a/b/c` -> (`a/b`, `c`); (``, `c`) at the top.
fn split(rel: &RelPath) -> (&str, &str) {
    rel.as_str().rsplit_once('/').unwrap_or(("", rel.as_str()))
}

impl FsStorage {
    /// Opens (creating if needed) the storage root. The root path itself may contain links
    /// (the operator's choice); nothing beneath it is followed.
    pub fn open(root: &Path) -> io::Result<FsStorage> {
        std::fs::create_dir_all(root)?;
        let root = root.canonicalize()?;
        let dir = Arc::new(Dir::open_path(&root)?);
        Ok(FsStorage {
            root,
            dir,
            inline_small_reads: true,
        })
    }

    /// `[performance] inline_small_reads`: on (the default), a download's open, `fstat` and,
    /// for a file of at most [`super::fs_store::PREFETCH_MAX`] bytes, its one read run on the
    /// runtime thread that serves the request, as nginx does: from the page cache these are
    /// microseconds, while a trip to the blocking pool cost two thread wake-ups per request
    /// (a third of a small GET's CPU in a profile). Larger files are still read on the pool.
    /// Off: every step on the blocking pool (for storage where an open may stall, such as a
    /// network filesystem).
    pub fn set_inline_small_reads(&mut self, on: bool) {
        self.inline_small_reads = on;
    }

    pub(crate) fn inline_small_reads(&self) -> bool {
        self.inline_small_reads
    }

    /// The root directory's descriptor, shared (the [`super::store::Store`] impl).
    pub(crate) fn root_arc(&self) -> &Arc<Dir> {
        &self.dir
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The root directory (resolve everything from it).
    pub(crate) fn root_dir(&self) -> &Dir {
        &self.dir
    }

    /// True when something (file, directory, link) already exists at `rel`. A link or a
    /// file as a directory on the way is an error (`ELOOP` / `ENOTDIR`): nothing can be
    /// stored there.
    pub async fn exists(&self, rel: &RelPath) -> io::Result<bool> {
        let st = self.clone();
        let rel = rel.clone();
        blocking(move || st.exists_blocking(&rel)).await
    }

    /// Free bytes available to unprivileged writers on the storage filesystem.
    pub async fn available_bytes(&self) -> io::Result<u64> {
        let dir = self.dir.clone();
        blocking(move || dir.available_bytes()).await
    }

    /// Creates the parent directories and a fresh temporary file beside `rel`'s final name;
    /// `None` when that name is taken already (by a file or a directory).
    pub async fn create_temp(&self, rel: &RelPath) -> io::Result<Option<(TempFile, File)>> {
        let root = self.dir.clone();
        let rel = rel.clone();
        blocking(move || {
            let (parent, name) = split(&rel);
            let tmp = cstr(&format!("{TEMP_PREFIX}{:032x}", rand::random::<u128>()))?;
            // A directory emptied by a delete (expiry) may be removed between its creation
            // and the file's: create it again (bounded).
            let mut attempt = 0;
            let (dir, file) = loop {
                let dir = root.create_dirs(parent)?;
                if dir.kind_of(&cstr(name)?)?.is_some() {
                    return Ok(None);
                }
                #[cfg(test)]
                test_hook::fire(Path::new(rel.as_str()));
                match dir.create_file(&tmp, 0o644) {
                    Err(e) if is_not_found(&e) && attempt < 3 => attempt += 1,
                    r => break (dir, r?),
                }
            };
            Ok(Some((
                TempFile {
                    dir: Arc::new(dir),
                    tmp,
                    name: cstr(name)?,
                    done: false,
                },
                file,
            )))
        })
        .await
    }

    /// Moves a finished file (already fsynced) named `src` in `src_dir` to `rel` without
    /// overwriting, creating parent directories and fsyncing the destination directory.
    pub fn commit_file_blocking(
        &self,
        src_dir: &Dir,
        src: &std::ffi::CStr,
        rel: &RelPath,
    ) -> Result<(), CommitError> {
        let (parent, name) = split(rel);
        // As in `create_temp`: the directory may be removed by a delete in between.
        let mut attempt = 0;
        let dest = loop {
            let dest = self.dir.create_dirs(parent)?;
            match src_dir.rename_noreplace(src, &dest, &cstr(name)?) {
                Ok(()) => break dest,
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                    return Err(CommitError::Exists)
                }
                Err(e) if is_not_found(&e) && attempt < 3 => attempt += 1,
                Err(e) => return Err(e.into()),
            }
        };
        dest.sync()?;
        Ok(())
    }

    /// True when something exists at `rel` (blocking); see [`FsStorage::exists`].
    pub fn exists_blocking(&self, rel: &RelPath) -> io::Result<bool> {
        let (parent, name) = split(rel);
        let dir = match self.dir.open_dir(parent) {
            Ok(d) => d,
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(false),
            Err(e) => return Err(e),
        };
        Ok(dir.kind_of(&cstr(name)?)?.is_some())
    }

    /// Removes temporary files left by a crash (`kill -9` mid-write). Returns how many.
    /// Walks by directory descriptor and never enters a link (nor a directory swapped for
    /// one during the walk); holds one descriptor per level of depth.
    pub fn sweep_temp_files(&self) -> io::Result<usize> {
        self.sweep_temp_files_older_than(None)
    }

    /// [`Self::sweep_temp_files`], sparing files modified less than `min_age` ago (when
    /// given): on a root shared by several instances, a recent temporary file may be an
    /// upload in progress on another instance.
    pub fn sweep_temp_files_older_than(
        &self,
        min_age: Option<std::time::Duration>,
    ) -> io::Result<usize> {
        let mut n = 0;
        // Directories still to visit, each as (its parent, its name); the root first.
        let mut todo: Vec<(Arc<Dir>, Option<CString>)> = vec![(self.dir.clone(), None)];
        while let Some((parent, name)) = todo.pop() {
            let dir = match &name {
                None => Arc::new(parent.try_clone()?),
                Some(name) => match parent.open_child_dir(name) {
                    Ok(d) => Arc::new(d),
                    // Gone, or replaced by a link or a file since it was listed: skip.
                    Err(e) if is_not_found(&e) => continue,
                    Err(e) => return Err(e),
                },
            };
            drop(parent);
            for (entry, kind) in dir.entries()? {
                let is_parts = name.is_none() && entry == super::parts::PARTS_DIR;
                if kind == Kind::Dir && !is_parts {
                    todo.push((dir.clone(), Some(os_cstr(&entry)?)));
                } else if kind != Kind::Dir && entry.as_bytes().starts_with(TEMP_PREFIX.as_bytes())
                {
                    let name = os_cstr(&entry)?;
                    if min_age.is_some_and(|age| !older_than(&dir, &name, age)) {
                        continue;
                    }
                    match dir.unlink(&name) {
                        Ok(()) => n += 1,
                        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
                        Err(e) => return Err(e),
                    }
                }
            }
        }
        Ok(n)
    }
}

/// Whether the file `name` in `dir` was last modified at least `age` ago (an unreadable or
/// vanished file counts as recent: it is left alone).
fn older_than(dir: &Dir, name: &CString, age: std::time::Duration) -> bool {
    // Non-blocking, so that a FIFO planted there cannot stall the sweep.
    let Ok(f) = dir.open_file(name, libc::O_RDONLY | libc::O_NONBLOCK, 0) else {
        return false;
    };
    let modified = f.metadata().and_then(|m| m.modified());
    modified
        .ok()
        .and_then(|m| m.elapsed().ok())
        .is_some_and(|e| e >= age)
}

/// A temporary upload file; removed on drop unless committed.
#[derive(Debug)]
pub struct TempFile {
    /// The directory holding the temporary file and, after the commit, the final one.
    dir: Arc<Dir>,
    tmp: CString,
    name: CString,
    done: bool,
}

/// Outcome of a commit that could not take place.
#[derive(Debug, thiserror::Error)]
pub enum CommitError {
    #[error("destination exists")]
    Exists,
    #[error(transparent)]
    Io(#[from] io::Error),
}

impl TempFile {
    /// fsyncs `file`, moves it to its final name without overwriting, fsyncs the directory.
    /// Blocking: call from the blocking pool.
    /// On failure the temporary file is removed here (we are on a blocking thread already).
    pub fn commit_blocking(
        mut self,
        file: impl std::borrow::Borrow<File>,
    ) -> Result<(), CommitError> {
        let moved = file
            .borrow()
            .sync_all()
            .and_then(|()| self.dir.rename_noreplace(&self.tmp, &self.dir, &self.name));
        drop(file);
        match moved {
            Ok(()) => {}
            Err(e) => {
                self.remove_blocking();
                if e.kind() == io::ErrorKind::AlreadyExists {
                    return Err(CommitError::Exists);
                }
                return Err(e.into());
            }
        }
        self.done = true;
        self.dir.sync()?;
        Ok(())
    }

    /// The directory and name of the temporary file (for the content-addressed commit,
    /// [`super::cas`]).
    pub(crate) fn location(&self) -> (&Dir, &std::ffi::CStr) {
        (&self.dir, &self.tmp)
    }

    /// The temporary file was moved or removed by other means: nothing is left to remove.
    pub(crate) fn forget(mut self) {
        self.done = true;
    }

    /// Removes the temporary file (never a directory: see the module doc). Blocking.
    pub fn abort_blocking(mut self) {
        self.remove_blocking();
    }

    fn remove_blocking(&mut self) {
        if !self.done {
            self.done = true;
            let _ = self.dir.unlink(&self.tmp);
        }
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        let (dir, tmp) = (self.dir.clone(), std::mem::take(&mut self.tmp));
        let unlink = move || {
            let _ = dir.unlink(&tmp);
        };
        // Dropped on a runtime thread (an upload future cancelled or failed): unlinking is
        // file-system work, so it goes to the blocking pool. If the runtime is shutting down
        // and the job never runs, the start-up sweep removes the file.
        match tokio::runtime::Handle::try_current() {
            Ok(h) => drop(h.spawn_blocking(unlink)),
            Err(_) => unlink(),
        }
    }
}

/// Writes `data` at `offset` (positional, whole buffer).
pub fn write_at(file: &File, data: &[u8], offset: u64) -> io::Result<()> {
    file.write_all_at(data, offset)
}

/// Reads up to `len` bytes at `offset`; short only at end of file.
pub fn read_at(file: &File, len: usize, offset: u64) -> io::Result<bytes::Bytes> {
    let mut buf = vec![0u8; len];
    let mut filled = 0;
    while filled < len {
        match file.read_at(&mut buf[filled..], offset + filled as u64) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    buf.truncate(filled);
    Ok(bytes::Bytes::from(buf))
}

pub(crate) fn is_not_found(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::ENOENT) | Some(libc::ENOTDIR) | Some(libc::ELOOP)
    )
}

/// Runs blocking file-system work on tokio's blocking pool; inline when the caller is a
/// blocking thread already ([`super::store::block_on`]).
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> io::Result<T> + Send + 'static,
) -> io::Result<T> {
    if super::store::in_block_on() {
        return f();
    }
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| io::Error::other(format!("blocking task failed: {e}")))?
}

/// A test-only pause point inside [`FsStorage::create_temp`], between finding (or creating)
/// the parent directory and creating the temporary file in it: the window item 15 of the
/// issue is about.
#[cfg(test)]
pub(crate) mod test_hook {
    use std::path::{Path, PathBuf};
    use std::sync::Mutex;

    type Hook = Box<dyn FnOnce() + Send>;
    static HOOKS: Mutex<Vec<(PathBuf, Hook)>> = Mutex::new(Vec::new());

    /// Runs `f` once, when a temporary file for a path ending in `suffix` is about to be made.
    pub fn set(suffix: &str, f: impl FnOnce() + Send + 'static) {
        HOOKS
            .lock()
            .unwrap()
            .push((PathBuf::from(suffix), Box::new(f)));
    }

    pub fn fire(path: &Path) {
        let hook = {
            let mut hooks = HOOKS.lock().unwrap();
            let i = hooks.iter().position(|(s, _)| path.ends_with(s));
            i.map(|i| hooks.remove(i).1)
        };
        if let Some(f) = hook {
            f();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::store::Store;
    fn validate(s: &str) -> Result<RelPath, super::super::key::KeyError> {
        RelPath::parse(s)
    }

    #[tokio::test]
    async fn commit_is_atomic_and_never_overwrites() {
        let dir = tempfile::tempdir().unwrap();
        let st = FsStorage::open(dir.path()).unwrap();
        let rel = validate("a/b/c.txt").unwrap();
        let (t1, f1) = st.create_temp(&rel).await.unwrap().unwrap();
        let (t2, f2) = st.create_temp(&rel).await.unwrap().unwrap();
        write_at(&f1, b"one", 0).unwrap();
        write_at(&f2, b"two", 0).unwrap();
        assert!(!st.exists(&rel).await.unwrap());
        t1.commit_blocking(f1).unwrap();
        assert!(matches!(t2.commit_blocking(f2), Err(CommitError::Exists)));
        let obj = Store::open(&st, &rel).await.unwrap().unwrap();
        assert_eq!(obj.meta().len, 3);
        assert_eq!(&obj.read_at(0, 10).await.unwrap()[..], b"one");
        // Only the committed file remains in the directory.
        let names: Vec<_> = std::fs::read_dir(dir.path().join("a/b")).unwrap().collect();
        assert_eq!(names.len(), 1);
    }

    #[tokio::test]
    async fn abort_removes_the_file_and_keeps_the_directories() {
        let dir = tempfile::tempdir().unwrap();
        let st = FsStorage::open(dir.path()).unwrap();
        let rel = validate("x/y/z.bin").unwrap();
        let (t, f) = st.create_temp(&rel).await.unwrap().unwrap();
        write_at(&f, b"partial", 0).unwrap();
        t.abort_blocking();
        assert_eq!(
            std::fs::read_dir(dir.path().join("x/y")).unwrap().count(),
            0
        );
    }

    /// Item 15: upload A created `r/s`; upload B finds `r/s` and, before it creates its
    /// temporary file there, A aborts. B must still succeed.
    #[tokio::test]
    async fn an_abort_never_removes_a_directory_another_upload_is_using() {
        let dir = tempfile::tempdir().unwrap();
        let st = FsStorage::open(dir.path()).unwrap();
        let (a, _fa) = st
            .create_temp(&validate("r/s/a.bin").unwrap())
            .await
            .unwrap()
            .unwrap();
        test_hook::set("r/s/b.bin", move || a.abort_blocking());
        let (b, fb) = st
            .create_temp(&validate("r/s/b.bin").unwrap())
            .await
            .expect("B's temporary file is created although A aborted meanwhile")
            .expect("b.bin is free");
        write_at(&fb, b"b", 0).unwrap();
        tokio::task::spawn_blocking(move || b.commit_blocking(fb))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(std::fs::read(dir.path().join("r/s/b.bin")).unwrap(), b"b");
    }

    /// Item 16: dropping an uncommitted [`TempFile`] on a runtime thread hands the unlink to
    /// the blocking pool instead of doing file-system work on the runtime thread. With the
    /// pool's only thread held, the file is still there after the drop; once the pool is
    /// free it goes.
    #[test]
    fn drop_on_the_runtime_unlinks_on_the_blocking_pool() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .max_blocking_threads(1)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let dir = tempfile::tempdir().unwrap();
            let st = FsStorage::open(dir.path()).unwrap();
            let (t, f) = st
                .create_temp(&validate("q/f.bin").unwrap())
                .await
                .unwrap()
                .unwrap();
            drop(f);
            let tmp: Vec<_> = std::fs::read_dir(dir.path().join("q"))
                .unwrap()
                .map(|e| e.unwrap().path())
                .collect();
            assert_eq!(tmp.len(), 1);
            let (release, wait) = std::sync::mpsc::channel::<()>();
            let (held_tx, held_rx) = tokio::sync::oneshot::channel();
            let holder = tokio::task::spawn_blocking(move || {
                let _ = held_tx.send(());
                let _ = wait.recv_timeout(std::time::Duration::from_secs(30));
            });
            held_rx.await.unwrap();
            drop(t);
            assert!(
                tmp[0].exists(),
                "dropped TempFile unlinked on the runtime thread"
            );
            release.send(()).unwrap();
            holder.await.unwrap();
            for _ in 0..200 {
                if !tmp[0].exists() {
                    return;
                }
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
            panic!("the temporary file was never removed");
        });
    }

    /// A FIFO planted in storage is "not found", and opening it does not hang a blocking
    /// thread (it would wait for a writer forever without O_NONBLOCK).
    #[test]
    fn a_fifo_is_not_a_file_and_does_not_block() {
        let dir = tempfile::tempdir().unwrap();
        let st = FsStorage::open(dir.path()).unwrap();
        let p = CString::new(dir.path().join("pipe").as_os_str().as_bytes()).unwrap();
        // SAFETY: `p` is NUL-terminated.
        assert_eq!(unsafe { libc::mkfifo(p.as_ptr(), 0o644) }, 0);
        let rel = validate("pipe").unwrap();
        let rt = tokio::runtime::Runtime::new().unwrap();
        let limit = std::time::Duration::from_secs(5);
        let r = rt.block_on(async { tokio::time::timeout(limit, Store::open(&st, &rel)).await });
        // Not joined: a blocking thread stuck in open() must not hang the test too.
        rt.shutdown_background();
        let r = r.expect("opening a FIFO returns at once");
        assert!(r.unwrap().is_none());
    }

    #[tokio::test]
    async fn sweep_removes_crash_leftovers() {
        let dir = tempfile::tempdir().unwrap();
        let st = FsStorage::open(dir.path()).unwrap();
        std::fs::create_dir(dir.path().join("d")).unwrap();
        std::fs::write(dir.path().join("d/.xferd-tmp-abc"), b"x").unwrap();
        std::fs::write(dir.path().join("d/keep.txt"), b"x").unwrap();
        assert_eq!(st.sweep_temp_files().unwrap(), 1);
        assert!(dir.path().join("d/keep.txt").exists());
    }

    #[test]
    fn a_sweep_with_a_minimum_age_spares_recent_temp_files() {
        let dir = tempfile::tempdir().unwrap();
        let st = FsStorage::open(dir.path()).unwrap();
        std::fs::create_dir(dir.path().join("d")).unwrap();
        let (old, new) = (
            dir.path().join("d/.xferd-tmp-old"),
            dir.path().join(".xferd-tmp-new"),
        );
        std::fs::write(&old, b"x").unwrap();
        std::fs::write(&new, b"x").unwrap();
        let hour = std::time::Duration::from_secs(3600);
        let then = std::time::SystemTime::now() - hour * 2;
        File::options()
            .write(true)
            .open(&old)
            .unwrap()
            .set_modified(then)
            .unwrap();
        assert_eq!(st.sweep_temp_files_older_than(Some(hour)).unwrap(), 1);
        assert!(!old.exists(), "older than the minimum age: removed");
        assert!(
            new.exists(),
            "recent (another instance's upload in progress): kept"
        );
        assert_eq!(st.sweep_temp_files_older_than(None).unwrap(), 1);
        assert!(!new.exists());
    }
}
