//! The service's shared state: the engine's index, kept current from the store's change
//! log, and what every handler needs.

use std::{
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
    // The last change applied to the index; held while applying, so changes apply in order.
    applied: Mutex<i64>,
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

/// Builds the index from a store snapshot.
async fn load_index(store: &SqlStore) -> Result<(Index, i64), StoreError> {
    let snapshot = store.snapshot().await?;
    let mut index = Index::new();
    let directory = &mut index.directory;
    directory.reserve(snapshot.users.len(), snapshot.groups.len(), snapshot.projects.len());
    let corrupt = |error: patgate_core::DirectoryError| StoreError::Corrupt(error.to_string());
    for user in &snapshot.users {
        directory.upsert_user(user.id, &user.username, user.state, user.admin).map_err(corrupt)?;
    }
    for group in &snapshot.groups {
        directory.insert_group(group.id, &group.full_path, group.visibility).map_err(corrupt)?;
    }
    for project in &snapshot.projects {
        directory.insert_project(project.id, &project.full_path, project.visibility).map_err(corrupt)?;
    }
    for membership in &snapshot.memberships {
        // A membership on a removed group or project no longer counts.
        let _ignored = directory.set_membership(membership.user, membership.target, membership.role);
    }
    directory.shrink_to_fit();
    index.reserve_tokens(snapshot.tokens.len());
    for (address, record) in snapshot.tokens {
        index.insert_token(address, record).map_err(|error| StoreError::Corrupt(error.to_string()))?;
    }
    Ok((index, snapshot.sequence))
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
        let settings = store.settings().await?;
        let format = TokenFormat::new(&settings.token_prefix).map_err(|error| ApiError::Internal(error.to_string()))?;
        let (index, sequence) = load_index(&store).await?;
        let policy = policy_of(&settings, &index.directory);
        Ok(Shared::around(
            Engine { resources, index, format, key, policy },
            catalog,
            store,
            settings,
            sequence,
            trusted_proxies,
            clock,
        ))
    }

    fn around(
        engine: Engine,
        catalog: Catalog,
        store: SqlStore,
        settings: Settings,
        sequence: i64,
        trusted_proxies: Vec<IpNet>,
        clock: Clock,
    ) -> Shared {
        Shared {
            engine: RwLock::new(engine),
            catalog,
            store,
            settings: RwLock::new(settings),
            applied: Mutex::new(sequence),
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
        Ok(Shared::around(engine, catalog, store, settings, sequence, trusted_proxies, clock))
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
        *self.applied.lock().await
    }

    /// Applies every change after the last applied one, in order. Called after each
    /// write of this replica and whenever another replica's change is heard of.
    pub async fn catch_up(&self) -> Result<usize, StoreError> {
        let mut applied = self.applied.lock().await;
        let mut count = 0;
        loop {
            let changes = self.store.changes_since(*applied, 1000).await?;
            if changes.is_empty() {
                return Ok(count);
            }
            for (sequence, change) in changes {
                self.apply(&change).await?;
                *applied = sequence;
                count += 1;
            }
        }
    }

    /// Re-reads the current state of what `change` names and puts it in the index.
    async fn apply(&self, change: &Change) -> Result<(), StoreError> {
        match *change {
            Change::User { id } => {
                if let Some(user) = self.store.user(UserId(id)).await? {
                    self.with_engine(|engine| {
                        engine.index.directory.upsert_user(user.id, &user.username, user.state, user.admin)
                    })
                    .map_err(|error| StoreError::Corrupt(error.to_string()))?;
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
                .map_err(|error| StoreError::Corrupt(error.to_string()))?;
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
                .map_err(|error| StoreError::Corrupt(error.to_string()))?;
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
                .map_err(|error| StoreError::Corrupt(error.to_string()))?;
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
                    .map_err(|error| StoreError::Corrupt(error.to_string()))?;
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
