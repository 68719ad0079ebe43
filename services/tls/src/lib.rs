//! TLS in one place: the self-signed certificate `ferryd` makes on first
//! start, the tonic server and client configurations built from PEM files,
//! and the mesh's mutual TLS ([`issue_mesh`], [`mesh_server_config`],
//! [`mesh_client_config`], [`SanAllowLayer`]). Every ferry binary calls
//! [`install_crypto_provider`] first.

mod mesh;
mod mtls;

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use tonic::transport::{Certificate, ClientTlsConfig, Identity, ServerTlsConfig};

/// What can go wrong with TLS material.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// rcgen could not make a certificate.
    #[error("could not generate a certificate: {0}")]
    Generate(#[from] rcgen::Error),
    /// A PEM file could not be read.
    #[error("could not read {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// A PEM file holds no certificate.
    #[error("{0} holds no PEM certificate")]
    NotPem(String),
    /// A file or directory could not be written.
    #[error("could not write {path}: {source}")]
    Write {
        /// The file or directory.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The mesh's certificates are inconsistent or a name is invalid.
    #[error("{0}")]
    Mesh(String),
    /// PEM material that does not parse.
    #[error("invalid PEM: {0}")]
    Pem(String),
    /// rustls refused the material.
    #[error("invalid TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
}

pub use mesh::{MESH_DOMAIN, MESH_NAMES, MeshCertificates, issue_mesh, mesh_dns_name};
pub use mtls::{SanAllow, SanAllowLayer, mesh_client_config, mesh_server_config};

/// `Result` with this crate's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

/// Installs ring as rustls' process-wide crypto provider. Idempotent.
pub fn install_crypto_provider() {
    // Err means a provider is already installed, which is what we want.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// A certificate and its private key, both PEM.
#[derive(Clone)]
pub struct CertificateAndKey {
    /// The certificate chain, PEM.
    pub certificate_pem: String,
    /// The private key, PEM (PKCS#8).
    pub private_key_pem: String,
}

impl std::fmt::Debug for CertificateAndKey {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("CertificateAndKey")
            .field("certificate_pem", &self.certificate_pem)
            .finish_non_exhaustive()
    }
}

/// Makes a self-signed server certificate (ECDSA P-256) valid for the given
/// DNS names and IP addresses.
pub fn self_signed(subject_alt_names: &[String]) -> Result<CertificateAndKey> {
    let certified = rcgen::generate_simple_self_signed(subject_alt_names.to_vec())?;
    Ok(CertificateAndKey {
        certificate_pem: certified.cert.pem(),
        private_key_pem: certified.signing_key.serialize_pem(),
    })
}

/// The subject alternative names `ferryd` puts in its self-signed
/// certificate: localhost, the loopback addresses and the host's name.
pub fn default_subject_alt_names() -> Vec<String> {
    let mut names = vec![
        "localhost".to_owned(),
        "127.0.0.1".to_owned(),
        "::1".to_owned(),
    ];
    if let Ok(hostname) = std::fs::read_to_string("/etc/hostname") {
        let hostname = hostname.trim();
        if !hostname.is_empty() && hostname != "localhost" {
            names.push(hostname.to_owned());
        }
    }
    names
}

/// Reads a PEM file, checking that it holds at least one certificate.
pub fn read_certificate_pem(path: &Path) -> Result<String> {
    let pem = read(path)?;
    if !pem.contains("-----BEGIN CERTIFICATE-----") {
        return Err(Error::NotPem(path.display().to_string()));
    }
    Ok(pem)
}

/// Reads a certificate (chain) and its private key from PEM files.
pub fn read_certificate_and_key(certificate: &Path, key: &Path) -> Result<CertificateAndKey> {
    let certificate_pem = read_certificate_pem(certificate)?;
    let private_key_pem = read(key)?;
    if !private_key_pem.contains("PRIVATE KEY-----") {
        return Err(Error::Pem(format!(
            "{} holds no private key",
            key.display()
        )));
    }
    Ok(CertificateAndKey {
        certificate_pem,
        private_key_pem,
    })
}

pub(crate) fn read(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(|source| Error::Read {
        path: path.display().to_string(),
        source,
    })
}

/// The server side: serve with this certificate and key.
pub fn server_config(material: &CertificateAndKey) -> ServerTlsConfig {
    ServerTlsConfig::new().identity(Identity::from_pem(
        &material.certificate_pem,
        &material.private_key_pem,
    ))
}

/// A rustls server configuration (ring, TLS 1.2 and 1.3, no client
/// authentication) presenting `material` and offering the ALPN protocols
/// `alpn` (e.g. `[b"h2"]`), for servers built on hyper rather than tonic.
pub fn rustls_server_config(
    material: &CertificateAndKey,
    alpn: &[&[u8]],
) -> Result<Arc<rustls::ServerConfig>> {
    let chain = CertificateDer::pem_slice_iter(material.certificate_pem.as_bytes())
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|error| Error::Pem(format!("certificate: {error}")))?;
    if chain.is_empty() {
        return Err(Error::Pem("no certificate in the chain".to_owned()));
    }
    let key = PrivateKeyDer::from_pem_slice(material.private_key_pem.as_bytes())
        .map_err(|error| Error::Pem(format!("private key: {error}")))?;
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_no_client_auth()
    .with_single_cert(chain, key)?;
    config.alpn_protocols = alpn.iter().map(|protocol| protocol.to_vec()).collect();
    Ok(Arc::new(config))
}

/// The client side: trust `ca_pem` (a self-signed server certificate or the
/// CA that issued it) when given, else the public web PKI roots.
pub fn client_config(ca_pem: Option<&str>, domain: Option<&str>) -> ClientTlsConfig {
    let mut config = ClientTlsConfig::new();
    config = match ca_pem {
        Some(pem) => config.ca_certificate(Certificate::from_pem(pem)),
        None => config.with_webpki_roots(),
    };
    if let Some(domain) = domain {
        config = config.domain_name(domain);
    }
    config
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn self_signed_certificate_is_pem_and_names_localhost() {
        let material = self_signed(&default_subject_alt_names()).expect("generate");
        assert!(
            material
                .certificate_pem
                .starts_with("-----BEGIN CERTIFICATE-----")
        );
        assert!(material.private_key_pem.contains("PRIVATE KEY"));
        let debug = format!("{material:?}");
        assert!(!debug.contains("PRIVATE KEY"), "debug output leaks the key");
    }

    #[test]
    fn reading_a_non_pem_file_is_a_clear_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("not.pem");
        std::fs::write(&path, "hello").expect("write");
        let error = read_certificate_pem(&path).expect_err("must fail");
        assert!(
            error.to_string().contains("holds no PEM certificate"),
            "{error}"
        );
        let missing = read_certificate_pem(&dir.path().join("missing.pem")).expect_err("must fail");
        assert!(
            missing.to_string().starts_with("could not read"),
            "{missing}"
        );
    }
}
