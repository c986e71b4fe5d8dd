//! Daily quotas: 429 with Retry-After, the RateLimit headers, the server
//! default, unlimited keys, refused requests not counting, counts surviving a restart.

use std::sync::Arc;

use crate::support::{Server, TempDir};

const BOTS: &str = "/api/v1/im/bots";

#[test]
fn ratelimit_headers_count_down_the_daily_limit() {
    let s = Server::start();
    let (key, _) = s.create_key(&s.admin_token(), r#"{"scopes":["im"],"daily_limit":2}"#);
    let r = s.get(BOTS, &[("X-API-Key", &key)]);
    s.expect(&r, 200);
    assert_eq!(r.header("RateLimit-Policy"), Some(r#""daily";q=2;w=86400"#));
    let rl = r.header("RateLimit").unwrap().to_owned();
    assert!(rl.starts_with(r#""daily";r=1;t="#), "{rl}");
    let t: i64 = rl.rsplit("t=").next().unwrap().parse().unwrap();
    assert!((1..=86_400).contains(&t));
    let r = s.get(BOTS, &[("X-API-Key", &key)]);
    assert!(r.header("RateLimit").unwrap().starts_with(r#""daily";r=0;"#));
}

#[test]
fn an_exhausted_key_gets_429_with_retry_after() {
    let s = Server::start();
    let (key, _) = s.create_key(&s.admin_token(), r#"{"scopes":["im"],"daily_limit":2}"#);
    for _ in 0..2 {
        s.expect(&s.get(BOTS, &[("X-API-Key", &key)]), 200);
    }
    let r = s.get(BOTS, &[("X-API-Key", &key)]);
    s.expect_error(&r, 429, "Daily request limit exceeded");
    let retry: i64 = r.header("Retry-After").unwrap().parse().unwrap();
    assert!((1..=86_400).contains(&retry));
    assert!(r.header("RateLimit").unwrap().starts_with(r#""daily";r=0;"#));
}

#[test]
fn refused_requests_do_not_count() {
    let s = Server::start();
    let (key, _) = s.create_key(&s.admin_token(), r#"{"scopes":["chat"],"daily_limit":1}"#);
    for _ in 0..3 {
        s.expect(&s.get(BOTS, &[("X-API-Key", &key)]), 403);
    }
    let (key, _) = s.create_key(&s.admin_token(), r#"{"scopes":["im"],"daily_limit":1}"#);
    for _ in 0..3 {
        s.expect(&s.get(BOTS, &[("X-API-Key", &format!("{key}x"))]), 401);
    }
    s.expect(&s.get(BOTS, &[("X-API-Key", &key)]), 200);
    s.expect(&s.get(BOTS, &[("X-API-Key", &key)]), 429);
    s.expect(&s.get(BOTS, &[("X-API-Key", &key)]), 429);
}

#[test]
fn the_server_default_limits_keys_without_their_own() {
    let s = Server::start_with(Arc::new(TempDir::new()), &["--default-daily-limit", "1"]);
    let (default_key, _) = s.create_key(&s.admin_token(), r#"{"scopes":["im"]}"#);
    let r = s.get(BOTS, &[("X-API-Key", &default_key)]);
    assert_eq!(r.header("RateLimit-Policy"), Some(r#""daily";q=1;w=86400"#));
    s.expect(&s.get(BOTS, &[("X-API-Key", &default_key)]), 429);
}

#[test]
fn a_zero_daily_limit_is_unlimited_despite_the_server_default() {
    let s = Server::start_with(Arc::new(TempDir::new()), &["--default-daily-limit", "1"]);
    let (unlimited, _) = s.create_key(&s.admin_token(), r#"{"scopes":["im"],"daily_limit":0}"#);
    for _ in 0..5 {
        let r = s.get(BOTS, &[("X-API-Key", &unlimited)]);
        s.expect(&r, 200);
        assert_eq!(r.header("RateLimit-Policy"), None);
    }
}

#[test]
fn the_admin_token_has_no_quota() {
    let s = Server::start_with(Arc::new(TempDir::new()), &["--default-daily-limit", "1"]);
    let admin = s.admin_token();
    // The admin token is not a key.
    for _ in 0..3 {
        s.expect(&s.get(BOTS, &[("Authorization", &format!("Bearer {admin}"))]), 200);
    }
}

#[test]
fn counts_survive_a_restart() {
    let data = Arc::new(TempDir::new());
    let s = Server::start_with(data.clone(), &[]);
    let (key, _) = s.create_key(&s.admin_token(), r#"{"scopes":["im"],"daily_limit":3}"#);
    s.expect(&s.get(BOTS, &[("X-API-Key", &key)]), 200);
    s.expect(&s.get(BOTS, &[("X-API-Key", &key)]), 200);
    assert!(s.terminate().success());
    let s = Server::start_with(data, &[]);
    let r = s.get(BOTS, &[("X-API-Key", &key)]);
    s.expect(&r, 200);
    assert!(r.header("RateLimit").unwrap().starts_with(r#""daily";r=0;"#), "{:?}", r.header("RateLimit"));
    s.expect(&s.get(BOTS, &[("X-API-Key", &key)]), 429);
}
