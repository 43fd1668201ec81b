//! Validation of new tokens: every bad input is refused with an error naming it, and a
//! token only mints tokens within its own grants.

use patgate_core::{
    Authority, Directory, GroupId, LegacyScope, MembershipTarget, ProjectId, Resources, Role, Timestamp, TokenId,
    TokenRecord, User, UserId, UserState, Visibility,
    validate::{
        AuthoritySpec, GrantSpec, LifetimePolicy, NewTokenSpec, ValidToken, ValidationError, validate_new_token,
    },
};

const NOW: Timestamp = Timestamp(1_795_867_200); // 2026-11-28T12:00:00Z

fn directory() -> Directory {
    let mut d = Directory::new();
    d.upsert_user(UserId(1), "alice", UserState::Active, false).unwrap();
    d.upsert_user(UserId(2), "root", UserState::Active, true).unwrap();
    d.upsert_user(UserId(3), "mallory", UserState::Blocked, false).unwrap();
    d.insert_group(GroupId(1), "acme", Visibility::Private).unwrap();
    d.insert_group(GroupId(2), "acme/platform", Visibility::Private).unwrap();
    d.insert_group(GroupId(3), "hidden", Visibility::Private).unwrap();
    d.insert_project(ProjectId(1), "acme/platform/api", Visibility::Private).unwrap();
    d.insert_project(ProjectId(2), "acme/web", Visibility::Private).unwrap();
    d.insert_project(ProjectId(3), "hidden/vault", Visibility::Private).unwrap();
    d.insert_project(ProjectId(4), "alice/dotfiles", Visibility::Private).unwrap();
    d.set_membership(UserId(1), MembershipTarget::Group(GroupId(1)), Role::Developer).unwrap();
    d
}

fn grant(reach: &str, projects: &[&str], groups: &[&str], permissions: &[(&str, &[&str])]) -> GrantSpec {
    GrantSpec {
        reach: reach.to_owned(),
        projects: projects.iter().map(|p| (*p).to_owned()).collect(),
        groups: groups.iter().map(|g| (*g).to_owned()).collect(),
        permissions: permissions
            .iter()
            .map(|(resource, actions)| ((*resource).to_owned(), actions.iter().map(|a| (*a).to_owned()).collect()))
            .collect(),
    }
}

fn fine(grants: Vec<GrantSpec>) -> NewTokenSpec {
    NewTokenSpec {
        authority: AuthoritySpec::FineGrained { grants },
        expires_at: Timestamp::parse_date("2027-01-31"),
        allowed_ips: Vec::new(),
    }
}

fn legacy(scopes: &[&str]) -> NewTokenSpec {
    NewTokenSpec {
        authority: AuthoritySpec::Legacy { scopes: scopes.iter().map(|s| (*s).to_owned()).collect() },
        expires_at: Timestamp::parse_date("2027-01-31"),
        allowed_ips: Vec::new(),
    }
}

fn check(owner: u64, spec: &NewTokenSpec, creator: Option<&TokenRecord>) -> Result<ValidToken, ValidationError> {
    let resources = Resources::builtin().unwrap();
    let directory = directory();
    let owner: User = directory.user(UserId(owner)).unwrap().clone();
    validate_new_token(&resources, &directory, &owner, spec, LifetimePolicy::default(), creator, NOW)
}

fn as_creator(valid: ValidToken) -> TokenRecord {
    TokenRecord {
        id: TokenId(99),
        owner: UserId(1),
        authority: valid.authority,
        expires_at: valid.expires_at,
        created_at: NOW,
        revoked_at: None,
        allowed_ips: valid.allowed_ips,
    }
}

#[test]
fn bad_input_is_refused_with_an_error_naming_it() {
    use ValidationError as E;
    let issue_read: &[(&str, &[&str])] = &[("issue", &["read"])];
    let cases: Vec<(&str, u64, NewTokenSpec, ValidationError)> = vec![
        ("blocked owner", 3, legacy(&["api"]), E::OwnerInactive),
        ("no scopes", 1, legacy(&[]), E::NoScopes),
        ("unknown scope", 1, legacy(&["write_everything"]), E::UnknownScope("write_everything".into())),
        ("sudo for a non-admin", 1, legacy(&["api", "sudo"]), E::AdminScope(LegacyScope::Sudo)),
        ("no grants", 1, fine(vec![]), E::NoGrants),
        (
            "unknown reach",
            1,
            fine(vec![grant("everything", &[], &[], issue_read)]),
            E::UnknownReach { grant: 0, reach: "everything".into() },
        ),
        (
            "instance for a non-admin",
            1,
            fine(vec![grant("instance", &[], &[], &[("admin_user", &["read"])])]),
            E::InstanceNotAdmin { grant: 0 },
        ),
        (
            "selected without targets",
            1,
            fine(vec![grant("selected", &[], &[], issue_read)]),
            E::EmptySelection { grant: 0 },
        ),
        (
            "targets on all_memberships",
            1,
            fine(vec![grant("all_memberships", &["acme/web"], &[], issue_read)]),
            E::SelectionNotAllowed { grant: 0, reach: patgate_core::ReachKind::AllMemberships },
        ),
        (
            "a project that does not exist",
            1,
            fine(vec![grant("selected", &["acme/nope"], &[], issue_read)]),
            E::NotVisible { grant: 0, field: "projects", path: "acme/nope".into() },
        ),
        (
            "a private project the owner cannot see (same answer as missing)",
            1,
            fine(vec![
                grant("user", &[], &[], &[("user", &["read"])]),
                grant("selected", &["hidden/vault"], &[], issue_read),
            ]),
            E::NotVisible { grant: 1, field: "projects", path: "hidden/vault".into() },
        ),
        (
            "a group the owner cannot see",
            1,
            fine(vec![grant("selected", &[], &["hidden"], issue_read)]),
            E::NotVisible { grant: 0, field: "groups", path: "hidden".into() },
        ),
        ("no permissions", 1, fine(vec![grant("all_memberships", &[], &[], &[])]), E::NoPermissions { grant: 0 }),
        (
            "unknown resource",
            1,
            fine(vec![grant("all_memberships", &[], &[], &[("issues", &["read"])])]),
            E::UnknownResource { grant: 0, resource: "issues".into() },
        ),
        (
            "unknown action",
            1,
            fine(vec![grant("all_memberships", &[], &[], &[("issue", &["write"])])]),
            E::UnknownAction { grant: 0, resource: "issue".into(), action: "write".into() },
        ),
        (
            "empty action list",
            1,
            fine(vec![grant("all_memberships", &[], &[], &[("issue", &[])])]),
            E::NoActions { grant: 0, resource: "issue".into() },
        ),
        (
            "an action the resource does not have",
            1,
            fine(vec![grant("all_memberships", &[], &[], &[("job_artifact", &["create"])])]),
            E::ActionNotOffered { grant: 0, resource: "job_artifact".into(), action: patgate_core::Action::Create },
        ),
        (
            "a user-level resource on a project reach",
            1,
            fine(vec![grant("selected", &["acme/web"], &[], &[("ssh_key", &["read"])])]),
            E::ResourceOutsideReach { grant: 0, resource: "ssh_key".into(), reach: patgate_core::ReachKind::Selected },
        ),
        ("no expiry", 1, NewTokenSpec { expires_at: None, ..legacy(&["read_api"]) }, E::ExpiryRequired),
        (
            "expiry in the past",
            1,
            NewTokenSpec { expires_at: Timestamp::parse_date("2026-11-28"), ..legacy(&["read_api"]) },
            E::ExpiryInPast,
        ),
        (
            "expiry one day beyond 365 days",
            1,
            NewTokenSpec { expires_at: Timestamp::parse_date("2027-11-29"), ..legacy(&["read_api"]) },
            E::ExpiryBeyondPolicy { max_days: 365 },
        ),
        (
            "a bad IP range",
            1,
            NewTokenSpec { allowed_ips: vec!["10.0.0.0/8".into(), "10.1.2.3/8".into()], ..legacy(&["read_api"]) },
            E::BadIp("10.1.2.3/8".into()),
        ),
    ];
    for (name, owner, spec, expected) in cases {
        let message = expected.to_string();
        assert_eq!(check(owner, &spec, None), Err(expected), "{name}");
        assert!(!message.ends_with('.'), "{name}: {message}");
    }
}

#[test]
fn good_tokens_are_resolved() {
    let valid = check(
        1,
        &NewTokenSpec {
            allowed_ips: vec!["192.0.2.0/24".into()],
            expires_at: Timestamp::parse_date("2027-11-28"), // exactly 365 days from today
            ..fine(vec![
                grant(
                    "selected",
                    &["acme/platform/api", "2", "acme/platform/api"],
                    &["ACME/Platform"],
                    &[("container_registry", &["create", "read"]), ("issue", &["read"])],
                ),
                grant("personal_projects", &[], &[], &[("repository", &["read"])]),
                grant("user", &[], &[], &[("user", &["read"]), ("personal_access_token", &["read"])]),
            ])
        },
        None,
    )
    .unwrap();
    let Authority::FineGrained(grants) = &valid.authority else { panic!("fine-grained expected") };
    assert_eq!(grants.len(), 3);
    assert_eq!(
        grants[0].reach,
        patgate_core::Reach::Selected { projects: [ProjectId(1), ProjectId(2)].into(), groups: [GroupId(2)].into() }
    );
    assert_eq!(valid.allowed_ips.len(), 1);
    // An admin may hold instance reach and admin scopes.
    check(2, &fine(vec![grant("instance", &[], &[], &[("admin_user", &["read"])])]), None).unwrap();
    check(2, &legacy(&["api", "admin_mode", "sudo"]), None).unwrap();
    // Expiry may be off by policy.
    let resources = Resources::builtin().unwrap();
    let directory = directory();
    let owner = directory.user(UserId(1)).unwrap();
    let relaxed = LifetimePolicy { expiry_required: false, ..LifetimePolicy::default() };
    let spec = NewTokenSpec { expires_at: None, ..legacy(&["read_api"]) };
    assert!(validate_new_token(&resources, &directory, owner, &spec, relaxed, None, NOW).is_ok());
}

#[test]
fn a_token_only_mints_narrower_tokens() {
    let registry: &[(&str, &[&str])] = &[("container_registry", &["create", "read"])];
    let group_creator =
        as_creator(check(1, &fine(vec![grant("selected", &[], &["acme/platform"], registry)]), None).unwrap());
    // Inside the selected group, with a subset of permissions: allowed.
    for narrower in [
        fine(vec![grant("selected", &["acme/platform/api"], &[], &[("container_registry", &["read"])])]),
        fine(vec![grant("selected", &[], &["acme/platform"], registry)]),
    ] {
        assert!(check(1, &narrower, Some(&group_creator)).is_ok(), "{narrower:?}");
    }
    // Wider reach, more permissions, or another kind: refused.
    for wider in [
        fine(vec![grant("selected", &[], &["acme"], &[("container_registry", &["read"])])]),
        fine(vec![grant("selected", &["acme/web"], &[], &[("container_registry", &["read"])])]),
        fine(vec![grant("selected", &["acme/platform/api"], &[], &[("container_registry", &["delete"])])]),
        fine(vec![grant("all_memberships", &[], &[], &[("container_registry", &["read"])])]),
        fine(vec![grant("user", &[], &[], &[("user", &["read"])])]),
        legacy(&["read_registry"]),
    ] {
        assert_eq!(check(1, &wider, Some(&group_creator)), Err(ValidationError::Escalation), "{wider:?}");
    }
    // all_memberships covers what the owner is a member of, now.
    let member_creator =
        as_creator(check(1, &fine(vec![grant("all_memberships", &[], &[], &[("issue", &["read"])])]), None).unwrap());
    assert!(
        check(1, &fine(vec![grant("selected", &["acme/web"], &[], &[("issue", &["read"])])]), Some(&member_creator))
            .is_ok()
    );
    assert!(
        check(1, &fine(vec![grant("personal_projects", &[], &[], &[("issue", &["read"])])]), Some(&member_creator))
            .is_ok()
    );
    // Legacy creators: `api` may mint anything it holds (see below for admin scopes),
    // `read_api` nothing.
    let api = as_creator(check(1, &legacy(&["api"]), None).unwrap());
    let read_api = as_creator(check(1, &legacy(&["read_api"]), None).unwrap());
    let spec = fine(vec![grant("all_memberships", &[], &[], &[("issue", &["read"])])]);
    assert!(check(1, &spec, Some(&api)).is_ok());
    assert_eq!(check(1, &spec, Some(&read_api)), Err(ValidationError::Escalation));
}

/// A creating token of root (the admin) with these scopes.
fn root_creator(scopes: &[&str]) -> TokenRecord {
    TokenRecord { owner: UserId(2), ..as_creator(check(2, &legacy(scopes), None).unwrap()) }
}

#[test]
fn a_legacy_creator_hands_out_no_admin_power_it_lacks() {
    use ValidationError as E;
    let instance = || grant("instance", &[], &[], &[("admin_user", &["read"])]);
    let user = || grant("user", &[], &[], &[("user", &["read"])]);
    // An admin's `api` token without admin_mode is refused on admin endpoints (decision.rs,
    // legacy_covered): minting must not undo that gate.
    let api = root_creator(&["api"]);
    for (spec, expected) in [
        (legacy(&["api", "admin_mode"]), E::ScopeNotHeld(LegacyScope::AdminMode)),
        (legacy(&["api", "sudo"]), E::ScopeNotHeld(LegacyScope::Sudo)),
        (legacy(&["read_api", "read_service_ping"]), E::ScopeNotHeld(LegacyScope::ReadServicePing)),
        (fine(vec![instance()]), E::InstanceNeedsAdminMode { grant: 0 }),
        (fine(vec![user(), instance()]), E::InstanceNeedsAdminMode { grant: 1 }),
    ] {
        let message = expected.to_string();
        assert_eq!(check(2, &spec, Some(&api)), Err(expected), "{spec:?}");
        assert!(!message.ends_with('.'), "{message}");
    }
    // What it holds itself, it may hand out.
    for spec in [legacy(&["api"]), legacy(&["read_api", "read_user"]), fine(vec![user()])] {
        assert!(check(2, &spec, Some(&api)).is_ok(), "{spec:?}");
    }
    // With admin_mode: admin_mode and instance grants, but still no sudo.
    let admin_mode = root_creator(&["api", "admin_mode"]);
    assert!(check(2, &legacy(&["api", "admin_mode"]), Some(&admin_mode)).is_ok());
    assert!(check(2, &fine(vec![instance()]), Some(&admin_mode)).is_ok());
    assert_eq!(
        check(2, &legacy(&["api", "admin_mode", "sudo"]), Some(&admin_mode)),
        Err(E::ScopeNotHeld(LegacyScope::Sudo))
    );
    // `sudo` alone is the whole API and admin mode for an admin (decision.rs), so it
    // covers admin_mode and instance grants.
    let sudo = root_creator(&["sudo"]);
    for spec in [legacy(&["api", "admin_mode"]), legacy(&["sudo"]), fine(vec![instance()])] {
        assert!(check(2, &spec, Some(&sudo)).is_ok(), "{spec:?}");
    }
    // The rotation path asks the same question.
    let directory = directory();
    let root = directory.user(UserId(2)).unwrap();
    let wanted = check(2, &legacy(&["api", "admin_mode"]), None).unwrap().authority;
    assert!(!patgate_core::validate::authority_within(&wanted, &api.authority, &directory, root));
    assert!(patgate_core::validate::authority_within(&wanted, &admin_mode.authority, &directory, root));
}

#[test]
fn a_creator_allowlist_binds_the_tokens_it_creates() {
    let mint: &[(&str, &[&str])] = &[("personal_access_token", &["create"])];
    let with_ips = |ips: &[&str]| NewTokenSpec {
        allowed_ips: ips.iter().map(|ip| (*ip).to_owned()).collect(),
        ..fine(vec![grant("user", &[], &[], mint)])
    };
    let ranges = |valid: &ValidToken| valid.allowed_ips.iter().map(ToString::to_string).collect::<Vec<_>>();
    let creator = as_creator(check(1, &with_ips(&["10.0.0.0/8"]), None).unwrap());

    // None given: the new token inherits the creator's list, so it is no freer than it.
    let inherited = check(1, &with_ips(&[]), Some(&creator)).unwrap();
    assert_eq!(ranges(&inherited), ["10.0.0.0/8"]);
    // Narrower: kept as given.
    let narrower = check(1, &with_ips(&["10.1.0.0/16", "10.2.3.4"]), Some(&creator)).unwrap();
    assert_eq!(ranges(&narrower), ["10.1.0.0/16", "10.2.3.4/32"]);
    // Wider, or elsewhere: refused, naming the range.
    for (ips, offending) in [
        (&["10.0.0.0/8", " 192.168.1.0/24"][..], "192.168.1.0/24"),
        (&["0.0.0.0/0"][..], "0.0.0.0/0"),
        (&["10.0.0.0/7"][..], "10.0.0.0/7"),
        (&["2001:db8::/32"][..], "2001:db8::/32"),
    ] {
        let refused = check(1, &with_ips(ips), Some(&creator));
        let expected =
            ValidationError::IpBeyondCreator { range: offending.to_owned(), allowed: "10.0.0.0/8".to_owned() };
        assert_eq!(refused, Err(expected.clone()), "{ips:?}");
        let message = expected.to_string();
        assert!(message.contains(&format!("`{offending}`")) && !message.ends_with('.'), "{message}");
    }
    // Each range within one of several creator ranges.
    let two = as_creator(check(1, &with_ips(&["10.0.0.0/8", "2001:db8::/32"]), None).unwrap());
    assert!(check(1, &with_ips(&["2001:db8:5::/48", "10.9.0.0/16"]), Some(&two)).is_ok());
    assert_eq!(ranges(&check(1, &with_ips(&[]), Some(&two)).unwrap()), ["10.0.0.0/8", "2001:db8::/32"]);
    // A creator without a list may be used from anywhere: nothing is inherited or refused.
    let anywhere = as_creator(check(1, &with_ips(&[]), None).unwrap());
    assert!(check(1, &with_ips(&[]), Some(&anywhere)).unwrap().allowed_ips.is_empty());
    assert_eq!(ranges(&check(1, &with_ips(&["0.0.0.0/0"]), Some(&anywhere)).unwrap()), ["0.0.0.0/0"]);
    // Legacy creators are bound the same way.
    let legacy_creator = as_creator(
        check(1, &NewTokenSpec { allowed_ips: vec!["192.0.2.0/24".into()], ..legacy(&["api"]) }, None).unwrap(),
    );
    assert_eq!(ranges(&check(1, &legacy(&["read_api"]), Some(&legacy_creator)).unwrap()), ["192.0.2.0/24"]);
    assert!(matches!(
        check(
            1,
            &NewTokenSpec { allowed_ips: vec!["198.51.100.0/24".into()], ..legacy(&["read_api"]) },
            Some(&legacy_creator)
        ),
        Err(ValidationError::IpBeyondCreator { .. })
    ));
    // Without a creator (a session), the list is the client's.
    assert!(check(1, &with_ips(&[]), None).unwrap().allowed_ips.is_empty());
}
