//! TOML configuration -> a validated [`Config`].
//!
//! Rules: every key has a documented default (see `config/xferd.toml`); sizes are integers
//! (bytes) or strings like `"100MB"` (binary multiples, like HFS); durations are integers
//! (seconds) or strings like `"5m"`. An unknown key or a bad value is one [`ConfigError`]
//! naming the key - never a silent default. HMAC File Server (HFS) configuration files are
//! accepted as they are: see [`hfs`] for how every HFS key is classified, mapped or reported.

use serde::de::{self, Deserializer};
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

mod admin;
mod cluster;
mod fields;
pub mod hfs;
mod ops;
mod overrides;
// Issue 12: file expiry, storage quotas, audit log.
mod audit;
mod dedup;
mod expiry;
mod quota;
mod scan;
pub use admin::AdminConfig;
pub use scan::ScanConfig;
mod storage;

pub use audit::{AuditConfig, AuditOutput};
pub use cluster::ClusterConfig;
pub use dedup::DedupConfig;
pub use expiry::ExpiryConfig;
pub use hfs::{HfsCompat, KeyClass, KeyReport};
pub use ops::{LogConfig, LogFormat, PrefixLimitConfig, RateLimitConfig};
pub use overrides::Overrides;
pub use quota::{QuotaConfig, QuotaPrefixConfig};
pub use storage::{Backend as StorageBackend, S3Config, StorageConfig};

/// A configuration problem, always naming the key or file concerned.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path}: {message}")]
    Parse { path: String, message: String },
    #[error("config key `{key}`: {message}")]
    Invalid { key: String, message: String },
}

/// The whole validated configuration.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub server: ServerConfig,
    pub tls: TlsConfig,
    pub security: SecurityConfig,
    pub downloads: DownloadsConfig,
    pub resumable: ResumableConfig,
    pub performance: PerformanceConfig,
    pub streaming: StreamingConfig,
    pub metrics: MetricsConfig,
    pub rate_limit: RateLimitConfig,
    pub log: LogConfig,
    pub expiry: ExpiryConfig,
    pub quota: QuotaConfig,
    pub audit: AuditConfig,
    /// `[scan]`: virus scanning with clamd.
    pub scan: ScanConfig,
    /// `[admin]`: the admin API listener.
    pub admin: AdminConfig,
    pub cluster: ClusterConfig,
    /// `[storage]`: the backend of finished files (see `config/storage.rs`).
    pub storage: StorageConfig,
    /// `[deduplication]`: identical uploads share one stored copy.
    pub deduplication: DedupConfig,
    /// Values of the HFS keys xferd accepts but does not (yet) apply.
    #[serde(skip)]
    pub hfs: HfsCompat,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// TCP (HTTPS: HTTP/1.1 + HTTP/2) and UDP (HTTP/3) address; port 0 picks a free port.
    pub listen: SocketAddr,
    /// Optional plaintext HTTP/1.1 + h2c listener (behind a reverse proxy).
    pub plain_listen: Option<SocketAddr>,
    pub storage_path: PathBuf,
    /// Where the generated certificate and secret are kept.
    pub state_path: PathBuf,
    #[serde(deserialize_with = "de_size")]
    pub max_upload_size: u64,
    /// Lower-case extensions without the dot; empty = all allowed.
    #[serde(deserialize_with = "de_extensions")]
    pub allowed_extensions: Vec<String>,
    /// Stripped from the decoded path before the signature check (e.g. `upload/`).
    pub path_prefix: String,
    pub max_connections: usize,
    #[serde(deserialize_with = "de_duration")]
    pub shutdown_grace: Duration,
    #[serde(deserialize_with = "de_duration")]
    pub header_read_timeout: Duration,
    #[serde(deserialize_with = "de_duration")]
    pub idle_timeout: Duration,
    #[serde(deserialize_with = "de_size")]
    pub udp_recv_buffer: u64,
    #[serde(deserialize_with = "de_size")]
    pub udp_send_buffer: u64,
    /// Accept HTTP/3 0-RTT resumption (on by default): safe methods in early data are served
    /// at once, others are held until the handshake completes (a replay never completes it).
    pub zero_rtt: bool,
    /// Largest request head (header section) accepted over HTTP/2 and HTTP/3; larger heads
    /// get 431 (h3) or are refused (h2). HTTP/1.1 heads are bounded by its 128 KiB buffer.
    #[serde(deserialize_with = "de_size")]
    pub max_header_size: u64,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 8443)),
            plain_listen: None,
            storage_path: PathBuf::from("./data"),
            state_path: PathBuf::from("./xferd-state"),
            max_upload_size: 10 << 30,
            allowed_extensions: Vec::new(),
            path_prefix: String::new(),
            max_connections: 1024,
            shutdown_grace: Duration::from_secs(30),
            header_read_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(120),
            udp_recv_buffer: 8 << 20,
            udp_send_buffer: 8 << 20,
            zero_rtt: true,
            max_header_size: 64 << 10,
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
}

/// Debug redacts the secrets (see the manual impl below): configs get logged.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SecurityConfig {
    /// The shared HMAC secret; absent = generated once and stored in `state_path`.
    pub secret: Option<String>,
    /// Older secrets still accepted during a rotation.
    pub previous_secrets: Vec<String>,
    /// 403 (default) or 401.
    pub auth_failure_status: u16,
    #[serde(deserialize_with = "de_duration")]
    pub allowed_clock_skew: Duration,
    /// HFS compatibility: accept MACs over the path alone (size not bound). Insecure; logged.
    pub compat_path_only_mac: bool,
    /// HFS compatibility: accept `X-Signature` (a MAC over the constant `/upload`, replayable
    /// forever) on `POST /upload`. Insecure; logged.
    pub compat_hfs_x_signature: bool,
    /// Longest validity of a v3 URL (`expires - now`); longer ones are refused, and
    /// `xferd sign` will not mint them.
    #[serde(deserialize_with = "de_duration")]
    pub max_url_lifetime: Duration,
}

impl std::fmt::Debug for SecurityConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let redacted = |set: bool| if set { "<redacted>" } else { "<none>" };
        f.debug_struct("SecurityConfig")
            .field("secret", &redacted(self.secret.is_some()))
            .field(
                "previous_secrets",
                &format_args!("[{} redacted]", self.previous_secrets.len()),
            )
            .field("auth_failure_status", &self.auth_failure_status)
            .field("allowed_clock_skew", &self.allowed_clock_skew)
            .field("compat_path_only_mac", &self.compat_path_only_mac)
            .field("compat_hfs_x_signature", &self.compat_hfs_x_signature)
            .field("max_url_lifetime", &self.max_url_lifetime)
            .finish()
    }
}

impl Default for SecurityConfig {
    fn default() -> Self {
        SecurityConfig {
            secret: None,
            previous_secrets: Vec::new(),
            auth_failure_status: 403,
            allowed_clock_skew: Duration::from_secs(60),
            compat_path_only_mac: false,
            compat_hfs_x_signature: false,
            max_url_lifetime: Duration::from_secs(crate::core::auth::DEFAULT_MAX_URL_LIFETIME_SECS),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DownloadsConfig {
    /// Require a v3 `GET` signature on downloads.
    pub require_signature: bool,
    /// Most ranges served in one multi-range response (after merging).
    pub max_ranges: usize,
}

impl Default for DownloadsConfig {
    fn default() -> Self {
        DownloadsConfig {
            require_signature: false,
            max_ranges: 16,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ResumableConfig {
    /// Where tus upload resources live (`/files/<id>`).
    pub tus_path: String,
    /// Where IETF-draft upload resources live (`/resumable/<id>`).
    pub ietf_path: String,
    /// Most sessions in progress on this server.
    pub max_sessions: usize,
    /// Most sessions in progress per client (IP address).
    pub max_sessions_per_client: usize,
    /// Sum of the lengths of unfinished sessions (deferred lengths count as the maximum).
    #[serde(deserialize_with = "de_size")]
    pub max_reserved_bytes: u64,
    /// Longest resumable upload.
    #[serde(deserialize_with = "de_size")]
    pub max_session_length: u64,
    /// A session expires this long after its last write.
    #[serde(deserialize_with = "de_duration")]
    pub session_ttl: Duration,
    /// How often expired sessions are collected.
    #[serde(deserialize_with = "de_duration")]
    pub expiry_interval: Duration,
    /// Chunk size handed out by HFS's `/chunked-upload` creation.
    #[serde(deserialize_with = "de_size")]
    pub chunk_size: u64,
    /// Progress within one long request is made durable every this many bytes.
    #[serde(deserialize_with = "de_size")]
    pub commit_every: u64,
    /// Directory (under storage_path) where HFS's `POST /upload` form uploads land.
    pub form_upload_dir: String,
}

impl Default for ResumableConfig {
    fn default() -> Self {
        ResumableConfig {
            tus_path: "/files/".into(),
            ietf_path: "/resumable/".into(),
            max_sessions: 1000,
            max_sessions_per_client: 50,
            max_reserved_bytes: 100 << 30,
            max_session_length: 10 << 30,
            session_ttl: Duration::from_secs(24 * 3600),
            expiry_interval: Duration::from_secs(300),
            chunk_size: 8 << 20,
            commit_every: 16 << 20,
            form_upload_dir: "uploads".into(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PerformanceConfig {
    /// Size each transfer's I/O buffer from its connection's readings; off = every transfer
    /// uses `max_buffer_size` (memory pressure still shrinks it).
    pub adaptive_buffers: bool,
    #[serde(deserialize_with = "de_size")]
    pub min_buffer_size: u64,
    #[serde(deserialize_with = "de_size")]
    pub max_buffer_size: u64,
    /// Memory for transfer buffers across all transfers (pooled and in use).
    #[serde(deserialize_with = "de_size")]
    pub buffer_memory_limit: u64,
    /// How often a running transfer re-evaluates its buffer size (and chunk hint).
    #[serde(deserialize_with = "de_duration")]
    pub buffer_optimization_interval: Duration,
    /// Advise chunk sizes from readings and history; off = `resumable.chunk_size` always.
    pub intelligent_chunking: bool,
    #[serde(deserialize_with = "de_size")]
    pub min_chunk_size: u64,
    #[serde(deserialize_with = "de_size")]
    pub max_chunk_size: u64,
    pub chunk_adaptation_algorithm: ChunkAlgorithm,
    /// Keep per-client history (see README: profile keys).
    pub client_profiling: bool,
    /// Profiles unused for this long are forgotten (also on disk).
    #[serde(deserialize_with = "de_duration")]
    pub profile_persistence_duration: Duration,
    /// Most profiles kept; the least recently used go first.
    pub max_profiles: usize,
    /// Classify connections (loopback, LAN, broadband, mobile, satellite) from readings.
    pub connection_type_detection: bool,
    /// Congestion control of what the server sends over QUIC (downloads): "cubic" (default),
    /// "bbr" (holds its rate through random loss, e.g. mostly mobile clients; quinn calls
    /// its BBR experimental) or "new-reno".
    pub quic_congestion_control: crate::transport::congestion::Congestion,
    /// Threads of the runtime that runs quinn's drivers and every HTTP/3 request (not the
    /// connections' handshakes and h3 setup), on the same thread so that they wake each
    /// other without a cross-thread wake-up (see `transport::quic::QuicRuntime`). 1 by
    /// default (measured best on 2 cores).
    pub quic_threads: usize,
    /// Local storage: open, `fstat` and read a download of at most 32 KiB on the request's
    /// own runtime thread (page-cache work of microseconds) instead of the blocking pool.
    /// Off for storage where an open may stall (a network filesystem).
    pub inline_small_reads: bool,
}

impl Default for PerformanceConfig {
    fn default() -> Self {
        PerformanceConfig {
            adaptive_buffers: true,
            min_buffer_size: 32 << 10,
            max_buffer_size: 1 << 20,
            buffer_memory_limit: 64 << 20,
            buffer_optimization_interval: Duration::from_secs(1),
            intelligent_chunking: true,
            min_chunk_size: 256 << 10,
            max_chunk_size: 64 << 20,
            chunk_adaptation_algorithm: ChunkAlgorithm::Adaptive,
            client_profiling: true,
            profile_persistence_duration: Duration::from_secs(24 * 3600),
            max_profiles: 10_000,
            connection_type_detection: true,
            quic_congestion_control: crate::transport::congestion::Congestion::Cubic,
            quic_threads: 1,
            inline_small_reads: true,
        }
    }
}

/// How chunk sizes are chosen: `"fixed"`, `"adaptive"` or `"predictive"` (see `core::sizing`).
pub use crate::core::sizing::Algorithm as ChunkAlgorithm;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StreamingConfig {
    /// Honour `Range` on downloads; off = whole files with `Accept-Ranges: none`.
    pub range_requests: bool,
    /// Many concurrent requests per HTTP/2 and HTTP/3 connection; off = one at a time.
    pub connection_multiplexing: bool,
    /// Sample each connection's readings (TCP_INFO, QUIC stats); off = no readings, sizing
    /// falls back to the configured bounds and memory pressure.
    pub bandwidth_estimation: bool,
    /// Re-evaluate buffer sizes and chunk hints during a transfer; off = chosen once at start.
    pub quality_adaptation: bool,
    /// Retry storage operations that fail transiently.
    pub automatic_retry: bool,
    /// Retry delays double (with jitter); off = a constant delay.
    pub exponential_backoff: bool,
    /// After repeated storage failures, refuse storage work quickly (503) for a cool-down.
    pub circuit_breaker: bool,
}

impl Default for StreamingConfig {
    fn default() -> Self {
        StreamingConfig {
            range_requests: true,
            connection_multiplexing: true,
            bandwidth_estimation: true,
            quality_adaptation: true,
            automatic_retry: true,
            exponential_backoff: true,
            circuit_breaker: true,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// Serve Prometheus metrics at `/metrics`.
    pub enabled: bool,
    /// A separate plaintext listener for `/metrics`; when set, the main port does not serve it.
    pub listen: Option<SocketAddr>,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig {
            enabled: true,
            listen: None,
        }
    }
}

/// Parsed configuration plus the warnings raised while reading it.
#[derive(Debug)]
pub struct Loaded {
    pub config: Config,
    pub warnings: Vec<String>,
    /// Every key of the file, its value and what xferd does with it (`check-config --explain`).
    pub report: Vec<KeyReport>,
}

impl Config {
    /// Reads and validates a config file.
    pub fn load(path: &Path) -> Result<Loaded, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text, &path.display().to_string())
    }

    /// Parses and validates config text; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Loaded, ConfigError> {
        let table: toml::Table = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: origin.to_string(),
            message: e.to_string(),
        })?;
        let hfs::Translated {
            table,
            compat,
            report,
            warnings,
        } = hfs::translate(table)?;
        let mut config =
            Config::deserialize(toml::Value::Table(table)).map_err(|e| ConfigError::Parse {
                path: origin.to_string(),
                message: e.to_string().trim().to_string(),
            })?;
        config.hfs = compat;
        config.validate()?;
        Ok(Loaded {
            config,
            warnings,
            report,
        })
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let bad = |key: &str, message: &str| {
            Err(ConfigError::Invalid {
                key: key.to_string(),
                message: message.to_string(),
            })
        };
        if !matches!(self.security.auth_failure_status, 401 | 403) {
            return bad("security.auth_failure_status", "must be 401 or 403");
        }
        if self.server.max_connections == 0 {
            return bad("server.max_connections", "must be at least 1");
        }
        if !(1024..=(16 << 20)).contains(&self.server.max_header_size) {
            return bad("server.max_header_size", "must be between 1KB and 16MB");
        }
        if self.server.max_upload_size == 0 {
            return bad("server.max_upload_size", "must be greater than 0");
        }
        let p = &self.performance;
        if !(4096..=(64 << 20)).contains(&p.min_buffer_size)
            || !(4096..=(64 << 20)).contains(&p.max_buffer_size)
        {
            return bad(
                "performance.min_buffer_size",
                "buffer sizes must be between 4KB and 64MB",
            );
        }
        if p.min_buffer_size > p.max_buffer_size {
            return bad(
                "performance.min_buffer_size",
                "must not exceed max_buffer_size",
            );
        }
        if p.buffer_memory_limit < 2 * p.min_buffer_size {
            return bad(
                "performance.buffer_memory_limit",
                "must hold at least two min_buffer_size buffers",
            );
        }
        if p.min_chunk_size == 0 || p.min_chunk_size > p.max_chunk_size {
            return bad(
                "performance.min_chunk_size",
                "must be > 0 and not exceed max_chunk_size",
            );
        }
        if p.buffer_optimization_interval.is_zero() {
            return bad(
                "performance.buffer_optimization_interval",
                "must be greater than 0",
            );
        }
        if p.max_profiles == 0 {
            return bad("performance.max_profiles", "must be at least 1");
        }
        if !(1..=256).contains(&p.quic_threads) {
            return bad("performance.quic_threads", "must be between 1 and 256");
        }
        for (key, p) in [
            ("resumable.tus_path", &self.resumable.tus_path),
            ("resumable.ietf_path", &self.resumable.ietf_path),
        ] {
            if !(p.starts_with('/') && p.ends_with('/') && p.len() > 2) {
                return bad(key, "must start and end with `/`, like \"/files/\"");
            }
        }
        if self.resumable.tus_path == self.resumable.ietf_path {
            return bad("resumable.ietf_path", "must differ from resumable.tus_path");
        }
        if self.resumable.chunk_size == 0 || self.resumable.commit_every == 0 {
            return bad(
                "resumable.chunk_size",
                "chunk_size and commit_every must be > 0",
            );
        }
        if self.resumable.max_sessions == 0 || self.resumable.max_sessions_per_client == 0 {
            return bad(
                "resumable.max_sessions",
                "session limits must be at least 1",
            );
        }
        if crate::core::path::validate(&self.resumable.form_upload_dir).is_err() {
            return bad(
                "resumable.form_upload_dir",
                "must be a relative directory like \"uploads\"",
            );
        }
        if self.downloads.max_ranges == 0 {
            return bad("downloads.max_ranges", "must be at least 1");
        }
        if matches!(&self.security.secret, Some(s) if s.is_empty()) {
            return bad(
                "security.secret",
                "must not be empty (omit it to generate one)",
            );
        }
        if self.security.previous_secrets.iter().any(|s| s.is_empty()) {
            return bad(
                "security.previous_secrets",
                "must not contain empty secrets",
            );
        }
        if self.security.max_url_lifetime.is_zero() {
            return bad("security.max_url_lifetime", "must be greater than 0");
        }
        if self.tls.cert.is_some() != self.tls.key.is_some() {
            return bad("tls.cert", "`cert` and `key` must be given together");
        }
        if self.server.path_prefix.contains("..") || self.server.path_prefix.contains('\\') {
            return bad("server.path_prefix", "must not contain `..` or `\\`");
        }
        let rl = &self.rate_limit;
        if !(1..=128).contains(&rl.ipv6_prefix) {
            return bad("rate_limit.ipv6_prefix", "must be between 1 and 128");
        }
        if rl.max_clients == 0 {
            return bad("rate_limit.max_clients", "must be at least 1");
        }
        if rl.prefixes.iter().any(|p| !p.path.starts_with('/')) {
            return bad("rate_limit.prefixes", "each `path` must start with `/`");
        }
        self.expiry.validate()?;
        self.quota.validate()?;
        self.audit.validate()?;
        self.scan.validate()?;
        self.admin.validate()?;
        self.storage.validate()?;
        self.deduplication.validate(self.storage.backend)?;
        Ok(())
    }

    /// The path prefix without leading or trailing slashes (`upload`), or empty.
    pub fn normalized_prefix(&self) -> String {
        self.server.path_prefix.trim_matches('/').to_string()
    }
}

/// Parses `"100MB"`, `"32KB"`, `"1GiB"`, `"512"` into bytes (binary multiples).
pub fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        "t" | "tb" | "tib" => 1 << 40,
        other => return Err(format!("unknown size unit `{other}` in `{text}`")),
    };
    let value: f64 = num
        .parse()
        .map_err(|_| format!("`{text}` is not a size like \"100MB\""))?;
    let bytes = value * mult as f64;
    if !bytes.is_finite() || bytes < 0.0 || bytes > u64::MAX as f64 {
        return Err(format!("size `{text}` is out of range"));
    }
    Ok(bytes as u64)
}

/// Parses `"5m"`, `"30s"`, `"1h30m"`, `"250ms"`, `"2d"`, `"2w"`, `"1y"` (365 days, as HFS) or a
/// bare number of seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    if t.is_empty() {
        return Err("empty duration".into());
    }
    if let Ok(secs) = t.parse::<u64>() {
        return Ok(Duration::from_secs(secs));
    }
    let mut total = Duration::ZERO;
    let mut rest = t;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        if digits == 0 {
            return Err(format!("`{text}` is not a duration like \"5m\""));
        }
        let (num, tail) = rest.split_at(digits);
        let unit_len = tail
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(tail.len());
        let (unit, next) = tail.split_at(unit_len);
        let n: u64 = num.parse().map_err(|_| format!("bad number in `{text}`"))?;
        let part = match unit {
            "ms" => Duration::from_millis(n),
            "s" => Duration::from_secs(n),
            "m" => Duration::from_secs(n.saturating_mul(60)),
            "h" => Duration::from_secs(n.saturating_mul(3600)),
            "d" => Duration::from_secs(n.saturating_mul(86400)),
            "w" => Duration::from_secs(n.saturating_mul(7 * 86400)),
            "y" => Duration::from_secs(n.saturating_mul(365 * 86400)),
            _ => return Err(format!("unknown duration unit `{unit}` in `{text}`")),
        };
        total = total.saturating_add(part);
        rest = next;
    }
    Ok(total)
}

#[derive(Deserialize)]
#[serde(untagged)]
enum NumOrText {
    Num(i64),
    Text(String),
}

fn de_size<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    match NumOrText::deserialize(d)? {
        NumOrText::Num(n) => u64::try_from(n).map_err(|_| de::Error::custom("size must be >= 0")),
        NumOrText::Text(s) => parse_size(&s).map_err(de::Error::custom),
    }
}

fn de_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    match NumOrText::deserialize(d)? {
        NumOrText::Num(n) => u64::try_from(n)
            .map(Duration::from_secs)
            .map_err(|_| de::Error::custom("duration must be >= 0")),
        NumOrText::Text(s) => parse_duration(&s).map_err(de::Error::custom),
    }
}

fn de_extensions<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    let list = Vec::<String>::deserialize(d)?;
    Ok(list
        .into_iter()
        .map(|e| e.trim().trim_start_matches('.').to_ascii_lowercase())
        .filter(|e| !e.is_empty())
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Loaded, ConfigError> {
        Config::parse(text, "test.toml")
    }

    #[test]
    fn empty_config_gives_defaults() {
        let c = parse("").unwrap().config;
        assert_eq!(c.server.listen.port(), 8443);
        assert_eq!(c.security.auth_failure_status, 403);
        assert!(!c.downloads.require_signature);
    }

    #[test]
    fn sizes_and_durations() {
        assert_eq!(parse_size("100MB").unwrap(), 100 << 20);
        assert_eq!(parse_size("32KB").unwrap(), 32 << 10);
        assert_eq!(parse_size("1.5GB").unwrap(), 3 << 29);
        assert_eq!(parse_size("77").unwrap(), 77);
        assert!(parse_size("10XB").is_err());
        assert!(parse_size("MB").is_err());
        assert_eq!(parse_duration("5m").unwrap(), Duration::from_secs(300));
        assert_eq!(parse_duration("1h30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("42").unwrap(), Duration::from_secs(42));
        assert!(parse_duration("5 minutes").is_err());
        assert!(parse_duration("m5").is_err());
    }

    #[test]
    fn unknown_key_is_an_error_naming_it() {
        let err = parse("[server]\nlisten_adress = \"1.2.3.4:1\"\n").unwrap_err();
        assert!(err.to_string().contains("listen_adress"), "{err}");
        let err = parse("[nonsense]\nx = 1\n").unwrap_err();
        assert!(err.to_string().contains("nonsense"), "{err}");
    }

    #[test]
    fn bad_value_is_an_error_naming_it() {
        let err = parse("[server]\nmax_upload_size = \"lots\"\n").unwrap_err();
        assert!(err.to_string().contains("max_upload_size"), "{err}");
        let err = parse("[security]\nauth_failure_status = 500\n").unwrap_err();
        assert!(err.to_string().contains("auth_failure_status"), "{err}");
    }

    #[test]
    fn quic_congestion_control_is_named() {
        use crate::transport::congestion::Congestion;
        let c = parse("[performance]\nquic_congestion_control = \"bbr\"\n").unwrap();
        assert_eq!(
            c.config.performance.quic_congestion_control,
            Congestion::Bbr
        );
        assert_eq!(
            parse("")
                .unwrap()
                .config
                .performance
                .quic_congestion_control,
            Congestion::Cubic
        );
        assert!(parse("[performance]\nquic_congestion_control = \"vegas\"\n").is_err());
    }

    #[test]
    fn debug_output_redacts_secrets() {
        let c = parse(
            "[security]\nsecret = \"topsecret-current\"\nprevious_secrets = [\"topsecret-old\"]\n",
        )
        .unwrap();
        for shown in [format!("{:?}", c), format!("{:#?}", c.config.security)] {
            assert!(!shown.contains("topsecret"), "{shown}");
            assert!(shown.contains("<redacted>"), "{shown}");
        }
    }

    #[test]
    fn max_url_lifetime_defaults_to_7_days_and_must_be_positive() {
        let c = parse("").unwrap().config;
        assert_eq!(c.security.max_url_lifetime, Duration::from_secs(7 * 86400));
        let c = parse("[security]\nmax_url_lifetime = \"10m\"\n")
            .unwrap()
            .config;
        assert_eq!(c.security.max_url_lifetime, Duration::from_secs(600));
        let err = parse("[security]\nmax_url_lifetime = 0\n").unwrap_err();
        assert!(err.to_string().contains("max_url_lifetime"), "{err}");
    }

    #[test]
    fn shipped_example_config_is_valid() {
        let text = include_str!("../config/xferd.toml");
        parse(text).unwrap();
    }
}
