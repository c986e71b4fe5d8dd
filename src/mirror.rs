//! The webhook mirror's events (decision 16): one event per request made with a key that
//! has a `webhook_url`, carrying the request and its answer, in the Standard Webhooks
//! shape `{"type": "api.request", "timestamp", "data": {...}}`.
//!
//! The pipeline opens a [`Draft`] once the key is known (before the handler runs, so a
//! refused request is mirrored too) and finishes it with the response; a handler may
//! replace what the request part says (an upload: the file's name, type and size, never
//! its bytes), and a chat stream takes the draft along and finishes it when its run ends,
//! with the whole reply. The finished event goes to the outbox as a memory push
//! (`webhooks::Outbox::push`): nothing here touches the database or the network, and the
//! request's thread only copies the parts; the outbox writer masks and formats them.
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
use crate::webhooks::{Body, Event, new_event_id};

/// Query parameters that carry a key (`auth::extract_credential` reads them).
const CREDENTIAL_PARAMS: [&str; 2] = ["api_key", "key"];
/// The largest request or response part an event carries whole.
const MAX_PART: usize = 64 * 1024;

/// An event under way: what is known of the request before its answer. Only copies are
/// made on the request's thread; masking and formatting happen on the outbox writer's
/// (see [`Body::Deferred`]).
pub struct Draft {
    key_id: String,
    method: String,
    path: String,
    query: Vec<(String, String)>,
    request: Value,
    /// The request part is a JSON body whose secrets are still to be masked.
    mask_request: bool,
    created_at: i64,
    started: Instant,
}

/// The response part of an event, as the request left it.
enum ResponsePart {
    /// An answer's JSON bytes (at most [`MAX_PART`]), checked when rendered.
    JsonBytes(Vec<u8>),
    Value(Value),
}

impl Draft {
    /// The request part of the event for `key_id`: method, path, query without credentials,
    /// and the JSON body (`null` when there is none; masked when rendered).
    pub fn new(key_id: &str, req: &Request<'_>, now: i64) -> Draft {
        let query =
            req.query.iter().filter(|(k, _)| !CREDENTIAL_PARAMS.contains(&k.as_str())).cloned().collect();
        let (request, mask_request) = match &req.json {
            Some(_) if req.body_len.is_some_and(|n| n > MAX_PART) => {
                (omitted(req.body_len.unwrap_or(0)), false)
            }
            Some(body) => (body.clone(), true),
            None => (Value::Null, false),
        };
        Draft {
            key_id: key_id.to_owned(),
            method: req.method.clone(),
            path: req.path.clone(),
            query,
            request,
            mask_request,
            created_at: now,
            started: Instant::now(),
        }
    }

    /// Replaces the request part (an upload's summary).
    pub fn set_request(&mut self, request: Value) {
        self.request = request;
        self.mask_request = false;
    }

    /// The event, with `response` as its response part.
    pub fn finish(self, status: u16, response: Value) -> Event {
        self.into_event(status, ResponsePart::Value(response), 0)
    }

    /// The event, with an answer's JSON bytes as its response part (copied; one over
    /// 64 KiB is replaced by its size).
    pub fn finish_json_bytes(self, status: u16, body: &[u8]) -> Event {
        match body.len() > MAX_PART {
            true => self.into_event(status, ResponsePart::Value(omitted(body.len())), 0),
            false => self.into_event(status, ResponsePart::JsonBytes(body.to_vec()), body.len()),
        }
    }

    fn into_event(self, status: u16, response: ResponsePart, response_size: usize) -> Event {
        let duration_ms = self.started.elapsed().as_millis();
        let key_id = self.key_id.clone();
        let created_at = self.created_at;
        // What the parts hold until rendered, roughly, for the queue's memory bound.
        let size =
            response_size + self.path.len() + 256 + if self.mask_request { MAX_PART.min(4096) } else { 0 };
        let render = move || self.render(status, response, duration_ms);
        Event {
            event_id: new_event_id(),
            key_id,
            created_at,
            body: Body::Deferred { size, render: Box::new(render) },
        }
    }

    /// The event's JSON text (on the writer's thread).
    fn render(mut self, status: u16, response: ResponsePart, duration_ms: u128) -> String {
        if self.mask_request {
            config::redact(&mut self.request);
        }
        let query: Map<String, Value> = self.query.into_iter().map(|(k, v)| (k, Value::String(v))).collect();
        let response = match response {
            // Our own answers are JSON; the check keeps a mistake from breaking the event.
            ResponsePart::JsonBytes(bytes) => match std::str::from_utf8(&bytes) {
                Ok(text) if serde_json::from_str::<serde::de::IgnoredAny>(text).is_ok() => text.to_owned(),
                _ => json!({"size": bytes.len()}).to_string(),
            },
            ResponsePart::Value(v) => {
                let text = v.to_string();
                if text.len() > MAX_PART { omitted(text.len()).to_string() } else { text }
            }
        };
        format!(
            "{{\"type\":\"api.request\",\"timestamp\":{},\"data\":{{\"key_id\":{},\"method\":{},\"path\":{},\
             \"query\":{},\"request\":{},\"status\":{status},\"response\":{response},\"duration_ms\":{duration_ms}}}}}",
            Value::String(iso(self.created_at)),
            Value::String(self.key_id),
            Value::String(self.method),
            Value::String(self.path),
            Value::Object(query),
            self.request,
        )
    }
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
        let event = draft.finish_json_bytes(200, br#"{"status":"ok","data":{"x":1}}"#).rendered();
        let body: Value = serde_json::from_str(event.text()).unwrap();
        assert_eq!(body["type"], "api.request");
        assert_eq!(body["data"]["query"], json!({"page": "2"}));
        assert_eq!(body["data"]["response"]["data"]["x"], 1);
        assert_eq!(body["data"]["status"], 200);
        assert!(!event.text().contains("abk_"), "{}", event.text());
        assert!(!event.text().contains("sk-1234567890abcdef"), "{}", event.text());
        assert!(event.event_id.starts_with("msg_"));
        let big = vec![b'a'; MAX_PART + 1];
        let event = Draft::new("k1", &req, 0).finish_json_bytes(200, &big).rendered();
        let body: Value = serde_json::from_str(event.text()).unwrap();
        assert_eq!(body["data"]["response"]["size"], MAX_PART + 1);
        let event = Draft::new("k1", &req, 0).finish_json_bytes(500, b"not json").rendered();
        assert!(serde_json::from_str::<Value>(event.text()).is_ok());
    }
}
