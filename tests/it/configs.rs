//! System config, config profiles, `/configs` and UMO routes (issue 3; reference
//! management §4, open API §9).

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
fn put_merges_validates_and_keeps_read_only_sections() {
    let (s, k) = setup(r#"["config","provider"]"#);
    s.call(
        "POST",
        "/api/v1/provider-sources",
        &k,
        Some(json!({"id":"openai","type":"openai_chat_completion","key":["sk-abcdefghijkl1234"]})),
    );
    let r = s.call(
        "PUT",
        "/api/v1/system-config",
        &k,
        Some(json!({"timezone":"UTC","wake_prefix":["!"],"provider_sources":[],"kb_names":null})),
    );
    assert_eq!(r.json(), json!({"status":"ok","message":"保存成功~","data":{}}));
    let c = s.call("GET", "/api/v1/system-config", &k, None).json()["data"]["config"].clone();
    assert_eq!((c["timezone"].clone(), c["wake_prefix"].clone()), (json!("UTC"), json!(["!"])));
    assert_eq!(c["admins_id"], json!(["astrbot"]), "other keys kept");
    assert_eq!(c["provider_sources"][0]["id"], "openai", "read-only sections are not touched by a PUT");
    assert_eq!(c["provider_sources"][0]["key"], json!(["sk-****1234"]));
    assert_eq!(
        s.call("GET", "/api/v1/system-config", &k, None).json()["data"]["server_utc_offset_minutes"],
        0
    );

    let r = s.call(
        "PUT",
        "/api/v1/system-config",
        &k,
        Some(json!({"wake_prefix":"x","provider_settings":{"enable":"yes","max_context_length":"7"}})),
    );
    s.expect_error(
        &r,
        400,
        "格式校验未通过: ['错误的类型 wake_prefix: 期望是 list, 得到了 str', '错误的类型 provider_settings.enable: 期望是 bool, 得到了 str']",
    );
    // AstrBot checks the admins_id guard before the types.
    let r = s.call("PUT", "/api/v1/system-config", &k, Some(json!({"admins_id":"x"})));
    s.expect_error(&r, 403, "config:edit_admin scope is required to change admins_id");
    assert_eq!(stored_default(&s)["timezone"], "UTC", "nothing half-written");
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
    s.expect_error(
        &s.call("PUT", "/api/v1/system-config", &k, Some(json!([1]))),
        400,
        "Request body must be a JSON object",
    );
}

#[test]
fn secrets_are_redacted_and_survive_the_round_trip() {
    let (s, k) = setup(r#"["config"]"#);
    let secret = "tok-SECRET-abcdef-9876";
    s.expect(
        &s.call(
            "PUT",
            "/api/v1/system-config",
            &k,
            Some(json!({"sandbox":{"access_token":secret},"http_proxy":"http://p"})),
        ),
        200,
    );
    let got = s.call("GET", "/api/v1/system-config", &k, None);
    assert!(!got.text().contains(secret));
    let mut config = got.json()["data"]["config"].clone();
    assert_eq!(config["sandbox"]["access_token"], "tok****9876");
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

#[test]
fn profiles_lifecycle_and_messages() {
    let (s, k) = setup(r#"["config"]"#);
    let r = s.call(
        "POST",
        "/api/v1/config-profiles",
        &k,
        Some(json!({"name":"group-profile","config":{"timezone":"UTC"}})),
    );
    assert_eq!(r.json()["message"], "创建成功");
    let id = r.json()["data"]["conf_id"].as_str().unwrap().to_owned();
    let unnamed = s.call("POST", "/api/v1/config-profiles", &k, Some(json!({}))).json()["data"]["conf_id"]
        .as_str()
        .unwrap()
        .to_owned();

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
    let r = s.call("PATCH", &format!("/api/v1/config-profiles/{id}"), &k, Some(json!({"name":"renamed"})));
    assert_eq!(r.json()["message"], "更新成功");
    assert_eq!(s.call("GET", "/api/v1/configs", &k, None).json()["data"]["configs"][0]["name"], "renamed");

    s.expect_error(
        &s.call("GET", "/api/v1/config-profiles/nope", &k, None),
        400,
        "Config file nope does not exist",
    );
    s.expect_error(
        &s.call("PUT", "/api/v1/config-profiles/nope", &k, Some(json!({}))),
        400,
        "Config file nope does not exist",
    );
    s.expect_error(
        &s.call("PATCH", "/api/v1/config-profiles/default", &k, Some(json!({"name":"x"}))),
        400,
        "不能更新默认配置文件的信息",
    );
    s.expect_error(
        &s.call("PATCH", "/api/v1/config-profiles/nope", &k, Some(json!({"name":"x"}))),
        400,
        "Failed to update config profile",
    );
    s.expect_error(
        &s.call("DELETE", "/api/v1/config-profiles/default", &k, None),
        400,
        "不能删除默认配置文件",
    );
    s.expect_error(
        &s.call("DELETE", "/api/v1/config-profiles/nope", &k, None),
        400,
        "Failed to delete config profile",
    );
    let r = s.call("DELETE", &format!("/api/v1/config-profiles/{id}"), &k, None);
    assert_eq!(r.json()["message"], "删除成功");
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

#[test]
fn routes_and_the_effective_settings_of_a_umo() {
    let (s, k) = setup(r#"["config","persona","provider"]"#);
    let umo = "webchat:FriendMessage:webchat!alice!s1";
    let eff =
        |s: &Server| s.call("GET", &format!("/api/v1/config-routes/{umo}"), &k, None).json()["data"].clone();
    assert_eq!(
        eff(&s),
        json!({"umo": umo, "config_id": "default", "routed": false, "provider_id": "builtin", "persona_id": "default"})
    );

    // The must-show: a persona named in default_personality is what the lookup returns.
    s.call("POST", "/api/v1/personas", &k, Some(json!({"persona_id":"tutor","system_prompt":"Teach."})));
    let mut config = s.call("GET", "/api/v1/system-config", &k, None).json()["data"]["config"].clone();
    config["provider_settings"]["default_personality"] = json!("tutor");
    s.expect(&s.call("PUT", "/api/v1/system-config", &k, Some(config)), 200);
    assert_eq!(eff(&s)["persona_id"], "tutor");

    // Providers: the first enabled chat provider, then default_provider_id.
    s.call(
        "POST",
        "/api/v1/provider-sources",
        &k,
        Some(json!({"id":"openai","type":"openai_chat_completion","key":["$K_API_KEY"]})),
    );
    s.call(
        "POST",
        "/api/v1/providers",
        &k,
        Some(json!({"id":"openai/a","provider_source_id":"openai","model":"a"})),
    );
    s.call(
        "POST",
        "/api/v1/providers",
        &k,
        Some(json!({"id":"openai/b","provider_source_id":"openai","model":"b"})),
    );
    assert_eq!(eff(&s)["provider_id"], "openai/a");
    s.call(
        "PUT",
        "/api/v1/system-config",
        &k,
        Some(json!({"provider_settings":{"default_provider_id":"openai/b","default_personality":"tutor"}})),
    );
    assert_eq!(eff(&s)["provider_id"], "openai/b");

    let profile =
        s.call("POST", "/api/v1/config-profiles", &k, Some(json!({"name":"p"}))).json()["data"]["conf_id"]
            .as_str()
            .unwrap()
            .to_owned();
    let r = s.call("PUT", &format!("/api/v1/config-routes/{umo}"), &k, Some(json!({"config_id": profile})));
    s.expect(&r, 200);
    assert_eq!(
        s.call("GET", "/api/v1/config-routes", &k, None).json()["data"]["routing"],
        json!({umo: profile})
    );
    let e = eff(&s);
    assert_eq!(
        (e["config_id"].clone(), e["routed"].clone(), e["persona_id"].clone()),
        (json!(profile), json!(true), json!("default"))
    );
    s.expect(
        &s.call("PUT", &format!("/api/v1/config-routes/{umo}"), &k, Some(json!({"config_id":"default"}))),
        200,
    );
    assert_eq!(eff(&s)["routed"], false, "routing to default removes the route");

    let r = s.call(
        "PUT",
        "/api/v1/config-routes",
        &k,
        Some(json!({"routing": {umo: profile, "telegram:GroupMessage:-100": profile}})),
    );
    assert_eq!(r.json()["data"]["routing"].as_object().unwrap().len(), 2);
    s.expect_error(
        &s.call("PUT", "/api/v1/config-routes", &k, Some(json!({"routing": {"bad": profile}}))),
        400,
        "Invalid umo: bad",
    );
    s.expect_error(
        &s.call("PUT", &format!("/api/v1/config-routes/{umo}"), &k, Some(json!({"config_id":"nope"}))),
        400,
        "Config file nope does not exist",
    );
    s.expect_error(
        &s.call("PUT", &format!("/api/v1/config-routes/{umo}"), &k, Some(json!({}))),
        400,
        "Missing key: config_id",
    );
    assert_eq!(
        s.call("GET", "/api/v1/config-routes", &k, None).json()["data"]["routing"].as_object().unwrap().len(),
        2,
        "a refused PUT changes nothing"
    );
    s.expect(&s.call("DELETE", &format!("/api/v1/config-routes/{umo}"), &k, None), 200);
    // Deleting a profile removes the routes to it.
    s.call("DELETE", &format!("/api/v1/config-profiles/{profile}"), &k, None);
    assert_eq!(s.call("GET", "/api/v1/config-routes", &k, None).json()["data"]["routing"], json!({}));
}
