//! Benchmark of the decision engine on a large, seeded world.
//!
//! World: 1,000,000 tokens, 100,000 projects, 10,000 groups nested up to 8 deep, 100,000
//! users with 1,000,000 memberships. Request mix: 4,096 API requests, 80 % inside the
//! token owner's memberships, with about 2 % unknown or malformed token strings.
//!
//! Prints, besides criterion's own output:
//! 1. the full in-process path (`Engine::decide_presented`): criterion median and
//!    per-call p50/p99/p99.9 from an `Instant` loop;
//! 2. `decide` alone on a pre-looked-up record, parse + digest, and the digest lookup;
//! 3. a baseline from the same run (one SHA-256 plus one `HashMap<[u8; 32], u32>` get
//!    over the same 1M tokens), and every figure as a ratio to it;
//! 4. allocations on the allow path, counted by `stats_alloc`;
//! 5. index memory per token and per membership (VmRSS deltas and allocator bytes);
//! 6. the time to build the token index from 1M tokens.
//!
//! Knobs (environment): `PATGATE_BENCH_SCALE` (default 1.0) scales the world;
//! `PATGATE_BENCH_QUICK=1` shortens criterion's measurement.
//!
//! The world and the request mix are built by `benches/workload/mod.rs`, which the HTTP
//! benchmark of patgate-server (`benches/http_server.rs`) shares.
//!
//! Run: `cargo bench -p patgate-core --bench decide`.

#![expect(clippy::disallowed_methods, reason = "benchmarks measure time")]
#![expect(clippy::print_stdout, reason = "benchmarks print their figures")]

#[expect(dead_code, reason = "the HTTP request builders serve patgate-server's benches/http_server.rs")]
mod workload;

use std::{
    alloc::System,
    collections::HashMap,
    hint::black_box,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use criterion::Criterion;
use patgate_core::{
    Authority, DigestKey, Engine, Grant, Index, Resources, TokenAddress, TokenDigest, TokenFormat, TokenKind,
    TokenLookup, TokenRecord, authenticate, token::format::ParsedToken,
};
use sha2::{Digest, Sha256};
use stats_alloc::{INSTRUMENTED_SYSTEM, Region, Stats, StatsAlloc};
use workload::{
    BenchResult, DIGEST_KEY, Grantable, Item, MAX_DEPTH, MixContext, Rng, SEED, Sizes, Target, add_memberships,
    anon_huge_bytes, build_directory_records, env_f64, insert_tokens, millis, model, rss_bytes, token_string,
    world_now,
};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

const MIX: usize = 4096;
const ROUNDS: usize = 100;

// ---- measuring helpers ------------------------------------------------------------------

fn live_bytes(stats: Stats) -> i64 {
    stats.bytes_allocated as i64 - stats.bytes_deallocated as i64
}

#[derive(Clone, Copy, Default)]
struct Summary {
    p50: u64,
    p90: u64,
    p99: u64,
    p999: u64,
    max: u64,
    count: usize,
}

impl Summary {
    fn of(mut samples: Vec<u64>) -> Summary {
        samples.sort_unstable();
        let at = |q: f64| -> u64 {
            if samples.is_empty() {
                return 0;
            }
            let rank = ((samples.len() as f64) * q).ceil() as usize;
            samples[rank.clamp(1, samples.len()) - 1]
        };
        Summary {
            p50: at(0.50),
            p90: at(0.90),
            p99: at(0.99),
            p999: at(0.999),
            max: samples.last().copied().unwrap_or(0),
            count: samples.len(),
        }
    }
}

/// Times `call(i)` for `i` in `0..items`, `rounds` times, each call on its own.
fn time_calls(items: usize, rounds: usize, mut call: impl FnMut(usize)) -> Summary {
    let mut samples = Vec::with_capacity(items * rounds);
    // One untimed round to warm caches and branch predictors.
    for i in 0..items {
        call(i);
    }
    for _ in 0..rounds {
        for i in 0..items {
            let start = Instant::now();
            call(i);
            samples.push(start.elapsed().as_nanos() as u64);
        }
    }
    Summary::of(samples)
}

// ---- memory latency ---------------------------------------------------------------------

/// The latency of one dependent cache miss on this machine: a pointer chase through
/// `bytes` of memory, one cache line per step in a random cycle. A decision on a large
/// index is a few such misses deep, so this is the floor its time is measured against.
fn dependent_miss_ns(bytes: usize, steps: usize) -> f64 {
    const WORDS_PER_LINE: usize = 8;
    let lines = (bytes / 64).max(2);
    let mut next = vec![0_u64; lines * WORDS_PER_LINE];
    // Sattolo's shuffle: one cycle through every line.
    let mut order: Vec<usize> = (0..lines).collect();
    let mut rng = Rng::new(SEED ^ 7);
    for i in (1..lines).rev() {
        order.swap(i, rng.below(i));
    }
    for (position, line) in order.iter().enumerate() {
        next[line * WORDS_PER_LINE] = (order[(position + 1) % lines] * WORDS_PER_LINE) as u64;
    }
    let mut at = 0_usize;
    for _ in 0..steps / 4 {
        at = next[at] as usize;
    }
    let started = Instant::now();
    for _ in 0..steps {
        at = next[black_box(at)] as usize;
    }
    let elapsed = started.elapsed();
    black_box(at);
    elapsed.as_nanos() as f64 / steps as f64
}

// ---- criterion medians ------------------------------------------------------------------

fn criterion_median_ns(dir: &Path, name: &str) -> Option<f64> {
    let text = std::fs::read_to_string(dir.join(name).join("new").join("estimates.json")).ok()?;
    let median = &text[text.find("\"median\"")?..];
    let value = &median[median.find("\"point_estimate\":")? + "\"point_estimate\":".len()..];
    let end = value.find(|c: char| !(c.is_ascii_digit() || matches!(c, '.' | 'e' | 'E' | '-' | '+')))?;
    value[..end].parse().ok()
}

fn criterion_dir() -> PathBuf {
    if let Some(home) = std::env::var_os("CRITERION_HOME") {
        return PathBuf::from(home);
    }
    if let Some(target) = std::env::var_os("CARGO_TARGET_DIR") {
        return PathBuf::from(target).join("criterion");
    }
    // target/<profile>/deps/decide-<hash>
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.ancestors().nth(3).map(|target| target.join("criterion")))
        .unwrap_or_else(|| PathBuf::from("target/criterion"))
}

/// `allow:<basis>` or the deny reason's code.
fn outcome_name(decision: &patgate_core::Decision) -> &'static str {
    match decision.outcome {
        Ok(basis) => match basis {
            patgate_core::Basis::FineGrained => "allow:fine_grained",
            patgate_core::Basis::Legacy => "allow:legacy",
            patgate_core::Basis::Anonymous => "allow:anonymous",
            patgate_core::Basis::Always => "allow:always",
        },
        Err(reason) => reason.code(),
    }
}

// ---- main -------------------------------------------------------------------------------

fn main() -> BenchResult<()> {
    let scale = env_f64("PATGATE_BENCH_SCALE", 1.0);
    let quick = std::env::var_os("PATGATE_BENCH_QUICK").is_some();
    let sizes = Sizes::at_scale(scale);
    let now = world_now()?;
    let resources = Resources::builtin()?;
    let format = TokenFormat::new("")?;
    let key = DigestKey::new(DIGEST_KEY)?;
    let grantable = Grantable::new(&resources);

    println!("== patgate-core decision engine benchmark ==");
    let model = model(&sizes);
    let mut depth_histogram = [0_usize; MAX_DEPTH as usize + 1];
    for depth in &model.group_depth {
        depth_histogram[usize::from(*depth)] += 1;
    }

    // Memory: baseline, directory records, memberships, tokens.
    let rss_start = rss_bytes();
    let live_start = live_bytes(GLOBAL.stats());
    let started = Instant::now();
    let mut directory = build_directory_records(&sizes, &model)?;
    let records_time = started.elapsed();
    let rss_records = rss_bytes();
    let live_records = live_bytes(GLOBAL.stats());
    let started = Instant::now();
    let memberships = add_memberships(&sizes, &mut directory)?;
    let memberships_time = started.elapsed();
    let rss_directory = rss_bytes();
    let live_directory = live_bytes(GLOBAL.stats());

    let mut index = Index::new();
    index.directory = directory;
    let started = Instant::now();
    let build = insert_tokens(&sizes, &mut index, &model, &grantable, &format, &key, now)?;
    let tokens_time = started.elapsed();
    let rss_tokens = rss_bytes();
    let live_tokens = live_bytes(GLOBAL.stats());
    let tokens = index.token_count();
    let engine = Engine { resources, index, format, key, policy: Default::default() };

    let (users, groups, projects) = engine.index.directory.counts();
    let fine = engine.index.tokens().filter(|t| matches!(t.authority, Authority::FineGrained(_))).count();
    let revoked = engine.index.tokens().filter(|t| t.revoked_at.is_some()).count();
    let expired = engine.index.tokens().filter(|t| t.is_expired(now)).count();
    println!(
        "world: {users} users, {groups} groups (depth histogram 1..8: {:?}), {projects} projects ({} personal), \
         {memberships} memberships, {tokens} tokens ({fine} fine-grained, {revoked} revoked, {expired} expired)",
        &depth_histogram[1..],
        model.project_user.len(),
    );
    println!("build: directory records {:.0} ms, memberships {:.0} ms", millis(records_time), millis(memberships_time));

    // ---- 6. index build time --------------------------------------------------------
    println!(
        "[6] token index build, {tokens} tokens: {:.0} ms total = generate records + strings {:.0} ms, \
         HMAC digest {:.0} ms, insert_token {:.0} ms; digest + insert {:.0} ms (target <= 5000 ms)",
        millis(tokens_time),
        millis(build.generate),
        millis(build.digest),
        millis(build.insert),
        millis(build.digest + build.insert),
    );

    // ---- 5. index memory ------------------------------------------------------------
    let per = |bytes: i64, count: usize| bytes as f64 / count.max(1) as f64;
    let rss_dir = rss_directory as i64 - rss_start as i64;
    let rss_members = rss_directory as i64 - rss_records as i64;
    let rss_tok = rss_tokens as i64 - rss_directory as i64;
    println!(
        "[5] memory (VmRSS deltas): directory {:.1} MiB = {:.1} B/membership (records {:.1} MiB, memberships alone \
         {:.1} B/membership); tokens {:.1} MiB = {:.1} B/token (targets <= 64 B/membership, <= 400 B/token)",
        rss_dir as f64 / 1048576.0,
        per(rss_dir, memberships),
        (rss_records as i64 - rss_start as i64) as f64 / 1048576.0,
        per(rss_members, memberships),
        rss_tok as f64 / 1048576.0,
        per(rss_tok, tokens),
    );
    println!(
        "    allocator-counted live bytes: directory {:.1} B/membership (memberships alone {:.1}); tokens {:.1} B/token",
        per(live_directory - live_start, memberships),
        per(live_directory - live_records, memberships),
        per(live_tokens - live_directory, tokens),
    );
    println!(
        "    transparent huge pages: {:.1} MiB of anonymous memory (GLIBC_TUNABLES={:?})",
        anon_huge_bytes() as f64 / 1048576.0,
        std::env::var("GLIBC_TUNABLES").unwrap_or_default(),
    );
    println!(
        "    sizes: TokenRecord {} B, Grant {} B, (TokenDigest, u32) {} B",
        std::mem::size_of::<TokenRecord>(),
        std::mem::size_of::<Grant>(),
        std::mem::size_of::<(TokenDigest, u32)>(),
    );

    // ---- the request mix ------------------------------------------------------------
    let context = MixContext::new(&sizes, &engine, &model);
    let mut rng = Rng::new(SEED ^ 5);
    let mix = context.items(&mut rng, MIX)?;
    let decisions: Vec<_> = mix.iter().map(|item| engine.decide_presented(&item.token, &item.request(), now)).collect();
    let allowed = decisions.iter().filter(|d| d.is_allowed()).count();
    let mut reasons: HashMap<&'static str, usize> = HashMap::new();
    for decision in &decisions {
        *reasons.entry(outcome_name(decision)).or_default() += 1;
    }
    let mut reasons: Vec<_> = reasons.into_iter().collect();
    reasons.sort_by_key(|(_, count)| std::cmp::Reverse(*count));
    let by_path = mix.iter().filter(|i| matches!(i.target, Target::ProjectPath(_) | Target::GroupPath(_))).count();
    let groups_asked = mix.iter().filter(|i| matches!(i.target, Target::GroupId(_) | Target::GroupPath(_))).count();
    println!(
        "mix: {MIX} requests, {allowed} allowed ({:.1} %), {} by path, {} group boundaries; outcomes {:?}",
        100.0 * allowed as f64 / MIX as f64,
        by_path,
        groups_asked,
        reasons
    );

    // Components: records found, strings that parse, their digests.
    let found: Vec<(&TokenRecord, &Item)> = mix
        .iter()
        .filter_map(|item| {
            authenticate(&engine.index, &engine.format, &engine.key, &item.token).ok().map(|record| (record, item))
        })
        .collect();
    let parsed: Vec<ParsedToken<'_>> = mix.iter().filter_map(|item| engine.format.parse(&item.token).ok()).collect();
    let addresses: Vec<TokenAddress> = parsed.iter().map(|token| engine.key.address(token)).collect();

    // Baseline: one SHA-256 and one HashMap<[u8; 32], u32> get over the same 1M tokens.
    let started = Instant::now();
    let mut baseline_map: HashMap<[u8; 32], u32, foldhash::fast::FixedState> =
        HashMap::with_capacity_and_hasher(tokens, foldhash::fast::FixedState::default());
    for record in engine.index.tokens() {
        let plain = token_string(&engine.format, record.authority.kind(), record.id.0);
        baseline_map.insert(Sha256::digest(plain.expose_secret().as_bytes()).into(), record.id.0 as u32);
    }
    println!("baseline map: {} keys built in {:.0} ms", baseline_map.len(), millis(started.elapsed()));
    let baseline = |text: &str| -> Option<u32> {
        let hash: [u8; 32] = Sha256::digest(text.as_bytes()).into();
        baseline_map.get(&hash).copied()
    };

    // ---- 4. allocations -------------------------------------------------------------
    let allow_items: Vec<&Item> =
        mix.iter().zip(&decisions).filter(|(_, d)| d.is_allowed()).map(|(item, _)| item).collect();
    let deny_items: Vec<&Item> =
        mix.iter().zip(&decisions).filter(|(_, d)| !d.is_allowed()).map(|(item, _)| item).collect();
    let count_allocations = |items: &[&Item]| -> Stats {
        let region = Region::new(GLOBAL);
        for item in items {
            black_box(engine.decide_presented(black_box(&item.token), &item.request(), now));
        }
        region.change()
    };
    let allow_allocs = count_allocations(&allow_items);
    let deny_allocs = count_allocations(&deny_items);
    let auth_allocs = {
        let region = Region::new(GLOBAL);
        for item in &allow_items {
            let _ = black_box(authenticate(&engine.index, &engine.format, &engine.key, black_box(&item.token)));
        }
        region.change()
    };
    // The world's tokens have no instance prefix; an instance with one (`acme-pgfgt-…`)
    // parses its tokens on the same path, so that is counted too.
    let prefixed = TokenFormat::new("acme-")?;
    let prefixed_tokens = (0..100).map(|_| prefixed.generate(TokenKind::FineGrained)).collect::<Result<Vec<_>, _>>()?;
    let prefix_allocs = {
        let region = Region::new(GLOBAL);
        for token in &prefixed_tokens {
            let _ = black_box(prefixed.parse(black_box(token.expose_secret())));
        }
        region.change()
    };
    let allow_path_allocations =
        allow_allocs.allocations + allow_allocs.reallocations + prefix_allocs.allocations + prefix_allocs.reallocations;
    println!(
        "[4] allocations: allow path {} allocations / {} bytes over {} allowed requests \
         (authenticate alone: {}; parsing 100 tokens with an instance prefix: {}); deny path {} allocations \
         over {} denied (target on allow path: 0)",
        allow_allocs.allocations + allow_allocs.reallocations,
        allow_allocs.bytes_allocated,
        allow_items.len(),
        auth_allocs.allocations + auth_allocs.reallocations,
        prefix_allocs.allocations + prefix_allocs.reallocations,
        deny_allocs.allocations + deny_allocs.reallocations,
        deny_items.len(),
    );
    if allow_allocs.allocations + allow_allocs.reallocations > 0 {
        for (label, item) in allow_items.iter().map(|item| ("allow", item)) {
            let region = Region::new(GLOBAL);
            black_box(engine.decide_presented(&item.token, &item.request(), now));
            let change = region.change();
            if change.allocations > 0 {
                let target = match &item.target {
                    Target::ProjectId(id) => format!("project id {id}"),
                    Target::ProjectPath(path) => format!("project path {path}"),
                    Target::GroupId(id) => format!("group id {id}"),
                    Target::GroupPath(path) => format!("group path {path}"),
                };
                println!("    {label}: {} allocations on {target}", change.allocations);
                break;
            }
        }
    }

    // ---- per-call percentiles (own Instant loop) ---------------------------------------
    let timer = time_calls(MIX, ROUNDS, |i| {
        black_box(i);
    });
    let full = time_calls(MIX, ROUNDS, |i| {
        let item = &mix[i];
        black_box(engine.decide_presented(black_box(&item.token), &item.request(), now));
    });
    let full_allowed = time_calls(allow_items.len(), ROUNDS, |i| {
        let item = allow_items[i];
        black_box(engine.decide_presented(black_box(&item.token), &item.request(), now));
    });
    let decide_only = time_calls(found.len(), ROUNDS, |i| {
        let (record, item) = found[i];
        black_box(patgate_core::decide(
            &engine.resources,
            &engine.index.directory,
            black_box(record),
            &item.request(),
            now,
        ));
    });
    let parse_digest = time_calls(parsed.len(), ROUNDS, |i| {
        let text = parsed[i].expose_secret();
        if let Ok(token) = engine.format.parse(black_box(text)) {
            black_box(engine.key.digest(&token));
        }
    });
    let parse_only = time_calls(parsed.len(), ROUNDS, |i| {
        black_box(engine.format.parse(black_box(parsed[i].expose_secret())).is_ok());
    });
    let digest_only = time_calls(parsed.len(), ROUNDS, |i| {
        black_box(engine.key.digest(black_box(&parsed[i])));
    });
    // Working-set sweep: the same full path over the first n requests of the mix.
    let sweep: Vec<(usize, Summary)> = [256, 1024, MIX]
        .into_iter()
        .map(|n| {
            let summary = time_calls(n, ROUNDS, |i| {
                let item = &mix[i];
                black_box(engine.decide_presented(black_box(&item.token), &item.request(), now));
            });
            (n, summary)
        })
        .collect();
    // The full path per outcome, to see which answers cost most.
    let mut by_outcome: Vec<(&'static str, Summary)> = reasons
        .iter()
        .map(|(name, _)| {
            let items: Vec<&Item> = mix
                .iter()
                .zip(&decisions)
                .filter(|(_, decision)| outcome_name(decision) == *name)
                .map(|(item, _)| item)
                .collect();
            let summary = time_calls(items.len(), ROUNDS, |i| {
                let item = items[i];
                black_box(engine.decide_presented(black_box(&item.token), &item.request(), now));
            });
            (*name, summary)
        })
        .collect();
    by_outcome.sort_by_key(|(_, summary)| std::cmp::Reverse(summary.p50));
    let lookup = time_calls(addresses.len(), ROUNDS, |i| {
        black_box(engine.index.token_at(black_box(&addresses[i])));
    });
    let base = time_calls(parsed.len(), ROUNDS, |i| {
        black_box(baseline(black_box(parsed[i].expose_secret())));
    });

    // A colder variant: 131,072 fresh requests, each timed once (index entries mostly
    // not in cache).
    let mut cold_rng = Rng::new(SEED ^ 6);
    let cold_mix = context.items(&mut cold_rng, MIX * 32)?;
    let cold = time_calls(cold_mix.len(), 1, |i| {
        let item = &cold_mix[i];
        black_box(engine.decide_presented(black_box(&item.token), &item.request(), now));
    });
    drop(cold_mix);

    // Memory latency: a dependent miss within a few MiB (what a small last-level cache
    // holds) and across as much memory as the index takes.
    let miss_small = dependent_miss_ns(2 << 20, 2_000_000);
    let miss_index = dependent_miss_ns(512 << 20, 2_000_000);

    // ---- criterion medians -------------------------------------------------------------
    let out = criterion_dir();
    let mut criterion = Criterion::default()
        .sample_size(if quick { 10 } else { 40 })
        .warm_up_time(Duration::from_millis(if quick { 300 } else { 1000 }))
        .measurement_time(Duration::from_millis(if quick { 1000 } else { 4000 }))
        .without_plots()
        .output_directory(&out)
        .configure_from_args();
    {
        let mut next = 0_usize;
        criterion.bench_function("decide_presented_mix", |b| {
            b.iter(|| {
                let item = &mix[next % MIX];
                next = next.wrapping_add(1);
                engine.decide_presented(black_box(&item.token), &item.request(), now)
            })
        });
        let mut next = 0_usize;
        criterion.bench_function("decide_prelooked", |b| {
            b.iter(|| {
                let (record, item) = found[next % found.len()];
                next = next.wrapping_add(1);
                patgate_core::decide(
                    &engine.resources,
                    &engine.index.directory,
                    black_box(record),
                    &item.request(),
                    now,
                )
            })
        });
        let mut next = 0_usize;
        criterion.bench_function("parse_digest", |b| {
            b.iter(|| {
                let text = parsed[next % parsed.len()].expose_secret();
                next = next.wrapping_add(1);
                engine.format.parse(black_box(text)).map(|token| engine.key.digest(&token)).ok()
            })
        });
        let mut next = 0_usize;
        criterion.bench_function("lookup_by_digest", |b| {
            b.iter(|| {
                let address = &addresses[next % addresses.len()];
                next = next.wrapping_add(1);
                engine.index.token_at(black_box(address)).map(|record| record.id)
            })
        });
        let mut next = 0_usize;
        criterion.bench_function("baseline_sha256_map_get", |b| {
            b.iter(|| {
                let text = parsed[next % parsed.len()].expose_secret();
                next = next.wrapping_add(1);
                baseline(black_box(text))
            })
        });
    }
    criterion.final_summary();
    let median = |name: &str| criterion_median_ns(&out, name);

    // ---- summary -------------------------------------------------------------------------
    let base_median = median("baseline_sha256_map_get").unwrap_or(f64::NAN);
    println!();
    println!("== summary (ns; criterion median over the mix, then per-call percentiles from Instant) ==");
    println!(
        "timer overhead per sample (empty call): p50 {} ns, p99 {} ns — included in the percentiles below",
        timer.p50, timer.p99
    );
    println!(
        "{:<34} {:>9} {:>8} {:>7} {:>7} {:>7} {:>8} {:>8} {:>9}",
        "step", "crit.med", "ratio", "p50", "p90", "p99", "p99.9", "max", "samples"
    );
    let rows: [(&str, Option<&str>, Summary); 10] = [
        ("1. decide_presented (full mix)", Some("decide_presented_mix"), full),
        ("1a. decide_presented (allowed)", None, full_allowed),
        ("1b. decide_presented (cold, 131k)", None, cold),
        ("2. decide (pre-looked-up record)", Some("decide_prelooked"), decide_only),
        ("2. parse + HMAC digest", Some("parse_digest"), parse_digest),
        ("2a. parse alone", None, parse_only),
        ("2b. HMAC digest alone", None, digest_only),
        ("2. lookup by digest (1M index)", Some("lookup_by_digest"), lookup),
        ("3. baseline SHA-256 + map get", Some("baseline_sha256_map_get"), base),
        ("   timer only", None, timer),
    ];
    for (label, name, summary) in rows {
        let crit = name.and_then(median);
        let crit_text = crit.map_or("-".to_owned(), |m| format!("{m:.1}"));
        let ratio = crit.map_or_else(
            || format!("{:.2}x*", summary.p50 as f64 / base.p50.max(1) as f64),
            |m| format!("{:.2}x", m / base_median),
        );
        println!(
            "{label:<34} {crit_text:>9} {ratio:>8} {:>7} {:>7} {:>7} {:>8} {:>8} {:>9}",
            summary.p50, summary.p90, summary.p99, summary.p999, summary.max, summary.count
        );
    }
    println!("(ratio: criterion median / baseline criterion median; x* = p50 / baseline p50)");
    for (n, summary) in &sweep {
        println!(
            "working-set sweep: decide_presented over the first {n:>4} requests: p50 {} ns, p99 {} ns, p99.9 {} ns",
            summary.p50, summary.p99, summary.p999
        );
    }
    for (name, summary) in &by_outcome {
        println!(
            "by outcome: {name:<26} p50 {:>5} ns, p99 {:>6} ns over {} samples",
            summary.p50, summary.p99, summary.count
        );
    }
    let full_median = median("decide_presented_mix").unwrap_or(f64::NAN);
    println!(
        "memory latency (pointer chase, same run): {miss_small:.0} ns per dependent miss within 2 MiB, \
         {miss_index:.0} ns within 512 MiB; the full-path median is {:.1} such misses",
        full_median / miss_index
    );
    let verdict = |ok: bool| if ok { "met" } else { "MISSED" };
    println!(
        "targets: full median {:.0} ns <= 1000: {}; full p99 {} ns <= 5000: {}; allow-path allocations {} = 0: {}; \
         {:.0} B/token <= 400: {}; {:.1} B/membership <= 64: {}; build {:.0} ms <= 5000: {}",
        full_median,
        verdict(full_median <= 1000.0),
        full.p99,
        verdict(full.p99 <= 5000),
        allow_path_allocations,
        verdict(allow_path_allocations == 0),
        per(rss_tok, tokens),
        verdict(per(rss_tok, tokens) <= 400.0),
        per(rss_dir, memberships),
        verdict(per(rss_dir, memberships) <= 64.0),
        millis(tokens_time),
        verdict(tokens_time <= Duration::from_secs(5)),
    );
    Ok(())
}
