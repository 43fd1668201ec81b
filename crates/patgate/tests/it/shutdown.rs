//! A clean shutdown loses no recorded use: `patgate serve` is stopped with SIGTERM right
//! after a token was used (before the periodic flush, every 5 s, is likely to have run);
//! after a restart the token shows its last use and the permission it used.

use serde_json::Value;

use crate::support::{Patgate, TempDir};

#[test]
fn a_clean_shutdown_flushes_recorded_use() {
    let dir = TempDir::new("shutdown");
    let (mut server, admin) = Patgate::demo("shutdown", dir.path());
    let admin = [("PRIVATE-TOKEN", admin.as_str())];
    let alice = server.demo_token("alice").to_owned();
    let registry = "/api/v4/projects/acme%2Fplatform%2Fapi/registry/repositories";
    assert_eq!(server.decide(&alice, "GET", registry)["reason"], "allowed");
    assert!(server.terminate(), "patgate did not exit cleanly on SIGTERM");
    assert!(
        server.log().iter().any(|line| line.contains("usage flushed at shutdown")),
        "no flush at shutdown: {:?}",
        server.log()
    );

    let server = Patgate::start("shutdown", dir.path(), &["--database-url", "sqlite://patgate.db"]);
    let listed = server.get("/api/v1/personal_access_tokens?user=alice", &admin);
    assert_eq!(listed.status, 200, "{}", listed.text());
    let tokens: Value = listed.json();
    let token = &tokens[0];
    assert!(token["last_used_at"].is_string(), "the use was lost: {token}");
    assert_eq!(token["last_ips"], serde_json::json!([]), "decide named no client address");
    // The permission it used is known: only the push it never made is unused.
    assert_eq!(token["unused_permissions"], serde_json::json!(["container_registry:create"]), "{token}");
}
