//! Tokens as the decision sees them, and their string format.

pub mod format;

use std::fmt;

use crate::{directory::UserId, grant::Grant, net::IpNet, scope::ScopeSet, time::Timestamp};

pub use format::{
    DigestKey, DigestKeyError, ParsedToken, PlainToken, TokenAddress, TokenDigest, TokenFormat, TokenHint, TokenKind,
    TokenParseError,
};

/// A token's numeric id; lists and audit events name tokens by it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TokenId(pub u64);

impl fmt::Display for TokenId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

/// What a token may do: legacy scopes, or fine-grained grants.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Authority {
    Legacy(ScopeSet),
    /// INVARIANT: at least one grant.
    FineGrained(Box<[Grant]>),
}

impl Authority {
    /// The kind of token this authority belongs to.
    pub fn kind(&self) -> TokenKind {
        match self {
            Authority::Legacy(_) => TokenKind::Legacy,
            Authority::FineGrained(_) => TokenKind::FineGrained,
        }
    }
}

/// A stored token, without its secret or digest: what the decision needs to know.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenRecord {
    pub id: TokenId,
    pub owner: UserId,
    pub authority: Authority,
    /// When the token was made (lifetime caps count from its day).
    pub created_at: Timestamp,
    /// The first instant at which the token no longer works; `None` never expires.
    pub expires_at: Option<Timestamp>,
    /// The first instant at which the token counts as revoked: the moment of revocation,
    /// or the end of the grace period after a rotation. `None` while it is not revoked.
    pub revoked_at: Option<Timestamp>,
    /// Client addresses the token may be used from; empty means anywhere.
    pub allowed_ips: Box<[IpNet]>,
}

impl TokenRecord {
    /// Whether the token has expired at `now` (expiry is exclusive: at `expires_at` it is
    /// already expired).
    pub fn is_expired(&self, now: Timestamp) -> bool {
        self.expires_at.is_some_and(|expires_at| now >= expires_at)
    }

    /// Whether the token is revoked at `now` (a rotated token keeps working until the end
    /// of its grace period).
    pub fn is_revoked(&self, now: Timestamp) -> bool {
        self.revoked_at.is_some_and(|revoked_at| now >= revoked_at)
    }
}
