//! The OpenAPI 3.1 document, built from the route table so the two cannot drift: every
//! route is an operation with its scope in `x-astrbot-scope`, its request and response
//! schemas from [`schemas`], and the error envelope for the failures it can produce.

use serde_json::{Map, Value, json};

use crate::routes::{Access, Body, ROUTES, Route};

/// The component schemas named by the route table.
fn schemas() -> Value {
    let ts = json!({"type": ["string", "null"], "format": "date-time"});
    let key_object = json!({
        "type": "object",
        "required": ["key_id", "name", "key_prefix", "scopes", "created_by", "created_at", "updated_at",
                     "last_used_at", "expires_at", "revoked_at", "is_revoked", "is_expired", "daily_limit"],
        "properties": {
            "key_id": {"type": "string", "format": "uuid"},
            "name": {"type": "string"},
            "key_prefix": {"type": "string", "description": "The first 12 characters of the key", "example": "abk_0_9obaVK"},
            "scopes": {"type": "array", "items": {"$ref": "#/components/schemas/Scope"}},
            "created_by": {"type": "string"},
            "created_at": {"type": "string", "format": "date-time"},
            "updated_at": {"type": "string", "format": "date-time"},
            "last_used_at": ts, "expires_at": ts, "revoked_at": ts,
            "is_revoked": {"type": "boolean"},
            "is_expired": {"type": "boolean"},
            "daily_limit": {"type": ["integer", "null"], "description": "Requests per UTC day; null: the server default; 0: unlimited"}
        }
    });
    let mut created = key_object.clone();
    created["properties"]["api_key"] = json!({"type": "string", "description": "The raw key, shown only in this response", "example": "abk_..."});
    if let Some(r) = created["required"].as_array_mut() {
        r.push(json!("api_key"))
    }
    json!({
        "ErrorEnvelope": {
            "type": "object",
            "required": ["status", "message"],
            "properties": {
                "status": {"const": "error"},
                "message": {"type": "string", "example": "Missing API key"}
            }
        },
        "Scope": {
            "type": "string",
            "enum": ["bot", "provider", "persona", "im", "config", "chat", "data", "file", "plugin", "mcp", "skill", "chat:admin", "config:edit_admin"]
        },
        "Empty": {"type": "object", "properties": {}, "additionalProperties": false},
        "BotIds": {
            "type": "object",
            "required": ["bot_ids"],
            "properties": {"bot_ids": {"type": "array", "items": {"type": "string"}}}
        },
        "ApiKey": key_object,
        "ApiKeyList": {"type": "array", "items": {"$ref": "#/components/schemas/ApiKey"}},
        "ApiKeyCreated": created,
        "ApiKeyCreate": {
            "type": "object",
            "properties": {
                "name": {"type": ["string", "null"], "description": "Trimmed; empty means \"Untitled API Key\"", "example": "my app"},
                "scopes": {"type": ["array", "null"], "items": {"$ref": "#/components/schemas/Scope"}, "description": "Null means the 11 default scopes", "example": ["chat", "file"]},
                "expires_in_days": {"type": ["integer", "null"], "minimum": 1, "description": "Null means never", "example": 30},
                "daily_limit": {"type": ["integer", "null"], "minimum": 0, "description": "Requests per UTC day; null: the server default; 0: unlimited", "example": 1000}
            }
        },
        "KeyIdBody": {
            "type": "object",
            "required": ["key_id"],
            "properties": {"key_id": {"type": "string"}}
        },
        "Login": {
            "type": "object",
            "required": ["username", "password"],
            "properties": {
                "username": {"type": "string", "example": "astrbot"},
                "password": {"type": "string", "format": "password"}
            }
        },
        "LoginToken": {
            "type": "object",
            "required": ["token", "username", "expires_at"],
            "properties": {
                "token": {"type": "string", "description": "Send as Authorization: Bearer <token>"},
                "username": {"type": "string"},
                "expires_at": {"type": "string", "format": "date-time"}
            }
        },
        "ProviderSource": {
            "type": "object",
            "description": "A vendor connection (AstrBot's provider source). Vendor-specific keys are kept.",
            "required": ["id"],
            "properties": {
                "id": {"type": "string", "example": "openai"},
                "provider": {"type": "string", "example": "openai"},
                "type": {"enum": ["openai_chat_completion", "anthropic_chat_completion"]},
                "provider_type": {"type": "string", "example": "chat_completion"},
                "enable": {"type": "boolean"},
                "key": {"type": "array", "items": {"type": "string"}, "description": "API keys, rotated; $NAME or ${NAME} reads an environment variable whose name ends in _API_KEY or is listed in ASTRBOT_SECRET_ENV; shown masked; a masked key sent back is kept only while api_base (scheme, host, port) and proxy are unchanged"},
                "api_base": {"type": "string", "example": "https://api.openai.com/v1"},
                "timeout": {"type": "integer", "example": 120},
                "proxy": {"type": "string"},
                "custom_headers": {"type": "object", "additionalProperties": {"type": "string"}}
            },
            "additionalProperties": true
        },
        "ProviderSourceBody": {"type": "object", "description": "A ProviderSource, flat or under `config`; `source_id` names the source to update on /by-id", "properties": {"source_id": {"type": "string"}, "config": {"$ref": "#/components/schemas/ProviderSource"}}, "additionalProperties": true},
        "ProviderSourceList": {"type": "object", "properties": {"provider_sources": {"type": "array", "items": {"$ref": "#/components/schemas/ProviderSource"}}}},
        "ProviderSourceOne": {"type": "object", "properties": {"provider_source": {"$ref": "#/components/schemas/ProviderSource"}}},
        "Provider": {
            "type": "object",
            "description": "A model on a source; listings show it merged with its source",
            "required": ["id"],
            "properties": {
                "id": {"type": "string", "example": "openai/gpt-4o-mini"},
                "provider_source_id": {"type": "string", "example": "openai"},
                "model": {"type": "string", "example": "gpt-4o-mini"},
                "enable": {"type": "boolean"},
                "provider_type": {"type": "string", "example": "chat_completion"},
                "modalities": {"type": "array", "items": {"type": "string"}},
                "custom_extra_body": {"type": "object"},
                "max_context_tokens": {"type": "integer"}
            },
            "additionalProperties": true
        },
        "ProviderBody": {"type": "object", "description": "A Provider, flat or under `config`; `source_id`, `capability` (chat, agent, stt, tts, embedding, rerank) and `enabled` are mapped as AstrBot does", "properties": {"provider_id": {"type": "string"}, "source_id": {"type": "string"}, "capability": {"type": "string"}, "enabled": {"type": "boolean"}, "config": {"$ref": "#/components/schemas/Provider"}}, "additionalProperties": true},
        "ProviderList": {"type": "object", "properties": {"providers": {"type": "array", "items": {"$ref": "#/components/schemas/Provider"}}, "model_metadata": {"type": "object"}}},
        "ProviderOne": {"type": "object", "properties": {"provider": {"$ref": "#/components/schemas/Provider"}, "model_metadata": {"type": "object"}}},
        "EnabledBody": {"type": "object", "properties": {"provider_id": {"type": "string"}, "enabled": {"type": "boolean"}}},
        "Persona": {
            "type": "object",
            "properties": {
                "persona_id": {"type": "string", "example": "tutor"},
                "system_prompt": {"type": "string"},
                "begin_dialogs": {"type": "array", "items": {"type": "string"}, "description": "Alternating user and assistant turns (even length)"},
                "tools": {"type": ["array", "null"], "items": {"type": "string"}, "description": "null: every tool"},
                "skills": {"type": ["array", "null"], "items": {"type": "string"}, "description": "null: every skill"},
                "custom_error_message": {"type": ["string", "null"]},
                "folder_id": {"type": ["string", "null"]},
                "sort_order": {"type": "integer"},
                "created_at": {"type": "string"},
                "updated_at": {"type": "string"}
            }
        },
        "PersonaBody": {"type": "object", "properties": {"persona_id": {"type": "string"}, "system_prompt": {"type": "string"}, "begin_dialogs": {"type": "array", "items": {"type": "string"}}, "tools": {"type": ["array", "null"], "items": {"type": "string"}}, "skills": {"type": ["array", "null"], "items": {"type": "string"}}, "custom_error_message": {"type": ["string", "null"]}, "folder_id": {"type": ["string", "null"]}, "sort_order": {"type": "integer"}}},
        "PersonaList": {"type": "array", "items": {"$ref": "#/components/schemas/Persona"}},
        "PersonaCreated": {"type": "object", "properties": {"message": {"type": "string", "example": "人格创建成功"}, "persona": {"$ref": "#/components/schemas/Persona"}}},
        "PersonaTree": {"type": "object", "properties": {"folders": {"type": "array", "items": {"type": "object", "description": "A folder with `children` (folders) and `personas`"}}, "personas": {"$ref": "#/components/schemas/PersonaList"}}},
        "PersonaMove": {"type": "object", "required": ["persona_id"], "properties": {"persona_id": {"type": "string"}, "folder_id": {"type": ["string", "null"]}}},
        "PersonaReorder": {"type": "object", "required": ["items"], "properties": {"items": {"type": "array", "items": {"type": "object", "properties": {"id": {"type": "string"}, "type": {"enum": ["persona", "folder"]}, "sort_order": {"type": "integer"}}}}}},
        "MessageOnly": {"type": "object", "properties": {"message": {"type": "string"}}},
        "Folder": {"type": "object", "properties": {"folder_id": {"type": "string"}, "name": {"type": "string"}, "parent_id": {"type": ["string", "null"]}, "description": {"type": ["string", "null"]}, "sort_order": {"type": "integer"}, "created_at": {"type": "string"}, "updated_at": {"type": "string"}}},
        "FolderBody": {"type": "object", "properties": {"name": {"type": "string"}, "parent_id": {"type": ["string", "null"]}, "description": {"type": ["string", "null"]}, "sort_order": {"type": "integer"}}},
        "FolderList": {"type": "array", "items": {"$ref": "#/components/schemas/Folder"}},
        "FolderCreated": {"type": "object", "properties": {"message": {"type": "string"}, "folder": {"$ref": "#/components/schemas/Folder"}}},
        "ConfigDocument": {"type": "object", "description": "An AstrBot config document: admins_id, platform_settings, provider_settings (default_provider_id, default_personality, wake_prefix, max_context_length, request_max_retries, ...), wake_prefix, timezone, kb_names, ...; secrets are masked", "additionalProperties": true},
        "SystemConfig": {"type": "object", "properties": {"config": {"$ref": "#/components/schemas/ConfigDocument"}, "metadata": {"type": "object"}, "server_utc_time": {"type": "string"}, "server_utc_offset_minutes": {"type": "integer"}}},
        "ConfigList": {"type": "object", "properties": {"configs": {"type": "array", "items": {"type": "object", "properties": {"id": {"type": "string"}, "name": {"type": "string"}, "path": {"type": "string"}, "is_default": {"type": "boolean"}}}}}},
        "ProfileList": {"type": "object", "properties": {"info_list": {"type": "array", "items": {"type": "object", "properties": {"id": {"type": "string"}, "name": {"type": "string"}, "path": {"type": "string"}}}}}},
        "ProfileCreate": {"type": "object", "properties": {"name": {"type": "string"}, "config": {"$ref": "#/components/schemas/ConfigDocument"}}},
        "ProfileCreated": {"type": "object", "properties": {"conf_id": {"type": "string"}}},
        "Profile": {"type": "object", "properties": {"config": {"$ref": "#/components/schemas/ConfigDocument"}, "metadata": {"type": "object"}}},
        "ProfileRename": {"type": "object", "properties": {"name": {"type": ["string", "null"]}}},
        "Routing": {"type": "object", "properties": {"routing": {"type": "object", "additionalProperties": {"type": "string"}, "description": "UMO (platform:MessageType:session) to config profile id"}}},
        "EffectiveRoute": {"type": "object", "properties": {"umo": {"type": "string"}, "config_id": {"type": "string"}, "routed": {"type": "boolean"}, "provider_id": {"type": "string", "description": "`builtin` when no LLM provider is usable"}, "persona_id": {"type": "string"}}},
        "ProviderTest": {"type": "object", "properties": {"id": {"type": "string"}, "model": {"type": ["string", "null"]}, "type": {"type": "string", "example": "chat_completion"}, "name": {"type": "string"}, "status": {"enum": ["available", "unavailable"]}, "error": {"type": ["string", "null"]}}},
        "ImMessage": {"type": "object", "required": ["umo", "message"], "properties": {"umo": {"type": "string", "example": "webchat:FriendMessage:webchat!alice!s1", "description": "platform:FriendMessage|GroupMessage|OtherMessage:session; webchat!<username>!<session_id> names the owner too"}, "message": {"oneOf": [{"type": "string"}, {"type": "array", "items": {"type": "object"}}]}}},
        "ChatRequest": {"type": "object", "required": ["username", "message"], "properties": {
            "username": {"type": "string", "description": "The sender and session owner"},
            "message": {"description": "A string, or parts: plain {text}, reply {message_id}, image/record/file/video {attachment_id}", "oneOf": [{"type": "string"}, {"type": "array", "items": {"type": "object"}}]},
            "session_id": {"type": "string", "description": "Omitted: a new UUID"},
            "conversation_id": {"type": "string", "description": "Used only when session_id is absent"},
            "config_id": {"type": "string"}, "config_name": {"type": "string"},
            "enable_streaming": {"type": "boolean"},
            "flags": {"type": "object", "properties": {"enable_streaming": {"type": "boolean"}}},
            "selected_provider": {"type": "string"}, "selected_model": {"type": "string"}}},
        "SessionItem": {"type": "object", "properties": {"session_id": {"type": "string"}, "platform_id": {"type": "string"}, "creator": {"type": "string"}, "display_name": {"type": ["string", "null"]}, "is_group": {"type": "integer"}, "created_at": {"type": "string"}, "updated_at": {"type": "string"}}},
        "SessionPage": {"type": "object", "properties": {"sessions": {"type": "array", "items": {"$ref": "#/components/schemas/SessionItem"}}, "page": {"type": "integer"}, "page_size": {"type": "integer"}, "total": {"type": "integer"}}},
        "SessionDetail": {"type": "object", "properties": {"session": {"$ref": "#/components/schemas/SessionItem"}, "messages": {"type": "array", "items": {"type": "object"}}}},
        "SessionId": {"type": "object", "properties": {"session_id": {"type": "string"}}},
        "Upload": {"type": "object", "required": ["file"], "properties": {"file": {"type": "string", "format": "binary"}}},
        "Attachment": {"type": "object", "properties": {"attachment_id": {"type": "string"}, "filename": {"type": "string"}, "type": {"enum": ["image", "record", "video", "file"]}}},
        "AttachmentId": {"type": "object", "properties": {"attachment_id": {"type": "string"}}},
        "RouteBody": {"type": "object", "required": ["config_id"], "properties": {"config_id": {"type": "string"}}},
        "Health": {
            "type": "object",
            "required": ["status", "version", "uptime_secs"],
            "properties": {
                "status": {"const": "ok"},
                "version": {"type": "string"},
                "uptime_secs": {"type": "integer"}
            }
        }
    })
}

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

/// The answer of a route that does not speak the envelope.
fn plain_response(route: &Route) -> Value {
    let (content_type, schema) = match route.path {
        "/api/v1/openapi.json" => ("application/json", json!({"type": "object"})),
        "/healthz" => ("application/json", json!({"$ref": "#/components/schemas/Health"})),
        "/static/{file}" => ("text/css", json!({"type": "string"})),
        p if p.starts_with("/api/v1/file") => {
            ("application/octet-stream", json!({"type": "string", "format": "binary"}))
        }
        "/api/v1/chat" => (
            "text/event-stream",
            json!({"type": "string", "description": "data: {\"type\": ...} events: session_id, user_message_saved, run_started, plain, agent_stats, complete, message_saved, end; with Accept: application/json one envelope {response, session_id, message_id, sources}"}),
        ),
        _ => ("text/html; charset=utf-8", json!({"type": "string"})),
    };
    json!({"description": "OK", "content": {content_type: {"schema": schema}}})
}

/// Who a proactive message reaches, beyond AstrBot (`api::im`, issue 15).
const IM_OWNER_RULE: &str = "A UMO whose session part is `webchat!<username>!<session_id>` reaches only a session \
    that `<username>` owns: one that does not exist yet is created for them, and one another username owns is \
    refused with 400 `session_id belongs to another username`, nothing stored; any other session part names the \
    conversation directly, as in AstrBot, and reaches whoever owns it.";

fn operation(route: &Route) -> Value {
    let mut responses = Map::new();
    match route.response {
        Some(schema) => {
            responses.insert(
                "200".into(),
                json!({"description": "OK", "content": {"application/json": {"schema": envelope(schema)}}}),
            );
        }
        None => {
            responses.insert("200".into(), plain_response(route));
        }
    }
    if route.body != Body::None || route.access != Access::Public {
        responses.insert(
            "400".into(),
            error_response("Invalid request (bad JSON, wrong field type, a validation rule)"),
        );
    }
    match route.access {
        Access::Public => {}
        Access::Scope(_) => {
            responses.insert("401".into(), error_response("Missing API key / Invalid API key"));
            responses.insert("403".into(), error_response("Insufficient API key scope"));
            responses.insert("429".into(), error_response("Daily request limit exceeded (see Retry-After)"));
        }
        Access::Admin => {
            responses.insert("401".into(), error_response("Missing API key / Token expired"));
            responses.insert(
                "403".into(),
                error_response("Insufficient API key scope: API keys may not manage keys"),
            );
        }
        Access::Dashboard => {
            responses.insert("401".into(), error_response("未授权 / Token 过期 / Token 无效"));
        }
    }
    if route.path == "/api/v1/chat" {
        responses.insert("503".into(), error_response("Too many chats in progress (see Retry-After)"));
    }
    let description = match route.path {
        "/api/v1/im/message" | "/api/v1/im/messages" => Some(IM_OWNER_RULE),
        _ => None,
    };
    if route.path == "/api/auth/login" {
        responses.insert("401".into(), error_response("Invalid username or password"));
        responses.insert("429".into(), error_response("Too many failed logins from this address"));
    }
    if route.body != Body::None {
        responses.insert("413".into(), error_response("Request body too large"));
    }
    responses.insert("500".into(), error_response("Internal server error"));

    let mut op = json!({
        "operationId": operation_id(route),
        "summary": route.summary,
        "tags": [route.tag],
        "x-astrbot-scope": route.access.scope_name(),
        "responses": responses,
    });
    if let Some(description) = description {
        op["description"] = json!(description);
    }
    let params: Vec<Value> = route
        .path
        .split('/')
        .filter_map(|seg| seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
        .map(|name| name.trim_end_matches(":path"))
        .map(|name| json!({"name": name, "in": "path", "required": true, "schema": {"type": "string"}}))
        .collect();
    if !params.is_empty() {
        op["parameters"] = Value::Array(params);
    }
    if let Some(schema) = route.request {
        let media = if route.body == Body::Upload { "multipart/form-data" } else { "application/json" };
        op["requestBody"] = json!({
            "required": true,
            "content": {media: {"schema": {"$ref": format!("#/components/schemas/{schema}")}}}
        });
    }
    op["security"] = match route.access {
        Access::Public => json!([]),
        Access::Scope(_) => json!([{"bearer": []}, {"apiKeyHeader": []}, {"apiKeyQuery": []}]),
        Access::Admin | Access::Dashboard => json!([{"bearer": []}]),
    };
    op
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
        let schemas = doc["components"]["schemas"].as_object().unwrap();
        for r in all {
            let name = r.strip_prefix("#/components/schemas/").unwrap();
            assert!(schemas.contains_key(name), "dangling $ref {r}");
        }
    }
}
