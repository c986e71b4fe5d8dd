//! Secrets stay secret, even from a `provider` or `config` key: a masked key is restored
//! only toward the target it was saved for, `$NAME` references are limited to `*_API_KEY`
//! names and those listed in `ASTRBOT_SECRET_ENV`, and an unset variable is an error
//! naming it, never a request without a credential.

use std::sync::Arc;

use serde_json::{Value, json};

use crate::fake_llm::{FakeLlm, Script, connect};
use crate::support::{Resp, Server, TempDir};

const SECRET: &str = "sk-live-0123456789abcdefXYZW";
const RULE: &str = "$NAME references must end in _API_KEY or be listed in ASTRBOT_SECRET_ENV";
const CHANGED: &str = "api_base changed: send the key again";

/// A server with the real upstream `fake` (source `fake`, provider `fake/m`, key SECRET)
/// set up by the admin, and a key with only the `config` scope (it includes `provider`).
fn setup(env: &[(&str, &str)], fake: &FakeLlm, keys: &[&str]) -> (Server, String) {
    let s = Server::start_with_env(Arc::new(TempDir::new()), &[], env);
    let admin = s.admin_token();
    connect(&s, &admin, fake, "openai_chat_completion", keys, json!({}));
    let (key, _) = s.create_key(&admin, r#"{"scopes":["config"]}"#);
    (s, key)
}

fn shown_source(s: &Server, key: &str) -> Value {
    let r = s.call("GET", "/api/v1/provider-sources/fake", key, None);
    s.expect(&r, 200);
    r.json()["data"]["provider_source"].clone()
}

fn stored_source(s: &Server) -> Value {
    let conn = rusqlite::Connection::open(s.data.path().join("astrbot.db")).unwrap();
    let body: String =
        conn.query_row("SELECT body FROM provider_sources WHERE id = 'fake'", [], |r| r.get(0)).unwrap();
    serde_json::from_str(&body).unwrap()
}

fn test_provider(s: &Server, key: &str) -> Value {
    let r = s.call("POST", "/api/v1/providers/fake%2Fm/test", key, None);
    s.expect(&r, 200);
    r.json()["data"].clone()
}

fn assert_never_saw_secret(listener: &FakeLlm) {
    for r in listener.requests() {
        assert!(!format!("{:?}", r.headers).contains(SECRET), "the listener saw the key: {r:?}");
    }
}

fn source_with_key(s: &Server, key: &str, entry: &str) -> Resp {
    let body = json!({"id": "env", "type": "openai_chat_completion", "key": [entry], "api_base": "http://127.0.0.1:9/v1"});
    s.call("POST", "/api/v1/provider-sources", key, Some(body))
}

#[test]
fn a_config_key_cannot_re_point_a_source_to_receive_its_masked_key() {
    let real = FakeLlm::start(Script::reply(&["PONG"]));
    let listener = FakeLlm::start(Script::reply(&["stolen"]));
    let (s, key) = setup(&[], &real, &[SECRET]);

    // The exfiltration sequence: the masked key sent back with the listener as api_base,
    // in every form a source can be saved.
    let mut moved = shown_source(&s, &key);
    assert_eq!(moved["key"], json!(["sk-****XYZW"]));
    moved["api_base"] = json!(listener.base());
    let puts = [
        ("PUT", "/api/v1/provider-sources/fake", moved.clone()),
        ("PUT", "/api/v1/provider-sources/by-id", json!({"source_id": "fake", "config": moved})),
        ("POST", "/api/v1/provider-sources", moved.clone()),
        ("PUT", "/api/v1/provider-sources/fake", {
            let mut renamed = moved.clone();
            renamed["id"] = json!("renamed");
            renamed
        }),
        ("PUT", "/api/v1/provider-sources/fake", {
            let mut mixed = moved.clone();
            mixed["key"] = json!(["sk-attacker-own-key-0000", "sk-****XYZW"]);
            mixed
        }),
    ];
    for (method, path, body) in puts {
        let r = s.call(method, path, &key, Some(body.clone()));
        s.expect_error(&r, 400, CHANGED);
    }
    // A proxy is a target too: it would see a plain-http request whole.
    let mut proxied = shown_source(&s, &key);
    proxied["proxy"] = json!(format!("http://{}", listener.addr));
    let r = s.call("PUT", "/api/v1/provider-sources/fake", &key, Some(proxied));
    s.expect_error(&r, 400, "proxy changed: send the key again");
    assert_eq!(stored_source(&s)["api_base"], json!(real.base()), "nothing was saved");
    assert_eq!(stored_source(&s)["key"], json!([SECRET]));

    // A provider cannot take its source's key elsewhere either: its own api_base, or a new
    // source with the listener's address and the masked key carried over.
    let r = s.call(
        "PUT",
        "/api/v1/providers/fake%2Fm",
        &key,
        Some(
            json!({"id": "fake/m", "provider_source_id": "fake", "model": "m", "api_base": listener.base()}),
        ),
    );
    s.expect(&r, 200);
    let result = test_provider(&s, &key);
    assert_eq!(listener.requests().len(), 1, "the re-pointed provider was tried: {result}");
    assert_eq!(listener.last().key(), None, "without the source's key");
    assert_never_saw_secret(&listener);

    // Give the provider its own copy of the key (as the admin), then try to move it.
    let admin = s.admin_token();
    let own = json!({"id": "fake/m", "provider_source_id": "fake", "model": "m", "key": [SECRET]});
    s.expect(&s.call("PUT", "/api/v1/providers/fake%2Fm", &admin, Some(own)), 200);
    let mut shown =
        s.call("GET", "/api/v1/providers/fake%2Fm", &key, None).json()["data"]["provider"].clone();
    shown["api_base"] = json!(listener.base());
    let r = s.call("PUT", "/api/v1/providers/fake%2Fm", &key, Some(shown.clone()));
    s.expect_error(&r, 400, CHANGED);
    let evil = json!({"id": "evil", "type": "openai_chat_completion", "api_base": listener.base()});
    s.expect(&s.call("POST", "/api/v1/provider-sources", &key, Some(evil)), 200);
    shown.as_object_mut().unwrap().remove("api_base");
    shown["provider_source_id"] = json!("evil");
    let r = s.call("PUT", "/api/v1/providers/fake%2Fm", &key, Some(shown));
    s.expect_error(&r, 400, CHANGED);
    // Nor can the source move under a provider that holds its own key.
    let mut moved = shown_source(&s, &key);
    moved["api_base"] = json!(listener.base());
    moved["key"] = json!([]);
    let r = s.call("PUT", "/api/v1/provider-sources/fake", &key, Some(moved));
    s.expect_error(&r, 400, "api_base changed: send the key again (provider fake/m holds its own key)");

    let result = test_provider(&s, &key);
    assert_eq!(result["status"], "available", "{result}");
    assert_eq!(real.last().key(), Some(SECRET), "the real upstream still gets the key");
    assert_eq!(listener.requests().len(), 1, "nothing more reached the listener");
    assert_never_saw_secret(&listener);
}

#[test]
fn a_masked_key_is_restored_toward_the_same_target_only() {
    let real = FakeLlm::start(Script::reply(&["PONG"]));
    let (s, key) = setup(&[], &real, &[SECRET, "sk-second-key-0000000"]);
    let mut shown = shown_source(&s, &key);
    // The same target (a trailing slash; other spellings are unit-tested); one key replaced.
    shown["api_base"] = json!(format!("{}/", real.base()));
    shown["key"] = json!(["sk-****XYZW", "sk-third-key-00000000"]);
    shown["timeout"] = json!(30);
    s.expect(&s.call("PUT", "/api/v1/provider-sources/fake", &key, Some(shown)), 200);
    assert_eq!(stored_source(&s)["key"], json!([SECRET, "sk-third-key-00000000"]));
    assert_eq!(stored_source(&s)["timeout"], 30);
    let result = test_provider(&s, &key);
    assert_eq!(result["status"], "available", "{result}");
    assert_eq!(real.last().key(), Some(SECRET));

    // Another port on the same host is another target.
    let mut other_port = shown_source(&s, &key);
    other_port["api_base"] = json!(format!("http://127.0.0.1:{}/v1", real.addr.port() ^ 1));
    let r = s.call("PUT", "/api/v1/provider-sources/fake", &key, Some(other_port));
    s.expect_error(&r, 400, CHANGED);

    // A changed target with the key sent again is an ordinary edit.
    let other = FakeLlm::start(Script::reply(&["PONG"]));
    let mut moved = shown_source(&s, &key);
    moved["api_base"] = json!(other.base());
    moved["key"] = json!(["sk-for-the-other-0000"]);
    s.expect(&s.call("PUT", "/api/v1/provider-sources/fake", &key, Some(moved)), 200);
    assert_eq!(test_provider(&s, &key)["status"], "available");
    assert_eq!(other.last().key(), Some("sk-for-the-other-0000"));
}

#[test]
fn only_api_key_variables_can_be_referenced() {
    let real = FakeLlm::start(Script::reply(&["PONG"]));
    let env = [("FOO_API_KEY", "sk-from-the-environment"), ("MY_TOKEN", "tok-not-listed")];
    let (s, key) = setup(&env, &real, &["$FOO_API_KEY"]);

    for entry in ["$ASTRBOT_ADMIN_PASSWORD", "${ASTRBOT_ADMIN_PASSWORD}", "$MY_TOKEN", "$PATH"] {
        let r = source_with_key(&s, &key, entry);
        s.expect_error(&r, 400, &format!("{RULE} (got {entry})"));
    }
    // Every other way to save a key follows the same rule.
    let provider = json!({"id": "p", "model": "m", "key": ["$ASTRBOT_ADMIN_PASSWORD"]});
    let r = s.call("POST", "/api/v1/providers", &key, Some(provider));
    s.expect_error(&r, 400, &format!("{RULE} (got $ASTRBOT_ADMIN_PASSWORD)"));
    let provider = json!({"id": "fake/m", "provider_source_id": "fake", "model": "m", "key": ["$ASTRBOT_ADMIN_PASSWORD"]});
    let r = s.call("PUT", "/api/v1/providers/fake%2Fm", &key, Some(provider));
    s.expect_error(&r, 400, &format!("{RULE} (got $ASTRBOT_ADMIN_PASSWORD)"));
    let r = s.call("POST", "/api/v1/config-profiles", &key, Some(json!({"name": "p"})));
    s.expect(&r, 200);
    let profile = format!("/api/v1/config-profiles/{}", r.json()["data"]["conf_id"].as_str().unwrap());
    let body = json!({"provider_sources": [{"id": "x", "key": ["$ASTRBOT_ADMIN_PASSWORD"]}]});
    let r = s.call("PUT", &profile, &key, Some(body));
    s.expect_error(&r, 400, &format!("{RULE} (got $ASTRBOT_ADMIN_PASSWORD)"));

    // `*_API_KEY` is accepted and read when used.
    s.expect(&source_with_key(&s, &key, "$OTHER_API_KEY"), 200);
    let result = test_provider(&s, &key);
    assert_eq!(result["status"], "available", "{result}");
    assert_eq!(real.last().key(), Some("sk-from-the-environment"));
    assert!(!real.requests().iter().any(|r| r.key() == Some(crate::support::ADMIN_PASSWORD)));
}

#[test]
fn astrbot_secret_env_lists_more_readable_names() {
    let real = FakeLlm::start(Script::reply(&["PONG"]));
    let env = [("ASTRBOT_SECRET_ENV", "OTHER_TOKEN, MY_TOKEN"), ("MY_TOKEN", "tok-listed-0000000")];
    let (s, key) = setup(&env, &real, &["$MY_TOKEN"]);
    assert_eq!(shown_source(&s, &key)["key"], json!(["$MY_TOKEN"]));
    s.expect(&source_with_key(&s, &key, "${MY_TOKEN}"), 200);
    let r = source_with_key(&s, &key, "$ASTRBOT_ADMIN_PASSWORD");
    s.expect_error(&r, 400, &format!("{RULE} (got $ASTRBOT_ADMIN_PASSWORD)"));
    assert_eq!(test_provider(&s, &key)["status"], "available");
    assert_eq!(real.last().key(), Some("tok-listed-0000000"));
}

#[test]
fn an_unset_variable_is_named_by_the_provider_test() {
    let real = FakeLlm::start(Script::reply(&["PONG"]));
    let (s, key) = setup(&[], &real, &["$UNSET_API_KEY"]);
    let result = test_provider(&s, &key);
    assert_eq!(result["status"], "unavailable", "{result}");
    assert_eq!(result["error"], "environment variable UNSET_API_KEY is not set");
    assert!(real.requests().is_empty(), "a request went out without its key: {:?}", real.requests());
}

#[test]
fn a_chat_sends_no_request_when_its_key_variable_is_unset() {
    let real = FakeLlm::start(Script::reply(&["PONG"]));
    let (s, _) = setup(&[], &real, &["$UNSET_API_KEY"]);
    let admin = s.admin_token();
    let (chat_key, _) = s.create_key(&admin, r#"{"scopes":["chat"]}"#);
    let r = s.request(
        "POST",
        "/api/v1/chat",
        &[
            ("Authorization", &format!("Bearer {chat_key}")),
            ("Content-Type", "application/json"),
            ("Accept", "application/json"),
        ],
        Some(&json!({"username": "alice", "message": "hi"}).to_string()),
    );
    s.expect(&r, 200);
    assert_eq!(r.json()["data"]["response"], "LLM 响应错误: environment variable UNSET_API_KEY is not set");
    assert!(real.requests().is_empty(), "a request went out without its key: {:?}", real.requests());
}
