//! Everything a decision needs, in one place: the resource table, the index, the token
//! format and the digest key.

use crate::{
    decision::{Decision, DenyReason, Request, decide_under, find_token},
    index::Index,
    policy::Policy,
    resource::Resources,
    time::Timestamp,
    token::{DigestKey, TokenFormat},
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
        let parsed = match self.format.parse(presented) {
            Ok(parsed) => parsed,
            Err(error) => return Decision::deny(DenyReason::Malformed(error)),
        };
        let hint = parsed.hint();
        warm::prefetch_first(&self.index, hint, request);
        let address = self.key.address(&parsed);
        warm::warm(&self.index, &address, request);
        match find_token(&self.index, &parsed, &address) {
            Ok(token) => decide_under(&self.resources, &self.index.directory, &self.policy, token, request, now),
            Err(reason) => Decision::deny(reason),
        }
    }
}
