//! The inbound pipeline a received message goes through, whatever the platform (driven
//! here through the fake OneBot implementation, the quickest to speak): the id whitelist,
//! the per-conversation rate limit, unique sessions, administrators' commands, the reply's
//! decoration, history per conversation, and the sessions listing by platform.

use std::time::Duration;

use serde_json::{Value, json};

use crate::fake_llm::{FakeLlm, Script, connect as connect_llm};
use crate::fake_onebot::{FakeOneBot, connect};
use crate::support::{Server, eventually};

const WAIT: Duration = Duration::from_secs(10);

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A server with a fake model, `platform_settings` set as given, and a OneBot bot `qq`
/// with the fake implementation connected as account 10001.
fn setup(settings: Value) -> (Server, String, FakeLlm, FakeOneBot) {
    let s = Server::start();
    let admin = s.admin_token();
    let llm = FakeLlm::start(Script::reply(&["model answer"]));
    connect_llm(&s, &admin, &llm, "openai_chat_completion", &["sk-x"], json!({}));
    s.check("PUT", "/api/v1/system-config", &admin, Some(settings), 200, json!({"status": "ok"}));
    let port = free_port();
    let bot =
        json!({"id": "qq", "type": "aiocqhttp", "ws_reverse_host": "127.0.0.1", "ws_reverse_port": port});
    s.check("POST", "/api/v1/bots", &admin, Some(bot), 200, json!({"status": "ok"}));
    let mut fake = None;
    assert!(
        eventually(5, || {
            fake = connect(port, "10001", None).ok();
            fake.is_some()
        }),
        "the bot never listened\n{}",
        s.log()
    );
    let fake = fake.unwrap();
    assert!(fake.wait_call("get_login_info", 0, WAIT).is_some(), "{}", s.log());
    (s, admin, llm, fake)
}

fn text(t: &str) -> Value {
    json!({"type": "text", "data": {"text": t}})
}

fn segments(call: &crate::fake_onebot::Call) -> Vec<Value> {
    call.params["message"].as_array().cloned().unwrap_or_default()
}

fn sent_text(call: &crate::fake_onebot::Call) -> String {
    segments(call).iter().filter_map(|s| s["data"]["text"].as_str()).collect()
}

#[test]
fn the_whitelist_admits_listed_conversations_and_groups_and_administrators() {
    let settings = json!({"admins_id": ["77777"], "platform_settings": {"id_whitelist": ["20002", "qq:FriendMessage:30003"]}});
    let (s, _admin, _llm, fake) = setup(settings);
    fake.push_event(fake.private_message(40004, 1, json!([text("not listed")])));
    fake.push_event(fake.group_message(50005, 40004, 2, json!([text("/help")])));
    fake.push_event(fake.private_message(30003, 3, json!([text("listed friend")])));
    let friend = fake.wait_call("send_private_msg", 0, WAIT).unwrap_or_else(|| panic!("{}", s.log()));
    assert_eq!(friend.params["user_id"], 30003);
    fake.push_event(fake.group_message(20002, 40004, 4, json!([text("/help")])));
    let group = fake.wait_call("send_group_msg", 0, WAIT).unwrap_or_else(|| panic!("{}", s.log()));
    assert_eq!(group.params["group_id"], 20002, "a group is listed by its bare id");
    assert!(sent_text(&group).contains("/sid"), "the help text: {}", sent_text(&group));
    // An administrator passes the whitelist by default.
    fake.push_event(fake.private_message(77777, 5, json!([text("admin here")])));
    let admin_reply = fake.wait_call("send_private_msg", 1, WAIT).unwrap_or_else(|| panic!("{}", s.log()));
    assert_eq!(admin_reply.params["user_id"], 77777);
    for refused in ["qq:FriendMessage:40004", "qq:GroupMessage:50005"] {
        let line = format!("{refused} is not in the id whitelist");
        assert!(eventually(5, || s.log().contains(&line)), "{line}\n{}", s.log());
    }
    assert_eq!(fake.calls_of("send_private_msg").len(), 2, "{:?}", fake.calls());
    assert_eq!(fake.calls_of("send_group_msg").len(), 1, "{:?}", fake.calls());
}

#[test]
fn the_rate_limit_discards_past_its_count_per_conversation() {
    let settings =
        json!({"platform_settings": {"rate_limit": {"time": 3600, "count": 2, "strategy": "discard"}}});
    let (s, _admin, llm, fake) = setup(settings);
    for id in 1..=3 {
        fake.push_event(fake.private_message(30003, id, json!([text(&format!("message {id}"))])));
        if id < 3 {
            assert!(fake.wait_call("send_private_msg", id as usize - 1, WAIT).is_some(), "{}", s.log());
        }
    }
    assert!(
        eventually(5, || s.log().contains("qq:FriendMessage:30003 is over its rate limit")),
        "{}",
        s.log()
    );
    // Another conversation has a bucket of its own.
    fake.push_event(fake.private_message(40004, 9, json!([text("someone else")])));
    let other = fake.wait_call("send_private_msg", 2, WAIT).unwrap_or_else(|| panic!("{}", s.log()));
    assert_eq!(other.params["user_id"], 40004);
    assert_eq!(fake.calls_of("send_private_msg").len(), 3);
    let prompts: Vec<String> =
        llm.requests().iter().map(|r| r.messages().last().unwrap()["content"].to_string()).collect();
    assert!(
        !prompts.iter().any(|p| p.contains("message 3")),
        "the third never reached the model: {prompts:?}"
    );
}

#[test]
fn conversations_keep_their_history_and_are_listed_by_platform() {
    let settings = json!({"platform_settings": {"unique_session": true, "reply_prefix": "» ", "reply_with_quote": true, "reply_with_mention": true}});
    let (s, admin, llm, fake) = setup(settings);
    fake.push_event(fake.private_message(30003, 11, json!([text("my name is Ann")])));
    assert!(fake.wait_call("send_private_msg", 0, WAIT).is_some(), "{}", s.log());
    fake.push_event(fake.private_message(30003, 12, json!([text("what is my name?")])));
    let second = fake.wait_call("send_private_msg", 1, WAIT).unwrap_or_else(|| panic!("{}", s.log()));
    let history =
        llm.last().messages().iter().map(|m| m["content"].to_string()).collect::<Vec<_>>().join("\n");
    assert!(history.contains("my name is Ann") && history.contains("model answer"), "{history}");
    // The private reply: quoted, prefixed, no mention (mentions are for groups).
    let segs = segments(&second);
    assert_eq!(segs[0], json!({"type": "reply", "data": {"id": "12"}}), "{segs:?}");
    assert_eq!(sent_text(&second), "» model answer");

    fake.push_event(fake.group_message(
        20002,
        40004,
        13,
        json!([{"type": "at", "data": {"qq": "10001"}}, text(" hi")]),
    ));
    let group = fake.wait_call("send_group_msg", 0, WAIT).unwrap_or_else(|| panic!("{}", s.log()));
    let segs = segments(&group);
    assert_eq!(segs[0]["type"], "reply");
    assert_eq!(segs[1], json!({"type": "at", "data": {"qq": "40004"}}), "{segs:?}");
    assert_eq!(group.params["group_id"], 20002, "a unique session still answers in the group");

    let listed = s
        .check("GET", "/api/v1/chat/sessions?platform_id=qq", &admin, None, 200, json!({"status": "ok"}))
        .json();
    let mut ids: Vec<String> = listed["data"]["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["session_id"].as_str().unwrap().to_owned())
        .collect();
    ids.sort();
    assert_eq!(ids, ["qq:FriendMessage:30003", "qq:GroupMessage:40004_20002"], "{listed}");
    let webchat = s.call("GET", "/api/v1/chat/sessions?platform_id=webchat", &admin, None).json();
    assert_eq!(webchat["data"]["sessions"], json!([]), "{webchat}");
}

#[test]
fn administrators_commands_need_an_administrators_sender_id() {
    let settings = json!({"admins_id": ["77777"]});
    let (s, _admin, _llm, fake) = setup(settings);
    fake.push_event(fake.private_message(30003, 21, json!([text("/provider")])));
    let refused = fake.wait_call("send_private_msg", 0, WAIT).unwrap_or_else(|| panic!("{}", s.log()));
    assert_eq!(sent_text(&refused), "Permission denied");
    fake.push_event(fake.private_message(77777, 22, json!([text("/sid")])));
    let sid = fake.wait_call("send_private_msg", 1, WAIT).unwrap_or_else(|| panic!("{}", s.log()));
    assert!(sent_text(&sid).contains("UMO: qq:FriendMessage:77777"), "{}", sent_text(&sid));
    fake.push_event(fake.private_message(77777, 23, json!([text("/provider")])));
    let allowed = fake.wait_call("send_private_msg", 2, WAIT).unwrap_or_else(|| panic!("{}", s.log()));
    assert_ne!(sent_text(&allowed), "Permission denied");
}
