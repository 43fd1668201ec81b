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
    assert_allowed(&app.forward(None, &with("203.0.113.7")).await, "alice");
    assert_unauthorized(&app.forward(None, &with("198.51.100.1")).await, "ip_not_allowed");
    // Each proxy appends the address it was sent the request from: the client is the nearest
    // entry that is not a trusted proxy, and what lies left of it is what the client wrote.
    assert_allowed(&app.forward(None, &with("198.51.100.1, 203.0.113.7")).await, "alice");
    assert_allowed(&app.forward(None, &with("203.0.113.7, 127.0.0.1")).await, "alice");
    assert_unauthorized(&app.forward(None, &with("203.0.113.7, 10.0.0.1")).await, "ip_not_allowed");
    assert_unauthorized(&app.forward(None, &with("203.0.113.7, 198.51.100.1:4711")).await, "ip_not_allowed");
    assert_allowed(&app.forward(None, &with("[2001:db8::1]:4711, 203.0.113.7:4711")).await, "alice");
    // An entry that is not an address: no client address, never the proxy's.
    assert_unauthorized(&app.forward(None, &with("203.0.113.7, garbage")).await, "ip_not_allowed");
    assert_unauthorized(&app.forward(None, &with("203.0.113.7,")).await, "ip_not_allowed");
    // Every line of the header counts, the last one nearest.
    let mut lines = base.to_vec();
    lines.extend([("x-forwarded-for", "198.51.100.1"), ("x-forwarded-for", "203.0.113.7")]);
    assert_allowed(&app.forward(None, &lines).await, "alice");
    let mut lines = base.to_vec();
    lines.extend([("x-forwarded-for", "203.0.113.7"), ("x-forwarded-for", "198.51.100.1")]);
    assert_unauthorized(&app.forward(None, &lines).await, "ip_not_allowed");
    // X-Real-IP without X-Forwarded-For; X-Forwarded-For wins when both are there.
    let mut real = base.to_vec();
    real.push(("x-real-ip", "203.0.113.9"));
    assert_allowed(&app.forward(None, &real).await, "alice");
    real.push(("x-forwarded-for", "198.51.100.1"));
    assert_unauthorized(&app.forward(None, &real).await, "ip_not_allowed");
    let mut real = base.to_vec();
    real.push(("x-real-ip", "somewhere"));
    assert_unauthorized(&app.forward(None, &real).await, "ip_not_allowed");
    // Without either header the proxy's own address is the client.
    assert_unauthorized(&app.forward(None, &base).await, "ip_not_allowed");
    // The management API finds the client the same way: the token (whose grants do not
    // include reading tokens) may still show itself from an allowed address.
    let headers = [("x-forwarded-for", "203.0.113.7"), ("private-token", token)];
    let shown = app.call_from_with("127.0.0.1", "GET", "/api/v1/personal_access_tokens/self", &headers).await;
    assert_eq!(shown.expect(200).json()["name"], "office only");
    // From a peer that is not a trusted proxy nothing it says about the client counts.
    let refused = app.call_from_with("198.51.100.20", "GET", "/api/v1/personal_access_tokens/self", &headers).await;
    assert_eq!(refused.expect_error(401, "invalid_token")["reason"], "ip_not_allowed", "{}", refused.text());
}

#[tokio::test]
async fn a_client_cannot_name_another_request_than_its_proxy_does() {
    let app = App::new().await;
    let delete = format!("{API_REGISTRY}/1");
    let token = ("private-token", app.alice.as_str());
    // nginx as protocols.md configures it sets the X-Original pair and passes the client's
    // headers on: a client's X-Forwarded-Method or -Uri must not turn its DELETE into a GET.
    let smuggled: [&[(&str, &str)]; 4] = [
        &[("x-original-method", "DELETE"), ("x-original-uri", &delete), (METHOD, "GET"), token],
        &[("x-original-method", "DELETE"), ("x-original-uri", &delete), (URI, API_REGISTRY), token],
        &[("x-original-method", "DELETE"), ("x-original-uri", &delete), (METHOD, "GET"), (URI, API_REGISTRY), token],
        // Traefik sets the X-Forwarded pair; a client's X-Original pair must not count either.
        &[(METHOD, "GET"), (URI, API_REGISTRY), ("x-original-method", "DELETE"), token],
    ];
    for headers in smuggled {
        let reply = app.forward(None, headers).await;
        assert_forbidden(&reply, "ambiguous_forwarded_request");
    }
    // A header given twice names two requests.
    let twice = [(METHOD, "DELETE"), (METHOD, "GET"), (URI, API_REGISTRY), token];
    assert_forbidden(&app.forward(None, &twice).await, "ambiguous_forwarded_request");
    let twice = [(METHOD, "GET"), (URI, API_REGISTRY), (URI, "/api/v4/user"), token];
    assert_forbidden(&app.forward(None, &twice).await, "ambiguous_forwarded_request");
    // Both pairs naming the same request are fine.
    let both =
        [(METHOD, "GET"), (URI, API_REGISTRY), ("x-original-method", "GET"), ("x-original-uri", API_REGISTRY), token];
    assert_allowed(&app.forward(None, &both).await, "alice");
    // Half of each pair is not a request.
    let halves = [(METHOD, "GET"), ("x-original-uri", API_REGISTRY), token];
    assert_forbidden(&app.forward(None, &halves).await, "missing_forwarded_request");
}

/// ext_authz's http_service with path_prefix /api/v1/forward-auth: the check request keeps
/// the original method and appends the original path (and query).
async fn envoy(app: &App, method: &str, path: &str, headers: &[(&str, &str)], peer: &str) -> Reply {
    app.call_from_with(peer, method, &format!("/api/v1/forward-auth{path}"), headers).await
}

#[tokio::test]
async fn envoy_sends_the_original_method_and_path_under_the_prefix() {
    let app = App::new().await;
    // ext_authz's http_service with path_prefix /api/v1/forward-auth: the check request keeps
    // the original method and appends the original path (and query).
    let token = ("private-token", app.alice.as_str());
    let allowed = envoy(&app, "GET", &format!("{API_REGISTRY}?per_page=5"), &[token], "127.0.0.1").await;
    assert_allowed(&allowed, "alice");
    let denied = envoy(&app, "DELETE", &format!("{API_REGISTRY}/1"), &[token], "127.0.0.1").await;
    assert_forbidden(&denied, "insufficient_scope");
    assert_eq!(denied.header("x-patgate-missing-permission"), Some("container_registry:delete"));
    let reply = envoy(&app, "POST", &format!("{API_REGISTRY}/1"), &[], "127.0.0.1").await;
    assert_unauthorized(&reply, "missing_token");
    let bearer = format!("Bearer {}", app.alice);
    assert_allowed(&envoy(&app, "GET", API_REGISTRY, &[("authorization", &bearer)], "127.0.0.1").await, "alice");
    // A forwarded header that disagrees with the request itself is refused.
    let smuggled = envoy(&app, "DELETE", &format!("{API_REGISTRY}/1"), &[(METHOD, "GET"), token], "127.0.0.1").await;
    assert_forbidden(&smuggled, "ambiguous_forwarded_request");
    // Only from a trusted proxy, and never 404 under the prefix.
    envoy(&app, "GET", API_REGISTRY, &[token], "10.1.2.3").await.expect(403);
    let unknown = envoy(&app, "GET", "/api/v4/uncatalogued", &[token], "127.0.0.1").await;
    assert_forbidden(&unknown, "endpoint_not_covered");
    let root = envoy(&app, "GET", "/", &[token], "127.0.0.1").await;
    assert_forbidden(&root, "endpoint_not_covered");
    // The plain endpoint answers every method too (a proxy may keep the original one).
    let headers = [(METHOD, "GET"), (URI, API_REGISTRY), token];
    let plain = app.call_from_with("127.0.0.1", "POST", "/api/v1/forward-auth", &headers).await;
    assert_allowed(&plain, "alice");
}

#[tokio::test]
async fn a_public_read_outside_the_grants_is_answered_without_the_owner() {
    let app = App::new().await;
    // alice's demo token reaches acme/platform/api only; acme/web/site is public.
    let public = "/api/v4/projects/acme%2Fweb%2Fsite/issues";
    assert_eq!(app.decide(&app.alice, "GET", public).await["basis"], "anonymous");
    let reply = app.forward(None, &[(METHOD, "GET"), (URI, public), ("private-token", &app.alice)]).await;
    reply.expect(200);
    // Served as to an anonymous caller: both identity headers present and empty, so a proxy
    // that copies them replaces whatever the client sent under those names.
    assert_eq!(reply.header("x-patgate-user"), Some(""));
    assert_eq!(reply.header("x-patgate-token-id"), Some(""));
    // Within its grants the owner is named.
    let reply = app.forward(None, &[(METHOD, "GET"), (URI, API_REGISTRY), ("private-token", &app.alice)]).await;
    assert_allowed(&reply, "alice");
    assert_eq!(app.decide(&app.alice, "GET", API_REGISTRY).await["basis"], "fine_grained");
}
