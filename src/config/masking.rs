//! Secret masking and restore: no answer carries a stored secret in clear.
//!
//! A value under a secret-named key (`key`, `api_key`, `Authorization`, ...) is shown as
//! its first 3 and last 4 characters ([`redact`]). A masked value sent back in a PUT is
//! replaced by the stored secret ([`restore_secrets`]) only while the document's target is
//! unchanged, which `target` decides; `providers` uses [`strip_secrets`] and
//! [`holds_secret`] to keep a source's key from following a provider elsewhere.

use serde_json::Value;

use super::target::target_change;
use crate::error::ApiError;

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
/// goes where it went before: `change` says what moved the whole document's
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
pub(super) fn strip_secrets(v: &mut Value) {
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
pub(super) fn holds_secret(v: &Value) -> bool {
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

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
}
