//! Plugins end to end, with the guide's two example plugins (`static/docs/plugins.md`,
//! kept as files under `tests/it/plugins/`, which a test holds byte-identical to the
//! guide's code blocks): the Python one zipped, served by a loopback file server and
//! installed from its URL, answering `/roll 20` and the model's `roll_dice` call; its
//! config changed over the API and seen at the next call; the shell one uploaded as a
//! tar.gz; a plugin that never answers killed at its timeout with its children; a hanging
//! and a flooding plugin that hold up no other chat; a disabled plugin's command left to
//! the model. Each plugin is a real process; nothing here sleeps to wait for one.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::fake_llm::{FakeLlm, Script, Step, connect};
use crate::support::{Server, eventually, upload};

/// The example plugins' folders.
const EXAMPLES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/it/plugins");
const GUIDE: &str = include_str!("../../static/docs/plugins.md");
const DICE: &str = "astrbot_plugin_dice";

#[test]
fn the_guides_example_plugins_are_the_files_tested_here() {
    // A paragraph that starts with `folder/file` is followed by that file, whole.
    let mut shown = Vec::new();
    let mut lines = GUIDE.lines();
    while let Some(line) = lines.next() {
        let Some(name) = line.strip_prefix('`').and_then(|l| l.split('`').next()) else { continue };
        let file = Path::new(EXAMPLES).join(name);
        if !name.contains('/') || !file.is_file() {
            continue;
        }
        lines.by_ref().find(|l| l.starts_with("```")).unwrap_or_else(|| panic!("no block after {name}"));
        let mut block = String::new();
        for l in lines.by_ref().take_while(|l| *l != "```") {
            block.push_str(l);
            block.push('\n');
        }
        assert_eq!(block, std::fs::read_to_string(&file).unwrap(), "the guide's {name} is not the file");
        shown.push(name.to_owned());
    }
    for plugin in ["astrbot_plugin_dice", "greet"] {
        for entry in std::fs::read_dir(Path::new(EXAMPLES).join(plugin)).unwrap() {
            let name = format!("{plugin}/{}", entry.unwrap().file_name().to_string_lossy());
            assert!(shown.contains(&name), "the guide does not show {name}");
        }
    }
    assert_eq!(shown.len(), 7, "{shown:?}");
    // The programs are executable, as the archives the tests build keep them.
    use std::os::unix::fs::PermissionsExt;
    for program in ["astrbot_plugin_dice/main.py", "greet/greet.sh"] {
        let mode = std::fs::metadata(Path::new(EXAMPLES).join(program)).unwrap().permissions().mode();
        assert_eq!(mode & 0o111, 0o111, "{program} is not executable");
    }
}

/// A plugin folder's files: (path inside the folder, bytes, unix mode).
type Files = Vec<(String, Vec<u8>, u32)>;

/// The files of an example plugin, with their modes.
fn example(name: &str) -> Files {
    use std::os::unix::fs::PermissionsExt;
    let mut files: Files = std::fs::read_dir(Path::new(EXAMPLES).join(name))
        .unwrap()
        .map(|e| {
            let path = e.unwrap().path();
            let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
            (path.file_name().unwrap().to_string_lossy().into_owned(), std::fs::read(&path).unwrap(), mode)
        })
        .collect();
    files.sort();
    files
}

/// A test plugin: `metadata.yaml` for `name`, `plugin.json` and an executable `program`.
fn fixture(name: &str, manifest: Value, program: &str) -> Files {
    let metadata = format!("name: {name}\ndesc: A test plugin.\nversion: 0.1.0\nauthor: tests\n");
    let command = manifest["exec"]["command"].as_str().unwrap().to_owned();
    vec![
        ("metadata.yaml".into(), metadata.into_bytes(), 0o644),
        ("plugin.json".into(), manifest.to_string().into_bytes(), 0o644),
        (command, program.as_bytes().to_vec(), 0o755),
    ]
}

/// A zip of the files under one top folder `top/`, modes kept, as `zip -r` makes it.
fn zip_folder(top: &str, files: &Files) -> Vec<u8> {
    let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let dir = zip::write::SimpleFileOptions::default().unix_permissions(0o755);
    w.add_directory(format!("{top}/"), dir).unwrap();
    for (name, bytes, mode) in files {
        let opts = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Deflated)
            .unix_permissions(*mode);
        w.start_file(format!("{top}/{name}"), opts).unwrap();
        w.write_all(bytes).unwrap();
    }
    w.finish().unwrap().into_inner()
}

/// A tar.gz of the files under one top folder `top/`, modes kept, as `tar czf` makes it.
fn targz_folder(top: &str, files: &Files) -> Vec<u8> {
    let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    let mut tar = tar::Builder::new(gz);
    for (name, bytes, mode) in files {
        let mut header = tar::Header::new_gnu();
        header.set_size(bytes.len() as u64);
        header.set_mode(*mode);
        header.set_cksum();
        tar.append_data(&mut header, format!("{top}/{name}"), bytes.as_slice()).unwrap();
    }
    tar.into_inner().unwrap().finish().unwrap()
}

/// A server and its admin token.
fn setup() -> (Server, String) {
    let s = Server::start();
    let admin = s.admin_token();
    (s, admin)
}

/// Installs an archive by upload; asserts AstrBot's success.
fn install_upload(s: &Server, admin: &str, file_name: &str, bytes: &[u8], name: &str) {
    let r = upload(s, admin, "/api/v1/plugins/install/upload", &[("file", Some(file_name), None, bytes)]);
    s.expect(&r, 200);
    let body = r.json();
    assert!(
        crate::support::contains(
            &json!({"status": "ok", "message": "安装成功。", "data": {"name": name}}),
            &body
        ),
        "installing {file_name}: {body}\n{}",
        s.log()
    );
}

/// One chat message as `username`, answered as JSON: the reply and how long it took.
fn ask_as(s: &Server, admin: &str, username: &str, session: &str, text: &str) -> (String, Duration) {
    let body = json!({"username": username, "session_id": session, "message": text}).to_string();
    let auth = format!("Bearer {admin}");
    let headers = [
        ("Authorization", auth.as_str()),
        ("Content-Type", "application/json"),
        ("Accept", "application/json"),
    ];
    let started = Instant::now();
    let r = s.request("POST", "/api/v1/chat", &headers, Some(&body));
    let took = started.elapsed();
    s.expect(&r, 200);
    let reply =
        r.json()["data"]["response"].as_str().unwrap_or_else(|| panic!("no reply: {}", r.text())).to_owned();
    (reply, took)
}

fn ask(s: &Server, admin: &str, session: &str, text: &str) -> String {
    ask_as(s, admin, "alice", session, text).0
}

/// The number a dice reply shows for a die of `sides` sides, checked to be on the die.
fn rolled(s: &Server, reply: &str, sides: u32) -> u32 {
    let prefix = format!("🎲 d{sides}: ");
    let n: u32 = reply
        .strip_prefix(&prefix)
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("not a d{sides} roll: {reply:?}\n{}", s.log()));
    assert!((1..=sides).contains(&n), "{reply}");
    n
}

/// A plugin's data folder (its working directory) on the server.
fn data_of(s: &Server, name: &str) -> PathBuf {
    s.data.path().join("plugin_data").join(name)
}

/// A pid a plugin wrote into its data folder.
fn pid_in(s: &Server, name: &str, file: &str) -> Option<u32> {
    std::fs::read_to_string(data_of(s, name).join(file)).ok()?.trim().parse().ok()
}

/// Whether a process exists and is not a zombie (an orphan's zombie waits for init).
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .is_ok_and(|stat| stat.rsplit(')').next().is_some_and(|rest| !rest.trim_start().starts_with('Z')))
}

#[test]
fn the_python_example_installed_from_a_url_answers_its_command_and_the_models_tool_call() {
    let (s, admin) = setup();
    let files = crate::plugins_api::serve();
    files.put("/astrbot_plugin_dice.zip", zip_folder(DICE, &example(DICE)));
    s.check(
        "POST",
        "/api/v1/plugins/install/url",
        &admin,
        Some(json!({"download_url": format!("{}/astrbot_plugin_dice.zip", files.base)})),
        200,
        json!({"status": "ok", "message": "安装成功。", "data": {"name": DICE}}),
    );
    assert!(
        s.data.path().join("plugins").join(DICE).join("main.py").is_file(),
        "the top folder was stripped"
    );
    s.check(
        "GET",
        &format!("/api/v1/plugins?name={DICE}"),
        &admin,
        None,
        200,
        json!({"status": "ok", "data": [{"name": DICE, "activated": true, "display_name": "Dice"}]}),
    );

    // The command, with its parameter, answered by the plugin's process.
    rolled(&s, &ask(&s, &admin, "cmd", "/roll 20"), 20);
    // The alias, and the parameter's absence: the schema's default_sides.
    rolled(&s, &ask(&s, &admin, "cmd", "/dice"), 6);
    // A mistyped parameter never reaches the plugin.
    assert_eq!(ask(&s, &admin, "cmd", "/roll six"), "参数 sides 类型错误。完整参数: (sides(int)=0)");

    // A model that calls roll_dice with a one-sided die, then answers.
    let fake = FakeLlm::start(Script::reply(&["You rolled a one."]));
    fake.set(|sc| sc.steps = [Step::calls("", &[("call_1", "roll_dice", r#"{"sides": 1}"#)])].into());
    connect(&s, &admin, &fake, "openai_chat_completion", &["sk-test"], json!({}));
    assert_eq!(ask(&s, &admin, "tool", "Roll a one-sided die for me"), "You rolled a one.");
    let requests = fake.requests();
    assert_eq!(requests.len(), 2, "a tool call and the answer: {requests:?}");
    let offered: Vec<&str> = requests[0].body["tools"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|t| t["function"]["name"].as_str())
        .collect();
    assert!(offered.contains(&"roll_dice") && offered.contains(&"current_time"), "{offered:?}");
    let tool = requests[0].body["tools"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["function"]["name"] == "roll_dice")
        .unwrap()
        .clone();
    assert_eq!(tool["function"]["parameters"]["properties"]["sides"]["maximum"], 1000, "{tool}");
    let result = requests[1]
        .messages()
        .into_iter()
        .find(|m| m["role"] == "tool")
        .unwrap_or_else(|| panic!("no tool result went back: {:?}", requests[1].body));
    assert_eq!(result["tool_call_id"], "call_1");
    assert_eq!(result["content"], "rolled 1 on a d1", "{result}");

    // The process kept running between the calls: one start, several calls.
    let listed = s.call("GET", &format!("/api/v1/plugins?name={DICE}"), &admin, None).json();
    let runtime = &listed["data"][0]["runtime"];
    assert_eq!(runtime["running"], true, "{listed}");
    assert_eq!(runtime["restarts"], 0, "{listed}");
    assert!(runtime["calls"].as_u64().unwrap() >= 3, "{listed}");
}

#[test]
fn a_new_config_is_seen_by_the_plugin_at_its_next_call() {
    let (s, admin) = setup();
    install_upload(&s, &admin, "dice.zip", &zip_folder(DICE, &example(DICE)), DICE);
    rolled(&s, &ask(&s, &admin, "c", "/roll"), 6);
    let path = format!("/api/v1/plugins/config?plugin_id={DICE}");
    s.check(
        "GET",
        &path,
        &admin,
        None,
        200,
        json!({"status": "ok", "data": {"config": {"default_sides": 6}}}),
    );
    s.check(
        "PUT",
        "/api/v1/plugins/config",
        &admin,
        Some(json!({"plugin_id": DICE, "config": {"default_sides": 1}})),
        200,
        json!({"status": "ok", "message": format!("保存插件 {DICE} 成功~ 机器人正在热重载插件。")}),
    );
    // The running process had the old config; the next call gets a new one.
    assert_eq!(ask(&s, &admin, "c", "/roll"), "🎲 d1: 1");
    s.check(
        "GET",
        &path,
        &admin,
        None,
        200,
        json!({"status": "ok", "data": {"config": {"default_sides": 1}}}),
    );
    let saved: Value = serde_json::from_slice(
        &std::fs::read(s.data.path().join("config").join(format!("{DICE}_config.json"))).unwrap(),
    )
    .unwrap();
    assert_eq!(saved["default_sides"], 1);
    // A value of the wrong type is refused, and the plugin keeps the saved one.
    let r = s.call(
        "PUT",
        "/api/v1/plugins/config",
        &admin,
        Some(json!({"plugin_id": DICE, "config": {"default_sides": "many"}})),
    );
    s.expect(&r, 400);
    assert!(r.json()["message"].as_str().unwrap().starts_with("格式校验未通过"), "{}", r.text());
    assert_eq!(ask(&s, &admin, "c", "/roll"), "🎲 d1: 1");
}

#[test]
fn the_shell_example_uploaded_as_a_tar_gz_answers_with_its_arguments() {
    let (s, admin) = setup();
    install_upload(&s, &admin, "greet.tar.gz", &targz_folder("greet", &example("greet")), "greet");
    let reply = ask(&s, &admin, "g", "/greet  Ada   Lovelace");
    assert!(
        reply.starts_with("Hello, Ada Lovelace! It is ") && reply.ends_with(" UTC here."),
        "{reply}\n{}",
        s.log()
    );
    let reply = ask(&s, &admin, "g", "/hi");
    assert!(reply.starts_with("Hello, stranger! It is "), "{reply}");
    // Admin-only: refused for alice before the script runs; run for the administrator.
    assert_eq!(
        ask(&s, &admin, "g", "/uptime"),
        "您(ID: alice)的权限不足以使用此指令。通过 /sid 获取 ID 并请管理员添加。"
    );
    let (reply, _) = ask_as(&s, &admin, "astrbot", "ops", "/uptime");
    assert!(reply.contains("load average"), "{reply}");
    // One process per call: nothing stays running.
    let listed = s.call("GET", "/api/v1/plugins?name=greet", &admin, None).json();
    assert_eq!(listed["data"][0]["runtime"]["running"], false, "{listed}");
}

/// A long-lived plugin that answers `initialize`, then never answers again: it writes its
/// pid, starts a child (`sleep`) and writes that pid, and appends every notification it
/// gets to `notes`.
const HANG: &str = r#"#!/usr/bin/env python3
import json, os, subprocess, sys
child = subprocess.Popen(["sleep", "600"])
with open("child", "w") as f:
    f.write(str(child.pid))
with open("pid", "w") as f:
    f.write(str(os.getpid()))
for line in sys.stdin:
    message = json.loads(line)
    if message.get("method") == "initialize":
        print(json.dumps({"jsonrpc": "2.0", "id": message["id"], "result": {}}), flush=True)
    elif "id" not in message:
        with open("notes", "a") as f:
            f.write(line)
"#;

fn hang_plugin(timeout_ms: u64) -> Files {
    let manifest =
        json!({"exec": {"command": "hang.py", "timeout_ms": timeout_ms}, "commands": [{"name": "hang"}]});
    fixture("hang", manifest, HANG)
}

#[test]
fn a_plugin_that_never_answers_is_killed_with_its_children_at_its_timeout() {
    let (s, admin) = setup();
    // 3 s: the Python interpreter must start and answer `initialize` within the first
    // call's deadline even on a busy 2-core CI machine.
    install_upload(&s, &admin, "hang.zip", &zip_folder("hang", &hang_plugin(3000)), "hang");
    let (reply, took) = ask_as(&s, &admin, "alice", "h", "/hang");
    assert_eq!(
        reply,
        ":(\n\n在调用插件 hang 的处理函数 hang 时出现异常：no answer within 3.0 s",
        "{}",
        s.log()
    );
    assert!(
        took >= Duration::from_millis(2900) && took < Duration::from_millis(4500),
        "answered after {took:?}"
    );
    let (pid, child) = (pid_in(&s, "hang", "pid").unwrap(), pid_in(&s, "hang", "child").unwrap());
    // Cancelled first, then (no answer within 2 s) killed, its child with it.
    assert!(
        eventually(6, || !alive(pid) && !alive(child)),
        "still running: plugin {} child {}\n{}",
        alive(pid),
        alive(child),
        s.log()
    );
    let notes = std::fs::read_to_string(data_of(&s, "hang").join("notes")).unwrap_or_default();
    let cancelled = notes
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|m| m["method"] == "notifications/cancelled")
        .unwrap_or_else(|| panic!("no cancellation was sent: {notes:?}"));
    assert_eq!(cancelled["params"]["reason"], "timeout", "{cancelled}");
    assert!(cancelled["params"]["requestId"].is_number(), "{cancelled}");
    // The next call starts a fresh process, which hangs the same way.
    assert!(ask(&s, &admin, "h", "/hang").ends_with("no answer within 3.0 s"));
    assert_ne!(pid_in(&s, "hang", "pid").unwrap(), pid, "a new process");
}

/// A plugin that floods stdout with lines that are not JSON and stderr with noise, and
/// never answers.
const FLOOD: &str =
    "#!/bin/sh\necho $$ > pid\nyes 'noise on stderr' >&2 &\nexec yes 'not json, and no end of it'\n";

/// The server's resident memory, in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[test]
fn a_hanging_and_a_flooding_plugin_hold_up_no_other_chat() {
    let (s, admin) = setup();
    install_upload(&s, &admin, "dice.zip", &zip_folder(DICE, &example(DICE)), DICE);
    install_upload(&s, &admin, "hang.zip", &zip_folder("hang", &hang_plugin(6000)), "hang");
    let flood = json!({"exec": {"command": "flood.sh", "timeout_ms": 6000}, "commands": [{"name": "flood"}]});
    install_upload(&s, &admin, "flood.zip", &zip_folder("flood", &fixture("flood", flood, FLOOD)), "flood");
    rolled(&s, &ask(&s, &admin, "warm", "/roll 6"), 6);

    let stuck: Vec<_> = ["hang", "flood"]
        .into_iter()
        .map(|command| {
            let (addr, admin) = (s.addr, admin.clone());
            let (tx, rx) = std::sync::mpsc::channel();
            std::thread::spawn(move || {
                let body =
                    json!({"username": "bob", "session_id": command, "message": format!("/{command}")});
                let auth = format!("Bearer {admin}");
                let headers = [
                    ("Authorization", auth.as_str()),
                    ("Content-Type", "application/json"),
                    ("Accept", "application/json"),
                ];
                let r = crate::support::http(
                    addr,
                    "POST",
                    "/api/v1/chat",
                    &headers,
                    Some(body.to_string().as_bytes()),
                );
                let _ = tx.send(r.json()["data"]["response"].as_str().unwrap_or_default().to_owned());
            });
            rx
        })
        .collect();
    // Both processes run and are being called.
    assert!(
        eventually(10, || pid_in(&s, "hang", "pid").is_some() && pid_in(&s, "flood", "pid").is_some()),
        "{}",
        s.log()
    );
    for session in ["a", "b", "c"] {
        let (reply, took) = ask_as(&s, &admin, "alice", session, "/roll 6");
        rolled(&s, &reply, 6);
        assert!(took < Duration::from_secs(2), "/roll took {took:?} while the others hung");
    }
    for rx in &stuck {
        assert!(rx.try_recv().is_err(), "a stuck call ended before the healthy ones");
    }
    for (rx, name) in stuck.iter().zip(["hang", "flood"]) {
        let reply = rx.recv_timeout(Duration::from_secs(10)).unwrap();
        assert_eq!(
            reply,
            format!(":(\n\n在调用插件 {name} 的处理函数 {name} 时出现异常：no answer within 6.0 s")
        );
    }
    let flooder = pid_in(&s, "flood", "pid").unwrap();
    assert!(eventually(6, || !alive(flooder)), "the flooding plugin still runs\n{}", s.log());
    // Seconds of output at full speed were read and dropped, not kept.
    assert!(rss_kib(s.pid()) < 200 * 1024, "the server holds {} KiB", rss_kib(s.pid()));
}

#[test]
fn a_disabled_plugins_command_goes_to_the_model_and_comes_back_when_enabled() {
    let (s, admin) = setup();
    install_upload(&s, &admin, "dice.zip", &zip_folder(DICE, &example(DICE)), DICE);
    let fake = FakeLlm::start(Script::reply(&["The model answered."]));
    connect(&s, &admin, &fake, "openai_chat_completion", &["sk-test"], json!({}));
    rolled(&s, &ask(&s, &admin, "d", "/roll 20"), 20);
    assert!(fake.requests().is_empty(), "a plugin command never reaches the model");

    let enabled = |on: bool| {
        s.check(
            "PATCH",
            &format!("/api/v1/plugins/{DICE}/enabled"),
            &admin,
            Some(json!({"enabled": on})),
            200,
            json!({"status": "ok"}),
        );
    };
    enabled(false);
    s.check(
        "GET",
        &format!("/api/v1/plugins?name={DICE}"),
        &admin,
        None,
        200,
        json!({"data": [{"activated": false, "runtime": {"running": false}}]}),
    );
    assert_eq!(ask(&s, &admin, "d", "/roll 20"), "The model answered.");
    let last = fake.last();
    let offered: Vec<&str> = last.body["tools"]
        .as_array()
        .map(|t| t.iter().filter_map(|t| t["function"]["name"].as_str()).collect())
        .unwrap_or_default();
    assert!(!offered.contains(&"roll_dice"), "a disabled plugin's tool is offered: {offered:?}");
    assert!(last.messages().last().unwrap()["content"].to_string().contains("/roll 20"), "{:?}", last.body);

    enabled(true);
    rolled(&s, &ask(&s, &admin, "d", "/roll 20"), 20);
    assert_eq!(fake.requests().len(), 1, "the command went to the plugin again");
}
