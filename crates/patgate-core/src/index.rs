//! The in-memory index the decision runs on: the directory plus every token by digest.

use crate::{
    directory::{Directory, FastMap, UserId},
    tag_table::TagTable,
    time::Timestamp,
    token::{TokenAddress, TokenDigest, TokenHint, TokenId, TokenRecord},
};

// A hint table tag: the hint above `DIGEST_BITS` bits of the digest. Never zero.
const DIGEST_BITS: u32 = 40;

fn tag(address: &TokenAddress) -> u64 {
    (address.hint.tag() << DIGEST_BITS) | (address.digest.tag() & ((1 << DIGEST_BITS) - 1))
}

// Where a hint's entries start: the same bits, the digest's left out.
fn home(hint: TokenHint) -> u64 {
    hint.tag() << DIGEST_BITS
}

// A hint table value: the slot in the low 32 bits and, when it fits, the owner's id plus
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
    /// The token at `address` (the one whose digest it names).
    fn token_at(&self, address: &TokenAddress) -> Option<&TokenRecord>;
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
/// INVARIANT: `by_hint` (tagged with the token's hint and digest bits, see `tag`) and
/// `by_id` point at the same slots of `tokens`, one slot per token; tokens are never removed (revoked ones stay, so their
/// use is answered `revoked`).
#[derive(Clone, Debug, Default)]
pub struct Index {
    pub directory: Directory,
    tokens: Vec<Stored>,
    // Placed by the hint, tagged with the hint and 40 bits of the digest (`tag`): the hint
    // is known before the digest is computed, so the entry's load overlaps that work, and
    // the digest bits tell apart the tokens sharing a hint (about 7 % of a million) and
    // turn away a forged token with a real hint before anything else is read.
    by_hint: TagTable<DIGEST_BITS>,
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
        self.by_hint.reserve(tokens);
        self.by_id.reserve(tokens);
    }

    /// Adds a token at its address.
    pub fn insert_token(&mut self, address: TokenAddress, record: TokenRecord) -> Result<(), IndexError> {
        if self.by_id.contains_key(&record.id) {
            return Err(IndexError::DuplicateId(record.id));
        }
        if self.slot_of(&address).is_some() {
            return Err(IndexError::DuplicateDigest);
        }
        let slot = u32::try_from(self.tokens.len()).map_err(|_| IndexError::DuplicateId(record.id))?;
        self.by_id.insert(record.id, slot);
        self.by_hint.insert(tag(&address), pack(slot, record.owner));
        self.tokens.push(Stored { digest: address.digest, record });
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
    // The slot of the token at `address`: the tag (hint and 40 digest bits) narrows to
    // candidates (almost always one), the stored digest confirms.
    fn slot_of(&self, address: &TokenAddress) -> Option<usize> {
        self.by_hint
            .get(tag(address))
            .filter_map(|value| usize::try_from(unpack(value).0).ok())
            .find(|slot| self.tokens.get(*slot).is_some_and(|stored| stored.digest == address.digest))
    }
}

impl Index {
    /// Starts loading the entry a lookup of a token with `hint` reads first; call it before
    /// computing the digest, so the load overlaps that work. For [`crate::warm`].
    pub(crate) fn prefetch_hint(&self, hint: TokenHint) {
        self.by_hint.prefetch(home(hint));
    }

    /// Starts loading the token record and the owner's first line that the first entry
    /// under `hint` names (without waiting for them), once that entry, loaded since
    /// [`Index::prefetch_hint`], is there: call it before computing the digest, so that the
    /// records' loads overlap that work. Unconfirmed (another token may share the hint; the
    /// lookup by digest decides), and nothing of the records is read: for [`crate::warm`].
    pub(crate) fn prefetch_by_hint(&self, hint: TokenHint) {
        if let Some((slot, owner)) = self.by_hint.first_at_home(home(hint)).map(unpack) {
            self.prefetch_stored(slot);
            if let Some(owner) = owner {
                self.directory.prefetch_user(owner);
            }
        }
    }

    /// The first slot at `address` and its token's owner, confirmed by 40 bits of the
    /// digest (the record's digest confirms it whole): for [`crate::warm`].
    pub(crate) fn first_slot(&self, address: &TokenAddress) -> Option<(u32, Option<UserId>)> {
        self.by_hint.get(tag(address)).next().map(unpack)
    }

    /// Starts loading both cache lines of the token in `slot` (its digest, and the record
    /// the decision reads), without waiting for either: for [`crate::warm`]. Nothing of the
    /// token is read here (the references are addresses), so the loads go out together with
    /// the owner's.
    pub(crate) fn prefetch_stored(&self, slot: u32) {
        if let Some(stored) = usize::try_from(slot).ok().and_then(|slot| self.tokens.get(slot)) {
            prefetch_index::prefetch_index(std::slice::from_ref(stored), 0);
            prefetch_index::prefetch_index(std::slice::from_ref(&stored.record.authority), 0);
        }
    }

    /// The digest and the record in `slot` (the two cache lines of a token), for
    /// [`crate::warm`].
    pub(crate) fn stored_at(&self, slot: u32) -> Option<(&TokenDigest, &TokenRecord)> {
        usize::try_from(slot).ok().and_then(|slot| self.tokens.get(slot)).map(|stored| (&stored.digest, &stored.record))
    }
}

impl TokenLookup for Index {
    fn token_at(&self, address: &TokenAddress) -> Option<&TokenRecord> {
        self.slot_of(address).and_then(|slot| self.tokens.get(slot)).map(|stored| &stored.record)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        scope::ScopeSet,
        time::Timestamp,
        token::{Authority, DigestKey, TokenFormat, TokenKind, format::RANDOM_CHARS},
    };

    fn record(id: u64) -> TokenRecord {
        TokenRecord {
            id: TokenId(id),
            owner: UserId(id),
            authority: Authority::Legacy(ScopeSet::EMPTY),
            created_at: Timestamp(0),
            expires_at: None,
            revoked_at: None,
            allowed_ips: Box::new([]),
        }
    }

    #[test]
    fn a_token_is_two_cache_lines_and_the_warm_up_prefetches_both() {
        // `prefetch_stored` starts the slot's first line and the line of the record's
        // authority: these must be the slot's two lines (a field added or moved changes them).
        assert_eq!(std::mem::size_of::<Stored>(), 128);
        let authority = std::mem::offset_of!(Stored, record) + std::mem::offset_of!(TokenRecord, authority);
        assert_eq!(authority / 64, 1, "the authority is on the second line");
    }

    #[test]
    fn tokens_sharing_a_hint_are_told_apart_by_their_digest() {
        let format = TokenFormat::new("").unwrap();
        let key = DigestKey::new(&[3; 32]).unwrap();
        let token = |last: u8| {
            let mut random = [b'a'; RANDOM_CHARS];
            random[RANDOM_CHARS - 1] = last;
            format.assemble(TokenKind::Legacy, &random)
        };
        let (first, second, unknown) = (token(b'1'), token(b'2'), token(b'3'));
        assert_eq!(first.hint(), second.hint());
        let mut index = Index::new();
        index.insert_token(key.address_plain(&first), record(1)).unwrap();
        index.insert_token(key.address_plain(&second), record(2)).unwrap();
        assert_eq!(index.token_at(&key.address_plain(&first)).map(|t| t.id), Some(TokenId(1)));
        assert_eq!(index.token_at(&key.address_plain(&second)).map(|t| t.id), Some(TokenId(2)));
        assert_eq!(index.token_at(&key.address_plain(&unknown)), None);
        // The warm-up's entry check already turns the unknown one away (digest bits differ).
        assert!(index.first_slot(&key.address_plain(&first)).is_some());
        assert_eq!(index.first_slot(&key.address_plain(&unknown)), None);
        assert_eq!(index.insert_token(key.address_plain(&second), record(3)), Err(IndexError::DuplicateDigest));
        assert_eq!(index.token_count(), 2);
    }
}
