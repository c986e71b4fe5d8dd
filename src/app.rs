//! The application's shared state: [`App`] (settings, database, key cache, quotas, login
//! throttle, live chat streams, the webhook outbox) and [`Ctx`], what a handler sees of one request.
//!
//! This module holds state only, so every layer may import it: the pipeline that runs a
//! request lives in `pipeline`, the handlers in `api`. [`App::maintain`] runs on a
//! background thread: it notices key changes made by the CLI and writes the batched key
//! usage.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use crate::auth::{ActiveKey, Identity, KeyCache, LoginThrottle};
use crate::chat::streams::LiveStreams;
use crate::db::{self, Db};
use crate::error::ApiError;
use crate::http::Request;
use crate::mirror::Draft;
use crate::platforms::registry::Platforms;
use crate::quota::DailyQuota;
use crate::secrets::{self, MacKey};
use crate::webhooks::Outbox;

/// Settings of a running server, from the command line and the environment.
#[derive(Debug, Clone)]
pub struct Settings {
    pub data_dir: std::path::PathBuf,
    /// Daily limit of keys whose own limit is null; `None` is unlimited.
    pub default_daily_limit: Option<i64>,
    /// The upload limit of `--max-upload-mb`.
    pub max_upload_bytes: usize,
}

pub struct App {
    pub settings: Settings,
    pub db: Db,
    pub mac: MacKey,
    pub keys: KeyCache,
    pub quota: Mutex<DailyQuota>,
    pub login_throttle: Mutex<LoginThrottle>,
    pub started: Instant,
    /// The OpenAPI document as served, rendered once at start-up by the caller (after the
    /// address is announced, before requests are served): it is made from the route table,
    /// which names the handlers, and state must not import those.
    pub openapi_json: std::sync::OnceLock<Vec<u8>>,
    /// Live chat streams by conversation (session) id, for proactive IM delivery.
    pub streams: LiveStreams,
    /// Each chat run's events, for the chat streams and resumption.
    pub runs: crate::chat::runs::RunLogs,
    /// The webhook mirror's outbox: keyed requests become events here (a memory push).
    pub outbox: Arc<Outbox>,
    /// The running IM platform adapters, by bot id.
    pub platforms: Platforms,
    /// The running MCP servers and their tools.
    pub mcp: crate::mcp::registry::Registry,
    /// The installed plugins, their processes, commands and tools.
    pub plugins: crate::plugins::registry::Registry,
    /// Chunked upload sessions (`uploads`), in memory with bounds.
    pub uploads: crate::uploads::Uploads,
    keys_generation: AtomicI64,
}

impl App {
    pub fn new(settings: Settings, db: Db, mac: MacKey, outbox: Arc<Outbox>) -> Result<App, String> {
        let generation = db
            .conn()
            .and_then(|c| db::keys_generation(&c))
            .map_err(|e| format!("cannot read the database: {e}"))?;
        let uploads = crate::uploads::Uploads::new(settings.data_dir.join("uploads"));
        Ok(App {
            uploads,
            settings,
            db,
            mac,
            keys: KeyCache::default(),
            quota: Mutex::new(DailyQuota::default()),
            login_throttle: Mutex::new(LoginThrottle::default()),
            started: Instant::now(),
            openapi_json: std::sync::OnceLock::new(),
            streams: LiveStreams::default(),
            runs: Default::default(),
            outbox,
            platforms: Platforms::default(),
            mcp: Default::default(),
            plugins: Default::default(),
            keys_generation: AtomicI64::new(generation),
        })
    }

    /// Drops every cached key verification; called after any change to the keys table.
    pub fn keys_changed(&self) {
        if let Ok(generation) = self.db.conn().and_then(|c| db::keys_generation(&c)) {
            self.keys_generation.store(generation, Ordering::SeqCst);
        }
        self.keys.clear();
    }

    /// One round of background upkeep: pick up key changes made by another process and
    /// write pending key usage. Returns an error only for logging.
    pub fn maintain(&self, flush_usage: bool) -> Result<(), String> {
        let conn = self.db.conn().map_err(|e| e.to_string())?;
        let generation = db::keys_generation(&conn).map_err(|e| e.to_string())?;
        if generation != self.keys_generation.swap(generation, Ordering::SeqCst) {
            self.keys.clear();
        }
        drop(conn);
        if flush_usage {
            self.flush_usage()?;
        }
        Ok(())
    }

    /// Writes the key usage counted since the last flush.
    pub fn flush_usage(&self) -> Result<(), String> {
        let pending = self.quota.lock().unwrap_or_else(|e| e.into_inner()).take_pending();
        if pending.0.is_empty() && pending.1.is_empty() {
            return Ok(());
        }
        let result = self
            .db
            .conn()
            .and_then(|mut c| db::write_tx(&mut c, |tx| db::save_usage(tx, &pending.0, &pending.1)));
        if let Err(e) = result {
            self.quota.lock().unwrap_or_else(|e| e.into_inner()).restore_pending(pending);
            return Err(format!("cannot write key usage: {e}"));
        }
        Ok(())
    }

    /// Verifies a raw API key: shape, MAC, cache, then the database.
    pub fn verify_api_key(&self, raw: &str, now: i64) -> Result<Arc<ActiveKey>, ApiError> {
        let invalid = || ApiError::Unauthorized("Invalid API key".into());
        if !secrets::looks_like_api_key(raw) {
            return Err(invalid());
        }
        let mac = self.mac.mac(raw);
        if let Some(key) = self.keys.get(&mac, now) {
            return Ok(key);
        }
        let generation = self.keys_generation.load(Ordering::SeqCst);
        let conn = self.db.conn()?;
        let row = db::find_active_key(&conn, &mac, now)?.ok_or_else(invalid)?;
        let key = Arc::new(ActiveKey::from_row(&row));
        // A change that landed while we looked must not be hidden by a stale entry.
        if generation == self.keys_generation.load(Ordering::SeqCst) {
            self.keys.insert(mac, key.clone());
        }
        Ok(key)
    }

    /// Requests a key has made this UTC day: the live count if this process has seen the
    /// key today, else the stored one.
    pub fn usage_today(&self, key_id: &str, now: i64) -> i64 {
        if let Some(n) = self.quota.lock().unwrap_or_else(|e| e.into_inner()).today(key_id, now) {
            return n;
        }
        self.db.conn().and_then(|c| db::usage_count(&c, key_id, crate::timefmt::utc_day(now))).unwrap_or(0)
    }

    /// An admin token: `Ok(Some(name))` if valid, `Ok(None)` if unknown, `Err` if expired.
    pub fn verify_admin_token(&self, token: &str, now: i64) -> Result<Option<String>, ApiError> {
        if !token.starts_with(secrets::ADMIN_TOKEN_PREFIX) || token.len() > 128 {
            return Ok(None);
        }
        let conn = self.db.conn()?;
        match db::find_admin_token(&conn, &self.mac.mac(token))? {
            Some((_, expires_at)) if expires_at <= now => Err(ApiError::Unauthorized("Token expired".into())),
            Some((name, _)) => Ok(Some(name)),
            None => Ok(None),
        }
    }
}

/// Everything a handler sees: the app, the parsed request, the caller and the time.
pub struct Ctx<'a, 'b> {
    pub app: &'a Arc<App>,
    pub req: &'a mut Request<'b>,
    /// `None` only on public routes.
    pub who: Option<Identity>,
    pub now: i64,
    /// The webhook event of this request, when its key is mirrored; a handler may refine
    /// its request part or take it along (a chat stream finishes it when its run ends).
    pub mirror: Option<Draft>,
}

impl Ctx<'_, '_> {
    /// The caller; public routes have none.
    pub fn caller(&self) -> Result<&Identity, ApiError> {
        self.who.as_ref().ok_or_else(|| ApiError::Unauthorized("Missing API key".into()))
    }

    /// The `i`th `{param}` of the matched path.
    pub fn param(&self, i: usize) -> &str {
        self.req.params.get(i).map(String::as_str).unwrap_or("")
    }
}

/// Seconds since the server started.
pub fn uptime_secs(app: &App) -> u64 {
    app.started.elapsed().as_secs()
}
