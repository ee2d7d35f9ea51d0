//! Certificates for the TLS tests (issue 22), generated with rcgen into a test's temporary
//! directory: a CA, a server certificate for 127.0.0.1 and localhost signed by it, and client
//! certificates with a chosen CN.
#![allow(dead_code)] // each test binary uses a different subset

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};

/// A certificate authority that signs server and client certificates.
pub struct Ca {
    issuer: Issuer<'static, KeyPair>,
    pem: String,
    /// Where its certificate is, as PEM.
    pub file: PathBuf,
}

/// A certificate and its key, as PEM files.
pub struct CertFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl Ca {
    /// A new CA whose certificate is written to `<dir>/<name>-ca.pem`.
    pub fn new(dir: &Path, name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, format!("{name} test CA"));
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = KeyPair::generate().unwrap();
        let pem = params.self_signed(&key).unwrap().pem();
        let file = dir.join(format!("{name}-ca.pem"));
        std::fs::write(&file, &pem).unwrap();
        Ca { issuer: Issuer::new(params, key), pem, file }
    }

    /// The CA's certificate as PEM.
    pub fn pem(&self) -> &str {
        &self.pem
    }

    /// A server certificate for 127.0.0.1 and localhost, written to `<dir>/<name>.pem` and
    /// `<dir>/<name>.key`.
    pub fn server(&self, dir: &Path, name: &str) -> CertFiles {
        let mut params = CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()]).unwrap();
        params.distinguished_name.push(DnType::CommonName, "strata test server");
        self.sign(params, dir, name)
    }

    /// A client certificate whose subject CN is `common_name` (none when `None`).
    pub fn client(&self, dir: &Path, name: &str, common_name: Option<&str>) -> CertFiles {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params.distinguished_name.push(DnType::OrganizationName, "strata tests");
        if let Some(cn) = common_name {
            params.distinguished_name.push(DnType::CommonName, cn);
        }
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
        self.sign(params, dir, name)
    }

    fn sign(&self, params: CertificateParams, dir: &Path, name: &str) -> CertFiles {
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        let files = CertFiles { cert: dir.join(format!("{name}.pem")), key: dir.join(format!("{name}.key")) };
        std::fs::write(&files.cert, cert.pem()).unwrap();
        std::fs::write(&files.key, key.serialize_pem()).unwrap();
        files
    }

    /// A rustls client configuration that trusts only this CA.
    pub fn client_config(&self) -> Arc<rustls::ClientConfig> {
        let mut roots = rustls::RootCertStore::empty();
        for cert in rustls::pki_types::CertificateDer::pem_slice_iter(self.pem.as_bytes()) {
            roots.add(cert.unwrap()).unwrap();
        }
        #[allow(deprecated)] // ring is the provider the broker uses too
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        Arc::new(config)
    }
}

use rustls::pki_types::pem::PemObject as _;

/// The `[tls]` section for `server`, with `client_ca` for mTLS.
pub fn tls_section(server: &CertFiles, client_ca: Option<&Path>) -> String {
    let mut section = format!("[tls]\ncert_file = {:?}\nkey_file = {:?}\n", server.cert, server.key);
    if let Some(ca) = client_ca {
        section.push_str(&format!("client_ca_file = {ca:?}\n"));
    }
    section
}
