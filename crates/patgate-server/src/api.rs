//! The route table: the router and the OpenAPI document are both built from it, so the
//! document cannot drift from what is served.

use axum::routing::{MethodRouter, any, delete, get, post, put};
use serde_json::{Value, json};

use crate::{
    routes::{admin, catalogue, decision, health, lifecycle, session, suggestion, tokens},
    state::AppState,
};

/// Who may call a route.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// No credentials.
    Open,
    /// The token in the request (any valid token allowed the route's permission), or a
    /// web session (its cookie, and `X-CSRF-Token` unless the method is GET).
    Token,
    /// A web session only.
    Session,
    /// An administrator's token or session.
    Admin,
}

/// One route of the service.
#[derive(Debug)]
pub struct Route {
    /// The HTTP method, or `ANY` for a route that answers every method and reads no body
    /// (forward auth: Envoy keeps the original request's method).
    pub method: &'static str,
    pub path: &'static str,
    pub summary: &'static str,
    pub access: Access,
    /// The request body's schema name in `components.schemas`.
    pub request: Option<&'static str>,
    /// The success status and its body's schema name.
    pub response: (u16, Option<&'static str>),
    pub handler: fn() -> MethodRouter<AppState>,
}

macro_rules! route {
    ($method:literal $path:literal, $summary:literal, $access:ident, $request:expr, $status:literal $response:expr, $handler:expr) => {
        Route {
            method: $method,
            path: $path,
            summary: $summary,
            access: Access::$access,
            request: $request,
            response: ($status, $response),
            handler: || $handler,
        }
    };
}

/// Every route, in the order the OpenAPI document lists them.
pub const ROUTES: &[Route] = &[
    route!("GET" "/healthz", "Liveness: the process answers.", Open, None, 200 None, get(health::healthz)),
    route!("GET" "/readyz", "Readiness: the database answers.", Open, None, 200 None, get(health::readyz)),
    route!("GET" "/metrics", "Prometheus metrics: decisions by result and reason, latency.", Open, None, 200 None, get(health::metrics)),
    route!("GET" "/api/v1/openapi.json", "This document.", Open, None, 200 None, get(openapi)),
    route!("POST" "/api/v1/decide", "Decide a request and explain the answer (\"why was I denied?\").", Open, Some("DecideRequest"), 200 Some("DecideResponse"), post(decision::decide)),
    route!("ANY" "/api/v1/forward-auth", "Forward auth for nginx auth_request and Traefik ForwardAuth (the request in X-Forwarded-Method and X-Forwarded-Uri, or X-Original-Method and X-Original-URI, from a trusted proxy): 200 allows (X-Patgate-User, X-Patgate-Token-Id; both empty for a public read the token's grants do not reach, to be served as to an anonymous caller), 401 for missing or invalid credentials (WWW-Authenticate), 403 otherwise (X-Patgate-Missing-Permission).", Open, None, 200 None, any(decision::forward_auth)),
    route!("ANY" "/api/v1/forward-auth/{*path}", "Forward auth for Envoy ext_authz (http_service, path_prefix /api/v1/forward-auth): the check request's own method and the path after the prefix are the request judged, with the answers of /api/v1/forward-auth.", Open, None, 200 None, any(decision::forward_auth)),
    route!("GET" "/api/v1/resources", "The permission catalogue: every resource at every boundary where it exists, its actions and the role each needs.", Token, None, 200 Some("ResourceList"), get(catalogue::resources)),
    route!("GET" "/api/v1/user/namespaces", "The projects and groups you can see, with your role in each (?search=, kind=project|group, limit=).", Token, None, 200 Some("NamespaceList"), get(catalogue::namespaces)),
    route!("POST" "/api/v1/session", "Sign in to the web UI with {\"username\", \"password\"} (JSON), or with no body as the user a trusted proxy names in the configured header. Sets the session cookie and answers the CSRF token. Failures are one 401 invalid_credentials, rate-limited per client address.", Open, Some("SignInRequest"), 200 Some("Session"), post(session::sign_in)),
    route!("GET" "/api/v1/session", "Who is signed in, and the session's CSRF token.", Session, None, 200 Some("Session"), get(session::show)),
    route!("DELETE" "/api/v1/session", "Sign out: the session ends and the cookie is cleared (needs X-CSRF-Token).", Session, None, 204 None, delete(session::sign_out)),
    route!("PUT" "/api/v1/user/password", "Change your password (the current one is required; a token needs user:update on its user). Every session of yours ends; a signed-in caller gets a new session cookie.", Token, Some("PasswordChange"), 204 None, put(session::change_own)),
    route!("POST" "/api/v1/user/personal_access_tokens", "Create a token for yourself (legacy: scopes; fine-grained: grants). The token is shown once.", Token, Some("CreateTokenRequest"), 201 Some("Token"), post(tokens::create_own)),
    route!("POST" "/api/v1/users/{username}/personal_access_tokens", "Create a token for a user (administrators).", Admin, Some("CreateTokenRequest"), 201 Some("Token"), post(tokens::create_for_user)),
    route!("GET" "/api/v1/personal_access_tokens", "The tokens table: your tokens with their flags; administrators may add ?user=NAME (or * for all). Filters: state, kind, flag, expires_before/after, used_before/after, search; sort; page, per_page (X-Total, X-Next-Page headers).", Token, None, 200 Some("TokenList"), get(tokens::list)),
    route!("GET" "/api/v1/admin/credentials", "The credentials inventory: every user's tokens with their flags, same filters as the tokens table (administrators).", Admin, None, 200 Some("TokenList"), get(tokens::inventory)),
    route!("GET" "/api/v1/personal_access_tokens/self", "The token you are using.", Token, None, 200 Some("Token"), get(tokens::show_self)),
    route!("POST" "/api/v1/personal_access_tokens/self/rotate", "Rotate the token you are using: a new secret, the old one revoked.", Token, None, 200 Some("Token"), post(tokens::rotate_self)),
    route!("GET" "/api/v1/personal_access_tokens/{id}", "Show a token.", Token, None, 200 Some("Token"), get(tokens::show)),
    route!("DELETE" "/api/v1/personal_access_tokens/{id}", "Revoke a token.", Token, None, 204 None, delete(tokens::revoke)),
    route!("GET" "/api/v1/personal_access_tokens/{id}/suggestion", "Least privilege: what the token used within the usage window and the narrowest grants that allow all of it.", Token, None, 200 Some("Suggestion"), get(suggestion::show)),
    route!("POST" "/api/v1/personal_access_tokens/{id}/narrow", "Replace the token with its suggestion: a rotation into the narrower grants (the new secret is shown once).", Token, None, 200 Some("Token"), post(suggestion::narrow)),
    route!("POST" "/api/v1/personal_access_tokens/{id}/rotate", "Rotate a token: a new secret with the same name and grants, the old one revoked (409 for a revoked or expired token; a legacy token only while the legacy policy allows creating one).", Token, None, 200 Some("Token"), post(tokens::rotate)),
    route!("POST" "/api/v1/credentials/revoke", "Leak report (secret scanners): revoke every valid token among up to 1,000 strings (reason leaked). No authentication; rate-limited per client address; never says which strings were valid.", Open, Some("LeakReport"), 202 Some("LeakReceipt"), post(lifecycle::report_leak)),
    route!("GET" "/api/v1/audit_events", "The audit log, newest first: administrators see every event (?user=, token_id=, type=, after=, before=, before_id=, limit=); others their own.", Token, None, 200 Some("AuditPage"), get(lifecycle::audit_events)),
    route!("POST" "/api/v1/admin/token_lookup", "Which token a string is (administrators), without revoking it.", Admin, Some("TokenLookup"), 200 Some("Token"), post(lifecycle::token_lookup)),
    route!("GET" "/api/v1/admin/webhook_deliveries", "The webhook outbox: deliveries with attempts, status and last error (?pending=true, before_id=, limit=).", Admin, None, 200 None, get(lifecycle::webhook_deliveries)),
    route!("POST" "/api/v1/admin/directory/import", "Import users, groups, projects and memberships: idempotent, all or nothing.", Admin, Some("ImportRequest"), 200 Some("ImportResponse"), post(admin::import)),
    route!("POST" "/api/v1/admin/users", "Create a user.", Admin, Some("User"), 201 None, post(admin::create_user)),
    route!("DELETE" "/api/v1/admin/users/{username}", "Delete a user: their tokens stop working.", Admin, None, 204 None, delete(admin::delete_user)),
    route!("POST" "/api/v1/admin/users/{username}/block", "Block a user: their tokens are denied (owner_blocked).", Admin, None, 204 None, post(admin::block_user)),
    route!("PUT" "/api/v1/admin/users/{username}/password", "Set a user's password: they may sign in with it; their sessions end. Through a token, only for a user whose web session (their full live rights) is within the token's own permissions (403 escalation otherwise).", Admin, Some("PasswordSet"), 204 None, put(admin::set_password)),
    route!("POST" "/api/v1/admin/users/{username}/unblock", "Unblock a user.", Admin, None, 204 None, post(admin::unblock_user)),
    route!("POST" "/api/v1/admin/groups", "Create a group (its parent is the path's prefix).", Admin, Some("PathItem"), 201 None, post(admin::create_group)),
    route!("POST" "/api/v1/admin/projects", "Create a project in a group or a user's namespace.", Admin, Some("PathItem"), 201 None, post(admin::create_project)),
    route!("PUT" "/api/v1/admin/projects/{id}", "Move a project to another namespace and/or change its visibility.", Admin, Some("ProjectUpdate"), 200 None, put(admin::update_project)),
    route!("PUT" "/api/v1/admin/memberships", "Add a membership or change its role.", Admin, Some("Membership"), 204 None, put(admin::set_membership)),
    route!("DELETE" "/api/v1/admin/memberships", "Remove a membership.", Admin, Some("Membership"), 204 None, delete(admin::remove_membership)),
    route!("GET" "/api/v1/admin/settings", "Instance settings.", Admin, None, 200 Some("Settings"), get(admin::get_settings)),
    route!("PUT" "/api/v1/admin/settings", "Change instance settings (any subset of the fields).", Admin, Some("Settings"), 200 Some("Settings"), put(admin::put_settings)),
];

async fn openapi() -> axum::Json<Value> {
    axum::Json(document())
}

fn string() -> Value {
    json!({ "type": "string" })
}

fn strings() -> Value {
    json!({ "type": "array", "items": { "type": "string" } })
}

/// The web sign-in's schemas (apart: one `json!` of every schema exceeds the macro's
/// recursion limit).
fn session_schemas() -> Value {
    json!({
        "SignInRequest": { "type": "object", "required": ["username", "password"], "properties": {
            "username": string(), "password": { "type": "string", "format": "password" } } },
        "Session": { "type": "object", "required": ["username", "admin", "csrf_token", "highest_roles"], "properties": {
            "username": string(), "admin": { "type": "boolean" },
            "csrf_token": { "type": "string", "description": "send it as X-CSRF-Token (or a form's csrf field) on every request of this session that is not GET or HEAD" },
            "highest_roles": { "type": "object", "description": "the highest role the user holds through memberships on any project (group roles count on their projects; personal projects aside) and on any group; null for none",
                "properties": { "project": { "type": ["string", "null"] }, "group": { "type": ["string", "null"] } } } } },
        "PasswordChange": { "type": "object", "required": ["current_password", "password"], "properties": {
            "current_password": { "type": "string", "format": "password" },
            "password": { "type": "string", "format": "password", "minLength": 12, "description": "12 characters or more, 256 bytes at most" } } },
        "PasswordSet": { "type": "object", "required": ["password"], "properties": {
            "password": { "type": "string", "format": "password", "minLength": 12, "description": "12 characters or more, 256 bytes at most" } } }
    })
}

fn schemas() -> Value {
    let grant = json!({
        "type": "object", "required": ["reach", "permissions"],
        "properties": {
            "reach": { "type": "string", "enum": ["personal_projects", "all_memberships", "selected", "user", "instance"] },
            "projects": strings(), "groups": strings(),
            "permissions": { "type": "object", "additionalProperties": { "type": "array", "items": { "type": "string", "enum": ["create", "read", "update", "delete"] } },
                             "example": { "issue": ["read", "create"] } }
        }
    });
    let mut all = json!({
        "Error": { "type": "object", "required": ["error", "message"], "properties": {
            "error": string(), "message": string(), "reason": string(), "missing": string() } },
        "DecideRequest": { "type": "object", "required": ["token", "method", "path"], "properties": {
            "token": string(), "method": { "type": "string", "example": "PUT" },
            "path": { "type": "string", "example": "/api/v4/projects/acme%2Fapi/merge_requests/7" },
            "client_ip": string() } },
        "DecideResponse": { "type": "object", "required": ["allowed", "status", "reason", "message"], "properties": {
            "allowed": { "type": "boolean" }, "status": { "type": "integer", "enum": [200, 401, 403, 404] },
            "reason": string(), "message": string(),
            "basis": { "type": "string", "enum": ["fine_grained", "legacy", "anonymous", "always"],
                       "description": "what allowed it (allowed decisions only); anonymous: serve the request as to an anonymous caller" },
            "missing": { "type": "string", "example": "merge_request:update" },
            "missing_label": { "type": "string", "example": "Merge Request: Update" },
            "resource": string(), "action": string(),
            "boundary": { "type": "object", "properties": { "kind": string(), "id": { "type": "integer" }, "path": string() } },
            "token_id": { "type": "integer" }, "user": string(), "endpoint": string() } },
        "Grant": grant,
        "CreateTokenRequest": { "type": "object", "required": ["name"], "properties": {
            "name": string(), "description": string(), "expires_at": { "type": "string", "format": "date" },
            "scopes": strings(), "grants": { "type": "array", "items": { "$ref": "#/components/schemas/Grant" } },
            "allowed_ips": strings() } },
        "Token": { "type": "object", "required": ["id", "name", "kind", "created_at", "state"], "properties": {
            "id": { "type": "integer" }, "name": string(), "description": string(),
            "kind": { "type": "string", "enum": ["legacy", "fine_grained"] },
            "token": { "type": "string", "description": "the secret, only in the response that creates or rotates it" },
            "display_prefix": string(), "user": string(), "scopes": strings(),
            "grants": { "type": "array", "items": { "$ref": "#/components/schemas/Grant" } },
            "allowed_ips": strings(), "created_at": string(), "expires_at": string(), "revoked_at": string(),
            "revoke_reason": string(), "state": { "type": "string", "enum": ["active", "expired", "revoked", "blocked"] },
            "blocked_reason": { "type": "string", "enum": ["owner_blocked", "lifetime_policy", "legacy_disabled"] },
            "flags": { "type": "array", "items": { "type": "string", "enum": ["broad_legacy_scope", "write_everywhere",
                "unused_permissions", "never_used", "expiring_soon", "exceeds_policy"] } },
            "unused_permissions": strings(), "last_ips": strings(),
            "last_used_at": string(), "family_id": { "type": "integer" }, "previous_id": { "type": "integer" } } },
        "Suggestion": { "type": "object", "properties": {
            "token_id": { "type": "integer" }, "kind": string(), "window_days": { "type": "integer" }, "since": string(),
            "observed": { "type": "array", "items": { "type": "object", "properties": {
                "permission": string(), "boundary": { "type": "object" }, "uses": { "type": "integer" },
                "first_used_at": string(), "last_used_at": string() } } },
            "grants": { "type": "array", "items": { "$ref": "#/components/schemas/Grant" } },
            "removed": { "type": "object", "properties": { "permissions": strings(), "reaches": strings(), "scopes": strings() } },
            "left_out": { "type": "array", "items": { "type": "object", "properties": {
                "permission": string(), "boundary": { "type": "object" },
                "reason": { "type": "string", "enum": ["not_applicable", "gone", "not_grantable", "beyond_original"] } } } },
            "narrower": { "type": "boolean" }, "message": string() } },
        "ResourceList": { "type": "array", "items": { "type": "object", "properties": {
            "name": string(), "label": string(), "boundary": { "type": "string", "enum": ["project", "group", "user", "instance"] },
            "actions": { "type": "array", "items": { "type": "object", "properties": { "action": string(), "requires": string() } } } } } },
        "NamespaceList": { "type": "array", "items": { "type": "object", "properties": {
            "kind": { "type": "string", "enum": ["project", "group"] }, "path": string(), "visibility": string(), "role": string() } } },
        "TokenList": { "type": "array", "items": { "$ref": "#/components/schemas/Token" } },
        "User": { "type": "object", "required": ["username"], "properties": {
            "username": string(), "name": string(), "admin": { "type": "boolean" },
            "state": { "type": "string", "enum": ["active", "blocked", "deleted"] } } },
        "PathItem": { "type": "object", "required": ["full_path"], "properties": {
            "full_path": string(), "visibility": { "type": "string", "enum": ["private", "internal", "public"] } } },
        "Membership": { "type": "object", "required": ["username", "target"], "properties": {
            "username": string(), "target": string(),
            "role": { "type": "string", "enum": ["guest", "planner", "reporter", "developer", "maintainer", "owner"] } } },
        "ImportRequest": { "type": "object", "properties": {
            "users": { "type": "array", "items": { "$ref": "#/components/schemas/User" } },
            "groups": { "type": "array", "items": { "$ref": "#/components/schemas/PathItem" } },
            "projects": { "type": "array", "items": { "$ref": "#/components/schemas/PathItem" } },
            "memberships": { "type": "array", "items": { "$ref": "#/components/schemas/Membership" } } } },
        "ImportResponse": { "type": "object", "properties": {
            "users": { "type": "integer" }, "groups": { "type": "integer" }, "projects": { "type": "integer" }, "memberships": { "type": "integer" } } },
        "ProjectUpdate": { "type": "object", "properties": { "namespace": string(), "visibility": string() } },
        "Settings": { "type": "object", "properties": {
            "max_lifetime_days": { "type": "integer", "minimum": 1, "maximum": 400 }, "expiry_required": { "type": "boolean" },
            "legacy_tokens_allowed": { "type": "boolean" }, "token_prefix": string(),
            "legacy_creation_disabled_from": { "type": ["string", "null"], "format": "date" },
            "legacy_use_disabled_from": { "type": ["string", "null"], "format": "date" },
            "group_max_lifetime_days": { "type": "object", "additionalProperties": { "type": "integer", "minimum": 1 } },
            "rotation_grace_seconds": { "type": "integer", "minimum": 0, "maximum": 86400 },
            "inactivity_days": { "type": "integer", "minimum": 0 },
            "usage_window_days": { "type": "integer", "minimum": 1, "maximum": 365 } } },
        "LeakReport": { "oneOf": [
            { "type": "array", "maxItems": 1000, "items": { "oneOf": [string(), { "type": "object", "required": ["token"],
                "properties": { "token": string(), "type": string(), "url": string(), "source": string() } }] } },
            { "type": "object", "required": ["tokens"], "properties": { "tokens": { "type": "array", "maxItems": 1000 } } } ] },
        "LeakReceipt": { "type": "object", "properties": { "received": { "type": "integer" }, "message": string() } },
        "TokenLookup": { "type": "object", "required": ["token"], "properties": { "token": string() } },
        "AuditPage": { "type": "object", "properties": {
            "events": { "type": "array", "items": { "type": "object", "properties": {
                "id": { "type": "integer" }, "at": string(), "type": string(), "user": string(), "token_id": { "type": "integer" },
                "actor": string(), "details": { "type": "object" } } } },
            "next_before_id": { "type": "integer" } } }
    });
    if let (Some(all), Value::Object(session)) = (all.as_object_mut(), session_schemas()) {
        all.extend(session);
    }
    all
}

/// The OpenAPI 3.1 document of the service, built from [`ROUTES`].
/// One operation of the document: `route` under `method`.
fn operation(route: &Route, method: &str) -> Value {
    let mut operation = json!({
        "summary": route.summary,
        "operationId": format!("{method}{}", route.path.replace(['/', '{', '}', '-', '.', '*'], "_")),
        "responses": {
            route.response.0.to_string(): match route.response.1 {
                Some(schema) => json!({ "description": "success", "content": { "application/json": { "schema": { "$ref": format!("#/components/schemas/{schema}") } } } }),
                None => json!({ "description": "success" }),
            },
            "4XX": { "description": "refused", "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Error" } } } }
        }
    });
    match route.access {
        Access::Open => {}
        Access::Session => operation["security"] = json!([{ "session": [] }]),
        Access::Token | Access::Admin => {
            operation["security"] = json!([{ "privateToken": [] }, { "bearer": [] }, { "session": [] }]);
        }
    }
    if route.access == Access::Admin {
        operation["description"] = json!(
            "Needs an administrator's token allowed the matching admin permission, or an administrator's session."
        );
    }
    if let Some(schema) = route.request {
        operation["requestBody"] = json!({ "required": true, "content": { "application/json": { "schema": { "$ref": format!("#/components/schemas/{schema}") } } } });
    }
    let parameters: Vec<Value> = route
        .path
        .split('/')
        .filter_map(|segment| segment.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
        .map(|name| {
            let name = name.trim_start_matches('*');
            json!({ "name": name, "in": "path", "required": true, "schema": { "type": "string" } })
        })
        .collect();
    if !parameters.is_empty() {
        operation["parameters"] = Value::Array(parameters);
    }
    operation
}

/// The methods under which the OpenAPI document lists a route.
pub fn documented_methods(route: &Route) -> &'static [&'static str] {
    match route.method {
        "ANY" => &["get", "post", "put", "patch", "delete", "head", "options"],
        "GET" => &["get"],
        "POST" => &["post"],
        "PUT" => &["put"],
        "DELETE" => &["delete"],
        _ => &[],
    }
}

/// A route's path as the OpenAPI document writes it: a final wildcard `{*path}` becomes a
/// parameter `{path}` (the document has no wildcards).
pub fn documented_path(route: &Route) -> String {
    route.path.replace("{*", "{")
}

pub fn document() -> Value {
    let mut paths = serde_json::Map::new();
    for route in ROUTES {
        let item = paths.entry(documented_path(route)).or_insert_with(|| json!({}));
        for method in documented_methods(route) {
            item[*method] = operation(route, method);
        }
    }
    json!({
        "openapi": "3.1.0",
        "info": { "title": "patgate", "version": env!("CARGO_PKG_VERSION"),
                  "description": "Fine-grained personal access tokens: the decision API, forward auth and token management." },
        "paths": paths,
        "components": {
            "schemas": schemas(),
            "securitySchemes": {
                "privateToken": { "type": "apiKey", "in": "header", "name": "PRIVATE-TOKEN" },
                "bearer": { "type": "http", "scheme": "bearer" },
                "session": { "type": "apiKey", "in": "cookie", "name": "patgate_session",
                             "description": "A web session (POST /api/v1/session). Requests other than GET and HEAD also need X-CSRF-Token." }
            }
        }
    })
}
