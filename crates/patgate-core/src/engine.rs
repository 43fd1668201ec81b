//! Everything a decision needs, in one place: the resource table, the index, the token
//! format and the digest key.

use crate::{
    decision::{Decision, Request, authenticate, decide_under},
    index::Index,
    policy::Policy,
    resource::Resources,
    time::Timestamp,
    token::{DigestKey, TokenFormat},
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
        match authenticate(&self.index, &self.format, &self.key, presented) {
            Ok(token) => decide_under(&self.resources, &self.index.directory, &self.policy, token, request, now),
            Err(reason) => Decision::deny(reason),
        }
    }
}
