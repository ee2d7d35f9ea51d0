//! MQTT over TLS (`[mqtt] tls_listen`) and WebSocket over TLS (`[mqtt] wss_listen`), with
//! rustls on the ring provider. This module owns the certificate: it reads `[tls]`'s PEM files
//! into a rustls `ServerConfig`, keeps the current one behind an `ArcSwap` so that a reload
//! (SIGHUP, `serve.rs`) changes what new handshakes use while every established connection
//! keeps the session it has. The accept loops, which hand the decrypted byte stream to
//! `connection.rs` (or `websocket.rs`) like any other transport, are in `listen.rs`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;

/// `[tls]`: the server's certificate, and the CA that client certificates must chain to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsConfig {
    /// `tls.cert_file`: PEM, the server's certificate first, then any intermediates.
    pub cert_file: PathBuf,
    /// `tls.key_file`: PEM, the certificate's private key (PKCS#8, PKCS#1 or SEC1).
    pub key_file: PathBuf,
    /// `tls.client_ca_file`: PEM, one or more CA certificates. Set, every TLS client must
    /// present a certificate that chains to one of them (mTLS); `None`: no client certificate
    /// is asked for.
    pub client_ca_file: Option<PathBuf>,
}

/// A `[tls]` file that cannot be used: the key, the file and why.
#[derive(Debug, thiserror::Error)]
#[error("{key} ({}): {reason}", path.display())]
pub struct TlsError {
    /// The config key naming the file: `tls.cert_file`, `tls.key_file` or `tls.client_ca_file`.
    pub key: &'static str,
    /// The file.
    pub path: PathBuf,
    /// What is wrong with it.
    pub reason: String,
}

/// Reads and checks `[tls]`'s files into a server configuration: what the broker's start,
/// `strata config check` and every reload call. Fails on a missing or unreadable file, a file
/// with no PEM certificate or key, a certificate that is not X.509, a key that does not match
/// the certificate, and a client CA file rustls cannot build a verifier from.
pub fn load_server_config(config: &TlsConfig) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    // ring, not aws-lc-rs (which needs cmake and a C toolchain to build). rustls 0.23.48
    // deprecates ring's provider only because it has no post-quantum key exchange; its
    // classical suites and groups are the ones rustls has always defaulted to.
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let certs = read_certificates(&config.cert_file, "tls.cert_file")?;
    let key_error = |reason: String| TlsError { key: "tls.key_file", path: config.key_file.clone(), reason };
    let key_pem = read_file(&config.key_file, "tls.key_file")?;
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| match e {
        rustls::pki_types::pem::Error::NoItemsFound => {
            key_error("no PEM private key in it (BEGIN PRIVATE KEY, RSA PRIVATE KEY or EC PRIVATE KEY)".to_owned())
        }
        other => key_error(format!("not a PEM private key: {other}")),
    })?;
    let builder = rustls::ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|e| key_error(format!("the TLS provider: {e}")))?;
    let builder = match &config.client_ca_file {
        Some(ca_file) => {
            let ca_error = |reason: String| TlsError { key: "tls.client_ca_file", path: ca_file.clone(), reason };
            let mut roots = rustls::RootCertStore::empty();
            for ca in read_certificates(ca_file, "tls.client_ca_file")? {
                roots.add(ca).map_err(|e| ca_error(format!("not a usable CA certificate: {e}")))?;
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| ca_error(format!("cannot verify clients with it: {e}")))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let server = builder.with_single_cert(certs, key).map_err(|e| match e {
        rustls::Error::InconsistentKeys(_) => key_error(format!(
            "the key does not match the certificate in tls.cert_file ({})",
            config.cert_file.display()
        )),
        other => key_error(format!("not a usable private key: {other}")),
    })?;
    Ok(Arc::new(server))
}

fn read_file(path: &Path, key: &'static str) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|e| TlsError { key, path: path.to_path_buf(), reason: format!("cannot be read: {e}") })
}

/// Every PEM certificate in `path`, each checked to be X.509; at least one.
fn read_certificates(path: &Path, key: &'static str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let error = |reason: String| TlsError { key, path: path.to_path_buf(), reason };
    let pem = read_file(path, key)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| error(format!("not PEM: {e}")))?;
    if certs.is_empty() {
        return Err(error("no PEM certificate in it (BEGIN CERTIFICATE)".to_owned()));
    }
    for (index, cert) in certs.iter().enumerate() {
        if let Err(e) = x509_parser::parse_x509_certificate(cert) {
            return Err(error(format!("certificate {} is not a valid X.509 certificate: {e}", index + 1)));
        }
    }
    Ok(certs)
}

/// The certificate in force and where it comes from, shared by the TLS listeners and the
/// reload handle.
pub(crate) struct TlsState {
    config: TlsConfig,
    current: ArcSwap<rustls::ServerConfig>,
}

impl TlsState {
    pub(crate) fn load(config: TlsConfig) -> Result<TlsState, TlsError> {
        let current = ArcSwap::new(load_server_config(&config)?);
        Ok(TlsState { config, current })
    }

    /// An acceptor for one new connection, with the certificate in force now. A connection
    /// keeps the configuration it was accepted with: a reload does not touch it.
    pub(crate) fn acceptor(&self) -> TlsAcceptor {
        TlsAcceptor::from(self.current.load_full())
    }

    /// Whether clients must present a certificate.
    pub(crate) fn requires_client_certificate(&self) -> bool {
        self.config.client_ca_file.is_some()
    }
}

/// Reloads `[tls]`'s files while the broker runs ([`crate::Broker::tls_reloader`]).
#[derive(Clone)]
pub struct TlsReloader {
    state: Arc<TlsState>,
}

impl TlsReloader {
    pub(crate) fn new(state: Arc<TlsState>) -> TlsReloader {
        TlsReloader { state }
    }

    /// Reads the files again. On success new handshakes use them; established connections
    /// are left as they are. On failure nothing changes: the previous certificate stays in
    /// force, and the error names the key and the file. Reads files: call it off the
    /// runtime's workers (`spawn_blocking`).
    pub fn reload(&self) -> Result<(), TlsError> {
        let fresh = load_server_config(&self.state.config)?;
        self.state.current.store(fresh);
        Ok(())
    }

    /// An acceptor for one new connection to the gRPC admin API (`[grpc] tls`): the
    /// certificate in force now, so a reload reaches the admin API too, offering HTTP/2 by
    /// ALPN, which gRPC clients insist on. Admin connections are few: the copy is cheap enough.
    pub fn admin_acceptor(&self) -> TlsAcceptor {
        let mut config = rustls::ServerConfig::clone(&self.state.current.load());
        config.alpn_protocols = vec![b"h2".to_vec()];
        TlsAcceptor::from(Arc::new(config))
    }

    /// The files reloaded.
    pub fn config(&self) -> &TlsConfig {
        &self.state.config
    }
}

/// What a verified client certificate says about its holder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ClientCertificate {
    /// The subject's first Common Name, if it has one that is a string.
    pub(crate) common_name: Option<String>,
}

impl ClientCertificate {
    pub(crate) fn of(der: &CertificateDer<'_>) -> ClientCertificate {
        let common_name = x509_parser::parse_x509_certificate(der).ok().and_then(|(_, cert)| {
            cert.subject().iter_common_name().next().and_then(|cn| cn.as_str().ok()).map(str::to_owned)
        });
        ClientCertificate { common_name }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Files {
        dir: tempfile::TempDir,
    }

    impl Files {
        fn new() -> Files {
            Files { dir: tempfile::tempdir().unwrap() }
        }
        fn write(&self, name: &str, text: &str) -> PathBuf {
            let path = self.dir.path().join(name);
            std::fs::write(&path, text).unwrap();
            path
        }
    }

    fn self_signed(name: &str) -> (String, String) {
        let rcgen::CertifiedKey { cert, signing_key } =
            rcgen::generate_simple_self_signed(vec![name.to_owned()]).unwrap();
        (cert.pem(), signing_key.serialize_pem())
    }

    #[test]
    fn tls_a_matching_certificate_and_key_load_and_each_bad_file_is_named_with_its_key() {
        let files = Files::new();
        let (cert, key) = self_signed("localhost");
        let (_, other_key) = self_signed("elsewhere");
        let config = |cert_file: PathBuf, key_file: PathBuf, client_ca_file: Option<PathBuf>| TlsConfig {
            cert_file,
            key_file,
            client_ca_file,
        };
        let good = config(files.write("cert.pem", &cert), files.write("key.pem", &key), None);
        assert!(load_server_config(&good).is_ok());
        // The server certificate, self-signed, is also a CA: mTLS with it loads too.
        let mtls = TlsConfig { client_ca_file: Some(good.cert_file.clone()), ..good.clone() };
        assert!(load_server_config(&mtls).is_ok());

        let missing = files.dir.path().join("missing.pem");
        let garbage = files.write("garbage.pem", "not pem at all\n");
        let broken_pem = files.write("broken.pem", "-----BEGIN CERTIFICATE-----\n%%%%\n-----END CERTIFICATE-----\n");
        let not_x509 =
            files.write("not-x509.pem", "-----BEGIN CERTIFICATE-----\naGVsbG8gd29ybGQ=\n-----END CERTIFICATE-----\n");
        let wrong_key = files.write("other-key.pem", &other_key);
        let cases = [
            (config(missing.clone(), good.key_file.clone(), None), "tls.cert_file", &missing, "cannot be read"),
            (config(garbage.clone(), good.key_file.clone(), None), "tls.cert_file", &garbage, "no PEM certificate"),
            (config(broken_pem.clone(), good.key_file.clone(), None), "tls.cert_file", &broken_pem, "not PEM"),
            (config(not_x509.clone(), good.key_file.clone(), None), "tls.cert_file", &not_x509, "X.509"),
            (config(good.cert_file.clone(), missing.clone(), None), "tls.key_file", &missing, "cannot be read"),
            (config(good.cert_file.clone(), garbage.clone(), None), "tls.key_file", &garbage, "no PEM private key"),
            // The cert file has no key in it: a common slip, key_file pointing at the cert.
            (
                config(good.cert_file.clone(), good.cert_file.clone(), None),
                "tls.key_file",
                &good.cert_file,
                "no PEM private key",
            ),
            (config(good.cert_file.clone(), wrong_key.clone(), None), "tls.key_file", &wrong_key, "does not match"),
            (
                config(good.cert_file.clone(), good.key_file.clone(), Some(garbage.clone())),
                "tls.client_ca_file",
                &garbage,
                "no PEM certificate",
            ),
            (
                config(good.cert_file.clone(), good.key_file.clone(), Some(missing.clone())),
                "tls.client_ca_file",
                &missing,
                "cannot be read",
            ),
        ];
        for (config, key, path, reason) in cases {
            let error = load_server_config(&config).err().unwrap_or_else(|| panic!("{config:?} loaded"));
            assert_eq!((error.key, &error.path), (key, path), "{error}");
            let message = error.to_string();
            assert!(message.starts_with(&format!("{key} ({})", path.display())), "{message}");
            assert!(message.contains(reason), "{message} should say {reason:?}");
        }
    }

    #[test]
    fn tls_a_failed_reload_keeps_the_certificate_in_force() {
        let files = Files::new();
        let (cert, key) = self_signed("localhost");
        let config = TlsConfig {
            cert_file: files.write("cert.pem", &cert),
            key_file: files.write("key.pem", &key),
            client_ca_file: None,
        };
        let reloader = TlsReloader::new(Arc::new(TlsState::load(config.clone()).unwrap()));
        let before = reloader.state.current.load_full();
        std::fs::write(&config.key_file, "truncated").unwrap();
        let error = reloader.reload().unwrap_err();
        assert_eq!(error.key, "tls.key_file");
        assert!(Arc::ptr_eq(&before, &reloader.state.current.load_full()));
        let (cert, key) = self_signed("localhost");
        std::fs::write(&config.cert_file, cert).unwrap();
        std::fs::write(&config.key_file, key).unwrap();
        reloader.reload().unwrap();
        assert!(!Arc::ptr_eq(&before, &reloader.state.current.load_full()));
    }

    #[test]
    fn tls_the_client_common_name_is_read_from_the_certificate() {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(rcgen::DnType::OrganizationName, "Example");
        params.distinguished_name.push(rcgen::DnType::CommonName, "alice");
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        assert_eq!(ClientCertificate::of(cert.der()).common_name.as_deref(), Some("alice"));
        let mut nameless = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        nameless.distinguished_name = rcgen::DistinguishedName::new();
        let cert = nameless.self_signed(&key).unwrap();
        assert_eq!(ClientCertificate::of(cert.der()).common_name, None);
    }
}
