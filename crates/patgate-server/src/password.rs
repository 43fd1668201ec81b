//! Passwords for web sign-in: the rules a new one must meet, argon2id hashing (the
//! `argon2` crate's default parameters, a PHC string with a random 16-byte salt) and
//! verification, whose final comparison is in constant time.
//!
//! Hashing costs about 19 MiB and tens of milliseconds of one core: it runs on the blocking
//! pool, at most [`Shared::password_slots`] at once, never on the request threads, in working
//! memory given back to the system after each hash (`working_memory`).

use std::sync::OnceLock;

use argon2::{
    Algorithm, Argon2, Block, Params, PasswordHash as Phc, Version,
    password_hash::phc::{Output, ParamsString, Salt},
};
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

/// Where glibc stops raising its mmap threshold (32 MiB on 64-bit): an allocation at least
/// this large always gets a mapping of its own, given back to the system when it is freed.
const UNMAPPED_WHEN_FREED: usize = 32 << 20;

/// Argon2's working memory for `params` (19 MiB at the default parameters).
///
/// The `argon2` crate would allocate it itself, in a size that glibc, once a first such block
/// has been freed, serves from a malloc arena and keeps there: the demo's four passwords, set
/// at start, left `patgate serve --demo` at 130 MB of RSS, 116 MB of it free arena memory
/// (13 MB with `glibc.malloc.mmap_threshold` fixed at 1 MiB). Reserved at 32 MiB or more, the
/// memory is a mapping of its own, unmapped when the hash is done; the pages past the blocks
/// argon2 uses are never touched, so they never count.
fn working_memory(params: &Params) -> Vec<Block> {
    let blocks = params.block_count();
    let mut memory = Vec::with_capacity(blocks.max(UNMAPPED_WHEN_FREED / std::mem::size_of::<Block>()));
    memory.resize(blocks, Block::new());
    memory
}

/// The argon2 output for `password` and `salt` under `argon2`'s algorithm, version and
/// parameters, computed in [`working_memory`].
fn output(argon2: &Argon2<'_>, password: &[u8], salt: &Salt) -> Result<Output, String> {
    let params = argon2.params();
    let mut buffer = [0_u8; Output::MAX_LENGTH];
    let out = buffer
        .get_mut(..params.output_len().unwrap_or(Params::DEFAULT_OUTPUT_LEN))
        .ok_or("the output length is out of range")?;
    argon2
        .hash_password_into_with_memory(password, salt.as_ref(), out, working_memory(params))
        .map_err(|e| e.to_string())?;
    Output::new(out).map_err(|e| e.to_string())
}

fn hash_now(password: &[u8]) -> Result<PasswordHash, ApiError> {
    let mut salt = [0_u8; 16];
    getrandom::fill(&mut salt).map_err(|error| ApiError::Internal(format!("no randomness for a salt: {error}")))?;
    let internal = |error: String| ApiError::Internal(format!("hashing a password: {error}"));
    let (algorithm, version, params) = (Algorithm::default(), Version::default(), Params::default());
    let salt = Salt::new(&salt).map_err(|e| internal(e.to_string()))?;
    let hash = output(&Argon2::new(algorithm, version, params.clone()), password, &salt).map_err(internal)?;
    let phc = Phc {
        algorithm: algorithm.ident(),
        version: Some(version.into()),
        params: ParamsString::try_from(&params).map_err(|e| internal(e.to_string()))?,
        salt: Some(salt),
        hash: Some(hash),
    };
    Ok(PasswordHash::new(phc.to_string()))
}

/// Whether `password` matches the PHC string `hash`, under the algorithm, version and
/// parameters the string names (a malformed hash matches nothing). The outputs are compared
/// in constant time (`phc::Output`'s equality).
fn verify_now(password: &[u8], hash: &str) -> bool {
    let Ok(phc) = Phc::new(hash) else { return false };
    let (Some(salt), Some(expected)) = (&phc.salt, &phc.hash) else { return false };
    let Ok(algorithm) = Algorithm::try_from(phc.algorithm.as_str()) else { return false };
    let Ok(version) = phc.version.map(Version::try_from).transpose() else { return false };
    let Ok(params) = Params::try_from(&phc) else { return false };
    let argon2 = Argon2::new(algorithm, version.unwrap_or_default(), params);
    output(&argon2, password, salt).is_ok_and(|computed| computed == *expected)
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
    fn hashes_made_by_the_argon2_crate_verify_here_and_the_reverse() {
        use argon2::{PasswordHasher, PasswordVerifier};
        // Stored hashes from before patgate computed in its own working memory, and hashes
        // under other parameters, verify; and the crate accepts what patgate writes.
        let small = Params::new(1024, 1, 1, None).unwrap();
        for crate_argon2 in [Argon2::default(), Argon2::new(Algorithm::Argon2i, Version::V0x10, small)] {
            let theirs = crate_argon2
                .hash_password_with_salt(b"correct horse battery", b"sixteen byte slt")
                .unwrap()
                .to_string();
            assert!(verify_now(b"correct horse battery", &theirs), "{theirs}");
            assert!(!verify_now(b"correct horse batterY", &theirs), "{theirs}");
        }
        let ours = hash_now(b"correct horse battery").unwrap();
        let parsed = Phc::new(ours.as_phc()).unwrap();
        assert!(Argon2::default().verify_password(b"correct horse battery", &parsed).is_ok());
        assert!(Argon2::default().verify_password(b"correct horse batterY", &parsed).is_err());
    }

    #[test]
    fn a_hash_without_salt_or_output_or_of_another_algorithm_matches_nothing() {
        let ours = hash_now(b"correct horse battery").unwrap();
        let phc = ours.as_phc();
        let (head, output) = phc.rsplit_once('$').unwrap();
        assert!(!verify_now(b"correct horse battery", head), "no output: {head}");
        assert!(!verify_now(b"correct horse battery", &phc.replace("$argon2id$", "$scrypt$")));
        assert!(!verify_now(b"correct horse battery", &phc.replace("$v=19$", "$v=18$")));
        assert!(!verify_now(b"correct horse battery", &format!("{head}${}", &output[1..])), "truncated output");
        assert!(verify_now(b"correct horse battery", phc));
    }

    #[test]
    fn the_working_memory_is_reserved_large_enough_to_be_unmapped_when_freed() {
        let params = Params::default();
        let memory = working_memory(&params);
        assert_eq!(memory.len(), params.block_count());
        assert!(memory.capacity() * std::mem::size_of::<Block>() >= UNMAPPED_WHEN_FREED);
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
