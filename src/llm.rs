//! The LLM providers: the request context (persona, history, the new message with its
//! attachments) and the two adapters, `openai_chat_completion` (any OpenAI-compatible
//! server) and `anthropic_chat_completion` (the Messages API), streaming or not.
//!
//! Every call has a connect timeout, a time-to-first-byte timeout (the source's `timeout`)
//! and a per-read timeout while streaming. The source's `key` list is rotated on 401/429
//! (`$NAME` and `${NAME}` entries are read from the environment here, when used, under
//! the rule of [`config::secret_ref_allowed`]); 429, 5xx
//! and timeouts are retried `request_max_retries` times with a growing pause. Errors are
//! returned as text for the chat to show, never as a failed request.

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::time::Duration;

use rusqlite::Connection;
use serde_json::{Value, json};

use crate::config;
use crate::db::chat::{self, Passage};
use crate::db::resources::Persona;

/// One message of the request.
#[derive(Debug, Clone, PartialEq)]
pub struct Turn {
    /// `system`, `user` or `assistant`.
    pub role: &'static str,
    /// A string, or OpenAI-style content parts (`text`, `image_url`).
    pub content: Value,
}

/// Token counts from the upstream's usage fields.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Usage {
    pub input: u64,
    pub output: u64,
    pub cached: u64,
}

/// History beyond this many characters is dropped, oldest first, so a long conversation
/// never overflows a model's window.
const HISTORY_CHAR_BUDGET: usize = 24_000;
/// Text-like attachments up to this size are inlined with their name.
const INLINE_TEXT_LIMIT: u64 = 64 << 10;
const MAX_LINE: u64 = 1 << 20;

fn standard_base64(bytes: &[u8]) -> String {
    crate::secrets::base64url(bytes).replace('-', "+").replace('_', "/")
        + match bytes.len() % 3 {
            1 => "==",
            2 => "=",
            _ => "",
        }
}

fn text_of(content: &Value) -> String {
    content["message"]
        .as_array()
        .map(|parts| parts.iter().filter_map(|p| p["text"].as_str()).collect::<Vec<_>>().join("\n"))
        .unwrap_or_default()
}

/// The user's new message as the model sees it: text, images as data URLs, text files
/// inlined (up to 64 KiB) with their name, other files named only.
fn user_content(data_dir: &Path, conn: &Connection, parts: &[Value]) -> Value {
    let mut out: Vec<Value> = Vec::new();
    let mut has_image = false;
    for p in parts {
        match p["type"].as_str() {
            Some("plain") => out.push(json!({"type": "text", "text": p["text"]})),
            Some(kind @ ("image" | "file" | "record" | "video")) => {
                let id = p["attachment_id"].as_str().unwrap_or_default();
                let Ok(Some(att)) = crate::db::resources::attachment(conn, id) else { continue };
                let path = data_dir.join("attachments").join(&att.attachment_id);
                if kind == "image" {
                    if let Ok(bytes) = std::fs::read(&path) {
                        has_image = true;
                        let url = format!("data:{};base64,{}", att.mime_type, standard_base64(&bytes));
                        out.push(json!({"type": "image_url", "image_url": {"url": url}}));
                    }
                    continue;
                }
                let textual = att.mime_type.starts_with("text/") || att.mime_type == "application/json";
                let inline = textual && att.size as u64 <= INLINE_TEXT_LIMIT;
                match std::fs::read_to_string(&path).ok().filter(|_| inline) {
                    Some(text) => out.push(json!({"type": "text", "text": format!("[File: {}]\n{text}", att.filename)})),
                    None => out.push(json!({"type": "text", "text": format!("[File: {} ({}, {} bytes)]", att.filename, att.mime_type, att.size)})),
                }
            }
            _ => {}
        }
    }
    if has_image {
        return Value::Array(out);
    }
    Value::String(out.iter().filter_map(|p| p["text"].as_str()).collect::<Vec<_>>().join("\n"))
}

/// The request: the persona's prompt (with knowledge-base passages when `kb_names` found
/// some), its opening dialogue, the session's history since the last `/new` (at most
/// `max_turns` exchanges, -1 for no limit, and a character budget), then the new message
/// (the session's last stored message).
pub fn context(
    conn: &Connection,
    data_dir: &Path,
    persona: &Persona,
    session_id: &str,
    new_parts: &[Value],
    max_turns: i64,
    passages: &[Passage],
) -> Vec<Turn> {
    let mut system = persona.system_prompt.clone();
    if !passages.is_empty() {
        system.push_str(
            "\n\nUse these passages from the knowledge base when they help, and cite their titles:\n",
        );
        for p in passages {
            system.push_str(&format!("\n### {} ({})\n{}\n", p.title, p.url, p.body));
        }
    }
    let mut turns = vec![Turn { role: "system", content: json!(system) }];
    for (i, d) in persona.begin_dialogs.iter().enumerate() {
        turns.push(Turn { role: if i % 2 == 0 { "user" } else { "assistant" }, content: json!(d) });
    }
    let mut history = chat::messages(conn, session_id, Some(400)).unwrap_or_default();
    history.pop(); // the new message itself
    if let Some(cut) = history.iter().rposition(|m| m.content["new_conversation"] == true) {
        history.drain(..=cut);
    }
    // A command and the server's reply to it are not part of the conversation.
    let mut skip = vec![false; history.len()];
    for (i, m) in history.iter().enumerate() {
        if m.content["command"] == true {
            skip[i] = true;
            if i > 0 && history[i - 1].sender == "user" {
                skip[i - 1] = true;
            }
        }
    }
    let history: Vec<_> = history.into_iter().zip(skip).filter(|(_, s)| !s).map(|(m, _)| m).collect();
    let mut kept: Vec<Turn> = Vec::new();
    let mut chars = 0;
    let mut users = 0;
    for m in history.iter().rev() {
        let text = text_of(&m.content);
        if text.is_empty() {
            continue;
        }
        let role = if m.sender == "user" { "user" } else { "assistant" };
        if role == "user" {
            users += 1;
            if max_turns >= 0 && users > max_turns {
                break;
            }
        }
        chars += text.chars().count();
        if chars > HISTORY_CHAR_BUDGET {
            break;
        }
        kept.push(Turn { role, content: json!(text) });
    }
    kept.reverse();
    // A model wants the history to start with the user.
    while kept.first().is_some_and(|t| t.role == "assistant") {
        kept.remove(0);
    }
    turns.extend(kept);
    turns.push(Turn { role: "user", content: user_content(data_dir, conn, new_parts) });
    turns
}

/// A key from the source's list: a literal key (`None` when empty), or `$NAME` / `${NAME}`
/// read through `env` (the process environment, or a test's map). A reference outside
/// [`config::secret_ref_allowed`]'s rule (stored before the rule, or `ASTRBOT_SECRET_ENV` changed
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
fn resolve_keys(provider: &Value, env: &dyn Fn(&str) -> Option<String>) -> Result<Vec<String>, String> {
    let entries: Vec<&str> = match &provider["key"] {
        Value::Array(list) => list.iter().filter_map(Value::as_str).collect(),
        Value::String(k) => vec![k.as_str()],
        _ => Vec::new(),
    };
    let mut keys = Vec::new();
    for entry in entries {
        keys.extend(resolve_key(entry, env)?);
    }
    Ok(keys)
}

/// The URL the provider's adapter posts to: `api_base` (the vendor's own when missing)
/// and the adapter's path. The secret-target rule reads it too, so "where the key goes"
/// has one definition.
pub fn endpoint_url(provider: &Value) -> String {
    let (default, path) = match provider["type"].as_str() {
        Some("anthropic_chat_completion") => ("https://api.anthropic.com/v1", "messages"),
        _ => ("https://api.openai.com/v1", "chat/completions"),
    };
    let base = provider["api_base"].as_str().unwrap_or(default).trim_end_matches('/');
    format!("{base}/{path}")
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
fn agent(provider: &Value, first_byte: Duration) -> Result<ureq::Agent, String> {
    use std::collections::HashMap;
    use std::sync::{Mutex, OnceLock};
    static AGENTS: OnceLock<Mutex<HashMap<(u64, String), ureq::Agent>>> = OnceLock::new();
    let proxy = provider["proxy"].as_str().unwrap_or("").to_owned();
    let key = (first_byte.as_secs(), proxy);
    let agents = AGENTS.get_or_init(|| Mutex::new(HashMap::new()));
    if let Some(a) = agents.lock().unwrap_or_else(|e| e.into_inner()).get(&key) {
        return Ok(a.clone());
    }
    let built = build_agent(provider, first_byte)?;
    let mut map = agents.lock().unwrap_or_else(|e| e.into_inner());
    if map.len() > 32 {
        map.clear();
    }
    map.insert(key, built.clone());
    Ok(built)
}

fn build_agent(provider: &Value, first_byte: Duration) -> Result<ureq::Agent, String> {
    let mut config = ureq::Agent::config_builder()
        .timeout_connect(Some(Duration::from_secs(10)))
        .timeout_recv_response(Some(first_byte))
        .timeout_per_read(Some(first_byte.max(Duration::from_secs(30))))
        .http_status_as_error(false);
    if let Some(proxy) = provider["proxy"].as_str().filter(|p| !p.is_empty()) {
        let proxy = ureq::Proxy::new(proxy).map_err(|e| format!("invalid proxy: {e}"))?;
        config = config.proxy(Some(proxy));
    }
    Ok(config.build().into())
}

/// Sends one request to the provider, streaming deltas to `on_delta`.
pub fn generate(
    provider: &Value,
    model_override: Option<&str>,
    turns: &[Turn],
    stream: bool,
    retries: u32,
    on_delta: &mut dyn FnMut(&str),
) -> Result<Usage, String> {
    let kind = provider["type"].as_str().unwrap_or("openai_chat_completion").to_owned();
    let model = model_override.or(provider["model"].as_str()).unwrap_or_default().to_owned();
    let keys = resolve_keys(provider, &config::process_env)?;
    let timeout = Duration::from_secs(provider["timeout"].as_u64().unwrap_or(120).clamp(1, 3600));
    let agent = agent(provider, timeout)?;
    // Start from the key that last worked for this source, so a dead first key does not
    // cost every request a retry.
    let source = provider["provider_source_id"].as_str().or(provider["id"].as_str()).unwrap_or("").to_owned();
    let mut key_index = next_key(&source, None);
    let mut attempt = 0u32;
    loop {
        let key = keys.get(key_index % keys.len().max(1)).cloned();
        let mut delivered = false;
        let mut sink = |d: &str| {
            delivered = true;
            on_delta(d);
        };
        let result = match kind.as_str() {
            "anthropic_chat_completion" => {
                anthropic(&agent, provider, &model, key.as_deref(), turns, stream, &mut sink)
            }
            _ => openai(&agent, provider, &model, key.as_deref(), turns, stream, &mut sink),
        };
        match result {
            Ok(usage) => {
                next_key(&source, Some(key_index));
                return Ok(usage);
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

/// The remembered key position of a source; `Some(i)` records one that worked.
fn next_key(source: &str, worked: Option<usize>) -> usize {
    use std::collections::HashMap;
    use std::sync::{Mutex, OnceLock};
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

fn headers(
    mut req: ureq::RequestBuilder<ureq::typestate::WithBody>,
    provider: &Value,
) -> ureq::RequestBuilder<ureq::typestate::WithBody> {
    if let Some(map) = provider["custom_headers"].as_object() {
        for (k, v) in map {
            if let Some(v) = v.as_str() {
                req = req.header(k.as_str(), v);
            }
        }
    }
    req.header("Accept-Encoding", "identity")
}

/// Adds the source's `custom_extra_body`, sends the JSON request and turns a non-2xx
/// answer into a classified failure.
fn send(
    req: ureq::RequestBuilder<ureq::typestate::WithBody>,
    provider: &Value,
    mut body: Value,
) -> Result<ureq::Body, Failure> {
    if let Some(extra) = provider["custom_extra_body"].as_object() {
        for (k, v) in extra {
            body[k] = v.clone();
        }
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
    loop {
        line.clear();
        let n = (&mut reader)
            .take(MAX_LINE)
            .read_until(b'\n', &mut line)
            .map_err(|e| Failure::Retry { message: format!("stream read failed: {e}"), rotate: false })?;
        if n == 0 {
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

fn openai_messages(turns: &[Turn]) -> Vec<Value> {
    turns.iter().map(|t| json!({"role": t.role, "content": t.content})).collect()
}

fn openai(
    agent: &ureq::Agent,
    provider: &Value,
    model: &str,
    key: Option<&str>,
    turns: &[Turn],
    stream: bool,
    on_delta: &mut dyn FnMut(&str),
) -> Result<Usage, Failure> {
    let mut body = json!({"model": model, "messages": openai_messages(turns), "stream": stream});
    if stream {
        body["stream_options"] = json!({"include_usage": true});
    }
    let mut req = headers(agent.post(endpoint_url(provider)), provider);
    if let Some(k) = key {
        req = req.header("Authorization", format!("Bearer {k}"));
    }
    let body = send(req, provider, body)?;
    let usage_of = |u: &Value| Usage {
        input: u["prompt_tokens"]
            .as_u64()
            .unwrap_or(0)
            .saturating_sub(u["prompt_tokens_details"]["cached_tokens"].as_u64().unwrap_or(0)),
        output: u["completion_tokens"].as_u64().unwrap_or(0),
        cached: u["prompt_tokens_details"]["cached_tokens"].as_u64().unwrap_or(0),
    };
    if !stream {
        let v: Value = body.read_json_like().map_err(|e| Failure::Retry { message: e, rotate: false })?;
        let text = v["choices"][0]["message"]["content"].as_str().unwrap_or_default();
        if !text.is_empty() {
            on_delta(text);
        }
        return Ok(usage_of(&v["usage"]));
    }
    let mut usage = Usage::default();
    sse_lines(body.into_reader(), |data| {
        if let Ok(v) = serde_json::from_str::<Value>(data) {
            if let Some(d) = v["choices"][0]["delta"]["content"].as_str().filter(|d| !d.is_empty()) {
                on_delta(d);
            }
            if v["usage"].is_object() {
                usage = usage_of(&v["usage"]);
            }
        }
        true
    })?;
    Ok(usage)
}

fn anthropic(
    agent: &ureq::Agent,
    provider: &Value,
    model: &str,
    key: Option<&str>,
    turns: &[Turn],
    stream: bool,
    on_delta: &mut dyn FnMut(&str),
) -> Result<Usage, Failure> {
    let system: Vec<String> = turns
        .iter()
        .filter(|t| t.role == "system")
        .filter_map(|t| t.content.as_str().map(str::to_owned))
        .collect();
    let messages: Vec<Value> = turns
        .iter()
        .filter(|t| t.role != "system")
        .map(|t| {
            let content = match &t.content {
                Value::Array(parts) => Value::Array(
                    parts
                        .iter()
                        .map(|p| match p["type"].as_str() {
                            Some("image_url") => {
                                let url = p["image_url"]["url"].as_str().unwrap_or_default();
                                let (meta, data) = url.split_once(',').unwrap_or(("", ""));
                                let media = meta.trim_start_matches("data:").trim_end_matches(";base64");
                                json!({"type": "image", "source": {"type": "base64", "media_type": media, "data": data}})
                            }
                            _ => json!({"type": "text", "text": p["text"]}),
                        })
                        .collect(),
                ),
                other => other.clone(),
            };
            json!({"role": t.role, "content": content})
        })
        .collect();
    let mut body = json!({"model": model, "max_tokens": 4096, "messages": messages, "stream": stream});
    if !system.is_empty() {
        body["system"] = json!(system.join("\n\n"));
    }
    let mut req =
        headers(agent.post(endpoint_url(provider)), provider).header("anthropic-version", "2023-06-01");
    if let Some(k) = key {
        req = req.header("x-api-key", k);
    }
    let body = send(req, provider, body)?;
    let usage_of = |u: &Value, usage: &mut Usage| {
        if let Some(n) = u["input_tokens"].as_u64() {
            usage.input = n;
        }
        if let Some(n) = u["cache_read_input_tokens"].as_u64() {
            usage.cached = n;
        }
        if let Some(n) = u["output_tokens"].as_u64() {
            usage.output = n;
        }
    };
    let mut usage = Usage::default();
    if !stream {
        let v: Value = body.read_json_like().map_err(|e| Failure::Retry { message: e, rotate: false })?;
        let text: String =
            v["content"].as_array().into_iter().flatten().filter_map(|b| b["text"].as_str()).collect();
        if !text.is_empty() {
            on_delta(&text);
        }
        usage_of(&v["usage"], &mut usage);
        return Ok(usage);
    }
    let mut error = None;
    sse_lines(body.into_reader(), |data| {
        let Ok(v) = serde_json::from_str::<Value>(data) else { return true };
        match v["type"].as_str() {
            Some("content_block_delta") => {
                if let Some(d) = v["delta"]["text"].as_str().filter(|d| !d.is_empty()) {
                    on_delta(d);
                }
            }
            Some("message_start") => usage_of(&v["message"]["usage"], &mut usage),
            Some("message_delta") => usage_of(&v["usage"], &mut usage),
            Some("message_stop") => return false,
            Some("error") => {
                error = Some(v["error"]["message"].as_str().unwrap_or("stream error").to_owned());
                return false;
            }
            _ => {}
        }
        true
    })?;
    match error {
        Some(e) => Err(Failure::Fatal(e)),
        None => Ok(usage),
    }
}

/// A small extension: read a bounded JSON body.
trait ReadJsonLike {
    fn read_json_like(self) -> Result<Value, String>;
}

impl ReadJsonLike for ureq::Body {
    fn read_json_like(mut self) -> Result<Value, String> {
        let text = self.read_to_string().map_err(|e| format!("response read failed: {e}"))?;
        serde_json::from_str(&text).map_err(|e| format!("response is not JSON: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_base64() {
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
        let provider = json!({"key": ["sk-a", "", "$OPENAI_API_KEY"]});
        assert_eq!(resolve_keys(&provider, &env).unwrap(), ["sk-a", "sk-from-env"]);
        let unset = json!({"key": ["sk-a", "$UNSET_API_KEY"]});
        assert_eq!(resolve_keys(&unset, &env), Err("environment variable UNSET_API_KEY is not set".into()));
        assert_eq!(endpoint_url(&json!({"api_base": "http://h/v1/"})), "http://h/v1/chat/completions");
        assert_eq!(
            endpoint_url(&json!({"type": "anthropic_chat_completion"})),
            "https://api.anthropic.com/v1/messages"
        );
        assert_eq!(standard_base64(b"\xfb\xff"), "+/8=");
        assert_eq!(standard_base64(b"foo"), "Zm9v");
        assert_eq!(standard_base64(b"f"), "Zg==");
    }
}
