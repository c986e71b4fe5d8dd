//! The administrator: login, tokens, throttling, the generated first password
//! and `astrbot admin password`.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use crate::support::{ADMIN_PASSWORD, BIN, Server, TempDir, bearer, cli};

fn login(s: &Server, password: &str) -> crate::support::Resp {
    s.post("/api/auth/login", &[], &format!(r#"{{"username":"astrbot","password":"{password}"}}"#))
}

#[test]
fn login_gives_an_admin_token() {
    let s = Server::start();
    let r = login(&s, ADMIN_PASSWORD);
    s.expect(&r, 200);
    let d = &r.json()["data"];
    let token = d["token"].as_str().unwrap().to_owned();
    assert!(token.starts_with("abt_") && token.len() == 47);
    assert_eq!(d["username"], "astrbot");
    assert!(d["expires_at"].as_str().unwrap().ends_with("+00:00"));
    s.expect(&s.get("/api/v1/api-keys", &[("Authorization", &bearer(&token))]), 200);
}

#[test]
fn logout_ends_the_token() {
    let s = Server::start();
    let token = s.admin_token();
    s.expect(&s.post("/api/auth/logout", &[("Authorization", &bearer(&token))], ""), 200);
    s.expect_error(&s.get("/api/v1/api-keys", &[("Authorization", &bearer(&token))]), 401, "Invalid token");
}

#[test]
fn the_log_shows_neither_the_token_nor_the_password() {
    let s = Server::start();
    let token = s.admin_token();
    s.expect(&s.get("/api/v1/api-keys", &[("Authorization", &bearer(&token))]), 200);
    s.expect(&s.post("/api/auth/logout", &[("Authorization", &bearer(&token))], ""), 200);
    assert!(!s.log().contains(&token), "the log must not contain tokens");
    assert!(!s.log().contains(ADMIN_PASSWORD), "the log must not contain the password");
}

#[test]
fn wrong_passwords_are_refused_then_throttled() {
    let s = Server::start();
    s.expect_error(&login(&s, "wrong"), 401, "Invalid username or password");
    let r = s.post("/api/auth/login", &[], r#"{"username":"nobody","password":"x"}"#);
    s.expect_error(&r, 401, "Invalid username or password");
    for _ in 0..3 {
        s.expect(&login(&s, "wrong"), 401);
    }
    let r = login(&s, ADMIN_PASSWORD);
    s.expect_error(&r, 429, "验证尝试过于频繁，系统可能正在遭受暴力破解");
    assert!(r.header("Retry-After").is_some());
    s.expect_error(
        &s.post("/api/auth/login", &[], r#"{"username":1}"#),
        429,
        "验证尝试过于频繁，系统可能正在遭受暴力破解",
    );
}

#[test]
fn first_start_without_a_password_prints_a_generated_one_once() {
    let data = TempDir::new();
    let mut child = Command::new(BIN)
        .args(["serve", "--listen", "127.0.0.1:0", "--data"])
        .arg(data.path())
        .env_clear()
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut password = None;
    let mut line = String::new();
    while stderr.read_line(&mut line).unwrap() > 0 {
        if let Some(rest) = line.strip_prefix("admin password for \"astrbot\": ") {
            password = Some(rest.split_whitespace().next().unwrap().to_owned());
            break;
        }
        line.clear();
    }
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut first = String::new();
    stdout.read_line(&mut first).unwrap();
    let addr = first.trim().strip_prefix("listening on http://").unwrap().parse().unwrap();
    let password = password.expect("a generated password is printed");
    let body = format!(r#"{{"username":"astrbot","password":"{password}"}}"#);
    let r = crate::support::http(addr, "POST", "/api/auth/login", &[], Some(body.as_bytes()));
    assert_eq!(r.status, 200, "{}", r.text());
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn admin_password_command_changes_it_while_the_server_runs() {
    let s = Server::start();
    let old_token = s.admin_token();
    let (code, _, err) = cli(s.data.path(), &["admin", "password"], Some("short\n"));
    assert_ne!(code, 0);
    assert!(err.contains("at least 8"), "{err}");
    let (code, out, err) = cli(s.data.path(), &["admin", "password"], Some("a-new-password-1\n"));
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("astrbot"));
    s.expect(&s.get("/api/v1/api-keys", &[("Authorization", &bearer(&old_token))]), 401);
    s.expect(&login(&s, "a-new-password-1"), 200);
    s.expect(&login(&s, ADMIN_PASSWORD), 401);
}

#[test]
fn admin_password_command_works_with_the_server_stopped() {
    let data = TempDir::new();
    std::fs::create_dir_all(data.path()).unwrap();
    let (code, _, err) = cli(data.path(), &["admin", "password"], Some("offline-password\n"));
    assert_eq!(code, 0, "{err}");
    let s = Server::start_with(std::sync::Arc::new(data), &[]);
    s.expect(&login(&s, "offline-password"), 200);
}
