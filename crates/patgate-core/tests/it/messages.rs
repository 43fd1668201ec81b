//! Every deny reason's message, word for word: forward auth and the decision API show them to
//! people, and scripts match on them.

use patgate_core::{
    Action, DenyReason, GroupId, LegacyScope, LifetimeExcess, Permission, Requirement, Resources, Role,
    token::TokenParseError,
};

#[test]
fn each_deny_reason_reads_as_written() {
    let resources = Resources::builtin().unwrap();
    let update_mr = Permission { resource: resources.id("merge_request").unwrap(), action: Action::Update };
    let read_issue = Permission { resource: resources.id("issue").unwrap(), action: Action::Read };
    let cases: Vec<(DenyReason, &str)> = vec![
        (
            DenyReason::Malformed(TokenParseError::Checksum),
            "This is not a valid patgate token: the token's checksum does not match.",
        ),
        (DenyReason::UnknownToken, "The token is not known to patgate."),
        (DenyReason::Revoked, "The token has been revoked."),
        (DenyReason::Expired, "The token has expired."),
        (DenyReason::OwnerBlocked, "The token's owner is blocked or deleted."),
        (DenyReason::IpNotAllowed, "The token may not be used from this address."),
        (
            DenyReason::LifetimePolicy(LifetimeExcess { cap_days: 90, group: None }),
            "The token lives longer than the current policy allows (90 days at most, with an expiry date); rotate \
             it to get a compliant expiry.",
        ),
        (
            DenyReason::LifetimePolicy(LifetimeExcess { cap_days: 30, group: Some(GroupId(4)) }),
            "Tokens used in this group may live 30 days at most, and this one lives longer; rotate it or create a \
             token with an earlier expiry.",
        ),
        (DenyReason::LegacyDisabled, "Legacy tokens are turned off on this instance; use a fine-grained token."),
        (
            DenyReason::EndpointNotCovered,
            "This endpoint does not support fine-grained tokens: it is not in patgate's endpoint catalog.",
        ),
        (
            DenyReason::AmbiguousPath,
            "The request path has a `.`, `..` or empty segment, which proxies and servers may read differently; send \
             the path without them.",
        ),
        (DenyReason::NotFound, "The project, group or user does not exist or is not visible."),
        (DenyReason::OutsideReach, "The token's grants do not reach this project, group or user."),
        (
            DenyReason::InsufficientScope(update_mr),
            "The token needs the permission Merge Request: Update (`merge_request:update`) here.",
        ),
        (
            DenyReason::RoleTooLow { permission: update_mr, needed: Requirement::Member(Role::Developer) },
            "Merge Request: Update needs the owner to be at least developer here; the token never exceeds its \
             owner's role.",
        ),
        (
            DenyReason::RoleTooLow { permission: read_issue, needed: Requirement::SelfUser },
            "Issue: Read needs the owner to be the user concerned here; the token never exceeds its owner's role.",
        ),
        (
            DenyReason::RoleTooLow { permission: read_issue, needed: Requirement::Admin },
            "Issue: Read needs the owner to be an administrator here; the token never exceeds its owner's role.",
        ),
        (
            DenyReason::RoleTooLow { permission: read_issue, needed: Requirement::AnyUser },
            "Issue: Read needs the owner to be an active user here; the token never exceeds its owner's role.",
        ),
        (
            DenyReason::LegacyScopeInsufficient(LegacyScope::ReadApi),
            "The token needs the scope `read_api` for this request.",
        ),
        (DenyReason::NotApplicable(read_issue), "Issue: Read does not apply to this kind of boundary."),
    ];
    for (reason, expected) in cases {
        assert_eq!(reason.message(&resources), expected, "{reason:?}");
        // Appended after what the buffer holds, as forward auth writes it into a body.
        let mut out = String::from("{\"message\":\"");
        reason.write_message(&resources, &mut out);
        assert_eq!(out.strip_prefix("{\"message\":\""), Some(expected), "{reason:?}");
    }
    assert_eq!(resources.permission_name(update_mr), "merge_request:update");
    assert_eq!(resources.permission_label(read_issue), "Issue: Read");
}
