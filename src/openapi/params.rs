//! The query parameters each route reads, as the handlers in `api` read them: the
//! `required_query` ones are required and non-blank (AstrBot's `Missing key: <name>`), the
//! optional ones keep the handlers' lenient forms (pydantic-lax booleans, Python's `int()`).

use serde_json::{Value, json};

use super::schemas::{WS, bool_string_pattern, nonblank_pattern};
use crate::routes::Route;

/// A required, non-blank string (`required_query` trims it).
fn required(name: &str, description: &str) -> Value {
    json!({"name": name, "in": "query", "required": true, "description": description,
           "schema": {"type": "string", "minLength": 1, "pattern": nonblank_pattern()}})
}

fn optional(name: &str, description: &str, schema: Value) -> Value {
    json!({"name": name, "in": "query", "required": false, "description": description, "schema": schema})
}

fn text() -> Value {
    json!({"type": "string"})
}

/// Pydantic's lax booleans as the handlers read them (trimmed, any case); empty is absent.
fn lax_bool() -> Value {
    json!({"type": "string",
           "pattern": bool_string_pattern(true),
           "description": "A boolean in pydantic's lax forms, any case: true/false, 1/0, yes/no, on/off, y/n, t/f"})
}

/// Python's `int()`: digits with an optional sign, surrounding spaces and single `_`
/// between digits; values beyond 64 bits read as the nearest bound.
fn python_int() -> Value {
    json!({"type": "string", "pattern": format!("^[{WS}]*[+-]?[0-9]+(_[0-9]+)*[{WS}]*$"), "description": "An integer as Python's int() reads it"})
}

/// The query parameters of `route`, beyond the credentials (`api_key`, a security scheme).
pub fn query(route: &Route) -> Vec<Value> {
    let username = || {
        required(
            "username",
            "The session owner; an administrator's id needs the admin token or chat:admin, and `key:<key_id>` belongs to that key. Missing or blank: AstrBot's 200-error",
        )
    };
    match (route.method, route.path) {
        ("GET", "/api/v1/chat/sessions") => vec![
            optional(
                "username",
                "The session owner; required for API keys (missing or blank: AstrBot's 200-error), an administrator's id needs the admin token or chat:admin, and `key:<key_id>` belongs to that key. The admin token may leave it out to list every session",
                text(),
            ),
            optional("page", "1-based page (default 1; below 1 reads as 1)", python_int()),
            optional("page_size", "Sessions per page (default 20, clamped to 1..100)", python_int()),
            optional("platform_id", "Only sessions of this platform (empty: all)", text()),
        ],
        ("GET", "/api/v1/chat/sessions/{session_id}") => vec![
            username(),
            optional(
                "page",
                "1-based page of messages, page 1 the newest (default 1; below 1 or not an integer: 400)",
                json!({"type": "string", "pattern": format!("^[{WS}]*[+]?0*[1-9][0-9]{{0,17}}[{WS}]*$"), "description": "An integer of at least 1"}),
            ),
            optional(
                "page_size",
                "Messages per page (default 1000; outside 1..1000: 400)",
                json!({"type": "string", "pattern": format!("^[{WS}]*[+]?0*([1-9][0-9]{{0,2}}|1000)[{WS}]*$"), "description": "An integer from 1 to 1000"}),
            ),
        ],
        ("DELETE", "/api/v1/chat/sessions/{session_id}") => vec![username()],
        ("GET", "/api/v1/file") => {
            vec![required(
                "attachment_id",
                "The attachment; blank is AstrBot's 200-error `Missing key: attachment_id`",
            )]
        }
        ("GET", "/api/v1/files/content") => vec![required(
            "filename",
            "A display name without a path (`a/b` or `..` is the 200-error `Invalid file path`); the newest attachment of that name",
        )],
        ("GET", "/api/v1/api-keys/{key_id}/webhook/deliveries") => vec![optional(
            "limit",
            "How many events, newest first (default 50)",
            json!({"type": "string", "pattern": format!("^[{WS}]*[+]?0*([1-9][0-9]{{0,2}}|1000)[{WS}]*$"), "description": "An integer from 1 to 1000"}),
        )],
        ("GET", "/api/v1/bots") => vec![
            optional("enabled", "Only enabled (true) or disabled (false) bots", lax_bool()),
            optional("type", "Only bots of this type (webchat, telegram, aiocqhttp)", text()),
        ],
        ("GET" | "DELETE", "/api/v1/bots/by-id") => vec![required("bot_id", "The bot")],
        ("DELETE", "/api/v1/mcp/servers/by-name") => vec![required("server_name", "The MCP server")],
        ("DELETE", "/api/v1/skills/by-name") => vec![required("skill_name", "The skill ([A-Za-z0-9._-]+)")],
        ("GET", "/api/v1/skills/files") => {
            vec![required("skill_name", "The skill ([A-Za-z0-9._-]+)"), folder()]
        }
        ("GET", "/api/v1/skills/file") => vec![
            required("skill_name", "The skill ([A-Za-z0-9._-]+)"),
            required("path", "A file relative to the skill; no `..`, not absolute"),
        ],
        ("GET", "/api/v1/skills/{skill_name}/files") => {
            vec![folder()]
        }
        ("GET", "/api/v1/personas") => {
            vec![optional("folder_id", "Only the personas of this folder; empty: the root's", text())]
        }
        ("GET" | "DELETE", "/api/v1/personas/by-id") => vec![required("persona_id", "The persona")],
        ("GET", "/api/v1/persona-folders") => {
            vec![optional("parent_id", "The folders in this folder (default and empty: the root)", text())]
        }
        ("GET" | "DELETE", "/api/v1/provider-sources/by-id") => {
            vec![required("source_id", "The provider source")]
        }
        ("GET", "/api/v1/providers") => vec![
            optional(
                "capability",
                "chat, agent, stt, tts, embedding, rerank, or a provider_type as is",
                text(),
            ),
            optional("source_id", "Only the providers of this source", text()),
            optional("enabled", "Only enabled (true) or disabled (false) providers", lax_bool()),
        ],
        ("GET", "/api/v1/providers/by-id") => vec![
            required("provider_id", "The provider"),
            optional(
                "merged",
                "Merge the provider with its source when a lax true (true, 1, yes, on, ...); anything else reads false",
                text(),
            ),
        ],
        ("DELETE", "/api/v1/providers/by-id") => vec![required("provider_id", "The provider")],
        ("GET", "/api/v1/providers/{provider_id:path}") => {
            vec![optional(
                "merged",
                "Merge the provider with its source when a lax true (true, 1, yes, on, ...); anything else reads false",
                text(),
            )]
        }
        ("GET", "/api/v1/logs/history") => vec![
            optional(
                "limit",
                "How many of the newest lines (default 100; any larger number reads as the buffer's size; 0 or not a number: 400)",
                json!({"type": "string", "pattern": format!("^[{WS}]*([+]?0*[1-9][0-9]*[{WS}]*)?$"), "description": "A positive integer; empty reads as absent"}),
            ),
            level(),
        ],
        ("GET", "/api/v1/logs/live") => vec![level()],
        ("GET", "/api/v1/plugins") => vec![
            optional("name", "Only the plugin of this name", text()),
            optional("plugin_id", "Only the plugin of this name (when name is not given)", text()),
        ],
        ("GET" | "DELETE", "/api/v1/plugins/by-id") | ("GET", "/api/v1/plugins/readme") => {
            vec![required("plugin_id", "The plugin's name")]
        }
        // Not wrapped in AstrBot's 200-errors: a name no plugin can have is a 400.
        ("GET", "/api/v1/plugins/config" | "/api/v1/plugins/config/schema") => vec![json!({
            "name": "plugin_id", "in": "query", "required": true,
            "description": "The plugin's name: a Python identifier of ASCII letters, digits and _, at most 64 (anything else is 400 `插件 X 不存在`)",
            "schema": {"type": "string", "minLength": 1, "maxLength": 64, "pattern": "^[A-Za-z_][A-Za-z0-9_]*$"}
        })],
        ("GET", "/api/v1/plugins/market") => vec![
            optional(
                "custom_registry",
                "A registry URL (http/https) instead of the default one; cached apart",
                text(),
            ),
            optional(
                "force_refresh",
                "1, true, yes or on (any case): fetch even when the cache is current",
                text(),
            ),
        ],
        ("DELETE", "/api/v1/plugin-sources/by-id") => {
            vec![required("source_id", "The id, else url, else name of the sources to remove")]
        }
        ("GET", "/api/v1/chat/runs/{run_id}/stream") => vec![
            optional(
                "last_event_id",
                "Resume after this event id (as the Last-Event-ID header; the header wins); digits, below 2^64",
                json!({"type": "string", "pattern": "^[0-9]{1,20}$"}),
            ),
            json!({"name": "Last-Event-ID", "in": "header", "required": false,
                   "description": "Resume after this event id (the number of run events already received); digits, below 2^64",
                   "schema": {"type": "string", "pattern": "^[0-9]{1,20}$"}}),
        ],
        _ => Vec::new(),
    }
}

/// A skill folder's relative path; its example is the skill's root.
fn folder() -> Value {
    let mut p =
        optional("path", "A folder relative to the skill (default: its root); no `..`, not absolute", text());
    p["example"] = json!(".");
    p
}

/// The log level filter: that level and more severe; anything else is 400.
fn level() -> Value {
    optional(
        "level",
        "error, warn (or warning), info, debug or trace, any case: that level and more severe (default and empty: every line kept)",
        json!({"type": "string", "pattern": format!(
            "^[{WS}]*(([eE][rR][rR][oO][rR]|[wW][aA][rR][nN]([iI][nN][gG])?|[iI][nN][fF][oO]|[dD][eE][bB][uU][gG]|[tT][rR][aA][cC][eE])[{WS}]*)?$"
        )}),
    )
}
