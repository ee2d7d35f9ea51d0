//! The one error type of this crate. Messages name the file and byte position involved.

use std::{io, path::PathBuf};

/// Everything that can go wrong in the partition log.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// An operating-system call on a file failed.
    #[error("{path}: {action}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What the log was doing.
        action: &'static str,
        /// The OS error.
        source: io::Error,
    },
    /// Stored bytes failed validation; nothing from them was returned.
    #[error("{path}: {reason} at byte {position}")]
    Corrupt {
        /// The damaged file.
        path: PathBuf,
        /// Byte position of the damaged batch or entry.
        position: u64,
        /// What is wrong there.
        reason: &'static str,
    },
    /// A metadata file that is not a cache (the vote) is damaged.
    #[error("{path}: {reason}; it holds the Raft vote, so it is not rebuilt from guesswork")]
    BadMetadata {
        /// The metadata file.
        path: PathBuf,
        /// What is wrong.
        reason: &'static str,
    },
    /// A setting is out of range.
    #[error("invalid config {key} = {value}: {reason}")]
    InvalidConfig {
        /// The config key, as operators write it.
        key: &'static str,
        /// The rejected value.
        value: String,
        /// The valid range.
        reason: &'static str,
    },
    /// A read asked for an offset the log does not hold.
    #[error("offset {requested} is out of range: the log holds offsets {log_start} to {log_end} (exclusive)")]
    OffsetOutOfRange {
        /// The offset asked for.
        requested: u64,
        /// The first offset still stored.
        log_start: u64,
        /// The next offset to be assigned.
        log_end: u64,
    },
    /// A caller waited for an offset that was never appended (or was truncated away).
    #[error("offset {offset} cannot become durable: the log ends at {log_end}")]
    NotWritten {
        /// The offset waited for.
        offset: u64,
        /// The log end.
        log_end: u64,
    },
    /// An append carried no records.
    #[error("a batch needs at least one record")]
    EmptyBatch,
    /// An append would produce a batch over the format's limit.
    #[error("batch of {bytes} bytes exceeds the limit of {limit} bytes")]
    BatchTooLarge {
        /// Encoded size.
        bytes: usize,
        /// The limit.
        limit: usize,
    },
    /// `truncate_after` was asked to do something unsafe.
    #[error("cannot truncate after offset {offset}: {reason}")]
    InvalidTruncation {
        /// The requested offset.
        offset: u64,
        /// Why not.
        reason: &'static str,
    },
    /// `set_high_watermark` was asked to move backward or past the log end.
    #[error("high watermark {requested} must be within [{current}, {log_end}]")]
    InvalidHighWatermark {
        /// The value asked for.
        requested: u64,
        /// The current high watermark.
        current: u64,
        /// The log end.
        log_end: u64,
    },
    /// A segment rewrite (compaction) was used wrongly or lost a race with retention.
    #[error("segment rewrite refused: {reason}")]
    InvalidRewrite {
        /// Why.
        reason: &'static str,
    },
    /// Another process holds the partition directory.
    #[error("{path}: the partition is already open in another process")]
    Locked {
        /// The lock file.
        path: PathBuf,
    },
    /// An fsync of appended data failed earlier. The kernel may have dropped the unwritten
    /// pages, or marked them clean, so a later fsync can succeed without writing them
    /// ("fsyncgate"): the partition refuses appends and durability waits until
    /// [`crate::Log::recover_failed_sync`] writes its data again and fsyncs it, or until it
    /// is reopened, which re-reads what is on disk and truncates after the last whole batch.
    #[error(
        "{path}: an fsync failed ({reason}); partition {partition} refuses appends until its data is written \
         again and fsynced, or it is reopened (a restart keeps what is verifiably on disk)"
    )]
    SyncFailed {
        /// The file whose fsync failed.
        path: PathBuf,
        /// The partition directory.
        partition: PathBuf,
        /// The OS error of that fsync.
        reason: String,
    },
    /// A follower append ([`crate::Log::append_at`]) did not start at the log end.
    #[error(
        "{partition}: cannot append at offset {requested}: the log ends at {log_end} (truncate a conflicting suffix first, or send the missing entries)"
    )]
    NotAtLogEnd {
        /// The partition directory.
        partition: PathBuf,
        /// The offset the append was to start at.
        requested: u64,
        /// The next offset the log can take.
        log_end: u64,
    },
    /// An append carried a term below the term of the entry before it.
    #[error("{partition}: cannot append with term {term} at offset {offset}: the entry before it has term {last_term}")]
    TermWentBack {
        /// The partition directory.
        partition: PathBuf,
        /// The term of the refused append.
        term: u64,
        /// The offset it would have taken.
        offset: u64,
        /// The term of the last entry (or of the last purged one).
        last_term: u64,
    },
    /// A reset to a snapshot ([`crate::Log::reset_to`]) was refused.
    #[error("{partition}: cannot reset the log to start at offset {offset}: {reason}")]
    InvalidReset {
        /// The partition directory.
        partition: PathBuf,
        /// The requested new start.
        offset: u64,
        /// Why not.
        reason: &'static str,
    },
    /// A snapshot's staged segment files are not what their sender described.
    #[error("{path}: a snapshot segment is unusable at byte {position}: {reason}")]
    BadSnapshot {
        /// The staged file (or the staging directory).
        path: PathBuf,
        /// Byte position in it.
        position: u64,
        /// What is wrong.
        reason: String,
    },
    /// The log was closed.
    #[error("{path}: the log is closed")]
    Closed {
        /// The partition directory.
        path: PathBuf,
    },
}

impl LogError {
    /// Whether this is the file system saying it has no room (`ENOSPC`, or `EDQUOT` for a
    /// quota): the append may succeed once space is freed, nothing stored was harmed.
    pub fn is_disk_full(&self) -> bool {
        match self {
            LogError::Io { source, .. } => is_disk_full(source),
            _ => false,
        }
    }
}

pub(crate) fn is_disk_full(error: &io::Error) -> bool {
    matches!(error.raw_os_error(), Some(code) if code == libc::ENOSPC || code == libc::EDQUOT)
}

pub(crate) trait IoContext<T> {
    fn at(self, path: &std::path::Path, action: &'static str) -> Result<T, LogError>;
}

impl<T> IoContext<T> for io::Result<T> {
    fn at(self, path: &std::path::Path, action: &'static str) -> Result<T, LogError> {
        self.map_err(|source| LogError::Io { path: path.to_path_buf(), action, source })
    }
}
