//! Real-filesystem helpers for tests that need root: a size-limited tmpfs that can be
//! filled (a full disk, for real) and a fanotify watch that reports which thread deletes
//! files in a directory. Without root, [`Tmpfs::mount`] says SKIPPED and returns `None`,
//! unless XFERD_REQUIRE_ROOT=1, XFERD_REQUIRE_SERVICES=1 or CI is set, where it fails.

// Each test binary uses a part of these helpers.
#![allow(dead_code)]

use std::process::Command;

/// A tmpfs of `size` bytes mounted on a temporary directory; unmounted on drop.
pub struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    pub fn mount(size: u64) -> Option<Tmpfs> {
        let dir = tempfile::tempdir().expect("tempdir");
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .stderr(std::process::Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        if !ok {
            let msg = "the full-disk test needs root to mount a tmpfs";
            let required = std::env::var("XFERD_REQUIRE_ROOT").is_ok_and(|v| v == "1")
                || std::env::var("XFERD_REQUIRE_SERVICES").is_ok_and(|v| v == "1")
                || std::env::var("CI").is_ok();
            assert!(!required, "{msg}");
            eprintln!("SKIPPED: {msg}");
            return None;
        }
        Some(Tmpfs { dir })
    }

    pub fn path(&self) -> &std::path::Path {
        self.dir.path()
    }

    /// Fills the filesystem, then frees `room` bytes of it.
    pub fn fill_leaving(&self, room: u64) {
        use std::io::Write;
        let path = self.path().join("filler");
        let mut f = std::fs::File::create(&path).unwrap();
        let block = vec![0xA5u8; 64 << 10];
        let mut written = 0u64;
        loop {
            match f.write(&block) {
                Ok(n) => written += n as u64,
                Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => break,
                Err(e) => panic!("filling the tmpfs: {e}"),
            }
        }
        f.set_len(written.saturating_sub(room)).unwrap();
        f.sync_all().unwrap();
    }

    pub fn unfill(&self) {
        std::fs::remove_file(self.path().join("filler")).unwrap();
    }

    /// Fills what is left with a second file (`filler2`), e.g. mid-upload; see
    /// [`Tmpfs::unfill_rest`].
    pub fn fill_rest(&self) {
        use std::io::Write;
        let mut f = std::fs::File::create(self.path().join("filler2")).unwrap();
        let block = vec![0x5Au8; 4 << 10];
        loop {
            match f.write(&block) {
                Ok(_) => {}
                Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => break,
                Err(e) => panic!("filling the tmpfs: {e}"),
            }
        }
    }

    pub fn unfill_rest(&self) {
        std::fs::remove_file(self.path().join("filler2")).unwrap();
    }

    /// Remounts read-only (`true`) or read-write (`false`), contents kept.
    pub fn remount(&self, read_only: bool) {
        let opt = if read_only {
            "remount,ro"
        } else {
            "remount,rw"
        };
        let ok = Command::new("mount")
            .args(["-o", opt])
            .arg(self.dir.path())
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        assert!(ok, "mount -o {opt} {}", self.dir.path().display());
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

/// Reports which thread deletes files in a directory (fanotify `FAN_DELETE` with thread
/// ids; needs root, like the tmpfs).
pub struct DeleteWatch {
    fd: std::os::fd::OwnedFd,
}

impl DeleteWatch {
    pub fn new(dir: &std::path::Path) -> DeleteWatch {
        use std::os::fd::FromRawFd;
        use std::os::unix::ffi::OsStrExt;
        let flags = libc::FAN_CLASS_NOTIF
            | libc::FAN_REPORT_TID
            | libc::FAN_REPORT_DFID_NAME
            | libc::FAN_NONBLOCK;
        // SAFETY: plain syscalls; the fd is owned below, the path is NUL-terminated.
        let fd = unsafe { libc::fanotify_init(flags, libc::O_RDONLY as u32) };
        assert!(
            fd >= 0,
            "fanotify_init: {}",
            std::io::Error::last_os_error()
        );
        let fd = unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) };
        let path = std::ffi::CString::new(dir.as_os_str().as_bytes()).unwrap();
        let r = unsafe {
            libc::fanotify_mark(
                std::os::fd::AsRawFd::as_raw_fd(&fd),
                libc::FAN_MARK_ADD,
                libc::FAN_DELETE,
                libc::AT_FDCWD,
                path.as_ptr(),
            )
        };
        assert_eq!(r, 0, "fanotify_mark: {}", std::io::Error::last_os_error());
        DeleteWatch { fd }
    }

    /// Thread ids of the deletions seen so far.
    pub fn deleters(&self) -> Vec<i32> {
        let mut out = Vec::new();
        let mut buf = vec![0u8; 64 << 10];
        loop {
            // SAFETY: reads into a buffer of the given length.
            let n = unsafe {
                libc::read(
                    std::os::fd::AsRawFd::as_raw_fd(&self.fd),
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                )
            };
            if n <= 0 {
                return out;
            }
            let mut at = 0usize;
            let meta = std::mem::size_of::<libc::fanotify_event_metadata>();
            while at + meta <= n as usize {
                // SAFETY: the kernel wrote whole events; read_unaligned copes with alignment.
                let e: libc::fanotify_event_metadata =
                    unsafe { std::ptr::read_unaligned(buf[at..].as_ptr().cast()) };
                if e.mask & libc::FAN_DELETE != 0 {
                    out.push(e.pid);
                }
                at += (e.event_len as usize).max(meta);
            }
        }
    }
}
