//! The decision: may this token do this to that, and if not, why.
//!
//! The order is DESIGN.md §3: the token (§3.2), the endpoint (§3.3), the boundary and its
//! visibility (§3.4), the grants' reach (§3.5), their permissions or the legacy scopes
//! (§3.6), the owner's live role (§3.7). The first failing step is the answer.

use std::{
    fmt::{self, Write as _},
    net::IpAddr,
};

use crate::{
    directory::{Ancestry, Directory, GroupId, Locator, ProjectId, User, UserId, UserLocator, Visibility},
    index::TokenLookup,
    policy::{LifetimeExcess, Policy},
    resource::{Action, BoundaryKind, Permission, Resources, RoleRow},
    role::{Requirement, Role},
    scope::{LegacyScope, ScopeSet},
    time::Timestamp,
    token::{Authority, DigestKey, ParsedToken, TokenAddress, TokenFormat, TokenId, TokenParseError, TokenRecord},
};

/// The API surface a request arrived on; legacy scopes treat them differently.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Surface {
    /// The REST API.
    Api,
    /// Git over HTTP.
    Git,
    /// The container registry.
    Registry,
}

/// What a request names as its boundary, before resolution.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BoundaryRef<'a> {
    Project(Locator<'a>),
    Group(Locator<'a>),
    User(UserLocator<'a>),
    Instance,
}

impl BoundaryRef<'_> {
    /// The kind of boundary named.
    pub fn kind(&self) -> BoundaryKind {
        match self {
            BoundaryRef::Project(_) => BoundaryKind::Project,
            BoundaryRef::Group(_) => BoundaryKind::Group,
            BoundaryRef::User(_) => BoundaryKind::User,
            BoundaryRef::Instance => BoundaryKind::Instance,
        }
    }
}

/// What the endpoint catalog made of the request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Operation<'a> {
    /// A catalogued endpoint needing every one of `permissions` at `boundary`.
    Covered { permissions: &'a [Permission], boundary: BoundaryRef<'a> },
    /// A catalogued endpoint open to any valid token (`GET /version`).
    Always,
    /// No catalog entry: closed to fine-grained tokens; legacy scopes decide.
    NotCovered,
    /// The path has a `.`, `..` or empty segment (see [`crate::catalog::ambiguous_path`]):
    /// proxies and servers may read it differently, so it is judged by no reading at all and
    /// refused to every token.
    AmbiguousPath,
}

/// One request, as the decision sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Request<'a> {
    pub operation: Operation<'a>,
    /// `GET` or `HEAD` (or a Git fetch, a registry pull): what `read_api` allows.
    pub read_only: bool,
    pub surface: Surface,
    /// The request acts on the presenting token itself (`/personal_access_tokens/self…`).
    pub on_own_token: bool,
    pub client_ip: Option<IpAddr>,
}

impl<'a> Request<'a> {
    /// An API request needing `permissions` at `boundary`; read-only when every permission
    /// is a read.
    pub fn api(permissions: &'a [Permission], boundary: BoundaryRef<'a>) -> Request<'a> {
        Request {
            operation: Operation::Covered { permissions, boundary },
            read_only: permissions.iter().all(|p| p.action == Action::Read),
            surface: Surface::Api,
            on_own_token: false,
            client_ip: None,
        }
    }

    /// The same request from `ip`.
    #[must_use]
    pub fn from_ip(mut self, ip: IpAddr) -> Request<'a> {
        self.client_ip = Some(ip);
        self
    }
}

/// A boundary after resolution.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Boundary {
    Project(ProjectId),
    Group(GroupId),
    User(UserId),
    Instance,
}

impl Boundary {
    /// The kind of boundary.
    pub fn kind(&self) -> BoundaryKind {
        match self {
            Boundary::Project(_) => BoundaryKind::Project,
            Boundary::Group(_) => BoundaryKind::Group,
            Boundary::User(_) => BoundaryKind::User,
            Boundary::Instance => BoundaryKind::Instance,
        }
    }
}

/// Why a request was allowed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Basis {
    /// A fine-grained grant covered it.
    FineGrained,
    /// The legacy token's scopes covered it.
    Legacy,
    /// Outside every grant's reach, but anyone may read it (a public project).
    Anonymous,
    /// The endpoint is open to every valid token.
    Always,
}

/// Why a request was denied.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DenyReason {
    /// Not a token of this instance (malformed or bad checksum), decided offline.
    Malformed(TokenParseError),
    /// Well-formed, but no such token.
    UnknownToken,
    Revoked,
    Expired,
    /// The owner is blocked or deleted.
    OwnerBlocked,
    /// The client address is outside the token's allowlist.
    IpNotAllowed,
    /// The token lives longer than the policy now allows (the instance cap, or a stricter
    /// cap of a group the boundary lies in); rotating it gives it a compliant expiry.
    LifetimePolicy(LifetimeExcess),
    /// A legacy token, and the policy has turned legacy tokens off.
    LegacyDisabled,
    /// No catalog entry, and the token is fine-grained.
    EndpointNotCovered,
    /// The path has a `.`, `..` or empty segment, plain or percent-encoded: refused to
    /// every token, whatever the endpoint.
    AmbiguousPath,
    /// The boundary does not exist or the owner cannot see it (answered 404).
    NotFound,
    /// No grant reaches the boundary, and it is not public.
    OutsideReach,
    /// A grant reaches the boundary but lacks this permission.
    InsufficientScope(Permission),
    /// The owner's live role is below what this permission needs.
    RoleTooLow {
        permission: Permission,
        needed: Requirement,
    },
    /// The legacy token lacks this scope.
    LegacyScopeInsufficient(LegacyScope),
    /// The permission does not exist at this boundary (a catalog defect; denied).
    NotApplicable(Permission),
}

impl DenyReason {
    /// The machine-readable reason code.
    pub fn code(&self) -> &'static str {
        match self {
            DenyReason::Malformed(_) | DenyReason::UnknownToken => "invalid_token",
            DenyReason::Revoked => "revoked",
            DenyReason::Expired => "expired",
            DenyReason::OwnerBlocked => "owner_blocked",
            DenyReason::IpNotAllowed => "ip_not_allowed",
            DenyReason::LifetimePolicy(_) => "lifetime_policy",
            DenyReason::LegacyDisabled => "legacy_disabled",
            DenyReason::EndpointNotCovered => "endpoint_not_covered",
            DenyReason::AmbiguousPath => "ambiguous_path",
            DenyReason::NotFound => "not_found",
            DenyReason::OutsideReach => "outside_reach",
            DenyReason::InsufficientScope(_) => "insufficient_scope",
            DenyReason::RoleTooLow { .. } => "role_too_low",
            DenyReason::LegacyScopeInsufficient(_) => "legacy_scope_insufficient",
            DenyReason::NotApplicable(_) => "not_applicable",
        }
    }

    /// The HTTP status a gateway answers: 401 for credential problems, 404 for an
    /// invisible boundary, 403 otherwise.
    pub fn status(&self) -> u16 {
        match self {
            DenyReason::Malformed(_)
            | DenyReason::UnknownToken
            | DenyReason::Revoked
            | DenyReason::Expired
            | DenyReason::OwnerBlocked
            | DenyReason::IpNotAllowed
            | DenyReason::LegacyDisabled
            | DenyReason::LifetimePolicy(LifetimeExcess { group: None, .. }) => 401,
            DenyReason::NotFound => 404,
            _ => 403,
        }
    }

    /// The permission a request lacked, if that is the reason.
    pub fn missing_permission(&self) -> Option<Permission> {
        match self {
            DenyReason::InsufficientScope(permission)
            | DenyReason::RoleTooLow { permission, .. }
            | DenyReason::NotApplicable(permission) => Some(*permission),
            _ => None,
        }
    }

    /// A sentence a person understands, with labels from `resources`.
    pub fn message(&self, resources: &Resources) -> String {
        let mut message = String::new();
        self.write_message(resources, &mut message);
        message
    }

    /// [`DenyReason::message`], appended to `out`: the common reasons are copied in pieces,
    /// without the formatting machinery (forward auth writes a message per denial).
    pub fn write_message(&self, resources: &Resources, out: &mut String) {
        // `write!` into a `String` cannot fail.
        match self {
            DenyReason::Malformed(error) => {
                let _ = write!(out, "This is not a valid patgate token: {error}.");
            }
            DenyReason::UnknownToken => out.push_str("The token is not known to patgate."),
            DenyReason::Revoked => out.push_str("The token has been revoked."),
            DenyReason::Expired => out.push_str("The token has expired."),
            DenyReason::OwnerBlocked => out.push_str("The token's owner is blocked or deleted."),
            DenyReason::IpNotAllowed => out.push_str("The token may not be used from this address."),
            DenyReason::LifetimePolicy(LifetimeExcess { cap_days, group: None }) => {
                let _ = write!(
                    out,
                    "The token lives longer than the current policy allows ({cap_days} days at most, with an \
                     expiry date); rotate it to get a compliant expiry."
                );
            }
            DenyReason::LifetimePolicy(LifetimeExcess { cap_days, group: Some(_) }) => {
                let _ = write!(
                    out,
                    "Tokens used in this group may live {cap_days} days at most, and this one lives longer; rotate \
                     it or create a token with an earlier expiry."
                );
            }
            DenyReason::LegacyDisabled => {
                out.push_str("Legacy tokens are turned off on this instance; use a fine-grained token.");
            }
            DenyReason::EndpointNotCovered => out.push_str(
                "This endpoint does not support fine-grained tokens: it is not in patgate's endpoint catalog.",
            ),
            DenyReason::AmbiguousPath => out.push_str(
                "The request path has a `.`, `..` or empty segment, which proxies and servers may read differently; \
                 send the path without them.",
            ),
            DenyReason::NotFound => out.push_str("The project, group or user does not exist or is not visible."),
            DenyReason::OutsideReach => out.push_str("The token's grants do not reach this project, group or user."),
            DenyReason::InsufficientScope(permission) => {
                out.push_str("The token needs the permission ");
                resources.write_permission_label(*permission, out);
                out.push_str(" (`");
                resources.write_permission_name(*permission, out);
                out.push_str("`) here.");
            }
            DenyReason::RoleTooLow { permission, needed } => {
                resources.write_permission_label(*permission, out);
                out.push_str(" needs the owner to be ");
                match needed {
                    Requirement::Member(role) => {
                        out.push_str("at least ");
                        out.push_str(role.name());
                    }
                    Requirement::SelfUser => out.push_str("the user concerned"),
                    Requirement::Admin => out.push_str("an administrator"),
                    Requirement::AnyUser => out.push_str("an active user"),
                }
                out.push_str(" here; the token never exceeds its owner's role.");
            }
            DenyReason::LegacyScopeInsufficient(scope) => {
                out.push_str("The token needs the scope `");
                out.push_str(scope.name());
                out.push_str("` for this request.");
            }
            DenyReason::NotApplicable(permission) => {
                resources.write_permission_label(*permission, out);
                out.push_str(" does not apply to this kind of boundary.");
            }
        }
    }
}

impl fmt::Display for DenyReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

/// The answer, with what it was about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decision {
    /// `Ok(basis)` to allow, `Err(reason)` to deny.
    pub outcome: Result<Basis, DenyReason>,
    /// The token, once found.
    pub token: Option<TokenId>,
    /// Its owner, once found.
    pub user: Option<UserId>,
    /// The boundary, once resolved.
    pub boundary: Option<Boundary>,
}

impl Decision {
    /// Whether the request is allowed.
    pub fn is_allowed(&self) -> bool {
        self.outcome.is_ok()
    }

    /// The deny reason, if denied.
    pub fn reason(&self) -> Option<DenyReason> {
        self.outcome.err()
    }

    /// A deny before any token was found.
    pub fn deny(reason: DenyReason) -> Decision {
        Decision { outcome: Err(reason), token: None, user: None, boundary: None }
    }
}

/// Finds the token a string names: parse (offline), then digest, then lookup.
///
/// INVARIANT: a string that fails parsing never reaches `lookup`.
pub fn authenticate<'i, L: TokenLookup>(
    lookup: &'i L,
    format: &TokenFormat,
    key: &DigestKey,
    presented: &str,
) -> Result<&'i TokenRecord, DenyReason> {
    let parsed = format.parse(presented).map_err(DenyReason::Malformed)?;
    let address = key.address(&parsed);
    find_token(lookup, &parsed, &address)
}

/// The token a parsed string names, by its digest.
pub(crate) fn find_token<'i, L: TokenLookup>(
    lookup: &'i L,
    parsed: &ParsedToken<'_>,
    address: &TokenAddress,
) -> Result<&'i TokenRecord, DenyReason> {
    match lookup.token_at(address) {
        Some(token) if token.authority.kind() == parsed.kind() => Ok(token),
        // A digest match with the other kind's prefix cannot happen by chance; treat as unknown.
        _ => Err(DenyReason::UnknownToken),
    }
}

/// Decides `request` for `token` at `now`, against the live directory, with no policy
/// beyond the token's own state (see [`decide_under`]).
pub fn decide(
    resources: &Resources,
    directory: &Directory,
    token: &TokenRecord,
    request: &Request<'_>,
    now: Timestamp,
) -> Decision {
    decide_under(resources, directory, &Policy::UNRESTRICTED, token, request, now)
}

/// Decides `request` for `token` at `now`, against the live directory and the instance's
/// `policy`.
///
/// Pure and total: the same inputs give the same answer, nothing is written, and every
/// unexpected state is a deny.
pub fn decide_under(
    resources: &Resources,
    directory: &Directory,
    policy: &Policy,
    token: &TokenRecord,
    request: &Request<'_>,
    now: Timestamp,
) -> Decision {
    let mut decision =
        Decision { outcome: Err(DenyReason::UnknownToken), token: Some(token.id), user: None, boundary: None };
    decision.outcome = judge(resources, directory, policy, token, request, now, &mut decision);
    decision
}

fn judge(
    resources: &Resources,
    directory: &Directory,
    policy: &Policy,
    token: &TokenRecord,
    request: &Request<'_>,
    now: Timestamp,
    decision: &mut Decision,
) -> Result<Basis, DenyReason> {
    // §3.2 the token itself, then the policy it is used under.
    if token.is_revoked(now) {
        return Err(DenyReason::Revoked);
    }
    if token.is_expired(now) {
        return Err(DenyReason::Expired);
    }
    if let Some(excess) = policy.token_excess(token) {
        return Err(DenyReason::LifetimePolicy(excess));
    }
    if policy.legacy_disabled(token, now) {
        return Err(DenyReason::LegacyDisabled);
    }
    let owner = directory.user(token.owner).filter(|user| user.is_active()).ok_or(DenyReason::OwnerBlocked)?;
    decision.user = Some(owner.id);
    if !token.allowed_ips.is_empty() {
        let allowed = request.client_ip.is_some_and(|ip| token.allowed_ips.iter().any(|net| net.contains(ip)));
        if !allowed {
            return Err(DenyReason::IpNotAllowed);
        }
    }

    // §3.3 the endpoint, of a path that means one thing only.
    let (permissions, boundary_ref) = match request.operation {
        Operation::AmbiguousPath => return Err(DenyReason::AmbiguousPath),
        Operation::Always => return Ok(Basis::Always),
        Operation::NotCovered => {
            return match &token.authority {
                Authority::FineGrained(_) => Err(DenyReason::EndpointNotCovered),
                Authority::Legacy(scopes) => legacy_general(*scopes, owner, request).map(|()| Basis::Legacy),
            };
        }
        // A catalogued endpoint must name what it needs; one that does not is a defect.
        Operation::Covered { permissions: [], .. } => return Err(DenyReason::EndpointNotCovered),
        Operation::Covered { permissions, boundary } => (permissions, boundary),
    };

    // §3.4 the boundary, and whether the owner may see it at all.
    let boundary = resolve(directory, owner, boundary_ref).ok_or(DenyReason::NotFound)?;
    decision.boundary = Some(boundary.resolved);
    if !policy.group_caps.is_empty()
        && let Some(excess) = policy.group_excess(token, boundary.ancestry.groups())
    {
        return Err(DenyReason::LifetimePolicy(excess));
    }

    // §3.5 and §3.6: reach, then permissions or scopes.
    let basis = match &token.authority {
        Authority::FineGrained(grants) => {
            let mut reached = false;
            let mut missing = None;
            for &permission in permissions {
                let held = grants.iter().any(|grant| {
                    let covers = boundary.covered_by(owner, &grant.reach);
                    reached |= covers;
                    covers && grant.permissions.allows(permission)
                });
                if !held && missing.is_none() {
                    missing = Some(permission);
                }
            }
            if !reached || missing.is_some() {
                // Outside every grant's reach, or reached without the permission: judged as
                // an anonymous request would be, so a token never has less power than no
                // token, and narrowing a token never widens what it may do.
                if anonymous_may(resources, &boundary, permissions) {
                    return Ok(Basis::Anonymous);
                }
                return Err(match missing {
                    Some(permission) if reached => DenyReason::InsufficientScope(permission),
                    _ => DenyReason::OutsideReach,
                });
            }
            Basis::FineGrained
        }
        Authority::Legacy(scopes) => {
            legacy_covered(resources, *scopes, owner, request, permissions, &boundary)?;
            Basis::Legacy
        }
    };

    // §3.7 the owner's live role.
    for &permission in permissions {
        role_allows(resources, owner, &boundary, permission)?;
    }
    Ok(basis)
}

/// A resolved boundary with what the later steps need of it.
struct Resolved<'d> {
    resolved: Boundary,
    target: Target<'d>,
    // The owner's role in the project or group, and the groups above it (the group itself
    // included), computed once per decision.
    role: Option<Role>,
    ancestry: Ancestry,
}

enum Target<'d> {
    Project(&'d crate::directory::Project),
    Group(&'d crate::directory::Group),
    /// Another user than the owner.
    User(&'d User),
    /// The owner themselves, however the request named them (`user(self)`, their id or
    /// their username): never public, since an anonymous caller has no self, and what the
    /// upstream serves the owner about themselves is their own view, not the public one.
    Owner(&'d User),
    Instance,
}

impl Resolved<'_> {
    fn covered_by(&self, owner: &User, reach: &crate::grant::Reach) -> bool {
        match self.target {
            Target::Project(project) => reach.covers_project_within(owner, project, self.role, &self.ancestry),
            Target::Group(_) => reach.covers_group_within(owner, self.role, &self.ancestry),
            Target::User(user) | Target::Owner(user) => reach.covers_user(owner, user),
            Target::Instance => reach.covers_instance(),
        }
    }

    fn visibility(&self) -> Option<Visibility> {
        match self.target {
            Target::Project(project) => Some(project.visibility),
            Target::Group(group) => Some(group.visibility),
            // Other users' profiles and keys are public where the matrix says so; the
            // owner's own are not (see `Target::Owner`).
            Target::User(_) => Some(Visibility::Public),
            Target::Owner(_) | Target::Instance => None,
        }
    }
}

fn resolve<'d>(directory: &'d Directory, owner: &User, boundary: BoundaryRef<'_>) -> Option<Resolved<'d>> {
    match boundary {
        BoundaryRef::Project(locator) => {
            let project = directory.resolve_project(locator)?;
            let ancestry = directory.project_ancestry(project);
            let role = Directory::role_in(owner, Some(project), &ancestry);
            Directory::can_see_project_given(owner, project, || role).then_some(Resolved {
                resolved: Boundary::Project(project.id),
                target: Target::Project(project),
                role,
                ancestry,
            })
        }
        BoundaryRef::Group(locator) => {
            let group = directory.resolve_group(locator)?;
            let ancestry = directory.ancestry(group.id);
            let role = Directory::role_in(owner, None, &ancestry);
            directory.can_see_group_given(owner, group, role).then_some(Resolved {
                resolved: Boundary::Group(group.id),
                target: Target::Group(group),
                role,
                ancestry,
            })
        }
        BoundaryRef::User(locator) => {
            let user = directory.resolve_user(locator, owner.id)?;
            (user.state != crate::directory::UserState::Deleted || owner.admin).then_some(Resolved {
                resolved: Boundary::User(user.id),
                target: if user.id == owner.id { Target::Owner(user) } else { Target::User(user) },
                role: None,
                ancestry: Ancestry::NONE,
            })
        }
        BoundaryRef::Instance => Some(Resolved {
            resolved: Boundary::Instance,
            target: Target::Instance,
            role: None,
            ancestry: Ancestry::NONE,
        }),
    }
}

fn row<'r>(resources: &'r Resources, boundary: &Resolved<'_>, permission: Permission) -> Option<&'r RoleRow> {
    resources.row(permission.resource, boundary.resolved.kind())
}

fn anonymous_may(resources: &Resources, boundary: &Resolved<'_>, permissions: &[Permission]) -> bool {
    if boundary.visibility() != Some(Visibility::Public) {
        return false;
    }
    permissions.iter().all(|permission| {
        permission.action == Action::Read
            && row(resources, boundary, *permission).is_some_and(|row| row.public.contains(Action::Read))
    })
}

fn role_allows(
    resources: &Resources,
    owner: &User,
    boundary: &Resolved<'_>,
    permission: Permission,
) -> Result<(), DenyReason> {
    let row = row(resources, boundary, permission).ok_or(DenyReason::NotApplicable(permission))?;
    let needed = row.requirement(permission.action).ok_or(DenyReason::NotApplicable(permission))?;
    if owner.admin {
        return Ok(());
    }
    let too_low = Err(DenyReason::RoleTooLow { permission, needed });
    // What a non-member may do on a public or internal project, group or other user.
    let as_outsider = || match boundary.visibility() {
        Some(Visibility::Public) => row.public.contains(permission.action),
        Some(Visibility::Internal) => row.internal.contains(permission.action),
        _ => false,
    };
    match needed {
        Requirement::AnyUser => Ok(()),
        Requirement::Admin => too_low,
        Requirement::SelfUser => match boundary.target {
            Target::Owner(_) => Ok(()),
            Target::User(_) if as_outsider() => Ok(()),
            _ => too_low,
        },
        Requirement::Member(role) => {
            if boundary.role.is_some_and(|actual| actual >= role) || as_outsider() {
                Ok(())
            } else {
                too_low
            }
        }
    }
}

/// The legacy rule for endpoints the catalog does not know: `api` allows, `read_api`
/// allows reads.
fn legacy_general(scopes: ScopeSet, owner: &User, request: &Request<'_>) -> Result<(), DenyReason> {
    let full = scopes.contains(LegacyScope::Api) || (owner.admin && scopes.contains(LegacyScope::Sudo));
    match request.surface {
        Surface::Api if full || (request.read_only && scopes.contains(LegacyScope::ReadApi)) => Ok(()),
        Surface::Api if request.read_only => Err(DenyReason::LegacyScopeInsufficient(LegacyScope::ReadApi)),
        Surface::Api => Err(DenyReason::LegacyScopeInsufficient(LegacyScope::Api)),
        Surface::Git if full => Ok(()),
        Surface::Git if request.read_only => {
            if scopes.contains(LegacyScope::ReadRepository) || scopes.contains(LegacyScope::WriteRepository) {
                Ok(())
            } else {
                Err(DenyReason::LegacyScopeInsufficient(LegacyScope::ReadRepository))
            }
        }
        Surface::Git => {
            if scopes.contains(LegacyScope::WriteRepository) {
                Ok(())
            } else {
                Err(DenyReason::LegacyScopeInsufficient(LegacyScope::WriteRepository))
            }
        }
        Surface::Registry if full => Ok(()),
        Surface::Registry if request.read_only => {
            if [LegacyScope::ReadApi, LegacyScope::ReadRegistry, LegacyScope::WriteRegistry]
                .iter()
                .any(|scope| scopes.contains(*scope))
            {
                Ok(())
            } else {
                Err(DenyReason::LegacyScopeInsufficient(LegacyScope::ReadRegistry))
            }
        }
        Surface::Registry => {
            if scopes.contains(LegacyScope::WriteRegistry) {
                Ok(())
            } else {
                Err(DenyReason::LegacyScopeInsufficient(LegacyScope::WriteRegistry))
            }
        }
    }
}

/// Legacy scopes on a catalogued endpoint: the general rule, or one of the narrow scopes
/// that open specific resources; admin endpoints also need `admin_mode` (or `sudo`).
fn legacy_covered(
    resources: &Resources,
    scopes: ScopeSet,
    owner: &User,
    request: &Request<'_>,
    permissions: &[Permission],
    boundary: &Resolved<'_>,
) -> Result<(), DenyReason> {
    let general = legacy_general(scopes, owner, request);
    if general.is_err() && request.surface == Surface::Api {
        let known = resources.well_known();
        let all = |test: &dyn Fn(Permission) -> bool| !permissions.is_empty() && permissions.iter().all(|p| test(*p));
        // `read_user` is GitLab's: the read-only Users API, not every read at a user
        // boundary (`/issues`, `/projects`, `/search` and the token list need `read_api`).
        let narrow = (request.read_only
            && scopes.contains(LegacyScope::ReadUser)
            && boundary.resolved.kind() == BoundaryKind::User
            && all(&|p| p.action == Action::Read && known.serves_users_api(p.resource)))
            || (request.read_only
                && scopes.contains(LegacyScope::ReadRepository)
                && all(&|p| Some(p.resource) == known.repository))
            || (scopes.contains(LegacyScope::CreateRunner)
                && all(&|p| Some(p.resource) == known.runner && p.action == Action::Create))
            || (scopes.contains(LegacyScope::ManageRunner)
                && all(&|p| Some(p.resource) == known.runner && p.action != Action::Create))
            || (scopes.contains(LegacyScope::SelfRotate)
                && request.on_own_token
                && all(&|p| Some(p.resource) == known.personal_access_token && p.action == Action::Update));
        if !narrow {
            return general;
        }
    } else {
        general?;
    }
    let admin_endpoint = boundary.resolved.kind() == BoundaryKind::Instance
        && permissions.iter().any(|permission| {
            row(resources, boundary, *permission).and_then(|row| row.requirement(permission.action))
                == Some(Requirement::Admin)
        });
    if admin_endpoint && owner.admin && !scopes.contains(LegacyScope::AdminMode) && !scopes.contains(LegacyScope::Sudo)
    {
        return Err(DenyReason::LegacyScopeInsufficient(LegacyScope::AdminMode));
    }
    Ok(())
}
