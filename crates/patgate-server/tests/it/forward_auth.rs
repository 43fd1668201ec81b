//! `GET /api/v1/forward-auth`: 200 with identity headers, 401 with a challenge, 403
//! otherwise — never 404 or 5xx — and forwarded headers only from trusted proxies.

use serde_json::json;

use crate::support::{API_REGISTRY, App, Reply, base64};

const METHOD: &str = "x-forwarded-method";
const URI: &str = "x-forwarded-uri";

#[track_caller]
fn assert_allowed(reply: &Reply, user: &str) {
    reply.expect(200);
    assert_eq!(reply.header("x-patgate-user"), Some(user));
    assert!(reply.header("x-patgate-token-id").is_some_and(|id| id.parse::<u64>().is_ok()), "{:?}", reply.headers);
}

#[track_caller]
fn assert_unauthorized(reply: &Reply, reason: &str) {
    reply.expect(401);
    let challenge = reply.header("www-authenticate").unwrap_or_default();
    assert!(challenge.starts_with("Bearer"), "challenge: {challenge:?}");
    let body = reply.json();
    assert_eq!(body["reason"], reason, "{body}");
    assert!(reply.header("x-patgate-user").is_none());
}

#[track_caller]
fn assert_forbidden(reply: &Reply, reason: &str) -> serde_json::Value {
    reply.expect(403);
    let body = reply.json();
    assert_eq!(body["error"], reason, "{body}");
    assert!(body["message"].as_str().is_some_and(|m| !m.is_empty()), "{body}");
    assert!(reply.header("x-patgate-user").is_none() && reply.header("www-authenticate").is_none());
    body
}

#[tokio::test]
async fn an_allowed_request_is_200_with_user_and_token_id() {
    let app = App::new().await;
    let reply = app.forward(None, &[(METHOD, "GET"), (URI, API_REGISTRY), ("private-token", &app.alice)]).await;
    assert_allowed(&reply, "alice");
    let decision = app.decide(&app.alice, "GET", API_REGISTRY).await;
    assert_eq!(reply.header("x-patgate-token-id"), Some(decision["token_id"].to_string().as_str()));
    assert!(reply.body.is_empty(), "{}", reply.text());

    let bearer = format!("Bearer {}", app.alice);
    let reply = app.forward(None, &[(METHOD, "GET"), (URI, API_REGISTRY), ("authorization", &bearer)]).await;
    assert_allowed(&reply, "alice");
}

#[tokio::test]
async fn missing_bad_and_revoked_tokens_are_401_with_a_challenge() {
    let app = App::new().await;
    let reply = app.forward(None, &[(METHOD, "GET"), (URI, API_REGISTRY)]).await;
    assert_unauthorized(&reply, "missing_token");

    let reply = app.forward(None, &[(METHOD, "GET"), (URI, API_REGISTRY), ("private-token", "pgfgt-garbage")]).await;
    assert_unauthorized(&reply, "invalid_token");
    let reply = app.forward(None, &[(METHOD, "GET"), (URI, API_REGISTRY), ("authorization", "Bearer nope")]).await;
    assert_unauthorized(&reply, "invalid_token");

    let id = app.decide(&app.alice, "GET", API_REGISTRY).await["token_id"].as_u64().unwrap();
    app.call("DELETE", &format!("/api/v1/personal_access_tokens/{id}"), Some(&app.admin), None).await.expect(204);
    let reply = app.forward(None, &[(METHOD, "GET"), (URI, API_REGISTRY), ("private-token", &app.alice)]).await;
    assert_unauthorized(&reply, "revoked");
}

#[tokio::test]
async fn a_missing_permission_is_403_naming_it_in_a_header() {
    let app = App::new().await;
    let uri = format!("{API_REGISTRY}/7/tags/v1");
    let reply = app.forward(None, &[(METHOD, "DELETE"), (URI, &uri), ("private-token", &app.alice)]).await;
    let body = assert_forbidden(&reply, "insufficient_scope");
    assert_eq!(reply.header("x-patgate-missing-permission"), Some("container_registry:delete"));
    assert_eq!(body["missing"], "container_registry:delete");

    // Other denials are 403 without the header.
    let uri = "/api/v4/projects/acme%2Fplatform%2Finfra%2Fterraform/registry/repositories";
    let reply = app.forward(None, &[(METHOD, "GET"), (URI, uri), ("private-token", &app.alice)]).await;
    assert_forbidden(&reply, "outside_reach");
    assert!(reply.header("x-patgate-missing-permission").is_none());
    let reply =
        app.forward(None, &[(METHOD, "GET"), (URI, "/api/v4/uncatalogued"), ("private-token", &app.alice)]).await;
    assert_forbidden(&reply, "endpoint_not_covered");
}

#[tokio::test]
async fn an_invisible_or_nonexistent_project_is_403_not_404() {
    let app = App::new().await;
    let mut bodies = Vec::new();
    for uri in [
        "/api/v4/projects/acme%2Fplatform%2Finfra%2Fterraform/issues",
        "/api/v4/projects/acme%2Fplatform%2Finfra%2Fnothing/issues",
    ] {
        let reply = app.forward(None, &[(METHOD, "GET"), (URI, uri), ("private-token", &app.dave)]).await;
        reply.expect(403);
        bodies.push(reply.json());
    }
    assert_eq!(bodies[0], bodies[1], "an invisible project must answer as a nonexistent one");
}

#[tokio::test]
async fn an_untrusted_peer_cannot_forward_a_request() {
    let app = App::new().await;
    let headers = [(METHOD, "GET"), (URI, API_REGISTRY), ("private-token", app.alice.as_str())];
    assert_allowed(&app.forward(Some("127.0.0.1"), &headers).await, "alice");
    let reply = app.forward(Some("10.1.2.3"), &headers).await;
    reply.expect(403);
    assert!(reply.json()["error"].is_string(), "{}", reply.text());
    assert!(reply.header("x-patgate-user").is_none() && reply.header("x-patgate-token-id").is_none());
    let original =
        [("x-original-method", "GET"), ("x-original-uri", API_REGISTRY), ("private-token", app.alice.as_str())];
    app.forward(Some("10.1.2.3"), &original).await.expect(403);
    app.forward(Some("2001:db8::1"), &original).await.expect(403);
}

#[tokio::test]
async fn a_trusted_proxy_without_the_request_gets_403() {
    let app = App::new().await;
    let reply = app.forward(None, &[("private-token", &app.alice)]).await;
    assert_forbidden(&reply, "missing_forwarded_request");
    let reply = app.forward(None, &[(METHOD, "GET"), ("private-token", &app.alice)]).await;
    reply.expect(403);
}

#[tokio::test]
async fn the_original_headers_of_nginx_auth_request_work_too() {
    let app = App::new().await;
    let reply = app
        .forward(None, &[("x-original-method", "GET"), ("x-original-uri", API_REGISTRY), ("private-token", &app.alice)])
        .await;
    assert_allowed(&reply, "alice");
    let delete = format!("{API_REGISTRY}/1");
    let reply = app
        .forward(None, &[("x-original-method", "DELETE"), ("x-original-uri", &delete), ("private-token", &app.alice)])
        .await;
    assert_forbidden(&reply, "insufficient_scope");
}

#[tokio::test]
async fn the_token_may_come_from_the_query_or_basic_auth() {
    let app = App::new().await;
    for parameter in ["private_token", "access_token"] {
        let uri = format!("{API_REGISTRY}?per_page=20&{parameter}={}", app.alice);
        assert_allowed(&app.forward(None, &[(METHOD, "GET"), (URI, &uri)]).await, "alice");
    }
    let uri = format!("{API_REGISTRY}?private_token=nope");
    assert_unauthorized(&app.forward(None, &[(METHOD, "GET"), (URI, &uri)]).await, "invalid_token");

    let basic = format!("Basic {}", base64(format!("anything:{}", app.alice).as_bytes()));
    assert_allowed(
        &app.forward(None, &[(METHOD, "GET"), (URI, API_REGISTRY), ("authorization", &basic)]).await,
        "alice",
    );
    let basic = format!("Basic {}", base64(b"alice:wrong"));
    let reply = app.forward(None, &[(METHOD, "GET"), (URI, API_REGISTRY), ("authorization", &basic)]).await;
    assert_unauthorized(&reply, "invalid_token");
}

#[tokio::test]
async fn the_client_address_comes_from_a_trusted_proxy() {
    let app = App::new().await;
    let made = app
        .mint_for(
            "alice",
            json!({
                "name": "office only",
                "expires_at": "2027-01-31",
                "allowed_ips": ["203.0.113.0/24"],
                "grants": [{ "reach": "selected", "projects": ["acme/platform/api"], "permissions": { "container_registry": ["read"] } }]
            }),
        )
        .await;
    let token = made["token"].as_str().unwrap();
    let base = [(METHOD, "GET"), (URI, API_REGISTRY), ("private-token", token)];
    let with = |forwarded_for: &'static str| {
        let mut headers = base.to_vec();
        headers.push(("x-forwarded-for", forwarded_for));
        headers
    };
    assert_allowed(&app.forward(None, &with("203.0.113.7, 10.0.0.1")).await, "alice");
    assert_unauthorized(&app.forward(None, &with("198.51.100.1")).await, "ip_not_allowed");
    // Without X-Forwarded-For the proxy's own address is the client.
    assert_unauthorized(&app.forward(None, &base).await, "ip_not_allowed");
}
