//! Proactive messages reach only the user they name: a UMO
//! `webchat!<username>!<session_id>` delivers only into a session `<username>` owns,
//! creating it for them if it does not exist, and deleting a session deletes the proactive
//! messages waiting in it.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};

use serde_json::{Value, json};

use crate::support::{Server, multipart};

fn setup() -> (Server, String) {
    let s = Server::start();
    let (key, _) = s.create_key(&s.admin_token(), r#"{"scopes":["im","chat","file"]}"#);
    (s, key)
}

/// A chat turn that needs no model (`/sid` is a command).
fn chat(s: &Server, k: &str, username: &str, session: &str) -> crate::support::Resp {
    s.call(
        "POST",
        "/api/v1/chat",
        k,
        Some(json!({"username": username, "session_id": session, "message": "/sid"})),
    )
}

fn im(s: &Server, k: &str, umo: &str, message: Value) -> crate::support::Resp {
    s.call("POST", "/api/v1/im/message", k, Some(json!({"umo": umo, "message": message})))
}

/// The session's messages as `username` reads them, or the error envelope.
fn history(s: &Server, k: &str, username: &str, session: &str) -> Value {
    s.call("GET", &format!("/api/v1/chat/sessions/{session}?username={username}"), k, None).json()
}

fn texts(history: &Value) -> Vec<String> {
    history["data"]["messages"]
        .as_array()
        .map(|m| {
            m.iter().filter_map(|m| m["content"]["message"][0]["text"].as_str().map(str::to_owned)).collect()
        })
        .unwrap_or_default()
}

fn session_ids(s: &Server, k: &str, username: &str) -> Vec<String> {
    let r = s.call("GET", &format!("/api/v1/chat/sessions?username={username}"), k, None).json();
    r["data"]["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["session_id"].as_str().unwrap().to_owned())
        .collect()
}

fn attachment_files(s: &Server) -> usize {
    std::fs::read_dir(s.data.path().join("attachments")).map(|d| d.count()).unwrap_or(0)
}

fn upload(s: &Server, k: &str) -> String {
    let (ct, body) = multipart(&[("file", Some("agenda.txt"), Some("text/plain"), b"standup at 10")]);
    let auth = format!("Bearer {k}");
    let r = crate::support::http(
        s.addr,
        "POST",
        "/api/v1/file",
        &[("Authorization", &auth), ("Content-Type", &ct)],
        Some(&body),
    );
    s.expect(&r, 200);
    r.json()["data"]["attachment_id"].as_str().unwrap().to_owned()
}

#[test]
fn a_reminder_for_a_deleted_session_never_reaches_the_next_user_of_its_id() {
    let (s, k) = setup();
    s.expect(&chat(&s, &k, "alice", "demo"), 200);
    let r = s.call("DELETE", "/api/v1/chat/sessions/demo?username=alice", &k, None);
    assert_eq!(r.json()["status"], "ok", "{}", r.text());

    for _ in 0..2 {
        let r = im(&s, &k, "webchat:FriendMessage:webchat!alice!demo", json!("Reminder: standup at 10"));
        assert_eq!(r.json(), json!({"status": "ok", "message": null, "data": {}}));
    }

    // The message made `demo` alice's again: bob cannot claim it, as for any chat.
    s.expect_error(&chat(&s, &k, "bob", "demo"), 200, "session_id belongs to another username");
    assert!(session_ids(&s, &k, "bob").is_empty());
    assert_eq!(
        history(&s, &k, "bob", "demo"),
        json!({"status": "error", "message": "session_id belongs to another username"})
    );

    // Alice finds both reminders when she opens demo again, and may go on chatting in it.
    assert_eq!(session_ids(&s, &k, "alice"), ["demo"]);
    let seen = history(&s, &k, "alice", "demo");
    assert_eq!(seen["data"]["session"]["creator"], "alice");
    assert_eq!(texts(&seen), ["Reminder: standup at 10", "Reminder: standup at 10"]);
    assert!(seen["data"]["messages"].as_array().unwrap().iter().all(|m| m["sender"] == "bot"));
    s.expect(&chat(&s, &k, "alice", "demo"), 200);
    assert_eq!(
        texts(&history(&s, &k, "alice", "demo"))[..2],
        ["Reminder: standup at 10", "Reminder: standup at 10"]
    );
}

#[test]
fn a_umo_naming_another_owners_session_is_refused_and_stores_nothing() {
    let (s, k) = setup();
    s.expect(&chat(&s, &k, "alice", "mine"), 200);
    let attachment = upload(&s, &k);
    let before = history(&s, &k, "alice", "mine");
    let files = attachment_files(&s);

    let message =
        json!([{"type": "plain", "text": "for bob"}, {"type": "file", "attachment_id": attachment}]);
    for path in ["/api/v1/im/message", "/api/v1/im/messages"] {
        let r = s.call(
            "POST",
            path,
            &k,
            Some(json!({"umo": "webchat:FriendMessage:webchat!bob!mine", "message": message})),
        );
        s.expect_error(&r, 400, "session_id belongs to another username");
    }

    assert_eq!(history(&s, &k, "alice", "mine"), before, "alice's history is untouched");
    assert_eq!(attachment_files(&s), files, "no hard link left behind");
    assert!(session_ids(&s, &k, "bob").is_empty(), "no session made for bob");
    assert_eq!(session_ids(&s, &k, "alice"), ["mine"]);

    // The rule is stated where a client reads about the route.
    let doc = s.get("/api/v1/openapi.json", &[]).json();
    for path in ["/api/v1/im/message", "/api/v1/im/messages"] {
        let description = doc["paths"][path]["post"]["description"].as_str().unwrap_or_default();
        assert!(description.contains("session_id belongs to another username"), "{path}: {description}");
    }
}

#[test]
fn deleting_a_session_deletes_its_pending_proactive_messages() {
    let (s, k) = setup();
    let attachment = upload(&s, &k);
    // Sent before carol ever chatted: the message waits in a session made for her.
    let message = json!([{"type": "plain", "text": "waiting for carol"}, {"type": "file", "attachment_id": attachment}]);
    s.expect(&im(&s, &k, "webchat:FriendMessage:webchat!carol!later", message), 200);
    assert_eq!(session_ids(&s, &k, "carol"), ["later"]);
    assert_eq!(texts(&history(&s, &k, "carol", "later")), ["waiting for carol"]);

    let r = s.call("DELETE", "/api/v1/chat/sessions/later?username=carol", &k, None);
    assert_eq!(r.json(), json!({"status": "ok", "message": null, "data": {"session_id": "later"}}));
    assert!(session_ids(&s, &k, "carol").is_empty());

    // Whoever uses the id next starts with an empty history.
    s.expect(&chat(&s, &k, "dave", "later"), 200);
    let next = history(&s, &k, "dave", "later");
    assert_eq!(next["data"]["messages"].as_array().unwrap().len(), 2, "dave's /sid and its answer: {next}");
    assert!(!texts(&next).iter().any(|t| t == "waiting for carol"));

    // The same for a message sent into a session that already existed.
    s.expect(&chat(&s, &k, "erin", "known"), 200);
    s.expect(&im(&s, &k, "webchat:FriendMessage:webchat!erin!known", json!("pending for erin")), 200);
    s.call("DELETE", "/api/v1/chat/sessions/known?username=erin", &k, None);
    s.expect(&chat(&s, &k, "erin", "known"), 200);
    assert!(!texts(&history(&s, &k, "erin", "known")).iter().any(|t| t == "pending for erin"));
}

#[test]
fn a_run_outliving_its_deleted_session_never_mixes_with_the_next_owners_messages() {
    let (s, k) = setup();
    let admin = s.admin_token();
    // An upstream that accepts and never answers keeps bob's run open for its timeout.
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}/v1", silent.local_addr().unwrap());
    let source =
        json!({"id": "slow", "type": "openai_chat_completion", "api_base": base, "timeout": 2, "key": ["k"]});
    s.expect(&s.call("POST", "/api/v1/provider-sources", &admin, Some(source)), 200);
    let provider = json!({"id": "slow/m", "provider_source_id": "slow", "model": "m"});
    s.expect(&s.call("POST", "/api/v1/providers", &admin, Some(provider)), 200);
    let settings = json!({"provider_settings": {"request_max_retries": 0}});
    s.expect(&s.call("PUT", "/api/v1/system-config", &admin, Some(settings)), 200);

    let mut c = TcpStream::connect(s.addr).unwrap();
    let body = json!({"username": "bob", "session_id": "x", "message": "hi"}).to_string();
    write!(c, "POST /api/v1/chat HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {k}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}", body.len()).unwrap();
    let mut reader = BufReader::new(c);
    let mut events: Vec<Value> = Vec::new();
    let mut line = String::new();
    let mut sent = false;
    while reader.read_line(&mut line).unwrap() > 0 {
        if let Some(data) = line.trim_end().strip_prefix("data: ") {
            let event: Value = serde_json::from_str(data).unwrap();
            if event["type"] == "run_started" && !sent {
                sent = true;
                let r = s.call("DELETE", "/api/v1/chat/sessions/x?username=bob", &k, None);
                assert_eq!(r.json()["status"], "ok", "{}", r.text());
                s.expect(&im(&s, &k, "webchat:FriendMessage:webchat!alice!x", json!("only for alice")), 200);
            }
            let done = event["type"] == "end";
            events.push(event);
            if done {
                break;
            }
        }
        line.clear();
    }
    assert!(sent && events.last().is_some_and(|e| e["type"] == "end"), "{events:?}");
    assert!(
        !events.iter().any(|e| e["data"] == "only for alice"),
        "bob's stream saw alice's message: {events:?}"
    );
    assert_eq!(texts(&history(&s, &k, "alice", "x")), ["only for alice"]);
    drop(silent);
}
