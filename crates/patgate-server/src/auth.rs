//! Credentials on a request, and the capability a handler receives once the engine has
//! allowed the call.

use std::net::{IpAddr, SocketAddr};

use axum::{
    extract::{ConnectInfo, FromRequestParts},
    http::{HeaderMap, header, request::Parts},
};
use patgate_core::{
    Basis, BoundaryRef, DenyReason, Permission, Request, Surface, TokenRecord, UserId, decide_under,
    decision::Operation,
};

use crate::{
    error::ApiError,
    state::{AppState, Shared},
};

/// What a management request presents: its headers and the client's address (the peer,
/// or the first `X-Forwarded-For` entry when the peer is a trusted proxy).
#[derive(Debug, Clone)]
pub struct Credentials {
    pub headers: HeaderMap,
    pub client_ip: Option<IpAddr>,
}

/// The client's address: the first `X-Forwarded-For` (or `X-Real-IP`) entry when `peer` is
/// a trusted proxy, else the peer itself.
pub fn client_address(shared: &Shared, headers: &HeaderMap, peer: Option<IpAddr>) -> Option<IpAddr> {
    let forwarded = || {
        let header = |name: &str| headers.get(name).and_then(|value| value.to_str().ok());
        header("x-forwarded-for")
            .and_then(|list| list.split(',').next())
            .or_else(|| header("x-real-ip"))
            .and_then(|ip| ip.trim().parse().ok())
    };
    match peer {
        Some(peer) if shared.trusts_proxy(peer) => forwarded().or(Some(peer)),
        other => other,
    }
}

impl FromRequestParts<AppState> for Credentials {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let peer = parts.extensions.get::<ConnectInfo<SocketAddr>>().map(|info| info.0.ip());
        Ok(Credentials { client_ip: client_address(state, &parts.headers, peer), headers: parts.headers.clone() })
    }
}

/// Finds the token a request presents: `PRIVATE-TOKEN`, `Authorization: Bearer`, the
/// password of `Authorization: Basic`, or the `private_token` / `access_token` query
/// parameter (DESIGN §3.1).
pub fn presented_token<'h>(headers: &'h HeaderMap, query: Option<&'h str>) -> Option<std::borrow::Cow<'h, str>> {
    if let Some(value) = headers.get("private-token").and_then(|v| v.to_str().ok()) {
        return Some(value.trim().into());
    }
    if let Some(value) = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()) {
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

/// A caller the engine allowed: the token and its owner.
#[derive(Clone, Debug)]
pub struct Caller {
    pub user: UserId,
    pub username: String,
    pub admin: bool,
    pub token: TokenRecord,
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
    let presented = presented_token(&credentials.headers, None).ok_or_else(|| ApiError::Unauthenticated {
        reason: "missing_token",
        message: "No token: send it as `PRIVATE-TOKEN: <token>` or `Authorization: Bearer <token>`.".to_owned(),
    })?;
    let now = shared.clock.now();
    let engine = shared.engine();
    let token = match patgate_core::authenticate(&engine.index, &engine.format, &engine.key, &presented) {
        Ok(token) => token,
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
            Ok(Caller { user: token.owner, username, admin, token })
        }
        (Err(reason), _) => Err(deny_error(shared, reason)),
        (Ok(_), None) => Err(ApiError::Internal("allowed token without owner".to_owned())),
    }
}

/// Authenticates without a permission check, for endpoints open to every valid token.
pub fn authenticate_only(shared: &Shared, credentials: &Credentials) -> Result<Caller, ApiError> {
    let presented = presented_token(&credentials.headers, None).ok_or_else(|| ApiError::Unauthenticated {
        reason: "missing_token",
        message: "No token: send it as `PRIVATE-TOKEN: <token>` or `Authorization: Bearer <token>`.".to_owned(),
    })?;
    let now = shared.clock.now();
    let engine = shared.engine();
    let request = Request {
        operation: Operation::Always,
        read_only: true,
        surface: Surface::Api,
        on_own_token: true,
        client_ip: None,
    };
    let outcome = patgate_core::authenticate(&engine.index, &engine.format, &engine.key, &presented).map(|token| {
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
                Ok(Caller { user: token.owner, username, admin, token })
            }
            (Err(reason), _) => Err(deny_error(shared, reason)),
            (Ok(_), None) => Err(ApiError::Internal("allowed token without owner".to_owned())),
        },
    }
}
