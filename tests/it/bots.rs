//! The bots API (scope `bot`): AstrBot's request mapping, messages and `/by-id` variants,
//! the checks a bot passes before it is stored, masked tokens, the adapters' state, and
//! the bot types. The adapters themselves are tested in `telegram` and `onebot`.

use serde_json::{Value, json};

use crate::support::{Server, eventually};

const TG_TOKEN: &str = "123456789:AAE-secret_token_value";
const WS_TOKEN: &str = "onebot-secret-token";

fn setup() -> (Server, String) {
    let s = Server::start();
    let (key, _) = s.create_key(&s.admin_token(), r#"{"scopes":["bot"]}"#);
    (s, key)
}

/// A loopback port nothing listens on (bound, read, released).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A Telegram bot whose Bot API is a closed loopback port: it never reaches anything.
fn telegram(id: &str) -> Value {
    let port = free_port();
    json!({"id": id, "type": "telegram", "telegram_token": TG_TOKEN,
           "telegram_api_base_url": format!("http://127.0.0.1:{port}/bot"),
           "telegram_file_base_url": format!("http://127.0.0.1:{port}/file/bot"), "telegram_poll_timeout": 1})
}

fn bots(s: &Server, key: &str, query: &str) -> Vec<Value> {
    let r = s.check("GET", &format!("/api/v1/bots{query}"), key, None, 200, json!({"status": "ok"}));
    r.json()["data"]["bots"].as_array().unwrap().clone()
}

#[test]
fn bots_are_created_listed_replaced_enabled_and_deleted_with_astrbots_messages() {
    let (s, key) = setup();
    let created = json!({"status": "ok", "message": "新增平台配置成功~", "data": {}});
    s.check("POST", "/api/v1/bots", &key, Some(telegram("tg")), 200, created.clone());
    s.check(
        "POST",
        "/api/v1/bots",
        &key,
        Some(json!({"type": "webchat", "config": {"id": "web"}})),
        200,
        created,
    );
    s.check_error("POST", "/api/v1/bots", &key, Some(telegram("tg")), 400, "Bot tg already exists");

    let all = bots(&s, &key, "");
    let ids: Vec<&str> = all.iter().map(|b| b["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["tg", "web"], "configuration order");
    assert_eq!(all[0]["enable"], true, "enable defaults to true");
    assert_eq!(all[1]["state"]["status"], "running", "webchat is built in");
    assert_eq!(bots(&s, &key, "?type=telegram").len(), 1);
    assert_eq!(bots(&s, &key, "?enabled=false").len(), 0);
    s.check_error("GET", "/api/v1/bots?enabled=maybe", &key, None, 400, "enabled must be a boolean");

    s.check(
        "GET",
        "/api/v1/bots/tg",
        &key,
        None,
        200,
        json!({"data": {"bot": {"id": "tg", "type": "telegram"}}}),
    );
    s.check("GET", "/api/v1/bots/by-id?bot_id=web", &key, None, 200, json!({"data": {"bot": {"id": "web"}}}));
    s.check_error("GET", "/api/v1/bots/by-id", &key, None, 400, "Missing key: bot_id");
    s.check_error("GET", "/api/v1/bots/nope", &key, None, 400, "Bot nope not found");

    // A PUT replaces the whole bot (no merge) and re-enables it when `enable` is left out.
    let updated = json!({"status": "ok", "message": "更新平台配置成功~", "data": {}});
    s.check("PATCH", "/api/v1/bots/tg/enabled", &key, Some(json!({"enabled": false})), 200, updated.clone());
    assert_eq!(bots(&s, &key, "?enabled=false")[0]["state"]["status"], "stopped");
    let mut replaced = telegram("tg");
    replaced["start_message"] = json!("Hi!");
    s.check("PUT", "/api/v1/bots/tg", &key, Some(replaced), 200, updated.clone());
    let tg = &bots(&s, &key, "?type=telegram")[0];
    assert_eq!((tg["enable"].clone(), tg["start_message"].clone()), (json!(true), json!("Hi!")));
    s.check_error(
        "PUT",
        "/api/v1/bots/tg",
        &key,
        Some(json!({"id": "other", "type": "webchat"})),
        400,
        "Bot id cannot be changed",
    );
    s.check_error(
        "PUT",
        "/api/v1/bots/by-id",
        &key,
        Some(json!({"type": "webchat"})),
        400,
        "Missing key: bot_id",
    );
    s.check_error(
        "PUT",
        "/api/v1/bots/ghost",
        &key,
        Some(json!({"type": "webchat"})),
        400,
        "Bot ghost not found",
    );
    s.check(
        "PUT",
        "/api/v1/bots/by-id",
        &key,
        Some(json!({"bot_id": "web", "type": "webchat", "enabled": false})),
        200,
        updated.clone(),
    );
    s.check("PATCH", "/api/v1/bots/enabled", &key, Some(json!({"bot_id": "web"})), 200, updated);
    assert_eq!(
        bots(&s, &key, "?type=webchat")[0]["enable"],
        false,
        "a missing `enabled` is false, as in AstrBot"
    );
    s.check_error("PATCH", "/api/v1/bots/web/enabled", &key, Some(json!({})), 400, "Missing key: enabled");
    s.check_error(
        "PATCH",
        "/api/v1/bots/enabled",
        &key,
        Some(json!({"enabled": true})),
        400,
        "Missing key: bot_id",
    );

    // The IM listing and the system config see the same bots.
    s.check(
        "GET",
        "/api/v1/im/bots",
        &s.admin_token(),
        None,
        200,
        json!({"data": {"bot_ids": ["tg", "web"]}}),
    );

    let deleted = json!({"status": "ok", "message": "删除平台配置成功~", "data": {}});
    s.check("DELETE", "/api/v1/bots/by-id?bot_id=web", &key, None, 200, deleted.clone());
    s.check("DELETE", "/api/v1/bots/tg", &key, None, 200, deleted);
    s.check_error("DELETE", "/api/v1/bots/tg", &key, None, 400, "Bot tg not found");
    assert!(bots(&s, &key, "").is_empty());
}

#[test]
fn a_bot_is_checked_whole_before_anything_is_stored() {
    let (s, key) = setup();
    let port = free_port();
    let cases: Vec<(Value, &str)> = vec![
        (json!({"type": "telegram", "telegram_token": TG_TOKEN}), "Bot config must have an 'id' field"),
        (json!({"id": "x"}), "Bot config must have a 'type' field (webchat, telegram, aiocqhttp)"),
        (
            json!({"id": "x", "type": "discord"}),
            "Unsupported bot type: discord (supported: webchat, telegram, aiocqhttp)",
        ),
        (json!({"id": "x", "type": "telegram"}), "Missing key: telegram_token"),
        (
            json!({"id": "x", "type": "telegram", "telegram_token": "123/../../evil"}),
            "telegram_token must look like 123456789:ABCdef... (digits, a colon, then letters, digits, - and _)",
        ),
        (
            json!({"id": "x", "type": "telegram", "telegram_token": TG_TOKEN, "telegram_api_base_url": "file:///etc/passwd"}),
            "telegram_api_base_url must be an http or https URL",
        ),
        (
            json!({"id": "x", "type": "telegram", "telegram_token": TG_TOKEN, "telegram_poll_timeout": 0}),
            "telegram_poll_timeout must be between 1 and 50",
        ),
        (
            json!({"id": "x", "type": "aiocqhttp", "ws_reverse_host": "127.0.0.1"}),
            "Missing key: ws_reverse_port",
        ),
        (
            json!({"id": "x", "type": "aiocqhttp", "ws_reverse_host": "127.0.0.1", "ws_reverse_port": 70000}),
            "ws_reverse_port must be between 1 and 65535",
        ),
        (
            json!({"id": "x", "type": "aiocqhttp", "ws_reverse_host": "127.0.0.1", "ws_reverse_port": 18446744073709551615u64}),
            "ws_reverse_port must be an integer",
        ),
        (
            json!({"id": "x", "type": "aiocqhttp", "ws_reverse_host": "a b", "ws_reverse_port": port}),
            "ws_reverse_host must be an IP address or a host name",
        ),
        (json!({"id": "x", "type": "webchat", "enable": "maybe"}), "enable must be a boolean"),
        (
            json!({"id": "webchat", "type": "telegram", "telegram_token": TG_TOKEN}),
            "Bot id webchat is reserved for the built-in web chat",
        ),
        (json!({"id": "x".repeat(129), "type": "webchat"}), "id must be at most 128 characters"),
        (json!({"id": ["x"], "type": "webchat"}), "id must be a string"),
    ];
    for (body, message) in cases {
        s.check_error("POST", "/api/v1/bots", &key, Some(body), 400, message);
    }
    assert!(bots(&s, &key, "").is_empty(), "nothing was stored");

    // Numbers as strings are read as AstrBot's validation casts them; `:` and `!` in ids become `_`.
    let qq = json!({"id": "qq:main!1", "type": "aiocqhttp", "ws_reverse_host": "127.0.0.1", "ws_reverse_port": port.to_string()});
    s.check("POST", "/api/v1/bots", &key, Some(qq), 200, json!({"status": "ok"}));
    s.check(
        "GET",
        "/api/v1/bots/qq_main_1",
        &key,
        None,
        200,
        json!({"data": {"bot": {"ws_reverse_port": port}}}),
    );
    let same_port =
        json!({"id": "qq2", "type": "aiocqhttp", "ws_reverse_host": "0.0.0.0", "ws_reverse_port": port});
    s.check_error(
        "POST",
        "/api/v1/bots",
        &key,
        Some(same_port),
        400,
        &format!("ws_reverse_port {port} is already used by bot qq_main_1"),
    );
}

#[test]
fn tokens_are_masked_everywhere_and_a_masked_telegram_token_never_follows_a_new_host() {
    let (s, key) = setup();
    let admin = s.admin_token();
    let port = free_port();
    s.check("POST", "/api/v1/bots", &key, Some(telegram("tg")), 200, json!({"status": "ok"}));
    let qq = json!({"id": "qq", "type": "aiocqhttp", "ws_reverse_host": "127.0.0.1", "ws_reverse_port": port, "ws_reverse_token": WS_TOKEN});
    s.check("POST", "/api/v1/bots", &key, Some(qq), 200, json!({"status": "ok"}));

    let answers = [
        s.call("GET", "/api/v1/bots", &key, None),
        s.call("GET", "/api/v1/bots/tg", &key, None),
        s.call("GET", "/api/v1/bots/by-id?bot_id=qq", &key, None),
        s.call("GET", "/api/v1/system-config", &admin, None),
        s.call("GET", "/api/v1/stats", &admin, None),
        s.call("POST", "/api/v1/bots/tg/test", &key, None),
    ];
    for r in &answers {
        s.expect(r, 200);
        let text = r.text();
        assert!(!text.contains("secret_token_value") && !text.contains(WS_TOKEN), "a token leaked: {text}");
    }
    let tg = answers[1].json()["data"]["bot"].clone();
    assert_eq!(tg["telegram_token"], "123****alue");
    let platform = answers[3].json()["data"]["config"]["platform"].clone();
    assert_eq!(platform.as_array().map(Vec::len), Some(2), "the system config mirrors the bots: {platform}");

    // The GET, edit, PUT round trip keeps the token; pointing it elsewhere needs it again.
    let mut edited = tg.clone();
    edited["start_message"] = json!("edited");
    s.check("PUT", "/api/v1/bots/tg", &key, Some(edited.clone()), 200, json!({"status": "ok"}));
    edited["telegram_api_base_url"] = json!("http://attacker.example:8080/bot");
    s.check_error(
        "PUT",
        "/api/v1/bots/tg",
        &key,
        Some(edited.clone()),
        400,
        "telegram_api_base_url changed: send the token again",
    );
    edited["telegram_token"] = json!("987654321:new-token");
    edited["telegram_api_base_url"] = json!(format!("http://127.0.0.1:{}/bot", free_port()));
    s.check("PUT", "/api/v1/bots/tg", &key, Some(edited), 200, json!({"status": "ok"}));
    s.check(
        "GET",
        "/api/v1/bots/tg",
        &key,
        None,
        200,
        json!({"data": {"bot": {"telegram_token": "987****oken"}}}),
    );
    assert!(!s.log().contains("secret_token_value") && !s.log().contains(WS_TOKEN), "a token in the log");
}

#[test]
fn the_bot_scope_is_needed_and_config_includes_it() {
    let s = Server::start();
    let admin = s.admin_token();
    let (chat, _) = s.create_key(&admin, r#"{"scopes":["chat"]}"#);
    let (config, _) = s.create_key(&admin, r#"{"scopes":["config"]}"#);
    for (method, path) in [
        ("GET", "/api/v1/bots"),
        ("POST", "/api/v1/bots"),
        ("GET", "/api/v1/bot-types"),
        ("DELETE", "/api/v1/bots/x"),
    ] {
        let r = s.call(method, path, &chat, Some(json!({})));
        s.expect_error(&r, 403, "Insufficient API key scope");
        assert_eq!(r.header("WWW-Authenticate"), Some(r#"Bearer error="insufficient_scope", scope="bot""#));
    }
    s.check("GET", "/api/v1/bots", &config, None, 200, json!({"data": {"bots": []}}));
}

#[test]
fn bot_types_list_each_types_fields_and_defaults() {
    let (s, key) = setup();
    let r = s.check("GET", "/api/v1/bot-types", &key, None, 200, json!({"status": "ok"}));
    let types = r.json()["data"]["bot_types"].clone();
    let names: Vec<&str> = types.as_array().unwrap().iter().map(|t| t["type"].as_str().unwrap()).collect();
    assert_eq!(names, ["webchat", "telegram", "aiocqhttp"]);
    let tg = &types[1];
    assert_eq!(tg["schema"]["required"], json!(["telegram_token"]));
    assert_eq!(tg["default_config"]["telegram_api_base_url"], "https://api.telegram.org/bot");
    assert_eq!(types[2]["default_config"]["ws_reverse_port"], 6199);
    assert_eq!(types[2]["support_streaming_message"], false);
}

#[test]
fn a_failing_adapter_shows_its_error_and_the_test_route_says_so() {
    let (s, key) = setup();
    s.check("POST", "/api/v1/bots", &key, Some(telegram("tg")), 200, json!({"status": "ok"}));
    // Its Bot API is a closed port: the adapter reports the failure and keeps retrying.
    assert!(
        eventually(10, || bots(&s, &key, "")[0]["state"]["status"] == "error"),
        "state: {}\n{}",
        bots(&s, &key, "")[0]["state"],
        s.log()
    );
    let state = &bots(&s, &key, "")[0]["state"];
    assert!(state["error"].as_str().is_some_and(|e| !e.is_empty()), "{state}");
    s.check(
        "POST",
        "/api/v1/bots/test",
        &key,
        Some(json!({"bot_id": "tg"})),
        200,
        json!({"data": {"id": "tg", "status": "error"}}),
    );
    s.check_error("POST", "/api/v1/bots/test", &key, Some(json!({})), 400, "Missing key: bot_id");
    s.check_error("POST", "/api/v1/bots/none/test", &key, None, 400, "Bot none not found");
    let stats = s.call("GET", "/api/v1/stats", &s.admin_token(), None).json();
    assert_eq!(stats["data"]["bots"][0]["id"], "tg");
    assert_eq!(stats["data"]["bots"][0]["type"], "telegram");
}

#[test]
fn proactive_messages_need_a_running_bot() {
    let (s, key) = setup();
    let (im, _) = s.create_key(&s.admin_token(), r#"{"scopes":["im"]}"#);
    let mut disabled = telegram("tg");
    disabled["enable"] = json!(false);
    s.check("POST", "/api/v1/bots", &key, Some(disabled), 200, json!({"status": "ok"}));
    let body = json!({"umo": "tg:FriendMessage:4242", "message": "hi"});
    s.check_error(
        "POST",
        "/api/v1/im/message",
        &im,
        Some(body.clone()),
        400,
        "Bot not found or not running for platform: tg",
    );
    s.check_error(
        "POST",
        "/api/v1/im/messages",
        &im,
        Some(json!({"umo": "ghost:FriendMessage:1", "message": "hi"})),
        400,
        "Bot not found or not running for platform: ghost",
    );
    // The parts are checked as for webchat before anything is sent.
    s.check(
        "PATCH",
        "/api/v1/bots/tg/enabled",
        &key,
        Some(json!({"enabled": true})),
        200,
        json!({"status": "ok"}),
    );
    let reply_only =
        json!({"umo": "tg:FriendMessage:4242", "message": [{"type": "reply", "message_id": "1"}]});
    s.check_error(
        "POST",
        "/api/v1/im/message",
        &im,
        Some(reply_only),
        400,
        "Message content is empty (reply only is not allowed)",
    );
    let missing =
        json!({"umo": "tg:FriendMessage:4242", "message": [{"type": "image", "attachment_id": "nope"}]});
    s.check_error("POST", "/api/v1/im/message", &im, Some(missing), 400, "attachment not found: nope");
}
