//! The writes of a replicated partition (issue 20): the same queue as a local partition's
//! writer (`writer.rs`), drained by a task that proposes each batch to the partition's Raft
//! group, wherever its leader is, and tells each publisher its offset once a quorum has
//! committed it. Raft appends to the log (`strata-replication`); this module never does.
//!
//! Readers are woken by a second task that follows the committed offset: it reads the
//! records the commit made visible and announces them in offset order, on the leader and on
//! followers alike, so a subscriber on any node hears of a publish made on any node.
//!
//! Order: one batch is proposed at a time per partition, so the records of one connection
//! keep their order in the log even when the leader moves between two batches.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use strata_log::{Log, Record, StoredRecord};
use strata_replication::{Cluster, GroupId, ReplicatedPartition, ReplicationError};
use tokio::sync::mpsc;

use super::writer::{AppendError, AppendRequest, Reserved, WriterStopped};
use crate::interest::AppendSignal;

/// Most records proposed as one batch.
const MAX_BATCH_RECORDS: usize = 4096;
/// A batch stops growing past this many bytes of whole records.
const MAX_BATCH_BYTES: usize = 4 << 20;

/// How a partition's publishes are acknowledged (the stream's replication settings).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct AckPolicy {
    /// How long a publish may wait for its commit, retries on a new leader included.
    pub(crate) timeout: Duration,
    /// Fewer replicas in sync than this refuses publishes at once.
    pub(crate) min_in_sync: usize,
}

impl Default for AckPolicy {
    fn default() -> Self {
        AckPolicy { timeout: Duration::from_secs(5), min_in_sync: 1 }
    }
}

/// The queue of a replicated partition and the tasks behind it.
pub(crate) struct ReplicatedWriter {
    tx: mpsc::Sender<AppendRequest>,
    /// Records sent and not yet taken by the proposing task (for [`Reserved`]).
    queued: Arc<AtomicUsize>,
    policy: Arc<Mutex<AckPolicy>>,
    partition: Arc<ReplicatedPartition>,
    announcer: Option<tokio::task::AbortHandle>,
}

impl Drop for ReplicatedWriter {
    fn drop(&mut self) {
        if let Some(announcer) = &self.announcer {
            announcer.abort();
        }
    }
}

impl ReplicatedWriter {
    /// Starts proposing what is queued to `partition`'s group, and, with `announce`,
    /// announcing committed records to readers.
    pub(crate) fn start(
        cluster: Cluster,
        partition: Arc<ReplicatedPartition>,
        log: Arc<Log>,
        capacity: usize,
        policy: AckPolicy,
        announce: Option<(Arc<AppendSignal>, u32)>,
    ) -> ReplicatedWriter {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        let queued = Arc::new(AtomicUsize::new(0));
        let policy = Arc::new(Mutex::new(policy));
        let group = partition.group().clone();
        tokio::spawn(propose_queued(cluster, group, rx, Arc::clone(&queued), Arc::clone(&policy)));
        let announcer = announce.map(|(signal, id)| {
            let committed = partition.watch_committed();
            tokio::spawn(announce_commits(log, signal, id, committed)).abort_handle()
        });
        ReplicatedWriter { tx, queued, policy, partition, announcer }
    }

    /// Queues `request`; waits while the queue is full. Cancel-safe.
    pub(crate) async fn send(&self, request: AppendRequest) -> Result<(), WriterStopped> {
        let permit = self.tx.reserve().await.map_err(|_| WriterStopped)?;
        self.queued.fetch_add(1, Ordering::AcqRel);
        permit.send(request);
        Ok(())
    }

    /// Holds a place in the queue.
    pub(crate) async fn reserve(&self) -> Result<Reserved<'_>, WriterStopped> {
        let permit = self.tx.reserve().await.map_err(|_| WriterStopped)?;
        Ok(Reserved::new(permit, &self.queued))
    }

    /// Changes how publishes are acknowledged from the next batch on.
    pub(crate) fn set_policy(&self, policy: AckPolicy) {
        *self.policy.lock().unwrap_or_else(|p| p.into_inner()) = policy;
    }

    /// The Raft group's replica on this node.
    pub(crate) fn partition(&self) -> &Arc<ReplicatedPartition> {
        &self.partition
    }
}

/// What a publisher hears when its batch was not committed.
fn append_error(group: &GroupId, error: &ReplicationError) -> AppendError {
    let mut refused = AppendError::failed(format!("{group}: {error}"));
    refused.too_few_replicas = matches!(error, ReplicationError::NotEnoughReplicas { .. });
    refused
}

/// Takes whatever is queued as one batch, proposes it, and answers its publishers; one
/// batch at a time, until the queue closes.
async fn propose_queued(
    cluster: Cluster,
    group: GroupId,
    mut rx: mpsc::Receiver<AppendRequest>,
    queued: Arc<AtomicUsize>,
    policy: Arc<Mutex<AckPolicy>>,
) {
    let mut records = Vec::new();
    let mut waiting = Vec::new();
    while let Some(first) = rx.recv().await {
        let mut bytes = 0;
        let mut next = Some(first);
        while let Some(request) = next {
            bytes += request.record.encoded_len();
            records.push(request.record);
            waiting.push(request.durable);
            next = if records.len() < MAX_BATCH_RECORDS && bytes < MAX_BATCH_BYTES { rx.try_recv().ok() } else { None };
        }
        queued.fetch_sub(records.len(), Ordering::AcqRel);
        let policy = *policy.lock().unwrap_or_else(|p| p.into_inner());
        let outcome = super::propose_anywhere(&cluster, &group, std::mem::take(&mut records), policy).await;
        match outcome {
            Ok(offsets) => {
                for (durable, offset) in waiting.drain(..).zip(offsets) {
                    if let Some(durable) = durable {
                        let _ = durable.send(Ok(offset));
                    }
                }
            }
            Err(error) => {
                tracing::warn!(%group, %error, records = waiting.len(), "a batch was not committed");
                let refused = append_error(&group, &error);
                for durable in waiting.drain(..).flatten() {
                    let _ = durable.send(Err(refused.clone()));
                }
            }
        }
    }
}

/// Announces every record committed from now on to the readers, in offset order: reads what
/// each move of the committed offset made visible.
async fn announce_commits(
    log: Arc<Log>,
    signal: Arc<AppendSignal>,
    id: u32,
    mut committed: tokio::sync::watch::Receiver<u64>,
) {
    let mut next = *committed.borrow_and_update();
    while committed.changed().await.is_ok() {
        let high_watermark = *committed.borrow_and_update();
        next = next.max(log.offsets().log_start);
        while next < high_watermark {
            let fetch = match log.read(next, 1 << 20) {
                Ok(fetch) => fetch,
                Err(error) => {
                    tracing::warn!(dir = %log.dir().display(), offset = next, %error, "reading committed records to announce");
                    break;
                }
            };
            let Some(after) = fetch.next_offset() else { break };
            match fetch.records(next) {
                Ok(stored) => announce_runs(&signal, id, stored),
                Err(error) => {
                    tracing::warn!(dir = %log.dir().display(), offset = next, %error, "decoding committed records to announce")
                }
            }
            next = after;
        }
        // `next` stays at the first record not announced yet. A batch the committed offset
        // only partly covers is not readable yet (a follower writes what one AppendEntries
        // brought as one batch, and may learn the commit of half of it): its records are
        // announced once the whole batch is committed, never skipped, since a connection
        // reads its plain subscriptions from the offsets it is told of.
    }
}

/// Announces `stored` as runs of consecutive offsets (control batches leave gaps).
fn announce_runs(signal: &AppendSignal, id: u32, stored: Vec<StoredRecord>) {
    let mut run: Vec<Record> = Vec::new();
    let mut base = 0;
    for record in stored {
        if !run.is_empty() && base + run.len() as u64 != record.offset {
            signal.appended(id, base, &run);
            run.clear();
        }
        if run.is_empty() {
            base = record.offset;
        }
        run.push(Record { timestamp: record.timestamp, key: record.key, value: record.value, headers: record.headers });
    }
    if !run.is_empty() {
        signal.appended(id, base, &run);
    }
}
