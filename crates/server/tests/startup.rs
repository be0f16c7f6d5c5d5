//! The `switchboard` binary as an operator meets it: bad configuration stops it
//! with the variable named, a good one serves, answers readiness, logs JSON with
//! request ids, and exits cleanly on SIGTERM; `token` mints verifiable tokens.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use switchboard_testkit::{JWT_SECRET, env};

const BIN: &str = env!("CARGO_BIN_EXE_switchboard");

fn bare() -> Command {
    let mut cmd = Command::new(BIN);
    cmd.env_clear().env("PATH", std::env::var("PATH").unwrap_or_default());
    cmd
}

fn serve_with(vars: &[(&str, &str)]) -> (bool, String) {
    let out = bare().arg("serve").envs(vars.iter().copied()).output().unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn serve_refuses_to_start_without_database_url_and_names_it() {
    let (ok, err) = serve_with(&[("JWT_SECRET", JWT_SECRET)]);
    assert!(!ok);
    assert!(err.lines().any(|l| l.trim_start().starts_with("DATABASE_URL:")), "{err}");
}

#[test]
fn serve_refuses_an_unparsable_port_and_names_it() {
    let (ok, err) =
        serve_with(&[("DATABASE_URL", &env("DATABASE_URL")), ("JWT_SECRET", JWT_SECRET), ("PORT", "80a")]);
    assert!(!ok);
    assert!(err.lines().any(|l| l.trim_start().starts_with("PORT: `80a`")), "{err}");
}

#[test]
fn serve_refuses_to_start_with_neither_jwt_setting() {
    let (ok, err) = serve_with(&[("DATABASE_URL", &env("DATABASE_URL"))]);
    assert!(!ok);
    assert!(err.lines().any(|l| l.contains("JWT_SECRET or JWT_JWKS_URL")), "{err}");
}

#[test]
fn every_problem_gets_its_own_line_and_no_secret_is_echoed() {
    let (ok, err) = serve_with(&[
        ("PORT", "-1"),
        ("DATABASE_URL", "mysql://root:hunter2@db/x"),
        ("JWT_SECRET", "tiny"),
        ("REDIS_URL", "http://secretpass@r"),
    ]);
    assert!(!ok);
    for var in ["PORT:", "DATABASE_URL:", "JWT_SECRET:", "REDIS_URL:"] {
        assert_eq!(err.lines().filter(|l| l.trim_start().starts_with(var)).count(), 1, "{var} in {err}");
    }
    for secret in ["hunter2", "tiny", "secretpass"] {
        assert!(!err.contains(secret), "{secret} leaked: {err}");
    }
}

#[test]
fn serve_refuses_a_database_role_that_owns_the_tables() {
    let (ok, err) = serve_with(&[("DATABASE_URL", &env("DATABASE_ADMIN_URL")), ("JWT_SECRET", JWT_SECRET)]);
    assert!(!ok);
    assert!(err.contains("owns tables"), "{err}");
    assert!(!err.contains("switchboard_owner_dev"), "password leaked: {err}");
}

#[test]
fn serve_answers_ready_logs_request_ids_and_stops_on_sigterm() {
    let mut child = bare()
        .arg("serve")
        .envs([
            ("DATABASE_URL", env("DATABASE_URL")),
            ("REDIS_URL", env("REDIS_URL")),
            ("JWT_SECRET", JWT_SECRET.to_owned()),
            ("PORT", "0".to_owned()),
            ("NODE_ID", "startup-test".to_owned()),
        ])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let addr = loop {
        let line = lines.next().expect("the server exited before serving").unwrap();
        let v: serde_json::Value = serde_json::from_str(&line).unwrap_or_else(|_| panic!("not JSON: {line}"));
        if v["fields"]["message"] == "serving" {
            let addr = v["fields"]["addr"].as_str().unwrap().to_owned();
            break addr.trim_start_matches("Some(").trim_end_matches(')').to_owned();
        }
    };
    let ready = http_get(&addr, "/health/ready", "req-42");
    assert!(ready.starts_with("HTTP/1.1 200"), "{ready}");
    assert!(ready.contains("\"postgres\":\"ok\"") && ready.contains("\"redis\":\"ok\""), "{ready}");
    assert!(ready.to_lowercase().contains("x-request-id: req-42"), "{ready}");

    let pid = child.id().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut saw_request_line = false;
    for line in lines.map_while(Result::ok) {
        let v: serde_json::Value = serde_json::from_str(&line).unwrap_or_else(|_| panic!("not JSON: {line}"));
        if v["span"]["request_id"] == "req-42" && v["fields"]["message"] == "request done" {
            saw_request_line = true;
        }
        assert!(Instant::now() < deadline, "the server did not stop");
    }
    let status = child.wait().unwrap();
    assert!(status.success(), "exit status after SIGTERM: {status}");
    assert!(saw_request_line, "no log line of the request carried its request id");
}

fn http_get(addr: &str, path: &str, request_id: &str) -> String {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: x\r\nx-request-id: {request_id}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    stream.read_to_string(&mut out).unwrap();
    out
}

#[tokio::test]
async fn token_prints_a_token_that_the_server_verifies() {
    let tenant = "5b0a0000-0000-4000-8000-000000000001";
    let out = bare()
        .args(["token", "--tenant", tenant, "--role", "admin", "--ttl", "15m"])
        .env("JWT_SECRET", JWT_SECRET)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let token = String::from_utf8(out.stdout).unwrap();
    let verifier = switchboard_auth::Verifier::new(&switchboard_auth::JwtConfig {
        secret: Some(JWT_SECRET.to_owned().into()),
        jwks_url: None,
        issuer: None,
        audience: None,
    });
    let principal = verifier.verify(token.trim()).await.unwrap();
    assert_eq!(principal.tenant_id().map(|t| t.to_string()).as_deref(), Some(tenant));
    assert_eq!(principal.role(), Some(switchboard_domain::Role::Admin));

    let out = bare().args(["token", "--tenant", tenant]).output().unwrap();
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("JWT_SECRET"));
    let out = bare().args(["token", "--tenant", "nope"]).env("JWT_SECRET", JWT_SECRET).output().unwrap();
    assert!(!out.status.success());
    let out = bare()
        .args(["token", "--tenant", tenant, "--role", "god"])
        .env("JWT_SECRET", JWT_SECRET)
        .output()
        .unwrap();
    assert!(!out.status.success());
}
