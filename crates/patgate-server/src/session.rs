//! Web sessions: the `patgate_session` cookie, its lifetimes, the per-session CSRF token,
//! and how a request's cookie becomes a [`SessionState`] for the `Credentials` extractor.
//!
//! A session id is 32 random bytes, hex in the cookie; the store keeps only its SHA-256
//! ([`SessionDigest`]). A session ends [`IDLE_TIMEOUT_SECONDS`] after its last request, and
//! [`ABSOLUTE_LIFETIME_SECONDS`] after sign-in whatever the activity; its stored
//! `expires_at` is always the earlier of the two. See docs/ui.md, "Signing in".

use axum::{
    body::Body,
    extract::Request,
    http::{HeaderMap, HeaderValue, Method, header},
    middleware::Next,
    response::{IntoResponse, Response},
};
use patgate_core::{Timestamp, TokenId};
use patgate_store::{CsrfToken, SessionDigest, SessionRow, Store};
use sha2::{Digest, Sha256};

use crate::{error::ApiError, state::Shared};

/// The cookie holding the session id.
pub const SESSION_COOKIE: &str = "patgate_session";
/// The header a session's requests that change something carry the CSRF token in.
pub const CSRF_HEADER: &str = "x-csrf-token";
/// … or, for a form post (`application/x-www-form-urlencoded`), this form field.
pub const CSRF_FORM_FIELD: &str = "csrf";
/// A session ends after 8 hours without a request (sliding).
pub const IDLE_TIMEOUT_SECONDS: i64 = 8 * 3600;
/// A session ends 7 days after sign-in, however active. The cookie's `Max-Age` is this:
/// the browser keeps the cookie as long as the session can possibly live, and the server
/// enforces the idle timeout (a cookie refreshed on every request would need a `Set-Cookie`
/// on every response).
pub const ABSOLUTE_LIFETIME_SECONDS: i64 = 7 * 86_400;
/// Activity is written to the store at most once a minute per session, so the idle expiry
/// may fall up to this much earlier than 8 hours after the very last request.
pub const TOUCH_INTERVAL_SECONDS: i64 = 60;
/// Sign-in failures a client address may have at once, and per minute after that
/// (a wrong current password on a password change counts as one).
pub const SIGN_IN_FAILURE_BURST: u32 = 10;
pub const SIGN_IN_FAILURES_PER_MINUTE: u32 = 10;

/// The token id a session acts with (see `auth`). Stored tokens' ids start at 1 on both
/// backends (SQLite `AUTOINCREMENT`, PostgreSQL identity), so no token has this one.
pub const SESSION_TOKEN_ID: TokenId = TokenId(0);

/// How many `patgate_session` cookies of one request are tried (a sibling domain may have
/// planted others beside ours).
const MAX_COOKIE_CANDIDATES: usize = 3;

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

fn random_bytes() -> Result<[u8; 32], ApiError> {
    let mut bytes = [0_u8; 32];
    getrandom::fill(&mut bytes).map_err(|error| ApiError::Internal(format!("no randomness: {error}")))?;
    Ok(bytes)
}

/// A session id as the cookie carries it: 32 random bytes.
///
/// INVARIANT: exists in full only in the browser's cookie and while a request is handled;
/// `Debug` shows nothing of it; the store sees only [`SessionId::digest`].
pub struct SessionId([u8; 32]);

impl std::fmt::Debug for SessionId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SessionId([redacted])")
    }
}

impl SessionId {
    /// A new random id.
    pub fn generate() -> Result<SessionId, ApiError> {
        random_bytes().map(SessionId)
    }

    /// The id a cookie value names: exactly 64 lowercase hex digits.
    pub fn parse(text: &str) -> Option<SessionId> {
        let digits = text.as_bytes();
        if digits.len() != 64 {
            return None;
        }
        let value = |digit: u8| match digit {
            b'0'..=b'9' => Some(digit - b'0'),
            b'a'..=b'f' => Some(digit - b'a' + 10),
            _ => None,
        };
        let mut bytes = [0_u8; 32];
        for (byte, pair) in bytes.iter_mut().zip(digits.chunks_exact(2)) {
            *byte = value(pair[0])? << 4 | value(pair[1])?;
        }
        Some(SessionId(bytes))
    }

    /// What the store keeps: the SHA-256 of the id's bytes.
    pub fn digest(&self) -> SessionDigest {
        SessionDigest::from_bytes(Sha256::digest(self.0).into())
    }

    /// The `Set-Cookie` value that hands this id to the browser.
    pub fn cookie(&self) -> HeaderValue {
        // Hex and fixed attributes: always a valid header value.
        HeaderValue::from_str(&format!(
            "{SESSION_COOKIE}={}; HttpOnly; Secure; SameSite=Strict; Path=/; Max-Age={ABSOLUTE_LIFETIME_SECONDS}",
            hex(&self.0)
        ))
        .unwrap_or_else(|_| clear_cookie())
    }
}

/// The `Set-Cookie` value that makes the browser forget the session.
pub fn clear_cookie() -> HeaderValue {
    HeaderValue::from_static("patgate_session=; HttpOnly; Secure; SameSite=Strict; Path=/; Max-Age=0")
}

/// A new random CSRF token.
pub fn new_csrf_token() -> Result<CsrfToken, ApiError> {
    random_bytes().map(|bytes| CsrfToken::new(hex(&bytes)))
}

/// When a session made or last seen at `now` expires: the idle timeout from `now`, never
/// past the absolute lifetime from `created_at`.
pub fn expiry(created_at: Timestamp, now: Timestamp) -> Timestamp {
    Timestamp((now.0 + IDLE_TIMEOUT_SECONDS).min(created_at.0 + ABSOLUTE_LIFETIME_SECONDS))
}

/// The session ids the request's `Cookie` headers name, in order, at most a few.
fn cookie_candidates(headers: &HeaderMap) -> Vec<SessionId> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .filter(|(name, _)| *name == SESSION_COOKIE)
        .filter_map(|(_, value)| SessionId::parse(value.trim().trim_matches('"')))
        .take(MAX_COOKIE_CANDIDATES)
        .collect()
}

/// Whether the request names a session at all (a well-formed cookie).
pub fn has_session_cookie(headers: &HeaderMap) -> bool {
    !cookie_candidates(headers).is_empty()
}

/// A live session found from the request's cookie.
#[derive(Debug, Clone)]
pub struct ActiveSession {
    pub digest: SessionDigest,
    pub row: SessionRow,
    /// Whether the request carried this session's CSRF token (header or form field).
    pub csrf_presented: bool,
}

/// What the request's cookie comes to.
#[derive(Debug, Clone, Default)]
pub enum SessionState {
    /// No session cookie.
    #[default]
    None,
    /// A cookie naming no live session: signed out, expired, ended by a password change
    /// or by blocking the user.
    Ended,
    Active(ActiveSession),
}

/// The CSRF token of a form post, read from its body by [`form_csrf`].
#[derive(Clone)]
pub struct FormCsrf(String);

impl std::fmt::Debug for FormCsrf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FormCsrf([redacted])")
    }
}

/// Finds the live session the request's cookie names (if any), notes whether the request
/// carries its CSRF token, and records the activity (sliding the idle expiry).
pub async fn resolve(
    shared: &Shared,
    headers: &HeaderMap,
    form_csrf: Option<&FormCsrf>,
) -> Result<SessionState, ApiError> {
    let candidates = cookie_candidates(headers);
    if candidates.is_empty() {
        return Ok(SessionState::None);
    }
    let now = shared.clock.now();
    for id in candidates {
        let digest = id.digest();
        let Some(row) = shared.store.session(&digest, now).await? else { continue };
        let presented = headers
            .get(CSRF_HEADER)
            .and_then(|value| value.to_str().ok())
            .or(form_csrf.map(|form| form.0.as_str()))
            .map(str::trim);
        let csrf_presented = presented.is_some_and(|presented| row.csrf_token.matches(presented));
        if now.0 - row.last_seen_at.0 >= TOUCH_INTERVAL_SECONDS {
            let slid = expiry(row.created_at, now);
            if !shared.store.touch_session(&digest, now, slid).await? {
                // Ended between the read and the write.
                continue;
            }
        }
        return Ok(SessionState::Active(ActiveSession { digest, row, csrf_presented }));
    }
    Ok(SessionState::Ended)
}

/// Whether a method changes nothing, so a session needs no CSRF token for it.
pub fn is_safe(method: &Method) -> bool {
    method == Method::GET || method == Method::HEAD
}

fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while let Some(&byte) = bytes.get(index) {
        match byte {
            b'+' => out.push(b' '),
            b'%' => {
                let pair = std::str::from_utf8(bytes.get(index + 1..index + 3)?).ok()?;
                out.push(u8::from_str_radix(pair, 16).ok()?);
                index += 2;
            }
            other => out.push(other),
        }
        index += 1;
    }
    String::from_utf8(out).ok()
}

/// The `csrf` field of an `application/x-www-form-urlencoded` body.
fn form_field(body: &[u8]) -> Option<String> {
    std::str::from_utf8(body).ok()?.split('&').find_map(|pair| {
        let (name, value) = pair.split_once('=')?;
        (name == CSRF_FORM_FIELD).then(|| percent_decode(value)).flatten()
    })
}

/// Middleware: a form post that carries a session cookie has its body read here (up to
/// [`crate::BODY_LIMIT`]) so that its `csrf` field can stand in for `X-CSRF-Token`; the
/// body is passed on unchanged. Every other request passes untouched.
pub async fn form_csrf(request: Request, next: Next) -> Response {
    let is_form = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split(';').next())
        .is_some_and(|mime| mime.trim().eq_ignore_ascii_case("application/x-www-form-urlencoded"));
    if !is_form || is_safe(request.method()) || !has_session_cookie(request.headers()) {
        return next.run(request).await;
    }
    let (parts, body) = request.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, crate::BODY_LIMIT).await else {
        return ApiError::TooLarge(crate::BODY_LIMIT).into_response();
    };
    let csrf = form_field(&bytes);
    let mut request = Request::from_parts(parts, Body::from(bytes));
    if let Some(csrf) = csrf {
        request.extensions_mut().insert(FormCsrf(csrf));
    }
    next.run(request).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_id_round_trips_through_its_cookie_and_only_its_digest_is_kept() {
        let id = SessionId::generate().unwrap();
        let cookie = id.cookie();
        let cookie = cookie.to_str().unwrap();
        let value = cookie.strip_prefix("patgate_session=").unwrap().split(';').next().unwrap();
        let mut headers = HeaderMap::new();
        headers.insert(header::COOKIE, format!("theme=dark; patgate_session={value}").parse().unwrap());
        let found = cookie_candidates(&headers);
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].digest(), id.digest());
        assert_ne!(id.digest().to_hex(), value, "the digest is not the id");
        assert_eq!(format!("{id:?}"), "SessionId([redacted])");
        assert!(SessionId::parse(&value.to_uppercase()).is_none());
        assert!(SessionId::parse(&value[1..]).is_none());
    }

    #[test]
    fn expiry_slides_but_never_past_the_absolute_lifetime() {
        let created = Timestamp(1_000_000);
        assert_eq!(expiry(created, created).0, 1_000_000 + 8 * 3600);
        assert_eq!(expiry(created, Timestamp(1_000_000 + 7 * 86_400 - 3600)).0, 1_000_000 + 7 * 86_400);
    }

    #[test]
    fn the_form_field_is_found_and_decoded() {
        assert_eq!(form_field(b"a=1&csrf=ab%2Bc+d&b=2").as_deref(), Some("ab+c d"));
        assert_eq!(form_field(b"a=1"), None);
        assert_eq!(form_field(b"csrf=%zz"), None);
    }
}
