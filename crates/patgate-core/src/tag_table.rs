//! An open-addressing table from a 64-bit tag to 64-bit values (slots or ids), for the lookups on the
//! decision path (a token by its digest, a project or group by its path).
//!
//! A general hash map costs two cache misses per cold lookup (its control bytes, then its
//! bucket) plus a third when the key lives on the heap. Here an entry is 16 bytes, the tag
//! stands in for the key, and the first probe is usually the only one: a cold lookup is one
//! miss. Tags may collide, so a lookup yields candidates and the caller checks each against
//! the record it points at.
//!
//! A table may place entries by the tag's high bits only (`HOME_SHIFT` > 0): a lookup can
//! then start loading an entry's line from a partial key, before the rest of the tag is
//! known, while a match still compares the whole tag.

/// One entry; a zero tag marks an empty entry.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Entry {
    tag: u64,
    value: u64,
}

/// Tag → value candidates, with linear probing at most half full; an entry's home is found
/// from the tag's bits above `HOME_SHIFT`.
///
/// INVARIANT: `entries.len()` is zero or a power of two at least twice `len`; every entry
/// with a non-zero tag is reachable from its home index without crossing an empty entry.
#[derive(Clone, Debug, Default)]
pub(crate) struct TagTable<const HOME_SHIFT: u32 = 0> {
    entries: Vec<Entry>,
    len: usize,
}

// Zero marks an empty entry, so a zero tag is stored as one (a collision like any other).
fn stored(tag: u64) -> u64 {
    tag.max(1)
}

impl<const HOME_SHIFT: u32> TagTable<HOME_SHIFT> {
    fn mask(&self) -> usize {
        self.entries.len().wrapping_sub(1)
    }

    // Fibonacci hashing of the tag's placing bits, so tags with poor low bits still spread.
    fn home(&self, tag: u64) -> usize {
        let bits = self.entries.len().trailing_zeros();
        if bits == 0 {
            return 0;
        }
        ((tag >> HOME_SHIFT).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> (64 - bits)) as usize
    }

    /// The values stored under `tag`.
    pub(crate) fn get(&self, tag: u64) -> impl Iterator<Item = u64> + '_ {
        let tag = stored(tag);
        let mask = self.mask();
        let mut index = if self.entries.is_empty() { None } else { Some(self.home(tag)) };
        std::iter::from_fn(move || {
            loop {
                let at = index?;
                let entry = self.entries.get(at).copied().unwrap_or_default();
                if entry.tag == 0 {
                    index = None;
                    return None;
                }
                index = Some((at + 1) & mask);
                if entry.tag == tag {
                    return Some(entry.value);
                }
            }
        })
    }

    /// Starts loading the entry where a lookup of `tag` begins, without waiting for it; only
    /// the bits above `HOME_SHIFT` of `tag` matter.
    pub(crate) fn prefetch(&self, tag: u64) {
        if !self.entries.is_empty() {
            prefetch_index::prefetch_index(&self.entries, self.home(stored(tag)));
        }
    }

    /// The value of the first entry whose tag has the same bits above `HOME_SHIFT` as `tag`
    /// (a partial key: the rest of the tag is not known yet), in probe order; unconfirmed,
    /// for a prefetch. Reads the entries from the home on, as a lookup does.
    pub(crate) fn first_at_home(&self, tag: u64) -> Option<u64> {
        let placing = stored(tag) >> HOME_SHIFT;
        let mask = self.mask();
        let mut index = if self.entries.is_empty() { return None } else { self.home(stored(tag)) };
        loop {
            let entry = self.entries.get(index).copied().unwrap_or_default();
            if entry.tag == 0 {
                return None;
            }
            if entry.tag >> HOME_SHIFT == placing {
                return Some(entry.value);
            }
            index = (index + 1) & mask;
        }
    }

    /// Adds `value` under `tag` (a tag may hold several values).
    pub(crate) fn insert(&mut self, tag: u64, value: u64) {
        if (self.len + 1) * 2 > self.entries.len() {
            self.grow();
        }
        self.place(Entry { tag: stored(tag), value });
        self.len += 1;
    }

    fn place(&mut self, entry: Entry) {
        let mask = self.mask();
        let mut index = self.home(entry.tag);
        while let Some(current) = self.entries.get_mut(index) {
            if current.tag == 0 {
                *current = entry;
                return;
            }
            index = (index + 1) & mask;
        }
    }

    fn grow(&mut self) {
        let capacity = (self.entries.len() * 2).max(16);
        let old = std::mem::replace(&mut self.entries, vec![Entry::default(); capacity]);
        for entry in old.into_iter().filter(|entry| entry.tag != 0) {
            self.place(entry);
        }
    }

    /// Makes room for `additional` more entries without growing.
    pub(crate) fn reserve(&mut self, additional: usize) {
        let needed = ((self.len + additional) * 2).next_power_of_two();
        if needed > self.entries.len() {
            let old = std::mem::replace(&mut self.entries, vec![Entry::default(); needed]);
            for entry in old.into_iter().filter(|entry| entry.tag != 0) {
                self.place(entry);
            }
        }
    }

    /// Removes `value` from under `tag`; returns whether it was there.
    pub(crate) fn remove(&mut self, tag: u64, value: u64) -> bool {
        let tag = stored(tag);
        let mask = self.mask();
        if self.entries.is_empty() {
            return false;
        }
        let mut index = self.home(tag);
        loop {
            let Some(entry) = self.entries.get(index).copied() else { return false };
            if entry.tag == 0 {
                return false;
            }
            if entry == (Entry { tag, value }) {
                break;
            }
            index = (index + 1) & mask;
        }
        // Backward-shift deletion: pull later entries of the run into the hole when the
        // hole lies between their home and where they sit.
        let mut hole = index;
        let mut next = index;
        loop {
            next = (next + 1) & mask;
            let entry = self.entries.get(next).copied().unwrap_or_default();
            if entry.tag == 0 {
                break;
            }
            let home = self.home(entry.tag);
            if next.wrapping_sub(home) & mask >= next.wrapping_sub(hole) & mask {
                if let Some(target) = self.entries.get_mut(hole) {
                    *target = entry;
                }
                hole = next;
            }
        }
        if let Some(target) = self.entries.get_mut(hole) {
            *target = Entry::default();
        }
        self.len -= 1;
        true
    }

    /// How many entries the table holds.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.len
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use proptest::prelude::*;

    use super::*;

    #[derive(Clone, Debug)]
    enum Step {
        Insert(u64, u64),
        Remove(u64, u64),
    }

    fn step() -> impl Strategy<Value = Step> {
        // Few distinct tags and slots, so collisions, repeats and long runs are common.
        let tag = prop_oneof![0_u64..4, 0_u64..64, any::<u64>()];
        prop_oneof![
            (tag.clone(), 0_u64..8).prop_map(|(tag, slot)| Step::Insert(tag, slot)),
            (tag, 0_u64..8).prop_map(|(tag, slot)| Step::Remove(tag, slot)),
        ]
    }

    // The table answers as a multiset of (tag, slot) pairs does, after `steps`.
    fn answers_as_a_multiset<const HOME_SHIFT: u32>(steps: &[Step]) -> Result<(), TestCaseError> {
        let mut table = TagTable::<HOME_SHIFT>::default();
        let mut model: BTreeMap<u64, Vec<u64>> = BTreeMap::new();
        for step in steps {
            match *step {
                Step::Insert(tag, slot) => {
                    table.insert(tag, slot);
                    model.entry(stored(tag)).or_default().push(slot);
                }
                Step::Remove(tag, slot) => {
                    let slots = model.entry(stored(tag)).or_default();
                    let expected = slots.iter().position(|s| *s == slot).map(|at| slots.swap_remove(at));
                    prop_assert_eq!(table.remove(tag, slot), expected.is_some());
                }
            }
            prop_assert_eq!(table.len(), model.values().map(Vec::len).sum::<usize>());
        }
        for (tag, slots) in &model {
            let mut found: Vec<u64> = table.get(*tag).collect();
            let mut expected = slots.clone();
            found.sort_unstable();
            expected.sort_unstable();
            prop_assert_eq!(found, expected);
        }
        prop_assert_eq!(table.get(u64::MAX - 7).count(), model.get(&(u64::MAX - 7)).map_or(0, Vec::len));
        // The first entry at a partial key names a value stored under a tag with the same
        // placing bits whenever there is one, and nothing otherwise.
        for probe in model.keys().copied().chain([0, 5, u64::MAX - 7]) {
            let placing = stored(probe) >> HOME_SHIFT;
            let sharing: Vec<u64> = model
                .iter()
                .filter(|(tag, _)| **tag >> HOME_SHIFT == placing)
                .flat_map(|(_, slots)| slots.iter().copied())
                .collect();
            match table.first_at_home(probe) {
                Some(value) => prop_assert!(sharing.contains(&value), "{value} is not at {probe}'s home"),
                None => prop_assert!(sharing.is_empty(), "nothing found at {probe}'s home, but {sharing:?}"),
            }
        }
        Ok(())
    }

    proptest! {
        #[test]
        fn the_table_behaves_as_a_multiset(steps in prop::collection::vec(step(), 0..400)) {
            answers_as_a_multiset::<0>(&steps)?;
        }

        /// Placed by the high bits only: tags that differ below them share a home and a run.
        #[test]
        fn a_table_placed_by_high_bits_behaves_as_a_multiset(steps in prop::collection::vec(step(), 0..400)) {
            answers_as_a_multiset::<62>(&steps)?;
        }
    }

    #[test]
    fn an_empty_table_finds_nothing_and_removes_nothing() {
        let mut table = TagTable::<0>::default();
        assert_eq!(table.get(42).count(), 0);
        assert!(!table.remove(42, 1));
        table.reserve(1000);
        assert_eq!(table.get(42).count(), 0);
        table.insert(42, 7);
        assert_eq!(table.get(42).collect::<Vec<_>>(), [7]);
    }
}
