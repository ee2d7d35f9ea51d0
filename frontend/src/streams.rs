//! Streams: their configuration, their open partitions and the routing of a PUBLISH to one
//! partition. A PUBLISH goes to the first stream whose topic filters match its topic, else to
//! the built-in stream `default`; within the stream, the partition is
//! `fnv1a_32(key) % partitions`, where the key is the value of the stream's `compaction_key`
//! user property when configured and present, else the topic. So all messages of one topic
//! (or one key) land in one partition, in order.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use arc_swap::ArcSwap;
use strata_compaction::{CleanupPolicy, CompactionConfig, Maintenance, PartitionSettings};
use strata_log::{LogConfig, RetentionPolicy};
use tokio::sync::watch;

use crate::cluster::ClusterNode;
use crate::codec::ByteString;
use crate::error::BrokerError;
use crate::interest::AppendSignal;
use crate::partition::{AckPolicy, PartitionHandle};
use crate::record::USER_PREFIX;

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

/// Most partitions a stream may have.
pub const MAX_PARTITIONS: u32 = 1024;

/// One stream as configured (`[[streams]]` in the config file).
#[derive(Debug, Clone, PartialEq)]
pub struct StreamConfig {
    /// The stream's name: its directory under the data directory, and `$stream/<name>`.
    pub name: String,
    /// The MQTT topic filters it captures, in order. Empty: it captures nothing by topic
    /// (only `default` gets what no stream captures).
    pub topics: Vec<String>,
    /// Number of partitions (1 to [`MAX_PARTITIONS`]).
    pub partitions: u32,
    /// Segment, index, flush and compression settings of each partition.
    pub log: LogConfig,
    /// Delete, compact, or both.
    pub cleanup_policy: CleanupPolicy,
    /// Retention limits (applied when the policy deletes).
    pub retention: RetentionPolicy,
    /// Cleaner settings (applied when the policy compacts); its `key_header` is
    /// `u.<compaction_key>` when a compaction key is set.
    pub compaction: CompactionConfig,
    /// The MQTT 5 user property whose value is a message's key (for partitioning and
    /// compaction); the topic when unset or absent.
    pub compaction_key: Option<String>,
    /// How its partitions are replicated and when a publish is acknowledged. A node without
    /// `[cluster]` keeps these (they survive in `$streams`) but they change nothing there: a
    /// single node is its own quorum.
    pub replication: ReplicationSettings,
}

/// Most replicas a partition may have (a Raft group of more voters gains little and costs a
/// round trip to each).
pub const MAX_REPLICATION_FACTOR: u32 = 7;
/// The shortest and longest `ack_timeout`.
pub const ACK_TIMEOUT_RANGE: std::ops::RangeInclusive<Duration> = Duration::from_millis(1)..=Duration::from_secs(600);
/// `ack_timeout` when not configured.
pub const DEFAULT_ACK_TIMEOUT: Duration = Duration::from_secs(5);

/// A stream's replication: how many replicas each partition has, where they are, and when a
/// publish is acknowledged (issue 20). Checked by `stream_settings::validate`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicationSettings {
    /// Replicas per partition, the leader included; None: min(3, cluster size). 1..=7
    /// (`stream_settings::validate`; whether the cluster has that many nodes is checked
    /// where the cluster is known).
    pub factor: Option<u32>,
    /// After which write a publish is acknowledged.
    pub acks: Acks,
    /// In-sync replicas a publish needs; None: 2 when the factor is >= 3, else 1. 1..=7, at
    /// most the factor when both are set.
    pub min_insync_replicas: Option<u32>,
    /// How long a publish waits for its acknowledgement. Default 5 s; 1 ms ..= 10 min.
    pub ack_timeout: Duration,
    /// Manual placement: per partition, its replica node ids, the first the preferred
    /// leader. Empty: placed round-robin by the cluster (the metadata leader fills it in at
    /// create time). When set: exactly one entry per partition, each with `factor` distinct
    /// ids > 0 (with no factor, all of one length).
    pub assignment: Vec<Vec<u64>>,
}

/// When a publish to a replicated partition is acknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Acks {
    /// Once a quorum of the replicas holds it (Raft commit): no acknowledged message is lost
    /// while a quorum survives.
    #[default]
    Quorum,
    /// Once the leader appended it locally: faster, but a failover may lose messages that
    /// were acknowledged and not yet replicated.
    Leader,
}

impl Default for ReplicationSettings {
    fn default() -> ReplicationSettings {
        ReplicationSettings {
            factor: None,
            acks: Acks::Quorum,
            min_insync_replicas: None,
            ack_timeout: DEFAULT_ACK_TIMEOUT,
            assignment: Vec::new(),
        }
    }
}

impl ReplicationSettings {
    /// The replicas per partition on a cluster of `cluster_size` nodes: the factor when set,
    /// else the length of the manual assignment's lists, else min(3, cluster size) (at
    /// least 1).
    pub fn factor_for(&self, cluster_size: u32) -> u32 {
        self.factor
            .or_else(|| self.assignment.first().map(|replicas| replicas.len() as u32))
            .unwrap_or_else(|| cluster_size.clamp(1, 3))
    }

    /// The in-sync replicas a publish needs on a cluster of `cluster_size` nodes: the
    /// setting when given, else 2 when the factor is 3 or more, else 1.
    pub fn min_insync_for(&self, cluster_size: u32) -> u32 {
        self.min_insync_replicas.unwrap_or(if self.factor_for(cluster_size) >= 3 { 2 } else { 1 })
    }
}

impl StreamConfig {
    /// A stream with one partition, default log settings and the `delete` policy.
    pub fn new(name: impl Into<String>) -> StreamConfig {
        StreamConfig {
            name: name.into(),
            topics: Vec::new(),
            partitions: 1,
            log: LogConfig::default(),
            cleanup_policy: CleanupPolicy::Delete,
            retention: RetentionPolicy::default(),
            compaction: CompactionConfig::default(),
            compaction_key: None,
            replication: ReplicationSettings::default(),
        }
    }
}

/// Whether `name` can be a stream name: non-empty, no `/`, no wildcards, not starting with
/// `$` (internal streams), not `.` or `..`.
pub fn valid_stream_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 255
        && !name.contains(['/', '+', '#', '\0', '\\'])
        && !name.starts_with('$')
        && name != "."
        && name != ".."
}

/// FNV-1a, 32 bits: the partitioning hash. Stable across versions and platforms, because
/// partition placement must not move when the broker is upgraded.
pub fn fnv1a_32(bytes: &[u8]) -> u32 {
    let mut hash: u32 = 0x811c_9dc5;
    for &byte in bytes {
        hash ^= u32::from(byte);
        hash = hash.wrapping_mul(0x0100_0193);
    }
    hash
}

/// The partition of a message with `key` in a stream of `partitions` partitions.
pub fn partition_for(key: &[u8], partitions: u32) -> u32 {
    fnv1a_32(key) % partitions.max(1)
}

/// Where a publish goes ([`Streams::route`]). Today every partition is written here; a
/// replicated partition whose leader is another node will be a second variant, so that
/// every caller of `route` has to say what it does then.
pub(crate) enum Routed {
    /// This node appends to the partition.
    Local(Arc<PartitionHandle>),
}

/// One open stream.
pub(crate) struct Stream {
    pub(crate) name: String,
    pub(crate) topics: Vec<String>,
    pub(crate) compaction_key: Option<String>,
    /// Delete, compact, or both (the admin API reports it and refuses to compact a stream
    /// whose policy does not compact).
    pub(crate) cleanup_policy: CleanupPolicy,
    pub(crate) partitions: Vec<Arc<PartitionHandle>>,
    /// The definition it runs with (what `$streams` holds for it once created or altered).
    pub(crate) config: StreamConfig,
    /// When it was first created at runtime (unix ms); 0 for a stream of the config file.
    pub(crate) created_at_ms: i64,
}

impl Stream {
    /// The key of a message, if the stream has a compaction key and the message carries it.
    pub(crate) fn key_of<'a>(&self, user_properties: &'a [(ByteString, ByteString)]) -> Option<&'a ByteString> {
        let name = self.compaction_key.as_deref()?;
        user_properties.iter().find(|(n, _)| &n[..] == name).map(|(_, v)| v)
    }

    /// The stream running `config` on `partitions`.
    pub(crate) fn new(config: StreamConfig, partitions: Vec<Arc<PartitionHandle>>, created_at_ms: i64) -> Stream {
        Stream {
            name: config.name.clone(),
            topics: config.topics.clone(),
            compaction_key: config.compaction_key.clone(),
            cleanup_policy: config.cleanup_policy,
            partitions,
            config,
            created_at_ms,
        }
    }
}

/// The streams at one moment: routing reads one of these without locking, and the admin API
/// swaps in a new one to create, alter or delete a stream.
pub(crate) struct Registry {
    streams: Vec<Arc<Stream>>,
    default_index: usize,
    generation: u64,
}

impl Registry {
    /// Every stream, in order (configuration order, then creation order).
    pub(crate) fn all(&self) -> &[Arc<Stream>] {
        &self.streams
    }

    /// The stream named `name`.
    pub(crate) fn get(&self, name: &str) -> Option<&Arc<Stream>> {
        self.streams.iter().find(|s| s.name == name)
    }

    /// Bumped by every swap: a reader that saw another value looks for new partitions.
    pub(crate) fn generation(&self) -> u64 {
        self.generation
    }
}

/// A handle on the live streams that a long-lived task keeps (a consumer group's), to look
/// for streams created, altered or deleted since it last looked.
#[derive(Clone)]
pub(crate) struct LiveStreams(Arc<ArcSwap<Registry>>);

impl LiveStreams {
    /// The live streams, now.
    pub(crate) fn registry(&self) -> Arc<Registry> {
        self.0.load_full()
    }

    /// The registry's generation, read without taking a reference.
    pub(crate) fn generation(&self) -> u64 {
        self.0.load().generation
    }
}

/// Every open stream, swappable at runtime.
pub(crate) struct Streams {
    current: Arc<ArcSwap<Registry>>,
    /// Raised after any partition's high watermark moves, and after every swap: readers of
    /// everything wait on its watch, connections on their plain subscriptions' topics.
    appended: Arc<AppendSignal>,
    next_id: AtomicU32,
    data_dir: PathBuf,
    writer_queue: usize,
    /// In a cluster, every partition is a Raft group's replica (issue 20).
    cluster: Option<Arc<ClusterNode>>,
}

/// What maintenance applies to the partitions of `config`.
pub(crate) fn partition_settings(config: &StreamConfig) -> PartitionSettings {
    let mut compaction = config.compaction.clone();
    compaction.segment_bytes = config.log.segment_bytes;
    if let Some(key) = &config.compaction_key {
        compaction.key_header = Some(format!("{USER_PREFIX}{key}").into_bytes().into());
    }
    PartitionSettings { cleanup_policy: config.cleanup_policy, retention: config.retention, compaction }
}

impl Streams {
    /// Opens every partition of `configs` (plus `default` if not among them) under `data_dir`,
    /// starts their writers and registers them with `maintenance`. `created_at` gives the
    /// creation time of the streams created at runtime.
    pub(crate) async fn open(
        configs: &[(StreamConfig, i64)],
        data_dir: &Path,
        writer_queue: usize,
        maintenance: &Maintenance,
        cluster: Option<Arc<ClusterNode>>,
    ) -> Result<Streams, BrokerError> {
        let mut configs = configs.to_vec();
        if !configs.iter().any(|(c, _)| c.name == DEFAULT_STREAM) {
            configs.push((StreamConfig::new(DEFAULT_STREAM), 0));
        }
        let appended = Arc::new(AppendSignal::new());
        let empty = Registry { streams: Vec::new(), default_index: 0, generation: 0 };
        let streams = Streams {
            current: Arc::new(ArcSwap::from_pointee(empty)),
            appended,
            next_id: AtomicU32::new(0),
            data_dir: data_dir.to_path_buf(),
            writer_queue,
            cluster,
        };
        let mut opened = Vec::with_capacity(configs.len());
        for (config, created_at_ms) in configs {
            let partitions = streams.open_partitions(&config, 0..config.partitions.max(1), maintenance).await?;
            opened.push(Arc::new(Stream::new(config, partitions, created_at_ms)));
        }
        streams.replace(opened);
        Ok(streams)
    }

    /// Opens partitions `numbers` of `config`, starts their writers and registers them with
    /// `maintenance`.
    pub(crate) async fn open_partitions(
        &self,
        config: &StreamConfig,
        numbers: std::ops::Range<u32>,
        maintenance: &Maintenance,
    ) -> Result<Vec<Arc<PartitionHandle>>, BrokerError> {
        let mut partitions = Vec::with_capacity(numbers.len());
        for number in numbers {
            let id = self.next_id.fetch_add(1, Ordering::Relaxed);
            let dir = self.partition_dir(&config.name, number);
            let announce = Some((Arc::clone(&self.appended), id));
            let partition = match &self.cluster {
                None => {
                    let thread = format!("writer-{}-{number}", config.name);
                    PartitionHandle::open(dir, config.log.clone(), number, self.writer_queue, thread, announce).await?
                }
                Some(cluster) => {
                    let group = strata_replication::GroupId::new(config.name.clone(), number);
                    let replicas = replicas_of(cluster, config, number);
                    // Only a replica starts the group; another node waits to be added as a
                    // learner by the leader.
                    let voters = replicas.contains(&cluster.node_id()).then(|| cluster.addresses(&replicas));
                    let policy = ack_policy(config, replicas.len());
                    PartitionHandle::open_replicated(
                        cluster.endpoint(),
                        group,
                        dir,
                        config.log.clone(),
                        number,
                        self.writer_queue,
                        policy,
                        voters,
                        announce,
                    )
                    .await?
                }
            };
            partition.register_maintenance(
                maintenance,
                format!("{}/{number}", config.name),
                partition_settings(config),
            )?;
            partitions.push(partition);
        }
        Ok(partitions)
    }

    /// The cluster this node belongs to, if any.
    pub(crate) fn cluster(&self) -> Option<&Arc<ClusterNode>> {
        self.cluster.as_ref()
    }

    /// `<data_dir>/<stream>/`.
    pub(crate) fn stream_dir(&self, name: &str) -> PathBuf {
        self.data_dir.join(name)
    }

    fn partition_dir(&self, name: &str, number: u32) -> PathBuf {
        self.stream_dir(name).join(number.to_string())
    }

    /// Makes `streams` the live set. Callers serialise swaps (the admin API holds a lock).
    pub(crate) fn replace(&self, streams: Vec<Arc<Stream>>) {
        let default_index = streams.iter().position(|s| s.name == DEFAULT_STREAM).unwrap_or(0);
        let generation = self.current.load().generation + 1;
        self.current.store(Arc::new(Registry { streams, default_index, generation }));
        // Connections waiting for data look again, and find the new partitions.
        self.appended.streams_changed();
    }

    /// The live streams, now.
    pub(crate) fn registry(&self) -> Arc<Registry> {
        self.current.load_full()
    }

    /// The registry's generation, read without taking a reference.
    pub(crate) fn generation(&self) -> u64 {
        self.current.load().generation
    }

    /// A handle on the live streams that follows every swap.
    pub(crate) fn live(&self) -> LiveStreams {
        LiveStreams(Arc::clone(&self.current))
    }

    /// The partition a message on `topic` with these user properties goes to: the first
    /// stream whose filters match, else `default`. Lock-free.
    pub(crate) fn route(&self, topic: &str, user_properties: &[(ByteString, ByteString)]) -> Routed {
        let registry = self.current.load();
        let stream = registry
            .streams
            .iter()
            .find(|s| s.topics.iter().any(|filter| crate::topic::matches(filter, topic)))
            .unwrap_or(&registry.streams[registry.default_index]);
        let key = stream.key_of(user_properties).map_or(topic.as_bytes(), |k| k.as_bytes());
        Routed::Local(Arc::clone(&stream.partitions[partition_for(key, stream.partitions.len() as u32) as usize]))
    }

    /// The stream named `name`.
    pub(crate) fn get(&self, name: &str) -> Option<Arc<Stream>> {
        self.current.load().get(name).cloned()
    }

    /// Every stream, in order.
    pub(crate) fn all(&self) -> Vec<Arc<Stream>> {
        self.current.load().streams.clone()
    }

    /// A receiver woken after any partition's high watermark moved (or the streams changed).
    pub(crate) fn appended(&self) -> watch::Receiver<u64> {
        self.appended.subscribe_everything()
    }

    /// The append signal, where connections register their plain subscriptions' filters.
    pub(crate) fn append_signal(&self) -> Arc<AppendSignal> {
        Arc::clone(&self.appended)
    }

    /// Each partition's id and high watermark, now.
    pub(crate) fn high_watermarks(&self) -> Vec<(u32, u64)> {
        let registry = self.current.load();
        registry.streams.iter().flat_map(|s| s.partitions.iter().map(|p| (p.id, p.committed()))).collect()
    }

    /// Every partition, for closing.
    pub(crate) fn partitions(&self) -> Vec<Arc<PartitionHandle>> {
        self.all().iter().flat_map(|s| s.partitions.iter().map(Arc::clone)).collect()
    }
}

/// The replicas of partition `number` of `config`: its stream's assignment when it has
/// one (the metadata group's definitions always do), else the round-robin placement.
pub(crate) fn replicas_of(cluster: &ClusterNode, config: &StreamConfig, number: u32) -> Vec<u64> {
    if let Some(replicas) = config.replication.assignment.get(number as usize) {
        return replicas.clone();
    }
    let nodes: std::collections::BTreeSet<u64> = cluster.peers().keys().copied().collect();
    let factor = config.replication.factor_for(nodes.len() as u32) as usize;
    let mut placed = crate::cluster::placement(fnv1a_32(config.name.as_bytes()), number + 1, factor, &nodes);
    placed.pop().unwrap_or_default()
}

/// How publishes to a partition of `config` with `replicas` replicas are acknowledged: its
/// `ack_timeout`, and its `min_insync_replicas` (never more than the replicas).
pub(crate) fn ack_policy(config: &StreamConfig, replicas: usize) -> AckPolicy {
    let min_in_sync = config.replication.min_insync_for(replicas as u32) as usize;
    AckPolicy { timeout: config.replication.ack_timeout, min_in_sync: min_in_sync.clamp(1, replicas.max(1)) }
}

/// Whether `dir`, a stream directory with no definition in `$streams`, is what a crash
/// between creating a stream's partitions and recording it leaves: numbered partition
/// directories whose segments hold no batch (empty, or only reserved zeros). Anything else,
/// such as records or a file this broker does not write there, means it may be data someone
/// wants. Blocks (reads the segments).
pub(crate) fn holds_no_records(dir: &Path) -> Result<bool, strata_log::LogError> {
    let listing = std::fs::read_dir(dir).map_err(|source| strata_log::LogError::Io {
        path: dir.to_owned(),
        action: "listing",
        source,
    })?;
    for entry in listing {
        let entry =
            entry.map_err(|source| strata_log::LogError::Io { path: dir.to_owned(), action: "listing", source })?;
        let numbered = entry.file_name().to_str().is_some_and(|name| name.parse::<u32>().is_ok());
        if !numbered || !entry.path().is_dir() {
            return Ok(false);
        }
        let report = strata_log::verify_partition(&entry.path(), &mut |_| {})?;
        if report.batches > 0 || report.bytes > report.reserved_bytes || !report.problems.is_empty() {
            return Ok(false);
        }
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_partitioning_hash_is_stable() {
        // FNV-1a 32 reference values: placement must never change between versions.
        assert_eq!(fnv1a_32(b""), 0x811c_9dc5);
        assert_eq!(fnv1a_32(b"a"), 0xe40c_292c);
        assert_eq!(fnv1a_32(b"foobar"), 0xbf9c_f968);
        assert_eq!(partition_for(b"foobar", 1), 0);
        assert!(partition_for(b"sensor/1", 4) < 4);
    }

    #[test]
    fn replication_defaults_follow_the_cluster_size() {
        let defaults = ReplicationSettings::default();
        assert_eq!((defaults.acks, defaults.ack_timeout), (Acks::Quorum, Duration::from_secs(5)));
        assert_eq!(StreamConfig::new("s").replication, defaults);
        // (cluster size, factor, min in-sync) with nothing set.
        for (nodes, factor, insync) in [(0, 1, 1), (1, 1, 1), (2, 2, 1), (3, 3, 2), (5, 3, 2)] {
            assert_eq!((defaults.factor_for(nodes), defaults.min_insync_for(nodes)), (factor, insync), "{nodes} nodes");
        }
        let set =
            ReplicationSettings { factor: Some(5), min_insync_replicas: Some(4), ..ReplicationSettings::default() };
        assert_eq!((set.factor_for(3), set.min_insync_for(3)), (5, 4));
        let placed = ReplicationSettings { assignment: vec![vec![2, 1], vec![1, 2]], ..ReplicationSettings::default() };
        assert_eq!((placed.factor_for(5), placed.min_insync_for(5)), (2, 1));
    }

    #[test]
    fn stream_names() {
        assert!(valid_stream_name("orders"));
        assert!(valid_stream_name("orders-eu.v2"));
        for bad in ["", "a/b", "$retained", "+", "x#", ".", ".."] {
            assert!(!valid_stream_name(bad), "{bad:?}");
        }
    }
}
