//! Passwords for web sign-in: the rules a new one must meet, argon2id hashing (the
//! `argon2` crate's default parameters, a PHC string with a random 16-byte salt) and
//! verification, whose final comparison is in constant time.
//!
//! Hashing costs about 19 MiB and tens of milliseconds of one core: it runs on the blocking
//! pool, at most [`Shared::password_slots`] at once, never on the request threads.

use std::sync::OnceLock;

use argon2::{Argon2, PasswordHasher, PasswordVerifier};
use patgate_store::PasswordHash;
use serde::Deserialize;

use crate::{error::ApiError, state::Shared};

/// A new password has at least this many characters.
pub const MIN_PASSWORD_CHARS: usize = 12;
/// … and at most this many bytes (UTF-8).
pub const MAX_PASSWORD_BYTES: usize = 256;

/// A password as typed.
///
/// INVARIANT: `Debug` shows nothing of it; it never reaches a log or an error message.
#[derive(Clone, Deserialize)]
#[serde(transparent)]
pub struct Password(String);

impl std::fmt::Debug for Password {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Password([redacted])")
    }
}

impl std::str::FromStr for Password {
    type Err = std::convert::Infallible;

    fn from_str(text: &str) -> Result<Password, Self::Err> {
        Ok(Password::new(text))
    }
}

impl Password {
    /// A password from its text.
    pub fn new(text: impl Into<String>) -> Password {
        Password(text.into())
    }

    /// The text, for hashing.
    pub fn expose_secret(&self) -> &str {
        &self.0
    }

    /// Checks the rules for a new password; the error names `field` and the rule broken
    /// (never the password).
    pub fn check_rules(&self, field: &str) -> Result<(), ApiError> {
        let invalid = |message: String| ApiError::Invalid { error: "invalid_password", message };
        if self.0.chars().count() < MIN_PASSWORD_CHARS {
            return Err(invalid(format!("`{field}` must be at least {MIN_PASSWORD_CHARS} characters long")));
        }
        if self.0.len() > MAX_PASSWORD_BYTES {
            return Err(invalid(format!("`{field}` must be at most {MAX_PASSWORD_BYTES} bytes long")));
        }
        Ok(())
    }
}

fn hash_now(password: &[u8]) -> Result<PasswordHash, ApiError> {
    let mut salt = [0_u8; 16];
    getrandom::fill(&mut salt).map_err(|error| ApiError::Internal(format!("no randomness for a salt: {error}")))?;
    let hash = Argon2::default()
        .hash_password_with_salt(password, &salt)
        .map_err(|error| ApiError::Internal(format!("hashing a password: {error}")))?;
    Ok(PasswordHash::new(hash.to_string()))
}

/// Whether `password` matches the PHC string `hash` (a malformed hash matches nothing).
fn verify_now(password: &[u8], hash: &str) -> bool {
    match argon2::PasswordHash::new(hash) {
        Ok(parsed) => Argon2::default().verify_password(password, &parsed).is_ok(),
        Err(_) => false,
    }
}

/// A hash of a random password nobody knows, computed once: a sign-in for a user without a
/// password (or an unknown one) is verified against it, so it takes as long as any other.
fn dummy_hash() -> Result<&'static PasswordHash, ApiError> {
    static DUMMY: OnceLock<PasswordHash> = OnceLock::new();
    if let Some(hash) = DUMMY.get() {
        return Ok(hash);
    }
    let mut random = [0_u8; 32];
    getrandom::fill(&mut random).map_err(|error| ApiError::Internal(format!("no randomness: {error}")))?;
    let hash = hash_now(&random)?;
    Ok(DUMMY.get_or_init(|| hash))
}

/// Runs `work` on the blocking pool, at most [`Shared::password_slots`] at once.
async fn off_the_request_thread<T: Send + 'static>(
    shared: &Shared,
    work: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    let _slot = shared
        .password_slots
        .acquire()
        .await
        .map_err(|_| ApiError::Internal("the password hashing slots are closed".to_owned()))?;
    tokio::task::spawn_blocking(work).await.map_err(|error| ApiError::Internal(format!("hashing task: {error}")))?
}

/// Hashes `password` (argon2id, default parameters, a fresh random salt).
pub async fn hash(shared: &Shared, password: &Password) -> Result<PasswordHash, ApiError> {
    let password = password.clone();
    off_the_request_thread(shared, move || hash_now(password.expose_secret().as_bytes())).await
}

/// Whether `password` matches `hash`. Without a hash it is checked against a dummy one and
/// the answer is `false`, in about the same time.
pub async fn verify(shared: &Shared, password: &Password, hash: Option<&PasswordHash>) -> Result<bool, ApiError> {
    let password = password.clone();
    let hash = hash.cloned();
    off_the_request_thread(shared, move || {
        let bytes = password.expose_secret().as_bytes();
        Ok(match &hash {
            Some(hash) => verify_now(bytes, hash.as_phc()),
            None => {
                let _ = verify_now(bytes, dummy_hash()?.as_phc());
                false
            }
        })
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hash_is_an_argon2id_phc_string_that_verifies_only_its_password() {
        let hash = hash_now(b"correct horse battery").unwrap();
        assert!(hash.as_phc().starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{}", hash.as_phc());
        assert!(verify_now(b"correct horse battery", hash.as_phc()));
        assert!(!verify_now(b"correct horse batterY", hash.as_phc()));
        assert!(!verify_now(b"correct horse battery", "not a phc string"));
        // A fresh salt each time.
        assert_ne!(hash_now(b"correct horse battery").unwrap(), hash);
    }

    #[test]
    fn the_rules_name_the_field_and_never_echo_the_password() {
        let short = Password::new("elevenchars");
        let error = short.check_rules("password").unwrap_err().to_string();
        assert!(error.contains("`password`") && error.contains("12 characters"), "{error}");
        assert!(!error.contains("elevenchars"), "{error}");
        assert!(Password::new("twelve chars").check_rules("password").is_ok());
        // Characters, not bytes, count towards the minimum.
        assert!(Password::new("ééééééééééé").check_rules("password").is_err());
        assert!(Password::new("éééééééééééé").check_rules("password").is_ok());
        assert!(Password::new("x".repeat(256)).check_rules("password").is_ok());
        let error = Password::new("x".repeat(257)).check_rules("password").unwrap_err().to_string();
        assert!(error.contains("256 bytes"), "{error}");
        assert_eq!(format!("{:?}", Password::new("hunter2hunter2")), "Password([redacted])");
    }
}
