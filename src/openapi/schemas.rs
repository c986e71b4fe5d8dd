//! The component schemas of the OpenAPI document, one function per resource.
//!
//! Each function returns a small `json!` object of named schemas; [`schemas`] merges them.
//! The groups are merged in the order the document has always listed its schemas (which
//! is why two small groups stand apart), so the generated document does not change; a new
//! schema goes into its resource's group, and a route names it in the route table.

use serde_json::{Map, Value, json};

/// Every component schema named by the route table, in the document's order.
pub fn schemas() -> Value {
    let groups = [
        common(),
        bots(),
        keys(),
        login(),
        providers(),
        personas(),
        configs(),
        provider_test(),
        im(),
        chat(),
        files(),
        config_route(),
        health(),
        super::operator::schemas(),
    ];
    let mut all = Map::new();
    for group in groups {
        if let Value::Object(schemas) = group {
            all.extend(schemas);
        }
    }
    Value::Object(all)
}

/// The error envelope, the scopes and the empty answer, shared by every resource.
fn common() -> Value {
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
        "Empty": {"type": "object", "properties": {}, "additionalProperties": false}
    })
}

/// IM bots.
fn bots() -> Value {
    json!({
        "BotIds": {
            "type": "object",
            "required": ["bot_ids"],
            "properties": {"bot_ids": {"type": "array", "items": {"type": "string"}}}
        }
    })
}

/// API keys: the key object, its list, the creation answer (the key object and the raw key) and the bodies.
fn keys() -> Value {
    let ts = json!({"type": ["string", "null"], "format": "date-time"});
    let key_object = json!({
        "type": "object",
        "required": ["key_id", "name", "key_prefix", "scopes", "created_by", "created_at", "updated_at",
                     "last_used_at", "expires_at", "revoked_at", "is_revoked", "is_expired", "daily_limit",
                     "bot_id", "webhook_url", "usage_today"],
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
            "daily_limit": {"type": ["integer", "null"], "description": "Requests per UTC day; null: the server default; 0: unlimited"},
            "bot_id": {"type": ["string", "null"], "description": "The config profile the key is bound to: it chats only as that bot"},
            "webhook_url": {"type": ["string", "null"], "description": "Where every request of the key and its answer are mirrored (Standard Webhooks)"},
            "usage_today": {"type": "integer", "description": "Requests counted this UTC day"}
        }
    });
    let mut updated = key_object.clone();
    updated["properties"]["webhook_secret"] =
        json!({"type": "string", "description": "Only when this call set the key's first webhook_url"});
    let ts_plain = json!({"type": ["string", "null"], "format": "date-time"});
    let delivery = json!({"type": "object", "required": ["id", "event_id", "status", "attempts", "created_at"], "properties": {
        "id": {"type": "integer"},
        "event_id": {"type": "string", "description": "The webhook-id header, the same on every attempt"},
        "status": {"enum": ["pending", "delivered", "failed"]},
        "attempts": {"type": "integer"},
        "response_code": {"type": ["integer", "null"]},
        "error": {"type": ["string", "null"]},
        "created_at": {"type": "string", "format": "date-time"},
        "last_attempt_at": ts_plain, "next_attempt_at": ts_plain, "delivered_at": ts_plain}});
    let mut created = key_object.clone();
    created["properties"]["webhook_secret"] = json!({"type": "string", "description": "Only when a webhook_url is given: the signing secret, shown only here"});
    created["properties"]["api_key"] = json!({"type": "string", "description": "The raw key, shown only in this response", "example": "abk_..."});
    if let Some(r) = created["required"].as_array_mut() {
        r.push(json!("api_key"))
    }
    json!({
        "ApiKey": key_object,
        "ApiKeyList": {"type": "array", "items": {"$ref": "#/components/schemas/ApiKey"}},
        "ApiKeyCreated": created,
        "ApiKeyCreate": {
            "type": "object",
            "properties": {
                "name": {"type": ["string", "null"], "description": "Trimmed; empty means \"Untitled API Key\"", "example": "my app"},
                "scopes": {"type": ["array", "null"], "items": {"$ref": "#/components/schemas/Scope"}, "description": "Null means the 11 default scopes", "example": ["chat", "file"]},
                "expires_in_days": {"type": ["integer", "null"], "minimum": 1, "description": "Null means never", "example": 30},
                "daily_limit": {"type": ["integer", "null"], "minimum": 0, "description": "Requests per UTC day; null: the server default (1000 for a bound key); 0: unlimited", "example": 1000},
                "bot_id": {"type": ["string", "null"], "description": "Bind the key to a bot (a config profile id or name)"},
                "webhook_url": {"type": ["string", "null"], "format": "uri", "maxLength": 2048, "description": "Mirror every request of the key to this http(s) URL; the answer then carries webhook_secret"}
            }
        },
        "ApiKeyPatch": {
            "type": "object",
            "description": "Each field present is changed; null clears it (the server default limit, no expiry, unbound, no webhook). Other fields are refused.",
            "properties": {
                "name": {"type": ["string", "null"], "maxLength": 255},
                "daily_limit": {"type": ["integer", "null"], "minimum": 0},
                "expires_in_days": {"type": ["integer", "null"], "minimum": 1, "maximum": 36500, "description": "From now"},
                "bot_id": {"type": ["string", "null"], "description": "A config profile id or name; binding a key whose limit is the server default sets it to 1000"},
                "webhook_url": {"type": ["string", "null"], "format": "uri", "maxLength": 2048, "description": "http or https; the first one makes the signing secret, returned once as webhook_secret"}
            }
        },
        "ApiKeyUpdated": updated,
        "WebhookSecret": {"type": "object", "required": ["key_id", "webhook_secret"], "properties": {
            "key_id": {"type": "string"},
            "webhook_secret": {"type": "string", "description": "whsec_<base64>: verify the webhook-signature header with it (Standard Webhooks); shown only here", "example": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"}}},
        "WebhookDelivery": delivery,
        "WebhookDeliveries": {"type": "object", "required": ["deliveries", "pending", "dropped"], "properties": {
            "deliveries": {"type": "array", "items": {"$ref": "#/components/schemas/WebhookDelivery"}},
            "pending": {"type": "integer", "description": "Events waiting to be delivered"},
            "dropped": {"type": "integer", "description": "Events dropped because 10,000 were already waiting"}}},
        "KeyIdBody": {
            "type": "object",
            "required": ["key_id"],
            "properties": {"key_id": {"type": "string"}}
        }
    })
}

/// The dashboard login.
fn login() -> Value {
    json!({
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
        }
    })
}

/// Provider sources and providers, and their bodies.
fn providers() -> Value {
    json!({
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
        "EnabledBody": {"type": "object", "properties": {"provider_id": {"type": "string"}, "enabled": {"type": "boolean"}}}
    })
}

/// Personas and persona folders.
fn personas() -> Value {
    json!({
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
        "FolderCreated": {"type": "object", "properties": {"message": {"type": "string"}, "folder": {"$ref": "#/components/schemas/Folder"}}}
    })
}

/// Config documents, profiles and the UMO routing table.
fn configs() -> Value {
    json!({
        "ConfigDocument": {"type": "object", "description": "An AstrBot config document: admins_id, platform_settings, provider_settings (default_provider_id, default_personality, wake_prefix, max_context_length, request_max_retries, ...), wake_prefix, timezone, kb_names, ...; secrets are masked", "additionalProperties": true},
        "SystemConfig": {"type": "object", "properties": {"config": {"$ref": "#/components/schemas/ConfigDocument"}, "metadata": {"type": "object"}, "server_utc_time": {"type": "string"}, "server_utc_offset_minutes": {"type": "integer"}}},
        "ConfigList": {"type": "object", "properties": {"configs": {"type": "array", "items": {"type": "object", "properties": {"id": {"type": "string"}, "name": {"type": "string"}, "path": {"type": "string"}, "is_default": {"type": "boolean"}}}}}},
        "ProfileList": {"type": "object", "properties": {"info_list": {"type": "array", "items": {"type": "object", "properties": {"id": {"type": "string"}, "name": {"type": "string"}, "path": {"type": "string"}}}}}},
        "ProfileCreate": {"type": "object", "properties": {"name": {"type": "string"}, "config": {"$ref": "#/components/schemas/ConfigDocument"}}},
        "ProfileCreated": {"type": "object", "properties": {"conf_id": {"type": "string"}}},
        "Profile": {"type": "object", "properties": {"config": {"$ref": "#/components/schemas/ConfigDocument"}, "metadata": {"type": "object"}}},
        "ProfileRename": {"type": "object", "properties": {"name": {"type": ["string", "null"]}}},
        "Routing": {"type": "object", "properties": {"routing": {"type": "object", "additionalProperties": {"type": "string"}, "description": "UMO (platform:MessageType:session) to config profile id"}}},
        "EffectiveRoute": {"type": "object", "properties": {"umo": {"type": "string"}, "config_id": {"type": "string"}, "routed": {"type": "boolean"}, "provider_id": {"type": "string", "description": "`builtin` when no LLM provider is usable"}, "persona_id": {"type": "string"}}}
    })
}

/// The result of testing a provider.
fn provider_test() -> Value {
    json!({
        "ProviderTest": {"type": "object", "properties": {"id": {"type": "string"}, "model": {"type": ["string", "null"]}, "type": {"type": "string", "example": "chat_completion"}, "name": {"type": "string"}, "status": {"enum": ["available", "unavailable"]}, "error": {"type": ["string", "null"]}}}
    })
}

/// Proactive IM messages.
fn im() -> Value {
    json!({
        "ImMessage": {"type": "object", "required": ["umo", "message"], "properties": {"umo": {"type": "string", "example": "webchat:FriendMessage:webchat!alice!s1", "description": "platform:FriendMessage|GroupMessage|OtherMessage:session; webchat!<username>!<session_id> names the owner too"}, "message": {"oneOf": [{"type": "string"}, {"type": "array", "items": {"type": "object"}}]}}}
    })
}

/// The chat request and chat sessions.
fn chat() -> Value {
    json!({
        "ChatRequest": {"type": "object", "required": ["message"], "description": "AstrBot's shape needs username; with bot_id it is an Astroworld request: the answer is the bare AstroworldAnswer (SSE only with Accept: text/event-stream), username defaults to key:<key_id>, and errors keep real status codes (400, 401, 403, 404, 429)", "properties": {
            "bot_id": {"type": "string", "description": "Astroworld: the bot, a config profile id or name (default: the default profile)"},
            "username": {"type": "string", "description": "The sender and session owner; required without bot_id. key:<key_id> belongs to that key"},
            "message": {"description": "A string, or parts: plain {text}, reply {message_id}, image/record/file/video {attachment_id}", "oneOf": [{"type": "string"}, {"type": "array", "items": {"type": "object"}}]},
            "session_id": {"type": "string", "description": "Omitted: a new UUID"},
            "conversation_id": {"type": "string", "description": "Used only when session_id is absent"},
            "config_id": {"type": "string"}, "config_name": {"type": "string"},
            "enable_streaming": {"type": "boolean"},
            "flags": {"type": "object", "properties": {"enable_streaming": {"type": "boolean"}}},
            "selected_provider": {"type": "string"}, "selected_model": {"type": "string"}}},
        "AstroworldAnswer": {"type": "object", "required": ["response", "sources", "session_id"], "properties": {
            "response": {"type": "string", "example": "We are open Monday to Friday, 9 to 5."},
            "sources": {"type": "array", "items": {"type": "object", "properties": {"title": {"type": "string"}, "url": {"type": "string"}}}},
            "session_id": {"type": "string", "example": "api-7f3c0e0a-1a2b-4c3d-9e8f-001122334455"}}},
        "SessionItem": {"type": "object", "properties": {"session_id": {"type": "string"}, "platform_id": {"type": "string"}, "creator": {"type": "string"}, "display_name": {"type": ["string", "null"]}, "is_group": {"type": "integer"}, "created_at": {"type": "string"}, "updated_at": {"type": "string"}}},
        "SessionPage": {"type": "object", "properties": {"sessions": {"type": "array", "items": {"$ref": "#/components/schemas/SessionItem"}}, "page": {"type": "integer"}, "page_size": {"type": "integer"}, "total": {"type": "integer"}}},
        "SessionDetail": {"type": "object", "properties": {"session": {"$ref": "#/components/schemas/SessionItem"}, "messages": {"type": "array", "items": {"type": "object"}}}},
        "SessionId": {"type": "object", "properties": {"session_id": {"type": "string"}}}
    })
}

/// Attachments: the upload and its answer.
fn files() -> Value {
    json!({
        "Upload": {"type": "object", "required": ["file"], "properties": {"file": {"type": "string", "format": "binary"}}},
        "Attachment": {"type": "object", "properties": {"attachment_id": {"type": "string"}, "filename": {"type": "string"}, "type": {"enum": ["image", "record", "video", "file"]}}},
        "AttachmentId": {"type": "object", "properties": {"attachment_id": {"type": "string"}}}
    })
}

/// The body that routes a UMO to a profile.
fn config_route() -> Value {
    json!({
        "RouteBody": {"type": "object", "required": ["config_id"], "properties": {"config_id": {"type": "string"}}}
    })
}

/// The health check.
fn health() -> Value {
    json!({
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
