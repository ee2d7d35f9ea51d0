//! The broker: opens the partition log of the built-in stream `default`, starts its writer,
//! accepts MQTT connections on TCP (one task each) and knows which client ids are connected,
//! so that a second CONNECT with the same id takes the session over.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use strata_log::{Log, LogConfig, LogError};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};

use crate::partition_writer::{self, AppendRequest};

/// The built-in stream every publish goes to until streams are configurable.
pub const DEFAULT_STREAM: &str = "default";

/// What the broker needs to start.
#[derive(Debug, Clone, PartialEq, Eq)]
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
    /// Capacity of the partition writer's queue (records).
    pub writer_queue: usize,
}

impl BrokerConfig {
    /// Defaults: loopback port 1883, `./data`, 1 MiB packets, 1,024 in flight.
    pub fn new(listen: SocketAddr, data_dir: PathBuf) -> BrokerConfig {
        BrokerConfig {
            listen,
            data_dir,
            max_packet_size: 1 << 20,
            max_inflight: 1024,
            receive_maximum: 1024,
            writer_queue: 8192,
        }
    }
}

/// Why the broker could not start.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    /// The partition log did not open.
    #[error("opening partition {dir}: {source}")]
    Log {
        /// The partition directory.
        dir: PathBuf,
        /// What went wrong.
        source: LogError,
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

/// A connected client's handle, kept so a newer connection can take its session over.
struct Connected {
    connection_id: u64,
    take_over: oneshot::Sender<()>,
}

/// State shared by all connections.
pub(crate) struct Shared {
    pub(crate) config: BrokerConfig,
    pub(crate) log: Arc<Log>,
    pub(crate) writer: mpsc::Sender<AppendRequest>,
    connected: Mutex<HashMap<String, Connected>>,
    next_connection_id: AtomicU64,
    started_at_ms: u64,
}

impl Shared {
    /// Registers `client_id` for a new connection; an older connection with the same id is
    /// told to go. Returns the new connection's id and its own take-over signal.
    pub(crate) fn register(&self, client_id: &str) -> (u64, oneshot::Receiver<()>) {
        let connection_id = self.next_connection_id.fetch_add(1, Ordering::Relaxed);
        let (take_over, taken_over) = oneshot::channel();
        let previous = self
            .connected
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .insert(client_id.to_owned(), Connected { connection_id, take_over });
        if let Some(previous) = previous {
            let _ = previous.take_over.send(());
        }
        (connection_id, taken_over)
    }

    /// Forgets `client_id` if `connection_id` still holds it.
    pub(crate) fn unregister(&self, client_id: &str, connection_id: u64) {
        let mut connected = self.connected.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if connected.get(client_id).is_some_and(|c| c.connection_id == connection_id) {
            connected.remove(client_id);
        }
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
    shared: Arc<Shared>,
}

impl Broker {
    /// Opens `<data_dir>/default/0/` and binds the MQTT listener.
    pub async fn start(config: BrokerConfig) -> Result<Broker, BrokerError> {
        let dir = config.data_dir.join(DEFAULT_STREAM).join("0");
        let log = {
            let dir = dir.clone();
            tokio::task::spawn_blocking(move || Log::open(&dir, LogConfig::default()))
                .await
                .map_err(|e| BrokerError::Io { what: "opening the log".into(), source: std::io::Error::other(e) })?
        };
        let log = Arc::new(log.map_err(|source| BrokerError::Log { dir, source })?);
        let writer = partition_writer::spawn(Arc::clone(&log), config.writer_queue, "writer-default-0".into())
            .map_err(|source| BrokerError::Io { what: "starting the partition writer".into(), source })?;
        let listener = TcpListener::bind(config.listen)
            .await
            .map_err(|source| BrokerError::Io { what: format!("listening on {}", config.listen), source })?;
        let started_at_ms =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
        let shared = Arc::new(Shared {
            config,
            log,
            writer,
            connected: Mutex::new(HashMap::new()),
            next_connection_id: AtomicU64::new(1),
            started_at_ms,
        });
        Ok(Broker { listener, shared })
    }

    /// The address the MQTT listener is bound to.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Accepts connections until `shutdown` completes, then closes the log cleanly.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Result<(), BrokerError> {
        let Broker { listener, shared } = self;
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
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
        let log = Arc::clone(&shared.log);
        tokio::task::spawn_blocking(move || log.close())
            .await
            .map_err(|e| BrokerError::Io { what: "closing the log".into(), source: std::io::Error::other(e) })?
            .map_err(|source| BrokerError::Log { dir: shared.log.dir().to_path_buf(), source })
    }
}
