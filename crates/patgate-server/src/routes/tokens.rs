//! Personal access tokens: create, list, show, rotate, revoke.

use std::collections::BTreeMap;

use axum::{
    Json,
    extract::{Path, State},
    http::StatusCode,
};
use patgate_core::{
    Authority, BoundaryRef, Engine, Grant, PlainToken, Reach, Timestamp, TokenId, TokenKind, UserId, UserLocator,
    validate::{
        AuthoritySpec, GrantSpec, LifetimePolicy, NewTokenSpec, ValidationError, validate_group_caps,
        validate_new_token,
    },
};
use patgate_store::{
    Actor, Audit, LifetimeRules, NewToken, PermissionUse, Settings, StateFilter, Store, TokenPageQuery, TokenRow,
    TokenSort,
};
use serde::{Deserialize, Serialize};

use crate::{
    auth::{Caller, Credentials, authorize, authorize_with, presented_token},
    error::ApiError,
    extract::{Params, RawBody},
    insight::{Blocked, insight},
    routes::lifecycle::instant,
    state::{AppState, Shared},
};

/// A grant as clients write it.
#[derive(Debug, Deserialize, Serialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct GrantBody {
    pub reach: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub projects: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<String>,
    pub permissions: BTreeMap<String, Vec<String>>,
}

/// `POST …/personal_access_tokens`: `scopes` for a legacy token, `grants` for a
/// fine-grained one.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateTokenRequest {
    pub name: String,
    #[serde(default)]
    pub description: String,
    pub expires_at: Option<String>,
    pub scopes: Option<Vec<String>>,
    pub grants: Option<Vec<GrantBody>>,
    #[serde(default)]
    pub allowed_ips: Vec<String>,
}

/// A token as the API shows it: never the secret (except `token` once), never the digest.
/// `Debug` shows the secret's display prefix only ([`PlainToken`]'s own `Debug`).
#[derive(Debug, Serialize)]
pub struct TokenResponse {
    pub id: u64,
    pub name: String,
    pub description: String,
    pub kind: &'static str,
    /// The secret, in the answer that creates or rotates the token and nowhere else.
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "shown_once")]
    pub token: Option<PlainToken>,
    pub display_prefix: String,
    pub user: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scopes: Option<Vec<&'static str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub grants: Option<Vec<GrantBody>>,
    pub allowed_ips: Vec<String>,
    pub created_at: String,
    pub expires_at: Option<String>,
    pub revoked_at: Option<String>,
    pub revoke_reason: Option<String>,
    /// `active`, `expired`, `revoked`, or `blocked` (see `blocked_reason`). A rotated token
    /// stays `active` until its grace period ends (`revoked_at` in the future).
    pub state: &'static str,
    /// Why a `blocked` token is denied: `owner_blocked`, `lifetime_policy` (rotate it) or
    /// `legacy_disabled`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub blocked_reason: Option<&'static str>,
    /// What a review should look at: `broad_legacy_scope`, `write_everywhere`,
    /// `unused_permissions`, `never_used`, `expiring_soon`, `exceeds_policy`.
    pub flags: Vec<&'static str>,
    /// Granted permissions not used within the usage window (for a token used at all).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub unused_permissions: Vec<String>,
    /// The last client addresses it was used from, newest first.
    pub last_ips: Vec<String>,
    pub last_used_at: Option<String>,
    pub family_id: u64,
    pub previous_id: Option<u64>,
}

/// Serialises the secret of a token shown once, in the clear (the only place it is).
fn shown_once<S: serde::Serializer>(token: &Option<PlainToken>, serializer: S) -> Result<S::Ok, S::Error> {
    match token {
        Some(token) => serializer.serialize_str(token.expose_secret()),
        None => serializer.serialize_none(),
    }
}

fn date(stamp: Timestamp) -> String {
    let (year, month, day) = stamp.date();
    format!("{year:04}-{month:02}-{day:02}")
}

/// A grant as clients write it, naming projects and groups by path.
pub(crate) fn grant_body(engine: &Engine, grant: &Grant) -> GrantBody {
    let directory = &engine.index.directory;
    let (projects, groups) = match &grant.reach {
        Reach::Selected { projects, groups } => (
            projects
                .iter()
                .map(|id| directory.project(*id).map_or_else(|| id.to_string(), |p| p.full_path.to_string()))
                .collect(),
            groups
                .iter()
                .map(|id| directory.group(*id).map_or_else(|| id.to_string(), |g| g.full_path.to_string()))
                .collect(),
        ),
        _ => (Vec::new(), Vec::new()),
    };
    GrantBody {
        reach: grant.reach.kind().name().to_owned(),
        projects,
        groups,
        permissions: grant
            .permissions
            .entries()
            .map(|(resource, actions)| {
                (engine.resources.name(resource).to_owned(), actions.iter().map(|a| a.name().to_owned()).collect())
            })
            .collect(),
    }
}

/// Renders a stored token for the API, naming projects and groups by path, with its flags
/// from `uses` (its permission uses within the usage window).
pub fn token_response(
    shared: &Shared,
    row: &TokenRow,
    secret: Option<PlainToken>,
    now: Timestamp,
    uses: &[PermissionUse],
) -> TokenResponse {
    let engine = shared.engine();
    let directory = &engine.index.directory;
    let (scopes, grants) = match &row.authority {
        Authority::Legacy(scopes) => (Some(scopes.iter().map(|s| s.name()).collect()), None),
        Authority::FineGrained(grants) => (None, Some(grants.iter().map(|grant| grant_body(&engine, grant)).collect())),
    };
    let owner_active = directory.user(row.owner).is_some_and(|user| user.is_active());
    let insight = insight(row, owner_active, &engine.policy, uses, now);
    TokenResponse {
        id: row.id.0,
        name: row.name.clone(),
        description: row.description.clone(),
        kind: row.kind.name(),
        token: secret,
        display_prefix: row.display_prefix.clone(),
        user: directory.user(row.owner).map_or_else(|| row.owner.to_string(), |u| u.username.to_string()),
        scopes,
        grants,
        allowed_ips: row.allowed_ips.iter().map(ToString::to_string).collect(),
        created_at: row.created_at.to_string(),
        expires_at: row.expires_at.map(date),
        revoked_at: row.revoked_at.map(|t| t.to_string()),
        revoke_reason: row.revoke_reason.clone(),
        state: insight.state.name(),
        blocked_reason: insight.blocked.map(Blocked::name),
        flags: insight.flags.iter().map(|flag| flag.name()).collect(),
        unused_permissions: insight.unused.iter().map(|p| engine.resources.permission_name(*p)).collect(),
        last_ips: row.last_ips.iter().map(ToString::to_string).collect(),
        last_used_at: row.last_used_at.map(|t| t.to_string()),
        family_id: row.family.0,
        previous_id: row.previous.map(|p| p.0),
    }
}

pub(crate) fn own_permission(shared: &Shared, action: &str) -> Result<[patgate_core::Permission; 1], ApiError> {
    let engine = shared.engine();
    let permission = engine
        .resources
        .permission(&format!("personal_access_token:{action}"))
        .map_err(|error| ApiError::Internal(error.to_string()))?;
    Ok([permission])
}

pub(crate) fn admin_permission(shared: &Shared, name: &str) -> Result<[patgate_core::Permission; 1], ApiError> {
    let engine = shared.engine();
    Ok([engine.resources.permission(name).map_err(|error| ApiError::Internal(error.to_string()))?])
}

/// The longest token name and description, in characters (Unicode scalar values, not bytes:
/// the columns are `TEXT` on both databases, with no length limit).
pub const LONGEST_NAME_CHARS: usize = 255;
pub const LONGEST_DESCRIPTION_CHARS: usize = 1000;

fn spec_of(body: &CreateTokenRequest) -> Result<NewTokenSpec, ApiError> {
    let name = body.name.trim();
    if name.is_empty() || name.chars().count() > LONGEST_NAME_CHARS {
        return Err(ApiError::invalid(format!("`name` must be 1 to {LONGEST_NAME_CHARS} characters")));
    }
    if body.description.chars().count() > LONGEST_DESCRIPTION_CHARS {
        return Err(ApiError::invalid(format!("`description` must be at most {LONGEST_DESCRIPTION_CHARS} characters")));
    }
    let expires_at = match body.expires_at.as_deref() {
        None | Some("") => None,
        Some(text) => Some(
            Timestamp::parse_date(text)
                .ok_or_else(|| ApiError::invalid(format!("`expires_at`: `{text}` is not a date (YYYY-MM-DD)")))?,
        ),
    };
    let authority = match (&body.scopes, &body.grants) {
        (Some(scopes), None) => AuthoritySpec::Legacy { scopes: scopes.clone() },
        (None, Some(grants)) => AuthoritySpec::FineGrained {
            grants: grants
                .iter()
                .map(|grant| GrantSpec {
                    reach: grant.reach.clone(),
                    projects: grant.projects.clone(),
                    groups: grant.groups.clone(),
                    permissions: grant.permissions.iter().map(|(r, a)| (r.clone(), a.clone())).collect(),
                })
                .collect(),
        },
        (Some(_), Some(_)) => {
            return Err(ApiError::invalid("give either `scopes` (legacy) or `grants` (fine-grained), not both"));
        }
        (None, None) => {
            return Err(ApiError::invalid("give `scopes` for a legacy token or `grants` for a fine-grained one"));
        }
    };
    Ok(NewTokenSpec { authority, expires_at, allowed_ips: body.allowed_ips.clone() })
}

/// Whether the legacy policy lets a new legacy token come into being at `now`, by creation
/// or by rotation: `legacy_tokens_allowed`, and before `legacy_creation_disabled_from`.
fn legacy_creation_allowed(settings: &Settings, now: Timestamp) -> Result<(), ApiError> {
    let cut_off = settings
        .legacy_creation_disabled_from
        .as_deref()
        .and_then(Timestamp::parse_date)
        .is_some_and(|from| now >= from);
    if settings.legacy_tokens_allowed && !cut_off {
        return Ok(());
    }
    Err(ApiError::Forbidden {
        reason: "legacy_disabled",
        message: "Legacy tokens may no longer be created or renewed by rotation on this instance: create a \
                  fine-grained token."
            .into(),
        missing: None,
    })
}

/// Validates, mints and stores a token for `owner`; answers with the secret, once.
async fn mint(
    shared: &Shared,
    caller: &Caller,
    owner: UserId,
    body: &CreateTokenRequest,
) -> Result<TokenResponse, ApiError> {
    let spec = spec_of(body)?;
    let settings = shared.settings();
    let now = shared.clock.now();
    if matches!(spec.authority, AuthoritySpec::Legacy { .. }) {
        legacy_creation_allowed(&settings, now)?;
    }
    let policy =
        LifetimePolicy { max_lifetime_days: settings.max_lifetime_days, expiry_required: settings.expiry_required };
    let (valid, plain, digest) = {
        let engine = shared.engine();
        let directory = &engine.index.directory;
        let owner_user = directory.user(owner).ok_or_else(|| ApiError::NotFound("user does not exist".into()))?;
        let valid = validate_new_token(&engine.resources, directory, owner_user, &spec, policy, caller.creator(), now)?;
        validate_group_caps(directory, owner_user, &valid.authority, &engine.policy.group_caps, valid.expires_at, now)?;
        let plain =
            engine.format.generate(valid.authority.kind()).map_err(|error| ApiError::Internal(error.to_string()))?;
        let digest = engine.key.digest_plain(&plain);
        (valid, plain, digest)
    };
    let new = NewToken {
        owner,
        name: body.name.trim().to_owned(),
        description: body.description.clone(),
        digest,
        display_prefix: plain.display_prefix(),
        authority: valid.authority,
        allowed_ips: valid.allowed_ips.into_vec(),
        created_at: now,
        expires_at: valid.expires_at,
    };
    let audit = Audit::new("token_created", caller.actor(), now)
        .details(serde_json::json!({ "name": new.name, "kind": new.authority.kind().name() }));
    let (id, _) = shared.store.create_token(&new, audit).await?;
    shared.catch_up_after_write().await;
    let row = written_row(id, new, id, None);
    Ok(token_response(shared, &row, Some(plain), now, &[]))
}

/// The row a committed create or rotation wrote, as the store would read it back: the
/// answer that shows the secret is built from it, not from a read after the commit that
/// could fail and lose the secret.
fn written_row(id: TokenId, new: NewToken, family: TokenId, previous: Option<TokenId>) -> TokenRow {
    TokenRow {
        id,
        owner: new.owner,
        name: new.name,
        description: new.description,
        kind: new.authority.kind(),
        display_prefix: new.display_prefix,
        authority: new.authority,
        allowed_ips: new.allowed_ips,
        created_at: new.created_at,
        expires_at: new.expires_at,
        revoked_at: None,
        revoke_reason: None,
        family,
        previous,
        last_used_at: None,
        last_ips: Vec::new(),
        last_notice_days: None,
    }
}

/// `POST /api/v1/user/personal_access_tokens`: a token for the caller.
pub async fn create_own(
    State(state): State<AppState>,
    headers: Credentials,
    body: RawBody,
) -> Result<(StatusCode, Json<TokenResponse>), ApiError> {
    let permission = own_permission(&state, "create")?;
    let caller = authorize(&state, &headers, &permission, BoundaryRef::User(UserLocator::Caller), false, false)?;
    let body: CreateTokenRequest = body.json()?;
    let response = mint(&state, &caller, caller.user, &body).await?;
    Ok((StatusCode::CREATED, Json(response)))
}

/// `POST /api/v1/users/{username}/personal_access_tokens`: an admin makes a token for a user.
pub async fn create_for_user(
    State(state): State<AppState>,
    Path(username): Path<String>,
    headers: Credentials,
    body: RawBody,
) -> Result<(StatusCode, Json<TokenResponse>), ApiError> {
    let permission = admin_permission(&state, "admin_user:update")?;
    let caller = authorize(&state, &headers, &permission, BoundaryRef::Instance, false, false)?;
    let body: CreateTokenRequest = body.json()?;
    let owner = state.user_id(&username)?;
    // The admin's own token must cover what it mints, as for any token minting a token.
    let response = mint(&state, &caller, owner, &body).await?;
    Ok((StatusCode::CREATED, Json(response)))
}

/// `GET /api/v1/personal_access_tokens` (and `GET /api/v1/admin/credentials`): the tokens
/// table. Lists may be comma-separated; every filter given must hold.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// A username (administrators), or `*` for every user.
    pub user: Option<String>,
    /// `active`, `expired`, `revoked`, `blocked`.
    pub state: Option<String>,
    /// `legacy` or `fine_grained`.
    pub kind: Option<String>,
    /// Flags the token must all carry.
    pub flag: Option<String>,
    /// Expiring before / at or after this date (`YYYY-MM-DD`) or Unix second.
    pub expires_before: Option<String>,
    pub expires_after: Option<String>,
    /// Last used before / at or after this date or second (never-used tokens match neither).
    pub used_before: Option<String>,
    pub used_after: Option<String>,
    /// Part of the name, any case.
    pub search: Option<String>,
    /// `id`, `name`, `created_at`, `expires_at` or `last_used_at`; `-` first for descending.
    pub sort: Option<String>,
    pub page: Option<u32>,
    pub per_page: Option<u32>,
}

/// Tokens per page unless `per_page` says otherwise, and the most it may say.
pub const DEFAULT_PER_PAGE: u32 = 100;
pub const LARGEST_PER_PAGE: u32 = 1000;

/// The tokens table: one page, with GitLab's paging headers (`X-Total`, `X-Total-Pages`,
/// `X-Page`, `X-Per-Page`, `X-Next-Page`).
#[derive(Debug)]
pub struct TokenPage {
    pub tokens: Vec<TokenResponse>,
    pub total: usize,
    pub page: u32,
    pub per_page: u32,
}

impl axum::response::IntoResponse for TokenPage {
    fn into_response(self) -> axum::response::Response {
        let pages = self.total.div_ceil(self.per_page as usize).max(1);
        let mut headers = axum::http::HeaderMap::new();
        let mut set = |name: &'static str, value: String| {
            if let Ok(value) = axum::http::HeaderValue::from_str(&value) {
                headers.insert(name, value);
            }
        };
        set("x-total", self.total.to_string());
        set("x-total-pages", pages.to_string());
        set("x-page", self.page.to_string());
        set("x-per-page", self.per_page.to_string());
        let next = (self.page as usize) < pages;
        set("x-next-page", if next { (self.page + 1).to_string() } else { String::new() });
        (headers, Json(self.tokens)).into_response()
    }
}

fn list_of<T: std::str::FromStr>(field: &str, text: Option<&str>, known: &[&str]) -> Result<Vec<T>, ApiError> {
    let Some(text) = text else { return Ok(Vec::new()) };
    text.split(',')
        .map(str::trim)
        .filter(|item| !item.is_empty())
        .map(|item| {
            item.parse::<T>()
                .map_err(|_| ApiError::invalid(format!("`{field}`: `{item}` is not one of {}", known.join(", "))))
        })
        .collect()
}

/// The permission uses of `token` within the usage window ending at `now`.
pub(crate) async fn uses_in_window(
    state: &Shared,
    token: TokenId,
    now: Timestamp,
) -> Result<Vec<PermissionUse>, ApiError> {
    let since = window_start(state, now);
    Ok(state.store.permission_uses(None, Some(token), since).await?.into_iter().map(|(_, each)| each).collect())
}

pub(crate) fn window_start(state: &Shared, now: Timestamp) -> Timestamp {
    Timestamp(now.0 - i64::from(state.settings().usage_window_days) * patgate_core::time::DAY)
}

/// Lists, filters, sorts and pages the tokens of `owner` (every user's when `None`).
async fn table(state: &Shared, owner: Option<UserId>, query: &ListQuery) -> Result<TokenPage, ApiError> {
    use crate::insight::{Flag, State};
    let states: Vec<State> = list_of("state", query.state.as_deref(), &State::ALL.map(State::name))?;
    let flags: Vec<Flag> = list_of("flag", query.flag.as_deref(), &Flag::ALL.map(Flag::name))?;
    let kind = match query.kind.as_deref() {
        None | Some("") => None,
        Some("legacy") => Some(TokenKind::Legacy),
        Some("fine_grained") => Some(TokenKind::FineGrained),
        Some(other) => return Err(ApiError::invalid(format!("`kind`: `{other}` is not legacy or fine_grained"))),
    };
    let bound = |field: &str, value: &Option<String>| value.as_deref().map(|text| instant(field, text)).transpose();
    let (expires_before, expires_after) =
        (bound("expires_before", &query.expires_before)?, bound("expires_after", &query.expires_after)?);
    let (used_before, used_after) =
        (bound("used_before", &query.used_before)?, bound("used_after", &query.used_after)?);
    let (sort, descending) = match query.sort.as_deref().unwrap_or("id") {
        text if text.starts_with('-') => (&text[1..], true),
        text => (text, false),
    };
    if !["id", "name", "created_at", "expires_at", "last_used_at"].contains(&sort) {
        return Err(ApiError::invalid(format!(
            "`sort`: `{sort}` is not id, name, created_at, expires_at or last_used_at (`-` first for descending)"
        )));
    }
    let per_page = query.per_page.unwrap_or(DEFAULT_PER_PAGE);
    if per_page == 0 || per_page > LARGEST_PER_PAGE {
        return Err(ApiError::invalid(format!("`per_page` must be 1 to {LARGEST_PER_PAGE}")));
    }
    let page = query.page.unwrap_or(1);
    if page == 0 {
        return Err(ApiError::invalid("`page` starts at 1"));
    }
    let search = query.search.as_deref().map(str::to_lowercase).filter(|text| !text.is_empty());

    let now = state.clock.now();
    let group_uses = |listed: Vec<(TokenId, PermissionUse)>| {
        let mut uses: std::collections::HashMap<TokenId, Vec<PermissionUse>> = std::collections::HashMap::new();
        for (token, each) in listed {
            uses.entry(token).or_default().push(each);
        }
        uses
    };
    // Without a flag filter (flags need the permission uses), the database selects (name
    // search and states included: an owner's state is a join, the lifetime policy a
    // condition on the dates), sorts, counts and pages: only the page's rows are read.
    let sort_by_column = match sort {
        "id" => Some(TokenSort::Id),
        "name" => Some(TokenSort::Name),
        "created_at" => Some(TokenSort::CreatedAt),
        "expires_at" => Some(TokenSort::ExpiresAt),
        "last_used_at" => Some(TokenSort::LastUsedAt),
        _ => None,
    };
    let state_filter = (!states.is_empty()).then(|| {
        let policy = &state.engine().policy;
        StateFilter {
            at: now,
            revoked: states.contains(&State::Revoked),
            expired: states.contains(&State::Expired),
            blocked: states.contains(&State::Blocked),
            active: states.contains(&State::Active),
            rules: LifetimeRules {
                max_lifetime_days: policy.max_lifetime_days,
                expiry_required: policy.expiry_required,
                legacy_disabled: policy.legacy_use_disabled_from.is_some_and(|from| now >= from),
            },
        }
    });
    if let Some(sort) = sort_by_column
        && flags.is_empty()
    {
        let page_query = TokenPageQuery {
            owner,
            kind,
            expires_before,
            expires_after,
            used_before,
            used_after,
            name_contains: search.clone(),
            states: state_filter,
            sort,
            descending,
            limit: per_page,
            offset: u64::from(page - 1) * u64::from(per_page),
        };
        let (rows, total) = state.store.token_page(&page_query).await?;
        let ids: Vec<TokenId> = rows.iter().map(|row| row.id).collect();
        let uses = group_uses(state.store.permission_uses_of(&ids, window_start(state, now)).await?);
        let tokens = rows
            .iter()
            .map(|row| token_response(state, row, None, now, uses.get(&row.id).map_or(&[][..], Vec::as_slice)))
            .collect();
        return Ok(TokenPage { tokens, total: usize::try_from(total).unwrap_or(usize::MAX), page, per_page });
    }

    // With a flag filter the flags are computed here (they need the grants and the uses). When
    // the stored columns that the query and the flags bound leave few candidates, only those
    // rows and their uses are read (a superset: every filter runs again on them below);
    // otherwise every row of the owner (or of everyone) and every use.
    let Some(candidates) = FlagCandidates::of(&flags, kind, expires_before, used_after, now) else {
        return Ok(TokenPage { tokens: Vec::new(), total: 0, page, per_page });
    };
    let mut candidate_query = TokenPageQuery {
        owner,
        kind: candidates.kind,
        expires_before: candidates.expires_before,
        expires_after,
        used_before,
        used_after: candidates.used_after,
        name_contains: search.clone(),
        states: None,
        sort: TokenSort::Id,
        descending: false,
        limit: 0,
        offset: 0,
    };
    let (_, count) = state.store.token_page(&candidate_query).await?;
    let mut candidates = None;
    if count <= u64::from(CANDIDATES_BY_ID) {
        candidate_query.limit = CANDIDATES_BY_ID;
        let (rows, total) = state.store.token_page(&candidate_query).await?;
        // Tokens made since the count may have taken it past the limit: then every row.
        candidates = (total <= u64::from(CANDIDATES_BY_ID)).then_some(rows);
    }
    let since = window_start(state, now);
    let (rows, uses) = match candidates {
        Some(rows) => {
            let ids: Vec<TokenId> = rows.iter().map(|row| row.id).collect();
            let uses = state.store.permission_uses_of(&ids, since).await?;
            (rows, uses)
        }
        None => (state.store.tokens(owner).await?, state.store.permission_uses(owner, None, since).await?),
    };
    let uses = group_uses(uses);
    let within = |value: Option<Timestamp>, before: Option<Timestamp>, after: Option<Timestamp>| {
        (before.is_none() && after.is_none())
            || value.is_some_and(|v| before.is_none_or(|b| v < b) && after.is_none_or(|a| v >= a))
    };
    let uses_of = |row: &TokenRow| uses.get(&row.id).map_or(&[][..], Vec::as_slice);
    // Filter and sort on the rows, and render only the page: an inventory of a million
    // tokens must not build a million responses. States and flags are computed only when a
    // filter asks for them.
    let mut selected: Vec<&TokenRow> = {
        let engine = state.engine();
        let directory = &engine.index.directory;
        rows.iter()
            .filter(|row| kind.is_none_or(|kind| row.kind == kind))
            .filter(|row| within(row.expires_at, expires_before, expires_after))
            .filter(|row| within(row.last_used_at, used_before, used_after))
            .filter(|row| search.as_ref().is_none_or(|text| row.name.to_lowercase().contains(text)))
            .filter(|row| {
                if states.is_empty() && flags.is_empty() {
                    return true;
                }
                let owner_active = directory.user(row.owner).is_some_and(|user| user.is_active());
                let shown = insight(row, owner_active, &engine.policy, uses_of(row), now);
                (states.is_empty() || states.contains(&shown.state)) && flags.iter().all(|flag| shown.has(*flag))
            })
            .collect()
    };
    selected.sort_by(|a, b| {
        let order = match sort {
            "name" => a.name.cmp(&b.name),
            "created_at" => a.created_at.cmp(&b.created_at),
            // Never expiring and never used sort last going up.
            "expires_at" => {
                a.expires_at.unwrap_or(Timestamp(i64::MAX)).cmp(&b.expires_at.unwrap_or(Timestamp(i64::MAX)))
            }
            "last_used_at" => {
                a.last_used_at.unwrap_or(Timestamp(i64::MIN)).cmp(&b.last_used_at.unwrap_or(Timestamp(i64::MIN)))
            }
            _ => std::cmp::Ordering::Equal,
        }
        .then(a.id.cmp(&b.id));
        if descending { order.reverse() } else { order }
    });
    let total = selected.len();
    let tokens = selected
        .into_iter()
        .skip((page as usize - 1).saturating_mul(per_page as usize))
        .take(per_page as usize)
        .map(|row| token_response(state, row, None, now, uses_of(row)))
        .collect();
    Ok(TokenPage { tokens, total, page, per_page })
}

/// Up to this many candidate rows, a flag filter reads those rows and their grants,
/// addresses and permission uses by id (one bound parameter each, well within SQLite's and
/// PostgreSQL's limits); beyond it, every row and use of the owner (or of everyone).
const CANDIDATES_BY_ID: u32 = 5_000;

/// The bounds on stored columns that a flag filter implies, merged with the query's own:
/// every token carrying all the flags lies within them.
#[derive(Debug, PartialEq, Eq)]
struct FlagCandidates {
    kind: Option<TokenKind>,
    expires_before: Option<Timestamp>,
    used_after: Option<Timestamp>,
}

impl FlagCandidates {
    /// `None` when no token can carry every flag of `flags` and be of `kind`.
    fn of(
        flags: &[crate::insight::Flag],
        kind: Option<TokenKind>,
        expires_before: Option<Timestamp>,
        used_after: Option<Timestamp>,
        now: Timestamp,
    ) -> Option<FlagCandidates> {
        use crate::insight::{EXPIRING_SOON_DAYS, Flag};
        let mut candidates = FlagCandidates { kind, expires_before, used_after };
        for flag in flags {
            let needs = match flag {
                Flag::BroadLegacyScope => Some(TokenKind::Legacy),
                Flag::WriteEverywhere | Flag::UnusedPermissions => Some(TokenKind::FineGrained),
                Flag::NeverUsed | Flag::ExpiringSoon | Flag::ExceedsPolicy => None,
            };
            if let Some(needs) = needs {
                if candidates.kind.is_some_and(|kind| kind != needs) {
                    return None;
                }
                candidates.kind = Some(needs);
            }
            match flag {
                // Expires within the week (`before` is exclusive).
                Flag::ExpiringSoon => {
                    let bound = Timestamp(now.0.saturating_add(EXPIRING_SOON_DAYS * patgate_core::time::DAY + 1));
                    candidates.expires_before =
                        Some(candidates.expires_before.map_or(bound, |before| before.min(bound)));
                }
                // Has been used: any bound on the last use leaves out the tokens never used.
                Flag::UnusedPermissions => {
                    candidates.used_after.get_or_insert(Timestamp(i64::MIN));
                }
                _ => {}
            }
        }
        Some(candidates)
    }
}

/// `GET /api/v1/personal_access_tokens`: the caller's tokens table; an administrator may
/// add `?user=NAME` (or `*` for everyone).
pub async fn list(
    State(state): State<AppState>,
    headers: Credentials,
    Params(query): Params<ListQuery>,
) -> Result<TokenPage, ApiError> {
    let permission = own_permission(&state, "read")?;
    let caller = authorize(&state, &headers, &permission, BoundaryRef::User(UserLocator::Caller), false, true)?;
    let owner = match query.user.as_deref() {
        None => Some(caller.user),
        Some(username) => {
            let permission = admin_permission(&state, "admin_user:read")?;
            authorize(&state, &headers, &permission, BoundaryRef::Instance, false, true)?;
            user_filter(&state, username)?
        }
    };
    table(&state, owner, &query).await
}

/// `GET /api/v1/admin/credentials`: the credentials inventory, every user's tokens (or
/// `?user=NAME`'s), with the same filters (administrators).
pub async fn inventory(
    State(state): State<AppState>,
    headers: Credentials,
    Params(query): Params<ListQuery>,
) -> Result<TokenPage, ApiError> {
    let permission = admin_permission(&state, "admin_user:read")?;
    authorize(&state, &headers, &permission, BoundaryRef::Instance, false, true)?;
    let owner = match query.user.as_deref() {
        None => None,
        Some(username) => user_filter(&state, username)?,
    };
    table(&state, owner, &query).await
}

fn user_filter(state: &Shared, username: &str) -> Result<Option<UserId>, ApiError> {
    if username == "*" {
        return Ok(None);
    }
    state.user_id(username).map(Some)
}

/// Loads a token the caller may act on: their own, or any for an admin.
pub(crate) async fn owned(
    state: &Shared,
    caller: &Caller,
    id: TokenId,
    headers: &Credentials,
    admin_action: &str,
) -> Result<TokenRow, ApiError> {
    let row = state.store.token(id).await?.ok_or_else(|| ApiError::NotFound(format!("token {id} does not exist")))?;
    if row.owner != caller.user {
        // Someone else's token: only an admin, and then it needs the admin permission.
        let permission = admin_permission(state, admin_action)?;
        authorize(state, headers, &permission, BoundaryRef::Instance, false, admin_action.ends_with(":read"))
            .map_err(|_| ApiError::NotFound(format!("token {id} does not exist")))?;
    }
    Ok(row)
}

pub(crate) fn parse_id(text: &str) -> Result<TokenId, ApiError> {
    text.parse::<u64>().map(TokenId).map_err(|_| ApiError::NotFound(format!("token `{text}` does not exist")))
}

/// `GET /api/v1/personal_access_tokens/{id}`.
pub async fn show(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: Credentials,
) -> Result<Json<TokenResponse>, ApiError> {
    let permission = own_permission(&state, "read")?;
    let caller = authorize(&state, &headers, &permission, BoundaryRef::User(UserLocator::Caller), false, true)?;
    let row = owned(&state, &caller, parse_id(&id)?, &headers, "admin_user:read").await?;
    let now = state.clock.now();
    let uses = uses_in_window(&state, row.id, now).await?;
    Ok(Json(token_response(&state, &row, None, now, &uses)))
}

/// `GET /api/v1/personal_access_tokens/self`: the presenting token (open to any valid token).
pub async fn show_self(State(state): State<AppState>, headers: Credentials) -> Result<Json<TokenResponse>, ApiError> {
    let caller = authorize_any(&state, &headers)?;
    let row = state
        .store
        .token(presented_id(&caller)?)
        .await?
        .ok_or_else(|| ApiError::NotFound("token does not exist".into()))?;
    let now = state.clock.now();
    let uses = uses_in_window(&state, row.id, now).await?;
    Ok(Json(token_response(&state, &row, None, now, &uses)))
}

/// The id of the token the caller presented; a signed-in user has none to show or rotate.
fn presented_id(caller: &Caller) -> Result<TokenId, ApiError> {
    caller.token_id().ok_or_else(|| {
        ApiError::NotFound("you are signed in with a session: there is no token in use (`self`)".to_owned())
    })
}

fn authorize_any(state: &Shared, headers: &Credentials) -> Result<Caller, ApiError> {
    let permission = own_permission(state, "read")?;
    // Any valid token may read itself: authenticate with a permission check that cannot
    // fail for the token's own user, then accept any decision past authentication.
    match authorize(state, headers, &permission, BoundaryRef::User(UserLocator::Caller), true, true) {
        Ok(caller) => Ok(caller),
        Err(ApiError::Forbidden { .. }) => crate::auth::authenticate_only(state, headers),
        Err(other) => Err(other),
    }
}

/// `DELETE /api/v1/personal_access_tokens/{id}`: revoke.
pub async fn revoke(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: Credentials,
) -> Result<StatusCode, ApiError> {
    let permission = own_permission(&state, "delete")?;
    let caller = authorize(&state, &headers, &permission, BoundaryRef::User(UserLocator::Caller), false, false)?;
    let row = owned(&state, &caller, parse_id(&id)?, &headers, "admin_user:update").await?;
    let now = state.clock.now();
    // A rotated token still in its grace period works until then: revoking it ends that now.
    if row.is_revoked(now) {
        return Err(ApiError::Conflict(format!("token {} is already revoked", row.id)));
    }
    let by_admin = row.owner != caller.user;
    let reason = if by_admin { "revoked_by_admin" } else { "revoked_by_owner" };
    let audit = Audit::new("token_revoked", caller.actor(), now).user(row.owner);
    state.store.revoke_token(row.id, reason, audit).await?;
    state.catch_up_after_write().await;
    Ok(StatusCode::NO_CONTENT)
}

/// Rotation: a new secret with the same name and grants and a fresh expiry; the old one
/// is revoked.
/// What a rotation puts into the new token, and how the audit log names it.
#[derive(Debug)]
pub(crate) struct Replacement {
    pub authority: Authority,
    /// `token_rotated`, or `token_narrowed` for a replacement by narrower grants.
    pub event: &'static str,
    pub details: serde_json::Value,
}

impl Replacement {
    /// A plain rotation: the same scopes or grants.
    fn same(row: &TokenRow) -> Replacement {
        Replacement { authority: row.authority.clone(), event: "token_rotated", details: serde_json::json!({}) }
    }
}

/// Rotates `row` into a new token with `into`'s authority, a fresh secret and expiry.
pub(crate) async fn rotate_token(
    state: &Shared,
    caller: &Caller,
    row: TokenRow,
    into: Replacement,
) -> Result<TokenResponse, ApiError> {
    let now = state.clock.now();
    if row.revoked_at.is_some() {
        return Err(ApiError::Conflict(format!("token {} is revoked and cannot be rotated", row.id)));
    }
    // Rotation renews a live token; it does not bring an expired one back.
    if row.expires_at.is_some_and(|expires| now >= expires) {
        return Err(ApiError::Conflict(format!(
            "token {} is expired and cannot be rotated: create a new token instead",
            row.id
        )));
    }
    // Rotating hands the caller the new secret: a token other than the rotated one must
    // cover everything the rotated token can do, or rotation would widen it. (A signed-in
    // user holds their full rights and may rotate any token they may see.)
    if let Some(creator) = caller.creator()
        && creator.id != row.id
    {
        let engine = state.engine();
        let directory = &engine.index.directory;
        let owner =
            directory.user(row.owner).ok_or_else(|| ApiError::NotFound(format!("token {} does not exist", row.id)))?;
        if !patgate_core::validate::authority_within(&row.authority, &creator.authority, directory, owner) {
            return Err(ApiError::Forbidden {
                reason: "escalation",
                message: "This token may only rotate tokens with equal or narrower permissions than its own.".into(),
                missing: None,
            });
        }
        // Nor from more addresses: the new secret would work where the caller's does not.
        if !patgate_core::validate::allowlist_covered(&row.allowed_ips, &creator.allowed_ips) {
            return Err(ApiError::Forbidden {
                reason: "escalation",
                message: "This token may only rotate tokens usable from no more addresses than its own allowlist."
                    .into(),
                missing: None,
            });
        }
    }
    let settings = state.settings();
    // A rotation into a legacy token makes a new legacy token, as creating one does.
    if into.authority.kind() == TokenKind::Legacy {
        legacy_creation_allowed(&settings, now)?;
    }
    // A fresh lifetime as long as the old one was (in days from its creation date), capped by
    // the policy, at least 7 days.
    let created_day = row.created_at.0 - row.created_at.0.rem_euclid(patgate_core::time::DAY);
    let lifetime_days = row
        .expires_at
        .map(|expires| ((expires.0 - created_day) / patgate_core::time::DAY).max(7))
        .unwrap_or(i64::from(settings.max_lifetime_days))
        .min(i64::from(settings.max_lifetime_days));
    let today = Timestamp(now.0 - now.0.rem_euclid(patgate_core::time::DAY));
    let mut expires_at = Some(today.plus_days(lifetime_days));
    // A group the token reaches into may cap it harder.
    {
        let engine = state.engine();
        let directory = &engine.index.directory;
        if let Some(owner) = directory.user(row.owner)
            && let Err(ValidationError::ExpiryBeyondGroupPolicy { max_days, .. }) =
                validate_group_caps(directory, owner, &into.authority, &engine.policy.group_caps, expires_at, now)
        {
            expires_at = Some(today.plus_days(i64::from(max_days)));
        }
    }
    let (plain, digest) = {
        let engine = state.engine();
        let kind = into.authority.kind();
        let plain = engine.format.generate(kind).map_err(|error| ApiError::Internal(error.to_string()))?;
        let digest = engine.key.digest_plain(&plain);
        (plain, digest)
    };
    let new = NewToken {
        owner: row.owner,
        name: row.name.clone(),
        description: row.description.clone(),
        digest,
        display_prefix: plain.display_prefix(),
        authority: into.authority,
        allowed_ips: row.allowed_ips.clone(),
        created_at: now,
        expires_at,
    };
    let actor = caller.actor();
    let audit = Audit::new(into.event, actor, now).details(into.details);
    let (id, _) = state.store.rotate_token(row.id, &new, settings.rotation_grace_seconds, audit).await?;
    state.catch_up_after_write().await;
    let written = written_row(id, new, row.family, Some(row.id));
    Ok(token_response(state, &written, Some(plain), now, &[]))
}

/// Reuse detection: a token that was already rotated, presented to a rotate endpoint, means
/// two parties hold its secret. Every token of its rotation family is revoked
/// (`reuse_detected`) and the request is refused.
async fn detect_reuse(state: &Shared, headers: &Credentials) -> Result<(), ApiError> {
    let Some(presented) = presented_token(&headers.headers, None) else { return Ok(()) };
    let record = {
        let engine = state.engine();
        patgate_core::authenticate(&engine.index, &engine.format, &engine.key, &presented).ok().cloned()
    };
    let Some(record) = record.filter(|record| record.revoked_at.is_some()) else { return Ok(()) };
    let Some(row) = state.store.token(record.id).await? else { return Ok(()) };
    if row.revoke_reason.as_deref() != Some("rotated") {
        return Ok(());
    }
    let family = state.store.family(row.family).await?;
    let now = state.clock.now();
    let audit = Audit::new("reuse_detected", Actor { user: None, token: Some(row.id) }, now)
        .details(serde_json::json!({ "presented_token_id": row.id.0, "family_id": row.family.0 }));
    let (revoked, _) = state.store.revoke_tokens(&family, "reuse_detected", audit).await?;
    state.catch_up_after_write().await;
    tracing::warn!(
        token = row.id.0,
        family = row.family.0,
        revoked = revoked.len(),
        "an already rotated token was presented for rotation: its family is revoked"
    );
    Err(ApiError::Unauthenticated {
        reason: "reuse_detected",
        message: "This token was already rotated; presenting it again means someone else may hold it, so every \
                  token of its rotation family is now revoked."
            .into(),
    })
}

/// `POST /api/v1/personal_access_tokens/{id}/rotate`.
pub async fn rotate(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: Credentials,
) -> Result<Json<TokenResponse>, ApiError> {
    detect_reuse(&state, &headers).await?;
    let permission = own_permission(&state, "update")?;
    let caller = authorize(&state, &headers, &permission, BoundaryRef::User(UserLocator::Caller), false, false)?;
    let row = owned(&state, &caller, parse_id(&id)?, &headers, "admin_user:update").await?;
    let into = Replacement::same(&row);
    Ok(Json(rotate_token(&state, &caller, row, into).await?))
}

/// `POST /api/v1/personal_access_tokens/self/rotate`.
pub async fn rotate_self(State(state): State<AppState>, headers: Credentials) -> Result<Json<TokenResponse>, ApiError> {
    detect_reuse(&state, &headers).await?;
    let permission = own_permission(&state, "update")?;
    // A token blocked by a lowered lifetime cap may rotate itself into compliance.
    let caller =
        authorize_with(&state, &headers, &permission, BoundaryRef::User(UserLocator::Caller), true, false, true)?;
    let row = state
        .store
        .token(presented_id(&caller)?)
        .await?
        .ok_or_else(|| ApiError::NotFound("token does not exist".into()))?;
    let into = Replacement::same(&row);
    Ok(Json(rotate_token(&state, &caller, row, into).await?))
}

#[cfg(test)]
mod tests {
    use patgate_core::time::DAY;

    use super::*;
    use crate::insight::{EXPIRING_SOON_DAYS, Flag};

    #[test]
    fn a_token_response_shows_its_secret_when_serialised_and_never_by_debug() {
        let format = patgate_core::TokenFormat::new("").unwrap();
        let plain = format.generate(TokenKind::FineGrained).unwrap();
        let secret = plain.expose_secret().to_owned();
        let response = TokenResponse {
            id: 7,
            name: "ci".into(),
            description: String::new(),
            kind: "fine_grained",
            token: Some(plain.clone()),
            display_prefix: plain.display_prefix(),
            user: "alice".into(),
            scopes: None,
            grants: Some(Vec::new()),
            allowed_ips: Vec::new(),
            created_at: "2026-11-28T12:00:00Z".into(),
            expires_at: Some("2027-01-01".into()),
            revoked_at: None,
            revoke_reason: None,
            state: "active",
            blocked_reason: None,
            flags: Vec::new(),
            unused_permissions: Vec::new(),
            last_ips: Vec::new(),
            last_used_at: None,
            family_id: 7,
            previous_id: None,
        };
        // The random part after the display prefix is what must never be shown.
        let hidden = &secret[plain.display_prefix().len()..];
        for shown in [format!("{response:?}"), format!("{response:#?}")] {
            assert!(!shown.contains(hidden), "the secret is shown: {shown}");
            assert!(shown.contains("[redacted]"), "{shown}");
        }
        // The one answer that carries it shows it in the clear; the others have no `token`.
        let json = serde_json::to_value(&response).unwrap();
        assert_eq!(json["token"].as_str(), Some(secret.as_str()));
        let json = serde_json::to_value(TokenResponse { token: None, ..response }).unwrap();
        assert!(json.get("token").is_none(), "{json}");
    }

    #[test]
    fn flags_bound_the_columns_they_imply_and_no_more() {
        let now = Timestamp(1_800_000_000);
        let of = |flags: &[Flag], kind, expires_before, used_after| {
            FlagCandidates::of(flags, kind, expires_before, used_after, now)
        };
        for flag in [Flag::NeverUsed, Flag::ExceedsPolicy] {
            let unbounded = FlagCandidates { kind: None, expires_before: None, used_after: None };
            assert_eq!(of(&[flag], None, None, None), Some(unbounded), "{flag:?}");
        }
        let legacy = Some(TokenKind::Legacy);
        let fine = Some(TokenKind::FineGrained);
        assert_eq!(of(&[Flag::BroadLegacyScope], None, None, None).map(|c| c.kind), Some(legacy));
        assert_eq!(of(&[Flag::WriteEverywhere], fine, None, None).map(|c| c.kind), Some(fine));
        // A flag of the other kind, or flags of both kinds: no token can carry them.
        assert_eq!(of(&[Flag::WriteEverywhere], legacy, None, None), None);
        assert_eq!(of(&[Flag::BroadLegacyScope, Flag::UnusedPermissions], None, None, None), None);
        // Expiring soon: expires at most seven days from now (the bound is exclusive), and
        // within the query's own bound when that is earlier.
        let soon = Timestamp(now.0 + EXPIRING_SOON_DAYS * DAY + 1);
        assert_eq!(of(&[Flag::ExpiringSoon], None, None, None).and_then(|c| c.expires_before), Some(soon));
        let earlier = Timestamp(now.0 + DAY);
        assert_eq!(of(&[Flag::ExpiringSoon], None, Some(earlier), None).and_then(|c| c.expires_before), Some(earlier));
        let later = Timestamp(now.0 + 30 * DAY);
        assert_eq!(of(&[Flag::ExpiringSoon], None, Some(later), None).and_then(|c| c.expires_before), Some(soon));
        // Unused permissions: used at some time (the query's own bound on the last use kept).
        let used = of(&[Flag::UnusedPermissions], None, None, None).unwrap();
        assert_eq!((used.kind, used.used_after), (fine, Some(Timestamp(i64::MIN))));
        let after = Timestamp(now.0 - DAY);
        assert_eq!(of(&[Flag::UnusedPermissions], None, None, Some(after)).and_then(|c| c.used_after), Some(after));
    }
}
