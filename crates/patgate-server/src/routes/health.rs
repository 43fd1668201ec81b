//! Liveness, readiness and metrics.

use axum::{
    extract::State,
    http::{StatusCode, header},
    response::IntoResponse,
};

use crate::state::AppState;

/// `GET /healthz`: the process answers.
pub async fn healthz() -> &'static str {
    "ok\n"
}

/// How long catching up with the change log may keep failing before `/readyz` says so:
/// the follower retries every second, so one failure is a blip.
pub const CATCH_UP_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

/// `GET /readyz`: the database answers, the index is loaded and follows the change log.
pub async fn readyz(State(state): State<AppState>) -> impl IntoResponse {
    if state.store.ping().await.is_err() {
        return (StatusCode::SERVICE_UNAVAILABLE, "database unavailable\n");
    }
    match state.metrics.catch_up_failing_for() {
        Some(failing) if failing >= CATCH_UP_GRACE => {
            (StatusCode::SERVICE_UNAVAILABLE, "the index is not following the change log\n")
        }
        _ => (StatusCode::OK, "ready\n"),
    }
}

/// `GET /metrics`: Prometheus text format.
pub async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    let tokens = state.engine().index.token_count();
    let sequence = state.applied_sequence().await;
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], state.metrics.render(tokens, sequence))
}
