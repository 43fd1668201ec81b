//! The endpoint catalog against GitLab's REST API documentation: concrete requests as
//! clients send them, with the permissions and boundary each one needs; every template
//! matches its own concrete paths back; matching never panics; the generated permission
//! reference is current; and the catalog covers the API.

use std::sync::LazyLock;

use patgate_core::{
    BoundaryRef, Locator, Operation, Resources, UserLocator,
    catalog::{Catalog, DecodeBuffer, Entry, ambiguous_path, render_permissions_markdown},
};
use proptest::prelude::*;

static BUILTIN: LazyLock<Result<(Resources, Catalog), String>> = LazyLock::new(|| {
    let resources = Resources::builtin().map_err(|error| error.to_string())?;
    let catalog = Catalog::builtin(&resources).map_err(|error| error.to_string())?;
    Ok((resources, catalog))
});

/// The resource table and the builtin catalog, loaded once.
fn builtin() -> &'static (Resources, Catalog) {
    // An error here names the catalog file and line that do not load.
    BUILTIN.as_ref().unwrap()
}

/// What a request should come to.
#[derive(Clone, Copy, Debug)]
enum Expect {
    /// Every one of these comma-separated permissions, at this boundary.
    Needs(&'static str, BoundaryRef<'static>),
    Always,
    NotCovered,
    /// A `.`, `..` or empty segment: refused to every token (`ambiguous_path`).
    Ambiguous,
}

/// One request as a client sends it, and what the catalog should make of it.
#[derive(Clone, Copy, Debug)]
struct Case {
    method: &'static str,
    path: &'static str,
    expect: Expect,
    /// The endpoint acts on the presenting token itself.
    own_token: bool,
}

impl Case {
    /// Marks the case as acting on the presenting token.
    const fn own(self) -> Case {
        Case { own_token: true, ..self }
    }
}

const fn needs(method: &'static str, path: &'static str, permissions: &'static str, at: BoundaryRef<'static>) -> Case {
    Case { method, path, expect: Expect::Needs(permissions, at), own_token: false }
}

const fn always(method: &'static str, path: &'static str) -> Case {
    Case { method, path, expect: Expect::Always, own_token: false }
}

const fn not_covered(method: &'static str, path: &'static str) -> Case {
    Case { method, path, expect: Expect::NotCovered, own_token: false }
}

const fn ambiguous(method: &'static str, path: &'static str) -> Case {
    Case { method, path, expect: Expect::Ambiguous, own_token: false }
}

const fn project_id(id: u64) -> BoundaryRef<'static> {
    BoundaryRef::Project(Locator::Id(id))
}

const fn project(path: &'static str) -> BoundaryRef<'static> {
    BoundaryRef::Project(Locator::Path(path))
}

const fn group_id(id: u64) -> BoundaryRef<'static> {
    BoundaryRef::Group(Locator::Id(id))
}

const fn group(path: &'static str) -> BoundaryRef<'static> {
    BoundaryRef::Group(Locator::Path(path))
}

const fn user_id(id: u64) -> BoundaryRef<'static> {
    BoundaryRef::User(UserLocator::Id(id))
}

const fn username(name: &'static str) -> BoundaryRef<'static> {
    BoundaryRef::User(UserLocator::Username(name))
}

/// Project 17.
const P17: BoundaryRef<'static> = project_id(17);
/// Project `acme/platform/api`, sent as `acme%2Fplatform%2Fapi`.
const API: BoundaryRef<'static> = project("acme/platform/api");
/// Group 42.
const G42: BoundaryRef<'static> = group_id(42);
/// Group `acme`.
const ACME: BoundaryRef<'static> = group("acme");
/// Group `acme/platform`, sent as `acme%2Fplatform`.
const PLATFORM: BoundaryRef<'static> = group("acme/platform");
/// The token's owner.
const ME: BoundaryRef<'static> = BoundaryRef::User(UserLocator::Caller);
const INSTANCE: BoundaryRef<'static> = BoundaryRef::Instance;

/// Requests written from docs.gitlab.com/api (doc/api/*.md), with the mapping conventions
/// of `catalog/endpoints/FORMAT.md`: GET reads, POST creating a thing creates, PUT/PATCH
/// and state-changing POST actions update the most specific resource, DELETE deletes.
#[rustfmt::skip]
const CASES: &[Case] = &[
    // ── Projects (projects.md) ────────────────────────────────────────────────────────────
    needs("GET",    "/api/v4/projects?membership=true&per_page=100",            "project:read",   ME),
    needs("HEAD",   "/api/v4/projects",                                         "project:read",   ME),
    needs("POST",   "/api/v4/projects",                                         "project:create", ME),
    needs("GET",    "/api/v4/projects/17",                                      "project:read",   P17),
    needs("GET",    "/api/v4/projects/acme%2Fplatform%2Fapi?statistics=true",   "project:read",   API),
    needs("HEAD",   "/api/v4/projects/acme%2fplatform%2fapi",                   "project:read",   API),
    needs("PUT",    "/api/v4/projects/17",                                      "project:update", P17),
    needs("DELETE", "/api/v4/projects/acme%2Fplatform%2Fapi",                   "project:delete", API),
    needs("POST",   "/api/v4/projects/17/archive",                              "project:update", P17),
    needs("POST",   "/api/v4/projects/acme%2Fplatform%2Fapi/unarchive",         "project:update", API),
    needs("GET",    "/api/v4/projects/17/forks?owned=true",                     "project:read",   P17),

    // ── Groups (groups.md) ────────────────────────────────────────────────────────────────
    needs("GET",    "/api/v4/groups?all_available=true&per_page=100",           "group:read",     ME),
    needs("POST",   "/api/v4/groups",                                           "group:create",   ME),
    needs("GET",    "/api/v4/groups/acme",                                      "group:read",     ACME),
    needs("GET",    "/api/v4/groups/acme%2Fplatform?with_projects=false",       "group:read",     PLATFORM),
    needs("PUT",    "/api/v4/groups/42",                                        "group:update",   G42),
    needs("DELETE", "/api/v4/groups/42",                                        "group:delete",   G42),
    needs("GET",    "/api/v4/groups/42/subgroups",                              "group:read",     G42),
    needs("GET",    "/api/v4/groups/acme/descendant_groups",                    "group:read",     ACME),
    needs("GET",    "/api/v4/groups/acme%2Fplatform/projects?include_subgroups=true", "project:read", PLATFORM),
    needs("GET",    "/api/v4/groups/42/issues?state=opened",                    "issue:read",     G42),
    needs("GET",    "/api/v4/groups/acme/merge_requests?state=merged",          "merge_request:read", ACME),

    // ── The caller (users.md: /user) ──────────────────────────────────────────────────────
    needs("GET",    "/api/v4/user",                                             "user:read",      ME),
    needs("GET",    "/api/v4/user/status",                                      "user:read",      ME),
    needs("PUT",    "/api/v4/user/status",                                      "user:update",    ME),
    needs("GET",    "/api/v4/user/preferences",                                 "user:read",      ME),
    needs("PUT",    "/api/v4/user/preferences",                                 "user:update",    ME),
    needs("GET",    "/api/v4/user/keys",                                        "ssh_key:read",   ME),
    needs("POST",   "/api/v4/user/keys",                                        "ssh_key:create", ME),
    needs("GET",    "/api/v4/user/keys/7",                                      "ssh_key:read",   ME),
    needs("DELETE", "/api/v4/user/keys/7",                                      "ssh_key:delete", ME),
    needs("GET",    "/api/v4/user/gpg_keys",                                    "gpg_key:read",   ME),
    needs("POST",   "/api/v4/user/gpg_keys",                                    "gpg_key:create", ME),
    needs("GET",    "/api/v4/user/gpg_keys/3",                                  "gpg_key:read",   ME),
    needs("DELETE", "/api/v4/user/gpg_keys/3",                                  "gpg_key:delete", ME),
    needs("GET",    "/api/v4/user/emails",                                      "email:read",     ME),
    needs("POST",   "/api/v4/user/emails",                                      "email:create",   ME),
    needs("GET",    "/api/v4/user/emails/5",                                    "email:read",     ME),
    needs("DELETE", "/api/v4/user/emails/5",                                    "email:delete",   ME),

    // ── Other users (users.md) ────────────────────────────────────────────────────────────
    needs("GET",    "/api/v4/users/42",                                         "user:read",      user_id(42)),
    needs("GET",    "/api/v4/users/alice/status",                               "user:read",      username("alice")),
    needs("GET",    "/api/v4/users/alice/projects?visibility=public",           "project:read",   username("alice")),
    needs("GET",    "/api/v4/users/42/starred_projects",                        "project:read",   user_id(42)),
    needs("GET",    "/api/v4/users/42/keys",                                    "ssh_key:read",   user_id(42)),
    needs("GET",    "/api/v4/users/alice/keys",                                 "ssh_key:read",   username("alice")),
    needs("GET",    "/api/v4/users/42/keys/7",                                  "ssh_key:read",   user_id(42)),
    needs("GET",    "/api/v4/users/42/gpg_keys",                                "gpg_key:read",   user_id(42)),
    needs("GET",    "/api/v4/users/alice/events?action=pushed",                 "event:read",     username("alice")),

    // ── User administration (users.md, admin only) ───────────────────────────────────────
    needs("POST",   "/api/v4/users",                                            "admin_user:create", INSTANCE),
    needs("PUT",    "/api/v4/users/42",                                         "admin_user:update", INSTANCE),
    needs("POST",   "/api/v4/users/42/block",                                   "admin_user:update", INSTANCE),
    needs("POST",   "/api/v4/users/42/unblock",                                 "admin_user:update", INSTANCE),
    needs("POST",   "/api/v4/users/42/deactivate",                              "admin_user:update", INSTANCE),
    needs("DELETE", "/api/v4/users/42?hard_delete=true",                        "admin_user:delete", INSTANCE),

    // ── Personal access tokens (personal_access_tokens.md, user_tokens.md) ─────────────────
    needs("GET",    "/api/v4/personal_access_tokens?state=active",              "personal_access_token:read",   ME),
    always("GET",   "/api/v4/personal_access_tokens/self").own(),
    needs("GET",    "/api/v4/personal_access_tokens/123",                       "personal_access_token:read",   ME),
    needs("DELETE", "/api/v4/personal_access_tokens/123",                       "personal_access_token:delete", ME),
    needs("POST",   "/api/v4/personal_access_tokens/123/rotate",                "personal_access_token:update", ME),
    needs("POST",   "/api/v4/personal_access_tokens/self/rotate?expires_at=2026-12-31", "personal_access_token:update", ME).own(),
    needs("POST",   "/api/v4/user/personal_access_tokens",                      "personal_access_token:create", ME),

    // ── Search, events, to-do items, notification settings, personal snippets ─────────────
    needs("GET",    "/api/v4/search?scope=projects&search=flight",              "search:read",    ME),
    needs("GET",    "/api/v4/events?action=pushed&after=2024-01-01",            "event:read",     ME),
    needs("GET",    "/api/v4/projects/17/events?target_type=issue",             "event:read",     P17),
    needs("GET",    "/api/v4/todos?state=pending",                              "todo:read",      ME),
    needs("POST",   "/api/v4/todos/102/mark_as_done",                           "todo:update",    ME),
    needs("POST",   "/api/v4/todos/mark_as_done",                               "todo:update",    ME),
    needs("GET",    "/api/v4/notification_settings",                            "notification_setting:read",   ME),
    needs("PUT",    "/api/v4/notification_settings?level=watch",                "notification_setting:update", ME),
    needs("GET",    "/api/v4/snippets",                                         "snippet:read",   ME),
    needs("POST",   "/api/v4/snippets",                                         "snippet:create", ME),

    // ── Issues (issues.md, issue_links.md, time tracking) ────────────────────────────────
    needs("GET",    "/api/v4/projects/17/issues?state=opened&labels=bug&per_page=100", "issue:read", P17),
    needs("GET",    "/api/v4/projects/acme%2Fplatform%2Fapi/issues/42",         "issue:read",     API),
    needs("POST",   "/api/v4/projects/17/issues",                               "issue:create",   P17),
    needs("PUT",    "/api/v4/projects/17/issues/42",                            "issue:update",   P17),
    needs("DELETE", "/api/v4/projects/17/issues/42",                            "issue:delete",   P17),
    needs("POST",   "/api/v4/projects/17/issues/42/move",                       "issue:update",   P17),
    needs("POST",   "/api/v4/projects/17/issues/42/subscribe",                  "issue:update",   P17),
    needs("POST",   "/api/v4/projects/17/issues/42/unsubscribe",                "issue:update",   P17),
    needs("GET",    "/api/v4/projects/17/issues/42/participants",               "issue:read",     P17),
    needs("POST",   "/api/v4/projects/17/issues/42/time_estimate?duration=3h30m", "issue:update", P17),
    needs("POST",   "/api/v4/projects/17/issues/42/reset_time_estimate",        "issue:update",   P17),
    needs("POST",   "/api/v4/projects/17/issues/42/add_spent_time?duration=1h", "issue:update",   P17),
    needs("POST",   "/api/v4/projects/17/issues/42/reset_spent_time",           "issue:update",   P17),
    needs("GET",    "/api/v4/projects/17/issues/42/time_stats",                 "issue:read",     P17),
    needs("GET",    "/api/v4/projects/17/issues/42/links",                      "issue:read",     P17),
    needs("POST",   "/api/v4/projects/17/issues/42/links?target_project_id=18&target_issue_iid=3", "issue:update", P17),
    needs("DELETE", "/api/v4/projects/17/issues/42/links/83",                   "issue:update",   P17),

    // ── Notes and discussions on issues (notes.md, discussions.md) ───────────────────────
    needs("GET",    "/api/v4/projects/17/issues/42/notes?sort=asc&order_by=updated_at", "note:read", P17),
    needs("POST",   "/api/v4/projects/17/issues/42/notes",                      "note:create",    P17),
    needs("GET",    "/api/v4/projects/17/issues/42/notes/1201",                 "note:read",      P17),
    needs("PUT",    "/api/v4/projects/17/issues/42/notes/1201",                 "note:update",    P17),
    needs("DELETE", "/api/v4/projects/17/issues/42/notes/1201",                 "note:delete",    P17),
    needs("GET",    "/api/v4/projects/17/issues/42/discussions",                "note:read",      P17),
    needs("POST",   "/api/v4/projects/17/issues/42/discussions",                "note:create",    P17),
    needs("POST",   "/api/v4/projects/17/issues/42/discussions/6a9c1750b37d513a43987b574953fceb50b03ce7/notes", "note:create", P17),

    // ── Emoji reactions (award_emoji.md) ──────────────────────────────────────────────────
    needs("GET",    "/api/v4/projects/17/issues/42/award_emoji",                "award_emoji:read",   P17),
    needs("POST",   "/api/v4/projects/17/issues/42/award_emoji?name=thumbsup",  "award_emoji:create", P17),
    needs("DELETE", "/api/v4/projects/17/issues/42/award_emoji/344",            "award_emoji:delete", P17),
    needs("POST",   "/api/v4/projects/17/issues/42/notes/1201/award_emoji",     "award_emoji:create", P17),
    needs("POST",   "/api/v4/projects/17/merge_requests/7/award_emoji",         "award_emoji:create", P17),

    // ── Merge requests (merge_requests.md, merge_request_approvals.md) ──────────────────
    needs("GET",    "/api/v4/projects/17/merge_requests?state=opened&target_branch=main", "merge_request:read", P17),
    needs("GET",    "/api/v4/projects/acme%2Fplatform%2Fapi/merge_requests/7",  "merge_request:read",   API),
    needs("POST",   "/api/v4/projects/17/merge_requests",                       "merge_request:create", P17),
    needs("PUT",    "/api/v4/projects/acme%2Fplatform%2Fapi/merge_requests/7",  "merge_request:update", API),
    needs("DELETE", "/api/v4/projects/17/merge_requests/7",                     "merge_request:delete", P17),
    needs("PUT",    "/api/v4/projects/17/merge_requests/7/merge?squash=true",   "merge_request:update", P17),
    needs("PUT",    "/api/v4/projects/17/merge_requests/7/rebase",              "merge_request:update", P17),
    needs("POST",   "/api/v4/projects/17/merge_requests/7/cancel_merge_when_pipeline_succeeds", "merge_request:update", P17),
    needs("POST",   "/api/v4/projects/17/merge_requests/7/approve",             "merge_request:update", P17),
    needs("POST",   "/api/v4/projects/17/merge_requests/7/unapprove",           "merge_request:update", P17),
    needs("GET",    "/api/v4/projects/17/merge_requests/7/approvals",           "merge_request:read",   P17),
    needs("GET",    "/api/v4/projects/17/merge_requests/7/approval_state",      "merge_request:read",   P17),
    needs("GET",    "/api/v4/projects/17/merge_requests/7/diffs?page=2&per_page=20", "merge_request:read", P17),
    needs("GET",    "/api/v4/projects/17/merge_requests/7/changes",             "merge_request:read",   P17),
    needs("GET",    "/api/v4/projects/17/merge_requests/7/commits",             "merge_request:read",   P17),
    needs("GET",    "/api/v4/projects/17/merge_requests/7/participants",        "merge_request:read",   P17),
    needs("POST",   "/api/v4/projects/17/merge_requests/7/subscribe",           "merge_request:update", P17),
    needs("POST",   "/api/v4/projects/17/merge_requests/7/time_estimate?duration=1d", "merge_request:update", P17),
    needs("GET",    "/api/v4/projects/17/merge_requests/7/time_stats",          "merge_request:read",   P17),

    // ── Notes and discussions on merge requests ──────────────────────────────────────────
    needs("GET",    "/api/v4/projects/17/merge_requests/7/notes",               "note:read",      P17),
    needs("POST",   "/api/v4/projects/17/merge_requests/7/notes",               "note:create",    P17),
    needs("GET",    "/api/v4/projects/17/merge_requests/7/discussions",         "note:read",      P17),
    needs("POST",   "/api/v4/projects/17/merge_requests/7/discussions",         "note:create",    P17),
    needs("PUT",    "/api/v4/projects/17/merge_requests/7/discussions/6a9c1750b37d513a43987b574953fceb50b03ce7?resolved=true", "note:update", P17),
    needs("POST",   "/api/v4/projects/17/merge_requests/7/discussions/6a9c1750b37d513a43987b574953fceb50b03ce7/notes", "note:create", P17),
    needs("PUT",    "/api/v4/projects/17/merge_requests/7/discussions/6a9c1750b37d513a43987b574953fceb50b03ce7/notes/1202", "note:update", P17),
    needs("DELETE", "/api/v4/projects/17/merge_requests/7/discussions/6a9c1750b37d513a43987b574953fceb50b03ce7/notes/1202", "note:delete", P17),

    // ── Pipelines (pipelines.md) ─────────────────────────────────────────────────────────
    needs("GET",    "/api/v4/projects/17/pipelines?ref=main&status=failed",     "pipeline:read",   P17),
    needs("GET",    "/api/v4/projects/17/pipelines/4711",                       "pipeline:read",   P17),
    needs("GET",    "/api/v4/projects/17/pipelines/latest?ref=main",            "pipeline:read",   P17),
    needs("POST",   "/api/v4/projects/17/pipeline?ref=main",                    "pipeline:create", P17),
    needs("POST",   "/api/v4/projects/17/pipelines/4711/retry",                 "pipeline:update", P17),
    needs("POST",   "/api/v4/projects/acme%2Fplatform%2Fapi/pipelines/4711/cancel", "pipeline:update", API),
    needs("DELETE", "/api/v4/projects/17/pipelines/4711",                       "pipeline:delete", P17),
    needs("GET",    "/api/v4/projects/17/pipelines/4711/test_report",           "pipeline:read",   P17),

    // ── Pipeline schedules (pipeline_schedules.md) ────────────────────────────────────────
    needs("GET",    "/api/v4/projects/17/pipeline_schedules?scope=active",      "pipeline_schedule:read",   P17),
    needs("GET",    "/api/v4/projects/17/pipeline_schedules/13",                "pipeline_schedule:read",   P17),
    needs("POST",   "/api/v4/projects/17/pipeline_schedules",                   "pipeline_schedule:create", P17),
    needs("PUT",    "/api/v4/projects/17/pipeline_schedules/13",                "pipeline_schedule:update", P17),
    needs("POST",   "/api/v4/projects/17/pipeline_schedules/13/take_ownership", "pipeline_schedule:update", P17),
    needs("POST",   "/api/v4/projects/17/pipeline_schedules/13/play",           "pipeline_schedule:update", P17),
    needs("DELETE", "/api/v4/projects/17/pipeline_schedules/13",                "pipeline_schedule:delete", P17),

    // ── Pipeline trigger tokens (pipeline_triggers.md) ────────────────────────────────────
    needs("GET",    "/api/v4/projects/17/triggers",                             "trigger:read",   P17),
    needs("POST",   "/api/v4/projects/17/triggers",                             "trigger:create", P17),
    needs("PUT",    "/api/v4/projects/17/triggers/10",                          "trigger:update", P17),
    needs("DELETE", "/api/v4/projects/17/triggers/10",                          "trigger:delete", P17),

    // ── Jobs and artifacts (jobs.md, job_artifacts.md) ───────────────────────────────────
    needs("GET",    "/api/v4/projects/17/jobs?scope[]=failed&scope[]=canceled", "job:read",       P17),
    needs("GET",    "/api/v4/projects/17/jobs/8812",                            "job:read",       P17),
    needs("GET",    "/api/v4/projects/17/jobs/8812/trace",                      "job:read",       P17),
    needs("GET",    "/api/v4/projects/17/pipelines/4711/jobs?include_retried=true", "job:read",   P17),
    needs("POST",   "/api/v4/projects/17/jobs/8812/cancel",                     "job:update",     P17),
    needs("POST",   "/api/v4/projects/17/jobs/8812/retry",                      "job:update",     P17),
    needs("POST",   "/api/v4/projects/17/jobs/8812/play",                       "job:update",     P17),
    needs("POST",   "/api/v4/projects/17/jobs/8812/erase",                      "job:delete",     P17),
    needs("GET",    "/api/v4/projects/17/jobs/8812/artifacts",                  "job_artifact:read",   P17),
    needs("GET",    "/api/v4/projects/acme%2Fplatform%2Fapi/jobs/artifacts/main/download?job=build", "job_artifact:read", API),
    needs("DELETE", "/api/v4/projects/17/jobs/8812/artifacts",                  "job_artifact:delete", P17),
    needs("DELETE", "/api/v4/projects/17/artifacts",                            "job_artifact:delete", P17),
    // Cross-project lists (issues.md#list-issues, merge_requests.md#list-merge-requests):
    // only the caller's user reach opens them.
    needs("GET",    "/api/v4/issues?state=opened&scope=assigned_to_me",          "issue:read",          ME),
    needs("GET",    "/api/v4/issues_statistics",                                "issue:read",          ME),
    needs("GET",    "/api/v4/merge_requests?scope=created_by_me",               "merge_request:read",  ME),
    // GET /projects/:id/jobs/:job_id/artifacts/*artifact_path: the path keeps its slashes.
    needs("GET",    "/api/v4/projects/17/jobs/8812/artifacts/dist/app/main.js", "job_artifact:read",   P17),
    needs("GET",    "/api/v4/projects/17/jobs/artifacts/main/raw/coverage/index.html?job=test", "job_artifact:read", P17),
    needs("PUT",    "/api/v4/projects/17/packages/maven/com/acme/app/1.0/app-1.0.jar", "package_registry:create", P17),
    needs("GET",    "/api/v4/projects/17/releases/v1.0/downloads/bin/linux/app.tar.gz", "release:read", P17),

    // ── CI/CD variables (project_level_variables.md, group_level_variables.md,
    //    instance_level_ci_variables.md) ──────────────────────────────────────────────────
    needs("GET",    "/api/v4/projects/17/variables",                            "ci_variable:read",   P17),
    needs("GET",    "/api/v4/projects/17/variables/DATABASE_URL?filter[environment_scope]=production", "ci_variable:read", P17),
    needs("POST",   "/api/v4/projects/17/variables",                            "ci_variable:create", P17),
    needs("PUT",    "/api/v4/projects/acme%2Fplatform%2Fapi/variables/DATABASE_URL", "ci_variable:update", API),
    needs("DELETE", "/api/v4/projects/17/variables/DATABASE_URL",               "ci_variable:delete", P17),
    needs("GET",    "/api/v4/groups/acme%2Fplatform/variables",                 "ci_variable:read",   PLATFORM),
    needs("POST",   "/api/v4/groups/42/variables",                              "ci_variable:create", G42),
    needs("PUT",    "/api/v4/groups/42/variables/NPM_TOKEN",                    "ci_variable:update", G42),
    needs("DELETE", "/api/v4/groups/42/variables/NPM_TOKEN",                    "ci_variable:delete", G42),
    needs("GET",    "/api/v4/admin/ci/variables",                               "ci_variable:read",   INSTANCE),
    needs("POST",   "/api/v4/admin/ci/variables",                               "ci_variable:create", INSTANCE),
    needs("PUT",    "/api/v4/admin/ci/variables/SHARED_CACHE_KEY",              "ci_variable:update", INSTANCE),
    needs("DELETE", "/api/v4/admin/ci/variables/SHARED_CACHE_KEY",              "ci_variable:delete", INSTANCE),

    // ── Environments (environments.md) ───────────────────────────────────────────────────
    needs("GET",    "/api/v4/projects/17/environments?states=available",        "environment:read",   P17),
    needs("GET",    "/api/v4/projects/17/environments/3",                       "environment:read",   P17),
    needs("POST",   "/api/v4/projects/17/environments",                         "environment:create", P17),
    needs("PUT",    "/api/v4/projects/17/environments/3",                       "environment:update", P17),
    needs("POST",   "/api/v4/projects/17/environments/3/stop",                  "environment:update", P17),
    needs("POST",   "/api/v4/projects/17/environments/stop_stale?before=2024-01-01T00:00:00Z", "environment:update", P17),
    needs("DELETE", "/api/v4/projects/17/environments/3",                       "environment:delete", P17),
    needs("DELETE", "/api/v4/projects/17/environments/review_apps?dry_run=false", "environment:delete", P17),

    // ── Deployments (deployments.md) ─────────────────────────────────────────────────────
    needs("GET",    "/api/v4/projects/17/deployments?environment=production&status=success", "deployment:read", P17),
    needs("GET",    "/api/v4/projects/17/deployments/91",                       "deployment:read",   P17),
    needs("POST",   "/api/v4/projects/17/deployments",                          "deployment:create", P17),
    needs("PUT",    "/api/v4/projects/17/deployments/91",                       "deployment:update", P17),
    needs("POST",   "/api/v4/projects/17/deployments/91/approval",              "deployment:update", P17),
    needs("DELETE", "/api/v4/projects/17/deployments/91",                       "deployment:delete", P17),
    needs("GET",    "/api/v4/projects/17/deployments/91/merge_requests",        "deployment:read,merge_request:read", P17),

    // ── Releases and release links (releases/index.md, releases/links.md) ─────────────────
    needs("GET",    "/api/v4/projects/17/releases?order_by=released_at",        "release:read",   P17),
    needs("GET",    "/api/v4/projects/17/releases/v1.2.0",                      "release:read",   P17),
    needs("GET",    "/api/v4/projects/17/releases/permalink/latest",            "release:read",   P17),
    needs("POST",   "/api/v4/projects/17/releases",                             "release:create", P17),
    needs("PUT",    "/api/v4/projects/17/releases/v1.2.0",                      "release:update", P17),
    needs("DELETE", "/api/v4/projects/17/releases/v1.2.0",                      "release:delete", P17),
    needs("GET",    "/api/v4/projects/17/releases/v1.2.0/assets/links",         "release:read",   P17),
    needs("POST",   "/api/v4/projects/17/releases/v1.2.0/assets/links",         "release:create", P17),
    needs("PUT",    "/api/v4/projects/17/releases/v1.2.0/assets/links/1",       "release:update", P17),
    needs("DELETE", "/api/v4/projects/17/releases/v1.2.0/assets/links/1",       "release:delete", P17),

    // ── Packages and the generic package registry (packages.md, packages/generic) ──────
    needs("GET",    "/api/v4/projects/17/packages?package_type=npm&sort=desc",  "package_registry:read",   P17),
    needs("GET",    "/api/v4/projects/17/packages/31",                          "package_registry:read",   P17),
    needs("GET",    "/api/v4/projects/17/packages/31/package_files",            "package_registry:read",   P17),
    needs("DELETE", "/api/v4/projects/17/packages/31",                          "package_registry:delete", P17),
    needs("DELETE", "/api/v4/projects/17/packages/31/package_files/102",        "package_registry:delete", P17),
    needs("GET",    "/api/v4/groups/acme/packages?exclude_subgroups=false",     "package_registry:read",   ACME),
    needs("PUT",    "/api/v4/projects/17/packages/generic/my-cli/1.2.3/my-cli-linux-amd64?status=default", "package_registry:create", P17),
    needs("GET",    "/api/v4/projects/acme%2Fplatform%2Fapi/packages/generic/my-cli/1.2.3/my-cli-linux-amd64", "package_registry:read", API),
    needs("HEAD",   "/api/v4/projects/17/packages/generic/my-cli/1.2.3/checksums.txt", "package_registry:read", P17),

    // ── Container registry (container_registry.md) ───────────────────────────────────────
    needs("GET",    "/api/v4/projects/17/registry/repositories?tags=true",      "container_registry:read",   P17),
    needs("DELETE", "/api/v4/projects/17/registry/repositories/2",              "container_registry:delete", P17),
    needs("GET",    "/api/v4/projects/17/registry/repositories/2/tags",         "container_registry:read",   P17),
    needs("GET",    "/api/v4/projects/17/registry/repositories/2/tags/v10.0.0", "container_registry:read",   P17),
    needs("DELETE", "/api/v4/projects/17/registry/repositories/2/tags/v10.0.0", "container_registry:delete", P17),
    needs("DELETE", "/api/v4/projects/17/registry/repositories/2/tags?name_regex_delete=.*&keep_n=5", "container_registry:delete", P17),
    needs("GET",    "/api/v4/groups/acme/registry/repositories",                "container_registry:read",   ACME),

    // ── Repository: files, tree, blobs, archive, compare (repository_files.md,
    //    repositories.md) ─────────────────────────────────────────────────────────────────
    needs("GET",    "/api/v4/projects/acme%2Fplatform%2Fapi/repository/files/src%2Fmain.rs?ref=main", "repository:read", API),
    needs("HEAD",   "/api/v4/projects/17/repository/files/src%2Fmain.rs?ref=main", "repository:read", P17),
    needs("GET",    "/api/v4/projects/17/repository/files/src%2Fmain.rs/raw?ref=main&lfs=true", "repository:read", P17),
    needs("GET",    "/api/v4/projects/17/repository/files/README.md/blame?ref=main", "repository:read", P17),
    needs("POST",   "/api/v4/projects/17/repository/files/docs%2Fguide%2Fsetup.md", "repository:create", P17),
    needs("PUT",    "/api/v4/projects/17/repository/files/docs%2Fguide%2Fsetup.md", "repository:update", P17),
    needs("DELETE", "/api/v4/projects/17/repository/files/docs%2Fguide%2Fsetup.md", "repository:delete", P17),
    needs("GET",    "/api/v4/projects/17/repository/tree?path=src&ref=main&recursive=true&per_page=100", "repository:read", P17),
    needs("GET",    "/api/v4/projects/17/repository/blobs/79f7bbd25901e8334750839545a9bd021f0e4c83", "repository:read", P17),
    needs("GET",    "/api/v4/projects/17/repository/blobs/79f7bbd25901e8334750839545a9bd021f0e4c83/raw", "repository:read", P17),
    needs("GET",    "/api/v4/projects/17/repository/archive?sha=main",           "repository:read", P17),
    needs("GET",    "/api/v4/projects/17/repository/archive.zip?sha=v1.2.0",     "repository:read", P17),
    needs("GET",    "/api/v4/projects/acme%2Fplatform%2Fapi/repository/archive.tar.gz", "repository:read", API),
    needs("GET",    "/api/v4/projects/17/repository/compare?from=main&to=feature%2Flogin&straight=true", "repository:read", P17),
    needs("GET",    "/api/v4/projects/17/repository/contributors?order_by=commits", "repository:read", P17),
    needs("GET",    "/api/v4/projects/17/repository/merge_base?refs[]=main&refs[]=feature%2Flogin", "repository:read", P17),

    // ── Commits (commits.md) ─────────────────────────────────────────────────────────────
    needs("GET",    "/api/v4/projects/17/repository/commits?ref_name=main&since=2024-01-01T00:00:00Z", "commit:read", P17),
    needs("GET",    "/api/v4/projects/17/repository/commits/ed899a2f4b50b4370feeea94676502b42383c746", "commit:read", P17),
    needs("GET",    "/api/v4/projects/17/repository/commits/ed899a2f/diff",      "commit:read",   P17),
    needs("GET",    "/api/v4/projects/17/repository/commits/ed899a2f/refs?type=branch", "commit:read", P17),
    needs("GET",    "/api/v4/projects/17/repository/commits/ed899a2f/statuses", "commit:read",   P17),
    needs("POST",   "/api/v4/projects/17/repository/commits",                   "commit:create", P17),
    needs("POST",   "/api/v4/projects/17/repository/commits/ed899a2f/cherry_pick", "commit:create", P17),
    needs("POST",   "/api/v4/projects/17/repository/commits/ed899a2f/revert",   "commit:create", P17),

    // ── Branches (branches.md) ───────────────────────────────────────────────────────────
    needs("GET",    "/api/v4/projects/17/repository/branches?search=feature",   "branch:read",   P17),
    needs("GET",    "/api/v4/projects/17/repository/branches/main",             "branch:read",   P17),
    needs("HEAD",   "/api/v4/projects/17/repository/branches/feature%2Flogin",  "branch:read",   P17),
    needs("POST",   "/api/v4/projects/17/repository/branches?branch=feature%2Flogin&ref=main", "branch:create", P17),
    needs("DELETE", "/api/v4/projects/17/repository/branches/feature%2Flogin",  "branch:delete", P17),
    needs("DELETE", "/api/v4/projects/17/repository/merged_branches",           "branch:delete", P17),

    // ── Tags (tags.md) ───────────────────────────────────────────────────────────────────
    needs("GET",    "/api/v4/projects/17/repository/tags?order_by=updated&sort=desc", "repository_tag:read", P17),
    needs("GET",    "/api/v4/projects/17/repository/tags/v1.2.0",               "repository_tag:read",   P17),
    needs("POST",   "/api/v4/projects/17/repository/tags?tag_name=v1.3.0&ref=main", "repository_tag:create", P17),
    needs("DELETE", "/api/v4/projects/17/repository/tags/v1.2.0",               "repository_tag:delete", P17),
    needs("GET",    "/api/v4/projects/17/repository/tags/v1.2.0/signature",     "repository_tag:read",   P17),

    // ── Protected branches and tags (protected_branches.md, protected_tags.md) ─────────
    needs("GET",    "/api/v4/projects/17/protected_branches",                   "protected_branch:read",   P17),
    needs("GET",    "/api/v4/projects/17/protected_branches/release%2F*",       "protected_branch:read",   P17),
    needs("POST",   "/api/v4/projects/17/protected_branches?name=main&push_access_level=40", "protected_branch:create", P17),
    needs("PATCH",  "/api/v4/projects/17/protected_branches/main?allow_force_push=false", "protected_branch:update", P17),
    needs("DELETE", "/api/v4/projects/17/protected_branches/main",              "protected_branch:delete", P17),
    needs("GET",    "/api/v4/projects/17/protected_tags",                       "protected_tag:read",      P17),
    needs("GET",    "/api/v4/projects/17/protected_tags/v*",                    "protected_tag:read",      P17),
    needs("POST",   "/api/v4/projects/17/protected_tags?name=v*&create_access_level=40", "protected_tag:create", P17),
    needs("DELETE", "/api/v4/projects/17/protected_tags/v*",                    "protected_tag:delete",    P17),

    // ── Labels (labels.md, group_labels.md) ──────────────────────────────────────────────
    needs("GET",    "/api/v4/projects/17/labels?with_counts=true",              "label:read",   P17),
    needs("POST",   "/api/v4/projects/17/labels",                               "label:create", P17),
    needs("PUT",    "/api/v4/projects/17/labels/bug",                           "label:update", P17),
    needs("DELETE", "/api/v4/projects/17/labels/12",                            "label:delete", P17),
    needs("GET",    "/api/v4/groups/acme/labels",                               "label:read",   ACME),
    needs("POST",   "/api/v4/groups/42/labels",                                 "label:create", G42),
    needs("PUT",    "/api/v4/groups/42/labels/12",                              "label:update", G42),
    needs("DELETE", "/api/v4/groups/42/labels/12",                              "label:delete", G42),

    // ── Milestones (milestones.md, group_milestones.md) ─────────────────────────────────
    needs("GET",    "/api/v4/projects/17/milestones?state=active",              "milestone:read",   P17),
    needs("GET",    "/api/v4/projects/17/milestones/5",                         "milestone:read",   P17),
    needs("POST",   "/api/v4/projects/17/milestones",                           "milestone:create", P17),
    needs("PUT",    "/api/v4/projects/17/milestones/5",                         "milestone:update", P17),
    needs("DELETE", "/api/v4/projects/17/milestones/5",                         "milestone:delete", P17),
    needs("GET",    "/api/v4/groups/acme%2Fplatform/milestones",                "milestone:read",   PLATFORM),
    needs("POST",   "/api/v4/groups/42/milestones",                             "milestone:create", G42),

    // ── Issue boards (boards.md, group_boards.md) ────────────────────────────────────────
    needs("GET",    "/api/v4/projects/17/boards",                               "board:read",   P17),
    needs("GET",    "/api/v4/projects/17/boards/1/lists",                       "board:read",   P17),
    needs("POST",   "/api/v4/projects/17/boards?name=Sprint",                   "board:create", P17),
    needs("PUT",    "/api/v4/projects/17/boards/1",                             "board:update", P17),
    needs("DELETE", "/api/v4/projects/17/boards/1",                             "board:delete", P17),
    needs("GET",    "/api/v4/groups/acme/boards",                               "board:read",   ACME),

    // ── Wikis (wikis.md, group_wikis.md) ─────────────────────────────────────────────────
    needs("GET",    "/api/v4/projects/17/wikis?with_content=1",                 "wiki:read",   P17),
    needs("GET",    "/api/v4/projects/17/wikis/docs%2Finstall",                 "wiki:read",   P17),
    needs("POST",   "/api/v4/projects/17/wikis",                                "wiki:create", P17),
    needs("PUT",    "/api/v4/projects/17/wikis/home",                           "wiki:update", P17),
    needs("DELETE", "/api/v4/projects/17/wikis/home",                           "wiki:delete", P17),
    needs("POST",   "/api/v4/projects/17/wikis/attachments",                    "wiki:create", P17),
    needs("GET",    "/api/v4/groups/acme/wikis",                                "wiki:read",   ACME),

    // ── Project snippets (project_snippets.md) ───────────────────────────────────────────
    needs("GET",    "/api/v4/projects/17/snippets",                             "snippet:read",   P17),
    needs("POST",   "/api/v4/projects/17/snippets",                             "snippet:create", P17),
    needs("PUT",    "/api/v4/projects/17/snippets/5",                           "snippet:update", P17),
    needs("DELETE", "/api/v4/projects/17/snippets/5",                           "snippet:delete", P17),
    needs("GET",    "/api/v4/projects/17/snippets/5/raw",                       "snippet:read",   P17),

    // ── Members and access requests (members.md, access_requests.md) ────────────────────
    needs("GET",    "/api/v4/projects/17/members?query=ali",                    "member:read",   P17),
    needs("GET",    "/api/v4/projects/17/members/all",                          "member:read",   P17),
    needs("GET",    "/api/v4/projects/17/members/42",                           "member:read",   P17),
    needs("POST",   "/api/v4/projects/17/members?user_id=42&access_level=30",   "member:create", P17),
    needs("PUT",    "/api/v4/projects/17/members/42?access_level=40",           "member:update", P17),
    needs("DELETE", "/api/v4/projects/17/members/42",                           "member:delete", P17),
    needs("GET",    "/api/v4/groups/acme/members",                              "member:read",   ACME),
    needs("GET",    "/api/v4/groups/acme/members/all/42",                       "member:read",   ACME),
    needs("POST",   "/api/v4/groups/42/members",                                "member:create", G42),
    needs("PUT",    "/api/v4/groups/42/members/7",                              "member:update", G42),
    needs("DELETE", "/api/v4/groups/42/members/7",                              "member:delete", G42),
    needs("GET",    "/api/v4/projects/17/access_requests",                      "access_request:read",   P17),
    needs("POST",   "/api/v4/projects/17/access_requests",                      "access_request:create", P17),
    needs("PUT",    "/api/v4/projects/17/access_requests/42/approve?access_level=20", "access_request:update", P17),
    needs("DELETE", "/api/v4/projects/17/access_requests/42",                   "access_request:delete", P17),
    needs("GET",    "/api/v4/groups/acme/access_requests",                      "access_request:read",   ACME),
    needs("POST",   "/api/v4/groups/42/access_requests",                        "access_request:create", G42),
    needs("PUT",    "/api/v4/groups/42/access_requests/7/approve",              "access_request:update", G42),

    // ── Webhooks (project_webhooks.md, group_webhooks.md) ───────────────────────────────
    needs("GET",    "/api/v4/projects/17/hooks",                                "webhook:read",   P17),
    needs("GET",    "/api/v4/projects/17/hooks/3",                              "webhook:read",   P17),
    needs("POST",   "/api/v4/projects/17/hooks",                                "webhook:create", P17),
    needs("PUT",    "/api/v4/projects/17/hooks/3",                              "webhook:update", P17),
    needs("DELETE", "/api/v4/projects/17/hooks/3",                              "webhook:delete", P17),
    needs("GET",    "/api/v4/groups/acme/hooks",                                "webhook:read",   ACME),
    needs("POST",   "/api/v4/groups/42/hooks",                                  "webhook:create", G42),

    // ── Deploy keys and deploy tokens (deploy_keys.md, deploy_tokens.md) ───────────────
    needs("GET",    "/api/v4/projects/17/deploy_keys",                          "deploy_key:read",   P17),
    needs("POST",   "/api/v4/projects/17/deploy_keys",                          "deploy_key:create", P17),
    needs("PUT",    "/api/v4/projects/17/deploy_keys/11",                       "deploy_key:update", P17),
    needs("DELETE", "/api/v4/projects/17/deploy_keys/11",                       "deploy_key:delete", P17),
    // "Enable a deploy key for a project": 201 Created, a new key-project link.
    needs("POST",   "/api/v4/projects/17/deploy_keys/11/enable",                "deploy_key:create", P17),
    needs("GET",    "/api/v4/projects/17/deploy_tokens?active=true",            "deploy_token:read",   P17),
    needs("GET",    "/api/v4/projects/17/deploy_tokens/2",                      "deploy_token:read",   P17),
    needs("POST",   "/api/v4/projects/17/deploy_tokens",                        "deploy_token:create", P17),
    needs("DELETE", "/api/v4/projects/17/deploy_tokens/2",                      "deploy_token:delete", P17),
    needs("GET",    "/api/v4/groups/acme/deploy_tokens",                        "deploy_token:read",   ACME),
    needs("POST",   "/api/v4/groups/42/deploy_tokens",                          "deploy_token:create", G42),
    needs("DELETE", "/api/v4/groups/42/deploy_tokens/2",                        "deploy_token:delete", G42),

    // ── Runners (runners.md) ─────────────────────────────────────────────────────────────
    needs("GET",    "/api/v4/projects/17/runners?type=project_type",            "runner:read",   P17),
    needs("POST",   "/api/v4/projects/17/runners?runner_id=9",                  "runner:create", P17),
    needs("DELETE", "/api/v4/projects/17/runners/9",                            "runner:delete", P17),
    needs("GET",    "/api/v4/groups/acme/runners?type=group_type",              "runner:read",   ACME),
    needs("GET",    "/api/v4/runners/all?type=instance_type",                   "runner:read",   INSTANCE),

    // ── More project settings: badges, integrations, push rules, mirrors, feature flags,
    //    Pages, secure files, agents, Terraform state, access tokens, audit events ───────
    needs("GET",    "/api/v4/projects/17/badges",                               "badge:read",   P17),
    needs("POST",   "/api/v4/groups/42/badges",                                 "badge:create", G42),
    needs("GET",    "/api/v4/projects/17/integrations",                         "integration:read",   P17),
    needs("PUT",    "/api/v4/projects/17/integrations/slack",                   "integration:update", P17),
    needs("DELETE", "/api/v4/projects/17/integrations/slack",                   "integration:delete", P17),
    needs("GET",    "/api/v4/projects/17/push_rule",                            "push_rule:read",   P17),
    needs("PUT",    "/api/v4/projects/17/push_rule",                            "push_rule:update", P17),
    needs("GET",    "/api/v4/projects/17/remote_mirrors",                       "remote_mirror:read",   P17),
    needs("POST",   "/api/v4/projects/17/remote_mirrors",                       "remote_mirror:create", P17),
    needs("POST",   "/api/v4/projects/17/remote_mirrors/101486/sync",           "remote_mirror:update", P17),
    needs("GET",    "/api/v4/projects/17/feature_flags?scope=enabled",          "feature_flag:read",   P17),
    needs("POST",   "/api/v4/projects/17/feature_flags",                        "feature_flag:create", P17),
    needs("PUT",    "/api/v4/projects/17/feature_flags/new_checkout",           "feature_flag:update", P17),
    needs("DELETE", "/api/v4/projects/17/feature_flags/new_checkout",           "feature_flag:delete", P17),
    needs("DELETE", "/api/v4/projects/17/pages",                                "pages:delete", P17),
    needs("GET",    "/api/v4/projects/17/pages/domains",                        "pages:read",   P17),
    needs("GET",    "/api/v4/projects/17/secure_files",                         "secure_file:read",   P17),
    needs("POST",   "/api/v4/projects/17/secure_files",                         "secure_file:create", P17),
    needs("GET",    "/api/v4/projects/17/secure_files/4/download",              "secure_file:read",   P17),
    needs("DELETE", "/api/v4/projects/17/secure_files/4",                       "secure_file:delete", P17),
    needs("GET",    "/api/v4/projects/17/cluster_agents",                       "cluster_agent:read",   P17),
    needs("POST",   "/api/v4/projects/17/cluster_agents",                       "cluster_agent:create", P17),
    needs("DELETE", "/api/v4/projects/17/cluster_agents/1",                     "cluster_agent:delete", P17),
    needs("GET",    "/api/v4/projects/17/terraform/state/production",           "terraform_state:read",   P17),
    needs("DELETE", "/api/v4/projects/17/terraform/state/production",           "terraform_state:delete", P17),
    needs("GET",    "/api/v4/projects/17/access_tokens",                        "resource_access_token:read",   P17),
    needs("POST",   "/api/v4/projects/17/access_tokens",                        "resource_access_token:create", P17),
    needs("POST",   "/api/v4/projects/17/access_tokens/9/rotate",               "resource_access_token:update", P17),
    needs("DELETE", "/api/v4/projects/17/access_tokens/9",                      "resource_access_token:delete", P17),
    needs("GET",    "/api/v4/groups/acme/access_tokens",                        "resource_access_token:read",   ACME),
    needs("GET",    "/api/v4/projects/17/audit_events",                         "audit_event:read", P17),
    needs("GET",    "/api/v4/groups/42/audit_events?created_after=2024-01-01",  "audit_event:read", G42),

    // ── Administration (settings.md, broadcast_messages.md, system_hooks.md, ─────────────
    //    audit_events.md, statistics.md, applications.md, topics.md, license.md,
    //    features.md, admin/token.md)
    needs("GET",    "/api/v4/application/settings",                             "admin_setting:read",   INSTANCE),
    needs("PUT",    "/api/v4/application/settings?signup_enabled=false",        "admin_setting:update", INSTANCE),
    needs("GET",    "/api/v4/broadcast_messages",                               "broadcast_message:read",   INSTANCE),
    needs("GET",    "/api/v4/broadcast_messages/1",                             "broadcast_message:read",   INSTANCE),
    needs("POST",   "/api/v4/broadcast_messages",                               "broadcast_message:create", INSTANCE),
    needs("PUT",    "/api/v4/broadcast_messages/1",                             "broadcast_message:update", INSTANCE),
    needs("DELETE", "/api/v4/broadcast_messages/1",                             "broadcast_message:delete", INSTANCE),
    needs("GET",    "/api/v4/hooks",                                            "system_hook:read",   INSTANCE),
    needs("POST",   "/api/v4/hooks",                                            "system_hook:create", INSTANCE),
    needs("DELETE", "/api/v4/hooks/2",                                          "system_hook:delete", INSTANCE),
    needs("GET",    "/api/v4/audit_events?entity_type=User",                    "audit_event:read",   INSTANCE),
    needs("GET",    "/api/v4/audit_events/9",                                   "audit_event:read",   INSTANCE),
    needs("GET",    "/api/v4/application/statistics",                           "admin_statistic:read", INSTANCE),
    needs("GET",    "/api/v4/applications",                                     "application:read",   INSTANCE),
    needs("POST",   "/api/v4/applications",                                     "application:create", INSTANCE),
    needs("POST",   "/api/v4/applications/3/renew-secret",                      "application:update", INSTANCE),
    needs("DELETE", "/api/v4/applications/3",                                   "application:delete", INSTANCE),
    needs("GET",    "/api/v4/topics?search=rust",                               "topic:read",   INSTANCE),
    needs("POST",   "/api/v4/topics",                                           "topic:create", INSTANCE),
    needs("PUT",    "/api/v4/topics/8",                                         "topic:update", INSTANCE),
    needs("DELETE", "/api/v4/topics/8",                                         "topic:delete", INSTANCE),
    needs("GET",    "/api/v4/license",                                          "license:read", INSTANCE),
    needs("GET",    "/api/v4/features",                                         "feature:read", INSTANCE),
    needs("DELETE", "/api/v4/features/my_feature_flag",                         "feature:delete", INSTANCE),
    // The token information API looks a token up with a POST body: a read.
    needs("POST",   "/api/v4/admin/token",                                      "admin_token:read",   INSTANCE),
    needs("DELETE", "/api/v4/admin/token",                                      "admin_token:delete", INSTANCE),

    // ── Open to every valid token ────────────────────────────────────────────────────────
    always("GET",  "/api/v4/version"),
    always("HEAD", "/api/v4/version?detailed=true"),
    always("GET",  "/api/v4/metadata"),

    // ── Malformed boundaries: a parameter that does not decode names no project ───────────
    needs("GET",    "/api/v4/projects/acme%2/issues",                           "issue:read",   project("")),
    needs("GET",    "/api/v4/projects/acme%ZZapi/merge_requests/7",             "merge_request:read", project("")),

    // ── Nothing: not the API, not a method, not a path ──────────────────────────────────
    not_covered("GET",     "/api/v4/definitely/not/an/endpoint"),
    not_covered("OPTIONS", "/api/v4/projects"),
    not_covered("TRACE",   "/api/v4/version"),
    not_covered("get",     "/api/v4/version"),
    not_covered("POST",    "/api/v4/version"),
    not_covered("GET",     "/api/v3/projects/17"),
    not_covered("GET",     "/projects/17"),
    // A single trailing slash names no template, and no proxy reads it otherwise.
    not_covered("GET",     "/api/v4/projects/17/"),
    not_covered("GET",     "/api/v4"),
    not_covered("GET",     ""),

    // ── Ambiguous paths: refused to every token, not judged by their most permissive reading ──
    // A proxy that normalises dot segments (nginx forwards the normalised `$uri`, while
    // `auth_request` hands patgate the raw one) would serve project 1's CI/CD variables for
    // what the catch-all reads as a job artifact of public project 3.
    ambiguous("GET",     "/api/v4/projects/3/jobs/1/artifacts/../../../../projects/1/variables"),
    ambiguous("PUT",     "/api/v4/projects/3/packages/maven/%2e%2e/%2e%2e/%2e%2e/1/variables/KEY"),
    ambiguous("GET",     "/api/v4/projects/3/jobs/1/artifacts/%2E%2E/%2E%2E/x"),
    ambiguous("GET",     "/api/v4/projects/3/jobs/1/artifacts/.%2e/x"),
    ambiguous("GET",     "/api/v4/projects/3/jobs/1/artifacts/%2e./x"),
    ambiguous("GET",     "/api/v4/projects/3/jobs/1/artifacts/./dist/app.js"),
    ambiguous("GET",     "/api/v4/projects/3/jobs/1/artifacts/dist/.."),
    ambiguous("GET",     "/api/v4/projects/3/jobs/1/artifacts/dist/%2e?job=build"),
    // Between encoded slashes: a proxy that decodes before it normalises resolves them.
    ambiguous("GET",     "/api/v4/projects/acme%2F..%2Fother%2Fsecret/issues"),
    ambiguous("GET",     "/api/v4/projects/17/repository/files/src%2F.%2Fmain.rs/raw"),
    ambiguous("GET",     "/api/v4/projects/17/repository/files/src%2f%2e%2e%2fmain.rs/raw"),
    // Outside the catch-all and before the API prefix too, whatever the method.
    ambiguous("GET",     "/api/v4/projects/17/../1/variables"),
    ambiguous("GET",     "/api/v4/../v4/projects/1/variables"),
    ambiguous("GET",     "/static/../api/v4/projects/1/variables"),
    ambiguous("OPTIONS", "/api/v4/projects/1/.."),
    // Empty segments, which proxies may merge (nginx `merge_slashes`); the second used to
    // be merely not covered, which let legacy `api`/`read_api` tokens through unjudged.
    ambiguous("GET",     "/api/v4/projects/3/jobs/1/artifacts/dist//app.js"),
    ambiguous("GET",     "/api/v4//projects"),
    ambiguous("GET",     "//api/v4/projects/17/issues"),
    // Not ambiguous: more than two dots, dots inside a name, dots in the query.
    needs("GET",    "/api/v4/projects/17/jobs/8812/artifacts/.../x",             "job_artifact:read", P17),
    needs("GET",    "/api/v4/projects/17/jobs/8812/artifacts/dist/.env",         "job_artifact:read", P17),
    needs("GET",    "/api/v4/projects/17/jobs/8812/artifacts/..dist/a..b/x.",    "job_artifact:read", P17),
    needs("GET",    "/api/v4/projects/17/repository/files/src%2F..main.rs/raw",  "repository:read",   P17),
    needs("GET",    "/api/v4/projects/17/repository/tree?path=../../etc&ref=main", "repository:read", P17),
];

/// `merge_request:read,note:read @ Project(Id(17))`, permissions sorted.
fn render(mut permissions: Vec<String>, boundary: &BoundaryRef<'_>) -> String {
    permissions.sort();
    format!("{} @ {boundary:?}", permissions.join(","))
}

fn describe_actual(resources: &Resources, operation: &Operation<'_>) -> String {
    match operation {
        Operation::Covered { permissions, boundary } => {
            render(permissions.iter().map(|p| resources.permission_name(*p)).collect(), boundary)
        }
        Operation::Always => "always".to_owned(),
        Operation::NotCovered => "not covered".to_owned(),
        Operation::AmbiguousPath => "ambiguous".to_owned(),
    }
}

fn describe_expected(expect: &Expect) -> String {
    match expect {
        Expect::Needs(permissions, boundary) => render(permissions.split(',').map(str::to_owned).collect(), boundary),
        Expect::Always => "always".to_owned(),
        Expect::NotCovered => "not covered".to_owned(),
        Expect::Ambiguous => "ambiguous".to_owned(),
    }
}

#[test]
fn the_table_is_large_and_its_expectations_exist() {
    assert!(CASES.len() >= 150, "only {} cases", CASES.len());
    let resources = &builtin().0;
    for case in CASES {
        assert!(case.path.is_empty() || case.path.starts_with('/'), "{case:?}");
        if let Expect::Needs(permissions, boundary) = case.expect {
            for text in permissions.split(',') {
                let permission = resources.permission(text).unwrap();
                let exists = resources
                    .row(permission.resource, boundary.kind())
                    .and_then(|row| row.requirement(permission.action))
                    .is_some();
                assert!(exists, "{} {}: `{text}` does not exist at {}", case.method, case.path, boundary.kind());
            }
        }
    }
}

#[test]
fn documented_gitlab_requests_need_the_documented_permissions() {
    let (resources, catalog) = builtin();
    let mut disagreements = Vec::new();
    for case in CASES {
        let mut buffer = DecodeBuffer::default();
        let request = catalog.request(case.method, case.path, &mut buffer);
        let actual = describe_actual(resources, &request.operation);
        let expected = describe_expected(&case.expect);
        let template = catalog.find(case.method, case.path).map_or_else(
            || "no entry".to_owned(),
            |m| format!("{}:{} {}", m.entry.file, m.entry.line, m.entry.template),
        );
        if actual != expected {
            disagreements.push(format!(
                "{} {}\n    expected {expected}\n    catalog  {actual}   ({template})",
                case.method, case.path
            ));
        }
        if request.on_own_token != case.own_token {
            disagreements.push(format!(
                "{} {}\n    expected on_own_token={}, catalog says {}   ({template})",
                case.method, case.path, case.own_token, request.on_own_token
            ));
        }
        let read_only = matches!(case.method, "GET" | "HEAD");
        assert_eq!(request.read_only, read_only, "{} {}", case.method, case.path);
    }
    assert!(
        disagreements.is_empty(),
        "{} of {} documented requests disagree with the catalog:\n{}",
        disagreements.len(),
        CASES.len(),
        disagreements.join("\n")
    );
}

#[test]
fn a_path_parameter_too_long_to_decode_names_no_project() {
    let (_, catalog) = builtin();
    let long = format!("/api/v4/projects/{}/issues", "acme%2F".repeat(200));
    let mut buffer = DecodeBuffer::default();
    let request = catalog.request("GET", &long, &mut buffer);
    if let Operation::Covered { boundary, .. } = request.operation {
        assert_eq!(boundary, BoundaryRef::Project(Locator::Path("")));
    } else {
        assert_eq!(request.operation, Operation::NotCovered, "an issue listing is never open to all");
    }
    // Just within the buffer: 512 decoded bytes still name a project.
    let exact = format!("/api/v4/projects/{}%2Fapi/issues", "a".repeat(508));
    let mut buffer = DecodeBuffer::default();
    if let Operation::Covered { boundary, .. } = catalog.request("GET", &exact, &mut buffer).operation {
        let BoundaryRef::Project(Locator::Path(path)) = boundary else {
            panic!("a project path expected: {boundary:?}")
        };
        assert_eq!(path.len(), 512);
        assert!(path.ends_with("/api"));
    }
}

#[test]
fn the_builtin_catalog_covers_the_api() {
    let (_, catalog) = builtin();
    let count = catalog.entries().len();
    assert!(count >= 1_000, "the builtin catalog has {count} endpoints; the REST API needs at least 1,000");
}

#[test]
fn the_permission_reference_is_current() {
    let (resources, catalog) = builtin();
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/permissions.md");
    let committed = std::fs::read_to_string(path).unwrap_or_default();
    let generated = render_permissions_markdown(catalog, resources);
    assert!(
        committed == generated,
        "docs/permissions.md differs from the catalog; regenerate it with \
         `cargo run -q -- catalog docs > docs/permissions.md`"
    );
}

// ── Property tests ──────────────────────────────────────────────────────────────────────

/// How precise a template segment is: literals beat `prefix.:param`, which beats `:param`.
fn precision(segment: &str) -> u8 {
    match segment.find(':') {
        None => 2,
        Some(0) => 0,
        Some(_) => 1,
    }
}

/// A concrete path for `entry`, filling parameters from `values` (starting at `offset`)
/// and `prefix.:param` segments from `extensions`.
fn concrete_path(entry: &Entry, values: &[String], extensions: &[String], offset: usize) -> String {
    let mut path = String::from("/api/v4");
    for (index, segment) in entry.template[1..].split('/').enumerate() {
        path.push('/');
        match segment.find(':') {
            None => path.push_str(segment),
            Some(0) => path.push_str(&values[(offset + index) % values.len()]),
            Some(position) => {
                path.push_str(&segment[..position]);
                path.push_str(&extensions[(offset + index) % extensions.len()]);
            }
        }
    }
    path
}

fn param_value() -> impl Strategy<Value = String> {
    prop_oneof![
        "[0-9]{1,9}",
        "[a-z][a-z0-9_-]{0,11}",
        // Never a piece of dots alone between encoded slashes: that is an ambiguous path.
        "[a-z][a-z0-9-]{0,6}(%2[Ff][a-z0-9_-][a-z0-9._-]{0,7}){1,3}",
        "v[0-9]\\.[0-9]{1,2}\\.[0-9]{1,2}",
        "[A-Z][A-Z0-9_]{0,15}",
    ]
}

fn extension() -> impl Strategy<Value = String> {
    prop_oneof!["[a-z0-9]{1,4}", "[a-z]{3}\\.[a-z0-9]{2,3}"]
}

fn method() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => prop::sample::select(vec!["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "get", "OPTIONS", ""])
            .prop_map(str::to_owned),
        1 => any::<String>(),
    ]
}

/// Paths shaped like the API's, built from the catalog's own literals and some noise, so
/// that matching goes deep and backtracks.
fn api_like_path() -> impl Strategy<Value = String> {
    let literals: Vec<String> = {
        let mut literals: Vec<String> = builtin()
            .1
            .entries()
            .iter()
            .flat_map(|entry| entry.template[1..].split('/').filter(|s| !s.contains(':')).map(str::to_owned))
            .collect();
        literals.extend(["self", "..", ".", "%", "%2", "%ZZ", "%2F", "a%2Fb", "archive.", "17", ""].map(str::to_owned));
        literals.sort();
        literals.dedup();
        literals
    };
    let segment = prop_oneof![
        3 => prop::sample::select(literals),
        1 => "[0-9]{1,25}",
        1 => "[^/?]{0,12}",
    ];
    (prop::collection::vec(segment, 0..10), prop::option::of("[^#]{0,12}"), any::<bool>()).prop_map(
        |(segments, query, prefixed)| {
            let mut path = if prefixed { String::from("/api/v4") } else { String::new() };
            for segment in segments {
                path.push('/');
                path.push_str(&segment);
            }
            if let Some(query) = query {
                path.push('?');
                path.push_str(&query);
            }
            path
        },
    )
}

/// Matches and converts one request, checking what holds for any input.
fn check_request(method: &str, path: &str) {
    let (_, catalog) = builtin();
    if let Some(found) = catalog.find(method, path) {
        assert_eq!(found.params.len(), found.entry.params.len(), "{method} {path}");
    }
    let mut buffer = DecodeBuffer::default();
    let request = catalog.request(method, path, &mut buffer);
    assert_eq!(request.read_only, matches!(method, "GET" | "HEAD"), "{method} {path}");
    let ambiguous = ambiguous_path(path.split_once('?').map_or(path, |(path, _)| path));
    if ambiguous {
        assert_eq!(request.operation, Operation::AmbiguousPath, "{method} {path}");
        assert!(catalog.find(method, path).is_none(), "{method} {path}");
    } else if catalog.find(method, path).is_none() {
        assert_eq!(request.operation, Operation::NotCovered, "{method} {path}");
    }
}

/// `ambiguous_path` said plainly: an empty piece between two slashes, or a piece between
/// slashes (plain or `%2F`) that decodes to `.` or `..`.
fn ambiguous_oracle(path: &str) -> bool {
    let pieces: Vec<&str> = path.split('/').collect();
    let empty_between = pieces.len() > 2 && pieces[1..pieces.len() - 1].iter().any(|piece| piece.is_empty());
    let dots = pieces.iter().any(|piece| {
        piece.replace("%2F", "%2f").split("%2f").any(|part| {
            let decoded = part.replace("%2E", ".").replace("%2e", ".");
            decoded == "." || decoded == ".."
        })
    });
    empty_between || dots
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 4096, ..ProptestConfig::default() })]

    #[test]
    fn ambiguous_paths_are_the_dot_and_empty_segments(
        pieces in prop::collection::vec(
            prop::sample::select(vec![".", "/", "%2e", "%2E", "%2f", "%2F", "a", "%", "2", "e", "f", "%2"]),
            0..14,
        ),
    ) {
        let path = pieces.concat();
        prop_assert_eq!(ambiguous_path(&path), ambiguous_oracle(&path), "{}", path);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    /// Every template matches concrete paths made from it back to itself, unless a more
    /// precise template (a literal where it has a parameter) legitimately wins.
    #[test]
    fn every_template_matches_its_own_concrete_paths(
        values in prop::collection::vec(param_value(), 1..12),
        extensions in prop::collection::vec(extension(), 1..4),
        query in prop::option::of("[a-z_]{1,8}=[a-z0-9%]{0,8}"),
        head in any::<bool>(),
    ) {
        let (_, catalog) = builtin();
        for (offset, entry) in catalog.entries().iter().enumerate() {
            let mut path = concrete_path(entry, &values, &extensions, offset);
            if let Some(query) = &query {
                path.push('?');
                path.push_str(query);
            }
            let method = if head && entry.method.name() == "GET" { "HEAD" } else { entry.method.name() };
            let found = catalog.find(method, &path);
            prop_assert!(found.is_some(), "{method} {path} (from {}) matches nothing", entry.template);
            let Some(found) = found else { continue };
            prop_assert_eq!(found.entry.method, entry.method);
            prop_assert_eq!(found.params.len(), found.entry.params.len());
            if found.entry.template == entry.template {
                continue;
            }
            // Another template won: at the first segment where the two differ, the winner
            // must be more precise.
            let ours: Vec<&str> = entry.template[1..].split('/').collect();
            let theirs: Vec<&str> = found.entry.template[1..].split('/').collect();
            let first = ours.iter().zip(&theirs).position(|(a, b)| a != b);
            prop_assert!(first.is_some(), "{} and {} share every segment", entry.template, found.entry.template);
            let Some(first) = first else { continue };
            let (mine, winner) = (precision(ours[first]), precision(theirs[first]));
            prop_assert!(
                winner > mine || (winner == 1 && mine == 1),
                "{method} {path}: {} won over {} at segment {first}",
                found.entry.template,
                entry.template
            );
        }
    }

    #[test]
    fn matching_arbitrary_strings_never_panics(method in method(), path in any::<String>()) {
        check_request(&method, &path);
        check_request(&method, &format!("/api/v4{path}"));
    }

    #[test]
    fn matching_arbitrary_bytes_never_panics(method in method(), bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        let path = String::from_utf8_lossy(&bytes);
        check_request(&method, &path);
        check_request(&method, &format!("/api/v4/{path}"));
    }

    #[test]
    fn matching_api_shaped_paths_never_panics(method in method(), path in api_like_path()) {
        check_request(&method, &path);
    }
}
