//! `_conf_schema.json`: AstrBot's plugin config schema (plugins-skills §1.8): the check
//! a schema passes when its plugin loads, the defaults it gives
//! (`AstrBotConfig._config_schema_to_default_config`), the repair AstrBot applies to a
//! saved config at load (`check_config_integrity`), and the validation of
//! `PUT /api/v1/plugins/config` (management §0.6 rules, §5.4 messages), which shares
//! `config::validate`'s core.
//!
//! A schema is `{key: item}`; an item has a `type` (one of [`TYPES`]) and optionally a
//! `default`; an `object` item nests its own schema in `items`. The saved config lives in
//! `DIR/config/<name>_config.json` and is always replaced whole (a temporary file renamed
//! over it), so a crash never leaves half a config.

use std::path::Path;

use serde_json::{Map, Value, json};

use crate::error::ApiError;

/// The item types AstrBot knows, in its `DEFAULT_VALUE_MAP` order.
pub const TYPES: &[&str] =
    &["int", "float", "bool", "string", "text", "list", "file", "object", "template_list", "dict"];

/// The most of a saved config read.
const MAX_CONFIG: u64 = 16 << 20;

/// A type's empty value (`DEFAULT_VALUE_MAP`).
fn empty_of(kind: &str) -> Value {
    match kind {
        "int" => json!(0),
        "float" => json!(0.0),
        "bool" => json!(false),
        "string" | "text" => json!(""),
        "list" | "file" | "template_list" => json!([]),
        _ => json!({}),
    }
}

fn kind_of(item: &Value) -> &str {
    item.get("type").and_then(Value::as_str).unwrap_or_default()
}

/// An object item's nested schema (`{}` when missing).
fn items_of(item: &Value) -> Map<String, Value> {
    item.get("items").and_then(Value::as_object).cloned().unwrap_or_default()
}

/// Checks a schema when its plugin loads: every item an object with a known `type`
/// (`不受支持的配置类型 ...` otherwise), `object` items with `items`.
pub fn check(schema: &Map<String, Value>) -> Result<(), String> {
    for (key, item) in schema {
        let Some(obj) = item.as_object() else {
            return Err(format!("_conf_schema.json: the item {key} must be an object"));
        };
        let Some(kind) = obj.get("type").and_then(Value::as_str) else {
            return Err(format!("_conf_schema.json: the item {key} has no type"));
        };
        if !TYPES.contains(&kind) {
            let known: Vec<String> = TYPES.iter().map(|t| format!("'{t}'")).collect();
            return Err(format!(
                "不受支持的配置类型 {kind}。支持的类型有：dict_keys([{}])",
                known.join(", ")
            ));
        }
        if kind == "object" {
            match obj.get("items") {
                Some(Value::Object(items)) => check(items)?,
                _ => return Err(format!("_conf_schema.json: the object item {key} needs items")),
            }
        }
    }
    Ok(())
}

/// The config a schema gives by default: each item's `default`, else its type's empty
/// value; an `object` is built from its `items` (its own `default` is not read, as in
/// AstrBot).
pub fn defaults(schema: &Map<String, Value>) -> Map<String, Value> {
    schema
        .iter()
        .map(|(key, item)| {
            let value = match kind_of(item) {
                "object" => Value::Object(defaults(&items_of(item))),
                kind => item.get("default").cloned().unwrap_or_else(|| empty_of(kind)),
            };
            (key.clone(), value)
        })
        .collect()
}

/// The saved config repaired against the schema (missing keys added, nulls replaced,
/// a non-object where an `object` item is replaced, unknown keys dropped, schema order).
/// Scalars of the wrong type are kept, as AstrBot keeps them.
pub fn repair(config: &Map<String, Value>, schema: &Map<String, Value>) -> Map<String, Value> {
    let refer = defaults(schema);
    schema
        .iter()
        .map(|(key, item)| {
            let value = match (config.get(key), kind_of(item)) {
                (None | Some(Value::Null), _) => refer[key].clone(),
                (Some(Value::Object(inner)), "object") => Value::Object(repair(inner, &items_of(item))),
                (Some(_), "object") => refer[key].clone(),
                (Some(v), _) => v.clone(),
            };
            (key.clone(), value)
        })
        .collect()
}

/// A value of the expected type per known key, `config::validate`'s input: `text` is a
/// string, `file` and `template_list` lists, an `object` its items' prototypes, `dict`
/// any object. Items without a known type are left out (not checked).
fn prototypes(schema: &Map<String, Value>) -> Map<String, Value> {
    schema
        .iter()
        .filter(|(_, item)| TYPES.contains(&kind_of(item)))
        .map(|(key, item)| {
            let value = match kind_of(item) {
                "object" => Value::Object(prototypes(&items_of(item))),
                kind => empty_of(kind),
            };
            (key.clone(), value)
        })
        .collect()
}

/// Validates (and casts numeric strings in) a config sent to PUT; 400
/// `格式校验未通过: [...]` as AstrBot.
pub fn validate(config: &mut Map<String, Value>, schema: &Map<String, Value>) -> Result<(), ApiError> {
    crate::config::validate_typed(config, &prototypes(schema))
}

/// Reads a saved config: `None` when missing; an error when unreadable or not an object.
fn read_saved(path: &Path) -> Result<Option<Map<String, Value>>, String> {
    use std::io::Read;
    let file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e.to_string()),
    };
    let mut bytes = Vec::new();
    file.take(MAX_CONFIG + 1).read_to_end(&mut bytes).map_err(|e| e.to_string())?;
    if bytes.len() as u64 > MAX_CONFIG {
        return Err(format!("larger than {} MiB", MAX_CONFIG >> 20));
    }
    let bytes = bytes.strip_prefix("\u{feff}".as_bytes()).unwrap_or(&bytes);
    match serde_json::from_slice(bytes) {
        Ok(Value::Object(m)) => Ok(Some(m)),
        Ok(_) => Err("not a JSON object".into()),
        Err(e) => Err(e.to_string()),
    }
}

/// Replaces a file whole: the bytes go to a uniquely named temporary file beside it,
/// which is then renamed over it, so a reader sees the old file or the new one.
pub fn replace_file(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    let tmp = path.with_file_name(format!(
        ".{name}.{}-{}.tmp",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::write(&tmp, bytes).and_then(|()| std::fs::rename(&tmp, path)).inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })
}

/// Writes a config whole: pretty JSON (2 spaces, UTF-8).
pub fn save(path: &Path, config: &Map<String, Value>) -> std::io::Result<()> {
    let text = serde_json::to_string_pretty(config).map_err(std::io::Error::other)?;
    replace_file(path, text.as_bytes())
}

/// The config in effect: the saved file (`plugins::config_path`) repaired, or the
/// defaults; the file is written when missing or when the repair changed it. A file that
/// cannot be read is left alone (the defaults are used), so a hand edit gone wrong is not
/// overwritten.
pub fn load(path: &Path, schema: &Map<String, Value>) -> Map<String, Value> {
    let (config, changed) = match read_saved(path) {
        Ok(Some(saved)) => {
            let repaired = repair(&saved, schema);
            // Order matters: AstrBot rewrites a file whose keys are out of schema order.
            let changed = !saved.iter().eq(repaired.iter());
            (repaired, changed)
        }
        Ok(None) => (defaults(schema), true),
        Err(e) => {
            log::warn!("plugin config {}: {e}; the defaults are used", path.display());
            return defaults(schema);
        }
    };
    if changed && let Err(e) = save(path, &config) {
        log::warn!("cannot write the plugin config {}: {e}", path.display());
    }
    config
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obj(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    fn schema() -> Map<String, Value> {
        obj(json!({
            "token": {"type": "string", "description": "API token"},
            "sides": {"type": "int", "default": 6},
            "ratio": {"type": "float"},
            "loud": {"type": "bool", "default": true},
            "words": {"type": "list", "default": ["a"]},
            "limits": {"type": "object", "items": {"max": {"type": "int", "default": 3}, "note": {"type": "text"}}},
            "extra": {"type": "dict"}
        }))
    }

    #[test]
    fn schemas_are_checked_with_astrbots_message() {
        check(&schema()).unwrap();
        let err = check(&obj(json!({"x": {"type": "number"}}))).unwrap_err();
        assert!(err.starts_with("不受支持的配置类型 number。支持的类型有：dict_keys(['int', "), "{err}");
        assert!(check(&obj(json!({"x": {"default": 1}}))).is_err());
        assert!(check(&obj(json!({"x": "int"}))).is_err());
        assert!(check(&obj(json!({"x": {"type": "object"}}))).is_err());
        assert!(check(&obj(json!({"x": {"type": "object", "items": {"y": {"type": "?"}}}}))).is_err());
    }

    #[test]
    fn defaults_follow_the_schema() {
        assert_eq!(
            Value::Object(defaults(&schema())),
            json!({"token": "", "sides": 6, "ratio": 0.0, "loud": true, "words": ["a"],
                   "limits": {"max": 3, "note": ""}, "extra": {}})
        );
    }

    #[test]
    fn repair_adds_drops_and_reorders() {
        let saved = obj(json!({"gone": 1, "sides": "7", "token": null, "limits": 5, "extra": {"k": "v"}}));
        let fixed = repair(&saved, &schema());
        assert_eq!(
            Value::Object(fixed.clone()),
            json!({"token": "", "sides": "7", "ratio": 0.0, "loud": true, "words": ["a"],
                   "limits": {"max": 3, "note": ""}, "extra": {"k": "v"}})
        );
        assert_eq!(fixed.keys().next().unwrap(), "token");
        let nested = repair(&obj(json!({"limits": {"max": 9, "old": 1}})), &schema());
        assert_eq!(nested["limits"], json!({"max": 9, "note": ""}));
    }

    #[test]
    fn validation_casts_and_lists_astrbots_errors() {
        let mut ok = obj(
            json!({"sides": "12", "ratio": "0.5", "token": null, "limits": {"max": "4"}, "unknown": [1]}),
        );
        validate(&mut ok, &schema()).unwrap();
        assert_eq!(ok["sides"], 12);
        assert_eq!(ok["ratio"], 0.5);
        assert_eq!(ok["token"], "");
        assert_eq!(ok["limits"]["max"], 4);
        let mut bad =
            obj(json!({"sides": "many", "loud": "yes", "words": "a", "limits": {"note": 3}, "extra": []}));
        assert_eq!(
            validate(&mut bad, &schema()).unwrap_err().message(),
            "格式校验未通过: ['错误的类型 sides: 期望是 int, 得到了 str', '错误的类型 loud: 期望是 bool, 得到了 str', \
             '错误的类型 words: 期望是 list, 得到了 str', '错误的类型 limits.note: 期望是 string, 得到了 int', \
             '错误的类型 extra: 期望是 dict, 得到了 list']"
        );
    }

    #[test]
    fn load_writes_defaults_and_repairs_but_keeps_an_unreadable_file() {
        let dir = std::env::temp_dir().join(format!("astrbot-schema-{}", std::process::id()));
        let path = dir.join("config").join("p_config.json");
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(load(&path, &schema())["sides"], 6);
        assert_eq!(read_saved(&path).unwrap().unwrap()["loud"], true);
        std::fs::write(&path, "\u{feff}{\"sides\": 8, \"gone\": true}").unwrap();
        let c = load(&path, &schema());
        assert_eq!(c["sides"], 8);
        assert!(!read_saved(&path).unwrap().unwrap().contains_key("gone"));
        std::fs::write(&path, "{not json").unwrap();
        assert_eq!(load(&path, &schema())["sides"], 6);
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "{not json");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
