//! MCP servers (scope `mcp`), as AstrBot's Open API manages `mcp_server.json`: list, add,
//! update or rename, enable, delete, test a connection, and sync ModelScope's hosted
//! servers, with AstrBot's request mapping (`api/tools.py`), its messages byte for byte
//! and its 400s (`ToolsServiceError`), and the `/by-name` and `/enabled` body variants.
//!
//! Saving a server makes it run as stored at once (`mcp::manager`): an active server is
//! connected by a supervisor thread of its own, and the request waits for that first
//! attempt as AstrBot waits for its enable (at most 30 s), answering its error. Unlike
//! AstrBot, adding a server tests its connection only when it is active (an inactive one
//! is stored after the checks alone), and the test's session becomes the running one
//! instead of a second start; a server whose enable failed stays supervised and is
//! retried with backoff. Every answer masks secret-looking header and env values; a mask
//! sent back keeps the stored value only while it goes where it went (`mcp::config`).
//! The listing adds `state` (beyond AstrBot) to each server: connecting, connected, error
//! with the last error and since when, and restarts.

use std::time::{Duration, Instant};

use serde_json::{Map, Value, json};

use super::{opt_bool, parse_bool, required_query};
use crate::app::Ctx;
use crate::db::{self, write_tx};
use crate::error::ApiError;
use crate::http::Response;
use crate::mcp::client::Client;
use crate::mcp::config;
use crate::mcp::manager::{self, ENABLE_TIMEOUT};
use crate::mcp::registry::{Runtime, Status};

/// Servers at most: each active one holds a thread (and a stdio one a process).
const MAX_SERVERS: usize = 64;

/// ModelScope's API, unless `ASTRBOT_MODELSCOPE_BASE` names another (tests, a mirror).
const MODELSCOPE_BASE: &str = "https://www.modelscope.cn";

/// The most of ModelScope's answer read.
const MAX_SYNC_ANSWER: u64 = 1 << 20;

/// Keys a listing adds, never stored.
const SHOWN_ONLY: &[&str] = &["name", "active", "tools", "errlogs", "connected", "state"];

fn bad(message: impl Into<String>) -> ApiError {
    ApiError::bad_request(message)
}

/// A stored server as listed: `name`, `active`, its other keys (secrets masked), then
/// `connected`, `tools` (their MCP names), `errlogs` only while connected, and `state`.
fn shown(ctx: &Ctx<'_, '_>, name: &str, stored: &Value) -> Value {
    let mut cfg = stored.clone();
    config::redact(&mut cfg);
    let mut item = Map::new();
    item.insert("name".into(), json!(name));
    item.insert("active".into(), stored.get("active").cloned().unwrap_or(json!(true)));
    if let Value::Object(map) = cfg {
        for (k, v) in map {
            if k != "active" {
                item.insert(k, v);
            }
        }
    }
    let runtime = ctx.app.mcp.get(name);
    let client = runtime.as_ref().filter(|r| r.state().status == Status::Connected).and_then(|r| r.client());
    item.insert("connected".into(), json!(client.is_some()));
    let tools: Vec<String> =
        runtime.as_ref().map(|r| r.tools()).unwrap_or_default().into_iter().map(|t| t.mcp_name).collect();
    item.insert("tools".into(), json!(tools));
    if let Some(client) = &client {
        item.insert("errlogs".into(), json!(client.errlogs()));
    }
    let state = match &runtime {
        Some(r) => r.state().to_json(),
        None => json!({"status": "stopped", "error": null, "since": null, "restarts": 0}),
    };
    item.insert("state".into(), state);
    Value::Object(item)
}

/// `GET /api/v1/mcp/servers`
pub fn list(ctx: &mut Ctx<'_, '_>) -> Result<Response, ApiError> {
    let servers = db::mcp::servers(&*ctx.app.db.conn()?)?;
    let items: Vec<Value> =
        servers.iter().filter(|s| s.config.is_object()).map(|s| shown(ctx, &s.name, &s.config)).collect();
    Ok(Response::ok(json!(items)))
}

/// The JSON body as an object, or an empty one when there is none; any other JSON
/// (a written `null` included) is refused, as AstrBot's request models refuse it. The
/// transport reads an empty body as `null`: a body that had bytes is told apart by its
/// framing headers.
fn body_or_empty(ctx: &Ctx<'_, '_>) -> Result<Map<String, Value>, ApiError> {
    let had_bytes = ctx.req.header("transfer-encoding").is_some()
        || ctx.req.header("content-length").is_some_and(|n| n.trim() != "0");
    match &ctx.req.json {
        None => Ok(Map::new()),
        Some(Value::Null) if !had_bytes => Ok(Map::new()),
        Some(Value::Object(m)) => Ok(m.clone()),
        Some(_) => Err(bad("Request body must be a JSON object")),
    }
}

/// Pydantic's `model_dump(exclude_none=True)`: top-level nulls dropped.
fn without_nulls(body: Map<String, Value>) -> Map<String, Value> {
    body.into_iter().filter(|(_, v)| !v.is_null()).collect()
}

/// A name field: a string, else refused.
fn name_field(v: Option<&Value>, field: &str) -> Result<String, ApiError> {
    match v {
        None | Some(Value::Null) => Ok(String::new()),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(_) => Err(bad(format!("{field} must be a string"))),
    }
}

/// A body's `config`, when given, is an object (AstrBot's request model types it).
fn config_field(body: &Map<String, Value>) -> Result<(), ApiError> {
    match body.get("config") {
        None | Some(Value::Null | Value::Object(_)) => Ok(()),
        Some(_) => Err(bad("config must be an object")),
    }
}

/// `active` as stored: a boolean (pydantic-lax forms read).
fn active_field(v: Option<&Value>, field: &str) -> Result<Option<bool>, ApiError> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(v) => parse_bool(v).map(Some).ok_or_else(|| bad(format!("{field} must be a boolean"))),
    }
}

/// The server keys of a body (AstrBot's `_build_server_config` loop): every key but the
/// listing's, with `mcpServers` replacing the whole config by its first entry. Whether
/// any server key was given, and the config.
fn server_keys(
    body: &Map<String, Value>,
    active: bool,
    skip: &[&str],
) -> Result<(bool, Map<String, Value>), ApiError> {
    let mut cfg = Map::new();
    cfg.insert("active".into(), json!(active));
    let mut any = false;
    for (k, v) in body {
        if SHOWN_ONLY.contains(&k.as_str()) || skip.contains(&k.as_str()) {
            continue;
        }
        if k == "mcpServers" {
            cfg = config::extract_mcp_servers(v).map_err(bad)?;
        } else {
            cfg.insert(k.clone(), v.clone());
        }
        any = true;
    }
    Ok((any, cfg))
}

/// `active` stored as a boolean, whichever form (a wrapped `mcpServers` entry's too) sent it.
fn normalize_active(cfg: &mut Map<String, Value>) -> Result<(), ApiError> {
    if let Some(a) = cfg.get("active").filter(|a| !a.is_boolean() && !a.is_null()) {
        let a = parse_bool(a).ok_or_else(|| bad("active must be a boolean"))?;
        cfg.insert("active".into(), json!(a));
    }
    Ok(())
}

/// The outcome of a runtime's first attempt, as AstrBot words an enable: `None` when it
/// connected.
fn first_attempt_error(rt: &Runtime, wait: Duration) -> Option<Result<String, ()>> {
    match rt.first_attempt(wait) {
        Some(s) if s.status == Status::Connected => None,
        Some(s) => Some(Ok(s.error.unwrap_or_else(|| "the server stopped".into()))),
        None => Some(Err(())),
    }
}

/// The wait for an enable: AstrBot's 30 s, and a little for the thread to report.
fn enable_wait() -> Duration {
    ENABLE_TIMEOUT + Duration::from_secs(2)
}

/// `POST /api/v1/mcp/servers`
pub fn create(ctx: &mut Ctx<'_, '_>) -> Result<Response, ApiError> {
    let mut body = without_nulls(body_or_empty(ctx)?);
    if body.contains_key("enabled") && !body.contains_key("active") {
        let enabled = body.remove("enabled").unwrap_or(Value::Null);
        body.insert("active".into(), enabled);
    }
    let name = name_field(body.get("name"), "name")?;
    config::check_name(&name).map_err(bad)?;
    let active = active_field(body.get("active"), "active")?.unwrap_or(true);
    active_field(body.get("enabled"), "enabled")?;
    config_field(&body)?;
    config::check_fields(&body, &ctx.app.settings.data_dir).map_err(bad)?;
    let (any, mut cfg) = server_keys(&body, active, &[])?;
    if !any {
        return Err(bad("A valid server configuration is required"));
    }
    normalize_active(&mut cfg)?;
    config::validate(&cfg, &ctx.app.settings.data_dir).map_err(bad)?;
    {
        let conn = ctx.app.db.conn()?;
        if db::mcp::server(&conn, &name)?.is_some() {
            return Err(bad(format!("Server {name} already exists")));
        }
        if db::mcp::count(&conn)? >= MAX_SERVERS {
            return Err(bad(format!("At most {MAX_SERVERS} MCP servers")));
        }
    }
    let stored = Value::Object(cfg);
    // The connection test: an active server's first session, kept when it succeeds.
    let runtime = if config::active(&stored) {
        let rt = manager::spawn(&name, &stored, ENABLE_TIMEOUT);
        match first_attempt_error(&rt, enable_wait()) {
            None => Some(rt),
            Some(problem) => {
                manager::stop(&rt);
                let e = problem
                    .unwrap_or_else(|()| format!("Connection timeout: {} seconds", ENABLE_TIMEOUT.as_secs()));
                return Err(bad(format!("MCP connection test failed: {e}")));
            }
        }
    } else {
        None
    };
    let saved = write_tx(&mut *ctx.app.db.conn()?, |tx| {
        if db::mcp::server(tx, &name)?.is_some() {
            return Err(bad(format!("Server {name} already exists")));
        }
        db::mcp::put(tx, &name, &stored)?;
        Ok::<_, ApiError>(())
    });
    if let Err(e) = saved {
        if let Some(rt) = &runtime {
            manager::stop(rt);
        }
        return Err(e);
    }
    log::info!(
        "MCP server {name} added ({})",
        if config::is_stdio(stored.as_object().unwrap_or(&Map::new())) { "stdio" } else { "remote" }
    );
    if let Some(rt) = runtime {
        manager::adopt(ctx.app, rt, ENABLE_TIMEOUT);
    }
    Ok(Response::ok_with_message(json!({}), &format!("Successfully added MCP server {name}")))
}

/// AstrBot's `_update_mcp_server` + `ToolsService.update_mcp_server` for the server the
/// path (or body) names.
fn update(ctx: &Ctx<'_, '_>, path_name: &str, body: Map<String, Value>) -> Result<Response, ApiError> {
    let body = without_nulls(body);
    // The request model types every field, used or not: flat fields beside a `config`
    // object are ignored (AstrBot), but never of the wrong type.
    for field in ["name", "oldName"] {
        name_field(body.get(field), field)?;
    }
    active_field(body.get("active"), "active")?;
    active_field(body.get("enabled"), "enabled")?;
    config_field(&body)?;
    config::check_fields(&body, &ctx.app.settings.data_dir).map_err(bad)?;
    let mut normalized = match body.get("config") {
        Some(Value::Object(c)) => c.clone(),
        _ => body
            .iter()
            .filter(|(k, _)| {
                !matches!(k.as_str(), "server_name" | "config" | "enabled" | "mcp_server_config")
            })
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
    };
    if let Some(enabled) = body.get("enabled")
        && !normalized.contains_key("active")
    {
        normalized.insert("active".into(), enabled.clone());
    }
    let normalized = without_nulls(normalized);
    let name = match normalized.get("name") {
        None => path_name.to_owned(),
        v => name_field(v, "name")?,
    };
    let old_name = match normalized.get("oldName") {
        None => path_name.to_owned(),
        v => Some(name_field(v, "oldName")?).filter(|s| !s.is_empty()).unwrap_or_else(|| name.clone()),
    };
    config::check_name(&name).map_err(bad)?;
    let data_dir = ctx.app.settings.data_dir.clone();
    let (active, rename) = write_tx(&mut *ctx.app.db.conn()?, |tx| {
        let old = db::mcp::server(tx, &old_name)?
            .ok_or_else(|| bad(format!("Server {old_name} does not exist")))?;
        let rename = name != old_name;
        if rename && db::mcp::server(tx, &name)?.is_some() {
            return Err(bad(format!("Server {name} already exists")));
        }
        let active =
            active_field(normalized.get("active"), "active")?.unwrap_or_else(|| config::active(&old.config));
        let (any, mut cfg) = server_keys(&normalized, active, &["oldName"])?;
        if !any && let Some(old_map) = old.config.as_object() {
            for (k, v) in old_map {
                if k != "active" {
                    cfg.insert(k.clone(), v.clone());
                }
            }
        }
        normalize_active(&mut cfg)?;
        config::restore(&mut cfg, &old.config).map_err(bad)?;
        config::validate(&cfg, &data_dir).map_err(bad)?;
        let stored = Value::Object(cfg);
        if rename {
            db::mcp::rename(tx, &old_name, &name, &stored)?;
        } else {
            db::mcp::put(tx, &name, &stored)?;
        }
        Ok::<_, ApiError>((config::active(&stored), rename))
    })?;
    log::info!(
        "MCP server {name} updated{}",
        if rename { format!(" (was {old_name})") } else { String::new() }
    );
    if rename {
        manager::apply(ctx.app, &old_name, ENABLE_TIMEOUT);
    }
    let runtime = manager::apply(ctx.app, &name, ENABLE_TIMEOUT);
    if active && let Some(rt) = runtime {
        match first_attempt_error(&rt, enable_wait()) {
            None => {}
            Some(Ok(e)) => return Err(bad(format!("Failed to enable MCP server {name}: {e}"))),
            Some(Err(())) => return Err(bad(format!("Timed out while enabling MCP server {name}."))),
        }
    }
    Ok(Response::ok_with_message(json!({}), &format!("Successfully updated MCP server {name}")))
}

/// The `server_name` of a by-name body (or its `name`), else AstrBot's `Missing key`.
fn body_server_name(body: &Map<String, Value>) -> Result<String, ApiError> {
    let pick = |k: &str| match body.get(k) {
        Some(Value::String(s)) if !s.trim().is_empty() => Some(Ok(s.trim().to_owned())),
        None | Some(Value::Null) | Some(Value::String(_)) => None,
        Some(_) => Some(Err(bad(format!("{k} must be a string")))),
    };
    pick("server_name").or_else(|| pick("name")).unwrap_or_else(|| Err(bad("Missing key: server_name")))
}

/// `PUT /api/v1/mcp/servers/{server_name}`
pub fn update_path(ctx: &mut Ctx<'_, '_>) -> Result<Response, ApiError> {
    let name = ctx.param(0).to_owned();
    let body = body_or_empty(ctx)?;
    update(ctx, &name, body)
}

/// `PUT /api/v1/mcp/servers/by-name` (`server_name` in the body)
pub fn update_body(ctx: &mut Ctx<'_, '_>) -> Result<Response, ApiError> {
    let body = body_or_empty(ctx)?;
    let name = body_server_name(&body)?;
    update(ctx, &name, body)
}

/// `PATCH /api/v1/mcp/servers/{server_name}/enabled` with `{"enabled"}` (required)
pub fn set_enabled_path(ctx: &mut Ctx<'_, '_>) -> Result<Response, ApiError> {
    let name = ctx.param(0).to_owned();
    let body = body_or_empty(ctx)?;
    let enabled = opt_bool(&body, "enabled")?.ok_or_else(|| bad("Missing key: enabled"))?;
    let body = json!({"server_name": name, "enabled": enabled});
    update(ctx, &name, body.as_object().cloned().unwrap_or_default())
}

/// `PATCH /api/v1/mcp/servers/enabled` with `{"server_name", "enabled"}`
pub fn set_enabled_body(ctx: &mut Ctx<'_, '_>) -> Result<Response, ApiError> {
    let mut body = body_or_empty(ctx)?;
    let name = body_server_name(&body)?;
    if let Some(e) = opt_bool(&body, "enabled")? {
        body.insert("enabled".into(), json!(e));
    }
    update(ctx, &name, body)
}

fn delete_by(ctx: &Ctx<'_, '_>, name: &str) -> Result<Response, ApiError> {
    if name.is_empty() {
        return Err(bad("Server name cannot be empty"));
    }
    let deleted = write_tx(&mut *ctx.app.db.conn()?, |tx| db::mcp::delete(tx, name))?;
    if !deleted {
        return Err(bad(format!("Server {name} does not exist")));
    }
    log::info!("MCP server {name} deleted");
    manager::apply(ctx.app, name, ENABLE_TIMEOUT);
    Ok(Response::ok_with_message(json!({}), &format!("Successfully deleted MCP server {name}")))
}

/// `DELETE /api/v1/mcp/servers/{server_name}`
pub fn delete(ctx: &mut Ctx<'_, '_>) -> Result<Response, ApiError> {
    let name = ctx.param(0).to_owned();
    delete_by(ctx, &name)
}

/// `DELETE /api/v1/mcp/servers/by-name?server_name=`
pub fn delete_query(ctx: &mut Ctx<'_, '_>) -> Result<Response, ApiError> {
    let name = required_query(ctx, "server_name")?;
    delete_by(ctx, &name)
}

/// AstrBot's `_test_config_body`: the body's `mcp_server_config` (when not empty), else
/// its `config`, else the stored config of `name`, else `{"name": name}`.
fn test_config(ctx: &Ctx<'_, '_>, name: &str, body: &Map<String, Value>) -> Result<Value, ApiError> {
    for field in ["mcp_server_config", "config"] {
        if body.get(field).is_some_and(|v| !v.is_null() && !v.is_object()) {
            return Err(bad("Invalid MCP server configuration"));
        }
    }
    let truthy = |v: &&Value| {
        !matches!(v, Value::Null | Value::Bool(false)) && v.as_object().is_none_or(|m| !m.is_empty())
    };
    let given = body.get("mcp_server_config").filter(truthy).or_else(|| body.get("config"));
    match given {
        Some(Value::Object(c)) => return Ok(Value::Object(c.clone())),
        None | Some(Value::Null) => {}
        Some(_) => return Err(bad("Invalid MCP server configuration")),
    }
    match db::mcp::server(&*ctx.app.db.conn()?, name)? {
        Some(s) if s.config.is_object() => Ok(s.config),
        _ => Ok(json!({"name": name})),
    }
}

/// `ToolsService.test_mcp_connection`: the checks, then a session opened, its tools
/// listed and closed. Nothing is stored.
fn test_with(ctx: &Ctx<'_, '_>, name: &str, config: Value) -> Result<Response, ApiError> {
    let mut cfg = match config {
        Value::Object(c) if !c.is_empty() => c,
        _ => return Err(bad("Invalid MCP server configuration")),
    };
    if let Some(servers) = cfg.get("mcpServers") {
        if servers.as_object().is_some_and(|s| s.len() > 1) {
            return Err(bad("Only one MCP server configuration can be tested at a time"));
        }
        cfg = match config::extract_mcp_servers(servers) {
            Ok(c) => c,
            Err(e) if e == "mcpServers configuration cannot be empty" => {
                return Err(bad("MCP server configuration cannot be empty"));
            }
            Err(e) => return Err(bad(e)),
        };
    }
    config::validate(&cfg, &ctx.app.settings.data_dir).map_err(bad)?;
    // A listed config sent back carries masks: the stored values go only where they went.
    if let Some(stored) = db::mcp::server(&*ctx.app.db.conn()?, name)? {
        config::restore(&mut cfg, &stored.config).map_err(bad)?;
    }
    cfg.remove("active");
    let label = if name.is_empty() { "test" } else { name };
    let started = Instant::now();
    let client = Client::connect(label, &Value::Object(cfg), ENABLE_TIMEOUT)
        .map_err(|e| bad(format!("Failed to test MCP connection: {e}")))?;
    let tools: Vec<String> = client.tools().into_iter().map(|t| t.mcp_name).collect();
    client.close();
    log::info!("MCP server {label} tested: {} tools in {} ms", tools.len(), started.elapsed().as_millis());
    Ok(Response::ok_with_message(json!(tools), "🎉 MCP server is available!"))
}

/// `POST /api/v1/mcp/servers/{server_name}/test` (body optional)
pub fn test(ctx: &mut Ctx<'_, '_>) -> Result<Response, ApiError> {
    let name = ctx.param(0).to_owned();
    let body = body_or_empty(ctx)?;
    let config = test_config(ctx, &name, &body)?;
    test_with(ctx, &name, config)
}

/// `POST /api/v1/mcp/servers/test` (`server_name` and the config in the body)
pub fn test_body(ctx: &mut Ctx<'_, '_>) -> Result<Response, ApiError> {
    let body = body_or_empty(ctx)?;
    let name = body_server_name(&body)?;
    let config = test_config(ctx, &name, &body)?;
    test_with(ctx, &name, config)
}

/// What ModelScope lists: each operational server's name and first URL.
fn modelscope_servers(answer: &Value) -> Vec<(String, String)> {
    let list = answer["data"]["mcp_server_list"].as_array().cloned().unwrap_or_default();
    list.iter()
        .filter_map(|item| {
            let name = item.get("name")?.as_str().filter(|s| !s.is_empty())?;
            let url = item.get("operational_urls")?.as_array()?.first()?.get("url")?.as_str()?;
            Some((name.to_owned(), url.to_owned()))
        })
        .collect()
}

/// `POST /api/v1/mcp/providers/modelscope/sync` with an optional `{"access_token"}`,
/// never stored or logged.
pub fn modelscope_sync(ctx: &mut Ctx<'_, '_>) -> Result<Response, ApiError> {
    let body = body_or_empty(ctx)?;
    let token = match body.get("access_token") {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.trim().to_owned(),
        Some(_) => return Err(bad("access_token must be a string")),
    };
    let failed = |e: String| bad(format!("Sync failed: 同步 ModelScope MCP 服务器时发生错误: {e}"));
    let base = std::env::var("ASTRBOT_MODELSCOPE_BASE")
        .ok()
        .filter(|b| !b.trim().is_empty())
        .unwrap_or_else(|| MODELSCOPE_BASE.to_owned());
    let url = format!("{}/openapi/v1/mcp/servers/operational", base.trim().trim_end_matches('/'));
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_connect(Some(Duration::from_secs(5)))
        .timeout_global(Some(Duration::from_secs(15)))
        .max_redirects(0)
        .http_status_as_error(false)
        .user_agent(concat!("astrbot/", env!("CARGO_PKG_VERSION")))
        .build()
        .into();
    let mut resp = agent
        .get(&url)
        .header("Authorization", format!("Bearer {token}"))
        .call()
        .map_err(|e| bad(format!("Sync failed: 网络连接错误: {e}")))?;
    let status = resp.status().as_u16();
    if status != 200 {
        return Err(failed(format!("ModelScope API 请求失败: HTTP {status}")));
    }
    let text = resp
        .body_mut()
        .with_config()
        .limit(MAX_SYNC_ANSWER)
        .read_to_string()
        .map_err(|e| bad(format!("Sync failed: 网络连接错误: {e}")))?;
    let answer: Value =
        serde_json::from_str(&text).map_err(|e| failed(format!("invalid JSON from ModelScope: {e}")))?;
    let mut synced = Vec::new();
    for (name, url) in modelscope_servers(&answer) {
        let cfg = json!({"url": url, "transport": "sse", "active": true, "provider": "modelscope"});
        let checked = config::check_name(&name).and_then(|()| {
            config::validate(cfg.as_object().unwrap_or(&Map::new()), &ctx.app.settings.data_dir)
        });
        match checked {
            Ok(()) => synced.push((name, cfg)),
            Err(e) => log::warn!("ModelScope MCP server skipped: {e}"),
        }
    }
    if synced.is_empty() {
        log::warn!("ModelScope sync: no operational MCP servers found");
        return Ok(Response::ok_with_message(json!({}), "Sync completed"));
    }
    write_tx(&mut *ctx.app.db.conn()?, |tx| {
        for (name, cfg) in &synced {
            if db::mcp::server(tx, name)?.is_none() && db::mcp::count(tx)? >= MAX_SERVERS {
                return Err(failed(format!("At most {MAX_SERVERS} MCP servers")));
            }
            db::mcp::put(tx, name, cfg)?;
        }
        Ok::<_, ApiError>(())
    })?;
    log::info!("ModelScope sync: {} MCP servers stored", synced.len());
    // Started together, then waited for within one enable's time.
    let runtimes: Vec<_> =
        synced.iter().filter_map(|(name, _)| manager::apply(ctx.app, name, ENABLE_TIMEOUT)).collect();
    let deadline = Instant::now() + enable_wait();
    for rt in runtimes {
        match first_attempt_error(&rt, deadline.saturating_duration_since(Instant::now())) {
            None => {}
            Some(Ok(e)) => return Err(failed(e)),
            Some(Err(())) => return Err(failed(format!("Timed out while enabling MCP server {}.", rt.name))),
        }
    }
    Ok(Response::ok_with_message(json!({}), "Sync completed"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modelscope_answers_are_read_leniently() {
        let answer = json!({"data": {"mcp_server_list": [
            {"name": "fetch", "operational_urls": [{"url": "https://mcp.api-inference.modelscope.net/abc/sse"}]},
            {"name": "no-urls", "operational_urls": []},
            {"operational_urls": [{"url": "https://x/sse"}]},
            "junk"
        ]}});
        assert_eq!(
            modelscope_servers(&answer),
            vec![("fetch".to_owned(), "https://mcp.api-inference.modelscope.net/abc/sse".to_owned())]
        );
        assert!(modelscope_servers(&json!({"data": null})).is_empty());
    }

    #[test]
    fn server_keys_follow_astrbot() {
        let body = json!({"name": "a", "active": false, "command": "node", "tools": ["x"], "state": {}});
        let (any, cfg) = server_keys(body.as_object().unwrap(), false, &[]).unwrap();
        assert!(any);
        assert_eq!(Value::Object(cfg), json!({"active": false, "command": "node"}));
        let wrapped = json!({"name": "a", "mcpServers": {"x": {"url": "http://h/sse", "transport": "sse"}}});
        let (_, cfg) = server_keys(wrapped.as_object().unwrap(), true, &[]).unwrap();
        assert_eq!(Value::Object(cfg), json!({"url": "http://h/sse", "transport": "sse"}));
        let (any, _) = server_keys(json!({"name": "a"}).as_object().unwrap(), true, &[]).unwrap();
        assert!(!any);
    }
}
