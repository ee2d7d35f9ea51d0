//! Issue 22: the cluster transport over mutual TLS. Nodes with certificates from the cluster
//! CA replicate as in plaintext; a plaintext node, or one whose certificate another CA signed,
//! is refused at the handshake both ways, so it never acks an entry nor reaches a group; and a
//! plaintext connection to a TLS node's port gets no HTTP/2 (so no gRPC) answer.

mod common;

use std::{collections::BTreeMap, net::SocketAddr, path::Path, time::Duration};

use anyhow::{Context, bail};
use common::*;
use rcgen::{BasicConstraints, CertificateParams, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair};
use strata_log::LogConfig;
use strata_proto::cluster::v1 as pb;
use strata_replication::{Cluster, ClusterTls, ClusterTlsFiles, NodeId};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};

/// A test CA that signs node certificates.
struct Ca {
    issuer: Issuer<'static, KeyPair>,
    pem: String,
    name: String,
}

impl Ca {
    fn new(name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(rcgen::DnType::CommonName, format!("{name} cluster CA"));
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let key = KeyPair::generate().unwrap();
        let pem = params.self_signed(&key).unwrap().pem();
        Ca { issuer: Issuer::new(params, key), pem, name: name.to_owned() }
    }

    /// A node certificate for 127.0.0.1 (the address peers dial), good for both ends of a
    /// connection, written with this CA's certificate under `dir`.
    fn node(&self, dir: &Path, node: &str) -> ClusterTlsFiles {
        let mut params = CertificateParams::new(vec!["127.0.0.1".to_owned()]).unwrap();
        params.distinguished_name.push(rcgen::DnType::CommonName, format!("strata {node}"));
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        let files = ClusterTlsFiles {
            cert_file: dir.join(format!("{node}.pem")),
            key_file: dir.join(format!("{node}.key")),
            ca_file: dir.join(format!("{}-ca.pem", self.name)),
        };
        std::fs::write(&files.cert_file, cert.pem()).unwrap();
        std::fs::write(&files.key_file, key.serialize_pem()).unwrap();
        std::fs::write(&files.ca_file, &self.pem).unwrap();
        files
    }
}

fn tls_cluster(id: NodeId, files: ClusterTlsFiles) -> Cluster {
    Cluster::new_with_tls(id, ClusterTls::load(files).expect("the test certificates load"))
}

/// Starts one node per cluster (ids 1, 2, ...) on loopback; the first initialises the group
/// with all of them as voters.
async fn start(root: &Path, clusters: Vec<Cluster>) -> anyhow::Result<(Vec<TestNode>, BTreeMap<NodeId, String>)> {
    let mut listeners = Vec::new();
    for _ in &clusters {
        listeners.push(TcpListener::bind("127.0.0.1:0").await?);
    }
    let mut members = BTreeMap::new();
    for (cluster, listener) in clusters.iter().zip(&listeners) {
        members.insert(cluster.node_id(), listener.local_addr()?.to_string());
    }
    let mut nodes = Vec::new();
    for (cluster, listener) in clusters.into_iter().zip(listeners) {
        let dir = root.join(format!("node{}", cluster.node_id()));
        nodes.push(TestNode::start_with(cluster, &dir, listener, LogConfig::default(), |_| {}).await?);
    }
    nodes[0].partition().initialize(members.clone()).await?;
    Ok((nodes, members))
}

async fn propose_rounds(leader: &TestNode, rounds: usize) -> anyhow::Result<u64> {
    for round in 0..rounds {
        let records: Vec<_> = (round * 10..round * 10 + 10).map(record).collect();
        let offsets = leader.partition().propose(records).await?;
        assert_eq!(offsets.len(), 10);
    }
    Ok(leader.partition().committed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_agree_over_mutual_tls() -> anyhow::Result<()> {
    let root = tempfile::tempdir()?;
    let ca = Ca::new("cluster");
    let clusters = (1..=3).map(|id| tls_cluster(id, ca.node(root.path(), &format!("node{id}")))).collect();
    let (nodes, _) = start(root.path(), clusters).await?;
    let leader = wait_for_common_leader(&nodes, None).await?;
    let end = propose_rounds(node(&nodes, leader), 10).await?;
    for n in &nodes {
        n.wait_committed(end).await?;
    }
    let logs: Vec<_> = nodes.iter().map(committed_contents).collect::<anyhow::Result<_>>()?;
    assert_eq!(logs[0].len(), 100);
    for (n, log) in nodes.iter().zip(&logs) {
        assert_eq!(log, &logs[0], "node {} differs from node 1", n.id);
    }
    for mut n in nodes {
        n.kill().await?;
    }
    Ok(())
}

/// Nodes 1 and 2 run mutual TLS with `ca`; node 3 is `outsider`, a member of the group in
/// everyone's configuration (it initialises the same membership itself, so it campaigns and
/// dials the others). The two TLS nodes elect a leader and commit without it; the outsider
/// never acks an entry and never learns a leader.
async fn an_outsider_never_joins(root: &Path, ca: &Ca, outsider: Cluster) -> anyhow::Result<()> {
    let clusters = vec![tls_cluster(1, ca.node(root, "node1")), tls_cluster(2, ca.node(root, "node2")), outsider];
    let (mut nodes, members) = start(root, clusters).await?;
    nodes[2].partition().initialize(members).await?;
    let leader = wait_for_common_leader(&nodes[..2], None).await?;
    let leader_node = node(&nodes, leader);
    let term = leader_node.partition().metrics().borrow().current_term;

    // The outsider times out and campaigns again and again: each time it asks 1 and 2 for
    // votes over a transport they refuse.
    let mut outsider = nodes[2].partition().metrics();
    tokio::time::timeout(WAIT, outsider.wait_for(|m| m.current_term >= term + 3))
        .await
        .context("the outsider did not campaign")??;

    let end = propose_rounds(leader_node, 5).await?;
    let follower = nodes.iter().find(|n| n.id != leader && n.id != 3).expect("the other TLS node");
    follower.wait_committed(end).await?;

    let metrics = leader_node.partition().metrics().borrow().clone();
    let replication = metrics.replication.clone().context("the leader has replication metrics")?;
    assert!(replication.get(&follower.id).copied().flatten().is_some_and(|m| m.index + 1 >= end), "{replication:?}");
    // The leader's appends to the outsider never succeeded: it has no matched entry at all.
    assert_eq!(replication.get(&3), Some(&None), "{replication:?}");
    assert_eq!(nodes[2].partition().metrics().borrow().current_leader, None);
    assert_eq!(nodes[2].partition().committed(), 0, "the outsider committed something");
    for n in &nodes[..2] {
        assert_eq!(n.partition().metrics().borrow().current_leader, Some(leader), "node {} lost its leader", n.id);
    }
    for n in &mut nodes {
        n.kill().await?;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plaintext_node_never_joins_a_tls_cluster() -> anyhow::Result<()> {
    let root = tempfile::tempdir()?;
    let ca = Ca::new("cluster");
    an_outsider_never_joins(root.path(), &ca, Cluster::new(3)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_with_a_certificate_from_another_ca_never_joins() -> anyhow::Result<()> {
    let root = tempfile::tempdir()?;
    let ca = Ca::new("cluster");
    let other = Ca::new("other");
    // Its certificate is from the other CA, but it trusts the cluster's CA too: only the
    // cluster's check of its client certificate keeps it out when it dials.
    let mut files = other.node(root.path(), "node3");
    files.ca_file = root.path().join("both-cas.pem");
    std::fs::write(&files.ca_file, format!("{}{}", other.pem, ca.pem))?;
    let outsider = tls_cluster(3, files);
    an_outsider_never_joins(root.path(), &ca, outsider).await
}

/// A harmless vote request (term 0 from an unknown node, always refused) to `group` at `addr`
/// over `endpoint`: `Ok` when the group answered.
async fn ask_for_a_vote(endpoint: Endpoint) -> Result<pb::VoteResponse, tonic::Status> {
    let channel = endpoint
        .connect_timeout(Duration::from_secs(10))
        .timeout(Duration::from_secs(10))
        .connect()
        .await
        .map_err(|e| tonic::Status::unavailable(format!("connect: {e}")))?;
    let mut client = pb::raft_client::RaftClient::new(channel);
    let group = group();
    let request = pb::VoteRequest {
        group: Some(pb::GroupId { stream: group.stream, partition: group.partition }),
        vote: Some(pb::Vote { term: 0, node_id: Some(99), committed: false }),
        last_log_id: None,
    };
    client.vote(request).await.map(tonic::Response::into_inner)
}

fn tls_endpoint(
    addr: SocketAddr,
    ca: &ClusterTlsFiles,
    identity: Option<&ClusterTlsFiles>,
) -> anyhow::Result<Endpoint> {
    let mut tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(std::fs::read(&ca.ca_file)?));
    if let Some(files) = identity {
        tls = tls.identity(Identity::from_pem(std::fs::read(&files.cert_file)?, std::fs::read(&files.key_file)?));
    }
    Ok(Endpoint::from_shared(format!("https://{addr}"))?.tls_config(tls)?)
}

/// Sends an HTTP/2 client preface and a SETTINGS frame on a fresh TCP connection; returns
/// what came back before the server closed, 9 bytes arrived, or 10 s passed.
async fn http2_probe(addr: SocketAddr) -> anyhow::Result<Vec<u8>> {
    let mut stream = TcpStream::connect(addr).await?;
    stream.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00").await?;
    let mut reply = Vec::new();
    let mut buf = [0u8; 256];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while reply.len() < 9 {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Err(_) | Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => reply.extend_from_slice(&buf[..n]),
        }
    }
    Ok(reply)
}

/// An HTTP/2 server's first frame is its SETTINGS (type 4 in the fourth byte).
fn is_http2_settings(reply: &[u8]) -> bool {
    reply.len() >= 9 && reply[3] == 4
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_node_answers_only_clients_with_a_certificate_from_its_ca() -> anyhow::Result<()> {
    let root = tempfile::tempdir()?;
    let ca = Ca::new("cluster");
    let other = Ca::new("other");
    let node1 = ca.node(root.path(), "node1");
    let member = ca.node(root.path(), "member");
    let stranger = other.node(root.path(), "stranger");
    // One TLS node and, for contrast, one plaintext node, each a single-voter group.
    let (mut tls_nodes, _) = start(&root.path().join("tls"), vec![tls_cluster(1, node1.clone())]).await?;
    let (mut plain_nodes, _) = start(&root.path().join("plain"), vec![Cluster::new(1)]).await?;
    wait_for_common_leader(&tls_nodes, None).await?;
    wait_for_common_leader(&plain_nodes, None).await?;
    let (tls_addr, plain_addr) = (tls_nodes[0].addr, plain_nodes[0].addr);

    // The probes can tell an answer from a refusal: the plaintext node answers both.
    let answered = ask_for_a_vote(Endpoint::from_shared(format!("http://{plain_addr}"))?).await?;
    assert!(!answered.vote_granted && answered.vote.is_some_and(|v| v.term >= 1), "{answered:?}");
    assert!(is_http2_settings(&http2_probe(plain_addr).await?));

    // A client with a certificate from the cluster CA is answered by the group.
    let answered = ask_for_a_vote(tls_endpoint(tls_addr, &node1, Some(&member))?).await?;
    assert!(!answered.vote_granted && answered.vote.is_some_and(|v| v.term >= 1), "{answered:?}");

    // Everyone else gets no answer from any group.
    let refusals = [
        ("plaintext", ask_for_a_vote(Endpoint::from_shared(format!("http://{tls_addr}"))?).await),
        ("TLS without a client certificate", ask_for_a_vote(tls_endpoint(tls_addr, &node1, None)?).await),
        ("a certificate from another CA", ask_for_a_vote(tls_endpoint(tls_addr, &node1, Some(&stranger))?).await),
    ];
    for (who, outcome) in refusals {
        match outcome {
            Ok(response) => bail!("{who}: the group answered {response:?}"),
            // A refusal from the service itself would mean the call got through the transport.
            Err(status) => assert!(
                !matches!(status.code(), tonic::Code::NotFound | tonic::Code::InvalidArgument | tonic::Code::Ok),
                "{who}: {status:?}"
            ),
        }
    }
    let reply = http2_probe(tls_addr).await?;
    assert!(!is_http2_settings(&reply), "a plaintext HTTP/2 client got an HTTP/2 answer: {reply:?}");
    // What it does get, if anything, is a TLS alert record (content type 21).
    assert!(reply.is_empty() || reply[0] == 21, "{reply:?}");

    for n in tls_nodes.iter_mut().chain(plain_nodes.iter_mut()) {
        n.kill().await?;
    }
    Ok(())
}

/// `ClusterTls::reload` (SIGHUP in the broker) changes what new connections need: after the
/// node's files are replaced by ones from another CA, a member of the new CA is answered and
/// one of the old CA is refused, while the node keeps serving its group. Each probe trusts
/// the CA of the certificate the node presents at that time, so a refusal is the node's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_applies_to_new_connections() -> anyhow::Result<()> {
    let root = tempfile::tempdir()?;
    let node_dir = root.path().join("node1-files");
    std::fs::create_dir(&node_dir)?;
    let (first, second) = (Ca::new("first"), Ca::new("second"));
    let node1 = first.node(&node_dir, "node1");
    let tls = ClusterTls::load(node1.clone())?;
    let (mut nodes, _) = start(&root.path().join("data"), vec![Cluster::new_with_tls(1, tls.clone())]).await?;
    wait_for_common_leader(&nodes, None).await?;
    let addr = nodes[0].addr;
    let old_member = first.node(root.path(), "old-member");
    let new_member = second.node(root.path(), "new-member");
    let ask = |trust: &ClusterTlsFiles, member: &ClusterTlsFiles| -> anyhow::Result<_> {
        Ok(ask_for_a_vote(tls_endpoint(addr, trust, Some(member))?))
    };
    ask(&old_member, &old_member)?.await.context("before the reload, the first CA's member")?;
    assert!(ask(&old_member, &new_member)?.await.is_err(), "the second CA's member was admitted before the reload");

    let renewed = second.node(root.path(), "renewed");
    std::fs::copy(&renewed.cert_file, &node1.cert_file)?;
    std::fs::copy(&renewed.key_file, &node1.key_file)?;
    std::fs::copy(&renewed.ca_file, &node1.ca_file)?;
    tls.reload()?;

    ask(&new_member, &new_member)?.await.context("after the reload, the second CA's member")?;
    assert!(ask(&new_member, &old_member)?.await.is_err(), "the first CA's member was admitted after the reload");
    for n in &mut nodes {
        n.kill().await?;
    }
    Ok(())
}
