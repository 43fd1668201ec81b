//! The generated permission reference (`docs/permissions.md`) and coverage report.

use std::{collections::BTreeMap, fmt::Write};

use crate::resource::{Action, BoundaryKind, Resources};

use super::{BoundarySource, Catalog, Needs};

fn boundary_kind(source: BoundarySource) -> BoundaryKind {
    match source {
        BoundarySource::Project(_) => BoundaryKind::Project,
        BoundarySource::Group(_) => BoundaryKind::Group,
        BoundarySource::User(_) | BoundarySource::SelfUser => BoundaryKind::User,
        BoundarySource::Instance => BoundaryKind::Instance,
    }
}

fn title(kind: BoundaryKind) -> &'static str {
    match kind {
        BoundaryKind::Project => "Project",
        BoundaryKind::Group => "Group",
        BoundaryKind::User => "User",
        BoundaryKind::Instance => "Instance",
    }
}

/// `docs/permissions.md`: per resource and action, the endpoints it opens.
pub fn render_permissions_markdown(catalog: &Catalog, resources: &Resources) -> String {
    let mut out = String::new();
    let total = catalog.entries().len();
    let _ = writeln!(out, "# Fine-grained permissions and the endpoints they open\n");
    let _ = writeln!(
        out,
        "Generated from `catalog/` by `patgate catalog docs`; do not edit by hand (CI fails when this\n\
         file differs from what the command produces). {total} endpoints, all under `/api/v4`.\n"
    );
    let _ = writeln!(
        out,
        "An endpoint that lists two permissions needs both. A token's permissions never exceed its\n\
         owner's role; the role each permission needs is in `catalog/resources.txt`.\n"
    );
    let mut by_permission: BTreeMap<(usize, Action), Vec<usize>> = BTreeMap::new();
    let mut always = Vec::new();
    for (index, entry) in catalog.entries().iter().enumerate() {
        match &entry.needs {
            Needs::Always => always.push(index),
            Needs::Permissions(permissions) => {
                for permission in permissions.iter() {
                    by_permission.entry((permission.resource.index(), permission.action)).or_default().push(index);
                }
            }
        }
    }
    let _ = writeln!(out, "## Contents\n");
    for (id, def) in resources.iter() {
        if by_permission.keys().any(|(resource, _)| *resource == id.index()) {
            let _ = writeln!(out, "- [{}](#{})", def.label, anchor(&def.label));
        }
    }
    let _ = writeln!(out, "- [Always accessible](#always-accessible)\n");
    for (id, def) in resources.iter() {
        let actions: Vec<Action> =
            Action::ALL.into_iter().filter(|action| by_permission.contains_key(&(id.index(), *action))).collect();
        if actions.is_empty() {
            continue;
        }
        let _ = writeln!(out, "## {}\n", def.label);
        let _ = writeln!(out, "`{}`\n", def.name);
        let _ = writeln!(out, "| Permission | Boundary | Method | Path |");
        let _ = writeln!(out, "|---|---|---|---|");
        for action in actions {
            let mut rows: Vec<&super::Entry> =
                by_permission[&(id.index(), action)].iter().map(|index| &catalog.entries()[*index]).collect();
            rows.sort_by(|a, b| (a.template.as_ref(), a.method).cmp(&(b.template.as_ref(), b.method)));
            for entry in rows {
                let mut needs = format!("{}: {}", def.label, action.label());
                for other in entry.permissions() {
                    if other.resource != id || other.action != action {
                        let _ = write!(needs, " + {}", resources.permission_label(*other));
                    }
                }
                let _ = writeln!(
                    out,
                    "| {needs} | {} | `{}` | `/api/v4{}` |",
                    title(boundary_kind(entry.boundary)),
                    entry.method.name(),
                    entry.template
                );
            }
        }
        out.push('\n');
    }
    let _ = writeln!(out, "## Always accessible\n");
    let _ = writeln!(out, "Open to every valid token, legacy or fine-grained.\n");
    let _ = writeln!(out, "| Method | Path |");
    let _ = writeln!(out, "|---|---|");
    let mut rows: Vec<&super::Entry> = always.iter().map(|index| &catalog.entries()[*index]).collect();
    rows.sort_by(|a, b| (a.template.as_ref(), a.method).cmp(&(b.template.as_ref(), b.method)));
    for entry in rows {
        let _ = writeln!(out, "| `{}` | `/api/v4{}` |", entry.method.name(), entry.template);
    }
    out
}

fn anchor(label: &str) -> String {
    label
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            c if c.is_ascii_alphanumeric() || c == '-' || c == '_' => Some(c.to_ascii_lowercase()),
            _ => None,
        })
        .collect()
}

/// The coverage report: totals per resource and boundary, `always` endpoints, and the
/// (resource, action, boundary) triples that no endpoint uses.
pub fn render_coverage(catalog: &Catalog, resources: &Resources) -> String {
    let mut out = String::new();
    let entries = catalog.entries();
    let mut per_boundary: BTreeMap<BoundaryKind, usize> = BTreeMap::new();
    let mut per_resource: BTreeMap<usize, usize> = BTreeMap::new();
    let mut used = std::collections::HashSet::new();
    let mut always = 0;
    for entry in entries {
        let kind = boundary_kind(entry.boundary);
        *per_boundary.entry(kind).or_default() += 1;
        if matches!(entry.needs, Needs::Always) {
            always += 1;
        }
        for permission in entry.permissions() {
            *per_resource.entry(permission.resource.index()).or_default() += 1;
            used.insert((permission.resource, permission.action, kind));
        }
    }
    let _ = writeln!(out, "endpoints: {} (method + path pairs under /api/v4)", entries.len());
    let _ = writeln!(out, "mapped to permissions: {}", entries.len() - always);
    let _ = writeln!(out, "always accessible: {always}");
    let _ = writeln!(out, "without a mapping: 0 (the catalog format requires one)");
    let _ = writeln!(out, "\nper boundary:");
    for (kind, count) in &per_boundary {
        let _ = writeln!(out, "  {:<10} {count}", kind.name());
    }
    let _ = writeln!(out, "\nper resource (endpoints naming it):");
    for (id, def) in resources.iter() {
        let count = per_resource.get(&id.index()).copied().unwrap_or(0);
        let _ = writeln!(out, "  {:<24} {count}", def.name);
    }
    let mut unused = Vec::new();
    for (id, def) in resources.iter() {
        for kind in def.boundaries().collect::<Vec<_>>() {
            for action in Action::ALL {
                let exists = def.row(kind).and_then(|row| row.requirement(action)).is_some();
                if exists && !used.contains(&(id, action, kind)) {
                    unused.push(format!("{}:{} at {}", def.name, action, kind.name()));
                }
            }
        }
    }
    let _ = writeln!(out, "\npermissions no endpoint uses ({}):", unused.len());
    for line in unused {
        let _ = writeln!(out, "  {line}");
    }
    out
}
