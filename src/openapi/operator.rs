//! The component schemas of the operator's routes (admin token only, beyond AstrBot): log
//! lines, statistics, knowledge collections and the password change. Merged into the
//! document by `schemas::schemas`.

use serde_json::{Value, json};

use crate::logbuf::MAX_LINES;

/// The `mcp` part of the statistics.
fn mcp_stats() -> Value {
    let count = json!({"type": "integer", "minimum": 0});
    let server = json!({"type": "object", "required": ["name", "status", "tools", "calls", "errors", "total_ms"], "properties": {
        "name": {"type": "string"},
        "status": {"enum": ["connecting", "connected", "error", "stopped"]},
        "error": {"type": ["string", "null"]},
        "since": {"type": "string"},
        "restarts": count,
        "tools": count,
        "calls": count,
        "errors": count,
        "total_ms": count
    }});
    json!({"type": "object", "required": ["calls", "errors", "total_ms", "servers", "builtin_calls", "builtin_errors"],
        "description": "MCP tool calls since the server started (errors: failed calls and results the server flagged as errors; total_ms: their summed duration), each running MCP server (its state, tool count and its own calls), and the calls of the built-in tools (current_time, knowledge_search, read_attachment) and how many failed",
        "properties": {"calls": count, "errors": count, "total_ms": count, "servers": {"type": "array", "items": server},
            "builtin_calls": count, "builtin_errors": count}})
}

/// The operator's schemas, by name.
pub fn schemas() -> Value {
    json!({
        "LogLine": {
            "type": "object",
            "required": ["seq", "time", "level", "target", "message"],
            "description": "One log line; also the JSON of each `data:` event of GET /api/v1/logs/live",
            "properties": {
                "seq": {"type": "integer", "minimum": 1, "description": "Increasing over the server's life; a gap means lines were missed"},
                "time": {"type": "string", "format": "date-time"},
                "level": {"enum": ["ERROR", "WARN", "INFO", "DEBUG", "TRACE"]},
                "target": {"type": "string", "description": "The module that logged the line"},
                "message": {"type": "string", "maxLength": 4096}
            }
        },
        "LogHistory": {
            "type": "object",
            "required": ["lines", "capacity"],
            "properties": {
                "lines": {"type": "array", "maxItems": MAX_LINES, "items": {"$ref": "#/components/schemas/LogLine"}},
                "capacity": {"type": "integer", "description": "Lines the server keeps"}
            }
        },
        "Stats": {
            "type": "object",
            "required": ["version", "uptime_secs", "requests_today", "requests_today_total", "active_streams", "chat_runs", "upstream_errors", "outbox_pending", "outbox_dropped", "bots", "mcp"],
            "properties": {
                "version": {"type": "string"},
                "uptime_secs": {"type": "integer", "minimum": 0},
                "requests_today": {
                    "type": "array",
                    "description": "Keys that made requests this UTC day, busiest first",
                    "items": {
                        "type": "object",
                        "required": ["key_id", "name", "count"],
                        "properties": {"key_id": {"type": "string"}, "name": {"type": "string"}, "count": {"type": "integer", "minimum": 1}}
                    }
                },
                "requests_today_total": {"type": "integer", "minimum": 0},
                "active_streams": {"type": "integer", "minimum": 0, "description": "Chat SSE streams open now"},
                "chat_runs": {"type": "integer", "minimum": 0, "description": "Chat runs in progress now"},
                "upstream_errors": {"type": "integer", "minimum": 0, "description": "LLM requests that failed since the server started"},
                "outbox_pending": {"type": "integer", "minimum": 0, "description": "Webhook events waiting for delivery, over every key"},
                "outbox_dropped": {"type": "integer", "minimum": 0, "description": "Webhook events dropped because a key's outbox was full, over every key"},
                "bots": {"type": "array", "description": "Each configured bot's adapter: id, type and its state (running, starting, stopped, error with the last error and since when)",
                    "items": {"allOf": [{"$ref": "#/components/schemas/BotState"}], "properties": {"id": {"type": "string"}, "type": {"type": "string"}}}},
                "mcp": mcp_stats()
            }
        },
        "KbCollections": {
            "type": "object",
            "required": ["collections"],
            "properties": {
                "collections": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["name", "passages", "bundled"],
                        "properties": {
                            "name": {"type": "string"},
                            "passages": {"type": "integer", "minimum": 0},
                            "bundled": {"type": "boolean", "description": "true for docs, the bundled guides"}
                        }
                    }
                }
            }
        },
        "KbUpload": {
            "type": "object",
            "required": ["file"],
            "description": "One or more file parts (any field name; .md, .markdown, .txt, .text, .html, .htm); replaces the collection",
            "properties": {
                "file": {"type": "string", "format": "binary"},
                "base_url": {"type": "string", "maxLength": 2048, "description": "Passages link to <base_url>/<file stem> (HTML: <base_url>/<file name>) instead of kb:<collection>/<file>"}
            }
        },
        "KbUploaded": {
            "type": "object",
            "required": ["name", "passages", "files", "skipped"],
            "properties": {
                "name": {"type": "string"},
                "passages": {"type": "integer", "minimum": 0},
                "files": {"type": "array", "items": {"type": "string"}, "description": "Files read"},
                "skipped": {"type": "array", "items": {"type": "string"}, "description": "Files of other types, not read"}
            }
        },
        "KbRemoved": {"type": "object", "required": ["name"], "properties": {"name": {"type": "string"}}},
        "PasswordChange": {
            "type": "object",
            "required": ["current_password", "new_password"],
            "properties": {
                "current_password": {"type": "string"},
                "new_password": {"type": "string", "minLength": 8, "maxLength": 1024}
            }
        },
        "PasswordChanged": {
            "type": "object",
            "required": ["username", "signed_out"],
            "properties": {
                "username": {"type": "string"},
                "signed_out": {"const": true, "description": "Every admin token, this one included, is signed out: log in again"}
            }
        }
    })
}
