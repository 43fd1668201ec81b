//! Client commands against a running patgate: tokens, decisions, directory import.
//!
//! Exit codes: 0 success (or an allowed decision), 1 the server refused (or a denied
//! decision), 2 a usage, connection or server error.

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
    List {
        #[arg(long)]
        user: Option<String>,
    },
    /// Show one token (`self` for the one you are using).
    Show { id: String },
    /// Rotate a token (`self` for the one you are using); prints the new secret once.
    Rotate { id: String },
    /// Revoke a token.
    Revoke { id: String },
}

#[derive(Debug, clap::Subcommand)]
pub enum AdminCommand {
    /// Import users, groups, projects and memberships from a JSON file (idempotent).
    Import { file: PathBuf },
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
            _ => bail!("unsupported method {method}"),
        }
        .with_context(|| format!("cannot reach {}", self.url))?;
        let status = response.status().as_u16();
        let text = response.body_mut().read_to_string().unwrap_or_default();
        let body =
            if text.is_empty() { Value::Null } else { serde_json::from_str(&text).unwrap_or(Value::String(text)) };
        Ok(Reply { status, body })
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

fn token_rows(tokens: &[Value]) -> String {
    let mut rows =
        vec![["ID", "NAME", "USER", "KIND", "STATE", "EXPIRES", "LAST USED", "PERMISSIONS"].map(String::from).to_vec()];
    for token in tokens {
        rows.push(vec![
            text(token, "id"),
            text(token, "name"),
            text(token, "user"),
            text(token, "kind"),
            text(token, "state"),
            text(token, "expires_at"),
            text(token, "last_used_at"),
            summary(token),
        ]);
    }
    table(&rows)
}

/// `patgate token …`.
pub fn token(connection: &Connection, command: TokenCommand) -> anyhow::Result<ExitCode> {
    let client = Client::new(connection);
    client.token()?;
    let reply = match &command {
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
        TokenCommand::List { user } => {
            let query = user.as_ref().map(|u| format!("?user={u}")).unwrap_or_default();
            client.send("GET", &format!("/api/v1/personal_access_tokens{query}"), None)?
        }
        TokenCommand::Show { id } => client.send("GET", &format!("/api/v1/personal_access_tokens/{id}"), None)?,
        TokenCommand::Rotate { id } => {
            client.send("POST", &format!("/api/v1/personal_access_tokens/{id}/rotate"), None)?
        }
        TokenCommand::Revoke { id } => client.send("DELETE", &format!("/api/v1/personal_access_tokens/{id}"), None)?,
    };
    if reply.status >= 400 {
        return Ok(refused(&reply));
    }
    if connection.json {
        out(&serde_json::to_string_pretty(&reply.body)?);
        return Ok(ExitCode::SUCCESS);
    }
    match command {
        TokenCommand::List { .. } => out(&token_rows(reply.body.as_array().map(Vec::as_slice).unwrap_or_default())),
        TokenCommand::Revoke { id } => out(&format!("token {id} revoked")),
        _ => {
            out(&token_rows(std::slice::from_ref(&reply.body)));
            if let Some(secret) = reply.body.get("token").and_then(Value::as_str) {
                eprintln!("\nThe token, shown once; store it now:");
                out(secret);
            }
        }
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
    if reply.status >= 400 {
        return Ok(refused(&reply));
    }
    let allowed = reply.body.get("allowed").and_then(Value::as_bool).unwrap_or(false);
    if connection.json {
        out(&serde_json::to_string_pretty(&reply.body)?);
    } else {
        let verdict = if allowed { "ALLOW".to_owned() } else { format!("DENY {}", text(&reply.body, "status")) };
        out(&format!("{verdict} {}: {}", text(&reply.body, "reason"), text(&reply.body, "message")));
        if let Some(endpoint) = reply.body.get("endpoint").and_then(Value::as_str) {
            out(&format!("  endpoint  {endpoint}"));
        }
        if let Some(boundary) = reply.body.get("boundary") {
            out(&format!("  boundary  {} {}", text(boundary, "kind"), text(boundary, "path")));
        }
        if reply.body.get("missing").is_some() {
            out(&format!("  missing   {} ({})", text(&reply.body, "missing"), text(&reply.body, "missing_label")));
        }
    }
    Ok(if allowed { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

/// `patgate admin …`.
pub fn admin(connection: &Connection, command: AdminCommand) -> anyhow::Result<ExitCode> {
    let client = Client::new(connection);
    client.token()?;
    let AdminCommand::Import { file } = command;
    let contents = std::fs::read_to_string(&file).with_context(|| format!("reading {}", file.display()))?;
    let body: Value = serde_json::from_str(&contents).with_context(|| format!("{} is not JSON", file.display()))?;
    let reply = client.send("POST", "/api/v1/admin/directory/import", Some(body))?;
    if reply.status >= 400 {
        return Ok(refused(&reply));
    }
    if connection.json {
        out(&serde_json::to_string_pretty(&reply.body)?);
    } else {
        out(&format!(
            "imported {} users, {} groups, {} projects, {} memberships",
            text(&reply.body, "users"),
            text(&reply.body, "groups"),
            text(&reply.body, "projects"),
            text(&reply.body, "memberships")
        ));
    }
    Ok(ExitCode::SUCCESS)
}

#[expect(clippy::print_stdout, reason = "the CLI's output is its result")]
fn out(text: &str) {
    println!("{text}");
}
