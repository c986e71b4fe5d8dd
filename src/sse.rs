//! Server-sent events as AstrBot writes them: one `data: <json>` line and a blank line per
//! event, the JSON with Python's `json.dumps` separators (`", "` and `": "`) and non-ASCII
//! text raw. Events travel as finished frames through a channel from the chat run to the
//! server's writer, which adds the chunked framing and the `: heartbeat` comments.
//!
//! This is the wire format only, shared by the server and the chat layer; the events
//! themselves are built in `chat::events`.

use std::io;

use serde::Serialize;
use serde_json::Value;

/// serde_json's compact output with Python's default separators.
struct PythonFormatter;

impl serde_json::ser::Formatter for PythonFormatter {
    fn begin_array_value<W: ?Sized + io::Write>(&mut self, w: &mut W, first: bool) -> io::Result<()> {
        if first { Ok(()) } else { w.write_all(b", ") }
    }

    fn begin_object_key<W: ?Sized + io::Write>(&mut self, w: &mut W, first: bool) -> io::Result<()> {
        if first { Ok(()) } else { w.write_all(b", ") }
    }

    fn begin_object_value<W: ?Sized + io::Write>(&mut self, w: &mut W) -> io::Result<()> {
        w.write_all(b": ")
    }
}

/// `value` as Python's `json.dumps(value, ensure_ascii=False)` writes it.
pub fn python_json(value: &Value) -> String {
    let mut out = Vec::new();
    let mut ser = serde_json::Serializer::with_formatter(&mut out, PythonFormatter);
    value.serialize(&mut ser).expect("a JSON value always serialises");
    String::from_utf8(out).expect("serde_json writes UTF-8")
}

/// One SSE frame: `data: <json>\n\n`.
pub fn frame(event: &Value) -> String {
    format!("data: {}\n\n", python_json(event))
}

/// The comment sent after each second without events.
pub const HEARTBEAT: &str = ": heartbeat\n\n";

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn frames_like_astrbot() {
        let e = json!({"type": "session_id", "data": null, "session_id": "s-1"});
        assert_eq!(
            frame(&e),
            "data: {\"type\": \"session_id\", \"data\": null, \"session_id\": \"s-1\"}\n\n"
        );
        assert_eq!(python_json(&json!({"a": [1, 2], "b": "你好\n"})), "{\"a\": [1, 2], \"b\": \"你好\\n\"}");
    }
}
