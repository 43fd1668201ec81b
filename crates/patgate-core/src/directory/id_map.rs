//! Directory records by numeric id, laid out for the decision's cache misses.
//!
//! Ids come from the store's sequences, so they are dense: the record of id `n` lives at
//! index `n` of a vector, on cache lines of its own (two or three: their loads go out
//! together), and a lookup is one load with no hashing and no control bytes. Ids far beyond
//! the records held (an import that kept another system's ids, say) go to a hash map
//! instead, so a stray large id never costs memory.

use std::{fmt, marker::PhantomData};

use super::{FastMap, GroupId, ProjectId, UserId};

/// A numeric id that can index an [`IdMap`].
pub(crate) trait Id: Copy {
    fn raw(self) -> u64;
}

impl Id for UserId {
    fn raw(self) -> u64 {
        self.0
    }
}

impl Id for GroupId {
    fn raw(self) -> u64 {
        self.0
    }
}

impl Id for ProjectId {
    fn raw(self) -> u64 {
        self.0
    }
}

/// A record on cache lines of its own, so a lookup touches no other record's lines.
#[derive(Clone)]
#[repr(align(64))]
struct Line<V>(Option<V>);

/// The bytes a record of type `V` takes in the map.
#[cfg(test)]
pub(crate) fn line_size<V>() -> usize {
    std::mem::size_of::<Line<V>>()
}

/// How far past twice the record count the dense part may grow for a new id.
const SLACK: usize = 1024;

/// A map from an id to a record.
///
/// INVARIANT: an id below `dense.len()` is never in `sparse`; `len` counts the records of
/// both parts.
#[derive(Clone)]
pub(crate) struct IdMap<K, V> {
    dense: Vec<Line<V>>,
    sparse: FastMap<u64, V>,
    len: usize,
    key: PhantomData<K>,
}

impl<K, V> Default for IdMap<K, V> {
    fn default() -> Self {
        IdMap { dense: Vec::new(), sparse: FastMap::default(), len: 0, key: PhantomData }
    }
}

impl<K, V: fmt::Debug> fmt::Debug for IdMap<K, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.values()).finish()
    }
}

impl<K: Id, V> IdMap<K, V> {
    fn dense_index(&self, key: K) -> Option<usize> {
        usize::try_from(key.raw()).ok().filter(|index| *index < self.dense.len())
    }

    /// The record of `key`.
    pub(crate) fn get(&self, key: K) -> Option<&V> {
        match self.dense_index(key) {
            Some(index) => self.dense.get(index).and_then(|line| line.0.as_ref()),
            None if self.sparse.is_empty() => None,
            None => self.sparse.get(&key.raw()),
        }
    }

    /// Starts loading the cache line of `key`'s record, without waiting for it.
    pub(crate) fn prefetch(&self, key: K) {
        if let Some(index) = self.dense_index(key) {
            prefetch_index::prefetch_index(&self.dense, index);
        }
    }

    /// The record of `key`, to change it.
    pub(crate) fn get_mut(&mut self, key: K) -> Option<&mut V> {
        match self.dense_index(key) {
            Some(index) => self.dense.get_mut(index).and_then(|line| line.0.as_mut()),
            None => self.sparse.get_mut(&key.raw()),
        }
    }

    /// Whether `key` has a record.
    pub(crate) fn contains_key(&self, key: K) -> bool {
        self.get(key).is_some()
    }

    /// Stores `value` under `key`, returning the record it replaced.
    pub(crate) fn insert(&mut self, key: K, value: V) -> Option<V> {
        let raw = key.raw();
        let index = usize::try_from(raw).ok();
        let fits = index.filter(|index| *index < self.dense.len().max(2 * (self.len + 1) + SLACK));
        let replaced = match fits {
            Some(index) => {
                if index >= self.dense.len() {
                    self.grow(index + 1);
                }
                self.dense.get_mut(index).and_then(|line| line.0.replace(value))
            }
            None => self.sparse.insert(raw, value),
        };
        if replaced.is_none() {
            self.len += 1;
        }
        replaced
    }

    // Extends the dense part to `len` lines, moving in the sparse records it now covers.
    fn grow(&mut self, len: usize) {
        self.dense.resize_with(len, || Line(None));
        if self.sparse.is_empty() {
            return;
        }
        let moving: Vec<u64> =
            self.sparse.keys().copied().filter(|raw| usize::try_from(*raw).is_ok_and(|index| index < len)).collect();
        for raw in moving {
            if let (Some(value), Ok(index)) = (self.sparse.remove(&raw), usize::try_from(raw))
                && let Some(line) = self.dense.get_mut(index)
            {
                line.0 = Some(value);
            }
        }
    }

    /// Removes and returns the record of `key`.
    pub(crate) fn remove(&mut self, key: K) -> Option<V> {
        let removed = match self.dense_index(key) {
            Some(index) => self.dense.get_mut(index).and_then(|line| line.0.take()),
            None => self.sparse.remove(&key.raw()),
        };
        if removed.is_some() {
            self.len -= 1;
        }
        removed
    }

    /// Makes room for `additional` more records with consecutive ids after the highest
    /// held (ids start at 1: one more line than records, or the last insert would double
    /// the vector and leave half of it reserved for nothing).
    pub(crate) fn reserve(&mut self, additional: usize) {
        let needed = (self.dense.len().max(1) + additional).saturating_sub(self.dense.len());
        self.dense.reserve(needed);
    }

    /// How many records there are.
    pub(crate) fn len(&self) -> usize {
        self.len
    }
}

impl<K, V> IdMap<K, V> {
    /// Every record: the dense part in id order, then the others.
    pub(crate) fn values(&self) -> impl Iterator<Item = &V> {
        self.dense.iter().filter_map(|line| line.0.as_ref()).chain(self.sparse.values())
    }

    /// Every record, to change them.
    pub(crate) fn values_mut(&mut self) -> impl Iterator<Item = &mut V> {
        self.dense.iter_mut().filter_map(|line| line.0.as_mut()).chain(self.sparse.values_mut())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserving_covers_ids_from_one() {
        let mut map: IdMap<UserId, u64> = IdMap::default();
        map.reserve(1000);
        let capacity = map.dense.capacity();
        for id in 1..=1000 {
            map.insert(UserId(id), id);
        }
        assert_eq!(map.dense.capacity(), capacity, "the last id made the vector grow");
        map.reserve(500);
        let capacity = map.dense.capacity();
        for id in 1001..=1500 {
            map.insert(UserId(id), id);
        }
        assert_eq!(map.dense.capacity(), capacity);
    }

    #[test]
    fn dense_and_sparse_ids_are_found_and_counted() {
        let mut map: IdMap<UserId, &str> = IdMap::default();
        assert_eq!(map.insert(UserId(1), "one"), None);
        assert_eq!(map.insert(UserId(3), "three"), None);
        assert_eq!(map.insert(UserId(u64::MAX), "far"), None);
        assert_eq!(map.insert(UserId(1), "uno"), Some("one"));
        assert_eq!(map.len(), 3);
        assert_eq!(map.get(UserId(1)), Some(&"uno"));
        assert_eq!(map.get(UserId(2)), None);
        assert_eq!(map.get(UserId(u64::MAX)), Some(&"far"));
        assert_eq!(map.remove(UserId(3)), Some("three"));
        assert_eq!(map.remove(UserId(3)), None);
        assert_eq!(map.len(), 2);
        let mut values: Vec<_> = map.values().copied().collect();
        values.sort_unstable();
        assert_eq!(values, ["far", "uno"]);
    }

    #[test]
    fn a_far_id_moves_into_the_dense_part_when_it_grows_past_it() {
        let mut map: IdMap<GroupId, u64> = IdMap::default();
        let far = 5_000;
        map.insert(GroupId(far), far);
        assert_eq!(map.dense.len(), 0, "{far} is beyond twice the count plus the slack");
        for id in (0..far).chain([far + 1]) {
            map.insert(GroupId(id), id);
        }
        assert!(map.sparse.is_empty(), "growing the dense part took the far id in");
        assert_eq!(map.len(), usize::try_from(far + 2).unwrap_or(0));
        assert_eq!(map.get(GroupId(far)), Some(&far));
        if let Some(value) = map.get_mut(GroupId(far)) {
            *value += 1;
        }
        assert_eq!(map.get(GroupId(far)), Some(&(far + 1)));
    }
}
