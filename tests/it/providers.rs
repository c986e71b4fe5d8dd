//! Provider sources and providers, with the bodies and messages of AstrBot's dashboard.

use serde_json::{Value, json};

use crate::support::Server;

fn setup() -> (Server, String) {
    let s = Server::start();
    let (key, _) = s.create_key(&s.admin_token(), r#"{"scopes":["provider"]}"#);
    (s, key)
}

fn h(key: &str) -> Vec<(&'static str, String)> {
    vec![("X-API-Key", key.to_owned())]
}

fn call(s: &Server, method: &str, path: &str, key: &str, body: Option<Value>) -> crate::support::Resp {
    let body = body.map(|b| b.to_string());
    let hs = h(key);
    let mut headers: Vec<(&str, &str)> = hs.iter().map(|(n, v)| (*n, v.as_str())).collect();
    headers.push(("Content-Type", "application/json"));
    s.request(method, path, &headers, body.as_deref())
}

const SECRET: &str = "sk-live-0123456789abcdefXYZW";

/// The exact bodies AstrBot's dashboard sends, so a real dashboard works unchanged.
fn dashboard_source() -> Value {
    json!({"id":"openai","provider":"openai","type":"openai_chat_completion","provider_type":"chat_completion",
           "enable":true,"key":[SECRET, "$OPENAI_API_KEY"],"api_base":"https://api.openai.com/v1","timeout":120,
           "proxy":"","custom_headers":{}})
}

fn dashboard_provider() -> Value {
    json!({"id":"openai/gpt-4o-mini","provider_source_id":"openai","model":"gpt-4o-mini","enable":true,
           "modalities":["text","image","tool_use"],"custom_extra_body":{},"max_context_tokens":0})
}

/// Adds the dashboard's source and provider.
fn add_dashboard_pair(s: &Server, key: &str) {
    s.expect(&call(s, "POST", "/api/v1/provider-sources", key, Some(dashboard_source())), 200);
    s.expect(&call(s, "POST", "/api/v1/providers", key, Some(dashboard_provider())), 200);
}

#[test]
fn dashboard_bodies_are_accepted_with_astrbots_messages() {
    let (s, key) = setup();
    let r = call(&s, "POST", "/api/v1/provider-sources", &key, Some(dashboard_source()));
    s.expect(&r, 200);
    assert_eq!(r.json(), json!({"status":"ok","message":"更新 provider source 成功","data":{}}));
    let r = call(&s, "POST", "/api/v1/providers", &key, Some(dashboard_provider()));
    assert_eq!(r.json()["message"], "新增服务提供商配置成功");
}

#[test]
fn a_listed_provider_is_merged_with_its_source() {
    let (s, key) = setup();
    add_dashboard_pair(&s, &key);
    let list = call(&s, "GET", "/api/v1/providers", &key, None);
    s.expect(&list, 200);
    let data = &list.json()["data"];
    assert_eq!(data["model_metadata"], json!({}));
    let p = &data["providers"][0];
    assert_eq!(p["id"], "openai/gpt-4o-mini");
    assert_eq!(p["api_base"], "https://api.openai.com/v1", "merged with its source");
    assert_eq!(p["model"], "gpt-4o-mini");
    assert_eq!(p["key"], json!(["sk-****XYZW", "$OPENAI_API_KEY"]));
}

#[test]
fn no_provider_answer_shows_a_clear_key() {
    let (s, key) = setup();
    add_dashboard_pair(&s, &key);
    for path in [
        "/api/v1/providers",
        "/api/v1/provider-sources",
        "/api/v1/provider-sources/openai",
        "/api/v1/provider-sources/by-id?source_id=openai",
        "/api/v1/providers/openai/gpt-4o-mini?merged=true",
        "/api/v1/providers/by-id?provider_id=openai/gpt-4o-mini&merged=1",
    ] {
        let r = call(&s, "GET", path, &key, None);
        s.expect(&r, 200);
        assert!(!r.text().contains(SECRET), "{path} leaks the key");
    }
}

#[test]
fn a_single_provider_is_unmerged_by_default() {
    let (s, key) = setup();
    add_dashboard_pair(&s, &key);
    let raw = call(&s, "GET", "/api/v1/providers/openai%2Fgpt-4o-mini", &key, None).json();
    assert_eq!(raw["data"]["provider"], dashboard_provider(), "unmerged by default");
}

#[test]
fn a_masked_key_sent_back_keeps_the_stored_one() {
    let (s, key) = setup();
    call(&s, "POST", "/api/v1/provider-sources", &key, Some(dashboard_source()));
    let mut shown =
        call(&s, "GET", "/api/v1/provider-sources/openai", &key, None).json()["data"]["provider_source"]
            .clone();
    shown["timeout"] = json!(60);
    let r = call(&s, "PUT", "/api/v1/provider-sources/openai", &key, Some(shown));
    s.expect(&r, 200);
    // The chat reads the stored document; check it kept the clear key.
    let conn = rusqlite::Connection::open(s.data.path().join("astrbot.db")).unwrap();
    let body: String =
        conn.query_row("SELECT body FROM provider_sources WHERE id = 'openai'", [], |r| r.get(0)).unwrap();
    let stored: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(stored["key"], json!([SECRET, "$OPENAI_API_KEY"]));
    assert_eq!(stored["timeout"], 60);
}

#[test]
fn a_source_needs_an_id_and_a_supported_type() {
    let (s, key) = setup();
    for (body, message) in [
        (json!({"provider":"x"}), "Provider source config must have an 'id' field"),
        (
            json!({"id":"g","type":"googlegenai_chat_completion"}),
            "Unsupported provider source type: googlegenai_chat_completion. Supported types: openai_chat_completion, anthropic_chat_completion",
        ),
    ] {
        s.expect_error(&call(&s, "POST", "/api/v1/provider-sources", &key, Some(body)), 400, message);
    }
}

#[test]
fn posting_a_source_again_replaces_it_whole() {
    let (s, key) = setup();
    // The `config` form, and an upsert replacing the whole source.
    call(&s, "POST", "/api/v1/provider-sources", &key, Some(json!({"config": dashboard_source()})));
    call(
        &s,
        "POST",
        "/api/v1/provider-sources",
        &key,
        Some(json!({"id":"openai","type":"openai_chat_completion","api_base":"http://b"})),
    );
    let src =
        call(&s, "GET", "/api/v1/provider-sources/openai", &key, None).json()["data"]["provider_source"]
            .clone();
    assert_eq!(
        (src["api_base"].clone(), src.get("timeout").is_none()),
        (json!("http://b"), true),
        "full replacement"
    );
}

/// Sources `source_id` (with the dashboard's provider) and `other`.
fn two_sources(s: &Server, key: &str, source_id: &str) {
    let mut source = dashboard_source();
    source["id"] = json!(source_id);
    s.expect(&call(s, "POST", "/api/v1/provider-sources", key, Some(source)), 200);
    let other = json!({"id":"other","type":"anthropic_chat_completion"});
    s.expect(&call(s, "POST", "/api/v1/provider-sources", key, Some(other)), 200);
    let mut provider = dashboard_provider();
    provider["provider_source_id"] = json!(source_id);
    s.expect(&call(s, "POST", "/api/v1/providers", key, Some(provider)), 200);
}

#[test]
fn renaming_a_source_moves_its_providers_along() {
    let (s, key) = setup();
    two_sources(&s, &key, "openai");
    for (body, message) in [
        (json!({"id":"x"}), "Missing key: source_id"),
        (
            json!({"source_id":"openai","id":"other"}),
            "Provider source ID 'other' exists already, please try another ID.",
        ),
    ] {
        s.expect_error(&call(&s, "PUT", "/api/v1/provider-sources/by-id", &key, Some(body)), 400, message);
    }
    let r = call(
        &s,
        "PUT",
        "/api/v1/provider-sources/by-id",
        &key,
        Some(json!({"source_id":"openai","id":"oa","type":"openai_chat_completion"})),
    );
    s.expect(&r, 200);
    let p = call(&s, "GET", "/api/v1/providers/openai/gpt-4o-mini", &key, None).json();
    assert_eq!(p["data"]["provider"]["provider_source_id"], "oa");
    let r = call(&s, "GET", "/api/v1/provider-sources/openai", &key, None);
    s.expect_error(&r, 400, "Provider source openai not found");
}

#[test]
fn deleting_a_source_deletes_its_providers() {
    let (s, key) = setup();
    two_sources(&s, &key, "oa");
    let r = call(&s, "DELETE", "/api/v1/provider-sources/oa", &key, None);
    assert_eq!(r.json()["message"], "删除 provider source 成功");
    let list = call(&s, "GET", "/api/v1/providers", &key, None).json();
    assert_eq!(list["data"]["providers"], json!([]));
    let r = call(&s, "DELETE", "/api/v1/provider-sources/by-id?source_id=oa", &key, None);
    s.expect_error(&r, 400, "Provider source oa not found");
    let sources = call(&s, "GET", "/api/v1/provider-sources", &key, None).json();
    assert_eq!(sources["data"]["provider_sources"].as_array().unwrap().len(), 1);
}

/// The dashboard's source, chat provider `openai/a` (disabled, in dashboard aliases) and
/// a TTS provider `tts` with its own key.
fn two_providers(s: &Server, key: &str) {
    call(s, "POST", "/api/v1/provider-sources", key, Some(dashboard_source()));
    call(
        s,
        "POST",
        "/api/v1/providers",
        key,
        Some(json!({"id":"openai/a","source_id":"openai","model":"a","capability":"chat","enabled":false})),
    );
    call(
        s,
        "POST",
        "/api/v1/providers",
        key,
        Some(json!({"id":"tts","type":"openai_tts","capability":"tts","key":["sk-tts-secret-value-1234"]})),
    );
}

/// The ids `GET /api/v1/providers{query}` lists.
fn ids(s: &Server, key: &str, query: &str) -> Vec<String> {
    let v = call(s, "GET", &format!("/api/v1/providers{query}"), key, None).json();
    v["data"]["providers"].as_array().unwrap().iter().map(|p| p["id"].as_str().unwrap().to_owned()).collect()
}

#[test]
fn a_new_provider_needs_an_unused_id() {
    let (s, key) = setup();
    two_providers(&s, &key);
    for (body, message) in [
        (json!({"model":"m"}), "New provider config must have an 'id' field"),
        (json!({"id":"tts"}), "Provider ID tts already exists"),
    ] {
        s.expect_error(&call(&s, "POST", "/api/v1/providers", &key, Some(body)), 400, message);
    }
}

#[test]
fn dashboard_field_aliases_are_stored_under_astrbots_names() {
    let (s, key) = setup();
    two_providers(&s, &key);
    let a = call(&s, "GET", "/api/v1/providers/openai/a", &key, None).json()["data"]["provider"].clone();
    assert_eq!(
        a,
        json!({"id":"openai/a","model":"a","provider_source_id":"openai","enable":false,"provider_type":"chat_completion"})
    );
}

#[test]
fn providers_are_filtered_by_capability_source_and_state() {
    let (s, key) = setup();
    two_providers(&s, &key);
    for (query, expected) in [
        ("", &["openai/a", "tts"][..]),
        ("?capability=chat", &["openai/a"]),
        ("?capability=tts", &["tts"]),
        ("?source_id=openai", &["openai/a"]),
        ("?enabled=true", &["tts"]),
    ] {
        assert_eq!(ids(&s, &key, query), expected, "{query}");
    }
    assert!(!call(&s, "GET", "/api/v1/providers", &key, None).text().contains("sk-tts-secret-value-1234"));
}

#[test]
fn patch_enabled_switches_a_provider_on_and_off() {
    let (s, key) = setup();
    two_providers(&s, &key);
    let r = call(&s, "PATCH", "/api/v1/providers/openai/a/enabled", &key, Some(json!({"enabled":true})));
    assert_eq!(r.json()["message"], "更新成功，已经实时生效~");
    assert_eq!(ids(&s, &key, "?enabled=true"), ["openai/a", "tts"]);
    let r = call(&s, "PATCH", "/api/v1/providers/enabled", &key, Some(json!({"provider_id":"tts"})));
    s.expect(&r, 200);
    assert_eq!(ids(&s, &key, "?enabled=false"), ["tts"], "a missing `enabled` means false");
    for (path, body, message) in [
        ("/api/v1/providers/enabled", json!({}), "Missing key: provider_id"),
        ("/api/v1/providers/nope/enabled", json!({"enabled":true}), "Provider nope not found"),
    ] {
        s.expect_error(&call(&s, "PATCH", path, &key, Some(body)), 400, message);
    }
}

#[test]
fn put_renames_a_provider_in_place_unless_the_id_is_taken() {
    let (s, key) = setup();
    two_providers(&s, &key);
    for (path, body, message) in [
        ("/api/v1/providers/by-id", json!({"id":"x"}), "Missing key: provider_id"),
        ("/api/v1/providers/by-id", json!({"provider_id":"nope","model":"x"}), "Provider ID nope not found"),
        ("/api/v1/providers/openai/a", json!({"id":"tts","model":"x"}), "Provider ID tts already exists"),
    ] {
        s.expect_error(&call(&s, "PUT", path, &key, Some(body)), 400, message);
    }
    let r = call(
        &s,
        "PUT",
        "/api/v1/providers/openai/a",
        &key,
        Some(json!({"id":"openai/b","provider_source_id":"openai","model":"b"})),
    );
    s.expect(&r, 200);
    assert_eq!(ids(&s, &key, ""), ["openai/b", "tts"], "renamed in place");
}

#[test]
fn a_masked_provider_key_sent_back_keeps_the_stored_one() {
    let (s, key) = setup();
    two_providers(&s, &key);
    let tts = call(&s, "GET", "/api/v1/providers/tts", &key, None).json()["data"]["provider"].clone();
    s.expect(&call(&s, "PUT", "/api/v1/providers/tts", &key, Some(tts)), 200);
    let conn = rusqlite::Connection::open(s.data.path().join("astrbot.db")).unwrap();
    let body: String =
        conn.query_row("SELECT body FROM providers WHERE id = 'tts'", [], |r| r.get(0)).unwrap();
    assert!(body.contains("sk-tts-secret-value-1234"));
}

#[test]
fn deleting_a_provider_is_quiet_about_unknown_ids() {
    let (s, key) = setup();
    two_providers(&s, &key);
    let r = call(&s, "GET", "/api/v1/providers/by-id?provider_id=gone", &key, None);
    s.expect_error(&r, 400, "Provider gone not found");
    let r = call(&s, "DELETE", "/api/v1/providers/gone", &key, None);
    assert_eq!(r.json()["message"], "删除成功，已经实时生效。", "unknown ids delete quietly");
    s.expect(&call(&s, "DELETE", "/api/v1/providers/by-id?provider_id=openai/a", &key, None), 200);
    assert_eq!(ids(&s, &key, ""), ["tts"]);
    s.expect_error(
        &call(&s, "DELETE", "/api/v1/providers/by-id", &key, None),
        400,
        "Missing key: provider_id",
    );
}

#[test]
fn keys_without_the_provider_or_config_scope_are_refused() {
    let s = Server::start();
    let (chat, _) = s.create_key(&s.admin_token(), r#"{"scopes":["chat","persona"]}"#);
    for (method, path, body) in [
        ("GET", "/api/v1/providers", None),
        ("GET", "/api/v1/provider-sources", None),
        ("POST", "/api/v1/providers", Some(json!({"id":"x"}))),
    ] {
        s.expect_error(&call(&s, method, path, &chat, body), 403, "Insufficient API key scope");
    }
}

#[test]
fn the_config_scope_reaches_providers() {
    let s = Server::start();
    let (config, _) = s.create_key(&s.admin_token(), r#"{"scopes":["config"]}"#);
    for path in ["/api/v1/providers", "/api/v1/provider-sources"] {
        s.expect(&call(&s, "GET", path, &config, None), 200);
    }
    s.expect(&call(&s, "POST", "/api/v1/providers", &config, Some(json!({"id":"x"}))), 200);
}

#[test]
fn everything_survives_a_restart() {
    let data = std::sync::Arc::new(crate::support::TempDir::new());
    let s = Server::start_with(data.clone(), &[]);
    let (key, _) = s.create_key(&s.admin_token(), r#"{"scopes":["provider","persona","config"]}"#);
    call(&s, "POST", "/api/v1/provider-sources", &key, Some(dashboard_source()));
    call(&s, "POST", "/api/v1/providers", &key, Some(dashboard_provider()));
    call(&s, "POST", "/api/v1/personas", &key, Some(json!({"persona_id":"tutor","system_prompt":"Teach."})));
    call(&s, "PUT", "/api/v1/system-config", &key, Some(json!({"timezone":"UTC"})));
    assert!(s.terminate().success());
    let s = Server::start_with(data, &[]);
    assert_eq!(
        call(&s, "GET", "/api/v1/providers", &key, None).json()["data"]["providers"][0]["id"],
        "openai/gpt-4o-mini"
    );
    assert_eq!(
        call(&s, "GET", "/api/v1/personas/tutor", &key, None).json()["data"]["system_prompt"],
        "Teach."
    );
    assert_eq!(
        call(&s, "GET", "/api/v1/system-config", &key, None).json()["data"]["config"]["timezone"],
        "UTC"
    );
}

/// A one-request fake OpenAI-compatible upstream answering `status` with `body`.
fn one_shot_upstream(status: u16, body: &'static str) -> (String, std::thread::JoinHandle<String>) {
    use std::io::{BufRead, BufReader, Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}/v1", listener.local_addr().unwrap());
    let handle = std::thread::spawn(move || {
        let (stream, _) = listener.accept().unwrap();
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        let mut len = 0;
        let mut line = String::new();
        loop {
            line.clear();
            reader.read_line(&mut line).unwrap();
            if line.trim().is_empty() {
                break;
            }
            if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                len = v.trim().parse().unwrap();
            }
        }
        let mut request = vec![0; len];
        reader.read_exact(&mut request).unwrap();
        let mut stream = stream;
        write!(stream, "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len()).unwrap();
        String::from_utf8(request).unwrap()
    });
    (base, handle)
}

#[test]
fn the_pong_probe_reports_availability() {
    let (s, key) = setup();
    let (base, upstream) = one_shot_upstream(
        200,
        r#"{"choices":[{"message":{"content":"PONG"}}],"usage":{"prompt_tokens":5,"completion_tokens":1}}"#,
    );
    call(
        &s,
        "POST",
        "/api/v1/provider-sources",
        &key,
        Some(json!({"id":"fake","type":"openai_chat_completion","api_base":base,"key":["sk-probe"]})),
    );
    call(
        &s,
        "POST",
        "/api/v1/providers",
        &key,
        Some(json!({"id":"fake/m","provider_source_id":"fake","model":"m"})),
    );
    let r = call(&s, "POST", "/api/v1/providers/test", &key, Some(json!({"provider_id":"fake/m"})));
    assert_eq!(
        r.json()["data"],
        json!({"id":"fake/m","model":"m","type":"chat_completion","name":"fake/m","status":"available","error":null})
    );
    let request: Value = serde_json::from_str(&upstream.join().unwrap()).unwrap();
    assert_eq!(request["messages"][0]["content"], "REPLY `PONG` ONLY");
    assert_eq!(request["stream"], false);

    let (base, upstream) = one_shot_upstream(401, r#"{"error":{"message":"bad key"}}"#);
    call(
        &s,
        "PUT",
        "/api/v1/provider-sources/fake",
        &key,
        Some(json!({"id":"fake","type":"openai_chat_completion","api_base":base,"key":["sk-probe"]})),
    );
    let r = call(&s, "POST", "/api/v1/providers/fake/m/test", &key, None);
    let d = r.json()["data"].clone();
    assert_eq!(
        (d["status"].clone(), d["error"].clone()),
        (json!("unavailable"), json!("Error code: 401 - bad key"))
    );
    upstream.join().unwrap();
    s.expect_error(
        &call(&s, "POST", "/api/v1/providers/test", &key, Some(json!({}))),
        400,
        "Missing key: provider_id",
    );
    s.expect_error(
        &call(&s, "POST", "/api/v1/providers/nope/test", &key, None),
        400,
        "Provider nope not found",
    );
    call(&s, "PATCH", "/api/v1/providers/fake/m/enabled", &key, Some(json!({"enabled":false})));
    s.expect_error(
        &call(&s, "POST", "/api/v1/providers/fake/m/test", &key, None),
        400,
        "Provider fake/m not found",
    );
}

/// Regression: `{"timeout":"abc","custom_headers":{"X-A":{}}}` was stored, and the listing
/// then broke its own schema. Sources are type-checked on save as AstrBot validates a
/// config (numeric strings cast, nulls emptied), under `config` as well as flat.
#[test]
fn a_source_with_wrong_field_types_is_refused_and_not_stored() {
    let (s, key) = setup();
    let bad = json!({"id":"typed","timeout":"abc","custom_headers":{"X-A":{}}});
    let message = "格式校验未通过: ['错误的类型 provider_sources.timeout: 期望是 int, 得到了 str', \
                   '错误的类型 provider_sources.custom_headers.X-A: 期望是 string, 得到了 dict']";
    s.expect_error(&call(&s, "POST", "/api/v1/provider-sources", &key, Some(bad.clone())), 400, message);
    s.expect_error(
        &call(
            &s,
            "PUT",
            "/api/v1/provider-sources/by-id",
            &key,
            Some(json!({"source_id":"typed","config":bad})),
        ),
        400,
        message,
    );
    s.expect_error(
        &call(&s, "POST", "/api/v1/provider-sources", &key, Some(json!({"id":"k","key":["sk-1", 2]}))),
        400,
        "格式校验未通过: ['错误的类型 provider_sources.key[1]: 期望是 string, 得到了 int']",
    );
    let list = call(&s, "GET", "/api/v1/provider-sources", &key, None).json();
    assert_eq!(list["data"]["provider_sources"], json!([]), "nothing stored: {list}");

    // What AstrBot accepts is kept, cast: a numeric string timeout, a null proxy (kept only
    // under `config`: a flat body drops its nulls).
    let ok = json!({"config": {"id":"typed","timeout":" 30 ","proxy":null,"custom_headers":{"X-A":"1"}}});
    s.expect(&call(&s, "POST", "/api/v1/provider-sources", &key, Some(ok)), 200);
    let one = call(&s, "GET", "/api/v1/provider-sources/typed", &key, None).json();
    assert_eq!(one["data"]["provider_source"]["timeout"], 30, "{one}");
    assert_eq!(one["data"]["provider_source"]["proxy"], "", "{one}");
}

/// Regression: a method the `/test` suffix route does not take fell through to the
/// `{provider_id}` route: `PUT /providers/x/test` answered "Provider ID x/test not found"
/// and `DELETE` deleted a provider `x/test`. Fixed paths take precedence: 405 with Allow.
#[test]
fn fixed_suffixes_are_not_provider_ids() {
    let (s, key) = setup();
    add_dashboard_pair(&s, &key);
    // A provider whose id ends in a suffix, reached with its `/` encoded.
    let p = json!({"id":"openai/test","provider_source_id":"openai","model":"test"});
    s.expect(&call(&s, "POST", "/api/v1/providers", &key, Some(p)), 200);
    for method in ["PUT", "DELETE", "GET", "PATCH"] {
        let r = call(&s, method, "/api/v1/providers/openai/test", &key, Some(json!({})));
        s.expect_error(&r, 405, "Method Not Allowed");
        assert_eq!(r.header("allow"), Some("POST"), "{method}");
    }
    let r = call(&s, "PUT", "/api/v1/providers/openai/gpt-4o-mini/enabled", &key, Some(json!({})));
    s.expect_error(&r, 405, "Method Not Allowed");
    assert_eq!(r.header("allow"), Some("PATCH"));
    let r = call(&s, "PUT", "/api/v1/personas/tree", &key, Some(json!({})));
    assert_eq!(r.status, 405);
    // Still there, and reachable by its encoded id.
    let one = call(&s, "GET", "/api/v1/providers/openai%2Ftest", &key, None);
    s.expect(&one, 200);
    assert_eq!(one.json()["data"]["provider"]["id"], "openai/test");
    s.expect(&call(&s, "DELETE", "/api/v1/providers/openai%2Ftest", &key, None), 200);
}
