//! AstrBot's configuration documents: the default config, validation with AstrBot's
//! messages, secret masking, the system-config view, and the one place that answers
//! "which settings apply to this UMO" ([`effective`]).
//!
//! Everything is stored in SQLite (`db::resources`); the shapes a client sees are
//! AstrBot's. The default profile is the system config: its stored document is merged over
//! [`default_config`], and its `provider_sources`, `provider` and `platform` sections are
//! mirrored read-only from their tables. Secrets never leave the server in clear: keys are
//! masked to their first 3 and last 4 characters, a masked value sent back in a PUT keeps
//! what is stored only while the secret still goes to the same target (scheme, host, port
//! and proxy), and `$NAME` key references are limited to `*_API_KEY` names and those listed
//! in `ASTRBOT_SECRET_ENV` (decision 17).

use rusqlite::Connection;
use serde_json::{Map, Value, json};

use crate::chat::provider::endpoint_url;
use crate::db::resources::{self, Docs, Persona};
use crate::error::ApiError;

pub const DEFAULT_PROFILE: &str = "default";
/// The built-in persona that is not in the table (AstrBot's `DEFAULT_PERSONALITY`).
pub const DEFAULT_PERSONA_ID: &str = "default";
pub const DEFAULT_PERSONA_PROMPT: &str = "You are a helpful and friendly assistant.";
/// The provider that answers from the knowledge base when no LLM is configured.
pub const BUILTIN_PROVIDER: &str = "builtin";

/// AstrBot's `DEFAULT_CONFIG`, for the keys this appliance uses.
pub fn default_config() -> Value {
    json!({
        "config_version": 2,
        "platform_settings": {
            "unique_session": false,
            "rate_limit": {"time": 60, "count": 30, "strategy": "stall"},
            "reply_prefix": "",
            "forward_threshold": 1500,
            "enable_id_white_list": true,
            "id_whitelist": [],
            "id_whitelist_log": true,
            "wl_ignore_admin_on_group": true,
            "wl_ignore_admin_on_friend": true,
            "reply_with_mention": false,
            "reply_with_quote": false,
            "path_mapping": [],
            "segmented_reply": {
                "enable": false,
                "only_llm_result": true,
                "interval_method": "random",
                "interval": "1.5,3.5",
                "log_base": 2.6,
                "words_count_threshold": 150,
                "split_mode": "regex",
                "regex": ".*?[。？！~…]+|.+$",
                "split_words": ["。", "？", "！", "~", "…"],
                "content_cleanup_rule": ""
            },
            "no_permission_reply": true,
            "empty_mention_waiting": true,
            "empty_mention_waiting_need_reply": true,
            "friend_message_needs_wake_prefix": false,
            "ignore_bot_self_message": false,
            "ignore_at_all": false
        },
        "provider_sources": [],
        "provider": [],
        "provider_settings": {
            "enable": true,
            "default_provider_id": "",
            "fallback_chat_models": [],
            "wake_prefix": "",
            "web_search": false,
            "identifier": false,
            "datetime_system_prompt": true,
            "default_personality": "default",
            "persona_pool": ["*"],
            "provider_pool": ["*"],
            "prompt_prefix": "{{prompt}}",
            "max_context_length": -1,
            "dequeue_context_length": 1,
            "request_max_retries": 3,
            "streaming_response": false,
            "show_tool_use_status": false,
            "agent_runner_type": "local",
            "max_agent_step": 30,
            "tool_call_timeout": 120
        },
        "provider_stt_settings": {"enable": false, "provider_id": ""},
        "provider_tts_settings": {"enable": false, "provider_id": ""},
        "wake_prefix": ["/"],
        "admins_id": ["astrbot"],
        "platform": [],
        "timezone": "Asia/Shanghai",
        "kb_names": [],
        "plugin_set": ["*"],
        "http_proxy": "",
        "no_proxy": ["localhost", "127.0.0.1", "::1"],
        "log_level": "INFO",
        "t2i": false,
        "callback_api_base": "",
        "disable_metrics": false
    })
}

/// Sections of the default profile that only their own routes may change.
pub const READ_ONLY_SECTIONS: [&str; 3] = ["provider_sources", "provider", "platform"];

// ---------------------------------------------------------------------------------------
// Validation (AstrBot's `validate_config`, reference management §0.6)

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "NoneType",
        Value::Bool(_) => "bool",
        Value::Number(n) if n.is_i64() || n.is_u64() => "int",
        Value::Number(_) => "float",
        Value::String(_) => "str",
        Value::Array(_) => "list",
        Value::Object(_) => "dict",
    }
}

fn expected(default: &Value) -> &'static str {
    match default {
        Value::Bool(_) => "bool",
        Value::Number(n) if n.is_i64() || n.is_u64() => "int",
        Value::Number(_) => "float",
        Value::String(_) => "string",
        Value::Array(_) => "list",
        Value::Object(_) => "dict",
        Value::Null => "",
    }
}

fn empty_of(default: &Value) -> Value {
    match default {
        Value::Bool(_) => json!(false),
        Value::Number(n) if n.is_i64() || n.is_u64() => json!(0),
        Value::Number(_) => json!(0.0),
        Value::String(_) => json!(""),
        Value::Array(_) => json!([]),
        Value::Object(_) => json!({}),
        Value::Null => Value::Null,
    }
}

fn validate_into(
    body: &mut Map<String, Value>,
    defaults: &Map<String, Value>,
    path: &str,
    errors: &mut Vec<String>,
) {
    for (key, value) in body.iter_mut() {
        let Some(default) = defaults.get(key) else { continue };
        if value.is_null() {
            *value = empty_of(default);
            continue;
        }
        let ok = match (expected(default), &*value) {
            ("int", Value::Number(n)) => n.is_i64() || n.is_u64(),
            ("int", Value::String(s)) => match s.trim().parse::<i64>() {
                Ok(n) => {
                    *value = json!(n);
                    true
                }
                Err(_) => false,
            },
            ("float", Value::Number(_)) => true,
            ("float", Value::String(s)) => match s.trim().parse::<f64>() {
                Ok(n) => {
                    *value = json!(n);
                    true
                }
                Err(_) => false,
            },
            ("bool", Value::Bool(_)) | ("string", Value::String(_)) | ("list", Value::Array(_)) => true,
            ("dict", Value::Object(inner)) => {
                if let Value::Object(d) = default {
                    let mut inner = inner.clone();
                    validate_into(&mut inner, d, &format!("{path}{key}."), errors);
                    *value = Value::Object(inner);
                }
                true
            }
            ("", _) => true,
            _ => false,
        };
        if !ok {
            errors.push(format!(
                "错误的类型 {path}{key}: 期望是 {}, 得到了 {}",
                expected(default),
                type_name(value)
            ));
        }
    }
}

/// Checks the types of the known keys of a config document, casting numeric strings and
/// replacing nulls as AstrBot does; 400 `格式校验未通过: [...]` lists every wrong type.
pub fn validate(body: &mut Map<String, Value>) -> Result<(), ApiError> {
    let defaults = default_config();
    let mut errors = Vec::new();
    validate_into(body, defaults.as_object().expect("defaults are an object"), "", &mut errors);
    if errors.is_empty() {
        return Ok(());
    }
    let list: Vec<String> = errors.iter().map(|e| format!("'{}'", e.replace('\'', "\\'"))).collect();
    Err(ApiError::bad_request(format!("格式校验未通过: [{}]", list.join(", "))))
}

// ---------------------------------------------------------------------------------------
// Secrets

/// Whether a key names a secret (API keys, tokens, passwords, credential headers): `key`,
/// `api_key`, `access_token`, `jwt_secret`, `password`, `Authorization`, `X-Api-Key`, ...
/// but not `max_tokens` or `kb_names`.
pub fn is_secret_key(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    n.split(['_', '-']).any(|w| {
        matches!(
            w,
            "key"
                | "keys"
                | "apikey"
                | "token"
                | "secret"
                | "password"
                | "passwd"
                | "authorization"
                | "cookie"
                | "credential"
                | "credentials"
        )
    })
}

/// The first 3 and last 4 characters, the rest hidden; `$NAME` references are not secrets.
pub fn mask(secret: &str) -> String {
    if secret.is_empty() || secret.starts_with('$') {
        return secret.to_owned();
    }
    let chars: Vec<char> = secret.chars().collect();
    if chars.len() <= 8 {
        return "*".repeat(chars.len().max(4));
    }
    let head: String = chars[..3].iter().collect();
    let tail: String = chars[chars.len() - 4..].iter().collect();
    format!("{head}****{tail}")
}

fn mask_value(v: &mut Value) {
    match v {
        Value::String(s) => *s = mask(s),
        Value::Array(items) => items.iter_mut().for_each(mask_value),
        _ => {}
    }
}

/// Masks every secret in a document, at any depth.
pub fn redact(v: &mut Value) {
    match v {
        Value::Object(map) => {
            for (k, val) in map.iter_mut() {
                if is_secret_key(k) && !val.is_object() {
                    mask_value(val);
                } else {
                    redact(val);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(redact),
        _ => {}
    }
}

/// What a changed target answers when a masked secret would have to follow it.
fn target_changed(what: &str) -> ApiError {
    ApiError::bad_request(format!("{what} changed: send the key again"))
}

/// Where a request sends back a masked secret, puts the stored one back: the usual GET,
/// edit, PUT round trip never overwrites a secret with its mask. A stored secret only ever
/// goes where it went before (decision 17): `change` says what moved the whole document's
/// target (`api_base` or `proxy`, from [`target_change`] on the merged provider), and every
/// nested object with its own `api_base` or `proxy` (a profile's provider list) is judged
/// on its own. A masked secret toward a changed target is refused, never restored and
/// never stored as its mask: otherwise a caller could re-point a source at its own
/// listener and receive the key.
pub fn restore_secrets(
    new: &mut Value,
    stored: &Value,
    change: Option<&'static str>,
) -> Result<(), ApiError> {
    restore_in(new, stored, change, true)
}

fn is_connection(v: &Value) -> bool {
    v.as_object().is_some_and(|m| m.contains_key("api_base") || m.contains_key("proxy"))
}

fn restore_in(
    new: &mut Value,
    stored: &Value,
    change: Option<&'static str>,
    top: bool,
) -> Result<(), ApiError> {
    let change = match !top && (is_connection(new) || is_connection(stored)) {
        true => change.or_else(|| target_change(stored, new)),
        false => change,
    };
    match (new, stored) {
        (Value::Object(n), Value::Object(s)) => {
            for (k, val) in n.iter_mut() {
                let Some(old) = s.get(k) else { continue };
                if is_secret_key(k) && !val.is_object() {
                    restore_secret_value(val, old, change)?;
                } else {
                    restore_in(val, old, change, false)?;
                }
            }
        }
        (Value::Array(n), Value::Array(s)) => {
            for (val, old) in n.iter_mut().zip(s) {
                restore_in(val, old, change, false)?;
            }
        }
        _ => {}
    }
    Ok(())
}

/// The stored secret a sent value is the mask of; `$NAME` references and empty values
/// are shown as they are, so they are never "restored".
fn unmasked<'a>(sent: &str, stored: &'a Value) -> Option<&'a str> {
    stored.as_str().filter(|o| !o.is_empty() && !o.starts_with('$') && sent == mask(o))
}

fn restore_secret_value(new: &mut Value, old: &Value, change: Option<&'static str>) -> Result<(), ApiError> {
    let restore = |slot: &mut String, orig: &str| match change {
        Some(what) => Err(target_changed(what)),
        None => {
            *slot = orig.to_owned();
            Ok(())
        }
    };
    match (new, old) {
        (Value::String(n), o) => {
            if let Some(orig) = unmasked(n, o) {
                restore(n, orig)?;
            }
        }
        (Value::Array(n), Value::Array(o)) => {
            for item in n.iter_mut() {
                if let Value::String(s) = item
                    && let Some(orig) = o.iter().find_map(|x| unmasked(s, x))
                {
                    restore(s, orig)?;
                }
            }
        }
        _ => {}
    }
    Ok(())
}

/// Removes every secret-named value, at any depth.
fn strip_secrets(v: &mut Value) {
    match v {
        Value::Object(map) => {
            map.retain(|k, val| !is_secret_key(k) || val.is_object());
            map.values_mut().for_each(strip_secrets);
        }
        Value::Array(items) => items.iter_mut().for_each(strip_secrets),
        _ => {}
    }
}

/// Whether a document holds a secret of its own in clear (not a `$NAME` reference).
fn holds_secret(v: &Value) -> bool {
    fn clear(v: &Value) -> bool {
        match v {
            Value::String(s) => !s.is_empty() && !s.starts_with('$'),
            Value::Array(items) => items.iter().any(clear),
            _ => false,
        }
    }
    match v {
        Value::Object(map) => {
            map.iter().any(
                |(k, val)| if is_secret_key(k) && !val.is_object() { clear(val) } else { holds_secret(val) },
            )
        }
        Value::Array(items) => items.iter().any(holds_secret),
        _ => false,
    }
}

// ---------------------------------------------------------------------------------------
// Targets: where a provider's key goes

type Endpoint = (String, String, u16);

/// Scheme, host and port of a URL, parsed as the HTTP client parses it (so the two can
/// never disagree about the host); host case and a trailing dot do not matter, and a
/// missing port is the scheme's default.
fn url_endpoint(url: &str) -> Option<Endpoint> {
    let uri: ureq::http::Uri = url.parse().ok()?;
    let scheme = uri.scheme_str()?.to_ascii_lowercase();
    let port = match (uri.port_u16(), scheme.as_str()) {
        (Some(p), _) => p,
        (None, "http") => 80,
        (None, "https") => 443,
        _ => return None,
    };
    Some((scheme, normal_host(uri.host()?), port))
}

fn proxy_endpoint(proxy: &str) -> Option<Endpoint> {
    let p = ureq::Proxy::new(proxy).ok()?;
    Some((format!("{:?}", p.protocol()), normal_host(p.host()), p.port()))
}

fn normal_host(host: &str) -> String {
    host.trim_end_matches('.').to_ascii_lowercase()
}

/// Equal strings are the same target even when unparseable; otherwise both must parse
/// to the same endpoint (unknown is never "unchanged").
fn same_endpoint(a: &str, b: &str, parse: fn(&str) -> Option<Endpoint>) -> bool {
    a == b || parse(a).is_some_and(|x| parse(b) == Some(x))
}

/// What moved between two provider configs (each merged with its source): `api_base`
/// when the URL the adapter posts to has another scheme, host or port (a missing
/// `api_base` is the adapter's default, so a changed `type` can move it too), `proxy`
/// when the requests pass through another proxy (it sees them too).
pub fn target_change(old: &Value, new: &Value) -> Option<&'static str> {
    if !same_endpoint(&endpoint_url(old), &endpoint_url(new), url_endpoint) {
        return Some("api_base");
    }
    let proxy = |v: &Value| v["proxy"].as_str().unwrap_or("").to_owned();
    if !same_endpoint(&proxy(old), &proxy(new), proxy_endpoint) {
        return Some("proxy");
    }
    None
}

/// Refuses to re-point a source while a provider on it holds its own key and takes the
/// source's target: that key would follow the source to the new target unasked.
pub fn check_inheriting_providers(
    conn: &Connection,
    source_id: &str,
    old: &Value,
    new: &Value,
) -> Result<(), ApiError> {
    for p in resources::docs(conn, Docs::Providers)? {
        if p["provider_source_id"] != source_id || !holds_secret(&p) {
            continue;
        }
        if let Some(what) = target_change(&merge_over(Some(old), &p), &merge_over(Some(new), &p)) {
            let id = p["id"].as_str().unwrap_or_default();
            return Err(ApiError::bad_request(format!(
                "{what} changed: send the key again (provider {id} holds its own key)"
            )));
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Secret references: `$NAME` in a provider key

/// The rule a `$NAME` reference must follow (decision 17).
pub const SECRET_REF_RULE: &str = "$NAME references must end in _API_KEY or be listed in ASTRBOT_SECRET_ENV";

/// The environment as the server sees it; tests pass their own lookup instead.
pub fn process_env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

/// The variable a key entry names (`$NAME` or `${NAME}`), or `None` for a literal key.
pub fn secret_ref(entry: &str) -> Option<&str> {
    entry.strip_prefix("${").and_then(|r| r.strip_suffix('}')).or_else(|| entry.strip_prefix('$'))
}

/// Whether `$NAME` may be read: a plain name (letters, digits, `_`) ending in `_API_KEY`
/// or listed in `ASTRBOT_SECRET_ENV`. The key goes to an upstream the caller chooses, so
/// any other variable (`$ASTRBOT_ADMIN_PASSWORD`) would be readable by whoever configures
/// a provider.
pub fn secret_ref_allowed(name: &str, env: &dyn Fn(&str) -> Option<String>) -> bool {
    let plain = !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    plain
        && (name.ends_with("_API_KEY")
            || env("ASTRBOT_SECRET_ENV").is_some_and(|list| list.split(',').any(|n| n.trim() == name)))
}

/// The message for a reference outside the rule.
pub fn refused_ref(entry: &str) -> String {
    format!("{SECRET_REF_RULE} (got {entry})")
}

/// Refuses, at save time, a document whose `key` entries (at any depth: a source, a
/// provider, a profile's provider list) name a variable outside the rule.
pub fn check_secret_refs(doc: &Value, env: &dyn Fn(&str) -> Option<String>) -> Result<(), ApiError> {
    match doc {
        Value::Object(map) => {
            for (k, v) in map {
                if k == "key" {
                    let entries: Vec<&str> = match v {
                        Value::String(s) => vec![s.as_str()],
                        Value::Array(items) => items.iter().filter_map(Value::as_str).collect(),
                        _ => vec![],
                    };
                    for entry in entries {
                        if secret_ref(entry).is_some_and(|name| !secret_ref_allowed(name, env)) {
                            return Err(ApiError::bad_request(refused_ref(entry)));
                        }
                    }
                }
                check_secret_refs(v, env)?;
            }
        }
        Value::Array(items) => {
            for v in items {
                check_secret_refs(v, env)?;
            }
        }
        _ => {}
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Documents

/// `base` with `over` merged in, objects recursively.
pub fn deep_merge(base: &mut Value, over: &Value) {
    match (base, over) {
        (Value::Object(b), Value::Object(o)) => {
            for (k, v) in o {
                match b.get_mut(k) {
                    Some(slot) if slot.is_object() && v.is_object() => deep_merge(slot, v),
                    _ => {
                        b.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        (b, o) => *b = o.clone(),
    }
}

/// The stored part of a profile merged over the defaults.
fn with_defaults(stored: &Value) -> Value {
    let mut config = default_config();
    deep_merge(&mut config, stored);
    config
}

/// The system config (the default profile) in clear, with its mirrored sections.
pub fn system_config(conn: &Connection) -> rusqlite::Result<Value> {
    let stored = resources::profile(conn, DEFAULT_PROFILE)?.map(|p| p.body).unwrap_or_else(|| json!({}));
    let mut config = with_defaults(&stored);
    config["provider_sources"] = Value::Array(resources::docs(conn, Docs::ProviderSources)?);
    config["provider"] = Value::Array(resources::docs(conn, Docs::Providers)?);
    config["platform"] = json!([]);
    Ok(config)
}

/// A profile's config in clear (the default profile is the system config).
pub fn profile_config(conn: &Connection, id: &str) -> rusqlite::Result<Option<Value>> {
    if id == DEFAULT_PROFILE {
        return system_config(conn).map(Some);
    }
    Ok(resources::profile(conn, id)?.map(|p| with_defaults(&p.body)))
}

/// Every profile's `admins_id` (for the chat's username reservation, issue 4).
#[allow(dead_code)]
pub fn all_admin_ids(conn: &Connection) -> rusqlite::Result<Vec<String>> {
    let mut ids = Vec::new();
    let mut push = |config: &Value| {
        for id in config["admins_id"].as_array().into_iter().flatten() {
            let s = match id {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            if !ids.contains(&s) {
                ids.push(s);
            }
        }
    };
    push(&system_config(conn)?);
    for p in resources::custom_profiles(conn)? {
        push(&with_defaults(&p.body));
    }
    Ok(ids)
}

// ---------------------------------------------------------------------------------------
// Providers

/// AstrBot's capability names for `provider_type`.
pub fn provider_type_of(capability: &str) -> String {
    match capability {
        "chat" => "chat_completion",
        "agent" => "agent_runner",
        "stt" => "speech_to_text",
        "tts" => "text_to_speech",
        other => other,
    }
    .to_owned()
}

/// The provider as the chat uses it: `{**source, **provider, "id": provider.id}` when it
/// has a source, else the provider itself; `provider_type` defaults to the source's, then
/// `chat_completion`.
pub fn merged_provider(conn: &Connection, provider: &Value) -> rusqlite::Result<Value> {
    let source_id = provider.get("provider_source_id").and_then(Value::as_str).filter(|s| !s.is_empty());
    let source = source_id.map(|s| resources::doc(conn, Docs::ProviderSources, s)).transpose()?.flatten();
    Ok(merge_over(source.as_ref(), provider))
}

/// The merge of [`merged_provider`]. A provider that points its requests elsewhere than
/// its source (its own `api_base`, `proxy` or `type`) does not inherit the source's
/// secrets: they go only to the source's own target.
fn merge_over(source: Option<&Value>, provider: &Value) -> Value {
    let merge = |source: Option<&Value>| {
        let mut merged = json!({});
        if let Some(source) = source {
            deep_merge(&mut merged, source);
            if let Some(m) = merged.as_object_mut() {
                m.remove("reasoning");
            }
        }
        for (k, v) in provider.as_object().into_iter().flatten() {
            merged[k] = v.clone();
        }
        merged["id"] = provider.get("id").cloned().unwrap_or(Value::Null);
        if merged.get("provider_type").is_none_or(Value::is_null) {
            merged["provider_type"] = json!("chat_completion");
        }
        merged
    };
    let merged = merge(source);
    match source {
        Some(s) if target_change(s, &merged).is_some() => {
            let mut stripped = s.clone();
            strip_secrets(&mut stripped);
            merge(Some(&stripped))
        }
        _ => merged,
    }
}

fn is_enabled(v: &Value) -> bool {
    v.get("enable").and_then(Value::as_bool).unwrap_or(true)
}

// ---------------------------------------------------------------------------------------
// The effective settings of a UMO

/// What a session has chosen for itself (commands like `/provider` and `/persona`).
#[derive(Debug, Default, Clone)]
pub struct SessionChoice {
    pub provider_id: Option<String>,
    pub persona_id: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum ProviderChoice {
    /// A configured chat provider, merged with its source.
    Configured { id: String, config: Value },
    /// No usable LLM provider: the built-in knowledge provider answers.
    Builtin,
}

#[derive(Debug, Clone)]
pub struct Effective {
    /// The profile that applies (`default` when the UMO has no route).
    pub config_id: String,
    /// The profile's whole document, for the chat's other settings (issue 4).
    #[allow(dead_code)]
    pub config: Value,
    pub provider: ProviderChoice,
    pub persona: Persona,
}

/// The built-in `default` persona.
pub fn builtin_persona() -> Persona {
    Persona {
        persona_id: DEFAULT_PERSONA_ID.into(),
        system_prompt: DEFAULT_PERSONA_PROMPT.into(),
        begin_dialogs: vec![],
        tools: None,
        skills: None,
        custom_error_message: None,
        folder_id: None,
        sort_order: 0,
        created_at: 0,
        updated_at: 0,
    }
}

/// The settings that apply to a UMO: its routed profile (else the default); the provider
/// the session chose, else `default_provider_id`, else the first enabled chat provider,
/// else the built-in one; the persona the session chose, else `default_personality`, else
/// the built-in `default`. Choices that name something missing or disabled are skipped.
pub fn effective(conn: &Connection, umo: &str, choice: &SessionChoice) -> rusqlite::Result<Effective> {
    let routed = resources::route(conn, umo)?;
    let (config_id, config) = match routed {
        Some(id) => match profile_config(conn, &id)? {
            Some(config) => (id, config),
            None => (DEFAULT_PROFILE.to_owned(), system_config(conn)?),
        },
        None => (DEFAULT_PROFILE.to_owned(), system_config(conn)?),
    };
    let settings = &config["provider_settings"];

    let mut candidates: Vec<Value> = Vec::new();
    for p in resources::docs(conn, Docs::Providers)? {
        let merged = merged_provider(conn, &p)?;
        let source_enabled = match p.get("provider_source_id").and_then(Value::as_str) {
            Some(s) if !s.is_empty() => {
                resources::doc(conn, Docs::ProviderSources, s)?.is_none_or(|s| is_enabled(&s))
            }
            _ => true,
        };
        if is_enabled(&p) && source_enabled && merged["provider_type"] == "chat_completion" {
            candidates.push(merged);
        }
    }
    let by_id = |id: &str| candidates.iter().find(|c| c["id"] == id).cloned();
    let wanted = [choice.provider_id.clone(), settings["default_provider_id"].as_str().map(str::to_owned)];
    let provider = if choice.provider_id.as_deref() == Some(BUILTIN_PROVIDER) {
        ProviderChoice::Builtin
    } else {
        wanted
            .iter()
            .flatten()
            .filter(|id| !id.is_empty())
            .find_map(|id| by_id(id))
            .or_else(|| candidates.first().cloned())
            .map(|c| ProviderChoice::Configured {
                id: c["id"].as_str().unwrap_or_default().to_owned(),
                config: c,
            })
            .unwrap_or(ProviderChoice::Builtin)
    };

    let persona_ids =
        [choice.persona_id.clone(), settings["default_personality"].as_str().map(str::to_owned)];
    let mut persona = None;
    for id in persona_ids.iter().flatten().filter(|id| !id.is_empty()) {
        if id == DEFAULT_PERSONA_ID {
            persona = Some(resources::persona(conn, id)?.unwrap_or_else(builtin_persona));
            break;
        }
        if let Some(p) = resources::persona(conn, id)? {
            persona = Some(p);
            break;
        }
    }
    Ok(Effective { config_id, config, provider, persona: persona.unwrap_or_else(builtin_persona) })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::{Db, write_tx};

    fn db(name: &str) -> (Db, std::path::PathBuf) {
        let dir = std::env::temp_dir().join(format!("astrbot-config-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        (Db::open(&dir).unwrap(), dir)
    }

    fn persona(id: &str) -> Persona {
        Persona { persona_id: id.into(), system_prompt: format!("I am {id}"), ..builtin_persona() }
    }

    #[test]
    fn validation_messages_and_casts() {
        let mut body =
            json!({"admins_id": "x", "provider_settings": {"max_context_length": "12", "enable": "yes"},
                               "timezone": null, "unknown": 1})
            .as_object()
            .unwrap()
            .clone();
        let err = validate(&mut body).unwrap_err().message();
        assert_eq!(
            err,
            "格式校验未通过: ['错误的类型 admins_id: 期望是 list, 得到了 str', '错误的类型 provider_settings.enable: 期望是 bool, 得到了 str']"
        );
        let mut ok = json!({"provider_settings": {"max_context_length": "12"}, "timezone": null})
            .as_object()
            .unwrap()
            .clone();
        validate(&mut ok).unwrap();
        assert_eq!(ok["provider_settings"]["max_context_length"], 12);
        assert_eq!(ok["timezone"], "");
    }

    #[test]
    fn masks_and_restores_secrets() {
        assert_eq!(mask("sk-abcdefghijklmnop"), "sk-****mnop");
        assert_eq!(mask("$OPENAI_KEY"), "$OPENAI_KEY");
        assert_eq!(mask("short"), "*****");
        for secret in [
            "key",
            "api_key",
            "Authorization",
            "X-Api-Key",
            "api-key",
            "jwt_secret",
            "access_token",
            "Cookie",
        ] {
            assert!(is_secret_key(secret), "{secret}");
        }
        for plain in ["max_tokens", "kb_names", "api_base", "keyword", "provider_settings"] {
            assert!(!is_secret_key(plain), "{plain}");
        }
        let mut headers =
            json!({"custom_headers": {"Authorization": "Bearer sk-abcdefghijkl", "X-Trace": "on"}});
        redact(&mut headers);
        assert_eq!(headers["custom_headers"], json!({"Authorization": "Bea****ijkl", "X-Trace": "on"}));
        let stored = json!({"key": ["sk-abcdefghijklmnop", "$ENV_KEY"], "api_base": "https://x", "sandbox": {"access_token": "tok-1234567890"}, "max_tokens": 5});
        let mut shown = stored.clone();
        redact(&mut shown);
        assert_eq!(
            shown,
            json!({"key": ["sk-****mnop", "$ENV_KEY"], "api_base": "https://x", "sandbox": {"access_token": "tok****7890"}, "max_tokens": 5})
        );
        let mut edited = shown.clone();
        edited["max_tokens"] = json!(9);
        restore_secrets(&mut edited, &stored, None).unwrap();
        assert_eq!(edited["key"], stored["key"]);
        assert_eq!(edited["sandbox"]["access_token"], "tok-1234567890");
        assert_eq!(edited["max_tokens"], 9);
        let mut replaced = shown.clone();
        replaced["key"] = json!(["sk-new-key-000000000"]);
        restore_secrets(&mut replaced, &stored, None).unwrap();
        assert_eq!(replaced["key"], json!(["sk-new-key-000000000"]), "a new key is kept");
    }

    #[test]
    fn a_masked_secret_never_follows_a_changed_target() {
        let stored = json!({"type": "openai_chat_completion", "api_base": "https://api.example.com/v1",
                            "key": ["sk-abcdefghijklmnop", "$OPENAI_API_KEY"], "proxy": ""});
        let mut shown = stored.clone();
        redact(&mut shown);
        let restored = |edit: &dyn Fn(&mut Value)| {
            let mut new = shown.clone();
            edit(&mut new);
            let change = target_change(&stored, &new);
            restore_secrets(&mut new, &stored, change).map(|()| new).map_err(|e| e.message())
        };
        // The same target, however it is spelled.
        for base in [
            "https://api.example.com/v1",
            "https://API.Example.COM/v1/",
            "https://api.example.com:443/v1",
            "https://api.example.com./other",
        ] {
            let new = restored(&|v| v["api_base"] = json!(base)).unwrap();
            assert_eq!(new["key"], stored["key"], "{base}");
        }
        // Another scheme, host or port, a missing or unparseable api_base, another type.
        for base in [
            json!("http://api.example.com/v1"),
            json!("https://api.example.com:8443/v1"),
            json!("https://evil.example/v1"),
            json!("https://evil.example#@api.example.com/v1"),
            json!("https://api.example.com@evil.example/v1"),
            json!("not a url"),
            Value::Null,
        ] {
            let err = restored(&|v| v["api_base"] = base.clone()).unwrap_err();
            assert_eq!(err, "api_base changed: send the key again", "{base}");
        }
        let vendor_default = json!({"type": "openai_chat_completion"});
        let other_vendor = json!({"type": "anthropic_chat_completion"});
        assert_eq!(
            target_change(&vendor_default, &other_vendor),
            Some("api_base"),
            "the default base follows the type"
        );
        assert_eq!(target_change(&vendor_default, &json!({"api_base": "https://api.openai.com"})), None);
        let err = restored(&|v| v["proxy"] = json!("http://127.0.0.1:3128")).unwrap_err();
        assert_eq!(err, "proxy changed: send the key again");
        // Some keys masked, some new: the masked one still may not follow.
        let err = restored(&|v| {
            v["api_base"] = json!("https://evil.example/v1");
            v["key"] = json!(["sk-****mnop", "sk-brand-new-key-1234"]);
        })
        .unwrap_err();
        assert_eq!(err, "api_base changed: send the key again");
        // A changed target with the key sent again (or only references) is fine.
        let new = restored(&|v| {
            v["api_base"] = json!("https://evil.example/v1");
            v["key"] = json!(["sk-brand-new-key-1234", "$OPENAI_API_KEY"]);
        })
        .unwrap();
        assert_eq!(new["key"], json!(["sk-brand-new-key-1234", "$OPENAI_API_KEY"]));

        // A profile's provider list: each entry is judged on its own target.
        let profile = json!({"provider_sources": [stored.clone()], "provider_settings": {}});
        let mut shown_profile = profile.clone();
        redact(&mut shown_profile);
        let mut same = shown_profile.clone();
        restore_secrets(&mut same, &profile, None).unwrap();
        assert_eq!(same, profile);
        shown_profile["provider_sources"][0]["api_base"] = json!("http://127.0.0.1:9/v1");
        let err = restore_secrets(&mut shown_profile, &profile, None).unwrap_err().message();
        assert_eq!(err, "api_base changed: send the key again");
    }

    #[test]
    fn a_provider_pointed_elsewhere_does_not_inherit_its_sources_key() {
        let source = json!({"id": "s", "type": "openai_chat_completion", "api_base": "https://a.example/v1",
                            "key": ["sk-source-key-123456"], "custom_headers": {"Authorization": "Bearer x-1234567890"}});
        let plain = json!({"id": "s/m", "provider_source_id": "s", "model": "m"});
        assert_eq!(merge_over(Some(&source), &plain)["key"], source["key"]);
        let elsewhere = json!({"id": "s/m", "provider_source_id": "s", "api_base": "https://b.example/v1"});
        let merged = merge_over(Some(&source), &elsewhere);
        assert!(merged.get("key").is_none(), "{merged}");
        assert_eq!(merged["custom_headers"], json!({}));
        assert_eq!(merged["api_base"], "https://b.example/v1");
        let own = json!({"id": "s/m", "provider_source_id": "s", "api_base": "https://b.example/v1", "key": ["sk-own"]});
        assert_eq!(merge_over(Some(&source), &own)["key"], json!(["sk-own"]));
        assert!(holds_secret(&own));
        assert!(!holds_secret(&json!({"key": ["$OPENAI_API_KEY", ""], "model": "m"})));
    }

    #[test]
    fn secret_references_follow_the_rule() {
        let env = |name: &str| (name == "ASTRBOT_SECRET_ENV").then(|| "MY_TOKEN, OTHER".to_owned());
        for ok in ["FOO_API_KEY", "MY_TOKEN", "OTHER"] {
            assert!(secret_ref_allowed(ok, &env), "{ok}");
        }
        for refused in ["ASTRBOT_ADMIN_PASSWORD", "HOME", "foo_api_key", "", "X Y_API_KEY", "{A_API_KEY"] {
            assert!(!secret_ref_allowed(refused, &env), "{refused}");
        }
        assert_eq!(secret_ref("${A}"), Some("A"));
        assert_eq!(secret_ref("$A"), Some("A"));
        assert_eq!(secret_ref("sk-1"), None);
        let ok =
            json!({"key": ["sk-1", "$FOO_API_KEY", "${MY_TOKEN}"], "provider_sources": [{"key": "$OTHER"}]});
        check_secret_refs(&ok, &env).unwrap();
        let nested = json!({"provider_sources": [{"key": ["$ASTRBOT_ADMIN_PASSWORD"]}]});
        assert_eq!(
            check_secret_refs(&nested, &env).unwrap_err().message(),
            "$NAME references must end in _API_KEY or be listed in ASTRBOT_SECRET_ENV (got $ASTRBOT_ADMIN_PASSWORD)"
        );
        assert!(check_secret_refs(&json!({"key": "${HOME}"}), &env).is_err());
    }

    #[test]
    fn effective_settings_follow_routes_choices_and_defaults() {
        let (db, _dir) = db("effective");
        let mut conn = db.conn().unwrap();
        let empty = SessionChoice::default();
        let e = effective(&conn, "webchat:FriendMessage:a", &empty).unwrap();
        assert_eq!((e.config_id.as_str(), &e.provider), ("default", &ProviderChoice::Builtin));
        assert_eq!(e.persona.persona_id, "default");
        assert_eq!(e.persona.system_prompt, DEFAULT_PERSONA_PROMPT);

        write_tx(&mut conn, |tx| -> rusqlite::Result<()> {
            resources::put_doc(tx, Docs::ProviderSources, "openai", "openai", &json!({"id": "openai", "type": "openai_chat_completion", "provider_type": "chat_completion", "enable": true, "key": ["sk-1"]}))?;
            resources::put_doc(tx, Docs::Providers, "openai/a", "openai/a", &json!({"id": "openai/a", "provider_source_id": "openai", "model": "a", "enable": true}))?;
            resources::put_doc(tx, Docs::Providers, "openai/b", "openai/b", &json!({"id": "openai/b", "provider_source_id": "openai", "model": "b", "enable": true}))?;
            resources::put_doc(tx, Docs::Providers, "tts", "tts", &json!({"id": "tts", "provider_type": "text_to_speech", "enable": true}))?;
            resources::insert_persona(tx, &persona("tutor"))?;
            resources::insert_persona(tx, &persona("pirate"))?;
            Ok(())
        })
        .unwrap();
        let first = effective(&conn, "u", &empty).unwrap();
        let ProviderChoice::Configured { id, config } = first.provider else { panic!() };
        assert_eq!(id, "openai/a", "the first enabled chat provider");
        assert_eq!(config["key"], json!(["sk-1"]), "merged with its source");
        assert_eq!(config["model"], "a");

        let mut system = resources::profile(&conn, "default").unwrap().unwrap().body;
        system["provider_settings"] =
            json!({"default_provider_id": "openai/b", "default_personality": "tutor"});
        resources::set_profile_body(&conn, "default", &system).unwrap();
        let e = effective(&conn, "u", &empty).unwrap();
        assert_eq!(
            e.provider,
            ProviderChoice::Configured {
                id: "openai/b".into(),
                config: merged_provider(
                    &conn,
                    &resources::doc(&conn, Docs::Providers, "openai/b").unwrap().unwrap()
                )
                .unwrap()
            }
        );
        assert_eq!(e.persona.persona_id, "tutor");

        let chosen =
            SessionChoice { provider_id: Some("openai/a".into()), persona_id: Some("pirate".into()) };
        let e = effective(&conn, "u", &chosen).unwrap();
        assert!(matches!(e.provider, ProviderChoice::Configured { ref id, .. } if id == "openai/a"));
        assert_eq!(e.persona.persona_id, "pirate");
        let builtin =
            SessionChoice { provider_id: Some("builtin".into()), persona_id: Some("nobody".into()) };
        let e = effective(&conn, "u", &builtin).unwrap();
        assert_eq!(e.provider, ProviderChoice::Builtin);
        assert_eq!(e.persona.persona_id, "tutor", "a missing choice falls back to the default personality");

        // A disabled provider is skipped; a routed UMO uses its profile.
        let mut b = resources::doc(&conn, Docs::Providers, "openai/b").unwrap().unwrap();
        b["enable"] = json!(false);
        resources::put_doc(&conn, Docs::Providers, "openai/b", "openai/b", &b).unwrap();
        assert!(
            matches!(effective(&conn, "u", &empty).unwrap().provider, ProviderChoice::Configured { ref id, .. } if id == "openai/a")
        );
        resources::insert_profile(
            &conn,
            "p1",
            "group",
            &json!({"provider_settings": {"default_personality": "pirate"}}),
            1,
        )
        .unwrap();
        resources::set_route(&conn, "webchat:GroupMessage:g", "p1").unwrap();
        let e = effective(&conn, "webchat:GroupMessage:g", &empty).unwrap();
        assert_eq!((e.config_id.as_str(), e.persona.persona_id.as_str()), ("p1", "pirate"));
        assert_eq!(
            e.config["admins_id"],
            json!(["astrbot"]),
            "custom profiles are completed with the defaults"
        );
    }
}
