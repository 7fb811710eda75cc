//! Tests of the filesystem backend's I/O placement: small downloads opened and read on the
//! runtime thread (`[performance] inline_small_reads`), and write-back started during an
//! upload ([`super::WRITEBACK_EVERY`]).

use super::*;
use std::time::Duration;

fn key(s: &str) -> Key {
    Key::parse(s).unwrap()
}

/// With the blocking pool's only thread taken, an inline open of a small file still
/// completes (open, fstat and read on the runtime thread), while the same open with
/// `inline_small_reads` off waits for the pool until the thread comes free.
#[test]
fn inline_small_reads_need_no_blocking_thread() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .max_blocking_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let t = tempfile::tempdir().unwrap();
    std::fs::write(t.path().join("s.bin"), b"small file").unwrap();
    let mut st = FsStorage::open(t.path()).unwrap();
    let (release, held) = std::sync::mpsc::channel::<()>();
    rt.block_on(async {
        let (started_tx, started) = tokio::sync::oneshot::channel();
        let blocker = tokio::task::spawn_blocking(move || {
            let _ = started_tx.send(());
            let _ = held.recv_timeout(Duration::from_secs(20));
        });
        started.await.unwrap();

        let obj = tokio::time::timeout(Duration::from_secs(5), st.open(&key("s.bin")))
            .await
            .expect("an inline open must not wait for the blocking pool")
            .unwrap()
            .unwrap();
        assert_eq!(obj.read_at(0, 100).await.unwrap(), &b"small file"[..]);
        assert!(st.open(&key("none.bin")).await.unwrap().is_none());

        st.set_inline_small_reads(false);
        let pooled = tokio::spawn(st.open(&key("s.bin")));
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(!pooled.is_finished(), "off: the open waits for the pool");
        release.send(()).unwrap();
        let obj = tokio::time::timeout(Duration::from_secs(5), pooled)
            .await
            .unwrap()
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(obj.read_at(0, 100).await.unwrap(), &b"small file"[..]);
        blocker.await.unwrap();
    });
}

/// `cachestat(2)` (Linux 6.5): the number of dirty pages of `file`, or `None` where the
/// kernel lacks it.
fn dirty_pages(file: &File) -> Option<u64> {
    #[repr(C)]
    struct Range {
        off: u64,
        len: u64,
    }
    #[repr(C)]
    #[derive(Default)]
    struct Stat {
        cache: u64,
        dirty: u64,
        writeback: u64,
        evicted: u64,
        recently_evicted: u64,
    }
    const SYS_CACHESTAT: libc::c_long = 451;
    let range = Range { off: 0, len: 0 };
    let mut stat = Stat::default();
    // SAFETY: a valid descriptor and pointers to live structs of the kernel's layout.
    let r = unsafe {
        libc::syscall(
            SYS_CACHESTAT,
            file.as_raw_fd(),
            &range as *const Range,
            &mut stat as *mut Stat,
            0u32,
        )
    };
    (r == 0).then_some(stat.dirty)
}

/// Writing a file through the sink past [`WRITEBACK_EVERY`] bytes leaves (almost) none of
/// its pages dirty: their write-out has started before any sync, so the commit's
/// `fdatasync` finds little to do. (Without it, the pages stay dirty for the kernel's
/// 30 s expiry.) The content is intact.
#[test]
fn writes_start_write_back_every_few_mib() {
    let t = tempfile::tempdir().unwrap();
    let path = t.path().join("w.bin");
    let file = std::fs::OpenOptions::new()
        .create_new(true)
        .read(true)
        .write(true)
        .open(&path)
        .unwrap();
    let probe = file.try_clone().unwrap();
    let Some(before) = dirty_pages(&probe) else {
        eprintln!("SKIPPED: cachestat(2) not available on this kernel");
        return;
    };
    assert_eq!(before, 0);
    let sink = Arc::new(FsSink::new(file));
    let chunk = vec![0x5au8; 1 << 20];
    let chunks = WRITEBACK_EVERY / chunk.len() as u64;
    for i in 0..chunks {
        BlockingSink::write_at(&*sink, i * chunk.len() as u64, &chunk).unwrap();
    }
    let pages = WRITEBACK_EVERY / 4096;
    let dirty = dirty_pages(&probe).unwrap();
    if dirty == pages && std::fs::metadata(&path).is_ok() {
        // tmpfs and the like keep pages "dirty" in memory with nothing to write them to.
        let mut fs: libc::statfs = unsafe { std::mem::zeroed() };
        // SAFETY: a valid descriptor and a zeroed struct of the kernel's layout.
        unsafe { libc::fstatfs(probe.as_raw_fd(), &mut fs) };
        if fs.f_type == libc::TMPFS_MAGIC {
            eprintln!("SKIPPED: {} is on tmpfs (no write-back)", path.display());
            return;
        }
    }
    assert!(
        dirty < pages / 8,
        "{dirty} of {pages} pages still dirty after {WRITEBACK_EVERY} bytes written"
    );
    let back = std::fs::read(&path).unwrap();
    assert_eq!(back.len() as u64, WRITEBACK_EVERY);
    assert!(back.iter().all(|&b| b == 0x5a));
}
