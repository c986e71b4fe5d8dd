//! The WebSocket chat (`/api/v1/chat/ws`) and the resume route
//! (`GET /api/v1/chat/runs/{run_id}/stream`), driven by Python's `websockets` (not our
//! code) as the client: a chat gets the same run events as the SSE chat; a client that
//! vanishes mid-run resumes the run through the resume route with nothing missing; and the
//! hostile cases: no key, a wrong scope, bad JSON, an oversized message, an idle
//! connection, a second message during a run, connections against the connection cap.
//!
//! The client is `tests/it/chat_ws_client.py`, run by `$ASTRBOT_TEST_PYTHON` (CI's venv
//! has `websockets`, see `.ci/run`); without that variable a `python3` lacking
//! `websockets` skips these tests with a message.

use std::io::Write;
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};

use crate::fake_llm::{FakeLlm, Script, connect};
use crate::support::{Server, TempDir, eventually, http};

const CLIENT: &str = include_str!("chat_ws_client.py");
const SCOPES: &str = r#"{"scopes":["chat","provider","config"]}"#;

/// The interpreter with `websockets`, or `None` when none is configured (skips).
fn python() -> Option<String> {
    let configured = std::env::var("ASTRBOT_TEST_PYTHON").ok();
    let python = configured.clone().unwrap_or_else(|| "python3".into());
    let ok = Command::new(&python)
        .args(["-c", "import websockets.sync.client"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    match (ok, configured) {
        (true, _) => Some(python),
        (false, Some(p)) => panic!("ASTRBOT_TEST_PYTHON={p} cannot import websockets (see .ci/run)"),
        (false, None) => {
            println!("skipped: python3 cannot import websockets (set ASTRBOT_TEST_PYTHON, see .ci/run)");
            None
        }
    }
}

/// Runs the client in `mode`; returns the JSON lines it printed.
fn client(python: &str, mode: &str, url: &str, arg: Option<&str>) -> Vec<Value> {
    let dir = TempDir::new();
    std::fs::create_dir_all(dir.path()).unwrap();
    let script = dir.path().join("client.py");
    std::fs::write(&script, CLIENT).unwrap();
    let mut cmd = Command::new(python);
    cmd.arg(&script).arg(mode).arg(url).args(arg);
    let out = cmd.output().expect("run the websockets client");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad client line ({e}): {l}")))
        .collect();
    assert!(!lines.is_empty(), "the client printed nothing: {}", String::from_utf8_lossy(&out.stderr));
    lines
}

fn url(addr: SocketAddr, key: Option<&str>) -> String {
    match key {
        Some(k) => format!("ws://{addr}/api/v1/chat/ws?api_key={k}"),
        None => format!("ws://{addr}/api/v1/chat/ws"),
    }
}

fn received(lines: &[Value]) -> Vec<Value> {
    lines.iter().filter_map(|l| l.get("recv").cloned()).collect()
}

fn kinds(ev: &[Value]) -> Vec<String> {
    ev.iter().map(|e| e["type"].as_str().unwrap_or("?").to_owned()).collect()
}

/// A server whose chat model is a fake streaming `deltas`, `between` apart.
fn setup(deltas: &[&str], between: Duration) -> (Server, String, FakeLlm) {
    let s = Server::start();
    let (key, _) = s.create_key(&s.admin_token(), SCOPES);
    let mut script = Script::reply(deltas);
    script.delay_between = between;
    let fake = FakeLlm::start(script);
    connect(&s, &key, &fake, "openai_chat_completion", &["sk-1"], json!({}));
    (s, key, fake)
}

/// `(id, event)` of each `data:` frame of a resume stream (`id` from its `id:` line).
fn sse_with_ids(body: &str) -> Vec<(Option<u64>, Value)> {
    let mut out = Vec::new();
    for block in body.split("\n\n") {
        let mut id = None;
        let mut data = None;
        for line in block.lines() {
            if let Some(v) = line.strip_prefix("id: ") {
                id = Some(v.parse().unwrap());
            } else if let Some(d) = line.strip_prefix("data: ") {
                data = Some(serde_json::from_str::<Value>(d).unwrap());
            }
        }
        if let Some(d) = data {
            out.push((id, d));
        }
    }
    out
}

/// An event with what differs between two runs (ids, times, stats) blanked.
fn normalized(e: &Value) -> Value {
    let mut e = e.clone();
    for k in ["message_id", "session_id"] {
        if e.get(k).is_some() {
            e[k] = json!("-");
        }
    }
    match e["type"].as_str() {
        Some("run_started") => e["data"] = json!("-"),
        Some("agent_stats") => e["data"] = json!("-"),
        // The WebSocket's own shape of it is checked above.
        Some("message_saved") => e = json!({"type": "message_saved"}),
        _ => {}
    }
    e
}

#[test]
fn a_websocket_chat_gets_the_sse_chats_events() {
    let Some(py) = python() else { return };
    let (s, key, _fake) = setup(&["Hel", "lo ", "there"], Duration::ZERO);
    let lines = client(&py, "chat", &url(s.addr, Some(&key)), None);
    let ws = received(&lines);
    let k = kinds(&ws);
    assert_eq!(k[..2], ["session_id", "run_started"], "{k:?}");
    assert_eq!(k[k.len() - 4..], ["agent_stats", "complete", "message_saved", "end"], "{k:?}");
    let run_id = ws[1]["data"]["run_id"].as_str().unwrap();
    assert_eq!(
        ws[0],
        json!({"type": "session_id", "data": null, "session_id": "ws-1", "message_id": run_id})
    );
    assert_eq!(ws[ws.len() - 3]["data"], "Hello there");
    // AstrBot's WebSocket shape of message_saved: no checkpoint, the session id.
    let saved = &ws[ws.len() - 2];
    assert_eq!(saved["session_id"], "ws-1");
    assert!(saved["data"]["id"].is_i64() && saved["data"].get("llm_checkpoint_id").is_none(), "{saved}");

    // The SSE chat of the same message: the same run events.
    let r = s.call("POST", "/api/v1/chat", &key, Some(json!({"username": "alice", "message": "hi"})));
    s.expect(&r, 200);
    let sse: Vec<Value> = r
        .text()
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    assert_eq!(kinds(&sse)[..2], ["session_id", "user_message_saved"]);
    let a: Vec<Value> = ws[1..].iter().map(normalized).collect();
    let b: Vec<Value> = sse[2..].iter().map(normalized).collect();
    assert_eq!(a, b, "the WebSocket and the SSE chat carry the same run events");
    // The reply was stored for the WebSocket's session like any other.
    let history = s.call("GET", "/api/v1/chat/sessions/ws-1?username=alice", &key, None);
    assert!(history.text().contains("Hello there"), "{}", history.text());
    // The reference's "try it" message starts a chat as shown.
    let doc = s.get("/api/v1/openapi.json", &[]).json();
    let example = doc["paths"]["/api/v1/chat/ws"]["get"]["x-astrbot-ws-example"].to_string();
    let lines = client(&py, "messages", &url(s.addr, Some(&key)), Some(&json!([example]).to_string()));
    assert_eq!(received(&lines)[0]["session_id"], "reference-example", "{lines:?}");
    // The key's header works as well as the query.
    let lines = client(&py, "chat-header", &url(s.addr, None), Some(&key));
    assert_eq!(kinds(&received(&lines)).last().map(String::as_str), Some("end"));
}

#[test]
fn a_vanished_clients_run_is_resumed_with_nothing_missing() {
    let Some(py) = python() else { return };
    let deltas = ["a", "b", "c", "d", "e", "f", "g", "h"];
    let (s, key, _fake) = setup(&deltas, Duration::from_millis(250));
    // The client goes after run_started and two deltas, mid-run.
    let lines = client(&py, "drop", &url(s.addr, Some(&key)), Some("3"));
    let got = received(&lines);
    assert_eq!(kinds(&got), ["session_id", "run_started", "plain", "plain"], "{lines:?}");
    let run_id = got[1]["data"]["run_id"].as_str().unwrap().to_owned();
    let path = format!("/api/v1/chat/runs/{run_id}/stream");

    // Resume after the third run event, while the run still goes on: ids 4.. to `end`.
    let r = http(s.addr, "GET", &path, &[("X-API-Key", &key), ("Last-Event-ID", "3")], None);
    assert_eq!(r.status, 200);
    assert!(r.header("content-type").is_some_and(|c| c.starts_with("text/event-stream")));
    let rest = sse_with_ids(&r.text());
    let ids: Vec<u64> = rest.iter().map(|(id, _)| id.expect("every resumed event has an id")).collect();
    assert_eq!(ids, (4..4 + ids.len() as u64).collect::<Vec<_>>(), "consecutive from 4");
    assert_eq!(rest.last().unwrap().1["type"], "end");
    let mut text: String = got[2..].iter().map(|e| e["data"].as_str().unwrap().to_owned()).collect();
    for (_, e) in &rest {
        if e["type"] == "plain" {
            text.push_str(e["data"].as_str().unwrap());
        }
    }
    assert_eq!(text, deltas.concat(), "the deltas seen before the drop and resumed make the whole reply");

    // From the start (after the end): AstrBot's snapshot, then every event, the same ones.
    let r = http(s.addr, "GET", &path, &[("Authorization", &format!("Bearer {key}"))], None);
    let all = sse_with_ids(&r.text());
    assert_eq!(all[0].0, None);
    assert_eq!(all[0].1["type"], "run_snapshot");
    assert_eq!(all[0].1["data"]["run_id"], run_id.as_str());
    assert_eq!(all[0].1["data"]["status"], "completed");
    assert_eq!(all[1].0, Some(1));
    assert_eq!(all[1].1, got[1], "event 1 is the run_started the WebSocket got");
    assert_eq!(
        all[4..].iter().map(|(_, e)| e.clone()).collect::<Vec<_>>(),
        rest.iter().map(|(_, e)| e.clone()).collect::<Vec<_>>()
    );

    // Only the caller that started the run may read it.
    let (other, _) = s.create_key(&s.admin_token(), SCOPES);
    let r = s.call("GET", &path, &other, None);
    s.expect_error(&r, 200, "Chat run is unavailable");
    let r = s.call("GET", "/api/v1/chat/runs/not-a-run/stream", &key, None);
    s.expect_error(&r, 200, "Chat run is unavailable");
    let r =
        http(s.addr, "GET", &path, &[("X-API-Key", &key), ("Last-Event-ID", "18446744073709551616")], None);
    assert!(r.text().contains("Invalid Last-Event-ID"), "{}", r.text());
    let r = http(s.addr, "GET", &path, &[("X-API-Key", &key), ("Last-Event-ID", "-1")], None);
    assert!(r.text().contains("Invalid Last-Event-ID"), "{}", r.text());
    let r =
        http(s.addr, "GET", &path, &[("X-API-Key", &key), ("Last-Event-ID", "18446744073709551615")], None);
    assert_eq!(sse_with_ids(&r.text()).len(), 0, "nothing after the last id: {}", r.text());
    let (unscoped, _) = s.create_key(&s.admin_token(), r#"{"scopes":["file"]}"#);
    assert_eq!(s.call("GET", &path, &unscoped, None).status, 403);
    // The SSE chat's run resumes the same way, for its caller.
    let r = s.call("POST", "/api/v1/chat", &key, Some(json!({"username": "alice", "message": "hi"})));
    let body = r.text();
    let run = body.lines().find_map(|l| l.strip_prefix("data: ")).and_then(|_| {
        body.lines()
            .filter_map(|l| l.strip_prefix("data: "))
            .map(|d| serde_json::from_str::<Value>(d).unwrap())
            .find(|e| e["type"] == "run_started")
    });
    let sse_run = run.unwrap()["data"]["run_id"].as_str().unwrap().to_owned();
    let r = s.call("GET", &format!("/api/v1/chat/runs/{sse_run}/stream"), &key, None);
    assert_eq!(sse_with_ids(&r.text()).last().unwrap().1["type"], "end");
}

#[test]
fn hostile_websocket_clients_get_astrbots_errors_and_close_codes() {
    let Some(py) = python() else { return };
    let (s, key, _fake) = setup(&["ok"], Duration::ZERO);
    // No key, a wrong key, a key without `chat`: the error, then close 1008.
    let lines = client(&py, "wait", &url(s.addr, None), Some("10"));
    assert_eq!(
        received(&lines),
        [json!({"type": "error", "code": "UNAUTHORIZED", "data": "Missing API key"})]
    );
    assert_eq!(lines.last().unwrap()["closed"], 1008, "{lines:?}");
    let lines = client(&py, "wait", &url(s.addr, Some("abk_nope")), Some("10"));
    assert_eq!(received(&lines)[0]["data"], "Invalid API key");
    assert_eq!(lines.last().unwrap()["closed"], 1008);
    let (files_only, _) = s.create_key(&s.admin_token(), r#"{"scopes":["file"]}"#);
    let lines = client(&py, "wait", &url(s.addr, Some(&files_only)), Some("10"));
    assert_eq!(received(&lines)[0]["data"], "Insufficient API key scope");
    assert_eq!(lines.last().unwrap()["closed"], 1008);

    // Bad frames: each answered, the connection kept.
    let frames = json!([
        "not json",
        "[1, 2]",
        r#"{"t": "nope"}"#,
        r#"{"t": "ping"}"#,
        r#"{"username": "alice"}"#,
        r#"{"message": "hi"}"#,
        r#"{"username": "alice", "message": ""}"#,
        r#"{"username": "alice", "message": "hi", "config_id": "missing"}"#,
    ]);
    let lines = client(&py, "messages", &url(s.addr, Some(&key)), Some(&frames.to_string()));
    let got = received(&lines);
    let codes: Vec<(&str, &str)> =
        got.iter().map(|e| (e["code"].as_str().unwrap_or("-"), e["data"].as_str().unwrap_or("-"))).collect();
    assert_eq!(
        codes,
        [
            ("INVALID_MESSAGE", "message must be valid JSON"),
            ("INVALID_MESSAGE", "message must be an object"),
            ("INVALID_MESSAGE", "Unsupported message type: nope"),
            ("-", "-"),
            ("INVALID_MESSAGE", "Missing key: message or files"),
            ("BAD_USER", "Missing key: username"),
            ("INVALID_MESSAGE", "Message content is empty (reply only is not allowed)"),
            ("CONFIG_ERROR", "config_id not found: missing"),
        ],
        "{lines:?}"
    );
    assert_eq!(got[3], json!({"type": "pong"}));
    assert_eq!(lines.last().unwrap()["done"], true);

    // A second message while a run goes: refused, the run finishes.
    let lines = client(&py, "busy", &url(s.addr, Some(&key)), None);
    let got = received(&lines);
    assert!(got.iter().any(|e| e["code"] == "INVALID_MESSAGE"), "{lines:?}");
    assert_eq!(kinds(&got).last().map(String::as_str), Some("end"));

    // Each send counts against the key's daily limit, as a request does.
    let (limited, _) = s.create_key(&s.admin_token(), r#"{"scopes":["chat"],"daily_limit":1}"#);
    let frames = json!([r#"{"t": "ping"}"#, r#"{"username": "bob"}"#, r#"{"username": "bob"}"#]);
    let lines = client(&py, "messages", &url(s.addr, Some(&limited)), Some(&frames.to_string()));
    let got = received(&lines);
    assert_eq!(got[1]["code"], "INVALID_MESSAGE", "the first send is counted, then refused: {lines:?}");
    assert_eq!(
        (got[2]["code"].as_str(), got[2]["data"].as_str()),
        (Some("PROCESSING_ERROR"), Some("Daily request limit exceeded"))
    );

    // A message over the cap: close 1009; the server lives on.
    let lines = client(&py, "big", &url(s.addr, Some(&key)), Some(&(2 << 20).to_string()));
    assert_eq!(lines.last().unwrap()["closed"], 1009, "{lines:?}");
    assert_eq!(http(s.addr, "GET", "/healthz", &[], None).status, 200);

    // Plain HTTP on the route: 426; a broken handshake: 400.
    let r = http(s.addr, "GET", "/api/v1/chat/ws", &[], None);
    assert_eq!(r.status, 426);
    assert_eq!(r.header("sec-websocket-version"), Some("13"));
    let bad = [
        ("Connection", "Upgrade"),
        ("Upgrade", "websocket"),
        ("Sec-WebSocket-Version", "13"),
        ("Sec-WebSocket-Key", "short"),
    ];
    assert_eq!(http(s.addr, "GET", "/api/v1/chat/ws", &bad, None).status, 400);
}

#[test]
fn an_idle_websocket_is_closed() {
    let Some(py) = python() else { return };
    let s = Server::start_with_env(Arc::new(TempDir::new()), &[], &[("ASTRBOT_WS_IDLE_SECS", "2")]);
    let (key, _) = s.create_key(&s.admin_token(), SCOPES);
    let lines = client(&py, "wait", &url(s.addr, Some(&key)), Some("20"));
    let closed = lines.last().unwrap();
    assert_eq!(closed["closed"], 1000, "{lines:?}");
    assert_eq!(closed["reason"], "idle timeout");
    let elapsed = lines[lines.len() - 2]["elapsed"].as_f64().unwrap();
    assert!((1.5..10.0).contains(&elapsed), "closed after {elapsed} s");
}

#[test]
fn websockets_count_against_the_connection_cap() {
    let Some(py) = python() else { return };
    let s = Server::start_with(Arc::new(TempDir::new()), &["--max-connections", "8"]);
    let (key, _) = s.create_key(&s.admin_token(), SCOPES);
    let dir = TempDir::new();
    std::fs::create_dir_all(dir.path()).unwrap();
    std::fs::write(dir.path().join("client.py"), CLIENT).unwrap();
    let mut holder = Command::new(&py)
        .arg(dir.path().join("client.py"))
        .args(["hold", &url(s.addr, Some(&key)), "8"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = std::io::BufReader::new(holder.stdout.take().unwrap());
    let mut line = String::new();
    std::io::BufRead::read_line(&mut out, &mut line).unwrap();
    assert_eq!(serde_json::from_str::<Value>(&line).unwrap()["held"], 8, "{line}");
    // Eight open WebSockets fill the cap; none is an idle connection to close for room.
    let r = http(s.addr, "GET", "/healthz", &[], None);
    assert_eq!(r.status, 503, "{}", r.text());
    holder.stdin.take().unwrap().write_all(b"").unwrap();
    assert!(holder.wait().unwrap().success());
    assert!(eventually(10, || http(s.addr, "GET", "/healthz", &[], None).status == 200));
}

#[test]
fn a_stopping_server_closes_its_websockets_with_1001() {
    let Some(py) = python() else { return };
    let s = Server::start();
    let (key, _) = s.create_key(&s.admin_token(), SCOPES);
    let dir = TempDir::new();
    std::fs::create_dir_all(dir.path()).unwrap();
    std::fs::write(dir.path().join("client.py"), CLIENT).unwrap();
    let mut waiter = Command::new(&py)
        .arg(dir.path().join("client.py"))
        .args(["wait", &url(s.addr, Some(&key)), "30"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = std::io::BufReader::new(waiter.stdout.take().unwrap());
    let mut line = String::new();
    std::io::BufRead::read_line(&mut out, &mut line).unwrap();
    assert_eq!(serde_json::from_str::<Value>(&line).unwrap()["open"], true, "{line}");
    let status = s.terminate();
    assert!(status.success(), "{status:?}");
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut out, &mut rest).unwrap();
    assert!(waiter.wait().unwrap().success());
    let last: Value = serde_json::from_str(rest.lines().last().unwrap()).unwrap();
    assert_eq!(last["closed"], 1001, "{rest}");
    assert_eq!(last["reason"], "server shutting down");
}
