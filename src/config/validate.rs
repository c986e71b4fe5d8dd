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
            ("int", Value::Number(n)) if n.is_i64() || n.is_u64() => true,
            // 30.0 is 30: JSON does not tell the two apart, nor does a schema.
            ("int", Value::Number(n)) => match n.as_f64() {
                Some(f) if f.fract() == 0.0 && f.abs() < 9.0e15 => {
                    *value = json!(f as i64);
                    true
                }
                _ => false,
            },
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

/// Checks `body` against `prototypes` (a value of the expected type per known key; an
/// object recurses) with the rules of [`validate`]: the shared core of the system config's
/// check and a plugin config's (`plugins::schema`).
pub fn validate_typed(
    body: &mut Map<String, Value>,
    prototypes: &Map<String, Value>,
) -> Result<(), ApiError> {
    let mut errors = Vec::new();
    validate_into(body, prototypes, "", &mut errors);
    refuse(errors)
}

/// Checks the types of the known keys of a config document, casting numeric strings and
/// replacing nulls as AstrBot does; 400 `格式校验未通过: [...]` lists every wrong type.
pub fn validate(body: &mut Map<String, Value>) -> Result<(), ApiError> {
    refuse(type_errors(body))
}

/// [`validate`] for a new profile of AstrBot 4.29's layout, whose refusal reads
/// `Configuration validation failed: [...]` (4.29's `POST /config-profiles`).
pub fn validate_new_profile(body: &mut Map<String, Value>) -> Result<(), ApiError> {
    match refuse(type_errors(body)) {
        Err(e) => Err(ApiError::bad_request(e.message().replacen(
            "格式校验未通过: ",
            "Configuration validation failed: ",
            1,
        ))),
        ok => ok,
    }
}

fn type_errors(body: &mut Map<String, Value>) -> Vec<String> {
    let defaults = default_config();
    let mut errors = Vec::new();
    validate_into(body, defaults.as_object().expect("defaults are an object"), "", &mut errors);
    errors
}

/// The fields of a provider source and the types AstrBot's source templates give them
/// (`CONFIG_METADATA_2.provider_group`): checked, cast and nulled with the rules of
/// [`validate`], so a source that would break its provider at load time (a `timeout` of
/// `"abc"`, a header that is not a string) is refused when saved, not stored.
const SOURCE_FIELDS: [(&str, &str); 9] = [
    ("provider", "string"),
    ("type", "string"),
    ("provider_type", "string"),
    ("enable", "bool"),
    ("key", "list"),
    ("api_base", "string"),
    ("timeout", "int"),
    ("proxy", "string"),
    ("custom_headers", "dict"),
];

/// Checks a provider source as it is saved: the known fields' types (an int may be sent
/// as a numeric string), `key` a list of strings and `custom_headers` an object of strings;
/// 400 `格式校验未通过: [...]` lists every wrong type, under `provider_sources.`.
pub fn validate_source(source: &mut Map<String, Value>) -> Result<(), ApiError> {
    let mut defaults = Map::new();
    for (field, kind) in SOURCE_FIELDS {
        let default = match kind {
            "string" => json!(""),
            "bool" => json!(false),
            "list" => json!([]),
            "int" => json!(0),
            _ => json!({}),
        };
        defaults.insert(field.to_owned(), default);
    }
    let mut errors = Vec::new();
    // `custom_headers` is checked entry by entry below, not against the empty default.
    validate_into(source, &defaults, "provider_sources.", &mut errors);
    let item_errors = |value: Option<&Value>, path: &str, errors: &mut Vec<String>| {
        let items: Vec<(String, &Value)> = match value {
            Some(Value::Array(items)) => {
                items.iter().enumerate().map(|(i, v)| (format!("[{i}]"), v)).collect()
            }
            Some(Value::Object(map)) => map.iter().map(|(k, v)| (format!(".{k}"), v)).collect(),
            _ => Vec::new(),
        };
        for (at, v) in items {
            if !v.is_string() {
                errors.push(format!(
                    "错误的类型 provider_sources.{path}{at}: 期望是 string, 得到了 {}",
                    type_name(v)
                ));
            }
        }
    };
    item_errors(source.get("key"), "key", &mut errors);
    item_errors(source.get("custom_headers"), "custom_headers", &mut errors);
    refuse(errors)
}

fn refuse(errors: Vec<String>) -> Result<(), ApiError> {
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

    #[test]
    fn provider_sources_are_typed_when_saved() {
        let mut bad =
            json!({"id": "s", "timeout": "abc", "custom_headers": {"X-A": {}, "X-B": "ok"}, "key": ["k", 1]})
                .as_object()
                .unwrap()
                .clone();
        assert_eq!(
            validate_source(&mut bad).unwrap_err().message(),
            "格式校验未通过: ['错误的类型 provider_sources.timeout: 期望是 int, 得到了 str', \
             '错误的类型 provider_sources.key[1]: 期望是 string, 得到了 int', \
             '错误的类型 provider_sources.custom_headers.X-A: 期望是 string, 得到了 dict']"
        );
        let mut ok = json!({"id": "s", "timeout": " 30 ", "custom_headers": {"X-A": "1"}, "proxy": null, "vendor_extra": [1]})
            .as_object()
            .unwrap()
            .clone();
        validate_source(&mut ok).unwrap();
        assert_eq!(ok["timeout"], 30);
        assert_eq!(ok["proxy"], "");
    }
}
