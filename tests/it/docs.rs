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
            assert!(op["responses"]["200"].is_object(), "{method} {path} has no success response");
            let concrete = concrete_path(path);
            let r = s.request(&method.to_uppercase(), &concrete, &[], Some(""));
            assert!(
                r.status != 404 && r.status != 405,
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
