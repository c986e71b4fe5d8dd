//! Key administration (reference section 3): shapes, every validation message, the legacy
//! dashboard routes.

use serde_json::{Value, json};

use crate::support::{Server, bearer};

const DEFAULT_SCOPES: [&str; 11] =
    ["bot", "provider", "persona", "im", "config", "chat", "data", "file", "plugin", "mcp", "skill"];

fn admin(s: &Server) -> Vec<(&'static str, String)> {
    vec![("Authorization", bearer(&s.admin_token()))]
}

fn h<'a>(v: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    v.iter().map(|(n, x)| (*n, x.as_str())).collect()
}

#[test]
fn an_empty_create_gets_the_defaults_in_astrbots_field_order() {
    let s = Server::start();
    let a = admin(&s);
    let r = s.post("/api/v1/api-keys", &h(&a), "{}");
    s.expect(&r, 200);
    let text = r.text();
    assert!(text.starts_with(r#"{"status":"ok","message":null,"data":{"key_id":""#), "{text}");
    let data = r.json()["data"].clone();
    let keys: Vec<&str> = data.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        [
            "key_id",
            "name",
            "key_prefix",
            "scopes",
            "created_by",
            "created_at",
            "updated_at",
            "last_used_at",
            "expires_at",
            "revoked_at",
            "is_revoked",
            "is_expired",
            "daily_limit",
            "bot_id",
            "webhook_url",
            "usage_today",
            "api_key"
        ]
    );
    assert_eq!(data["name"], "Untitled API Key");
    assert_eq!(data["scopes"], json!(DEFAULT_SCOPES));
    assert_eq!(data["created_by"], "astrbot");
    let raw = data["api_key"].as_str().unwrap();
    assert_eq!(raw.len(), 47);
    assert!(raw.starts_with("abk_"));
    assert!(raw[4..].bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
    assert_eq!(data["key_prefix"], &raw[..12]);
    assert!(data["created_at"].as_str().unwrap().ends_with("+00:00"));
    assert_eq!(data["last_used_at"], Value::Null);
    assert_eq!(data["expires_at"], Value::Null);
    assert_eq!((data["is_revoked"].clone(), data["is_expired"].clone()), (json!(false), json!(false)));
    assert_eq!(data["daily_limit"], Value::Null);
    assert!(uuid_shape(data["key_id"].as_str().unwrap()));
}

fn uuid_shape(s: &str) -> bool {
    s.len() == 36 && s.chars().filter(|c| *c == '-').count() == 4
}

#[test]
fn create_trims_the_name_and_reads_the_numbers() {
    let s = Server::start();
    let a = admin(&s);
    let r = s.post(
        "/api/v1/api-keys",
        &h(&a),
        r#"{"name":"  bot  ","scopes":["config","bot","config"],"expires_in_days":"5","daily_limit":10,"extra":1}"#,
    );
    s.expect(&r, 200);
    let d = &r.json()["data"];
    assert_eq!(d["name"], "bot");
    assert_eq!(d["daily_limit"], 10);
    assert!(d["expires_at"].is_string());
}

#[test]
fn scopes_are_deduplicated_and_complete_with_the_scopes_they_need() {
    let s = Server::start();
    let a = admin(&s);
    for (scopes, expected) in [
        (r#"["config","bot","config"]"#, json!(["config", "bot", "provider"])),
        (
            r#"["chat","chat:admin","config","file","im"]"#,
            json!(["chat", "chat:admin", "config", "file", "im", "bot", "provider"]),
        ),
    ] {
        let r = s.post("/api/v1/api-keys", &h(&a), &format!(r#"{{"scopes":{scopes}}}"#));
        assert_eq!(r.json()["data"]["scopes"], expected, "{scopes}");
    }
}

#[test]
fn empty_or_null_fields_get_their_defaults() {
    let s = Server::start();
    let a = admin(&s);
    let r = s.post("/api/v1/api-keys", &h(&a), r#"{"scopes":["chat"],"name":""}"#);
    assert_eq!(r.json()["data"]["name"], "Untitled API Key");
    let r = s.post("/api/v1/api-keys", &h(&a), r#"{"scopes":null,"expires_in_days":null,"name":null}"#);
    assert_eq!(r.json()["data"]["scopes"], json!(DEFAULT_SCOPES));
}

#[test]
fn every_validation_message() {
    let s = Server::start();
    let a = admin(&s);
    let cases = [
        (r#"{"scopes":["nope","chat","system"]}"#, "Invalid scopes: nope, system"),
        (r#"{"scopes":["*"]}"#, "Invalid scopes: *"),
        (r#"{"scopes":[]}"#, "At least one valid scope is required"),
        (r#"{"scopes":["config:edit_admin"]}"#, "config:edit_admin requires the config scope"),
        (r#"{"scopes":["chat:admin","im"]}"#, "chat:admin requires the chat scope"),
        (r#"{"expires_in_days":0}"#, "expires_in_days must be greater than 0"),
        (r#"{"expires_in_days":-3}"#, "expires_in_days must be greater than 0"),
        (r#"{"expires_in_days":"abc"}"#, "expires_in_days must be an integer"),
        (r#"{"expires_in_days":1.5}"#, "expires_in_days must be an integer"),
        (r#"{"scopes":"chat"}"#, "scopes must be a list of strings"),
        (r#"{"scopes":["chat",1]}"#, "scopes must be a list of strings"),
        (r#"{"name":123}"#, "name must be a string"),
        (r#"{"daily_limit":-1}"#, "daily_limit must be 0 or greater"),
        (r#"{"daily_limit":"x"}"#, "daily_limit must be an integer"),
        (r#"[1,2]"#, "Request body must be a JSON object"),
        (r#"{"name": "#, "Invalid JSON body"),
        ("not json", "Invalid JSON body"),
    ];
    for (body, message) in cases {
        let r = s.post("/api/v1/api-keys", &h(&a), body);
        assert_eq!(r.status, 400, "{body} -> {}", r.text());
        assert_eq!(r.json(), json!({"status": "error", "message": message}), "{body}");
    }
    // Nothing was created by the refused requests.
    let list = s.get("/api/v1/api-keys", &h(&a)).json();
    assert_eq!(list["data"], json!([]));
}

/// Creates keys `first` and `second`, revokes `first`, and returns their ids and the list.
fn list_after_a_revocation(s: &Server) -> (String, String, crate::support::Resp) {
    let a = admin(s);
    let (_, first) = s.create_key(&s.admin_token(), r#"{"name":"first"}"#);
    let (_, second) = s.create_key(&s.admin_token(), r#"{"name":"second"}"#);
    s.expect(&s.post(&format!("/api/v1/api-keys/{first}/revoke"), &h(&a), ""), 200);
    let r = s.get("/api/v1/api-keys", &h(&a));
    s.expect(&r, 200);
    (first, second, r)
}

#[test]
fn the_key_list_is_newest_first() {
    let s = Server::start();
    let (first, second, r) = list_after_a_revocation(&s);
    let items = r.json()["data"].as_array().unwrap().clone();
    assert_eq!(items.len(), 2);
    assert_eq!(items[0]["key_id"], second.as_str());
    assert_eq!(items[1]["key_id"], first.as_str());
}

#[test]
fn a_revoked_key_is_listed_as_revoked() {
    let s = Server::start();
    let (_, _, r) = list_after_a_revocation(&s);
    let revoked = &r.json()["data"][1];
    assert_eq!(revoked["is_revoked"], true);
    assert!(revoked["revoked_at"].is_string());
}

#[test]
fn the_key_list_shows_no_raw_key() {
    let s = Server::start();
    let (_, _, r) = list_after_a_revocation(&s);
    assert!(!r.text().contains("api_key"), "no raw key in a listing");
}

#[test]
fn revoking_twice_is_ok() {
    let s = Server::start();
    let a = admin(&s);
    let (_, id) = s.create_key(&s.admin_token(), "{}");
    for _ in 0..2 {
        let r = s.post(&format!("/api/v1/api-keys/{id}/revoke"), &h(&a), "");
        assert_eq!(r.json(), json!({"status": "ok", "message": null, "data": {}}));
    }
}

#[test]
fn a_deleted_key_is_not_found_afterwards() {
    let s = Server::start();
    let admin = s.admin_token();
    let (_, id) = s.create_key(&admin, "{}");
    let one = format!("/api/v1/api-keys/{id}");
    let r = s.call("DELETE", &one, &admin, None);
    assert_eq!(r.json(), json!({"status": "ok", "message": null, "data": {}}));
    // An id that never existed is refused the same way.
    for (method, path) in [("POST", "/api/v1/api-keys/no-such-key/revoke"), ("DELETE", one.as_str())] {
        s.check_error(method, path, &admin, None, 400, "API key not found");
    }
}

#[test]
fn legacy_dashboard_routes() {
    let s = Server::start();
    let a = admin(&s);
    let r = s.post("/api/apikey/create", &h(&a), r#"{"name":"legacy","scopes":["chat"]}"#);
    s.expect(&r, 200);
    let id = r.json()["data"]["key_id"].as_str().unwrap().to_owned();
    assert!(r.json()["data"]["api_key"].as_str().unwrap().starts_with("abk_"));
    let list = s.get("/api/apikey/list", &h(&a)).json();
    assert_eq!(list["data"][0]["name"], "legacy");
    s.expect_error(&s.post("/api/apikey/revoke", &h(&a), r#"{"key_id":""}"#), 400, "Missing key: key_id");
    s.expect_error(&s.post("/api/apikey/revoke", &h(&a), r#"{}"#), 400, "Missing key: key_id");
    s.expect_error(&s.post("/api/apikey/revoke", &h(&a), r#"{"key_id":"nope"}"#), 400, "API key not found");
    s.expect(&s.post("/api/apikey/revoke", &h(&a), &format!(r#"{{"key_id":"{id}"}}"#)), 200);
    s.expect(&s.post("/api/apikey/delete", &h(&a), &format!(r#"{{"key_id":"{id}"}}"#)), 200);
    s.expect_error(
        &s.post("/api/apikey/delete", &h(&a), &format!(r#"{{"key_id":"{id}"}}"#)),
        400,
        "API key not found",
    );
    s.expect_error(&s.post("/api/apikey/create", &h(&a), r#"{"scopes":["x"]}"#), 400, "Invalid scopes: x");
}

#[test]
fn a_cli_created_key_works_against_the_running_server() {
    let s = Server::start();
    let data = s.data.path().to_owned();
    let (code, out, err) =
        crate::support::cli(&data, &["key", "create", "--name", "cli", "--scopes", "im,chat"], None);
    assert_eq!(code, 0, "{err}");
    let key = out.trim().to_owned();
    assert!(key.starts_with("abk_") && key.len() == 47, "{out}");
    s.expect(&s.get("/api/v1/im/bots", &[("X-API-Key", &key)]), 200);

    let (code, out, _) = crate::support::cli(&data, &["key", "list", "--json"], None);
    assert_eq!(code, 0);
    let list: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(list[0]["scopes"], json!(["im", "chat"]));
    assert!(list[0].get("api_key").is_none());
}

#[test]
fn a_cli_revocation_reaches_the_running_server_within_a_second() {
    let s = Server::start();
    let data = s.data.path().to_owned();
    let (_, out, _) = crate::support::cli(&data, &["key", "create", "--scopes", "im"], None);
    let key = out.trim().to_owned();
    s.expect(&s.get("/api/v1/im/bots", &[("X-API-Key", &key)]), 200);
    let (_, out, _) = crate::support::cli(&data, &["key", "list", "--json"], None);
    let list: Value = serde_json::from_str(&out).unwrap();
    let id = list[0]["key_id"].as_str().unwrap().to_owned();
    let (code, _, err) = crate::support::cli(&data, &["key", "revoke", &id], None);
    assert_eq!(code, 0, "{err}");
    let started = std::time::Instant::now();
    assert!(crate::support::eventually(2, || s.get("/api/v1/im/bots", &[("X-API-Key", &key)]).status == 401));
    assert!(started.elapsed() < std::time::Duration::from_millis(1500), "took {:?}", started.elapsed());
}

#[test]
fn cli_key_create_json_prints_a_working_key() {
    let s = Server::start();
    let data = s.data.path().to_owned();
    let (code, out, _) = crate::support::cli(
        &data,
        &["key", "create", "--name", "j", "--scopes", "im", "--daily-limit", "3", "--json"],
        None,
    );
    assert_eq!(code, 0);
    let created: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(created["daily_limit"], 3);
    s.expect(&s.get("/api/v1/im/bots", &[("X-API-Key", created["api_key"].as_str().unwrap())]), 200);
    let id = created["key_id"].as_str().unwrap();
    assert_eq!(crate::support::cli(&data, &["key", "delete", id], None).0, 0);
}

#[test]
fn cli_key_errors_exit_non_zero_with_the_message() {
    let s = Server::start();
    let data = &s.data;
    let (_, out, _) = crate::support::cli(data.path(), &["key", "create", "--scopes", "im", "--json"], None);
    let created: Value = serde_json::from_str(&out).unwrap();
    let id = created["key_id"].as_str().unwrap();
    assert_eq!(crate::support::cli(data.path(), &["key", "delete", id], None).0, 0);
    for (args, message) in [
        (&["key", "delete", id][..], "API key not found"),
        (&["key", "create", "--scopes", "bogus"], "Invalid scopes: bogus"),
    ] {
        let (code, _, err) = crate::support::cli(data.path(), args, None);
        assert_ne!(code, 0, "{args:?}");
        assert!(err.contains(message), "{err}");
    }
}
