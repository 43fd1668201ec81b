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
//! Run: `cargo bench -p patgate-core --bench decide`.

#![expect(clippy::disallowed_methods, reason = "benchmarks measure time")]
#![expect(clippy::print_stdout, reason = "benchmarks print their figures")]

use std::{
    alloc::System,
    collections::HashMap,
    error::Error,
    hint::black_box,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use criterion::Criterion;
use patgate_core::{
    Action, ActionSet, Authority, BoundaryKind, BoundaryRef, DigestKey, Directory, Engine, Grant, GroupId, Index,
    Locator, MembershipTarget, Permission, PermissionSet, PlainToken, ProjectId, Reach, Request, ResourceId, Resources,
    Role, ScopeSet, Timestamp, TokenDigest, TokenFormat, TokenId, TokenKind, TokenLookup, TokenRecord, UserId,
    UserState, Visibility, authenticate,
    scope::LegacyScope,
    token::format::{ParsedToken, RANDOM_CHARS},
};
use sha2::{Digest, Sha256};
use stats_alloc::{INSTRUMENTED_SYSTEM, Region, Stats, StatsAlloc};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

type BenchResult<T> = Result<T, Box<dyn Error>>;

const SEED: u64 = 0x7061_7467_6174_6521;
const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
const MAX_DEPTH: u8 = 8;
const MIX: usize = 4096;
const ROUNDS: usize = 100;
const CHUNK: usize = 4096;

// ---- a small deterministic PRNG (splitmix64) --------------------------------------------

struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n > 0`).
    fn below(&mut self, n: usize) -> usize {
        ((u128::from(self.next_u64()) * n as u128) >> 64) as usize
    }

    /// Uniform in `low..=high`.
    fn range(&mut self, low: usize, high: usize) -> usize {
        low + self.below(high - low + 1)
    }

    fn chance(&mut self, per_mille: usize) -> bool {
        self.below(1000) < per_mille
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> Option<&'a T> {
        if items.is_empty() { None } else { items.get(self.below(items.len())) }
    }
}

/// The random characters of token `index`: a pure function of the index, so a token string
/// can be rebuilt at will instead of keeping 1M strings.
fn token_random(index: u64) -> [u8; RANDOM_CHARS] {
    let mut rng = Rng::new(SEED ^ index.wrapping_mul(0xD1B5_4A32_D192_ED03));
    let mut out = [b'0'; RANDOM_CHARS];
    for slot in &mut out {
        *slot = BASE62[rng.below(62)];
    }
    out
}

fn token_string(format: &TokenFormat, kind: TokenKind, index: u64) -> PlainToken {
    format.assemble(kind, &token_random(index))
}

// ---- measuring helpers ------------------------------------------------------------------

fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status.lines().find_map(|line| {
                line.strip_prefix("VmRSS:")
                    .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            })
        })
        .map_or(0, |kib| kib * 1024)
}

/// Anonymous memory backed by transparent huge pages, from `/proc/self/smaps_rollup`.
fn anon_huge_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/smaps_rollup")
        .ok()
        .and_then(|status| {
            status.lines().find_map(|line| {
                line.strip_prefix("AnonHugePages:")
                    .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            })
        })
        .map_or(0, |kib| kib * 1024)
}

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

fn env_f64(name: &str, default: f64) -> f64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn scaled(n: usize, scale: f64) -> usize {
    ((n as f64 * scale).round() as usize).max(1)
}

fn millis(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1e3
}

// ---- the world --------------------------------------------------------------------------

struct Sizes {
    users: usize,
    groups: usize,
    top_groups: usize,
    projects: usize,
    memberships: usize,
    tokens: usize,
}

/// What the generator keeps besides the directory: built before the memory baseline.
struct Model {
    /// Per group index (id - 1): parent index.
    group_parent: Vec<Option<u32>>,
    group_depth: Vec<u8>,
    /// Per project index (id - 1): the owning user for personal projects, else the group.
    project_group: Vec<Option<u32>>,
    project_user: HashMap<u32, u32>,
    /// User id → their personal projects.
    personal: HashMap<u64, Vec<u64>>,
}

fn group_visibility(rng: &mut Rng) -> Visibility {
    match rng.below(100) {
        0..85 => Visibility::Private,
        85..95 => Visibility::Internal,
        _ => Visibility::Public,
    }
}

fn project_visibility(rng: &mut Rng) -> Visibility {
    match rng.below(100) {
        0..80 => Visibility::Private,
        80..92 => Visibility::Internal,
        _ => Visibility::Public,
    }
}

fn model(sizes: &Sizes) -> Model {
    let mut rng = Rng::new(SEED ^ 1);
    let mut group_parent = Vec::with_capacity(sizes.groups);
    let mut group_depth: Vec<u8> = Vec::with_capacity(sizes.groups);
    for index in 0..sizes.groups {
        if index < sizes.top_groups {
            group_parent.push(None);
            group_depth.push(1);
            continue;
        }
        // Half the time a recently made group (which tends to be deep), else any group.
        let parent = loop {
            let candidate = if rng.chance(500) { index - 1 - rng.below(index.min(64)) } else { rng.below(index) };
            if group_depth[candidate] < MAX_DEPTH {
                break candidate;
            }
        };
        group_parent.push(Some(parent as u32));
        group_depth.push(group_depth[parent] + 1);
    }
    let mut project_group = Vec::with_capacity(sizes.projects);
    let mut project_user = HashMap::new();
    let mut personal: HashMap<u64, Vec<u64>> = HashMap::new();
    for index in 0..sizes.projects {
        // About 5 % personal projects.
        if rng.chance(50) {
            let user = rng.below(sizes.users) as u32;
            project_group.push(None);
            project_user.insert(index as u32, user);
            personal.entry(u64::from(user) + 1).or_default().push(index as u64 + 1);
        } else {
            project_group.push(Some(rng.below(sizes.groups) as u32));
        }
    }
    Model { group_parent, group_depth, project_group, project_user, personal }
}

fn build_directory_records(sizes: &Sizes, model: &Model) -> BenchResult<Directory> {
    let mut rng = Rng::new(SEED ^ 2);
    let mut directory = Directory::new();
    directory.reserve(sizes.users, sizes.groups, sizes.projects);
    for user in 1..=sizes.users as u64 {
        let state = if rng.chance(5) { UserState::Blocked } else { UserState::Active };
        let admin = rng.chance(1);
        directory.upsert_user(UserId(user), &format!("u{user}"), state, admin)?;
    }
    for (index, parent) in model.group_parent.iter().enumerate() {
        let id = index as u64 + 1;
        let path = match parent {
            None => format!("g{id}"),
            Some(parent) => {
                let parent = directory.group(GroupId(u64::from(*parent) + 1)).ok_or("missing parent group")?;
                format!("{}/g{id}", parent.full_path)
            }
        };
        directory.insert_group(GroupId(id), &path, group_visibility(&mut rng))?;
    }
    for (index, group) in model.project_group.iter().enumerate() {
        let id = index as u64 + 1;
        let path = match group {
            Some(group) => {
                let group = directory.group(GroupId(u64::from(*group) + 1)).ok_or("missing group")?;
                format!("{}/p{id}", group.full_path)
            }
            None => {
                let user = model.project_user.get(&(index as u32)).ok_or("missing owner")?;
                format!("u{}/p{id}", user + 1)
            }
        };
        directory.insert_project(ProjectId(id), &path, project_visibility(&mut rng))?;
    }
    Ok(directory)
}

fn add_memberships(sizes: &Sizes, directory: &mut Directory) -> BenchResult<usize> {
    let mut rng = Rng::new(SEED ^ 3);
    let mut added = 0;
    while added < sizes.memberships {
        let user = UserId(rng.below(sizes.users) as u64 + 1);
        // 30 % on groups, 70 % on projects.
        let target = if rng.chance(300) {
            MembershipTarget::Group(GroupId(rng.below(sizes.groups) as u64 + 1))
        } else {
            MembershipTarget::Project(ProjectId(rng.below(sizes.projects) as u64 + 1))
        };
        let role = Role::ALL[rng.below(Role::ALL.len())];
        let exists = directory.user(user).ok_or("missing user")?.direct_role(target).is_some();
        if !exists {
            directory.set_membership(user, target, role)?;
            added += 1;
        }
    }
    directory.shrink_to_fit();
    Ok(directory.users().map(|user| user.membership_count()).sum())
}

/// The resources a grant may name, with the actions offered at project and group level.
struct Grantable {
    resources: Vec<(ResourceId, ActionSet, ActionSet)>,
}

fn offered(resources: &Resources, id: ResourceId, kinds: &[BoundaryKind]) -> ActionSet {
    kinds
        .iter()
        .filter_map(|kind| resources.row(id, *kind))
        .flat_map(|row| Action::ALL.into_iter().filter(|action| row.requirement(*action).is_some()))
        .collect()
}

impl Grantable {
    fn new(resources: &Resources) -> Grantable {
        let resources = resources
            .iter()
            .map(|(id, _)| {
                (
                    id,
                    offered(resources, id, &[BoundaryKind::Project, BoundaryKind::Group]),
                    offered(resources, id, &[BoundaryKind::Project]),
                )
            })
            .filter(|(_, any, _)| !any.is_empty())
            .collect();
        Grantable { resources }
    }

    fn permissions(&self, rng: &mut Rng, project_only: bool) -> PermissionSet {
        let count = rng.range(1, 6);
        let mut entries = Vec::with_capacity(count);
        while entries.len() < count {
            let Some(&(id, any, project)) = rng.pick(&self.resources) else { break };
            let offered = if project_only { project } else { any };
            if offered.is_empty() {
                continue;
            }
            let bits = rng.range(1, 15);
            let wanted: ActionSet =
                Action::ALL.into_iter().enumerate().filter(|(bit, _)| bits & (1 << bit) != 0).map(|(_, a)| a).collect();
            let mut actions = wanted.intersection(offered);
            if actions.is_empty() {
                actions = offered.iter().next().map_or(ActionSet::READ, ActionSet::of);
            }
            entries.push((id, actions));
        }
        PermissionSet::new(entries)
    }
}

fn legacy_scopes(rng: &mut Rng) -> ScopeSet {
    use LegacyScope as S;
    let mixes: [&[LegacyScope]; 6] = [
        &[S::Api, S::ReadUser],
        &[S::ReadApi, S::ReadRepository],
        &[S::ReadUser],
        &[S::ReadRepository, S::WriteRepository],
        &[S::ReadApi, S::ReadRegistry, S::WriteRegistry],
        &[S::CreateRunner, S::ManageRunner],
    ];
    match rng.below(100) {
        0..45 => ScopeSet::EMPTY.with(S::Api),
        45..80 => ScopeSet::EMPTY.with(S::ReadApi),
        _ => mixes[rng.below(mixes.len())].iter().copied().collect(),
    }
}

fn make_record(
    rng: &mut Rng,
    index: u64,
    sizes: &Sizes,
    directory: &Directory,
    model: &Model,
    grantable: &Grantable,
    now: Timestamp,
) -> TokenRecord {
    let owner = UserId(rng.below(sizes.users) as u64 + 1);
    let authority = if rng.chance(500) {
        Authority::Legacy(legacy_scopes(rng))
    } else {
        let memberships: Vec<MembershipTarget> = directory
            .user(owner)
            .map(|user| user.memberships().map(|(target, _)| target).collect())
            .unwrap_or_default();
        let personal = model.personal.get(&owner.0).map_or(&[][..], Vec::as_slice);
        let count = rng.range(1, 3);
        let grants: Vec<Grant> = (0..count)
            .map(|_| {
                let roll = rng.below(100);
                let reach = if roll < 10 && !personal.is_empty() {
                    Reach::PersonalProjects
                } else if roll < 65 && !memberships.is_empty() {
                    let mut projects = Vec::new();
                    let mut groups = Vec::new();
                    for _ in 0..rng.range(1, 3) {
                        match rng.pick(&memberships) {
                            Some(MembershipTarget::Project(id)) => projects.push(*id),
                            Some(MembershipTarget::Group(id)) => groups.push(*id),
                            None => {}
                        }
                    }
                    projects.sort_unstable();
                    projects.dedup();
                    groups.sort_unstable();
                    groups.dedup();
                    Reach::Selected { projects: projects.into_boxed_slice(), groups: groups.into_boxed_slice() }
                } else {
                    Reach::AllMemberships
                };
                let project_only = matches!(reach, Reach::PersonalProjects);
                Grant { reach, permissions: grantable.permissions(rng, project_only) }
            })
            .collect();
        Authority::FineGrained(grants.into_boxed_slice())
    };
    // About 2.5 % revoked and 2.5 % expired; 10 % never expire.
    let roll = rng.below(1000);
    let revoked = roll < 25;
    let expires_at = if roll < 50 && !revoked {
        Some(now.plus_days(-(rng.range(1, 300) as i64)))
    } else if roll >= 900 {
        None
    } else {
        Some(now.plus_days(rng.range(1, 365) as i64))
    };
    TokenRecord { id: TokenId(index), owner, authority, expires_at, revoked, allowed_ips: Box::new([]) }
}

struct BuildTimes {
    generate: Duration,
    digest: Duration,
    insert: Duration,
}

fn insert_tokens(
    sizes: &Sizes,
    index: &mut Index,
    model: &Model,
    grantable: &Grantable,
    format: &TokenFormat,
    key: &DigestKey,
    now: Timestamp,
) -> BenchResult<BuildTimes> {
    let mut rng = Rng::new(SEED ^ 4);
    let mut times = BuildTimes { generate: Duration::ZERO, digest: Duration::ZERO, insert: Duration::ZERO };
    let mut chunk: Vec<(PlainToken, TokenRecord)> = Vec::with_capacity(CHUNK);
    let mut digests: Vec<TokenDigest> = Vec::with_capacity(CHUNK);
    index.reserve_tokens(sizes.tokens);
    let mut next = 0;
    while next < sizes.tokens {
        let count = CHUNK.min(sizes.tokens - next);
        let start = Instant::now();
        for offset in 0..count {
            let token = (next + offset) as u64;
            let record = make_record(&mut rng, token, sizes, &index.directory, model, grantable, now);
            let plain = token_string(format, record.authority.kind(), token);
            chunk.push((plain, record));
        }
        let generated = Instant::now();
        digests.extend(chunk.iter().map(|(plain, _)| key.digest_plain(plain)));
        let digested = Instant::now();
        for ((_, record), digest) in chunk.drain(..).zip(digests.drain(..)) {
            index.insert_token(digest, record)?;
        }
        let inserted = Instant::now();
        times.generate += generated - start;
        times.digest += digested - generated;
        times.insert += inserted - digested;
        next += count;
    }
    Ok(times)
}

// ---- the request mix --------------------------------------------------------------------

#[derive(Clone)]
enum Target {
    ProjectId(u64),
    ProjectPath(String),
    GroupId(u64),
    GroupPath(String),
}

#[derive(Clone)]
struct Item {
    token: String,
    permission: Permission,
    target: Target,
}

impl Item {
    fn request(&self) -> Request<'_> {
        let boundary = match &self.target {
            Target::ProjectId(id) => BoundaryRef::Project(Locator::Id(*id)),
            Target::ProjectPath(path) => BoundaryRef::Project(Locator::Path(path)),
            Target::GroupId(id) => BoundaryRef::Group(Locator::Id(*id)),
            Target::GroupPath(path) => BoundaryRef::Group(Locator::Path(path)),
        };
        Request::api(std::slice::from_ref(&self.permission), boundary)
    }
}

struct MixContext<'a> {
    sizes: &'a Sizes,
    engine: &'a Engine,
    model: &'a Model,
    /// Group index → every project in the group or its subgroups.
    subtree_projects: Vec<Vec<u64>>,
    /// Per boundary kind (project, group): every existing permission, and the reads.
    permissions: [Vec<Permission>; 2],
    reads: [Vec<Permission>; 2],
}

impl<'a> MixContext<'a> {
    fn new(sizes: &'a Sizes, engine: &'a Engine, model: &'a Model) -> MixContext<'a> {
        let mut subtree_projects = vec![Vec::new(); sizes.groups];
        for (index, group) in model.project_group.iter().enumerate() {
            let mut next = group.map(|g| g as usize);
            while let Some(group) = next {
                subtree_projects[group].push(index as u64 + 1);
                next = model.group_parent[group].map(|g| g as usize);
            }
        }
        let at = |kind: BoundaryKind, reads_only: bool| -> Vec<Permission> {
            engine
                .resources
                .iter()
                .flat_map(|(resource, def)| {
                    let row = def.row(kind).copied();
                    Action::ALL.into_iter().filter_map(move |action| {
                        let exists = row.is_some_and(|row| row.requirement(action).is_some());
                        (exists && (!reads_only || action == Action::Read)).then_some(Permission { resource, action })
                    })
                })
                .collect()
        };
        MixContext {
            sizes,
            engine,
            model,
            subtree_projects,
            permissions: [at(BoundaryKind::Project, false), at(BoundaryKind::Group, false)],
            reads: [at(BoundaryKind::Project, true), at(BoundaryKind::Group, true)],
        }
    }

    fn random_permission(&self, rng: &mut Rng, kind: usize) -> Option<Permission> {
        let list = if rng.chance(600) { &self.reads[kind] } else { &self.permissions[kind] };
        rng.pick(list).copied()
    }

    fn items(&self, rng: &mut Rng, count: usize) -> BenchResult<Vec<Item>> {
        if self.permissions.iter().chain(&self.reads).any(Vec::is_empty) {
            return Err("the resource table has no project or group permissions".into());
        }
        let mut items = Vec::with_capacity(count);
        while items.len() < count {
            items.extend(self.item(rng));
        }
        Ok(items)
    }

    fn target(&self, rng: &mut Rng, project: bool, id: u64) -> Target {
        let by_path = rng.chance(500);
        let directory = &self.engine.index.directory;
        match (project, by_path) {
            (true, false) => Target::ProjectId(id),
            (false, false) => Target::GroupId(id),
            (true, true) => Target::ProjectPath(
                directory.project(ProjectId(id)).map(|p| p.full_path.to_string()).unwrap_or_default(),
            ),
            (false, true) => {
                Target::GroupPath(directory.group(GroupId(id)).map(|g| g.full_path.to_string()).unwrap_or_default())
            }
        }
    }

    fn item(&self, rng: &mut Rng) -> Option<Item> {
        let format = &self.engine.format;
        let roll = rng.below(1000);
        let token_index = rng.below(self.sizes.tokens) as u64;
        let record = self.engine.index.token(TokenId(token_index));
        let token = match (roll, record) {
            // 1 % malformed: bad checksum, foreign prefix, or truncated.
            (0..10, Some(record)) => {
                let good = token_string(format, record.authority.kind(), token_index).expose_secret().to_owned();
                match rng.below(3) {
                    0 => {
                        let mut bytes = good.into_bytes();
                        if let Some(last) = bytes.last_mut() {
                            *last = if *last == b'0' { b'1' } else { b'0' };
                        }
                        String::from_utf8(bytes).unwrap_or_default()
                    }
                    1 => format!("glpat-{}", &good[6..]),
                    _ => good[..good.len() - 3].to_owned(),
                }
            }
            // 1 % well formed but unknown.
            (10..20, _) => {
                let kind = if rng.chance(500) { TokenKind::Legacy } else { TokenKind::FineGrained };
                token_string(format, kind, (self.sizes.tokens + rng.below(1 << 30)) as u64).expose_secret().to_owned()
            }
            (_, Some(record)) => token_string(format, record.authority.kind(), token_index).expose_secret().to_owned(),
            (_, None) => String::new(),
        };
        let directory = &self.engine.index.directory;
        let owner = record.map_or(UserId(1), |record| record.owner);
        let mut inside: Vec<MembershipTarget> = directory
            .user(owner)
            .map(|user| user.memberships().map(|(target, _)| target).collect())
            .unwrap_or_default();
        if let Some(personal) = self.model.personal.get(&owner.0) {
            inside.extend(personal.iter().map(|id| MembershipTarget::Project(ProjectId(*id))));
        }
        // 80 % inside the owner's memberships (a member group's own boundary, or a project
        // anywhere below it), 20 % anywhere.
        let (project, id) = match rng.pick(&inside) {
            Some(target) if rng.chance(800) => match *target {
                MembershipTarget::Project(id) => (true, id.0),
                MembershipTarget::Group(id) => {
                    let below = &self.subtree_projects[(id.0 - 1) as usize];
                    match rng.pick(below) {
                        Some(project) if rng.chance(700) => (true, *project),
                        _ => (false, id.0),
                    }
                }
            },
            _ if rng.chance(800) => (true, rng.below(self.sizes.projects) as u64 + 1),
            _ => (false, rng.below(self.sizes.groups) as u64 + 1),
        };
        let kind = usize::from(!project);
        let boundary_kind = if project { BoundaryKind::Project } else { BoundaryKind::Group };
        // Fine-grained tokens mostly ask for something one of their grants names.
        let from_grant = match record.map(|record| &record.authority) {
            Some(Authority::FineGrained(grants)) if rng.chance(600) => rng
                .pick(grants)
                .and_then(|grant| rng.pick(&grant.permissions.entries().collect::<Vec<_>>()).copied())
                .and_then(|(resource, actions)| {
                    let actions: Vec<Action> = actions.iter().collect();
                    let action = *rng.pick(&actions)?;
                    let row = self.engine.resources.row(resource, boundary_kind)?;
                    row.requirement(action).map(|_| Permission { resource, action })
                }),
            _ => None,
        };
        let permission = from_grant.or_else(|| self.random_permission(rng, kind))?;
        Some(Item { token, permission, target: self.target(rng, project, id) })
    }
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

// ---- main -------------------------------------------------------------------------------

fn main() -> BenchResult<()> {
    let scale = env_f64("PATGATE_BENCH_SCALE", 1.0);
    let quick = std::env::var_os("PATGATE_BENCH_QUICK").is_some();
    let sizes = Sizes {
        users: scaled(100_000, scale),
        groups: scaled(10_000, scale),
        top_groups: scaled(400, scale),
        projects: scaled(100_000, scale),
        memberships: scaled(1_000_000, scale),
        tokens: scaled(1_000_000, scale),
    };
    let now = Timestamp::parse_date("2026-06-01").ok_or("bad date")?;
    let resources = Resources::builtin()?;
    let format = TokenFormat::new("")?;
    let key = DigestKey::new(b"benchmark key: fixed so runs are comparable, never in production")?;
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
    let engine = Engine { resources, index, format, key };

    let (users, groups, projects) = engine.index.directory.counts();
    let fine = engine.index.tokens().filter(|t| matches!(t.authority, Authority::FineGrained(_))).count();
    let revoked = engine.index.tokens().filter(|t| t.revoked).count();
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
        let name = match decision.outcome {
            Ok(basis) => match basis {
                patgate_core::Basis::FineGrained => "allow:fine_grained",
                patgate_core::Basis::Legacy => "allow:legacy",
                patgate_core::Basis::Anonymous => "allow:anonymous",
                patgate_core::Basis::Always => "allow:always",
            },
            Err(reason) => reason.code(),
        };
        *reasons.entry(name).or_default() += 1;
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
    let digests: Vec<TokenDigest> = parsed.iter().map(|token| engine.key.digest(token)).collect();

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
    println!(
        "[4] allocations: allow path {} allocations / {} bytes over {} allowed requests \
         (authenticate alone: {}); deny path {} allocations over {} denied (target on allow path: 0)",
        allow_allocs.allocations + allow_allocs.reallocations,
        allow_allocs.bytes_allocated,
        allow_items.len(),
        auth_allocs.allocations + auth_allocs.reallocations,
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
    let lookup = time_calls(digests.len(), ROUNDS, |i| {
        black_box(engine.index.token_by_digest(black_box(&digests[i])));
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
                let digest = &digests[next % digests.len()];
                next = next.wrapping_add(1);
                engine.index.token_by_digest(black_box(digest)).map(|record| record.id)
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
    let full_median = median("decide_presented_mix").unwrap_or(f64::NAN);
    let verdict = |ok: bool| if ok { "met" } else { "MISSED" };
    println!(
        "targets: full median {:.0} ns <= 1000: {}; full p99 {} ns <= 5000: {}; allow-path allocations {} = 0: {}; \
         {:.0} B/token <= 400: {}; {:.1} B/membership <= 64: {}; build {:.0} ms <= 5000: {}",
        full_median,
        verdict(full_median <= 1000.0),
        full.p99,
        verdict(full.p99 <= 5000),
        allow_allocs.allocations + allow_allocs.reallocations,
        verdict(allow_allocs.allocations + allow_allocs.reallocations == 0),
        per(rss_tok, tokens),
        verdict(per(rss_tok, tokens) <= 400.0),
        per(rss_dir, memberships),
        verdict(per(rss_dir, memberships) <= 64.0),
        millis(tokens_time),
        verdict(tokens_time <= Duration::from_secs(5)),
    );
    Ok(())
}
