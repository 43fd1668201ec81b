//! The in-memory index the decision runs on: the directory plus every token by digest.

use std::{
    collections::HashMap,
    hash::{BuildHasherDefault, Hasher},
};

use crate::{
    directory::{Directory, FastMap, UserId},
    time::Timestamp,
    token::{TokenDigest, TokenId, TokenRecord},
};

/// Passes a digest's first eight bytes through as the hash: the digest is already keyed
/// and uniform, so hashing it again would only cost time.
#[derive(Default, Clone, Copy, Debug)]
pub struct DigestHasher(u64);

impl Hasher for DigestHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only reached if a digest is hashed some other way than `write_u64`.
        for byte in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*byte);
        }
    }

    fn write_u64(&mut self, word: u64) {
        self.0 = word;
    }
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

/// The directory and all tokens, kept current by incremental updates.
///
/// INVARIANT: `by_digest` and `by_id` point at the same slots of `tokens`, one slot per
/// token; tokens are never removed (revoked ones stay, so their use is answered
/// `revoked`).
#[derive(Clone, Debug, Default)]
pub struct Index {
    pub directory: Directory,
    tokens: Vec<TokenRecord>,
    by_digest: HashMap<TokenDigest, u32, BuildHasherDefault<DigestHasher>>,
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
        if self.by_digest.contains_key(&digest) {
            return Err(IndexError::DuplicateDigest);
        }
        let slot = u32::try_from(self.tokens.len()).map_err(|_| IndexError::DuplicateId(record.id))?;
        self.by_id.insert(record.id, slot);
        self.by_digest.insert(digest, slot);
        self.tokens.push(record);
        Ok(())
    }

    fn record_mut(&mut self, id: TokenId) -> Result<&mut TokenRecord, IndexError> {
        let slot = *self.by_id.get(&id).ok_or(IndexError::UnknownToken(id))?;
        self.tokens.get_mut(slot as usize).ok_or(IndexError::UnknownToken(id))
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
        self.by_id.get(&id).and_then(|slot| self.tokens.get(*slot as usize))
    }

    /// Every token, in insertion order.
    pub fn tokens(&self) -> impl Iterator<Item = &TokenRecord> {
        self.tokens.iter()
    }

    /// Every token of `owner` (a scan: for management, not for decisions).
    pub fn tokens_of(&self, owner: UserId) -> impl Iterator<Item = &TokenRecord> {
        self.tokens.iter().filter(move |token| token.owner == owner)
    }

    /// How many tokens the index holds.
    pub fn token_count(&self) -> usize {
        self.tokens.len()
    }
}

impl TokenLookup for Index {
    fn token_by_digest(&self, digest: &TokenDigest) -> Option<&TokenRecord> {
        self.by_digest.get(digest).and_then(|slot| self.tokens.get(*slot as usize))
    }
}
