//! Validation of a config document as AstrBot's `validate_config` does it when a config is
//! saved, so a client sees the same refusals it would see from AstrBot: the type of every
//! known key is checked against its default, numeric strings are cast, nulls become the
//! empty value of the type, and every wrong type is listed in one 400 with AstrBot's
//! Chinese message.

use serde_json::{Map, Value, json};

use super::defaults::default_config;
use crate::error::ApiError;

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

#[cfg(test)]
mod tests {
    use super::*;

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
}
