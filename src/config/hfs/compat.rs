//! [`HfsCompat`]: the values of the HFS keys xferd accepts but does not apply yet (class
//! (c)), parsed with HFS's units and rules so the features that will use them can pick them
//! up, and so a bad value is an error naming the key now.

use super::{entry, invalid, KeyClass, KeyReport, Leaf};
use crate::config::{parse_duration, parse_size, ConfigError};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;
use toml::Value;

/// HFS settings xferd accepts but does not apply yet, parsed (HFS's units and defaults) for
/// the features that will use them. `accepted` holds every class (c) key and its value.
#[derive(Clone, Default)]
pub struct HfsCompat {
    /// `[server] filettlenabled` with `filettl` (else `max_file_age`, else 720h, as HFS).
    pub file_ttl: Option<Duration>,
    /// `[server] cleanup_interval`.
    pub file_cleanup_interval: Option<Duration>,
    /// `[deduplication] directory` and `maxsize` (not applied; the switches map to
    /// `[deduplication] enabled`).
    pub dedup_dir: Option<PathBuf>,
    pub dedup_max_size: Option<u64>,
    /// `[clamav] clamavenabled`.
    pub clamav_enabled: bool,
    pub clamav_socket: Option<PathBuf>,
    /// `[redis] redisenabled`.
    pub redis_enabled: bool,
    pub redis_addr: Option<String>,
    pub quotas_enabled: bool,
    pub audit_enabled: bool,
    pub admin_enabled: bool,
    pub metadata_enabled: bool,
    /// `[server] pid_file` (else `pidfilepath`).
    pub pid_file: Option<PathBuf>,
    /// `[logging] file`.
    pub log_file: Option<PathBuf>,
    /// `[metadata] db_path`.
    pub metadata_db: Option<PathBuf>,
    /// `[audit] path`.
    pub audit_log: Option<PathBuf>,
    /// Every class (c) key (lower-case `section.key`) and its value.
    pub accepted: BTreeMap<String, Value>,
}

/// Debug names the accepted keys but never their values (they include Redis and admin
/// passwords).
impl std::fmt::Debug for HfsCompat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HfsCompat")
            .field("file_ttl", &self.file_ttl)
            .field("clamav_enabled", &self.clamav_enabled)
            .field("redis_enabled", &self.redis_enabled)
            .field("quotas_enabled", &self.quotas_enabled)
            .field("audit_enabled", &self.audit_enabled)
            .field("admin_enabled", &self.admin_enabled)
            .field("metadata_enabled", &self.metadata_enabled)
            .field("accepted", &self.accepted.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

/// Records the class (c) keys, parses the values later features need, and raises the one
/// warning that names them all.
pub(super) fn keep(
    kept: Vec<(Leaf, &'static str)>,
    report: &mut Vec<KeyReport>,
    warnings: &mut Vec<String>,
) -> Result<HfsCompat, ConfigError> {
    let mut compat = HfsCompat::default();
    let mut lines = Vec::new();
    for (leaf, why) in kept {
        lines.push(format!("  {}: {why}", leaf.key()));
        report.push(entry(&leaf, KeyClass::Accepted, why));
        compat
            .accepted
            .insert(leaf.key().to_ascii_lowercase(), leaf.value);
    }
    fill(&mut compat)?;
    if !lines.is_empty() {
        warnings.push(format!(
            "HFS keys accepted but not applied ({}):\n{}",
            lines.len(),
            lines.join("\n")
        ));
    }
    Ok(compat)
}

/// The typed fields of [`HfsCompat`], from its `accepted` values.
fn fill(c: &mut HfsCompat) -> Result<(), ConfigError> {
    let a = c.accepted.clone();
    let get = |k: &str| a.get(k);
    let flag = |k: &str| -> Result<bool, ConfigError> {
        match get(k) {
            None => Ok(false),
            Some(Value::Boolean(b)) => Ok(*b),
            // viper reads "true"/"false" strings as booleans.
            Some(Value::String(s)) if s.eq_ignore_ascii_case("true") => Ok(true),
            Some(Value::String(s)) if s.eq_ignore_ascii_case("false") => Ok(false),
            Some(_) => Err(invalid(k, "must be true or false")),
        }
    };
    let text = |k: &str| -> Result<Option<String>, ConfigError> {
        match get(k) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(invalid(k, "must be a string")),
        }
    };
    let path = |k: &str| -> Result<Option<PathBuf>, ConfigError> {
        Ok(text(k)?.filter(|s| !s.is_empty()).map(PathBuf::from))
    };
    let duration = |k: &str| -> Result<Option<Duration>, ConfigError> {
        match text(k)? {
            None => Ok(None),
            Some(s) => parse_duration(&s.to_ascii_lowercase())
                .map(Some)
                .map_err(|m| invalid(k, m)),
        }
    };
    let size = |k: &str| -> Result<Option<u64>, ConfigError> {
        match get(k) {
            None => Ok(None),
            Some(Value::Integer(n)) => u64::try_from(*n)
                .map(Some)
                .map_err(|_| invalid(k, "must be >= 0")),
            Some(Value::String(s)) => parse_size(s).map(Some).map_err(|m| invalid(k, m)),
            Some(_) => Err(invalid(k, "must be a size like \"100MB\"")),
        }
    };
    // HFS: filettl, else max_file_age, else 720h; a bad value is an error either way.
    let ttl = duration("server.filettl")?;
    let age = duration("server.max_file_age")?;
    if flag("server.filettlenabled")? {
        c.file_ttl = Some(ttl.or(age).unwrap_or(Duration::from_secs(720 * 3600)));
    }
    c.file_cleanup_interval = duration("server.cleanup_interval")?;
    c.dedup_dir = path("deduplication.directory")?;
    c.dedup_max_size = size("deduplication.maxsize")?;
    c.clamav_enabled = flag("clamav.clamavenabled")?;
    c.clamav_socket = path("clamav.clamavsocket")?;
    c.redis_enabled = flag("redis.redisenabled")?;
    c.redis_addr = text("redis.redisaddr")?;
    c.quotas_enabled = flag("quotas.enabled")?;
    c.audit_enabled = flag("audit.enabled")?;
    c.admin_enabled = flag("admin.enabled")?;
    c.metadata_enabled = flag("metadata.enabled")?;
    c.pid_file = match path("server.pid_file")? {
        Some(p) => Some(p),
        None => path("server.pidfilepath")?,
    };
    c.log_file = path("logging.file")?;
    c.metadata_db = path("metadata.db_path")?;
    c.audit_log = path("audit.path")?;
    Ok(())
}
