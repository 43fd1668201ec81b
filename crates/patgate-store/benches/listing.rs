//! What listing tokens costs as the instance grows: one user's tokens table
//! (`Store::tokens(Some(owner))`), the minute job's query for expiry notices
//! (`Store::expiry_notices_due`, 100 at most) and one page of the credentials inventory
//! (`Store::token_page`, 100 rows by expiry; 100 rows of a name search, sorted by name,
//! which the tokens table did in memory before schema 5; and 100 active tokens under a
//! lifetime policy, which it did in memory before 2026-12-03), with few and with many other tokens in the
//! database, against one token by id (`Store::token`) in the same run; and, for
//! comparison, reading every row (`Store::tokens(None)`, which the inventory did before it
//! paged in the database, and a `flag` filter did before 2026-12-04, and still does beyond
//! 5,000 candidates), and what a flag filter does first now: count the candidate rows (every
//! row within what its flags imply of the columns), and read them when they are few.
//!
//! The first two should cost the same whatever the number of other tokens: they read the
//! rows they return, and those rows' grants, nothing else.
//!
//! Run: `cargo bench -p patgate-store --bench listing` (SQLite in a temporary file);
//! `PATGATE_BENCH_POSTGRES_URL=postgres://postgres@127.0.0.1:5432/postgres` adds a run on a
//! fresh PostgreSQL database; `PATGATE_BENCH_TOKENS` (default 20,000) sets the "many".

#![expect(clippy::print_stdout, reason = "benchmarks print their figures")]

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use patgate_core::{
    ActionSet, Authority, DigestKey, Grant, PermissionSet, Reach, Resources, ScopeSet, Timestamp, TokenFormat, TokenId,
    UserId, scope::LegacyScope,
};
use patgate_store::{Actor, Audit, LifetimeRules, NewToken, SqlStore, StateFilter, Store, TokenPageQuery, TokenSort};
use sqlx::Connection;

type BenchResult<T> = Result<T, Box<dyn std::error::Error>>;

const T0: Timestamp = Timestamp(1_800_000_000);
const CALLS: usize = 31;

fn audit(event: &'static str) -> Audit {
    Audit::new(event, Actor::default(), T0)
}

/// A token of `owner`: fine-grained with two grants for even `n`, legacy for odd; the
/// expiry spreads over a year, so some are due a notice.
fn token(
    resources: &Resources,
    format: &TokenFormat,
    key: &DigestKey,
    owner: UserId,
    n: usize,
) -> BenchResult<NewToken> {
    let issue = resources.id("issue")?;
    let wiki = resources.id("wiki")?;
    let authority = if n.is_multiple_of(2) {
        Authority::FineGrained(Box::new([
            Grant { reach: Reach::AllMemberships, permissions: PermissionSet::new([(issue, ActionSet::READ)]) },
            Grant { reach: Reach::PersonalProjects, permissions: PermissionSet::new([(wiki, ActionSet::READ)]) },
        ]))
    } else {
        Authority::Legacy([LegacyScope::ReadApi].into_iter().collect::<ScopeSet>())
    };
    let plain = format.generate(authority.kind())?;
    Ok(NewToken {
        owner,
        name: format!("token {n}"),
        description: String::new(),
        digest: key.digest_plain(&plain),
        display_prefix: plain.display_prefix(),
        authority,
        allowed_ips: Vec::new(),
        created_at: T0,
        expires_at: Some(T0.plus_days(2 + (n % 360) as i64)),
    })
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort_unstable();
    samples[samples.len() / 2]
}

async fn time<T, F: Future<Output = T>>(mut call: impl FnMut() -> F) -> Duration {
    let mut samples = Vec::with_capacity(CALLS);
    call().await; // warm-up
    for _ in 0..CALLS {
        let started = Instant::now();
        std::hint::black_box(call().await);
        samples.push(started.elapsed());
    }
    median(samples)
}

struct Figures {
    tokens: usize,
    by_id: Duration,
    own_list: Duration,
    notices: Duration,
    inventory_page: Duration,
    search_page: Duration,
    active_page: Duration,
    every_row: Duration,
    /// How long, and how many rows.
    soon_candidates: (Duration, usize),
    legacy_candidates: (Duration, usize),
}

/// Adds tokens of other users until the database holds `total`, then times the three calls.
async fn measure(
    store: &SqlStore,
    resources: &Resources,
    owner: UserId,
    own: TokenId,
    others: &mut Vec<UserId>,
    made: &mut usize,
    total: usize,
) -> BenchResult<Figures> {
    let format = TokenFormat::new("")?;
    let key = DigestKey::new(&[7; 32])?;
    while *made < total {
        if others.is_empty() || made.is_multiple_of(10) {
            let name = format!("user{}", others.len());
            others.push(store.create_user(&name, "", false, audit("user_created")).await?.0);
        }
        let other = *others.last().ok_or("no other user")?;
        store.create_token(&token(resources, &format, &key, other, *made)?, audit("token_created")).await?;
        *made += 1;
    }
    let by_id = time(|| store.token(own)).await;
    let own_list = time(|| store.tokens(Some(owner))).await;
    let notices = time(|| store.expiry_notices_due(T0, 100)).await;
    let page = TokenPageQuery { sort: TokenSort::ExpiresAt, ..TokenPageQuery::first(100) };
    let inventory_page = time(|| store.token_page(&page)).await;
    // "token 12", "token 120"…: about one name in eighteen.
    let search = TokenPageQuery {
        name_contains: Some("KEN 12".to_owned()),
        sort: TokenSort::Name,
        ..TokenPageQuery::first(100)
    };
    let search_page = time(|| store.token_page(&search)).await;
    // The tokens table's "active" state: live, an active owner, within a policy.
    let rules = LifetimeRules { max_lifetime_days: 365, expiry_required: true, legacy_disabled: false };
    let states = StateFilter { at: T0, revoked: false, expired: false, blocked: false, active: true, rules };
    let active = TokenPageQuery { states: Some(states), sort: TokenSort::ExpiresAt, ..TokenPageQuery::first(100) };
    let active_page = time(|| store.token_page(&active)).await;
    let every_row = time(|| store.tokens(None)).await;
    // A flag filter counts its candidates (every row within what its flags imply of the
    // columns) and reads them when there are at most 5,000 (the tokens table's
    // `CANDIDATES_BY_ID`), else every row: `expiring_soon` (expires within seven days; about
    // one token in sixty here) is read, `broad_legacy_scope` (legacy; one in two) only
    // counted at 20,000 tokens.
    let soon = TokenPageQuery { expires_before: Some(Timestamp(T0.0 + 7 * 86_400 + 1)), ..TokenPageQuery::first(0) };
    let read_soon = TokenPageQuery { limit: 5_000, ..soon.clone() };
    let soon_time = time(|| async {
        let counted = store.token_page(&soon).await;
        (counted, store.token_page(&read_soon).await)
    })
    .await;
    let soon_candidates = (soon_time, store.token_page(&read_soon).await?.0.len());
    let legacy = TokenPageQuery { kind: Some(patgate_core::TokenKind::Legacy), ..TokenPageQuery::first(0) };
    let legacy_candidates = (time(|| store.token_page(&legacy)).await, store.token_page(&legacy).await?.1 as usize);
    Ok(Figures {
        tokens: total,
        by_id,
        own_list,
        notices,
        inventory_page,
        search_page,
        active_page,
        every_row,
        soon_candidates,
        legacy_candidates,
    })
}

async fn run(url: &str, many: usize) -> BenchResult<()> {
    let resources = Arc::new(Resources::builtin()?);
    let store = SqlStore::connect(url, resources.clone()).await?;
    let format = TokenFormat::new("")?;
    let key = DigestKey::new(&[7; 32])?;
    let (owner, _) = store.create_user("owner", "", false, audit("user_created")).await?;
    let mut own = TokenId(0);
    for n in 0..3 {
        own = store.create_token(&token(&resources, &format, &key, owner, n)?, audit("token_created")).await?.0;
    }
    let (mut others, mut made) = (Vec::new(), 3);
    let started = Instant::now();
    let few = measure(&store, &resources, owner, own, &mut others, &mut made, 100).await?;
    let lots = measure(&store, &resources, owner, own, &mut others, &mut made, many).await?;
    println!("{url}: {many} tokens written in {:.1} s", started.elapsed().as_secs_f64());
    println!(
        "{:>8} {:>14} {:>22} {:>26} {:>26} {:>26} {:>26} {:>24}",
        "tokens",
        "token by id",
        "one user's 3 tokens",
        "expiry notices (<= 100)",
        "inventory page (100)",
        "name search page (100)",
        "active page (100)",
        "every row, in memory"
    );
    for figures in [&few, &lots] {
        let ratio = |d: Duration| d.as_secs_f64() / figures.by_id.as_secs_f64();
        let micros = |d: Duration| d.as_secs_f64() * 1e6;
        println!(
            "{:>8} {:>11.0} µs {:>11.0} µs ({:>4.1}x) {:>14.0} µs ({:>5.1}x) {:>14.0} µs ({:>5.1}x) {:>14.0} µs ({:>5.1}x) {:>14.0} µs ({:>5.1}x) {:>12.0} µs ({:>6.1}x)",
            figures.tokens,
            micros(figures.by_id),
            micros(figures.own_list),
            ratio(figures.own_list),
            micros(figures.notices),
            ratio(figures.notices),
            micros(figures.inventory_page),
            ratio(figures.inventory_page),
            micros(figures.search_page),
            ratio(figures.search_page),
            micros(figures.active_page),
            ratio(figures.active_page),
            micros(figures.every_row),
            ratio(figures.every_row),
        );
    }
    for figures in [&few, &lots] {
        println!(
            "{} tokens, a flag filter: expiring_soon's candidates counted and read {:.0} µs ({} rows); broad_legacy_scope's counted {:.0} µs ({} rows); every row {:.0} µs",
            figures.tokens,
            figures.soon_candidates.0.as_secs_f64() * 1e6,
            figures.soon_candidates.1,
            figures.legacy_candidates.0.as_secs_f64() * 1e6,
            figures.legacy_candidates.1,
            figures.every_row.as_secs_f64() * 1e6,
        );
    }
    println!(
        "growth from {} to {} tokens: one user's list {:.2}x, expiry notices {:.2}x (1.00x = independent of the others)",
        few.tokens,
        lots.tokens,
        lots.own_list.as_secs_f64() / few.own_list.as_secs_f64(),
        lots.notices.as_secs_f64() / few.notices.as_secs_f64(),
    );
    Ok(())
}

fn main() -> BenchResult<()> {
    let many = std::env::var("PATGATE_BENCH_TOKENS").ok().and_then(|text| text.parse().ok()).unwrap_or(20_000);
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let directory = std::env::temp_dir().join(format!("patgate-listing-bench-{}", std::process::id()));
    std::fs::create_dir_all(&directory)?;
    let sqlite = format!("sqlite://{}", directory.join("bench.db").display());
    let result = runtime.block_on(run(&sqlite, many));
    let _ = std::fs::remove_dir_all(&directory);
    result?;
    if let Ok(url) = std::env::var("PATGATE_BENCH_POSTGRES_URL") {
        runtime.block_on(async {
            let name = format!("patgate_listing_bench_{}", std::process::id());
            let mut admin = sqlx::PgConnection::connect(&url).await?;
            sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}"))).execute(&mut admin).await?;
            let base = url.rsplit_once('/').map_or(url.as_str(), |(base, _)| base);
            let outcome = run(&format!("{base}/{name}"), many).await;
            let drop = format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)");
            let _ = sqlx::query(sqlx::AssertSqlSafe(drop)).execute(&mut admin).await;
            outcome
        })?;
    }
    Ok(())
}
