//! One test per status mapping of `ApiError` (src/error.rs), through `IntoResponse`.

use axum::{
    http::StatusCode,
    response::{IntoResponse, Response},
};
use http_body_util::BodyExt;
use patgate_server::error::ApiError;
use patgate_store::StoreError;
use serde_json::Value;

async fn render(error: ApiError) -> (StatusCode, Option<String>, Value) {
    let response: Response = error.into_response();
    let status = response.status();
    let challenge =
        response.headers().get("www-authenticate").and_then(|value| value.to_str().ok()).map(ToOwned::to_owned);
    assert_eq!(
        response.headers().get("content-type").and_then(|value| value.to_str().ok()),
        Some("application/json"),
        "an error body is JSON"
    );
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    (status, challenge, serde_json::from_slice(&bytes).unwrap())
}

#[tokio::test]
async fn unauthenticated_is_401_with_a_challenge_and_the_reason() {
    let (status, challenge, body) =
        render(ApiError::Unauthenticated { reason: "revoked", message: "The token has been revoked.".into() }).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(challenge.is_some_and(|c| c.starts_with("Bearer")));
    assert_eq!(body["error"], "invalid_token");
    assert_eq!(body["reason"], "revoked");
    assert_eq!(body["message"], "The token has been revoked.");
}

#[tokio::test]
async fn invalid_credentials_is_401_and_says_nothing_of_which() {
    let (status, challenge, body) = render(ApiError::InvalidCredentials).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(challenge.is_some());
    assert_eq!(body["error"], "invalid_credentials");
    assert!(body.get("reason").is_none(), "{body}");
    let message = body["message"].as_str().unwrap();
    assert!(message.contains("username or password"), "{message}");
}

#[tokio::test]
async fn forbidden_is_403_with_its_reason_and_missing_permission() {
    let error = ApiError::Forbidden {
        reason: "insufficient_scope",
        message: "The token needs Issue: Create.".into(),
        missing: Some("issue:create".into()),
    };
    let (status, challenge, body) = render(error).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(challenge.is_none());
    assert_eq!(body["error"], "insufficient_scope");
    assert_eq!(body["missing"], "issue:create");
    assert_eq!(body["message"], "The token needs Issue: Create.");

    let (_, _, body) =
        render(ApiError::Forbidden { reason: "role_too_low", message: "No.".into(), missing: None }).await;
    assert!(body.get("missing").is_none(), "{body}");
}

#[tokio::test]
async fn not_found_is_404() {
    let (status, challenge, body) = render(ApiError::NotFound("token 7 does not exist".into())).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(challenge.is_none());
    assert_eq!(body["error"], "not_found");
    assert_eq!(body["message"], "token 7 does not exist");
}

#[tokio::test]
async fn invalid_is_422_naming_the_field() {
    let (status, _, body) = render(ApiError::invalid("`expires_at` is required")).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(body["error"], "invalid_request");
    assert_eq!(body["message"], "`expires_at` is required");
    let (status, _, body) =
        render(ApiError::Invalid { error: "invalid_token_request", message: "`grants` is empty".into() }).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(body["error"], "invalid_token_request");
}

#[tokio::test]
async fn conflict_is_409() {
    let (status, _, body) = render(ApiError::Conflict("user `judy` already exists".into())).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(body["error"], "conflict");
    assert_eq!(body["message"], "user `judy` already exists");
}

#[tokio::test]
async fn too_large_is_413() {
    let (status, _, body) = render(ApiError::TooLarge(262_144)).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(body["error"], "body_too_large");
    assert!(body["message"].as_str().unwrap().contains("262144"), "{body}");
}

#[tokio::test]
async fn internal_is_500_and_says_nothing_of_the_cause() {
    let (status, _, body) = render(ApiError::Internal("pool timed out at 10.0.0.5 with pgfgt-secret".into())).await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(body["error"], "internal_error");
    let text = body.to_string();
    assert!(!text.contains("10.0.0.5") && !text.contains("pgfgt-secret"), "{text}");
}

#[tokio::test]
async fn unavailable_is_503_and_says_nothing_of_the_cause() {
    let (status, _, body) = render(ApiError::Unavailable("connection refused to db.internal:5432".into())).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(body["error"], "unavailable");
    assert!(!body.to_string().contains("db.internal"), "{body}");
}

#[tokio::test]
async fn store_errors_map_to_their_statuses() {
    let cases = [
        (StoreError::NotFound("user `x`".into()), StatusCode::NOT_FOUND),
        (StoreError::Conflict("path".into()), StatusCode::CONFLICT),
        (StoreError::Database("disk I/O error at /var/lib".into()), StatusCode::SERVICE_UNAVAILABLE),
        (StoreError::Corrupt("bad row 7".into()), StatusCode::INTERNAL_SERVER_ERROR),
        (StoreError::SchemaTooNew { found: 9, known: 3 }, StatusCode::INTERNAL_SERVER_ERROR),
    ];
    for (error, expected) in cases {
        let (status, _, body) = render(ApiError::from(error)).await;
        assert_eq!(status, expected, "{body}");
        assert!(!body.to_string().contains("/var/lib") && !body.to_string().contains("row 7"), "{body}");
    }
}

#[tokio::test]
async fn directory_errors_map_to_their_statuses() {
    use patgate_core::DirectoryError;
    let cases = [
        (DirectoryError::PathTaken("acme".into()), StatusCode::CONFLICT),
        (DirectoryError::UnknownUser("x".into()), StatusCode::NOT_FOUND),
        (DirectoryError::UnknownGroup("x".into()), StatusCode::NOT_FOUND),
        (DirectoryError::UnknownProject("x".into()), StatusCode::NOT_FOUND),
        (DirectoryError::UnknownNamespace("x".into()), StatusCode::NOT_FOUND),
        (DirectoryError::Invalid("bad path".into()), StatusCode::UNPROCESSABLE_ENTITY),
    ];
    for (error, expected) in cases {
        let (status, _, body) = render(ApiError::from(error)).await;
        assert_eq!(status, expected, "{body}");
    }
}

#[tokio::test]
async fn validation_errors_are_422_invalid_token_request() {
    let (status, _, body) = render(ApiError::from(patgate_core::validate::ValidationError::Escalation)).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(body["error"], "invalid_token_request");
}

/// A path the store finds taken by another kind of thing inside the write (two writers
/// that each checked their own copy of the directory) is a 409 saying what holds it; other
/// conflicts keep the database's words to themselves.
#[tokio::test]
async fn a_path_taken_in_the_store_is_409_naming_what_holds_it() {
    let (status, _, body) = render(ApiError::from(StoreError::Conflict("a group at `acme/x`".into()))).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(
        (body["error"].as_str(), body["message"].as_str()),
        (Some("conflict"), Some("a group at `acme/x` already exists"))
    );
    let unique = StoreError::Conflict("UNIQUE constraint failed: users.username".into());
    let (status, _, body) = render(ApiError::from(unique)).await;
    assert_eq!((status, body["message"].as_str()), (StatusCode::CONFLICT, Some("it already exists")));
}
