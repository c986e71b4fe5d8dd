//! Plugin benchmark (issue 13): what the plugin runtime adds to a call of a long-lived
//! plugin, and whether misbehaving plugins slow a healthy one, each next to a baseline
//! measured in the same run.
//!
//! The real server runs with plugin folders put into its data folder before it starts: a
//! healthy `bench_echo` (Python, long-lived, one LLM tool that echoes its argument) and three
//! bad neighbours (Python, long-lived): `bench_hang` never answers (1 s timeout, then
//! cancelled and killed), `bench_flood` writes ~8 MB of garbage lines before each answer,
//! `bench_crash` exits in the middle of every call. A fake OpenAI-compatible model asks for
//! the `bench_echo` tool once per chat and then answers; the chat's `tool_call` and
//! `tool_call_result` events carry the server's clock (`ts`), whose difference is the
//! plugin call as the agent loop sees it (registry, `Runtime::call`, the pipe, the plugin).
//!
//! - **(a) overhead**: the same `main.py` spawned by the bench itself, initialized, and
//!   `tools/call` round trips timed over its pipes (the plugin's own time, Python and the pipe
//!   included) against the call through astrbot. The difference of the medians is what the
//!   runtime adds (target: at most 2 ms).
//! - **(b) isolation**: the healthy tool's call alone, then while each bad neighbour is
//!   driven in a loop by another chat (`/hang`, `/flood`, `/crash`), then with all three.
//!
//! Run: `cargo bench --bench plugins` (BENCH_ROUNDS, default 100; ASTRBOT_BENCH_BIN runs
//! another build). Needs `python3`.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// The healthy plugin: answers `tools/call` with its `text` argument.
const ECHO: &str = r#"#!/usr/bin/env python3
import json, sys
for line in sys.stdin:
    msg = json.loads(line)
    if msg.get("id") is None:
        continue
    if msg["method"] == "initialize":
        result = {"protocol_version": 1}
    elif msg["method"] == "tools/call":
        result = {"content": [{"type": "text", "text": msg["params"]["arguments"].get("text", "")}]}
    else:
        result = "?"
    sys.stdout.write(json.dumps({"jsonrpc": "2.0", "id": msg["id"], "result": result}) + "\n")
    sys.stdout.flush()
"#;

/// The bad neighbours: one program, its behaviour by the command's handler.
const BAD: &str = r#"#!/usr/bin/env python3
import json, os, sys
garbage = "garbage " * 12 + "{not json\n"
for line in sys.stdin:
    msg = json.loads(line)
    if msg.get("id") is None:
        continue
    if msg["method"] == "initialize":
        result = {"protocol_version": 1}
    else:
        handler = msg["params"]["handler"]
        if handler == "hang":
            continue
        if handler == "crash":
            os._exit(1)
        sys.stdout.write(garbage * 80000)
        result = "flooded"
    sys.stdout.write(json.dumps({"jsonrpc": "2.0", "id": msg["id"], "result": result}) + "\n")
    sys.stdout.flush()
"#;

/// Writes a plugin folder: metadata.yaml, plugin.json and an executable main.py.
fn install(data: &Path, name: &str, program: &str, manifest: &Value) {
    let dir = data.join("plugins").join(name);
    std::fs::create_dir_all(&dir).expect("the plugin folder");
    let metadata = format!("name: {name}\ndesc: benchmark plugin\nversion: 1.0.0\nauthor: bench\n");
    std::fs::write(dir.join("metadata.yaml"), metadata).expect("metadata.yaml");
    std::fs::write(dir.join("plugin.json"), manifest.to_string()).expect("plugin.json");
    let main = dir.join("main.py");
    std::fs::write(&main, program).expect("main.py");
    std::fs::set_permissions(&main, std::fs::Permissions::from_mode(0o755)).expect("chmod main.py");
}

fn bad_neighbour(data: &Path, command: &str, timeout_ms: u64) {
    let manifest = json!({
        "exec": {"command": "main.py", "timeout_ms": timeout_ms},
        "commands": [{"name": command, "description": "misbehave"}],
    });
    install(data, &format!("bench_{command}"), BAD, &manifest);
}

/// The fake model: its first answer in a chat calls `bench_echo`; once the tool's result is
/// in the conversation, it answers with text.
fn fake_model() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind the fake model");
    let addr = listener.local_addr().expect("the fake model's address");
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            std::thread::spawn(move || model_connection(conn));
        }
    });
    addr
}

/// Serves one keep-alive connection of the fake model.
fn model_connection(conn: TcpStream) {
    let _ = conn.set_nodelay(true);
    let Ok(clone) = conn.try_clone() else { return };
    let mut from = BufReader::new(clone);
    let mut to = conn;
    while let Some(body) = read_request(&mut from) {
        let request: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        let has_result =
            request["messages"].as_array().is_some_and(|ms| ms.iter().any(|m| m["role"] == "tool"));
        let deltas = if has_result {
            vec![json!({"content": "ok"}), json!({})]
        } else {
            let call = json!({"index": 0, "id": "c1", "type": "function",
                "function": {"name": "bench_echo", "arguments": "{\"text\":\"ping\"}"}});
            vec![json!({"tool_calls": [call]}), json!({})]
        };
        let finish = if has_result { "stop" } else { "tool_calls" };
        let mut stream = String::new();
        for (i, delta) in deltas.iter().enumerate() {
            let last = i + 1 == deltas.len();
            let choice = json!({"index": 0, "delta": delta, "finish_reason": if last { json!(finish) } else { Value::Null }});
            stream.push_str(&format!("data: {}\n\n", json!({"choices": [choice]})));
        }
        stream.push_str("data: [DONE]\n\n");
        let head = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nContent-Length: {}\r\n\r\n",
            stream.len()
        );
        if to.write_all(head.as_bytes()).and_then(|()| to.write_all(stream.as_bytes())).is_err() {
            return;
        }
    }
}

/// One HTTP request's body (`None` when the connection ends).
fn read_request(from: &mut BufReader<TcpStream>) -> Option<Vec<u8>> {
    let mut length = 0;
    loop {
        let mut line = String::new();
        if from.read_line(&mut line).ok()? == 0 {
            return None;
        }
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':')
            && name.eq_ignore_ascii_case("content-length")
        {
            length = value.trim().parse().ok()?;
        }
    }
    let mut body = vec![0; length];
    from.read_exact(&mut body).ok()?;
    Some(body)
}

/// The astrbot under test and a key for it; stopped and its data removed on drop.
struct Astrbot {
    child: Child,
    data: PathBuf,
    addr: SocketAddr,
    key: String,
}

impl Astrbot {
    fn start(bin: &str, data: PathBuf) -> Astrbot {
        let mut child = Command::new(bin)
            .args(["serve", "--listen", "127.0.0.1:0", "--log-level", "warn", "--data"])
            .arg(&data)
            .env("ASTRBOT_ADMIN_PASSWORD", "bench-password-1")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start astrbot");
        let mut first = String::new();
        BufReader::new(child.stdout.take().expect("its stdout"))
            .read_line(&mut first)
            .expect("its first line");
        let addr =
            first.trim().trim_start_matches("listening on http://").parse().expect("the listening line");
        let out = Command::new(bin)
            .args([
                "key",
                "create",
                "--name",
                "bench",
                "--scopes",
                "chat,provider",
                "--daily-limit",
                "0",
                "--data",
            ])
            .arg(&data)
            .output()
            .expect("create a key");
        let key = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        Astrbot { child, data, addr, key }
    }

    /// Sends one request and reads the whole answer (head and body).
    fn request(&self, method: &str, path: &str, body: &str) -> String {
        let mut s = TcpStream::connect(self.addr).expect("connect to astrbot");
        let _ = s.set_read_timeout(Some(Duration::from_secs(60)));
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: bench\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\nConnection: close\r\nContent-Length: {}\r\n\r\n",
            self.key,
            body.len()
        );
        s.write_all(head.as_bytes()).and_then(|()| s.write_all(body.as_bytes())).expect("send to astrbot");
        let mut answer = String::new();
        let _ = s.read_to_string(&mut answer);
        answer
    }

    fn must(&self, method: &str, path: &str, body: &Value) {
        let answer = self.request(method, path, &body.to_string());
        assert!(answer.contains("\"status\":\"ok\""), "{method} {path}: {answer}");
    }

    /// One chat's `plain` events: (chain type, `data` text).
    fn chat(&self, session: &str, message: &str) -> Vec<(String, String)> {
        let body = json!({"username": "bench", "session_id": session, "message": message}).to_string();
        let answer = self.request("POST", "/api/v1/chat", &body);
        answer
            .lines()
            .filter_map(|l| l.strip_prefix("data: "))
            .filter_map(|d| serde_json::from_str::<Value>(d).ok())
            .filter(|e| e["type"] == "plain")
            .map(|e| {
                let chain = e["chain_type"].as_str().unwrap_or_default().to_owned();
                (chain, e["data"].as_str().unwrap_or_default().to_owned())
            })
            .collect()
    }

    /// The healthy tool's round trip in one chat, in ms, as the agent loop saw it.
    fn tool_round_trip(&self, session: &str) -> f64 {
        let events: Vec<(String, Value)> = self
            .chat(session, "echo please")
            .into_iter()
            .map(|(chain, data)| (chain, serde_json::from_str(&data).unwrap_or(Value::Null)))
            .collect();
        let ts = |kind: &str| events.iter().find(|(k, _)| k == kind).and_then(|(_, p)| p["ts"].as_f64());
        let (Some(called), Some(returned)) = (ts("tool_call"), ts("tool_call_result")) else {
            panic!("no tool call and result in the chat: {events:?}");
        };
        let result = events.iter().find(|(k, _)| k == "tool_call_result").map(|(_, p)| p["result"].clone());
        assert_eq!(result, Some(json!("ping")), "the tool's result");
        (returned - called) * 1000.0
    }
}

impl Drop for Astrbot {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.data);
    }
}

/// The healthy plugin's program, spawned by the bench itself and initialized.
struct Direct {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    id: u64,
}

impl Direct {
    fn start(program: &Path) -> Direct {
        let mut child = Command::new(program)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn the plugin");
        let stdin = child.stdin.take().expect("its stdin");
        let stdout = BufReader::new(child.stdout.take().expect("its stdout"));
        let mut direct = Direct { child, stdin, stdout, id: 0 };
        direct.round_trip("initialize", json!({"protocol_version": 1, "config": {}}));
        direct
    }

    fn round_trip(&mut self, method: &str, params: Value) -> Value {
        self.id += 1;
        let line = json!({"jsonrpc": "2.0", "id": self.id, "method": method, "params": params});
        writeln!(self.stdin, "{line}").and_then(|()| self.stdin.flush()).expect("write to the plugin");
        let mut answer = String::new();
        self.stdout.read_line(&mut answer).expect("read the plugin");
        serde_json::from_str(&answer).expect("a JSON answer")
    }
}

impl Drop for Direct {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Median and 90th percentile.
fn p50_p90(mut v: Vec<f64>) -> (f64, f64) {
    v.sort_by(f64::total_cmp);
    (v[v.len() / 2], v[(v.len() * 9 / 10).min(v.len() - 1)])
}

fn row(label: &str, samples: Vec<f64>) -> f64 {
    let (p50, p90) = p50_p90(samples);
    println!("{label:<62} {p50:>9.2} {p90:>9.2}");
    p50
}

/// The neighbours' chats: how many, and the first reply of each kind (to show that they
/// misbehaved as meant).
#[derive(Default)]
struct Neighbours {
    chats: AtomicUsize,
    replies: std::sync::Mutex<Vec<String>>,
}

/// Runs the healthy tool for `rounds` samples and at least `MIN_SPAN` (after warm-up
/// rounds), 10 ms apart, with `neighbours` chatting their commands in loops meanwhile.
fn healthy_rounds(
    bot: &Arc<Astrbot>,
    tag: &str,
    rounds: usize,
    neighbours: &[&str],
) -> (Vec<f64>, Arc<Neighbours>) {
    const MIN_SPAN: Duration = Duration::from_secs(5);
    let stop = Arc::new(AtomicBool::new(false));
    let seen = Arc::new(Neighbours::default());
    let loops: Vec<_> = neighbours
        .iter()
        .map(|command| {
            let (bot, stop, seen) = (Arc::clone(bot), Arc::clone(&stop), Arc::clone(&seen));
            let (message, session) = (format!("/{command}"), format!("{tag}-{command}"));
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let reply: String =
                        bot.chat(&session, &message).into_iter().map(|(_, text)| text).collect();
                    seen.chats.fetch_add(1, Ordering::Relaxed);
                    let mut replies = seen.replies.lock().unwrap_or_else(|e| e.into_inner());
                    let gist: String = reply.split_whitespace().collect::<Vec<_>>().join(" ");
                    let gist = format!("{message}: {}", gist.chars().take(100).collect::<String>());
                    // One line per kind of reply (digits aside, the first 80 characters).
                    let kind: String = gist.chars().filter(|c| !c.is_ascii_digit()).take(80).collect();
                    let known =
                        |r: &String| r.chars().filter(|c| !c.is_ascii_digit()).take(80).eq(kind.chars());
                    if !replies.iter().any(known) {
                        replies.push(gist);
                    }
                    drop(replies);
                    // A user's pace, not a tight loop: what is measured is the plugin's harm.
                    std::thread::sleep(Duration::from_millis(20));
                }
            })
        })
        .collect();
    if !neighbours.is_empty() {
        // Let the neighbours get going (their first processes started).
        let until = Instant::now() + Duration::from_secs(10);
        while seen.chats.load(Ordering::Relaxed) < neighbours.len() && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    for i in 0..5 {
        bot.tool_round_trip(&format!("{tag}-warm-{i}"));
    }
    let started = Instant::now();
    let mut samples = Vec::new();
    while samples.len() < rounds || started.elapsed() < MIN_SPAN {
        samples.push(bot.tool_round_trip(&format!("{tag}-{}", samples.len())));
        std::thread::sleep(Duration::from_millis(10));
    }
    stop.store(true, Ordering::Relaxed);
    for l in loops {
        let _ = l.join();
    }
    (samples, seen)
}

fn main() {
    if !Command::new("python3").arg("-c").arg("pass").status().is_ok_and(|s| s.success()) {
        println!("plugins bench: python3 is missing; skipped");
        return;
    }
    let rounds: usize = std::env::var("BENCH_ROUNDS").ok().and_then(|s| s.parse().ok()).unwrap_or(100);
    let bin_override = std::env::var("ASTRBOT_BENCH_BIN").ok().filter(|b| !b.is_empty());
    let bin = bin_override.as_deref().unwrap_or(env!("CARGO_BIN_EXE_astrbot"));
    let data = std::env::temp_dir().join(format!("astrbot-bench-plugins-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&data);
    install(
        &data,
        "bench_echo",
        ECHO,
        &json!({
            "exec": {"command": "main.py"},
            "llm_tools": [{"name": "bench_echo", "description": "Echoes its text",
                "inputSchema": {"type": "object", "properties": {"text": {"type": "string"}}}}],
        }),
    );
    bad_neighbour(&data, "hang", 1000);
    bad_neighbour(&data, "flood", 30_000);
    bad_neighbour(&data, "crash", 30_000);
    let program = data.join("plugins/bench_echo/main.py");
    let bot = Arc::new(Astrbot::start(bin, data));
    let model = fake_model();
    bot.must(
        "POST",
        "/api/v1/provider-sources",
        &json!({"id": "fake", "type": "openai_chat_completion", "api_base": format!("http://{model}/v1"), "key": ["k"]}),
    );
    bot.must(
        "POST",
        "/api/v1/providers",
        &json!({"id": "fake/m", "provider_source_id": "fake", "model": "m"}),
    );

    // (a) The plugin's own round trip against the same call through astrbot, interleaved.
    let mut direct = Direct::start(&program);
    let (mut own, mut through) = (Vec::new(), Vec::new());
    for i in 0..rounds + 10 {
        let started = Instant::now();
        let answer =
            direct.round_trip("tools/call", json!({"name": "bench_echo", "arguments": {"text": "ping"}}));
        let took = started.elapsed().as_secs_f64() * 1000.0;
        assert_eq!(answer["result"]["content"][0]["text"], "ping", "{answer}");
        let via = bot.tool_round_trip(&format!("a-{i}"));
        if i >= 10 {
            own.push(took);
            through.push(via);
        }
    }
    drop(direct);
    println!("plugins benchmark: {rounds} rounds (after warm-up), a long-lived Python plugin's tool");
    println!("{:<62} {:>9} {:>9}", "", "p50 ms", "p90 ms");
    let base = row("(a) tools/call over the plugin's own pipes (baseline)", own);
    let via = row("(a) through astrbot: tool_call event -> tool_call_result event", through);
    println!("added by astrbot to one plugin call: {:.2} ms at the median (target at most 2 ms)", via - base);

    // (b) The healthy plugin alone, and next to each bad neighbour.
    println!();
    let mut alone = 0.0;
    for (label, neighbours) in [
        ("(b) healthy tool, no other plugin busy (baseline)", &[][..]),
        ("(b) ... while a neighbour hangs (1 s timeout, then killed)", &["hang"][..]),
        ("(b) ... while a neighbour floods stdout (~8 MB per call)", &["flood"][..]),
        ("(b) ... while a neighbour crashes mid-call", &["crash"][..]),
        ("(b) ... while all three misbehave", &["hang", "flood", "crash"][..]),
    ] {
        let tag = format!("b-{}", neighbours.join("-"));
        let (samples, seen) = healthy_rounds(&bot, &tag, rounds, neighbours);
        let n = samples.len();
        let p50 = row(label, samples);
        if neighbours.is_empty() {
            alone = p50;
            continue;
        }
        let chats = seen.chats.load(Ordering::Relaxed);
        println!(
            "{:<62} {:>+9.2}   ({n} calls; {chats} neighbour chats)",
            "    difference at the median",
            p50 - alone
        );
        for reply in seen.replies.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            println!("      neighbour reply: {reply}");
        }
    }
}
