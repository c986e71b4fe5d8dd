//! Abuse of the data paths: disk amplification through IM media parts, an
//! administrator's sessions read by a key without `chat:admin`, CPU amplification in the
//! built-in provider, and integer overflow in the sessions paging. (The session deleted
//! while a chat creates it is a unit test in `db`, where a trigger makes the race certain.)

use std::collections::HashSet;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::Server;

fn setup(scopes: &str) -> (Server, String) {
    let s = Server::start();
    let (key, _) = s.create_key(&s.admin_token(), scopes);
    (s, key)
}

/// The files of `DIR/attachments` and the bytes they hold on disk, each inode counted once.
fn attachments_usage(data: &Path) -> (usize, u64) {
    let mut files = 0;
    let mut inodes = HashSet::new();
    let mut bytes = 0;
    for entry in std::fs::read_dir(data.join("attachments")).unwrap() {
        let meta = entry.unwrap().metadata().unwrap();
        files += 1;
        if inodes.insert((meta.dev(), meta.ino())) {
            bytes += meta.len();
        }
    }
    (files, bytes)
}

fn upload(s: &Server, key: &str, bytes: &[u8]) -> String {
    crate::support::upload_file(s, key, "big.bin", Some("application/x-test"), bytes)
}

/// Opens `alice`'s session `s` with a command (no model involved).
fn open_session(s: &Server, key: &str) {
    let body = json!({"username": "alice", "session_id": "s", "message": "/sid"});
    s.expect(&s.call("POST", "/api/v1/chat", key, Some(body)), 200);
}

fn download(s: &Server, key: &str, id: &str) -> Vec<u8> {
    let r = s.call("GET", &format!("/api/v1/files/{id}"), key, None);
    s.expect(&r, 200);
    assert_ne!(r.header("content-type"), Some("application/json"), "{}", r.text());
    r.body
}

fn history(s: &Server, key: &str, session: &str) -> Vec<Value> {
    let r = s.call("GET", &format!("/api/v1/chat/sessions/{session}?username=alice"), key, None);
    s.expect(&r, 200);
    r.json()["data"]["messages"].as_array().unwrap_or_else(|| panic!("{}", r.text())).clone()
}

#[test]
fn im_message_with_too_many_parts_is_refused_and_writes_nothing() {
    let (s, k) = setup(r#"{"scopes":["im","chat","file"]}"#);
    let id = upload(&s, &k, &[7u8; 1024]);
    open_session(&s, &k);
    let before = (attachments_usage(s.data.path()), history(&s, &k, "s").len());
    let parts: Vec<Value> = (0..100).map(|_| json!({"type": "file", "attachment_id": id})).collect();
    let body = json!({"umo": "webchat:FriendMessage:webchat!alice!s", "message": parts});
    let r = s.call("POST", "/api/v1/im/messages", &k, Some(body));
    s.expect_error(&r, 400, "message has too many parts (at most 20)");
    assert_eq!((attachments_usage(s.data.path()), history(&s, &k, "s").len()), before, "nothing written");
    // At the cap, the message goes through.
    let parts: Vec<Value> = (0..20).map(|_| json!({"type": "file", "attachment_id": id})).collect();
    let body = json!({"umo": "webchat:FriendMessage:webchat!alice!s", "message": parts});
    s.expect(&s.call("POST", "/api/v1/im/messages", &k, Some(body)), 200);
}

#[test]
fn im_media_parts_share_the_bytes_instead_of_copying_them() {
    let (s, k) = setup(r#"{"scopes":["im","chat","file"]}"#);
    let original: Vec<u8> = (0..1 << 20).map(|i: u32| (i % 251) as u8).collect();
    let id = upload(&s, &k, &original);
    open_session(&s, &k);
    let (files_before, bytes_before) = attachments_usage(s.data.path());
    let parts: Vec<Value> = (0..10).map(|_| json!({"type": "file", "attachment_id": id})).collect();
    let body = json!({"umo": "webchat:FriendMessage:webchat!alice!s", "message": parts});
    s.expect(&s.call("POST", "/api/v1/im/messages", &k, Some(body)), 200);
    let (files_after, bytes_after) = attachments_usage(s.data.path());
    assert_eq!(files_after, files_before + 10, "each part has an attachment of its own");
    assert!(
        bytes_after - bytes_before < 1 << 20,
        "ten parts naming one 1 MiB file grew the disk by {} bytes",
        bytes_after - bytes_before
    );
    let stored = history(&s, &k, "s").last().unwrap()["content"]["message"].clone();
    let copies: Vec<String> =
        stored.as_array().unwrap().iter().map(|p| p["attachment_id"].as_str().unwrap().to_owned()).collect();
    assert_eq!(copies.len(), 10);
    assert!(!copies.contains(&id));
    // Deleting a copy leaves the original whole, and deleting the original leaves the copies.
    s.expect(&s.call("DELETE", &format!("/api/v1/files/{}", copies[0]), &k, None), 200);
    assert_eq!(download(&s, &k, &id), original);
    s.expect(&s.call("DELETE", &format!("/api/v1/files/{id}"), &k, None), 200);
    let gone = s.call("GET", &format!("/api/v1/files/{id}"), &k, None);
    assert_eq!(gone.json()["message"], "Attachment not found");
    for copy in &copies[1..] {
        assert_eq!(download(&s, &k, copy), original);
    }
}

#[test]
fn admin_usernames_sessions_need_chat_admin_to_read_or_delete() {
    let s = Server::start();
    let admin = s.admin_token();
    let (plain, _) = s.create_key(&admin, r#"{"scopes":["chat"]}"#);
    let (chat_admin, _) = s.create_key(&admin, r#"{"scopes":["chat","chat:admin"]}"#);
    // `astrbot` is in the default admins_id; the admin token may chat as it.
    let r = s.call(
        "POST",
        "/api/v1/chat",
        &admin,
        Some(json!({"username": "astrbot", "session_id": "boss", "message": "/sid"})),
    );
    s.expect(&r, 200);
    let reserved = "username is reserved for an AstrBot administrator";
    for (method, path) in [
        ("GET", "/api/v1/chat/sessions?username=astrbot"),
        ("GET", "/api/v1/chat/sessions?username=%20astrbot%20&page=2"),
        ("GET", "/api/v1/chat/sessions/boss?username=astrbot"),
        ("GET", "/api/v1/chat/sessions/nope?username=astrbot"),
        ("DELETE", "/api/v1/chat/sessions/boss?username=astrbot"),
    ] {
        s.expect_error(&s.call(method, path, &plain, None), 200, reserved);
    }
    // The refused delete deleted nothing; keys with chat:admin and the admin token may.
    for who in [&chat_admin, &admin] {
        let r = s.call("GET", "/api/v1/chat/sessions?username=astrbot", who, None);
        assert_eq!(r.json()["data"]["total"], 1, "{}", r.text());
        let r = s.call("GET", "/api/v1/chat/sessions/boss?username=astrbot", who, None);
        assert_eq!(r.json()["data"]["session"]["creator"], "astrbot", "{}", r.text());
    }
    let r = s.call("DELETE", "/api/v1/chat/sessions/boss?username=astrbot", &chat_admin, None);
    assert_eq!(r.json()["data"]["session_id"], "boss", "{}", r.text());
    // Other usernames stay open to plain chat keys.
    let r = s.call("GET", "/api/v1/chat/sessions?username=alice", &plain, None);
    assert_eq!(r.json()["status"], "ok", "{}", r.text());
}

#[test]
fn huge_message_of_short_cjk_words_answers_quickly() {
    let (s, k) = setup(r#"{"scopes":["chat"]}"#);
    let chars: Vec<char> = ('\u{4e00}'..='\u{4fff}').collect();
    let words: Vec<String> = chars.chunks(2).cycle().take(140_000).map(|w| w.iter().collect()).collect();
    let message = words.join(" ");
    let body = json!({"username": "alice", "message": message}).to_string();
    assert!(body.len() > 950_000 && body.len() < 1 << 20, "{}", body.len());
    let auth = format!("Bearer {k}");
    let started = Instant::now();
    let r = s.request(
        "POST",
        "/api/v1/chat",
        &[("Authorization", &auth), ("Content-Type", "application/json"), ("Accept", "application/json")],
        Some(&body),
    );
    let took = started.elapsed();
    s.expect(&r, 200);
    assert_eq!(r.json()["status"], "ok", "{}", r.text());
    assert!(r.json()["data"]["response"].is_string());
    assert!(took < Duration::from_secs(5), "the built-in provider took {took:?}");
}

#[test]
fn session_pages_beyond_the_integer_range_are_empty_never_page_one() {
    let (s, k) = setup(r#"{"scopes":["chat"]}"#);
    open_session(&s, &k);
    let page = |query: &str| {
        let r = s.call("GET", &format!("/api/v1/chat/sessions?username=alice&{query}"), &k, None);
        s.expect(&r, 200);
        let v = r.json();
        assert_eq!(v["status"], "ok", "{query}: {v}");
        let d = &v["data"];
        (
            d["sessions"].as_array().unwrap().len(),
            d["page"].clone(),
            d["page_size"].clone(),
            d["total"].clone(),
        )
    };
    let max = json!(i64::MAX);
    assert_eq!(page("page=9223372036854775807"), (0, max.clone(), json!(20), json!(1)));
    assert_eq!(page("page=18446744073709551616"), (0, max.clone(), json!(20), json!(1)));
    assert_eq!(page("page=9223372036854775807&page_size=1"), (0, max.clone(), json!(1), json!(1)));
    assert_eq!(
        page("page=4611686018427387904&page_size=2"),
        (0, json!(4611686018427387904i64), json!(2), json!(1))
    );
    assert_eq!(page("page_size=9223372036854775807"), (1, json!(1), json!(100), json!(1)));
    assert_eq!(page("page_size=18446744073709551616"), (1, json!(1), json!(100), json!(1)));
    for low in ["0", "-1", "-9223372036854775808", "-18446744073709551616"] {
        assert_eq!(page(&format!("page={low}")), (1, json!(1), json!(20), json!(1)), "page={low}");
        assert_eq!(page(&format!("page_size={low}")), (1, json!(1), json!(1), json!(1)), "page_size={low}");
    }
    assert!(!s.log().contains("panicked"), "{}", s.log());
}
