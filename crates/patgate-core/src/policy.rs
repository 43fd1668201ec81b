//! The instance's token policy as the decision applies it **at use**: lifetime caps that
//! were lowered after a token was made, per-group caps, and the date from which legacy
//! tokens stop working. Creation applies the same caps up front (`validate`).

use crate::{
    directory::GroupId,
    time::{DAY, Timestamp},
    token::{Authority, TokenRecord},
};

/// What the decision enforces beyond a token's own state.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Policy {
    /// Longest lifetime a token may have, in days; 0 means no cap.
    pub max_lifetime_days: u32,
    /// Whether a token without an expiry is refused.
    pub expiry_required: bool,
    /// Stricter caps, in days, for requests whose boundary lies in one of these groups (or
    /// below it).
    pub group_caps: Vec<(GroupId, u32)>,
    /// From this instant on, legacy tokens are denied (`legacy_disabled`).
    pub legacy_use_disabled_from: Option<Timestamp>,
}

/// Why a token's lifetime is outside the policy.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct LifetimeExcess {
    /// The cap the token exceeds, in days.
    pub cap_days: u32,
    /// The group whose cap it is, or `None` for the instance cap.
    pub group: Option<GroupId>,
}

impl Policy {
    /// No cap and no legacy cut-off: what a decision without a policy applies.
    pub const UNRESTRICTED: Policy =
        Policy { max_lifetime_days: 0, expiry_required: false, group_caps: Vec::new(), legacy_use_disabled_from: None };

    /// The instance-wide rule `token` breaks, if any.
    pub fn token_excess(&self, token: &TokenRecord) -> Option<LifetimeExcess> {
        let excess = LifetimeExcess { cap_days: self.max_lifetime_days, group: None };
        match token.expires_at {
            None => self.expiry_required.then_some(excess),
            Some(_) if self.max_lifetime_days == 0 => None,
            expires_at => exceeds(token.created_at, expires_at, self.max_lifetime_days).then_some(excess),
        }
    }

    /// Whether `token` is a legacy token past the legacy cut-off at `now`.
    pub fn legacy_disabled(&self, token: &TokenRecord, now: Timestamp) -> bool {
        matches!(token.authority, Authority::Legacy(_)) && self.legacy_use_disabled_from.is_some_and(|from| now >= from)
    }

    /// The strictest group cap among `groups` (a boundary's ancestry) that `token` exceeds.
    pub fn group_excess(&self, token: &TokenRecord, groups: &[GroupId]) -> Option<LifetimeExcess> {
        self.group_caps
            .iter()
            .filter(|(group, days)| groups.contains(group) && exceeds(token.created_at, token.expires_at, *days))
            .min_by_key(|(_, days)| *days)
            .map(|(group, days)| LifetimeExcess { cap_days: *days, group: Some(*group) })
    }
}

/// Whether a token made at `created_at` that expires at `expires_at` lives longer than
/// `cap_days`. The cap counts whole days from the start (UTC) of the creation day, as
/// creation checks it, so a token made at the cap is never blocked later by the same cap.
pub fn exceeds(created_at: Timestamp, expires_at: Option<Timestamp>, cap_days: u32) -> bool {
    match expires_at {
        None => true,
        Some(expires_at) => {
            let day_start = Timestamp(created_at.0 - created_at.0.rem_euclid(DAY));
            expires_at > day_start.plus_days(i64::from(cap_days))
        }
    }
}
