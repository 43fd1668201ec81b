//! `/healthz`, `/readyz` and `/metrics`.

use crate::support::{API_REGISTRY, App};

#[tokio::test]
async fn health_and_readiness_answer() {
    let app = App::new().await;
    let reply = app.call("GET", "/healthz", None, None).await;
    assert_eq!(reply.expect(200).text().trim(), "ok");
    let reply = app.call("GET", "/readyz", None, None).await;
    assert_eq!(reply.expect(200).text().trim(), "ready");
}

#[tokio::test]
async fn metrics_count_decisions_by_result_and_reason() {
    let app = App::new().await;
    app.decide(&app.alice, "GET", API_REGISTRY).await;
    app.decide(&app.alice, "GET", API_REGISTRY).await;
    app.decide(&app.alice, "DELETE", &format!("{API_REGISTRY}/1")).await;
    app.decide("nope", "GET", API_REGISTRY).await;
    app.forward(
        None,
        &[("x-forwarded-method", "GET"), ("x-forwarded-uri", API_REGISTRY), ("private-token", &app.alice)],
    )
    .await
    .expect(200);
    app.forward(None, &[("x-forwarded-method", "GET"), ("x-forwarded-uri", API_REGISTRY)]).await.expect(401);

    let reply = app.call("GET", "/metrics", None, None).await;
    reply.expect(200);
    assert!(reply.header("content-type").is_some_and(|t| t.starts_with("text/plain")), "{:?}", reply.headers);
    let text = reply.text();
    assert!(text.contains("# TYPE patgate_decisions_total counter"), "{text}");
    for line in [
        r#"patgate_decisions_total{endpoint="decide",result="allow",reason="allowed"} 2"#,
        r#"patgate_decisions_total{endpoint="decide",result="deny",reason="insufficient_scope"} 1"#,
        r#"patgate_decisions_total{endpoint="decide",result="deny",reason="invalid_token"} 1"#,
        r#"patgate_decisions_total{endpoint="forward_auth",result="allow",reason="allowed"} 1"#,
        r#"patgate_decisions_total{endpoint="forward_auth",result="deny",reason="missing_token"} 1"#,
        "patgate_decision_seconds_count 6",
        "patgate_tokens 4",
    ] {
        assert!(text.lines().any(|l| l == line), "missing `{line}` in:\n{text}");
    }
    // Every sample line is `name{labels} value` or `name value`, with a numeric value.
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let value = line.rsplit_once(' ').map(|(_, value)| value).unwrap_or_default();
        assert!(value.parse::<f64>().is_ok(), "not a sample: {line}");
    }
}

#[tokio::test]
async fn every_route_of_the_table_is_served_documented_and_guarded() {
    use patgate_server::api::{Access, ROUTES};
    let app = App::new().await;
    let document = app.call("GET", "/api/v1/openapi.json", None, None).await.expect(200).json();
    assert_eq!(document["openapi"], "3.1.0");
    for route in ROUTES {
        let methods = patgate_server::api::documented_methods(route);
        assert!(!methods.is_empty(), "{} {} has no method", route.method, route.path);
        for method in methods {
            let operation = &document["paths"][patgate_server::api::documented_path(route)][*method];
            assert!(operation["summary"].is_string(), "{method} {} is not documented", route.path);
        }
        let uri = route.path.replace("{username}", "alice").replace("{id}", "1").replace("{*path}", "api/v4/user");
        let body = route.request.map(|_| serde_json::json!({}));
        // A route of every method is called with one that is not GET.
        let method = if route.method == "ANY" { "POST" } else { route.method };
        let reply = app.call(method, &uri, None, body.as_ref()).await;
        let fallback = reply.status == 404 && reply.text().contains("no such endpoint");
        assert!(!fallback && reply.status != 405, "{} {uri} is not served: {}", route.method, reply.status);
        assert!(!reply.status.is_server_error(), "{} {uri}: {} {}", route.method, reply.status, reply.text());
        match route.access {
            // Forward auth judges the request behind the proxy: without a token, 401 is its
            // answer for that request (the Envoy form carries it in the path).
            Access::Open if route.path.starts_with(patgate_server::routes::decision::FORWARD_AUTH_PATH) => {
                assert!([401, 403].contains(&reply.status.as_u16()), "{method} {uri}: {}", reply.status)
            }
            Access::Open => assert_ne!(reply.status, 401, "{} {uri}", route.method),
            // Without a body to validate first, a guarded route asks for credentials.
            Access::Token | Access::Admin | Access::Session if route.request.is_none() => {
                reply.expect_error(401, "invalid_token");
            }
            Access::Token | Access::Admin | Access::Session => {
                assert!(reply.status.is_client_error(), "{} {uri}", route.method)
            }
        }
    }
    // Nothing of this changed anything: alice is neither blocked nor deleted.
    assert_eq!(app.reason(&app.alice, "GET", API_REGISTRY).await, "allowed");
}
