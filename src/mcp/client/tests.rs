//! The client against real MCP servers: the reference "everything" server (Node) over
//! stdio, Streamable HTTP and legacy SSE, a FastMCP server (Python `mcp` 1.x, the script in
//! tests/it/mcp/) over the same three, and misbehaving children made with `sh`.
//!
//! The servers are installed by `.ci/mcp-servers` and found through ASTRBOT_TEST_MCP_EVERYTHING
//! and ASTRBOT_TEST_MCP_PYTHON, or at that script's default paths under target/; a test whose
//! server is missing says so and returns. (They live here rather than in tests/it because the
//! client's API is not reachable from the binary.)

use std::net::{TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio as Pipe};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::Client;

const CONNECT: Duration = Duration::from_secs(30);
const CALL: Duration = Duration::from_secs(20);

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn fixture(name: &str) -> String {
    root().join("tests/it/mcp").join(name).to_string_lossy().into_owned()
}

/// server-everything's dist/index.js, or None (with the reason printed).
fn everything() -> Option<String> {
    let path =
        std::env::var("ASTRBOT_TEST_MCP_EVERYTHING").ok().filter(|p| !p.is_empty()).unwrap_or_else(|| {
            root()
                .join("target/mcp-servers/node_modules/@modelcontextprotocol/server-everything/dist/index.js")
                .to_string_lossy()
                .into_owned()
        });
    let node = Command::new("node").arg("--version").stdout(Pipe::null()).status().is_ok_and(|s| s.success());
    if !node || !Path::new(&path).is_file() {
        eprintln!("skipped: server-everything or node is missing ({path}); run .ci/mcp-servers");
        return None;
    }
    Some(path)
}

/// A python that can import `mcp`, or None (with the reason printed).
fn python() -> Option<String> {
    let path = std::env::var("ASTRBOT_TEST_MCP_PYTHON")
        .ok()
        .filter(|p| !p.is_empty())
        .unwrap_or_else(|| root().join("target/mcp-venv/bin/python").to_string_lossy().into_owned());
    let ok = Command::new(&path)
        .args(["-c", "import mcp.server.fastmcp"])
        .stderr(Pipe::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        eprintln!("skipped: no python with the mcp package ({path}); run .ci/mcp-servers");
        return None;
    }
    Some(path)
}

use crate::plugins::runtime::child::testing::{running, wait_for};

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("a free port")
}

/// An HTTP server for one test, in its own process group, killed when dropped.
struct HttpServer {
    child: Child,
    port: u16,
}

impl HttpServer {
    fn start(mut cmd: Command, port: u16) -> HttpServer {
        cmd.stdin(Pipe::null()).stdout(Pipe::null()).stderr(Pipe::null()).process_group(0);
        let child = cmd.spawn().expect("the test server starts");
        let server = HttpServer { child, port };
        let up = wait_for(Duration::from_secs(30), || TcpStream::connect(("127.0.0.1", port)).is_ok());
        assert!(up, "the test server did not listen on {port}");
        server
    }

    fn everything(index: &str, mode: &str) -> HttpServer {
        let port = free_port();
        let mut cmd = Command::new("node");
        cmd.args(["--require", &fixture("loopback-preload.cjs"), index, mode]).env("PORT", port.to_string());
        HttpServer::start(cmd, port)
    }

    fn fastmcp(python: &str, mode: &str) -> HttpServer {
        let port = free_port();
        let mut cmd = Command::new(python);
        cmd.args([&fixture("fastmcp_server.py"), mode, &port.to_string()]);
        HttpServer::start(cmd, port)
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    fn stop(&mut self) {
        // SAFETY: signals our own child's process group.
        unsafe {
            libc::killpg(self.child.id() as libc::pid_t, libc::SIGKILL);
        }
        let _ = self.child.wait();
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        self.stop();
    }
}

fn names(client: &Client) -> Vec<String> {
    client.tools().into_iter().map(|t| t.mcp_name).collect()
}

fn stdio_everything(index: &str) -> Client {
    Client::connect(
        "everything",
        &json!({"command": "node", "args": [index, "stdio"], "active": true}),
        CONNECT,
    )
    .expect("server-everything connects over stdio")
}

#[test]
fn stdio_everything_lists_calls_and_closes() {
    let Some(index) = everything() else { return };
    let client = stdio_everything(&index);
    let tools = names(&client);
    assert!(tools.len() >= 10 && tools.contains(&"get-sum".to_owned()), "{tools:?}");
    let sum = client.call("get-sum", &json!({"a": 2, "b": 3}), CALL).unwrap();
    assert!(sum.text.contains('5') && !sum.is_error, "{sum:?}");
    let wrong = client.call("get-sum", &json!({"a": "x"}), CALL);
    assert!(matches!(&wrong, Ok(r) if r.is_error) || wrong.is_err(), "{wrong:?}");
    let image = client.call("get-tiny-image", &json!({}), CALL).unwrap();
    assert!(image.text.contains("[image: image/png, "), "{image:?}");
    assert!(client.alive());
    let pid = client.session.link.pid().unwrap();
    assert!(running(pid));
    let started = Instant::now();
    client.close();
    assert!(started.elapsed() < Duration::from_secs(3), "it exits on stdin's end");
    assert!(!running(pid), "the child is gone and reaped");
    assert!(!client.alive());
    let after = client.call("get-sum", &json!({"a": 1, "b": 1}), CALL).unwrap_err();
    assert!(after.contains("closed"), "{after}");
}

#[test]
fn stdio_environment_is_cleared_but_for_path_home_and_the_config() {
    let Some(index) = everything() else { return };
    let config =
        json!({"command": "node", "args": [index, "stdio"], "env": {"ASTRBOT_MCP_PROBE": "probe-value"}});
    let client = Client::connect("env", &config, CONNECT).unwrap();
    let env = client.call("get-env", &json!({}), CALL).unwrap().text;
    assert!(env.contains("ASTRBOT_MCP_PROBE") && env.contains("probe-value"), "{env}");
    assert!(env.contains("PATH"), "{env}");
    // cargo sets this in the test's environment: the child must not inherit it.
    assert!(!env.contains("CARGO_MANIFEST_DIR"), "{env}");
}

#[test]
fn a_killed_child_fails_the_waiting_call_at_once() {
    let Some(index) = everything() else { return };
    let client = Arc::new(stdio_everything(&index));
    let pid = client.session.link.pid().unwrap();
    let caller = Arc::clone(&client);
    let call = thread::spawn(move || {
        let started = Instant::now();
        let r = caller.call(
            "trigger-long-running-operation",
            &json!({"duration": 30, "steps": 3}),
            Duration::from_secs(60),
        );
        (r, started.elapsed())
    });
    assert!(wait_for(Duration::from_secs(10), || client.session.core.in_flight() == 1));
    // SAFETY: kills our own child.
    unsafe {
        libc::kill(pid as libc::pid_t, libc::SIGKILL);
    }
    let (result, took) = call.join().unwrap();
    let err = result.unwrap_err();
    assert!(took < Duration::from_secs(10), "failed after {took:?}: {err}");
    assert!(err.contains("exited") || err.contains("closed"), "{err}");
    assert!(wait_for(Duration::from_secs(5), || !client.alive()));
    client.close();
    assert!(!running(pid));
}

#[test]
fn python_stdio_times_out_cancels_and_goes_on() {
    let Some(python) = python() else { return };
    let config = json!({"command": python, "args": [fixture("fastmcp_server.py"), "stdio"], "cwd": "/"});
    let client = Client::connect("py", &config, CONNECT).unwrap();
    let tools = client.tools();
    let dotted = tools.iter().find(|t| t.mcp_name == "dotted.name").expect("dotted.name is listed");
    assert_eq!(dotted.name, "dotted_name");
    assert_eq!(client.call("add", &json!({"a": 2, "b": 40}), CALL).unwrap().text, "42");
    let started = Instant::now();
    let err = client.call("slow", &json!({"seconds": 5}), Duration::from_secs(1)).unwrap_err();
    assert_eq!(err, "tool call timed out after 1 s");
    assert!(started.elapsed() < Duration::from_secs(2), "{:?}", started.elapsed());
    // The session goes on after the cancellation.
    assert_eq!(client.call("add", &json!({"a": 1, "b": 2}), CALL).unwrap().text, "3");
    let fail = client.call("fail", &json!({}), CALL).unwrap();
    assert!(fail.is_error && fail.text.contains("kaput"), "{fail:?}");
    assert_eq!(client.call("dotted.name", &Value::Null, CALL).unwrap().text, "dotted ok");
    assert!(wait_for(Duration::from_secs(5), || client
        .errlogs()
        .iter()
        .any(|l| l.contains("WARNING: dotted"))));
}

#[test]
fn streamable_http_everything() {
    let Some(index) = everything() else { return };
    let mut server = HttpServer::everything(&index, "streamableHttp");
    let config =
        json!({"url": server.url("/mcp"), "transport": "streamable_http", "headers": {"X-Test": "1"}});
    let client = Client::connect("eh", &config, CONNECT).unwrap();
    assert!(names(&client).contains(&"get-sum".to_owned()));
    assert!(wait_for(Duration::from_secs(5), || threads_of("eh") == 1), "the standalone stream is held");
    let sum = client.call("get-sum", &json!({"a": 7, "b": 8}), CALL).unwrap();
    assert!(sum.text.contains("15"), "{sum:?}");
    assert!(client.alive());
    // A new server on the same port knows nothing of the session: it is gone.
    let port = server.port;
    server.stop();
    let mut cmd = Command::new("node");
    cmd.args(["--require", &fixture("loopback-preload.cjs"), &index, "streamableHttp"])
        .env("PORT", port.to_string());
    let _again = HttpServer::start(cmd, port);
    let err = client.call("get-sum", &json!({"a": 1, "b": 1}), CALL).unwrap_err();
    assert!(err.contains("ended the session"), "{err}");
    assert!(!client.alive());
    assert!(wait_for(Duration::from_secs(5), || threads_of("eh") == 0), "the stream ended with its server");
}

#[test]
fn streamable_http_python_with_a_timeout() {
    let Some(python) = python() else { return };
    let server = HttpServer::fastmcp(&python, "streamable-http");
    let config = json!({"url": server.url("/mcp"), "transport": "streamable_http"});
    let client = Client::connect("ph", &config, CONNECT).unwrap();
    assert!(wait_for(Duration::from_secs(5), || threads_of("ph") == 1), "the standalone stream is held");
    assert_eq!(client.call("add", &json!({"a": 1, "b": 2}), CALL).unwrap().text, "3");
    let started = Instant::now();
    let err = client.call("slow", &json!({"seconds": 5}), Duration::from_secs(1)).unwrap_err();
    assert_eq!(err, "tool call timed out after 1 s");
    assert!(started.elapsed() < Duration::from_secs(3), "{:?}", started.elapsed());
    assert_eq!(client.call("add", &json!({"a": 2, "b": 2}), CALL).unwrap().text, "4");
    client.close();
    assert!(!client.alive());
    assert!(wait_for(Duration::from_secs(5), || threads_of("ph") == 0), "DELETE ends the standalone stream");
}

#[test]
fn legacy_sse_python_and_everything() {
    if let Some(python) = python() {
        let server = HttpServer::fastmcp(&python, "sse");
        let client =
            Client::connect("py-sse", &json!({"url": server.url("/sse"), "transport": "sse"}), CONNECT)
                .unwrap();
        assert_eq!(client.call("add", &json!({"a": 5, "b": 6}), CALL).unwrap().text, "11");
        assert!(client.alive());
        client.close();
        assert!(!client.alive());
    }
    if let Some(index) = everything() {
        let server = HttpServer::everything(&index, "sse");
        let client = Client::connect("everything-sse", &json!({"url": server.url("/sse")}), CONNECT).unwrap();
        let sum = client.call("get-sum", &json!({"a": 2, "b": 3}), CALL).unwrap();
        assert!(sum.text.contains('5'), "{sum:?}");
    }
}

/// A stdio "server" written in sh.
fn sh(script: &str) -> Value {
    json!({"command": "sh", "args": ["-c", script]})
}

#[test]
fn a_server_that_never_answers_times_out_and_is_stopped() {
    let dir = std::env::temp_dir().join(format!("astrbot-mcp-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let pidfile = dir.join("pid");
    // It ignores stdin's end and SIGTERM, so only SIGKILL stops it.
    let script = format!("trap '' TERM; echo $$ > {}; exec sleep 60", pidfile.display());
    let started = Instant::now();
    let err = match Client::connect("mute", &sh(&script), Duration::from_secs(1)) {
        Err(e) => e,
        Ok(_) => panic!("a mute server connected"),
    };
    assert!(err.contains("no answer to initialize within 1 s"), "{err}");
    // 1 s of timeout, then 2 s after stdin's end and 2 s after SIGTERM.
    assert!(started.elapsed() < Duration::from_secs(7), "{:?}", started.elapsed());
    let pid: u32 = std::fs::read_to_string(&pidfile).unwrap().trim().parse().unwrap();
    assert!(!running(pid), "the server is still running");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn servers_that_exit_print_garbage_or_huge_lines_fail_fast() {
    let quick = Duration::from_secs(20);
    let started = Instant::now();
    let err = Client::connect("gone", &sh("exit 0"), quick).err().unwrap();
    assert!(err.contains("initialize failed") && started.elapsed() < Duration::from_secs(5), "{err}");

    let started = Instant::now();
    let err = Client::connect("noise", &sh("read l; echo 'not json'; echo '{\"half'; exit 1"), quick)
        .err()
        .unwrap();
    assert!(err.contains("closed its output") && started.elapsed() < Duration::from_secs(5), "{err}");

    let huge = "read l; head -c 17000000 /dev/zero | tr '\\0' x; echo";
    let err = Client::connect("huge", &sh(huge), quick).err().unwrap();
    assert!(err.contains("a line over 16 MiB"), "{err}");

    let err = Client::connect("missing", &json!({"command": "/no/such/mcp-server"}), quick).err().unwrap();
    assert!(err.starts_with("MCP server missing: cannot start"), "{err}");
}

#[test]
fn an_unknown_protocol_version_is_refused() {
    let script = r#"read l; echo '{"jsonrpc":"2.0","id":0,"result":{"protocolVersion":"1999-01-01","capabilities":{}}}'; sleep 30"#;
    let started = Instant::now();
    let err = Client::connect("old", &sh(script), CONNECT).err().unwrap();
    assert!(err.contains("\"1999-01-01\", which this client does not support"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
}

/// The names of this process's threads serving server `name` (as the kernel shows them,
/// cut to 15 bytes).
fn threads_of(name: &str) -> usize {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else { return 0 };
    tasks
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .filter(|comm| comm.trim_end().starts_with("mcp-") && comm.trim_end().ends_with(&format!("-{name}")))
        .count()
}

#[test]
fn server_requests_are_answered_tools_paged_and_relisted() {
    // A scripted server: pings us and asks to sample during initialize, pages its tools,
    // answers a call with an error, shows us the cancellation of another, then says its
    // tools changed.
    let script = r#"
read l
echo '{"jsonrpc":"2.0","id":"s1","method":"ping"}'
read pong
echo "error: pong $pong" >&2
echo '{"jsonrpc":"2.0","id":"s2","method":"sampling/createMessage","params":{}}'
read refused
echo "error: refused $refused" >&2
echo '{"jsonrpc":"2.0","id":0,"result":{"protocolVersion":"2024-11-05","capabilities":{"tools":{}}}}'
read initialized
read list1
echo '{"jsonrpc":"2.0","id":1,"result":{"tools":[{"name":"a.b","inputSchema":{"type":"object"}}],"nextCursor":"p2"}}'
read list2
case "$list2" in *'"cursor":"p2"'*) ;; *) echo "error: no cursor in $list2" >&2; exit 1;; esac
echo '{"jsonrpc":"2.0","id":2,"result":{"tools":[{"name":"c","description":"second page"}]}}'
read call
echo '{"jsonrpc":"2.0","id":3,"error":{"code":-32602,"message":"bad arguments"}}'
read slow
read cancel
echo "error: cancel $cancel" >&2
echo '{"jsonrpc":"2.0","method":"notifications/tools/list_changed"}'
read list3
echo '{"jsonrpc":"2.0","id":5,"result":{"tools":[{"name":"d"}]}}'
sleep 30
"#;
    let client = Client::connect("zq", &sh(script), CONNECT).unwrap();
    let logged =
        |what: &str| wait_for(Duration::from_secs(5), || client.errlogs().iter().any(|l| l.contains(what)));
    assert!(logged(r#"pong {"jsonrpc":"2.0","id":"s1","result":{}}"#), "{:?}", client.errlogs());
    assert!(logged(r#"refused {"jsonrpc":"2.0","id":"s2","error":{"code":-32601"#), "{:?}", client.errlogs());
    let tools = client.tools();
    assert_eq!(tools.iter().map(|t| t.name.as_str()).collect::<Vec<_>>(), vec!["a_b", "c"]);
    assert_eq!(tools[1].description, "second page");
    let err = client.call("c", &json!({}), CALL).unwrap_err();
    assert_eq!(err, "MCP error -32602: bad arguments");
    let err = client.call("c", &json!({}), Duration::from_millis(300)).unwrap_err();
    assert_eq!(err, "tool call timed out after 0.3 s");
    assert!(
        logged(
            r#""method":"notifications/cancelled","params":{"requestId":4,"reason":"the client timed out"}"#
        ),
        "{:?}",
        client.errlogs()
    );
    assert!(wait_for(Duration::from_secs(5), || client
        .session
        .core
        .stale
        .load(std::sync::atomic::Ordering::Acquire)));
    assert_eq!(names(&client), vec!["d".to_owned()]);
    assert_eq!(threads_of("zq"), 3, "a writer, a reader and a stderr drain");
    let pid = client.session.link.pid().unwrap();
    drop(client);
    assert!(!running(pid), "drop closes");
    assert!(wait_for(Duration::from_secs(5), || threads_of("zq") == 0), "the threads end");
}

/// One request a [`fake_http`] server received.
#[derive(Debug, Clone)]
struct Seen {
    method: String,
    headers: Vec<(String, String)>,
    body: String,
}

impl Seen {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or(Value::Null)
    }
}

/// What a [`fake_http`] server answers: status, headers, body (the connection then closes).
type Answer = (u16, Vec<(&'static str, String)>, String);

/// A scripted HTTP/1.1 server on loopback, one connection at a time; returns its port and
/// what it received.
fn fake_http(answer: impl Fn(&Seen) -> Answer + Send + 'static) -> (u16, Arc<std::sync::Mutex<Vec<Seen>>>) {
    use std::io::{BufRead, BufReader, Read, Write};
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let log = Arc::clone(&seen);
    thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut line = String::new();
            if reader.read_line(&mut line).is_err() {
                continue;
            }
            let method = line.split(' ').next().unwrap_or("").to_owned();
            let mut headers = Vec::new();
            loop {
                let mut h = String::new();
                if reader.read_line(&mut h).is_err() || h.trim().is_empty() {
                    break;
                }
                if let Some((k, v)) = h.trim_end().split_once(':') {
                    headers.push((k.trim().to_owned(), v.trim().to_owned()));
                }
            }
            let len = headers
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
                .and_then(|(_, v)| v.parse().ok())
                .unwrap_or(0usize);
            let mut body = vec![0; len];
            let _ = reader.read_exact(&mut body);
            let req = Seen { method, headers, body: String::from_utf8_lossy(&body).into_owned() };
            let (status, extra, text) = answer(&req);
            log.lock().unwrap().push(req);
            let mut head =
                format!("HTTP/1.1 {status} X\r\nContent-Length: {}\r\nConnection: close\r\n", text.len());
            for (k, v) in extra {
                head.push_str(&format!("{k}: {v}\r\n"));
            }
            let _ = stream.write_all(format!("{head}\r\n{text}").as_bytes());
        }
    });
    (port, seen)
}

fn sse_answer(messages: &[Value]) -> Answer {
    let body: String = messages.iter().map(|m| format!("event: message\ndata: {m}\n\n")).collect();
    (200, vec![("Content-Type", "text/event-stream".into())], format!(": priming\n\n{body}"))
}

#[test]
fn streamable_http_on_the_wire() {
    let (port, seen) = fake_http(|req| {
        let msg = req.json();
        let id = msg["id"].clone();
        match (req.method.as_str(), msg["method"].as_str()) {
            ("POST", Some("initialize")) => (
                200,
                vec![("Content-Type", "application/json".into()), ("Mcp-Session-Id", "sess-1".into())],
                json!({"jsonrpc": "2.0", "id": id, "result": {"protocolVersion": "2025-03-26", "capabilities": {}}})
                    .to_string(),
            ),
            ("POST", Some("tools/list")) => sse_answer(&[
                json!({"jsonrpc": "2.0", "id": "srv-1", "method": "ping"}),
                json!({"jsonrpc": "2.0", "method": "notifications/message", "params": {"level": "error", "data": "disk full"}}),
                json!({"jsonrpc": "2.0", "id": id, "result": {"tools": [{"name": "t"}]}}),
            ]),
            ("POST", Some("tools/call")) => (
                200,
                vec![("Content-Type", "application/json; charset=utf-8".into())],
                json!({"jsonrpc": "2.0", "id": id, "result": {"content": [{"type": "text", "text": "hi"}], "isError": true}})
                    .to_string(),
            ),
            ("POST", _) => (202, vec![], String::new()),
            ("GET", _) => (405, vec![], String::new()),
            _ => (200, vec![], String::new()),
        }
    });
    let config = json!({"url": format!("http://127.0.0.1:{port}/mcp"), "transport": "streamable_http",
        "headers": {"X-Api-Key": "k-123"}});
    let client = Client::connect("fake", &config, CONNECT).unwrap();
    assert_eq!(names(&client), vec!["t".to_owned()]);
    assert_eq!(client.errlogs(), vec!["[ERROR] disk full".to_owned()]);
    let r = client.call("t", &json!({"x": 1}), CALL).unwrap();
    assert!(r.is_error && r.text == "hi", "{r:?}");
    client.close();
    assert!(wait_for(Duration::from_secs(5), || seen.lock().unwrap().iter().any(|s| s.method == "DELETE")));
    let seen = seen.lock().unwrap().clone();
    let posts: Vec<Value> = seen.iter().filter(|s| s.method == "POST").map(Seen::json).collect();
    let methods: Vec<&str> = posts.iter().map(|m| m["method"].as_str().unwrap_or("(response)")).collect();
    assert_eq!(
        methods,
        ["initialize", "notifications/initialized", "tools/list", "(response)", "tools/call"],
        "{posts:?}"
    );
    assert_eq!(posts[3], json!({"jsonrpc": "2.0", "id": "srv-1", "result": {}}), "the ping is answered");
    assert_eq!(posts[0]["params"]["clientInfo"]["name"], "astrbot");
    assert_eq!(posts[0]["params"]["protocolVersion"], "2025-11-25");
    for s in &seen {
        assert_eq!(s.header("x-api-key"), Some("k-123"), "{s:?}");
        if s.json()["method"] != "initialize" {
            assert_eq!(s.header("mcp-session-id"), Some("sess-1"), "{s:?}");
            assert_eq!(s.header("mcp-protocol-version"), Some("2025-03-26"), "{s:?}");
        }
        if s.method == "POST" {
            assert_eq!(s.header("accept"), Some("application/json, text/event-stream"));
            assert_eq!(s.header("content-type"), Some("application/json"));
        }
    }
}

#[test]
fn a_legacy_endpoint_on_another_origin_is_refused() {
    let (port, seen) = fake_http(|req| match req.method.as_str() {
        "GET" => (
            200,
            vec![("Content-Type", "text/event-stream".into())],
            "event: endpoint\ndata: http://evil.example/messages?s=1\n\n".into(),
        ),
        _ => (202, vec![], String::new()),
    });
    let err = Client::connect("evil", &json!({"url": format!("http://127.0.0.1:{port}/sse")}), CONNECT)
        .err()
        .unwrap();
    assert!(err.contains("another origin"), "{err}");
    assert!(seen.lock().unwrap().iter().all(|s| s.method == "GET"), "nothing was posted");
}
