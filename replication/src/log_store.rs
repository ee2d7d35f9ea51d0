//! The Raft log of a partition is the partition's own [`strata_log::Log`]: entry index =
//! record offset. Every call into the log goes through [`PartitionLog`], so adopting the log
//! API that replication needs (follower appends at an offset, control batches, reads past the
//! high watermark, reset to a snapshot) is a change to this file only. [`LogStore`] is
//! openraft's `RaftLogStorage` over it.

use std::{
    collections::BTreeMap,
    fmt::Debug,
    ops::{Bound, RangeBounds},
    path::Path,
    sync::{Arc, Mutex, MutexGuard},
};

use strata_log::{FlushPolicy, Log, LogError, Record, StoredRecord};
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
    /// Makes the log start after `offset` (of `term`), dropping everything: snapshot install.
    fn reset_after(&self, offset: u64, term: u64) -> Result<(), LogStoreError>;
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

// TEMPORARY until strata-log has control batches (seam-log): a control entry is stored as a
// one-record batch whose record carries this header, with the payload as its value. Readers
// of the log do not skip it yet.
const CONTROL_HEADER: &[u8] = b"$strata.raft.control";

/// [`PartitionLog`] over today's `strata_log::Log`, opened with
/// [`strata_log::HighWatermarkMode::SetByCaller`].
pub(crate) struct StrataLog {
    log: Log,
    // TEMPORARY until strata-log reads past the high watermark (seam-log): today's
    // `Log::read` stops at the high watermark, and a leader must send uncommitted entries to
    // its followers. So the batches not yet wholly below the high watermark are kept here,
    // keyed by base offset (loaded from the segment files at open, kept on append, dropped
    // once committed). The lock also orders reads against appends and truncations.
    uncommitted: Mutex<BTreeMap<u64, LogWrite>>,
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
fn write_of(base: u64, term: u64, records: Vec<StoredRecord>) -> LogWrite {
    if let [only] = records.as_slice()
        && let Some(header) = only.headers.iter().find(|h| &h.name[..] == CONTROL_HEADER)
    {
        return LogWrite::Control { offset: base, term, payload: header.value.clone() };
    }
    LogWrite::Records { base, term, records: records.into_iter().map(record_of).collect() }
}

impl StrataLog {
    pub(crate) fn new(log: Log) -> Result<StrataLog, LogStoreError> {
        let high_watermark = log.offsets().high_watermark;
        let mut uncommitted = BTreeMap::new();
        strata_log::dump_partition(log.dir(), high_watermark, &mut |batch| {
            let header = batch.header;
            if header.last_offset() >= high_watermark {
                uncommitted.insert(header.base_offset, write_of(header.base_offset, header.leader_term, batch.records));
            }
            true
        })?;
        Ok(StrataLog { log, uncommitted: Mutex::new(uncommitted) })
    }

    /// The log, for readers.
    pub(crate) fn log(&self) -> &Log {
        &self.log
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<u64, LogWrite>> {
        self.uncommitted.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn refused(&self, what: String) -> LogStoreError {
        LogStoreError::Refused { dir: self.log.dir().display().to_string(), what }
    }

    fn check_at_end(&self, base: u64) -> Result<(), LogStoreError> {
        let log_end = self.log.offsets().log_end;
        if base != log_end {
            return Err(self.refused(format!("an append at offset {base}, but the log ends at {log_end}")));
        }
        Ok(())
    }
}

impl PartitionLog for StrataLog {
    fn last_entry(&self) -> Option<(u64, u64)> {
        self.log.last_term_and_offset()
    }

    fn last_purged(&self) -> Result<Option<(u64, u64)>, LogStoreError> {
        // TEMPORARY until strata-log keeps the last purged entry in partition.meta (seam-log):
        // replication never purges yet, so a log that starts past 0 was cut by retention, and
        // the term of its first batch stands in for the term of the entry before it.
        let log_start = self.log.offsets().log_start;
        if log_start == 0 {
            return Ok(None);
        }
        Ok(self.term_at(log_start)?.map(|term| (term, log_start - 1)))
    }

    fn append_records_at(&self, base: u64, term: u64, records: &[Record]) -> Result<(), LogStoreError> {
        let mut uncommitted = self.lock();
        self.check_at_end(base)?;
        let appended = self.log.append(records, term)?;
        debug_assert_eq!(appended.base_offset, base);
        uncommitted.insert(base, LogWrite::Records { base, term, records: records.to_vec() });
        Ok(())
    }

    fn append_control_at(&self, offset: u64, term: u64, payload: &[u8]) -> Result<(), LogStoreError> {
        let mut uncommitted = self.lock();
        self.check_at_end(offset)?;
        // TEMPORARY until strata-log has control batches (seam-log).
        let record = Record::new(0, bytes::Bytes::new()).with_header(CONTROL_HEADER, payload.to_vec());
        self.log.append(&[record], term)?;
        uncommitted.insert(offset, LogWrite::Control { offset, term, payload: bytes::Bytes::copy_from_slice(payload) });
        Ok(())
    }

    async fn wait_durable(&self, last_offset: u64) -> Result<(), LogStoreError> {
        if matches!(self.log.config().flush, FlushPolicy::Always) {
            self.log.wait_durable(last_offset).await?;
        }
        Ok(())
    }

    fn read_batches(&self, from: u64, to: u64) -> Result<Vec<LogWrite>, LogStoreError> {
        let uncommitted = self.lock();
        let mut out = Vec::new();
        let mut next = from;
        // Committed batches from the log, as far as it shows them.
        while next < to && next < self.log.offsets().high_watermark {
            let fetch = self.log.read(next, 1 << 20)?;
            if fetch.batches.is_empty() {
                break;
            }
            for batch in &fetch.batches {
                let header = batch.header();
                if header.base_offset >= to {
                    next = to;
                    break;
                }
                let records = batch.records()?.collect::<Result<Vec<_>, _>>()?;
                out.push(write_of(header.base_offset, header.leader_term, records));
                next = header.last_offset() + 1;
            }
        }
        // The rest from the batches not yet wholly committed.
        if next < to {
            for (_, write) in uncommitted.range(..to) {
                if last_offset_of(write) >= next {
                    next = last_offset_of(write) + 1;
                    out.push(write.clone());
                }
            }
        }
        Ok(out)
    }

    fn term_at(&self, offset: u64) -> Result<Option<u64>, LogStoreError> {
        let offsets = self.log.offsets();
        if offset < offsets.log_start || offset >= offsets.log_end {
            return Ok(None);
        }
        let batches = self.read_batches(offset, offset + 1)?;
        Ok(batches.first().map(|w| match w {
            LogWrite::Records { term, .. } | LogWrite::Control { term, .. } => *term,
        }))
    }

    fn truncate_from(&self, offset: u64) -> Result<(), LogStoreError> {
        let mut uncommitted = self.lock();
        if offset >= self.log.offsets().log_end {
            return Ok(());
        }
        // Today's log cuts only at batch boundaries; an entry in the middle of a batch is cut
        // by cutting the whole batch and writing its kept prefix again, with its term.
        let containing = uncommitted.range(..=offset).next_back().map(|(_, w)| w.clone());
        let Some(containing) = containing.filter(|w| last_offset_of(w) >= offset) else {
            return Err(self.refused(format!("a truncation at offset {offset}, which is committed")));
        };
        let (base, kept) = match containing {
            LogWrite::Records { base, term, records } => {
                let keep = (offset - base) as usize;
                (base, (keep > 0).then(|| (term, records[..keep].to_vec())))
            }
            LogWrite::Control { offset, .. } => (offset, None),
        };
        if base == 0 {
            return Err(self.refused("a truncation of offset 0, which today's log cannot do".into()));
        }
        self.log.truncate_after(base - 1)?;
        uncommitted.retain(|&b, _| b < base);
        if let Some((term, records)) = kept {
            self.log.append(&records, term)?;
            uncommitted.insert(base, LogWrite::Records { base, term, records });
        }
        Ok(())
    }

    fn reset_after(&self, offset: u64, term: u64) -> Result<(), LogStoreError> {
        // TEMPORARY until strata-log has `reset_to` (seam-log): a snapshot can be installed
        // only where the log already holds its last entry.
        if self.term_at(offset)? == Some(term) {
            return Ok(());
        }
        Err(self.refused(format!(
            "installing a snapshot at offset {offset} (term {term}) needs strata-log's reset_to, not there yet"
        )))
    }

    fn commit_to(&self, end: u64) -> Result<(), LogStoreError> {
        let mut uncommitted = self.lock();
        if end <= self.log.offsets().high_watermark {
            return Ok(());
        }
        self.log.set_high_watermark(end)?;
        uncommitted.retain(|_, w| last_offset_of(w) >= end);
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

    async fn purge(&mut self, _log_id: LogId) -> Result<(), StorageError> {
        // Retention owns deleting segments, below the snapshot point; Raft's purge is only
        // permission to. With the snapshot policy at `Never` it is not called.
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
        StrataLog::new(Log::open(dir, config).unwrap()).unwrap()
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
}
