//! `[admin]`: the admin API's own listener (see `admin`). Off unless a token is configured
//! (`token` or `token_file`); plain HTTP, so its address must be a loopback one (reach it
//! remotely through an SSH tunnel or a TLS proxy, never in the clear). HFS's
//! `[admin] enabled` and `[admin.auth] token` are aliases of `enabled` and `token`.

use serde::Deserialize;
use std::net::SocketAddr;
use std::path::PathBuf;

#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    /// `false` turns the admin API off even with a token.
    pub enabled: bool,
    /// Loopback address of the admin listener (port 0: a free port).
    pub listen: SocketAddr,
    /// The bearer token (prefer `token_file`). `"${NAME}"` reads it from the environment
    /// variable `NAME` (HFS's examples write `"${ADMIN_TOKEN}"`, which HFS takes literally);
    /// an unset variable leaves the admin API off, with a warning.
    pub token: Option<String>,
    /// A file holding the bearer token (first line; keep it 0600).
    pub token_file: Option<PathBuf>,
    /// Most entries one `GET /files` page returns.
    pub max_page: usize,
}

/// Never shows the token.
impl std::fmt::Debug for AdminConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminConfig")
            .field("enabled", &self.enabled)
            .field("listen", &self.listen)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("token_file", &self.token_file)
            .field("max_page", &self.max_page)
            .finish()
    }
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig {
            enabled: true,
            listen: SocketAddr::from(([127, 0, 0, 1], 8444)),
            token: None,
            token_file: None,
            max_page: 1000,
        }
    }
}

impl AdminConfig {
    /// Whether the admin listener runs: enabled and a token configured.
    pub fn active(&self) -> bool {
        self.enabled && (self.token_value().is_some() || self.token_file.is_some())
    }

    /// The environment variable `token` names (`"${NAME}"`), if it names one.
    pub fn token_variable(&self) -> Option<&str> {
        let t = self.token.as_deref()?.trim();
        t.strip_prefix("${")?.strip_suffix('}')
    }

    /// `token`, with a `"${NAME}"` read from the environment (`None` when unset or empty).
    pub fn token_value(&self) -> Option<String> {
        match self.token_variable() {
            Some(var) => std::env::var(var)
                .ok()
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty()),
            None => self.token.as_ref().map(|t| t.trim().to_string()),
        }
    }

    pub(super) fn validate(&self) -> Result<(), super::ConfigError> {
        let bad = |key: &str, message: &str| {
            Err(super::ConfigError::Invalid {
                key: key.into(),
                message: message.into(),
            })
        };
        if !self.active() {
            return Ok(());
        }
        if !self.listen.ip().is_loopback() {
            return bad(
                "admin.listen",
                "must be a loopback address (the admin API is plain HTTP); use an SSH tunnel or a TLS proxy to reach it",
            );
        }
        if self.token_value().is_some_and(|t| t.len() < 16) {
            return bad("admin.token", "must be at least 16 characters");
        }
        if self.max_page == 0 {
            return bad("admin.max_page", "must be at least 1");
        }
        Ok(())
    }

    /// The token: `token`, else the first line of `token_file` (a short one is refused).
    pub fn resolve_token(&self) -> Result<Option<String>, super::ConfigError> {
        if let Some(t) = self.token_value() {
            return Ok(Some(t));
        }
        let Some(path) = &self.token_file else {
            return Ok(None);
        };
        let text = std::fs::read_to_string(path).map_err(|e| super::ConfigError::Invalid {
            key: "admin.token_file".into(),
            message: format!("cannot read {}: {e}", path.display()),
        })?;
        let t = text.lines().next().unwrap_or("").trim().to_string();
        if t.len() < 16 {
            return Err(super::ConfigError::Invalid {
                key: "admin.token_file".into(),
                message: "the token must be at least 16 characters".into(),
            });
        }
        Ok(Some(t))
    }
}
