//! Fine-grained grants: where a token reaches, and what it may do there.

use std::{fmt, hash, ops::Deref, str::FromStr};

use crate::{
    directory::{
        Ancestry, Directory, GroupId, MembershipTarget, Namespace, Project, ProjectId, User, inline::InlineVec,
    },
    resource::{BoundaryKind, PermissionSet},
    role::Role,
};

/// Where a grant applies.
#[derive(Clone, PartialEq, Eq, Hash)]
pub enum Reach {
    /// The projects of the owner's personal namespace.
    PersonalProjects,
    /// Every group and project the owner is a member of at request time (directly or
    /// through an ancestor group), and their personal projects. For an admin, everything.
    AllMemberships,
    /// The listed projects and groups; a group covers its subgroups and their projects
    /// through the live hierarchy.
    Selected { projects: IdList<ProjectId>, groups: IdList<GroupId> },
    /// The owner's own user-level resources.
    User,
    /// Instance-wide resources; only for administrators.
    Instance,
}

/// How many ids of each kind a selected reach holds in the grant itself.
const SELECTED_HERE: usize = 2;

/// The projects or groups a selected reach lists: up to two in the grant itself (read with
/// the token's grants, no pointer to follow), more on the heap.
#[derive(Clone)]
pub struct IdList<T>(InlineVec<T, SELECTED_HERE>);

impl<T: Copy + Default> IdList<T> {
    /// Starts loading the ids when they are not in the grant, for [`crate::warm`].
    pub(crate) fn prefetch(&self) {
        if let InlineVec::Spilled(ids) = &self.0 {
            prefetch_index::prefetch_index(ids, 0);
        }
    }
}

impl<T> Deref for IdList<T> {
    type Target = [T];

    fn deref(&self) -> &[T] {
        &self.0
    }
}

impl<T: Copy + Default> From<&[T]> for IdList<T> {
    fn from(ids: &[T]) -> Self {
        IdList(InlineVec::from_slice(ids))
    }
}

impl<T: Copy + Default> From<Vec<T>> for IdList<T> {
    fn from(ids: Vec<T>) -> Self {
        IdList::from(&ids[..])
    }
}

impl<T: Copy + Default, const K: usize> From<[T; K]> for IdList<T> {
    fn from(ids: [T; K]) -> Self {
        IdList::from(&ids[..])
    }
}

impl<T: Copy + Default> FromIterator<T> for IdList<T> {
    fn from_iter<I: IntoIterator<Item = T>>(ids: I) -> Self {
        IdList::from(ids.into_iter().collect::<Vec<T>>())
    }
}

impl<T: PartialEq> PartialEq for IdList<T> {
    fn eq(&self, other: &Self) -> bool {
        **self == **other
    }
}

impl<T: Eq> Eq for IdList<T> {}

impl<T: hash::Hash> hash::Hash for IdList<T> {
    fn hash<H: hash::Hasher>(&self, state: &mut H) {
        (**self).hash(state);
    }
}

impl<T: fmt::Debug> fmt::Debug for IdList<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

/// The kind of a [`Reach`], without its list of targets.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ReachKind {
    PersonalProjects,
    AllMemberships,
    Selected,
    User,
    Instance,
}

impl ReachKind {
    /// Every kind.
    pub const ALL: [ReachKind; 5] = [
        ReachKind::PersonalProjects,
        ReachKind::AllMemberships,
        ReachKind::Selected,
        ReachKind::User,
        ReachKind::Instance,
    ];

    /// The wire name: `all_memberships`.
    pub fn name(self) -> &'static str {
        match self {
            ReachKind::PersonalProjects => "personal_projects",
            ReachKind::AllMemberships => "all_memberships",
            ReachKind::Selected => "selected",
            ReachKind::User => "user",
            ReachKind::Instance => "instance",
        }
    }
}

impl fmt::Display for ReachKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A reach name that is not one of the five.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown reach `{0}`: expected personal_projects, all_memberships, selected, user or instance")]
pub struct UnknownReachError(pub String);

impl FromStr for ReachKind {
    type Err = UnknownReachError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        ReachKind::ALL.into_iter().find(|kind| kind.name() == text).ok_or_else(|| UnknownReachError(text.to_owned()))
    }
}

impl Reach {
    /// The kind of this reach.
    pub fn kind(&self) -> ReachKind {
        match self {
            Reach::PersonalProjects => ReachKind::PersonalProjects,
            Reach::AllMemberships => ReachKind::AllMemberships,
            Reach::Selected { .. } => ReachKind::Selected,
            Reach::User => ReachKind::User,
            Reach::Instance => ReachKind::Instance,
        }
    }

    /// Whether the reach covers `project` for `owner`, through the live hierarchy.
    pub fn covers_project(&self, directory: &Directory, owner: &User, project: &Project) -> bool {
        self.covers_project_given(directory, owner, project, directory.role_in_project(owner, project))
    }

    /// [`Reach::covers_project`] with the owner's role in the project already known.
    pub fn covers_project_given(
        &self,
        directory: &Directory,
        owner: &User,
        project: &Project,
        owner_role: Option<Role>,
    ) -> bool {
        self.covers_project_within(owner, project, owner_role, &directory.project_ancestry(project))
    }

    /// [`Reach::covers_project`] with the owner's role and the project's ancestry known.
    pub fn covers_project_within(
        &self,
        owner: &User,
        project: &Project,
        owner_role: Option<Role>,
        ancestry: &Ancestry,
    ) -> bool {
        match self {
            Reach::PersonalProjects => project.namespace == Namespace::User(owner.id),
            Reach::AllMemberships => owner.admin || owner_role.is_some(),
            Reach::Selected { projects, groups } => {
                projects.contains(&project.id) || groups.iter().any(|group| ancestry.contains(*group))
            }
            Reach::User | Reach::Instance => false,
        }
    }

    /// Whether the reach covers `group` for `owner`, through the live hierarchy.
    pub fn covers_group(&self, directory: &Directory, owner: &User, group: GroupId) -> bool {
        self.covers_group_given(directory, owner, group, directory.role_in_group(owner, group))
    }

    /// [`Reach::covers_group`] with the owner's role in the group already known.
    pub fn covers_group_given(
        &self,
        directory: &Directory,
        owner: &User,
        group: GroupId,
        owner_role: Option<Role>,
    ) -> bool {
        self.covers_group_within(owner, owner_role, &directory.ancestry(group))
    }

    /// [`Reach::covers_group`] with the owner's role and the group's ancestry known.
    pub fn covers_group_within(&self, owner: &User, owner_role: Option<Role>, ancestry: &Ancestry) -> bool {
        match self {
            Reach::AllMemberships => owner.admin || owner_role.is_some(),
            Reach::Selected { groups, .. } => groups.iter().any(|group| ancestry.contains(*group)),
            Reach::PersonalProjects | Reach::User | Reach::Instance => false,
        }
    }

    /// Whether the reach covers user-level resources of `target` (only the owner's own).
    pub fn covers_user(&self, owner: &User, target: &User) -> bool {
        matches!(self, Reach::User) && owner.id == target.id
    }

    /// Whether the reach covers instance-level resources.
    pub fn covers_instance(&self) -> bool {
        matches!(self, Reach::Instance)
    }

    /// The boundary kinds this reach can ever cover.
    pub fn boundary_kinds(&self) -> &'static [BoundaryKind] {
        match self {
            Reach::PersonalProjects => &[BoundaryKind::Project],
            Reach::AllMemberships | Reach::Selected { .. } => &[BoundaryKind::Project, BoundaryKind::Group],
            Reach::User => &[BoundaryKind::User],
            Reach::Instance => &[BoundaryKind::Instance],
        }
    }

    /// Whether everything this reach covers is also covered by `other`, for `owner`, given
    /// the directory now (used so that a token only mints narrower tokens).
    pub fn is_within(&self, other: &Reach, directory: &Directory, owner: &User) -> bool {
        match (self, other) {
            (Reach::AllMemberships, Reach::AllMemberships)
            | (Reach::PersonalProjects, Reach::PersonalProjects | Reach::AllMemberships)
            | (Reach::User, Reach::User)
            | (Reach::Instance, Reach::Instance) => true,
            (Reach::Selected { projects, groups }, _) => {
                projects.iter().all(|id| {
                    directory.project(*id).is_some_and(|project| other.covers_project(directory, owner, project))
                }) && groups.iter().all(|id| other.covers_group(directory, owner, *id))
            }
            _ => false,
        }
    }
}

impl fmt::Debug for Reach {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reach::Selected { projects, groups } => f
                .debug_struct("Selected")
                .field("projects", &projects.iter().map(|p| p.0).collect::<Vec<_>>())
                .field("groups", &groups.iter().map(|g| g.0).collect::<Vec<_>>())
                .finish(),
            other => f.write_str(other.kind().name()),
        }
    }
}

/// A reach and the permissions it carries.
///
/// INVARIANT (for grants on stored tokens): the permission set is not empty.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Grant {
    pub reach: Reach,
    pub permissions: PermissionSet,
}

impl Grant {
    /// Whether the grant's reach covers a membership target for `owner`.
    pub fn covers_target(&self, directory: &Directory, owner: &User, target: MembershipTarget) -> bool {
        match target {
            MembershipTarget::Group(group) => self.reach.covers_group(directory, owner, group),
            MembershipTarget::Project(project) => {
                directory.project(project).is_some_and(|project| self.reach.covers_project(directory, owner, project))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_selected_lists_live_in_the_grant() {
        let here: IdList<ProjectId> = [ProjectId(1), ProjectId(2)].into();
        let spilled: IdList<ProjectId> = [ProjectId(1), ProjectId(2), ProjectId(3)].into();
        assert!(matches!(here.0, InlineVec::Here { .. }));
        assert!(matches!(spilled.0, InlineVec::Spilled(_)));
        assert_eq!(&*spilled, &[ProjectId(1), ProjectId(2), ProjectId(3)]);
        // Equal lists are equal however they are held.
        let collected: IdList<ProjectId> = (1..=2).map(ProjectId).collect();
        assert_eq!(here, collected);
        assert_ne!(here, spilled);
        // The grant stays within two cache lines: the permission set (64 bytes) and the reach.
        assert!(std::mem::size_of::<Grant>() <= 128, "{}", std::mem::size_of::<Grant>());
    }
}
