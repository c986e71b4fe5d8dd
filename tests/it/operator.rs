//! The operator's routes (admin token only): log history and the live log stream, every
//! session, knowledge collections over HTTP, the password change and the statistics; API
//! keys are refused with `insufficient_scope`, and hostile input gets a bounded answer.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};

use crate::support::{ADMIN_PASSWORD, Server, TempDir, bearer, upload};

fn ask(s: &Server, key: &str, question: &str) -> Value {
    let body = json!({"username": "alice", "message": question}).to_string();
    let auth = bearer(key);
    let r = s.request(
        "POST",
        "/api/v1/chat",
        &[("Authorization", &auth), ("Accept", "application/json")],
        Some(&body),
    );
    s.expect(&r, 200);
    r.json()["data"].clone()
}

#[test]
fn api_keys_get_403_with_the_admin_scope() {
    let s = Server::start();
    let (key, _) =
        s.create_key(&s.admin_token(), r#"{"scopes":["im","chat","provider","persona","config","file"]}"#);
    for (method, path) in [
        ("GET", "/api/v1/logs/history"),
        ("GET", "/api/v1/logs/live"),
        ("GET", "/api/v1/stats"),
        ("GET", "/api/v1/kb/collections"),
        ("POST", "/api/v1/kb/collections/home/documents"),
        ("DELETE", "/api/v1/kb/collections/home"),
        ("POST", "/api/v1/auth/password"),
    ] {
        let r = if path.ends_with("/documents") {
            upload(&s, &key, path, &[("file", Some("notes.md"), None, b"# Notes\n\nText.\n")])
        } else {
            s.call(method, path, &key, (method == "POST").then(|| json!({})))
        };
        s.expect(&r, 403);
        assert_eq!(
            r.header("www-authenticate"),
            Some(r#"Bearer error="insufficient_scope", scope="admin""#),
            "{method} {path}"
        );
        assert!(!r.text().contains("abk_"), "{method} {path}: {}", r.text());
    }
    // Without any credential the route says what it needs.
    let r = s.get("/api/v1/stats", &[]);
    s.expect(&r, 401);
}

#[test]
fn log_history_holds_lines_caused_by_requests_filtered_by_level() {
    let s = Server::start();
    let admin = s.admin_token();
    let (raw, key_id) = s.create_key(&admin, r#"{"name":"logged","scopes":["chat"]}"#);
    let r = s.check("GET", "/api/v1/logs/history?limit=2000", &admin, None, 200, json!({"status": "ok"}));
    let data = r.json()["data"].clone();
    assert_eq!(data["capacity"], 2000);
    let lines = data["lines"].as_array().unwrap();
    let created = lines
        .iter()
        .find(|l| {
            l["message"]
                .as_str()
                .is_some_and(|m| m.contains(&format!("API key {key_id}")) && m.contains("created"))
        })
        .unwrap_or_else(|| panic!("no creation line in {data}"));
    assert_eq!(created["level"], "INFO");
    assert!(created["seq"].as_u64().unwrap() >= 1 && created["time"].as_str().unwrap().contains('T'));
    assert!(!r.text().contains(&raw), "the raw key never reaches the log");
    assert!(!r.text().contains(ADMIN_PASSWORD) && !r.text().contains(&admin), "no password or token either");
    // Oldest first, in sequence.
    let seqs: Vec<u64> = lines.iter().map(|l| l["seq"].as_u64().unwrap()).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");

    // A failed login logs a warning; `level=warn` keeps it and drops the info lines.
    let r = s.post("/api/auth/login", &[], r#"{"username":"astrbot","password":"wrong-password"}"#);
    s.expect(&r, 401);
    let r = s.check("GET", "/api/v1/logs/history?level=WARN", &admin, None, 200, json!({"status": "ok"}));
    let lines = r.json()["data"]["lines"].as_array().unwrap().clone();
    assert!(lines.iter().any(|l| l["message"].as_str().unwrap().contains("failed admin login")), "{lines:?}");
    assert!(lines.iter().all(|l| l["level"] == "WARN" || l["level"] == "ERROR"), "{lines:?}");
    let r = s.check("GET", "/api/v1/logs/history?limit=1", &admin, None, 200, json!({"status": "ok"}));
    assert_eq!(r.json()["data"]["lines"].as_array().unwrap().len(), 1);
}

#[test]
fn the_live_log_stream_receives_lines_logged_after_connecting() {
    let s = Server::start();
    let admin = s.admin_token();
    let mut stream = TcpStream::connect(s.addr).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        stream,
        "GET /api/v1/logs/live?level=info HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {admin}\r\n\r\n",
        s.addr
    )
    .unwrap();
    let mut reader = BufReader::new(stream);
    let mut head = String::new();
    loop {
        let mut line = String::new();
        assert!(reader.read_line(&mut line).unwrap() > 0, "closed during the head: {head}");
        if line == "\r\n" {
            break;
        }
        head.push_str(&line);
    }
    assert!(head.starts_with("HTTP/1.1 200") && head.contains("text/event-stream"), "{head}");
    // Subscribed once the head is out: a key created now is logged into this stream.
    let (_, key_id) = s.create_key(&admin, r#"{"name":"live","scopes":["chat"]}"#);
    let mut seen = String::new();
    let event = loop {
        let mut line = String::new();
        assert!(reader.read_line(&mut line).unwrap() > 0, "stream ended: {seen}");
        seen.push_str(&line);
        if let Some(json) = line.trim_end().strip_prefix("data: ") {
            let v: Value = serde_json::from_str(json).unwrap();
            if v["message"].as_str().is_some_and(|m| m.contains(&key_id)) {
                break v;
            }
        }
    };
    assert_eq!(event["level"], "INFO");
    assert!(event["message"].as_str().unwrap().contains("created"), "{event}");

    // A level that is not one is refused before the stream starts.
    s.check_error(
        "GET",
        "/api/v1/logs/live?level=verbose",
        &admin,
        None,
        400,
        "level must be one of error, warn, info, debug, trace",
    );
}

#[test]
fn hostile_log_queries_get_bounded_answers() {
    let s = Server::start();
    let admin = s.admin_token();
    let r = s.check(
        "GET",
        "/api/v1/logs/history?limit=18446744073709551616",
        &admin,
        None,
        200,
        json!({"status": "ok"}),
    );
    assert!(r.json()["data"]["lines"].as_array().unwrap().len() <= 2000);
    let huge = "x".repeat(6000);
    let r = s.check_error(
        "GET",
        &format!("/api/v1/logs/history?level={huge}"),
        &admin,
        None,
        400,
        "level must be one of error, warn, info, debug, trace",
    );
    assert!(r.text().len() < 200, "the value is not echoed");
    for bad in ["0", "-1", "abc", "1e3", "%00"] {
        s.check_error(
            "GET",
            &format!("/api/v1/logs/history?limit={bad}"),
            &admin,
            None,
            400,
            "limit must be an integer from 1 to 2000",
        );
    }
}

#[test]
fn the_admin_lists_every_session_and_keys_still_need_a_username() {
    let s = Server::start();
    let admin = s.admin_token();
    let (key, _) = s.create_key(&admin, r#"{"scopes":["chat"]}"#);
    for (user, session) in [("alice", "a-1"), ("bob", "b-1"), ("bob", "b-2")] {
        let body = json!({"username": user, "session_id": session, "message": "hello"}).to_string();
        let auth = bearer(&key);
        let r = s.request(
            "POST",
            "/api/v1/chat",
            &[("Authorization", &auth), ("Accept", "application/json")],
            Some(&body),
        );
        s.expect(&r, 200);
    }
    let r = s.check(
        "GET",
        "/api/v1/chat/sessions",
        &admin,
        None,
        200,
        json!({"status": "ok", "data": {"total": 3, "page": 1}}),
    );
    let creators: Vec<String> = r.json()["data"]["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["creator"].as_str().unwrap().to_owned())
        .collect();
    assert!(creators.contains(&"alice".into()) && creators.contains(&"bob".into()), "{creators:?}");
    s.check("GET", "/api/v1/chat/sessions?username=bob", &admin, None, 200, json!({"data": {"total": 2}}));
    s.check(
        "GET",
        "/api/v1/chat/sessions?page_size=1&page=2",
        &admin,
        None,
        200,
        json!({"data": {"total": 3, "page": 2, "page_size": 1}}),
    );
    let r = s.check("GET", "/api/v1/chat/sessions?page_size=1&page=2", &admin, None, 200, json!({}));
    assert_eq!(r.json()["data"]["sessions"].as_array().unwrap().len(), 1);
    s.check(
        "GET",
        "/api/v1/chat/sessions?platform_id=webchat",
        &admin,
        None,
        200,
        json!({"data": {"total": 3}}),
    );
    s.check(
        "GET",
        "/api/v1/chat/sessions?platform_id=telegram",
        &admin,
        None,
        200,
        json!({"data": {"total": 0, "sessions": []}}),
    );
    // An API key keeps AstrBot's answer.
    s.check_error("GET", "/api/v1/chat/sessions", &key, None, 200, "Missing key: username");
}

#[test]
fn knowledge_collections_over_http_answer_chats_and_go_away() {
    let s = Server::start();
    let admin = s.admin_token();
    let (key, _) = s.create_key(&admin, r#"{"scopes":["chat"]}"#);
    let r = upload(
        &s,
        &admin,
        "/api/v1/kb/collections/garden/documents",
        &[
            (
                "file",
                Some("tomatoes.md"),
                Some("text/markdown"),
                b"# Garden\n\n## Watering tomatoes\n\nWater the tomatoes every morning before nine.\n",
            ),
            (
                "file",
                Some("menu.html"),
                Some("text/html"),
                b"<h1>Menu</h1><h2>Soup</h2><p>Pumpkin soup &amp; bread.</p>",
            ),
            ("file", Some("photo.bin"), None, &[0xff, 0x00, 0x01]),
            ("base_url", None, None, b"https://example.com/garden/"),
        ],
    );
    s.expect(&r, 200);
    assert_eq!(
        r.json()["data"],
        json!({"name": "garden", "passages": 2, "files": ["tomatoes.md", "menu.html"], "skipped": ["photo.bin"]})
    );
    let r = s.check("GET", "/api/v1/kb/collections", &admin, None, 200, json!({"status": "ok"}));
    let collections = r.json()["data"]["collections"].clone();
    assert!(
        collections.as_array().unwrap().contains(&json!({"name": "garden", "passages": 2, "bundled": false})),
        "{collections}"
    );
    assert!(collections.as_array().unwrap().iter().any(|c| c["name"] == "docs" && c["bundled"] == true));

    let a = ask(&s, &key, "When should I water the tomatoes?");
    assert!(a["response"].as_str().unwrap().contains("every morning before nine"), "{a}");
    assert_eq!(
        a["sources"][0],
        json!({"title": "Garden › Watering tomatoes", "url": "https://example.com/garden/tomatoes#watering-tomatoes"})
    );

    // A second upload replaces the collection.
    let r = upload(
        &s,
        &admin,
        "/api/v1/kb/collections/garden/documents",
        &[("file", Some("roses.txt"), None, b"# Roses\n\nPrune the roses in March.\n")],
    );
    s.expect(&r, 200);
    assert_eq!(r.json()["data"]["passages"], 1);
    let a = ask(&s, &key, "When should I water the tomatoes?");
    assert!(!a["response"].as_str().unwrap().contains("before nine"), "replaced: {a}");

    s.check(
        "DELETE",
        "/api/v1/kb/collections/garden",
        &admin,
        None,
        200,
        json!({"data": {"name": "garden"}}),
    );
    s.check_error("DELETE", "/api/v1/kb/collections/garden", &admin, None, 404, "no collection of that name");
    let a = ask(&s, &key, "When should I prune the roses?");
    assert!(!a["response"].as_str().unwrap().contains("March"), "removed: {a}");
    s.check_error(
        "DELETE",
        "/api/v1/kb/collections/docs",
        &admin,
        None,
        403,
        "collection docs holds the bundled guides and is rebuilt at every start",
    );
}

#[test]
fn hostile_knowledge_uploads_are_refused() {
    let s = Server::start_with(Arc::new(TempDir::new()), &["--max-upload-mb", "1"]);
    let admin = s.admin_token();
    let doc: &[u8] = b"# Notes\n\nSomething.\n";
    let name_rule = "a collection name is 1 to 64 letters, digits, '_', '-' or '.', not starting with '.'";
    for path in [
        "/api/v1/kb/collections/..%2F..%2Fetc/documents",
        "/api/v1/kb/collections/..%2F/documents",
        "/api/v1/kb/collections/.hidden/documents",
        "/api/v1/kb/collections/a%20b/documents",
    ] {
        let r = upload(&s, &admin, path, &[("file", Some("notes.md"), None, doc)]);
        s.expect(&r, 400);
        assert_eq!(r.json()["message"], name_rule, "{path}");
    }
    let long = format!("/api/v1/kb/collections/{}/documents", "n".repeat(5000));
    let r = upload(&s, &admin, &long, &[("file", Some("notes.md"), None, doc)]);
    s.expect(&r, 400);
    let r =
        upload(&s, &admin, "/api/v1/kb/collections/docs/documents", &[("file", Some("notes.md"), None, doc)]);
    s.expect(&r, 400);
    assert!(r.json()["message"].as_str().unwrap().contains("bundled guides"));
    // A file name with a path keeps only its last part.
    let r = upload(
        &s,
        &admin,
        "/api/v1/kb/collections/notes/documents",
        &[("file", Some("../../etc/notes.md"), None, doc)],
    );
    s.expect(&r, 200);
    assert_eq!(r.json()["data"]["files"], json!(["notes.md"]));
    // 2 MiB over a 1 MiB cap: 413, nothing stored.
    let big = vec![b'a'; 2 << 20];
    let r =
        upload(&s, &admin, "/api/v1/kb/collections/big/documents", &[("file", Some("big.md"), None, &big)]);
    s.expect(&r, 413);
    let r = s.check("GET", "/api/v1/kb/collections", &admin, None, 200, json!({}));
    assert!(!r.text().contains("\"big\""), "{}", r.text());
    // Nothing readable, and not UTF-8.
    let r = upload(
        &s,
        &admin,
        "/api/v1/kb/collections/x/documents",
        &[("file", Some("a.pdf"), None, b"%PDF-1.4")],
    );
    s.expect(&r, 400);
    let r = upload(
        &s,
        &admin,
        "/api/v1/kb/collections/x/documents",
        &[("file", Some("a.md"), None, &[0xff, 0xfe, 0x00])],
    );
    s.expect(&r, 400);
    assert_eq!(r.json()["message"], "a.md is not UTF-8 text; upload Markdown, text or HTML");
    let r = upload(
        &s,
        &admin,
        "/api/v1/kb/collections/x/documents",
        &[("file", Some("a.md"), None, doc), ("base_url", None, None, b"javascript:alert(1)")],
    );
    s.expect(&r, 400);
}

#[test]
fn a_password_change_signs_out_every_admin_token() {
    let s = Server::start();
    let admin = s.admin_token();
    let other = s.admin_token();
    s.check_error(
        "POST",
        "/api/v1/auth/password",
        &admin,
        Some(json!({"current_password": "not-the-password", "new_password": "a-new-password"})),
        400,
        "current_password is incorrect; the password was not changed",
    );
    s.check_error(
        "POST",
        "/api/v1/auth/password",
        &admin,
        Some(json!({"current_password": ADMIN_PASSWORD, "new_password": "short"})),
        400,
        "new_password: the password must be at least 8 characters",
    );
    s.check_error(
        "POST",
        "/api/v1/auth/password",
        &admin,
        Some(json!({"new_password": "x"})),
        400,
        "Missing key: current_password",
    );
    // Still the old password: the refusals changed nothing.
    s.check("GET", "/api/v1/stats", &other, None, 200, json!({"status": "ok"}));
    let r = s.check(
        "POST",
        "/api/v1/auth/password",
        &admin,
        Some(json!({"current_password": ADMIN_PASSWORD, "new_password": "a-new-password"})),
        200,
        json!({"status": "ok", "data": {"username": "astrbot", "signed_out": true}}),
    );
    assert!(!r.text().contains("a-new-password") && !r.text().contains(ADMIN_PASSWORD));
    s.expect(&s.call("GET", "/api/v1/stats", &admin, None), 401);
    s.expect(&s.call("GET", "/api/v1/stats", &other, None), 401);
    let r = s.post(
        "/api/auth/login",
        &[],
        &json!({"username": "astrbot", "password": ADMIN_PASSWORD}).to_string(),
    );
    s.expect(&r, 401);
    let r = s.post("/api/auth/login", &[], r#"{"username":"astrbot","password":"a-new-password"}"#);
    s.expect(&r, 200);
    let token = r.json()["data"]["token"].as_str().unwrap().to_owned();
    s.check("GET", "/api/v1/stats", &token, None, 200, json!({"status": "ok"}));
    assert!(!s.log().contains("a-new-password"), "the password never reaches the log");
    let r = s.check("GET", "/api/v1/logs/history?limit=2000", &token, None, 200, json!({}));
    assert!(r.text().contains("changed the password") && !r.text().contains("a-new-password"));
}

#[test]
fn stats_count_requests_by_key() {
    let s = Server::start();
    let admin = s.admin_token();
    let (key, key_id) = s.create_key(&admin, r#"{"name":"counted","scopes":["im"]}"#);
    for _ in 0..3 {
        s.expect(&s.call("GET", "/api/v1/im/bots", &key, None), 200);
    }
    let r = s.check(
        "GET",
        "/api/v1/stats",
        &admin,
        None,
        200,
        json!({"status": "ok", "data": {
            "version": env!("CARGO_PKG_VERSION"),
            "requests_today": [{"key_id": key_id, "name": "counted", "count": 3}],
            "requests_today_total": 3,
            "active_streams": 0,
            "chat_runs": 0,
            "upstream_errors": 0,
            "outbox_pending": 0,
            "outbox_dropped": 0,
        }}),
    );
    assert!(r.json()["data"]["uptime_secs"].is_u64());
}

#[test]
fn stats_count_failed_llm_requests_and_the_log_keeps_provider_keys_out() {
    use crate::fake_llm::{FakeLlm, Script, connect};
    let s = Server::start();
    let admin = s.admin_token();
    let fake = FakeLlm::start(Script::reply(&["never"]));
    fake.set(|sc| sc.reject_keys = vec!["sk-operator-secret".into()]);
    connect(&s, &admin, &fake, "openai_chat_completion", &["sk-operator-secret"], json!({}));
    let (key, _) = s.create_key(&admin, r#"{"scopes":["chat"]}"#);
    let a = ask(&s, &key, "hello");
    assert!(a["response"].as_str().unwrap().contains("LLM"), "the failure is the answer: {a}");
    s.check(
        "GET",
        "/api/v1/stats",
        &admin,
        None,
        200,
        json!({"data": {"upstream_errors": 1, "chat_runs": 0}}),
    );
    let r = s.check("GET", "/api/v1/logs/history?limit=2000&level=trace", &admin, None, 200, json!({}));
    assert!(r.text().contains("chat run"), "the failure is logged: {}", r.text());
    assert!(!r.text().contains("sk-operator-secret"), "{}", r.text());
}

/// Opens a live log stream; returns the reader after the head, and the status line.
fn open_live(s: &Server, admin: &str) -> (BufReader<TcpStream>, String) {
    let mut stream = TcpStream::connect(s.addr).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        stream,
        "GET /api/v1/logs/live HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {admin}\r\n\r\n",
        s.addr
    )
    .unwrap();
    let mut reader = BufReader::new(stream);
    let mut status = String::new();
    reader.read_line(&mut status).unwrap();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap() == 0 || line == "\r\n" {
            break;
        }
    }
    (reader, status)
}

#[test]
fn live_streams_are_bounded_and_a_gone_one_frees_its_place() {
    let s = Server::start();
    let admin = s.admin_token();
    let mut open: Vec<_> = (0..16).map(|_| open_live(&s, &admin)).collect();
    assert!(open.iter().all(|(_, status)| status.starts_with("HTTP/1.1 200")));
    let (_, status) = open_live(&s, &admin);
    assert!(status.starts_with("HTTP/1.1 503"), "{status}");
    // A client that leaves frees its place once the server notices (its heartbeat fails).
    drop(open.pop());
    assert!(crate::support::eventually(10, || open_live(&s, &admin).1.starts_with("HTTP/1.1 200")));
    // The others still get lines: logging never waited for anyone.
    let (_, key_id) = s.create_key(&admin, r#"{"scopes":["chat"]}"#);
    let (reader, _) = &mut open[0];
    let mut line = String::new();
    while !line.contains(&key_id) {
        line.clear();
        assert!(reader.read_line(&mut line).unwrap() > 0);
    }
}
