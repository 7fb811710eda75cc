//! `[expiry]`: stored files older than `max_age` (by upload time) are deleted by a sweep
//! every `sweep_interval` (see `core::expiry`). HFS: `[server] filettlenabled`, `filettl`
//! (else `max_file_age`), `cleanup_interval`, with HFS's defaults (720h, 24h).

use super::{de_duration, ConfigError};
use serde::Deserialize;
use std::time::Duration;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ExpiryConfig {
    pub enabled: bool,
    /// Files older than this (since their upload was committed) are deleted.
    #[serde(deserialize_with = "de_duration")]
    pub max_age: Duration,
    /// Time between sweeps; the first runs at start-up.
    #[serde(deserialize_with = "de_duration")]
    pub sweep_interval: Duration,
}

impl Default for ExpiryConfig {
    fn default() -> Self {
        ExpiryConfig {
            enabled: false,
            max_age: Duration::from_secs(720 * 3600),
            sweep_interval: Duration::from_secs(24 * 3600),
        }
    }
}

impl ExpiryConfig {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        let bad = |key: &str| ConfigError::Invalid {
            key: key.into(),
            message: "must be at least 1s".into(),
        };
        if self.max_age < Duration::from_secs(1) {
            return Err(bad("expiry.max_age"));
        }
        if self.sweep_interval < Duration::from_secs(1) {
            return Err(bad("expiry.sweep_interval"));
        }
        Ok(())
    }
}
