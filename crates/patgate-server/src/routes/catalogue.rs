//! What a token form needs to know: the permission catalogue (every resource, where it
//! exists, its actions and the role each needs) and the projects and groups the caller can
//! see, with the caller's role in each.

use axum::{Json, extract::State};
use patgate_core::{Action, BoundaryKind, BoundaryRef, UserLocator};
use serde::{Deserialize, Serialize};

use crate::{
    auth::{Credentials, authorize},
    error::ApiError,
    extract::Params,
    routes::tokens::own_permission,
    state::AppState,
};

/// One action of a resource at one boundary.
#[derive(Debug, Serialize)]
pub struct ActionEntry {
    pub action: &'static str,
    /// `guest` … `owner`, `self`, `admin` or `any_user`: what the owner must be.
    pub requires: String,
}

/// A resource at one boundary kind.
#[derive(Debug, Serialize)]
pub struct ResourceEntry {
    pub name: String,
    pub label: String,
    pub boundary: &'static str,
    pub actions: Vec<ActionEntry>,
}

/// `GET /api/v1/resources`: every resource at every boundary where it exists, in catalogue
/// order, grouped by boundary (project, group, user, instance).
pub async fn resources(
    State(state): State<AppState>,
    headers: Credentials,
) -> Result<Json<Vec<ResourceEntry>>, ApiError> {
    let permission = own_permission(&state, "read")?;
    authorize(&state, &headers, &permission, BoundaryRef::User(UserLocator::Caller), false, true)?;
    let engine = state.engine();
    let mut entries = Vec::new();
    for kind in BoundaryKind::ALL {
        for (_, def) in engine.resources.iter() {
            let Some(row) = def.row(kind) else { continue };
            let actions = Action::ALL
                .into_iter()
                .filter_map(|action| {
                    let requires = row.requirement(action)?;
                    Some(ActionEntry { action: action.name(), requires: requirement_name(requires) })
                })
                .collect();
            entries.push(ResourceEntry {
                name: def.name.clone(),
                label: def.label.clone(),
                boundary: kind.name(),
                actions,
            });
        }
    }
    Ok(Json(entries))
}

fn requirement_name(requirement: patgate_core::Requirement) -> String {
    match requirement {
        patgate_core::Requirement::Member(role) => role.name().to_owned(),
        patgate_core::Requirement::SelfUser => "self".to_owned(),
        patgate_core::Requirement::Admin => "admin".to_owned(),
        patgate_core::Requirement::AnyUser => "any_user".to_owned(),
    }
}

/// `GET /api/v1/user/namespaces` query.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NamespaceQuery {
    /// Part of the full path, any case.
    pub search: Option<String>,
    /// `project` or `group`; both when absent.
    pub kind: Option<String>,
    /// At most this many (default 50, at most 500).
    pub limit: Option<usize>,
}

/// A project or group the caller can see.
#[derive(Debug, Serialize)]
pub struct NamespaceEntry {
    pub kind: &'static str,
    pub path: String,
    pub visibility: &'static str,
    /// The caller's role there (through ancestor groups too); absent for a non-member.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role: Option<&'static str>,
}

/// `GET /api/v1/user/namespaces`: the projects and groups the caller can see, members'
/// ones first, then by path; for choosing what a token reaches.
pub async fn namespaces(
    State(state): State<AppState>,
    headers: Credentials,
    Params(query): Params<NamespaceQuery>,
) -> Result<Json<Vec<NamespaceEntry>>, ApiError> {
    let permission = own_permission(&state, "read")?;
    let caller = authorize(&state, &headers, &permission, BoundaryRef::User(UserLocator::Caller), false, true)?;
    let limit = query.limit.unwrap_or(50);
    if limit == 0 || limit > 500 {
        return Err(ApiError::invalid("`limit` must be 1 to 500"));
    }
    let (projects, groups) = match query.kind.as_deref() {
        None | Some("") => (true, true),
        Some("project") => (true, false),
        Some("group") => (false, true),
        Some(other) => return Err(ApiError::invalid(format!("`kind`: `{other}` is not project or group"))),
    };
    let search = query.search.as_deref().map(str::to_lowercase).unwrap_or_default();
    let engine = state.engine();
    let directory = &engine.index.directory;
    let user = directory.user(caller.user).ok_or_else(|| ApiError::NotFound("you do not exist".to_owned()))?;
    let mut found: Vec<NamespaceEntry> = Vec::new();
    if groups {
        for group in directory.groups().filter(|group| group.full_path.contains(search.as_str())) {
            let role = directory.role_in_group(user, group.id);
            if directory.can_see_group_given(user, group, role) {
                found.push(NamespaceEntry {
                    kind: "group",
                    path: group.full_path.to_string(),
                    visibility: group.visibility.name(),
                    role: role.map(patgate_core::Role::name),
                });
            }
        }
    }
    if projects {
        for project in directory.projects().filter(|project| project.full_path.contains(search.as_str())) {
            let role = directory.role_in_project(user, project);
            if patgate_core::Directory::can_see_project_given(user, project, || role) {
                found.push(NamespaceEntry {
                    kind: "project",
                    path: project.full_path.to_string(),
                    visibility: project.visibility.name(),
                    role: role.map(patgate_core::Role::name),
                });
            }
        }
    }
    found.sort_by(|a, b| (a.role.is_none(), &a.path, a.kind).cmp(&(b.role.is_none(), &b.path, b.kind)));
    found.truncate(limit);
    Ok(Json(found))
}
