//! Overlapping the decision's cache misses.
//!
//! On a large index nearly every step of a decision is a cache miss, and each waits for the
//! one before: the token's table entry, its record and its owner's record; the boundary's
//! path entry and its record. What the decision reads beyond those records is held in them
//! (a user's memberships and username, a project's or group's path and ancestor chain, up
//! to a size that covers nearly all; longer ones spill to the heap), so a record's other
//! lines go out with its first. The token's grants (fine-grained tokens only) are the one
//! further level. The two chains do not depend on each other, and the first line of each
//! is known before the token's digest is (the token's table entry is found by its hint),
//! so the engine starts both before it computes the digest (the token's in
//! [`crate::Engine::present`], before the caller routes the request; the boundary's in
//! [`prefetch_boundary`]). The token's entry has usually arrived by then, so the engine also
//! starts the record and the owner's first line that the entry names (the first under the
//! token's hint, unconfirmed), and those arrive while the digest is computed. [`warm`] then
//! walks both chains side by side, one level at a time:
//! the loads of a level are issued together and wait together, and the last lines are
//! prefetched while the decision starts. Nothing here changes or decides anything; a record
//! that is not there simply ends its chain.

use std::hint::black_box;

use crate::{
    decision::{BoundaryRef, Operation, Request},
    directory::{Group, GroupId, Locator, Project, ProjectId},
    grant::{Grant, Reach},
    index::Index,
    token::{Authority, TokenAddress},
};

fn boundary<'r>(request: &Request<'r>) -> BoundaryRef<'r> {
    match request.operation {
        Operation::Covered { boundary, .. } => boundary,
        Operation::Always | Operation::NotCovered | Operation::AmbiguousPath => BoundaryRef::Instance,
    }
}

/// Starts loading the first line of the request's boundary; call it before the token's
/// digest is computed, so the load overlaps that work. (The token's table entry, found by
/// its hint, is on its way since [`crate::Engine::present`], which the caller calls before
/// it routes the request.)
pub(crate) fn prefetch_boundary(index: &Index, request: &Request<'_>) {
    index.directory.prefetch_boundary(boundary(request));
}

/// The boundary record a level has reached.
#[derive(Clone, Copy)]
enum Reached<'d> {
    Project(&'d Project),
    Group(&'d Group),
    /// A path whose table entry names this project or group id (confirmed by the decision).
    ProjectId(u64),
    GroupId(u64),
    Nothing,
}

/// Loads, level by level, the lines the decision of `request` under the token at `address`
/// will read.
pub(crate) fn warm(index: &Index, address: &TokenAddress, request: &Request<'_>) {
    let directory = &index.directory;

    // Level 1: the token's table entry; the boundary's record (by id) or path entry, both
    // on their way since `Engine::present` and `prefetch_boundary`. An unknown token stops
    // here (its entry carries 40 bits of the digest), before the directory is read: how long
    // its 401 takes must not depend on whether the boundary exists (only the boundary's
    // prefetch, which waits for nothing, has happened).
    let Some((slot, owner_id)) = index.first_slot(address) else { return };
    let reached = match boundary(request) {
        BoundaryRef::Project(Locator::Id(id)) => {
            directory.project(ProjectId(id)).map_or(Reached::Nothing, Reached::Project)
        }
        BoundaryRef::Project(Locator::Path(path)) => {
            directory.first_project_at(path).map_or(Reached::Nothing, Reached::ProjectId)
        }
        BoundaryRef::Group(Locator::Id(id)) => directory.group(GroupId(id)).map_or(Reached::Nothing, Reached::Group),
        BoundaryRef::Group(Locator::Path(path)) => {
            directory.first_group_at(path).map_or(Reached::Nothing, Reached::GroupId)
        }
        BoundaryRef::User(_) | BoundaryRef::Instance => Reached::Nothing,
    };

    // Level 2: the token's two lines (digest and record) and the first line of its owner's
    // record (whose id the table entry carries) go out as prefetches, which wait for
    // nothing, so they travel together; the boundary's record (by path) is read, with its
    // other line (path and chain) started.
    index.prefetch_stored(slot);
    if let Some(owner) = owner_id {
        directory.prefetch_user(owner);
    }
    let reached = match reached {
        Reached::ProjectId(id) => directory.project(ProjectId(id)).map_or(Reached::Nothing, Reached::Project),
        Reached::GroupId(id) => directory.group(GroupId(id)).map_or(Reached::Nothing, Reached::Group),
        other => other,
    };
    match reached {
        Reached::Project(project) => project.prefetch_lines(),
        Reached::Group(group) => group.prefetch_lines(),
        Reached::ProjectId(_) | Reached::GroupId(_) | Reached::Nothing => {}
    }

    // Level 3: the owner's record and the token's, read once their lines have arrived
    // together: the owner's other lines (memberships, or the heap when they did not fit);
    // the grants, then the selected lists too long to be held in them.
    if let Some(owner) = owner_id.and_then(|owner| directory.user(owner)) {
        owner.prefetch_lines();
    }
    let stored = index.stored_at(slot);
    let grants: &[Grant] = match stored.map(|(_, token)| &token.authority) {
        Some(Authority::FineGrained(grants)) => grants,
        Some(Authority::Legacy(_)) | None => &[],
    };
    for grant in grants {
        if let Reach::Selected { projects, groups } = &grant.reach {
            projects.prefetch();
            groups.prefetch();
        }
    }
    black_box(stored.map(|(digest, _)| digest.tag()));
}
