//! With `[telemetry] otlp_endpoint` set, the broker exports its spans over OTLP/gRPC: a
//! collector on loopback (opentelemetry-proto's TraceService) receives the span of an MQTT
//! connection, with the configured `service.name`.

#[path = "common/broker.rs"]
mod broker;
#[path = "common/v4_session.rs"]
mod v4_session;

use std::time::Duration;

use broker::ServeProcess;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{TraceService, TraceServiceServer};
use opentelemetry_proto::tonic::collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use tokio::sync::mpsc;

/// Sends (service name, span name) for every span it receives.
struct Collector {
    spans: mpsc::UnboundedSender<(String, String)>,
}

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        for resource_spans in request.into_inner().resource_spans {
            let service = resource_spans
                .resource
                .iter()
                .flat_map(|resource| &resource.attributes)
                .find(|attribute| attribute.key == "service.name")
                .and_then(|attribute| match attribute.value.as_ref()?.value.as_ref()? {
                    Value::StringValue(name) => Some(name.clone()),
                    _ => None,
                })
                .unwrap_or_default();
            for scope in resource_spans.scope_spans {
                for span in scope.spans {
                    let _ = self.spans.send((service.clone(), span.name));
                }
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse { partial_success: None }))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_span_of_a_connection_reaches_the_collector() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let collector_addr = listener.local_addr().unwrap();
    let (spans, mut received) = mpsc::unbounded_channel();
    let (stop_collector, collector_stopped) = tokio::sync::oneshot::channel::<()>();
    let collector = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(Collector { spans }))
            .serve_with_incoming_shutdown(tonic::transport::server::TcpIncoming::from(listener), async {
                let _ = collector_stopped.await;
            }),
    );

    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("strata.toml");
    std::fs::write(
        &config,
        format!("[telemetry]\notlp_endpoint = \"http://{collector_addr}\"\nservice_name = \"strata-otlp-test\"\n"),
    )
    .unwrap();
    let mut broker = ServeProcess::start_with(&dir.path().join("data"), &["--config", config.to_str().unwrap()]);
    v4_session::publish_all(broker.port(), "otlp-export", "telemetry/t", 0..3).await;
    // The connection's span ends with it; SIGTERM flushes whatever the batch still holds.
    let status = tokio::task::spawn_blocking(move || broker.stop()).await.unwrap();
    assert!(status.success(), "strata serve exited with {status:?}");

    let span = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            let span = received.recv().await.expect("the collector runs");
            if span.1 == "mqtt.connection" {
                return span;
            }
        }
    })
    .await
    .expect("the collector received the connection's span");
    assert_eq!(span.0, "strata-otlp-test");
    let _ = stop_collector.send(());
    collector.await.unwrap().unwrap();
}
