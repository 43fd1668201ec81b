//! Personal access tokens: create (shown once), list, show, self, rotate, revoke, expiry,
//! validation that changes nothing, and no escalation through a fine-grained token.

use serde_json::{Value, json};

use crate::support::{API_REGISTRY, App, Backend, Reply, at, on_both_backends};

const OWN: &str = "/api/v1/user/personal_access_tokens";
const TOKENS: &str = "/api/v1/personal_access_tokens";

on_both_backends!(
    names_and_descriptions_are_limited_in_characters,
    a_committed_write_answers_its_success_when_the_catch_up_fails,
);

fn ci_token_body() -> Value {
    json!({
        "name": "ci",
        "description": "pushes images",
        "expires_at": "2027-02-01",
        "grants": [
            {
                "reach": "selected",
                "projects": ["acme/platform/api"],
                "groups": ["acme/platform/infra"],
                "permissions": { "container_registry": ["create", "read"], "issue": ["read"] }
            },
            { "reach": "user", "permissions": { "user": ["read"] } }
        ]
    })
}

/// Asserts a body shows neither `secret` nor its stored digest.
#[track_caller]
fn assert_hides(app: &App, reply: &Reply, secret: &str) {
    let text = reply.text();
    assert!(!text.contains(secret), "the secret is shown again: {text}");
    let digest = app.digest_hex(secret);
    assert!(!text.to_ascii_lowercase().contains(&digest), "the digest is shown: {text}");
    assert!(!text.contains("digest"), "{text}");
}

fn find(list: &Value, id: u64) -> &Value {
    list.as_array().unwrap().iter().find(|token| token["id"] == id).unwrap()
}

#[tokio::test]
async fn a_token_is_shown_once_used_rotated_and_revoked() {
    let app = App::new().await;
    let alice_api = app.api_token_for("alice").await;

    // Create: 201, the secret once, the grants as written.
    let reply = app.call("POST", OWN, Some(&alice_api), Some(&ci_token_body())).await;
    let created = reply.expect(201).json();
    let secret = created["token"].as_str().unwrap().to_owned();
    let id = created["id"].as_u64().unwrap();
    assert!(secret.starts_with("pgfgt-"), "{secret}");
    assert_eq!(created["name"], "ci");
    assert_eq!(created["kind"], "fine_grained");
    assert_eq!(created["expires_at"], "2027-02-01");
    assert!(created["created_at"].is_string());
    assert!(created.get("scopes").is_none(), "{created}");
    let grants = created["grants"].as_array().unwrap();
    assert_eq!(grants.len(), 2);
    assert_eq!(grants[0]["reach"], "selected");
    assert_eq!(grants[0]["projects"], json!(["acme/platform/api"]));
    assert_eq!(grants[0]["groups"], json!(["acme/platform/infra"]));
    assert_eq!(grants[0]["permissions"]["container_registry"], json!(["create", "read"]));
    assert_eq!(grants[1]["reach"], "user");
    assert_eq!(grants[1]["permissions"]["user"], json!(["read"]));
    assert!(!reply.text().contains(&app.digest_hex(&secret)));

    // Use it.
    assert_eq!(app.reason(&secret, "GET", API_REGISTRY).await, "allowed");
    assert_eq!(
        app.reason(&secret, "POST", "/api/v4/projects/acme%2Fplatform%2Fapi/registry/protection/tag/rules").await,
        "allowed"
    );
    // A selected group reaches its subgroups' projects.
    assert_eq!(
        app.reason(&secret, "GET", "/api/v4/projects/acme%2Fplatform%2Finfra%2Fterraform/issues").await,
        "allowed"
    );
    assert_eq!(app.reason(&secret, "GET", "/api/v4/user").await, "allowed");
    assert_eq!(app.reason(&secret, "PUT", "/api/v4/user/status").await, "insufficient_scope");

    // List, show and self never show the secret or the digest again.
    let list = app.call("GET", TOKENS, Some(&alice_api), None).await;
    list.expect(200);
    assert_hides(&app, &list, &secret);
    assert_hides(&app, &list, &alice_api);
    let listed = find(&list.json(), id).clone();
    assert!(listed.get("token").is_none(), "{listed}");
    assert_eq!((listed["name"].as_str(), listed["kind"].as_str()), (Some("ci"), Some("fine_grained")));
    assert_eq!(listed["state"], "active");
    let show = app.call("GET", &format!("{TOKENS}/{id}"), Some(&alice_api), None).await;
    show.expect(200);
    assert_hides(&app, &show, &secret);
    assert_eq!(show.json()["grants"], created["grants"]);
    let own = app.call("GET", &format!("{TOKENS}/self"), Some(&secret), None).await;
    own.expect(200);
    assert_hides(&app, &own, &secret);
    assert_eq!(own.json()["id"], id);

    // Rotate: a new secret; the old one is revoked at once.
    let reply = app.call("POST", &format!("{TOKENS}/{id}/rotate"), Some(&alice_api), None).await;
    let rotated = reply.expect(200).json();
    let new_secret = rotated["token"].as_str().unwrap().to_owned();
    let new_id = rotated["id"].as_u64().unwrap();
    assert_ne!(new_secret, secret);
    assert_ne!(new_id, id);
    assert_eq!(rotated["grants"], created["grants"]);
    assert_eq!(rotated["previous_id"], id);
    let old = app.decide(&secret, "GET", API_REGISTRY).await;
    assert_eq!((old["status"].as_u64(), old["reason"].as_str()), (Some(401), Some("revoked")), "{old}");
    assert_eq!(app.reason(&new_secret, "GET", API_REGISTRY).await, "allowed");
    let old_row = app.call("GET", &format!("{TOKENS}/{id}"), Some(&alice_api), None).await.json();
    assert_eq!(old_row["state"], "revoked", "{old_row}");
    let again = app.call("POST", &format!("{TOKENS}/{id}/rotate"), Some(&alice_api), None).await;
    again.expect_error(409, "conflict");

    // Revoke: denied `revoked` on the very next request.
    app.call("DELETE", &format!("{TOKENS}/{new_id}"), Some(&alice_api), None).await.expect(204);
    let denied = app.decide(&new_secret, "GET", API_REGISTRY).await;
    assert_eq!((denied["status"].as_u64(), denied["reason"].as_str()), (Some(401), Some("revoked")));
    let reply = app.call("GET", &format!("{TOKENS}/self"), Some(&new_secret), None).await;
    reply.expect_error(401, "invalid_token");
    app.call("DELETE", &format!("{TOKENS}/{new_id}"), Some(&alice_api), None).await.expect_error(409, "conflict");
    let list = app.call("GET", TOKENS, Some(&alice_api), None).await;
    assert_hides(&app, &list, &new_secret);
    assert_eq!(find(&list.json(), new_id)["state"], "revoked");
}

#[tokio::test]
async fn self_shows_and_rotates_the_presenting_token() {
    let app = App::new().await;
    // Any valid token may read itself, whatever it grants.
    let own = app.call("GET", &format!("{TOKENS}/self"), Some(&app.alice), None).await.expect(200).json();
    assert_eq!(own["user"], "alice");
    assert_eq!(own["kind"], "fine_grained");
    assert!(own.get("token").is_none());
    let own = app.call("GET", &format!("{TOKENS}/self"), Some(&app.dave), None).await.expect(200).json();
    assert_eq!((own["user"].as_str(), own["kind"].as_str()), (Some("dave"), Some("legacy")));
    assert_eq!(own["scopes"], json!(["read_api"]));
    app.call("GET", &format!("{TOKENS}/self"), None, None).await.expect_error(401, "invalid_token");

    // A token that may update tokens rotates itself.
    let alice_api = app.api_token_for("alice").await;
    let rotated = app.call("POST", &format!("{TOKENS}/self/rotate"), Some(&alice_api), None).await.expect(200).json();
    let new_secret = rotated["token"].as_str().unwrap();
    assert!(new_secret.starts_with("pgpat-"), "{new_secret}");
    assert_eq!(rotated["scopes"], json!(["api"]));
    assert_eq!(app.reason(&alice_api, "GET", "/api/v4/user").await, "revoked");
    assert_eq!(app.reason(new_secret, "GET", "/api/v4/user").await, "allowed");
    let reply = app.call("POST", &format!("{TOKENS}/self/rotate"), Some(&alice_api), None).await;
    reply.expect_error(401, "invalid_token");
    // One without personal_access_token:update may not.
    let reply = app.call("POST", &format!("{TOKENS}/self/rotate"), Some(&app.alice), None).await;
    reply.expect(403);

    // The legacy `self_rotate` scope rotates the presenting token, and no other.
    let made = app
        .mint_for(
            "dave",
            json!({ "name": "rotating", "expires_at": "2027-01-01", "scopes": ["read_api", "self_rotate"] }),
        )
        .await;
    let rotating = made["token"].as_str().unwrap();
    let dave_id = app.decide(&app.dave, "GET", "/api/v4/user").await["token_id"].as_u64().unwrap();
    let reply = app.call("POST", &format!("{TOKENS}/{dave_id}/rotate"), Some(rotating), None).await;
    reply.expect(403);
    assert_eq!(app.reason(&app.dave, "GET", "/api/v4/user").await, "allowed");
    let rotated = app.call("POST", &format!("{TOKENS}/self/rotate"), Some(rotating), None).await.expect(200).json();
    assert_eq!(rotated["scopes"], json!(["read_api", "self_rotate"]));
    assert_eq!(app.reason(rotating, "GET", "/api/v4/user").await, "revoked");
}

#[tokio::test]
async fn other_users_tokens_are_invisible_except_to_admins() {
    let app = App::new().await;
    let alice_api = app.api_token_for("alice").await;
    let bob_api = app.api_token_for("bob").await;
    let id = app.decide(&app.alice, "GET", API_REGISTRY).await["token_id"].as_u64().unwrap();
    let path = format!("{TOKENS}/{id}");
    app.call("GET", &path, Some(&bob_api), None).await.expect_error(404, "not_found");
    app.call("POST", &format!("{path}/rotate"), Some(&bob_api), None).await.expect_error(404, "not_found");
    app.call("DELETE", &path, Some(&bob_api), None).await.expect_error(404, "not_found");
    app.call("GET", &format!("{TOKENS}/987654"), Some(&bob_api), None).await.expect_error(404, "not_found");
    app.call("GET", &format!("{TOKENS}/abc"), Some(&bob_api), None).await.expect_error(404, "not_found");
    assert_eq!(app.reason(&app.alice, "GET", API_REGISTRY).await, "allowed");
    let bob_list = app.call("GET", TOKENS, Some(&bob_api), None).await.expect(200).json();
    assert!(bob_list.as_array().unwrap().iter().all(|token| token["user"] == "bob"), "{bob_list}");
    app.call("GET", &format!("{TOKENS}?user=alice"), Some(&bob_api), None).await.expect(403);

    // Admins see and list anyone's tokens, still without secrets.
    let shown = app.call("GET", &path, Some(&app.admin), None).await;
    assert_hides(&app, &shown, &app.alice);
    assert_eq!(shown.expect(200).json()["user"], "alice");
    let list = app.call("GET", &format!("{TOKENS}?user=alice"), Some(&app.admin), None).await;
    assert_hides(&app, &list, &alice_api);
    assert_hides(&app, &list, &app.alice);
    let list = list.json();
    assert_eq!(list.as_array().unwrap().len(), 2, "{list}");
    let everyone = app.call("GET", &format!("{TOKENS}?user=*"), Some(&app.admin), None).await;
    assert_eq!(everyone.expect(200).json().as_array().unwrap().len(), app.token_count().await);
    app.call("GET", &format!("{TOKENS}?user=nobody"), Some(&app.admin), None).await.expect_error(404, "not_found");
}

#[tokio::test]
async fn a_token_works_until_the_second_before_expiry() {
    let app = App::new().await;
    let made = app
        .mint_for(
            "alice",
            json!({
                "name": "short",
                "expires_at": "2026-12-05",
                "grants": [{ "reach": "selected", "projects": ["acme/platform/api"], "permissions": { "container_registry": ["read"] } }]
            }),
        )
        .await;
    let token = made["token"].as_str().unwrap();
    let id = made["id"].as_u64().unwrap();
    let headers = [("x-forwarded-method", "GET"), ("x-forwarded-uri", API_REGISTRY), ("private-token", token)];

    app.set_now(at(2026, 12, 4, 23, 59, 59));
    assert_eq!(app.reason(token, "GET", API_REGISTRY).await, "allowed");
    app.forward(None, &headers).await.expect(200);

    app.set_now(at(2026, 12, 5, 0, 0, 0));
    let expired = app.decide(token, "GET", API_REGISTRY).await;
    assert_eq!((expired["status"].as_u64(), expired["reason"].as_str()), (Some(401), Some("expired")), "{expired}");
    let reply = app.forward(None, &headers).await;
    reply.expect(401);
    assert_eq!(reply.json()["reason"], "expired");
    assert!(reply.header("www-authenticate").is_some());
    let shown = app.call("GET", &format!("{TOKENS}/{id}"), Some(&app.admin), None).await.json();
    assert_eq!(shown["state"], "expired", "{shown}");
    assert_eq!(shown["expires_at"], "2026-12-05");

    // Going back in time does not resurrect anything else: the clock is the only input.
    app.set_now(at(2026, 12, 4, 0, 0, 0));
    assert_eq!(app.reason(token, "GET", API_REGISTRY).await, "allowed");
}

#[tokio::test]
async fn invalid_token_requests_are_refused_and_change_nothing() {
    let app = App::new().await;
    let alice_api = app.api_token_for("alice").await;
    let before = app.token_count().await;
    let grant = |permissions: Value| json!([{ "reach": "selected", "projects": ["acme/platform/api"], "permissions": permissions }]);
    let cases: Vec<(Value, &str)> = vec![
        (json!({ "name": "x", "expires_at": "2027-01-01", "grants": grant(json!({ "issues": ["read"] })) }), "issues"),
        (json!({ "name": "x", "expires_at": "2027-01-01", "grants": grant(json!({ "issue": ["write"] })) }), "write"),
        (json!({ "name": "x", "expires_at": "2027-01-01", "grants": grant(json!({ "issue": [] })) }), "issue"),
        (json!({ "name": "x", "expires_at": "2027-01-01", "grants": grant(json!({})) }), "permissions"),
        (
            json!({ "name": "x", "expires_at": "2027-11-29", "grants": grant(json!({ "issue": ["read"] })) }),
            "expires_at",
        ),
        (
            json!({ "name": "x", "expires_at": "2026-11-28", "grants": grant(json!({ "issue": ["read"] })) }),
            "expires_at",
        ),
        (
            json!({ "name": "x", "expires_at": "28/11/2027", "grants": grant(json!({ "issue": ["read"] })) }),
            "expires_at",
        ),
        (json!({ "name": "x", "grants": grant(json!({ "issue": ["read"] })) }), "expires_at"),
        (json!({ "name": "", "expires_at": "2027-01-01", "grants": grant(json!({ "issue": ["read"] })) }), "name"),
        (json!({ "name": "x", "expires_at": "2027-01-01", "grants": [] }), "grants"),
        (json!({ "name": "x", "expires_at": "2027-01-01" }), "grants"),
        (
            json!({ "name": "x", "expires_at": "2027-01-01", "scopes": ["api"], "grants": grant(json!({ "issue": ["read"] })) }),
            "scopes",
        ),
        (json!({ "name": "x", "expires_at": "2027-01-01", "scopes": ["telepathy"] }), "telepathy"),
        (json!({ "name": "x", "expires_at": "2027-01-01", "scopes": ["admin_mode"] }), "admin_mode"),
        (
            json!({ "name": "x", "expires_at": "2027-01-01", "grants": [{ "reach": "galaxy", "permissions": { "issue": ["read"] } }] }),
            "galaxy",
        ),
        (
            json!({ "name": "x", "expires_at": "2027-01-01", "grants": [{ "reach": "selected", "permissions": { "issue": ["read"] } }] }),
            "grants[0]",
        ),
        (
            json!({ "name": "x", "expires_at": "2027-01-01", "grants": [{ "reach": "instance", "permissions": { "admin_user": ["read"] } }] }),
            "instance",
        ),
        (
            json!({ "name": "x", "expires_at": "2027-01-01", "grants": [{ "reach": "user", "permissions": { "container_registry": ["read"] } }] }),
            "container_registry",
        ),
        (
            json!({ "name": "x", "expires_at": "2027-01-01", "allowed_ips": ["not-an-ip"], "grants": grant(json!({ "issue": ["read"] })) }),
            "allowed_ips",
        ),
        (
            json!({ "name": "x", "expires_at": "2027-01-01", "grants": grant(json!({ "issue": ["read"] })), "colour": "red" }),
            "colour",
        ),
        (
            json!({ "name": "x", "expires_at": "2027-01-01", "grants": [{ "reach": "selected", "projects": ["acme/platform/api"], "permissions": { "issue": ["read"] }, "extra": 1 }] }),
            "extra",
        ),
    ];
    for (body, field) in cases {
        let reply = app.call("POST", OWN, Some(&alice_api), Some(&body)).await;
        assert_eq!(reply.status.as_u16(), 422, "{body}: {}", reply.text());
        let error = reply.json();
        assert!(error["error"].is_string(), "{error}");
        let message = error["message"].as_str().unwrap();
        assert!(message.contains(field), "{body}: the message does not name `{field}`: {message}");
    }
    let beyond = app
        .call(
            "POST",
            OWN,
            Some(&alice_api),
            Some(&json!({
                "name": "x", "expires_at": "2027-11-29", "grants": grant(json!({ "issue": ["read"] }))
            })),
        )
        .await;
    assert!(beyond.json()["message"].as_str().unwrap().contains("365"), "{}", beyond.text());
    assert_eq!(app.token_count().await, before, "a refused request must not create a token");

    // The last day the policy allows is accepted.
    let last_day = json!({ "name": "x", "expires_at": "2027-11-28", "grants": grant(json!({ "issue": ["read"] })) });
    app.call("POST", OWN, Some(&alice_api), Some(&last_day)).await.expect(201);
    assert_eq!(app.token_count().await, before + 1);
}

#[tokio::test]
async fn a_project_the_owner_cannot_see_is_refused_like_a_missing_one() {
    let app = App::new().await;
    let before = app.token_count().await;
    let ask = async |field: &str, path: &str| {
        let grant = json!({ "reach": "selected", field: [path], "permissions": { "issue": ["read"] } });
        let body = json!({ "name": "x", "expires_at": "2027-01-01", "grants": [grant] });
        app.call("POST", "/api/v1/users/dave/personal_access_tokens", Some(&app.admin), Some(&body)).await
    };
    // dave (Reporter on acme/platform/api) cannot see the private terraform project.
    let invisible = ask("projects", "acme/platform/infra/terraform").await;
    let missing = ask("projects", "acme/platform/infra/nothing").await;
    assert_eq!(invisible.status, missing.status);
    assert!(invisible.status.is_client_error(), "{}", invisible.text());
    let (invisible, missing) = (invisible.json(), missing.json());
    assert_eq!(invisible["error"], missing["error"]);
    let scrub = |body: &Value, path: &str| body["message"].as_str().unwrap().replace(path, "PATH");
    assert_eq!(scrub(&invisible, "acme/platform/infra/terraform"), scrub(&missing, "acme/platform/infra/nothing"));
    assert!(invisible["message"].as_str().unwrap().contains("grants[0].projects"), "{invisible}");

    let invisible = ask("groups", "acme/platform/infra").await;
    let missing = ask("groups", "acme/platform/nothing").await;
    assert_eq!(invisible.status, missing.status);
    let (invisible, missing) = (invisible.json(), missing.json());
    assert_eq!(scrub(&invisible, "acme/platform/infra"), scrub(&missing, "acme/platform/nothing"));
    assert_eq!(app.token_count().await, before);

    // What dave can see is accepted (internal handbook, his own project).
    let body = json!({ "name": "ok", "expires_at": "2027-01-01", "grants": [
        { "reach": "selected", "projects": ["acme/handbook", "acme/platform/api"], "permissions": { "issue": ["read"] } }
    ] });
    app.call("POST", "/api/v1/users/dave/personal_access_tokens", Some(&app.admin), Some(&body)).await.expect(201);
}

#[tokio::test]
async fn a_fine_grained_token_mints_only_narrower_tokens() {
    let app = App::new().await;
    let minter = app
        .mint_for(
            "alice",
            json!({
                "name": "minter",
                "expires_at": "2027-03-01",
                "grants": [
                    { "reach": "selected", "projects": ["acme/platform/api"], "permissions": { "issue": ["read"] } },
                    { "reach": "user", "permissions": { "personal_access_token": ["create", "read"] } }
                ]
            }),
        )
        .await;
    let minter = minter["token"].as_str().unwrap().to_owned();
    let before = app.token_count().await;
    let wider = [
        json!([{ "reach": "selected", "projects": ["acme/platform/api"], "permissions": { "issue": ["read", "create"] } }]),
        json!([{ "reach": "selected", "groups": ["acme/platform"], "permissions": { "issue": ["read"] } }]),
        json!([{ "reach": "selected", "projects": ["acme/platform/infra/terraform"], "permissions": { "issue": ["read"] } }]),
        json!([{ "reach": "all_memberships", "permissions": { "issue": ["read"] } }]),
        json!([{ "reach": "selected", "projects": ["acme/platform/api"], "permissions": { "container_registry": ["read"] } }]),
        json!([{ "reach": "user", "permissions": { "personal_access_token": ["create", "delete"] } }]),
    ];
    for grants in wider {
        let body = json!({ "name": "wider", "expires_at": "2027-01-01", "grants": grants });
        let reply = app.call("POST", OWN, Some(&minter), Some(&body)).await;
        assert!(matches!(reply.status.as_u16(), 403 | 422), "{grants}: {} {}", reply.status, reply.text());
        assert!(reply.json()["error"].is_string());
    }
    let legacy = json!({ "name": "legacy", "expires_at": "2027-01-01", "scopes": ["read_api"] });
    let reply = app.call("POST", OWN, Some(&minter), Some(&legacy)).await;
    assert!(matches!(reply.status.as_u16(), 403 | 422), "{}", reply.text());
    assert_eq!(app.token_count().await, before, "no escalation may create a token");

    // Equal or narrower is fine.
    let narrower = json!({ "name": "narrower", "expires_at": "2027-01-01", "grants": [
        { "reach": "selected", "projects": ["acme/platform/api"], "permissions": { "issue": ["read"] } },
        { "reach": "user", "permissions": { "personal_access_token": ["read"] } }
    ] });
    let made = app.call("POST", OWN, Some(&minter), Some(&narrower)).await.expect(201).json();
    assert_eq!(made["user"], "alice");
    // A token without personal_access_token:create cannot mint at all.
    let reply = app.call("POST", OWN, Some(&app.alice), Some(&narrower)).await;
    reply.expect(403);
    assert_eq!(app.token_count().await, before + 1);
}

#[tokio::test]
async fn legacy_tokens_are_refused_when_the_policy_turns_them_off() {
    let app = App::new().await;
    let settings = app.call("GET", "/api/v1/admin/settings", Some(&app.admin), None).await.expect(200).json();
    assert_eq!(settings["legacy_tokens_allowed"], true);
    assert_eq!(settings["max_lifetime_days"], 365);
    let alice_api = app.api_token_for("alice").await;

    let reply = app
        .call("PUT", "/api/v1/admin/settings", Some(&app.admin), Some(&json!({ "legacy_tokens_allowed": false })))
        .await;
    let settings = reply.expect(200).json();
    assert_eq!(settings["legacy_tokens_allowed"], false);
    assert_eq!(settings["max_lifetime_days"], 365, "untouched fields keep their values");
    let shown = app.call("GET", "/api/v1/admin/settings", Some(&app.admin), None).await.json();
    assert_eq!(shown["legacy_tokens_allowed"], false);

    let before = app.token_count().await;
    let legacy = json!({ "name": "old style", "expires_at": "2027-01-01", "scopes": ["read_api"] });
    let reply = app.call("POST", OWN, Some(&alice_api), Some(&legacy)).await;
    reply.expect(403);
    assert_eq!(reply.json()["error"], "legacy_disabled");
    let reply = app.call("POST", "/api/v1/users/bob/personal_access_tokens", Some(&app.admin), Some(&legacy)).await;
    assert_eq!(reply.status.as_u16(), 403, "{}", reply.text());
    assert_eq!(app.token_count().await, before);

    // Fine-grained tokens are still made.
    let fine = json!({ "name": "new style", "expires_at": "2027-01-01", "grants": [
        { "reach": "selected", "projects": ["acme/platform/api"], "permissions": { "issue": ["read"] } }
    ] });
    app.call("POST", OWN, Some(&alice_api), Some(&fine)).await.expect(201);

    // Turned back on, legacy tokens are made again.
    app.call("PUT", "/api/v1/admin/settings", Some(&app.admin), Some(&json!({ "legacy_tokens_allowed": true })))
        .await
        .expect(200);
    app.call("POST", OWN, Some(&alice_api), Some(&legacy)).await.expect(201);
}

#[tokio::test]
async fn the_lifetime_policy_applies_to_new_tokens() {
    let app = App::new().await;
    let reply =
        app.call("PUT", "/api/v1/admin/settings", Some(&app.admin), Some(&json!({ "max_lifetime_days": 30 }))).await;
    assert_eq!(reply.expect(200).json()["max_lifetime_days"], 30);
    // The bootstrap admin token (365 days) now exceeds the cap: it is blocked until rotated.
    assert_eq!(app.reason(&app.admin, "GET", "/api/v4/version").await, "lifetime_policy");
    let rotated = app.call("POST", "/api/v1/personal_access_tokens/self/rotate", Some(&app.admin), None).await;
    let admin = rotated.expect(200).json()["token"].as_str().unwrap().to_owned();
    let body = |expires: &str| {
        json!({ "name": "x", "expires_at": expires, "grants": [
        { "reach": "selected", "projects": ["acme/platform/api"], "permissions": { "issue": ["read"] } }
    ] })
    };
    let reply =
        app.call("POST", "/api/v1/users/alice/personal_access_tokens", Some(&admin), Some(&body("2026-12-29"))).await;
    let error = reply.expect_error(422, "invalid_token_request");
    assert!(error["message"].as_str().unwrap().contains("30"), "{error}");
    app.call("POST", "/api/v1/users/alice/personal_access_tokens", Some(&admin), Some(&body("2026-12-28")))
        .await
        .expect(201);

    for bad in [
        json!({ "max_lifetime_days": 0 }),
        json!({ "max_lifetime_days": 100_000 }),
        json!({ "token_prefix": "Not A Prefix!" }),
        json!({ "colour": 1 }),
    ] {
        let reply = app.call("PUT", "/api/v1/admin/settings", Some(&admin), Some(&bad)).await;
        reply.expect_error(422, "invalid_request");
    }
    let settings = app.call("GET", "/api/v1/admin/settings", Some(&admin), None).await.json();
    assert_eq!(settings["max_lifetime_days"], 30);
    assert_eq!(settings["token_prefix"], "");
}

#[tokio::test]
async fn a_new_instance_prefix_applies_to_new_tokens_and_old_ones_keep_working() {
    let app = App::new().await;
    let reply =
        app.call("PUT", "/api/v1/admin/settings", Some(&app.admin), Some(&json!({ "token_prefix": "acme-" }))).await;
    assert_eq!(reply.expect(200).json()["token_prefix"], "acme-");
    let made = app
        .mint_for("alice", json!({ "name": "prefixed", "expires_at": "2027-01-01", "grants": [
            { "reach": "selected", "projects": ["acme/platform/api"], "permissions": { "container_registry": ["read"] } }
        ] }))
        .await;
    let token = made["token"].as_str().unwrap();
    assert!(token.starts_with("acme-pgfgt-"), "{token}");
    assert_eq!(app.reason(token, "GET", API_REGISTRY).await, "allowed");
    assert_eq!(app.reason(&app.alice, "GET", API_REGISTRY).await, "allowed");
    app.call("GET", TOKENS, Some(&app.admin), None).await.expect(200);
}

#[tokio::test]
async fn concurrent_rotations_of_one_token_leave_one_successor() {
    let app = App::new().await;
    let alice_api = app.api_token_for("alice").await;
    let made = app.mint_for("alice", ci_token_body()).await;
    let id = made["id"].as_u64().unwrap();
    let uri = format!("{TOKENS}/{id}/rotate");
    let (first, second) =
        tokio::join!(app.call("POST", &uri, Some(&alice_api), None), app.call("POST", &uri, Some(&alice_api), None));
    let mut statuses = [first.status.as_u16(), second.status.as_u16()];
    statuses.sort_unstable();
    let list = app.call("GET", TOKENS, Some(&alice_api), None).await.json();
    let live: Vec<&Value> = list
        .as_array()
        .unwrap()
        .iter()
        .filter(|token| token["family_id"] == id && token["state"] == "active")
        .collect();
    assert_eq!(live.len(), 1, "one rotation forked the token into {} live successors: {list}", live.len());
    // The loser finds the token already rotated (revoked): 409 as for any revoked token.
    assert!(matches!(statuses, [200, 404 | 409]), "{statuses:?}: {} / {}", first.text(), second.text());
}

#[tokio::test]
async fn a_fine_grained_token_cannot_rotate_a_wider_token_into_its_hands() {
    let app = App::new().await;
    let alice_api = app.api_token_for("alice").await;
    let api_id = app.decide(&alice_api, "GET", "/api/v4/user").await["token_id"].as_u64().unwrap();
    let narrow = app
        .mint_for(
            "alice",
            json!({ "name": "token keeper", "expires_at": "2027-01-01", "grants": [
            { "reach": "user", "permissions": { "personal_access_token": ["read", "update"] } }
        ] }),
        )
        .await;
    let narrow = narrow["token"].as_str().unwrap().to_owned();
    let reply = app.call("POST", &format!("{TOKENS}/{api_id}/rotate"), Some(&narrow), None).await;
    assert!(
        matches!(reply.status.as_u16(), 403 | 422),
        "a token holding only personal_access_token:read+update obtained a legacy `api` token: {} {}",
        reply.status,
        reply.text()
    );
    assert!(reply.json().get("token").is_none());
    assert_eq!(app.reason(&alice_api, "GET", "/api/v4/user").await, "allowed");
}

#[tokio::test]
async fn a_fine_grained_admin_token_cannot_mint_itself_a_wider_token() {
    let app = App::new().await;
    let narrow = app
        .mint_for(
            "admin",
            json!({ "name": "provisioning", "expires_at": "2027-01-01", "grants": [
            { "reach": "instance", "permissions": { "admin_user": ["read", "update"] } }
        ] }),
        )
        .await;
    let narrow = narrow["token"].as_str().unwrap().to_owned();
    let before = app.token_count().await;
    let wide = json!({ "name": "everything", "expires_at": "2027-01-01", "scopes": ["api", "admin_mode", "sudo"] });
    let reply = app.call("POST", "/api/v1/users/admin/personal_access_tokens", Some(&narrow), Some(&wide)).await;
    assert!(
        matches!(reply.status.as_u16(), 403 | 422),
        "a fine-grained admin_user token minted its owner an api+admin_mode+sudo token: {} {}",
        reply.status,
        reply.text()
    );
    assert_eq!(app.token_count().await, before);
    // Through the own-token route the same request is refused, as it should be.
    let narrow_user = app
        .mint_for(
            "admin",
            json!({ "name": "self service", "expires_at": "2027-01-01", "grants": [
            { "reach": "user", "permissions": { "personal_access_token": ["create"] } }
        ] }),
        )
        .await;
    let reply = app.call("POST", OWN, narrow_user["token"].as_str(), Some(&wide)).await;
    assert!(matches!(reply.status.as_u16(), 403 | 422), "{}", reply.text());
}

#[tokio::test]
async fn a_token_with_an_allowlist_manages_from_an_allowed_address() {
    let app = App::new().await;
    let made = app
        .mint_for(
            "alice",
            json!({ "name": "loopback only", "expires_at": "2027-01-01", "allowed_ips": ["127.0.0.0/8"], "grants": [
            { "reach": "user", "permissions": { "personal_access_token": ["read"] } }
        ] }),
        )
        .await;
    let token = made["token"].as_str().unwrap();
    let elsewhere = app.call_from("10.1.2.3", "GET", &format!("{TOKENS}/self"), token).await;
    assert_eq!(elsewhere.expect(401).json()["reason"], "ip_not_allowed");
    let reply = app.call_from("127.0.0.1", "GET", &format!("{TOKENS}/self"), token).await;
    assert_eq!(reply.status.as_u16(), 200, "an allowed address is refused: {}", reply.text());
    let reply = app.call_from("127.0.0.1", "GET", TOKENS, token).await;
    assert_eq!(reply.status.as_u16(), 200, "an allowed address is refused: {}", reply.text());
}

#[tokio::test]
async fn turning_off_legacy_creation_leaves_existing_legacy_tokens_working() {
    // `legacy_tokens_allowed` stops the creation of legacy tokens so an organisation can
    // migrate; denying their use is a separate, dated policy (`legacy_disabled`, issue 5).
    let app = App::new().await;
    let path = "/api/v4/projects/acme%2Fplatform%2Fapi/issues";
    assert_eq!(app.reason(&app.dave, "GET", path).await, "allowed");
    let off = json!({ "legacy_tokens_allowed": false });
    app.call("PUT", "/api/v1/admin/settings", Some(&app.admin), Some(&off)).await.expect(200);
    assert_eq!(app.reason(&app.dave, "GET", path).await, "allowed", "an existing legacy token stopped working");
    let legacy = json!({ "name": "late", "expires_at": "2027-01-01", "scopes": ["read_api"] });
    let refused = app.call("POST", "/api/v1/users/dave/personal_access_tokens", Some(&app.admin), Some(&legacy)).await;
    assert_eq!(refused.status.as_u16(), 403, "{}", refused.text());
    assert_eq!(app.reason(&app.alice, "GET", API_REGISTRY).await, "allowed");
}

#[tokio::test]
async fn authorization_comes_before_the_body() {
    // STYLE habit 5: an unauthenticated caller learns nothing about the body's rules.
    let app = App::new().await;
    for (method, uri) in [
        ("POST", "/api/v1/user/personal_access_tokens"),
        ("POST", "/api/v1/users/alice/personal_access_tokens"),
        ("POST", "/api/v1/admin/directory/import"),
        ("PUT", "/api/v1/admin/settings"),
    ] {
        let reply = app.call_raw(method, uri, None, "{ not json").await;
        assert_eq!(reply.status.as_u16(), 401, "{method} {uri}: {}", reply.text());
        let reply = app.call_raw(method, uri, Some(&app.dave), "{ not json").await;
        assert_eq!(reply.status.as_u16(), 403, "{method} {uri} with a read_api token: {}", reply.text());
    }
}

#[tokio::test]
async fn rotation_keeps_the_lifetime_in_whole_days_from_the_creation_date() {
    // Created at noon on 2026-11-28, expiring 2027-02-01: 65 days from the creation date.
    let app = App::new().await;
    let made = app.mint_for("alice", json!({ "name": "ci", "expires_at": "2027-02-01", "scopes": ["read_api"] })).await;
    let id = made["id"].as_u64().unwrap();
    let first = app.call("POST", &format!("{TOKENS}/{id}/rotate"), Some(&app.admin), None).await;
    assert_eq!(first.json()["expires_at"], "2027-02-01", "{}", first.text());
    let second_id = first.json()["id"].as_u64().unwrap();
    let second = app.call("POST", &format!("{TOKENS}/{second_id}/rotate"), Some(&app.admin), None).await;
    assert_eq!(second.json()["expires_at"], "2027-02-01", "{}", second.text());
}

/// Failed token authentication is rate-limited per client address: 30 failures at once,
/// then the address is refused (429, `Retry-After`) even with a good token, while other
/// addresses are served; successes never count.
#[tokio::test]
async fn requests_without_a_client_address_share_one_limit() {
    // An embedder serving the router without connection info gives no client address:
    // failed authentications and leak reports are then limited together, not unlimited.
    let app = App::new().await;
    let own = "/api/v1/personal_access_tokens/self";
    let (kept, last) = app.alice.split_at(app.alice.len() - 1);
    let wrong = format!("{kept}{}", if last == "x" { 'y' } else { 'x' });
    for attempt in 0..30 {
        let reply = app.call("GET", own, Some(&wrong), None).await;
        assert_eq!(reply.status.as_u16(), 401, "attempt {attempt}: {}", reply.text());
    }
    app.call("GET", own, Some(&wrong), None).await.expect_error(429, "rate_limited");
    // A request that has an address has a bucket of its own.
    app.call_from("198.51.100.9", "GET", own, &app.alice).await.expect(200);

    let report = serde_json::json!(["pgpat-not-a-real-token"]);
    for attempt in 0..30 {
        let reply = app.call("POST", "/api/v1/credentials/revoke", None, Some(&report)).await;
        assert_eq!(reply.status.as_u16(), 202, "report {attempt}: {}", reply.text());
    }
    app.call("POST", "/api/v1/credentials/revoke", None, Some(&report)).await.expect_error(429, "rate_limited");
}

#[tokio::test]
async fn failed_authentication_is_rate_limited_per_address() {
    let app = App::new().await;
    let own = "/api/v1/personal_access_tokens/self";
    let guesser = "198.51.100.7";
    // alice's token with its last character changed (to `x`, or to `y` if it was an `x`:
    // a random token ends in `x` one time in 62, and would then be alice's own).
    let (kept, last) = app.alice.split_at(app.alice.len() - 1);
    let wrong = format!("{kept}{}", if last == "x" { 'y' } else { 'x' });
    assert_ne!(wrong, app.alice);
    for attempt in 0..30 {
        let reply = app.call_from(guesser, "GET", own, &wrong).await;
        assert_eq!(reply.status.as_u16(), 401, "attempt {attempt}: {}", reply.text());
    }
    let refused = app.call_from(guesser, "GET", own, &wrong).await;
    refused.expect_error(429, "rate_limited");
    assert!(refused.header("retry-after").is_some_and(|s| s.parse::<u64>().is_ok_and(|n| n >= 1)));
    // The address is refused whatever it presents now…
    app.call_from(guesser, "GET", own, &app.alice).await.expect(429);
    // …others are not, and many successes from one address never run its bucket dry.
    for _ in 0..100 {
        app.call_from("198.51.100.8", "GET", own, &app.alice).await.expect(200);
    }
    // The decision API shares the address's budget of failures (it says whether a token is
    // valid too)…
    let body = serde_json::json!({ "token": wrong, "method": "GET", "path": "/api/v4/user", "client_ip": guesser });
    app.call_raw_from(guesser, "POST", "/api/v1/decide", body.to_string()).await.expect_error(429, "rate_limited");
    // …but a trusted proxy asking it for that client is not limited by them.
    let decided = app.call_raw_from("127.0.0.1", "POST", "/api/v1/decide", body.to_string()).await;
    assert_eq!(decided.expect(200).json()["reason"], "invalid_token");
}

#[tokio::test]
async fn failed_authentication_is_limited_per_ipv6_64() {
    // One host with a /64 has 2^64 addresses: they count as one client.
    let app = App::new().await;
    let own = "/api/v1/personal_access_tokens/self";
    let (kept, last) = app.alice.split_at(app.alice.len() - 1);
    let wrong = format!("{kept}{}", if last == "x" { 'y' } else { 'x' });
    for attempt in 1..=30 {
        let address = format!("2001:db8:0:7::{attempt:x}");
        let reply = app.call_from(&address, "GET", own, &wrong).await;
        assert_eq!(reply.status.as_u16(), 401, "attempt {attempt} from {address}: {}", reply.text());
    }
    let reply = app.call_from("2001:db8:0:7:ffff:ffff:ffff:ffff", "GET", own, &wrong).await;
    reply.expect_error(429, "rate_limited");
    app.call_from("2001:db8:0:7::abcd", "GET", own, &app.alice).await.expect(429);
    // The next /64 is another client, and so is an IPv4 address.
    app.call_from("2001:db8:0:8::1", "GET", own, &wrong).await.expect(401);
    app.call_from("2001:db8:0:8::1", "GET", own, &app.alice).await.expect(200);
    app.call_from("198.51.100.20", "GET", own, &app.alice).await.expect(200);
}

async fn names_and_descriptions_are_limited_in_characters(backend: Backend) {
    let app = App::on(&backend).await;
    let alice_api = app.api_token_for("alice").await;
    let body = |name: &str, description: &str| {
        json!({ "name": name, "description": description, "expires_at": "2027-01-01", "grants": [
            { "reach": "user", "permissions": { "user": ["read"] } }
        ] })
    };
    // Three bytes a character in UTF-8; an emoji takes four.
    let name = "名".repeat(255);
    let description = format!("{}{}", "é".repeat(998), "🔑🔑");
    let made = app.call("POST", OWN, Some(&alice_api), Some(&body(&name, &description))).await.expect(201).json();
    assert_eq!(
        (made["name"].as_str(), made["description"].as_str()),
        (Some(name.as_str()), Some(description.as_str()))
    );
    // Stored as given, and the answer that showed the secret is the token as stored.
    let shown = app.call("GET", &format!("{TOKENS}/{}", made["id"]), Some(&alice_api), None).await.expect(200).json();
    assert_eq!(
        (shown["name"].as_str(), shown["description"].as_str()),
        (Some(name.as_str()), Some(description.as_str()))
    );
    let mut answered = made.clone();
    answered.as_object_mut().unwrap().remove("token");
    assert_eq!(answered, shown);

    let before = app.token_count().await;
    let long_name = "名".repeat(256);
    let reply = app.call("POST", OWN, Some(&alice_api), Some(&body(&long_name, ""))).await;
    let error = reply.expect_error(422, "invalid_request");
    assert!(error["message"].as_str().unwrap().contains("`name`"), "{error}");
    let long_description = format!("{description}x");
    let reply = app.call("POST", OWN, Some(&alice_api), Some(&body("x", &long_description))).await;
    let error = reply.expect_error(422, "invalid_request");
    assert!(error["message"].as_str().unwrap().contains("`description`"), "{error}");
    assert_eq!(app.token_count().await, before);
}

/// Makes every catch-up fail from now on (a change the log cannot read), until
/// [`heal_change_log`]; writes still commit.
async fn break_change_log(app: &App) {
    sqlx::query("INSERT INTO changes (at, change) VALUES (0, 'not a change')")
        .execute(app.shared.store.pool())
        .await
        .unwrap();
    assert!(app.shared.catch_up().await.is_err());
}

async fn heal_change_log(app: &App) {
    sqlx::query("DELETE FROM changes WHERE change = 'not a change'").execute(app.shared.store.pool()).await.unwrap();
    app.shared.catch_up().await.unwrap();
}

async fn a_committed_write_answers_its_success_when_the_catch_up_fails(backend: Backend) {
    // The write has committed: the answer says so (the secret of a new or rotated token is
    // shown only once), and the index learns of it at the next catch-up (the replica's timer).
    let app = App::on(&backend).await;
    let alice_api = app.api_token_for("alice").await;
    let api_id = app.call("GET", &format!("{TOKENS}/self"), Some(&alice_api), None).await.json()["id"].clone();
    break_change_log(&app).await;
    let made = app.call("POST", OWN, Some(&alice_api), Some(&ci_token_body())).await;
    let made = made.expect(201).json();
    let created = made["token"].as_str().unwrap().to_owned();
    assert_eq!((made["name"].as_str(), made["state"].as_str()), (Some("ci"), Some("active")), "{made}");
    let rotated = app.call("POST", &format!("{TOKENS}/self/rotate"), Some(&alice_api), None).await;
    let rotated = rotated.expect(200).json();
    let new_api = rotated["token"].as_str().unwrap().to_owned();
    assert_eq!((&rotated["previous_id"], &rotated["scopes"]), (&api_id, &json!(["api"])), "{rotated}");
    // The answer is the token as stored.
    let stored = app.call("GET", &format!("{TOKENS}/{}", rotated["id"]), Some(&app.admin), None).await;
    let mut answered = rotated.clone();
    answered.as_object_mut().unwrap().remove("token");
    assert_eq!(answered, stored.expect(200).json());
    let user = json!({ "username": "frank", "name": "Frank" });
    app.call("POST", "/api/v1/admin/users", Some(&app.admin), Some(&user)).await.expect(201);
    app.call("DELETE", &format!("{TOKENS}/{}", made["id"]), Some(&app.admin), None).await.expect(204);
    app.call("POST", "/api/v1/credentials/revoke", None, Some(&json!([app.bob]))).await.expect(202);
    let settings = json!({ "usage_window_days": 60 });
    let settings = app.call("PUT", "/api/v1/admin/settings", Some(&app.admin), Some(&settings)).await;
    assert_eq!(settings.expect(200).json()["usage_window_days"], 60);

    heal_change_log(&app).await;
    assert_eq!(app.reason(&new_api, "GET", "/api/v4/user").await, "allowed");
    assert_eq!(app.reason(&alice_api, "GET", "/api/v4/user").await, "revoked");
    assert_eq!(app.reason(&created, "GET", "/api/v4/user").await, "revoked");
    assert_eq!(app.reason(&app.bob, "GET", "/api/v4/user").await, "revoked");
    assert!(app.shared.engine().index.directory.user_by_name("frank").is_some());
    assert_eq!(app.shared.settings().usage_window_days, 60);
}

#[tokio::test]
async fn a_token_with_an_allowlist_rotates_no_token_usable_from_elsewhere() {
    let app = App::new().await;
    let grants = json!([
        { "reach": "user", "permissions": { "personal_access_token": ["read", "update"] } },
        { "reach": "selected", "projects": ["acme/platform/api"], "permissions": { "container_registry": ["read"] } }
    ]);
    let pinned = app
        .mint_for(
            "alice",
            json!({ "name": "pinned", "expires_at": "2027-01-31", "allowed_ips": ["127.0.0.0/8"], "grants": grants }),
        )
        .await;
    let pinned = pinned["token"].as_str().unwrap().to_owned();
    let anywhere =
        app.mint_for("alice", json!({ "name": "anywhere", "expires_at": "2027-01-31", "grants": grants })).await;
    let narrower = app
        .mint_for("alice", json!({ "name": "narrower", "expires_at": "2027-01-31", "allowed_ips": ["127.0.0.1/32"], "grants": grants }))
        .await;
    let rotate = |id: &serde_json::Value| format!("/api/v1/personal_access_tokens/{id}/rotate");
    // The rotated token's new secret would work from anywhere: refused.
    let refused = app.call("POST", &rotate(&anywhere["id"]), Some(&pinned), None).await;
    refused.expect_error(403, "escalation");
    // One usable from fewer addresses is fine, and keeps its own allowlist.
    let rotated = app.call("POST", &rotate(&narrower["id"]), Some(&pinned), None).await.expect(200).json();
    assert_eq!(rotated["allowed_ips"], json!(["127.0.0.1/32"]), "{rotated}");
}
