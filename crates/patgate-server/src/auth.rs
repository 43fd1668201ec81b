//! Credentials on a request, and the capability a handler receives once the engine has
//! allowed the call.
//!
//! A request authenticates with a token (`PRIVATE-TOKEN`, `Authorization`) or, when it
//! presents none, with the web session its `patgate_session` cookie names. A token always
//! wins: a request that presents one is a token request and its cookie is not looked at.
//! The decision endpoints (`/api/v1/decide`, `/api/v1/forward-auth`) never read cookies.

use std::net::{IpAddr, SocketAddr};

use axum::{
    extract::{ConnectInfo, FromRequestParts, connect_info::MockConnectInfo},
    http::{Extensions, HeaderMap, HeaderValue, request::Parts},
};
use patgate_core::{
    Authority, Basis, BoundaryRef, DenyReason, Permission, Request, ScopeSet, Surface, TokenId, TokenRecord, User,
    UserId, decide_under, decision::Operation, scope::LegacyScope,
};
use patgate_store::Actor;

use crate::{
    error::ApiError,
    ratelimit::bucket_of,
    session::{self, ActiveSession, FormCsrf, SESSION_TOKEN_ID, SessionState},
    state::{AppState, Shared},
};

/// What a management request presents: its headers, the client's address (see
/// [`client_address`]), and the web session
/// its cookie names when it presents no token.
#[derive(Clone)]
pub struct Credentials {
    pub headers: HeaderMap,
    pub client_ip: Option<IpAddr>,
    /// The connection's own address (a proxy's, when there is one).
    pub peer: Option<IpAddr>,
    /// `GET` or `HEAD`: a session needs no CSRF token for these.
    pub safe_method: bool,
    /// The session the cookie names; always [`SessionState::None`] when a token is presented.
    pub session: SessionState,
}

impl std::fmt::Debug for Credentials {
    // The headers carry tokens and cookies: only their names are shown.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("headers", &self.headers.keys().collect::<Vec<_>>())
            .field("client_ip", &self.client_ip)
            .field("peer", &self.peer)
            .field("safe_method", &self.safe_method)
            .field("session", &self.session)
            .finish()
    }
}

/// The client's address. The peer's own, unless it is a trusted proxy; then the nearest
/// address of `X-Forwarded-For` that is not a trusted proxy itself, the list read from its
/// right end over every line of the header (each proxy appends the address it was sent the
/// request from, so what lies left of the nearest untrusted entry is whatever the client
/// wrote), or the farthest entry when every one is a trusted proxy. Without that header,
/// `X-Real-IP`; without either, the proxy itself. An entry that is not an address gives no
/// address at all: a token with an allowlist is then refused, never judged as the proxy.
pub fn client_address(shared: &Shared, headers: &HeaderMap, peer: Option<IpAddr>) -> Option<IpAddr> {
    Presented::read(headers).client_address(shared, headers, peer)
}

/// The nearest untrusted address of the `X-Forwarded-For` lines: see [`client_address`].
fn nearest_untrusted(shared: &Shared, headers: &HeaderMap) -> Option<IpAddr> {
    let mut farthest = None;
    for line in headers.get_all(X_FORWARDED_FOR).iter().rev() {
        for entry in line.to_str().ok()?.rsplit(',') {
            let entry = address(entry)?;
            if !shared.trusts_proxy(entry) {
                return Some(entry);
            }
            farthest = Some(entry);
        }
    }
    farthest
}

const X_FORWARDED_FOR: axum::http::HeaderName = axum::http::HeaderName::from_static("x-forwarded-for");

/// An address as proxies write it: `192.0.2.1`, `2001:db8::1`, or with a port
/// (`192.0.2.1:4711`, `[2001:db8::1]:4711`).
fn address(text: &str) -> Option<IpAddr> {
    let text = text.trim();
    text.parse().ok().or_else(|| text.parse::<SocketAddr>().ok().map(|socket| socket.ip()))
}

/// The request headers patgate authenticates and forwards with, each the first of its name,
/// found in one pass over the request's headers. A `HeaderMap::get` hashes the name it looks
/// for; a request carries a handful of headers, and forward auth reads six names on each.
#[derive(Clone, Copy, Default)]
pub struct Presented<'h> {
    pub private_token: Option<&'h HeaderValue>,
    pub authorization: Option<&'h HeaderValue>,
    pub forwarded_for: Option<&'h HeaderValue>,
    pub real_ip: Option<&'h HeaderValue>,
    pub forwarded_method: Option<&'h HeaderValue>,
    pub forwarded_uri: Option<&'h HeaderValue>,
    pub original_method: Option<&'h HeaderValue>,
    pub original_uri: Option<&'h HeaderValue>,
    /// One of the four headers naming the forwarded request came more than once.
    pub forwarded_repeated: bool,
}

impl<'h> Presented<'h> {
    pub fn read(headers: &'h HeaderMap) -> Presented<'h> {
        let mut found = Presented::default();
        for (name, value) in headers {
            let (slot, names_request) = match name.as_str() {
                "private-token" => (&mut found.private_token, false),
                "authorization" => (&mut found.authorization, false),
                "x-forwarded-for" => (&mut found.forwarded_for, false),
                "x-real-ip" => (&mut found.real_ip, false),
                "x-forwarded-method" => (&mut found.forwarded_method, true),
                "x-forwarded-uri" => (&mut found.forwarded_uri, true),
                "x-original-method" => (&mut found.original_method, true),
                "x-original-uri" => (&mut found.original_uri, true),
                _ => continue,
            };
            // The first value of a name, as `HeaderMap::get` answers.
            if slot.is_some() {
                found.forwarded_repeated |= names_request;
            } else {
                *slot = Some(value);
            }
        }
        found
    }

    /// The client's address: see [`client_address`]. `headers` are the ones this was read
    /// from (every `X-Forwarded-For` line counts, not only the first).
    pub fn client_address(&self, shared: &Shared, headers: &HeaderMap, peer: Option<IpAddr>) -> Option<IpAddr> {
        let peer = peer?;
        if !shared.trusts_proxy(peer) {
            return Some(peer);
        }
        if self.forwarded_for.is_some() {
            return nearest_untrusted(shared, headers);
        }
        match self.real_ip {
            Some(value) => text(Some(value)).and_then(address),
            None => Some(peer),
        }
    }

    /// The token the request presents: see [`presented_token`].
    pub fn token(&self, query: Option<&'h str>) -> Option<std::borrow::Cow<'h, str>> {
        if let Some(value) = text(self.private_token) {
            return Some(value.trim().into());
        }
        if let Some(value) = text(self.authorization) {
            if let Some(token) = value.strip_prefix("Bearer ").or_else(|| value.strip_prefix("bearer ")) {
                return Some(token.trim().into());
            }
            if let Some(encoded) = value.strip_prefix("Basic ").or_else(|| value.strip_prefix("basic ")) {
                let decoded = base64_decode(encoded.trim())?;
                let text = String::from_utf8(decoded).ok()?;
                // The username is ignored: the password is the token (as GitLab does).
                return text.split_once(':').map(|(_, password)| password.to_owned().into());
            }
        }
        let query = query?;
        query.split('&').find_map(|pair| {
            let (name, value) = pair.split_once('=')?;
            (name == "private_token" || name == "access_token").then(|| value.into())
        })
    }
}

impl std::fmt::Debug for Presented<'_> {
    // The values carry tokens: only which headers are present is shown.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let present = |value: Option<&HeaderValue>| value.is_some();
        f.debug_struct("Presented")
            .field("private_token", &present(self.private_token))
            .field("authorization", &present(self.authorization))
            .field("forwarded_for", &self.forwarded_for)
            .field("real_ip", &self.real_ip)
            .field("forwarded_method", &self.forwarded_method)
            .field("forwarded_uri", &present(self.forwarded_uri))
            .field("original_method", &self.original_method)
            .field("original_uri", &present(self.original_uri))
            .field("forwarded_repeated", &self.forwarded_repeated)
            .finish()
    }
}

/// A header's value as text, if it is visible ASCII.
pub fn text(value: Option<&HeaderValue>) -> Option<&str> {
    value.and_then(|value| value.to_str().ok())
}

/// The connection's peer address as axum's `ConnectInfo` extractor finds it: the listener's,
/// or the `MockConnectInfo` a test's router was given.
pub fn peer_address(extensions: &Extensions) -> Option<SocketAddr> {
    extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(peer)| *peer)
        .or_else(|| extensions.get::<MockConnectInfo<SocketAddr>>().map(|MockConnectInfo(peer)| *peer))
}

impl FromRequestParts<AppState> for Credentials {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let peer = peer_address(&parts.extensions).map(|peer| peer.ip());
        let presented = Presented::read(&parts.headers);
        let client_ip = presented.client_address(state, &parts.headers, peer);
        let session = if presented.token(None).is_some() {
            SessionState::None
        } else {
            session::resolve(state, &parts.headers, parts.extensions.get::<FormCsrf>()).await?
        };
        Ok(Credentials {
            client_ip,
            peer,
            safe_method: session::is_safe(&parts.method),
            session,
            headers: parts.headers.clone(),
        })
    }
}

/// Finds the token a request presents: `PRIVATE-TOKEN`, `Authorization: Bearer`, the
/// password of `Authorization: Basic`, or the `private_token` / `access_token` query
/// parameter (DESIGN §3.1).
pub fn presented_token<'h>(headers: &'h HeaderMap, query: Option<&'h str>) -> Option<std::borrow::Cow<'h, str>> {
    Presented::read(headers).token(query)
}

fn base64_decode(text: &str) -> Option<Vec<u8>> {
    let value = |byte: u8| -> Option<u32> {
        Some(match byte {
            b'A'..=b'Z' => byte - b'A',
            b'a'..=b'z' => byte - b'a' + 26,
            b'0'..=b'9' => byte - b'0' + 52,
            b'+' | b'-' => 62,
            b'/' | b'_' => 63,
            _ => return None,
        } as u32)
    };
    let bytes: Vec<u8> = text.bytes().filter(|b| *b != b'=').collect();
    let mut out = Vec::with_capacity(bytes.len() * 3 / 4);
    for chunk in bytes.chunks(4) {
        let mut word = 0_u32;
        for (index, byte) in chunk.iter().enumerate() {
            word |= value(*byte)? << (18 - 6 * index);
        }
        let take = match chunk.len() {
            4 => 3,
            3 => 2,
            2 => 1,
            _ => return None,
        };
        out.extend_from_slice(&word.to_be_bytes()[1..=take]);
    }
    Some(out)
}

/// How a caller authenticated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Via {
    /// A token the request presented.
    Token,
    /// The web session its cookie names.
    Session,
}

/// A caller the engine allowed: the token and its owner.
#[derive(Clone, Debug)]
pub struct Caller {
    pub user: UserId,
    pub username: String,
    pub admin: bool,
    /// The presented token; for a session, the synthetic token it acts with
    /// ([`session_token`]), which no store or index holds.
    pub token: TokenRecord,
    pub via: Via,
}

impl Caller {
    /// The id of the token the caller presented; `None` for a session.
    pub fn token_id(&self) -> Option<TokenId> {
        (self.via == Via::Token).then_some(self.token.id)
    }

    /// Who acts, for the audit log: the user, and their token unless it is a session.
    pub fn actor(&self) -> Actor {
        Actor { user: Some(self.user), token: self.token_id() }
    }

    /// The token a token made or rotated by this caller must stay within: the presented
    /// one. A signed-in user is bound only by their live role, as on GitLab's own pages.
    pub fn creator(&self) -> Option<&TokenRecord> {
        (self.via == Via::Token).then_some(&self.token)
    }
}

/// The token a session acts with: the signed-in user's full live rights, like a browser
/// session in GitLab. Legacy `api` (every API request the user's role allows) plus
/// `admin_mode` for an administrator, rebuilt on every request from the live directory, so
/// losing the admin flag or a membership counts at once. Its id is [`SESSION_TOKEN_ID`],
/// which no stored token has; it is never recorded as token use and never listed.
pub fn session_token(user: &User, session: &ActiveSession) -> TokenRecord {
    TokenRecord {
        id: SESSION_TOKEN_ID,
        owner: user.id,
        authority: session_authority(user),
        created_at: session.row.created_at,
        // The session's own expiry was checked when it was found.
        expires_at: None,
        revoked_at: None,
        allowed_ips: Box::new([]),
    }
}

/// What a web session of `user` may do: legacy `api`, and `admin_mode` for an administrator
/// (see [`session_token`]).
pub fn session_authority(user: &User) -> Authority {
    let mut scopes = ScopeSet::EMPTY.with(LegacyScope::Api);
    if user.admin {
        scopes = scopes.with(LegacyScope::AdminMode);
    }
    Authority::Legacy(scopes)
}

fn missing_credentials() -> ApiError {
    ApiError::Unauthenticated {
        reason: "missing_token",
        message: "No token: send it as `PRIVATE-TOKEN: <token>` or `Authorization: Bearer <token>`, or sign in."
            .to_owned(),
    }
}

fn session_ended() -> ApiError {
    ApiError::Unauthenticated {
        reason: "session_ended",
        message: "The session has ended (signed out, expired, or ended by a password change): sign in again."
            .to_owned(),
    }
}

/// Authenticates by the web session alone: 401 without a live session; 403 `csrf` when
/// the method changes something and the request lacks the session's CSRF token. The
/// engine then judges `operation` for the session's synthetic token under no token policy
/// (lifetime caps and the legacy cut-off govern tokens, not sessions).
pub fn by_session<'c>(
    shared: &Shared,
    credentials: &'c Credentials,
    operation: Operation<'_>,
    read_only: bool,
    on_own_token: bool,
) -> Result<(Caller, &'c ActiveSession), ApiError> {
    let session = match &credentials.session {
        SessionState::Active(session) => session,
        SessionState::Ended => return Err(session_ended()),
        SessionState::None => return Err(missing_credentials()),
    };
    if !credentials.safe_method && !session.csrf_presented {
        return Err(ApiError::Forbidden {
            reason: "csrf",
            message: "A request made with a session cookie that changes something must carry the session's CSRF \
                      token in `X-CSRF-Token` (or a form's `csrf` field)."
                .to_owned(),
            missing: None,
        });
    }
    let now = shared.clock.now();
    let engine = shared.engine();
    let Some(user) = engine.index.directory.user(session.row.user) else {
        return Err(session_ended());
    };
    let token = session_token(user, session);
    let (username, admin) = (user.username.to_string(), user.admin);
    let request =
        Request { operation, read_only, surface: Surface::Api, on_own_token, client_ip: credentials.client_ip };
    let policy = patgate_core::Policy::UNRESTRICTED;
    let decision = decide_under(&engine.resources, &engine.index.directory, &policy, &token, &request, now);
    drop(engine);
    match decision.outcome {
        Ok(_) => Ok((Caller { user: token.owner, username, admin, token, via: Via::Session }, session)),
        // Blocked or deleted: the write that did it also ended the session; this catches a
        // request that found the session just before.
        Err(DenyReason::OwnerBlocked) => Err(session_ended()),
        Err(reason) => Err(deny_error(shared, reason)),
    }
}

/// Maps an engine deny to the management API's error.
pub fn deny_error(shared: &Shared, reason: DenyReason) -> ApiError {
    let engine = shared.engine();
    let message = reason.message(&engine.resources);
    match reason.status() {
        401 => ApiError::Unauthenticated { reason: reason.code(), message },
        404 => ApiError::NotFound(message),
        _ => ApiError::Forbidden {
            reason: reason.code(),
            message,
            missing: reason.missing_permission().map(|p| engine.resources.permission_name(p)),
        },
    }
}

/// Authorizes a management call: the presented token must be allowed `permissions` at
/// `boundary` by the same engine that decides for the guarded APIs.
pub fn authorize(
    shared: &Shared,
    credentials: &Credentials,
    permissions: &[Permission],
    boundary: BoundaryRef<'_>,
    on_own_token: bool,
    read_only: bool,
) -> Result<Caller, ApiError> {
    authorize_with(shared, credentials, permissions, boundary, on_own_token, read_only, false)
}

/// [`authorize`], optionally ignoring the lifetime caps: a token blocked by a lowered cap
/// may still rotate itself, which is how it gets a compliant expiry.
pub fn authorize_with(
    shared: &Shared,
    credentials: &Credentials,
    permissions: &[Permission],
    boundary: BoundaryRef<'_>,
    on_own_token: bool,
    read_only: bool,
    ignore_lifetime_caps: bool,
) -> Result<Caller, ApiError> {
    let Some(presented) = presented_token(&credentials.headers, None) else {
        let operation = Operation::Covered { permissions, boundary };
        return by_session(shared, credentials, operation, read_only, on_own_token).map(|(caller, _)| caller);
    };
    attempt(shared, credentials)?;
    let now = shared.clock.now();
    let engine = shared.engine();
    let token = match patgate_core::authenticate(&engine.index, &engine.format, &engine.key, &presented) {
        Ok(token) => {
            authenticated(shared, credentials);
            token
        }
        Err(reason) => {
            // `deny_error` reads the engine again: release it first.
            drop(engine);
            return Err(deny_error(shared, reason));
        }
    };
    let request = Request {
        operation: Operation::Covered { permissions, boundary },
        read_only,
        surface: Surface::Api,
        on_own_token,
        client_ip: credentials.client_ip,
    };
    let relaxed;
    let policy = if ignore_lifetime_caps {
        relaxed = patgate_core::Policy {
            legacy_use_disabled_from: engine.policy.legacy_use_disabled_from,
            ..patgate_core::Policy::UNRESTRICTED
        };
        &relaxed
    } else {
        &engine.policy
    };
    let decision = decide_under(&engine.resources, &engine.index.directory, policy, token, &request, now);
    let owner = engine.index.directory.user(token.owner).map(|user| (user.username.to_string(), user.admin));
    let token = token.clone();
    drop(engine);
    match (decision.outcome, owner) {
        (Ok(basis), Some((username, admin))) => {
            // A management call is a use of the token too (inactivity, last used, and the
            // permission it needed).
            let used = if matches!(basis, Basis::FineGrained | Basis::Legacy) { permissions } else { &[] };
            shared.usage.record(token.id, token.owner, now, credentials.client_ip, used, decision.boundary);
            Ok(Caller { user: token.owner, username, admin, token, via: Via::Token })
        }
        (Err(reason), _) => Err(deny_error(shared, reason)),
        (Ok(_), None) => Err(ApiError::Internal("allowed token without owner".to_owned())),
    }
}

/// Authenticates without a permission check, for endpoints open to every valid token (or
/// session).
pub fn authenticate_only(shared: &Shared, credentials: &Credentials) -> Result<Caller, ApiError> {
    let Some(presented) = presented_token(&credentials.headers, None) else {
        return by_session(shared, credentials, Operation::Always, true, true).map(|(caller, _)| caller);
    };
    attempt(shared, credentials)?;
    let now = shared.clock.now();
    let engine = shared.engine();
    let request = Request {
        operation: Operation::Always,
        read_only: true,
        surface: Surface::Api,
        on_own_token: true,
        client_ip: credentials.client_ip,
    };
    let outcome = patgate_core::authenticate(&engine.index, &engine.format, &engine.key, &presented).map(|token| {
        authenticated(shared, credentials);
        let decision = decide_under(&engine.resources, &engine.index.directory, &engine.policy, token, &request, now);
        (decision, token.clone())
    });
    let owner = match &outcome {
        Ok((_, token)) => engine.index.directory.user(token.owner).map(|u| (u.username.to_string(), u.admin)),
        Err(_) => None,
    };
    drop(engine);
    match outcome {
        Err(reason) => Err(deny_error(shared, reason)),
        Ok((decision, token)) => match (decision.outcome, owner) {
            (Ok(_), Some((username, admin))) => {
                shared.usage.record(token.id, token.owner, now, credentials.client_ip, &[], None);
                Ok(Caller { user: token.owner, username, admin, token, via: Via::Token })
            }
            (Err(reason), _) => Err(deny_error(shared, reason)),
            (Ok(_), None) => Err(ApiError::Internal("allowed token without owner".to_owned())),
        },
    }
}

/// Failed authentication is rate-limited per client address (DESIGN §6): each token
/// presented to the management API takes one from its address's bucket (a `429` with
/// `Retry-After` when it is empty), and [`authenticated`] gives it back, so only failures
/// count. The decision endpoints are not limited: they answer for a proxy, whose client
/// address is not the caller's.
/// Requests whose address is unknown share one bucket ([`bucket_of`]).
fn attempt(shared: &Shared, credentials: &Credentials) -> Result<(), ApiError> {
    shared.auth_limiter.check(bucket_of(credentials.client_ip)).map_err(ApiError::RateLimited)
}

/// The presented token authenticated: its attempt does not count.
fn authenticated(shared: &Shared, credentials: &Credentials) {
    shared.auth_limiter.refund(bucket_of(credentials.client_ip));
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderName;

    use super::*;

    const READ: [&str; 8] = [
        "private-token",
        "authorization",
        "x-forwarded-for",
        "x-real-ip",
        "x-forwarded-method",
        "x-forwarded-uri",
        "x-original-method",
        "x-original-uri",
    ];

    fn field<'h>(presented: &Presented<'h>, name: &str) -> Option<&'h HeaderValue> {
        match name {
            "private-token" => presented.private_token,
            "authorization" => presented.authorization,
            "x-forwarded-for" => presented.forwarded_for,
            "x-real-ip" => presented.real_ip,
            "x-forwarded-method" => presented.forwarded_method,
            "x-forwarded-uri" => presented.forwarded_uri,
            "x-original-method" => presented.original_method,
            "x-original-uri" => presented.original_uri,
            other => panic!("not a read header: {other}"),
        }
    }

    #[test]
    fn one_pass_finds_what_header_map_get_finds() {
        // Random requests: the read names in any case, other names, repeated names, values
        // that are not text. Each field must be what `HeaderMap::get` answers for its name.
        let names =
            [&READ[..], &["host", "Private-Token", "X-FORWARDED-URI", "x-forwarded", "accept", "cookie"]].concat();
        let values: [&[u8]; 5] = [b"glpat-abc", b"GET", b"/api/v4/projects?x=1", b"10.0.0.1, 10.0.0.2", b"caf\xc3\xa9"];
        let mut state = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = |bound: usize| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            usize::try_from(state % bound as u64).unwrap()
        };
        let mut repeated = 0;
        for _ in 0..2_000 {
            let mut headers = HeaderMap::new();
            for _ in 0..next(12) {
                let name = HeaderName::from_bytes(names[next(names.len())].as_bytes()).unwrap();
                let value = HeaderValue::from_bytes(values[next(values.len())]).unwrap();
                repeated += usize::from(headers.contains_key(&name));
                headers.append(name, value);
            }
            let presented = Presented::read(&headers);
            for name in READ {
                assert_eq!(field(&presented, name), headers.get(name), "{name} in {headers:?}");
            }
        }
        assert!(repeated > 1_000, "the generator repeats names ({repeated} times)");
    }

    #[test]
    fn a_first_value_that_is_not_text_is_not_passed_over() {
        let mut headers = HeaderMap::new();
        headers.append("private-token", HeaderValue::from_bytes(b"caf\xc3\xa9").unwrap());
        headers.append("private-token", HeaderValue::from_static("glpat-second"));
        headers.insert("authorization", HeaderValue::from_static("Bearer glpat-bearer"));
        let presented = Presented::read(&headers);
        assert_eq!(text(presented.private_token), None);
        assert_eq!(presented.token(None).as_deref(), Some("glpat-bearer"));
    }

    #[test]
    fn the_debug_form_shows_no_secret() {
        let mut headers = HeaderMap::new();
        headers.insert("private-token", HeaderValue::from_static("glpat-secret"));
        headers.insert("authorization", HeaderValue::from_static("Bearer glpat-other"));
        headers.insert("x-forwarded-uri", HeaderValue::from_static("/api/v4/user?private_token=glpat-query"));
        let shown = format!("{:?}", Presented::read(&headers));
        assert!(!shown.contains("glpat"), "{shown}");
        assert!(shown.contains("private_token: true"), "{shown}");
    }
}
