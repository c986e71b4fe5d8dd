//! API keys as a domain: validating a create or update request, minting a key, and the key
//! object in the shape AstrBot's clients read. Used by both the HTTP routes and the CLI, so
//! the two can never disagree on a rule or a message.
//!
//! Beyond AstrBot, a key may be bound to a bot (a config profile, decision 15), which makes
//! its daily limit default to Astroworld's 1,000, and may carry a `webhook_url` (decision
//! 16). Its signing secret is derived from the server's MAC key and a stored nonce
//! (`webhooks::webhook_secret`), so it is never stored and is shown only when a nonce is
//! made: at the first `webhook_url`, or on rotation.

use rusqlite::Connection;
use serde_json::{Value, json};

use crate::auth::{DEFAULT_SCOPES, SUB_SCOPES, is_valid_scope, scope_includes};
use crate::config::{self, BotLookup};
use crate::db::{self, KeyRow};
use crate::error::ApiError;
use crate::secrets::{self, KEY_PREFIX_LEN, MacKey};
use crate::timefmt::{MICROS_PER_DAY, iso};
use crate::webhooks;

pub const DEFAULT_NAME: &str = "Untitled API Key";
/// A lifetime beyond this many days is refused rather than overflowing the clock.
const MAX_EXPIRES_IN_DAYS: i64 = 36_500;
/// A bound key's daily limit when none is given: Astroworld's quota.
pub const BOUND_KEY_DAILY_LIMIT: i64 = 1000;
/// The longest `webhook_url` accepted.
const MAX_WEBHOOK_URL: usize = 2048;

/// A create request after type checks, before the rules.
#[derive(Debug, Default, Clone)]
pub struct NewKey {
    pub name: Option<String>,
    pub scopes: Option<Vec<String>>,
    pub expires_in_days: Option<i64>,
    pub daily_limit: Option<i64>,
    pub bot_id: Option<String>,
    pub webhook_url: Option<String>,
}

/// An update request after type checks: `None` leaves a field as it is, `Some(None)`
/// clears it (the server default limit, no expiry, unbound, no webhook).
#[derive(Debug, Default, Clone, PartialEq)]
pub struct KeyPatch {
    pub name: Option<String>,
    pub daily_limit: Option<Option<i64>>,
    pub expires_in_days: Option<Option<i64>>,
    pub bot_id: Option<Option<String>>,
    pub webhook_url: Option<Option<String>>,
}

/// A stored key and, when this call made one, its webhook signing secret (shown once).
pub struct Saved {
    pub row: KeyRow,
    pub webhook_secret: Option<String>,
}

/// The name as stored: trimmed, `Untitled API Key` when empty. The length bound holds for
/// the name as sent, as the document states it, so padding cannot stretch it.
fn checked_name(name: Option<&str>) -> Result<String, ApiError> {
    if name.is_some_and(|n| n.chars().count() > 255) {
        return Err(ApiError::bad_request("name must be at most 255 characters"));
    }
    Ok(name.map(str::trim).filter(|n| !n.is_empty()).unwrap_or(DEFAULT_NAME).to_owned())
}

/// The expiry `days` from `now`, checked so that no client number overflows the clock.
fn checked_expiry(days: Option<i64>, now: i64) -> Result<Option<i64>, ApiError> {
    match days {
        None => Ok(None),
        Some(days) if days <= 0 => Err(ApiError::bad_request("expires_in_days must be greater than 0")),
        Some(days) if days > MAX_EXPIRES_IN_DAYS => {
            Err(ApiError::bad_request(format!("expires_in_days must be at most {MAX_EXPIRES_IN_DAYS}")))
        }
        Some(days) => Ok(Some(now + days * MICROS_PER_DAY)),
    }
}

fn checked_limit(limit: Option<i64>) -> Result<Option<i64>, ApiError> {
    match limit {
        Some(n) if n < 0 => Err(ApiError::bad_request("daily_limit must be 0 or greater")),
        other => Ok(other),
    }
}

/// A webhook URL as stored: http or https with a host, no credentials, no spaces, at most
/// 2,048 characters. Only the admin sets it; it never receives anything but signed events.
pub fn check_webhook_url(url: &str) -> Result<String, ApiError> {
    let bad = |why: &str| ApiError::bad_request(format!("webhook_url {why}"));
    if url.len() > MAX_WEBHOOK_URL {
        return Err(bad(&format!("must be at most {MAX_WEBHOOK_URL} characters")));
    }
    if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(bad("must not contain spaces or control characters"));
    }
    let uri: ureq::http::Uri = url.parse().map_err(|_| bad("must be an http or https URL"))?;
    if !matches!(uri.scheme_str(), Some("http" | "https")) {
        return Err(bad("must be an http or https URL"));
    }
    let Some(authority) = uri.authority() else { return Err(bad("must name a host")) };
    if authority.as_str().contains('@') {
        return Err(bad("must not carry credentials"));
    }
    let host = authority.host();
    if host.is_empty() {
        return Err(bad("must name a host"));
    }
    // A name or an IPv4 address, or an IPv6 address in brackets: the HTTP parser lets
    // more through (`0*`), which no receiver can be.
    let plain = |h: &str| h.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-');
    let ipv6 = |h: &str| {
        h.strip_prefix('[').and_then(|h| h.strip_suffix(']')).is_some_and(|inner| {
            !inner.is_empty() && inner.bytes().all(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.')
        })
    };
    if !plain(host) && !ipv6(host) {
        return Err(bad(
            "must name a host (letters, digits, dots and dashes, or an IPv6 address in brackets)",
        ));
    }
    let after_host = &authority.as_str()[authority.as_str().rfind(host).map_or(0, |i| i + host.len())..];
    if !after_host.is_empty() && uri.port_u16().is_none() {
        return Err(bad("has a port that is not a number from 0 to 65535"));
    }
    Ok(url.to_owned())
}

/// The profile id a bot id names, or the 400 a key body gets for it.
fn checked_bot(conn: &Connection, bot_id: &str) -> Result<String, ApiError> {
    match config::find_bot(conn, bot_id)? {
        BotLookup::Found(id) => Ok(id),
        BotLookup::Missing => Err(ApiError::bad_request(format!("bot_id not found: {}", bot_id.trim()))),
        BotLookup::Ambiguous => {
            Err(ApiError::bad_request(format!("bot_id is ambiguous, use the profile id: {}", bot_id.trim())))
        }
    }
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

/// Applies the rules and stores a new key. Returns the row, the raw key (which exists
/// nowhere else after this call returns) and the webhook secret if a `webhook_url` is set.
pub fn create(
    conn: &mut Connection,
    mac: &MacKey,
    input: &NewKey,
    created_by: &str,
    now: i64,
) -> Result<(Saved, String), ApiError> {
    let name = checked_name(input.name.as_deref())?;
    let scopes = normalize_scopes(input.scopes.as_deref())?;
    let expires_at = checked_expiry(input.expires_in_days, now)?;
    let daily_limit = checked_limit(input.daily_limit)?;
    let webhook_url = input.webhook_url.as_deref().map(check_webhook_url).transpose()?;
    let raw = secrets::new_api_key();
    let key_id = uuid::Uuid::new_v4().to_string();
    let webhook_nonce = webhook_url.as_ref().map(|_| webhooks::new_nonce());
    let key_hash = mac.mac(&raw);
    let row = db::write_tx(conn, |tx| {
        // Resolved inside the transaction, so the profile cannot vanish in between.
        let bot_id = input.bot_id.as_deref().map(|b| checked_bot(tx, b)).transpose()?;
        let row = KeyRow {
            key_id: key_id.clone(),
            name,
            key_prefix: raw[..KEY_PREFIX_LEN].to_owned(),
            scopes: Some(scopes),
            created_by: created_by.to_owned(),
            created_at: now,
            updated_at: now,
            last_used_at: None,
            expires_at,
            revoked_at: None,
            daily_limit: daily_limit.or(bot_id.as_ref().map(|_| BOUND_KEY_DAILY_LIMIT)),
            bot_id,
            webhook_url,
            webhook_nonce,
        };
        db::insert_key(tx, &row, &key_hash)?;
        Ok::<_, ApiError>(row)
    })?;
    let webhook_secret = row.webhook_nonce.as_deref().map(|n| webhooks::webhook_secret(mac, &row.key_id, n));
    Ok((Saved { row, webhook_secret }, raw))
}

/// Applies an update to a key, in one transaction. `None` if there is no such key. Binding
/// a key whose limit is the server default gives it Astroworld's 1,000 unless the same
/// update sets a limit; the first `webhook_url` makes the signing secret.
pub fn update(
    conn: &mut Connection,
    mac: &MacKey,
    key_id: &str,
    patch: &KeyPatch,
    now: i64,
) -> Result<Option<Saved>, ApiError> {
    let name = patch.name.as_deref().map(|n| checked_name(Some(n))).transpose()?;
    let expires_at = patch.expires_in_days.map(|d| checked_expiry(d, now)).transpose()?;
    let daily_limit = patch.daily_limit.map(checked_limit).transpose()?;
    let webhook_url = match &patch.webhook_url {
        Some(Some(url)) => Some(Some(check_webhook_url(url)?)),
        Some(None) => Some(None),
        None => None,
    };
    let saved = db::write_tx(conn, |tx| {
        let Some(mut row) = db::get_key(tx, key_id)? else { return Ok(None) };
        let bot_id = match &patch.bot_id {
            Some(Some(b)) => Some(Some(checked_bot(tx, b)?)),
            Some(None) => Some(None),
            None => None,
        };
        if let Some(name) = name {
            row.name = name;
        }
        if let Some(expires_at) = expires_at {
            row.expires_at = expires_at;
        }
        if let Some(limit) = daily_limit {
            row.daily_limit = limit;
        }
        if let Some(bot_id) = bot_id {
            if bot_id.is_some() && row.bot_id.is_none() && daily_limit.is_none() && row.daily_limit.is_none()
            {
                row.daily_limit = Some(BOUND_KEY_DAILY_LIMIT);
            }
            row.bot_id = bot_id;
        }
        let mut made_nonce = false;
        if let Some(url) = webhook_url {
            if url.is_some() && row.webhook_nonce.is_none() {
                row.webhook_nonce = Some(webhooks::new_nonce());
                made_nonce = true;
            }
            row.webhook_url = url;
        }
        row.updated_at = now;
        db::update_key(tx, &row)?;
        let webhook_secret = match (made_nonce, row.webhook_nonce.as_deref()) {
            (true, Some(nonce)) => Some(webhooks::webhook_secret(mac, &row.key_id, nonce)),
            _ => None,
        };
        Ok::<_, ApiError>(Some(Saved { row, webhook_secret }))
    })?;
    Ok(saved)
}

/// A new signing secret for a key's webhook; the old one stops verifying at once (events
/// are signed when sent, so queued ones get the new secret too). `None` if no such key.
pub fn rotate_webhook_secret(
    conn: &mut Connection,
    mac: &MacKey,
    key_id: &str,
    now: i64,
) -> Result<Option<String>, ApiError> {
    db::write_tx(conn, |tx| {
        let Some(mut row) = db::get_key(tx, key_id)? else { return Ok(None) };
        let nonce = webhooks::new_nonce();
        let secret = webhooks::webhook_secret(mac, &row.key_id, &nonce);
        row.webhook_nonce = Some(nonce);
        row.updated_at = now;
        db::update_key(tx, &row)?;
        Ok(Some(secret))
    })
}

/// The key object, fields in AstrBot's order, then ours: `daily_limit`, `bot_id`,
/// `webhook_url` and `usage_today` (requests counted this UTC day).
pub fn to_json(row: &KeyRow, now: i64, usage_today: i64) -> Value {
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
        "bot_id": row.bot_id,
        "webhook_url": row.webhook_url,
        "usage_today": usage_today,
    })
}

/// An update's answer: the key object, with the webhook secret when this call made it.
pub fn saved_json(saved: &Saved, now: i64, usage_today: i64) -> Value {
    let mut value = to_json(&saved.row, now, usage_today);
    if let (Value::Object(map), Some(secret)) = (&mut value, &saved.webhook_secret) {
        map.insert("webhook_secret".into(), Value::String(secret.clone()));
    }
    value
}

/// The create response: the key object (with the webhook secret, if any) and the raw key
/// as its last field.
pub fn created_json(saved: &Saved, raw: &str, now: i64) -> Value {
    let mut value = saved_json(saved, now, 0);
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
    fn webhook_urls_name_a_real_host_and_are_taken_as_sent() {
        for ok in [
            "https://example.com/hooks/a?x=1",
            "HTTP://10.0.0.1:8080",
            "http://[::1]:9000/h",
            "http://a-b.c.",
        ] {
            assert_eq!(check_webhook_url(ok).unwrap(), ok, "{ok}");
        }
        for bad in [
            "HTTP://0*",
            " http://a",
            "http://a ",
            "ftp://a",
            "http://u:p@a",
            "http://a:99999",
            "http://a:",
            "http://[zz]",
        ] {
            assert!(check_webhook_url(bad).is_err(), "{bad}");
        }
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
