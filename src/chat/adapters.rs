//! The two LLM adapters, `openai_chat_completion` (any OpenAI-compatible server) and
//! `anthropic_chat_completion` (the Messages API), streaming or not, behind one
//! [`generate`] that owns what both share: keys, retries and the HTTP agents.
//!
//! Every call has a connect timeout, a time-to-first-byte timeout (the source's `timeout`)
//! and a per-read timeout while streaming. The source's `key` list is rotated on 401/429
//! (`$NAME` and `${NAME}` entries are read from the environment here, when used, under
//! the rule of [`config::secret_ref_allowed`]); 429, 5xx and timeouts are retried
//! `request_max_retries` times with a growing pause. Errors are returned as text for the
//! chat to show, never as a failed request.
//!
//! [`request`] is one step of the agent loop (`chat::run`): the conversation as
//! [`Message`]s, the tools offered ([`Offer`]), and back the text, the usage and the tool
//! calls the model asked for, assembled from streamed fragments by [`CallAssembler`].
//! Each wire format has its own translation of the calls and their results (OpenAI:
//! `tool_calls` and `role: tool` messages; Anthropic: `tool_use` and `tool_result`
//! blocks). A request that offers no tools ([`generate`], or a persona without tools) sends
//! exactly the body it always did, so a chat without tools costs what it did.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use serde_json::{Value, json};

use super::provider::{Adapter, Delta, Message, Offer, Provider, Step, ToolCall, ToolSpec, Turn, Usage};
use crate::config;

/// An upstream SSE line longer than this is cut: one line must not grow memory unbounded.
const MAX_LINE: u64 = 1 << 20;
/// The most a provider's stream may send for one reply, and for how long (a long answer
/// is tens of kilobytes and a few minutes).
const MAX_STREAM_BYTES: usize = 2 << 20;
const MAX_STREAM_TIME: std::time::Duration = std::time::Duration::from_secs(600);
/// Tool calls one answer may ask for; more are dropped (a model asking for hundreds at once
/// is broken or abused, and each call costs a tool run).
pub const MAX_CALLS_PER_STEP: usize = 32;
/// The arguments of one call, as streamed; beyond this the call's arguments are cut (and
/// then fail to parse, which the model is told).
const MAX_ARGUMENTS: usize = 256 << 10;

/// A key from the source's list: a literal key (`None` when empty), or `$NAME` / `${NAME}`
/// read through `env` (the process environment, or a test's map). A reference outside
/// [`config::SECRET_REF_RULE`] (stored before the rule, or `ASTRBOT_SECRET_ENV` changed
/// since) and an unset or empty variable are errors naming it: a request is never sent
/// with an empty credential, which the upstream would answer with a misleading 401.
pub fn resolve_key(entry: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<Option<String>, String> {
    let Some(name) = config::secret_ref(entry) else {
        return Ok(Some(entry.to_owned()).filter(|v| !v.is_empty()));
    };
    if !config::secret_ref_allowed(name, env) {
        return Err(config::refused_ref(entry));
    }
    match env(name).filter(|v| !v.is_empty()) {
        Some(v) => Ok(Some(v)),
        None => Err(format!("environment variable {name} is not set")),
    }
}

/// Every key of a provider, resolved; the first unresolvable entry is the error.
fn resolve_keys(entries: &[String], env: &dyn Fn(&str) -> Option<String>) -> Result<Vec<String>, String> {
    let mut keys = Vec::new();
    for entry in entries {
        keys.extend(resolve_key(entry, env)?);
    }
    Ok(keys)
}

enum Failure {
    /// Worth another try (429, 5xx, timeouts, connection errors); `rotate` for 401/429.
    Retry {
        message: String,
        rotate: bool,
    },
    Fatal(String),
}

/// One agent per timeout and proxy, shared: an agent holds the TLS setup and a pool of
/// connections, too costly to build for every chat.
fn agent(provider: &Provider) -> Result<ureq::Agent, String> {
    static AGENTS: OnceLock<Mutex<HashMap<(u64, String), ureq::Agent>>> = OnceLock::new();
    let key = (provider.timeout.as_secs(), provider.proxy.clone());
    let agents = AGENTS.get_or_init(|| Mutex::new(HashMap::new()));
    if let Some(a) = agents.lock().unwrap_or_else(|e| e.into_inner()).get(&key) {
        return Ok(a.clone());
    }
    let built = build_agent(provider)?;
    let mut map = agents.lock().unwrap_or_else(|e| e.into_inner());
    if map.len() > 32 {
        map.clear();
    }
    map.insert(key, built.clone());
    Ok(built)
}

fn build_agent(provider: &Provider) -> Result<ureq::Agent, String> {
    let first_byte = provider.timeout;
    let mut config = ureq::Agent::config_builder()
        .timeout_connect(Some(Duration::from_secs(10)))
        .timeout_recv_response(Some(first_byte))
        .timeout_per_read(Some(first_byte.max(Duration::from_secs(30))))
        .http_status_as_error(false);
    if !provider.proxy.is_empty() {
        let proxy = ureq::Proxy::new(&provider.proxy).map_err(|e| format!("invalid proxy: {e}"))?;
        config = config.proxy(Some(proxy));
    }
    Ok(config.build().into())
}

/// Sends one request without tools to the provider, streaming deltas to `on_delta`.
pub fn generate(
    provider: &Provider,
    model_override: Option<&str>,
    turns: &[Turn],
    stream: bool,
    retries: u32,
    on_delta: &mut dyn FnMut(&str),
) -> Result<Usage, String> {
    let messages: Vec<Message> = turns.iter().cloned().map(Message::Turn).collect();
    let mut text_only = |d: Delta<'_>| {
        if let Delta::Text(t) = d {
            on_delta(t);
        }
    };
    request(provider, model_override, &messages, Offer::None, stream, retries, &mut text_only)
        .map(|s| s.usage)
}

/// Sends one request (one step of an agent) to the provider, streaming text and reasoning
/// deltas to `on_delta`, and returns the usage, the whole text and reasoning, and the tool
/// calls asked for.
pub fn request(
    provider: &Provider,
    model_override: Option<&str>,
    messages: &[Message],
    offer: Offer<'_>,
    stream: bool,
    retries: u32,
    on_delta: &mut dyn FnMut(Delta<'_>),
) -> Result<Step, String> {
    let model = model_override.unwrap_or(&provider.model);
    let keys = resolve_keys(&provider.keys, &config::process_env)?;
    let agent = agent(provider)?;
    // Start from the key that last worked for this source, so a dead first key does not
    // cost every request a retry.
    let source = provider.rotation_id();
    let mut key_index = next_key(source, None);
    let mut attempt = 0u32;
    loop {
        let key = keys.get(key_index % keys.len().max(1)).map(String::as_str);
        let mut text = String::new();
        let mut reasoning = String::new();
        let mut signature = String::new();
        let mut sink = |d: Delta<'_>| {
            match d {
                Delta::Text(t) => text.push_str(t),
                Delta::Reasoning(r) => reasoning.push_str(r),
                Delta::Signature(s) => signature.push_str(s),
            }
            on_delta(d);
        };
        let call = Call { agent: &agent, provider, model, key, messages, offer, stream };
        let result = match provider.adapter {
            Adapter::Anthropic => anthropic(&call, &mut sink),
            Adapter::OpenAi => openai(&call, &mut sink),
        };
        let delivered = !text.is_empty() || !reasoning.is_empty();
        match result {
            Ok((usage, calls)) => {
                next_key(source, Some(key_index));
                return Ok(Step { usage, text, reasoning, signature, calls });
            }
            Err(Failure::Fatal(m)) => return Err(m),
            // Once text has reached the client a retry would repeat it.
            Err(Failure::Retry { message, .. }) if delivered || attempt >= retries => return Err(message),
            Err(Failure::Retry { message, rotate }) => {
                attempt += 1;
                if rotate {
                    key_index += 1;
                }
                log::info!("LLM request failed ({message}); retry {attempt} of {retries}");
                std::thread::sleep(Duration::from_millis(200 * (1 << attempt.min(5))));
            }
        }
    }
}

/// One attempt's request, as both adapters take it.
struct Call<'a> {
    agent: &'a ureq::Agent,
    provider: &'a Provider,
    model: &'a str,
    key: Option<&'a str>,
    messages: &'a [Message],
    offer: Offer<'a>,
    stream: bool,
}

/// Assembles the tool calls of one answer from their fragments, keyed by the stream's
/// index (OpenAI's `tool_calls[].index`, Anthropic's block `index`), in the order they
/// started. The id and name are taken from the first fragment that has them (a provider
/// that repeats them on every fragment must not double them); only the arguments are
/// concatenated. Bounded: [`MAX_CALLS_PER_STEP`] calls, [`MAX_ARGUMENTS`] bytes each.
#[derive(Debug, Default)]
pub struct CallAssembler {
    calls: Vec<(i64, ToolCall)>,
}

impl CallAssembler {
    fn slot(&mut self, key: i64) -> Option<&mut ToolCall> {
        let pos = match self.calls.iter().position(|(k, _)| *k == key) {
            Some(pos) => pos,
            None if self.calls.len() < MAX_CALLS_PER_STEP => {
                self.calls.push((key, ToolCall::default()));
                self.calls.len() - 1
            }
            None => return None,
        };
        Some(&mut self.calls[pos].1)
    }

    /// A fragment of call `key`: its id and name if it has them, a piece of its arguments.
    pub fn fragment(&mut self, key: i64, id: Option<&str>, name: Option<&str>, arguments: Option<&str>) {
        let Some(call) = self.slot(key) else { return };
        if let Some(id) = id.filter(|v| !v.is_empty() && call.id.is_empty()) {
            call.id = id.to_owned();
        }
        if let Some(name) = name.filter(|v| !v.is_empty() && call.name.is_empty()) {
            call.name = name.to_owned();
        }
        if let Some(piece) = arguments {
            let room = MAX_ARGUMENTS.saturating_sub(call.arguments.len());
            let mut end = piece.len().min(room);
            while !piece.is_char_boundary(end) {
                end -= 1;
            }
            call.arguments.push_str(&piece[..end]);
        }
    }

    /// One OpenAI `delta.tool_calls[]` entry at `position` in its array (the key when a
    /// provider leaves `index` out, as AstrBot does).
    pub fn openai(&mut self, position: usize, entry: &Value) {
        let key = entry["index"].as_i64().unwrap_or(position as i64);
        let f = &entry["function"];
        self.fragment(key, entry["id"].as_str(), f["name"].as_str(), f["arguments"].as_str());
    }

    /// The calls in the order they started. Results are matched to calls by id, so a call
    /// without an id gets one (`call_<n>`) and a repeated id is made unique (`<id>_<n>`).
    pub fn finish(self) -> Vec<ToolCall> {
        let mut out: Vec<ToolCall> = Vec::with_capacity(self.calls.len());
        for (i, (_, mut call)) in self.calls.into_iter().enumerate() {
            if call.id.is_empty() {
                call.id = format!("call_{i}");
            }
            if out.iter().any(|c| c.id == call.id) {
                call.id = format!("{}_{i}", call.id);
            }
            out.push(call);
        }
        out
    }
}

/// The remembered key position of a source; `Some(i)` records one that worked.
fn next_key(source: &str, worked: Option<usize>) -> usize {
    static WORKING: OnceLock<Mutex<HashMap<String, usize>>> = OnceLock::new();
    let mut map =
        WORKING.get_or_init(|| Mutex::new(HashMap::new())).lock().unwrap_or_else(|e| e.into_inner());
    match worked {
        Some(i) => {
            map.insert(source.to_owned(), i);
            i
        }
        None => map.get(source).copied().unwrap_or(0),
    }
}

fn classify(status: u16, body: &str) -> Failure {
    let detail = serde_json::from_str::<Value>(body)
        .ok()
        .and_then(|v| v["error"]["message"].as_str().or(v["message"].as_str()).map(str::to_owned))
        .unwrap_or_else(|| body.chars().take(300).collect());
    let message = format!("Error code: {status} - {detail}");
    match status {
        401 | 403 => Failure::Retry { message, rotate: true },
        429 => Failure::Retry { message, rotate: true },
        500..=599 => Failure::Retry { message, rotate: false },
        _ => Failure::Fatal(message),
    }
}

fn transport(e: ureq::Error) -> Failure {
    Failure::Retry { message: format!("request failed: {e}"), rotate: false }
}

/// The POST to the provider's endpoint with its custom headers.
fn post(call: &Call<'_>) -> ureq::RequestBuilder<ureq::typestate::WithBody> {
    let mut req = call.agent.post(call.provider.endpoint_url());
    for (k, v) in &call.provider.custom_headers {
        req = req.header(k.as_str(), v.as_str());
    }
    req.header("Accept-Encoding", "identity")
}

/// Adds the source's `custom_extra_body`, sends the JSON request and turns a non-2xx
/// answer into a classified failure.
fn send(
    req: ureq::RequestBuilder<ureq::typestate::WithBody>,
    provider: &Provider,
    mut body: Value,
) -> Result<ureq::Body, Failure> {
    for (k, v) in &provider.custom_extra_body {
        body[k] = v.clone();
    }
    let resp = req.content_type("application/json").send(body.to_string()).map_err(transport)?;
    let status = resp.status().as_u16();
    if !(200..300).contains(&status) {
        let text = resp.into_body().read_to_string().unwrap_or_default();
        return Err(classify(status, &text));
    }
    Ok(resp.into_body())
}

/// Reads `data:` lines of an SSE body, each capped, until `[DONE]` or the end.
fn sse_lines(body: impl Read, mut on_data: impl FnMut(&str) -> bool) -> Result<(), Failure> {
    let mut reader = BufReader::new(body);
    let mut line = Vec::new();
    let started = std::time::Instant::now();
    let mut total = 0usize;
    loop {
        line.clear();
        let n = (&mut reader)
            .take(MAX_LINE)
            .read_until(b'\n', &mut line)
            .map_err(|e| Failure::Retry { message: format!("stream read failed: {e}"), rotate: false })?;
        if n == 0 {
            return Ok(());
        }
        // An upstream that never ends its stream (broken, or pointed at on purpose) must not
        // grow the reply, the stored history and our memory without bound: the reply ends
        // with what came within the budget.
        total = total.saturating_add(n);
        if total > MAX_STREAM_BYTES || started.elapsed() > MAX_STREAM_TIME {
            log::warn!("provider stream cut after {total} bytes and {:?}", started.elapsed());
            return Ok(());
        }
        let text = String::from_utf8_lossy(&line);
        let Some(data) = text.trim_end().strip_prefix("data:") else { continue };
        let data = data.trim();
        if data == "[DONE]" || !on_data(data) {
            return Ok(());
        }
    }
}

/// A whole (non-streamed) JSON answer.
fn read_json(mut body: ureq::Body) -> Result<Value, Failure> {
    let text = body
        .read_to_string()
        .map_err(|e| Failure::Retry { message: format!("response read failed: {e}"), rotate: false })?;
    serde_json::from_str(&text)
        .map_err(|e| Failure::Retry { message: format!("response is not JSON: {e}"), rotate: false })
}

fn openai_usage(u: &Value) -> Usage {
    let cached = u["prompt_tokens_details"]["cached_tokens"].as_u64().unwrap_or(0);
    Usage {
        input: u["prompt_tokens"].as_u64().unwrap_or(0).saturating_sub(cached),
        output: u["completion_tokens"].as_u64().unwrap_or(0),
        cached,
    }
}

/// The conversation in OpenAI's format: the model's calls as one assistant message with
/// `tool_calls` (content `null` when it said nothing), then one `role: tool` message per
/// result.
pub fn openai_messages(messages: &[Message]) -> Vec<Value> {
    let mut out = Vec::with_capacity(messages.len());
    for m in messages {
        match m {
            Message::Turn(t) => out.push(json!({"role": t.role, "content": t.content})),
            Message::Calls { text, reasoning, calls, .. } => {
                let calls: Vec<Value> = calls
                    .iter()
                    .map(|c| json!({"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}))
                    .collect();
                let content = if text.is_empty() { Value::Null } else { json!(text) };
                let mut message = json!({"role": "assistant", "content": content, "tool_calls": calls});
                if !reasoning.is_empty() {
                    message["reasoning_content"] = json!(reasoning);
                }
                out.push(message);
            }
            Message::Results(results) => out.extend(
                results
                    .iter()
                    .map(|(id, content)| json!({"role": "tool", "tool_call_id": id, "content": content})),
            ),
        }
    }
    out
}

/// Tools in OpenAI's format (`description` left out when empty, as AstrBot does).
pub fn openai_tools(tools: &[ToolSpec]) -> Value {
    Value::Array(
        tools
            .iter()
            .map(|t| {
                let mut f = json!({"name": t.name});
                if !t.description.is_empty() {
                    f["description"] = json!(t.description);
                }
                f["parameters"] = t.parameters.clone();
                json!({"type": "function", "function": f})
            })
            .collect(),
    )
}

fn openai_body(call: &Call<'_>) -> Value {
    let mut body =
        json!({"model": call.model, "messages": openai_messages(call.messages), "stream": call.stream});
    if call.stream {
        body["stream_options"] = json!({"include_usage": true});
    }
    // The forced final answer offers nothing: OpenAI takes the earlier calls and results in
    // the conversation without a `tools` list.
    if let Offer::Auto(tools) = call.offer
        && !tools.is_empty()
    {
        body["tools"] = openai_tools(tools);
        body["tool_choice"] = json!("auto");
    }
    body
}

/// A whole OpenAI completion's tool calls (`message.tool_calls`).
fn openai_calls(message: &Value) -> Vec<ToolCall> {
    let mut calls = CallAssembler::default();
    for (i, c) in message["tool_calls"].as_array().into_iter().flatten().enumerate() {
        let f = &c["function"];
        calls.fragment(i as i64, c["id"].as_str(), f["name"].as_str(), f["arguments"].as_str());
    }
    calls.finish()
}

/// A reasoning model's thoughts in an OpenAI-compatible message or delta: DeepSeek's (and
/// most compatible servers') `reasoning_content`, else `reasoning` (OpenRouter, vLLM).
fn openai_reasoning(m: &Value) -> Option<&str> {
    m["reasoning_content"].as_str().or(m["reasoning"].as_str()).filter(|r| !r.is_empty())
}

fn openai(call: &Call<'_>, on_delta: &mut dyn FnMut(Delta<'_>)) -> Result<(Usage, Vec<ToolCall>), Failure> {
    let mut req = post(call);
    if let Some(k) = call.key {
        req = req.header("Authorization", format!("Bearer {k}"));
    }
    let body = send(req, call.provider, openai_body(call))?;
    if !call.stream {
        let v = read_json(body)?;
        let message = &v["choices"][0]["message"];
        if let Some(r) = openai_reasoning(message) {
            on_delta(Delta::Reasoning(r));
        }
        let text = message["content"].as_str().unwrap_or_default();
        if !text.is_empty() {
            on_delta(Delta::Text(text));
        }
        return Ok((openai_usage(&v["usage"]), openai_calls(message)));
    }
    let mut state = Streamed::default();
    sse_lines(body.into_reader(), |data| {
        if let Ok(v) = serde_json::from_str::<Value>(data) {
            state.openai_chunk(&v, on_delta);
        }
        true
    })?;
    // Decided by the calls assembled, not `finish_reason`: some compatible servers say
    // `stop` after tool calls.
    Ok((state.usage, state.calls.finish()))
}

/// What a streamed answer has said so far, besides its text (delivered as it comes).
#[derive(Debug, Default)]
struct Streamed {
    usage: Usage,
    calls: CallAssembler,
    error: Option<String>,
    /// The Anthropic block whose signature is kept.
    signed_block: Option<i64>,
}

impl Streamed {
    /// One OpenAI chunk: reasoning, text, tool-call fragments, usage.
    fn openai_chunk(&mut self, v: &Value, on_delta: &mut dyn FnMut(Delta<'_>)) {
        let delta = &v["choices"][0]["delta"];
        if let Some(r) = openai_reasoning(delta) {
            on_delta(Delta::Reasoning(r));
        }
        if let Some(d) = delta["content"].as_str().filter(|d| !d.is_empty()) {
            on_delta(Delta::Text(d));
        }
        if let Some(fragments) = delta["tool_calls"].as_array() {
            fragments.iter().enumerate().for_each(|(i, f)| self.calls.openai(i, f));
        }
        if v["usage"].is_object() {
            self.usage = openai_usage(&v["usage"]);
        }
    }

    /// One Anthropic event; `false` when the stream is over (`message_stop`, `error`).
    fn anthropic_event(&mut self, v: &Value, on_delta: &mut dyn FnMut(Delta<'_>)) -> bool {
        match v["type"].as_str() {
            Some("content_block_start") if v["content_block"]["type"] == "tool_use" => {
                let b = &v["content_block"];
                // Anthropic starts with `input: {}` and streams the input; a compatible
                // server that sends it whole here is taken at its word.
                let whole = b["input"].as_object().filter(|i| !i.is_empty()).map(|_| b["input"].to_string());
                let key = v["index"].as_i64().unwrap_or(-1);
                self.calls.fragment(key, b["id"].as_str(), b["name"].as_str(), whole.as_deref());
            }
            Some("content_block_delta") => match v["delta"]["type"].as_str() {
                Some("input_json_delta") => {
                    let key = v["index"].as_i64().unwrap_or(-1);
                    // Only a block that started as `tool_use` takes arguments.
                    if self.calls.calls.iter().any(|(k, _)| *k == key) {
                        self.calls.fragment(key, None, None, v["delta"]["partial_json"].as_str());
                    }
                }
                Some("text_delta") | None => {
                    if let Some(d) = v["delta"]["text"].as_str().filter(|d| !d.is_empty()) {
                        on_delta(Delta::Text(d));
                    }
                }
                // A `thinking` block's text is reasoning; its signature goes back with it,
                // the first block's only (one signature signs one block).
                Some("thinking_delta") => {
                    if let Some(d) = v["delta"]["thinking"].as_str().filter(|d| !d.is_empty()) {
                        on_delta(Delta::Reasoning(d));
                    }
                }
                Some("signature_delta") => {
                    let index = v["index"].as_i64().unwrap_or(-1);
                    if *self.signed_block.get_or_insert(index) == index
                        && let Some(s) = v["delta"]["signature"].as_str()
                    {
                        on_delta(Delta::Signature(s));
                    }
                }
                _ => {}
            },
            Some("message_start") => anthropic_usage(&v["message"]["usage"], &mut self.usage),
            Some("message_delta") => anthropic_usage(&v["usage"], &mut self.usage),
            Some("message_stop") => return false,
            Some("error") => {
                self.error = Some(v["error"]["message"].as_str().unwrap_or("stream error").to_owned());
                return false;
            }
            _ => {}
        }
        true
    }
}

/// An OpenAI-style content part as an Anthropic block: image data URLs as base64 images.
fn anthropic_block(p: &Value) -> Value {
    match p["type"].as_str() {
        Some("image_url") => {
            let url = p["image_url"]["url"].as_str().unwrap_or_default();
            let (meta, data) = url.split_once(',').unwrap_or(("", ""));
            let media = meta.trim_start_matches("data:").trim_end_matches(";base64");
            json!({"type": "image", "source": {"type": "base64", "media_type": media, "data": data}})
        }
        _ => json!({"type": "text", "text": p["text"]}),
    }
}

/// The conversation in Anthropic's format, and the joined system turns. The model's calls
/// are an assistant message of `tool_use` blocks (after its text, if any), their results
/// one user message of `tool_result` blocks; a user turn right after results joins that
/// message as a text block (the API wants the roles to alternate, results first).
pub fn anthropic_messages(messages: &[Message]) -> (Vec<Value>, Vec<String>) {
    let mut system = Vec::new();
    let mut out: Vec<Value> = Vec::with_capacity(messages.len());
    let mut after_results = false;
    for m in messages {
        match m {
            Message::Turn(t) if t.role == "system" => {
                system.extend(t.content.as_str().map(str::to_owned));
                continue;
            }
            Message::Turn(t) => {
                let content = match &t.content {
                    Value::Array(parts) => Value::Array(parts.iter().map(anthropic_block).collect()),
                    other => other.clone(),
                };
                let previous = out.last_mut().filter(|_| after_results && t.role == "user");
                if let Some(Value::Array(blocks)) = previous.map(|p| &mut p["content"]) {
                    match content {
                        Value::Array(more) => blocks.extend(more),
                        text => blocks.push(json!({"type": "text", "text": text})),
                    }
                } else {
                    out.push(json!({"role": t.role, "content": content}));
                }
            }
            Message::Calls { text, reasoning, signature, calls } => {
                let mut blocks = Vec::with_capacity(calls.len() + 2);
                // Unsigned thoughts cannot go back: the API would refuse them.
                if !signature.is_empty() {
                    blocks.push(json!({"type": "thinking", "thinking": reasoning, "signature": signature}));
                }
                if !text.is_empty() {
                    blocks.push(json!({"type": "text", "text": text}));
                }
                for c in calls {
                    // The input must be an object; arguments the model garbled were answered
                    // with an error result, and stand as `{}` here.
                    let input = serde_json::from_str::<Value>(&c.arguments)
                        .ok()
                        .filter(Value::is_object)
                        .unwrap_or_else(|| json!({}));
                    blocks.push(json!({"type": "tool_use", "id": c.id, "name": c.name, "input": input}));
                }
                out.push(json!({"role": "assistant", "content": blocks}));
            }
            Message::Results(results) => {
                let blocks: Vec<Value> = results
                    .iter()
                    .map(|(id, content)| {
                        let content = if content.is_empty() { "<empty response>" } else { content.as_str() };
                        json!({"type": "tool_result", "tool_use_id": id, "content": content})
                    })
                    .collect();
                out.push(json!({"role": "user", "content": blocks}));
                after_results = true;
                continue;
            }
        }
        after_results = false;
    }
    (out, system)
}

/// Tools in Anthropic's format: only the schema's `properties` and `required` survive,
/// under `type: object`, as AstrBot sends them.
pub fn anthropic_tools(tools: &[ToolSpec]) -> Value {
    Value::Array(
        tools
            .iter()
            .map(|t| {
                let mut schema = json!({"type": "object", "properties": t.parameters.get("properties").cloned().unwrap_or_else(|| json!({}))});
                if let Some(required) = t.parameters.get("required").filter(|r| r.is_array()) {
                    schema["required"] = required.clone();
                }
                let mut tool = json!({"name": t.name});
                if !t.description.is_empty() {
                    tool["description"] = json!(t.description);
                }
                tool["input_schema"] = schema;
                tool
            })
            .collect(),
    )
}

/// The Messages API's body: system turns joined into `system`, image data URLs as base64
/// image blocks, the tools when offered.
fn anthropic_body(call: &Call<'_>) -> Value {
    let (messages, system) = anthropic_messages(call.messages);
    let mut body =
        json!({"model": call.model, "max_tokens": 4096, "messages": messages, "stream": call.stream});
    if !system.is_empty() {
        body["system"] = json!(system.join("\n\n"));
    }
    match call.offer {
        Offer::Auto(tools) if !tools.is_empty() => body["tools"] = anthropic_tools(tools),
        // A conversation holding `tool_use` blocks must define its tools: the final answer
        // lists them and forbids their use.
        Offer::Final(tools) if !tools.is_empty() => {
            body["tools"] = anthropic_tools(tools);
            body["tool_choice"] = json!({"type": "none"});
        }
        _ => {}
    }
    body
}

/// Anthropic reports usage piecemeal (`message_start`, then `message_delta`): each report
/// overrides only the counts it has.
fn anthropic_usage(u: &Value, usage: &mut Usage) {
    if let Some(n) = u["input_tokens"].as_u64() {
        usage.input = n;
    }
    if let Some(n) = u["cache_read_input_tokens"].as_u64() {
        usage.cached = n;
    }
    if let Some(n) = u["output_tokens"].as_u64() {
        usage.output = n;
    }
}

fn anthropic(
    call: &Call<'_>,
    on_delta: &mut dyn FnMut(Delta<'_>),
) -> Result<(Usage, Vec<ToolCall>), Failure> {
    let mut req = post(call).header("anthropic-version", "2023-06-01");
    if let Some(k) = call.key {
        req = req.header("x-api-key", k);
    }
    let body = send(req, call.provider, anthropic_body(call))?;
    let mut usage = Usage::default();
    if !call.stream {
        let v = read_json(body)?;
        let blocks = v["content"].as_array().map(Vec::as_slice).unwrap_or_default();
        let thinking: String = blocks
            .iter()
            .filter(|b| b["type"] == "thinking")
            .filter_map(|b| b["thinking"].as_str())
            .collect();
        if !thinking.is_empty() {
            on_delta(Delta::Reasoning(&thinking));
        }
        let first_signature =
            blocks.iter().find(|b| b["type"] == "thinking").and_then(|b| b["signature"].as_str());
        if let Some(s) = first_signature {
            on_delta(Delta::Signature(s));
        }
        let text: String =
            blocks.iter().filter(|b| b["type"] == "text").filter_map(|b| b["text"].as_str()).collect();
        if !text.is_empty() {
            on_delta(Delta::Text(&text));
        }
        let mut calls = CallAssembler::default();
        for (i, b) in blocks.iter().enumerate().filter(|(_, b)| b["type"] == "tool_use") {
            let input = if b["input"].is_null() { String::new() } else { b["input"].to_string() };
            calls.fragment(i as i64, b["id"].as_str(), b["name"].as_str(), Some(&input));
        }
        anthropic_usage(&v["usage"], &mut usage);
        return Ok((usage, calls.finish()));
    }
    let mut state = Streamed::default();
    sse_lines(body.into_reader(), |data| match serde_json::from_str::<Value>(data) {
        Ok(v) => state.anthropic_event(&v, on_delta),
        Err(_) => true,
    })?;
    match state.error {
        Some(e) => Err(Failure::Fatal(e)),
        None => Ok((state.usage, state.calls.finish())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_resolve_from_the_environment_under_the_rule() {
        let env = |name: &str| match name {
            "OPENAI_API_KEY" => Some("sk-from-env".to_owned()),
            "MY_TOKEN" => Some("tok-from-env".to_owned()),
            "EMPTY_API_KEY" => Some(String::new()),
            "ASTRBOT_ADMIN_PASSWORD" => Some("hunter2".to_owned()),
            "ASTRBOT_SECRET_ENV" => Some(" OTHER , MY_TOKEN".to_owned()),
            _ => None,
        };
        assert_eq!(resolve_key("$OPENAI_API_KEY", &env).unwrap().as_deref(), Some("sk-from-env"));
        assert_eq!(resolve_key("${OPENAI_API_KEY}", &env).unwrap().as_deref(), Some("sk-from-env"));
        assert_eq!(resolve_key("$MY_TOKEN", &env).unwrap().as_deref(), Some("tok-from-env"), "listed");
        assert_eq!(
            resolve_key("$MISSING_API_KEY", &env),
            Err("environment variable MISSING_API_KEY is not set".into())
        );
        assert_eq!(
            resolve_key("$EMPTY_API_KEY", &env),
            Err("environment variable EMPTY_API_KEY is not set".into())
        );
        assert_eq!(
            resolve_key("$ASTRBOT_ADMIN_PASSWORD", &env),
            Err("$NAME references must end in _API_KEY or be listed in ASTRBOT_SECRET_ENV (got $ASTRBOT_ADMIN_PASSWORD)".into())
        );
        assert_eq!(resolve_key("sk-plain", &env).unwrap().as_deref(), Some("sk-plain"));
        assert_eq!(resolve_key("", &env), Ok(None));
        let provider = Provider::parse(&json!({"key": ["sk-a", "", "$OPENAI_API_KEY"]}));
        assert_eq!(resolve_keys(&provider.keys, &env).unwrap(), ["sk-a", "sk-from-env"]);
        let unset = Provider::parse(&json!({"key": ["sk-a", "$UNSET_API_KEY"]}));
        assert_eq!(
            resolve_keys(&unset.keys, &env),
            Err("environment variable UNSET_API_KEY is not set".into())
        );
    }

    fn turn(role: &'static str, content: Value) -> Message {
        Message::Turn(Turn { role, content })
    }

    fn call(id: &str, name: &str, arguments: &str) -> ToolCall {
        ToolCall { id: id.into(), name: name.into(), arguments: arguments.into() }
    }

    fn spec(name: &str) -> ToolSpec {
        ToolSpec {
            name: name.into(),
            description: format!("{name} does it"),
            parameters: json!({"type": "object", "$schema": "x", "properties": {"a": {"type": "number"}}, "required": ["a"]}),
        }
    }

    #[test]
    fn openai_tool_call_fragments_assemble_by_index() {
        // The reference's two parallel calls (mcp.md §3.1), then a provider that repeats the
        // id and name on every fragment, and one that leaves `index` out.
        let chunks = [
            json!({"choices": [{"index": 0, "delta": {"role": "assistant", "content": null, "tool_calls": [{"index": 0, "id": "call_A", "type": "function", "function": {"name": "get_weather", "arguments": ""}}]}}]}),
            json!({"choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "function": {"arguments": "{\"city\":"}}]}}]}),
            json!({"choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "function": {"arguments": "\"Paris\"}"}}]}}]}),
            json!({"choices": [{"index": 0, "delta": {"tool_calls": [{"index": 1, "id": "call_B", "type": "function", "function": {"name": "get_time", "arguments": ""}}]}}]}),
            json!({"choices": [{"index": 0, "delta": {"tool_calls": [{"index": 1, "id": "call_B", "function": {"name": "get_time", "arguments": "{}"}}]}}]}),
            json!({"choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]}),
            json!({"choices": [], "usage": {"prompt_tokens": 9, "completion_tokens": 4}}),
        ];
        let mut state = Streamed::default();
        let mut text = String::new();
        for c in &chunks {
            state.openai_chunk(c, &mut |d| {
                if let Delta::Text(t) = d {
                    text.push_str(t)
                }
            });
        }
        assert_eq!(text, "");
        assert_eq!(state.usage, Usage { input: 9, output: 4, cached: 0 });
        assert_eq!(
            state.calls.finish(),
            [call("call_A", "get_weather", "{\"city\":\"Paris\"}"), call("call_B", "get_time", "{}")]
        );

        let mut no_index = CallAssembler::default();
        no_index.openai(0, &json!({"function": {"name": "a", "arguments": "{}"}}));
        no_index.openai(1, &json!({"id": "x", "function": {"name": "b", "arguments": "{\"k\":1}"}}));
        no_index.openai(2, &json!({"id": "x", "function": {"name": "c"}}));
        assert_eq!(
            no_index.finish(),
            [call("call_0", "a", "{}"), call("x", "b", "{\"k\":1}"), call("x_2", "c", "")]
        );
    }

    #[test]
    fn the_assembler_is_bounded() {
        let mut many = CallAssembler::default();
        for i in 0..100 {
            many.fragment(i, Some("id"), Some("t"), Some("{}"));
        }
        assert_eq!(many.finish().len(), MAX_CALLS_PER_STEP);
        let mut long = CallAssembler::default();
        let piece = "é".repeat(1000);
        for _ in 0..200 {
            long.fragment(0, None, Some("t"), Some(&piece));
        }
        let args = &long.finish()[0].arguments;
        assert!(args.len() <= MAX_ARGUMENTS && args.len() > MAX_ARGUMENTS - 4, "{}", args.len());
    }

    #[test]
    fn anthropic_tool_use_blocks_assemble_from_partial_json() {
        let events = [
            json!({"type": "message_start", "message": {"usage": {"input_tokens": 12, "output_tokens": 1}}}),
            json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
            json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Let me check."}}),
            json!({"type": "content_block_stop", "index": 0}),
            json!({"type": "content_block_start", "index": 1, "content_block": {"type": "tool_use", "id": "toolu_01", "name": "get_weather", "input": {}}}),
            json!({"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": "{\"city\": \"Pa"}}),
            json!({"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": "ris\"}"}}),
            json!({"type": "content_block_delta", "index": 0, "delta": {"type": "input_json_delta", "partial_json": "stray"}}),
            json!({"type": "content_block_stop", "index": 1}),
            json!({"type": "content_block_start", "index": 2, "content_block": {"type": "tool_use", "id": "toolu_02", "name": "now", "input": {}}}),
            json!({"type": "content_block_start", "index": 3, "content_block": {"type": "tool_use", "id": "toolu_03", "name": "whole", "input": {"q": 1}}}),
            json!({"type": "message_delta", "delta": {"stop_reason": "tool_use"}, "usage": {"output_tokens": 30}}),
        ];
        let mut state = Streamed::default();
        let mut text = String::new();
        for e in &events {
            assert!(state.anthropic_event(e, &mut |d| {
                if let Delta::Text(t) = d {
                    text.push_str(t)
                }
            }));
        }
        assert!(!state.anthropic_event(&json!({"type": "message_stop"}), &mut |_| {}));
        assert_eq!(text, "Let me check.");
        assert_eq!(state.usage, Usage { input: 12, output: 30, cached: 0 });
        assert_eq!(
            state.calls.finish(),
            [
                call("toolu_01", "get_weather", "{\"city\": \"Paris\"}"),
                call("toolu_02", "now", ""),
                call("toolu_03", "whole", "{\"q\":1}")
            ]
        );
    }

    #[test]
    fn deepseek_reasoning_content_is_reasoning() {
        // DeepSeek's reasoner streams `reasoning_content` first (content null), then content
        // (reasoning_content null); some servers name the field `reasoning`.
        let chunks = [
            json!({"choices": [{"index": 0, "delta": {"role": "assistant", "content": null, "reasoning_content": "Let me "}}]}),
            json!({"choices": [{"index": 0, "delta": {"content": null, "reasoning_content": "think."}}]}),
            json!({"choices": [{"index": 0, "delta": {"content": "Hi", "reasoning_content": null}}]}),
            json!({"choices": [{"index": 0, "delta": {"content": "!", "reasoning": ""}}]}),
            json!({"choices": [{"index": 0, "delta": {"reasoning": " (more)"}}]}),
        ];
        let mut state = Streamed::default();
        let (mut reasoning, mut text) = (String::new(), String::new());
        for c in &chunks {
            state.openai_chunk(c, &mut |d| match d {
                Delta::Reasoning(r) => reasoning.push_str(r),
                Delta::Text(t) => text.push_str(t),
                Delta::Signature(_) => unreachable!("OpenAI has no signatures"),
            });
        }
        assert_eq!((reasoning.as_str(), text.as_str()), ("Let me think. (more)", "Hi!"));
        assert_eq!(openai_reasoning(&json!({"reasoning_content": "r", "content": "c"})), Some("r"));
        assert_eq!(openai_reasoning(&json!({"content": "c"})), None);
    }

    #[test]
    fn anthropic_thinking_blocks_are_reasoning() {
        let events = [
            json!({"type": "content_block_start", "index": 0, "content_block": {"type": "thinking", "thinking": ""}}),
            json!({"type": "content_block_delta", "index": 0, "delta": {"type": "thinking_delta", "thinking": "Hmm, "}}),
            json!({"type": "content_block_delta", "index": 0, "delta": {"type": "thinking_delta", "thinking": "easy."}}),
            json!({"type": "content_block_delta", "index": 0, "delta": {"type": "signature_delta", "signature": "EqQB"}}),
            json!({"type": "content_block_stop", "index": 0}),
            json!({"type": "content_block_delta", "index": 1, "delta": {"type": "text_delta", "text": "4"}}),
            json!({"type": "content_block_delta", "index": 2, "delta": {"type": "signature_delta", "signature": "other"}}),
        ];
        let mut state = Streamed::default();
        let (mut reasoning, mut text, mut signature) = (String::new(), String::new(), String::new());
        for e in &events {
            state.anthropic_event(e, &mut |d| match d {
                Delta::Reasoning(r) => reasoning.push_str(r),
                Delta::Text(t) => text.push_str(t),
                Delta::Signature(s) => signature.push_str(s),
            });
        }
        assert_eq!((reasoning.as_str(), text.as_str()), ("Hmm, easy.", "4"));
        assert_eq!(signature, "EqQB", "the first block's signature only");
    }

    #[test]
    fn calls_and_results_in_openai_format() {
        let messages = [
            turn("system", json!("sys")),
            turn("user", json!("hi")),
            Message::Calls {
                text: String::new(),
                reasoning: "The user wants f and g.".into(),
                signature: String::new(),
                calls: vec![call("c1", "f", "{\"a\":1}"), call("c2", "g", "")],
            },
            Message::Results(vec![("c1".into(), "one".into()), ("c2".into(), "two".into())]),
            Message::Calls {
                text: "thinking aloud".into(),
                reasoning: String::new(),
                signature: String::new(),
                calls: vec![call("c3", "f", "{}")],
            },
        ];
        let out = openai_messages(&messages);
        assert_eq!(out[1], json!({"role": "user", "content": "hi"}));
        assert_eq!(
            out[2],
            json!({"role": "assistant", "content": null, "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{\"a\":1}"}},
                {"id": "c2", "type": "function", "function": {"name": "g", "arguments": ""}}],
                "reasoning_content": "The user wants f and g."}),
            "DeepSeek gets its reasoning back with its calls"
        );
        assert_eq!(out[3], json!({"role": "tool", "tool_call_id": "c1", "content": "one"}));
        assert_eq!(out[4], json!({"role": "tool", "tool_call_id": "c2", "content": "two"}));
        assert_eq!(out[5]["content"], "thinking aloud");
        assert!(out[5].get("reasoning_content").is_none(), "no reasoning, no field");
        assert_eq!(
            openai_tools(&[spec("f"), ToolSpec { description: String::new(), ..spec("g") }]),
            json!([
                {"type": "function", "function": {"name": "f", "description": "f does it", "parameters": spec("f").parameters}},
                {"type": "function", "function": {"name": "g", "parameters": spec("g").parameters}}
            ])
        );
    }

    #[test]
    fn calls_and_results_in_anthropic_format() {
        let messages = [
            turn("system", json!("sys")),
            turn("user", json!("hi")),
            Message::Calls {
                text: "Checking.".into(),
                reasoning: "Two calls.".into(),
                signature: "sig-1".into(),
                calls: vec![call("t1", "f", "{\"a\":1}"), call("t2", "g", "not json")],
            },
            Message::Results(vec![("t1".into(), "one".into()), ("t2".into(), String::new())]),
            turn("user", json!("now answer")),
        ];
        let (out, system) = anthropic_messages(&messages);
        assert_eq!(system, ["sys"]);
        assert_eq!(out.len(), 3, "{out:?}");
        assert_eq!(
            out[1],
            json!({"role": "assistant", "content": [
                {"type": "thinking", "thinking": "Two calls.", "signature": "sig-1"},
                {"type": "text", "text": "Checking."},
                {"type": "tool_use", "id": "t1", "name": "f", "input": {"a": 1}},
                {"type": "tool_use", "id": "t2", "name": "g", "input": {}}]})
        );
        assert_eq!(
            out[2],
            json!({"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "t1", "content": "one"},
                {"type": "tool_result", "tool_use_id": "t2", "content": "<empty response>"},
                {"type": "text", "text": "now answer"}]})
        );
        assert_eq!(
            anthropic_tools(&[spec("f")]),
            json!([{"name": "f", "description": "f does it",
                    "input_schema": {"type": "object", "properties": {"a": {"type": "number"}}, "required": ["a"]}}])
        );
    }

    #[test]
    fn a_request_without_tools_is_the_plain_body() {
        let agent: ureq::Agent = ureq::Agent::config_builder().build().into();
        let messages = [turn("system", json!("s")), turn("user", json!("hi"))];
        let tools = [spec("f")];
        let provider = Provider::default();
        let body = |adapter: Adapter, offer: Offer<'_>| {
            let provider = Provider { adapter, ..provider.clone() };
            let call = Call {
                agent: &agent,
                provider: &provider,
                model: "m",
                key: None,
                messages: &messages,
                offer,
                stream: true,
            };
            match adapter {
                Adapter::OpenAi => openai_body(&call),
                Adapter::Anthropic => anthropic_body(&call),
            }
        };
        let keys = |v: Value| v.as_object().unwrap().keys().cloned().collect::<Vec<_>>();
        assert_eq!(
            keys(body(Adapter::OpenAi, Offer::None)),
            ["model", "messages", "stream", "stream_options"]
        );
        assert_eq!(
            keys(body(Adapter::OpenAi, Offer::Auto(&[]))),
            ["model", "messages", "stream", "stream_options"]
        );
        assert_eq!(
            keys(body(Adapter::OpenAi, Offer::Final(&tools))),
            ["model", "messages", "stream", "stream_options"]
        );
        let auto = body(Adapter::OpenAi, Offer::Auto(&tools));
        assert_eq!(
            (auto["tools"][0]["function"]["name"].as_str(), auto["tool_choice"].as_str()),
            (Some("f"), Some("auto"))
        );
        assert_eq!(
            keys(body(Adapter::Anthropic, Offer::None)),
            ["model", "max_tokens", "messages", "stream", "system"]
        );
        let auto = body(Adapter::Anthropic, Offer::Auto(&tools));
        assert_eq!((auto["tools"][0]["name"].as_str(), auto.get("tool_choice")), (Some("f"), None));
        let last = body(Adapter::Anthropic, Offer::Final(&tools));
        assert_eq!(
            (last["tools"][0]["name"].as_str(), &last["tool_choice"]),
            (Some("f"), &json!({"type": "none"}))
        );
    }
}
