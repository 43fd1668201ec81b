//! First start: the instance secret, the first admin and its token, and the demo data.

use std::{fs, io::Write, path::Path};

use patgate_core::{
    Authority, DigestKey, PlainToken, ScopeSet, Timestamp, TokenKind, UserState,
    scope::LegacyScope,
    validate::{AuthoritySpec, GrantSpec, LifetimePolicy, NewTokenSpec, validate_new_token},
};
use patgate_store::{Actor, Audit, DirectoryBatch, NewToken, Store};

use crate::{error::ApiError, password::Password, routes::session::store_password, state::Shared};

/// Reads the instance secret from `path`, creating it (32 random bytes, hex, mode 0600)
/// on first start.
pub fn load_or_create_key(path: &Path) -> Result<DigestKey, String> {
    let text = match fs::read_to_string(path) {
        Ok(text) => text,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            let mut secret = [0_u8; 32];
            getrandom::fill(&mut secret).map_err(|error| error.to_string())?;
            let text: String = secret.iter().map(|b| format!("{b:02x}")).collect();
            write_private(path, &text).map_err(|error| format!("writing {}: {error}", path.display()))?;
            text
        }
        Err(error) => return Err(format!("reading {}: {error}", path.display())),
    };
    let bytes = decode_hex(text.trim()).ok_or_else(|| format!("{} must hold a hex-encoded secret", path.display()))?;
    DigestKey::new(&bytes).map_err(|error| format!("{}: {error}", path.display()))
}

fn decode_hex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len()).step_by(2).map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok()).collect()
}

/// Writes `text` to a new file only its owner can read.
pub fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    file.write_all(text.as_bytes())?;
    file.write_all(b"\n")
}

/// On an empty database: user `admin` and a token for it (`api`, `admin_mode`), returned
/// once to be shown.
pub async fn ensure_admin(shared: &Shared) -> Result<Option<PlainToken>, ApiError> {
    if !shared.store.snapshot_is_empty().await? {
        return Ok(None);
    }
    let now = shared.clock.now();
    let system = Actor::default();
    let (admin, _) =
        shared.store.create_user("admin", "Administrator", true, Audit::new("user_created", system, now)).await?;
    let scopes: ScopeSet = [LegacyScope::Api, LegacyScope::AdminMode].into_iter().collect();
    let settings = shared.settings();
    let today = Timestamp(now.0 - now.0.rem_euclid(patgate_core::time::DAY));
    let token = mint(
        shared,
        admin,
        "bootstrap",
        Authority::Legacy(scopes),
        Some(today.plus_days(i64::from(settings.max_lifetime_days))),
        now,
    )
    .await?;
    Ok(Some(token))
}

async fn mint(
    shared: &Shared,
    owner: patgate_core::UserId,
    name: &str,
    authority: Authority,
    expires_at: Option<Timestamp>,
    now: Timestamp,
) -> Result<PlainToken, ApiError> {
    let (plain, digest) = {
        let engine = shared.engine();
        let plain = engine.format.generate(authority.kind()).map_err(|error| ApiError::Internal(error.to_string()))?;
        let digest = engine.key.digest_plain(&plain);
        (plain, digest)
    };
    let new = NewToken {
        owner,
        name: name.to_owned(),
        description: String::new(),
        digest,
        display_prefix: plain.display_prefix(),
        authority,
        allowed_ips: Vec::new(),
        created_at: now,
        expires_at,
    };
    shared.store.create_token(&new, Audit::new("token_created", Actor::default(), now).user(owner)).await?;
    shared.catch_up().await?;
    Ok(plain)
}

/// A demo organisation: nested groups, personal and group projects of each visibility,
/// users with each role, one blocked user; returns a few ready tokens, described.
pub async fn seed_demo(shared: &Shared) -> Result<Vec<(String, PlainToken)>, ApiError> {
    if shared.engine().index.directory.user_by_name("alice").is_some() {
        return Ok(Vec::new());
    }
    use patgate_core::{Role::*, Visibility::*};
    let user = |name: &str, admin: bool, state: UserState| (name.to_owned(), None, admin, state);
    let batch = DirectoryBatch {
        users: vec![
            user("alice", false, UserState::Active),
            user("bob", false, UserState::Active),
            user("carol", false, UserState::Active),
            user("dave", false, UserState::Active),
            user("erin", false, UserState::Active),
            user("mallory", false, UserState::Blocked),
        ],
        groups: vec![
            ("acme".into(), Private),
            ("acme/platform".into(), Private),
            ("acme/platform/infra".into(), Private),
            ("acme/web".into(), Public),
        ],
        projects: vec![
            ("acme/platform/api".into(), Private),
            ("acme/platform/infra/terraform".into(), Private),
            ("acme/web/site".into(), Public),
            ("acme/handbook".into(), Internal),
            ("alice/dotfiles".into(), Private),
        ],
        memberships: vec![
            ("alice".into(), "acme/platform".into(), false, Maintainer),
            ("bob".into(), "acme".into(), false, Developer),
            ("carol".into(), "acme/web/site".into(), true, Guest),
            ("dave".into(), "acme/platform/api".into(), true, Reporter),
            ("erin".into(), "acme".into(), false, Owner),
            ("mallory".into(), "acme".into(), false, Developer),
        ],
    };
    let now = shared.clock.now();
    shared.store.import(&batch, Audit::new("directory_imported", Actor::default(), now)).await?;
    shared.catch_up().await?;
    let expires = Some(Timestamp(now.0 - now.0.rem_euclid(patgate_core::time::DAY)).plus_days(90));
    let fine = |reach: &str, projects: &[&str], permissions: &[(&str, &[&str])]| NewTokenSpec {
        authority: AuthoritySpec::FineGrained {
            grants: vec![GrantSpec {
                reach: reach.into(),
                projects: projects.iter().map(|p| (*p).to_owned()).collect(),
                groups: Vec::new(),
                permissions: permissions
                    .iter()
                    .map(|(r, a)| ((*r).to_owned(), a.iter().map(|x| (*x).to_owned()).collect()))
                    .collect(),
            }],
        },
        expires_at: expires,
        allowed_ips: Vec::new(),
    };
    let plans = [
        (
            "alice",
            "alice: container registry create+read on acme/platform/api (the announcement's CI example)",
            fine("selected", &["acme/platform/api"], &[("container_registry", &["create", "read"])]),
        ),
        (
            "bob",
            "bob: issues read across all his memberships",
            fine("all_memberships", &[], &[("issue", &["read"]), ("merge_request", &["read"])]),
        ),
        (
            "dave",
            "dave: legacy read_api token (reporter on acme/platform/api)",
            NewTokenSpec {
                authority: AuthoritySpec::Legacy { scopes: vec!["read_api".into()] },
                expires_at: expires,
                allowed_ips: Vec::new(),
            },
        ),
    ];
    let mut tokens = Vec::new();
    for (username, description, spec) in plans {
        let (owner, authority) = {
            let engine = shared.engine();
            let directory = &engine.index.directory;
            let owner =
                directory.user_by_name(username).ok_or_else(|| ApiError::Internal(format!("demo user {username}")))?;
            let valid =
                validate_new_token(&engine.resources, directory, owner, &spec, LifetimePolicy::default(), None, now)?;
            (owner.id, valid.authority)
        };
        let kind = authority.kind();
        let plain = mint(
            shared,
            owner,
            &format!("demo {}", if kind == TokenKind::Legacy { "legacy" } else { "fine-grained" }),
            authority,
            expires,
            now,
        )
        .await?;
        tokens.push((description.to_owned(), plain));
    }
    Ok(tokens)
}

/// The users `patgate serve --demo` gives the demo password: the first admin and the demo
/// organisation (blocked mallory too, to show that a blocked user cannot sign in).
pub const DEMO_PASSWORD_USERS: &[&str] = &["admin", "alice", "bob", "carol", "dave", "erin", "mallory"];

/// A random demo password: 4 groups of 4 from 32 unambiguous characters (80 bits).
pub fn random_demo_password() -> Result<Password, ApiError> {
    const ALPHABET: &[u8; 32] = b"abcdefghijkmnpqrstuvwxyz23456789";
    let mut bytes = [0_u8; 16];
    getrandom::fill(&mut bytes).map_err(|error| ApiError::Internal(format!("no randomness: {error}")))?;
    let mut text = String::with_capacity(19);
    for (index, byte) in bytes.iter().enumerate() {
        if index > 0 && index % 4 == 0 {
            text.push('-');
        }
        text.push(char::from(ALPHABET[usize::from(byte & 31)]));
    }
    Ok(Password::new(text))
}

/// Demo mode only (never a real deployment): gives each of [`DEMO_PASSWORD_USERS`] that
/// exists and has no password yet `password`, so a browser can sign in as them. Returns the
/// users it was given to.
pub async fn set_demo_passwords(shared: &Shared, password: &Password) -> Result<Vec<String>, ApiError> {
    password.check_rules("the demo password")?;
    let mut given = Vec::new();
    for username in DEMO_PASSWORD_USERS {
        let Some((user, None)) = shared.store.password_hash(username).await? else { continue };
        store_password(shared, user.id, password, Actor::default(), shared.clock.now()).await?;
        given.push((*username).to_owned());
    }
    Ok(given)
}
