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

use super::fs::{CommitError, FsStorage};
use crate::core::path::RelPath;
use sha2::{Digest, Sha256};
use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::path::PathBuf;

/// The directory (under the storage root) holding session data; the path rules refuse
/// names starting with `.xferd`, so it is never served.
pub const PARTS_DIR: &str = ".xferd-sessions";

#[derive(Debug, Clone)]
pub struct PartStore {
    dir: PathBuf,
    storage: FsStorage,
}

impl PartStore {
    pub fn open(storage: &FsStorage) -> io::Result<PartStore> {
        let dir = storage.root().join(PARTS_DIR);
        std::fs::create_dir_all(&dir)?;
        Ok(PartStore {
            dir,
            storage: storage.clone(),
        })
    }

    fn path(&self, id: &str) -> PathBuf {
        self.dir.join(format!("{id}.part"))
    }

    /// Creates the empty data file of a new session (durably).
    pub fn create(&self, id: &str) -> io::Result<()> {
        let f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(self.path(id))?;
        f.sync_all()?;
        File::open(&self.dir)?.sync_all()
    }

    /// Opens the data file for positional writes.
    pub fn open_write(&self, id: &str) -> io::Result<File> {
        std::fs::OpenOptions::new().write(true).open(self.path(id))
    }

    pub fn exists(&self, id: &str) -> bool {
        self.path(id).exists()
    }

    pub fn remove(&self, id: &str) -> io::Result<()> {
        match std::fs::remove_file(self.path(id)) {
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
            let src = File::open(self.path(id))?;
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
        let mut f = File::open(self.path(id))?;
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
        let path = self.path(id);
        let f = std::fs::OpenOptions::new().write(true).open(&path)?;
        f.set_len(len)?;
        f.sync_all()?;
        self.storage.commit_file_blocking(&path, rel)
    }

    /// True when a file already exists at a session's target path.
    pub fn target_exists(&self, rel: &RelPath) -> io::Result<bool> {
        self.storage.exists_blocking(rel)
    }

    /// Ids of every data file present (start-up recovery).
    pub fn list(&self) -> io::Result<Vec<String>> {
        let mut out = Vec::new();
        for e in std::fs::read_dir(&self.dir)? {
            let name = e?.file_name();
            if let Some(id) = name.to_str().and_then(|n| n.strip_suffix(".part")) {
                out.push(id.to_string());
            }
        }
        Ok(out)
    }
}
