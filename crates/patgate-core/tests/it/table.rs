//! Table-driven decisions: one hand-written case per row, each with the exact answer.
//!
//! Every expectation comes from GitLab's documentation (the "Roles and permissions" page, the
//! fine-grained and legacy token pages, as summarised in `shared/reference/gitlab-model.md`)
//! or from DESIGN.md §2, §3 and §6 — never from running the engine and copying its output.
//! Where a row is not obvious, a comment above it names its source.
//!
//! Every row goes the whole way (`Engine::decide_presented`): a real token string is
//! assembled, parsed, digested, looked up and decided.
//!
//! A row is `"name": "token", "request" => expected;` in a small language:
//!
//! - token: `<owner> <grant>… [revoked] [ip:<cidr>]…` where a grant is `<reach>=<perms>`,
//!   reach one of `personal`, `all`, `user`, `instance`, `sel(p:<path>,g:<path>,…)` and perms
//!   `resource:crud-letters,…`; or `<owner> legacy:<scope>,… [revoked] [ip:<cidr>]`.
//!   Every token expires on 2027-01-01 ([`EXPIRY`]).
//! - request: `<what> [@<boundary>] [own_token] [from:<ip>] [at:expiry|at:expiry-1s]` where
//!   what is `resource:action,…` (an API call, read-only when every action is a read),
//!   `git:pull` / `git:push` (Git over HTTP: repository read / update), `registry:pull` /
//!   `registry:push` (container registry: read / create), `always` (an endpoint open to every
//!   token), `uncatalogued:GET` / `uncatalogued:POST` or `ambiguous` (a path with a `.`,
//!   `..` or empty segment); boundary `p:<path>`, `p#<id>`,
//!   `g:<path>`, `u:self`, `u:<username>`, `u#<id>` or `instance`. Decided at [`NOW`] unless
//!   `at:`.

use std::net::IpAddr;

use patgate_core::DenyReason::{
    AmbiguousPath, EndpointNotCovered, Expired, IpNotAllowed, NotFound, OutsideReach, OwnerBlocked, Revoked,
};
use patgate_core::{
    Action, ActionSet, Authority, Basis, BoundaryRef, Decision, DenyReason, DigestKey, Directory, Engine, Grant,
    GroupId, Index, LegacyScope, Locator, MembershipTarget, Operation, Permission, PermissionSet, ProjectId, Reach,
    Request, Requirement, Resources, Role, ScopeSet, Surface, Timestamp, TokenFormat, TokenId, TokenKind, TokenRecord,
    UserId, UserLocator, UserState, Visibility, decide, net::IpNet, token::TokenParseError,
};

/// 2026-11-28T12:00:00Z: when every row is decided unless it says otherwise.
const NOW: Timestamp = Timestamp(1_795_867_200);
/// 2027-01-01T00:00:00Z. GitLab: "a token expires at 00:00 UTC on its date", so a token
/// dated 2027-01-01 works until 2026-12-31T23:59:59Z and not at this second.
const EXPIRY: Timestamp = Timestamp(1_798_761_600);

/// The expected outcome of a row.
#[derive(Clone, Copy, Debug)]
enum Want {
    Allow(Basis),
    /// A reason that names no permission or scope.
    Deny(DenyReason),
    /// `InsufficientScope` naming this `resource:action`.
    NeedsPermission(&'static str),
    /// `RoleTooLow` for this `resource:action`, needing a role name, `self`, `admin` or `any`.
    NeedsRole(&'static str, &'static str),
    /// `LegacyScopeInsufficient` naming this scope.
    NeedsScope(&'static str),
}

use Want::{Deny, NeedsPermission, NeedsRole, NeedsScope};

const FINE: Want = Want::Allow(Basis::FineGrained);
const LEGACY: Want = Want::Allow(Basis::Legacy);
const ANONYMOUS: Want = Want::Allow(Basis::Anonymous);
const ALWAYS: Want = Want::Allow(Basis::Always);

struct Case {
    name: &'static str,
    token: &'static str,
    request: &'static str,
    want: Want,
}

macro_rules! table {
    ($($name:literal : $token:literal, $request:literal => $want:expr;)*) => {
        &[$(Case { name: $name, token: $token, request: $request, want: $want }),*]
    };
}

// The fixture (see `directory()`):
//   groups   acme (public) ⊃ acme/platform (private) ⊃ acme/platform/infra (private); other (private)
//   projects acme/platform/api (private, id 1), acme/platform/infra/terraform (private),
//            acme/web (public), acme/intranet (internal), other/secret (private),
//            alice/dotfiles (alice's personal project, private)
//   users    guest, planner, reporter, developer, maintainer, owner: that role on group acme;
//            alice: developer on acme/platform; mixed: guest on acme + maintainer on the
//            terraform project; outsider: no membership; admin: instance admin, no membership;
//            blocked: owner on acme, blocked; deleted: developer on acme, deleted.
#[rustfmt::skip]
const CASES: &[Case] = table! {
    // ---- the token itself (DESIGN §3.2: all answered 401) --------------------------------
    "revoked token, even on an endpoint open to every token":
        "developer all=project:r revoked", "always" => Deny(Revoked);
    "revoked legacy token":
        "developer legacy:api revoked", "merge_request:read @p:acme/platform/api" => Deny(Revoked);
    // GitLab: a token expires at 00:00 UTC on its expiry date.
    "expired at exactly the expiry second":
        "developer all=merge_request:r", "merge_request:read @p:acme/platform/api at:expiry" => Deny(Expired);
    "still valid one second before the expiry second":
        "developer all=merge_request:r", "merge_request:read @p:acme/platform/api at:expiry-1s" => FINE;
    "expired legacy token on an uncatalogued endpoint":
        "developer legacy:api", "uncatalogued:GET at:expiry" => Deny(Expired);
    "blocked owner: the token dies with the account":
        "blocked all=project:r", "project:read @p:acme/web" => Deny(OwnerBlocked);
    "blocked owner, legacy api, endpoint open to every token":
        "blocked legacy:api", "always" => Deny(OwnerBlocked);
    // DESIGN §2: revoked when the owner is blocked or deleted.
    "deleted owner":
        "deleted legacy:read_api", "project:read @p:acme/platform/api" => Deny(OwnerBlocked);
    "client address inside the allowlist":
        "developer all=merge_request:r ip:10.0.0.0/8", "merge_request:read @p:acme/platform/api from:10.20.30.40" => FINE;
    "client address outside the allowlist":
        "developer all=merge_request:r ip:10.0.0.0/8", "merge_request:read @p:acme/platform/api from:192.168.1.1" => Deny(IpNotAllowed);
    // DESIGN §6 default deny: an allowlisted token from an unknown address is refused.
    "allowlisted token, client address unknown":
        "developer all=merge_request:r ip:10.0.0.0/8", "merge_request:read @p:acme/platform/api" => Deny(IpNotAllowed);
    "allowlist applies to legacy tokens too (IPv6)":
        "developer legacy:api ip:2001:db8::/32", "project:read @p:acme/web from:2001:db9::1" => Deny(IpNotAllowed);
    "any of several allowlisted ranges":
        "developer legacy:api ip:10.0.0.0/8 ip:2001:db8::/32", "project:read @p:acme/web from:2001:db8:1::7" => LEGACY;

    // ---- the endpoint (DESIGN §3.3; GitLab: "This operation doesn't support fine-grained PATs") ----
    "fine-grained token on an uncatalogued endpoint":
        "owner all=project:crud,issue:crud", "uncatalogued:GET" => Deny(EndpointNotCovered);
    "legacy api on an uncatalogued write":
        "developer legacy:api", "uncatalogued:POST" => LEGACY;
    "legacy read_api on an uncatalogued read":
        "developer legacy:read_api", "uncatalogued:GET" => LEGACY;
    "legacy read_api on an uncatalogued write":
        "developer legacy:read_api", "uncatalogued:POST" => NeedsScope("api");
    "endpoint open to every token, unrelated grant":
        "outsider user=ssh_key:r", "always" => ALWAYS;
    // DESIGN §6 default deny: a path with a dot or empty segment means what the last proxy
    // makes of it; it is judged by no reading, for no token.
    "legacy api on an ambiguous path":
        "developer legacy:api", "ambiguous" => Deny(AmbiguousPath);
    "an admin's every scope on an ambiguous path":
        "admin legacy:api,admin_mode,sudo", "ambiguous" => Deny(AmbiguousPath);
    "fine-grained token on an ambiguous path":
        "owner all=project:crud,issue:crud", "ambiguous" => Deny(AmbiguousPath);
    "the token is judged first: revoked on an ambiguous path":
        "developer legacy:api revoked", "ambiguous" => Deny(Revoked);

    // ---- the boundary: invisible means 404, so existence does not leak (DESIGN §3.4) ----------
    "private project the owner cannot see":
        "outsider all=project:r", "project:read @p:other/secret" => Deny(NotFound);
    "invisible project is 404 before reach is considered":
        "developer sel(p:acme/platform/api)=issue:r", "issue:read @p:other/secret" => Deny(NotFound);
    "project that does not exist":
        "developer all=issue:r", "issue:read @p:acme/nope" => Deny(NotFound);
    "someone else's private personal project":
        "developer all=project:r", "project:read @p:alice/dotfiles" => Deny(NotFound);
    "private subgroup hidden from a non-member":
        "outsider all=label:r", "label:read @g:acme/platform" => Deny(NotFound);
    "legacy api cannot see past the owner either":
        "developer legacy:api", "issue:read @p:other/secret" => Deny(NotFound);
    "project named by numeric id":
        "developer sel(p:acme/platform/api)=issue:r", "issue:read @p#1" => FINE;

    // ---- reach personal_projects ----------------------------------------------------------------
    // DESIGN §2: a user owns the projects of their personal namespace.
    "personal reach: owner deletes own personal project":
        "alice personal=issue:cr,project:d", "project:delete @p:alice/dotfiles" => FINE;
    "personal reach does not cover group projects the owner belongs to":
        "alice personal=issue:cr", "issue:create @p:acme/platform/api" => Deny(OutsideReach);
    // GitLab MR 269281: no matching scope on a public project → served as anonymous.
    "personal reach, public project outside reach, read as anonymous":
        "alice personal=issue:cr", "issue:read @p:acme/web" => ANONYMOUS;
    // DESIGN §3.5: outside reach, only what a public project shows to everyone (reads).
    "outside reach, anonymous cannot create an issue on a public project":
        "alice personal=issue:cr", "issue:create @p:acme/web" => Deny(OutsideReach);

    // ---- reach all_memberships ------------------------------------------------------------------
    "all memberships: project through an ancestor group membership":
        "developer all=merge_request:u", "merge_request:update @p:acme/platform/infra/terraform" => FINE;
    "all memberships: a group the owner belongs to (by ancestry)":
        "maintainer all=label:c", "label:create @g:acme/platform" => FINE;
    "all memberships: a direct project membership counts":
        "mixed all=ci_variable:r", "ci_variable:read @p:acme/platform/infra/terraform" => FINE;
    "all memberships: non-member on a public project reads as anonymous":
        "outsider all=issue:r", "issue:read @p:acme/web" => ANONYMOUS;
    "all memberships: non-member reading a public group reads as anonymous":
        "outsider all=label:r", "label:read @g:acme" => ANONYMOUS;
    // DESIGN §2 defines all_memberships by membership; an internal project is not public.
    // (GitLab relabelled the option "…that I have access to", MR 256456: see the report.)
    "all memberships: non-member on an internal project is outside reach":
        "outsider all=issue:r", "issue:read @p:acme/intranet" => Deny(OutsideReach);
    // gitlab-model §6 "Admins have everything"; the option reads "…I have access to".
    "all memberships: an admin reaches every project":
        "admin all=ci_variable:r", "ci_variable:read @p:other/secret" => FINE;
    "all memberships does not reach user-level resources":
        "developer all=email:r", "email:read @u:self" => Deny(OutsideReach);
    "all memberships does not reach the instance, even for an admin":
        "admin all=admin_user:r", "admin_user:read @instance" => Deny(OutsideReach);

    // ---- reach selected ("Adding a group includes its subgroups and projects") --------------------
    "selected group covers a project two levels down":
        "developer sel(g:acme/platform)=merge_request:ru", "merge_request:update @p:acme/platform/infra/terraform" => FINE;
    "selected group covers its subgroups":
        "maintainer sel(g:acme/platform)=label:cr", "label:create @g:acme/platform/infra" => FINE;
    "selected group does not cover its parent group":
        "maintainer sel(g:acme/platform)=label:cr", "label:create @g:acme" => Deny(OutsideReach);
    "selected group does not cover a sibling project":
        "developer sel(g:acme/platform)=merge_request:ru", "merge_request:update @p:acme/web" => Deny(OutsideReach);
    "selected project does not cover its group":
        "developer sel(p:acme/platform/api)=label:r", "label:read @g:acme/platform" => Deny(OutsideReach);
    "selected project reached, permission missing":
        "developer sel(p:acme/platform/api)=merge_request:r", "merge_request:update @p:acme/platform/api" => NeedsPermission("merge_request:update");
    "a permission held by a grant that reaches elsewhere does not count":
        "developer sel(p:acme/platform/api)=issue:r sel(g:acme/platform/infra)=merge_request:u", "merge_request:update @p:acme/platform/api" => NeedsPermission("merge_request:update");
    // DESIGN §2: "read code across group A, push to project B".
    "two grants: push to the one project":
        "developer sel(g:acme)=repository:r sel(p:acme/platform/api)=repository:ru", "git:push @p:acme/platform/api" => FINE;
    "two grants: no push elsewhere in the group":
        "developer sel(g:acme)=repository:r sel(p:acme/platform/api)=repository:ru", "git:push @p:acme/platform/infra/terraform" => NeedsPermission("repository:update");
    "two grants: read code anywhere in the group":
        "developer sel(g:acme)=repository:r sel(p:acme/platform/api)=repository:ru", "git:pull @p:acme/platform/infra/terraform" => FINE;
    // GitLab §1.4: some routes need two permissions (deployment MRs: Deployment: Read + MR: Read).
    "endpoint needing two permissions, one missing":
        "developer sel(p:acme/platform/api)=merge_request:r", "deployment:read,merge_request:read @p:acme/platform/api" => NeedsPermission("deployment:read");
    // GitLab §1.1: every scope whose namespace is the boundary or an ancestor matches.
    "two permissions from two grants that both reach":
        "developer sel(g:acme/platform)=deployment:r sel(p:acme/platform/api)=merge_request:r", "deployment:read,merge_request:read @p:acme/platform/api" => FINE;
    // DESIGN §3: permission (step 6) is judged before role (step 7).
    "missing permission is reported before a too-low role":
        "guest sel(p:acme/platform/api)=issue:r", "ci_variable:read @p:acme/platform/api" => NeedsPermission("ci_variable:read");
    // GitLab MR 269281 / DESIGN §3.5: a token never does less than no token on a public project.
    "reached without the permission, public read still served as anonymous":
        "developer sel(p:acme/web)=issue:r", "merge_request:read @p:acme/web" => ANONYMOUS;
    // Roles page: any signed-in user may create issues in an internal project.
    "selected internal project: a non-member may create an issue":
        "outsider sel(p:acme/intranet)=issue:cr,merge_request:c", "issue:create @p:acme/intranet" => FINE;
    "selected internal project: a non-member may not open a merge request":
        "outsider sel(p:acme/intranet)=issue:cr,merge_request:c", "merge_request:create @p:acme/intranet" => NeedsRole("merge_request:create", "developer");
    "selected public project: a non-member clones it":
        "outsider sel(p:acme/web)=repository:r", "git:pull @p:acme/web" => FINE;

    // ---- reach user and instance ----------------------------------------------------------------
    "user reach: add an SSH key to oneself":
        "developer user=ssh_key:cr", "ssh_key:create @u:self" => FINE;
    "user reach: own profile":
        "developer user=user:r", "user:read @u:self" => FINE;
    // GitLab: GET /users/:id/keys is public; outside reach it is read as anonymous.
    "user reach: another user's public SSH keys":
        "developer user=ssh_key:r", "ssh_key:read @u:guest" => ANONYMOUS;
    "user reach: another user's tokens":
        "developer user=personal_access_token:r", "personal_access_token:read @u:guest" => Deny(OutsideReach);
    // DESIGN §3.5 judges a request outside every reach as an anonymous one; an anonymous
    // caller has no self: `GET /user`, the owner's keys, snippets and project list stay
    // closed to a token without reach `user` (DESIGN §2: reach `user` opens them).
    "a project grant does not open the owner's profile":
        "developer sel(p:acme/platform/api)=issue:r", "user:read @u:self" => Deny(OutsideReach);
    "...nor the owner's snippets":
        "developer sel(p:acme/platform/api)=issue:r", "snippet:read @u:self" => Deny(OutsideReach);
    "...nor the list of projects":
        "developer all=issue:r", "project:read @u:self" => Deny(OutsideReach);
    "...nor the owner's SSH keys":
        "developer all=issue:r", "ssh_key:read @u:self" => Deny(OutsideReach);
    // The owner named by username or id is still the owner: the upstream serves them their
    // own view (`GET /users/:id/projects` lists their private personal projects).
    "...nor the owner's keys named by username":
        "developer sel(p:acme/platform/api)=issue:r", "ssh_key:read @u:developer" => Deny(OutsideReach);
    "...nor the owner's projects named by id":
        "alice sel(p:acme/platform/api)=issue:r", "project:read @u#1" => Deny(OutsideReach);
    "a user grant lacking the permission":
        "developer user=ssh_key:r", "user:read @u:self" => NeedsPermission("user:read");
    "another user's public SSH keys stay readable without reach user":
        "developer sel(p:acme/platform/api)=issue:r", "ssh_key:read @u:guest" => ANONYMOUS;
    "another user's public profile by id stays readable":
        "developer all=issue:r", "user:read @u#2" => ANONYMOUS;
    "user reach does not cover projects":
        "developer user=project:r", "project:read @p:acme/platform/api" => Deny(OutsideReach);
    "instance reach: an admin lists users":
        "admin instance=admin_user:r", "admin_user:read @instance" => FINE;
    "instance reach: permission missing":
        "admin instance=admin_user:r", "admin_user:delete @instance" => NeedsPermission("admin_user:delete");
    // DESIGN §2: reach instance is for admins only; the live role still decides.
    "instance reach held by a non-admin":
        "maintainer instance=admin_setting:r", "admin_setting:read @instance" => NeedsRole("admin_setting:read", "admin");

    // ---- the owner's live role (Roles and permissions page; a token never exceeds its owner) ------
    // Roles page: guests cannot view code of private projects.
    "guest cannot read code of a private project":
        "guest all=repository:r", "git:pull @p:acme/platform/api" => NeedsRole("repository:read", "reporter");
    "guest reads code of an internal project":
        "guest all=repository:r", "git:pull @p:acme/intranet" => FINE;
    "guest reads code of a public project":
        "guest all=repository:r", "repository:read @p:acme/web" => FINE;
    "guest creates an issue":
        "guest all=issue:cr", "issue:create @p:acme/platform/api" => FINE;
    "guest cannot edit an issue":
        "guest all=issue:u", "issue:update @p:acme/platform/api" => NeedsRole("issue:update", "planner");
    "planner edits an issue":
        "planner all=issue:u", "issue:update @p:acme/platform/api" => FINE;
    "reporter reads pipelines":
        "reporter all=pipeline:r", "pipeline:read @p:acme/platform/api" => FINE;
    "reporter cannot open a merge request":
        "reporter all=merge_request:c", "merge_request:create @p:acme/platform/api" => NeedsRole("merge_request:create", "developer");
    "developer opens a merge request":
        "developer all=merge_request:c", "merge_request:create @p:acme/platform/api" => FINE;
    "developer cannot read CI/CD variables":
        "developer all=ci_variable:r", "ci_variable:read @p:acme/platform/api" => NeedsRole("ci_variable:read", "maintainer");
    "maintainer updates CI/CD variables":
        "maintainer all=ci_variable:u", "ci_variable:update @p:acme/platform/api" => FINE;
    "a developer's token with project delete cannot delete":
        "developer all=project:d", "project:delete @p:acme/platform/api" => NeedsRole("project:delete", "owner");
    "maintainer cannot delete a project":
        "maintainer all=project:d", "project:delete @p:acme/platform/api" => NeedsRole("project:delete", "owner");
    "maintainer cannot delete a pipeline":
        "maintainer all=pipeline:d", "pipeline:delete @p:acme/platform/api" => NeedsRole("pipeline:delete", "owner");
    "owner deletes a project":
        "owner all=project:d", "project:delete @p:acme/platform/infra/terraform" => FINE;
    "maintainer cannot change group settings":
        "maintainer all=group:u", "group:update @g:acme" => NeedsRole("group:update", "owner");
    "owner changes group settings of a subgroup":
        "owner sel(g:acme)=group:u", "group:update @g:acme/platform/infra" => FINE;
    // DESIGN §2: the highest of the direct role and the roles in every ancestor group.
    "direct project role beats a lower group role":
        "mixed sel(g:acme)=ci_variable:r", "ci_variable:read @p:acme/platform/infra/terraform" => FINE;
    "direct project role does not spread to other projects":
        "mixed sel(g:acme)=ci_variable:r", "ci_variable:read @p:acme/platform/api" => NeedsRole("ci_variable:read", "maintainer");
    "non-member cannot open a merge request on a public project":
        "outsider sel(p:acme/web)=merge_request:c", "merge_request:create @p:acme/web" => NeedsRole("merge_request:create", "developer");
    "non-member creates an issue on a public project":
        "outsider sel(p:acme/web)=issue:c", "issue:create @p:acme/web" => FINE;
    "admin without membership, selected private project":
        "admin sel(p:other/secret)=ci_variable:u", "ci_variable:update @p:other/secret" => FINE;

    // ---- fine-grained tokens on Git and the registry (DESIGN §4) -----------------------------------
    "fine-grained read-only code token cannot push":
        "developer sel(p:acme/platform/api)=repository:r", "git:push @p:acme/platform/api" => NeedsPermission("repository:update");
    "reporter's token cannot push code":
        "reporter sel(p:acme/platform/api)=repository:ru", "git:push @p:acme/platform/api" => NeedsRole("repository:update", "developer");
    // The announcement's example; patgate allows registry push (DESIGN §4), unlike GitLab.
    "pipeline token pushes an image":
        "developer sel(p:acme/platform/api)=container_registry:cr", "registry:push @p:acme/platform/api" => FINE;
    "pull-only registry token cannot push":
        "developer sel(p:acme/platform/api)=container_registry:r", "registry:push @p:acme/platform/api" => NeedsPermission("container_registry:create");
    "reporter's registry token cannot push":
        "reporter sel(p:acme/platform/api)=container_registry:cr", "registry:push @p:acme/platform/api" => NeedsRole("container_registry:create", "developer");

    // ---- legacy scopes (GitLab access_token_scopes.md) -------------------------------------------
    "api: open a merge request":
        "developer legacy:api", "merge_request:create @p:acme/platform/api" => LEGACY;
    "api: still capped by the role":
        "guest legacy:api", "ci_variable:read @p:acme/platform/api" => NeedsRole("ci_variable:read", "maintainer");
    "api: non-member creates an issue on a public project":
        "outsider legacy:api", "issue:create @p:acme/web" => LEGACY;
    "api: non-member creates an issue on an internal project":
        "outsider legacy:api", "issue:create @p:acme/intranet" => LEGACY;
    "api: another user's tokens are theirs alone":
        "developer legacy:api", "personal_access_token:read @u:guest" => NeedsRole("personal_access_token:read", "self");
    "read_api: read merge requests":
        "developer legacy:read_api", "merge_request:read @p:acme/platform/api" => LEGACY;
    "read_api: no writes":
        "developer legacy:read_api", "merge_request:create @p:acme/platform/api" => NeedsScope("api");
    "read_user: own profile":
        "developer legacy:read_user", "user:read @u:self" => LEGACY;
    "read_user: read-only /users endpoints":
        "developer legacy:read_user", "user:read @u:guest" => LEGACY;
    "read_user: no project API":
        "developer legacy:read_user", "project:read @p:acme/platform/api" => NeedsScope("read_api");
    "read_user: no writes on the user":
        "developer legacy:read_user", "ssh_key:create @u:self" => NeedsScope("api");
    // gitlab-model §2: read_user is `GET /user` plus the read-only Users API (keys, GPG
    // keys, emails, status, followers); GitLab's lib/api/events.rb also admits it for GET
    // /events and /users/:id/events. Nothing else at a user boundary.
    "read_user: own SSH keys":
        "developer legacy:read_user", "ssh_key:read @u:self" => LEGACY;
    "read_user: own email addresses":
        "developer legacy:read_user", "email:read @u:self" => LEGACY;
    "read_user: another user's GPG keys":
        "developer legacy:read_user", "gpg_key:read @u:guest" => LEGACY;
    "read_user: own events (the Events API admits read_user)":
        "developer legacy:read_user", "event:read @u:self" => LEGACY;
    "read_user: no cross-project issue list":
        "developer legacy:read_user", "issue:read @u:self" => NeedsScope("read_api");
    "read_user: no cross-project merge request list":
        "developer legacy:read_user", "merge_request:read @u:self" => NeedsScope("read_api");
    "read_user: no token inventory":
        "developer legacy:read_user", "personal_access_token:read @u:self" => NeedsScope("read_api");
    "read_user: no search":
        "developer legacy:read_user", "search:read @u:self" => NeedsScope("read_api");
    "read_user: no project list (the Projects API)":
        "developer legacy:read_user", "project:read @u:self" => NeedsScope("read_api");
    "read_user: no other user's project list either":
        "developer legacy:read_user", "project:read @u:guest" => NeedsScope("read_api");
    "read_user: no snippets":
        "developer legacy:read_user", "snippet:read @u:self" => NeedsScope("read_api");
    "read_user: no to-do list":
        "developer legacy:read_user", "todo:read @u:self" => NeedsScope("read_api");
    "read_repository: Git clone":
        "developer legacy:read_repository", "git:pull @p:acme/platform/api" => LEGACY;
    "read_repository: no Git push":
        "developer legacy:read_repository", "git:push @p:acme/platform/api" => NeedsScope("write_repository");
    "read_repository: repository files API":
        "developer legacy:read_repository", "repository:read @p:acme/platform/api" => LEGACY;
    "read_repository: nothing else of the API":
        "developer legacy:read_repository", "issue:read @p:acme/platform/api" => NeedsScope("read_api");
    "write_repository: Git push":
        "developer legacy:write_repository", "git:push @p:acme/platform/api" => LEGACY;
    "write_repository: Git clone":
        "developer legacy:write_repository", "git:pull @p:acme/platform/api" => LEGACY;
    "write_repository: no API at all":
        "developer legacy:write_repository", "repository:read @p:acme/platform/api" => NeedsScope("read_api");
    "write_repository: reporter cannot push":
        "reporter legacy:write_repository", "git:push @p:acme/platform/api" => NeedsRole("repository:update", "developer");
    "read_api: no Git over HTTP":
        "developer legacy:read_api", "git:pull @p:acme/platform/api" => NeedsScope("read_repository");
    "api: Git push for a personal access token":
        "developer legacy:api", "git:push @p:acme/platform/api" => LEGACY;
    "read_registry: pull":
        "developer legacy:read_registry", "registry:pull @p:acme/platform/api" => LEGACY;
    "read_registry: no push":
        "developer legacy:read_registry", "registry:push @p:acme/platform/api" => NeedsScope("write_registry");
    "write_registry: push":
        "developer legacy:write_registry", "registry:push @p:acme/platform/api" => LEGACY;
    "write_registry: reporter cannot push":
        "reporter legacy:write_registry", "registry:push @p:acme/platform/api" => NeedsRole("container_registry:create", "developer");
    "read_api: registry pull (PATs include the registries)":
        "developer legacy:read_api", "registry:pull @p:acme/platform/api" => LEGACY;
    "api: registry push":
        "developer legacy:api", "registry:push @p:acme/platform/api" => LEGACY;
    "read_repository: no registry":
        "developer legacy:read_repository", "registry:pull @p:acme/platform/api" => NeedsScope("read_registry");
    "create_runner: project runner":
        "maintainer legacy:create_runner", "runner:create @p:acme/platform/api" => LEGACY;
    // Roles page: group runners are managed by group owners.
    "create_runner: group runner needs a group owner":
        "maintainer legacy:create_runner", "runner:create @g:acme" => NeedsRole("runner:create", "owner");
    "create_runner: group runner by the owner":
        "owner legacy:create_runner", "runner:create @g:acme" => LEGACY;
    "manage_runner: delete a project runner":
        "maintainer legacy:manage_runner", "runner:delete @p:acme/platform/api" => LEGACY;
    "manage_runner: developer cannot delete runners":
        "developer legacy:manage_runner", "runner:delete @p:acme/platform/api" => NeedsRole("runner:delete", "maintainer");
    // GitLab: POST /personal_access_tokens/self/rotate needs api or self_rotate.
    "self_rotate: rotate this very token":
        "developer legacy:self_rotate", "personal_access_token:update @u:self own_token" => LEGACY;
    "self_rotate: not another token":
        "developer legacy:self_rotate", "personal_access_token:update @u:self" => NeedsScope("api");
    "self_rotate: nothing else":
        "developer legacy:self_rotate", "project:read @p:acme/platform/api" => NeedsScope("read_api");
    // GitLab: admin API needs the admin_mode scope (Admin Mode).
    "admin with api but without admin_mode on an admin endpoint":
        "admin legacy:api", "admin_user:read @instance" => NeedsScope("admin_mode");
    "admin with api and admin_mode":
        "admin legacy:api,admin_mode", "admin_user:read @instance" => LEGACY;
    "admin with read_api and admin_mode cannot write":
        "admin legacy:read_api,admin_mode", "admin_setting:update @instance" => NeedsScope("api");
    "non-admin with api on an admin endpoint":
        "maintainer legacy:api", "admin_user:read @instance" => NeedsRole("admin_user:read", "admin");
};

// ---- the fixture ---------------------------------------------------------------------------

fn directory() -> Directory {
    use MembershipTarget::{Group, Project};
    let mut d = Directory::new();
    let users = [
        (1, "alice", UserState::Active, false),
        (2, "guest", UserState::Active, false),
        (3, "planner", UserState::Active, false),
        (4, "reporter", UserState::Active, false),
        (5, "developer", UserState::Active, false),
        (6, "maintainer", UserState::Active, false),
        (7, "owner", UserState::Active, false),
        (8, "outsider", UserState::Active, false),
        (9, "admin", UserState::Active, true),
        (10, "blocked", UserState::Blocked, false),
        (11, "deleted", UserState::Deleted, false),
        (12, "mixed", UserState::Active, false),
    ];
    for (id, name, state, admin) in users {
        d.upsert_user(UserId(id), name, state, admin).unwrap();
    }
    // A project is never more visible than its group in GitLab: acme is public so that it
    // can hold a public and an internal project.
    for (id, path, visibility) in [
        (1, "acme", Visibility::Public),
        (2, "acme/platform", Visibility::Private),
        (3, "acme/platform/infra", Visibility::Private),
        (4, "other", Visibility::Private),
    ] {
        d.insert_group(GroupId(id), path, visibility).unwrap();
    }
    for (id, path, visibility) in [
        (1, "acme/platform/api", Visibility::Private),
        (2, "acme/platform/infra/terraform", Visibility::Private),
        (3, "acme/web", Visibility::Public),
        (4, "acme/intranet", Visibility::Internal),
        (5, "other/secret", Visibility::Private),
        (6, "alice/dotfiles", Visibility::Private),
    ] {
        d.insert_project(ProjectId(id), path, visibility).unwrap();
    }
    let acme = Group(GroupId(1));
    for (user, target, role) in [
        (1, Group(GroupId(2)), Role::Developer),
        (2, acme, Role::Guest),
        (3, acme, Role::Planner),
        (4, acme, Role::Reporter),
        (5, acme, Role::Developer),
        (6, acme, Role::Maintainer),
        (7, acme, Role::Owner),
        (10, acme, Role::Owner),
        (11, acme, Role::Developer),
        (12, acme, Role::Guest),
        (12, Project(ProjectId(2)), Role::Maintainer),
    ] {
        d.set_membership(UserId(user), target, role).unwrap();
    }
    d
}

fn permission(resources: &Resources, text: &str) -> Result<Permission, String> {
    resources.permission(text).map_err(|error| error.to_string())
}

fn grant(resources: &Resources, directory: &Directory, text: &str) -> Result<Grant, String> {
    let (reach, permissions) = text.split_once('=').ok_or_else(|| format!("grant `{text}` lacks `=`"))?;
    let reach = match reach {
        "personal" => Reach::PersonalProjects,
        "all" => Reach::AllMemberships,
        "user" => Reach::User,
        "instance" => Reach::Instance,
        selected => {
            let list = selected
                .strip_prefix("sel(")
                .and_then(|rest| rest.strip_suffix(')'))
                .ok_or_else(|| format!("unknown reach `{selected}`"))?;
            let (mut projects, mut groups) = (Vec::new(), Vec::new());
            for target in list.split(',') {
                if let Some(path) = target.strip_prefix("p:") {
                    projects.push(directory.project_by_path(path).ok_or_else(|| format!("no project {path}"))?.id);
                } else if let Some(path) = target.strip_prefix("g:") {
                    groups.push(directory.group_by_path(path).ok_or_else(|| format!("no group {path}"))?.id);
                } else {
                    return Err(format!("selected target `{target}` is not p:… or g:…"));
                }
            }
            Reach::Selected { projects: projects.into(), groups: groups.into() }
        }
    };
    let mut entries = Vec::new();
    for item in permissions.split(',') {
        let (resource, letters) = item.split_once(':').ok_or_else(|| format!("`{item}` is not resource:crud"))?;
        let actions = ActionSet::from_letters(letters).ok_or_else(|| format!("bad actions in `{item}`"))?;
        entries.push((resources.id(resource).map_err(|error| error.to_string())?, actions));
    }
    Ok(Grant { reach, permissions: PermissionSet::new(entries) })
}

fn token_record(resources: &Resources, directory: &Directory, id: u64, spec: &str) -> Result<TokenRecord, String> {
    let mut words = spec.split_whitespace();
    let owner = words.next().ok_or("empty token")?;
    let owner = directory.user_by_name(owner).ok_or_else(|| format!("no user {owner}"))?.id;
    let (mut scopes, mut grants, mut revoked, mut allowed_ips) = (None, Vec::new(), false, Vec::new());
    for word in words {
        if let Some(list) = word.strip_prefix("legacy:") {
            let parsed: Result<ScopeSet, _> = list.split(',').map(str::parse::<LegacyScope>).collect();
            scopes = Some(parsed.map_err(|error| error.to_string())?);
        } else if word == "revoked" {
            revoked = true;
        } else if let Some(net) = word.strip_prefix("ip:") {
            allowed_ips.push(net.parse::<IpNet>().map_err(|error| error.to_string())?);
        } else {
            grants.push(grant(resources, directory, word)?);
        }
    }
    let authority = match scopes {
        Some(scopes) if grants.is_empty() => Authority::Legacy(scopes),
        None if !grants.is_empty() => Authority::FineGrained(grants.into()),
        _ => return Err(format!("token `{spec}` needs either legacy scopes or grants")),
    };
    Ok(TokenRecord {
        id: TokenId(id),
        owner,
        authority,
        created_at: Timestamp(0),
        expires_at: Some(EXPIRY),
        revoked_at: revoked.then_some(Timestamp(0)),
        allowed_ips: allowed_ips.into(),
    })
}

#[derive(Clone, Copy)]
enum Target<'s> {
    Project(&'s str),
    ProjectId(u64),
    Group(&'s str),
    Caller,
    User(&'s str),
    UserId(u64),
    Instance,
}

enum What<'s> {
    Covered(Target<'s>),
    Always,
    NotCovered,
    Ambiguous,
}

/// A parsed request column; [`Ask::request`] borrows it as the decision's [`Request`].
struct Ask<'s> {
    permissions: Vec<Permission>,
    what: What<'s>,
    read_only: bool,
    surface: Surface,
    on_own_token: bool,
    client_ip: Option<IpAddr>,
    now: Timestamp,
}

impl Ask<'_> {
    fn request(&self) -> Request<'_> {
        let operation = match self.what {
            What::Always => Operation::Always,
            What::NotCovered => Operation::NotCovered,
            What::Ambiguous => Operation::AmbiguousPath,
            What::Covered(target) => Operation::Covered {
                permissions: &self.permissions,
                boundary: match target {
                    Target::Project(path) => BoundaryRef::Project(Locator::Path(path)),
                    Target::ProjectId(id) => BoundaryRef::Project(Locator::Id(id)),
                    Target::Group(path) => BoundaryRef::Group(Locator::Path(path)),
                    Target::Caller => BoundaryRef::User(UserLocator::Caller),
                    Target::User(name) => BoundaryRef::User(UserLocator::Username(name)),
                    Target::UserId(id) => BoundaryRef::User(UserLocator::Id(id)),
                    Target::Instance => BoundaryRef::Instance,
                },
            },
        };
        Request {
            operation,
            read_only: self.read_only,
            surface: self.surface,
            on_own_token: self.on_own_token,
            client_ip: self.client_ip,
        }
    }
}

fn ask<'s>(resources: &Resources, spec: &'s str) -> Result<Ask<'s>, String> {
    let mut words = spec.split_whitespace();
    let first = words.next().ok_or("empty request")?;
    let one = |text| permission(resources, text).map(|p| vec![p]);
    let (permissions, surface, read_only, mut what) = match first {
        "always" => (Vec::new(), Surface::Api, true, What::Always),
        "uncatalogued:GET" => (Vec::new(), Surface::Api, true, What::NotCovered),
        "uncatalogued:POST" => (Vec::new(), Surface::Api, false, What::NotCovered),
        "ambiguous" => (Vec::new(), Surface::Api, true, What::Ambiguous),
        "git:pull" => (one("repository:read")?, Surface::Git, true, What::Covered(Target::Instance)),
        // DESIGN §4: push needs repository create/update; a push to an existing repo updates it.
        "git:push" => (one("repository:update")?, Surface::Git, false, What::Covered(Target::Instance)),
        "registry:pull" => (one("container_registry:read")?, Surface::Registry, true, What::Covered(Target::Instance)),
        "registry:push" => {
            (one("container_registry:create")?, Surface::Registry, false, What::Covered(Target::Instance))
        }
        list => {
            let permissions = list.split(',').map(|text| permission(resources, text)).collect::<Result<Vec<_>, _>>()?;
            let read_only = permissions.iter().all(|p| p.action == Action::Read);
            (permissions, Surface::Api, read_only, What::Covered(Target::Instance))
        }
    };
    let (mut boundary, mut on_own_token, mut client_ip, mut now) = (None, false, None, NOW);
    for word in words {
        if let Some(target) = word.strip_prefix('@') {
            boundary = Some(if let Some(path) = target.strip_prefix("p:") {
                Target::Project(path)
            } else if let Some(id) = target.strip_prefix("p#") {
                Target::ProjectId(id.parse().map_err(|_| format!("bad project id in `{word}`"))?)
            } else if let Some(path) = target.strip_prefix("g:") {
                Target::Group(path)
            } else if target == "u:self" {
                Target::Caller
            } else if let Some(id) = target.strip_prefix("u#") {
                Target::UserId(id.parse().map_err(|_| format!("bad user id in `{word}`"))?)
            } else if let Some(name) = target.strip_prefix("u:") {
                Target::User(name)
            } else if target == "instance" {
                Target::Instance
            } else {
                return Err(format!("unknown boundary `{word}`"));
            });
        } else if word == "own_token" {
            on_own_token = true;
        } else if let Some(ip) = word.strip_prefix("from:") {
            client_ip = Some(ip.parse().map_err(|_| format!("bad address in `{word}`"))?);
        } else if word == "at:expiry" {
            now = EXPIRY;
        } else if word == "at:expiry-1s" {
            now = Timestamp(EXPIRY.0 - 1);
        } else {
            return Err(format!("unknown request word `{word}`"));
        }
    }
    if let What::Covered(_) = what {
        what = What::Covered(boundary.ok_or_else(|| format!("request `{spec}` needs an @boundary"))?);
    } else if boundary.is_some() {
        return Err(format!("request `{spec}` takes no boundary"));
    }
    Ok(Ask { permissions, what, read_only, surface, on_own_token, client_ip, now })
}

fn expected(resources: &Resources, want: Want) -> Result<Result<Basis, DenyReason>, String> {
    Ok(match want {
        Want::Allow(basis) => Ok(basis),
        Deny(reason) => Err(reason),
        NeedsPermission(text) => Err(DenyReason::InsufficientScope(permission(resources, text)?)),
        NeedsRole(text, needed) => Err(DenyReason::RoleTooLow {
            permission: permission(resources, text)?,
            needed: match needed {
                "self" => Requirement::SelfUser,
                "admin" => Requirement::Admin,
                "any" => Requirement::AnyUser,
                role => Requirement::Member(
                    role.parse().map_err(|error: patgate_core::role::UnknownRoleError| error.to_string())?,
                ),
            },
        }),
        NeedsScope(scope) => Err(DenyReason::LegacyScopeInsufficient(
            scope.parse().map_err(|error: patgate_core::scope::UnknownScopeError| error.to_string())?,
        )),
    })
}

/// DESIGN §3: credential problems are 401, an invisible boundary 404, everything else 403.
fn documented_status(reason: DenyReason) -> u16 {
    match reason {
        DenyReason::Malformed(_) | DenyReason::UnknownToken | Revoked | Expired | OwnerBlocked | IpNotAllowed => 401,
        NotFound => 404,
        _ => 403,
    }
}

fn describe(resources: &Resources, outcome: Result<Basis, DenyReason>) -> String {
    match outcome {
        Ok(basis) => format!("allow ({basis:?})"),
        Err(reason) => {
            let detail = match reason {
                DenyReason::InsufficientScope(p) | DenyReason::NotApplicable(p) => {
                    format!(" {}", resources.permission_name(p))
                }
                DenyReason::RoleTooLow { permission, needed } => {
                    format!(" {} needs {needed}", resources.permission_name(permission))
                }
                DenyReason::LegacyScopeInsufficient(scope) => format!(" {scope}"),
                DenyReason::Malformed(error) => format!(" {error:?}"),
                _ => String::new(),
            };
            format!("deny {}{detail} ({})", reason.code(), reason.status())
        }
    }
}

/// 32 base62 characters that differ per row, so each row's token has its own digest.
fn random_chars(id: u64) -> [u8; 32] {
    let mut out = [0_u8; 32];
    out.copy_from_slice(format!("{id:032}").as_bytes());
    out
}

/// Decides one token and request against the fixture, without a token string.
fn decide_one(token: &str, request: &str) -> (Resources, Decision) {
    let resources = Resources::builtin().unwrap();
    let directory = directory();
    let record = token_record(&resources, &directory, 1, token).unwrap();
    let ask = ask(&resources, request).unwrap();
    let decision = decide(&resources, &directory, &record, &ask.request(), ask.now);
    (resources, decision)
}

// ---- the tests -----------------------------------------------------------------------------

#[test]
fn every_row_of_the_table_is_decided_as_documented() {
    assert_eq!(Timestamp::parse_date("2026-11-28").map(|day| day.0 + 12 * 3600), Some(NOW.0));
    assert_eq!(Timestamp::parse_date("2027-01-01"), Some(EXPIRY));
    assert!(CASES.len() >= 60, "only {} cases", CASES.len());

    let resources = Resources::builtin().unwrap();
    let directory = directory();
    let format = TokenFormat::new("").unwrap();
    let key = DigestKey::new(&[42_u8; 32]).unwrap();
    let mut index = Index::new();
    let mut secrets = Vec::new();
    for (row, case) in CASES.iter().enumerate() {
        let id = u64::try_from(row).unwrap() + 1;
        let record = token_record(&resources, &directory, id, case.token)
            .map_err(|error| format!("row `{}`: {error}", case.name))
            .unwrap();
        let secret = format.assemble(record.authority.kind(), &random_chars(id));
        index.insert_token(key.address_plain(&secret), record).unwrap();
        secrets.push(secret);
    }
    index.directory = directory;
    let engine = Engine { resources, index, format, key, policy: Default::default() };

    let mut failures = Vec::new();
    for (case, secret) in CASES.iter().zip(&secrets) {
        let ask =
            ask(&engine.resources, case.request).map_err(|error| format!("row `{}`: {error}", case.name)).unwrap();
        let want =
            expected(&engine.resources, case.want).map_err(|error| format!("row `{}`: {error}", case.name)).unwrap();
        let decision = engine.decide_presented(secret.expose_secret(), &ask.request(), ask.now);
        let mut problems = Vec::new();
        if decision.outcome != want {
            problems.push(format!(
                "expected {}\n    actual   {}",
                describe(&engine.resources, want),
                describe(&engine.resources, decision.outcome)
            ));
        }
        if let Err(reason) = decision.outcome
            && reason.status() != documented_status(reason)
        {
            problems.push(format!("status {} but DESIGN §3 says {}", reason.status(), documented_status(reason)));
        }
        if decision.token.is_none() {
            problems.push("the decision does not name the token it found".to_owned());
        }
        if !problems.is_empty() {
            failures.push(format!(
                "{}\n    token    {}\n    request  {}\n    {}",
                case.name,
                case.token,
                case.request,
                problems.join("\n    ")
            ));
        }
    }
    assert!(failures.is_empty(), "{} of {} rows failed:\n\n{}\n", failures.len(), CASES.len(), failures.join("\n\n"));
}

#[test]
fn reasons_carry_their_documented_code_and_status() {
    // (token, request, status, code if DESIGN names it)
    let rows: &[(&str, &str, u16, Option<&str>)] = &[
        ("developer all=project:r revoked", "project:read @p:acme/web", 401, None),
        ("developer all=project:r", "project:read @p:acme/web at:expiry", 401, None),
        ("blocked all=project:r", "project:read @p:acme/web", 401, None),
        ("developer all=project:r ip:10.0.0.0/8", "project:read @p:acme/web from:11.0.0.1", 401, None),
        ("outsider all=project:r", "project:read @p:other/secret", 404, None),
        ("outsider all=project:r", "project:read @p:does/not-exist", 404, None),
        ("owner all=project:crud", "uncatalogued:POST", 403, Some("endpoint_not_covered")),
        ("developer legacy:api", "ambiguous", 403, Some("ambiguous_path")),
        ("alice personal=issue:r", "issue:read @p:acme/platform/api", 403, Some("outside_reach")),
        (
            "developer sel(p:acme/platform/api)=merge_request:r",
            "merge_request:update @p:acme/platform/api",
            403,
            Some("insufficient_scope"),
        ),
        ("reporter all=merge_request:c", "merge_request:create @p:acme/platform/api", 403, None),
        ("developer legacy:read_api", "merge_request:create @p:acme/platform/api", 403, None),
    ];
    for (token, request, status, code) in rows {
        let (_, decision) = decide_one(token, request);
        let reason = decision.reason();
        assert_eq!(reason.map(|r| r.status()), Some(*status), "{token} / {request}: {reason:?}");
        if let Some(code) = code {
            assert_eq!(reason.map(|r| r.code()), Some(*code), "{token} / {request}");
        }
    }

    // DESIGN §3.6: insufficient_scope names the missing "Resource: Action".
    let (resources, decision) =
        decide_one("developer sel(p:acme/platform/api)=merge_request:r", "merge_request:update @p:acme/platform/api");
    let reason = decision.reason().unwrap();
    assert_eq!(reason.missing_permission(), Some(resources.permission("merge_request:update").unwrap()));
    let message = reason.message(&resources);
    assert!(message.contains("Merge Request: Update"), "{message}");

    // A 404 says the same for a hidden project as for a missing one: existence does not leak.
    let (resources, hidden) = decide_one("outsider all=project:r", "project:read @p:other/secret");
    let (_, missing) = decide_one("outsider all=project:r", "project:read @p:other/nothing");
    assert_eq!(hidden.outcome, missing.outcome);
    assert_eq!(hidden.reason().unwrap().message(&resources), missing.reason().unwrap().message(&resources));
}

/// The review's paths, through the catalog and the decision: a catch-all that swallows
/// `..` would judge them at public project 3 (anyone reads its job artifacts) or at a
/// project the token reaches.
#[test]
fn ambiguous_paths_are_refused_to_every_token_through_the_catalog() {
    let resources = Resources::builtin().unwrap();
    let catalog = patgate_core::catalog::Catalog::builtin(&resources).unwrap();
    let directory = directory();
    let paths = [
        ("GET", "/api/v4/projects/3/jobs/1/artifacts/../../../../projects/1/variables"),
        ("PUT", "/api/v4/projects/3/packages/maven/%2e%2e/%2e%2e/%2e%2e/1/variables/KEY"),
    ];
    let tokens = ["outsider all=issue:r", "developer sel(p:acme/web)=package_registry:cr", "developer legacy:api"];
    for (method, path) in paths {
        for token in tokens {
            let record = token_record(&resources, &directory, 1, token).unwrap();
            let mut buffer = patgate_core::catalog::DecodeBuffer::default();
            let request = catalog.request(method, path, &mut buffer);
            let decision = decide(&resources, &directory, &record, &request, NOW);
            assert_eq!(decision.outcome, Err(AmbiguousPath), "{token}: {method} {path}");
            let reason = decision.reason().unwrap();
            assert_eq!((reason.code(), reason.status()), ("ambiguous_path", 403));
        }
    }
}

#[test]
fn presented_strings_are_judged_before_any_lookup() {
    let resources = Resources::builtin().unwrap();
    let directory = directory();
    let format = TokenFormat::new("acme-").unwrap();
    let key = DigestKey::new(&[9_u8; 32]).unwrap();
    let record = token_record(&resources, &directory, 1, "developer sel(p:acme/platform/api)=issue:r").unwrap();
    let random = *b"AbCdEfGhIjKlMnOpQrStUvWxYz012345";
    let known = format.assemble(TokenKind::FineGrained, &random);
    let mut index = Index::new();
    index.insert_token(key.address_plain(&known), record).unwrap();
    index.directory = directory;
    let engine = Engine { resources, index, format, key, policy: Default::default() };

    let issue_read = [engine.resources.permission("issue:read").unwrap()];
    let request = Request::api(&issue_read, BoundaryRef::Project(Locator::Path("acme/platform/api")));
    let decide = |presented: &str| engine.decide_presented(presented, &request, NOW);

    // The real token works, through the whole path.
    let allowed = decide(known.expose_secret());
    assert_eq!(allowed.outcome, Ok(Basis::FineGrained));
    assert_eq!(allowed.token, Some(TokenId(1)));

    let text = known.expose_secret();
    let last = text.chars().last().unwrap();
    let bad_checksum = format!("{}{}", &text[..text.len() - 1], if last == '0' { '1' } else { '0' });
    let body_start = "acme-pgfgt-".len();
    let bad_body = format!(
        "{}{}{}",
        &text[..body_start],
        if &text[body_start..=body_start] == "A" { "B" } else { "A" },
        &text[body_start + 1..]
    );
    let with_dash = format!("{}-{}", &text[..body_start], &text[body_start + 1..]);
    let without_instance_prefix = text.strip_prefix("acme-").unwrap().to_owned();
    let glpat = "glpat-xxxxxxxxxxxxxxxxxxxx".to_owned();
    let short = "acme-pgfgt-tooShort".to_owned();

    // (what, presented, exact parse error when DESIGN names it)
    let malformed: Vec<(&str, String, Option<TokenParseError>)> = vec![
        ("empty string", String::new(), Some(TokenParseError::Prefix)),
        ("a GitLab token", glpat, Some(TokenParseError::Prefix)),
        // Any well-formed instance prefix parses, but the CRC32 covers it: cutting it off
        // breaks the checksum.
        ("missing the instance prefix", without_instance_prefix, Some(TokenParseError::Checksum)),
        ("too short", short, None),
        ("a character outside base62", with_dash, None),
        // DESIGN §3.1 / §6: a bad CRC32 is rejected offline.
        ("checksum character changed", bad_checksum, Some(TokenParseError::Checksum)),
        ("body character changed", bad_body, Some(TokenParseError::Checksum)),
    ];
    for (what, presented, exact) in malformed {
        let decision = decide(&presented);
        let reason = decision.reason();
        assert!(matches!(reason, Some(DenyReason::Malformed(_))), "{what}: {reason:?}");
        if let Some(error) = exact {
            assert_eq!(reason, Some(DenyReason::Malformed(error)), "{what}");
        }
        let reason = reason.unwrap();
        assert_eq!((reason.code(), reason.status()), ("invalid_token", 401), "{what}");
        assert_eq!((decision.token, decision.user, decision.boundary), (None, None, None), "{what}");
    }

    // Well-formed with a valid checksum, but never issued: unknown, also 401 invalid_token.
    let mut other = random;
    other[0] = b'Z';
    let unknowns = [
        ("never issued", engine.format.assemble(TokenKind::FineGrained, &other)),
        ("same randomness, legacy prefix", engine.format.assemble(TokenKind::Legacy, &random)),
    ];
    for (what, presented) in unknowns {
        let decision = decide(presented.expose_secret());
        assert_eq!(decision.outcome, Err(DenyReason::UnknownToken), "{what}");
        let reason = decision.reason().unwrap();
        assert_eq!((reason.code(), reason.status()), ("invalid_token", 401), "{what}");
        assert_eq!((decision.token, decision.user), (None, None), "{what}");
    }
}
