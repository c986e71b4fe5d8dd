//! Every "try it" example of the interactive reference succeeds as shipped: each operation
//! of the served `/api/v1/openapi.json` is sent with its request body `example` and its
//! parameters' `example`s to a fresh server, with a fresh API key holding exactly the
//! operation's `x-astrbot-scope` (the admin token for `system`, nothing for `none`), and
//! must answer 2xx without `status: error` (nor an `error` event in a chat stream).
//!
//! How ids are found: the examples name the resources a first session makes (the persona
//! `tutor`, the source `example-source` and its provider `example-source/llama3.2`),
//! which this test creates again before every operation (an earlier DELETE example may
//! have removed them). Ids the server generates are written in the examples as
//! placeholders (`KEY_ID`, `FOLDER_ID`, `CONF_ID`, `ATTACHMENT_ID`, `DELIVERY_ID`,
//! `FILE_TOKEN`, and `UPLOAD_ID`: a session of the operation's own key), as a
//! reader of the reference would replace them; before each operation the test makes a
//! new key, folder, config profile and attachment (`notes.txt`, the `filename` example)
//! and substitutes their ids, and `DELIVERY_ID` is a webhook event of a key mirrored to a
//! closed port. The login example's password is the test server's. Upload operations get
//! a file in their multipart field, as the reference's file picker sends it. The MCP
//! server `everything` is stored inactive (no process starts); the two MCP connection
//! tests and the ModelScope sync need a peer this test does not run (an MCP server on
//! 127.0.0.1:8000, ModelScope, here a closed port), so they may also answer AstrBot's 400
//! for a failed connection. The plugin `astrbot_plugin_hello` is uploaded before every
//! operation, and a folder `broken_example` made to fail loading; installing from GitHub
//! and the marketplace need the network (a closed port here), so they may answer their
//! 200-errors.

use serde_json::{Map, Value, json};

use std::sync::Arc;

use crate::support::{ADMIN_PASSWORD, Resp, Server, TempDir, bearer, eventually, http, multipart};

/// The ids generated for one operation, by placeholder.
type Ids = Vec<(&'static str, String)>;

fn substitute(v: &Value, ids: &Ids) -> Value {
    match v {
        Value::String(s) => match ids.iter().find(|(p, _)| p == s) {
            Some((_, id)) => json!(id),
            None if s == "your-admin-password" => json!(ADMIN_PASSWORD),
            None => v.clone(),
        },
        Value::Array(items) => Value::Array(items.iter().map(|i| substitute(i, ids)).collect()),
        Value::Object(m) => Value::Object(m.iter().map(|(k, v)| (k.clone(), substitute(v, ids))).collect()),
        _ => v.clone(),
    }
}

/// `encodeURIComponent`, as the reference writes path and query values.
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z'
            | b'a'..=b'z'
            | b'0'..=b'9'
            | b'-'
            | b'_'
            | b'.'
            | b'!'
            | b'~'
            | b'*'
            | b'\''
            | b'('
            | b')' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn ok_data(s: &Server, r: &Resp, what: &str) -> Value {
    assert!(r.status == 200 && r.json()["status"] == "ok", "{what}: {} {}\n{}", r.status, r.text(), s.log());
    r.json()["data"].clone()
}

/// The fixtures every example may name, made again, and the generated ids.
fn setup(s: &Server, admin: &str, doc: &Value, delivery: &str) -> Ids {
    let example = |path: &str, method: &str| {
        doc["paths"][path][method]["requestBody"]["content"]["application/json"]["example"].clone()
    };
    // Upserts, or refused as existing: either way the resource is there afterwards.
    s.call("POST", "/api/v1/personas", admin, Some(example("/api/v1/personas", "post")));
    s.call("POST", "/api/v1/provider-sources", admin, Some(example("/api/v1/provider-sources", "post")));
    s.call("POST", "/api/v1/providers", admin, Some(example("/api/v1/providers", "post")));
    s.call("POST", "/api/v1/bots", admin, Some(example("/api/v1/bots", "post")));
    s.call("POST", "/api/v1/mcp/servers", admin, Some(example("/api/v1/mcp/servers", "post")));
    let folder = ok_data(
        s,
        &s.call("POST", "/api/v1/persona-folders", admin, Some(json!({"name": "fixture"}))),
        "folder",
    );
    let conf = ok_data(
        s,
        &s.call("POST", "/api/v1/config-profiles", admin, Some(json!({"name": "fixture"}))),
        "profile",
    );
    let (ct, body) = multipart(&[("file", Some("notes.txt"), Some("text/plain"), b"reference example\n")]);
    let r = http(
        s.addr,
        "POST",
        "/api/v1/file",
        &[("Authorization", &bearer(admin)), ("Content-Type", &ct)],
        Some(&body),
    );
    let attachment = ok_data(s, &r, "upload");
    // The skill `csv-report` (refused as existing when it is there).
    let skill = crate::skills::zip_of(&[("csv-report/SKILL.md", crate::skills::SKILL_MD)]);
    let (ct, body) = multipart(&[("file", Some("csv-report.zip"), Some("application/zip"), &skill)]);
    http(
        s.addr,
        "POST",
        "/api/v1/skills",
        &[("Authorization", &bearer(admin)), ("Content-Type", &ct)],
        Some(&body),
    );
    // The plugin `astrbot_plugin_hello` (refused as existing when it is there), and a
    // plugin folder that failed to load.
    let plugin = crate::plugins_api::hello_zip();
    let (ct, body) =
        multipart(&[("file", Some("astrbot_plugin_hello.zip"), Some("application/zip"), &plugin)]);
    http(
        s.addr,
        "POST",
        "/api/v1/plugins/install/upload",
        &[("Authorization", &bearer(admin)), ("Content-Type", &ct)],
        Some(&body),
    );
    std::fs::create_dir_all(s.data.path().join("plugins/broken_example")).unwrap();
    s.call("POST", "/api/v1/plugins/reload", admin, Some(json!({"plugin_id": "broken_example"})));
    let (_, key_id) = s.create_key(admin, r#"{"name":"fixture","scopes":["chat"]}"#);
    vec![
        ("KEY_ID", key_id),
        ("FOLDER_ID", folder["folder"]["folder_id"].as_str().unwrap().to_owned()),
        ("CONF_ID", conf["conf_id"].as_str().unwrap().to_owned()),
        ("ATTACHMENT_ID", attachment["attachment_id"].as_str().unwrap().to_owned()),
        ("DELIVERY_ID", delivery.to_owned()),
        ("FILE_TOKEN", file_token(s, admin, attachment["attachment_id"].as_str().unwrap())),
    ]
}

/// A download token of an attachment.
fn file_token(s: &Server, admin: &str, attachment_id: &str) -> String {
    let r = s.call("POST", &format!("/api/v1/files/{attachment_id}/token"), admin, Some(json!({})));
    ok_data(s, &r, "file token")["token"].as_str().unwrap().to_owned()
}

/// The bytes of the examples' chunked upload (`total_size` 28 in the `init` example).
const CHUNKED: &[u8] = b"a chunked reference example\n";

/// A chunked upload session of the operation's caller (sessions are bound to it), its one
/// chunk sent when the operation needs it whole: `UPLOAD_ID`.
fn upload_session(s: &Server, credential: &str, with_chunk: bool) -> (&'static str, String) {
    let init = json!({"filename": "notes.txt", "total_size": CHUNKED.len(), "content_type": "text/plain"});
    let r = s.call("POST", "/api/v1/files/upload/init", credential, Some(init));
    let id = ok_data(s, &r, "upload init")["upload_id"].as_str().unwrap().to_owned();
    if with_chunk {
        let r = crate::support::upload(
            s,
            credential,
            "/api/v1/files/upload/chunk",
            &[
                ("upload_id", None, None, id.as_bytes()),
                ("chunk_index", None, None, b"0"),
                ("chunk", Some("blob"), None, CHUNKED),
            ],
        );
        ok_data(s, &r, "upload chunk");
    }
    ("UPLOAD_ID", id)
}

/// A webhook event of a key mirrored to a closed port: (key id, delivery id).
fn a_delivery(s: &Server, admin: &str) -> (String, String) {
    let (key, key_id) =
        s.create_key(admin, r#"{"name":"mirrored","scopes":["im"],"webhook_url":"http://127.0.0.1:9/hook"}"#);
    s.call("GET", "/api/v1/im/bots", &key, None);
    let path = format!("/api/v1/api-keys/{key_id}/webhook/deliveries");
    let mut id = None;
    assert!(
        eventually(10, || {
            id = s.call("GET", &path, admin, None).json()["data"]["deliveries"][0]["id"].as_i64();
            id.is_some()
        }),
        "no webhook delivery appeared\n{}",
        s.log()
    );
    (key_id, id.unwrap().to_string())
}

/// The operations in document order, with those that sign the administrator out last:
/// logout (it ends the token it is sent), then a password change when the document has one
/// (it ends every token; its example's current password is the test server's).
fn operations(doc: &Value) -> Vec<(String, String, Value)> {
    let mut ops = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            ops.push((method.to_uppercase(), path.clone(), op.clone()));
        }
    }
    ops.sort_by_key(|(_, path, _)| match path.as_str() {
        "/api/auth/logout" => 1,
        "/api/v1/auth/password" => 2,
        _ => 0,
    });
    ops
}

#[test]
fn every_reference_example_succeeds_with_a_fresh_key_of_its_scope() {
    // ModelScope is a closed loopback port here: the sync example needs the network.
    let modelscope = format!("http://127.0.0.1:{}", closed_port());
    // So are GitHub and the plugin registry: installing from a repository and the market
    // need the network.
    let s = Server::start_with_env(
        Arc::new(TempDir::new()),
        &[],
        &[
            ("ASTRBOT_MODELSCOPE_BASE", &modelscope),
            ("ASTRBOT_GITHUB_BASE", &modelscope),
            ("ASTRBOT_PLUGIN_REGISTRY_URL", &modelscope),
        ],
    );
    let admin = s.admin_token();
    let doc = s.get("/api/v1/openapi.json", &[]).json();
    let (mirrored, delivery) = a_delivery(&s, &admin);
    let mut sent = 0;
    for (method, path, op) in operations(&doc) {
        let mut ids = setup(&s, &admin, &doc, &delivery);
        if path.contains("{delivery_id}") {
            // The delivery is the mirrored key's.
            ids[0].1 = mirrored.clone();
        }
        // A create example runs where its resource does not exist yet, as on a fresh server.
        match (method.as_str(), path.as_str()) {
            ("POST", "/api/v1/personas") => {
                s.call("DELETE", "/api/v1/personas/tutor", &admin, None);
            }
            ("POST", "/api/v1/providers") => {
                s.call("DELETE", "/api/v1/providers/example-source%2Fllama3.2", &admin, None);
            }
            ("POST", "/api/v1/bots") => {
                s.call("DELETE", "/api/v1/bots/qq", &admin, None);
            }
            ("POST", "/api/v1/mcp/servers") => {
                s.call("DELETE", "/api/v1/mcp/servers/everything", &admin, None);
            }
            ("POST", "/api/v1/skills" | "/api/v1/skills/batch") => {
                s.call("DELETE", "/api/v1/skills/csv-report", &admin, None);
            }
            ("POST", "/api/v1/plugins/install/upload") => {
                s.call("DELETE", "/api/v1/plugins/astrbot_plugin_hello", &admin, None);
            }
            _ => {}
        }
        let credential = match op["x-astrbot-scope"].as_str().unwrap() {
            "none" if path == "/api/auth/logout" => Some(s.admin_token()),
            "none" => None,
            "system" => Some(admin.clone()),
            scope => Some(s.create_key(&admin, &json!({"name": "example", "scopes": [scope]}).to_string()).0),
        };
        if path.starts_with("/api/v1/files/upload/") && path != "/api/v1/files/upload/init" {
            let key = credential.as_deref().unwrap();
            ids.push(upload_session(&s, key, path.ends_with("/complete")));
        }
        if path.contains("{run_id}") {
            // A run of this caller: the chat example, sent with the same key.
            let chat = example_body(&doc, "/api/v1/chat");
            let r = s.call("POST", "/api/v1/chat", credential.as_deref().unwrap(), Some(chat));
            let run = r.text().lines().filter_map(|l| l.strip_prefix("data: ")).find_map(|d| {
                let e: Value = serde_json::from_str(d).ok()?;
                e["data"]["run_id"].as_str().map(str::to_owned)
            });
            ids.push(("RUN_ID", run.unwrap_or_else(|| panic!("no run_started: {}", r.text()))));
        }
        let mut url = path.clone();
        let mut query = Vec::new();
        for p in op["parameters"].as_array().into_iter().flatten() {
            let name = p["name"].as_str().unwrap();
            if p.get("example").is_none() && p["required"] != true {
                continue;
            }
            let value = substitute(&p["example"], &ids);
            let value = value.as_str().unwrap_or_else(|| panic!("{method} {path}: no example for {name}"));
            match p["in"].as_str() {
                Some("path") => url = url.replace(&format!("{{{name}}}"), &encode(value)),
                _ => query.push(format!("{name}={}", encode(value))),
            }
        }
        if !query.is_empty() {
            url = format!("{url}?{}", query.join("&"));
        }
        let auth = credential.as_deref().map(bearer);
        let mut headers: Vec<(&str, &str)> =
            auth.as_deref().map(|a| ("Authorization", a)).into_iter().collect();
        let content = &op["requestBody"]["content"];
        let body: Option<Vec<u8>>;
        let upload_type;
        if let Some(media) = content.get("multipart/form-data") {
            assert!(media["schema"].is_object(), "{method} {path}: an upload without a schema");
            let skill = crate::skills::zip_of(&[("csv-report/SKILL.md", crate::skills::SKILL_MD)]);
            let plugin = crate::plugins_api::hello_zip();
            let upload_id = substitute(&json!("UPLOAD_ID"), &ids);
            let (ct, bytes) = if path.starts_with("/api/v1/skills") {
                multipart(&[("file", Some("csv-report.zip"), Some("application/zip"), &skill)])
            } else if path.starts_with("/api/v1/plugins") {
                multipart(&[("file", Some("astrbot_plugin_hello.zip"), Some("application/zip"), &plugin)])
            } else if path == "/api/v1/files/upload/chunk" {
                let id = upload_id.as_str().unwrap().as_bytes();
                multipart(&[
                    ("upload_id", None, None, id),
                    ("chunk_index", None, None, b"0"),
                    ("chunk", Some("blob"), None, CHUNKED),
                ])
            } else {
                multipart(&[(
                    "file",
                    Some("notes.txt"),
                    Some("text/plain"),
                    b"uploaded from the reference\n",
                )])
            };
            upload_type = ct;
            headers.push(("Content-Type", &upload_type));
            body = Some(bytes);
        } else if let Some(media) = content.get("application/json") {
            let example =
                media.get("example").unwrap_or_else(|| panic!("{method} {path}: no request example"));
            body = Some(substitute(example, &ids).to_string().into_bytes());
            headers.push(("Content-Type", "application/json"));
        } else {
            body = None;
        }
        if path == "/api/v1/chat/ws" {
            // A WebSocket: the example is the handshake, answered 101.
            assert_websocket_opens(&s, &url);
            sent += 1;
            continue;
        }
        if path == "/api/v1/logs/live" {
            // A stream that ends only when its client goes: its head is the answer.
            assert_stream_opens(&s, &url, &headers);
            sent += 1;
            continue;
        }
        let r = http(s.addr, &method, &url, &headers, body.as_deref());
        let text = r.text();
        if let Some(prefix) = needs_a_live_peer(&method, &path) {
            // A connection test needs a running MCP server (the guide starts one on
            // 127.0.0.1:8000), a sync needs ModelScope: without them, AstrBot's 400.
            let message = r.json()["message"].as_str().unwrap_or_default().to_owned();
            assert!(
                ((200..300).contains(&r.status)
                    && (r.json()["status"] != "error" || message.starts_with(prefix)))
                    || (r.status == 400 && message.starts_with(prefix)),
                "{method} {url}: {}\n{text}",
                r.status
            );
            sent += 1;
            continue;
        }
        assert!(
            (200..300).contains(&r.status),
            "{method} {url}: {}\n{text}\n--- server log ---\n{}",
            r.status,
            s.log()
        );
        let json_answer = r.header("content-type").is_some_and(|t| t.starts_with("application/json"));
        if json_answer {
            let v: Value = serde_json::from_str(&text).unwrap();
            assert_ne!(v["status"], "error", "{method} {url}: {text}");
        }
        if r.header("content-type").is_some_and(|t| t.starts_with("text/event-stream")) {
            for line in text.lines().filter_map(|l| l.strip_prefix("data: ")) {
                let event: Map<String, Value> = serde_json::from_str(line).unwrap();
                assert_ne!(event.get("type"), Some(&json!("error")), "{method} {url}: {text}");
            }
            assert!(text.contains("\"type\": \"end\""), "{method} {url}: the stream did not end\n{text}");
        }
        sent += 1;
    }
    assert!(sent >= 80, "only {sent} operations in the document");
}

/// The operations whose examples reach a peer this test does not run, and the start of
/// the message they answer without it.
fn needs_a_live_peer(method: &str, path: &str) -> Option<&'static str> {
    match (method, path) {
        ("POST", "/api/v1/mcp/servers/test" | "/api/v1/mcp/servers/{server_name}/test") => {
            Some("Failed to test MCP connection: ")
        }
        ("POST", "/api/v1/mcp/providers/modelscope/sync") => Some("Sync failed: "),
        ("POST", "/api/v1/skills/neo/sync") => Some("Shipyard Neo endpoint or access token not configured"),
        ("POST", "/api/v1/plugins/install/url") => Some("cannot download the plugin: "),
        ("GET", "/api/v1/plugins/market") => Some("获取插件列表失败"),
        _ => None,
    }
}

/// A loopback port nothing listens on (bound, read, released).
fn closed_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// The request body example of POST `path`.
fn example_body(doc: &Value, path: &str) -> Value {
    doc["paths"][path]["post"]["requestBody"]["content"]["application/json"]["example"].clone()
}

/// Sends a WebSocket handshake and checks the answer: 101 with the accept key.
fn assert_websocket_opens(s: &Server, url: &str) {
    use std::io::{BufRead, BufReader, Write};
    let mut c = std::net::TcpStream::connect(s.addr).unwrap();
    c.set_read_timeout(Some(std::time::Duration::from_secs(10))).unwrap();
    let head = format!(
        "GET {url} HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
    );
    c.write_all(head.as_bytes()).unwrap();
    let mut reader = BufReader::new(c);
    let mut lines = Vec::new();
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        if line.trim().is_empty() {
            break;
        }
        lines.push(line.trim().to_owned());
    }
    assert!(lines[0].starts_with("HTTP/1.1 101"), "GET {url}: {lines:?}");
    assert!(
        lines.iter().any(|l| l == "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo="),
        "GET {url}: {lines:?}"
    );
}

/// Opens a stream that never ends by itself and checks its head: 200 and SSE.
fn assert_stream_opens(s: &Server, url: &str, headers: &[(&str, &str)]) {
    use std::io::{BufRead, BufReader, Write};
    let mut c = std::net::TcpStream::connect(s.addr).unwrap();
    c.set_read_timeout(Some(std::time::Duration::from_secs(10))).unwrap();
    let mut head = format!("GET {url} HTTP/1.1\r\nHost: x\r\n");
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    c.write_all(head.as_bytes()).unwrap();
    let mut reader = BufReader::new(c);
    let mut lines = Vec::new();
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        if line.trim().is_empty() {
            break;
        }
        lines.push(line.trim().to_ascii_lowercase());
    }
    assert!(lines[0].starts_with("http/1.1 200"), "GET {url}: {lines:?}");
    assert!(lines.iter().any(|l| l.starts_with("content-type: text/event-stream")), "GET {url}: {lines:?}");
}
