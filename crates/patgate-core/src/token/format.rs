//! The token string: prefix, randomness, checksum; and its keyed digest.
//!
//! `[instance prefix]` + kind prefix (`pgpat-` legacy, `pgfgt-` fine-grained) + 32 base62
//! characters from the OS CSPRNG (190 bits) + 6 base62 characters encoding the CRC32 of
//! everything before them. See `docs/tokens.md`.

use std::fmt;

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

/// Whether a token carries legacy scopes or fine-grained grants.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TokenKind {
    Legacy,
    FineGrained,
}

impl TokenKind {
    /// The wire name: `legacy` or `fine_grained`.
    pub fn name(self) -> &'static str {
        match self {
            TokenKind::Legacy => "legacy",
            TokenKind::FineGrained => "fine_grained",
        }
    }

    /// The fixed prefix that tells the kind apart.
    pub fn prefix(self) -> &'static str {
        match self {
            TokenKind::Legacy => LEGACY_PREFIX,
            TokenKind::FineGrained => FINE_GRAINED_PREFIX,
        }
    }
}

/// Prefix of legacy tokens.
pub const LEGACY_PREFIX: &str = "pgpat-";
/// Prefix of fine-grained tokens.
pub const FINE_GRAINED_PREFIX: &str = "pgfgt-";
/// Base62 characters of randomness (32 × log2(62) ≈ 190 bits).
pub const RANDOM_CHARS: usize = 32;
/// Base62 characters of the CRC32 checksum.
pub const CHECKSUM_CHARS: usize = 6;
/// Characters of randomness shown in a token's display prefix.
pub const DISPLAY_RANDOM_CHARS: usize = 4;
/// Longest instance prefix accepted.
pub const MAX_INSTANCE_PREFIX: usize = 20;

const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

// Each byte's base62 value, or 0x80 for a byte outside the alphabet: one table lookup per
// character, and the whole body checked without a branch per character.
const BASE62_VALUES: [u8; 256] = {
    let mut table = [0x80_u8; 256];
    let mut index = 0;
    while index < 62 {
        table[BASE62[index] as usize] = index as u8;
        index += 1;
    }
    table
};

fn base62_value(byte: u8) -> Option<u64> {
    let value = BASE62_VALUES[usize::from(byte)];
    (value & 0x80 == 0).then_some(u64::from(value))
}

fn all_base62(bytes: &[u8]) -> bool {
    bytes.iter().fold(0_u8, |seen, byte| seen | BASE62_VALUES[usize::from(*byte)]) & 0x80 == 0
}

fn encode_checksum(checksum: u32) -> [u8; CHECKSUM_CHARS] {
    let mut out = [b'0'; CHECKSUM_CHARS];
    let mut value = u64::from(checksum);
    for slot in out.iter_mut().rev() {
        *slot = BASE62[(value % 62) as usize];
        value /= 62;
    }
    out
}

fn decode_checksum(text: &[u8]) -> Option<u64> {
    text.iter().try_fold(0_u64, |value, byte| Some(value * 62 + base62_value(*byte)?))
}

/// Why a string is not a patgate token. Decided offline, before any lookup.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, thiserror::Error)]
pub enum TokenParseError {
    #[error("the token does not start with this instance's prefix")]
    Prefix,
    #[error("the token has the wrong length")]
    Length,
    #[error("the token contains a character outside base62")]
    Character,
    #[error("the token's checksum does not match")]
    Checksum,
}

/// An invalid instance prefix.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "instance prefix `{0}` must be at most {MAX_INSTANCE_PREFIX} lowercase letters or digits followed by `-`, or empty"
)]
pub struct InstancePrefixError(pub String);

/// How this instance writes tokens: an optional instance prefix before the kind prefix.
///
/// INVARIANT: the instance prefix is empty or `[a-z0-9]{1,20}-`, so it never contains a
/// base62 character run that could be mistaken for the token body.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct TokenFormat {
    instance_prefix: String,
}

/// A token string that passed [`TokenFormat::parse`]: right prefix, length and checksum.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct ParsedToken<'a> {
    kind: TokenKind,
    text: &'a str,
}

impl ParsedToken<'_> {
    /// The kind its prefix names.
    pub fn kind(&self) -> TokenKind {
        self.kind
    }

    /// The characters its display prefix shows, as a number: known before the digest is.
    pub fn hint(&self) -> TokenHint {
        TokenHint::of_body(self.text)
    }

    /// The whole token, to digest. Never log it.
    pub fn expose_secret(&self) -> &str {
        self.text
    }
}

impl fmt::Debug for ParsedToken<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ParsedToken({:?}, [redacted])", self.kind)
    }
}

impl TokenFormat {
    /// A format with `instance_prefix` (`""` for none, or e.g. `"acme-"`).
    pub fn new(instance_prefix: &str) -> Result<TokenFormat, InstancePrefixError> {
        if valid_instance_prefix(instance_prefix) {
            Ok(TokenFormat { instance_prefix: instance_prefix.to_owned() })
        } else {
            Err(InstancePrefixError(instance_prefix.to_owned()))
        }
    }

    /// The instance prefix, possibly empty.
    pub fn instance_prefix(&self) -> &str {
        &self.instance_prefix
    }

    /// Draws a new token of `kind` from the OS CSPRNG.
    pub fn generate(&self, kind: TokenKind) -> Result<PlainToken, getrandom::Error> {
        let mut random = [0_u8; RANDOM_CHARS];
        let mut filled = 0;
        let mut bytes = [0_u8; 64];
        while filled < RANDOM_CHARS {
            getrandom::fill(&mut bytes)?;
            // Rejection sampling keeps every character uniform over base62.
            for byte in bytes {
                if byte < 248 && filled < RANDOM_CHARS {
                    random[filled] = BASE62[usize::from(byte % 62)];
                    filled += 1;
                }
            }
        }
        Ok(self.assemble(kind, &random))
    }

    /// Builds the token for given random characters (all base62). Public for tests and
    /// deterministic benchmarks; real tokens come from [`TokenFormat::generate`].
    pub fn assemble(&self, kind: TokenKind, random: &[u8; RANDOM_CHARS]) -> PlainToken {
        let mut text =
            String::with_capacity(self.instance_prefix.len() + kind.prefix().len() + RANDOM_CHARS + CHECKSUM_CHARS);
        text.push_str(&self.instance_prefix);
        text.push_str(kind.prefix());
        text.extend(random.iter().map(|b| char::from(*b)));
        let checksum = crc32fast::hash(text.as_bytes());
        text.extend(encode_checksum(checksum).iter().map(|b| char::from(*b)));
        PlainToken(text)
    }

    /// Checks prefix, length, alphabet and checksum, without any lookup.
    ///
    /// Any well-formed instance prefix is accepted, not only this format's: changing the
    /// instance prefix applies to new tokens and leaves existing ones working (the digest
    /// covers the whole string, so a token cannot be re-prefixed).
    pub fn parse<'a>(&self, text: &'a str) -> Result<ParsedToken<'a>, TokenParseError> {
        const TAIL: usize = 6 + RANDOM_CHARS + CHECKSUM_CHARS;
        if text.len() < TAIL || !text.is_char_boundary(text.len() - TAIL) {
            return Err(if text.starts_with(LEGACY_PREFIX) || text.starts_with(FINE_GRAINED_PREFIX) {
                TokenParseError::Length
            } else {
                TokenParseError::Prefix
            });
        }
        let (instance, rest) = text.split_at(text.len() - TAIL);
        // Checked in place: a format built to check it would copy it (an allocation on
        // every request of an instance with a prefix).
        if !valid_instance_prefix(instance) {
            return Err(TokenParseError::Prefix);
        }
        let (kind, body) = if let Some(body) = rest.strip_prefix(LEGACY_PREFIX) {
            (TokenKind::Legacy, body)
        } else if let Some(body) = rest.strip_prefix(FINE_GRAINED_PREFIX) {
            (TokenKind::FineGrained, body)
        } else {
            return Err(TokenParseError::Prefix);
        };
        let body = body.as_bytes();
        if body.len() != RANDOM_CHARS + CHECKSUM_CHARS {
            return Err(TokenParseError::Length);
        }
        if !all_base62(body) {
            return Err(TokenParseError::Character);
        }
        let split = text.len() - CHECKSUM_CHARS;
        let expected = decode_checksum(&text.as_bytes()[split..]).ok_or(TokenParseError::Character)?;
        if expected != u64::from(crc32fast::hash(&text.as_bytes()[..split])) {
            return Err(TokenParseError::Checksum);
        }
        Ok(ParsedToken { kind, text })
    }
}

/// Whether `prefix` is empty or `[a-z0-9]{1,20}-`.
fn valid_instance_prefix(prefix: &str) -> bool {
    prefix.is_empty()
        || (prefix.len() >= 2
            && prefix.len() <= MAX_INSTANCE_PREFIX + 1
            && prefix.ends_with('-')
            && prefix[..prefix.len() - 1].bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()))
}

/// A token in the clear. It exists only between generation and the one response that
/// shows it to its owner.
///
/// INVARIANT: `Debug` never shows the secret and there is no `Display`.
#[derive(Clone, PartialEq, Eq)]
pub struct PlainToken(String);

impl PlainToken {
    /// The secret, to show once. Never log it.
    pub fn expose_secret(&self) -> &str {
        &self.0
    }

    /// The prefixes and the first few random characters: identifies a token in lists
    /// without revealing enough of it to matter (the rest still carries 166 bits).
    pub fn display_prefix(&self) -> String {
        let end = self.0.len() - RANDOM_CHARS - CHECKSUM_CHARS + DISPLAY_RANDOM_CHARS;
        self.0.get(..end).unwrap_or_default().to_owned()
    }
}

impl PlainToken {
    /// The characters its display prefix shows, as a number.
    pub fn hint(&self) -> TokenHint {
        TokenHint::of_body(&self.0)
    }
}

impl fmt::Debug for PlainToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PlainToken({}…[redacted])", self.display_prefix())
    }
}

/// The random characters a token's display prefix shows, read as a base62 number (below
/// 62⁴ ≈ 14.8 million): where the index starts looking for a token, known as soon as the
/// string parses, so the lookup's first load overlaps the digest's computation.
///
/// It reveals nothing the display prefix does not (lists show these characters); the
/// digest, not the hint, identifies a token.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TokenHint(u32);

impl TokenHint {
    // The hint of a well-formed token string (checked by `parse`, or just assembled).
    fn of_body(text: &str) -> TokenHint {
        let start = text.len().saturating_sub(RANDOM_CHARS + CHECKSUM_CHARS);
        let shown = text.as_bytes().get(start..start + DISPLAY_RANDOM_CHARS).unwrap_or_default();
        TokenHint::of_shown(shown).unwrap_or(TokenHint(0))
    }

    fn of_shown(shown: &[u8]) -> Option<TokenHint> {
        if shown.len() != DISPLAY_RANDOM_CHARS {
            return None;
        }
        decode_checksum(shown).and_then(|value| u32::try_from(value).ok()).map(TokenHint)
    }

    /// The hint of the token a stored display prefix (`[instance-]pgfgt-Xk3v`) belongs
    /// to; `None` when it is not one.
    pub fn of_display_prefix(display_prefix: &str) -> Option<TokenHint> {
        let start = display_prefix.len().checked_sub(DISPLAY_RANDOM_CHARS)?;
        let (prefixes, shown) = (display_prefix.get(..start)?, display_prefix.get(start..)?);
        if !prefixes.ends_with(LEGACY_PREFIX) && !prefixes.ends_with(FINE_GRAINED_PREFIX) {
            return None;
        }
        TokenHint::of_shown(shown.as_bytes())
    }

    /// The hint as a non-zero table tag.
    pub fn tag(self) -> u64 {
        u64::from(self.0) + 1
    }
}

/// Where the index finds a token: the hint narrows to a few candidates before the digest is
/// known, the digest picks the one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TokenAddress {
    pub hint: TokenHint,
    pub digest: TokenDigest,
}

/// HMAC-SHA-256 of a token under the instance secret: what is stored and looked up.
///
/// INVARIANT: `Debug` shows nothing of the bytes; `Hash` feeds the first 8 bytes to the
/// hasher, which is sound because the digest is keyed and uniform.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct TokenDigest([u8; 32]);

impl TokenDigest {
    /// The digest's bytes, for storage.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// A digest read back from storage.
    pub fn from_bytes(bytes: [u8; 32]) -> TokenDigest {
        TokenDigest(bytes)
    }
}

impl TokenDigest {
    /// The first eight bytes as a word: the digest is keyed and uniform, so this is already
    /// a good hash.
    pub fn tag(&self) -> u64 {
        let mut word = [0_u8; 8];
        word.copy_from_slice(&self.0[..8]);
        u64::from_le_bytes(word)
    }
}

impl std::hash::Hash for TokenDigest {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        state.write_u64(self.tag());
    }
}

impl fmt::Debug for TokenDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TokenDigest([redacted])")
    }
}

/// The instance secret that keys token digests.
///
/// INVARIANT: `Debug` never shows the key.
#[derive(Clone)]
pub struct DigestKey {
    mac: Hmac<Sha256>,
}

/// A digest key shorter than 32 bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("the token digest key must be at least 32 bytes")]
pub struct DigestKeyError;

impl DigestKey {
    /// A key from at least 32 secret bytes.
    pub fn new(secret: &[u8]) -> Result<DigestKey, DigestKeyError> {
        if secret.len() < 32 {
            return Err(DigestKeyError);
        }
        let mac = <Hmac<Sha256> as KeyInit>::new_from_slice(secret).map_err(|_| DigestKeyError)?;
        Ok(DigestKey { mac })
    }

    /// The digest of a token that passed parsing.
    pub fn digest(&self, token: &ParsedToken<'_>) -> TokenDigest {
        self.digest_str(token.text)
    }

    /// The digest of a freshly generated token.
    pub fn digest_plain(&self, token: &PlainToken) -> TokenDigest {
        self.digest_str(&token.0)
    }

    /// Where the index finds a token that passed parsing.
    pub fn address(&self, token: &ParsedToken<'_>) -> TokenAddress {
        TokenAddress { hint: token.hint(), digest: self.digest(token) }
    }

    /// Where the index finds a freshly generated token.
    pub fn address_plain(&self, token: &PlainToken) -> TokenAddress {
        TokenAddress { hint: token.hint(), digest: self.digest_plain(token) }
    }

    /// A short public fingerprint of the key, to detect that a database's tokens were made
    /// under another key. Reveals nothing of the key.
    pub fn fingerprint(&self) -> String {
        let digest = self.digest_str("patgate key fingerprint v1");
        digest.0[..8].iter().map(|b| format!("{b:02x}")).collect()
    }

    fn digest_str(&self, text: &str) -> TokenDigest {
        let mut mac = self.mac.clone();
        mac.update(text.as_bytes());
        TokenDigest(mac.finalize().into_bytes().into())
    }
}

impl fmt::Debug for DigestKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DigestKey([redacted])")
    }
}
