//! Short lists and strings kept inside a directory record.
//!
//! A decision reads a user's memberships and username, and a project's path and ancestor
//! groups. Held behind a pointer, each is one more cache miss that cannot start before the
//! record has arrived; held in the record (which spans two or three adjacent lines, loaded
//! together), they arrive with it. Longer ones, rare, go to the heap as before.

use std::{fmt, num::NonZeroU8, ops::Deref};

use super::GroupId;

/// Up to `N` items in place, more on the heap.
///
/// INVARIANT: `Here` holds `len - 1` items (the length is stored plus one, so the enum
/// can keep its tag in the zero value and stay the size of its inline form); `Spilled`
/// holds more than `N`.
#[derive(Clone)]
pub(crate) enum InlineVec<T, const N: usize> {
    Here { items: [T; N], len: NonZeroU8 },
    Spilled(Vec<T>),
}

impl<T: Copy + Default, const N: usize> InlineVec<T, N> {
    const EMPTY_LEN: NonZeroU8 = NonZeroU8::MIN;
    // The stored length is `len + 1` in a byte: a capacity past 254 would not build.
    const CAPACITY_FITS: () = assert!(N < u8::MAX as usize, "an InlineVec holds at most 254 items in place");

    /// An empty list.
    pub(crate) fn new() -> Self {
        let () = Self::CAPACITY_FITS;
        InlineVec::Here { items: [T::default(); N], len: Self::EMPTY_LEN }
    }

    /// A list of `items`, in place when they fit.
    pub(crate) fn from_slice(items: &[T]) -> Self {
        let () = Self::CAPACITY_FITS;
        let stored = u8::try_from(items.len() + 1).ok().and_then(NonZeroU8::new).filter(|_| items.len() <= N);
        match stored {
            Some(len) => {
                let mut here = [T::default(); N];
                here[..items.len()].copy_from_slice(items);
                InlineVec::Here { items: here, len }
            }
            None => InlineVec::Spilled(items.to_vec()),
        }
    }

    /// Inserts `item` at `position` (at most the length).
    pub(crate) fn insert(&mut self, position: usize, item: T) {
        match self {
            InlineVec::Here { items, len } if usize::from(len.get() - 1) < N => {
                let count = usize::from(len.get() - 1);
                let position = position.min(count);
                items.copy_within(position..count, position + 1);
                items[position] = item;
                *len = len.saturating_add(1);
            }
            InlineVec::Here { items, .. } => {
                let mut spilled = Vec::with_capacity(2 * N);
                spilled.extend_from_slice(items);
                spilled.insert(position.min(N), item);
                *self = InlineVec::Spilled(spilled);
            }
            InlineVec::Spilled(items) => items.insert(position.min(items.len()), item),
        }
    }

    /// Removes the item at `position`, if there is one; a spilled list that fits again
    /// comes back in place.
    pub(crate) fn remove(&mut self, position: usize) {
        match self {
            InlineVec::Here { items, len } => {
                let count = usize::from(len.get() - 1);
                if position < count {
                    items.copy_within(position + 1..count, position);
                    *len = NonZeroU8::new(len.get() - 1).unwrap_or(Self::EMPTY_LEN);
                }
            }
            InlineVec::Spilled(items) => {
                if position < items.len() {
                    items.remove(position);
                }
                if items.len() <= N {
                    *self = InlineVec::from_slice(items);
                }
            }
        }
    }

    /// The item at `position`, to change it.
    pub(crate) fn get_mut(&mut self, position: usize) -> Option<&mut T> {
        match self {
            InlineVec::Here { items, len } => items[..usize::from(len.get() - 1)].get_mut(position),
            InlineVec::Spilled(items) => items.get_mut(position),
        }
    }

    /// Frees a spilled list's spare capacity.
    pub(crate) fn shrink_to_fit(&mut self) {
        if let InlineVec::Spilled(items) = self {
            items.shrink_to_fit();
        }
    }
}

impl<T: Copy + Default, const N: usize> Default for InlineVec<T, N> {
    fn default() -> Self {
        InlineVec::new()
    }
}

impl<T, const N: usize> Deref for InlineVec<T, N> {
    type Target = [T];

    fn deref(&self) -> &[T] {
        match self {
            InlineVec::Here { items, len } => &items[..usize::from(len.get() - 1)],
            InlineVec::Spilled(items) => items,
        }
    }
}

impl<T: fmt::Debug, const N: usize> fmt::Debug for InlineVec<T, N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

/// A string of up to `N` bytes in place, longer on the heap; reads as a `str`.
#[derive(Clone)]
pub struct InlineText<const N: usize>(InlineVec<u8, N>);

impl<const N: usize> InlineText<N> {
    /// `text`, in place when it fits.
    pub fn new(text: &str) -> Self {
        InlineText(InlineVec::from_slice(text.as_bytes()))
    }

    /// The text.
    pub fn as_str(&self) -> &str {
        // Always valid: the bytes were copied whole from a `str`.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }

    /// The text's bytes (no UTF-8 check: for comparisons on the decision path).
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// A boxed copy.
    pub fn to_boxed(&self) -> Box<str> {
        Box::from(self.as_str())
    }
}

impl<const N: usize> Deref for InlineText<N> {
    type Target = str;

    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl<const N: usize> AsRef<str> for InlineText<N> {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

impl<const N: usize> PartialEq for InlineText<N> {
    fn eq(&self, other: &Self) -> bool {
        self.as_bytes() == other.as_bytes()
    }
}

impl<const N: usize> Eq for InlineText<N> {}

impl<const N: usize> PartialEq<str> for InlineText<N> {
    fn eq(&self, other: &str) -> bool {
        self.as_bytes() == other.as_bytes()
    }
}

impl<const N: usize> PartialEq<&str> for InlineText<N> {
    fn eq(&self, other: &&str) -> bool {
        self.as_bytes() == other.as_bytes()
    }
}

impl<const N: usize> fmt::Display for InlineText<N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl<const N: usize> fmt::Debug for InlineText<N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

/// How many ancestor ids a record holds in place.
const CHAIN_HERE: usize = 8;

/// A group and its ancestors, nearest first: up to eight ids below 2³² in place (32 bytes),
/// others on the heap.
#[derive(Clone)]
pub(crate) enum Chain {
    Here(InlineVec<u32, CHAIN_HERE>),
    Spilled(Box<[GroupId]>),
}

impl Chain {
    /// No group.
    pub(crate) fn empty() -> Chain {
        Chain::Here(InlineVec::new())
    }

    /// The chain `ids`, in place when they fit.
    pub(crate) fn new(ids: &[GroupId]) -> Chain {
        let small: Option<Vec<u32>> = ids.iter().map(|id| u32::try_from(id.0).ok()).collect();
        match small {
            Some(small) if small.len() <= CHAIN_HERE => Chain::Here(InlineVec::from_slice(&small)),
            _ => Chain::Spilled(ids.into()),
        }
    }

    /// How many groups.
    pub(crate) fn len(&self) -> usize {
        match self {
            Chain::Here(ids) => ids.len(),
            Chain::Spilled(ids) => ids.len(),
        }
    }

    /// The groups, nearest first, into `out` (as many as fit); returns how many.
    pub(crate) fn copy_into(&self, out: &mut [GroupId]) -> usize {
        match self {
            Chain::Here(ids) => {
                let len = ids.len().min(out.len());
                for (slot, id) in out.iter_mut().zip(&ids[..len]) {
                    *slot = GroupId(u64::from(*id));
                }
                len
            }
            Chain::Spilled(ids) => {
                let len = ids.len().min(out.len());
                out[..len].copy_from_slice(&ids[..len]);
                len
            }
        }
    }

    /// Starts loading the ids (the record's own line when in place), for [`crate::warm`].
    pub(crate) fn prefetch(&self) {
        match self {
            Chain::Here(ids) => prefetch_index::prefetch_index(ids.as_ref(), 0),
            Chain::Spilled(ids) => prefetch_index::prefetch_index(ids, 0),
        }
    }
}

impl fmt::Debug for Chain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut ids = [GroupId(0); super::MAX_GROUP_DEPTH + 1];
        let len = self.copy_into(&mut ids);
        f.debug_list().entries(&ids[..len]).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_move_to_the_heap_past_their_capacity_and_back() {
        let mut list: InlineVec<u64, 3> = InlineVec::new();
        for (position, item) in [(0, 20), (0, 10), (2, 40), (2, 30)] {
            list.insert(position, item);
        }
        assert_eq!(&*list, &[10, 20, 30, 40]);
        assert!(matches!(list, InlineVec::Spilled(_)));
        list.remove(1);
        assert_eq!(&*list, &[10, 30, 40]);
        assert!(matches!(list, InlineVec::Here { .. }));
        list.remove(7);
        assert_eq!(list.len(), 3);
        if let Some(item) = list.get_mut(2) {
            *item = 41;
        }
        assert_eq!(&*list, &[10, 30, 41]);
        assert_eq!(list.get_mut(3), None);
    }

    #[test]
    fn random_inserts_and_removes_match_a_vector() {
        let mut list: InlineVec<u32, 4> = InlineVec::new();
        let mut model: Vec<u32> = Vec::new();
        let mut state = 0x2545_f491_u32;
        let (mut crossings, mut was_spilled) = (0, false);
        for step in 0..2000 {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            // Grow by six, then shrink by six, so the length keeps crossing the capacity
            // both ways (counted below).
            if (step / 6) % 2 == 0 {
                let position = state as usize % (model.len() + 2);
                list.insert(position, step);
                model.insert(position.min(model.len()), step);
            } else {
                let position = state as usize % model.len().max(1);
                list.remove(position);
                if position < model.len() {
                    model.remove(position);
                }
            }
            let spilled = matches!(list, InlineVec::Spilled(_));
            crossings += usize::from(spilled != was_spilled);
            was_spilled = spilled;
            assert_eq!(&*list, &model[..], "step {step}");
            assert_eq!(matches!(list, InlineVec::Here { .. }), model.len() <= 4, "step {step}");
        }
        assert!(crossings > 100, "{crossings}");
    }

    #[test]
    fn texts_read_back_whole_in_place_or_not() {
        for text in ["", "acme", "acme/platform/infra/a-rather-long-project-name-past-the-record"] {
            let inline: InlineText<16> = InlineText::new(text);
            assert_eq!(inline.as_str(), text);
            assert_eq!(inline, text);
            assert_eq!(matches!(inline.0, InlineVec::Here { .. }), text.len() <= 16);
        }
    }

    #[test]
    fn chains_with_large_ids_or_many_groups_spill() {
        let ids = |raw: &[u64]| raw.iter().map(|id| GroupId(*id)).collect::<Vec<_>>();
        for (raw, here) in
            [(&[3_u64, 2, 1][..], true), (&[1 << 40, 1][..], false), (&[9, 8, 7, 6, 5, 4, 3, 2, 1][..], false)]
        {
            let chain = Chain::new(&ids(raw));
            assert_eq!(matches!(chain, Chain::Here(_)), here, "{raw:?}");
            let mut out = [GroupId(0); 21];
            let len = chain.copy_into(&mut out);
            assert_eq!(&out[..len], &ids(raw)[..]);
            assert_eq!(chain.len(), raw.len());
        }
    }
}
