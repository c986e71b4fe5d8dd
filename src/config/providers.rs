//! Providers as the chat uses them: AstrBot's capability names, and a provider merged
//! with its source (`{**source, **provider}`), where a provider pointed elsewhere than
//! its source does not inherit the source's secrets.

use rusqlite::Connection;
use serde_json::{Value, json};

use super::documents::deep_merge;
use super::masking::{holds_secret, strip_secrets};
use super::target::target_change;
use crate::db::resources::{self, Docs};
use crate::error::ApiError;

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
pub(super) fn merge_over(source: Option<&Value>, provider: &Value) -> Value {
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

pub(super) fn is_enabled(v: &Value) -> bool {
    v.get("enable").and_then(Value::as_bool).unwrap_or(true)
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
