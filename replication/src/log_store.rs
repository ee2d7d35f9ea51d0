//! The Raft log of a partition is the partition's own [`strata_log::Log`]: entry index =
//! record offset. Every call into the log goes through [`PartitionLog`], which keeps what
//! replication asks of the log (follower appends at an offset, control batches, reads past
//! the high watermark, reset to a snapshot) in this file. [`LogStore`] is openraft's
//! `RaftLogStorage` over it.

use std::{
    fmt::Debug,
    ops::{Bound, RangeBounds},
    path::Path,
    sync::{Arc, Mutex, MutexGuard},
};

use strata_log::{Batch, FlushPolicy, InstallStep, Log, LogError, Record, SnapshotInfo, StoredRecord};
use tokio::sync::watch;

use crate::{
    TypeConfig,
    codec::{self, LogWrite},
    types::{Entry, LogId, StorageError, Vote, log_id},
};

/// What the partition log refused.
#[derive(Debug, thiserror::Error)]
pub(crate) enum LogStoreError {
    #[error(transparent)]
    Log(#[from] LogError),
    #[error("{dir}: {what}")]
    Refused { dir: String, what: String },
    #[error("{dir}: offset {offset}: {source}")]
    BadControlBatch { dir: String, offset: u64, source: codec::CodecError },
}

/// The calls replication makes into a partition log.
pub(crate) trait PartitionLog: Send + Sync + 'static {
    /// The term and offset of the last entry, if any.
    fn last_entry(&self) -> Option<(u64, u64)>;
    /// The term and offset of the last entry removed from the start of the log, if any.
    fn last_purged(&self) -> Result<Option<(u64, u64)>, LogStoreError>;
    /// Appends user records at exactly `base`, which must be the log end.
    fn append_records_at(&self, base: u64, term: u64, records: &[Record]) -> Result<(), LogStoreError>;
    /// Appends a control batch (one offset, no user record) at exactly `offset`.
    fn append_control_at(&self, offset: u64, term: u64, payload: &[u8]) -> Result<(), LogStoreError>;
    /// Whatever it takes for everything appended so far to be durable under the flush policy.
    async fn wait_durable(&self, last_offset: u64) -> Result<(), LogStoreError>;
    /// The stored batches holding offsets in `from..to`, committed or not, in order.
    fn read_batches(&self, from: u64, to: u64) -> Result<Vec<LogWrite>, LogStoreError>;
    /// The term of the entry at `offset`, if the log holds it.
    fn term_at(&self, offset: u64) -> Result<Option<u64>, LogStoreError>;
    /// Removes every entry from `offset` on (Raft conflict resolution; never committed ones).
    fn truncate_from(&self, offset: u64) -> Result<(), LogStoreError>;
    /// Makes the log start after `offset` (of `term`), dropping everything: the install of a
    /// snapshot that carries no segment files.
    fn reset_after(&self, offset: u64, term: u64) -> Result<(), LogStoreError>;
    /// Replaces the log by the snapshot segments staged in its staging directory.
    fn install_segments(&self, info: &SnapshotInfo) -> Result<(), LogStoreError>;
    /// Lets retention and compaction remove entries below `limit` (Raft purged them).
    fn limit_maintenance(&self, limit: u64);
    /// Raises the high watermark to `end` (Raft committed everything below it).
    fn commit_to(&self, end: u64) -> Result<(), LogStoreError>;
    /// The high watermark.
    fn high_watermark(&self) -> u64;
    /// A receiver of high-watermark changes.
    fn watch_high_watermark(&self) -> watch::Receiver<u64>;
    /// The persisted vote.
    fn vote(&self) -> strata_log::Vote;
    /// Persists a vote (durably).
    fn save_vote(&self, vote: strata_log::Vote) -> Result<(), LogStoreError>;
    /// The partition directory.
    fn dir(&self) -> &Path;
}

/// [`PartitionLog`] over `strata_log::Log`, opened with
/// [`strata_log::HighWatermarkMode::SetByCaller`]. Blank and membership entries are the log's
/// control batches, so record readers (MQTT subscribers) never see them.
pub(crate) struct StrataLog {
    log: Log,
    // Orders reads against a truncation, which may cut a batch and write its kept prefix
    // again: a read between the two would see the log shorter than it is.
    order: Mutex<()>,
    /// Makes the next install of snapshot segments stop at this step as a crash would.
    crash_install_at: Mutex<Option<InstallStep>>,
}

fn last_offset_of(write: &LogWrite) -> u64 {
    match write {
        LogWrite::Records { base, records, .. } => base + records.len() as u64 - 1,
        LogWrite::Control { offset, .. } => *offset,
    }
}

fn record_of(stored: StoredRecord) -> Record {
    Record { timestamp: stored.timestamp, key: stored.key, value: stored.value, headers: stored.headers }
}

/// A stored batch as Raft sees it.
fn write_of(batch: &Batch) -> Result<LogWrite, LogError> {
    let header = batch.header();
    if let Some(payload) = batch.control_payload()? {
        return Ok(LogWrite::Control { offset: header.base_offset, term: header.leader_term, payload });
    }
    let records = batch.records()?.map(|r| r.map(record_of)).collect::<Result<Vec<_>, _>>()?;
    Ok(LogWrite::Records { base: header.base_offset, term: header.leader_term, records })
}

impl StrataLog {
    pub(crate) fn new(log: Log) -> StrataLog {
        StrataLog { log, order: Mutex::new(()), crash_install_at: Mutex::new(None) }
    }

    /// The log, for readers.
    pub(crate) fn log(&self) -> &Log {
        &self.log
    }

    /// Makes the next install of snapshot segments stop after `step` as a crash would,
    /// leaving the log closed. For crash tests.
    pub(crate) fn crash_next_install_at(&self, step: InstallStep) {
        *self.crash_install_at.lock().unwrap_or_else(|p| p.into_inner()) = Some(step);
    }

    fn lock(&self) -> MutexGuard<'_, ()> {
        self.order.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn refused(&self, what: String) -> LogStoreError {
        LogStoreError::Refused { dir: self.log.dir().display().to_string(), what }
    }

    /// Removes everything from `base` on, `base` being a batch boundary.
    fn cut_at(&self, base: u64) -> Result<(), LogError> {
        let log_start = self.log.offsets().log_start;
        if base > log_start {
            return self.log.truncate_after(base - 1);
        }
        // `truncate_after` cannot empty the log; cutting from its start is a reset to the
        // same start, which keeps the last purged entry (none at offset 0). The caller has
        // checked that nothing at or after `base` is committed.
        let purged_term = self.log.last_purged().map_or(0, |(term, _)| term);
        self.log.reset_to(base, purged_term)
    }
}

impl PartitionLog for StrataLog {
    fn last_entry(&self) -> Option<(u64, u64)> {
        self.log.last_term_and_offset()
    }

    fn last_purged(&self) -> Result<Option<(u64, u64)>, LogStoreError> {
        Ok(self.log.last_purged())
    }

    fn append_records_at(&self, base: u64, term: u64, records: &[Record]) -> Result<(), LogStoreError> {
        let _order = self.lock();
        self.log.append_at(base, term, records)?;
        Ok(())
    }

    fn append_control_at(&self, offset: u64, term: u64, payload: &[u8]) -> Result<(), LogStoreError> {
        let _order = self.lock();
        self.log.append_control_at(offset, term, bytes::Bytes::copy_from_slice(payload))?;
        Ok(())
    }

    async fn wait_durable(&self, last_offset: u64) -> Result<(), LogStoreError> {
        if matches!(self.log.config().flush, FlushPolicy::Always) {
            self.log.wait_durable(last_offset).await?;
        }
        Ok(())
    }

    fn read_batches(&self, from: u64, to: u64) -> Result<Vec<LogWrite>, LogStoreError> {
        let _order = self.lock();
        let mut out = Vec::new();
        let mut next = from;
        while next < to {
            let fetch = self.log.read_uncommitted(next, 1 << 20)?;
            if fetch.batches.is_empty() {
                break;
            }
            for batch in &fetch.batches {
                if batch.header().base_offset >= to {
                    return Ok(out);
                }
                let write = write_of(batch)?;
                next = last_offset_of(&write) + 1;
                out.push(write);
            }
        }
        Ok(out)
    }

    fn term_at(&self, offset: u64) -> Result<Option<u64>, LogStoreError> {
        Ok(self.log.term_at(offset)?)
    }

    fn truncate_from(&self, offset: u64) -> Result<(), LogStoreError> {
        let _order = self.lock();
        let offsets = self.log.offsets();
        if offset >= offsets.log_end {
            return Ok(());
        }
        if offset < offsets.high_watermark {
            return Err(self.refused(format!("a truncation at offset {offset}, which is committed")));
        }
        // The log cuts only at batch boundaries; an entry in the middle of a batch is cut by
        // cutting the whole batch and writing its kept prefix again, with its term.
        let fetch = self.log.read_uncommitted(offset, 1)?;
        let Some(containing) = fetch.batches.first() else {
            return Err(self.refused(format!("a truncation at offset {offset}, which the log does not show")));
        };
        let base = containing.header().base_offset;
        let kept = match write_of(containing)? {
            LogWrite::Records { term, mut records, .. } if offset > base => {
                records.truncate((offset - base) as usize);
                Some((term, records))
            }
            _ => None,
        };
        self.cut_at(base)?;
        if let Some((term, records)) = kept {
            self.log.append_at(base, term, &records)?;
        }
        Ok(())
    }

    fn reset_after(&self, offset: u64, term: u64) -> Result<(), LogStoreError> {
        let _order = self.lock();
        // Raft keeps the log after a snapshot whose last entry it already holds.
        if self.log.term_at(offset)? == Some(term) {
            return Ok(());
        }
        Ok(self.log.reset_to(offset + 1, term)?)
    }

    fn install_segments(&self, info: &SnapshotInfo) -> Result<(), LogStoreError> {
        let _order = self.lock();
        let crash_at = self.crash_install_at.lock().unwrap_or_else(|p| p.into_inner()).take();
        match crash_at {
            Some(step) => self.log.install_segments_with_crash_at(info, step)?,
            None => self.log.install_segments(info)?,
        }
        Ok(())
    }

    fn limit_maintenance(&self, limit: u64) {
        self.log.limit_maintenance(limit);
    }

    fn commit_to(&self, end: u64) -> Result<(), LogStoreError> {
        if end <= self.log.offsets().high_watermark {
            return Ok(());
        }
        self.log.set_high_watermark(end)?;
        Ok(())
    }

    fn high_watermark(&self) -> u64 {
        self.log.offsets().high_watermark
    }

    fn watch_high_watermark(&self) -> watch::Receiver<u64> {
        self.log.watch_high_watermark()
    }

    fn vote(&self) -> strata_log::Vote {
        self.log.vote()
    }

    fn save_vote(&self, vote: strata_log::Vote) -> Result<(), LogStoreError> {
        Ok(self.log.save_vote(vote)?)
    }

    fn dir(&self) -> &Path {
        self.log.dir()
    }
}

/// Entries in `range` from the stored batches.
pub(crate) fn read_entries(log: &StrataLog, range: impl RangeBounds<u64>) -> Result<Vec<Entry>, LogStoreError> {
    let from = match range.start_bound() {
        Bound::Included(&s) => s,
        Bound::Excluded(&s) => s + 1,
        Bound::Unbounded => 0,
    };
    let to = match range.end_bound() {
        Bound::Included(&e) => e + 1,
        Bound::Excluded(&e) => e,
        Bound::Unbounded => log.last_entry().map_or(0, |(_, last)| last + 1),
    };
    if from >= to {
        return Ok(Vec::new());
    }
    let mut entries = Vec::new();
    for write in log.read_batches(from, to)? {
        let base = match &write {
            LogWrite::Records { base, .. } => *base,
            LogWrite::Control { offset, .. } => *offset,
        };
        let decoded = codec::entries_of_write(write).map_err(|source| LogStoreError::BadControlBatch {
            dir: log.dir().display().to_string(),
            offset: base,
            source,
        })?;
        entries.extend(decoded.into_iter().filter(|e| (from..to).contains(&e.log_id.index)));
    }
    Ok(entries)
}

fn vote_to_log(vote: &Vote) -> strata_log::Vote {
    strata_log::Vote { term: vote.leader_id.term, node: vote.leader_id.voted_for, committed: vote.committed }
}

fn vote_from_log(vote: strata_log::Vote) -> Option<Vote> {
    if vote == strata_log::Vote::default() {
        return None;
    }
    let mut out = Vote::default();
    out.leader_id.term = vote.term;
    out.leader_id.voted_for = vote.node;
    out.committed = vote.committed;
    Some(out)
}

fn io_error(e: &LogStoreError) -> std::io::Error {
    std::io::Error::other(e.to_string())
}

/// openraft's log storage over the partition log. Clones share it.
#[derive(Clone)]
pub(crate) struct LogStore {
    log: Arc<StrataLog>,
}

impl LogStore {
    pub(crate) fn new(log: Arc<StrataLog>) -> LogStore {
        LogStore { log }
    }
}

impl openraft::RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        read_entries(&self.log, range).map_err(|e| openraft::StorageIOError::read_logs(&e).into())
    }
}

impl openraft::storage::RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<openraft::LogState<TypeConfig>, StorageError> {
        let last_purged =
            self.log.last_purged().map_err(|e| StorageError::from(openraft::StorageIOError::read_logs(&e)))?;
        let last_purged_log_id = last_purged.map(|(term, offset)| log_id(term, offset));
        let last_log_id = self.log.last_entry().map(|(term, offset)| log_id(term, offset)).or(last_purged_log_id);
        Ok(openraft::LogState { last_purged_log_id, last_log_id })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), StorageError> {
        self.log.save_vote(vote_to_log(vote)).map_err(|e| openraft::StorageIOError::write_vote(&e).into())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, StorageError> {
        Ok(vote_from_log(self.log.vote()))
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: openraft::storage::LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        let mut last = None;
        let mut result = Ok(());
        for write in codec::plan_writes(entries) {
            let written = match &write {
                LogWrite::Records { base, term, records } => self.log.append_records_at(*base, *term, records),
                LogWrite::Control { offset, term, payload } => self.log.append_control_at(*offset, *term, payload),
            };
            if let Err(e) = written {
                result = Err(e);
                break;
            }
            last = Some(last_offset_of(&write));
        }
        if result.is_ok()
            && let Some(last) = last
        {
            result = self.log.wait_durable(last).await;
        }
        match result {
            Ok(()) => {
                callback.log_io_completed(Ok(()));
                Ok(())
            }
            Err(e) => {
                callback.log_io_completed(Err(io_error(&e)));
                Err(openraft::StorageIOError::write_logs(&e).into())
            }
        }
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        self.log.truncate_from(log_id.index).map_err(|e| openraft::StorageIOError::write_logs(&e).into())
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        // Retention owns deleting segments; Raft's purge is the permission to, below a
        // snapshot point. openraft purges only when no replication still reads those
        // entries, and from then on sends a snapshot to a follower that needs them, so
        // retention deleting them afterwards never leaves Raft asking for a missing batch.
        self.log.limit_maintenance(log_id.index + 1);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use openraft::EntryPayload;
    use strata_log::{HighWatermarkMode, LogConfig};

    use super::*;

    fn open(dir: &Path) -> StrataLog {
        let config = LogConfig { high_watermark: HighWatermarkMode::SetByCaller, ..LogConfig::default() };
        StrataLog::new(Log::open(dir, config).unwrap())
    }

    fn values(log: &StrataLog, from: u64, to: u64) -> Vec<(u64, u64, String)> {
        read_entries(log, from..to)
            .unwrap()
            .into_iter()
            .map(|e| {
                let value = match e.payload {
                    EntryPayload::Normal(r) => String::from_utf8(r.value.to_vec()).unwrap(),
                    EntryPayload::Blank => "blank".into(),
                    EntryPayload::Membership(_) => "membership".into(),
                };
                (e.log_id.index, e.log_id.leader_id.term, value)
            })
            .collect()
    }

    fn records(values: &[&'static str]) -> Vec<Record> {
        values.iter().map(|v| Record::new(0, *v)).collect()
    }

    #[test]
    fn a_conflicting_suffix_is_cut_inside_a_batch_and_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let log = open(dir.path());
        log.append_control_at(0, 0, b"B").unwrap();
        log.append_records_at(1, 1, &records(&["a", "b", "c", "d", "e"])).unwrap();
        log.commit_to(1).unwrap();
        // Offsets 3..6 of term 1 conflict with a new leader's term 2 from offset 3 on.
        log.truncate_from(3).unwrap();
        assert_eq!(log.last_entry(), Some((1, 2)));
        log.append_records_at(3, 2, &records(&["x", "y"])).unwrap();
        assert_eq!(
            values(&log, 0, 5),
            vec![
                (0, 0, "blank".into()),
                (1, 1, "a".into()),
                (2, 1, "b".into()),
                (3, 2, "x".into()),
                (4, 2, "y".into())
            ]
        );
        assert_eq!(log.term_at(2).unwrap(), Some(1));
        assert_eq!(log.term_at(3).unwrap(), Some(2));
        assert_eq!(log.term_at(5).unwrap(), None);
        // Committed entries are never cut.
        log.commit_to(4).unwrap();
        assert!(log.truncate_from(2).is_err());
        assert_eq!(log.last_entry(), Some((2, 4)));
        // An append that is not at the log end is refused.
        assert!(log.append_records_at(7, 2, &records(&["z"])).is_err());
    }

    #[test]
    fn uncommitted_entries_survive_a_reopen_and_stay_readable() {
        let dir = tempfile::tempdir().unwrap();
        {
            let log = open(dir.path());
            log.append_records_at(0, 1, &records(&["a", "b", "c"])).unwrap();
            log.append_records_at(3, 1, &records(&["d"])).unwrap();
            log.commit_to(2).unwrap();
            log.log().close().unwrap();
        }
        let log = open(dir.path());
        assert_eq!(log.high_watermark(), 2);
        assert_eq!(log.last_entry(), Some((1, 3)));
        assert_eq!(
            values(&log, 0, 4),
            vec![(0, 1, "a".into()), (1, 1, "b".into()), (2, 1, "c".into()), (3, 1, "d".into())]
        );
        log.commit_to(4).unwrap();
        assert_eq!(values(&log, 3, 4), vec![(3, 1, "d".into())]);
    }
    #[test]
    fn an_uncommitted_log_is_cut_from_offset_zero() {
        let dir = tempfile::tempdir().unwrap();
        let log = open(dir.path());
        log.append_records_at(0, 1, &records(&["a", "b"])).unwrap();
        log.append_control_at(2, 1, b"B").unwrap();
        log.truncate_from(0).unwrap();
        assert_eq!(log.last_entry(), None);
        assert_eq!(log.last_purged().unwrap(), None);
        assert_eq!(log.term_at(0).unwrap(), None);
        // A later leader's entries take offset 0 again.
        log.append_records_at(0, 2, &records(&["x"])).unwrap();
        assert_eq!(values(&log, 0, 1), vec![(0, 2, "x".into())]);
    }

    #[test]
    fn installing_a_snapshot_past_the_log_resets_it() {
        let dir = tempfile::tempdir().unwrap();
        {
            let log = open(dir.path());
            log.append_records_at(0, 1, &records(&["a", "b"])).unwrap();
            log.commit_to(1).unwrap();
            // A snapshot whose last entry (9, term 3) the log does not hold.
            log.reset_after(9, 3).unwrap();
            log.log().close().unwrap();
        }
        let log = open(dir.path());
        assert_eq!(log.last_entry(), None);
        assert_eq!(log.last_purged().unwrap(), Some((3, 9)));
        assert_eq!(log.term_at(9).unwrap(), Some(3));
        assert_eq!(log.high_watermark(), 10);
        assert!(values(&log, 10, 11).is_empty());
        // The next entry follows the snapshot; a term below it is refused.
        assert!(log.append_records_at(10, 2, &records(&["old"])).is_err());
        log.append_records_at(10, 3, &records(&["c"])).unwrap();
        assert_eq!(values(&log, 10, 11), vec![(10, 3, "c".into())]);
        // A snapshot whose last entry the log holds keeps the log after it.
        log.reset_after(9, 3).unwrap();
        assert_eq!(log.last_entry(), Some((3, 10)));
    }
}
