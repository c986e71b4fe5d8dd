//! The component schemas of the OpenAPI document, one function per resource.
//!
//! Each function returns a small `json!` object of named schemas; [`schemas`] merges them.
//! The groups are merged in the order the document has always listed its schemas (which
//! is why two small groups stand apart), so the generated document does not change; a new
//! schema goes into its resource's group, and a route names it in the route table.

use serde_json::{Map, Value, json};

/// The characters Rust's `str::trim` removes, as a regex class body: the handlers trim
/// what they read with it, so "blank" and "an integer with spaces" mean what they mean there.
pub const WS: &str =
    "\t\n\u{b}\u{c}\r \u{85}\u{a0}\u{1680}\u{2000}-\u{200a}\u{2028}\u{2029}\u{202f}\u{205f}\u{3000}";

/// A pattern for a string that is not blank once trimmed.
pub fn nonblank_pattern() -> String {
    format!("[^{WS}]")
}

/// A pattern for an integer string as `str::trim` + `parse::<i64>` read it (up to 18 digits,
/// which always fit).
pub fn int_string_pattern() -> String {
    format!("^[{WS}]*[+-]?[0-9]{{1,18}}[{WS}]*$")
}

/// A pattern for pydantic's lax boolean strings, trimmed and in any case.
pub fn bool_string_pattern(allow_empty: bool) -> String {
    let empty = if allow_empty { "|" } else { "" };
    let words = "[Tt][Rr][Uu][Ee]|[Ff][Aa][Ll][Ss][Ee]|1|0|[Yy][Ee][Ss]|[Nn][Oo]|[Oo][Nn]|[Oo][Ff][Ff]|[Yy]|[Nn]|[Tt]|[Ff]";
    format!("^({empty}[{WS}]*({words})[{WS}]*)$")
}

/// An optional integer field read by `opt_int` (a number, or a numeric string) within
/// bounds; `string_pattern` spells the same bounds for the string form.
fn lax_int_field(min: i64, max: i64, string_pattern: String, description: &str) -> Value {
    json!({"anyOf": [{"type": "integer", "minimum": min, "maximum": max}, {"type": "string", "pattern": string_pattern}, {"type": "null"}],
           "description": description})
}

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
        mcp(),
        skills(),
        super::operator::schemas(),
        plugins(),
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
        "Empty": {"type": "object", "properties": {}, "additionalProperties": false},
        "LaxInt": {"description": "An integer, leniently as pydantic reads it: 5, 5.0 or \"5\" (surrounding spaces allowed)",
                   "anyOf": [{"type": "integer", "minimum": i64::MIN, "maximum": i64::MAX},
                             {"type": "string", "pattern": int_string_pattern()}]},
        "LaxBool": {"description": "A boolean, leniently as pydantic reads it: true/false, 1/0, or the strings true, false, 1, 0, yes, no, on, off, y, n, t, f in any case",
                    "anyOf": [{"type": "boolean"}, {"enum": [0, 1]},
                              {"type": "string", "pattern": bool_string_pattern(false)}]}
    })
}

/// IM bots.
fn bots() -> Value {
    let lax_or_null = json!({"anyOf": [{"$ref": "#/components/schemas/LaxBool"}, {"type": "null"}]});
    json!({
        "BotIds": {
            "type": "object",
            "required": ["bot_ids"],
            "properties": {"bot_ids": {"type": "array", "items": {"type": "string"}}}
        },
        "Bot": {
            "type": "object",
            "description": "A bot (AstrBot's platform config): id, type, enable and the type's fields (GET /api/v1/bot-types lists them with their defaults). Tokens are masked in every answer; `state` is the adapter's, never stored.",
            "required": ["id", "type"],
            "properties": {
                "id": {"type": "string", "example": "telegram"},
                "type": {"enum": crate::platforms::types::TYPES},
                "enable": {"type": "boolean"},
                "telegram_token": {"type": "string", "description": "Masked"},
                "ws_reverse_token": {"type": "string", "description": "Masked"},
                "state": {"$ref": "#/components/schemas/BotState"}
            },
            "additionalProperties": true
        },
        "BotState": {
            "type": "object",
            "description": "The adapter's state (beyond AstrBot): running, starting (connecting or restarting), stopped (disabled) or error, with the last error and since when",
            "properties": {
                "status": {"enum": ["starting", "running", "stopped", "error"]},
                "error": {"type": ["string", "null"]},
                "since": {"type": "string"},
                "restarts": {"type": "integer"}
            }
        },
        "BotBody": {
            "type": "object",
            "description": "A bot config, flat or under a non-empty `config` (then the flat fields other than `id`, `type`, `enabled` and `enable` are ignored). The id comes from the config, else the path (PUT) or the body's `id`; `:` and `!` become `_`. `enabled` (else `enable`) sets enable, which defaults to true. Checked whole before it is stored: `type` is webchat, telegram or aiocqhttp; telegram needs `telegram_token` shaped `<digits>:<letters, digits, - and _>` and http(s) base URLs; aiocqhttp needs `ws_reverse_host` (an address or host name) and `ws_reverse_port` (1-65535, not another bot's); numbers may be sent as strings. A PUT replaces the whole bot (no merge). A masked token sent back keeps the stored one (a Telegram token only while telegram_api_base_url and telegram_file_base_url keep their scheme, host and port). At most 64 bots.",
            "properties": {
                "id": {"type": ["string", "number", "null"]},
                "type": {"anyOf": [{"enum": crate::platforms::types::TYPES}, {"type": "null"}]},
                "enabled": lax_or_null,
                "enable": lax_or_null,
                "config": {"type": ["object", "null"], "description": "The bot config, used when it is a non-empty object"}
            },
            "additionalProperties": true
        },
        "BotUpdateById": {"allOf": [{"$ref": "#/components/schemas/BotBody"}], "required": ["bot_id"], "properties": {"bot_id": nonblank()}},
        "BotList": {"type": "object", "properties": {"bots": {"type": "array", "items": {"$ref": "#/components/schemas/Bot"}}}},
        "BotOne": {"type": "object", "properties": {"bot": {"$ref": "#/components/schemas/Bot"}}},
        "BotIdBody": {"type": "object", "required": ["bot_id"], "properties": {"bot_id": nonblank()}},
        "BotEnabledBody": {"type": "object", "required": ["bot_id"], "properties": {"bot_id": nonblank(), "enabled": {"anyOf": [{"$ref": "#/components/schemas/LaxBool"}, {"type": "null"}], "description": "Missing: false"}}},
        "BotTest": {
            "type": "object",
            "description": "A live check: Telegram calls getMe; OneBot lists the connected accounts",
            "properties": {
                "id": {"type": "string"},
                "status": {"enum": ["ok", "error"]},
                "message": {"type": "string"},
                "state": {"$ref": "#/components/schemas/BotState"}
            },
            "additionalProperties": true
        },
        "BotTypes": {
            "type": "object",
            "properties": {"bot_types": {"type": "array", "items": {"type": "object", "properties": {
                "type": {"type": "string"}, "id": {"type": "string"}, "description": {"type": "string"},
                "display_name": {"type": "string"}, "default_config": {"type": ["object", "null"]},
                "schema": {"type": "object"}, "support_streaming_message": {"type": "boolean"},
                "support_proactive_message": {"type": "boolean"}}}}}
        }
    })
}

/// A PATCH field: a blank string clears it, as null does.
fn clearable(mut field: Value) -> Value {
    if let Some(any) = field["anyOf"].as_array_mut() {
        any.push(json!({"type": "string", "pattern": format!("^[{WS}]*$")}));
    }
    field
}

/// `expires_in_days`: 1 to 36500, as a number or a numeric string.
fn expires() -> Value {
    let days = "0*([1-9][0-9]{0,3}|[12][0-9]{4}|3[0-5][0-9]{3}|36[0-4][0-9]{2}|36500)";
    lax_int_field(1, 36500, format!("^[{WS}]*[+]?{days}[{WS}]*$"), "Days from now, 1 to 36500; null: never")
}

/// `daily_limit`: 0 or more, as a number or a numeric string.
fn daily_limit() -> Value {
    lax_int_field(
        0,
        i64::MAX,
        format!("^[{WS}]*[+]?[0-9]{{1,18}}[{WS}]*$"),
        "Requests per UTC day; null: the server default (1000 for a bound key); 0: unlimited",
    )
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
                "name": {"type": ["string", "null"], "maxLength": 255, "description": "Trimmed; empty means \"Untitled API Key\"; at most 255 characters", "example": "my app"},
                "scopes": {"type": ["array", "null"], "minItems": 1, "items": {"$ref": "#/components/schemas/Scope"}, "description": "Null means the 11 default scopes; chat:admin needs chat beside it, config:edit_admin needs config", "example": ["chat", "file"],
                           "allOf": [{"if": {"type": "array", "contains": {"const": "chat:admin"}}, "then": {"contains": {"const": "chat"}}},
                                     {"if": {"type": "array", "contains": {"const": "config:edit_admin"}}, "then": {"contains": {"const": "config"}}}]},
                "expires_in_days": expires(),
                "daily_limit": daily_limit(),
                "bot_id": {"type": ["string", "null"], "description": "Bind the key to a bot (a config profile id or name)"},
                "webhook_url": {"type": ["string", "null"], "pattern": WEBHOOK_URL_PATTERN, "maxLength": 2048, "description": "Mirror every request of the key to this http(s) URL; the answer then carries webhook_secret"}
            }
        },
        "ApiKeyPatch": {
            "type": "object",
            "description": "Each field present is changed; null clears it (the server default limit, no expiry, unbound, no webhook). Other fields are refused.",
            "properties": {
                "name": {"type": ["string", "null"], "maxLength": 255},
                "daily_limit": clearable(daily_limit()),
                "expires_in_days": clearable(expires()),
                "bot_id": {"type": ["string", "null"], "description": "A config profile id or name; binding a key whose limit is the server default sets it to 1000"},
                "webhook_url": {"type": ["string", "null"], "pattern": WEBHOOK_URL_PATTERN, "maxLength": 2048, "description": "http or https; the first one makes the signing secret, returned once as webhook_secret"}
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
            "properties": {"key_id": {"type": "string", "minLength": 1}}
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

/// A source id: a non-blank string, or a number (stored as its text).
fn source_id_value() -> Value {
    json!({"anyOf": [{"type": "string", "minLength": 1, "pattern": nonblank_pattern()}, {"type": "number"}]})
}

/// A provider key as the save check reads it: a literal key (empty, or not starting with `$`)
/// or a `$NAME` / `${NAME}` reference to a plain name ending in `_API_KEY`
/// (`config::refs::secret_ref_allowed`).
const SECRET_KEY_PATTERN: &str = r"^(|[^$][\s\S]*|\$[A-Za-z0-9_]*_API_KEY|\$\{[A-Za-z0-9_]*_API_KEY\})$";

/// A webhook URL as `keys::check_webhook_url` takes it: http or https (any case), a host
/// name or IPv4 address or bracketed IPv6 address, an optional port, path and query, no
/// whitespace; empty clears it.
const WEBHOOK_URL_PATTERN: &str =
    r"^(|[hH][tT][tT][pP][sS]?://(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+)(:[0-9]{1,5})?(/[^\s?#]*)?(\?[^\s#]*)?)$";

/// The typed fields of a provider source.
fn source_fields() -> Value {
    json!({
        "id": {"example": "openai", "description": "A string (may contain `/` and `:`); a number is read as its text; in a request, another type is ignored (the id then comes from elsewhere)"},
        "provider": {"type": ["string", "null"], "example": "openai"},
        "type": {"anyOf": [{"enum": ["openai_chat_completion", "anthropic_chat_completion"]}, {"not": {"type": "string"}}], "description": "openai_chat_completion (the default, also for a value that is not a string) or anthropic_chat_completion"},
        "provider_type": {"type": ["string", "null"], "example": "chat_completion", "description": "Default chat_completion"},
        "enable": {"type": ["boolean", "null"]},
        "key": {"type": ["array", "null"], "items": {"type": "string", "pattern": SECRET_KEY_PATTERN}, "description": "API keys, rotated; $NAME or ${NAME} reads an environment variable whose name ends in _API_KEY or is listed in ASTRBOT_SECRET_ENV (the pattern spells the first rule; a name listed there is accepted too); shown masked; a masked key sent back is kept only while api_base (scheme, host, port) and proxy are unchanged"},
        "api_base": {"type": ["string", "null"], "example": "https://api.openai.com/v1"},
        "timeout": {"anyOf": [{"type": "integer", "minimum": i64::MIN, "maximum": u64::MAX}, {"type": "string", "pattern": int_string_pattern()}, {"type": "null"}],
                    "description": "Seconds; a numeric string is stored as the integer", "example": 120},
        "proxy": {"type": ["string", "null"]},
        "custom_headers": {"type": ["object", "null"], "additionalProperties": {"type": "string"}}
    })
}

/// A source body: a non-empty `config` object, or else the flat fields.
fn source_body() -> Value {
    let mut flat = source_fields();
    flat["config"] = json!({"not": {"type": "object", "minProperties": 1}, "description": "Absent, empty or not an object: the flat fields count"});
    json!({"type": "object", "description": "A ProviderSource, flat or under a non-empty `config` (then the flat fields are ignored); the id comes from `config.id`, else the top-level `id`, else the path's id (PUT /provider-sources/{source_id}) or `source_id` (PUT /by-id). POST needs an id.",
    "properties": {"source_id": {"description": "PUT /by-id: the source to update"}},
    "additionalProperties": true,
    "anyOf": [
        {"required": ["config"], "properties": {"config": {"type": "object", "minProperties": 1, "properties": source_fields(), "additionalProperties": true}}},
        {"properties": flat}
    ]})
}

/// Provider sources and providers, and their bodies.
fn providers() -> Value {
    json!({
        "ProviderSource": {
            "type": "object",
            "description": "A vendor connection (AstrBot's provider source). Vendor-specific keys are kept. The fields below are type-checked when saved, as AstrBot's config validation does (400 `格式校验未通过: [...]`); null stands for the type's empty value.",
            "required": ["id"],
            "properties": source_fields(),
            "additionalProperties": true,
            "allOf": [{"properties": {"id": {"type": "string"}}}]
        },
        "ProviderSourceBody": source_body(),
        "ProviderSourceCreate": {"allOf": [{"$ref": "#/components/schemas/ProviderSourceBody"}], "anyOf": [
            {"required": ["id"], "properties": {"id": source_id_value()}},
            {"required": ["config"], "properties": {"config": {"type": "object", "required": ["id"], "properties": {"id": source_id_value()}}}}]},
        "ProviderSourceUpdateById": {"allOf": [{"$ref": "#/components/schemas/ProviderSourceBody"}], "required": ["source_id"],
            "properties": {"source_id": nonblank()}},
        "ProviderSourceList": {"type": "object", "properties": {"provider_sources": {"type": "array", "items": {"$ref": "#/components/schemas/ProviderSource"}}}},
        "ProviderSourceOne": {"type": "object", "properties": {"provider_source": {"$ref": "#/components/schemas/ProviderSource"}}},
        "Provider": {
            "type": "object",
            "description": "A model on a source; listings show it merged with its source. As in AstrBot, a provider's own fields are stored as given (no save-time type check): the types below are what the dashboard writes.",
            "required": ["id"],
            "properties": {
                "id": {"type": "string", "example": "openai/gpt-4o-mini"},
                "provider_source_id": {"example": "openai", "description": "A string"},
                "model": {"example": "gpt-4o-mini", "description": "A string"},
                "enable": {"description": "A boolean"},
                "provider_type": {"example": "chat_completion", "description": "A string"},
                "modalities": {"description": "A list of text, image, audio, tool_use"},
                "custom_extra_body": {"description": "An object of extra request-body fields (temperature, top_p, max_tokens, ...)"},
                "max_context_tokens": {"description": "An integer; 0: from the model's metadata"}
            },
            "additionalProperties": true
        },
        "ProviderBody": {"type": "object", "description": "A Provider, flat or under a non-empty `config`; `source_id`, `capability` (chat, agent, stt, tts, embedding, rerank) and `enabled` are mapped as AstrBot does", "properties": {
            "provider_id": {"type": "string"}, "source_id": {"type": ["string", "null"]}, "capability": {"type": ["string", "null"]},
            "enabled": {"anyOf": [{"$ref": "#/components/schemas/LaxBool"}, {"type": "null"}]},
            "enable": {"anyOf": [{"$ref": "#/components/schemas/LaxBool"}, {"type": "null"}]},
            "config": {"description": "A Provider object; used when it is a non-empty object, else the flat fields are"}}, "additionalProperties": true},
        "ProviderList": {"type": "object", "properties": {"providers": {"type": "array", "items": {"$ref": "#/components/schemas/Provider"}}, "model_metadata": {"type": "object"}}},
        "ProviderOne": {"type": "object", "properties": {"provider": {"$ref": "#/components/schemas/Provider"}, "model_metadata": {"type": "object"}}},
        "EnabledBody": {"type": "object", "required": ["provider_id"], "properties": {"provider_id": nonblank(), "enabled": {"anyOf": [{"$ref": "#/components/schemas/LaxBool"}, {"type": "null"}], "description": "Missing: false"}}},
        "EnabledPathBody": {"type": "object", "required": ["enabled"], "properties": {"enabled": {"$ref": "#/components/schemas/LaxBool"}}},
        "ProviderIdBody": {"type": "object", "required": ["provider_id"], "properties": {"provider_id": nonblank()}}
    })
}

/// MCP servers (AstrBot's `mcp_server.json` entries).
fn mcp() -> Value {
    let lax_or_null = json!({"anyOf": [{"$ref": "#/components/schemas/LaxBool"}, {"type": "null"}]});
    let strings = json!({"type": "object", "additionalProperties": {"type": "string"}});
    let seconds = json!({"type": ["number", "null"], "exclusiveMinimum": 0, "maximum": 86400});
    let transport = json!({"enum": ["sse", "streamable_http", null]});
    let fields = json!({
        "active": lax_or_null,
        "enabled": {"anyOf": [{"$ref": "#/components/schemas/LaxBool"}, {"type": "null"}], "description": "Sets active when active is not given"},
        "command": {"type": ["string", "null"], "description": "stdio: the launcher, one of python, python3, py, node, npx, npm, pnpm, yarn, bun, bunx, deno, uv, uvx (the server's ASTRBOT_MCP_STDIO_ALLOWED_COMMANDS replaces the list); no shell metacharacters"},
        "args": {"type": ["array", "null"], "items": {"type": "string"}, "description": "stdio: arguments without CR, LF or NUL; python -c and node/deno/bun -e/-p/--eval/--print are refused"},
        "env": {"anyOf": [strings, {"type": "null"}], "description": "stdio: the child's environment; secret-looking values are masked in answers"},
        "cwd": {"type": ["string", "null"], "description": "stdio: an absolute folder inside the server's data folder"},
        "url": {"type": ["string", "null"], "description": "remote: the http(s) SSE URL or Streamable HTTP endpoint"},
        "transport": transport,
        "type": transport,
        "headers": {"anyOf": [strings, {"type": "null"}], "description": "remote: sent with every request; secret-looking values are masked in answers and kept only while url keeps its scheme, host and port"},
        "timeout": seconds,
        "sse_read_timeout": seconds,
        "session_read_timeout": seconds,
        "mcpServers": {"type": ["object", "null"], "description": "AstrBot's wrapped form {\"<name>\": {...}}: its first entry is the config"}
    });
    let body = |extra: Value, required: &[&str]| {
        let mut props = fields.clone();
        if let (Some(p), Some(e)) = (props.as_object_mut(), extra.as_object()) {
            p.extend(e.clone());
        }
        json!({"type": "object", "required": required, "properties": props, "additionalProperties": true})
    };
    let config_desc = "The server config, used instead of the flat fields when it is an object";
    json!({
        "McpServer": {
            "type": "object",
            "description": "A stored MCP server: name, active, its stored keys (stdio: command, args, env, cwd; remote: url, transport, headers, timeout, ...), then connected, tools (the tool names it offers) and errlogs (only while connected), and state (beyond AstrBot). Secret-looking header and env values are masked.",
            "required": ["name", "active", "connected", "tools"],
            "properties": {
                "name": {"type": "string"},
                "active": {"description": "Whether it runs (stored as given; default true)"},
                "connected": {"type": "boolean"},
                "tools": {"type": "array", "items": {"type": "string"}},
                "errlogs": {"type": "array", "items": {"type": "string"}},
                "state": {"type": "object", "description": "connecting, connected, error (with the last error, retried with backoff) or stopped; since when; restarts",
                          "properties": {"status": {"enum": ["connecting", "connected", "error", "stopped"]}, "error": {"type": ["string", "null"]}, "since": {"type": ["string", "null"]}, "restarts": {"type": "integer"}}}
            },
            "additionalProperties": true
        },
        "McpServerList": {"type": "array", "items": {"$ref": "#/components/schemas/McpServer"}},
        "McpServerBody": body(json!({
            "name": {"type": ["string", "null"], "description": "POST: required (400 `Server name cannot be empty`). PUT: a name other than the path's renames the server"},
            "oldName": {"type": ["string", "null"], "description": "PUT: the server to update (default: the path's)"},
            "config": {"type": ["object", "null"], "description": config_desc}
        }), &[]),
        "McpServerByName": body(json!({
            "server_name": nonblank(),
            "name": {"type": ["string", "null"]},
            "oldName": {"type": ["string", "null"]},
            "config": {"type": ["object", "null"], "description": config_desc}
        }), &["server_name"]),
        "McpEnabledByName": {"type": "object", "required": ["server_name"], "properties": {"server_name": nonblank(), "enabled": lax_or_null}},
        "McpTestBody": {"type": "object", "description": "The config to test: mcp_server_config, else config, else the stored server's", "properties": {
            "mcp_server_config": {"type": ["object", "null"]},
            "config": {"type": ["object", "null"]}
        }, "additionalProperties": true},
        "McpTestByName": {"type": "object", "required": ["server_name"], "description": "The config to test: mcp_server_config, else config, else the stored server's", "properties": {
            "server_name": nonblank(),
            "mcp_server_config": {"type": ["object", "null"]},
            "config": {"type": ["object", "null"]}
        }, "additionalProperties": true},
        "McpToolNames": {"type": "array", "items": {"type": "string"}, "description": "The tools the server offers (their MCP names)"},
        "ModelScopeSync": {"type": "object", "properties": {"access_token": {"type": ["string", "null"], "description": "Your ModelScope access token; sent to ModelScope once, never stored"}}}
    })
}

/// Skills (`api::skills`): the listing, uploads, active flags, files, Neo's sync.
fn skills() -> Value {
    let lax_or_null = json!({"anyOf": [{"$ref": "#/components/schemas/LaxBool"}, {"type": "null"}]});
    json!({
        "Skill": {"type": "object", "required": ["name", "description", "path", "active", "source_type"], "properties": {
            "name": {"type": "string", "description": "The skill's folder name under DIR/skills"},
            "description": {"type": "string", "description": "SKILL.md's frontmatter description"},
            "path": {"type": "string", "description": "Its SKILL.md on the server"},
            "active": {"type": "boolean", "description": "Whether the agent sees it"},
            "source_type": {"type": "string", "enum": ["local_only"]},
            "source_label": {"type": "string"},
            "local_exists": {"type": "boolean"},
            "sandbox_exists": {"type": "boolean"},
            "plugin_name": {"type": "string"},
            "readonly": {"type": "boolean"},
            "preset": {"type": "boolean"}
        }},
        "SkillList": {"type": "object", "required": ["skills", "runtime", "sandbox_cache"], "properties": {
            "skills": {"type": "array", "items": {"$ref": "#/components/schemas/Skill"}},
            "runtime": {"type": "string", "description": "Always none: this server runs no sandbox"},
            "sandbox_cache": {"type": "object", "description": "AstrBot's sandbox cache, always empty here"}
        }},
        "SkillUploaded": {"type": "object", "required": ["name"], "properties": {"name": {"type": "string", "description": "The installed skills' names joined by `, `"}}},
        "SkillName": {"type": "object", "required": ["name"], "properties": {"name": {"type": "string"}}},
        "SkillActive": {"type": "object", "required": ["name", "active"], "properties": {"name": {"type": "string"}, "active": {"type": "boolean"}}},
        "SkillActiveBody": {"type": "object", "description": "enabled wins over active; neither is true", "properties": {
            "enabled": lax_or_null.clone(), "active": lax_or_null.clone()
        }},
        "SkillActiveByName": {"type": "object", "required": ["skill_name"], "properties": {
            "skill_name": nonblank(), "enabled": lax_or_null.clone(), "active": lax_or_null.clone()
        }},
        "SkillFileEntry": {"type": "object", "required": ["name", "path", "type", "size", "editable"], "properties": {
            "name": {"type": "string"}, "path": {"type": "string"},
            "type": {"type": "string", "enum": ["file", "directory"]},
            "size": {"type": "integer", "minimum": 0}, "editable": {"type": "boolean"}
        }},
        "SkillFiles": {"type": "object", "required": ["name", "path", "entries"], "properties": {
            "name": {"type": "string"}, "path": {"type": "string", "description": "The folder, relative to the skill ('' is its root)"},
            "entries": {"type": "array", "items": {"$ref": "#/components/schemas/SkillFileEntry"}, "description": "Folders first, then files, by name ignoring case"}
        }},
        "SkillFile": {"type": "object", "required": ["name", "path", "content", "size", "editable"], "properties": {
            "name": {"type": "string"}, "path": {"type": "string"}, "content": {"type": "string"},
            "size": {"type": "integer", "minimum": 0}, "editable": {"type": "boolean"}
        }},
        "SkillFileWrite": {"type": "object", "required": ["skill_name", "path"], "properties": {
            "skill_name": nonblank(), "path": nonblank(),
            "content": {"type": ["string", "null"], "maxLength": 524288, "description": "The new text (default empty); the file must exist and be a text type"}
        }},
        "SkillFileWritten": {"type": "object", "required": ["name", "path", "size"], "properties": {
            "name": {"type": "string"}, "path": {"type": "string"}, "size": {"type": "integer", "minimum": 0}
        }},
        "SkillNeoSync": {"type": "object", "description": "release_id, or skill_key (with require_stable, default true)", "properties": {
            "release_id": {"type": ["string", "null"]}, "skill_key": {"type": ["string", "null"]}, "require_stable": lax_or_null.clone()
        }, "additionalProperties": true}
    })
}

/// Plugins (`api::plugins`): entries, details, config, installs, sources, marketplace.
fn plugins() -> Value {
    let lax_or_null = json!({"anyOf": [{"$ref": "#/components/schemas/LaxBool"}, {"type": "null"}]});
    let text_or_null = json!({"type": ["string", "null"]});
    json!({
        "PluginErrorEnvelope": {"type": "object", "required": ["status", "message", "data"], "properties": {
            "status": {"enum": ["error", "warning"]}, "message": {"type": "string", "example": "插件不存在"},
            "data": {"type": "object", "description": "{} for an error; {warning_type: astrbot_version_unsupported, can_ignore: true} for the version warning"}
        }},
        "PluginEntry": {"type": "object", "required": ["name", "marketplace_name", "repo", "author", "desc", "version", "reserved", "activated", "install_source", "updates_enabled", "runtime"], "properties": {
            "name": {"type": "string", "description": "metadata.yaml's name, also the folder under DIR/plugins"},
            "marketplace_name": {"type": "string", "description": "name with _ written -"},
            "repo": {"type": "string"}, "author": {"type": "string"}, "desc": {"type": "string"}, "version": {"type": "string"},
            "reserved": {"type": "boolean", "description": "Always false: no plugin is built in"},
            "activated": {"type": "boolean", "description": "Enabled: its commands and tools are offered"},
            "online_vesion": {"type": "string", "description": "AstrBot 4.27's misspelled field, always empty"},
            "online_version": {"type": "string", "description": "AstrBot 4.29's spelling of the same, always empty"},
            "display_name": text_or_null.clone(), "logo": {"type": "null"},
            "support_platforms": {"type": "array", "items": {"type": "string"}},
            "astrbot_version": text_or_null.clone(), "installed_at": {"type": "string", "description": "The folder's modification time, ISO 8601 UTC"},
            "i18n": {"type": "object"}, "root_dir_name": {"type": "string"},
            "install_source": {"type": "object", "description": "How it was installed (install_method market, github, url or upload); `implicit: true` when nothing was recorded"},
            "updates_enabled": {"type": "boolean"}, "update_disabled_reason": {"type": "string"},
            "pages": {"type": "array", "items": {"type": "string"}},
            "runtime": {"type": ["object", "null"], "description": "Beyond AstrBot: the plugin's process (null without plugin.json)", "properties": {
                "running": {"type": "boolean"}, "pid": {"type": ["integer", "null"]}, "calls": {"type": "integer"},
                "errors": {"type": "integer"}, "restarts": {"type": "integer"}, "last_error": text_or_null.clone()
            }}
        }},
        "PluginList": {"type": "array", "items": {"$ref": "#/components/schemas/PluginEntry"}},
        "PluginDetail": {"allOf": [{"$ref": "#/components/schemas/PluginEntry"}, {"type": "object", "required": ["components"], "properties": {
            "components": {"type": "array", "description": "Commands (nested under their groups) then LLM tools, as AstrBot's components", "items": {"type": "object", "required": ["type", "name", "description"], "properties": {
                "type": {"enum": ["command", "llm_tool"]}, "name": {"type": "string"}, "description": {"type": "string"},
                "subcommands": {"type": "array", "items": {"type": "object"}}
            }}}
        }}]},
        "PluginFailed": {"type": "object", "description": "Folder name → why it did not load", "additionalProperties": {"type": "object", "required": ["name", "error", "reserved"], "properties": {
            "name": {"type": "string"}, "error": {"type": "string"}, "reserved": {"const": false}, "traceback": {"type": "string"}
        }}},
        "PluginReadme": {"type": "object", "required": ["content"], "properties": {"content": {"type": "string", "description": "README.md, at most 1 MiB of UTF-8"}}},
        "PluginConfig": {"type": "object", "required": ["plugin_name", "metadata", "config", "i18n"], "properties": {
            "plugin_name": {"type": "string"}, "log_level": {"type": "null"},
            "metadata": {"type": ["object", "null"], "description": "{<name>: {description, type: object, items: <_conf_schema.json>}}; null for an unknown plugin or one without a schema"},
            "config": {"type": ["object", "null"], "description": "The config in effect (the saved file repaired against the schema)"},
            "i18n": {"type": "object"}
        }},
        "PluginConfigById": {"type": "object", "required": ["plugin_id"], "properties": {
            "plugin_id": nonblank(), "config": {"description": "Keys merged into the saved config after validation (anything but an object reads as {})"}
        }},
        "PluginConfigBody": {"type": "object", "description": "{config: {...}}, or the config keys themselves", "additionalProperties": true},
        "PluginEnabledById": {"type": "object", "required": ["plugin_id", "enabled"], "properties": {"plugin_id": nonblank(), "enabled": {"$ref": "#/components/schemas/LaxBool"}}},
        "PluginIdBody": {"type": "object", "required": ["plugin_id"], "properties": {"plugin_id": nonblank()}},
        "PluginUninstall": {"type": "object", "properties": {
            "delete_config": lax_or_null.clone(), "delete_data": lax_or_null.clone()
        }, "description": "delete_config removes DIR/config/<name>_config.json, delete_data DIR/plugin_data/<name>"},
        "PluginInstall": {"type": "object", "description": "url (or repository): a GitHub repository (owner/repo, https://github.com/o/r[/tree/branch]) or an archive URL; download_url: the archive to fetch (http/https, at most 64 MiB); install_method market with market_plugin_id (and registry_url) installs a marketplace entry", "properties": {
            "url": text_or_null.clone(), "repository": text_or_null.clone(), "download_url": text_or_null.clone(),
            "proxy": text_or_null.clone(), "ignore_version_check": lax_or_null.clone(), "install_method": text_or_null.clone(),
            "registry_url": text_or_null.clone(), "market_plugin_id": text_or_null.clone()
        }, "additionalProperties": true},
        "PluginUpload": {"type": "object", "required": ["file"], "properties": {
            "file": {"type": "string", "format": "binary", "description": "A .zip or .tar.gz of the plugin folder (metadata.yaml at its root or in its only folder)"},
            "ignore_version_check": {"type": "string", "description": "true to install even when astrbot_version does not admit this server"}
        }},
        "PluginInstalled": {"type": "object", "required": ["repo", "readme", "name"], "properties": {
            "repo": {"type": "string"}, "readme": text_or_null.clone(), "name": {"type": "string"}
        }},
        "PluginMarket": {"type": ["object", "array"], "description": "The registry JSON as its source serves it: an object keyed by plugin (with an optional $meta) or a list"},
        "PluginCategories": {"type": "object", "required": ["categories"], "properties": {"categories": {"type": "array", "maxItems": 0}}},
        "PluginSources": {"type": "object", "required": ["sources"], "properties": {"sources": {"type": "array", "maxItems": 100, "description": "As stored, usually {name, url} objects"}}},
        "PluginSource": {"type": "object", "description": "A source as the dashboard writes it: {name, url}; stored as sent (top-level nulls dropped)", "properties": {
            "id": text_or_null.clone(), "name": text_or_null.clone(), "url": text_or_null.clone()
        }, "additionalProperties": true},
        "PluginSourcesBody": {"type": "object", "properties": {"sources": {"type": ["array", "null"], "maxItems": 100, "description": "The new list; absent or null clears it"}}}
    })
}

/// A string that is not empty once trimmed.
fn nonblank() -> Value {
    json!({"type": "string", "minLength": 1, "pattern": nonblank_pattern()})
}

/// An optional integer in pydantic's lax forms.
fn lax_int_or_null() -> Value {
    json!({"anyOf": [{"$ref": "#/components/schemas/LaxInt"}, {"type": "null"}]})
}

/// JSON Schema has no "even length": the odd lengths up to `max`, to exclude.
fn odd_lengths(max: usize) -> Vec<Value> {
    (1..=max).step_by(2).map(|n| json!({"type": "array", "minItems": n, "maxItems": n})).collect()
}

/// A persona body whose `required` fields must be non-blank.
fn persona_body(required: &[&str]) -> Value {
    let id = if required.contains(&"persona_id") {
        nonblank()
    } else {
        json!({"type": ["string", "null"], "minLength": 1, "pattern": nonblank_pattern(), "description": "Overrides the path's id"})
    };
    let prompt =
        if required.contains(&"system_prompt") { nonblank() } else { json!({"type": ["string", "null"]}) };
    let mut body = json!({"type": "object", "required": required, "properties": {
        "persona_id": id,
        "system_prompt": prompt,
        "begin_dialogs": {"type": ["array", "null"], "items": {"description": "A turn; a non-string is stored as its JSON text"},
                          "description": "Alternating user and assistant turns: an even number (AstrBot: 预设对话数量必须为偶数); the schema spells the rule out up to 63 turns",
                          "not": {"anyOf": odd_lengths(63)}},
        "tools": {"type": ["array", "null"], "items": {"type": "string"}, "description": "null: every tool"},
        "skills": {"type": ["array", "null"], "items": {"type": "string"}, "description": "null: every skill"},
        "custom_error_message": {"type": ["string", "null"]},
        "folder_id": {"type": ["string", "null"], "description": "An existing folder; null or empty: the root"},
        "sort_order": lax_int_or_null()
    }});
    if !required.contains(&"system_prompt") {
        // An update reads neither: moving and ordering have their own routes.
        body["properties"]["folder_id"] = json!({"description": "Ignored: use POST /api/v1/personas/move"});
        body["properties"]["sort_order"] =
            json!({"description": "Ignored: use POST /api/v1/personas/reorder"});
    }
    body
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
        "PersonaBody": persona_body(&["persona_id", "system_prompt"]),
        "PersonaUpdateById": persona_body(&["persona_id"]),
        "PersonaUpdate": persona_body(&[]),
        "PersonaList": {"type": "array", "items": {"$ref": "#/components/schemas/Persona"}},
        "PersonaCreated": {"type": "object", "properties": {"message": {"type": "string", "example": "人格创建成功"}, "persona": {"$ref": "#/components/schemas/Persona"}}},
        "PersonaTree": {"type": "object", "properties": {"folders": {"type": "array", "items": {"type": "object", "description": "A folder with `children` (folders) and `personas`"}}, "personas": {"$ref": "#/components/schemas/PersonaList"}}},
        "PersonaMove": {"type": "object", "required": ["persona_id"], "properties": {"persona_id": nonblank(), "folder_id": {"type": ["string", "null"], "description": "null or empty: the root; else an existing folder"}}},
        "PersonaReorder": {"type": "object", "required": ["items"], "properties": {"items": {"type": "array", "items": {
            "type": "object", "required": ["id", "sort_order"],
            "properties": {"id": {"type": "string"}, "type": {"enum": ["persona", "folder", null], "description": "Default persona"}, "sort_order": {"$ref": "#/components/schemas/LaxInt"}}}}}},
        "MessageOnly": {"type": "object", "properties": {"message": {"type": "string"}}},
        "Folder": {"type": "object", "properties": {"folder_id": {"type": "string"}, "name": {"type": "string"}, "parent_id": {"type": ["string", "null"]}, "description": {"type": ["string", "null"]}, "sort_order": {"type": "integer"}, "created_at": {"type": "string"}, "updated_at": {"type": "string"}}},
        "FolderBody": {"type": "object", "required": ["name"], "properties": {"name": nonblank(), "parent_id": {"type": ["string", "null"], "description": "An existing folder; null or empty: the root"}, "description": {"type": ["string", "null"]}, "sort_order": lax_int_or_null()}},
        "FolderUpdate": {"type": ["object", "null"], "description": "Each field present is changed", "properties": {"name": {"type": ["string", "null"]}, "parent_id": {"type": ["string", "null"], "description": "An existing folder other than this one; null or empty: the root"}, "description": {"type": ["string", "null"]}, "sort_order": lax_int_or_null()}},
        "FolderList": {"type": "array", "items": {"$ref": "#/components/schemas/Folder"}},
        "FolderCreated": {"type": "object", "properties": {"message": {"type": "string"}, "folder": {"$ref": "#/components/schemas/Folder"}}}
    })
}

/// Config documents, profiles and the UMO routing table.
fn configs() -> Value {
    json!({
        "ConfigDocument": {"type": "object", "description": "An AstrBot config document: admins_id, platform_settings, provider_settings (default_provider_id, default_personality, wake_prefix, max_context_length, request_max_retries, max_agent_step, ...), wake_prefix, timezone, kb_names, ...; secrets are masked. Both layouts: AstrBot 4.27's flat provider_settings keys and 4.29's agent_runner {runner_type, config} are read and written alike (see /docs/configuration); a document with agent_runner or a config_version of 3 or more is checked as 4.29 checks it", "additionalProperties": true, "properties": {
            "agent_runner": {"type": "object", "required": ["runner_type"], "description": "AstrBot 4.29's agent settings, a view of the provider_settings keys (local runner: config.model, persona, compression, misc). Missing, null or not an object in a 4.29-shaped update: 400 `agent_runner must be an object`; another runner_type: 400 `Unsupported Agent Runner type: X`", "properties": {"runner_type": {"enum": ["local", "dify", "coze", "dashscope", "deerflow"]}, "config": {"description": "The runner's settings; a field of the wrong type, or a config that is not an object, takes the default"}}}}},
        "SystemConfig": {"type": "object", "properties": {"config": {"$ref": "#/components/schemas/ConfigDocument"}, "metadata": {"type": "object"}, "server_utc_time": {"type": "string"}, "server_utc_offset_minutes": {"type": "integer"}}},
        "ConfigList": {"type": "object", "properties": {"configs": {"type": "array", "items": {"type": "object", "properties": {"id": {"type": "string"}, "name": {"type": "string"}, "path": {"type": "string"}, "is_default": {"type": "boolean"}}}}}},
        "ProfileList": {"type": "object", "properties": {"info_list": {"type": "array", "items": {"type": "object", "properties": {"id": {"type": "string"}, "name": {"type": "string"}, "path": {"type": "string"}}}}}},
        "ProfileCreate": {"type": "object", "properties": {"name": {"type": ["string", "null"], "description": "Blank: the first 8 characters of the new id"}, "config": {"anyOf": [{"$ref": "#/components/schemas/ConfigDocument"}, {"type": "null"}]}}},
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
        "ImMessage": {"type": "object", "required": ["umo", "message"], "properties": {
            "umo": {"type": "string", "pattern": "^webchat:(FriendMessage|GroupMessage|OtherMessage):.", "example": "webchat:FriendMessage:webchat!alice!s1",
                    "description": "platform:FriendMessage|GroupMessage|OtherMessage:session; only the webchat platform runs here (another platform: 400 `Bot not found or not running for platform: x`); webchat!<username>!<session_id> names the owner too"},
            "message": {"description": "Text, or up to 20 parts (plain {text}, reply {message_id}, image/record/file/video {attachment_id} of an existing attachment) of which one is not a reply; blank text counts as nothing", "oneOf": [
                {"type": "string", "pattern": nonblank_pattern()},
                {"type": "array", "minItems": 1, "maxItems": 20, "items": {"$ref": "#/components/schemas/MessagePart"},
                 "contains": {"anyOf": [{"required": ["type", "text"], "properties": {"type": {"const": "plain"}, "text": {"anyOf": [{"type": "string", "minLength": 1}, {"not": {"type": ["string", "null"]}}]}}},
                                        {"required": ["type"], "properties": {"type": {"enum": ["image", "record", "file", "video"]}}}]}}]}}},
        "MessagePart": {"type": "object", "required": ["type"], "oneOf": [
            {"properties": {"type": {"const": "plain"}, "text": {"description": "A string; another value is used as its JSON text"}}},
            {"required": ["message_id"], "properties": {"type": {"const": "reply"}, "message_id": {"type": ["string", "integer"]}}},
            {"required": ["attachment_id"], "properties": {"type": {"enum": ["image", "record", "file", "video"]}, "attachment_id": {"type": "string", "minLength": 1}}}]}
    })
}

/// The chat request and chat sessions.
fn chat() -> Value {
    json!({
        "ChatRequest": {"type": "object", "required": ["message"], "description": "AstrBot's shape needs username; with bot_id it is an Astroworld request: the answer is the bare AstroworldAnswer (SSE only with Accept: text/event-stream), username defaults to key:<key_id>, and errors keep real status codes (400, 401, 403, 404, 429). Without bot_id, AstrBot reports most failures as a 200-error (`Missing key: username`, `config_id not found: x`, `Message content is empty ...`). Fields starting with `_` are ignored.", "properties": {
            "bot_id": {"type": "string", "minLength": 1, "maxLength": 255, "pattern": nonblank_pattern(), "description": "Astroworld: the bot, a config profile id or name (default: the default profile); blank is 400 `bot_id must be a non-empty string`, over 255 characters 400 too"},
            "username": {"type": "string", "minLength": 1, "pattern": nonblank_pattern(), "description": "The sender and session owner; required without bot_id. key:<key_id> belongs to that key; an administrator's id needs chat:admin"},
            "message": {"description": "A non-empty string, or non-empty parts: plain {text}, reply {message_id}, image/record/file/video {attachment_id}; reply alone is refused", "oneOf": [{"type": "string", "minLength": 1}, {"type": "array", "minItems": 1, "items": {"type": "object"}}]},
            "session_id": {"type": "string", "description": "Omitted: a new UUID (Astroworld: api-<uuid>); trimmed"},
            "conversation_id": {"type": "string", "description": "Used only when session_id is absent"},
            "config_id": {"type": "string", "description": "A config profile id (unknown: the 200-error `config_id not found: <id>`)"},
            "config_name": {"type": "string"},
            "enable_streaming": {"$ref": "#/components/schemas/LaxBool"},
            "flags": {"type": "object", "properties": {"enable_streaming": {"$ref": "#/components/schemas/LaxBool"}, "enable_reasoning": {"$ref": "#/components/schemas/LaxBool"}}},
            "enable_reasoning": {"$ref": "#/components/schemas/LaxBool", "description": "Show a reasoning model's thoughts (AstrBot 4.29; `flags.enable_reasoning` wins): streamed as plain events of chain_type reasoning, or at the head of a non-streaming reply. Default true; with bot_id, false"},
            "locale": {"type": "string", "description": "The language of built-in error texts (AstrBot 4.29): zh-CN, en-US, ru-RU, ja-JP; another value is zh-CN; absent keeps 4.27's `LLM 响应错误: ...`", "example": "en-US"},
            "selected_provider": {"type": "string", "description": "A provider id, or `builtin` (the knowledge base, no LLM)"},
            "selected_model": {"description": "Any JSON value: AstrBot accepts any type and uses a string"}}},
        "ChatAnswer": {"type": "object", "required": ["response", "session_id", "message_id", "sources"], "description": "The whole reply, with Accept: application/json (beyond AstrBot)", "properties": {
            "response": {"type": "string"}, "session_id": {"type": "string"}, "message_id": {"type": "string"},
            "sources": {"type": "array", "items": {"type": "object", "properties": {"title": {"type": "string"}, "url": {"type": "string"}}}}}},
        "ChatEvent": {"description": "One `data:` line of the chat stream, by `type`, in order: session_id, user_message_saved, run_started, plain (deltas, or one whole reply without streaming), agent_stats, complete (after deltas), message_saved, end; error if the reply could not be stored", "oneOf": [
            {"type": "object", "required": ["type", "session_id"], "properties": {"type": {"const": "session_id"}, "data": {"type": "null"}, "session_id": {"type": "string"}}},
            {"type": "object", "required": ["type", "data"], "properties": {"type": {"enum": ["user_message_saved", "message_saved"]}, "data": {"type": "object", "properties": {"id": {"type": "integer"}, "created_at": {"type": "string"}, "llm_checkpoint_id": {"type": ["string", "null"]}}}}},
            {"type": "object", "required": ["type", "data", "message_id"], "properties": {"type": {"const": "run_started"}, "data": {"type": "object", "properties": {"run_id": {"type": "string"}}}, "streaming": {"type": "boolean"}, "message_id": {"type": "string"}}},
            {"type": "object", "required": ["type", "data"], "properties": {"type": {"const": "plain"}, "data": {"type": "string"}, "streaming": {"type": "boolean"}, "chain_type": {"enum": [null, "reasoning", "tool_call", "tool_call_result"], "description": "null: the reply's text; reasoning: a piece of a reasoning model's thoughts"}, "message_id": {"type": "string"}, "sources": {"type": "array"}}},
            {"type": "object", "required": ["type", "data"], "properties": {"type": {"const": "agent_stats"}, "data": {"type": "object", "description": "Token usage and times"}}},
            {"type": "object", "required": ["type", "data"], "properties": {"type": {"const": "complete"}, "data": {"type": "string"}, "reasoning": {"type": "string"}, "streaming": {"type": "boolean"}, "message_id": {"type": "string"}, "sources": {"type": "array"}}},
            {"type": "object", "required": ["type", "data"], "properties": {"type": {"enum": ["image", "record", "file", "video"]}, "data": {"type": "string"}, "streaming": {"type": "boolean"}, "message_id": {"type": "string"}}, "description": "A proactive message's media part"},
            {"type": "object", "required": ["type", "data"], "properties": {"type": {"const": "attachment_saved"}, "data": {"type": "object", "properties": {"id": {"type": "string"}, "type": {"type": "string"}}}}},
            {"type": "object", "required": ["type", "data"], "properties": {"type": {"const": "error"}, "data": {"type": "string"}}},
            {"type": "object", "required": ["type"], "properties": {"type": {"const": "end"}, "data": {"const": ""}, "streaming": {"type": "boolean"}, "message_id": {"type": "string"}}}]},
        "AstroworldAnswer": {"type": "object", "required": ["response", "sources", "session_id"], "properties": {
            "response": {"type": "string", "example": "We are open Monday to Friday, 9 to 5."},
            "sources": {"type": "array", "items": {"type": "object", "properties": {"title": {"type": "string"}, "url": {"type": "string"}}}},
            "session_id": {"type": "string", "example": "api-7f3c0e0a-1a2b-4c3d-9e8f-001122334455"}}},
        "SessionItem": {"type": "object", "properties": {"session_id": {"type": "string"}, "platform_id": {"type": "string"}, "creator": {"type": "string"}, "display_name": {"type": ["string", "null"]}, "is_group": {"type": "integer"}, "created_at": {"type": "string"}, "updated_at": {"type": "string"}}},
        "SessionPage": {"type": "object", "properties": {"sessions": {"type": "array", "items": {"$ref": "#/components/schemas/SessionItem"}}, "page": {"type": "integer"}, "page_size": {"type": "integer"}, "total": {"type": "integer"}}},
        "SessionDetail": {"type": "object", "properties": {"session": {"$ref": "#/components/schemas/SessionItem"}, "messages": {"type": "array", "items": {"type": "object"}, "description": "One page, page 1 the newest messages, oldest first within the page"}, "total": {"type": "integer"}, "page": {"type": "integer"}, "page_size": {"type": "integer"}, "has_more": {"type": "boolean", "description": "Older messages remain on later pages"}}},
        "SessionId": {"type": "object", "properties": {"session_id": {"type": "string"}}}
    })
}

/// Attachments: the upload and its answer.
fn files() -> Value {
    json!({
        "Upload": {"type": "object", "required": ["file"], "properties": {"file": {"type": "string", "format": "binary", "description": "The file; its part's Content-Type is kept (application/octet-stream: sniffed from the bytes)"}}, "additionalProperties": false},
        "Attachment": {"type": "object", "properties": {"attachment_id": {"type": "string"}, "filename": {"type": "string", "description": "The cleaned original name (an image gets its detected format's extension)"}, "stored_filename": {"type": "string", "description": "The name the file is stored under (here its attachment id), which `GET /api/v1/files/content?filename=` takes"}, "type": {"enum": ["image", "record", "video", "file"]}}},
        "UploadInit": {"type": "object", "required": ["filename", "total_size"], "properties": {
            "filename": {"type": "string", "minLength": 1, "description": "The file's name (cleaned when the upload completes); absent or empty: `Missing key: filename`"},
            "total_size": {"type": "integer", "minimum": 1, "description": "The whole file's size in bytes, at most 512 MiB, or `--max-upload-mb` when larger (`Invalid file size`, `File too large (limit N MB)`)"},
            "content_type": {"type": "string", "description": "The file's MIME type (default application/octet-stream: sniffed from the bytes)"}}},
        "UploadStarted": {"type": "object", "properties": {"upload_id": {"type": "string"}, "chunk_size": {"const": 1048576}, "total_chunks": {"type": "integer"}}},
        "UploadChunk": {"type": "object", "required": ["upload_id", "chunk_index", "chunk"], "properties": {
            "upload_id": {"type": "string", "description": "From `init`; put the fields before the file part so the chunk streams straight to its place"},
            "chunk_index": {"type": "string", "pattern": "^[0-9]+$", "description": "0 to total_chunks - 1 (else `Invalid chunk_index` or `Chunk index out of range`)"},
            "chunk": {"type": "string", "format": "binary", "description": "Exactly chunk_size bytes, the last chunk the rest (`Chunk size mismatch: got N bytes, expected M`, `Chunk exceeds the size limit`)"}}, "additionalProperties": false},
        "UploadChunkReceived": {"type": "object", "properties": {"received": {"type": "integer"}, "total": {"type": "integer"}, "chunk_index": {"type": "integer"}}},
        "UploadIdBody": {"type": "object", "required": ["upload_id"], "properties": {"upload_id": {"type": "string", "description": "From `init`; only its caller (the same key) may use it (`Upload session not found or expired`)"}}},
        "UploadStatus": {"type": "object", "properties": {"received_chunks": {"type": "array", "items": {"type": "integer"}}, "total_chunks": {"type": "integer"}, "chunk_size": {"type": "integer"}, "expires_in": {"type": "integer", "description": "Seconds until the session expires (one hour after its last chunk; asking the status does not extend it)"}}},
        "FileTokenRequest": {"type": "object", "properties": {"expires_in": {"type": "integer", "minimum": 1, "maximum": 86400, "description": "Seconds the token lasts (default 600)"}}},
        "FileToken": {"type": "object", "properties": {"token": {"type": "string"}, "url": {"type": "string", "description": "`/api/v1/files/tokens/<token>`: opens this one file without any other credential until it expires"}, "expires_in": {"type": "integer"}, "expires_at": {"type": "integer", "description": "Unix seconds"}}},
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
