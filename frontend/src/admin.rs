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
            Ok(partitions) => self.persist(&config, created_at_ms).await.map(|()| partitions),
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
        stream_settings::apply_settings(&mut config, &change.settings)?;
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
