//! One connection to one MCP server: the `initialize` handshake, `tools/list`, `tools/call`
//! with a timeout and cancellation, the server's recent warnings and its liveness.
//!
//! The server is reached over one of three transports, chosen by its stored config as
//! AstrBot chooses (no `url` → stdio; `url` with `transport`/`type` "streamable_http" →
//! Streamable HTTP; any other `url` → the legacy HTTP+SSE transport):
//! - [`stdio`]: a child process in its own process group, one JSON-RPC message per line;
//! - [`http`]: Streamable HTTP (each message a POST) and legacy HTTP+SSE (a GET stream for
//!   the server's messages, a POST endpoint for ours).
//!
//! They share [`jsonrpc::Core`], which routes what the server sends; the [`Link`] trait is
//! what differs: how a message is sent, whether the connection lives, how it ends. A request
//! registers its id, is sent, and waits on a channel with its deadline, so a dead server
//! fails waiting calls at once and a slow one costs exactly the caller's timeout (followed by
//! `notifications/cancelled`). Everything synchronous: threads, no async runtime.

mod http;
mod jsonrpc;
mod stdio;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{RecvTimeoutError, channel};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Map, Value, json};

use super::{CallResult, Tool, llm_name};
use jsonrpc::{Core, Failure, cut, lock};

/// The protocol revision offered in `initialize` (the newest handshake revision).
pub(crate) const OFFERED_VERSION: &str = "2025-11-25";
/// The revisions accepted in the server's answer: the handshake ("legacy") era.
pub(crate) const SUPPORTED_VERSIONS: [&str; 4] = ["2024-11-05", "2025-03-26", "2025-06-18", "2025-11-25"];
/// Pages of `tools/list` followed, and tools kept, at most: a server cannot grow us forever.
const MAX_TOOL_PAGES: usize = 100;
const MAX_TOOLS: usize = 2000;
/// How long `tools()` waits for a re-listing after the server said its tools changed.
const RELIST_TIMEOUT: Duration = Duration::from_secs(5);

/// How a message reaches the server and how the connection ends: one per transport.
trait Link: Send + Sync {
    /// Sends one message. Streamable HTTP also reads the answer of the same exchange and
    /// hands it to `core`; the others' answers arrive on their reader thread.
    fn send(&self, core: &Core, msg: &Value, deadline: Instant) -> Result<(), SendError>;
    /// Sends `notifications/cancelled` without making the caller wait for it (a server busy
    /// with the very call may take its time to accept it).
    fn cancel(&self, core: &Core, msg: &Value) {
        let _ = self.send(core, msg, Instant::now() + Duration::from_secs(2));
    }
    /// The negotiated protocol version (HTTP sends it on every later request).
    fn negotiated(&self, _version: &str) {}
    /// The handshake is complete (Streamable HTTP opens its standalone stream).
    fn started(&self, _core: &Arc<Core>) {}
    fn alive(&self) -> bool;
    /// Ends the connection; idempotent.
    fn close(&self);
    /// The child's process id (stdio), for tests that kill it or look for it.
    #[cfg(test)]
    fn pid(&self) -> Option<u32> {
        None
    }
}

#[derive(Debug)]
enum SendError {
    Timeout,
    Failed(String),
}

/// A server's stored config, parsed (AstrBot's shape; `active` and unknown keys ignored).
#[derive(Debug, Clone, PartialEq)]
enum Config {
    Stdio(StdioConfig),
    Remote(RemoteConfig),
}

#[derive(Debug, Clone, PartialEq)]
struct StdioConfig {
    command: String,
    args: Vec<String>,
    env: BTreeMap<String, String>,
    cwd: Option<PathBuf>,
}

#[derive(Debug, Clone, PartialEq)]
struct RemoteConfig {
    url: String,
    streamable: bool,
    headers: Vec<(String, String)>,
    /// The config's `timeout`: bounds each POST of the legacy transport (AstrBot: 5 s).
    timeout: Option<Duration>,
    /// The config's `sse_read_timeout`: the longest silence on a legacy event stream.
    sse_read_timeout: Duration,
}

impl Config {
    fn parse(v: &Value) -> Result<Config, String> {
        let obj = v.as_object().ok_or("the config must be a JSON object")?;
        match obj.get("url") {
            None => Self::stdio(obj),
            Some(url) => Self::remote(obj, url),
        }
    }

    fn stdio(obj: &Map<String, Value>) -> Result<Config, String> {
        let command = match obj.get("command") {
            Some(Value::String(c)) if !c.trim().is_empty() => c.clone(),
            _ => return Err("a stdio server needs a `command` (a non-empty string)".into()),
        };
        let args = match obj.get("args") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(a)) => a
                .iter()
                .map(|x| x.as_str().map(str::to_owned))
                .collect::<Option<Vec<_>>>()
                .ok_or("`args` must be a list of strings")?,
            Some(_) => return Err("`args` must be a list of strings".into()),
        };
        let env = string_map(obj.get("env"), "env")?.into_iter().collect();
        let cwd = match obj.get("cwd") {
            None | Some(Value::Null) => None,
            Some(Value::String(d)) if d.is_empty() => None,
            Some(Value::String(d)) => {
                let dir = PathBuf::from(d);
                if !dir.is_dir() {
                    return Err("`cwd` is not an existing directory".into());
                }
                Some(dir)
            }
            Some(_) => return Err("`cwd` must be a string".into()),
        };
        Ok(Config::Stdio(StdioConfig { command, args, env, cwd }))
    }

    fn remote(obj: &Map<String, Value>, url: &Value) -> Result<Config, String> {
        let url = url.as_str().map(str::trim).unwrap_or_default();
        let lower = url.to_ascii_lowercase();
        if !(lower.starts_with("http://") || lower.starts_with("https://"))
            || url.parse::<ureq::http::Uri>().is_err()
        {
            return Err("`url` must be an http or https URL".into());
        }
        let kind = obj.get("transport").or_else(|| obj.get("type")).and_then(Value::as_str).unwrap_or("sse");
        let headers = string_map(obj.get("headers"), "headers")?;
        for (k, v) in &headers {
            let name_ok = !k.is_empty()
                && k.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
            if !name_ok {
                return Err(format!("header name {:?} is not valid", cut(k, 60)));
            }
            if v.bytes().any(|b| b.is_ascii_control() && b != b'\t') {
                // Never quote the value: it may be a credential.
                return Err(format!("header {k} has an invalid value"));
            }
        }
        let secs = |key: &str| {
            obj.get(key)
                .and_then(Value::as_f64)
                .filter(|s| s.is_finite() && *s > 0.0)
                .map(|s| Duration::from_secs_f64(s.min(3600.0)))
        };
        Ok(Config::Remote(RemoteConfig {
            url: url.to_owned(),
            streamable: kind == "streamable_http",
            headers,
            timeout: secs("timeout"),
            sse_read_timeout: secs("sse_read_timeout").unwrap_or(Duration::from_secs(300)),
        }))
    }
}

fn string_map(v: Option<&Value>, key: &str) -> Result<Vec<(String, String)>, String> {
    match v {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Object(m)) => m
            .iter()
            .map(|(k, v)| v.as_str().map(|v| (k.clone(), v.to_owned())))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| format!("`{key}` must map strings to strings")),
        Some(_) => Err(format!("`{key}` must be an object of strings")),
    }
}

/// The session behind a [`Client`]: the routing core, the transport and the tool cache.
struct Session {
    core: Arc<Core>,
    link: Box<dyn Link>,
    tools: Mutex<Vec<Tool>>,
    /// Held while re-listing, so that concurrent `tools()` calls list once.
    relisting: Mutex<()>,
}

impl Session {
    /// Sends request `method` and waits for its result until `deadline`.
    fn request(&self, method: &str, params: Option<Value>, deadline: Instant) -> Result<Value, Failure> {
        let (tx, rx) = channel();
        let id = self.core.register(tx)?;
        let mut msg = json!({"jsonrpc": "2.0", "id": id, "method": method});
        if let Some(params) = params {
            msg["params"] = params;
        }
        let waited = match self.link.send(&self.core, &msg, deadline) {
            Err(SendError::Failed(why)) => {
                self.core.forget(id);
                return Err(Failure::Broken(why));
            }
            Err(SendError::Timeout) => Err(RecvTimeoutError::Timeout),
            Ok(()) => rx.recv_timeout(deadline.saturating_duration_since(Instant::now())),
        };
        let answer = match waited {
            Ok(answer) => answer,
            Err(RecvTimeoutError::Timeout) => {
                self.core.forget(id);
                // The spec forbids cancelling `initialize`; anything else is told to stop.
                if method != "initialize" {
                    let cancel = json!({"jsonrpc": "2.0", "method": "notifications/cancelled",
                        "params": {"requestId": id, "reason": "the client timed out"}});
                    self.link.cancel(&self.core, &cancel);
                }
                return Err(Failure::Timeout);
            }
            Err(RecvTimeoutError::Disconnected) => {
                return Err(Failure::Broken(
                    self.core.broken().unwrap_or_else(|| "the connection ended".into()),
                ));
            }
        };
        let msg = answer.map_err(Failure::Broken)?;
        if let Some(err) = msg.get("error") {
            let code = err["code"].as_i64().unwrap_or(0);
            let message = cut(err["message"].as_str().unwrap_or("unknown error"), 2000).to_owned();
            return Err(Failure::Rpc { code, message });
        }
        Ok(msg.get("result").cloned().unwrap_or(Value::Null))
    }

    fn notify(&self, method: &str, deadline: Instant) -> Result<(), String> {
        let msg = json!({"jsonrpc": "2.0", "method": method});
        self.link.send(&self.core, &msg, deadline).map_err(|e| match e {
            SendError::Timeout => format!("{method} was not accepted in time"),
            SendError::Failed(why) => why,
        })
    }

    /// `initialize`, `notifications/initialized`, then the tools, all before `deadline`.
    fn handshake(&self, deadline: Instant, timeout: Duration) -> Result<(), String> {
        let params = json!({
            "protocolVersion": OFFERED_VERSION,
            "capabilities": {},
            "clientInfo": {"name": "astrbot", "version": env!("CARGO_PKG_VERSION")},
        });
        let step = |what: &str, e: Failure| match e {
            Failure::Timeout => format!("no answer to {what} within {}", secs(timeout)),
            Failure::Rpc { code, message } => format!("{what} failed: MCP error {code}: {message}"),
            Failure::Broken(why) => format!("{what} failed: {why}"),
        };
        let init = self.request("initialize", Some(params), deadline).map_err(|e| step("initialize", e))?;
        let version = negotiate(&init)?;
        self.link.negotiated(&version);
        self.notify("notifications/initialized", deadline)?;
        let tools = self.list_tools(deadline).map_err(|e| step("tools/list", e))?;
        *lock(&self.tools) = tools;
        self.core.ready.store(true, Ordering::Release);
        Ok(())
    }

    /// Every page of `tools/list`.
    fn list_tools(&self, deadline: Instant) -> Result<Vec<Tool>, Failure> {
        let mut tools = Vec::new();
        let mut cursor: Option<String> = None;
        for _ in 0..MAX_TOOL_PAGES {
            let params = cursor.as_ref().map(|c| json!({"cursor": c}));
            let page = self.request("tools/list", params, deadline)?;
            for t in page["tools"].as_array().into_iter().flatten() {
                if tools.len() < MAX_TOOLS
                    && let Some(tool) = tool(&self.core.name, t)
                {
                    tools.push(tool);
                }
            }
            match page.get("nextCursor").and_then(Value::as_str) {
                Some(next) if !next.is_empty() && cursor.as_deref() != Some(next) => {
                    cursor = Some(next.to_owned())
                }
                _ => return Ok(tools),
            }
        }
        log::warn!(
            "MCP server {}: more than {MAX_TOOL_PAGES} pages of tools; the rest are ignored",
            self.core.name
        );
        Ok(tools)
    }
}

/// A [`Tool`] from one entry of `tools/list` (`None` without a name).
fn tool(server: &str, t: &Value) -> Option<Tool> {
    let mcp_name = t.get("name")?.as_str()?.to_owned();
    let input_schema = match t.get("inputSchema") {
        Some(s @ Value::Object(_)) => s.clone(),
        _ => json!({"type": "object", "properties": {}}),
    };
    Some(Tool {
        name: llm_name(&mcp_name),
        description: t.get("description").and_then(Value::as_str).unwrap_or_default().to_owned(),
        mcp_name,
        input_schema,
        server: server.to_owned(),
    })
}

/// The protocol version of the server's `initialize` answer, if this client speaks it.
fn negotiate(init: &Value) -> Result<String, String> {
    match init.get("protocolVersion").and_then(Value::as_str) {
        Some(v) if SUPPORTED_VERSIONS.contains(&v) => Ok(v.to_owned()),
        Some(v) => Err(format!(
            "the server speaks MCP protocol version {:?}, which this client does not support (it supports {})",
            cut(v, 40),
            SUPPORTED_VERSIONS.join(", ")
        )),
        None => Err("the server's answer to initialize has no protocolVersion".into()),
    }
}

/// A duration for messages: "30 s", "1.5 s".
fn secs(d: Duration) -> String {
    if d.subsec_millis() == 0 { format!("{} s", d.as_secs()) } else { format!("{:.1} s", d.as_secs_f64()) }
}

/// Flattens a `tools/call` result as AstrBot does: text parts joined with blank lines.
/// Parts AstrBot handles otherwise (images cached, audio and links skipped) are described
/// in one line here, so the model learns they exist; `structuredContent` is added as JSON
/// when no part carried text.
fn flatten(result: &Value) -> CallResult {
    let mut parts: Vec<String> = Vec::new();
    let mut any_text = false;
    for item in result["content"].as_array().into_iter().flatten() {
        let kind = item["type"].as_str().unwrap_or("");
        let mime = |v: &Value| v["mimeType"].as_str().unwrap_or("unknown type").to_owned();
        match kind {
            "text" => {
                any_text = true;
                parts.push(item["text"].as_str().unwrap_or_default().to_owned());
            }
            "image" | "audio" => parts.push(format!(
                "[{kind}: {}, {} bytes]",
                mime(item),
                base64_len(item["data"].as_str().unwrap_or(""))
            )),
            "resource_link" => {
                let uri = item["uri"].as_str().unwrap_or("");
                match item["name"].as_str() {
                    Some(name) if !name.is_empty() => parts.push(format!("[resource link: {name} <{uri}>]")),
                    _ => parts.push(format!("[resource link: <{uri}>]")),
                }
            }
            "resource" => {
                let r = &item["resource"];
                let uri = r["uri"].as_str().unwrap_or("");
                if let Some(text) = r["text"].as_str() {
                    any_text = true;
                    parts.push(text.to_owned());
                } else {
                    let n = base64_len(r["blob"].as_str().unwrap_or(""));
                    parts.push(format!("[resource: <{uri}>, {}, {n} bytes]", mime(r)));
                }
            }
            other => parts.push(format!("[{} content]", cut(other, 40))),
        }
    }
    if !any_text && let Some(s) = result.get("structuredContent").filter(|s| !s.is_null()) {
        parts.push(s.to_string());
    }
    let text = if parts.is_empty() { "The tool returned no content.".to_owned() } else { parts.join("\n\n") };
    CallResult { text, is_error: result["isError"].as_bool().unwrap_or(false) }
}

/// The number of bytes a base64 text decodes to (without decoding it).
fn base64_len(b64: &str) -> usize {
    let s = b64.trim_end();
    let padding = s.bytes().rev().take_while(|&b| b == b'=').count().min(2);
    (s.len() / 4).saturating_mul(3).saturating_add(match s.len() % 4 {
        2 => 1,
        3 => 2,
        _ => 0,
    }) - if s.len().is_multiple_of(4) { padding } else { 0 }
}

/// A live session with one MCP server.
pub struct Client {
    name: String,
    session: Session,
}

impl Client {
    /// Starts (stdio) or reaches (HTTP) the server `name` described by `config` (AstrBot's
    /// stored shape, `active` ignored), completes `initialize` and lists its tools, all
    /// within `timeout`. On failure nothing is left running (a child is stopped).
    pub fn connect(name: &str, config: &Value, timeout: Duration) -> Result<Client, String> {
        let deadline = Instant::now() + timeout;
        let fail = |e: String| format!("MCP server {name}: {e}");
        let config = Config::parse(config).map_err(fail)?;
        let core = Arc::new(Core::new(name));
        let link: Box<dyn Link> = match config {
            Config::Stdio(c) => Box::new(stdio::Stdio::start(&core, &c).map_err(fail)?),
            Config::Remote(c) if c.streamable => Box::new(http::StreamableLink::new(&c)),
            Config::Remote(c) => Box::new(http::Legacy::open(&core, &c, deadline).map_err(fail)?),
        };
        let session = Session { core, link, tools: Mutex::new(Vec::new()), relisting: Mutex::new(()) };
        if let Err(e) = session.handshake(deadline, timeout) {
            session.link.close();
            session.core.fail_all("the connection was closed");
            return Err(fail(e));
        }
        session.link.started(&session.core);
        log::debug!("MCP server {name}: connected, {} tools", lock(&session.tools).len());
        Ok(Client { name: name.to_owned(), session })
    }

    /// The tools the server offered at the last listing. When the server said they changed,
    /// they are listed again first (for at most 5 s; on failure the old list is kept).
    pub fn tools(&self) -> Vec<Tool> {
        let s = &self.session;
        if s.core.stale.load(Ordering::Acquire)
            && self.alive()
            && let Ok(_guard) = s.relisting.try_lock()
            && s.core.stale.swap(false, Ordering::AcqRel)
        {
            match s.list_tools(Instant::now() + RELIST_TIMEOUT) {
                Ok(tools) => *lock(&s.tools) = tools,
                Err(e) => {
                    log::debug!("MCP server {}: re-listing the tools failed: {e:?}", self.name);
                    s.core.stale.store(true, Ordering::Release);
                }
            }
        }
        lock(&s.tools).clone()
    }

    /// Calls tool `mcp_name` with `args`; a call not answered within `timeout` is cancelled
    /// (`notifications/cancelled`). A JSON-RPC error becomes `Err("MCP error <code>: <message>")`;
    /// a tool's own failure is a result with `is_error`.
    pub fn call(&self, mcp_name: &str, args: &Value, timeout: Duration) -> Result<CallResult, String> {
        let arguments = if args.is_null() { json!({}) } else { args.clone() };
        let params = json!({"name": mcp_name, "arguments": arguments});
        match self.session.request("tools/call", Some(params), Instant::now() + timeout) {
            Ok(result) => Ok(flatten(&result)),
            Err(Failure::Timeout) => Err(format!("tool call timed out after {}", secs(timeout))),
            Err(Failure::Rpc { code, message }) => Err(format!("MCP error {code}: {message}")),
            Err(Failure::Broken(why)) => Err(format!("MCP server {}: {why}", self.name)),
        }
    }

    /// Whether the session still works (the child runs, the HTTP session is not gone).
    pub fn alive(&self) -> bool {
        self.session.core.broken().is_none() && self.session.link.alive()
    }

    /// The server's recent log lines of level warning or above: its `notifications/message`
    /// at warning or above (every transport) and, for stdio, the stderr lines that look like
    /// warnings or errors. At most the last 50, each cut to 500 characters.
    pub fn errlogs(&self) -> Vec<String> {
        self.session.core.errlogs()
    }

    /// Ends the session: stdio closes stdin, then SIGTERM, then SIGKILL to the process group
    /// (2 s apart); Streamable HTTP sends DELETE. Waiting calls fail at once. Idempotent.
    pub fn close(&self) {
        self.session.link.close();
        self.session.core.fail_all("the connection was closed");
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        self.close();
    }
}

#[cfg(test)]
mod unit {
    use super::*;

    #[test]
    fn configs_are_read_as_astrbot_stores_them() {
        let c = Config::parse(&json!({"command": "node", "args": ["a.js", "stdio"], "env": {"K": "v"}, "active": true, "transport": "stdio"})).unwrap();
        let Config::Stdio(s) = c else { panic!("stdio expected") };
        assert_eq!((s.command.as_str(), s.args.len(), s.env["K"].as_str(), s.cwd), ("node", 2, "v", None));
        assert!(Config::parse(&json!({"args": []})).unwrap_err().contains("command"));
        assert!(Config::parse(&json!({"command": "x", "args": [1]})).unwrap_err().contains("args"));
        assert!(Config::parse(&json!({"command": "x", "env": {"A": 1}})).unwrap_err().contains("env"));
        assert!(Config::parse(&json!({"command": "x", "cwd": "/no/such/dir"})).unwrap_err().contains("cwd"));
        let Config::Remote(r) =
            Config::parse(&json!({"url": "http://h/sse", "headers": {"Authorization": "Bearer x"}})).unwrap()
        else {
            panic!("remote expected")
        };
        assert!(!r.streamable, "sse is the default");
        assert_eq!(r.headers, vec![("Authorization".to_owned(), "Bearer x".to_owned())]);
        let Config::Remote(r) =
            Config::parse(&json!({"url": "https://h/mcp", "type": "streamable_http", "timeout": 5})).unwrap()
        else {
            panic!("remote expected")
        };
        assert!(r.streamable);
        assert_eq!(r.timeout, Some(Duration::from_secs(5)));
        assert!(Config::parse(&json!({"url": "ftp://h"})).is_err());
        let bad = Config::parse(&json!({"url": "http://h", "headers": {"X": "secret\r\nY: z"}})).unwrap_err();
        assert!(!bad.contains("secret"), "{bad}");
    }

    #[test]
    fn versions_are_negotiated() {
        for v in SUPPORTED_VERSIONS {
            assert_eq!(negotiate(&json!({"protocolVersion": v})), Ok(v.to_owned()));
        }
        let refused = negotiate(&json!({"protocolVersion": "2026-07-28"})).unwrap_err();
        assert!(refused.contains("2026-07-28") && refused.contains("2025-11-25"), "{refused}");
        assert!(negotiate(&json!({})).is_err());
    }

    #[test]
    fn results_are_flattened() {
        let r = flatten(&json!({"content": [
            {"type": "text", "text": "one"},
            {"type": "image", "data": "iVBORw0KGgo=", "mimeType": "image/png"},
            {"type": "audio", "data": "AAAA", "mimeType": "audio/wav"},
            {"type": "resource_link", "uri": "demo://r/1", "name": "R1"},
            {"type": "resource", "resource": {"uri": "demo://t", "text": "inline"}},
            {"type": "resource", "resource": {"uri": "demo://b", "mimeType": "text/plain", "blob": "AAE="}},
            {"type": "text", "text": "two"}
        ], "structuredContent": {"x": 1}}));
        assert_eq!(
            r.text,
            "one\n\n[image: image/png, 8 bytes]\n\n[audio: audio/wav, 3 bytes]\n\n[resource link: R1 <demo://r/1>]\n\ninline\n\n[resource: <demo://b>, text/plain, 2 bytes]\n\ntwo"
        );
        assert!(!r.is_error);
        let s = flatten(&json!({"content": [], "structuredContent": {"result": 5}, "isError": true}));
        assert_eq!(s, CallResult { text: "{\"result\":5}".into(), is_error: true });
        assert_eq!(flatten(&json!({})).text, "The tool returned no content.");
    }

    #[test]
    fn base64_lengths() {
        assert_eq!(base64_len(""), 0);
        assert_eq!(base64_len("AA=="), 1);
        assert_eq!(base64_len("AAA="), 2);
        assert_eq!(base64_len("AAAA"), 3);
        assert_eq!(base64_len("AAAAAA"), 4);
    }

    #[test]
    fn tools_are_named_for_the_model() {
        let t = tool("srv", &json!({"name": "fs.read file", "description": "d"})).unwrap();
        assert_eq!(
            (t.name.as_str(), t.mcp_name.as_str(), t.server.as_str()),
            ("fs_read_file", "fs.read file", "srv")
        );
        assert_eq!(t.input_schema["type"], "object");
        assert!(tool("srv", &json!({"description": "nameless"})).is_none());
    }
}
