//! Every authentication outcome and carrier of reference section 2.

use crate::support::{Server, bearer};

const BOTS: &str = "/api/v1/im/bots";

fn setup() -> (Server, String, String, String) {
    let s = Server::start();
    let admin = s.admin_token();
    let (key, key_id) = s.create_key(&admin, r#"{"name":"im","scopes":["im"]}"#);
    (s, admin, key, key_id)
}

#[test]
fn no_credentials_is_missing_api_key() {
    let s = Server::start();
    s.expect_error(&s.get(BOTS, &[]), 401, "Missing API key");
}

#[test]
fn unknown_or_malformed_keys_are_invalid() {
    let s = Server::start();
    let fake = format!("abk_{}", "A".repeat(43));
    s.expect_error(&s.get(BOTS, &[("X-API-Key", &fake)]), 401, "Invalid API key");
    s.expect_error(&s.get(BOTS, &[("X-API-Key", "hello")]), 401, "Invalid API key");
    s.expect_error(&s.get(BOTS, &[("Authorization", "Bearer nonsense")]), 401, "Invalid API key");
}

#[test]
fn every_carrier_works() {
    let (s, _, key, _) = setup();
    let ok = r#"{"status":"ok","message":null,"data":{"bot_ids":[]}}"#;
    for headers in [
        vec![("Authorization", format!("Bearer {key}"))],
        vec![("Authorization", format!("ApiKey {key}"))],
        vec![("X-API-Key", key.clone())],
        vec![("x-api-key", format!("  {key}  "))],
    ] {
        let h: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
        let r = s.get(BOTS, &h);
        s.expect(&r, 200);
        assert_eq!(r.text(), ok);
        assert_eq!(r.header("content-type"), Some("application/json"));
    }
    s.expect(&s.get(&format!("{BOTS}?api_key={key}"), &[]), 200);
    s.expect(&s.get(&format!("{BOTS}?key={key}"), &[]), 200);
}

#[test]
fn carriers_are_read_in_astrbot_order() {
    let (s, _, key, _) = setup();
    let fake = format!("abk_{}", "B".repeat(43));
    // A bearer header ends the search even when another carrier holds a good key.
    let r = s.get(BOTS, &[("Authorization", &bearer(&fake)), ("X-API-Key", &key)]);
    s.expect_error(&r, 401, "Invalid API key");
    // `ApiKey` comes before the query and the header.
    let r = s.get(&format!("{BOTS}?api_key={fake}"), &[("Authorization", &format!("ApiKey {key}"))]);
    s.expect(&r, 200);
    // The query comes before X-API-Key.
    let r = s.get(&format!("{BOTS}?api_key={fake}"), &[("X-API-Key", &key)]);
    s.expect_error(&r, 401, "Invalid API key");
    // An empty carrier is skipped...
    s.expect(&s.get(&format!("{BOTS}?api_key=&key={key}"), &[]), 200);
    // ...a blank one ends the search with no key.
    s.expect_error(&s.get(&format!("{BOTS}?api_key=%20%20"), &[("X-API-Key", &key)]), 401, "Missing API key");
    // Prefixes are case-sensitive.
    s.expect_error(&s.get(BOTS, &[("Authorization", &format!("bearer {key}"))]), 401, "Missing API key");
    // `ApiKey` with nothing after it falls through to the next carriers.
    s.expect(&s.get(BOTS, &[("Authorization", "ApiKey"), ("X-API-Key", &key)]), 200);
}

#[test]
fn scopes_are_enforced_with_includes() {
    let s = Server::start();
    let admin = s.admin_token();
    let (chat, _) = s.create_key(&admin, r#"{"scopes":["chat"]}"#);
    let (config, _) = s.create_key(&admin, r#"{"scopes":["config"]}"#);
    let (all, _) = s.create_key(&admin, r#"{}"#);
    s.expect_error(&s.get(BOTS, &[("X-API-Key", &chat)]), 403, "Insufficient API key scope");
    s.expect_error(&s.get(BOTS, &[("X-API-Key", &config)]), 403, "Insufficient API key scope");
    s.expect(&s.get(BOTS, &[("X-API-Key", &all)]), 200);
}

#[test]
fn a_revoked_key_stops_at_once() {
    let (s, admin, key, key_id) = setup();
    s.expect(&s.get(BOTS, &[("X-API-Key", &key)]), 200);
    let r = s.post(&format!("/api/v1/api-keys/{key_id}/revoke"), &[("Authorization", &bearer(&admin))], "");
    s.expect(&r, 200);
    s.expect_error(&s.get(BOTS, &[("X-API-Key", &key)]), 401, "Invalid API key");
}

#[test]
fn a_deleted_key_stops_at_once() {
    let (s, admin, _, _) = setup();
    let (key2, id2) = s.create_key(&admin, r#"{"scopes":["im"]}"#);
    s.expect(&s.get(BOTS, &[("X-API-Key", &key2)]), 200);
    let r =
        s.request("DELETE", &format!("/api/v1/api-keys/{id2}"), &[("Authorization", &bearer(&admin))], None);
    s.expect(&r, 200);
    s.expect_error(&s.get(BOTS, &[("X-API-Key", &key2)]), 401, "Invalid API key");
}

fn db(s: &Server) -> rusqlite::Connection {
    rusqlite::Connection::open(s.data.path().join("astrbot.db")).unwrap()
}

#[test]
fn expired_keys_are_invalid_even_when_cached() {
    let (s, _, key, key_id) = setup();
    s.expect(&s.get(BOTS, &[("X-API-Key", &key)]), 200);
    // Age the key behind the server's back, as the clock would.
    db(&s).execute("UPDATE api_keys SET expires_at = 1 WHERE key_id = ?1", [&key_id]).unwrap();
    db(&s).execute("UPDATE meta SET value = value + 1 WHERE name = 'keys_generation'", []).unwrap();
    assert!(crate::support::eventually(3, || s.get(BOTS, &[("X-API-Key", &key)]).status == 401));
    s.expect_error(&s.get(BOTS, &[("X-API-Key", &key)]), 401, "Invalid API key");
}

#[test]
fn the_admin_token_has_every_scope_as_a_bearer() {
    let s = Server::start();
    let admin = s.admin_token();
    s.expect(&s.get(BOTS, &[("Authorization", &bearer(&admin))]), 200);
}

#[test]
fn the_admin_token_is_accepted_in_the_dashboard_cookie() {
    let s = Server::start();
    let admin = s.admin_token();
    s.expect(&s.get(BOTS, &[("Cookie", &format!("astrbot_dashboard_jwt={admin}"))]), 200);
    s.expect_error(&s.get(BOTS, &[("Cookie", "astrbot_dashboard_jwt=abt_nope")]), 401, "Invalid token");
}

#[test]
fn expired_admin_token_says_token_expired() {
    let s = Server::start();
    let admin = s.admin_token();
    db(&s).execute("UPDATE admin_tokens SET expires_at = 1", []).unwrap();
    s.expect_error(&s.get(BOTS, &[("Authorization", &bearer(&admin))]), 401, "Token expired");
    s.expect_error(&s.get("/api/apikey/list", &[("Authorization", &bearer(&admin))]), 401, "Token 过期");
}

#[test]
fn api_keys_never_reach_key_administration() {
    let (s, _, key, key_id) = setup();
    let fake = format!("abk_{}", "C".repeat(43));
    for k in [&key, &fake] {
        s.expect_error(&s.get("/api/v1/api-keys", &[("X-API-Key", k)]), 403, "Insufficient API key scope");
        s.expect_error(
            &s.get("/api/v1/api-keys", &[("Authorization", &bearer(k))]),
            403,
            "Insufficient API key scope",
        );
        let r = s.post("/api/v1/api-keys", &[("X-API-Key", k)], "{}");
        s.expect_error(&r, 403, "Insufficient API key scope");
        let r = s.post(&format!("/api/v1/api-keys/{key_id}/revoke"), &[("X-API-Key", k)], "");
        s.expect_error(&r, 403, "Insufficient API key scope");
    }
    s.expect_error(
        &s.get("/api/v1/api-keys", &[]),
        401,
        "Missing admin token: this route needs the admin token (POST /api/auth/login)",
    );
    // The legacy routes accept only the dashboard token.
    s.expect_error(&s.get("/api/apikey/list", &[("X-API-Key", &key)]), 401, "未授权");
    s.expect_error(&s.get("/api/apikey/list", &[]), 401, "未授权");
    s.expect_error(&s.get("/api/apikey/list", &[("Authorization", &bearer(&key))]), 401, "Token 无效");
}

#[test]
fn last_used_at_is_written_in_batches() {
    let (s, admin, key, key_id) = setup();
    s.expect(&s.get(BOTS, &[("X-API-Key", &key)]), 200);
    let seen = crate::support::eventually(5, || {
        let list = s.get("/api/v1/api-keys", &[("Authorization", &bearer(&admin))]).json();
        list["data"]
            .as_array()
            .unwrap()
            .iter()
            .any(|k| k["key_id"] == key_id.as_str() && k["last_used_at"].is_string())
    });
    assert!(seen, "last_used_at never written\n{}", s.log());
}
