//! Two `patgate serve` replicas on one PostgreSQL database: a change made through one is
//! seen by the other (LISTEN/NOTIFY plus catch-up) within a bounded time.
//!
//! Runs when `PATGATE_TEST_POSTGRES_URL` is set (the CI sets it); creates a database of
//! its own with `psql` and drops it afterwards.

use std::time::Duration;

use serde_json::{Value, json};

use crate::support::{
    API_ISSUES, API_REGISTRY, Patgate, TempDatabase, TempDir, date_in, poll, postgres_url, with_database,
};

/// How often the other replica is asked, and how long it may take.
const POLL_EVERY: Duration = Duration::from_millis(10);
const POLL_LIMIT: Duration = Duration::from_secs(5);

#[test]
fn with_database_replaces_only_the_name() {
    assert_eq!(
        with_database("postgres://postgres@127.0.0.1:5432/postgres", "x"),
        "postgres://postgres@127.0.0.1:5432/x"
    );
    assert_eq!(with_database("postgres://u:p@h/db?sslmode=disable", "x"), "postgres://u:p@h/x?sslmode=disable");
    assert_eq!(with_database("postgres://h:5432", "x"), "postgres://h:5432/x");
}

#[test]
fn two_replicas_on_postgres() {
    let Some(admin_url) = postgres_url("two_replicas_on_postgres") else { return };
    // Declared first, dropped last: after both replicas are gone.
    let database = TempDatabase::create(&admin_url, "replicas");
    let dir = TempDir::new("replicas");
    let key = dir.path().join("patgate.key");
    let key = key.to_str().unwrap();
    let admin_file = dir.path().join("admin.token");

    let a = Patgate::start(
        "replica A",
        dir.path(),
        &[
            "--database-url",
            &database.url,
            "--secret-key-file",
            key,
            "--demo",
            "--bootstrap-token-file",
            admin_file.to_str().unwrap(),
        ],
    );
    let b = Patgate::start("replica B", dir.path(), &["--database-url", &database.url, "--secret-key-file", key]);
    let admin_token = std::fs::read_to_string(&admin_file).unwrap().trim().to_owned();
    let admin = [("PRIVATE-TOKEN", admin_token.as_str())];
    let alice = a.demo_token("alice").to_owned();

    // B loaded what A made before it started.
    let before = b.decide(&alice, "GET", API_REGISTRY);
    assert_eq!(before["allowed"], true, "{before}");
    let token_id = before["token_id"].as_u64().unwrap();

    // Revoked through A: B denies it as revoked within the bound.
    let revoked = a.delete(&format!("/api/v1/personal_access_tokens/{token_id}"), &admin);
    assert_eq!(revoked.status, 204, "{}", revoked.text());
    assert_eq!(a.decide(&alice, "GET", API_REGISTRY)["reason"], "revoked", "A applies its own write at once");
    let mut last = Value::Null;
    let seen = poll(POLL_EVERY, POLL_LIMIT, || {
        last = b.decide(&alice, "GET", API_REGISTRY);
        (last["reason"] == "revoked").then_some(())
    });
    let Some(((), took)) = seen else {
        panic!("replica B still answers {last} {POLL_LIMIT:?} after the revocation through A");
    };
    eprintln!("replica B saw the revocation after {took:?}");
    assert_eq!(last["allowed"], false);
    let forward = b.get(
        "/api/v1/forward-auth",
        &[("PRIVATE-TOKEN", &alice), ("X-Forwarded-Method", "GET"), ("X-Forwarded-Uri", API_REGISTRY)],
    );
    assert_eq!(forward.status, 401, "a revoked token is a credential problem: {}", forward.text());

    // Created through B: usable through A.
    let body = json!({
        "name": "made on B",
        "expires_at": date_in(30),
        "grants": [{ "reach": "all_memberships", "permissions": { "issue": ["read"] } }],
    });
    let created = b.post("/api/v1/users/bob/personal_access_tokens", &admin, &body);
    assert_eq!(created.status, 201, "{}", created.text());
    let created = created.json();
    let secret = created["token"].as_str().unwrap().to_owned();
    assert_eq!(b.decide(&secret, "GET", API_ISSUES)["allowed"], true, "B applies its own write at once");
    let mut last = Value::Null;
    let seen = poll(POLL_EVERY, POLL_LIMIT, || {
        last = a.decide(&secret, "GET", API_ISSUES);
        (last["allowed"] == true).then_some(())
    });
    let Some(((), took)) = seen else {
        panic!("replica A still answers {last} {POLL_LIMIT:?} after the token was created through B");
    };
    eprintln!("replica A knew the token created through B after {took:?}");
    assert_eq!(last["user"], "bob", "{last}");
    assert_eq!(last["token_id"], created["id"], "{last}");
    let forward = a.get(
        "/api/v1/forward-auth",
        &[("PRIVATE-TOKEN", &secret), ("X-Forwarded-Method", "GET"), ("X-Forwarded-Uri", API_ISSUES)],
    );
    assert_eq!(forward.status, 200, "{}", forward.text());
    assert_eq!(forward.header("x-patgate-user"), Some("bob"));
    // And through A's management API with the same admin token.
    let shown = a.get(&format!("/api/v1/personal_access_tokens/{}", created["id"]), &admin);
    assert_eq!(shown.status, 200, "{}", shown.text());
    assert_eq!(shown.json()["name"], "made on B");

    drop(b);
    drop(a);
    drop(database);
}
