//! Tokens as the decision sees them, and their string format.

pub mod format;

use std::fmt;

use crate::{directory::UserId, grant::Grant, net::IpNet, scope::ScopeSet, time::Timestamp};

pub use format::{
    DigestKey, DigestKeyError, ParsedToken, PlainToken, TokenDigest, TokenFormat, TokenKind, TokenParseError,
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
    /// The first instant at which the token no longer works; `None` never expires.
    pub expires_at: Option<Timestamp>,
    pub revoked: bool,
    /// Client addresses the token may be used from; empty means anywhere.
    pub allowed_ips: Box<[IpNet]>,
}

impl TokenRecord {
    /// Whether the token has expired at `now` (expiry is exclusive: at `expires_at` it is
    /// already expired).
    pub fn is_expired(&self, now: Timestamp) -> bool {
        self.expires_at.is_some_and(|expires_at| now >= expires_at)
    }
}
