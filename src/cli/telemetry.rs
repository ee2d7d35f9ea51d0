//! Where diagnostics go: log lines on stderr (text or JSON, filtered by `RUST_LOG`), and, when
//! `[telemetry] otlp_endpoint` is set, spans exported over OTLP/gRPC by a batch exporter. The
//! exporter never holds the broker up: spans wait in a bounded queue on their own thread, an
//! export gives up after [`EXPORT_TIMEOUT`], and shutdown waits at most [`SHUTDOWN_TIMEOUT`].

use std::time::Duration;

use anyhow::Context;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig as _;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{EnvFilter, Layer as _};

use super::LogFormat;
use super::config::TelemetryConfig;

/// Longest one export may take before it is abandoned (a collector that is down fails fast;
/// one that hangs costs at most this).
const EXPORT_TIMEOUT: Duration = Duration::from_secs(3);
/// Longest the final flush at shutdown may take.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(3);
/// The crates whose spans are exported (at INFO and above): Strata's own, never those of the
/// libraries, so the exporter's own gRPC calls are not traced into themselves.
const TRACED_CRATES: &[&str] = &["strata", "strata_frontend", "strata_log", "strata_compaction"];

/// The span exporter, while it runs.
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Flushes what is queued and stops the exporter, within [`SHUTDOWN_TIMEOUT`]. Call it
    /// while the Tokio runtime that built it still runs (the gRPC channel lives there).
    pub fn shutdown(self) {
        if let Some(provider) = self.provider
            && let Err(error) = provider.shutdown_with_timeout(SHUTDOWN_TIMEOUT)
        {
            tracing::warn!(%error, "trace export did not shut down cleanly");
        }
    }
}

/// Installs the global subscriber: log lines only. For every command but `serve`.
pub fn init_logging(format: LogFormat) {
    install(format, None);
}

/// Installs the global subscriber with trace export when `config` has an endpoint. Must run
/// inside a Tokio runtime when it does (the exporter's channel is spawned on it); with no
/// endpoint, nothing telemetry-related starts.
pub fn init(format: LogFormat, config: &TelemetryConfig) -> anyhow::Result<Telemetry> {
    let Some(endpoint) = &config.otlp_endpoint else {
        install(format, None);
        return Ok(Telemetry { provider: None });
    };
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(endpoint.clone())
        .with_timeout(EXPORT_TIMEOUT)
        .build()
        .with_context(|| format!("telemetry.otlp_endpoint = {endpoint:?}: starting the OTLP exporter"))?;
    let resource = opentelemetry_sdk::Resource::builder().with_service_name(config.service_name.clone()).build();
    let provider = SdkTracerProvider::builder().with_batch_exporter(exporter).with_resource(resource).build();
    install(format, Some(&provider));
    Ok(Telemetry { provider: Some(provider) })
}

fn install(format: LogFormat, provider: Option<&SdkTracerProvider>) {
    let filter = match std::env::var(EnvFilter::DEFAULT_ENV) {
        // openraft reports every failed RPC to a peer that is down at INFO and ERROR; our own
        // lines say what matters (leaders, refusals), so its own go only to RUST_LOG.
        Err(_) => EnvFilter::new("warn,openraft=off"),
        Ok(directives) => EnvFilter::try_new(&directives).unwrap_or_else(|e| {
            eprintln!("warning: ignoring RUST_LOG={directives:?}: {e}");
            EnvFilter::new("warn")
        }),
    };
    let lines = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let lines = match format {
        LogFormat::Text => lines.boxed(),
        LogFormat::Json => lines.json().boxed(),
    };
    // Each layer has its own filter: RUST_LOG shapes the log lines, not what is exported.
    let spans = provider.map(|provider| {
        let traced =
            TRACED_CRATES.iter().fold(Targets::new(), |targets, name| targets.with_target(*name, LevelFilter::INFO));
        tracing_opentelemetry::layer().with_tracer(provider.tracer("strata")).with_filter(traced)
    });
    tracing_subscriber::registry().with(lines.with_filter(filter)).with(spans).init();
}
