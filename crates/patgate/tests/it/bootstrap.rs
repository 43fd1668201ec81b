//! The first admin token of `patgate serve`: written in one transaction with its user, to a
//! `--bootstrap-token-file` prepared before the commit, and made again at start when no
//! administrator can manage the instance any more.

use std::{
    path::Path,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use crate::support::{Patgate, TempDir};

/// How long a start that should fail may take to exit.
const EXIT_TIMEOUT: Duration = Duration::from_secs(60);

/// `patgate serve` in `dir` that must exit without serving: its exit code and stderr.
fn serve_failing(dir: &Path, args: &[&str]) -> (Option<i32>, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_patgate"))
        .args(["serve", "--listen", "127.0.0.1:0", "--database-url", "sqlite://patgate.db"])
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > EXIT_TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            panic!("patgate serve {args:?} did not exit within {EXIT_TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    (status.code(), stderr)
}

/// The admin token a start printed (the line after "… (shown once):"), if it printed one.
fn printed_token(server: &Patgate) -> Option<String> {
    let log = server.log();
    let at = log
        .iter()
        .position(|line| line.starts_with("patgate:") && line.contains("`admin`") && line.ends_with("(shown once):"))?;
    log[at + 1..].iter().map(|line| line.trim()).find(|line| !line.is_empty()).map(str::to_owned)
}

/// Whether `token` is a live token the server authenticates.
fn works(server: &Patgate, token: &str) -> bool {
    server.get("/api/v1/personal_access_tokens/self", &[("PRIVATE-TOKEN", token)]).status == 200
}

#[test]
fn a_bootstrap_token_file_that_exists_already_is_replaced_only_its_owner_can_read() {
    let dir = TempDir::new("bootstrap-exists");
    let file = dir.path().join("admin.token");
    std::fs::write(&file, "placeholder\n").unwrap();
    let path = file.to_str().unwrap();
    let server = Patgate::start(
        "patgate",
        dir.path(),
        &["--database-url", "sqlite://patgate.db", "--bootstrap-token-file", path],
    );
    let token = std::fs::read_to_string(&file).unwrap().trim().to_owned();
    assert_ne!(token, "placeholder");
    assert!(works(&server, &token), "the token in {path} does not work");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&file).unwrap().permissions().mode() & 0o777, 0o600);
    }
    // Nothing but the token file is left beside it.
    let names: Vec<String> =
        std::fs::read_dir(dir.path()).unwrap().map(|entry| entry.unwrap().file_name().into_string().unwrap()).collect();
    assert!(names.iter().all(|name| !name.contains(".tmp")), "{names:?}");
}

#[test]
fn a_token_file_that_cannot_be_written_commits_nothing_and_the_next_start_bootstraps() {
    let dir = TempDir::new("bootstrap-unwritable");
    let missing = dir.path().join("no-such-directory").join("admin.token");
    let (code, stderr) = serve_failing(dir.path(), &["--bootstrap-token-file", missing.to_str().unwrap()]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("admin.token"), "the error names the file: {stderr}");

    let server = Patgate::start("patgate", dir.path(), &["--database-url", "sqlite://patgate.db"]);
    let token = printed_token(&server).expect("the next start prints an admin token");
    assert!(works(&server, &token));
}

#[test]
fn an_instance_whose_admin_tokens_are_all_revoked_is_bootstrapped_again_at_start() {
    let dir = TempDir::new("bootstrap-locked-out");
    // Not --demo: that gives `admin` a web UI password, with which an administrator can
    // still sign in and make tokens.
    let mut server = Patgate::start("patgate", dir.path(), &["--database-url", "sqlite://patgate.db"]);
    let admin = printed_token(&server).expect("the first start prints an admin token");
    let own = server.get("/api/v1/personal_access_tokens/self", &[("PRIVATE-TOKEN", admin.as_str())]).json();
    let id = own["id"].as_u64().unwrap();
    let revoked = server.delete(&format!("/api/v1/personal_access_tokens/{id}"), &[("PRIVATE-TOKEN", admin.as_str())]);
    assert_eq!(revoked.status, 204, "{}", revoked.text());
    assert!(!works(&server, &admin));
    assert!(server.terminate());

    // No administrator can manage the instance: the next start makes `admin` a new token.
    let mut server = Patgate::start("patgate", dir.path(), &["--database-url", "sqlite://patgate.db"]);
    let token = printed_token(&server).expect("a start without admin access prints a new admin token");
    assert!(works(&server, &token));
    let users = server.get("/api/v1/personal_access_tokens?user=*", &[("PRIVATE-TOKEN", token.as_str())]);
    assert_eq!(users.status, 200, "the new token administers: {}", users.text());
    assert!(server.terminate());

    // Once one can, a start makes none.
    let server = Patgate::start("patgate", dir.path(), &["--database-url", "sqlite://patgate.db"]);
    assert_eq!(printed_token(&server), None, "{:?}", server.log());
}
