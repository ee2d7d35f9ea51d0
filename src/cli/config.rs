//! The configuration of `strata serve`: the TOML file read key by key (so an error names the
//! key: `mqtt.max_packet_size`, `streams[1].retention_ms`), then the flags, over the defaults.
//! The result, [`Effective`], is what `serve` runs with, what `strata config check` validates
//! and what `serve --print-config` prints back as a file `config check` accepts.
//!
//! The `*_KEYS` lists are the only statement of which keys exist: parsing refuses any other
//! key, and printing walks them, so `--print-config` shows every key the code accepts.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use strata_compaction::{CleanupPolicy, MaintenanceConfig};
use strata_frontend::stream_settings;
use strata_frontend::tls::TlsConfig;
use strata_frontend::{BrokerConfig, ClusterConfig, StreamConfig};
use strata_log::{Compression, FlushPolicy};
use toml::{Table, Value};

use super::streams_config::{self, LOG_KEYS, STREAM_KEYS};
use super::units::{duration_ms, duration_secs, integer, key_name, size, string};

/// Top-level keys and sections.
pub const TOP_KEYS: &[&str] = &[
    "data_dir",
    "mqtt",
    "tls",
    "auth",
    "http",
    "grpc",
    "compaction",
    "telemetry",
    "runtime",
    "log",
    "streams",
    "cluster",
];
/// Keys of `[mqtt]`.
pub const MQTT_KEYS: &[&str] = &[
    "listen",
    "max_packet_size",
    "max_inflight",
    "receive_maximum",
    "ws_listen",
    "ws_allowed_origins",
    "topic_alias_maximum",
    "max_connections",
    "max_topic_length",
    "max_client_id_length",
    "max_connections_per_ip",
    "max_connect_rate_per_ip",
    "max_topic_levels",
    "share_group_idle_expiry",
    "max_keep_alive",
    "max_subscriptions_per_client",
    "v311_session_expiry",
    "max_retained_messages",
    "max_retained_bytes",
    "max_sessions",
    "write_timeout",
    "sys_interval_secs",
    "qos0_max_lag",
    "socket_receive_buffer",
    "tls_listen",
    "wss_listen",
];
/// Keys of `[tls]`: the certificate of the TLS listeners, and mTLS.
pub const TLS_KEYS: &[&str] = &["cert_file", "key_file", "client_ca_file"];
/// Keys of `[auth]`: who may connect.
pub const AUTH_KEYS: &[&str] = &["allow_anonymous", "password_file", "acl_file", "use_identity_as_username"];
/// Keys of `[http]` and of `[grpc]`.
pub const LISTEN_KEYS: &[&str] = &["listen", "token_file"];
/// Keys of `[grpc]`: those of `[http]`, and TLS with `[tls]`'s certificate.
pub const GRPC_KEYS: &[&str] = &["listen", "token_file", "tls"];
/// Keys of `[compaction]`: the node's retention and cleaner threads.
pub const COMPACTION_KEYS: &[&str] = &[
    "retention_check_interval_ms",
    "cleaner_threads",
    "cleaner_throttle_bytes_per_sec",
    "cleaner_buffer_bytes",
    "cleaner_backoff_ms",
];
/// Keys of `[telemetry]`.
pub const TELEMETRY_KEYS: &[&str] = &["otlp_endpoint", "service_name"];
/// Keys of `[runtime]`: the process's threads.
pub const RUNTIME_KEYS: &[&str] = &["worker_threads", "idle_poll_ms"];
/// Keys of `[cluster]`.
pub const CLUSTER_KEYS: &[&str] = &["node_id", "listen", "peers", "ca_file"];

/// Largest accepted `mqtt.sys_interval_secs`: one day.
const MAX_SYS_INTERVAL_SECS: u64 = 86_400;
/// Smallest accepted `mqtt.max_packet_size`: a CONNECT with a client id must fit.
const MIN_PACKET_SIZE: u64 = 64;
/// Largest packet MQTT can express (268,435,455 bytes of Remaining Length plus the header).
const MAX_PACKET_SIZE: u64 = 268_435_460;
/// Bounds of `mqtt.socket_receive_buffer` (other than 0): Linux raises anything smaller to
/// its own minimum, and SO_RCVBUF takes an `int`.
const MIN_SOCKET_BUFFER: u64 = 4096;
const MAX_SOCKET_BUFFER: u64 = i32::MAX as u64 / 2;
/// Most cleaner threads.
const MAX_CLEANER_THREADS: u64 = 64;
/// `cleaner_throttle_bytes_per_sec` with no cap.
const UNLIMITED: &str = "unlimited";
/// Longest accepted `runtime.idle_poll_ms`: one minute. Beyond that the CPUs would be kept
/// busy through what is really idle time.
const MAX_IDLE_POLL_MS: u64 = 60_000;
/// Most `runtime.worker_threads`.
const MAX_WORKER_THREADS: u64 = 1024;
/// The default `telemetry.service_name`.
pub const DEFAULT_SERVICE_NAME: &str = "strata";
/// The default `[grpc] listen`: loopback, so `strata stream list` works with no flags on
/// either side and nothing is reachable from the network unless configured.
pub const DEFAULT_GRPC_LISTEN: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 7070);
/// The default `[http] listen` (`/health`, `/ready`, `/metrics`), on loopback as well.
pub const DEFAULT_HTTP_LISTEN: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 9090);
/// The value of `[http] listen`, `[grpc] listen`, `--http` and `--grpc` that turns the
/// listener off.
pub const LISTEN_OFF: &str = "off";

/// Where an optional listener binds, or `off`: the value of `--http` and `--grpc`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Listen(pub Option<SocketAddr>);

impl std::str::FromStr for Listen {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        if text == LISTEN_OFF {
            return Ok(Listen(None));
        }
        text.parse()
            .map(|addr| Listen(Some(addr)))
            .map_err(|_| format!("{text:?} is neither an address such as 127.0.0.1:7070 nor \"{LISTEN_OFF}\""))
    }
}

/// `[telemetry]`: trace export.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TelemetryConfig {
    /// Where spans go, over OTLP/gRPC (`http://host:4317`); `None`: no export, nothing starts.
    pub otlp_endpoint: Option<String>,
    /// The `service.name` resource of exported spans.
    pub service_name: String,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        TelemetryConfig { otlp_endpoint: None, service_name: DEFAULT_SERVICE_NAME.to_owned() }
    }
}

/// `[runtime]`: how the process uses its CPUs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RuntimeConfig {
    /// Threads running the connections; `None`: one per CPU (tokio's default).
    pub worker_threads: Option<usize>,
    /// How long the CPUs are kept polling after the broker last woke (`idle_poll.rs`);
    /// `None`: never, an idle CPU halts.
    pub idle_poll: Option<Duration>,
}

/// Everything `strata serve` runs with.
#[derive(Debug, Clone, PartialEq)]
pub struct Effective {
    /// The broker's settings, streams and maintenance included.
    pub broker: BrokerConfig,
    /// `[log]`: the settings every stream starts from.
    pub log_defaults: StreamConfig,
    /// `[http] listen`; `None`: off.
    pub http_listen: Option<SocketAddr>,
    /// `[grpc] listen`; `None`: off.
    pub grpc_listen: Option<SocketAddr>,
    /// `[http] token_file`: `/metrics` wants this bearer token; `None`: open.
    pub http_token_file: Option<PathBuf>,
    /// `[grpc] token_file`: every admin call wants this bearer token; `None`: open.
    pub grpc_token_file: Option<PathBuf>,
    /// `[grpc] tls`: the admin API speaks TLS with `[tls]`'s certificate (and, with
    /// `tls.client_ca_file`, wants a client certificate signed by that CA).
    pub grpc_tls: bool,
    /// `[telemetry]`.
    pub telemetry: TelemetryConfig,
    /// `[runtime]`.
    pub runtime: RuntimeConfig,
}

/// The flags of `strata serve` that override the file.
#[derive(Debug, Default)]
pub struct Overrides {
    pub data_dir: Option<PathBuf>,
    pub mqtt: Option<SocketAddr>,
    pub ws: Option<SocketAddr>,
    pub http: Option<Listen>,
    pub grpc: Option<Listen>,
}

/// Reads `path` (if any) and applies `overrides`: what `serve` and `config check` both call.
pub fn load(path: Option<&Path>, overrides: &Overrides) -> anyhow::Result<Effective> {
    let text = match path {
        Some(path) => {
            let text =
                std::fs::read_to_string(path).with_context(|| format!("reading config file {}", path.display()))?;
            Some((path, text))
        }
        None => None,
    };
    let mut effective = match &text {
        Some((path, text)) => parse(text).with_context(|| format!("config file {}", path.display()))?,
        None => parse("")?,
    };
    let broker = &mut effective.broker;
    if let Some(dir) = &overrides.data_dir {
        broker.data_dir = dir.clone();
    }
    if let Some(addr) = overrides.mqtt {
        broker.listen = addr;
    }
    if let Some(addr) = overrides.ws {
        broker.ws_listen = Some(addr);
    }
    if let Some(Listen(addr)) = overrides.http {
        effective.http_listen = addr;
    }
    if let Some(Listen(addr)) = overrides.grpc {
        effective.grpc_listen = addr;
    }
    // Read now, so that `config check` and a failed start name the file and line.
    if let Some(path) = &effective.broker.auth.password_file {
        strata_frontend::auth::PasswordFile::load(path).context("auth.password_file")?;
    }
    if let Some(path) = &effective.broker.auth.acl_file {
        strata_frontend::acl::AclFile::load(path).context("auth.acl_file")?;
    }
    // The certificate, its key and the client CA, as the broker will read them: a missing
    // file, bad PEM or a key that does not match stops `config check` too.
    if let Some(tls) = &effective.broker.tls {
        strata_frontend::tls::load_server_config(tls)?;
    }
    for (key, path) in
        [("http.token_file", &effective.http_token_file), ("grpc.token_file", &effective.grpc_token_file)]
    {
        if let Some(path) = path {
            super::token::AdminToken::load(path).with_context(|| key.to_owned())?;
        }
    }
    if effective.grpc_tls && effective.broker.tls.is_none() {
        anyhow::bail!("grpc.tls = true needs [tls] cert_file and key_file");
    }
    // The admin API deletes streams and resets offsets: off loopback, it needs a credential,
    // a token or a client certificate (mTLS).
    let mutual_tls =
        effective.grpc_tls && effective.broker.tls.as_ref().is_some_and(|tls| tls.client_ca_file.is_some());
    if let Some(addr) = effective.grpc_listen.filter(|addr| !addr.ip().is_loopback())
        && effective.grpc_token_file.is_none()
        && !mutual_tls
    {
        anyhow::bail!(
            "grpc.listen = {addr} is not a loopback address, and neither grpc.token_file nor mTLS \
             (grpc.tls with tls.client_ca_file) is set: anyone who reaches it could delete streams. \
             Set grpc.token_file, or listen on 127.0.0.1"
        );
    }
    Ok(effective)
}

/// `strata config check FILE`: the same reading and checks as `serve --config FILE`.
pub fn check(path: &Path) -> anyhow::Result<std::process::ExitCode> {
    load(Some(path), &Overrides::default())?;
    println!("{}: ok", path.display());
    Ok(std::process::ExitCode::SUCCESS)
}

/// Parses and checks a config file's text over the defaults. Errors name the key.
pub fn parse(text: &str) -> anyhow::Result<Effective> {
    let root: Table = toml::from_str(text).map_err(|e| anyhow::anyhow!("{}", e.to_string().trim_end()))?;
    for key in root.keys() {
        if !TOP_KEYS.contains(&key.as_str()) {
            anyhow::bail!("{key}: unknown key; the file has {}", TOP_KEYS.join(", "));
        }
    }
    let data_dir = match root.get("data_dir") {
        Some(value) => PathBuf::from(string(value, "", "data_dir")?),
        None => PathBuf::from("data"),
    };
    let mut broker = BrokerConfig::new(SocketAddr::from(([127, 0, 0, 1], 1883)), data_dir);
    if let Some(mqtt) = section(&root, "mqtt", MQTT_KEYS)? {
        apply_mqtt(&mut broker, mqtt)?;
    }
    if let Some(auth) = section(&root, "auth", AUTH_KEYS)? {
        for (key, value) in auth {
            match key.as_str() {
                "allow_anonymous" => match value {
                    Value::Boolean(allow) => broker.auth.allow_anonymous = Some(*allow),
                    _ => anyhow::bail!("auth.allow_anonymous: must be true or false"),
                },
                "password_file" => broker.auth.password_file = Some(PathBuf::from(string(value, "auth", key)?)),
                "acl_file" => broker.auth.acl_file = Some(PathBuf::from(string(value, "auth", key)?)),
                "use_identity_as_username" => match value {
                    Value::Boolean(on) => broker.auth.use_identity_as_username = *on,
                    _ => anyhow::bail!("auth.use_identity_as_username: must be true or false"),
                },
                other => anyhow::bail!("auth.{other}: unknown key"),
            }
        }
    }
    if let Some(table) = section(&root, "tls", TLS_KEYS)? {
        broker.tls = tls(table)?;
    }
    check_tls_needs(&broker)?;
    // On by default, on loopback; `listen = "off"` turns a listener off.
    let keys = |name: &str| if name == "grpc" { GRPC_KEYS } else { LISTEN_KEYS };
    let listen = |name: &str, default: SocketAddr| -> anyhow::Result<Option<SocketAddr>> {
        match section(&root, name, keys(name))?.and_then(|table| table.get("listen")) {
            Some(Value::String(text)) if text == LISTEN_OFF => Ok(None),
            Some(value) => Ok(Some(socket_addr(value, name, "listen")?)),
            None => Ok(Some(default)),
        }
    };
    let http_listen = listen("http", DEFAULT_HTTP_LISTEN)?;
    let grpc_listen = listen("grpc", DEFAULT_GRPC_LISTEN)?;
    let token_file = |name: &str| -> anyhow::Result<Option<PathBuf>> {
        match section(&root, name, keys(name))?.and_then(|table| table.get("token_file")) {
            Some(value) => Ok(Some(PathBuf::from(string(value, name, "token_file")?))),
            None => Ok(None),
        }
    };
    let http_token_file = token_file("http")?;
    let grpc_token_file = token_file("grpc")?;
    let grpc_tls = match section(&root, "grpc", GRPC_KEYS)?.and_then(|table| table.get("tls")) {
        Some(Value::Boolean(on)) => *on,
        Some(_) => anyhow::bail!("grpc.tls: must be true or false"),
        None => false,
    };
    if let Some(table) = section(&root, "cluster", CLUSTER_KEYS)? {
        let cluster = cluster(table)?;
        if let Some(tls) = &broker.tls
            && cluster.ca_file.is_none()
            && tls.client_ca_file.is_none()
        {
            anyhow::bail!(
                "cluster.ca_file: [tls] is set, so nodes talk mutual TLS and need the CA their certificates \
                 chain to: set cluster.ca_file or tls.client_ca_file"
            );
        }
        broker.cluster = Some(cluster);
    }
    if let Some(compaction) = section(&root, "compaction", COMPACTION_KEYS)? {
        broker.maintenance = maintenance(compaction)?;
    }
    let telemetry = match section(&root, "telemetry", TELEMETRY_KEYS)? {
        Some(table) => telemetry(table)?,
        None => TelemetryConfig::default(),
    };
    let runtime = match section(&root, "runtime", RUNTIME_KEYS)? {
        Some(table) => runtime(table)?,
        None => RuntimeConfig::default(),
    };
    // `[log]` and `[[streams]]` are checked key by key in `streams_config.rs`.
    let log = match root.get("log") {
        Some(Value::Table(table)) => Some(table),
        Some(_) => anyhow::bail!("log: must be a table ([log])"),
        None => None,
    };
    let streams: Vec<Table> = match root.get("streams") {
        Some(Value::Array(items)) => items
            .iter()
            .enumerate()
            .map(|(i, item)| match item {
                Value::Table(table) => Ok(table.clone()),
                _ => Err(anyhow::anyhow!("streams[{i}]: must be a table ([[streams]])")),
            })
            .collect::<anyhow::Result<_>>()?,
        Some(_) => anyhow::bail!("streams: must be an array of tables ([[streams]])"),
        None => Vec::new(),
    };
    let parsed = streams_config::parse_streams(log, &streams)?;
    broker.streams = parsed.streams;
    broker.stream_defaults = parsed.log_defaults.clone();
    Ok(Effective {
        broker,
        log_defaults: parsed.log_defaults,
        http_listen,
        grpc_listen,
        http_token_file,
        grpc_token_file,
        grpc_tls,
        telemetry,
        runtime,
    })
}

/// The table `[name]`, after checking it has only `keys`.
fn section<'a>(root: &'a Table, name: &str, keys: &[&str]) -> anyhow::Result<Option<&'a Table>> {
    let table = match root.get(name) {
        Some(Value::Table(table)) => table,
        Some(_) => anyhow::bail!("{name}: must be a table ([{name}])"),
        None => return Ok(None),
    };
    for key in table.keys() {
        if !keys.contains(&key.as_str()) {
            anyhow::bail!("{name}.{key}: unknown key; [{name}] has {}", keys.join(", "));
        }
    }
    Ok(Some(table))
}

fn socket_addr(value: &Value, at: &str, key: &str) -> anyhow::Result<SocketAddr> {
    let text = string(value, at, key)?;
    text.parse()
        .map_err(|_| anyhow::anyhow!("{}: {text:?} is not an address such as 127.0.0.1:1883", key_name(at, key)))
}

/// `[cluster]`: every key is required; `peers` names each node once, this one included.
fn cluster(table: &Table) -> anyhow::Result<ClusterConfig> {
    let at = "cluster";
    let required = |key: &str| {
        table
            .get(key)
            .ok_or_else(|| anyhow::anyhow!("cluster.{key}: missing; [cluster] needs node_id, listen and peers"))
    };
    let node_id = integer(required("node_id")?, at, "node_id")?;
    if node_id == 0 {
        anyhow::bail!("cluster.node_id = 0: must be greater than 0");
    }
    let listen = socket_addr(required("listen")?, at, "listen")?;
    let Value::Array(items) = required("peers")? else {
        anyhow::bail!("cluster.peers: must be an array of \"id@host:port\" strings");
    };
    let mut peers = std::collections::BTreeMap::new();
    for item in items {
        let entry = string(item, at, "peers")?;
        let (id, addr) = entry.split_once('@').ok_or_else(|| {
            anyhow::anyhow!("cluster.peers: {entry:?} is not \"id@host:port\", such as \"1@127.0.0.1:7101\"")
        })?;
        let id: u64 = id.parse().ok().filter(|id| *id > 0).ok_or_else(|| {
            anyhow::anyhow!("cluster.peers: {entry:?}: the node id must be an integer greater than 0")
        })?;
        let valid_addr = addr
            .rsplit_once(':')
            .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0));
        if !valid_addr {
            anyhow::bail!("cluster.peers: {entry:?}: the address must be host:port, such as 127.0.0.1:7101");
        }
        if peers.insert(id, addr.to_owned()).is_some() {
            anyhow::bail!("cluster.peers: node id {id} appears more than once");
        }
    }
    if !peers.contains_key(&node_id) {
        anyhow::bail!("cluster.peers: has no entry for this node (cluster.node_id = {node_id})");
    }
    let ca_file = table.get("ca_file").map(|value| string(value, at, "ca_file").map(PathBuf::from)).transpose()?;
    Ok(ClusterConfig { node_id, listen, peers, ca_file })
}

/// An integer within `range`, for the key's message.
fn bounded(value: u64, at: &str, key: &str, range: std::ops::RangeInclusive<u64>, unit: &str) -> anyhow::Result<u64> {
    if !range.contains(&value) {
        anyhow::bail!("{} = {value}: must be between {} and {}{unit}", key_name(at, key), range.start(), range.end());
    }
    Ok(value)
}

fn apply_mqtt(broker: &mut BrokerConfig, table: &Table) -> anyhow::Result<()> {
    let at = "mqtt";
    for (key, value) in table {
        let key = key.as_str();
        let int = || integer(value, at, key);
        let u16_at_least_1 = || -> anyhow::Result<u16> { Ok(bounded(int()?, at, key, 1..=65_535, "")? as u16) };
        match key {
            "listen" => broker.listen = socket_addr(value, at, key)?,
            "max_packet_size" => {
                let bytes = size(value, at, key)?;
                broker.max_packet_size = bounded(bytes, at, key, MIN_PACKET_SIZE..=MAX_PACKET_SIZE, " bytes")? as u32;
            }
            "max_inflight" => broker.max_inflight = u16_at_least_1()?,
            "receive_maximum" => broker.receive_maximum = u16_at_least_1()?,
            "ws_listen" => broker.ws_listen = Some(socket_addr(value, at, key)?),
            "ws_allowed_origins" => {
                let Value::Array(items) = value else {
                    anyhow::bail!(
                        "mqtt.ws_allowed_origins: must be a list of origins such as [\"https://app.example.com\"]"
                    );
                };
                broker.ws_allowed_origins = items
                    .iter()
                    .map(|item| match item {
                        Value::String(origin) if !origin.is_empty() && !origin.ends_with('/') => Ok(origin.clone()),
                        _ => Err(anyhow::anyhow!(
                            "mqtt.ws_allowed_origins: {item} is not an origin such as \"https://app.example.com\" \
                             (scheme, host and port, no path)"
                        )),
                    })
                    .collect::<anyhow::Result<_>>()?;
            }
            "tls_listen" => broker.tls_listen = Some(socket_addr(value, at, key)?),
            "wss_listen" => broker.wss_listen = Some(socket_addr(value, at, key)?),
            "topic_alias_maximum" => {
                broker.limits.topic_alias_maximum = bounded(int()?, at, key, 0..=65_535, "")? as u16
            }
            "max_connections" => {
                broker.limits.max_connections = Some(bounded(int()?, at, key, 1..=u64::from(u32::MAX), "")? as usize)
            }
            "max_topic_length" => {
                broker.limits.max_topic_length = bounded(int()?, at, key, 1..=65_535, " bytes")? as usize
            }
            "max_topic_levels" => broker.limits.max_topic_levels = bounded(int()?, at, key, 1..=65_535, "")? as usize,
            "share_group_idle_expiry" => {
                let secs = duration_secs(value, at, key)?;
                broker.share_group_idle_expiry =
                    Duration::from_secs(bounded(secs, at, key, 1..=u64::from(u32::MAX), " seconds")?);
            }
            "max_client_id_length" => {
                broker.limits.max_client_id_length = bounded(int()?, at, key, 23..=65_535, " bytes")? as usize
            }
            // 0 turns a per-address limit off.
            "max_connections_per_ip" => {
                let max = bounded(int()?, at, key, 0..=u64::from(u32::MAX), " (0: no limit)")?;
                broker.limits.max_connections_per_ip = (max > 0).then_some(max as usize);
            }
            "max_connect_rate_per_ip" => {
                let rate = bounded(int()?, at, key, 0..=1_000_000, " per second (0: no limit)")?;
                broker.limits.max_connect_rate_per_ip = (rate > 0).then_some(rate as u32);
            }
            // 0 turns the cap off.
            "max_keep_alive" => {
                let secs = duration_secs(value, at, key)?;
                let secs = bounded(secs, at, key, 0..=65_535, " seconds (0: no cap)")?;
                broker.limits.max_keep_alive = (secs > 0).then_some(secs as u16);
            }
            // 0: never expires, as before there was a default.
            "v311_session_expiry" => {
                let secs = duration_secs(value, at, key)?;
                let secs = bounded(secs, at, key, 0..=u64::from(u32::MAX - 1), " seconds (0: never expires)")?;
                broker.limits.v311_session_expiry = (secs > 0).then_some(secs as u32);
            }
            "max_retained_messages" => {
                let max = bounded(int()?, at, key, 0..=u64::from(u32::MAX), " (0: no limit)")?;
                broker.limits.max_retained_messages = (max > 0).then_some(max as usize);
            }
            "max_retained_bytes" => {
                let bytes = size(value, at, key)?;
                broker.limits.max_retained_bytes = (bytes > 0).then_some(bytes);
            }
            "max_sessions" => {
                let max = bounded(int()?, at, key, 0..=u64::from(u32::MAX), " (0: no limit)")?;
                broker.limits.max_sessions = (max > 0).then_some(max as usize);
            }
            "write_timeout" => {
                let secs = duration_secs(value, at, key)?;
                let secs = bounded(secs, at, key, 0..=86_400, " seconds (0: no limit)")?;
                broker.limits.write_timeout = (secs > 0).then(|| std::time::Duration::from_secs(secs));
            }
            "max_subscriptions_per_client" => {
                let max = bounded(int()?, at, key, 0..=u64::from(u32::MAX), " (0: no limit)")?;
                broker.limits.max_subscriptions_per_client = (max > 0).then_some(max as usize);
            }
            "sys_interval_secs" => {
                let secs = duration_secs(value, at, key)?;
                broker.sys_interval_secs = bounded(secs, at, key, 0..=MAX_SYS_INTERVAL_SECS, " seconds (0: off)")?;
            }
            "qos0_max_lag" => {
                let lag = int()?;
                broker.limits.qos0_max_lag = (lag > 0).then_some(lag);
            }
            "socket_receive_buffer" => {
                let bytes = size(value, at, key)?;
                if bytes != 0 {
                    bounded(bytes, at, key, MIN_SOCKET_BUFFER..=MAX_SOCKET_BUFFER, " bytes (or 0: the kernel's)")?;
                }
                broker.socket_receive_buffer = (bytes > 0).then_some(bytes as usize);
            }
            other => anyhow::bail!("{at}.{other}: unknown key"),
        }
    }
    Ok(())
}

/// `[tls]`: both files or neither (an empty `[tls]`, as `--print-config` writes it without
/// TLS, is no TLS); the files themselves are read by [`load`].
fn tls(table: &Table) -> anyhow::Result<Option<TlsConfig>> {
    let at = "tls";
    let path = |key: &str| -> anyhow::Result<Option<PathBuf>> {
        table.get(key).map(|value| Ok(PathBuf::from(string(value, at, key)?))).transpose()
    };
    let (cert_file, key_file, client_ca_file) = (path("cert_file")?, path("key_file")?, path("client_ca_file")?);
    match (cert_file, key_file) {
        (Some(cert_file), Some(key_file)) => Ok(Some(TlsConfig { cert_file, key_file, client_ca_file })),
        (Some(_), None) => anyhow::bail!("tls.key_file: must be set with tls.cert_file"),
        (None, None) if client_ca_file.is_none() => Ok(None),
        (None, _) => anyhow::bail!("tls.cert_file: must be set when [tls] is (with tls.key_file)"),
    }
}

/// What the TLS keys need of each other: a TLS listener needs a certificate, and the
/// certificate's CN can only be the user name when clients present one.
fn check_tls_needs(broker: &BrokerConfig) -> anyhow::Result<()> {
    for (key, addr) in [("mqtt.tls_listen", broker.tls_listen), ("mqtt.wss_listen", broker.wss_listen)] {
        if let Some(addr) = addr
            && broker.tls.is_none()
        {
            anyhow::bail!("{key} = \"{addr}\" needs a certificate: set tls.cert_file and tls.key_file");
        }
    }
    if broker.auth.use_identity_as_username && broker.tls.as_ref().is_none_or(|tls| tls.client_ca_file.is_none()) {
        anyhow::bail!(
            "auth.use_identity_as_username = true needs tls.client_ca_file: without it TLS clients present \
             no certificate to take the name from"
        );
    }
    Ok(())
}

fn maintenance(table: &Table) -> anyhow::Result<MaintenanceConfig> {
    let at = "compaction";
    let mut config = MaintenanceConfig::default();
    for (key, value) in table {
        let key = key.as_str();
        let positive_ms = || -> anyhow::Result<Duration> {
            let ms = duration_ms(value, at, key)?;
            Ok(Duration::from_millis(bounded(ms, at, key, 1..=u64::MAX, " ms")?))
        };
        match key {
            "retention_check_interval_ms" => config.retention_check_interval = positive_ms()?,
            "cleaner_backoff_ms" => config.cleaner_backoff = positive_ms()?,
            "cleaner_threads" => {
                config.cleaner_threads =
                    bounded(integer(value, at, key)?, at, key, 1..=MAX_CLEANER_THREADS, "")? as usize
            }
            "cleaner_throttle_bytes_per_sec" => {
                config.cleaner_throttle_bytes_per_sec = match value {
                    Value::String(text) if text == UNLIMITED => None,
                    _ => Some(bounded(size(value, at, key)?, at, key, 1..=u64::MAX, " (or \"unlimited\")")?),
                }
            }
            "cleaner_buffer_bytes" => {
                let bytes = size(value, at, key)?;
                let max = usize::MAX as u64;
                let min = strata_compaction::MIN_OFFSET_MAP_BYTES as u64;
                config.cleaner_buffer_bytes = bounded(bytes, at, key, min..=max, " bytes")? as usize;
            }
            other => anyhow::bail!("{at}.{other}: unknown key"),
        }
    }
    config.validate().map_err(|error| anyhow::anyhow!("{at}: {error}"))?;
    Ok(config)
}

fn telemetry(table: &Table) -> anyhow::Result<TelemetryConfig> {
    let at = "telemetry";
    let mut config = TelemetryConfig::default();
    for (key, value) in table {
        let key = key.as_str();
        match key {
            "otlp_endpoint" => {
                let url = string(value, at, key)?;
                let Some(rest) = url.strip_prefix("http://") else {
                    anyhow::bail!(
                        "{at}.{key}: {url:?} must be an http:// URL of an OTLP/gRPC collector such as \
                         http://127.0.0.1:4317 (no TLS: put a local collector in front)"
                    );
                };
                if rest.is_empty() || tonic::transport::Endpoint::from_shared(url.to_owned()).is_err() {
                    anyhow::bail!("{at}.{key}: {url:?} is not a URL such as http://127.0.0.1:4317");
                }
                config.otlp_endpoint = Some(url.to_owned());
            }
            "service_name" => {
                let name = string(value, at, key)?;
                if name.trim().is_empty() {
                    anyhow::bail!("{at}.{key}: must not be empty");
                }
                config.service_name = name.to_owned();
            }
            other => anyhow::bail!("{at}.{other}: unknown key"),
        }
    }
    Ok(config)
}

fn runtime(table: &Table) -> anyhow::Result<RuntimeConfig> {
    let at = "runtime";
    let mut config = RuntimeConfig::default();
    for (key, value) in table {
        let key = key.as_str();
        match key {
            "idle_poll_ms" => {
                let ms = bounded(duration_ms(value, at, key)?, at, key, 0..=MAX_IDLE_POLL_MS, " ms (0: off)")?;
                config.idle_poll = (ms > 0).then(|| Duration::from_millis(ms));
            }
            "worker_threads" => {
                let threads = bounded(integer(value, at, key)?, at, key, 1..=MAX_WORKER_THREADS, "")?;
                config.worker_threads = Some(threads as usize);
            }
            other => anyhow::bail!("{at}.{other}: unknown key"),
        }
    }
    Ok(config)
}

/// The effective configuration as TOML: every key with its value; a key without a value
/// (an unset optional one) as a comment saying what that means. `config check` accepts it
/// and `serve --config` with it runs with the same values.
pub fn print(effective: &Effective) -> String {
    let mut out = String::new();
    let broker = &effective.broker;
    let _ =
        writeln!(out, "# The effective configuration of `strata serve`: the file, then the flags, over the defaults.");
    let _ =
        writeln!(out, "# Sizes are in bytes; durations in the key's unit. `strata config check` accepts this file.");
    line(&mut out, "data_dir", Ok(text(&broker.data_dir.to_string_lossy())));
    let _ = writeln!(out, "\n[mqtt]");
    for key in MQTT_KEYS {
        let limits = &broker.limits;
        let value = match *key {
            "listen" => Ok(text(&broker.listen.to_string())),
            "max_packet_size" => Ok(int(u64::from(broker.max_packet_size))),
            "max_inflight" => Ok(int(u64::from(broker.max_inflight))),
            "receive_maximum" => Ok(int(u64::from(broker.receive_maximum))),
            "ws_listen" => broker.ws_listen.map(|addr| text(&addr.to_string())).ok_or("off"),
            "ws_allowed_origins" => {
                Ok(Value::Array(broker.ws_allowed_origins.iter().map(|origin| text(origin)).collect()))
            }
            "topic_alias_maximum" => Ok(int(u64::from(limits.topic_alias_maximum))),
            "max_connections" => limits.max_connections.map(|n| int(n as u64)).ok_or("no limit"),
            "max_topic_length" => Ok(int(limits.max_topic_length as u64)),
            "max_topic_levels" => Ok(int(limits.max_topic_levels as u64)),
            "share_group_idle_expiry" => Ok(int(broker.share_group_idle_expiry.as_secs())),
            "max_client_id_length" => Ok(int(limits.max_client_id_length as u64)),
            "max_connections_per_ip" => Ok(int(limits.max_connections_per_ip.unwrap_or(0) as u64)),
            "max_connect_rate_per_ip" => Ok(int(u64::from(limits.max_connect_rate_per_ip.unwrap_or(0)))),
            "max_keep_alive" => Ok(int(u64::from(limits.max_keep_alive.unwrap_or(0)))),
            "v311_session_expiry" => Ok(int(u64::from(limits.v311_session_expiry.unwrap_or(0)))),
            "max_retained_messages" => Ok(int(limits.max_retained_messages.unwrap_or(0) as u64)),
            "max_retained_bytes" => Ok(int(limits.max_retained_bytes.unwrap_or(0))),
            "max_sessions" => Ok(int(limits.max_sessions.unwrap_or(0) as u64)),
            "write_timeout" => Ok(int(limits.write_timeout.map_or(0, |t| t.as_secs()))),
            "max_subscriptions_per_client" => Ok(int(limits.max_subscriptions_per_client.unwrap_or(0) as u64)),
            "sys_interval_secs" => Ok(int(broker.sys_interval_secs)),
            "qos0_max_lag" => Ok(int(limits.qos0_max_lag.unwrap_or(0))),
            "socket_receive_buffer" => Ok(int(broker.socket_receive_buffer.unwrap_or(0) as u64)),
            "tls_listen" => broker.tls_listen.map(|addr| text(&addr.to_string())).ok_or("off"),
            "wss_listen" => broker.wss_listen.map(|addr| text(&addr.to_string())).ok_or("off"),
            _ => Err("not printed"),
        };
        line(&mut out, key, value);
    }
    let _ = writeln!(out, "\n[auth]");
    for key in AUTH_KEYS {
        let auth = &broker.auth;
        let value = match *key {
            "allow_anonymous" => {
                auth.allow_anonymous.map(Value::Boolean).ok_or("true only while every MQTT listener is on loopback")
            }
            "password_file" => auth
                .password_file
                .as_ref()
                .map(|path| text(&path.to_string_lossy()))
                .ok_or("no users; every client is anonymous"),
            "acl_file" => auth
                .acl_file
                .as_ref()
                .map(|path| text(&path.to_string_lossy()))
                .ok_or("every client may read and write every topic"),
            "use_identity_as_username" => Ok(Value::Boolean(auth.use_identity_as_username)),
            _ => Err("not printed"),
        };
        line(&mut out, key, value);
    }
    let _ = writeln!(out, "\n[tls]");
    for key in TLS_KEYS {
        let tls = broker.tls.as_ref();
        let path = |path: &Path| text(&path.to_string_lossy());
        let value = match *key {
            "cert_file" => tls.map(|tls| path(&tls.cert_file)).ok_or("no certificate; no TLS listener can be on"),
            "key_file" => tls.map(|tls| path(&tls.key_file)).ok_or("no certificate; no TLS listener can be on"),
            "client_ca_file" => {
                tls.and_then(|tls| tls.client_ca_file.as_deref()).map(path).ok_or("clients present no certificate")
            }
            _ => Err("not printed"),
        };
        line(&mut out, key, value);
    }
    for (name, listen, token_file) in [
        ("http", effective.http_listen, &effective.http_token_file),
        ("grpc", effective.grpc_listen, &effective.grpc_token_file),
    ] {
        let _ = writeln!(out, "\n[{name}]");
        for key in if name == "grpc" { GRPC_KEYS } else { LISTEN_KEYS } {
            let value = match *key {
                "listen" => Ok(text(&listen.map_or_else(|| LISTEN_OFF.to_owned(), |addr| addr.to_string()))),
                "tls" => Ok(Value::Boolean(effective.grpc_tls)),
                "token_file" => {
                    token_file.as_ref().map(|path| text(&path.to_string_lossy())).ok_or("no token; open to all")
                }
                _ => Err("not printed"),
            };
            line(&mut out, key, value);
        }
    }
    let _ = writeln!(out, "\n[compaction]");
    let maintenance = &broker.maintenance;
    for key in COMPACTION_KEYS {
        let value = match *key {
            "retention_check_interval_ms" => Ok(int(maintenance.retention_check_interval.as_millis() as u64)),
            "cleaner_threads" => Ok(int(maintenance.cleaner_threads as u64)),
            "cleaner_throttle_bytes_per_sec" => {
                Ok(maintenance.cleaner_throttle_bytes_per_sec.map_or_else(|| text(UNLIMITED), int))
            }
            "cleaner_buffer_bytes" => Ok(int(maintenance.cleaner_buffer_bytes as u64)),
            "cleaner_backoff_ms" => Ok(int(maintenance.cleaner_backoff.as_millis() as u64)),
            _ => Err("not printed"),
        };
        line(&mut out, key, value);
    }
    let _ = writeln!(out, "\n[telemetry]");
    for key in TELEMETRY_KEYS {
        let telemetry = &effective.telemetry;
        let value = match *key {
            "otlp_endpoint" => telemetry.otlp_endpoint.as_deref().map(text).ok_or("no trace export"),
            "service_name" => Ok(text(&telemetry.service_name)),
            _ => Err("not printed"),
        };
        line(&mut out, key, value);
    }
    let _ = writeln!(out, "\n[runtime]");
    for key in RUNTIME_KEYS {
        let value = match *key {
            "idle_poll_ms" => Ok(int(effective.runtime.idle_poll.map_or(0, |window| window.as_millis() as u64))),
            "worker_threads" => effective.runtime.worker_threads.map(|n| int(n as u64)).ok_or("one per CPU"),
            _ => Err("not printed"),
        };
        line(&mut out, key, value);
    }
    match &broker.cluster {
        Some(cluster) => {
            let _ = writeln!(out, "\n[cluster]");
            line(&mut out, "node_id", Ok(int(cluster.node_id)));
            line(&mut out, "listen", Ok(text(&cluster.listen.to_string())));
            let peers = cluster.peers.iter().map(|(id, addr)| text(&format!("{id}@{addr}"))).collect();
            line(&mut out, "peers", Ok(Value::Array(peers)));
            let ca_file = cluster.ca_file.as_ref().map(|path| text(&path.to_string_lossy()));
            line(&mut out, "ca_file", ca_file.ok_or("tls.client_ca_file when [tls] is set"));
        }
        None => {
            let _ = writeln!(out, "\n# [cluster]: none; this node runs alone");
        }
    }
    let _ = writeln!(out, "\n[log]");
    print_log_settings(&mut out, &effective.log_defaults);
    for stream in &broker.streams {
        let _ = writeln!(out, "\n[[streams]]");
        for key in STREAM_KEYS {
            let value = match *key {
                "name" => Ok(text(&stream.name)),
                "topics" => Ok(Value::Array(stream.topics.iter().map(|t| text(t)).collect())),
                "partitions" => Ok(int(u64::from(stream.partitions))),
                "replica_assignment" => match stream.replication.assignment.as_slice() {
                    [] => Err("placed round-robin by the cluster"),
                    assignment => Ok(text(&stream_settings::assignment_text(assignment))),
                },
                _ => Err("not printed"),
            };
            line(&mut out, key, value);
        }
        print_log_settings(&mut out, stream);
    }
    out
}

/// One `key = value` line, or `# key (unset: meaning)`.
fn line(out: &mut String, key: &str, value: Result<Value, &str>) {
    let _ = match value {
        Ok(value) => writeln!(out, "{key} = {value}"),
        Err(meaning) => writeln!(out, "# {key} (unset: {meaning})"),
    };
}

fn print_log_settings(out: &mut String, stream: &StreamConfig) {
    for key in LOG_KEYS {
        let log = &stream.log;
        let value = match *key {
            "segment_bytes" => Ok(int(log.segment_bytes)),
            "segment_ms" => log.segment_ms.map(int).ok_or("segments roll by size only"),
            "index_interval_bytes" => Ok(int(log.index_interval_bytes)),
            "flush" => Ok(text(match log.flush {
                FlushPolicy::Always => "always",
                FlushPolicy::Interval(_) => "interval",
                FlushPolicy::Never => "never",
            })),
            "flush_interval_ms" => match log.flush {
                FlushPolicy::Interval(every) => Ok(int(every.as_millis() as u64)),
                _ => Err("only with flush = \"interval\""),
            },
            "compression" => Ok(text(match log.compression {
                Compression::None => "none",
                Compression::Zstd => "zstd",
            })),
            "cleanup_policy" => Ok(text(match stream.cleanup_policy {
                CleanupPolicy::Delete => "delete",
                CleanupPolicy::Compact => "compact",
                CleanupPolicy::CompactDelete => "compact,delete",
            })),
            "compaction_key" => stream.compaction_key.as_deref().map(text).ok_or("the key is the topic"),
            "min_compaction_lag_ms" => Ok(int(stream.compaction.min_compaction_lag_ms)),
            "max_compaction_lag_ms" => stream.compaction.max_compaction_lag_ms.map(int).ok_or("none"),
            "min_cleanable_dirty_ratio" => Ok(Value::Float(stream.compaction.min_cleanable_dirty_ratio)),
            "delete_retention_ms" => Ok(int(stream.compaction.delete_retention_ms)),
            "retention_ms" => stream.retention.retention_ms.map(int).ok_or("unlimited"),
            "retention_bytes" => stream.retention.retention_bytes.map(int).ok_or("unlimited"),
            "retention_messages" => stream.retention.retention_messages.map(int).ok_or("unlimited"),
            "replication_factor" => stream.replication.factor.map(|n| int(u64::from(n))).ok_or("min(3, cluster size)"),
            "acks" => Ok(text(stream_settings::acks_name(stream.replication.acks))),
            "min_insync_replicas" => stream
                .replication
                .min_insync_replicas
                .map(|n| int(u64::from(n)))
                .ok_or("2 when the replication factor is 3 or more, else 1"),
            "ack_timeout" => Ok(int(stream.replication.ack_timeout.as_millis() as u64)),
            _ => Err("not printed"),
        };
        line(out, key, value);
    }
}

fn text(s: &str) -> Value {
    Value::String(s.to_owned())
}

/// A TOML integer; every value printed fits, since each was read from one (or is a default).
fn int(n: u64) -> Value {
    Value::Integer(i64::try_from(n).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unknown_key_is_named() {
        let error = parse("[mqtt]\nlisten = \"127.0.0.1:1\"\nmax_packet_sise = 5\n").unwrap_err();
        assert!(format!("{error:#}").contains("mqtt.max_packet_sise"), "{error:#}");
        let error = parse("[compaction]\ncleaner_thread = 2\n").unwrap_err();
        assert!(format!("{error:#}").contains("compaction.cleaner_thread"), "{error:#}");
        let error = parse("[telemetry]\notlp = \"x\"\n").unwrap_err();
        assert!(format!("{error:#}").contains("telemetry.otlp"), "{error:#}");
        let error = parse("datadir = \"x\"\n").unwrap_err();
        assert!(format!("{error:#}").contains("datadir"), "{error:#}");
    }

    #[test]
    fn a_bad_value_is_named() {
        for (text, key) in [
            ("[mqtt]\nlisten = \"not an address\"", "mqtt.listen"),
            ("[mqtt]\nmax_packet_size = 3", "mqtt.max_packet_size"),
            ("[mqtt]\nmax_packet_size = \"1GiB\"", "mqtt.max_packet_size"),
            ("[mqtt]\nmax_packet_size = \"lots\"", "mqtt.max_packet_size"),
            ("[mqtt]\nmax_connections = 0", "mqtt.max_connections"),
            ("[mqtt]\nmax_topic_length = 0", "mqtt.max_topic_length"),
            ("[mqtt]\nmax_topic_levels = 70000", "mqtt.max_topic_levels"),
            ("[mqtt]\nmax_keep_alive = 65536", "mqtt.max_keep_alive"),
            ("[mqtt]\nmax_subscriptions_per_client = -1", "mqtt.max_subscriptions_per_client"),
            ("[mqtt]\nmax_inflight = 0", "mqtt.max_inflight"),
            ("[mqtt]\nreceive_maximum = 65536", "mqtt.receive_maximum"),
            ("[mqtt]\ntopic_alias_maximum = -1", "mqtt.topic_alias_maximum"),
            ("[mqtt]\nws_listen = \"nowhere\"", "mqtt.ws_listen"),
            ("[mqtt]\nsys_interval_secs = \"2d\"", "mqtt.sys_interval_secs"),
            ("[mqtt]\nsys_interval_secs = \"10x\"", "mqtt.sys_interval_secs"),
            ("[http]\nlisten = \"nowhere\"", "http.listen"),
            ("[grpc]\nlistne = \"127.0.0.1:1\"", "grpc.listne"),
            ("[compaction]\ncleaner_threads = 0", "compaction.cleaner_threads"),
            ("[compaction]\ncleaner_threads = 65", "compaction.cleaner_threads"),
            ("[compaction]\ncleaner_throttle_bytes_per_sec = 0", "compaction.cleaner_throttle_bytes_per_sec"),
            ("[compaction]\ncleaner_throttle_bytes_per_sec = \"fast\"", "compaction.cleaner_throttle_bytes_per_sec"),
            ("[compaction]\ncleaner_buffer_bytes = \"1KB\"", "compaction.cleaner_buffer_bytes"),
            ("[compaction]\nretention_check_interval_ms = 0", "compaction.retention_check_interval_ms"),
            ("[compaction]\nretention_check_interval_ms = \"soon\"", "compaction.retention_check_interval_ms"),
            ("[compaction]\ncleaner_backoff_ms = \"0s\"", "compaction.cleaner_backoff_ms"),
            ("[telemetry]\notlp_endpoint = \"127.0.0.1:4317\"", "telemetry.otlp_endpoint"),
            ("[telemetry]\notlp_endpoint = \"https://collector:4317\"", "telemetry.otlp_endpoint"),
            ("[telemetry]\nservice_name = \"\"", "telemetry.service_name"),
            ("[runtime]\nidle_poll_ms = 60001", "runtime.idle_poll_ms"),
            ("[runtime]\nidle_poll_ms = \"forever\"", "runtime.idle_poll_ms"),
            ("[runtime]\nidle_pol_ms = 5", "runtime.idle_pol_ms"),
            ("[runtime]\nworker_threads = 0", "runtime.worker_threads"),
            ("[runtime]\nworker_threads = \"two\"", "runtime.worker_threads"),
            ("mqtt = 5", "mqtt"),
            ("data_dir = 5", "data_dir"),
            ("streams = 5", "streams"),
        ] {
            let error = format!("{:#}", parse(text).unwrap_err());
            assert!(error.contains(key), "{text:?}: {error} should name {key}");
        }
    }

    /// Issue 22: each TLS key that lacks what it needs is named.
    #[test]
    fn tls_keys_that_lack_what_they_need_are_named() {
        let tls = "[tls]\ncert_file = \"/c.pem\"\nkey_file = \"/k.pem\"\n";
        for (text, key) in [
            ("[mqtt]\ntls_listen = \"127.0.0.1:8883\"", "mqtt.tls_listen"),
            ("[mqtt]\nwss_listen = \"127.0.0.1:8084\"", "mqtt.wss_listen"),
            ("[mqtt]\ntls_listen = \"nowhere\"", "mqtt.tls_listen"),
            ("[tls]\ncert_file = \"/c.pem\"", "tls.key_file"),
            ("[tls]\nkey_file = \"/k.pem\"", "tls.cert_file"),
            ("[tls]\nclient_ca_file = \"/ca.pem\"", "tls.cert_file"),
            ("[tls]\ncert_file = 5\nkey_file = \"/k.pem\"", "tls.cert_file"),
            ("[tls]\ncert_file = \"/c.pem\"\nkey_file = \"/k.pem\"\nca_file = \"/ca.pem\"", "tls.ca_file"),
            ("[auth]\nuse_identity_as_username = true", "auth.use_identity_as_username"),
            (&format!("{tls}[auth]\nuse_identity_as_username = true"), "tls.client_ca_file"),
            ("[auth]\nuse_identity_as_username = \"yes\"", "auth.use_identity_as_username"),
        ] {
            let error = format!("{:#}", parse(text).unwrap_err());
            assert!(error.contains(key), "{text:?}: {error} should name {key}");
        }
        let mtls = parse(&format!(
            "[mqtt]\ntls_listen = \"127.0.0.1:8883\"\nwss_listen = \"127.0.0.1:8084\"\n{tls}client_ca_file = \"/ca.pem\"\n\
             [auth]\nuse_identity_as_username = true\n"
        ))
        .unwrap();
        let broker = &mtls.broker;
        assert_eq!(broker.tls_listen, Some(SocketAddr::from(([127, 0, 0, 1], 8883))));
        assert_eq!(broker.wss_listen, Some(SocketAddr::from(([127, 0, 0, 1], 8084))));
        assert_eq!(
            broker.tls,
            Some(TlsConfig {
                cert_file: "/c.pem".into(),
                key_file: "/k.pem".into(),
                client_ca_file: Some("/ca.pem".into())
            })
        );
        assert!(broker.auth.use_identity_as_username);
        assert_eq!(parse(&print(&mtls)).unwrap(), mtls);
    }

    #[test]
    fn idle_polling_is_off_and_one_worker_per_cpu_unless_set() {
        assert_eq!(parse("").unwrap().runtime, RuntimeConfig { worker_threads: None, idle_poll: None });
        assert_eq!(parse("[runtime]\nworker_threads = 1").unwrap().runtime.worker_threads, Some(1));
        assert_eq!(parse("[runtime]\nidle_poll_ms = 0").unwrap().runtime.idle_poll, None);
        let runtime = parse("[runtime]\nidle_poll_ms = \"1s\"").unwrap().runtime;
        assert_eq!(runtime.idle_poll, Some(Duration::from_secs(1)));
    }

    #[test]
    fn human_sizes_and_durations_are_read() {
        let effective = parse(
            "[mqtt]\nmax_packet_size = \"64KiB\"\nsys_interval_secs = \"1m\"\nmax_keep_alive = \"10m\"\n\
             [compaction]\nretention_check_interval_ms = \"5m\"\ncleaner_threads = 4\n\
             cleaner_throttle_bytes_per_sec = \"10MB\"\ncleaner_buffer_bytes = \"128MiB\"\ncleaner_backoff_ms = \"250ms\"\n\
             [log]\nsegment_bytes = \"512MiB\"\nretention_ms = \"7d\"\nretention_bytes = \"1GiB\"\nsegment_ms = \"12h\"\n",
        )
        .unwrap();
        let broker = &effective.broker;
        assert_eq!((broker.max_packet_size, broker.sys_interval_secs), (64 << 10, 60));
        assert_eq!(broker.limits.max_keep_alive, Some(600));
        let maintenance = &broker.maintenance;
        assert_eq!(maintenance.retention_check_interval, Duration::from_secs(300));
        assert_eq!(maintenance.cleaner_threads, 4);
        assert_eq!(maintenance.cleaner_throttle_bytes_per_sec, Some(10_000_000));
        assert_eq!(maintenance.cleaner_buffer_bytes, 128 << 20);
        assert_eq!(maintenance.cleaner_backoff, Duration::from_millis(250));
        let default = &broker.streams[0];
        assert_eq!(default.log.segment_bytes, 512 << 20);
        assert_eq!(default.log.segment_ms, Some(12 * 3_600_000));
        assert_eq!(default.retention.retention_ms, Some(7 * 86_400_000));
        assert_eq!(default.retention.retention_bytes, Some(1 << 30));
        let unlimited = parse("[compaction]\ncleaner_throttle_bytes_per_sec = \"unlimited\"\n").unwrap();
        assert_eq!(unlimited.broker.maintenance.cleaner_throttle_bytes_per_sec, None);
    }

    #[test]
    fn issue20_a_bad_cluster_section_is_named() {
        let peers = r#"peers = ["1@127.0.0.1:7101", "2@127.0.0.1:7102"]"#;
        for (text, named) in [
            (format!("[cluster]\nnode_id = 0\nlisten = \"127.0.0.1:7101\"\n{peers}"), "cluster.node_id"),
            (format!("[cluster]\nlisten = \"127.0.0.1:7101\"\n{peers}"), "cluster.node_id"),
            (format!("[cluster]\nnode_id = 3\nlisten = \"127.0.0.1:7101\"\n{peers}"), "has no entry for this node"),
            (
                "[cluster]\nnode_id = 1\nlisten = \"127.0.0.1:7101\"\npeers = [\"1@a:1\", \"1@b:2\"]".to_owned(),
                "node id 1 appears more than once",
            ),
            ("[cluster]\nnode_id = 1\nlisten = \"127.0.0.1:7101\"\npeers = [\"1-a:1\"]".to_owned(), "cluster.peers"),
            ("[cluster]\nnode_id = 1\nlisten = \"127.0.0.1:7101\"\npeers = [\"1@a\"]".to_owned(), "host:port"),
            (format!("[cluster]\nnode_id = 1\nlisten = \"nowhere\"\n{peers}"), "cluster.listen"),
            (format!("[cluster]\nnode_id = 1\nlisten = \"127.0.0.1:7101\"\n{peers}\nseeds = 1"), "cluster.seeds"),
        ] {
            let error = parse(&text).unwrap_err().to_string();
            assert!(error.contains(named), "{text}: {error}");
        }
        let cluster = parse(&format!("[cluster]\nnode_id = 2\nlisten = \"127.0.0.1:7102\"\n{peers}"))
            .unwrap()
            .broker
            .cluster
            .unwrap();
        assert_eq!(cluster.node_id, 2);
        assert_eq!(cluster.peers.get(&1).map(String::as_str), Some("127.0.0.1:7101"));
        assert!(parse("").unwrap().broker.cluster.is_none());
        let tls = "[tls]\ncert_file = \"/c\"\nkey_file = \"/k\"\n";
        let with_tls = format!("{tls}[cluster]\nnode_id = 1\nlisten = \"127.0.0.1:7101\"\n{peers}");
        let error = parse(&with_tls).unwrap_err().to_string();
        assert!(error.starts_with("cluster.ca_file"), "{error}");
        assert!(parse(&format!("{with_tls}\nca_file = \"/ca\"")).is_ok());
    }

    #[test]
    fn the_empty_file_is_all_defaults() {
        let effective = parse("").unwrap();
        let mut expected = BrokerConfig::new(SocketAddr::from(([127, 0, 0, 1], 1883)), PathBuf::from("data"));
        expected.streams = vec![StreamConfig::new(strata_frontend::DEFAULT_STREAM)];
        assert_eq!(effective.broker, expected);
        assert_eq!(
            (effective.http_listen, effective.grpc_listen),
            (Some(DEFAULT_HTTP_LISTEN), Some(DEFAULT_GRPC_LISTEN))
        );
        assert_eq!(effective.telemetry, TelemetryConfig::default());
    }

    #[test]
    fn flags_override_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("strata.toml");
        std::fs::write(
            &path,
            "data_dir = \"/x\"\n[mqtt]\nlisten = \"127.0.0.1:1\"\n[grpc]\nlisten = \"127.0.0.1:2\"\n",
        )
        .unwrap();
        let overrides = Overrides {
            data_dir: Some(PathBuf::from("/y")),
            grpc: Some(Listen(Some(SocketAddr::from(([127, 0, 0, 1], 3))))),
            http: Some(Listen(None)),
            ..Overrides::default()
        };
        let effective = load(Some(&path), &overrides).unwrap();
        assert_eq!(effective.broker.data_dir, PathBuf::from("/y"));
        assert_eq!(effective.broker.listen, SocketAddr::from(([127, 0, 0, 1], 1)));
        assert_eq!(effective.grpc_listen, Some(SocketAddr::from(([127, 0, 0, 1], 3))));
        assert_eq!(effective.http_listen, None);
    }

    /// Issue 18: a new user's `serve` answers `strata stream list` and `/metrics` with no
    /// flags, on loopback only; `off` (in the file or as a flag) turns each listener off.
    #[test]
    fn issue18_admin_and_http_listen_on_loopback_unless_off() {
        assert!(DEFAULT_GRPC_LISTEN.ip().is_loopback() && DEFAULT_HTTP_LISTEN.ip().is_loopback());
        let off = parse("[grpc]\nlisten = \"off\"\n[http]\nlisten = \"off\"\n").unwrap();
        assert_eq!((off.http_listen, off.grpc_listen), (None, None));
        assert_eq!("off".parse::<Listen>(), Ok(Listen(None)));
        assert_eq!("127.0.0.1:0".parse::<Listen>(), Ok(Listen(Some(SocketAddr::from(([127, 0, 0, 1], 0))))));
        assert!("of".parse::<Listen>().unwrap_err().contains("\"of\""));
        let printed = print(&off);
        assert!(printed.contains("[grpc]\nlisten = \"off\"\n"), "{printed}");
        assert_eq!(parse(&printed).unwrap(), off);
    }

    #[test]
    fn the_printed_config_has_every_key_and_reads_back_the_same() {
        let effective = parse(
            "data_dir = \"/var/lib/strata\"\n[mqtt]\nmax_connections = 10\ntls_listen = \"127.0.0.1:8883\"\n\
             [tls]\ncert_file = \"/etc/strata/server.crt\"\nkey_file = \"/etc/strata/server.key\"\n\
             [auth]\nallow_anonymous = false\n[http]\nlisten = \"127.0.0.1:9090\"\n\
             [compaction]\ncleaner_throttle_bytes_per_sec = \"unlimited\"\n\
             [telemetry]\notlp_endpoint = \"http://127.0.0.1:4317\"\nservice_name = \"edge-1\"\n\
             [cluster]\nnode_id = 1\nlisten = \"127.0.0.1:7101\"\npeers = [\"1@127.0.0.1:7101\", \"2@127.0.0.1:7102\"]\n\
             ca_file = \"/etc/strata/cluster-ca.crt\"\n\
             [log]\nretention_ms = \"7d\"\nflush = \"always\"\n\
             [[streams]]\nname = \"orders\"\ntopics = [\"orders/#\"]\npartitions = 3\ncompaction_key = \"id\"\n\
             cleanup_policy = \"compact,delete\"\nflush = \"interval\"\nmin_cleanable_dirty_ratio = 0.25\n\
             replication_factor = 3\nacks = \"leader\"\nmin_insync_replicas = 3\nack_timeout = \"750ms\"\n\
             replica_assignment = [[1, 2, 3], [2, 3, 1], [3, 1, 2]]\n",
        )
        .unwrap();
        let printed = print(&effective);
        assert!(!printed.contains("not printed"), "{printed}");
        for (section, keys) in [
            ("[mqtt]", MQTT_KEYS),
            ("[auth]", AUTH_KEYS),
            ("[tls]", TLS_KEYS),
            ("[compaction]", COMPACTION_KEYS),
            ("[telemetry]", TELEMETRY_KEYS),
            ("[cluster]", CLUSTER_KEYS),
            ("[log]", LOG_KEYS),
            ("[[streams]]", STREAM_KEYS),
        ] {
            assert!(printed.contains(section), "{printed}");
            for key in keys {
                assert!(
                    printed.contains(&format!("\n{key} = ")) || printed.contains(&format!("\n# {key} (unset")),
                    "{key} missing from\n{printed}"
                );
            }
        }
        assert_eq!(parse(&printed).unwrap(), effective, "{printed}");
        assert_eq!(print(&parse(&printed).unwrap()), printed);
        assert!(printed.contains("\nreplica_assignment = \"1,2,3;2,3,1;3,1,2\"\n"), "{printed}");
        assert!(printed.contains("\nack_timeout = 750\n"), "{printed}");
    }
}
