//! `strata serve`: reads the config file, applies the command-line flags over it and runs the
//! broker until SIGINT or SIGTERM, then closes the log cleanly.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use serde::Deserialize;
use strata_frontend::{Broker, BrokerConfig};

/// The config file. Every key is optional; an unknown key or a bad value stops the start.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    /// Root directory of the partition logs. Default `./data`.
    data_dir: Option<PathBuf>,
    /// The MQTT listener and its limits.
    #[serde(default)]
    mqtt: MqttSection,
    /// `[log]`: log settings every stream starts from (`streams_config.rs` reads it).
    log: Option<toml::Table>,
    /// `[[streams]]`: streams, their topics, partitions and log settings.
    #[serde(default)]
    streams: Vec<toml::Table>,
    /// `[log]` and `[[streams]]` read and checked by [`parse_config`].
    #[serde(skip)]
    parsed_streams: Vec<strata_frontend::StreamConfig>,
    /// `[log]` read and checked: what a stream created at runtime starts from.
    #[serde(skip)]
    stream_defaults: Option<strata_frontend::StreamConfig>,
    /// The operator HTTP endpoint.
    #[serde(default)]
    http: HttpSection,
    /// The gRPC admin API.
    #[serde(default)]
    grpc: GrpcSection,
}

/// `[mqtt]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct MqttSection {
    /// Address of the MQTT TCP listener. Default `127.0.0.1:1883`.
    listen: Option<SocketAddr>,
    /// Largest packet a client may send, in bytes, fixed header included. Default 1 MiB.
    max_packet_size: Option<u32>,
    /// Most outbound QoS 1/2 messages in flight per connection. Default 1,024.
    max_inflight: Option<u16>,
    /// Our Receive Maximum. Default 1,024.
    receive_maximum: Option<u16>,
    /// Seconds between `$SYS` refreshes; 0 turns `$SYS` off. Default 10.
    sys_interval_secs: Option<u64>,
    /// Address of the MQTT-over-WebSocket listener; off by default.
    ws_listen: Option<SocketAddr>,
    /// Our Topic Alias Maximum. Default 64; 0 refuses topic aliases.
    topic_alias_maximum: Option<u16>,
    /// Most open connections. Default: no limit.
    max_connections: Option<u32>,
    /// Longest topic name or filter, in bytes. Default 65,535.
    max_topic_length: Option<u32>,
    /// Most levels in a topic name or filter. Default 128.
    max_topic_levels: Option<u32>,
    /// Server Keep Alive cap, in seconds. Default: none.
    max_keep_alive: Option<u16>,
}

/// `[http]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct HttpSection {
    /// Address of `/health`, `/ready` and `/metrics`. Default: off.
    listen: Option<SocketAddr>,
}

/// `[grpc]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct GrpcSection {
    /// Address of the gRPC admin API. Default: off.
    listen: Option<SocketAddr>,
}

/// Largest accepted `mqtt.sys_interval_secs`: one day.
const MAX_SYS_INTERVAL_SECS: u64 = 86_400;

/// Smallest accepted `mqtt.max_packet_size`: a CONNECT with a client id must fit.
const MIN_PACKET_SIZE: u32 = 64;
/// Largest packet MQTT can express (268,435,455 bytes of Remaining Length plus the header).
const MAX_PACKET_SIZE: u32 = 268_435_460;

/// Parses and checks a config file's text. Errors name the key.
pub fn parse_config(text: &str) -> anyhow::Result<ConfigFile> {
    let config: ConfigFile = toml::from_str(text).map_err(|e| anyhow::anyhow!("{}", e.to_string().trim_end()))?;
    if let Some(size) = config.mqtt.max_packet_size
        && !(MIN_PACKET_SIZE..=MAX_PACKET_SIZE).contains(&size)
    {
        anyhow::bail!("mqtt.max_packet_size = {size}: must be between {MIN_PACKET_SIZE} and {MAX_PACKET_SIZE} bytes");
    }
    if config.mqtt.max_inflight == Some(0) {
        anyhow::bail!("mqtt.max_inflight = 0: must be between 1 and 65535");
    }
    if config.mqtt.receive_maximum == Some(0) {
        anyhow::bail!("mqtt.receive_maximum = 0: must be between 1 and 65535");
    }
    if let Some(secs) = config.mqtt.sys_interval_secs
        && secs > MAX_SYS_INTERVAL_SECS
    {
        anyhow::bail!("mqtt.sys_interval_secs = {secs}: must be between 0 (off) and {MAX_SYS_INTERVAL_SECS} seconds");
    }
    if config.mqtt.max_connections == Some(0) {
        anyhow::bail!("mqtt.max_connections = 0: must be at least 1 (leave it out for no limit)");
    }
    if let Some(length) = config.mqtt.max_topic_length
        && !(1..=65_535).contains(&length)
    {
        anyhow::bail!("mqtt.max_topic_length = {length}: must be between 1 and 65535 bytes");
    }
    if let Some(levels) = config.mqtt.max_topic_levels
        && !(1..=65_535).contains(&levels)
    {
        anyhow::bail!("mqtt.max_topic_levels = {levels}: must be between 1 and 65535");
    }
    if config.mqtt.max_keep_alive == Some(0) {
        anyhow::bail!("mqtt.max_keep_alive = 0: must be between 1 and 65535 seconds (leave it out for no cap)");
    }
    let mut config = config;
    let (defaults, streams) = super::streams_config::parse_streams(config.log.as_ref(), &config.streams)?;
    config.stream_defaults = Some(defaults);
    config.parsed_streams = streams;
    Ok(config)
}

/// The flags of `strata serve`.
pub struct ServeArgs {
    pub config: Option<PathBuf>,
    pub data_dir: Option<PathBuf>,
    pub mqtt: Option<SocketAddr>,
    pub ws: Option<SocketAddr>,
    /// Address of the operator HTTP endpoint.
    pub http: Option<SocketAddr>,
    /// Address of the gRPC admin API.
    pub grpc: Option<SocketAddr>,
}

/// Builds the broker config: defaults, then the file, then the flags.
fn broker_config(args: &ServeArgs) -> anyhow::Result<BrokerConfig> {
    let file = match &args.config {
        Some(path) => load(path)?,
        None => ConfigFile::default(),
    };
    let listen = args.mqtt.or(file.mqtt.listen).unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 1883)));
    let data_dir = args.data_dir.clone().or(file.data_dir).unwrap_or_else(|| PathBuf::from("data"));
    let mut config = BrokerConfig::new(listen, data_dir);
    config.streams = file.parsed_streams.clone();
    if let Some(defaults) = &file.stream_defaults {
        config.stream_defaults = defaults.clone();
    }
    if let Some(size) = file.mqtt.max_packet_size {
        config.max_packet_size = size;
    }
    if let Some(max_inflight) = file.mqtt.max_inflight {
        config.max_inflight = max_inflight;
    }
    if let Some(receive_maximum) = file.mqtt.receive_maximum {
        config.receive_maximum = receive_maximum;
    }
    if let Some(secs) = file.mqtt.sys_interval_secs {
        config.sys_interval_secs = secs;
    }
    config.ws_listen = args.ws.or(file.mqtt.ws_listen);
    if let Some(maximum) = file.mqtt.topic_alias_maximum {
        config.limits.topic_alias_maximum = maximum;
    }
    config.limits.max_connections = file.mqtt.max_connections.map(|max| max as usize);
    if let Some(length) = file.mqtt.max_topic_length {
        config.limits.max_topic_length = length as usize;
    }
    if let Some(levels) = file.mqtt.max_topic_levels {
        config.limits.max_topic_levels = levels as usize;
    }
    config.limits.max_keep_alive = file.mqtt.max_keep_alive;
    Ok(config)
}

fn load(path: &Path) -> anyhow::Result<ConfigFile> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading config file {}", path.display()))?;
    parse_config(&text).with_context(|| format!("config file {}", path.display()))
}

/// Runs the broker until a signal; the exit status is 0 after a clean stop.
pub fn serve(args: &ServeArgs) -> anyhow::Result<ExitCode> {
    let config = broker_config(args)?;
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting the runtime")?;
    // The flags, else the file's `[http] listen` and `[grpc] listen`, else off.
    let file = match (args.http, args.grpc) {
        (Some(_), Some(_)) => None,
        _ => args.config.as_deref().map(load).transpose()?,
    };
    let http_listen = args.http.or_else(|| file.as_ref().and_then(|file| file.http.listen));
    let grpc_listen = args.grpc.or_else(|| file.as_ref().and_then(|file| file.grpc.listen));
    runtime.block_on(async {
        // Bound first, so `/health` answers and `/ready` says 503 while the logs recover.
        let http = match http_listen {
            Some(addr) => Some(crate::cli::http::start(addr).await?),
            None => None,
        };
        let broker = Broker::start(config.clone()).await?;
        let addr = broker.local_addr().context("reading the listener address")?;
        // Handlers installed before the ready line: a SIGTERM right after it stops cleanly.
        let shutdown = shutdown_signal();
        // Tests and scripts wait for this line to know the broker is ready.
        println!("strata: MQTT listening on {addr}, data in {}", config.data_dir.display());
        if let Some(ws_addr) = broker.ws_local_addr() {
            let ws_addr = ws_addr.context("reading the WebSocket listener address")?;
            println!("strata: MQTT over WebSocket listening on ws://{ws_addr}{}", strata_frontend::WEBSOCKET_PATH);
        }
        tracing::info!(mqtt = %addr, data_dir = %config.data_dir.display(), "serving");
        if let Some((http_addr, state)) = &http {
            state.set_ready(broker.metrics());
            println!("strata: HTTP listening on {http_addr}");
        }
        // The admin API stops with the broker: told when the shutdown signal arrives.
        let (grpc_stop, grpc_stopped) = tokio::sync::oneshot::channel::<()>();
        if let Some(addr) = grpc_listen {
            let stopped = async move {
                let _ = grpc_stopped.await;
            };
            let grpc_addr = crate::cli::grpc::start(addr, broker.admin(), stopped).await?;
            println!("strata: gRPC listening on {grpc_addr}");
        }
        let http_state = http.map(|(_, state)| state);
        let shutdown = async move {
            shutdown.await;
            let _ = grpc_stop.send(());
            if let Some(state) = http_state {
                state.set_stopping();
            }
        };
        broker.run(shutdown).await?;
        tracing::info!("stopped; every log closed cleanly");
        Ok::<_, anyhow::Error>(())
    })?;
    Ok(ExitCode::SUCCESS)
}

/// Registers the SIGINT/SIGTERM handlers now; the returned future completes on either.
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    let terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate());
    let interrupt = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt());
    async move {
        match (terminate, interrupt) {
            (Ok(mut terminate), Ok(mut interrupt)) => {
                tokio::select! {
                    _ = interrupt.recv() => {}
                    _ = terminate.recv() => {}
                }
            }
            _ => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unknown_key_is_named() {
        let error = parse_config("[mqtt]\nlisten = \"127.0.0.1:1\"\nmax_packet_sise = 5\n").unwrap_err();
        assert!(format!("{error:#}").contains("max_packet_sise"), "{error:#}");
    }

    #[test]
    fn a_bad_value_is_named() {
        let error = parse_config("[mqtt]\nlisten = \"not an address\"\n").unwrap_err();
        assert!(format!("{error:#}").contains("listen"), "{error:#}");
        let error = parse_config("[mqtt]\nmax_packet_size = 3\n").unwrap_err();
        assert!(format!("{error:#}").contains("mqtt.max_packet_size"), "{error:#}");
        for (text, key) in [
            ("max_connections = 0", "mqtt.max_connections"),
            ("max_topic_length = 0", "mqtt.max_topic_length"),
            ("max_topic_levels = 70000", "mqtt.max_topic_levels"),
            ("max_keep_alive = 0", "mqtt.max_keep_alive"),
            ("topic_alias_maximum = -1", "topic_alias_maximum"),
            ("ws_listen = \"nowhere\"", "ws_listen"),
        ] {
            let error = parse_config(&format!("[mqtt]\n{text}\n")).unwrap_err();
            assert!(format!("{error:#}").contains(key), "{text}: {error:#}");
        }
    }

    #[test]
    fn grpc_listen_is_read_and_checked() {
        let config = parse_config("[grpc]\nlisten = \"127.0.0.1:7070\"\n").unwrap();
        assert_eq!(config.grpc.listen, Some(SocketAddr::from(([127, 0, 0, 1], 7070))));
        let error = parse_config("[grpc]\nlisten = \"nowhere\"\n").unwrap_err();
        assert!(format!("{error:#}").contains("listen"), "{error:#}");
        let error = parse_config("[grpc]\nlistne = \"127.0.0.1:1\"\n").unwrap_err();
        assert!(format!("{error:#}").contains("listne"), "{error:#}");
    }

    #[test]
    fn the_empty_file_is_all_defaults() {
        let config = parse_config("").unwrap();
        assert!(config.data_dir.is_none() && config.mqtt.listen.is_none());
    }
}
