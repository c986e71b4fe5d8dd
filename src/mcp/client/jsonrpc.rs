//! The transport-independent half of a session: JSON-RPC 2.0 messages routed by kind.
//!
//! Every transport hands each message it receives to [`Core::handle`]: a response goes to
//! the caller waiting for its `id` (the pending map), a notification updates the session
//! (tools went stale, a log line of level warning or above is kept for `errlogs`), and a
//! request from the server gets the reply the transport must send back (`ping` → `{}`,
//! anything else → -32601, since this client declares no capabilities). A transport that
//! breaks calls [`Core::fail_all`], which fails every waiting caller at once instead of at
//! its timeout. Also here: the SSE event parser the HTTP transports share. The routing by
//! id, the bounded line reader and the child process are shared with the plugin runtime
//! (`plugins::runtime::{ndjson, child}`).

use std::collections::VecDeque;
use std::io::BufRead;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Sender;

use serde_json::{Value, json};

pub(crate) use crate::plugins::runtime::ndjson::{Answer, Line, cut, lock, messages, read_line};
use crate::plugins::runtime::ndjson::{Calls, Kind, MAX_LINE, Refused, kind};

/// Requests in flight at once on one session; more are refused rather than queued.
pub(crate) const MAX_PENDING: usize = 256;
/// The longest message (a stdio line, an SSE event's data, a JSON body) read from a server.
pub(crate) const MAX_MESSAGE: usize = MAX_LINE;
/// Log lines kept for `errlogs`, and the length each is cut to.
const ERRLOG_LINES: usize = 50;
const ERRLOG_CHARS: usize = 500;

/// Why a request got no result.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Failure {
    /// No answer before the deadline.
    Timeout,
    /// The server answered with a JSON-RPC error.
    Rpc { code: i64, message: String },
    /// The connection is broken or closed (the text says how).
    Broken(String),
}

/// The shared state of one session, seen by the callers and by the transport's threads.
pub(crate) struct Core {
    pub name: String,
    calls: Calls,
    /// Set once the handshake listed the tools: a `list_changed` before that is covered
    /// by the first listing, which the server answers after sending it.
    pub ready: AtomicBool,
    /// The server said its tools changed since the last listing.
    pub stale: AtomicBool,
    errlogs: Mutex<VecDeque<String>>,
}

impl Core {
    pub fn new(name: &str) -> Core {
        Core {
            name: name.to_owned(),
            calls: Calls::new(MAX_PENDING),
            ready: AtomicBool::new(false),
            stale: AtomicBool::new(false),
            errlogs: Mutex::new(VecDeque::new()),
        }
    }

    /// Registers a request about to be sent; its answer arrives on `tx`.
    pub fn register(&self, tx: Sender<Answer>) -> Result<u64, Failure> {
        self.calls.register(tx).map_err(|r| match r {
            Refused::Broken(why) => Failure::Broken(why),
            Refused::Full => Failure::Broken(format!("more than {MAX_PENDING} requests in flight")),
        })
    }

    /// Forgets a request (answered elsewhere, timed out, or never sent).
    pub fn forget(&self, id: u64) {
        self.calls.forget(id);
    }

    /// Requests waiting for their answer.
    #[cfg(test)]
    pub fn in_flight(&self) -> usize {
        self.calls.in_flight()
    }

    /// Why the session no longer works, if it does not.
    pub fn broken(&self) -> Option<String> {
        self.calls.broken()
    }

    /// Marks the session broken and fails every waiting caller now. The first reason stays.
    pub fn fail_all(&self, why: &str) {
        if self.calls.fail_all(why) {
            log::debug!("MCP server {}: {why}", self.name);
        }
    }

    /// Handles one message from the server; returns the reply to send back, if any.
    pub fn handle(&self, msg: Value) -> Option<Value> {
        match kind(&msg) {
            Kind::Request { method, id } => Some(self.answer_request(method, id)),
            Kind::Notification { method, params } => {
                self.notification(method, params);
                None
            }
            Kind::Response { id } => {
                let id = id.clone();
                if !self.calls.answer(&id, msg) {
                    // A cancelled or timed-out request may still be answered: ignore it.
                    log::debug!("MCP server {}: an answer to no waiting request ({id})", self.name);
                }
                None
            }
            Kind::Invalid => None,
        }
    }

    fn answer_request(&self, method: &str, id: &Value) -> Value {
        if method == "ping" {
            return json!({"jsonrpc": "2.0", "id": id, "result": {}});
        }
        log::debug!("MCP server {}: refused its request {}", self.name, cut(method, 80));
        json!({"jsonrpc": "2.0", "id": id, "error": {"code": -32601, "message": "Method not found"}})
    }

    fn notification(&self, method: &str, params: Option<&Value>) {
        match method {
            "notifications/tools/list_changed" if self.ready.load(Ordering::Acquire) => {
                self.stale.store(true, Ordering::Release);
            }
            "notifications/message" => {
                let params = params.cloned().unwrap_or(Value::Null);
                let level = params["level"].as_str().unwrap_or("info").to_ascii_lowercase();
                let data = match &params["data"] {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                log::debug!("MCP server {} [{level}] {}", self.name, cut(&data, ERRLOG_CHARS));
                if matches!(level.as_str(), "warning" | "error" | "critical" | "alert" | "emergency") {
                    self.errlog(&format!("[{}] {data}", level.to_ascii_uppercase()));
                }
            }
            _ => {}
        }
    }

    /// Keeps a log line for `errlogs` (the most recent ones, each cut short).
    pub fn errlog(&self, line: &str) {
        let mut logs = lock(&self.errlogs);
        if logs.len() >= ERRLOG_LINES {
            logs.pop_front();
        }
        logs.push_back(cut(line, ERRLOG_CHARS).to_owned());
    }

    pub fn errlogs(&self) -> Vec<String> {
        lock(&self.errlogs).iter().cloned().collect()
    }
}

/// One server-sent event.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct SseEvent {
    pub event: String,
    pub data: String,
}

/// The WHATWG event-stream format, fed one line at a time (comments, `id:` and `retry:`
/// are ignored: this client does not resume streams).
#[derive(Default)]
pub(crate) struct SseParser {
    event: String,
    data: String,
    has_data: bool,
}

impl SseParser {
    /// Takes one line (without its end); a blank line completes an event.
    pub fn line(&mut self, line: &str) -> Result<Option<SseEvent>, String> {
        if line.is_empty() {
            if !self.has_data && self.event.is_empty() {
                return Ok(None);
            }
            let event =
                if self.event.is_empty() { "message".to_owned() } else { std::mem::take(&mut self.event) };
            let data = std::mem::take(&mut self.data);
            self.has_data = false;
            return Ok(Some(SseEvent { event, data }));
        }
        if line.starts_with(':') {
            return Ok(None);
        }
        let (field, value) = match line.split_once(':') {
            Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
            None => (line, ""),
        };
        match field {
            "event" => self.event = cut(value, 100).to_owned(),
            "data" => {
                if self.data.len().saturating_add(value.len()) >= MAX_MESSAGE {
                    return Err(format!("an event over {} MiB", MAX_MESSAGE >> 20));
                }
                if self.has_data {
                    self.data.push('\n');
                }
                self.data.push_str(value);
                self.has_data = true;
            }
            _ => {}
        }
        Ok(None)
    }
}

/// Reads events from `r` and gives each to `on_event` until it returns false, `stop` is set
/// (checked after every line, keep-alive comments included), the stream ends (Ok), or it
/// fails (Err).
pub(crate) fn read_events(
    r: &mut impl BufRead,
    stop: Option<&AtomicBool>,
    mut on_event: impl FnMut(SseEvent) -> bool,
) -> Result<(), String> {
    let mut parser = SseParser::default();
    loop {
        if stop.is_some_and(|s| s.load(Ordering::Acquire)) {
            return Ok(());
        }
        let line = match read_line(r, MAX_MESSAGE).map_err(|e| format!("the event stream failed: {e}"))? {
            Line::Eof => return Ok(()),
            Line::TooLong => {
                return Err(format!("a line over {} MiB on the event stream", MAX_MESSAGE >> 20));
            }
            Line::Text(t) => t,
        };
        let line = String::from_utf8_lossy(&line);
        if let Some(event) = parser.line(&line)?
            && !on_event(event)
        {
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io;
    use std::sync::mpsc::channel;

    #[test]
    fn responses_are_routed_by_id_and_requests_answered() {
        let core = Core::new("t");
        let (tx0, rx0) = channel();
        let (tx1, rx1) = channel();
        assert_eq!(core.register(tx0), Ok(0));
        assert_eq!(core.register(tx1), Ok(1));
        assert_eq!(core.handle(json!({"jsonrpc":"2.0","id":1,"result":{"x":1}})), None);
        assert_eq!(rx1.try_recv().unwrap().unwrap()["result"]["x"], 1);
        assert!(rx0.try_recv().is_err(), "id 0 is still waiting");
        // An answer nobody waits for (a cancelled request) is dropped quietly.
        assert_eq!(core.handle(json!({"jsonrpc":"2.0","id":7,"result":{}})), None);
        assert_eq!(
            core.handle(json!({"jsonrpc":"2.0","id":"p1","method":"ping"})),
            Some(json!({"jsonrpc":"2.0","id":"p1","result":{}}))
        );
        let refused = core.handle(json!({"jsonrpc":"2.0","id":5,"method":"roots/list"})).unwrap();
        assert_eq!(refused["error"]["code"], -32601);
        assert_eq!(refused["id"], 5);
        core.fail_all("the server exited");
        assert_eq!(rx0.try_recv().unwrap(), Err("the server exited".to_owned()));
        let (tx, _rx) = channel();
        assert_eq!(core.register(tx), Err(Failure::Broken("the server exited".into())));
    }

    #[test]
    fn notifications_mark_tools_stale_and_keep_warnings() {
        let core = Core::new("t");
        core.handle(json!({"jsonrpc":"2.0","method":"notifications/tools/list_changed"}));
        assert!(!core.stale.load(Ordering::Acquire), "before the first listing it changes nothing");
        core.ready.store(true, Ordering::Release);
        core.handle(json!({"jsonrpc":"2.0","method":"notifications/tools/list_changed"}));
        assert!(core.stale.load(Ordering::Acquire));
        core.handle(
            json!({"jsonrpc":"2.0","method":"notifications/message","params":{"level":"info","data":"hi"}}),
        );
        core.handle(json!({"jsonrpc":"2.0","method":"notifications/message","params":{"level":"error","data":"boom"}}));
        core.handle(json!({"jsonrpc":"2.0","method":"notifications/message","params":{"level":"alert","data":{"a":1}}}));
        assert_eq!(core.errlogs(), vec!["[ERROR] boom".to_owned(), "[ALERT] {\"a\":1}".to_owned()]);
    }

    #[test]
    fn pending_requests_are_bounded() {
        let core = Core::new("t");
        let mut keep = Vec::new();
        for _ in 0..MAX_PENDING {
            let (tx, rx) = channel();
            keep.push(rx);
            core.register(tx).unwrap();
        }
        let (tx, _rx) = channel();
        assert!(matches!(core.register(tx), Err(Failure::Broken(_))));
    }

    #[test]
    fn sse_events_are_parsed() {
        let text = ": keep-alive\nevent: endpoint\ndata: /messages/?session_id=1\n\nid: 9\ndata: {\"a\":\ndata: 1}\n\nid: prime\ndata:\n\n";
        let mut events = Vec::new();
        read_events(&mut io::Cursor::new(text.as_bytes().to_vec()), None, |e| {
            events.push(e);
            true
        })
        .unwrap();
        assert_eq!(
            events,
            vec![
                SseEvent { event: "endpoint".into(), data: "/messages/?session_id=1".into() },
                SseEvent { event: "message".into(), data: "{\"a\":\n1}".into() },
                SseEvent { event: "message".into(), data: String::new() },
            ]
        );
        // Stops when asked.
        let mut seen = 0;
        read_events(&mut io::Cursor::new(text.as_bytes().to_vec()), None, |_| {
            seen += 1;
            false
        })
        .unwrap();
        assert_eq!(seen, 1);
        // And when told to stop.
        let stop = AtomicBool::new(true);
        read_events(&mut io::Cursor::new(text.as_bytes().to_vec()), Some(&stop), |_| {
            panic!("read after stop")
        })
        .unwrap();
    }
}
