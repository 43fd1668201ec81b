//! Property tests of the decision: it never exceeds the owner's live role, narrowing never
//! widens, selected groups cover exactly their descendants, and dead tokens stay dead.

use patgate_core::{
    Action, ActionSet, Authority, BoundaryRef, DenyReason, DigestKey, Directory, Engine, Grant, GroupId, Index,
    LegacyScope, Locator, MembershipTarget, Permission, PermissionSet, ProjectId, Reach, Request, Requirement,
    Resources, Role, Timestamp, TokenFormat, TokenId, TokenRecord, UserId, UserLocator, UserState, Visibility, decide,
};
use proptest::prelude::*;

use crate::world::{
    BoundarySpec, NOW, ReachSpec, TokenSpec, USERS, World, action_set, ask, build, build_token, group_path,
    permissions_for, project_path, request, resource_count, world,
};

fn token(resource_count: usize) -> impl Strategy<Value = TokenSpec> {
    let reach = prop_oneof![
        Just(ReachSpec::Personal),
        Just(ReachSpec::All),
        (prop::collection::vec(0_usize..10, 0..3), prop::collection::vec(0_usize..8, 0..3))
            .prop_map(|(p, g)| ReachSpec::Selected(p, g)),
        Just(ReachSpec::User),
        Just(ReachSpec::Instance),
    ];
    let permissions = prop::collection::vec((0..resource_count, action_set()), 1..8);
    let grants = prop::collection::vec((reach, permissions), 1..4);
    let legacy =
        prop::option::weighted(0.3, prop::collection::vec(prop::sample::select(LegacyScope::ALL.to_vec()), 1..4));
    (0..USERS, legacy, grants).prop_map(|(owner, legacy, grants)| TokenSpec { owner, legacy, grants })
}

/// The owner's role in a project or group, computed naively from the world description.
fn naive_role(world: &World, user: usize, boundary: &BoundarySpec) -> Option<Role> {
    let chain = |mut group: Option<usize>| {
        let mut groups = Vec::new();
        while let Some(g) = group {
            groups.push(g);
            group = world.groups[g].0;
        }
        groups
    };
    let (project, groups) = match *boundary {
        BoundarySpec::Project(p) => match world.projects[p].0 {
            Err(owner) if owner == user => return Some(Role::Owner),
            Err(_) => (Some(p), Vec::new()),
            Ok(group) => (Some(p), chain(Some(group))),
        },
        BoundarySpec::Group(g) => (None, chain(Some(g))),
        _ => return None,
    };
    world
        .memberships
        .iter()
        .filter(|(member, target, _)| {
            *member == user
                && match target {
                    Ok(group) => groups.contains(group),
                    Err(p) => Some(*p) == project,
                }
        })
        .map(|(_, _, role)| *role)
        .max()
}

fn visibility_of(world: &World, boundary: &BoundarySpec) -> Option<Visibility> {
    match *boundary {
        BoundarySpec::Project(p) => Some(world.projects[p].1),
        BoundarySpec::Group(g) => Some(world.groups[g].1),
        BoundarySpec::User(_) => Some(Visibility::Public),
        BoundarySpec::Instance => None,
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2_000, .. ProptestConfig::default() })]

    /// Whatever the token says, an allowed request is within what the owner's live role (or
    /// a non-member's view of a public or internal boundary) allows.
    #[test]
    fn never_beyond_the_owners_live_role(world in world(12, 0.1, 0.1), token_spec in token(resource_count()), request in request(0.0)) {
        let resources = Resources::builtin().unwrap();
        let directory = build(&world);
        let token = build_token(&TokenSpec { owner: token_spec.owner, ..token_spec.clone() }, &resources, &world);
        let permissions = permissions_for(&request, &resources, &[]);
        let decision = ask(&resources, &directory, &world, &token, &request, &permissions);
        let Ok(basis) = decision.outcome else { return Ok(()) };
        let owner = token_spec.owner;
        prop_assert!(!world.blocked[owner], "blocked owner allowed");
        let exists = match request.boundary {
            BoundarySpec::Project(p) => p < world.projects.len(),
            BoundarySpec::Group(g) => g < world.groups.len(),
            _ => true,
        };
        prop_assert!(exists, "a boundary that does not exist was allowed");
        if world.admins[owner] {
            return Ok(());
        }
        let visibility = visibility_of(&world, &request.boundary);
        for permission in &permissions {
            let kind = decision.boundary.unwrap().kind();
            let row = resources.row(permission.resource, kind).unwrap();
            let outsider = match visibility {
                Some(Visibility::Public) => row.public.contains(permission.action),
                Some(Visibility::Internal) => row.internal.contains(permission.action),
                _ => false,
            };
            if basis == patgate_core::Basis::Anonymous {
                prop_assert_eq!(visibility, Some(Visibility::Public));
                prop_assert!(permission.action == Action::Read && row.public.contains(Action::Read));
                continue;
            }
            let allowed = match row.requirement(permission.action).unwrap() {
                Requirement::AnyUser => true,
                Requirement::Admin => false,
                Requirement::SelfUser => matches!(request.boundary, BoundarySpec::User(u) if u == owner) || outsider,
                Requirement::Member(needed) => {
                    naive_role(&world, owner, &request.boundary).is_some_and(|role| role >= needed) || outsider
                }
            };
            prop_assert!(allowed, "{:?} allowed for a non-admin owner without the role", permission);
        }
    }

    /// Removing a membership, a grant or one permission never turns a deny into an allow.
    #[test]
    fn narrowing_never_widens(
        world in world(12, 0.1, 0.1),
        token_spec in token(resource_count()),
        request in request(0.0),
        pick in any::<prop::sample::Index>(),
    ) {
        let resources = Resources::builtin().unwrap();
        let directory = build(&world);
        let token = build_token(&token_spec, &resources, &world);
        let permissions = permissions_for(&request, &resources, &[]);
        let before = ask(&resources, &directory, &world, &token, &request, &permissions);
        prop_assume!(!before.is_allowed());

        if !world.memberships.is_empty() {
            let mut narrower = world.clone();
            let _removed = narrower.memberships.remove(pick.index(world.memberships.len()));
            let after = ask(&resources, &build(&narrower), &narrower, &token, &request, &permissions);
            prop_assert!(!after.is_allowed(), "removing a membership allowed {:?} (was {:?})", after, before);
        }
        if let Authority::FineGrained(grants) = &token.authority {
            let mut fewer: Vec<Grant> = grants.to_vec();
            let removed = fewer.remove(pick.index(grants.len()));
            let mut narrower = token.clone();
            narrower.authority = Authority::FineGrained(fewer.into_boxed_slice());
            let after = ask(&resources, &directory, &world, &narrower, &request, &permissions);
            prop_assert!(!after.is_allowed(), "removing a grant allowed {:?} (was {:?})", after, before);

            let all: Vec<Permission> = removed.permissions.permissions().collect();
            let dropped = all[pick.index(all.len())];
            let mut trimmed: Vec<Grant> = grants.to_vec();
            let position = grants.iter().position(|g| *g == removed).unwrap();
            trimmed[position].permissions = removed.permissions.without(dropped);
            let mut narrower = token.clone();
            narrower.authority = Authority::FineGrained(trimmed.into_boxed_slice());
            let after = ask(&resources, &directory, &world, &narrower, &request, &permissions);
            prop_assert!(!after.is_allowed(), "removing {:?} allowed {:?} (was {:?})", dropped, after, before);
        }
    }

    /// A blocked or deleted owner, a revoked token and an expired token are always denied,
    /// with that reason, whatever the request.
    #[test]
    fn dead_tokens_stay_dead(world in world(12, 0.1, 0.1), token_spec in token(resource_count()), request in request(0.0), seconds in 0_i64..100_000) {
        let resources = Resources::builtin().unwrap();
        let mut directory = build(&world);
        let mut token = build_token(&token_spec, &resources, &world);
        let permissions = permissions_for(&request, &resources, &[]);

        let mut revoked = token.clone();
        revoked.revoked_at = Some(NOW);
        prop_assert_eq!(ask(&resources, &directory, &world, &revoked, &request, &permissions).reason(), Some(DenyReason::Revoked));

        let mut expired = token.clone();
        expired.expires_at = Some(Timestamp(NOW.0 - seconds));
        prop_assert_eq!(ask(&resources, &directory, &world, &expired, &request, &permissions).reason(), Some(DenyReason::Expired));

        for state in [UserState::Blocked, UserState::Deleted] {
            directory.set_user_state(token.owner, state).unwrap();
            prop_assert_eq!(ask(&resources, &directory, &world, &token, &request, &permissions).reason(), Some(DenyReason::OwnerBlocked));
        }
        // Unblocking restores the token's ordinary answer (never a crash, never "blocked").
        directory.set_user_state(token.owner, UserState::Active).unwrap();
        token.expires_at = Some(NOW.plus_days(1));
        prop_assert_ne!(ask(&resources, &directory, &world, &token, &request, &permissions).reason(), Some(DenyReason::OwnerBlocked));
    }

    /// A selected group covers exactly itself and its descendants, projects included; moving
    /// a project out of it removes the project from the reach.
    #[test]
    fn selected_groups_cover_exactly_their_descendants(world in world(12, 0.1, 0.1), pick in any::<prop::sample::Index>()) {
        let selected = pick.index(world.groups.len());
        let mut directory = build(&world);
        let owner = directory.user(UserId(0)).unwrap().clone();
        let reach = Reach::Selected { projects: [].into(), groups: [GroupId(selected as u64)].into() };
        let descends = |mut group: Option<usize>| {
            while let Some(g) = group {
                if g == selected {
                    return true;
                }
                group = world.groups[g].0;
            }
            false
        };
        for g in 0..world.groups.len() {
            prop_assert_eq!(reach.covers_group(&directory, &owner, GroupId(g as u64)), descends(Some(g)), "group {}", g);
        }
        for (p, (namespace, _)) in world.projects.iter().enumerate() {
            let project = directory.project(ProjectId(p as u64)).unwrap();
            let expected = matches!(namespace, Ok(g) if descends(Some(*g)));
            prop_assert_eq!(reach.covers_project(&directory, &owner, project), expected, "project {}", p);
        }
        // Move every covered project to a personal namespace: none stays covered.
        for p in 0..world.projects.len() {
            let covered = reach.covers_project(&directory, &owner, directory.project(ProjectId(p as u64)).unwrap());
            if covered {
                directory.move_project(ProjectId(p as u64), "u1").unwrap();
                let project = directory.project(ProjectId(p as u64)).unwrap();
                prop_assert!(!reach.covers_project(&directory, &owner, project));
            }
        }
    }
}

#[test]
fn a_project_moved_out_of_a_selected_group_is_outside_reach() {
    let resources = Resources::builtin().unwrap();
    let mut directory = Directory::new();
    directory.upsert_user(UserId(1), "alice", UserState::Active, false).unwrap();
    directory.insert_group(GroupId(1), "acme", Visibility::Private).unwrap();
    directory.insert_group(GroupId(2), "acme/platform", Visibility::Private).unwrap();
    directory.insert_group(GroupId(3), "other", Visibility::Private).unwrap();
    directory.insert_project(ProjectId(1), "acme/platform/api", Visibility::Private).unwrap();
    directory.set_membership(UserId(1), MembershipTarget::Group(GroupId(1)), Role::Maintainer).unwrap();
    directory.set_membership(UserId(1), MembershipTarget::Group(GroupId(3)), Role::Maintainer).unwrap();
    let issue_read = resources.permission("issue:read").unwrap();
    let token = TokenRecord {
        id: TokenId(7),
        owner: UserId(1),
        authority: Authority::FineGrained(Box::new([Grant {
            reach: Reach::Selected { projects: [].into(), groups: [GroupId(1)].into() },
            permissions: PermissionSet::new([(issue_read.resource, ActionSet::READ)]),
        }])),
        expires_at: None,
        created_at: NOW,
        revoked_at: None,
        allowed_ips: Box::new([]),
    };
    let ask = |directory: &Directory| {
        decide(&resources, directory, &token, &Request::api(&[issue_read], BoundaryRef::Project(Locator::Id(1))), NOW)
    };
    assert!(ask(&directory).is_allowed());
    directory.move_project(ProjectId(1), "other").unwrap();
    assert_eq!(ask(&directory).reason(), Some(DenyReason::OutsideReach));
    directory.move_project(ProjectId(1), "acme/platform").unwrap();
    assert!(ask(&directory).is_allowed());
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 500, .. ProptestConfig::default() })]

    /// The whole in-process path (parse, digest, the digest table, the cache warm-up, the
    /// path table) answers exactly as `decide` does on the token's record, for a token among
    /// many, by path (in any case) and by id, also after projects moved and were removed.
    #[test]
    fn the_engine_path_answers_as_decide_does(
        world in world(12, 0.1, 0.1),
        specs in prop::collection::vec(token(resource_count()), 1..6),
        request in request(0.0),
        pick in any::<prop::sample::Index>(),
        shout in any::<bool>(),
        churn in any::<bool>(),
    ) {
        let resources = Resources::builtin().unwrap();
        let mut directory = build(&world);
        if churn {
            // Move the first project of a group to the top group, remove the last project.
            if let Some(index) = world.projects.iter().position(|(namespace, _)| namespace.is_ok()) {
                directory.move_project(ProjectId(index as u64), "g0").unwrap();
            }
            if !world.projects.is_empty() {
                directory.remove_project(ProjectId(world.projects.len() as u64 - 1)).unwrap();
            }
        }
        let format = TokenFormat::new("").unwrap();
        let key = DigestKey::new(&[9_u8; 32]).unwrap();
        let mut index = Index::new();
        index.directory = directory;
        let mut secrets = Vec::new();
        for (id, spec) in specs.iter().enumerate() {
            let mut record = build_token(spec, &resources, &world);
            record.id = TokenId(id as u64 + 1);
            let secret = format.generate(record.authority.kind()).unwrap();
            index.insert_token(key.address_plain(&secret), record).unwrap();
            secrets.push(secret);
        }
        let engine = Engine { resources, index, format, key, policy: Default::default() };
        let chosen = pick.index(secrets.len());
        let record = engine.index.token(TokenId(chosen as u64 + 1)).unwrap();
        let permissions = permissions_for(&request, &engine.resources, &[]);
        let path;
        let boundary = match request.boundary {
            BoundarySpec::Project(p) if p < world.projects.len() && !churn => {
                let text = project_path(&world, p);
                path = if shout { text.to_ascii_uppercase() } else { text };
                BoundaryRef::Project(Locator::Path(&path))
            }
            BoundarySpec::Project(p) => BoundaryRef::Project(Locator::Id(p as u64)),
            BoundarySpec::Group(g) if g < world.groups.len() => {
                path = group_path(&world, g);
                BoundaryRef::Group(Locator::Path(&path))
            }
            BoundarySpec::Group(g) => BoundaryRef::Group(Locator::Id(g as u64)),
            BoundarySpec::User(u) => BoundaryRef::User(UserLocator::Id(u as u64)),
            BoundarySpec::Instance => BoundaryRef::Instance,
        };
        let request = Request::api(&permissions, boundary);
        let whole = engine.decide_presented(secrets[chosen].expose_secret(), &request, NOW);
        let direct = decide(&engine.resources, &engine.index.directory, record, &request, NOW);
        prop_assert_eq!(whole, direct);
    }
}
