//! The webhook mirror's events (decision 16): one event per request made with a key that
//! has a `webhook_url`, carrying the request and its answer, in the Standard Webhooks
//! shape `{"type": "api.request", "timestamp", "data": {...}}`.
//!
//! The pipeline opens a [`Draft`] once the key is known (before the handler runs, so a
//! refused request is mirrored too) and finishes it with the response; a handler may
//! replace what the request part says (an upload: the file's name, type and size, never
//! its bytes), and a chat stream takes the draft along and finishes it when its run ends,
//! with the whole reply. The finished event goes to the outbox as a memory push
//! (`webhooks::Outbox::push`): nothing here touches the database or the network.
//!
//! Nothing that could authenticate leaves in an event: the `api_key` and `key` query
//! parameters are removed, headers are not mirrored at all, and secret-named fields of a
//! request body are masked as in every answer (`config::redact`). A request or response
//! part beyond 64 KiB is replaced by its size.

use std::time::Instant;

use serde_json::{Map, Value, json};

use crate::config;
use crate::http::Request;
use crate::timefmt::iso;
use crate::webhooks::{Event, new_event_id};

/// Query parameters that carry a key (`auth::extract_credential` reads them).
const CREDENTIAL_PARAMS: [&str; 2] = ["api_key", "key"];
/// The largest request or response part an event carries whole.
const MAX_PART: usize = 64 * 1024;

/// An event under way: what is known of the request before its answer.
pub struct Draft {
    key_id: String,
    method: String,
    path: String,
    query: Value,
    request: Value,
    created_at: i64,
    started: Instant,
}

impl Draft {
    /// The request part of the event for `key_id`: method, path, query without credentials,
    /// and the JSON body with its secrets masked (`null` when there is none).
    pub fn new(key_id: &str, req: &Request<'_>, now: i64) -> Draft {
        let query: Map<String, Value> = req
            .query
            .iter()
            .filter(|(k, _)| !CREDENTIAL_PARAMS.contains(&k.as_str()))
            .map(|(k, v)| (k.clone(), Value::String(v.clone())))
            .collect();
        let request = match &req.json {
            Some(body) if req.body_len.is_some_and(|n| n > MAX_PART) => omitted(body_len(req)),
            Some(body) => {
                let mut body = body.clone();
                config::redact(&mut body);
                body
            }
            None => Value::Null,
        };
        Draft {
            key_id: key_id.to_owned(),
            method: req.method.clone(),
            path: req.path.clone(),
            query: Value::Object(query),
            request,
            created_at: now,
            started: Instant::now(),
        }
    }

    /// Replaces the request part (an upload's summary).
    pub fn set_request(&mut self, request: Value) {
        self.request = request;
    }

    /// The event, with `response` as its response part.
    pub fn finish(self, status: u16, response: &Value) -> Event {
        let text = response.to_string();
        let response = if text.len() > MAX_PART { omitted(text.len()).to_string() } else { text };
        self.finish_raw(status, &response)
    }

    /// The event, with a response part that is already JSON text (an answer's bytes, never
    /// parsed again: this runs on the request's own thread).
    pub fn finish_json_bytes(self, status: u16, body: &[u8]) -> Event {
        if body.len() > MAX_PART {
            return self.finish_raw(status, &omitted(body.len()).to_string());
        }
        match std::str::from_utf8(body) {
            // Our own answers are JSON; the check keeps a mistake from breaking the event.
            Ok(text) if serde_json::from_str::<serde::de::IgnoredAny>(text).is_ok() => {
                self.finish_raw(status, text)
            }
            _ => self.finish_raw(status, &json!({"size": body.len()}).to_string()),
        }
    }

    fn finish_raw(self, status: u16, response: &str) -> Event {
        let duration_ms = self.started.elapsed().as_millis();
        let body = format!(
            "{{\"type\":\"api.request\",\"timestamp\":{},\"data\":{{\"key_id\":{},\"method\":{},\"path\":{},\
             \"query\":{},\"request\":{},\"status\":{status},\"response\":{response},\"duration_ms\":{duration_ms}}}}}",
            Value::String(iso(self.created_at)),
            Value::String(self.key_id.clone()),
            Value::String(self.method),
            Value::String(self.path),
            self.query,
            self.request,
        );
        Event { event_id: new_event_id(), key_id: self.key_id, created_at: self.created_at, body }
    }
}

fn body_len(req: &Request<'_>) -> usize {
    req.body_len.unwrap_or(0)
}

/// What stands for a part too large to mirror.
fn omitted(size: usize) -> Value {
    json!({"omitted": format!("larger than {MAX_PART} bytes"), "size": size})
}

/// The request part of an upload: what was stored, not the bytes.
pub fn upload_summary(filename: &str, content_type: &str, size: u64) -> Value {
    json!({"filename": filename, "content_type": content_type, "size": size})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_carry_no_credential_and_valid_json() {
        let mut body: &[u8] = b"";
        let url = "/api/v1/chat?api_key=abk_secret&key=abk_other&page=2";
        let mut req = Request::new("POST".into(), url, vec![], None, Some(10), &mut body);
        req.json = Some(json!({"message": "hi", "provider": {"api_key": "sk-1234567890abcdef"}}));
        let draft = Draft::new("k1", &req, 1_700_000_000_000_000);
        let event = draft.finish_json_bytes(200, br#"{"status":"ok","data":{"x":1}}"#);
        let body: Value = serde_json::from_str(&event.body).unwrap();
        assert_eq!(body["type"], "api.request");
        assert_eq!(body["data"]["query"], json!({"page": "2"}));
        assert_eq!(body["data"]["response"]["data"]["x"], 1);
        assert_eq!(body["data"]["status"], 200);
        assert!(!event.body.contains("abk_"), "{}", event.body);
        assert!(!event.body.contains("sk-1234567890abcdef"), "{}", event.body);
        assert!(event.event_id.starts_with("msg_"));
        let big = vec![b'a'; MAX_PART + 1];
        let event = Draft::new("k1", &req, 0).finish_json_bytes(200, &big);
        let body: Value = serde_json::from_str(&event.body).unwrap();
        assert_eq!(body["data"]["response"]["size"], MAX_PART + 1);
        let event = Draft::new("k1", &req, 0).finish_json_bytes(500, b"not json");
        assert!(serde_json::from_str::<Value>(&event.body).is_ok());
    }
}
