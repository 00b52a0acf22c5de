//! Mutual TLS for herd links (rustls): both sides present a certificate of
//! the herd CA and trust nothing else. A certificate names its station in
//! its subject alternative name (`pollstation herd init` makes them); the
//! name must equal the station id the peer claims in its hello.
//!
//! The dialer does not know which station answers at an address, so its
//! verifier checks the chain for the name the certificate itself carries
//! (still a full webpki verification against the herd CA), and the link
//! compares that name with the hello.

use std::path::Path;
use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};

use crate::config::HerdConfig;

/// Why the herd's TLS cannot be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{what} {path}: {error}")]
    File {
        what: &'static str,
        path: String,
        error: String,
    },
    #[error("the herd CA or this station's certificate is not usable: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("the herd CA is not usable: {0}")]
    Verifier(String),
    #[error(
        "this station's certificate names {found:?}, not its station id {want:?} (make it with `pollstation herd init`)"
    )]
    WrongName { want: String, found: String },
}

fn file_error(what: &'static str, path: &Path, e: impl std::fmt::Display) -> TlsError {
    TlsError::File {
        what,
        path: path.display().to_string(),
        error: e.to_string(),
    }
}

/// The station names a certificate carries (its DNS subject alternative names).
#[must_use]
pub fn names(cert: &CertificateDer<'_>) -> Vec<String> {
    webpki::EndEntityCert::try_from(cert)
        .map(|c| c.valid_dns_names().map(str::to_string).collect())
        .unwrap_or_default()
}

/// The herd's TLS, both ways.
#[derive(Clone)]
pub struct HerdTls {
    pub client: Arc<rustls::ClientConfig>,
    pub server: Arc<rustls::ServerConfig>,
}

impl std::fmt::Debug for HerdTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HerdTls { … }")
    }
}

/// Verifies a server's chain against the herd CA, for the station name in
/// its own certificate.
#[derive(Debug)]
struct HerdServerVerifier(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for HerdServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let name = names(end_entity).into_iter().next().ok_or_else(|| {
            rustls::Error::InvalidCertificate(rustls::CertificateError::NotValidForName)
        })?;
        let name = ServerName::try_from(name).map_err(|_| {
            rustls::Error::InvalidCertificate(rustls::CertificateError::NotValidForName)
        })?;
        self.0
            .verify_server_cert(end_entity, intermediates, &name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

impl HerdTls {
    /// Load the herd CA and this station's certificate and key (the key
    /// refused when other users may read it).
    pub fn load(cfg: &HerdConfig, station: &str) -> Result<Self, TlsError> {
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        let mut roots = RootCertStore::empty();
        let cas = CertificateDer::pem_file_iter(&cfg.ca)
            .map_err(|e| file_error("cannot read the herd CA", &cfg.ca, e))?;
        for ca in cas {
            let ca = ca.map_err(|e| file_error("cannot read the herd CA", &cfg.ca, e))?;
            roots.add(ca)?;
        }
        let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&cfg.cert)
            .map_err(|e| file_error("cannot read this station's certificate", &cfg.cert, e))?
            .collect::<Result<_, _>>()
            .map_err(|e| file_error("cannot read this station's certificate", &cfg.cert, e))?;
        let found = chain.first().map(names).unwrap_or_default();
        if !found.iter().any(|n| n == station) {
            return Err(TlsError::WrongName {
                want: station.to_string(),
                found: found.join(", "),
            });
        }
        crate::sys::secret::check_private(&cfg.key)
            .map_err(|e| file_error("refused the key", &cfg.key, e))?;
        let key = PrivateKeyDer::from_pem_file(&cfg.key)
            .map_err(|e| file_error("cannot read this station's key", &cfg.key, e))?;
        let roots = Arc::new(roots);
        let verifier = WebPkiServerVerifier::builder(roots.clone())
            .build()
            .map_err(|e| TlsError::Verifier(e.to_string()))?;
        let client = rustls::ClientConfig::builder()
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(HerdServerVerifier(verifier)))
            .with_client_auth_cert(chain.clone(), key.clone_key())?;
        let client_verifier = WebPkiClientVerifier::builder(roots)
            .build()
            .map_err(|e| TlsError::Verifier(e.to_string()))?;
        let server = rustls::ServerConfig::builder()
            .with_client_cert_verifier(client_verifier)
            .with_single_cert(chain, key)?;
        Ok(Self {
            client: Arc::new(client),
            server: Arc::new(server),
        })
    }
}
