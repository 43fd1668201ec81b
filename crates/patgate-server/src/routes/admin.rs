//! Admin: the directory (import and per-item changes) and instance settings.

use axum::{
    Json,
    extract::{Path, State},
    http::StatusCode,
};
use patgate_core::{
    BoundaryRef, Directory, MembershipTarget, Role, UserId, UserState, Visibility,
    validate::{LARGEST_MAX_LIFETIME_DAYS, authority_within},
};
use patgate_store::{Actor, Audit, DirectoryBatch, Settings, Store};
use serde::{Deserialize, Serialize};

use crate::{
    auth::{Caller, Credentials, authorize, session_authority},
    error::ApiError,
    extract::RawBody,
    password::Password,
    routes::session::store_password,
    state::{AppState, Shared, policy_of},
};

fn admin(state: &Shared, headers: &Credentials, permission: &str, read_only: bool) -> Result<Caller, ApiError> {
    let permission =
        [state.engine().resources.permission(permission).map_err(|e| ApiError::Internal(e.to_string()))?];
    authorize(state, headers, &permission, BoundaryRef::Instance, false, read_only)
}

fn actor(caller: &Caller) -> Actor {
    caller.actor()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImportUser {
    pub username: String,
    pub name: Option<String>,
    pub admin: Option<bool>,
    pub state: Option<String>,
}

/// `POST /api/v1/admin/users`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewUser {
    pub username: String,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub admin: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImportGroup {
    pub full_path: String,
    pub visibility: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImportProject {
    pub full_path: String,
    pub visibility: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImportMembership {
    pub username: String,
    pub target: String,
    pub role: String,
}

/// `POST /api/v1/admin/directory/import`.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct ImportRequest {
    pub users: Vec<ImportUser>,
    pub groups: Vec<ImportGroup>,
    pub projects: Vec<ImportProject>,
    pub memberships: Vec<ImportMembership>,
}

#[derive(Debug, Serialize)]
pub struct ImportResponse {
    pub users: usize,
    pub groups: usize,
    pub projects: usize,
    pub memberships: usize,
}

fn visibility(text: Option<&str>, field: &str) -> Result<Visibility, ApiError> {
    match text {
        None => Ok(Visibility::Private),
        Some(text) => text.parse().map_err(|_| {
            ApiError::invalid(format!("`{field}`: unknown visibility `{text}`: expected private, internal or public"))
        }),
    }
}

fn role(text: &str, field: &str) -> Result<Role, ApiError> {
    text.parse().map_err(|error: patgate_core::role::UnknownRoleError| ApiError::invalid(format!("`{field}`: {error}")))
}

/// Checks a whole import against a copy of the live directory, in dependency order, so
/// nothing is written unless everything is valid.
fn validate_import(directory: &mut Directory, body: &ImportRequest) -> Result<DirectoryBatch, ApiError> {
    let mut batch = DirectoryBatch::default();
    let mut next_id = u64::MAX / 2;
    let mut fresh = || {
        next_id += 1;
        next_id
    };
    let field = |name: &str, index: usize, error: patgate_core::DirectoryError| {
        ApiError::invalid(format!("`{name}[{index}]`: {error}"))
    };
    // An upsert: what an entry omits keeps its current value (or the default for a new one).
    for (index, user) in body.users.iter().enumerate() {
        let existing = directory.user_by_name(&user.username).map(|u| (u.id, u.state, u.admin));
        let state = match user.state.as_deref() {
            None => existing.map_or(UserState::Active, |(_, state, _)| state),
            Some(text) => text.parse().map_err(|error| field("users", index, error))?,
        };
        let admin = user.admin.or(existing.map(|(_, _, admin)| admin)).unwrap_or(false);
        let id = existing.map_or_else(|| patgate_core::UserId(fresh()), |(id, _, _)| id);
        directory.upsert_user(id, &user.username, state, admin).map_err(|error| field("users", index, error))?;
        batch.users.push((user.username.to_ascii_lowercase(), user.name.clone(), admin, state));
    }
    for (index, group) in body.groups.iter().enumerate() {
        let current = directory.group_by_path(&group.full_path).map(|g| g.visibility);
        let visibility = match group.visibility.as_deref() {
            None => current.unwrap_or(Visibility::Private),
            text => visibility(text, &format!("groups[{index}].visibility"))?,
        };
        if current.is_none() {
            directory
                .insert_group(patgate_core::GroupId(fresh()), &group.full_path, visibility)
                .map_err(|error| field("groups", index, error))?;
        }
        batch.groups.push((group.full_path.to_ascii_lowercase(), visibility));
    }
    for (index, project) in body.projects.iter().enumerate() {
        let current = directory.project_by_path(&project.full_path).map(|p| p.visibility);
        let visibility = match project.visibility.as_deref() {
            None => current.unwrap_or(Visibility::Private),
            text => visibility(text, &format!("projects[{index}].visibility"))?,
        };
        if current.is_none() {
            directory
                .insert_project(patgate_core::ProjectId(fresh()), &project.full_path, visibility)
                .map_err(|error| field("projects", index, error))?;
        }
        batch.projects.push((project.full_path.to_ascii_lowercase(), visibility));
    }
    for (index, membership) in body.memberships.iter().enumerate() {
        let role = role(&membership.role, &format!("memberships[{index}].role"))?;
        let user = directory.user_by_name(&membership.username).ok_or_else(|| {
            ApiError::invalid(format!("`memberships[{index}].username`: no user `{}`", membership.username))
        })?;
        let is_project = if directory.project_by_path(&membership.target).is_some() {
            true
        } else if directory.group_by_path(&membership.target).is_some() {
            false
        } else {
            return Err(ApiError::invalid(format!(
                "`memberships[{index}].target`: no group or project `{}`",
                membership.target
            )));
        };
        batch.memberships.push((user.username.to_string(), membership.target.to_ascii_lowercase(), is_project, role));
    }
    Ok(batch)
}

pub async fn import(
    State(state): State<AppState>,
    headers: Credentials,
    body: RawBody,
) -> Result<Json<ImportResponse>, ApiError> {
    let caller = admin(&state, &headers, "admin_user:create", false)?;
    let body: ImportRequest = body.json()?;
    let mut directory = state.directory();
    let batch = validate_import(&mut directory, &body)?;
    let (counts, _) =
        state.store.import(&batch, Audit::new("directory_imported", actor(&caller), state.clock.now())).await?;
    state.catch_up_after_write().await;
    Ok(Json(ImportResponse {
        users: counts.users,
        groups: counts.groups,
        projects: counts.projects,
        memberships: counts.memberships,
    }))
}

/// `POST /api/v1/admin/users`.
pub async fn create_user(
    State(state): State<AppState>,
    headers: Credentials,
    body: RawBody,
) -> Result<(StatusCode, Json<serde_json::Value>), ApiError> {
    let caller = admin(&state, &headers, "admin_user:create", false)?;
    let body: NewUser = body.json()?;
    let mut directory = state.directory();
    if directory.user_by_name(&body.username).is_some() {
        return Err(ApiError::Conflict(format!("user `{}` already exists", body.username)));
    }
    directory.upsert_user(patgate_core::UserId(u64::MAX), &body.username, UserState::Active, body.admin)?;
    let (id, _) = state
        .store
        .create_user(
            &body.username.to_ascii_lowercase(),
            &body.name,
            body.admin,
            Audit::new("user_created", actor(&caller), state.clock.now()),
        )
        .await?;
    state.catch_up_after_write().await;
    Ok((StatusCode::CREATED, Json(serde_json::json!({ "id": id.0, "username": body.username.to_ascii_lowercase() }))))
}

async fn set_state(
    state: &Shared,
    headers: &Credentials,
    username: &str,
    new_state: UserState,
    event: &'static str,
) -> Result<StatusCode, ApiError> {
    let caller = admin(state, headers, "admin_user:update", false)?;
    let user = state.user_id(username)?;
    state
        .store
        .set_user_state(user, new_state, Audit::new(event, actor(&caller), state.clock.now()).user(user))
        .await?;
    state.catch_up_after_write().await;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn block_user(
    State(state): State<AppState>,
    Path(username): Path<String>,
    headers: Credentials,
) -> Result<StatusCode, ApiError> {
    set_state(&state, &headers, &username, UserState::Blocked, "user_blocked").await
}

pub async fn unblock_user(
    State(state): State<AppState>,
    Path(username): Path<String>,
    headers: Credentials,
) -> Result<StatusCode, ApiError> {
    set_state(&state, &headers, &username, UserState::Active, "user_unblocked").await
}

pub async fn delete_user(
    State(state): State<AppState>,
    Path(username): Path<String>,
    headers: Credentials,
) -> Result<StatusCode, ApiError> {
    set_state(&state, &headers, &username, UserState::Deleted, "user_deleted").await
}

/// `PUT /api/v1/admin/users/{username}/password`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetPasswordRequest {
    pub password: Password,
}

/// `PUT /api/v1/admin/users/{username}/password`: set a user's password (they may then sign
/// in with it); every session of theirs ends.
pub async fn set_password(
    State(state): State<AppState>,
    Path(username): Path<String>,
    headers: Credentials,
    body: RawBody,
) -> Result<StatusCode, ApiError> {
    let caller = admin(&state, &headers, "admin_user:update", false)?;
    let user = state.user_id(&username)?;
    may_hand_out_session(&state, &caller, user)?;
    let body: SetPasswordRequest = body.json()?;
    body.password.check_rules("password")?;
    store_password(&state, user, &body.password, actor(&caller), state.clock.now()).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Setting a user's password hands the caller the user's web session, which acts with the
/// user's full live rights ([`session_token`]): it is minting that session's credential. A
/// token may do it only when the session is within the token's own authority, as for any
/// token a token mints (DESIGN §6), or a narrow `admin_user:update` token would sign in as
/// an administrator and mint itself anything. A signed-in administrator is bound only by
/// their live role, as when they mint a token.
fn may_hand_out_session(state: &Shared, caller: &Caller, user: UserId) -> Result<(), ApiError> {
    let Some(creator) = caller.creator() else { return Ok(()) };
    let engine = state.engine();
    let directory = &engine.index.directory;
    let target = directory.user(user).ok_or_else(|| ApiError::NotFound("user does not exist".into()))?;
    if authority_within(&session_authority(target), &creator.authority, directory, target) {
        return Ok(());
    }
    Err(ApiError::Forbidden {
        reason: "escalation",
        message: format!(
            "Setting a password hands out `{}`'s web session, which can do everything they can; this token may \
             only do that for a user whose session is within its own permissions (a signed-in administrator may).",
            target.username
        ),
        missing: None,
    })
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PathBody {
    pub full_path: String,
    pub visibility: Option<String>,
}

pub async fn create_group(
    State(state): State<AppState>,
    headers: Credentials,
    body: RawBody,
) -> Result<(StatusCode, Json<serde_json::Value>), ApiError> {
    let caller = admin(&state, &headers, "admin_project:update", false)?;
    let body: PathBody = body.json()?;
    let visibility = visibility(body.visibility.as_deref(), "visibility")?;
    let mut directory = state.directory();
    directory.insert_group(patgate_core::GroupId(u64::MAX), &body.full_path, visibility)?;
    let path = body.full_path.to_ascii_lowercase();
    let (id, _) = state
        .store
        .create_group(&path, visibility, Audit::new("group_created", actor(&caller), state.clock.now()))
        .await?;
    state.catch_up_after_write().await;
    Ok((StatusCode::CREATED, Json(serde_json::json!({ "id": id.0, "full_path": path }))))
}

pub async fn create_project(
    State(state): State<AppState>,
    headers: Credentials,
    body: RawBody,
) -> Result<(StatusCode, Json<serde_json::Value>), ApiError> {
    let caller = admin(&state, &headers, "admin_project:update", false)?;
    let body: PathBody = body.json()?;
    let visibility = visibility(body.visibility.as_deref(), "visibility")?;
    let mut directory = state.directory();
    directory.insert_project(patgate_core::ProjectId(u64::MAX), &body.full_path, visibility)?;
    let path = body.full_path.to_ascii_lowercase();
    let (id, _) = state
        .store
        .create_project(&path, visibility, Audit::new("project_created", actor(&caller), state.clock.now()))
        .await?;
    state.catch_up_after_write().await;
    Ok((StatusCode::CREATED, Json(serde_json::json!({ "id": id.0, "full_path": path }))))
}

/// `PUT /api/v1/admin/projects/{id}`: move to another namespace and/or change visibility.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProjectUpdate {
    pub namespace: Option<String>,
    pub visibility: Option<String>,
}

pub async fn update_project(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: Credentials,
    body: RawBody,
) -> Result<Json<serde_json::Value>, ApiError> {
    let caller = admin(&state, &headers, "admin_project:update", false)?;
    let body: ProjectUpdate = body.json()?;
    let mut directory = state.directory();
    let project = match id.parse::<u64>() {
        Ok(number) => directory.project(patgate_core::ProjectId(number)),
        Err(_) => directory.project_by_path(&id),
    }
    .cloned()
    .ok_or_else(|| ApiError::NotFound(format!("project `{id}` does not exist")))?;
    if let Some(namespace) = &body.namespace {
        directory.move_project(project.id, namespace)?;
    }
    let visibility = match body.visibility.as_deref() {
        None => project.visibility,
        text => visibility(text, "visibility")?,
    };
    let moved = directory.project(project.id).map(|p| p.full_path.to_string()).unwrap_or_default();
    let audit = Audit::new("project_updated", actor(&caller), state.clock.now()).details(
        serde_json::json!({ "from": project.full_path.to_string(), "to": moved, "visibility": visibility.name() }),
    );
    state.store.update_project(project.id, &moved, visibility, audit).await?;
    state.catch_up_after_write().await;
    Ok(Json(serde_json::json!({ "id": project.id.0, "full_path": moved, "visibility": visibility.name() })))
}

/// `PUT /api/v1/admin/memberships` (add or change) and `DELETE` (remove).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MembershipBody {
    pub username: String,
    pub target: String,
    pub role: Option<String>,
}

fn membership_target(
    directory: &Directory,
    body: &MembershipBody,
) -> Result<(patgate_core::UserId, MembershipTarget), ApiError> {
    let user = directory
        .user_by_name(&body.username)
        .ok_or_else(|| ApiError::invalid(format!("`username`: no user `{}`", body.username)))?;
    let target = if let Some(project) = directory.project_by_path(&body.target) {
        MembershipTarget::Project(project.id)
    } else if let Some(group) = directory.group_by_path(&body.target) {
        MembershipTarget::Group(group.id)
    } else {
        return Err(ApiError::invalid(format!("`target`: no group or project `{}`", body.target)));
    };
    Ok((user.id, target))
}

pub async fn set_membership(
    State(state): State<AppState>,
    headers: Credentials,
    body: RawBody,
) -> Result<StatusCode, ApiError> {
    let caller = admin(&state, &headers, "admin_user:update", false)?;
    let body: MembershipBody = body.json()?;
    let role = role(body.role.as_deref().ok_or_else(|| ApiError::invalid("`role` is required"))?, "role")?;
    let (user, target) = membership_target(&state.engine().index.directory, &body)?;
    let audit = Audit::new("membership_set", actor(&caller), state.clock.now())
        .user(user)
        .details(serde_json::json!({ "target": body.target, "role": role.name() }));
    state.store.set_membership(user, target, Some(role), audit).await?;
    state.catch_up_after_write().await;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn remove_membership(
    State(state): State<AppState>,
    headers: Credentials,
    body: RawBody,
) -> Result<StatusCode, ApiError> {
    let caller = admin(&state, &headers, "admin_user:update", false)?;
    let body: MembershipBody = body.json()?;
    let (user, target) = membership_target(&state.engine().index.directory, &body)?;
    let audit = Audit::new("membership_removed", actor(&caller), state.clock.now())
        .user(user)
        .details(serde_json::json!({ "target": body.target }));
    state.store.set_membership(user, target, None, audit).await?;
    state.catch_up_after_write().await;
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /api/v1/admin/settings`.
pub async fn get_settings(State(state): State<AppState>, headers: Credentials) -> Result<Json<Settings>, ApiError> {
    admin(&state, &headers, "admin_setting:read", true)?;
    Ok(Json(state.settings()))
}

/// `PUT /api/v1/admin/settings`: any subset of the fields.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SettingsUpdate {
    pub max_lifetime_days: Option<u32>,
    pub expiry_required: Option<bool>,
    pub legacy_tokens_allowed: Option<bool>,
    pub token_prefix: Option<String>,
    /// `YYYY-MM-DD`; `""` clears it.
    pub legacy_creation_disabled_from: Option<String>,
    /// `YYYY-MM-DD`; `""` clears it.
    pub legacy_use_disabled_from: Option<String>,
    /// Group full path → days; the map replaces the current one (`{}` clears every cap).
    pub group_max_lifetime_days: Option<std::collections::BTreeMap<String, u32>>,
    pub rotation_grace_seconds: Option<u32>,
    pub inactivity_days: Option<u32>,
    pub usage_window_days: Option<u32>,
}

/// The largest rotation grace period: a day.
pub const LARGEST_ROTATION_GRACE_SECONDS: u32 = 86_400;

fn date_setting(field: &str, value: Option<String>, current: &mut Option<String>) -> Result<(), ApiError> {
    match value.as_deref().map(str::trim) {
        None => {}
        Some("") => *current = None,
        Some(text) => {
            patgate_core::Timestamp::parse_date(text)
                .ok_or_else(|| ApiError::invalid(format!("`{field}`: `{text}` is not a date (YYYY-MM-DD)")))?;
            *current = Some(text.to_owned());
        }
    }
    Ok(())
}

pub async fn put_settings(
    State(state): State<AppState>,
    headers: Credentials,
    body: RawBody,
) -> Result<Json<Settings>, ApiError> {
    let caller = admin(&state, &headers, "admin_setting:update", false)?;
    let body: SettingsUpdate = body.json()?;
    let mut settings = state.settings();
    if let Some(days) = body.max_lifetime_days {
        if days == 0 || days > LARGEST_MAX_LIFETIME_DAYS {
            return Err(ApiError::invalid(format!("`max_lifetime_days` must be 1 to {LARGEST_MAX_LIFETIME_DAYS}")));
        }
        settings.max_lifetime_days = days;
    }
    if let Some(required) = body.expiry_required {
        settings.expiry_required = required;
    }
    if let Some(allowed) = body.legacy_tokens_allowed {
        settings.legacy_tokens_allowed = allowed;
    }
    if let Some(prefix) = body.token_prefix {
        patgate_core::TokenFormat::new(&prefix)
            .map_err(|error| ApiError::invalid(format!("`token_prefix`: {error}")))?;
        settings.token_prefix = prefix;
    }
    date_setting(
        "legacy_creation_disabled_from",
        body.legacy_creation_disabled_from,
        &mut settings.legacy_creation_disabled_from,
    )?;
    date_setting("legacy_use_disabled_from", body.legacy_use_disabled_from, &mut settings.legacy_use_disabled_from)?;
    if let Some(caps) = body.group_max_lifetime_days {
        let mut checked = std::collections::BTreeMap::new();
        {
            let engine = state.engine();
            for (path, days) in caps {
                let path = path.trim().trim_matches('/').to_ascii_lowercase();
                if engine.index.directory.group_by_path(&path).is_none() {
                    return Err(ApiError::invalid(format!("`group_max_lifetime_days`: no group `{path}`")));
                }
                if days == 0 || days > LARGEST_MAX_LIFETIME_DAYS {
                    return Err(ApiError::invalid(format!(
                        "`group_max_lifetime_days.{path}` must be 1 to {LARGEST_MAX_LIFETIME_DAYS}"
                    )));
                }
                checked.insert(path, days);
            }
        }
        settings.group_max_lifetime_days = checked;
    }
    if let Some(seconds) = body.rotation_grace_seconds {
        if seconds > LARGEST_ROTATION_GRACE_SECONDS {
            return Err(ApiError::invalid(format!(
                "`rotation_grace_seconds` must be 0 to {LARGEST_ROTATION_GRACE_SECONDS}"
            )));
        }
        settings.rotation_grace_seconds = seconds;
    }
    if let Some(days) = body.inactivity_days {
        if days > 3650 {
            return Err(ApiError::invalid("`inactivity_days` must be 0 (off) to 3650"));
        }
        settings.inactivity_days = days;
    }
    if let Some(days) = body.usage_window_days {
        if !(1..=365).contains(&days) {
            return Err(ApiError::invalid("`usage_window_days` must be 1 to 365"));
        }
        settings.usage_window_days = days;
    }
    let now = state.clock.now();
    let before = state.engine().policy.clone();
    state.store.put_settings(&settings, Audit::new("settings_changed", actor(&caller), now)).await?;
    state.catch_up_after_write().await;
    // Tokens the new policy blocks (a lowered lifetime cap, legacy tokens turned off) are not
    // revoked: they are denied at use until rotated. Record which, once, for the audit log.
    // The new policy is the one just written, whether or not the index has caught up yet.
    let blocked: Vec<Audit> = {
        let engine = state.engine();
        let after = &policy_of(&settings, &engine.index.directory);
        engine
            .index
            .tokens()
            .filter(|token| !token.is_revoked(now) && !token.is_expired(now))
            .filter_map(|token| {
                let reason = if after.token_excess(token).is_some() && before.token_excess(token).is_none() {
                    "lifetime_policy"
                } else if after.legacy_disabled(token, now) && !before.legacy_disabled(token, now) {
                    "legacy_disabled"
                } else {
                    return None;
                };
                Some(
                    Audit::new("token_blocked_by_policy", actor(&caller), now)
                        .user(token.owner)
                        .token(token.id)
                        .details(serde_json::json!({ "reason": reason })),
                )
            })
            .collect()
    };
    state.store.record_audit(&blocked).await?;
    Ok(Json(settings))
}
