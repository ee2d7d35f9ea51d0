//! The key → latest-offset map of one cleaning pass, bounded in bytes. Keys are copied in,
//! so the map does not pin decompressed batches or mappings. Keys of up to [`INLINE_KEY`]
//! bytes (most MQTT topics) are stored in the table entry itself: looking one up reads the
//! table and nothing else, and mapping a new one allocates nothing.

use std::{
    borrow::Borrow,
    collections::{HashMap, hash_map::Entry},
    hash::{Hash, Hasher},
};

/// Bytes charged per entry besides the key itself: the table slot (a 48-byte entry plus its
/// control byte, at the table's load factor) and, for long keys, the allocation header, rounded.
const ENTRY_OVERHEAD: usize = 64;

/// The longest key stored inline; longer keys get their own allocation.
const INLINE_KEY: usize = 38;

/// A copied key. Hashes and compares exactly as its bytes (`[u8]`), so the map can be
/// queried with a plain slice.
enum Key {
    Inline { len: u8, bytes: [u8; INLINE_KEY] },
    Heap(Box<[u8]>),
}

impl Key {
    fn new(key: &[u8]) -> Key {
        if key.len() <= INLINE_KEY {
            let mut bytes = [0; INLINE_KEY];
            bytes[..key.len()].copy_from_slice(key);
            Key::Inline { len: key.len() as u8, bytes }
        } else {
            Key::Heap(key.into())
        }
    }

    fn as_slice(&self) -> &[u8] {
        match self {
            Key::Inline { len, bytes } => &bytes[..usize::from(*len)],
            Key::Heap(bytes) => bytes,
        }
    }
}

impl Borrow<[u8]> for Key {
    fn borrow(&self) -> &[u8] {
        self.as_slice()
    }
}

impl PartialEq for Key {
    fn eq(&self, other: &Key) -> bool {
        self.as_slice() == other.as_slice()
    }
}

impl Eq for Key {}

impl Hash for Key {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.as_slice().hash(state);
    }
}

pub(crate) struct OffsetMap {
    latest: HashMap<Key, u64>,
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
        let cost = key.len() + ENTRY_OVERHEAD;
        if key.len() > INLINE_KEY {
            // Look up before copying, so that a known long key costs no allocation.
            if let Some(latest) = self.latest.get_mut(key) {
                debug_assert!(*latest < offset, "records are mapped in offset order");
                *latest = offset;
                return true;
            }
            if self.used + cost > self.budget {
                return false;
            }
            self.used += cost;
            self.latest.insert(Key::new(key), offset);
            return true;
        }
        // A short key is copied for free, so one probe finds or places it.
        match self.latest.entry(Key::new(key)) {
            Entry::Occupied(mut entry) => {
                debug_assert!(*entry.get() < offset, "records are mapped in offset order");
                *entry.get_mut() = offset;
                true
            }
            Entry::Vacant(_) if self.used + cost > self.budget => false,
            Entry::Vacant(entry) => {
                self.used += cost;
                entry.insert(offset);
                true
            }
        }
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

    #[test]
    fn long_and_short_keys_are_the_same_keys_as_their_bytes() {
        let long = [b'x'; INLINE_KEY + 1];
        let edge = [b'y'; INLINE_KEY];
        let mut map = OffsetMap::new(1 << 20);
        for (i, key) in [&long[..], &edge[..], b"", &long[..INLINE_KEY]].into_iter().enumerate() {
            assert!(map.insert(key, i as u64));
        }
        assert!(map.insert(&long, 10), "a known long key is updated");
        assert!(map.insert(b"", 11), "so is the empty key");
        assert_eq!(map.get(&long), Some(10));
        assert_eq!(map.get(&edge), Some(1));
        assert_eq!(map.get(b""), Some(11));
        assert_eq!(map.get(&long[..INLINE_KEY]), Some(3), "a prefix is another key");
        assert_eq!(map.get(&long[..5]), None);
        assert_eq!(map.len(), 4);
        assert!(std::mem::size_of::<Key>() <= 40, "an entry stays within 48 bytes");
    }
}
