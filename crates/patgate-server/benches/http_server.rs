//! The patgate HTTP service on the 1M-token synthetic world, for an HTTP load generator
//! (`bench/forward_auth.sh WORLD=1m` drives it with wrk).
//!
//! Builds the world of `patgate-core/benches/workload` (1,000,000 tokens, 100,000 projects,
//! 10,000 groups, 100,000 users, 1,000,000 memberships; `PATGATE_BENCH_SCALE` scales it),
//! wraps it in the service's state over a fresh SQLite store in a temporary directory, and
//! serves `patgate_server::router` on loopback until SIGINT or SIGTERM, as `patgate serve`
//! does (multi-threaded tokio runtime: pinned to one core it has one worker), recording
//! usage as it does (folded every 100 ms; taken and dropped every 5 s instead of written).
//!
//! Before serving it writes the forward-auth requests to replay, one per line as
//! `token<TAB>method<TAB>path`, into the directory `PATGATE_BENCH_REQUESTS` (default: the
//! temporary directory):
//! - `allowed.tsv`: 4,096 requests that are allowed (200);
//! - `mixed.tsv`: the first 4,096 requests of the mix (allowed and denied, as generated);
//! - `denied.tsv`: 4,096 requests that are denied (401 or 403).
//!
//! The requests are the in-process mix of `benches/decide.rs` (same generator, same seed),
//! turned into GitLab REST paths through the endpoint catalog; requests whose permission no
//! single-permission endpoint needs are skipped. Each path is checked against
//! `Catalog::request`, and the expected outcome is decided the way the handler decides it.
//!
//! Output on stdout, one figure a line: the world, the build time, `rss: … kB` once the world
//! is loaded, a `requests: CLASS FILE COUNT ALLOWED` line per file, and last
//! `listening on ADDR` (`PATGATE_BENCH_LISTEN`, default `127.0.0.1:0`).
//!
//! Build: `cargo bench -p patgate-server --bench http_server --no-run`.

#![expect(clippy::print_stdout, reason = "benchmarks print their figures")]

#[expect(dead_code, reason = "decide.rs's own figures (depth histogram, batch mix) are not printed here")]
#[path = "../../patgate-core/benches/workload/mod.rs"]
mod workload;

use std::{
    collections::HashMap,
    fmt::Write as _,
    net::{IpAddr, Ipv4Addr, SocketAddr},
    path::{Path, PathBuf},
    sync::{Arc, atomic::AtomicI64},
    time::Instant,
};

use axum::{
    extract::State,
    http::{HeaderName, HeaderValue, StatusCode},
    response::{IntoResponse, Response},
};
use patgate_core::{Authority, Engine, Timestamp, catalog::Catalog, catalog::DecodeBuffer};
use patgate_server::{Clock, Shared};
use patgate_store::SqlStore;
use workload::{
    BenchResult, HttpRequest, MixContext, Model, Rng, Routes, SEED, Sizes, anon_huge_bytes, build_world, env_f64,
    millis, rss_bytes, world_now,
};

/// Requests per file.
const REQUESTS: usize = 4096;
/// Give up on a class after this many generated requests.
const MAX_GENERATED: usize = 1 << 20;

fn main() -> BenchResult<()> {
    let scale = env_f64("PATGATE_BENCH_SCALE", 1.0);
    let listen: SocketAddr = match std::env::var("PATGATE_BENCH_LISTEN") {
        Ok(text) => text.parse().map_err(|error| format!("PATGATE_BENCH_LISTEN `{text}`: {error}"))?,
        Err(_) => SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
    };
    let temp = std::env::temp_dir().join(format!("patgate-http-bench-{}", std::process::id()));
    std::fs::create_dir_all(&temp)?;
    let requests_dir = std::env::var_os("PATGATE_BENCH_REQUESTS").map_or_else(|| temp.clone(), PathBuf::from);
    let result = run(scale, listen, &temp, &requests_dir);
    let _ignored = std::fs::remove_dir_all(&temp);
    result
}

fn run(scale: f64, listen: SocketAddr, temp: &Path, requests_dir: &Path) -> BenchResult<()> {
    println!("== patgate HTTP server benchmark: the synthetic world behind patgate_server::router ==");
    let sizes = Sizes::at_scale(scale);
    let now = world_now()?;
    let rss_start = rss_bytes();
    let (engine, model, times) = build_world(&sizes, now)?;
    let rss_world = rss_bytes();
    let (users, groups, projects) = engine.index.directory.counts();
    let memberships: usize = engine.index.directory.users().map(|user| user.membership_count()).sum();
    let tokens = engine.index.token_count();
    let fine = engine.index.tokens().filter(|t| matches!(t.authority, Authority::FineGrained(_))).count();
    println!(
        "world: scale {scale}, {users} users, {groups} groups, {projects} projects, {memberships} memberships, \
         {tokens} tokens ({fine} fine-grained)"
    );
    println!(
        "build: {:.0} ms = model {:.0} ms, directory records {:.0} ms, memberships {:.0} ms, tokens {:.0} ms \
         (generate {:.0} ms, HMAC digest {:.0} ms, insert_token {:.0} ms)",
        millis(times.total()),
        millis(times.model),
        millis(times.records),
        millis(times.memberships),
        millis(times.tokens),
        millis(times.token_steps.generate),
        millis(times.token_steps.digest),
        millis(times.token_steps.insert),
    );
    println!(
        "rss: {} kB with the world loaded ({} kB before it; {:.1} MiB on transparent huge pages; GLIBC_TUNABLES={:?})",
        rss_world / 1024,
        rss_start / 1024,
        anon_huge_bytes() as f64 / 1048576.0,
        std::env::var("GLIBC_TUNABLES").unwrap_or_default(),
    );

    let resources = engine.resources.clone();
    let catalog = Catalog::builtin(&resources)?;
    let files = write_requests(&sizes, &engine, &model, &catalog, now, requests_dir)?;
    drop(model);

    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async move {
        let url = format!("sqlite://{}", temp.join("bench.db").display());
        let store = SqlStore::connect(&url, Arc::new(resources)).await?;
        let clock = Clock::Fixed(Arc::new(AtomicI64::new(now.0)));
        let trusted = vec!["127.0.0.0/8".parse()?];
        let shared = Arc::new(Shared::with_engine_index(store, engine, catalog, trusted, clock).await?);
        let listener = tokio::net::TcpListener::bind(listen).await?;
        let address = listener.local_addr()?;
        println!(
            "rss: {} kB serving (world, catalog, store, request files written); tokio workers: {}",
            rss_bytes() / 1024,
            runtime_workers(),
        );
        for (class, path, count, allowed) in &files {
            println!("requests: {class} {} {count} {allowed}", path.display());
        }
        // Usage is folded every 100 ms as `patgate serve` does; the world's tokens are not in
        // the store, so every 5 s the aggregate is taken and dropped instead of written.
        let usage_state = shared.clone();
        tokio::spawn(async move {
            let mut timer = tokio::time::interval(std::time::Duration::from_millis(100));
            for tick in 0_u64.. {
                timer.tick().await;
                usage_state.usage.compact();
                if tick % 50 == 49 {
                    drop(usage_state.usage.take());
                }
            }
        });
        println!("listening on {address}");
        let router = patgate_server::router(shared.clone()).merge(
            // Without layers, as forward auth's route (see `patgate_server::router`).
            axum::Router::new().route(UNDECIDED, axum::routing::get(undecided)).with_state(shared),
        );
        let server = axum::serve(listener, router.into_make_service_with_connect_info::<SocketAddr>());
        tokio::select! {
            result = server => result?,
            () = shutdown() => {}
        }
        BenchResult::Ok(())
    })
}

/// Forward auth's HTTP work without its decision, for `bench/forward_auth.sh`'s ceiling run.
const UNDECIDED: &str = "/bench/forward-auth-undecided";

/// `GET /bench/forward-auth-undecided`: reads a forward-auth request as
/// `patgate_server::routes::decision::forward_auth` does (the peer, the headers in one pass,
/// the forwarded method and URI from a trusted proxy, the client address, the token) and
/// answers as it answers an allowed request (200 with a username and a token id), but decides
/// nothing: how fast forward auth could be if its decision cost nothing. Not a route of
/// `patgate serve`.
async fn undecided(State(shared): State<Arc<Shared>>, request: axum::extract::Request) -> Response {
    let refused = || StatusCode::FORBIDDEN.into_response();
    let Some(peer) = patgate_server::auth::peer_address(request.extensions()) else { return refused() };
    if !shared.trusts_proxy(peer.ip()) {
        return refused();
    }
    let presented = patgate_server::auth::Presented::read(request.headers());
    let Ok((method, uri)) = patgate_server::routes::decision::forwarded_request(&presented, &request) else {
        return refused();
    };
    let client = presented.client_address(&shared, request.headers(), Some(peer.ip()));
    let Some(token) = presented.token(None) else { return refused() };
    std::hint::black_box((method, uri, client, &token));
    let mut response = StatusCode::OK.into_response();
    // Values made per request, as the handler makes them (a username copied, an id formatted).
    if let Ok(user) = HeaderValue::from_str("user12345") {
        response.headers_mut().insert(HeaderName::from_static("x-patgate-user"), user);
    }
    let id = HeaderValue::from(token.len() as u64 * 10_000 + 12_345);
    response.headers_mut().insert(HeaderName::from_static("x-patgate-token-id"), id);
    response
}

/// What `new_multi_thread` picks: one worker per core the process may run on.
fn runtime_workers() -> usize {
    std::thread::available_parallelism().map_or(1, std::num::NonZero::get)
}

async fn shutdown() {
    let mut terminate = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(signal) => signal,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {},
        _ = terminate.recv() => {},
    }
}

/// One class of requests being collected.
struct Class {
    name: &'static str,
    text: String,
    count: usize,
    allowed: usize,
}

impl Class {
    fn push(&mut self, request: &HttpRequest, allowed: bool) {
        let _ = writeln!(self.text, "{}\t{}\t{}", request.token, request.method, request.path);
        self.count += 1;
        self.allowed += usize::from(allowed);
    }
}

/// Generates the mix, turns it into HTTP requests, decides each as the forward-auth handler
/// would, and writes the request files. Returns (class, file, requests, allowed).
fn write_requests(
    sizes: &Sizes,
    engine: &Engine,
    model: &Model,
    catalog: &Catalog,
    now: Timestamp,
    dir: &Path,
) -> BenchResult<Vec<(&'static str, PathBuf, usize, usize)>> {
    let started = Instant::now();
    let routes = Routes::new(catalog);
    let context = MixContext::new(sizes, engine, model);
    let routable = [&context.permissions[0], &context.permissions[1]];
    let covered = routable
        .iter()
        .zip([patgate_core::BoundaryKind::Project, patgate_core::BoundaryKind::Group])
        .map(|(list, kind)| list.iter().filter(|p| routes.route(**p, kind).is_some()).count())
        .collect::<Vec<_>>();
    println!(
        "routes: {} (permission, boundary) pairs have a single-permission endpoint: {} of {} at projects, {} of {} at groups",
        routes.len(),
        covered[0],
        context.permissions[0].len(),
        covered[1],
        context.permissions[1].len(),
    );
    // The same stream as decide.rs's mix.
    let mut rng = Rng::new(SEED ^ 5);
    let mut classes = [
        Class { name: "allowed", text: String::new(), count: 0, allowed: 0 },
        Class { name: "mixed", text: String::new(), count: 0, allowed: 0 },
        Class { name: "denied", text: String::new(), count: 0, allowed: 0 },
    ];
    let mut generated = 0;
    let mut skipped = 0;
    let mut outcomes: HashMap<&'static str, usize> = HashMap::new();
    let peer = IpAddr::V4(Ipv4Addr::LOCALHOST);
    while classes.iter().any(|class| class.count < REQUESTS) {
        if generated >= MAX_GENERATED {
            return Err(format!("only {:?} requests after {generated} generated", classes.map(|c| c.count)).into());
        }
        generated += 1;
        let Some(item) = context.item(&mut rng) else { continue };
        let Some(request) = routes.http(catalog, &item)? else {
            skipped += 1;
            continue;
        };
        // As the forward-auth handler judges it.
        let mut buffer = DecodeBuffer::default();
        let mut asked = catalog.request(request.method, &request.path, &mut buffer);
        asked.client_ip = Some(peer);
        let decision = engine.decide_presented(&request.token, &asked, now);
        let allowed = decision.is_allowed();
        let [allow, mixed, deny] = &mut classes;
        if mixed.count < REQUESTS {
            mixed.push(&request, allowed);
            *outcomes.entry(decision.reason().map_or("allowed", |reason| reason.code())).or_default() += 1;
        }
        let class = if allowed { allow } else { deny };
        if class.count < REQUESTS {
            class.push(&request, allowed);
        }
    }
    let mut outcomes: Vec<_> = outcomes.into_iter().collect();
    outcomes.sort_by_key(|(_, count)| std::cmp::Reverse(*count));
    println!(
        "mix: {generated} generated, {skipped} without a single-permission endpoint; mixed file outcomes {outcomes:?}; \
         {:.0} ms",
        millis(started.elapsed())
    );
    std::fs::create_dir_all(dir)?;
    classes
        .into_iter()
        .map(|class| {
            let path = dir.join(format!("{}.tsv", class.name));
            std::fs::write(&path, &class.text)?;
            Ok((class.name, path, class.count, class.allowed))
        })
        .collect()
}
