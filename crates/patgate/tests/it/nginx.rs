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
    io::{BufRead, BufReader, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
    time::Duration,
};

use crate::support::{API_ISSUES, API_REGISTRY, Patgate, TempDir, request};

/// Where Debian's `nginx` package puts the binary; `PATGATE_TEST_NGINX` overrides it.
const NGINX: &str = "/usr/sbin/nginx";

/// A request as the upstream received it.
#[derive(Clone, Debug)]
struct Seen {
    target: String,
    headers: Vec<(String, String)>,
}

impl Seen {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

/// The guarded service: answers 200 to everything and echoes the `X-Patgate-User` it
/// received, in a header and in the body.
struct Upstream {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    seen: Arc<Mutex<Vec<Seen>>>,
    thread: Option<JoinHandle<()>>,
}

impl Upstream {
    fn start() -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let thread = {
            let (stop, seen) = (stop.clone(), seen.clone());
            std::thread::spawn(move || {
                for stream in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    if let Ok(stream) = stream {
                        let _client_gone = answer(stream, &seen);
                    }
                }
            })
        };
        Upstream { addr, stop, seen, thread: Some(thread) }
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }
}

fn answer(stream: TcpStream, seen: &Mutex<Vec<Seen>>) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let target = line.split(' ').nth(1).unwrap_or_default().to_owned();
    let mut headers = Vec::new();
    loop {
        line.clear();
        if reader.read_line(&mut line)? == 0 || line.trim_end().is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            headers.push((name.trim().to_owned(), value.trim().to_owned()));
        }
    }
    let request = Seen { target, headers };
    let user = request.header("x-patgate-user").unwrap_or("").to_owned();
    seen.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(request);
    let body = format!("upstream saw X-Patgate-User: {user}\n");
    let mut stream = reader.into_inner();
    write!(
        stream,
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nX-Upstream-Saw-User: {user}\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{body}",
        body.len()
    )?;
    stream.flush()
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wakes the accept loop so that it sees the flag.
        let _woken = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(thread) = self.thread.take() {
            let _joined = thread.join();
        }
    }
}

/// nginx in the foreground, everything (prefix, pid, logs, temp paths) in `dir`; killed
/// when dropped.
struct Nginx {
    child: Child,
    addr: SocketAddr,
    error_log: PathBuf,
}

fn config(dir: &Path, port: u16, patgate: SocketAddr, upstream: SocketAddr) -> String {
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
      proxy_set_header X-Forwarded-Method $request_method;
      proxy_set_header X-Forwarded-Uri $request_uri;
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

impl Nginx {
    fn start(binary: &str, dir: &Path, patgate: SocketAddr, upstream: SocketAddr) -> Nginx {
        // The port is picked by binding :0 and released for nginx, so another process may
        // take it in between: retry on "Address already in use".
        for _attempt in 0..5 {
            let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
            let conf = dir.join("nginx.conf");
            std::fs::write(&conf, config(dir, port, patgate, upstream)).unwrap();
            let error_log = dir.join("error.log");
            let _fresh = std::fs::remove_file(&error_log);
            let mut child = Command::new(binary)
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
                .unwrap_or_else(|error| panic!("starting {binary}: {error}"));
            let addr = SocketAddr::from(([127, 0, 0, 1], port));
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            loop {
                if let Ok(Some(status)) = child.try_wait() {
                    let log = std::fs::read_to_string(&error_log).unwrap_or_default();
                    if log.contains("Address already in use") {
                        break;
                    }
                    panic!("nginx exited ({status}):\n{log}");
                }
                if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                    return Nginx { child, addr, error_log };
                }
                if std::time::Instant::now() > deadline {
                    let _killed = child.kill();
                    let _status = child.wait();
                    let log = std::fs::read_to_string(&error_log).unwrap_or_default();
                    panic!("nginx did not listen on {addr} within 10 s:\n{log}");
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        panic!("nginx: no free loopback port after 5 attempts");
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _already_gone = self.child.kill();
        let _status = self.child.wait();
        if std::thread::panicking() {
            eprintln!("---- nginx error log ({})", self.addr);
            eprintln!("{}", std::fs::read_to_string(&self.error_log).unwrap_or_default());
        }
    }
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
    let nginx = Nginx::start(&binary, &nginx_dir, patgate.addr, upstream.addr);

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
