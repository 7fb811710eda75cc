//! Virus scanning before a file becomes visible (`[scan]`; HFS `[clamav]`).
//!
//! The core knows a scanner only through [`Scanner`] (the clamd client lives in
//! [`crate::scan`], outside the core, because it opens sockets) and its policy through
//! [`ScanPolicy`] (a plain struct the server fills from the configuration).
//!
//! 1. Single-shot uploads (`PUT`, form `POST /upload`): the staged sink is wrapped in a
//!    `Tee` that hands every buffer, in order, to a scan task while it is written; a
//!    write completes when both the sink and the scanner are done with the buffer. So no
//!    buffer outlives the streaming engine's two (memory stays what the upload's lease
//!    accounts), a slow scanner slows the upload instead of growing a queue, and no second
//!    read of the stored bytes is needed: this works the same for any [`Sink`] (an object
//!    store too). The verdict is awaited after the last byte and before the commit.
//! 2. Resumable uploads (tus, IETF, HFS chunks) arrive over many requests, in any order and
//!    across restarts, so they are scanned once, when complete and before the data moves to
//!    its target: the assembled bytes are read back through [`PartStore::read_at`].
//! 3. Verdicts: clean -> stored; infected -> [`CoreError::VirusFound`] (422 `virus_found`;
//!    the staged bytes or the session are removed, nothing is stored); scanner unreachable
//!    or failing -> with `fail_open` logged and stored, else [`CoreError::ScannerUnavailable`]
//!    (503 `scanner_unavailable`, `Retry-After`); larger than `max_size` (or of unknown
//!    size once it exceeds it) -> not scanned, logged, stored.
//!
//! Every outcome is reported to [`super::Telemetry::scan`] (`xferd_scans_total`).
//!
//! [`PartStore::read_at`]: crate::storage::store::PartStore::read_at

use super::error::CoreError;
use crate::storage::store::{BoxFuture, PartStore, Result as StoreResult, Sink};
use bytes::Bytes;
use std::sync::Arc;
use std::time::Duration;

/// Read size when a completed resumable upload is read back for scanning.
pub const READ_BACK_CHUNK: usize = 256 << 10;

/// What a scanner said about a stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Clean,
    /// The signature name the scanner reported.
    Infected(String),
}

/// The scanner could not give a verdict (unreachable, timed out, refused the stream).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("scanner failed: {0}")]
pub struct ScanFailure(pub String);

/// One scan in progress: bytes in order, then the verdict.
pub trait ScanStream: Send {
    fn feed(&mut self, data: Bytes) -> BoxFuture<'_, Result<(), ScanFailure>>;
    fn finish(self: Box<Self>) -> BoxFuture<'static, Result<Verdict, ScanFailure>>;
}

/// Something that scans streams of bytes (clamd's INSTREAM).
pub trait Scanner: Send + Sync + std::fmt::Debug {
    fn start(&self) -> BoxFuture<'static, Result<Box<dyn ScanStream>, ScanFailure>>;
}

/// The scanning policy (the server maps `[scan]` to it).
#[derive(Debug, Clone)]
pub struct ScanPolicy {
    /// Store (and log) when the scanner fails, instead of refusing with 503.
    pub fail_open: bool,
    /// Files larger than this are not scanned (keep it at or below clamd's
    /// `StreamMaxLength`, or clamd refuses the stream and the scan fails).
    pub max_size: u64,
    /// `Retry-After` of a 503 when failing closed.
    pub retry_after: Duration,
}

/// A scanner and its policy: what [`super::Core`] and the session engine hold.
#[derive(Debug, Clone)]
pub struct Scanning {
    pub scanner: Arc<dyn Scanner>,
    pub policy: ScanPolicy,
}

/// How a scan ended, as counted (`outcome` label of `xferd_scans_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Clean,
    Infected,
    Skipped,
    FailedOpen,
    FailedClosed,
}

impl Outcome {
    pub fn label(self) -> &'static str {
        match self {
            Outcome::Clean => "clean",
            Outcome::Infected => "infected",
            Outcome::Skipped => "skipped",
            Outcome::FailedOpen => "failed_open",
            Outcome::FailedClosed => "failed_closed",
        }
    }
    pub const ALL: [Outcome; 5] = [
        Outcome::Clean,
        Outcome::Infected,
        Outcome::Skipped,
        Outcome::FailedOpen,
        Outcome::FailedClosed,
    ];
}

/// A scan running beside an upload (see [`Scanning::tee`]).
pub struct Pending {
    tx: Option<Feed>,
    task: tokio::task::JoinHandle<Result<Verdict, ScanFailure>>,
    /// Bytes handed to the scanner (to skip a stream that outgrew `max_size`).
    fed: Arc<std::sync::atomic::AtomicU64>,
    scanning: Scanning,
}

/// Wraps `sink` for an upload of `size` bytes when scanning is on (see [`Scanning::tee`]);
/// otherwise returns it as it is.
pub fn tee(
    scanning: Option<&Arc<Scanning>>,
    sink: Arc<dyn Sink>,
    size: Option<u64>,
    telemetry: &dyn super::Telemetry,
) -> (Arc<dyn Sink>, Option<Pending>) {
    match scanning.and_then(|s| s.tee(sink.clone(), size, telemetry)) {
        Some((tee, pending)) => (tee, Some(pending)),
        None => (sink, None),
    }
}

/// Buffers on their way to the scan task, each with the signal that it is done with it.
type Feed = tokio::sync::mpsc::Sender<(Bytes, tokio::sync::oneshot::Sender<()>)>;

/// A [`Sink`] that writes through to `inner` and hands each buffer to a scan.
struct Tee {
    inner: Arc<dyn Sink>,
    tx: Feed,
    fed: Arc<std::sync::atomic::AtomicU64>,
    max_size: u64,
}

impl Sink for Tee {
    fn write(&self, offset: u64, data: Bytes) -> BoxFuture<'static, StoreResult<()>> {
        use std::sync::atomic::Ordering;
        let (tx, inner, fed, max) = (
            self.tx.clone(),
            self.inner.clone(),
            self.fed.clone(),
            self.max_size,
        );
        Box::pin(async move {
            let total = fed.fetch_add(data.len() as u64, Ordering::Relaxed) + data.len() as u64;
            // Past the limit the scan is skipped (see `Pending::verdict`): stop feeding.
            // A scanner that went away has its failure in its task; the write goes on.
            if total > max {
                return inner.write(offset, data).await;
            }
            let (done, scanned) = tokio::sync::oneshot::channel();
            if tx.send((data.clone(), done)).await.is_err() {
                return inner.write(offset, data).await;
            }
            // Both must let go of the buffer before it goes back to the pool. The scan
            // task's result says whether it failed; a dropped signal is fine here.
            let (written, _) = futures_util::future::join(inner.write(offset, data), scanned).await;
            written
        })
    }
    fn sync(&self) -> BoxFuture<'static, StoreResult<()>> {
        self.inner.sync()
    }
}

impl Scanning {
    /// Starts a scan beside an upload of `size` bytes (`None`: unknown) written to `sink`:
    /// the sink to write through instead, and the scan to ask for its verdict. `None`
    /// when the size is known to be over the limit (the skip is logged and counted here).
    pub fn tee(
        &self,
        sink: Arc<dyn Sink>,
        size: Option<u64>,
        telemetry: &dyn super::Telemetry,
    ) -> Option<(Arc<dyn Sink>, Pending)> {
        if let Some(size) = size.filter(|n| *n > self.policy.max_size) {
            tracing::warn!(
                size,
                max = self.policy.max_size,
                "not scanned: larger than scan.max_size"
            );
            telemetry.scan(Outcome::Skipped);
            return None;
        }
        let (tx, mut rx) =
            tokio::sync::mpsc::channel::<(Bytes, tokio::sync::oneshot::Sender<()>)>(1);
        let scanner = self.scanner.clone();
        let task = tokio::spawn(async move {
            let mut stream = scanner.start().await?;
            while let Some((b, done)) = rx.recv().await {
                let fed = stream.feed(b).await;
                let _ = done.send(());
                fed?;
            }
            stream.finish().await
        });
        let fed = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let tee = Tee {
            inner: sink,
            tx: tx.clone(),
            fed: fed.clone(),
            max_size: self.policy.max_size,
        };
        let pending = Pending {
            tx: Some(tx),
            task,
            fed,
            scanning: self.clone(),
        };
        Some((Arc::new(tee), pending))
    }

    /// The decision on a finished scan: `Ok` to store, or the error to answer with.
    /// `what` names the file in logs.
    pub fn decide(
        &self,
        result: Result<Verdict, ScanFailure>,
        what: &str,
        telemetry: &dyn super::Telemetry,
    ) -> Result<(), CoreError> {
        match result {
            Ok(Verdict::Clean) => {
                telemetry.scan(Outcome::Clean);
                Ok(())
            }
            Ok(Verdict::Infected(name)) => {
                tracing::warn!(path = what, signature = %name, "refused: virus found");
                telemetry.scan(Outcome::Infected);
                Err(CoreError::VirusFound(name))
            }
            Err(ScanFailure(why)) if self.policy.fail_open => {
                tracing::warn!(path = what, error = %why, "stored UNSCANNED: the scanner failed and scan.fail_open is set");
                telemetry.scan(Outcome::FailedOpen);
                Ok(())
            }
            Err(ScanFailure(why)) => {
                tracing::error!(path = what, error = %why, "refused: the scanner failed (scan.fail_open is off)");
                telemetry.scan(Outcome::FailedClosed);
                Err(CoreError::ScannerUnavailable(self.policy.retry_after))
            }
        }
    }

    /// Scans the first `len` bytes of the resumable upload `id`, read back from `parts`,
    /// and decides (see [`Scanning::decide`]).
    pub async fn scan_parts(
        &self,
        parts: &Arc<dyn PartStore>,
        id: &str,
        len: u64,
        what: &str,
        telemetry: &dyn super::Telemetry,
    ) -> Result<(), CoreError> {
        if len > self.policy.max_size {
            tracing::warn!(
                path = what,
                size = len,
                max = self.policy.max_size,
                "not scanned: larger than scan.max_size"
            );
            telemetry.scan(Outcome::Skipped);
            return Ok(());
        }
        let result = async {
            let mut stream = self.scanner.start().await?;
            let mut pos = 0u64;
            while pos < len {
                let want = usize::try_from((len - pos).min(READ_BACK_CHUNK as u64))
                    .unwrap_or(READ_BACK_CHUNK);
                let b = parts
                    .read_at(id, pos, want)
                    .await
                    .map_err(|e| ScanFailure(format!("reading the upload back: {e}")))?;
                if b.is_empty() {
                    return Err(ScanFailure("upload data shorter than its length".into()));
                }
                pos += b.len() as u64;
                stream.feed(b).await?;
            }
            stream.finish().await
        }
        .await;
        self.decide(result, what, telemetry)
    }
}

impl Pending {
    /// Ends the stream and waits for the verdict; decides with the policy.
    pub async fn verdict(
        mut self,
        what: &str,
        telemetry: &dyn super::Telemetry,
    ) -> Result<(), CoreError> {
        // The tee (and its sender) were dropped with the writer; this is the last sender.
        drop(self.tx.take());
        let fed = self.fed.load(std::sync::atomic::Ordering::Relaxed);
        let max = self.scanning.policy.max_size;
        if fed > max {
            self.task.abort();
            tracing::warn!(
                path = what,
                size = fed,
                max,
                "not scanned: larger than scan.max_size"
            );
            telemetry.scan(Outcome::Skipped);
            return Ok(());
        }
        let result = match (&mut self.task).await {
            Ok(r) => r,
            Err(e) => Err(ScanFailure(format!("scan task: {e}"))),
        };
        self.scanning.decide(result, what, telemetry)
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[cfg(test)]
mod tests {
    //! The tee and the policy over an in-process scanner (the clamd client and a real clamd
    //! are tested in `scan::clamd` and `tests/scan.rs`).
    use super::*;
    use crate::core::telemetry::Silent;
    use crate::storage::key::Key;
    use crate::storage::mem::MemStore;
    use crate::storage::store::Store;
    use std::sync::Mutex;

    /// Records what it is fed; "infected" when the bytes contain `BAD`.
    #[derive(Debug, Default)]
    struct Recorder(Arc<Mutex<Vec<u8>>>);
    struct RecStream(Arc<Mutex<Vec<u8>>>);

    impl ScanStream for RecStream {
        fn feed(&mut self, data: Bytes) -> BoxFuture<'_, Result<(), ScanFailure>> {
            self.0.lock().unwrap().extend_from_slice(&data);
            Box::pin(async { Ok(()) })
        }
        fn finish(self: Box<Self>) -> BoxFuture<'static, Result<Verdict, ScanFailure>> {
            let seen = self.0.lock().unwrap().clone();
            Box::pin(async move {
                Ok(if seen.windows(3).any(|w| w == b"BAD") {
                    Verdict::Infected("Test.Bad".into())
                } else {
                    Verdict::Clean
                })
            })
        }
    }

    impl Scanner for Recorder {
        fn start(&self) -> BoxFuture<'static, Result<Box<dyn ScanStream>, ScanFailure>> {
            let seen = self.0.clone();
            Box::pin(async move {
                seen.lock().unwrap().clear();
                Ok(Box::new(RecStream(seen)) as Box<dyn ScanStream>)
            })
        }
    }

    fn scanning(max_size: u64, fail_open: bool) -> (Scanning, Arc<Mutex<Vec<u8>>>) {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s = Scanning {
            scanner: Arc::new(Recorder(seen.clone())),
            policy: ScanPolicy {
                fail_open,
                max_size,
                retry_after: Duration::from_secs(7),
            },
        };
        (s, seen)
    }

    async fn upload(s: &Scanning, data: &[u8], size: Option<u64>) -> Result<(), CoreError> {
        let store = MemStore::new(1 << 30);
        let key = Key::parse("f.bin").unwrap();
        let staged = store.begin(&key, None).await.unwrap();
        let (sink, pending) = match s.tee(staged.sink(), size, &Silent) {
            Some((t, p)) => (t, Some(p)),
            None => (staged.sink(), None),
        };
        for (i, chunk) in data.chunks(1000).enumerate() {
            sink.write((i * 1000) as u64, Bytes::copy_from_slice(chunk))
                .await
                .unwrap();
        }
        drop(sink);
        match pending {
            Some(p) => p.verdict("f.bin", &Silent).await,
            None => Ok(()),
        }
    }

    #[tokio::test]
    async fn the_tee_feeds_every_byte_in_order() {
        let (s, seen) = scanning(1 << 20, false);
        let data: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
        upload(&s, &data, Some(data.len() as u64)).await.unwrap();
        assert_eq!(*seen.lock().unwrap(), data);
        let mut bad = data.clone();
        bad[5000..5003].copy_from_slice(b"BAD");
        let e = upload(&s, &bad, None).await.unwrap_err();
        assert_eq!(e.code(), "virus_found");
    }

    #[tokio::test]
    async fn over_the_limit_is_skipped_known_or_not() {
        let (s, seen) = scanning(2500, false);
        let bad = b"BAD".repeat(1000);
        // Known size: no scan at all.
        upload(&s, &bad, Some(bad.len() as u64)).await.unwrap();
        assert!(seen.lock().unwrap().is_empty());
        // Unknown size (a form field): fed until it outgrew the limit, then skipped.
        upload(&s, &bad, None).await.unwrap();
        assert!(seen.lock().unwrap().len() <= 2500);
        // Under the limit it is refused.
        assert!(upload(&s, &bad[..2400], None).await.is_err());
    }

    #[test]
    fn failures_follow_the_policy() {
        let (closed, _) = scanning(10, false);
        let (open, _) = scanning(10, true);
        let f = || Err(ScanFailure("down".into()));
        match closed.decide(f(), "x", &Silent) {
            Err(CoreError::ScannerUnavailable(d)) => assert_eq!(d, Duration::from_secs(7)),
            other => panic!("{other:?}"),
        }
        assert!(open.decide(f(), "x", &Silent).is_ok());
        assert!(open
            .decide(Ok(Verdict::Infected("x".into())), "x", &Silent)
            .is_err());
    }
}
