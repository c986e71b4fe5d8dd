//! Proactive IM messages as AstrBot's open API takes them: strict validation, UMO parsing,
//! webchat delivery into a live chat stream or into the conversation's history.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};

use serde_json::{Value, json};

use crate::support::Server;

fn setup() -> (Server, String) {
    let s = Server::start();
    let (key, _) = s.create_key(&s.admin_token(), r#"{"scopes":["im","chat","provider","config"]}"#);
    (s, key)
}

#[test]
fn strict_validation_messages() {
    let (s, k) = setup();
    let umo = "webchat:FriendMessage:webchat!alice!s1";
    let cases = [
        (json!({"umo": umo, "message": null}), "Missing key: message"),
        (json!({"message": "hi"}), "Missing key: umo"),
        (json!({"umo": "", "message": "hi"}), "Missing key: umo"),
        (
            json!({"umo": "nope", "message": "hi"}),
            "Invalid umo: not enough values to unpack (expected 3, got 1)",
        ),
        (
            json!({"umo": "a:b", "message": "hi"}),
            "Invalid umo: not enough values to unpack (expected 3, got 2)",
        ),
        (json!({"umo": "webchat:Foo:x", "message": "hi"}), "Invalid umo: 'Foo' is not a valid MessageType"),
        (
            json!({"umo": "telegram:GroupMessage:1", "message": "hi"}),
            "Bot not found or not running for platform: telegram",
        ),
        (json!({"umo": umo}), "message must be a string or list"),
        (json!({"umo": umo, "message": 5}), "message must be a string or list"),
        (json!({"umo": umo, "message": ["x"]}), "message part must be an object"),
        (json!({"umo": umo, "message": [{"type": "reply"}]}), "reply part missing message_id"),
        (json!({"umo": umo, "message": [{"type": "sticker"}]}), "unsupported message part type: sticker"),
        (json!({"umo": umo, "message": [{"text": "x"}]}), "unsupported message part type: "),
        (json!({"umo": umo, "message": [{"type": "image"}]}), "image part missing attachment_id"),
        (
            json!({"umo": umo, "message": [{"type": "file", "attachment_id": "nope"}]}),
            "attachment not found: nope",
        ),
        (json!({"umo": umo, "message": "   "}), "Message content is empty (reply only is not allowed)"),
        (
            json!({"umo": umo, "message": [{"type": "reply", "message_id": 1}]}),
            "Message content is empty (reply only is not allowed)",
        ),
    ];
    for path in ["/api/v1/im/message", "/api/v1/im/messages"] {
        for (body, message) in &cases {
            let r = s.call("POST", path, &k, Some(body.clone()));
            assert_eq!(r.status, 400, "{body} -> {}", r.text());
            assert_eq!(r.json(), json!({"status": "error", "message": message}), "{body}");
        }
    }
    let (chat_only, _) = s.create_key(&s.admin_token(), r#"{"scopes":["chat"]}"#);
    s.expect_error(
        &s.call("POST", "/api/v1/im/message", &chat_only, Some(json!({"umo": umo, "message": "x"}))),
        403,
        "Insufficient API key scope",
    );
}

#[test]
fn delivered_into_the_history_when_no_stream_is_live() {
    let (s, k) = setup();
    let r = s.call(
        "POST",
        "/api/v1/chat",
        &k,
        Some(json!({"username": "alice", "session_id": "s-im", "message": "/sid"})),
    );
    s.expect(&r, 200);
    let r = s.call("POST", "/api/v1/im/message", &k, Some(json!({"umo": "webchat:FriendMessage:webchat!alice!s-im", "message": [{"type": "plain", "text": "hello from cron"}]})));
    assert_eq!(r.json(), json!({"status": "ok", "message": null, "data": {}}));
    let session = s.call("GET", "/api/v1/chat/sessions/s-im?username=alice", &k, None).json();
    let messages = session["data"]["messages"].as_array().unwrap().clone();
    let last = messages.last().unwrap();
    assert_eq!(last["sender"], "bot");
    assert_eq!(last["content"]["message"][0]["text"], "hello from cron");
    // A plain session part works too (any message type).
    let r = s.call(
        "POST",
        "/api/v1/im/messages",
        &k,
        Some(json!({"umo": "webchat:GroupMessage:s-im", "message": "second"})),
    );
    s.expect(&r, 200);
    let session = s.call("GET", "/api/v1/chat/sessions/s-im?username=alice", &k, None).json();
    assert_eq!(
        session["data"]["messages"].as_array().unwrap().last().unwrap()["content"]["message"][0]["text"],
        "second"
    );
}

#[test]
fn delivered_into_a_live_stream() {
    let (s, k) = setup();
    // An upstream that accepts and never answers keeps the run open for its timeout.
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}/v1", silent.local_addr().unwrap());
    s.expect(&s.call("POST", "/api/v1/provider-sources", &k, Some(json!({"id": "slow", "type": "openai_chat_completion", "api_base": base, "timeout": 2, "key": ["k"]}))), 200);
    s.expect(
        &s.call(
            "POST",
            "/api/v1/providers",
            &k,
            Some(json!({"id": "slow/m", "provider_source_id": "slow", "model": "m"})),
        ),
        200,
    );
    s.expect(
        &s.call(
            "PUT",
            "/api/v1/system-config",
            &k,
            Some(json!({"provider_settings": {"request_max_retries": 0}})),
        ),
        200,
    );

    let mut c = TcpStream::connect(s.addr).unwrap();
    let body = json!({"username": "alice", "session_id": "live", "message": "hi"}).to_string();
    write!(c, "POST /api/v1/chat HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {k}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}", body.len()).unwrap();
    let mut reader = BufReader::new(c);
    let mut events: Vec<Value> = Vec::new();
    let mut line = String::new();
    let mut sent = false;
    loop {
        line.clear();
        if reader.read_line(&mut line).unwrap() == 0 {
            break;
        }
        let Some(data) = line.trim_end().strip_prefix("data: ") else { continue };
        let event: Value = serde_json::from_str(data).unwrap();
        if event["type"] == "run_started" && !sent {
            sent = true;
            let r = s.call("POST", "/api/v1/im/message", &k, Some(json!({"umo": "webchat:FriendMessage:webchat!alice!live", "message": "pushed while streaming"})));
            s.expect(&r, 200);
        }
        let done = event["type"] == "end";
        events.push(event);
        if done {
            break;
        }
    }
    let pushed = events
        .iter()
        .position(|e| e["type"] == "plain" && e["data"] == "pushed while streaming")
        .expect("the push reached the stream");
    assert_eq!(events[pushed]["streaming"], true);
    assert_eq!(events[pushed + 1]["type"], "complete");
    assert_eq!(events[pushed + 1]["data"], "pushed while streaming");
    assert!(events[pushed + 1].get("reasoning").is_none(), "the proactive complete shape");
    let last_plain = events.iter().rev().find(|e| e["type"] == "plain").unwrap();
    assert!(
        last_plain["data"].as_str().unwrap().starts_with("LLM 响应错误"),
        "the run ended on the upstream timeout"
    );
    let history = s.call("GET", "/api/v1/chat/sessions/live?username=alice", &k, None).json();
    let texts: Vec<String> = history["data"]["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["content"]["message"][0]["text"].as_str().unwrap_or("").to_owned())
        .collect();
    assert!(texts.iter().any(|t| t == "pushed while streaming"));
    drop(silent);
}
