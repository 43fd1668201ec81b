//! The token string: round trips, the checksum, and that nothing malformed is looked up.

use std::cell::Cell;

use patgate_core::{
    DenyReason, DigestKey, TokenAddress, TokenFormat, TokenHint, TokenKind, TokenLookup, TokenRecord, authenticate,
    token::format::{CHECKSUM_CHARS, RANDOM_CHARS, TokenParseError},
};
use proptest::prelude::*;

const BASE62: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

fn key() -> DigestKey {
    DigestKey::new(&[7_u8; 32]).unwrap()
}

fn random_chars() -> impl Strategy<Value = [u8; RANDOM_CHARS]> {
    prop::array::uniform32(prop::sample::select(BASE62.to_vec()))
}

fn kind() -> impl Strategy<Value = TokenKind> {
    prop_oneof![Just(TokenKind::Legacy), Just(TokenKind::FineGrained)]
}

fn format() -> impl Strategy<Value = TokenFormat> {
    prop_oneof![Just(TokenFormat::new("").unwrap()), Just(TokenFormat::new("acme-").unwrap())]
}

/// Counts lookups, and knows no token.
#[derive(Default)]
struct CountingLookup {
    calls: Cell<usize>,
}

impl TokenLookup for CountingLookup {
    fn token_at(&self, _address: &TokenAddress) -> Option<&TokenRecord> {
        self.calls.set(self.calls.get() + 1);
        None
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1_000, .. ProptestConfig::default() })]

    #[test]
    fn format_then_parse_round_trips(format in format(), kind in kind(), random in random_chars()) {
        let token = format.assemble(kind, &random);
        let parsed = format.parse(token.expose_secret()).unwrap();
        prop_assert_eq!(parsed.kind(), kind);
        prop_assert_eq!(parsed.expose_secret(), token.expose_secret());
        prop_assert!(token.expose_secret().starts_with(format.instance_prefix()));
        prop_assert_eq!(key().digest(&parsed), key().digest_plain(&token));
    }

    /// The hint is the same from the token, from its parse and from its stored display
    /// prefix, and names the characters that prefix shows.
    #[test]
    fn the_hint_is_read_alike_from_token_parse_and_display_prefix(
        format in format(),
        kind in kind(),
        random in random_chars(),
    ) {
        let token = format.assemble(kind, &random);
        let parsed = format.parse(token.expose_secret()).unwrap();
        prop_assert_eq!(parsed.hint(), token.hint());
        prop_assert_eq!(TokenHint::of_display_prefix(&token.display_prefix()), Some(token.hint()));
        let mut other = random;
        other[0] = if other[0] == b'0' { b'1' } else { b'0' };
        prop_assert_ne!(format.assemble(kind, &other).hint(), token.hint());
        other = random;
        other[4] = if other[4] == b'0' { b'1' } else { b'0' };
        prop_assert_eq!(format.assemble(kind, &other).hint(), token.hint());
    }

    /// Any single-character change anywhere in the token is rejected offline.
    #[test]
    fn the_checksum_catches_every_single_character_change(
        format in format(),
        kind in kind(),
        random in random_chars(),
        position in any::<prop::sample::Index>(),
        replacement in any::<char>(),
    ) {
        let token = format.assemble(kind, &random);
        let text = token.expose_secret();
        let position = position.index(text.len());
        let original = text.as_bytes()[position] as char;
        prop_assume!(replacement != original);
        let mut changed: String = text[..position].to_owned();
        changed.push(replacement);
        changed.push_str(&text[position + 1..]);
        prop_assert!(format.parse(&changed).is_err(), "{} accepted after changing position {}", changed, position);
    }

    /// Every base62 substitution in the body is caught by the checksum itself (not just by
    /// the alphabet check).
    #[test]
    fn every_base62_substitution_fails_the_checksum(random in random_chars(), position in 0..RANDOM_CHARS + CHECKSUM_CHARS, with in prop::sample::select(BASE62.to_vec())) {
        let format = TokenFormat::new("").unwrap();
        let token = format.assemble(TokenKind::FineGrained, &random);
        let mut bytes = token.expose_secret().as_bytes().to_vec();
        let index = bytes.len() - RANDOM_CHARS - CHECKSUM_CHARS + position;
        prop_assume!(bytes[index] != with);
        bytes[index] = with;
        let changed = String::from_utf8(bytes).unwrap();
        prop_assert_eq!(format.parse(&changed).unwrap_err(), TokenParseError::Checksum);
    }

    /// A string that fails parsing never reaches the lookup.
    #[test]
    fn malformed_strings_never_reach_lookup(text in ".{0,80}", bytes in prop::collection::vec(any::<u8>(), 0..60)) {
        let format = TokenFormat::new("").unwrap();
        let lookup = CountingLookup::default();
        for candidate in [text, String::from_utf8_lossy(&bytes).into_owned()] {
            let parsed = format.parse(&candidate);
            let result = authenticate(&lookup, &format, &key(), &candidate);
            match parsed {
                Err(error) => {
                    prop_assert_eq!(result.unwrap_err(), DenyReason::Malformed(error));
                    prop_assert_eq!(lookup.calls.get(), 0);
                }
                Ok(_) => prop_assert_eq!(result.unwrap_err(), DenyReason::UnknownToken),
            }
        }
    }
}

#[test]
fn generated_tokens_are_distinct_and_well_formed() {
    let format = TokenFormat::new("acme-").unwrap();
    let mut seen = std::collections::HashSet::new();
    for _ in 0..1_000 {
        let token = format.generate(TokenKind::Legacy).unwrap();
        let text = token.expose_secret();
        assert!(text.starts_with("acme-pgpat-"), "{text}");
        assert_eq!(text.len(), "acme-pgpat-".len() + RANDOM_CHARS + CHECKSUM_CHARS);
        assert!(format.parse(text).is_ok());
        assert!(seen.insert(text.to_owned()), "duplicate token");
    }
    // Each body character is drawn uniformly from base62: over 32,000 draws every one of
    // the 62 characters shows up (probability of missing one is below 1e-200).
    let mut counts = [0_usize; 62];
    for _ in 0..1_000 {
        let token = format.generate(TokenKind::FineGrained).unwrap();
        let body = &token.expose_secret()["acme-pgfgt-".len()..][..RANDOM_CHARS];
        for byte in body.bytes() {
            counts[BASE62.iter().position(|b| *b == byte).unwrap()] += 1;
        }
    }
    assert!(counts.iter().all(|count| *count > 300), "{counts:?}");
}

#[test]
fn prefixes_and_kinds_are_checked() {
    let plain = TokenFormat::new("").unwrap();
    let acme = TokenFormat::new("acme-").unwrap();
    // Tokens minted under another (or no) instance prefix still parse: changing the prefix
    // applies to new tokens only.
    let token = acme.assemble(TokenKind::Legacy, &[b'a'; RANDOM_CHARS]);
    assert_eq!(plain.parse(token.expose_secret()).unwrap().kind(), TokenKind::Legacy);
    let token = plain.assemble(TokenKind::Legacy, &[b'a'; RANDOM_CHARS]);
    assert!(acme.parse(token.expose_secret()).is_ok());
    // A malformed instance prefix is refused.
    for bad in ["ACME-", "ac me-", "a_b-", "-"] {
        assert_eq!(
            acme.parse(&format!("{bad}{}", token.expose_secret())).unwrap_err(),
            TokenParseError::Prefix,
            "{bad}"
        );
    }
    assert_eq!(plain.parse("pgpat-short").unwrap_err(), TokenParseError::Length);
    assert_eq!(plain.parse("glpat-0123456789012345678901234567890123456").unwrap_err(), TokenParseError::Prefix);
    // Changing the kind prefix while keeping the body breaks the checksum.
    let swapped = token.expose_secret().replacen("pgpat-", "pgfgt-", 1);
    assert_eq!(plain.parse(&swapped).unwrap_err(), TokenParseError::Checksum);
    for bad in ["ACME-", "acme", "ac me-", "-", "averyveryverylongprefix-", "acme_"] {
        assert!(TokenFormat::new(bad).is_err(), "{bad}");
    }
}

#[test]
fn secrets_never_show_in_debug_output() {
    let format = TokenFormat::new("").unwrap();
    let token = format.generate(TokenKind::FineGrained).unwrap();
    let secret = token.expose_secret();
    let random = &secret[secret.len() - RANDOM_CHARS - CHECKSUM_CHARS..];
    let parsed = format.parse(secret).unwrap();
    let key = key();
    let digest = key.digest(&parsed);
    for shown in [format!("{token:?}"), format!("{parsed:?}"), format!("{digest:?}"), format!("{key:?}")] {
        assert!(!shown.contains(random), "{shown}");
        assert!(!shown.contains(&random[DISPLAY..]), "{shown}");
        assert!(shown.contains("redacted"), "{shown}");
    }
    assert_eq!(token.display_prefix(), secret[..secret.len() - RANDOM_CHARS - CHECKSUM_CHARS + DISPLAY]);
    assert!(DigestKey::new(&[1; 31]).is_err());
}

const DISPLAY: usize = patgate_core::token::format::DISPLAY_RANDOM_CHARS;

#[test]
fn a_display_prefix_that_is_not_a_tokens_has_no_hint() {
    for text in ["", "pgfgt-", "pgfgt-Xk3", "pgfgt-Xk3v9", "pgxyz-Xk3v", "pgfgt-Xk-v", "Xk3v"] {
        assert_eq!(TokenHint::of_display_prefix(text), None, "{text}");
    }
    assert!(TokenHint::of_display_prefix("acme-pgpat-Xk3v").is_some());
}
