//! The directory: users, nested groups, projects and memberships, kept in memory and
//! updated incrementally.

use std::{borrow::Cow, collections::HashMap, fmt, hash::BuildHasher, str::FromStr};

use foldhash::fast::{FixedState, RandomState};

use crate::{decision::BoundaryRef, role::Role, tag_table::TagTable};

mod id_map;
pub(crate) mod inline;

use id_map::IdMap;
pub use inline::InlineText;
use inline::{Chain, InlineVec};

/// A username as a user record holds it: in the record up to 30 bytes.
pub type Username = InlineText<30>;
/// A group or project path as its record holds it: in the record up to 54 bytes.
pub type FullPath = InlineText<54>;
/// Memberships a user record holds in place (more go to the heap): with the username and
/// the rest, the record fills three cache lines.
const MEMBERSHIPS_HERE: usize = 17;

pub(crate) type FastMap<K, V> = HashMap<K, V, FixedState>;

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(pub u64);

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(&self.0, f)
            }
        }
    };
}

id_type!(
    /// A user's numeric id.
    UserId
);
id_type!(
    /// A group's numeric id.
    GroupId
);
id_type!(
    /// A project's numeric id.
    ProjectId
);

/// Whether a user may act at all.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum UserState {
    Active,
    Blocked,
    Deleted,
}

impl UserState {
    /// The lowercase wire name.
    pub fn name(self) -> &'static str {
        match self {
            UserState::Active => "active",
            UserState::Blocked => "blocked",
            UserState::Deleted => "deleted",
        }
    }
}

impl FromStr for UserState {
    type Err = DirectoryError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "active" => Ok(UserState::Active),
            "blocked" => Ok(UserState::Blocked),
            "deleted" => Ok(UserState::Deleted),
            other => Err(DirectoryError::Invalid(format!(
                "unknown user state `{other}`: expected active, blocked or deleted"
            ))),
        }
    }
}

/// Who may see a project or group without being a member.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Visibility {
    /// Members only.
    Private,
    /// Every signed-in user.
    Internal,
    /// Everyone, anonymous visitors included.
    Public,
}

impl Visibility {
    /// The lowercase wire name.
    pub fn name(self) -> &'static str {
        match self {
            Visibility::Private => "private",
            Visibility::Internal => "internal",
            Visibility::Public => "public",
        }
    }
}

impl FromStr for Visibility {
    type Err = DirectoryError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "private" => Ok(Visibility::Private),
            "internal" => Ok(Visibility::Internal),
            "public" => Ok(Visibility::Public),
            other => Err(DirectoryError::Invalid(format!(
                "unknown visibility `{other}`: expected private, internal or public"
            ))),
        }
    }
}

/// What a membership is on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum MembershipTarget {
    Group(GroupId),
    Project(ProjectId),
}

impl MembershipTarget {
    // Packs the target into one sortable word: the id, then one bit for the kind.
    fn key(self) -> u64 {
        match self {
            MembershipTarget::Group(id) => id.0 << 1,
            MembershipTarget::Project(id) => (id.0 << 1) | 1,
        }
    }
}

/// Where a project lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Namespace {
    Group(GroupId),
    /// The personal namespace of a user: that user owns the project.
    User(UserId),
}

/// A user as the decision needs them.
///
/// In this order (`repr(C)`): what every decision reads (the state, whether admin, the
/// username for the answer's header) in the record's first line, the one its lookup loads;
/// the memberships after, in the lines the warm-up prefetches by position.
#[derive(Clone, Debug)]
#[repr(C)]
pub struct User {
    pub id: UserId,
    pub state: UserState,
    pub admin: bool,
    pub username: Username,
    // INVARIANT: sorted, one entry per target; each entry packs the target key (id, then one
    // bit for the kind) above three bits of role, so a membership takes 8 bytes. Held in
    // the record up to `MEMBERSHIPS_HERE`: the owner's record brings them with it.
    memberships: InlineVec<u64, MEMBERSHIPS_HERE>,
}

impl User {
    /// Whether the user may act at all.
    pub fn is_active(&self) -> bool {
        self.state == UserState::Active
    }

    /// The user's direct role on `target`.
    pub fn direct_role(&self, target: MembershipTarget) -> Option<Role> {
        let key = target.key();
        self.memberships
            .binary_search_by_key(&key, |entry| entry >> ROLE_BITS)
            .ok()
            .and_then(|position| unpack_role(self.memberships[position]))
    }

    /// Every direct membership of the user.
    pub fn memberships(&self) -> impl Iterator<Item = (MembershipTarget, Role)> + '_ {
        self.memberships.iter().filter_map(|entry| {
            let key = entry >> ROLE_BITS;
            let id = key >> 1;
            let target = if key & 1 == 1 {
                MembershipTarget::Project(ProjectId(id))
            } else {
                MembershipTarget::Group(GroupId(id))
            };
            Some((target, unpack_role(*entry)?))
        })
    }

    /// Starts loading the memberships and the username (the record's other lines, or the
    /// heap when they did not fit), for [`crate::warm`].
    pub(crate) fn prefetch_lines(&self) {
        let memberships: &[u64] = &self.memberships;
        if let Some(last) = memberships.len().checked_sub(1) {
            prefetch_index::prefetch_index(memberships, 0);
            prefetch_index::prefetch_index(memberships, last / 2);
            prefetch_index::prefetch_index(memberships, last);
        }
        prefetch_index::prefetch_index(self.username.as_bytes(), 0);
    }

    /// How many direct memberships the user has.
    pub fn membership_count(&self) -> usize {
        self.memberships.len()
    }
}

const ROLE_BITS: u32 = 3;

/// The largest group or project id a membership can name (the entry packs kind and role too).
pub const MAX_TARGET_ID: u64 = (1 << (64 - ROLE_BITS - 1)) - 1;

fn pack(key: u64, role: Role) -> u64 {
    let index = Role::ALL.iter().position(|r| *r == role).unwrap_or(0) as u64;
    (key << ROLE_BITS) | index
}

fn unpack_role(entry: u64) -> Option<Role> {
    Role::ALL.get((entry & ((1 << ROLE_BITS) - 1)) as usize).copied()
}

/// A group, nested under at most one parent.
#[derive(Clone, Debug)]
pub struct Group {
    pub id: GroupId,
    pub parent: Option<GroupId>,
    /// `acme/platform/infra`, lowercase.
    pub full_path: FullPath,
    pub visibility: Visibility,
    // The group itself, then its parent, up to the top level: groups never move, so the
    // chain is fixed at creation and an ancestry is read from the record, not walked.
    chain: Chain,
}

impl Group {
    /// The group itself, then its ancestors, nearest first.
    pub fn ancestry(&self) -> Ancestry {
        Ancestry::of(&self.chain)
    }

    /// Starts loading the record's other line (or the heap) for the path and the chain,
    /// for [`crate::warm`].
    pub(crate) fn prefetch_lines(&self) {
        prefetch_index::prefetch_index(self.full_path.as_bytes(), 0);
        self.chain.prefetch();
    }
}

/// A project in a group or in a user's personal namespace.
#[derive(Clone, Debug)]
pub struct Project {
    pub id: ProjectId,
    pub namespace: Namespace,
    /// `acme/platform/api` or `alice/dotfiles`, lowercase.
    pub full_path: FullPath,
    pub visibility: Visibility,
    // The chain of the project's group (empty in a personal namespace), copied from it when
    // the project is created or moved (groups never move): the decision reads the project's
    // ancestry from the project's own record, not from its group's.
    chain: Chain,
}

impl Project {
    /// Starts loading the record's other line (or the heap) for the path and the chain,
    /// for [`crate::warm`].
    pub(crate) fn prefetch_lines(&self) {
        prefetch_index::prefetch_index(self.full_path.as_bytes(), 0);
        self.chain.prefetch();
    }
}

/// A refused change to the directory. Nothing was changed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DirectoryError {
    #[error("no user `{0}`")]
    UnknownUser(String),
    #[error("no group `{0}`")]
    UnknownGroup(String),
    #[error("no project `{0}`")]
    UnknownProject(String),
    #[error("no group or user namespace `{0}`")]
    UnknownNamespace(String),
    #[error("`{0}` is already taken")]
    PathTaken(String),
    #[error("{0}")]
    Invalid(String),
}

/// Names a project or group as a request does: by numeric id or by full path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Locator<'a> {
    Id(u64),
    Path(&'a str),
}

/// Names a user as a request does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UserLocator<'a> {
    /// The token's own owner (`/user`).
    Caller,
    Id(u64),
    Username(&'a str),
}

/// Deepest nesting accepted, so ancestry walks are bounded.
pub const MAX_GROUP_DEPTH: usize = 20;

/// A group and its ancestors, nearest first, held on the stack: computed once per decision
/// and asked many times.
#[derive(Clone, Copy, Debug)]
pub struct Ancestry {
    ids: [GroupId; MAX_GROUP_DEPTH + 1],
    len: usize,
}

impl Ancestry {
    /// No group (a project in a personal namespace).
    pub const NONE: Ancestry = Ancestry { ids: [GroupId(0); MAX_GROUP_DEPTH + 1], len: 0 };

    fn of(chain: &Chain) -> Ancestry {
        let mut ancestry = Ancestry::NONE;
        ancestry.len = chain.copy_into(&mut ancestry.ids);
        ancestry
    }

    /// Whether `group` is in the chain.
    pub fn contains(&self, group: GroupId) -> bool {
        self.ids[..self.len].contains(&group)
    }

    /// The groups, nearest first.
    pub fn groups(&self) -> &[GroupId] {
        &self.ids[..self.len]
    }
}

/// The in-memory directory.
///
/// INVARIANT: every path index entry points at a live record with that path; every group's
/// parent exists; nesting is acyclic and at most [`MAX_GROUP_DEPTH`] deep.
#[derive(Clone, Debug, Default)]
pub struct Directory {
    users: IdMap<UserId, User>,
    user_by_name: FastMap<Box<str>, UserId>,
    groups: IdMap<GroupId, Group>,
    // Group and project ids by a tag of their full path; the record's path confirms.
    group_paths: TagTable,
    projects: IdMap<ProjectId, Project>,
    project_paths: TagTable,
    path_tags: RandomState,
}

fn valid_segment(segment: &str) -> bool {
    !segment.is_empty()
        && segment.len() <= 255
        && segment.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        && !segment.starts_with(['-', '.'])
        && !segment.ends_with(".git")
        && !segment.ends_with(".atom")
}

fn normalize_path(path: &str) -> Result<Box<str>, DirectoryError> {
    let lower = path.to_ascii_lowercase();
    if lower.split('/').all(valid_segment) {
        Ok(lower.into_boxed_str())
    } else {
        Err(DirectoryError::Invalid(format!(
            "`{path}` is not a valid path: segments of letters, digits, `-`, `_` and `.`, separated by `/`"
        )))
    }
}

// A path as the indexes hold it: lowercase, copied only when it is not already.
fn lowercase(path: &str) -> Cow<'_, str> {
    if path.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(path.to_ascii_lowercase())
    } else {
        Cow::Borrowed(path)
    }
}

impl Directory {
    /// An empty directory.
    pub fn new() -> Directory {
        Directory::default()
    }

    /// Reserves room for the given numbers of records.
    pub fn reserve(&mut self, users: usize, groups: usize, projects: usize) {
        self.users.reserve(users);
        self.user_by_name.reserve(users);
        self.groups.reserve(groups);
        self.group_paths.reserve(groups);
        self.projects.reserve(projects);
        self.project_paths.reserve(projects);
    }

    // ---- users -------------------------------------------------------------------

    /// Adds a user or updates their name, state and admin flag; memberships are kept.
    pub fn upsert_user(
        &mut self,
        id: UserId,
        username: &str,
        state: UserState,
        admin: bool,
    ) -> Result<(), DirectoryError> {
        let username = normalize_path(username)?;
        if username.contains('/') {
            return Err(DirectoryError::Invalid(format!("username `{username}` must not contain `/`")));
        }
        if let Some(other) = self.user_by_name.get(&username)
            && *other != id
        {
            return Err(DirectoryError::PathTaken(username.into_string()));
        }
        if self.group_at(&username).is_some() {
            return Err(DirectoryError::PathTaken(username.into_string()));
        }
        match self.users.get_mut(id) {
            Some(user) => {
                if user.username != *username {
                    if self.projects.values().any(|p| p.namespace == Namespace::User(id)) {
                        return Err(DirectoryError::Invalid(format!(
                            "user `{}` has personal projects and cannot be renamed",
                            user.username
                        )));
                    }
                    self.user_by_name.remove(user.username.as_str());
                    user.username = Username::new(&username);
                    self.user_by_name.insert(username, id);
                }
                user.state = state;
                user.admin = admin;
            }
            None => {
                let record =
                    User { id, username: Username::new(&username), state, admin, memberships: InlineVec::new() };
                self.user_by_name.insert(username, id);
                self.users.insert(id, record);
            }
        }
        Ok(())
    }

    /// Blocks, unblocks or deletes a user.
    pub fn set_user_state(&mut self, id: UserId, state: UserState) -> Result<(), DirectoryError> {
        let user = self.users.get_mut(id).ok_or_else(|| DirectoryError::UnknownUser(id.to_string()))?;
        user.state = state;
        Ok(())
    }

    /// Grants or withdraws instance administration.
    pub fn set_admin(&mut self, id: UserId, admin: bool) -> Result<(), DirectoryError> {
        let user = self.users.get_mut(id).ok_or_else(|| DirectoryError::UnknownUser(id.to_string()))?;
        user.admin = admin;
        Ok(())
    }

    /// The user with `id`.
    pub fn user(&self, id: UserId) -> Option<&User> {
        self.users.get(id)
    }

    /// Starts loading the first line of the user's record (id, state and username; the
    /// memberships follow once it is read), without waiting for it: for [`crate::warm`].
    pub(crate) fn prefetch_user(&self, id: UserId) {
        self.users.prefetch(id);
    }

    /// The user named `username` (case-insensitive).
    pub fn user_by_name(&self, username: &str) -> Option<&User> {
        self.user_by_name.get(lowercase(username).as_ref()).and_then(|id| self.users.get(*id))
    }

    /// Resolves a request's user locator, `owner` being the caller.
    pub fn resolve_user(&self, locator: UserLocator<'_>, owner: UserId) -> Option<&User> {
        match locator {
            UserLocator::Caller => self.user(owner),
            UserLocator::Id(id) => self.user(UserId(id)),
            UserLocator::Username(name) => self.user_by_name(name),
        }
    }

    /// Every user.
    pub fn users(&self) -> impl Iterator<Item = &User> {
        self.users.values()
    }

    // ---- groups ------------------------------------------------------------------

    /// Adds a group at `full_path`; its parent is the group at the path's prefix, which
    /// must exist.
    pub fn insert_group(&mut self, id: GroupId, full_path: &str, visibility: Visibility) -> Result<(), DirectoryError> {
        let full_path = normalize_path(full_path)?;
        if self.groups.contains_key(id) {
            return Err(DirectoryError::Invalid(format!("group id {id} already exists")));
        }
        if self.group_at(&full_path).is_some()
            || self.project_at(&full_path).is_some()
            || self.user_by_name.contains_key(&full_path)
        {
            return Err(DirectoryError::PathTaken(full_path.into_string()));
        }
        let (parent, chain) = match full_path.rsplit_once('/') {
            None => (None, Chain::new(&[id])),
            Some((prefix, _)) => {
                let parent = self.group_at(prefix).ok_or_else(|| DirectoryError::UnknownGroup(prefix.to_owned()))?;
                if parent.chain.len() >= MAX_GROUP_DEPTH {
                    return Err(DirectoryError::Invalid(format!(
                        "`{full_path}` would nest deeper than {MAX_GROUP_DEPTH} groups"
                    )));
                }
                let ancestry = parent.ancestry();
                let chain: Vec<GroupId> = std::iter::once(id).chain(ancestry.groups().iter().copied()).collect();
                (Some(parent.id), Chain::new(&chain))
            }
        };
        self.group_paths.insert(self.path_tags.hash_one(&*full_path), id.0);
        self.groups.insert(id, Group { id, parent, full_path: FullPath::new(&full_path), visibility, chain });
        Ok(())
    }

    /// Changes a group's visibility.
    pub fn set_group_visibility(&mut self, id: GroupId, visibility: Visibility) -> Result<(), DirectoryError> {
        let group = self.groups.get_mut(id).ok_or_else(|| DirectoryError::UnknownGroup(id.to_string()))?;
        group.visibility = visibility;
        Ok(())
    }

    /// Removes an empty group (no subgroup, no project).
    pub fn remove_group(&mut self, id: GroupId) -> Result<(), DirectoryError> {
        let group = self.groups.get(id).ok_or_else(|| DirectoryError::UnknownGroup(id.to_string()))?;
        if self.groups.values().any(|g| g.parent == Some(id))
            || self.projects.values().any(|p| p.namespace == Namespace::Group(id))
        {
            return Err(DirectoryError::Invalid(format!("group `{}` is not empty", group.full_path)));
        }
        let tag = self.path_tags.hash_one(&*group.full_path);
        self.group_paths.remove(tag, id.0);
        self.groups.remove(id);
        Ok(())
    }

    /// The group with `id`.
    pub fn group(&self, id: GroupId) -> Option<&Group> {
        self.groups.get(id)
    }

    /// The group at `full_path` (case-insensitive).
    pub fn group_by_path(&self, full_path: &str) -> Option<&Group> {
        self.group_at(&lowercase(full_path))
    }

    /// Resolves a request's group locator.
    pub fn resolve_group(&self, locator: Locator<'_>) -> Option<&Group> {
        match locator {
            Locator::Id(id) => self.group(GroupId(id)),
            Locator::Path(path) => self.group_by_path(path),
        }
    }

    /// Every group.
    pub fn groups(&self) -> impl Iterator<Item = &Group> {
        self.groups.values()
    }

    /// `group` itself, then its parent, up to the top-level group.
    pub fn ancestors(&self, group: GroupId) -> impl Iterator<Item = &Group> + '_ {
        let ancestry = self.ancestry(group);
        (0..ancestry.len).filter_map(move |position| self.groups.get(ancestry.ids[position]))
    }

    /// `group` and its ancestors, nearest first.
    pub fn ancestry(&self, group: GroupId) -> Ancestry {
        self.groups.get(group).map_or(Ancestry::NONE, Group::ancestry)
    }

    /// The ancestry of the group a project lives in (empty for a personal project), from
    /// the project's own record.
    pub fn project_ancestry(&self, project: &Project) -> Ancestry {
        Ancestry::of(&project.chain)
    }

    /// `user`'s role given the groups above the boundary and, for a project, the project:
    /// the highest of the direct role and the roles in `chain`; `Owner` in their personal
    /// namespace.
    pub fn role_in(user: &User, project: Option<&Project>, chain: &Ancestry) -> Option<Role> {
        if let Some(project) = project
            && project.namespace == Namespace::User(user.id)
        {
            return Some(Role::Owner);
        }
        if user.memberships.is_empty() {
            return None;
        }
        if user.memberships.len() <= MEMBERSHIPS_HERE {
            // The memberships the record holds (nearly every user's), in one pass: a compare
            // per chain level each, where a binary search per level branches unpredictably.
            let project = project.map(|project| MembershipTarget::Project(project.id).key());
            let groups = chain.groups();
            return user
                .memberships
                .iter()
                .filter(|entry| {
                    let key = *entry >> ROLE_BITS;
                    Some(key) == project || (key & 1 == 0 && groups.contains(&GroupId(key >> 1)))
                })
                .filter_map(|entry| unpack_role(*entry))
                .max();
        }
        let direct = project.and_then(|project| user.direct_role(MembershipTarget::Project(project.id)));
        chain.groups().iter().filter_map(|group| user.direct_role(MembershipTarget::Group(*group))).max().max(direct)
    }

    /// Whether `ancestor` is `group` or one of its ancestors.
    pub fn group_contains_group(&self, ancestor: GroupId, group: GroupId) -> bool {
        self.ancestry(group).contains(ancestor)
    }

    /// Whether `project` lives in `ancestor` or one of its subgroups.
    pub fn group_contains_project(&self, ancestor: GroupId, project: &Project) -> bool {
        match project.namespace {
            Namespace::Group(parent) => self.group_contains_group(ancestor, parent),
            Namespace::User(_) => false,
        }
    }

    // ---- projects ----------------------------------------------------------------

    /// Adds a project at `full_path`; its namespace is the group or user named by the
    /// path's prefix.
    pub fn insert_project(
        &mut self,
        id: ProjectId,
        full_path: &str,
        visibility: Visibility,
    ) -> Result<(), DirectoryError> {
        let full_path = normalize_path(full_path)?;
        if self.projects.contains_key(id) {
            return Err(DirectoryError::Invalid(format!("project id {id} already exists")));
        }
        if self.project_at(&full_path).is_some() || self.group_at(&full_path).is_some() {
            return Err(DirectoryError::PathTaken(full_path.into_string()));
        }
        let namespace = self.namespace_of(&full_path)?;
        let chain = self.chain_of(namespace);
        self.project_paths.insert(self.path_tags.hash_one(&*full_path), id.0);
        self.projects.insert(id, Project { id, namespace, full_path: FullPath::new(&full_path), visibility, chain });
        Ok(())
    }

    // The chain a project in `namespace` holds: its group's.
    fn chain_of(&self, namespace: Namespace) -> Chain {
        match namespace {
            Namespace::Group(group) => self.groups.get(group).map_or_else(Chain::empty, |group| group.chain.clone()),
            Namespace::User(_) => Chain::empty(),
        }
    }

    fn namespace_of(&self, full_path: &str) -> Result<Namespace, DirectoryError> {
        let (prefix, _) = full_path.rsplit_once('/').ok_or_else(|| {
            DirectoryError::Invalid(format!("project path `{full_path}` needs a namespace: `group/project`"))
        })?;
        if let Some(group) = self.group_at(prefix) {
            Ok(Namespace::Group(group.id))
        } else if let Some(user) = self.user_by_name.get(prefix) {
            Ok(Namespace::User(*user))
        } else {
            Err(DirectoryError::UnknownNamespace(prefix.to_owned()))
        }
    }

    /// Moves a project to another namespace (group full path or username), keeping its
    /// name.
    pub fn move_project(&mut self, id: ProjectId, namespace_path: &str) -> Result<(), DirectoryError> {
        let project = self.projects.get(id).ok_or_else(|| DirectoryError::UnknownProject(id.to_string()))?;
        let name = project.full_path.rsplit('/').next().unwrap_or_default();
        let new_path = normalize_path(&format!("{namespace_path}/{name}"))?;
        if project.full_path == *new_path {
            return Ok(());
        }
        if self.project_at(&new_path).is_some() || self.group_at(&new_path).is_some() {
            return Err(DirectoryError::PathTaken(new_path.into_string()));
        }
        let namespace = self.namespace_of(&new_path)?;
        let chain = self.chain_of(namespace);
        let old_tag = self.path_tags.hash_one(&*project.full_path);
        self.project_paths.remove(old_tag, id.0);
        self.project_paths.insert(self.path_tags.hash_one(&*new_path), id.0);
        if let Some(project) = self.projects.get_mut(id) {
            project.full_path = FullPath::new(&new_path);
            project.namespace = namespace;
            project.chain = chain;
        }
        Ok(())
    }

    /// Changes a project's visibility.
    pub fn set_project_visibility(&mut self, id: ProjectId, visibility: Visibility) -> Result<(), DirectoryError> {
        let project = self.projects.get_mut(id).ok_or_else(|| DirectoryError::UnknownProject(id.to_string()))?;
        project.visibility = visibility;
        Ok(())
    }

    /// Removes a project; memberships on it stop counting.
    pub fn remove_project(&mut self, id: ProjectId) -> Result<(), DirectoryError> {
        let project = self.projects.remove(id).ok_or_else(|| DirectoryError::UnknownProject(id.to_string()))?;
        self.project_paths.remove(self.path_tags.hash_one(&*project.full_path), id.0);
        Ok(())
    }

    /// The project with `id`.
    pub fn project(&self, id: ProjectId) -> Option<&Project> {
        self.projects.get(id)
    }

    /// The project at `full_path` (case-insensitive).
    pub fn project_by_path(&self, full_path: &str) -> Option<&Project> {
        self.project_at(&lowercase(full_path))
    }

    /// Starts loading the first line a lookup of `boundary` reads (its record by id, its
    /// path entry by path), for [`crate::warm`].
    pub(crate) fn prefetch_boundary(&self, boundary: BoundaryRef<'_>) {
        match boundary {
            BoundaryRef::Project(Locator::Id(id)) => self.projects.prefetch(ProjectId(id)),
            BoundaryRef::Project(Locator::Path(path)) => self.project_paths.prefetch(self.path_tags.hash_one(path)),
            BoundaryRef::Group(Locator::Id(id)) => self.groups.prefetch(GroupId(id)),
            BoundaryRef::Group(Locator::Path(path)) => self.group_paths.prefetch(self.path_tags.hash_one(path)),
            BoundaryRef::User(_) | BoundaryRef::Instance => {}
        }
    }

    /// The id the path table names first for `path` (unconfirmed, and only for a lowercase
    /// path): for [`crate::warm`].
    pub(crate) fn first_project_at(&self, path: &str) -> Option<u64> {
        self.project_paths.get(self.path_tags.hash_one(path)).next()
    }

    /// [`Directory::first_project_at`] for groups.
    pub(crate) fn first_group_at(&self, path: &str) -> Option<u64> {
        self.group_paths.get(self.path_tags.hash_one(path)).next()
    }

    // The group at a lowercase `path`.
    fn group_at(&self, path: &str) -> Option<&Group> {
        self.group_paths
            .get(self.path_tags.hash_one(path))
            .filter_map(|id| self.groups.get(GroupId(id)))
            .find(|group| group.full_path.as_bytes() == path.as_bytes())
    }

    // The project at a lowercase `path`.
    fn project_at(&self, path: &str) -> Option<&Project> {
        self.project_paths
            .get(self.path_tags.hash_one(path))
            .filter_map(|id| self.projects.get(ProjectId(id)))
            .find(|project| project.full_path.as_bytes() == path.as_bytes())
    }

    /// Resolves a request's project locator.
    pub fn resolve_project(&self, locator: Locator<'_>) -> Option<&Project> {
        match locator {
            Locator::Id(id) => self.project(ProjectId(id)),
            Locator::Path(path) => self.project_by_path(path),
        }
    }

    /// Every project.
    pub fn projects(&self) -> impl Iterator<Item = &Project> {
        self.projects.values()
    }

    /// The numbers of users, groups and projects.
    pub fn counts(&self) -> (usize, usize, usize) {
        (self.users.len(), self.groups.len(), self.projects.len())
    }

    // ---- memberships -------------------------------------------------------------

    /// Gives `user` the role `role` on `target`, replacing any earlier role there.
    pub fn set_membership(&mut self, user: UserId, target: MembershipTarget, role: Role) -> Result<(), DirectoryError> {
        match target {
            MembershipTarget::Group(id) if !self.groups.contains_key(id) => {
                return Err(DirectoryError::UnknownGroup(id.to_string()));
            }
            MembershipTarget::Project(id) if !self.projects.contains_key(id) => {
                return Err(DirectoryError::UnknownProject(id.to_string()));
            }
            _ => {}
        }
        let id = match target {
            MembershipTarget::Group(id) => id.0,
            MembershipTarget::Project(id) => id.0,
        };
        if id > MAX_TARGET_ID {
            return Err(DirectoryError::Invalid(format!("id {id} is too large for a membership")));
        }
        let user = self.users.get_mut(user).ok_or_else(|| DirectoryError::UnknownUser(user.to_string()))?;
        let key = target.key();
        match user.memberships.binary_search_by_key(&key, |entry| entry >> ROLE_BITS) {
            Ok(position) => {
                if let Some(entry) = user.memberships.get_mut(position) {
                    *entry = pack(key, role);
                }
            }
            Err(position) => user.memberships.insert(position, pack(key, role)),
        }
        Ok(())
    }

    /// Removes `user`'s membership on `target`; returns whether there was one.
    pub fn remove_membership(&mut self, user: UserId, target: MembershipTarget) -> Result<bool, DirectoryError> {
        let user = self.users.get_mut(user).ok_or_else(|| DirectoryError::UnknownUser(user.to_string()))?;
        let key = target.key();
        match user.memberships.binary_search_by_key(&key, |entry| entry >> ROLE_BITS) {
            Ok(position) => {
                user.memberships.remove(position);
                Ok(true)
            }
            Err(_) => Ok(false),
        }
    }

    /// Frees spare capacity of the membership lists after a bulk load.
    pub fn shrink_to_fit(&mut self) {
        for user in self.users.values_mut() {
            user.memberships.shrink_to_fit();
        }
    }

    // ---- questions the decision asks ---------------------------------------------

    /// `user`'s role in `project`: the highest of the direct role and the roles in every
    /// ancestor group; `Owner` for the user's personal projects.
    pub fn role_in_project(&self, user: &User, project: &Project) -> Option<Role> {
        match project.namespace {
            Namespace::User(owner) if owner == user.id => Some(Role::Owner),
            Namespace::User(_) => user.direct_role(MembershipTarget::Project(project.id)),
            Namespace::Group(group) => {
                let direct = user.direct_role(MembershipTarget::Project(project.id));
                direct.max(self.role_in_group(user, group))
            }
        }
    }

    /// `user`'s role in `group`: the highest over the group and its ancestors.
    pub fn role_in_group(&self, user: &User, group: GroupId) -> Option<Role> {
        if user.memberships.is_empty() {
            return None;
        }
        self.ancestry(group).groups().iter().filter_map(|g| user.direct_role(MembershipTarget::Group(*g))).max()
    }

    /// Whether `user` may see `project` at all (else it is answered as not found).
    pub fn can_see_project(&self, user: &User, project: &Project) -> bool {
        Directory::can_see_project_given(user, project, || self.role_in_project(user, project))
    }

    /// [`Directory::can_see_project`] with the user's role computed by the caller (only
    /// asked for when it matters).
    pub fn can_see_project_given(user: &User, project: &Project, role: impl FnOnce() -> Option<Role>) -> bool {
        user.admin
            || match project.visibility {
                Visibility::Public => true,
                Visibility::Internal => user.is_active(),
                Visibility::Private => role().is_some(),
            }
    }

    /// Whether `user` may see `group` at all: admins, public and internal groups, members
    /// of the group or an ancestor, and members of anything inside it.
    pub fn can_see_group(&self, user: &User, group: &Group) -> bool {
        self.can_see_group_given(user, group, self.role_in_group(user, group.id))
    }

    /// [`Directory::can_see_group`] with the user's role in the group already known.
    pub fn can_see_group_given(&self, user: &User, group: &Group, role: Option<Role>) -> bool {
        if user.admin || group.visibility == Visibility::Public {
            return true;
        }
        if group.visibility == Visibility::Internal && user.is_active() {
            return true;
        }
        if role.is_some() {
            return true;
        }
        user.memberships().any(|(target, _)| match target {
            MembershipTarget::Group(inner) => self.group_contains_group(group.id, inner),
            MembershipTarget::Project(project) => {
                self.project(project).is_some_and(|project| self.group_contains_project(group.id, project))
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_fill_whole_cache_lines() {
        // A user's record (with memberships and username in place) is three lines, a
        // project's and a group's two: the sizes the warm-up prefetches and the memory
        // figures assume. A field added past them moves these.
        assert_eq!(id_map::line_size::<User>(), 192);
        assert_eq!(id_map::line_size::<Project>(), 128);
        assert_eq!(id_map::line_size::<Group>(), 128);
        // What every decision reads of its owner is in the line the lookup loads.
        let first_line = |offset: usize, size: usize| offset + size <= 64;
        assert!(first_line(std::mem::offset_of!(User, id), 8));
        assert!(first_line(std::mem::offset_of!(User, state), 1));
        assert!(first_line(std::mem::offset_of!(User, admin), 1));
        assert!(first_line(std::mem::offset_of!(User, username), std::mem::size_of::<Username>()));
    }

    #[test]
    fn deep_chains_and_large_ids_spill_and_still_answer() {
        let mut directory = Directory::new();
        directory.upsert_user(UserId(1), "alice", UserState::Active, false).unwrap();
        // Ten levels (past the eight held in place), the deepest with an id past 2³².
        let mut path = String::new();
        let ids: Vec<GroupId> = (1..=9).map(GroupId).chain([GroupId(1 << 40)]).collect();
        for (depth, id) in ids.iter().enumerate() {
            path = if depth == 0 { "g1".to_owned() } else { format!("{path}/g{}", depth + 1) };
            directory.insert_group(*id, &path, Visibility::Private).unwrap();
        }
        directory.insert_project(ProjectId(5), &format!("{path}/api"), Visibility::Private).unwrap();
        directory.insert_project(ProjectId(6), "g1/web", Visibility::Private).unwrap();
        let deepest = ids[9];
        let nearest_first: Vec<GroupId> = ids.iter().rev().copied().collect();
        assert_eq!(directory.ancestry(deepest).groups(), &nearest_first[..]);
        let project = directory.project(ProjectId(5)).unwrap();
        assert_eq!(directory.project_ancestry(project).groups(), &nearest_first[..]);
        assert!(directory.group_contains_project(GroupId(1), project));
        assert_eq!(
            directory.project_by_path(&format!("{}/API", path.to_uppercase())).map(|p| p.id),
            Some(ProjectId(5))
        );

        // Twenty memberships: past the seventeen in place, then back under.
        directory.set_membership(UserId(1), MembershipTarget::Group(GroupId(1)), Role::Developer).unwrap();
        for extra in 0..19 {
            directory.insert_group(GroupId(100 + extra), &format!("x{extra}"), Visibility::Private).unwrap();
            directory.set_membership(UserId(1), MembershipTarget::Group(GroupId(100 + extra)), Role::Guest).unwrap();
        }
        let alice = directory.user(UserId(1)).unwrap();
        assert_eq!(alice.membership_count(), 20);
        assert_eq!(directory.role_in_project(alice, directory.project(ProjectId(5)).unwrap()), Some(Role::Developer));
        for extra in 0..10 {
            assert!(directory.remove_membership(UserId(1), MembershipTarget::Group(GroupId(100 + extra))).unwrap());
        }
        directory.set_membership(UserId(1), MembershipTarget::Group(GroupId(1)), Role::Maintainer).unwrap();
        let alice = directory.user(UserId(1)).unwrap();
        assert_eq!(alice.membership_count(), 10);
        assert_eq!(directory.role_in_group(alice, deepest), Some(Role::Maintainer));
        assert_eq!(alice.direct_role(MembershipTarget::Group(GroupId(110))), Some(Role::Guest));
        assert_eq!(alice.direct_role(MembershipTarget::Group(GroupId(109))), None);

        // A project moved out of the deep chain takes its new group's chain.
        directory.move_project(ProjectId(5), "g1").unwrap();
        let moved = directory.project(ProjectId(5)).unwrap();
        assert_eq!(directory.project_ancestry(moved).groups(), &[GroupId(1)]);
        assert_eq!(&*moved.full_path, "g1/api");
    }

    #[test]
    fn role_in_scans_held_memberships_as_the_searches_would() {
        // The one-pass scan (up to the memberships held in the record) and the binary
        // searches (past them) against the definition: the highest direct role on the
        // project or on any group of the chain, for membership sets crossing the bound.
        let mut directory = Directory::new();
        directory.upsert_user(UserId(1), "alice", UserState::Active, false).unwrap();
        let mut path = String::new();
        for depth in 1..=6_u64 {
            path = if depth == 1 { "g1".to_owned() } else { format!("{path}/g{depth}") };
            directory.insert_group(GroupId(depth), &path, Visibility::Private).unwrap();
        }
        for other in 0..30 {
            directory.insert_group(GroupId(100 + other), &format!("o{other}"), Visibility::Private).unwrap();
            directory.insert_project(ProjectId(200 + other), &format!("o{other}/p"), Visibility::Private).unwrap();
        }
        directory.insert_project(ProjectId(7), &format!("{path}/api"), Visibility::Private).unwrap();
        let targets: Vec<MembershipTarget> = (1..=6)
            .map(|id| MembershipTarget::Group(GroupId(id)))
            .chain((100..130).map(|id| MembershipTarget::Group(GroupId(id))))
            .chain((200..230).map(|id| MembershipTarget::Project(ProjectId(id))))
            .chain([MembershipTarget::Project(ProjectId(7))])
            .collect();
        let mut state = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = |bound: usize| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state % bound as u64) as usize
        };
        let mut crossed = [false; 2];
        for _ in 0..400 {
            for target in &targets {
                directory.remove_membership(UserId(1), *target).unwrap();
            }
            let count = next(26);
            for _ in 0..count {
                let target = targets[next(targets.len())];
                directory.set_membership(UserId(1), target, Role::ALL[next(Role::ALL.len())]).unwrap();
            }
            let user = directory.user(UserId(1)).unwrap();
            crossed[usize::from(user.membership_count() > MEMBERSHIPS_HERE)] = true;
            let project = directory.project(ProjectId(7)).unwrap();
            for (project, chain) in [
                (Some(project), directory.project_ancestry(project)),
                (None, directory.ancestry(GroupId(1 + next(6) as u64))),
            ] {
                let expected = project
                    .map(|p| MembershipTarget::Project(p.id))
                    .into_iter()
                    .chain(chain.groups().iter().map(|g| MembershipTarget::Group(*g)))
                    .filter_map(|target| user.direct_role(target))
                    .max();
                assert_eq!(Directory::role_in(user, project, &chain), expected, "{:?}", user.memberships);
            }
        }
        assert_eq!(crossed, [true, true], "both sides of the bound");
    }
}
