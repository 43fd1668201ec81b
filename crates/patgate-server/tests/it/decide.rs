//! `POST /api/v1/decide`: the decision with its explanation, and how bad input is refused.

use patgate_core::{TokenFormat, TokenKind};
use serde_json::json;

use crate::support::{API_REGISTRY, App};

#[tokio::test]
async fn an_allowed_request_names_permission_boundary_token_and_user() {
    let app = App::new().await;
    let decision = app.decide(&app.alice, "GET", API_REGISTRY).await;
    assert_eq!(decision["allowed"], true, "{decision}");
    assert_eq!(decision["status"], 200);
    assert_eq!(decision["reason"], "allowed");
    assert!(decision["message"].as_str().is_some_and(|m| !m.is_empty()));
    assert!(decision.get("missing").is_none(), "{decision}");
    assert_eq!(decision["resource"], "container_registry");
    assert_eq!(decision["action"], "read");
    assert_eq!(decision["boundary"]["kind"], "project");
    assert_eq!(decision["boundary"]["path"], "acme/platform/api");
    assert!(decision["boundary"]["id"].is_u64());
    assert!(decision["token_id"].is_u64());
    assert_eq!(decision["user"], "alice");

    // The same project by numeric id is the same boundary.
    let id = decision["boundary"]["id"].as_u64().unwrap();
    let by_id = app.decide(&app.alice, "GET", &format!("/api/v4/projects/{id}/registry/repositories?page=2")).await;
    assert_eq!(by_id["allowed"], true, "{by_id}");
    assert_eq!(by_id["boundary"], decision["boundary"]);

    // Create is granted too (the announcement's push example).
    let push = app.decide(&app.alice, "POST", "/api/v4/projects/acme%2Fplatform%2Fapi/registry/protection/tag/rules");
    let push = push.await;
    assert_eq!((push["allowed"].as_bool(), push["action"].as_str()), (Some(true), Some("create")), "{push}");
}

#[tokio::test]
async fn a_missing_permission_is_named_with_its_boundary() {
    let app = App::new().await;
    let decision = app.decide(&app.alice, "DELETE", &format!("{API_REGISTRY}/7")).await;
    assert_eq!(decision["allowed"], false, "{decision}");
    assert_eq!(decision["status"], 403);
    assert_eq!(decision["reason"], "insufficient_scope");
    assert_eq!(decision["missing"], "container_registry:delete");
    assert_eq!(decision["resource"], "container_registry");
    assert_eq!(decision["action"], "delete");
    assert_eq!(decision["boundary"]["kind"], "project");
    assert_eq!(decision["boundary"]["path"], "acme/platform/api");
    assert_eq!(decision["user"], "alice");
    assert!(decision["token_id"].is_u64());
    let message = decision["message"].as_str().unwrap();
    assert!(message.contains("container_registry:delete"), "{message}");
}

#[tokio::test]
async fn reach_catalog_and_role_denials_have_their_reasons() {
    let app = App::new().await;
    // alice is Maintainer of acme/platform, but her token reaches only acme/platform/api.
    let outside =
        app.decide(&app.alice, "GET", "/api/v4/projects/acme%2Fplatform%2Finfra%2Fterraform/registry/repositories");
    let outside = outside.await;
    assert_eq!((outside["status"].as_u64(), outside["reason"].as_str()), (Some(403), Some("outside_reach")));
    assert_eq!(outside["boundary"]["path"], "acme/platform/infra/terraform");

    // A public project stays readable outside the token's reach, as it is to anyone.
    let public = app.decide(&app.alice, "GET", "/api/v4/projects/acme%2Fweb%2Fsite/registry/repositories").await;
    assert_eq!(public["allowed"], true, "{public}");
    let public_write = app.decide(&app.alice, "DELETE", "/api/v4/projects/acme%2Fweb%2Fsite/registry/repositories/1");
    assert_eq!(public_write.await["reason"], "outside_reach");

    // An endpoint that is not in the catalog is closed to fine-grained tokens.
    let uncovered = app.decide(&app.alice, "GET", "/api/v4/no/such/endpoint").await;
    assert_eq!((uncovered["status"].as_u64(), uncovered["reason"].as_str()), (Some(403), Some("endpoint_not_covered")));

    // dave's legacy read_api token reads, but does not write.
    assert_eq!(app.reason(&app.dave, "GET", "/api/v4/projects/acme%2Fplatform%2Fapi/issues").await, "allowed");
    let write = app.decide(&app.dave, "POST", "/api/v4/projects/acme%2Fplatform%2Fapi/issues").await;
    assert_eq!((write["status"].as_u64(), write["reason"].as_str()), (Some(403), Some("legacy_scope_insufficient")));

    // bob (Developer in acme) reads issues anywhere in acme through all_memberships.
    assert_eq!(
        app.reason(&app.bob, "GET", "/api/v4/projects/acme%2Fplatform%2Finfra%2Fterraform/issues").await,
        "allowed"
    );
    assert_eq!(app.reason(&app.bob, "POST", "/api/v4/projects/acme%2Fhandbook/issues").await, "insufficient_scope");
}

#[tokio::test]
async fn an_invisible_project_answers_exactly_like_a_nonexistent_one() {
    let app = App::new().await;
    // dave is only Reporter on acme/platform/api: the private terraform project is invisible.
    let invisible = app.decide(&app.dave, "GET", "/api/v4/projects/acme%2Fplatform%2Finfra%2Fterraform/issues").await;
    let missing = app.decide(&app.dave, "GET", "/api/v4/projects/acme%2Fplatform%2Finfra%2Fnothing/issues").await;
    assert_eq!(invisible["status"], 404, "{invisible}");
    assert_eq!(invisible["reason"], "not_found");
    assert_eq!(invisible["allowed"], false);
    assert!(invisible.get("boundary").is_none(), "the boundary must not leak: {invisible}");
    for field in ["allowed", "status", "reason", "message", "missing", "boundary"] {
        assert_eq!(invisible.get(field), missing.get(field), "{field}: {invisible} vs {missing}");
    }
    // And by numeric id.
    let terraform = app.decide(&app.admin, "GET", "/api/v4/projects/acme%2Fplatform%2Finfra%2Fterraform/issues").await;
    let id = terraform["boundary"]["id"].as_u64().unwrap();
    let by_id = app.decide(&app.dave, "GET", &format!("/api/v4/projects/{id}/issues")).await;
    let none = app.decide(&app.dave, "GET", "/api/v4/projects/987654/issues").await;
    assert_eq!((by_id["status"].as_u64(), by_id["reason"].as_str()), (Some(404), Some("not_found")));
    assert_eq!(by_id["message"], none["message"]);
    assert!(by_id.get("boundary").is_none(), "{by_id}");
}

#[tokio::test]
async fn bad_tokens_are_unauthenticated_without_naming_anyone() {
    let app = App::new().await;
    let unknown = TokenFormat::new("").unwrap().generate(TokenKind::FineGrained).unwrap();
    let mut corrupted = app.alice.clone();
    let last = corrupted.pop().unwrap();
    corrupted.push(if last == 'a' { 'b' } else { 'a' });
    for token in ["", "nope", corrupted.as_str(), unknown.expose_secret()] {
        let decision = app.decide(token, "GET", API_REGISTRY).await;
        assert_eq!(decision["allowed"], false, "{decision}");
        assert_eq!(decision["status"], 401, "{token}: {decision}");
        assert_eq!(decision["reason"], "invalid_token");
        assert!(decision.get("token_id").is_none() && decision.get("user").is_none(), "{decision}");
    }
}

#[tokio::test]
async fn failed_authentications_are_limited_per_caller_unless_it_is_a_trusted_proxy() {
    let app = App::new().await;
    let unknown = TokenFormat::new("").unwrap().generate(TokenKind::FineGrained).unwrap();
    let ask = |token: &str| json!({ "token": token, "method": "GET", "path": API_REGISTRY }).to_string();
    // Valid tokens do not count, however many.
    for _ in 0..40 {
        let reply = app.call_raw_from("198.51.100.7", "POST", "/api/v1/decide", ask(&app.alice)).await;
        assert_eq!(reply.expect(200).json()["allowed"], true);
    }
    // Failures do: the burst, then 429 with Retry-After, valid tokens included.
    let mut answered = 0;
    let limited = loop {
        let reply = app.call_raw_from("198.51.100.7", "POST", "/api/v1/decide", ask(unknown.expose_secret())).await;
        if reply.status != 200 {
            break reply;
        }
        assert_eq!(reply.json()["reason"], "invalid_token");
        answered += 1;
        assert!(answered <= 100, "never limited");
    };
    assert_eq!(answered, 30, "the burst");
    limited.expect_error(429, "rate_limited");
    assert!(limited.header("retry-after").is_some(), "{:?}", limited.headers);
    app.call_raw_from("198.51.100.7", "POST", "/api/v1/decide", ask(&app.alice)).await.expect(429);
    // Another address, and a trusted proxy asking for its clients, are not limited by it.
    app.call_raw_from("198.51.100.8", "POST", "/api/v1/decide", ask(unknown.expose_secret())).await.expect(200);
    for _ in 0..40 {
        app.call_raw_from("127.0.0.1", "POST", "/api/v1/decide", ask(unknown.expose_secret())).await.expect(200);
    }
}

#[tokio::test]
async fn the_client_address_is_checked_against_the_allowlist() {
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
    let body = |client_ip: Option<&str>| {
        let mut body = json!({ "token": token, "method": "GET", "path": API_REGISTRY });
        if let Some(ip) = client_ip {
            body["client_ip"] = json!(ip);
        }
        body
    };
    let decision = app.call("POST", "/api/v1/decide", None, Some(&body(Some("203.0.113.9")))).await.json();
    assert_eq!(decision["allowed"], true, "{decision}");
    for client_ip in [Some("198.51.100.1"), None] {
        let decision = app.call("POST", "/api/v1/decide", None, Some(&body(client_ip))).await.json();
        assert_eq!((decision["status"].as_u64(), decision["reason"].as_str()), (Some(401), Some("ip_not_allowed")));
    }
}

#[tokio::test]
async fn malformed_bodies_are_refused_with_422_naming_the_field() {
    let app = App::new().await;
    let token = app.alice.clone();
    let cases = [
        (r#"{"token": "x", "method": "GET""#.to_owned(), None),
        ("[]".to_owned(), None),
        (json!({ "token": token, "method": "GET", "path": API_REGISTRY, "colour": "red" }).to_string(), Some("colour")),
        (json!({ "method": "GET", "path": API_REGISTRY }).to_string(), Some("token")),
        (json!({ "token": token, "method": "GET", "path": 7 }).to_string(), Some("path")),
        (
            json!({ "token": token, "method": "GET", "path": API_REGISTRY, "client_ip": "10.0.0.300" }).to_string(),
            Some("client_ip"),
        ),
        (json!({ "token": token, "method": "GET", "path": "api/v4/projects/1/issues" }).to_string(), Some("path")),
        (json!({ "token": token, "method": "", "path": API_REGISTRY }).to_string(), Some("method")),
    ];
    for (body, field) in cases {
        let reply = app.call_raw("POST", "/api/v1/decide", None, body.clone()).await;
        let error = reply.expect_error(422, "invalid_request");
        if let Some(field) = field {
            let message = error["message"].as_str().unwrap();
            assert!(message.contains(field), "{body}: the message does not name `{field}`: {message}");
        }
    }
    // Without a JSON content type: still a JSON 4xx.
    let reply = app
        .send(
            axum::http::Request::builder()
                .method("POST")
                .uri("/api/v1/decide")
                .body(axum::body::Body::from(json!({ "token": token, "method": "GET", "path": "/" }).to_string()))
                .unwrap(),
        )
        .await;
    assert!(reply.status.is_client_error(), "{}", reply.status);
    assert!(reply.json()["error"].is_string());
    // Nothing of this was a decision.
    let metrics = app.call("GET", "/metrics", None, None).await.text();
    assert!(!metrics.contains("endpoint=\"decide\""), "{metrics}");
}

#[tokio::test]
async fn an_oversize_body_is_refused_with_413() {
    let app = App::new().await;
    let body = json!({ "token": "x".repeat(300 * 1024), "method": "GET", "path": "/" }).to_string();
    let reply = app.call_raw("POST", "/api/v1/decide", None, body.clone()).await;
    reply.expect_error(413, "body_too_large");
    let before = app.token_count().await;
    let create = app.call_raw("POST", "/api/v1/user/personal_access_tokens", Some(&app.admin), body).await;
    create.expect_error(413, "body_too_large");
    assert_eq!(app.token_count().await, before);
    // Just under the limit is judged on its merits.
    let padding = "y".repeat(patgate_server::BODY_LIMIT - 200);
    let body = json!({ "token": padding, "method": "GET", "path": "/" }).to_string();
    assert!(body.len() < patgate_server::BODY_LIMIT);
    let reply = app.call_raw("POST", "/api/v1/decide", None, body).await;
    assert_eq!(reply.expect(200).json()["reason"], "invalid_token");
}

#[tokio::test]
async fn every_route_that_reads_a_body_refuses_one_over_the_limit() {
    // The body limit is a layer of each route that takes a body (not of the whole router):
    // every such route of the table must have it, whoever calls it.
    let app = App::new().await;
    let body = json!({ "padding": "x".repeat(patgate_server::BODY_LIMIT + 1024) }).to_string();
    let with_body: Vec<_> = patgate_server::api::ROUTES.iter().filter(|route| route.request.is_some()).collect();
    assert!(with_body.len() >= 10, "{} routes take a body", with_body.len());
    for route in with_body {
        let path = route.path.replace("{username}", "alice").replace("{id}", "1");
        let reply = app.call_raw(route.method, &path, Some(&app.admin), body.clone()).await;
        assert_eq!(reply.status.as_u16(), 413, "{} {path}", route.method);
    }
}

#[tokio::test]
async fn an_unknown_route_is_a_json_404() {
    let app = App::new().await;
    for (method, uri) in
        [("GET", "/nope"), ("POST", "/api/v1/nothing"), ("GET", "/api/v1/personal_access_tokens/1/nope")]
    {
        let reply = app.call(method, uri, Some(&app.admin), None).await;
        reply.expect_error(404, "not_found");
    }
}

#[tokio::test]
async fn a_known_route_with_another_method_is_a_json_405() {
    let app = App::new().await;
    // The contract: every error is JSON `{"error": "<code>", "message": "<sentence>"}`.
    for (method, uri) in [("GET", "/api/v1/decide"), ("DELETE", "/api/v1/admin/settings"), ("PUT", "/healthz")] {
        let reply = app.call(method, uri, Some(&app.admin), None).await;
        reply.expect(405);
        let body = reply.json();
        assert!(body["error"].as_str().is_some_and(|e| !e.is_empty()), "{method} {uri}: {body}");
        assert!(body["message"].as_str().is_some_and(|m| !m.is_empty()), "{method} {uri}: {body}");
    }
}
