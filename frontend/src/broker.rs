//! The broker: opens the internal compacted streams `$retained`, `$sessions`, `$offsets` and
//! `$streams` and rebuilds retained messages, disconnected sessions, consumer groups'
//! committed offsets and the stream definitions made at runtime (`admin.rs`) from them; opens
//! every partition of the configured streams (and of the built-in stream `default`;
//! `streams.rs` routes publishes to them); builds the state every connection shares
//! (`shared.rs`); accepts MQTT connections (one task each); and at shutdown ends them and
//! closes every partition. Background tasks expire disconnected sessions and idle groups; a
//! `strata_compaction::Maintenance` applies retention and compaction to every stream per its
//! policy (the internal streams are compacted). The top of the frontend's modules: nothing
//! imports it (`frontend/tests/module_cycles.rs`).

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};

use strata_compaction::{CleanupPolicy, CompactionConfig, Maintenance, PartitionSettings};
use strata_log::LogConfig;
use tokio::net::TcpListener;

use crate::config::BrokerConfig;
use crate::error::BrokerError;
use crate::group_registry::GroupRegistry;
use crate::listen::mqtt_listener;
use crate::partition::PartitionHandle;
use crate::retained::RetainedStore;
use crate::session_store::SessionStore;
use crate::shared::{AuthFiles, AuthReloader, Shared, lock, now_ms};
use crate::stream_definitions::DefinitionStore;
use crate::streams::{OFFSETS_STREAM, RETAINED_STREAM, SESSIONS_STREAM, STREAMS_STREAM, Streams};

/// How long shutdown waits for connections to end before closing the logs regardless.
const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(10);
/// Capacity of each internal stream's writer queue.
const INTERNAL_WRITER_QUEUE: usize = 1024;

/// A started broker: its log is open and its listener bound.
pub struct Broker {
    listener: TcpListener,
    /// MQTT over WebSocket, when configured.
    ws_listener: Option<TcpListener>,
    /// MQTT over TLS, and MQTT over WebSocket over TLS, when configured.
    tls_listener: Option<TcpListener>,
    wss_listener: Option<TcpListener>,
    /// Their certificate; `None` without `[tls]`.
    tls: Option<Arc<crate::tls::TlsState>>,
    shared: Arc<Shared>,
}

/// Stops the maintenance threads; if an admin call still holds them (a compaction on demand),
/// waits for it a bounded time, then leaves them to stop when that call drops its handle.
fn stop_maintenance(mut maintenance: Arc<Maintenance>) {
    for _ in 0..200 {
        match Arc::try_unwrap(maintenance) {
            Ok(maintenance) => return maintenance.shutdown(),
            Err(shared) => maintenance = shared,
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    tracing::warn!("an admin compaction is still running at shutdown");
}

/// Removes what a crash left of streams deleted at runtime: a deleted stream's tombstone is
/// written before its directory goes. A stream the config file declares is left alone (it
/// was opened again from the file after its delete, and may hold new data since).
fn finish_deletes(
    data_dir: &std::path::Path,
    deleted: &std::collections::HashSet<String>,
    configured: &[crate::StreamConfig],
) {
    for name in deleted {
        if !crate::streams::valid_stream_name(name) || configured.iter().any(|c| &c.name == name) {
            continue;
        }
        let dir = data_dir.join(name);
        if dir.is_dir() {
            match std::fs::remove_dir_all(&dir) {
                Ok(()) => tracing::info!(dir = %dir.display(), "removed the rest of a stream deleted before a crash"),
                Err(error) => {
                    tracing::warn!(dir = %dir.display(), %error, "could not remove a deleted stream's directory")
                }
            }
        }
    }
}

/// The streams to open: those of the config file, each replaced by its `$streams`
/// definition when there is one (with a warning if they differ), then the streams created
/// at runtime in creation order.
fn effective_streams(
    configured: &[crate::StreamConfig],
    mut persisted: HashMap<String, (crate::StreamConfig, i64)>,
) -> Vec<(crate::StreamConfig, i64)> {
    let mut out: Vec<(crate::StreamConfig, i64)> = configured
        .iter()
        .map(|config| match persisted.remove(&config.name) {
            Some((definition, created_at_ms)) => {
                let mut placed = config.clone();
                if placed.replication.assignment.is_empty() {
                    // The metadata group fills in each partition's replicas (issue 20).
                    placed.replication.assignment = definition.replication.assignment.clone();
                }
                if definition != placed {
                    tracing::warn!(
                        stream = config.name,
                        "the definition kept in $streams (changed through the admin API) overrides the config file's"
                    );
                }
                (definition, created_at_ms)
            }
            None => (config.clone(), 0),
        })
        .collect();
    let mut created: Vec<_> = persisted.into_values().collect();
    created.sort_by(|(a, at), (b, bt)| at.cmp(bt).then_with(|| a.name.cmp(&b.name)));
    out.extend(created);
    out
}

/// How long a node of a cluster waits at start for the metadata group to have a leader
/// before it opens its listeners anyway (not ready until there is one).
const METADATA_LEADER_WAIT: std::time::Duration = std::time::Duration::from_secs(60);

/// Opens this node's replica of the metadata group (`$streams`, every node a voter), and
/// waits until it has a leader and this replica has applied what that leader had
/// committed, or [`METADATA_LEADER_WAIT`] has passed.
async fn open_metadata(
    cluster: &crate::cluster::ClusterNode,
    data_dir: &std::path::Path,
) -> Result<Arc<PartitionHandle>, BrokerError> {
    let partition = open_internal_replica(cluster, data_dir, STREAMS_STREAM).await?;
    let replica = partition.replica().expect("the metadata group is replicated");
    match replica.wait_for_leader(METADATA_LEADER_WAIT).await {
        Ok(leader) => {
            tracing::info!(leader, "the metadata group has a leader");
            catch_up_with_leader(cluster, &partition).await;
        }
        Err(error) => tracing::warn!(%error, "starting without a metadata leader; not ready until there is one"),
    }
    Ok(partition)
}

/// Opens this node's replica of partition 0 of the internal stream `name`, a Raft group
/// whose voters are every node.
async fn open_internal_replica(
    cluster: &crate::cluster::ClusterNode,
    data_dir: &std::path::Path,
    name: &str,
) -> Result<Arc<PartitionHandle>, BrokerError> {
    PartitionHandle::open_replicated(
        cluster.endpoint(),
        strata_replication::GroupId::new(name, 0),
        data_dir.join(name).join("0"),
        LogConfig::default(),
        0,
        INTERNAL_WRITER_QUEUE,
        crate::partition::AckPolicy::default(),
        Some(cluster.peers().clone()),
        None,
    )
    .await
}

/// Waits, bounded, until this replica has committed what the group's leader had committed
/// when asked: then the definitions applied from it are the cluster's.
async fn catch_up_with_leader(cluster: &crate::cluster::ClusterNode, partition: &PartitionHandle) {
    let Some(replica) = partition.replica() else { return };
    let target = match cluster.endpoint().partition_status(replica.group()).await {
        Ok(status) => status.committed,
        Err(error) => {
            tracing::warn!(%error, "could not ask the metadata leader how far it has committed");
            return;
        }
    };
    let mut committed = partition.watch_committed();
    let caught_up = tokio::time::timeout(METADATA_LEADER_WAIT, committed.wait_for(|c| *c >= target)).await;
    if caught_up.is_err() {
        tracing::warn!(target, committed = partition.committed(), "the metadata replica did not catch up in time");
    }
}

/// In a cluster, `$streams` is the source of truth: a stream of this node's config file
/// (and `default`) that it does not define yet is written there, so every node opens it.
async fn keep_configured_streams(
    cluster: &crate::cluster::ClusterNode,
    definitions: &DefinitionStore,
    configured: &[crate::StreamConfig],
) {
    let kept = definitions.kept();
    let mut wanted: Vec<crate::StreamConfig> = configured.to_vec();
    if !wanted.iter().any(|c| c.name == crate::DEFAULT_STREAM) {
        wanted.push(crate::StreamConfig::new(crate::DEFAULT_STREAM));
    }
    for config in wanted.iter_mut().filter(|c| !kept.contains_key(&c.name)) {
        if let Err(error) = crate::metadata::place(cluster, config) {
            tracing::error!(stream = config.name, %error, "a configured stream does not fit the cluster");
            continue;
        }
        if let Err(error) = definitions.persist(config, 0).await {
            tracing::warn!(stream = config.name, %error, "could not record a configured stream in the metadata group");
        }
    }
}

/// Opens partition 0 of the internal stream `name` under `data_dir`, with its writer.
async fn open_internal(data_dir: &std::path::Path, name: &str) -> Result<Arc<PartitionHandle>, BrokerError> {
    let dir = data_dir.join(name).join("0");
    let thread = format!("writer-{}", name.trim_start_matches('$'));
    PartitionHandle::open(dir, LogConfig::default(), 0, INTERNAL_WRITER_QUEUE, thread, None).await
}

impl Broker {
    /// Opens `$retained/0/`, `$sessions/0/`, `$offsets/0/` and `$streams/0/`, rebuilds
    /// retained messages, sessions, committed offsets and the stream definitions kept at
    /// runtime, opens `<data_dir>/<stream>/<partition>/` of every stream, starts compaction
    /// and binds the MQTT listener.
    pub async fn start(config: BrokerConfig) -> Result<Broker, BrokerError> {
        // First, so that a bad file stops the start before anything is opened.
        let users = config.auth.password_file.as_deref().map(crate::auth::PasswordFile::load).transpose()?;
        let tls = Self::load_tls(&config)?;
        // Every MQTT listener counts, the TLS ones too: one off loopback refuses anonymous
        // clients unless `allow_anonymous` says otherwise.
        let listeners: Vec<SocketAddr> = std::iter::once(config.listen)
            .chain(config.ws_listen)
            .chain(config.tls_listen)
            .chain(config.wss_listen)
            .collect();
        let auth = crate::auth::Authenticator::new(config.auth.anonymous_allowed(&listeners), users)
            .with_identity_as_username(config.auth.use_identity_as_username);
        let acl = config.auth.acl_file.as_deref().map(crate::acl::AclFile::load).transpose()?;

        let sessions_log = open_internal(&config.data_dir, SESSIONS_STREAM).await?;
        let offsets_log = open_internal(&config.data_dir, OFFSETS_STREAM).await?;
        // In a cluster the gRPC listener comes first: peers need it to elect the metadata
        // group's leader, which this start waits for.
        let cluster = match &config.cluster {
            Some(cluster) => Some(Arc::new(crate::cluster::ClusterNode::start(cluster, config.tls.as_ref()).await?)),
            None => None,
        };
        let streams_log = match &cluster {
            None => open_internal(&config.data_dir, STREAMS_STREAM).await?,
            Some(cluster) => open_metadata(cluster, &config.data_dir).await?,
        };
        // Retained messages are the cluster's: set through any node, served by every node.
        // Sessions and consumer groups' offsets stay each node's own for now (issue 21).
        let retained_log = match &cluster {
            None => open_internal(&config.data_dir, RETAINED_STREAM).await?,
            Some(cluster) => open_internal_replica(cluster, &config.data_dir, RETAINED_STREAM).await?,
        };
        let started_at = now_ms();
        let rebuilt = {
            let (retained_log, sessions_log, offsets_log, streams_log) = (
                Arc::clone(&retained_log),
                Arc::clone(&sessions_log),
                Arc::clone(&offsets_log),
                Arc::clone(&streams_log),
            );
            tokio::task::spawn_blocking(move || {
                let retained = RetainedStore::rebuild(Arc::clone(&retained_log))
                    .map_err(|source| BrokerError::Rebuild { dir: retained_log.dir().to_path_buf(), source })?;
                let sessions = SessionStore::rebuild(Arc::clone(&sessions_log), started_at)
                    .map_err(|source| BrokerError::Rebuild { dir: sessions_log.dir().to_path_buf(), source })?;
                let groups = GroupRegistry::rebuild(Arc::clone(&offsets_log))
                    .map_err(|source| BrokerError::Rebuild { dir: offsets_log.dir().to_path_buf(), source })?;
                let definitions = DefinitionStore::rebuild(Arc::clone(&streams_log))
                    .map_err(|source| BrokerError::Rebuild { dir: streams_log.dir().to_path_buf(), source })?;
                Ok::<_, BrokerError>((retained, sessions, groups, definitions))
            })
            .await
            .map_err(|e| BrokerError::Io { what: "rebuilding state".into(), source: std::io::Error::other(e) })??
        };
        let (retained, sessions, groups, definitions) = rebuilt;
        // Without a metadata leader there is no one to record them with: the streams open
        // from what this replica holds, and the node is not ready until a leader appears.
        let metadata_led = streams_log.replica().is_some_and(|replica| replica.leader().is_some());
        if let Some(cluster) = cluster.as_ref().filter(|_| metadata_led) {
            keep_configured_streams(cluster, &definitions, &config.streams).await;
        }
        finish_deletes(&config.data_dir, &definitions.deleted(), &config.streams);
        let maintenance = Maintenance::start(config.maintenance.clone())?;
        for internal in [&retained_log, &sessions_log, &offsets_log, &streams_log] {
            let settings = PartitionSettings {
                cleanup_policy: CleanupPolicy::Compact,
                retention: Default::default(),
                compaction: CompactionConfig::default(),
            };
            let name = internal
                .dir()
                .parent()
                .and_then(|d| d.file_name())
                .map_or_else(String::new, |n| format!("{}/0", n.to_string_lossy()));
            internal.register_maintenance(&maintenance, name, settings)?;
        }
        let effective = effective_streams(&config.streams, definitions.kept());
        let streams =
            Streams::open(&effective, &config.data_dir, config.writer_queue, &maintenance, cluster.clone()).await?;
        let listener = mqtt_listener(config.listen, config.socket_receive_buffer)
            .map_err(|source| BrokerError::Io { what: format!("listening on {}", config.listen), source })?;
        let ws_listener = match config.ws_listen {
            Some(addr) => Some(
                mqtt_listener(addr, config.socket_receive_buffer)
                    .map_err(|source| BrokerError::Io { what: format!("listening on {addr} (WebSocket)"), source })?,
            ),
            None => None,
        };
        let bind_tls = |addr: Option<SocketAddr>, what: &str| -> Result<Option<TcpListener>, BrokerError> {
            addr.map(|addr| {
                mqtt_listener(addr, config.socket_receive_buffer)
                    .map_err(|source| BrokerError::Io { what: format!("listening on {addr} ({what})"), source })
            })
            .transpose()
        };
        let tls_listener = bind_tls(config.tls_listen, "mqtt.tls_listen")?;
        let wss_listener = bind_tls(config.wss_listen, "mqtt.wss_listen")?;
        let started_at_ms =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
        let peers = crate::limits::PeerLimiter::new(&config.limits);
        let shared = Arc::new(Shared {
            config,
            streams,
            retained,
            sessions,
            wills: crate::wills::WillScheduler::default(),
            definitions,
            admin_lock: tokio::sync::Mutex::new(()),
            groups,
            clients: crate::client_registry::ClientRegistry::default(),
            next_connection_id: AtomicU64::new(1),
            started_at_ms,
            connections: crate::limits::ConnectionCount::default(),
            peers,
            metrics: Arc::new(crate::metrics::Metrics::new()),
            auth: Arc::new(AuthFiles { authenticator: Mutex::new(Arc::new(auth)), acl: Mutex::new(acl.map(Arc::new)) }),
            sys: crate::sys_topics::SysTopics::new(),
            shutdown: crate::shutdown::ShutdownState::new(),
            maintenance_totals: maintenance.totals_reader(),
            maintenance: Mutex::new(Some(Arc::new(maintenance))),
        });
        // Wills still waiting out their delay when the broker stopped: a due one goes out now.
        for (client_id, will) in shared.sessions.pending_wills() {
            shared.delay_will(&client_id, will.publish, will.due_at_ms);
        }
        for stream in shared.streams.all() {
            for partition in &stream.partitions {
                shared.metrics.add_partition(&stream.name, false, partition);
            }
        }
        for (name, partition) in [
            (RETAINED_STREAM, shared.retained.partition()),
            (SESSIONS_STREAM, shared.sessions.partition()),
            (OFFSETS_STREAM, shared.groups.partition()),
            (STREAMS_STREAM, shared.definitions.partition()),
        ] {
            shared.metrics.add_partition(name, true, partition);
        }
        Ok(Broker { listener, ws_listener, tls_listener, wss_listener, tls, shared })
    }

    /// Reads `[tls]` when a TLS listener needs it, and checks that what needs it has it.
    fn load_tls(config: &BrokerConfig) -> Result<Option<Arc<crate::tls::TlsState>>, BrokerError> {
        let needs = "tls.cert_file and tls.key_file";
        for (key, addr) in [("mqtt.tls_listen", config.tls_listen), ("mqtt.wss_listen", config.wss_listen)] {
            if addr.is_some() && config.tls.is_none() {
                return Err(BrokerError::TlsIncomplete { key, needs });
            }
        }
        if config.auth.use_identity_as_username
            && config.tls.as_ref().and_then(|tls| tls.client_ca_file.as_ref()).is_none()
        {
            return Err(BrokerError::TlsIncomplete {
                key: "auth.use_identity_as_username",
                needs: "tls.client_ca_file (clients present no certificate without it)",
            });
        }
        let Some(tls) = &config.tls else { return Ok(None) };
        Ok(Some(Arc::new(crate::tls::TlsState::load(tls.clone())?)))
    }

    /// The address the inter-node gRPC listener (`[cluster] listen`) is bound to, in a
    /// cluster.
    pub fn cluster_local_addr(&self) -> Option<SocketAddr> {
        self.shared.streams.cluster().map(|cluster| cluster.local_addr())
    }

    /// The inter-node TLS of a cluster with `[tls]`, for SIGHUP to reload.
    pub fn cluster_tls(&self) -> Option<strata_replication::ClusterTls> {
        self.shared.streams.cluster().and_then(|cluster| cluster.tls().cloned())
    }

    /// The address the MQTT-over-TLS listener is bound to, when there is one.
    pub fn tls_local_addr(&self) -> Option<std::io::Result<SocketAddr>> {
        self.tls_listener.as_ref().map(TcpListener::local_addr)
    }

    /// The address the MQTT-over-WebSocket-over-TLS listener is bound to, when there is one.
    pub fn wss_local_addr(&self) -> Option<std::io::Result<SocketAddr>> {
        self.wss_listener.as_ref().map(TcpListener::local_addr)
    }

    /// A handle that reloads `[tls]`'s certificate and key (on SIGHUP); `None` without `[tls]`.
    pub fn tls_reloader(&self) -> Option<crate::tls::TlsReloader> {
        self.tls.as_ref().map(|state| crate::tls::TlsReloader::new(Arc::clone(state)))
    }

    /// The address the MQTT-over-WebSocket listener is bound to, when there is one.
    pub fn ws_local_addr(&self) -> Option<std::io::Result<SocketAddr>> {
        self.ws_listener.as_ref().map(TcpListener::local_addr)
    }

    /// What reloads `[auth] password_file` and `acl_file` (on SIGHUP).
    pub fn auth_reloader(&self) -> AuthReloader {
        AuthReloader { files: Arc::clone(&self.shared.auth), config: self.shared.config.auth.clone() }
    }

    /// Which authentication is in force, in words, for the start-up lines.
    pub fn auth_summary(&self) -> String {
        let config = &self.shared.config.auth;
        let users = match &config.password_file {
            Some(path) => format!("users from {}", path.display()),
            None => "no password file".to_owned(),
        };
        let anonymous = match (self.shared.auth.authenticator().allows_anonymous(), config.allow_anonymous) {
            (true, Some(_)) => "anonymous clients allowed (auth.allow_anonymous = true)",
            (true, None) => "anonymous clients allowed (every MQTT listener is on loopback)",
            (false, Some(_)) => "anonymous clients refused (auth.allow_anonymous = false)",
            (false, None) => "anonymous clients refused (an MQTT listener is not on loopback)",
        };
        let mut summary = format!("{users}; {anonymous}");
        if let Some(path) = &config.acl_file {
            summary.push_str(&format!("; topic rights from {}", path.display()));
        }
        if self.tls.as_ref().is_some_and(|tls| tls.requires_client_certificate()) {
            summary.push_str("; TLS clients must present a certificate signed by tls.client_ca_file");
            if config.use_identity_as_username {
                summary.push_str(", whose CN is their user name (auth.use_identity_as_username)");
            }
        }
        summary
    }

    /// The address the MQTT listener is bound to.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// A handle to the admin operations (streams, groups, compaction and retention now), for
    /// the gRPC admin API; usable while the broker runs.
    pub fn admin(&self) -> crate::admin::Admin {
        crate::admin::Admin { shared: Arc::clone(&self.shared) }
    }

    /// A handle that renders this broker's metrics, usable while and after it runs.
    pub fn metrics(&self) -> BrokerMetrics {
        BrokerMetrics { shared: Arc::clone(&self.shared) }
    }

    /// Accepts connections until `shutdown` completes, then closes the log cleanly.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Result<(), BrokerError> {
        let Broker { listener, ws_listener, tls_listener, wss_listener, tls, shared } = self;
        // Aborted at shutdown, like the connections they spawned are dropped with the runtime.
        let ws_task = ws_listener.map(|ws| tokio::spawn(crate::websocket::serve(ws, Arc::clone(&shared))));
        let tls_tasks: Vec<tokio::task::JoinHandle<()>> =
            [(tls_listener, crate::listen::Carrying::Mqtt), (wss_listener, crate::listen::Carrying::WebSocket)]
                .into_iter()
                .filter_map(|(listener, carrying)| {
                    let tls = Arc::clone(tls.as_ref()?);
                    Some(tokio::spawn(crate::listen::serve(listener?, tls, carrying, Arc::clone(&shared))))
                })
                .collect();
        tokio::pin!(shutdown);
        let sys_task = (shared.config.sys_interval_secs > 0).then(|| {
            let interval = std::time::Duration::from_secs(shared.config.sys_interval_secs);
            tokio::spawn(refresh_sys_topics(Arc::clone(&shared), interval))
        });
        let expiry_task = tokio::spawn(Arc::clone(&shared).expire_sessions_when_due());
        let retained_task = tokio::spawn(shared.retained.follow());
        let sessions_task = tokio::spawn(shared.sessions.follow());
        let offsets_task = tokio::spawn(shared.groups.follow());
        let definitions_task = tokio::spawn(shared.definitions.follow());
        let group_expiry_task = tokio::spawn(Arc::clone(&shared).expire_idle_groups());
        let cluster_tasks: Vec<tokio::task::JoinHandle<()>> = if shared.streams.cluster().is_some() {
            vec![
                tokio::spawn(crate::metadata::follow_metadata(Arc::clone(&shared))),
                tokio::spawn(crate::metadata::keep_placement(Arc::clone(&shared))),
            ]
        } else {
            Vec::new()
        };
        loop {
            tokio::select! {
                // Shutdown first: its future installs the signal handlers on its first poll.
                biased;
                () = &mut shutdown => break,
                accepted = listener.accept() => match accepted {
                    Ok((stream, peer)) => {
                        let shared = Arc::clone(&shared);
                        tokio::spawn(async move {
                            crate::connection::run(stream, peer, shared).await;
                        });
                    }
                    // Running out of file descriptors and the like: keep serving the others.
                    Err(error) => {
                        tracing::warn!(%error, "accept failed");
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    }
                },
            }
        }
        if let Some(ws_task) = ws_task {
            ws_task.abort();
        }
        for task in tls_tasks {
            task.abort();
        }
        expiry_task.abort();
        retained_task.abort();
        sessions_task.abort();
        offsets_task.abort();
        definitions_task.abort();
        group_expiry_task.abort();
        for task in cluster_tasks {
            task.abort();
        }
        // Graceful shutdown: accept no more, tell every connection to end (DISCONNECT 0x8B
        // to MQTT 5 clients; each saves its session and publishes its will as on any server
        // close), and wait for them, for a bounded time, before closing the logs.
        drop(listener);
        if let Some(sys_task) = sys_task {
            sys_task.abort();
        }
        shared.shutdown.begin();
        let still_running = shared.shutdown.wait_idle(SHUTDOWN_GRACE).await;
        if still_running > 0 {
            // Dropped with the runtime; their sessions keep the offsets last committed.
            tracing::warn!(still_running, "connections still running after the shutdown grace period");
        }
        let partitions: Vec<Arc<PartitionHandle>> = [
            shared.retained.partition(),
            shared.sessions.partition(),
            shared.groups.partition(),
            shared.definitions.partition(),
        ]
        .into_iter()
        .cloned()
        .chain(shared.streams.partitions())
        .collect();
        // Raft stops before the logs close; peers elect other leaders meanwhile.
        for partition in &partitions {
            partition.stop_replication().await;
        }
        if let Some(cluster) = shared.streams.cluster() {
            cluster.stop();
        }
        // From here the admin API can start no compaction or retention run.
        let maintenance = lock(&shared.maintenance).take();
        tokio::task::spawn_blocking(move || {
            if let Some(maintenance) = maintenance {
                stop_maintenance(maintenance);
            }
            // Every log is closed even when one fails (a partition whose fsync failed closes
            // without its clean-shutdown marker and reports it): the first error is returned.
            let mut first_error = Ok(());
            for partition in &partitions {
                if let Err(source) = partition.close() {
                    tracing::error!(dir = %partition.dir().display(), error = %source, "closing a log failed");
                    if first_error.is_ok() {
                        first_error = Err(BrokerError::Log { dir: partition.dir().to_path_buf(), source });
                    }
                }
            }
            first_error
        })
        .await
        .map_err(|e| BrokerError::Io { what: "closing the log".into(), source: std::io::Error::other(e) })?
    }
}

/// Renders a broker's metrics on demand (for `/metrics`); see [`crate::Broker::metrics`].
#[derive(Clone)]
pub struct BrokerMetrics {
    pub(crate) shared: Arc<Shared>,
}

impl BrokerMetrics {
    /// Every metric in the Prometheus text exposition format (version 0.0.4), with the
    /// partitions' offsets and sizes read now.
    pub fn render(&self) -> String {
        let consumers = self.shared.consumers();
        let mut text = self.shared.metrics.render(Some(self.shared.maintenance_totals.totals()), &consumers);
        if let Some(cluster) = self.shared.streams.cluster() {
            text.push_str(&crate::raft_metrics::render(&cluster.endpoint().figures()));
        }
        text
    }

    /// Why publishes are refused now, one line per partition: a failed fsync (the partition
    /// refuses appends until it is recovered) or a full disk. `/ready` says 503 with these
    /// while there are any.
    pub fn storage_problems(&self) -> Vec<String> {
        self.shared.metrics.storage_problems()
    }
}

/// Refreshes the `$SYS` topics every `interval`, the first time at once.
async fn refresh_sys_topics(shared: Arc<Shared>, interval: std::time::Duration) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        shared.sys.refresh(shared.metrics.sys_totals());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::StreamConfig;

    #[test]
    fn kept_definitions_override_the_config_file_and_created_streams_follow_in_creation_order() {
        let mut orders = StreamConfig::new("orders");
        orders.topics = vec!["orders/#".into()];
        let configured = vec![orders.clone(), StreamConfig::new("default")];
        let mut altered = orders.clone();
        altered.retention.retention_ms = Some(60_000);
        let persisted = HashMap::from([
            ("orders".to_owned(), (altered.clone(), 0)),
            ("late".to_owned(), (StreamConfig::new("late"), 200)),
            ("early".to_owned(), (StreamConfig::new("early"), 100)),
        ]);
        let names = |streams: &[(StreamConfig, i64)]| streams.iter().map(|(s, _)| s.name.clone()).collect::<Vec<_>>();
        let effective = effective_streams(&configured, persisted);
        assert_eq!(names(&effective), ["orders", "default", "early", "late"]);
        assert_eq!(effective[0].0, altered);
        assert_eq!(names(&effective_streams(&configured, HashMap::new())), ["orders", "default"]);
    }
}
