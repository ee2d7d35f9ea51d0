//! Applying the metadata group to this node (issue 20). In a cluster, `$streams` is the
//! metadata group: whichever node's admin API creates, alters or deletes a stream commits
//! the definition there first, and every node then opens, alters or closes its replicas to
//! match ([`reconcile`]), as it applies the group's records. A node that was down catches
//! up the same way when it comes back.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use crate::partition::PartitionHandle;
use crate::shared::Shared;
use crate::streams::{DEFAULT_STREAM, Stream};

/// How often each group's leader looks for nodes to add as learners.
const LEARNER_CHECK_EVERY: Duration = Duration::from_secs(1);

/// Gives every partition of `config` without a replica set one, round-robin over the
/// cluster's nodes ([`crate::cluster::placement`]), so that the definition the metadata group commits names
/// each partition's replicas. Refuses a `replication_factor` larger than the cluster, or an
/// assignment naming a node `peers` does not know.
pub(crate) fn place(
    cluster: &crate::cluster::ClusterNode,
    config: &mut crate::StreamConfig,
) -> Result<(), crate::stream_settings::SettingError> {
    let refuse = |key: &str, value: String, reason: String| crate::stream_settings::SettingError {
        key: key.to_owned(),
        value: Some(value),
        reason,
    };
    let nodes: std::collections::BTreeSet<u64> = cluster.peers().keys().copied().collect();
    let size = nodes.len() as u32;
    if let Some(factor) = config.replication.factor
        && factor > size
    {
        return Err(refuse("replication_factor", factor.to_string(), format!("the cluster has {size} nodes")));
    }
    for replicas in &config.replication.assignment {
        if let Some(unknown) = replicas.iter().find(|id| !nodes.contains(id)) {
            return Err(refuse(
                "replica_assignment",
                crate::stream_settings::assignment_text(&config.replication.assignment),
                format!("node {unknown} is not in cluster.peers"),
            ));
        }
    }
    let have = config.replication.assignment.len() as u32;
    if have < config.partitions {
        let factor = config.replication.factor_for(size) as usize;
        let placed = crate::cluster::placement(
            crate::streams::fnv1a_32(config.name.as_bytes()),
            config.partitions,
            factor,
            &nodes,
        );
        config.replication.assignment.extend(placed.into_iter().skip(have as usize));
    }
    Ok(())
}

/// Makes this node's open streams match the definitions applied from `$streams`: opens the
/// streams defined since, applies altered definitions (more partitions, new settings), and
/// closes and removes the streams deleted. Serialised with the admin API's own changes.
pub(crate) async fn reconcile(shared: &Arc<Shared>) {
    let _serialised = shared.admin_lock.lock().await;
    let Some(maintenance) = crate::shared::lock(&shared.maintenance).clone() else { return };
    let kept = shared.definitions.kept();
    let mut changed = false;
    let mut next: Vec<Arc<Stream>> = Vec::new();
    let mut removed: Vec<Arc<Stream>> = Vec::new();
    for stream in shared.streams.all() {
        match kept.get(&stream.name) {
            Some((config, _)) if *config == stream.config => next.push(stream),
            Some((config, created_at_ms)) => {
                let current = stream.partitions.len() as u32;
                let added = match shared.streams.open_partitions(config, current..config.partitions, &maintenance).await
                {
                    Ok(added) => added,
                    Err(error) => {
                        tracing::error!(stream = stream.name, %error, "opening the partitions a definition added");
                        next.push(stream);
                        continue;
                    }
                };
                let settings = crate::streams::partition_settings(config);
                for partition in &stream.partitions {
                    let name = format!("{}/{}", stream.name, partition.number);
                    if let Err(error) = maintenance.update_settings(&name, settings.clone()) {
                        tracing::warn!(partition = name, %error, "applying an altered definition");
                    }
                    let replicas = partition
                        .replica()
                        .map_or(1, |r| r.metrics().borrow().membership_config.membership().voter_ids().count());
                    partition.set_ack_policy(crate::streams::ack_policy(config, replicas));
                }
                for partition in &added {
                    shared.metrics.add_partition(&stream.name, false, partition);
                }
                let partitions: Vec<Arc<PartitionHandle>> = stream.partitions.iter().cloned().chain(added).collect();
                next.push(Arc::new(Stream::new(config.clone(), partitions, *created_at_ms)));
                changed = true;
                tracing::info!(stream = stream.name, "stream altered by the metadata group");
            }
            // `default` always exists; a configured stream is kept in `$streams` at start.
            None if stream.name == DEFAULT_STREAM => next.push(stream),
            None => {
                removed.push(stream);
                changed = true;
            }
        }
    }
    let open: HashMap<String, ()> = next.iter().map(|s| (s.name.clone(), ())).collect();
    let mut created: Vec<_> = kept.into_iter().filter(|(name, _)| !open.contains_key(name)).collect();
    created.sort_by(|(a, (_, at)), (b, (_, bt))| at.cmp(bt).then_with(|| a.cmp(b)));
    for (name, (config, created_at_ms)) in created {
        match shared.streams.open_partitions(&config, 0..config.partitions, &maintenance).await {
            Ok(partitions) => {
                for partition in &partitions {
                    shared.metrics.add_partition(&name, false, partition);
                }
                next.push(Arc::new(Stream::new(config, partitions, created_at_ms)));
                changed = true;
                tracing::info!(stream = name, "stream created by the metadata group");
            }
            Err(error) => tracing::error!(stream = name, %error, "opening a stream the metadata group defines"),
        }
    }
    if changed {
        shared.streams.replace(next);
    }
    for stream in removed {
        for partition in &stream.partitions {
            maintenance.unregister(&format!("{}/{}", stream.name, partition.number));
        }
        shared.metrics.remove_stream(&stream.name);
        shared.sessions.forget_stream(&stream.name).await;
        for partition in &stream.partitions {
            partition.stop_replication().await;
        }
        let dir = shared.streams.stream_dir(&stream.name);
        let partitions = stream.partitions.clone();
        let closed = tokio::task::spawn_blocking(move || {
            for partition in &partitions {
                if let Err(error) = partition.close() {
                    tracing::warn!(dir = %partition.dir().display(), %error, "closing a deleted partition");
                }
            }
            std::fs::remove_dir_all(&dir).map_err(|e| format!("removing {}: {e}", dir.display()))
        })
        .await;
        match closed {
            Ok(Ok(())) => tracing::info!(stream = stream.name, "stream deleted by the metadata group"),
            Ok(Err(error)) => tracing::warn!(stream = stream.name, %error, "deleting a stream"),
            Err(error) => tracing::warn!(stream = stream.name, %error, "deleting a stream"),
        }
    }
}

/// Follows the metadata group: after each commit, applies it to the definitions and this
/// node's streams. Runs until dropped.
pub(crate) async fn follow_metadata(shared: Arc<Shared>) {
    let mut committed = shared.definitions.partition().watch_committed();
    loop {
        if let Err(error) = shared.definitions.catch_up() {
            tracing::warn!(%error, "applying the metadata group");
        }
        reconcile(&shared).await;
        if committed.changed().await.is_err() {
            return;
        }
    }
}

/// Keeps the groups' memberships and leaders where the metadata group places them, once a
/// second: on every group this node leads, adds the nodes outside its replica set as
/// learners (so every node holds every partition for its own subscribers); on every group
/// whose preferred leader (its assignment's first replica) is this node and that another
/// node leads, stands for election once this replica has caught up, so leaders spread as
/// placed. Runs until dropped.
pub(crate) async fn keep_placement(shared: Arc<Shared>) {
    let Some(cluster) = shared.streams.cluster().cloned() else { return };
    let mut tick = tokio::time::interval(LEARNER_CHECK_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        // A node added to `peers` later follows the internal groups as a learner too.
        for internal in [shared.definitions.partition(), shared.retained.partition()] {
            if let Some(replica) = internal.replica() {
                cluster.add_learners(replica);
            }
        }
        for stream in shared.streams.all() {
            for partition in &stream.partitions {
                let Some(replica) = partition.replica() else { continue };
                cluster.add_learners(replica);
                let preferred =
                    stream.config.replication.assignment.get(partition.number as usize).and_then(|r| r.first());
                if preferred == Some(&cluster.node_id()) && caught_up_under_another_leader(replica) {
                    tracing::info!(group = %replica.group(), "the preferred leader stands for election");
                    if let Err(error) = replica.campaign().await {
                        tracing::debug!(group = %replica.group(), %error, "standing for election");
                    }
                }
            }
        }
    }
}

/// Whether another node leads `replica`'s group and this replica holds everything committed
/// and nothing more: it would win an election without losing anything.
fn caught_up_under_another_leader(replica: &strata_replication::ReplicatedPartition) -> bool {
    let metrics = replica.metrics().borrow().clone();
    let voter = metrics.membership_config.membership().voter_ids().any(|id| id == metrics.id);
    let log_end = metrics.last_log_index.map_or(0, |index| index + 1);
    voter
        && metrics.current_leader.is_some_and(|leader| leader != metrics.id)
        && log_end > 0
        && replica.committed() == log_end
}
