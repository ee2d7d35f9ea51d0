//! The stream definitions created, altered or deleted at runtime, as applied from the
//! internal compacted stream `$streams` (`applied.rs`): the latest definition per stream
//! (with when it was created), and the names whose latest record is a tombstone. The broker
//! opens the streams from them at start (`broker.rs`); the admin API writes them
//! (`admin.rs`), and the definitions change when its records are applied.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use strata_log::{Record, StoredRecord};

use crate::StreamConfig;
use crate::applied::{Applied, Apply};
use crate::partition::{AppendError, LogError, PartitionHandle};

/// The definitions kept in `$streams`.
#[derive(Default)]
pub(crate) struct Definitions {
    /// By stream name: its definition and when it was created (unix ms).
    kept: HashMap<String, (StreamConfig, i64)>,
    /// Streams whose latest record is a tombstone: deleted (a crash may have left part of
    /// their directory).
    deleted: HashSet<String>,
}

impl Apply for Definitions {
    /// The latest definition per stream wins, a tombstone removes it. A definition that does
    /// not decode is skipped with a warning (its data stays on disk).
    fn apply(&mut self, stored: StoredRecord) {
        let Some(name) = stored.key.as_ref().and_then(|k| std::str::from_utf8(k).ok()) else { return };
        if stored.value.is_empty() {
            self.kept.remove(name);
            self.deleted.insert(name.to_owned());
            return;
        }
        self.deleted.remove(name);
        match crate::stream_settings::decode_definition(name, &stored.value) {
            Ok(definition) => {
                self.kept.insert(name.to_owned(), definition);
            }
            Err(error) => tracing::warn!(stream = name, %error, offset = stored.offset, "skipping a stream definition"),
        }
    }
}

/// `$streams` and the definitions applied from it.
pub(crate) struct DefinitionStore {
    applied: Arc<Applied<Definitions>>,
}

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

impl DefinitionStore {
    /// Rebuilds the definitions from `partition` (`$streams`). Blocking.
    pub(crate) fn rebuild(partition: Arc<PartitionHandle>) -> Result<DefinitionStore, LogError> {
        Ok(DefinitionStore { applied: Arc::new(Applied::rebuild(partition, Definitions::default())?) })
    }

    /// `$streams` itself.
    pub(crate) fn partition(&self) -> &Arc<PartitionHandle> {
        self.applied.partition()
    }

    /// Applies records of `$streams` as they commit, until dropped.
    pub(crate) fn follow(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        Arc::clone(&self.applied).follow()
    }

    /// Applies what `$streams` committed since the last call.
    pub(crate) fn catch_up(&self) -> Result<(), LogError> {
        self.applied.catch_up()
    }

    /// Every kept definition, with when its stream was created.
    pub(crate) fn kept(&self) -> HashMap<String, (StreamConfig, i64)> {
        self.applied.read(|definitions| definitions.kept.clone())
    }

    /// The streams deleted at runtime.
    pub(crate) fn deleted(&self) -> HashSet<String> {
        self.applied.read(|definitions| definitions.deleted.clone())
    }

    /// Writes the definition of `config`, created at `created_at_ms`, durably; the store
    /// shows it once this returns.
    pub(crate) async fn persist(&self, config: &StreamConfig, created_at_ms: i64) -> Result<(), AppendError> {
        let value = crate::stream_settings::encode_definition(config, created_at_ms);
        let record = Record::new(now_ms(), value).with_key(config.name.clone().into_bytes());
        self.applied.propose(record).await.map(|_| ())
    }

    /// Writes a tombstone for stream `name`, durably; the store shows it deleted once this
    /// returns.
    pub(crate) async fn delete(&self, name: &str) -> Result<(), AppendError> {
        let tombstone = Record::new(now_ms(), Vec::new()).with_key(name.as_bytes().to_vec());
        self.applied.propose(tombstone).await.map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(key: &str, value: Vec<u8>) -> StoredRecord {
        StoredRecord {
            offset: 0,
            timestamp: 0,
            key: Some(key.as_bytes().to_vec().into()),
            value: value.into(),
            headers: Vec::new(),
        }
    }

    #[test]
    fn a_tombstone_forgets_a_definition_and_a_damaged_one_is_skipped() {
        let mut definitions = Definitions::default();
        let stream = StreamConfig::new("s");
        definitions.apply(record("s", crate::stream_settings::encode_definition(&stream, 7)));
        definitions.apply(record("bad", vec![9, 9]));
        assert_eq!(definitions.kept.get("s"), Some(&(stream.clone(), 7)));
        assert!(!definitions.kept.contains_key("bad"));
        definitions.apply(record("s", Vec::new()));
        assert!(definitions.kept.is_empty());
        assert!(definitions.deleted.contains("s"), "a tombstone marks the stream deleted");
        definitions.apply(record("s", crate::stream_settings::encode_definition(&stream, 9)));
        assert!(definitions.deleted.is_empty(), "created again");
    }

    #[test]
    fn a_persisted_definition_and_a_delete_show_once_written_and_after_a_rebuild() {
        let dir = tempfile::tempdir().unwrap();
        let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let partition = PartitionHandle::open_for_tests(dir.path(), strata_log::LogConfig::default(), 0);
        let store = DefinitionStore::rebuild(Arc::clone(&partition)).unwrap();
        let mut orders = StreamConfig::new("orders");
        orders.partitions = 3;
        runtime.block_on(async {
            store.persist(&orders, 5).await.unwrap();
            assert_eq!(store.kept().get("orders"), Some(&(orders.clone(), 5)));
            store.persist(&StreamConfig::new("late"), 6).await.unwrap();
            store.delete("late").await.unwrap();
        });
        let rebuilt = DefinitionStore::rebuild(partition).unwrap();
        for store in [&store, &rebuilt] {
            assert_eq!(store.kept(), HashMap::from([("orders".to_owned(), (orders.clone(), 5))]));
            assert_eq!(store.deleted(), HashSet::from(["late".to_owned()]));
        }
    }
}
