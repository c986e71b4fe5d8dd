//! Who is calling: credential extraction, API-key verification, scopes, admin tokens.
//!
//! The carriers are read in AstrBot's order (reference 2.1): `Authorization: Bearer`, then
//! `Authorization: ApiKey`, `?api_key=`, `?key=`, `X-API-Key`, then the dashboard cookie.
//! A bearer token is first tried as an admin token and, failing that, as an API key.
//! Verified keys are cached by their MAC; the cache is dropped whenever the keys table
//! changes (our own writes at once, the CLI's within the poll interval of `app`'s flusher).

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use crate::db::KeyRow;
use crate::http::Request;

/// The default scope set of a new key, in AstrBot's order.
pub const DEFAULT_SCOPES: [&str; 11] =
    ["bot", "provider", "persona", "im", "config", "chat", "data", "file", "plugin", "mcp", "skill"];

/// Sub-scopes a key may carry besides the defaults.
pub const SUB_SCOPES: [&str; 2] = ["chat:admin", "config:edit_admin"];

/// The dashboard cookie AstrBot's UI sends.
pub const DASHBOARD_COOKIE: &str = "astrbot_dashboard_jwt";

/// Scopes implied by holding a scope (`config` gives `bot` and `provider`).
pub fn scope_includes(scope: &str) -> &'static [&'static str] {
    match scope {
        "config" => &["bot", "provider"],
        _ => &[],
    }
}

/// Whether `scope` can be put on a key.
pub fn is_valid_scope(scope: &str) -> bool {
    DEFAULT_SCOPES.contains(&scope) || SUB_SCOPES.contains(&scope)
}

/// Whether a key holding `held` may call a route needing `required`.
pub fn scopes_allow(held: &[String], required: &str) -> bool {
    held.iter().any(|s| s == "*" || s == required || scope_includes(s).contains(&required))
}

/// Where a credential was found.
#[derive(Debug, PartialEq, Eq)]
pub enum Credential {
    /// `Authorization: Bearer <token>`: an admin token, else an API key.
    Bearer(String),
    /// An API key from `Authorization: ApiKey`, `?api_key=`, `?key=` or `X-API-Key`.
    ApiKey(String),
    /// The dashboard cookie: an admin token only.
    Cookie(String),
    None,
}

/// Reads the credential of a request in AstrBot's order (reference 2.1).
pub fn extract_credential(req: &Request<'_>) -> Credential {
    let authorization = req.header("authorization").map(str::trim).unwrap_or("");
    if let Some(token) = authorization.strip_prefix("Bearer ") {
        let token = token.trim();
        return if token.is_empty() { Credential::None } else { Credential::Bearer(token.to_owned()) };
    }
    let carriers = [
        authorization.strip_prefix("ApiKey "),
        req.query_param("api_key"),
        req.query_param("key"),
        req.header("x-api-key"),
    ];
    // An empty carrier is skipped; a whitespace-only one ends the search with no key.
    if let Some(value) = carriers.into_iter().flatten().find(|v| !v.is_empty()) {
        let key = value.trim();
        if !key.is_empty() {
            return Credential::ApiKey(key.to_owned());
        }
    }
    match req.cookie(DASHBOARD_COOKIE) {
        Some(token) if !token.is_empty() => Credential::Cookie(token.to_owned()),
        _ => Credential::None,
    }
}

/// Reads the dashboard credential of a legacy `/api/*` route: bearer header or cookie.
pub fn extract_dashboard_token(req: &Request<'_>) -> Option<String> {
    let authorization = req.header("authorization").map(str::trim).unwrap_or("");
    if let Some(token) = authorization.strip_prefix("Bearer ").map(str::trim)
        && !token.is_empty()
    {
        return Some(token.to_owned());
    }
    req.cookie(DASHBOARD_COOKIE).filter(|t| !t.is_empty()).map(str::to_owned)
}

/// The authenticated caller.
#[derive(Debug, Clone)]
pub enum Identity {
    /// The administrator, by admin token: every scope.
    Admin(String),
    /// A developer API key.
    Key(Arc<ActiveKey>),
}

impl Identity {
    /// The name AstrBot records as the actor: the admin's name or `api_key:<key_id>`.
    pub fn username(&self) -> String {
        match self {
            Identity::Admin(name) => name.clone(),
            Identity::Key(k) => format!("api_key:{}", k.key_id),
        }
    }
}

/// What a request needs to know about a verified key.
#[derive(Debug)]
pub struct ActiveKey {
    pub key_id: String,
    /// The stored scopes, or the defaults for a legacy row without a list.
    pub scopes: Vec<String>,
    pub expires_at: Option<i64>,
    /// `None`: the server default; `Some(0)`: unlimited.
    pub daily_limit: Option<i64>,
}

impl ActiveKey {
    pub fn from_row(row: &KeyRow) -> ActiveKey {
        ActiveKey {
            key_id: row.key_id.clone(),
            scopes: row
                .scopes
                .clone()
                .unwrap_or_else(|| DEFAULT_SCOPES.iter().map(|s| s.to_string()).collect()),
            expires_at: row.expires_at,
            daily_limit: row.daily_limit,
        }
    }

    /// The effective daily limit given the server default; `None` is unlimited.
    pub fn effective_limit(&self, server_default: Option<i64>) -> Option<i64> {
        match self.daily_limit {
            Some(0) => None,
            Some(n) => Some(n),
            None => server_default.filter(|n| *n > 0),
        }
    }
}

/// Verified keys by MAC. Entries die with `clear` (any change to the keys table) or when
/// the key's own expiry passes.
#[derive(Default)]
pub struct KeyCache {
    map: RwLock<HashMap<[u8; 32], Arc<ActiveKey>>>,
}

impl KeyCache {
    pub fn get(&self, mac: &[u8; 32], now: i64) -> Option<Arc<ActiveKey>> {
        let map = self.map.read().unwrap_or_else(|e| e.into_inner());
        let key = map.get(mac)?;
        if key.expires_at.is_some_and(|at| at <= now) {
            return None;
        }
        Some(key.clone())
    }

    pub fn insert(&self, mac: [u8; 32], key: Arc<ActiveKey>) {
        let mut map = self.map.write().unwrap_or_else(|e| e.into_inner());
        // A bound against unbounded growth; real deployments have a handful of keys.
        if map.len() >= 10_000 {
            map.clear();
        }
        map.insert(mac, key);
    }

    pub fn clear(&self) {
        self.map.write().unwrap_or_else(|e| e.into_inner()).clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req<'a>(url: &str, headers: &[(&str, &str)], body: &'a mut &'static [u8]) -> Request<'a> {
        let headers = headers.iter().map(|(n, v)| (n.to_string(), v.to_string())).collect();
        Request::new("GET".into(), url, headers, None, Some(0), body)
    }

    #[test]
    fn carriers_in_astrbot_order() {
        let mut b: &[u8] = b"";
        let both = [("authorization", "Bearer abk_a"), ("x-api-key", "abk_b")];
        assert_eq!(
            extract_credential(&req("/?api_key=abk_c", &both, &mut b)),
            Credential::Bearer("abk_a".into())
        );
        let mut b: &[u8] = b"";
        let r = req(
            "/?api_key=abk_c&key=abk_d",
            &[("authorization", "ApiKey  abk_a "), ("x-api-key", "abk_b")],
            &mut b,
        );
        assert_eq!(extract_credential(&r), Credential::ApiKey("abk_a".into()));
        let mut b: &[u8] = b"";
        let r = req("/?api_key=&key=abk_d", &[("x-api-key", "abk_b")], &mut b);
        assert_eq!(extract_credential(&r), Credential::ApiKey("abk_d".into()), "empty carrier skipped");
        let mut b: &[u8] = b"";
        let r = req("/?api_key=%20%20&key=abk_d", &[("x-api-key", "abk_b")], &mut b);
        assert_eq!(extract_credential(&r), Credential::None, "blank carrier stops the search");
        let mut b: &[u8] = b"";
        let r = req("/", &[("authorization", "bearer abk_a")], &mut b);
        assert_eq!(extract_credential(&r), Credential::None, "prefixes are case-sensitive");
        let mut b: &[u8] = b"";
        let r = req("/", &[("authorization", "ApiKey"), ("x-api-key", "abk_b")], &mut b);
        assert_eq!(extract_credential(&r), Credential::ApiKey("abk_b".into()));
        let mut b: &[u8] = b"";
        let r = req("/", &[("cookie", "a=1; astrbot_dashboard_jwt=abt_x")], &mut b);
        assert_eq!(extract_credential(&r), Credential::Cookie("abt_x".into()));
    }

    #[test]
    fn scope_includes_and_wildcard() {
        let held = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(scopes_allow(&held(&["config"]), "bot"));
        assert!(scopes_allow(&held(&["config"]), "provider"));
        assert!(!scopes_allow(&held(&["config"]), "chat"));
        assert!(scopes_allow(&held(&["*"]), "chat"));
        assert!(!scopes_allow(&held(&["bot"]), "config"));
        assert!(!scopes_allow(&held(&["chat:admin"]), "chat"));
    }

    #[test]
    fn limits_and_cache_expiry() {
        let key = |limit| ActiveKey {
            key_id: "k".into(),
            scopes: vec![],
            expires_at: Some(10),
            daily_limit: limit,
        };
        assert_eq!(key(None).effective_limit(Some(5)), Some(5));
        assert_eq!(key(None).effective_limit(None), None);
        assert_eq!(key(Some(0)).effective_limit(Some(5)), None);
        assert_eq!(key(Some(3)).effective_limit(Some(5)), Some(3));
        let cache = KeyCache::default();
        cache.insert([1; 32], Arc::new(key(None)));
        assert!(cache.get(&[1; 32], 9).is_some());
        assert!(cache.get(&[1; 32], 10).is_none(), "an expired key is not served from cache");
        cache.clear();
        assert!(cache.get(&[1; 32], 0).is_none());
    }
}
