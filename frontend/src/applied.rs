//! State rebuilt by applying committed records (issue 19). An internal stream's in-memory
//! state is a small state machine ([`Apply`]) fed with the stream's committed records in
//! offset order: at start from the log start ([`Applied::rebuild`]), then from the tail as
//! records commit ([`Applied::follow`]). The code that writes a record does not touch the
//! state: [`Applied::propose`] appends, waits until the record is committed, then applies
//! everything committed up to it, so the writer reads its own write. A node that never
//! wrote the records (a Raft follower, or one that just became leader) holds the same state.

use std::sync::{Arc, Mutex, MutexGuard};

use strata_log::{Record, StoredRecord};

use crate::partition::{AppendResult, LogError, PartitionHandle};

/// How long a proposal waits for its record to be committed on this node's replica once a
/// quorum elsewhere committed it.
const LOCAL_COMMIT_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// A state machine over an internal stream's records.
pub(crate) trait Apply: Send + 'static {
    /// Applies the next committed record (offsets only grow from one call to the next).
    fn apply(&mut self, record: StoredRecord);
}

/// A state machine and where it stands in its partition.
struct Position<S> {
    state: S,
    /// Every committed record below this offset has been applied.
    next: u64,
}

/// An internal stream's partition and the state applied from it.
pub(crate) struct Applied<S> {
    partition: Arc<PartitionHandle>,
    /// Locked briefly (never across an await); applying holds it, so readers of the state
    /// see whole records applied.
    position: Mutex<Position<S>>,
}

impl<S: Apply> Applied<S> {
    /// Applies every committed record of `partition` to `state`, from the log start.
    /// Blocking (it reads the whole stream): call it off the async workers.
    pub(crate) fn rebuild(partition: Arc<PartitionHandle>, mut state: S) -> Result<Applied<S>, LogError> {
        let next = partition.replay(|record| state.apply(record))?;
        Ok(Applied { partition, position: Mutex::new(Position { state, next }) })
    }

    /// The partition the state is applied from.
    pub(crate) fn partition(&self) -> &Arc<PartitionHandle> {
        &self.partition
    }

    /// Reads the state, with every record applied so far.
    pub(crate) fn read<T>(&self, read: impl FnOnce(&S) -> T) -> T {
        read(&self.lock().state)
    }

    fn lock(&self) -> MutexGuard<'_, Position<S>> {
        self.position.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Applies what was committed since the last call.
    pub(crate) fn catch_up(&self) -> Result<(), LogError> {
        let mut position = self.lock();
        let Position { state, next } = &mut *position;
        *next = self.partition.replay_from(*next, |record| state.apply(record))?;
        Ok(())
    }

    /// Appends `record`, waits until it is committed, then applies everything committed up
    /// to it: once this returns `Ok`, the state shows the record. Its offset.
    pub(crate) async fn propose(&self, record: Record) -> AppendResult {
        let offset = self.partition.propose(record).await?;
        // Replicated, the record may be committed by a quorum this replica is not part of
        // yet: wait, bounded, until it is committed here too.
        if self.partition.replica().is_some() {
            let mut committed = self.partition.watch_committed();
            if tokio::time::timeout(LOCAL_COMMIT_WAIT, committed.wait_for(|c| *c > offset)).await.is_err() {
                tracing::warn!(partition = %self.partition.dir().display(), offset, "committed elsewhere, not yet here");
            }
        }
        if let Err(error) = self.catch_up() {
            tracing::warn!(partition = %self.partition.dir().display(), %error, "applying committed records failed");
        }
        Ok(offset)
    }

    /// Applies records as they commit, until the task is dropped: what another writer (a
    /// leader elsewhere) commits reaches the state without a proposal of ours.
    pub(crate) async fn follow(self: Arc<Self>) {
        let mut committed = self.partition.watch_committed();
        while committed.changed().await.is_ok() {
            if let Err(error) = self.catch_up() {
                tracing::warn!(partition = %self.partition.dir().display(), %error, "applying committed records failed");
            }
        }
    }
}
