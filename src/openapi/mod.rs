//! The OpenAPI 3.1 document, built from the route table so the two cannot drift: every
//! route is an operation with its scope in `x-astrbot-scope`, its request and response
//! component schemas from [`mod@schemas`] (one function per resource), and the error
//! envelope for the failures it can produce.

mod examples;
mod operator;
mod params;
mod schemas;

use serde_json::{Map, Value, json};

use crate::routes::{Access, Body, ROUTES, Route};
use schemas::schemas;

fn envelope(data_schema: &str) -> Value {
    json!({
        "type": "object",
        "required": ["status", "message", "data"],
        "properties": {
            "status": {"const": "ok"},
            "message": {"type": ["string", "null"]},
            "data": {"$ref": format!("#/components/schemas/{data_schema}")}
        }
    })
}

fn error_response(description: &str) -> Value {
    json!({
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorEnvelope"}}}
    })
}

/// AstrBot's "200-errors" (decision 1): the chat, sessions and file routes answer some
/// failures with HTTP 200 and `status: error` (`ApiError::Soft`), so their 200 is either
/// envelope and a client must read `status`. Every skills route but the archive
/// download answers its failures so (AstrBot's `api/skills.py::_run`).
fn soft_errors(route: &Route) -> bool {
    route.path.starts_with("/api/v1/chat")
        || route.path.starts_with("/api/v1/file")
        || (route.path.starts_with("/api/v1/skills") && !route.path.ends_with("/archive"))
        || plugin_service(route)
}

/// The plugin routes AstrBot's `_run_service` wraps: every `/api/v1/plugins` route but the
/// config ones (real 400s) and the categories (which cannot fail). Their failures are 200
/// `{"status":"error","message":...,"data":{}}`, or `status: warning` for a plugin whose
/// `astrbot_version` does not admit this server.
fn plugin_service(route: &Route) -> bool {
    route.path.starts_with("/api/v1/plugins")
        && !route.path.contains("/config")
        && !route.path.ends_with("/categories")
}

/// Routes where a well-formed request can get 400 because of what is stored: AstrBot
/// answers an unknown id with 400 (`Provider x not found`, `Persona with ID x does not
/// exist.`, `Config file x does not exist`), not 404, and a taken or ambiguous name with 400
/// too. An Astroworld chat (`bot_id`) names a bot that may be ambiguous.
fn not_found_is_400(route: &Route) -> bool {
    (route.method == "POST" && route.path == "/api/v1/chat")
        || (route.tag == "Bots" && route.method != "GET")
        || (route.tag == "MCP" && route.method != "GET")
        || (route.tag == "Bots" && (route.path.contains('{') || route.path.ends_with("/by-id")))
        || matches!(route.tag, "Providers" | "Personas" | "Config")
            && (route.path.contains('{')
                || route.path.ends_with("/by-id")
                || route.path.ends_with("/move")
                || route.path.ends_with("/reorder")
                || route.path.ends_with("/providers/test")
                || route.path.ends_with("/providers/enabled")
                || (route.path == "/api/v1/config-routes" && route.method == "PUT")
                || (route.path == "/api/v1/personas" && route.method == "POST")
                || (route.path == "/api/v1/persona-folders" && route.method == "POST")
                || (route.path == "/api/v1/providers" && route.method == "POST"))
        || (route.tag == "API keys" && matches!(route.method, "POST" | "PATCH") && route.request.is_some())
        || matches!(
            route.path,
            "/api/apikey/create"
                | "/api/apikey/revoke"
                | "/api/apikey/delete"
                | "/api/v1/api-keys/{key_id}/revoke"
                | "/api/v1/im/messages"
                | "/api/v1/im/message"
        )
        || (route.method == "DELETE" && route.path == "/api/v1/api-keys/{key_id}")
        || (route.method == "PUT"
            && route.path.starts_with("/api/v1/plugins")
            && route.path.ends_with("/config"))
        || (route.method == "POST" && route.path == "/api/v1/plugin-sources")
        || route.path == KB_UPLOAD
}

/// The knowledge upload: its files are read by their names' extensions, which a multipart
/// schema cannot state.
const KB_UPLOAD: &str = "/api/v1/kb/collections/{name}/documents";

/// Handlers that read a missing body as `{}`.
fn body_optional(route: &Route) -> bool {
    matches!(
        (route.method, route.path),
        ("PUT", "/api/v1/persona-folders/{folder_id:path}")
            | ("PATCH", "/api/v1/providers/enabled" | "/api/v1/providers/{provider_id:path}/enabled")
            | ("POST", "/api/v1/providers/test")
            | ("PATCH", "/api/v1/bots/enabled" | "/api/v1/bots/{bot_id:path}/enabled")
            | ("POST", "/api/v1/bots/test" | "/api/v1/bots/{bot_id:path}/test")
            | ("POST", "/api/v1/files/{attachment_id}/token")
            | ("PUT", "/api/v1/mcp/servers/{server_name:path}")
            | (
                "POST",
                "/api/v1/mcp/servers/{server_name:path}/test" | "/api/v1/mcp/providers/modelscope/sync"
            )
            | (
                "DELETE",
                "/api/v1/plugins/by-id" | "/api/v1/plugins/{plugin_id}" | "/api/v1/plugins/failed/{dir_name}"
            )
            | ("POST", "/api/v1/plugins/install/url")
            | ("PUT", "/api/v1/plugins/{plugin_id}/config")
    )
}

/// A download: the stored type of the attachment (any), ranges, revalidation.
fn download_responses(responses: &mut Map<String, Value>) {
    // No schema for the bytes: they are the upload's, of any type.
    let bytes = json!({});
    let headers = json!({
        "ETag": {"schema": {"type": "string"}},
        "Last-Modified": {"schema": {"type": "string"}},
        "Accept-Ranges": {"schema": {"const": "bytes"}},
        "Content-Disposition": {"schema": {"type": "string"}, "description": "`attachment` unless a raster image, audio or video"}
    });
    responses.insert(
        "200".into(),
        json!({
            "description": "The attachment's bytes with its stored type (from the upload's Content-Type, or sniffed from the bytes for application/octet-stream); or AstrBot's 200-error envelope (`Attachment not found`, `Missing key: ...`, `File access error`)",
            "headers": headers,
            "content": {
                "*/*": bytes,
                "application/json": {"schema": {"$ref": "#/components/schemas/ErrorEnvelope"}}
            }
        }),
    );
    responses.insert(
        "206".into(),
        json!({"description": "The requested `Range: bytes=a-b` (one range), with Content-Range", "headers": {"Content-Range": {"schema": {"type": "string"}}}, "content": {"*/*": bytes}}),
    );
    responses
        .insert("304".into(), json!({"description": "Not modified: If-None-Match named the current ETag"}));
    responses.insert(
        "416".into(),
        json!({"description": "Range not satisfiable: an empty body with `Content-Range: bytes */<length>`", "headers": {"Content-Range": {"schema": {"type": "string"}}}, "content": {"*/*": {}}}),
    );
}

/// The answer of a route that does not speak the envelope.
fn plain_response(route: &Route, responses: &mut Map<String, Value>) {
    let ok = |content_type: &str, schema: Value| json!({"description": "OK", "content": {content_type: {"schema": schema}}});
    let text_404 = |what: &str| json!({"description": what, "content": {"text/plain; charset=utf-8": {"schema": {"type": "string"}}}});
    let html = json!({"type": "string"});
    let response = match route.path {
        "/api/v1/openapi.json" => ok("application/json", json!({"type": "object"})),
        "/healthz" => ok("application/json", json!({"$ref": "#/components/schemas/Health"})),
        "/static/{file}" => {
            responses.insert("404".into(), text_404("No such asset"));
            json!({"description": "The asset, typed by its name", "content": {
                "text/css; charset=utf-8": {"schema": {"type": "string"}, "description": "style.css"},
                "text/javascript; charset=utf-8": {"schema": {"type": "string"}, "description": "reference.js"}
            }})
        }
        "/docs/{page}" => {
            responses.insert("404".into(), text_404("No such guide"));
            ok("text/html; charset=utf-8", html)
        }
        "/api/v1/chat" => chat_response(),
        "/api/v1/chat/ws" => {
            responses.insert(
                "400".into(),
                error_response("A broken handshake: no GET, or no valid Sec-WebSocket-Key"),
            );
            responses.insert(
                "426".into(),
                error_response("Not a WebSocket upgrade (plain HTTP), or a Sec-WebSocket-Version other than 13 (the answer says `Sec-WebSocket-Version: 13`)"),
            );
            responses.insert("101".into(), json!({"description": "Switching Protocols: the connection is a WebSocket from here on (see the description for its messages)"}));
            return;
        }
        "/api/v1/chat/runs/{run_id}/stream" => json!({
            "description": "An SSE stream: without Last-Event-ID, first `data: <run_snapshot>` (no id), then `id: <n>` and `data: <ChatEvent>` for each kept event, then the live ones until `end`, with `: heartbeat` comments every second. An unknown run, one another caller started, or one forgotten (10 minutes after its end) is AstrBot's 200-error `Chat run is unavailable`; an id that is not a number below 2^64, `Invalid Last-Event-ID`.",
            "content": {
                "text/event-stream": {
                    "schema": {"type": "object", "description": "One event (before OpenAPI 3.2, `schema` describes each event of a stream): an `id:` line (the event's number in the run, run_started being 1) and a `data:` line holding one ChatEvent as JSON", "required": ["data"], "properties": {
                        "id": {"type": "string", "pattern": "^[0-9]+$"},
                        "data": {"type": "string", "contentMediaType": "application/json", "contentSchema": {"$ref": "#/components/schemas/ChatEvent"}}
                    }}
                },
                "application/json": {"schema": {"$ref": "#/components/schemas/ErrorEnvelope"}}
            }
        }),
        "/api/v1/skills/{skill_name}/archive" => {
            responses.insert("404".into(), error_response("Local skill not found"));
            responses.insert("500".into(), error_response("Failed to prepare skill archive"));
            json!({"description": "The skill's folder as `<name>.zip` (Content-Disposition: attachment)",
                   "content": {"application/zip": {"schema": {"type": "string", "format": "binary"}}}})
        }
        "/api/v1/logs/live" => {
            json!({"description": "New log lines until the client goes: `data: {LogLine}` events, and `: heartbeat` after each silent second",
            "content": {"text/event-stream": {"schema": {"type": "object", "description": "One event (before OpenAPI 3.2, `schema` describes each event of a stream): a `data:` line holding one LogLine as JSON", "required": ["data"], "properties": {
                "data": {"type": "string", "contentMediaType": "application/json", "contentSchema": {"$ref": "#/components/schemas/LogLine"}}
            }}}}})
        }
        p if p.starts_with("/api/v1/file") => {
            if p == "/api/v1/files/tokens/{file_token}" {
                responses.insert(
                    "404".into(),
                    error_response(
                        "Not Found: the token is unknown, altered or expired, or its file is gone",
                    ),
                );
            }
            download_responses(responses);
            return;
        }
        _ => ok("text/html; charset=utf-8", html),
    };
    responses.insert("200".into(), response);
}

/// `POST /api/v1/chat`: an SSE stream by default; one JSON answer with `Accept:
/// application/json`, for Astroworld requests (`bot_id`), and for AstrBot's 200-errors.
fn chat_response() -> Value {
    json!({
        "description": "An SSE stream of `data: <ChatEvent>` lines (and `: heartbeat` comments every second), ending with `end`. With `Accept: application/json` (and not text/event-stream): one envelope whose `data` is ChatAnswer. With `bot_id` (Astroworld): the bare AstroworldAnswer, unless text/event-stream is asked for. Failures AstrBot reports inside a 200 (`config_id not found: x`, `Missing key: username`, ...) are the error envelope as application/json.",
        "content": {
            "text/event-stream": {
                "schema": {"type": "object", "description": "One event (before OpenAPI 3.2, `schema` describes each event of a stream): a `data:` line holding one ChatEvent as JSON", "required": ["data"], "properties": {
                    "data": {"type": "string", "contentMediaType": "application/json", "contentSchema": {"$ref": "#/components/schemas/ChatEvent"}}
                }}
            },
            "application/json": {"schema": {"oneOf": [
                envelope("ChatAnswer"),
                {"$ref": "#/components/schemas/AstroworldAnswer"},
                {"$ref": "#/components/schemas/ErrorEnvelope"}
            ]}}
        }
    })
}

/// Who a proactive message reaches, beyond AstrBot (`api::im`): the reference page states
/// the owner rule, because a client written for AstrBot would not expect the refusal.
const IM_OWNER_RULE: &str = "A UMO whose session part is `webchat!<username>!<session_id>` reaches only a session \
    that `<username>` owns: one that does not exist yet is created for them, and one another username owns is \
    refused with 400 `session_id belongs to another username`, nothing stored; any other session part names the \
    conversation directly, as in AstrBot, and reaches whoever owns it.";

/// The WebSocket chat's protocol (AstrBot's, appendix A of the spec; `api::chat_ws`).
const WS_RULE: &str = "A WebSocket (`ws://host/api/v1/chat/ws`, or `wss://` behind a TLS proxy) on the HTTP port. \
    The server accepts, then authenticates: the key from `?api_key=`, `?key=`, `X-API-Key` or `Authorization: Bearer|ApiKey` \
    (or the admin token), holding `*` or `chat`; else it sends `{\"type\":\"error\",\"code\":\"UNAUTHORIZED\",\"data\":\"Missing API key\"}` \
    (or `Invalid API key`, `Insufficient API key scope`) and closes with 1008. Client messages are JSON objects: `{\"t\":\"ping\"}` \
    answers `{\"type\":\"pong\"}`; `{\"t\":\"send\", ...}` (`t` defaults to `send`) takes the fields of POST /api/v1/chat and \
    streams the run's events, the same as the SSE chat's: `session_id` (with `message_id`, the run id), `run_started`, deltas, \
    `agent_stats`, `complete`, `message_saved` (`{\"data\":{\"id\",\"created_at\"},\"session_id\"}`), `end`; no `user_message_saved`, no \
    heartbeats. Refusals are `{\"type\":\"error\",\"code\":...,\"data\":...}` with `BAD_USER`, `CONFIG_ERROR`, `SESSION_ERROR`, \
    `INVALID_MESSAGE` (also: not JSON, not an object, `Unsupported message type: <t>`, a second message while a run goes) \
    or `PROCESSING_ERROR`. One run at a time per connection. Messages over 1 MiB close with 1009; 60 s without a message \
    and no run going close with 1000 `idle timeout`; the server pings after 30 s of silence and closes with 1001 when it \
    stops. The connection counts against --max-connections. A client that drops mid-run resumes the run with \
    GET /api/v1/chat/runs/{run_id}/stream.";

/// The resume route's rules (appendix B; `chat::runs`).
const RESUME_RULE: &str = "The events of a chat run (started by POST /api/v1/chat or the WebSocket chat), for the caller \
    that started it (the same API key, or the admin), while it runs and for 10 minutes after its end. A run's events are \
    numbered from 1 (`run_started`) in the order sent; a client that got k of them (counting from `run_started`; \
    `session_id` and `user_message_saved` do not count) resumes with `Last-Event-ID: k` (or `?last_event_id=k`) and \
    gets events k+1 onwards, each with its `id:`. Without it: AstrBot's `run_snapshot` (revision 0, empty content) and \
    every event from the first. At most 1 MiB of events is kept per run (beyond, the oldest go; the ids show the gap), \
    1024 runs and 64 MiB in all.";

/// How `{id:path}` parameters meet the fixed routes beside them.
const PATH_ID_RULE: &str = "The id may contain `/` (AstrBot's ids often do: `openai/gpt-4o-mini`), written as is or as `%2F`. \
    Fixed paths take precedence over it: a path that a fixed route matches (`/by-id`, `/test`, `/enabled`, `/tree`, `/move`, \
    `/reorder`, or an id followed by `/test` or `/enabled`) belongs to that route alone, and another method there answers \
    405 with `Allow`. An id that is such a path is reached with its `/` written `%2F`, or with the `/by-id` routes.";

fn operation(route: &Route) -> Value {
    let mut description = match route.path {
        "/api/v1/im/message" | "/api/v1/im/messages" => Some(IM_OWNER_RULE.to_owned()),
        "/api/v1/chat/ws" => Some(WS_RULE.to_owned()),
        "/api/v1/chat/runs/{run_id}/stream" => Some(RESUME_RULE.to_owned()),
        _ => None,
    };
    if route.path.contains(":path}") {
        description = Some(PATH_ID_RULE.to_owned());
    }
    let mut op = json!({
        "operationId": operation_id(route),
        "summary": route.summary,
        "tags": [route.tag],
        "x-astrbot-scope": route.access.scope_name(),
        "responses": responses(route),
    });
    if let Some(description) = description {
        op["description"] = json!(description);
    }
    if soft_errors(route) {
        op["x-astrbot-200-errors"] = json!(true);
    }
    if not_found_is_400(route) {
        op["x-astrbot-400-on-data"] = json!(true);
    }
    if route.path == crate::api::chat_ws::PATH {
        // The reference's "try it" opens the WebSocket and sends this first message.
        op["x-astrbot-ws-example"] =
            json!({"t": "send", "username": "alice", "session_id": "reference-example", "message": "Hello"});
    }
    let mut params = path_parameters(route);
    params.extend(params::query(route).into_iter().map(with_example));
    if !params.is_empty() {
        op["parameters"] = Value::Array(params);
    }
    if let Some(schema) = route.request {
        let media = if route.body == Body::Upload { "multipart/form-data" } else { "application/json" };
        let mut content = json!({"schema": {"$ref": format!("#/components/schemas/{schema}")}});
        if route.body == Body::Upload {
            // Any type is kept (and application/octet-stream sniffed); a JSON type would make
            // the download claim JSON for bytes that may not be.
            let types = if route.path.starts_with("/api/v1/plugins") {
                "application/zip, application/gzip, application/octet-stream"
            } else {
                "application/octet-stream, image/png, image/jpeg, application/pdf, text/plain"
            };
            let part = if route.path == "/api/v1/files/upload/chunk" { "chunk" } else { "file" };
            content["encoding"] = json!({part: {"contentType": types}});
        }
        if let Some(example) = examples::request(route) {
            content["example"] = example;
        }
        op["requestBody"] = json!({"required": !body_optional(route), "content": {media: content}});
    }
    if route.method == "PUT" && route.path == "/api/v1/skills/{skill_name}/files/{file_path:path}" {
        // The raw body is the file's new text (AstrBot reads it whatever its type).
        op["requestBody"] = json!({"required": false, "content": {"text/plain": {
            "schema": {"type": "string", "description": "UTF-8 text, at most 512 KiB (invalid UTF-8: 400)"},
            "example": "---\nname: csv-report\ndescription: Turn a CSV file into a short Markdown report.\n---\n# CSV report\n"}}});
    }
    op["security"] = match route.access {
        Access::Public => json!([]),
        Access::Scope(_) => json!([{"bearer": []}, {"apiKeyHeader": []}, {"apiKeyQuery": []}]),
        Access::Admin | Access::Dashboard => json!([{"bearer": []}]),
    };
    op
}

/// The answers a route can give: its success, then the failures its body, its access and
/// its own rules can produce.
fn responses(route: &Route) -> Map<String, Value> {
    let mut responses = Map::new();
    match route.response {
        Some(schema) if plugin_service(route) => {
            let either =
                json!({"oneOf": [envelope(schema), {"$ref": "#/components/schemas/PluginErrorEnvelope"}]});
            responses.insert(
                "200".into(),
                json!({"description": "OK, or AstrBot's plugin 200-error (`status: error`, `data: {}`) or warning (`status: warning`: a plugin whose astrbot_version does not admit this server; retry with ignore_version_check)", "content": {"application/json": {"schema": either}}}),
            );
        }
        Some(schema) if soft_errors(route) => {
            let either = json!({"oneOf": [envelope(schema), {"$ref": "#/components/schemas/ErrorEnvelope"}]});
            responses.insert(
                "200".into(),
                json!({"description": "OK, or AstrBot's 200-error envelope (`status: error`)", "content": {"application/json": {"schema": either}}}),
            );
        }
        Some(schema) => {
            responses.insert(
                "200".into(),
                json!({"description": "OK", "content": {"application/json": {"schema": envelope(schema)}}}),
            );
        }
        None => plain_response(route, &mut responses),
    }
    let bad = if route.path == KB_UPLOAD {
        "Invalid request: no Markdown, text or HTML file in the upload (read by the file name: .md, .markdown, .txt, .text, .html, .htm), a file that is not UTF-8, the collection `docs`, a bad collection name or base_url"
    } else if route.tag == "MCP" {
        "Invalid request or config (AstrBot's messages: `Server name cannot be empty`, `MCP stdio command `x` is not allowed. ...`), an unknown or taken name (`Server x does not exist`, `Server x already exists`), or a connection that failed: `MCP connection test failed: ...` (adding an active server), `Failed to enable MCP server x: ...` (saving one), `Failed to test MCP connection: ...`, `Sync failed: ...`"
    } else if not_found_is_400(route) {
        "Invalid request (bad JSON, wrong field type, a validation rule), or refused for what is stored: AstrBot answers an unknown id with 400 (`... not found`, `... does not exist`), and a taken or ambiguous id or name (`... already exists`, `bot_id is ambiguous, use the profile id: x`) with 400 too"
    } else {
        "Invalid request (bad JSON, wrong field type, a validation rule), or a malformed HTTP request"
    };
    responses.insert("400".into(), error_response(bad));
    match route.access {
        Access::Public => {}
        Access::Scope(_) => {
            responses.insert("401".into(), error_response("Missing API key / Invalid API key"));
            responses.insert(
                "403".into(),
                error_response(
                    "Insufficient API key scope (with `WWW-Authenticate: Bearer error=\"insufficient_scope\", scope=\"...\"`), or a dashboard-cookie request from another origin (`Cross-origin request refused`)",
                ),
            );
            responses.insert("429".into(), error_response("Daily request limit exceeded (see Retry-After)"));
        }
        Access::Admin => {
            responses.insert("401".into(), error_response("Missing API key / Token expired"));
            responses.insert(
                "403".into(),
                error_response(
                    "Insufficient API key scope: API keys may not manage keys (with `WWW-Authenticate: Bearer error=\"insufficient_scope\", scope=\"admin\"`)",
                ),
            );
        }
        Access::Dashboard => {
            responses.insert("401".into(), error_response("未授权 / Token 过期 / Token 无效"));
        }
    }
    if route.path.starts_with("/api/v1/api-keys/{key_id}") && !not_found_is_400(route) {
        responses.insert("404".into(), error_response("No such API key (or webhook delivery)"));
    }
    if route.method == "DELETE" && route.path == "/api/v1/kb/collections/{name}" {
        responses.insert("404".into(), error_response("No such collection"));
        responses.insert(
            "403".into(),
            error_response("The collection `docs` holds the bundled guides and cannot be removed (or: API keys may not call admin routes)"),
        );
    }
    if route.method == "PATCH" && route.path == "/api/v1/api-keys/{key_id}" {
        responses.insert("404".into(), error_response("No such API key"));
    }
    if route.path.ends_with(":path}") {
        responses.insert(
            "405".into(),
            error_response("The id makes the path a fixed route's (`x/test`, `x/enabled`, `tree`, ...): that route's methods are in `Allow`"),
        );
    }
    if route.path == "/api/v1/chat" {
        responses.insert("404".into(), error_response("Astroworld: no such bot"));
        responses.insert("503".into(), error_response("Too many chats in progress (see Retry-After)"));
    }
    if route.path == "/api/auth/login" {
        responses.insert("401".into(), error_response("Invalid username or password"));
        responses.insert("429".into(), error_response("Too many failed logins from this address"));
    }
    if route.body != Body::None {
        responses.insert("413".into(), error_response("Request body exceeds the N bytes limit (JSON 1 MiB, uploads `--max-upload-mb`, a chunk 2 MiB)"));
        if route.body == Body::Upload {
            responses.insert("411".into(), error_response("Content-Length header is required for uploads"));
        }
        if route.path.starts_with("/api/v1/files/upload/") {
            responses.insert("429".into(), error_response("Daily request limit exceeded, or too many unfinished uploads (8 per caller, 64 in all, or 4 x the largest allowed file of declared sizes; see Retry-After)"));
        }
        responses.insert(
            "408".into(),
            error_response("Request body not received in time (slower than 1 KiB/s on average after 10 s)"),
        );
    }
    for (status, name) in
        [("408", "HeadTimeout"), ("431", "HeadTooLarge"), ("501", "NotImplemented"), ("503", "Busy")]
    {
        responses.entry(status).or_insert_with(|| json!({"$ref": format!("#/components/responses/{name}")}));
    }
    responses.insert("500".into(), error_response("Internal server error"));
    responses
}

/// The transport's own answers (decision 13), possible on every route.
fn common_responses() -> Value {
    let e = |d: &str| error_response(d);
    json!({
        "HeadTimeout": e("The request head, or the body, did not arrive in time (the connection is closed)"),
        "HeadTooLarge": e("A header line over 8 KiB, more than 100 fields, or a head over 64 KiB"),
        "NotImplemented": e("A Transfer-Encoding other than exactly `chunked`"),
        "Busy": e("More connections than --max-connections (the connection is closed)")
    })
}

/// The path's `{name}` segments as required string parameters.
fn path_parameters(route: &Route) -> Vec<Value> {
    route
        .path
        .split('/')
        .filter_map(|seg| seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
        .map(|name| match name.strip_suffix(":path") {
            Some(name) => json!({"name": name, "in": "path", "required": true, "description": "May contain `/`; see the operation's description",
                                 "schema": {"type": "string", "minLength": 1}}),
            None if name == "name" && route.path.starts_with("/api/v1/kb/") => json!({"name": name, "in": "path", "required": true,
                "description": "1 to 64 of A-Z a-z 0-9 _ . - (not starting with a dot); `docs`, the bundled guides, is refused",
                "schema": {"type": "string", "minLength": 1, "maxLength": 64, "pattern": "^[A-Za-z0-9_-][A-Za-z0-9_.-]*$", "not": {"const": "docs"}}}),
            None if name == "plugin_id" => json!({"name": name, "in": "path", "required": true,
                "description": "A plugin's name: a Python identifier of ASCII letters, digits and _, at most 64; any other id is an unknown plugin (no file is touched). A plugin named like a fixed route (`market`, `failed`, `config`, `readme`, `by-id`) is reached with the `?plugin_id=` routes",
                "schema": {"type": "string", "minLength": 1, "maxLength": 64, "pattern": "^[A-Za-z_][A-Za-z0-9_]*$"}}),
            None if name == "dir_name" => json!({"name": name, "in": "path", "required": true,
                "description": "A folder of DIR/plugins that GET /api/v1/plugins/failed lists; any other name is refused",
                "schema": {"type": "string", "minLength": 1, "maxLength": 255, "pattern": "^[^./\\\\][^/\\\\]*$"}}),
            None if name == "skill_name" => json!({"name": name, "in": "path", "required": true,
                "description": "A skill's folder name: A-Z a-z 0-9 . _ - (not `.` or `..`), at most 128; any other name is refused (`Invalid skill name`)",
                "schema": {"type": "string", "minLength": 1, "maxLength": 128, "pattern": "^[A-Za-z0-9._-]+$", "not": {"enum": [".", ".."]}}}),
            None => json!({"name": name, "in": "path", "required": true, "schema": {"type": "string", "minLength": 1}}),
        })
        .map(with_example)
        .collect()
}

/// A parameter with its "try it" value.
fn with_example(mut p: Value) -> Value {
    if p.get("example").is_some() {
        return p;
    }
    if let Some(example) =
        p["name"].as_str().and_then(|name| examples::param(name, p["in"].as_str().unwrap_or("")))
    {
        p["example"] = example;
    }
    p
}

fn operation_id(route: &Route) -> String {
    let path: String = route
        .path
        .split('/')
        .filter(|s| !s.is_empty())
        .map(|s| s.trim_matches(|c| c == '{' || c == '}').trim_end_matches(":path").replace(['-', '.'], "_"))
        .collect::<Vec<_>>()
        .join("_");
    format!("{}_{}", route.method.to_lowercase(), if path.is_empty() { "root".into() } else { path })
}

/// The whole document.
pub fn document() -> Value {
    let mut paths = Map::new();
    for route in ROUTES {
        let item = paths.entry(crate::routes::openapi_path(route.path)).or_insert_with(|| json!({}));
        item[route.method.to_lowercase()] = operation(route);
    }
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "AstrBot Open API (astrbot appliance)",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "AstrBot's developer HTTP API served by the astrbot appliance. Authenticate with an API key (`Authorization: Bearer abk_...`, `X-API-Key`, or `?api_key=`); each operation names the scope it needs in `x-astrbot-scope`. Every `/api/` answer is an envelope: `{\"status\":\"ok\",\"message\":null,\"data\":...}` or `{\"status\":\"error\",\"message\":\"...\"}`. Keys with a daily limit get `RateLimit-Policy` and `RateLimit` headers."
        },
        "servers": [{"url": "/"}],
        "paths": paths,
        "components": {
            "schemas": schemas(),
            "responses": common_responses(),
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "description": "An API key (abk_...) or an admin token (abt_...)"},
                "apiKeyHeader": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
                "apiKeyQuery": {"type": "apiKey", "in": "query", "name": "api_key"}
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every `$ref` in the document must name a schema that exists.
    fn refs(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::Object(m) => {
                if let Some(Value::String(r)) = m.get("$ref") {
                    out.push(r.clone());
                }
                m.values().for_each(|v| refs(v, out));
            }
            Value::Array(a) => a.iter().for_each(|v| refs(v, out)),
            _ => {}
        }
    }

    #[test]
    fn document_equals_route_table() {
        let doc = document();
        let paths = doc["paths"].as_object().unwrap();
        let mut ops = 0;
        for (path, item) in paths {
            for (method, op) in item.as_object().unwrap() {
                let route = ROUTES
                    .iter()
                    .find(|r| {
                        crate::routes::openapi_path(r.path) == *path && r.method.to_lowercase() == *method
                    })
                    .unwrap_or_else(|| panic!("{method} {path} is not in the route table"));
                assert_eq!(op["x-astrbot-scope"], route.access.scope_name());
                ops += 1;
            }
        }
        assert_eq!(ops, ROUTES.len());
        let mut all = Vec::new();
        refs(&doc, &mut all);
        for r in all {
            let (kind, name) = r.strip_prefix("#/components/").unwrap().split_once('/').unwrap();
            assert!(doc["components"][kind].get(name).is_some(), "dangling $ref {r}");
        }
    }

    #[test]
    fn every_json_body_has_an_example_and_assets_their_types() {
        let doc = document();
        for (path, item) in doc["paths"].as_object().unwrap() {
            for (method, op) in item.as_object().unwrap() {
                if let Some(media) = op["requestBody"]["content"].get("application/json") {
                    assert!(media.get("example").is_some(), "{method} {path}: no example");
                }
                for p in op["parameters"].as_array().into_iter().flatten() {
                    if p["required"] == true {
                        assert!(p.get("example").is_some(), "{method} {path}: {} has no example", p["name"]);
                    }
                }
            }
        }
        let asset = &doc["paths"]["/static/{file}"]["get"]["responses"];
        assert!(asset["200"]["content"].get("text/javascript; charset=utf-8").is_some());
        assert!(asset["404"].is_object());
        assert!(doc["paths"]["/docs/{page}"]["get"]["responses"]["404"].is_object());
        let upload = &doc["paths"]["/api/v1/file"]["post"]["requestBody"]["content"];
        assert!(upload.get("multipart/form-data").is_some());
    }
}
