//! Secret references: a provider key written `$NAME` or `${NAME}` is read from the
//! environment when the provider is called.
//!
//! The key goes to an upstream the caller chooses, so only some variables may be named:
//! those ending in `_API_KEY` and those listed in `ASTRBOT_SECRET_ENV`. Documents are
//! checked when they are saved ([`check_secret_refs`]), and each reference again when its
//! key is resolved for a call ([`secret_ref_allowed`], from `chat::adapters`).

use serde_json::Value;

use crate::error::ApiError;

/// The rule a `$NAME` reference must follow, in the words of the refusal: only names meant
/// to hold API keys may be read, so a saved config can never read an arbitrary variable of
/// the server's environment.
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

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
}
