//! Random worlds for the property tests (`properties.rs`, `suggest.rs`): users, nested
//! groups, projects, memberships, tokens and requests described by plain numbers, so that an
//! oracle can reason about them without the engine's code.

use patgate_core::{
    Action, ActionSet, Authority, BoundaryKind, BoundaryRef, Decision, Directory, Grant, GroupId, LegacyScope, Locator,
    MembershipTarget, Permission, PermissionSet, ProjectId, Reach, Request, ResourceId, Resources, Role, ScopeSet,
    Timestamp, TokenId, TokenRecord, UserId, UserLocator, UserState, Visibility, decide,
};
use proptest::prelude::*;

pub const USERS: usize = 4;
pub const NOW: Timestamp = Timestamp(1_800_000_000);

#[derive(Clone, Debug)]
pub struct World {
    /// Per group: its parent (an earlier group) and visibility.
    pub groups: Vec<(Option<usize>, Visibility)>,
    /// Per project: namespace (Ok(group) or Err(user)) and visibility.
    pub projects: Vec<(Result<usize, usize>, Visibility)>,
    /// (user, target, role): target Ok(group) / Err(project); one per (user, target).
    pub memberships: Vec<(usize, Result<usize, usize>, Role)>,
    pub admins: [bool; USERS],
    pub blocked: [bool; USERS],
}

#[derive(Clone, Debug)]
pub enum ReachSpec {
    Personal,
    All,
    Selected(Vec<usize>, Vec<usize>),
    User,
    Instance,
}

#[derive(Clone, Debug)]
pub struct TokenSpec {
    pub owner: usize,
    pub legacy: Option<Vec<LegacyScope>>,
    pub grants: Vec<(ReachSpec, Vec<(usize, ActionSet)>)>,
}

#[derive(Clone, Debug)]
pub enum BoundarySpec {
    Project(usize),
    Group(usize),
    User(usize),
    Instance,
}

#[derive(Clone, Debug)]
pub struct RequestSpec {
    /// Indices into the (resource, action) pairs that exist at the boundary (and are in the
    /// pool the request draws from, see [`permissions_for`]).
    pub permissions: Vec<usize>,
    pub boundary: BoundarySpec,
    /// Whether to draw from the pool rather than from everything.
    pub from_pool: bool,
}

pub fn visibility() -> impl Strategy<Value = Visibility> {
    prop_oneof![4 => Just(Visibility::Private), 1 => Just(Visibility::Internal), 2 => Just(Visibility::Public)]
}

pub fn role() -> impl Strategy<Value = Role> {
    prop::sample::select(Role::ALL.to_vec())
}

pub fn action_set() -> impl Strategy<Value = ActionSet> {
    (1_u8..16).prop_map(|bits| Action::ALL.into_iter().filter(|a| bits & (1 << (*a as u8)) != 0).collect())
}

/// Up to 7 groups nested at random, up to 9 projects in groups or users' namespaces, fewer
/// than `memberships` memberships, each user an admin or blocked with these chances.
pub fn world(memberships: usize, admin: f64, blocked: f64) -> impl Strategy<Value = World> {
    (1_usize..8, 1_usize..10).prop_flat_map(move |(group_count, project_count)| {
        let groups = (0..group_count)
            .map(|index| {
                let parent = if index == 0 {
                    Just(None).boxed()
                } else {
                    prop_oneof![1 => Just(None), 3 => (0..index).prop_map(Some)].boxed()
                };
                (parent, visibility())
            })
            .collect::<Vec<_>>();
        let projects = prop::collection::vec(
            (prop_oneof![4 => (0..group_count).prop_map(Ok), 1 => (0..USERS).prop_map(Err)], visibility()),
            project_count,
        );
        let target = prop_oneof![(0..group_count).prop_map(Ok), (0..project_count).prop_map(Err)];
        // A user holds one role per group or project (`set_membership` replaces), so the world
        // keeps the last role generated for each pair, exactly as the directory does.
        let memberships = prop::collection::vec((0..USERS, target, role()), 0..memberships).prop_map(|mut all| {
            let mut seen = std::collections::HashSet::new();
            all.reverse();
            all.retain(|(user, target, _)| seen.insert((*user, *target)));
            all.reverse();
            all
        });
        let flags = |chance: f64| prop::array::uniform4(prop::bool::weighted(chance));
        (groups, projects, memberships, flags(admin), flags(blocked)).prop_map(
            |(groups, projects, memberships, admins, blocked)| World { groups, projects, memberships, admins, blocked },
        )
    })
}

/// A request at a random boundary, drawing from the pool with chance `from_pool`.
pub fn request(from_pool: f64) -> impl Strategy<Value = RequestSpec> {
    let boundary = prop_oneof![
        4 => (0_usize..10).prop_map(BoundarySpec::Project),
        2 => (0_usize..8).prop_map(BoundarySpec::Group),
        1 => (0..USERS).prop_map(BoundarySpec::User),
        1 => Just(BoundarySpec::Instance),
    ];
    (prop::collection::vec(any::<usize>(), 1..3), boundary, prop::bool::weighted(from_pool))
        .prop_map(|(permissions, boundary, from_pool)| RequestSpec { permissions, boundary, from_pool })
}

pub fn group_path(world: &World, index: usize) -> String {
    match world.groups[index].0 {
        Some(parent) => format!("{}/g{index}", group_path(world, parent)),
        None => format!("g{index}"),
    }
}

pub fn project_path(world: &World, index: usize) -> String {
    match world.projects[index].0 {
        Ok(group) => format!("{}/p{index}", group_path(world, group)),
        Err(user) => format!("u{user}/p{index}"),
    }
}

pub fn build(world: &World) -> Directory {
    let mut directory = Directory::new();
    for user in 0..USERS {
        let state = if world.blocked[user] { UserState::Blocked } else { UserState::Active };
        directory.upsert_user(UserId(user as u64), &format!("u{user}"), state, world.admins[user]).unwrap();
    }
    for (index, (_, visibility)) in world.groups.iter().enumerate() {
        directory.insert_group(GroupId(index as u64), &group_path(world, index), *visibility).unwrap();
    }
    for (index, (_, visibility)) in world.projects.iter().enumerate() {
        directory.insert_project(ProjectId(index as u64), &project_path(world, index), *visibility).unwrap();
    }
    for (user, target, role) in &world.memberships {
        directory.set_membership(UserId(*user as u64), membership_target(*target), *role).unwrap();
    }
    directory
}

pub fn membership_target(target: Result<usize, usize>) -> MembershipTarget {
    match target {
        Ok(group) => MembershipTarget::Group(GroupId(group as u64)),
        Err(project) => MembershipTarget::Project(ProjectId(project as u64)),
    }
}

/// The token `spec` describes (id 1, expiring in 30 days); selected targets that do not
/// exist in `world` are dropped.
pub fn build_token(spec: &TokenSpec, resources: &Resources, world: &World) -> TokenRecord {
    let ids: Vec<ResourceId> = resources.iter().map(|(id, _)| id).collect();
    let authority = match &spec.legacy {
        Some(scopes) => Authority::Legacy(scopes.iter().copied().collect::<ScopeSet>()),
        None => Authority::FineGrained(
            spec.grants
                .iter()
                .map(|(reach, permissions)| Grant {
                    reach: match reach {
                        ReachSpec::Personal => Reach::PersonalProjects,
                        ReachSpec::All => Reach::AllMemberships,
                        ReachSpec::Selected(projects, groups) => Reach::Selected {
                            projects: projects
                                .iter()
                                .filter(|p| **p < world.projects.len())
                                .map(|p| ProjectId(*p as u64))
                                .collect(),
                            groups: groups
                                .iter()
                                .filter(|g| **g < world.groups.len())
                                .map(|g| GroupId(*g as u64))
                                .collect(),
                        },
                        ReachSpec::User => Reach::User,
                        ReachSpec::Instance => Reach::Instance,
                    },
                    permissions: PermissionSet::new(permissions.iter().map(|(r, a)| (ids[*r], *a))),
                })
                .collect(),
        ),
    };
    TokenRecord {
        id: TokenId(1),
        owner: UserId(spec.owner as u64),
        authority,
        expires_at: Some(NOW.plus_days(30)),
        created_at: NOW,
        revoked_at: None,
        allowed_ips: Box::new([]),
    }
}

/// The permissions a request spec names, among those that exist at its boundary: from
/// `pool` when the spec says so and the pool has some there.
pub fn permissions_for(spec: &RequestSpec, resources: &Resources, pool: &[Permission]) -> Vec<Permission> {
    let kind = match spec.boundary {
        BoundarySpec::Project(_) => BoundaryKind::Project,
        BoundarySpec::Group(_) => BoundaryKind::Group,
        BoundarySpec::User(_) => BoundaryKind::User,
        BoundarySpec::Instance => BoundaryKind::Instance,
    };
    let existing: Vec<Permission> = resources
        .iter()
        .flat_map(|(id, def)| {
            let row = def.row(kind).copied();
            Action::ALL.into_iter().filter_map(move |action| {
                row.and_then(|row| row.requirement(action)).map(|_| Permission { resource: id, action })
            })
        })
        .collect();
    let pooled: Vec<Permission> = existing.iter().filter(|p| pool.contains(p)).copied().collect();
    let from = if spec.from_pool && !pooled.is_empty() { &pooled } else { &existing };
    let mut chosen: Vec<Permission> = spec.permissions.iter().map(|i| from[i % from.len()]).collect();
    chosen.sort();
    chosen.dedup();
    chosen
}

/// Decides `permissions` at the spec's boundary (a project by path when it exists, else by
/// id), at [`NOW`].
pub fn ask(
    resources: &Resources,
    directory: &Directory,
    world: &World,
    token: &TokenRecord,
    spec: &RequestSpec,
    permissions: &[Permission],
) -> Decision {
    let path;
    let boundary = match spec.boundary {
        BoundarySpec::Project(index) if index < world.projects.len() => {
            path = project_path(world, index);
            BoundaryRef::Project(Locator::Path(&path))
        }
        BoundarySpec::Project(index) => BoundaryRef::Project(Locator::Id(index as u64)),
        BoundarySpec::Group(index) => BoundaryRef::Group(Locator::Id(index as u64)),
        BoundarySpec::User(index) => BoundaryRef::User(UserLocator::Id(index as u64)),
        BoundarySpec::Instance => BoundaryRef::Instance,
    };
    decide(resources, directory, token, &Request::api(permissions, boundary), NOW)
}

/// How many resources the built-in table has.
pub fn resource_count() -> usize {
    Resources::builtin().unwrap().len()
}
