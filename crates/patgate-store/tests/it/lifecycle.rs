//! The token lifecycle every backend must share: rotation with a grace period, bulk
//! revocation, usage, expiry notices, inactivity, job leases and the webhook outbox.

use std::net::IpAddr;

use patgate_core::{
    Authority, Boundary, DigestKey, GroupId, LegacyScope, ProjectId, ScopeSet, Timestamp, TokenFormat, TokenId,
    TokenKind, UserId, UserState, time::DAY,
};
use patgate_store::{
    Actor, Audit, AuditEvent, AuditFilter, Change, Delivery, DeliveryAttempt, DeliveryFilter, DirectoryBatch,
    LIFECYCLE_EVENTS, NewToken, PermissionUse, SqlStore, Store, StoreError, TokenUse, WebhookTarget,
};

use crate::support::{connect, connect_with_webhooks, databases};

const T0: Timestamp = Timestamp(1_795_867_200);

/// `seconds` after T0.
fn at(seconds: i64) -> Timestamp {
    Timestamp(T0.0 + seconds)
}

fn audit(event: &'static str, when: Timestamp) -> Audit {
    Audit::new(event, Actor::default(), when)
}

/// A legacy token of `owner` made at `created_at`, and its secret.
fn token_at(owner: UserId, created_at: Timestamp, expires_at: Option<Timestamp>) -> (NewToken, String) {
    let format = TokenFormat::new("").unwrap();
    let plain = format.generate(TokenKind::Legacy).unwrap();
    let token = NewToken {
        owner,
        name: "deploy".into(),
        description: String::new(),
        digest: DigestKey::new(&[7; 32]).unwrap().digest_plain(&plain),
        display_prefix: plain.display_prefix(),
        authority: Authority::Legacy(ScopeSet::EMPTY.with(LegacyScope::ReadApi)),
        allowed_ips: Vec::new(),
        created_at,
        expires_at,
    };
    (token, plain.expose_secret().to_owned())
}

fn new_token(owner: UserId) -> NewToken {
    token_at(owner, T0, Some(T0.plus_days(90))).0
}

async fn user(store: &SqlStore, username: &str) -> UserId {
    store.create_user(username, "", false, audit("user_created", T0)).await.unwrap().0
}

async fn create(store: &SqlStore, token: &NewToken) -> TokenId {
    store.create_token(token, audit("token_created", token.created_at)).await.unwrap().0
}

/// Audit events of type `event`, oldest first.
async fn events(store: &SqlStore, event: &str) -> Vec<AuditEvent> {
    let mut events = store
        .audit_events(&AuditFilter { event: Some(event.into()), limit: 1000, ..AuditFilter::default() })
        .await
        .unwrap();
    events.reverse();
    events
}

async fn all_events(store: &SqlStore) -> usize {
    store.audit_events(&AuditFilter { limit: 1000, ..AuditFilter::default() }).await.unwrap().len()
}

/// Every delivery, oldest first.
async fn deliveries(store: &SqlStore, pending: bool) -> Vec<Delivery> {
    let mut deliveries =
        store.deliveries(&DeliveryFilter { pending, limit: 1000, ..DeliveryFilter::default() }).await.unwrap();
    deliveries.reverse();
    deliveries
}

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

fn ids<T>(items: &[T], id: impl Fn(&T) -> TokenId) -> Vec<TokenId> {
    items.iter().map(id).collect()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

#[tokio::test]
async fn rotation_keeps_the_old_token_for_its_grace_period_in_one_family() {
    for database in databases().await {
        let store = connect(&database).await.unwrap();
        let url = database.url.as_str();
        let alice = user(&store, "alice").await;
        let first = create(&store, &new_token(alice)).await;
        let unrelated = create(&store, &new_token(alice)).await;
        let before = store.changes_since(0, 1000).await.unwrap().last().unwrap().0;

        let rotated_at = at(10);
        let (second, sequence) = store
            .rotate_token(
                first,
                &new_token(alice),
                3600,
                Audit::new("token_rotated", Actor { user: Some(alice), token: None }, rotated_at),
            )
            .await
            .unwrap();
        let old = store.token(first).await.unwrap().unwrap();
        assert_eq!(old.revoked_at, Some(at(3610)), "{url}");
        assert_eq!(old.revoke_reason.as_deref(), Some("rotated"), "{url}");
        assert!(!old.is_revoked(rotated_at), "{url}");
        assert!(!old.is_revoked(at(3609)), "{url}: still in its grace period a second before its end");
        assert!(old.is_revoked(at(3610)), "{url}: revoked at the end of the grace period");
        let new = store.token(second).await.unwrap().unwrap();
        assert_eq!((new.family, new.previous, new.revoked_at), (first, Some(first), None), "{url}");
        assert_eq!((old.family, old.previous), (first, None), "{url}");

        // Both tokens are one change each, in the rotation's transaction.
        let changes = store.changes_since(before, 1000).await.unwrap();
        assert_eq!(
            changes.iter().map(|(_, change)| change.clone()).collect::<Vec<_>>(),
            [Change::Token { id: first.0 }, Change::Token { id: second.0 }],
            "{url}"
        );
        assert_eq!(changes.last().unwrap().0, sequence, "{url}");
        let rotated = events(&store, "token_rotated").await;
        assert_eq!(rotated.len(), 1, "{url}");
        assert_eq!((rotated[0].user, rotated[0].token, rotated[0].at), (Some(alice), Some(second), rotated_at));
        assert_eq!(rotated[0].actor_user, Some(alice), "{url}");
        assert_eq!(rotated[0].details["previous"], first.0, "{url}");
        assert_eq!(rotated[0].details["grace_seconds"], 3600, "{url}");
        // The index sees the future revocation too.
        let snapshot = store.snapshot().await.unwrap();
        let record = snapshot.tokens.iter().find(|(_, record)| record.id == first).unwrap();
        assert_eq!(record.1.revoked_at, Some(at(3610)), "{url}");

        // A second rotation of the same token (still in its grace) makes nothing.
        let events_before = all_events(&store).await;
        let tokens_before = store.tokens(None).await.unwrap().len();
        let error = store.rotate_token(first, &new_token(alice), 3600, audit("token_rotated", at(20))).await;
        assert!(matches!(error, Err(StoreError::Conflict(_))), "{url}: {error:?}");
        assert_eq!(store.tokens(None).await.unwrap().len(), tokens_before, "{url}");
        assert_eq!(all_events(&store).await, events_before, "{url}");
        assert_eq!(store.token(first).await.unwrap().unwrap().revoked_at, Some(at(3610)), "{url}");
        let missing = store.rotate_token(TokenId(9999), &new_token(alice), 0, audit("token_rotated", at(20))).await;
        assert!(matches!(missing, Err(StoreError::NotFound(_))), "{url}: {missing:?}");

        // The chain goes on in the first token's family.
        let (third, _) =
            store.rotate_token(second, &new_token(alice), 0, audit("token_rotated", at(30))).await.unwrap();
        let third_row = store.token(third).await.unwrap().unwrap();
        assert_eq!((third_row.family, third_row.previous), (first, Some(second)), "{url}");
        let second_row = store.token(second).await.unwrap().unwrap();
        assert_eq!(second_row.revoked_at, Some(at(30)), "{url}: no grace, revoked at once");
        assert!(second_row.is_revoked(at(30)), "{url}");
        assert_eq!(store.family(first).await.unwrap(), [first, second, third], "{url}");
        assert_eq!(store.family(unrelated).await.unwrap(), [unrelated], "{url}");
        assert_eq!(store.family(TokenId(9999)).await.unwrap(), [], "{url}");
    }
}

#[tokio::test]
async fn revoking_ends_a_grace_period_and_a_revoked_token_is_not_found() {
    for database in databases().await {
        let store = connect(&database).await.unwrap();
        let url = database.url.as_str();
        let alice = user(&store, "alice").await;
        let first = create(&store, &new_token(alice)).await;
        store.rotate_token(first, &new_token(alice), 3600, audit("token_rotated", T0)).await.unwrap();

        store.revoke_token(first, "revoked_by_owner", audit("token_revoked", at(60))).await.unwrap();
        let row = store.token(first).await.unwrap().unwrap();
        assert_eq!((row.revoked_at, row.revoke_reason.as_deref()), (Some(at(60)), Some("revoked_by_owner")), "{url}");
        assert!(row.is_revoked(at(60)), "{url}");
        let again = store.revoke_token(first, "revoked_by_owner", audit("token_revoked", at(61))).await;
        assert!(matches!(again, Err(StoreError::NotFound(_))), "{url}: {again:?}");
        assert_eq!(store.token(first).await.unwrap().unwrap().revoked_at, Some(at(60)), "{url}");

        // Once the grace period is over, the rotated token is revoked: nothing to end.
        let other = create(&store, &new_token(alice)).await;
        store.rotate_token(other, &new_token(alice), 100, audit("token_rotated", T0)).await.unwrap();
        let late = store.revoke_token(other, "revoked_by_owner", audit("token_revoked", at(100))).await;
        assert!(matches!(late, Err(StoreError::NotFound(_))), "{url}: {late:?}");
        let row = store.token(other).await.unwrap().unwrap();
        assert_eq!((row.revoked_at, row.revoke_reason.as_deref()), (Some(at(100)), Some("rotated")), "{url}");

        let unknown = store.revoke_token(TokenId(9999), "x", audit("token_revoked", at(1))).await;
        assert!(matches!(unknown, Err(StoreError::NotFound(_))), "{url}: {unknown:?}");
        assert_eq!(events(&store, "token_revoked").await.len(), 1, "{url}");
    }
}

#[tokio::test]
async fn revoke_tokens_revokes_each_active_one_with_its_own_audit_event() {
    for database in databases().await {
        let store = connect(&database).await.unwrap();
        let url = database.url.as_str();
        let alice = user(&store, "alice").await;
        let bob = user(&store, "bob").await;
        let a1 = create(&store, &new_token(alice)).await;
        let a2 = create(&store, &new_token(alice)).await;
        let b1 = create(&store, &new_token(bob)).await;
        let untouched = create(&store, &new_token(bob)).await;
        store.revoke_token(a2, "revoked_by_owner", audit("token_revoked", at(5))).await.unwrap();
        let before = store.changes_since(0, 1000).await.unwrap().last().unwrap().0;

        let batch = Audit::new("leak_reported", Actor { user: Some(bob), token: None }, at(10))
            .details(serde_json::json!({ "source": "scanner" }));
        let (revoked, sequence) =
            store.revoke_tokens(&[a1, a2, TokenId(9999), b1, a1], "leaked", batch.clone()).await.unwrap();
        assert_eq!(revoked, [a1, b1], "{url}");
        assert!(sequence > before, "{url}");
        let changes = store.changes_since(before, 1000).await.unwrap();
        assert_eq!(
            changes.iter().map(|(_, change)| change.clone()).collect::<Vec<_>>(),
            [Change::Token { id: a1.0 }, Change::Token { id: b1.0 }],
            "{url}"
        );

        for (id, reason, revoked_at) in [
            (a1, Some("leaked"), Some(at(10))),
            (b1, Some("leaked"), Some(at(10))),
            (a2, Some("revoked_by_owner"), Some(at(5))),
        ] {
            let row = store.token(id).await.unwrap().unwrap();
            assert_eq!((row.revoked_at, row.revoke_reason.as_deref()), (revoked_at, reason), "{url}: {id}");
        }
        assert_eq!(store.token(untouched).await.unwrap().unwrap().revoked_at, None, "{url}");

        let leaked = events(&store, "leak_reported").await;
        assert_eq!(
            leaked.iter().map(|event| (event.user, event.token)).collect::<Vec<_>>(),
            [(Some(alice), Some(a1)), (Some(bob), Some(b1))],
            "{url}"
        );
        for event in &leaked {
            assert_eq!(event.details["reason"], "leaked", "{url}");
            assert_eq!(event.details["source"], "scanner", "{url}: the caller's details are kept");
            assert_eq!((event.at, event.actor_user), (at(10), Some(bob)), "{url}");
        }

        // Nothing left to revoke: no event, no change.
        let events_before = all_events(&store).await;
        let (none, _) = store.revoke_tokens(&[a1, a2, b1], "leaked", batch).await.unwrap();
        assert!(none.is_empty(), "{url}");
        assert_eq!(all_events(&store).await, events_before, "{url}");
        assert_eq!(store.changes_since(sequence, 1000).await.unwrap().len(), 0, "{url}");
        let (empty, _) = store.revoke_tokens(&[], "leaked", audit("token_revoked", at(11))).await.unwrap();
        assert!(empty.is_empty(), "{url}");
    }
}

#[tokio::test]
async fn deleting_a_user_revokes_their_tokens_and_blocking_does_not() {
    for database in databases().await {
        let store = connect(&database).await.unwrap();
        let url = database.url.as_str();
        let alice = user(&store, "alice").await;
        let bob = user(&store, "bob").await;
        let active = create(&store, &new_token(alice)).await;
        let in_grace = create(&store, &new_token(alice)).await;
        let (replacement, _) =
            store.rotate_token(in_grace, &new_token(alice), 3600, audit("token_rotated", T0)).await.unwrap();
        let revoked = create(&store, &new_token(alice)).await;
        store.revoke_token(revoked, "revoked_by_owner", audit("token_revoked", at(1))).await.unwrap();
        let bobs = create(&store, &new_token(bob)).await;

        store.set_user_state(bob, UserState::Blocked, audit("user_blocked", at(5)).user(bob)).await.unwrap();
        let row = store.token(bobs).await.unwrap().unwrap();
        assert_eq!((row.revoked_at, row.revoke_reason), (None, None), "{url}: blocking keeps the tokens");
        assert_eq!(events(&store, "token_revoked").await.len(), 1, "{url}");

        let before = store.changes_since(0, 1000).await.unwrap().last().unwrap().0;
        store.set_user_state(alice, UserState::Deleted, audit("user_deleted", at(10)).user(alice)).await.unwrap();
        for id in [active, in_grace, replacement] {
            let row = store.token(id).await.unwrap().unwrap();
            assert_eq!(
                (row.revoked_at, row.revoke_reason.as_deref()),
                (Some(at(10)), Some("owner_deleted")),
                "{url}: {id}"
            );
        }
        let row = store.token(revoked).await.unwrap().unwrap();
        assert_eq!((row.revoked_at, row.revoke_reason.as_deref()), (Some(at(1)), Some("revoked_by_owner")), "{url}");
        assert_eq!(store.token(bobs).await.unwrap().unwrap().revoked_at, None, "{url}");

        let changes: Vec<Change> =
            store.changes_since(before, 1000).await.unwrap().into_iter().map(|(_, change)| change).collect();
        assert_eq!(changes[0], Change::User { id: alice.0 }, "{url}");
        let mut tokens: Vec<Change> = changes[1..].to_vec();
        tokens.sort_by_key(|change| match change {
            Change::Token { id } => *id,
            _ => 0,
        });
        assert_eq!(
            tokens,
            [Change::Token { id: active.0 }, Change::Token { id: in_grace.0 }, Change::Token { id: replacement.0 }],
            "{url}"
        );

        let revocations: Vec<AuditEvent> =
            events(&store, "token_revoked").await.into_iter().filter(|event| event.at == at(10)).collect();
        let mut revoked_ids: Vec<TokenId> = revocations.iter().filter_map(|event| event.token).collect();
        revoked_ids.sort_unstable();
        assert_eq!(revoked_ids, [active, in_grace, replacement], "{url}");
        for event in &revocations {
            assert_eq!(event.user, Some(alice), "{url}");
            assert_eq!(event.details["reason"], "owner_deleted", "{url}");
        }
        assert_eq!(events(&store, "user_deleted").await.len(), 1, "{url}");
    }
}

#[tokio::test]
async fn usage_moves_last_use_forward_and_reports_each_new_address_once() {
    for database in databases().await {
        let store = connect(&database).await.unwrap();
        let url = database.url.as_str();
        let alice = user(&store, "alice").await;
        let bob = user(&store, "bob").await;
        let token = create(&store, &new_token(alice)).await;
        let other = create(&store, &new_token(bob)).await;
        let used = |token: TokenId, owner: UserId, when: Timestamp, ips: &[&str]| TokenUse {
            token,
            owner,
            last_used_at: when,
            ips: ips.iter().map(|text| ip(text)).collect(),
            permissions: Vec::new(),
        };

        assert_eq!(store.record_usage(&[]).await.unwrap(), [], "{url}");
        let new = store.record_usage(&[used(token, alice, at(100), &["10.0.0.1", "2001:db8::1"])]).await.unwrap();
        assert_eq!(new, [(token, ip("10.0.0.1")), (token, ip("2001:db8::1"))], "{url}");
        assert_eq!(store.token(token).await.unwrap().unwrap().last_used_at, Some(at(100)), "{url}");

        // An older use (a slow replica) neither moves last use back nor repeats an address.
        let new = store.record_usage(&[used(token, alice, at(50), &["10.0.0.1"])]).await.unwrap();
        assert_eq!(new, [], "{url}");
        assert_eq!(store.token(token).await.unwrap().unwrap().last_used_at, Some(at(100)), "{url}");

        // An address is new per token.
        let new = store
            .record_usage(&[used(token, alice, at(200), &["10.0.0.1"]), used(other, bob, at(200), &["10.0.0.1"])])
            .await
            .unwrap();
        assert_eq!(new, [(other, ip("10.0.0.1"))], "{url}");
        let other_row = store.token(other).await.unwrap().unwrap();
        assert_eq!((other_row.last_used_at, other_row.last_ips.clone()), (Some(at(200)), vec![ip("10.0.0.1")]));

        let reported = events(&store, "token_used_from_new_ip").await;
        assert_eq!(
            reported
                .iter()
                .map(|event| (event.at, event.user, event.token, event.actor_token, event.details["ip"].clone()))
                .collect::<Vec<_>>(),
            [
                (at(100), Some(alice), Some(token), Some(token), serde_json::json!("10.0.0.1")),
                (at(100), Some(alice), Some(token), Some(token), serde_json::json!("2001:db8::1")),
                (at(200), Some(bob), Some(other), Some(other), serde_json::json!("10.0.0.1")),
            ],
            "{url}"
        );

        // At most five addresses, the most recently seen first; seeing one again moves it up.
        for (index, address) in ["10.0.0.2", "10.0.0.3", "10.0.0.4", "10.0.0.5"].into_iter().enumerate() {
            let when = at(300 + i64::try_from(index).unwrap());
            store.record_usage(&[used(token, alice, when, &[address])]).await.unwrap();
        }
        let expected = [ip("10.0.0.5"), ip("10.0.0.4"), ip("10.0.0.3"), ip("10.0.0.2"), ip("10.0.0.1")];
        let row = store.token(token).await.unwrap().unwrap();
        assert_eq!((row.last_used_at, row.last_ips.as_slice()), (Some(at(303)), &expected[..]), "{url}");
        let new = store.record_usage(&[used(token, alice, at(400), &["2001:db8::1"])]).await.unwrap();
        assert_eq!(new, [], "{url}: seen at 100 already");
        let expected = [ip("2001:db8::1"), ip("10.0.0.5"), ip("10.0.0.4"), ip("10.0.0.3"), ip("10.0.0.2")];
        assert_eq!(store.token(token).await.unwrap().unwrap().last_ips, expected, "{url}");
        for listed in [store.tokens(Some(alice)).await.unwrap(), store.tokens(None).await.unwrap()] {
            let row = listed.iter().find(|row| row.id == token).unwrap();
            assert_eq!((row.last_used_at, row.last_ips.as_slice()), (Some(at(400)), &expected[..]), "{url}");
        }
        let listed = store.tokens(None).await.unwrap();
        assert_eq!(listed.iter().find(|row| row.id == other).unwrap().last_ips, [ip("10.0.0.1")], "{url}");
        assert_eq!(events(&store, "token_used_from_new_ip").await.len(), 7, "{url}");

        // Addresses of one flush (one second) keep their order: the last listed is the newest.
        store.record_usage(&[used(other, bob, at(500), &["10.9.9.9", "10.0.0.1", "10.0.0.9"])]).await.unwrap();
        let expected = [ip("10.0.0.9"), ip("10.0.0.1"), ip("10.9.9.9")];
        assert_eq!(store.token(other).await.unwrap().unwrap().last_ips, expected, "{url}");
        let listed = store.tokens(Some(bob)).await.unwrap();
        assert_eq!(listed.iter().find(|row| row.id == other).unwrap().last_ips, expected, "{url}");
        assert_eq!(events(&store, "token_used_from_new_ip").await.len(), 9, "{url}");
    }
}

#[tokio::test]
async fn permission_uses_add_up_per_permission_and_boundary() {
    for database in databases().await {
        let store = connect(&database).await.unwrap();
        let url = database.url.as_str();
        let resources = crate::support::resources();
        let permission = |text: &str| resources.permission(text).unwrap();
        let alice = user(&store, "alice").await;
        let bob = user(&store, "bob").await;
        let token = create(&store, &new_token(alice)).await;
        let other = create(&store, &new_token(bob)).await;
        let one = |name: &str, boundary: Boundary, uses: u64, first: i64, last: i64| PermissionUse {
            permission: permission(name),
            boundary,
            uses,
            first_used: at(first),
            last_used: at(last),
        };
        let used = |token: TokenId, owner: UserId, permissions: Vec<PermissionUse>| TokenUse {
            token,
            owner,
            last_used_at: permissions.iter().map(|p| p.last_used).max().unwrap(),
            ips: Vec::new(),
            permissions,
        };
        let project = Boundary::Project(ProjectId(7));
        store
            .record_usage(&[
                used(
                    token,
                    alice,
                    vec![one("issue:read", project, 3, 10, 20), one("issue:create", project, 1, 15, 15)],
                ),
                used(other, bob, vec![one("issue:read", Boundary::Group(GroupId(7)), 2, 10, 30)]),
            ])
            .await
            .unwrap();
        // A later flush adds to the counts; an earlier first use (a slow replica) moves the
        // first use back, never the last use.
        store
            .record_usage(&[used(
                token,
                alice,
                vec![
                    one("issue:read", project, 2, 5, 18),
                    one("issue:read", Boundary::User(alice), 1, 40, 40),
                    one("admin_setting:read", Boundary::Instance, 1, 50, 50),
                ],
            )])
            .await
            .unwrap();

        let mine = store.permission_uses(None, Some(token), at(0)).await.unwrap();
        let mut expected = vec![
            (token, one("admin_setting:read", Boundary::Instance, 1, 50, 50)),
            (token, one("issue:create", project, 1, 15, 15)),
            (token, one("issue:read", project, 5, 5, 20)),
            (token, one("issue:read", Boundary::User(alice), 1, 40, 40)),
        ];
        let key = |(_, each): &(TokenId, PermissionUse)| (resources.permission_name(each.permission), each.last_used);
        let mut sorted = mine.clone();
        sorted.sort_by_key(key);
        expected.sort_by_key(key);
        assert_eq!(sorted, expected, "{url}");
        // `since` compares with the last use, at the second.
        let recent = store.permission_uses(None, Some(token), at(20)).await.unwrap();
        assert_eq!(recent.len(), 3, "{url}: issue:create (15) is older: {recent:?}");
        assert!(recent.iter().all(|(_, each)| each.last_used >= at(20)), "{url}");
        // By owner, and across every token.
        let bobs = store.permission_uses(Some(bob), None, at(0)).await.unwrap();
        assert_eq!(bobs, [(other, one("issue:read", Boundary::Group(GroupId(7)), 2, 10, 30))], "{url}");
        assert_eq!(store.permission_uses(Some(alice), None, at(0)).await.unwrap().len(), 4, "{url}");
        let all = store.permission_uses(None, None, at(0)).await.unwrap();
        assert_eq!(all.len(), 5, "{url}");
        assert!(all.windows(2).all(|pair| pair[0].0 <= pair[1].0), "{url}: ordered by token");
    }
}

#[tokio::test]
async fn expiry_notices_are_due_at_each_threshold_to_the_second() {
    for database in databases().await {
        let store = connect(&database).await.unwrap();
        let url = database.url.as_str();
        let alice = user(&store, "alice").await;
        let expires = T0.plus_days(90);
        let token = create(&store, &token_at(alice, T0, Some(expires)).0).await;
        let due = |now: Timestamp| {
            let store = &store;
            async move {
                store
                    .expiry_notices_due(now, 100)
                    .await
                    .unwrap()
                    .into_iter()
                    .map(|(row, days)| (row.id, days))
                    .collect::<Vec<_>>()
            }
        };
        let before = |days: i64, seconds: i64| Timestamp(expires.0 - days * DAY - seconds);

        assert_eq!(due(T0).await, [], "{url}");
        assert_eq!(due(before(60, 1)).await, [], "{url}: a second before 60 days");
        assert_eq!(due(before(60, 0)).await, [(token, 60)], "{url}");
        assert_eq!(due(before(30, 1)).await, [(token, 60)], "{url}");
        assert_eq!(due(before(30, 0)).await, [(token, 30)], "{url}");
        assert_eq!(due(before(7, 1)).await, [(token, 30)], "{url}");
        assert_eq!(due(before(7, 0)).await, [(token, 7)], "{url}");
        assert_eq!(due(before(0, 1)).await, [(token, 7)], "{url}");
        assert_eq!(due(expires).await, [(token, 0)], "{url}");
        assert_eq!(due(expires.plus_days(400)).await, [(token, 0)], "{url}");
        let (row, _) = store.expiry_notices_due(expires, 100).await.unwrap().remove(0);
        assert_eq!((row.owner, row.expires_at, row.last_notice_days), (alice, Some(expires), None), "{url}");

        // Each notice once, and after it nothing until the next threshold.
        let notice = |days: u32, now: Timestamp| {
            let event = if days == 0 { "token_expired" } else { "token_expiry_notice" };
            Audit::new(event, Actor::default(), now).user(alice).details(serde_json::json!({ "days_before": days }))
        };
        assert!(store.record_expiry_notice(token, 60, notice(60, before(60, 0))).await.unwrap(), "{url}");
        assert!(!store.record_expiry_notice(token, 60, notice(60, before(60, 0))).await.unwrap(), "{url}");
        assert_eq!(store.token(token).await.unwrap().unwrap().last_notice_days, Some(60), "{url}");
        assert_eq!(due(before(60, 0)).await, [], "{url}");
        assert_eq!(due(before(30, 1)).await, [], "{url}");
        assert_eq!(due(before(30, 0)).await, [(token, 30)], "{url}");
        assert!(store.record_expiry_notice(token, 30, notice(30, before(30, 0))).await.unwrap(), "{url}");
        assert!(!store.record_expiry_notice(token, 60, notice(60, before(30, 0))).await.unwrap(), "{url}: larger");
        assert_eq!(due(before(7, 1)).await, [], "{url}");
        assert_eq!(due(before(7, 0)).await, [(token, 7)], "{url}");
        assert!(store.record_expiry_notice(token, 7, notice(7, before(7, 0))).await.unwrap(), "{url}");
        assert_eq!(due(before(0, 1)).await, [], "{url}");
        assert_eq!(due(expires).await, [(token, 0)], "{url}");
        assert!(store.record_expiry_notice(token, 0, notice(0, expires)).await.unwrap(), "{url}");
        assert!(!store.record_expiry_notice(token, 0, notice(0, expires)).await.unwrap(), "{url}");
        assert!(!store.record_expiry_notice(token, 7, notice(7, expires)).await.unwrap(), "{url}");
        assert_eq!(due(expires.plus_days(400)).await, [], "{url}");
        assert_eq!(store.token(token).await.unwrap().unwrap().last_notice_days, Some(0), "{url}");

        let sent = events(&store, "token_expiry_notice").await;
        assert_eq!(sent.iter().map(|event| event.details["days_before"].clone()).collect::<Vec<_>>(), [60, 30, 7]);
        assert!(sent.iter().all(|event| event.token == Some(token) && event.user == Some(alice)), "{url}");
        let expired = events(&store, "token_expired").await;
        assert_eq!((expired.len(), expired[0].token, expired[0].at), (1, Some(token), expires), "{url}");
    }
}

#[tokio::test]
async fn a_token_made_close_to_its_expiry_gets_the_nearest_notice_first() {
    for database in databases().await {
        let store = connect(&database).await.unwrap();
        let url = database.url.as_str();
        let alice = user(&store, "alice").await;
        let expires = T0.plus_days(20);
        let token = create(&store, &token_at(alice, T0, Some(expires)).0).await;
        let due = store.expiry_notices_due(T0, 100).await.unwrap();
        assert_eq!(due.iter().map(|(row, days)| (row.id, *days)).collect::<Vec<_>>(), [(token, 30)], "{url}");
        assert!(
            store.record_expiry_notice(token, 30, audit("token_expiry_notice", T0).user(alice)).await.unwrap(),
            "{url}"
        );
        // The 60-day notice never comes: it is later than one already sent.
        assert!(
            !store.record_expiry_notice(token, 60, audit("token_expiry_notice", T0).user(alice)).await.unwrap(),
            "{url}"
        );
        assert!(store.expiry_notices_due(T0.plus_days(12), 100).await.unwrap().is_empty(), "{url}");
        let due = store.expiry_notices_due(T0.plus_days(13), 100).await.unwrap();
        assert_eq!(due.iter().map(|(row, days)| (row.id, *days)).collect::<Vec<_>>(), [(token, 7)], "{url}");
    }
}

#[tokio::test]
async fn revoked_rotated_and_unexpiring_tokens_get_no_expiry_notice() {
    for database in databases().await {
        let store = connect(&database).await.unwrap();
        let url = database.url.as_str();
        let alice = user(&store, "alice").await;
        let soon = T0.plus_days(5);
        let later = T0.plus_days(6);
        let revoked = create(&store, &token_at(alice, T0, Some(soon)).0).await;
        store.revoke_token(revoked, "revoked_by_owner", audit("token_revoked", T0)).await.unwrap();
        let rotated = create(&store, &token_at(alice, T0, Some(soon)).0).await;
        let (replacement, _) = store
            .rotate_token(rotated, &token_at(alice, T0, Some(later)).0, 86_400, audit("token_rotated", T0))
            .await
            .unwrap();
        create(&store, &token_at(alice, T0, None).0).await;
        create(&store, &token_at(alice, T0, Some(T0.plus_days(61))).0).await;
        let expired = create(&store, &token_at(alice, T0, Some(T0)).0).await;
        let third = create(&store, &token_at(alice, T0, Some(T0.plus_days(59))).0).await;

        let due = store.expiry_notices_due(T0, 100).await.unwrap();
        assert_eq!(
            due.iter().map(|(row, days)| (row.id, *days)).collect::<Vec<_>>(),
            [(expired, 0), (replacement, 7), (third, 60)],
            "{url}: soonest expiry first"
        );
        let limited = store.expiry_notices_due(T0, 2).await.unwrap();
        assert_eq!(ids(&limited, |(row, _)| row.id), [expired, replacement], "{url}");

        for token in [revoked, rotated] {
            let recorded = store.record_expiry_notice(token, 7, audit("token_expiry_notice", T0)).await.unwrap();
            assert!(!recorded, "{url}: {token}");
            assert_eq!(store.token(token).await.unwrap().unwrap().last_notice_days, None, "{url}");
        }
        assert!(events(&store, "token_expiry_notice").await.is_empty(), "{url}");
    }
}

#[tokio::test]
async fn inactive_tokens_count_from_last_use_or_else_creation() {
    for database in databases().await {
        let store = connect(&database).await.unwrap();
        let url = database.url.as_str();
        let alice = user(&store, "alice").await;
        let never_used = create(&store, &token_at(alice, T0, None).0).await;
        let used = create(&store, &token_at(alice, T0, None).0).await;
        let younger = create(&store, &token_at(alice, T0.plus_days(5), None).0).await;
        let revoked = create(&store, &token_at(alice, T0, None).0).await;
        store.revoke_token(revoked, "revoked_by_owner", audit("token_revoked", T0)).await.unwrap();
        let rotated = create(&store, &token_at(alice, T0, None).0).await;
        let (replacement, _) = store
            .rotate_token(rotated, &token_at(alice, T0.plus_days(20), None).0, 86_400 * 30, audit("token_rotated", T0))
            .await
            .unwrap();
        store
            .record_usage(&[TokenUse {
                token: used,
                owner: alice,
                last_used_at: T0.plus_days(10),
                ips: vec![ip("10.1.1.1")],
                permissions: Vec::new(),
            }])
            .await
            .unwrap();

        assert_eq!(store.inactive_tokens(T0, T0, 100).await.unwrap(), [], "{url}");
        assert_eq!(store.inactive_tokens(T0.plus_days(5), T0.plus_days(5), 100).await.unwrap(), [never_used], "{url}");
        assert_eq!(
            store.inactive_tokens(Timestamp(T0.plus_days(5).0 + 1), T0.plus_days(6), 100).await.unwrap(),
            [never_used, younger],
            "{url}"
        );
        assert_eq!(
            store.inactive_tokens(Timestamp(T0.plus_days(10).0 + 1), T0.plus_days(11), 100).await.unwrap(),
            [never_used, used, younger],
            "{url}"
        );
        assert_eq!(
            store.inactive_tokens(Timestamp(T0.plus_days(10).0 + 1), T0.plus_days(11), 2).await.unwrap(),
            [never_used, used],
            "{url}"
        );
        assert_eq!(
            store.inactive_tokens(T0.plus_days(21), T0.plus_days(21), 100).await.unwrap(),
            [never_used, used, younger, replacement],
            "{url}"
        );

        // A token that expires is inactive until it expires, and then no longer: it is
        // refused already, and was not ended by inactivity.
        let expiring = create(&store, &token_at(alice, T0, Some(T0.plus_days(3))).0).await;
        let cutoff = T0.plus_days(1);
        assert_eq!(store.inactive_tokens(cutoff, T0.plus_days(2), 100).await.unwrap(), [never_used, expiring], "{url}");
        let at_expiry = T0.plus_days(3);
        assert_eq!(
            store.inactive_tokens(cutoff, Timestamp(at_expiry.0 - 1), 100).await.unwrap(),
            [never_used, expiring],
            "{url}"
        );
        assert_eq!(store.inactive_tokens(cutoff, at_expiry, 100).await.unwrap(), [never_used], "{url}");
    }
}

#[tokio::test]
async fn a_job_lease_has_one_holder_until_it_runs_out() {
    for database in databases().await {
        let store = connect(&database).await.unwrap();
        let url = database.url.as_str();
        assert!(store.try_lease("inactivity", "a", T0, at(120)).await.unwrap(), "{url}");
        assert!(!store.try_lease("inactivity", "b", at(60), at(180)).await.unwrap(), "{url}");
        assert!(!store.try_lease("inactivity", "b", at(119), at(239)).await.unwrap(), "{url}");
        // The holder renews, which pushes the end out.
        assert!(store.try_lease("inactivity", "a", at(60), at(180)).await.unwrap(), "{url}");
        assert!(!store.try_lease("inactivity", "b", at(120), at(240)).await.unwrap(), "{url}");
        assert!(!store.try_lease("inactivity", "b", at(179), at(299)).await.unwrap(), "{url}");
        // At the end of the lease another holder takes it.
        assert!(store.try_lease("inactivity", "b", at(180), at(300)).await.unwrap(), "{url}");
        assert!(!store.try_lease("inactivity", "a", at(200), at(320)).await.unwrap(), "{url}");
        // Leases on other jobs are independent.
        assert!(store.try_lease("expiry", "a", at(200), at(320)).await.unwrap(), "{url}");
        assert!(!store.try_lease("expiry", "b", at(200), at(320)).await.unwrap(), "{url}");
    }
}

#[tokio::test]
async fn audit_events_become_deliveries_for_the_targets_that_want_them() {
    for database in databases().await {
        let lifecycle = WebhookTarget { url: "https://hooks.example/lifecycle".into(), events: vec![] };
        let settings =
            WebhookTarget { url: "https://hooks.example/settings".into(), events: vec!["settings_changed".into()] };
        let both = WebhookTarget {
            url: "https://hooks.example/both".into(),
            events: vec!["token_revoked".into(), "settings_changed".into()],
        };
        let store =
            connect_with_webhooks(&database, vec![lifecycle.clone(), settings.clone(), both.clone()]).await.unwrap();
        let url = database.url.as_str();
        assert!(LIFECYCLE_EVENTS.contains(&"token_revoked") && !LIFECYCLE_EVENTS.contains(&"settings_changed"));
        let alice = user(&store, "alice").await;
        let bob = user(&store, "bob").await;
        let (first, first_secret) = token_at(alice, T0, Some(T0.plus_days(30)));
        let (second, second_secret) = token_at(bob, T0, Some(T0.plus_days(30)));
        let first_id = create(&store, &first).await;
        let second_id = create(&store, &second).await;
        assert!(deliveries(&store, false).await.is_empty(), "{url}: user_created and token_created are not sent");

        let (revoked, _) =
            store.revoke_tokens(&[first_id, second_id], "leaked", audit("token_revoked", at(10))).await.unwrap();
        assert_eq!(revoked, [first_id, second_id], "{url}");
        let revocations = events(&store, "token_revoked").await;
        let all = deliveries(&store, false).await;
        assert_eq!(
            all.iter().map(|d| (d.audit_event_id, d.url.as_str(), d.event.as_str())).collect::<Vec<_>>(),
            [
                (revocations[0].id, lifecycle.url.as_str(), "token_revoked"),
                (revocations[0].id, both.url.as_str(), "token_revoked"),
                (revocations[1].id, lifecycle.url.as_str(), "token_revoked"),
                (revocations[1].id, both.url.as_str(), "token_revoked"),
            ],
            "{url}"
        );
        for (delivery, (token, owner, secret, digest)) in all.iter().zip([
            (first_id, alice, &first_secret, &first.digest),
            (first_id, alice, &first_secret, &first.digest),
            (second_id, bob, &second_secret, &second.digest),
            (second_id, bob, &second_secret, &second.digest),
        ]) {
            assert_eq!(
                (delivery.created_at, delivery.next_attempt_at, delivery.attempts, delivery.delivered_at),
                (at(10), at(10), 0, None),
                "{url}"
            );
            let payload: serde_json::Value = serde_json::from_str(&delivery.payload).unwrap();
            assert_eq!(payload["event"], "token_revoked", "{url}");
            assert_eq!(payload["token_id"], token.0, "{url}");
            assert_eq!(payload["user_id"], owner.0, "{url}");
            assert_eq!(payload["details"]["reason"], "leaked", "{url}");
            assert!(!delivery.payload.contains(secret.as_str()), "{url}: the secret leaked into {}", delivery.payload);
            assert!(
                !delivery.payload.contains(&hex(digest.as_bytes())),
                "{url}: the digest is in {}",
                delivery.payload
            );
            assert!(!delivery.payload.contains("digest"), "{url}: {}", delivery.payload);
        }

        // A non-lifecycle event goes only where it is listed.
        store.put_settings(&patgate_store::Settings::default(), audit("settings_changed", at(20))).await.unwrap();
        let changed = events(&store, "settings_changed").await;
        let all = deliveries(&store, false).await;
        assert_eq!(
            all[4..].iter().map(|d| (d.audit_event_id, d.url.as_str(), d.event.as_str())).collect::<Vec<_>>(),
            [
                (changed[0].id, settings.url.as_str(), "settings_changed"),
                (changed[0].id, both.url.as_str(), "settings_changed")
            ],
            "{url}"
        );

        // A lifecycle event only the default target wants, from a usage flush.
        let third = create(&store, &new_token(alice)).await;
        store
            .record_usage(&[TokenUse {
                token: third,
                owner: alice,
                last_used_at: at(30),
                ips: vec![ip("192.0.2.7")],
                permissions: Vec::new(),
            }])
            .await
            .unwrap();
        let all = deliveries(&store, false).await;
        assert_eq!(all.len(), 7, "{url}");
        assert_eq!((all[6].url.as_str(), all[6].event.as_str()), (lifecycle.url.as_str(), "token_used_from_new_ip"));
        let payload: serde_json::Value = serde_json::from_str(&all[6].payload).unwrap();
        assert_eq!((payload["token_id"].clone(), payload["user_id"].clone()), (third.0.into(), alice.0.into()));

        // A write that fails leaves neither an event nor a delivery behind.
        let failed = store.rotate_token(first_id, &new_token(alice), 0, audit("token_rotated", at(40))).await;
        assert!(matches!(failed, Err(StoreError::Conflict(_))), "{url}: {failed:?}");
        assert_eq!(deliveries(&store, false).await.len(), 7, "{url}");
    }
}

#[tokio::test]
async fn a_store_without_targets_and_a_target_listed_twice() {
    for database in databases().await {
        let url = database.url.as_str();
        let plain = connect(&database).await.unwrap();
        let alice = user(&plain, "alice").await;
        let token = create(&plain, &new_token(alice)).await;
        plain.revoke_token(token, "revoked_by_owner", audit("token_revoked", at(1))).await.unwrap();
        assert!(deliveries(&plain, false).await.is_empty(), "{url}");
        drop(plain);

        // The same URL twice (a repeated --webhook-url) still gets one delivery per event,
        // and the write that makes the event does not fail.
        let target = WebhookTarget { url: "https://hooks.example/a".into(), events: vec![] };
        let store = connect_with_webhooks(&database, vec![target.clone(), target.clone()]).await.unwrap();
        let token = create(&store, &new_token(alice)).await;
        store.revoke_token(token, "revoked_by_owner", audit("token_revoked", at(2))).await.unwrap();
        let all = deliveries(&store, false).await;
        assert_eq!(all.iter().map(|d| d.url.as_str()).collect::<Vec<_>>(), [target.url.as_str()], "{url}");
    }
}

#[tokio::test]
async fn only_deliveries_to_a_configured_receiver_are_claimed() {
    for database in databases().await {
        let url = database.url.as_str();
        let (a, b) = (
            WebhookTarget { url: "https://hooks.example/a".into(), events: vec![] },
            WebhookTarget { url: "https://hooks.example/b".into(), events: vec![] },
        );
        let both = connect_with_webhooks(&database, vec![a.clone(), b.clone()]).await.unwrap();
        let alice = user(&both, "alice").await;
        let token = create(&both, &new_token(alice)).await;
        both.revoke_token(token, "revoked_by_owner", audit("token_revoked", at(10))).await.unwrap();
        assert_eq!(deliveries(&both, true).await.len(), 2, "{url}");
        drop(both);

        // `a` is removed from the configuration: its delivery is not claimed (nor sent).
        let only_b = connect_with_webhooks(&database, vec![b.clone()]).await.unwrap();
        let claimed = only_b.claim_deliveries(at(10), at(40), 10).await.unwrap();
        assert_eq!(claimed.iter().map(|d| d.url.as_str()).collect::<Vec<_>>(), [b.url.as_str()], "{url}");
        drop(only_b);
        // Without any webhook nothing is claimed; configured again, `a`'s backlog is.
        let none = connect_with_webhooks(&database, vec![]).await.unwrap();
        assert!(none.claim_deliveries(at(10), at(40), 10).await.unwrap().is_empty(), "{url}");
        drop(none);
        let again = connect_with_webhooks(&database, vec![a.clone()]).await.unwrap();
        let claimed = again.claim_deliveries(at(10), at(40), 10).await.unwrap();
        assert_eq!(claimed.iter().map(|d| d.url.as_str()).collect::<Vec<_>>(), [a.url.as_str()], "{url}");
    }
}

#[tokio::test]
async fn deliveries_are_claimed_then_delivered_once_or_retried_later() {
    for database in databases().await {
        let target = WebhookTarget { url: "https://hooks.example/a".into(), events: vec![] };
        let store = connect_with_webhooks(&database, vec![target]).await.unwrap();
        let url = database.url.as_str();
        let alice = user(&store, "alice").await;
        let tokens = [
            create(&store, &new_token(alice)).await,
            create(&store, &new_token(alice)).await,
            create(&store, &new_token(alice)).await,
        ];
        store.revoke_tokens(&tokens, "inactive", audit("token_revoked", at(10))).await.unwrap();
        let made = deliveries(&store, true).await;
        assert_eq!(made.len(), 3, "{url}");

        assert!(store.claim_deliveries(at(9), at(39), 10).await.unwrap().is_empty(), "{url}: not due yet");
        let claimed = store.claim_deliveries(at(10), at(40), 2).await.unwrap();
        assert_eq!(claimed.iter().map(|d| d.id).collect::<Vec<_>>(), [made[0].id, made[1].id], "{url}");
        let rest = store.claim_deliveries(at(10), at(40), 10).await.unwrap();
        assert_eq!(rest.iter().map(|d| d.id).collect::<Vec<_>>(), [made[2].id], "{url}");
        assert!(store.claim_deliveries(at(39), at(69), 10).await.unwrap().is_empty(), "{url}: claimed until 40");

        // Delivered: never claimed again, no longer pending.
        let delivered = DeliveryAttempt { at: at(20), status: Some(204), error: None, retry_at: at(20) };
        store.record_delivery(made[0].id, &delivered).await.unwrap();
        // Failed: tried again at retry_at, not before.
        let failed =
            DeliveryAttempt { at: at(21), status: Some(503), error: Some("HTTP 503".into()), retry_at: at(100) };
        store.record_delivery(made[1].id, &failed).await.unwrap();

        let pending = deliveries(&store, true).await;
        assert_eq!(pending.iter().map(|d| d.id).collect::<Vec<_>>(), [made[1].id, made[2].id], "{url}");
        let all = deliveries(&store, false).await;
        assert_eq!(
            (all[0].delivered_at, all[0].attempts, all[0].last_status, all[0].last_error.clone()),
            (Some(at(20)), 1, Some(204), None),
            "{url}"
        );
        assert_eq!(
            (all[1].delivered_at, all[1].attempts, all[1].last_status, all[1].next_attempt_at),
            (None, 1, Some(503), at(100)),
            "{url}"
        );
        assert_eq!(all[1].last_error.as_deref(), Some("HTTP 503"), "{url}");

        // The third one's claim runs out at 40 and it is claimable again; the failed one waits.
        let again = store.claim_deliveries(at(40), at(130), 10).await.unwrap();
        assert_eq!(again.iter().map(|d| d.id).collect::<Vec<_>>(), [made[2].id], "{url}");
        assert!(store.claim_deliveries(at(99), at(129), 10).await.unwrap().is_empty(), "{url}");
        let retried = store.claim_deliveries(at(100), at(130), 10).await.unwrap();
        assert_eq!(retried.iter().map(|d| (d.id, d.attempts)).collect::<Vec<_>>(), [(made[1].id, 1)], "{url}");
        store.record_delivery(made[1].id, &DeliveryAttempt { at: at(101), ..delivered.clone() }).await.unwrap();
        store.record_delivery(made[2].id, &DeliveryAttempt { at: at(102), ..delivered.clone() }).await.unwrap();
        assert!(deliveries(&store, true).await.is_empty(), "{url}");
        assert!(store.claim_deliveries(at(10_000), at(10_030), 10).await.unwrap().is_empty(), "{url}");

        // Recording again on a delivered one changes nothing.
        store.record_delivery(made[0].id, &failed).await.unwrap();
        let all = deliveries(&store, false).await;
        assert_eq!((all[0].delivered_at, all[0].attempts), (Some(at(20)), 1), "{url}");
        assert_eq!((all[1].delivered_at, all[1].attempts), (Some(at(101)), 2), "{url}");

        // Newest first, paged by id.
        let page = store.deliveries(&DeliveryFilter { limit: 2, ..DeliveryFilter::default() }).await.unwrap();
        assert_eq!(page.iter().map(|d| d.id).collect::<Vec<_>>(), [made[2].id, made[1].id], "{url}");
        let next = store
            .deliveries(&DeliveryFilter { before_id: Some(page[1].id), limit: 2, ..DeliveryFilter::default() })
            .await
            .unwrap();
        assert_eq!(next.iter().map(|d| d.id).collect::<Vec<_>>(), [made[0].id], "{url}");
    }
}

/// An import that marks a user deleted revokes their tokens as `DELETE /admin/users/…`
/// does, with the same audit events and webhook deliveries: a later import that makes the
/// user active again brings back the user, not the tokens.
#[tokio::test]
async fn importing_a_user_as_deleted_revokes_their_tokens_for_good() {
    for database in databases().await {
        let target = WebhookTarget { url: "https://hooks.example/patgate".into(), events: Vec::new() };
        let store = connect_with_webhooks(&database, vec![target]).await.unwrap();
        let url = database.url.as_str();
        let bob = user(&store, "bob").await;
        let alice = user(&store, "alice").await;
        let token = create(&store, &new_token(bob)).await;
        let in_grace = create(&store, &new_token(bob)).await;
        let (replacement, _) =
            store.rotate_token(in_grace, &new_token(bob), 3600, audit("token_rotated", T0)).await.unwrap();
        let alices = create(&store, &new_token(alice)).await;
        let before = store.changes_since(0, 1000).await.unwrap().last().unwrap().0;
        let import = |state: UserState| DirectoryBatch {
            users: vec![("bob".into(), None, false, state), ("alice".into(), None, false, UserState::Active)],
            ..DirectoryBatch::default()
        };

        store.import(&import(UserState::Deleted), audit("directory_imported", at(10))).await.unwrap();
        for id in [token, in_grace, replacement] {
            let row = store.token(id).await.unwrap().unwrap();
            assert_eq!(
                (row.revoked_at, row.revoke_reason.as_deref()),
                (Some(at(10)), Some("owner_deleted")),
                "{url}: {id}"
            );
        }
        assert_eq!(store.token(alices).await.unwrap().unwrap().revoked_at, None, "{url}");
        let changes: Vec<Change> =
            store.changes_since(before, 1000).await.unwrap().into_iter().map(|(_, change)| change).collect();
        for id in [token, in_grace, replacement] {
            assert!(changes.contains(&Change::Token { id: id.0 }), "{url}: {changes:?}");
        }
        let revocations: Vec<AuditEvent> =
            events(&store, "token_revoked").await.into_iter().filter(|event| event.at == at(10)).collect();
        let mut revoked: Vec<TokenId> = revocations.iter().filter_map(|event| event.token).collect();
        revoked.sort_unstable();
        assert_eq!(revoked, [token, in_grace, replacement], "{url}");
        for event in &revocations {
            assert_eq!((event.user, &event.details["reason"]), (Some(bob), &serde_json::json!("owner_deleted")));
        }
        let sent: Vec<Delivery> =
            deliveries(&store, true).await.into_iter().filter(|d| d.event == "token_revoked").collect();
        assert_eq!(sent.len(), 3, "{url}: {sent:?}");

        store.import(&import(UserState::Active), audit("directory_imported", at(20))).await.unwrap();
        assert_eq!(store.user(bob).await.unwrap().unwrap().state, UserState::Active, "{url}");
        for id in [token, in_grace, replacement] {
            assert_eq!(store.token(id).await.unwrap().unwrap().revoked_at, Some(at(10)), "{url}: {id} stays revoked");
        }
    }
}

/// Recording usage writes no change, so it does not take the lock that orders the change
/// log: another replica revokes a token while a flush is still in its transaction (here
/// held there by a row a third connection locks; PostgreSQL only, since SQLite has one
/// writer at a time anyway).
#[tokio::test]
async fn a_usage_flush_in_progress_does_not_hold_up_a_revocation_elsewhere() {
    for database in databases().await {
        if !database.url.starts_with("postgres") {
            continue;
        }
        let flusher = std::sync::Arc::new(connect(&database).await.unwrap());
        let revoker = connect(&database).await.unwrap();
        let alice = user(&flusher, "alice").await;
        let used = create(&flusher, &new_token(alice)).await;
        let other = create(&flusher, &new_token(alice)).await;

        let mut holder = flusher.pool().begin().await.unwrap();
        sqlx::query("SELECT id FROM tokens WHERE id = $1 FOR UPDATE")
            .bind(i64::try_from(used.0).unwrap())
            .fetch_one(&mut *holder)
            .await
            .unwrap();
        let flush = tokio::spawn({
            let flusher = flusher.clone();
            async move {
                let uses: Vec<TokenUse> = (0..50)
                    .map(|n| TokenUse {
                        token: used,
                        owner: alice,
                        last_used_at: at(100 + n),
                        ips: vec![ip(&format!("10.0.0.{n}"))],
                        permissions: Vec::new(),
                    })
                    .collect();
                flusher.record_usage(&uses).await
            }
        });
        // The flush is in its transaction, waiting for the row.
        let mut waiting = false;
        for _ in 0..3000 {
            let blocked: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM pg_locks WHERE NOT granted")
                .fetch_one(revoker.pool())
                .await
                .unwrap();
            if blocked > 0 {
                waiting = true;
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        assert!(waiting, "the flush never waited for the locked row");
        assert!(!flush.is_finished());

        // Not a timing assertion: without the fix the revocation waits until the flush ends,
        // which is never while the row stays locked.
        let revoked = tokio::time::timeout(
            std::time::Duration::from_secs(30),
            revoker.revoke_token(other, "revoked_by_owner", audit("token_revoked", at(200))),
        )
        .await;
        assert!(revoked.is_ok(), "{}: the revocation waited for the usage flush", database.url);
        revoked.unwrap().unwrap();
        assert!(revoker.token(other).await.unwrap().unwrap().revoked_at.is_some());

        holder.rollback().await.unwrap();
        flush.await.unwrap().unwrap();
        assert_eq!(flusher.token(used).await.unwrap().unwrap().last_used_at, Some(at(149)));
    }
}

/// SQLite: a write that reads before it writes (a rotation) while another connection holds
/// the write lock and commits a write waits for it and succeeds. Started as a reader
/// (`BEGIN DEFERRED`) it would fail with SQLITE_BUSY: the upgrade to writer cannot wait for
/// a snapshot that another write has made stale.
#[tokio::test]
async fn an_sqlite_rotation_waits_for_another_connection_that_writes() {
    let database = databases().await.into_iter().next().unwrap();
    let store = std::sync::Arc::new(connect(&database).await.unwrap());
    let alice = user(&store, "alice").await;
    let old = create(&store, &new_token(alice)).await;
    let mut other = store.pool().acquire().await.unwrap();
    sqlx::query("BEGIN IMMEDIATE").execute(&mut *other).await.unwrap();
    sqlx::query("UPDATE users SET name = 'Alice' WHERE username = 'alice'").execute(&mut *other).await.unwrap();
    let rotation = tokio::spawn({
        let store = store.clone();
        async move { store.rotate_token(old, &new_token(alice), 0, audit("token_rotated", at(1))).await }
    });
    // Time for the rotation to start and wait (the other writer is not done yet): not an
    // assertion on time, since it waits (up to the busy timeout) however long this takes.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    sqlx::query("COMMIT").execute(&mut *other).await.unwrap();
    let rotated = rotation.await.unwrap();
    assert!(rotated.is_ok(), "{}: {rotated:?}", database.url);
}
