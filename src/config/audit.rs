//! `[audit]`: one JSON line per upload, download, delete and refused request (see
//! `core::audit` for the fields and `crate::audit` for the writer). The keys `enabled`,
//! `output` and `path` are HFS's own; HFS's `format`, `events`, `max_size` and `max_age` are
//! accepted but not applied (JSON only, every event; rotate with logrotate's copytruncate).

use super::ConfigError;
use serde::Deserialize;
use std::path::PathBuf;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum AuditOutput {
    /// Appended to `audit.path` (created 0600).
    #[default]
    File,
    Stdout,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuditConfig {
    pub enabled: bool,
    pub output: AuditOutput,
    /// The log file; empty = `audit.log` in `server.state_path`.
    pub path: Option<PathBuf>,
    /// Lines queued for the writer at most; beyond, lines are dropped and counted
    /// (`xferd_audit_dropped_total`), never blocking a request.
    pub queue: usize,
}

impl Default for AuditConfig {
    fn default() -> Self {
        AuditConfig {
            enabled: false,
            output: AuditOutput::File,
            path: None,
            queue: 4096,
        }
    }
}

impl AuditConfig {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if self.queue == 0 {
            return Err(ConfigError::Invalid {
                key: "audit.queue".into(),
                message: "must be at least 1".into(),
            });
        }
        Ok(())
    }
}
