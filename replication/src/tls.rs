//! Mutual TLS for the cluster transport. With a [`ClusterTls`], a [`crate::Cluster`] accepts
//! only TLS connections whose client certificate chains to the cluster CA, and dials its peers
//! over TLS with the node's own certificate, checking theirs against the same CA. A plaintext
//! peer fails the handshake either way, before any RPC reaches a group.
//!
//! Names: a peer is dialled at the address it has in the group's membership, and its
//! certificate must be valid for that host, as for any TLS server: an IP SAN for an IP address
//! (`127.0.0.1:7101` needs IP SAN 127.0.0.1), a DNS SAN for a host name. Incoming connections
//! are checked for the chain only: the CA is what admits a node, so the CA that signs node
//! certificates should sign nothing else (hence `[cluster] ca_file`, see docs/security.md).
//!
//! The files are read again by [`ClusterTls::reload`]: connections made afterwards (accepted
//! or dialled; tonic redials a broken channel) use the new ones, established ones keep theirs.

use std::{
    path::{Path, PathBuf},
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use arc_swap::ArcSwap;
use rustls::{
    RootCertStore,
    client::ClientConfig,
    pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime, pem::PemObject},
    server::{ServerConfig, WebPkiClientVerifier},
};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::{TlsAcceptor, TlsConnector, server::TlsStream};
use tonic::transport::Uri;

use crate::ReplicationError;

/// The PEM files of a node's cluster TLS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterTlsFiles {
    /// The node's certificate, then any intermediates. It serves both ends of a connection,
    /// so it must allow server and client authentication (both extended key usages, or none)
    /// and name the host peers dial it at.
    pub cert_file: PathBuf,
    /// The certificate's private key (PKCS#8, PKCS#1 or SEC1).
    pub key_file: PathBuf,
    /// The CA certificates that every node's certificate chains to.
    pub ca_file: PathBuf,
}

/// The TLS configurations in force: one for accepting, one for dialling.
struct Configs {
    server: Arc<ServerConfig>,
    client: Arc<ClientConfig>,
}

/// A node's cluster TLS: its certificate and the CA of its peers, reloadable. Clones share
/// it, so the clone the broker keeps for SIGHUP reloads what the [`crate::Cluster`] uses.
#[derive(Clone)]
pub struct ClusterTls {
    files: Arc<ClusterTlsFiles>,
    current: Arc<ArcSwap<Configs>>,
}

impl std::fmt::Debug for ClusterTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterTls").field("files", &self.files).finish_non_exhaustive()
    }
}

/// How long a peer has to finish the TLS handshake on an accepted connection.
const ACCEPT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

impl ClusterTls {
    /// Reads and checks the files. Fails, naming the file, on one that is missing or
    /// unreadable, holds no PEM certificate or key, a key that does not match the
    /// certificate, a CA rustls cannot verify with, and a node certificate that the CA did not
    /// sign (or that may not authenticate a client). Reads files: call it off the runtime's
    /// workers if they are busy.
    pub fn load(files: ClusterTlsFiles) -> Result<ClusterTls, ReplicationError> {
        let configs = load_configs(&files)?;
        Ok(ClusterTls { files: Arc::new(files), current: Arc::new(ArcSwap::from_pointee(configs)) })
    }

    /// Reads the files again. On success, connections accepted or dialled from now on use
    /// them; on failure nothing changes and the error names the file.
    pub fn reload(&self) -> Result<(), ReplicationError> {
        let configs = load_configs(&self.files)?;
        self.current.store(Arc::new(configs));
        Ok(())
    }

    /// The files it reads.
    pub fn files(&self) -> &ClusterTlsFiles {
        &self.files
    }

    fn acceptor(&self) -> TlsAcceptor {
        TlsAcceptor::from(Arc::clone(&self.current.load().server))
    }

    fn connector(&self) -> TlsConnector {
        TlsConnector::from(Arc::clone(&self.current.load().client))
    }

    /// The dialler of a peer channel (tonic's custom connector).
    pub(crate) fn dialer(&self) -> Dialer {
        Dialer { tls: self.clone() }
    }
}

fn file_error(what: &'static str, path: &Path, reason: impl Into<String>) -> ReplicationError {
    ReplicationError::TlsFile { what, path: path.to_path_buf(), reason: reason.into() }
}

fn read(what: &'static str, path: &Path) -> Result<Vec<u8>, ReplicationError> {
    std::fs::read(path).map_err(|e| file_error(what, path, format!("cannot be read: {e}")))
}

fn certificates(what: &'static str, path: &Path) -> Result<Vec<CertificateDer<'static>>, ReplicationError> {
    let pem = read(what, path)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| file_error(what, path, format!("not PEM: {e}")))?;
    if certs.is_empty() {
        return Err(file_error(what, path, "no PEM certificate in it (BEGIN CERTIFICATE)"));
    }
    Ok(certs)
}

fn load_configs(files: &ClusterTlsFiles) -> Result<Configs, ReplicationError> {
    // ring, as for the MQTT listeners (no C toolchain or cmake to build it). rustls deprecates
    // its provider only for lacking post-quantum key exchange.
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let (cert_what, key_what, ca_what) = ("certificate", "private key", "CA");
    let certs = certificates(cert_what, &files.cert_file)?;
    let key = PrivateKeyDer::from_pem_slice(&read(key_what, &files.key_file)?).map_err(|e| match e {
        rustls::pki_types::pem::Error::NoItemsFound => file_error(
            key_what,
            &files.key_file,
            "no PEM private key in it (BEGIN PRIVATE KEY, RSA PRIVATE KEY or EC PRIVATE KEY)",
        ),
        other => file_error(key_what, &files.key_file, format!("not a PEM private key: {other}")),
    })?;
    let mut roots = RootCertStore::empty();
    for ca in certificates(ca_what, &files.ca_file)? {
        roots.add(ca).map_err(|e| file_error(ca_what, &files.ca_file, format!("not a usable CA certificate: {e}")))?;
    }
    let roots = Arc::new(roots);
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::clone(&roots), Arc::clone(&provider))
        .build()
        .map_err(|e| file_error(ca_what, &files.ca_file, format!("cannot verify certificates with it: {e}")))?;
    // The node's own certificate must pass what its peers will check when it dials them;
    // said here, at start, rather than as refused handshakes on the other nodes.
    if let Some((end_entity, intermediates)) = certs.split_first() {
        verifier.verify_client_cert(end_entity, intermediates, UnixTime::now()).map_err(|e| {
            file_error(
                cert_what,
                &files.cert_file,
                format!("peers would refuse it: {e} (checked against the CA in {})", files.ca_file.display()),
            )
        })?;
    }
    let key_mismatch = |e: rustls::Error| match e {
        rustls::Error::InconsistentKeys(_) => file_error(
            key_what,
            &files.key_file,
            format!("does not match the certificate in {}", files.cert_file.display()),
        ),
        other => file_error(key_what, &files.key_file, format!("not a usable private key: {other}")),
    };
    let protocol_error = |e: rustls::Error| file_error(cert_what, &files.cert_file, format!("the TLS provider: {e}"));
    let mut server = ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(protocol_error)?
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs.clone(), key.clone_key())
        .map_err(key_mismatch)?;
    let mut client = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(protocol_error)?
        .with_root_certificates(roots)
        .with_client_auth_cert(certs, key)
        .map_err(key_mismatch)?;
    // gRPC is HTTP/2 only; offering it by ALPN is what gRPC peers expect.
    server.alpn_protocols = vec![b"h2".to_vec()];
    client.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Configs { server: Arc::new(server), client: Arc::new(client) })
}

/// Dials a peer over TLS: the connector tonic's channel calls for each (re)connection, with
/// the configuration in force at that moment. tonic's connect timeout bounds the whole of it.
#[derive(Clone)]
pub(crate) struct Dialer {
    tls: ClusterTls,
}

type Dialed = hyper_util::rt::TokioIo<tokio_rustls::client::TlsStream<TcpStream>>;

impl tower_service::Service<Uri> for Dialer {
    type Response = Dialed;
    type Error = std::io::Error;
    type Future = Pin<Box<dyn Future<Output = std::io::Result<Dialed>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let connector = self.tls.connector();
        Box::pin(async move {
            let invalid = |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("{what}: {uri}"));
            // An IPv6 host comes bracketed in a URI; the name to check is the bare address.
            let host = uri.host().ok_or_else(|| invalid("no host in the peer address"))?;
            let host = host.trim_start_matches('[').trim_end_matches(']').to_owned();
            let port = uri.port_u16().ok_or_else(|| invalid("no port in the peer address"))?;
            let name = ServerName::try_from(host.clone()).map_err(|_| invalid("not a host name or IP address"))?;
            let tcp = TcpStream::connect((host.as_str(), port)).await?;
            tcp.set_nodelay(true)?;
            let tls = connector.connect(name, tcp).await?;
            Ok(hyper_util::rt::TokioIo::new(tls))
        })
    }
}

/// The TLS connections of `listener`, for tonic's server. Each handshake runs in its own task,
/// bounded in time, so a silent or plaintext peer holds up nobody; a failed one is logged and
/// dropped, so nothing it sent reaches a group. The loop ends, closing the listener, when the
/// server drops the stream.
pub(crate) fn incoming(
    listener: TcpListener,
    tls: ClusterTls,
) -> impl futures_util::Stream<Item = std::io::Result<TlsStream<TcpStream>>> {
    let (accepted, incoming) = tokio::sync::mpsc::channel(16);
    tokio::spawn(async move {
        loop {
            let (stream, peer) = tokio::select! {
                () = accepted.closed() => return,
                result = listener.accept() => match result {
                    Ok(pair) => pair,
                    Err(error) => {
                        // Out of descriptors, say: the next accept may work; do not spin meanwhile.
                        tracing::warn!(%error, "cluster transport: accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
            };
            let _ = stream.set_nodelay(true);
            let acceptor = tls.acceptor();
            let accepted = accepted.clone();
            tokio::spawn(async move {
                match tokio::time::timeout(ACCEPT_HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                    Ok(Ok(stream)) => {
                        let _ = accepted.send(Ok(stream)).await;
                    }
                    Ok(Err(error)) if refusals_to_report() => {
                        tracing::warn!(%peer, %error, "cluster transport: TLS handshake refused (reported at most every 10 s)")
                    }
                    Ok(Err(error)) => tracing::debug!(%peer, %error, "cluster transport: TLS handshake refused"),
                    Err(_) if refusals_to_report() => {
                        tracing::warn!(%peer, "cluster transport: TLS handshake timed out")
                    }
                    Err(_) => tracing::debug!(%peer, "cluster transport: TLS handshake timed out"),
                }
            });
        }
    });
    futures_util::stream::unfold(incoming, |mut incoming| async move {
        incoming.recv().await.map(|stream| (stream, incoming))
    })
}

/// Whether a refused handshake is to be logged at WARN: at most one every 10 s, since a
/// misconfigured peer retries many times a second.
fn refusals_to_report() -> bool {
    use std::sync::atomic::{AtomicU64, Ordering};
    static LAST_REPORT_S: AtomicU64 = AtomicU64::new(0);
    let now_s = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let last = LAST_REPORT_S.load(Ordering::Relaxed);
    now_s >= last + 10 && LAST_REPORT_S.compare_exchange(last, now_s, Ordering::Relaxed, Ordering::Relaxed).is_ok()
}

#[cfg(test)]
mod tests {
    use rcgen::{BasicConstraints, CertificateParams, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair};

    use super::*;

    fn ca() -> (Issuer<'static, KeyPair>, String) {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let key = KeyPair::generate().unwrap();
        let pem = params.self_signed(&key).unwrap().pem();
        (Issuer::new(params, key), pem)
    }

    fn node(ca: &Issuer<'static, KeyPair>, usages: Vec<ExtendedKeyUsagePurpose>) -> (String, String) {
        let mut params = CertificateParams::new(vec!["127.0.0.1".to_owned()]).unwrap();
        params.extended_key_usages = usages;
        let key = KeyPair::generate().unwrap();
        (params.signed_by(&key, ca).unwrap().pem(), key.serialize_pem())
    }

    struct Dir(tempfile::TempDir);

    impl Dir {
        fn write(&self, name: &str, text: &str) -> PathBuf {
            let path = self.0.path().join(name);
            std::fs::write(&path, text).unwrap();
            path
        }
    }

    fn both() -> Vec<ExtendedKeyUsagePurpose> {
        vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth]
    }

    #[test]
    fn cluster_tls_loads_a_node_certificate_and_names_each_bad_file() {
        let dir = Dir(tempfile::tempdir().unwrap());
        let (issuer, ca_pem) = ca();
        let (other_issuer, _) = ca();
        let (cert, key) = node(&issuer, both());
        let (_, other_key) = node(&issuer, both());
        let (foreign_cert, foreign_key) = node(&other_issuer, both());
        let (server_only_cert, server_only_key) = node(&issuer, vec![ExtendedKeyUsagePurpose::ServerAuth]);
        let good = ClusterTlsFiles {
            cert_file: dir.write("node.pem", &cert),
            key_file: dir.write("node.key", &key),
            ca_file: dir.write("ca.pem", &ca_pem),
        };
        ClusterTls::load(good.clone()).unwrap();
        // No extended key usage at all allows both ends too.
        let (plain_cert, plain_key) = node(&issuer, Vec::new());
        ClusterTls::load(ClusterTlsFiles {
            cert_file: dir.write("plain.pem", &plain_cert),
            key_file: dir.write("plain.key", &plain_key),
            ..good.clone()
        })
        .unwrap();

        let missing = dir.0.path().join("missing.pem");
        let garbage = dir.write("garbage.pem", "not pem\n");
        let other_key = dir.write("other.key", &other_key);
        let foreign = ClusterTlsFiles {
            cert_file: dir.write("foreign.pem", &foreign_cert),
            key_file: dir.write("foreign.key", &foreign_key),
            ..good.clone()
        };
        let server_only = ClusterTlsFiles {
            cert_file: dir.write("server-only.pem", &server_only_cert),
            key_file: dir.write("server-only.key", &server_only_key),
            ..good.clone()
        };
        let cases = [
            (ClusterTlsFiles { cert_file: missing.clone(), ..good.clone() }, "certificate", &missing, "cannot be read"),
            (ClusterTlsFiles { cert_file: garbage.clone(), ..good.clone() }, "certificate", &garbage, "no PEM"),
            (ClusterTlsFiles { key_file: garbage.clone(), ..good.clone() }, "private key", &garbage, "no PEM"),
            (
                ClusterTlsFiles { key_file: other_key.clone(), ..good.clone() },
                "private key",
                &other_key,
                "does not match",
            ),
            (ClusterTlsFiles { ca_file: missing.clone(), ..good.clone() }, "CA", &missing, "cannot be read"),
            (foreign.clone(), "certificate", &foreign.cert_file, "peers would refuse it"),
            (server_only.clone(), "certificate", &server_only.cert_file, "peers would refuse it"),
        ];
        for (files, what, path, reason) in cases {
            match ClusterTls::load(files.clone()) {
                Err(ReplicationError::TlsFile { what: w, path: p, reason: r }) => {
                    assert_eq!((w, &p), (what, path), "{files:?}: {r}");
                    assert!(r.contains(reason), "{files:?}: {r:?} should say {reason:?}");
                }
                other => panic!("{files:?}: {other:?}"),
            }
        }
        let message = ClusterTls::load(ClusterTlsFiles { key_file: missing.clone(), ..good }).unwrap_err().to_string();
        assert!(message.contains(&missing.display().to_string()), "{message}");
    }

    #[test]
    fn cluster_tls_a_failed_reload_keeps_the_files_in_force() {
        let dir = Dir(tempfile::tempdir().unwrap());
        let (issuer, ca_pem) = ca();
        let (cert, key) = node(&issuer, both());
        let files = ClusterTlsFiles {
            cert_file: dir.write("node.pem", &cert),
            key_file: dir.write("node.key", &key),
            ca_file: dir.write("ca.pem", &ca_pem),
        };
        let tls = ClusterTls::load(files.clone()).unwrap();
        let shared = tls.clone();
        let before = tls.current.load_full();
        std::fs::write(&files.key_file, "truncated").unwrap();
        assert!(matches!(tls.reload(), Err(ReplicationError::TlsFile { what: "private key", .. })));
        assert!(Arc::ptr_eq(&before, &shared.current.load_full()));
        let (cert, key) = node(&issuer, both());
        std::fs::write(&files.cert_file, cert).unwrap();
        std::fs::write(&files.key_file, key).unwrap();
        tls.reload().unwrap();
        // A clone (what the Cluster holds) sees the reload.
        assert!(!Arc::ptr_eq(&before, &shared.current.load_full()));
    }
}
