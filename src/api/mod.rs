//! Route handlers, one module per resource, and what they share: typed access to JSON body
//! fields and query parameters. A field of the wrong type is a 400 envelope whose message
//! names the field (`expires_in_days must be an integer`), never a framework's 422.

pub mod admin;
pub mod bots;
pub mod chat;
pub mod chat_ws;
pub mod configs;
pub mod files;
pub mod im;
pub mod kb;
pub mod keys;
pub mod mcp;
pub mod meta;
pub mod operator;
pub mod personas;
pub mod plugins;
pub mod providers;
pub mod skills;

use serde_json::{Map, Value};

use crate::app::Ctx;
use crate::error::ApiError;

/// A string field: absent or `null` is `None`.
pub fn opt_string(body: &Map<String, Value>, field: &str) -> Result<Option<String>, ApiError> {
    match body.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(ApiError::bad_request(format!("{field} must be a string"))),
    }
}

/// An integer field, with pydantic's lax coercions: `5`, `5.0` and `"5"` are 5.
pub fn opt_int(body: &Map<String, Value>, field: &str) -> Result<Option<i64>, ApiError> {
    let bad = || ApiError::bad_request(format!("{field} must be an integer"));
    match body.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => match (n.as_i64(), n.as_f64()) {
            (Some(i), _) => Ok(Some(i)),
            (None, Some(f)) if f.fract() == 0.0 && f.abs() < 9.0e15 => Ok(Some(f as i64)),
            _ => Err(bad()),
        },
        Some(Value::String(s)) => s.trim().parse().map(Some).map_err(|_| bad()),
        Some(_) => Err(bad()),
    }
}

/// A boolean field (pydantic's lax forms: `true`, `"yes"`, `1`, ...).
pub fn opt_bool(body: &Map<String, Value>, field: &str) -> Result<Option<bool>, ApiError> {
    match body.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => {
            parse_bool(v).map(Some).ok_or_else(|| ApiError::bad_request(format!("{field} must be a boolean")))
        }
    }
}

/// Pydantic's lax booleans, also for query parameters.
pub fn parse_bool(v: &Value) -> Option<bool> {
    match v {
        Value::Bool(b) => Some(*b),
        Value::Number(n) => match n.as_i64() {
            Some(0) => Some(false),
            Some(1) => Some(true),
            _ => None,
        },
        Value::String(s) => match s.trim().to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" | "on" | "y" | "t" => Some(true),
            "false" | "0" | "no" | "off" | "n" | "f" => Some(false),
            _ => None,
        },
        _ => None,
    }
}

/// The JSON body as an object, or an empty one when there is no body.
pub fn body_or_empty(ctx: &Ctx<'_, '_>) -> Result<Map<String, Value>, ApiError> {
    match &ctx.req.json {
        None | Some(Value::Null) => Ok(Map::new()),
        Some(Value::Object(m)) => Ok(m.clone()),
        Some(_) => Err(ApiError::bad_request("Request body must be a JSON object")),
    }
}

/// A required, non-empty query parameter, else AstrBot's `Missing key: <name>`.
pub fn required_query(ctx: &Ctx<'_, '_>, name: &str) -> Result<String, ApiError> {
    match ctx.req.query_param(name) {
        Some(v) if !v.trim().is_empty() => Ok(v.trim().to_owned()),
        _ => Err(ApiError::bad_request(format!("Missing key: {name}"))),
    }
}

/// A list-of-strings field.
pub fn opt_string_list(body: &Map<String, Value>, field: &str) -> Result<Option<Vec<String>>, ApiError> {
    let bad = || ApiError::bad_request(format!("{field} must be a list of strings"));
    match body.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| v.as_str().map(str::to_owned).ok_or_else(bad))
            .collect::<Result<Vec<_>, _>>()
            .map(Some),
        Some(_) => Err(bad()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn field_types_and_messages() {
        let body = json!({"n": "5", "f": 1.0, "h": 1.5, "s": 3, "l": ["a", 1], "z": null});
        let body = body.as_object().unwrap();
        assert_eq!(opt_int(body, "n").unwrap(), Some(5));
        assert_eq!(opt_int(body, "f").unwrap(), Some(1));
        assert_eq!(opt_int(body, "h").unwrap_err().message(), "h must be an integer");
        assert_eq!(opt_int(body, "z").unwrap(), None);
        assert_eq!(opt_string(body, "s").unwrap_err().message(), "s must be a string");
        assert_eq!(opt_string(body, "missing").unwrap(), None);
        assert_eq!(opt_string_list(body, "l").unwrap_err().message(), "l must be a list of strings");
        assert_eq!(opt_string_list(body, "s").unwrap_err().message(), "s must be a list of strings");
    }
}
