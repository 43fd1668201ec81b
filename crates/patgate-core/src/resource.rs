//! Resources, actions and permissions, with the role matrix loaded from
//! `catalog/resources.txt`.

use std::{collections::HashMap, fmt, str::FromStr};

use crate::role::{Requirement, Role};

/// One of the four things a token may do to a resource.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(u8)]
pub enum Action {
    Create = 0,
    Read = 1,
    Update = 2,
    Delete = 3,
}

impl Action {
    /// All four actions, in CRUD order.
    pub const ALL: [Action; 4] = [Action::Create, Action::Read, Action::Update, Action::Delete];

    /// The lowercase wire name: `create`, `read`, `update`, `delete`.
    pub fn name(self) -> &'static str {
        match self {
            Action::Create => "create",
            Action::Read => "read",
            Action::Update => "update",
            Action::Delete => "delete",
        }
    }

    /// How people read it: `Create`, `Read`, …
    pub fn label(self) -> &'static str {
        match self {
            Action::Create => "Create",
            Action::Read => "Read",
            Action::Update => "Update",
            Action::Delete => "Delete",
        }
    }

    fn bit(self) -> u8 {
        1 << (self as u8)
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// An action name that is not `create`, `read`, `update` or `delete`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown action `{0}`: expected create, read, update or delete")]
pub struct UnknownActionError(pub String);

impl FromStr for Action {
    type Err = UnknownActionError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Action::ALL.into_iter().find(|action| action.name() == text).ok_or_else(|| UnknownActionError(text.to_owned()))
    }
}

/// A subset of {create, read, update, delete}.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct ActionSet(u8);

impl ActionSet {
    /// No action at all.
    pub const EMPTY: ActionSet = ActionSet(0);
    /// All four actions.
    pub const ALL: ActionSet = ActionSet(0b1111);
    /// Only `read`.
    pub const READ: ActionSet = ActionSet(0b0010);

    /// The set holding exactly `action`.
    pub fn of(action: Action) -> ActionSet {
        ActionSet(action.bit())
    }

    /// Whether `action` is in the set.
    pub fn contains(self, action: Action) -> bool {
        self.0 & action.bit() != 0
    }

    /// The set with `action` added.
    #[must_use]
    pub fn with(self, action: Action) -> ActionSet {
        ActionSet(self.0 | action.bit())
    }

    /// The set with `action` removed.
    #[must_use]
    pub fn without(self, action: Action) -> ActionSet {
        ActionSet(self.0 & !action.bit())
    }

    /// Whether every action of `self` is in `other`.
    pub fn is_subset(self, other: ActionSet) -> bool {
        self.0 & !other.0 == 0
    }

    /// The actions in both sets.
    #[must_use]
    pub fn intersection(self, other: ActionSet) -> ActionSet {
        ActionSet(self.0 & other.0)
    }

    /// The actions in either set.
    #[must_use]
    pub fn union(self, other: ActionSet) -> ActionSet {
        ActionSet(self.0 | other.0)
    }

    /// Whether the set holds no action.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The actions in CRUD order.
    pub fn iter(self) -> impl Iterator<Item = Action> {
        Action::ALL.into_iter().filter(move |action| self.contains(*action))
    }

    /// Parses `crud` letters (`r`, `cr`) or `-` for the empty set.
    pub fn from_letters(text: &str) -> Option<ActionSet> {
        if text == "-" {
            return Some(ActionSet::EMPTY);
        }
        let mut set = ActionSet::EMPTY;
        for letter in text.chars() {
            let action = match letter {
                'c' => Action::Create,
                'r' => Action::Read,
                'u' => Action::Update,
                'd' => Action::Delete,
                _ => return None,
            };
            set = set.with(action);
        }
        (!set.is_empty()).then_some(set)
    }
}

impl fmt::Debug for ActionSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.iter().map(Action::name)).finish()
    }
}

impl FromIterator<Action> for ActionSet {
    fn from_iter<I: IntoIterator<Item = Action>>(iter: I) -> Self {
        iter.into_iter().fold(ActionSet::EMPTY, ActionSet::with)
    }
}

/// Where a resource lives, and so what a request on it names: a project, a group, a user
/// or the whole instance.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum BoundaryKind {
    Project,
    Group,
    User,
    Instance,
}

impl BoundaryKind {
    /// All kinds, most specific first (GitLab resolves project > group > user > instance).
    pub const ALL: [BoundaryKind; 4] =
        [BoundaryKind::Project, BoundaryKind::Group, BoundaryKind::User, BoundaryKind::Instance];

    /// The lowercase wire name.
    pub fn name(self) -> &'static str {
        match self {
            BoundaryKind::Project => "project",
            BoundaryKind::Group => "group",
            BoundaryKind::User => "user",
            BoundaryKind::Instance => "instance",
        }
    }
}

impl fmt::Display for BoundaryKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for BoundaryKind {
    type Err = ();

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        BoundaryKind::ALL.into_iter().find(|kind| kind.name() == text).ok_or(())
    }
}

/// A resource known to the [`Resources`] table it came from.
///
/// INVARIANT: only [`Resources`] creates these, so every `ResourceId` names a resource of
/// that table; it is an index, cheap to copy and compare.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ResourceId(u16);

impl ResourceId {
    /// The position of the resource in its table.
    pub fn index(self) -> usize {
        usize::from(self.0)
    }
}

/// One action on one resource: `merge_request:update`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Permission {
    pub resource: ResourceId,
    pub action: Action,
}

/// What a resource's row in the role matrix says for one boundary.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RoleRow {
    /// Per action (CRUD order) what the owner must be, `None` where the action does not
    /// exist for this resource at this boundary.
    pub requirements: [Option<Requirement>; 4],
    /// What a signed-in non-member may do on a public project or group (or on another
    /// user's resources).
    pub public: ActionSet,
    /// What a signed-in non-member may do on an internal project or group.
    pub internal: ActionSet,
}

impl RoleRow {
    /// What `action` requires, if the action exists here.
    pub fn requirement(&self, action: Action) -> Option<Requirement> {
        self.requirements[action as usize]
    }
}

/// A resource's definition: its names and its role-matrix rows per boundary.
#[derive(Clone, Debug)]
pub struct ResourceDef {
    pub name: String,
    pub label: String,
    rows: [Option<RoleRow>; 4],
}

impl ResourceDef {
    /// The row for `boundary`, if the resource exists there.
    pub fn row(&self, boundary: BoundaryKind) -> Option<&RoleRow> {
        self.rows[boundary as usize].as_ref()
    }

    /// The boundaries where this resource exists.
    pub fn boundaries(&self) -> impl Iterator<Item = BoundaryKind> + '_ {
        BoundaryKind::ALL.into_iter().filter(|kind| self.row(*kind).is_some())
    }

    /// The actions that exist for this resource at any boundary.
    pub fn actions(&self) -> ActionSet {
        self.rows
            .iter()
            .flatten()
            .flat_map(|row| Action::ALL.into_iter().filter(|action| row.requirement(*action).is_some()))
            .collect()
    }
}

/// The table of resources and the role matrix.
///
/// INVARIANT: names are unique and each (resource, boundary) has exactly one row.
#[derive(Clone, Debug)]
pub struct Resources {
    defs: Vec<ResourceDef>,
    by_name: HashMap<String, ResourceId>,
    well_known: WellKnown,
}

/// Resources that legacy scopes name by meaning (`read_repository`, `create_runner`, …),
/// looked up once when the table loads; `None` where the table lacks them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WellKnown {
    pub repository: Option<ResourceId>,
    pub container_registry: Option<ResourceId>,
    pub runner: Option<ResourceId>,
    pub personal_access_token: Option<ResourceId>,
    /// What GitLab's Users API (`/user…`, `/users…`: profiles, SSH and GPG keys, email
    /// addresses) and its user-level Events API (`/events`, `/users/:id/events`) serve at a
    /// user boundary: what legacy `read_user` reads. Not the other lists a user boundary
    /// holds (`/issues`, `/projects`, `/search`, `/snippets`, tokens, to-dos).
    pub users_api: [Option<ResourceId>; 5],
}

impl WellKnown {
    /// Whether `resource` is one the Users API serves (see [`WellKnown::users_api`]).
    pub fn serves_users_api(&self, resource: ResourceId) -> bool {
        self.users_api.contains(&Some(resource))
    }
}

/// A problem in a resources file, with the line it is on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}:{line}: {message}")]
pub struct ResourcesFileError {
    pub file: String,
    pub line: usize,
    pub message: String,
}

/// A resource name that is not in the table.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown resource `{0}`")]
pub struct UnknownResourceError(pub String);

/// The resources file compiled into patgate.
pub const BUILTIN_RESOURCES: &str = include_str!("../../../catalog/resources.txt");

impl Resources {
    /// The built-in table from `catalog/resources.txt`.
    pub fn builtin() -> Result<Resources, ResourcesFileError> {
        Resources::parse("catalog/resources.txt", BUILTIN_RESOURCES)
    }

    /// Parses a resources file; errors name `file` and the line.
    pub fn parse(file: &str, text: &str) -> Result<Resources, ResourcesFileError> {
        let mut resources = Resources { defs: Vec::new(), by_name: HashMap::new(), well_known: WellKnown::default() };
        for (number, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            resources.parse_row(line).map_err(|message| ResourcesFileError {
                file: file.to_owned(),
                line: number + 1,
                message,
            })?;
        }
        resources.well_known = WellKnown {
            repository: resources.id("repository").ok(),
            container_registry: resources.id("container_registry").ok(),
            runner: resources.id("runner").ok(),
            personal_access_token: resources.id("personal_access_token").ok(),
            users_api: ["user", "ssh_key", "gpg_key", "email", "event"].map(|name| resources.id(name).ok()),
        };
        Ok(resources)
    }

    /// The resources legacy scopes refer to.
    pub fn well_known(&self) -> WellKnown {
        self.well_known
    }

    fn parse_row(&mut self, line: &str) -> Result<(), String> {
        let mut columns = line.split_whitespace();
        let mut next = |what: &str| columns.next().ok_or_else(|| format!("missing column `{what}`"));
        let name = next("resource")?;
        if !is_snake_case(name) {
            return Err(format!("resource name `{name}` is not snake_case"));
        }
        let boundary_name = next("boundary")?;
        let boundary = BoundaryKind::from_str(boundary_name)
            .map_err(|()| format!("unknown boundary `{boundary_name}`: expected project, group, user or instance"))?;
        let mut requirements = [None; 4];
        for (slot, action) in requirements.iter_mut().zip(Action::ALL) {
            *slot = parse_requirement(next(action.name())?, boundary)?;
        }
        let public_text = next("public")?;
        let public = ActionSet::from_letters(public_text)
            .ok_or_else(|| format!("column `public` must be letters from `crud` or `-`, not `{public_text}`"))?;
        let internal_text = next("internal")?;
        let internal = ActionSet::from_letters(internal_text)
            .ok_or_else(|| format!("column `internal` must be letters from `crud` or `-`, not `{internal_text}`"))?;
        let label: Vec<&str> = columns.collect();
        let label = if label.is_empty() { title_case(name) } else { label.join(" ") };
        if requirements.iter().all(Option::is_none) {
            return Err(format!("resource `{name}` has no action at boundary `{boundary}`"));
        }
        let row = RoleRow { requirements, public, internal };
        let id = match self.by_name.get(name) {
            Some(id) => *id,
            None => {
                let id = ResourceId(u16::try_from(self.defs.len()).map_err(|_| "too many resources".to_owned())?);
                self.defs.push(ResourceDef { name: name.to_owned(), label: label.clone(), rows: [None; 4] });
                self.by_name.insert(name.to_owned(), id);
                id
            }
        };
        let def = &mut self.defs[id.index()];
        if def.label != label {
            return Err(format!("resource `{name}` has label `{label}` here but `{}` above", def.label));
        }
        let slot = &mut def.rows[boundary as usize];
        if slot.is_some() {
            return Err(format!("resource `{name}` already has a row for boundary `{boundary}`"));
        }
        *slot = Some(row);
        Ok(())
    }

    /// Looks a resource up by its snake_case name.
    pub fn id(&self, name: &str) -> Result<ResourceId, UnknownResourceError> {
        self.by_name.get(name).copied().ok_or_else(|| UnknownResourceError(name.to_owned()))
    }

    /// The definition of `id`.
    pub fn def(&self, id: ResourceId) -> &ResourceDef {
        &self.defs[id.index()]
    }

    /// The snake_case name of `id`.
    pub fn name(&self, id: ResourceId) -> &str {
        &self.def(id).name
    }

    /// The role-matrix row of `id` at `boundary`.
    pub fn row(&self, id: ResourceId, boundary: BoundaryKind) -> Option<&RoleRow> {
        self.def(id).row(boundary)
    }

    /// Every resource, in file order.
    pub fn iter(&self) -> impl Iterator<Item = (ResourceId, &ResourceDef)> {
        self.defs.iter().enumerate().filter_map(|(index, def)| Some((ResourceId(u16::try_from(index).ok()?), def)))
    }

    /// How many resources there are.
    pub fn len(&self) -> usize {
        self.defs.len()
    }

    /// Whether the table is empty.
    pub fn is_empty(&self) -> bool {
        self.defs.is_empty()
    }

    /// Parses `resource:action` (`merge_request:update`).
    pub fn permission(&self, text: &str) -> Result<Permission, PermissionParseError> {
        let (resource, action) = text.split_once(':').ok_or_else(|| PermissionParseError::Shape(text.to_owned()))?;
        Ok(Permission { resource: self.id(resource)?, action: action.parse()? })
    }

    /// `merge_request:update`.
    pub fn permission_name(&self, permission: Permission) -> String {
        let mut name = String::new();
        self.write_permission_name(permission, &mut name);
        name
    }

    /// [`Resources::permission_name`], appended to `out` (pieces copied, no formatting).
    pub fn write_permission_name(&self, permission: Permission, out: &mut String) {
        out.push_str(self.name(permission.resource));
        out.push(':');
        out.push_str(permission.action.name());
    }

    /// "Merge Request: Update".
    pub fn permission_label(&self, permission: Permission) -> String {
        let mut label = String::new();
        self.write_permission_label(permission, &mut label);
        label
    }

    /// [`Resources::permission_label`], appended to `out` (pieces copied, no formatting).
    pub fn write_permission_label(&self, permission: Permission, out: &mut String) {
        out.push_str(&self.def(permission.resource).label);
        out.push_str(": ");
        out.push_str(permission.action.label());
    }
}

/// A `resource:action` string that does not name a permission.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PermissionParseError {
    #[error("permission `{0}` is not of the form `resource:action`")]
    Shape(String),
    #[error(transparent)]
    Resource(#[from] UnknownResourceError),
    #[error(transparent)]
    Action(#[from] UnknownActionError),
}

fn parse_requirement(text: &str, boundary: BoundaryKind) -> Result<Option<Requirement>, String> {
    let requirement = match text {
        "-" => return Ok(None),
        "self" => Requirement::SelfUser,
        "admin" => Requirement::Admin,
        "any" => Requirement::AnyUser,
        role => Requirement::Member(Role::from_str(role).map_err(|error| error.to_string())?),
    };
    let fits = match requirement {
        Requirement::Member(_) => matches!(boundary, BoundaryKind::Project | BoundaryKind::Group),
        Requirement::SelfUser => boundary == BoundaryKind::User,
        Requirement::Admin | Requirement::AnyUser => true,
    };
    if fits {
        Ok(Some(requirement))
    } else {
        Err(format!("requirement `{text}` does not apply at boundary `{boundary}`"))
    }
}

fn is_snake_case(name: &str) -> bool {
    !name.is_empty()
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        && name.as_bytes()[0].is_ascii_lowercase()
}

fn title_case(name: &str) -> String {
    name.split('_')
        .map(|word| {
            let mut chars = word.chars();
            chars.next().map(|first| first.to_ascii_uppercase().to_string() + chars.as_str()).unwrap_or_default()
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Most resources a table may hold: a permission set is a fixed bitset of this many
/// resources × four actions.
pub const MAX_RESOURCES: usize = 128;

const WORDS: usize = MAX_RESOURCES * 4 / 64;

/// A token's permission set: for each resource, the actions granted.
///
/// INVARIANT: a fixed 512-bit set, four bits per resource (`create`, `read`, `update`,
/// `delete`) at bit `4 × resource`: checking a permission is one load and a mask, with no
/// pointer to follow on the decision path; equal sets compare equal.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct PermissionSet([u64; WORDS]);

impl PermissionSet {
    /// Builds a set from (resource, actions) pairs, merging repeats.
    pub fn new(entries: impl IntoIterator<Item = (ResourceId, ActionSet)>) -> PermissionSet {
        let mut words = [0_u64; WORDS];
        for (resource, actions) in entries {
            let (word, shift) = PermissionSet::position(resource);
            if let Some(word) = words.get_mut(word) {
                *word |= u64::from(actions.0) << shift;
            }
        }
        PermissionSet(words)
    }

    fn position(resource: ResourceId) -> (usize, usize) {
        let bit = resource.index() * 4;
        (bit / 64, bit % 64)
    }

    /// The actions granted on `resource`.
    pub fn actions(&self, resource: ResourceId) -> ActionSet {
        let (word, shift) = PermissionSet::position(resource);
        // The mask keeps four bits, so the value fits a u8.
        self.0.get(word).map_or(ActionSet::EMPTY, |word| ActionSet(((word >> shift) & 0xF) as u8))
    }

    /// Whether `permission` is granted.
    pub fn allows(&self, permission: Permission) -> bool {
        self.actions(permission.resource).contains(permission.action)
    }

    /// Whether nothing is granted.
    pub fn is_empty(&self) -> bool {
        self.0.iter().all(|word| *word == 0)
    }

    /// The (resource, actions) entries with at least one action, by resource.
    pub fn entries(&self) -> impl Iterator<Item = (ResourceId, ActionSet)> + '_ {
        (0..MAX_RESOURCES).filter_map(move |index| {
            let resource = ResourceId(u16::try_from(index).ok()?);
            let actions = self.actions(resource);
            (!actions.is_empty()).then_some((resource, actions))
        })
    }

    /// Every single permission in the set.
    pub fn permissions(&self) -> impl Iterator<Item = Permission> + '_ {
        self.entries().flat_map(|(resource, actions)| actions.iter().map(move |action| Permission { resource, action }))
    }

    /// The set without `permission`.
    #[must_use]
    pub fn without(&self, permission: Permission) -> PermissionSet {
        let mut words = self.0;
        let (word, shift) = PermissionSet::position(permission.resource);
        if let Some(word) = words.get_mut(word) {
            *word &= !(u64::from(ActionSet::of(permission.action).0) << shift);
        }
        PermissionSet(words)
    }

    /// Whether every permission of `self` is in `other`.
    pub fn is_subset(&self, other: &PermissionSet) -> bool {
        self.0.iter().zip(other.0.iter()).all(|(mine, theirs)| mine & !theirs == 0)
    }
}

impl fmt::Debug for PermissionSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.entries().map(|(r, a)| (r.0, a))).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_table_loads_with_the_required_names() {
        let resources = Resources::builtin().unwrap();
        for name in [
            "project",
            "repository",
            "issue",
            "merge_request",
            "pipeline",
            "job",
            "container_registry",
            "package_registry",
            "release",
            "environment",
            "wiki",
            "snippet",
            "label",
            "milestone",
            "ci_variable",
            "member",
            "webhook",
            "deploy_key",
            "runner",
            "group",
            "user",
            "ssh_key",
            "gpg_key",
            "email",
            "personal_access_token",
            "event",
            "todo",
            "admin_user",
            "admin_setting",
            "audit_event",
        ] {
            resources.id(name).unwrap();
        }
        for name in ["member", "label", "milestone", "ci_variable", "webhook", "group"] {
            let id = resources.id(name).unwrap();
            assert!(resources.row(id, BoundaryKind::Group).is_some(), "{name} at group");
        }
        let check = |permission: &str, boundary, expected| {
            let permission = resources.permission(permission).unwrap();
            let row = resources.row(permission.resource, boundary).unwrap();
            assert_eq!(row.requirement(permission.action), Some(expected), "{permission:?}");
        };
        check("issue:read", BoundaryKind::Project, Requirement::Member(Role::Guest));
        check("issue:update", BoundaryKind::Project, Requirement::Member(Role::Planner));
        check("merge_request:create", BoundaryKind::Project, Requirement::Member(Role::Developer));
        check("container_registry:create", BoundaryKind::Project, Requirement::Member(Role::Developer));
        check("ci_variable:read", BoundaryKind::Project, Requirement::Member(Role::Maintainer));
        check("project:delete", BoundaryKind::Project, Requirement::Member(Role::Owner));
        assert_eq!(
            resources.permission_label(resources.permission("merge_request:update").unwrap()),
            "Merge Request: Update"
        );
    }

    #[test]
    fn bad_rows_name_file_and_line() {
        let cases = [
            (
                "issue project guest guest planner planner r r\nissue project guest guest guest guest r r",
                2,
                "already has a row",
            ),
            ("# c\n\nIssue project guest guest planner planner r r", 3, "snake_case"),
            ("issue galaxy guest guest planner planner r r", 1, "unknown boundary"),
            ("issue project guest guest chief planner r r", 1, "unknown role `chief`"),
            ("issue project guest guest planner planner rx r", 1, "column `public`"),
            ("issue project guest guest planner", 1, "missing column `delete`"),
            ("issue user guest - - - - -", 1, "does not apply"),
            ("issue project - - - - r r", 1, "no action"),
        ];
        for (text, line, needle) in cases {
            let error = Resources::parse("x.txt", text).unwrap_err();
            assert_eq!(error.line, line, "{text}");
            assert!(error.to_string().contains(needle), "{error} lacks {needle}");
            assert!(error.to_string().starts_with(&format!("x.txt:{line}: ")));
        }
    }

    #[test]
    fn permission_sets_merge_and_compare() {
        let r = |i| ResourceId(i);
        let set = PermissionSet::new([
            (r(3), ActionSet::READ),
            (r(1), ActionSet::EMPTY),
            (r(3), ActionSet::of(Action::Create)),
        ]);
        assert_eq!(set.entries().count(), 1);
        assert_eq!(set.actions(r(3)), ActionSet::READ.with(Action::Create));
        let smaller = set.without(Permission { resource: r(3), action: Action::Create });
        assert!(smaller.is_subset(&set));
        assert!(!set.is_subset(&smaller));
        assert!(
            set.without(Permission { resource: r(3), action: Action::Read })
                .without(Permission { resource: r(3), action: Action::Create })
                .is_empty()
        );
    }
}
