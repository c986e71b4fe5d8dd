//! `_conf_schema.json` (INTERFACE: the helper owning this file replaces the bodies):
//! AstrBot's plugin config schema (plugins-skills §1.8): the defaults it gives, the
//! repair AstrBot applies to a saved config at load (`check_config_integrity`), and the
//! validation of `PUT /api/v1/plugins/config` (management §0.6 rules, §5.4 messages).

use std::path::Path;

use serde_json::{Map, Value};

use crate::error::ApiError;

/// Checks a schema when its plugin loads: every item an object with a known `type`
/// (`不受支持的配置类型 ...` otherwise), `object` items with `items`.
pub fn check(schema: &Map<String, Value>) -> Result<(), String> {
    let _ = schema;
    Ok(())
}

/// The config a schema gives by default.
pub fn defaults(schema: &Map<String, Value>) -> Map<String, Value> {
    let _ = schema;
    Map::new()
}

/// The saved config repaired against the schema (missing keys added, nulls replaced,
/// unknown keys dropped, schema order).
pub fn repair(config: &Map<String, Value>, schema: &Map<String, Value>) -> Map<String, Value> {
    let _ = schema;
    config.clone()
}

/// Validates (and casts numeric strings in) a config sent to PUT; 400
/// `格式校验未通过: [...]` as AstrBot.
pub fn validate(config: &mut Map<String, Value>, schema: &Map<String, Value>) -> Result<(), ApiError> {
    let _ = (config, schema);
    Ok(())
}

/// The config in effect: the saved file (`plugins::config_path`) repaired, or the
/// defaults; the file is rewritten when the repair changed it.
pub fn load(path: &Path, schema: &Map<String, Value>) -> Map<String, Value> {
    let _ = path;
    defaults(schema)
}
