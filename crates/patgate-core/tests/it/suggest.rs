//! Least-privilege suggestions: the suggested grants replay every observed use, pass the
//! crate's own validation, and never allow what the original token does not.

use patgate_core::{
    Action, ActionSet, Authority, Basis, Boundary, BoundaryRef, Decision, DenyReason, Directory, Grant, GroupId,
    LeftOut, LeftOutReason, LegacyScope, Locator, MembershipTarget, Observed, Permission, PermissionSet, ProjectId,
    Reach, ReachKind, Request, Resources, Role, ScopeSet, Suggestion, Timestamp, TokenId, TokenRecord, UserId,
    UserLocator, UserState, Visibility, decide, suggest,
    validate::{AuthoritySpec, GrantSpec, LifetimePolicy, NewTokenSpec, validate_new_token},
};
use proptest::prelude::*;

use crate::world;

const NOW: Timestamp = Timestamp(1_800_000_000);

fn record(owner: u64, authority: Authority) -> TokenRecord {
    TokenRecord {
        id: TokenId(5),
        owner: UserId(owner),
        authority,
        expires_at: Some(NOW.plus_days(30)),
        created_at: NOW,
        revoked_at: None,
        allowed_ips: Box::new([]),
    }
}

/// The suggestion's grants written as a client would, for [`validate_new_token`].
fn grant_specs(resources: &Resources, grants: &[Grant]) -> Vec<GrantSpec> {
    grants
        .iter()
        .map(|grant| {
            let (projects, groups) = match &grant.reach {
                Reach::Selected { projects, groups } => (
                    projects.iter().map(|id| id.0.to_string()).collect(),
                    groups.iter().map(|id| id.0.to_string()).collect(),
                ),
                _ => (Vec::new(), Vec::new()),
            };
            GrantSpec {
                reach: grant.reach.kind().name().to_owned(),
                projects,
                groups,
                permissions: grant
                    .permissions
                    .entries()
                    .map(|(resource, actions)| {
                        (resources.name(resource).to_owned(), actions.iter().map(|a| a.name().to_owned()).collect())
                    })
                    .collect(),
            }
        })
        .collect()
}

/// Validates the suggestion as a new token of `owner` would be, and returns the authority
/// validation produced.
fn validated(resources: &Resources, directory: &Directory, owner: UserId, suggestion: &Suggestion) -> Authority {
    let owner = directory.user(owner).unwrap();
    let spec = NewTokenSpec {
        authority: AuthoritySpec::FineGrained { grants: grant_specs(resources, &suggestion.grants) },
        expires_at: Some(NOW.plus_days(30)),
        allowed_ips: Vec::new(),
    };
    validate_new_token(resources, directory, owner, &spec, LifetimePolicy::default(), None, NOW).unwrap().authority
}

mod examples {
    use super::*;

    const ALICE: u64 = 1;
    const ROOT: u64 = 2;
    const BOB: u64 = 3;
    /// `acme`, where alice is a developer.
    const ACME: GroupId = GroupId(1);
    /// `acme/platform`.
    const PLATFORM: GroupId = GroupId(2);
    /// `acme/web`.
    const WEB: ProjectId = ProjectId(1);
    /// `acme/platform/api`.
    const API: ProjectId = ProjectId(2);
    /// `acme/docs`.
    const DOCS: ProjectId = ProjectId(3);

    fn directory() -> Directory {
        let mut d = Directory::new();
        d.upsert_user(UserId(ALICE), "alice", UserState::Active, false).unwrap();
        d.upsert_user(UserId(ROOT), "root", UserState::Active, true).unwrap();
        d.upsert_user(UserId(BOB), "bob", UserState::Active, false).unwrap();
        d.insert_group(ACME, "acme", Visibility::Private).unwrap();
        d.insert_group(PLATFORM, "acme/platform", Visibility::Private).unwrap();
        d.insert_project(WEB, "acme/web", Visibility::Private).unwrap();
        d.insert_project(API, "acme/platform/api", Visibility::Private).unwrap();
        d.insert_project(DOCS, "acme/docs", Visibility::Private).unwrap();
        d.set_membership(UserId(ALICE), MembershipTarget::Group(ACME), Role::Maintainer).unwrap();
        d
    }

    struct Fixture {
        resources: Resources,
        directory: Directory,
    }

    impl Fixture {
        fn new() -> Fixture {
            Fixture { resources: Resources::builtin().unwrap(), directory: directory() }
        }

        fn permission(&self, text: &str) -> Permission {
            self.resources.permission(text).unwrap()
        }

        fn permissions(&self, entries: &[(&str, ActionSet)]) -> PermissionSet {
            PermissionSet::new(entries.iter().map(|(name, actions)| (self.resources.id(name).unwrap(), *actions)))
        }

        fn seen(&self, permission: &str, boundary: Boundary) -> Observed {
            Observed { permission: self.permission(permission), boundary }
        }

        fn suggest(&self, token: &TokenRecord, observed: &[Observed]) -> Suggestion {
            suggest(&self.resources, &self.directory, token, observed)
        }

        fn ask(&self, token: &TokenRecord, permissions: &[&str], boundary: Boundary) -> Decision {
            let permissions: Vec<Permission> = permissions.iter().map(|text| self.permission(text)).collect();
            let boundary = match boundary {
                Boundary::Project(id) => BoundaryRef::Project(Locator::Id(id.0)),
                Boundary::Group(id) => BoundaryRef::Group(Locator::Id(id.0)),
                Boundary::User(id) => BoundaryRef::User(UserLocator::Id(id.0)),
                Boundary::Instance => BoundaryRef::Instance,
            };
            decide(&self.resources, &self.directory, token, &Request::api(&permissions, boundary), NOW)
        }
    }

    fn selected(projects: &[ProjectId], groups: &[GroupId]) -> Reach {
        Reach::Selected { projects: projects.into(), groups: groups.into() }
    }

    fn crud_issues_and_read_merge_requests(fixture: &Fixture) -> TokenRecord {
        record(
            ALICE,
            Authority::FineGrained(Box::new([Grant {
                reach: Reach::AllMemberships,
                permissions: fixture.permissions(&[("issue", ActionSet::ALL), ("merge_request", ActionSet::READ)]),
            }])),
        )
    }

    #[test]
    fn an_all_memberships_token_narrows_to_where_each_permission_was_used() {
        let fixture = Fixture::new();
        let token = crud_issues_and_read_merge_requests(&fixture);
        let observed = [
            fixture.seen("issue:read", Boundary::Project(WEB)),
            fixture.seen("issue:create", Boundary::Project(WEB)),
            fixture.seen("merge_request:read", Boundary::Group(PLATFORM)),
        ];
        let suggestion = fixture.suggest(&token, &observed);

        assert_eq!(
            suggestion.grants,
            vec![
                Grant {
                    reach: selected(&[WEB], &[]),
                    permissions: fixture.permissions(&[("issue", ActionSet::READ.with(Action::Create))]),
                },
                Grant {
                    reach: selected(&[], &[PLATFORM]),
                    permissions: fixture.permissions(&[("merge_request", ActionSet::READ)]),
                },
            ]
        );
        assert_eq!(
            suggestion.removed_permissions,
            vec![fixture.permission("issue:update"), fixture.permission("issue:delete")]
        );
        assert_eq!(suggestion.removed_reaches, vec![ReachKind::AllMemberships]);
        assert_eq!(suggestion.removed_scopes, Vec::<LegacyScope>::new());
        assert_eq!(suggestion.left_out, Vec::<LeftOut>::new());
        assert_eq!(
            validated(&fixture.resources, &fixture.directory, UserId(ALICE), &suggestion),
            suggestion.authority().unwrap()
        );

        // The suggested token does what was observed, and nothing the original did beyond it.
        let narrow = record(ALICE, suggestion.authority().unwrap());
        assert!(fixture.ask(&narrow, &["issue:read", "issue:create"], Boundary::Project(WEB)).is_allowed());
        assert!(fixture.ask(&narrow, &["merge_request:read"], Boundary::Group(PLATFORM)).is_allowed());
        assert!(
            fixture.ask(&narrow, &["merge_request:read"], Boundary::Project(API)).is_allowed(),
            "a group covers its projects"
        );
        assert!(fixture.ask(&token, &["issue:update"], Boundary::Project(WEB)).is_allowed());
        assert_eq!(
            fixture.ask(&narrow, &["issue:update"], Boundary::Project(WEB)).reason(),
            Some(DenyReason::InsufficientScope(fixture.permission("issue:update")))
        );
        assert!(fixture.ask(&token, &["issue:read"], Boundary::Project(DOCS)).is_allowed());
        assert_eq!(
            fixture.ask(&narrow, &["issue:read"], Boundary::Project(DOCS)).reason(),
            Some(DenyReason::OutsideReach)
        );
        assert_eq!(
            fixture.ask(&narrow, &["merge_request:read"], Boundary::Group(ACME)).reason(),
            Some(DenyReason::OutsideReach)
        );
    }

    #[test]
    fn places_with_the_same_permissions_share_one_grant() {
        let fixture = Fixture::new();
        let token = crud_issues_and_read_merge_requests(&fixture);
        let observed = [
            fixture.seen("issue:read", Boundary::Group(PLATFORM)),
            fixture.seen("issue:read", Boundary::Project(DOCS)),
            fixture.seen("issue:read", Boundary::Project(WEB)),
            fixture.seen("issue:update", Boundary::Project(API)),
        ];
        let suggestion = fixture.suggest(&token, &observed);
        assert_eq!(
            suggestion.grants,
            vec![
                Grant {
                    reach: selected(&[WEB, DOCS], &[PLATFORM]),
                    permissions: fixture.permissions(&[("issue", ActionSet::READ)])
                },
                Grant {
                    reach: selected(&[API], &[]),
                    permissions: fixture.permissions(&[("issue", ActionSet::of(Action::Update))]),
                },
            ]
        );
        assert_eq!(
            suggestion.removed_permissions,
            ["issue:create", "issue:delete", "merge_request:read"].map(|text| fixture.permission(text)).to_vec()
        );
        validated(&fixture.resources, &fixture.directory, UserId(ALICE), &suggestion);
    }

    #[test]
    fn a_legacy_api_token_becomes_one_selected_grant() {
        let fixture = Fixture::new();
        let token = record(ALICE, Authority::Legacy(ScopeSet::EMPTY.with(LegacyScope::Api)));
        let observed = [fixture.seen("container_registry:create", Boundary::Project(API))];
        assert!(fixture.ask(&token, &["container_registry:create"], Boundary::Project(API)).is_allowed());
        let suggestion = fixture.suggest(&token, &observed);
        assert_eq!(
            suggestion,
            Suggestion {
                grants: vec![Grant {
                    reach: selected(&[API], &[]),
                    permissions: fixture.permissions(&[("container_registry", ActionSet::of(Action::Create))]),
                }],
                removed_permissions: Vec::new(),
                removed_reaches: Vec::new(),
                removed_scopes: vec![LegacyScope::Api],
                left_out: Vec::new(),
            }
        );
        assert_eq!(
            validated(&fixture.resources, &fixture.directory, UserId(ALICE), &suggestion),
            suggestion.authority().unwrap()
        );
    }

    #[test]
    fn nothing_observed_suggests_no_grant() {
        let fixture = Fixture::new();
        let token = crud_issues_and_read_merge_requests(&fixture);
        let suggestion = fixture.suggest(&token, &[]);
        assert!(suggestion.grants.is_empty());
        assert_eq!(suggestion.authority(), None);
        assert_eq!(suggestion.removed_permissions.len(), 5);
        assert_eq!(suggestion.removed_reaches, vec![ReachKind::AllMemberships]);

        let legacy =
            record(ALICE, Authority::Legacy([LegacyScope::ReadApi, LegacyScope::ReadUser].into_iter().collect()));
        let suggestion = fixture.suggest(&legacy, &[]);
        assert!(suggestion.grants.is_empty());
        assert_eq!(suggestion.removed_scopes, vec![LegacyScope::ReadApi, LegacyScope::ReadUser]);
    }

    #[test]
    fn user_and_instance_uses_get_a_grant_each_after_the_selected_ones() {
        let fixture = Fixture::new();
        let token = record(ROOT, Authority::Legacy([LegacyScope::Api, LegacyScope::AdminMode].into_iter().collect()));
        let observed = [
            fixture.seen("admin_user:read", Boundary::Instance),
            fixture.seen("ssh_key:create", Boundary::User(UserId(ROOT))),
            fixture.seen("ssh_key:read", Boundary::User(UserId(ROOT))),
            fixture.seen("project:read", Boundary::Project(DOCS)),
        ];
        for observation in &observed {
            let name = fixture.resources.permission_name(observation.permission);
            assert!(fixture.ask(&token, &[&name], observation.boundary).is_allowed(), "{name}");
        }
        let suggestion = fixture.suggest(&token, &observed);
        assert_eq!(
            suggestion.grants,
            vec![
                Grant {
                    reach: selected(&[DOCS], &[]),
                    permissions: fixture.permissions(&[("project", ActionSet::READ)])
                },
                Grant {
                    reach: Reach::User,
                    permissions: fixture.permissions(&[("ssh_key", ActionSet::READ.with(Action::Create))]),
                },
                Grant { reach: Reach::Instance, permissions: fixture.permissions(&[("admin_user", ActionSet::READ)]) },
            ]
        );
        assert_eq!(suggestion.removed_scopes, vec![LegacyScope::Api, LegacyScope::AdminMode]);
        assert_eq!(
            validated(&fixture.resources, &fixture.directory, UserId(ROOT), &suggestion),
            suggestion.authority().unwrap()
        );
    }

    #[test]
    fn uses_no_valid_grant_can_carry_are_left_out_with_a_reason() {
        let mut fixture = Fixture::new();
        let legacy = record(ALICE, Authority::Legacy(ScopeSet::EMPTY.with(LegacyScope::Api)));
        let topic_read = fixture.seen("topic:read", Boundary::Instance);
        let bobs_keys = fixture.seen("ssh_key:read", Boundary::User(UserId(BOB)));
        let group_issue_create = fixture.seen("issue:create", Boundary::Group(ACME));
        let docs_issues = fixture.seen("issue:read", Boundary::Project(DOCS));
        let web_issues = fixture.seen("issue:read", Boundary::Project(WEB));
        // What a legacy token may do and no fine-grained grant of a non-admin can carry.
        assert!(fixture.ask(&legacy, &["topic:read"], Boundary::Instance).is_allowed());
        assert!(fixture.ask(&legacy, &["ssh_key:read"], Boundary::User(UserId(BOB))).is_allowed());
        fixture.directory.remove_project(DOCS).unwrap();

        let observed = [web_issues, topic_read, docs_issues, bobs_keys, group_issue_create];
        let suggestion = fixture.suggest(&legacy, &observed);
        assert_eq!(
            suggestion.grants,
            vec![Grant {
                reach: selected(&[WEB], &[]),
                permissions: fixture.permissions(&[("issue", ActionSet::READ)])
            }]
        );
        let left = |observed, reason| LeftOut { observed, reason };
        assert_eq!(
            suggestion.left_out,
            vec![
                left(docs_issues, LeftOutReason::Gone),
                left(group_issue_create, LeftOutReason::NotApplicable),
                left(bobs_keys, LeftOutReason::NotGrantable),
                left(topic_read, LeftOutReason::NotGrantable),
            ]
        );
        validated(&fixture.resources, &fixture.directory, UserId(ALICE), &suggestion);

        // A fine-grained token that no longer reaches a place (alice left the group) is not
        // widened back to it by old observations.
        let token = crud_issues_and_read_merge_requests(&fixture);
        fixture.directory.remove_membership(UserId(ALICE), MembershipTarget::Group(ACME)).unwrap();
        fixture.directory.set_membership(UserId(ALICE), MembershipTarget::Project(WEB), Role::Developer).unwrap();
        let api_issues = fixture.seen("issue:read", Boundary::Project(API));
        let suggestion = fixture.suggest(&token, &[api_issues, web_issues]);
        assert_eq!(suggestion.left_out, vec![left(api_issues, LeftOutReason::Gone)]);
        fixture.directory.set_project_visibility(API, Visibility::Internal).unwrap();
        let suggestion = fixture.suggest(&token, &[api_issues, web_issues]);
        assert_eq!(suggestion.left_out, vec![left(api_issues, LeftOutReason::BeyondOriginal)]);
        assert_eq!(suggestion.grants.len(), 1);
    }

    #[test]
    fn duplicates_and_order_do_not_change_the_suggestion() {
        let fixture = Fixture::new();
        let token = crud_issues_and_read_merge_requests(&fixture);
        let observed = vec![
            fixture.seen("issue:read", Boundary::Project(WEB)),
            fixture.seen("merge_request:read", Boundary::Group(PLATFORM)),
            fixture.seen("issue:create", Boundary::Project(WEB)),
            fixture.seen("issue:read", Boundary::Project(API)),
        ];
        let expected = fixture.suggest(&token, &observed);
        let mut shuffled: Vec<Observed> = observed.iter().rev().copied().collect();
        shuffled.extend_from_slice(&observed);
        assert_eq!(fixture.suggest(&token, &shuffled), expected);
    }

    /// Why the property below compares legacy tokens one permission at a time: legacy
    /// scopes judge a request as a whole, grants judge each permission. A token with
    /// `create_runner` and `manage_runner` may create runners and read them, but not in one
    /// request naming both; its suggestion, holding both permissions, allows that request.
    /// Each permission on its own stays within the original.
    #[test]
    fn legacy_scopes_judge_the_request_grants_judge_each_permission() {
        let fixture = Fixture::new();
        let token = record(
            ALICE,
            Authority::Legacy([LegacyScope::CreateRunner, LegacyScope::ManageRunner].into_iter().collect()),
        );
        assert!(fixture.ask(&token, &["runner:create"], Boundary::Project(WEB)).is_allowed());
        assert!(fixture.ask(&token, &["runner:read"], Boundary::Project(WEB)).is_allowed());
        let both = ["runner:create", "runner:read"];
        assert_eq!(
            fixture.ask(&token, &both, Boundary::Project(WEB)).reason(),
            Some(DenyReason::LegacyScopeInsufficient(LegacyScope::Api))
        );
        let observed = [
            fixture.seen("runner:create", Boundary::Project(WEB)),
            fixture.seen("runner:read", Boundary::Project(WEB)),
        ];
        let narrow = record(ALICE, fixture.suggest(&token, &observed).authority().unwrap());
        assert_eq!(fixture.ask(&narrow, &both, Boundary::Project(WEB)).outcome, Ok(Basis::FineGrained));
    }
}

/// The distributions of this test: tokens that mostly hold what their requests ask for
/// (`crate::world` builds and asks).
mod random {
    use patgate_core::{Action, Authority, LegacyScope, Permission, Resources};
    use proptest::prelude::*;

    use crate::world::{ReachSpec, TokenSpec, USERS, action_set};

    /// Mostly the scopes that open catalogued endpoints, the general ones and the narrow ones.
    fn legacy_scope() -> impl Strategy<Value = LegacyScope> {
        use LegacyScope as S;
        prop_oneof![
            3 => prop::sample::select(vec![S::Api, S::ReadApi, S::Sudo, S::AdminMode]),
            3 => prop::sample::select(vec![S::ReadUser, S::ReadRepository, S::CreateRunner, S::ManageRunner]),
            1 => prop::sample::select(S::ALL.to_vec()),
        ]
    }

    pub(super) fn token(resource_count: usize) -> impl Strategy<Value = TokenSpec> {
        let reach = prop_oneof![
            1 => Just(ReachSpec::Personal),
            2 => Just(ReachSpec::All),
            2 => (prop::collection::vec(0_usize..10, 0..3), prop::collection::vec(0_usize..8, 0..3))
                .prop_map(|(p, g)| ReachSpec::Selected(p, g)),
            1 => Just(ReachSpec::User),
            1 => Just(ReachSpec::Instance),
        ];
        let permissions = prop::collection::vec((0..resource_count, action_set()), 1..8);
        let grants = prop::collection::vec((reach, permissions), 1..4);
        let legacy = prop::option::weighted(0.4, prop::collection::vec(legacy_scope(), 1..4));
        (0..USERS, legacy, grants).prop_map(|(owner, legacy, grants)| TokenSpec { owner, legacy, grants })
    }

    /// Every permission `authority` names; for a legacy token, those of the resources its
    /// narrow scopes open (repository, runner, …).
    pub(super) fn pool(resources: &Resources, authority: &Authority) -> Vec<Permission> {
        match authority {
            Authority::FineGrained(grants) => {
                let mut all: Vec<Permission> =
                    grants.iter().flat_map(|grant| grant.permissions.permissions()).collect();
                all.sort();
                all.dedup();
                all
            }
            Authority::Legacy(_) => {
                let known = resources.well_known();
                [known.repository, known.container_registry, known.runner, known.personal_access_token]
                    .into_iter()
                    .flatten()
                    .flat_map(|resource| Action::ALL.map(|action| Permission { resource, action }))
                    .collect()
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2_000, .. ProptestConfig::default() })]

    /// Observe a random token's allowed requests, suggest, and swap the suggestion in:
    /// (a) every observed request is still allowed, by a grant; (b) whatever the suggestion
    /// allows by a grant, among the same requests and fresh ones, the original allowed too
    /// (for a legacy original: each of its permissions, see
    /// `legacy_scopes_judge_the_request_grants_judge_each_permission`); and the suggestion
    /// passes the crate's validation for the owner.
    #[test]
    fn the_suggestion_replays_every_use_and_is_never_broader(
        world in world::world(20, 0.25, 0.05),
        token_spec in random::token(world::resource_count()),
        used in prop::collection::vec(world::request(0.7), 1..24),
        fresh in prop::collection::vec(world::request(0.7), 0..24),
    ) {
        let resources = Resources::builtin().unwrap();
        let directory = world::build(&world);
        let token = world::build_token(&token_spec, &resources, &world);
        let owner = directory.user(token.owner).unwrap();
        let held = random::pool(&resources, &token.authority);

        let mut observed = Vec::new();
        let mut allowed = Vec::new();
        for spec in &used {
            let permissions = world::permissions_for(spec, &resources, &held);
            let decision = world::ask(&resources, &directory, &world, &token, spec, &permissions);
            if let Ok(Basis::FineGrained | Basis::Legacy) = decision.outcome {
                let boundary = decision.boundary.unwrap();
                observed.extend(permissions.iter().map(|&permission| Observed { permission, boundary }));
                allowed.push((spec, permissions));
            }
        }
        let suggestion = suggest(&resources, &directory, &token, &observed);

        // Only what no grant of this owner can carry is left out: nothing was observed at a
        // gone boundary, with a permission that does not apply, or beyond the original.
        for left in &suggestion.left_out {
            prop_assert_eq!(left.reason, LeftOutReason::NotGrantable, "{:?}", left);
            match left.observed.boundary {
                Boundary::Instance => prop_assert!(!owner.admin),
                Boundary::User(user) => prop_assert_ne!(user, owner.id),
                other => prop_assert!(false, "left out at {:?}", other),
            }
        }
        let Some(authority) = suggestion.authority() else {
            prop_assert_eq!(suggestion.left_out.len(), observed.iter().collect::<std::collections::HashSet<_>>().len());
            return Ok(());
        };
        prop_assert_eq!(&validated(&resources, &directory, owner.id, &suggestion), &authority);
        let narrow = TokenRecord { authority, ..token.clone() };
        let carried = |observation: &Observed| !suggestion.left_out.iter().any(|left| left.observed == *observation);

        // (a) replay.
        for (spec, permissions) in &allowed {
            let decision = world::ask(&resources, &directory, &world, &narrow, spec, permissions);
            let boundary = decision.boundary.unwrap();
            if permissions.iter().all(|&permission| carried(&Observed { permission, boundary })) {
                prop_assert_eq!(decision.outcome, Ok(Basis::FineGrained), "{:?} {:?}", spec, permissions);
            }
        }

        // (b) never broader, on the observed requests and fresh ones drawn from what the
        // suggestion holds.
        let suggested = random::pool(&resources, &narrow.authority);
        for spec in used.iter().chain(&fresh) {
            let permissions = world::permissions_for(spec, &resources, &suggested);
            let after = world::ask(&resources, &directory, &world, &narrow, spec, &permissions);
            if after.outcome != Ok(Basis::FineGrained) {
                continue;
            }
            let before = world::ask(&resources, &directory, &world, &token, spec, &permissions);
            match &token.authority {
                Authority::FineGrained(_) => {
                    prop_assert!(before.is_allowed(), "suggestion allows {:?} {:?}, original: {:?}", spec, permissions, before);
                }
                Authority::Legacy(_) if before.is_allowed() => {}
                Authority::Legacy(_) => {
                    prop_assert!(matches!(before.reason(), Some(DenyReason::LegacyScopeInsufficient(_))), "{:?}", before);
                    for permission in &permissions {
                        let alone = world::ask(&resources, &directory, &world, &token, spec, std::slice::from_ref(permission));
                        prop_assert!(alone.is_allowed(), "suggestion allows {:?} at {:?}, original: {:?}", permission, spec, alone);
                    }
                }
            }
        }
    }
}
