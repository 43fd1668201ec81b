//! Legacy tokens' coarse scopes, with GitLab's meaning.

use std::{fmt, str::FromStr};

/// One of GitLab's personal-access-token scopes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(u8)]
pub enum LegacyScope {
    /// Full read/write API, Git over HTTP and the registries.
    Api,
    /// Read-only API, and pulls from the registries.
    ReadApi,
    /// `GET /user` and the read-only Users API (`/user…`, `/users…`: profiles, keys, emails)
    /// and user-level Events API (`/events`, `/users/:id/events`); nothing else.
    ReadUser,
    /// Git pull over HTTP and the repository files API.
    ReadRepository,
    /// Git pull and push over HTTP; no API.
    WriteRepository,
    /// Container registry pull.
    ReadRegistry,
    /// Container registry push (and pull).
    WriteRegistry,
    /// Dependency proxy pull (not guarded by patgate; accepted for compatibility).
    ReadVirtualRegistry,
    /// Dependency proxy pull, push and delete (not guarded by patgate).
    WriteVirtualRegistry,
    /// Create runners.
    CreateRunner,
    /// Read, update and delete runners.
    ManageRunner,
    /// Kubernetes API through the agent (not guarded by patgate).
    K8sProxy,
    /// Rotate this very token, nothing else.
    SelfRotate,
    /// AI features (not guarded by patgate).
    AiFeatures,
    /// Act as another user; for admins, also the whole API.
    Sudo,
    /// Admin endpoints, for admins, together with `api` or `read_api`.
    AdminMode,
    /// Download the service ping payload (not guarded by patgate).
    ReadServicePing,
}

impl LegacyScope {
    /// Every scope, in GitLab's documentation order.
    pub const ALL: [LegacyScope; 17] = [
        LegacyScope::Api,
        LegacyScope::ReadApi,
        LegacyScope::ReadUser,
        LegacyScope::ReadRepository,
        LegacyScope::WriteRepository,
        LegacyScope::ReadRegistry,
        LegacyScope::WriteRegistry,
        LegacyScope::ReadVirtualRegistry,
        LegacyScope::WriteVirtualRegistry,
        LegacyScope::CreateRunner,
        LegacyScope::ManageRunner,
        LegacyScope::K8sProxy,
        LegacyScope::SelfRotate,
        LegacyScope::AiFeatures,
        LegacyScope::Sudo,
        LegacyScope::AdminMode,
        LegacyScope::ReadServicePing,
    ];

    /// The wire name: `read_api`.
    pub fn name(self) -> &'static str {
        match self {
            LegacyScope::Api => "api",
            LegacyScope::ReadApi => "read_api",
            LegacyScope::ReadUser => "read_user",
            LegacyScope::ReadRepository => "read_repository",
            LegacyScope::WriteRepository => "write_repository",
            LegacyScope::ReadRegistry => "read_registry",
            LegacyScope::WriteRegistry => "write_registry",
            LegacyScope::ReadVirtualRegistry => "read_virtual_registry",
            LegacyScope::WriteVirtualRegistry => "write_virtual_registry",
            LegacyScope::CreateRunner => "create_runner",
            LegacyScope::ManageRunner => "manage_runner",
            LegacyScope::K8sProxy => "k8s_proxy",
            LegacyScope::SelfRotate => "self_rotate",
            LegacyScope::AiFeatures => "ai_features",
            LegacyScope::Sudo => "sudo",
            LegacyScope::AdminMode => "admin_mode",
            LegacyScope::ReadServicePing => "read_service_ping",
        }
    }

    /// Scopes that write or impersonate across everything the owner can reach: what a
    /// review flags as `broad_legacy_scope`.
    pub fn is_broad(self) -> bool {
        matches!(
            self,
            LegacyScope::Api
                | LegacyScope::WriteRepository
                | LegacyScope::WriteRegistry
                | LegacyScope::WriteVirtualRegistry
                | LegacyScope::ManageRunner
                | LegacyScope::K8sProxy
                | LegacyScope::Sudo
                | LegacyScope::AdminMode
        )
    }

    /// Scopes only an administrator may hold.
    pub fn admin_only(self) -> bool {
        matches!(self, LegacyScope::Sudo | LegacyScope::AdminMode | LegacyScope::ReadServicePing)
    }

    fn bit(self) -> u32 {
        1 << (self as u8)
    }
}

impl fmt::Display for LegacyScope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A scope name GitLab does not define.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown scope `{0}`")]
pub struct UnknownScopeError(pub String);

impl FromStr for LegacyScope {
    type Err = UnknownScopeError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        LegacyScope::ALL
            .into_iter()
            .find(|scope| scope.name() == text)
            .ok_or_else(|| UnknownScopeError(text.to_owned()))
    }
}

/// A set of legacy scopes.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct ScopeSet(u32);

impl ScopeSet {
    /// No scope.
    pub const EMPTY: ScopeSet = ScopeSet(0);

    /// Whether `scope` is in the set.
    pub fn contains(self, scope: LegacyScope) -> bool {
        self.0 & scope.bit() != 0
    }

    /// The set with `scope` added.
    #[must_use]
    pub fn with(self, scope: LegacyScope) -> ScopeSet {
        ScopeSet(self.0 | scope.bit())
    }

    /// The set with `scope` removed.
    #[must_use]
    pub fn without(self, scope: LegacyScope) -> ScopeSet {
        ScopeSet(self.0 & !scope.bit())
    }

    /// Whether the set is empty.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The scopes, in documentation order.
    pub fn iter(self) -> impl Iterator<Item = LegacyScope> {
        LegacyScope::ALL.into_iter().filter(move |scope| self.contains(*scope))
    }
}

impl fmt::Debug for ScopeSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.iter().map(LegacyScope::name)).finish()
    }
}

impl FromIterator<LegacyScope> for ScopeSet {
    fn from_iter<I: IntoIterator<Item = LegacyScope>>(iter: I) -> Self {
        iter.into_iter().fold(ScopeSet::EMPTY, ScopeSet::with)
    }
}
