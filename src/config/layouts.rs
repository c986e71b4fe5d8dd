//! The two layouts of the agent's settings, AstrBot 4.27's and 4.29's, over one stored
//! document, so clients written for either read and update the same config.
//!
//! 4.27 keeps them as flat keys of `provider_settings` (`max_agent_step`,
//! `default_personality`, `max_context_length`, the `llm_compress_*` keys, ...); 4.29 moves
//! them into a top-level `agent_runner {runner_type, config}` whose local runner groups
//! them (`model`, `persona`, `compression`, `misc`). Here the flat keys are the one source
//! of truth: they are what is stored and what the chat reads (`effective`), and
//! `agent_runner` is a view built from them on every read ([`with_runner_view`]). A
//! third-party runner's own settings (dify, coze, ...), which have no flat keys, are stored
//! as the `agent_runner` the client sent.
//!
//! On a write ([`apply_update`]) each field takes the value the request changed: a 4.27
//! client sends the flat keys (and, sending back the whole document it read, an unchanged
//! `agent_runner`); a 4.29 client sends `agent_runner` (and an unchanged `provider_settings`).
//! A field changed in both ways takes the `agent_runner` value. A document that says it is
//! 4.29's (it has `agent_runner`, or a `config_version` of 3 or more) is checked as 4.29
//! checks it: `agent_runner must be an object`, `Unsupported Agent Runner type: X`, and the
//! runner's settings normalised (wrong types become defaults, AstrBot's bounds applied).

use serde_json::{Map, Value, json};

use crate::error::ApiError;

/// AstrBot 4.29's runner types; only `local` runs here (the others are stored, not run).
pub const RUNNER_TYPES: [&str; 5] = ["local", "dify", "coze", "dashscope", "deerflow"];

/// The local runner's settings: `(group, field)` under `agent_runner.config`, the flat
/// `provider_settings` key of 4.27, and its default (4.29's, except `request_max_retries`: 3, as 4.27 and this server have it).
fn local_fields() -> [(&'static str, &'static str, &'static str, Value); 17] {
    [
        ("model", "provider_id", "default_provider_id", json!("")),
        ("model", "fallback_provider_ids", "fallback_chat_models", json!([])),
        ("model", "request_max_retries", "request_max_retries", json!(3)),
        ("persona", "persona_id", "default_personality", json!("default")),
        ("persona", "safety_mode", "llm_safety_mode", json!(true)),
        ("persona", "safety_mode_strategy", "safety_mode_strategy", json!("system_prompt")),
        ("compression", "max_turns", "max_context_length", json!(-1)),
        ("compression", "trim_turns", "dequeue_context_length", json!(1)),
        ("compression", "overflow_strategy", "context_limit_reached_strategy", json!("llm_compress")),
        ("compression", "instruction", "llm_compress_instruction", json!("")),
        ("compression", "keep_recent_ratio", "llm_compress_keep_recent_ratio", json!(0.15)),
        ("compression", "provider_id", "llm_compress_provider_id", json!("")),
        ("compression", "fallback_max_tokens", "fallback_max_context_tokens", json!(128000)),
        ("misc", "max_steps", "max_agent_step", json!(30)),
        ("misc", "tool_schema_mode", "tool_schema_mode", json!("full")),
        ("misc", "tool_call_timeout", "tool_call_timeout", json!(120)),
        ("misc", "sanitize_context_by_modalities", "sanitize_context_by_modalities", json!(false)),
    ]
}

/// A third-party runner's settings and 4.29's defaults for them.
fn third_party_defaults(runner_type: &str) -> Value {
    let shared = json!({"max_steps": 30, "persona_id": "default", "proxy_mode": "inherit", "proxy_url": ""});
    let mut own = match runner_type {
        "dify" => json!({
            "dify_api_type": "chat", "dify_api_key": "", "dify_api_base": "https://api.dify.ai/v1",
            "dify_workflow_output_key": "astrbot_wf_output", "dify_query_input_key": "astrbot_text_query",
            "variables": {}, "timeout": 60,
        }),
        "coze" => json!({
            "coze_api_key": "", "bot_id": "", "coze_api_base": "https://api.coze.cn",
            "auto_save_history": true, "timeout": 60,
        }),
        "dashscope" => json!({
            "dashscope_app_type": "agent", "dashscope_api_key": "", "dashscope_app_id": "",
            "rag_options": {"pipeline_ids": [], "file_ids": [], "output_reference": false},
            "variables": {}, "timeout": 60,
        }),
        _ => json!({
            "deerflow_api_base": "http://127.0.0.1:2026", "deerflow_api_key": "", "deerflow_auth_header": "",
            "deerflow_assistant_id": "lead_agent", "deerflow_model_name": "",
            "deerflow_thinking_enabled": false, "deerflow_plan_mode": false,
            "deerflow_subagent_enabled": false, "deerflow_max_concurrent_subagents": 3,
            "deerflow_recursion_limit": 1000, "timeout": 300,
        }),
    };
    if let (Value::Object(own), Value::Object(shared)) = (&mut own, shared) {
        own.extend(shared);
    }
    own
}

/// The local runner's defaults, grouped.
fn local_defaults() -> Value {
    let mut config = json!({"model": {}, "persona": {}, "compression": {}, "misc": {}});
    for (group, field, _, default) in local_fields() {
        config[group][field] = default;
    }
    config
}

/// AstrBot's `_normalize_value`: `value` shaped like `default`, each field of the wrong
/// type replaced by its default (integers and floats cast from numbers and numeric
/// strings, never from booleans); an empty default object takes any object.
fn normalize(value: Option<&Value>, default: &Value) -> Value {
    match default {
        Value::Object(d) => match value {
            Some(Value::Object(v)) if d.is_empty() => Value::Object(v.clone()),
            Some(Value::Object(v)) => {
                Value::Object(d.iter().map(|(k, dv)| (k.clone(), normalize(v.get(k), dv))).collect())
            }
            _ => default.clone(),
        },
        Value::Array(_) => value.filter(|v| v.is_array()).unwrap_or(default).clone(),
        Value::Bool(_) => value.filter(|v| v.is_boolean()).unwrap_or(default).clone(),
        Value::Number(n) if n.is_i64() || n.is_u64() => match value {
            // Python's int() truncates a float toward zero; beyond i64 is no number here.
            Some(Value::Number(v)) => v
                .as_i64()
                .or_else(|| v.as_f64().filter(|f| f.is_finite() && f.abs() < 9.0e18).map(|f| f as i64))
                .map(|i| json!(i))
                .unwrap_or_else(|| default.clone()),
            Some(Value::String(s)) => {
                s.trim().parse::<i64>().map(|i| json!(i)).unwrap_or_else(|_| default.clone())
            }
            _ => default.clone(),
        },
        Value::Number(_) => match value {
            Some(Value::Number(v)) => v.as_f64().map(|f| json!(f)).unwrap_or_else(|| default.clone()),
            Some(Value::String(s)) => s
                .trim()
                .parse::<f64>()
                .ok()
                .filter(|f| f.is_finite())
                .map(|f| json!(f))
                .unwrap_or_else(|| default.clone()),
            _ => default.clone(),
        },
        Value::String(_) => value.filter(|v| v.is_string()).unwrap_or(default).clone(),
        Value::Null => value.cloned().unwrap_or(Value::Null),
    }
}

/// Python's `str()` of a runner type, for AstrBot's message.
fn python_str(v: Option<&Value>) -> String {
    match v {
        None | Some(Value::Null) => "None".into(),
        Some(Value::String(s)) => s.clone(),
        Some(Value::Bool(true)) => "True".into(),
        Some(Value::Bool(false)) => "False".into(),
        Some(other) => other.to_string(),
    }
}

/// AstrBot 4.29's `normalize_agent_runner`: the runner checked, its settings normalised
/// to exactly its type's fields, and the local runner's bounds applied.
pub fn normalize_runner(runner: Option<&Value>) -> Result<Value, ApiError> {
    let Some(Value::Object(runner)) = runner else {
        return Err(ApiError::bad_request("agent_runner must be an object"));
    };
    let runner_type = match runner.get("runner_type") {
        Some(Value::String(t)) if RUNNER_TYPES.contains(&t.as_str()) => t.clone(),
        other => {
            return Err(ApiError::bad_request(format!(
                "Unsupported Agent Runner type: {}",
                python_str(other)
            )));
        }
    };
    let config = runner.get("config");
    if runner_type != "local" {
        let mut normalized = normalize(config, &third_party_defaults(&runner_type));
        if normalized["max_steps"].as_i64().is_some_and(|n| n < 1) {
            normalized["max_steps"] = json!(1);
        }
        if !matches!(normalized["proxy_mode"].as_str(), Some("inherit" | "custom" | "none")) {
            normalized["proxy_mode"] = json!("inherit");
        }
        return Ok(json!({"runner_type": runner_type, "config": normalized}));
    }
    let mut c = normalize(config, &local_defaults());
    let ratio = c["compression"]["keep_recent_ratio"].as_f64().unwrap_or(0.15);
    c["compression"]["keep_recent_ratio"] = json!(ratio.clamp(0.0, 0.3));
    for (group, field) in
        [("model", "request_max_retries"), ("misc", "max_steps"), ("compression", "trim_turns")]
    {
        if c[group][field].as_i64().is_none_or(|n| n < 1) {
            c[group][field] = json!(1);
        }
    }
    // Provider ids are non-empty strings; anything else is none.
    let ids: Vec<Value> = c["model"]["fallback_provider_ids"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|v| v.as_str().is_some_and(|s| !s.is_empty()))
        .cloned()
        .collect();
    c["model"]["fallback_provider_ids"] = Value::Array(ids);
    Ok(json!({"runner_type": "local", "config": c}))
}

/// Whether a document is written for AstrBot 4.29 (or later): it has `agent_runner` (even
/// `null`), or its `config_version` is 3 or more.
pub fn is_429_shaped(doc: &Map<String, Value>) -> bool {
    doc.contains_key("agent_runner")
        || doc.get("config_version").and_then(Value::as_f64).is_some_and(|v| v >= 3.0)
}

/// The `agent_runner` a merged document presents: the local runner built from the flat
/// keys, or the stored third-party runner's settings (its defaults if none are stored).
pub fn runner_view(merged: &Value) -> Value {
    let settings = &merged["provider_settings"];
    let runner_type =
        settings["agent_runner_type"].as_str().filter(|t| RUNNER_TYPES.contains(t)).unwrap_or("local");
    if runner_type != "local" {
        let stored = merged.get("agent_runner").filter(|r| r["runner_type"] == runner_type);
        let config = stored.map(|r| &r["config"]);
        return json!({"runner_type": runner_type, "config": normalize(config, &third_party_defaults(runner_type))});
    }
    let mut config = local_defaults();
    for (group, field, legacy, default) in local_fields() {
        config[group][field] = settings.get(legacy).cloned().unwrap_or(default);
    }
    json!({"runner_type": "local", "config": config})
}

/// A merged document with its `agent_runner` view in place.
pub fn with_runner_view(mut merged: Value) -> Value {
    let view = runner_view(&merged);
    if let Value::Object(m) = &mut merged {
        m.insert("agent_runner".into(), view);
    }
    merged
}

/// Rewrites an update's body onto the flat keys, as described in the module doc. `current`
/// is the profile as it reads now (merged, with its view); `stored_settings` the stored
/// part of its `provider_settings`, which a body without `provider_settings` builds on (the
/// top-level merge would otherwise drop the keys it does not send). A 4.29-shaped body
/// whose `agent_runner` is missing or wrong is refused with AstrBot 4.29's message.
pub fn apply_update(
    body: &mut Map<String, Value>,
    current: &Value,
    stored_settings: Option<&Value>,
) -> Result<(), ApiError> {
    if !is_429_shaped(body) {
        return Ok(());
    }
    let runner = normalize_runner(body.get("agent_runner"))?;
    let runner_type = runner["runner_type"].as_str().unwrap_or("local").to_owned();
    let current_view = runner_view(current);
    let runner_changed_type = current_view["runner_type"] != runner_type.as_str();
    let settings = match body.get_mut("provider_settings") {
        Some(Value::Object(s)) => s,
        // Not an object: type validation refuses it next.
        Some(_) => return Ok(()),
        None => {
            let base = stored_settings.and_then(Value::as_object).cloned().unwrap_or_default();
            body.insert("provider_settings".into(), Value::Object(base));
            let Some(Value::Object(s)) = body.get_mut("provider_settings") else { unreachable!("just set") };
            s
        }
    };
    if runner_changed_type || !settings.contains_key("agent_runner_type") {
        settings.insert("agent_runner_type".into(), json!(runner_type));
    }
    if runner_type == "local" {
        // Each flat key: the runner's value where it changed it (where the flat key changed
        // too, the newer layout wins), else the flat value sent, else the runner's (which is
        // the current one): a body whose `provider_settings` lacks the flat keys, as 4.29
        // sends it, must not reset them.
        for (group, field, legacy, _) in local_fields() {
            let new = &runner["config"][group][field];
            if *new != current_view["config"][group][field] || !settings.contains_key(legacy) {
                settings.insert(legacy.into(), new.clone());
            }
        }
    }
    store_runner(body, runner, &runner_type);
    Ok(())
}

/// A third-party runner's settings are stored as sent (normalised); the local runner's
/// live in the flat keys, so its `agent_runner` is not stored.
fn store_runner(body: &mut Map<String, Value>, runner: Value, runner_type: &str) {
    match runner_type {
        "local" => {
            body.remove("agent_runner");
        }
        _ => {
            body.insert("agent_runner".into(), runner);
        }
    }
}

/// AstrBot 4.29's check of `provider_settings.computer_use_local_permissions`: an object
/// of roles, each an object whose `allow_*` keys are booleans and whose
/// `filesystem_scope` is `none`, `workspace` or `host`.
pub fn check_local_permissions(body: &Map<String, Value>) -> Result<(), ApiError> {
    let Some(permissions) =
        body.get("provider_settings").and_then(|s| s.get("computer_use_local_permissions"))
    else {
        return Ok(());
    };
    let bad = |m: String| Err(ApiError::bad_request(m));
    let Value::Object(roles) = permissions else {
        return bad("Local computer permissions must be an object.".into());
    };
    for (role, policy) in roles {
        let Value::Object(policy) = policy else {
            return bad("Local computer permissions must be an object.".into());
        };
        for key in ["allow_execution", "allow_network"] {
            if policy.get(key).is_some_and(|v| !v.is_boolean()) {
                return bad(format!("Local permission {role}.{key} must be a boolean."));
            }
        }
        if let Some(scope) = policy.get("filesystem_scope")
            && !matches!(scope.as_str(), Some("none" | "workspace" | "host"))
        {
            return bad(format!("Invalid local filesystem scope for {role}: {}.", python_str(Some(scope))));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obj(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    fn merged(settings: Value) -> Value {
        json!({"provider_settings": settings})
    }

    #[test]
    fn the_local_view_is_built_from_the_flat_keys() {
        let view = runner_view(&merged(json!({"max_agent_step": 7, "default_personality": "tutor"})));
        assert_eq!(view["runner_type"], "local");
        assert_eq!(view["config"]["misc"]["max_steps"], 7);
        assert_eq!(view["config"]["persona"]["persona_id"], "tutor");
        assert_eq!(view["config"]["compression"]["keep_recent_ratio"], 0.15, "a default");
        let dify = runner_view(&json!({"provider_settings": {"agent_runner_type": "dify"},
            "agent_runner": {"runner_type": "dify", "config": {"dify_api_key": "k", "timeout": "9"}}}));
        assert_eq!(dify["config"]["dify_api_key"], "k");
        assert_eq!(dify["config"]["timeout"], 9);
        assert_eq!(dify["config"]["proxy_mode"], "inherit");
    }

    #[test]
    fn runners_are_checked_and_normalised_as_astrbot_does() {
        let err = |v: Option<Value>| normalize_runner(v.as_ref()).unwrap_err().message();
        assert_eq!(err(None), "agent_runner must be an object");
        assert_eq!(err(Some(json!([1]))), "agent_runner must be an object");
        assert_eq!(err(Some(json!({"runner_type": "x"}))), "Unsupported Agent Runner type: x");
        assert_eq!(err(Some(json!({}))), "Unsupported Agent Runner type: None");
        assert_eq!(err(Some(json!({"runner_type": true}))), "Unsupported Agent Runner type: True");
        let r = normalize_runner(Some(&json!({"runner_type": "local", "config": {
            "misc": {"max_steps": 0, "tool_call_timeout": "60"},
            "model": {"request_max_retries": true, "fallback_provider_ids": ["a", "", 3]},
            "compression": {"keep_recent_ratio": 0.9, "trim_turns": -4, "max_turns": 1e30},
            "unknown": 1,
        }})))
        .unwrap();
        let c = &r["config"];
        assert_eq!(c["misc"]["max_steps"], 1);
        assert_eq!(c["misc"]["tool_call_timeout"], 60);
        assert_eq!(c["model"]["request_max_retries"], 3, "a bool is no int: the default");
        assert_eq!(c["model"]["fallback_provider_ids"], json!(["a"]));
        assert_eq!(c["compression"]["keep_recent_ratio"], 0.3);
        assert_eq!(c["compression"]["trim_turns"], 1);
        assert_eq!(c["compression"]["max_turns"], -1, "beyond an integer: the default");
        assert!(c.get("unknown").is_none());
    }

    #[test]
    fn each_field_takes_the_value_the_request_changed() {
        let current = with_runner_view(merged(
            json!({"max_agent_step": 30, "default_personality": "default", "tool_call_timeout": 120}),
        ));
        // 4.27: the flat key changed, the view sent back as read.
        let mut body =
            obj(json!({"provider_settings": {"max_agent_step": 5}, "agent_runner": current["agent_runner"]}));
        apply_update(&mut body, &current, None).unwrap();
        assert_eq!(body["provider_settings"]["max_agent_step"], 5);
        assert!(body.get("agent_runner").is_none(), "the local runner is not stored");
        // 4.29: the runner changed, the flat keys sent back as read.
        let mut runner = current["agent_runner"].clone();
        runner["config"]["misc"]["max_steps"] = json!(9);
        let mut body =
            obj(json!({"provider_settings": current["provider_settings"], "agent_runner": runner}));
        apply_update(&mut body, &current, None).unwrap();
        assert_eq!(body["provider_settings"]["max_agent_step"], 9);
        // 4.29 without provider_settings: the stored keys are kept beside the change.
        let mut runner = current["agent_runner"].clone();
        runner["config"]["persona"]["persona_id"] = json!("tutor");
        let mut body = obj(json!({"agent_runner": runner, "config_version": 5}));
        apply_update(&mut body, &current, Some(&json!({"wake_prefix": "!", "max_context_length": 4})))
            .unwrap();
        let settings = &body["provider_settings"];
        assert_eq!(
            (&settings["wake_prefix"], &settings["default_personality"]),
            (&json!("!"), &json!("tutor"))
        );
        assert_eq!(settings["max_agent_step"], 30, "every flat key is written");
        // 4.29's own provider_settings, without the flat keys: they keep their values.
        let mut body =
            obj(json!({"agent_runner": current["agent_runner"], "provider_settings": {"wake_prefix": "?"}}));
        apply_update(&mut body, &current, None).unwrap();
        assert_eq!(body["provider_settings"]["tool_call_timeout"], 120);
        assert_eq!(body["provider_settings"]["wake_prefix"], "?");
        // 4.29-shaped without a runner.
        let mut body = obj(json!({"config_version": 5, "provider_settings": {}}));
        assert_eq!(
            apply_update(&mut body, &current, None).unwrap_err().message(),
            "agent_runner must be an object"
        );
        // 4.27-shaped: untouched.
        let mut body = obj(json!({"provider_settings": {"max_agent_step": "x"}}));
        apply_update(&mut body, &current, None).unwrap();
        assert_eq!(body["provider_settings"]["max_agent_step"], "x");
        // A third-party runner is stored and named in the flat key.
        let mut body = obj(json!({"agent_runner": {"runner_type": "coze", "config": {"bot_id": "b"}}}));
        apply_update(&mut body, &current, None).unwrap();
        assert_eq!(body["provider_settings"]["agent_runner_type"], "coze");
        assert_eq!(body["agent_runner"]["config"]["bot_id"], "b");
    }

    #[test]
    fn local_permissions_messages() {
        let check = |v: Value| {
            check_local_permissions(&obj(json!({"provider_settings": {"computer_use_local_permissions": v}})))
        };
        assert!(check(json!({"admin": {"allow_execution": true, "filesystem_scope": "host"}})).is_ok());
        assert_eq!(check(json!([])).unwrap_err().message(), "Local computer permissions must be an object.");
        assert_eq!(
            check(json!({"member": {"allow_network": "yes"}})).unwrap_err().message(),
            "Local permission member.allow_network must be a boolean."
        );
        assert_eq!(
            check(json!({"member": {"filesystem_scope": "disk"}})).unwrap_err().message(),
            "Invalid local filesystem scope for member: disk."
        );
    }
}
