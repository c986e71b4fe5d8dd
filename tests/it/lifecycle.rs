//! Start, stop and storage: the data folder, migrations on an existing folder, a newer
//! schema refused, SIGTERM shutdown (a chat waiting on a slow upstream finishes first),
//! keys surviving a restart.

use std::os::unix::fs::PermissionsExt;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;

use crate::fake_llm::{FakeLlm, Script, connect};
use crate::support::{BIN, Server, TempDir, bearer, eventually, http};

#[test]
fn data_folder_and_secret_are_private() {
    let s = Server::start();
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(s.data.path()), 0o700);
    assert_eq!(mode(&s.data.path().join("secret.key")), 0o600);
    let conn = rusqlite::Connection::open(s.data.path().join("astrbot.db")).unwrap();
    let journal: String = conn.query_row("PRAGMA journal_mode", [], |r| r.get(0)).unwrap();
    assert_eq!(journal, "wal");
}

/// The schema version of the database in `data`.
fn schema_version(data: &TempDir) -> i64 {
    let c = rusqlite::Connection::open(data.path().join("astrbot.db")).unwrap();
    c.query_row("PRAGMA user_version", [], |r| r.get(0)).unwrap()
}

#[test]
fn keys_survive_a_restart() {
    let data = Arc::new(TempDir::new());
    let s = Server::start_with(data.clone(), &[]);
    let (key, _) = s.create_key(&s.admin_token(), r#"{"scopes":["im"]}"#);
    assert!(s.terminate().success());
    let s = Server::start_with(data.clone(), &[]);
    s.expect(&s.get("/api/v1/im/bots", &[("X-API-Key", &key)]), 200);
}

#[test]
fn a_restart_leaves_a_current_schema_alone() {
    let data = Arc::new(TempDir::new());
    let s = Server::start_with(data.clone(), &[]);
    let v1 = schema_version(&data);
    assert!(v1 >= 1);
    assert!(s.terminate().success());
    let _s = Server::start_with(data.clone(), &[]);
    assert_eq!(schema_version(&data), v1);
}

#[test]
fn a_folder_from_an_older_schema_is_migrated() {
    let data = Arc::new(TempDir::new());
    std::fs::create_dir_all(data.path()).unwrap();
    // An empty database file is schema version 0.
    rusqlite::Connection::open(data.path().join("astrbot.db")).unwrap();
    let s = Server::start_with(data.clone(), &[]);
    s.expect(&s.get("/api/v1/api-keys", &[("Authorization", &format!("Bearer {}", s.admin_token()))]), 200);
    assert!(s.log().contains("migrated to schema version"));
}

#[test]
fn a_newer_database_is_refused_with_a_clear_message() {
    let data = TempDir::new();
    std::fs::create_dir_all(data.path()).unwrap();
    assert_eq!(crate::support::cli(data.path(), &["key", "list"], None).0, 0);
    let c = rusqlite::Connection::open(data.path().join("astrbot.db")).unwrap();
    c.pragma_update(None, "user_version", 999).unwrap();
    drop(c);
    let out = Command::new(BIN)
        .args(["serve", "--listen", "127.0.0.1:0", "--data"])
        .arg(data.path())
        .env_clear()
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("schema version 999, newer than this astrbot supports"), "{err}");
    assert!(out.stdout.is_empty(), "it never listened");
}

#[test]
fn sigterm_stops_gracefully_with_exit_zero() {
    let s = Server::start();
    let addr = s.addr;
    s.expect(&s.get("/healthz", &[]), 200);
    let log = s.log.clone();
    let status = s.terminate();
    assert_eq!(status.code(), Some(0), "{}", log.lock().unwrap());
    assert!(std::net::TcpStream::connect(addr).is_err(), "still accepting after shutdown");
    assert!(log.lock().unwrap().contains("stopped"));
}

#[test]
fn sigterm_lets_a_request_in_flight_finish() {
    let s = Server::start();
    let (key, _) = s.create_key(&s.admin_token(), r#"{"scopes":["chat","provider"]}"#);
    // The upstream answers after a second: the chat is the request in flight.
    let mut script = Script::reply(&["still ", "here"]);
    script.delay_head = Duration::from_secs(1);
    let fake = FakeLlm::start(script);
    connect(&s, &key, &fake, "openai_chat_completion", &["sk-test-1"], json!({}));
    let (addr, auth) = (s.addr, bearer(&key));
    let chat = std::thread::spawn(move || {
        let body = json!({"username": "alice", "message": "hi"}).to_string();
        let headers = [("Authorization", auth.as_str()), ("Content-Type", "application/json")];
        http(addr, "POST", "/api/v1/chat", &headers, Some(body.as_bytes()))
    });
    assert!(
        eventually(10, || !fake.requests().is_empty()),
        "the chat never reached the upstream\n{}",
        s.log()
    );
    let pid = s.child.id().to_string();
    Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    let r = chat.join().unwrap();
    assert_eq!(r.status, 200, "the request in flight was answered\n{}", s.log());
    let text = r.text();
    let complete = text
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter_map(|d| serde_json::from_str::<serde_json::Value>(d).ok())
        .find(|e| e["type"] == "complete");
    assert_eq!(complete.map(|e| e["data"].clone()), Some(json!("still here")), "the chat completed: {text}");
    let log = s.log.clone();
    assert_eq!(s.terminate().code(), Some(0), "{}", log.lock().unwrap());
}

#[test]
fn bad_arguments_fail_with_a_message() {
    let out = Command::new(BIN).args(["serve", "--listen", "nonsense"]).env_clear().output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--listen must be PORT, :PORT, HOST:PORT or [IPv6]:PORT"), "{err}");
    assert!(err.contains("not \"nonsense\""), "{err}");
    let out = Command::new(BIN).args(["serve", "--bogus", "1"]).env_clear().output().unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown option --bogus"));
}
