//! patgate's storage: a narrow [`Store`] trait and its SQL adapter for SQLite (the embedded
//! default, one file) and PostgreSQL (any number of replicas), each with its own embedded
//! migrations.
//!
//! Every write is one transaction that also appends to the **change log** (a monotonic
//! sequence of [`Change`]s) and to the audit log. Replicas keep their in-memory index
//! current by applying changes in sequence order; PostgreSQL adds LISTEN/NOTIFY so they
//! hear of a change at once.

mod convert;
mod listen;
mod sql;

use patgate_core::{
    Authority, GroupId, MembershipTarget, ProjectId, Role, Timestamp, TokenDigest, TokenId, TokenKind, TokenRecord,
    UserId, UserState, Visibility, net::IpNet,
};
use serde::{Deserialize, Serialize};

pub use listen::{ChangeListener, Heard};
pub use sql::{Backend, SqlStore};

/// A storage failure. The domain never sees the driver's error type.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The row that should be changed does not exist.
    #[error("{0} not found")]
    NotFound(String),
    /// A unique name or path is already taken.
    #[error("{0} already exists")]
    Conflict(String),
    /// The database's schema is newer than this binary knows.
    #[error("the database schema is at version {found}, newer than this patgate knows ({known}); upgrade patgate")]
    SchemaTooNew { found: i64, known: i64 },
    /// A stored value this binary cannot read.
    #[error("corrupt stored data: {0}")]
    Corrupt(String),
    /// The database could not be reached or refused the operation.
    #[error("database error: {0}")]
    Database(String),
}

/// What changed, by identity: a replica re-reads the current state of the thing named.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Change {
    User { id: u64 },
    Group { id: u64 },
    Project { id: u64 },
    Membership { user: u64, group: Option<u64>, project: Option<u64> },
    Token { id: u64 },
    Settings,
}

impl Change {
    /// The change for a membership on `target`.
    pub fn membership(user: UserId, target: MembershipTarget) -> Change {
        match target {
            MembershipTarget::Group(group) => Change::Membership { user: user.0, group: Some(group.0), project: None },
            MembershipTarget::Project(project) => {
                Change::Membership { user: user.0, group: None, project: Some(project.0) }
            }
        }
    }
}

/// Who did something, for the audit log.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Actor {
    pub user: Option<UserId>,
    pub token: Option<TokenId>,
}

/// A stored user.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UserRow {
    pub id: UserId,
    pub username: String,
    pub name: String,
    pub state: UserState,
    pub admin: bool,
    pub created_at: Timestamp,
}

/// A stored group or project: the path says where it lives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PathRow<Id> {
    pub id: Id,
    pub full_path: String,
    pub visibility: Visibility,
}

/// A stored membership.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MembershipRow {
    pub user: UserId,
    pub target: MembershipTarget,
    pub role: Role,
}

/// A stored token as management sees it.
///
/// INVARIANT: no digest and no secret: this is the type that gets serialised.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenRow {
    pub id: TokenId,
    pub owner: UserId,
    pub name: String,
    pub description: String,
    pub kind: TokenKind,
    pub display_prefix: String,
    pub authority: Authority,
    pub allowed_ips: Vec<IpNet>,
    pub created_at: Timestamp,
    pub expires_at: Option<Timestamp>,
    pub revoked_at: Option<Timestamp>,
    pub revoke_reason: Option<String>,
    /// The first token of this rotation chain.
    pub family: TokenId,
    /// The token this one replaced by rotation.
    pub previous: Option<TokenId>,
    pub last_used_at: Option<Timestamp>,
}

impl TokenRow {
    /// What the decision needs of this token.
    pub fn record(&self) -> TokenRecord {
        TokenRecord {
            id: self.id,
            owner: self.owner,
            authority: self.authority.clone(),
            expires_at: self.expires_at,
            revoked: self.revoked_at.is_some(),
            allowed_ips: self.allowed_ips.clone().into_boxed_slice(),
        }
    }
}

/// A token to store.
#[derive(Clone, Debug)]
pub struct NewToken {
    pub owner: UserId,
    pub name: String,
    pub description: String,
    pub digest: TokenDigest,
    pub display_prefix: String,
    pub authority: Authority,
    pub allowed_ips: Vec<IpNet>,
    pub created_at: Timestamp,
    pub expires_at: Option<Timestamp>,
}

/// Everything the index is built from at start, with the change sequence it reflects.
#[derive(Debug, Default)]
pub struct Snapshot {
    pub users: Vec<UserRow>,
    pub groups: Vec<PathRow<GroupId>>,
    pub projects: Vec<PathRow<ProjectId>>,
    pub memberships: Vec<MembershipRow>,
    pub tokens: Vec<(TokenDigest, TokenRecord)>,
    /// The last change the snapshot includes.
    pub sequence: i64,
}

/// One audit event.
#[derive(Clone, Debug, PartialEq)]
pub struct AuditEvent {
    pub id: i64,
    pub at: Timestamp,
    pub event: String,
    pub actor_user: Option<UserId>,
    pub actor_token: Option<TokenId>,
    pub user: Option<UserId>,
    pub token: Option<TokenId>,
    pub details: serde_json::Value,
}

/// An audit event to append with a write.
#[derive(Clone, Debug)]
pub struct Audit {
    pub at: Timestamp,
    pub event: &'static str,
    pub actor: Actor,
    pub user: Option<UserId>,
    pub token: Option<TokenId>,
    pub details: serde_json::Value,
}

impl Audit {
    /// An event at `at` with no details.
    pub fn new(event: &'static str, actor: Actor, at: Timestamp) -> Audit {
        Audit { at, event, actor, user: None, token: None, details: serde_json::Value::Object(Default::default()) }
    }

    /// The same event about `user`.
    #[must_use]
    pub fn user(mut self, user: UserId) -> Audit {
        self.user = Some(user);
        self
    }

    /// The same event about `token`.
    #[must_use]
    pub fn token(mut self, token: TokenId) -> Audit {
        self.token = Some(token);
        self
    }

    /// The same event with `details`.
    #[must_use]
    pub fn details(mut self, details: serde_json::Value) -> Audit {
        self.details = details;
        self
    }
}

/// Which audit events to list.
#[derive(Clone, Debug, Default)]
pub struct AuditFilter {
    pub user: Option<UserId>,
    pub token: Option<TokenId>,
    pub event: Option<String>,
    pub after: Option<Timestamp>,
    pub before: Option<Timestamp>,
    /// Events with an id below this one (for paging backwards).
    pub before_id: Option<i64>,
    pub limit: u32,
}

/// The settings document, stored as JSON so fields can be added without a migration.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Settings {
    pub max_lifetime_days: u32,
    pub expiry_required: bool,
    pub legacy_tokens_allowed: bool,
    pub token_prefix: String,
    /// The fingerprint of the instance secret the tokens were made under.
    pub key_fingerprint: String,
}

impl Default for Settings {
    fn default() -> Settings {
        Settings {
            max_lifetime_days: 365,
            expiry_required: true,
            legacy_tokens_allowed: true,
            token_prefix: String::new(),
            key_fingerprint: String::new(),
        }
    }
}

/// One write of a directory import, validated by the caller against the live directory.
#[derive(Clone, Debug, Default)]
pub struct DirectoryBatch {
    /// (username, name — `None` keeps the current one, admin, state)
    pub users: Vec<(String, Option<String>, bool, UserState)>,
    pub groups: Vec<(String, Visibility)>,
    pub projects: Vec<(String, Visibility)>,
    /// (username, target full path, target is a project, role)
    pub memberships: Vec<(String, String, bool, Role)>,
}

/// How many rows an import created or changed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ImportCounts {
    pub users: usize,
    pub groups: usize,
    pub projects: usize,
    pub memberships: usize,
}

/// What storage offers patgate. Each write is one transaction with its change-log entries
/// and audit event, and returns the sequence number of its last change.
pub trait Store: Send + Sync {
    /// The backend's name, for logs and `/readyz`.
    fn backend(&self) -> Backend;

    // ---- start-up and replication -------------------------------------------------

    /// Whether the database holds no user yet (a first start).
    fn snapshot_is_empty(&self) -> impl Future<Output = Result<bool, StoreError>> + Send;
    /// Everything the index is built from, consistent with one sequence number.
    fn snapshot(&self) -> impl Future<Output = Result<Snapshot, StoreError>> + Send;
    /// Changes after `sequence`, oldest first, at most `limit`.
    fn changes_since(
        &self,
        sequence: i64,
        limit: u32,
    ) -> impl Future<Output = Result<Vec<(i64, Change)>, StoreError>> + Send;
    /// Current state of one user, group, project, membership or token, for applying a change.
    fn user(&self, id: UserId) -> impl Future<Output = Result<Option<UserRow>, StoreError>> + Send;
    fn group(&self, id: GroupId) -> impl Future<Output = Result<Option<PathRow<GroupId>>, StoreError>> + Send;
    fn project(&self, id: ProjectId) -> impl Future<Output = Result<Option<PathRow<ProjectId>>, StoreError>> + Send;
    fn membership(
        &self,
        user: UserId,
        target: MembershipTarget,
    ) -> impl Future<Output = Result<Option<Role>, StoreError>> + Send;
    fn token_with_digest(
        &self,
        id: TokenId,
    ) -> impl Future<Output = Result<Option<(TokenDigest, TokenRow)>, StoreError>> + Send;

    // ---- directory -----------------------------------------------------------------

    fn create_user(
        &self,
        username: &str,
        name: &str,
        admin: bool,
        audit: Audit,
    ) -> impl Future<Output = Result<(UserId, i64), StoreError>> + Send;
    fn set_user_state(
        &self,
        id: UserId,
        state: UserState,
        audit: Audit,
    ) -> impl Future<Output = Result<i64, StoreError>> + Send;
    fn create_group(
        &self,
        full_path: &str,
        visibility: Visibility,
        audit: Audit,
    ) -> impl Future<Output = Result<(GroupId, i64), StoreError>> + Send;
    fn create_project(
        &self,
        full_path: &str,
        visibility: Visibility,
        audit: Audit,
    ) -> impl Future<Output = Result<(ProjectId, i64), StoreError>> + Send;
    fn update_project(
        &self,
        id: ProjectId,
        full_path: &str,
        visibility: Visibility,
        audit: Audit,
    ) -> impl Future<Output = Result<i64, StoreError>> + Send;
    fn set_membership(
        &self,
        user: UserId,
        target: MembershipTarget,
        role: Option<Role>,
        audit: Audit,
    ) -> impl Future<Output = Result<i64, StoreError>> + Send;
    fn import(
        &self,
        batch: &DirectoryBatch,
        audit: Audit,
    ) -> impl Future<Output = Result<(ImportCounts, i64), StoreError>> + Send;

    // ---- tokens --------------------------------------------------------------------

    fn create_token(
        &self,
        token: &NewToken,
        audit: Audit,
    ) -> impl Future<Output = Result<(TokenId, i64), StoreError>> + Send;
    /// Revokes the old token and stores its replacement in the same family.
    fn rotate_token(
        &self,
        old: TokenId,
        token: &NewToken,
        audit: Audit,
    ) -> impl Future<Output = Result<(TokenId, i64), StoreError>> + Send;
    fn revoke_token(
        &self,
        id: TokenId,
        reason: &str,
        audit: Audit,
    ) -> impl Future<Output = Result<i64, StoreError>> + Send;
    fn token(&self, id: TokenId) -> impl Future<Output = Result<Option<TokenRow>, StoreError>> + Send;
    fn tokens(&self, owner: Option<UserId>) -> impl Future<Output = Result<Vec<TokenRow>, StoreError>> + Send;

    // ---- settings and audit --------------------------------------------------------

    fn settings(&self) -> impl Future<Output = Result<Settings, StoreError>> + Send;
    fn put_settings(&self, settings: &Settings, audit: Audit) -> impl Future<Output = Result<i64, StoreError>> + Send;
    fn audit_events(&self, filter: &AuditFilter) -> impl Future<Output = Result<Vec<AuditEvent>, StoreError>> + Send;
}
