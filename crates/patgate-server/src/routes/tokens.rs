//! Personal access tokens: create, list, show, rotate, revoke.

use std::collections::BTreeMap;

use axum::{
    Json,
    extract::{Path, Query, State},
    http::StatusCode,
};
use patgate_core::{
    Authority, BoundaryRef, Reach, Timestamp, TokenId, TokenKind, UserId, UserLocator,
    validate::{
        AuthoritySpec, GrantSpec, LifetimePolicy, NewTokenSpec, ValidationError, validate_group_caps,
        validate_new_token,
    },
};
use patgate_store::{Actor, Audit, NewToken, Store, TokenRow};
use serde::{Deserialize, Serialize};

use crate::{
    auth::{Caller, Credentials, authorize, authorize_with, presented_token},
    error::ApiError,
    extract::RawBody,
    state::{AppState, Shared},
};

/// A grant as clients write it.
#[derive(Debug, Deserialize, Serialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct GrantBody {
    pub reach: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub projects: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<String>,
    pub permissions: BTreeMap<String, Vec<String>>,
}

/// `POST …/personal_access_tokens`: `scopes` for a legacy token, `grants` for a
/// fine-grained one.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateTokenRequest {
    pub name: String,
    #[serde(default)]
    pub description: String,
    pub expires_at: Option<String>,
    pub scopes: Option<Vec<String>>,
    pub grants: Option<Vec<GrantBody>>,
    #[serde(default)]
    pub allowed_ips: Vec<String>,
}

/// A token as the API shows it: never the secret (except `token` once), never the digest.
#[derive(Debug, Serialize)]
pub struct TokenResponse {
    pub id: u64,
    pub name: String,
    pub description: String,
    pub kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    pub display_prefix: String,
    pub user: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scopes: Option<Vec<&'static str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub grants: Option<Vec<GrantBody>>,
    pub allowed_ips: Vec<String>,
    pub created_at: String,
    pub expires_at: Option<String>,
    pub revoked_at: Option<String>,
    pub revoke_reason: Option<String>,
    /// `active`, `expired`, `revoked`, or `blocked` (see `blocked_reason`). A rotated token
    /// stays `active` until its grace period ends (`revoked_at` in the future).
    pub state: &'static str,
    /// Why a `blocked` token is denied: `owner_blocked`, `lifetime_policy` (rotate it) or
    /// `legacy_disabled`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub blocked_reason: Option<&'static str>,
    /// The last client addresses it was used from, newest first.
    pub last_ips: Vec<String>,
    pub last_used_at: Option<String>,
    pub family_id: u64,
    pub previous_id: Option<u64>,
}

fn date(stamp: Timestamp) -> String {
    let (year, month, day) = stamp.date();
    format!("{year:04}-{month:02}-{day:02}")
}

/// Renders a stored token for the API, naming projects and groups by path.
pub fn token_response(shared: &Shared, row: &TokenRow, secret: Option<String>, now: Timestamp) -> TokenResponse {
    let engine = shared.engine();
    let directory = &engine.index.directory;
    let (scopes, grants) = match &row.authority {
        Authority::Legacy(scopes) => (Some(scopes.iter().map(|s| s.name()).collect()), None),
        Authority::FineGrained(grants) => (
            None,
            Some(
                grants
                    .iter()
                    .map(|grant| {
                        let (projects, groups) = match &grant.reach {
                            Reach::Selected { projects, groups } => (
                                projects
                                    .iter()
                                    .map(|id| {
                                        directory
                                            .project(*id)
                                            .map_or_else(|| id.to_string(), |p| p.full_path.to_string())
                                    })
                                    .collect(),
                                groups
                                    .iter()
                                    .map(|id| {
                                        directory.group(*id).map_or_else(|| id.to_string(), |g| g.full_path.to_string())
                                    })
                                    .collect(),
                            ),
                            _ => (Vec::new(), Vec::new()),
                        };
                        GrantBody {
                            reach: grant.reach.kind().name().to_owned(),
                            projects,
                            groups,
                            permissions: grant
                                .permissions
                                .entries()
                                .map(|(resource, actions)| {
                                    (
                                        engine.resources.name(resource).to_owned(),
                                        actions.iter().map(|a| a.name().to_owned()).collect(),
                                    )
                                })
                                .collect(),
                        }
                    })
                    .collect(),
            ),
        ),
    };
    let record = row.record();
    let owner_active = directory.user(row.owner).is_some_and(|user| user.is_active());
    let blocked_reason = if !owner_active {
        Some("owner_blocked")
    } else if engine.policy.token_excess(&record).is_some() {
        Some("lifetime_policy")
    } else if engine.policy.legacy_disabled(&record, now) {
        Some("legacy_disabled")
    } else {
        None
    };
    let state = if row.is_revoked(now) {
        "revoked"
    } else if row.expires_at.is_some_and(|expires| now >= expires) {
        "expired"
    } else if blocked_reason.is_some() {
        "blocked"
    } else {
        "active"
    };
    TokenResponse {
        id: row.id.0,
        name: row.name.clone(),
        description: row.description.clone(),
        kind: row.kind.name(),
        token: secret,
        display_prefix: row.display_prefix.clone(),
        user: directory.user(row.owner).map_or_else(|| row.owner.to_string(), |u| u.username.to_string()),
        scopes,
        grants,
        allowed_ips: row.allowed_ips.iter().map(ToString::to_string).collect(),
        created_at: row.created_at.to_string(),
        expires_at: row.expires_at.map(date),
        revoked_at: row.revoked_at.map(|t| t.to_string()),
        revoke_reason: row.revoke_reason.clone(),
        state,
        blocked_reason: if state == "blocked" { blocked_reason } else { None },
        last_ips: row.last_ips.iter().map(ToString::to_string).collect(),
        last_used_at: row.last_used_at.map(|t| t.to_string()),
        family_id: row.family.0,
        previous_id: row.previous.map(|p| p.0),
    }
}

pub(crate) fn own_permission(shared: &Shared, action: &str) -> Result<[patgate_core::Permission; 1], ApiError> {
    let engine = shared.engine();
    let permission = engine
        .resources
        .permission(&format!("personal_access_token:{action}"))
        .map_err(|error| ApiError::Internal(error.to_string()))?;
    Ok([permission])
}

pub(crate) fn admin_permission(shared: &Shared, name: &str) -> Result<[patgate_core::Permission; 1], ApiError> {
    let engine = shared.engine();
    Ok([engine.resources.permission(name).map_err(|error| ApiError::Internal(error.to_string()))?])
}

fn spec_of(body: &CreateTokenRequest) -> Result<NewTokenSpec, ApiError> {
    if body.name.trim().is_empty() || body.name.len() > 255 {
        return Err(ApiError::invalid("`name` must be 1 to 255 characters"));
    }
    if body.description.len() > 1000 {
        return Err(ApiError::invalid("`description` must be at most 1000 characters"));
    }
    let expires_at = match body.expires_at.as_deref() {
        None | Some("") => None,
        Some(text) => Some(
            Timestamp::parse_date(text)
                .ok_or_else(|| ApiError::invalid(format!("`expires_at`: `{text}` is not a date (YYYY-MM-DD)")))?,
        ),
    };
    let authority = match (&body.scopes, &body.grants) {
        (Some(scopes), None) => AuthoritySpec::Legacy { scopes: scopes.clone() },
        (None, Some(grants)) => AuthoritySpec::FineGrained {
            grants: grants
                .iter()
                .map(|grant| GrantSpec {
                    reach: grant.reach.clone(),
                    projects: grant.projects.clone(),
                    groups: grant.groups.clone(),
                    permissions: grant.permissions.iter().map(|(r, a)| (r.clone(), a.clone())).collect(),
                })
                .collect(),
        },
        (Some(_), Some(_)) => {
            return Err(ApiError::invalid("give either `scopes` (legacy) or `grants` (fine-grained), not both"));
        }
        (None, None) => {
            return Err(ApiError::invalid("give `scopes` for a legacy token or `grants` for a fine-grained one"));
        }
    };
    Ok(NewTokenSpec { authority, expires_at, allowed_ips: body.allowed_ips.clone() })
}

/// Validates, mints and stores a token for `owner`; answers with the secret, once.
async fn mint(
    shared: &Shared,
    caller: &Caller,
    owner: UserId,
    body: &CreateTokenRequest,
) -> Result<TokenResponse, ApiError> {
    let spec = spec_of(body)?;
    let settings = shared.settings();
    let now = shared.clock.now();
    let legacy_cut_off = settings
        .legacy_creation_disabled_from
        .as_deref()
        .and_then(Timestamp::parse_date)
        .is_some_and(|from| now >= from);
    if (!settings.legacy_tokens_allowed || legacy_cut_off) && matches!(spec.authority, AuthoritySpec::Legacy { .. }) {
        return Err(ApiError::Forbidden {
            reason: "legacy_disabled",
            message: "Legacy tokens may no longer be created on this instance: create a fine-grained token.".into(),
            missing: None,
        });
    }
    let policy =
        LifetimePolicy { max_lifetime_days: settings.max_lifetime_days, expiry_required: settings.expiry_required };
    let (valid, plain, digest) = {
        let engine = shared.engine();
        let directory = &engine.index.directory;
        let owner_user = directory.user(owner).ok_or_else(|| ApiError::NotFound("user does not exist".into()))?;
        let valid =
            validate_new_token(&engine.resources, directory, owner_user, &spec, policy, Some(&caller.token), now)?;
        validate_group_caps(directory, owner_user, &valid.authority, &engine.policy.group_caps, valid.expires_at, now)?;
        let plain =
            engine.format.generate(valid.authority.kind()).map_err(|error| ApiError::Internal(error.to_string()))?;
        let digest = engine.key.digest_plain(&plain);
        (valid, plain, digest)
    };
    let new = NewToken {
        owner,
        name: body.name.trim().to_owned(),
        description: body.description.clone(),
        digest,
        display_prefix: plain.display_prefix(),
        authority: valid.authority,
        allowed_ips: valid.allowed_ips.into_vec(),
        created_at: now,
        expires_at: valid.expires_at,
    };
    let audit = Audit::new("token_created", Actor { user: Some(caller.user), token: Some(caller.token.id) }, now)
        .details(serde_json::json!({ "name": new.name, "kind": new.authority.kind().name() }));
    let (id, _) = shared.store.create_token(&new, audit).await?;
    shared.catch_up().await?;
    let row = shared.store.token(id).await?.ok_or_else(|| ApiError::Internal("created token vanished".into()))?;
    Ok(token_response(shared, &row, Some(plain.expose_secret().to_owned()), now))
}

/// `POST /api/v1/user/personal_access_tokens`: a token for the caller.
pub async fn create_own(
    State(state): State<AppState>,
    headers: Credentials,
    body: RawBody,
) -> Result<(StatusCode, Json<TokenResponse>), ApiError> {
    let permission = own_permission(&state, "create")?;
    let caller = authorize(&state, &headers, &permission, BoundaryRef::User(UserLocator::Caller), false, false)?;
    let body: CreateTokenRequest = body.json()?;
    let response = mint(&state, &caller, caller.user, &body).await?;
    Ok((StatusCode::CREATED, Json(response)))
}

/// `POST /api/v1/users/{username}/personal_access_tokens`: an admin makes a token for a user.
pub async fn create_for_user(
    State(state): State<AppState>,
    Path(username): Path<String>,
    headers: Credentials,
    body: RawBody,
) -> Result<(StatusCode, Json<TokenResponse>), ApiError> {
    let permission = admin_permission(&state, "admin_user:update")?;
    let caller = authorize(&state, &headers, &permission, BoundaryRef::Instance, false, false)?;
    let body: CreateTokenRequest = body.json()?;
    let owner = state
        .engine()
        .index
        .directory
        .user_by_name(&username)
        .map(|user| user.id)
        .ok_or_else(|| ApiError::NotFound(format!("user `{username}` does not exist")))?;
    // The admin's own token must cover what it mints, as for any token minting a token.
    let response = mint(&state, &caller, owner, &body).await?;
    Ok((StatusCode::CREATED, Json(response)))
}

/// `GET /api/v1/personal_access_tokens?user=`: the caller's tokens; an admin may name a user.
#[derive(Debug, Deserialize)]
pub struct ListQuery {
    pub user: Option<String>,
}

pub async fn list(
    State(state): State<AppState>,
    headers: Credentials,
    Query(query): Query<ListQuery>,
) -> Result<Json<Vec<TokenResponse>>, ApiError> {
    let permission = own_permission(&state, "read")?;
    let caller = authorize(&state, &headers, &permission, BoundaryRef::User(UserLocator::Caller), false, true)?;
    let owner = match query.user.as_deref() {
        None => Some(caller.user),
        Some(username) => {
            let permission = admin_permission(&state, "admin_user:read")?;
            authorize(&state, &headers, &permission, BoundaryRef::Instance, false, true)?;
            if username == "*" {
                None
            } else {
                Some(
                    state
                        .engine()
                        .index
                        .directory
                        .user_by_name(username)
                        .map(|user| user.id)
                        .ok_or_else(|| ApiError::NotFound(format!("user `{username}` does not exist")))?,
                )
            }
        }
    };
    let now = state.clock.now();
    let rows = state.store.tokens(owner).await?;
    Ok(Json(rows.iter().map(|row| token_response(&state, row, None, now)).collect()))
}

/// Loads a token the caller may act on: their own, or any for an admin.
async fn owned(
    state: &Shared,
    caller: &Caller,
    id: TokenId,
    headers: &Credentials,
    admin_action: &str,
) -> Result<TokenRow, ApiError> {
    let row = state.store.token(id).await?.ok_or_else(|| ApiError::NotFound(format!("token {id} does not exist")))?;
    if row.owner != caller.user {
        // Someone else's token: only an admin, and then it needs the admin permission.
        let permission = admin_permission(state, admin_action)?;
        authorize(state, headers, &permission, BoundaryRef::Instance, false, admin_action.ends_with(":read"))
            .map_err(|_| ApiError::NotFound(format!("token {id} does not exist")))?;
    }
    Ok(row)
}

fn parse_id(text: &str) -> Result<TokenId, ApiError> {
    text.parse::<u64>().map(TokenId).map_err(|_| ApiError::NotFound(format!("token `{text}` does not exist")))
}

/// `GET /api/v1/personal_access_tokens/{id}`.
pub async fn show(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: Credentials,
) -> Result<Json<TokenResponse>, ApiError> {
    let permission = own_permission(&state, "read")?;
    let caller = authorize(&state, &headers, &permission, BoundaryRef::User(UserLocator::Caller), false, true)?;
    let row = owned(&state, &caller, parse_id(&id)?, &headers, "admin_user:read").await?;
    Ok(Json(token_response(&state, &row, None, state.clock.now())))
}

/// `GET /api/v1/personal_access_tokens/self`: the presenting token (open to any valid token).
pub async fn show_self(State(state): State<AppState>, headers: Credentials) -> Result<Json<TokenResponse>, ApiError> {
    let caller = authorize_any(&state, &headers)?;
    let row =
        state.store.token(caller.token.id).await?.ok_or_else(|| ApiError::NotFound("token does not exist".into()))?;
    Ok(Json(token_response(&state, &row, None, state.clock.now())))
}

fn authorize_any(state: &Shared, headers: &Credentials) -> Result<Caller, ApiError> {
    let permission = own_permission(state, "read")?;
    // Any valid token may read itself: authenticate with a permission check that cannot
    // fail for the token's own user, then accept any decision past authentication.
    match authorize(state, headers, &permission, BoundaryRef::User(UserLocator::Caller), true, true) {
        Ok(caller) => Ok(caller),
        Err(ApiError::Forbidden { .. }) => crate::auth::authenticate_only(state, headers),
        Err(other) => Err(other),
    }
}

/// `DELETE /api/v1/personal_access_tokens/{id}`: revoke.
pub async fn revoke(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: Credentials,
) -> Result<StatusCode, ApiError> {
    let permission = own_permission(&state, "delete")?;
    let caller = authorize(&state, &headers, &permission, BoundaryRef::User(UserLocator::Caller), false, false)?;
    let row = owned(&state, &caller, parse_id(&id)?, &headers, "admin_user:update").await?;
    if row.revoked_at.is_some() {
        return Err(ApiError::Conflict(format!("token {} is already revoked", row.id)));
    }
    let by_admin = row.owner != caller.user;
    let reason = if by_admin { "revoked_by_admin" } else { "revoked_by_owner" };
    let audit =
        Audit::new("token_revoked", Actor { user: Some(caller.user), token: Some(caller.token.id) }, state.clock.now())
            .user(row.owner);
    state.store.revoke_token(row.id, reason, audit).await?;
    state.catch_up().await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Rotation: a new secret with the same name and grants and a fresh expiry; the old one
/// is revoked.
async fn rotate_token(state: &Shared, caller: &Caller, row: TokenRow) -> Result<TokenResponse, ApiError> {
    if row.revoked_at.is_some() {
        return Err(ApiError::Conflict(format!("token {} is revoked and cannot be rotated", row.id)));
    }
    // Rotating hands the caller the new secret: a token other than the rotated one must
    // cover everything the rotated token can do, or rotation would widen it.
    if caller.token.id != row.id {
        let engine = state.engine();
        let directory = &engine.index.directory;
        let owner =
            directory.user(row.owner).ok_or_else(|| ApiError::NotFound(format!("token {} does not exist", row.id)))?;
        if !patgate_core::validate::authority_within(&row.authority, &caller.token.authority, directory, owner) {
            return Err(ApiError::Forbidden {
                reason: "escalation",
                message: "This token may only rotate tokens with equal or narrower permissions than its own.".into(),
                missing: None,
            });
        }
    }
    let now = state.clock.now();
    let settings = state.settings();
    // A fresh lifetime as long as the old one was (in days from its creation date), capped by
    // the policy, at least 7 days.
    let created_day = row.created_at.0 - row.created_at.0.rem_euclid(patgate_core::time::DAY);
    let lifetime_days = row
        .expires_at
        .map(|expires| ((expires.0 - created_day) / patgate_core::time::DAY).max(7))
        .unwrap_or(i64::from(settings.max_lifetime_days))
        .min(i64::from(settings.max_lifetime_days));
    let today = Timestamp(now.0 - now.0.rem_euclid(patgate_core::time::DAY));
    let mut expires_at = Some(today.plus_days(lifetime_days));
    // A group the token reaches into may cap it harder.
    {
        let engine = state.engine();
        let directory = &engine.index.directory;
        if let Some(owner) = directory.user(row.owner)
            && let Err(ValidationError::ExpiryBeyondGroupPolicy { max_days, .. }) =
                validate_group_caps(directory, owner, &row.authority, &engine.policy.group_caps, expires_at, now)
        {
            expires_at = Some(today.plus_days(i64::from(max_days)));
        }
    }
    let (plain, digest) = {
        let engine = state.engine();
        let plain = engine.format.generate(row.kind).map_err(|error| ApiError::Internal(error.to_string()))?;
        let digest = engine.key.digest_plain(&plain);
        (plain, digest)
    };
    let new = NewToken {
        owner: row.owner,
        name: row.name.clone(),
        description: row.description.clone(),
        digest,
        display_prefix: plain.display_prefix(),
        authority: row.authority.clone(),
        allowed_ips: row.allowed_ips.clone(),
        created_at: now,
        expires_at,
    };
    let audit = Audit::new("token_rotated", Actor { user: Some(caller.user), token: Some(caller.token.id) }, now);
    let (id, _) = state.store.rotate_token(row.id, &new, settings.rotation_grace_seconds, audit).await?;
    state.catch_up().await?;
    let row = state.store.token(id).await?.ok_or_else(|| ApiError::Internal("rotated token vanished".into()))?;
    let _kind: TokenKind = row.kind;
    Ok(token_response(state, &row, Some(plain.expose_secret().to_owned()), now))
}

/// Reuse detection: a token that was already rotated, presented to a rotate endpoint, means
/// two parties hold its secret. Every token of its rotation family is revoked
/// (`reuse_detected`) and the request is refused.
async fn detect_reuse(state: &Shared, headers: &Credentials) -> Result<(), ApiError> {
    let Some(presented) = presented_token(&headers.headers, None) else { return Ok(()) };
    let record = {
        let engine = state.engine();
        patgate_core::authenticate(&engine.index, &engine.format, &engine.key, &presented).ok().cloned()
    };
    let Some(record) = record.filter(|record| record.revoked_at.is_some()) else { return Ok(()) };
    let Some(row) = state.store.token(record.id).await? else { return Ok(()) };
    if row.revoke_reason.as_deref() != Some("rotated") {
        return Ok(());
    }
    let family = state.store.family(row.family).await?;
    let now = state.clock.now();
    let audit = Audit::new("reuse_detected", Actor { user: None, token: Some(row.id) }, now)
        .details(serde_json::json!({ "presented_token_id": row.id.0, "family_id": row.family.0 }));
    let (revoked, _) = state.store.revoke_tokens(&family, "reuse_detected", audit).await?;
    state.catch_up().await?;
    tracing::warn!(
        token = row.id.0,
        family = row.family.0,
        revoked = revoked.len(),
        "an already rotated token was presented for rotation: its family is revoked"
    );
    Err(ApiError::Unauthenticated {
        reason: "reuse_detected",
        message: "This token was already rotated; presenting it again means someone else may hold it, so every \
                  token of its rotation family is now revoked."
            .into(),
    })
}

/// `POST /api/v1/personal_access_tokens/{id}/rotate`.
pub async fn rotate(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: Credentials,
) -> Result<Json<TokenResponse>, ApiError> {
    detect_reuse(&state, &headers).await?;
    let permission = own_permission(&state, "update")?;
    let caller = authorize(&state, &headers, &permission, BoundaryRef::User(UserLocator::Caller), false, false)?;
    let row = owned(&state, &caller, parse_id(&id)?, &headers, "admin_user:update").await?;
    Ok(Json(rotate_token(&state, &caller, row).await?))
}

/// `POST /api/v1/personal_access_tokens/self/rotate`.
pub async fn rotate_self(State(state): State<AppState>, headers: Credentials) -> Result<Json<TokenResponse>, ApiError> {
    detect_reuse(&state, &headers).await?;
    let permission = own_permission(&state, "update")?;
    // A token blocked by a lowered lifetime cap may rotate itself into compliance.
    let caller =
        authorize_with(&state, &headers, &permission, BoundaryRef::User(UserLocator::Caller), true, false, true)?;
    let row =
        state.store.token(caller.token.id).await?.ok_or_else(|| ApiError::NotFound("token does not exist".into()))?;
    Ok(Json(rotate_token(&state, &caller, row).await?))
}
