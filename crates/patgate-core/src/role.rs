//! Membership roles and what an action requires of the token's owner.

use std::{fmt, str::FromStr};

/// A member's role in a group or project, GitLab's access levels.
///
/// INVARIANT: the order of the variants is the order of power (`Guest < … < Owner`), so
/// "at least developer" is `role >= Role::Developer`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(u8)]
pub enum Role {
    Guest = 10,
    Planner = 15,
    Reporter = 20,
    Developer = 30,
    Maintainer = 40,
    Owner = 50,
}

impl Role {
    /// Every role, weakest first.
    pub const ALL: [Role; 6] =
        [Role::Guest, Role::Planner, Role::Reporter, Role::Developer, Role::Maintainer, Role::Owner];

    /// The snake_case name used on the wire and in data files.
    pub fn name(self) -> &'static str {
        match self {
            Role::Guest => "guest",
            Role::Planner => "planner",
            Role::Reporter => "reporter",
            Role::Developer => "developer",
            Role::Maintainer => "maintainer",
            Role::Owner => "owner",
        }
    }

    /// GitLab's numeric access level.
    pub fn access_level(self) -> u8 {
        self as u8
    }

    /// The role with GitLab's numeric access level `level`.
    pub fn from_access_level(level: u8) -> Option<Role> {
        Role::ALL.into_iter().find(|role| role.access_level() == level)
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A role name that is not one of patgate's roles.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown role `{0}`: expected guest, planner, reporter, developer, maintainer or owner")]
pub struct UnknownRoleError(pub String);

impl FromStr for Role {
    type Err = UnknownRoleError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Role::ALL.into_iter().find(|role| role.name() == text).ok_or_else(|| UnknownRoleError(text.to_owned()))
    }
}

/// What the token's owner must be for one (resource, action) at one boundary.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Requirement {
    /// At least this role in the project or group (inherited through ancestor groups).
    Member(Role),
    /// The owner acting on their own user-level resources.
    SelfUser,
    /// An instance administrator.
    Admin,
    /// Any active user.
    AnyUser,
}

impl fmt::Display for Requirement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Requirement::Member(role) => f.write_str(role.name()),
            Requirement::SelfUser => f.write_str("self"),
            Requirement::Admin => f.write_str("admin"),
            Requirement::AnyUser => f.write_str("any"),
        }
    }
}
