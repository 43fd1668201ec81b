//! What the tokens table shows beyond the stored row: the token's state and the flags that
//! make over-privilege stand out, from its grants or scopes, its recorded use and the policy.

use std::{collections::BTreeSet, fmt, str::FromStr};

use patgate_core::{Action, Authority, Permission, Policy, Reach, Timestamp, time::DAY};
use patgate_store::{PermissionUse, TokenRow};

/// A token expiring within this many days is `expiring_soon` (the last expiry notice).
pub const EXPIRING_SOON_DAYS: i64 = 7;

/// Where a token stands at an instant.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum State {
    Active,
    Expired,
    Revoked,
    /// Denied at use until something changes; see [`Blocked`].
    Blocked,
}

impl State {
    pub const ALL: [State; 4] = [State::Active, State::Expired, State::Revoked, State::Blocked];

    pub fn name(self) -> &'static str {
        match self {
            State::Active => "active",
            State::Expired => "expired",
            State::Revoked => "revoked",
            State::Blocked => "blocked",
        }
    }
}

impl FromStr for State {
    type Err = ();

    fn from_str(text: &str) -> Result<State, ()> {
        State::ALL.into_iter().find(|state| state.name() == text).ok_or(())
    }
}

/// Why a `blocked` token is denied.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Blocked {
    OwnerBlocked,
    /// It exceeds a lifetime cap lowered after it was made: rotating it fixes that.
    LifetimePolicy,
    LegacyDisabled,
}

impl Blocked {
    pub fn name(self) -> &'static str {
        match self {
            Blocked::OwnerBlocked => "owner_blocked",
            Blocked::LifetimePolicy => "lifetime_policy",
            Blocked::LegacyDisabled => "legacy_disabled",
        }
    }
}

/// What a review should look at.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Flag {
    /// A legacy token with a scope that writes or impersonates everywhere (`api`, `sudo`…).
    BroadLegacyScope,
    /// A grant that may create, update or delete across all the owner's memberships.
    WriteEverywhere,
    /// Granted permissions the token has not used within the usage window (it has been used).
    UnusedPermissions,
    /// Never used at all.
    NeverUsed,
    /// Active, and expiring within [`EXPIRING_SOON_DAYS`].
    ExpiringSoon,
    /// Beyond the current lifetime policy or legacy cut-off: denied until rotated or replaced.
    ExceedsPolicy,
}

impl Flag {
    pub const ALL: [Flag; 6] = [
        Flag::BroadLegacyScope,
        Flag::WriteEverywhere,
        Flag::UnusedPermissions,
        Flag::NeverUsed,
        Flag::ExpiringSoon,
        Flag::ExceedsPolicy,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Flag::BroadLegacyScope => "broad_legacy_scope",
            Flag::WriteEverywhere => "write_everywhere",
            Flag::UnusedPermissions => "unused_permissions",
            Flag::NeverUsed => "never_used",
            Flag::ExpiringSoon => "expiring_soon",
            Flag::ExceedsPolicy => "exceeds_policy",
        }
    }
}

impl fmt::Display for Flag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Flag {
    type Err = ();

    fn from_str(text: &str) -> Result<Flag, ()> {
        Flag::ALL.into_iter().find(|flag| flag.name() == text).ok_or(())
    }
}

/// A token's state and flags at one instant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Insight {
    pub state: State,
    pub blocked: Option<Blocked>,
    /// In [`Flag::ALL`] order.
    pub flags: Vec<Flag>,
    /// Granted, unused within the window; sorted (what `unused_permissions` lists).
    pub unused: Vec<Permission>,
}

impl Insight {
    pub fn has(&self, flag: Flag) -> bool {
        self.flags.contains(&flag)
    }
}

/// The state and flags of `row` at `now`, given whether its owner is active, the policy, and
/// its permission uses within the usage window.
pub fn insight(row: &TokenRow, owner_active: bool, policy: &Policy, uses: &[PermissionUse], now: Timestamp) -> Insight {
    let record = row.record();
    let blocked = if !owner_active {
        Some(Blocked::OwnerBlocked)
    } else if policy.token_excess(&record).is_some() {
        Some(Blocked::LifetimePolicy)
    } else if policy.legacy_disabled(&record, now) {
        Some(Blocked::LegacyDisabled)
    } else {
        None
    };
    let state = if row.is_revoked(now) {
        State::Revoked
    } else if record.is_expired(now) {
        State::Expired
    } else if blocked.is_some() {
        State::Blocked
    } else {
        State::Active
    };
    let unused = match (&row.authority, row.last_used_at) {
        (Authority::FineGrained(grants), Some(_)) => {
            let used: BTreeSet<Permission> = uses.iter().map(|each| each.permission).collect();
            let granted: BTreeSet<Permission> =
                grants.iter().flat_map(|grant| grant.permissions.permissions()).collect();
            granted.difference(&used).copied().collect()
        }
        _ => Vec::new(),
    };
    let live = matches!(state, State::Active | State::Blocked);
    let flags = Flag::ALL
        .into_iter()
        .filter(|flag| match flag {
            Flag::BroadLegacyScope => {
                matches!(&row.authority, Authority::Legacy(scopes) if scopes.iter().any(|scope| scope.is_broad()))
            }
            Flag::WriteEverywhere => {
                matches!(&row.authority, Authority::FineGrained(grants) if grants.iter().any(|grant| {
                    matches!(grant.reach, Reach::AllMemberships)
                        && grant.permissions.entries().any(|(_, actions)| {
                            [Action::Create, Action::Update, Action::Delete].into_iter().any(|a| actions.contains(a))
                        })
                }))
            }
            Flag::UnusedPermissions => !unused.is_empty(),
            Flag::NeverUsed => row.last_used_at.is_none(),
            Flag::ExpiringSoon => {
                state == State::Active
                    && row.expires_at.is_some_and(|expires| expires.0 - now.0 <= EXPIRING_SOON_DAYS * DAY)
            }
            Flag::ExceedsPolicy => live && matches!(blocked, Some(Blocked::LifetimePolicy | Blocked::LegacyDisabled)),
        })
        .collect();
    Insight { state, blocked: if state == State::Blocked { blocked } else { None }, flags, unused }
}
