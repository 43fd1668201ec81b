//! Least privilege from use: the narrowest fine-grained grants that still allow everything
//! a token was seen doing, and what replacing the token with them takes away.
//!
//! patgate records, for each allowed decision whose basis is a grant or a legacy scope, the
//! permission used and the boundary it was used at (DESIGN.md §3.8). [`suggest`] turns those
//! observations into grants. It is pure: the caller brings the observations and the
//! directory as it is now.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use crate::{
    decision::Boundary,
    directory::{Directory, GroupId, ProjectId, User},
    grant::{Grant, Reach, ReachKind},
    resource::{ActionSet, Permission, PermissionSet, Resources},
    scope::LegacyScope,
    token::{Authority, TokenRecord},
};

/// One permission a token was allowed to use, and where: the resolved boundary of a
/// decision allowed with basis [`Basis::FineGrained`](crate::Basis::FineGrained) or
/// [`Basis::Legacy`](crate::Basis::Legacy).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Observed {
    pub permission: Permission,
    pub boundary: Boundary,
}

/// Why an observed use is not carried by a [`Suggestion`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LeftOutReason {
    /// The permission does not exist at that kind of boundary (the resource table changed,
    /// or the record is bad): no grant could name it there.
    NotApplicable,
    /// The project, group, user or token owner no longer exists, or the owner can no longer
    /// see the project or group.
    Gone,
    /// No grant the owner may hold carries it: instance-level resources for an owner who is
    /// not an administrator, or another user's user-level resources (reach `user` covers only
    /// the owner's own; what is public there stays readable without any grant).
    NotGrantable,
    /// The original fine-grained token, as the directory stands now, no longer reaches the
    /// boundary with that permission, so granting it would widen the token.
    BeyondOriginal,
}

/// An observed use the suggestion does not carry, and why.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct LeftOut {
    pub observed: Observed,
    pub reason: LeftOutReason,
}

/// The least-privilege replacement for a token, and what it takes away.
///
/// INVARIANT: every (permission, boundary) the grants allow was observed, or lies under an
/// observed group (a selected group covers its descendants) with a permission observed at
/// that group; the grants pass [`validate_new_token`](crate::validate::validate_new_token)
/// for the token's owner in the directory they were computed against.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Suggestion {
    /// The narrowest grants that still allow every observed use, except those in
    /// `left_out`: one `selected` grant per distinct set of permissions used at projects
    /// and groups (listing every project and group where exactly that set was used, sorted),
    /// then one `user` grant and one `instance` grant if such uses were seen. Empty when
    /// nothing usable was observed.
    pub grants: Vec<Grant>,
    /// For a fine-grained token: the permissions its grants hold that the suggestion no
    /// longer holds anywhere, sorted. Empty for a legacy token (see `removed_scopes`).
    pub removed_permissions: Vec<Permission>,
    /// For a fine-grained token: the kinds of reach its grants have and the suggestion does
    /// not (`all_memberships`, …), each once, in [`ReachKind::ALL`] order. Empty for a legacy
    /// token.
    pub removed_reaches: Vec<ReachKind>,
    /// For a legacy token: all of its scopes, in documentation order, since fine-grained
    /// grants replace them all. Empty for a fine-grained token.
    pub removed_scopes: Vec<LegacyScope>,
    /// Observed uses the grants do not carry, each once, sorted by boundary then
    /// permission. Replacing the token loses them.
    pub left_out: Vec<LeftOut>,
}

impl Suggestion {
    /// The suggested grants as the authority of a fine-grained token; `None` when there is
    /// no grant (a token needs at least one).
    pub fn authority(&self) -> Option<Authority> {
        (!self.grants.is_empty()).then(|| Authority::FineGrained(self.grants.clone().into_boxed_slice()))
    }
}

/// Where a suggested grant applies, ordered as the grants are emitted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Place {
    Project(ProjectId),
    Group(GroupId),
    User,
    Instance,
}

/// Suggests the narrowest grants for `token` that still allow every `observed` use.
///
/// `directory` is the directory now: a boundary that is gone or no longer visible to the
/// owner is left out, and so is, for a fine-grained token, a use its grants no longer reach.
/// A legacy token's scopes are judged per request, so its observations are taken as given.
/// Duplicates in `observed` count once; the answer does not depend on their order.
pub fn suggest(resources: &Resources, directory: &Directory, token: &TokenRecord, observed: &[Observed]) -> Suggestion {
    let owner = directory.user(token.owner);
    let mut left_out = BTreeMap::new();
    let mut used: BTreeMap<Place, BTreeSet<Permission>> = BTreeMap::new();
    for observation in observed {
        match admit(resources, directory, owner, &token.authority, observation) {
            Ok(place) => {
                used.entry(place).or_default().insert(observation.permission);
            }
            Err(reason) => {
                left_out.insert(sort_key(observation), LeftOut { observed: *observation, reason });
            }
        }
    }

    // Places in `Place` order, so each bucket is created at its smallest place and lists
    // its projects, then its groups, already sorted.
    let mut buckets: Vec<(PermissionSet, Vec<ProjectId>, Vec<GroupId>)> = Vec::new();
    let mut bucket_of: HashMap<PermissionSet, usize> = HashMap::new();
    let mut single = Vec::new();
    for (place, permissions) in used {
        let permissions = permission_set(&permissions);
        let reach = match place {
            Place::Project(_) | Place::Group(_) => {
                let index = *bucket_of.entry(permissions).or_insert_with(|| {
                    buckets.push((permissions, Vec::new(), Vec::new()));
                    buckets.len() - 1
                });
                if let Some((_, projects, groups)) = buckets.get_mut(index) {
                    match place {
                        Place::Project(project) => projects.push(project),
                        Place::Group(group) => groups.push(group),
                        Place::User | Place::Instance => {}
                    }
                }
                continue;
            }
            Place::User => Reach::User,
            Place::Instance => Reach::Instance,
        };
        single.push(Grant { reach, permissions });
    }
    let grants: Vec<Grant> = buckets
        .into_iter()
        .map(|(permissions, projects, groups)| Grant {
            reach: Reach::Selected { projects: projects.into(), groups: groups.into() },
            permissions,
        })
        .chain(single)
        .collect();

    let (removed_permissions, removed_reaches, removed_scopes) = match &token.authority {
        Authority::FineGrained(original) => {
            let kept: BTreeSet<Permission> = grants.iter().flat_map(|grant| grant.permissions.permissions()).collect();
            let held: BTreeSet<Permission> =
                original.iter().flat_map(|grant| grant.permissions.permissions()).collect();
            let reaches = ReachKind::ALL
                .into_iter()
                .filter(|kind| {
                    original.iter().any(|grant| grant.reach.kind() == *kind)
                        && !grants.iter().any(|grant| grant.reach.kind() == *kind)
                })
                .collect();
            (held.difference(&kept).copied().collect(), reaches, Vec::new())
        }
        Authority::Legacy(scopes) => (Vec::new(), Vec::new(), scopes.iter().collect()),
    };

    Suggestion {
        grants,
        removed_permissions,
        removed_reaches,
        removed_scopes,
        left_out: left_out.into_values().collect(),
    }
}

/// Where a suggested grant may carry `observation`, or why none may.
fn admit(
    resources: &Resources,
    directory: &Directory,
    owner: Option<&User>,
    authority: &Authority,
    observation: &Observed,
) -> Result<Place, LeftOutReason> {
    let Observed { permission, boundary } = *observation;
    let applicable = resources
        .row(permission.resource, boundary.kind())
        .is_some_and(|row| row.requirement(permission.action).is_some());
    if !applicable {
        return Err(LeftOutReason::NotApplicable);
    }
    let owner = owner.ok_or(LeftOutReason::Gone)?;
    let place = match boundary {
        Boundary::Project(id) => {
            directory
                .project(id)
                .filter(|project| directory.can_see_project(owner, project))
                .ok_or(LeftOutReason::Gone)?;
            Place::Project(id)
        }
        Boundary::Group(id) => {
            directory.group(id).filter(|group| directory.can_see_group(owner, group)).ok_or(LeftOutReason::Gone)?;
            Place::Group(id)
        }
        Boundary::User(id) if id == owner.id => Place::User,
        Boundary::User(id) => {
            directory.user(id).ok_or(LeftOutReason::Gone)?;
            return Err(LeftOutReason::NotGrantable);
        }
        Boundary::Instance if owner.admin => Place::Instance,
        Boundary::Instance => return Err(LeftOutReason::NotGrantable),
    };
    // INVARIANT: never broader than the original. A fine-grained token must still hold the
    // permission in a grant that reaches the boundary; a legacy token reaches all the owner
    // sees, and its scopes were judged on the whole request when the use was recorded.
    if let Authority::FineGrained(grants) = authority {
        let reaches = |reach: &Reach| match boundary {
            Boundary::Project(id) => {
                directory.project(id).is_some_and(|project| reach.covers_project(directory, owner, project))
            }
            Boundary::Group(id) => reach.covers_group(directory, owner, id),
            Boundary::User(_) => reach.covers_user(owner, owner),
            Boundary::Instance => reach.covers_instance(),
        };
        if !grants.iter().any(|grant| grant.permissions.allows(permission) && reaches(&grant.reach)) {
            return Err(LeftOutReason::BeyondOriginal);
        }
    }
    Ok(place)
}

fn permission_set(permissions: &BTreeSet<Permission>) -> PermissionSet {
    PermissionSet::new(permissions.iter().map(|permission| (permission.resource, ActionSet::of(permission.action))))
}

/// A total order on observations (a [`Boundary`] has none of its own).
fn sort_key(observation: &Observed) -> (Place, u64, Permission) {
    let (place, user) = match observation.boundary {
        Boundary::Project(id) => (Place::Project(id), 0),
        Boundary::Group(id) => (Place::Group(id), 0),
        Boundary::User(id) => (Place::User, id.0),
        Boundary::Instance => (Place::Instance, 0),
    };
    (place, user, observation.permission)
}
