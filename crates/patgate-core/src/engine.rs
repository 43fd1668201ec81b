//! Everything a decision needs, in one place: the resource table, the index, the token
//! format and the digest key.

use crate::{
    decision::{Decision, DenyReason, Request, decide_under, find_token},
    index::Index,
    policy::Policy,
    resource::Resources,
    time::Timestamp,
    token::{DigestKey, ParsedToken, TokenFormat, TokenParseError},
    warm,
};

/// The decision engine of one patgate instance.
#[derive(Clone, Debug)]
pub struct Engine {
    pub resources: Resources,
    pub index: Index,
    pub format: TokenFormat,
    pub key: DigestKey,
    /// The instance policy enforced at use.
    pub policy: Policy,
}

impl Engine {
    /// The whole in-process path for a presented token string: parse (offline), digest,
    /// look up, decide.
    pub fn decide_presented(&self, presented: &str, request: &Request<'_>, now: Timestamp) -> Decision {
        self.decide_token(&self.present(presented), request, now)
    }

    /// The first step of [`Engine::decide_presented`], for a caller that has other work to do
    /// before it knows the request: the token string parsed (offline), and the load of its
    /// table entry (found by the token's hint, before its digest is computed) started, so
    /// that it arrives while the caller routes the request. Reads nothing but the string.
    pub fn present<'t>(&self, presented: &'t str) -> PresentedToken<'t> {
        let parsed = self.format.parse(presented);
        if let Ok(parsed) = &parsed {
            self.index.prefetch_hint(parsed.hint());
        }
        PresentedToken { parsed }
    }

    /// The rest of [`Engine::decide_presented`]: digest, look up, decide.
    pub fn decide_token(&self, presented: &PresentedToken<'_>, request: &Request<'_>, now: Timestamp) -> Decision {
        let parsed = match &presented.parsed {
            Ok(parsed) => parsed,
            Err(error) => return Decision::deny(DenyReason::Malformed(*error)),
        };
        warm::prefetch_boundary(&self.index, request);
        // The token's record and its owner's are found from the hint's table entry, which
        // `present` started loading: they arrive while the digest is computed.
        self.index.prefetch_by_hint(parsed.hint());
        let address = self.key.address(parsed);
        warm::warm(&self.index, &address, request);
        match find_token(&self.index, parsed, &address) {
            Ok(token) => decide_under(&self.resources, &self.index.directory, &self.policy, token, request, now),
            Err(reason) => Decision::deny(reason),
        }
    }
}

/// A token string as [`Engine::present`] leaves it: parsed, its table entry on its way.
#[derive(Debug)]
pub struct PresentedToken<'t> {
    parsed: Result<ParsedToken<'t>, TokenParseError>,
}
