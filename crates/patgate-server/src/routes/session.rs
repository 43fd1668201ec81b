//! Signing in to the web UI: sign in (password, or a trusted proxy's header), who am I,
//! sign out, and changing one's own password. See docs/ui.md, "Signing in".

use axum::{
    Json,
    extract::State,
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use patgate_core::{
    BoundaryRef, MembershipTarget, Role, Timestamp, UserId, UserLocator, UserState, decision::Operation,
};
use patgate_store::{Actor, Audit, NewSession, Store, UserRow};
use serde::{Deserialize, Serialize};

use crate::{
    auth::{Credentials, Via, authorize, by_session},
    error::ApiError,
    extract::RawBody,
    password::{self, Password},
    ratelimit::bucket_of,
    session::{self, SessionId},
    state::{AppState, Shared},
};

/// `POST /api/v1/session` with a password.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignInRequest {
    pub username: String,
    pub password: Password,
}

/// `PUT /api/v1/user/password`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PasswordChangeRequest {
    pub current_password: Password,
    pub password: Password,
}

/// Who is signed in, and the CSRF token their requests that change something must carry.
#[derive(Serialize)]
pub struct SessionResponse {
    pub username: String,
    pub admin: bool,
    pub csrf_token: String,
    /// The highest roles the user holds through memberships, for the token form's warnings.
    pub highest_roles: HighestRoles,
}

/// The highest role a user holds through memberships on any project (a group's role counts
/// on its projects; their own personal projects, where they are owners, aside) and on any
/// group: a grant reaching all memberships can use a permission only where the role allows.
#[derive(Debug, Default, Serialize)]
pub struct HighestRoles {
    pub project: Option<&'static str>,
    pub group: Option<&'static str>,
}

impl HighestRoles {
    /// `user`'s, as the directory has them now (none for a user it does not know).
    pub fn of(state: &Shared, user: UserId) -> HighestRoles {
        let engine = state.engine();
        let Some(user) = engine.index.directory.user(user) else { return HighestRoles::default() };
        let (mut project, mut group) = (None, None);
        for (target, role) in user.memberships() {
            project = project.max(Some(role));
            if matches!(target, MembershipTarget::Group(_)) {
                group = group.max(Some(role));
            }
        }
        HighestRoles { project: project.map(Role::name), group: group.map(Role::name) }
    }
}

impl std::fmt::Debug for SessionResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionResponse")
            .field("username", &self.username)
            .field("admin", &self.admin)
            .field("csrf_token", &"[redacted]")
            .finish()
    }
}

/// A response that no cache keeps (it may carry a CSRF token or a cookie).
fn private(mut response: Response) -> Response {
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// Starts a session for `user` (signed in by `method`, audited as `signed_in`).
async fn open_session(
    state: &Shared,
    user: &UserRow,
    method: &'static str,
    credentials: &Credentials,
) -> Result<(SessionId, SessionResponse), ApiError> {
    let now = state.clock.now();
    let id = SessionId::generate()?;
    let csrf_token = session::new_csrf_token()?;
    let new = NewSession {
        digest: id.digest(),
        user: user.id,
        csrf_token: csrf_token.clone(),
        created_at: now,
        expires_at: session::expiry(now, now),
    };
    let actor = Actor { user: Some(user.id), token: None };
    let audit = Audit::new("signed_in", actor, now).details(serde_json::json!({
        "method": method,
        "ip": credentials.client_ip.map(|ip| ip.to_string()),
    }));
    state.store.create_session(&new, audit).await?;
    let body = SessionResponse {
        username: user.username.clone(),
        admin: user.admin,
        csrf_token: csrf_token.expose_secret().to_owned(),
        highest_roles: HighestRoles::of(state, user.id),
    };
    Ok((id, body))
}

/// What a sign-in answers: the session in a cookie, the CSRF token in the body.
fn signed_in(id: &SessionId, body: SessionResponse) -> Response {
    let mut response = (StatusCode::OK, Json(body)).into_response();
    response.headers_mut().insert(header::SET_COOKIE, id.cookie());
    private(response)
}

/// The username a trusted proxy's header names, when the trusted-header sign-in is on and
/// the connection comes from a trusted proxy; from anyone else the header is ignored.
fn trusted_username(state: &Shared, credentials: &Credentials) -> Option<String> {
    let name = state.ui_trusted_user_header.as_ref()?;
    if !credentials.peer.is_some_and(|peer| state.trusts_proxy(peer)) {
        return None;
    }
    let value = credentials.headers.get(name)?.to_str().ok()?.trim();
    (!value.is_empty()).then(|| value.to_ascii_lowercase())
}

fn is_json(credentials: &Credentials) -> bool {
    credentials
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split(';').next())
        .is_some_and(|mime| mime.trim().eq_ignore_ascii_case("application/json"))
}

/// `POST /api/v1/session`: sign in with `{"username", "password"}`, or, with no body, as
/// the user a trusted proxy names in the configured header. Every failure is the same 401
/// `invalid_credentials`, and counts against the client address's sign-in limit.
pub async fn sign_in(
    State(state): State<AppState>,
    credentials: Credentials,
    body: RawBody,
) -> Result<Response, ApiError> {
    let bucket = bucket_of(credentials.client_ip);
    if body.0.iter().all(u8::is_ascii_whitespace) {
        let Some(username) = trusted_username(&state, &credentials) else {
            return Err(ApiError::invalid("send `{\"username\": …, \"password\": …}` as JSON to sign in"));
        };
        state.sign_in_limiter.check(bucket).map_err(ApiError::RateLimited)?;
        let user = state.store.password_hash(&username).await?.map(|(user, _)| user);
        let Some(user) = user.filter(|user| user.state == UserState::Active) else {
            tracing::info!(client_ip = ?credentials.client_ip, "trusted-header sign-in refused");
            return Err(ApiError::InvalidCredentials);
        };
        state.sign_in_limiter.refund(bucket);
        let (id, body) = open_session(&state, &user, "trusted_header", &credentials).await?;
        return Ok(signed_in(&id, body));
    }
    // A JSON body only: an HTML form of another site cannot send one (no login CSRF).
    if !is_json(&credentials) {
        return Err(ApiError::invalid("send the sign-in as JSON (`Content-Type: application/json`)"));
    }
    let request: SignInRequest = body.json()?;
    state.sign_in_limiter.check(bucket).map_err(ApiError::RateLimited)?;
    let username = request.username.trim().to_ascii_lowercase();
    let too_long = request.password.expose_secret().len() > password::MAX_PASSWORD_BYTES;
    let found = if username.is_empty() || username.len() > 255 || too_long {
        None
    } else {
        state.store.password_hash(&username).await?
    };
    // Verified in every case (against a dummy hash when there is none), so an unknown user
    // or one without a password takes as long as a wrong password.
    let hash = found.as_ref().and_then(|(_, hash)| hash.as_ref());
    let verified = password::verify(&state, &request.password, hash).await?;
    let Some((user, _)) = found.filter(|(user, _)| verified && user.state == UserState::Active) else {
        tracing::info!(client_ip = ?credentials.client_ip, "password sign-in refused");
        return Err(ApiError::InvalidCredentials);
    };
    state.sign_in_limiter.refund(bucket);
    let (id, body) = open_session(&state, &user, "password", &credentials).await?;
    Ok(signed_in(&id, body))
}

/// `GET /api/v1/session`: who is signed in, with the session's CSRF token; 401 without a
/// live session.
pub async fn show(State(state): State<AppState>, credentials: Credentials) -> Result<Response, ApiError> {
    let (caller, session) = by_session(&state, &credentials, Operation::Always, true, true)?;
    let body = SessionResponse {
        highest_roles: HighestRoles::of(&state, caller.user),
        username: caller.username,
        admin: caller.admin,
        csrf_token: session.row.csrf_token.expose_secret().to_owned(),
    };
    Ok(private(Json(body).into_response()))
}

/// `DELETE /api/v1/session`: sign out (needs the CSRF token); the cookie is cleared.
pub async fn sign_out(State(state): State<AppState>, credentials: Credentials) -> Result<Response, ApiError> {
    let (caller, session) = by_session(&state, &credentials, Operation::Always, false, true)?;
    let audit = Audit::new("signed_out", caller.actor(), state.clock.now());
    state.store.delete_session(&session.digest, audit).await?;
    let mut response = StatusCode::NO_CONTENT.into_response();
    response.headers_mut().insert(header::SET_COOKIE, session::clear_cookie());
    Ok(private(response))
}

/// Checks `password` against `user`'s; a wrong one counts as a sign-in failure of the
/// client address.
async fn check_current_password(
    state: &Shared,
    credentials: &Credentials,
    username: &str,
    password: &Password,
) -> Result<(), ApiError> {
    let bucket = bucket_of(credentials.client_ip);
    state.sign_in_limiter.check(bucket).map_err(ApiError::RateLimited)?;
    let found = state.store.password_hash(username).await?;
    let hash = found.as_ref().and_then(|(_, hash)| hash.as_ref());
    if password::verify(state, password, hash).await? {
        state.sign_in_limiter.refund(bucket);
        Ok(())
    } else {
        Err(ApiError::Forbidden {
            reason: "invalid_current_password",
            message: "`current_password` is not the current password (a user without a password needs an \
                      administrator to set one)."
                .to_owned(),
            missing: None,
        })
    }
}

/// Stores `password` as `user`'s new password, ending every session of theirs.
pub(crate) async fn store_password(
    state: &Shared,
    user: UserId,
    password: &Password,
    actor: Actor,
    now: Timestamp,
) -> Result<(), ApiError> {
    let hash = password::hash(state, password).await?;
    state.store.set_password_hash(user, Some(&hash), Audit::new("password_changed", actor, now).user(user)).await?;
    Ok(())
}

/// `PUT /api/v1/user/password`: change one's own password; the current one is required.
/// Open to a session and to a token allowed `user:update` on its own user (the password is
/// part of the user's account, as the profile is). Every session of the user ends; a
/// signed-in caller gets a fresh session in the response's cookie (read its CSRF token with
/// `GET /api/v1/session`).
pub async fn change_own(
    State(state): State<AppState>,
    credentials: Credentials,
    body: RawBody,
) -> Result<Response, ApiError> {
    let permission = crate::routes::tokens::admin_permission(&state, "user:update")?;
    let caller = authorize(&state, &credentials, &permission, BoundaryRef::User(UserLocator::Caller), false, false)?;
    let request: PasswordChangeRequest = body.json()?;
    request.password.check_rules("password")?;
    check_current_password(&state, &credentials, &caller.username, &request.current_password).await?;
    store_password(&state, caller.user, &request.password, caller.actor(), state.clock.now()).await?;
    let mut response = StatusCode::NO_CONTENT.into_response();
    if caller.via == Via::Session {
        // The session just ended with every other: the browser that changed the password
        // stays signed in with a new one.
        let user = state.store.user(caller.user).await?.ok_or_else(|| ApiError::NotFound("user vanished".into()))?;
        let (id, _) = open_session(&state, &user, "password_change", &credentials).await?;
        response.headers_mut().insert(header::SET_COOKIE, id.cookie());
    }
    Ok(private(response))
}
