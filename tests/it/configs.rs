//! System config, config profiles, `/configs` and UMO routes, with the bodies and messages
//! of AstrBot's dashboard and open API.

use serde_json::{Value, json};

use crate::support::Server;

fn setup(scopes: &str) -> (Server, String) {
    let s = Server::start();
    let (key, _) = s.create_key(&s.admin_token(), &format!(r#"{{"scopes":{scopes}}}"#));
    (s, key)
}

fn stored_default(s: &Server) -> Value {
    let conn = rusqlite::Connection::open(s.data.path().join("astrbot.db")).unwrap();
    let body: String =
        conn.query_row("SELECT body FROM config_profiles WHERE id = 'default'", [], |r| r.get(0)).unwrap();
    serde_json::from_str(&body).unwrap()
}

#[test]
fn system_config_shape() {
    let (s, k) = setup(r#"["config"]"#);
    let r = s.call("GET", "/api/v1/system-config", &k, None);
    s.expect(&r, 200);
    let d = r.json()["data"].clone();
    let c = &d["config"];
    assert_eq!(c["admins_id"], json!(["astrbot"]));
    assert_eq!(c["provider_settings"]["default_provider_id"], "");
    assert_eq!(c["provider_settings"]["default_personality"], "default");
    assert_eq!(c["provider_settings"]["wake_prefix"], "");
    assert_eq!(c["provider_settings"]["max_context_length"], -1);
    assert_eq!(c["provider_settings"]["request_max_retries"], 3);
    assert!(c["platform_settings"].is_object());
    assert_eq!((c["provider_sources"].clone(), c["provider"].clone()), (json!([]), json!([])));
    assert!(d["metadata"].is_object());
    assert!(d["server_utc_time"].as_str().unwrap().ends_with("+00:00"));
    assert!(d["server_utc_offset_minutes"].is_i64());
    assert!(c.get("dashboard").is_none_or(|d| d.get("password").is_none()), "no admin credentials here");
}

#[test]
fn put_merges_the_sent_keys_and_keeps_the_others() {
    let (s, k) = setup(r#"["config"]"#);
    let r = s.call(
        "PUT",
        "/api/v1/system-config",
        &k,
        Some(json!({"timezone":"UTC","wake_prefix":["!"],"provider_sources":[],"kb_names":null})),
    );
    assert_eq!(r.json(), json!({"status":"ok","message":"保存成功~","data":{}}));
    let got = s.call("GET", "/api/v1/system-config", &k, None).json()["data"].clone();
    let c = &got["config"];
    assert_eq!((c["timezone"].clone(), c["wake_prefix"].clone()), (json!("UTC"), json!(["!"])));
    assert_eq!(c["admins_id"], json!(["astrbot"]), "other keys kept");
    assert_eq!(got["server_utc_offset_minutes"], 0);
}

#[test]
fn put_leaves_the_read_only_provider_sections_alone() {
    let (s, k) = setup(r#"["config","provider"]"#);
    s.call(
        "POST",
        "/api/v1/provider-sources",
        &k,
        Some(json!({"id":"openai","type":"openai_chat_completion","key":["sk-abcdefghijkl1234"]})),
    );
    s.expect(&s.call("PUT", "/api/v1/system-config", &k, Some(json!({"provider_sources":[]}))), 200);
    let c = s.call("GET", "/api/v1/system-config", &k, None).json()["data"]["config"].clone();
    assert_eq!(c["provider_sources"][0]["id"], "openai", "read-only sections are not touched by a PUT");
    assert_eq!(c["provider_sources"][0]["key"], json!(["sk-****1234"]));
}

#[test]
fn a_refused_put_names_every_problem_and_writes_nothing() {
    let (s, k) = setup(r#"["config"]"#);
    s.expect(&s.call("PUT", "/api/v1/system-config", &k, Some(json!({"timezone":"UTC"}))), 200);
    for (body, status, message) in [
        (
            json!({"wake_prefix":"x","provider_settings":{"enable":"yes","max_context_length":"7"}}),
            400,
            "格式校验未通过: ['错误的类型 wake_prefix: 期望是 list, 得到了 str', '错误的类型 provider_settings.enable: 期望是 bool, 得到了 str']",
        ),
        // AstrBot checks the admins_id guard before the types.
        (json!({"admins_id":"x"}), 403, "config:edit_admin scope is required to change admins_id"),
        (json!([1]), 400, "Request body must be a JSON object"),
    ] {
        s.check_error("PUT", "/api/v1/system-config", &k, Some(body), status, message);
    }
    assert_eq!(stored_default(&s)["timezone"], "UTC", "nothing half-written");
}

#[test]
fn put_casts_numeric_strings() {
    let (s, k) = setup(r#"["config"]"#);
    s.expect(
        &s.call(
            "PUT",
            "/api/v1/system-config",
            &k,
            Some(json!({"provider_settings":{"max_context_length":"7"}})),
        ),
        200,
    );
    let c = s.call("GET", "/api/v1/system-config", &k, None).json()["data"]["config"].clone();
    assert_eq!(c["provider_settings"]["max_context_length"], 7, "numeric strings are cast");
}

/// Stores `secret` as the sandbox token (and a proxy) in the default profile.
fn store_a_secret(s: &Server, k: &str, secret: &str) {
    s.expect(
        &s.call(
            "PUT",
            "/api/v1/system-config",
            k,
            Some(json!({"sandbox":{"access_token":secret},"http_proxy":"http://p"})),
        ),
        200,
    );
}

#[test]
fn secrets_are_masked_in_the_system_config() {
    let (s, k) = setup(r#"["config"]"#);
    let secret = "tok-SECRET-abcdef-9876";
    store_a_secret(&s, &k, secret);
    let got = s.call("GET", "/api/v1/system-config", &k, None);
    assert!(!got.text().contains(secret));
    assert_eq!(got.json()["data"]["config"]["sandbox"]["access_token"], "tok****9876");
}

#[test]
fn a_masked_secret_sent_back_keeps_the_stored_one() {
    let (s, k) = setup(r#"["config"]"#);
    let secret = "tok-SECRET-abcdef-9876";
    store_a_secret(&s, &k, secret);
    let mut config = s.call("GET", "/api/v1/system-config", &k, None).json()["data"]["config"].clone();
    config["http_proxy"] = json!("http://q");
    s.expect(&s.call("PUT", "/api/v1/system-config", &k, Some(config)), 200);
    let stored = stored_default(&s);
    assert_eq!(stored["sandbox"]["access_token"], secret, "the masked value kept the stored secret");
    assert_eq!(stored["http_proxy"], "http://q");
    for path in ["/api/v1/system-config", "/api/v1/config-profiles/default"] {
        assert!(!s.call("GET", path, &k, None).text().contains(secret), "{path}");
    }
}

#[test]
fn admins_id_needs_config_edit_admin() {
    let s = Server::start();
    let admin = s.admin_token();
    let (plain, _) = s.create_key(&admin, r#"{"scopes":["config"]}"#);
    let (edit, _) = s.create_key(&admin, r#"{"scopes":["config","config:edit_admin"]}"#);
    let change = json!({"admins_id":["astrbot","alice"]});
    s.expect_error(
        &s.call("PUT", "/api/v1/system-config", &plain, Some(change.clone())),
        403,
        "config:edit_admin scope is required to change admins_id",
    );
    s.expect(
        &s.call(
            "PUT",
            "/api/v1/system-config",
            &plain,
            Some(json!({"admins_id":["astrbot"],"timezone":"UTC"})),
        ),
        200,
    );
    s.expect(&s.call("PUT", "/api/v1/system-config", &edit, Some(change)), 200);
    s.expect(&s.call("PUT", "/api/v1/system-config", &admin, Some(json!({"admins_id":["bob"]}))), 200);
    let c = s.call("GET", "/api/v1/system-config", &plain, None).json()["data"]["config"].clone();
    assert_eq!(c["admins_id"], json!(["bob"]));
    let r = s.call(
        "POST",
        "/api/v1/config-profiles",
        &plain,
        Some(json!({"name":"p","config":{"admins_id":["eve"]}})),
    );
    s.expect_error(&r, 403, "config:edit_admin scope is required to change admins_id");
    let r = s.call("PUT", "/api/v1/config-profiles/default", &plain, Some(json!({"admins_id":["eve"]})));
    s.expect_error(&r, 403, "config:edit_admin scope is required to change admins_id");
}

/// Creates a profile named `name` with `config`; returns its id.
fn create_profile(s: &Server, k: &str, body: Value) -> String {
    let r = s.check("POST", "/api/v1/config-profiles", k, Some(body), 200, json!({"message": "创建成功"}));
    r.json()["data"]["conf_id"].as_str().unwrap().to_owned()
}

#[test]
fn profiles_are_listed_newest_first_with_the_default_last() {
    let (s, k) = setup(r#"["config"]"#);
    let id = create_profile(&s, &k, json!({"name":"group-profile","config":{"timezone":"UTC"}}));
    let unnamed = create_profile(&s, &k, json!({}));
    let configs = s.call("GET", "/api/v1/configs", &k, None).json()["data"]["configs"].clone();
    let list = configs.as_array().unwrap();
    assert_eq!(list.len(), 3);
    assert_eq!(
        list[0],
        json!({"id": id, "name": "group-profile", "path": format!("abconf_{id}.json"), "is_default": false})
    );
    assert_eq!(list[1]["id"], unnamed.as_str());
    assert_eq!(list[1]["name"].as_str().unwrap().len(), 8, "an unnamed profile gets 8 hex characters");
    let d = &list[2];
    assert_eq!(
        (d["id"].clone(), d["name"].clone(), d["is_default"].clone()),
        (json!("default"), json!("default"), json!(true))
    );
    assert!(d["path"].is_string());
    let info = s.call("GET", "/api/v1/config-profiles", &k, None).json()["data"]["info_list"].clone();
    assert_eq!(info.as_array().unwrap().last().unwrap()["id"], "default");
}

#[test]
fn a_profile_is_completed_with_the_defaults_and_merged_by_put() {
    let (s, k) = setup(r#"["config"]"#);
    let id = create_profile(&s, &k, json!({"name":"group-profile","config":{"timezone":"UTC"}}));
    let p = s.call("GET", &format!("/api/v1/config-profiles/{id}"), &k, None).json()["data"].clone();
    assert_eq!(p["config"]["timezone"], "UTC");
    assert_eq!(p["config"]["admins_id"], json!(["astrbot"]), "completed with the defaults");
    s.expect(
        &s.call("PUT", &format!("/api/v1/config-profiles/{id}"), &k, Some(json!({"wake_prefix":["#"]}))),
        200,
    );
    let p =
        s.call("GET", &format!("/api/v1/config-profiles/{id}"), &k, None).json()["data"]["config"].clone();
    assert_eq!((p["wake_prefix"].clone(), p["timezone"].clone()), (json!(["#"]), json!("UTC")));
}

#[test]
fn patch_renames_a_profile() {
    let (s, k) = setup(r#"["config"]"#);
    let id = create_profile(&s, &k, json!({"name":"group-profile"}));
    let path = format!("/api/v1/config-profiles/{id}");
    s.check("PATCH", &path, &k, Some(json!({"name":"renamed"})), 200, json!({"message": "更新成功"}));
    assert_eq!(s.call("GET", "/api/v1/configs", &k, None).json()["data"]["configs"][0]["name"], "renamed");
}

#[test]
fn profile_refusals_name_the_problem() {
    let (s, k) = setup(r#"["config"]"#);
    let name = Some(json!({"name":"x"}));
    for (method, path, body, message) in [
        ("GET", "/api/v1/config-profiles/nope", None, "Config file nope does not exist"),
        ("PUT", "/api/v1/config-profiles/nope", Some(json!({})), "Config file nope does not exist"),
        ("PATCH", "/api/v1/config-profiles/default", name.clone(), "不能更新默认配置文件的信息"),
        ("PATCH", "/api/v1/config-profiles/nope", name, "Failed to update config profile"),
        ("DELETE", "/api/v1/config-profiles/default", None, "不能删除默认配置文件"),
        ("DELETE", "/api/v1/config-profiles/nope", None, "Failed to delete config profile"),
    ] {
        s.check_error(method, path, &k, body, 400, message);
    }
}

#[test]
fn a_deleted_profile_leaves_the_list() {
    let (s, k) = setup(r#"["config"]"#);
    let id = create_profile(&s, &k, json!({"name":"group-profile"}));
    create_profile(&s, &k, json!({}));
    let path = format!("/api/v1/config-profiles/{id}");
    s.check("DELETE", &path, &k, None, 200, json!({"message": "删除成功"}));
    assert_eq!(
        s.call("GET", "/api/v1/configs", &k, None).json()["data"]["configs"].as_array().unwrap().len(),
        2
    );
}

#[test]
fn configs_need_the_config_scope() {
    let s = Server::start();
    let (chat, _) = s.create_key(&s.admin_token(), r#"{"scopes":["chat","im","bot","provider","persona"]}"#);
    for path in
        ["/api/v1/configs", "/api/v1/system-config", "/api/v1/config-profiles", "/api/v1/config-routes"]
    {
        s.expect_error(&s.call("GET", path, &chat, None), 403, "Insufficient API key scope");
    }
}

const UMO: &str = "webchat:FriendMessage:webchat!alice!s1";

/// The effective settings of [`UMO`].
fn effective(s: &Server, k: &str) -> Value {
    s.call("GET", &format!("/api/v1/config-routes/{UMO}"), k, None).json()["data"].clone()
}

/// Creates persona `tutor` and names it in the default profile's `default_personality`.
fn make_tutor_the_default_persona(s: &Server, k: &str) {
    s.call("POST", "/api/v1/personas", k, Some(json!({"persona_id":"tutor","system_prompt":"Teach."})));
    let mut config = s.call("GET", "/api/v1/system-config", k, None).json()["data"]["config"].clone();
    config["provider_settings"]["default_personality"] = json!("tutor");
    s.expect(&s.call("PUT", "/api/v1/system-config", k, Some(config)), 200);
}

#[test]
fn a_umo_without_a_route_gets_the_default_settings() {
    let (s, k) = setup(r#"["config"]"#);
    assert_eq!(
        effective(&s, &k),
        json!({"umo": UMO, "config_id": "default", "routed": false, "provider_id": "builtin", "persona_id": "default"})
    );
}

#[test]
fn the_effective_persona_is_the_default_personality() {
    let (s, k) = setup(r#"["config","persona"]"#);
    // The must-show: a persona named in default_personality is what the lookup returns.
    make_tutor_the_default_persona(&s, &k);
    assert_eq!(effective(&s, &k)["persona_id"], "tutor");
}

#[test]
fn the_effective_provider_is_default_provider_id_else_the_first_enabled() {
    let (s, k) = setup(r#"["config","persona","provider"]"#);
    make_tutor_the_default_persona(&s, &k);
    s.call(
        "POST",
        "/api/v1/provider-sources",
        &k,
        Some(json!({"id":"openai","type":"openai_chat_completion","key":["$K_API_KEY"]})),
    );
    for model in ["a", "b"] {
        let provider =
            json!({"id": format!("openai/{model}"), "provider_source_id": "openai", "model": model});
        s.call("POST", "/api/v1/providers", &k, Some(provider));
    }
    assert_eq!(effective(&s, &k)["provider_id"], "openai/a");
    s.call(
        "PUT",
        "/api/v1/system-config",
        &k,
        Some(json!({"provider_settings":{"default_provider_id":"openai/b","default_personality":"tutor"}})),
    );
    assert_eq!(effective(&s, &k)["provider_id"], "openai/b");
}

#[test]
fn a_route_gives_a_umo_the_settings_of_its_profile() {
    let (s, k) = setup(r#"["config","persona"]"#);
    make_tutor_the_default_persona(&s, &k);
    let profile = create_profile(&s, &k, json!({"name":"p"}));
    let r = s.call("PUT", &format!("/api/v1/config-routes/{UMO}"), &k, Some(json!({"config_id": profile})));
    s.expect(&r, 200);
    assert_eq!(
        s.call("GET", "/api/v1/config-routes", &k, None).json()["data"]["routing"],
        json!({UMO: profile})
    );
    let e = effective(&s, &k);
    assert_eq!(
        (e["config_id"].clone(), e["routed"].clone(), e["persona_id"].clone()),
        (json!(profile), json!(true), json!("default"))
    );
}

#[test]
fn routing_a_umo_to_default_removes_its_route() {
    let (s, k) = setup(r#"["config"]"#);
    let profile = create_profile(&s, &k, json!({"name":"p"}));
    let path = format!("/api/v1/config-routes/{UMO}");
    s.expect(&s.call("PUT", &path, &k, Some(json!({"config_id": profile}))), 200);
    s.expect(&s.call("PUT", &path, &k, Some(json!({"config_id":"default"}))), 200);
    assert_eq!(effective(&s, &k)["routed"], false, "routing to default removes the route");
}

/// Routes [`UMO`] and a Telegram group to a new profile; returns the profile's id.
fn route_two_umos(s: &Server, k: &str) -> String {
    let profile = create_profile(s, k, json!({"name":"p"}));
    let r = s.call(
        "PUT",
        "/api/v1/config-routes",
        k,
        Some(json!({"routing": {UMO: profile, "telegram:GroupMessage:-100": profile}})),
    );
    assert_eq!(r.json()["data"]["routing"].as_object().unwrap().len(), 2);
    profile
}

#[test]
fn a_refused_route_names_the_problem_and_changes_nothing() {
    let (s, k) = setup(r#"["config"]"#);
    let profile = route_two_umos(&s, &k);
    let one = format!("/api/v1/config-routes/{UMO}");
    for (path, body, message) in [
        ("/api/v1/config-routes", json!({"routing": {"bad": profile}}), "Invalid umo: bad"),
        (one.as_str(), json!({"config_id":"nope"}), "Config file nope does not exist"),
        (one.as_str(), json!({}), "Missing key: config_id"),
    ] {
        s.check_error("PUT", path, &k, Some(body), 400, message);
    }
    assert_eq!(
        s.call("GET", "/api/v1/config-routes", &k, None).json()["data"]["routing"].as_object().unwrap().len(),
        2,
        "a refused PUT changes nothing"
    );
}

#[test]
fn deleting_a_profile_removes_the_routes_to_it() {
    let (s, k) = setup(r#"["config"]"#);
    let profile = route_two_umos(&s, &k);
    s.expect(&s.call("DELETE", &format!("/api/v1/config-routes/{UMO}"), &k, None), 200);
    s.call("DELETE", &format!("/api/v1/config-profiles/{profile}"), &k, None);
    assert_eq!(s.call("GET", "/api/v1/config-routes", &k, None).json()["data"]["routing"], json!({}));
}
