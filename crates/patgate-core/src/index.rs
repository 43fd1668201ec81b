//! The in-memory index the decision runs on: the directory plus every token by digest.

use crate::{
    directory::{Directory, FastMap, UserId},
    tag_table::TagTable,
    time::Timestamp,
    token::{TokenDigest, TokenId, TokenRecord},
};

// A digest table value: the slot in the low 32 bits and, when it fits, the owner's id plus
// one above them (zero: not packed). The owner never changes, and carrying it here lets
// `warm` load the owner together with the token's record instead of after it.
fn pack(slot: u32, owner: UserId) -> u64 {
    let owner = u32::try_from(owner.0).ok().and_then(|id| id.checked_add(1)).unwrap_or(0);
    (u64::from(owner) << 32) | u64::from(slot)
}

fn unpack(value: u64) -> (u32, Option<UserId>) {
    let slot = (value & u64::from(u32::MAX)) as u32;
    let owner = (value >> 32).checked_sub(1).map(UserId);
    (slot, owner)
}

/// Where the decision looks tokens up. Implemented by [`Index`]; tests count calls.
pub trait TokenLookup {
    /// The token whose digest is `digest`.
    fn token_by_digest(&self, digest: &TokenDigest) -> Option<&TokenRecord>;
}

/// A refused change to the token index. Nothing was changed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IndexError {
    #[error("token {0} already exists")]
    DuplicateId(TokenId),
    #[error("a token with this digest already exists")]
    DuplicateDigest,
    #[error("no token {0}")]
    UnknownToken(TokenId),
}

/// A token with its digest, two cache lines: a lookup checks the digest and reads the
/// record from the same place.
#[derive(Clone, Debug)]
#[repr(align(64))]
struct Stored {
    digest: TokenDigest,
    record: TokenRecord,
}

/// The directory and all tokens, kept current by incremental updates.
///
/// INVARIANT: `by_digest` (tagged with the digest's first eight bytes) and `by_id` point
/// at the same slots of `tokens`, one slot per token; tokens are never removed (revoked
/// ones stay, so their use is answered `revoked`).
#[derive(Clone, Debug, Default)]
pub struct Index {
    pub directory: Directory,
    tokens: Vec<Stored>,
    by_digest: TagTable,
    by_id: FastMap<TokenId, u32>,
}

impl Index {
    /// An empty index.
    pub fn new() -> Index {
        Index::default()
    }

    /// Reserves room for `tokens` more tokens.
    pub fn reserve_tokens(&mut self, tokens: usize) {
        self.tokens.reserve_exact(tokens);
        self.by_digest.reserve(tokens);
        self.by_id.reserve(tokens);
    }

    /// Adds a token under its digest.
    pub fn insert_token(&mut self, digest: TokenDigest, record: TokenRecord) -> Result<(), IndexError> {
        if self.by_id.contains_key(&record.id) {
            return Err(IndexError::DuplicateId(record.id));
        }
        if self.slot_of(&digest).is_some() {
            return Err(IndexError::DuplicateDigest);
        }
        let slot = u32::try_from(self.tokens.len()).map_err(|_| IndexError::DuplicateId(record.id))?;
        self.by_id.insert(record.id, slot);
        self.by_digest.insert(digest.tag(), pack(slot, record.owner));
        self.tokens.push(Stored { digest, record });
        Ok(())
    }

    fn record_mut(&mut self, id: TokenId) -> Result<&mut TokenRecord, IndexError> {
        let slot = *self.by_id.get(&id).ok_or(IndexError::UnknownToken(id))?;
        self.tokens.get_mut(slot as usize).map(|stored| &mut stored.record).ok_or(IndexError::UnknownToken(id))
    }

    /// Marks a token revoked from `at` on (the moment of revocation, or the end of a
    /// rotation's grace period).
    pub fn revoke(&mut self, id: TokenId, at: Timestamp) -> Result<(), IndexError> {
        self.record_mut(id)?.revoked_at = Some(at);
        Ok(())
    }

    /// Changes a token's expiry.
    pub fn set_expiry(&mut self, id: TokenId, expires_at: Option<Timestamp>) -> Result<(), IndexError> {
        self.record_mut(id)?.expires_at = expires_at;
        Ok(())
    }

    /// The token with `id`.
    pub fn token(&self, id: TokenId) -> Option<&TokenRecord> {
        self.by_id.get(&id).and_then(|slot| self.tokens.get(*slot as usize)).map(|stored| &stored.record)
    }

    /// Every token, in insertion order.
    pub fn tokens(&self) -> impl Iterator<Item = &TokenRecord> {
        self.tokens.iter().map(|stored| &stored.record)
    }

    /// Every token of `owner` (a scan: for management, not for decisions).
    pub fn tokens_of(&self, owner: UserId) -> impl Iterator<Item = &TokenRecord> {
        self.tokens().filter(move |token| token.owner == owner)
    }

    /// How many tokens the index holds.
    pub fn token_count(&self) -> usize {
        self.tokens.len()
    }
}

impl Index {
    // The slot of the token with `digest`: the tag narrows to candidates (almost always
    // one), the stored digest confirms.
    fn slot_of(&self, digest: &TokenDigest) -> Option<usize> {
        self.by_digest
            .get(digest.tag())
            .filter_map(|value| usize::try_from(unpack(value).0).ok())
            .find(|slot| self.tokens.get(*slot).is_some_and(|stored| stored.digest == *digest))
    }
}

impl Index {
    /// The first slot under `digest`'s tag and its token's owner, unconfirmed: for
    /// [`crate::warm`].
    pub(crate) fn first_slot(&self, digest: &TokenDigest) -> Option<(u32, Option<UserId>)> {
        self.by_digest.get(digest.tag()).next().map(unpack)
    }

    /// The digest's tag and the record in `slot` (the two cache lines of a token), for
    /// [`crate::warm`].
    pub(crate) fn stored_at(&self, slot: u32) -> Option<(u64, &TokenRecord)> {
        usize::try_from(slot)
            .ok()
            .and_then(|slot| self.tokens.get(slot))
            .map(|stored| (stored.digest.tag(), &stored.record))
    }
}

impl TokenLookup for Index {
    fn token_by_digest(&self, digest: &TokenDigest) -> Option<&TokenRecord> {
        self.slot_of(digest).and_then(|slot| self.tokens.get(slot)).map(|stored| &stored.record)
    }
}
