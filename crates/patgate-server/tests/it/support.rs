//! One service per test: a fresh database (an SQLite file, or a PostgreSQL database of its
//! own for the tests that run on both backends), a fixed clock at 2026-11-28T12:00:00Z, the
//! first admin's token and the demo organisation (`bootstrap::seed_demo`).

use std::{
    net::{IpAddr, SocketAddr},
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicI64, AtomicUsize, Ordering},
    },
    time::{SystemTime, UNIX_EPOCH},
};

use axum::{
    Router,
    body::Body,
    extract::connect_info::{ConnectInfo, MockConnectInfo},
    http::{HeaderMap, Request, StatusCode, header},
};
use http_body_util::BodyExt;
use patgate_core::{DigestKey, Resources, Timestamp, TokenFormat, catalog::Catalog, net::IpNet};
use patgate_server::{Clock, Shared, bootstrap, webhook::WebhookSecret};
use patgate_store::{SqlStore, Store, WebhookTarget};
use serde_json::{Value, json};
use sqlx::Connection;
use tower::ServiceExt;

/// The peer address of requests that do not name one: a trusted (loopback) proxy.
pub const LOOPBACK_PEER: &str = "127.0.0.1";

/// The registry of the announcement's CI example, on which alice's demo token holds
/// Container Registry create + read.
pub const API_REGISTRY: &str = "/api/v4/projects/acme%2Fplatform%2Fapi/registry/repositories";

/// Seconds since the epoch of `year-month-day hour:minute:second` UTC.
pub fn at(year: i32, month: u32, day: u32, hour: i64, minute: i64, second: i64) -> i64 {
    Timestamp::from_date(year, month, day).unwrap().0 + hour * 3600 + minute * 60 + second
}

/// The instant every test starts at: 2026-11-28T12:00:00Z.
pub fn start() -> i64 {
    at(2026, 11, 28, 12, 0, 0)
}

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// A name no other test of any run uses.
fn unique(prefix: &str) -> String {
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
    format!("{prefix}_{}_{}_{nanos}", std::process::id(), COUNTER.fetch_add(1, Ordering::Relaxed))
}

/// Where a test's service keeps its data.
#[derive(Debug, Clone)]
pub enum Backend {
    Sqlite,
    /// The server at this URL (trust auth); each test creates and drops a database of its own.
    Postgres(String),
}

impl Backend {
    /// PostgreSQL, when `PATGATE_TEST_POSTGRES_URL` names a server (the CI sets it).
    pub fn postgres() -> Option<Backend> {
        std::env::var("PATGATE_TEST_POSTGRES_URL").ok().map(Backend::Postgres)
    }
}

/// Runs each named `async fn name(backend: Backend)` as two tests, `sqlite::name` and
/// `postgres::name` (which passes without running when no PostgreSQL is configured).
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::support::Backend::Sqlite).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    if let Some(backend) = $crate::support::Backend::postgres() {
                        super::$name(backend).await;
                    }
                }
            )*
        }
    };
}
pub(crate) use on_both_backends;

/// A database of its own, removed when dropped.
#[derive(Debug)]
enum TempDatabase {
    /// An SQLite file (and its WAL files).
    File(PathBuf),
    Postgres {
        admin_url: String,
        name: String,
    },
}

impl TempDatabase {
    async fn create(backend: &Backend) -> TempDatabase {
        match backend {
            Backend::Sqlite => {
                TempDatabase::File(std::env::temp_dir().join(format!("{}.db", unique("patgate_server_it"))))
            }
            Backend::Postgres(admin_url) => {
                let name = unique("patgate_server_it");
                let mut admin = sqlx::PgConnection::connect(admin_url).await.unwrap();
                // An English ICU collation, as production databases often have (see
                // patgate-store's tests): nothing may depend on the server's default.
                sqlx::query(sqlx::AssertSqlSafe(format!(
                    "CREATE DATABASE {name} TEMPLATE template0 LOCALE_PROVIDER icu ICU_LOCALE 'en-US' LOCALE 'C.UTF-8'"
                )))
                .execute(&mut admin)
                .await
                .unwrap();
                TempDatabase::Postgres { admin_url: admin_url.clone(), name }
            }
        }
    }

    fn url(&self) -> String {
        match self {
            TempDatabase::File(path) => format!("sqlite://{}", path.display()),
            TempDatabase::Postgres { admin_url, name } => {
                let (base, _) = admin_url.rsplit_once('/').unwrap();
                format!("{base}/{name}")
            }
        }
    }
}

impl Drop for TempDatabase {
    fn drop(&mut self) {
        match self {
            TempDatabase::File(path) => {
                for suffix in ["", "-wal", "-shm"] {
                    let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
                }
            }
            TempDatabase::Postgres { admin_url, name } => {
                let (admin_url, name) = (admin_url.clone(), name.clone());
                // Dropping needs async; a short-lived runtime on its own thread does it.
                let _ = std::thread::spawn(move || {
                    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().ok()?;
                    runtime.block_on(async {
                        let mut admin = sqlx::PgConnection::connect(&admin_url).await.ok()?;
                        let drop = format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)");
                        sqlx::query(sqlx::AssertSqlSafe(drop)).execute(&mut admin).await.ok()
                    })
                })
                .join();
            }
        }
    }
}

/// A response, read to the end.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
}

impl Reply {
    /// The body as JSON; fails the test when it is not JSON.
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|error| unreachable!("{} body is not JSON ({error}): {}", self.status, self.text()))
    }

    /// The body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// A header's value, if present.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|value| value.to_str().ok())
    }

    /// Asserts the status, showing the body when it differs.
    #[track_caller]
    pub fn expect(&self, status: u16) -> &Reply {
        assert_eq!(self.status.as_u16(), status, "unexpected status; body: {}", self.text());
        self
    }

    /// Asserts an API error: the status, a JSON body `{"error": code, "message": …}`.
    #[track_caller]
    pub fn expect_error(&self, status: u16, code: &str) -> Value {
        self.expect(status);
        let body = self.json();
        assert_eq!(body["error"], code, "{body}");
        assert!(body["message"].as_str().is_some_and(|m| !m.is_empty()), "no message: {body}");
        body
    }
}

/// The service under test and what a test needs to drive it.
#[derive(Debug)]
pub struct App {
    pub router: Router,
    pub shared: Arc<Shared>,
    pub now: Arc<AtomicI64>,
    /// The first admin's token (`api`, `admin_mode`).
    pub admin: String,
    /// alice: Container Registry create + read on acme/platform/api (selected).
    pub alice: String,
    /// bob: issues and merge requests read across all his memberships.
    pub bob: String,
    /// dave: legacy `read_api`, Reporter on acme/platform/api only.
    pub dave: String,
    secret: [u8; 32],
    // Dropped last: the file outlives every handle on it.
    _database: TempDatabase,
}

impl App {
    /// A fresh service built as `patgate serve --demo` builds it, on a fixed clock.
    pub async fn new() -> App {
        App::on(&Backend::Sqlite).await
    }

    /// [`App::new`] on `backend`.
    pub async fn on(backend: &Backend) -> App {
        App::with_webhooks(backend, Vec::new(), None).await
    }

    /// [`App::on`], delivering audit events to `webhooks`, signed with `webhook_secret`
    /// (at least 16 bytes) when given.
    pub async fn with_webhooks(backend: &Backend, webhooks: Vec<WebhookTarget>, webhook_secret: Option<&[u8]>) -> App {
        App::build(backend, webhooks, webhook_secret, None).await
    }

    /// [`App::new`] on `backend`, signing in the web UI's users that a trusted (loopback)
    /// proxy names in the header `name` (`ui_trusted_user_header`).
    pub async fn with_trusted_user_header(backend: &Backend, name: &str) -> App {
        App::build(backend, Vec::new(), None, Some(name)).await
    }

    async fn build(
        backend: &Backend,
        webhooks: Vec<WebhookTarget>,
        webhook_secret: Option<&[u8]>,
        trusted_user_header: Option<&str>,
    ) -> App {
        let database = TempDatabase::create(backend).await;
        let resources = Resources::builtin().unwrap();
        let catalog = Catalog::builtin(&resources).unwrap();
        let store =
            SqlStore::connect(&database.url(), Arc::new(resources.clone())).await.unwrap().with_webhooks(webhooks);
        let mut secret = [0_u8; 32];
        getrandom::fill(&mut secret).unwrap();
        let key = DigestKey::new(&secret).unwrap();
        let trusted = vec!["127.0.0.0/8".parse::<IpNet>().unwrap()];
        let now = Arc::new(AtomicI64::new(start()));
        let mut shared =
            Shared::load(store, resources, catalog, key, trusted, Clock::Fixed(now.clone())).await.unwrap();
        shared.webhook_secret = webhook_secret.map(|secret| WebhookSecret::new(secret).unwrap());
        shared.ui_trusted_user_header = trusted_user_header.map(|name| name.parse().unwrap());
        let shared = Arc::new(shared);
        let admin = bootstrap::ensure_admin(&shared).await.unwrap().unwrap().expose_secret().to_owned();
        let demo = bootstrap::seed_demo(&shared).await.unwrap();
        let demo_token = |owner: &str| {
            demo.iter()
                .find(|(description, _)| description.starts_with(&format!("{owner}:")))
                .map(|(_, token)| token.expose_secret().to_owned())
                .unwrap()
        };
        let (alice, bob, dave) = (demo_token("alice"), demo_token("bob"), demo_token("dave"));
        let peer = SocketAddr::new(LOOPBACK_PEER.parse().unwrap(), 41_000);
        let router = patgate_server::router(shared.clone()).layer(MockConnectInfo(peer));
        App { router, shared, now, admin, alice, bob, dave, secret, _database: database }
    }

    /// Another replica on this service's database, on the same clock and secret, loaded
    /// now: it learns of later changes only when it catches up.
    pub async fn replica(&self) -> Replica {
        let resources = Resources::builtin().unwrap();
        let catalog = Catalog::builtin(&resources).unwrap();
        let store = SqlStore::connect(&self._database.url(), Arc::new(resources.clone())).await.unwrap();
        let key = DigestKey::new(&self.secret).unwrap();
        let trusted = vec!["127.0.0.0/8".parse::<IpNet>().unwrap()];
        let shared = Arc::new(
            Shared::load(store, resources, catalog, key, trusted, Clock::Fixed(self.now.clone())).await.unwrap(),
        );
        let peer = SocketAddr::new(LOOPBACK_PEER.parse().unwrap(), 41_000);
        Replica { router: patgate_server::router(shared.clone()).layer(MockConnectInfo(peer)), shared }
    }

    /// Moves the fixed clock to `seconds` since the epoch.
    pub fn set_now(&self, seconds: i64) {
        self.now.store(seconds, Ordering::SeqCst);
    }

    /// Sends one request through the router.
    pub async fn send(&self, request: Request<Body>) -> Reply {
        let response = self.router.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let body = response.into_body().collect().await.unwrap().to_bytes().to_vec();
        Reply { status, headers, body }
    }

    /// A request with an optional `PRIVATE-TOKEN` and an optional JSON body.
    pub async fn call(&self, method: &str, uri: &str, token: Option<&str>, body: Option<&Value>) -> Reply {
        let mut builder = Request::builder().method(method).uri(uri);
        if let Some(token) = token {
            builder = builder.header("private-token", token);
        }
        let body = match body {
            Some(value) => {
                builder = builder.header(header::CONTENT_TYPE, "application/json");
                Body::from(serde_json::to_vec(value).unwrap())
            }
            None => Body::empty(),
        };
        self.send(builder.body(body).unwrap()).await
    }

    /// A request with a raw body sent as JSON.
    pub async fn call_raw(&self, method: &str, uri: &str, token: Option<&str>, body: impl Into<Body>) -> Reply {
        let mut builder = Request::builder().method(method).uri(uri).header(header::CONTENT_TYPE, "application/json");
        if let Some(token) = token {
            builder = builder.header("private-token", token);
        }
        self.send(builder.body(body.into()).unwrap()).await
    }

    /// `POST /api/v1/decide` without a client address; the answer must be 200.
    pub async fn decide(&self, token: &str, method: &str, path: &str) -> Value {
        let body = json!({ "token": token, "method": method, "path": path });
        let reply = self.call("POST", "/api/v1/decide", None, Some(&body)).await;
        reply.expect(200);
        reply.json()
    }

    /// The decision's reason code (`allowed` when allowed).
    pub async fn reason(&self, token: &str, method: &str, path: &str) -> String {
        let decision = self.decide(token, method, path).await;
        decision["reason"].as_str().unwrap().to_owned()
    }

    /// `GET /api/v1/forward-auth` from `peer` (a trusted loopback proxy when `None`).
    pub async fn forward(&self, peer: Option<&str>, headers: &[(&str, &str)]) -> Reply {
        let mut builder = Request::builder().method("GET").uri("/api/v1/forward-auth");
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        let mut request = builder.body(Body::empty()).unwrap();
        if let Some(peer) = peer {
            let address: IpAddr = peer.parse().unwrap();
            request.extensions_mut().insert(ConnectInfo(SocketAddr::new(address, 41_000)));
        }
        self.send(request).await
    }

    /// A request without a body and with `headers`, from the peer address `peer`.
    pub async fn call_from_with(&self, peer: &str, method: &str, uri: &str, headers: &[(&str, &str)]) -> Reply {
        let mut builder = Request::builder().method(method).uri(uri);
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        let mut request = builder.body(Body::empty()).unwrap();
        let address: IpAddr = peer.parse().unwrap();
        request.extensions_mut().insert(ConnectInfo(SocketAddr::new(address, 41_000)));
        self.send(request).await
    }

    /// A request with a raw body sent as JSON, without a token, from the peer address `peer`.
    pub async fn call_raw_from(&self, peer: &str, method: &str, uri: &str, body: impl Into<Body>) -> Reply {
        let mut request = Request::builder()
            .method(method)
            .uri(uri)
            .header(header::CONTENT_TYPE, "application/json")
            .body(body.into())
            .unwrap();
        let address: IpAddr = peer.parse().unwrap();
        request.extensions_mut().insert(ConnectInfo(SocketAddr::new(address, 41_000)));
        self.send(request).await
    }

    /// A request with `PRIVATE-TOKEN` from the peer address `peer`.
    pub async fn call_from(&self, peer: &str, method: &str, uri: &str, token: &str) -> Reply {
        let mut request =
            Request::builder().method(method).uri(uri).header("private-token", token).body(Body::empty()).unwrap();
        let address: IpAddr = peer.parse().unwrap();
        request.extensions_mut().insert(ConnectInfo(SocketAddr::new(address, 41_000)));
        self.send(request).await
    }

    /// An admin makes a token for `username`; the answer must be 201.
    pub async fn mint_for(&self, username: &str, body: Value) -> Value {
        let uri = format!("/api/v1/users/{username}/personal_access_tokens");
        let reply = self.call("POST", &uri, Some(&self.admin), Some(&body)).await;
        reply.expect(201);
        reply.json()
    }

    /// A legacy `api` token for `username`, made by the admin.
    pub async fn api_token_for(&self, username: &str) -> String {
        let made =
            self.mint_for(username, json!({ "name": "api", "expires_at": "2027-06-30", "scopes": ["api"] })).await;
        made["token"].as_str().unwrap().to_owned()
    }

    /// Every stored token, of every user and state.
    pub async fn token_count(&self) -> usize {
        self.shared.store.tokens(None).await.unwrap().len()
    }

    /// The hex digest this instance stores for `token`.
    pub fn digest_hex(&self, token: &str) -> String {
        let format = TokenFormat::new(&self.shared.settings().token_prefix).unwrap();
        let parsed = format.parse(token).unwrap();
        let digest = DigestKey::new(&self.secret).unwrap().digest(&parsed);
        digest.as_bytes().iter().map(|byte| format!("{byte:02x}")).collect()
    }
}

/// A second replica of an [`App`] (see [`App::replica`]).
#[derive(Debug)]
pub struct Replica {
    pub router: Router,
    pub shared: Arc<Shared>,
}

impl Replica {
    /// `POST /api/v1/decide` on this replica; the answer must be 200.
    pub async fn decide(&self, token: &str, method: &str, path: &str) -> Value {
        let body = json!({ "token": token, "method": method, "path": path });
        let request = Request::builder()
            .method("POST")
            .uri("/api/v1/decide")
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(serde_json::to_vec(&body).unwrap()))
            .unwrap();
        let response = self.router.clone().oneshot(request).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let body = response.into_body().collect().await.unwrap().to_bytes();
        serde_json::from_slice(&body).unwrap()
    }
}

/// Standard base64 with padding, for `Authorization: Basic`.
pub fn base64(input: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in input.chunks(3) {
        let bytes = [chunk[0], chunk.get(1).copied().unwrap_or(0), chunk.get(2).copied().unwrap_or(0)];
        let word = u32::from(bytes[0]) << 16 | u32::from(bytes[1]) << 8 | u32::from(bytes[2]);
        for index in 0..4 {
            if index <= chunk.len() {
                out.push(char::from(ALPHABET[((word >> (18 - 6 * index)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[test]
fn base64_matches_the_rfc_4648_examples() {
    assert_eq!(base64(b""), "");
    assert_eq!(base64(b"f"), "Zg==");
    assert_eq!(base64(b"fo"), "Zm8=");
    assert_eq!(base64(b"foo"), "Zm9v");
    assert_eq!(base64(b"foob"), "Zm9vYg==");
    assert_eq!(base64(b"fooba"), "Zm9vYmE=");
    assert_eq!(base64(b"foobar"), "Zm9vYmFy");
}
