//! Tool benchmark (issue 12): what one tool round trip through a stdio MCP server costs
//! inside a chat, next to the same tool called directly over stdio in the same run.
//!
//! - **Direct (baseline)**: the bench spawns `node server-everything stdio` itself,
//!   initializes it and times `tools/call echo` round trips (write the request line, read
//!   the response line): the tool's own time, Node and the pipe included.
//! - **Through astrbot**: the same server registered over the API (`POST
//!   /api/v1/mcp/servers`, stdio), a fake OpenAI-compatible model that asks for `echo`
//!   once and then answers; each chat's stream carries `tool_call` and `tool_call_result`
//!   events whose `ts` fields (the server's clock) bracket the call: that difference is the
//!   round trip as the agent loop sees it.
//!
//! The difference of the medians is what astrbot adds to a tool call (target: at most
//! 5 ms). Needs Node and server-everything: `export $(.ci/mcp-servers)` installs it and
//! sets `ASTRBOT_TEST_MCP_EVERYTHING`; without it the bench says so and exits.
//!
//! Run: `cargo bench --bench tools` (BENCH_ROUNDS, default 100; ASTRBOT_BENCH_BIN runs
//! another build).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// The fake model: a tool call to `echo` first, the answer once a tool result came back.
fn fake_model() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind the fake model");
    let addr = listener.local_addr().expect("its address");
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            std::thread::spawn(move || serve_model(conn));
        }
    });
    addr
}

fn serve_model(conn: TcpStream) {
    let _ = conn.set_nodelay(true);
    let Ok(read_half) = conn.try_clone() else { return };
    let mut reader = BufReader::new(read_half);
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
        let answered = request["messages"].as_array().is_some_and(|m| m.iter().any(|m| m["role"] == "tool"));
        let chunks: Vec<String> = if answered {
            vec![
                r#"{"choices":[{"index":0,"delta":{"content":"done"}}]}"#.into(),
                r#"{"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}"#.into(),
            ]
        } else {
            vec![
                r#"{"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"id":"call_1","type":"function","function":{"name":"echo","arguments":""}}]}}]}"#.into(),
                r#"{"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"{\"message\":\"bench\"}"}}]}}]}"#.into(),
                r#"{"choices":[{"index":0,"delta":{},"finish_reason":"tool_calls"}]}"#.into(),
            ]
        };
        let mut out = String::from(
            "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n",
        );
        for c in chunks.iter().map(|c| format!("data: {c}\n\n")).chain(["data: [DONE]\n\n".to_owned()]) {
            out.push_str(&format!("{:x}\r\n{c}\r\n", c.len()));
        }
        out.push_str("0\r\n\r\n");
        if writer.write_all(out.as_bytes()).is_err() {
            return;
        }
    }
}

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
    candidates.into_iter().find(|p| !p.is_empty() && std::path::Path::new(p).is_file())
}

/// A directly spawned server-everything over stdio, initialized.
struct Direct {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    next: u64,
}

impl Direct {
    fn start(index: &str) -> Direct {
        let mut child = Command::new("node")
            .args([index, "stdio"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn node server-everything");
        let stdin = child.stdin.take().expect("stdin");
        let stdout = BufReader::new(child.stdout.take().expect("stdout"));
        let mut d = Direct { child, stdin, stdout, next: 1 };
        d.request(
            "initialize",
            json!({"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "bench", "version": "1"}}),
        );
        d.send(&json!({"jsonrpc": "2.0", "method": "notifications/initialized"}));
        d
    }

    fn send(&mut self, msg: &Value) {
        writeln!(self.stdin, "{msg}").expect("write to the server");
        self.stdin.flush().expect("flush");
    }

    /// One request and its response (other lines, notifications, skipped).
    fn request(&mut self, method: &str, params: Value) -> Value {
        let id = self.next;
        self.next += 1;
        self.send(&json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}));
        let mut line = String::new();
        loop {
            line.clear();
            assert!(self.stdout.read_line(&mut line).expect("read the server") > 0, "the server closed");
            let v: Value = serde_json::from_str(&line).unwrap_or(Value::Null);
            if v["id"] == id {
                return v;
            }
        }
    }
}

impl Drop for Direct {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct Server(Child, std::path::PathBuf);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
        let _ = std::fs::remove_dir_all(&self.1);
    }
}

fn call(addr: SocketAddr, method: &str, path: &str, key: &str, body: &str) -> String {
    let mut s = TcpStream::connect(addr).expect("connect to astrbot");
    write!(s, "{method} {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\nContent-Type: application/json\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}", body.len()).expect("send");
    let mut out = String::new();
    s.read_to_string(&mut out).expect("read the answer");
    out
}

/// One chat: the `ts` of its `tool_call` and `tool_call_result` events, in seconds.
fn chat(addr: SocketAddr, key: &str, session: &str) -> Option<(f64, f64)> {
    let body = format!(r#"{{"username":"bench","session_id":"{session}","message":"echo something"}}"#);
    let mut s = TcpStream::connect(addr).ok()?;
    write!(s, "POST /api/v1/chat HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\nContent-Type: application/json\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}", body.len()).ok()?;
    let _ = s.set_read_timeout(Some(Duration::from_secs(30)));
    let reader = BufReader::new(s);
    let (mut called, mut returned) = (None, None);
    for line in reader.lines() {
        let line = line.ok()?;
        let Some(data) = line.strip_prefix("data: ") else { continue };
        let event: Value = serde_json::from_str(data).unwrap_or(Value::Null);
        let ts = || {
            event["data"]
                .as_str()
                .and_then(|d| serde_json::from_str::<Value>(d).ok())
                .and_then(|p| p["ts"].as_f64())
        };
        match event["chain_type"].as_str() {
            Some("tool_call") => called = ts(),
            Some("tool_call_result") => returned = ts(),
            _ => {}
        }
        if event["type"] == "end" {
            break;
        }
    }
    Some((called?, returned?))
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn p90(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[(v.len() * 9 / 10).min(v.len() - 1)]
}

fn main() {
    let Some(index) = everything() else {
        println!("tools bench: server-everything is not installed (export $(.ci/mcp-servers)); skipped");
        return;
    };
    let rounds: usize = std::env::var("BENCH_ROUNDS").ok().and_then(|s| s.parse().ok()).unwrap_or(100);
    let bin_override = std::env::var("ASTRBOT_BENCH_BIN").ok().filter(|b| !b.is_empty());
    let bin = bin_override.as_deref().unwrap_or(env!("CARGO_BIN_EXE_astrbot"));
    let model = fake_model();
    let data = std::env::temp_dir().join(format!("astrbot-bench-tools-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&data);
    let mut child = Command::new(bin)
        .args(["serve", "--listen", "127.0.0.1:0", "--log-level", "warn", "--data"])
        .arg(&data)
        .env("ASTRBOT_ADMIN_PASSWORD", "bench-password-1")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start astrbot");
    let mut first = String::new();
    BufReader::new(child.stdout.take().expect("stdout")).read_line(&mut first).expect("its first line");
    let _server = Server(child, data.clone());
    let addr: SocketAddr =
        first.trim().trim_start_matches("listening on http://").parse().expect("the listening line");
    let key = Command::new(bin)
        .args([
            "key",
            "create",
            "--name",
            "bench",
            "--scopes",
            "chat,provider,mcp",
            "--daily-limit",
            "0",
            "--data",
        ])
        .arg(&data)
        .output()
        .expect("create a key");
    let key = String::from_utf8_lossy(&key.stdout).trim().to_owned();
    let ok = |out: String, what: &str| assert!(out.contains("\"status\":\"ok\""), "{what}: {out}");
    ok(
        call(
            addr,
            "POST",
            "/api/v1/provider-sources",
            &key,
            &format!(
                r#"{{"id":"fake","type":"openai_chat_completion","api_base":"http://{model}/v1","key":["k"]}}"#
            ),
        ),
        "the provider source",
    );
    ok(
        call(
            addr,
            "POST",
            "/api/v1/providers",
            &key,
            r#"{"id":"fake/m","provider_source_id":"fake","model":"m"}"#,
        ),
        "the provider",
    );
    let server = json!({"name": "everything", "command": "node", "args": [index, "stdio"]}).to_string();
    ok(call(addr, "POST", "/api/v1/mcp/servers", &key, &server), "the MCP server");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !call(addr, "GET", "/api/v1/mcp/servers", &key, "").contains("\"echo\"") {
        assert!(Instant::now() < deadline, "server-everything never offered echo");
        std::thread::sleep(Duration::from_millis(100));
    }

    let mut direct = Direct::start(&index);
    let (mut d, mut a) = (Vec::new(), Vec::new());
    for i in 0..rounds + 10 {
        let started = Instant::now();
        let r = direct.request("tools/call", json!({"name": "echo", "arguments": {"message": "bench"}}));
        let took = started.elapsed().as_secs_f64() * 1000.0;
        assert!(r["result"].is_object(), "echo failed: {r}");
        let through = chat(addr, &key, &format!("t{i}")).expect("a chat with a tool call and its result");
        if i >= 10 {
            d.push(took);
            a.push((through.1 - through.0) * 1000.0);
        }
    }
    println!(
        "tools benchmark: {rounds} rounds, server-everything `echo` over stdio (after 10 warm-up rounds)"
    );
    println!("{:<58} {:>9} {:>9}", "", "p50 ms", "p90 ms");
    println!(
        "{:<58} {:>9.2} {:>9.2}",
        "tools/call echo, called directly over stdio (baseline)",
        median(&mut d),
        p90(&mut d)
    );
    println!(
        "{:<58} {:>9.2} {:>9.2}",
        "through astrbot: tool_call event -> tool_call_result event",
        median(&mut a),
        p90(&mut a)
    );
    println!(
        "added by astrbot to one tool round trip: {:.2} ms at the median (target at most 5 ms)",
        median(&mut a) - median(&mut d)
    );
}
