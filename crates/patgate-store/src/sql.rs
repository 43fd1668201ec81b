//! The SQL adapter: one implementation over sqlx's `Any` driver, with migrations and the
//! few dialect differences per backend.

use std::{collections::HashMap, fmt, sync::Arc};

use patgate_core::{
    Boundary, BoundaryKind, GroupId, MembershipTarget, ProjectId, Resources, Role, Timestamp, TokenAddress,
    TokenDigest, TokenHint, TokenId, TokenRecord, UserId, UserState, Visibility,
};
use sqlx::{
    Any, AnyPool, Row, Transaction,
    any::{AnyPoolOptions, AnyRow},
    migrate::Migrator,
};
use tokio::sync::{Mutex, MutexGuard};

use crate::{
    Audit, AuditEvent, AuditFilter, Change, CsrfToken, Delivery, DeliveryAttempt, DeliveryFilter, DirectoryBatch,
    ImportCounts, MembershipRow, NewSession, NewToken, PasswordHash, PathRow, PermissionUse, SessionDigest, SessionRow,
    Settings, Snapshot, StateFilter, Store, StoreError, TokenPageQuery, TokenRow, TokenSort, TokenUse, UserRow,
    WebhookTarget, convert,
};

/// The `(boundary_kind, boundary_id)` columns of `boundary` (the instance's id is 0).
fn boundary_columns(boundary: Boundary) -> Result<(&'static str, i64), StoreError> {
    Ok(match boundary {
        Boundary::Project(id) => ("project", i64_of(id.0)?),
        Boundary::Group(id) => ("group", i64_of(id.0)?),
        Boundary::User(id) => ("user", i64_of(id.0)?),
        Boundary::Instance => ("instance", 0),
    })
}

static SQLITE_MIGRATIONS: Migrator = sqlx::migrate!("migrations/sqlite");
static POSTGRES_MIGRATIONS: Migrator = sqlx::migrate!("migrations/postgres");

/// The channel PostgreSQL replicas LISTEN on; the payload is the change sequence number.
pub const NOTIFY_CHANNEL: &str = "patgate_changes";

/// Whose grants or addresses [`SqlStore::grants_of`] and [`SqlStore::ips_of`] load.
#[derive(Clone, Copy, Debug)]
enum TokensOf<'a> {
    /// Every token's (the start-up snapshot).
    All,
    Token(i64),
    /// The tokens of one owner.
    Owner(i64),
    /// A page of tokens.
    Tokens(&'a [i64]),
}

impl TokensOf<'_> {
    /// `SELECT {columns} FROM {table} x` for the tokens named (rows with a `token_id`),
    /// ordered by token and then `order`, with the values to bind; `None` when no token is
    /// named.
    fn select(self, columns: &str, table: &str, order: &str) -> Option<(String, Vec<i64>)> {
        let (join, condition, values) = match self {
            TokensOf::All => ("", String::new(), Vec::new()),
            TokensOf::Token(id) => ("", " WHERE x.token_id = $1".to_owned(), vec![id]),
            TokensOf::Owner(owner) => {
                (" JOIN tokens t ON t.id = x.token_id", " WHERE t.owner_id = $1".to_owned(), vec![owner])
            }
            TokensOf::Tokens([]) => return None,
            TokensOf::Tokens(ids) => {
                ("", format!(" WHERE x.token_id IN ({})", placeholders(1, ids.len())), ids.to_vec())
            }
        };
        Some((format!("SELECT {columns} FROM {table} x{join}{condition} ORDER BY x.token_id, {order}"), values))
    }
}

/// `query` with `values` bound in order.
fn bind_all<'q>(
    mut query: sqlx::query::Query<'q, Any, sqlx::any::AnyArguments>,
    values: &[i64],
) -> sqlx::query::Query<'q, Any, sqlx::any::AnyArguments> {
    for value in values {
        query = query.bind(*value);
    }
    query
}

/// `$first, $first+1, …`: `count` numbered placeholders.
fn placeholders(first: usize, count: usize) -> String {
    (first..first + count).map(|n| format!("${n}")).collect::<Vec<_>>().join(", ")
}

/// A value bound to a query built at run time.
enum Value {
    Int(i64),
    Text(&'static str),
    Owned(String),
}

/// The condition keeping the tokens whose state at `states.at` is one of those selected,
/// binding into `values` only the parameters it uses (PostgreSQL refuses unused ones).
fn state_condition(states: &StateFilter, values: &mut Vec<Value>) -> String {
    let mut bind = |value: Value| {
        values.push(value);
        format!("${}", values.len())
    };
    if !(states.revoked || states.expired || states.blocked || states.active) {
        return "1 = 0".to_owned();
    }
    let at = bind(Value::Int(states.at.0));
    let not_revoked = format!("(revoked_at IS NULL OR revoked_at > {at})");
    let mut kept = Vec::new();
    if states.revoked {
        kept.push(format!("(revoked_at IS NOT NULL AND revoked_at <= {at})"));
    }
    if states.expired {
        kept.push(format!("({not_revoked} AND expires_at IS NOT NULL AND expires_at <= {at})"));
    }
    let live = format!("({not_revoked} AND (expires_at IS NULL OR expires_at > {at}))");
    if states.blocked && states.active {
        kept.push(live);
    } else if states.blocked || states.active {
        // Blocked (never NULL, so that its negation is exact): an owner who is not active
        // (blocked, deleted, or gone), or the lifetime policy.
        let mut blocked = vec![
            "NOT EXISTS (SELECT 1 FROM users WHERE users.id = tokens.owner_id AND users.state = 'active')".to_owned(),
        ];
        let rules = states.rules;
        if rules.expiry_required {
            blocked.push("expires_at IS NULL".to_owned());
        }
        if rules.max_lifetime_days > 0 {
            // Whole days from the start of the creation day (a Euclidean remainder).
            let cap = bind(Value::Int(i64::from(rules.max_lifetime_days) * patgate_core::time::DAY));
            blocked.push(format!(
                "(expires_at IS NOT NULL AND expires_at > created_at - ((created_at % 86400) + 86400) % 86400 + {cap})"
            ));
        }
        if rules.legacy_disabled {
            blocked.push(format!("kind = {}", bind(Value::Text(patgate_core::TokenKind::Legacy.name()))));
        }
        let blocked = blocked.join(" OR ");
        kept.push(if states.blocked {
            format!("({live} AND ({blocked}))")
        } else {
            format!("({live} AND NOT ({blocked}))")
        });
    }
    format!("({})", kept.join(" OR "))
}

/// Which database a store runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    /// The backend a database URL names.
    pub fn of_url(url: &str) -> Option<Backend> {
        if url.starts_with("sqlite:") {
            Some(Backend::Sqlite)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Some(Backend::Postgres)
        } else {
            None
        }
    }

    fn migrator(self) -> &'static Migrator {
        match self {
            Backend::Sqlite => &SQLITE_MIGRATIONS,
            Backend::Postgres => &POSTGRES_MIGRATIONS,
        }
    }

    /// The name: `sqlite` or `postgres`.
    pub fn name(self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        }
    }
}

/// The store over SQLite or PostgreSQL.
pub struct SqlStore {
    pool: AnyPool,
    backend: Backend,
    resources: Arc<Resources>,
    // Serialises this process's writes; PostgreSQL also takes an advisory lock per write
    // transaction so that change numbers are assigned in commit order across replicas.
    write_lock: Mutex<()>,
    webhooks: Vec<WebhookTarget>,
}

impl fmt::Debug for SqlStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqlStore").field("backend", &self.backend).finish_non_exhaustive()
    }
}

fn database(error: sqlx::Error) -> StoreError {
    if let Some(db) = error.as_database_error()
        && db.is_unique_violation()
    {
        return StoreError::Conflict(db.message().to_owned());
    }
    StoreError::Database(error.to_string())
}

/// What [`StoreError::Conflict`] says of a path another kind of thing holds:
/// "a group at `acme`" (the error reads "… already exists").
fn path_conflict(what: &str, path: &str) -> String {
    format!("{what} at `{path}`")
}

fn i64_of(value: u64) -> Result<i64, StoreError> {
    i64::try_from(value).map_err(|_| StoreError::Corrupt(format!("id {value} out of range")))
}

fn u64_of(value: i64) -> Result<u64, StoreError> {
    u64::try_from(value).map_err(|_| StoreError::Corrupt(format!("id {value} out of range")))
}

fn get<'r, T: sqlx::Decode<'r, Any> + sqlx::Type<Any>>(row: &'r AnyRow, column: &str) -> Result<T, StoreError> {
    row.try_get(column).map_err(|error| StoreError::Corrupt(format!("column {column}: {error}")))
}

const KNOWN_SCHEMA: i64 = 5;
/// Tokens whose folded name one statement fills in at start (schema 5).
const FOLD_CHUNK: usize = 400;
/// Rows of a usage flush one statement writes (7 values each at most: well within both
/// databases' limits on bound values).
const USAGE_CHUNK: usize = 300;

/// The columns of a [`UserRow`]: never the password hash, which only
/// [`Store::password_hash`] reads.
const USER_COLUMNS: &str = "id, username, name, state, admin, created_at";

/// How many client addresses a token keeps.
const LAST_IPS: usize = 5;
// "patgate" in ASCII.
const ADVISORY_LOCK_KEY: i64 = 0x0070_6174_6761_7465;

/// A write transaction. `ordered` ones hold the lock that keeps change numbers in commit
/// order (this process's mutex, and on PostgreSQL the advisory lock): only they may append
/// to the change log.
struct Write<'s> {
    _guard: Option<MutexGuard<'s, ()>>,
    tx: Transaction<'static, Any>,
    ordered: bool,
}

/// `url` with `mode=rwc` (create the file if missing) unless it names a mode of its own.
fn sqlite_url_creating(url: &str) -> String {
    if url.contains(":memory:") {
        return url.to_owned();
    }
    match url.split_once('?') {
        None => format!("{url}?mode=rwc"),
        Some((_, query)) if query.split('&').any(|pair| pair.starts_with("mode=")) => url.to_owned(),
        Some((_, "")) => format!("{url}mode=rwc"),
        Some(_) if url.ends_with('&') => format!("{url}mode=rwc"),
        Some(_) => format!("{url}&mode=rwc"),
    }
}

/// Which table a path lives in, for [`SqlStore::check_path_free`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum PathOwner {
    User,
    Group,
    Project,
}

impl SqlStore {
    /// Connects, creating an SQLite file on first start, checks that the schema is not
    /// newer than this binary knows, and runs pending migrations.
    pub async fn connect(url: &str, resources: Arc<Resources>) -> Result<SqlStore, StoreError> {
        sqlx::any::install_default_drivers();
        let backend = Backend::of_url(url).ok_or_else(|| {
            StoreError::Database("the database URL must start with sqlite: or postgres://".to_owned())
        })?;
        let url = match backend {
            Backend::Sqlite => sqlite_url_creating(url),
            Backend::Postgres => url.to_owned(),
        };
        let connections = match backend {
            Backend::Sqlite => 4,
            Backend::Postgres => 8,
        };
        let pool = AnyPoolOptions::new().max_connections(connections).connect(&url).await.map_err(database)?;
        if backend == Backend::Sqlite && !url.contains(":memory:") {
            sqlx::query("PRAGMA journal_mode = WAL").execute(&pool).await.map_err(database)?;
        }
        let store = SqlStore { pool, backend, resources, write_lock: Mutex::new(()), webhooks: Vec::new() };
        store.migrate().await?;
        Ok(store)
    }

    async fn migrate(&self) -> Result<(), StoreError> {
        // A missing table means a new database; any other answer is compared with what we know.
        if let Ok(row) = sqlx::query("SELECT MAX(version) AS version FROM _sqlx_migrations").fetch_one(&self.pool).await
        {
            let found: Option<i64> = row.try_get("version").ok();
            if let Some(found) = found
                && found > KNOWN_SCHEMA
            {
                return Err(StoreError::SchemaTooNew { found, known: KNOWN_SCHEMA });
            }
        }
        self.backend.migrator().run(&self.pool).await.map_err(|error| StoreError::Database(error.to_string()))?;
        self.fold_token_names().await
    }

    /// Fills in `name_folded` for tokens written before schema 5 (once: a token written since
    /// carries it). Several replicas starting at once write the same values.
    async fn fold_token_names(&self) -> Result<(), StoreError> {
        let rows = sqlx::query("SELECT id, name FROM tokens WHERE name_folded IS NULL")
            .fetch_all(&self.pool)
            .await
            .map_err(database)?;
        if rows.is_empty() {
            return Ok(());
        }
        let mut write = self.begin_unordered().await?;
        // A few hundred rows a statement: a large instance's first start is not a million
        // round trips.
        for chunk in rows.chunks(FOLD_CHUNK) {
            let cases: String = (0..chunk.len()).map(|n| format!(" WHEN ${} THEN ${}", 2 * n + 1, 2 * n + 2)).collect();
            let ids: Vec<String> = (0..chunk.len()).map(|n| format!("${}", 2 * n + 1)).collect();
            let sql = format!("UPDATE tokens SET name_folded = CASE id{cases} END WHERE id IN ({})", ids.join(", "));
            let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
            for row in chunk {
                let (id, name): (i64, String) = (get(row, "id")?, get(row, "name")?);
                query = query.bind(id).bind(name.to_lowercase());
            }
            query.execute(&mut *write.tx).await.map_err(database)?;
        }
        write.tx.commit().await.map_err(database)
    }

    /// The same store, delivering audit events to `targets` from now on.
    #[must_use]
    pub fn with_webhooks(mut self, targets: Vec<WebhookTarget>) -> SqlStore {
        self.webhooks = targets;
        self
    }

    /// The webhook targets configured.
    pub fn webhooks(&self) -> &[WebhookTarget] {
        &self.webhooks
    }

    /// The connection pool, for the PostgreSQL listener and health checks.
    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// Checks the database answers.
    pub async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await.map_err(database).map(|_| ())
    }

    /// A transaction of a write that appends to the change log: it holds the lock that
    /// keeps change numbers in commit order, across replicas on PostgreSQL.
    async fn begin(&self) -> Result<Write<'_>, StoreError> {
        let guard = self.write_lock.lock().await;
        let mut tx = self.begin_transaction().await?;
        if self.backend == Backend::Postgres {
            sqlx::query("SELECT pg_advisory_xact_lock($1)")
                .bind(ADVISORY_LOCK_KEY)
                .execute(&mut *tx)
                .await
                .map_err(database)?;
        }
        Ok(Write { _guard: Some(guard), tx, ordered: true })
    }

    /// A transaction of a write without change-log entries (usage, audit events on their
    /// own, sessions, leases, deliveries): it does not wait for the change-log lock, so a
    /// large one never holds up a revocation on PostgreSQL. SQLite has one writer at a
    /// time whatever we do: this process's writers still queue on the mutex (fairly,
    /// instead of polling on SQLITE_BUSY), and the transaction takes the write lock first.
    async fn begin_unordered(&self) -> Result<Write<'_>, StoreError> {
        let guard = match self.backend {
            Backend::Sqlite => Some(self.write_lock.lock().await),
            Backend::Postgres => None,
        };
        let tx = self.begin_transaction().await?;
        Ok(Write { _guard: guard, tx, ordered: false })
    }

    /// `BEGIN IMMEDIATE` on SQLite: a write transaction that first reads (a rotation, a
    /// claim) would otherwise start as a reader and fail with SQLITE_BUSY when another
    /// connection wrote meanwhile, since the upgrade to writer cannot wait.
    async fn begin_transaction(&self) -> Result<Transaction<'static, Any>, StoreError> {
        match self.backend {
            Backend::Sqlite => self.pool.begin_with("BEGIN IMMEDIATE").await,
            Backend::Postgres => self.pool.begin().await,
        }
        .map_err(database)
    }

    /// One statement that writes no change, through the write path (on SQLite in an
    /// immediate transaction behind this process's writers; on PostgreSQL on its own).
    async fn execute_unordered(
        &self,
        query: sqlx::query::Query<'_, Any, sqlx::any::AnyArguments>,
    ) -> Result<u64, StoreError> {
        match self.backend {
            Backend::Sqlite => {
                let mut write = self.begin_unordered().await?;
                let done = query.execute(&mut *write.tx).await.map_err(database)?;
                write.tx.commit().await.map_err(database)?;
                Ok(done.rows_affected())
            }
            Backend::Postgres => Ok(query.execute(&self.pool).await.map_err(database)?.rows_affected()),
        }
    }

    /// Refuses `path` for a new or moved `owner` when another kind of thing has it: a
    /// username is a top-level namespace like a group, and a project's path is not a
    /// group's (each table keeps its own paths unique). Run inside the write, which holds
    /// the write lock, so two writers (two replicas) cannot both pass.
    async fn check_path_free(
        tx: &mut Transaction<'static, Any>,
        owner: PathOwner,
        path: &str,
    ) -> Result<(), StoreError> {
        // Paths are stored lowercase; the directory compares them so.
        let path = path.to_ascii_lowercase();
        let mut others: Vec<(&str, &str)> = Vec::new();
        match owner {
            PathOwner::User => others.push(("SELECT 1 AS taken FROM groups WHERE full_path = $1", "a group")),
            PathOwner::Group => {
                others.push(("SELECT 1 AS taken FROM projects WHERE full_path = $1", "a project"));
                if !path.contains('/') {
                    others.push(("SELECT 1 AS taken FROM users WHERE username = $1", "a user"));
                }
            }
            PathOwner::Project => others.push(("SELECT 1 AS taken FROM groups WHERE full_path = $1", "a group")),
        }
        for (sql, what) in others {
            let row = sqlx::query(sql).bind(&path).fetch_optional(&mut **tx).await.map_err(database)?;
            if row.is_some() {
                return Err(StoreError::Conflict(path_conflict(what, &path)));
            }
        }
        Ok(())
    }

    /// Revokes every token of `owner` not revoked yet (ending a rotation's grace period), as
    /// deleting the owner does: the changes and `token_revoked` audit events to commit with it.
    async fn revoke_owned_tokens(
        &self,
        tx: &mut Transaction<'static, Any>,
        owner: UserId,
        actor: crate::Actor,
        at: Timestamp,
    ) -> Result<(Vec<Change>, Vec<Audit>), StoreError> {
        if self.backend == Backend::Postgres {
            // The rows locked in id order, as every other writer of several tokens locks
            // them (a usage flush, a bulk revocation), so that none of them deadlocks.
            sqlx::query(
                "SELECT id FROM tokens WHERE owner_id = $2 AND (revoked_at IS NULL OR revoked_at > $1) \
                 ORDER BY id FOR UPDATE",
            )
            .bind(at.0)
            .bind(i64_of(owner.0)?)
            .fetch_all(&mut **tx)
            .await
            .map_err(database)?;
        }
        let rows = sqlx::query(
            "UPDATE tokens SET revoked_at = $1, revoke_reason = 'owner_deleted' \
             WHERE owner_id = $2 AND (revoked_at IS NULL OR revoked_at > $1) RETURNING id",
        )
        .bind(at.0)
        .bind(i64_of(owner.0)?)
        .fetch_all(&mut **tx)
        .await
        .map_err(database)?;
        let mut ids = rows.iter().map(|row| Ok(TokenId(u64_of(get(row, "id")?)?))).collect::<Result<Vec<_>, _>>()?;
        ids.sort_unstable();
        let changes = ids.iter().map(|token| Change::Token { id: token.0 }).collect();
        let audits = ids
            .iter()
            .map(|token| {
                Audit::new("token_revoked", actor, at)
                    .user(owner)
                    .token(*token)
                    .details(serde_json::json!({ "reason": "owner_deleted" }))
            })
            .collect();
        Ok((changes, audits))
    }

    /// Writes the settings document and finishes `write` with its change and its audit
    /// event (which carries the document).
    async fn write_settings(&self, mut write: Write<'_>, settings: &Settings, audit: Audit) -> Result<i64, StoreError> {
        let document = serde_json::to_string(settings).map_err(|error| StoreError::Corrupt(error.to_string()))?;
        sqlx::query("INSERT INTO settings (id, document) VALUES (1, $1) ON CONFLICT (id) DO UPDATE SET document = excluded.document")
            .bind(&document)
            .execute(&mut *write.tx)
            .await
            .map_err(database)?;
        let audit = audit.details(serde_json::from_str(&document).unwrap_or_default());
        self.finish(write, &[Change::Settings], &audit).await
    }

    /// Appends the changes and the audit event, notifies replicas, commits; returns the
    /// last change's sequence number.
    async fn finish(&self, write: Write<'_>, changes: &[Change], audit: &Audit) -> Result<i64, StoreError> {
        self.finish_many(write, changes, std::slice::from_ref(audit)).await
    }

    /// [`finish`](Self::finish) with any number of audit events.
    async fn finish_many(&self, mut write: Write<'_>, changes: &[Change], audits: &[Audit]) -> Result<i64, StoreError> {
        if !write.ordered && !changes.is_empty() {
            // A change numbered outside the lock could commit after a later number: a
            // follower that read past it would never apply it.
            return Err(StoreError::Database("a change was written without the change-log lock".to_owned()));
        }
        let mut sequence = 0;
        let at = audits.first().map_or(0, |audit| audit.at.0);
        for change in changes {
            let text = serde_json::to_string(change).map_err(|error| StoreError::Corrupt(error.to_string()))?;
            let row = sqlx::query("INSERT INTO changes (at, change) VALUES ($1, $2) RETURNING seq")
                .bind(at)
                .bind(text)
                .fetch_one(&mut *write.tx)
                .await
                .map_err(database)?;
            sequence = get(&row, "seq")?;
        }
        for audit in audits {
            self.append_audit(&mut write.tx, audit).await?;
        }
        if self.backend == Backend::Postgres && sequence > 0 {
            sqlx::query("SELECT pg_notify($1, $2)")
                .bind(NOTIFY_CHANNEL)
                .bind(sequence.to_string())
                .execute(&mut *write.tx)
                .await
                .map_err(database)?;
        }
        write.tx.commit().await.map_err(database)?;
        Ok(sequence)
    }

    /// Appends one audit event and, for each webhook that wants it, its delivery.
    async fn append_audit(&self, tx: &mut Transaction<'static, Any>, audit: &Audit) -> Result<(), StoreError> {
        let row = sqlx::query(
            "INSERT INTO audit_events (at, event, actor_user_id, actor_token_id, user_id, token_id, details) \
             VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id",
        )
        .bind(audit.at.0)
        .bind(audit.event)
        .bind(audit.actor.user.map(|u| i64_of(u.0)).transpose()?)
        .bind(audit.actor.token.map(|t| i64_of(t.0)).transpose()?)
        .bind(audit.user.map(|u| i64_of(u.0)).transpose()?)
        .bind(audit.token.map(|t| i64_of(t.0)).transpose()?)
        .bind(audit.details.to_string())
        .fetch_one(&mut **tx)
        .await
        .map_err(database)?;
        let id: i64 = get(&row, "id")?;
        let mut payload = None;
        // One delivery per URL: a URL configured twice would otherwise break the unique
        // (audit_event_id, url) constraint and with it the write that made the event.
        let mut urls: Vec<&str> = Vec::new();
        for target in self.webhooks.iter().filter(|target| target.wants(audit.event)) {
            if urls.contains(&target.url.as_str()) {
                continue;
            }
            urls.push(&target.url);
            let payload = payload.get_or_insert_with(|| {
                serde_json::json!({
                    "id": id,
                    "event": audit.event,
                    "at": audit.at.to_string(),
                    "user_id": audit.user.map(|u| u.0),
                    "token_id": audit.token.map(|t| t.0),
                    "actor_user_id": audit.actor.user.map(|u| u.0),
                    "actor_token_id": audit.actor.token.map(|t| t.0),
                    "details": audit.details,
                })
                .to_string()
            });
            sqlx::query(
                "INSERT INTO webhook_deliveries (audit_event_id, url, event, payload, created_at, next_attempt_at) \
                 VALUES ($1, $2, $3, $4, $5, $5)",
            )
            .bind(id)
            .bind(&target.url)
            .bind(audit.event)
            .bind(payload.as_str())
            .bind(audit.at.0)
            .execute(&mut **tx)
            .await
            .map_err(database)?;
        }
        Ok(())
    }

    /// The last client addresses of the tokens `of` names, newest first.
    async fn ips_of(&self, of: TokensOf<'_>) -> Result<HashMap<TokenId, Vec<std::net::IpAddr>>, StoreError> {
        let Some((sql, ids)) = of.select("x.token_id, x.ip", "token_ips", "x.seen_order DESC") else {
            return Ok(HashMap::new());
        };
        let rows =
            bind_all(sqlx::query(sqlx::AssertSqlSafe(sql)), &ids).fetch_all(&self.pool).await.map_err(database)?;
        let mut ips: HashMap<TokenId, Vec<std::net::IpAddr>> = HashMap::new();
        for row in &rows {
            let token = TokenId(u64_of(get(row, "token_id")?)?);
            let list = ips.entry(token).or_default();
            if list.len() < LAST_IPS
                && let Ok(ip) = get::<String>(row, "ip")?.parse()
            {
                list.push(ip);
            }
        }
        Ok(ips)
    }

    /// Permission uses from rows of `token_permission_uses`.
    fn uses_of_rows(&self, rows: &[AnyRow]) -> Result<Vec<(TokenId, PermissionUse)>, StoreError> {
        let mut uses = Vec::with_capacity(rows.len());
        for row in rows {
            // A permission the catalog no longer has was used by an older version: skipped.
            let Ok(permission) = self.resources.permission(&get::<String>(row, "permission")?) else { continue };
            let kind: String = get(row, "boundary_kind")?;
            let id = u64_of(get(row, "boundary_id")?)?;
            let boundary = match kind.parse::<BoundaryKind>() {
                Ok(BoundaryKind::Project) => Boundary::Project(ProjectId(id)),
                Ok(BoundaryKind::Group) => Boundary::Group(GroupId(id)),
                Ok(BoundaryKind::User) => Boundary::User(UserId(id)),
                Ok(BoundaryKind::Instance) => Boundary::Instance,
                Err(()) => return Err(StoreError::Corrupt(format!("boundary kind `{kind}`"))),
            };
            uses.push((
                TokenId(u64_of(get(row, "token_id")?)?),
                PermissionUse {
                    permission,
                    boundary,
                    uses: u64_of(get(row, "uses")?)?,
                    first_used: Timestamp(get(row, "first_used")?),
                    last_used: Timestamp(get(row, "last_used")?),
                },
            ));
        }
        Ok(uses)
    }

    fn delivery_row(row: &AnyRow) -> Result<Delivery, StoreError> {
        let delivered_at: Option<i64> = get(row, "delivered_at")?;
        let last_status: Option<i64> = get(row, "last_status")?;
        Ok(Delivery {
            id: get(row, "id")?,
            audit_event_id: get(row, "audit_event_id")?,
            url: get(row, "url")?,
            event: get(row, "event")?,
            payload: get(row, "payload")?,
            created_at: Timestamp(get(row, "created_at")?),
            attempts: u32::try_from(get::<i64>(row, "attempts")?).unwrap_or(u32::MAX),
            next_attempt_at: Timestamp(get(row, "next_attempt_at")?),
            delivered_at: delivered_at.map(Timestamp),
            last_status: last_status.and_then(|status| u16::try_from(status).ok()),
            last_error: get(row, "last_error")?,
        })
    }

    fn user_row(row: &AnyRow) -> Result<UserRow, StoreError> {
        Ok(UserRow {
            id: UserId(u64_of(get(row, "id")?)?),
            username: get(row, "username")?,
            name: get(row, "name")?,
            state: convert::parse_state(&get::<String>(row, "state")?)?,
            admin: get::<i64>(row, "admin")? == 1,
            created_at: Timestamp(get(row, "created_at")?),
        })
    }

    fn path_row<Id>(row: &AnyRow, id: fn(u64) -> Id) -> Result<PathRow<Id>, StoreError> {
        Ok(PathRow {
            id: id(u64_of(get(row, "id")?)?),
            full_path: get(row, "full_path")?,
            visibility: convert::parse_visibility(&get::<String>(row, "visibility")?)?,
            created_at: Timestamp(get(row, "created_at")?),
        })
    }

    fn membership_row(row: &AnyRow) -> Result<MembershipRow, StoreError> {
        let target_id = u64_of(get(row, "target_id")?)?;
        let target = match get::<String>(row, "target_kind")?.as_str() {
            "group" => MembershipTarget::Group(GroupId(target_id)),
            _ => MembershipTarget::Project(ProjectId(target_id)),
        };
        Ok(MembershipRow {
            user: UserId(u64_of(get(row, "user_id")?)?),
            target,
            role: convert::parse_role(get(row, "role")?)?,
        })
    }

    async fn grants_of(
        &self,
        executor: impl sqlx::Executor<'_, Database = Any>,
        of: TokensOf<'_>,
    ) -> Result<HashMap<i64, Vec<patgate_core::Grant>>, StoreError> {
        let Some((sql, ids)) = of.select("x.*", "token_grants", "x.position") else {
            return Ok(HashMap::new());
        };
        let rows = bind_all(sqlx::query(sqlx::AssertSqlSafe(sql)), &ids).fetch_all(executor).await.map_err(database)?;
        let mut grants: HashMap<i64, Vec<patgate_core::Grant>> = HashMap::new();
        for row in &rows {
            let grant = convert::parse_grant(
                &self.resources,
                &get::<String>(row, "reach")?,
                &get::<String>(row, "project_ids")?,
                &get::<String>(row, "group_ids")?,
                &get::<String>(row, "permissions")?,
            )?;
            grants.entry(get(row, "token_id")?).or_default().push(grant);
        }
        Ok(grants)
    }

    fn token_row(
        row: &AnyRow,
        grants: &mut HashMap<i64, Vec<patgate_core::Grant>>,
    ) -> Result<(TokenAddress, TokenRow), StoreError> {
        let id: i64 = get(row, "id")?;
        let kind = convert::parse_kind(&get::<String>(row, "kind")?)?;
        let digest: Vec<u8> = get(row, "digest")?;
        let digest: [u8; 32] =
            digest.try_into().map_err(|_| StoreError::Corrupt(format!("token {id}: digest length")))?;
        let authority =
            convert::authority(kind, &get::<String>(row, "scopes")?, grants.remove(&id).unwrap_or_default())?;
        let family: Option<i64> = get(row, "family_id")?;
        let previous: Option<i64> = get(row, "previous_id")?;
        let revoked_at: Option<i64> = get(row, "revoked_at")?;
        let expires_at: Option<i64> = get(row, "expires_at")?;
        let last_used_at: Option<i64> = get(row, "last_used_at")?;
        let last_notice_days: Option<i64> = get(row, "last_notice_days")?;
        let display_prefix: String = get(row, "display_prefix")?;
        let hint = TokenHint::of_display_prefix(&display_prefix)
            .ok_or_else(|| StoreError::Corrupt(format!("token {id}: display prefix is not a token's")))?;
        Ok((
            TokenAddress { hint, digest: TokenDigest::from_bytes(digest) },
            TokenRow {
                id: TokenId(u64_of(id)?),
                owner: UserId(u64_of(get(row, "owner_id")?)?),
                name: get(row, "name")?,
                description: get(row, "description")?,
                kind,
                display_prefix,
                authority,
                allowed_ips: convert::parse_ips(&get::<String>(row, "allowed_ips")?)?,
                created_at: Timestamp(get(row, "created_at")?),
                expires_at: expires_at.map(Timestamp),
                revoked_at: revoked_at.map(Timestamp),
                revoke_reason: get(row, "revoke_reason")?,
                family: TokenId(u64_of(family.unwrap_or(id))?),
                previous: previous.map(u64_of).transpose()?.map(TokenId),
                last_used_at: last_used_at.map(Timestamp),
                last_ips: Vec::new(),
                last_notice_days: last_notice_days.and_then(|days| u32::try_from(days).ok()),
            },
        ))
    }

    async fn insert_token(
        &self,
        tx: &mut Transaction<'static, Any>,
        token: &NewToken,
        family: Option<TokenId>,
        previous: Option<TokenId>,
    ) -> Result<TokenId, StoreError> {
        // The index finds a token by the hint its display prefix carries: a row without one
        // could never be used, and would stop every start that reads it.
        if TokenHint::of_display_prefix(&token.display_prefix).is_none() {
            return Err(StoreError::Corrupt(format!(
                "refusing to store a token whose display prefix `{}` is not a token's",
                token.display_prefix
            )));
        }
        let (scopes, grants) = match &token.authority {
            patgate_core::Authority::Legacy(scopes) => (convert::scopes_text(*scopes), &[][..]),
            patgate_core::Authority::FineGrained(grants) => (String::new(), &grants[..]),
        };
        let row = sqlx::query(
            "INSERT INTO tokens (owner_id, name, description, kind, digest, display_prefix, scopes, allowed_ips, \
             created_at, expires_at, family_id, previous_id, name_folded) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13) RETURNING id",
        )
        .bind(i64_of(token.owner.0)?)
        .bind(&token.name)
        .bind(&token.description)
        .bind(token.authority.kind().name())
        .bind(token.digest.as_bytes().to_vec())
        .bind(&token.display_prefix)
        .bind(scopes)
        .bind(convert::ips_text(&token.allowed_ips))
        .bind(token.created_at.0)
        .bind(token.expires_at.map(|t| t.0))
        .bind(family.map(|f| i64_of(f.0)).transpose()?)
        .bind(previous.map(|p| i64_of(p.0)).transpose()?)
        .bind(token.name.to_lowercase())
        .fetch_one(&mut **tx)
        .await
        .map_err(database)?;
        let id: i64 = get(&row, "id")?;
        if family.is_none() {
            sqlx::query("UPDATE tokens SET family_id = $1 WHERE id = $1")
                .bind(id)
                .execute(&mut **tx)
                .await
                .map_err(database)?;
        }
        for (position, grant) in grants.iter().enumerate() {
            let columns = convert::grant_columns(&self.resources, grant);
            sqlx::query(
                "INSERT INTO token_grants (token_id, position, reach, project_ids, group_ids, permissions) \
                 VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .bind(id)
            .bind(i64::try_from(position).unwrap_or(i64::MAX))
            .bind(columns.reach)
            .bind(columns.project_ids)
            .bind(columns.group_ids)
            .bind(columns.permissions)
            .execute(&mut **tx)
            .await
            .map_err(database)?;
        }
        Ok(TokenId(u64_of(id)?))
    }

    async fn upsert_path(
        tx: &mut Transaction<'static, Any>,
        table: &'static str,
        full_path: &str,
        visibility: Visibility,
        at: Timestamp,
    ) -> Result<u64, StoreError> {
        // The table name is one of two literals, never input.
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "INSERT INTO {table} (full_path, visibility, created_at) VALUES ($1, $2, $3) \
             ON CONFLICT (full_path) DO UPDATE SET visibility = excluded.visibility RETURNING id"
        )))
        .bind(full_path)
        .bind(visibility.name())
        .bind(at.0)
        .fetch_one(&mut **tx)
        .await
        .map_err(database)?;
        u64_of(get(&row, "id")?)
    }

    async fn set_membership_in(
        tx: &mut Transaction<'static, Any>,
        user: UserId,
        target: MembershipTarget,
        role: Option<Role>,
    ) -> Result<(), StoreError> {
        let (kind, id) = match target {
            MembershipTarget::Group(g) => ("group", g.0),
            MembershipTarget::Project(p) => ("project", p.0),
        };
        match role {
            Some(role) => sqlx::query(
                "INSERT INTO memberships (user_id, target_kind, target_id, role) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (user_id, target_kind, target_id) DO UPDATE SET role = excluded.role",
            )
            .bind(i64_of(user.0)?)
            .bind(kind)
            .bind(i64_of(id)?)
            .bind(i64::from(role.access_level())),
            None => sqlx::query("DELETE FROM memberships WHERE user_id = $1 AND target_kind = $2 AND target_id = $3")
                .bind(i64_of(user.0)?)
                .bind(kind)
                .bind(i64_of(id)?),
        }
        .execute(&mut **tx)
        .await
        .map_err(database)?;
        Ok(())
    }
}

impl SqlStore {
    /// The settings document as `executor` sees it (the defaults before any was stored).
    async fn settings_in(executor: impl sqlx::Executor<'_, Database = Any>) -> Result<Settings, StoreError> {
        let row = sqlx::query("SELECT document FROM settings WHERE id = 1")
            .fetch_optional(executor)
            .await
            .map_err(database)?;
        match row {
            None => Ok(Settings::default()),
            Some(row) => serde_json::from_str(&get::<String>(&row, "document")?)
                .map_err(|error| StoreError::Corrupt(format!("settings: {error}"))),
        }
    }

    /// Whether an active administrator can still manage the instance at `now`: one holds a
    /// live token that reaches admin endpoints (a legacy token with `admin_mode` or `sudo`,
    /// or a fine-grained one with an `instance` grant), or a password to sign in to the
    /// web UI with.
    async fn admin_access_in(
        executor: impl sqlx::Executor<'_, Database = Any>,
        now: Timestamp,
    ) -> Result<bool, StoreError> {
        use patgate_core::scope::LegacyScope;
        let row = sqlx::query(
            "SELECT 1 AS found FROM users u WHERE u.admin = 1 AND u.state = 'active' AND (u.password_hash IS NOT NULL \
             OR EXISTS (SELECT 1 FROM tokens t WHERE t.owner_id = u.id \
             AND (t.revoked_at IS NULL OR t.revoked_at > $1) AND (t.expires_at IS NULL OR t.expires_at > $1) \
             AND ((t.kind = 'legacy' AND (',' || t.scopes || ',' LIKE $2 OR ',' || t.scopes || ',' LIKE $3)) \
             OR (t.kind = 'fine_grained' AND EXISTS \
             (SELECT 1 FROM token_grants g WHERE g.token_id = t.id AND g.reach = 'instance'))))) LIMIT 1",
        )
        .bind(now.0)
        .bind(format!("%,{},%", LegacyScope::AdminMode.name()))
        .bind(format!("%,{},%", LegacyScope::Sudo.name()))
        .fetch_optional(executor)
        .await
        .map_err(database)?;
        Ok(row.is_some())
    }

    /// Adds `uses`' permission uses to their counts (merged per token, permission and
    /// boundary: one row of a statement may not update a row another one inserts), a few
    /// hundred rows a statement.
    async fn add_permission_uses(
        &self,
        tx: &mut Transaction<'static, Any>,
        uses: &[TokenUse],
    ) -> Result<(), StoreError> {
        type Key = (i64, String, &'static str, i64);
        let mut merged: std::collections::BTreeMap<Key, (i64, i64, i64)> = std::collections::BTreeMap::new();
        for used in uses {
            let token = i64_of(used.token.0)?;
            for each in &used.permissions {
                let (kind, id) = boundary_columns(each.boundary)?;
                let count = i64::try_from(each.uses).unwrap_or(i64::MAX);
                let key = (token, self.resources.permission_name(each.permission), kind, id);
                let entry = merged.entry(key).or_insert((0, each.first_used.0, each.last_used.0));
                entry.0 = entry.0.saturating_add(count);
                entry.1 = entry.1.min(each.first_used.0);
                entry.2 = entry.2.max(each.last_used.0);
            }
        }
        let rows: Vec<(Key, (i64, i64, i64))> = merged.into_iter().collect();
        for chunk in rows.chunks(USAGE_CHUNK) {
            let values: Vec<String> = (0..chunk.len()).map(|n| format!("({})", placeholders(7 * n + 1, 7))).collect();
            let sql = format!(
                "INSERT INTO token_permission_uses \
                 (token_id, permission, boundary_kind, boundary_id, uses, first_used, last_used) VALUES {} \
                 ON CONFLICT (token_id, permission, boundary_kind, boundary_id) DO UPDATE SET \
                 uses = token_permission_uses.uses + excluded.uses, \
                 first_used = CASE WHEN excluded.first_used < token_permission_uses.first_used \
                 THEN excluded.first_used ELSE token_permission_uses.first_used END, \
                 last_used = CASE WHEN excluded.last_used > token_permission_uses.last_used \
                 THEN excluded.last_used ELSE token_permission_uses.last_used END",
                values.join(", ")
            );
            let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
            for ((token, permission, kind, id), (count, first, last)) in chunk {
                query = query
                    .bind(*token)
                    .bind(permission.as_str())
                    .bind(*kind)
                    .bind(*id)
                    .bind(*count)
                    .bind(*first)
                    .bind(*last);
            }
            query.execute(&mut **tx).await.map_err(database)?;
        }
        Ok(())
    }
}

impl Store for SqlStore {
    fn backend(&self) -> Backend {
        self.backend
    }

    async fn snapshot_is_empty(&self) -> Result<bool, StoreError> {
        let row = sqlx::query("SELECT COUNT(*) AS users FROM users").fetch_one(&self.pool).await.map_err(database)?;
        Ok(get::<i64>(&row, "users")? == 0)
    }

    async fn admin_access_exists(&self, now: Timestamp) -> Result<bool, StoreError> {
        Self::admin_access_in(&self.pool, now).await
    }

    async fn bootstrap_admin(
        &self,
        username: &str,
        name: &str,
        token: &NewToken,
    ) -> Result<Option<(UserId, TokenId, i64)>, StoreError> {
        let now = token.created_at;
        let system = crate::Actor::default();
        let mut write = self.begin().await?;
        if Self::admin_access_in(&mut *write.tx, now).await? {
            write.tx.rollback().await.map_err(database)?;
            return Ok(None);
        }
        Self::check_path_free(&mut write.tx, PathOwner::User, username).await?;
        let existing = sqlx::query("SELECT id, state, admin FROM users WHERE username = $1")
            .bind(username)
            .fetch_optional(&mut *write.tx)
            .await
            .map_err(database)?;
        let (user, audit) = match existing {
            None => {
                let row = sqlx::query(
                    "INSERT INTO users (username, name, state, admin, created_at) VALUES ($1, $2, 'active', 1, $3) \
                     RETURNING id",
                )
                .bind(username)
                .bind(name)
                .bind(now.0)
                .fetch_one(&mut *write.tx)
                .await
                .map_err(database)?;
                let user = UserId(u64_of(get(&row, "id")?)?);
                (user, Audit::new("user_created", system, now).user(user))
            }
            Some(row) => {
                let user = UserId(u64_of(get(&row, "id")?)?);
                let state: String = get(&row, "state")?;
                let admin = get::<i64>(&row, "admin")? == 1;
                sqlx::query("UPDATE users SET state = 'active', admin = 1 WHERE id = $1")
                    .bind(i64_of(user.0)?)
                    .execute(&mut *write.tx)
                    .await
                    .map_err(database)?;
                let details = serde_json::json!({ "previous_state": state, "was_admin": admin });
                (user, Audit::new("admin_restored", system, now).user(user).details(details))
            }
        };
        let token = NewToken { owner: user, ..token.clone() };
        let id = self.insert_token(&mut write.tx, &token, None, None).await?;
        let audits = [audit, Audit::new("token_created", system, now).user(user).token(id)];
        let sequence =
            self.finish_many(write, &[Change::User { id: user.0 }, Change::Token { id: id.0 }], &audits).await?;
        Ok(Some((user, id, sequence)))
    }

    async fn claim_key_fingerprint(&self, fingerprint: &str, audit: Audit) -> Result<String, StoreError> {
        let mut write = self.begin().await?;
        let mut settings = Self::settings_in(&mut *write.tx).await?;
        if !settings.key_fingerprint.is_empty() {
            write.tx.rollback().await.map_err(database)?;
            return Ok(settings.key_fingerprint);
        }
        settings.key_fingerprint = fingerprint.to_owned();
        self.write_settings(write, &settings, audit).await?;
        Ok(settings.key_fingerprint)
    }

    async fn snapshot(&self) -> Result<Snapshot, StoreError> {
        let mut tx = self.pool.begin().await.map_err(database)?;
        if self.backend == Backend::Postgres {
            sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ").execute(&mut *tx).await.map_err(database)?;
        }
        let sequence: Option<i64> = sqlx::query("SELECT MAX(seq) AS seq FROM changes")
            .fetch_one(&mut *tx)
            .await
            .map_err(database)?
            .try_get("seq")
            .ok()
            .flatten();
        let users = sqlx::query(sqlx::AssertSqlSafe(format!("SELECT {USER_COLUMNS} FROM users ORDER BY id")))
            .fetch_all(&mut *tx)
            .await
            .map_err(database)?;
        let groups =
            sqlx::query("SELECT * FROM groups ORDER BY full_path").fetch_all(&mut *tx).await.map_err(database)?;
        let projects = sqlx::query("SELECT * FROM projects ORDER BY id").fetch_all(&mut *tx).await.map_err(database)?;
        let memberships = sqlx::query("SELECT * FROM memberships").fetch_all(&mut *tx).await.map_err(database)?;
        let mut grants = self.grants_of(&mut *tx, TokensOf::All).await?;
        let tokens = sqlx::query("SELECT * FROM tokens ORDER BY id").fetch_all(&mut *tx).await.map_err(database)?;
        // In the same transaction: a settings change committed after it is after `sequence`.
        let settings = Self::settings_in(&mut *tx).await?;
        tx.commit().await.map_err(database)?;
        Ok(Snapshot {
            settings,
            users: users.iter().map(Self::user_row).collect::<Result<_, _>>()?,
            // Parents before children: sorted by path, a prefix sorts first.
            groups: groups.iter().map(|row| Self::path_row(row, GroupId)).collect::<Result<_, _>>()?,
            projects: projects.iter().map(|row| Self::path_row(row, ProjectId)).collect::<Result<_, _>>()?,
            memberships: memberships.iter().map(Self::membership_row).collect::<Result<_, _>>()?,
            tokens: tokens
                .iter()
                .map(|row| Self::token_row(row, &mut grants).map(|(address, token)| (address, token.record())))
                .collect::<Result<Vec<(TokenAddress, TokenRecord)>, _>>()?,
            sequence: sequence.unwrap_or(0),
        })
    }

    async fn changes_since(&self, sequence: i64, limit: u32) -> Result<Vec<(i64, Change)>, StoreError> {
        let rows = sqlx::query("SELECT seq, change FROM changes WHERE seq > $1 ORDER BY seq LIMIT $2")
            .bind(sequence)
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await
            .map_err(database)?;
        rows.iter()
            .map(|row| {
                let change: String = get(row, "change")?;
                let change = serde_json::from_str(&change).map_err(|error| StoreError::Corrupt(error.to_string()))?;
                Ok((get(row, "seq")?, change))
            })
            .collect()
    }

    async fn user(&self, id: UserId) -> Result<Option<UserRow>, StoreError> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!("SELECT {USER_COLUMNS} FROM users WHERE id = $1")))
            .bind(i64_of(id.0)?)
            .fetch_optional(&self.pool)
            .await
            .map_err(database)?;
        row.as_ref().map(Self::user_row).transpose()
    }

    async fn group(&self, id: GroupId) -> Result<Option<PathRow<GroupId>>, StoreError> {
        let row = sqlx::query("SELECT * FROM groups WHERE id = $1")
            .bind(i64_of(id.0)?)
            .fetch_optional(&self.pool)
            .await
            .map_err(database)?;
        row.as_ref().map(|row| Self::path_row(row, GroupId)).transpose()
    }

    async fn project(&self, id: ProjectId) -> Result<Option<PathRow<ProjectId>>, StoreError> {
        let row = sqlx::query("SELECT * FROM projects WHERE id = $1")
            .bind(i64_of(id.0)?)
            .fetch_optional(&self.pool)
            .await
            .map_err(database)?;
        row.as_ref().map(|row| Self::path_row(row, ProjectId)).transpose()
    }

    async fn membership(&self, user: UserId, target: MembershipTarget) -> Result<Option<Role>, StoreError> {
        let (kind, id) = match target {
            MembershipTarget::Group(g) => ("group", g.0),
            MembershipTarget::Project(p) => ("project", p.0),
        };
        let row =
            sqlx::query("SELECT role FROM memberships WHERE user_id = $1 AND target_kind = $2 AND target_id = $3")
                .bind(i64_of(user.0)?)
                .bind(kind)
                .bind(i64_of(id)?)
                .fetch_optional(&self.pool)
                .await
                .map_err(database)?;
        row.map(|row| convert::parse_role(get(&row, "role")?)).transpose()
    }

    async fn token_with_address(&self, id: TokenId) -> Result<Option<(TokenAddress, TokenRow)>, StoreError> {
        let row = sqlx::query("SELECT * FROM tokens WHERE id = $1")
            .bind(i64_of(id.0)?)
            .fetch_optional(&self.pool)
            .await
            .map_err(database)?;
        let Some(row) = row else { return Ok(None) };
        let mut grants = self.grants_of(&self.pool, TokensOf::Token(i64_of(id.0)?)).await?;
        let (address, mut token) = Self::token_row(&row, &mut grants)?;
        let rows = sqlx::query("SELECT ip FROM token_ips WHERE token_id = $1 ORDER BY seen_order DESC LIMIT $2")
            .bind(i64_of(id.0)?)
            .bind(i64::try_from(LAST_IPS).unwrap_or(5))
            .fetch_all(&self.pool)
            .await
            .map_err(database)?;
        token.last_ips = rows.iter().filter_map(|row| get::<String>(row, "ip").ok()?.parse().ok()).collect();
        Ok(Some((address, token)))
    }

    async fn create_user(
        &self,
        username: &str,
        name: &str,
        admin: bool,
        audit: Audit,
    ) -> Result<(UserId, i64), StoreError> {
        let mut write = self.begin().await?;
        Self::check_path_free(&mut write.tx, PathOwner::User, username).await?;
        let row = sqlx::query("INSERT INTO users (username, name, state, admin, created_at) VALUES ($1, $2, 'active', $3, $4) RETURNING id")
            .bind(username)
            .bind(name)
            .bind(i64::from(admin))
            .bind(audit.at.0)
            .fetch_one(&mut *write.tx)
            .await
            .map_err(database)?;
        let id = UserId(u64_of(get(&row, "id")?)?);
        let sequence = self.finish(write, &[Change::User { id: id.0 }], &audit.user(id)).await?;
        Ok((id, sequence))
    }

    async fn set_user_state(&self, id: UserId, state: UserState, audit: Audit) -> Result<i64, StoreError> {
        let mut write = self.begin().await?;
        let done = sqlx::query("UPDATE users SET state = $1 WHERE id = $2")
            .bind(convert::state_name(state))
            .bind(i64_of(id.0)?)
            .execute(&mut *write.tx)
            .await
            .map_err(database)?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound(format!("user {id}")));
        }
        let mut changes = vec![Change::User { id: id.0 }];
        let mut audits = vec![audit.clone().user(id)];
        if state != UserState::Active {
            // A blocked or deleted user is signed out everywhere, in the same transaction.
            sqlx::query("DELETE FROM sessions WHERE user_id = $1")
                .bind(i64_of(id.0)?)
                .execute(&mut *write.tx)
                .await
                .map_err(database)?;
        }
        if state == UserState::Deleted {
            // Deleting a user revokes their tokens (blocking only denies them while blocked).
            let (revoked, revocations) = self.revoke_owned_tokens(&mut write.tx, id, audit.actor, audit.at).await?;
            changes.extend(revoked);
            audits.extend(revocations);
        }
        self.finish_many(write, &changes, &audits).await
    }

    async fn create_group(
        &self,
        full_path: &str,
        visibility: Visibility,
        audit: Audit,
    ) -> Result<(GroupId, i64), StoreError> {
        let mut write = self.begin().await?;
        Self::check_path_free(&mut write.tx, PathOwner::Group, full_path).await?;
        let row =
            sqlx::query("INSERT INTO groups (full_path, visibility, created_at) VALUES ($1, $2, $3) RETURNING id")
                .bind(full_path)
                .bind(visibility.name())
                .bind(audit.at.0)
                .fetch_one(&mut *write.tx)
                .await
                .map_err(database)?;
        let id = GroupId(u64_of(get(&row, "id")?)?);
        let sequence = self.finish(write, &[Change::Group { id: id.0 }], &audit).await?;
        Ok((id, sequence))
    }

    async fn create_project(
        &self,
        full_path: &str,
        visibility: Visibility,
        audit: Audit,
    ) -> Result<(ProjectId, i64), StoreError> {
        let mut write = self.begin().await?;
        Self::check_path_free(&mut write.tx, PathOwner::Project, full_path).await?;
        let row =
            sqlx::query("INSERT INTO projects (full_path, visibility, created_at) VALUES ($1, $2, $3) RETURNING id")
                .bind(full_path)
                .bind(visibility.name())
                .bind(audit.at.0)
                .fetch_one(&mut *write.tx)
                .await
                .map_err(database)?;
        let id = ProjectId(u64_of(get(&row, "id")?)?);
        let sequence = self.finish(write, &[Change::Project { id: id.0 }], &audit).await?;
        Ok((id, sequence))
    }

    async fn update_project(
        &self,
        id: ProjectId,
        full_path: &str,
        visibility: Visibility,
        audit: Audit,
    ) -> Result<i64, StoreError> {
        let mut write = self.begin().await?;
        Self::check_path_free(&mut write.tx, PathOwner::Project, full_path).await?;
        let done = sqlx::query("UPDATE projects SET full_path = $1, visibility = $2 WHERE id = $3")
            .bind(full_path)
            .bind(visibility.name())
            .bind(i64_of(id.0)?)
            .execute(&mut *write.tx)
            .await
            .map_err(database)?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound(format!("project {id}")));
        }
        self.finish(write, &[Change::Project { id: id.0 }], &audit).await
    }

    async fn set_membership(
        &self,
        user: UserId,
        target: MembershipTarget,
        role: Option<Role>,
        audit: Audit,
    ) -> Result<i64, StoreError> {
        let mut write = self.begin().await?;
        Self::set_membership_in(&mut write.tx, user, target, role).await?;
        self.finish(write, &[Change::membership(user, target)], &audit.user(user)).await
    }

    async fn import(&self, batch: &DirectoryBatch, audit: Audit) -> Result<(ImportCounts, i64), StoreError> {
        let mut write = self.begin().await?;
        let mut changes = Vec::new();
        let mut revocations = Vec::new();
        let mut users = HashMap::new();
        for (username, name, admin, state) in &batch.users {
            Self::check_path_free(&mut write.tx, PathOwner::User, username).await?;
            let row = sqlx::query(
                "INSERT INTO users (username, name, state, admin, created_at) VALUES ($1, COALESCE($2, ''), $3, $4, $5) \
                 ON CONFLICT (username) DO UPDATE SET name = COALESCE($2, users.name), state = excluded.state, \
                 admin = excluded.admin RETURNING id",
            )
            .bind(username)
            .bind(name)
            .bind(convert::state_name(*state))
            .bind(i64::from(*admin))
            .bind(audit.at.0)
            .fetch_one(&mut *write.tx)
            .await
            .map_err(database)?;
            let id = u64_of(get(&row, "id")?)?;
            if *state != UserState::Active {
                // As in `set_user_state`: an import that blocks a user signs them out.
                sqlx::query("DELETE FROM sessions WHERE user_id = $1")
                    .bind(i64_of(id)?)
                    .execute(&mut *write.tx)
                    .await
                    .map_err(database)?;
            }
            changes.push(Change::User { id });
            if *state == UserState::Deleted {
                // As in `set_user_state`: deleting revokes the tokens for good (a later
                // import that makes the user active again brings back none of them).
                let (revoked, audits) =
                    self.revoke_owned_tokens(&mut write.tx, UserId(id), audit.actor, audit.at).await?;
                changes.extend(revoked);
                revocations.extend(audits);
            }
            users.insert(username.clone(), id);
        }
        let mut paths: HashMap<(bool, String), u64> = HashMap::new();
        for (full_path, visibility) in &batch.groups {
            Self::check_path_free(&mut write.tx, PathOwner::Group, full_path).await?;
            let id = Self::upsert_path(&mut write.tx, "groups", full_path, *visibility, audit.at).await?;
            paths.insert((false, full_path.clone()), id);
            changes.push(Change::Group { id });
        }
        for (full_path, visibility) in &batch.projects {
            Self::check_path_free(&mut write.tx, PathOwner::Project, full_path).await?;
            let id = Self::upsert_path(&mut write.tx, "projects", full_path, *visibility, audit.at).await?;
            paths.insert((true, full_path.clone()), id);
            changes.push(Change::Project { id });
        }
        for (username, target_path, is_project, role) in &batch.memberships {
            let user = match users.get(username) {
                Some(id) => *id,
                None => {
                    let row = sqlx::query("SELECT id FROM users WHERE username = $1")
                        .bind(username)
                        .fetch_optional(&mut *write.tx)
                        .await
                        .map_err(database)?
                        .ok_or_else(|| StoreError::NotFound(format!("user `{username}`")))?;
                    u64_of(get(&row, "id")?)?
                }
            };
            let target_id = match paths.get(&(*is_project, target_path.clone())) {
                Some(id) => *id,
                None => {
                    let table = if *is_project { "projects" } else { "groups" };
                    let row = sqlx::query(sqlx::AssertSqlSafe(format!("SELECT id FROM {table} WHERE full_path = $1")))
                        .bind(target_path)
                        .fetch_optional(&mut *write.tx)
                        .await
                        .map_err(database)?
                        .ok_or_else(|| StoreError::NotFound(format!("`{target_path}`")))?;
                    u64_of(get(&row, "id")?)?
                }
            };
            let target = if *is_project {
                MembershipTarget::Project(ProjectId(target_id))
            } else {
                MembershipTarget::Group(GroupId(target_id))
            };
            Self::set_membership_in(&mut write.tx, UserId(user), target, Some(*role)).await?;
            changes.push(Change::membership(UserId(user), target));
        }
        let counts = ImportCounts {
            users: batch.users.len(),
            groups: batch.groups.len(),
            projects: batch.projects.len(),
            memberships: batch.memberships.len(),
        };
        let audit = audit.details(serde_json::json!({
            "users": counts.users, "groups": counts.groups, "projects": counts.projects, "memberships": counts.memberships
        }));
        let audits: Vec<Audit> = std::iter::once(audit).chain(revocations).collect();
        let sequence = self.finish_many(write, &changes, &audits).await?;
        Ok((counts, sequence))
    }

    async fn create_token(&self, token: &NewToken, audit: Audit) -> Result<(TokenId, i64), StoreError> {
        let mut write = self.begin().await?;
        let id = self.insert_token(&mut write.tx, token, None, None).await?;
        let sequence = self.finish(write, &[Change::Token { id: id.0 }], &audit.user(token.owner).token(id)).await?;
        Ok((id, sequence))
    }

    async fn rotate_token(
        &self,
        old: TokenId,
        token: &NewToken,
        grace_seconds: u32,
        audit: Audit,
    ) -> Result<(TokenId, i64), StoreError> {
        let mut write = self.begin().await?;
        let row = sqlx::query("SELECT family_id, revoked_at FROM tokens WHERE id = $1")
            .bind(i64_of(old.0)?)
            .fetch_optional(&mut *write.tx)
            .await
            .map_err(database)?
            .ok_or_else(|| StoreError::NotFound(format!("token {old}")))?;
        let family: Option<i64> = get(&row, "family_id")?;
        let family = TokenId(u64_of(family.unwrap_or(i64_of(old.0)?))?);
        let revoked = sqlx::query(
            "UPDATE tokens SET revoked_at = $1, revoke_reason = 'rotated' WHERE id = $2 AND revoked_at IS NULL",
        )
        .bind(audit.at.0 + i64::from(grace_seconds))
        .bind(i64_of(old.0)?)
        .execute(&mut *write.tx)
        .await
        .map_err(database)?;
        // Two concurrent rotations of one token: the second finds it revoked and makes nothing.
        if revoked.rows_affected() == 0 {
            return Err(StoreError::Conflict(format!("token {old} is already revoked")));
        }
        let id = self.insert_token(&mut write.tx, token, Some(family), Some(old)).await?;
        // The caller's details (what a narrowing removed) keep their place beside these.
        let mut details = audit.details.clone();
        if let Some(fields) = details.as_object_mut() {
            fields.insert("previous".to_owned(), old.0.into());
            fields.insert("grace_seconds".to_owned(), grace_seconds.into());
        }
        let audit = audit.user(token.owner).token(id).details(details);
        let sequence = self.finish(write, &[Change::Token { id: old.0 }, Change::Token { id: id.0 }], &audit).await?;
        Ok((id, sequence))
    }

    async fn revoke_token(&self, id: TokenId, reason: &str, audit: Audit) -> Result<i64, StoreError> {
        let (revoked, sequence) = self.revoke_tokens(&[id], reason, audit).await?;
        if revoked.is_empty() {
            return Err(StoreError::NotFound(format!("active token {id}")));
        }
        Ok(sequence)
    }

    async fn revoke_tokens(
        &self,
        ids: &[TokenId],
        reason: &str,
        audit: Audit,
    ) -> Result<(Vec<TokenId>, i64), StoreError> {
        let mut write = self.begin().await?;
        // Rows locked in id order, as a usage flush locks them, so the two never deadlock
        // on PostgreSQL; the answer keeps the caller's order.
        let mut order: Vec<(usize, TokenId)> = ids.iter().copied().enumerate().collect();
        order.sort_unstable_by_key(|(_, id)| *id);
        let mut done: Vec<(usize, TokenId, Audit)> = Vec::new();
        for (position, id) in &order {
            // Not revoked yet, or only at the end of a rotation's grace period (ended now).
            let row = sqlx::query(
                "UPDATE tokens SET revoked_at = $1, revoke_reason = $2 \
                 WHERE id = $3 AND (revoked_at IS NULL OR revoked_at > $1) RETURNING owner_id",
            )
            .bind(audit.at.0)
            .bind(reason)
            .bind(i64_of(id.0)?)
            .fetch_optional(&mut *write.tx)
            .await
            .map_err(database)?;
            if let Some(row) = row {
                let owner = UserId(u64_of(get(&row, "owner_id")?)?);
                let mut details = match &audit.details {
                    serde_json::Value::Object(map) => map.clone(),
                    _ => serde_json::Map::new(),
                };
                details.insert("reason".to_owned(), reason.into());
                done.push((
                    *position,
                    *id,
                    audit.clone().user(owner).token(*id).details(serde_json::Value::Object(details)),
                ));
            }
        }
        done.sort_unstable_by_key(|(position, _, _)| *position);
        let (revoked, audits): (Vec<TokenId>, Vec<Audit>) = done.into_iter().map(|(_, id, audit)| (id, audit)).unzip();
        if revoked.is_empty() {
            return Ok((revoked, 0));
        }
        let changes: Vec<Change> = revoked.iter().map(|id| Change::Token { id: id.0 }).collect();
        let sequence = self.finish_many(write, &changes, &audits).await?;
        Ok((revoked, sequence))
    }

    async fn family(&self, family: TokenId) -> Result<Vec<TokenId>, StoreError> {
        let rows = sqlx::query("SELECT id FROM tokens WHERE family_id = $1 ORDER BY id")
            .bind(i64_of(family.0)?)
            .fetch_all(&self.pool)
            .await
            .map_err(database)?;
        rows.iter().map(|row| Ok(TokenId(u64_of(get(row, "id")?)?))).collect()
    }

    async fn record_usage(&self, uses: &[TokenUse]) -> Result<Vec<(TokenId, std::net::IpAddr)>, StoreError> {
        if uses.is_empty() {
            return Ok(Vec::new());
        }
        // No change-log entry: the write does not wait for (or hold up) the writes that
        // number changes, revocations above all.
        let mut write = self.begin_unordered().await?;
        let mut new_ips = Vec::new();
        let mut audits = Vec::new();
        // One statement per address: each one's place among the token's addresses is
        // counted from the ones before it.
        for used in uses {
            let token = i64_of(used.token.0)?;
            for ip in &used.ips {
                let text = ip.to_string();
                let inserted = sqlx::query(
                    "INSERT INTO token_ips (token_id, ip, first_seen, last_seen, seen_order) VALUES ($1, $2, $3, $3, \
                     (SELECT COALESCE(MAX(seen_order), 0) + 1 FROM token_ips WHERE token_id = $1)) \
                     ON CONFLICT (token_id, ip) DO NOTHING",
                )
                .bind(token)
                .bind(&text)
                .bind(used.last_used_at.0)
                .execute(&mut *write.tx)
                .await
                .map_err(database)?;
                if inserted.rows_affected() == 1 {
                    new_ips.push((used.token, *ip));
                    audits.push(
                        Audit::new(
                            "token_used_from_new_ip",
                            crate::Actor { user: None, token: Some(used.token) },
                            used.last_used_at,
                        )
                        .user(used.owner)
                        .token(used.token)
                        .details(serde_json::json!({ "ip": text })),
                    );
                } else {
                    sqlx::query(
                        "UPDATE token_ips SET last_seen = $1, \
                         seen_order = (SELECT COALESCE(MAX(seen_order), 0) + 1 FROM token_ips WHERE token_id = $2) \
                         WHERE token_id = $2 AND ip = $3 AND last_seen <= $1",
                    )
                    .bind(used.last_used_at.0)
                    .bind(token)
                    .bind(&text)
                    .execute(&mut *write.tx)
                    .await
                    .map_err(database)?;
                }
            }
        }
        self.add_permission_uses(&mut write.tx, uses).await?;
        // Last use at the end, in token order, so the tokens' rows are locked only until the
        // commit and in the order a bulk revocation locks them.
        let mut last_used: std::collections::BTreeMap<i64, i64> = std::collections::BTreeMap::new();
        for used in uses {
            let at = last_used.entry(i64_of(used.token.0)?).or_insert(used.last_used_at.0);
            *at = (*at).max(used.last_used_at.0);
        }
        let last_used: Vec<(i64, i64)> = last_used.into_iter().collect();
        for chunk in last_used.chunks(USAGE_CHUNK) {
            let cases: String = (0..chunk.len()).map(|n| format!(" WHEN ${} THEN ${}", 2 * n + 1, 2 * n + 2)).collect();
            let ids: Vec<String> = (0..chunk.len()).map(|n| format!("${}", 2 * n + 1)).collect();
            let sql = format!(
                "UPDATE tokens SET last_used_at = CASE id{cases} END WHERE id IN ({}) \
                 AND (last_used_at IS NULL OR last_used_at < CASE id{cases} END)",
                ids.join(", ")
            );
            let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
            for (token, at) in chunk {
                query = query.bind(*token).bind(*at);
            }
            query.execute(&mut *write.tx).await.map_err(database)?;
        }
        if audits.is_empty() {
            write.tx.commit().await.map_err(database)?;
        } else {
            self.finish_many(write, &[], &audits).await?;
        }
        Ok(new_ips)
    }

    async fn expiry_notices_due(&self, now: Timestamp, limit: u32) -> Result<Vec<(TokenRow, u32)>, StoreError> {
        // The notice due: 0 once expired, else the smallest of 7, 30, 60 days not yet passed.
        let rows = sqlx::query(
            "SELECT * FROM (SELECT t.*, CASE WHEN t.expires_at <= $1 THEN 0 WHEN t.expires_at <= $2 THEN 7 \
             WHEN t.expires_at <= $3 THEN 30 ELSE 60 END AS due FROM tokens t \
             WHERE t.revoked_at IS NULL AND t.expires_at IS NOT NULL AND t.expires_at <= $4) d \
             WHERE d.last_notice_days IS NULL OR d.last_notice_days > d.due ORDER BY d.expires_at, d.id LIMIT $5",
        )
        .bind(now.0)
        .bind(now.plus_days(7).0)
        .bind(now.plus_days(30).0)
        .bind(now.plus_days(60).0)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(database)?;
        let ids = rows.iter().map(|row| get::<i64>(row, "id")).collect::<Result<Vec<_>, _>>()?;
        let mut grants = self.grants_of(&self.pool, TokensOf::Tokens(&ids)).await?;
        rows.iter()
            .map(|row| {
                let due = u32::try_from(get::<i64>(row, "due")?).unwrap_or(0);
                Ok((Self::token_row(row, &mut grants)?.1, due))
            })
            .collect()
    }

    async fn record_expiry_notice(&self, token: TokenId, days: u32, audit: Audit) -> Result<bool, StoreError> {
        let mut write = self.begin_unordered().await?;
        let done = sqlx::query(
            "UPDATE tokens SET last_notice_days = $1 WHERE id = $2 AND revoked_at IS NULL \
             AND expires_at IS NOT NULL AND (last_notice_days IS NULL OR last_notice_days > $1)",
        )
        .bind(i64::from(days))
        .bind(i64_of(token.0)?)
        .execute(&mut *write.tx)
        .await
        .map_err(database)?;
        if done.rows_affected() == 0 {
            return Ok(false);
        }
        self.finish(write, &[], &audit.token(token)).await?;
        Ok(true)
    }

    async fn inactive_tokens(&self, cutoff: Timestamp, now: Timestamp, limit: u32) -> Result<Vec<TokenId>, StoreError> {
        let rows = sqlx::query(
            "SELECT id FROM tokens WHERE revoked_at IS NULL AND (expires_at IS NULL OR expires_at > $2) \
             AND COALESCE(last_used_at, created_at) < $1 ORDER BY id LIMIT $3",
        )
        .bind(cutoff.0)
        .bind(now.0)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(database)?;
        rows.iter().map(|row| Ok(TokenId(u64_of(get(row, "id")?)?))).collect()
    }

    async fn try_lease(&self, name: &str, holder: &str, now: Timestamp, until: Timestamp) -> Result<bool, StoreError> {
        let taken = self
            .execute_unordered(
                sqlx::query(
                    "INSERT INTO jobs (name, holder, lease_until) VALUES ($1, $2, $3) \
                     ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, lease_until = excluded.lease_until \
                     WHERE jobs.holder = excluded.holder OR jobs.lease_until <= $4",
                )
                .bind(name)
                .bind(holder)
                .bind(until.0)
                .bind(now.0),
            )
            .await?;
        Ok(taken == 1)
    }

    async fn claim_deliveries(
        &self,
        now: Timestamp,
        claim_until: Timestamp,
        limit: u32,
    ) -> Result<Vec<Delivery>, StoreError> {
        // Only deliveries to a receiver configured now: a webhook removed from the
        // configuration (perhaps because its receiver is no longer trusted) gets nothing
        // more; its backlog waits, and is sent if it is configured again.
        let mut urls: Vec<&str> = self.webhooks.iter().map(|target| target.url.as_str()).collect();
        urls.sort_unstable();
        urls.dedup();
        if urls.is_empty() {
            return Ok(Vec::new());
        }
        let mut write = self.begin_unordered().await?;
        let sql = format!(
            "SELECT * FROM webhook_deliveries WHERE delivered_at IS NULL AND next_attempt_at <= $1 \
             AND (claimed_until IS NULL OR claimed_until <= $1) AND url IN ({}) ORDER BY id LIMIT $2",
            placeholders(3, urls.len())
        );
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(now.0).bind(i64::from(limit));
        for url in urls {
            query = query.bind(url);
        }
        let rows = query.fetch_all(&mut *write.tx).await.map_err(database)?;
        let mut deliveries = Vec::with_capacity(rows.len());
        for delivery in rows.iter().map(Self::delivery_row) {
            let delivery = delivery?;
            // Another replica claiming at once (PostgreSQL: no lock orders these writes)
            // waits for this row, then finds it claimed and skips it.
            let claimed = sqlx::query(
                "UPDATE webhook_deliveries SET claimed_until = $1 WHERE id = $2 AND delivered_at IS NULL \
                 AND (claimed_until IS NULL OR claimed_until <= $3)",
            )
            .bind(claim_until.0)
            .bind(delivery.id)
            .bind(now.0)
            .execute(&mut *write.tx)
            .await
            .map_err(database)?;
            if claimed.rows_affected() == 1 {
                deliveries.push(delivery);
            }
        }
        write.tx.commit().await.map_err(database)?;
        Ok(deliveries)
    }

    async fn record_delivery(&self, id: i64, attempt: &DeliveryAttempt) -> Result<(), StoreError> {
        let delivered = attempt.error.is_none();
        self.execute_unordered(
            sqlx::query(
                "UPDATE webhook_deliveries SET attempts = attempts + 1, claimed_until = NULL, last_status = $1, \
                 last_error = $2, delivered_at = $3, next_attempt_at = $4 WHERE id = $5 AND delivered_at IS NULL",
            )
            .bind(attempt.status.map(i64::from))
            .bind(attempt.error.clone())
            .bind(delivered.then_some(attempt.at.0))
            .bind(if delivered { attempt.at.0 } else { attempt.retry_at.0 })
            .bind(id),
        )
        .await?;
        Ok(())
    }

    async fn deliveries(&self, filter: &DeliveryFilter) -> Result<Vec<Delivery>, StoreError> {
        let rows = sqlx::query(
            "SELECT * FROM webhook_deliveries WHERE ($1 = 0 OR delivered_at IS NULL) AND ($2 IS NULL OR id < $2) \
             ORDER BY id DESC LIMIT $3",
        )
        .bind(i64::from(filter.pending))
        .bind(filter.before_id)
        .bind(i64::from(filter.limit.clamp(1, 1000)))
        .fetch_all(&self.pool)
        .await
        .map_err(database)?;
        rows.iter().map(Self::delivery_row).collect()
    }

    async fn token(&self, id: TokenId) -> Result<Option<TokenRow>, StoreError> {
        Ok(self.token_with_address(id).await?.map(|(_, row)| row))
    }

    async fn tokens(&self, owner: Option<UserId>) -> Result<Vec<TokenRow>, StoreError> {
        let rows = match owner {
            Some(owner) => {
                sqlx::query("SELECT * FROM tokens WHERE owner_id = $1 ORDER BY id")
                    .bind(i64_of(owner.0)?)
                    .fetch_all(&self.pool)
                    .await
            }
            None => sqlx::query("SELECT * FROM tokens ORDER BY id").fetch_all(&self.pool).await,
        }
        .map_err(database)?;
        let grants_of = match owner {
            Some(owner) => TokensOf::Owner(i64_of(owner.0)?),
            None => TokensOf::All,
        };
        let mut grants = self.grants_of(&self.pool, grants_of).await?;
        let mut ips = self.ips_of(grants_of).await?;
        rows.iter()
            .map(|row| {
                Self::token_row(row, &mut grants).map(|(_, mut token)| {
                    token.last_ips = ips.remove(&token.id).unwrap_or_default();
                    token
                })
            })
            .collect()
    }

    async fn permission_uses(
        &self,
        owner: Option<UserId>,
        token: Option<TokenId>,
        since: Timestamp,
    ) -> Result<Vec<(TokenId, PermissionUse)>, StoreError> {
        const COLUMNS: &str =
            "u.token_id, u.permission, u.boundary_kind, u.boundary_id, u.uses, u.first_used, u.last_used";
        let query = match (owner, token) {
            (_, Some(token)) => sqlx::query(sqlx::AssertSqlSafe(format!(
                "SELECT {COLUMNS} FROM token_permission_uses u WHERE u.token_id = $1 AND u.last_used >= $2 \
                 ORDER BY u.token_id, u.permission, u.boundary_kind, u.boundary_id"
            )))
            .bind(i64_of(token.0)?),
            (Some(owner), None) => sqlx::query(sqlx::AssertSqlSafe(format!(
                "SELECT {COLUMNS} FROM token_permission_uses u JOIN tokens t ON t.id = u.token_id \
                 WHERE t.owner_id = $1 AND u.last_used >= $2 \
                 ORDER BY u.token_id, u.permission, u.boundary_kind, u.boundary_id"
            )))
            .bind(i64_of(owner.0)?),
            (None, None) => sqlx::query(sqlx::AssertSqlSafe(format!(
                "SELECT {COLUMNS} FROM token_permission_uses u WHERE u.last_used >= $1 \
                 ORDER BY u.token_id, u.permission, u.boundary_kind, u.boundary_id"
            ))),
        };
        let rows = query.bind(since.0).fetch_all(&self.pool).await.map_err(database)?;
        self.uses_of_rows(&rows)
    }

    async fn permission_uses_of(
        &self,
        tokens: &[TokenId],
        since: Timestamp,
    ) -> Result<Vec<(TokenId, PermissionUse)>, StoreError> {
        if tokens.is_empty() {
            return Ok(Vec::new());
        }
        let sql = format!(
            "SELECT u.token_id, u.permission, u.boundary_kind, u.boundary_id, u.uses, u.first_used, u.last_used \
             FROM token_permission_uses u WHERE u.last_used >= $1 AND u.token_id IN ({}) \
             ORDER BY u.token_id, u.permission, u.boundary_kind, u.boundary_id",
            placeholders(2, tokens.len())
        );
        let ids = tokens.iter().map(|token| i64_of(token.0)).collect::<Result<Vec<_>, _>>()?;
        let rows = bind_all(sqlx::query(sqlx::AssertSqlSafe(sql)).bind(since.0), &ids)
            .fetch_all(&self.pool)
            .await
            .map_err(database)?;
        self.uses_of_rows(&rows)
    }

    async fn token_page(&self, page: &TokenPageQuery) -> Result<(Vec<TokenRow>, u64), StoreError> {
        let mut values = Vec::new();
        let mut conditions = Vec::new();
        let bind = |values: &mut Vec<Value>, value: Value| {
            values.push(value);
            format!("${}", values.len())
        };
        if let Some(owner) = page.owner {
            conditions.push(format!("owner_id = {}", bind(&mut values, Value::Int(i64_of(owner.0)?))));
        }
        if let Some(kind) = page.kind {
            conditions.push(format!("kind = {}", bind(&mut values, Value::Text(kind.name()))));
        }
        for (column, before, after) in [
            ("expires_at", page.expires_before, page.expires_after),
            ("last_used_at", page.used_before, page.used_after),
        ] {
            if before.is_some() || after.is_some() {
                conditions.push(format!("{column} IS NOT NULL"));
            }
            if let Some(before) = before {
                conditions.push(format!("{column} < {}", bind(&mut values, Value::Int(before.0))));
            }
            if let Some(after) = after {
                conditions.push(format!("{column} >= {}", bind(&mut values, Value::Int(after.0))));
            }
        }
        if let Some(text) = page.name_contains.as_deref() {
            // A substring of the folded name, taken literally (no pattern characters). A row
            // written meanwhile by a replica that predates schema 5 (a rolling upgrade) has
            // no folded name until the next start folds it: the database's lowercasing
            // stands in (the same for ASCII).
            let text = bind(&mut values, Value::Owned(text.to_lowercase()));
            conditions.push(match self.backend {
                Backend::Sqlite => format!("instr(COALESCE(name_folded, lower(name)), {text}) > 0"),
                Backend::Postgres => format!("strpos(COALESCE(name_folded, lower(name)), {text}) > 0"),
            });
        }
        if let Some(states) = page.states {
            conditions.push(state_condition(&states, &mut values));
        }
        let filter = if conditions.is_empty() { String::new() } else { format!(" WHERE {}", conditions.join(" AND ")) };
        let (up, down) = ("ASC", "DESC");
        let direction = if page.descending { down } else { up };
        let order = match (page.sort, page.descending) {
            (TokenSort::Id, _) => format!("id {direction}"),
            (TokenSort::CreatedAt, _) => format!("created_at {direction}, id {direction}"),
            // Byte-wise, as `str` compares: SQLite's default collation, PostgreSQL's "C".
            (TokenSort::Name, _) => match self.backend {
                Backend::Sqlite => format!("name {direction}, id {direction}"),
                Backend::Postgres => format!("name COLLATE \"C\" {direction}, id {direction}"),
            },
            // Going up, a token that never expires comes after every date, one never used
            // before every date; going down, the reverse.
            (TokenSort::ExpiresAt, false) => "expires_at ASC NULLS LAST, id ASC".to_owned(),
            (TokenSort::ExpiresAt, true) => "expires_at DESC NULLS FIRST, id DESC".to_owned(),
            (TokenSort::LastUsedAt, false) => "last_used_at ASC NULLS FIRST, id ASC".to_owned(),
            (TokenSort::LastUsedAt, true) => "last_used_at DESC NULLS LAST, id DESC".to_owned(),
        };
        let with_values = |sql: String, values: &[Value]| {
            let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
            for value in values {
                query = match value {
                    Value::Int(int) => query.bind(*int),
                    Value::Text(text) => query.bind(*text),
                    Value::Owned(text) => query.bind(text.clone()),
                };
            }
            query
        };
        let total: i64 = with_values(format!("SELECT COUNT(*) AS n FROM tokens{filter}"), &values)
            .fetch_one(&self.pool)
            .await
            .map_err(database)
            .and_then(|row| get(&row, "n"))?;
        let limit = bind(&mut values, Value::Int(i64::from(page.limit)));
        let offset = bind(&mut values, Value::Int(i64::try_from(page.offset).unwrap_or(i64::MAX)));
        let rows = with_values(
            format!("SELECT * FROM tokens{filter} ORDER BY {order} LIMIT {limit} OFFSET {offset}"),
            &values,
        )
        .fetch_all(&self.pool)
        .await
        .map_err(database)?;
        let ids = rows.iter().map(|row| get::<i64>(row, "id")).collect::<Result<Vec<_>, _>>()?;
        let mut grants = self.grants_of(&self.pool, TokensOf::Tokens(&ids)).await?;
        let mut ips = self.ips_of(TokensOf::Tokens(&ids)).await?;
        let tokens = rows
            .iter()
            .map(|row| {
                Self::token_row(row, &mut grants).map(|(_, mut token)| {
                    token.last_ips = ips.remove(&token.id).unwrap_or_default();
                    token
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok((tokens, u64::try_from(total).unwrap_or(0)))
    }

    async fn set_password_hash(
        &self,
        user: UserId,
        hash: Option<&PasswordHash>,
        audit: Audit,
    ) -> Result<(), StoreError> {
        let mut write = self.begin_unordered().await?;
        let done = sqlx::query("UPDATE users SET password_hash = $1 WHERE id = $2")
            .bind(hash.map(|hash| hash.as_phc().to_owned()))
            .bind(i64_of(user.0)?)
            .execute(&mut *write.tx)
            .await
            .map_err(database)?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound(format!("user {user}")));
        }
        let ended = sqlx::query("DELETE FROM sessions WHERE user_id = $1")
            .bind(i64_of(user.0)?)
            .execute(&mut *write.tx)
            .await
            .map_err(database)?
            .rows_affected();
        let mut details = match &audit.details {
            serde_json::Value::Object(map) => map.clone(),
            _ => serde_json::Map::new(),
        };
        details.insert("sessions_ended".to_owned(), ended.into());
        details.insert("password_set".to_owned(), hash.is_some().into());
        let audit = audit.user(user).details(serde_json::Value::Object(details));
        self.finish(write, &[], &audit).await.map(|_| ())
    }

    async fn password_hash(&self, username: &str) -> Result<Option<(UserRow, Option<PasswordHash>)>, StoreError> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {USER_COLUMNS}, password_hash FROM users WHERE username = $1"
        )))
        .bind(username)
        .fetch_optional(&self.pool)
        .await
        .map_err(database)?;
        let Some(row) = row else { return Ok(None) };
        let hash: Option<String> = get(&row, "password_hash")?;
        Ok(Some((Self::user_row(&row)?, hash.map(PasswordHash::new))))
    }

    async fn create_session(&self, session: &NewSession, audit: Audit) -> Result<(), StoreError> {
        let mut write = self.begin_unordered().await?;
        // Expired sessions are of no use to anyone: each sign-in sweeps them.
        sqlx::query("DELETE FROM sessions WHERE expires_at <= $1")
            .bind(session.created_at.0)
            .execute(&mut *write.tx)
            .await
            .map_err(database)?;
        sqlx::query(
            "INSERT INTO sessions (id_digest, user_id, csrf_token, created_at, expires_at, last_seen_at) \
             VALUES ($1, $2, $3, $4, $5, $4)",
        )
        .bind(session.digest.to_hex())
        .bind(i64_of(session.user.0)?)
        .bind(session.csrf_token.expose_secret())
        .bind(session.created_at.0)
        .bind(session.expires_at.0)
        .execute(&mut *write.tx)
        .await
        .map_err(database)?;
        self.finish(write, &[], &audit.user(session.user)).await.map(|_| ())
    }

    async fn session(&self, digest: &SessionDigest, now: Timestamp) -> Result<Option<SessionRow>, StoreError> {
        let row = sqlx::query(
            "SELECT user_id, csrf_token, created_at, expires_at, last_seen_at FROM sessions \
             WHERE id_digest = $1 AND expires_at > $2",
        )
        .bind(digest.to_hex())
        .bind(now.0)
        .fetch_optional(&self.pool)
        .await
        .map_err(database)?;
        row.map(|row| {
            Ok(SessionRow {
                user: UserId(u64_of(get(&row, "user_id")?)?),
                csrf_token: CsrfToken::new(get(&row, "csrf_token")?),
                created_at: Timestamp(get(&row, "created_at")?),
                last_seen_at: Timestamp(get(&row, "last_seen_at")?),
                expires_at: Timestamp(get(&row, "expires_at")?),
            })
        })
        .transpose()
    }

    async fn touch_session(
        &self,
        digest: &SessionDigest,
        now: Timestamp,
        expires_at: Timestamp,
    ) -> Result<bool, StoreError> {
        // Never revives an ended session, and never moves time backwards.
        let done = self
            .execute_unordered(
                sqlx::query(
                    "UPDATE sessions SET last_seen_at = $2, expires_at = $3 \
                     WHERE id_digest = $1 AND expires_at > $2 AND last_seen_at <= $2",
                )
                .bind(digest.to_hex())
                .bind(now.0)
                .bind(expires_at.0),
            )
            .await?;
        Ok(done == 1)
    }

    async fn delete_session(&self, digest: &SessionDigest, audit: Audit) -> Result<bool, StoreError> {
        let mut write = self.begin_unordered().await?;
        let row = sqlx::query("DELETE FROM sessions WHERE id_digest = $1 RETURNING user_id")
            .bind(digest.to_hex())
            .fetch_optional(&mut *write.tx)
            .await
            .map_err(database)?;
        let Some(row) = row else {
            write.tx.rollback().await.map_err(database)?;
            return Ok(false);
        };
        let user = UserId(u64_of(get(&row, "user_id")?)?);
        self.finish(write, &[], &audit.user(user)).await?;
        Ok(true)
    }

    async fn delete_user_sessions(&self, user: UserId) -> Result<u64, StoreError> {
        self.execute_unordered(sqlx::query("DELETE FROM sessions WHERE user_id = $1").bind(i64_of(user.0)?)).await
    }

    async fn settings(&self) -> Result<Settings, StoreError> {
        Self::settings_in(&self.pool).await
    }

    async fn put_settings(&self, settings: &Settings, audit: Audit) -> Result<i64, StoreError> {
        let write = self.begin().await?;
        self.write_settings(write, settings, audit).await
    }

    async fn record_audit(&self, audits: &[Audit]) -> Result<(), StoreError> {
        if audits.is_empty() {
            return Ok(());
        }
        // Audit events only, however many (a policy change can block a million tokens): no
        // change-log entry, so no wait for the lock that orders changes.
        let write = self.begin_unordered().await?;
        self.finish_many(write, &[], audits).await.map(|_| ())
    }

    async fn audit_events(&self, filter: &AuditFilter) -> Result<Vec<AuditEvent>, StoreError> {
        // Every filter is bound; an absent one is NULL and matches everything.
        let rows = sqlx::query(
            "SELECT * FROM audit_events WHERE \
             ($1 IS NULL OR user_id = $1 OR actor_user_id = $1) AND ($2 IS NULL OR token_id = $2) AND \
             ($3 IS NULL OR event = $3) AND ($4 IS NULL OR at >= $4) AND ($5 IS NULL OR at < $5) AND \
             ($6 IS NULL OR id < $6) ORDER BY id DESC LIMIT $7",
        )
        .bind(filter.user.map(|u| i64_of(u.0)).transpose()?)
        .bind(filter.token.map(|t| i64_of(t.0)).transpose()?)
        .bind(filter.event.clone())
        .bind(filter.after.map(|t| t.0))
        .bind(filter.before.map(|t| t.0))
        .bind(filter.before_id)
        .bind(i64::from(filter.limit.clamp(1, 1000)))
        .fetch_all(&self.pool)
        .await
        .map_err(database)?;
        rows.iter()
            .map(|row| {
                let actor_user: Option<i64> = get(row, "actor_user_id")?;
                let actor_token: Option<i64> = get(row, "actor_token_id")?;
                let user: Option<i64> = get(row, "user_id")?;
                let token: Option<i64> = get(row, "token_id")?;
                Ok(AuditEvent {
                    id: get(row, "id")?,
                    at: Timestamp(get(row, "at")?),
                    event: get(row, "event")?,
                    actor_user: actor_user.map(u64_of).transpose()?.map(UserId),
                    actor_token: actor_token.map(u64_of).transpose()?.map(TokenId),
                    user: user.map(u64_of).transpose()?.map(UserId),
                    token: token.map(u64_of).transpose()?.map(TokenId),
                    details: serde_json::from_str(&get::<String>(row, "details")?).unwrap_or_default(),
                })
            })
            .collect()
    }
}
