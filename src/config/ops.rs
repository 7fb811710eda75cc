//! The operations sections of the configuration: `[rate_limit]` (request rate limits and the
//! trusted proxies that name the client) and `[log]` (the log line format).

use serde::Deserialize;

/// `[rate_limit]`: token buckets per client address and per path prefix, separately for
/// uploads and downloads (see `core::ratelimit`), and the trusted proxies whose forwarding
/// header names the client (see `core::client_addr`; this applies even when limits are off:
/// the client address is also the profile key and the per-client session count's).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RateLimitConfig {
    pub enabled: bool,
    /// Upload requests (PUT, POST, PATCH, DELETE) per minute per client; 0 = unlimited.
    pub uploads_per_minute: u32,
    /// Upload bucket size; 0 = half of `uploads_per_minute`, at least 5 (HFS's default).
    pub upload_burst: u32,
    /// Download requests (GET, HEAD) per minute per client; 0 = unlimited.
    pub downloads_per_minute: u32,
    /// Download bucket size; 0 = half of `downloads_per_minute`, at least 5.
    pub download_burst: u32,
    /// Path prefixes with their own buckets, shared by all clients.
    pub prefixes: Vec<PrefixLimitConfig>,
    /// Addresses never limited: CIDR blocks or single addresses. None by default.
    pub exempt: Vec<crate::core::client_addr::Cidr>,
    /// Peers whose forwarding header is believed (CIDR blocks); none by default.
    pub trusted_proxies: Vec<crate::core::client_addr::Cidr>,
    /// The header trusted proxies write: "x-forwarded-for" (default) or "forwarded".
    pub proxy_header: crate::core::client_addr::ProxyHeader,
    /// Leading bits of an IPv6 address that name one client (one subscriber's /64).
    pub ipv6_prefix: u8,
    /// Most buckets kept per direction (least recently used dropped first).
    pub max_clients: usize,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        RateLimitConfig {
            enabled: false,
            uploads_per_minute: 60,
            upload_burst: 0,
            downloads_per_minute: 600,
            download_burst: 0,
            prefixes: Vec::new(),
            exempt: Vec::new(),
            trusted_proxies: Vec::new(),
            proxy_header: Default::default(),
            ipv6_prefix: 64,
            max_clients: 100_000,
        }
    }
}

/// One `[[rate_limit.prefixes]]` entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrefixLimitConfig {
    /// Matched against the request path as sent (`/upload/bots/`).
    pub path: String,
    #[serde(default)]
    pub uploads_per_minute: u32,
    #[serde(default)]
    pub upload_burst: u32,
    #[serde(default)]
    pub downloads_per_minute: u32,
    #[serde(default)]
    pub download_burst: u32,
}

impl RateLimitConfig {
    /// The core's rate limit settings (bursts of 0 resolved).
    pub fn limits(&self) -> crate::core::ratelimit::Limits {
        use crate::core::ratelimit::{PrefixRule, Rate};
        let rate = |per_minute: u32, burst: u32| Rate {
            per_minute,
            burst: if burst == 0 {
                (per_minute / 2).max(5)
            } else {
                burst
            },
        };
        crate::core::ratelimit::Limits {
            enabled: self.enabled,
            upload: rate(self.uploads_per_minute, self.upload_burst),
            download: rate(self.downloads_per_minute, self.download_burst),
            prefixes: self
                .prefixes
                .iter()
                .map(|p| PrefixRule {
                    path: p.path.clone(),
                    upload: rate(p.uploads_per_minute, p.upload_burst),
                    download: rate(p.downloads_per_minute, p.download_burst),
                })
                .collect(),
            exempt: self.exempt.clone(),
            ipv6_prefix: self.ipv6_prefix,
            max_clients: self.max_clients,
        }
    }

    /// Who is trusted to name the client.
    pub fn proxies(&self) -> crate::core::client_addr::Proxies {
        crate::core::client_addr::Proxies {
            trusted: self.trusted_proxies.clone(),
            header: self.proxy_header,
        }
    }
}

/// `[log]`: how stderr log lines look. The level is `XFERD_LOG` (default `info`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    pub format: LogFormat,
}

/// `"text"` (default) or `"json"` (one JSON object per line).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

#[cfg(test)]
mod tests {
    use crate::config::{Config, LogFormat};

    #[test]
    fn rate_limit_and_log_sections() {
        let c = Config::parse(
            "[rate_limit]\nenabled = true\nuploads_per_minute = 10\ndownloads_per_minute = 0\n\
             trusted_proxies = [\"10.0.0.0/8\", \"::1\"]\nproxy_header = \"forwarded\"\n\
             [[rate_limit.prefixes]]\npath = \"/upload/bots/\"\nuploads_per_minute = 2\n\
             [log]\nformat = \"json\"\n",
            "t.toml",
        )
        .unwrap()
        .config;
        let l = c.rate_limit.limits();
        assert!(l.enabled);
        assert_eq!(
            (l.upload.per_minute, l.upload.burst),
            (10, 5),
            "burst: max(10/2, 5)"
        );
        assert_eq!(l.download.per_minute, 0);
        assert_eq!(l.prefixes.len(), 1);
        assert_eq!(l.prefixes[0].upload.burst, 5);
        assert_eq!(c.rate_limit.proxies().trusted.len(), 2);
        assert_eq!(c.log.format, LogFormat::Json);
        let d = Config::parse("", "t.toml").unwrap().config;
        assert!(!d.rate_limit.enabled);
        assert!(d.rate_limit.exempt.is_empty() && d.rate_limit.trusted_proxies.is_empty());
        assert_eq!(d.rate_limit.limits().upload.burst, 30);
        assert_eq!(d.log.format, LogFormat::Text);
        for bad in [
            "[log]\nformat = \"xml\"\n",
            "[rate_limit]\ntrusted_proxies = [\"10.0.0.0/40\"]\n",
            "[rate_limit]\nproxy_header = \"x-real-ip\"\n",
            "[rate_limit]\nipv6_prefix = 0\n",
            "[rate_limit]\nmax_clients = 0\n",
            "[[rate_limit.prefixes]]\npath = \"upload\"\n",
        ] {
            assert!(Config::parse(bad, "t.toml").is_err(), "{bad}");
        }
    }
}
