//! Tools end to end: the real server-everything over stdio, registered over the API, called
//! by a model through the chat's tool loop: the sum comes back to the model and the stream
//! carries `tool_call` and `tool_call_result`; `test` lists the tools; a disabled server's
//! tools are not offered; a killed server is started again and its tools come back without
//! restarting astrbot. Needs Node and server-everything (`export $(.ci/mcp-servers)`; CI
//! installs them); without them each test says so and returns.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};

use serde_json::{Value, json};

use crate::support::{Server, eventually};

/// server-everything's entry point, from the environment or the default install.
fn everything() -> Option<String> {
    let candidates = [
        std::env::var("ASTRBOT_TEST_MCP_EVERYTHING").unwrap_or_default(),
        concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/target/mcp-servers/node_modules/@modelcontextprotocol/server-everything/dist/index.js"
        )
        .to_owned(),
    ];
    let found = candidates.into_iter().find(|p| !p.is_empty() && std::path::Path::new(p).is_file());
    if found.is_none() {
        eprintln!("server-everything is not installed (export $(.ci/mcp-servers)); test skipped");
    }
    found
}

/// A model that asks for `get-sum` {a: 2, b: 3} when it is offered and no tool result came
/// back yet, and otherwise answers with the last tool result it saw. Every request body is
/// kept.
struct Model {
    addr: SocketAddr,
    requests: Arc<Mutex<Vec<Value>>>,
}

impl Model {
    fn start() -> Model {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let kept = requests.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let kept = kept.clone();
                std::thread::spawn(move || serve(conn, &kept));
            }
        });
        Model { addr, requests }
    }

    fn requests(&self) -> Vec<Value> {
        self.requests.lock().unwrap().clone()
    }

    /// The tool names the last request offered.
    fn offered(&self) -> Vec<String> {
        let last = self.requests().last().cloned().unwrap_or(Value::Null);
        last["tools"]
            .as_array()
            .map(|t| t.iter().filter_map(|t| t["function"]["name"].as_str().map(str::to_owned)).collect())
            .unwrap_or_default()
    }
}

fn serve(conn: TcpStream, kept: &Mutex<Vec<Value>>) {
    let mut reader = BufReader::new(conn.try_clone().unwrap());
    let mut writer = conn;
    loop {
        let mut len = 0usize;
        let mut line = String::new();
        loop {
            line.clear();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            if line.trim().is_empty() {
                break;
            }
            if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                len = v.trim().parse().unwrap_or(0);
            }
        }
        let mut body = vec![0; len];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        let request: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        kept.lock().unwrap().push(request.clone());
        let messages = request["messages"].as_array().cloned().unwrap_or_default();
        let result = messages.iter().rev().find(|m| m["role"] == "tool").map(|m| m["content"].to_string());
        let offered =
            request["tools"].as_array().is_some_and(|t| t.iter().any(|t| t["function"]["name"] == "get-sum"));
        let message = match (result, offered) {
            (Some(r), _) => json!({"role": "assistant", "content": format!("the tool said {r}")}),
            (None, true) => json!({"role": "assistant", "content": null, "tool_calls": [
                {"id": "call_sum", "type": "function", "function": {"name": "get-sum", "arguments": "{\"a\": 2, \"b\": 3}"}}]}),
            (None, false) => json!({"role": "assistant", "content": "no tools today"}),
        };
        let streaming = request["stream"] == true;
        let out = if streaming {
            let mut delta = message.clone();
            delta.as_object_mut().unwrap().remove("role");
            if let Some(calls) = delta["tool_calls"].as_array_mut() {
                for (i, c) in calls.iter_mut().enumerate() {
                    c["index"] = json!(i);
                }
            }
            let finish = if message["tool_calls"].is_array() { "tool_calls" } else { "stop" };
            let events = [
                json!({"choices": [{"index": 0, "delta": delta}]}).to_string(),
                json!({"choices": [{"index": 0, "delta": {}, "finish_reason": finish}]}).to_string(),
            ];
            let mut body = String::new();
            for e in events.iter().map(|e| format!("data: {e}\n\n")).chain(["data: [DONE]\n\n".to_owned()]) {
                body.push_str(&format!("{:x}\r\n{e}\r\n", e.len()));
            }
            format!(
                "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n{body}0\r\n\r\n"
            )
        } else {
            let finish = if message["tool_calls"].is_array() { "tool_calls" } else { "stop" };
            let body = json!({"choices": [{"index": 0, "message": message, "finish_reason": finish}],
                "usage": {"prompt_tokens": 1, "completion_tokens": 1}})
            .to_string();
            format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            )
        };
        if writer.write_all(out.as_bytes()).is_err() {
            return;
        }
    }
}

/// A server whose provider is `model`, with server-everything registered as `everything`
/// and connected.
fn setup(index: &str, model: &Model) -> (Server, String) {
    let s = Server::start();
    let admin = s.admin_token();
    let source = json!({"id": "fake", "type": "openai_chat_completion", "api_base": format!("http://{}/v1", model.addr), "key": ["k"]});
    s.check("POST", "/api/v1/provider-sources", &admin, Some(source), 200, json!({"status": "ok"}));
    let provider = json!({"id": "fake/m", "provider_source_id": "fake", "model": "m"});
    s.check("POST", "/api/v1/providers", &admin, Some(provider), 200, json!({"status": "ok"}));
    let server = json!({"name": "everything", "command": "node", "args": [index, "stdio"]});
    s.check("POST", "/api/v1/mcp/servers", &admin, Some(server), 200, json!({"status": "ok"}));
    assert!(
        eventually(30, || tools_of(&s, &admin).contains(&"get-sum".to_owned())),
        "server-everything never listed get-sum: {}\n{}",
        s.call("GET", "/api/v1/mcp/servers", &admin, None).text(),
        s.log()
    );
    (s, admin)
}

fn tools_of(s: &Server, admin: &str) -> Vec<String> {
    let listed = s.call("GET", "/api/v1/mcp/servers", admin, None).json();
    listed["data"][0]["tools"]
        .as_array()
        .map(|t| t.iter().filter_map(|n| n.as_str().map(str::to_owned)).collect())
        .unwrap_or_default()
}

/// A streamed chat: its events, parsed.
fn chat(s: &Server, admin: &str, session: &str) -> Vec<Value> {
    let body = json!({"username": "alice", "session_id": session, "message": "what is 2 + 3?"}).to_string();
    let r = s.request("POST", "/api/v1/chat", &[("Authorization", &format!("Bearer {admin}"))], Some(&body));
    s.expect(&r, 200);
    r.text()
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter_map(|d| serde_json::from_str(d).ok())
        .collect()
}

#[test]
fn a_models_get_sum_call_runs_on_server_everything_and_streams_its_events() {
    let Some(index) = everything() else { return };
    let model = Model::start();
    let (s, admin) = setup(&index, &model);
    let events = chat(&s, &admin, "sum");
    let chain = |kind: &str| events.iter().find(|e| e["chain_type"] == kind).cloned();
    let call = chain("tool_call").unwrap_or_else(|| panic!("no tool_call event: {events:?}\n{}", s.log()));
    let result = chain("tool_call_result").unwrap_or_else(|| panic!("no tool_call_result: {events:?}"));
    assert_eq!((call["type"].clone(), call["streaming"].clone()), (json!("plain"), json!(false)));
    let payload: Value = serde_json::from_str(call["data"].as_str().unwrap()).unwrap();
    assert_eq!((payload["id"].clone(), payload["name"].clone()), (json!("call_sum"), json!("get-sum")));
    assert_eq!(payload["args"], json!({"a": 2, "b": 3}));
    let returned: Value = serde_json::from_str(result["data"].as_str().unwrap()).unwrap();
    assert!(returned["result"].as_str().unwrap().contains('5'), "{returned}");
    // The result reached the model, and its answer is the reply.
    let fed_back = model.requests().iter().any(|r| {
        r["messages"]
            .as_array()
            .is_some_and(|m| m.iter().any(|m| m["role"] == "tool" && m["content"].to_string().contains('5')))
    });
    assert!(fed_back, "{:?}", model.requests());
    let complete = events.iter().find(|e| e["type"] == "complete").unwrap_or_else(|| panic!("{events:?}"));
    assert!(complete["data"].as_str().unwrap().starts_with("the tool said"), "{complete}");
}

#[test]
fn test_lists_the_tools_and_a_disabled_servers_tools_are_not_offered() {
    let Some(index) = everything() else { return };
    let model = Model::start();
    let (s, admin) = setup(&index, &model);
    let tested =
        s.check("POST", "/api/v1/mcp/servers/everything/test", &admin, None, 200, json!({"status": "ok"}));
    let names = tested.json()["data"].clone();
    assert!(names.as_array().is_some_and(|n| n.iter().any(|n| n == "get-sum")), "{names}");
    s.check(
        "PATCH",
        "/api/v1/mcp/servers/everything/enabled",
        &admin,
        Some(json!({"enabled": false})),
        200,
        json!({"status": "ok"}),
    );
    let events = chat(&s, &admin, "off");
    assert!(!events.iter().any(|e| e["chain_type"] == "tool_call"), "{events:?}");
    assert!(!model.offered().contains(&"get-sum".to_owned()), "offered: {:?}", model.offered());
}

/// The pids of node processes running `index` whose parent is `parent`.
fn children_running(parent: u32, index: &str) -> Vec<u32> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else { continue };
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let ppid = stat
            .rsplit(')')
            .next()
            .and_then(|r| r.split_whitespace().nth(1))
            .and_then(|p| p.parse::<u32>().ok());
        if ppid == Some(parent) && String::from_utf8_lossy(&cmdline).contains(index) {
            out.push(pid);
        }
    }
    out
}

#[test]
fn a_killed_server_is_started_again_and_its_tools_come_back() {
    let Some(index) = everything() else { return };
    let model = Model::start();
    let (s, admin) = setup(&index, &model);
    let first = children_running(s.pid(), &index);
    assert_eq!(first.len(), 1, "one server-everything child: {first:?}");
    let _ = std::process::Command::new("kill").args(["-9", &first[0].to_string()]).status();
    assert!(
        eventually(30, || {
            let now = children_running(s.pid(), &index);
            now.len() == 1 && now[0] != first[0] && tools_of(&s, &admin).contains(&"get-sum".to_owned())
        }),
        "not restarted: {}\n{}",
        s.call("GET", "/api/v1/mcp/servers", &admin, None).text(),
        s.log()
    );
    let events = chat(&s, &admin, "again");
    assert!(events.iter().any(|e| e["chain_type"] == "tool_call_result"), "{events:?}\n{}", s.log());
}
