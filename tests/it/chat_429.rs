//! The chat as AstrBot 4.29 changed it (4.29 §4–5): a reasoning model's thoughts as
//! `plain` events of `chain_type: "reasoning"` (DeepSeek's `reasoning_content`, Anthropic's
//! `thinking` blocks, from the `fake_llm` upstream), none when `enable_reasoning` is false,
//! at the head of a non-streaming reply; `locale` for the error texts; and the paged
//! session history with its `session` object.

use serde_json::{Value, json};

use crate::chat::{chat, kinds, setup};
use crate::fake_llm::{FakeLlm, Script, Step, connect};
use crate::support::Server;

/// A reasoning model behind `wire` (`openai_chat_completion` or `anthropic_chat_completion`)
/// that thinks "Let me think." and answers "Hi!".
fn thinker(wire: &str) -> (Server, String, FakeLlm) {
    let (s, key) = setup();
    let fake = FakeLlm::start(Script {
        reasoning: vec!["Let me ".into(), "think.".into()],
        ..Script::reply(&["Hi", "!"])
    });
    connect(&s, &key, &fake, wire, &["sk-test-1"], json!({}));
    (s, key, fake)
}

fn reasoning_events(ev: &[Value]) -> Vec<&str> {
    ev.iter().filter(|e| e["chain_type"] == "reasoning").map(|e| e["data"].as_str().unwrap()).collect()
}

fn complete(ev: &[Value]) -> &Value {
    ev.iter().find(|e| e["type"] == "complete").unwrap_or_else(|| panic!("no complete: {:?}", kinds(ev)))
}

#[test]
fn deepseek_reasoning_content_streams_as_reasoning_events_and_is_absent_when_disabled() {
    let (s, key, fake) = thinker("openai_chat_completion");
    let ev = chat(&s, &key, json!({"username": "alice", "session_id": "r1", "message": "hi"}));
    assert_eq!(reasoning_events(&ev), ["Let me ", "think."], "{ev:?}");
    let run_id = ev[2]["data"]["run_id"].clone();
    let first = ev.iter().position(|e| e["chain_type"] == "reasoning").unwrap();
    assert_eq!(
        ev[first],
        json!({"type": "plain", "data": "Let me ", "streaming": true, "chain_type": "reasoning", "message_id": run_id})
    );
    let text_at = ev.iter().position(|e| e["type"] == "plain" && e["chain_type"].is_null()).unwrap();
    assert!(first < text_at, "the thoughts come before the reply: {:?}", kinds(&ev));
    assert_eq!(
        (&complete(&ev)["data"], &complete(&ev)["reasoning"]),
        (&json!("Hi!"), &json!("Let me think."))
    );

    // Off, in `flags` or at the top level: not one reasoning event, an empty `reasoning`.
    for body in [
        json!({"username": "alice", "session_id": "r2", "message": "hi", "flags": {"enable_reasoning": false}}),
        json!({"username": "alice", "session_id": "r3", "message": "hi", "enable_reasoning": false}),
    ] {
        let ev = chat(&s, &key, body);
        assert!(reasoning_events(&ev).is_empty(), "{ev:?}");
        assert!(!ev.iter().any(|e| e.to_string().contains("Let me")), "{ev:?}");
        assert_eq!((&complete(&ev)["data"], &complete(&ev)["reasoning"]), (&json!("Hi!"), &json!("")));
    }

    // The thoughts are never the reply: the history keeps "Hi!" and the model gets it back
    // without them.
    let r = s.call("GET", "/api/v1/chat/sessions/r1?username=alice", &key, None);
    let messages = r.json()["data"]["messages"].clone();
    let bot = &messages[1]["content"];
    assert_eq!(bot["message"].as_array().unwrap().last().unwrap()["text"], "Hi!", "{bot}");
    chat(&s, &key, json!({"username": "alice", "session_id": "r1", "message": "again"}));
    let sent = fake.last().messages();
    let reply = sent.iter().find(|m| m["role"] == "assistant").expect("the history");
    assert_eq!(reply["content"], "Hi!");
}

#[test]
fn a_non_streaming_reply_begins_with_the_thoughts() {
    let (s, key, _fake) = thinker("openai_chat_completion");
    let body = |reasoning: bool| json!({"username": "bob", "message": "hi", "enable_streaming": false, "enable_reasoning": reasoning});
    let ev = chat(&s, &key, body(true));
    let reply = ev.iter().find(|e| e["type"] == "plain" && e["streaming"] == false).unwrap();
    assert_eq!(reply["data"], "🤔 思考: Let me think.\n\n────\nHi!");
    assert!(reasoning_events(&ev).is_empty(), "nothing streamed: {ev:?}");
    let ev = chat(&s, &key, body(false));
    let reply = ev.iter().find(|e| e["type"] == "plain" && e["streaming"] == false).unwrap();
    assert_eq!(reply["data"], "Hi!");
    // The one-JSON answer too.
    let r = s.request(
        "POST",
        "/api/v1/chat",
        &[
            ("Authorization", &format!("Bearer {key}")),
            ("Accept", "application/json"),
            ("Content-Type", "application/json"),
        ],
        Some(&body(true).to_string()),
    );
    s.expect(&r, 200);
    assert_eq!(r.json()["data"]["response"], "🤔 思考: Let me think.\n\n────\nHi!");
}

#[test]
fn anthropic_thinking_streams_as_reasoning_events() {
    let (s, key, _fake) = thinker("anthropic_chat_completion");
    let ev = chat(&s, &key, json!({"username": "carol", "message": "hi"}));
    assert_eq!(reasoning_events(&ev), ["Let me ", "think."], "{ev:?}");
    assert_eq!(complete(&ev)["data"], "Hi!");
    let ev = chat(&s, &key, json!({"username": "carol", "message": "hi", "enable_streaming": false}));
    let reply = ev.iter().find(|e| e["type"] == "plain" && e["streaming"] == false).unwrap();
    assert_eq!(reply["data"], "🤔 思考: Let me think.\n\n────\nHi!");
}

#[test]
fn locale_chooses_the_language_of_the_error_text() {
    let (s, key) = setup();
    let fake = FakeLlm::start(Script::reply(&["unused"]));
    connect(&s, &key, &fake, "openai_chat_completion", &["sk-test-1"], json!({}));
    let failed = |locale: Option<&str>| {
        fake.set(|sc| sc.failures = [400].into());
        let mut body = json!({"username": "dave", "message": "hi"});
        if let Some(l) = locale {
            body["locale"] = json!(l);
        }
        complete(&chat(&s, &key, body))["data"].as_str().unwrap().to_owned()
    };
    let detail = "Error code: 400 - fake failure 400";
    assert_eq!(failed(Some("en-US")), format!("LLM request failed: {detail}"));
    assert_eq!(failed(Some("ru-RU")), format!("Ошибка запроса к LLM: {detail}"));
    assert_eq!(failed(Some("ja-JP")), format!("LLM リクエストに失敗しました：{detail}"));
    assert_eq!(failed(Some("zh-CN")), format!("LLM 请求失败：{detail}"));
    assert_eq!(failed(Some("xx")), format!("LLM 请求失败：{detail}"), "unknown: zh-CN");
    assert_eq!(failed(None), format!("LLM 响应错误: {detail}"), "none: 4.27's text");
    for bad in [json!(5), json!(["en-US"]), json!(true)] {
        s.check_error(
            "POST",
            "/api/v1/chat",
            &key,
            Some(json!({"username": "dave", "message": "hi", "locale": bad})),
            400,
            "locale must be a string",
        );
    }
    s.check_error(
        "POST",
        "/api/v1/chat",
        &key,
        Some(json!({"username": "dave", "message": "hi", "enable_reasoning": "maybe"})),
        400,
        "enable_reasoning must be a boolean",
    );
}

#[test]
fn session_history_pages_from_the_newest() {
    let (s, key) = setup();
    // The built-in provider answers: each message stores two rows.
    for text in ["one", "two", "three"] {
        chat(&s, &key, json!({"username": "erin", "session_id": "p1", "message": text}));
    }
    let page = |query: &str| {
        let r = s.call("GET", &format!("/api/v1/chat/sessions/p1?username=erin{query}"), &key, None);
        s.expect(&r, 200);
        r.json()["data"].clone()
    };
    let all = page("");
    assert_eq!(
        (all["total"].as_i64(), all["page"].as_i64(), all["page_size"].as_i64()),
        (Some(6), Some(1), Some(1000))
    );
    assert_eq!(all["has_more"], false);
    let session = &all["session"];
    assert_eq!(
        (&session["session_id"], &session["creator"], &session["platform_id"]),
        (&json!("p1"), &json!("erin"), &json!("webchat"))
    );
    for field in ["display_name", "is_group", "created_at", "updated_at"] {
        assert!(session.get(field).is_some(), "{field}: {session}");
    }
    let ids = |d: &Value| {
        d["messages"].as_array().unwrap().iter().map(|m| m["id"].as_i64().unwrap()).collect::<Vec<_>>()
    };
    let every = ids(&all);
    let first = page("&page=1&page_size=4");
    assert_eq!(ids(&first), every[2..], "page 1 holds the newest, oldest first");
    assert_eq!(first["has_more"], true);
    let second = page("&page=2&page_size=4");
    assert_eq!(ids(&second), every[..2]);
    assert_eq!(second["has_more"], false);
    let far = page("&page=18446744073709551616&page_size=1000");
    assert_eq!(
        (ids(&far).len(), far["total"].as_i64(), far["has_more"].as_bool()),
        (0, Some(6), Some(false))
    );
    for (query, message) in [
        ("&page=0", "page must be an integer of at least 1"),
        ("&page=-1", "page must be an integer of at least 1"),
        ("&page=x", "page must be an integer of at least 1"),
        ("&page_size=0", "page_size must be an integer from 1 to 1000"),
        ("&page_size=1001", "page_size must be an integer from 1 to 1000"),
        ("&page_size=1.5", "page_size must be an integer from 1 to 1000"),
    ] {
        s.check_error(
            "GET",
            &format!("/api/v1/chat/sessions/p1?username=erin{query}"),
            &key,
            None,
            400,
            message,
        );
    }
}

/// A reasoning model that calls `current_time`, then answers: its second request must carry
/// the thoughts of the first beside its calls (DeepSeek refuses the turn without its
/// `reasoning_content`, Anthropic without its signed `thinking` block), shown or not.
#[test]
fn a_reasoning_models_thoughts_go_back_with_its_tool_calls() {
    for wire in ["openai_chat_completion", "anthropic_chat_completion"] {
        let (s, key, fake) = thinker(wire);
        let call_id = if wire.starts_with("openai") { "call_1" } else { "toolu_1" };
        fake.set(|sc| sc.steps = [Step::calls("", &[(call_id, "current_time", "{}")])].into());
        let ev = chat(&s, &key, json!({"username": "fay", "message": "time?", "enable_reasoning": false}));
        assert_eq!(complete(&ev)["data"], "Hi!", "{wire}: {ev:?}");
        assert!(reasoning_events(&ev).is_empty(), "{wire}");
        let sent = fake.last().messages();
        let turn = sent
            .iter()
            .find(|m| m["role"] == "assistant")
            .unwrap_or_else(|| panic!("{wire}: no assistant turn in {sent:?}"));
        match wire {
            "openai_chat_completion" => {
                assert_eq!(turn["reasoning_content"], "Let me think.", "{turn}");
                assert_eq!(turn["tool_calls"][0]["id"], call_id);
            }
            _ => {
                assert_eq!(
                    turn["content"][0],
                    json!({"type": "thinking", "thinking": "Let me think.", "signature": "sig"})
                );
                assert_eq!(turn["content"][1]["type"], "tool_use");
            }
        }
    }
}

#[test]
fn an_im_conversations_session_is_permission_denied() {
    let (s, key) = setup();
    let im = "tg-bot:FriendMessage:42";
    let body = json!({"username": im, "session_id": im, "message": "let me in"});
    let r = s.check(
        "POST",
        "/api/v1/chat",
        &key,
        Some(body),
        200,
        json!({"status": "error", "message": "Permission denied"}),
    );
    assert!(r.json().get("data").is_none_or(Value::is_null), "{}", r.text());
    // Nothing was created: the sessions list of that username is empty.
    let list = s.call(
        "GET",
        &format!("/api/v1/chat/sessions?username={}", "tg-bot%3AFriendMessage%3A42"),
        &key,
        None,
    );
    assert_eq!(list.json()["data"]["total"], 0, "{}", list.text());
    // The ownership check comes first, as in AstrBot.
    chat(&s, &key, json!({"username": "gina", "session_id": "mine", "message": "hi"}));
    s.check_error(
        "POST",
        "/api/v1/chat",
        &key,
        Some(json!({"username": "hal", "session_id": "mine", "message": "hi"})),
        200,
        "session_id belongs to another username",
    );
    // A website chatbot's request keeps a real status.
    let bot = json!({"bot_id": "default", "session_id": "tg-bot:GroupMessage:7", "message": "hi"});
    s.check_error("POST", "/api/v1/chat", &key, Some(bot), 403, "Permission denied");
}
