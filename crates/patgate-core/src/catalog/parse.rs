//! Reading catalog files: one endpoint per line, checked against the resource table.

use crate::resource::{BoundaryKind, Permission, Resources};

use super::{BoundarySource, Entry, Method, Needs, PermissionList};

/// Most path parameters one template may have.
pub const MAX_PARAMS: usize = 8;

/// A problem in a catalog file, with where it is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}:{line}: {message}")]
pub struct CatalogError {
    pub file: String,
    pub line: usize,
    pub message: String,
}

pub(super) fn parse_file(
    resources: &Resources,
    file: &str,
    text: &str,
    entries: &mut Vec<Entry>,
) -> Result<(), CatalogError> {
    for (number, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let entry = parse_line(resources, file, number + 1, line).map_err(|message| CatalogError {
            file: file.to_owned(),
            line: number + 1,
            message,
        })?;
        entries.push(entry);
    }
    Ok(())
}

fn parse_line(resources: &Resources, file: &str, line: usize, text: &str) -> Result<Entry, String> {
    let columns: Vec<&str> = text.split_whitespace().collect();
    let [method, template, needs, boundary, flags @ ..] = columns.as_slice() else {
        return Err("expected `METHOD PATH PERMISSIONS BOUNDARY [FLAGS]`".to_owned());
    };
    let method = match *method {
        "GET" => Method::Get,
        "POST" => Method::Post,
        "PUT" => Method::Put,
        "PATCH" => Method::Patch,
        "DELETE" => Method::Delete,
        other => return Err(format!("unknown method `{other}`: expected GET, POST, PUT, PATCH or DELETE")),
    };
    let params = template_params(template)?;
    let boundary = parse_boundary(boundary, &params)?;
    let kind = match boundary {
        BoundarySource::Project(_) => BoundaryKind::Project,
        BoundarySource::Group(_) => BoundaryKind::Group,
        BoundarySource::User(_) | BoundarySource::SelfUser => BoundaryKind::User,
        BoundarySource::Instance => BoundaryKind::Instance,
    };
    let needs = if *needs == "always" {
        Needs::Always
    } else {
        let mut permissions = Vec::new();
        for text in needs.split(',') {
            let permission = resources.permission(text).map_err(|error| error.to_string())?;
            check_permission(resources, permission, kind)?;
            if !permissions.contains(&permission) {
                permissions.push(permission);
            }
        }
        Needs::Permissions(PermissionList::new(&permissions))
    };
    let mut own_token = false;
    for flag in flags {
        match *flag {
            "own_token" => own_token = true,
            other => return Err(format!("unknown flag `{other}`: expected own_token")),
        }
    }
    Ok(Entry {
        method,
        template: (*template).into(),
        params: params.into_iter().map(Into::into).collect(),
        needs,
        boundary,
        own_token,
        file: file.into(),
        line,
    })
}

fn check_permission(resources: &Resources, permission: Permission, kind: BoundaryKind) -> Result<(), String> {
    let name = resources.permission_name(permission);
    let row = resources.row(permission.resource, kind).ok_or_else(|| {
        format!("resource `{}` does not exist at boundary `{kind}`", resources.name(permission.resource))
    })?;
    if row.requirement(permission.action).is_none() {
        return Err(format!("`{name}` does not exist at boundary `{kind}` (the role matrix has `-`)"));
    }
    Ok(())
}

/// The parameter names of a template, checking its shape.
pub(super) fn template_params(template: &str) -> Result<Vec<&str>, String> {
    let Some(rest) = template.strip_prefix('/') else {
        return Err(format!("path `{template}` must start with `/`"));
    };
    if template.starts_with(super::API_PREFIX) {
        return Err(format!("path `{template}` must not include `{}`", super::API_PREFIX));
    }
    let mut params = Vec::new();
    let segments: Vec<&str> = rest.split('/').collect();
    for (position, segment) in segments.iter().copied().enumerate() {
        if let Some(name) = segment.strip_prefix('*') {
            // A catch-all takes the rest of the path, slashes included: only last.
            if position + 1 != segments.len() || !valid_param(name) {
                return Err(format!(
                    "path `{template}` may only end with a catch-all `*name`, not contain `{segment}`"
                ));
            }
            if params.contains(&name) {
                return Err(format!("path `{template}` repeats parameter `*{name}`"));
            }
            params.push(name);
            continue;
        }
        let (literal, param) = match segment.find(':') {
            Some(position) => (&segment[..position], Some(&segment[position + 1..])),
            None => (segment, None),
        };
        let literal_ok = literal.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
        if segment.is_empty() || !literal_ok || (param.is_some() && !(literal.is_empty() || literal.ends_with('.'))) {
            return Err(format!("path `{template}` has a malformed segment `{segment}`"));
        }
        if let Some(name) = param {
            if !valid_param(name) {
                return Err(format!("path `{template}` has a malformed parameter `:{name}`"));
            }
            if params.contains(&name) {
                return Err(format!("path `{template}` repeats parameter `:{name}`"));
            }
            params.push(name);
        }
    }
    if params.len() > MAX_PARAMS {
        return Err(format!("path `{template}` has more than {MAX_PARAMS} parameters"));
    }
    Ok(params)
}

fn valid_param(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

fn parse_boundary(text: &str, params: &[&str]) -> Result<BoundarySource, String> {
    if text == "instance" {
        return Ok(BoundarySource::Instance);
    }
    if text == "user(self)" {
        return Ok(BoundarySource::SelfUser);
    }
    let (kind, inner) = text.strip_suffix(')').and_then(|t| t.split_once('(')).ok_or_else(|| {
        format!("boundary `{text}`: expected project(:param), group(:param), user(:param), user(self) or instance")
    })?;
    let name = inner.strip_prefix(':').ok_or_else(|| format!("boundary `{text}` must name a path parameter"))?;
    let index = params
        .iter()
        .position(|param| *param == name)
        .ok_or_else(|| format!("boundary parameter `:{name}` is not in the path"))?;
    let index = u8::try_from(index).map_err(|_| "too many parameters".to_owned())?;
    match kind {
        "project" => Ok(BoundarySource::Project(index)),
        "group" => Ok(BoundarySource::Group(index)),
        "user" => Ok(BoundarySource::User(index)),
        other => Err(format!("unknown boundary kind `{other}`: expected project, group, user or instance")),
    }
}
