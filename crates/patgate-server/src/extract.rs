//! A JSON body extractor whose rejections are the API's own JSON errors.

use axum::{
    Json,
    extract::{FromRequest, Request},
};
use serde::de::DeserializeOwned;

use crate::error::ApiError;

/// Like `axum::Json`, but a malformed, mistyped or oversized body answers with
/// [`ApiError`] (`{"error", "message"}`) naming what is wrong.
#[derive(Debug)]
pub struct Body<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for Body<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        Json::<T>::from_request(request, state).await.map(|Json(value)| Body(value)).map_err(ApiError::from)
    }
}

/// A request body read but not yet parsed, so that a handler can authorize the caller
/// before it looks at the input (an unauthenticated caller gets 401, not a 422 about the
/// body). Oversized bodies are still refused here (413).
#[derive(Debug)]
pub struct RawBody(pub axum::body::Bytes);

impl<S: Send + Sync> FromRequest<S> for RawBody {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        axum::body::Bytes::from_request(request, state).await.map(RawBody).map_err(|rejection| {
            if rejection.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::TooLarge(crate::BODY_LIMIT)
            } else {
                ApiError::invalid(rejection.body_text())
            }
        })
    }
}

impl RawBody {
    /// Parses the body as JSON; the error names the field and position.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, ApiError> {
        serde_json::from_slice(&self.0).map_err(|error| ApiError::invalid(format!("the JSON body is invalid: {error}")))
    }
}

/// Like `axum::extract::Query`, but a malformed query string answers with [`ApiError`]
/// naming the parameter.
#[derive(Debug)]
pub struct Params<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> axum::extract::FromRequestParts<S> for Params<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut axum::http::request::Parts, _: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Query::<T>::try_from_uri(&parts.uri)
            .map(|axum::extract::Query(value)| Params(value))
            .map_err(|rejection| ApiError::invalid(format!("the query string is invalid: {}", rejection.body_text())))
    }
}
