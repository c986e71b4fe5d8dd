//! Every event a chat stream carries, as AstrBot sends them: those of a run and those of a
//! proactive message delivered into a live stream. The keys and their order are part of
//! the wire contract (clients of AstrBot read them), so each event is built here and
//! nowhere else; `sse` turns an event into its frame.
//!
//! A platform adapter that relays a run elsewhere reads the same events.

use serde_json::{Value, json};

use super::provider::Usage;
use crate::db::kb::Passage;
use crate::sse::python_json;
use crate::timefmt::iso;

/// The first event of a chat: the session the message went to.
pub fn session_id(session_id: &str) -> Value {
    json!({"type": "session_id", "data": null, "session_id": session_id})
}

/// The user's message is stored (`id` its row, `created_at` in microseconds).
pub fn user_message_saved(id: i64, created_at: i64, checkpoint: &str) -> Value {
    json!({"type": "user_message_saved", "data": {"id": id, "created_at": iso(created_at), "llm_checkpoint_id": checkpoint}})
}

pub fn run_started(run_id: &str) -> Value {
    json!({"type": "run_started", "data": {"run_id": run_id}, "streaming": false, "message_id": run_id})
}

/// Text of a run: a delta while streaming; also a proactive message's plain part.
pub fn plain(text: &str, streaming: bool, run_id: &str) -> Value {
    json!({"type": "plain", "data": text, "streaming": streaming, "chain_type": null, "message_id": run_id})
}

/// A model's call of a tool, before it runs: `data` is the JSON text of
/// `{"id", "name", "args", "ts"}` (Python's separators, as AstrBot's `json.dumps`), `args`
/// the parsed arguments (the raw text when they are not JSON), `ts` Unix seconds.
pub fn tool_call(id: &str, name: &str, args: &Value, ts: f64, run_id: &str) -> Value {
    let data = python_json(&json!({"id": id, "name": name, "args": args, "ts": ts}));
    json!({"type": "plain", "data": data, "streaming": false, "chain_type": "tool_call", "message_id": run_id})
}

/// A tool's result, as the model gets it: `data` is the JSON text of `{"id", "ts", "result"}`.
pub fn tool_call_result(id: &str, ts: f64, result: &str, run_id: &str) -> Value {
    let data = python_json(&json!({"id": id, "ts": ts, "result": result}));
    json!({"type": "plain", "data": data, "streaming": false, "chain_type": "tool_call_result", "message_id": run_id})
}

/// A piece of a reasoning model's thoughts, streamed apart from the reply's text.
pub fn reasoning(text: &str, run_id: &str) -> Value {
    json!({"type": "plain", "data": text, "streaming": true, "chain_type": "reasoning", "message_id": run_id})
}

/// A run's statistics, sent as `agent_stats` and stored with the reply. `usage` is summed
/// over the run's requests, `context` the input tokens of the last one. Times are in
/// microseconds; `first_token` is seconds from the start, if any text came.
pub fn stats(usage: Usage, context: u64, started: i64, ended: i64, first_token: Option<f64>) -> Value {
    json!({
        "token_usage": {"input_other": usage.input, "input_cached": usage.cached, "output": usage.output},
        "current_context_tokens": context,
        "start_time": started as f64 / 1e6,
        "end_time": ended as f64 / 1e6,
        "time_to_first_token": first_token.unwrap_or(0.0),
    })
}

pub fn agent_stats(stats: &Value) -> Value {
    json!({"type": "agent_stats", "data": stats})
}

/// The knowledge-base passages an answer drew on, as the reply lists them.
pub fn refs(sources: &[Passage]) -> Vec<Value> {
    sources.iter().map(|s| json!({"title": s.title, "url": s.url})).collect()
}

/// A run's whole text: `complete` after a stream of deltas, else one `plain`.
pub fn reply(text: &str, streaming: bool, run_id: &str, refs: &[Value]) -> Value {
    if streaming {
        json!({"type": "complete", "data": text, "reasoning": "", "streaming": true, "message_id": run_id, "sources": refs})
    } else {
        json!({"type": "plain", "data": text, "streaming": false, "chain_type": null, "message_id": run_id, "sources": refs})
    }
}

/// A bot message is stored: a run's reply (with its checkpoint) or a proactive message
/// (none).
pub fn message_saved(id: i64, created_at: i64, checkpoint: Option<&str>) -> Value {
    json!({"type": "message_saved", "data": {"id": id, "created_at": iso(created_at), "llm_checkpoint_id": checkpoint}})
}

/// The run's reply could not be stored.
pub fn run_failed() -> Value {
    json!({"type": "error", "data": "WebChat run failed"})
}

/// The last event of a run.
pub fn end(run_id: &str) -> Value {
    json!({"type": "end", "data": "", "streaming": false, "message_id": run_id})
}

/// The events of a stored proactive message as a live stream of run `run_id` sees them:
/// each part (media as `[IMAGE]name` and the like, then its `attachment_saved`), a
/// `complete` with the last part's text, and `message_saved`.
pub fn proactive(parts: &[Value], saved_id: i64, created_at: i64, run_id: &str) -> Vec<Value> {
    let mut out = Vec::new();
    let mut last = String::new();
    for part in parts {
        let data = match part["type"].as_str() {
            Some("plain") => {
                let text = part["text"].as_str().unwrap_or_default().to_owned();
                out.push(plain(&text, true, run_id));
                text
            }
            Some(kind) => {
                let tag = match kind {
                    "image" => "IMAGE",
                    "record" => "RECORD",
                    "video" => "VIDEO",
                    _ => "FILE",
                };
                let data = format!("[{tag}]{}", part["filename"].as_str().unwrap_or_default());
                out.push(json!({"type": kind, "data": data, "streaming": true, "message_id": run_id}));
                out.push(
                    json!({"type": "attachment_saved", "data": {"id": part["attachment_id"], "type": kind}}),
                );
                data
            }
            None => continue,
        };
        last = data;
    }
    out.push(json!({"type": "complete", "data": last, "streaming": true, "chain_type": null, "message_id": run_id}));
    out.push(message_saved(saved_id, created_at, None));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sse::frame;

    #[test]
    fn a_proactive_message_reads_as_astrbot_sends_it() {
        let parts = [
            json!({"type": "plain", "text": "hi"}),
            json!({"type": "image", "attachment_id": "a1", "filename": "x.png"}),
        ];
        let frames: Vec<String> = proactive(&parts, 7, 0, "r").iter().map(frame).collect();
        assert_eq!(
            frames,
            [
                "data: {\"type\": \"plain\", \"data\": \"hi\", \"streaming\": true, \"chain_type\": null, \"message_id\": \"r\"}\n\n",
                "data: {\"type\": \"image\", \"data\": \"[IMAGE]x.png\", \"streaming\": true, \"message_id\": \"r\"}\n\n",
                "data: {\"type\": \"attachment_saved\", \"data\": {\"id\": \"a1\", \"type\": \"image\"}}\n\n",
                "data: {\"type\": \"complete\", \"data\": \"[IMAGE]x.png\", \"streaming\": true, \"chain_type\": null, \"message_id\": \"r\"}\n\n",
                "data: {\"type\": \"message_saved\", \"data\": {\"id\": 7, \"created_at\": \"1970-01-01T00:00:00+00:00\", \"llm_checkpoint_id\": null}}\n\n",
            ]
        );
    }

    #[test]
    fn tool_events_read_as_astrbot_sends_them() {
        assert_eq!(
            frame(&tool_call("call_abc", "add", &json!({"a": 1, "b": 2}), 1795332693.812, "r")),
            "data: {\"type\": \"plain\", \"data\": \"{\\\"id\\\": \\\"call_abc\\\", \\\"name\\\": \\\"add\\\", \\\"args\\\": {\\\"a\\\": 1, \\\"b\\\": 2}, \\\"ts\\\": 1795332693.812}\", \"streaming\": false, \"chain_type\": \"tool_call\", \"message_id\": \"r\"}\n\n"
        );
        let result = tool_call_result("call_abc", 1795332693.95, "3", "r");
        assert_eq!(result["data"], "{\"id\": \"call_abc\", \"ts\": 1795332693.95, \"result\": \"3\"}");
        assert_eq!(result["chain_type"], "tool_call_result");
        assert_eq!(result["streaming"], false);
    }

    #[test]
    fn a_reply_is_complete_after_deltas_and_plain_otherwise() {
        let refs = [json!({"title": "t", "url": "u"})];
        assert_eq!(
            frame(&reply("ok", true, "r", &refs)),
            "data: {\"type\": \"complete\", \"data\": \"ok\", \"reasoning\": \"\", \"streaming\": true, \"message_id\": \"r\", \"sources\": [{\"title\": \"t\", \"url\": \"u\"}]}\n\n"
        );
        assert_eq!(
            frame(&reply("ok", false, "r", &[])),
            "data: {\"type\": \"plain\", \"data\": \"ok\", \"streaming\": false, \"chain_type\": null, \"message_id\": \"r\", \"sources\": []}\n\n"
        );
    }
}
