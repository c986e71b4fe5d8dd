//! The "try it" examples of the reference: a request body per operation and a value per
//! parameter, each one that succeeds on a fresh server with a fresh key of the operation's
//! scope (the admin token for `system`). They build on each other the way a first session
//! does: the persona `tutor`, the provider source `example-source` and its provider
//! `example-source/llama3.2`, the chat session `reference-example` of `alice`. Ids the
//! server generates (a key, a folder, a config profile, an attachment, a webhook delivery,
//! a chunked upload of 28 bytes in one chunk, a download token, a chat run) are written as
//! `KEY_ID`, `FOLDER_ID`, `CONF_ID`, `ATTACHMENT_ID`, `DELIVERY_ID`, `UPLOAD_ID`, `FILE_TOKEN`
//! and `RUN_ID`, to be replaced with the id an earlier answer gave; `tests/it/reference_examples.rs` sends
//! every example this way.

use serde_json::{Value, json};

use crate::routes::Route;

pub const SOURCE_ID: &str = "example-source";
pub const PROVIDER_ID: &str = "example-source/llama3.2";
/// The examples' bot: a OneBot v11 reverse WebSocket on loopback (it only listens, so
/// trying the examples never reaches out to a platform).
pub const BOT_ID: &str = "qq";
/// The examples' MCP server: the reference server `server-everything`, stored inactive
/// (trying the examples never starts a process).
pub const MCP_SERVER: &str = "everything";
/// Where the test examples look for a running MCP server: a Streamable HTTP server on
/// loopback, as the guide `tools` starts one.
const MCP_LOCAL: &str = "http://127.0.0.1:8000/mcp";
/// The examples' skill, uploaded as `csv-report.zip` (`static/docs/skills.md`).
pub const SKILL: &str = "csv-report";
pub const UMO: &str = "webchat:FriendMessage:webchat!alice!reference-example";

/// The examples' plugin, uploaded as `astrbot_plugin_hello.zip` (`tests/it/plugins_api.rs` builds it).
pub const PLUGIN: &str = "astrbot_plugin_hello";
/// A plugin folder that failed to load (it has no metadata.yaml).
pub const BROKEN_PLUGIN: &str = "broken_example";

/// The example value of a path or query parameter, by name and place.
pub fn param(name: &str, place: &str) -> Option<Value> {
    let v = match name {
        "page" if place == "query" => json!("1"),
        "page_size" => json!("20"),
        "username" => json!("alice"),
        "session_id" => json!("reference-example"),
        "persona_id" => json!("tutor"),
        "bot_id" => json!(BOT_ID),
        "source_id" => json!(SOURCE_ID),
        "provider_id" => json!(PROVIDER_ID),
        "umo" => json!(UMO),
        "filename" => json!("notes.txt"),
        "key_id" => json!("KEY_ID"),
        "delivery_id" => json!("DELIVERY_ID"),
        "folder_id" => json!("FOLDER_ID"),
        "config_id" => json!("CONF_ID"),
        "attachment_id" => json!("ATTACHMENT_ID"),
        "file_token" => json!("FILE_TOKEN"),
        "run_id" => json!("RUN_ID"),
        "page" => json!("quickstart"),
        "file" => json!("style.css"),
        "name" if place == "path" => json!("handbook"),
        "limit" => json!("50"),
        "level" => json!("info"),
        "server_name" => json!(MCP_SERVER),
        "skill_name" => json!(SKILL),
        "file_path" => json!("SKILL.md"),
        "path" if place == "query" => json!("SKILL.md"),
        "plugin_id" => json!(PLUGIN),
        "dir_name" => json!(BROKEN_PLUGIN),
        _ => return None,
    };
    Some(v)
}

fn bot() -> Value {
    json!({"id": BOT_ID, "type": "aiocqhttp", "ws_reverse_host": "127.0.0.1", "ws_reverse_port": 6199,
           "ws_reverse_token": "change-me"})
}

fn source() -> Value {
    json!({"id": SOURCE_ID, "provider": "ollama", "type": "openai_chat_completion", "provider_type": "chat_completion",
           "key": ["ollama"], "api_base": "http://127.0.0.1:11434/v1", "timeout": 30, "custom_headers": {}})
}

fn provider() -> Value {
    json!({"id": PROVIDER_ID, "provider_source_id": SOURCE_ID, "model": "llama3.2", "enable": true,
           "modalities": ["text"], "custom_extra_body": {"temperature": 0.4}})
}

fn mcp_server() -> Value {
    json!({"active": false, "command": "npx", "args": ["-y", "@modelcontextprotocol/server-everything"]})
}

fn mcp_local() -> Value {
    json!({"transport": "streamable_http", "url": MCP_LOCAL})
}

const PROMPT: &str = "You are a patient tutor. Answer in two sentences.";

/// The example request body of `route`, if it takes one.
pub fn request(route: &Route) -> Option<Value> {
    let v = match (route.method, route.path) {
        ("POST", "/api/v1/im/messages" | "/api/v1/im/message") => {
            json!({"umo": UMO, "message": "Hello from the API reference"})
        }
        ("POST", "/api/v1/api-keys" | "/api/apikey/create") => {
            json!({"name": "reference example", "scopes": ["chat"], "expires_in_days": 30})
        }
        ("PATCH", "/api/v1/api-keys/{key_id}") => {
            json!({"name": "reference example (renamed)", "daily_limit": 1000})
        }
        ("POST", "/api/apikey/revoke" | "/api/apikey/delete") => json!({"key_id": "KEY_ID"}),
        ("POST", "/api/v1/bots") | ("PUT", "/api/v1/bots/{bot_id:path}") => bot(),
        ("PUT", "/api/v1/bots/by-id") => json!({"bot_id": BOT_ID, "config": bot()}),
        ("PATCH", "/api/v1/bots/enabled") => json!({"bot_id": BOT_ID, "enabled": true}),
        ("PATCH", "/api/v1/bots/{bot_id:path}/enabled") => json!({"enabled": true}),
        ("POST", "/api/v1/bots/test") => json!({"bot_id": BOT_ID}),
        ("POST", "/api/v1/mcp/servers") => {
            let mut v = mcp_server();
            v["name"] = json!(MCP_SERVER);
            v
        }
        ("PUT", "/api/v1/mcp/servers/{server_name:path}") => mcp_server(),
        ("PUT", "/api/v1/mcp/servers/by-name") => json!({"server_name": MCP_SERVER, "config": mcp_server()}),
        ("PATCH", "/api/v1/mcp/servers/enabled") => json!({"server_name": MCP_SERVER, "enabled": false}),
        ("PATCH", "/api/v1/mcp/servers/{server_name:path}/enabled") => json!({"enabled": false}),
        ("POST", "/api/v1/mcp/servers/test") => {
            json!({"server_name": "local", "mcp_server_config": mcp_local()})
        }
        ("POST", "/api/v1/mcp/servers/{server_name:path}/test") => json!({"mcp_server_config": mcp_local()}),
        ("POST", "/api/v1/mcp/providers/modelscope/sync") => json!({"access_token": "ms-your-access-token"}),
        ("PATCH", "/api/v1/skills/by-name") => json!({"skill_name": SKILL, "enabled": true}),
        ("PATCH", "/api/v1/skills/{skill_name}") => json!({"enabled": true}),
        ("PUT", "/api/v1/skills/file") => json!({"skill_name": SKILL, "path": "SKILL.md",
            "content": "---\nname: csv-report\ndescription: Turn a CSV file into a short Markdown report.\n---\n# CSV report\n"}),
        (
            "DELETE",
            "/api/v1/plugins/by-id" | "/api/v1/plugins/{plugin_id}" | "/api/v1/plugins/failed/{dir_name}",
        ) => {
            json!({"delete_config": false, "delete_data": false})
        }
        ("PUT", "/api/v1/plugins/config") => json!({"plugin_id": PLUGIN, "config": {"greeting": "Hi"}}),
        ("PUT", "/api/v1/plugins/{plugin_id}/config") => json!({"config": {"greeting": "Hi"}}),
        ("PATCH", "/api/v1/plugins/enabled") => json!({"plugin_id": PLUGIN, "enabled": true}),
        ("PATCH", "/api/v1/plugins/{plugin_id}/enabled") => json!({"enabled": true}),
        ("POST", "/api/v1/plugins/reload") => json!({"plugin_id": PLUGIN}),
        ("POST", "/api/v1/plugins/install/url") => {
            json!({"url": "https://github.com/your-name/astrbot_plugin_hello", "ignore_version_check": false})
        }
        ("POST", "/api/v1/plugin-sources") => {
            json!({"name": "My market", "url": "https://example.com/plugins.json"})
        }
        ("PUT", "/api/v1/plugin-sources") => {
            json!({"sources": [{"name": "My market", "url": "https://example.com/plugins.json"}]})
        }
        ("POST", "/api/v1/skills/neo/sync") => json!({"skill_key": "csv_report", "require_stable": true}),
        ("POST", "/api/v1/provider-sources") | ("PUT", "/api/v1/provider-sources/{source_id:path}") => {
            source()
        }
        ("PUT", "/api/v1/provider-sources/by-id") => json!({"source_id": SOURCE_ID, "config": source()}),
        ("POST", "/api/v1/providers") | ("PUT", "/api/v1/providers/{provider_id:path}") => provider(),
        ("PUT", "/api/v1/providers/by-id") => json!({"provider_id": PROVIDER_ID, "config": provider()}),
        ("POST", "/api/v1/providers/test") => json!({"provider_id": PROVIDER_ID}),
        ("PATCH", "/api/v1/providers/enabled") => json!({"provider_id": PROVIDER_ID, "enabled": true}),
        ("PATCH", "/api/v1/providers/{provider_id:path}/enabled") => json!({"enabled": true}),
        ("POST", "/api/v1/personas") => json!({"persona_id": "tutor", "system_prompt": PROMPT,
            "begin_dialogs": ["Hi!", "Hello! What shall we study today?"], "tools": null, "skills": null}),
        ("PUT", "/api/v1/personas/by-id") => json!({"persona_id": "tutor", "system_prompt": PROMPT,
            "begin_dialogs": ["Can you help me with fractions?", "Of course. Which part is hard?"]}),
        ("PUT", "/api/v1/personas/{persona_id:path}") => {
            json!({"system_prompt": PROMPT, "custom_error_message": "Sorry, try again in a minute."})
        }
        ("POST", "/api/v1/personas/move") => json!({"persona_id": "tutor", "folder_id": null}),
        ("POST", "/api/v1/personas/reorder") => {
            json!({"items": [{"id": "tutor", "type": "persona", "sort_order": 1}]})
        }
        ("POST", "/api/v1/persona-folders") => {
            json!({"name": "Teaching", "description": "Tutoring personas"})
        }
        ("PUT", "/api/v1/persona-folders/{folder_id:path}") => json!({"name": "Teaching (renamed)"}),
        ("PUT", "/api/v1/system-config") => json!({"timezone": "UTC"}),
        ("POST", "/api/v1/config-profiles") => json!({"name": "support-bot"}),
        ("PUT", "/api/v1/config-profiles/{config_id}") => json!({"timezone": "UTC"}),
        ("PATCH", "/api/v1/config-profiles/{config_id}") => json!({"name": "support-bot (renamed)"}),
        ("PUT", "/api/v1/config-routes") => json!({"routing": {UMO: "default"}}),
        ("PUT", "/api/v1/config-routes/{umo:path}") => json!({"config_id": "default"}),
        ("POST", "/api/v1/chat") => json!({"username": "alice", "session_id": "reference-example",
            "message": "What can you do?", "selected_provider": "builtin", "enable_streaming": true,
            "locale": "en-US", "flags": {"enable_reasoning": true}}),
        ("POST", "/api/v1/files/upload/init") => {
            json!({"filename": "notes.txt", "total_size": 28, "content_type": "text/plain"})
        }
        ("POST", "/api/v1/files/upload/chunk") => json!({"upload_id": "UPLOAD_ID", "chunk_index": "0"}),
        (
            "POST",
            "/api/v1/files/upload/status" | "/api/v1/files/upload/complete" | "/api/v1/files/upload/abort",
        ) => {
            json!({"upload_id": "UPLOAD_ID"})
        }
        ("POST", "/api/v1/files/{attachment_id}/token") => json!({"expires_in": 600}),
        ("POST", "/api/auth/login") => json!({"username": "astrbot", "password": "your-admin-password"}),
        ("POST", "/api/v1/auth/password") => {
            json!({"current_password": "your-admin-password", "new_password": "a-new-strong-password"})
        }
        _ => return None,
    };
    Some(v)
}
