//! Which server certificates the client accepts: the system's roots (default), a given
//! certificate file (`--ca`), or anything (`--insecure`, for self-signed test servers).

use anyhow::Context;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::DigitallySignedStruct;
use std::sync::Arc;

#[derive(Debug, Clone)]
pub enum Trust {
    /// The operating system's trust store.
    System,
    /// Exactly these certificates (e.g. a self-signed server's own).
    Roots(Vec<CertificateDer<'static>>),
    /// No verification at all.
    Insecure,
}

impl Trust {
    /// A rustls client config for this trust, with the given ALPN protocols.
    pub fn client_config(&self, alpn: &[&[u8]]) -> anyhow::Result<rustls::ClientConfig> {
        let builder = rustls::ClientConfig::builder_with_provider(crate::tls::provider())
            .with_safe_default_protocol_versions()?;
        let mut cfg = match self {
            Trust::Insecure => builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AcceptAnything))
                .with_no_client_auth(),
            Trust::Roots(roots) => {
                let mut store = rustls::RootCertStore::empty();
                for c in roots {
                    store.add(c.clone()).context("adding trusted certificate")?;
                }
                builder.with_root_certificates(store).with_no_client_auth()
            }
            Trust::System => {
                let found = rustls_native_certs::load_native_certs();
                let mut store = rustls::RootCertStore::empty();
                let (added, _) = store.add_parsable_certificates(found.certs);
                anyhow::ensure!(
                    added > 0,
                    "no system root certificates found; use --ca FILE or --insecure"
                );
                builder.with_root_certificates(store).with_no_client_auth()
            }
        };
        cfg.alpn_protocols = alpn.iter().map(|a| a.to_vec()).collect();
        // Session tickets are kept (rustls's default in-memory store) for resumption.
        cfg.enable_early_data = true;
        Ok(cfg)
    }
}

/// `--insecure`: accepts any certificate (signatures are still checked for well-formedness
/// by the handshake, not for trust).
#[derive(Debug)]
struct AcceptAnything;

impl ServerCertVerifier for AcceptAnything {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }

    fn verify_tls13_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        crate::tls::provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}
