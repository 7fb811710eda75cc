//! `[deduplication]`: uploads with the same SHA-256 share one stored copy (see
//! `core::dedup` and `storage::cas`). HFS: `[server] deduplication_enabled` **and**
//! `[deduplication] enabled` (HFS needs both switches; so does xferd when reading an HFS
//! file). Only the filesystem backend deduplicates (hard links): with `storage.backend =
//! "s3"` the switch is refused.

use super::{ConfigError, KeyReport, StorageBackend};
use serde::Deserialize;
use toml::{Table, Value};

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DedupConfig {
    /// Identical uploads share one stored copy (default off).
    pub enabled: bool,
}

impl DedupConfig {
    pub(super) fn validate(&self, backend: StorageBackend) -> Result<(), ConfigError> {
        if self.enabled && backend == StorageBackend::S3 {
            return Err(ConfigError::Invalid {
                key: "deduplication.enabled".into(),
                message: "the s3 backend cannot deduplicate (no hard links; a server-side copy \
                          stores the bytes again): turn it off or use storage.backend = \"fs\""
                    .into(),
            });
        }
        Ok(())
    }
}

/// HFS's `[server] deduplication_enabled` (`value`): `[deduplication] enabled`, also xferd's
/// key (already in `out` when given), becomes the pair's verdict. Returns the report's meaning.
pub(super) fn hfs_server_switch(out: &mut Table, value: &Value) -> String {
    let server = value.as_bool() == Some(true);
    let section = out.get("deduplication").and_then(|t| t.get("enabled"));
    let both = server && section.and_then(Value::as_bool) == Some(true);
    let dedup = out
        .entry("deduplication".to_string())
        .or_insert_with(|| Value::Table(Table::new()));
    if let Value::Table(t) = dedup {
        t.insert("enabled".into(), Value::Boolean(both));
    }
    format!(
        "deduplication.enabled = {both} (HFS needs [server] deduplication_enabled and \
         [deduplication] enabled)"
    )
}

/// In an HFS file, `[deduplication] enabled` is HFS's second switch: without `[server]
/// deduplication_enabled` HFS deduplicates nothing, and neither does xferd.
pub(super) fn hfs_pair(out: &mut Table, report: &mut [KeyReport]) {
    let server = report
        .iter()
        .any(|r| r.key.eq_ignore_ascii_case("server.deduplication_enabled"));
    let Some(Value::Table(t)) = out.get_mut("deduplication") else {
        return;
    };
    if server || t.get("enabled").and_then(Value::as_bool) != Some(true) {
        return;
    }
    t.insert("enabled".into(), Value::Boolean(false));
    for r in report.iter_mut() {
        if r.key.eq_ignore_ascii_case("deduplication.enabled") {
            r.meaning =
                "deduplication.enabled = false (HFS also needs [server] deduplication_enabled)"
                    .into();
        }
    }
}
