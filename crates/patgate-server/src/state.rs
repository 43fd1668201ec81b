//! The service's shared state: the engine's index, kept current from the store's change
//! log, and what every handler needs.

use std::{
    collections::{HashMap, HashSet},
    net::IpAddr,
    sync::{Arc, RwLock, RwLockReadGuard},
};

use patgate_core::{
    DigestKey, Directory, Engine, GroupId, Index, MembershipTarget, Policy, ProjectId, Resources, Timestamp,
    TokenFormat, TokenId, UserId, catalog::Catalog, net::IpNet,
};
use patgate_store::{Change, Settings, SqlStore, Store, StoreError};
use tokio::sync::Mutex;

use crate::{
    error::ApiError, jobs::Intervals, metrics::Metrics, ratelimit::RateLimiter, usage::Usage, webhook::WebhookSecret,
};

/// Where "now" comes from: the wall clock in production, a fixed instant in tests.
#[derive(Clone)]
pub enum Clock {
    System,
    Fixed(Arc<std::sync::atomic::AtomicI64>),
}

impl Clock {
    /// The current instant.
    pub fn now(&self) -> Timestamp {
        match self {
            Clock::System => Timestamp(
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|elapsed| i64::try_from(elapsed.as_secs()).unwrap_or(i64::MAX))
                    .unwrap_or(0),
            ),
            Clock::Fixed(seconds) => Timestamp(seconds.load(std::sync::atomic::Ordering::SeqCst)),
        }
    }
}

impl std::fmt::Debug for Clock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Clock::System => "Clock::System",
            Clock::Fixed(_) => "Clock::Fixed",
        })
    }
}

/// Everything the handlers share.
#[derive(Debug)]
pub struct Shared {
    engine: RwLock<Engine>,
    pub catalog: Catalog,
    pub store: SqlStore,
    settings: RwLock<Settings>,
    // Where the index is in the change log; held while applying, so changes apply in order.
    applied: Mutex<Applied>,
    pub trusted_proxies: Vec<IpNet>,
    pub metrics: Metrics,
    pub clock: Clock,
    /// Token use not flushed to the store yet.
    pub usage: Usage,
    /// Held by a usage flush from taking the use to its commit, so that a flush (the one at
    /// shutdown) never finds the use taken by another still being written.
    pub(crate) usage_flush: tokio::sync::Mutex<()>,
    /// Signs webhook deliveries (unsigned when `None`).
    pub webhook_secret: Option<WebhookSecret>,
    pub webhook_agent: ureq::Agent,
    /// This process's name for job leases.
    pub holder: String,
    pub intervals: Intervals,
    /// Leak reports per client address.
    pub leak_limiter: RateLimiter,
    /// Sign-in failures per client address.
    pub sign_in_limiter: RateLimiter,
    /// Failed token authentications on the management API per client address.
    pub auth_limiter: RateLimiter,
    /// The header a trusted proxy names the signed-in user in (`ui_trusted_user_header`),
    /// honoured only from [`Shared::trusted_proxies`]; `None` turns that sign-in off.
    pub ui_trusted_user_header: Option<axum::http::HeaderName>,
    /// Password hashes computed at once (each takes about 19 MiB and a core for tens of
    /// milliseconds): one per core.
    pub password_slots: tokio::sync::Semaphore,
}

/// The decision policy the settings and the directory describe: group caps are named by
/// path in the settings and applied by id (a group that does not exist has no cap).
pub fn policy_of(settings: &Settings, directory: &Directory) -> Policy {
    let date = |text: &Option<String>| text.as_deref().and_then(Timestamp::parse_date);
    Policy {
        max_lifetime_days: settings.max_lifetime_days,
        expiry_required: settings.expiry_required,
        group_caps: settings
            .group_max_lifetime_days
            .iter()
            .filter_map(|(path, days)| {
                directory.group_by_path(&path.to_ascii_lowercase()).map(|group| (group.id, *days))
            })
            .collect(),
        legacy_use_disabled_from: date(&settings.legacy_use_disabled_from),
    }
}

fn holder_name() -> String {
    let mut bytes = [0_u8; 8];
    let _ = getrandom::fill(&mut bytes);
    let host = std::env::var("HOSTNAME").unwrap_or_default();
    format!("{host}/{}/{}", std::process::id(), bytes.iter().map(|b| format!("{b:02x}")).collect::<String>())
}

/// Leak reports a client address may send at once, and per minute after that.
pub const LEAK_REPORT_BURST: u32 = 30;
pub const LEAK_REPORTS_PER_MINUTE: u32 = 30;

/// Failed token authentications (an unknown, malformed, expired or revoked token) a client
/// address may have on the management API at once, and per minute after that.
pub const FAILED_AUTH_BURST: u32 = 30;
pub const FAILED_AUTHS_PER_MINUTE: u32 = 30;

/// The handle handlers receive.
pub type AppState = Arc<Shared>;

/// Where a replica's index is in the change log.
#[derive(Debug, Default)]
struct Applied {
    /// The last change read (applied, or deferred).
    sequence: i64,
    /// Changes that did not apply when read, retried once the log is read to its end: a
    /// change is applied by re-reading its thing's *current* row, which may already refer
    /// to what a later change creates or frees (a project moved into a group created
    /// after its first change), so it may not fit an index that has not applied those yet.
    deferred: Vec<(i64, Change)>,
    /// What the last load left out.
    left_out: LeftOut,
}

/// Users, groups and projects the index was loaded without (two things on one path in the
/// database, or what lives in one left out): a change naming them cannot apply either.
#[derive(Debug, Default)]
struct LeftOut {
    users: HashSet<u64>,
    groups: HashSet<u64>,
    projects: HashSet<u64>,
}

impl LeftOut {
    /// Whether `change` is about something left out.
    fn names(&self, change: &Change) -> bool {
        match *change {
            Change::User { id } => self.users.contains(&id),
            Change::Group { id } => self.groups.contains(&id),
            Change::Project { id } => self.projects.contains(&id),
            Change::Membership { user, group, project } => {
                self.users.contains(&user)
                    || group.is_some_and(|group| self.groups.contains(&group))
                    || project.is_some_and(|project| self.projects.contains(&project))
            }
            Change::Token { .. } | Change::Settings => false,
        }
    }
}

/// An index built from a snapshot, with what it reflects.
struct Loaded {
    index: Index,
    sequence: i64,
    settings: Settings,
    left_out: LeftOut,
}

/// Items left out of an index that are named one by one in the log; the rest are counted.
const LEFT_OUT_LOGGED: usize = 20;

/// The kinds of things that hold a path, in the order they load.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum PathHolder {
    User,
    Group,
    Project,
}

impl PathHolder {
    fn name(self) -> &'static str {
        match self {
            PathHolder::User => "user",
            PathHolder::Group => "group",
            PathHolder::Project => "project",
        }
    }
}

/// Builds the index from a store snapshot. A database that breaks the directory's rules
/// (two things on one path, written by replicas that did not check each other) still
/// loads: the thing created later is left out, and what lives in it, each named in the log.
async fn load_index(store: &SqlStore) -> Result<Loaded, StoreError> {
    let snapshot = store.snapshot().await?;
    let mut index = Index::new();
    let directory = &mut index.directory;
    directory.reserve(snapshot.users.len(), snapshot.groups.len(), snapshot.projects.len());

    // One path names one thing: of several, the first created keeps it.
    let mut holders: HashMap<String, (Timestamp, PathHolder, u64)> = HashMap::new();
    let mut refused: HashSet<(PathHolder, u64)> = HashSet::new();
    let claims = snapshot
        .users
        .iter()
        .map(|user| (user.username.to_ascii_lowercase(), user.created_at, PathHolder::User, user.id.0))
        .chain(
            snapshot.groups.iter().map(|g| (g.full_path.to_ascii_lowercase(), g.created_at, PathHolder::Group, g.id.0)),
        )
        .chain(
            snapshot
                .projects
                .iter()
                .map(|p| (p.full_path.to_ascii_lowercase(), p.created_at, PathHolder::Project, p.id.0)),
        );
    for (path, created_at, kind, id) in claims {
        match holders.get_mut(&path) {
            None => {
                holders.insert(path, (created_at, kind, id));
            }
            // Two rows of one table differ at least in case (each table's key): the
            // directory compares paths lowercased, so they clash the same way.
            Some(holder) if (created_at, kind) < (holder.0, holder.1) => {
                refused.insert((holder.1, holder.2));
                *holder = (created_at, kind, id);
            }
            Some(_) => {
                refused.insert((kind, id));
            }
        }
    }

    let mut left_out = LeftOut::default();
    let mut logged = 0;
    let mut leave_out = |kind: PathHolder, id: u64, path: &str, why: &dyn std::fmt::Display| {
        if logged < LEFT_OUT_LOGGED {
            tracing::warn!(kind = kind.name(), id, path, reason = %why, "left out of the index: the database breaks the directory's rules; fix it (see docs/ARCHITECTURE.md)");
        }
        logged += 1;
        match kind {
            PathHolder::User => left_out.users.insert(id),
            PathHolder::Group => left_out.groups.insert(id),
            PathHolder::Project => left_out.projects.insert(id),
        };
    };
    let taken = "another thing created earlier holds its path";
    for user in &snapshot.users {
        if refused.contains(&(PathHolder::User, user.id.0)) {
            leave_out(PathHolder::User, user.id.0, &user.username, &taken);
        } else if let Err(error) = directory.upsert_user(user.id, &user.username, user.state, user.admin) {
            leave_out(PathHolder::User, user.id.0, &user.username, &error);
        }
    }
    for group in &snapshot.groups {
        if refused.contains(&(PathHolder::Group, group.id.0)) {
            leave_out(PathHolder::Group, group.id.0, &group.full_path, &taken);
        } else if let Err(error) = directory.insert_group(group.id, &group.full_path, group.visibility) {
            leave_out(PathHolder::Group, group.id.0, &group.full_path, &error);
        }
    }
    for project in &snapshot.projects {
        if refused.contains(&(PathHolder::Project, project.id.0)) {
            leave_out(PathHolder::Project, project.id.0, &project.full_path, &taken);
        } else if let Err(error) = directory.insert_project(project.id, &project.full_path, project.visibility) {
            leave_out(PathHolder::Project, project.id.0, &project.full_path, &error);
        }
    }
    if logged > 0 {
        tracing::warn!(
            users = left_out.users.len(),
            groups = left_out.groups.len(),
            projects = left_out.projects.len(),
            "the index was loaded without these (their tokens are denied where they reach them)"
        );
    }
    for membership in &snapshot.memberships {
        // A membership on a removed (or left out) group or project no longer counts.
        let _ignored = directory.set_membership(membership.user, membership.target, membership.role);
    }
    directory.shrink_to_fit();
    index.reserve_tokens(snapshot.tokens.len());
    for (address, record) in snapshot.tokens {
        let id = record.id;
        if let Err(error) = index.insert_token(address, record) {
            // Unknown to the index is denied: safe, and named in the log.
            tracing::warn!(token = id.0, %error, "token left out of the index");
        }
    }
    Ok(Loaded { index, sequence: snapshot.sequence, settings: snapshot.settings, left_out })
}

/// Why a change did not apply.
enum ApplyError {
    /// The store could not be read: try again later.
    Store(StoreError),
    /// The thing's current state does not fit the index (yet).
    Index(String),
}

impl From<StoreError> for ApplyError {
    fn from(error: StoreError) -> ApplyError {
        ApplyError::Store(error)
    }
}

fn index_error(error: impl std::fmt::Display) -> ApplyError {
    ApplyError::Index(error.to_string())
}

impl Shared {
    /// The id of the user named `username`, or a 404 naming it.
    pub fn user_id(&self, username: &str) -> Result<patgate_core::UserId, ApiError> {
        let engine = self.engine();
        let user = engine.index.directory.user_by_name(username);
        user.map(|user| user.id).ok_or_else(|| ApiError::NotFound(format!("user `{username}` does not exist")))
    }

    /// Loads the index and settings from the store.
    pub async fn load(
        store: SqlStore,
        resources: Resources,
        catalog: Catalog,
        key: DigestKey,
        trusted_proxies: Vec<IpNet>,
        clock: Clock,
    ) -> Result<Shared, ApiError> {
        let Loaded { index, sequence, settings, left_out } = load_index(&store).await?;
        let format = TokenFormat::new(&settings.token_prefix).map_err(|error| ApiError::Internal(error.to_string()))?;
        let policy = policy_of(&settings, &index.directory);
        Ok(Shared::around(
            Engine { resources, index, format, key, policy },
            catalog,
            store,
            settings,
            Applied { sequence, deferred: Vec::new(), left_out },
            trusted_proxies,
            clock,
        ))
    }

    fn around(
        engine: Engine,
        catalog: Catalog,
        store: SqlStore,
        settings: Settings,
        applied: Applied,
        trusted_proxies: Vec<IpNet>,
        clock: Clock,
    ) -> Shared {
        Shared {
            engine: RwLock::new(engine),
            catalog,
            store,
            settings: RwLock::new(settings),
            applied: Mutex::new(applied),
            trusted_proxies,
            metrics: Metrics::default(),
            clock,
            usage: Usage::default(),
            usage_flush: tokio::sync::Mutex::new(()),
            webhook_secret: None,
            webhook_agent: crate::webhook::agent(),
            holder: holder_name(),
            intervals: Intervals::default(),
            leak_limiter: RateLimiter::new(LEAK_REPORT_BURST, LEAK_REPORTS_PER_MINUTE),
            sign_in_limiter: RateLimiter::new(
                crate::session::SIGN_IN_FAILURE_BURST,
                crate::session::SIGN_IN_FAILURES_PER_MINUTE,
            ),
            auth_limiter: RateLimiter::new(FAILED_AUTH_BURST, FAILED_AUTHS_PER_MINUTE),
            ui_trusted_user_header: None,
            password_slots: tokio::sync::Semaphore::new(
                std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get),
            ),
        }
    }

    /// State around an index built elsewhere (benchmarks load a synthetic world this way);
    /// changes already in the store's log are taken as applied.
    pub async fn with_engine_index(
        store: SqlStore,
        engine: Engine,
        catalog: Catalog,
        trusted_proxies: Vec<IpNet>,
        clock: Clock,
    ) -> Result<Shared, ApiError> {
        let settings = store.settings().await?;
        let sequence = store.changes_since(0, u32::MAX).await?.last().map_or(0, |(sequence, _)| *sequence);
        let applied = Applied { sequence, ..Applied::default() };
        Ok(Shared::around(engine, catalog, store, settings, applied, trusted_proxies, clock))
    }

    /// Read access to the engine. Never held across an `.await`.
    pub fn engine(&self) -> RwLockReadGuard<'_, Engine> {
        self.engine.read().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn with_engine<T>(&self, change: impl FnOnce(&mut Engine) -> T) -> T {
        let mut engine = self.engine.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        change(&mut engine)
    }

    /// The current settings.
    pub fn settings(&self) -> Settings {
        self.settings.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    /// A copy of the directory, to validate a change against before writing it.
    pub fn directory(&self) -> Directory {
        self.engine().index.directory.clone()
    }

    /// The last change applied.
    pub async fn applied_sequence(&self) -> i64 {
        self.applied.lock().await.sequence
    }

    /// Applies every change after the last applied one, in order. Called after each
    /// write of this replica and whenever another replica's change is heard of.
    ///
    /// Never stuck on a change: one that does not fit the index when read (its current
    /// state is ahead of the log) is retried once the log is read to its end; one that
    /// still does not fit there rebuilds the index from a fresh snapshot. Only a store
    /// error fails, and the next call goes on from where this one stopped.
    pub async fn catch_up(&self) -> Result<usize, StoreError> {
        let mut applied = self.applied.lock().await;
        let result = self.catch_up_locked(&mut applied).await;
        self.metrics.record_catch_up(result.is_ok());
        result
    }

    async fn catch_up_locked(&self, applied: &mut Applied) -> Result<usize, StoreError> {
        let mut count = 0;
        loop {
            let changes = self.store.changes_since(applied.sequence, 1000).await?;
            if changes.is_empty() {
                break;
            }
            for (sequence, change) in changes {
                match self.apply(&change).await {
                    Ok(()) => {}
                    Err(ApplyError::Store(error)) => return Err(error),
                    Err(ApplyError::Index(error)) => {
                        tracing::debug!(sequence, %error, "a change is ahead of the log; retried at its end");
                        applied.deferred.push((sequence, change));
                    }
                }
                applied.sequence = sequence;
                count += 1;
            }
        }
        if applied.deferred.is_empty() {
            return Ok(count);
        }
        let deferred = std::mem::take(&mut applied.deferred);
        for (position, (sequence, change)) in deferred.iter().enumerate() {
            match self.apply(change).await {
                Ok(()) => {}
                Err(ApplyError::Store(error)) => {
                    applied.deferred = deferred[position..].to_vec();
                    return Err(error);
                }
                Err(ApplyError::Index(error)) if applied.left_out.names(change) => {
                    tracing::warn!(sequence, %error, "a change to something left out of the index is ignored");
                }
                Err(ApplyError::Index(error)) => {
                    tracing::warn!(
                        sequence,
                        %error,
                        "a change does not apply to the index even at the end of the change log; \
                         rebuilding the index from a snapshot"
                    );
                    if let Err(error) = self.rebuild(applied).await {
                        applied.deferred = deferred[position..].to_vec();
                        return Err(error);
                    }
                    break;
                }
            }
        }
        Ok(count)
    }

    /// Applies this replica's own committed write to the index before the request answers.
    /// The write has committed, so the request answers its success whatever happens here (a
    /// new token's secret is shown only once; a rotation's old secret is already retired): a
    /// failure is logged and left to the replica follower, whose timer
    /// ([`crate::replica::POLL_INTERVAL`]) catches up again.
    pub async fn catch_up_after_write(&self) {
        if let Err(error) = self.catch_up().await {
            tracing::warn!(%error, "a committed write is not in the index yet; the replica follower will catch up");
        }
    }

    /// Replaces the index (and the settings) with a fresh snapshot's, which includes every
    /// change committed before it was taken.
    async fn rebuild(&self, applied: &mut Applied) -> Result<(), StoreError> {
        let Loaded { index, sequence, settings, left_out } = load_index(&self.store).await?;
        let format = TokenFormat::new(&settings.token_prefix).ok();
        let previous = self.with_engine(|engine| {
            let previous = std::mem::replace(&mut engine.index, index);
            if let Some(format) = format {
                engine.format = format;
            }
            engine.policy = policy_of(&settings, &engine.index.directory);
            previous
        });
        // Freed outside the engine's lock: decisions do not wait for it.
        drop(previous);
        *self.settings.write().unwrap_or_else(std::sync::PoisonError::into_inner) = settings;
        applied.sequence = sequence;
        applied.deferred.clear();
        applied.left_out = left_out;
        self.metrics.record_rebuild();
        tracing::info!(sequence, "the index was rebuilt from a snapshot");
        Ok(())
    }

    /// Re-reads the current state of what `change` names and puts it in the index.
    async fn apply(&self, change: &Change) -> Result<(), ApplyError> {
        match *change {
            Change::User { id } => {
                if let Some(user) = self.store.user(UserId(id)).await? {
                    self.with_engine(|engine| {
                        engine.index.directory.upsert_user(user.id, &user.username, user.state, user.admin)
                    })
                    .map_err(index_error)?;
                }
            }
            Change::Group { id } => {
                let row = self.store.group(GroupId(id)).await?;
                self.with_engine(|engine| {
                    let directory = &mut engine.index.directory;
                    match row {
                        Some(row) if directory.group(row.id).is_some() => {
                            directory.set_group_visibility(row.id, row.visibility)
                        }
                        Some(row) => directory.insert_group(row.id, &row.full_path, row.visibility),
                        None => directory.remove_group(GroupId(id)),
                    }
                })
                .map_err(index_error)?;
                // A group cap names its group by path: a new group may be one.
                let settings = self.settings();
                self.with_engine(|engine| engine.policy = policy_of(&settings, &engine.index.directory));
            }
            Change::Project { id } => {
                let row = self.store.project(ProjectId(id)).await?;
                self.with_engine(|engine| {
                    let directory = &mut engine.index.directory;
                    match row {
                        Some(row) => match directory.project(row.id).map(|p| p.full_path.to_string()) {
                            Some(path) => {
                                if path != row.full_path.to_ascii_lowercase() {
                                    let namespace = row.full_path.rsplit_once('/').map_or("", |(ns, _)| ns);
                                    directory.move_project(row.id, namespace)?;
                                }
                                directory.set_project_visibility(row.id, row.visibility)
                            }
                            None => directory.insert_project(row.id, &row.full_path, row.visibility),
                        },
                        None => directory.remove_project(ProjectId(id)),
                    }
                })
                .map_err(index_error)?;
            }
            Change::Membership { user, group, project } => {
                let target = match (group, project) {
                    (Some(group), _) => MembershipTarget::Group(GroupId(group)),
                    (None, Some(project)) => MembershipTarget::Project(ProjectId(project)),
                    (None, None) => return Ok(()),
                };
                let role = self.store.membership(UserId(user), target).await?;
                self.with_engine(|engine| {
                    let directory = &mut engine.index.directory;
                    match role {
                        Some(role) => directory.set_membership(UserId(user), target, role),
                        None => directory.remove_membership(UserId(user), target).map(|_| ()),
                    }
                })
                .map_err(index_error)?;
            }
            Change::Token { id } => {
                if let Some((address, row)) = self.store.token_with_address(TokenId(id)).await? {
                    let record = row.record();
                    self.with_engine(|engine| {
                        let index = &mut engine.index;
                        if index.token(record.id).is_some() {
                            if let Some(at) = record.revoked_at {
                                index.revoke(record.id, at)?;
                            }
                            index.set_expiry(record.id, record.expires_at)
                        } else {
                            index.insert_token(address, record)
                        }
                    })
                    .map_err(index_error)?;
                }
            }
            Change::Settings => {
                let settings = self.store.settings().await?;
                let format = TokenFormat::new(&settings.token_prefix).ok();
                self.with_engine(|engine| {
                    if let Some(format) = format {
                        engine.format = format;
                    }
                    engine.policy = policy_of(&settings, &engine.index.directory);
                });
                *self.settings.write().unwrap_or_else(std::sync::PoisonError::into_inner) = settings;
            }
        }
        Ok(())
    }

    /// Whether a connection from `peer` may set the forwarded-request headers.
    pub fn trusts_proxy(&self, peer: IpAddr) -> bool {
        self.trusted_proxies.iter().any(|net| net.contains(peer))
    }
}
