//! Consumers as the admin API and the lag metrics show them: every `$share` group (live, or
//! known only from `$offsets`) and persistent session, with its committed offset and lag
//! per partition. Plain types, and one function over what the registries hold; the caller
//! (`Shared::consumers`) takes the snapshots.

use std::collections::HashMap;
use std::sync::Arc;

use crate::groups::Group;
use crate::session_state::SessionView;
use crate::streams::Registry;

/// Whether a consumer is a `$share` group or a persistent session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum GroupKind {
    /// A consumer group of `$share/<group>/<filter>` subscribers.
    Share,
    /// A persistent session (its client id is the name): one member at most.
    Session,
}

impl GroupKind {
    /// `share` or `session`.
    pub fn as_str(self) -> &'static str {
        match self {
            GroupKind::Share => "share",
            GroupKind::Session => "session",
        }
    }
}

/// One consumer group or persistent session, read now.
#[derive(Debug, Clone, PartialEq)]
pub struct GroupInfo {
    /// The group's name, or the session's client id.
    pub name: String,
    /// A `$share` group or a session.
    pub kind: GroupKind,
    /// The topic filter(s) it consumes, comma-separated (empty when not known: a group not
    /// recreated since the restart).
    pub filter: String,
    /// Connected members (0 or 1 for a session).
    pub members: u32,
    /// Per stream partition: committed offset and lag.
    pub partitions: Vec<GroupPartitionInfo>,
}

/// A consumer's position in one partition.
#[derive(Debug, Clone, PartialEq)]
pub struct GroupPartitionInfo {
    /// The stream.
    pub stream: String,
    /// The partition number.
    pub partition: u32,
    /// The lowest offset not yet acknowledged.
    pub committed: u64,
    /// The partition's log end.
    pub log_end: u64,
    /// The partition's high watermark.
    pub high_watermark: u64,
    /// `high_watermark - committed`: offsets not yet consumed (records its filter skips
    /// count too, as offsets do).
    pub lag: u64,
}

impl GroupInfo {
    /// Sum of the partitions' lag.
    pub fn lag(&self) -> u64 {
        self.partitions.iter().map(|p| p.lag).sum()
    }
}

/// The position of `stream`/`partition` in the live streams, for a consumer at `committed`.
fn position(registry: &Registry, stream: &str, partition: u32, committed: u64) -> Option<GroupPartitionInfo> {
    let offsets = registry.get(stream)?.partitions.get(partition as usize)?.offsets();
    Some(GroupPartitionInfo {
        stream: stream.to_owned(),
        partition,
        committed,
        log_end: offsets.log_end,
        high_watermark: offsets.high_watermark,
        lag: offsets.high_watermark.saturating_sub(committed),
    })
}

/// Every `$share` group and persistent session with its positions, read now (the admin API
/// and the lag metrics).
pub(crate) fn consumers(
    registry: &Registry,
    live: &[Arc<Group>],
    restored_offsets: &HashMap<String, u64>,
    sessions: Vec<(String, SessionView)>,
    connected: &dyn Fn(&str) -> bool,
) -> Vec<GroupInfo> {
    let mut out: Vec<GroupInfo> = live
        .iter()
        .map(|group| {
            let (members, partitions) = group.snapshot();
            GroupInfo {
                name: group.name.clone(),
                kind: GroupKind::Share,
                filter: group.filter.clone(),
                members: members as u32,
                partitions: partitions
                    .into_iter()
                    .map(|(stream, partition, committed, offsets)| GroupPartitionInfo {
                        stream: stream.to_string(),
                        partition,
                        committed,
                        log_end: offsets.log_end,
                        high_watermark: offsets.high_watermark,
                        lag: offsets.high_watermark.saturating_sub(committed),
                    })
                    .collect(),
            }
        })
        .collect();
    // Groups known only from `$offsets` (not recreated since the start).
    let mut restored: HashMap<String, Vec<GroupPartitionInfo>> = HashMap::new();
    for (key, &committed) in restored_offsets {
        let Some((group, rest)) = key.split_once('/') else { continue };
        let Some((stream, partition)) = rest.rsplit_once('/') else { continue };
        let Ok(partition) = partition.parse() else { continue };
        if live.iter().any(|g| g.name == group) {
            continue;
        }
        let entry = restored.entry(group.to_owned()).or_default();
        entry.extend(position(registry, stream, partition, committed));
    }
    for (name, mut partitions) in restored {
        partitions.sort_by(|a, b| (&a.stream, a.partition).cmp(&(&b.stream, b.partition)));
        out.push(GroupInfo { name, kind: GroupKind::Share, filter: String::new(), members: 0, partitions });
    }
    for (client_id, view) in sessions {
        out.push(GroupInfo {
            members: u32::from(connected(&client_id)),
            filter: view.filters.join(","),
            kind: GroupKind::Session,
            partitions: view
                .positions
                .iter()
                .filter_map(|p| position(registry, &p.stream, p.partition, p.committed))
                .collect(),
            name: client_id,
        });
    }
    out.sort_by(|a, b| (&a.name, a.kind).cmp(&(&b.name, b.kind)));
    out
}
