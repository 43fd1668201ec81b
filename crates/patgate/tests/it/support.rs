//! What the end-to-end tests share: temporary directories, `patgate serve` as a child
//! process, and a tiny HTTP/1.1 client over `std::net::TcpStream`.

use std::{
    collections::HashMap,
    io::{BufRead, BufReader, Read, Write},
    net::{SocketAddr, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
        mpsc,
    },
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use patgate_core::Timestamp;
use serde_json::Value;

/// The registry of the announcement's CI example, on which alice's demo token holds
/// Container Registry create + read.
pub const API_REGISTRY: &str = "/api/v4/projects/acme%2Fplatform%2Fapi/registry/repositories";

/// The issues of the same project: outside alice's demo token.
pub const API_ISSUES: &str = "/api/v4/projects/acme%2Fplatform%2Fapi/issues";

/// How long a child process may take to start serving.
const START_TIMEOUT: Duration = Duration::from_secs(60);

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// A directory of its own under the system's temporary directory, removed when dropped
/// (kept, and named, when the test failed).
#[derive(Debug)]
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    pub fn new(label: &str) -> TempDir {
        let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
        let name =
            format!("patgate-it-{label}-{}-{}-{nanos}", std::process::id(), COUNTER.fetch_add(1, Ordering::Relaxed));
        let path = std::env::temp_dir().join(name);
        std::fs::create_dir_all(&path).unwrap();
        TempDir { path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("(kept {} for inspection)", self.path.display());
        } else {
            let _ignored = std::fs::remove_dir_all(&self.path);
        }
    }
}

/// A day `days` from today (UTC) as `YYYY-MM-DD`, for `expires_at`.
pub fn date_in(days: i64) -> String {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs();
    let (year, month, day) = Timestamp(i64::try_from(now).unwrap()).plus_days(days).date();
    format!("{year:04}-{month:02}-{day:02}")
}

/// `patgate serve` as a child process on `127.0.0.1:0`, killed when dropped.
#[derive(Debug)]
pub struct Patgate {
    name: String,
    child: Child,
    pub addr: SocketAddr,
    log: Arc<Mutex<Vec<String>>>,
    /// The demo tokens printed on stderr, by user (`alice`, `bob`, `dave`).
    pub demo_tokens: HashMap<String, String>,
}

impl Patgate {
    /// Starts `patgate serve --listen 127.0.0.1:0 ARGS…` in `dir` and waits for
    /// "patgate: serving on http://ADDR" on its stderr.
    pub fn start(name: &str, dir: &Path, args: &[&str]) -> Patgate {
        let mut child = Command::new(env!("CARGO_BIN_EXE_patgate"))
            .args(["serve", "--listen", "127.0.0.1:0"])
            .args(args)
            .current_dir(dir)
            .env_remove("PATGATE_TRUSTED_PROXIES")
            .env("PATGATE_LOG", "patgate=info,warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|error| panic!("starting {}: {error}", env!("CARGO_BIN_EXE_patgate")));
        let stderr = child.stderr.take().unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let (lines, heard) = mpsc::channel();
        {
            let log = log.clone();
            // Keeps draining stderr for the life of the process, so it never blocks on a full pipe.
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines() {
                    let Ok(line) = line else { break };
                    log.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(line.clone());
                    let _receiver_gone = lines.send(line);
                }
            });
        }
        let mut server = Patgate {
            name: name.to_owned(),
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            log,
            demo_tokens: HashMap::new(),
        };
        let deadline = std::time::Instant::now() + START_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match heard.recv_timeout(left) {
                Ok(line) => {
                    if let Some(address) = line.strip_prefix("patgate: serving on http://") {
                        server.addr = address.trim().parse().unwrap();
                        break;
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => panic!("{name}: not serving after {START_TIMEOUT:?}"),
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    let status = server.child.wait().ok();
                    panic!("{name}: exited before serving ({status:?})");
                }
            }
        }
        server.demo_tokens = demo_tokens(&server.log());
        server
    }

    /// Asks the server to stop (SIGTERM, as a service manager does) and waits for it to
    /// exit; whether it exited successfully.
    pub fn terminate(&mut self) -> bool {
        let pid = self.child.id().to_string();
        let sent = Command::new("kill").args(["-TERM", &pid]).status().is_ok_and(|status| status.success());
        assert!(sent, "{}: kill -TERM {pid} failed", self.name);
        self.child.wait().is_ok_and(|status| status.success())
    }

    /// `patgate serve --demo` on `sqlite://patgate.db` in `dir`, and the first admin's token.
    pub fn demo(name: &str, dir: &Path) -> (Patgate, String) {
        let admin_file = dir.join("admin.token");
        let admin_file = admin_file.to_str().unwrap();
        let args = ["--database-url", "sqlite://patgate.db", "--demo", "--bootstrap-token-file", admin_file];
        let server = Patgate::start(name, dir, &args);
        let admin = std::fs::read_to_string(admin_file).unwrap().trim().to_owned();
        (server, admin)
    }

    /// Everything the process wrote to stderr so far.
    pub fn log(&self) -> Vec<String> {
        self.log.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    /// The demo token of `user`.
    pub fn demo_token(&self, user: &str) -> &str {
        self.demo_tokens.get(user).unwrap_or_else(|| panic!("{}: no demo token for {user} on stderr", self.name))
    }

    pub fn get(&self, path: &str, headers: &[(&str, &str)]) -> Response {
        request(self.addr, "GET", path, headers, None)
    }

    pub fn post(&self, path: &str, headers: &[(&str, &str)], body: &Value) -> Response {
        request(self.addr, "POST", path, headers, Some(body))
    }

    pub fn delete(&self, path: &str, headers: &[(&str, &str)]) -> Response {
        request(self.addr, "DELETE", path, headers, None)
    }

    /// `POST /api/v1/decide` for `token` on `method path`: the JSON answer.
    pub fn decide(&self, token: &str, method: &str, path: &str) -> Value {
        let body = serde_json::json!({ "token": token, "method": method, "path": path });
        let response = self.post("/api/v1/decide", &[], &body);
        assert_eq!(response.status, 200, "{}: decide: {}", self.name, response.text());
        response.json()
    }
}

impl Drop for Patgate {
    fn drop(&mut self) {
        let _already_gone = self.child.kill();
        let _status = self.child.wait();
        if std::thread::panicking() {
            eprintln!("---- stderr of {} ({})", self.name, self.addr);
            for line in self.log() {
                eprintln!("{line}");
            }
        }
    }
}

/// The tokens `--demo` prints: "  alice: description" followed by "    TOKEN".
fn demo_tokens(log: &[String]) -> HashMap<String, String> {
    let mut tokens = HashMap::new();
    for pair in log.windows(2) {
        let (Some(described), Some(token)) = (pair[0].strip_prefix("  "), pair[1].strip_prefix("    ")) else {
            continue;
        };
        if described.starts_with(' ') {
            continue;
        }
        if let Some((user, _)) = described.split_once(':') {
            tokens.insert(user.to_owned(), token.trim().to_owned());
        }
    }
    tokens
}

/// An HTTP response, read to the end.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    /// The first header called `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    /// Every header called `name` (case-insensitive).
    pub fn all(&self, name: &str) -> Vec<&str> {
        self.headers.iter().filter(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str()).collect()
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|error| panic!("not JSON ({error}): {:?} {}", self.status, self.text()))
    }
}

/// One request on a fresh connection (`Connection: close`), the answer read to the end.
pub fn request(addr: SocketAddr, method: &str, path: &str, headers: &[(&str, &str)], body: Option<&Value>) -> Response {
    try_request(addr, method, path, headers, body)
        .unwrap_or_else(|error| panic!("{method} http://{addr}{path}: {error}"))
}

fn try_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&Value>,
) -> std::io::Result<Response> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    stream.set_read_timeout(Some(Duration::from_secs(15)))?;
    stream.set_write_timeout(Some(Duration::from_secs(15)))?;
    let body = body.map(|value| value.to_string()).unwrap_or_default();
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    if !body.is_empty() {
        head.push_str(&format!("Content-Type: application/json\r\nContent-Length: {}\r\n", body.len()));
    } else if method != "GET" {
        head.push_str("Content-Length: 0\r\n");
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes())?;
    stream.write_all(body.as_bytes())?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    parse_response(&raw).ok_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("malformed response: {:?}", String::from_utf8_lossy(&raw)),
        )
    })
}

fn parse_response(raw: &[u8]) -> Option<Response> {
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&raw[..split]).ok()?;
    let mut lines = head.split("\r\n");
    let status = lines.next()?.split(' ').nth(1)?.parse().ok()?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.trim().to_owned(), value.trim().to_owned()))
        .collect();
    let rest = &raw[split + 4..];
    let chunked =
        headers.iter().any(|(n, v)| n.eq_ignore_ascii_case("transfer-encoding") && v.eq_ignore_ascii_case("chunked"));
    let body = if chunked { dechunk(rest)? } else { rest.to_vec() };
    Some(Response { status, headers, body })
}

fn dechunk(mut rest: &[u8]) -> Option<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let line_end = rest.windows(2).position(|w| w == b"\r\n")?;
        let size_text = std::str::from_utf8(&rest[..line_end]).ok()?;
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        rest = &rest[line_end + 2..];
        if size == 0 {
            return Some(body);
        }
        body.extend_from_slice(rest.get(..size)?);
        rest = rest.get(size + 2..)?;
    }
}

/// Polls `probe` every `every` until it returns `Some`, or gives up after `limit`;
/// returns the value and how long it took.
pub fn poll<T>(every: Duration, limit: Duration, mut probe: impl FnMut() -> Option<T>) -> Option<(T, Duration)> {
    let started = std::time::Instant::now();
    loop {
        if let Some(value) = probe() {
            return Some((value, started.elapsed()));
        }
        if started.elapsed() >= limit {
            return None;
        }
        std::thread::sleep(every);
    }
}

/// A fresh database on the server of `PATGATE_TEST_POSTGRES_URL`, dropped when this is.
pub struct TempDatabase {
    admin_url: String,
    name: String,
    pub url: String,
}

pub fn psql(url: &str, sql: &str) -> Result<(), String> {
    let output = Command::new("psql")
        .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", url, "-c", sql])
        .output()
        .map_err(|error| format!("running psql: {error}"))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!("psql -c {sql:?}: {}", String::from_utf8_lossy(&output.stderr)))
    }
}

/// `url` with its database name replaced by `database` (the query string kept).
pub fn with_database(url: &str, database: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (url, None),
    };
    let scheme_end = base.find("://").map_or(0, |i| i + 3);
    let authority_end = base[scheme_end..].find('/').map_or(base.len(), |i| scheme_end + i);
    let mut out = format!("{}/{database}", &base[..authority_end]);
    if let Some(query) = query {
        out.push('?');
        out.push_str(query);
    }
    out
}

impl TempDatabase {
    pub fn create(admin_url: &str, label: &str) -> TempDatabase {
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos();
        let name = format!("patgate_it_{label}_{}_{nanos}", std::process::id());
        psql(admin_url, &format!("CREATE DATABASE {name}")).unwrap();
        TempDatabase { admin_url: admin_url.to_owned(), url: with_database(admin_url, &name), name }
    }
}

impl Drop for TempDatabase {
    fn drop(&mut self) {
        if let Err(error) = psql(&self.admin_url, &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name)) {
            eprintln!("dropping the test database: {error}");
        }
    }
}

pub fn postgres_url(test: &str) -> Option<String> {
    match std::env::var("PATGATE_TEST_POSTGRES_URL") {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            eprintln!("SKIPPED {test}: PATGATE_TEST_POSTGRES_URL is not set (the CI sets it)");
            None
        }
    }
}

/// The rows `sql` returns from `url`, one line each, columns separated by `|`.
pub fn psql_rows(url: &str, sql: &str) -> Vec<String> {
    let output = Command::new("psql")
        .args(["-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-d", url, "-c", sql])
        .output()
        .unwrap_or_else(|error| panic!("running psql: {error}"));
    assert!(output.status.success(), "psql -c {sql:?}: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8_lossy(&output.stdout).lines().filter(|line| !line.is_empty()).map(str::to_owned).collect()
}
