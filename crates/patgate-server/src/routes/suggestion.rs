//! Least privilege from use: what a token used within the usage window, the narrowest
//! grants that still allow all of it, and replacing the token with them.

use axum::{
    Json,
    extract::{Path, State},
};
use patgate_core::{
    Boundary, BoundaryRef, Engine, Timestamp, UserLocator,
    suggest::{LeftOutReason, Observed, Suggestion, suggest},
};
use patgate_store::{PermissionUse, TokenRow};
use serde::Serialize;
use serde_json::json;

use crate::{
    auth::{Caller, Credentials, authorize},
    error::ApiError,
    routes::{
        decision::BoundaryResponse,
        tokens::{
            GrantBody, Replacement, TokenResponse, grant_body, own_permission, owned, parse_id, rotate_token,
            uses_in_window,
        },
    },
    state::{AppState, Shared},
};

/// One permission the token used at one boundary within the window.
#[derive(Debug, Serialize)]
pub struct ObservedUse {
    pub permission: String,
    pub boundary: BoundaryResponse,
    pub uses: u64,
    pub first_used_at: String,
    pub last_used_at: String,
}

/// A use the suggestion cannot carry, and why.
#[derive(Debug, Serialize)]
pub struct LeftOutUse {
    pub permission: String,
    pub boundary: BoundaryResponse,
    /// `not_applicable`, `gone`, `not_grantable` or `beyond_original`.
    pub reason: &'static str,
}

/// What the suggestion takes away.
#[derive(Debug, Serialize)]
pub struct Removed {
    /// Granted permissions never used within the window (fine-grained tokens).
    pub permissions: Vec<String>,
    /// Reaches the suggestion no longer has (`all_memberships`, …).
    pub reaches: Vec<&'static str>,
    /// A legacy token's scopes: all of them go.
    pub scopes: Vec<&'static str>,
}

/// `GET /api/v1/personal_access_tokens/{id}/suggestion`.
#[derive(Debug, Serialize)]
pub struct SuggestionResponse {
    pub token_id: u64,
    pub kind: &'static str,
    /// The window looked at: from `since` to now (`usage_window_days`).
    pub window_days: u32,
    pub since: String,
    pub observed: Vec<ObservedUse>,
    /// The narrowest fine-grained grants that allow every observed use; empty when
    /// nothing was used (then revoking the token is the narrowest choice).
    pub grants: Vec<GrantBody>,
    pub removed: Removed,
    pub left_out: Vec<LeftOutUse>,
    /// Whether replacing the token would change anything.
    pub narrower: bool,
    pub message: String,
}

fn boundary_response(engine: &Engine, boundary: Boundary) -> BoundaryResponse {
    crate::routes::decision::boundary_response(&engine.index.directory, boundary)
}

fn left_out_reason(reason: LeftOutReason) -> &'static str {
    match reason {
        LeftOutReason::NotApplicable => "not_applicable",
        LeftOutReason::Gone => "gone",
        LeftOutReason::NotGrantable => "not_grantable",
        LeftOutReason::BeyondOriginal => "beyond_original",
    }
}

/// The suggestion for `row` from `uses`, with the response describing it.
fn compute(
    state: &Shared,
    row: &TokenRow,
    uses: &[PermissionUse],
    since: Timestamp,
) -> (Suggestion, SuggestionResponse) {
    let engine = state.engine();
    let observed: Vec<Observed> =
        uses.iter().map(|each| Observed { permission: each.permission, boundary: each.boundary }).collect();
    let suggestion = suggest(&engine.resources, &engine.index.directory, &row.record(), &observed);
    let grants: Vec<GrantBody> = suggestion.grants.iter().map(|grant| grant_body(&engine, grant)).collect();
    let narrower = suggestion.authority().is_some_and(|authority| authority != row.authority);
    let message = if suggestion.grants.is_empty() {
        format!(
            "The token used no permission in the last {} days: nothing to narrow it to; revoke it if it is not needed.",
            state.settings().usage_window_days
        )
    } else if narrower {
        "Replacing the token with these grants keeps everything it did in the window and drops the rest.".to_owned()
    } else {
        "The token already holds exactly what it used.".to_owned()
    };
    let response = SuggestionResponse {
        token_id: row.id.0,
        kind: row.kind.name(),
        window_days: state.settings().usage_window_days,
        since: since.to_string(),
        observed: uses
            .iter()
            .map(|each| ObservedUse {
                permission: engine.resources.permission_name(each.permission),
                boundary: boundary_response(&engine, each.boundary),
                uses: each.uses,
                first_used_at: each.first_used.to_string(),
                last_used_at: each.last_used.to_string(),
            })
            .collect(),
        grants,
        removed: Removed {
            permissions: suggestion.removed_permissions.iter().map(|p| engine.resources.permission_name(*p)).collect(),
            reaches: suggestion.removed_reaches.iter().map(|reach| reach.name()).collect(),
            scopes: suggestion.removed_scopes.iter().map(|scope| scope.name()).collect(),
        },
        left_out: suggestion
            .left_out
            .iter()
            .map(|left| LeftOutUse {
                permission: engine.resources.permission_name(left.observed.permission),
                boundary: boundary_response(&engine, left.observed.boundary),
                reason: left_out_reason(left.reason),
            })
            .collect(),
        narrower,
        message,
    };
    (suggestion, response)
}

/// The caller, and the token they may see (theirs, or any for an administrator).
async fn load(
    state: &Shared,
    headers: &Credentials,
    id: &str,
    admin_action: &str,
) -> Result<(Caller, TokenRow), ApiError> {
    let action = if admin_action.ends_with(":read") { "read" } else { "update" };
    let permission = own_permission(state, action)?;
    let caller =
        authorize(state, headers, &permission, BoundaryRef::User(UserLocator::Caller), false, action == "read")?;
    let row = owned(state, &caller, parse_id(id)?, headers, admin_action).await?;
    Ok((caller, row))
}

/// `GET /api/v1/personal_access_tokens/{id}/suggestion`: what the token used within the
/// usage window and the narrowest grants that allow all of it.
pub async fn show(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: Credentials,
) -> Result<Json<SuggestionResponse>, ApiError> {
    let (_, row) = load(&state, &headers, &id, "admin_user:read").await?;
    let now = state.clock.now();
    let uses = uses_in_window(&state, row.id, now).await?;
    let (_, response) = compute(&state, &row, &uses, crate::routes::tokens::window_start(&state, now));
    Ok(Json(response))
}

/// `POST /api/v1/personal_access_tokens/{id}/narrow`: replaces the token with the
/// suggestion, as a rotation (a new secret, shown once; the old one revoked after the
/// rotation grace period), audited as `token_narrowed`.
pub async fn narrow(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: Credentials,
) -> Result<Json<TokenResponse>, ApiError> {
    let (caller, row) = load(&state, &headers, &id, "admin_user:update").await?;
    let now = state.clock.now();
    let uses = uses_in_window(&state, row.id, now).await?;
    let (suggestion, response) = compute(&state, &row, &uses, crate::routes::tokens::window_start(&state, now));
    let Some(authority) = suggestion.authority().filter(|_| response.narrower) else {
        return Err(ApiError::Conflict(response.message));
    };
    let details = json!({
        "removed_permissions": response.removed.permissions,
        "removed_reaches": response.removed.reaches,
        "removed_scopes": response.removed.scopes,
        "grants": response.grants,
        "window_days": response.window_days,
    });
    let into = Replacement { authority, event: "token_narrowed", details };
    Ok(Json(rotate_token(&state, &caller, row, into).await?))
}
