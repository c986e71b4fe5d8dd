//! Plugins (scope `plugin`), as AstrBot's Open API has them (`api/plugins.py`,
//! `services/plugin_service.py`): list, detail with components, failed folders, README,
//! config and its schema, enable or disable, reload, uninstall, install from a URL or an
//! upload, the custom plugin sources and the marketplace.
//!
//! AstrBot's two error styles (management §5.0): the routes its `_run_service` wraps
//! answer a failure with HTTP 200 `{"status":"error","message":...,"data":{}}` (or
//! `status: warning` with data, for a version mismatch), and an unexpected failure with
//! `插件操作失败，请查看服务端日志。`; the config and plugin-sources routes answer 400s.
//! Every `{plugin_id}` must be a plugin name (`plugins::valid_name`) before anything is
//! read, so no id reaches a path outside `DIR/plugins`; changes hold the registry's
//! `changing` lock, so two never interleave.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use serde_json::{Map, Value, json};

use super::{body_or_empty, opt_bool, parse_bool, required_query};
use crate::app::Ctx;
use crate::db::{self, write_tx};
use crate::error::ApiError;
use crate::http::Response;
use crate::plugins::install::{self, InstallError, TempFile};
use crate::plugins::registry::Installed;
use crate::plugins::{self, market, schema};

/// AstrBot's answer to an unexpected failure of a wrapped route.
const OPERATION_FAILED: &str = "插件操作失败，请查看服务端日志。";
const NOT_FOUND: &str = "插件不存在";
const UPDATE_DISABLED: &str = "该插件不是通过插件市场安装，无法检测或执行更新。";
/// The most of a README shown.
const MAX_README: u64 = 1 << 20;

/// A wrapped route's failure.
enum Fail {
    /// 200 `status: error`, `data: {}`.
    Error(String),
    /// 200 `status: warning` with data.
    Warning(String, Value),
    /// Not the service's: the transport's answer (413, 400 ...), or a 500 that becomes
    /// [`OPERATION_FAILED`].
    Api(ApiError),
}

impl From<ApiError> for Fail {
    fn from(e: ApiError) -> Fail {
        Fail::Api(e)
    }
}

impl From<rusqlite::Error> for Fail {
    fn from(e: rusqlite::Error) -> Fail {
        Fail::Api(e.into())
    }
}

impl From<io::Error> for Fail {
    fn from(e: io::Error) -> Fail {
        Fail::Api(e.into())
    }
}

fn fail(message: impl Into<String>) -> Fail {
    Fail::Error(message.into())
}

/// AstrBot's `_run_service`: a failure as its 200 envelope.
fn wrapped(route: &str, result: Result<Response, Fail>) -> Result<Response, ApiError> {
    let envelope = |status: &str, message: &str, data: Value| {
        Ok(Response::json(200, &json!({"status": status, "message": message, "data": data})))
    };
    match result {
        Ok(r) => Ok(r),
        Err(Fail::Error(m)) => envelope("error", &m, json!({})),
        Err(Fail::Warning(m, data)) => envelope("warning", &m, data),
        Err(Fail::Api(ApiError::Internal(cause))) => {
            log::error!("{route}: {cause}");
            envelope("error", OPERATION_FAILED, json!({}))
        }
        Err(Fail::Api(e)) => Err(e),
    }
}

fn data_dir(ctx: &Ctx<'_, '_>) -> PathBuf {
    ctx.app.settings.data_dir.clone()
}

fn path_id(ctx: &Ctx<'_, '_>) -> String {
    ctx.req.params.first().cloned().unwrap_or_default()
}

/// A loaded plugin by a client's id; any id that is not a plugin name is unknown.
fn find(ctx: &Ctx<'_, '_>, id: &str) -> Option<std::sync::Arc<Installed>> {
    plugins::valid_name(id).then(|| ctx.app.plugins.get(id)).flatten()
}

/// `plugin_id` of a JSON body, required and non-blank (AstrBot's `Missing key: plugin_id`).
fn body_plugin_id(body: &Map<String, Value>) -> Result<String, ApiError> {
    let text = match body.get("plugin_id") {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.trim().to_owned(),
        Some(other) => other.to_string(),
    };
    if text.is_empty() { Err(ApiError::bad_request("Missing key: plugin_id")) } else { Ok(text) }
}

/// The install record shown: the stored one, or AstrBot's implicit display-only record.
fn install_source(p: &Installed, stored: Option<Value>) -> Value {
    stored.filter(Value::is_object).unwrap_or_else(|| {
        json!({"schema_version": 1, "root_dir_name": p.name, "install_method": "market", "registry_url": null,
               "registry_name": "Default", "repo": p.folder.metadata.repo.trim(), "download_url": "", "implicit": true,
               "name": p.name, "marketplace_name": p.name.replace('_', "-")})
    })
}

/// AstrBot's plugin entry (`serialize_plugin_base`, `pages`), plus the process's state.
fn entry(p: &Installed, stored: Option<Value>) -> Value {
    let m = &p.folder.metadata;
    let source = install_source(p, stored);
    let method = source["install_method"].as_str().unwrap_or_default().trim().to_ascii_lowercase();
    let updates = matches!(method.as_str(), "market" | "github");
    let runtime = p.status().map(|s| {
        json!({"running": s.running, "pid": s.pid, "calls": s.calls, "errors": s.errors,
               "restarts": s.restarts, "last_error": s.last_error})
    });
    json!({
        "name": p.name, "marketplace_name": p.name.replace('_', "-"), "repo": m.repo, "author": m.author,
        "desc": m.desc, "version": m.version, "reserved": false, "activated": p.enabled(), "online_vesion": "", "online_version": "",
        "display_name": m.display_name, "logo": null, "support_platforms": m.support_platforms,
        "astrbot_version": m.astrbot_version, "installed_at": p.installed_at, "i18n": {}, "root_dir_name": p.name,
        "install_source": source, "updates_enabled": updates,
        "update_disabled_reason": if updates { "" } else { UPDATE_DISABLED },
        "pages": [], "runtime": runtime,
    })
}

/// `GET /api/v1/plugins` (`?name=` or `?plugin_id=`: that plugin only)
pub fn list(ctx: &mut Ctx<'_, '_>) -> Result<Response, ApiError> {
    let filter = ["name", "plugin_id"]
        .iter()
        .find_map(|k| ctx.req.query_param(k).filter(|v| !v.is_empty()).map(str::to_owned));
    let result = (|| {
        let conn = ctx.app.db.conn()?;
        let mut items = Vec::new();
        for p in ctx.app.plugins.list() {
            if filter.as_deref().is_some_and(|f| f != p.name) {
                continue;
            }
            items.push(entry(&p, db::plugins::record(&conn, &p.name)?));
        }
        Ok(Response::ok_with_message(json!(items), &ctx.app.plugins.failed_info()))
    })();
    wrapped("GET /api/v1/plugins", result)
}

/// A command as AstrBot's command component: the last word named, the group words
/// wrapping it (`_wrap_command_component`), the handler's fields on the outermost.
fn command_component(c: &plugins::manifest::Command) -> Value {
    let describe = |d: &str| if d.trim().is_empty() { "无描述".to_owned() } else { d.to_owned() };
    let mut component = json!({"type": "command", "name": c.name, "description": describe(&c.description)});
    for group in c.group.iter().rev() {
        component =
            json!({"type": "command", "name": group, "description": "无描述", "subcommands": [component]});
    }
    let full = c.full_names().first().cloned().unwrap_or_default();
    for (k, v) in [
        ("event_type", json!("AdapterMessageEvent")),
        ("event_type_h", json!("平台消息下发时")),
        ("handler_name", json!(c.handler())),
        ("has_admin", json!(c.admin)),
        ("display_type", json!("指令")),
        ("command", json!(full)),
    ] {
        component[k] = v;
    }
    component
}

/// AstrBot's `_merge_command_component`: same-named subcommands merged, first wins.
fn merge_command(target: &mut Map<String, Value>, source: Map<String, Value>) {
    if target.get("description").and_then(Value::as_str) == Some("无描述")
        && let Some(d) = source.get("description").filter(|d| d.as_str().is_some_and(|s| !s.is_empty()))
    {
        target.insert("description".into(), d.clone());
    }
    for (k, v) in &source {
        if k != "subcommands" && k != "description" {
            target.entry(k.clone()).or_insert_with(|| v.clone());
        }
    }
    let Some(Value::Array(subs)) = source.get("subcommands") else { return };
    for sub in subs.iter().filter_map(Value::as_object) {
        let list = target.entry("subcommands").or_insert_with(|| json!([]));
        let Some(list) = list.as_array_mut() else { return };
        match list.iter_mut().filter_map(Value::as_object_mut).find(|t| t.get("name") == sub.get("name")) {
            Some(existing) => merge_command(existing, sub.clone()),
            None => list.push(Value::Object(sub.clone())),
        }
    }
}

/// The detail's `components`: commands (merged by name), then LLM tools (§2.7).
fn components(p: &Installed) -> Vec<Value> {
    let mut merged: Vec<Value> = Vec::new();
    for c in p.commands() {
        let Value::Object(mut component) = command_component(c) else { continue };
        // AstrBot 4.29 names the handler in full (module, then function).
        component.insert("handler_full_name".into(), json!(format!("{}.{}", p.name, c.handler())));
        match merged
            .iter_mut()
            .filter_map(Value::as_object_mut)
            .find(|t| t.get("name") == component.get("name"))
        {
            Some(existing) => merge_command(existing, component),
            None => merged.push(Value::Object(component)),
        }
    }
    for t in p.tools() {
        let description = if t.description.trim().is_empty() { "无描述" } else { t.description.as_str() };
        merged.push(json!({
            "type": "llm_tool", "name": t.name, "description": description, "event_type": "OnCallingFuncToolEvent",
            "event_type_h": "函数工具", "handler_full_name": format!("{}.{}", p.name, t.name), "handler_name": t.name,
            "cmd": "自动触发", "display_type": "无",
        }));
    }
    merged
}

fn detail_of(ctx: &Ctx<'_, '_>, id: &str) -> Result<Response, ApiError> {
    let result = (|| {
        let p = find(ctx, id).ok_or_else(|| fail(NOT_FOUND))?;
        let mut item = entry(&p, db::plugins::record(&*ctx.app.db.conn()?, &p.name)?);
        item["components"] = json!(components(&p));
        Ok(Response::ok(item))
    })();
    wrapped("GET /api/v1/plugins/{plugin_id}", result)
}

/// `GET /api/v1/plugins/{plugin_id}`
pub fn detail(ctx: &mut Ctx<'_, '_>) -> Result<Response, ApiError> {
    let id = path_id(ctx);
    detail_of(ctx, &id)
}

/// `GET /api/v1/plugins/by-id?plugin_id=`
pub fn detail_query(ctx: &mut Ctx<'_, '_>) -> Result<Response, ApiError> {
    let id = required_query(ctx, "plugin_id")?;
    detail_of(ctx, &id)
}

/// `GET /api/v1/plugins/failed`: folder → AstrBot's failed record, with what its
/// `metadata.yaml` says when it can be read.
pub fn failed(ctx: &mut Ctx<'_, '_>) -> Result<Response, ApiError> {
    let root = plugins::root(&data_dir(ctx));
    let mut out = Map::new();
    for (dir, error) in ctx.app.plugins.failed() {
        let meta = install::plain_dir_name(&dir)
            .then(|| plugins::manifest::read_metadata(&root.join(&dir)).ok())
            .flatten()
            .unwrap_or_default();
        let text = |s: &str| if s.is_empty() { Value::Null } else { json!(s) };
        out.insert(
            dir.clone(),
            json!({"name": if meta.name.is_empty() { dir.clone() } else { meta.name.clone() }, "error": error,
                   "traceback": "", "reserved": false, "root_dir_name": dir, "author": text(&meta.author),
                   "desc": text(&meta.desc), "version": text(&meta.version), "display_name": meta.display_name}),
        );
    }
    Ok(Response::ok(Value::Object(out)))
}

fn readme_of(ctx: &Ctx<'_, '_>, id: &str) -> Result<Response, ApiError> {
    let result = (|| {
        if id.is_empty() {
            return Err(fail("插件名称不能为空"));
        }
        let p = find(ctx, id).ok_or_else(|| fail(format!("插件 {id} 不存在")))?;
        let path = p.folder.dir.join("README.md");
        // A link could lead out of the plugin: only a plain file is read.
        if !fs::symlink_metadata(&path).is_ok_and(|m| m.is_file()) {
            return Err(fail(format!("插件 {id} 没有README文件")));
        }
        let text = read_capped(&path, MAX_README).map_err(|e| {
            log::warn!("plugin {id}: README: {e}");
            fail("读取README文件失败")
        })?;
        Ok(Response::ok_with_message(json!({"content": text}), "成功获取README内容"))
    })();
    wrapped("GET /api/v1/plugins/readme", result)
}

/// A UTF-8 text file of at most `cap` bytes.
fn read_capped(path: &Path, cap: u64) -> Result<String, String> {
    use std::io::Read;
    let mut bytes = Vec::new();
    fs::File::open(path).and_then(|f| f.take(cap + 1).read_to_end(&mut bytes)).map_err(|e| e.to_string())?;
    if bytes.len() as u64 > cap {
        return Err(format!("larger than {} KiB", cap >> 10));
    }
    String::from_utf8(bytes).map_err(|_| "not UTF-8".to_owned())
}

/// `GET /api/v1/plugins/{plugin_id}/readme`
pub fn readme(ctx: &mut Ctx<'_, '_>) -> Result<Response, ApiError> {
    let id = path_id(ctx);
    readme_of(ctx, &id)
}

/// `GET /api/v1/plugins/readme?plugin_id=`: a missing key is 400, an empty one AstrBot's
/// 200-error.
pub fn readme_query(ctx: &mut Ctx<'_, '_>) -> Result<Response, ApiError> {
    let id = ctx
        .req
        .query_param("plugin_id")
        .map(|v| v.trim().to_owned())
        .ok_or_else(|| ApiError::bad_request("Missing key: plugin_id"))?;
    readme_of(ctx, &id)
}

/// AstrBot's `get_configs` for a plugin: its schema as one object item and its config,
/// or nulls for an unknown plugin or one without a schema (no error).
fn config_display(ctx: &Ctx<'_, '_>, id: &str, log_level: bool) -> Result<Response, ApiError> {
    // A name no plugin can have is refused (AstrBot's PUT message); a valid unknown one
    // gets AstrBot's nulls.
    if !plugins::valid_name(id) {
        return Err(ApiError::bad_request(format!("插件 {id} 不存在")));
    }
    let plugin = find(ctx, id);
    let (metadata, config) = match plugin.as_ref().and_then(|p| p.folder.schema.clone().map(|s| (p, s))) {
        Some((p, schema)) => (
            json!({p.name.clone(): {"description": format!("{} 配置", p.name), "type": "object", "items": schema}}),
            Value::Object(ctx.app.plugins.config_of(p)),
        ),
        None => (Value::Null, Value::Null),
    };
    let mut data = json!({"plugin_name": id});
    if log_level {
        data["log_level"] = Value::Null;
    }
    data["metadata"] = metadata;
    data["config"] = config;
    data["i18n"] = json!({});
    Ok(Response::ok(data))
}

/// `plugin_id=` of a config route: required and not empty (AstrBot would show the
/// system config for an empty one; that lives at `/api/v1/system-config`).
fn config_query(ctx: &Ctx<'_, '_>) -> Result<String, ApiError> {
    match ctx.req.query_param("plugin_id").map(str::trim) {
        None => Err(ApiError::bad_request("Missing key: plugin_id")),
        Some("") => Err(ApiError::bad_request(
            "plugin_id must not be empty (the system config is at /api/v1/system-config)",
        )),
        Some(id) => Ok(id.to_owned()),
    }
}

/// `GET /api/v1/plugins/config?plugin_id=`
pub fn config_query_get(ctx: &mut Ctx<'_, '_>) -> Result<Response, ApiError> {
    let id = config_query(ctx)?;
    config_display(ctx, &id, true)
}

/// `GET /api/v1/plugins/{plugin_id}/config`
pub fn config_get(ctx: &mut Ctx<'_, '_>) -> Result<Response, ApiError> {
    let id = path_id(ctx);
    config_display(ctx, &id, true)
}

/// `GET /api/v1/plugins/config/schema?plugin_id=`
pub fn schema_query(ctx: &mut Ctx<'_, '_>) -> Result<Response, ApiError> {
    let id = config_query(ctx)?;
    config_display(ctx, &id, false)
}

/// `GET /api/v1/plugins/{plugin_id}/config/schema`
pub fn schema_get(ctx: &mut Ctx<'_, '_>) -> Result<Response, ApiError> {
    let id = path_id(ctx);
    config_display(ctx, &id, false)
}

/// Validates `post` against the plugin's schema, merges it (top level) into the config
/// in effect, saves it whole and restarts the plugin's process (its next call sees it).
fn save_config(ctx: &Ctx<'_, '_>, id: &str, mut post: Map<String, Value>) -> Result<Response, ApiError> {
    let p = find(ctx, id).ok_or_else(|| ApiError::bad_request(format!("插件 {id} 不存在")))?;
    let Some(schema) = p.folder.schema.clone() else {
        return Err(ApiError::bad_request(format!("插件 {id} 没有注册配置")));
    };
    schema::validate(&mut post, &schema)?;
    let _changing = ctx.app.plugins.changing();
    let mut config = ctx.app.plugins.config_of(&p);
    config.extend(post);
    let config = schema::repair(&config, &schema);
    schema::save(&plugins::config_path(&data_dir(ctx), &p.name), &config)?;
    ctx.app.plugins.restart(&p.name);
    log::info!("plugin {}: config saved", p.name);
    Ok(Response::ok_with_message(json!({}), &format!("保存插件 {} 成功~ 机器人正在热重载插件。", p.name)))
}

/// `PUT /api/v1/plugins/config` with `{plugin_id, config}` (a non-object config is `{}`).
pub fn config_put_body(ctx: &mut Ctx<'_, '_>) -> Result<Response, ApiError> {
    let body = body_or_empty(ctx)?;
    let id = body_plugin_id(&body)?;
    let post = body.get("config").and_then(Value::as_object).cloned().unwrap_or_default();
    save_config(ctx, &id, post)
}

/// `PUT /api/v1/plugins/{plugin_id}/config` with `{config}` or the config itself.
pub fn config_put(ctx: &mut Ctx<'_, '_>) -> Result<Response, ApiError> {
    let id = path_id(ctx);
    let body = body_or_empty(ctx)?;
    let post = match body.get("config") {
        Some(Value::Object(c)) => c.clone(),
        _ => body,
    };
    save_config(ctx, &id, post)
}

fn set_enabled(ctx: &Ctx<'_, '_>, id: &str, enabled: bool) -> Result<Response, ApiError> {
    let result = (|| {
        let p = find(ctx, id).ok_or_else(|| fail(format!("{NOT_FOUND}。")))?;
        let _changing = ctx.app.plugins.changing();
        write_tx(&mut *ctx.app.db.conn()?, |tx| db::plugins::set_enabled(tx, &p.name, enabled))?;
        ctx.app.plugins.set_enabled(&p.name, enabled);
        log::info!("plugin {}: {}", p.name, if enabled { "enabled" } else { "disabled" });
        Ok(Response::ok_with_message(json!({}), if enabled { "启用成功。" } else { "停用成功。" }))
    })();
    wrapped("PATCH /api/v1/plugins/enabled", result)
}

fn enabled_of(body: &Map<String, Value>) -> Result<bool, ApiError> {
    opt_bool(body, "enabled")?.ok_or_else(|| ApiError::bad_request("Missing key: enabled"))
}

/// `PATCH /api/v1/plugins/enabled` with `{plugin_id, enabled}`
pub fn enabled_body(ctx: &mut Ctx<'_, '_>) -> Result<Response, ApiError> {
    let body = body_or_empty(ctx)?;
    let id = body_plugin_id(&body)?;
    let enabled = enabled_of(&body)?;
    set_enabled(ctx, &id, enabled)
}

/// `PATCH /api/v1/plugins/{plugin_id}/enabled` with `{enabled}`
pub fn enabled_path(ctx: &mut Ctx<'_, '_>) -> Result<Response, ApiError> {
    let id = path_id(ctx);
    let body = body_or_empty(ctx)?;
    let enabled = enabled_of(&body)?;
    set_enabled(ctx, &id, enabled)
}

/// Re-reads a plugin folder (a loaded plugin, or one that failed to load).
fn reload_of(ctx: &Ctx<'_, '_>, id: &str) -> Result<Response, ApiError> {
    let result = (|| {
        let dir = plugins::root(&data_dir(ctx)).join(id);
        if !plugins::valid_name(id) || !fs::symlink_metadata(&dir).is_ok_and(|m| m.is_dir()) {
            return Err(fail("插件重载失败"));
        }
        let _changing = ctx.app.plugins.changing();
        let conn = ctx.app.db.conn()?;
        ctx.app.plugins.load(&conn, id).map_err(|e| {
            log::warn!("plugin {id}: reload failed: {e}");
            fail("插件重载失败")
        })?;
        log::info!("plugin {id} reloaded");
        Ok(Response::ok_with_message(json!({}), "重载成功。"))
    })();
    wrapped("POST /api/v1/plugins/reload", result)
}

/// `POST /api/v1/plugins/reload` with `{plugin_id}`
pub fn reload_body(ctx: &mut Ctx<'_, '_>) -> Result<Response, ApiError> {
    let body = body_or_empty(ctx)?;
    let id = body_plugin_id(&body)?;
    reload_of(ctx, &id)
}

/// `POST /api/v1/plugins/{plugin_id}/reload`
pub fn reload(ctx: &mut Ctx<'_, '_>) -> Result<Response, ApiError> {
    let id = path_id(ctx);
    reload_of(ctx, &id)
}

/// The optional `{delete_config, delete_data}` of an uninstall.
fn cleanup_flags(ctx: &Ctx<'_, '_>) -> Result<(bool, bool), ApiError> {
    let body = body_or_empty(ctx)?;
    Ok((opt_bool(&body, "delete_config")?.unwrap_or(false), opt_bool(&body, "delete_data")?.unwrap_or(false)))
}

/// Removes a plugin folder's config and data when asked, and its database rows.
fn forget(ctx: &Ctx<'_, '_>, dir: &str, delete_config: bool, delete_data: bool) -> Result<(), Fail> {
    let data = data_dir(ctx);
    if delete_config
        && let Err(e) = fs::remove_file(plugins::config_path(&data, dir))
        && e.kind() != io::ErrorKind::NotFound
    {
        return Err(e.into());
    }
    if delete_data
        && let Err(e) = fs::remove_dir_all(plugins::data_dir_of(&data, dir))
        && e.kind() != io::ErrorKind::NotFound
    {
        return Err(e.into());
    }
    write_tx(&mut *ctx.app.db.conn()?, |tx| db::plugins::delete(tx, dir))?;
    Ok(())
}

fn uninstall_of(ctx: &Ctx<'_, '_>, id: &str) -> Result<Response, ApiError> {
    let (delete_config, delete_data) = cleanup_flags(ctx)?;
    let result = (|| {
        if find(ctx, id).is_none() {
            return Err(fail(format!("{NOT_FOUND}。")));
        }
        let _changing = ctx.app.plugins.changing();
        ctx.app.plugins.remove(id);
        if let Err(e) = install::remove_folder(&data_dir(ctx), id) {
            // Still there: listed again as it is.
            let _ = ctx.app.plugins.load(&*ctx.app.db.conn()?, id);
            return Err(e.into());
        }
        forget(ctx, id, delete_config, delete_data)?;
        log::info!("plugin {id} uninstalled");
        Ok(Response::ok_with_message(json!({}), "卸载成功"))
    })();
    wrapped("DELETE /api/v1/plugins/{plugin_id}", result)
}

/// `DELETE /api/v1/plugins/{plugin_id}` (optional body `{delete_config, delete_data}`)
pub fn uninstall(ctx: &mut Ctx<'_, '_>) -> Result<Response, ApiError> {
    let id = path_id(ctx);
    uninstall_of(ctx, &id)
}

/// `DELETE /api/v1/plugins/by-id?plugin_id=`
pub fn uninstall_query(ctx: &mut Ctx<'_, '_>) -> Result<Response, ApiError> {
    let id = required_query(ctx, "plugin_id")?;
    uninstall_of(ctx, &id)
}

/// `DELETE /api/v1/plugins/failed/{dir_name}`: only a folder the failed list names.
pub fn uninstall_failed(ctx: &mut Ctx<'_, '_>) -> Result<Response, ApiError> {
    let dir = path_id(ctx);
    let (delete_config, delete_data) = cleanup_flags(ctx)?;
    let result = (|| {
        if !ctx.app.plugins.failed().contains_key(&dir) || !install::plain_dir_name(&dir) {
            return Err(fail(format!("no plugin folder {dir} failed to load")));
        }
        let _changing = ctx.app.plugins.changing();
        install::remove_folder(&data_dir(ctx), &dir)?;
        ctx.app.plugins.forget_failed(&dir);
        forget(ctx, &dir, delete_config, delete_data)?;
        log::info!("failed plugin folder {dir} removed");
        Ok(Response::ok_with_message(json!({}), "卸载成功"))
    })();
    wrapped("DELETE /api/v1/plugins/failed/{dir_name}", result)
}

/// The custom plugin sources as stored (a list).
fn sources(ctx: &Ctx<'_, '_>) -> Result<Vec<Value>, ApiError> {
    Ok(market::as_list(db::plugins::preference(&*ctx.app.db.conn()?, market::SOURCES_KEY)?))
}

/// Where an install came from, for its record.
struct Origin {
    method: String,
    repo: String,
    download_url: String,
    registry_url: Option<String>,
    market_plugin_id: Option<String>,
}

/// Installs an archive (a download or an upload), records and loads it; AstrBot's answer.
fn install_from(
    ctx: &Ctx<'_, '_>,
    archive: &Path,
    ignore_version_check: bool,
    origin: Origin,
) -> Result<Response, Fail> {
    let data = data_dir(ctx);
    let _changing = ctx.app.plugins.changing();
    let installed = install::install_archive(&data, archive, ignore_version_check).map_err(|e| match e {
        InstallError::Refused(m) => fail(m),
        InstallError::Version(why) => {
            log::info!("plugin install refused: {why}");
            Fail::Warning(
                install::VERSION_UNSUPPORTED.into(),
                json!({"warning_type": "astrbot_version_unsupported", "can_ignore": true}),
            )
        }
    })?;
    let name = installed.name.clone();
    let registry_name = market::registry_name(&sources(ctx)?, origin.registry_url.as_deref());
    let mut record = json!({
        "schema_version": 1, "root_dir_name": name, "install_method": origin.method,
        "registry_url": market::normalize_registry_url(origin.registry_url.as_deref()),
        "registry_name": registry_name,
        "repo": if origin.repo.is_empty() { installed.folder.metadata.repo.trim().to_owned() } else { origin.repo },
        "download_url": origin.download_url,
        "installed_at": crate::timefmt::iso(crate::timefmt::now_micros()),
    });
    if let Some(id) = origin.market_plugin_id {
        record["market_plugin_id"] = json!(id);
    }
    let mut conn = ctx.app.db.conn()?;
    write_tx(&mut conn, |tx| db::plugins::set_record(tx, &name, &record))?;
    if let Err(e) = ctx.app.plugins.load(&conn, &name) {
        log::warn!("plugin {name}: installed, but it did not load: {e}");
    }
    let readme = fs::symlink_metadata(installed.folder.dir.join("README.md"))
        .ok()
        .filter(fs::Metadata::is_file)
        .and_then(|_| read_capped(&installed.folder.dir.join("README.md"), MAX_README).ok());
    log::info!("plugin {name} installed ({})", record["install_method"].as_str().unwrap_or_default());
    Ok(Response::ok_with_message(
        json!({"repo": installed.folder.metadata.repo, "readme": readme, "name": name}),
        "安装成功。",
    ))
}

fn text_field(body: &Map<String, Value>, key: &str) -> String {
    match body.get(key) {
        Some(Value::String(s)) => s.trim().to_owned(),
        _ => String::new(),
    }
}

/// `POST /api/v1/plugins/install/url` (§5.5): `url` (or `repository`), `download_url`,
/// `ignore_version_check`, and a market install's `install_method`, `registry_url`,
/// `market_plugin_id`.
pub fn install_url(ctx: &mut Ctx<'_, '_>) -> Result<Response, ApiError> {
    let no_body = matches!(ctx.req.json, None | Some(Value::Null));
    let body = body_or_empty(ctx)?;
    let result = (|| {
        if no_body {
            return Err(fail(OPERATION_FAILED));
        }
        let mut url = text_field(&body, "url");
        if url.is_empty() {
            url = text_field(&body, "repository");
        }
        let mut download_url = text_field(&body, "download_url");
        let ignore = body.get("ignore_version_check").and_then(parse_bool).unwrap_or(false);
        let market_install = text_field(&body, "install_method").eq_ignore_ascii_case("market");
        let mut registry_url = Some(text_field(&body, "registry_url")).filter(|u| !u.is_empty());
        let mut market_plugin_id = None;
        if market_install {
            let id = market::market_id(&body, None);
            if id.is_empty() {
                return Err(fail("缺少插件市场标识，无法安装。"));
            }
            registry_url = market::normalize_registry_url(registry_url.as_deref());
            let (registry, _) =
                market::fetch(&data_dir(ctx), registry_url.as_deref(), false).map_err(fail)?;
            let entry =
                market::find_entry(&registry, &id).ok_or_else(|| fail("插件源中未找到该插件，无法安装。"))?;
            url = text_field(&entry, "repo");
            if url.is_empty() {
                return Err(fail("插件市场记录缺少仓库地址，无法安装。"));
            }
            download_url = text_field(&entry, "download_url");
            market_plugin_id = Some(id);
        } else if !text_field(&body, "market_plugin_id").is_empty() {
            market_plugin_id = Some(text_field(&body, "market_plugin_id"));
        }
        let fetch = install::resolve(&url, &download_url).map_err(fail)?;
        log::info!("installing a plugin from {}", plugins::install::for_log(&fetch.download));
        let download = install::download(&fetch.download, &data_dir(ctx)).map_err(fail)?;
        let origin = Origin {
            method: if market_install { "market".into() } else { fetch.method.into() },
            repo: fetch.repo,
            download_url,
            registry_url,
            market_plugin_id,
        };
        install_from(ctx, &download.0, ignore, origin)
    })();
    wrapped("POST /api/v1/plugins/install/url", result)
}

/// The upload's `file` part streamed to `dir/.download-*`, and its text fields.
fn read_upload(ctx: &mut Ctx<'_, '_>, dir: &Path) -> Result<(Option<TempFile>, Map<String, Value>), Fail> {
    use io::Read;
    let boundary = ctx.req.multipart_boundary().map_err(ApiError::from)?;
    let limit = ctx.app.settings.max_upload_bytes;
    let mut body = ctx.req.body_reader(limit).map_err(ApiError::from)?;
    let mut file: Option<TempFile> = None;
    let mut fields = Map::new();
    let result: Result<(), String> = (|| {
        let mut form = multipart::server::Multipart::with_body(&mut body, boundary);
        while let Some(mut part) = form.read_entry().map_err(|e| e.to_string())? {
            let name = part.headers.name.to_string();
            if part.headers.filename.is_some() && name == "file" {
                let (tmp, mut out) = TempFile::create(dir).map_err(|e| e.to_string())?;
                file = Some(tmp);
                io::copy(&mut part.data, &mut out).map_err(|e| e.to_string())?;
            } else {
                let mut text = String::new();
                part.data.by_ref().take(4096).read_to_string(&mut text).map_err(|e| e.to_string())?;
                io::copy(&mut part.data, &mut io::sink()).map_err(|e| e.to_string())?;
                fields.insert(name, json!(text));
            }
        }
        Ok(())
    })();
    let over = body.over_limit();
    let _ = body.finish();
    if let Err(e) = result {
        if over {
            return Err(ApiError::PayloadTooLarge(limit).into());
        }
        log::debug!("bad multipart plugin upload: {e}");
        return Err(fail("Invalid multipart data."));
    }
    Ok((file, fields))
}

/// `POST /api/v1/plugins/install/upload`: multipart `file` (zip or tar.gz) and
/// `ignore_version_check`.
pub fn install_upload(ctx: &mut Ctx<'_, '_>) -> Result<Response, ApiError> {
    let dir = data_dir(ctx);
    let result = (|| {
        fs::create_dir_all(&dir)?;
        let (file, fields) = read_upload(ctx, &dir)?;
        let file = file.ok_or_else(|| fail("缺少插件文件"))?;
        let ignore = fields.get("ignore_version_check").and_then(parse_bool).unwrap_or(false);
        let origin = Origin {
            method: "upload".into(),
            repo: String::new(),
            download_url: String::new(),
            registry_url: None,
            market_plugin_id: None,
        };
        install_from(ctx, &file.0, ignore, origin)
    })();
    wrapped("POST /api/v1/plugins/install/upload", result)
}

/// `GET /api/v1/plugins/market` (`?custom_registry=&force_refresh=`): the raw registry.
pub fn market(ctx: &mut Ctx<'_, '_>) -> Result<Response, ApiError> {
    let custom = ctx.req.query_param("custom_registry").map(str::to_owned);
    let force = ctx
        .req
        .query_param("force_refresh")
        .is_some_and(|v| matches!(v.trim().to_ascii_lowercase().as_str(), "1" | "true" | "yes" | "on"));
    let result = match market::fetch(&data_dir(ctx), custom.as_deref(), force) {
        Ok((data, Some(message))) => Ok(Response::ok_with_message(data, message)),
        Ok((data, None)) => Ok(Response::ok(data)),
        Err(e) => Err(fail(e)),
    };
    wrapped("GET /api/v1/plugins/market", result)
}

/// `GET /api/v1/plugins/market/categories`
pub fn market_categories(_ctx: &mut Ctx<'_, '_>) -> Result<Response, ApiError> {
    Ok(Response::ok(json!({"categories": []})))
}

/// `GET /api/v1/plugin-sources`
pub fn sources_list(ctx: &mut Ctx<'_, '_>) -> Result<Response, ApiError> {
    Ok(Response::ok(json!({"sources": sources(ctx)?})))
}

fn store_sources(ctx: &Ctx<'_, '_>, list: Vec<Value>) -> Result<Response, ApiError> {
    market::check_size(&list).map_err(ApiError::bad_request)?;
    let value = Value::Array(list);
    write_tx(&mut *ctx.app.db.conn()?, |tx| db::plugins::set_preference(tx, market::SOURCES_KEY, &value))?;
    Ok(Response::ok_with_message(json!({"sources": value}), "保存成功"))
}

/// The plugin-sources writes need a JSON object body (AstrBot: 422 without one).
fn require_object(ctx: &Ctx<'_, '_>) -> Result<(), ApiError> {
    match ctx.req.json {
        Some(Value::Object(_)) => Ok(()),
        _ => Err(ApiError::bad_request("Request body must be a JSON object")),
    }
}

/// `POST /api/v1/plugin-sources`: one source appended as sent (top-level nulls dropped).
pub fn sources_add(ctx: &mut Ctx<'_, '_>) -> Result<Response, ApiError> {
    require_object(ctx)?;
    let body = body_or_empty(ctx)?;
    // Stored as sent, as AstrBot does, but the fields every client reads must be text.
    for field in ["id", "name", "url"] {
        crate::api::opt_string(&body, field)?;
    }
    let source: Map<String, Value> = body.into_iter().filter(|(_, v)| !v.is_null()).collect();
    let mut list = sources(ctx)?;
    list.push(Value::Object(source));
    store_sources(ctx, list)
}

/// `PUT /api/v1/plugin-sources` with `{sources: [...]}`; no `sources` clears the list.
pub fn sources_replace(ctx: &mut Ctx<'_, '_>) -> Result<Response, ApiError> {
    // `{}` clears the list, as in AstrBot.
    require_object(ctx)?;
    let body = body_or_empty(ctx)?;
    let list = match body.get("sources") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) => items.clone(),
        Some(_) => return Err(ApiError::bad_request("sources fields must be a list")),
    };
    store_sources(ctx, list)
}

fn sources_delete_of(ctx: &Ctx<'_, '_>, id: &str) -> Result<Response, ApiError> {
    let list = market::without(sources(ctx)?, id);
    store_sources(ctx, list)
}

/// `DELETE /api/v1/plugin-sources/{source_id}`
pub fn sources_delete(ctx: &mut Ctx<'_, '_>) -> Result<Response, ApiError> {
    let id = path_id(ctx);
    sources_delete_of(ctx, &id)
}

/// `DELETE /api/v1/plugin-sources/by-id?source_id=`
pub fn sources_delete_query(ctx: &mut Ctx<'_, '_>) -> Result<Response, ApiError> {
    let id = required_query(ctx, "source_id")?;
    sources_delete_of(ctx, &id)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugins::manifest::{Command, Param};

    fn command(name: &str, group: &[&str], description: &str) -> Command {
        Command {
            name: name.into(),
            aliases: vec![],
            group: group.iter().map(|g| (*g).to_owned()).collect(),
            admin: false,
            description: description.into(),
            params: Vec::<Param>::new(),
        }
    }

    #[test]
    fn grouped_commands_nest_and_merge_as_astrbot() {
        let add = command_component(&command("add", &["math"], "Add two numbers"));
        assert_eq!(add["name"], "math");
        assert_eq!(add["command"], "math add");
        assert_eq!(
            add["subcommands"][0],
            json!({"type": "command", "name": "add", "description": "Add two numbers"})
        );
        let Value::Object(mut target) = add else { panic!() };
        let Value::Object(sub) = command_component(&command("sub", &["math"], "")) else { panic!() };
        merge_command(&mut target, sub);
        assert_eq!(target["subcommands"].as_array().unwrap().len(), 2);
        assert_eq!(target["subcommands"][1]["description"], "无描述");
        assert_eq!(target["handler_name"], "math_add", "the first command's fields stay");
    }
}
