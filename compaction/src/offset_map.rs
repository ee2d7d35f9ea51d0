//! The key → latest-offset map of one cleaning pass, bounded in bytes. Keys are copied in,
//! so the map does not pin decompressed batches or mappings.

use std::collections::HashMap;

use bytes::Bytes;

/// Bytes charged per entry besides the key itself: the table slot, the `Bytes` handle and the
/// allocation header, rounded up.
const ENTRY_OVERHEAD: usize = 64;

pub(crate) struct OffsetMap {
    latest: HashMap<Bytes, u64>,
    used: usize,
    budget: usize,
}

impl OffsetMap {
    pub(crate) fn new(budget: usize) -> Self {
        OffsetMap { latest: HashMap::new(), used: 0, budget }
    }

    /// Records `offset` as the latest for `key`. Returns false, changing nothing, when the key
    /// is new and would take the map past its budget.
    pub(crate) fn insert(&mut self, key: &[u8], offset: u64) -> bool {
        if let Some(latest) = self.latest.get_mut(key) {
            debug_assert!(*latest < offset, "records are mapped in offset order");
            *latest = offset;
            return true;
        }
        let cost = key.len() + ENTRY_OVERHEAD;
        if self.used + cost > self.budget {
            return false;
        }
        self.used += cost;
        self.latest.insert(Bytes::copy_from_slice(key), offset);
        true
    }

    pub(crate) fn get(&self, key: &[u8]) -> Option<u64> {
        self.latest.get(key).copied()
    }

    pub(crate) fn len(&self) -> usize {
        self.latest.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_latest_offset_and_refuses_new_keys_when_full() {
        let mut map = OffsetMap::new(3 * (ENTRY_OVERHEAD + 2));
        assert!(map.insert(b"k1", 1));
        assert!(map.insert(b"k2", 2));
        assert!(map.insert(b"k1", 5));
        assert!(map.insert(b"k3", 6));
        assert!(!map.insert(b"k4", 7), "a fourth key is over budget");
        assert!(map.insert(b"k2", 8), "updating a known key costs nothing");
        assert_eq!((map.get(b"k1"), map.get(b"k2"), map.get(b"k4")), (Some(5), Some(8), None));
        assert_eq!(map.len(), 3);
    }
}
