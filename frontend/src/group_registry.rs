//! The consumer groups (`$share/<group>/...`) by name, and their committed offsets as
//! applied from the internal compacted stream `$offsets` (`applied.rs`). A group writes its
//! own commits (`groups.rs`); the registry's copy follows them from the log, so a group
//! created later (after a restart, or after it expired) starts where the log says.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use strata_log::{Record, StoredRecord};

use crate::applied::{Applied, Apply};
use crate::groups::Group;
use crate::partition::{AppendError, AppendRequest, LogError, PartitionHandle};
use crate::streams::Streams;

/// Committed offsets by `<group>/<stream>/<partition>`: the latest record per key wins, a
/// tombstone (or a value that does not decode) removes it.
#[derive(Default)]
pub(crate) struct Offsets(HashMap<String, u64>);

impl Apply for Offsets {
    fn apply(&mut self, stored: StoredRecord) {
        let Some(key) = stored.key.as_ref().and_then(|k| std::str::from_utf8(k).ok()) else { return };
        match crate::groups::decode_offset(&stored.value) {
            Some(offset) => {
                self.0.insert(key.to_owned(), offset);
            }
            None => {
                self.0.remove(key);
            }
        }
    }
}

/// The live groups and the committed offsets of every group.
pub(crate) struct GroupRegistry {
    /// Live groups by name. Locked briefly, never across an await.
    groups: Mutex<HashMap<String, Arc<Group>>>,
    offsets: Arc<Applied<Offsets>>,
}

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl GroupRegistry {
    /// Rebuilds the committed offsets from `partition` (`$offsets`). Blocking.
    pub(crate) fn rebuild(partition: Arc<PartitionHandle>) -> Result<GroupRegistry, LogError> {
        Ok(GroupRegistry {
            groups: Mutex::new(HashMap::new()),
            offsets: Arc::new(Applied::rebuild(partition, Offsets::default())?),
        })
    }

    /// `$offsets` itself.
    pub(crate) fn partition(&self) -> &Arc<PartitionHandle> {
        self.offsets.partition()
    }

    /// Applies records of `$offsets` as they commit, until dropped.
    pub(crate) fn follow(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        Arc::clone(&self.offsets).follow()
    }

    /// The group `name` consuming `filter`, created (and started, from its committed offsets)
    /// on first use. A group has one filter: joining it with another while it exists is
    /// refused with the reason.
    pub(crate) fn group(
        &self,
        name: &str,
        filter: &str,
        streams: &Streams,
        since: &[(u32, u64)],
    ) -> Result<Arc<Group>, String> {
        let mut groups = lock(&self.groups);
        if let Some(group) = groups.get(name) {
            if group.filter != filter {
                return Err(format!("group {name:?} consumes {:?}; one filter per group", group.filter));
            }
            return Ok(Arc::clone(group));
        }
        let partition = Arc::clone(self.offsets.partition());
        let group = self.offsets.read(|offsets| Group::start(name, filter, streams, &offsets.0, since, partition));
        groups.insert(name.to_owned(), Arc::clone(&group));
        Ok(group)
    }

    /// The live group `name`.
    pub(crate) fn live(&self, name: &str) -> Option<Arc<Group>> {
        lock(&self.groups).get(name).map(Arc::clone)
    }

    /// Every live group.
    pub(crate) fn all_live(&self) -> Vec<Arc<Group>> {
        lock(&self.groups).values().map(Arc::clone).collect()
    }

    /// Every committed offset, by `<group>/<stream>/<partition>`.
    pub(crate) fn committed_offsets(&self) -> HashMap<String, u64> {
        self.offsets.read(|offsets| offsets.0.clone())
    }

    /// Looks at every live group under the registry's lock, where new holders come from:
    /// `idle(name, group)` says whether it is idle now, and the groups `expired` picks among
    /// those are removed and returned.
    pub(crate) fn remove_idle(
        &self,
        mut idle: impl FnMut(&str, &Arc<Group>) -> bool,
        mut expired: impl FnMut(&[String]) -> Vec<String>,
    ) -> Vec<Arc<Group>> {
        let mut groups = lock(&self.groups);
        let idle_now: Vec<String> =
            groups.iter().filter(|(name, group)| idle(name, group)).map(|(name, _)| name.clone()).collect();
        expired(&idle_now).iter().filter_map(|name| groups.remove(name)).collect()
    }

    /// Tombstones in `$offsets` every committed offset of the removed `group`, and of any
    /// key `extra` names; returns how many. Once this returns, the registry has forgotten
    /// them.
    pub(crate) async fn forget(&self, group: &str, mut extra: Vec<String>) -> Result<usize, AppendError> {
        let prefix = format!("{group}/");
        extra.extend(
            self.offsets
                .read(|offsets| offsets.0.keys().filter(|key| key.starts_with(&prefix)).cloned().collect::<Vec<_>>()),
        );
        extra.sort();
        extra.dedup();
        let count = extra.len();
        let Some(last) = extra.pop() else { return Ok(0) };
        let tombstone = |key: String| Record::new(now_ms(), Vec::new()).with_key(key.into_bytes());
        for key in extra {
            self.partition()
                .send(AppendRequest { record: tombstone(key), durable: None })
                .await
                .map_err(|_| AppendError::failed("the $offsets writer stopped"))?;
        }
        self.offsets.propose(tombstone(last)).await?;
        Ok(count)
    }

    /// Sets the committed offsets of `group`, which must not be live, to `offsets`
    /// (`<group>/<stream>/<partition>` → offset), durably. `Err(None)` when the group is
    /// live, before or after the write (it was recreated meanwhile, from the offsets it
    /// found then): nothing or not everything took effect, try again.
    pub(crate) async fn reset_restored(
        &self,
        group: &str,
        offsets: Vec<(String, u64)>,
    ) -> Result<(), Option<AppendError>> {
        if self.live(group).is_some() {
            return Err(None);
        }
        for (key, offset) in offsets {
            let record = Record::new(now_ms(), crate::groups::encode_offset(offset)).with_key(key.into_bytes());
            self.offsets.propose(record).await.map_err(Some)?;
        }
        if self.live(group).is_some() {
            return Err(None);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stored(offset: u64, key: &str, value: Vec<u8>) -> StoredRecord {
        StoredRecord {
            offset,
            timestamp: 0,
            key: Some(key.as_bytes().to_vec().into()),
            value: value.into(),
            headers: Vec::new(),
        }
    }

    #[test]
    fn the_latest_offset_per_key_wins_and_a_tombstone_removes_it() {
        let mut offsets = Offsets::default();
        offsets.apply(stored(0, "g/s/0", crate::groups::encode_offset(5)));
        offsets.apply(stored(1, "g/s/1", crate::groups::encode_offset(7)));
        offsets.apply(stored(2, "g/s/0", crate::groups::encode_offset(9)));
        offsets.apply(stored(3, "g/s/1", Vec::new()));
        assert_eq!(offsets.0, HashMap::from([("g/s/0".to_owned(), 9)]));
    }

    #[test]
    fn a_reset_and_a_forget_show_once_they_return_and_survive_a_rebuild() {
        let dir = tempfile::tempdir().unwrap();
        let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let partition = PartitionHandle::open_for_tests(dir.path(), strata_log::LogConfig::default(), 0);
        let registry = GroupRegistry::rebuild(Arc::clone(&partition)).unwrap();
        runtime.block_on(async {
            let reset = vec![("g/s/0".to_owned(), 3), ("g/s/1".to_owned(), 4), ("h/s/0".to_owned(), 8)];
            registry.reset_restored("g", reset).await.unwrap();
            assert_eq!(registry.committed_offsets().len(), 3);
            assert_eq!(registry.forget("g", vec!["g/gone/0".to_owned()]).await.unwrap(), 3);
        });
        let left = HashMap::from([("h/s/0".to_owned(), 8)]);
        assert_eq!(registry.committed_offsets(), left);
        assert_eq!(GroupRegistry::rebuild(partition).unwrap().committed_offsets(), left);
    }
}
