//! Local-filesystem storage.
//!
//! Invariants: a file is visible under its final name only complete and fsynced (temp file,
//! `fsync`, `renameat2(RENAME_NOREPLACE)`, directory `fsync`); an existing file is never
//! overwritten; temporary files are named `.xferd-tmp-*` (a name the path rules refuse, so
//! they are never served) and are removed on abort, on drop and, after a crash, by
//! [`FsStorage::sweep_temp_files`] at start-up. Blocking calls run on tokio's blocking pool.

use crate::core::path::RelPath;
use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

const TEMP_PREFIX: &str = ".xferd-tmp-";

/// What a download needs to know about a stored file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileMeta {
    pub len: u64,
    pub modified: SystemTime,
    pub mtime_nanos: u128,
}

#[derive(Debug, Clone)]
pub struct FsStorage {
    root: PathBuf,
}

impl FsStorage {
    /// Opens (creating if needed) the storage root.
    pub fn open(root: &Path) -> io::Result<FsStorage> {
        std::fs::create_dir_all(root)?;
        Ok(FsStorage {
            root: root.canonicalize()?,
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn full(&self, rel: &RelPath) -> PathBuf {
        let mut p = self.root.clone();
        for seg in rel.segments() {
            p.push(seg);
        }
        p
    }

    /// Opens a regular file for reading (no symlinks followed at the last component).
    pub async fn open_read(&self, rel: &RelPath) -> io::Result<Option<(File, FileMeta)>> {
        let path = self.full(rel);
        blocking(move || {
            let file = match std::fs::OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_NOFOLLOW)
                .open(&path)
            {
                Ok(f) => f,
                Err(e) if is_not_found(&e) => return Ok(None),
                Err(e) => return Err(e),
            };
            let md = file.metadata()?;
            if !md.is_file() {
                return Ok(None);
            }
            let modified = md.modified()?;
            let mtime_nanos = modified
                .duration_since(SystemTime::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0);
            Ok(Some((
                file,
                FileMeta {
                    len: md.len(),
                    modified,
                    mtime_nanos,
                },
            )))
        })
        .await
    }

    /// True when something (file or directory) already exists at `rel`.
    pub async fn exists(&self, rel: &RelPath) -> io::Result<bool> {
        let path = self.full(rel);
        blocking(move || match std::fs::symlink_metadata(&path) {
            Ok(_) => Ok(true),
            Err(e) if is_not_found(&e) => Ok(false),
            Err(e) => Err(e),
        })
        .await
    }

    /// Free bytes available to unprivileged writers on the storage filesystem.
    pub async fn available_bytes(&self) -> io::Result<u64> {
        let root = self.root.clone();
        blocking(move || {
            let c = CString::new(root.as_os_str().as_bytes())
                .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in path"))?;
            // SAFETY: statvfs writes into the zeroed struct we own; `c` is NUL-terminated.
            let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
            if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
                return Err(io::Error::last_os_error());
            }
            Ok((st.f_bavail as u64).saturating_mul(st.f_frsize as u64))
        })
        .await
    }

    /// Creates the parent directories and a fresh temporary file beside `rel`'s final name.
    pub async fn create_temp(&self, rel: &RelPath) -> io::Result<(TempFile, File)> {
        let final_path = self.full(rel);
        let root = self.root.clone();
        blocking(move || {
            let parent = final_path
                .parent()
                .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no parent"))?;
            let created_dirs = create_dirs(&root, parent)?;
            let tmp_path = parent.join(format!("{TEMP_PREFIX}{:032x}", rand::random::<u128>()));
            let file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o644)
                .open(&tmp_path);
            let file = match file {
                Ok(f) => f,
                Err(e) => {
                    remove_dirs(&created_dirs);
                    return Err(e);
                }
            };
            Ok((
                TempFile {
                    tmp_path,
                    final_path,
                    created_dirs,
                    done: false,
                },
                file,
            ))
        })
        .await
    }

    /// Moves a finished file (already fsynced) from `src` to `rel` without overwriting,
    /// creating parent directories and fsyncing the destination directory.
    pub fn commit_file_blocking(&self, src: &Path, rel: &RelPath) -> Result<(), CommitError> {
        let dest = self.full(rel);
        let parent = dest
            .parent()
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no parent"))?;
        let created = create_dirs(&self.root, parent)?;
        match rename_noreplace(src, &dest) {
            Ok(()) => {}
            Err(e) => {
                remove_dirs(&created);
                if e.kind() == io::ErrorKind::AlreadyExists {
                    return Err(CommitError::Exists);
                }
                return Err(e.into());
            }
        }
        File::open(parent)?.sync_all()?;
        Ok(())
    }

    /// True when something exists at `rel` (blocking).
    pub fn exists_blocking(&self, rel: &RelPath) -> io::Result<bool> {
        match std::fs::symlink_metadata(self.full(rel)) {
            Ok(_) => Ok(true),
            Err(e) if is_not_found(&e) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Removes temporary files left by a crash (`kill -9` mid-write). Returns how many.
    pub fn sweep_temp_files(&self) -> io::Result<usize> {
        fn walk(dir: &Path, n: &mut usize) -> io::Result<()> {
            for entry in std::fs::read_dir(dir)? {
                let entry = entry?;
                let ft = entry.file_type()?;
                if ft.is_dir() && entry.file_name() == super::parts::PARTS_DIR {
                    continue;
                } else if ft.is_dir() {
                    walk(&entry.path(), n)?;
                } else if entry
                    .file_name()
                    .as_bytes()
                    .starts_with(TEMP_PREFIX.as_bytes())
                {
                    std::fs::remove_file(entry.path())?;
                    *n += 1;
                }
            }
            Ok(())
        }
        let mut n = 0;
        walk(&self.root, &mut n)?;
        Ok(n)
    }
}

/// A temporary upload file; removed on drop unless committed.
#[derive(Debug)]
pub struct TempFile {
    tmp_path: PathBuf,
    final_path: PathBuf,
    created_dirs: Vec<PathBuf>,
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
    pub fn commit_blocking(mut self, file: File) -> Result<(), CommitError> {
        file.sync_all()?;
        drop(file);
        match rename_noreplace(&self.tmp_path, &self.final_path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => return Err(CommitError::Exists),
            Err(e) => return Err(e.into()),
        }
        self.done = true;
        if let Some(parent) = self.final_path.parent() {
            File::open(parent)?.sync_all()?;
        }
        Ok(())
    }

    /// Removes the temporary file and any directories this upload created.
    pub fn abort_blocking(mut self) {
        self.cleanup();
    }

    fn cleanup(&mut self) {
        if !self.done {
            self.done = true;
            let _ = std::fs::remove_file(&self.tmp_path);
            remove_dirs(&self.created_dirs);
        }
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        self.cleanup();
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

fn create_dirs(root: &Path, dir: &Path) -> io::Result<Vec<PathBuf>> {
    let mut missing = Vec::new();
    let mut cur = dir;
    while cur != root && !cur.exists() {
        missing.push(cur.to_path_buf());
        cur = match cur.parent() {
            Some(p) => p,
            None => break,
        };
    }
    let mut created = Vec::new();
    for d in missing.into_iter().rev() {
        match std::fs::create_dir(&d) {
            Ok(()) => created.push(d),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => {
                remove_dirs(&created);
                return Err(e);
            }
        }
    }
    Ok(created)
}

fn remove_dirs(created: &[PathBuf]) {
    // Deepest first; `remove_dir` fails harmlessly if another upload put a file there.
    for d in created.iter().rev() {
        let _ = std::fs::remove_dir(d);
    }
}

fn rename_noreplace(from: &Path, to: &Path) -> io::Result<()> {
    let c = |p: &Path| {
        CString::new(p.as_os_str().as_bytes())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in path"))
    };
    let (f, t) = (c(from)?, c(to)?);
    // SAFETY: both strings are NUL-terminated and outlive the call.
    let rc = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            f.as_ptr(),
            libc::AT_FDCWD,
            t.as_ptr(),
            libc::RENAME_NOREPLACE,
        )
    };
    if rc == 0 {
        return Ok(());
    }
    let err = io::Error::last_os_error();
    if err.raw_os_error() == Some(libc::EINVAL) || err.raw_os_error() == Some(libc::ENOSYS) {
        // Filesystem without RENAME_NOREPLACE: link() also refuses to overwrite.
        std::fs::hard_link(from, to)?;
        std::fs::remove_file(from)?;
        return Ok(());
    }
    Err(err)
}

fn is_not_found(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::ENOENT) | Some(libc::ENOTDIR) | Some(libc::ELOOP)
    )
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> io::Result<T> + Send + 'static,
) -> io::Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| io::Error::other(format!("blocking task failed: {e}")))?
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::path::validate;

    #[tokio::test]
    async fn commit_is_atomic_and_never_overwrites() {
        let dir = tempfile::tempdir().unwrap();
        let st = FsStorage::open(dir.path()).unwrap();
        let rel = validate("a/b/c.txt").unwrap();
        let (t1, f1) = st.create_temp(&rel).await.unwrap();
        let (t2, f2) = st.create_temp(&rel).await.unwrap();
        write_at(&f1, b"one", 0).unwrap();
        write_at(&f2, b"two", 0).unwrap();
        assert!(!st.exists(&rel).await.unwrap());
        t1.commit_blocking(f1).unwrap();
        assert!(matches!(t2.commit_blocking(f2), Err(CommitError::Exists)));
        let (f, meta) = st.open_read(&rel).await.unwrap().unwrap();
        assert_eq!(meta.len, 3);
        assert_eq!(&read_at(&f, 10, 0).unwrap()[..], b"one");
        // Only the committed file remains in the directory.
        let names: Vec<_> = std::fs::read_dir(dir.path().join("a/b")).unwrap().collect();
        assert_eq!(names.len(), 1);
    }

    #[tokio::test]
    async fn abort_removes_file_and_created_dirs() {
        let dir = tempfile::tempdir().unwrap();
        let st = FsStorage::open(dir.path()).unwrap();
        let rel = validate("x/y/z.bin").unwrap();
        let (t, f) = st.create_temp(&rel).await.unwrap();
        write_at(&f, b"partial", 0).unwrap();
        drop(t);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
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
}
