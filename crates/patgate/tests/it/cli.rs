//! The `patgate token` command line against a real `patgate serve --demo`: the tokens table
//! with its flags, the least-privilege suggestion, and narrowing a token to it.

use std::{process::Command, time::Duration};

use serde_json::{Value, json};

use crate::support::{API_ISSUES, Patgate, TempDir, date_in, poll};

/// The merge requests of the project of [`API_ISSUES`].
const API_MERGE_REQUESTS: &str = "/api/v4/projects/acme%2Fplatform%2Fapi/merge_requests";

/// How long the server may take to flush recorded usage (every 5 seconds).
const FLUSH_TIMEOUT: Duration = Duration::from_secs(30);

/// What a `patgate` run left behind.
#[derive(Debug)]
struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

/// Runs `patgate ARGS…` against `server` with `token` in PATGATE_TOKEN.
fn patgate(server: &Patgate, token: &str, args: &[&str]) -> Run {
    let output = Command::new(env!("CARGO_BIN_EXE_patgate"))
        .args(args)
        .env("PATGATE_URL", format!("http://{}", server.addr))
        .env("PATGATE_TOKEN", token)
        .output()
        .unwrap_or_else(|error| panic!("running patgate {args:?}: {error}"));
    Run {
        code: output.status.code(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// The line of a `token list` table whose ID column is `id`.
fn row(table: &str, id: u64) -> &str {
    table
        .lines()
        .find(|line| line.split_whitespace().next() == Some(id.to_string().as_str()))
        .unwrap_or_else(|| panic!("no row for token {id} in\n{table}"))
}

/// The lines of `text` after the line `heading` up to the next blank line.
fn section<'a>(text: &'a str, heading: &str) -> Vec<&'a str> {
    text.lines().skip_while(|line| *line != heading).skip(1).take_while(|line| !line.trim().is_empty()).collect()
}

#[test]
fn token_list_suggest_and_narrow_from_the_command_line() {
    let dir = TempDir::new("cli");
    let (server, admin_token) = Patgate::demo("patgate", dir.path());
    let admin = [("PRIVATE-TOKEN", admin_token.as_str())];

    // A token for bob like his demo one (whose secret only the server's stderr knows).
    let body = json!({
        "name": "bob review",
        "expires_at": date_in(60),
        "grants": [{ "reach": "all_memberships", "permissions": { "issue": ["read"], "merge_request": ["read"] } }],
    });
    let created = server.post("/api/v1/users/bob/personal_access_tokens", &admin, &body);
    assert_eq!(created.status, 201, "{}", created.text());
    let created = created.json();
    let id = created["id"].as_u64().unwrap();
    let bob = created["token"].as_str().unwrap().to_owned();

    // Used for issues only, then flushed: merge_request:read is granted but unused.
    let decision = server.decide(&bob, "GET", API_ISSUES);
    assert_eq!(decision["allowed"], true, "{decision}");
    let flushed = poll(Duration::from_millis(100), FLUSH_TIMEOUT, || {
        let shown = server.get(&format!("/api/v1/personal_access_tokens/{id}"), &admin).json();
        let flags = shown["flags"].as_array().cloned().unwrap_or_default();
        flags.contains(&json!("unused_permissions")).then_some(shown)
    });
    assert!(flushed.is_some(), "the use was not flushed within {FLUSH_TIMEOUT:?}");

    // The tokens table with its flags, as an administrator looking at bob's tokens.
    let listed = patgate(&server, &admin_token, &["token", "list", "--flags", "--user", "bob"]);
    assert_eq!(listed.code, Some(0), "{listed:?}");
    let header = listed.stdout.lines().next().unwrap();
    assert!(header.contains("FLAGS") && header.contains("UNUSED"), "{header}");
    let ours = row(&listed.stdout, id);
    assert!(ours.contains("unused_permissions"), "{ours}");
    assert!(ours.contains("merge_request:read"), "{ours}");
    assert!(!ours.contains("issue:read"), "issue:read was used: {ours}");
    assert!(!listed.stdout.contains(&bob), "the list printed a secret");
    // Without --flags the table has no such columns.
    let plain = patgate(&server, &admin_token, &["token", "list", "--user", "bob"]);
    assert_eq!(plain.code, Some(0), "{plain:?}");
    assert!(!plain.stdout.contains("FLAGS") && !plain.stdout.contains("unused_permissions"), "{}", plain.stdout);

    // The filters reach the server; one token per page still lists every token.
    let filtered =
        patgate(&server, &admin_token, &["token", "list", "--json", "--user", "bob", "--flag", "unused_permissions"]);
    assert_eq!(filtered.code, Some(0), "{filtered:?}");
    let filtered: Value = serde_json::from_str(&filtered.stdout).unwrap();
    let ids: Vec<u64> = filtered.as_array().unwrap().iter().filter_map(|token| token["id"].as_u64()).collect();
    assert_eq!(ids, [id], "only the used token has unused permissions");
    let paged = patgate(
        &server,
        &admin_token,
        &["token", "list", "--json", "--user", "bob", "--per-page", "1", "--sort", "-id"],
    );
    assert_eq!(paged.code, Some(0), "{paged:?}");
    let paged: Value = serde_json::from_str(&paged.stdout).unwrap();
    let paged: Vec<u64> = paged.as_array().unwrap().iter().filter_map(|token| token["id"].as_u64()).collect();
    assert!(paged.len() >= 2 && paged[0] == id, "bob's demo token and ours, newest first: {paged:?}");
    assert!(paged.windows(2).all(|pair| pair[0] > pair[1]), "{paged:?}");
    let bad = patgate(&server, &admin_token, &["token", "list", "--flag", "bogus"]);
    assert_eq!(bad.code, Some(1), "{bad:?}");
    assert!(bad.stderr.contains("`bogus` is not one of"), "{}", bad.stderr);

    // The suggestion: what was used where, and what narrowing takes away.
    let suggested = patgate(&server, &admin_token, &["token", "suggest", &id.to_string()]);
    assert_eq!(suggested.code, Some(0), "{suggested:?}");
    let text = &suggested.stdout;
    let observed = text.lines().find(|line| line.trim_start().starts_with("issue:read")).unwrap_or_default();
    assert!(observed.contains("project acme/platform/api"), "{text}");
    let grants = section(text, "Suggested grants:");
    assert!(grants.iter().any(|line| line.contains("acme/platform/api") && line.contains("issue:read")), "{text}");
    let body: Value = grants.iter().find_map(|line| serde_json::from_str(line.trim()).ok()).unwrap();
    assert_eq!(
        body["grants"],
        json!([{ "reach": "selected", "projects": ["acme/platform/api"], "permissions": { "issue": ["read"] } }])
    );
    let removed = section(text, "Removed:").join("\n");
    assert!(removed.contains("merge_request:read") && removed.contains("all_memberships"), "{text}");
    assert!(!removed.contains("issue:read"), "{text}");
    assert!(text.contains("keeps everything it did"), "the server's message: {text}");
    // The printed body really creates such a token.
    let again = server.post("/api/v1/users/bob/personal_access_tokens", &admin, &body);
    assert_eq!(again.status, 201, "{}", again.text());

    // Narrowing: a new token, printed once, that does what bob did and nothing more.
    let narrowed = patgate(&server, &admin_token, &["token", "narrow", &id.to_string()]);
    assert_eq!(narrowed.code, Some(0), "{narrowed:?}");
    let new_secret = narrowed.stdout.lines().last().unwrap().trim().to_owned();
    assert_ne!(new_secret, bob);
    assert!(narrowed.stdout.contains("selected (projects acme/platform/api)  issue:read"), "{}", narrowed.stdout);
    assert!(!narrowed.stdout.contains(&bob) && !narrowed.stdout.contains(&admin_token), "an old secret was printed");
    let decision = server.decide(&new_secret, "GET", API_ISSUES);
    assert_eq!(decision["allowed"], true, "{decision}");
    let new_id = decision["token_id"].as_u64().unwrap();
    assert_ne!(new_id, id);
    assert!(row(&narrowed.stdout, new_id).contains("selected(acme/platform/api)"), "{}", narrowed.stdout);
    let decision = server.decide(&new_secret, "GET", API_MERGE_REQUESTS);
    assert_eq!(decision["allowed"], false, "{decision}");

    // The new token has nothing to narrow: the server refuses, and says why.
    let message = server.get(&format!("/api/v1/personal_access_tokens/{new_id}/suggestion"), &admin).json()["message"]
        .as_str()
        .unwrap()
        .to_owned();
    let refused = patgate(&server, &admin_token, &["token", "narrow", &new_id.to_string()]);
    assert_eq!(refused.code, Some(1), "{refused:?}");
    assert!(refused.stderr.contains("409") && refused.stderr.contains(&message), "{}", refused.stderr);
    assert!(refused.stdout.is_empty(), "{}", refused.stdout);

    // Ids are checked before anything is sent.
    let unknown = patgate(&server, &admin_token, &["token", "suggest", "abc"]);
    assert_eq!(unknown.code, Some(2), "{unknown:?}");
    assert!(unknown.stderr.contains("`abc` is not a token id"), "{}", unknown.stderr);
}

/// `patgate admin password USERNAME` with `input` on standard input.
fn set_password(server: &Patgate, token: &str, username: &str, input: &str) -> Run {
    use std::io::Write;
    let mut child = Command::new(env!("CARGO_BIN_EXE_patgate"))
        .args(["admin", "password", username])
        .env("PATGATE_URL", format!("http://{}", server.addr))
        .env("PATGATE_TOKEN", token)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
    let output = child.wait_with_output().unwrap();
    Run {
        code: output.status.code(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// The status of `POST /api/v1/session` for `username` and `password`.
fn sign_in(server: &Patgate, username: &str, password: &str) -> u16 {
    server.post("/api/v1/session", &[], &json!({ "username": username, "password": password })).status
}

#[test]
fn the_demo_prints_a_password_once_and_an_admin_sets_one_from_standard_input() {
    let dir = TempDir::new("password");
    let (server, admin_token) = Patgate::demo("patgate", dir.path());

    // A random demo password, printed once on stderr, opens the demo users' accounts.
    let log = server.log();
    let announced = log.iter().position(|line| line.contains("sign in to the web UI with the password")).unwrap();
    assert!(log[announced].contains("alice") && log[announced].contains("admin"), "{}", log[announced]);
    let password = log[announced + 1..].iter().map(|line| line.trim()).find(|line| !line.is_empty()).unwrap();
    assert_eq!(password.len(), 19, "{password}");
    assert_eq!(sign_in(&server, "alice", password), 200);
    assert_eq!(sign_in(&server, "admin", password), 200);
    assert_eq!(sign_in(&server, "mallory", password), 401, "blocked");
    assert_eq!(sign_in(&server, "alice", "a password nobody chose"), 401);

    // An administrator sets alice's password; it is read from standard input, one line.
    let set = set_password(&server, &admin_token, "alice", "a new password for alice\n");
    assert_eq!(set.code, Some(0), "{set:?}");
    assert!(set.stdout.contains("password of alice set"), "{}", set.stdout);
    assert!(!set.stdout.contains("a new password") && !set.stderr.contains("a new password"), "{set:?}");
    assert_eq!(sign_in(&server, "alice", password), 401);
    assert_eq!(sign_in(&server, "alice", "a new password for alice"), 200);
    // The server's rules, named; nothing read means nothing sent.
    let short = set_password(&server, &admin_token, "alice", "too short\r\n");
    assert_eq!(short.code, Some(1), "{short:?}");
    assert!(short.stderr.contains("422 invalid_password") && short.stderr.contains("12 characters"), "{short:?}");
    let empty = set_password(&server, &admin_token, "alice", "");
    assert_eq!(empty.code, Some(2), "{empty:?}");
    assert_eq!(sign_in(&server, "alice", "a new password for alice"), 200);
    // Nothing of the passwords reached the server's log.
    let log = server.log().join("\n");
    assert!(!log.contains("a new password for alice") && !log.contains("argon2"), "{log}");
}
