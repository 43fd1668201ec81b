//! Checking a new token before it exists: names, reach, visibility, lifetime, and that a
//! token only mints tokens narrower than itself.

use std::str::FromStr;

use crate::{
    directory::{Directory, GroupId, Locator, ProjectId, User},
    grant::{Grant, Reach, ReachKind},
    net::IpNet,
    resource::{Action, ActionSet, BoundaryKind, PermissionSet, Resources},
    scope::{LegacyScope, ScopeSet},
    time::{DAY, Timestamp},
    token::{Authority, TokenRecord},
};

/// The instance's lifetime policy for new tokens.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LifetimePolicy {
    /// Longest lifetime a new token may have, in days.
    pub max_lifetime_days: u32,
    /// Whether a token must have an expiry date.
    pub expiry_required: bool,
}

/// The largest `max_lifetime_days` an administrator may set.
pub const LARGEST_MAX_LIFETIME_DAYS: u32 = 400;

impl Default for LifetimePolicy {
    fn default() -> LifetimePolicy {
        LifetimePolicy { max_lifetime_days: 365, expiry_required: true }
    }
}

/// A grant as a client wrote it, names unresolved.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GrantSpec {
    pub reach: String,
    /// Full paths (`acme/api`) or numeric ids, for reach `selected`.
    pub projects: Vec<String>,
    /// Full paths (`acme/platform`) or numeric ids, for reach `selected`.
    pub groups: Vec<String>,
    /// Resource name → action names.
    pub permissions: Vec<(String, Vec<String>)>,
}

/// What a client asks a new token to carry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AuthoritySpec {
    Legacy { scopes: Vec<String> },
    FineGrained { grants: Vec<GrantSpec> },
}

/// A new token's request, as a client wrote it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewTokenSpec {
    pub authority: AuthoritySpec,
    pub expires_at: Option<Timestamp>,
    /// CIDR ranges or addresses; empty for anywhere.
    pub allowed_ips: Vec<String>,
}

/// A new token that passed every check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ValidToken {
    pub authority: Authority,
    pub expires_at: Option<Timestamp>,
    pub allowed_ips: Box<[IpNet]>,
}

/// Why a new token was refused. Field positions (`grants[1]`) point at the bad input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValidationError {
    #[error("the owner is not an active user")]
    OwnerInactive,
    #[error("`scopes` must name at least one scope")]
    NoScopes,
    #[error("`scopes`: unknown scope `{0}`")]
    UnknownScope(String),
    #[error("`scopes`: `{0}` is only for administrators")]
    AdminScope(LegacyScope),
    #[error("`grants` must hold at least one grant")]
    NoGrants,
    #[error(
        "`grants[{grant}].reach`: unknown reach `{reach}`: expected personal_projects, all_memberships, selected, user or instance"
    )]
    UnknownReach { grant: usize, reach: String },
    #[error("`grants[{grant}].reach`: `instance` is only for administrators")]
    InstanceNotAdmin { grant: usize },
    #[error("`grants[{grant}]`: reach `selected` needs at least one project or group")]
    EmptySelection { grant: usize },
    #[error("`grants[{grant}]`: projects and groups are only for reach `selected`, not `{reach}`")]
    SelectionNotAllowed { grant: usize, reach: ReachKind },
    #[error("`grants[{grant}].{field}`: `{path}` does not exist or is not visible to the owner")]
    NotVisible { grant: usize, field: &'static str, path: String },
    #[error("`grants[{grant}].permissions` must name at least one resource and action")]
    NoPermissions { grant: usize },
    #[error("`grants[{grant}].permissions`: unknown resource `{resource}`")]
    UnknownResource { grant: usize, resource: String },
    #[error(
        "`grants[{grant}].permissions.{resource}`: unknown action `{action}`: expected create, read, update or delete"
    )]
    UnknownAction { grant: usize, resource: String, action: String },
    #[error("`grants[{grant}].permissions.{resource}` must name at least one action")]
    NoActions { grant: usize, resource: String },
    #[error("`grants[{grant}].permissions.{resource}`: `{action}` does not exist for this resource")]
    ActionNotOffered { grant: usize, resource: String, action: Action },
    #[error("`grants[{grant}].permissions.{resource}`: this resource cannot be reached with reach `{reach}`")]
    ResourceOutsideReach { grant: usize, resource: String, reach: ReachKind },
    #[error("`expires_at` is required")]
    ExpiryRequired,
    #[error("`expires_at` must be after today")]
    ExpiryInPast,
    #[error("`expires_at` is beyond the maximum lifetime of {max_days} days")]
    ExpiryBeyondPolicy { max_days: u32 },
    #[error("`expires_at` is beyond the maximum lifetime of {max_days} days for tokens reaching into group `{group}`")]
    ExpiryBeyondGroupPolicy { group: String, max_days: u32 },
    #[error("`allowed_ips`: `{0}` is not an IP address or CIDR range")]
    BadIp(String),
    #[error("`allowed_ips`: `{range}` is not within the creating token's allowlist ({allowed})")]
    IpBeyondCreator {
        /// The range as the client wrote it.
        range: String,
        /// The creating token's ranges, comma-separated.
        allowed: String,
    },
    #[error("a token can only create tokens with equal or narrower permissions than its own")]
    Escalation,
    #[error("`scopes`: `{0}` can only be given by a creating token that holds it")]
    ScopeNotHeld(LegacyScope),
    #[error("`grants[{grant}].reach`: `instance` can only be given by a creating token with `admin_mode` or `sudo`")]
    InstanceNeedsAdminMode { grant: usize },
}

fn locate(text: &str) -> Locator<'_> {
    match text.parse::<u64>() {
        Ok(id) if !text.starts_with('0') || text == "0" => Locator::Id(id),
        _ => Locator::Path(text),
    }
}

/// Checks a new token for `owner` at `now` and resolves its names.
///
/// `creator` is the token making the request, if any: a fine-grained creator may only make
/// tokens within its own grants, a legacy one needs `api` (and holds every admin-only scope
/// it gives; `admin_mode` or `sudo` for an `instance` grant). A creator's IP allowlist
/// binds the new token too: each of its ranges must lie within one of the creator's, and a
/// new token that names none inherits the creator's list.
pub fn validate_new_token(
    resources: &Resources,
    directory: &Directory,
    owner: &User,
    spec: &NewTokenSpec,
    policy: LifetimePolicy,
    creator: Option<&TokenRecord>,
    now: Timestamp,
) -> Result<ValidToken, ValidationError> {
    if !owner.is_active() {
        return Err(ValidationError::OwnerInactive);
    }
    let authority = match &spec.authority {
        AuthoritySpec::Legacy { scopes } => Authority::Legacy(validate_scopes(owner, scopes)?),
        AuthoritySpec::FineGrained { grants } => {
            if grants.is_empty() {
                return Err(ValidationError::NoGrants);
            }
            let grants = grants
                .iter()
                .enumerate()
                .map(|(index, grant)| validate_grant(resources, directory, owner, index, grant))
                .collect::<Result<Vec<_>, _>>()?;
            Authority::FineGrained(grants.into_boxed_slice())
        }
    };
    validate_expiry(spec.expires_at, policy, now)?;
    let mut allowed_ips = spec
        .allowed_ips
        .iter()
        .map(|text| IpNet::from_str(text.trim()).map_err(|_| ValidationError::BadIp(text.clone())))
        .collect::<Result<Vec<_>, _>>()?
        .into_boxed_slice();
    if let Some(creator) = creator {
        if let Some(refusal) = escalation(&authority, &creator.authority, directory, owner) {
            return Err(refusal);
        }
        allowed_ips = allowlist_within(&spec.allowed_ips, allowed_ips, &creator.allowed_ips)?;
    }
    Ok(ValidToken { authority, expires_at: spec.expires_at, allowed_ips })
}

/// Whether a token usable only from `new` is usable from nowhere the creator's `creator`
/// allowlist excludes: an empty list means anywhere, so it is within an empty creator list
/// only.
pub fn allowlist_covered(new: &[IpNet], creator: &[IpNet]) -> bool {
    creator.is_empty() || (!new.is_empty() && new.iter().all(|range| range_within(range, creator)))
}

/// Whether `range` lies within one of the ranges of `creator`.
fn range_within(range: &IpNet, creator: &[IpNet]) -> bool {
    creator.iter().any(|held| held.contains_net(range))
}

/// A new token's allowlist under a creator's: the creator's own when the new token names
/// none (an empty creator list means anywhere, so nothing is inherited), else the new list,
/// each range of which must lie within one of the creator's. `texts` are the ranges as the
/// client wrote them, for the error.
fn allowlist_within(
    texts: &[String],
    ranges: Box<[IpNet]>,
    creator: &[IpNet],
) -> Result<Box<[IpNet]>, ValidationError> {
    if creator.is_empty() {
        return Ok(ranges);
    }
    if ranges.is_empty() {
        return Ok(creator.into());
    }
    match ranges.iter().zip(texts).find(|(range, _)| !range_within(range, creator)) {
        Some((_, text)) => Err(ValidationError::IpBeyondCreator {
            range: text.trim().to_owned(),
            allowed: creator.iter().map(ToString::to_string).collect::<Vec<_>>().join(", "),
        }),
        None => Ok(ranges),
    }
}

/// Checks an expiry against the lifetime policy.
pub fn validate_expiry(
    expires_at: Option<Timestamp>,
    policy: LifetimePolicy,
    now: Timestamp,
) -> Result<(), ValidationError> {
    match expires_at {
        None if policy.expiry_required => Err(ValidationError::ExpiryRequired),
        None => Ok(()),
        Some(expires_at) if expires_at <= now => Err(ValidationError::ExpiryInPast),
        Some(expires_at) => {
            // The cap counts whole days from the start of today (UTC), as dates are given.
            let today = Timestamp(now.0 - now.0.rem_euclid(DAY));
            if expires_at > today.plus_days(i64::from(policy.max_lifetime_days)) {
                Err(ValidationError::ExpiryBeyondPolicy { max_days: policy.max_lifetime_days })
            } else {
                Ok(())
            }
        }
    }
}

/// Checks an expiry against the stricter caps (`(group, days)`) of the groups a token's
/// authority reaches into: a group named by a `selected` grant, above or below a capped
/// group, or a project inside one; for `all_memberships` and legacy tokens, the owner's
/// memberships (every group for an administrator).
pub fn validate_group_caps(
    directory: &Directory,
    owner: &User,
    authority: &Authority,
    caps: &[(GroupId, u32)],
    expires_at: Option<Timestamp>,
    now: Timestamp,
) -> Result<(), ValidationError> {
    let reaches = |capped: GroupId| -> bool {
        let touches_group = |group: GroupId| {
            directory.group_contains_group(capped, group) || directory.group_contains_group(group, capped)
        };
        let touches_project = |project: ProjectId| {
            directory.project(project).is_some_and(|project| directory.group_contains_project(capped, project))
        };
        let memberships = || {
            owner.admin
                || owner.memberships().any(|(target, _)| match target {
                    crate::directory::MembershipTarget::Group(group) => touches_group(group),
                    crate::directory::MembershipTarget::Project(project) => touches_project(project),
                })
        };
        match authority {
            Authority::Legacy(_) => memberships(),
            Authority::FineGrained(grants) => grants.iter().any(|grant| match &grant.reach {
                Reach::AllMemberships => memberships(),
                Reach::Selected { projects, groups } => {
                    groups.iter().any(|group| touches_group(*group))
                        || projects.iter().any(|project| touches_project(*project))
                }
                Reach::PersonalProjects | Reach::User | Reach::Instance => false,
            }),
        }
    };
    let strictest = caps
        .iter()
        .filter(|(group, days)| crate::policy::exceeds(now, expires_at, *days) && reaches(*group))
        .min_by_key(|(_, days)| *days);
    match strictest {
        Some((group, days)) => Err(ValidationError::ExpiryBeyondGroupPolicy {
            group: directory.group(*group).map_or_else(|| group.0.to_string(), |group| group.full_path.to_string()),
            max_days: *days,
        }),
        None => Ok(()),
    }
}

fn validate_scopes(owner: &User, names: &[String]) -> Result<ScopeSet, ValidationError> {
    if names.is_empty() {
        return Err(ValidationError::NoScopes);
    }
    let mut scopes = ScopeSet::EMPTY;
    for name in names {
        let scope = LegacyScope::from_str(name).map_err(|_| ValidationError::UnknownScope(name.clone()))?;
        if scope.admin_only() && !owner.admin {
            return Err(ValidationError::AdminScope(scope));
        }
        scopes = scopes.with(scope);
    }
    Ok(scopes)
}

fn validate_grant(
    resources: &Resources,
    directory: &Directory,
    owner: &User,
    index: usize,
    spec: &GrantSpec,
) -> Result<Grant, ValidationError> {
    let kind = ReachKind::from_str(&spec.reach)
        .map_err(|_| ValidationError::UnknownReach { grant: index, reach: spec.reach.clone() })?;
    let has_selection = !spec.projects.is_empty() || !spec.groups.is_empty();
    let reach = match kind {
        ReachKind::Selected => {
            if !has_selection {
                return Err(ValidationError::EmptySelection { grant: index });
            }
            let mut projects: Vec<ProjectId> = Vec::with_capacity(spec.projects.len());
            for text in &spec.projects {
                let project = directory
                    .resolve_project(locate(text))
                    .filter(|project| directory.can_see_project(owner, project))
                    .ok_or_else(|| ValidationError::NotVisible {
                        grant: index,
                        field: "projects",
                        path: text.clone(),
                    })?;
                projects.push(project.id);
            }
            let mut groups: Vec<GroupId> = Vec::with_capacity(spec.groups.len());
            for text in &spec.groups {
                let group = directory
                    .resolve_group(locate(text))
                    .filter(|group| directory.can_see_group(owner, group))
                    .ok_or_else(|| ValidationError::NotVisible { grant: index, field: "groups", path: text.clone() })?;
                groups.push(group.id);
            }
            projects.sort_unstable();
            projects.dedup();
            groups.sort_unstable();
            groups.dedup();
            Reach::Selected { projects: projects.into(), groups: groups.into() }
        }
        _ if has_selection => return Err(ValidationError::SelectionNotAllowed { grant: index, reach: kind }),
        ReachKind::PersonalProjects => Reach::PersonalProjects,
        ReachKind::AllMemberships => Reach::AllMemberships,
        ReachKind::User => Reach::User,
        ReachKind::Instance if owner.admin => Reach::Instance,
        ReachKind::Instance => return Err(ValidationError::InstanceNotAdmin { grant: index }),
    };
    if spec.permissions.is_empty() {
        return Err(ValidationError::NoPermissions { grant: index });
    }
    let mut entries = Vec::with_capacity(spec.permissions.len());
    for (resource_name, action_names) in &spec.permissions {
        let resource = resources
            .id(resource_name)
            .map_err(|_| ValidationError::UnknownResource { grant: index, resource: resource_name.clone() })?;
        let def = resources.def(resource);
        if !reach.boundary_kinds().iter().any(|kind| def.row(*kind).is_some()) {
            return Err(ValidationError::ResourceOutsideReach {
                grant: index,
                resource: resource_name.clone(),
                reach: kind,
            });
        }
        if action_names.is_empty() {
            return Err(ValidationError::NoActions { grant: index, resource: resource_name.clone() });
        }
        let offered = reach
            .boundary_kinds()
            .iter()
            .filter_map(|kind| def.row(*kind))
            .flat_map(|row| Action::ALL.into_iter().filter(|action| row.requirement(*action).is_some()))
            .collect::<ActionSet>();
        let mut actions = ActionSet::EMPTY;
        for action_name in action_names {
            let action = Action::from_str(action_name).map_err(|_| ValidationError::UnknownAction {
                grant: index,
                resource: resource_name.clone(),
                action: action_name.clone(),
            })?;
            if !offered.contains(action) {
                return Err(ValidationError::ActionNotOffered {
                    grant: index,
                    resource: resource_name.clone(),
                    action,
                });
            }
            actions = actions.with(action);
        }
        entries.push((resource, actions));
    }
    Ok(Grant { reach, permissions: PermissionSet::new(entries) })
}

/// Splits a reach into units that must each fit inside one grant of the creator.
fn reach_units(reach: &Reach) -> Vec<Reach> {
    match reach {
        Reach::Selected { projects, groups } => projects
            .iter()
            .map(|p| Reach::Selected { projects: [*p].into(), groups: [].into() })
            .chain(groups.iter().map(|g| Reach::Selected { projects: [].into(), groups: [*g].into() }))
            .collect(),
        other => vec![other.clone()],
    }
}

/// Whether `new` grants nothing that `creator` does not, for `owner` in the directory as
/// it is now: every permission on every unit of every new grant is held by one creator
/// grant whose reach contains that unit (a selected group contains its descendants).
///
/// A legacy creator needs what the decision calls the whole API (`api`, or `sudo` for an
/// admin), and it cannot hand out what it could not do itself: every admin-only scope of
/// the new token must be one it holds (`sudo` counts for `admin_mode`, as it opens admin
/// endpoints in the decision), and an `instance` grant needs `admin_mode` or `sudo`, which
/// the decision asks of an admin's legacy token on admin endpoints.
pub fn authority_within(new: &Authority, creator: &Authority, directory: &Directory, owner: &User) -> bool {
    escalation(new, creator, directory, owner).is_none()
}

/// Why `new` would grant more than `creator`, if it would (see [`authority_within`]).
fn escalation(new: &Authority, creator: &Authority, directory: &Directory, owner: &User) -> Option<ValidationError> {
    match (new, creator) {
        (_, Authority::Legacy(scopes)) => {
            let full = scopes.contains(LegacyScope::Api) || (owner.admin && scopes.contains(LegacyScope::Sudo));
            if !full {
                return Some(ValidationError::Escalation);
            }
            let admin_mode = scopes.contains(LegacyScope::AdminMode) || scopes.contains(LegacyScope::Sudo);
            match new {
                Authority::Legacy(new_scopes) => new_scopes
                    .iter()
                    .find(|scope| {
                        scope.admin_only()
                            && !(scopes.contains(*scope) || (*scope == LegacyScope::AdminMode && admin_mode))
                    })
                    .map(ValidationError::ScopeNotHeld),
                Authority::FineGrained(grants) => grants
                    .iter()
                    .position(|grant| matches!(grant.reach, Reach::Instance))
                    .filter(|_| !admin_mode)
                    .map(|grant| ValidationError::InstanceNeedsAdminMode { grant }),
            }
        }
        (Authority::Legacy(_), Authority::FineGrained(_)) => Some(ValidationError::Escalation),
        (Authority::FineGrained(new_grants), Authority::FineGrained(creator_grants)) => {
            let within = new_grants.iter().all(|grant| {
                reach_units(&grant.reach).iter().all(|unit| {
                    grant.permissions.permissions().all(|permission| {
                        creator_grants.iter().any(|held| {
                            held.permissions.allows(permission) && unit.is_within(&held.reach, directory, owner)
                        })
                    })
                })
            });
            (!within).then_some(ValidationError::Escalation)
        }
    }
}

/// The boundary kinds where `resource` may be granted under a reach of `kind`.
pub fn reachable_boundaries(kind: ReachKind) -> &'static [BoundaryKind] {
    match kind {
        ReachKind::PersonalProjects => &[BoundaryKind::Project],
        ReachKind::AllMemberships | ReachKind::Selected => &[BoundaryKind::Project, BoundaryKind::Group],
        ReachKind::User => &[BoundaryKind::User],
        ReachKind::Instance => &[BoundaryKind::Instance],
    }
}
