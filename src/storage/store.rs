//! The storage contract: what the core needs from anything that stores files.
//!
//! - [`Store::stat`] / [`Store::open`]: length, modification time and ETag material of an
//!   object; an [`Object`] handle reads byte ranges of exactly that object (bounded reads,
//!   the caller picks the size of each; [`read_range`] turns a range into a stream).
//! - [`Store::begin`]: a [`Staged`] write. Bytes go through its [`Sink`]; nothing is visible
//!   under the key before [`Staged::commit`], which never overwrites (an existing key is
//!   [`StoreError::Exists`]); [`Staged::abort`] (or dropping it) leaves nothing behind.
//! - [`Store::delete`], [`Store::list`] (paged: at most `limit` keys after `after`), for
//!   expiry and recovery.
//! - [`Store::capabilities`]: optional abilities are declared, never guessed
//!   ([`Capabilities`]).
//!
//! Errors are [`StoreError`] kinds; a backend classifies its own failures (errno for the
//! filesystem: [`StoreError::from`] on an `io::Error`), so callers map kinds, not errnos.
//!
//! Why boxed futures: the core holds an `Arc<dyn Store>` (the backend is chosen at start-up),
//! and `async fn` in traits is not dyn-compatible. Every method returns a `'static`
//! [`BoxFuture`] (handles are cloned into it), so the caller may spawn it: the streaming
//! engine overlaps the write of one buffer with the filling of the next. One allocation per
//! call is noise next to a write of a buffer (64 KiB and up).
//!
//! An object store fits: `begin` starts a multipart upload (or buffers a small object),
//! [`Sink::write`] at increasing offsets feeds parts of at least
//! [`Capabilities::min_part_size`], `commit` completes with a create-only condition
//! (`If-None-Match: *`), `abort` aborts the upload; `read_at` is a ranged `GET` pinned to the
//! object's ETag.

use super::key::Key;
use bytes::Bytes;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::time::SystemTime;

/// A boxed, sendable future (the contract's methods are dyn-compatible).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;
/// A stream of bytes read from a store.
pub type ByteStream = Pin<Box<dyn futures_util::Stream<Item = Result<Bytes, StoreError>> + Send>>;
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// What went wrong, by kind (the core maps kinds to responses).
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// No object under the key (or it is not a regular file).
    #[error("not found")]
    NotFound,
    /// The key is taken (a commit never overwrites).
    #[error("destination exists")]
    Exists,
    /// The key collides with what is stored: a prefix of it is an object, it names a
    /// "directory", or a link is in the way. The request's mistake, never a backend failure.
    #[error("path conflict: {0}")]
    PathConflict(io::Error),
    /// The backend is full (or over quota).
    #[error("no space: {0}")]
    NoSpace(io::Error),
    /// A failure worth retrying (interrupted, timed out, busy).
    #[error("transient: {0}")]
    Transient(io::Error),
    /// Anything else.
    #[error(transparent)]
    Other(io::Error),
}

impl StoreError {
    pub fn is_transient(&self) -> bool {
        matches!(self, StoreError::Transient(_))
    }

    /// Whether the error says the backend is failing (as opposed to the request, a taken
    /// key or a full disk): what a circuit breaker counts.
    pub fn is_backend_failure(&self) -> bool {
        match self {
            StoreError::NotFound
            | StoreError::Exists
            | StoreError::PathConflict(_)
            | StoreError::NoSpace(_) => false,
            StoreError::Transient(_) => true,
            StoreError::Other(e) => is_backend_failure(e),
        }
    }

    /// The underlying I/O error, for logs (a kind without one gets a description).
    pub fn into_io(self) -> io::Error {
        match self {
            StoreError::NotFound => io::Error::from(io::ErrorKind::NotFound),
            StoreError::Exists => io::Error::from(io::ErrorKind::AlreadyExists),
            StoreError::PathConflict(e)
            | StoreError::NoSpace(e)
            | StoreError::Transient(e)
            | StoreError::Other(e) => e,
        }
    }
}

/// Whether an I/O error from a filesystem says the path collides with what is stored (a
/// component is a file: `ENOTDIR`; the target is a directory: `EISDIR` or `EEXIST`; a
/// symlinked component refused: `ELOOP`).
pub fn is_path_conflict(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::ENOTDIR) | Some(libc::EISDIR) | Some(libc::EEXIST) | Some(libc::ELOOP)
    )
}

/// Whether an I/O error from a filesystem says the backend is failing (not: missing, taken,
/// full, or a path conflict).
pub fn is_backend_failure(e: &io::Error) -> bool {
    !matches!(
        e.kind(),
        io::ErrorKind::NotFound | io::ErrorKind::AlreadyExists
    ) && !matches!(e.raw_os_error(), Some(libc::ENOSPC) | Some(libc::EDQUOT))
        && !is_path_conflict(e)
}

/// Whether an I/O error from a filesystem is worth retrying.
pub fn is_transient(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::Interrupted | io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    ) || e.raw_os_error() == Some(libc::EBUSY)
}

/// The filesystem classification (errno). An `ENOENT` stays [`StoreError::Other`]: where a
/// missing object is an answer, the backend says [`StoreError::NotFound`] itself.
impl From<io::Error> for StoreError {
    fn from(e: io::Error) -> StoreError {
        if matches!(e.raw_os_error(), Some(libc::ENOSPC) | Some(libc::EDQUOT)) {
            StoreError::NoSpace(e)
        } else if is_path_conflict(&e) {
            StoreError::PathConflict(e)
        } else if is_transient(&e) {
            StoreError::Transient(e)
        } else {
            StoreError::Other(e)
        }
    }
}

/// What a download needs to know about a stored object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ObjectMeta {
    pub len: u64,
    pub modified: SystemTime,
    /// Changes whenever the object could have (with `len`, the ETag): the modification
    /// time in nanoseconds on a filesystem, a version or hash on other backends.
    pub version: u128,
}

/// A key and its metadata, as listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    pub key: Key,
    pub meta: ObjectMeta,
}

/// Optional abilities, declared by the backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capabilities {
    /// [`Sink::write`] accepts any offset (pwrite). Without it, writes must be sequential.
    pub random_write: bool,
    /// Server-side concatenation of part data (file copy; `UploadPartCopy`).
    pub concat: bool,
    /// [`Store::free_space`] answers.
    pub free_space: bool,
    /// Smallest part a multipart write accepts (the last may be smaller); 0 = any.
    pub min_part_size: u64,
    /// Uploads of identical content can share one stored copy
    /// ([`Staged::commit_dedup`], [`PartStore::complete_dedup`]).
    pub dedup: bool,
}

/// Where bytes go: positional writes and a durability barrier. Cloned into spawned writes.
pub trait Sink: Send + Sync {
    /// Writes all of `data` at `offset` (sequential offsets only, unless
    /// [`Capabilities::random_write`]).
    fn write(&self, offset: u64, data: Bytes) -> BoxFuture<'static, Result<()>>;
    /// Makes everything written so far durable.
    fn sync(&self) -> BoxFuture<'static, Result<()>>;
    /// The same sink as a synchronous positional writer, where it is local (a file): a
    /// caller already on the blocking pool then writes without another hop (the streaming
    /// engine hashes and writes a buffer in one job). `None`: use [`Sink::write`].
    fn blocking(self: Arc<Self>) -> Option<Arc<dyn BlockingSink>> {
        None
    }
}

/// A sink's synchronous side (see [`Sink::blocking`]): call it from the blocking pool only.
pub trait BlockingSink: Send + Sync {
    /// Writes all of `data` at `offset`.
    fn write_at(&self, offset: u64, data: &[u8]) -> Result<()>;
}

/// A write in progress under a key: invisible until committed, removed unless committed.
pub trait Staged: Send + Sync {
    /// The handle that receives the bytes (write through it, drop it, then commit).
    fn sink(&self) -> Arc<dyn Sink>;
    /// Makes the object durable and visible under its key, never overwriting:
    /// [`StoreError::Exists`] when the key is taken (the staged bytes are then discarded).
    fn commit(self: Box<Self>) -> BoxFuture<'static, Result<()>>;
    /// Discards the staged bytes.
    fn abort(self: Box<Self>) -> BoxFuture<'static, ()>;
    /// [`Staged::commit`], sharing the stored copy of identical content where the backend
    /// can ([`Capabilities::dedup`]): `sha256` and `len` are the staged bytes' digest and
    /// length. Returns the bytes saved (0: stored as a copy of its own, the default).
    fn commit_dedup(
        self: Box<Self>,
        sha256: [u8; 32],
        len: u64,
    ) -> BoxFuture<'static, Result<u64>> {
        let _ = (sha256, len);
        let commit = self.commit();
        Box::pin(async move { commit.await.map(|()| 0) })
    }
}

/// An opened object: its metadata and reads of exactly this object.
pub trait Object: Send + Sync {
    fn meta(&self) -> ObjectMeta;
    /// Up to `len` bytes at `offset`; short only at the end of the object.
    fn read_at(&self, offset: u64, len: usize) -> BoxFuture<'static, Result<Bytes>>;
}

/// Everything the core stores goes through this (see the module doc).
pub trait Store: Send + Sync + std::fmt::Debug {
    fn capabilities(&self) -> Capabilities;
    /// The object under `key`, if there is one.
    fn stat(&self, key: &Key) -> BoxFuture<'static, Result<Option<ObjectMeta>>>;
    /// Whether anything occupies `key` (an object, or a prefix of other keys): such a key
    /// cannot be written. A conflicting path is [`StoreError::PathConflict`].
    fn exists(&self, key: &Key) -> BoxFuture<'static, Result<bool>>;
    /// Opens the object under `key` for reading.
    fn open(&self, key: &Key) -> BoxFuture<'static, Result<Option<Arc<dyn Object>>>>;
    /// Starts a staged write of `key` (`len` is a hint: the expected length, if known);
    /// [`StoreError::Exists`] when something occupies `key` already (as [`Store::exists`]
    /// says), so a caller learns it before sending any data. The commit checks again.
    fn begin(&self, key: &Key, len: Option<u64>) -> BoxFuture<'static, Result<Box<dyn Staged>>>;
    /// Removes the object under `key`; `false` if there was none. On a filesystem the
    /// directories this leaves empty are removed too (expiry leaves no empty directories).
    fn delete(&self, key: &Key) -> BoxFuture<'static, Result<bool>>;
    /// Up to `limit` objects whose keys start with `prefix` (a key prefix; directories on a
    /// filesystem), in key order, after `after` (the last key of the previous page).
    fn list(
        &self,
        prefix: &str,
        after: Option<&Key>,
        limit: usize,
    ) -> BoxFuture<'static, Result<Vec<Listed>>>;
    /// Free bytes, where [`Capabilities::free_space`] (else `None`).
    fn free_space(&self) -> BoxFuture<'static, Result<Option<u64>>>;
}

/// `len` bytes of `object` from `offset` as a stream of reads of at most `chunk` bytes
/// (memory: one chunk at a time). An object that ends early is an error.
pub fn read_range(object: Arc<dyn Object>, offset: u64, len: u64, chunk: usize) -> ByteStream {
    let chunk = chunk.max(1);
    let end = offset.saturating_add(len);
    Box::pin(futures_util::stream::unfold(
        (object, offset, false),
        move |(object, pos, failed)| async move {
            if pos >= end || failed {
                return None;
            }
            let want = usize::try_from((end - pos).min(chunk as u64)).unwrap_or(chunk);
            match object.read_at(pos, want).await {
                Ok(b) if b.is_empty() => Some((
                    Err(StoreError::Other(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "object shorter than its length",
                    ))),
                    (object, pos, true),
                )),
                Ok(b) => {
                    let next = pos + b.len() as u64;
                    Some((Ok(b), (object, next, false)))
                }
                Err(e) => Some((Err(e), (object, pos, true))),
            }
        },
    ))
}

/// The bytes of resumable uploads in progress, one data object per session id (ids are the
/// engine's: 32 hex digits). Writes land at a placement (an offset) through the
/// [`Sink`] of [`PartStore::open_sink`]; [`PartStore::complete`] moves the data to its final
/// key without overwriting; [`PartStore::abort`] removes it; [`PartStore::list`] enumerates
/// (start-up recovery).
///
/// On a filesystem: one file per session written with `pwrite`, completion a truncate +
/// fsync + no-overwrite rename. On an object store (`s3::parts`): appends go to a multipart
/// upload per session begun for its target ([`PartStore::create_at`]), in parts of at least
/// [`Capabilities::min_part_size`] and of one size, with the tail and the part ETags in a state
/// object in the bucket; HFS chunks ([`PartStore::open_chunk_sink`]) are objects of their
/// own; complete = complete-multipart-upload (or a put) with a create-only condition.
pub trait PartStore: Send + Sync + std::fmt::Debug {
    fn capabilities(&self) -> Capabilities;
    /// Creates the empty data of a new session (durably).
    fn create(&self, id: &str) -> BoxFuture<'static, Result<()>>;
    /// Where the session's bytes are written (at offsets; see [`Capabilities::random_write`]).
    fn open_sink(&self, id: &str) -> BoxFuture<'static, Result<Arc<dyn Sink>>>;
    /// [`PartStore::create`] for a session that completes into `target` (an object store
    /// begins its multipart upload for that key). The default ignores the target.
    fn create_at(&self, id: &str, target: &Key) -> BoxFuture<'static, Result<()>> {
        let _ = target;
        self.create(id)
    }
    /// Where one chunk of `len` bytes at `offset` is written (HFS: chunks arrive in any
    /// order, concurrently, on any instance). Counts only once it is whole and synced. The
    /// default is [`PartStore::open_sink`] (random writes).
    fn open_chunk_sink(
        &self,
        id: &str,
        offset: u64,
        len: u64,
    ) -> BoxFuture<'static, Result<Arc<dyn Sink>>> {
        let _ = (offset, len);
        self.open_sink(id)
    }
    /// The session's `len` bytes are complete and from now on only read (a tus partial
    /// upload, the source of a later concatenation): an object store moves them into an
    /// object of their own that [`PartStore::read_at`] and [`PartStore::concat`] can read.
    /// Idempotent. The default does nothing (a file reads back as it is).
    fn seal(&self, id: &str, len: u64) -> BoxFuture<'static, Result<()>> {
        let _ = (id, len);
        Box::pin(std::future::ready(Ok(())))
    }
    /// Whether the session has data.
    fn exists(&self, id: &str) -> BoxFuture<'static, Result<bool>>;
    /// Removes the session's data (none is fine).
    fn abort(&self, id: &str) -> BoxFuture<'static, Result<()>>;
    /// Appends the first `len` bytes of each source session, in order, to `dest`
    /// (where [`Capabilities::concat`]).
    fn concat(&self, dest: &str, sources: Vec<(String, u64)>) -> BoxFuture<'static, Result<()>>;
    /// `sha` fed with bytes `[from, to)` of the session's data.
    fn hash_range(
        &self,
        id: &str,
        sha: sha2::Sha256,
        from: u64,
        to: u64,
    ) -> BoxFuture<'static, Result<sha2::Sha256>>;
    /// Moves the first `len` bytes to `key`, durably and never overwriting
    /// ([`StoreError::Exists`]).
    fn complete(&self, id: &str, len: u64, key: &Key) -> BoxFuture<'static, Result<()>>;
    /// [`PartStore::complete`], sharing the stored copy of identical content where the
    /// backend can ([`Capabilities::dedup`]); returns the bytes saved (0 by default).
    fn complete_dedup(
        &self,
        id: &str,
        len: u64,
        key: &Key,
        sha256: [u8; 32],
    ) -> BoxFuture<'static, Result<u64>> {
        let _ = sha256;
        let complete = self.complete(id, len, key);
        Box::pin(async move { complete.await.map(|()| 0) })
    }
    /// Whether `key` cannot receive a completed upload (taken, or below a link).
    fn target_taken(&self, key: &Key) -> BoxFuture<'static, Result<bool>>;
    /// Ids of every session with data.
    fn list(&self) -> BoxFuture<'static, Result<Vec<String>>>;
    /// Up to `len` bytes of the session's data at `offset` (short only at its end): the
    /// assembled upload read back before completion (virus scanning). A backend that
    /// cannot read its parts back answers an error (scanning then fails, by its policy).
    fn read_at(&self, id: &str, offset: u64, len: usize) -> BoxFuture<'static, Result<Bytes>> {
        let _ = (id, offset, len);
        Box::pin(async {
            Err(StoreError::Other(io::Error::new(
                io::ErrorKind::Unsupported,
                "this part store cannot read uploads back",
            )))
        })
    }
}

std::thread_local! {
    static IN_BLOCK_ON: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Whether this thread is inside [`block_on`]: a backend's blocking work then runs inline
/// (the caller is a blocking thread already) instead of waiting for another thread of a
/// pool that may be full - with the pool's only thread running the caller, it would wait
/// forever.
pub fn in_block_on() -> bool {
    IN_BLOCK_ON.with(|c| c.get())
}

/// Runs `fut` to completion on this thread, parking it between polls: for start-up code
/// that is itself blocking (recovery, run on the blocking pool) and must call the contract.
/// Never call it where blocking the thread is wrong (an async task's own thread).
pub fn block_on<F: Future>(fut: F) -> F::Output {
    struct Reset(bool);
    impl Drop for Reset {
        fn drop(&mut self) {
            IN_BLOCK_ON.with(|c| c.set(self.0));
        }
    }
    let _reset = Reset(IN_BLOCK_ON.with(|c| c.replace(true)));
    struct Unpark(std::thread::Thread);
    impl std::task::Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = std::task::Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut cx = std::task::Context::from_waker(&waker);
    let mut fut = std::pin::pin!(fut);
    loop {
        if let std::task::Poll::Ready(v) = fut.as_mut().poll(&mut cx) {
            return v;
        }
        std::thread::park();
    }
}
