//! Who is calling: credential extraction, API-key verification, scopes, admin tokens, and
//! the rules around the admin's login.
//!
//! The carriers are read in AstrBot's order, so a client that sends several gets the same
//! answer from us as from AstrBot: `Authorization: Bearer`, then
//! `Authorization: ApiKey`, `?api_key=`, `?key=`, `X-API-Key`, then the dashboard cookie.
//! A bearer token is first tried as an admin token and, failing that, as an API key.
//! Verified keys are cached by their MAC; the cache is dropped whenever the keys table
//! changes (our own writes at once, the CLI's within the poll interval of `app`'s flusher).
//!
//! The cookie is the one carrier a browser attaches by itself, so it is the one a foreign
//! page could ride: [`refuse_cross_site_cookie`] refuses a state-changing request whose
//! [`foreign_origin`] names another site. [`check_new_password`] is the one rule for a new
//! admin password, [`LoginThrottle`] limits login attempts per client address, and
//! [`DEFAULT_ADMIN`] is the administrator's name on the first start.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, RwLock};

use crate::db::KeyRow;
use crate::error::ApiError;
use crate::http::Request;
use crate::timefmt::MICROS_PER_SEC;

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

/// Reads the credential of a request in AstrBot's order.
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
    match extract_dashboard_credential(req) {
        Credential::Bearer(token) | Credential::Cookie(token) | Credential::ApiKey(token) => Some(token),
        Credential::None => None,
    }
}

/// The dashboard credential and its carrier: `Bearer` from the header, else `Cookie`.
pub fn extract_dashboard_credential(req: &Request<'_>) -> Credential {
    let authorization = req.header("authorization").map(str::trim).unwrap_or("");
    if let Some(token) = authorization.strip_prefix("Bearer ").map(str::trim)
        && !token.is_empty()
    {
        return Credential::Bearer(token.to_owned());
    }
    match req.cookie(DASHBOARD_COOKIE) {
        Some(token) if !token.is_empty() => Credential::Cookie(token.to_owned()),
        _ => Credential::None,
    }
}

/// Whether a method may change state: everything but GET, HEAD and OPTIONS.
pub fn is_state_changing(method: &str) -> bool {
    !matches!(method, "GET" | "HEAD" | "OPTIONS")
}

/// Whether the request names a page of another site as its sender: an `Origin` that is not
/// this server (`null`, the opaque origin of sandboxed frames and some redirects, is
/// foreign), or, when a browser sent no `Origin`, a `Referer` from elsewhere. A request with
/// neither comes from curl or a same-origin navigation of an old browser and is not foreign.
///
/// "This server" is the `Host` the request was sent to. A server behind a TLS proxy cannot
/// know its own scheme, so `http` and `https` both match and the port defaults to the
/// origin's scheme: `https://example.com` matches `Host: example.com` and
/// `Host: example.com:443`, `http://127.0.0.1:6185` matches `Host: 127.0.0.1:6185`.
pub fn foreign_origin(req: &Request<'_>) -> bool {
    let sender = match (req.header("origin"), req.header("referer")) {
        (Some(origin), _) => origin,
        (None, Some(referer)) => referer,
        (None, None) => return false,
    };
    let Some(host) = req.header("host") else { return true };
    !same_origin(sender.trim(), host.trim())
}

/// Whether the origin (or the start of a URL) `sender` names the authority `host`.
fn same_origin(sender: &str, host: &str) -> bool {
    let Some((scheme, rest)) = sender.split_once("://") else { return false };
    let default_port = match scheme.to_ascii_lowercase().as_str() {
        "http" => "80",
        "https" => "443",
        _ => return false,
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    // Userinfo has no place in an origin; a URL carrying it is not taken for ours.
    if authority.contains('@') || authority.is_empty() {
        return false;
    }
    let split = |a: &str| -> (String, String) {
        // The port is what follows the last colon outside an IPv6 literal's brackets.
        match a.rsplit_once(':') {
            Some((h, p)) if !p.contains(']') && !h.is_empty() => (h.to_ascii_lowercase(), p.to_owned()),
            _ => (a.to_ascii_lowercase(), default_port.to_owned()),
        }
    };
    split(authority) == split(host)
}

/// Refuses a state-changing request carried by the dashboard cookie from another site's
/// page: the browser attaches the cookie to any request a page makes, so only the sender
/// tells a forged request from the dashboard's own. Header and query carriers are never
/// attached by a browser on its own and are not checked.
pub fn refuse_cross_site_cookie(req: &Request<'_>) -> Result<(), ApiError> {
    if is_state_changing(&req.method) && foreign_origin(req) {
        return Err(ApiError::Forbidden("Cross-origin request refused".into()));
    }
    Ok(())
}

/// The administrator's username when none is given, as in AstrBot.
pub const DEFAULT_ADMIN: &str = "astrbot";

/// Attempts allowed per address per window; a success clears the address.
const MAX_ATTEMPTS: usize = 5;
const WINDOW_MICROS: i64 = 60 * MICROS_PER_SEC;

/// Recent login attempts per client address, counted when they start. Time is an argument.
#[derive(Debug, Default)]
pub struct LoginThrottle {
    attempts: HashMap<IpAddr, Vec<i64>>,
}

impl LoginThrottle {
    /// Checks and counts an attempt in one step: `Ok(n)` with the attempts of this address
    /// in the window, this one included, or `Err(retry_after_secs)` when it has used them
    /// up (and then nothing is counted). Attempts still running count, so no more than
    /// [`MAX_ATTEMPTS`] hashes a minute run for one address however many arrive at once.
    pub fn begin(&mut self, ip: IpAddr, now: i64) -> Result<usize, i64> {
        if self.attempts.len() > 10_000 {
            self.attempts.retain(|_, t| t.iter().any(|t| now - t < WINDOW_MICROS));
        }
        let times = self.attempts.entry(ip).or_default();
        times.retain(|t| now - t < WINDOW_MICROS);
        if times.len() >= MAX_ATTEMPTS {
            let oldest = times.iter().min().copied().unwrap_or(now);
            return Err(((oldest + WINDOW_MICROS - now) / MICROS_PER_SEC).max(1));
        }
        times.push(now);
        Ok(times.len())
    }

    /// A right password: the address starts afresh (its failed attempts were the admin's).
    pub fn succeed(&mut self, ip: IpAddr) {
        self.attempts.remove(&ip);
    }
}

/// The rule for a new admin password, wherever one is set (the first start's
/// `ASTRBOT_ADMIN_PASSWORD`, `astrbot admin password`).
pub fn check_new_password(password: &str) -> Result<(), String> {
    let n = password.chars().count();
    if n < 8 {
        return Err("the password must be at least 8 characters".into());
    }
    // Every login hashes what it is sent with argon2: a bound keeps that cost small.
    if n > 1024 {
        return Err("the password must be at most 1024 characters".into());
    }
    Ok(())
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
    /// The bot (config profile) the key may chat as, if bound.
    pub bot_id: Option<String>,
    /// Whether the key's requests are mirrored to a webhook.
    pub mirrored: bool,
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
            bot_id: row.bot_id.clone(),
            mirrored: row.webhook_url.is_some(),
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
    fn foreign_origins() {
        let foreign = |headers: &[(&str, &str)]| {
            let mut b: &[u8] = b"";
            foreign_origin(&req("/", headers, &mut b))
        };
        let host = ("host", "127.0.0.1:6185");
        assert!(!foreign(&[host]), "no Origin, no Referer: curl");
        assert!(!foreign(&[host, ("origin", "http://127.0.0.1:6185")]));
        assert!(!foreign(&[host, ("referer", "http://127.0.0.1:6185/api/v1/docs?x=1")]));
        assert!(foreign(&[host, ("origin", "https://evil.example")]));
        assert!(foreign(&[host, ("origin", "null")]));
        assert!(foreign(&[host, ("origin", "http://127.0.0.1:6186")]), "another port");
        assert!(foreign(&[host, ("origin", "http://127.0.0.1")]), "default port 80");
        assert!(foreign(&[host, ("referer", "https://evil.example/page")]));
        assert!(foreign(&[host, ("referer", "http://127.0.0.1:6185@evil.example/")]), "userinfo");
        assert!(foreign(&[host, ("origin", "file://")]));
        assert!(foreign(&[("origin", "http://127.0.0.1:6185")]), "no Host to compare with");
        let proxied = ("host", "Bot.Example.com");
        assert!(!foreign(&[proxied, ("origin", "https://bot.example.com")]), "behind a TLS proxy");
        assert!(!foreign(&[("host", "bot.example.com:443"), ("origin", "https://bot.example.com")]));
        assert!(foreign(&[proxied, ("origin", "https://bot.example.com.evil.example")]));
        assert!(!foreign(&[("host", "[::1]:6185"), ("origin", "http://[::1]:6185")]));
        assert!(foreign(&[("host", "[::1]:6185"), ("origin", "http://[::1]")]));
        assert!(is_state_changing("POST") && is_state_changing("DELETE") && !is_state_changing("GET"));
    }

    #[test]
    fn five_attempts_a_minute_then_429_until_the_window_passes() {
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        let other: IpAddr = "10.0.0.2".parse().unwrap();
        let mut t = LoginThrottle::default();
        for i in 0..5 {
            assert_eq!(t.begin(ip, i * MICROS_PER_SEC), Ok(i as usize + 1));
        }
        assert_eq!(t.begin(ip, 10 * MICROS_PER_SEC), Err(50));
        assert_eq!(t.begin(other, 10 * MICROS_PER_SEC), Ok(1), "per address");
        assert_eq!(t.begin(ip, 60 * MICROS_PER_SEC), Ok(5), "the window slides: the first has left");
        assert_eq!(t.begin(ip, 60 * MICROS_PER_SEC), Err(1));
        t.succeed(ip);
        assert_eq!(t.begin(ip, 61 * MICROS_PER_SEC), Ok(1), "a success clears the address");
    }

    #[test]
    fn login_throttle_race_attempts_count_before_they_finish() {
        // The bug: 500 concurrent wrong logins all passed the check, because each was
        // counted only after its hash. Attempts still running must count: with none
        // finished, the sixth at the same instant is refused.
        let ip: IpAddr = "10.0.0.3".parse().unwrap();
        let mut t = LoginThrottle::default();
        let now = 1_000 * MICROS_PER_SEC;
        let verdicts: Vec<_> = (0..40).map(|_| t.begin(ip, now)).collect();
        assert_eq!(verdicts.iter().filter(|v| v.is_ok()).count(), 5);
        assert!(verdicts[5..].iter().all(|v| *v == Err(60)));
    }

    #[test]
    fn new_passwords_need_eight_characters() {
        assert!(check_new_password("1234567").is_err());
        assert!(check_new_password("密码密码密码密码").is_ok(), "characters, not bytes");
        assert!(check_new_password("12345678").is_ok());
        assert!(check_new_password(&"x".repeat(1024)).is_ok());
        assert!(check_new_password(&"x".repeat(1025)).is_err(), "every login hashes it");
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
            bot_id: None,
            mirrored: false,
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
