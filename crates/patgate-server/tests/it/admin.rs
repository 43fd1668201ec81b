//! The admin API: directory import (idempotent, all or nothing), per-item changes, and
//! what they do to live decisions; admin routes refuse everyone else.

use patgate_store::Store;
use serde_json::{Value, json};

use crate::support::{API_REGISTRY, App};

const IMPORT: &str = "/api/v1/admin/directory/import";

/// Users, groups, projects and memberships in the store.
async fn directory_counts(app: &App) -> (usize, usize, usize, usize) {
    let snapshot = app.shared.store.snapshot().await.unwrap();
    (snapshot.users.len(), snapshot.groups.len(), snapshot.projects.len(), snapshot.memberships.len())
}

/// Whether the admin can find `username` (its token list answers 200, not 404).
async fn user_exists(app: &App, username: &str) -> bool {
    let reply =
        app.call("GET", &format!("/api/v1/personal_access_tokens?user={username}"), Some(&app.admin), None).await;
    match reply.status.as_u16() {
        200 => true,
        404 => false,
        other => unreachable!("unexpected {other}: {}", reply.text()),
    }
}

fn import_body() -> Value {
    json!({
        "users": [
            { "username": "frank", "name": "Frank" },
            { "username": "grace" },
            { "username": "heidi", "state": "blocked" }
        ],
        "groups": [{ "full_path": "beta" }, { "full_path": "beta/core" }],
        "projects": [
            { "full_path": "beta/core/engine", "visibility": "private" },
            { "full_path": "beta/docs", "visibility": "internal" }
        ],
        "memberships": [
            { "username": "frank", "target": "beta", "role": "developer" },
            { "username": "grace", "target": "beta/core/engine", "role": "reporter" }
        ]
    })
}

#[tokio::test]
async fn an_import_is_an_idempotent_upsert() {
    let app = App::new().await;
    let before = directory_counts(&app).await;
    let counts = app.call("POST", IMPORT, Some(&app.admin), Some(&import_body())).await.expect(200).json();
    assert_eq!(counts, json!({ "users": 3, "groups": 2, "projects": 2, "memberships": 2 }));
    let after = directory_counts(&app).await;
    assert_eq!(after, (before.0 + 3, before.1 + 2, before.2 + 2, before.3 + 2));

    // The imported directory is live: frank (Developer in beta) gets a token on the engine.
    let made = app
        .mint_for(
            "frank",
            json!({ "name": "f", "expires_at": "2027-01-01", "grants": [
                { "reach": "selected", "groups": ["beta"], "permissions": { "issue": ["read", "create"] } }
            ] }),
        )
        .await;
    let frank = made["token"].as_str().unwrap().to_owned();
    assert_eq!(app.reason(&frank, "POST", "/api/v4/projects/beta%2Fcore%2Fengine/issues").await, "allowed");
    // heidi was imported blocked: no token for her.
    let reply = app
        .call(
            "POST",
            "/api/v1/users/heidi/personal_access_tokens",
            Some(&app.admin),
            Some(&json!({
                "name": "h", "expires_at": "2027-01-01", "scopes": ["read_api"]
            })),
        )
        .await;
    assert!(reply.status.is_client_error(), "{}", reply.text());

    // The same import again changes nothing and answers the same.
    let again = app.call("POST", IMPORT, Some(&app.admin), Some(&import_body())).await.expect(200).json();
    assert_eq!(again, counts);
    assert_eq!(directory_counts(&app).await, after);
    assert_eq!(app.reason(&frank, "POST", "/api/v4/projects/beta%2Fcore%2Fengine/issues").await, "allowed");

    // An upsert changes what it names (grace becomes Developer) and adds no rows.
    let upgrade =
        json!({ "memberships": [{ "username": "grace", "target": "beta/core/engine", "role": "developer" }] });
    let counts = app.call("POST", IMPORT, Some(&app.admin), Some(&upgrade)).await.expect(200).json();
    assert_eq!(counts, json!({ "users": 0, "groups": 0, "projects": 0, "memberships": 1 }));
    assert_eq!(directory_counts(&app).await, after);
}

#[tokio::test]
async fn an_invalid_item_refuses_the_whole_import() {
    let app = App::new().await;
    let before = directory_counts(&app).await;
    let bad_batches = [
        (
            json!({ "users": [{ "username": "henry" }, { "username": "iris" }], "groups": [{ "full_path": "delta" }],
                 "memberships": [{ "username": "henry", "target": "nowhere/at-all", "role": "developer" }] }),
            "memberships[0].target",
        ),
        (
            json!({ "users": [{ "username": "henry" }, { "username": "iris" }], "groups": [{ "full_path": "delta" }],
                 "memberships": [{ "username": "henry", "target": "delta", "role": "boss" }] }),
            "memberships[0].role",
        ),
        (
            json!({ "users": [{ "username": "henry" }, { "username": "iris" }],
                 "memberships": [{ "username": "henry", "target": "acme", "role": "developer" },
                                 { "username": "nobody", "target": "acme", "role": "developer" }] }),
            "memberships[1].username",
        ),
        (json!({ "users": [{ "username": "henry" }, { "username": "iris", "state": "asleep" }] }), "users[1]"),
        (
            json!({ "users": [{ "username": "henry" }, { "username": "iris" }],
                 "projects": [{ "full_path": "delta/app", "visibility": "private" }] }),
            "projects[0]",
        ),
        (
            json!({ "users": [{ "username": "henry" }, { "username": "iris" }],
                 "projects": [{ "full_path": "acme/app", "visibility": "secret" }] }),
            "projects[0].visibility",
        ),
        (
            json!({ "users": [{ "username": "henry" }, { "username": "iris" }],
                 "groups": [{ "full_path": "acme/platform/api" }] }),
            "groups[0]",
        ),
        (json!({ "users": [{ "username": "henry", "colour": "red" }, { "username": "iris" }] }), "colour"),
    ];
    for (batch, field) in bad_batches {
        let reply = app.call("POST", IMPORT, Some(&app.admin), Some(&batch)).await;
        let error = reply.expect_error(422, "invalid_request");
        let message = error["message"].as_str().unwrap();
        assert!(message.contains(field), "{batch}: the message does not name `{field}`: {message}");
        assert_eq!(directory_counts(&app).await, before, "{batch} wrote something");
        assert!(!user_exists(&app, "henry").await && !user_exists(&app, "iris").await, "{batch}");
    }
    assert!(user_exists(&app, "alice").await);
    let reply = app.call("POST", IMPORT, Some(&app.admin), Some(&json!({ "users": [{ "username": "henry" }] }))).await;
    reply.expect(200);
    assert!(user_exists(&app, "henry").await);
}

#[tokio::test]
async fn items_are_created_and_changed_one_by_one() {
    let app = App::new().await;
    let admin = Some(app.admin.as_str());
    let user =
        app.call("POST", "/api/v1/admin/users", admin, Some(&json!({ "username": "Judy", "name": "Judy" }))).await;
    let user = user.expect(201).json();
    assert_eq!(user["username"], "judy");
    assert!(user["id"].is_u64());
    app.call("POST", "/api/v1/admin/users", admin, Some(&json!({ "username": "judy" })))
        .await
        .expect_error(409, "conflict");
    app.call("POST", "/api/v1/admin/users", admin, Some(&json!({ "name": "no username" })))
        .await
        .expect_error(422, "invalid_request");

    let group = app
        .call("POST", "/api/v1/admin/groups", admin, Some(&json!({ "full_path": "gamma" })))
        .await
        .expect(201)
        .json();
    assert_eq!(group["full_path"], "gamma");
    app.call("POST", "/api/v1/admin/groups", admin, Some(&json!({ "full_path": "gamma" })))
        .await
        .expect_error(409, "conflict");
    let reply = app
        .call("POST", "/api/v1/admin/groups", admin, Some(&json!({ "full_path": "gamma/x", "visibility": "secret" })))
        .await;
    let error = reply.expect_error(422, "invalid_request");
    assert!(error["message"].as_str().unwrap().contains("visibility"), "{error}");
    let reply = app.call("POST", "/api/v1/admin/groups", admin, Some(&json!({ "full_path": "nowhere/x" }))).await;
    assert!(reply.status.is_client_error(), "{}", reply.text());

    let project = app.call("POST", "/api/v1/admin/projects", admin, Some(&json!({ "full_path": "gamma/svc" }))).await;
    let project = project.expect(201).json();
    assert_eq!(project["full_path"], "gamma/svc");
    let reply = app.call("POST", "/api/v1/admin/projects", admin, Some(&json!({ "full_path": "nowhere/svc" }))).await;
    assert!(reply.status.is_client_error(), "{}", reply.text());
    assert!(reply.json()["error"].is_string());

    // judy cannot see the private project until she is a member.
    let made = app
        .mint_for(
            "judy",
            json!({ "name": "j", "expires_at": "2027-01-01", "grants": [
            { "reach": "all_memberships", "permissions": { "issue": ["read", "create"] } }
        ] }),
        )
        .await;
    let judy = made["token"].as_str().unwrap().to_owned();
    assert_eq!(app.reason(&judy, "GET", "/api/v4/projects/gamma%2Fsvc/issues").await, "not_found");
    let membership = json!({ "username": "judy", "target": "gamma/svc", "role": "guest" });
    app.call("PUT", "/api/v1/admin/memberships", admin, Some(&membership)).await.expect(204);
    assert_eq!(app.reason(&judy, "GET", "/api/v4/projects/gamma%2Fsvc/issues").await, "allowed");
    assert_eq!(app.reason(&judy, "POST", "/api/v4/projects/gamma%2Fsvc/issues").await, "allowed");
    assert_eq!(app.reason(&judy, "PUT", "/api/v4/projects/gamma%2Fsvc/issues/1").await, "insufficient_scope");
    let no_role = json!({ "username": "judy", "target": "gamma/svc" });
    app.call("PUT", "/api/v1/admin/memberships", admin, Some(&no_role)).await.expect_error(422, "invalid_request");
    let bad_target = json!({ "username": "judy", "target": "gamma/none", "role": "guest" });
    let error = app
        .call("PUT", "/api/v1/admin/memberships", admin, Some(&bad_target))
        .await
        .expect_error(422, "invalid_request");
    assert!(error["message"].as_str().unwrap().contains("target"), "{error}");
    let bad_user = json!({ "username": "nobody", "target": "gamma/svc", "role": "guest" });
    let error =
        app.call("PUT", "/api/v1/admin/memberships", admin, Some(&bad_user)).await.expect_error(422, "invalid_request");
    assert!(error["message"].as_str().unwrap().contains("username"), "{error}");

    // Removing the membership takes the project away again, at once.
    app.call("DELETE", "/api/v1/admin/memberships", admin, Some(&no_role)).await.expect(204);
    assert_eq!(app.reason(&judy, "GET", "/api/v4/projects/gamma%2Fsvc/issues").await, "not_found");

    // Making the project internal makes it readable to every active user.
    let reply =
        app.call("PUT", "/api/v1/admin/projects/gamma%2Fsvc", admin, Some(&json!({ "visibility": "internal" }))).await;
    assert_eq!(reply.expect(200).json()["visibility"], "internal");
    // Visible now, but all_memberships does not reach a project judy is no member of.
    assert_eq!(app.reason(&judy, "GET", "/api/v4/projects/gamma%2Fsvc/issues").await, "outside_reach");
    let reply =
        app.call("PUT", "/api/v1/admin/projects/gamma%2Fnone", admin, Some(&json!({ "visibility": "public" }))).await;
    reply.expect_error(404, "not_found");
    let reply =
        app.call("PUT", "/api/v1/admin/projects/gamma%2Fsvc", admin, Some(&json!({ "visibility": "secret" }))).await;
    reply.expect_error(422, "invalid_request");
}

#[tokio::test]
async fn blocking_a_user_denies_their_tokens_until_unblocked() {
    let app = App::new().await;
    let headers =
        [("x-forwarded-method", "GET"), ("x-forwarded-uri", API_REGISTRY), ("private-token", app.alice.as_str())];
    assert_eq!(app.reason(&app.alice, "GET", API_REGISTRY).await, "allowed");

    app.call("POST", "/api/v1/admin/users/alice/block", Some(&app.admin), None).await.expect(204);
    let blocked = app.decide(&app.alice, "GET", API_REGISTRY).await;
    assert_eq!(
        (blocked["status"].as_u64(), blocked["reason"].as_str()),
        (Some(401), Some("owner_blocked")),
        "{blocked}"
    );
    let reply = app.forward(None, &headers).await;
    reply.expect(401);
    assert_eq!(reply.json()["reason"], "owner_blocked");
    // Nor can a blocked user's token manage anything.
    app.call("GET", "/api/v1/personal_access_tokens/self", Some(&app.alice), None)
        .await
        .expect_error(401, "invalid_token");
    // Other users are unaffected.
    assert_eq!(app.reason(&app.bob, "GET", "/api/v4/projects/acme%2Fplatform%2Fapi/issues").await, "allowed");

    app.call("POST", "/api/v1/admin/users/alice/unblock", Some(&app.admin), None).await.expect(204);
    assert_eq!(app.reason(&app.alice, "GET", API_REGISTRY).await, "allowed");
    app.forward(None, &headers).await.expect(200);

    app.call("POST", "/api/v1/admin/users/nobody/block", Some(&app.admin), None).await.expect_error(404, "not_found");

    // Deleting a user revokes their tokens.
    app.call("DELETE", "/api/v1/admin/users/bob", Some(&app.admin), None).await.expect(204);
    assert_eq!(app.reason(&app.bob, "GET", "/api/v4/projects/acme%2Fplatform%2Fapi/issues").await, "revoked");
}

#[tokio::test]
async fn moving_a_project_out_of_a_selected_group_leaves_the_token_outside_reach() {
    let app = App::new().await;
    let admin = Some(app.admin.as_str());
    let made = app
        .mint_for(
            "alice",
            json!({ "name": "platform issues", "expires_at": "2027-01-01", "grants": [
            { "reach": "selected", "groups": ["acme/platform"], "permissions": { "issue": ["read"] } }
        ] }),
        )
        .await;
    let token = made["token"].as_str().unwrap().to_owned();
    let before = app.decide(&token, "GET", "/api/v4/projects/acme%2Fplatform%2Fapi/issues").await;
    assert_eq!(before["allowed"], true, "{before}");
    let id = before["boundary"]["id"].as_u64().unwrap();

    // alice keeps a direct membership, so she still sees the project where it goes.
    let membership = json!({ "username": "alice", "target": "acme/platform/api", "role": "developer" });
    app.call("PUT", "/api/v1/admin/memberships", admin, Some(&membership)).await.expect(204);
    let moved = app
        .call("PUT", "/api/v1/admin/projects/acme%2Fplatform%2Fapi", admin, Some(&json!({ "namespace": "acme" })))
        .await;
    let moved = moved.expect(200).json();
    assert_eq!(moved["full_path"], "acme/api");
    assert_eq!(moved["id"], id);

    let after = app.decide(&token, "GET", "/api/v4/projects/acme%2Fapi/issues").await;
    assert_eq!((after["status"].as_u64(), after["reason"].as_str()), (Some(403), Some("outside_reach")), "{after}");
    assert_eq!(after["boundary"]["path"], "acme/api");
    assert_eq!(app.reason(&token, "GET", &format!("/api/v4/projects/{id}/issues")).await, "outside_reach");
    assert_eq!(app.reason(&token, "GET", "/api/v4/projects/acme%2Fplatform%2Fapi/issues").await, "not_found");

    // Moved back (by id), the group reaches it again.
    let back = app
        .call("PUT", &format!("/api/v1/admin/projects/{id}"), admin, Some(&json!({ "namespace": "acme/platform" })))
        .await;
    assert_eq!(back.expect(200).json()["full_path"], "acme/platform/api");
    assert_eq!(app.reason(&token, "GET", "/api/v4/projects/acme%2Fplatform%2Fapi/issues").await, "allowed");
    let nowhere =
        app.call("PUT", &format!("/api/v1/admin/projects/{id}"), admin, Some(&json!({ "namespace": "nowhere" }))).await;
    let reply = nowhere;
    assert!(reply.status.is_client_error(), "{}", reply.text());
    assert_eq!(app.reason(&token, "GET", "/api/v4/projects/acme%2Fplatform%2Fapi/issues").await, "allowed");
}

#[tokio::test]
async fn admin_routes_refuse_everyone_but_admins() {
    let app = App::new().await;
    let bob_api = app.api_token_for("bob").await;
    // The admin's own token without admin_mode is not enough either.
    let plain_admin = app
        .mint_for("admin", json!({ "name": "no admin mode", "expires_at": "2027-01-01", "scopes": ["api"] }))
        .await["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let before_directory = directory_counts(&app).await;
    let before_tokens = app.token_count().await;
    let calls: [(&str, &str, Option<Value>); 12] = [
        ("POST", IMPORT, Some(json!({ "users": [{ "username": "eve" }] }))),
        ("POST", "/api/v1/admin/users", Some(json!({ "username": "eve" }))),
        ("POST", "/api/v1/admin/users/alice/block", None),
        ("POST", "/api/v1/admin/users/alice/unblock", None),
        ("DELETE", "/api/v1/admin/users/alice", None),
        ("POST", "/api/v1/admin/groups", Some(json!({ "full_path": "evil" }))),
        ("POST", "/api/v1/admin/projects", Some(json!({ "full_path": "acme/evil" }))),
        ("PUT", "/api/v1/admin/projects/acme%2Fplatform%2Fapi", Some(json!({ "namespace": "acme" }))),
        ("PUT", "/api/v1/admin/memberships", Some(json!({ "username": "bob", "target": "acme", "role": "owner" }))),
        ("GET", "/api/v1/admin/settings", None),
        ("PUT", "/api/v1/admin/settings", Some(json!({ "legacy_tokens_allowed": false }))),
        (
            "POST",
            "/api/v1/users/alice/personal_access_tokens",
            Some(json!({ "name": "x", "expires_at": "2027-01-01", "scopes": ["api"] })),
        ),
    ];
    for (method, uri, body) in &calls {
        for token in [bob_api.as_str(), app.alice.as_str(), app.dave.as_str(), plain_admin.as_str()] {
            let reply = app.call(method, uri, Some(token), body.as_ref()).await;
            assert_eq!(reply.status.as_u16(), 403, "{method} {uri}: {}", reply.text());
            assert!(reply.json()["error"].is_string());
        }
        let reply = app.call(method, uri, None, body.as_ref()).await;
        reply.expect_error(401, "invalid_token");
        assert!(reply.header("www-authenticate").is_some());
    }
    let reply = app
        .call(
            "DELETE",
            "/api/v1/admin/memberships",
            Some(&bob_api),
            Some(&json!({ "username": "carol", "target": "acme/web/site" })),
        )
        .await;
    reply.expect(403);
    assert_eq!(directory_counts(&app).await, before_directory);
    assert_eq!(app.token_count().await, before_tokens);
    assert_eq!(app.reason(&app.alice, "GET", API_REGISTRY).await, "allowed");
    let settings = app.call("GET", "/api/v1/admin/settings", Some(&app.admin), None).await.expect(200).json();
    assert_eq!(settings["legacy_tokens_allowed"], true);
}

#[tokio::test]
async fn a_token_loses_power_the_moment_its_owner_does() {
    let app = App::new().await;
    let admin = Some(app.admin.as_str());
    assert_eq!(app.reason(&app.alice, "GET", API_REGISTRY).await, "allowed");
    // Guest in acme/platform: Container Registry read needs Reporter.
    let guest = json!({ "username": "alice", "target": "acme/platform", "role": "guest" });
    app.call("PUT", "/api/v1/admin/memberships", admin, Some(&guest)).await.expect(204);
    let decision = app.decide(&app.alice, "GET", API_REGISTRY).await;
    assert_eq!(
        (decision["status"].as_u64(), decision["reason"].as_str()),
        (Some(403), Some("role_too_low")),
        "{decision}"
    );
    assert_eq!(decision["missing"], "container_registry:read");
    // No membership at all: the private project is invisible.
    app.call("DELETE", "/api/v1/admin/memberships", admin, Some(&guest)).await.expect(204);
    assert_eq!(app.reason(&app.alice, "GET", API_REGISTRY).await, "not_found");
    // Restored, the token works again.
    let maintainer = json!({ "username": "alice", "target": "acme/platform", "role": "maintainer" });
    app.call("PUT", "/api/v1/admin/memberships", admin, Some(&maintainer)).await.expect(204);
    assert_eq!(app.reason(&app.alice, "GET", API_REGISTRY).await, "allowed");
}

#[tokio::test]
async fn an_import_keeps_what_an_entry_omits() {
    let app = App::new().await;
    let first = json!({
        "users": [{ "username": "zoe", "name": "Zoe", "admin": true, "state": "blocked" }],
        "projects": [{ "full_path": "acme/web/blog", "visibility": "public" }],
        "groups": [{ "full_path": "acme/web" }]
    });
    app.call("POST", "/api/v1/admin/directory/import", Some(&app.admin), Some(&first)).await.expect(200);
    let again = json!({ "users": [{ "username": "zoe" }], "projects": [{ "full_path": "acme/web/blog" }] });
    app.call("POST", "/api/v1/admin/directory/import", Some(&app.admin), Some(&again)).await.expect(200);
    let directory = app.shared.directory();
    let zoe = directory.user_by_name("zoe").unwrap();
    assert!(zoe.admin, "the admin flag was reset");
    assert_eq!(zoe.state, patgate_core::UserState::Blocked, "the state was reset");
    let row = app.shared.store.user(zoe.id).await.unwrap().unwrap();
    assert_eq!(row.name, "Zoe", "the name was reset");
    let blog = directory.project_by_path("acme/web/blog").unwrap();
    assert_eq!(blog.visibility, patgate_core::Visibility::Public, "the visibility was reset");
    // The public group acme/web stays public too.
    assert_eq!(directory.group_by_path("acme/web").unwrap().visibility, patgate_core::Visibility::Public);
}
