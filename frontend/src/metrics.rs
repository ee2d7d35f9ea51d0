//! The broker's metrics: counters and histograms that the hot paths update with atomics
//! (children of labelled families are resolved once, here, so an update is one atomic add and
//! never allocates or locks), and gauges read from the logs and the maintenance threads when
//! `/metrics` is scraped. Rendered in the Prometheus text format by the `prometheus` crate.

use std::sync::Mutex;
use std::time::Duration;

use prometheus::{
    Counter, Encoder, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
    TextEncoder,
};
use strata_compaction::MaintenanceTotals;

use crate::partition::PartitionHandle;

use crate::codec::QoS;
use crate::consumers::GroupInfo;

/// Upper bounds of the publish-to-ack latency buckets, in seconds (50 µs to 5 s).
const ACK_BUCKETS: &[f64] =
    &[0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0];
/// Upper bounds of the fsync latency buckets, in seconds (10 µs to 2.5 s).
const FSYNC_BUCKETS: &[f64] = &[
    0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 2.5,
];

/// One partition whose offsets and size are read at scrape time.
struct PartitionEntry {
    stream: String,
    internal: bool,
    partition: std::sync::Arc<PartitionHandle>,
}

/// Gauges set from the logs at scrape time.
struct PartitionGauges {
    log_start: IntGaugeVec,
    log_end: IntGaugeVec,
    high_watermark: IntGaugeVec,
    size: IntGaugeVec,
    segments: IntGaugeVec,
}

/// Consumers' gauges, set at scrape time from the groups and sessions.
struct ConsumerGauges {
    /// Per `$share` group (group names are the operator's to know).
    lag: IntGaugeVec,
    committed: IntGaugeVec,
    /// Persistent sessions, summed and maxed per partition: a client id is never a label
    /// (it is the client's to choose, so it would leak identities and grow the series without
    /// bound). One session's figures are in the admin API (`strata group describe`).
    session_lag_sum: IntGaugeVec,
    session_lag_max: IntGaugeVec,
}

/// Counters mirrored from `Maintenance::totals()` at scrape time.
struct MaintenanceCounters {
    retention_segments: IntCounter,
    retention_bytes: IntCounter,
    compaction_runs: IntCounter,
    compaction_read: IntCounter,
    compaction_freed: IntCounter,
    compaction_seconds: Counter,
}

/// Everything the broker measures; one per broker.
pub(crate) struct Metrics {
    registry: Registry,
    connections_current: IntGauge,
    connections_total: IntCounter,
    /// By QoS 0, 1, 2.
    messages_received: [IntCounter; 3],
    bytes_received: [IntCounter; 3],
    messages_sent: [IntCounter; 3],
    bytes_sent: [IntCounter; 3],
    publish_ack_latency: Histogram,
    fsync_latency: Histogram,
    qos0_lag_skips: IntCounter,
    qos0_skipped_offsets: IntCounter,
    /// Refused CONNECTs: bad user name or password, anonymous refused.
    auth_failures: [IntCounter; 2],
    /// Connections refused by a limit, by the limit.
    connections_refused: IntCounterVec,
    /// Publishes and subscriptions refused by the ACL (or for a `$` topic), by action.
    acl_denied: [IntCounter; 2],
    partitions: Mutex<Vec<PartitionEntry>>,
    partition_gauges: PartitionGauges,
    /// Partitions refusing appends after a failed fsync, until they are recovered.
    partitions_failed: IntGauge,
    /// 1 while some partition's last append found the disk full.
    disk_full: IntGauge,
    consumer_gauges: ConsumerGauges,
    maintenance: MaintenanceCounters,
    /// Serialises scrapes: they reset and refill the partition gauges.
    scrape: Mutex<()>,
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn qos_index(qos: QoS) -> usize {
    match qos {
        QoS::AtMostOnce => 0,
        QoS::AtLeastOnce => 1,
        QoS::ExactlyOnce => 2,
    }
}

/// Registers `collector` and returns it; names are fixed here, so a clash is a bug.
fn register<T: prometheus::core::Collector + Clone + 'static>(registry: &Registry, collector: T) -> T {
    registry.register(Box::new(collector.clone())).expect("metric names are unique");
    collector
}

fn by_qos(registry: &Registry, name: &str, help: &str) -> [IntCounter; 3] {
    let family = register(registry, IntCounterVec::new(Opts::new(name, help), &["qos"]).expect("valid metric"));
    ["0", "1", "2"].map(|qos| family.with_label_values(&[qos]))
}

fn int_counter(registry: &Registry, name: &str, help: &str) -> IntCounter {
    register(registry, IntCounter::new(name, help).expect("valid metric"))
}

fn partition_gauge(registry: &Registry, name: &str, help: &str) -> IntGaugeVec {
    register(registry, IntGaugeVec::new(Opts::new(name, help), &["stream", "partition", "internal"]).expect("valid"))
}

fn session_gauge(registry: &Registry, name: &str, help: &str) -> IntGaugeVec {
    register(registry, IntGaugeVec::new(Opts::new(name, help), &["stream", "partition"]).expect("valid"))
}

fn consumer_gauge(registry: &Registry, name: &str, help: &str) -> IntGaugeVec {
    let labels = ["group", "kind", "stream", "partition"];
    register(registry, IntGaugeVec::new(Opts::new(name, help), &labels).expect("valid"))
}

impl Metrics {
    pub(crate) fn new() -> Metrics {
        let r = Registry::new();
        let histogram = |name: &str, help: &str, buckets: &[f64]| {
            register(&r, Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets.to_vec())).expect("valid"))
        };
        Metrics {
            connections_current: register(
                &r,
                IntGauge::new("strata_connections", "MQTT clients connected now (CONNACK sent).").expect("valid"),
            ),
            connections_total: int_counter(&r, "strata_connections_total", "MQTT connections accepted since start."),
            messages_received: by_qos(&r, "strata_messages_received_total", "PUBLISH packets received from clients."),
            bytes_received: by_qos(&r, "strata_received_payload_bytes_total", "Payload bytes of received PUBLISHes."),
            messages_sent: by_qos(&r, "strata_messages_sent_total", "PUBLISH packets sent to subscribers."),
            bytes_sent: by_qos(&r, "strata_sent_payload_bytes_total", "Payload bytes of PUBLISHes sent."),
            publish_ack_latency: histogram(
                "strata_publish_ack_latency_seconds",
                "From a QoS 1/2 PUBLISH received to its PUBACK/PUBREC queued for the socket.",
                ACK_BUCKETS,
            ),
            fsync_latency: histogram(
                "strata_log_fsync_duration_seconds",
                "Wall time of each fsync of appended data, all partitions.",
                FSYNC_BUCKETS,
            ),
            qos0_lag_skips: int_counter(
                &r,
                "strata_qos0_lag_skips_total",
                "Times a QoS 0 subscriber fell more than qos0_max_lag behind and skipped ahead.",
            ),
            qos0_skipped_offsets: int_counter(
                &r,
                "strata_qos0_skipped_offsets_total",
                "Offsets QoS 0 subscribers skipped by those jumps (messages they never read).",
            ),
            auth_failures: {
                let family = register(
                    &r,
                    IntCounterVec::new(
                        Opts::new("strata_auth_failures_total", "CONNECTs refused by authentication, by reason."),
                        &["reason"],
                    )
                    .expect("valid metric"),
                );
                ["bad_credentials", "anonymous_refused"].map(|reason| family.with_label_values(&[reason]))
            },
            connections_refused: register(
                &r,
                IntCounterVec::new(
                    Opts::new(
                        "strata_connections_refused_total",
                        "Connections refused by a limit: max_connections, per_ip, rate.",
                    ),
                    &["limit"],
                )
                .expect("valid metric"),
            ),
            acl_denied: {
                let family = register(
                    &r,
                    IntCounterVec::new(
                        Opts::new(
                            "strata_acl_denied_total",
                            "Publishes (and wills) and subscriptions refused by the ACL or for a $ topic, by action.",
                        ),
                        &["action"],
                    )
                    .expect("valid metric"),
                );
                ["publish", "subscribe"].map(|action| family.with_label_values(&[action]))
            },
            partitions: Mutex::new(Vec::new()),
            partitions_failed: register(
                &r,
                IntGauge::new(
                    "strata_partitions_failed",
                    "Partitions refusing publishes after a failed fsync, until recovered in place or by a restart.",
                )
                .expect("valid"),
            ),
            disk_full: register(
                &r,
                IntGauge::new(
                    "strata_disk_full",
                    "1 while publishes are refused for want of disk space (MQTT 5: reason code 0x97).",
                )
                .expect("valid"),
            ),
            partition_gauges: PartitionGauges {
                log_start: partition_gauge(&r, "strata_partition_log_start_offset", "First offset still stored."),
                log_end: partition_gauge(&r, "strata_partition_log_end_offset", "Next offset to be assigned."),
                high_watermark: partition_gauge(
                    &r,
                    "strata_partition_high_watermark_offset",
                    "Readers see offsets below this.",
                ),
                size: partition_gauge(&r, "strata_partition_size_bytes", "Bytes of the partition's segment files."),
                segments: partition_gauge(&r, "strata_partition_segments", "Segments of the partition."),
            },
            consumer_gauges: ConsumerGauges {
                lag: consumer_gauge(
                    &r,
                    "strata_consumer_lag_messages",
                    "High watermark minus the committed offset of a $share group.",
                ),
                committed: consumer_gauge(
                    &r,
                    "strata_consumer_committed_offset",
                    "Committed offset (lowest not acknowledged) of a $share group.",
                ),
                session_lag_sum: session_gauge(
                    &r,
                    "strata_session_lag_messages",
                    "Lag (high watermark minus committed offset) summed over the persistent sessions.",
                ),
                session_lag_max: session_gauge(
                    &r,
                    "strata_session_lag_max_messages",
                    "The largest lag of one persistent session.",
                ),
            },
            maintenance: MaintenanceCounters {
                retention_segments: int_counter(
                    &r,
                    "strata_retention_deleted_segments_total",
                    "Segments deleted by retention.",
                ),
                retention_bytes: int_counter(&r, "strata_retention_deleted_bytes_total", "Bytes deleted by retention."),
                compaction_runs: int_counter(&r, "strata_compaction_runs_total", "Compaction (cleaning) passes run."),
                compaction_read: int_counter(&r, "strata_compaction_read_bytes_total", "Bytes the cleaners read."),
                compaction_freed: int_counter(&r, "strata_compaction_freed_bytes_total", "Bytes the cleaners freed."),
                compaction_seconds: register(
                    &r,
                    Counter::new("strata_compaction_duration_seconds_total", "Time spent cleaning.").expect("valid"),
                ),
            },
            scrape: Mutex::new(()),
            registry: r,
        }
    }

    /// Counts a CONNECT refused for its credentials (`bad_credentials`) or for being
    /// anonymous (`!bad_credentials`).
    pub(crate) fn auth_failed(&self, bad_credentials: bool) {
        self.auth_failures[usize::from(!bad_credentials)].inc();
    }

    /// Counts a connection refused by `limit` (`max_connections`, `per_ip`, `rate` or `max_sessions`).
    pub(crate) fn connection_refused(&self, limit: &str) {
        self.connections_refused.with_label_values(&[limit]).inc();
    }

    /// Counts a refused publish (`true`) or subscription (`false`) (issue 22).
    pub(crate) fn acl_denied(&self, publish: bool) {
        self.acl_denied[usize::from(!publish)].inc();
    }

    /// Counts a client whose CONNACK went out; the returned guard counts it gone when dropped.
    pub(crate) fn connection_opened(&self) -> ConnectedGuard {
        self.connections_total.inc();
        self.connections_current.inc();
        ConnectedGuard { gauge: self.connections_current.clone() }
    }

    /// A PUBLISH received from a client.
    pub(crate) fn received(&self, qos: QoS, payload_bytes: usize) {
        self.messages_received[qos_index(qos)].inc();
        self.bytes_received[qos_index(qos)].inc_by(payload_bytes as u64);
    }

    /// A PUBLISH queued for a subscriber, at the QoS it goes out with.
    pub(crate) fn sent(&self, qos: QoS, payload_bytes: usize) {
        self.messages_sent[qos_index(qos)].inc();
        self.bytes_sent[qos_index(qos)].inc_by(payload_bytes as u64);
    }

    /// A QoS 0 reader skipped `offsets` to catch up with the high watermark.
    pub(crate) fn qos0_skipped(&self, offsets: u64) {
        self.qos0_lag_skips.inc();
        self.qos0_skipped_offsets.inc_by(offsets);
    }

    /// A PUBACK or PUBREC queued, `elapsed` after its PUBLISH was received.
    pub(crate) fn publish_acked(&self, elapsed: Duration) {
        self.publish_ack_latency.observe(elapsed.as_secs_f64());
    }

    /// Makes `partition` of `stream` report its fsyncs here and shows its offsets and size on
    /// every scrape.
    pub(crate) fn add_partition(
        self: &std::sync::Arc<Self>,
        stream: &str,
        internal: bool,
        partition: &std::sync::Arc<PartitionHandle>,
    ) {
        let metrics = std::sync::Arc::downgrade(self);
        partition.on_fsync(std::sync::Arc::new(move |elapsed: Duration| {
            if let Some(metrics) = metrics.upgrade() {
                metrics.fsync_latency.observe(elapsed.as_secs_f64());
            }
        }));
        lock(&self.partitions).push(PartitionEntry {
            stream: stream.to_owned(),
            internal,
            partition: std::sync::Arc::clone(partition),
        });
    }

    /// Stops showing the partitions of `stream` (deleted).
    pub(crate) fn remove_stream(&self, stream: &str) {
        lock(&self.partitions).retain(|entry| entry.internal || entry.stream != stream);
    }

    /// Why some partition cannot take publishes now, one line each: an fsync that failed
    /// (until the partition is recovered), or a full disk (until space is freed). Empty when
    /// every partition can.
    pub(crate) fn storage_problems(&self) -> Vec<String> {
        lock(&self.partitions).iter().filter_map(|entry| entry.partition.storage_problem()).collect()
    }

    /// Bytes of every partition's segment files, the internal streams' included.
    pub(crate) fn disk_bytes(&self) -> u64 {
        lock(&self.partitions).iter().map(|entry| entry.partition.figures().size_bytes).sum()
    }

    /// Totals for `$SYS`: messages received, messages sent, payload bytes received and sent.
    pub(crate) fn sys_totals(&self) -> SysTotals {
        let sum = |counters: &[IntCounter; 3]| counters.iter().map(IntCounter::get).sum();
        SysTotals {
            connected: self.connections_current.get().max(0) as u64,
            messages_received: sum(&self.messages_received),
            messages_sent: sum(&self.messages_sent),
            bytes_received: sum(&self.bytes_received),
            bytes_sent: sum(&self.bytes_sent),
        }
    }

    /// The Prometheus text exposition of every metric, reading the logs, `maintenance`
    /// (`None` once the maintenance threads have stopped) and `consumers` now.
    pub(crate) fn render(&self, maintenance: Option<MaintenanceTotals>, consumers: &[GroupInfo]) -> String {
        let _scrape = lock(&self.scrape);
        let consumer_gauges = &self.consumer_gauges;
        consumer_gauges.lag.reset();
        consumer_gauges.committed.reset();
        consumer_gauges.session_lag_sum.reset();
        consumer_gauges.session_lag_max.reset();
        let as_gauge = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        let mut sessions: std::collections::BTreeMap<(&str, u32), (u64, u64)> = std::collections::BTreeMap::new();
        for consumer in consumers {
            for p in &consumer.partitions {
                if matches!(consumer.kind, crate::consumers::GroupKind::Session) {
                    let (sum, max) = sessions.entry((p.stream.as_str(), p.partition)).or_default();
                    *sum = sum.saturating_add(p.lag);
                    *max = (*max).max(p.lag);
                    continue;
                }
                let partition = p.partition.to_string();
                let labels = [consumer.name.as_str(), consumer.kind.as_str(), p.stream.as_str(), partition.as_str()];
                consumer_gauges.lag.with_label_values(&labels).set(as_gauge(p.lag));
                consumer_gauges.committed.with_label_values(&labels).set(as_gauge(p.committed));
            }
        }
        for ((stream, partition), (sum, max)) in sessions {
            let partition = partition.to_string();
            consumer_gauges.session_lag_sum.with_label_values(&[stream, &partition]).set(as_gauge(sum));
            consumer_gauges.session_lag_max.with_label_values(&[stream, &partition]).set(as_gauge(max));
        }
        let gauges = &self.partition_gauges;
        for gauge in [&gauges.log_start, &gauges.log_end, &gauges.high_watermark, &gauges.size, &gauges.segments] {
            gauge.reset();
        }
        let (mut failed, mut disk_full) = (0, false);
        for entry in lock(&self.partitions).iter() {
            failed += i64::from(entry.partition.sync_failed());
            disk_full |= entry.partition.disk_full();
            let partition = entry.partition.number.to_string();
            let labels = [entry.stream.as_str(), partition.as_str(), if entry.internal { "true" } else { "false" }];
            let figures = entry.partition.figures();
            let offsets = figures.offsets;
            let as_gauge = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
            gauges.log_start.with_label_values(&labels).set(as_gauge(offsets.log_start));
            gauges.log_end.with_label_values(&labels).set(as_gauge(offsets.log_end));
            gauges.high_watermark.with_label_values(&labels).set(as_gauge(offsets.high_watermark));
            gauges.size.with_label_values(&labels).set(as_gauge(figures.size_bytes));
            gauges.segments.with_label_values(&labels).set(as_gauge(figures.segment_count));
        }
        self.partitions_failed.set(failed);
        self.disk_full.set(i64::from(disk_full));
        if let Some(totals) = maintenance {
            let m = &self.maintenance;
            let catch_up = |counter: &IntCounter, total: u64| counter.inc_by(total.saturating_sub(counter.get()));
            catch_up(&m.retention_segments, totals.retention_segments_deleted);
            catch_up(&m.retention_bytes, totals.retention_bytes_deleted);
            catch_up(&m.compaction_runs, totals.compaction_runs);
            catch_up(&m.compaction_read, totals.compaction_bytes_read);
            catch_up(&m.compaction_freed, totals.compaction_bytes_freed);
            let seconds = totals.compaction_millis as f64 / 1000.0;
            let delta = seconds - m.compaction_seconds.get();
            if delta > 0.0 {
                m.compaction_seconds.inc_by(delta);
            }
        }
        let mut out = Vec::new();
        if let Err(error) = TextEncoder::new().encode(&self.registry.gather(), &mut out) {
            tracing::error!(%error, "encoding metrics");
        }
        String::from_utf8(out).unwrap_or_default()
    }
}

/// Counts one connected client until dropped.
pub(crate) struct ConnectedGuard {
    gauge: IntGauge,
}

impl Drop for ConnectedGuard {
    fn drop(&mut self) {
        self.gauge.dec();
    }
}

/// The counters `$SYS` publishes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct SysTotals {
    pub(crate) connected: u64,
    pub(crate) messages_received: u64,
    pub(crate) messages_sent: u64,
    pub(crate) bytes_received: u64,
    pub(crate) bytes_sent: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 18: a partition whose fsync failed refuses appends; operators see it in
    /// `strata_partitions_failed` and in the reasons `/ready` gives, which name the partition.
    #[test]
    fn issue18_a_failed_fsync_shows_in_metrics_and_readiness() {
        let dir = tempfile::tempdir().unwrap();
        let config = strata_log::LogConfig { flush: strata_log::FlushPolicy::Always, ..Default::default() };
        let partition = PartitionHandle::open_for_tests(dir.path(), config, 0);
        let log = partition.log_for_tests();
        let metrics = std::sync::Arc::new(Metrics::new());
        metrics.add_partition("default", false, &partition);
        assert!(metrics.storage_problems().is_empty());
        assert!(metrics.render(None, &[]).contains("strata_partitions_failed 0\n"));

        let appended = log.append(&[strata_log::Record::new(1, "a")], 0).unwrap();
        log.fail_next_fsync_for_tests();
        assert!(log.wait_durable_blocking(appended.last_offset).is_err());
        let text = metrics.render(None, &[]);
        assert!(text.contains("strata_partitions_failed 1\n"), "{text}");
        assert!(text.contains("strata_disk_full 0\n"), "{text}");
        let problems = metrics.storage_problems();
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].contains(&dir.path().display().to_string()), "{problems:?}");
    }

    #[test]
    fn counters_and_partitions_render_in_text_format() {
        let dir = tempfile::tempdir().unwrap();
        let partition = PartitionHandle::open_for_tests(dir.path(), strata_log::LogConfig::default(), 0);
        partition
            .log_for_tests()
            .append(&[strata_log::Record::new(1, "a"), strata_log::Record::new(2, "b")], 0)
            .unwrap();
        let metrics = std::sync::Arc::new(Metrics::new());
        metrics.add_partition("default", false, &partition);
        metrics.received(QoS::AtLeastOnce, 10);
        metrics.received(QoS::AtLeastOnce, 5);
        metrics.sent(QoS::AtMostOnce, 7);
        metrics.publish_acked(Duration::from_micros(300));
        {
            let _connected = metrics.connection_opened();
            assert_eq!(metrics.sys_totals().connected, 1);
        }
        let consumer = |name: &str, kind, lag| GroupInfo {
            name: name.into(),
            kind,
            filter: "#".into(),
            members: 0,
            partitions: vec![crate::consumers::GroupPartitionInfo {
                stream: "default".into(),
                partition: 0,
                committed: 10 - lag,
                log_end: 10,
                high_watermark: 10,
                lag,
            }],
        };
        let consumers = [
            consumer("client-1", crate::consumers::GroupKind::Session, 1),
            consumer("client-2", crate::consumers::GroupKind::Session, 4),
            consumer("workers", crate::consumers::GroupKind::Share, 2),
        ];
        let text = metrics.render(Some(MaintenanceTotals { compaction_runs: 3, ..Default::default() }), &consumers);
        let share_labels = "{group=\"workers\",kind=\"share\",partition=\"0\",stream=\"default\"}";
        assert!(text.contains(&format!("strata_consumer_lag_messages{share_labels} 2\n")), "{text}");
        assert!(text.contains(&format!("strata_consumer_committed_offset{share_labels} 8\n")), "{text}");
        // Issue 22: sessions are summed and maxed per partition; no client id is a label.
        assert!(text.contains("strata_session_lag_messages{partition=\"0\",stream=\"default\"} 5\n"), "{text}");
        assert!(text.contains("strata_session_lag_max_messages{partition=\"0\",stream=\"default\"} 4\n"), "{text}");
        assert!(!text.contains("client-1") && !text.contains("client-2"), "{text}");
        assert!(text.contains("strata_messages_received_total{qos=\"1\"} 2\n"), "{text}");
        assert!(text.contains("strata_received_payload_bytes_total{qos=\"1\"} 15\n"), "{text}");
        assert!(text.contains("strata_messages_sent_total{qos=\"0\"} 1\n"), "{text}");
        assert!(text.contains("strata_connections 0\n") && text.contains("strata_connections_total 1\n"), "{text}");
        assert!(text.contains("strata_publish_ack_latency_seconds_count 1\n"), "{text}");
        assert!(text.contains("strata_compaction_runs_total 3\n"), "{text}");
        let labels = "{internal=\"false\",partition=\"0\",stream=\"default\"}";
        assert!(text.contains(&format!("strata_partition_log_end_offset{labels} 2\n")), "{text}");
        assert!(text.contains(&format!("strata_partition_segments{labels} 1\n")), "{text}");
        assert_eq!(
            metrics.sys_totals(),
            SysTotals { connected: 0, messages_received: 2, messages_sent: 1, bytes_received: 15, bytes_sent: 7 }
        );
    }
}
