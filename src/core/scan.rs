//! Virus scanning before a file becomes visible (`[scan]`; HFS `[clamav]`).
//!
//! The core knows a scanner only through [`Scanner`] (the clamd client lives in
//! [`crate::scan`], outside the core, because it opens sockets) and its policy through
//! [`ScanPolicy`] (a plain struct the server fills from the configuration).
//!
//! 1. Single-shot uploads (`PUT`, form `POST /upload`): the staged sink is wrapped in a
//!    [`Tee`] that hands every buffer, in order, to a scan task over a channel of capacity
//!    [`TEE_DEPTH`] while it is written (memory: at most that many buffers wait for clamd;
//!    a slow scanner slows the upload instead of growing a queue). No second read of the
//!    stored bytes is needed, so this works the same for any [`Sink`] (an object store
//!    too). The verdict is awaited after the last byte and before the commit.
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

/// Buffers that may wait for the scanner while an upload is written.
pub const TEE_DEPTH: usize = 2;
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
    tx: Option<tokio::sync::mpsc::Sender<Bytes>>,
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

/// A [`Sink`] that writes through to `inner` and hands each buffer to a scan.
struct Tee {
    inner: Arc<dyn Sink>,
    tx: tokio::sync::mpsc::Sender<Bytes>,
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
            if total <= max {
                let _ = tx.send(data.clone()).await;
            }
            inner.write(offset, data).await
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
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Bytes>(TEE_DEPTH);
        let scanner = self.scanner.clone();
        let task = tokio::spawn(async move {
            let mut stream = scanner.start().await?;
            while let Some(b) = rx.recv().await {
                stream.feed(b).await?;
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
