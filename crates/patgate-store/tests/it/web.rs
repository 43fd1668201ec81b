//! Web sign-in on every backend: password hashes, sessions stored by digest with a sliding
//! expiry, and the ways they end (sign-out, a password change, blocking or deleting the
//! user, an import that blocks them).

use patgate_core::{Timestamp, UserId, UserState};
use patgate_store::{
    Actor, Audit, AuditFilter, CsrfToken, DirectoryBatch, NewSession, PasswordHash, SessionDigest, SqlStore, Store,
    StoreError,
};

use crate::support::{connect, databases};

const T0: Timestamp = Timestamp(1_795_867_200);

/// `seconds` after T0.
fn at(seconds: i64) -> Timestamp {
    Timestamp(T0.0 + seconds)
}

fn audit(event: &'static str, when: Timestamp) -> Audit {
    Audit::new(event, Actor::default(), when)
}

async fn user(store: &SqlStore, username: &str) -> UserId {
    store.create_user(username, "", false, audit("user_created", T0)).await.unwrap().0
}

/// A session of `user` whose digest's bytes are all `byte`, made at `created_at`, expiring
/// an hour later.
fn session(byte: u8, user: UserId, created_at: Timestamp) -> NewSession {
    NewSession {
        digest: SessionDigest::from_bytes([byte; 32]),
        user,
        csrf_token: CsrfToken::new(format!("csrf-{byte}")),
        created_at,
        expires_at: Timestamp(created_at.0 + 3600),
    }
}

async fn open(store: &SqlStore, session: &NewSession) {
    store.create_session(session, audit("signed_in", session.created_at)).await.unwrap();
}

async fn alive(store: &SqlStore, byte: u8, now: Timestamp) -> bool {
    store.session(&SessionDigest::from_bytes([byte; 32]), now).await.unwrap().is_some()
}

#[tokio::test]
async fn a_password_hash_is_set_read_and_removed_with_an_audit_event() {
    for database in databases().await {
        let url = &database.url;
        let store = connect(&database).await.unwrap();
        let alice = user(&store, "alice").await;
        let (row, hash) = store.password_hash("alice").await.unwrap().unwrap();
        assert_eq!((row.id, row.username.as_str(), hash), (alice, "alice", None), "{url}: no password at first");
        assert!(store.password_hash("nobody").await.unwrap().is_none(), "{url}");

        let phc = PasswordHash::new("$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA".to_owned());
        let admin = Actor { user: Some(UserId(99)), token: None };
        store.set_password_hash(alice, Some(&phc), Audit::new("password_changed", admin, at(5))).await.unwrap();
        let (_, hash) = store.password_hash("alice").await.unwrap().unwrap();
        assert_eq!(hash.as_ref(), Some(&phc), "{url}");
        // The hash is never part of what the snapshot or a user read returns.
        let snapshot = store.snapshot().await.unwrap();
        assert!(!format!("{:?}", snapshot.users).contains("argon2"), "{url}");
        assert!(!format!("{hash:?}").contains("argon2"), "{url}: Debug is redacted");

        let events = store
            .audit_events(&AuditFilter { event: Some("password_changed".into()), limit: 10, ..AuditFilter::default() })
            .await
            .unwrap();
        assert_eq!(events.len(), 1, "{url}");
        assert_eq!((events[0].user, events[0].actor_user), (Some(alice), Some(UserId(99))), "{url}");
        assert!(!events[0].details.to_string().contains("argon2"), "{url}: {}", events[0].details);

        store.set_password_hash(alice, None, audit("password_changed", at(6))).await.unwrap();
        assert_eq!(store.password_hash("alice").await.unwrap().unwrap().1, None, "{url}");
        let unknown = store.set_password_hash(UserId(4242), Some(&phc), audit("password_changed", at(7))).await;
        assert!(matches!(unknown, Err(StoreError::NotFound(_))), "{url}: {unknown:?}");
    }
}

#[tokio::test]
async fn a_session_is_found_by_digest_until_it_expires_and_slides_when_touched() {
    for database in databases().await {
        let url = &database.url;
        let store = connect(&database).await.unwrap();
        let alice = user(&store, "alice").await;
        let new = session(1, alice, T0);
        open(&store, &new).await;

        let found = store.session(&new.digest, T0).await.unwrap().unwrap();
        assert_eq!((found.user, found.created_at, found.last_seen_at, found.expires_at), (alice, T0, T0, at(3600)));
        assert!(found.csrf_token.matches("csrf-1") && !found.csrf_token.matches("csrf-2"), "{url}");
        assert!(!format!("{found:?}").contains("csrf-1"), "{url}: Debug is redacted");
        assert!(!alive(&store, 2, T0).await, "{url}: another digest finds nothing");
        // Expiry is exclusive: at `expires_at` the session is over.
        assert!(alive(&store, 1, at(3599)).await, "{url}");
        assert!(!alive(&store, 1, at(3600)).await, "{url}");

        // Activity slides the expiry.
        assert!(store.touch_session(&new.digest, at(1800), at(1800 + 3600)).await.unwrap(), "{url}");
        let found = store.session(&new.digest, at(3600)).await.unwrap().unwrap();
        assert_eq!((found.last_seen_at, found.expires_at), (at(1800), at(5400)), "{url}");
        // An ended session is never revived, and time never goes back.
        assert!(!store.touch_session(&new.digest, at(5400), at(9000)).await.unwrap(), "{url}");
        assert!(!store.touch_session(&new.digest, at(100), at(9000)).await.unwrap(), "{url}");
        assert!(!alive(&store, 1, at(5400)).await, "{url}");

        // A new sign-in sweeps expired sessions away.
        open(&store, &session(2, alice, at(6000))).await;
        let stored: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM sessions").fetch_one(store.pool()).await.unwrap();
        assert_eq!(stored, 1, "{url}: the expired session was dropped");
    }
}

#[tokio::test]
async fn only_the_digest_is_stored() {
    for database in databases().await {
        let store = connect(&database).await.unwrap();
        let alice = user(&store, "alice").await;
        let new = session(0xab, alice, T0);
        open(&store, &new).await;
        let digest: String =
            sqlx::query_scalar("SELECT id_digest FROM sessions").fetch_one(store.pool()).await.unwrap();
        assert_eq!(digest, "ab".repeat(32), "{}", database.url);
        assert!(!format!("{:?}", new.digest).contains("ab"), "Debug is redacted");
    }
}

#[tokio::test]
async fn sign_out_ends_one_session_and_is_audited() {
    for database in databases().await {
        let url = &database.url;
        let store = connect(&database).await.unwrap();
        let alice = user(&store, "alice").await;
        open(&store, &session(1, alice, T0)).await;
        open(&store, &session(2, alice, T0)).await;
        let digest = SessionDigest::from_bytes([1; 32]);
        assert!(store.delete_session(&digest, audit("signed_out", at(10))).await.unwrap(), "{url}");
        assert!(!store.delete_session(&digest, audit("signed_out", at(11))).await.unwrap(), "{url}: gone already");
        assert!(!alive(&store, 1, at(12)).await && alive(&store, 2, at(12)).await, "{url}");
        let events = |event: &str| {
            let filter = AuditFilter { event: Some(event.into()), limit: 10, ..AuditFilter::default() };
            let store = &store;
            async move { store.audit_events(&filter).await.unwrap() }
        };
        let signed_out = events("signed_out").await;
        assert_eq!(signed_out.len(), 1, "{url}: nothing is recorded for a session that was not there");
        assert_eq!(signed_out[0].user, Some(alice), "{url}");
        assert_eq!(events("signed_in").await.len(), 2, "{url}");
    }
}

#[tokio::test]
async fn every_session_of_a_user_ends_on_request_on_a_password_change_and_when_blocked() {
    for database in databases().await {
        let url = &database.url;
        let store = connect(&database).await.unwrap();
        let (alice, bob) = (user(&store, "alice").await, user(&store, "bob").await);
        for (byte, owner) in [(1, alice), (2, alice), (3, bob)] {
            open(&store, &session(byte, owner, T0)).await;
        }
        assert_eq!(store.delete_user_sessions(alice).await.unwrap(), 2, "{url}");
        assert!(!alive(&store, 1, T0).await && !alive(&store, 2, T0).await && alive(&store, 3, T0).await, "{url}");

        // A password change signs the user out everywhere.
        open(&store, &session(4, bob, T0)).await;
        let phc = PasswordHash::new("$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA".to_owned());
        store.set_password_hash(bob, Some(&phc), audit("password_changed", at(1))).await.unwrap();
        assert!(!alive(&store, 3, at(1)).await && !alive(&store, 4, at(1)).await, "{url}");
        let changed = store
            .audit_events(&AuditFilter { event: Some("password_changed".into()), limit: 1, ..AuditFilter::default() })
            .await
            .unwrap();
        assert_eq!(changed[0].details["sessions_ended"], 2, "{url}: {}", changed[0].details);

        // Blocking (and deleting) ends sessions inside the same transaction; unblocking
        // does not bring them back.
        open(&store, &session(5, alice, at(2))).await;
        open(&store, &session(6, bob, at(2))).await;
        store.set_user_state(alice, UserState::Blocked, audit("user_blocked", at(3))).await.unwrap();
        assert!(!alive(&store, 5, at(3)).await && alive(&store, 6, at(3)).await, "{url}");
        store.set_user_state(alice, UserState::Active, audit("user_unblocked", at(4))).await.unwrap();
        assert!(!alive(&store, 5, at(4)).await, "{url}");
        store.set_user_state(bob, UserState::Deleted, audit("user_deleted", at(5))).await.unwrap();
        assert!(!alive(&store, 6, at(5)).await, "{url}");
    }
}

#[tokio::test]
async fn an_import_that_blocks_a_user_signs_them_out() {
    for database in databases().await {
        let url = &database.url;
        let store = connect(&database).await.unwrap();
        let (alice, bob) = (user(&store, "alice").await, user(&store, "bob").await);
        open(&store, &session(1, alice, T0)).await;
        open(&store, &session(2, bob, T0)).await;
        let batch = DirectoryBatch {
            users: vec![
                ("alice".into(), None, false, UserState::Blocked),
                ("bob".into(), None, false, UserState::Active),
            ],
            ..DirectoryBatch::default()
        };
        store.import(&batch, audit("directory_imported", at(1))).await.unwrap();
        assert!(!alive(&store, 1, at(1)).await, "{url}: blocked by the import");
        assert!(alive(&store, 2, at(1)).await, "{url}: still active");
    }
}
