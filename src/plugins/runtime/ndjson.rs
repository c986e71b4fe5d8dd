//! Newline-delimited JSON-RPC 2.0, the pieces every child-process peer shares: the bounded
//! line reader, a message's kind, and the routing of answers to waiting callers by `id`.
//!
//! Used by the plugin runtime and by the MCP client (`mcp::client::jsonrpc` builds its
//! session core on [`Calls`], its transports read with [`read_line`]). Nothing here knows
//! which protocol runs over it: no method names, no handshake.

use std::collections::HashMap;
use std::io::{self, BufRead};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::Sender;

use serde_json::Value;

/// The longest message (one line) read from a peer.
pub(crate) const MAX_LINE: usize = 16 * 1024 * 1024;

/// What a waiting caller receives: the whole response message, or why there will be none.
pub(crate) type Answer = Result<Value, String>;

/// Why [`Calls::register`] refused a request.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Refused {
    /// The peer is gone (the text says how); nothing will be answered.
    Broken(String),
    /// Already as many requests in flight as allowed.
    Full,
}

/// The requests in flight on one connection, by id, and whether the connection still works.
pub(crate) struct Calls {
    next_id: AtomicU64,
    pending: Mutex<HashMap<u64, Sender<Answer>>>,
    broken: Mutex<Option<String>>,
    max: usize,
}

impl Calls {
    /// At most `max` requests wait at once; more are refused rather than queued.
    pub fn new(max: usize) -> Calls {
        Calls {
            next_id: AtomicU64::new(0),
            pending: Mutex::new(HashMap::new()),
            broken: Mutex::new(None),
            max,
        }
    }

    /// Registers a request about to be sent; its answer arrives on `tx`.
    pub fn register(&self, tx: Sender<Answer>) -> Result<u64, Refused> {
        if let Some(why) = self.broken() {
            return Err(Refused::Broken(why));
        }
        let mut pending = lock(&self.pending);
        if pending.len() >= self.max {
            return Err(Refused::Full);
        }
        // Ids are integers from 0, never reused on one connection.
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        pending.insert(id, tx);
        Ok(id)
    }

    /// Forgets a request (timed out, or never sent); false when it was no longer waiting
    /// (its answer has just been delivered, or the connection failed it).
    pub fn forget(&self, id: u64) -> bool {
        lock(&self.pending).remove(&id).is_some()
    }

    /// Requests waiting for their answer.
    pub fn in_flight(&self) -> usize {
        lock(&self.pending).len()
    }

    /// Why the connection no longer works, if it does not.
    pub fn broken(&self) -> Option<String> {
        lock(&self.broken).clone()
    }

    /// Marks the connection broken and fails every waiting caller now; true the first time
    /// (the first reason stays).
    pub fn fail_all(&self, why: &str) -> bool {
        let first = {
            let mut broken = lock(&self.broken);
            let first = broken.is_none();
            if first {
                *broken = Some(why.to_owned());
            }
            first
        };
        let drained: Vec<_> = lock(&self.pending).drain().collect();
        for (_, tx) in drained {
            let _ = tx.send(Err(why.to_owned()));
        }
        first
    }

    /// Hands a response to the caller waiting for `id`; false when nobody waits for it (a
    /// cancelled or timed-out request may still be answered).
    pub fn answer(&self, id: &Value, msg: Value) -> bool {
        match id.as_u64().and_then(|id| lock(&self.pending).remove(&id)) {
            Some(tx) => {
                let _ = tx.send(Ok(msg));
                true
            }
            None => false,
        }
    }
}

/// A JSON-RPC message by kind.
#[derive(Debug, PartialEq)]
pub(crate) enum Kind<'a> {
    /// A request of the peer: it wants an answer with this id.
    Request {
        method: &'a str,
        id: &'a Value,
    },
    Notification {
        method: &'a str,
        params: Option<&'a Value>,
    },
    /// An answer (`result` or `error`) to one of our requests.
    Response {
        id: &'a Value,
    },
    /// Not a message (no method, no id, not an object).
    Invalid,
}

pub(crate) fn kind(msg: &Value) -> Kind<'_> {
    let Some(obj) = msg.as_object() else { return Kind::Invalid };
    let method = obj.get("method").and_then(Value::as_str);
    let id = obj.get("id").filter(|id| !id.is_null());
    match (method, id) {
        (Some(method), Some(id)) => Kind::Request { method, id },
        (Some(method), None) => Kind::Notification { method, params: obj.get("params") },
        (None, Some(id)) => Kind::Response { id },
        (None, None) => Kind::Invalid,
    }
}

/// Locks a mutex, going on with the data if a panicking thread poisoned it (every value
/// guarded with it stays consistent between statements).
pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The first `max` characters of `s`.
pub(crate) fn cut(s: &str, max: usize) -> &str {
    match s.char_indices().nth(max) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

/// The messages in a JSON text: one message, or each of a batch.
pub(crate) fn messages(text: &str) -> Result<Vec<Value>, serde_json::Error> {
    Ok(match serde_json::from_str::<Value>(text)? {
        Value::Array(batch) => batch,
        one => vec![one],
    })
}

/// One message as a line to send.
pub(crate) fn line_of(msg: &Value) -> Vec<u8> {
    let mut line = msg.to_string().into_bytes();
    line.push(b'\n');
    line
}

/// One line read by [`read_line`].
#[derive(Debug, PartialEq)]
pub(crate) enum Line {
    Text(Vec<u8>),
    /// Longer than the limit: what was read of it is dropped.
    TooLong,
    Eof,
}

/// Reads one line ending in `\n` (a trailing `\r` removed) of at most `max` bytes, never
/// holding more than that in memory.
pub(crate) fn read_line(r: &mut impl BufRead, max: usize) -> io::Result<Line> {
    let mut buf = Vec::new();
    let mut too_long = false;
    loop {
        let avail = match r.fill_buf() {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if avail.is_empty() {
            return Ok(match (too_long, buf.is_empty()) {
                (true, _) => Line::TooLong,
                (false, true) => Line::Eof,
                (false, false) => Line::Text(buf),
            });
        }
        let (chunk, end) = match avail.iter().position(|&b| b == b'\n') {
            Some(i) => (i, true),
            None => (avail.len(), false),
        };
        if !too_long && buf.len().saturating_add(chunk) <= max {
            buf.extend_from_slice(&avail[..chunk]);
        } else {
            too_long = true;
            buf = Vec::new();
        }
        r.consume(if end { chunk + 1 } else { chunk });
        if end {
            if too_long {
                return Ok(Line::TooLong);
            }
            if buf.last() == Some(&b'\r') {
                buf.pop();
            }
            return Ok(Line::Text(buf));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::sync::mpsc::channel;

    #[test]
    fn answers_are_routed_by_id() {
        let calls = Calls::new(2);
        let (tx0, rx0) = channel();
        let (tx1, rx1) = channel();
        assert_eq!(calls.register(tx0), Ok(0));
        assert_eq!(calls.register(tx1), Ok(1));
        let (tx, _rx) = channel();
        assert_eq!(calls.register(tx), Err(Refused::Full));
        assert!(calls.answer(&json!(1), json!({"id": 1, "result": 5})));
        assert_eq!(rx1.try_recv().unwrap().unwrap()["result"], 5);
        assert!(!calls.answer(&json!(1), json!({})), "answered once");
        assert!(!calls.answer(&json!("1"), json!({})), "ids are numbers");
        assert!(rx0.try_recv().is_err(), "id 0 is still waiting");
        assert!(calls.fail_all("gone"));
        assert!(!calls.fail_all("again"), "the first reason stays");
        assert_eq!(rx0.try_recv().unwrap(), Err("gone".to_owned()));
        let (tx, _rx) = channel();
        assert_eq!(calls.register(tx), Err(Refused::Broken("gone".into())));
        assert_eq!(calls.in_flight(), 0);
    }

    #[test]
    fn messages_are_told_apart() {
        assert_eq!(
            kind(&json!({"id": 1, "method": "ping"})),
            Kind::Request { method: "ping", id: &json!(1) }
        );
        assert_eq!(
            kind(&json!({"method": "x", "id": null})),
            Kind::Notification { method: "x", params: None }
        );
        assert_eq!(kind(&json!({"id": 3, "result": {}})), Kind::Response { id: &json!(3) });
        assert_eq!(kind(&json!(42)), Kind::Invalid);
        assert_eq!(kind(&json!({"result": 1})), Kind::Invalid);
    }

    #[test]
    fn lines_are_bounded() {
        let mut r = io::Cursor::new(b"ab\r\n0123456789\nxy".to_vec());
        assert_eq!(read_line(&mut r, 5).unwrap(), Line::Text(b"ab".to_vec()));
        assert_eq!(read_line(&mut r, 5).unwrap(), Line::TooLong);
        assert_eq!(read_line(&mut r, 5).unwrap(), Line::Text(b"xy".to_vec()));
        assert_eq!(read_line(&mut r, 5).unwrap(), Line::Eof);
        // A long line split over many buffer fills is still dropped whole.
        let mut r = io::BufReader::with_capacity(4, io::Cursor::new(b"0123456789abcdef\nok\n".to_vec()));
        assert_eq!(read_line(&mut r, 8).unwrap(), Line::TooLong);
        assert_eq!(read_line(&mut r, 8).unwrap(), Line::Text(b"ok".to_vec()));
    }

    #[test]
    fn batches_are_split() {
        assert_eq!(messages("[{\"a\":1},{\"b\":2}]").unwrap().len(), 2);
        assert_eq!(messages("{\"a\":1}").unwrap().len(), 1);
        assert!(messages("not json").is_err());
    }
}
