//! A OneBot v11 (`aiocqhttp`) bot created over the API, spoken to by the fake OneBot
//! implementation over its reverse WebSocket: the handshake's token checks, messages in
//! and answers out with `echo`, waking in groups, proactive sends, reconnects, and the
//! socket dropped when the bot is disabled. The token never shows in an answer or the log.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::fake_llm::{FakeLlm, Script, connect as connect_llm};
use crate::fake_onebot::{FakeOneBot, connect};
use crate::support::{PNG, Server, eventually, upload_file};

const TOKEN: &str = "secret-t";
const WAIT: Duration = Duration::from_secs(10);

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A server with a fake model answering `answer`, and a OneBot bot `qq` listening on a
/// free port (returned once it accepts connections).
fn setup(answer: &str) -> (Server, String, FakeLlm, u16) {
    let s = Server::start();
    let admin = s.admin_token();
    let llm = FakeLlm::start(Script::reply(&[answer]));
    connect_llm(&s, &admin, &llm, "openai_chat_completion", &["sk-x"], json!({}));
    let port = free_port();
    let bot = json!({"id": "qq", "type": "aiocqhttp", "ws_reverse_host": "127.0.0.1",
        "ws_reverse_port": port, "ws_reverse_token": TOKEN});
    s.check("POST", "/api/v1/bots", &admin, Some(bot), 200, json!({"status": "ok"}));
    assert!(
        eventually(5, || std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()),
        "the bot never listened\n{}",
        s.log()
    );
    (s, admin, llm, port)
}

/// Connects as account 10001 and waits for the server's `get_login_info`.
fn online(s: &Server, port: u16) -> FakeOneBot {
    let fake =
        connect(port, "10001", Some(TOKEN)).unwrap_or_else(|code| panic!("refused: {code}\n{}", s.log()));
    assert!(fake.wait_call("get_login_info", 0, WAIT).is_some(), "no get_login_info\n{}", s.log());
    fake
}

fn text(t: &str) -> Value {
    json!({"type": "text", "data": {"text": t}})
}

fn at(qq: &str) -> Value {
    json!({"type": "at", "data": {"qq": qq}})
}

/// The text of a sent message's segments.
fn sent_text(params: &Value) -> String {
    params["message"]
        .as_array()
        .map(|segs| segs.iter().filter_map(|s| s["data"]["text"].as_str()).collect())
        .unwrap_or_default()
}

#[test]
fn the_token_is_checked_and_a_private_message_is_answered_with_echo() {
    let (s, admin, llm, port) = setup("Hello from the model");
    assert_eq!(connect(port, "10001", None).err(), Some(401), "no token");
    assert_eq!(connect(port, "10001", Some("wrong")).err(), Some(403), "a wrong token");
    let fake = online(&s, port);
    assert!(eventually(5, || s.log().contains("bot qq: OneBot 10001 (bot) connected")), "{}", s.log());
    s.check(
        "POST",
        "/api/v1/bots/qq/test",
        &admin,
        None,
        200,
        json!({"data": {"status": "ok", "connected": ["10001"]}}),
    );

    fake.push_event(fake.private_message(30003, 501, json!([text("hello there")])));
    let reply =
        fake.wait_call("send_private_msg", 0, WAIT).unwrap_or_else(|| panic!("no reply\n{}", s.log()));
    assert_eq!(reply.params["user_id"], 30003);
    assert_eq!(sent_text(&reply.params), "Hello from the model");
    assert!(reply.echo["seq"].is_u64(), "echo {:?}", reply.echo);
    let asked = llm.last().messages();
    assert!(asked.last().unwrap()["content"].to_string().contains("hello there"), "{asked:?}");

    // The answers and the log never carry the token.
    for path in ["/api/v1/bots", "/api/v1/bots/qq", "/api/v1/stats"] {
        let r = s.call("GET", path, &admin, None);
        assert!(!r.text().contains(TOKEN), "{path} shows the token: {}", r.text());
    }
    assert!(!s.log().contains(TOKEN), "the token is in the log");
}

#[test]
fn a_group_message_is_answered_only_when_woken() {
    let (s, _admin, llm, port) = setup("Group answer");
    let fake = online(&s, port);
    // The bot's own messages, asked for by a reply segment, come from account 10001.
    fake.set_responder(|action, params| {
        (action == "get_msg" && params["message_id"] == 9001).then(|| {
            json!({"status": "ok", "retcode": 0,
                "data": {"message_id": 9001, "sender": {"user_id": 10001}, "message": [text("earlier")]}})
        })
    });
    fake.push_event(fake.group_message(20002, 30003, 601, json!([text("just chatting")])));
    fake.push_event(fake.group_message(
        20002,
        30003,
        602,
        json!([at("40004"), at("10001"), text(" hi bot")]),
    ));
    let first = fake.wait_call("send_group_msg", 0, WAIT).unwrap_or_else(|| panic!("no reply\n{}", s.log()));
    assert_eq!(first.params["group_id"], 20002);
    assert_eq!(sent_text(&first.params), "Group answer");
    let looked_up = fake.calls_of("get_group_member_info");
    assert!(
        looked_up.iter().any(|c| c.params["user_id"] == 40004 && c.params["group_id"] == 20002),
        "{looked_up:?}"
    );
    let prompt = llm.last().messages().last().unwrap()["content"].to_string();
    assert!(prompt.contains("@card40004(40004)") && prompt.contains("hi bot"), "{prompt}");

    // A reply to the bot's message wakes it too.
    fake.push_event(fake.group_message(
        20002,
        30003,
        603,
        json!([{"type": "reply", "data": {"id": "9001"}}, text("and then?")]),
    ));
    assert!(
        fake.wait_call("send_group_msg", 1, WAIT).is_some(),
        "a reply to the bot was not answered\n{}",
        s.log()
    );
    assert!(fake.calls_of("get_msg").iter().any(|c| c.params["message_id"] == 9001));
    // Only the two woken messages reached the model.
    let prompts: Vec<String> =
        llm.requests().iter().map(|r| r.messages().last().unwrap()["content"].to_string()).collect();
    assert!(!prompts.iter().any(|p| p.contains("just chatting")), "{prompts:?}");
    assert_eq!(fake.calls_of("send_group_msg").len(), 2);
}

#[test]
fn proactive_messages_reach_groups_and_friends_with_astrbots_errors() {
    let (s, admin, _llm, port) = setup("unused");
    let im = |umo: &str, message: Value| {
        s.call("POST", "/api/v1/im/message", &admin, Some(json!({"umo": umo, "message": message})))
    };
    let r = im("qq:FriendMessage:30003", json!("hi"));
    s.expect_error(&r, 400, "Failed to send message: ApiNotAvailable: no OneBot connection");

    let fake = online(&s, port);
    s.expect(&im("qq:GroupMessage:20002", json!("to the group")), 200);
    let g = fake.wait_call("send_group_msg", 0, WAIT).expect("group send");
    assert_eq!((g.params["group_id"].clone(), sent_text(&g.params)), (json!(20002), "to the group".into()));
    s.expect(&im("qq:GroupMessage:30003_20002", json!("unique session")), 200);
    assert_eq!(
        fake.wait_call("send_group_msg", 1, WAIT).expect("second group send").params["group_id"],
        20002
    );
    s.expect(&im("qq:FriendMessage:30003", json!("to a friend")), 200);
    assert_eq!(fake.wait_call("send_private_msg", 0, WAIT).expect("private send").params["user_id"], 30003);

    let r = im("qq:FriendMessage:abc", json!("x"));
    s.expect_error(&r, 400, "无法发送消息：缺少有效的数字 session_id(abc) 或 event(None)");

    let image = upload_file(&s, &admin, "dot.png", Some("image/png"), PNG);
    s.expect(&im("qq:FriendMessage:30003", json!([{"type": "image", "attachment_id": image}])), 200);
    let sent = fake.wait_call("send_private_msg", 1, WAIT).expect("image send");
    let seg = &sent.params["message"][0];
    assert_eq!(seg["type"], "image");
    assert!(seg["data"]["file"].as_str().unwrap().starts_with("base64://iVBORw0KGgo"), "{seg}");

    fake.set_responder(|action, _| {
        (action == "send_group_msg")
            .then(|| json!({"status": "failed", "retcode": 100, "data": null, "message": "no group"}))
    });
    let r = im("qq:GroupMessage:20002", json!("x"));
    s.expect_error(
        &r,
        400,
        "Failed to send message: ActionFailed: retcode=100, message=no group, wording=None",
    );
}

#[test]
fn a_reconnect_is_served_and_a_disabled_bot_drops_its_socket_within_a_second() {
    let (s, admin, _llm, port) = setup("Back again");
    let fake = online(&s, port);
    fake.close();
    let again = online(&s, port);
    again.push_event(again.private_message(30003, 701, json!([text("are you there?")])));
    let reply =
        again.wait_call("send_private_msg", 0, WAIT).unwrap_or_else(|| panic!("no reply\n{}", s.log()));
    assert_eq!(sent_text(&reply.params), "Back again");

    let started = Instant::now();
    s.check(
        "PATCH",
        "/api/v1/bots/qq/enabled",
        &admin,
        Some(json!({"enabled": false})),
        200,
        json!({"status": "ok"}),
    );
    assert!(again.wait_closed(Duration::from_secs(1)), "the socket is still open\n{}", s.log());
    assert!(started.elapsed() < Duration::from_secs(1), "took {:?}", started.elapsed());
    assert_eq!(connect(port, "10001", Some(TOKEN)).err(), Some(0), "a disabled bot still accepts");
    let listed = s.call("GET", "/api/v1/bots", &admin, None).json();
    assert_eq!(listed["data"]["bots"][0]["state"]["status"], "stopped", "{listed}");
}

#[test]
fn frames_it_cannot_use_are_dropped_and_a_broken_connection_fails_a_send_at_once() {
    let (s, admin, _llm, port) = setup("Still here");
    let fake = online(&s, port);
    // Not JSON, a result nobody waits for, a heartbeat, a notice, a CQ-code string message,
    // QQ 管家: none of them is answered, and the connection serves on.
    fake.push_raw("not json");
    fake.push_raw(r#"{"status":"ok","retcode":0,"data":null,"echo":{"seq":123456}}"#);
    fake.push_event(json!({"post_type": "meta_event", "meta_event_type": "heartbeat", "self_id": 10001, "interval": 5000}));
    fake.push_event(json!({"post_type": "notice", "notice_type": "group_increase", "self_id": 10001, "group_id": 1, "user_id": 2}));
    let mut cq = fake.private_message(30003, 801, json!("[CQ:face,id=1] hi"));
    fake.push_event(cq.clone());
    cq["message"] = json!([text("from the butler")]);
    cq["user_id"] = json!(2854196310u64);
    cq["sender"]["user_id"] = json!(2854196310u64);
    fake.push_event(cq);
    fake.push_event(fake.private_message(30003, 802, json!([text("real one")])));
    let reply =
        fake.wait_call("send_private_msg", 0, WAIT).unwrap_or_else(|| panic!("no reply\n{}", s.log()));
    assert_eq!(reply.params["user_id"], 30003);
    assert!(eventually(5, || s.log().contains("string (CQ code) format was dropped")), "{}", s.log());
    assert_eq!(fake.calls_of("send_private_msg").len(), 1, "{:?}", fake.calls());

    // A send in flight when the implementation dies fails at once, not at its timeout.
    let (seen_tx, seen_rx) = std::sync::mpsc::channel();
    let seen_tx = std::sync::Mutex::new(seen_tx);
    fake.set_responder(move |action, _| {
        if action == "send_group_msg" {
            let _ = seen_tx.lock().unwrap().send(());
            std::thread::sleep(Duration::from_secs(3));
        }
        None
    });
    let started = Instant::now();
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    let addr = s.addr;
    let auth = format!("Bearer {admin}");
    std::thread::spawn(move || {
        let body = json!({"umo": "qq:GroupMessage:20002", "message": "x"}).to_string();
        let r = crate::support::http(
            addr,
            "POST",
            "/api/v1/im/message",
            &[("Authorization", &auth), ("Content-Type", "application/json")],
            Some(body.as_bytes()),
        );
        let _ = done_tx.send(r);
    });
    seen_rx.recv_timeout(WAIT).expect("the send reached the fake");
    fake.abort();
    let r = done_rx.recv_timeout(Duration::from_secs(2)).expect("the send failed at once");
    s.expect_error(&r, 400, "Failed to send message: the OneBot connection closed");
    assert!(started.elapsed() < Duration::from_secs(3), "took {:?}", started.elapsed());
}

/// Serves `body` as `image/png` to every GET, on a loopback port (QQ's media CDN).
fn media_server(body: &'static [u8]) -> u16 {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for mut conn in listener.incoming().flatten() {
            let mut head = [0u8; 4096];
            let _ = conn.read(&mut head);
            let _ = write!(
                conn,
                "HTTP/1.1 200 OK\r\nContent-Type: image/png\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = conn.write_all(body);
        }
    });
    port
}

#[test]
fn a_received_image_is_downloaded_into_an_attachment_the_model_sees() {
    let (s, _admin, llm, port) = setup("Nice picture");
    let fake = online(&s, port);
    let cdn = media_server(PNG);
    let image = json!({"type": "image", "data": {"file": "ABCD.png",
        "url": format!("http://127.0.0.1:{cdn}/download?appid=1407&rkey=one-time-key")}});
    fake.push_event(fake.private_message(30003, 901, json!([text("look"), image])));
    let reply =
        fake.wait_call("send_private_msg", 0, WAIT).unwrap_or_else(|| panic!("no reply\n{}", s.log()));
    assert_eq!(sent_text(&reply.params), "Nice picture");
    let stored: Vec<_> = std::fs::read_dir(s.data.path().join("attachments")).unwrap().flatten().collect();
    assert_eq!(stored.len(), 1, "one attachment");
    assert_eq!(std::fs::read(stored[0].path()).unwrap(), PNG);
    let asked = llm.last().messages().last().unwrap()["content"].to_string();
    assert!(
        asked.contains("data:image/png;base64,") && asked.contains("look"),
        "the model saw no image: {asked}"
    );
    assert!(!s.log().contains("one-time-key"), "a media URL's key is in the log");
}

#[test]
fn a_changed_token_restarts_the_bot_on_the_same_port() {
    let (s, admin, _llm, port) = setup("unused");
    let fake = online(&s, port);
    let bot = json!({"id": "qq", "type": "aiocqhttp", "ws_reverse_host": "127.0.0.1",
        "ws_reverse_port": port, "ws_reverse_token": "new-secret"});
    s.check("PUT", "/api/v1/bots/qq", &admin, Some(bot), 200, json!({"status": "ok"}));
    assert!(fake.wait_closed(WAIT), "the old connection stayed\n{}", s.log());
    let deadline = Instant::now() + WAIT;
    // The new adapter binds the same port; until it does, connects are refused (0).
    let refused = loop {
        match connect(port, "10001", Some(TOKEN)) {
            Err(0) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            other => break other.err(),
        }
    };
    assert_eq!(refused, Some(403), "the old token still works\n{}", s.log());
    let again = connect(port, "10001", Some("new-secret")).expect("the new token opens");
    assert!(again.wait_call("get_login_info", 0, WAIT).is_some());
    assert!(!s.log().contains("new-secret"), "the token is in the log");
}
