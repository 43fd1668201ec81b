//! A real nginx in front of a small upstream, asking patgate through `auth_request`.
//!
//! nginx 1.22 facts this configuration relies on (checked by this test):
//! - On a 401 from the auth subrequest, `ngx_http_auth_request_module` itself copies the
//!   auth response's `WWW-Authenticate` to the client response, and the copy survives
//!   `error_page 401 = @unauthorized`. Adding `add_header WWW-Authenticate $auth_www always`
//!   in the named location as well sends the header twice, so the location does not.
//! - `auth_request_set` variables are still set in a named `error_page` location, so a
//!   403 can carry patgate's `X-Patgate-Missing-Permission`.

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

/// Where Debian's `nginx` package puts the binary; `PATGATE_TEST_NGINX` overrides it.
const NGINX: &str = "/usr/sbin/nginx";

/// How the auth subrequest names the original request to patgate: the `X-Forwarded-*`
/// pair the README configures.
const FORWARDED_PAIR: &str = "proxy_set_header X-Forwarded-Method $request_method;
      proxy_set_header X-Forwarded-Uri $request_uri;";

/// The configuration protocols.md §3 shows (the `X-Original-*` pair), plus the client's
/// address appended to `X-Forwarded-For`, from a source address of its own (so that only
/// nginx, not the test's client on 127.0.0.1, is patgate's trusted proxy).
const ORIGINAL_PAIR: &str = "proxy_set_header X-Original-URI $request_uri;
      proxy_set_header X-Original-Method $request_method;
      proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
      proxy_bind 127.0.0.2;";

fn config(dir: &Path, port: u16, patgate: SocketAddr, upstream: SocketAddr, names_request: &str) -> String {
    let dir = dir.display();
    format!(
        r#"daemon off;
master_process off;
worker_processes 1;
pid {dir}/nginx.pid;
error_log {dir}/error.log info;
events {{ worker_connections 64; }}
http {{
  access_log {dir}/access.log;
  client_body_temp_path {dir}/client_body;
  proxy_temp_path {dir}/proxy;
  fastcgi_temp_path {dir}/fastcgi;
  uwsgi_temp_path {dir}/uwsgi;
  scgi_temp_path {dir}/scgi;
  server {{
    listen 127.0.0.1:{port};
    location / {{
      auth_request /_patgate_auth;
      auth_request_set $patgate_user $upstream_http_x_patgate_user;
      auth_request_set $patgate_missing $upstream_http_x_patgate_missing_permission;
      error_page 401 = @unauthorized;
      error_page 403 = @forbidden;
      proxy_set_header X-Patgate-User $patgate_user;
      proxy_pass http://{upstream};
    }}
    location = /_patgate_auth {{
      internal;
      proxy_pass http://{patgate}/api/v1/forward-auth;
      proxy_pass_request_body off;
      proxy_set_header Content-Length "";
      {names_request}
    }}
    # The auth response's WWW-Authenticate is already copied by auth_request (nginx 1.22).
    location @unauthorized {{
      default_type application/json;
      return 401 '{{"error":"invalid_token"}}\n';
    }}
    location @forbidden {{
      default_type application/json;
      add_header X-Patgate-Missing-Permission $patgate_missing always;
      return 403 '{{"error":"insufficient_scope"}}\n';
    }}
  }}
}}
"#
    )
}

/// nginx in the foreground (no master process, one worker), everything (prefix, pid, logs,
/// temp paths) in `dir`.
fn start_nginx(binary: &str, dir: &Path, patgate: SocketAddr, upstream: SocketAddr, names_request: &str) -> Proxy {
    let conf = dir.join("nginx.conf");
    let error_log = dir.join("error.log");
    let spawn = |port| {
        std::fs::write(&conf, config(dir, port, patgate, upstream, names_request)).unwrap();
        Command::new(binary)
            .arg("-p")
            .arg(dir)
            .arg("-c")
            .arg(&conf)
            .arg("-e")
            .arg(&error_log)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|error| panic!("starting {binary}: {error}"))
    };
    start_on_free_port("nginx", error_log.clone(), Duration::from_secs(10), spawn, |_| true)
}

/// The nginx binary to use, or `None` (with a message) when the test is to be skipped:
/// only outside CI. Under `CI`, a missing nginx fails the test.
fn nginx_binary() -> Option<String> {
    let binary = std::env::var("PATGATE_TEST_NGINX").unwrap_or_else(|_| NGINX.to_owned());
    if Path::new(&binary).exists() {
        return Some(binary);
    }
    if std::env::var_os("CI").is_some() {
        panic!("{binary} is missing and CI is set: install nginx (`apt-get install -y nginx`)");
    }
    eprintln!("SKIPPED nginx_auth_request: {binary} is missing (install the nginx package; under CI this fails)");
    None
}

#[test]
fn nginx_auth_request() {
    let Some(binary) = nginx_binary() else { return };
    let dir = TempDir::new("nginx");
    let patgate_dir = dir.path().join("patgate");
    let nginx_dir = dir.path().join("nginx");
    std::fs::create_dir_all(&patgate_dir).unwrap();
    std::fs::create_dir_all(&nginx_dir).unwrap();
    let patgate = Patgate::start("patgate", &patgate_dir, &["--database-url", "sqlite://patgate.db", "--demo"]);
    let alice = patgate.demo_token("alice").to_owned();
    let upstream = Upstream::start();
    let nginx = start_nginx(&binary, &nginx_dir, patgate.addr, upstream.addr, FORWARDED_PAIR);

    // Allowed: reaches the upstream as alice, whatever X-Patgate-User the client claims.
    let allowed =
        request(nginx.addr, "GET", API_REGISTRY, &[("PRIVATE-TOKEN", &alice), ("X-Patgate-User", "mallory")], None);
    assert_eq!(allowed.status, 200, "{allowed:?}");
    assert_eq!(allowed.header("x-upstream-saw-user"), Some("alice"), "{allowed:?}");
    assert_eq!(allowed.text(), "upstream saw X-Patgate-User: alice\n");
    let seen = upstream.seen();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(seen[0].target, API_REGISTRY);
    assert_eq!(seen[0].header("x-patgate-user"), Some("alice"));

    // Also with Authorization: Bearer, and with a query string (X-Forwarded-Uri is $request_uri).
    let bearer = format!("Bearer {alice}");
    let with_query = format!("{API_REGISTRY}?tags=true");
    let allowed = request(nginx.addr, "GET", &with_query, &[("Authorization", &bearer)], None);
    assert_eq!(allowed.status, 200, "{allowed:?}");
    assert_eq!(allowed.header("x-upstream-saw-user"), Some("alice"));

    // Outside the token's permissions: 403, with the missing permission, never upstream.
    let denied = request(nginx.addr, "GET", API_ISSUES, &[("PRIVATE-TOKEN", &alice)], None);
    assert_eq!(denied.status, 403, "{denied:?}");
    assert_eq!(denied.header("x-patgate-missing-permission"), Some("issue:read"), "{denied:?}");
    let delete = request(nginx.addr, "DELETE", API_REGISTRY, &[("PRIVATE-TOKEN", &alice)], None);
    assert_eq!(delete.status, 403, "{delete:?}");

    // No token, or an unknown one: 401 with exactly one WWW-Authenticate, never upstream.
    for headers in [vec![], vec![("PRIVATE-TOKEN", "pgfgt-notarealtoken")]] {
        let unauthorized = request(nginx.addr, "GET", API_REGISTRY, &headers, None);
        assert_eq!(unauthorized.status, 401, "{unauthorized:?}");
        let challenges = unauthorized.all("www-authenticate");
        assert_eq!(challenges.len(), 1, "{unauthorized:?}");
        assert!(challenges[0].starts_with("Bearer realm=\"patgate\""), "{unauthorized:?}");
        assert_eq!(unauthorized.json()["error"], "invalid_token");
    }
    assert_eq!(upstream.seen().len(), 2, "only the allowed requests reach the upstream");
}

/// protocols.md's configuration passes the client's own headers to patgate too: a client
/// must not rename its request with an `X-Forwarded-*` pair, nor choose its address with
/// `X-Forwarded-For`; and a public read outside the token's grants reaches the upstream
/// without a user.
#[test]
fn nginx_auth_request_with_the_original_headers() {
    let Some(binary) = nginx_binary() else { return };
    let dir = TempDir::new("nginx-original");
    let patgate_dir = dir.path().join("patgate");
    let nginx_dir = dir.path().join("nginx");
    std::fs::create_dir_all(&patgate_dir).unwrap();
    std::fs::create_dir_all(&nginx_dir).unwrap();
    let admin_file = patgate_dir.join("admin.token");
    let args = [
        "--database-url",
        "sqlite://patgate.db",
        "--demo",
        "--trusted-proxy",
        "127.0.0.2/32",
        "--bootstrap-token-file",
        admin_file.to_str().unwrap(),
    ];
    let patgate = Patgate::start("patgate", &patgate_dir, &args);
    let admin = std::fs::read_to_string(&admin_file).unwrap().trim().to_owned();
    let alice = patgate.demo_token("alice").to_owned();
    let upstream = Upstream::start();
    let nginx = start_nginx(&binary, &nginx_dir, patgate.addr, upstream.addr, ORIGINAL_PAIR);

    let allowed = request(nginx.addr, "GET", API_REGISTRY, &[("PRIVATE-TOKEN", &alice)], None);
    assert_eq!(allowed.status, 200, "{allowed:?}");
    assert_eq!(allowed.header("x-upstream-saw-user"), Some("alice"), "{allowed:?}");

    // A DELETE the token may not make, passed off as a GET (or as another path).
    let delete = format!("{API_REGISTRY}/1");
    for smuggled in [("X-Forwarded-Method", "GET"), ("X-Forwarded-Uri", API_REGISTRY)] {
        let refused = request(nginx.addr, "DELETE", &delete, &[("PRIVATE-TOKEN", &alice), smuggled], None);
        assert_eq!(refused.status, 403, "{smuggled:?}: {refused:?}");
    }
    let both = [("PRIVATE-TOKEN", alice.as_str()), ("X-Forwarded-Method", "GET"), ("X-Forwarded-Uri", API_REGISTRY)];
    assert_eq!(request(nginx.addr, "DELETE", &delete, &both, None).status, 403);
    assert_eq!(upstream.seen().len(), 1, "no refused request reaches the upstream");

    // A public project's issues, outside alice's grants: served to no one in particular,
    // whatever X-Patgate-User the client claims.
    let public = "/api/v4/projects/acme%2Fweb%2Fsite/issues";
    let anonymous =
        request(nginx.addr, "GET", public, &[("PRIVATE-TOKEN", &alice), ("X-Patgate-User", "mallory")], None);
    assert_eq!(anonymous.status, 200, "{anonymous:?}");
    let seen = upstream.seen();
    assert_eq!(seen.last().map(|seen| seen.target.as_str()), Some(public));
    assert_eq!(seen.last().and_then(|seen| seen.header("x-patgate-user")), None, "{seen:?}");

    // A token for 127.0.0.1 only (the test's client address, which nginx appends).
    let pinned = allowlisted_token(&patgate, &admin, "127.0.0.1/32");
    let from_here = request(nginx.addr, "GET", API_REGISTRY, &[("PRIVATE-TOKEN", &pinned)], None);
    assert_eq!(from_here.status, 200, "{from_here:?}");
    // Claiming another address changes nothing: nginx appends the real one, and that one counts.
    let claimed = [("PRIVATE-TOKEN", pinned.as_str()), ("X-Forwarded-For", "192.0.2.44")];
    assert_eq!(request(nginx.addr, "GET", API_REGISTRY, &claimed, None).status, 200);
    // And a token for another address is refused from here, whatever the client claims.
    let office = allowlisted_token(&patgate, &admin, "192.0.2.0/24");
    let spoofed = [("PRIVATE-TOKEN", office.as_str()), ("X-Forwarded-For", "192.0.2.44")];
    let refused = request(nginx.addr, "GET", API_REGISTRY, &spoofed, None);
    assert_eq!(refused.status, 401, "{refused:?}");
}

/// A token of alice's (container registry read on acme/platform/api) usable from `range`
/// only, made by the admin.
fn allowlisted_token(patgate: &Patgate, admin: &str, range: &str) -> String {
    let made = request(
        patgate.addr,
        "POST",
        "/api/v1/users/alice/personal_access_tokens",
        &[("PRIVATE-TOKEN", admin), ("Content-Type", "application/json")],
        Some(&serde_json::json!({
            "name": format!("from {range}"), "expires_at": crate::support::date_in(30), "allowed_ips": [range],
            "grants": [{ "reach": "selected", "projects": ["acme/platform/api"], "permissions": { "container_registry": ["read"] } }]
        })),
    );
    assert_eq!(made.status, 201, "{made:?}");
    made.json()["token"].as_str().unwrap().to_owned()
}
