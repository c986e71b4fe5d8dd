//! The config layouts of AstrBot 4.27 and 4.29 over one stored document (4.29 §8): a
//! 4.27 client reads and writes `provider_settings.max_agent_step` and the other flat
//! keys, a 4.29 client `agent_runner {runner_type, config}`; each sees what the other
//! wrote, the chat follows whichever wrote last, and a 4.29-shaped document gets 4.29's
//! refusals.

use serde_json::{Value, json};

use crate::chat::{chat, setup};
use crate::fake_llm::{FakeLlm, Script, connect};
use crate::support::Server;

fn system(s: &Server, key: &str) -> Value {
    let r = s.call("GET", "/api/v1/system-config", key, None);
    s.expect(&r, 200);
    r.json()["data"]["config"].clone()
}

fn put_system(s: &Server, key: &str, body: Value) {
    let r = s.call("PUT", "/api/v1/system-config", key, Some(body));
    s.expect(&r, 200);
    assert_eq!(r.json()["message"], "保存成功~");
}

#[test]
fn a_4_27_shaped_system_config_round_trip() {
    let (s, key) = setup();
    let mut config = system(&s, &key);
    assert_eq!(config["agent_runner"]["runner_type"], "local");
    assert_eq!(config["agent_runner"]["config"]["misc"]["max_steps"], 30);
    // The dashboard of 4.27 sends back the whole document it read, `agent_runner` included.
    config["provider_settings"]["max_agent_step"] = json!(7);
    config["provider_settings"]["max_context_length"] = json!(12);
    put_system(&s, &key, config);
    let read = system(&s, &key);
    assert_eq!(read["provider_settings"]["max_agent_step"], 7);
    assert_eq!(read["provider_settings"]["max_context_length"], 12);
    assert_eq!(read["agent_runner"]["config"]["misc"]["max_steps"], 7, "the 4.29 view follows");
    assert_eq!(read["agent_runner"]["config"]["compression"]["max_turns"], 12);
    // A 4.27 script's partial update: only its section.
    let mut settings = read["provider_settings"].clone();
    settings["tool_call_timeout"] = json!(45);
    put_system(&s, &key, json!({"provider_settings": settings}));
    let read = system(&s, &key);
    assert_eq!(read["agent_runner"]["config"]["misc"]["tool_call_timeout"], 45);
    assert_eq!(read["provider_settings"]["max_agent_step"], 7, "kept");
}

#[test]
fn a_4_29_shaped_system_config_round_trip() {
    let (s, key) = setup();
    let mut config = system(&s, &key);
    config["config_version"] = json!(5);
    config["agent_runner"]["config"]["misc"]["max_steps"] = json!(12);
    config["agent_runner"]["config"]["compression"]["keep_recent_ratio"] = json!(0.9);
    config["agent_runner"]["config"]["persona"]["persona_id"] = json!("tutor");
    put_system(&s, &key, config);
    let read = system(&s, &key);
    let runner = &read["agent_runner"]["config"];
    assert_eq!(runner["misc"]["max_steps"], 12);
    assert_eq!(runner["compression"]["keep_recent_ratio"], 0.3, "held to AstrBot's bound");
    assert_eq!(runner["persona"]["persona_id"], "tutor");
    assert_eq!(read["provider_settings"]["max_agent_step"], 12, "the 4.27 view follows");
    assert_eq!(read["provider_settings"]["default_personality"], "tutor");
    assert_eq!(read["config_version"], 5);
    // 4.29's own `provider_settings` has no flat keys: sending it keeps them as they are.
    let mut runner = read["agent_runner"].clone();
    runner["config"]["misc"]["tool_call_timeout"] = json!(33);
    put_system(&s, &key, json!({"agent_runner": runner, "provider_settings": {"wake_prefix": "!"}}));
    let read = system(&s, &key);
    assert_eq!(read["provider_settings"]["tool_call_timeout"], 33);
    assert_eq!(read["provider_settings"]["max_agent_step"], 12, "kept");
    assert_eq!(read["provider_settings"]["wake_prefix"], "!");
    // A third-party runner is stored with its own settings, its key masked.
    let dify =
        json!({"runner_type": "dify", "config": {"dify_api_key": "app-0123456789abcdef", "timeout": "90"}});
    put_system(&s, &key, json!({"agent_runner": dify}));
    let read = system(&s, &key);
    assert_eq!(read["agent_runner"]["runner_type"], "dify");
    assert_eq!(read["agent_runner"]["config"]["timeout"], 90);
    assert_eq!(read["agent_runner"]["config"]["dify_api_key"], "app****cdef");
    assert_eq!(read["provider_settings"]["agent_runner_type"], "dify");
}

#[test]
fn the_chat_follows_the_layout_written_last() {
    let (s, key) = setup();
    let fake = FakeLlm::start(Script::reply(&["ok"]));
    connect(&s, &key, &fake, "openai_chat_completion", &["sk-test-1"], json!({}));
    for (id, prompt) in [("pirate", "Speak like a pirate."), ("monk", "Speak like a monk.")] {
        let persona = json!({"persona_id": id, "system_prompt": prompt});
        s.expect(&s.call("POST", "/api/v1/personas", &key, Some(persona)), 200);
    }
    let system_prompt = |session: &str| {
        chat(&s, &key, json!({"username": "u", "session_id": session, "message": "hi"}));
        fake.last().messages()[0]["content"].as_str().unwrap_or_default().to_owned()
    };
    let mut config = system(&s, &key);
    config["agent_runner"]["config"]["persona"]["persona_id"] = json!("pirate");
    put_system(&s, &key, config);
    assert!(system_prompt("a").contains("pirate"), "4.29 wrote last");
    put_system(&s, &key, json!({"provider_settings": {"default_personality": "monk"}}));
    assert!(system_prompt("b").contains("monk"), "4.27 wrote last");
    assert_eq!(system(&s, &key)["agent_runner"]["config"]["persona"]["persona_id"], "monk");
}

#[test]
fn profiles_take_either_layout() {
    let (s, key) = setup();
    let runner = json!({"runner_type": "local", "config": {"misc": {"max_steps": 3}}});
    let r = s.call(
        "POST",
        "/api/v1/config-profiles",
        &key,
        Some(json!({"name": "new", "config": {"agent_runner": runner}})),
    );
    s.expect(&r, 200);
    let id = r.json()["data"]["conf_id"].as_str().unwrap().to_owned();
    let read =
        s.call("GET", &format!("/api/v1/config-profiles/{id}"), &key, None).json()["data"]["config"].clone();
    assert_eq!(read["provider_settings"]["max_agent_step"], 3);
    assert_eq!(read["agent_runner"]["config"]["misc"]["max_steps"], 3);
    let r = s.call(
        "POST",
        "/api/v1/config-profiles",
        &key,
        Some(json!({"name": "old", "config": {"provider_settings": {"max_agent_step": 4}}})),
    );
    s.expect(&r, 200);
    let id = r.json()["data"]["conf_id"].as_str().unwrap().to_owned();
    let mut read =
        s.call("GET", &format!("/api/v1/config-profiles/{id}"), &key, None).json()["data"]["config"].clone();
    assert_eq!(read["agent_runner"]["config"]["misc"]["max_steps"], 4);
    read["agent_runner"]["config"]["misc"]["max_steps"] = json!(8);
    s.expect(&s.call("PUT", &format!("/api/v1/config-profiles/{id}"), &key, Some(read)), 200);
    let read =
        s.call("GET", &format!("/api/v1/config-profiles/{id}"), &key, None).json()["data"]["config"].clone();
    assert_eq!(read["provider_settings"]["max_agent_step"], 8);
}

#[test]
fn a_4_29_shaped_document_gets_4_29_refusals() {
    let (s, key) = setup();
    let put = |body: Value, message: &str| {
        s.check_error("PUT", "/api/v1/system-config", &key, Some(body), 400, message);
    };
    put(json!({"config_version": 5}), "agent_runner must be an object");
    put(json!({"agent_runner": null}), "agent_runner must be an object");
    put(json!({"agent_runner": "local"}), "agent_runner must be an object");
    put(json!({"agent_runner": {"runner_type": "nope"}}), "Unsupported Agent Runner type: nope");
    put(json!({"agent_runner": {"config": {}}}), "Unsupported Agent Runner type: None");
    let local = json!({"runner_type": "local"});
    let permissions =
        |p: Value| json!({"agent_runner": local, "provider_settings": {"computer_use_local_permissions": p}});
    put(permissions(json!([])), "Local computer permissions must be an object.");
    put(
        permissions(json!({"member": {"allow_execution": 1}})),
        "Local permission member.allow_execution must be a boolean.",
    );
    put(
        permissions(json!({"admin": {"filesystem_scope": "root"}})),
        "Invalid local filesystem scope for admin: root.",
    );
    put(
        json!({"agent_runner": local, "timezone": 5}),
        "格式校验未通过: ['错误的类型 timezone: 期望是 string, 得到了 int']",
    );
    // Nothing of a refused update is stored.
    assert_eq!(system(&s, &key)["agent_runner"]["runner_type"], "local");
    // A 4.27-shaped update is not asked for `agent_runner`.
    put_system(&s, &key, json!({"timezone": "UTC"}));
    let create = |config: Value, message: &str| {
        s.check_error("POST", "/api/v1/config-profiles", &key, Some(json!({"config": config})), 400, message);
    };
    create(
        json!({"agent_runner": local, "timezone": 5}),
        "Configuration validation failed: ['错误的类型 timezone: 期望是 string, 得到了 int']",
    );
    create(json!({"timezone": 5}), "格式校验未通过: ['错误的类型 timezone: 期望是 string, 得到了 int']");
    create(json!({"agent_runner": {"runner_type": 3}}), "Unsupported Agent Runner type: 3");
}
