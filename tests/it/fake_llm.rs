//! Fake upstream LLM servers for the chat tests: a tiny threaded HTTP/1.1 server on
//! `127.0.0.1:0` that records every request and answers from a script the test sets.
//!
//! One fake speaks both wire formats, chosen by the request path: `POST …/chat/completions`
//! answers like an OpenAI-compatible server (SSE `choices[0].delta.content` chunks, a usage
//! chunk and `[DONE]`, or one JSON completion when the request has `stream: false`), and
//! `POST …/messages` like Anthropic's Messages API (`message_start`, `content_block_delta`,
//! `message_delta`, `message_stop`, or one JSON message). Failures come first: a bearer or
//! `x-api-key` listed in `reject_keys` gets 401, then each status in `failures` is answered
//! once, in order, before the script succeeds. The listener is bound before `start`
//! returns, so a test never waits for readiness; dropping the fake stops its accept loop.
//!
//! For the agent loop a script may also hold `steps`: each successful request takes the
//! next one (text and/or tool calls), and once they are used up the fake answers
//! `deltas`. Tool calls go out in the request's format: OpenAI `delta.tool_calls[]`
//! fragments by index (id and name first, then the arguments in pieces) and
//! `finish_reason: tool_calls`, or Anthropic `tool_use` blocks with `input_json_delta`
//! pieces and `stop_reason: tool_use`; whole `tool_calls` / `tool_use` content when the
//! request does not stream.
//!
//! A script's `reasoning` makes the fake a reasoning model: each answer thinks first, as
//! DeepSeek does it on the OpenAI wire (`delta.reasoning_content` chunks before the content,
//! `message.reasoning_content` when whole) and as Anthropic does (a `thinking` block with
//! `thinking_delta` pieces and a `signature_delta`, before the text block).

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};

use crate::support::Server;

/// One request as the fake received it.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    /// Header names lower-cased, in arrival order.
    pub headers: Vec<(String, String)>,
    /// The body as JSON (`null` when it was not JSON).
    pub body: Value,
}

impl Recorded {
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers.iter().find(|(n, _)| *n == name).map(|(_, v)| v.as_str())
    }

    /// The key the request carried: `Authorization: Bearer <key>` or `x-api-key`.
    pub fn key(&self) -> Option<&str> {
        self.header("authorization")
            .and_then(|a| a.strip_prefix("Bearer "))
            .or_else(|| self.header("x-api-key"))
    }

    /// The `messages` of the body.
    pub fn messages(&self) -> Vec<Value> {
        self.body["messages"].as_array().cloned().unwrap_or_default()
    }
}

/// What the fake answers.
#[derive(Debug, Clone)]
pub struct Script {
    /// The reply, as the stream's deltas (joined for a non-streaming answer).
    pub deltas: Vec<String>,
    /// Usage reported: (prompt / input tokens, completion / output tokens).
    pub usage: (u64, u64),
    /// Silence before the response head (to trip the client's first-byte timeout).
    pub delay_head: Duration,
    /// Silence after the head, before the first streamed chunk.
    pub delay_first: Duration,
    /// Silence between streamed chunks.
    pub delay_between: Duration,
    /// Statuses answered, one per request, before the script succeeds.
    pub failures: VecDeque<u16>,
    /// Keys answered with 401 every time.
    pub reject_keys: Vec<String>,
    /// Stream without chunked framing: the body ends when the connection closes.
    pub close_delimited: bool,
    /// Answers for the next successful requests, in order, before `deltas`.
    pub steps: VecDeque<Step>,
    /// The thoughts each answer begins with, in pieces (none: not a reasoning model).
    pub reasoning: Vec<String>,
}

/// One scripted answer of the agent loop: text deltas, then tool calls.
#[derive(Debug, Clone, Default)]
pub struct Step {
    pub deltas: Vec<String>,
    /// `(id, name, arguments as JSON text)`.
    pub calls: Vec<(String, String, String)>,
}

impl Step {
    /// An answer that asks for `calls` (`(id, name, arguments)`), after `text` (if any).
    pub fn calls(text: &str, calls: &[(&str, &str, &str)]) -> Step {
        Step {
            deltas: if text.is_empty() { vec![] } else { vec![text.to_owned()] },
            calls: calls.iter().map(|(i, n, a)| (i.to_string(), n.to_string(), a.to_string())).collect(),
        }
    }

    pub fn text(deltas: &[&str]) -> Step {
        Step { deltas: deltas.iter().map(|d| d.to_string()).collect(), calls: vec![] }
    }
}

/// A string in about three pieces, on character boundaries (for streamed arguments).
fn pieces(s: &str) -> Vec<String> {
    let chars: Vec<char> = s.chars().collect();
    let size = chars.len().div_ceil(3).max(1);
    chars.chunks(size).map(|c| c.iter().collect()).collect()
}

impl Script {
    pub fn reply(deltas: &[&str]) -> Script {
        Script {
            deltas: deltas.iter().map(|d| d.to_string()).collect(),
            usage: (11, 7),
            delay_head: Duration::ZERO,
            delay_first: Duration::ZERO,
            delay_between: Duration::ZERO,
            failures: VecDeque::new(),
            reject_keys: Vec::new(),
            close_delimited: false,
            steps: VecDeque::new(),
            reasoning: Vec::new(),
        }
    }
}

/// A running fake; stops accepting when dropped.
pub struct FakeLlm {
    pub addr: SocketAddr,
    requests: Arc<Mutex<Vec<Recorded>>>,
    script: Arc<Mutex<Script>>,
    stop: Arc<AtomicBool>,
}

impl FakeLlm {
    pub fn start(script: Script) -> FakeLlm {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the fake LLM");
        let addr = listener.local_addr().unwrap();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let script = Arc::new(Mutex::new(script));
        let stop = Arc::new(AtomicBool::new(false));
        let (rec, scr, halt) = (requests.clone(), script.clone(), stop.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if halt.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let (rec, scr) = (rec.clone(), scr.clone());
                std::thread::spawn(move || {
                    let _ = serve(conn, &rec, &scr);
                });
            }
        });
        FakeLlm { addr, requests, script, stop }
    }

    /// The `api_base` to configure: `http://127.0.0.1:PORT/v1`.
    pub fn base(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.requests.lock().unwrap().clone()
    }

    pub fn last(&self) -> Recorded {
        self.requests().pop().expect("the fake LLM received no request")
    }

    /// Changes the script for the following requests.
    pub fn set(&self, change: impl FnOnce(&mut Script)) {
        change(&mut self.script.lock().unwrap());
    }
}

impl Drop for FakeLlm {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Unblock `accept` so the loop sees the flag.
        let _ = TcpStream::connect(self.addr);
    }
}

fn serve(conn: TcpStream, requests: &Mutex<Vec<Recorded>>, script: &Mutex<Script>) -> std::io::Result<()> {
    conn.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut line = String::new();
    if reader.read_line(&mut line)? == 0 {
        return Ok(()); // the wake-up connection from Drop
    }
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or_default().to_owned();
    let path = parts.next().unwrap_or_default().to_owned();
    let mut headers = Vec::new();
    loop {
        line.clear();
        if reader.read_line(&mut line)? == 0 {
            break;
        }
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        if let Some((n, v)) = l.split_once(':') {
            headers.push((n.trim().to_ascii_lowercase(), v.trim().to_owned()));
        }
    }
    let len: usize =
        headers.iter().find(|(n, _)| n == "content-length").and_then(|(_, v)| v.parse().ok()).unwrap_or(0);
    let mut raw = vec![0; len];
    reader.read_exact(&mut raw)?;
    let body: Value = serde_json::from_slice(&raw).unwrap_or(Value::Null);
    let req = Recorded { method, path, headers, body };
    requests.lock().unwrap().push(req.clone());

    // Decide the answer under the lock, then answer without it.
    let (plan, failure, step) = {
        let mut s = script.lock().unwrap();
        let failure = if req.key().is_some_and(|k| s.reject_keys.iter().any(|r| r == k)) {
            Some(401)
        } else {
            s.failures.pop_front()
        };
        let routed = req.path.ends_with("/chat/completions") || req.path.ends_with("/messages");
        let step = if failure.is_none() && routed { s.steps.pop_front() } else { None };
        (s.clone(), failure, step)
    };
    let step = step.unwrap_or_else(|| Step { deltas: plan.deltas.clone(), calls: vec![] });
    let mut w = conn;
    std::thread::sleep(plan.delay_head);
    let anthropic = req.path.ends_with("/messages");
    if !req.path.ends_with("/chat/completions") && !anthropic {
        return write_json(&mut w, 404, &json!({"error": {"message": format!("no route {}", req.path)}}));
    }
    if let Some(status) = failure {
        let message = format!("fake failure {status}");
        let body = match anthropic {
            true => json!({"type": "error", "error": {"type": "api_error", "message": message}}),
            false => json!({"error": {"message": message, "type": "fake", "code": status}}),
        };
        return write_json(&mut w, status, &body);
    }
    let (input, output) = plan.usage;
    let text = step.deltas.concat();
    let thought = plan.reasoning.concat();
    let asks = !step.calls.is_empty();
    if req.body["stream"] != true {
        let body = match anthropic {
            true => {
                let mut content = vec![json!({"type": "text", "text": text})];
                if !thought.is_empty() {
                    content.insert(0, json!({"type": "thinking", "thinking": thought, "signature": "sig"}));
                }
                for (id, name, args) in &step.calls {
                    let input: Value = serde_json::from_str(args).unwrap_or(json!({}));
                    content.push(json!({"type": "tool_use", "id": id, "name": name, "input": input}));
                }
                json!({"id": "msg_fake", "type": "message", "role": "assistant", "content": content,
                       "stop_reason": if asks { "tool_use" } else { "end_turn" },
                       "usage": {"input_tokens": input, "output_tokens": output}})
            }
            false => {
                let mut message = json!({"role": "assistant", "content": text});
                if !thought.is_empty() {
                    message["reasoning_content"] = json!(thought);
                }
                if asks {
                    let calls: Vec<Value> = step.calls.iter()
                        .map(|(id, name, args)| json!({"id": id, "type": "function", "function": {"name": name, "arguments": args}}))
                        .collect();
                    message["tool_calls"] = json!(calls);
                }
                json!({"id": "cmpl-fake", "object": "chat.completion",
                       "choices": [{"index": 0, "message": message, "finish_reason": if asks { "tool_calls" } else { "stop" }}],
                       "usage": {"prompt_tokens": input, "completion_tokens": output, "total_tokens": input + output}})
            }
        };
        return write_json(&mut w, 200, &body);
    }
    let framing = if plan.close_delimited { "" } else { "Transfer-Encoding: chunked\r\n" };
    write!(
        w,
        "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n{framing}Connection: close\r\n\r\n"
    )?;
    w.flush()?;
    std::thread::sleep(plan.delay_first);
    let mut frames: Vec<String> = Vec::new();
    if anthropic {
        let event = |name: &str, data: Value| format!("event: {name}\ndata: {data}\n\n");
        frames.push(event(
            "message_start",
            json!({"type": "message_start", "message": {"id": "msg_fake", "type": "message", "role": "assistant",
                   "content": [], "usage": {"input_tokens": input, "output_tokens": 1}}}),
        ));
        // The thinking block, if any, comes first and shifts the others' indexes.
        let first = usize::from(!plan.reasoning.is_empty());
        if first == 1 {
            frames.push(event(
                "content_block_start",
                json!({"type": "content_block_start", "index": 0, "content_block": {"type": "thinking", "thinking": ""}}),
            ));
            for r in &plan.reasoning {
                frames.push(event(
                    "content_block_delta",
                    json!({"type": "content_block_delta", "index": 0, "delta": {"type": "thinking_delta", "thinking": r}}),
                ));
            }
            frames.push(event(
                "content_block_delta",
                json!({"type": "content_block_delta", "index": 0, "delta": {"type": "signature_delta", "signature": "sig"}}),
            ));
            frames.push(event("content_block_stop", json!({"type": "content_block_stop", "index": 0})));
        }
        frames.push(event(
            "content_block_start",
            json!({"type": "content_block_start", "index": first, "content_block": {"type": "text", "text": ""}}),
        ));
        for d in &step.deltas {
            frames.push(event(
                "content_block_delta",
                json!({"type": "content_block_delta", "index": first, "delta": {"type": "text_delta", "text": d}}),
            ));
        }
        frames.push(event("content_block_stop", json!({"type": "content_block_stop", "index": first})));
        for (i, (id, name, args)) in step.calls.iter().enumerate() {
            let index = i + 1 + first;
            frames.push(event(
                "content_block_start",
                json!({"type": "content_block_start", "index": index,
                       "content_block": {"type": "tool_use", "id": id, "name": name, "input": {}}}),
            ));
            for piece in pieces(args) {
                frames.push(event(
                    "content_block_delta",
                    json!({"type": "content_block_delta", "index": index,
                           "delta": {"type": "input_json_delta", "partial_json": piece}}),
                ));
            }
            frames.push(event("content_block_stop", json!({"type": "content_block_stop", "index": index})));
        }
        let stop = if asks { "tool_use" } else { "end_turn" };
        frames.push(event(
            "message_delta",
            json!({"type": "message_delta", "delta": {"stop_reason": stop}, "usage": {"output_tokens": output}}),
        ));
        frames.push(event("message_stop", json!({"type": "message_stop"})));
    } else {
        let chunk = |delta: Value, finish: Value| {
            format!(
                "data: {}\n\n",
                json!({"id": "cmpl-fake", "object": "chat.completion.chunk",
                       "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
            )
        };
        for r in &plan.reasoning {
            frames.push(chunk(
                json!({"role": "assistant", "content": null, "reasoning_content": r}),
                Value::Null,
            ));
        }
        for d in &step.deltas {
            frames.push(chunk(json!({"content": d, "reasoning_content": null}), Value::Null));
        }
        for (index, (id, name, args)) in step.calls.iter().enumerate() {
            frames.push(chunk(
                json!({"tool_calls": [{"index": index, "id": id, "type": "function", "function": {"name": name, "arguments": ""}}]}),
                Value::Null,
            ));
            for piece in pieces(args) {
                frames.push(chunk(
                    json!({"tool_calls": [{"index": index, "function": {"arguments": piece}}]}),
                    Value::Null,
                ));
            }
        }
        if asks {
            frames.push(chunk(json!({}), json!("tool_calls")));
        }
        frames.push(format!(
            "data: {}\n\n",
            json!({"id": "cmpl-fake", "choices": [], "usage": {"prompt_tokens": input, "completion_tokens": output}})
        ));
        frames.push("data: [DONE]\n\n".to_owned());
    }
    for (i, frame) in frames.iter().enumerate() {
        if i > 0 {
            std::thread::sleep(plan.delay_between);
        }
        match plan.close_delimited {
            true => w.write_all(frame.as_bytes())?,
            false => write!(w, "{:x}\r\n{frame}\r\n", frame.len())?,
        }
        w.flush()?;
    }
    if !plan.close_delimited {
        w.write_all(b"0\r\n\r\n")?;
    }
    w.flush()
}

fn write_json(w: &mut TcpStream, status: u16, body: &Value) -> std::io::Result<()> {
    let body = body.to_string();
    write!(
        w,
        "HTTP/1.1 {status} Fake\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    w.flush()
}

/// Points the server at a fake: source `fake` of `kind` with `keys` (plus `extra` fields)
/// and provider `fake/m` with model `m`.
pub fn connect(s: &Server, key: &str, fake: &FakeLlm, kind: &str, keys: &[&str], extra: Value) {
    let mut source = json!({"id": "fake", "type": kind, "key": keys, "api_base": fake.base()});
    for (k, v) in extra.as_object().unwrap() {
        source[k] = v.clone();
    }
    s.expect(&s.call("POST", "/api/v1/provider-sources", key, Some(source)), 200);
    let provider = json!({"id": "fake/m", "provider_source_id": "fake", "model": "m"});
    s.expect(&s.call("POST", "/api/v1/providers", key, Some(provider)), 200);
}
