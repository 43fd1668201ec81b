//! patgate's HTTP service: the decision API, forward auth and the management API, on an
//! in-memory index kept current from the store's change log.

pub mod auth;
pub mod bootstrap;
pub mod error;
pub mod extract;
pub mod metrics;
pub mod replica;
pub mod routes;
pub mod state;

use axum::{
    Router,
    extract::{DefaultBodyLimit, rejection::JsonRejection},
    routing::{get, post, put},
};

pub use state::{AppState, Clock, Shared};

/// Largest request body accepted.
pub const BODY_LIMIT: usize = 256 * 1024;

/// Every route of the service.
pub fn router(state: AppState) -> Router {
    use routes::{admin, decision, health, tokens};
    Router::new()
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(health::metrics))
        .route("/api/v1/decide", post(decision::decide))
        .route("/api/v1/forward-auth", get(decision::forward_auth))
        .route("/api/v1/user/personal_access_tokens", post(tokens::create_own))
        .route("/api/v1/users/{username}/personal_access_tokens", post(tokens::create_for_user))
        .route("/api/v1/personal_access_tokens", get(tokens::list))
        .route("/api/v1/personal_access_tokens/self", get(tokens::show_self))
        .route("/api/v1/personal_access_tokens/self/rotate", post(tokens::rotate_self))
        .route("/api/v1/personal_access_tokens/{id}", get(tokens::show).delete(tokens::revoke))
        .route("/api/v1/personal_access_tokens/{id}/rotate", post(tokens::rotate))
        .route("/api/v1/admin/directory/import", post(admin::import))
        .route("/api/v1/admin/users", post(admin::create_user))
        .route("/api/v1/admin/users/{username}", axum::routing::delete(admin::delete_user))
        .route("/api/v1/admin/users/{username}/block", post(admin::block_user))
        .route("/api/v1/admin/users/{username}/unblock", post(admin::unblock_user))
        .route("/api/v1/admin/groups", post(admin::create_group))
        .route("/api/v1/admin/projects", post(admin::create_project))
        .route("/api/v1/admin/projects/{id}", put(admin::update_project))
        .route("/api/v1/admin/memberships", put(admin::set_membership).delete(admin::remove_membership))
        .route("/api/v1/admin/settings", get(admin::get_settings).put(admin::put_settings))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .with_state(state)
}

async fn not_found() -> error::ApiError {
    error::ApiError::NotFound("no such endpoint".to_owned())
}

impl From<JsonRejection> for error::ApiError {
    fn from(rejection: JsonRejection) -> error::ApiError {
        match rejection {
            JsonRejection::BytesRejection(_) if rejection.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE => {
                error::ApiError::TooLarge(BODY_LIMIT)
            }
            other => error::ApiError::invalid(other.body_text()),
        }
    }
}
