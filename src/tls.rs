//! Certificates and rustls configurations (ring provider only: two providers make
//! `ServerConfig::builder()` panic).
//!
//! Without `[tls] cert`/`key`, a self-signed certificate (SANs `localhost`, `127.0.0.1`,
//! `::1`) is generated once into `state_path` and reused on later starts.

use anyhow::Context;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A certificate chain and its key, plus where they came from.
pub struct CertPair {
    pub chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
    pub cert_path: PathBuf,
}

pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Loads the configured pair, or the generated self-signed one (creating it if needed).
pub fn load_or_generate(
    cert: Option<&Path>,
    key: Option<&Path>,
    state_dir: &Path,
) -> anyhow::Result<CertPair> {
    let (cert_path, key_path) = match (cert, key) {
        (Some(c), Some(k)) => (c.to_path_buf(), k.to_path_buf()),
        _ => {
            let c = state_dir.join("cert.pem");
            let k = state_dir.join("key.pem");
            if !c.exists() || !k.exists() {
                generate_self_signed(&c, &k)?;
                tracing::info!(cert = %c.display(), "generated a self-signed certificate");
            }
            (c, k)
        }
    };
    let chain = read_certs(&cert_path)?;
    let key_pem = std::fs::read(&key_path)
        .with_context(|| format!("reading TLS key {}", key_path.display()))?;
    let key = rustls_pemfile::private_key(&mut key_pem.as_slice())
        .with_context(|| format!("parsing TLS key {}", key_path.display()))?
        .with_context(|| format!("no private key in {}", key_path.display()))?;
    Ok(CertPair {
        chain,
        key,
        cert_path,
    })
}

/// Reads every certificate from a PEM file.
pub fn read_certs(path: &Path) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let pem =
        std::fs::read(path).with_context(|| format!("reading certificate {}", path.display()))?;
    let certs: Vec<_> = rustls_pemfile::certs(&mut pem.as_slice())
        .collect::<Result<_, _>>()
        .with_context(|| format!("parsing certificate {}", path.display()))?;
    anyhow::ensure!(!certs.is_empty(), "no certificate in {}", path.display());
    Ok(certs)
}

fn generate_self_signed(cert_path: &Path, key_path: &Path) -> anyhow::Result<()> {
    let names = vec![
        "localhost".to_string(),
        "127.0.0.1".to_string(),
        "::1".to_string(),
    ];
    let ck = rcgen::generate_simple_self_signed(names).context("generating certificate")?;
    if let Some(dir) = cert_path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    write_private(key_path, ck.signing_key.serialize_pem().as_bytes())?;
    std::fs::write(cert_path, ck.cert.pem())
        .with_context(|| format!("writing {}", cert_path.display()))?;
    Ok(())
}

/// Writes a file readable by its owner only.
pub fn write_private(path: &Path, data: &[u8]) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    f.write_all(data)?;
    f.sync_all()?;
    Ok(())
}

/// rustls config for TCP: ALPN h2 then http/1.1.
pub fn tcp_server_config(pair: &CertPair) -> anyhow::Result<rustls::ServerConfig> {
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(pair.chain.clone(), pair.key.clone_key())
        .context("TLS certificate and key do not match")?;
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(cfg)
}

/// rustls config for QUIC: TLS 1.3, ALPN h3, session resumption, 0-RTT when `zero_rtt`.
/// Replay safety is the QUIC front door's: a request handled before the handshake has
/// completed may be a replay, so only safe methods are served then; others are held until
/// the handshake completes (see [`crate::transport::quic`]).
pub fn quic_server_config(pair: &CertPair, zero_rtt: bool) -> anyhow::Result<rustls::ServerConfig> {
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_no_client_auth()
        .with_single_cert(pair.chain.clone(), pair.key.clone_key())
        .context("TLS certificate and key do not match")?;
    cfg.alpn_protocols = vec![b"h3".to_vec()];
    // QUIC requires exactly this value when 0-RTT is enabled (RFC 9001 section 4.6.1).
    cfg.max_early_data_size = if zero_rtt { u32::MAX } else { 0 };
    Ok(cfg)
}
