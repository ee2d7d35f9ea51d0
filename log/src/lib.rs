//! `strata-log`: Strata's partition log.
//!
//! A partition is a directory of segments named by their first offset. Each segment holds
//! checksummed record batches (see `docs/format.md`), with sparse offset and time indexes
//! that recovery rebuilds whenever they are missing or damaged. One writer appends; any
//! number of readers read zero-copy from the mmap without blocking it.
//!
//! It is also the Raft log of its partition, one entry per offset: it keeps the vote, takes
//! a follower's appends at a given offset ([`Log::append_at`]), control batches for entries
//! without records ([`Log::append_control`], skipped by every record read), answers the term
//! of any stored offset ([`Log::term_at`]), keeps the last purged entry, and resets to a
//! snapshot ([`Log::reset_to`]).
//!
//! ```
//! use strata_log::{Log, LogConfig, Record};
//!
//! let dir = tempfile::tempdir().unwrap();
//! let log = Log::open(dir.path(), LogConfig::default()).unwrap();
//! let appended = log.append(&[Record::new(1_700_000_000_000, "hello").with_key("k")], 0).unwrap();
//! log.wait_durable_blocking(appended.last_offset).unwrap();
//! let fetch = log.read(0, 1 << 20).unwrap();
//! let records = fetch.records(0).unwrap();
//! assert_eq!(&records[0].value[..], b"hello");
//! log.close().unwrap();
//! ```
#![deny(missing_docs)]

mod config;
mod error;
mod flusher;
mod format;
mod index;
mod log;
mod meta;
mod retention;
mod rewrite;
mod segment;
mod tail;
mod verify;

pub use config::{
    Compression, DEFAULT_FLUSH_INTERVAL_MS, FlushPolicy, HighWatermarkMode, LogConfig, MAX_SEGMENT_BYTES,
    MIN_SEGMENT_BYTES,
};
pub use error::LogError;
pub use format::{BatchHeader, Header, Record, StoredRecord};
pub use log::{
    AppendInfo, Batch, Fetch, FsyncObserver, InstallStep, Log, LogOffsets, RecoveryReport, ResetStep, RetentionOutcome,
    SnapshotFile, SnapshotFiles, SnapshotInfo,
};
pub use meta::Vote;
pub use retention::{DeleteSegment, RetentionPlan, RetentionPolicy, RetentionReason, SegmentSummary, plan_retention};
pub use rewrite::{RewriteOutcome, SealedSegment, SegmentRewrite, SwapStep};
pub use verify::{DumpedBatch, SegmentProblem, VerifyReport, dump_partition, partition_size, verify_partition};
