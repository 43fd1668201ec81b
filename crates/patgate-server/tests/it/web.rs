//! Signing in to the web UI: the session cookie and its attributes, the session as a
//! caller of the management API, CSRF, the same 401 for every failed sign-in, the rate
//! limit on failures, idle and absolute expiry on the fixed clock, sign-out, blocking,
//! password changes, the trusted-proxy header, and what sessions never touch (the decision
//! endpoints, token usage). The tests marked so also run on PostgreSQL.

use std::net::IpAddr;

use axum::{
    body::Body,
    extract::connect_info::ConnectInfo,
    http::{Request, header},
};
use patgate_core::TokenId;
use patgate_store::{AuditFilter, Store};
use serde_json::{Value, json};

use crate::support::{API_REGISTRY, App, Backend, Reply, on_both_backends, start};

const PASSWORD: &str = "correct horse battery staple";
const SESSION: &str = "/api/v1/session";
const TOKENS: &str = "/api/v1/personal_access_tokens";
const CREATE: &str = "/api/v1/user/personal_access_tokens";
const HOUR: i64 = 3600;

/// The cookie and CSRF token of a signed-in browser.
#[derive(Debug, Clone)]
struct Browser {
    /// `patgate_session=…`, as the browser sends it back.
    cookie: String,
    csrf: String,
}

/// A request from `peer` (the loopback proxy when `None`) with `headers` and a JSON body.
async fn request(
    app: &App,
    peer: Option<&str>,
    method: &str,
    uri: &str,
    headers: &[(&str, &str)],
    body: Option<&Value>,
) -> Reply {
    let mut builder = Request::builder().method(method).uri(uri);
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    let body = match body {
        Some(value) => {
            builder = builder.header(header::CONTENT_TYPE, "application/json");
            Body::from(serde_json::to_vec(value).unwrap())
        }
        None => Body::empty(),
    };
    let mut request = builder.body(body).unwrap();
    if let Some(peer) = peer {
        let address: IpAddr = peer.parse().unwrap();
        request.extensions_mut().insert(ConnectInfo(std::net::SocketAddr::new(address, 41_000)));
    }
    app.send(request).await
}

/// A request with the browser's cookie, its CSRF token when `csrf` is given.
async fn browse(
    app: &App,
    browser: &Browser,
    method: &str,
    uri: &str,
    csrf: Option<&str>,
    body: Option<&Value>,
) -> Reply {
    let mut headers = vec![("cookie", browser.cookie.as_str())];
    if let Some(csrf) = csrf {
        headers.push(("x-csrf-token", csrf));
    }
    request(app, None, method, uri, &headers, body).await
}

/// `POST /api/v1/session` with a password, from `peer`.
async fn sign_in_from(app: &App, peer: &str, username: &str, password: &str) -> Reply {
    let body = json!({ "username": username, "password": password });
    request(app, Some(peer), "POST", SESSION, &[], Some(&body)).await
}

/// The browser a successful sign-in answer sets up.
fn browser(reply: &Reply) -> Browser {
    reply.expect(200);
    let set_cookie = reply.header("set-cookie").unwrap();
    let cookie = set_cookie.split(';').next().unwrap().trim().to_owned();
    Browser { cookie, csrf: reply.json()["csrf_token"].as_str().unwrap().to_owned() }
}

/// Signs `username` in with `password` from the loopback peer.
async fn sign_in(app: &App, username: &str, password: &str) -> Browser {
    browser(&sign_in_from(app, "127.0.0.1", username, password).await)
}

/// The admin gives `username` a password.
async fn set_password(app: &App, username: &str, password: &str) {
    let uri = format!("/api/v1/admin/users/{username}/password");
    app.call("PUT", &uri, Some(&app.admin), Some(&json!({ "password": password }))).await.expect(204);
}

/// Audit events of type `event`, newest first.
async fn events(app: &App, event: &str) -> Vec<patgate_store::AuditEvent> {
    let filter = AuditFilter { event: Some(event.into()), limit: 100, ..AuditFilter::default() };
    app.shared.store.audit_events(&filter).await.unwrap()
}

fn token_body(name: &str) -> Value {
    json!({ "name": name, "expires_at": "2027-01-31", "grants": [
        { "reach": "user", "permissions": { "personal_access_token": ["read"] } }
    ] })
}

async fn a_signed_in_browser_is_a_caller_of_the_management_api(backend: Backend) {
    let app = App::on(&backend).await;
    set_password(&app, "alice", PASSWORD).await;
    let reply = sign_in_from(&app, "127.0.0.1", "alice", PASSWORD).await;
    reply.expect(200);
    // The cookie: exactly these attributes.
    let set_cookie = reply.header("set-cookie").unwrap();
    let mut parts = set_cookie.split("; ");
    let (name, value) = parts.next().unwrap().split_once('=').unwrap();
    assert_eq!(name, "patgate_session");
    assert!(value.len() == 64 && value.bytes().all(|b| b.is_ascii_hexdigit()), "{value}");
    let mut attributes: Vec<&str> = parts.collect();
    attributes.sort_unstable();
    assert_eq!(attributes, ["HttpOnly", "Max-Age=604800", "Path=/", "SameSite=Strict", "Secure"], "{set_cookie}");
    assert_eq!(reply.header("cache-control"), Some("no-store"));
    let body = reply.json();
    assert_eq!((body["username"].as_str(), body["admin"].as_bool()), (Some("alice"), Some(false)), "{body}");
    let alice = browser(&reply);
    assert_eq!(alice.csrf.len(), 64);
    assert_ne!(alice.csrf, value, "the CSRF token is not the session id");
    // Only the id's digest is stored.
    let stored: String =
        sqlx::query_scalar("SELECT id_digest FROM sessions").fetch_one(app.shared.store.pool()).await.unwrap();
    assert_ne!(stored, value);

    // Who am I.
    let me = browse(&app, &alice, "GET", SESSION, None, None).await.expect(200).json();
    // alice is maintainer of the group acme/platform: that role counts on its projects too.
    let highest = json!({ "project": "maintainer", "group": "maintainer" });
    assert_eq!(me, json!({ "username": "alice", "admin": false, "csrf_token": alice.csrf, "highest_roles": highest }));

    // The management API, as alice with her live rights.
    let table = browse(&app, &alice, "GET", TOKENS, None, None).await.expect(200).json();
    let names: Vec<&str> = table.as_array().unwrap().iter().map(|t| t["user"].as_str().unwrap()).collect();
    assert!(!names.is_empty() && names.iter().all(|user| *user == "alice"), "{table}");
    let made = browse(&app, &alice, "POST", CREATE, Some(&alice.csrf), Some(&token_body("from the browser"))).await;
    let made = made.expect(201).json();
    assert_eq!(made["user"], "alice");
    // A session has no token of its own to show or rotate.
    browse(&app, &alice, "GET", "/api/v1/personal_access_tokens/self", None, None).await.expect_error(404, "not_found");
    // Not an administrator: the admin API stays closed.
    browse(&app, &alice, "GET", "/api/v1/admin/settings", None, None).await.expect(403);
    // The audit log names alice as the actor, and no token.
    let created = events(&app, "token_created").await;
    assert_eq!(created[0].token.map(|t| t.0), made["id"].as_u64());
    assert_eq!(created[0].actor_token, None, "a session is not a token");
    assert!(created[0].actor_user.is_some());

    // An administrator's session opens the admin API (admin mode).
    set_password(&app, "admin", PASSWORD).await;
    let admin = sign_in(&app, "ADMIN", PASSWORD).await;
    let me = browse(&app, &admin, "GET", SESSION, None, None).await.expect(200).json();
    assert_eq!((me["username"].as_str(), me["admin"].as_bool()), (Some("admin"), Some(true)));
    browse(&app, &admin, "GET", "/api/v1/admin/settings", None, None).await.expect(200);
    // dave is a member of one project only (reporter), of no group; as he signs in.
    set_password(&app, "dave", PASSWORD).await;
    let reply = sign_in_from(&app, "127.0.0.1", "dave", PASSWORD).await;
    assert_eq!(reply.expect(200).json()["highest_roles"], json!({ "project": "reporter", "group": null }));

    // Without a cookie (or with a made-up one) nothing answers.
    app.call("GET", SESSION, None, None).await.expect_error(401, "invalid_token");
    let stranger = Browser { cookie: format!("patgate_session={}", "ab".repeat(32)), csrf: String::new() };
    let reply = browse(&app, &stranger, "GET", TOKENS, None, None).await;
    assert_eq!(reply.expect_error(401, "invalid_token")["reason"], "session_ended");
}

async fn csrf_guards_every_session_request_that_changes_something(backend: Backend) {
    let app = App::on(&backend).await;
    set_password(&app, "alice", PASSWORD).await;
    let alice = sign_in(&app, "alice", PASSWORD).await;
    let before = app.token_count().await;

    // Without the token, or with another, a change is refused and changes nothing.
    let body = token_body("csrf");
    let refused = browse(&app, &alice, "POST", CREATE, None, Some(&body)).await;
    let refused = refused.expect_error(403, "csrf");
    assert!(refused["message"].as_str().unwrap().contains("X-CSRF-Token"), "{refused}");
    browse(&app, &alice, "POST", CREATE, Some(&"0".repeat(64)), Some(&body)).await.expect_error(403, "csrf");
    browse(&app, &alice, "POST", CREATE, Some(""), Some(&body)).await.expect_error(403, "csrf");
    assert_eq!(app.token_count().await, before);
    let made = browse(&app, &alice, "POST", CREATE, Some(&alice.csrf), Some(&body)).await.expect(201).json();
    let revoke = format!("{TOKENS}/{}", made["id"]);
    browse(&app, &alice, "DELETE", &revoke, None, None).await.expect_error(403, "csrf");
    browse(&app, &alice, "DELETE", &revoke, Some(&alice.csrf), None).await.expect(204);

    // Another session's token is not this session's.
    let other = sign_in(&app, "alice", PASSWORD).await;
    assert_ne!(other.csrf, alice.csrf);
    browse(&app, &alice, "POST", CREATE, Some(&other.csrf), Some(&body)).await.expect_error(403, "csrf");

    // A token request needs no CSRF token, cookie or not: the token wins.
    let token = app.api_token_for("alice").await;
    let reply = request(
        &app,
        None,
        "POST",
        CREATE,
        &[("private-token", token.as_str()), ("cookie", alice.cookie.as_str())],
        Some(&token_body("by token")),
    )
    .await;
    reply.expect(201);

    // Sign-out needs it too; a form post may carry it in its `csrf` field.
    browse(&app, &alice, "DELETE", SESSION, None, None).await.expect_error(403, "csrf");
    browse(&app, &alice, "GET", SESSION, None, None).await.expect(200);
    let form = |csrf: &str| {
        Request::builder()
            .method("DELETE")
            .uri(SESSION)
            .header("cookie", alice.cookie.as_str())
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(Body::from(format!("next=%2F&csrf={csrf}")))
            .unwrap()
    };
    app.send(form(&other.csrf)).await.expect_error(403, "csrf");
    app.send(form(&alice.csrf)).await.expect(204);
    browse(&app, &alice, "GET", SESSION, None, None).await.expect(401);
    browse(&app, &other, "GET", SESSION, None, None).await.expect(200);
}

async fn every_failed_sign_in_is_the_same_401(backend: Backend) {
    let app = App::on(&backend).await;
    set_password(&app, "alice", PASSWORD).await;
    set_password(&app, "mallory", PASSWORD).await;
    let failures = [
        ("alice", "not the password at all"),
        ("nobody", PASSWORD),
        // bob has no password: nothing opens his account.
        ("bob", PASSWORD),
        ("bob", ""),
        // mallory is blocked, and her password is right.
        ("mallory", PASSWORD),
    ];
    let mut bodies = Vec::new();
    for (username, password) in failures {
        let reply = sign_in_from(&app, "127.0.0.1", username, password).await;
        let body = reply.expect_error(401, "invalid_credentials");
        assert!(reply.header("set-cookie").is_none(), "{username}");
        assert!(!reply.text().contains(username), "the answer names no user: {}", reply.text());
        bodies.push(body);
    }
    assert!(bodies.windows(2).all(|pair| pair[0] == pair[1]), "{bodies:?}");
    assert!(!bodies[0].to_string().contains(PASSWORD));
    assert!(events(&app, "signed_in").await.is_empty());
    // Malformed requests are 422, not sign-in failures.
    let reply = request(&app, None, "POST", SESSION, &[], Some(&json!({ "username": "alice" }))).await;
    reply.expect_error(422, "invalid_request");
    let reply = app
        .send(
            Request::builder()
                .method("POST")
                .uri(SESSION)
                .header(header::CONTENT_TYPE, "text/plain")
                .body(Body::from(format!(r#"{{"username":"alice","password":"{PASSWORD}"}}"#)))
                .unwrap(),
        )
        .await;
    reply.expect_error(422, "invalid_request");
    // And the right password still works.
    sign_in(&app, "Alice", PASSWORD).await;
}

async fn blocking_or_deleting_a_user_ends_their_sessions(backend: Backend) {
    let app = App::on(&backend).await;
    set_password(&app, "alice", PASSWORD).await;
    set_password(&app, "bob", PASSWORD).await;
    let alice = sign_in(&app, "alice", PASSWORD).await;
    let bob = sign_in(&app, "bob", PASSWORD).await;
    app.call("POST", "/api/v1/admin/users/alice/block", Some(&app.admin), None).await.expect(204);
    let reply = browse(&app, &alice, "GET", TOKENS, None, None).await;
    assert_eq!(reply.expect_error(401, "invalid_token")["reason"], "session_ended");
    browse(&app, &bob, "GET", TOKENS, None, None).await.expect(200);
    // Unblocking does not bring the session back; signing in again does.
    app.call("POST", "/api/v1/admin/users/alice/unblock", Some(&app.admin), None).await.expect(204);
    browse(&app, &alice, "GET", SESSION, None, None).await.expect(401);
    sign_in(&app, "alice", PASSWORD).await;
    app.call("DELETE", "/api/v1/admin/users/bob", Some(&app.admin), None).await.expect(204);
    browse(&app, &bob, "GET", SESSION, None, None).await.expect(401);
    sign_in_from(&app, "127.0.0.1", "bob", PASSWORD).await.expect_error(401, "invalid_credentials");
}

#[tokio::test]
async fn a_session_ends_after_eight_idle_hours_and_after_seven_days_to_the_second() {
    let app = App::new().await;
    set_password(&app, "alice", PASSWORD).await;
    let t0 = start();
    let (first, second) = (sign_in(&app, "alice", PASSWORD).await, sign_in(&app, "alice", PASSWORD).await);
    // The second before the idle timeout: alive, and the request slides its expiry.
    app.set_now(t0 + 8 * HOUR - 1);
    browse(&app, &first, "GET", SESSION, None, None).await.expect(200);
    // At the timeout: over, for the session that was idle.
    app.set_now(t0 + 8 * HOUR);
    let reply = browse(&app, &second, "GET", SESSION, None, None).await;
    assert_eq!(reply.expect_error(401, "invalid_token")["reason"], "session_ended");
    browse(&app, &first, "GET", SESSION, None, None).await.expect(200);
    // The first was last active at t0 + 8 h - 1 (the one at t0 + 8 h came too soon after to
    // be written): idle from then on.
    app.set_now(t0 + 16 * HOUR - 2);
    browse(&app, &first, "GET", SESSION, None, None).await.expect(200);
    app.set_now(t0 + 16 * HOUR - 2 + 8 * HOUR);
    browse(&app, &first, "GET", SESSION, None, None).await.expect(401);

    // However active, a session ends 7 days after sign-in.
    let t1 = t0 + 30 * HOUR;
    app.set_now(t1);
    let busy = sign_in(&app, "alice", PASSWORD).await;
    let mut now = t1;
    while now + 7 * HOUR < t1 + 7 * 24 * HOUR {
        now += 7 * HOUR;
        app.set_now(now);
        browse(&app, &busy, "GET", SESSION, None, None).await.expect(200);
    }
    app.set_now(t1 + 7 * 24 * HOUR - 1);
    browse(&app, &busy, "GET", SESSION, None, None).await.expect(200);
    app.set_now(t1 + 7 * 24 * HOUR);
    browse(&app, &busy, "GET", SESSION, None, None).await.expect(401);
}

async fn signing_out_ends_the_session(backend: Backend) {
    let app = App::on(&backend).await;
    set_password(&app, "alice", PASSWORD).await;
    let alice = sign_in(&app, "alice", PASSWORD).await;
    let other = sign_in(&app, "alice", PASSWORD).await;
    let reply = browse(&app, &alice, "DELETE", SESSION, Some(&alice.csrf), None).await;
    reply.expect(204);
    let cleared = reply.header("set-cookie").unwrap();
    assert!(cleared.starts_with("patgate_session=;") && cleared.contains("Max-Age=0"), "{cleared}");
    browse(&app, &alice, "GET", SESSION, None, None).await.expect(401);
    browse(&app, &alice, "GET", TOKENS, None, None).await.expect(401);
    browse(&app, &alice, "DELETE", SESSION, Some(&alice.csrf), None).await.expect(401);
    // Only that one.
    browse(&app, &other, "GET", TOKENS, None, None).await.expect(200);
    assert_eq!(events(&app, "signed_in").await.len(), 2);
    let signed_out = events(&app, "signed_out").await;
    assert_eq!(signed_out.len(), 1);
    assert_eq!(signed_out[0].actor_token, None);
    // No secret of the session in the audit log.
    let everything = app.shared.store.audit_events(&AuditFilter { limit: 1000, ..AuditFilter::default() }).await;
    let text = format!("{:?}", everything.unwrap());
    let id = alice.cookie.trim_start_matches("patgate_session=");
    assert!(!text.contains(id) && !text.contains(&alice.csrf) && !text.contains("argon2"), "{text}");
}

#[tokio::test]
async fn failed_sign_ins_are_rate_limited_per_client_address() {
    let app = App::new().await;
    set_password(&app, "alice", PASSWORD).await;
    // Successes do not count.
    for _ in 0..12 {
        sign_in_from(&app, "10.1.1.1", "alice", PASSWORD).await.expect(200);
    }
    for attempt in 0..10 {
        let reply = sign_in_from(&app, "10.1.1.1", "alice", &format!("wrong password {attempt}")).await;
        reply.expect_error(401, "invalid_credentials");
    }
    let limited = sign_in_from(&app, "10.1.1.1", "alice", PASSWORD).await;
    limited.expect_error(429, "rate_limited");
    let retry: u64 = limited.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry), "{retry}");
    assert!(limited.header("set-cookie").is_none());
    // Another address is not affected, nor is a client behind the trusted proxy.
    sign_in_from(&app, "10.1.1.2", "alice", PASSWORD).await.expect(200);
    let body = json!({ "username": "alice", "password": PASSWORD });
    let forwarded = request(&app, Some("127.0.0.1"), "POST", SESSION, &[("x-forwarded-for", "10.9.9.9")], Some(&body));
    forwarded.await.expect(200);
    // A client behind the proxy is limited by its own address, not the proxy's.
    for _ in 0..10 {
        let body = json!({ "username": "alice", "password": "wrong wrong wrong" });
        let reply = request(&app, Some("127.0.0.1"), "POST", SESSION, &[("x-forwarded-for", "10.9.9.8")], Some(&body));
        reply.await.expect(401);
    }
    let reply = request(&app, Some("127.0.0.1"), "POST", SESSION, &[("x-forwarded-for", "10.9.9.8")], Some(&body));
    reply.await.expect(429);
    sign_in_from(&app, "127.0.0.1", "alice", PASSWORD).await.expect(200);
}

async fn a_trusted_proxy_signs_in_the_user_its_header_names(backend: Backend) {
    let app = App::with_trusted_user_header(&backend, "x-forwarded-user").await;
    // From the trusted (loopback) proxy, no body: signed in as alice, who has no password.
    let reply = request(&app, Some("127.0.0.1"), "POST", SESSION, &[("x-forwarded-user", "Alice")], None).await;
    let alice = browser(&reply);
    assert_eq!(reply.json()["username"], "alice");
    browse(&app, &alice, "GET", TOKENS, None, None).await.expect(200);
    let signed_in = events(&app, "signed_in").await;
    assert_eq!(signed_in[0].details["method"], "trusted_header");
    // From anyone else the header is ignored.
    let reply = request(&app, Some("10.3.3.3"), "POST", SESSION, &[("x-forwarded-user", "alice")], None).await;
    reply.expect_error(422, "invalid_request");
    assert!(reply.header("set-cookie").is_none());
    // The user must exist and be active.
    for username in ["nobody", "mallory"] {
        let reply = request(&app, Some("127.0.0.1"), "POST", SESSION, &[("x-forwarded-user", username)], None).await;
        reply.expect_error(401, "invalid_credentials");
    }
    // Without the header, or with another one, nothing happens.
    request(&app, Some("127.0.0.1"), "POST", SESSION, &[("x-remote-user", "alice")], None).await.expect(422);
    // Password sign-in still works beside it.
    set_password(&app, "bob", PASSWORD).await;
    sign_in(&app, "bob", PASSWORD).await;

    // Off unless configured: the header means nothing.
    let plain = App::on(&backend).await;
    let reply = request(&plain, Some("127.0.0.1"), "POST", SESSION, &[("x-forwarded-user", "alice")], None).await;
    reply.expect_error(422, "invalid_request");
}

#[tokio::test]
async fn the_decision_endpoints_ignore_session_cookies() {
    let app = App::new().await;
    set_password(&app, "alice", PASSWORD).await;
    let alice = sign_in(&app, "alice", PASSWORD).await;
    // The decision API: no token is no token, cookie or not.
    let body = json!({ "token": "", "method": "GET", "path": API_REGISTRY });
    let plain = request(&app, None, "POST", "/api/v1/decide", &[], Some(&body)).await;
    let with_cookie = request(&app, None, "POST", "/api/v1/decide", &[("cookie", &alice.cookie)], Some(&body)).await;
    assert_eq!(plain.status, with_cookie.status);
    assert_eq!(plain.json(), with_cookie.json());
    assert_eq!(with_cookie.json()["allowed"], false, "{}", with_cookie.text());
    // Forward auth: 401 missing_token, as without the cookie.
    let forwarded = [
        ("x-forwarded-method", "GET"),
        ("x-forwarded-uri", API_REGISTRY),
        ("cookie", alice.cookie.as_str()),
        ("x-csrf-token", alice.csrf.as_str()),
    ];
    let reply = app.forward(None, &forwarded).await;
    assert_eq!(reply.status, 401, "{}", reply.text());
    assert_eq!(reply.json()["reason"], "missing_token");
    assert!(reply.header("x-patgate-user").is_none());
}

async fn a_session_is_never_token_usage(backend: Backend) {
    let app = App::on(&backend).await;
    set_password(&app, "alice", PASSWORD).await;
    let alice_id = app.shared.engine().index.directory.user_by_name("alice").unwrap().id;
    let alice = sign_in(&app, "alice", PASSWORD).await;
    let before = app.token_count().await;
    browse(&app, &alice, "GET", TOKENS, None, None).await.expect(200);
    browse(&app, &alice, "GET", SESSION, None, None).await.expect(200);
    let made = browse(&app, &alice, "POST", CREATE, Some(&alice.csrf), Some(&token_body("b"))).await.expect(201).json();
    // Pending use names no session and none of alice's tokens (only the admin's token was used).
    let pending = app.shared.usage.take();
    assert!(pending.iter().all(|used| used.token != TokenId(0) && used.owner != alice_id), "{pending:?}");
    app.shared.usage.restore(pending);
    patgate_server::jobs::flush_usage(&app.shared).await.unwrap();
    // In the tokens table: alice's tokens unused, one more token (the one she made), no other.
    assert_eq!(app.token_count().await, before + 1);
    let rows = app.shared.store.tokens(Some(alice_id)).await.unwrap();
    assert!(rows.iter().all(|row| row.last_used_at.is_none() && row.last_ips.is_empty()), "{rows:?}");
    assert!(rows.iter().all(|row| row.id != TokenId(0)));
    let table = browse(&app, &alice, "GET", TOKENS, None, None).await.expect(200).json();
    let ids: Vec<u64> = table.as_array().unwrap().iter().map(|t| t["id"].as_u64().unwrap()).collect();
    assert!(ids.contains(&made["id"].as_u64().unwrap()) && !ids.contains(&0), "{ids:?}");
    for token in table.as_array().unwrap() {
        assert_eq!(token["last_used_at"], Value::Null, "{token}");
    }
}

async fn changing_a_password_needs_the_current_one_and_ends_every_session(backend: Backend) {
    let app = App::on(&backend).await;
    set_password(&app, "alice", PASSWORD).await;
    let (first, second) = (sign_in(&app, "alice", PASSWORD).await, sign_in(&app, "alice", PASSWORD).await);
    const NEW: &str = "a brand new passphrase";
    let change = |current: &str, password: &str| json!({ "current_password": current, "password": password });

    // CSRF first, then the current password, then the rules.
    browse(&app, &first, "PUT", "/api/v1/user/password", None, Some(&change(PASSWORD, NEW))).await.expect(403);
    let wrong = change("guess guess guess", NEW);
    let reply = browse(&app, &first, "PUT", "/api/v1/user/password", Some(&first.csrf), Some(&wrong)).await;
    reply.expect_error(403, "invalid_current_password");
    let short = change(PASSWORD, "short");
    let reply = browse(&app, &first, "PUT", "/api/v1/user/password", Some(&first.csrf), Some(&short)).await;
    let short = reply.expect_error(422, "invalid_password");
    assert!(short["message"].as_str().unwrap().contains("12 characters"), "{short}");
    assert!(!short.to_string().contains(PASSWORD));
    browse(&app, &second, "GET", SESSION, None, None).await.expect(200);

    let body = change(PASSWORD, NEW);
    let changed = browse(&app, &first, "PUT", "/api/v1/user/password", Some(&first.csrf), Some(&body)).await;
    changed.expect(204);
    // Every session ended, the one used included; the browser that changed it got a new one.
    browse(&app, &first, "GET", SESSION, None, None).await.expect(401);
    browse(&app, &second, "GET", SESSION, None, None).await.expect(401);
    let renewed = changed.header("set-cookie").unwrap().split(';').next().unwrap().to_owned();
    let renewed = Browser { cookie: renewed, csrf: String::new() };
    let me = browse(&app, &renewed, "GET", SESSION, None, None).await.expect(200).json();
    assert_eq!(me["username"], "alice");
    sign_in_from(&app, "127.0.0.1", "alice", PASSWORD).await.expect_error(401, "invalid_credentials");
    sign_in(&app, "alice", NEW).await;
    let audited = events(&app, "password_changed").await;
    assert_eq!(audited[0].actor_token, None, "changed by a session");
    assert_eq!(audited[0].user, audited[0].actor_user);

    // By token: a token allowed user:update on its own user, the current password still
    // required; it ends the sessions too, and sets no cookie.
    let token = app.api_token_for("alice").await;
    let reply = app.call("PUT", "/api/v1/user/password", Some(&token), Some(&change("nope nope nope", PASSWORD))).await;
    reply.expect_error(403, "invalid_current_password");
    let reply = app.call("PUT", "/api/v1/user/password", Some(&token), Some(&change(NEW, PASSWORD))).await;
    reply.expect(204);
    assert!(reply.header("set-cookie").is_none());
    browse(&app, &renewed, "GET", SESSION, None, None).await.expect(401);
    // bob's demo token (issues read) may not.
    let reply = app.call("PUT", "/api/v1/user/password", Some(&app.bob), Some(&change(PASSWORD, NEW))).await;
    reply.expect(403);

    // The admin endpoint: administrators only, the same rules, 404 for nobody.
    let alice = sign_in(&app, "alice", PASSWORD).await;
    let uri = "/api/v1/admin/users/bob/password";
    browse(&app, &alice, "PUT", uri, Some(&alice.csrf), Some(&json!({ "password": NEW }))).await.expect(403);
    app.call("PUT", uri, Some(&app.admin), Some(&json!({ "password": "too short" })))
        .await
        .expect_error(422, "invalid_password");
    let nobody = "/api/v1/admin/users/nobody/password";
    app.call("PUT", nobody, Some(&app.admin), Some(&json!({ "password": NEW }))).await.expect_error(404, "not_found");
    app.call("PUT", uri, Some(&app.admin), Some(&json!({ "password": NEW }))).await.expect(204);
    sign_in(&app, "bob", NEW).await;
    // Setting alice's password ends her sessions.
    app.call("PUT", "/api/v1/admin/users/alice/password", Some(&app.admin), Some(&json!({ "password": NEW })))
        .await
        .expect(204);
    browse(&app, &alice, "GET", SESSION, None, None).await.expect(401);
}

/// Setting a password hands out the user's session, whose authority is legacy `api` (plus
/// `admin_mode` for an administrator): a token may only do it for a user whose session it
/// covers, or a narrow provisioning token would sign in as the admin and mint anything.
async fn a_token_sets_only_passwords_whose_session_it_covers(backend: Backend) {
    let app = App::on(&backend).await;
    let narrow = app
        .mint_for(
            "admin",
            json!({ "name": "provisioning", "expires_at": "2027-01-01", "grants": [
                { "reach": "instance", "permissions": { "admin_user": ["read", "update"] } }
            ] }),
        )
        .await;
    let narrow = narrow["token"].as_str().unwrap().to_owned();
    // The token may update users (it blocks and unblocks them)…
    app.call("POST", "/api/v1/admin/users/bob/block", Some(&narrow), None).await.expect(204);
    app.call("POST", "/api/v1/admin/users/bob/unblock", Some(&narrow), None).await.expect(204);
    // …but not hand out its own owner's session, nor any other user's.
    for username in ["admin", "alice"] {
        let uri = format!("/api/v1/admin/users/{username}/password");
        let reply = app.call("PUT", &uri, Some(&narrow), Some(&json!({ "password": PASSWORD }))).await;
        let refused = reply.expect_error(403, "escalation");
        assert!(refused["message"].as_str().unwrap().contains("session"), "{refused}");
        sign_in_from(&app, "127.0.0.1", username, PASSWORD).await.expect_error(401, "invalid_credentials");
    }
    assert!(events(&app, "password_changed").await.is_empty(), "a refused request changed a password");

    // The bootstrap token (`api`, `admin_mode`) covers an administrator's session.
    set_password(&app, "admin", PASSWORD).await;
    let admin = sign_in(&app, "admin", PASSWORD).await;
    // A signed-in administrator sets passwords too (a session is bound by its live role).
    const NEW: &str = "set by a signed-in admin";
    let uri = "/api/v1/admin/users/alice/password";
    let body = json!({ "password": NEW });
    browse(&app, &admin, "PUT", uri, Some(&admin.csrf), Some(&body)).await.expect(204);
    sign_in(&app, "alice", NEW).await;
}

on_both_backends!(
    a_signed_in_browser_is_a_caller_of_the_management_api,
    csrf_guards_every_session_request_that_changes_something,
    every_failed_sign_in_is_the_same_401,
    blocking_or_deleting_a_user_ends_their_sessions,
    signing_out_ends_the_session,
    a_trusted_proxy_signs_in_the_user_its_header_names,
    a_session_is_never_token_usage,
    changing_a_password_needs_the_current_one_and_ends_every_session,
    a_token_sets_only_passwords_whose_session_it_covers,
);
