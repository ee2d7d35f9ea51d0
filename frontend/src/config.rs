//! What the broker needs to start ([`BrokerConfig`]), and its defaults.

use std::net::SocketAddr;
use std::path::PathBuf;

use strata_compaction::MaintenanceConfig;

/// `[mqtt] share_group_idle_expiry` by default: a day.
pub const DEFAULT_SHARE_GROUP_IDLE_EXPIRY: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

/// Default [`BrokerConfig::socket_receive_buffer`]. Measured on loopback with 4 publishers
/// sending flat out (benches/README.md): 128 KiB keeps the time a message waits before the
/// broker reads it to a few milliseconds, at the same throughput as the kernel's autotuning.
pub const DEFAULT_SOCKET_RECEIVE_BUFFER: usize = 128 << 10;

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
    /// This node's place in a cluster (`[cluster]`, issue 20); `None`: the single-node
    /// broker.
    pub cluster: Option<crate::cluster::ClusterConfig>,
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
            cluster: None,
        }
    }
}
