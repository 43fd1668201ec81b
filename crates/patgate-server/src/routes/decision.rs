//! The decision API and forward auth: where the guarded APIs ask patgate.

use std::{fmt::Write as _, net::IpAddr, time::Instant};

use axum::{
    Json,
    extract::State,
    http::{HeaderName, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use patgate_core::{Basis, Boundary, Decision, DenyReason, catalog::DecodeBuffer, decision::Operation};
use serde::{Deserialize, Serialize};

use crate::{
    auth::{Presented, peer_address, text},
    error::ApiError,
    extract::Body,
    ratelimit::bucket_of,
    state::AppState,
};

/// `POST /api/v1/decide`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DecideRequest {
    pub token: String,
    pub method: String,
    /// The path as the client sent it, `/api/v4/…` with its query.
    pub path: String,
    pub client_ip: Option<String>,
}

impl std::fmt::Debug for DecideRequest {
    // The token is a secret, and the path may carry one in its query: neither is shown.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DecideRequest")
            .field("token", &"[redacted]")
            .field("method", &self.method)
            .field("path", &self.path.split_once('?').map_or(self.path.as_str(), |(path, _)| path))
            .field("client_ip", &self.client_ip)
            .finish()
    }
}

/// The boundary a decision concerned.
#[derive(Debug, Serialize)]
pub struct BoundaryResponse {
    pub kind: &'static str,
    pub id: Option<u64>,
    pub path: Option<String>,
}

/// The answer of `POST /api/v1/decide`.
#[derive(Debug, Serialize)]
pub struct DecideResponse {
    pub allowed: bool,
    pub status: u16,
    pub reason: &'static str,
    pub message: String,
    /// What allowed it: `fine_grained` (a grant), `legacy` (the scopes), `anonymous` (a
    /// public read outside every grant's reach: serve it as to an anonymous caller) or
    /// `always` (an endpoint open to every valid token).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub basis: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub missing: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub missing_label: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resource: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub action: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub boundary: Option<BoundaryResponse>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_id: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
}

/// A decision with what was asked, for both endpoints.
struct Judged<'c> {
    decision: Decision,
    permission: Option<patgate_core::Permission>,
    entry: Option<&'c patgate_core::catalog::Entry>,
    /// The owner's username, looked up under the same lock as the decision.
    user: Option<HeaderValue>,
}

fn judge<'c>(state: &'c AppState, token: &str, method: &str, path: &str, client_ip: Option<IpAddr>) -> Judged<'c> {
    let now = state.clock.now();
    let engine = state.engine();
    // The token's table entry is loaded while the request is routed.
    let presented = engine.present(token);
    let mut buffer = DecodeBuffer::default();
    let (mut request, entry) = state.catalog.request_and_entry(method, path, &mut buffer);
    request.client_ip = client_ip;
    let permissions = match request.operation {
        Operation::Covered { permissions, .. } => permissions,
        _ => &[],
    };
    let permission = permissions.first().copied();
    let decision = engine.decide_token(&presented, &request, now);
    let user = decision
        .user
        .and_then(|id| engine.index.directory.user(id))
        .and_then(|user| HeaderValue::from_str(&user.username).ok());
    drop(engine);
    // Allowed: note the use for the background flush (no database write here). Only a
    // grant or a scope uses permissions; a public read or an open endpoint uses none.
    if let (Ok(basis), Some(token), Some(owner)) = (decision.outcome, decision.token, decision.user) {
        let used = if matches!(basis, Basis::FineGrained | Basis::Legacy) { permissions } else { &[] };
        state.usage.record(token, owner, now, client_ip, used, decision.boundary);
    }
    Judged { decision, permission, entry, user }
}

fn basis_name(basis: Basis) -> &'static str {
    match basis {
        Basis::FineGrained => "fine_grained",
        Basis::Legacy => "legacy",
        Basis::Anonymous => "anonymous",
        Basis::Always => "always",
    }
}

fn allow_message(basis: Basis) -> &'static str {
    match basis {
        Basis::FineGrained => "Allowed: a grant of the token covers this request.",
        Basis::Legacy => "Allowed: the token's scopes cover this request.",
        Basis::Anonymous => "Allowed: anyone may read this public resource.",
        Basis::Always => "Allowed: this endpoint is open to every valid token.",
    }
}

/// A boundary with its path as the directory names it now.
pub(crate) fn boundary_response(directory: &patgate_core::Directory, boundary: Boundary) -> BoundaryResponse {
    match boundary {
        Boundary::Project(id) => BoundaryResponse {
            kind: "project",
            id: Some(id.0),
            path: directory.project(id).map(|p| p.full_path.to_string()),
        },
        Boundary::Group(id) => BoundaryResponse {
            kind: "group",
            id: Some(id.0),
            path: directory.group(id).map(|g| g.full_path.to_string()),
        },
        Boundary::User(id) => {
            BoundaryResponse { kind: "user", id: Some(id.0), path: directory.user(id).map(|u| u.username.to_string()) }
        }
        Boundary::Instance => BoundaryResponse { kind: "instance", id: None, path: None },
    }
}

fn response(state: &AppState, judged: &Judged) -> DecideResponse {
    let engine = state.engine();
    let decision = &judged.decision;
    let directory = &engine.index.directory;
    let boundary = decision.boundary.map(|boundary| boundary_response(directory, boundary));
    let missing = decision.reason().and_then(|reason| reason.missing_permission());
    let shown = missing.or(judged.permission);
    let (allowed, status, reason, message) = match decision.outcome {
        Ok(basis) => (true, 200, "allowed", allow_message(basis).to_owned()),
        Err(reason) => (false, reason.status(), reason.code(), reason.message(&engine.resources)),
    };
    DecideResponse {
        allowed,
        status,
        reason,
        message,
        basis: decision.outcome.ok().map(basis_name),
        missing: missing.map(|p| engine.resources.permission_name(p)),
        missing_label: missing.map(|p| engine.resources.permission_label(p)),
        resource: shown.map(|p| engine.resources.name(p.resource).to_owned()),
        action: shown.map(|p| p.action.name()),
        boundary,
        token_id: decision.token.map(|t| t.0),
        user: decision.user.and_then(|u| directory.user(u)).map(|u| u.username.to_string()),
        endpoint: judged.entry.map(|entry| format!("{} {}", entry.method.name(), entry.template)),
    }
}

/// `POST /api/v1/decide`: the decision with its explanation ("why was I denied?").
///
/// A token that fails to authenticate counts against its caller's address, as on the
/// management API (DESIGN §6: the answer says whether a string is a valid token, and whose),
/// unless the caller is a trusted proxy asking for its own clients, as forward auth's are.
pub async fn decide(
    State(state): State<AppState>,
    extensions: axum::http::Extensions,
    Body(body): Body<DecideRequest>,
) -> Result<Json<DecideResponse>, ApiError> {
    let client_ip = match body.client_ip.as_deref() {
        None | Some("") => None,
        Some(text) => {
            Some(text.parse().map_err(|_| ApiError::invalid(format!("`client_ip`: `{text}` is not an IP address")))?)
        }
    };
    if body.method.is_empty() || !body.path.starts_with('/') {
        return Err(ApiError::invalid("`method` must be an HTTP method and `path` must start with `/`"));
    }
    let peer = peer_address(&extensions).map(|peer| peer.ip());
    let limited = !peer.is_some_and(|peer| state.trusts_proxy(peer));
    if limited {
        state.auth_limiter.check(bucket_of(peer)).map_err(ApiError::RateLimited)?;
    }
    let started = Instant::now();
    let judged = judge(&state, &body.token, &body.method, &body.path, client_ip);
    state.metrics.record("decide", reason_code(&judged.decision), started.elapsed());
    if limited && !judged.decision.reason().is_some_and(is_credential_problem) {
        state.auth_limiter.refund(bucket_of(peer));
    }
    Ok(Json(response(&state, &judged)))
}

fn reason_code(decision: &Decision) -> &'static str {
    decision.reason().map_or("allowed", |reason| reason.code())
}

// Header names forward auth writes, made once: a name given as a string is parsed and
// validated on each use.
const X_PATGATE_USER: HeaderName = HeaderName::from_static("x-patgate-user");
const X_PATGATE_TOKEN_ID: HeaderName = HeaderName::from_static("x-patgate-token-id");
const X_PATGATE_MISSING_PERMISSION: HeaderName = HeaderName::from_static("x-patgate-missing-permission");

/// The path of forward auth; Envoy's `ext_authz` appends the original path to it.
pub const FORWARD_AUTH_PATH: &str = "/api/v1/forward-auth";

/// `/api/v1/forward-auth` (and, for Envoy, any method on `/api/v1/forward-auth/<original
/// path>`): nginx `auth_request`, Traefik ForwardAuth, Envoy ext_authz. 200 allows; 401 for
/// missing or invalid credentials; 403 for everything else (never 404 or 5xx, which proxies
/// turn into 500).
pub async fn forward_auth(State(state): State<AppState>, request: axum::extract::Request) -> Response {
    let started = Instant::now();
    // The request is taken whole and read in place: no part of it is copied.
    let Some(peer) = peer_address(request.extensions()) else {
        return refuse_request(&state, started, Unusable::UnknownPeer);
    };
    if !state.trusts_proxy(peer.ip()) {
        return refuse_request(&state, started, Unusable::UntrustedProxy);
    }
    let presented = Presented::read(request.headers());
    let (method, uri) = match forwarded_request(&presented, &request) {
        Ok(forwarded) => forwarded,
        Err(unusable) => return refuse_request(&state, started, unusable),
    };
    let client_ip = presented.client_address(&state, request.headers(), Some(peer.ip()));
    // The query is searched for a token only when no header carries one: the usual request
    // does not pay for a scan of its URI.
    let token = presented.token(None).or_else(|| presented.token(uri.split_once('?').map(|(_, query)| query)));
    let Some(token) = token else {
        return refuse_request(&state, started, Unusable::MissingToken);
    };
    let judged = judge(&state, &token, method, uri, client_ip);
    state.metrics.record("forward_auth", reason_code(&judged.decision), started.elapsed());
    match judged.decision.outcome {
        // Allowed only as anyone would be (a public read outside every grant's reach): the
        // upstream must serve it as to an anonymous caller, not with the owner's view, so
        // both identity headers are sent empty (a proxy that copies them then also replaces
        // any the client sent).
        Ok(Basis::Anonymous) => {
            let mut response = StatusCode::OK.into_response();
            response.headers_mut().insert(X_PATGATE_USER, HeaderValue::from_static(""));
            response.headers_mut().insert(X_PATGATE_TOKEN_ID, HeaderValue::from_static(""));
            response
        }
        Ok(_) => {
            let mut response = StatusCode::OK.into_response();
            if let Some(user) = judged.user {
                response.headers_mut().insert(X_PATGATE_USER, user);
            }
            if let Some(id) = judged.decision.token.and_then(|token| decimal_value(token.0)) {
                response.headers_mut().insert(X_PATGATE_TOKEN_ID, id);
            }
            response
        }
        Err(reason) => refuse(&state, reason),
    }
}

/// The request behind the proxy, as its method and URI (path and query).
///
/// Three sources may name it: the request itself when it came to
/// `/api/v1/forward-auth/<path>` (Envoy keeps the original method and appends the original
/// path), `X-Forwarded-Method` with `X-Forwarded-Uri` (Traefik, and the README's nginx
/// configuration), and `X-Original-Method` with `X-Original-URI` (the usual nginx
/// configuration). Both headers of a pair are taken together, never one of each. A proxy
/// passes the client's own headers on, so a client may add the pair its proxy does not set:
/// every source present must therefore name the same request, and a header given twice is
/// refused too. Otherwise a token allowed to read could pass a `DELETE` off as a `GET`.
pub fn forwarded_request<'r>(
    presented: &Presented<'r>,
    request: &'r axum::extract::Request,
) -> Result<(&'r str, &'r str), Unusable> {
    if presented.forwarded_repeated {
        return Err(Unusable::AmbiguousForwardedRequest);
    }
    let modern = (text(presented.forwarded_method), text(presented.forwarded_uri));
    let original = (text(presented.original_method), text(presented.original_uri));
    let chosen = match (behind_prefix(request.uri()), modern, original) {
        (Some(uri), ..) => (request.method().as_str(), uri),
        (None, (Some(method), Some(uri)), _) | (None, _, (Some(method), Some(uri))) => (method, uri),
        _ => return Err(Unusable::MissingForwardedRequest),
    };
    let agrees = |(method, uri): (Option<&str>, Option<&str>)| {
        method.is_none_or(|method| method == chosen.0) && uri.is_none_or(|uri| uri == chosen.1)
    };
    if agrees(modern) && agrees(original) { Ok(chosen) } else { Err(Unusable::AmbiguousForwardedRequest) }
}

/// The original path and query of an Envoy check request: what follows
/// `/api/v1/forward-auth` in the request's own URI, when that is a path.
fn behind_prefix(uri: &axum::http::Uri) -> Option<&str> {
    let rest = uri.path_and_query()?.as_str().strip_prefix(FORWARD_AUTH_PATH)?;
    rest.starts_with('/').then_some(rest)
}

/// Why forward auth could not ask for a decision at all.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unusable {
    UnknownPeer,
    UntrustedProxy,
    MissingForwardedRequest,
    AmbiguousForwardedRequest,
    MissingToken,
}

// The refusals are built out of line (`cold`, never inlined): an allowed request's code stays
// together, in fewer cache lines, without the JSON bodies' serialization between its parts.

/// The answer to a request forward auth cannot judge, recorded in the metrics.
#[cold]
#[inline(never)]
fn refuse_request(state: &AppState, started: Instant, unusable: Unusable) -> Response {
    let (reason, message) = match unusable {
        Unusable::UnknownPeer => ("untrusted_proxy", "the peer address is unknown"),
        Unusable::UntrustedProxy => {
            ("untrusted_proxy", "this address may not forward requests: add it to the trusted proxies")
        }
        Unusable::MissingForwardedRequest => (
            "missing_forwarded_request",
            "forward auth needs X-Forwarded-Method and X-Forwarded-Uri (or X-Original-Method and X-Original-URI)",
        ),
        Unusable::AmbiguousForwardedRequest => (
            "ambiguous_forwarded_request",
            "the request is named more than once and not the same way (X-Forwarded-*, X-Original-*, the path): \
             the proxy must set one pair and drop the client's",
        ),
        Unusable::MissingToken => ("missing_token", "No token: send PRIVATE-TOKEN or Authorization: Bearer."),
    };
    state.metrics.record("forward_auth", reason, started.elapsed());
    let message = |out: &mut String| out.push_str(message);
    match unusable {
        Unusable::MissingToken => unauthorized(reason, message),
        _ => forbidden(reason, message, None),
    }
}

/// A denied decision's answer: only what it carries, the message and the missing permission
/// (not the decision API's whole explanation, with its directory lookups).
#[cold]
#[inline(never)]
fn refuse(state: &AppState, reason: DenyReason) -> Response {
    let engine = state.engine();
    let resources = &engine.resources;
    let message = |out: &mut String| reason.write_message(resources, out);
    if reason.status() == 401 {
        return unauthorized(reason.code(), message);
    }
    forbidden(reason.code(), message, reason.missing_permission().map(|p| resources.permission_name(p)))
}

/// A number as a header value, formatted on the stack and copied once (`HeaderValue::from`
/// grows a `BytesMut` through the formatting machinery: about 570 instructions a response
/// under callgrind; this saves about 250). Digits are always a valid value; `None` cannot
/// happen.
fn decimal_value(number: u64) -> Option<HeaderValue> {
    let mut digits = [0_u8; 20];
    let mut start = digits.len();
    let mut rest = number;
    loop {
        start -= 1;
        digits[start] = b'0' + (rest % 10) as u8;
        rest /= 10;
        if rest == 0 {
            break;
        }
    }
    HeaderValue::from_bytes(&digits[start..]).ok()
}

// A refusal's body is written by hand into one buffer, the message in place: a denial is
// answered without the JSON serializer's machinery or an intermediate message string. The
// shapes (fixed for clients):
//   401 {"error":"invalid_token","reason":"<code>","message":"<sentence>"}
//   403 {"error":"<code>","message":"<sentence>","missing":"<permission>"|null}

/// Room for the longest refusal without growing the buffer.
const REFUSAL_CAPACITY: usize = 320;

/// Appends the text `write` appends to `body` as a JSON string: quoted, and escaped as
/// serde_json escapes (`\"`, `\\`, `\n`, `\r`, `\t`, `\b`, `\f`, other control characters as
/// `\u00XX`) when it needs escaping at all (patgate's own messages never do).
fn push_json_str(body: &mut String, write: impl FnOnce(&mut String)) {
    body.push('"');
    let start = body.len();
    write(body);
    if body.as_bytes()[start..].iter().any(|byte| matches!(byte, b'"' | b'\\' | 0..=0x1f)) {
        let raw = body.split_off(start);
        for character in raw.chars() {
            match character {
                '"' => body.push_str("\\\""),
                '\\' => body.push_str("\\\\"),
                '\n' => body.push_str("\\n"),
                '\r' => body.push_str("\\r"),
                '\t' => body.push_str("\\t"),
                '\u{8}' => body.push_str("\\b"),
                '\u{c}' => body.push_str("\\f"),
                control @ '\0'..='\u{1f}' => {
                    let _ = write!(body, "\\u{:04x}", u32::from(control));
                }
                other => body.push(other),
            }
        }
    }
    body.push('"');
}

fn json_response(status: StatusCode, body: String) -> Response {
    let mut response = Response::new(axum::body::Body::from(body));
    *response.status_mut() = status;
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

/// A refusal's body up to its message: `{"error":…` then each of `fields`, then `"message"`
/// (left open for the fields that follow it).
fn refusal_body(fields: &[(&str, &str)], message: impl FnOnce(&mut String)) -> String {
    let mut body = String::with_capacity(REFUSAL_CAPACITY);
    body.push('{');
    for (name, value) in fields {
        body.push('"');
        body.push_str(name);
        body.push_str("\":");
        push_json_str(&mut body, |out| out.push_str(value));
        body.push(',');
    }
    body.push_str("\"message\":");
    push_json_str(&mut body, message);
    body
}

fn unauthorized(reason: &'static str, message: impl FnOnce(&mut String)) -> Response {
    let mut body = refusal_body(&[("error", "invalid_token"), ("reason", reason)], message);
    body.push('}');
    let mut response = json_response(StatusCode::UNAUTHORIZED, body);
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer realm=\"patgate\", error=\"invalid_token\""),
    );
    response
}

fn forbidden(reason: &'static str, message: impl FnOnce(&mut String), missing: Option<String>) -> Response {
    let mut body = refusal_body(&[("error", reason)], message);
    // `missing` is always present in a 403's body, `null` when no single permission is.
    body.push_str(",\"missing\":");
    match missing.as_deref() {
        Some(missing) => push_json_str(&mut body, |out| out.push_str(missing)),
        None => body.push_str("null"),
    }
    body.push('}');
    let mut response = json_response(StatusCode::FORBIDDEN, body);
    if let Some(value) = missing.and_then(|m| HeaderValue::try_from(m).ok()) {
        response.headers_mut().insert(X_PATGATE_MISSING_PERMISSION, value);
    }
    response
}

/// Whether a deny reason is a credential problem (for callers that map statuses).
pub fn is_credential_problem(reason: DenyReason) -> bool {
    reason.status() == 401
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_json_string_is_written_as_serde_json_writes_it() {
        let mut samples: Vec<String> = [
            "",
            "The token has expired.",
            "quote \" and backslash \\",
            "line\nbreak\r\ttab",
            "\u{8}\u{c}\u{0}\u{1f}\u{7f}",
            "unicode é — 日本 🦀",
            "Merge Request: Update (`merge_request:update`)",
        ]
        .into_iter()
        .map(String::from)
        .collect();
        samples.extend((0..=255_u8).map(|byte| format!("a{}b", char::from(byte))));
        for sample in samples {
            let mut body = String::from("{\"x\":");
            push_json_str(&mut body, |out| out.push_str(&sample));
            let expected = format!("{{\"x\":{}", serde_json::to_string(&sample).unwrap());
            assert_eq!(body, expected, "{sample:?}");
        }
    }

    async fn body_of(response: Response) -> (StatusCode, axum::http::HeaderMap, serde_json::Value) {
        let (parts, body) = response.into_parts();
        let bytes = axum::body::to_bytes(body, usize::MAX).await.unwrap();
        (parts.status, parts.headers, serde_json::from_slice(&bytes).unwrap())
    }

    #[tokio::test]
    async fn refusals_have_their_fixed_shapes() {
        let message = |out: &mut String| out.push_str("Say \"no\"\\now.");
        let (status, headers, body) = body_of(unauthorized("missing_token", message)).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert_eq!(headers[header::CONTENT_TYPE], "application/json");
        assert_eq!(headers[header::WWW_AUTHENTICATE], "Bearer realm=\"patgate\", error=\"invalid_token\"");
        assert_eq!(
            body,
            serde_json::json!({"error": "invalid_token", "reason": "missing_token", "message": "Say \"no\"\\now."})
        );

        let (status, headers, body) = body_of(forbidden("role_too_low", message, Some("issue:read".to_owned()))).await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        assert_eq!(headers[header::CONTENT_TYPE], "application/json");
        assert_eq!(headers[X_PATGATE_MISSING_PERMISSION], "issue:read");
        assert_eq!(
            body,
            serde_json::json!({"error": "role_too_low", "message": "Say \"no\"\\now.", "missing": "issue:read"})
        );

        let (status, headers, body) = body_of(forbidden("outside_reach", message, None)).await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        assert!(!headers.contains_key(X_PATGATE_MISSING_PERMISSION));
        assert_eq!(body, serde_json::json!({"error": "outside_reach", "message": "Say \"no\"\\now.", "missing": null}));
    }

    #[test]
    fn a_decide_request_shows_no_token() {
        let request = DecideRequest {
            token: "pgfgt-secret".to_owned(),
            method: "GET".to_owned(),
            path: "/api/v4/user?private_token=pgpat-query".to_owned(),
            client_ip: None,
        };
        let shown = format!("{request:?}");
        assert!(!shown.contains("pgfgt") && !shown.contains("pgpat"), "{shown}");
        assert!(shown.contains("/api/v4/user"), "{shown}");
    }

    #[test]
    fn a_number_becomes_its_decimal_header_value() {
        for number in [0, 7, 10, 42, 1_000_000, 18_446_744_073_709_551_615, 10_000_000_000_000_000_000] {
            let value = decimal_value(number);
            assert_eq!(value.as_ref().map(HeaderValue::as_bytes), Some(number.to_string().as_bytes()), "{number}");
        }
    }
}
