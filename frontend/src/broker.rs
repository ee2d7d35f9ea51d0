//! The broker: opens every partition of the configured streams (and of the built-in stream
//! `default`; `streams.rs` routes publishes to them) and the internal compacted streams
//! `$retained`, `$sessions`, `$offsets` and `$streams`, starts their writers, rebuilds
//! retained messages, disconnected sessions, consumer groups' committed offsets and the
//! stream definitions made at runtime (`admin.rs`) from them, holds the consumer
//! groups (`groups.rs`), accepts MQTT connections on TCP (one task
//! each) and knows which client ids are connected, so that a second CONNECT with the same id
//! takes the session over. A background task expires disconnected sessions; a
//! `strata_compaction::Maintenance` applies retention and compaction to every stream per its
//! policy (the internal streams are compacted).

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use strata_compaction::{CleanupPolicy, CompactionConfig, Maintenance, MaintenanceConfig, PartitionSettings};
use strata_log::{Log, LogConfig, LogError, Record, StoredRecord};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};

use crate::codec::Publish;
use crate::partition_writer::{self, AppendError, AppendRequest};
use crate::record::{self, StoredMessage};
use crate::session_state::SessionState;
use crate::streams::Streams;

/// The built-in stream that gets every publish no configured stream captures.
pub const DEFAULT_STREAM: &str = "default";
/// Internal compacted stream of retained messages (key = topic, via `mqtt.topic`).
pub const RETAINED_STREAM: &str = "$retained";
/// Internal compacted stream of persistent sessions (record key = client id).
pub const SESSIONS_STREAM: &str = "$sessions";
/// Internal compacted stream of consumer groups' committed offsets (key =
/// `<group>/<stream>/<partition>`, `groups.rs`).
pub const OFFSETS_STREAM: &str = "$offsets";
/// Internal compacted stream of the stream definitions created or altered at runtime (key =
/// stream name, value = `stream_settings::encode_definition`, empty = deleted).
pub const STREAMS_STREAM: &str = "$streams";
/// The least time between two scans of the stored sessions for expiry.
/// `[mqtt] share_group_idle_expiry` by default: a day.
pub const DEFAULT_SHARE_GROUP_IDLE_EXPIRY: std::time::Duration = std::time::Duration::from_secs(24 * 3600);
const SESSION_SCAN_GAP: std::time::Duration = std::time::Duration::from_secs(1);
/// How long shutdown waits for connections to end before closing the logs regardless.
const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(10);
/// Capacity of each internal stream's writer queue.
const INTERNAL_WRITER_QUEUE: usize = 1024;

/// What the broker needs to start.
#[derive(Debug, Clone, PartialEq)]
pub struct BrokerConfig {
    /// MQTT over TCP listens here.
    pub listen: SocketAddr,
    /// Root of the partition directories (`<data_dir>/<stream>/<partition>/`).
    pub data_dir: PathBuf,
    /// Largest packet accepted from a client, fixed header included (bytes).
    pub max_packet_size: u32,
    /// Most outbound QoS 1/2 messages in flight per connection; the client's Receive
    /// Maximum lowers it.
    pub max_inflight: u16,
    /// Our Receive Maximum: most inbound QoS 2 messages a client may leave unreleased.
    pub receive_maximum: u16,
    /// How long a `$share` group may have no member (and no stored session subscribed to
    /// it) before it is removed with its committed offsets (issue 22).
    pub share_group_idle_expiry: std::time::Duration,
    /// Capacity of each partition writer's queue (records).
    pub writer_queue: usize,
    /// The configured streams (`[[streams]]`); `default` is added when absent. A definition
    /// kept in `$streams` (created or altered at runtime) overrides the entry of its name.
    pub streams: Vec<crate::streams::StreamConfig>,
    /// What a stream created at runtime starts from before its own settings (`[log]`).
    pub stream_defaults: crate::streams::StreamConfig,
    /// MQTT over WebSocket (path `/mqtt`) listens here; `None`: off.
    pub ws_listen: Option<SocketAddr>,
    /// The `Origin`s a browser page may connect over WebSocket from; empty: any.
    pub ws_allowed_origins: Vec<String>,
    /// Connection, topic, keep-alive and topic-alias limits.
    pub limits: crate::limits::Limits,
    /// Seconds between refreshes of the `$SYS` topics; 0 turns them off.
    pub sys_interval_secs: u64,
    /// SO_RCVBUF of every accepted MQTT socket, in bytes; `None`: the kernel's autotuning
    /// (up to `net.ipv4.tcp_rmem`'s maximum, 6 MiB by default). Bounded, a publisher sending
    /// faster than the broker appends waits in its own send buffer, not in ours.
    pub socket_receive_buffer: Option<usize>,
    /// The node's retention and cleaner threads (`[compaction]` in the config file).
    pub maintenance: MaintenanceConfig,
    /// Who may connect (`[auth]`).
    pub auth: crate::auth::AuthConfig,
    /// MQTT over TLS listens here (`[mqtt] tls_listen`, conventionally port 8883); `None`: off.
    pub tls_listen: Option<SocketAddr>,
    /// MQTT over WebSocket over TLS (path `/mqtt`) listens here (`[mqtt] wss_listen`);
    /// `None`: off.
    pub wss_listen: Option<SocketAddr>,
    /// The certificate of both TLS listeners, and the CA of client certificates (`[tls]`);
    /// needed when either is set.
    pub tls: Option<crate::tls::TlsConfig>,
}

/// Binds a listener for MQTT (over TCP or WebSocket). TCP_NODELAY and SO_RCVBUF are set on
/// the listening socket, before `listen`: accepted sockets inherit both (Linux), which saves
/// two system calls per connection, and the window offered in the handshake already fits
/// the bounded buffer.
fn mqtt_listener(addr: SocketAddr, receive_buffer: Option<usize>) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() { tokio::net::TcpSocket::new_v4()? } else { tokio::net::TcpSocket::new_v6()? };
    // As `TcpListener::bind` does: a restart may bind while old connections are in TIME_WAIT.
    socket.set_reuseaddr(true)?;
    socket.set_nodelay(true)?;
    if let Some(bytes) = receive_buffer {
        socket.set_recv_buffer_size(u32::try_from(bytes).unwrap_or(u32::MAX))?;
    }
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// Pending connections the kernel queues before `accept` (as tokio's `TcpListener::bind`).
const LISTEN_BACKLOG: u32 = 1024;

/// Default [`BrokerConfig::socket_receive_buffer`]. Measured on loopback with 4 publishers
/// sending flat out (benches/README.md): 128 KiB keeps the time a message waits before the
/// broker reads it to a few milliseconds, at the same throughput as the kernel's autotuning.
pub const DEFAULT_SOCKET_RECEIVE_BUFFER: usize = 128 << 10;

impl BrokerConfig {
    /// Defaults: loopback port 1883, `./data`, 1 MiB packets, 1,024 in flight.
    pub fn new(listen: SocketAddr, data_dir: PathBuf) -> BrokerConfig {
        BrokerConfig {
            listen,
            data_dir,
            max_packet_size: 1 << 20,
            max_inflight: 1024,
            receive_maximum: 1024,
            share_group_idle_expiry: DEFAULT_SHARE_GROUP_IDLE_EXPIRY,
            writer_queue: 8192,
            streams: Vec::new(),
            stream_defaults: crate::streams::StreamConfig::new(""),
            ws_listen: None,
            ws_allowed_origins: Vec::new(),
            limits: crate::limits::Limits::default(),
            sys_interval_secs: 10,
            socket_receive_buffer: Some(DEFAULT_SOCKET_RECEIVE_BUFFER),
            maintenance: MaintenanceConfig::default(),
            auth: crate::auth::AuthConfig::default(),
            tls_listen: None,
            wss_listen: None,
            tls: None,
        }
    }
}

/// Why the broker could not start.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    /// An internal stream could not be read back at start.
    #[error("rebuilding from {dir}: {source}")]
    Rebuild {
        /// The partition directory.
        dir: PathBuf,
        /// What went wrong.
        source: LogError,
    },
    /// The maintenance threads did not start.
    #[error("starting compaction of the internal streams: {0}")]
    Maintenance(#[from] strata_compaction::CompactionError),
    /// The partition log did not open.
    #[error("opening partition {dir}: {source}")]
    Log {
        /// The partition directory.
        dir: PathBuf,
        /// What went wrong.
        source: LogError,
    },
    /// `[auth] password_file` cannot be used.
    #[error("auth.password_file: {0}")]
    PasswordFile(#[from] crate::auth::PasswordFileError),
    /// `[auth] acl_file` cannot be used.
    #[error("auth.acl_file: {0}")]
    AclFile(#[from] crate::acl::AclFileError),
    /// A `[tls]` file cannot be used.
    #[error("{0}")]
    Tls(#[from] crate::tls::TlsError),
    /// A TLS listener (or `use_identity_as_username`) is configured without what it needs.
    #[error("{key} is set, but {needs} is not")]
    TlsIncomplete {
        /// The key that is set.
        key: &'static str,
        /// What it needs.
        needs: &'static str,
    },
    /// The listener did not bind, or a thread did not start.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// What went wrong.
        source: std::io::Error,
    },
}

/// A persistent session as last written to `$sessions`.
#[derive(Debug, Clone, Default)]
pub(crate) struct SessionView {
    pub(crate) filters: Vec<String>,
    pub(crate) positions: Vec<crate::session_state::PartitionPosition>,
}

impl SessionView {
    fn of(state: &SessionState) -> SessionView {
        SessionView {
            filters: state.subscriptions.iter().map(|s| s.filter.clone()).collect(),
            positions: state.positions.clone(),
        }
    }
}

/// The users (`[auth] password_file`) and topic rights (`[auth] acl_file`) in force. A
/// connection takes both at its CONNECT and keeps them: a reload applies to new connections.
pub(crate) struct AuthFiles {
    authenticator: Mutex<Arc<crate::auth::Authenticator>>,
    /// `None`: no ACL file, everyone may do anything.
    acl: Mutex<Option<Arc<crate::acl::AclFile>>>,
}

impl AuthFiles {
    /// Who may connect, now.
    pub(crate) fn authenticator(&self) -> Arc<crate::auth::Authenticator> {
        Arc::clone(&lock(&self.authenticator))
    }

    /// Who may read and write which topics, now.
    pub(crate) fn acl(&self) -> Option<Arc<crate::acl::AclFile>> {
        lock(&self.acl).clone()
    }
}

/// Reloads `[auth] password_file` and `[auth] acl_file` (the serve command calls it on
/// SIGHUP). New connections use what it loaded; connections already up keep the rights they
/// had. A file that cannot be used changes nothing: the previous users or rules stay.
#[derive(Clone)]
pub struct AuthReloader {
    files: Arc<AuthFiles>,
    config: crate::auth::AuthConfig,
}

impl AuthReloader {
    /// Reads the password file again: `Ok(None)` when none is configured, else its path and
    /// how many users it has. Blocking (it reads a file): call it off the async threads.
    pub fn reload_password_file(&self) -> Result<Option<(PathBuf, usize)>, crate::auth::PasswordFileError> {
        let Some(path) = &self.config.password_file else { return Ok(None) };
        let users = crate::auth::PasswordFile::load(path)?;
        let count = users.len();
        let mut authenticator = lock(&self.files.authenticator);
        *authenticator = Arc::new(authenticator.with_users(users));
        Ok(Some((path.clone(), count)))
    }

    /// Reads the ACL file again: `Ok(None)` when none is configured, else its path.
    /// Blocking, like [`AuthReloader::reload_password_file`].
    pub fn reload_acl_file(&self) -> Result<Option<PathBuf>, crate::acl::AclFileError> {
        let Some(path) = &self.config.acl_file else { return Ok(None) };
        let acl = crate::acl::AclFile::load(path)?;
        *lock(&self.files.acl) = Some(Arc::new(acl));
        Ok(Some(path.clone()))
    }
}

/// A connected client's handle, kept so a newer connection can take its session over.
pub(crate) struct Connected {
    connection_id: u64,
    /// Its verified user (`None`: anonymous): only the same user may take it over (issue 22).
    user: Option<String>,
    take_over: oneshot::Sender<()>,
    /// Completes (its sender is dropped) once that connection has saved its session and
    /// scheduled its will, so the newer one reads the session after it.
    finished: oneshot::Receiver<()>,
}

/// What a new connection holds while it runs; dropping it tells a newer connection with the
/// same client id that this one has finished.
pub(crate) struct Registration {
    pub(crate) connection_id: u64,
    pub(crate) taken_over: oneshot::Receiver<()>,
    pub(crate) previous_finished: Option<oneshot::Receiver<()>>,
    pub(crate) _finished: oneshot::Sender<()>,
}

/// A will waiting for its Will Delay Interval.
struct DelayedWill {
    token: u64,
    publish: Publish,
}

/// State shared by all connections.
pub(crate) struct Shared {
    pub(crate) config: BrokerConfig,
    /// Every stream's partitions and writers; a publish goes where [`Streams::route`] says.
    pub(crate) streams: Streams,
    retained_writer: mpsc::Sender<AppendRequest>,
    /// Topic → retained message, mirrored from `$retained`. Locked briefly, never across an
    /// await.
    retained: Mutex<Retained>,
    sessions_writer: mpsc::Sender<AppendRequest>,
    /// Disconnected persistent sessions, mirrored from `$sessions`. A connection takes its
    /// session out while it runs and puts it back when it ends.
    pub(crate) sessions: Mutex<HashMap<String, SessionState>>,
    /// Told when a session is put in `sessions` that expires before `next_expiry_ms`, so
    /// that the expiry task (`expire_sessions_when_due`) can sleep until the earliest expiry
    /// instead of polling.
    session_stored: tokio::sync::Notify,
    /// When the expiry task will next look (unix ms): `i64::MAX` when no session can
    /// expire, `i64::MIN` while it scans (then every stored session wakes it).
    next_expiry_ms: AtomicI64,
    delayed_wills: Mutex<HashMap<String, DelayedWill>>,
    pub(crate) offsets_writer: mpsc::Sender<AppendRequest>,
    /// Committed offsets read back from `$offsets` at start, for groups not yet recreated
    /// (and reset by the admin API while they are not).
    pub(crate) restored_offsets: Mutex<HashMap<String, u64>>,
    /// Where stream definitions created or altered at runtime are kept.
    pub(crate) streams_writer: mpsc::Sender<AppendRequest>,
    /// Serialises the admin API's stream changes and offset resets.
    pub(crate) admin_lock: tokio::sync::Mutex<()>,
    /// Every persistent session's filters and positions as last written to `$sessions`
    /// (connected or not), for the admin API and the lag metrics.
    pub(crate) session_index: Mutex<HashMap<String, SessionView>>,
    /// Consumer groups (`$share/<group>/...`) by group name; removed once idle for
    /// `share_group_idle_expiry` ([`Shared::expire_idle_groups`]).
    pub(crate) groups: Mutex<HashMap<String, Arc<crate::groups::Group>>>,
    pub(crate) connected: Mutex<HashMap<String, Connected>>,
    next_connection_id: AtomicU64,
    started_at_ms: u64,
    /// Open connections, for `limits.max_connections`.
    pub(crate) connections: crate::limits::ConnectionCount,
    /// Open connections and connect rate per client address.
    pub(crate) peers: crate::limits::PeerLimiter,
    /// Counters and histograms (`metrics.rs`).
    pub(crate) metrics: Arc<crate::metrics::Metrics>,
    /// Who may connect.
    /// and who may read and write which topics: reloaded on SIGHUP.
    pub(crate) auth: Arc<AuthFiles>,
    /// The in-memory `$SYS` topics.
    pub(crate) sys: crate::sys_topics::SysTopics,
    /// Tells connections to end, and counts them, at shutdown.
    pub(crate) shutdown: crate::shutdown::ShutdownState,
    pub(crate) maintenance_totals: strata_compaction::TotalsReader,
    /// Retention and compaction, shared with the admin API (`admin.rs`) for runs on demand;
    /// taken out at shutdown, after which the admin API can no longer start one.
    pub(crate) maintenance: Mutex<Option<Arc<Maintenance>>>,
}

impl Shared {
    /// Registers `client_id` for a new connection of `user` (`None`: anonymous); an older
    /// connection with the same id is told to go, and the registration carries that
    /// connection's `finished` signal. `None`, with nothing changed, when the id belongs to
    /// another user: its connection or its stored session is theirs (issue 22). Both are
    /// looked at under the `connected` lock: a connection saves its session before it
    /// unregisters, so one of the two always shows the owner.
    pub(crate) fn register(&self, client_id: &str, user: Option<&str>) -> Option<Registration> {
        let mut connected = lock(&self.connected);
        let live = connected.get(client_id).map(|c| crate::session_state::Owner::User(c.user.clone()));
        let stored = lock(&self.sessions)
            .get(client_id)
            .filter(|session| !session.expired(now_ms()))
            .map(|session| session.owner.clone());
        if !crate::session_state::may_claim(user, live.as_ref(), stored.as_ref()) {
            return None;
        }
        let connection_id = self.next_connection_id.fetch_add(1, Ordering::Relaxed);
        let (take_over, taken_over) = oneshot::channel();
        let (finished_tx, finished) = oneshot::channel();
        let previous = connected.insert(
            client_id.to_owned(),
            Connected { connection_id, user: user.map(str::to_owned), take_over, finished },
        );
        drop(connected);
        let previous_finished = previous.map(|previous| {
            let _ = previous.take_over.send(());
            previous.finished
        });
        Some(Registration { connection_id, taken_over, previous_finished, _finished: finished_tx })
    }

    /// Whether `client_id` may have a persistent session under `max_sessions` (issue 22): it
    /// has one already (stored, or connected), or fewer than `max_sessions` are stored. A new
    /// session is stored at its first subscription or at its disconnect, so sessions
    /// connecting at the same moment may together pass the limit by as many.
    pub(crate) fn may_store_session(&self, client_id: &str) -> bool {
        let Some(max) = self.config.limits.max_sessions else { return true };
        // One lock at a time: no order to keep with the other users of these maps.
        let (known, stored) = {
            let index = lock(&self.session_index);
            (index.contains_key(client_id), index.len())
        };
        known
            || stored < max
            || lock(&self.sessions).contains_key(client_id)
            || lock(&self.connected).contains_key(client_id)
    }

    /// Forgets `client_id` if `connection_id` still holds it.
    pub(crate) fn unregister(&self, client_id: &str, connection_id: u64) {
        let mut connected = lock(&self.connected);
        if connected.get(client_id).is_some_and(|c| c.connection_id == connection_id) {
            connected.remove(client_id);
        }
    }

    /// Stores a retained message (or deletes the topic's, for an empty payload) in
    /// `$retained`, durably, then in the in-memory map.
    pub(crate) async fn store_retained(&self, record: Record) -> Result<(), AppendError> {
        let (durable, done) = oneshot::channel();
        let stored = StoredRecord {
            offset: 0,
            timestamp: record.timestamp,
            key: record.key.clone(),
            value: record.value.clone(),
            headers: record.headers.clone(),
        };
        self.retained_writer
            .send(AppendRequest { record, durable: Some(durable) })
            .await
            .map_err(|_| AppendError::failed("the $retained writer stopped"))?;
        let offset = done.await.map_err(|_| AppendError::failed("the $retained writer stopped"))??;
        lock(&self.retained).apply(StoredRecord { offset, ..stored });
        Ok(())
    }

    /// Whether a retained publish of `payload_len` bytes to `topic` fits in
    /// `max_retained_messages` and `max_retained_bytes` (issue 22). Checked as the publish
    /// arrives: retained publishes stored at the same instant may each pass it.
    pub(crate) fn retained_fits(&self, topic: &str, payload_len: usize) -> bool {
        lock(&self.retained).fits(topic, payload_len, &self.config.limits)
    }

    /// The retained messages whose topic matches `filter`, each with its offset in
    /// `$retained`, then the matching `$SYS` values (no offset: they come from memory, like
    /// retained messages; `sys_topics.rs`).
    pub(crate) fn retained_matching(&self, filter: &str) -> Vec<(StoredMessage, Option<u64>)> {
        let retained = lock(&self.retained);
        let mut matching: Vec<(StoredMessage, Option<u64>)> = retained
            .messages
            .values()
            .filter(|m| crate::topic::matches(filter, &m.topic))
            .map(|m| (m.clone(), Some(m.offset)))
            .collect();
        matching.sort_by_key(|(_, offset)| *offset);
        matching.extend(self.sys.matching(filter).into_iter().map(|m| (m, None)));
        matching
    }

    /// The retained message at `offset` in `$retained`, if it is still its topic's current
    /// one (not replaced or deleted since).
    pub(crate) fn retained_at(&self, offset: u64) -> Option<StoredMessage> {
        lock(&self.retained).messages.values().find(|m| m.offset == offset).cloned()
    }

    /// Publishes a message the broker itself originates (a will) through the normal path:
    /// `$retained` first if RETAIN is set, then the stream, durably.
    pub(crate) async fn publish(&self, publish: &Publish, client_id: &str) -> Result<u64, String> {
        let record = record::to_record(publish, client_id, now_ms());
        if publish.retain {
            self.store_retained(record.clone()).await?;
        }
        let (durable, done) = oneshot::channel();
        self.streams
            .route(&publish.topic, &publish.properties.user_properties)
            .writer
            .send(AppendRequest { record, durable: Some(durable) })
            .await
            .map_err(|_| "the partition writer stopped".to_owned())?;
        Ok(done.await.map_err(|_| "the partition writer stopped".to_owned())??)
    }

    /// Takes the disconnected session of `client_id` out of the store, unless it expired.
    pub(crate) fn take_session(&self, client_id: &str) -> Option<SessionState> {
        let session = lock(&self.sessions).remove(client_id)?;
        (!session.expired(now_ms())).then_some(session)
    }

    /// Writes `state` (or a tombstone for `None`) to `$sessions` as the latest record of
    /// `client_id`; with `durable`, waits until it is durable. A disconnected session is also
    /// put back in the store.
    pub(crate) async fn save_session(&self, client_id: &str, state: Option<&SessionState>, durable: bool) {
        let value = state.map(SessionState::encode).unwrap_or_default();
        let record = Record::new(now_ms(), value).with_key(client_id.as_bytes().to_vec());
        {
            let mut index = lock(&self.session_index);
            match state {
                Some(state) => index.insert(client_id.to_owned(), SessionView::of(state)),
                None => index.remove(client_id),
            };
        }
        let (tx, rx) = if durable {
            let (tx, rx) = oneshot::channel();
            (Some(tx), Some(rx))
        } else {
            (None, None)
        };
        if self.sessions_writer.send(AppendRequest { record, durable: tx }).await.is_err() {
            tracing::warn!(client_id, "the $sessions writer stopped; session not saved");
            return;
        }
        if let Some(rx) = rx
            && !matches!(rx.await, Ok(Ok(_)))
        {
            tracing::warn!(client_id, "session record not stored");
        }
        if let Some(state) = state
            && state.disconnected_at_ms != 0
        {
            lock(&self.sessions).insert(client_id.to_owned(), state.clone());
            // Only a session due before the task's next look wakes it: under a churn of
            // sessions with like intervals, the task is not woken by each disconnect.
            if state.expires_at_ms().is_some_and(|at| at < self.next_expiry_ms.load(Ordering::SeqCst)) {
                // A permit if the task is not waiting: the wake cannot be lost.
                self.session_stored.notify_one();
            }
        }
    }

    /// Forgets the deleted stream `stream` in every disconnected session
    /// ([`SessionState::forget_stream`]) and writes each session it changed to `$sessions`,
    /// durably. Each record is queued while its session is still in the store, so a client
    /// that reconnects meanwhile resumes the changed session, and its own writes land after.
    /// (A connected session drops the stream with its cursors, at its next commit.)
    pub(crate) async fn forget_stream_in_sessions(&self, stream: &str) {
        let client_ids: Vec<String> = lock(&self.sessions).keys().cloned().collect();
        for client_id in client_ids {
            let Ok(permit) = self.sessions_writer.reserve().await else {
                tracing::warn!(stream, "the $sessions writer stopped; sessions not saved");
                return;
            };
            let (durable, stored) = oneshot::channel();
            let view = {
                let mut sessions = lock(&self.sessions);
                let Some(state) = sessions.get_mut(&client_id) else { continue };
                if !state.forget_stream(stream) {
                    continue;
                }
                let record = Record::new(now_ms(), state.encode()).with_key(client_id.as_bytes().to_vec());
                permit.send(AppendRequest { record, durable: Some(durable) });
                SessionView::of(state)
            };
            lock(&self.session_index).insert(client_id.clone(), view);
            if !matches!(stored.await, Ok(Ok(_))) {
                tracing::warn!(client_id, stream, "session record not stored after the stream was deleted");
            }
        }
    }

    /// Holds `will` of `client_id` until `due_at_ms` (unix ms), then publishes it unless
    /// [`Shared::take_delayed_will`] took it first, and drops it from the session record.
    pub(crate) fn delay_will(self: &Arc<Self>, client_id: &str, will: Publish, due_at_ms: i64) {
        let token = self.next_connection_id.fetch_add(1, Ordering::Relaxed);
        lock(&self.delayed_wills).insert(client_id.to_owned(), DelayedWill { token, publish: will });
        let shared = Arc::clone(self);
        let client_id = client_id.to_owned();
        let delay = std::time::Duration::from_millis(u64::try_from(due_at_ms - now_ms()).unwrap_or(0));
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            let due = {
                let mut wills = lock(&shared.delayed_wills);
                match wills.get(&client_id) {
                    Some(will) if will.token == token => wills.remove(&client_id),
                    _ => None,
                }
            };
            let Some(will) = due else { return };
            if let Err(error) = shared.publish(&will.publish, &client_id).await {
                tracing::warn!(client_id, %error, "will not published");
            }
            // Sent: a restart must not send it again.
            let without_will = lock(&shared.sessions)
                .get_mut(&client_id)
                .and_then(|session| session.will.take().map(|_| session.clone()));
            if let Some(session) = without_will {
                shared.save_session(&client_id, Some(&session), false).await;
            }
        });
    }

    /// Takes the will still waiting for `client_id`'s Will Delay Interval, if any.
    pub(crate) fn take_delayed_will(&self, client_id: &str) -> Option<Publish> {
        lock(&self.delayed_wills).remove(client_id).map(|will| will.publish)
    }

    /// Ends disconnected sessions whose expiry has passed: tombstones in `$sessions`, and
    /// their delayed wills go out now (the session ended first).
    /// Returns when the earliest of the sessions left expires (unix ms), if any can.
    async fn expire_sessions(self: &Arc<Self>) -> Option<i64> {
        let now = now_ms();
        let (expired, next_expiry) = {
            let mut sessions = lock(&self.sessions);
            let ids: Vec<String> = sessions.iter().filter(|(_, s)| s.expired(now)).map(|(id, _)| id.clone()).collect();
            for id in &ids {
                sessions.remove(id);
            }
            (ids, sessions.values().filter_map(SessionState::expires_at_ms).min())
        };
        for client_id in expired {
            tracing::debug!(client_id, "session expired");
            // A client reconnecting meanwhile finds no session and starts a new one; its own
            // records are written after it has connected, so after this tombstone.
            self.save_session(&client_id, None, false).await;
            if let Some(will) = self.take_delayed_will(&client_id)
                && let Err(error) = self.publish(&will, &client_id).await
            {
                tracing::warn!(client_id, %error, "will not published");
            }
        }
        next_expiry
    }

    /// Expires disconnected sessions as they come due, until aborted. Sleeps until the
    /// earliest expiry, or until a session due sooner is stored; an idle broker with no
    /// session that can expire does not wake at all. Scans at most once a second, as the
    /// scan visits every stored session: a session may end up to a second late.
    async fn expire_sessions_when_due(self: Arc<Self>) {
        loop {
            let stored = self.session_stored.notified();
            self.next_expiry_ms.store(i64::MIN, Ordering::SeqCst);
            let scanned = tokio::time::Instant::now();
            let next = self.expire_sessions().await;
            self.next_expiry_ms.store(next.unwrap_or(i64::MAX), Ordering::SeqCst);
            match next {
                Some(at_ms) => {
                    // One millisecond late rather than early: the expiry is checked against
                    // the wall clock, the sleep runs on the monotonic one.
                    let wait = std::time::Duration::from_millis(u64::try_from(at_ms - now_ms()).unwrap_or(0) + 1);
                    tokio::select! {
                        () = tokio::time::sleep(wait) => {}
                        () = stored => {}
                    }
                }
                None => stored.await,
            }
            tokio::time::sleep_until(scanned + SESSION_SCAN_GAP).await;
        }
    }

    /// The group `name` consuming `filter`, created (and started) on first use. A group has
    /// one filter: joining it with another while it exists is refused with the reason.
    pub(crate) fn group(
        &self,
        name: &str,
        filter: &str,
        since: &[(u32, u64)],
    ) -> Result<Arc<crate::groups::Group>, String> {
        let mut groups = lock(&self.groups);
        if let Some(group) = groups.get(name) {
            if group.filter != filter {
                return Err(format!("group {name:?} consumes {:?}; one filter per group", group.filter));
            }
            return Ok(Arc::clone(group));
        }
        let group = crate::groups::Group::start(
            name,
            filter,
            &self.streams,
            &lock(&self.restored_offsets),
            since,
            self.offsets_writer.clone(),
        );
        groups.insert(name.to_owned(), Arc::clone(&group));
        Ok(group)
    }

    /// Removes the `$share` groups that have gone `share_group_idle_expiry` without a member
    /// (issue 22), and tombstones their committed offsets in `$offsets`. A group counts as
    /// idle while nothing but the registry and its own task holds it (members and a
    /// SUBSCRIBE joining it hold it too) and no persistent session has a `$share/<group>/`
    /// subscription: a session coming back expects its group where it left it. Held-or-not
    /// is looked at under the registry's lock, where new holders come from, so a group is
    /// never removed under a client about to join it.
    async fn expire_idle_groups(self: Arc<Self>) {
        let expiry = self.config.share_group_idle_expiry;
        let scan = (expiry / 4).clamp(std::time::Duration::from_millis(100), std::time::Duration::from_secs(60));
        let mut idle_since: HashMap<String, tokio::time::Instant> = HashMap::new();
        loop {
            tokio::time::sleep(scan).await;
            let now = tokio::time::Instant::now();
            let wanted: Vec<String> = lock(&self.session_index)
                .values()
                .flat_map(|view| view.filters.iter())
                .filter_map(|filter| filter.strip_prefix("$share/")?.split_once('/').map(|(name, _)| name.to_owned()))
                .collect();
            let removed: Vec<Arc<crate::groups::Group>> = {
                let mut groups = lock(&self.groups);
                // The registry's reference and the group task's.
                let idle = |name: &String, group: &Arc<crate::groups::Group>| {
                    Arc::strong_count(group) <= 2 && !wanted.contains(name)
                };
                idle_since.retain(|name, _| groups.get(name).is_some_and(|group| idle(name, group)));
                for (name, group) in groups.iter() {
                    if idle(name, group) {
                        idle_since.entry(name.clone()).or_insert(now);
                    }
                }
                let expired: Vec<String> = idle_since
                    .iter()
                    .filter(|(_, since)| now.duration_since(**since) >= expiry)
                    .map(|(name, _)| name.clone())
                    .collect();
                expired
                    .iter()
                    .filter_map(|name| {
                        idle_since.remove(name);
                        groups.remove(name)
                    })
                    .collect()
            };
            for group in removed {
                let prefix = format!("{}/", group.name);
                let mut keys = group.stop().await;
                lock(&self.restored_offsets).retain(|key, _| {
                    if key.starts_with(&prefix) {
                        keys.push(key.clone());
                        return false;
                    }
                    true
                });
                keys.sort();
                keys.dedup();
                for key in &keys {
                    let record = Record::new(now_ms(), Vec::new()).with_key(key.clone().into_bytes());
                    if self.offsets_writer.send(AppendRequest { record, durable: None }).await.is_err() {
                        tracing::warn!(group = %group.name, "the $offsets writer stopped; offsets not removed");
                        break;
                    }
                }
                tracing::info!(group = %group.name, offsets = keys.len(), ?expiry, "removed an idle $share group");
            }
        }
    }

    /// A new group member id.
    pub(crate) fn next_member_id(&self) -> u64 {
        self.next_connection_id.fetch_add(1, Ordering::Relaxed)
    }

    /// A client identifier for a client that sent none; unique across restarts.
    pub(crate) fn assign_client_id(&self) -> String {
        let n = self.next_connection_id.fetch_add(1, Ordering::Relaxed);
        format!("strata-{:x}-{n}", self.started_at_ms)
    }
}

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
    retained_log: Arc<Log>,
    sessions_log: Arc<Log>,
    offsets_log: Arc<Log>,
    streams_log: Arc<Log>,
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

pub(crate) fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

/// The retained messages by topic, and the sum of their payload sizes, which
/// `max_retained_bytes` is checked against.
#[derive(Default)]
struct Retained {
    messages: HashMap<String, StoredMessage>,
    payload_bytes: u64,
}

impl Retained {
    /// Applies one `$retained` record: the latest per topic wins, an empty payload deletes
    /// the topic.
    fn apply(&mut self, stored: StoredRecord) {
        let Ok(message) = record::from_record(stored) else { return };
        let replaced = if message.payload.is_empty() {
            self.messages.remove(&message.topic[..])
        } else {
            self.payload_bytes += message.payload.len() as u64;
            self.messages.insert(message.topic.to_string(), message)
        };
        if let Some(old) = replaced {
            self.payload_bytes -= old.payload.len() as u64;
        }
    }

    /// Whether retaining `payload_len` bytes on `topic` stays within the limits (issue 22):
    /// replacing a topic's message frees the old one's room; clearing one always fits.
    fn fits(&self, topic: &str, payload_len: usize, limits: &crate::limits::Limits) -> bool {
        if payload_len == 0 {
            return true;
        }
        let old = self.messages.get(topic);
        let count = self.messages.len() + usize::from(old.is_none());
        let bytes = self.payload_bytes - old.map_or(0, |m| m.payload.len() as u64) + payload_len as u64;
        limits.max_retained_messages.is_none_or(|max| count <= max)
            && limits.max_retained_bytes.is_none_or(|max| bytes <= max)
    }
}

/// Applies one `$sessions` record: the latest per client id wins, a tombstone ends it.
/// A session written while its client was connected (a crash came before the disconnect)
/// counts as disconnected at `started_at_ms`.
fn apply_session(map: &mut HashMap<String, SessionState>, stored: StoredRecord, started_at_ms: i64) {
    let Some(client_id) = stored.key.as_ref().and_then(|k| std::str::from_utf8(k).ok()) else { return };
    if stored.value.is_empty() {
        map.remove(client_id);
        return;
    }
    match SessionState::decode(&stored.value) {
        Ok(mut state) => {
            if state.disconnected_at_ms == 0 {
                state.disconnected_at_ms = started_at_ms;
            }
            map.insert(client_id.to_owned(), state);
        }
        Err(error) => tracing::warn!(client_id, %error, offset = stored.offset, "skipping a session record"),
    }
}

/// Applies one `$offsets` record: the latest per key wins, a tombstone removes it.
fn apply_offset(map: &mut HashMap<String, u64>, stored: StoredRecord) {
    let Some(key) = stored.key.as_ref().and_then(|k| std::str::from_utf8(k).ok()) else { return };
    match crate::groups::decode_offset(&stored.value) {
        Some(offset) => {
            map.insert(key.to_owned(), offset);
        }
        None => {
            map.remove(key);
        }
    }
}

/// Applies one `$streams` record: the latest definition per stream wins, a tombstone removes
/// it. A definition that does not decode is skipped with a warning (its data stays on disk).
fn apply_definition(map: &mut HashMap<String, (crate::StreamConfig, i64)>, stored: StoredRecord) {
    let Some(name) = stored.key.as_ref().and_then(|k| std::str::from_utf8(k).ok()) else { return };
    if stored.value.is_empty() {
        map.remove(name);
        return;
    }
    match crate::stream_settings::decode_definition(name, &stored.value) {
        Ok(definition) => {
            map.insert(name.to_owned(), definition);
        }
        Err(error) => tracing::warn!(stream = name, %error, offset = stored.offset, "skipping a stream definition"),
    }
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
                if definition != *config {
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

/// Calls `apply` on every record of `log`, from its start to its high watermark.
fn replay(log: &Log, mut apply: impl FnMut(StoredRecord)) -> Result<(), LogError> {
    let mut offset = log.offsets().log_start;
    loop {
        let fetch = log.read(offset, 1 << 20)?;
        let Some(next) = fetch.next_offset() else { return Ok(()) };
        for stored in fetch.records(offset)? {
            apply(stored);
        }
        offset = next;
    }
}

async fn open_log(dir: PathBuf) -> Result<Arc<Log>, BrokerError> {
    let opened = {
        let dir = dir.clone();
        tokio::task::spawn_blocking(move || Log::open(&dir, LogConfig::default()))
            .await
            .map_err(|e| BrokerError::Io { what: "opening the log".into(), source: std::io::Error::other(e) })?
    };
    Ok(Arc::new(opened.map_err(|source| BrokerError::Log { dir, source })?))
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
        let retained_log = open_log(config.data_dir.join(RETAINED_STREAM).join("0")).await?;
        let sessions_log = open_log(config.data_dir.join(SESSIONS_STREAM).join("0")).await?;
        let offsets_log = open_log(config.data_dir.join(OFFSETS_STREAM).join("0")).await?;
        let streams_log = open_log(config.data_dir.join(STREAMS_STREAM).join("0")).await?;
        let started_at = now_ms();
        let rebuilt = {
            let (retained_log, sessions_log, offsets_log, streams_log) = (
                Arc::clone(&retained_log),
                Arc::clone(&sessions_log),
                Arc::clone(&offsets_log),
                Arc::clone(&streams_log),
            );
            tokio::task::spawn_blocking(move || {
                let mut retained = Retained::default();
                replay(&retained_log, |r| retained.apply(r))
                    .map_err(|source| BrokerError::Rebuild { dir: retained_log.dir().to_path_buf(), source })?;
                let mut sessions = HashMap::new();
                replay(&sessions_log, |r| apply_session(&mut sessions, r, started_at))
                    .map_err(|source| BrokerError::Rebuild { dir: sessions_log.dir().to_path_buf(), source })?;
                let mut offsets = HashMap::new();
                replay(&offsets_log, |r| apply_offset(&mut offsets, r))
                    .map_err(|source| BrokerError::Rebuild { dir: offsets_log.dir().to_path_buf(), source })?;
                let mut definitions = HashMap::new();
                let mut deleted = std::collections::HashSet::new();
                replay(&streams_log, |r| {
                    if let Some(name) = r.key.as_ref().and_then(|k| std::str::from_utf8(k).ok()) {
                        match r.value.is_empty() {
                            true => deleted.insert(name.to_owned()),
                            false => deleted.remove(name),
                        };
                    }
                    apply_definition(&mut definitions, r)
                })
                .map_err(|source| BrokerError::Rebuild { dir: streams_log.dir().to_path_buf(), source })?;
                Ok::<_, BrokerError>((retained, sessions, offsets, definitions, deleted))
            })
            .await
            .map_err(|e| BrokerError::Io { what: "rebuilding state".into(), source: std::io::Error::other(e) })??
        };
        let (retained, sessions, restored_offsets, definitions, deleted) = rebuilt;
        finish_deletes(&config.data_dir, &deleted, &config.streams);
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
            maintenance.register(name, Log::clone(internal), settings)?;
        }
        let spawn_writer = |log: &Arc<Log>, queue: usize, name: &str| {
            partition_writer::spawn(Arc::clone(log), queue, name.into())
                .map_err(|source| BrokerError::Io { what: "starting a partition writer".into(), source })
        };
        let effective = effective_streams(&config.streams, definitions);
        let streams = Streams::open(&effective, &config.data_dir, config.writer_queue, &maintenance).await?;
        let retained_writer = spawn_writer(&retained_log, INTERNAL_WRITER_QUEUE, "writer-retained")?;
        let sessions_writer = spawn_writer(&sessions_log, INTERNAL_WRITER_QUEUE, "writer-sessions")?;
        let offsets_writer = spawn_writer(&offsets_log, INTERNAL_WRITER_QUEUE, "writer-offsets")?;
        let streams_writer = spawn_writer(&streams_log, INTERNAL_WRITER_QUEUE, "writer-streams")?;
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
            retained_writer,
            retained: Mutex::new(retained),
            sessions_writer,
            session_index: Mutex::new(
                sessions.iter().map(|(id, state)| (id.clone(), SessionView::of(state))).collect(),
            ),
            sessions: Mutex::new(sessions),
            session_stored: tokio::sync::Notify::new(),
            next_expiry_ms: AtomicI64::new(i64::MIN),
            delayed_wills: Mutex::new(HashMap::new()),
            offsets_writer,
            restored_offsets: Mutex::new(restored_offsets),
            streams_writer,
            admin_lock: tokio::sync::Mutex::new(()),
            groups: Mutex::new(HashMap::new()),
            connected: Mutex::new(HashMap::new()),
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
        let pending_wills: Vec<(String, crate::session_state::PendingWill)> = lock(&shared.sessions)
            .iter()
            .filter_map(|(client_id, session)| Some((client_id.clone(), session.will.clone()?)))
            .collect();
        for (client_id, will) in pending_wills {
            shared.delay_will(&client_id, will.publish, will.due_at_ms);
        }
        for stream in shared.streams.all() {
            for partition in &stream.partitions {
                shared.metrics.add_partition(&stream.name, partition.number, false, &partition.log);
            }
        }
        shared.metrics.add_partition(RETAINED_STREAM, 0, true, &retained_log);
        shared.metrics.add_partition(SESSIONS_STREAM, 0, true, &sessions_log);
        shared.metrics.add_partition(OFFSETS_STREAM, 0, true, &offsets_log);
        shared.metrics.add_partition(STREAMS_STREAM, 0, true, &streams_log);
        Ok(Broker {
            listener,
            ws_listener,
            tls_listener,
            wss_listener,
            tls,
            shared,
            retained_log,
            sessions_log,
            offsets_log,
            streams_log,
        })
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
    pub fn metrics(&self) -> crate::metrics::BrokerMetrics {
        crate::metrics::BrokerMetrics { shared: Arc::clone(&self.shared) }
    }

    /// Accepts connections until `shutdown` completes, then closes the log cleanly.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Result<(), BrokerError> {
        let Broker {
            listener,
            ws_listener,
            tls_listener,
            wss_listener,
            tls,
            shared,
            retained_log,
            sessions_log,
            offsets_log,
            streams_log,
        } = self;
        // Aborted at shutdown, like the connections they spawned are dropped with the runtime.
        let ws_task = ws_listener.map(|ws| tokio::spawn(crate::websocket::serve(ws, Arc::clone(&shared))));
        let tls_tasks: Vec<tokio::task::JoinHandle<()>> =
            [(tls_listener, crate::tls::Carrying::Mqtt), (wss_listener, crate::tls::Carrying::WebSocket)]
                .into_iter()
                .filter_map(|(listener, carrying)| {
                    let tls = Arc::clone(tls.as_ref()?);
                    Some(tokio::spawn(crate::tls::serve(listener?, tls, carrying, Arc::clone(&shared))))
                })
                .collect();
        tokio::pin!(shutdown);
        let sys_task = (shared.config.sys_interval_secs > 0).then(|| {
            let interval = std::time::Duration::from_secs(shared.config.sys_interval_secs);
            tokio::spawn(crate::sys_topics::run(Arc::clone(&shared), interval))
        });
        let expiry_task = tokio::spawn(Arc::clone(&shared).expire_sessions_when_due());
        let group_expiry_task = tokio::spawn(Arc::clone(&shared).expire_idle_groups());
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
        group_expiry_task.abort();
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
        let logs = shared.streams.logs();
        // From here the admin API can start no compaction or retention run.
        let maintenance = lock(&shared.maintenance).take();
        tokio::task::spawn_blocking(move || {
            if let Some(maintenance) = maintenance {
                stop_maintenance(maintenance);
            }
            // Every log is closed even when one fails (a partition whose fsync failed closes
            // without its clean-shutdown marker and reports it): the first error is returned.
            let mut first_error = Ok(());
            for log in [&retained_log, &sessions_log, &offsets_log, &streams_log].into_iter().chain(&logs) {
                if let Err(source) = log.close() {
                    tracing::error!(dir = %log.dir().display(), error = %source, "closing a log failed");
                    if first_error.is_ok() {
                        first_error = Err(BrokerError::Log { dir: log.dir().to_path_buf(), source });
                    }
                }
            }
            first_error
        })
        .await
        .map_err(|e| BrokerError::Io { what: "closing the log".into(), source: std::io::Error::other(e) })?
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

    #[test]
    fn a_tombstone_forgets_a_definition_and_a_damaged_one_is_skipped() {
        let record = |key: &str, value: Vec<u8>| StoredRecord {
            offset: 0,
            timestamp: 0,
            key: Some(key.as_bytes().to_vec().into()),
            value: value.into(),
            headers: Vec::new(),
        };
        let mut map = HashMap::new();
        let stream = StreamConfig::new("s");
        apply_definition(&mut map, record("s", crate::stream_settings::encode_definition(&stream, 7)));
        apply_definition(&mut map, record("bad", vec![9, 9]));
        assert_eq!(map.get("s"), Some(&(stream, 7)));
        assert!(!map.contains_key("bad"));
        apply_definition(&mut map, record("s", Vec::new()));
        assert!(map.is_empty());
    }
}
