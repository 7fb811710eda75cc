//! `[quota]`: a cap on all stored bytes and caps per storage path prefix (see `core::quota`).
//! HFS's `[quotas]` are per user (JID), which a signed XEP-0363 URL does not carry, so they
//! are accepted but not applied; these are xferd's own keys.

use super::{de_size, ConfigError};
use serde::Deserialize;

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QuotaConfig {
    /// Most bytes stored in total; 0 = no total cap.
    #[serde(deserialize_with = "de_size")]
    pub total: u64,
    /// Caps per prefix of the stored path (after `server.path_prefix`), e.g. `xmpp/`.
    pub prefixes: Vec<QuotaPrefixConfig>,
}

/// One `[[quota.prefixes]]` entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuotaPrefixConfig {
    pub prefix: String,
    #[serde(deserialize_with = "de_size")]
    pub max: u64,
}

impl QuotaConfig {
    /// The core's rules (the total cap is the rule with an empty prefix).
    pub fn rules(&self) -> Vec<crate::core::quota::Rule> {
        use crate::core::quota::Rule;
        let total = (self.total > 0).then(|| Rule {
            prefix: String::new(),
            max: self.total,
        });
        total
            .into_iter()
            .chain(self.prefixes.iter().map(|p| Rule {
                prefix: p.prefix.clone(),
                max: p.max,
            }))
            .collect()
    }

    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        for p in &self.prefixes {
            if p.prefix.is_empty() || p.prefix.starts_with('/') || p.prefix.contains("..") {
                return Err(ConfigError::Invalid {
                    key: "quota.prefixes".into(),
                    message: format!(
                        "`{}`: a prefix is a stored path like \"xmpp/\" (not empty, no leading `/`, no `..`; the total cap is `quota.total`)",
                        p.prefix
                    ),
                });
            }
        }
        Ok(())
    }
}
