//! `[scan]`: virus scanning of uploads with clamd before they become visible (see
//! `core::scan`). HFS's `[clamav] clamavenabled`, `clamavsocket` and `maxscansize` are
//! aliases of `enabled`, `socket` and `max_size`.

use super::{de_duration, de_size};
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ScanConfig {
    /// Scan every upload (PUT, form, and resumable uploads when complete).
    pub enabled: bool,
    /// clamd's Unix socket (`LocalSocket` in clamd.conf); unused when `tcp` is set.
    pub socket: PathBuf,
    /// clamd's TCP address (`TCPSocket`/`TCPAddr`), instead of the Unix socket.
    pub tcp: Option<SocketAddr>,
    /// Files larger than this are stored unscanned (logged, counted). Keep it at or below
    /// clamd's `StreamMaxLength`, which refuses longer streams.
    #[serde(deserialize_with = "de_size")]
    pub max_size: u64,
    /// When clamd is unreachable or fails: `false` refuses the upload (503
    /// `scanner_unavailable`), `true` stores it unscanned (logged, counted).
    pub fail_open: bool,
    /// Bound on each exchange with clamd (connect, each write, the verdict).
    #[serde(deserialize_with = "de_duration")]
    pub timeout: Duration,
}

impl Default for ScanConfig {
    fn default() -> Self {
        ScanConfig {
            enabled: false,
            socket: PathBuf::from("/var/run/clamav/clamd.ctl"),
            tcp: None,
            // clamd's own StreamMaxLength default.
            max_size: 25 << 20,
            fail_open: false,
            timeout: Duration::from_secs(30),
        }
    }
}

impl ScanConfig {
    pub(super) fn validate(&self) -> Result<(), super::ConfigError> {
        if self.enabled && self.timeout.is_zero() {
            return Err(super::ConfigError::Invalid {
                key: "scan.timeout".into(),
                message: "must be greater than 0".into(),
            });
        }
        Ok(())
    }
}
