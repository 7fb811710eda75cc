//! The expiry, quota, audit and deduplication series of [`super::Metrics`].

use super::{bug, register};
use prometheus::{IntGaugeVec, Opts, Registry};
use std::sync::Arc;

/// Expiry, quota and audit series.
pub(super) struct Housekeeping {
    pub(super) expired_files: prometheus::IntCounter,
    pub(super) expired_bytes: prometheus::IntCounter,
    pub(super) audit_lines: prometheus::IntCounter,
    pub(super) audit_dropped: prometheus::IntCounter,
    /// Per quota rule (label `scope`: `total` or the prefix, from the configuration).
    pub(super) quota_used: IntGaugeVec,
    pub(super) quota_reserved: IntGaugeVec,
    pub(super) quota_limit: IntGaugeVec,
    pub(super) quotas: std::sync::OnceLock<Arc<crate::core::quota::Quotas>>,
    /// `[deduplication]`: bytes of uploads linked to a stored copy instead of stored, and
    /// how many uploads.
    pub(super) dedup_saved: prometheus::IntCounter,
    pub(super) dedup_linked: prometheus::IntCounter,
}

fn int_counter(r: &Registry, name: &str, help: &str) -> prometheus::IntCounter {
    let c = prometheus::IntCounter::new(name, help).unwrap_or_else(|e| bug(name, e));
    register(r, name, c.clone());
    c
}

pub(super) fn housekeeping(r: &Registry) -> Housekeeping {
    let scoped = |name: &str, help: &str| {
        let g =
            IntGaugeVec::new(Opts::new(name, help), &["scope"]).unwrap_or_else(|e| bug(name, e));
        register(r, name, g.clone());
        g
    };
    Housekeeping {
        expired_files: int_counter(r, "xferd_expired_files_total", "Files deleted by expiry."),
        expired_bytes: int_counter(
            r,
            "xferd_expired_bytes_total",
            "Bytes of the files deleted by expiry.",
        ),
        audit_lines: int_counter(r, "xferd_audit_lines_total", "Audit log lines written."),
        audit_dropped: int_counter(
            r,
            "xferd_audit_dropped_total",
            "Audit log lines dropped (queue full or write failed).",
        ),
        quota_used: scoped("xferd_quota_used_bytes", "Stored bytes counted by a quota."),
        quota_reserved: scoped(
            "xferd_quota_reserved_bytes",
            "Bytes reserved by uploads in progress under a quota.",
        ),
        quota_limit: scoped("xferd_quota_limit_bytes", "A quota's cap."),
        quotas: std::sync::OnceLock::new(),
        dedup_saved: int_counter(
            r,
            "xferd_dedup_saved_bytes_total",
            "Bytes of uploads linked to the stored copy of identical content instead of stored.",
        ),
        dedup_linked: int_counter(
            r,
            "xferd_dedup_linked_total",
            "Uploads linked to the stored copy of identical content.",
        ),
    }
}
