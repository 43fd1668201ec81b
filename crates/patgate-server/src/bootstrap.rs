//! First start: the instance secret, the first admin and its token, and the demo data.

use std::{
    fs,
    io::Write,
    path::{Path, PathBuf},
};

use patgate_core::{
    Authority, DigestKey, PlainToken, ScopeSet, Timestamp, TokenKind, UserState,
    scope::LegacyScope,
    validate::{AuthoritySpec, GrantSpec, LifetimePolicy, NewTokenSpec, validate_new_token},
};
use patgate_store::{Actor, Audit, DirectoryBatch, NewToken, Store, StoreError};

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
    file.write_all(b"\n")?;
    file.sync_all()
}

/// A token file in the making: the secret is in a new file beside it, only its owner can
/// read, before the token is committed, and takes the file's name after (replacing what
/// was there), so that a file that cannot be written fails the start before anything is
/// committed, and a committed token is never lost.
#[derive(Debug)]
pub struct PendingTokenFile {
    temporary: PathBuf,
    path: PathBuf,
}

impl PendingTokenFile {
    /// Writes `secret` to a new temporary file in `path`'s directory.
    pub fn prepare(path: &Path, secret: &str) -> std::io::Result<PendingTokenFile> {
        let name = path
            .file_name()
            .and_then(|name| name.to_str())
            .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidInput, "the token file needs a file name"))?;
        let mut random = [0_u8; 6];
        getrandom::fill(&mut random).map_err(std::io::Error::other)?;
        let suffix: String = random.iter().map(|byte| format!("{byte:02x}")).collect();
        let temporary = path.with_file_name(format!(".{name}.{suffix}.tmp"));
        write_private(&temporary, secret)?;
        Ok(PendingTokenFile { temporary, path: path.to_owned() })
    }

    /// Gives the file its name; on failure the secret stays in the temporary file, named
    /// in the error.
    pub fn commit(self) -> Result<PathBuf, (PathBuf, std::io::Error)> {
        match fs::rename(&self.temporary, &self.path) {
            Ok(()) => Ok(self.path),
            Err(error) => Err((self.temporary, error)),
        }
    }

    /// Removes the temporary file (nothing was committed).
    pub fn discard(self) {
        let _ignored = fs::remove_file(&self.temporary);
    }
}

/// What [`bootstrap_admin`] made.
#[derive(Debug)]
pub struct Bootstrapped {
    pub token: PlainToken,
    /// Whether user `admin` was created (a first start), rather than given a new token.
    pub created_user: bool,
    /// Where the token was written, when a file was asked for: the file, or (when it could
    /// not take the file's name) the temporary file that holds it, and why.
    pub file: Option<Result<PathBuf, (PathBuf, std::io::Error)>>,
}

/// Why [`bootstrap_admin`] made nothing.
#[derive(Debug, thiserror::Error)]
pub enum BootstrapError {
    #[error("{0}")]
    Store(#[from] StoreError),
    #[error("the new token has no secret: {0}")]
    Token(String),
    #[error("writing the token file {}: {error}", path.display())]
    File { path: PathBuf, error: std::io::Error },
}

impl From<BootstrapError> for ApiError {
    fn from(error: BootstrapError) -> ApiError {
        match error {
            BootstrapError::Store(error) => error.into(),
            other => ApiError::Internal(other.to_string()),
        }
    }
}

/// On an empty database: user `admin` and a token for it (`api`, `admin_mode`), returned
/// once to be shown. See [`bootstrap_admin`].
pub async fn ensure_admin(shared: &Shared) -> Result<Option<PlainToken>, ApiError> {
    Ok(bootstrap_admin(shared, None).await?.map(|made| made.token))
}

/// The user administration starts from.
pub const BOOTSTRAP_USER: &str = "admin";

/// When no administrator can manage the instance (a first start, or every admin token
/// revoked or expired and no admin password: see `Store::admin_access_exists`): makes user
/// `admin` an active administrator with a new token (`api`, `admin_mode`, the longest
/// lifetime the policy allows), the user and the token in one transaction. With `file`,
/// the secret is written beside it before the commit (a file that cannot be written
/// commits nothing) and takes its name after. Returns the token, to be shown once.
pub async fn bootstrap_admin(shared: &Shared, file: Option<&Path>) -> Result<Option<Bootstrapped>, BootstrapError> {
    let now = shared.clock.now();
    if shared.store.admin_access_exists(now).await? {
        return Ok(None);
    }
    let scopes: ScopeSet = [LegacyScope::Api, LegacyScope::AdminMode].into_iter().collect();
    let authority = Authority::Legacy(scopes);
    let settings = shared.settings();
    let today = Timestamp(now.0 - now.0.rem_euclid(patgate_core::time::DAY));
    let expires_at = Some(today.plus_days(i64::from(settings.max_lifetime_days)));
    // The store gives it to the admin user.
    let (plain, token) = new_token(shared, patgate_core::UserId(0), "bootstrap", authority, expires_at, now)
        .map_err(BootstrapError::Token)?;
    let pending = match file {
        Some(path) => Some(
            PendingTokenFile::prepare(path, plain.expose_secret())
                .map_err(|error| BootstrapError::File { path: path.to_owned(), error })?,
        ),
        None => None,
    };
    let created_user = shared.engine().index.directory.user_by_name(BOOTSTRAP_USER).is_none();
    let made = match shared.store.bootstrap_admin(BOOTSTRAP_USER, "Administrator", &token).await {
        Ok(made) => made,
        Err(error) => {
            if let Some(pending) = pending {
                pending.discard();
            }
            return Err(error.into());
        }
    };
    if made.is_none() {
        // Another replica bootstrapped meanwhile.
        if let Some(pending) = pending {
            pending.discard();
        }
        return Ok(None);
    }
    shared.catch_up_after_write().await;
    Ok(Some(Bootstrapped { token: plain, created_user, file: pending.map(PendingTokenFile::commit) }))
}

/// A fresh secret and the token row that stores its digest (no description, no allowlist).
fn new_token(
    shared: &Shared,
    owner: patgate_core::UserId,
    name: &str,
    authority: Authority,
    expires_at: Option<Timestamp>,
    now: Timestamp,
) -> Result<(PlainToken, NewToken), String> {
    let engine = shared.engine();
    let plain = engine.format.generate(authority.kind()).map_err(|error| error.to_string())?;
    let token = NewToken {
        owner,
        name: name.to_owned(),
        description: String::new(),
        digest: engine.key.digest_plain(&plain),
        display_prefix: plain.display_prefix(),
        authority,
        allowed_ips: Vec::new(),
        created_at: now,
        expires_at,
    };
    Ok((plain, token))
}

async fn mint(
    shared: &Shared,
    owner: patgate_core::UserId,
    name: &str,
    authority: Authority,
    expires_at: Option<Timestamp>,
    now: Timestamp,
) -> Result<PlainToken, ApiError> {
    let (plain, new) = new_token(shared, owner, name, authority, expires_at, now).map_err(ApiError::Internal)?;
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
