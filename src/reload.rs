//! SIGHUP in `xferd serve`: re-read the config file and apply what can change under running
//! transfers, the secrets and `[rate_limit]` (see `config/xferd.service` for what needs a
//! restart instead, and why).

use xferd::config::Config;

/// The next SIGHUP (never, without a handler).
pub async fn next_hangup(h: &mut Option<tokio::signal::unix::Signal>) -> Option<()> {
    match h {
        Some(s) => s.recv().await,
        None => std::future::pending().await,
    }
}

/// SIGHUP: re-reads the config file and applies what can change under running transfers,
/// the secrets and `[rate_limit]` (see `config/xferd.service`); anything else needs a
/// restart. A file that does not load changes nothing.
pub fn reload(
    core: &xferd::core::Core,
    path: Option<&std::path::Path>,
    overrides: &xferd::config::Overrides,
) {
    let Some(path) = path else {
        tracing::warn!("SIGHUP: no --config file, nothing to reload");
        return;
    };
    let result = Config::load(path).map(|loaded| {
        for w in &loaded.warnings {
            tracing::warn!("{w}");
        }
        loaded.config
    });
    let mut config = match result {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "SIGHUP: config not reloaded, the running settings stay");
            return;
        }
    };
    config.apply_overrides(overrides);
    let secret = match xferd::server::resolve_secret(&config) {
        Ok((s, _)) => s,
        Err(e) => {
            tracing::error!(error = %e, "SIGHUP: secret not reloaded, the running settings stay");
            return;
        }
    };
    core.keys
        .replace(&secret, &config.security.previous_secrets);
    core.rate_limiter
        .reload(config.rate_limit.limits(), config.rate_limit.proxies());
    tracing::info!(
        config = %path.display(),
        previous_secrets = config.security.previous_secrets.len(),
        rate_limit = config.rate_limit.enabled,
        "SIGHUP: reloaded the secrets and [rate_limit]; other changes need a restart"
    );
}
