//! The policy at use: lifetime caps lowered after a token was made, stricter caps of a
//! group, the legacy cut-off date, and the same group caps at creation; every edge to the
//! second.

use patgate_core::{
    Action, ActionSet, Authority, BoundaryRef, DenyReason, Directory, GroupId, LifetimeExcess, Locator,
    MembershipTarget, PermissionSet, Policy, ProjectId, Request, Resources, Role, ScopeSet, Timestamp, TokenId,
    TokenRecord, UserId, UserState, Visibility, decide_under,
    grant::{Grant, Reach},
    policy::exceeds,
    time::DAY,
    validate::{ValidationError, validate_group_caps},
};

/// 2026-11-28T12:00:00Z: the middle of a day, so day-start rounding shows.
const MADE: Timestamp = Timestamp(1_795_867_200);
const DAY_START: Timestamp = Timestamp(1_795_867_200 - 12 * 3600);

fn directory() -> Directory {
    let mut d = Directory::new();
    d.upsert_user(UserId(1), "alice", UserState::Active, false).unwrap();
    d.insert_group(GroupId(1), "acme", Visibility::Private).unwrap();
    d.insert_group(GroupId(2), "acme/secure", Visibility::Private).unwrap();
    d.insert_group(GroupId(3), "acme/secure/vault", Visibility::Private).unwrap();
    d.insert_project(ProjectId(1), "acme/secure/vault/keys", Visibility::Private).unwrap();
    d.insert_project(ProjectId(2), "acme/web", Visibility::Private).unwrap();
    d.set_membership(UserId(1), MembershipTarget::Group(GroupId(1)), Role::Maintainer).unwrap();
    d
}

fn token(resources: &Resources, expires_at: Option<Timestamp>, legacy: bool) -> TokenRecord {
    let authority = if legacy {
        Authority::Legacy(ScopeSet::EMPTY.with("read_api".parse().unwrap()))
    } else {
        let permissions = issue_read(resources);
        Authority::FineGrained(vec![Grant { reach: Reach::AllMemberships, permissions }].into())
    };
    TokenRecord {
        id: TokenId(7),
        owner: UserId(1),
        authority,
        created_at: MADE,
        expires_at,
        revoked_at: None,
        allowed_ips: Box::new([]),
    }
}

fn issue_read(resources: &Resources) -> PermissionSet {
    let permission = resources.permission("issue:read").unwrap();
    PermissionSet::new([(permission.resource, ActionSet::of(Action::Read))])
}

fn ask(policy: &Policy, token: &TokenRecord, project: &str, now: Timestamp) -> Result<(), DenyReason> {
    let resources = Resources::builtin().unwrap();
    let directory = directory();
    let permissions = [resources.permission("issue:read").unwrap()];
    let request = Request::api(&permissions, BoundaryRef::Project(Locator::Path(project)));
    decide_under(&resources, &directory, policy, token, &request, now).outcome.map(|_| ())
}

#[test]
fn the_cap_counts_whole_days_from_the_start_of_the_creation_day() {
    let cap = DAY_START.plus_days(30);
    assert!(!exceeds(MADE, Some(cap), 30));
    assert!(exceeds(MADE, Some(Timestamp(cap.0 + 1)), 30));
    assert!(exceeds(MADE, None, 400), "no expiry exceeds every cap");
}

#[test]
fn a_lowered_instance_cap_blocks_at_use_and_a_raised_one_unblocks() {
    let resources = Resources::builtin().unwrap();
    let long = token(&resources, Some(DAY_START.plus_days(90)), false);
    let now = MADE.plus_days(1);
    let generous = Policy { max_lifetime_days: 365, expiry_required: true, ..Policy::default() };
    assert_eq!(ask(&generous, &long, "acme/web", now), Ok(()));
    let strict = Policy { max_lifetime_days: 89, ..generous.clone() };
    let denied = ask(&strict, &long, "acme/web", now).unwrap_err();
    assert_eq!(denied, DenyReason::LifetimePolicy(LifetimeExcess { cap_days: 89, group: None }));
    assert_eq!((denied.code(), denied.status()), ("lifetime_policy", 401));
    assert!(denied.message(&resources).contains("89 days"), "{}", denied.message(&resources));
    assert_eq!(ask(&Policy { max_lifetime_days: 90, ..strict }, &long, "acme/web", now), Ok(()), "exactly at the cap");
    // A token without expiry is blocked once expiry is required, and only then.
    let forever = token(&resources, None, false);
    let optional = Policy { max_lifetime_days: 0, expiry_required: false, ..Policy::default() };
    assert_eq!(ask(&optional, &forever, "acme/web", now), Ok(()));
    let required = Policy { expiry_required: true, ..optional };
    assert_eq!(ask(&required, &forever, "acme/web", now).unwrap_err().code(), "lifetime_policy");
}

#[test]
fn a_group_cap_blocks_inside_the_group_only_with_403() {
    let resources = Resources::builtin().unwrap();
    let month = token(&resources, Some(DAY_START.plus_days(31)), false);
    let policy = Policy { group_caps: vec![(GroupId(2), 30), (GroupId(3), 60)], ..Policy::default() };
    let now = MADE.plus_days(1);
    let denied = ask(&policy, &month, "acme/secure/vault/keys", now).unwrap_err();
    // The strictest cap the token exceeds among the boundary's groups.
    assert_eq!(denied, DenyReason::LifetimePolicy(LifetimeExcess { cap_days: 30, group: Some(GroupId(2)) }));
    assert_eq!(denied.status(), 403);
    assert_eq!(ask(&policy, &month, "acme/web", now), Ok(()), "outside the group");
    let short = token(&resources, Some(DAY_START.plus_days(30)), false);
    assert_eq!(ask(&policy, &short, "acme/secure/vault/keys", now), Ok(()), "at the cap");
}

#[test]
fn legacy_tokens_stop_at_the_first_second_of_the_cut_off_date() {
    let resources = Resources::builtin().unwrap();
    let cut_off = Timestamp::parse_date("2027-01-01").unwrap();
    let policy = Policy { legacy_use_disabled_from: Some(cut_off), ..Policy::default() };
    let legacy = token(&resources, Some(DAY_START.plus_days(60)), true);
    assert_eq!(ask(&policy, &legacy, "acme/web", Timestamp(cut_off.0 - 1)), Ok(()));
    let denied = ask(&policy, &legacy, "acme/web", cut_off).unwrap_err();
    assert_eq!((denied, denied.status()), (DenyReason::LegacyDisabled, 401));
    let fine = token(&resources, Some(DAY_START.plus_days(60)), false);
    assert_eq!(ask(&policy, &fine, "acme/web", cut_off), Ok(()), "fine-grained tokens are not affected");
}

#[test]
fn a_revocation_takes_effect_at_its_instant() {
    let resources = Resources::builtin().unwrap();
    let mut rotated = token(&resources, Some(DAY_START.plus_days(60)), false);
    let grace_end = MADE.plus_days(2);
    rotated.revoked_at = Some(grace_end);
    assert_eq!(ask(&Policy::default(), &rotated, "acme/web", Timestamp(grace_end.0 - 1)), Ok(()));
    assert_eq!(ask(&Policy::default(), &rotated, "acme/web", grace_end), Err(DenyReason::Revoked));
    assert_eq!(DAY, 86_400);
}

#[test]
fn creation_checks_the_caps_of_every_group_a_token_reaches_into() {
    let resources = Resources::builtin().unwrap();
    let directory = directory();
    let alice = directory.user(UserId(1)).unwrap().clone();
    let caps = [(GroupId(2), 30)];
    let read = issue_read(&resources);
    let selected = |projects: Vec<ProjectId>, groups: Vec<GroupId>| {
        Authority::FineGrained(
            vec![Grant {
                reach: Reach::Selected { projects: projects.into(), groups: groups.into() },
                permissions: read,
            }]
            .into(),
        )
    };
    let long = Some(MADE.plus_days(40));
    let refused = |authority: &Authority| validate_group_caps(&directory, &alice, authority, &caps, long, MADE);
    let beyond = Err(ValidationError::ExpiryBeyondGroupPolicy { group: "acme/secure".into(), max_days: 30 });
    assert_eq!(refused(&selected(vec![ProjectId(1)], vec![])), beyond, "a project inside the group");
    assert_eq!(refused(&selected(vec![], vec![GroupId(3)])), beyond, "a subgroup");
    assert_eq!(refused(&selected(vec![], vec![GroupId(1)])), beyond, "a parent group covers it");
    assert_eq!(refused(&selected(vec![ProjectId(2)], vec![])), Ok(()), "elsewhere");
    let all = Authority::FineGrained(vec![Grant { reach: Reach::AllMemberships, permissions: read }].into());
    assert_eq!(refused(&all), beyond, "alice's membership of acme reaches into acme/secure");
    let personal = Authority::FineGrained(vec![Grant { reach: Reach::PersonalProjects, permissions: read }].into());
    assert_eq!(refused(&personal), Ok(()));
    let within = validate_group_caps(&directory, &alice, &all, &caps, Some(DAY_START.plus_days(30)), MADE);
    assert_eq!(within, Ok(()), "at the cap");
    let message = refused(&all).map_err(|error| error.to_string());
    assert!(message.is_err_and(|text| text.contains("maximum lifetime of 30 days for tokens reaching into group")));
}
