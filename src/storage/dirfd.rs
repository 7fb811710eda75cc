//! Directory handles that resolve names beneath themselves without ever following a
//! symbolic link.
//!
//! Every storage operation starts from the storage root's directory descriptor and walks
//! down relative to descriptors, so a symlink anywhere in a path - the last component or
//! a directory in the middle - can neither redirect a read or a write outside the root nor
//! make a directory be created elsewhere:
//!
//! 1. Opening a path uses `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)` (Linux 5.6+): one
//!    call, and the kernel refuses any symlink on the way.
//! 2. Where `openat2` is missing (`ENOSYS`; remembered) or refused by a sandbox (`EPERM`),
//!    the same walk is done one component at a time with `openat(O_NOFOLLOW | O_DIRECTORY)`.
//! 3. Directories are created one component at a time with `mkdirat` relative to the
//!    parent's descriptor (`mkdir` never follows a link; the directory is then opened with
//!    `O_NOFOLLOW`, so a link planted meanwhile is refused, not entered).
//! 4. Renames, unlinks, `stat`s and listings are `*at` calls on a directory descriptor with
//!    the `AT_SYMLINK_NOFOLLOW` sense.
//!
//! A symlink met as a path component is reported as `ELOOP` (both in step 1 and step 2),
//! which the core classifies as the client's path conflict; reads treat it as "not found".

use std::ffi::{CStr, CString, OsStr, OsString};
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

/// Set once the kernel said it has no `openat2`.
static NO_OPENAT2: AtomicBool = AtomicBool::new(false);

/// What a directory entry is, read without following links.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    Dir,
    File,
    Link,
    /// Sockets, FIFOs, devices.
    Other,
}

/// An open directory.
#[derive(Debug)]
pub struct Dir(OwnedFd);

pub fn cstr(name: &str) -> io::Result<CString> {
    CString::new(name).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in path"))
}

fn cvt(rc: libc::c_int) -> io::Result<libc::c_int> {
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

/// Retries a call interrupted by a signal.
fn retry<T>(mut f: impl FnMut() -> io::Result<T>) -> io::Result<T> {
    loop {
        match f() {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            r => return r,
        }
    }
}

fn errno_is(e: &io::Error, codes: &[libc::c_int]) -> bool {
    e.raw_os_error().is_some_and(|c| codes.contains(&c))
}

/// `openat(dir, name, flags | O_NOFOLLOW | O_CLOEXEC)`: one component, never a link.
fn openat_nofollow(dir: RawFd, name: &CStr, flags: libc::c_int, mode: u32) -> io::Result<OwnedFd> {
    let flags = flags | libc::O_NOFOLLOW | libc::O_CLOEXEC;
    // SAFETY: `name` is NUL-terminated; a successful call returns a descriptor we own.
    match retry(|| cvt(unsafe { libc::openat(dir, name.as_ptr(), flags, mode) })) {
        Ok(fd) => Ok(unsafe { OwnedFd::from_raw_fd(fd) }),
        // With O_DIRECTORY the kernel says ENOTDIR for a link; say ELOOP like openat2, so
        // a link is told apart from a file in the way.
        Err(e) if flags & libc::O_DIRECTORY != 0 && errno_is(&e, &[libc::ENOTDIR]) => {
            match lstat_kind(dir, name) {
                Ok(Some(Kind::Link)) => Err(io::Error::from_raw_os_error(libc::ELOOP)),
                _ => Err(e),
            }
        }
        Err(e) => Err(e),
    }
}

fn lstat_kind(dir: RawFd, name: &CStr) -> io::Result<Option<Kind>> {
    // SAFETY: `st` is written by the call; `name` is NUL-terminated.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::fstatat(dir, name.as_ptr(), &mut st, libc::AT_SYMLINK_NOFOLLOW) };
    match cvt(rc) {
        Ok(_) => Ok(Some(kind_of_mode(st.st_mode))),
        Err(e) if errno_is(&e, &[libc::ENOENT]) => Ok(None),
        Err(e) => Err(e),
    }
}

fn openat2(dir: RawFd, path: &CStr, flags: libc::c_int, mode: u32) -> io::Result<OwnedFd> {
    // SAFETY: `open_how` is plain data; all-zero is its documented default.
    let mut how: libc::open_how = unsafe { std::mem::zeroed() };
    how.flags = u64::try_from(flags | libc::O_CLOEXEC).unwrap_or(0);
    how.mode = if flags & libc::O_CREAT != 0 {
        u64::from(mode)
    } else {
        0
    };
    how.resolve = libc::RESOLVE_BENEATH | libc::RESOLVE_NO_SYMLINKS;
    let mut again = 0;
    loop {
        // SAFETY: `path` is NUL-terminated and `how` lives across the call; the size passed
        // is the struct's. A non-negative result is a descriptor we own.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_openat2,
                dir,
                path.as_ptr(),
                &how as *const libc::open_how,
                std::mem::size_of::<libc::open_how>(),
            )
        };
        if rc >= 0 {
            let fd = RawFd::try_from(rc).map_err(|_| io::Error::other("bad descriptor"))?;
            return Ok(unsafe { OwnedFd::from_raw_fd(fd) });
        }
        let e = io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::EINTR) => {}
            // A concurrent rename made the kernel unsure; bounded retries.
            Some(libc::EAGAIN) if again < 8 => again += 1,
            _ => return Err(e),
        }
    }
}

impl Dir {
    /// Opens an operator-given directory (the storage root; links allowed there only).
    pub fn open_path(path: &Path) -> io::Result<Dir> {
        let c = CString::new(path.as_os_str().as_bytes())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in path"))?;
        let flags = libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC;
        // SAFETY: `c` is NUL-terminated; a successful call returns a descriptor we own.
        let fd = retry(|| cvt(unsafe { libc::open(c.as_ptr(), flags) }))?;
        Ok(Dir(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    fn fd(&self) -> RawFd {
        self.0.as_raw_fd()
    }

    /// A second descriptor for this directory.
    pub fn try_clone(&self) -> io::Result<Dir> {
        Ok(Dir(self.0.try_clone()?))
    }

    /// Opens `rel` (`a/b/c`, already validated: no empty, `.` or `..` segment) beneath this
    /// directory with `flags`, following no link on the way (`ELOOP` if there is one).
    pub fn open_beneath(&self, rel: &str, flags: libc::c_int, mode: u32) -> io::Result<OwnedFd> {
        let c = cstr(rel)?;
        if !NO_OPENAT2.load(Ordering::Relaxed) {
            match openat2(self.fd(), &c, flags, mode) {
                Err(e) if errno_is(&e, &[libc::ENOSYS]) => {
                    NO_OPENAT2.store(true, Ordering::Relaxed)
                }
                Err(e) if errno_is(&e, &[libc::EPERM]) => {}
                r => return r,
            }
        }
        self.open_walk(rel, flags, mode)
    }

    /// Step 2 of the module doc: the same walk, one `openat(O_NOFOLLOW)` per component.
    pub fn open_walk(&self, rel: &str, flags: libc::c_int, mode: u32) -> io::Result<OwnedFd> {
        let (parents, last) = match rel.rsplit_once('/') {
            Some((p, l)) => (Some(p), l),
            None => (None, rel),
        };
        let mut cur: Option<Dir> = None;
        for seg in parents.into_iter().flat_map(|p| p.split('/')) {
            let at = cur.as_ref().map_or(self.fd(), Dir::fd);
            cur = Some(Dir(openat_nofollow(
                at,
                &cstr(seg)?,
                libc::O_RDONLY | libc::O_DIRECTORY,
                0,
            )?));
        }
        let at = cur.as_ref().map_or(self.fd(), Dir::fd);
        openat_nofollow(at, &cstr(last)?, flags, mode)
    }

    /// The directory `rel` beneath this one (`rel` empty: a new handle to this one).
    pub fn open_dir(&self, rel: &str) -> io::Result<Dir> {
        if rel.is_empty() {
            return self.try_clone();
        }
        self.open_beneath(rel, libc::O_RDONLY | libc::O_DIRECTORY, 0)
            .map(Dir)
    }

    /// The child directory `name` (one component), never through a link.
    pub fn open_child_dir(&self, name: &CStr) -> io::Result<Dir> {
        openat_nofollow(self.fd(), name, libc::O_RDONLY | libc::O_DIRECTORY, 0).map(Dir)
    }

    /// Opens (creating what is missing, mode 0755) the directory `rel` beneath this one.
    /// A link or a non-directory on the way is refused (`ELOOP` / `ENOTDIR`).
    pub fn create_dirs(&self, rel: &str) -> io::Result<Dir> {
        match self.open_dir(rel) {
            Err(e) if errno_is(&e, &[libc::ENOENT]) => {}
            r => return r,
        }
        let mut cur = self.try_clone()?;
        for seg in rel.split('/') {
            let name = cstr(seg)?;
            cur = match cur.open_child_dir(&name) {
                Err(e) if errno_is(&e, &[libc::ENOENT]) => {
                    // SAFETY: `name` is NUL-terminated; `cur` is an open directory.
                    match retry(|| cvt(unsafe { libc::mkdirat(cur.fd(), name.as_ptr(), 0o755) })) {
                        Err(e) if !errno_is(&e, &[libc::EEXIST]) => return Err(e),
                        _ => {}
                    }
                    cur.open_child_dir(&name)?
                }
                r => r?,
            };
        }
        Ok(cur)
    }

    /// Opens the file `name` in this directory (one component, never a link).
    pub fn open_file(&self, name: &CStr, flags: libc::c_int, mode: u32) -> io::Result<File> {
        openat_nofollow(self.fd(), name, flags, mode).map(File::from)
    }

    /// Creates a new file `name` here (`EEXIST` if anything, a link included, has the name).
    pub fn create_file(&self, name: &CStr, mode: u32) -> io::Result<File> {
        self.open_file(name, libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL, mode)
    }

    /// Removes the non-directory `name` here (a link itself, never its target).
    pub fn unlink(&self, name: &CStr) -> io::Result<()> {
        // SAFETY: `name` is NUL-terminated.
        retry(|| cvt(unsafe { libc::unlinkat(self.fd(), name.as_ptr(), 0) })).map(drop)
    }

    /// Removes the empty directory `name` here (`ENOTEMPTY` if anything is in it).
    pub fn remove_empty_dir(&self, name: &CStr) -> io::Result<()> {
        // SAFETY: `name` is NUL-terminated.
        retry(|| cvt(unsafe { libc::unlinkat(self.fd(), name.as_ptr(), libc::AT_REMOVEDIR) }))
            .map(drop)
    }

    /// `lstat` of `name` here: `None` when nothing has the name.
    pub fn kind_of(&self, name: &CStr) -> io::Result<Option<Kind>> {
        lstat_kind(self.fd(), name)
    }

    /// Moves `from` (here) to `to` in `dest` without replacing anything (`EEXIST`).
    pub fn rename_noreplace(&self, from: &CStr, dest: &Dir, to: &CStr) -> io::Result<()> {
        // SAFETY: both names are NUL-terminated; both descriptors are open directories.
        let rc = retry(|| {
            cvt(unsafe {
                libc::renameat2(
                    self.fd(),
                    from.as_ptr(),
                    dest.fd(),
                    to.as_ptr(),
                    libc::RENAME_NOREPLACE,
                )
            })
        });
        match rc {
            Err(e) if errno_is(&e, &[libc::EINVAL, libc::ENOSYS]) => {
                // A filesystem without RENAME_NOREPLACE: link() refuses to overwrite too,
                // and without AT_SYMLINK_FOLLOW it follows nothing.
                // SAFETY: as above.
                retry(|| {
                    cvt(unsafe {
                        libc::linkat(self.fd(), from.as_ptr(), dest.fd(), to.as_ptr(), 0)
                    })
                })?;
                self.unlink(from)
            }
            r => r.map(drop),
        }
    }

    /// A new name `to` in `dest` for the file `from` here (a hard link), never replacing
    /// anything (`EEXIST`) and never following a link (no `AT_SYMLINK_FOLLOW`).
    pub fn link_noreplace(&self, from: &CStr, dest: &Dir, to: &CStr) -> io::Result<()> {
        // SAFETY: both names are NUL-terminated; both descriptors are open directories.
        retry(|| cvt(unsafe { libc::linkat(self.fd(), from.as_ptr(), dest.fd(), to.as_ptr(), 0) }))
            .map(drop)
    }

    /// `fsync` of the directory (makes created, renamed and removed names durable).
    pub fn sync(&self) -> io::Result<()> {
        // SAFETY: plain call on a descriptor we own.
        retry(|| cvt(unsafe { libc::fsync(self.fd()) })).map(drop)
    }

    /// Free bytes for unprivileged writers on this directory's filesystem.
    pub fn available_bytes(&self) -> io::Result<u64> {
        // SAFETY: fstatvfs writes into the zeroed struct we own.
        let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
        cvt(unsafe { libc::fstatvfs(self.fd(), &mut st) })?;
        Ok((st.f_bavail as u64).saturating_mul(st.f_frsize as u64))
    }

    /// The names in this directory (not `.`/`..`) and what each is, links not followed.
    pub fn entries(&self) -> io::Result<Vec<(OsString, Kind)>> {
        // fdopendir takes ownership of its descriptor: give it a fresh open of "." (its own
        // read position, unlike a dup, so concurrent listings cannot disturb each other).
        let own = openat_nofollow(self.fd(), c".", libc::O_RDONLY | libc::O_DIRECTORY, 0)?;
        // SAFETY: on success the DIR stream owns `raw` (closed by closedir below); on
        // failure we still own it and close it via the OwnedFd.
        let raw = std::os::fd::IntoRawFd::into_raw_fd(own);
        let dirp = unsafe { libc::fdopendir(raw) };
        if dirp.is_null() {
            let e = io::Error::last_os_error();
            drop(unsafe { OwnedFd::from_raw_fd(raw) });
            return Err(e);
        }
        let mut out = Vec::new();
        let result = (|| {
            // SAFETY: `dirp` is a valid stream until closedir; each dirent is valid until the
            // next readdir on it, and we copy the name out before that.
            loop {
                unsafe { *libc::__errno_location() = 0 };
                let ent = unsafe { libc::readdir(dirp) };
                if ent.is_null() {
                    let e = io::Error::last_os_error();
                    return if e.raw_os_error() == Some(0) {
                        Ok(())
                    } else {
                        Err(e)
                    };
                }
                let name = unsafe { CStr::from_ptr((*ent).d_name.as_ptr()) };
                let bytes = name.to_bytes();
                if bytes == b"." || bytes == b".." {
                    continue;
                }
                let kind = match unsafe { (*ent).d_type } {
                    libc::DT_DIR => Kind::Dir,
                    libc::DT_REG => Kind::File,
                    libc::DT_LNK => Kind::Link,
                    libc::DT_UNKNOWN => match self.kind_of(name)? {
                        Some(k) => k,
                        None => continue,
                    },
                    _ => Kind::Other,
                };
                out.push((OsString::from_vec(bytes.to_vec()), kind));
            }
        })();
        // SAFETY: closes the stream and the descriptor it owns, once.
        unsafe { libc::closedir(dirp) };
        result.map(|()| out)
    }
}

fn kind_of_mode(mode: libc::mode_t) -> Kind {
    match mode & libc::S_IFMT {
        libc::S_IFDIR => Kind::Dir,
        libc::S_IFREG => Kind::File,
        libc::S_IFLNK => Kind::Link,
        _ => Kind::Other,
    }
}

/// A name from a directory listing as a C string (listings never contain NUL).
pub fn os_cstr(name: &OsStr) -> io::Result<CString> {
    CString::new(name.as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in name"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn setup() -> (tempfile::TempDir, Dir) {
        let t = tempfile::tempdir().unwrap();
        let root = t.path().join("root");
        std::fs::create_dir_all(root.join("a/b")).unwrap();
        std::fs::write(root.join("a/b/f"), b"in").unwrap();
        std::fs::create_dir_all(t.path().join("out")).unwrap();
        std::fs::write(t.path().join("out/f"), b"out").unwrap();
        symlink(t.path().join("out"), root.join("a/link")).unwrap();
        let d = Dir::open_path(&root).unwrap();
        (t, d)
    }

    /// Both resolution strategies refuse a link anywhere with ELOOP and agree otherwise.
    #[test]
    fn openat2_and_the_component_walk_refuse_links_alike() {
        let (_t, d) = setup();
        type Open = fn(&Dir, &str, libc::c_int, u32) -> io::Result<OwnedFd>;
        for open in [Dir::open_beneath as Open, Dir::open_walk as Open] {
            assert!(open(&d, "a/b/f", libc::O_RDONLY, 0).is_ok());
            for p in ["a/link/f", "a/link"] {
                let e = open(&d, p, libc::O_RDONLY, 0).unwrap_err();
                assert_eq!(e.raw_os_error(), Some(libc::ELOOP), "{p}");
            }
            let e = open(&d, "a/nope/f", libc::O_RDONLY, 0).unwrap_err();
            assert_eq!(e.raw_os_error(), Some(libc::ENOENT));
        }
    }

    #[test]
    fn create_dirs_never_goes_through_a_link() {
        let (t, d) = setup();
        let e = d.create_dirs("a/link/new").unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ELOOP));
        assert!(!t.path().join("out/new").exists());
        let made = d.create_dirs("a/x/y").unwrap();
        assert!(t.path().join("root/a/x/y").is_dir());
        made.create_file(&cstr("z").unwrap(), 0o600).unwrap();
        assert!(t.path().join("root/a/x/y/z").is_file());
    }

    #[test]
    fn entries_report_links_as_links() {
        let (_t, d) = setup();
        let a = d.open_dir("a").unwrap();
        let mut e = a.entries().unwrap();
        e.sort();
        assert_eq!(
            e,
            vec![("b".into(), Kind::Dir), ("link".into(), Kind::Link)]
        );
        // Listing twice gives the same (each listing has its own read position).
        assert_eq!(a.entries().unwrap().len(), 2);
    }
}
