//! `kill -9` in the middle of a chat stream loses no stored message and leaves no history
//! half-written: after a restart the session lists the user message, and the reply is
//! either wholly stored or absent.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};

use crate::fake_llm::{FakeLlm, Script};
use crate::support::{Server, TempDir};

#[test]
fn kill_9_mid_stream_keeps_the_user_message_and_a_consistent_history() {
    let data = Arc::new(TempDir::new());
    let mut s = Server::start_with(data.clone(), &[]);
    let admin = s.admin_token();
    let (key, _) = s.create_key(&admin, r#"{"scopes":["chat","provider"]}"#);
    let mut script = Script::reply(&["one ", "two ", "three ", "four ", "five"]);
    script.delay_between = Duration::from_millis(300);
    let fake = FakeLlm::start(script);
    crate::fake_llm::connect(&s, &key, &fake, "openai_chat_completion", &["k"], json!({}));

    let mut c = TcpStream::connect(s.addr).unwrap();
    let body = json!({"username":"alice","session_id":"crash-1","message":"tell me a story"}).to_string();
    write!(c, "POST /api/v1/chat HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}", body.len()).unwrap();
    let mut reader = BufReader::new(c);
    let mut line = String::new();
    loop {
        line.clear();
        assert!(reader.read_line(&mut line).unwrap() > 0, "the stream ended before a plain event");
        if line.contains("\"type\": \"plain\"") {
            break;
        }
    }
    // SIGKILL, mid-stream.
    s.child.kill().unwrap();
    s.child.wait().unwrap();
    drop(s);

    let s = Server::start_with(data, &[]);
    let r = s.call("GET", "/api/v1/chat/sessions/crash-1?username=alice", &key, None);
    s.expect(&r, 200);
    let messages = r.json()["data"]["messages"].as_array().unwrap().clone();
    assert_eq!(messages[0]["sender"], "user");
    assert_eq!(messages[0]["content"]["message"][0]["text"], "tell me a story");
    for m in &messages[1..] {
        assert_eq!(m["sender"], "bot");
        assert_eq!(m["content"]["message"][0]["text"], "one two three four five", "a stored reply is whole");
    }
    let list = s.call("GET", "/api/v1/chat/sessions?username=alice", &key, None).json();
    assert_eq!(list["data"]["total"], 1);
    // The session goes on after the restart.
    let r = s.request(
        "POST",
        "/api/v1/chat",
        &[("Authorization", &format!("Bearer {key}")), ("Accept", "application/json")],
        Some(&json!({"username":"alice","session_id":"crash-1","message":"again"}).to_string()),
    );
    let v: Value = r.json();
    assert_eq!(v["data"]["session_id"], "crash-1");
    assert_eq!(v["data"]["response"], "one two three four five");
}
