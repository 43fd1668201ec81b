//! Client commands against a running patgate: tokens, decisions, directory import.
//!
//! Exit codes: 0 success (or an allowed decision), 1 the server refused (or a denied
//! decision), 2 a usage, connection or server error (a success whose answer cannot be read,
//! or lacks what the command needs, is one: a new token's secret, a decision's verdict).

use std::{path::PathBuf, process::ExitCode};

use anyhow::{Context, bail};
use serde_json::{Value, json};

/// Where the server is and how to authenticate.
#[derive(Debug, clap::Args)]
pub struct Connection {
    /// The patgate server.
    #[arg(long, global = true, default_value = "http://127.0.0.1:8080", env = "PATGATE_URL")]
    pub url: String,
    /// Print the server's JSON instead of a table.
    #[arg(long, global = true)]
    pub json: bool,
}

#[derive(Debug, clap::Subcommand)]
pub enum TokenCommand {
    /// Create a token (legacy with --scope, fine-grained with --grant).
    Create {
        #[arg(long)]
        name: String,
        /// Expiry date, YYYY-MM-DD.
        #[arg(long)]
        expires_at: Option<String>,
        #[arg(long, default_value = "")]
        description: String,
        /// A legacy scope (repeat for several): read_api, api, …
        #[arg(long = "scope")]
        scopes: Vec<String>,
        /// A grant as JSON (repeat for several):
        /// '{"reach":"selected","projects":["acme/api"],"permissions":{"issue":["read"]}}'
        #[arg(long = "grant")]
        grants: Vec<String>,
        /// An allowed client address or CIDR range (repeat for several).
        #[arg(long = "allowed-ip")]
        allowed_ips: Vec<String>,
        /// Create it for this user (administrators).
        #[arg(long = "for")]
        for_user: Option<String>,
    },
    /// List tokens: your own, or a user's (`--user NAME`, `--user '*'` for all; administrators).
    /// Every page is fetched.
    List(ListArgs),
    /// Show one token (`self` for the one you are using).
    Show { id: String },
    /// Rotate a token (`self` for the one you are using); prints the new secret once.
    Rotate { id: String },
    /// Revoke a token.
    Revoke { id: String },
    /// What a token used within the usage window, and the narrowest grants that allow all
    /// of it (`self` for the one you are using).
    Suggest { id: String },
    /// Replace a token with its suggested grants: a rotation, the new secret printed once
    /// (`self` for the one you are using).
    Narrow { id: String },
}

/// Tokens per request of `token list` by default: the server's largest page, as it builds
/// the whole table for every page it serves.
const LIST_PAGE_SIZE: u32 = 1000;

/// Options of `patgate token list`: filters the server applies; every one given must hold.
#[derive(Debug, clap::Args)]
pub struct ListArgs {
    /// A user's tokens, or `*` for every user's (administrators).
    #[arg(long)]
    user: Option<String>,
    /// Add a FLAGS column (what a review should look at) and an UNUSED column (granted
    /// permissions not used within the usage window).
    #[arg(long)]
    flags: bool,
    /// Only tokens in these states: active, expired, revoked, blocked (repeat or comma-separate).
    #[arg(long, value_delimiter = ',')]
    state: Vec<String>,
    /// Only tokens of this kind.
    #[arg(long, value_parser = ["legacy", "fine_grained"])]
    kind: Option<String>,
    /// Only tokens carrying all these flags (repeat or comma-separate): broad_legacy_scope,
    /// write_everywhere, unused_permissions, never_used, expiring_soon, exceeds_policy.
    /// Shows the FLAGS column.
    #[arg(long, value_delimiter = ',')]
    flag: Vec<String>,
    /// Only tokens whose name contains this, in any case.
    #[arg(long)]
    search: Option<String>,
    /// Order by id, name, created_at, expires_at or last_used_at; `-` first for descending.
    #[arg(long, allow_hyphen_values = true)]
    sort: Option<String>,
    /// Tokens fetched per request (1 to 1000); every page is fetched either way.
    #[arg(long, default_value_t = LIST_PAGE_SIZE, value_parser = clap::value_parser!(u32).range(1..=1000))]
    per_page: u32,
}

#[derive(Debug, clap::Subcommand)]
pub enum AdminCommand {
    /// Import users, groups, projects and memberships from a JSON file (idempotent).
    Import { file: PathBuf },
    /// Set a user's web UI password, read as one line from standard input (12 characters
    /// or more); every session of theirs ends.
    Password { username: String },
}

/// Arguments of `patgate decide`.
#[derive(Debug, clap::Args)]
pub struct DecideArgs {
    /// HTTP method of the request to explain.
    #[arg(long, default_value = "GET")]
    pub method: String,
    /// Path as the client sends it: /api/v4/projects/acme%2Fapi/issues
    pub path: String,
    /// Client address, for tokens with an IP allowlist.
    #[arg(long)]
    pub client_ip: Option<String>,
}

struct Client {
    agent: ureq::Agent,
    url: String,
    token: Option<String>,
}

struct Reply {
    status: u16,
    body: Value,
    /// Why the body could not be read as JSON (a broken connection, an HTML page from a
    /// proxy), when it could not.
    unreadable: Option<String>,
    /// `X-Next-Page` of a paged list, when there is a next page.
    next_page: Option<u32>,
}

impl Reply {
    /// The body of a success; a refusal is printed and becomes its exit code, and so does
    /// a success whose body cannot be read (exit 2: the server, or what stands in front of
    /// it, failed).
    fn accepted(self) -> Result<Value, ExitCode> {
        if self.status >= 400 {
            return Err(refused(&self));
        }
        match self.unreadable {
            Some(why) => Err(unusable(&format!("the server answered {} but {why}", self.status))),
            None => Ok(self.body),
        }
    }

    /// [`accepted`](Self::accepted), and the body must hold `key` (a new token's secret, a
    /// decision's verdict).
    fn accepted_with(self, key: &str, what: &str) -> Result<Value, ExitCode> {
        let body = self.accepted()?;
        if body.get(key).is_some_and(|value| !value.is_null()) {
            Ok(body)
        } else {
            Err(unusable(&format!("the server's answer has no `{key}` ({what})")))
        }
    }
}

/// Prints why a reply is of no use and gives exit code 2.
fn unusable(why: &str) -> ExitCode {
    eprintln!("patgate: {why}");
    ExitCode::from(2)
}

impl Client {
    fn new(connection: &Connection) -> Client {
        let config = ureq::Agent::config_builder().http_status_as_error(false).build();
        Client {
            agent: config.into(),
            url: connection.url.trim_end_matches('/').to_owned(),
            token: std::env::var("PATGATE_TOKEN").ok().filter(|token| !token.is_empty()),
        }
    }

    fn token(&self) -> anyhow::Result<&str> {
        self.token.as_deref().context("set PATGATE_TOKEN to your token")
    }

    fn send(&self, method: &str, path: &str, body: Option<Value>) -> anyhow::Result<Reply> {
        let url = format!("{}{path}", self.url);
        let mut response = match (method, body) {
            ("GET", _) => self.with_token(self.agent.get(&url)).call(),
            ("DELETE", _) => self.with_token(self.agent.delete(&url)).call(),
            ("POST", Some(body)) => self.with_token(self.agent.post(&url)).send_json(body),
            ("POST", None) => self.with_token(self.agent.post(&url)).send_empty(),
            ("PUT", Some(body)) => self.with_token(self.agent.put(&url)).send_json(body),
            _ => bail!("unsupported method {method}"),
        }
        .with_context(|| format!("cannot reach {}", self.url))?;
        let status = response.status().as_u16();
        let next_page = response
            .headers()
            .get("x-next-page")
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.parse().ok());
        let (body, unreadable) = match response.body_mut().read_to_string() {
            Err(error) => (Value::Null, Some(format!("its answer could not be read: {error}"))),
            Ok(text) if text.is_empty() => (Value::Null, None),
            Ok(text) => match serde_json::from_str(&text) {
                Ok(body) => (body, None),
                Err(_) => (Value::String(text), Some("its answer is not JSON".to_owned())),
            },
        };
        Ok(Reply { status, body, unreadable, next_page })
    }

    fn with_token<B>(&self, request: ureq::RequestBuilder<B>) -> ureq::RequestBuilder<B> {
        match &self.token {
            Some(token) => request.header("PRIVATE-TOKEN", token),
            None => request,
        }
    }
}

/// Prints a refusal and gives exit code 1 (4xx) or 2 (5xx).
fn refused(reply: &Reply) -> ExitCode {
    let code = reply.body.get("error").and_then(Value::as_str).unwrap_or("error");
    let message = reply.body.get("message").and_then(Value::as_str).unwrap_or("the server refused the request");
    eprintln!("patgate: {} {code}: {message}", reply.status);
    if reply.status >= 500 { ExitCode::from(2) } else { ExitCode::FAILURE }
}

fn text(value: &Value, key: &str) -> String {
    match value.get(key) {
        Some(Value::String(text)) => text.clone(),
        Some(Value::Null) | None => "-".to_owned(),
        Some(other) => other.to_string(),
    }
}

fn summary(token: &Value) -> String {
    if let Some(scopes) = token.get("scopes").and_then(Value::as_array) {
        return scopes.iter().filter_map(Value::as_str).collect::<Vec<_>>().join(",");
    }
    let grants = token.get("grants").and_then(Value::as_array).cloned().unwrap_or_default();
    grants
        .iter()
        .map(|grant| {
            let reach = text(grant, "reach");
            let targets: Vec<String> = ["projects", "groups"]
                .iter()
                .flat_map(|key| grant.get(*key).and_then(Value::as_array).cloned().unwrap_or_default())
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect();
            let permissions: Vec<String> = grant
                .get("permissions")
                .and_then(Value::as_object)
                .map(|map| {
                    map.iter()
                        .map(|(resource, actions)| {
                            let letters: String = actions
                                .as_array()
                                .map(|a| a.iter().filter_map(Value::as_str).filter_map(|s| s.chars().next()).collect())
                                .unwrap_or_default();
                            format!("{resource}:{letters}")
                        })
                        .collect()
                })
                .unwrap_or_default();
            let place = if targets.is_empty() { reach } else { format!("{reach}({})", targets.join(",")) };
            format!("{place}→{}", permissions.join(","))
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn table(rows: &[Vec<String>]) -> String {
    let columns = rows.first().map_or(0, Vec::len);
    let widths: Vec<usize> =
        (0..columns).map(|c| rows.iter().map(|row| row[c].chars().count()).max().unwrap_or(0)).collect();
    rows.iter()
        .map(|row| {
            row.iter()
                .zip(&widths)
                .map(|(cell, width)| format!("{cell:<width$}"))
                .collect::<Vec<_>>()
                .join("  ")
                .trim_end()
                .to_owned()
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The strings of the array `key` of `value`, comma-separated, or `-` when there are none.
fn listed(value: &Value, key: &str) -> String {
    let items: Vec<&str> = value
        .get(key)
        .and_then(Value::as_array)
        .map(|items| items.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    if items.is_empty() { "-".to_owned() } else { items.join(",") }
}

/// The tokens table; `flags` adds what a review should look at and the unused permissions.
fn token_rows(tokens: &[Value], flags: bool) -> String {
    let mut header = vec!["ID", "NAME", "USER", "KIND", "STATE", "EXPIRES", "LAST USED"];
    if flags {
        header.push("FLAGS");
    }
    header.push("PERMISSIONS");
    if flags {
        header.push("UNUSED");
    }
    let mut rows = vec![header.into_iter().map(String::from).collect::<Vec<_>>()];
    for token in tokens {
        let state = match token.get("blocked_reason").and_then(Value::as_str) {
            Some(reason) => format!("{}({reason})", text(token, "state")),
            None => text(token, "state"),
        };
        let mut row = vec![
            text(token, "id"),
            text(token, "name"),
            text(token, "user"),
            text(token, "kind"),
            state,
            text(token, "expires_at"),
            text(token, "last_used_at"),
        ];
        if flags {
            row.push(listed(token, "flags"));
        }
        row.push(summary(token));
        if flags {
            row.push(listed(token, "unused_permissions"));
        }
        rows.push(row);
    }
    table(&rows)
}

/// `text` percent-encoded for a query string.
fn encode(text: &str) -> String {
    text.bytes()
        .map(|byte| match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => char::from(byte).to_string(),
            _ => format!("%{byte:02X}"),
        })
        .collect()
}

/// A token id as the commands take it: a number, or `self`.
fn token_id(id: &str) -> anyhow::Result<&str> {
    if id == "self" || (!id.is_empty() && id.bytes().all(|byte| byte.is_ascii_digit())) {
        Ok(id)
    } else {
        bail!("`{id}` is not a token id (a number, or `self` for the token in PATGATE_TOKEN)")
    }
}

/// `patgate token list`: every page of the tokens table.
fn list(client: &Client, json: bool, args: &ListArgs) -> anyhow::Result<ExitCode> {
    let mut query = vec![format!("per_page={}", args.per_page)];
    let mut filter = |name: &str, value: Option<String>| {
        if let Some(value) = value.filter(|value| !value.is_empty()) {
            query.push(format!("{name}={}", encode(&value)));
        }
    };
    filter("user", args.user.clone());
    filter("state", Some(args.state.join(",")));
    filter("kind", args.kind.clone());
    filter("flag", Some(args.flag.join(",")));
    filter("search", args.search.clone());
    filter("sort", args.sort.clone());
    let query = query.join("&");
    let mut tokens: Vec<Value> = Vec::new();
    let mut page = 1;
    loop {
        let reply = client.send("GET", &format!("/api/v1/personal_access_tokens?{query}&page={page}"), None)?;
        let next = reply.next_page;
        let body = match reply.accepted() {
            Ok(body) => body,
            Err(code) => return Ok(code),
        };
        let Value::Array(batch) = body else {
            bail!("the server answered the tokens table with something other than a list")
        };
        tokens.extend(batch);
        match next {
            Some(next) if next > page => page = next,
            _ => break,
        }
    }
    // A token created or revoked between two pages can shift the rest by one.
    let mut seen = std::collections::HashSet::new();
    tokens.retain(|token| seen.insert(text(token, "id")));
    if json {
        out(&serde_json::to_string_pretty(&tokens)?);
    } else {
        out(&token_rows(&tokens, args.flags || !args.flag.is_empty()));
    }
    Ok(ExitCode::SUCCESS)
}

/// Where a boundary is, as `{kind, id, path}` says it: `project acme/api`, `instance`.
fn place(boundary: &Value) -> String {
    let kind = text(boundary, "kind");
    match boundary.get("path").and_then(Value::as_str) {
        Some(path) => format!("{kind} {path}"),
        None => match boundary.get("id").filter(|id| !id.is_null()) {
            Some(id) => format!("{kind} {id}"),
            None => kind,
        },
    }
}

/// A grant on one line: `selected (projects acme/api) issue:read, merge_request:read`.
fn grant_line(grant: &Value) -> String {
    let mut targets = Vec::new();
    for key in ["projects", "groups"] {
        let items: Vec<&str> = grant
            .get(key)
            .and_then(Value::as_array)
            .map(|items| items.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        if !items.is_empty() {
            targets.push(format!("{key} {}", items.join(", ")));
        }
    }
    let permissions: Vec<String> = grant
        .get("permissions")
        .and_then(Value::as_object)
        .map(|map| {
            map.iter()
                .flat_map(|(resource, actions)| {
                    actions
                        .as_array()
                        .map(|actions| {
                            actions
                                .iter()
                                .filter_map(Value::as_str)
                                .map(|action| format!("{resource}:{action}"))
                                .collect()
                        })
                        .unwrap_or_else(Vec::new)
                })
                .collect()
        })
        .unwrap_or_default();
    let reach = text(grant, "reach");
    let reach = if targets.is_empty() { reach } else { format!("{reach} ({})", targets.join("; ")) };
    format!("{reach}  {}", permissions.join(", "))
}

/// What a left-out reason means, for a person.
fn left_out_meaning(reason: &str) -> &'static str {
    match reason {
        "not_applicable" => "the permission does not exist at that kind of boundary",
        "gone" => "the project, group or user no longer exists, or the owner can no longer see it",
        "not_grantable" => "no grant the owner may hold carries it",
        "beyond_original" => "the token no longer reaches it, so granting it would widen the token",
        _ => "the server gave no other reason",
    }
}

/// `patgate token suggest`: what the token used, the narrowest grants that allow it, and
/// what they take away.
fn suggest(client: &Client, json: bool, id: &str) -> anyhow::Result<ExitCode> {
    let path = format!("/api/v1/personal_access_tokens/{}", token_id(id)?);
    let token = match client.send("GET", &path, None)?.accepted() {
        Ok(token) => token,
        Err(code) => return Ok(code),
    };
    let id = token.get("id").and_then(Value::as_u64).context("the server showed the token without its id")?;
    let path = format!("/api/v1/personal_access_tokens/{id}/suggestion");
    let suggestion = match client.send("GET", &path, None)?.accepted() {
        Ok(suggestion) => suggestion,
        Err(code) => return Ok(code),
    };
    if json {
        out(&serde_json::to_string_pretty(&suggestion)?);
        return Ok(ExitCode::SUCCESS);
    }
    let array = |key: &str| suggestion.get(key).and_then(Value::as_array).cloned().unwrap_or_default();
    out(&format!(
        "token {id} `{}` of {} ({}), used in the last {} days (since {}):",
        text(&token, "name"),
        text(&token, "user"),
        text(&suggestion, "kind"),
        text(&suggestion, "window_days"),
        text(&suggestion, "since"),
    ));
    let observed = array("observed");
    if observed.is_empty() {
        out("  nothing");
    } else {
        let mut rows = vec![["PERMISSION", "WHERE", "USES", "LAST USED"].map(String::from).to_vec()];
        for used in &observed {
            let boundary = used.get("boundary").cloned().unwrap_or_default();
            rows.push(vec![text(used, "permission"), place(&boundary), text(used, "uses"), text(used, "last_used_at")]);
        }
        out(&indent(&table(&rows)));
    }

    let grants = array("grants");
    out("\nSuggested grants:");
    if grants.is_empty() {
        out("  none");
    } else {
        for grant in &grants {
            out(&format!("  {}", grant_line(grant)));
        }
        let mut body = json!({ "name": text(&token, "name"), "grants": grants });
        if let Some(expires_at) = token.get("expires_at").filter(|value| value.is_string()) {
            body["expires_at"] = expires_at.clone();
        }
        let user = text(&token, "user");
        out(&format!(
            "  to create such a token, POST this to /api/v1/user/personal_access_tokens as {user} \
             (or to /api/v1/users/{user}/personal_access_tokens as an administrator):"
        ));
        out(&format!("  {}", serde_json::to_string(&body)?));
    }

    let removed = suggestion.get("removed").cloned().unwrap_or_default();
    let removed: Vec<String> = ["permissions", "reaches", "scopes"]
        .iter()
        .filter(|key| removed.get(**key).and_then(Value::as_array).is_some_and(|items| !items.is_empty()))
        .map(|key| format!("  {key:<12} {}", listed(&removed, key)))
        .collect();
    out("\nRemoved:");
    out(&if removed.is_empty() { "  nothing".to_owned() } else { removed.join("\n") });

    let left_out = array("left_out");
    if !left_out.is_empty() {
        out("\nLeft out (uses the suggestion cannot carry):");
        for left in &left_out {
            let boundary = left.get("boundary").cloned().unwrap_or_default();
            let reason = text(left, "reason");
            out(&format!(
                "  {} at {}: {reason} ({})",
                text(left, "permission"),
                place(&boundary),
                left_out_meaning(&reason)
            ));
        }
    }

    out(&format!("\n{}", text(&suggestion, "message")));
    if suggestion.get("narrower").and_then(Value::as_bool).unwrap_or(false) {
        out(&format!("`patgate token narrow {id}` replaces the token with the suggested grants."));
    }
    Ok(ExitCode::SUCCESS)
}

fn indent(text: &str) -> String {
    text.lines().map(|line| format!("  {line}")).collect::<Vec<_>>().join("\n")
}

/// `patgate token narrow`: replaces the token with its suggestion and prints the new one.
fn narrow(client: &Client, json: bool, id: &str) -> anyhow::Result<ExitCode> {
    let id = match token_id(id)? {
        // The narrow route has no `self` form: find the presented token's id first.
        "self" => match client.send("GET", "/api/v1/personal_access_tokens/self", None)?.accepted() {
            Ok(token) => text(&token, "id"),
            Err(code) => return Ok(code),
        },
        id => id.to_owned(),
    };
    let reply = client.send("POST", &format!("/api/v1/personal_access_tokens/{id}/narrow"), None)?;
    let token = match reply.accepted_with("token", "the new secret; the old token may be revoked already") {
        Ok(token) => token,
        Err(code) => return Ok(code),
    };
    if json {
        out(&serde_json::to_string_pretty(&token)?);
        return Ok(ExitCode::SUCCESS);
    }
    eprintln!(
        "token {id} is replaced by token {}; the old one is revoked (after the rotation grace period, if one is set)",
        text(&token, "id")
    );
    out(&token_rows(std::slice::from_ref(&token), false));
    out("\nGrants:");
    for grant in token.get("grants").and_then(Value::as_array).cloned().unwrap_or_default() {
        out(&format!("  {}", grant_line(&grant)));
    }
    secret(&token);
    Ok(ExitCode::SUCCESS)
}

/// The secret of a token just created, rotated or narrowed: shown this once.
fn secret(token: &Value) {
    if let Some(secret) = token.get("token").and_then(Value::as_str) {
        eprintln!("\nThe token, shown once; store it now:");
        out(secret);
    }
}

/// `patgate token …`.
pub fn token(connection: &Connection, command: TokenCommand) -> anyhow::Result<ExitCode> {
    let client = Client::new(connection);
    client.token()?;
    let reply = match &command {
        TokenCommand::List(args) => return list(&client, connection.json, args),
        TokenCommand::Suggest { id } => return suggest(&client, connection.json, id),
        TokenCommand::Narrow { id } => return narrow(&client, connection.json, id),
        TokenCommand::Create { name, expires_at, description, scopes, grants, allowed_ips, for_user } => {
            let mut body = json!({ "name": name, "description": description, "expires_at": expires_at, "allowed_ips": allowed_ips });
            match (scopes.is_empty(), grants.is_empty()) {
                (false, true) => body["scopes"] = json!(scopes),
                (true, false) => {
                    let parsed = grants
                        .iter()
                        .map(|grant| {
                            serde_json::from_str::<Value>(grant)
                                .with_context(|| format!("--grant is not JSON: {grant}"))
                        })
                        .collect::<anyhow::Result<Vec<_>>>()?;
                    body["grants"] = Value::Array(parsed);
                }
                _ => bail!("give --scope (legacy token) or --grant (fine-grained token), not both or neither"),
            }
            let path = match for_user {
                Some(user) => format!("/api/v1/users/{user}/personal_access_tokens"),
                None => "/api/v1/user/personal_access_tokens".to_owned(),
            };
            client.send("POST", &path, Some(body))?
        }
        TokenCommand::Show { id } => client.send("GET", &format!("/api/v1/personal_access_tokens/{id}"), None)?,
        TokenCommand::Rotate { id } => {
            client.send("POST", &format!("/api/v1/personal_access_tokens/{id}/rotate"), None)?
        }
        TokenCommand::Revoke { id } => client.send("DELETE", &format!("/api/v1/personal_access_tokens/{id}"), None)?,
    };
    let body = match &command {
        TokenCommand::Create { .. } => reply.accepted_with("token", "the new secret"),
        TokenCommand::Rotate { .. } => {
            reply.accepted_with("token", "the new secret; the old token may be revoked already")
        }
        _ => reply.accepted(),
    };
    let body = match body {
        Ok(body) => body,
        Err(code) => return Ok(code),
    };
    if connection.json {
        out(&serde_json::to_string_pretty(&body)?);
        return Ok(ExitCode::SUCCESS);
    }
    if let TokenCommand::Revoke { id } = command {
        out(&format!("token {id} revoked"));
    } else {
        out(&token_rows(std::slice::from_ref(&body), false));
        secret(&body);
    }
    Ok(ExitCode::SUCCESS)
}

/// `patgate decide`: explains what the server decides for the token in PATGATE_TOKEN.
pub fn decide(connection: &Connection, args: DecideArgs) -> anyhow::Result<ExitCode> {
    let client = Client::new(connection);
    let token = client.token()?.to_owned();
    let body = json!({ "token": token, "method": args.method, "path": args.path, "client_ip": args.client_ip });
    let unauthenticated = Client { token: None, ..client };
    let reply = unauthenticated.send("POST", "/api/v1/decide", Some(body))?;
    let body = match reply.accepted_with("allowed", "the verdict") {
        Ok(body) => body,
        Err(code) => return Ok(code),
    };
    let Some(allowed) = body.get("allowed").and_then(Value::as_bool) else {
        return Ok(unusable("the server's `allowed` is not true or false"));
    };
    if connection.json {
        out(&serde_json::to_string_pretty(&body)?);
    } else {
        let verdict = if allowed { "ALLOW".to_owned() } else { format!("DENY {}", text(&body, "status")) };
        out(&format!("{verdict} {}: {}", text(&body, "reason"), text(&body, "message")));
        if let Some(endpoint) = body.get("endpoint").and_then(Value::as_str) {
            out(&format!("  endpoint  {endpoint}"));
        }
        if let Some(boundary) = body.get("boundary") {
            out(&format!("  boundary  {} {}", text(boundary, "kind"), text(boundary, "path")));
        }
        if body.get("missing").is_some() {
            out(&format!("  missing   {} ({})", text(&body, "missing"), text(&body, "missing_label")));
        }
    }
    Ok(if allowed { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

/// `patgate admin …`.
pub fn admin(connection: &Connection, command: AdminCommand) -> anyhow::Result<ExitCode> {
    let client = Client::new(connection);
    client.token()?;
    let file = match command {
        AdminCommand::Import { file } => file,
        AdminCommand::Password { username } => return set_password(&client, &username),
    };
    let contents = std::fs::read_to_string(&file).with_context(|| format!("reading {}", file.display()))?;
    let body: Value = serde_json::from_str(&contents).with_context(|| format!("{} is not JSON", file.display()))?;
    let reply = client.send("POST", "/api/v1/admin/directory/import", Some(body))?;
    let body = match reply.accepted() {
        Ok(body) => body,
        Err(code) => return Ok(code),
    };
    if connection.json {
        out(&serde_json::to_string_pretty(&body)?);
    } else {
        out(&format!(
            "imported {} users, {} groups, {} projects, {} memberships",
            text(&body, "users"),
            text(&body, "groups"),
            text(&body, "projects"),
            text(&body, "memberships")
        ));
    }
    Ok(ExitCode::SUCCESS)
}

/// `patgate admin password USERNAME`: the new password is one line of standard input (a
/// pipe, or typed: it is not hidden), never an argument that other users could see.
fn set_password(client: &Client, username: &str) -> anyhow::Result<ExitCode> {
    use std::io::{BufRead, IsTerminal};
    if std::io::stdin().is_terminal() {
        eprint!("New password for {username} (shown as typed): ");
    }
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line).context("reading the password from standard input")?;
    let password = line.strip_suffix('\n').unwrap_or(&line);
    let password = password.strip_suffix('\r').unwrap_or(password);
    if password.is_empty() {
        bail!("no password on standard input");
    }
    let path = format!("/api/v1/admin/users/{}/password", encode(username));
    let reply = client.send("PUT", &path, Some(json!({ "password": password })))?;
    if reply.status >= 400 {
        return Ok(refused(&reply));
    }
    out(&format!("password of {username} set; their sessions have ended"));
    Ok(ExitCode::SUCCESS)
}

#[expect(clippy::print_stdout, reason = "the CLI's output is its result")]
fn out(text: &str) {
    println!("{text}");
}
