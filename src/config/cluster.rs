//! `[cluster]`: several instances sharing their session state. With `redis_url` set, the
//! records of resumable uploads and the one-writer lock per upload live in that Redis
//! (see [`crate::storage::meta::RedisRecords`]); without it, one instance keeps them in its
//! local redb store. A cluster needs `security.secret` and `tls.cert`/`tls.key` from the
//! configuration: a secret or certificate generated per instance would differ between them.

use super::de_duration;
use serde::Deserialize;
use std::time::Duration;

/// Debug redacts `redis_url` (it may carry a password): configs get logged.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterConfig {
    /// `redis://host:port/db` of the shared Redis; unset = a single instance.
    pub redis_url: Option<String>,
    /// Prefix of every key xferd writes in Redis (several deployments can share one).
    pub key_prefix: String,
    /// How long an upload's lock outlives a holder that stopped renewing it (a dead
    /// instance): a client resuming elsewhere waits at most about this long.
    #[serde(deserialize_with = "de_duration")]
    pub lock_lease: Duration,
    /// Bound on every Redis call, connecting included; past it the request gets a 503.
    #[serde(deserialize_with = "de_duration")]
    pub redis_timeout: Duration,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            redis_url: None,
            key_prefix: "xferd:".to_string(),
            lock_lease: Duration::from_secs(10),
            redis_timeout: Duration::from_secs(2),
        }
    }
}

impl std::fmt::Debug for ClusterConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let url = if self.redis_url.is_some() {
            "<redacted>"
        } else {
            "<none>"
        };
        f.debug_struct("ClusterConfig")
            .field("redis_url", &url)
            .field("key_prefix", &self.key_prefix)
            .field("lock_lease", &self.lock_lease)
            .field("redis_timeout", &self.redis_timeout)
            .finish()
    }
}

impl ClusterConfig {
    /// Whether several instances share state (a Redis is configured).
    pub fn enabled(&self) -> bool {
        self.redis_url.is_some()
    }
}

#[cfg(test)]
mod tests {
    use crate::config::Config;
    use std::time::Duration;

    #[test]
    fn the_cluster_section_parses_and_defaults_to_one_instance() {
        let one = Config::parse("", "test").unwrap().config.cluster;
        assert!(!one.enabled());
        assert_eq!(one.lock_lease, Duration::from_secs(10));
        let text = "[cluster]\nredis_url = \"redis://127.0.0.1:6379/0\"\nkey_prefix = \"a:\"\n\
                    lock_lease = \"3s\"\nredis_timeout = 1\n";
        let c = Config::parse(text, "test").unwrap().config.cluster;
        assert!(c.enabled());
        assert_eq!(c.redis_url.as_deref(), Some("redis://127.0.0.1:6379/0"));
        assert_eq!(c.key_prefix, "a:");
        assert_eq!(
            (c.lock_lease, c.redis_timeout),
            (Duration::from_secs(3), Duration::from_secs(1))
        );
        assert!(Config::parse("[cluster]\nredis = \"x\"\n", "test").is_err());
        let with_password = "[cluster]\nredis_url = \"redis://:hunter2@10.0.0.1:6379/0\"\n";
        let c = Config::parse(with_password, "test").unwrap().config;
        let shown = format!("{c:?}");
        assert!(
            !shown.contains("hunter2") && shown.contains("<redacted>"),
            "{shown}"
        );
    }
}
