//! The audit log writer: [`AuditLog`] is the core's [`AuditSink`]. Events go into a bounded
//! queue (`audit.queue` lines) and one writer thread turns each into a JSON line on a file
//! (opened `O_APPEND`, created mode 0600) or stdout, flushing whenever the queue is empty.
//! A full queue drops the line and counts it (`xferd_audit_dropped_total`): a request never
//! waits for the disk, and memory stays bounded by the queue. Dropping the last handle ends
//! the writer after it has written what was queued.

use crate::config::{AuditConfig, AuditOutput};
use crate::core::audit::{AuditSink, Event};
use crate::metrics::Metrics;
use std::io::Write;
use std::path::Path;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::Arc;

/// See the module doc.
pub struct AuditLog {
    queue: SyncSender<Event>,
    metrics: Arc<Metrics>,
}

impl AuditSink for AuditLog {
    fn record(&self, event: Event) {
        match self.queue.try_send(event) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                self.metrics.audit_dropped();
            }
        }
    }
}

impl AuditLog {
    /// Opens the destination of `config` (`state_path` is where a file goes by default) and
    /// starts the writer thread.
    pub fn start(
        config: &AuditConfig,
        state_path: &Path,
        metrics: Arc<Metrics>,
    ) -> std::io::Result<Arc<AuditLog>> {
        let out: Box<dyn Write + Send> = match config.output {
            AuditOutput::Stdout => Box::new(std::io::stdout()),
            AuditOutput::File => {
                let path = config
                    .path
                    .clone()
                    .filter(|p| !p.as_os_str().is_empty())
                    .unwrap_or_else(|| state_path.join("audit.log"));
                Box::new(open_append(&path)?)
            }
        };
        let (tx, rx) = sync_channel(config.queue.max(1));
        let m = metrics.clone();
        std::thread::Builder::new()
            .name("xferd-audit".into())
            .spawn(move || write_all(rx, std::io::BufWriter::new(out), &m))?;
        Ok(Arc::new(AuditLog { queue: tx, metrics }))
    }
}

/// Opens `path` for appending, creating it (and its directory) with mode 0600.
pub fn open_append(path: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .open(path)
}

fn write_all(rx: Receiver<Event>, mut out: impl Write, metrics: &Metrics) {
    let mut failed = false;
    while let Ok(first) = rx.recv() {
        let mut next = Some(first);
        while let Some(e) = next {
            let ok = serde_json::to_vec(&e).ok().is_some_and(|mut line| {
                line.push(b'\n');
                out.write_all(&line).is_ok()
            });
            if ok {
                metrics.audit_written();
            } else {
                metrics.audit_dropped();
                if !failed {
                    tracing::error!("writing the audit log failed; lines are being dropped");
                    failed = true;
                }
            }
            next = rx.try_recv().ok();
        }
        if out.flush().is_err() && !failed {
            tracing::error!("flushing the audit log failed");
            failed = true;
        }
    }
    let _ = out.flush();
}
