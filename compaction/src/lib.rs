//! `strata-compaction`: Strata's log cleaner and retention scheduling.
//!
//! A cleaning pass keeps the latest record per key in a partition's closed segments (Kafka's
//! log-cleaner semantics): it maps key → latest offset over the dirty range in bounded memory,
//! rewrites the cleanable segments keeping only survivors (offsets preserved, small segments
//! merged), drops tombstones after `delete_retention_ms`, and swaps the result in crash-safely
//! through `strata-log`. [`Maintenance`] runs retention and cleaning in background threads.
//!
//! ```
//! use strata_compaction::{CompactionConfig, Throttle, clean_partition};
//! use strata_log::{Log, LogConfig, Record};
//!
//! let dir = tempfile::tempdir().unwrap();
//! let config = LogConfig { segment_bytes: 1024, index_interval_bytes: 256, ..Default::default() };
//! let log = Log::open(dir.path(), config).unwrap();
//! for i in 0..200 {
//!     let record = Record::new(0, format!("value {i}")).with_header("mqtt.topic", format!("sensor/{}", i % 4));
//!     log.append(&[record], 0).unwrap();
//! }
//! let outcome = clean_partition(&log, &CompactionConfig::default(), 1_000, &Throttle::new(None), &mut |_| {}).unwrap();
//! assert!(outcome.bytes_after < outcome.bytes_before);
//! ```
#![deny(missing_docs)]

mod cleaner;
mod config;
mod error;
mod maintenance;
mod offset_map;
mod throttle;

pub use cleaner::{
    CleanOutcome, CleaningDecision, SegmentFacts, Verdict, clean_partition, compaction_key, decide, group_for_rewrite,
    plan_cleaning,
};
pub use config::{
    CleanupPolicy, CompactionConfig, DEFAULT_CLEANER_BUFFER_BYTES, DEFAULT_CLEANER_THROTTLE, MIN_OFFSET_MAP_BYTES,
    MaintenanceConfig, TOPIC_HEADER,
};
pub use error::CompactionError;
pub use maintenance::{CleanerState, Maintenance, MaintenanceTotals, PartitionSettings, TotalsReader};
pub use throttle::Throttle;
