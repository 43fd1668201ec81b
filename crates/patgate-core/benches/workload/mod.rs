//! The seeded synthetic world of the benchmarks: 100,000 users, 10,000 groups nested up to 8
//! deep, 100,000 projects, 1,000,000 memberships and 1,000,000 tokens (scaled by
//! `PATGATE_BENCH_SCALE`), and the request mix over it.
//!
//! Shared by `benches/decide.rs` (in process) and `patgate-server`'s `benches/http_server.rs`
//! (over HTTP, which includes this file with `#[path]`). Everything is a pure function of
//! the seed: the same scale gives the same world, the same tokens and the same requests.

use std::{
    collections::HashMap,
    error::Error,
    time::{Duration, Instant},
};

use patgate_core::{
    Action, ActionSet, Authority, BoundaryKind, BoundaryRef, DigestKey, Directory, Engine, Grant, GroupId, Index,
    Locator, MembershipTarget, Permission, PermissionSet, PlainToken, ProjectId, Reach, Request, ResourceId, Resources,
    Role, ScopeSet, Timestamp, TokenAddress, TokenFormat, TokenId, TokenKind, TokenRecord, UserId, UserState,
    Visibility,
    catalog::{API_PREFIX, BoundarySource, Catalog, DecodeBuffer, Method},
    scope::LegacyScope,
    token::format::RANDOM_CHARS,
};

pub type BenchResult<T> = Result<T, Box<dyn Error>>;

pub const SEED: u64 = 0x7061_7467_6174_6521;
pub const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
pub const MAX_DEPTH: u8 = 8;
pub const CHUNK: usize = 4096;

// ---- a small deterministic PRNG (splitmix64) --------------------------------------------

pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n > 0`).
    pub fn below(&mut self, n: usize) -> usize {
        ((u128::from(self.next_u64()) * n as u128) >> 64) as usize
    }

    /// Uniform in `low..=high`.
    pub fn range(&mut self, low: usize, high: usize) -> usize {
        low + self.below(high - low + 1)
    }

    pub fn chance(&mut self, per_mille: usize) -> bool {
        self.below(1000) < per_mille
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> Option<&'a T> {
        if items.is_empty() { None } else { items.get(self.below(items.len())) }
    }
}

/// The random characters of token `index`: a pure function of the index, so a token string
/// can be rebuilt at will instead of keeping 1M strings.
pub fn token_random(index: u64) -> [u8; RANDOM_CHARS] {
    let mut rng = Rng::new(SEED ^ index.wrapping_mul(0xD1B5_4A32_D192_ED03));
    let mut out = [b'0'; RANDOM_CHARS];
    for slot in &mut out {
        *slot = BASE62[rng.below(62)];
    }
    out
}

pub fn token_string(format: &TokenFormat, kind: TokenKind, index: u64) -> PlainToken {
    format.assemble(kind, &token_random(index))
}

// ---- environment and measuring helpers ---------------------------------------------------

pub fn rss_bytes() -> u64 {
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
pub fn anon_huge_bytes() -> u64 {
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

pub fn env_f64(name: &str, default: f64) -> f64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

pub fn scaled(n: usize, scale: f64) -> usize {
    ((n as f64 * scale).round() as usize).max(1)
}

pub fn millis(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1e3
}
// ---- the world --------------------------------------------------------------------------

pub struct Sizes {
    pub users: usize,
    pub groups: usize,
    pub top_groups: usize,
    pub projects: usize,
    pub memberships: usize,
    pub tokens: usize,
}

impl Sizes {
    /// The full world (1M tokens) times `scale`.
    pub fn at_scale(scale: f64) -> Sizes {
        Sizes {
            users: scaled(100_000, scale),
            groups: scaled(10_000, scale),
            top_groups: scaled(400, scale),
            projects: scaled(100_000, scale),
            memberships: scaled(1_000_000, scale),
            tokens: scaled(1_000_000, scale),
        }
    }
}

/// The instant the world is generated for (expiry dates are relative to it).
pub fn world_now() -> BenchResult<Timestamp> {
    Ok(Timestamp::parse_date("2026-06-01").ok_or("bad date")?)
}

/// The HMAC key of the world's token digests: fixed so runs are comparable.
pub const DIGEST_KEY: &[u8] = b"benchmark key: fixed so runs are comparable, never in production";

/// What the generator keeps besides the directory: built before the memory baseline.
pub struct Model {
    /// Per group index (id - 1): parent index.
    pub group_parent: Vec<Option<u32>>,
    pub group_depth: Vec<u8>,
    /// Per project index (id - 1): the owning user for personal projects, else the group.
    pub project_group: Vec<Option<u32>>,
    pub project_user: HashMap<u32, u32>,
    /// User id → their personal projects.
    pub personal: HashMap<u64, Vec<u64>>,
}

pub fn group_visibility(rng: &mut Rng) -> Visibility {
    match rng.below(100) {
        0..85 => Visibility::Private,
        85..95 => Visibility::Internal,
        _ => Visibility::Public,
    }
}

pub fn project_visibility(rng: &mut Rng) -> Visibility {
    match rng.below(100) {
        0..80 => Visibility::Private,
        80..92 => Visibility::Internal,
        _ => Visibility::Public,
    }
}

pub fn model(sizes: &Sizes) -> Model {
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

pub fn build_directory_records(sizes: &Sizes, model: &Model) -> BenchResult<Directory> {
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

pub fn add_memberships(sizes: &Sizes, directory: &mut Directory) -> BenchResult<usize> {
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
pub struct Grantable {
    pub resources: Vec<(ResourceId, ActionSet, ActionSet)>,
}

pub fn offered(resources: &Resources, id: ResourceId, kinds: &[BoundaryKind]) -> ActionSet {
    kinds
        .iter()
        .filter_map(|kind| resources.row(id, *kind))
        .flat_map(|row| Action::ALL.into_iter().filter(|action| row.requirement(*action).is_some()))
        .collect()
}

impl Grantable {
    pub fn new(resources: &Resources) -> Grantable {
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

    pub fn permissions(&self, rng: &mut Rng, project_only: bool) -> PermissionSet {
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

pub fn legacy_scopes(rng: &mut Rng) -> ScopeSet {
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

pub fn make_record(
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
                    Reach::Selected { projects: projects.into(), groups: groups.into() }
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
    TokenRecord {
        id: TokenId(index),
        owner,
        authority,
        created_at: now,
        expires_at,
        revoked_at: revoked.then_some(now),
        allowed_ips: Box::new([]),
    }
}

pub struct BuildTimes {
    pub generate: Duration,
    pub digest: Duration,
    pub insert: Duration,
}

pub fn insert_tokens(
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
    let mut addresses: Vec<TokenAddress> = Vec::with_capacity(CHUNK);
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
        addresses.extend(chunk.iter().map(|(plain, _)| key.address_plain(plain)));
        let digested = Instant::now();
        for ((_, record), address) in chunk.drain(..).zip(addresses.drain(..)) {
            index.insert_token(address, record)?;
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
pub enum Target {
    ProjectId(u64),
    ProjectPath(String),
    GroupId(u64),
    GroupPath(String),
}

#[derive(Clone)]
pub struct Item {
    pub token: String,
    pub permission: Permission,
    pub target: Target,
}

impl Item {
    pub fn request(&self) -> Request<'_> {
        let boundary = match &self.target {
            Target::ProjectId(id) => BoundaryRef::Project(Locator::Id(*id)),
            Target::ProjectPath(path) => BoundaryRef::Project(Locator::Path(path)),
            Target::GroupId(id) => BoundaryRef::Group(Locator::Id(*id)),
            Target::GroupPath(path) => BoundaryRef::Group(Locator::Path(path)),
        };
        Request::api(std::slice::from_ref(&self.permission), boundary)
    }
}

pub struct MixContext<'a> {
    pub sizes: &'a Sizes,
    pub engine: &'a Engine,
    pub model: &'a Model,
    /// Group index → every project in the group or its subgroups.
    pub subtree_projects: Vec<Vec<u64>>,
    /// Per boundary kind (project, group): every existing permission, and the reads.
    pub permissions: [Vec<Permission>; 2],
    pub reads: [Vec<Permission>; 2],
}

impl<'a> MixContext<'a> {
    pub fn new(sizes: &'a Sizes, engine: &'a Engine, model: &'a Model) -> MixContext<'a> {
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

    pub fn random_permission(&self, rng: &mut Rng, kind: usize) -> Option<Permission> {
        let list = if rng.chance(600) { &self.reads[kind] } else { &self.permissions[kind] };
        rng.pick(list).copied()
    }

    pub fn items(&self, rng: &mut Rng, count: usize) -> BenchResult<Vec<Item>> {
        if self.permissions.iter().chain(&self.reads).any(Vec::is_empty) {
            return Err("the resource table has no project or group permissions".into());
        }
        let mut items = Vec::with_capacity(count);
        while items.len() < count {
            items.extend(self.item(rng));
        }
        Ok(items)
    }

    pub fn target(&self, rng: &mut Rng, project: bool, id: u64) -> Target {
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

    pub fn item(&self, rng: &mut Rng) -> Option<Item> {
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

// ---- the whole world in one call --------------------------------------------------------

/// What building the world took, step by step.
pub struct WorldTimes {
    pub model: Duration,
    pub records: Duration,
    pub memberships: Duration,
    pub tokens: Duration,
    pub token_steps: BuildTimes,
}

impl WorldTimes {
    pub fn total(&self) -> Duration {
        self.model + self.records + self.memberships + self.tokens
    }
}

/// The world at `sizes` as an engine (built-in resources, no instance prefix, [`DIGEST_KEY`]),
/// with the model the request mix needs.
pub fn build_world(sizes: &Sizes, now: Timestamp) -> BenchResult<(Engine, Model, WorldTimes)> {
    let resources = Resources::builtin()?;
    let format = TokenFormat::new("")?;
    let key = DigestKey::new(DIGEST_KEY)?;
    let grantable = Grantable::new(&resources);
    let started = Instant::now();
    let model = model(sizes);
    let model_time = started.elapsed();
    let started = Instant::now();
    let mut directory = build_directory_records(sizes, &model)?;
    let records = started.elapsed();
    let started = Instant::now();
    add_memberships(sizes, &mut directory)?;
    let memberships = started.elapsed();
    let mut index = Index::new();
    index.directory = directory;
    let started = Instant::now();
    let token_steps = insert_tokens(sizes, &mut index, &model, &grantable, &format, &key, now)?;
    let tokens = started.elapsed();
    let times = WorldTimes { model: model_time, records, memberships, tokens, token_steps };
    Ok((Engine { resources, index, format, key, policy: Default::default() }, model, times))
}

// ---- HTTP requests ----------------------------------------------------------------------

/// A request as forward auth receives it: the token presented and the GitLab request behind
/// the proxy (`X-Forwarded-Method`, `X-Forwarded-Uri`).
#[derive(Clone, Debug)]
pub struct HttpRequest {
    pub token: String,
    pub method: &'static str,
    pub path: String,
}

/// A catalogued endpoint needing exactly one permission at a project or group named by one
/// path parameter, as the `/api/v4/…` text before and after that parameter (every other
/// parameter filled with `1`, a final `*rest` with `a`).
#[derive(Clone, Debug)]
pub struct Route {
    pub method: Method,
    pub template: String,
    before: String,
    after: String,
}

/// Per (permission, boundary kind), the simplest catalogued endpoint that needs just that
/// permission there, with a method that agrees with the action (`GET` for reads, not `GET`
/// otherwise, so legacy `read_api` judges it as `Request::api` does).
pub struct Routes {
    routes: HashMap<(Permission, BoundaryKind), Route>,
}

impl Routes {
    pub fn new(catalog: &Catalog) -> Routes {
        let mut routes: HashMap<(Permission, BoundaryKind), (usize, Route)> = HashMap::new();
        for entry in catalog.entries() {
            let [permission] = entry.permissions() else { continue };
            let (kind, at) = match entry.boundary {
                BoundarySource::Project(at) => (BoundaryKind::Project, at),
                BoundarySource::Group(at) => (BoundaryKind::Group, at),
                _ => continue,
            };
            if entry.own_token || entry.method.is_read_only() != (permission.action == Action::Read) {
                continue;
            }
            let Some(name) = entry.params.get(usize::from(at)) else { continue };
            let boundary_segment = format!(":{name}");
            let mut before = String::from(API_PREFIX);
            let mut after = String::new();
            let mut seen = false;
            for segment in entry.template.split('/').skip(1) {
                let out = if seen { &mut after } else { &mut before };
                out.push('/');
                if segment == boundary_segment {
                    seen = true;
                } else if segment.starts_with('*') {
                    // A catch-all takes any text.
                    out.push('a');
                } else if let Some(colon) = segment.find(':') {
                    out.push_str(&segment[..colon]);
                    out.push('1');
                } else {
                    out.push_str(segment);
                }
            }
            if !seen {
                continue;
            }
            // Simplest: fewest parameters, then the shortest template, then file order.
            let cost = entry.params.len() * 1000 + entry.template.len();
            let route = Route { method: entry.method, template: entry.template.to_string(), before, after };
            match routes.get(&(*permission, kind)) {
                Some((best, _)) if *best <= cost => {}
                _ => {
                    routes.insert((*permission, kind), (cost, route));
                }
            }
        }
        Routes { routes: routes.into_iter().map(|(key, (_, route))| (key, route)).collect() }
    }

    pub fn len(&self) -> usize {
        self.routes.len()
    }

    pub fn route(&self, permission: Permission, kind: BoundaryKind) -> Option<&Route> {
        self.routes.get(&(permission, kind))
    }

    /// `item` as an HTTP request, if an endpoint needs its permission at its boundary's
    /// kind. Checks with `catalog` that the path asks for exactly what `item` asks.
    pub fn http(&self, catalog: &Catalog, item: &Item) -> BenchResult<Option<HttpRequest>> {
        let (kind, locator) = match &item.target {
            Target::ProjectId(id) => (BoundaryKind::Project, id.to_string()),
            Target::ProjectPath(path) => (BoundaryKind::Project, path.replace('/', "%2F")),
            Target::GroupId(id) => (BoundaryKind::Group, id.to_string()),
            Target::GroupPath(path) => (BoundaryKind::Group, path.replace('/', "%2F")),
        };
        let Some(route) = self.route(item.permission, kind) else { return Ok(None) };
        let path = format!("{}{locator}{}", route.before, route.after);
        let request = HttpRequest { token: item.token.clone(), method: route.method.name(), path };
        let mut buffer = DecodeBuffer::default();
        let asked = catalog.request(request.method, &request.path, &mut buffer);
        let wanted = item.request();
        if asked.operation != wanted.operation || asked.read_only != wanted.read_only {
            return Err(format!(
                "{} {} (from {} {}) asks {:?}, not {:?}",
                request.method,
                request.path,
                route.method.name(),
                route.template,
                asked,
                wanted
            )
            .into());
        }
        Ok(Some(request))
    }
}
