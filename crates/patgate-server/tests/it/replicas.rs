//! Two replicas on one database: the second follows the first through the change log
//! (`Shared::catch_up`), whatever order the changes come in, and always applies
//! revocations.

use patgate_core::{ProjectId, Visibility};
use patgate_store::{Actor, Audit, Store};

use crate::support::{API_REGISTRY, App};

fn audit(app: &App, event: &'static str) -> Audit {
    Audit::new(event, Actor::default(), app.shared.clock.now())
}

/// The id of alice's demo token (the only token of hers).
async fn alices_token(app: &App) -> patgate_core::TokenId {
    let alice = app.shared.user_id("alice").unwrap();
    app.shared.store.tokens(Some(alice)).await.unwrap()[0].id
}

/// A replica a few changes behind reads a project's current row, which already lives in a
/// group created by a later change: catching up must not stop there (and with it every
/// later revocation).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_behind_a_project_move_into_a_later_group_catches_up_and_applies_revocations() {
    let app = App::new().await;
    let replica = app.replica().await;
    let store = &app.shared.store;
    let (project, _) =
        store.create_project("acme/x", Visibility::Private, audit(&app, "project_created")).await.unwrap();
    store.create_group("newgrp", Visibility::Private, audit(&app, "group_created")).await.unwrap();
    store.update_project(project, "newgrp/x", Visibility::Private, audit(&app, "project_updated")).await.unwrap();

    replica.shared.catch_up().await.unwrap();
    let directory = replica.shared.directory();
    assert_eq!(directory.project_by_path("newgrp/x").map(|p| p.id), Some(project));
    assert!(directory.project_by_path("acme/x").is_none());
    assert!(directory.group_by_path("newgrp").is_some());
    let head = store.changes_since(0, u32::MAX).await.unwrap().last().unwrap().0;
    assert_eq!(replica.shared.applied_sequence().await, head);

    // A revocation through the first replica is denied by the second.
    assert_eq!(replica.decide(&app.alice, "GET", API_REGISTRY).await["allowed"], true);
    store.revoke_token(alices_token(&app).await, "revoked_by_admin", audit(&app, "token_revoked")).await.unwrap();
    replica.shared.catch_up().await.unwrap();
    let decision = replica.decide(&app.alice, "GET", API_REGISTRY).await;
    assert_eq!((decision["allowed"].clone(), decision["reason"].clone()), (false.into(), "revoked".into()));
}

/// The same when the replica has applied part of the log already, and a project's current
/// path is one that another project leaves only in a later change.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_catches_up_over_a_path_a_later_change_frees() {
    let app = App::new().await;
    let replica = app.replica().await;
    let store = &app.shared.store;
    let (first, _) =
        store.create_project("acme/platform/x", Visibility::Private, audit(&app, "project_created")).await.unwrap();
    let (second, _) =
        store.create_project("acme/x", Visibility::Private, audit(&app, "project_created")).await.unwrap();
    replica.shared.catch_up().await.unwrap();
    // The first change of `first` is read when it already lives at acme/x, which the
    // replica still gives to `second`.
    store.update_project(first, "acme/platform/x", Visibility::Internal, audit(&app, "project_updated")).await.unwrap();
    store.update_project(second, "acme/web/x", Visibility::Private, audit(&app, "project_updated")).await.unwrap();
    store.update_project(first, "acme/x", Visibility::Internal, audit(&app, "project_updated")).await.unwrap();
    replica.shared.catch_up().await.unwrap();
    let directory = replica.shared.directory();
    let path = |id: ProjectId| directory.project(id).map(|p| (p.full_path.to_string(), p.visibility));
    assert_eq!(path(first), Some(("acme/x".to_owned(), Visibility::Internal)));
    assert_eq!(path(second), Some(("acme/web/x".to_owned(), Visibility::Private)));
}

/// A database already holding a group and a project on one path, or a user and a group
/// (written by replicas that did not check each other), still loads: the row created later
/// is left out, and a change to it does not stop catching up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_with_two_things_on_one_path_still_loads_and_follows() {
    let app = App::new().await;
    let pool = app.shared.store.pool();
    let now = app.shared.clock.now().0;
    for (sql, at) in [
        ("INSERT INTO groups (full_path, visibility, created_at) VALUES ('acme/twin', 'private', $1)", now + 1),
        ("INSERT INTO projects (full_path, visibility, created_at) VALUES ('acme/twin', 'private', $1)", now + 2),
        ("INSERT INTO users (username, name, state, admin, created_at) VALUES ('acme', '', 'active', 0, $1)", now + 3),
    ] {
        sqlx::query(sql).bind(at).execute(pool).await.unwrap();
    }
    let project: i64 =
        sqlx::query_scalar("SELECT id FROM projects WHERE full_path = 'acme/twin'").fetch_one(pool).await.unwrap();

    let replica = app.replica().await;
    let directory = replica.shared.directory();
    assert!(directory.group_by_path("acme/twin").is_some());
    assert!(directory.project_by_path("acme/twin").is_none(), "the later project is left out");
    assert!(directory.user_by_name("acme").is_none(), "the later user is left out");
    assert!(directory.group_by_path("acme").is_some());
    assert!(directory.project_by_path("acme/platform/api").is_some());
    assert_eq!(replica.decide(&app.alice, "GET", API_REGISTRY).await["allowed"], true);

    // A change naming the left-out project, then a revocation: both are caught up with.
    let id = ProjectId(u64::try_from(project).unwrap());
    app.shared.store.update_project(id, "acme/twin", Visibility::Public, audit(&app, "project_updated")).await.ok();
    sqlx::query("INSERT INTO changes (at, change) VALUES ($1, $2)")
        .bind(now)
        .bind(format!(r#"{{"kind":"project","id":{project}}}"#))
        .execute(pool)
        .await
        .unwrap();
    app.shared
        .store
        .revoke_token(alices_token(&app).await, "revoked_by_admin", audit(&app, "token_revoked"))
        .await
        .unwrap();
    replica.shared.catch_up().await.unwrap();
    assert_eq!(replica.decide(&app.alice, "GET", API_REGISTRY).await["reason"], "revoked");
}

/// Two things on one path written after a replica loaded (by replicas that did not check
/// each other): the change does not fit even at the end of the log, so the replica
/// rebuilds its index from a snapshot, which leaves the later one out, and goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_that_never_fits_rebuilds_the_index_and_catching_up_goes_on() {
    let app = App::new().await;
    let replica = app.replica().await;
    let pool = app.shared.store.pool();
    let now = app.shared.clock.now().0;
    let project: i64 = sqlx::query_scalar(
        "INSERT INTO projects (full_path, visibility, created_at) VALUES ('acme/platform', 'private', $1) RETURNING id",
    )
    .bind(now + 1)
    .fetch_one(pool)
    .await
    .unwrap();
    sqlx::query("INSERT INTO changes (at, change) VALUES ($1, $2)")
        .bind(now)
        .bind(format!(r#"{{"kind":"project","id":{project}}}"#))
        .execute(pool)
        .await
        .unwrap();
    app.shared
        .store
        .revoke_token(alices_token(&app).await, "revoked_by_admin", audit(&app, "token_revoked"))
        .await
        .unwrap();

    replica.shared.catch_up().await.unwrap();
    let directory = replica.shared.directory();
    assert!(directory.group_by_path("acme/platform").is_some());
    assert!(directory.project_by_path("acme/platform").is_none());
    assert_eq!(replica.decide(&app.alice, "GET", API_REGISTRY).await["reason"], "revoked");
    let head = app.shared.store.changes_since(0, u32::MAX).await.unwrap().last().unwrap().0;
    assert_eq!(replica.shared.applied_sequence().await, head);
    let metrics = replica.shared.metrics.render(0, head);
    for line in ["patgate_index_rebuilds_total 1", "patgate_catch_up_failing 0", "patgate_catch_up_failures_total 0"] {
        assert!(metrics.lines().any(|l| l == line), "missing `{line}` in:\n{metrics}");
    }

    // Later changes apply as usual, and a change to the left-out project rebuilds nothing.
    sqlx::query("INSERT INTO changes (at, change) VALUES ($1, $2)")
        .bind(now)
        .bind(format!(r#"{{"kind":"project","id":{project}}}"#))
        .execute(pool)
        .await
        .unwrap();
    app.shared.store.create_group("later", Visibility::Public, audit(&app, "group_created")).await.unwrap();
    replica.shared.catch_up().await.unwrap();
    assert!(replica.shared.directory().group_by_path("later").is_some());
    assert!(replica.shared.metrics.render(0, head).lines().any(|l| l == "patgate_index_rebuilds_total 1"));
}
