//! What the admin API (`strata serve --grpc`) reads and runs on a live broker: streams and
//! their partitions' offsets and sizes; creating, altering and deleting streams (kept in the
//! internal compacted stream `$streams`, so they survive a restart); consumer groups and
//! persistent sessions with their committed offsets and lag, and resetting those offsets;
//! compaction or retention on demand. Plain Rust types; the gRPC mapping lives in the binary,
//! so this crate needs no tonic.

use std::collections::HashMap;
use std::sync::Arc;

use strata_compaction::Maintenance;

use crate::StreamConfig;
pub use crate::consumers::{GroupInfo, GroupKind, GroupPartitionInfo};
use crate::partition::PartitionHandle;
use crate::shared::{Shared, lock, now_ms};
use crate::stream_settings::{self, SettingError};
use crate::streams::Stream;

/// A handle to a running broker's admin operations ([`crate::Broker::admin`]).
#[derive(Clone)]
pub struct Admin {
    pub(crate) shared: Arc<Shared>,
}

/// Why an admin operation failed.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// No stream of that name.
    #[error("unknown stream {0:?}")]
    UnknownStream(String),
    /// No consumer group or persistent session of that name.
    #[error("unknown group {0:?} (neither a $share group nor a persistent session)")]
    UnknownGroup(String),
    /// A stream of that name exists already.
    #[error("stream {0:?} already exists")]
    StreamExists(String),
    /// A setting, topic filter, partition count or name is not valid; the error names it.
    #[error("{0}")]
    Invalid(#[from] SettingError),
    /// The operation cannot be done in the current state (the message says why and what to
    /// do).
    #[error("{0}")]
    Refused(String),
    /// Compaction asked of a stream whose cleanup policy does not compact.
    #[error("stream {0:?} has cleanup_policy \"delete\"; only a compacted stream can be compacted")]
    NotCompacted(String),
    /// The broker is shutting down.
    #[error("the broker is shutting down")]
    ShuttingDown,
    /// The operation itself failed.
    #[error("{0}")]
    Failed(String),
}

/// One stream as the admin API shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct StreamInfo {
    /// The stream's name.
    pub name: String,
    /// The topic filters it captures.
    pub topics: Vec<String>,
    /// `delete`, `compact` or `compact,delete`.
    pub cleanup_policy: &'static str,
    /// Its partitions, in order.
    pub partitions: Vec<PartitionInfo>,
    /// Every setting, by name (`stream_settings::settings_of`).
    pub settings: Vec<(String, String)>,
}

/// One partition's offsets and size, read now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartitionInfo {
    /// The partition number.
    pub partition: u32,
    /// First offset still stored.
    pub log_start: u64,
    /// Next offset to be assigned.
    pub log_end: u64,
    /// Readers see offsets below this.
    pub high_watermark: u64,
    /// Compaction has cleaned everything below this.
    pub cleaned_up_to: u64,
    /// Bytes of the segment files.
    pub size_bytes: u64,
    /// Segments.
    pub segment_count: u64,
}

/// What one compaction on demand did to one partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartitionCompaction {
    /// The partition number.
    pub partition: u32,
    /// Cleaning passes run (0: nothing was dirty enough).
    pub passes: u32,
    /// Bytes read.
    pub bytes_read: u64,
    /// Bytes freed.
    pub bytes_freed: u64,
    /// Everything below this offset is now cleaned.
    pub cleaned_up_to: u64,
}

/// Where an offset reset moves a consumer, per partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResetTarget {
    /// The first offset still stored.
    Earliest,
    /// The high watermark: skip everything stored.
    Latest,
    /// This offset, clamped to what is stored.
    Offset(u64),
    /// The first record at or after this time (unix ms); the high watermark if none.
    Timestamp(i64),
}

impl ResetTarget {
    fn offset_in(self, partition: &PartitionHandle) -> u64 {
        let offsets = partition.offsets();
        let (start, end) = (offsets.log_start, offsets.high_watermark);
        match self {
            ResetTarget::Earliest => start,
            ResetTarget::Latest => end,
            ResetTarget::Offset(n) => n.clamp(start, end),
            ResetTarget::Timestamp(ms) => {
                partition.offset_for_timestamp(ms).ok().flatten().unwrap_or(end).clamp(start, end)
            }
        }
    }
}

/// Which partitions an offset reset moves: all, one stream's, or one partition.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PartitionSelector {
    /// Only this stream.
    pub stream: Option<String>,
    /// Only this partition (of `stream`).
    pub partition: Option<u32>,
}

impl PartitionSelector {
    fn picks(&self, stream: &str, partition: u32) -> bool {
        self.stream.as_deref().is_none_or(|s| s == stream) && self.partition.is_none_or(|p| p == partition)
    }
}

/// What `alter` changes; `None` and empty leave things as they are.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StreamChange {
    /// A larger partition count.
    pub partitions: Option<u32>,
    /// The new topic filters (replacing the old ones).
    pub topics: Option<Vec<String>>,
    /// Settings to change, by name.
    pub settings: Vec<(String, String)>,
}

/// What `alter` did.
#[derive(Debug, Clone, PartialEq)]
pub struct AlterOutcome {
    /// The stream as it is now.
    pub stream: StreamInfo,
    /// Changed settings that the open partitions keep until the next start (segment and
    /// flush settings: see `stream_settings::RESTART_KEYS`); partitions added now use them.
    pub at_restart: Vec<String>,
}

fn stream_info(stream: &Stream) -> StreamInfo {
    let partitions = stream
        .partitions
        .iter()
        .map(|p| {
            let figures = p.figures();
            let offsets = figures.offsets;
            PartitionInfo {
                partition: p.number,
                log_start: offsets.log_start,
                log_end: offsets.log_end,
                high_watermark: offsets.high_watermark,
                cleaned_up_to: offsets.cleaned_up_to,
                size_bytes: figures.size_bytes,
                segment_count: figures.segment_count,
            }
        })
        .collect();
    StreamInfo {
        name: stream.name.clone(),
        topics: stream.topics.clone(),
        cleanup_policy: stream_settings::policy_name(stream.cleanup_policy),
        partitions,
        settings: stream_settings::settings_of(&stream.config),
    }
}

/// Runs blocking file work off the async workers.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Result<T, AdminError> {
    tokio::task::spawn_blocking(f).await.map_err(|e| AdminError::Failed(format!("admin task failed: {e}")))
}

impl Admin {
    /// Every stream (not the internal `$` ones), in order. Reading sizes lists segment
    /// files: call it off the async workers.
    pub fn list_streams(&self) -> Vec<StreamInfo> {
        self.shared.streams.all().iter().map(|s| stream_info(s)).collect()
    }

    /// The stream `name`.
    pub fn describe_stream(&self, name: &str) -> Result<StreamInfo, AdminError> {
        self.shared.streams.get(name).map(|s| stream_info(&s)).ok_or_else(|| AdminError::UnknownStream(name.to_owned()))
    }

    fn maintenance(&self) -> Result<Arc<Maintenance>, AdminError> {
        let guard = lock(&self.shared.maintenance);
        guard.clone().ok_or(AdminError::ShuttingDown)
    }

    /// Runs one compaction on every partition of `name` now (each only if the cleaner's
    /// planner finds it dirty enough). Blocks while it runs: call it off the async workers.
    pub fn compact_stream(&self, name: &str) -> Result<Vec<PartitionCompaction>, AdminError> {
        let stream = self.shared.streams.get(name).ok_or_else(|| AdminError::UnknownStream(name.to_owned()))?;
        if !stream.cleanup_policy.compacts() {
            return Err(AdminError::NotCompacted(name.to_owned()));
        }
        let maintenance = self.maintenance()?;
        let mut out = Vec::with_capacity(stream.partitions.len());
        for partition in &stream.partitions {
            let outcome = maintenance
                .compact_now(&format!("{}/{}", stream.name, partition.number))
                .map_err(|e| AdminError::Failed(format!("compacting {}/{}: {e}", stream.name, partition.number)))?;
            out.push(PartitionCompaction {
                partition: partition.number,
                passes: outcome.passes,
                bytes_read: outcome.bytes_read,
                bytes_freed: outcome.bytes_freed(),
                cleaned_up_to: outcome.cleaned_up_to,
            });
        }
        Ok(out)
    }

    /// Applies retention now to every partition of stream `name` (if its policy deletes).
    /// Returns segments and bytes deleted. Blocks: call it off the async workers.
    pub fn enforce_retention(&self, name: &str) -> Result<(u64, u64), AdminError> {
        if self.shared.streams.get(name).is_none() {
            return Err(AdminError::UnknownStream(name.to_owned()));
        }
        // Partitions are registered with maintenance as `<stream>/<number>`.
        let prefix = format!("{name}/");
        let on_stream = |partition: &str| partition.strip_prefix(&prefix).is_some_and(|n| n.parse::<u32>().is_ok());
        Ok(self.maintenance()?.enforce_retention_now_on(on_stream))
    }

    /// Writes the definition of `config` to `$streams`, durably.
    async fn persist(&self, config: &StreamConfig, created_at_ms: i64) -> Result<(), AdminError> {
        self.shared
            .definitions
            .persist(config, created_at_ms)
            .await
            .map_err(|e| AdminError::Failed(format!("writing {}: {e}", crate::STREAMS_STREAM)))
    }

    /// Creates the stream `name` with `partitions` partitions capturing `topics`, starting
    /// from the node's `[log]` settings with `settings` applied. It is kept in `$streams`
    /// before it takes publishes. Nothing is created when anything is invalid.
    pub async fn create_stream(
        &self,
        name: &str,
        partitions: u32,
        topics: Vec<String>,
        settings: &[(String, String)],
    ) -> Result<StreamInfo, AdminError> {
        if !crate::streams::valid_stream_name(name) {
            return Err(SettingError {
                key: "name".into(),
                value: Some(name.to_owned()),
                reason: "must be 1-255 bytes without '/', '+', '#', '\\', not starting with '$', not . or ..".into(),
            }
            .into());
        }
        let mut config = self.shared.config.stream_defaults.clone();
        config.name = name.to_owned();
        config.partitions = stream_settings::validate_partitions(u64::from(partitions))?;
        stream_settings::validate_topics(&topics)?;
        config.topics = topics;
        stream_settings::apply_settings(&mut config, settings)?;
        if let Some(cluster) = self.shared.streams.cluster() {
            crate::metadata::place(cluster, &mut config)?;
        }

        let _serialised = self.shared.admin_lock.lock().await;
        if self.shared.streams.get(name).is_some() {
            return Err(AdminError::StreamExists(name.to_owned()));
        }
        let dir = self.shared.streams.stream_dir(name);
        if dir.exists() {
            // A crash between opening the partitions and recording the stream leaves its
            // directory with no record in it; that is safe to clear. Records are not.
            let checked = dir.clone();
            let leftover = blocking(move || crate::streams::holds_no_records(&checked)).await?.map_err(|e| {
                AdminError::Failed(format!("checking {} for records before creating {name:?}: {e}", dir.display()))
            })?;
            if !leftover {
                return Err(AdminError::Refused(format!(
                    "{} holds data but no stream {name:?} is defined (a stream deleted by hand, or copied in?); \
                     move or remove it first",
                    dir.display()
                )));
            }
            let removed = dir.clone();
            blocking(move || std::fs::remove_dir_all(removed)).await?.map_err(|e| {
                AdminError::Failed(format!(
                    "removing {}, left without records by an earlier create: {e}",
                    dir.display()
                ))
            })?;
            tracing::warn!(stream = name, dir = %dir.display(), "removed a stream directory without records, left by an interrupted create");
        }
        let maintenance = self.maintenance()?;
        let opened = self
            .shared
            .streams
            .open_partitions(&config, 0..config.partitions, &maintenance)
            .await
            .map_err(|e| AdminError::Failed(format!("opening the partitions of {name:?}: {e}")));
        let created_at_ms = now_ms();
        let persisted = match opened {
            Ok(partitions) => match self.persist(&config, created_at_ms).await {
                Ok(()) => Ok(partitions),
                Err(error) => {
                    // In a cluster the replicas opened here must stop before their directory goes.
                    for partition in &partitions {
                        partition.stop_replication().await;
                    }
                    Err(error)
                }
            },
            Err(error) => Err(error),
        };
        let partitions = match persisted {
            Ok(partitions) => partitions,
            Err(error) => {
                // Leave nothing behind: no registration, no directory.
                for number in 0..config.partitions {
                    maintenance.unregister(&format!("{name}/{number}"));
                }
                let _ = blocking(move || std::fs::remove_dir_all(dir)).await;
                return Err(error);
            }
        };
        for partition in &partitions {
            self.shared.metrics.add_partition(name, false, partition);
        }
        let stream = Arc::new(Stream::new(config, partitions, created_at_ms));
        let mut all = self.shared.streams.all();
        all.push(Arc::clone(&stream));
        self.shared.streams.replace(all);
        tracing::info!(stream = name, "stream created");
        Ok(stream_info(&stream))
    }

    /// The cluster's nodes and every partition's replication (issue 20). Refused on a node
    /// without `[cluster]`.
    pub async fn cluster_status(&self) -> Result<crate::cluster_status::ClusterStatus, AdminError> {
        use crate::cluster_status::{ClusterStatus, NodeStatus};
        let Some(cluster) = self.shared.streams.cluster() else {
            return Err(AdminError::Refused("this node runs alone: its config has no [cluster] section".into()));
        };
        let nodes = cluster.peers().iter().map(|(id, addr)| NodeStatus { node_id: *id, addr: addr.clone() }).collect();
        let mut partitions = Vec::new();
        let mut all: Vec<(String, Arc<PartitionHandle>)> = vec![
            (crate::STREAMS_STREAM.to_owned(), Arc::clone(self.shared.definitions.partition())),
            (crate::RETAINED_STREAM.to_owned(), Arc::clone(self.shared.retained.partition())),
        ];
        for stream in self.shared.streams.all() {
            for partition in &stream.partitions {
                all.push((stream.name.clone(), Arc::clone(partition)));
            }
        }
        for (stream, partition) in all {
            let Some(replica) = partition.replica() else { continue };
            partitions.push(crate::cluster::partition_status(cluster, &stream, partition.number, replica).await);
        }
        Ok(ClusterStatus { node_id: cluster.node_id(), nodes, partitions })
    }

    /// Whether every partition this node replicates (or follows as a learner) has a leader
    /// (`/ready`): always true on a node without `[cluster]`.
    pub fn partitions_have_leaders(&self) -> bool {
        let Some(cluster) = self.shared.streams.cluster() else { return true };
        // A leader cut off from its followers keeps calling itself leader until it hears of a
        // newer term; one without a majority in sync counts as none.
        let cut_off: std::collections::HashSet<strata_replication::GroupId> = cluster
            .endpoint()
            .figures()
            .into_iter()
            .filter(|figures| figures.is_leader && figures.in_sync * 2 <= figures.replicas)
            .map(|figures| figures.group)
            .collect();
        let internal =
            [self.shared.definitions.partition(), self.shared.retained.partition()].into_iter().map(Arc::clone);
        internal
            .chain(self.shared.streams.partitions())
            .filter_map(|partition| {
                partition.replica().map(|replica| replica.leader().is_some() && !cut_off.contains(replica.group()))
            })
            .all(|has_leader| has_leader)
    }

    /// Changes the stream `name`: topics and routing, retention and compaction settings and
    /// a larger partition count apply at once; segment and flush settings apply to partitions
    /// opened from now on (see [`AlterOutcome::at_restart`]). Kept in `$streams` first.
    pub async fn alter_stream(&self, name: &str, change: StreamChange) -> Result<AlterOutcome, AdminError> {
        let _serialised = self.shared.admin_lock.lock().await;
        let stream = self.shared.streams.get(name).ok_or_else(|| AdminError::UnknownStream(name.to_owned()))?;
        let mut config = stream.config.clone();
        if let Some(topics) = change.topics {
            stream_settings::validate_topics(&topics)?;
            config.topics = topics;
        }
        if let Some(partitions) = change.partitions {
            config.partitions = stream_settings::validate_partitions(u64::from(partitions))?;
            if config.partitions < stream.config.partitions {
                return Err(AdminError::Refused(format!(
                    "partitions = {partitions}: stream {name:?} has {}; partitions can only be added",
                    stream.config.partitions
                )));
            }
        }
        // In a cluster, added partitions get replica sets before the settings are checked
        // (an assignment must list every partition).
        let cluster = self.shared.streams.cluster();
        let auto_placed = change.settings.iter().all(|(key, _)| key != "replica_assignment");
        if let Some(cluster) = cluster.filter(|_| auto_placed) {
            crate::metadata::place(cluster, &mut config)?;
        }
        stream_settings::apply_settings(&mut config, &change.settings)?;
        if let Some(cluster) = cluster {
            crate::metadata::place(cluster, &mut config)?;
        }
        stream_settings::check_alter(&stream.config, &config)?;
        let before: HashMap<String, String> = stream_settings::settings_of(&stream.config).into_iter().collect();
        let after: HashMap<String, String> = stream_settings::settings_of(&config).into_iter().collect();
        let at_restart: Vec<String> = stream_settings::RESTART_KEYS
            .iter()
            .filter(|key| before.get(**key) != after.get(**key))
            .map(|key| (*key).to_owned())
            .collect();

        let maintenance = self.maintenance()?;
        let current = stream.partitions.len() as u32;
        let added = self
            .shared
            .streams
            .open_partitions(&config, current..config.partitions, &maintenance)
            .await
            .map_err(|e| AdminError::Failed(format!("adding partitions to {name:?}: {e}")))?;
        if let Err(error) = self.persist(&config, stream.created_at_ms).await {
            for partition in &added {
                maintenance.unregister(&format!("{name}/{}", partition.number));
            }
            return Err(error);
        }
        let settings = crate::streams::partition_settings(&config);
        for partition in &stream.partitions {
            maintenance
                .update_settings(&format!("{name}/{}", partition.number), settings.clone())
                .map_err(|e| AdminError::Failed(format!("applying the settings of {name:?}: {e}")))?;
        }
        for partition in &added {
            self.shared.metrics.add_partition(name, false, partition);
        }
        let partitions: Vec<Arc<PartitionHandle>> = stream.partitions.iter().cloned().chain(added).collect();
        let altered = Arc::new(Stream::new(config, partitions, stream.created_at_ms));
        let all = self
            .shared
            .streams
            .all()
            .into_iter()
            .map(|s| if s.name == name { Arc::clone(&altered) } else { s })
            .collect();
        self.shared.streams.replace(all);
        tracing::info!(stream = name, ?at_restart, "stream altered");
        Ok(AlterOutcome { stream: stream_info(&altered), at_restart })
    }

    /// Deletes the stream `name`: it stops taking publishes (they route as if it never
    /// existed), its partitions leave maintenance and close, its directory goes, and a
    /// tombstone in `$streams` forgets its definition. `default` and the internal streams
    /// cannot be deleted. Returns whether the config file still defines it (it comes back,
    /// empty, at the next start unless removed there).
    pub async fn delete_stream(&self, name: &str) -> Result<bool, AdminError> {
        if name == crate::DEFAULT_STREAM || name.starts_with('$') {
            return Err(AdminError::Refused(format!(
                "stream {name:?} cannot be deleted: `default` and the internal $ streams always exist"
            )));
        }
        let _serialised = self.shared.admin_lock.lock().await;
        let stream = self.shared.streams.get(name).ok_or_else(|| AdminError::UnknownStream(name.to_owned()))?;
        let rest = self.shared.streams.all().into_iter().filter(|s| s.name != name).collect();
        self.shared.streams.replace(rest);
        if let Ok(maintenance) = self.maintenance() {
            for partition in &stream.partitions {
                maintenance.unregister(&format!("{name}/{}", partition.number));
            }
        }
        self.shared.metrics.remove_stream(name);
        // The tombstone goes first: after a crash from here on, the next start finds the
        // stream deleted and removes what is left of its directory.
        self.shared
            .definitions
            .delete(name)
            .await
            .map_err(|e| AdminError::Failed(format!("writing {}: {e}", crate::STREAMS_STREAM)))?;
        // Disconnected sessions forget it, in memory and in `$sessions`, so that a stream
        // created again under this name is read from its start.
        self.shared.sessions.forget_stream(name).await;
        let partitions = stream.partitions.clone();
        let dir = self.shared.streams.stream_dir(name);
        for partition in &partitions {
            partition.stop_replication().await;
        }
        // Readers still holding a partition keep reading what they had mapped; appends
        // that raced the swap fail with "closed" and their publishers get an error.
        blocking(move || {
            for partition in &partitions {
                if let Err(error) = partition.close() {
                    tracing::warn!(dir = %partition.dir().display(), %error, "closing a deleted partition");
                }
            }
            std::fs::remove_dir_all(&dir).map_err(|e| AdminError::Failed(format!("removing {}: {e}", dir.display())))
        })
        .await??;
        tracing::info!(stream = name, "stream deleted");
        Ok(self.shared.config.streams.iter().any(|s| s.name == name))
    }

    /// Every `$share` group (live, or known from `$offsets`) and persistent session, by name
    /// then kind.
    pub fn list_groups(&self) -> Vec<GroupInfo> {
        self.shared.consumers()
    }

    /// The group or session `name`; `kind` settles a name that is both.
    pub fn describe_group(&self, name: &str, kind: Option<GroupKind>) -> Result<GroupInfo, AdminError> {
        let mut found: Vec<GroupInfo> = self
            .shared
            .consumers()
            .into_iter()
            .filter(|g| g.name == name && kind.is_none_or(|k| k == g.kind))
            .collect();
        match found.len() {
            0 => Err(AdminError::UnknownGroup(name.to_owned())),
            1 => Ok(found.remove(0)),
            _ => Err(AdminError::Refused(format!(
                "{name:?} is both a $share group and a persistent session; say which with --kind"
            ))),
        }
    }

    /// Moves the committed offsets of group or session `name` (in the partitions `select`
    /// picks) to `target`, durably. Refused while it has a connected member: like Kafka,
    /// offsets are reset on an inactive group. A session that reconnects then reads from
    /// the new offsets.
    pub async fn reset_offsets(
        &self,
        name: &str,
        kind: Option<GroupKind>,
        select: &PartitionSelector,
        target: ResetTarget,
    ) -> Result<GroupInfo, AdminError> {
        let _serialised = self.shared.admin_lock.lock().await;
        let registry = self.shared.streams.registry();
        if let Some(stream) = &select.stream {
            let Some(found) = registry.get(stream) else { return Err(AdminError::UnknownStream(stream.clone())) };
            if let Some(p) = select.partition
                && p as usize >= found.partitions.len()
            {
                return Err(AdminError::Invalid(SettingError {
                    key: "partition".into(),
                    value: Some(p.to_string()),
                    reason: format!("stream {stream:?} has partitions 0 to {}", found.partitions.len() - 1),
                }));
            }
        } else if select.partition.is_some() {
            return Err(AdminError::Invalid(SettingError {
                key: "partition".into(),
                value: None,
                reason: "needs a stream".into(),
            }));
        }
        let group = self.describe_group(name, kind)?;
        match group.kind {
            GroupKind::Share => self.reset_share_group(name, select, target, &registry).await?,
            GroupKind::Session => self.reset_session(name, select, target, &registry).await?,
        }
        self.describe_group(name, Some(group.kind))
    }

    async fn reset_share_group(
        &self,
        name: &str,
        select: &PartitionSelector,
        target: ResetTarget,
        registry: &crate::streams::Registry,
    ) -> Result<(), AdminError> {
        if let Some(group) = self.shared.groups.live(name) {
            group
                .seek(|stream, partition| select.picks(stream, partition), |partition| target.offset_in(partition))
                .map_err(|members| {
                    AdminError::Refused(format!(
                        "group {name:?} has {members} connected member(s); offsets can only be reset while it has none"
                    ))
                })?;
            group.commit(true).await;
            return Ok(());
        }
        // Not recreated since the start: the offsets it will start from are those kept in
        // `$offsets`.
        let mut offsets = Vec::new();
        for stream in registry.all() {
            for partition in stream.partitions.iter().filter(|p| select.picks(&stream.name, p.number)) {
                let key = crate::groups::offsets_key(name, &stream.name, partition.number);
                offsets.push((key, target.offset_in(partition)));
            }
        }
        self.shared.groups.reset_restored(name, offsets).await.map_err(|error| match error {
            Some(error) => AdminError::Failed(format!("writing {}: {error}", crate::OFFSETS_STREAM)),
            None => AdminError::Refused(format!("group {name:?} was just recreated; try again")),
        })
    }

    async fn reset_session(
        &self,
        client_id: &str,
        select: &PartitionSelector,
        target: ResetTarget,
        registry: &crate::streams::Registry,
    ) -> Result<(), AdminError> {
        let in_use = || {
            AdminError::Refused(format!(
                "session {client_id:?} has a connected client; offsets can only be reset while it is disconnected"
            ))
        };
        if self.shared.clients.is_connected(client_id) {
            return Err(in_use());
        }
        // Not parked while connected: a connection takes its session out while it runs.
        let reset = |state: &mut crate::session_state::SessionState| {
            for stream in registry.all() {
                for partition in stream.partitions.iter().filter(|p| select.picks(&stream.name, p.number)) {
                    let offset = target.offset_in(partition);
                    // The plain subscriptions' reader; `$stream` replays keep their own positions.
                    let position = state.positions.iter_mut().find(|p| {
                        p.subscription.is_none() && p.stream == stream.name && p.partition == partition.number
                    });
                    match position {
                        Some(position) => {
                            // Everything from the new offset goes out as new: nothing counts
                            // as sent before (messages still in flight there are dropped).
                            position.committed = offset;
                            position.read_up_to = 0;
                        }
                        None => state.positions.push(crate::session_state::PartitionPosition {
                            stream: stream.name.clone(),
                            partition: partition.number,
                            committed: offset,
                            read_up_to: 0,
                            subscription: None,
                        }),
                    }
                }
            }
            Some(Some(state.clone()))
        };
        if !self.shared.sessions.update_parked(client_id, reset).await {
            return Err(in_use());
        }
        Ok(())
    }
}
// ---------------------------------------------------------------------------------------
// Reads for the operator's dashboard (`/` on the HTTP endpoint, issue 23): the broker's
// figures now, a partition's segments as retention and the cleaner see them, and a page of a
// stream read the way a `$stream` replay reads it. Pure reads; they change nothing.

/// This node's figures now: the dashboard's overview.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Overview {
    /// Connected clients.
    pub connections: u64,
    /// PUBLISH messages received since the start.
    pub messages_received: u64,
    /// PUBLISH messages sent since the start.
    pub messages_sent: u64,
    /// Payload bytes received since the start.
    pub bytes_received: u64,
    /// Payload bytes sent since the start.
    pub bytes_sent: u64,
    /// Streams (not the internal `$` ones).
    pub streams: u32,
    /// Their partitions.
    pub partitions: u32,
    /// Bytes of every partition's segment files, the internal streams' included.
    pub disk_bytes: u64,
    /// Why publishes are refused now, one line per partition (empty when healthy).
    pub storage_problems: Vec<String>,
}

/// One segment of a partition, as the dashboard draws it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentInfo {
    /// Its base offset (its file name).
    pub base_offset: u64,
    /// One past the last offset it may hold.
    pub next_offset: u64,
    /// Bytes of its `.log` file.
    pub size_bytes: u64,
    /// Newest record timestamp (unix ms); `None` when empty.
    pub max_timestamp: Option<i64>,
    /// The segment appends go to.
    pub active: bool,
    /// The limit for which the next retention pass deletes it, if it does (with the stream's
    /// settings and the clock now).
    pub retention: Option<strata_log::RetentionReason>,
    /// Wholly below the partition's cleaned-up-to point: the cleaner has compacted it.
    pub cleaned: bool,
}

/// A partition's segments, oldest first, with its offsets.
#[derive(Debug, Clone, PartialEq)]
pub struct SegmentMap {
    /// The stream.
    pub stream: String,
    /// The stream's cleanup policy (`delete`, `compact` or `compact,delete`).
    pub cleanup_policy: &'static str,
    /// The partition's offsets and size.
    pub partition: PartitionInfo,
    /// Its segments, oldest first; the last one is active.
    pub segments: Vec<SegmentInfo>,
}

/// One stored message as the dashboard's Browse page shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrowsedMessage {
    /// The partition.
    pub partition: u32,
    /// Its offset there.
    pub offset: u64,
    /// When it was stored (unix ms).
    pub timestamp: i64,
    /// Its MQTT topic.
    pub topic: String,
    /// Its key: the stream's `compaction_key` user property, as `$stream` replays give it
    /// in `stream-key`; else the record's key, if any.
    pub key: Option<bytes::Bytes>,
    /// The QoS it was published with (0, 1 or 2).
    pub qos: u8,
    /// Whether it was published retained.
    pub retain: bool,
    /// Its payload.
    pub payload: bytes::Bytes,
}

/// One page of a stream read from a starting point.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrowsePage {
    /// The messages, oldest first (by time, then partition and offset).
    pub messages: Vec<BrowsedMessage>,
    /// Per partition read: the offset to read from next (after the last message here).
    pub next: Vec<(u32, u64)>,
}

/// Most records one browse returns.
pub const MAX_BROWSE_RECORDS: usize = 1000;

impl Admin {
    /// This node's figures now. Reading sizes lists segment files: call it off the async
    /// workers.
    pub fn overview(&self) -> Overview {
        let totals = self.shared.metrics.sys_totals();
        let streams = self.shared.streams.all();
        Overview {
            connections: totals.connected,
            messages_received: totals.messages_received,
            messages_sent: totals.messages_sent,
            bytes_received: totals.bytes_received,
            bytes_sent: totals.bytes_sent,
            streams: streams.len() as u32,
            partitions: streams.iter().map(|s| s.partitions.len() as u32).sum(),
            disk_bytes: self.shared.metrics.disk_bytes(),
            storage_problems: self.shared.metrics.storage_problems(),
        }
    }

    /// The segments of `stream`/`partition`, with what the next retention pass would delete
    /// (planned by the same `plan_retention` the maintenance threads run) and what the
    /// cleaner has compacted. Lists segment files: call it off the async workers.
    pub fn segment_map(&self, stream: &str, partition: u32) -> Result<SegmentMap, AdminError> {
        let found = self.shared.streams.get(stream).ok_or_else(|| AdminError::UnknownStream(stream.to_owned()))?;
        let info = stream_info(&found);
        let (Some(open), Some(offsets)) =
            (found.partitions.get(partition as usize), info.partitions.get(partition as usize).copied())
        else {
            return Err(AdminError::Invalid(SettingError {
                key: "partition".into(),
                value: Some(partition.to_string()),
                reason: format!("stream {stream:?} has partitions 0 to {}", found.partitions.len().saturating_sub(1)),
            }));
        };
        let summaries = open.segment_summaries();
        let condemned = if found.cleanup_policy.deletes() {
            let high_watermark = open.committed();
            strata_log::plan_retention(&summaries, &found.config.retention, now_ms(), high_watermark).delete
        } else {
            Vec::new()
        };
        let compacts = found.cleanup_policy.compacts();
        let last = summaries.len().saturating_sub(1);
        let segments = summaries
            .iter()
            .enumerate()
            .map(|(i, s)| SegmentInfo {
                base_offset: s.base_offset,
                next_offset: s.next_offset,
                size_bytes: s.size_bytes,
                max_timestamp: (s.max_timestamp != i64::MIN).then_some(s.max_timestamp),
                active: i == last,
                retention: condemned.iter().find(|d| d.base_offset == s.base_offset).map(|d| d.reason),
                cleaned: compacts && s.next_offset <= offsets.cleaned_up_to && s.next_offset > s.base_offset,
            })
            .collect();
        Ok(SegmentMap { stream: info.name, cleanup_policy: info.cleanup_policy, partition: offsets, segments })
    }

    /// Reads `stream` (one partition, or all) from `from`, as a `$stream` replay starting
    /// there would (the same resolution of the start, refused for the same reasons, and the
    /// same decoding of records into messages), up to `max_records` messages (at most
    /// [`MAX_BROWSE_RECORDS`]). Reads files: call it off the async workers.
    pub fn browse(
        &self,
        stream: &str,
        partition: Option<u32>,
        from: crate::replay::OffsetSpec,
        max_records: usize,
    ) -> Result<BrowsePage, AdminError> {
        let found = self.shared.streams.get(stream).ok_or_else(|| AdminError::UnknownStream(stream.to_owned()))?;
        let request =
            crate::replay::ReplayRequest { stream: stream.to_owned(), filter: "#".to_owned(), offset: from, partition };
        let starts =
            crate::replay::resolve(&self.shared.streams, &request, &[]).map_err(|(_, why)| AdminError::Refused(why))?;
        let max_records = max_records.clamp(1, MAX_BROWSE_RECORDS);
        let mut messages = Vec::new();
        for (open, start) in &starts {
            let mut offset = *start;
            let mut taken = 0;
            // Each read returns at least one batch while any is visible: bounded by the count.
            for _ in 0..max_records {
                if taken >= max_records || offset >= open.committed() {
                    break;
                }
                let fetch = open.read(offset, 256 * 1024).map_err(|e| {
                    AdminError::Failed(format!("reading {stream:?} partition {} at offset {offset}: {e}", open.number))
                })?;
                let records = fetch.records(offset).map_err(|e| {
                    AdminError::Failed(format!("decoding {stream:?} partition {} at offset {offset}: {e}", open.number))
                })?;
                let Some(last) = records.last().map(|r| r.offset) else { break };
                for record in records {
                    if taken >= max_records {
                        break;
                    }
                    let (timestamp, record_key) = (record.timestamp, record.key.clone());
                    // Records that are not MQTT messages are skipped, as a replay skips them.
                    let Ok(message) = crate::record::from_record(record) else { continue };
                    let key =
                        found.key_of(&message.properties.user_properties).map(|k| k.as_bytes().clone()).or(record_key);
                    messages.push(BrowsedMessage {
                        partition: open.number,
                        offset: message.offset,
                        timestamp,
                        topic: message.topic.to_string(),
                        key,
                        qos: message.qos as u8,
                        retain: message.retain,
                        payload: message.payload,
                    });
                    taken += 1;
                }
                offset = last + 1;
            }
        }
        messages.sort_by_key(|m| (m.timestamp, m.partition, m.offset));
        messages.truncate(max_records);
        let next = starts
            .iter()
            .map(|(open, start)| {
                let after = messages.iter().filter(|m| m.partition == open.number).map(|m| m.offset + 1).max();
                (open.number, after.unwrap_or(*start))
            })
            .collect();
        Ok(BrowsePage { messages, next })
    }
}
