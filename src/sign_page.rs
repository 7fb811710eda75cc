//! `xferd sign --page`: mints an upload-page link, `https://HOST/upload-page/#<token>`, whose
//! token (see [`crate::core::auth::page`]) allows uploads under one prefix until an expiry,
//! each up to a size. The token is in the fragment, so it never reaches a server log.

use crate::config::Config;
use crate::core::auth::page::Capability;
use crate::core::auth::Keys;
use std::time::{Duration, SystemTime};

/// What `xferd sign --page` was given.
#[derive(Debug, Clone)]
pub struct PageLink<'a> {
    pub secret: &'a str,
    /// Storage prefix the uploads land under (not percent-encoded).
    pub prefix: &'a str,
    pub validity: Duration,
    /// Largest single upload; `None`: the server's `max_upload_size`.
    pub max_size: Option<u64>,
    /// Base URL; default `https://<listen>/`.
    pub base_url: Option<&'a str>,
}

/// The link, or why it cannot be minted (a prefix the server would refuse, a validity
/// longer than `security.max_url_lifetime`).
pub fn mint(cfg: &Config, req: &PageLink<'_>, now: SystemTime) -> Result<String, String> {
    let prefix = crate::core::path::validate(req.prefix.trim_matches('/'))
        .map_err(|e| format!("invalid --prefix: {e}"))?;
    let max = cfg.security.max_url_lifetime;
    if req.validity > max {
        return Err(format!(
            "--expires is longer than security.max_url_lifetime ({}s): the server would \
             refuse the link; mint a shorter one or raise the limit in the config",
            max.as_secs()
        ));
    }
    let expires = (now + req.validity)
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs();
    let cap = Capability {
        prefix: prefix.as_str().to_string(),
        expires,
        max_size: req
            .max_size
            .unwrap_or(cfg.server.max_upload_size)
            .min(cfg.server.max_upload_size),
    };
    let token = cap.mint(&Keys::new(req.secret, &[], false));
    let base = match req.base_url {
        Some(b) if b.ends_with('/') => b.to_string(),
        Some(b) => format!("{b}/"),
        None => format!("https://{}/", cfg.server.listen),
    };
    Ok(crate::core::page::link(&base, &token))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mints_a_verifiable_link() {
        let cfg = Config::default();
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let req = PageLink {
            secret: "s",
            prefix: "/inbox/",
            validity: Duration::from_secs(3600),
            max_size: Some(u64::MAX),
            base_url: Some("https://files.example"),
        };
        let url = mint(&cfg, &req, now).unwrap();
        let (base, token) = url.split_once('#').unwrap();
        assert_eq!(base, "https://files.example/upload-page/");
        let cap = Keys::new("s", &[], false)
            .verify_capability(token, 1_700_000_000, 0)
            .unwrap();
        assert_eq!(cap.prefix, "inbox");
        assert_eq!(cap.expires, 1_700_003_600);
        assert_eq!(
            cap.max_size, cfg.server.max_upload_size,
            "capped by the server's limit"
        );
        let bad = PageLink {
            prefix: "../x",
            ..req.clone()
        };
        assert!(mint(&cfg, &bad, now).is_err());
        let long = PageLink {
            validity: cfg.security.max_url_lifetime + Duration::from_secs(1),
            ..req
        };
        assert!(mint(&cfg, &long, now).is_err());
    }
}
