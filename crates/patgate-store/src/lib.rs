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
    Authority, Boundary, GroupId, MembershipTarget, Permission, ProjectId, Role, Timestamp, TokenAddress, TokenDigest,
    TokenId, TokenKind, TokenRecord, UserId, UserState, Visibility, net::IpNet,
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
    /// A unique name or path is already taken. A path another kind of thing holds (a user
    /// and a group share the top-level namespace; a group and a project their paths) says
    /// what and where: `a group at `acme/x``.
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
    pub created_at: Timestamp,
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
    /// The most recent distinct client addresses it was used from, newest first (at most 5).
    pub last_ips: Vec<std::net::IpAddr>,
    /// The smallest expiry notice sent (60, 30, 7 or 0 days before).
    pub last_notice_days: Option<u32>,
}

impl TokenRow {
    /// Whether the token counts as revoked at `now` (a rotated one only after its grace).
    pub fn is_revoked(&self, now: Timestamp) -> bool {
        self.revoked_at.is_some_and(|at| now >= at)
    }

    /// What the decision needs of this token.
    pub fn record(&self) -> TokenRecord {
        TokenRecord {
            id: self.id,
            owner: self.owner,
            authority: self.authority.clone(),
            created_at: self.created_at,
            expires_at: self.expires_at,
            revoked_at: self.revoked_at,
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

/// The stored column the tokens table is sorted by (then by id).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum TokenSort {
    #[default]
    Id,
    CreatedAt,
    /// By name, byte-wise (code-point order, as `str` compares).
    Name,
    /// Tokens that never expire sort after every date.
    ExpiresAt,
    /// Tokens never used sort before every date.
    LastUsedAt,
}

/// Which tokens [`TokenPageQuery::states`] keeps, by their state at `at` (a token is kept
/// when its state is one of those set): revoked by then (`revoked_at <= at`; a rotated
/// token's grace period is not over before), expired by then (`expires_at <= at`) and not
/// revoked, or live (neither) and then blocked (its owner is not active, or `rules` block
/// it) or active. These are the tokens table's states.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StateFilter {
    pub at: Timestamp,
    pub revoked: bool,
    pub expired: bool,
    pub blocked: bool,
    pub active: bool,
    pub rules: LifetimeRules,
}

/// What of the instance's policy blocks a live token of an active owner, for the database:
/// patgate-core's `Policy::token_excess` and `Policy::legacy_disabled` at the filter's
/// instant.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LifetimeRules {
    /// Longest lifetime in days, counted from the start (UTC) of the creation day; 0 for none.
    pub max_lifetime_days: u32,
    /// Whether a token without an expiry is blocked.
    pub expiry_required: bool,
    /// Whether legacy tokens are blocked (the legacy cut-off has passed).
    pub legacy_disabled: bool,
}

/// What [`Store::token_page`] selects: filters on stored columns, a sort and a page. A
/// bound on a date leaves out the tokens without that date.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenPageQuery {
    /// One owner's tokens, or everyone's.
    pub owner: Option<UserId>,
    pub kind: Option<TokenKind>,
    pub expires_before: Option<Timestamp>,
    pub expires_after: Option<Timestamp>,
    pub used_before: Option<Timestamp>,
    pub used_after: Option<Timestamp>,
    /// Tokens whose name contains this text, both lowercased as `str::to_lowercase` does.
    pub name_contains: Option<String>,
    /// Tokens in some of the states at an instant.
    pub states: Option<StateFilter>,
    pub sort: TokenSort,
    pub descending: bool,
    pub limit: u32,
    pub offset: u64,
}

impl TokenPageQuery {
    /// The first `limit` tokens of everyone, by id, unfiltered.
    pub fn first(limit: u32) -> TokenPageQuery {
        TokenPageQuery {
            owner: None,
            kind: None,
            expires_before: None,
            expires_after: None,
            used_before: None,
            used_after: None,
            name_contains: None,
            states: None,
            sort: TokenSort::Id,
            descending: false,
            limit,
            offset: 0,
        }
    }
}

/// The SHA-256 of a web session's random id: what the store keeps, never the id itself.
///
/// INVARIANT: `Debug` shows nothing of it.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct SessionDigest([u8; 32]);

impl SessionDigest {
    /// The digest from its 32 bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> SessionDigest {
        SessionDigest(bytes)
    }

    /// Lowercase hex, as stored.
    pub fn to_hex(&self) -> String {
        self.0.iter().map(|byte| format!("{byte:02x}")).collect()
    }
}

impl std::fmt::Debug for SessionDigest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SessionDigest([redacted])")
    }
}

/// A web session's CSRF token: random, sent back by the browser in `X-CSRF-Token` (or a
/// form's `csrf` field) on every request that changes something.
///
/// INVARIANT: `Debug` shows nothing of it; comparison is in constant time.
#[derive(Clone)]
pub struct CsrfToken(String);

impl CsrfToken {
    /// A token from its text.
    pub fn new(text: String) -> CsrfToken {
        CsrfToken(text)
    }

    /// The text, to hand to the session's own browser (never to a log).
    pub fn expose_secret(&self) -> &str {
        &self.0
    }

    /// Whether `presented` is this token, in time independent of where they differ.
    pub fn matches(&self, presented: &str) -> bool {
        let (ours, theirs) = (self.0.as_bytes(), presented.as_bytes());
        ours.len() == theirs.len() && ours.iter().zip(theirs).fold(0_u8, |diff, (a, b)| diff | (a ^ b)) == 0
    }
}

impl std::fmt::Debug for CsrfToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CsrfToken([redacted])")
    }
}

/// A user's password as stored: an argon2id PHC string (`$argon2id$v=19$m=…`).
///
/// INVARIANT: `Debug` shows nothing of it.
#[derive(Clone, PartialEq, Eq)]
pub struct PasswordHash(String);

impl PasswordHash {
    /// A hash from its PHC string.
    pub fn new(phc: String) -> PasswordHash {
        PasswordHash(phc)
    }

    /// The PHC string, to verify a password against.
    pub fn as_phc(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for PasswordHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PasswordHash([redacted])")
    }
}

/// A web session to store.
#[derive(Clone, Debug)]
pub struct NewSession {
    pub digest: SessionDigest,
    pub user: UserId,
    pub csrf_token: CsrfToken,
    pub created_at: Timestamp,
    /// The earlier of the idle and the absolute expiry.
    pub expires_at: Timestamp,
}

/// A stored web session (the caller knows its digest).
#[derive(Clone, Debug)]
pub struct SessionRow {
    pub user: UserId,
    pub csrf_token: CsrfToken,
    pub created_at: Timestamp,
    pub last_seen_at: Timestamp,
    /// The first instant at which the session no longer works.
    pub expires_at: Timestamp,
}

/// Everything the index is built from at start, with the change sequence it reflects.
#[derive(Debug, Default)]
pub struct Snapshot {
    pub users: Vec<UserRow>,
    pub groups: Vec<PathRow<GroupId>>,
    pub projects: Vec<PathRow<ProjectId>>,
    pub memberships: Vec<MembershipRow>,
    /// Every token with where the index finds it.
    pub tokens: Vec<(TokenAddress, TokenRecord)>,
    /// The last change the snapshot includes.
    pub sequence: i64,
    /// The settings as of `sequence` (read in the same transaction).
    pub settings: Settings,
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

/// Where webhook events go: every audit event whose type is in `events` (or in
/// [`LIFECYCLE_EVENTS`] when `events` is empty) becomes a delivery to `url`, written in the
/// same transaction as the event (a durable outbox).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebhookTarget {
    pub url: String,
    #[serde(default)]
    pub events: Vec<String>,
}

/// The audit events a webhook receives unless it lists its own.
pub const LIFECYCLE_EVENTS: &[&str] = &[
    "token_expiry_notice",
    "token_expired",
    "token_revoked",
    "token_rotated",
    "reuse_detected",
    "leak_reported",
    "token_used_from_new_ip",
    "token_blocked_by_policy",
];

impl WebhookTarget {
    /// Whether this target receives events of type `event`.
    pub fn wants(&self, event: &str) -> bool {
        if self.events.is_empty() {
            LIFECYCLE_EVENTS.contains(&event)
        } else {
            self.events.iter().any(|wanted| wanted == event)
        }
    }
}

/// One webhook delivery of the outbox.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Delivery {
    pub id: i64,
    pub audit_event_id: i64,
    pub url: String,
    pub event: String,
    /// The JSON body sent, exactly as signed.
    pub payload: String,
    pub created_at: Timestamp,
    pub attempts: u32,
    pub next_attempt_at: Timestamp,
    pub delivered_at: Option<Timestamp>,
    pub last_status: Option<u16>,
    pub last_error: Option<String>,
}

/// What an attempt to deliver came to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeliveryAttempt {
    pub at: Timestamp,
    /// The receiver's HTTP status, if it answered.
    pub status: Option<u16>,
    /// `None` when delivered (2xx); else why not.
    pub error: Option<String>,
    /// When to try again, if not delivered.
    pub retry_at: Timestamp,
}

/// Which deliveries to list.
#[derive(Clone, Debug, Default)]
pub struct DeliveryFilter {
    /// Only deliveries not delivered yet.
    pub pending: bool,
    pub before_id: Option<i64>,
    pub limit: u32,
}

/// One token's use since the last flush.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenUse {
    pub token: TokenId,
    pub owner: UserId,
    pub last_used_at: Timestamp,
    /// Distinct client addresses, most recent last.
    pub ips: Vec<std::net::IpAddr>,
    /// The permissions it used and where (one entry per permission and boundary).
    pub permissions: Vec<PermissionUse>,
}

/// How often, and first and last when, a token used one permission at one boundary.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PermissionUse {
    pub permission: Permission,
    pub boundary: Boundary,
    pub uses: u64,
    pub first_used: Timestamp,
    pub last_used: Timestamp,
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
    /// From this date (`YYYY-MM-DD`, 00:00 UTC) on, new legacy tokens are refused (in
    /// addition to `legacy_tokens_allowed`).
    pub legacy_creation_disabled_from: Option<String>,
    /// From this date (`YYYY-MM-DD`, 00:00 UTC) on, legacy tokens are denied at use
    /// (`legacy_disabled`).
    pub legacy_use_disabled_from: Option<String>,
    /// Stricter lifetime caps for tokens reaching into a group (full path → days).
    pub group_max_lifetime_days: std::collections::BTreeMap<String, u32>,
    /// Seconds a rotated token keeps working after its rotation.
    pub rotation_grace_seconds: u32,
    /// Revoke tokens unused for this many days (`inactive`); 0 turns it off.
    pub inactivity_days: u32,
    /// The days of use the tokens table and the least-privilege suggestion look at: a
    /// permission unused for this long is flagged `unused_permissions`.
    pub usage_window_days: u32,
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
            legacy_creation_disabled_from: None,
            legacy_use_disabled_from: None,
            group_max_lifetime_days: std::collections::BTreeMap::new(),
            rotation_grace_seconds: 0,
            inactivity_days: 0,
            usage_window_days: 30,
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
    /// Whether an active administrator can still manage the instance at `now`: one holds a
    /// live token that reaches admin endpoints (a legacy token with `admin_mode` or `sudo`,
    /// or a fine-grained token with an `instance` grant), or has a web UI password.
    fn admin_access_exists(&self, now: Timestamp) -> impl Future<Output = Result<bool, StoreError>> + Send;
    /// Bootstraps administration in one transaction, unless an administrator can manage
    /// the instance (as [`Store::admin_access_exists`] says at `token.created_at`, checked
    /// again under the write lock, so that of several replicas starting at once one does
    /// it): makes `username` an active administrator (created with `name`, or the existing
    /// user of that name made active and administrator again) and stores `token` as
    /// theirs (`token.owner` is ignored). Returns the user, the token and the sequence, or
    /// `None` when nothing was needed.
    fn bootstrap_admin(
        &self,
        username: &str,
        name: &str,
        token: &NewToken,
    ) -> impl Future<Output = Result<Option<(UserId, TokenId, i64)>, StoreError>> + Send;
    /// The fingerprint of the instance secret this database's tokens are made under: the
    /// one stored, or else `fingerprint`, stored now (with a settings change and `audit`)
    /// under the write lock, so that replicas starting at once with different secrets do
    /// not both take theirs for the database's.
    fn claim_key_fingerprint(
        &self,
        fingerprint: &str,
        audit: Audit,
    ) -> impl Future<Output = Result<String, StoreError>> + Send;
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
    fn token_with_address(
        &self,
        id: TokenId,
    ) -> impl Future<Output = Result<Option<(TokenAddress, TokenRow)>, StoreError>> + Send;

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
    /// Revokes the old token (from `grace_seconds` after the audit's instant) and stores its
    /// replacement in the same family. A token already revoked or rotated is a conflict.
    fn rotate_token(
        &self,
        old: TokenId,
        token: &NewToken,
        grace_seconds: u32,
        audit: Audit,
    ) -> impl Future<Output = Result<(TokenId, i64), StoreError>> + Send;
    /// Revokes a token now (also ending a rotation's grace period); `NotFound` if it is
    /// unknown or already revoked.
    fn revoke_token(
        &self,
        id: TokenId,
        reason: &str,
        audit: Audit,
    ) -> impl Future<Output = Result<i64, StoreError>> + Send;
    /// Revokes each of `ids` not revoked yet, in one transaction with one audit event each
    /// (`audit` with the token and owner filled in); returns those it revoked.
    fn revoke_tokens(
        &self,
        ids: &[TokenId],
        reason: &str,
        audit: Audit,
    ) -> impl Future<Output = Result<(Vec<TokenId>, i64), StoreError>> + Send;
    /// The ids of every token of the rotation family `family`.
    fn family(&self, family: TokenId) -> impl Future<Output = Result<Vec<TokenId>, StoreError>> + Send;
    fn token(&self, id: TokenId) -> impl Future<Output = Result<Option<TokenRow>, StoreError>> + Send;
    fn tokens(&self, owner: Option<UserId>) -> impl Future<Output = Result<Vec<TokenRow>, StoreError>> + Send;
    /// One page of the tokens table, selected, sorted and counted by the database: the
    /// rows and how many match in all.
    fn token_page(
        &self,
        query: &TokenPageQuery,
    ) -> impl Future<Output = Result<(Vec<TokenRow>, u64), StoreError>> + Send;
    /// The permissions used by `tokens`, last used at or after `since`; by token, then
    /// permission.
    fn permission_uses_of(
        &self,
        tokens: &[TokenId],
        since: Timestamp,
    ) -> impl Future<Output = Result<Vec<(TokenId, PermissionUse)>, StoreError>> + Send;
    /// The permissions used by the tokens of `owner` (every token when `None`), or by
    /// `token` alone, last used at or after `since`; by token, then permission.
    fn permission_uses(
        &self,
        owner: Option<UserId>,
        token: Option<TokenId>,
        since: Timestamp,
    ) -> impl Future<Output = Result<Vec<(TokenId, PermissionUse)>, StoreError>> + Send;

    // ---- lifecycle jobs ------------------------------------------------------------

    /// Records last use, client addresses and the permissions used (adding to their counts);
    /// appends `token_used_from_new_ip` for an address not seen before. Returns the (token, address) pairs that were new.
    fn record_usage(
        &self,
        uses: &[TokenUse],
    ) -> impl Future<Output = Result<Vec<(TokenId, std::net::IpAddr)>, StoreError>> + Send;
    /// Active tokens owed an expiry notice at `now`, with the notice due (60, 30, 7 or 0
    /// days before), at most `limit`.
    fn expiry_notices_due(
        &self,
        now: Timestamp,
        limit: u32,
    ) -> impl Future<Output = Result<Vec<(TokenRow, u32)>, StoreError>> + Send;
    /// Records that the `days` notice went out for `token`, with its audit event (and so
    /// its webhook deliveries); `false` if that or a later notice was recorded already.
    fn record_expiry_notice(
        &self,
        token: TokenId,
        days: u32,
        audit: Audit,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;
    /// Tokens live at `now` (neither revoked nor expired) not used (or, never used, not
    /// created) since `cutoff`, at most `limit`, by id. An expired token is not inactive:
    /// it is already refused, and revoking it would record a reason it did not end by.
    fn inactive_tokens(
        &self,
        cutoff: Timestamp,
        now: Timestamp,
        limit: u32,
    ) -> impl Future<Output = Result<Vec<TokenId>, StoreError>> + Send;
    /// Takes or renews the lease on job `name` for `holder` until `until`; `false` while
    /// another holder's lease runs.
    fn try_lease(
        &self,
        name: &str,
        holder: &str,
        now: Timestamp,
        until: Timestamp,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    // ---- webhook outbox ------------------------------------------------------------

    /// Claims up to `limit` deliveries due at `now` until `claim_until` (no other replica
    /// takes them meanwhile).
    fn claim_deliveries(
        &self,
        now: Timestamp,
        claim_until: Timestamp,
        limit: u32,
    ) -> impl Future<Output = Result<Vec<Delivery>, StoreError>> + Send;
    /// Records an attempt: delivered when `attempt.error` is `None`, else retried later.
    fn record_delivery(
        &self,
        id: i64,
        attempt: &DeliveryAttempt,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
    fn deliveries(&self, filter: &DeliveryFilter) -> impl Future<Output = Result<Vec<Delivery>, StoreError>> + Send;

    // ---- web sign-in ---------------------------------------------------------------

    /// Sets (`Some`) or removes (`None`) `user`'s password hash and ends every session of
    /// theirs, with `audit` (`password_changed`); `NotFound` for an unknown user.
    fn set_password_hash(
        &self,
        user: UserId,
        hash: Option<&PasswordHash>,
        audit: Audit,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
    /// The user named `username` (as stored: lowercase) and their password hash, if any.
    fn password_hash(
        &self,
        username: &str,
    ) -> impl Future<Output = Result<Option<(UserRow, Option<PasswordHash>)>, StoreError>> + Send;
    /// Stores a new session, with `audit` (`signed_in`); sessions expired by its creation
    /// are dropped on the way.
    fn create_session(&self, session: &NewSession, audit: Audit)
    -> impl Future<Output = Result<(), StoreError>> + Send;
    /// The session stored under `digest`, unless it has expired at `now`.
    fn session(
        &self,
        digest: &SessionDigest,
        now: Timestamp,
    ) -> impl Future<Output = Result<Option<SessionRow>, StoreError>> + Send;
    /// Records activity at `now` on a session not expired then: its `last_seen_at`, and
    /// `expires_at` slid to the given instant; `false` when the session has ended.
    fn touch_session(
        &self,
        digest: &SessionDigest,
        now: Timestamp,
        expires_at: Timestamp,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;
    /// Ends one session, with `audit` (`signed_out`) when it existed; `false` if it did not.
    fn delete_session(
        &self,
        digest: &SessionDigest,
        audit: Audit,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;
    /// Ends every session of `user`; returns how many there were. Blocking or deleting a
    /// user (`set_user_state`, `import`) does the same inside its own transaction.
    fn delete_user_sessions(&self, user: UserId) -> impl Future<Output = Result<u64, StoreError>> + Send;

    // ---- settings and audit --------------------------------------------------------

    fn settings(&self) -> impl Future<Output = Result<Settings, StoreError>> + Send;
    fn put_settings(&self, settings: &Settings, audit: Audit) -> impl Future<Output = Result<i64, StoreError>> + Send;
    /// Appends audit events on their own (a lookup, tokens blocked by a policy change), in
    /// one transaction.
    fn record_audit(&self, audits: &[Audit]) -> impl Future<Output = Result<(), StoreError>> + Send;
    fn audit_events(&self, filter: &AuditFilter) -> impl Future<Output = Result<Vec<AuditEvent>, StoreError>> + Send;
}
