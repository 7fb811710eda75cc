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
        AuditLog::spawn(config.queue, out, metrics)
    }

    /// The queue of `queue` lines and the writer thread over `out`.
    pub fn spawn(
        queue: usize,
        out: Box<dyn Write + Send>,
        metrics: Arc<Metrics>,
    ) -> std::io::Result<Arc<AuditLog>> {
        let (tx, rx) = sync_channel(queue.max(1));
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::telemetry::Telemetry;
    use std::sync::mpsc;

    /// A destination that says it was entered, then blocks every write until told to go on.
    struct Stuck(mpsc::Receiver<()>, mpsc::Sender<Vec<u8>>, mpsc::Sender<()>);

    impl Write for Stuck {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            let _ = self.2.send(());
            let _ = self.0.recv();
            let _ = self.1.send(b.to_vec());
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn event(i: u16) -> Event {
        Event {
            time: "t".into(),
            client: "127.0.0.1".into(),
            protocol: "h1",
            method: "GET".into(),
            path: format!("/{i}"),
            status: i,
            bytes: 0,
            sha256: None,
            code: None,
        }
    }

    fn counter(m: &Metrics, name: &str) -> u64 {
        let text = m.render().unwrap_or_default();
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.trim().parse::<u64>().ok())
            .unwrap_or(u64::MAX)
    }

    #[test]
    fn a_full_queue_drops_and_counts_instead_of_blocking() {
        let pool = crate::core::buffers::Pool::new(1 << 15, 1 << 16, 1 << 20);
        let profiles = Arc::new(crate::core::profiles::Profiles::new(false, false, 1, 1));
        let metrics = Metrics::new(pool, profiles);
        let (go, wait) = mpsc::channel();
        let (seen_tx, seen) = mpsc::channel();
        let (entered_tx, entered) = mpsc::channel();
        let out = Box::new(Stuck(wait, seen_tx, entered_tx));
        let log = AuditLog::spawn(2, out, metrics.clone()).unwrap();
        log.record(event(0));
        // The writer holds line 0 and is stuck writing it.
        entered
            .recv_timeout(std::time::Duration::from_secs(10))
            .unwrap();
        let started = std::time::Instant::now();
        for i in 1..100 {
            log.record(event(i));
        }
        // Never blocked: the records with a stuck writer return at once.
        assert!(started.elapsed() < std::time::Duration::from_secs(2));
        let dropped = counter(&metrics, "xferd_audit_dropped_total");
        // The queue (2 lines) was kept, the other 97 dropped and counted.
        assert_eq!(dropped, 97);
        drop(log);
        for _ in 0..10 {
            let _ = go.send(());
        }
        drop(go);
        let written: Vec<u8> = seen.iter().flatten().collect();
        let text = String::from_utf8(written).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len() as u64, 100 - dropped, "{text}");
        let first: serde_json::Value = serde_json::from_str(lines[0]).unwrap();
        assert_eq!(first["path"], "/0");
    }
}
