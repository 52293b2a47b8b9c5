//! TLS for federation: the listener's server configuration, a self-signed certificate for a
//! server started without one, and the client configuration the outgoing requests use.
//!
//! Every configuration here is built with [`crypto_provider`] (rustls on aws-lc-rs, the provider
//! reqwest's rustls support already brings in), never with a process-wide default, so nothing
//! depends on one having been installed.

use std::{path::Path, sync::Arc};

use rustls::{
    ClientConfig, DigitallySignedStruct, RootCertStore, ServerConfig, SignatureScheme,
    client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
    crypto::{CryptoProvider, WebPkiSupportedAlgorithms},
    pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime, pem::PemObject},
};

/// The ALPN protocols both sides offer, most preferred first.
const ALPN_H2_AND_HTTP1: [&[u8]; 2] = [b"h2", b"http/1.1"];

/// What can go wrong building a TLS configuration or certificate.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A PEM file could not be read.
    #[error("could not read {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// PEM text held no usable certificate or key.
    #[error("invalid PEM ({what}): {reason}")]
    Pem {
        /// What was being read: "certificate chain", "private key", a file name.
        what: String,
        /// Why it was rejected.
        reason: String,
    },
    /// rustls refused the configuration (e.g. a key that does not match the certificate).
    #[error("TLS configuration rejected: {0}")]
    Rustls(#[from] rustls::Error),
    /// Generating a self-signed certificate failed.
    #[error("could not generate a certificate: {0}")]
    Generate(#[from] rcgen::Error),
}

/// The crypto provider every TLS configuration in this crate uses: rustls on aws-lc-rs.
pub fn crypto_provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// The federation listener's configuration from PEM files: the certificate chain (leaf first)
/// and its private key. Offers HTTP/2 and HTTP/1.1 through ALPN.
pub fn server_config(
    certificate_chain_pem: &Path,
    private_key_pem: &Path,
) -> Result<Arc<ServerConfig>, TlsError> {
    server_config_from_pem(&read(certificate_chain_pem)?, &read(private_key_pem)?)
}

/// The federation listener's configuration from PEM text, as [`server_config`] but for a
/// certificate held in memory (such as one from [`self_signed`]).
pub fn server_config_from_pem(
    certificate_chain_pem: &[u8],
    private_key_pem: &[u8],
) -> Result<Arc<ServerConfig>, TlsError> {
    let chain = certificates(certificate_chain_pem, "certificate chain")?;
    let key = PrivateKeyDer::from_pem_slice(private_key_pem).map_err(|error| TlsError::Pem {
        what: "private key".to_owned(),
        reason: error.to_string(),
    })?;
    let mut config = ServerConfig::builder_with_provider(crypto_provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain, key)?;
    config.alpn_protocols = ALPN_H2_AND_HTTP1.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(config))
}

/// A self-signed certificate for `names` (DNS names or IP addresses), for a server started
/// without a configured one. Returns the certificate and its private key, both PEM.
///
/// Other servers reject a self-signed certificate unless told to skip verification, so this
/// is for development and tests.
pub fn self_signed(names: &[String]) -> Result<(String, String), TlsError> {
    let certified = rcgen::generate_simple_self_signed(names.to_vec())?;
    Ok((certified.cert.pem(), certified.signing_key.serialize_pem()))
}

/// The client configuration for plain web requests (URL previews): the Mozilla roots,
/// HTTP/2 or HTTP/1.1, the same crypto provider as federation.
pub fn web_client_config() -> Result<ClientConfig, TlsError> {
    client_config(true, &[] as &[&Path], false)
}

/// The client configuration for outgoing federation requests.
///
/// With `verify_certificates`, servers must present a certificate chaining to the Mozilla
/// roots or to one of `extra_roots_pem` (each a PEM file that may hold several certificates).
/// Without it any certificate is accepted (the handshake signature is still checked); that is
/// for tests only. `http1_only` offers only `http/1.1` through ALPN.
pub(crate) fn client_config(
    verify_certificates: bool,
    extra_roots_pem: &[impl AsRef<Path>],
    http1_only: bool,
) -> Result<ClientConfig, TlsError> {
    let provider = crypto_provider();
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?;
    let mut config = if verify_certificates {
        let mut roots = RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        };
        for path in extra_roots_pem {
            let path = path.as_ref();
            for certificate in certificates(&read(path)?, &path.display().to_string())? {
                roots.add(certificate)?;
            }
        }
        builder.with_root_certificates(roots).with_no_client_auth()
    } else {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyCertificate(
                provider.signature_verification_algorithms,
            )))
            .with_no_client_auth()
    };
    config.alpn_protocols = if http1_only {
        vec![b"http/1.1".to_vec()]
    } else {
        ALPN_H2_AND_HTTP1.iter().map(|p| p.to_vec()).collect()
    };
    Ok(config)
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.display().to_string(),
        source,
    })
}

/// All certificates in PEM text; at least one.
fn certificates(pem: &[u8], what: &str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let invalid = |reason: String| TlsError::Pem {
        what: what.to_owned(),
        reason,
    };
    let certificates = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| invalid(error.to_string()))?;
    if certificates.is_empty() {
        return Err(invalid("no certificate in it".to_owned()));
    }
    Ok(certificates)
}

/// Accepts every certificate, but still checks that the server holds the key of the
/// certificate it presented.
#[derive(Debug)]
struct AnyCertificate(WebPkiSupportedAlgorithms);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        certificate: &CertificateDer<'_>,
        signature: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, certificate, signature, &self.0)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        certificate: &CertificateDer<'_>,
        signature: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, certificate, signature, &self.0)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_self_signed_certificate_makes_a_server_config_offering_h2_and_http1() {
        let (certificate, key) =
            self_signed(&["example.org".to_owned(), "127.0.0.1".to_owned()]).unwrap();
        assert!(certificate.starts_with("-----BEGIN CERTIFICATE-----"));
        let config = server_config_from_pem(certificate.as_bytes(), key.as_bytes()).unwrap();
        assert_eq!(
            config.alpn_protocols,
            [b"h2".to_vec(), b"http/1.1".to_vec()]
        );
    }

    #[test]
    fn server_config_reads_pem_files() {
        let dir = tempfile::tempdir().unwrap();
        let (certificate, key) = self_signed(&["example.org".to_owned()]).unwrap();
        std::fs::write(dir.path().join("cert.pem"), certificate).unwrap();
        std::fs::write(dir.path().join("key.pem"), key).unwrap();
        server_config(&dir.path().join("cert.pem"), &dir.path().join("key.pem")).unwrap();
    }

    #[test]
    fn a_key_that_does_not_match_the_certificate_is_refused() {
        let (certificate, _) = self_signed(&["example.org".to_owned()]).unwrap();
        let (_, other_key) = self_signed(&["example.org".to_owned()]).unwrap();
        let error = server_config_from_pem(certificate.as_bytes(), other_key.as_bytes());
        assert!(matches!(error, Err(TlsError::Rustls(_))), "{error:?}");
    }

    #[test]
    fn missing_or_empty_pem_is_an_error_not_a_panic() {
        assert!(matches!(
            server_config(
                Path::new("/nonexistent/cert.pem"),
                Path::new("/nonexistent/key.pem")
            ),
            Err(TlsError::Read { .. })
        ));
        assert!(matches!(
            server_config_from_pem(b"", b""),
            Err(TlsError::Pem { .. })
        ));
        assert!(matches!(
            client_config(true, &[Path::new("/nonexistent/ca.pem")], false),
            Err(TlsError::Read { .. })
        ));
    }
}
