//! The token lifecycle on the fixed clock, at the edges: rotation grace and reuse
//! detection, expiry and expiry notices, lowered and per-group lifetime caps, the legacy
//! cut-off dates, leak reports, token lookup, the audit log, owner block and delete,
//! inactivity, usage, and webhook delivery to a real receiver.

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex, PoisonError},
};

use hmac::{Hmac, KeyInit, Mac};
use patgate_core::{Timestamp, TokenKind};
use patgate_server::jobs;
use patgate_store::WebhookTarget;
use serde_json::{Value, json};
use sha2::Sha256;
use tokio::net::{TcpListener, TcpStream};

use crate::support::{API_REGISTRY, App, Backend, LOOPBACK_PEER, at, on_both_backends, start};

const TOKENS: &str = "/api/v1/personal_access_tokens";
const OWN: &str = "/api/v1/user/personal_access_tokens";
const SELF_ROTATE: &str = "/api/v1/personal_access_tokens/self/rotate";
const SETTINGS: &str = "/api/v1/admin/settings";
const AUDIT: &str = "/api/v1/audit_events";
const LEAK: &str = "/api/v1/credentials/revoke";
const LOOKUP: &str = "/api/v1/admin/token_lookup";
const DELIVERIES: &str = "/api/v1/admin/webhook_deliveries";
/// Open to every legacy `api` / `read_api` token.
const USER: &str = "/api/v4/user";
const API_ISSUES: &str = "/api/v4/projects/acme%2Fplatform%2Fapi/issues";
const DAY: i64 = 86_400;

on_both_backends!(
    a_rotated_token_works_until_the_last_second_of_its_grace,
    a_token_expires_at_its_expiry_second,
    expiry_notices_are_sent_once_at_60_30_7_and_0_days,
    presenting_a_rotated_token_for_rotation_revokes_its_family,
    a_lowered_cap_blocks_at_use_until_the_token_rotates,
    a_token_made_without_expiry_when_none_is_required_works,
    a_group_cap_applies_in_the_group_only,
    legacy_creation_and_use_stop_at_the_first_second_of_their_dates,
    a_leak_report_revokes_valid_tokens_and_says_nothing,
    leak_reports_are_rate_limited_per_client_address,
    token_lookup_names_a_token_without_revoking_it,
    audit_events_are_visible_to_admins_and_owners_and_page,
    blocking_unblocking_and_deleting_an_owner,
    inactive_tokens_are_revoked_once,
    usage_is_flushed_with_addresses_newest_first,
    addresses_of_one_flush_are_listed_newest_first,
    a_flush_waits_for_the_flush_in_progress,
    webhooks_are_signed_retried_and_delivered_once,
    rotation_follows_the_legacy_policy_of_creation,
    an_expired_token_is_not_rotated_back_to_life,
    a_rotated_token_in_its_grace_period_can_be_revoked,
);

/// How the API writes an instant.
fn iso(seconds: i64) -> String {
    format!("{:?}", Timestamp(seconds))
}

/// Changes settings as `admin`; the answer must be 200.
async fn put_settings(app: &App, admin: &str, body: Value) -> Value {
    app.call("PUT", SETTINGS, Some(admin), Some(&body)).await.expect(200).json()
}

/// The id of `token` (from the decision, which names it even when it denies).
async fn id_of(app: &App, token: &str) -> u64 {
    app.decide(token, "GET", USER).await["token_id"].as_u64().unwrap()
}

/// The id of a token that may still call the API, without recording a use.
async fn own_id(app: &App, token: &str) -> u64 {
    app.call("GET", &format!("{TOKENS}/self"), Some(token), None).await.expect(200).json()["id"].as_u64().unwrap()
}

/// A token as `admin` sees it.
async fn show(app: &App, admin: &str, id: u64) -> Value {
    app.call("GET", &format!("{TOKENS}/{id}"), Some(admin), None).await.expect(200).json()
}

/// The decision's (status, reason).
async fn verdict(app: &App, token: &str, method: &str, path: &str) -> (u64, String) {
    let decision = app.decide(token, method, path).await;
    (decision["status"].as_u64().unwrap(), decision["reason"].as_str().unwrap().to_owned())
}

fn denied(status: u64, reason: &str) -> (u64, String) {
    (status, reason.to_owned())
}

/// One page of audit events as `admin` sees it (`query` without the `?`).
async fn audit_page(app: &App, admin: &str, query: &str) -> Value {
    app.call("GET", &format!("{AUDIT}?{query}"), Some(admin), None).await.expect(200).json()
}

/// The audit events `query` selects, as `admin` sees them (one page of up to 1000).
async fn audit(app: &App, admin: &str, query: &str) -> Vec<Value> {
    let page = audit_page(app, admin, &format!("limit=1000&{query}")).await;
    assert!(page.get("next_before_id").is_none(), "more than one page: {page}");
    page["events"].as_array().unwrap().clone()
}

/// A legacy `api` token for `username`, expiring on `expires_at`, made by `admin`.
async fn legacy_api(app: &App, username: &str, expires_at: &str) -> String {
    let body = json!({ "name": "api", "expires_at": expires_at, "scopes": ["api"] });
    let uri = format!("/api/v1/users/{username}/personal_access_tokens");
    let reply = app.call("POST", &uri, Some(&app.admin), Some(&body)).await;
    reply.expect(201).json()["token"].as_str().unwrap().to_owned()
}

/// A well-formed token of this instance that was never issued.
fn never_issued(app: &App) -> String {
    let plain = app.shared.engine().format.generate(TokenKind::FineGrained).unwrap();
    plain.expose_secret().to_owned()
}

async fn a_rotated_token_works_until_the_last_second_of_its_grace(backend: Backend) {
    let app = App::on(&backend).await;
    let reply = app.call("PUT", SETTINGS, Some(&app.admin), Some(&json!({ "rotation_grace_seconds": 86_401 }))).await;
    reply.expect_error(422, "invalid_request");
    let settings = put_settings(&app, &app.admin, json!({ "rotation_grace_seconds": 300 })).await;
    assert_eq!(settings["rotation_grace_seconds"], 300);
    let old = app.api_token_for("alice").await;
    let old_id = own_id(&app, &old).await;

    let rotated_at = start() + 3600;
    app.set_now(rotated_at);
    let rotated = app.call("POST", SELF_ROTATE, Some(&old), None).await.expect(200).json();
    let new = rotated["token"].as_str().unwrap().to_owned();
    assert_eq!(rotated["previous_id"], old_id);
    assert_eq!(rotated["state"], "active");

    // The grace period's last second: both work; the old one shows when it ends.
    app.set_now(rotated_at + 299);
    assert_eq!(app.reason(&old, "GET", USER).await, "allowed");
    assert_eq!(app.reason(&new, "GET", USER).await, "allowed");
    let shown = show(&app, &app.admin, old_id).await;
    assert_eq!(shown["state"], "active", "{shown}");
    assert_eq!(shown["revoked_at"], iso(rotated_at + 300));
    assert_eq!(shown["revoke_reason"], "rotated");

    // Its end: the old one is revoked, the new one works on.
    app.set_now(rotated_at + 300);
    assert_eq!(verdict(&app, &old, "GET", USER).await, denied(401, "revoked"));
    assert_eq!(app.reason(&new, "GET", USER).await, "allowed");
    assert_eq!(show(&app, &app.admin, old_id).await["state"], "revoked");
    let reply = app.call("GET", &format!("{TOKENS}/self"), Some(&old), None).await;
    assert_eq!(reply.expect_error(401, "invalid_token")["reason"], "revoked");
}

async fn a_token_expires_at_its_expiry_second(backend: Backend) {
    let app = App::on(&backend).await;
    let token = legacy_api(&app, "alice", "2027-01-10").await;
    let id = own_id(&app, &token).await;
    let expires = at(2027, 1, 10, 0, 0, 0);

    app.set_now(expires - 1);
    assert_eq!(app.reason(&token, "GET", USER).await, "allowed");
    let shown = show(&app, &app.admin, id).await;
    assert_eq!((shown["state"].as_str(), shown["expires_at"].as_str()), (Some("active"), Some("2027-01-10")));

    app.set_now(expires);
    assert_eq!(verdict(&app, &token, "GET", USER).await, denied(401, "expired"));
    assert_eq!(show(&app, &app.admin, id).await["state"], "expired");
    let reply = app.call("GET", &format!("{TOKENS}/self"), Some(&token), None).await;
    assert_eq!(reply.expect_error(401, "invalid_token")["reason"], "expired");
    // An expired token cannot rotate itself back to life.
    app.call("POST", SELF_ROTATE, Some(&token), None).await.expect_error(401, "invalid_token");
}

async fn expiry_notices_are_sent_once_at_60_30_7_and_0_days(backend: Backend) {
    let app = App::on(&backend).await;
    // Only this test's tokens come due: the demo tokens go (the admin's expires in a year).
    for token in [&app.alice, &app.bob, &app.dave] {
        let id = id_of(&app, token).await;
        app.call("DELETE", &format!("{TOKENS}/{id}"), Some(&app.admin), None).await.expect(204);
    }
    let kept = legacy_api(&app, "alice", "2027-06-01").await;
    let kept_id = own_id(&app, &kept).await;
    let rotating = legacy_api(&app, "bob", "2027-06-01").await;
    let rotating_id = own_id(&app, &rotating).await;
    let expires = at(2027, 6, 1, 0, 0, 0);
    let notices = |app: &App| {
        let shared = app.shared.clone();
        async move { jobs::send_expiry_notices(&shared).await.unwrap() }
    };

    app.set_now(expires - 60 * DAY - 1);
    assert_eq!(notices(&app).await, 0);
    app.set_now(expires - 60 * DAY);
    assert_eq!(notices(&app).await, 2);
    assert_eq!(notices(&app).await, 0, "a notice is sent once");
    let sent = audit(&app, &app.admin, &format!("type=token_expiry_notice&token_id={kept_id}")).await;
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert_eq!(sent[0]["details"]["days_before"], 60);
    assert_eq!(sent[0]["details"]["expires_at"], iso(expires));
    assert_eq!(sent[0]["user"], "alice");
    assert_eq!(sent[0]["at"], iso(expires - 60 * DAY));

    // One token is rotated: it gets no further notice (its successor expires much later).
    app.set_now(expires - 60 * DAY + 3600);
    let successor = app.call("POST", SELF_ROTATE, Some(&rotating), None).await.expect(200).json();
    let successor_id = successor["id"].as_u64().unwrap();
    assert_eq!(successor["expires_at"], "2027-10-04", "185 days from the rotation day");

    app.set_now(expires - 30 * DAY - 1);
    assert_eq!(notices(&app).await, 0);
    app.set_now(expires - 30 * DAY);
    assert_eq!(notices(&app).await, 1);
    assert_eq!(notices(&app).await, 0);
    app.set_now(expires - 7 * DAY - 1);
    assert_eq!(notices(&app).await, 0);
    app.set_now(expires - 7 * DAY);
    assert_eq!(notices(&app).await, 1);
    app.set_now(expires - 1);
    assert_eq!(notices(&app).await, 0);
    app.set_now(expires);
    assert_eq!(notices(&app).await, 1);
    assert_eq!(notices(&app).await, 0);
    app.set_now(expires + 10 * DAY);
    assert_eq!(notices(&app).await, 0);

    let days = |events: &[Value]| -> Vec<u64> {
        events.iter().map(|event| event["details"]["days_before"].as_u64().unwrap()).collect()
    };
    let sent = audit(&app, &app.admin, &format!("type=token_expiry_notice&token_id={kept_id}")).await;
    assert_eq!(days(&sent), vec![7, 30, 60], "newest first");
    let expired = audit(&app, &app.admin, &format!("type=token_expired&token_id={kept_id}")).await;
    assert_eq!(expired.len(), 1, "{expired:?}");
    assert_eq!(
        (expired[0]["at"].as_str(), expired[0]["details"]["days_before"].as_u64()),
        (Some(&*iso(expires)), Some(0))
    );
    let rotated = audit(&app, &app.admin, &format!("type=token_expiry_notice&token_id={rotating_id}")).await;
    assert_eq!(days(&rotated), vec![60], "only the notice sent before its rotation");
    assert!(audit(&app, &app.admin, &format!("type=token_expired&token_id={rotating_id}")).await.is_empty());
    assert!(audit(&app, &app.admin, &format!("token_id={successor_id}&type=token_expiry_notice")).await.is_empty());
}

async fn presenting_a_rotated_token_for_rotation_revokes_its_family(backend: Backend) {
    let app = App::on(&backend).await;
    // Without a grace period: the first secret is rotated twice; the middle one comes back.
    let first = app.api_token_for("alice").await;
    let first_id = own_id(&app, &first).await;
    let second = app.call("POST", SELF_ROTATE, Some(&first), None).await.expect(200).json();
    let (second, second_id) = (second["token"].as_str().unwrap().to_owned(), second["id"].as_u64().unwrap());
    let third = app.call("POST", SELF_ROTATE, Some(&second), None).await.expect(200).json();
    let (third, third_id) = (third["token"].as_str().unwrap().to_owned(), third["id"].as_u64().unwrap());
    assert_eq!(app.reason(&third, "GET", USER).await, "allowed");

    let reply = app.call("POST", SELF_ROTATE, Some(&second), None).await;
    assert_eq!(reply.expect_error(401, "invalid_token")["reason"], "reuse_detected");
    assert_eq!(verdict(&app, &third, "GET", USER).await, denied(401, "revoked"));
    let shown = show(&app, &app.admin, third_id).await;
    assert_eq!((shown["state"].as_str(), shown["revoke_reason"].as_str()), (Some("revoked"), Some("reuse_detected")));
    // The already rotated ones keep their reason.
    assert_eq!(show(&app, &app.admin, first_id).await["revoke_reason"], "rotated");
    assert_eq!(show(&app, &app.admin, second_id).await["revoke_reason"], "rotated");
    let events = audit(&app, &app.admin, "type=reuse_detected").await;
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["token_id"], third_id);
    assert_eq!(events[0]["details"]["reason"], "reuse_detected");
    assert_eq!(events[0]["details"]["presented_token_id"], second_id);
    assert_eq!(events[0]["details"]["family_id"], first_id);
    // Nothing else was touched.
    assert_eq!(app.reason(&app.dave, "GET", USER).await, "allowed");

    // With a grace period, through `/{id}/rotate`: the old secret still works, and still may
    // not rotate again; both of the family are revoked at once.
    put_settings(&app, &app.admin, json!({ "rotation_grace_seconds": 600 })).await;
    let old = app.api_token_for("bob").await;
    let old_id = own_id(&app, &old).await;
    let new = app.call("POST", SELF_ROTATE, Some(&old), None).await.expect(200).json();
    let (new, new_id) = (new["token"].as_str().unwrap().to_owned(), new["id"].as_u64().unwrap());
    app.set_now(start() + 60);
    assert_eq!(app.reason(&old, "GET", USER).await, "allowed");
    let reply = app.call("POST", &format!("{TOKENS}/{new_id}/rotate"), Some(&old), None).await;
    assert_eq!(reply.expect_error(401, "invalid_token")["reason"], "reuse_detected");
    assert_eq!(verdict(&app, &old, "GET", USER).await, denied(401, "revoked"));
    assert_eq!(verdict(&app, &new, "GET", USER).await, denied(401, "revoked"));
    for id in [old_id, new_id] {
        let shown = show(&app, &app.admin, id).await;
        assert_eq!(shown["revoke_reason"], "reuse_detected", "{shown}");
        assert_eq!(shown["revoked_at"], iso(start() + 60));
    }
    assert_eq!(audit(&app, &app.admin, "type=reuse_detected").await.len(), 3);

    // A token revoked for another reason is just invalid: no family is revoked.
    let gone = app.api_token_for("erin").await;
    let gone_id = own_id(&app, &gone).await;
    let sibling = app.call("POST", SELF_ROTATE, Some(&app.api_token_for("erin").await), None).await;
    let sibling = sibling.expect(200).json()["token"].as_str().unwrap().to_owned();
    app.call("DELETE", &format!("{TOKENS}/{gone_id}"), Some(&app.admin), None).await.expect(204);
    let reply = app.call("POST", SELF_ROTATE, Some(&gone), None).await;
    assert_eq!(reply.expect_error(401, "invalid_token")["reason"], "revoked");
    assert_eq!(app.reason(&sibling, "GET", USER).await, "allowed");
    assert_eq!(audit(&app, &app.admin, "type=reuse_detected").await.len(), 3);
}

async fn rotation_follows_the_legacy_policy_of_creation(backend: Backend) {
    let app = App::on(&backend).await;
    let alice_api = app.api_token_for("alice").await;
    let alice_id = own_id(&app, &alice_api).await;
    let dave_id = id_of(&app, &app.dave).await;
    let alice_fine = id_of(&app, &app.alice).await;
    let before = app.token_count().await;
    let refused = |reply: &crate::support::Reply| {
        let body = reply.expect_error(403, "legacy_disabled");
        assert!(body.get("token").is_none(), "{body}");
    };

    // Legacy tokens turned off: no rotation renews one, by itself or by another credential.
    put_settings(&app, &app.admin, json!({ "legacy_tokens_allowed": false })).await;
    refused(&app.call("POST", SELF_ROTATE, Some(&alice_api), None).await);
    refused(&app.call("POST", &format!("{TOKENS}/{alice_id}/rotate"), Some(&alice_api), None).await);
    refused(&app.call("POST", &format!("{TOKENS}/{dave_id}/rotate"), Some(&app.admin), None).await);
    assert_eq!(app.token_count().await, before, "a refused rotation made a token");
    // The old ones keep working (the policy stops creation, not use) and are not revoked.
    assert_eq!(app.reason(&alice_api, "GET", USER).await, "allowed");
    assert_eq!(app.reason(&app.dave, "GET", USER).await, "allowed");
    assert_eq!(show(&app, &app.admin, dave_id).await["state"], "active");
    // A fine-grained token still rotates.
    app.call("POST", &format!("{TOKENS}/{alice_fine}/rotate"), Some(&app.admin), None).await.expect(200);

    // The creation cut-off date, from its first second.
    put_settings(
        &app,
        &app.admin,
        json!({ "legacy_tokens_allowed": true, "legacy_creation_disabled_from": "2026-12-01" }),
    )
    .await;
    app.set_now(at(2026, 11, 30, 23, 59, 59));
    let rotated = app.call("POST", SELF_ROTATE, Some(&alice_api), None).await.expect(200).json();
    let rotated = rotated["token"].as_str().unwrap().to_owned();
    app.set_now(at(2026, 12, 1, 0, 0, 0));
    refused(&app.call("POST", SELF_ROTATE, Some(&rotated), None).await);
    refused(&app.call("POST", &format!("{TOKENS}/{dave_id}/rotate"), Some(&app.admin), None).await);
    assert_eq!(app.reason(&rotated, "GET", USER).await, "allowed");
}

async fn an_expired_token_is_not_rotated_back_to_life(backend: Backend) {
    let app = App::on(&backend).await;
    let alice_api = legacy_api(&app, "alice", "2027-06-30").await;
    let body = json!({ "name": "short", "expires_at": "2026-12-01", "scopes": ["read_api"] });
    let short = app.call("POST", OWN, Some(&alice_api), Some(&body)).await.expect(201).json();
    let (secret, id) = (short["token"].as_str().unwrap().to_owned(), short["id"].as_u64().unwrap());
    let rotate = format!("{TOKENS}/{id}/rotate");

    app.set_now(at(2026, 12, 1, 0, 0, 0));
    assert_eq!(verdict(&app, &secret, "GET", USER).await, denied(401, "expired"));
    let before = app.token_count().await;
    // Its owner's other token, and an administrator: 409, as for a revoked token.
    for by in [&alice_api, &app.admin] {
        let reply = app.call("POST", &rotate, Some(by), None).await;
        let body = reply.expect_error(409, "conflict");
        assert!(body["message"].as_str().unwrap().contains("expired"), "{body}");
        assert!(body.get("token").is_none(), "{body}");
    }
    assert_eq!(app.token_count().await, before, "a refused rotation made a token");
    assert_eq!(show(&app, &app.admin, id).await["state"], "expired");
    assert_eq!(verdict(&app, &secret, "GET", USER).await, denied(401, "expired"));

    // The second before it expires, it still rotates.
    let body = json!({ "name": "short", "expires_at": "2026-12-05", "scopes": ["read_api"] });
    let other = app.call("POST", OWN, Some(&alice_api), Some(&body)).await.expect(201).json();
    app.set_now(at(2026, 12, 4, 23, 59, 59));
    app.call("POST", &format!("{TOKENS}/{}/rotate", other["id"]), Some(&alice_api), None).await.expect(200);
}

async fn a_lowered_cap_blocks_at_use_until_the_token_rotates(backend: Backend) {
    let app = App::on(&backend).await;
    // Made under the default 365 days; the cap is then lowered to 90 days, counted from the
    // start of the creation day (2026-11-28 + 90 days = 2027-02-26).
    let at_cap = legacy_api(&app, "alice", "2027-02-26").await;
    let beyond = legacy_api(&app, "alice", "2027-02-27").await;
    let beyond_id = own_id(&app, &beyond).await;
    let at_cap_id = own_id(&app, &at_cap).await;
    let settings = put_settings(&app, &app.admin, json!({ "max_lifetime_days": 90 })).await;
    assert_eq!(settings["max_lifetime_days"], 90);

    // The bootstrap admin token (365 days) is blocked too, and cures itself by rotating.
    let reply = app.call("GET", SETTINGS, Some(&app.admin), None).await;
    assert_eq!(reply.expect_error(401, "invalid_token")["reason"], "lifetime_policy");
    let admin = app.call("POST", SELF_ROTATE, Some(&app.admin), None).await.expect(200).json();
    assert_eq!(admin["expires_at"], "2027-02-26");
    let admin = admin["token"].as_str().unwrap().to_owned();
    app.call("GET", SETTINGS, Some(&admin), None).await.expect(200);

    assert_eq!(app.reason(&at_cap, "GET", USER).await, "allowed");
    let decision = app.decide(&beyond, "GET", USER).await;
    assert_eq!((decision["status"].as_u64(), decision["reason"].as_str()), (Some(401), Some("lifetime_policy")));
    assert!(decision["message"].as_str().unwrap().contains("90"), "{decision}");
    let reply = app.call("GET", &format!("{TOKENS}/self"), Some(&beyond), None).await;
    assert_eq!(reply.expect_error(401, "invalid_token")["reason"], "lifetime_policy");

    let listed = app.call("GET", &format!("{TOKENS}?user=alice"), Some(&admin), None).await.expect(200).json();
    let listed = |id: u64| listed.as_array().unwrap().iter().find(|token| token["id"] == id).unwrap().clone();
    let blocked = listed(beyond_id);
    assert_eq!(
        (blocked["state"].as_str(), blocked["blocked_reason"].as_str()),
        (Some("blocked"), Some("lifetime_policy"))
    );
    let fine = listed(at_cap_id);
    assert_eq!(fine["state"], "active");
    assert!(fine.get("blocked_reason").is_none(), "{fine}");

    // Rotating it a day later gives it a compliant expiry: 90 days from the rotation day.
    app.set_now(start() + DAY);
    let rotated = app.call("POST", SELF_ROTATE, Some(&beyond), None).await.expect(200).json();
    assert_eq!(rotated["expires_at"], "2027-02-27");
    assert_eq!(rotated["state"], "active");
    let cured = rotated["token"].as_str().unwrap();
    assert_eq!(app.reason(cured, "GET", USER).await, "allowed");
    assert_eq!(verdict(&app, &beyond, "GET", USER).await, denied(401, "revoked"));

    // A token without an expiry is blocked once an expiry is required.
    put_settings(&app, &admin, json!({ "expiry_required": false })).await;
    let body = json!({ "name": "forever", "scopes": ["read_api"] });
    let reply = app.call("POST", "/api/v1/users/dave/personal_access_tokens", Some(&admin), Some(&body)).await;
    let forever = reply.expect(201).json();
    assert_eq!(forever["expires_at"], Value::Null);
    let forever = forever["token"].as_str().unwrap().to_owned();
    put_settings(&app, &admin, json!({ "expiry_required": true })).await;
    assert_eq!(verdict(&app, &forever, "GET", USER).await, denied(401, "lifetime_policy"));
}

/// Creation accepts a token without an expiry when none is required; the decision must not
/// then deny it as `lifetime_policy` on its first use.
async fn a_token_made_without_expiry_when_none_is_required_works(backend: Backend) {
    let app = App::on(&backend).await;
    put_settings(&app, &app.admin, json!({ "expiry_required": false })).await;
    let body = json!({ "name": "forever", "scopes": ["read_api"] });
    let reply = app.call("POST", "/api/v1/users/dave/personal_access_tokens", Some(&app.admin), Some(&body)).await;
    let forever = reply.expect(201).json();
    assert_eq!(forever["expires_at"], Value::Null);
    assert_eq!(forever["state"], "active", "{forever}");
    assert_eq!(app.reason(forever["token"].as_str().unwrap(), "GET", USER).await, "allowed");
}

async fn a_group_cap_applies_in_the_group_only(backend: Backend) {
    let app = App::on(&backend).await;
    // Made before the cap: 90 days (demo) and 214 days.
    let alice_api = app.api_token_for("alice").await;
    for bad in [json!({ "acme/nope": 7 }), json!({ "acme/platform": 0 }), json!({ "acme/platform": 401 })] {
        let body = json!({ "group_max_lifetime_days": bad });
        app.call("PUT", SETTINGS, Some(&app.admin), Some(&body)).await.expect_error(422, "invalid_request");
    }
    let settings = put_settings(&app, &app.admin, json!({ "group_max_lifetime_days": { "acme/platform": 7 } })).await;
    assert_eq!(settings["group_max_lifetime_days"], json!({ "acme/platform": 7 }));

    // In the group (and below it): 403 lifetime_policy; elsewhere the same tokens work.
    let decision = app.decide(&app.alice, "GET", API_REGISTRY).await;
    assert_eq!((decision["status"].as_u64(), decision["reason"].as_str()), (Some(403), Some("lifetime_policy")));
    assert!(decision["message"].as_str().unwrap().contains('7'), "{decision}");
    assert_eq!(verdict(&app, &app.bob, "GET", API_ISSUES).await, denied(403, "lifetime_policy"));
    let terraform = "/api/v4/projects/acme%2Fplatform%2Finfra%2Fterraform/issues";
    assert_eq!(verdict(&app, &app.bob, "GET", terraform).await, denied(403, "lifetime_policy"));
    assert_eq!(app.reason(&app.bob, "GET", "/api/v4/projects/acme%2Fweb%2Fsite/issues").await, "allowed");
    assert_eq!(app.reason(&app.bob, "GET", "/api/v4/projects/acme%2Fhandbook/issues").await, "allowed");
    assert_eq!(app.reason(&alice_api, "GET", USER).await, "allowed");
    assert_eq!(verdict(&app, &alice_api, "GET", API_ISSUES).await, denied(403, "lifetime_policy"));

    // Creation: beyond the group's cap is refused naming the group; at it, or outside the
    // group, it is made.
    let in_group = |expires: &str| {
        json!({ "name": "g", "expires_at": expires, "grants": [
            { "reach": "selected", "projects": ["acme/platform/api"], "permissions": { "issue": ["read"] } }
        ] })
    };
    let reply = app
        .call("POST", "/api/v1/users/alice/personal_access_tokens", Some(&app.admin), Some(&in_group("2026-12-06")))
        .await;
    let error = reply.expect_error(422, "invalid_token_request");
    let message = error["message"].as_str().unwrap();
    assert!(message.contains("acme/platform") && message.contains('7'), "{error}");
    let made = app.mint_for("alice", in_group("2026-12-05")).await;
    assert_eq!(app.reason(made["token"].as_str().unwrap(), "GET", API_ISSUES).await, "allowed");
    let outside = app
        .mint_for(
            "bob",
            json!({ "name": "web", "expires_at": "2027-02-01", "grants": [
                { "reach": "selected", "projects": ["acme/web/site"], "permissions": { "issue": ["read"] } }
            ] }),
        )
        .await;
    assert_eq!(
        app.reason(outside["token"].as_str().unwrap(), "GET", "/api/v4/projects/acme%2Fweb%2Fsite/issues").await,
        "allowed"
    );

    // Rotating itself gives a token reaching into the group the group's cap.
    let rotated = app.call("POST", SELF_ROTATE, Some(&alice_api), None).await.expect(200).json();
    assert_eq!(rotated["expires_at"], "2026-12-05");
    assert_eq!(app.reason(rotated["token"].as_str().unwrap(), "GET", API_ISSUES).await, "allowed");

    // Cleared, the old tokens work in the group again.
    put_settings(&app, &app.admin, json!({ "group_max_lifetime_days": {} })).await;
    assert_eq!(app.reason(&app.alice, "GET", API_REGISTRY).await, "allowed");
}

async fn legacy_creation_and_use_stop_at_the_first_second_of_their_dates(backend: Backend) {
    let app = App::on(&backend).await;
    let reply =
        app.call("PUT", SETTINGS, Some(&app.admin), Some(&json!({ "legacy_use_disabled_from": "2026-13-01" }))).await;
    reply.expect_error(422, "invalid_request");
    let settings = put_settings(&app, &app.admin, json!({ "legacy_creation_disabled_from": "2027-01-01" })).await;
    assert_eq!(settings["legacy_creation_disabled_from"], "2027-01-01");
    let settings = put_settings(&app, &app.admin, json!({ "legacy_creation_disabled_from": "" })).await;
    assert_eq!(settings["legacy_creation_disabled_from"], Value::Null);
    let settings = put_settings(
        &app,
        &app.admin,
        json!({ "legacy_creation_disabled_from": "2026-12-01", "legacy_use_disabled_from": "2026-12-03" }),
    )
    .await;
    assert_eq!(
        (settings["legacy_creation_disabled_from"].as_str(), settings["legacy_use_disabled_from"].as_str()),
        (Some("2026-12-01"), Some("2026-12-03"))
    );
    let legacy = json!({ "name": "l", "expires_at": "2027-01-01", "scopes": ["read_api"] });
    let fine = json!({ "name": "f", "expires_at": "2027-01-01", "grants": [
        { "reach": "user", "permissions": { "personal_access_token": ["read"] } }
    ] });
    let dave_tokens = "/api/v1/users/dave/personal_access_tokens";

    app.set_now(at(2026, 11, 30, 23, 59, 59));
    app.call("POST", dave_tokens, Some(&app.admin), Some(&legacy)).await.expect(201);
    app.set_now(at(2026, 12, 1, 0, 0, 0));
    let reply = app.call("POST", dave_tokens, Some(&app.admin), Some(&legacy)).await;
    reply.expect_error(403, "legacy_disabled");
    let dave_fine = app.call("POST", dave_tokens, Some(&app.admin), Some(&fine)).await.expect(201).json();
    let dave_fine = dave_fine["token"].as_str().unwrap().to_owned();

    app.set_now(at(2026, 12, 2, 23, 59, 59));
    assert_eq!(app.reason(&app.dave, "GET", USER).await, "allowed");
    app.call("GET", SETTINGS, Some(&app.admin), None).await.expect(200);
    app.set_now(at(2026, 12, 3, 0, 0, 0));
    assert_eq!(verdict(&app, &app.dave, "GET", USER).await, denied(401, "legacy_disabled"));
    assert_eq!(app.reason(&app.alice, "GET", API_REGISTRY).await, "allowed");
    // The admin's bootstrap token is legacy too; legacy tokens cannot rotate themselves out.
    let reply = app.call("GET", SETTINGS, Some(&app.admin), None).await;
    assert_eq!(reply.expect_error(401, "invalid_token")["reason"], "legacy_disabled");
    let reply = app.call("POST", SELF_ROTATE, Some(&app.admin), None).await;
    assert_eq!(reply.expect_error(401, "invalid_token")["reason"], "legacy_disabled");

    let listed = app.call("GET", TOKENS, Some(&dave_fine), None).await.expect(200).json();
    let listed = listed.as_array().unwrap();
    assert_eq!(listed.len(), 3, "{listed:?}");
    for token in listed {
        if token["kind"] == "legacy" {
            assert_eq!(
                (token["state"].as_str(), token["blocked_reason"].as_str()),
                (Some("blocked"), Some("legacy_disabled"))
            );
        } else {
            assert_eq!(token["state"], "active", "{token}");
            assert!(token.get("blocked_reason").is_none(), "{token}");
        }
    }
}

async fn a_leak_report_revokes_valid_tokens_and_says_nothing(backend: Backend) {
    let app = App::on(&backend).await;
    let (alice_id, bob_id) = (id_of(&app, &app.alice).await, id_of(&app, &app.bob).await);
    let mut tampered = app.dave.clone();
    let last = tampered.pop().unwrap();
    tampered.push(if last == 'a' { 'b' } else { 'a' });
    let leak_url = "https://github.com/acme/leaky/blob/main/.env";

    let valid = json!([app.alice, { "token": app.bob, "url": leak_url, "source": "github" }]);
    let invalid = json!([tampered, { "token": never_issued(&app), "url": leak_url }]);
    let reporter = "192.0.2.44";
    let first = app.call_raw_from(reporter, "POST", LEAK, serde_json::to_vec(&valid).unwrap()).await;
    first.expect(202);
    let second = app.call_raw_from(reporter, "POST", LEAK, serde_json::to_vec(&invalid).unwrap()).await;
    second.expect(202);
    assert_eq!(first.body, second.body, "the answer does not say which were valid");
    assert_eq!(first.json()["received"], 2);

    assert_eq!(verdict(&app, &app.alice, "GET", API_REGISTRY).await, denied(401, "revoked"));
    assert_eq!(verdict(&app, &app.bob, "GET", API_ISSUES).await, denied(401, "revoked"));
    assert_eq!(app.reason(&app.dave, "GET", USER).await, "allowed");
    for id in [alice_id, bob_id] {
        let shown = show(&app, &app.admin, id).await;
        assert_eq!((shown["state"].as_str(), shown["revoke_reason"].as_str()), (Some("revoked"), Some("leaked")));
    }
    let events = audit(&app, &app.admin, "type=leak_reported").await;
    assert_eq!(events.len(), 2, "{events:?}");
    let bob_event = events.iter().find(|event| event["token_id"] == bob_id).unwrap();
    assert_eq!(bob_event["details"]["location"], leak_url);
    assert_eq!(bob_event["details"]["reason"], "leaked");
    assert_eq!(bob_event["details"]["reporter_ip"], reporter);
    assert_eq!(bob_event["user"], "bob");
    assert!(events.iter().any(|event| event["token_id"] == alice_id));

    // Reported again: the same answer, nothing more revoked or recorded.
    let again = app.call("POST", LEAK, None, Some(&valid)).await;
    assert_eq!((again.status.as_u16(), &again.body), (202, &first.body));
    assert_eq!(audit(&app, &app.admin, "type=leak_reported").await.len(), 2);

    // `{"tokens": [...]}`, with surrounding whitespace.
    let reply = app.call("POST", LEAK, None, Some(&json!({ "tokens": [format!(" {} ", app.dave)] }))).await;
    assert_eq!(reply.expect(202).json()["received"], 1);
    assert_eq!(verdict(&app, &app.dave, "GET", USER).await, denied(401, "revoked"));
    app.call("GET", SETTINGS, Some(&app.admin), None).await.expect(200);

    // At most 1000 strings; anything but the documented shapes is 422.
    let many = |count: usize| Value::Array(vec![Value::from("pgfgt-x"); count]);
    let reply = app.call("POST", LEAK, None, Some(&many(1000))).await;
    assert_eq!(reply.expect(202).json()["received"], 1000);
    app.call("POST", LEAK, None, Some(&many(1001))).await.expect_error(422, "invalid_request");
    for body in ["[", "", "\"pgfgt-x\"", "{\"token\": \"pgfgt-x\"}", "[1, 2]", "{\"tokens\": \"pgfgt-x\"}"] {
        let reply = app.call_raw("POST", LEAK, None, body).await;
        reply.expect_error(422, "invalid_request");
    }
}

async fn leak_reports_are_rate_limited_per_client_address(backend: Backend) {
    let app = App::on(&backend).await;
    let (limited, other) = ("198.51.100.7", "198.51.100.8");
    for _ in 0..30 {
        app.call_raw_from(limited, "POST", LEAK, "[\"pgfgt-nope\"]").await.expect(202);
    }
    // The 31st is refused before it is read: the valid token in it stays valid.
    let body = serde_json::to_vec(&json!([app.alice])).unwrap();
    let reply = app.call_raw_from(limited, "POST", LEAK, body.clone()).await;
    reply.expect_error(429, "rate_limited");
    let retry: u64 = reply.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=2).contains(&retry), "30 a minute: one more within 2 s, got {retry}");
    assert_eq!(app.reason(&app.alice, "GET", API_REGISTRY).await, "allowed");

    // Another address is not affected, nor is the trusted proxy's own bucket.
    let reply = app.call_raw_from(other, "POST", LEAK, body).await;
    assert_eq!(reply.expect(202).json()["received"], 1);
    assert_eq!(verdict(&app, &app.alice, "GET", API_REGISTRY).await, denied(401, "revoked"));
    app.call_raw_from("127.0.0.1", "POST", LEAK, "[\"pgfgt-nope\"]").await.expect(202);
    app.call_raw_from(limited, "POST", LEAK, "[]").await.expect_error(429, "rate_limited");
}

async fn token_lookup_names_a_token_without_revoking_it(backend: Backend) {
    let app = App::on(&backend).await;
    let alice_id = id_of(&app, &app.alice).await;
    let found = app.call("POST", LOOKUP, Some(&app.admin), Some(&json!({ "token": app.alice }))).await;
    let found = found.expect(200);
    assert!(!found.text().contains(&app.alice), "the secret is shown: {}", found.text());
    let found = found.json();
    assert_eq!((found["id"].as_u64(), found["user"].as_str()), (Some(alice_id), Some("alice")));
    assert_eq!(found["state"], "active");
    assert!(found.get("token").is_none(), "{found}");
    assert_eq!(app.reason(&app.alice, "GET", API_REGISTRY).await, "allowed");

    let unknown = json!({ "token": never_issued(&app) });
    app.call("POST", LOOKUP, Some(&app.admin), Some(&unknown)).await.expect_error(404, "not_found");
    for malformed in ["pgfgt-garbage", "hello", ""] {
        let body = json!({ "token": malformed });
        app.call("POST", LOOKUP, Some(&app.admin), Some(&body)).await.expect_error(422, "invalid_request");
    }
    app.call("POST", LOOKUP, Some(&app.admin), Some(&json!({ "secret": app.alice })))
        .await
        .expect_error(422, "invalid_request");
    // Administrators only.
    let alice_api = app.api_token_for("alice").await;
    let reply = app.call("POST", LOOKUP, Some(&alice_api), Some(&json!({ "token": app.bob }))).await;
    reply.expect(403);
    app.call("POST", LOOKUP, None, Some(&json!({ "token": app.bob }))).await.expect_error(401, "invalid_token");

    let events = audit(&app, &app.admin, "type=token_looked_up").await;
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!((events[0]["token_id"].as_u64(), events[0]["actor"].as_str()), (Some(alice_id), Some("admin")));

    // A revoked token is still found, and shown revoked.
    app.call("DELETE", &format!("{TOKENS}/{alice_id}"), Some(&app.admin), None).await.expect(204);
    let found = app.call("POST", LOOKUP, Some(&app.admin), Some(&json!({ "token": app.alice }))).await;
    assert_eq!(found.expect(200).json()["state"], "revoked");
}

async fn audit_events_are_visible_to_admins_and_owners_and_page(backend: Backend) {
    let app = App::on(&backend).await;
    let alice_api = app.api_token_for("alice").await;
    app.set_now(start() + 3600);
    let own = json!({ "name": "own", "expires_at": "2027-01-01", "scopes": ["read_api"] });
    app.call("POST", OWN, Some(&alice_api), Some(&own)).await.expect(201);
    app.set_now(start() + 7200);
    let bob_api = app.api_token_for("bob").await;
    let bob_api_id = own_id(&app, &bob_api).await;

    // Administrators: everything, newest first.
    let all = audit(&app, &app.admin, "").await;
    let ids: Vec<i64> = all.iter().map(|event| event["id"].as_i64().unwrap()).collect();
    assert!(ids.windows(2).all(|pair| pair[0] > pair[1]), "{ids:?}");
    assert!(all.iter().any(|event| event["user"] == "bob"));
    assert!(all.iter().any(|event| event["type"] == "directory_imported"));

    let created = audit(&app, &app.admin, "type=token_created").await;
    // The admin's, three demo tokens, alice_api, alice's own, bob_api.
    assert_eq!(created.len(), 7, "{created:?}");
    let alices = audit(&app, &app.admin, "user=alice&type=token_created").await;
    assert_eq!(alices.len(), 3, "{alices:?}");
    assert!(alices.iter().all(|event| event["user"] == "alice" || event["actor"] == "alice"), "{alices:?}");
    let by_token = audit(&app, &app.admin, &format!("token_id={bob_api_id}")).await;
    assert_eq!(by_token.len(), 1, "{by_token:?}");
    assert_eq!((by_token[0]["type"].as_str(), by_token[0]["actor"].as_str()), (Some("token_created"), Some("admin")));
    let window = audit(&app, &app.admin, &format!("after={}&before={}", start() + 3600, start() + 7200)).await;
    assert_eq!(window.len(), 1, "{window:?}");
    assert_eq!((window[0]["at"].as_str(), window[0]["actor"].as_str()), (Some(&*iso(start() + 3600)), Some("alice")));
    assert_eq!(audit(&app, &app.admin, "after=2026-11-29").await.len(), 0);
    assert_eq!(audit(&app, &app.admin, "before=2026-11-28").await.len(), 0);
    for bad in ["limit=0", "limit=1001", "after=yesterday", "before=2026-02-30"] {
        let reply = app.call("GET", &format!("{AUDIT}?{bad}"), Some(&app.admin), None).await;
        reply.expect_error(422, "invalid_request");
    }
    app.call("GET", &format!("{AUDIT}?user=nobody"), Some(&app.admin), None).await.expect_error(404, "not_found");

    // Paging: `next_before_id` until the last page, which has none.
    let mut paged = Vec::new();
    let mut query = "type=token_created&limit=2".to_owned();
    let mut pages = 0;
    loop {
        let page = audit_page(&app, &app.admin, &query).await;
        pages += 1;
        let events = page["events"].as_array().unwrap();
        paged.extend(events.iter().cloned());
        match page.get("next_before_id") {
            Some(next) => {
                assert_eq!(events.len(), 2);
                assert_eq!(next, &events[1]["id"]);
                query = format!("type=token_created&limit=2&before_id={next}");
            }
            None => break,
        }
    }
    assert_eq!((pages, &paged), (4, &created));
    // A last page that is exactly full has no next page either.
    let page = audit_page(&app, &app.admin, "type=token_created&limit=7").await;
    assert!(page.get("next_before_id").is_none(), "{page}");
    let page = audit_page(&app, &app.admin, "type=token_created&limit=6").await;
    assert_eq!(page["next_before_id"], created[5]["id"]);

    // Users: their own events only.
    let mine = app.call("GET", AUDIT, Some(&alice_api), None).await.expect(200).json();
    let mine = mine["events"].as_array().unwrap();
    assert!(!mine.is_empty());
    assert!(mine.iter().all(|event| event["user"] == "alice" || event["actor"] == "alice"), "{mine:?}");
    assert!(mine.iter().any(|event| event["actor"] == "alice" && event["type"] == "token_created"));
    let named = app.call("GET", &format!("{AUDIT}?user=alice"), Some(&alice_api), None).await.expect(200).json();
    assert_eq!(named["events"].as_array().unwrap(), mine);
    let reply = app.call("GET", &format!("{AUDIT}?user=bob"), Some(&alice_api), None).await;
    reply.expect_error(403, "admin_only");
    let reply = app.call("GET", &format!("{AUDIT}?token_id={bob_api_id}"), Some(&alice_api), None).await;
    assert_eq!(reply.expect(200).json()["events"], json!([]));
    // A token that may not read tokens may not read events; no token at all is 401.
    app.call("GET", AUDIT, Some(&app.alice), None).await.expect(403);
    app.call("GET", AUDIT, None, None).await.expect_error(401, "invalid_token");
}

async fn blocking_unblocking_and_deleting_an_owner(backend: Backend) {
    let app = App::on(&backend).await;
    let alice_api = app.api_token_for("alice").await;
    let gone = app.api_token_for("alice").await;
    let gone_id = own_id(&app, &gone).await;
    app.call("DELETE", &format!("{TOKENS}/{gone_id}"), Some(&app.admin), None).await.expect(204);
    let alice_tokens = format!("{TOKENS}?user=alice");

    app.call("POST", "/api/v1/admin/users/alice/block", Some(&app.admin), None).await.expect(204);
    assert_eq!(verdict(&app, &app.alice, "GET", API_REGISTRY).await, denied(401, "owner_blocked"));
    assert_eq!(verdict(&app, &alice_api, "GET", USER).await, denied(401, "owner_blocked"));
    let listed = app.call("GET", &alice_tokens, Some(&app.admin), None).await.expect(200).json();
    for token in listed.as_array().unwrap() {
        if token["id"] == gone_id {
            assert_eq!(token["state"], "revoked", "{token}");
            assert!(token.get("blocked_reason").is_none(), "{token}");
        } else {
            assert_eq!(
                (token["state"].as_str(), token["blocked_reason"].as_str()),
                (Some("blocked"), Some("owner_blocked"))
            );
        }
    }
    assert_eq!(app.reason(&app.bob, "GET", API_ISSUES).await, "allowed");

    app.call("POST", "/api/v1/admin/users/alice/unblock", Some(&app.admin), None).await.expect(204);
    assert_eq!(app.reason(&app.alice, "GET", API_REGISTRY).await, "allowed");
    assert_eq!(app.reason(&alice_api, "GET", USER).await, "allowed");
    let listed = app.call("GET", &alice_tokens, Some(&app.admin), None).await.json();
    let active = listed.as_array().unwrap().iter().filter(|token| token["state"] == "active").count();
    assert_eq!(active, 2, "{listed}");

    app.set_now(start() + 60);
    app.call("DELETE", "/api/v1/admin/users/alice", Some(&app.admin), None).await.expect(204);
    assert_eq!(verdict(&app, &app.alice, "GET", API_REGISTRY).await, denied(401, "revoked"));
    assert_eq!(verdict(&app, &alice_api, "GET", USER).await, denied(401, "revoked"));
    let listed = app.call("GET", &alice_tokens, Some(&app.admin), None).await.expect(200).json();
    for token in listed.as_array().unwrap() {
        let expected = if token["id"] == gone_id { "revoked_by_admin" } else { "owner_deleted" };
        assert_eq!((token["state"].as_str(), token["revoke_reason"].as_str()), (Some("revoked"), Some(expected)));
    }
    let revoked = audit(&app, &app.admin, &format!("type=token_revoked&after={}", start() + 60)).await;
    assert_eq!(revoked.len(), 2, "{revoked:?}");
    assert!(revoked.iter().all(|event| event["details"]["reason"] == "owner_deleted" && event["user"] == "alice"));
    for (event, count) in [("user_blocked", 1), ("user_unblocked", 1), ("user_deleted", 1)] {
        let found = audit(&app, &app.admin, &format!("type={event}&user=alice")).await;
        assert_eq!(found.len(), count, "{event}: {found:?}");
    }
}

async fn inactive_tokens_are_revoked_once(backend: Backend) {
    let app = App::on(&backend).await;
    let shared = app.shared.clone();
    let (alice_id, bob_id, dave_id, admin_id) = (
        own_id(&app, &app.alice).await,
        own_id(&app, &app.bob).await,
        own_id(&app, &app.dave).await,
        own_id(&app, &app.admin).await,
    );
    // Managing tokens is a use too: all four were used at creation.
    assert_eq!(jobs::flush_usage(&shared).await.unwrap(), 4);
    // Off by default, whatever the clock says.
    app.set_now(start() + 300 * DAY);
    assert_eq!(jobs::revoke_inactive(&shared).await.unwrap(), 0);
    app.set_now(start());
    app.call("PUT", SETTINGS, Some(&app.admin), Some(&json!({ "inactivity_days": 3651 })))
        .await
        .expect_error(422, "invalid_request");
    assert_eq!(put_settings(&app, &app.admin, json!({ "inactivity_days": 30 })).await["inactivity_days"], 30);

    // alice's token and the admin's are used on day 5; the admin's again on day 20.
    app.set_now(start() + 5 * DAY);
    assert_eq!(app.reason(&app.alice, "GET", API_REGISTRY).await, "allowed");
    assert_eq!(app.reason(&app.admin, "GET", USER).await, "allowed");
    assert_eq!(jobs::flush_usage(&shared).await.unwrap(), 2);
    app.set_now(start() + 20 * DAY);
    assert_eq!(app.reason(&app.admin, "GET", USER).await, "allowed");
    assert_eq!(jobs::flush_usage(&shared).await.unwrap(), 1);

    // Unused since creation: revoked one second after 30 days, not at 30 days.
    app.set_now(start() + 30 * DAY);
    assert_eq!(jobs::revoke_inactive(&shared).await.unwrap(), 0);
    app.set_now(start() + 30 * DAY + 1);
    assert_eq!(jobs::revoke_inactive(&shared).await.unwrap(), 2);
    assert_eq!(jobs::revoke_inactive(&shared).await.unwrap(), 0, "the second run revokes nothing more");
    assert_eq!(verdict(&app, &app.bob, "GET", API_ISSUES).await, denied(401, "revoked"));
    assert_eq!(verdict(&app, &app.dave, "GET", USER).await, denied(401, "revoked"));
    for id in [bob_id, dave_id] {
        let shown = show(&app, &app.admin, id).await;
        assert_eq!((shown["state"].as_str(), shown["revoke_reason"].as_str()), (Some("revoked"), Some("inactive")));
        assert_eq!(shown["revoked_at"], iso(start() + 30 * DAY + 1));
    }
    assert_eq!(app.reason(&app.alice, "GET", API_REGISTRY).await, "allowed");

    // Last used on day 5: revoked one second after day 35. The admin's (day 20) stays.
    app.set_now(start() + 35 * DAY);
    assert_eq!(jobs::revoke_inactive(&shared).await.unwrap(), 0);
    app.set_now(start() + 35 * DAY + 1);
    assert_eq!(jobs::revoke_inactive(&shared).await.unwrap(), 1);
    assert_eq!(jobs::revoke_inactive(&shared).await.unwrap(), 0);
    assert_eq!(show(&app, &app.admin, alice_id).await["revoke_reason"], "inactive");
    assert_eq!(show(&app, &app.admin, admin_id).await["state"], "active");

    // One audit event per revoked token, never two.
    let revoked = audit(&app, &app.admin, "type=token_revoked").await;
    let mut ids: Vec<u64> = revoked.iter().map(|event| event["token_id"].as_u64().unwrap()).collect();
    ids.sort_unstable();
    let mut expected = vec![alice_id, bob_id, dave_id];
    expected.sort_unstable();
    assert_eq!(ids, expected, "{revoked:?}");
    assert!(
        revoked
            .iter()
            .all(|event| event["details"]["reason"] == "inactive" && event["details"]["inactivity_days"] == 30)
    );

    // Turned off again: nothing more is revoked.
    put_settings(&app, &app.admin, json!({ "inactivity_days": 0 })).await;
    app.set_now(start() + 300 * DAY);
    assert_eq!(jobs::revoke_inactive(&shared).await.unwrap(), 0);
}

async fn usage_is_flushed_with_addresses_newest_first(backend: Backend) {
    let app = App::on(&backend).await;
    let shared = app.shared.clone();
    let id = own_id(&app, &app.alice).await;
    assert_eq!(jobs::flush_usage(&shared).await.unwrap(), 1, "a management call is a use");
    // The admin's own uses (each `show`) are drained so that each count below is alice's alone.
    let show = |id| {
        let (app, shared) = (&app, &shared);
        async move {
            let shown = show(app, &app.admin, id).await;
            assert_eq!(jobs::flush_usage(shared).await.unwrap(), 1, "the admin's use");
            shown
        }
    };
    let shown = show(id).await;
    // The management call was a use from the client's address (the test router's peer).
    assert_eq!(
        (shown["last_used_at"].clone(), shown["last_ips"].clone()),
        (json!(iso(start())), json!([LOOPBACK_PEER]))
    );
    let use_from = |ip: &'static str, path: &str| {
        let body = json!({ "token": app.alice, "method": "GET", "path": path, "client_ip": ip });
        let app = &app;
        async move {
            let reply = app.call("POST", "/api/v1/decide", None, Some(&body)).await;
            reply.expect(200).json()["reason"].as_str().unwrap().to_owned()
        }
    };

    app.set_now(start() + 60);
    assert_eq!(use_from("203.0.113.9", API_REGISTRY).await, "allowed");
    assert_eq!(jobs::flush_usage(&shared).await.unwrap(), 1);
    app.set_now(start() + 120);
    assert_eq!(use_from("203.0.113.10", API_REGISTRY).await, "allowed");
    // A denied request is not a use.
    app.set_now(start() + 180);
    assert_eq!(use_from("203.0.113.50", API_ISSUES).await, "insufficient_scope");
    assert_eq!(jobs::flush_usage(&shared).await.unwrap(), 1);
    let shown = show(id).await;
    assert_eq!(shown["last_used_at"], iso(start() + 120));
    assert_eq!(shown["last_ips"], json!(["203.0.113.10", "203.0.113.9", LOOPBACK_PEER]));

    // A known address again: it moves to the front, and no new-address event.
    app.set_now(start() + 240);
    assert_eq!(use_from("203.0.113.9", API_REGISTRY).await, "allowed");
    assert_eq!(jobs::flush_usage(&shared).await.unwrap(), 1);
    assert_eq!(jobs::flush_usage(&shared).await.unwrap(), 0);
    let shown = show(id).await;
    assert_eq!(shown["last_used_at"], iso(start() + 240));
    assert_eq!(shown["last_ips"], json!(["203.0.113.9", "203.0.113.10", LOOPBACK_PEER]));

    // The five newest addresses are kept.
    for (index, ip) in ["2001:db8::1", "198.51.100.1", "198.51.100.2", "198.51.100.3"].into_iter().enumerate() {
        app.set_now(start() + 300 + 60 * i64::try_from(index).unwrap());
        assert_eq!(use_from(ip, API_REGISTRY).await, "allowed");
        jobs::flush_usage(&shared).await.unwrap();
    }
    let shown = show(id).await;
    assert_eq!(
        shown["last_ips"],
        json!(["198.51.100.3", "198.51.100.2", "198.51.100.1", "2001:db8::1", "203.0.113.9"])
    );
    let listed = app.call("GET", &format!("{TOKENS}?user=alice"), Some(&app.admin), None).await.json();
    let listed = listed.as_array().unwrap().iter().find(|token| token["id"] == id).unwrap().clone();
    assert_eq!(listed["last_ips"], shown["last_ips"]);

    // One new-address event per address, ever.
    let events = audit(&app, &app.admin, &format!("type=token_used_from_new_ip&token_id={id}")).await;
    let ips: Vec<&str> = events.iter().map(|event| event["details"]["ip"].as_str().unwrap()).collect();
    assert_eq!(
        ips,
        ["198.51.100.3", "198.51.100.2", "198.51.100.1", "2001:db8::1", "203.0.113.10", "203.0.113.9", LOOPBACK_PEER]
    );
    assert_eq!(events.last().unwrap()["at"], iso(start()));
    assert!(events.iter().all(|event| event["user"] == "alice"));
}

/// Several addresses used between two flushes keep their order, newest first (the first is
/// the management call's, from the test router's peer).
async fn addresses_of_one_flush_are_listed_newest_first(backend: Backend) {
    let app = App::on(&backend).await;
    let id = own_id(&app, &app.alice).await;
    for (offset, ip) in [(60, "203.0.113.10"), (120, "203.0.113.9")] {
        app.set_now(start() + offset);
        let body = json!({ "token": app.alice, "method": "GET", "path": API_REGISTRY, "client_ip": ip });
        app.call("POST", "/api/v1/decide", None, Some(&body)).await.expect(200);
    }
    assert_eq!(jobs::flush_usage(&app.shared).await.unwrap(), 1);
    let shown = show(&app, &app.admin, id).await;
    assert_eq!(shown["last_used_at"], iso(start() + 120));
    assert_eq!(shown["last_ips"], json!(["203.0.113.9", "203.0.113.10", LOOPBACK_PEER]));
}

/// The flush at shutdown runs while the periodic one may be writing what it took: it must
/// wait for that write, or the process ends with the use half-written (a lost use).
async fn a_flush_waits_for_the_flush_in_progress(backend: Backend) {
    let app = App::on(&backend).await;
    let id = own_id(&app, &app.alice).await;
    assert_eq!(jobs::flush_usage(&app.shared).await.unwrap(), 1);
    app.set_now(start() + 60);
    assert_eq!(app.reason(&app.alice, "GET", API_REGISTRY).await, "allowed");

    // The first flush takes the use and waits on the store; the second starts meanwhile.
    let mut first = std::pin::pin!(jobs::flush_usage(&app.shared));
    assert!(poll_once(&mut first).await.is_pending(), "the store answered without waiting");
    let mut second = std::pin::pin!(jobs::flush_usage(&app.shared));
    assert!(poll_once(&mut second).await.is_pending(), "the second flush did not wait for the first");
    let (first, second) = tokio::join!(first, second);
    assert_eq!((first.unwrap(), second.unwrap()), (1, 0));
    assert_eq!(show(&app, &app.admin, id).await["last_used_at"], iso(start() + 60));
}

/// Polls `future` once: its answer, or `Pending` if it waits.
async fn poll_once<F: Future + Unpin>(future: &mut F) -> std::task::Poll<F::Output> {
    std::future::poll_fn(|context| std::task::Poll::Ready(std::pin::Pin::new(&mut *future).poll(context))).await
}

/// One request a receiver got.
#[derive(Debug, Clone)]
struct Received {
    request_line: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Received {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(key, _)| key.eq_ignore_ascii_case(name)).map(|(_, value)| value.as_str())
    }
}

/// A minimal HTTP/1.1 receiver on 127.0.0.1: answers each request with the next status of
/// `statuses` (200 once they run out) and closes the connection.
#[derive(Debug)]
struct Receiver {
    address: SocketAddr,
    received: Arc<Mutex<Vec<Received>>>,
    task: tokio::task::JoinHandle<()>,
}

async fn read_more(stream: &TcpStream, buffer: &mut Vec<u8>) -> bool {
    let mut chunk = [0_u8; 8192];
    loop {
        if stream.readable().await.is_err() {
            return false;
        }
        match stream.try_read(&mut chunk) {
            Ok(0) => return false,
            Ok(read) => {
                buffer.extend_from_slice(&chunk[..read]);
                return true;
            }
            Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(_) => return false,
        }
    }
}

async fn write_all(stream: &TcpStream, mut bytes: &[u8]) {
    while !bytes.is_empty() {
        if stream.writable().await.is_err() {
            return;
        }
        match stream.try_write(bytes) {
            Ok(written) => bytes = &bytes[written..],
            Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(_) => return,
        }
    }
}

/// Reads one request; `None` if the connection ends first.
async fn read_request(stream: &TcpStream) -> Option<Received> {
    let mut buffer = Vec::new();
    let head_end = loop {
        if let Some(position) = buffer.windows(4).position(|window| window == b"\r\n\r\n") {
            break position + 4;
        }
        if !read_more(stream, &mut buffer).await {
            return None;
        }
    };
    let head = String::from_utf8_lossy(&buffer[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let request_line = lines.next()?.to_owned();
    let headers: Vec<(String, String)> = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.trim().to_ascii_lowercase(), value.trim().to_owned()))
        .collect();
    let length: usize =
        headers.iter().find(|(name, _)| name == "content-length").and_then(|(_, value)| value.parse().ok())?;
    if headers.iter().any(|(name, value)| name == "expect" && value.eq_ignore_ascii_case("100-continue")) {
        write_all(stream, b"HTTP/1.1 100 Continue\r\n\r\n").await;
    }
    while buffer.len() < head_end + length {
        if !read_more(stream, &mut buffer).await {
            return None;
        }
    }
    Some(Received { request_line, headers, body: buffer[head_end..head_end + length].to_vec() })
}

impl Receiver {
    async fn start(statuses: Vec<u16>) -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let received = Arc::new(Mutex::new(Vec::new()));
        let log = received.clone();
        let task = tokio::spawn(async move {
            let mut statuses = statuses.into_iter();
            while let Ok((stream, _)) = listener.accept().await {
                let Some(request) = read_request(&stream).await else { continue };
                let status = statuses.next().unwrap_or(200);
                log.lock().unwrap_or_else(PoisonError::into_inner).push(request);
                let reason = if status == 200 { "OK" } else { "Internal Server Error" };
                let response =
                    format!("HTTP/1.1 {status} {reason}\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok");
                write_all(&stream, response.as_bytes()).await;
            }
        });
        Receiver { address, received, task }
    }

    fn url(&self) -> String {
        format!("http://{}/hooks/patgate", self.address)
    }

    fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Whether `signature` is `sha256=` + hex HMAC-SHA256 under `secret` of `"{timestamp}.{body}"`.
fn signed(secret: &[u8], timestamp: &str, body: &[u8], signature: &str) -> bool {
    let Some(hex) = signature.strip_prefix("sha256=") else { return false };
    if hex.len() != 64 || !hex.bytes().all(|byte| byte.is_ascii_hexdigit() && !byte.is_ascii_uppercase()) {
        return false;
    }
    let tag: Vec<u8> = (0..64).step_by(2).map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap()).collect();
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(secret).unwrap();
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    mac.verify_slice(&tag).is_ok()
}

async fn webhooks_are_signed_retried_and_delivered_once(backend: Backend) {
    let receiver = Receiver::start(vec![500]).await;
    let secret = b"a webhook secret of 32 bytes ...";
    let target = WebhookTarget { url: receiver.url(), events: Vec::new() };
    let app = App::with_webhooks(&backend, vec![target], Some(secret)).await;
    let shared = app.shared.clone();
    let deliveries = |query: &'static str| {
        let app = &app;
        async move {
            let reply = app.call("GET", &format!("{DELIVERIES}{query}"), Some(&app.admin), None).await;
            reply.expect(200).json().as_array().unwrap().clone()
        }
    };

    // Creating users and tokens is not a lifecycle event: nothing is queued.
    assert!(deliveries("").await.is_empty());
    assert_eq!(jobs::deliver_webhooks(&shared).await.unwrap(), 0);
    assert!(receiver.received().is_empty());
    app.call("GET", DELIVERIES, Some(&app.alice), None).await.expect(403);

    let t0 = start() + 60;
    app.set_now(t0);
    let bob_id = id_of(&app, &app.bob).await;
    app.call("DELETE", &format!("{TOKENS}/{bob_id}"), Some(&app.admin), None).await.expect(204);
    let queued = deliveries("").await;
    assert_eq!(queued.len(), 1, "{queued:?}");
    let delivery = &queued[0];
    let delivery_id = delivery["id"].as_i64().unwrap();
    assert_eq!((delivery["event"].as_str(), delivery["url"].as_str()), (Some("token_revoked"), Some(&*receiver.url())));
    assert_eq!((delivery["attempts"].as_u64(), delivery["delivered_at"].clone()), (Some(0), Value::Null));
    assert_eq!(delivery["next_attempt_at"], iso(t0));
    assert_eq!(delivery["payload"]["token_id"], bob_id);
    assert_eq!(delivery["payload"]["event"], "token_revoked");
    assert_eq!(delivery["payload"]["id"], delivery["audit_event_id"]);

    // First attempt: the receiver answers 500; retried 10 s later, not before.
    assert_eq!(jobs::deliver_webhooks(&shared).await.unwrap(), 0);
    assert_eq!(receiver.received().len(), 1);
    let failed = deliveries("").await;
    let failed = &failed[0];
    assert_eq!((failed["attempts"].as_u64(), failed["last_status"].as_u64()), (Some(1), Some(500)));
    assert!(failed["last_error"].as_str().unwrap().contains("500"), "{failed}");
    assert_eq!(
        (failed["next_attempt_at"].as_str(), failed["delivered_at"].clone()),
        (Some(&*iso(t0 + 10)), Value::Null)
    );
    assert_eq!(deliveries("?pending=true").await.len(), 1);
    assert_eq!(jobs::deliver_webhooks(&shared).await.unwrap(), 0);
    app.set_now(t0 + 9);
    assert_eq!(jobs::deliver_webhooks(&shared).await.unwrap(), 0);
    assert_eq!(receiver.received().len(), 1, "not re-sent before its retry time");

    app.set_now(t0 + 10);
    assert_eq!(jobs::deliver_webhooks(&shared).await.unwrap(), 1);
    assert_eq!(receiver.received().len(), 2);
    assert_eq!(jobs::deliver_webhooks(&shared).await.unwrap(), 0);
    app.set_now(t0 + 3600);
    assert_eq!(jobs::deliver_webhooks(&shared).await.unwrap(), 0);
    let received = receiver.received();
    assert_eq!(received.len(), 2, "delivered exactly once after the failure");

    let done = deliveries("").await;
    let done = &done[0];
    assert_eq!((done["attempts"].as_u64(), done["last_status"].as_u64()), (Some(2), Some(200)));
    assert_eq!((done["last_error"].clone(), done["delivered_at"].as_str()), (Value::Null, Some(&*iso(t0 + 10))));
    assert!(deliveries("?pending=true").await.is_empty());

    // Both attempts: the same delivery, signed over their own timestamps.
    for (request, timestamp) in received.iter().zip([t0, t0 + 10]) {
        assert_eq!(request.request_line, "POST /hooks/patgate HTTP/1.1");
        assert_eq!(request.header("content-type"), Some("application/json"));
        assert_eq!(request.header("x-patgate-event"), Some("token_revoked"));
        assert_eq!(request.header("x-patgate-delivery"), Some(&*delivery_id.to_string()));
        assert_eq!(request.header("x-patgate-timestamp"), Some(&*timestamp.to_string()));
        let signature = request.header("x-patgate-signature").unwrap();
        assert!(signed(secret, &timestamp.to_string(), &request.body, signature), "bad signature {signature}");
        assert!(!signed(b"another secret of 32 bytes .....", &timestamp.to_string(), &request.body, signature));
        assert!(!signed(secret, &(timestamp + 1).to_string(), &request.body, signature));
        let body: Value = serde_json::from_slice(&request.body).unwrap();
        assert_eq!(body, done["payload"]);
    }
    assert_eq!(received[0].body, received[1].body, "a retry sends the same body");
}

/// A rotated token keeps working during its grace period; revoking it ends that at once.
async fn a_rotated_token_in_its_grace_period_can_be_revoked(backend: Backend) {
    let app = App::on(&backend).await;
    put_settings(&app, &app.admin, json!({ "rotation_grace_seconds": 600 })).await;
    let old = app.api_token_for("bob").await;
    let old_id = own_id(&app, &old).await;
    let new = app.call("POST", SELF_ROTATE, Some(&old), None).await.expect(200).json();
    let new = new["token"].as_str().unwrap().to_owned();
    app.set_now(start() + 60);
    assert_eq!(app.reason(&old, "GET", USER).await, "allowed", "the grace period");
    app.call("DELETE", &format!("{TOKENS}/{old_id}"), Some(&new), None).await.expect(204);
    assert_eq!(verdict(&app, &old, "GET", USER).await, denied(401, "revoked"));
    let shown = show(&app, &app.admin, old_id).await;
    assert_eq!(
        (shown["revoke_reason"].as_str(), shown["revoked_at"].as_str()),
        (Some("revoked_by_owner"), Some(iso(start() + 60).as_str()))
    );
    // Now it is revoked: a second revocation is a conflict, and the new token is untouched.
    app.call("DELETE", &format!("{TOKENS}/{old_id}"), Some(&new), None).await.expect_error(409, "conflict");
    assert_eq!(app.reason(&new, "GET", USER).await, "allowed");
}
