//! The one error type of the compaction crate.

use strata_log::LogError;

/// What can stop a cleaning pass or the maintenance service.
#[derive(Debug, thiserror::Error)]
pub enum CompactionError {
    /// The log underneath failed; its message names the file and position.
    #[error(transparent)]
    Log(#[from] LogError),
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
    /// A single key does not fit the offset map, so no pass can make progress.
    #[error("the offset map of {budget} bytes cannot hold even one key; raise cleaner_buffer_bytes")]
    OffsetMapTooSmall {
        /// The configured budget.
        budget: usize,
    },
    /// A partition name given to the service is not registered.
    #[error("no partition named {0:?} is registered with the cleaner")]
    UnknownPartition(String),
}
