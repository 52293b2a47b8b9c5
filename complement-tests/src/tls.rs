//! A certificate authority for one test: every server in the test gets its TLS
//! certificate from it and trusts it (and only it) for outgoing federation.

use std::path::{Path, PathBuf};

use anyhow::Result;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};

/// A self-signed root that issues server certificates.
pub struct TestCa {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

/// Where [`TestCa::write_files`] put a server's TLS material.
pub struct TlsFiles {
    /// The CA certificate (PEM), for the trust store of outgoing connections.
    pub ca: PathBuf,
    /// The server certificate followed by the CA certificate (PEM).
    pub certificate_chain: PathBuf,
    /// The server's private key (PKCS#8 PEM).
    pub private_key: PathBuf,
}

impl TestCa {
    /// A new root with a fresh ECDSA P-256 key.
    pub fn new() -> Self {
        let mut params = CertificateParams::default();
        params
            .distinguished_name
            .push(DnType::CommonName, "Palisade test CA");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let key = KeyPair::generate().expect("a CA key");
        let issuer = CertifiedIssuer::self_signed(params, key).expect("a self-signed CA");
        Self { issuer }
    }

    /// The CA certificate (PEM).
    pub fn ca_pem(&self) -> String {
        self.issuer.pem()
    }

    /// A server certificate for `names`: IP addresses become IP SANs, anything else DNS
    /// SANs. Returns the certificate chain (server, then CA) and the private key, both PEM.
    pub fn issue(&self, names: &[&str]) -> (String, String) {
        let names: Vec<String> = names.iter().map(|name| (*name).to_owned()).collect();
        let mut params = CertificateParams::new(names.clone()).expect("valid subject names");
        if let Some(first) = names.first() {
            params.distinguished_name.push(DnType::CommonName, first);
        }
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.use_authority_key_identifier_extension = true;
        let key = KeyPair::generate().expect("a server key");
        let certificate = params
            .signed_by(&key, &self.issuer)
            .expect("a certificate signed by the CA");
        (
            format!("{}{}", certificate.pem(), self.ca_pem()),
            key.serialize_pem(),
        )
    }

    /// Issues a certificate for `names` and writes it, its key and the CA certificate
    /// into `dir` as `ca.pem`, `tls.crt` and `tls.key`.
    pub fn write_files(&self, dir: &Path, names: &[&str]) -> Result<TlsFiles> {
        let (chain, key) = self.issue(names);
        let files = TlsFiles {
            ca: dir.join("ca.pem"),
            certificate_chain: dir.join("tls.crt"),
            private_key: dir.join("tls.key"),
        };
        std::fs::write(&files.ca, self.ca_pem())?;
        std::fs::write(&files.certificate_chain, chain)?;
        std::fs::write(&files.private_key, key)?;
        Ok(files)
    }
}

impl Default for TestCa {
    fn default() -> Self {
        Self::new()
    }
}
