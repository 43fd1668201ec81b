//! Row ↔ domain mapping: names in the database, closed types in the domain.

use patgate_core::{
    Authority, Grant, GroupId, PermissionSet, ProjectId, Reach, ReachKind, Resources, Role, ScopeSet, TokenKind,
    UserState, Visibility, net::IpNet, scope::LegacyScope,
};

use crate::StoreError;

fn corrupt(what: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(what.to_string())
}

pub(crate) fn state_name(state: UserState) -> &'static str {
    state.name()
}

pub(crate) fn parse_state(text: &str) -> Result<UserState, StoreError> {
    text.parse().map_err(corrupt)
}

pub(crate) fn parse_visibility(text: &str) -> Result<Visibility, StoreError> {
    text.parse().map_err(corrupt)
}

pub(crate) fn parse_role(level: i64) -> Result<Role, StoreError> {
    u8::try_from(level).ok().and_then(Role::from_access_level).ok_or_else(|| corrupt(format!("role level {level}")))
}

pub(crate) fn parse_kind(text: &str) -> Result<TokenKind, StoreError> {
    match text {
        "legacy" => Ok(TokenKind::Legacy),
        "fine_grained" => Ok(TokenKind::FineGrained),
        other => Err(corrupt(format!("token kind `{other}`"))),
    }
}

pub(crate) fn scopes_text(scopes: ScopeSet) -> String {
    scopes.iter().map(LegacyScope::name).collect::<Vec<_>>().join(",")
}

pub(crate) fn parse_scopes(text: &str) -> Result<ScopeSet, StoreError> {
    text.split(',').filter(|name| !name.is_empty()).map(|name| name.parse::<LegacyScope>().map_err(corrupt)).collect()
}

pub(crate) fn ips_text(ips: &[IpNet]) -> String {
    ips.iter().map(ToString::to_string).collect::<Vec<_>>().join(",")
}

pub(crate) fn parse_ips(text: &str) -> Result<Vec<IpNet>, StoreError> {
    text.split(',').filter(|item| !item.is_empty()).map(|item| item.parse::<IpNet>().map_err(corrupt)).collect()
}

fn ids_text(ids: impl Iterator<Item = u64>) -> String {
    ids.map(|id| id.to_string()).collect::<Vec<_>>().join(",")
}

fn parse_ids(text: &str) -> Result<Vec<u64>, StoreError> {
    text.split(',').filter(|item| !item.is_empty()).map(|item| item.parse::<u64>().map_err(corrupt)).collect()
}

/// A grant as stored: reach name, selected ids, and `resource:action` names (never the
/// resource table's indices, which may change between versions).
pub(crate) struct GrantColumns {
    pub reach: &'static str,
    pub project_ids: String,
    pub group_ids: String,
    pub permissions: String,
}

pub(crate) fn grant_columns(resources: &Resources, grant: &Grant) -> GrantColumns {
    let (project_ids, group_ids) = match &grant.reach {
        Reach::Selected { projects, groups } => {
            (ids_text(projects.iter().map(|p| p.0)), ids_text(groups.iter().map(|g| g.0)))
        }
        _ => (String::new(), String::new()),
    };
    let permissions = grant
        .permissions
        .permissions()
        .map(|permission| resources.permission_name(permission))
        .collect::<Vec<_>>()
        .join(",");
    GrantColumns { reach: grant.reach.kind().name(), project_ids, group_ids, permissions }
}

pub(crate) fn parse_grant(
    resources: &Resources,
    reach: &str,
    project_ids: &str,
    group_ids: &str,
    permissions: &str,
) -> Result<Grant, StoreError> {
    let reach = match reach.parse::<ReachKind>().map_err(corrupt)? {
        ReachKind::PersonalProjects => Reach::PersonalProjects,
        ReachKind::AllMemberships => Reach::AllMemberships,
        ReachKind::User => Reach::User,
        ReachKind::Instance => Reach::Instance,
        ReachKind::Selected => Reach::Selected {
            projects: parse_ids(project_ids)?.into_iter().map(ProjectId).collect(),
            groups: parse_ids(group_ids)?.into_iter().map(GroupId).collect(),
        },
    };
    let mut entries = Vec::new();
    for name in permissions.split(',').filter(|name| !name.is_empty()) {
        let permission = resources.permission(name).map_err(corrupt)?;
        entries.push((permission.resource, patgate_core::ActionSet::of(permission.action)));
    }
    Ok(Grant { reach, permissions: PermissionSet::new(entries) })
}

pub(crate) fn authority(kind: TokenKind, scopes: &str, grants: Vec<Grant>) -> Result<Authority, StoreError> {
    match kind {
        TokenKind::Legacy => Ok(Authority::Legacy(parse_scopes(scopes)?)),
        TokenKind::FineGrained if grants.is_empty() => Err(corrupt("fine-grained token without grants")),
        TokenKind::FineGrained => Ok(Authority::FineGrained(grants.into_boxed_slice())),
    }
}
