//! Bytes of resumable uploads in progress: one file per session under
//! `<storage root>/.xferd-sessions/`, written at offsets (positional writes, never chunk
//! files copied together later). On the same filesystem as the final paths, so completion
//! is a rename.
//!
//! The operations - create, write at offset, sync, length, concatenate, hash, commit to a
//! path, remove - are the storage contract of the session engine. On an object store they
//! map to a multipart upload: writes buffered into parts of at least 5 MiB (the last may be
//! smaller), part ETags kept in the session record, commit = complete-multipart-upload,
//! remove = abort, concatenate = upload-part-copy.

use super::dirfd::{cstr, Dir, Kind};
use super::fs::{blocking, CommitError, FsStorage};
use super::fs_store::{FsSink, FS_CAPABILITIES};
use super::key::Key as RelPath;
use super::store::{self, BoxFuture, Capabilities, PartStore, Sink, StoreError};
use sha2::{Digest, Sha256};
use std::ffi::CString;
use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::sync::Arc;

/// The directory (under the storage root) holding session data; the path rules refuse
/// names starting with `.xferd`, so it is never served. Opened by descriptor and never
/// through a link, like everything under the root.
pub const PARTS_DIR: &str = ".xferd-sessions";

#[derive(Debug, Clone)]
pub struct FsParts {
    dir: Arc<Dir>,
    storage: FsStorage,
}

impl FsParts {
    pub fn open(storage: &FsStorage) -> io::Result<FsParts> {
        let dir = storage.root_dir().create_dirs(PARTS_DIR)?;
        Ok(FsParts {
            dir: Arc::new(dir),
            storage: storage.clone(),
        })
    }

    /// The data file's name (ids are the engine's own, but a NUL is refused anyway).
    fn name(&self, id: &str) -> io::Result<CString> {
        cstr(&format!("{id}.part"))
    }

    fn open_file(&self, id: &str, flags: libc::c_int) -> io::Result<File> {
        self.dir.open_file(&self.name(id)?, flags, 0)
    }

    /// Creates the empty data file of a new session (durably).
    pub fn create(&self, id: &str) -> io::Result<()> {
        let f = self.dir.create_file(&self.name(id)?, 0o644)?;
        f.sync_all()?;
        self.dir.sync()
    }

    /// Opens the data file for positional writes.
    pub fn open_write(&self, id: &str) -> io::Result<File> {
        self.open_file(id, libc::O_WRONLY)
    }

    /// The data file as a [`Sink`] for positional writes (blocking open).
    pub fn open_sink_blocking(&self, id: &str) -> io::Result<Arc<dyn Sink>> {
        Ok(Arc::new(FsSink::new(self.open_write(id)?)))
    }

    pub fn exists(&self, id: &str) -> bool {
        match self.name(id) {
            Ok(n) => matches!(self.dir.kind_of(&n), Ok(Some(_))),
            Err(_) => false,
        }
    }

    pub fn remove(&self, id: &str) -> io::Result<()> {
        match self.dir.unlink(&self.name(id)?) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    /// Appends the first `len` bytes of each source, in order, to `dest` (kernel-side copy
    /// where the filesystem supports it).
    pub fn concat(&self, dest: &str, sources: &[(String, u64)]) -> io::Result<()> {
        let out = self.open_write(dest)?;
        let mut offset = 0u64;
        for (id, len) in sources {
            let src = self.open_file(id, libc::O_RDONLY)?;
            let mut copied = 0u64;
            let mut buf = vec![0u8; 1 << 20];
            while copied < *len {
                let want =
                    usize::try_from((*len - copied).min(buf.len() as u64)).unwrap_or(buf.len());
                let n = src.read_at(&mut buf[..want], copied)?;
                if n == 0 {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "partial upload is short",
                    ));
                }
                out.write_all_at(&buf[..n], offset + copied)?;
                copied += n as u64;
            }
            offset += len;
        }
        out.sync_all()
    }

    /// Feeds bytes `[from, to)` of a session's data into `h`.
    pub fn hash_range(&self, id: &str, h: &mut Sha256, from: u64, to: u64) -> io::Result<()> {
        use std::io::{Seek, SeekFrom};
        let mut f = self.open_file(id, libc::O_RDONLY)?;
        f.seek(SeekFrom::Start(from))?;
        let mut f = f.take(to.saturating_sub(from));
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = f.read(&mut buf)?;
            if n == 0 {
                return Ok(());
            }
            h.update(&buf[..n]);
        }
    }

    /// Truncates to `len` (bytes past the committed length are garbage), fsyncs, and moves
    /// the data to its final path without overwriting.
    pub fn commit(&self, id: &str, len: u64, rel: &RelPath) -> Result<(), CommitError> {
        let f = self.open_write(id)?;
        f.set_len(len)?;
        f.sync_all()?;
        self.storage
            .commit_file_blocking(&self.dir, &self.name(id)?, rel)
    }

    /// [`FsParts::commit`], sharing the stored copy of identical content (see
    /// [`super::cas`]); returns the bytes saved.
    pub fn commit_dedup(
        &self,
        id: &str,
        len: u64,
        rel: &RelPath,
        sha256: &[u8; 32],
    ) -> Result<u64, CommitError> {
        let f = self.open_write(id)?;
        f.set_len(len)?;
        super::cas::commit_blocking(
            &self.storage,
            &self.dir,
            &self.name(id)?,
            Some(&f),
            rel,
            sha256,
            len,
        )
    }

    /// True when a file already exists at a session's target path.
    /// A target reached only through a symlinked directory (`ELOOP`) counts as taken: the
    /// session could never be committed there, so it is refused up front (409).
    pub fn target_exists(&self, rel: &RelPath) -> io::Result<bool> {
        match self.storage.exists_blocking(rel) {
            Err(e) if e.raw_os_error() == Some(libc::ELOOP) => Ok(true),
            r => r,
        }
    }

    /// Ids of every data file present (start-up recovery); links and other non-files in
    /// the directory are not data files.
    pub fn list(&self) -> io::Result<Vec<String>> {
        let mut out = Vec::new();
        for (name, kind) in self.dir.entries()? {
            if kind != Kind::File {
                continue;
            }
            if let Some(id) = name.to_str().and_then(|n| n.strip_suffix(".part")) {
                out.push(id.to_string());
            }
        }
        Ok(out)
    }
}

async fn on_pool<T: Send + 'static>(
    f: impl FnOnce() -> io::Result<T> + Send + 'static,
) -> store::Result<T> {
    blocking(f).await.map_err(StoreError::from)
}

/// The contract over the blocking operations above, each on the blocking pool.
impl PartStore for FsParts {
    fn capabilities(&self) -> Capabilities {
        FS_CAPABILITIES
    }
    fn create(&self, id: &str) -> BoxFuture<'static, store::Result<()>> {
        let (p, id) = (self.clone(), id.to_string());
        Box::pin(on_pool(move || FsParts::create(&p, &id)))
    }
    fn open_sink(&self, id: &str) -> BoxFuture<'static, store::Result<Arc<dyn Sink>>> {
        let (p, id) = (self.clone(), id.to_string());
        Box::pin(on_pool(move || p.open_sink_blocking(&id)))
    }
    fn exists(&self, id: &str) -> BoxFuture<'static, store::Result<bool>> {
        let (p, id) = (self.clone(), id.to_string());
        Box::pin(on_pool(move || Ok(FsParts::exists(&p, &id))))
    }
    fn abort(&self, id: &str) -> BoxFuture<'static, store::Result<()>> {
        let (p, id) = (self.clone(), id.to_string());
        Box::pin(on_pool(move || p.remove(&id)))
    }
    fn concat(
        &self,
        dest: &str,
        sources: Vec<(String, u64)>,
    ) -> BoxFuture<'static, store::Result<()>> {
        let (p, dest) = (self.clone(), dest.to_string());
        Box::pin(on_pool(move || FsParts::concat(&p, &dest, &sources)))
    }
    fn hash_range(
        &self,
        id: &str,
        mut sha: Sha256,
        from: u64,
        to: u64,
    ) -> BoxFuture<'static, store::Result<Sha256>> {
        let (p, id) = (self.clone(), id.to_string());
        Box::pin(on_pool(move || {
            FsParts::hash_range(&p, &id, &mut sha, from, to).map(|()| sha)
        }))
    }
    fn complete(&self, id: &str, len: u64, key: &RelPath) -> BoxFuture<'static, store::Result<()>> {
        let (p, id, key) = (self.clone(), id.to_string(), key.clone());
        Box::pin(async move {
            match blocking(move || Ok(p.commit(&id, len, &key))).await {
                Ok(Ok(())) => Ok(()),
                Ok(Err(CommitError::Exists)) => Err(StoreError::Exists),
                Ok(Err(CommitError::Io(e))) | Err(e) => Err(StoreError::from(e)),
            }
        })
    }
    fn complete_dedup(
        &self,
        id: &str,
        len: u64,
        key: &RelPath,
        sha256: [u8; 32],
    ) -> BoxFuture<'static, store::Result<u64>> {
        let (p, id, key) = (self.clone(), id.to_string(), key.clone());
        Box::pin(async move {
            match blocking(move || Ok(p.commit_dedup(&id, len, &key, &sha256))).await {
                Ok(Ok(saved)) => Ok(saved),
                Ok(Err(CommitError::Exists)) => Err(StoreError::Exists),
                Ok(Err(CommitError::Io(e))) | Err(e) => Err(StoreError::from(e)),
            }
        })
    }
    fn target_taken(&self, key: &RelPath) -> BoxFuture<'static, store::Result<bool>> {
        let (p, key) = (self.clone(), key.clone());
        Box::pin(on_pool(move || p.target_exists(&key)))
    }
    fn list(&self) -> BoxFuture<'static, store::Result<Vec<String>>> {
        let p = self.clone();
        Box::pin(on_pool(move || FsParts::list(&p)))
    }
    fn read_at(
        &self,
        id: &str,
        offset: u64,
        len: usize,
    ) -> BoxFuture<'static, store::Result<bytes::Bytes>> {
        let (p, id) = (self.clone(), id.to_string());
        Box::pin(on_pool(move || {
            let f = p.open_file(&id, libc::O_RDONLY)?;
            let mut buf = vec![0u8; len];
            let mut filled = 0;
            while filled < len {
                let n = f.read_at(&mut buf[filled..], offset + filled as u64)?;
                if n == 0 {
                    break;
                }
                filled += n;
            }
            buf.truncate(filled);
            Ok(bytes::Bytes::from(buf))
        }))
    }
}
