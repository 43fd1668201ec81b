//! Leak reports, token lookup by value, the audit log and the webhook outbox.

use axum::{Json, extract::State, http::StatusCode};
use patgate_core::{BoundaryRef, Timestamp, TokenId, UserId, UserLocator};
use patgate_store::{Actor, Audit, AuditFilter, DeliveryFilter, Store};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::{
    auth::{Caller, Credentials, authorize},
    error::ApiError,
    extract::{Params, RawBody},
    ratelimit::bucket_of,
    routes::tokens::{TokenResponse, admin_permission, own_permission, token_response, uses_in_window},
    state::{AppState, Shared},
};

/// Token strings one leak report may carry.
pub const LEAK_REPORT_LIMIT: usize = 1000;

/// A string a client sends as a token (a leak report's, a lookup's), not yet known to be
/// one: it may be a live secret.
///
/// INVARIANT: `Debug` shows nothing of it; there is no `Display`.
#[derive(Clone, Deserialize)]
#[serde(transparent)]
pub struct TokenText(String);

impl TokenText {
    /// The text, to parse and look up. Never log it.
    pub fn expose_secret(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for TokenText {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenText([redacted])")
    }
}

/// One reported string: `{"token": "…", "type"?, "url"?, "source"?}` (what GitHub's secret
/// scanning sends) or the bare string.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum Reported {
    Bare(TokenText),
    Match {
        token: TokenText,
        #[serde(default)]
        url: Option<String>,
        #[serde(default)]
        source: Option<String>,
    },
}

/// `POST /api/v1/credentials/revoke`: a JSON array of reported tokens, or
/// `{"tokens": [...]}`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum LeakReport {
    List(Vec<Reported>),
    Object { tokens: Vec<Reported> },
}

/// The answer to a leak report: how many strings were received, never which were valid.
#[derive(Debug, Serialize)]
pub struct LeakReceipt {
    pub received: usize,
    pub message: &'static str,
}

/// `POST /api/v1/credentials/revoke`: revokes every valid token among the reported strings
/// (reason `leaked`). Needs no authentication; rate-limited per client address. A malformed
/// string (bad prefix or checksum) is dropped without any lookup; a well-formed one is
/// looked up in memory; the database is written only for tokens actually revoked.
pub async fn report_leak(
    State(state): State<AppState>,
    headers: Credentials,
    body: RawBody,
) -> Result<(StatusCode, Json<LeakReceipt>), ApiError> {
    state.leak_limiter.check(bucket_of(headers.client_ip)).map_err(ApiError::RateLimited)?;
    let report: LeakReport = body.json().map_err(|_| {
        ApiError::invalid(
            "the body must be a JSON array of tokens (strings or {\"token\": …} objects) or {\"tokens\": […]}",
        )
    })?;
    let reported = match report {
        LeakReport::List(list) | LeakReport::Object { tokens: list } => list,
    };
    if reported.len() > LEAK_REPORT_LIMIT {
        return Err(ApiError::invalid(format!("a report may carry at most {LEAK_REPORT_LIMIT} tokens")));
    }
    let received = reported.len();
    let now = state.clock.now();
    let mut found: Vec<(TokenId, Option<String>)> = Vec::new();
    {
        let engine = state.engine();
        for item in &reported {
            let (text, location) = match item {
                Reported::Bare(text) => (text.expose_secret(), None),
                Reported::Match { token, url, source } => {
                    (token.expose_secret(), url.clone().or_else(|| source.clone()))
                }
            };
            // Parsing (prefix + CRC32) is offline; only a well-formed string is digested and
            // looked up, and only in memory.
            if let Ok(token) = patgate_core::authenticate(&engine.index, &engine.format, &engine.key, text.trim())
                && !token.is_revoked(now)
                && !found.iter().any(|(id, _)| *id == token.id)
            {
                found.push((token.id, location));
            }
        }
    }
    tracing::info!(received, revoking = found.len(), "leak report");
    for (id, location) in &found {
        let audit = Audit::new("leak_reported", Actor::default(), now).details(json!({
            "source": "leak_report",
            "location": location,
            "reporter_ip": headers.client_ip.map(|ip| ip.to_string()),
        }));
        state.store.revoke_tokens(&[*id], "leaked", audit).await?;
    }
    if !found.is_empty() {
        state.catch_up_after_write().await;
        tracing::warn!(revoked = found.len(), "leak report: tokens revoked");
    }
    Ok((
        StatusCode::ACCEPTED,
        Json(LeakReceipt { received, message: "Thank you: every valid token among these is now revoked." }),
    ))
}

/// `POST /api/v1/admin/token_lookup`: `{"token": "…"}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LookupRequest {
    pub token: TokenText,
}

/// `POST /api/v1/admin/token_lookup`: which token a string is, without revoking it.
pub async fn token_lookup(
    State(state): State<AppState>,
    headers: Credentials,
    body: RawBody,
) -> Result<Json<TokenResponse>, ApiError> {
    let permission = admin_permission(&state, "admin_user:read")?;
    let caller = authorize(&state, &headers, &permission, BoundaryRef::Instance, false, true)?;
    let request: LookupRequest = body.json()?;
    let id = {
        let engine = state.engine();
        patgate_core::authenticate(&engine.index, &engine.format, &engine.key, request.token.expose_secret().trim())
            .map(|token| token.id)
            .map_err(|reason| match reason {
                patgate_core::DenyReason::Malformed(error) => {
                    ApiError::invalid(format!("`token`: not a patgate token: {error}"))
                }
                _ => ApiError::NotFound("no token of this instance has this value".to_owned()),
            })?
    };
    let row = state.store.token(id).await?.ok_or_else(|| ApiError::NotFound(format!("token {id} does not exist")))?;
    let now = state.clock.now();
    let audit = Audit::new("token_looked_up", caller.actor(), now).user(row.owner).token(row.id);
    state.store.record_audit(&[audit]).await?;
    let uses = uses_in_window(&state, row.id, now).await?;
    Ok(Json(token_response(&state, &row, None, now, &uses)))
}

/// `GET /api/v1/audit_events` query.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    /// A username (administrators; others see only their own events).
    pub user: Option<String>,
    pub token_id: Option<u64>,
    #[serde(rename = "type")]
    pub event: Option<String>,
    /// `YYYY-MM-DD` or Unix seconds.
    pub after: Option<String>,
    pub before: Option<String>,
    /// Events older than this id (the `next_before_id` of the previous page).
    pub before_id: Option<i64>,
    pub limit: Option<u32>,
}

/// One page of audit events, newest first.
#[derive(Debug, Serialize)]
pub struct AuditPage {
    pub events: Vec<Value>,
    /// Pass as `before_id` for the next page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_before_id: Option<i64>,
}

pub(crate) fn instant(field: &str, text: &str) -> Result<Timestamp, ApiError> {
    Timestamp::parse_date(text)
        .or_else(|| text.parse::<i64>().ok().map(Timestamp))
        .ok_or_else(|| ApiError::invalid(format!("`{field}`: `{text}` is not a date (YYYY-MM-DD) or Unix seconds")))
}

/// `GET /api/v1/audit_events`: administrators see every event (filter by user, token, type
/// and time); other users see the events about themselves and their tokens.
pub async fn audit_events(
    State(state): State<AppState>,
    headers: Credentials,
    Params(query): Params<AuditQuery>,
) -> Result<Json<AuditPage>, ApiError> {
    let caller = audit_reader(&state, &headers)?;
    let limit = query.limit.unwrap_or(100);
    if limit == 0 || limit > 1000 {
        return Err(ApiError::invalid("`limit` must be 1 to 1000"));
    }
    let user = match (&query.user, caller.admin) {
        (Some(name), true) => Some(state.user_id(name)?),
        (None, true) => None,
        (Some(name), false) if *name != caller.username => {
            return Err(ApiError::Forbidden {
                reason: "admin_only",
                message: "Only administrators may read other users' audit events.".into(),
                missing: None,
            });
        }
        (_, false) => Some(caller.user),
    };
    let filter = AuditFilter {
        user,
        token: query.token_id.map(TokenId),
        event: query.event.clone(),
        after: query.after.as_deref().map(|text| instant("after", text)).transpose()?,
        before: query.before.as_deref().map(|text| instant("before", text)).transpose()?,
        before_id: query.before_id,
        limit: limit + 1,
    };
    let mut events = state.store.audit_events(&filter).await?;
    let next_before_id = (events.len() > limit as usize).then(|| {
        events.truncate(limit as usize);
        events.last().map(|event| event.id)
    });
    let engine = state.engine();
    let name = |id: Option<UserId>| id.and_then(|id| engine.index.directory.user(id)).map(|u| u.username.to_string());
    let events = events
        .iter()
        .map(|event| {
            json!({
                "id": event.id,
                "at": event.at.to_string(),
                "type": event.event,
                "user": name(event.user),
                "user_id": event.user.map(|u| u.0),
                "token_id": event.token.map(|t| t.0),
                "actor": name(event.actor_user),
                "actor_token_id": event.actor_token.map(|t| t.0),
                "details": event.details,
            })
        })
        .collect();
    Ok(Json(AuditPage { events, next_before_id: next_before_id.flatten() }))
}

/// An administrator (`audit_event:read`), or any user for their own events.
fn audit_reader(state: &Shared, headers: &Credentials) -> Result<Caller, ApiError> {
    let admin = admin_permission(state, "audit_event:read")?;
    match authorize(state, headers, &admin, BoundaryRef::Instance, false, true) {
        Ok(caller) => Ok(caller),
        Err(ApiError::Forbidden { .. } | ApiError::NotFound(_)) => {
            let own = own_permission(state, "read")?;
            let caller = authorize(state, headers, &own, BoundaryRef::User(UserLocator::Caller), false, true)?;
            Ok(Caller { admin: false, ..caller })
        }
        Err(other) => Err(other),
    }
}

/// `GET /api/v1/admin/webhook_deliveries` query.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeliveryQuery {
    /// Only deliveries not delivered yet.
    #[serde(default)]
    pub pending: bool,
    pub before_id: Option<i64>,
    pub limit: Option<u32>,
}

/// `GET /api/v1/admin/webhook_deliveries`: the outbox, newest first.
pub async fn webhook_deliveries(
    State(state): State<AppState>,
    headers: Credentials,
    Params(query): Params<DeliveryQuery>,
) -> Result<Json<Vec<Value>>, ApiError> {
    let permission = admin_permission(&state, "admin_setting:read")?;
    authorize(&state, &headers, &permission, BoundaryRef::Instance, false, true)?;
    let limit = query.limit.unwrap_or(100);
    if limit == 0 || limit > 1000 {
        return Err(ApiError::invalid("`limit` must be 1 to 1000"));
    }
    let deliveries =
        state.store.deliveries(&DeliveryFilter { pending: query.pending, before_id: query.before_id, limit }).await?;
    Ok(Json(
        deliveries
            .iter()
            .map(|delivery| {
                json!({
                    "id": delivery.id,
                    "audit_event_id": delivery.audit_event_id,
                    "url": delivery.url,
                    "event": delivery.event,
                    "created_at": delivery.created_at.to_string(),
                    "attempts": delivery.attempts,
                    "next_attempt_at": delivery.next_attempt_at.to_string(),
                    "delivered_at": delivery.delivered_at.map(|at| at.to_string()),
                    "last_status": delivery.last_status,
                    "last_error": delivery.last_error,
                    "payload": serde_json::from_str::<Value>(&delivery.payload).unwrap_or(Value::Null),
                })
            })
            .collect(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A well-formed token, as a scanner would report it.
    const SECRET: &str = "pgfgt-Qm9vb0JhckJhekh1bjEyMzQ1Njc4OTBhYmNk0Xyz";

    #[track_caller]
    fn assert_hidden(shown: &str) {
        assert!(!shown.contains(SECRET) && !shown.contains("Qm9vb0Jh"), "the token is shown: {shown}");
        assert!(shown.contains("[redacted]"), "{shown}");
    }

    #[test]
    fn a_reported_string_is_not_shown_by_debug() {
        let bare: Reported = serde_json::from_value(json!(SECRET)).unwrap();
        assert!(matches!(bare, Reported::Bare(_)));
        assert_hidden(&format!("{bare:?}"));
        let found: Reported =
            serde_json::from_value(json!({ "token": SECRET, "url": "https://example.com/x" })).unwrap();
        assert!(matches!(found, Reported::Match { .. }));
        let shown = format!("{found:?}");
        assert_hidden(&shown);
        assert!(shown.contains("https://example.com/x"), "{shown}");
    }

    #[test]
    fn a_leak_report_is_not_shown_by_debug() {
        for body in [json!([SECRET, { "token": SECRET }]), json!({ "tokens": [SECRET, { "token": SECRET }] })] {
            let report: LeakReport = serde_json::from_value(body).unwrap();
            assert_hidden(&format!("{report:?}"));
            assert_hidden(&format!("{report:#?}"));
        }
    }

    #[test]
    fn a_lookup_request_is_not_shown_by_debug() {
        let request: LookupRequest = serde_json::from_value(json!({ "token": SECRET })).unwrap();
        assert_eq!(request.token.expose_secret(), SECRET);
        assert_hidden(&format!("{request:?}"));
        assert_hidden(&format!("{request:#?}"));
    }
}
