//! The command line against a stub server that answers 2xx with something unusable (an
//! HTML page from a proxy, JSON without what the command needs): exit code 2 (a server
//! error), never 0 or 1, and nothing printed as if it had worked.

use std::{
    io::{BufRead, BufReader, Read, Write},
    net::{SocketAddr, TcpListener},
    process::Command,
};

/// A server on 127.0.0.1 answering every request with `status` and `body`.
fn stub(status: &str, content_type: &str, body: &str) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let answer = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut length = 0;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                if let Some((name, value)) = line.split_once(':')
                    && name.eq_ignore_ascii_case("content-length")
                {
                    length = value.trim().parse().unwrap_or(0);
                }
            }
            let mut body = vec![0; length];
            let _ = reader.read_exact(&mut body);
            let _ = stream.write_all(answer.as_bytes());
        }
    });
    addr
}

/// `patgate ARGS…` against `addr`: the exit code and stdout.
fn run(addr: SocketAddr, args: &[&str]) -> (Option<i32>, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_patgate"))
        .args(args)
        .env("PATGATE_URL", format!("http://{addr}"))
        .env("PATGATE_TOKEN", "pgpat-stub")
        .output()
        .unwrap();
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

const CREATE: &[&str] = &["token", "create", "--name", "ci", "--scope", "read_api", "--expires-at", "2030-01-01"];
const ROTATE: &[&str] = &["token", "rotate", "5"];
const NARROW: &[&str] = &["token", "narrow", "5"];
const DECIDE: &[&str] = &["decide", "/api/v4/user"];

#[test]
fn a_success_the_command_cannot_use_exits_2() {
    let html = stub("200 OK", "text/html", "<html><body>proxy login</body></html>");
    let no_token = stub("201 Created", "application/json", r#"{"id": 6, "name": "ci", "kind": "legacy"}"#);
    let no_verdict = stub("200 OK", "application/json", r#"{"status": 200, "reason": "allowed"}"#);
    for (addr, args) in [
        (html, DECIDE),
        (html, ROTATE),
        (html, CREATE),
        (html, NARROW),
        (no_verdict, DECIDE),
        (no_token, ROTATE),
        (no_token, CREATE),
        (no_token, NARROW),
    ] {
        let (code, stdout, stderr) = run(addr, args);
        assert_eq!(code, Some(2), "{args:?}: stdout {stdout:?} stderr {stderr:?}");
        assert!(stdout.is_empty(), "{args:?}: {stdout}");
    }
}

#[test]
fn a_decision_the_server_gives_still_exits_0_or_1() {
    let allowed =
        stub("200 OK", "application/json", r#"{"allowed": true, "status": 200, "reason": "allowed", "message": "ok"}"#);
    let denied = stub(
        "200 OK",
        "application/json",
        r#"{"allowed": false, "status": 403, "reason": "outside_reach", "message": "no"}"#,
    );
    assert_eq!(run(allowed, DECIDE).0, Some(0));
    assert_eq!(run(denied, DECIDE).0, Some(1));
    let rotated =
        stub("200 OK", "application/json", r#"{"id": 6, "name": "ci", "kind": "legacy", "token": "pgpat-new"}"#);
    let (code, stdout, _) = run(rotated, ROTATE);
    assert_eq!(code, Some(0));
    assert!(stdout.contains("pgpat-new"), "{stdout}");
}
