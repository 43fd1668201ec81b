//! patgate's HTTP service: the decision API, forward auth and the management API, on an
//! in-memory index kept current from the store's change log.

pub mod api;
pub mod auth;
pub mod bootstrap;
pub mod error;
pub mod extract;
pub mod insight;
pub mod jobs;
pub mod metrics;
pub mod password;
pub mod ratelimit;
pub mod replica;
pub mod routes;
pub mod session;
pub mod state;
pub mod usage;
pub mod webhook;

use axum::{
    Router,
    extract::{DefaultBodyLimit, rejection::JsonRejection},
};

pub use state::{AppState, Clock, Shared};

/// Largest request body accepted.
pub const BODY_LIMIT: usize = 256 * 1024;

/// Every route of the service, built from [`api::ROUTES`].
///
/// A route gets only the layers it needs, each of which costs every request it wraps (a
/// boxed service cloned, a future boxed): the body limit on a route that reads a body (every
/// method but GET, and `ANY`, forward auth's, which reads none), the form posts' CSRF field on a route a web session may call (every
/// access but [`api::Access::Open`]). The hot routes (forward auth, the health probes) have
/// neither: the two cost about 0.5 µs a request, 10 % of a static answer's whole cost.
pub fn router(state: AppState) -> Router {
    let mut router = Router::new();
    for route in api::ROUTES {
        let mut handler = (route.handler)();
        if !matches!(route.method, "GET" | "ANY") {
            handler = handler.layer(DefaultBodyLimit::max(BODY_LIMIT));
        }
        if route.access != api::Access::Open {
            handler = handler.layer(axum::middleware::from_fn(session::form_csrf));
        }
        router = router.route(route.path, handler);
    }
    // Envoy's check of a request for `/` (the route table's wildcard needs a segment).
    router = router.route("/api/v1/forward-auth/", axum::routing::any(routes::decision::forward_auth));
    // The web interface's assets (not part of the API's OpenAPI document).
    router = router
        .route("/", axum::routing::get(routes::ui::root))
        .route("/ui", axum::routing::get(routes::ui::root))
        .route("/ui/", axum::routing::get(routes::ui::index))
        .route("/ui/app.js", axum::routing::get(routes::ui::script))
        .route("/ui/app.css", axum::routing::get(routes::ui::style));
    router.fallback(not_found).method_not_allowed_fallback(method_not_allowed).with_state(state)
}

async fn method_not_allowed() -> error::ApiError {
    error::ApiError::MethodNotAllowed
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
