//! API keys as a domain: validating a create request, minting a key, and the key object
//! in the shape AstrBot's clients read. Used by both the HTTP routes and the CLI, so the
//! two can never disagree on a rule or a message.

use rusqlite::Connection;
use serde_json::{Value, json};

use crate::auth::{DEFAULT_SCOPES, SUB_SCOPES, is_valid_scope, scope_includes};
use crate::db::{self, KeyRow};
use crate::error::ApiError;
use crate::secrets::{self, KEY_PREFIX_LEN, MacKey};
use crate::timefmt::{MICROS_PER_DAY, iso};

pub const DEFAULT_NAME: &str = "Untitled API Key";
/// A lifetime beyond this many days is refused rather than overflowing the clock.
const MAX_EXPIRES_IN_DAYS: i64 = 36_500;

/// A create request after type checks, before the rules.
#[derive(Debug, Default, Clone)]
pub struct NewKey {
    pub name: Option<String>,
    pub scopes: Option<Vec<String>>,
    pub expires_in_days: Option<i64>,
    pub daily_limit: Option<i64>,
}

/// Every scope a key may carry, the defaults first: what `key create` lists when
/// `--scopes` is missing, so the list cannot drift from the one `normalize_scopes` checks.
pub fn valid_scopes() -> Vec<&'static str> {
    DEFAULT_SCOPES.iter().chain(SUB_SCOPES.iter()).copied().collect()
}

/// AstrBot's scope normalisation: every scope valid (else `Invalid scopes: ...` listing the
/// bad ones in input order), sub-scopes only with their parent, then the valid scopes in
/// input order followed by their includes, without duplicates.
pub fn normalize_scopes(scopes: Option<&[String]>) -> Result<Vec<String>, ApiError> {
    let Some(scopes) = scopes else {
        return Ok(DEFAULT_SCOPES.iter().map(|s| s.to_string()).collect());
    };
    let invalid: Vec<&str> = scopes.iter().map(String::as_str).filter(|s| !is_valid_scope(s)).collect();
    if !invalid.is_empty() {
        return Err(ApiError::bad_request(format!("Invalid scopes: {}", invalid.join(", "))));
    }
    if scopes.is_empty() {
        return Err(ApiError::bad_request("At least one valid scope is required"));
    }
    let has = |s: &str| scopes.iter().any(|x| x == s);
    if has("config:edit_admin") && !has("config") {
        return Err(ApiError::bad_request("config:edit_admin requires the config scope"));
    }
    if has("chat:admin") && !has("chat") {
        return Err(ApiError::bad_request("chat:admin requires the chat scope"));
    }
    let mut out: Vec<String> = Vec::new();
    let implied = scopes.iter().flat_map(|s| scope_includes(s).iter().map(|i| i.to_string()));
    for scope in scopes.iter().cloned().chain(implied) {
        if !out.contains(&scope) {
            out.push(scope);
        }
    }
    Ok(out)
}

/// Applies the rules and stores a new key. Returns the row and the raw key, which exists
/// nowhere else after this call returns.
pub fn create(
    conn: &mut Connection,
    mac: &MacKey,
    input: &NewKey,
    created_by: &str,
    now: i64,
) -> Result<(KeyRow, String), ApiError> {
    let name = input.name.as_deref().map(str::trim).filter(|n| !n.is_empty()).unwrap_or(DEFAULT_NAME);
    if name.chars().count() > 255 {
        return Err(ApiError::bad_request("name must be at most 255 characters"));
    }
    let scopes = normalize_scopes(input.scopes.as_deref())?;
    let expires_at = match input.expires_in_days {
        None => None,
        Some(days) if days <= 0 => {
            return Err(ApiError::bad_request("expires_in_days must be greater than 0"));
        }
        Some(days) if days > MAX_EXPIRES_IN_DAYS => {
            return Err(ApiError::bad_request(format!(
                "expires_in_days must be at most {MAX_EXPIRES_IN_DAYS}"
            )));
        }
        Some(days) => Some(now + days * MICROS_PER_DAY),
    };
    if input.daily_limit.is_some_and(|n| n < 0) {
        return Err(ApiError::bad_request("daily_limit must be 0 or greater"));
    }
    let raw = secrets::new_api_key();
    let row = KeyRow {
        key_id: uuid::Uuid::new_v4().to_string(),
        name: name.to_owned(),
        key_prefix: raw[..KEY_PREFIX_LEN].to_owned(),
        scopes: Some(scopes),
        created_by: created_by.to_owned(),
        created_at: now,
        updated_at: now,
        last_used_at: None,
        expires_at,
        revoked_at: None,
        daily_limit: input.daily_limit,
    };
    let key_hash = mac.mac(&raw);
    db::write_tx(conn, |tx| db::insert_key(tx, &row, &key_hash))?;
    Ok((row, raw))
}

/// The key object, fields in AstrBot's order, then our `daily_limit`.
pub fn to_json(row: &KeyRow, now: i64) -> Value {
    let time = |t: Option<i64>| t.map(iso).map_or(Value::Null, Value::String);
    json!({
        "key_id": row.key_id,
        "name": row.name,
        "key_prefix": row.key_prefix,
        "scopes": row.scopes.clone().unwrap_or_default(),
        "created_by": row.created_by,
        "created_at": iso(row.created_at),
        "updated_at": iso(row.updated_at),
        "last_used_at": time(row.last_used_at),
        "expires_at": time(row.expires_at),
        "revoked_at": time(row.revoked_at),
        "is_revoked": row.revoked_at.is_some(),
        "is_expired": row.expires_at.is_some_and(|t| t < now),
        "daily_limit": row.daily_limit,
    })
}

/// The create response: the key object with the raw key as its last field.
pub fn created_json(row: &KeyRow, raw: &str, now: i64) -> Value {
    let mut value = to_json(row, now);
    if let Value::Object(map) = &mut value {
        map.insert("api_key".into(), Value::String(raw.to_owned()));
    }
    value
}

#[cfg(test)]
mod tests {
    use super::*;

    fn norm(v: &[&str]) -> Result<Vec<String>, String> {
        let v: Vec<String> = v.iter().map(|s| s.to_string()).collect();
        normalize_scopes(Some(&v)).map_err(|e| e.message())
    }

    #[test]
    fn scope_rules_as_astrbot() {
        assert_eq!(norm(&["config", "bot", "config"]).unwrap(), ["config", "bot", "provider"]);
        assert_eq!(
            norm(&["chat", "chat:admin", "config", "file", "im"]).unwrap(),
            ["chat", "chat:admin", "config", "file", "im", "bot", "provider"]
        );
        assert_eq!(norm(&["nope", "chat", "system"]).unwrap_err(), "Invalid scopes: nope, system");
        assert_eq!(norm(&["*"]).unwrap_err(), "Invalid scopes: *");
        assert_eq!(norm(&[]).unwrap_err(), "At least one valid scope is required");
        assert_eq!(norm(&["config:edit_admin"]).unwrap_err(), "config:edit_admin requires the config scope");
        assert_eq!(norm(&["chat:admin"]).unwrap_err(), "chat:admin requires the chat scope");
        assert_eq!(
            norm(&["chat:admin", "config:edit_admin"]).unwrap_err(),
            "config:edit_admin requires the config scope",
            "checked in AstrBot's order"
        );
        assert_eq!(normalize_scopes(None).unwrap().len(), 11);
        let all: Vec<String> = valid_scopes().iter().map(|s| s.to_string()).collect();
        assert_eq!(all.len(), 13);
        assert!(normalize_scopes(Some(&all)).is_ok(), "every listed scope is accepted");
    }
}
