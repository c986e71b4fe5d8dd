//! `POST /api/v1/chat` and the chat sessions as AstrBot's open API defines them: the
//! built-in provider, the 200-errors, session ids, the SSE event sequence, and real round trips to
//! fake OpenAI-compatible and Anthropic upstreams (`fake_llm`): deltas, usage, persona and
//! history, attachments, key rotation, retries, timeouts, heartbeats, a vanished client,
//! commands and the session routes.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::fake_llm::{FakeLlm, Recorded, Script, connect};
use crate::support::{PNG, Resp, Server, eventually};

/// A key that can chat and set up everything a chat test needs.
pub(crate) const ALL_SCOPES: &str = r#"{"scopes":["chat","provider","persona","config","file"]}"#;

pub(crate) fn setup() -> (Server, String) {
    let s = Server::start();
    let (key, _) = s.create_key(&s.admin_token(), ALL_SCOPES);
    (s, key)
}

/// The JSON events of an SSE body (`data: ` lines; comments such as `: heartbeat` skipped).
pub(crate) fn events(body: &str) -> Vec<Value> {
    body.lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .map(|d| serde_json::from_str(d).unwrap_or_else(|e| panic!("bad event ({e}): {d}")))
        .collect()
}

pub(crate) fn kinds(ev: &[Value]) -> Vec<&str> {
    ev.iter().map(|e| e["type"].as_str().unwrap_or("?")).collect()
}

/// Sends a chat request and returns the raw response, asserting an SSE answer.
fn chat_raw(s: &Server, key: &str, body: Value) -> Resp {
    let r = s.call("POST", "/api/v1/chat", key, Some(body));
    s.expect(&r, 200);
    assert!(
        r.header("content-type").is_some_and(|c| c.starts_with("text/event-stream")),
        "not a stream: {:?} {}",
        r.header("content-type"),
        r.text()
    );
    r
}

pub(crate) fn chat(s: &Server, key: &str, body: Value) -> Vec<Value> {
    events(&chat_raw(s, key, body).text())
}

/// Asserts the streaming sequence `session_id, user_message_saved, run_started, plain…,
/// agent_stats, complete, message_saved, end` and returns the plain deltas.
fn assert_streamed(ev: &[Value]) -> Vec<String> {
    let k = kinds(ev);
    assert!(k.len() >= 8, "too few events: {k:?}");
    assert_eq!(k[..3], ["session_id", "user_message_saved", "run_started"], "{k:?}");
    assert_eq!(k[k.len() - 4..], ["agent_stats", "complete", "message_saved", "end"], "{k:?}");
    let middle = &ev[3..ev.len() - 4];
    assert!(!middle.is_empty(), "no plain delta: {k:?}");
    let run_id = ev[2]["data"]["run_id"].as_str().unwrap();
    for e in middle {
        assert_eq!((e["type"].as_str(), e["streaming"].as_bool()), (Some("plain"), Some(true)), "{e}");
        assert_eq!(e["chain_type"], Value::Null);
        assert_eq!(e["message_id"], run_id);
    }
    let checkpoint = &ev[1]["data"]["llm_checkpoint_id"];
    assert_eq!(ev[ev.len() - 2]["data"]["llm_checkpoint_id"], *checkpoint);
    assert_eq!(ev[ev.len() - 1]["message_id"], run_id);
    let deltas: Vec<String> = middle.iter().map(|e| e["data"].as_str().unwrap().to_owned()).collect();
    assert_eq!(ev[ev.len() - 3]["data"], deltas.concat(), "complete is the concatenated deltas");
    deltas
}

/// The reply text of a run: `complete.data`, else the non-streaming `plain`.
fn reply(ev: &[Value]) -> String {
    ev.iter()
        .find(|e| e["type"] == "complete")
        .or_else(|| ev.iter().rev().find(|e| e["type"] == "plain"))
        .and_then(|e| e["data"].as_str())
        .unwrap_or_else(|| panic!("no reply in {ev:?}"))
        .to_owned()
}

fn event<'a>(ev: &'a [Value], kind: &str) -> &'a Value {
    ev.iter().find(|e| e["type"] == kind).unwrap_or_else(|| panic!("no {kind} event in {ev:?}"))
}

/// A chat with `Accept: application/json`; returns `data`.
fn ask_json(s: &Server, key: &str, body: Value) -> Value {
    let auth = format!("Bearer {key}");
    let r = s.request(
        "POST",
        "/api/v1/chat",
        &[("Authorization", &auth), ("Content-Type", "application/json"), ("Accept", "application/json")],
        Some(&body.to_string()),
    );
    s.expect(&r, 200);
    let v = r.json();
    assert_eq!(v["status"], "ok", "{v}");
    v["data"].clone()
}

/// PUTs the whole `provider_settings` from GET with `change` applied.
fn change_provider_settings(s: &Server, key: &str, change: impl FnOnce(&mut Value)) {
    let got = s.call("GET", "/api/v1/system-config", key, None);
    s.expect(&got, 200);
    let mut settings = got.json()["data"]["config"]["provider_settings"].clone();
    change(&mut settings);
    let r = s.call("PUT", "/api/v1/system-config", key, Some(json!({"provider_settings": settings})));
    s.expect(&r, 200);
}

fn create_persona(s: &Server, key: &str, id: &str, prompt: &str, begin: &[&str]) {
    let body = json!({"persona_id": id, "system_prompt": prompt, "begin_dialogs": begin});
    s.expect(&s.call("POST", "/api/v1/personas", key, Some(body)), 200);
}

fn is_uuid4(s: &str) -> bool {
    let b = s.as_bytes();
    s.len() == 36
        && [8, 13, 18, 23].iter().all(|&i| b[i] == b'-')
        && b[14] == b'4'
        && s.chars().filter(|c| *c != '-').all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c))
}

fn session_detail(s: &Server, key: &str, id: &str, user: &str) -> Value {
    let r = s.call("GET", &format!("/api/v1/chat/sessions/{id}?username={user}"), key, None);
    s.expect(&r, 200);
    r.json()
}

// ---------------------------------------------------------------------------------------
// The built-in provider, errors and session ids

#[test]
fn the_builtin_provider_streams_astrbots_event_sequence() {
    let (s, k) = setup();
    let raw = chat_raw(&s, &k, json!({"username": "alice", "message": "How do I create an API key?"}));
    assert_eq!(raw.header("cache-control"), Some("no-cache"));
    let ev = events(&raw.text());
    let deltas = assert_streamed(&ev);
    let sid = ev[0]["session_id"].as_str().unwrap();
    assert!(is_uuid4(sid), "generated session id {sid:?}");
    // Exact shapes and AstrBot's framing: its clients match these bytes, not just the JSON.
    let text = raw.text();
    assert!(
        text.starts_with(&format!(
            "data: {{\"type\": \"session_id\", \"data\": null, \"session_id\": \"{sid}\"}}\n\n"
        )),
        "{text}"
    );
    let saved = &ev[1]["data"];
    assert!(saved["id"].is_i64() && saved["created_at"].as_str().unwrap().ends_with("+00:00"), "{saved}");
    assert!(is_uuid4(saved["llm_checkpoint_id"].as_str().unwrap()));
    let run_id = ev[2]["data"]["run_id"].as_str().unwrap();
    assert!(is_uuid4(run_id));
    assert_eq!(
        ev[2],
        json!({"type": "run_started", "data": {"run_id": run_id}, "streaming": false, "message_id": run_id})
    );
    assert_eq!(
        ev.last().unwrap(),
        &json!({"type": "end", "data": "", "streaming": false, "message_id": run_id})
    );
    let complete = event(&ev, "complete");
    assert!(complete.get("chain_type").is_none(), "{complete}");
    assert_eq!((complete["streaming"].clone(), complete["message_id"].clone()), (json!(true), json!(run_id)));
    let answer = reply(&ev);
    assert_eq!(answer, deltas.concat());
    assert!(answer.contains("api-keys"), "answer does not mention api-keys: {answer}");
    let complete = event(&ev, "complete");
    assert_eq!(complete["reasoning"], "");
    let sources = complete["sources"].as_array().unwrap();
    assert!(
        sources.iter().any(|src| src["url"].as_str().is_some_and(|u| u.starts_with("/docs/"))),
        "sources: {sources:?}"
    );
    let stats = &event(&ev, "agent_stats")["data"];
    for field in ["token_usage", "current_context_tokens", "start_time", "end_time", "time_to_first_token"] {
        assert!(stats.get(field).is_some(), "agent_stats lacks {field}: {stats}");
    }
}

#[test]
fn accept_json_gets_one_envelope() {
    let (s, k) = setup();
    let d = ask_json(&s, &k, json!({"username": "alice", "message": "How do I create an API key?"}));
    let keys: Vec<&str> = d.as_object().unwrap().keys().map(String::as_str).collect();
    let mut sorted = keys.clone();
    sorted.sort();
    assert_eq!(sorted, ["message_id", "response", "session_id", "sources"], "{d}");
    assert!(d["response"].as_str().unwrap().contains("api-keys"));
    assert!(is_uuid4(d["session_id"].as_str().unwrap()));
    assert!(is_uuid4(d["message_id"].as_str().unwrap()));
    let src = d["sources"].as_array().unwrap();
    assert!(!src.is_empty());
    for item in src {
        let mut fields: Vec<&str> = item.as_object().unwrap().keys().map(String::as_str).collect();
        fields.sort();
        assert_eq!(fields, ["title", "url"], "{item}");
    }
}

#[test]
fn enable_streaming_false_sends_one_plain_and_no_complete() {
    let (s, k) = setup();
    let ev = chat(
        &s,
        &k,
        json!({"username": "alice", "message": "How do I create an API key?", "enable_streaming": false}),
    );
    assert_eq!(
        kinds(&ev),
        ["session_id", "user_message_saved", "run_started", "agent_stats", "plain", "message_saved", "end"]
    );
    let plain = event(&ev, "plain");
    assert_eq!(plain["streaming"], false);
    assert!(plain["data"].as_str().unwrap().contains("api-keys"));
}

#[test]
fn flags_enable_streaming_wins_over_the_top_level_flag() {
    let (s, k) = setup();
    let ev = chat(
        &s,
        &k,
        json!({"username": "alice", "message": "How do I create an API key?", "enable_streaming": true,
               "flags": {"enable_streaming": false}}),
    );
    assert!(!kinds(&ev).contains(&"complete"), "{:?}", kinds(&ev));
}

/// Asserts that a chat with `body` is refused in AstrBot's way: HTTP 200, a JSON (not
/// SSE) answer, and exactly the error envelope with `message`.
fn refused_with_200(s: &Server, key: &str, body: Value, message: &str) {
    let r = s.check_error("POST", "/api/v1/chat", key, Some(body.clone()), 200, message);
    assert!(r.header("content-type").is_some_and(|c| c.starts_with("application/json")), "{body}");
}

#[test]
fn invalid_chat_requests_are_200_errors() {
    let s = Server::start();
    let (k, _) = s.create_key(&s.admin_token(), r#"{"scopes":["chat"]}"#);
    let reserved = "username is reserved for an AstrBot administrator";
    let empty = "Message content is empty (reply only is not allowed)";
    let mut cases = vec![
        (json!({"message": "hi"}), "Missing key: username"),
        (json!({"username": null, "message": "hi"}), "Missing key: username"),
        (json!({"username": "   ", "message": "hi"}), "username is empty"),
        (json!({"username": "astrbot", "message": "hi"}), reserved),
        (json!({"username": " astrbot ", "message": "hi"}), reserved),
        (json!({"username": "alice"}), "Missing key: message or files"),
        (json!({"username": "alice", "message": [{"type": "image", "attachment_id": "nope"}]}), empty),
        (json!({"username": "alice", "message": "hi", "config_id": "nope"}), "config_id not found: nope"),
        (json!({"username": "alice", "message": "hi", "config_name": "nope"}), "config_name not found: nope"),
    ];
    for message in
        [json!(""), json!("   "), json!([]), json!([{"type": "reply", "message_id": 1}]), Value::Null]
    {
        cases.push((json!({"username": "alice", "message": message}), empty));
    }
    for (body, message) in cases {
        refused_with_200(&s, &k, body, message);
    }
}

#[test]
fn a_chat_admin_key_may_use_the_admin_username() {
    let s = Server::start();
    let (chat_admin, _) = s.create_key(&s.admin_token(), r#"{"scopes":["chat","chat:admin"]}"#);
    let ev = chat(&s, &chat_admin, json!({"username": "astrbot", "message": "How do I create an API key?"}));
    assert_eq!(kinds(&ev).last(), Some(&"end"), "a chat:admin key may use the admin id");
}

#[test]
fn a_session_id_belongs_to_its_first_username() {
    let s = Server::start();
    let (k, _) = s.create_key(&s.admin_token(), r#"{"scopes":["chat"]}"#);
    chat(&s, &k, json!({"username": "alice", "session_id": "owned", "message": "hello"}));
    refused_with_200(
        &s,
        &k,
        json!({"username": "bob", "session_id": "owned", "message": "hi"}),
        "session_id belongs to another username",
    );
}

#[test]
fn files_stands_in_for_an_absent_message() {
    let s = Server::start();
    let (k, _) = s.create_key(&s.admin_token(), r#"{"scopes":["chat"]}"#);
    let ev = chat(&s, &k, json!({"username": "alice", "files": "How do I create an API key?"}));
    assert_eq!(kinds(&ev).last(), Some(&"end"));
}

#[test]
fn chat_type_auth_and_scope_errors_are_http_errors() {
    let s = Server::start();
    let admin = s.admin_token();
    let (k, _) = s.create_key(&admin, r#"{"scopes":["chat"]}"#);
    let (no_chat, _) = s.create_key(&admin, r#"{"scopes":["config"]}"#);
    let alice = json!({"username": "alice", "message": "hi"});
    for (key, body, status, message) in [
        (k.as_str(), json!({"username": 5, "message": "hi"}), 400, "username must be a string"),
        ("", alice.clone(), 401, "Missing API key"),
        (no_chat.as_str(), alice, 403, "Insufficient API key scope"),
    ] {
        s.check_error("POST", "/api/v1/chat", key, Some(body), status, message);
    }
}

#[test]
fn session_id_rules() {
    let (s, k) = setup();
    let sid = |body: Value| -> String {
        let ev = chat(&s, &k, body);
        assert_eq!(ev[0]["type"], "session_id");
        ev[0]["session_id"].as_str().unwrap().to_owned()
    };
    let m = "How do I create an API key?";
    assert_eq!(sid(json!({"username": "alice", "conversation_id": "c-1", "message": m})), "c-1");
    assert_eq!(
        sid(json!({"username": "alice", "session_id": "s-2", "conversation_id": "c-2", "message": m})),
        "s-2"
    );
    let generated =
        sid(json!({"username": "alice", "session_id": null, "conversation_id": "c-3", "message": m}));
    assert!(is_uuid4(&generated), "conversation_id is ignored when session_id is present: {generated}");
    let generated = sid(json!({"username": "alice", "session_id": "   ", "message": m}));
    assert!(is_uuid4(&generated), "{generated}");
    assert_eq!(sid(json!({"username": "alice", "session_id": "  s-1  ", "message": m})), "s-1");
    // The history of the trimmed id holds both messages.
    let d = session_detail(&s, &k, "s-1", "alice");
    let senders: Vec<&str> =
        d["data"]["messages"].as_array().unwrap().iter().map(|m| m["sender"].as_str().unwrap()).collect();
    assert_eq!(senders, ["user", "bot"]);
    let list = s.call("GET", "/api/v1/chat/sessions?username=alice&page_size=100", &k, None).json();
    let ids: Vec<&str> = list["data"]["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["session_id"].as_str().unwrap())
        .collect();
    assert!(ids.contains(&"s-1") && !ids.iter().any(|i| i.contains(' ')), "{ids:?}");
    assert!(!ids.contains(&"c-3"));
}

// ---------------------------------------------------------------------------------------
// OpenAI-compatible upstream

/// A server with a chat key, connected to a fake OpenAI-compatible upstream with `deltas`.
fn with_openai(deltas: &[&str]) -> (Server, String, FakeLlm) {
    let (s, k) = setup();
    let fake = FakeLlm::start(Script::reply(deltas));
    connect(&s, &k, &fake, "openai_chat_completion", &["sk-test-1"], json!({}));
    (s, k, fake)
}

#[test]
fn openai_deltas_and_usage_stream_as_astrbot_events() {
    let (s, k, _fake) = with_openai(&["Hel", "lo, ", "alice!"]);
    let ev = chat(&s, &k, json!({"username": "alice", "message": "hi there"}));
    let deltas = assert_streamed(&ev);
    assert_eq!(deltas, ["Hel", "lo, ", "alice!"], "each upstream delta is its own plain event");
    assert_eq!(reply(&ev), "Hello, alice!");
    let stats = &event(&ev, "agent_stats")["data"];
    assert_eq!(stats["token_usage"], json!({"input_other": 11, "input_cached": 0, "output": 7}));
    assert_eq!(stats["current_context_tokens"], 11);
    assert_eq!(event(&ev, "complete")["sources"], json!([]));
}

#[test]
fn the_openai_request_names_the_model_key_and_streaming() {
    let (s, k, fake) = with_openai(&["Hel", "lo, ", "alice!"]);
    chat(&s, &k, json!({"username": "alice", "message": "hi there"}));
    let req = fake.last();
    assert_eq!((req.method.as_str(), req.path.as_str()), ("POST", "/v1/chat/completions"));
    assert_eq!(req.header("authorization"), Some("Bearer sk-test-1"));
    assert_eq!(req.body["model"], "m");
    assert_eq!(req.body["stream"], true);
    assert_eq!(req.body["stream_options"], json!({"include_usage": true}));
    let msgs = req.messages();
    assert_eq!(msgs.last().unwrap(), &json!({"role": "user", "content": "hi there"}));
    assert_eq!(msgs[0]["role"], "system");
}

#[test]
fn a_close_delimited_upstream_stream_reads_the_same() {
    let (s, k, fake) = with_openai(&["Hel", "lo, ", "alice!"]);
    // No chunked framing: the body ends when the upstream closes the connection.
    fake.set(|sc| sc.close_delimited = true);
    let ev = chat(&s, &k, json!({"username": "alice", "message": "again"}));
    assert_eq!(assert_streamed(&ev), ["Hel", "lo, ", "alice!"]);
    assert_eq!(event(&ev, "agent_stats")["data"]["token_usage"]["output"], 7);
}

#[test]
fn the_persona_and_the_session_history_reach_the_upstream() {
    let (s, k, fake) = with_openai(&["First ", "reply."]);
    // A persona with an opening dialogue, as the default, and two turns in one session.
    create_persona(&s, &k, "tutor", "You are a patient tutor.", &["hi", "hello"]);
    change_provider_settings(&s, &k, |p| p["default_personality"] = json!("tutor"));
    let ev = chat(&s, &k, json!({"username": "alice", "session_id": "h-1", "message": "What is 2+2?"}));
    assert_eq!(reply(&ev), "First reply.");
    fake.set(|sc| *sc = Script::reply(&["Second reply."]));
    let ev = chat(&s, &k, json!({"username": "alice", "session_id": "h-1", "message": "And 3+3?"}));
    assert_eq!(reply(&ev), "Second reply.");
    assert_eq!(fake.requests().len(), 2);
    assert_eq!(
        fake.last().messages(),
        vec![
            json!({"role": "system", "content": "You are a patient tutor."}),
            json!({"role": "user", "content": "hi"}),
            json!({"role": "assistant", "content": "hello"}),
            json!({"role": "user", "content": "What is 2+2?"}),
            json!({"role": "assistant", "content": "First reply."}),
            json!({"role": "user", "content": "And 3+3?"}),
        ]
    );
}

#[test]
fn the_reply_is_stored_as_the_bots_message() {
    let (s, k, _fake) = with_openai(&["Second reply."]);
    chat(&s, &k, json!({"username": "alice", "session_id": "h-1", "message": "And 3+3?"}));
    let d = session_detail(&s, &k, "h-1", "alice");
    let last = d["data"]["messages"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["sender"], "bot");
    assert_eq!(last["content"]["message"], json!([{"type": "plain", "text": "Second reply."}]));
}

#[test]
fn enable_streaming_false_asks_the_upstream_for_one_completion() {
    let (s, k, fake) = with_openai(&["Whole ", "answer."]);
    let ev = chat(&s, &k, json!({"username": "alice", "message": "hi", "enable_streaming": false}));
    assert_eq!(
        kinds(&ev),
        ["session_id", "user_message_saved", "run_started", "agent_stats", "plain", "message_saved", "end"]
    );
    let plain = event(&ev, "plain");
    assert_eq!((plain["data"].clone(), plain["streaming"].clone()), (json!("Whole answer."), json!(false)));
    assert_eq!(event(&ev, "agent_stats")["data"]["token_usage"]["output"], 7);
    let req = fake.last();
    assert_eq!(req.body["stream"], false);
    assert!(req.body.get("stream_options").is_none(), "{}", req.body);
}

#[test]
fn json_mode_streams_from_the_upstream_unless_told_otherwise() {
    let (s, k, fake) = with_openai(&["Whole ", "answer."]);
    let d = ask_json(&s, &k, json!({"username": "alice", "message": "hi", "enable_streaming": false}));
    assert_eq!(d["response"], "Whole answer.");
    assert_eq!(d["sources"], json!([]));
    assert_eq!(fake.last().body["stream"], false);
    let d = ask_json(&s, &k, json!({"username": "alice", "session_id": "j-1", "message": "hi"}));
    assert_eq!((d["response"].clone(), d["session_id"].clone()), (json!("Whole answer."), json!("j-1")));
    assert_eq!(fake.last().body["stream"], true, "JSON mode still streams from the upstream by default");
    assert_eq!(fake.requests().len(), 2);
}

/// A server whose upstream answers `ok`, with a second key `sk-good` behind `sk-bad`.
fn with_two_keys() -> (Server, String, FakeLlm) {
    let (s, k) = setup();
    let fake = FakeLlm::start(Script::reply(&["ok"]));
    connect(&s, &k, &fake, "openai_chat_completion", &["sk-bad", "sk-good"], json!({}));
    (s, k, fake)
}

/// Chats once with the upstream first failing with `status`; returns the events and the
/// requests this chat made.
fn chat_through_a_failure(s: &Server, k: &str, fake: &FakeLlm, status: u16) -> (Vec<Value>, Vec<Recorded>) {
    fake.set(|sc| sc.failures = [status].into());
    let before = fake.requests().len();
    let ev = chat(s, k, json!({"username": "alice", "message": "hi"}));
    (ev, fake.requests().split_off(before))
}

#[test]
fn a_401_rotates_to_the_next_key_which_is_remembered() {
    let (s, k, fake) = with_two_keys();
    fake.set(|sc| sc.reject_keys = vec!["sk-bad".into()]);
    // 401 on the first key → the second key answers.
    let ev = chat(&s, &k, json!({"username": "alice", "message": "hi"}));
    assert_eq!(reply(&ev), "ok");
    let keys: Vec<String> = fake.requests().iter().map(|r| r.key().unwrap_or("").to_owned()).collect();
    assert_eq!(keys, ["sk-bad", "sk-good"]);
    // The key that worked is remembered: the next chat goes straight to it.
    let ev = chat(&s, &k, json!({"username": "alice", "message": "again"}));
    assert_eq!(reply(&ev), "ok");
    assert_eq!(fake.requests().len(), 3);
    assert_eq!(fake.last().key(), Some("sk-good"));
}

#[test]
fn a_5xx_is_retried_once_with_the_same_key() {
    let (s, k, fake) = with_two_keys();
    let (ev, made) = chat_through_a_failure(&s, &k, &fake, 500);
    assert_streamed(&ev);
    assert_eq!(reply(&ev), "ok");
    assert_eq!(made.len(), 2, "one failure, one retry");
    assert_eq!(made[0].key(), made[1].key(), "a 5xx does not rotate keys");
}

#[test]
fn a_429_is_retried_with_the_next_key() {
    let (s, k, fake) = with_two_keys();
    let (ev, made) = chat_through_a_failure(&s, &k, &fake, 429);
    assert_eq!(reply(&ev), "ok");
    assert_eq!(made.len(), 2);
    assert_ne!(made[0].key(), made[1].key(), "a 429 rotates keys");
}

#[test]
fn a_400_is_not_retried_and_becomes_the_reply_text() {
    let (s, k, fake) = with_two_keys();
    let (ev, made) = chat_through_a_failure(&s, &k, &fake, 400);
    // The stream ends normally.
    let k2 = kinds(&ev);
    assert_eq!(k2[..3], ["session_id", "user_message_saved", "run_started"]);
    assert_eq!(k2[k2.len() - 5..], ["plain", "agent_stats", "complete", "message_saved", "end"], "{k2:?}");
    let text = reply(&ev);
    assert!(text.starts_with("LLM 响应错误: Error code: 400"), "{text}");
    assert!(text.contains("fake failure 400"), "{text}");
    assert_eq!(made.len(), 1, "a 400 is not retried");
    assert!(!kinds(&ev).contains(&"error"));
}

#[test]
fn an_upstream_timeout_ends_the_run_with_an_error_text() {
    let (s, k) = setup();
    let fake = FakeLlm::start(Script::reply(&["too late"]));
    fake.set(|sc| sc.delay_head = Duration::from_secs(3));
    connect(&s, &k, &fake, "openai_chat_completion", &["sk-test-1"], json!({"timeout": 1}));
    change_provider_settings(&s, &k, |p| p["request_max_retries"] = json!(0));

    let started = Instant::now();
    let ev = chat(&s, &k, json!({"username": "alice", "message": "hi"}));
    let took = started.elapsed();
    let text = reply(&ev);
    assert!(text.starts_with("LLM 响应错误"), "{text}");
    assert!(!text.contains("too late"));
    assert_eq!(kinds(&ev).last(), Some(&"end"));
    assert!(took < Duration::from_millis(2900), "the 1 s timeout was not applied: {took:?}");
    assert_eq!(fake.requests().len(), 1, "request_max_retries 0 means no retry");
}

#[test]
fn a_slow_upstream_gets_heartbeats() {
    let (s, k) = setup();
    let fake = FakeLlm::start(Script::reply(&["slow ", "answer"]));
    fake.set(|sc| sc.delay_first = Duration::from_millis(1500));
    connect(&s, &k, &fake, "openai_chat_completion", &["sk-test-1"], json!({}));
    let body = chat_raw(&s, &k, json!({"username": "alice", "message": "hi"})).text();
    let beat = body.find(": heartbeat\n\n").unwrap_or_else(|| panic!("no heartbeat in {body}"));
    let started = body.find("\"run_started\"").unwrap();
    let first_plain = body.find("\"type\": \"plain\"").unwrap();
    assert!(started < beat && beat < first_plain, "heartbeat while waiting for the first delta:\n{body}");
    let ev = events(&body);
    assert_streamed(&ev);
    assert_eq!(reply(&ev), "slow answer");
}

#[test]
fn the_reply_is_stored_after_the_client_disconnects() {
    let (s, k) = setup();
    let fake = FakeLlm::start(Script::reply(&["one ", "two ", "three ", "four ", "five"]));
    fake.set(|sc| sc.delay_between = Duration::from_millis(300));
    connect(&s, &k, &fake, "openai_chat_completion", &["sk-test-1"], json!({}));

    let body = json!({"username": "alice", "session_id": "gone-1", "message": "count"}).to_string();
    let mut stream = TcpStream::connect(s.addr).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        stream,
        "POST /api/v1/chat HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {k}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n{body}",
        s.addr,
        body.len()
    )
    .unwrap();
    let mut reader = BufReader::new(stream);
    let mut seen = String::new();
    let mut line = String::new();
    while !seen.contains("\"type\": \"plain\"") {
        line.clear();
        assert!(reader.read_line(&mut line).unwrap() > 0, "stream ended early: {seen}");
        seen.push_str(&line);
    }
    assert!(!seen.contains("\"complete\""), "the first delta arrived before the end: {seen}");
    drop(reader);

    let mut last = Value::Null;
    let stored = eventually(10, || {
        last = session_detail(&s, &k, "gone-1", "alice");
        last["data"]["messages"].as_array().is_some_and(|m| {
            m.iter().any(|m| {
                m["sender"] == "bot" && m["content"]["message"][0]["text"] == "one two three four five"
            })
        })
    });
    assert!(stored, "the full reply was not stored: {last}");
}

// ---------------------------------------------------------------------------------------
// Attachments

/// Uploads one file; returns its attachment id.
fn upload(s: &Server, key: &str, name: &str, ctype: &str, bytes: &[u8]) -> String {
    crate::support::upload_file(s, key, name, Some(ctype), bytes)
}

fn base64(bytes: &[u8]) -> String {
    const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for c in bytes.chunks(3) {
        let n = (c[0] as u32) << 16 | (*c.get(1).unwrap_or(&0) as u32) << 8 | *c.get(2).unwrap_or(&0) as u32;
        for i in 0..4 {
            if i <= c.len() {
                out.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[test]
fn attachments_reach_the_upstream() {
    let (s, k) = setup();
    let fake = FakeLlm::start(Script::reply(&["A pixel."]));
    connect(&s, &k, &fake, "openai_chat_completion", &["sk-test-1"], json!({}));

    let png = upload(&s, &k, "pixel.png", "image/png", PNG);
    let ev = chat(
        &s,
        &k,
        json!({"username": "alice", "session_id": "att-1", "message": [
            {"type": "plain", "text": "what is this"}, {"type": "image", "attachment_id": png}]}),
    );
    assert_eq!(reply(&ev), "A pixel.");
    let content = fake.last().messages().last().unwrap()["content"].clone();
    let parts = content.as_array().unwrap_or_else(|| panic!("content is not an array: {content}"));
    assert_eq!(parts[0], json!({"type": "text", "text": "what is this"}));
    let url = parts[1]["image_url"]["url"].as_str().unwrap();
    assert_eq!(parts[1]["type"], "image_url");
    assert!(url.starts_with("data:image/png;base64,"), "{url}");
    assert_eq!(url, format!("data:image/png;base64,{}", base64(PNG)));
    // The stored user message names the attachment (no server path).
    let d = session_detail(&s, &k, "att-1", "alice");
    let user = &d["data"]["messages"][0]["content"]["message"];
    assert_eq!(user[1]["attachment_id"], png.as_str());
    assert!(user[1].get("path").is_none(), "{user}");

    let txt = upload(&s, &k, "notes.txt", "text/plain", b"remember the milk");
    chat(
        &s,
        &k,
        json!({"username": "alice", "message": [
            {"type": "plain", "text": "summarise"}, {"type": "file", "attachment_id": txt}]}),
    );
    let content = fake.last().messages().last().unwrap()["content"].clone();
    let text = content.as_str().unwrap_or_else(|| panic!("text-only content is a string: {content}"));
    assert!(text.contains("summarise"), "{text}");
    assert!(text.contains("[File: notes.txt]\nremember the milk"), "{text}");
}

// ---------------------------------------------------------------------------------------
// Anthropic upstream

/// A server connected to a fake Anthropic upstream, with persona `tutor` as the default.
fn with_anthropic() -> (Server, String, FakeLlm) {
    let (s, k) = setup();
    let fake = FakeLlm::start(Script::reply(&["Bonjour", " ", "alice"]));
    fake.set(|sc| sc.usage = (21, 5));
    connect(&s, &k, &fake, "anthropic_chat_completion", &["sk-ant-1"], json!({}));
    create_persona(&s, &k, "tutor", "You are a patient tutor.", &[]);
    change_provider_settings(&s, &k, |p| p["default_personality"] = json!("tutor"));
    (s, k, fake)
}

#[test]
fn anthropic_streams_as_astrbot_events() {
    let (s, k, _fake) = with_anthropic();
    let ev = chat(&s, &k, json!({"username": "alice", "message": "salut"}));
    assert_eq!(assert_streamed(&ev), ["Bonjour", " ", "alice"]);
    assert_eq!(reply(&ev), "Bonjour alice");
    assert_eq!(
        event(&ev, "agent_stats")["data"]["token_usage"],
        json!({"input_other": 21, "input_cached": 0, "output": 5})
    );
}

#[test]
fn the_anthropic_request_carries_the_system_prompt_apart() {
    let (s, k, fake) = with_anthropic();
    chat(&s, &k, json!({"username": "alice", "message": "salut"}));
    let req = fake.last();
    assert_eq!(req.path, "/v1/messages");
    assert_eq!(req.header("x-api-key"), Some("sk-ant-1"));
    assert_eq!(req.header("anthropic-version"), Some("2023-06-01"));
    assert_eq!(req.header("authorization"), None);
    assert_eq!(req.body["model"], "m");
    assert_eq!(req.body["stream"], true);
    assert_eq!(req.body["system"], "You are a patient tutor.");
    assert_eq!(
        req.messages(),
        vec![json!({"role": "user", "content": "salut"})],
        "no system role in messages"
    );
}

#[test]
fn anthropic_without_streaming_sends_one_plain() {
    let (s, k, fake) = with_anthropic();
    let ev = chat(&s, &k, json!({"username": "alice", "message": "salut", "enable_streaming": false}));
    let plain = event(&ev, "plain");
    assert_eq!((plain["data"].clone(), plain["streaming"].clone()), (json!("Bonjour alice"), json!(false)));
    assert_eq!(fake.last().body["stream"], false);
    assert_eq!(event(&ev, "agent_stats")["data"]["token_usage"]["input_other"], 21);
}

// ---------------------------------------------------------------------------------------
// Commands

#[test]
fn commands_are_answered_by_the_server() {
    let (s, k) = setup();
    let fake = FakeLlm::start(Script::reply(&["model text"]));
    connect(&s, &k, &fake, "openai_chat_completion", &["sk-test-1"], json!({}));
    create_persona(&s, &k, "tutor", "You are a patient tutor.", &[]);

    let ev = chat(&s, &k, json!({"username": "alice", "session_id": "cmd-1", "message": "/help"}));
    assert_streamed(&ev);
    let help = reply(&ev);
    assert!(help.starts_with("Commands:") && help.contains("/reset"), "{help}");
    assert!(fake.requests().is_empty(), "a command never reaches the model");

    let d = ask_json(&s, &k, json!({"username": "alice", "session_id": "cmd-1", "message": "/provider"}));
    assert_eq!(d["response"], "Permission denied");
    let d = ask_json(&s, &k, json!({"username": "alice", "session_id": "cmd-1", "message": "/sid"}));
    assert!(d["response"].as_str().unwrap().contains("webchat:FriendMessage:webchat!alice!cmd-1"), "{d}");
    assert!(fake.requests().is_empty());

    // The default persona first, then /persona tutor switches this session.
    ask_json(&s, &k, json!({"username": "alice", "session_id": "cmd-1", "message": "first question"}));
    assert_ne!(fake.last().messages()[0]["content"], "You are a patient tutor.");
    let d =
        ask_json(&s, &k, json!({"username": "alice", "session_id": "cmd-1", "message": "/persona tutor"}));
    assert_eq!(d["response"], "Persona switched to tutor.");
    assert_eq!(fake.requests().len(), 1);
    ask_json(&s, &k, json!({"username": "alice", "session_id": "cmd-1", "message": "second question"}));
    let msgs = fake.last().messages();
    assert_eq!(msgs[0], json!({"role": "system", "content": "You are a patient tutor."}));
    assert!(msgs.iter().any(|m| m["content"] == "first question"), "history before the switch is kept");
    assert!(
        !msgs
            .iter()
            .any(|m| m["content"] == "/persona tutor" || m["content"] == "Persona switched to tutor."),
        "a command exchange never reaches the model: {msgs:?}"
    );
    // Another session keeps the default persona.
    ask_json(&s, &k, json!({"username": "alice", "session_id": "cmd-2", "message": "elsewhere"}));
    assert_ne!(fake.last().messages()[0]["content"], "You are a patient tutor.");

    // /reset empties the history.
    let d = ask_json(&s, &k, json!({"username": "alice", "session_id": "cmd-1", "message": "/reset"}));
    assert_eq!(d["response"], "History cleared.");
    let detail = session_detail(&s, &k, "cmd-1", "alice");
    let texts: Vec<String> = detail["data"]["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| m["content"]["message"][0]["text"].as_str().map(str::to_owned))
        .collect();
    assert!(
        !texts.iter().any(|t| t.contains("question") || t == "model text"),
        "history left after /reset: {texts:?}"
    );
    ask_json(&s, &k, json!({"username": "alice", "session_id": "cmd-1", "message": "fresh start"}));
    assert_eq!(
        fake.last().messages(),
        vec![
            json!({"role": "system", "content": "You are a patient tutor."}),
            json!({"role": "user", "content": "fresh start"}),
        ]
    );
}

// ---------------------------------------------------------------------------------------
// Sessions

#[test]
fn session_routes() {
    let (s, k) = setup();
    let first = "Tell me everything about the configuration of providers, please";
    ask_json(&s, &k, json!({"username": "alice", "session_id": "a-1", "message": first}));
    ask_json(
        &s,
        &k,
        json!({"username": "alice", "session_id": "a-1", "message": "How do I create an API key?"}),
    );
    ask_json(&s, &k, json!({"username": "alice", "session_id": "a-2", "message": "short"}));
    ask_json(&s, &k, json!({"username": "bob", "session_id": "b-1", "message": "bob here"}));

    let r = s.call("GET", "/api/v1/chat/sessions?username=alice", &k, None);
    s.expect(&r, 200);
    let v = r.json();
    assert_eq!(v["status"], "ok");
    let d = &v["data"];
    assert_eq!(
        (d["page"].clone(), d["page_size"].clone(), d["total"].clone()),
        (json!(1), json!(20), json!(2))
    );
    let sessions = d["sessions"].as_array().unwrap();
    let ids: Vec<&str> = sessions.iter().map(|x| x["session_id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["a-2", "a-1"], "newest activity first");
    let a1 = &sessions[1];
    let mut fields: Vec<&str> = a1.as_object().unwrap().keys().map(String::as_str).collect();
    fields.sort();
    assert_eq!(
        fields,
        ["created_at", "creator", "display_name", "is_group", "platform_id", "session_id", "updated_at"]
    );
    assert_eq!(a1["platform_id"], "webchat");
    assert_eq!(a1["creator"], "alice");
    assert_eq!(a1["is_group"], 0);
    assert_eq!(a1["display_name"], first.chars().take(40).collect::<String>(), "the first message names it");
    assert!(a1["created_at"].as_str().unwrap().ends_with("+00:00"));
    assert!(a1["updated_at"].as_str().unwrap() >= a1["created_at"].as_str().unwrap());

    let page = |q: &str| s.call("GET", &format!("/api/v1/chat/sessions?{q}"), &k, None).json();
    let clamped = page("username=alice&page=0&page_size=1000");
    assert_eq!(
        (clamped["data"]["page"].clone(), clamped["data"]["page_size"].clone()),
        (json!(1), json!(100))
    );
    let clamped = page("username=alice&page=-3&page_size=0");
    assert_eq!((clamped["data"]["page"].clone(), clamped["data"]["page_size"].clone()), (json!(1), json!(1)));
    let python = page("username=alice&page=%202%20&page_size=1_0");
    assert_eq!((python["data"]["page"].clone(), python["data"]["page_size"].clone()), (json!(2), json!(10)));
    let one = page("username=alice&page=2&page_size=1");
    assert_eq!(one["data"]["sessions"][0]["session_id"], "a-1");
    assert_eq!(one["data"]["total"], 2);
    assert_eq!(page("username=alice&page=9")["data"]["sessions"], json!([]));
    assert_eq!(page("username=%20alice%20")["data"]["total"], 2, "the username is trimmed");
    let soft = |q: &str, message: &str| {
        let r = s.call("GET", &format!("/api/v1/chat/sessions{q}"), &k, None);
        s.expect_error(&r, 200, message);
    };
    soft("?username=alice&page=1.5", "page and page_size must be integers");
    soft("?username=alice&page_size=", "page and page_size must be integers");
    soft("", "Missing key: username");
    soft("?username=%20", "username is empty");

    // One session, oldest message first.
    let detail = session_detail(&s, &k, "a-1", "alice");
    assert_eq!(detail["data"]["session"]["session_id"], "a-1");
    let msgs = detail["data"]["messages"].as_array().unwrap();
    let senders: Vec<&str> = msgs.iter().map(|m| m["sender"].as_str().unwrap()).collect();
    assert_eq!(senders, ["user", "bot", "user", "bot"]);
    assert_eq!(msgs[0]["content"]["message"], json!([{"type": "plain", "text": first}]));
    assert_eq!(msgs[0]["sender_name"], "alice");
    let ids: Vec<i64> = msgs.iter().map(|m| m["id"].as_i64().unwrap()).collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");
    assert_eq!(msgs[0]["llm_checkpoint_id"], msgs[1]["llm_checkpoint_id"], "one checkpoint per exchange");
    let r = s.call("GET", "/api/v1/chat/sessions/a-1?username=bob", &k, None);
    s.expect_error(&r, 200, "session_id belongs to another username");
    let r = s.call("DELETE", "/api/v1/chat/sessions/a-1?username=bob", &k, None);
    s.expect_error(&r, 200, "session_id belongs to another username");

    let r = s.call("DELETE", "/api/v1/chat/sessions/a-1?username=alice", &k, None);
    s.expect(&r, 200);
    assert_eq!(r.json()["data"], json!({"session_id": "a-1"}));
    assert_eq!(page("username=alice")["data"]["total"], 1);
    let r = s.call("GET", "/api/v1/chat/sessions/a-1?username=alice", &k, None);
    s.expect_error(&r, 200, "Session not found");
    assert_eq!(page("username=bob")["data"]["total"], 1, "other users untouched");
}

#[test]
fn an_http_1_0_client_gets_a_close_delimited_stream() {
    use std::io::{Read, Write};
    let (s, k) = setup();
    let mut c = std::net::TcpStream::connect(s.addr).unwrap();
    let body = json!({"username": "alice", "message": "/sid"}).to_string();
    write!(c, "POST /api/v1/chat HTTP/1.0\r\nAuthorization: Bearer {k}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}", body.len()).unwrap();
    let mut raw = String::new();
    c.read_to_string(&mut raw).unwrap();
    assert!(raw.starts_with("HTTP/1.0 200 OK\r\n"), "{raw}");
    assert!(!raw.to_ascii_lowercase().contains("transfer-encoding"), "{raw}");
    assert!(raw.contains("data: {\"type\": \"session_id\""), "{raw}");
    assert!(raw.contains("\"type\": \"end\""), "the whole stream arrives before the close: {raw}");
    assert!(!raw.contains("\r\n0\r\n"), "no chunk framing: {raw}");
}

#[test]
fn an_upstream_that_never_ends_its_stream_grew_the_reply_without_bound() {
    // A provider answering with deltas forever: the reply is cut at the stream budget
    // (2 MiB) instead of growing memory and the stored history until the host runs out.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}/v1", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let mut conn = conn;
                let mut reader = BufReader::new(conn.try_clone().unwrap());
                let mut line = String::new();
                while reader.read_line(&mut line).is_ok_and(|n| n > 2) {
                    line.clear();
                }
                let _ = conn.write_all(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\r\n");
                let delta = format!(
                    "data: {{\"choices\":[{{\"delta\":{{\"content\":\"{}\"}}}}]}}\n\n",
                    "A".repeat(8000)
                );
                // Bounded so the thread ends: far past the budget.
                for _ in 0..10_000 {
                    if conn.write_all(delta.as_bytes()).is_err() {
                        return;
                    }
                }
            });
        }
    });
    let s = Server::start();
    let (key, _) = s.create_key(&s.admin_token(), r#"{"scopes":["chat","provider"]}"#);
    let source = json!({"id": "endless", "type": "openai_chat_completion", "key": ["k"], "api_base": base});
    s.expect(&s.call("POST", "/api/v1/provider-sources", &key, Some(source)), 200);
    let provider = json!({"id": "endless/m", "provider_source_id": "endless", "model": "m"});
    s.expect(&s.call("POST", "/api/v1/providers", &key, Some(provider)), 200);
    let r = s.request(
        "POST",
        "/api/v1/chat",
        &[("Authorization", &format!("Bearer {key}")), ("Accept", "application/json")],
        Some(&json!({"username": "u", "message": "hi", "selected_provider": "endless/m"}).to_string()),
    );
    s.expect(&r, 200);
    let reply = r.json()["data"]["response"].as_str().unwrap().len();
    assert!(reply > 1_000_000 && reply <= 2 << 20, "reply of {reply} bytes");
    assert!(s.log().contains("provider stream cut"), "{}", s.log());
}
