//! The behaviour every backend must share.

use patgate_core::{
    ActionSet, Authority, DigestKey, Grant, GroupId, MembershipTarget, PermissionSet, ProjectId, Reach, Role, ScopeSet,
    Timestamp, TokenFormat, TokenHint, TokenId, TokenKind, UserId, UserState, Visibility, scope::LegacyScope,
};
use patgate_store::{Actor, Audit, AuditFilter, Change, DirectoryBatch, NewToken, Settings, Store, StoreError};

use crate::support::{connect, databases, resources};

const T0: Timestamp = Timestamp(1_795_867_200);

fn audit(event: &'static str) -> Audit {
    Audit::new(event, Actor::default(), T0)
}

fn new_token(owner: UserId, authority: Authority) -> NewToken {
    let format = TokenFormat::new("").unwrap();
    let plain = format.generate(authority.kind()).unwrap();
    NewToken {
        owner,
        name: "ci".into(),
        description: "pushes images".into(),
        digest: DigestKey::new(&[9; 32]).unwrap().digest_plain(&plain),
        display_prefix: plain.display_prefix(),
        authority,
        allowed_ips: vec!["10.0.0.0/8".parse().unwrap()],
        created_at: T0,
        expires_at: Some(T0.plus_days(30)),
    }
}

fn fine_grained() -> Authority {
    let resources = resources();
    let registry = resources.id("container_registry").unwrap();
    let issue = resources.id("issue").unwrap();
    Authority::FineGrained(Box::new([
        Grant {
            reach: Reach::Selected { projects: [ProjectId(1)].into(), groups: [GroupId(2)].into() },
            permissions: PermissionSet::new([(registry, ActionSet::READ.with(patgate_core::Action::Create))]),
        },
        Grant { reach: Reach::AllMemberships, permissions: PermissionSet::new([(issue, ActionSet::READ)]) },
    ]))
}

#[tokio::test]
async fn migrations_run_once_and_a_newer_schema_is_refused() {
    for database in databases().await {
        let store = connect(&database).await.unwrap();
        drop(store);
        // A second start finds the schema current.
        let store = connect(&database).await.unwrap();
        sqlx::query(
            "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
             VALUES (99, 'from the future', TRUE, $1, 0)",
        )
        .bind(vec![0_u8; 48])
        .execute(store.pool())
        .await
        .unwrap();
        drop(store);
        let error = connect(&database).await.unwrap_err();
        assert!(matches!(error, StoreError::SchemaTooNew { found: 99, known: 5 }), "{} {error}", database.url);
    }
}

#[tokio::test]
async fn tokens_written_before_schema_5_are_found_by_name_after_a_restart() {
    use patgate_store::TokenPageQuery;
    let search = |text: &str| TokenPageQuery { name_contains: Some(text.to_owned()), ..TokenPageQuery::first(10) };
    for database in databases().await {
        let store = connect(&database).await.unwrap();
        let (alice, _) = store.create_user("alice", "", false, audit("user_created")).await.unwrap();
        let mut token = new_token(alice, fine_grained());
        token.name = "Release \u{212A}EY".to_owned();
        let (id, _) = store.create_token(&token, audit("token_created")).await.unwrap();
        let folded = |store: &patgate_store::SqlStore| {
            let pool = store.pool().clone();
            async move {
                sqlx::query_scalar::<_, Option<String>>("SELECT name_folded FROM tokens WHERE id = $1")
                    .bind(i64::try_from(id.0).unwrap())
                    .fetch_one(&pool)
                    .await
                    .unwrap()
            }
        };
        assert_eq!(folded(&store).await.as_deref(), Some("release key"), "{}: Rust's lowercasing", database.url);
        // As a row written by a binary that knew schema 4 only (during a rolling upgrade):
        // the database's own lowercasing stands in, alike for ASCII.
        sqlx::query("UPDATE tokens SET name_folded = NULL").execute(store.pool()).await.unwrap();
        let (rows, total) = store.token_page(&search("RELEASE")).await.unwrap();
        assert_eq!((rows.iter().map(|row| row.id).collect::<Vec<_>>(), total), (vec![id], 1), "{}", database.url);
        // More such rows than one statement folds at start.
        let mut tx = store.pool().begin().await.unwrap();
        for n in 0..1000_i64 {
            sqlx::query(
                "INSERT INTO tokens (owner_id, name, kind, digest, display_prefix, created_at) \
                 VALUES ($1, $2, 'legacy', $3, 'pgpat-AAAA', $4)",
            )
            .bind(i64::try_from(alice.0).unwrap())
            .bind(format!("Bulk Ä{n}"))
            .bind([n.to_be_bytes(), [7; 8], [7; 8], [7; 8]].concat())
            .bind(T0.0)
            .execute(&mut *tx)
            .await
            .unwrap();
        }
        tx.commit().await.unwrap();
        drop(store);
        // The next start folds it.
        let store = connect(&database).await.unwrap();
        assert_eq!(folded(&store).await.as_deref(), Some("release key"), "{}: folded at start", database.url);
        let (rows, total) = store.token_page(&search("release k")).await.unwrap();
        assert_eq!((rows.iter().map(|row| row.id).collect::<Vec<_>>(), total), (vec![id], 1), "{}", database.url);
        let unfolded: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM tokens WHERE name_folded IS NULL")
            .fetch_one(store.pool())
            .await
            .unwrap();
        assert_eq!(unfolded, 0, "{}", database.url);
        let (_, total) = store.token_page(&search("bulk ä99")).await.unwrap();
        assert_eq!(total, 11, "{}: Bulk Ä99 and Ä990 to Ä999", database.url);
    }
}

#[tokio::test]
async fn directory_writes_appear_in_snapshot_and_change_log() {
    for database in databases().await {
        let store = connect(&database).await.unwrap();
        let (alice, s1) = store.create_user("alice", "Alice", false, audit("user_created")).await.unwrap();
        let (acme, s2) = store.create_group("acme", Visibility::Private, audit("group_created")).await.unwrap();
        let (api, s3) = store.create_project("acme/api", Visibility::Internal, audit("project_created")).await.unwrap();
        let s4 = store
            .set_membership(alice, MembershipTarget::Group(acme), Some(Role::Developer), audit("membership_set"))
            .await
            .unwrap();
        assert!(s1 < s2 && s2 < s3 && s3 < s4, "{}", database.url);
        let duplicate = store.create_user("alice", "Again", false, audit("user_created")).await.unwrap_err();
        assert!(matches!(duplicate, StoreError::Conflict(_)), "{duplicate}");

        let snapshot = store.snapshot().await.unwrap();
        assert_eq!(snapshot.sequence, s4);
        assert_eq!(snapshot.users.len(), 1);
        assert_eq!(snapshot.users[0].username, "alice");
        assert_eq!(snapshot.groups[0].full_path, "acme");
        assert_eq!(snapshot.projects[0].visibility, Visibility::Internal);
        assert_eq!(snapshot.memberships[0].role, Role::Developer);

        let changes = store.changes_since(0, 100).await.unwrap();
        assert_eq!(
            changes.iter().map(|(_, change)| change.clone()).collect::<Vec<_>>(),
            vec![
                Change::User { id: alice.0 },
                Change::Group { id: acme.0 },
                Change::Project { id: api.0 },
                Change::membership(alice, MembershipTarget::Group(acme)),
            ]
        );
        assert_eq!(store.changes_since(s2, 100).await.unwrap().len(), 2);
        assert_eq!(store.changes_since(s1, 1).await.unwrap()[0].0, s2);

        store.set_user_state(alice, UserState::Blocked, audit("user_blocked")).await.unwrap();
        assert_eq!(store.user(alice).await.unwrap().unwrap().state, UserState::Blocked);
        store.update_project(api, "acme/api2", Visibility::Public, audit("project_moved")).await.unwrap();
        assert_eq!(store.project(api).await.unwrap().unwrap().full_path, "acme/api2");
        store.set_membership(alice, MembershipTarget::Group(acme), None, audit("membership_removed")).await.unwrap();
        assert_eq!(store.membership(alice, MembershipTarget::Group(acme)).await.unwrap(), None);
        assert!(matches!(
            store.set_user_state(UserId(999), UserState::Active, audit("x")).await,
            Err(StoreError::NotFound(_))
        ));
    }
}

#[tokio::test]
async fn import_is_idempotent_and_all_or_nothing() {
    for database in databases().await {
        let store = connect(&database).await.unwrap();
        let batch = DirectoryBatch {
            users: vec![("bob".into(), Some("Bob".into()), false, UserState::Active)],
            groups: vec![("acme".into(), Visibility::Private), ("acme/web".into(), Visibility::Public)],
            projects: vec![("acme/web/site".into(), Visibility::Public), ("bob/dotfiles".into(), Visibility::Private)],
            memberships: vec![
                ("bob".into(), "acme".into(), false, Role::Maintainer),
                ("bob".into(), "acme/web/site".into(), true, Role::Owner),
            ],
        };
        let (counts, first) = store.import(&batch, audit("directory_imported")).await.unwrap();
        assert_eq!((counts.users, counts.groups, counts.projects, counts.memberships), (1, 2, 2, 2));
        let before = store.snapshot().await.unwrap();
        let (_, second) = store.import(&batch, audit("directory_imported")).await.unwrap();
        assert!(second > first);
        let after = store.snapshot().await.unwrap();
        assert_eq!(before.users, after.users, "{}", database.url);
        assert_eq!(before.groups, after.groups);
        assert_eq!(before.memberships.len(), after.memberships.len());

        // A batch that fails halfway leaves nothing behind: not the new user, not a change.
        let broken = DirectoryBatch {
            users: vec![("carol".into(), None, false, UserState::Active)],
            memberships: vec![("carol".into(), "no/such/group".into(), false, Role::Guest)],
            ..DirectoryBatch::default()
        };
        let last = store.changes_since(0, 1000).await.unwrap().last().unwrap().0;
        assert!(matches!(store.import(&broken, audit("directory_imported")).await, Err(StoreError::NotFound(_))));
        let snapshot = store.snapshot().await.unwrap();
        assert!(snapshot.users.iter().all(|user| user.username != "carol"), "{}", database.url);
        assert_eq!(snapshot.sequence, last);
        assert_eq!(store.audit_events(&AuditFilter { limit: 100, ..AuditFilter::default() }).await.unwrap().len(), 2);
    }
}

#[tokio::test]
async fn tokens_round_trip_revoke_and_rotate() {
    for database in databases().await {
        let store = connect(&database).await.unwrap();
        let (alice, _) = store.create_user("alice", "", false, audit("user_created")).await.unwrap();
        let legacy = new_token(
            alice,
            Authority::Legacy(ScopeSet::EMPTY.with(LegacyScope::ReadApi).with(LegacyScope::ReadRegistry)),
        );
        let fine = new_token(alice, fine_grained());
        let (legacy_id, _) = store.create_token(&legacy, audit("token_created")).await.unwrap();
        let (fine_id, _) = store.create_token(&fine, audit("token_created")).await.unwrap();

        let row = store.token(fine_id).await.unwrap().unwrap();
        assert_eq!(row.authority, fine.authority, "{}", database.url);
        assert_eq!((row.kind, row.name.as_str(), row.family), (TokenKind::FineGrained, "ci", fine_id));
        assert_eq!(row.allowed_ips, fine.allowed_ips);
        assert_eq!(row.expires_at, fine.expires_at);
        let (address, legacy_row) = store.token_with_address(legacy_id).await.unwrap().unwrap();
        assert_eq!(address.digest, legacy.digest);
        assert_eq!(Some(address.hint), TokenHint::of_display_prefix(&legacy.display_prefix));
        assert_eq!(legacy_row.authority, legacy.authority);
        // A display prefix without a token's hint is refused, and nothing is written.
        let mut unfindable = new_token(alice, fine_grained());
        unfindable.display_prefix = "pgfgt-".into();
        assert!(matches!(store.create_token(&unfindable, audit("token_created")).await, Err(StoreError::Corrupt(_))));
        // The same digest twice is refused.
        assert!(matches!(store.create_token(&legacy, audit("token_created")).await, Err(StoreError::Conflict(_))));

        let snapshot = store.snapshot().await.unwrap();
        assert_eq!(snapshot.tokens.len(), 2);
        assert!(
            snapshot
                .tokens
                .iter()
                .any(|(a, record)| a.digest == fine.digest && record.id == fine_id && record.revoked_at.is_none())
        );

        store.revoke_token(legacy_id, "revoked_by_owner", audit("token_revoked")).await.unwrap();
        let row = store.token(legacy_id).await.unwrap().unwrap();
        assert_eq!((row.revoked_at, row.revoke_reason.as_deref()), (Some(T0), Some("revoked_by_owner")));
        assert!(matches!(
            store.revoke_token(legacy_id, "again", audit("token_revoked")).await,
            Err(StoreError::NotFound(_))
        ));

        let replacement = new_token(alice, fine_grained());
        let (new_id, _) = store.rotate_token(fine_id, &replacement, 0, audit("token_rotated")).await.unwrap();
        let old = store.token(fine_id).await.unwrap().unwrap();
        let new = store.token(new_id).await.unwrap().unwrap();
        assert_eq!(old.revoke_reason.as_deref(), Some("rotated"));
        assert_eq!((new.family, new.previous), (fine_id, Some(fine_id)));
        // Rotating a token that is already revoked (a concurrent rotation won) makes nothing.
        let twice = new_token(alice, fine_grained());
        assert!(matches!(
            store.rotate_token(fine_id, &twice, 0, audit("token_rotated")).await,
            Err(StoreError::Conflict(_))
        ));
        assert!(store.token_with_address(TokenId(new_id.0 + 1)).await.unwrap().is_none());
        let newer = new_token(alice, fine_grained());
        let (newest, _) = store.rotate_token(new_id, &newer, 0, audit("token_rotated")).await.unwrap();
        assert_eq!(store.token(newest).await.unwrap().unwrap().family, fine_id);
        assert_eq!(store.tokens(Some(alice)).await.unwrap().len(), 4);
        assert_eq!(store.tokens(Some(UserId(12345))).await.unwrap().len(), 0);
        assert!(store.token(TokenId(777)).await.unwrap().is_none());
    }
}

#[tokio::test]
async fn settings_and_audit_events() {
    for database in databases().await {
        let store = connect(&database).await.unwrap();
        assert_eq!(store.settings().await.unwrap(), Settings::default());
        let changed = Settings { max_lifetime_days: 90, token_prefix: "acme-".into(), ..Settings::default() };
        store.put_settings(&changed, audit("settings_changed")).await.unwrap();
        assert_eq!(store.settings().await.unwrap(), changed);

        let (alice, _) = store.create_user("alice", "", false, audit("user_created")).await.unwrap();
        let (bob, _) = store.create_user("bob", "", false, audit("user_created")).await.unwrap();
        let (token, _) = store.create_token(&new_token(alice, fine_grained()), audit("token_created")).await.unwrap();
        let all = store.audit_events(&AuditFilter { limit: 100, ..AuditFilter::default() }).await.unwrap();
        assert_eq!(all.len(), 4, "{}", database.url);
        assert!(all.windows(2).all(|pair| pair[0].id > pair[1].id), "newest first");
        let of_alice =
            store.audit_events(&AuditFilter { user: Some(alice), limit: 100, ..AuditFilter::default() }).await.unwrap();
        assert_eq!(of_alice.iter().map(|e| e.event.as_str()).collect::<Vec<_>>(), ["token_created", "user_created"]);
        let of_token = store
            .audit_events(&AuditFilter { token: Some(token), limit: 100, ..AuditFilter::default() })
            .await
            .unwrap();
        assert_eq!(of_token.len(), 1);
        let created = store
            .audit_events(&AuditFilter { event: Some("user_created".into()), limit: 100, ..AuditFilter::default() })
            .await
            .unwrap();
        assert_eq!(created.iter().map(|e| e.user).collect::<Vec<_>>(), [Some(bob), Some(alice)]);
        let page = store
            .audit_events(&AuditFilter { before_id: Some(all[1].id), limit: 1, ..AuditFilter::default() })
            .await
            .unwrap();
        assert_eq!(page[0].id, all[2].id);
        let none =
            store.audit_events(&AuditFilter { before: Some(T0), limit: 100, ..AuditFilter::default() }).await.unwrap();
        assert!(none.is_empty());
        assert_eq!(all[3].details["max_lifetime_days"], 90);
    }
}

#[tokio::test]
async fn concurrent_writes_get_distinct_increasing_sequence_numbers() {
    for database in databases().await {
        let store = std::sync::Arc::new(connect(&database).await.unwrap());
        let mut tasks = Vec::new();
        for index in 0..20 {
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                store.create_user(&format!("user{index}"), "", false, audit("user_created")).await.map(|(_, seq)| seq)
            }));
        }
        let mut sequences = Vec::new();
        for task in tasks {
            sequences.push(task.await.unwrap().unwrap());
        }
        sequences.sort_unstable();
        sequences.dedup();
        assert_eq!(sequences.len(), 20, "{}", database.url);
        let logged: Vec<i64> = store.changes_since(0, 100).await.unwrap().iter().map(|(seq, _)| *seq).collect();
        assert_eq!(logged, sequences);
    }
}

/// Listings load only the grants they show, and each token gets its own: one owner's list,
/// everyone's, and the tokens due an expiry notice.
#[tokio::test]
async fn listed_tokens_carry_their_own_grants() {
    for database in databases().await {
        let store = connect(&database).await.unwrap();
        let url = database.url.as_str();
        let (alice, _) = store.create_user("alice", "", false, audit("user_created")).await.unwrap();
        let (bob, _) = store.create_user("bob", "", false, audit("user_created")).await.unwrap();
        let resources = resources();
        let wiki = resources.id("wiki").unwrap();
        let bobs = Authority::FineGrained(Box::new([Grant {
            reach: Reach::PersonalProjects,
            permissions: PermissionSet::new([(wiki, ActionSet::READ)]),
        }]));
        let mut made = Vec::new();
        for (owner, authority) in [
            (alice, fine_grained()),
            (bob, bobs.clone()),
            (alice, Authority::Legacy([LegacyScope::ReadApi].into_iter().collect::<ScopeSet>())),
            (bob, fine_grained()),
        ] {
            let (id, _) =
                store.create_token(&new_token(owner, authority.clone()), audit("token_created")).await.unwrap();
            made.push((id, owner, authority));
        }
        let expected = |owner: Option<UserId>| -> Vec<(TokenId, Authority)> {
            made.iter()
                .filter(|(_, made_for, _)| owner.is_none_or(|owner| owner == *made_for))
                .map(|(id, _, authority)| (*id, authority.clone()))
                .collect()
        };
        for owner in [Some(alice), Some(bob), None] {
            let listed: Vec<(TokenId, Authority)> =
                store.tokens(owner).await.unwrap().into_iter().map(|row| (row.id, row.authority)).collect();
            assert_eq!(listed, expected(owner), "{url}: tokens of {owner:?}");
        }
        // Every token expires in 30 days: all are due their 30-day notice, grants and all.
        let mut due: Vec<(TokenId, Authority)> = store
            .expiry_notices_due(T0, 100)
            .await
            .unwrap()
            .into_iter()
            .map(|(row, _)| (row.id, row.authority))
            .collect();
        due.sort_by_key(|(id, _)| *id);
        assert_eq!(due, expected(None), "{url}: notices due");
        assert_eq!(store.expiry_notices_due(T0, 1).await.unwrap().len(), 1, "{url}: the limit holds");
    }
}

/// The database's page of the tokens table is what filtering, sorting and paging every
/// row in memory gives: each sort both ways (a missing expiry after every date going up, a
/// missing last use before), the owner, kind and date filters, pages and the total.
#[tokio::test]
async fn a_token_page_is_the_rows_filtered_sorted_and_paged() {
    use patgate_core::policy::Policy;
    use patgate_store::{LifetimeRules, StateFilter, TokenPageQuery, TokenRow, TokenSort, TokenUse};
    for database in databases().await {
        let store = connect(&database).await.unwrap();
        let url = database.url.as_str();
        let (alice, _) = store.create_user("alice", "", false, audit("user_created")).await.unwrap();
        let (bob, _) = store.create_user("bob", "", false, audit("user_created")).await.unwrap();
        // Carol is blocked and dave deleted: their live tokens are blocked, whatever the policy.
        let (carol, _) = store.create_user("carol", "", false, audit("user_created")).await.unwrap();
        let (dave, _) = store.create_user("dave", "", false, audit("user_created")).await.unwrap();
        for n in 0..18_i64 {
            let owner = match n {
                14 | 15 => carol,
                16 | 17 => dave,
                _ if n % 3 == 0 => bob,
                _ => alice,
            };
            let authority = if n % 2 == 0 {
                fine_grained()
            } else {
                Authority::Legacy([LegacyScope::Api].into_iter().collect::<ScopeSet>())
            };
            let mut token = new_token(owner, authority);
            // Names that fold differently in ASCII-only and full Unicode lowercasing (the
            // Kelvin sign lowercases to `k`), with case, accents, and characters that are
            // pattern syntax in SQL.
            token.name = ["CI deploy", "ci-Deploy 2", "Ärger", "\u{212A}ube", "kube", "50%_off", "Zebra", "äpfel"]
                [(n % 8) as usize]
                .to_owned();
            token.created_at = Timestamp(T0.0 - (n * 7919) % 5000);
            token.expires_at = (n % 4 != 0).then(|| T0.plus_days(1 + (n * 5) % 9));
            let (id, _) = store.create_token(&token, audit("token_created")).await.unwrap();
            if n % 5 == 2 {
                store
                    .revoke_token(id, "revoked_by_owner", Audit::new("token_revoked", Actor::default(), T0))
                    .await
                    .unwrap();
            }
            if n % 3 != 1 {
                let used = TokenUse {
                    token: id,
                    owner,
                    last_used_at: Timestamp(T0.0 + (n * 31) % 200),
                    ips: vec!["10.1.2.3".parse().unwrap()],
                    permissions: Vec::new(),
                };
                store.record_usage(&[used]).await.unwrap();
            }
        }
        store.set_user_state(carol, UserState::Blocked, audit("user_blocked")).await.unwrap();
        store.set_user_state(dave, UserState::Deleted, audit("user_deleted")).await.unwrap();
        let owner_active = |owner: UserId| owner == alice || owner == bob;
        let all = store.tokens(None).await.unwrap();
        let within = |value: Option<Timestamp>, before: Option<Timestamp>, after: Option<Timestamp>| {
            (before.is_none() && after.is_none())
                || value.is_some_and(|v| before.is_none_or(|b| v < b) && after.is_none_or(|a| v >= a))
        };
        let oracle = |query: &TokenPageQuery| -> (Vec<TokenId>, u64) {
            let mut rows: Vec<&TokenRow> = all
                .iter()
                .filter(|row| query.owner.is_none_or(|owner| row.owner == owner))
                .filter(|row| query.kind.is_none_or(|kind| row.kind == kind))
                .filter(|row| within(row.expires_at, query.expires_before, query.expires_after))
                .filter(|row| within(row.last_used_at, query.used_before, query.used_after))
                .filter(|row| {
                    query
                        .name_contains
                        .as_ref()
                        .is_none_or(|text| row.name.to_lowercase().contains(&text.to_lowercase()))
                })
                .filter(|row| {
                    // The tokens table's states as patgate-core's policy computes them.
                    query.states.is_none_or(|states| {
                        let rules = states.rules;
                        let policy = Policy {
                            max_lifetime_days: rules.max_lifetime_days,
                            expiry_required: rules.expiry_required,
                            group_caps: Vec::new(),
                            legacy_use_disabled_from: rules.legacy_disabled.then_some(Timestamp(0)),
                        };
                        let record = row.record();
                        let revoked = row.revoked_at.is_some_and(|at| at <= states.at);
                        let expired = !revoked && row.expires_at.is_some_and(|at| at <= states.at);
                        let blocked = !owner_active(row.owner)
                            || policy.token_excess(&record).is_some()
                            || policy.legacy_disabled(&record, states.at);
                        if revoked {
                            states.revoked
                        } else if expired {
                            states.expired
                        } else if blocked {
                            states.blocked
                        } else {
                            states.active
                        }
                    })
                })
                .collect();
            rows.sort_by(|a, b| {
                let order = match query.sort {
                    TokenSort::Id => std::cmp::Ordering::Equal,
                    TokenSort::CreatedAt => a.created_at.cmp(&b.created_at),
                    TokenSort::Name => a.name.cmp(&b.name),
                    TokenSort::ExpiresAt => {
                        a.expires_at.unwrap_or(Timestamp(i64::MAX)).cmp(&b.expires_at.unwrap_or(Timestamp(i64::MAX)))
                    }
                    TokenSort::LastUsedAt => a
                        .last_used_at
                        .unwrap_or(Timestamp(i64::MIN))
                        .cmp(&b.last_used_at.unwrap_or(Timestamp(i64::MIN))),
                }
                .then(a.id.cmp(&b.id));
                if query.descending { order.reverse() } else { order }
            });
            let total = rows.len() as u64;
            let page = rows.iter().skip(query.offset as usize).take(query.limit as usize).map(|row| row.id).collect();
            (page, total)
        };
        let base = TokenPageQuery::first(100);
        let mut queries = Vec::new();
        for sort in [TokenSort::Id, TokenSort::CreatedAt, TokenSort::Name, TokenSort::ExpiresAt, TokenSort::LastUsedAt]
        {
            for descending in [false, true] {
                queries.push(TokenPageQuery { sort, descending, ..base.clone() });
                queries.push(TokenPageQuery { sort, descending, limit: 4, offset: 5, ..base.clone() });
            }
        }
        queries.push(TokenPageQuery { owner: Some(alice), kind: Some(TokenKind::Legacy), ..base.clone() });
        queries.push(TokenPageQuery { owner: Some(bob), sort: TokenSort::ExpiresAt, ..base.clone() });
        queries.push(TokenPageQuery { expires_before: Some(T0.plus_days(5)), ..base.clone() });
        queries.push(TokenPageQuery {
            expires_after: Some(T0.plus_days(3)),
            sort: TokenSort::ExpiresAt,
            ..base.clone()
        });
        queries.push(TokenPageQuery {
            used_after: Some(Timestamp(T0.0 + 50)),
            used_before: Some(Timestamp(T0.0 + 150)),
            ..base.clone()
        });
        queries.push(TokenPageQuery {
            used_before: Some(T0.plus_days(1)),
            sort: TokenSort::LastUsedAt,
            descending: true,
            ..base.clone()
        });
        queries.push(TokenPageQuery { limit: 3, offset: 99, ..base.clone() });
        // Every set of states, as of several instants (T0 + 4 days: some expired, some
        // revoked), under several lifetime policies: none; expiry required; a 3-day cap
        // (some tokens live past it); legacy tokens disabled; all three.
        let rule_sets = [
            LifetimeRules::default(),
            LifetimeRules { expiry_required: true, ..LifetimeRules::default() },
            LifetimeRules { max_lifetime_days: 3, ..LifetimeRules::default() },
            LifetimeRules { legacy_disabled: true, ..LifetimeRules::default() },
            LifetimeRules { max_lifetime_days: 5, expiry_required: true, legacy_disabled: true },
        ];
        for at in [T0, T0.plus_days(4), T0.plus_days(9)] {
            for rules in rule_sets {
                for set in 1..16_u8 {
                    let states = Some(StateFilter {
                        at,
                        revoked: set & 1 != 0,
                        expired: set & 2 != 0,
                        blocked: set & 4 != 0,
                        active: set & 8 != 0,
                        rules,
                    });
                    queries.push(TokenPageQuery { states, ..base.clone() });
                }
                let active =
                    Some(StateFilter { at, revoked: false, expired: false, blocked: false, active: true, rules });
                queries.push(TokenPageQuery {
                    states: active,
                    owner: Some(alice),
                    sort: TokenSort::ExpiresAt,
                    limit: 3,
                    offset: 1,
                    ..base.clone()
                });
            }
        }
        // Each state selects something in this data (so that the oracle's checks are not
        // vacuous).
        let at = T0.plus_days(4);
        for (revoked, expired, blocked, active) in [
            (true, false, false, false),
            (false, true, false, false),
            (false, false, true, false),
            (false, false, false, true),
        ] {
            let rules = LifetimeRules { max_lifetime_days: 3, ..LifetimeRules::default() };
            let query = TokenPageQuery {
                states: Some(StateFilter { at, revoked, expired, blocked, active, rules }),
                ..base.clone()
            };
            assert!(oracle(&query).1 > 0, "{url}: nothing in {query:?}");
        }
        // Searches: case-insensitive, full Unicode ("KUBE" finds the Kelvin-sign name too),
        // `%` and `_` literal, combined with another filter and a page.
        for text in ["deploy", "DEPLOY", "KUBE", "ärg", "ÄRG", "%_", "_", "zeb", "nothing"] {
            queries.push(TokenPageQuery { name_contains: Some(text.to_owned()), ..base.clone() });
        }
        queries.push(TokenPageQuery {
            name_contains: Some("e".to_owned()),
            owner: Some(alice),
            sort: TokenSort::Name,
            descending: true,
            limit: 2,
            offset: 1,
            ..base.clone()
        });
        for query in &queries {
            let (rows, total) = store.token_page(query).await.unwrap();
            let ids: Vec<TokenId> = rows.iter().map(|row| row.id).collect();
            assert_eq!((ids, total), oracle(query), "{url}: {query:?}");
            for row in &rows {
                let listed = all.iter().find(|each| each.id == row.id).unwrap();
                assert_eq!(
                    (&row.authority, &row.last_ips),
                    (&listed.authority, &listed.last_ips),
                    "{url}: token {}",
                    row.id
                );
            }
        }
    }
}

/// The last change's sequence number, 0 when there is none.
async fn last_sequence(store: &patgate_store::SqlStore) -> i64 {
    store.changes_since(0, u32::MAX).await.unwrap().last().map_or(0, |(sequence, _)| *sequence)
}

/// One path names one thing: a user (a top-level namespace), a group or a project. The
/// store refuses a second one inside the write, whatever the caller checked before.
#[tokio::test]
async fn a_path_is_taken_across_users_groups_and_projects() {
    for database in databases().await {
        let store = connect(&database).await.unwrap();
        let url = database.url.as_str();
        store.create_group("acme", Visibility::Private, audit("group_created")).await.unwrap();
        store.create_group("acme/x", Visibility::Private, audit("group_created")).await.unwrap();
        let (bob, _) = store.create_user("bob", "", false, audit("user_created")).await.unwrap();
        let (site, _) = store.create_project("acme/site", Visibility::Public, audit("project_created")).await.unwrap();
        let before = last_sequence(&store).await;

        let project = store.create_project("acme/x", Visibility::Private, audit("project_created")).await;
        assert!(matches!(project, Err(StoreError::Conflict(_))), "{url}: a project on a group's path: {project:?}");
        let user = store.create_user("acme", "", false, audit("user_created")).await;
        assert!(matches!(user, Err(StoreError::Conflict(_))), "{url}: a user on a group's path: {user:?}");
        let group = store.create_group("bob", Visibility::Private, audit("group_created")).await;
        assert!(matches!(group, Err(StoreError::Conflict(_))), "{url}: a group on a user's name: {group:?}");
        let group = store.create_group("acme/site", Visibility::Private, audit("group_created")).await;
        assert!(matches!(group, Err(StoreError::Conflict(_))), "{url}: a group on a project's path: {group:?}");
        let moved = store.update_project(site, "acme/x", Visibility::Public, audit("project_updated")).await;
        assert!(matches!(moved, Err(StoreError::Conflict(_))), "{url}: a move onto a group's path: {moved:?}");
        for batch in [
            DirectoryBatch { projects: vec![("acme/x".into(), Visibility::Private)], ..DirectoryBatch::default() },
            DirectoryBatch {
                users: vec![("acme".into(), None, false, UserState::Active)],
                ..DirectoryBatch::default()
            },
            DirectoryBatch { groups: vec![("bob".into(), Visibility::Private)], ..DirectoryBatch::default() },
            DirectoryBatch { groups: vec![("acme/site".into(), Visibility::Private)], ..DirectoryBatch::default() },
            // Within one batch too.
            DirectoryBatch {
                groups: vec![("acme/new".into(), Visibility::Private)],
                projects: vec![("acme/new".into(), Visibility::Private)],
                ..DirectoryBatch::default()
            },
        ] {
            let imported = store.import(&batch, audit("directory_imported")).await;
            assert!(matches!(imported, Err(StoreError::Conflict(_))), "{url}: {batch:?}: {imported:?}");
        }
        // Nothing of the refused writes was kept.
        assert_eq!(last_sequence(&store).await, before, "{url}");
        let snapshot = store.snapshot().await.unwrap();
        assert_eq!(snapshot.projects.iter().map(|p| p.full_path.as_str()).collect::<Vec<_>>(), ["acme/site"], "{url}");
        assert_eq!(snapshot.groups.len(), 2, "{url}");
        assert_eq!(snapshot.users.iter().map(|u| u.id).collect::<Vec<_>>(), [bob], "{url}");

        // What is free stays possible: a project beside the group, a nested group, an
        // idempotent import of what exists, a move within the namespace.
        store.create_project("acme/x/api", Visibility::Private, audit("project_created")).await.unwrap();
        store.create_group("acme/x/deep", Visibility::Private, audit("group_created")).await.unwrap();
        let again = DirectoryBatch {
            users: vec![("bob".into(), None, false, UserState::Active)],
            groups: vec![("acme/x".into(), Visibility::Public)],
            projects: vec![("acme/site".into(), Visibility::Public)],
            ..DirectoryBatch::default()
        };
        store.import(&again, audit("directory_imported")).await.unwrap();
        store.update_project(site, "acme/site2", Visibility::Public, audit("project_updated")).await.unwrap();
    }
}

/// The settings come with the snapshot, read in its transaction: the sequence it reflects
/// includes the last settings change, and the settings are those of that change.
#[tokio::test]
async fn the_snapshot_carries_the_settings_of_its_sequence() {
    for database in databases().await {
        let store = connect(&database).await.unwrap();
        let url = database.url.as_str();
        assert_eq!(store.snapshot().await.unwrap().settings, Settings::default(), "{url}");
        let changed = Settings { max_lifetime_days: 90, token_prefix: "acme".into(), ..Settings::default() };
        let sequence = store.put_settings(&changed, audit("settings_changed")).await.unwrap();
        let snapshot = store.snapshot().await.unwrap();
        assert_eq!((snapshot.sequence, &snapshot.settings), (sequence, &changed), "{url}");
    }
}

/// `sqlite://FILE?…` is created on first start like `sqlite://FILE`, unless the URL names
/// its own mode.
#[tokio::test]
async fn an_sqlite_url_with_a_query_string_is_created_on_first_start() {
    let directory = std::env::temp_dir().join(format!("patgate_store_query_{}", std::process::id()));
    std::fs::create_dir_all(&directory).unwrap();
    let file = directory.join("new.db");
    let _ = std::fs::remove_file(&file);
    let url = format!("sqlite://{}?cache=shared", file.display());
    let store = patgate_store::SqlStore::connect(&url, crate::support::resources()).await;
    assert!(store.is_ok(), "{url}: {:?}", store.err());
    drop(store);
    assert!(file.exists(), "{url}");
    // A mode of the URL's own is kept: read-only does not create a missing file.
    let missing = directory.join("missing.db");
    let url = format!("sqlite://{}?mode=ro", missing.display());
    assert!(patgate_store::SqlStore::connect(&url, crate::support::resources()).await.is_err(), "{url}");
    assert!(!missing.exists());
    let _ = std::fs::remove_dir_all(&directory);
}
