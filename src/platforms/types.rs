//! The bot types this server runs (`GET /api/v1/bot-types`), their fields with AstrBot's
//! template defaults, and the checks a bot passes before it is stored.
//!
//! AstrBot stores whatever a request builds and fails later, in the adapter (a missing
//! `ws_reverse_port` is a 500 after the bot was saved); here every required field is
//! checked first, with a message naming it, and a type this server cannot run is refused.
//! A Telegram token goes into the path of every URL the adapter calls, so it must look like
//! one (`<digits>:<letters, digits, - and _>`): anything else could re-point those URLs.

use serde_json::{Map, Value, json};

/// The types, in the listing's order.
pub const TYPES: [&str; 3] = ["webchat", "telegram", "aiocqhttp"];

pub const TELEGRAM_API_BASE: &str = "https://api.telegram.org/bot";
pub const TELEGRAM_FILE_BASE: &str = "https://api.telegram.org/file/bot";

/// Each type's fields: name, JSON type, default, description, required.
fn fields(kind: &str) -> Vec<(&'static str, &'static str, Value, &'static str, bool)> {
    match kind {
        "telegram" => vec![
            ("telegram_token", "string", json!(""), "The bot's token from @BotFather (123456:ABC-...)", true),
            ("start_message", "string", json!("Hello, I'm AstrBot!"), "The answer to /start", false),
            (
                "telegram_api_base_url",
                "string",
                json!(TELEGRAM_API_BASE),
                "Base of Bot API calls: base + token + /method (empty: the default)",
                false,
            ),
            (
                "telegram_file_base_url",
                "string",
                json!(TELEGRAM_FILE_BASE),
                "Base of file downloads: base + token + /file_path (empty: the default)",
                false,
            ),
            (
                "telegram_command_register",
                "boolean",
                json!(true),
                "Register the commands with setMyCommands",
                false,
            ),
            (
                "telegram_command_auto_refresh",
                "boolean",
                json!(true),
                "Register them again periodically",
                false,
            ),
            (
                "telegram_command_register_interval",
                "integer",
                json!(300),
                "Seconds between registrations",
                false,
            ),
            (
                "telegram_polling_restart_delay",
                "number",
                json!(5.0),
                "Seconds before polling starts again after an error (at least 0.1)",
                false,
            ),
            (
                "telegram_poll_timeout",
                "integer",
                json!(25),
                "Long-poll seconds of getUpdates (1 to 50; beyond AstrBot)",
                false,
            ),
        ],
        "aiocqhttp" => vec![
            ("ws_reverse_host", "string", json!("0.0.0.0"), "Address the reverse WebSocket listens on", true),
            ("ws_reverse_port", "integer", json!(6199), "Port of the reverse WebSocket (path /ws)", true),
            (
                "ws_reverse_token",
                "string",
                json!(""),
                "Token the OneBot implementation must send (Authorization: Bearer); empty: no check",
                false,
            ),
        ],
        _ => vec![],
    }
}

/// `GET /api/v1/bot-types`: every type with its description, field schema and defaults.
pub fn bot_types() -> Value {
    let describe = |kind: &str| match kind {
        "webchat" => "The built-in web chat (POST /api/v1/chat); always running, no settings.",
        "telegram" => "Telegram Bot API, by long polling (no public address needed).",
        _ => "适用于 OneBot V11 标准的消息平台适配器，支持反向 WebSockets。",
    };
    let list: Vec<Value> = TYPES
        .iter()
        .map(|kind| {
            let mut properties = Map::new();
            let mut defaults = Map::new();
            let mut required = Vec::new();
            for (name, ty, default, description, needed) in fields(kind) {
                properties.insert(name.into(), json!({"type": ty, "default": default, "description": description}));
                defaults.insert(name.into(), default);
                if needed {
                    required.push(name);
                }
            }
            let default_config = if *kind == "webchat" {
                Value::Null
            } else {
                let mut d = json!({"id": if *kind == "aiocqhttp" { "default" } else { kind }, "type": kind, "enable": true});
                d.as_object_mut().into_iter().for_each(|m| m.extend(defaults.clone()));
                d
            };
            json!({
                "type": kind,
                "id": kind,
                "description": describe(kind),
                "display_name": kind,
                "default_config": default_config,
                "schema": {"type": "object", "properties": properties, "required": required},
                "support_streaming_message": *kind != "aiocqhttp",
                "support_proactive_message": true,
            })
        })
        .collect();
    json!({ "bot_types": list })
}

/// Whether a stored bot is enabled (`enable` true; AstrBot's listing counts a missing one
/// as false).
pub fn enabled(config: &Value) -> bool {
    config["enable"].as_bool().unwrap_or(false)
}

/// The bot's config with its type's defaults for missing (or null) fields.
pub fn with_defaults(config: &Value) -> Value {
    let mut out = config.clone();
    if let Some(map) = out.as_object_mut() {
        let kind = config["type"].as_str().unwrap_or_default().to_owned();
        for (name, _, default, _, _) in fields(&kind) {
            if map.get(name).is_none_or(Value::is_null) {
                map.insert(name.into(), default);
            }
        }
        // An empty base URL is the default (AstrBot's behaviour).
        for (name, default) in
            [("telegram_api_base_url", TELEGRAM_API_BASE), ("telegram_file_base_url", TELEGRAM_FILE_BASE)]
        {
            if kind == "telegram"
                && map.get(name).and_then(Value::as_str).is_some_and(|s| s.trim().is_empty())
            {
                map.insert(name.into(), json!(default));
            }
        }
    }
    out
}

/// A Telegram token's shape: `<digits>:<letters, digits, - and _>`.
pub fn token_shape_ok(token: &str) -> bool {
    let Some((id, secret)) = token.split_once(':') else { return false };
    !id.is_empty()
        && id.len() <= 20
        && id.bytes().all(|b| b.is_ascii_digit())
        && !secret.is_empty()
        && secret.len() <= 200
        && secret.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// An http(s) URL ureq can parse.
fn http_url_ok(url: &str) -> bool {
    let Ok(uri) = url.parse::<ureq::http::Uri>() else { return false };
    matches!(uri.scheme_str(), Some("http" | "https")) && uri.host().is_some_and(|h| !h.is_empty())
}

/// Checks a bot before it is stored: a known type, and each known field of the right type
/// and range (numbers given as strings are read as AstrBot's validation casts them, and
/// stored as numbers). The message names the first problem.
pub fn validate(config: &mut Map<String, Value>) -> Result<(), String> {
    let kind = match config.get("type") {
        Some(Value::String(s)) if TYPES.contains(&s.as_str()) => s.clone(),
        Some(Value::String(s)) if !s.is_empty() => {
            return Err(format!("Unsupported bot type: {s} (supported: {})", TYPES.join(", ")));
        }
        Some(Value::String(_)) | None | Some(Value::Null) => {
            return Err(format!("Bot config must have a 'type' field ({})", TYPES.join(", ")));
        }
        Some(_) => return Err("type must be a string".into()),
    };
    if let Some(v) = config.get("enable")
        && !v.is_boolean()
    {
        return Err("enable must be a boolean".into());
    }
    for (name, ty, _, _, required) in fields(&kind) {
        let value = config.get(name).cloned().unwrap_or(Value::Null);
        if value.is_null() {
            if required && kind == "telegram" {
                return Err(format!("Missing key: {name}"));
            }
            continue;
        }
        let fixed = match ty {
            "string" => value.as_str().map(|_| value.clone()),
            "boolean" => value.as_bool().map(Value::Bool),
            "integer" => match &value {
                Value::Number(n) => n.as_i64().map(Value::from),
                Value::String(s) => s.trim().parse::<i64>().ok().map(Value::from),
                _ => None,
            },
            _ => match &value {
                Value::Number(n) => n.as_f64().map(Value::from),
                Value::String(s) => s.trim().parse::<f64>().ok().filter(|f| f.is_finite()).map(Value::from),
                _ => None,
            },
        };
        let Some(fixed) = fixed else {
            return Err(format!("{name} must be {}", article(ty)));
        };
        config.insert(name.into(), fixed);
    }
    let get = |name: &str| config.get(name).cloned().unwrap_or(Value::Null);
    match kind.as_str() {
        "telegram" => {
            let token = get("telegram_token");
            let token = token.as_str().unwrap_or_default();
            // A masked token sent back is restored by the caller before this check.
            if !token_shape_ok(token) {
                return Err("telegram_token must look like 123456789:ABCdef... (digits, a colon, then letters, digits, - and _)".into());
            }
            for name in ["telegram_api_base_url", "telegram_file_base_url"] {
                if let Some(url) = get(name).as_str()
                    && !url.trim().is_empty()
                    && !http_url_ok(url.trim())
                {
                    return Err(format!("{name} must be an http or https URL"));
                }
            }
            if let Some(i) = get("telegram_command_register_interval").as_i64()
                && !(1..=86_400 * 365).contains(&i)
            {
                return Err("telegram_command_register_interval must be between 1 and 31536000".into());
            }
            if let Some(d) = get("telegram_polling_restart_delay").as_f64()
                && !(0.1..=3600.0).contains(&d)
            {
                return Err("telegram_polling_restart_delay must be between 0.1 and 3600".into());
            }
            if let Some(t) = get("telegram_poll_timeout").as_i64()
                && !(1..=50).contains(&t)
            {
                return Err("telegram_poll_timeout must be between 1 and 50".into());
            }
        }
        "aiocqhttp" => {
            let port = get("ws_reverse_port");
            match port.as_i64() {
                Some(p) if (1..=65_535).contains(&p) => {}
                Some(_) => return Err("ws_reverse_port must be between 1 and 65535".into()),
                None => return Err("Missing key: ws_reverse_port".into()),
            }
            let host = get("ws_reverse_host");
            match host.as_str().map(str::trim) {
                None | Some("") => return Err("Missing key: ws_reverse_host".into()),
                Some(h) if h.parse::<std::net::IpAddr>().is_err() && !hostname_ok(h) => {
                    return Err("ws_reverse_host must be an IP address or a host name".into());
                }
                Some(_) => {}
            }
        }
        _ => {}
    }
    Ok(())
}

fn hostname_ok(h: &str) -> bool {
    h.len() <= 253
        && h.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

fn article(ty: &str) -> &'static str {
    match ty {
        "string" => "a string",
        "boolean" => "a boolean",
        "integer" => "an integer",
        _ => "a number",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(v: Value) -> Result<Value, String> {
        let mut m = v.as_object().unwrap().clone();
        validate(&mut m).map(|_| Value::Object(m))
    }

    #[test]
    fn required_fields_and_shapes_are_checked_before_storing() {
        assert!(check(json!({"id": "t", "type": "telegram", "telegram_token": "123:ABC-def_9"})).is_ok());
        assert_eq!(check(json!({"id": "t", "type": "telegram"})).unwrap_err(), "Missing key: telegram_token");
        for bad in ["123", "abc:def", "123:a/b", "123:a b", "123:../x", ":x"] {
            assert!(check(json!({"type": "telegram", "telegram_token": bad})).is_err(), "{bad}");
        }
        assert!(
            check(json!({"type": "telegram", "telegram_token": "1:a", "telegram_api_base_url": "ftp://x"}))
                .is_err()
        );
        assert!(
            check(json!({"type": "telegram", "telegram_token": "1:a", "telegram_api_base_url": ""})).is_ok()
        );
        let fixed =
            check(json!({"type": "aiocqhttp", "ws_reverse_host": "0.0.0.0", "ws_reverse_port": "6199"}));
        assert_eq!(fixed.unwrap()["ws_reverse_port"], 6199);
        assert!(check(json!({"type": "aiocqhttp", "ws_reverse_host": "0.0.0.0"})).is_err());
        assert!(
            check(json!({"type": "aiocqhttp", "ws_reverse_host": "h", "ws_reverse_port": 70000})).is_err()
        );
        assert!(check(json!({"type": "aiocqhttp", "ws_reverse_host": "a b", "ws_reverse_port": 1})).is_err());
        assert!(check(json!({"type": "discord"})).unwrap_err().starts_with("Unsupported bot type: discord"));
        assert!(check(json!({"type": 5})).is_err());
        assert!(check(json!({"type": "webchat", "enable": "yes"})).is_err());
    }

    #[test]
    fn defaults_fill_missing_and_empty_base_urls() {
        let c = with_defaults(&json!({"type": "telegram", "telegram_api_base_url": " "}));
        assert_eq!(c["telegram_api_base_url"], TELEGRAM_API_BASE);
        assert_eq!(c["telegram_poll_timeout"], 25);
        let list = bot_types();
        let names: Vec<&str> =
            list["bot_types"].as_array().unwrap().iter().map(|t| t["type"].as_str().unwrap()).collect();
        assert_eq!(names, TYPES);
    }
}
