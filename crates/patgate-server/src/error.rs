//! One error type for every handler, with one status mapping.

use axum::{
    Json,
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use patgate_core::validate::ValidationError;
use patgate_store::StoreError;
use serde::Serialize;

/// What a management or decision call answers when it fails.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// No credentials, or credentials that are not a valid token (401).
    #[error("{message}")]
    Unauthenticated { reason: &'static str, message: String },
    /// A sign-in (or a password check) failed: unknown user, wrong password, no password
    /// or a blocked user, never saying which (401).
    #[error("the username or password is wrong, or this user may not sign in")]
    InvalidCredentials,
    /// Valid credentials that may not do this (403).
    #[error("{message}")]
    Forbidden { reason: &'static str, message: String, missing: Option<String> },
    /// The thing does not exist or is not visible to the caller (404).
    #[error("{0}")]
    NotFound(String),
    /// Bad input, naming the field (400 or 422).
    #[error("{message}")]
    Invalid { error: &'static str, message: String },
    /// The request conflicts with existing state (409).
    #[error("{0}")]
    Conflict(String),
    /// The route exists, but not with this method (405).
    #[error("this endpoint does not accept this method")]
    MethodNotAllowed,
    /// The body is larger than allowed (413).
    #[error("the request body is larger than {0} bytes")]
    TooLarge(usize),
    /// Too many requests from this client address; try again after this many seconds (429).
    #[error("too many requests from this address; retry in {0} seconds")]
    RateLimited(u64),
    /// Something failed inside; the body says nothing more (500).
    #[error("internal error")]
    Internal(String),
    /// The database is unreachable (503).
    #[error("the database is unavailable")]
    Unavailable(String),
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: &'a str,
    message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    missing: Option<&'a str>,
}

impl ApiError {
    /// Bad input in `field`.
    pub fn invalid(message: impl Into<String>) -> ApiError {
        ApiError::Invalid { error: "invalid_request", message: message.into() }
    }

    /// The status and machine code this error answers with.
    pub fn status_and_code(&self) -> (StatusCode, &str) {
        match self {
            ApiError::Unauthenticated { .. } => (StatusCode::UNAUTHORIZED, "invalid_token"),
            ApiError::InvalidCredentials => (StatusCode::UNAUTHORIZED, "invalid_credentials"),
            ApiError::Forbidden { reason, .. } => (StatusCode::FORBIDDEN, reason),
            ApiError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            ApiError::Invalid { error, .. } => (StatusCode::UNPROCESSABLE_ENTITY, error),
            ApiError::Conflict(_) => (StatusCode::CONFLICT, "conflict"),
            ApiError::MethodNotAllowed => (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"),
            ApiError::TooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "body_too_large"),
            ApiError::RateLimited(_) => (StatusCode::TOO_MANY_REQUESTS, "rate_limited"),
            ApiError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal_error"),
            ApiError::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        if let ApiError::Internal(detail) | ApiError::Unavailable(detail) = &self {
            // The detail goes to the log, never to the client.
            tracing::error!(%detail, "request failed");
        }
        let missing = match &self {
            ApiError::Forbidden { missing, .. } => missing.as_deref(),
            _ => None,
        };
        let reason = match &self {
            ApiError::Unauthenticated { reason, .. } => Some(*reason),
            _ => None,
        };
        let mut body =
            serde_json::to_value(ErrorBody { error: code, message: self.to_string(), missing }).unwrap_or_default();
        if let (Some(reason), Some(object)) = (reason, body.as_object_mut()) {
            object.insert("reason".into(), reason.into());
        }
        let mut response = (status, Json(body)).into_response();
        if let ApiError::RateLimited(seconds) = &self
            && let Ok(value) = HeaderValue::from_str(&seconds.to_string())
        {
            response.headers_mut().insert(header::RETRY_AFTER, value);
        }
        if status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer realm=\"patgate\""));
        }
        response
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> ApiError {
        match error {
            StoreError::NotFound(what) => ApiError::NotFound(format!("{what} does not exist")),
            StoreError::Conflict(detail) if detail.contains("already revoked") => ApiError::Conflict(detail),
            // A path another kind of thing holds ("a group at `acme/x`"): the store's own
            // words, no database's.
            StoreError::Conflict(detail) if detail.ends_with('`') && detail.contains(" at `") => {
                ApiError::Conflict(format!("{detail} already exists"))
            }
            StoreError::Conflict(_) => ApiError::Conflict("it already exists".to_owned()),
            StoreError::Database(detail) => ApiError::Unavailable(detail),
            other => ApiError::Internal(other.to_string()),
        }
    }
}

impl From<ValidationError> for ApiError {
    fn from(error: ValidationError) -> ApiError {
        ApiError::Invalid { error: "invalid_token_request", message: error.to_string() }
    }
}

impl From<patgate_core::DirectoryError> for ApiError {
    fn from(error: patgate_core::DirectoryError) -> ApiError {
        match error {
            patgate_core::DirectoryError::PathTaken(_) => ApiError::Conflict(error.to_string()),
            patgate_core::DirectoryError::UnknownUser(_)
            | patgate_core::DirectoryError::UnknownGroup(_)
            | patgate_core::DirectoryError::UnknownProject(_)
            | patgate_core::DirectoryError::UnknownNamespace(_) => ApiError::NotFound(error.to_string()),
            patgate_core::DirectoryError::Invalid(message) => ApiError::invalid(message),
        }
    }
}
