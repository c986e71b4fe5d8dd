//! The bundled documentation: the OpenAPI document matches what is served, the reference
//! page, the guides, the landing page and the health check.

use serde_json::Value;

use crate::support::Server;

#[test]
fn every_documented_operation_is_served_with_its_scope() {
    let s = Server::start();
    let r = s.get("/api/v1/openapi.json", &[]);
    s.expect(&r, 200);
    let doc = r.json();
    assert_eq!(doc["openapi"], "3.1.0");
    let paths = doc["paths"].as_object().unwrap();
    let mut count = 0;
    for (path, item) in paths {
        for (method, op) in item.as_object().unwrap() {
            count += 1;
            assert!(op["x-astrbot-scope"].is_string(), "{method} {path} has no scope");
            // 101 for the WebSocket chat, whose success is the upgrade.
            let success = op["responses"]["200"].is_object() || op["responses"]["101"].is_object();
            assert!(success, "{method} {path} has no success response");
            let concrete = concrete_path(path);
            let r = s.request(&method.to_uppercase(), &concrete, &[], Some(""));
            // An unknown download token is AstrBot's 404 `Not Found` envelope, as documented.
            let token_404 = path == "/api/v1/files/tokens/{file_token}" && r.json()["message"] == "Not Found";
            assert!(
                (r.status != 404 || token_404) && r.status != 405,
                "{method} {path} is documented but answers {}",
                r.status
            );
        }
    }
    assert!(count >= 60, "{count} operations");
    assert_eq!(paths["/api/v1/im/bots"]["get"]["x-astrbot-scope"], "im");
    assert_eq!(paths["/api/v1/api-keys"]["post"]["x-astrbot-scope"], "system");
    let create = &paths["/api/v1/api-keys"]["post"];
    assert_eq!(
        create["requestBody"]["content"]["application/json"]["schema"]["$ref"],
        "#/components/schemas/ApiKeyCreate"
    );
}

/// A documented path with its parameters filled in.
fn concrete_path(path: &str) -> String {
    path.split('/')
        .map(|seg| match seg {
            "{page}" => "quickstart",
            "{file}" => "style.css",
            "{umo}" => "webchat:FriendMessage:x",
            "{config_id}" => "default",
            s if s.starts_with('{') => "x",
            s => s,
        })
        .collect::<Vec<_>>()
        .join("/")
}

#[test]
fn the_api_reference_is_an_html_page() {
    let s = Server::start();
    let r = s.get("/api/v1/docs", &[]);
    s.expect(&r, 200);
    assert!(r.text().contains("/static/reference.js"));
    assert!(r.header("content-type").unwrap().starts_with("text/html"));
    let js = s.get("/static/reference.js", &[]);
    s.expect(&js, 200);
    assert!(js.header("content-type").unwrap().starts_with("text/javascript"));
}

#[test]
fn every_guide_is_written() {
    let s = Server::start();
    for page in [
        "quickstart",
        "keys",
        "quotas",
        "providers",
        "chat",
        "files",
        "knowledge",
        "configuration",
        "systemd",
        "plugins",
    ] {
        let r = s.get(&format!("/docs/{page}"), &[]);
        s.expect(&r, 200);
        assert!(r.text().contains("<h1>"), "{page}");
        assert!(!r.text().contains("being written"), "{page} is a placeholder");
    }
}

#[test]
fn a_guide_outside_the_bundle_is_404() {
    let s = Server::start();
    for path in ["/docs/nope", "/docs/../Cargo.toml"] {
        s.expect(&s.get(path, &[]), 404);
    }
}

#[test]
fn the_reference_loads_nothing_from_the_internet() {
    let s = Server::start();
    let html = s.get("/api/v1/docs", &[]).text();
    assert!(
        !html.contains("http://") && !html.contains("https://"),
        "the reference loads nothing from the internet"
    );
    let js = s.get("/static/reference.js", &[]).text();
    assert!(!js.contains("fetch('http") && !js.contains("fetch(\"http"));
}

#[test]
fn the_landing_page_links_the_quickstart() {
    let s = Server::start();
    let r = s.get("/", &[]);
    s.expect(&r, 200);
    assert!(r.text().contains("/docs/quickstart"));
}

#[test]
fn healthz_reports_the_version_and_uptime() {
    let s = Server::start();
    let h: Value = s.get("/healthz", &[]).json();
    assert_eq!(h["status"], "ok");
    assert!(h["version"].is_string());
    assert!(h["uptime_secs"].is_u64());
}

/// The style guide's repository check: every module opens with a `//!` paragraph.
#[test]
fn every_module_says_what_it_is_for() {
    fn walk(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }
    let mut files = Vec::new();
    walk(&std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src"), &mut files);
    walk(&std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/it"), &mut files);
    assert!(files.len() > 30);
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap();
        assert!(text.starts_with("//!"), "{} does not open with a //! paragraph", f.display());
    }
}

#[test]
fn docs_without_a_page_was_a_bare_text_404() {
    let s = Server::start();
    let r = s.get("/docs", &[]);
    s.expect(&r, 200);
    assert!(r.header("content-type").unwrap().starts_with("text/html"));
    let html = r.text();
    // The guides' list is src/docs.rs's, every one linked.
    for line in include_str!("../../src/docs.rs").lines() {
        if let Some(slug) = line.trim().strip_prefix("(\"").and_then(|l| l.split('"').next()) {
            assert!(html.contains(&format!("<a href=\"/docs/{slug}\">")), "/docs links {slug}");
        }
    }
    assert!(html.contains("<a href=\"/api/v1/docs\">"));
    let missing = s.get("/docs/nope", &[]);
    assert!(missing.text().contains("/docs lists them"), "{}", missing.text());
}

#[test]
fn the_reference_with_a_trailing_slash_was_404() {
    let s = Server::start();
    let plain = s.get("/api/v1/docs", &[]);
    let slash = s.get("/api/v1/docs/", &[]);
    s.expect(&slash, 200);
    assert_eq!(slash.text(), plain.text());
}

#[test]
fn headings_were_indented_by_their_hidden_anchors() {
    let s = Server::start();
    let html = s.get("/docs/keys", &[]).text();
    let h2 = html.lines().find(|l| l.starts_with("<h2 ")).expect("a second-level heading");
    // The heading's text comes first; the anchor, hidden until hovered, follows it.
    let text_start = h2.find('>').unwrap() + 1;
    assert!(!h2[text_start..].starts_with("<a"), "{h2}");
    assert!(h2.ends_with("#</a></h2>"), "{h2}");
    let css = s.get("/static/style.css", &[]).text();
    assert!(css.contains("a.anchor { margin-left"), "the anchor is spaced from the text before it");
}

#[test]
fn the_landing_page_showed_127_0_0_1_6185_when_served_elsewhere() {
    let s = Server::start();
    // The harness sends its own Host; this request sends only the one under test.
    let landing = |host: &str| {
        use std::io::Write;
        let mut conn = std::net::TcpStream::connect(s.addr).unwrap();
        write!(conn, "GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").unwrap();
        let r = crate::support::read_response(&mut std::io::BufReader::new(conn));
        s.expect(&r, 200);
        r.text()
    };
    let html = landing("pi.local:8080");
    assert!(html.contains("http://pi.local:8080/api/v1/chat"), "{html}");
    assert!(!html.contains("127.0.0.1:6185"));
    let html = landing("evil\"><script>x</script>");
    assert!(!html.contains("<script>") && !html.contains("evil"), "a hostile Host is not echoed");
    let html = s.get("/", &[]).text();
    for slug in ["quickstart", "website-chatbots", "systemd"] {
        assert!(html.contains(&format!("<a href=\"/docs/{slug}\">")), "the landing page lists {slug}");
    }
    assert!(html.contains("<a href=\"/docs\">Guides</a>"));
}

#[test]
fn an_admin_only_route_without_a_token_said_missing_api_key() {
    let s = Server::start();
    s.expect_error(
        &s.get("/api/v1/api-keys", &[]),
        401,
        "Missing admin token: this route needs the admin token (POST /api/auth/login)",
    );
    // Scoped routes keep AstrBot's message.
    s.expect_error(&s.get("/api/v1/im/bots", &[]), 401, "Missing API key");
}

#[test]
fn files_content_by_filename_is_served_as_the_guide_says() {
    let guide = include_str!("../../static/docs/files.md");
    assert!(guide.contains("`GET /api/v1/files/content?filename=NAME` is served"));
    let s = Server::start();
    let admin = s.admin_token();
    let (key, _) = s.create_key(&admin, r#"{"name":"f","scopes":["file"]}"#);
    crate::support::upload_file(&s, &key, "notes.txt", Some("text/plain"), b"hello notes");
    let r = s.get("/api/v1/files/content?filename=notes.txt", &[("X-API-Key", &key)]);
    s.expect(&r, 200);
    assert_eq!(r.text(), "hello notes");
}

#[test]
fn the_guides_agree_with_the_code_on_custom_error_message_and_backups() {
    let chat = include_str!("../../static/docs/chat.md");
    let providers = include_str!("../../static/docs/providers.md");
    assert!(!chat.contains("is not used by this version"));
    assert!(chat.contains("`custom_error_message`") && chat.contains("that message is the reply instead"));
    assert!(providers.contains("What users see instead of the error text"));
    let configuration = include_str!("../../static/docs/configuration.md");
    assert!(configuration.contains("cp -a data/attachments backup/"));
}

#[test]
fn a_personas_custom_error_message_replaces_the_llm_error_as_the_guides_say() {
    use crate::fake_llm::{FakeLlm, Script, connect};
    use serde_json::json;
    let s = Server::start();
    let (key, _) = s.create_key(&s.admin_token(), r#"{"name":"all","scopes":["chat","config","persona"]}"#);
    let fake = FakeLlm::start(Script::reply(&["never"]));
    fake.set(|sc| sc.failures = [400, 400].into());
    connect(&s, &key, &fake, "openai_chat_completion", &["sk-test-1"], json!({}));
    let ask = |session: &str| {
        let body = json!({"username": "alice", "session_id": session, "message": "hi"}).to_string();
        let headers = [
            ("X-API-Key", key.as_str()),
            ("Content-Type", "application/json"),
            ("Accept", "application/json"),
        ];
        let r = s.request("POST", "/api/v1/chat", &headers, Some(&body));
        s.expect(&r, 200);
        r.json()["data"]["response"].as_str().unwrap_or_default().to_owned()
    };
    // Without one, the error text.
    assert!(ask("s1").starts_with("LLM 响应错误: Error code: 400"));
    let persona = json!({"persona_id": "tutor", "system_prompt": "Teach.", "custom_error_message": "Sorry, try again."});
    s.expect(&s.call("POST", "/api/v1/personas", &key, Some(persona)), 200);
    let got = s.call("GET", "/api/v1/system-config", &key, None);
    let mut settings = got.json()["data"]["config"]["provider_settings"].clone();
    settings["default_personality"] = json!("tutor");
    s.expect(
        &s.call("PUT", "/api/v1/system-config", &key, Some(json!({"provider_settings": settings}))),
        200,
    );
    assert_eq!(ask("s2"), "Sorry, try again.");
}

#[test]
fn every_chinese_message_astrbot_sends_is_translated_in_a_guide() {
    let guides: String = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/static/docs"))
        .unwrap()
        .map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap())
        .collect();
    let mut found = 0;
    let mut stack = vec![std::path::PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/src"))];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            let source = std::fs::read_to_string(&path).unwrap();
            // Messages sent, not test data nor the OpenAPI document's examples.
            let code = source.split("#[cfg(test)]").next().unwrap();
            if path.ends_with("kb.rs") || path.to_string_lossy().contains("/openapi/") {
                continue;
            }
            for literal in code.split('"').skip(1).step_by(2) {
                if !literal.chars().any(|c| ('\u{4e00}'..='\u{9fff}').contains(&c))
                    || literal.starts_with("//")
                {
                    continue;
                }
                // The fixed part of a format string.
                let fixed = literal.split('{').next().unwrap().trim_end_matches([' ', ':', '[']);
                let line = guides.lines().find(|l| l.contains(fixed));
                assert!(line.is_some(), "{} sends {literal:?}, which no guide mentions", path.display());
                found += 1;
            }
        }
    }
    assert!(found >= 20, "{found} messages");
    // The guides' table of meanings names each one.
    let providers = include_str!("../../static/docs/providers.md");
    let table = &providers[providers.find("### Messages in Chinese").unwrap()..];
    for message in [
        "预设对话数量必须为偶数",
        "不能删除默认配置文件",
        "格式校验未通过",
        "更新成功，已经实时生效~",
        "LLM 响应错误",
    ] {
        assert!(table.contains(message), "{message} is translated");
    }
}
