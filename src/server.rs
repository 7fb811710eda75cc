//! Wires configuration, core and front doors together: [`start`] binds TCP and UDP on the
//! same port (a free one when the configured port is 0), starts every listener and returns
//! a [`Server`] handle whose [`Server::shutdown`] drains in-flight transfers.

use crate::config::Config;
use crate::core::{auth::Keys, Core, Settings};
use crate::storage::FsStorage;
use crate::transport::{quic, tcp, Limits, Shared};
use anyhow::Context;
use http::HeaderValue;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};

/// A running server.
pub struct Server {
    /// TCP (TLS) address; UDP (HTTP/3) uses the same one.
    pub addr: SocketAddr,
    pub plain_addr: Option<SocketAddr>,
    /// The separate metrics listener, when configured.
    pub metrics_addr: Option<SocketAddr>,
    /// PEM certificate the server presents (trust it in clients).
    pub cert_path: PathBuf,
    /// The current signing secret.
    pub secret: String,
    /// Whether the secret was generated (and should be shown to the operator).
    pub secret_generated: bool,
    /// UDP socket buffer sizes granted by the kernel.
    pub udp_buffers: (usize, usize),
    shutdown: watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    /// Runs quinn's drivers (see [`quic::QuicRuntime`]).
    quic_runtime: Option<tokio::runtime::Runtime>,
}

impl Drop for Server {
    fn drop(&mut self) {
        // A runtime may not be dropped from async code; let its thread wind down alone.
        if let Some(rt) = self.quic_runtime.take() {
            rt.shutdown_background();
        }
    }
}

impl Server {
    /// Stops accepting, lets in-flight transfers finish (up to `shutdown_grace`), returns.
    pub async fn shutdown(mut self) {
        let _ = self.shutdown.send(true);
        for t in std::mem::take(&mut self.tasks) {
            let _ = t.await;
        }
    }
}

/// Returns the configured secret, or the one stored in `state_path` (generated once).
pub fn resolve_secret(config: &Config) -> anyhow::Result<(String, bool)> {
    if let Some(s) = &config.security.secret {
        return Ok((s.clone(), false));
    }
    let path = config.server.state_path.join("secret");
    if let Ok(s) = std::fs::read_to_string(&path) {
        let s = s.trim().to_string();
        anyhow::ensure!(!s.is_empty(), "stored secret {} is empty", path.display());
        return Ok((s, false));
    }
    std::fs::create_dir_all(&config.server.state_path)
        .with_context(|| format!("creating {}", config.server.state_path.display()))?;
    let secret = hex::encode(rand::random::<[u8; 32]>());
    crate::tls::write_private(&path, secret.as_bytes())?;
    Ok((secret, true))
}

/// Starts every listener described by `config`.
pub async fn start(config: Config) -> anyhow::Result<Server> {
    std::fs::create_dir_all(&config.server.state_path).with_context(|| {
        format!(
            "creating state directory {}",
            config.server.state_path.display()
        )
    })?;
    let storage = FsStorage::open(&config.server.storage_path)
        .with_context(|| format!("opening storage {}", config.server.storage_path.display()))?;
    let swept = storage
        .sweep_temp_files()
        .context("sweeping temporary files")?;
    if swept > 0 {
        tracing::info!(
            count = swept,
            "removed temporary files left by an earlier crash"
        );
    }
    let (secret, secret_generated) = resolve_secret(&config)?;
    if config.security.compat_path_only_mac {
        tracing::warn!(
            "INSECURE: security.compat_path_only_mac accepts MACs that do not bind the size"
        );
    }
    let keys = Keys::new(
        &secret,
        &config.security.previous_secrets,
        config.security.compat_path_only_mac,
    );
    let parts = crate::storage::PartStore::open(&storage).context("opening session data")?;
    let sessions =
        crate::storage::SessionStore::open(&config.server.state_path.join("sessions.redb"))
            .context("opening the session store")?;
    let perf = &config.performance;
    let streaming = &config.streaming;
    let pool = crate::core::buffers::Pool::new(
        usize::try_from(perf.min_buffer_size).unwrap_or(32 << 10),
        usize::try_from(perf.max_buffer_size).unwrap_or(1 << 20),
        perf.buffer_memory_limit,
    );
    let r = &config.resumable;
    let limits = crate::core::resumable::Limits {
        max_sessions: r.max_sessions,
        max_sessions_per_client: r.max_sessions_per_client,
        max_reserved_bytes: r.max_reserved_bytes,
        max_length: r.max_session_length.min(config.server.max_upload_size),
        ttl_secs: r.session_ttl.as_secs().max(1),
        pool: pool.clone(),
        commit_every: r.commit_every,
    };
    let engine = crate::core::resumable::Engine::open(sessions, parts, limits)
        .map_err(|e| anyhow::anyhow!("recovering resumable sessions: {e}"))?;
    if config.security.compat_hfs_x_signature {
        tracing::warn!("INSECURE: security.compat_hfs_x_signature accepts replayable X-Signature headers on POST /upload");
    }
    let profile_store = crate::storage::SessionStore::open_profiles(
        &config.server.state_path.join("profiles.redb"),
    )
    .context("opening the client profile store")?;
    let profiles = Arc::new(crate::core::profiles::Profiles::new(
        perf.client_profiling,
        perf.connection_type_detection,
        perf.max_profiles,
        perf.profile_persistence_duration.as_secs().max(1),
    ));
    if perf.client_profiling {
        let now = crate::core::unix_secs(std::time::SystemTime::now());
        let stored = profile_store.all().context("reading client profiles")?;
        let parsed: Vec<_> = stored
            .into_iter()
            .filter_map(|(k, v)| serde_json::from_slice(&v).ok().map(|p| (k, p)))
            .collect();
        profiles.load(parsed, now);
    }
    let metrics = crate::metrics::Metrics::new(pool.clone(), profiles.clone());
    let telemetry: Arc<dyn crate::core::Telemetry> = metrics.clone();
    let adaptive = Arc::new(crate::core::adaptive::Adaptive {
        options: crate::core::adaptive::Options {
            bounds: crate::core::sizing::Bounds {
                min_buffer: pool.min(),
                max_buffer: pool.max(),
                min_chunk: perf.min_chunk_size,
                max_chunk: perf.max_chunk_size,
            },
            adaptive_buffers: perf.adaptive_buffers,
            interval: perf.buffer_optimization_interval,
            intelligent_chunking: perf.intelligent_chunking,
            algorithm: perf.chunk_adaptation_algorithm,
            configured_chunk: r.chunk_size,
            bandwidth_estimation: streaming.bandwidth_estimation,
            quality_adaptation: streaming.quality_adaptation,
        },
        pool: pool.clone(),
        profiles,
        telemetry: telemetry.clone(),
    });
    let resilience = crate::core::retry::Resilience::new(
        streaming.automatic_retry,
        streaming.exponential_backoff,
        streaming.circuit_breaker,
        telemetry,
    );
    let core = Arc::new(Core::new(
        Settings::from_config(&config),
        keys,
        storage,
        engine,
        adaptive,
        resilience,
    ));
    let expiry_interval = config.resumable.expiry_interval;

    let certs = crate::tls::load_or_generate(
        config.tls.cert.as_deref(),
        config.tls.key.as_deref(),
        &config.server.state_path,
    )?;
    let tcp_tls = tokio_rustls::TlsAcceptor::from(Arc::new(crate::tls::tcp_server_config(&certs)?));
    let quic_tls = crate::tls::quic_server_config(&certs, config.server.zero_rtt)?;

    let tuning = quic::UdpTuning {
        recv_buffer: usize::try_from(config.server.udp_recv_buffer).unwrap_or(usize::MAX),
        send_buffer: usize::try_from(config.server.udp_send_buffer).unwrap_or(usize::MAX),
    };
    let (listener, udp, granted_rx, granted_tx) = bind_pair(config.server.listen, tuning).await?;
    let addr = listener.local_addr()?;
    let quic_runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("xferd-quic")
        .enable_all()
        .build()
        .context("starting the QUIC driver thread")?;
    let endpoint = quic::endpoint(
        udp,
        quic_tls,
        config.server.idle_timeout,
        streaming.connection_multiplexing,
        config.performance.quic_congestion_control,
        quic_runtime.handle().clone(),
    )?;

    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let shared = Shared {
        core,
        connections: Arc::new(Semaphore::new(config.server.max_connections)),
        shutdown: shutdown_rx,
        limits: Limits {
            header_read_timeout: config.server.header_read_timeout,
            idle_timeout: config.server.idle_timeout,
            multiplexing: streaming.connection_multiplexing,
            readings: streaming.bandwidth_estimation,
            zero_rtt: config.server.zero_rtt,
            max_header_size: config.server.max_header_size,
        },
        metrics: metrics.clone(),
    };
    let grace = config.server.shutdown_grace;
    let alt_svc = HeaderValue::from_str(&format!("h3=\":{}\"; ma=86400", addr.port()))?;
    let mut tasks = vec![
        tokio::spawn(tcp::run(
            listener,
            Some(tcp_tls),
            Some(alt_svc),
            shared.clone(),
            grace,
        )),
        tokio::spawn(quic::run(endpoint, shared.clone(), grace)),
    ];
    tasks.push(tokio::spawn(collect_expired(
        shared.core.clone(),
        expiry_interval,
        shared.shutdown.clone(),
    )));
    tasks.push(tokio::spawn(persist_profiles(
        shared.core.clone(),
        Arc::new(profile_store),
        shared.shutdown.clone(),
    )));
    let mut metrics_addr = None;
    if let (true, Some(addr)) = (config.metrics.enabled, config.metrics.listen) {
        let l = TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding metrics.listen {addr}"))?;
        metrics_addr = Some(l.local_addr()?);
        tasks.push(tokio::spawn(crate::transport::tcp::serve_metrics(
            l,
            metrics.clone(),
            shared.shutdown.clone(),
        )));
    }
    let mut plain_addr = None;
    if let Some(p) = config.server.plain_listen {
        let l = TcpListener::bind(p)
            .await
            .with_context(|| format!("binding plain_listen {p}"))?;
        plain_addr = Some(l.local_addr()?);
        tasks.push(tokio::spawn(tcp::run(l, None, None, shared.clone(), grace)));
    }
    Ok(Server {
        addr,
        plain_addr,
        metrics_addr,
        cert_path: certs.cert_path,
        secret,
        secret_generated,
        udp_buffers: (granted_rx, granted_tx),
        shutdown: shutdown_tx,
        tasks,
        quic_runtime: Some(quic_runtime),
    })
}

/// Binds TCP and UDP on the same port; with port 0, retries until both get the same one.
async fn bind_pair(
    addr: SocketAddr,
    tuning: quic::UdpTuning,
) -> anyhow::Result<(TcpListener, std::net::UdpSocket, usize, usize)> {
    let mut last_err = None;
    for _ in 0..20 {
        let listener = TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding TCP {addr}"))?;
        let bound = listener.local_addr()?;
        match quic::bind_udp(bound, tuning) {
            Ok((udp, rx, tx)) => return Ok((listener, udp, rx, tx)),
            Err(e) if addr.port() == 0 => last_err = Some(e),
            Err(e) => return Err(e).with_context(|| format!("binding UDP {bound}")),
        }
    }
    Err(anyhow::anyhow!(
        "could not bind TCP and UDP on one free port: {:?}",
        last_err
    ))
}

/// How often changed client profiles are written to disk.
const PROFILE_FLUSH: std::time::Duration = std::time::Duration::from_secs(10);

/// Writes changed client profiles to the profile store every [`PROFILE_FLUSH`] and once
/// more at shutdown, deleting expired ones.
async fn persist_profiles(
    core: Arc<Core>,
    store: Arc<crate::storage::SessionStore>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let stop = tokio::select! {
            _ = tokio::time::sleep(PROFILE_FLUSH) => false,
            _ = crate::transport::shutdown_signalled(&mut shutdown) => true,
        };
        let profiles = &core.adaptive.profiles;
        let now = crate::core::unix_secs(std::time::SystemTime::now());
        let gone = profiles.prune(now);
        let changed: Vec<(String, Vec<u8>)> = profiles
            .take_dirty()
            .into_iter()
            .filter_map(|(k, p)| serde_json::to_vec(&p).ok().map(|v| (k, v)))
            .collect();
        if !(changed.is_empty() && gone.is_empty()) {
            let store = store.clone();
            let r = tokio::task::spawn_blocking(move || store.apply(&changed, &gone)).await;
            if !matches!(r, Ok(Ok(()))) {
                tracing::warn!("saving client profiles failed");
            }
        }
        if stop {
            return;
        }
    }
}

/// Collects expired resumable sessions every `interval` until shutdown.
async fn collect_expired(
    core: Arc<Core>,
    interval: std::time::Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = crate::transport::shutdown_signalled(&mut shutdown) => return,
        }
        let now = crate::core::unix_secs(std::time::SystemTime::now());
        match core.engine.expire(now).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(count = n, "collected expired upload sessions"),
            Err(e) => tracing::warn!(error = %e, "collecting expired sessions failed"),
        }
    }
}
