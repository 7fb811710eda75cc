//! Deduplication on the filesystem: a content-addressed store of hard links.
//!
//! `<root>/.xferd-cas/<first two hex digits>/<sha256 in hex>` is one more name (a hard link)
//! of a stored file whose content has that SHA-256. The directory's name starts with the
//! reserved prefix, so no key can name it (the path rules refuse it: never served, never
//! written through the API) and [`super::store::Store::list`] skips it.
//!
//! - **Commit** ([`commit_blocking`]) of an upload whose digest is H and length L: if the CAS
//!   has H as a regular file of length L, the final name becomes a new hard link to it
//!   (`linkat`, which never replaces a name: a taken key is `Exists`), the staged bytes are
//!   dropped and the file's modification time is set to now (the new name's upload time; see
//!   below). Otherwise the upload is committed as without deduplication (fsync,
//!   `renameat2(RENAME_NOREPLACE)`) and the CAS gets a link to the new file.
//!   Identity is SHA-256 equality plus equal length, the standard for content addressing
//!   (a collision is not a practical concern); the bytes are not compared again.
//! - **Last name gone**: the CAS link keeps the inode alive, so a CAS entry whose link count
//!   is 1 is garbage. Deleting a name that leaves one link frees the entry at once
//!   ([`release_blocking`]: the file carries its digest in the `user.xferd.sha256` extended
//!   attribute; without extended attributes, a sweep); [`sweep_blocking`] removes every such
//!   entry at start-up.
//! - **Races are safe by construction**: every name is an equal owner of the inode, so a
//!   sweep that unlinks a CAS entry just as an upload links to it only loses the *sharing*
//!   of later uploads, never data; an upload that finds the CAS entry gone (`ENOENT`) stores
//!   its own copy.
//! - **Times**: hard links share the inode, so its modification time is every name's. It is
//!   set to now at each deduplicated commit: expiry (by `ObjectMeta::modified`) then never
//!   deletes a name earlier than its own upload's `max_age`; the earlier names live as long
//!   as the latest (and their ETag changes: clients revalidate).
//!
//! Every name is resolved from the root's descriptor without following links
//! ([`super::dirfd`]).

use super::dirfd::{cstr, Dir, Kind};
use super::fs::{is_not_found, CommitError, FsStorage};
use super::key::Key;
use std::ffi::CStr;
use std::fs::File;
use std::io;

/// The CAS directory, under the storage root.
pub const CAS_DIR: &str = ".xferd-cas";

/// The bucket (`ab`) and entry name (the 64 hex digits) of a digest.
pub fn entry_of(sha256: &[u8; 32]) -> (String, String) {
    let hex = hex::encode(sha256);
    (hex[..2].to_string(), hex)
}

/// The CAS entry of `sha256` if it is a regular file of `len` bytes: its bucket directory,
/// its name and the open file.
fn lookup(root: &Dir, sha256: &[u8; 32], len: u64) -> io::Result<Option<(Dir, File)>> {
    let (bucket, name) = entry_of(sha256);
    let dir = match root.open_dir(&format!("{CAS_DIR}/{bucket}")) {
        Ok(d) => d,
        Err(e) if is_not_found(&e) => return Ok(None),
        Err(e) => return Err(e),
    };
    let flags = libc::O_RDONLY | libc::O_NONBLOCK;
    let file = match dir.open_file(&cstr(&name)?, flags, 0) {
        Ok(f) => f,
        Err(e) if is_not_found(&e) => return Ok(None),
        Err(e) => return Err(e),
    };
    let md = file.metadata()?;
    Ok((md.is_file() && md.len() == len).then_some((dir, file)))
}

/// The extended attribute naming a shared file's CAS entry (its SHA-256 in hex), so that
/// deleting its last name frees the entry without a sweep.
const TAG: &[u8] = b"user.xferd.sha256\0";

/// Tags `file` with its digest (best effort: without extended attributes the delete path
/// falls back to a sweep).
fn tag(file: &File, hex: &str) {
    use std::os::fd::AsRawFd;
    // SAFETY: `TAG` is NUL-terminated; the value is `hex.len()` readable bytes.
    let _ = unsafe {
        libc::fsetxattr(
            file.as_raw_fd(),
            TAG.as_ptr().cast(),
            hex.as_ptr().cast(),
            hex.len(),
            0,
        )
    };
}

/// The digest `file` was tagged with, if it was.
fn tag_of(file: &File) -> Option<String> {
    use std::os::fd::AsRawFd;
    let mut buf = [0u8; 64];
    // SAFETY: `TAG` is NUL-terminated; `buf` has room for `buf.len()` bytes.
    let n = unsafe {
        libc::fgetxattr(
            file.as_raw_fd(),
            TAG.as_ptr().cast(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    let hex = std::str::from_utf8(buf.get(..usize::try_from(n).ok()?)?).ok()?;
    (hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit())).then(|| hex.to_string())
}

/// Adds `rel` (a committed file) to the CAS under `sha256`, unless an entry is there.
/// Best effort: the upload is stored either way; a failure only loses later sharing.
fn add(st: &FsStorage, rel: &Key, sha256: &[u8; 32]) -> io::Result<()> {
    let (bucket, name) = entry_of(sha256);
    let dir = st.root_dir().create_dirs(&format!("{CAS_DIR}/{bucket}"))?;
    let (parent, file) = rel.split();
    let src = st.root_dir().open_dir(parent)?;
    let file = cstr(file)?;
    if let Ok(f) = src.open_file(&file, libc::O_RDONLY | libc::O_NONBLOCK, 0) {
        tag(&f, &name);
    }
    match src.link_noreplace(&file, &dir, &cstr(&name)?) {
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        r => r.and_then(|()| dir.sync()),
    }
}

/// After a name of `file` was deleted and one link is left: if that link is the file's CAS
/// entry (found by its tag, else by a sweep), removes it. Blocking.
pub fn release_blocking(root: &Dir, file: &File) -> io::Result<()> {
    use std::os::unix::fs::MetadataExt;
    let Some(hex) = tag_of(file) else {
        return sweep_blocking(root).map(drop);
    };
    let dir = match root.open_dir(&format!("{CAS_DIR}/{}", &hex[..2])) {
        Ok(d) => d,
        Err(e) if is_not_found(&e) => return Ok(()),
        Err(e) => return Err(e),
    };
    let name = cstr(&hex)?;
    let Ok(entry) = dir.open_file(&name, libc::O_RDONLY | libc::O_NONBLOCK, 0) else {
        return Ok(());
    };
    let (md, mine) = (entry.metadata()?, file.metadata()?);
    if md.ino() == mine.ino() && md.dev() == mine.dev() && md.nlink() <= 1 {
        match dir.unlink(&name) {
            Err(e) if !is_not_found(&e) => return Err(e),
            _ => dir.sync()?,
        }
    }
    Ok(())
}

/// Commits the finished file `src` (in `src_dir`) as `rel`, sharing the CAS copy of the same
/// content when there is one (see the module doc). `sync` is the staged file, fsynced only
/// when its bytes are kept. Returns the bytes saved: `len` when linked, 0 when stored.
/// Blocking. On success `src` is gone (moved or removed); on an error it may remain.
pub fn commit_blocking(
    st: &FsStorage,
    src_dir: &Dir,
    src: &CStr,
    sync: Option<&File>,
    rel: &Key,
    sha256: &[u8; 32],
    len: u64,
) -> Result<u64, CommitError> {
    if let Some((cas_dir, cas_file)) = lookup(st.root_dir(), sha256, len)? {
        let (parent, name) = rel.split();
        let (_, entry) = entry_of(sha256);
        let mut attempt = 0;
        let linked = loop {
            let dest = st.root_dir().create_dirs(parent)?;
            match cas_dir.link_noreplace(&cstr(&entry)?, &dest, &cstr(name)?) {
                Ok(()) => break Some(dest),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                    return Err(CommitError::Exists)
                }
                // The CAS entry went (a sweep): store this upload's own copy.
                Err(e) if is_not_found(&e) && cas_dir.kind_of(&cstr(&entry)?)?.is_none() => {
                    break None
                }
                // The destination directory was pruned meanwhile: create it again.
                Err(e) if is_not_found(&e) && attempt < 3 => attempt += 1,
                Err(e) => return Err(e.into()),
            }
        };
        if let Some(dest) = linked {
            dest.sync()?;
            let _ = cas_file.set_modified(std::time::SystemTime::now());
            match src_dir.unlink(src) {
                Err(e) if !is_not_found(&e) => {
                    tracing::warn!(error = %e, "dedup: staged copy not removed")
                }
                _ => {}
            }
            return Ok(len);
        }
    }
    if let Some(f) = sync {
        f.sync_all()?;
    }
    st.commit_file_blocking(src_dir, src, rel)?;
    if let Err(e) = add(st, rel, sha256) {
        tracing::warn!(path = %rel, error = %e, "dedup: not added to the content-addressed store");
    }
    Ok(0)
}

/// What a sweep found: entries removed (their last other name had gone), and the bytes the
/// remaining entries save now (for each, its length times its names beyond the first).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Swept {
    pub removed: u64,
    pub saved_bytes: u64,
}

/// Removes the CAS entries no stored name shares any more (link count 1). Blocking; one
/// `fstat` per entry.
pub fn sweep_blocking(root: &Dir) -> io::Result<Swept> {
    use std::os::unix::fs::MetadataExt;
    let mut out = Swept::default();
    let cas = match root.open_dir(CAS_DIR) {
        Ok(d) => d,
        Err(e) if is_not_found(&e) => return Ok(out),
        Err(e) => return Err(e),
    };
    for (bucket, kind) in cas.entries()? {
        if kind != Kind::Dir {
            continue;
        }
        let dir = match cas.open_child_dir(&super::dirfd::os_cstr(&bucket)?) {
            Ok(d) => d,
            Err(e) if is_not_found(&e) => continue,
            Err(e) => return Err(e),
        };
        let mut removed_here = false;
        for (name, kind) in dir.entries()? {
            if kind != Kind::File {
                continue;
            }
            let name = super::dirfd::os_cstr(&name)?;
            let Ok(f) = dir.open_file(&name, libc::O_RDONLY | libc::O_NONBLOCK, 0) else {
                continue;
            };
            let md = f.metadata()?;
            if md.nlink() <= 1 {
                match dir.unlink(&name) {
                    Ok(()) => {
                        out.removed += 1;
                        removed_here = true;
                    }
                    Err(e) if is_not_found(&e) => {}
                    Err(e) => return Err(e),
                }
            } else {
                out.saved_bytes += md.len().saturating_mul(md.nlink().saturating_sub(2));
            }
        }
        if removed_here {
            dir.sync()?;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    fn sha(b: &[u8]) -> [u8; 32] {
        use sha2::Digest;
        sha2::Sha256::digest(b).into()
    }

    fn stage(st: &FsStorage, rel: &Key, data: &[u8]) -> (super::super::fs::TempFile, File) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let (t, f) = rt.block_on(st.create_temp(rel)).unwrap().unwrap();
        super::super::fs::write_at(&f, data, 0).unwrap();
        (t, f)
    }

    fn commit(st: &FsStorage, rel: &str, data: &[u8]) -> Result<u64, CommitError> {
        let rel = Key::parse(rel).unwrap();
        let (t, f) = stage(st, &rel, data);
        let (dir, tmp) = t.location();
        let r = commit_blocking(st, dir, tmp, Some(&f), &rel, &sha(data), data.len() as u64);
        if r.is_ok() {
            t.forget();
        }
        r
    }

    #[test]
    fn same_content_shares_one_inode_and_the_sweep_frees_it() {
        let t = tempfile::tempdir().unwrap();
        let st = FsStorage::open(t.path()).unwrap();
        assert_eq!(commit(&st, "a/one.bin", b"same bytes").unwrap(), 0);
        // Staged before the name was taken (a begin refuses a taken name), committed after.
        let two = Key::parse("b/two.bin").unwrap();
        let (late, late_file) = stage(&st, &two, b"same bytes");
        assert_eq!(commit(&st, "b/two.bin", b"same bytes").unwrap(), 10);
        let (dir, tmp) = late.location();
        assert!(matches!(
            commit_blocking(
                &st,
                dir,
                tmp,
                Some(&late_file),
                &two,
                &sha(b"same bytes"),
                10
            ),
            Err(CommitError::Exists)
        ));
        drop(late);
        // Same basename, other content: its own copy.
        assert_eq!(commit(&st, "c/one.bin", b"other").unwrap(), 0);
        let ino = |p: &str| std::fs::metadata(t.path().join(p)).unwrap().ino();
        assert_eq!(ino("a/one.bin"), ino("b/two.bin"));
        assert_ne!(ino("a/one.bin"), ino("c/one.bin"));
        // No temporary file is left beside either name.
        assert_eq!(std::fs::read_dir(t.path().join("b")).unwrap().count(), 1);
        let s = sweep_blocking(st.root_dir()).unwrap();
        assert_eq!(
            s,
            Swept {
                removed: 0,
                saved_bytes: 10
            }
        );
        std::fs::remove_file(t.path().join("a/one.bin")).unwrap();
        std::fs::remove_file(t.path().join("b/two.bin")).unwrap();
        let s = sweep_blocking(st.root_dir()).unwrap();
        assert_eq!(
            s,
            Swept {
                removed: 1,
                saved_bytes: 0
            }
        );
        let (bucket, name) = entry_of(&sha(b"same bytes"));
        assert!(!t.path().join(CAS_DIR).join(bucket).join(name).exists());
        // Once freed, the same content is stored anew.
        assert_eq!(commit(&st, "d/three.bin", b"same bytes").unwrap(), 0);
    }

    /// Deleting through the store frees the entry with the last name (by the file's tag,
    /// no sweep); the earlier name's time becomes the latest upload's.
    #[test]
    fn the_store_delete_frees_the_entry_with_the_last_name() {
        use crate::storage::store::{block_on, Store};
        let t = tempfile::tempdir().unwrap();
        let st = FsStorage::open(t.path()).unwrap();
        assert_eq!(commit(&st, "x/a", b"content").unwrap(), 0);
        let old = std::time::SystemTime::now() - std::time::Duration::from_secs(3600);
        let a = t.path().join("x/a");
        File::options()
            .write(true)
            .open(&a)
            .unwrap()
            .set_modified(old)
            .unwrap();
        assert_eq!(commit(&st, "y/b", b"content").unwrap(), 7);
        let age = std::fs::metadata(&a)
            .unwrap()
            .modified()
            .unwrap()
            .elapsed()
            .unwrap();
        assert!(
            age.as_secs() < 60,
            "the shared time is the latest upload's: {age:?}"
        );
        let f = File::open(&a).unwrap();
        assert_eq!(
            tag_of(&f).as_deref(),
            Some(entry_of(&sha(b"content")).1.as_str())
        );
        let (bucket, name) = entry_of(&sha(b"content"));
        let entry = t.path().join(CAS_DIR).join(bucket).join(name);
        assert!(block_on(st.delete(&Key::parse("x/a").unwrap())).unwrap());
        assert!(entry.exists(), "y/b still shares it");
        assert!(block_on(st.delete(&Key::parse("y/b").unwrap())).unwrap());
        assert!(!entry.exists(), "the last name went: the entry too");
        assert_eq!(
            std::fs::metadata(entry.parent().unwrap()).unwrap().nlink(),
            2
        );
    }
}
