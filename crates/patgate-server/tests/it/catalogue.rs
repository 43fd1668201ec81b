//! What the token form reads: the permission catalogue and the caller's projects and groups;
//! and the web interface's assets with their security headers.

use serde_json::Value;

use crate::support::App;

#[tokio::test]
async fn the_permission_catalogue_lists_actions_and_roles_per_boundary() {
    let app = App::new().await;
    let resources = app.call("GET", "/api/v1/resources", Some(&app.admin), None).await.expect(200).json();
    let find = |name: &str, boundary: &str| -> Value {
        resources
            .as_array()
            .unwrap()
            .iter()
            .find(|entry| entry["name"] == name && entry["boundary"] == boundary)
            .cloned()
            .unwrap_or_else(|| panic!("no {name} at {boundary}"))
    };
    let registry = find("container_registry", "project");
    assert_eq!(registry["label"], "Container Registry");
    let actions: Vec<(&str, &str)> = registry["actions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| (a["action"].as_str().unwrap(), a["requires"].as_str().unwrap()))
        .collect();
    assert!(actions.contains(&("create", "developer")), "{actions:?}");
    assert!(actions.contains(&("read", "reporter")) || actions.contains(&("read", "guest")), "{actions:?}");
    assert_eq!(find("ci_variable", "project")["actions"][1]["requires"], "maintainer", "ci_variable read");
    assert_eq!(find("personal_access_token", "user")["actions"][0]["requires"], "self");
    // Boundaries come in order: every project entry before the first group entry.
    let kinds: Vec<&str> = resources.as_array().unwrap().iter().map(|e| e["boundary"].as_str().unwrap()).collect();
    let first_group = kinds.iter().position(|k| *k == "group").unwrap();
    assert!(kinds[..first_group].iter().all(|k| *k == "project"));
    // A token without any token-reading permission cannot read it.
    app.call("GET", "/api/v1/resources", Some(&app.alice), None).await.expect(403);
    app.call("GET", "/api/v1/resources", None, None).await.expect(401);
}

#[tokio::test]
async fn namespaces_are_what_the_caller_can_see_with_their_role() {
    let app = App::new().await;
    let dave = app.api_token_for("dave").await;
    let listed = app.call("GET", "/api/v1/user/namespaces", Some(&dave), None).await.expect(200).json();
    let entries: Vec<(String, String, Option<String>)> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["kind"].as_str().unwrap().to_owned(),
                e["path"].as_str().unwrap().to_owned(),
                e["role"].as_str().map(str::to_owned),
            )
        })
        .collect();
    // dave is Reporter on acme/platform/api only; public acme/web (and its site) and the
    // internal handbook are visible to any signed-in user, without a role; private projects
    // of others are not.
    assert_eq!(entries[0], ("project".to_owned(), "acme/platform/api".to_owned(), Some("reporter".to_owned())));
    let paths: Vec<&str> = entries.iter().map(|(_, path, _)| path.as_str()).collect();
    assert!(
        paths.contains(&"acme/web") && paths.contains(&"acme/web/site") && paths.contains(&"acme/handbook"),
        "{paths:?}"
    );
    assert!(!paths.contains(&"alice/dotfiles") && !paths.contains(&"acme/platform/infra/terraform"), "{paths:?}");
    assert!(entries[1..].iter().all(|(_, _, role)| role.is_none()), "{entries:?}");

    let bob = app.api_token_for("bob").await;
    let searched = app.call("GET", "/api/v1/user/namespaces?search=PLATFORM&kind=group", Some(&bob), None).await;
    let searched = searched.expect(200).json();
    let found: Vec<(&str, &str)> = searched
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["path"].as_str().unwrap(), e["role"].as_str().unwrap()))
        .collect();
    assert_eq!(found, [("acme/platform", "developer"), ("acme/platform/infra", "developer")], "inherited from acme");
    let limited = app.call("GET", "/api/v1/user/namespaces?limit=2", Some(&bob), None).await.expect(200).json();
    assert_eq!(limited.as_array().unwrap().len(), 2);
    for bad in ["limit=0", "limit=501", "kind=user", "colour=red"] {
        let reply = app.call("GET", &format!("/api/v1/user/namespaces?{bad}"), Some(&bob), None).await;
        reply.expect_error(422, "invalid_request");
    }
}

#[tokio::test]
async fn the_web_interface_is_served_with_a_strict_policy() {
    let app = App::new().await;
    let root = app.call("GET", "/", None, None).await;
    assert_eq!((root.status.as_u16(), root.header("location")), (303, Some("/ui/")));
    for (path, content_type, marker) in [
        ("/ui/", "text/html; charset=utf-8", "<script src=\"/ui/app.js\" defer></script>"),
        ("/ui/app.js", "text/javascript; charset=utf-8", "X-CSRF-Token"),
        ("/ui/app.css", "text/css; charset=utf-8", "@media (max-width: 640px)"),
    ] {
        let reply = app.call("GET", path, None, None).await;
        reply.expect(200);
        assert_eq!(reply.header("content-type"), Some(content_type), "{path}");
        let policy = reply.header("content-security-policy").unwrap();
        assert!(policy.contains("script-src 'self'") && policy.contains("frame-ancestors 'none'"), "{policy}");
        assert!(!policy.contains("unsafe-inline"), "{policy}");
        assert_eq!(reply.header("x-frame-options"), Some("DENY"));
        assert!(reply.text().contains(marker), "{path}");
    }
    // No inline script or handler in the page the policy would have to allow.
    let page = app.call("GET", "/ui/", None, None).await.text();
    assert!(!page.contains(" onclick=") && !page.contains("<script>"), "{page}");
}
