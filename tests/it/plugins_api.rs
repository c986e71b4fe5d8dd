//! The plugins management API: install from a loopback URL, a GitHub-style archive and an
//! upload; listing, detail with components, config round trip with AstrBot's validation
//! messages, enable/disable, reload, uninstall; hostile archives and traversal ids
//! refused with the data folder unchanged; plugin sources; the marketplace with its cache
//! offline. No test runs a plugin's process.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use serde_json::{Value, json};

use crate::skills::zip_of;
use crate::support::{Resp, Server, TempDir, upload};

pub const HELLO: &str = "astrbot_plugin_hello";

const METADATA: &str = "name: astrbot_plugin_hello\ndesc: Says hello\nversion: v1.0.0\nauthor: someone\nrepo: https://github.com/someone/astrbot_plugin_hello\n";
const MANIFEST: &str = r#"{"exec": {"command": "main.sh", "mode": "oneshot"},
  "commands": [{"name": "hello", "description": "Greet"}, {"name": "add", "group": ["math"], "description": "Add"}],
  "llm_tools": [{"name": "greet", "description": "Greet someone", "inputSchema": {"type": "object"}}]}"#;
const SCHEMA: &str =
    r#"{"greeting": {"type": "string", "default": "Hello"}, "times": {"type": "int", "default": 1}}"#;

/// The example plugin as a zip, its files under `top/` (or at the root when `top` is
/// empty), with `metadata.yaml` written as given.
pub fn plugin_zip(top: &str, metadata: &str) -> Vec<u8> {
    let names = ["metadata.yaml", "plugin.json", "_conf_schema.json", "main.sh", "README.md"];
    let paths: Vec<String> =
        names.iter().map(|n| if top.is_empty() { (*n).to_owned() } else { format!("{top}/{n}") }).collect();
    let bodies: [&[u8]; 5] = [
        metadata.as_bytes(),
        MANIFEST.as_bytes(),
        SCHEMA.as_bytes(),
        b"#!/bin/sh\necho hello\n",
        b"# Hello\n",
    ];
    let entries: Vec<(&str, &[u8])> = paths.iter().map(String::as_str).zip(bodies).collect();
    zip_of(&entries)
}

/// The examples' plugin `astrbot_plugin_hello` (the reference uploads it).
pub fn hello_zip() -> Vec<u8> {
    plugin_zip("astrbot_plugin_hello-main", METADATA)
}

/// Path → (status, body).
type Table = Arc<Mutex<HashMap<String, (u16, Vec<u8>)>>>;

/// A loopback file server: path → (status, body); `up` false answers 503 to everything.
pub(crate) struct Files {
    pub(crate) base: String,
    files: Table,
    up: Arc<AtomicBool>,
}

pub(crate) fn serve() -> Files {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let files: Table = Arc::default();
    let up = Arc::new(AtomicBool::new(true));
    let (table, live) = (files.clone(), up.clone());
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            let mut reader = BufReader::new(conn.try_clone().unwrap());
            let mut line = String::new();
            let _ = reader.read_line(&mut line);
            loop {
                let mut h = String::new();
                if reader.read_line(&mut h).unwrap_or(0) == 0 || h.trim().is_empty() {
                    break;
                }
            }
            let path = line.split_whitespace().nth(1).unwrap_or_default().to_owned();
            let (status, body) = if live.load(Ordering::SeqCst) {
                table.lock().unwrap().get(&path).cloned().unwrap_or((404, b"not found".to_vec()))
            } else {
                (503, b"down".to_vec())
            };
            let _ = write!(
                conn,
                "HTTP/1.1 {status} X\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = conn.write_all(&body);
            let _ = conn.flush();
        }
    });
    Files { base, files, up }
}

impl Files {
    pub(crate) fn put(&self, path: &str, body: Vec<u8>) {
        self.files.lock().unwrap().insert(path.to_owned(), (200, body));
    }
}

fn setup_with_env(env: &[(&str, &str)]) -> (Server, String) {
    let s = Server::start_with_env(Arc::new(TempDir::new()), &[], env);
    let admin = s.admin_token();
    let (key, _) = s.create_key(&admin, r#"{"name":"plugins","scopes":["plugin"]}"#);
    (s, key)
}

fn ok(s: &Server, r: &Resp, message: &str) -> Value {
    s.expect(r, 200);
    let v = r.json();
    assert_eq!(
        (v["status"].as_str(), v["message"].as_str().unwrap_or_default()),
        (Some("ok"), message),
        "{}\n{}",
        r.text(),
        s.log()
    );
    v["data"].clone()
}

/// AstrBot's wrapped failure: 200, `status: error`, `data: {}`.
fn soft(s: &Server, r: &Resp, message: &str) {
    s.expect(r, 200);
    assert_eq!(r.json(), json!({"status": "error", "message": message, "data": {}}), "{}", s.log());
}

fn up_plugin(s: &Server, key: &str, name: &str, bytes: &[u8], ignore: Option<&str>) -> Resp {
    let mut parts = vec![("file", Some(name), Some("application/zip"), bytes)];
    if let Some(v) = ignore {
        parts.push(("ignore_version_check", None, None, v.as_bytes()));
    }
    upload(s, key, "/api/v1/plugins/install/upload", &parts)
}

/// Every path under `dir` with its size, sorted (the database files excluded).
fn files_under(dir: &Path) -> Vec<(String, u64)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            let name = p.strip_prefix(dir).unwrap().display().to_string();
            if name.starts_with("astrbot.db") || name.ends_with(".log") {
                continue;
            }
            let m = std::fs::symlink_metadata(&p).unwrap();
            out.push((name, if m.is_dir() { 0 } else { m.len() }));
            if m.is_dir() {
                stack.push(p);
            }
        }
    }
    out.sort();
    out
}

#[test]
fn a_plugin_is_installed_from_a_url_listed_configured_toggled_reloaded_and_uninstalled() {
    let files = serve();
    files.put("/hello.zip", hello_zip());
    files.put("/someone/astrbot_plugin_hello/archive/refs/heads/dev.zip", hello_zip());
    let (s, key) = setup_with_env(&[("ASTRBOT_GITHUB_BASE", &files.base)]);
    let dir = s.data.path().join("plugins").join(HELLO);

    let r = s.call(
        "POST",
        "/api/v1/plugins/install/url",
        &key,
        Some(json!({"download_url": format!("{}/hello.zip", files.base)})),
    );
    let data = ok(&s, &r, "安装成功。");
    assert_eq!(
        data,
        json!({"repo": "https://github.com/someone/astrbot_plugin_hello", "readme": "# Hello\n", "name": HELLO})
    );
    assert!(dir.join("metadata.yaml").is_file());
    use std::os::unix::fs::PermissionsExt;
    assert_ne!(
        std::fs::metadata(dir.join("main.sh")).unwrap().permissions().mode() & 0o111,
        0,
        "the program is executable"
    );

    let list = ok(&s, &s.call("GET", "/api/v1/plugins", &key, None), "");
    assert_eq!(list.as_array().unwrap().len(), 1);
    let p = &list[0];
    assert_eq!(
        (p["name"].as_str(), p["activated"].as_bool(), p["marketplace_name"].as_str()),
        (Some(HELLO), Some(true), Some("astrbot-plugin-hello"))
    );
    assert_eq!(p["install_source"]["install_method"], "url");
    assert_eq!(p["updates_enabled"], false);
    assert!(p["runtime"].is_object());
    assert_eq!(ok(&s, &s.call("GET", "/api/v1/plugins?name=other", &key, None), ""), json!([]));

    let detail = ok(&s, &s.call("GET", &format!("/api/v1/plugins/{HELLO}"), &key, None), "");
    let components = detail["components"].as_array().unwrap();
    assert_eq!(
        components.iter().map(|c| c["type"].as_str().unwrap()).collect::<Vec<_>>(),
        ["command", "command", "llm_tool"]
    );
    assert_eq!(components[1]["name"], "math");
    assert_eq!(components[1]["subcommands"][0]["name"], "add");
    assert_eq!(components[2]["name"], "greet");
    assert_eq!(
        ok(&s, &s.call("GET", &format!("/api/v1/plugins/by-id?plugin_id={HELLO}"), &key, None), "")["name"],
        HELLO
    );
    soft(&s, &s.call("GET", "/api/v1/plugins/nope", &key, None), "插件不存在");
    let readme = s.call("GET", &format!("/api/v1/plugins/readme?plugin_id={HELLO}"), &key, None);
    assert_eq!(ok(&s, &readme, "成功获取README内容"), json!({"content": "# Hello\n"}));

    // Config: the schema's defaults, AstrBot's validation, a saved round trip.
    let cfg = ok(&s, &s.call("GET", &format!("/api/v1/plugins/config?plugin_id={HELLO}"), &key, None), "");
    assert_eq!(cfg["config"], json!({"greeting": "Hello", "times": 1}));
    assert_eq!(cfg["metadata"][HELLO]["items"]["times"]["type"], "int");
    s.check_error("PUT", "/api/v1/plugins/config", &key, Some(json!({"plugin_id": HELLO, "config": {"greeting": 5, "times": "x"}})), 400,
        "格式校验未通过: ['错误的类型 greeting: 期望是 string, 得到了 int', '错误的类型 times: 期望是 int, 得到了 str']");
    s.check_error(
        "PUT",
        "/api/v1/plugins/config",
        &key,
        Some(json!({"plugin_id": "nope", "config": {}})),
        400,
        "插件 nope 不存在",
    );
    s.check_error(
        "PUT",
        "/api/v1/plugins/config",
        &key,
        Some(json!({"config": {}})),
        400,
        "Missing key: plugin_id",
    );
    s.check_error(
        "GET",
        "/api/v1/plugins/config?plugin_id=",
        &key,
        None,
        400,
        "plugin_id must not be empty (the system config is at /api/v1/system-config)",
    );
    let r = s.call(
        "PUT",
        "/api/v1/plugins/config",
        &key,
        Some(json!({"plugin_id": HELLO, "config": {"times": "3", "stray": 1}})),
    );
    ok(&s, &r, &format!("保存插件 {HELLO} 成功~ 机器人正在热重载插件。"));
    let r = s.call("PUT", &format!("/api/v1/plugins/{HELLO}/config"), &key, Some(json!({"greeting": "Hi"})));
    ok(&s, &r, &format!("保存插件 {HELLO} 成功~ 机器人正在热重载插件。"));
    let saved: Value = serde_json::from_str(
        &std::fs::read_to_string(s.data.path().join(format!("config/{HELLO}_config.json"))).unwrap(),
    )
    .unwrap();
    assert_eq!(saved, json!({"greeting": "Hi", "times": 3}));
    let cfg = ok(&s, &s.call("GET", &format!("/api/v1/plugins/{HELLO}/config/schema"), &key, None), "");
    assert_eq!(cfg["config"], saved);
    let none = ok(&s, &s.call("GET", "/api/v1/plugins/config?plugin_id=nope", &key, None), "");
    assert_eq!((none["metadata"].clone(), none["config"].clone()), (Value::Null, Value::Null));

    // Enable, disable, reload.
    ok(
        &s,
        &s.call(
            "PATCH",
            "/api/v1/plugins/enabled",
            &key,
            Some(json!({"plugin_id": HELLO, "enabled": false})),
        ),
        "停用成功。",
    );
    assert_eq!(ok(&s, &s.call("GET", "/api/v1/plugins", &key, None), "")[0]["activated"], false);
    ok(&s, &s.call("POST", "/api/v1/plugins/reload", &key, Some(json!({"plugin_id": HELLO}))), "重载成功。");
    assert_eq!(
        ok(&s, &s.call("GET", "/api/v1/plugins", &key, None), "")[0]["activated"],
        false,
        "the flag survives a reload"
    );
    ok(
        &s,
        &s.call("PATCH", &format!("/api/v1/plugins/{HELLO}/enabled"), &key, Some(json!({"enabled": "yes"}))),
        "启用成功。",
    );
    assert_eq!(ok(&s, &s.call("GET", "/api/v1/plugins", &key, None), "")[0]["activated"], true);
    soft(&s, &s.call("POST", "/api/v1/plugins/nope/reload", &key, None), "插件重载失败");

    // The same plugin again: refused, nothing changed.
    let r = s.call(
        "POST",
        "/api/v1/plugins/install/url",
        &key,
        Some(json!({"url": format!("{}/hello.zip", files.base)})),
    );
    soft(&s, &r, &format!("安装失败：目录 {HELLO} 已存在。"));

    // Uninstall with its config; then from a GitHub-style repository URL, recorded so.
    let r = s.call("DELETE", &format!("/api/v1/plugins/{HELLO}"), &key, Some(json!({"delete_config": true})));
    ok(&s, &r, "卸载成功");
    assert!(!dir.exists());
    assert!(!s.data.path().join(format!("config/{HELLO}_config.json")).exists());
    assert_eq!(ok(&s, &s.call("GET", "/api/v1/plugins", &key, None), ""), json!([]));
    let names: Vec<String> = std::fs::read_dir(s.data.path().join("plugins"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert!(names.is_empty(), "nothing left in DIR/plugins: {names:?}");
    let r = s.call(
        "POST",
        "/api/v1/plugins/install/url",
        &key,
        Some(json!({"url": "https://github.com/someone/astrbot_plugin_hello/tree/dev"})),
    );
    ok(&s, &r, "安装成功。");
    let p = &ok(&s, &s.call("GET", "/api/v1/plugins", &key, None), "")[0];
    assert_eq!(
        (p["install_source"]["install_method"].as_str(), p["updates_enabled"].as_bool()),
        (Some("github"), Some(true))
    );
    ok(&s, &s.call("DELETE", &format!("/api/v1/plugins/by-id?plugin_id={HELLO}"), &key, None), "卸载成功");
    soft(
        &s,
        &s.call("DELETE", &format!("/api/v1/plugins/by-id?plugin_id={HELLO}"), &key, None),
        "插件不存在。",
    );

    // URLs refused before anything is fetched.
    soft(&s, &s.call("POST", "/api/v1/plugins/install/url", &key, Some(json!({}))), "缺少插件仓库地址");
    soft(&s, &s.call("POST", "/api/v1/plugins/install/url", &key, None), "插件操作失败，请查看服务端日志。");
    soft(
        &s,
        &s.call("POST", "/api/v1/plugins/install/url", &key, Some(json!({"url": "ftp://x/y"}))),
        "请输入有效的 Git 仓库地址。",
    );
    let r = s.call(
        "POST",
        "/api/v1/plugins/install/url",
        &key,
        Some(json!({"download_url": format!("{}/missing.zip", files.base)})),
    );
    assert!(
        r.json()["message"].as_str().unwrap().starts_with("cannot download the plugin: "),
        "{}",
        r.text()
    );
}

#[test]
fn uploads_install_with_the_version_gate_and_hostile_archives_change_nothing() {
    let (s, key) = setup_with_env(&[]);
    let future = format!("{METADATA}astrbot_version: \">=5\"\n");
    let r = up_plugin(&s, &key, "hello.zip", &plugin_zip("", &future), None);
    s.expect(&r, 200);
    assert_eq!(
        r.json(),
        json!({"status": "warning", "message": "当前 AstrBot 版本不满足插件要求",
        "data": {"warning_type": "astrbot_version_unsupported", "can_ignore": true}})
    );
    assert!(!s.data.path().join("plugins").join(HELLO).exists());
    let r = up_plugin(&s, &key, "hello.zip", &plugin_zip("", &future), Some("true"));
    assert_eq!(ok(&s, &r, "安装成功。")["name"], HELLO);
    let p = &ok(&s, &s.call("GET", "/api/v1/plugins", &key, None), "")[0];
    assert_eq!(p["install_source"]["install_method"], "upload");
    let r = upload(&s, &key, "/api/v1/plugins/install/upload", &[("other", Some("x.zip"), None, b"x")]);
    soft(&s, &r, "缺少插件文件");

    // A tar.gz with the files at its root installs too.
    let mut tar =
        tar::Builder::new(flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default()));
    let meta = METADATA.replace("astrbot_plugin_hello", "astrbot_plugin_tar");
    for (name, body) in [("metadata.yaml", meta.as_bytes()), ("README.md", b"tar\n".as_slice())] {
        let mut h = tar::Header::new_gnu();
        h.set_size(body.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        tar.append_data(&mut h, name, body).unwrap();
    }
    let tgz = tar.into_inner().unwrap().finish().unwrap();
    let r = upload(&s, &key, "/api/v1/plugins/install/upload", &[("file", Some("p.tar.gz"), None, &tgz)]);
    assert_eq!(
        ok(&s, &r, "安装成功。"),
        json!({"repo": "https://github.com/someone/astrbot_plugin_tar", "readme": "tar\n", "name": "astrbot_plugin_tar"})
    );
    let p = ok(&s, &s.call("GET", "/api/v1/plugins/astrbot_plugin_tar", &key, None), "");
    assert_eq!(
        (p["runtime"].clone(), p["components"].clone()),
        (Value::Null, json!([])),
        "no plugin.json: listed, never run"
    );

    // A plugin and a sentinel outside DIR/plugins: every hostile archive leaves both.
    std::fs::create_dir_all(s.data.path().join("victim")).unwrap();
    std::fs::write(s.data.path().join("victim/keep.txt"), "keep").unwrap();
    let before = files_under(s.data.path());
    let other = |m: &str| m.replace("astrbot_plugin_hello", "evil");
    let meta = other(METADATA);
    let mut link = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let opts = zip::write::SimpleFileOptions::default();
    link.start_file("metadata.yaml", opts).unwrap();
    link.write_all(meta.as_bytes()).unwrap();
    link.add_symlink("main.sh", "/etc/passwd", opts).unwrap();
    let link = link.finish().unwrap().into_inner();
    let many: Vec<(String, Vec<u8>)> = (0..2001).map(|i| (format!("f{i}.txt"), b"x".to_vec())).collect();
    let mut many_refs: Vec<(&str, &[u8])> = many.iter().map(|(n, b)| (n.as_str(), b.as_slice())).collect();
    many_refs.push(("metadata.yaml", meta.as_bytes()));
    let huge = vec![0u8; 17 << 20];
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "slip",
            zip_of(&[("metadata.yaml", meta.as_bytes()), ("../x", b"x")]),
            "Archive contains invalid relative paths: ../x",
        ),
        (
            "absolute",
            zip_of(&[("metadata.yaml", meta.as_bytes()), ("/tmp/x", b"x")]),
            "Archive contains absolute paths: /tmp/x",
        ),
        ("link", link, "Archive contains a link or special file: main.sh"),
        ("huge", zip_of(&[("metadata.yaml", meta.as_bytes()), ("big.bin", &huge)]), "Archive is too large"),
        ("many", zip_of(&many_refs), "Archive is too large: more than 2000 entries"),
        (
            "no metadata",
            zip_of(&[("evil/README.md", b"x")]),
            "压缩包不是合法的 AstrBot 插件：未找到 metadata.yaml 或 metadata.yml。",
        ),
        (
            "bad plugin.json",
            zip_of(&[
                ("metadata.yaml", meta.as_bytes()),
                ("plugin.json", b"{\"exec\": {\"command\": \"../../bin/sh\"}}"),
            ]),
            "plugin.json: exec.command must be a relative path inside the plugin folder",
        ),
        (
            "bad name",
            zip_of(&[(
                "metadata.yaml",
                METADATA.replace("name: astrbot_plugin_hello", "name: ../x").as_bytes(),
            )]),
            "metadata.yaml 中 name 不是合法的模块名称（应为合法 Python 标识符且非关键字）。",
        ),
        ("not an archive", b"just text".to_vec(), "Uploaded file is not a valid archive."),
    ];
    for (what, bytes, message) in cases {
        let r = up_plugin(&s, &key, "evil.zip", &bytes, None);
        s.expect(&r, 200);
        let v = r.json();
        assert_eq!(
            (v["status"].as_str(), v["data"].clone()),
            (Some("error"), json!({})),
            "{what}: {}",
            r.text()
        );
        assert!(v["message"].as_str().unwrap().starts_with(message), "{what}: {}", r.text());
        assert_eq!(files_under(s.data.path()), before, "{what} changed the data folder");
    }
}

#[test]
fn plugin_ids_that_leave_the_plugins_folder_are_refused_and_touch_nothing() {
    let (s, key) = setup_with_env(&[]);
    ok(&s, &up_plugin(&s, &key, "hello.zip", &hello_zip(), None), "安装成功。");
    std::fs::create_dir_all(s.data.path().join("victim")).unwrap();
    std::fs::write(s.data.path().join("victim/keep.txt"), "keep").unwrap();
    std::fs::create_dir_all(s.data.path().join("config")).unwrap();
    std::fs::write(s.data.path().join("config/victim_config.json"), "{}").unwrap();
    let before = files_under(s.data.path());
    for id in ["..", "%2e%2e", "..%2Fvictim", "a%2Fb", "%2E%2E%2F%2E%2E"] {
        for (method, path, body) in [
            ("GET", format!("/api/v1/plugins/{id}"), None),
            (
                "DELETE",
                format!("/api/v1/plugins/{id}"),
                Some(json!({"delete_config": true, "delete_data": true})),
            ),
            ("GET", format!("/api/v1/plugins/{id}/readme"), None),
            ("POST", format!("/api/v1/plugins/{id}/reload"), None),
            ("PATCH", format!("/api/v1/plugins/{id}/enabled"), Some(json!({"enabled": false}))),
            ("PUT", format!("/api/v1/plugins/{id}/config"), Some(json!({"x": 1}))),
            (
                "DELETE",
                format!("/api/v1/plugins/failed/{id}"),
                Some(json!({"delete_config": true, "delete_data": true})),
            ),
            ("DELETE", format!("/api/v1/plugins/by-id?plugin_id={id}"), Some(json!({"delete_config": true}))),
        ] {
            let r = s.call(method, &path, &key, body);
            assert!(
                r.status == 404 || r.status == 400 || r.json()["status"] == "error",
                "{method} {path}: {} {}",
                r.status,
                r.text()
            );
        }
    }
    for id in ["../victim", "victim", "../../x", "a/b"] {
        for (method, path) in [
            ("POST", "/api/v1/plugins/reload"),
            ("PATCH", "/api/v1/plugins/enabled"),
            ("PUT", "/api/v1/plugins/config"),
        ] {
            let r = s.call(
                method,
                path,
                &key,
                Some(json!({"plugin_id": id, "enabled": false, "config": {"x": 1}})),
            );
            assert!(r.status == 400 || r.json()["status"] == "error", "{method} {path} {id}: {}", r.text());
        }
    }
    assert_eq!(files_under(s.data.path()), before);
    assert_eq!(
        ok(&s, &s.call("GET", "/api/v1/plugins/failed", &key, None), ""),
        json!({}),
        "no failed entry was made"
    );

    // A folder that failed to load is listed and removable by its name only.
    std::fs::create_dir_all(s.data.path().join("plugins/broken-one")).unwrap();
    soft(
        &s,
        &s.call("POST", "/api/v1/plugins/reload", &key, Some(json!({"plugin_id": "broken-one"}))),
        "插件重载失败",
    );
    std::fs::create_dir_all(s.data.path().join("plugins/broken_two")).unwrap();
    soft(
        &s,
        &s.call("POST", "/api/v1/plugins/reload", &key, Some(json!({"plugin_id": "broken_two"}))),
        "插件重载失败",
    );
    let failed = ok(&s, &s.call("GET", "/api/v1/plugins/failed", &key, None), "");
    assert_eq!(failed["broken_two"]["reserved"], false);
    assert!(failed["broken_two"]["error"].as_str().unwrap().contains("metadata.yaml"));
    let listing = s.call("GET", "/api/v1/plugins", &key, None).json();
    assert!(listing["message"].as_str().unwrap().contains("加载插件「broken_two」"));
    ok(&s, &s.call("DELETE", "/api/v1/plugins/failed/broken_two", &key, None), "卸载成功");
    assert!(!s.data.path().join("plugins/broken_two").exists());
    assert!(s.data.path().join("plugins").join(HELLO).is_dir());
    assert!(s.data.path().join("victim/keep.txt").is_file());
}

#[test]
fn plugin_sources_are_stored_as_sent_and_removed_by_id_url_or_name() {
    let (s, key) = setup_with_env(&[]);
    let list =
        |s: &Server| ok(s, &s.call("GET", "/api/v1/plugin-sources", &key, None), "")["sources"].clone();
    assert_eq!(list(&s), json!([]));
    let a = json!({"name": "Mine", "url": "https://m.example/plugins.json"});
    ok(&s, &s.call("POST", "/api/v1/plugin-sources", &key, Some(a.clone())), "保存成功");
    let r = s.call(
        "POST",
        "/api/v1/plugin-sources",
        &key,
        Some(json!({"id": "s2", "url": "https://o.example/x.json", "extra": null})),
    );
    assert_eq!(
        ok(&s, &r, "保存成功")["sources"],
        json!([a, {"id": "s2", "url": "https://o.example/x.json"}])
    );
    ok(&s, &s.call("DELETE", "/api/v1/plugin-sources/s2", &key, None), "保存成功");
    assert_eq!(list(&s), json!([a]));
    let r = s.call(
        "DELETE",
        "/api/v1/plugin-sources/by-id?source_id=https%3A%2F%2Fm.example%2Fplugins.json",
        &key,
        None,
    );
    assert_eq!(ok(&s, &r, "保存成功")["sources"], json!([]));
    ok(
        &s,
        &s.call(
            "PUT",
            "/api/v1/plugin-sources",
            &key,
            Some(json!({"sources": [a, "https://p.example/x.json"]})),
        ),
        "保存成功",
    );
    assert_eq!(list(&s).as_array().unwrap().len(), 2);
    s.check_error(
        "PUT",
        "/api/v1/plugin-sources",
        &key,
        Some(json!({"sources": "x"})),
        400,
        "sources fields must be a list",
    );
    let too_many: Vec<Value> = (0..101).map(|i| json!({"name": i})).collect();
    s.check_error(
        "PUT",
        "/api/v1/plugin-sources",
        &key,
        Some(json!({"sources": too_many})),
        400,
        "at most 100 plugin sources",
    );
    ok(&s, &s.call("PUT", "/api/v1/plugin-sources", &key, Some(json!({}))), "保存成功");
    assert_eq!(list(&s), json!([]));
}

#[test]
fn the_market_is_cached_and_answered_from_the_cache_offline() {
    let files = serve();
    let registry = json!({"$meta": {"schema_version": 1}, "astrbot_plugin_hello": {"author": "someone",
        "repo": "https://github.com/someone/astrbot_plugin_hello", "download_url": format!("{}/hello.zip", files.base), "desc": "d", "version": "v1"}});
    files.put("/market.json", registry.to_string().into_bytes());
    files.put("/default", json!({"x": {"author": "a"}}).to_string().into_bytes());
    files.put("/hello.zip", hello_zip());
    let (s, key) = setup_with_env(&[("ASTRBOT_PLUGIN_REGISTRY_URL", &format!("{}/default", files.base))]);
    let custom = format!("{}/market.json", files.base);
    let path =
        format!("/api/v1/plugins/market?custom_registry={}", custom.replace(':', "%3A").replace('/', "%2F"));
    assert_eq!(
        s.call("GET", &path, &key, None).json(),
        json!({"status": "ok", "message": null, "data": registry})
    );
    assert_eq!(ok(&s, &s.call("GET", "/api/v1/plugins/market", &key, None), "")["x"]["author"], "a");
    assert!(s.data.path().join("plugins.json").is_file());
    let caches: Vec<String> = std::fs::read_dir(s.data.path())
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("plugins_custom_"))
        .collect();
    assert_eq!(caches.len(), 1);
    assert_eq!(
        ok(&s, &s.call("GET", "/api/v1/plugins/market/categories", &key, None), ""),
        json!({"categories": []})
    );

    // A market install takes the entry's download URL.
    let r = s.call("POST", "/api/v1/plugins/install/url", &key, Some(json!({"install_method": "market", "market_plugin_id": "someone/astrbot_plugin_hello", "registry_url": custom})));
    ok(&s, &r, "安装成功。");
    let p = &ok(&s, &s.call("GET", "/api/v1/plugins", &key, None), "")[0];
    assert_eq!(
        (
            p["install_source"]["install_method"].as_str(),
            p["install_source"]["market_plugin_id"].as_str(),
            p["install_source"]["registry_name"].as_str()
        ),
        (Some("market"), Some("someone/astrbot_plugin_hello"), Some("Custom"))
    );
    let r = s.call(
        "POST",
        "/api/v1/plugins/install/url",
        &key,
        Some(json!({"install_method": "market", "market_plugin_id": "no/such", "registry_url": custom})),
    );
    soft(&s, &r, "插件源中未找到该插件，无法安装。");
    soft(
        &s,
        &s.call("POST", "/api/v1/plugins/install/url", &key, Some(json!({"install_method": "market"}))),
        "缺少插件市场标识，无法安装。",
    );

    // Offline: the cache answers with AstrBot's warning; without a cache, the error.
    files.up.store(false, Ordering::SeqCst);
    let r = s.call("GET", &format!("{path}&force_refresh=true"), &key, None);
    assert_eq!(
        r.json(),
        json!({"status": "ok", "message": "使用缓存数据，可能不是最新版本", "data": registry})
    );
    let r = s.call(
        "GET",
        &format!(
            "/api/v1/plugins/market?custom_registry={}%2Fother.json",
            files.base.replace(':', "%3A").replace('/', "%2F")
        ),
        &key,
        None,
    );
    soft(&s, &r, "获取插件列表失败，且没有可用的缓存数据");
}

#[test]
fn config_and_source_writes_refuse_what_no_client_should_send() {
    let (s, key) = setup_with_env(&[]);
    for path in [
        "/api/v1/plugins/config?plugin_id=a%2Fb",
        "/api/v1/plugins/config/schema?plugin_id=0",
        "/api/v1/plugins/A0000000000000000000000000000000000000000000000000000000000000000/config",
    ] {
        let r = s.call("GET", path, &key, None);
        assert_eq!(r.status, 400, "{path}: {}", r.text());
        assert!(r.json()["message"].as_str().unwrap().ends_with("不存在"), "{path}: {}", r.text());
    }
    // A valid name of no plugin: AstrBot's nulls.
    let r = s.call("GET", "/api/v1/plugins/config?plugin_id=nope", &key, None);
    s.expect(&r, 200);
    assert_eq!(r.json()["data"]["config"], Value::Null);
    for method in ["POST", "PUT"] {
        let r = s.call(method, "/api/v1/plugin-sources", &key, None);
        s.expect_error(&r, 400, "Request body must be a JSON object");
    }
    let r = s.call("POST", "/api/v1/plugin-sources", &key, Some(serde_json::json!({"name": "m", "url": {}})));
    s.expect_error(&r, 400, "url must be a string");
    let r = s.call("GET", "/api/v1/plugin-sources", &key, None);
    assert_eq!(r.json()["data"]["sources"], serde_json::json!([]), "nothing stored");
}
