//! Configuration (scope `config`), as AstrBot's dashboard and Open API serve it: the system
//! config, config profiles, the profile list the chat offers, and the UMO routing table.
//! Secrets are masked in every answer and restored when a masked value comes back (toward
//! an unchanged target only), `$NAME` keys follow the secret-reference rule; the
//! read-only sections of the default profile are kept; changing `admins_id` with an API key
//! needs `config:edit_admin`.

use serde_json::{Map, Value, json};

use super::opt_string;
use crate::app::Ctx;
use crate::auth::Identity;
use crate::config::{self, DEFAULT_PROFILE, READ_ONLY_SECTIONS};
use crate::db::resources;
use crate::db::write_tx;
use crate::error::ApiError;
use crate::http::Response;
use crate::timefmt;

fn missing_profile(id: &str) -> ApiError {
    ApiError::bad_request(format!("Config file {id} does not exist"))
}

/// Whether the caller may change `admins_id` (the admin always; keys with the sub-scope).
fn can_edit_admins(who: Option<&Identity>) -> bool {
    match who {
        Some(Identity::Admin(_)) => true,
        Some(Identity::Key(k)) => k.scopes.iter().any(|s| s == "*" || s == "config:edit_admin"),
        None => false,
    }
}

fn admins_guard(who: Option<&Identity>, new: Option<&Value>, current: &Value) -> Result<(), ApiError> {
    if let Some(new) = new
        && new != current
        && !can_edit_admins(who)
    {
        return Err(ApiError::InsufficientScope {
            message: "config:edit_admin scope is required to change admins_id".into(),
            scope: "config:edit_admin",
        });
    }
    Ok(())
}

/// A UI schema for the config: each known key with its type and an i18n description key,
/// in the shape of AstrBot's metadata (`<group>.<key>.description`).
fn metadata(group: &str) -> Value {
    fn describe(v: &Value, path: &str) -> Value {
        let kind = match v {
            Value::Bool(_) => "bool",
            Value::Number(n) if n.is_i64() => "int",
            Value::Number(_) => "float",
            Value::String(_) => "string",
            Value::Array(_) => "list",
            Value::Object(_) => "object",
            Value::Null => "string",
        };
        let mut d = json!({"type": kind, "description": format!("{path}.description"), "hint": format!("{path}.hint")});
        if let Value::Object(map) = v {
            d["items"] = Value::Object(
                map.iter().map(|(k, v)| (k.clone(), describe(v, &format!("{path}.{k}")))).collect(),
            );
        }
        d
    }
    let defaults = config::default_config();
    let items: Map<String, Value> = defaults
        .as_object()
        .into_iter()
        .flatten()
        .filter(|(k, _)| !READ_ONLY_SECTIONS.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), describe(v, &format!("{group}.{k}"))))
        .collect();
    json!({group: {"name": format!("{group}.name"), "metadata": items}})
}

/// `GET /api/v1/system-config`
pub fn get_system(ctx: &mut Ctx<'_, '_>) -> Result<Response, ApiError> {
    let mut cfg = config::system_config(&*ctx.app.db.conn()?)?;
    let offset = timefmt::utc_offset_minutes(cfg["timezone"].as_str().unwrap_or(""));
    config::redact(&mut cfg);
    Ok(Response::ok(json!({
        "config": cfg,
        "metadata": metadata("system_group"),
        "server_utc_time": timefmt::iso(ctx.now),
        "server_utc_offset_minutes": offset,
    })))
}

/// AstrBot's `update_profile`: top-level nulls dropped, read-only sections kept, the
/// `admins_id` guard, masked secrets restored, types validated, then a top-level merge.
fn update_profile(ctx: &Ctx<'_, '_>, id: &str) -> Result<Response, ApiError> {
    let sent = ctx.req.json_object()?;
    // AstrBot 4.29 judges `agent_runner` before top-level nulls are dropped: `null` is not
    // an object.
    let runner_sent = sent.get("agent_runner").cloned();
    let mut body: Map<String, Value> =
        sent.iter().filter(|(_, v)| !v.is_null()).map(|(k, v)| (k.clone(), v.clone())).collect();
    if let Some(runner) = runner_sent {
        body.insert("agent_runner".into(), runner);
    }
    let mut conn = ctx.app.db.conn()?;
    write_tx(&mut conn, |tx| {
        let current = config::profile_config(tx, id)?.ok_or_else(|| missing_profile(id))?;
        let stored = resources::profile(tx, id)?.map(|p| p.body).unwrap_or_else(|| json!({}));
        if id == DEFAULT_PROFILE {
            for section in READ_ONLY_SECTIONS {
                body.remove(section);
            }
        }
        admins_guard(ctx.who.as_ref(), body.get("admins_id"), &current["admins_id"])?;
        let mut value = Value::Object(body);
        // Nested provider lists are judged on their own targets.
        config::restore_secrets(&mut value, &current, None)?;
        config::check_secret_refs(&value, &config::process_env)?;
        let Value::Object(mut body) = value else { unreachable!("still an object") };
        config::check_local_permissions(&body)?;
        // The 4.27 and 4.29 layouts onto the one stored: the flat keys.
        config::apply_layouts(&mut body, &current, stored.get("provider_settings"))?;
        config::validate(&mut body)?;
        let mut merged = stored.as_object().cloned().unwrap_or_default();
        for (k, v) in body {
            merged.insert(k, v);
        }
        resources::set_profile_body(tx, id, &Value::Object(merged))?;
        Ok::<_, ApiError>(())
    })?;
    Ok(Response::ok_with_message(json!({}), "保存成功~"))
}

/// `PUT /api/v1/system-config`
pub fn put_system(ctx: &mut Ctx<'_, '_>) -> Result<Response, ApiError> {
    update_profile(ctx, DEFAULT_PROFILE)
}

fn default_path(ctx: &Ctx<'_, '_>) -> String {
    let db = ctx.app.settings.data_dir.join("astrbot.db");
    std::path::absolute(&db).unwrap_or(db).display().to_string()
}

fn profile_path(id: &str) -> String {
    format!("abconf_{id}.json")
}

/// `GET /api/v1/config-profiles`
pub fn list_profiles(ctx: &mut Ctx<'_, '_>) -> Result<Response, ApiError> {
    let mut list: Vec<Value> = resources::custom_profiles(&*ctx.app.db.conn()?)?
        .into_iter()
        .map(|p| json!({"path": profile_path(&p.id), "name": p.name, "id": p.id}))
        .collect();
    list.push(json!({"id": DEFAULT_PROFILE, "name": DEFAULT_PROFILE, "path": default_path(ctx)}));
    Ok(Response::ok(json!({"info_list": list})))
}

/// `GET /api/v1/configs`: custom profiles in creation order, then `default`.
pub fn list_configs(ctx: &mut Ctx<'_, '_>) -> Result<Response, ApiError> {
    let mut list: Vec<Value> = resources::custom_profiles(&*ctx.app.db.conn()?)?
        .into_iter()
        .map(|p| json!({"id": p.id.trim(), "name": p.name.trim(), "path": profile_path(&p.id), "is_default": false}))
        .collect();
    list.push(json!({"id": DEFAULT_PROFILE, "name": DEFAULT_PROFILE, "path": default_path(ctx), "is_default": true}));
    Ok(Response::ok(json!({"configs": list})))
}

/// `POST /api/v1/config-profiles` with `{"name"?, "config"?}`
pub fn create_profile(ctx: &mut Ctx<'_, '_>) -> Result<Response, ApiError> {
    let body = ctx.req.json_object()?.clone();
    let id = uuid::Uuid::new_v4().to_string();
    let name = opt_string(&body, "name")?
        .map(|n| n.trim().to_owned())
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| id.replace('-', "")[..8].to_owned());
    let mut config = match body.get("config") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(m)) => m.clone(),
        Some(_) => return Err(ApiError::bad_request("config must be an object")),
    };
    admins_guard(ctx.who.as_ref(), config.get("admins_id"), &json!(["astrbot"]))?;
    for section in READ_ONLY_SECTIONS {
        config.remove(section);
    }
    let new_layout = config::is_429_shaped(&config);
    config::check_local_permissions(&config)?;
    config::apply_layouts(&mut config, &config::profile_defaults(), None)?;
    match new_layout {
        true => config::validate_new_profile(&mut config)?,
        false => config::validate(&mut config)?,
    }
    let config = Value::Object(config);
    config::check_secret_refs(&config, &config::process_env)?;
    write_tx(&mut *ctx.app.db.conn()?, |tx| resources::insert_profile(tx, &id, &name, &config, ctx.now))?;
    Ok(Response::ok_with_message(json!({"conf_id": id}), "创建成功"))
}

/// `GET /api/v1/config-profiles/{config_id}`
pub fn get_profile(ctx: &mut Ctx<'_, '_>) -> Result<Response, ApiError> {
    let id = ctx.param(0).to_owned();
    let mut cfg = config::profile_config(&*ctx.app.db.conn()?, &id)?.ok_or_else(|| missing_profile(&id))?;
    config::redact(&mut cfg);
    Ok(Response::ok(json!({"config": cfg, "metadata": metadata("ai_group")})))
}

/// `PUT /api/v1/config-profiles/{config_id}`
pub fn put_profile(ctx: &mut Ctx<'_, '_>) -> Result<Response, ApiError> {
    let id = ctx.param(0).to_owned();
    update_profile(ctx, &id)
}

/// `PATCH /api/v1/config-profiles/{config_id}` with `{"name"}`
pub fn rename_profile(ctx: &mut Ctx<'_, '_>) -> Result<Response, ApiError> {
    let id = ctx.param(0).to_owned();
    if id == DEFAULT_PROFILE {
        return Err(ApiError::bad_request("不能更新默认配置文件的信息"));
    }
    let name = opt_string(ctx.req.json_object()?, "name")?;
    write_tx(&mut *ctx.app.db.conn()?, |tx| {
        if resources::profile(tx, &id)?.is_none() {
            return Err(ApiError::bad_request("Failed to update config profile"));
        }
        if let Some(name) = name.map(|n| n.trim().to_owned()).filter(|n| !n.is_empty()) {
            resources::rename_profile(tx, &id, &name)?;
        }
        Ok(())
    })?;
    Ok(Response::ok_with_message(json!({}), "更新成功"))
}

/// `DELETE /api/v1/config-profiles/{config_id}`; routes to it are removed too.
pub fn delete_profile(ctx: &mut Ctx<'_, '_>) -> Result<Response, ApiError> {
    let id = ctx.param(0).to_owned();
    if id == DEFAULT_PROFILE {
        return Err(ApiError::bad_request("不能删除默认配置文件"));
    }
    let mut conn = ctx.app.db.conn()?;
    write_tx(&mut conn, |tx| {
        if !resources::delete_profile(tx, &id)? {
            return Err(ApiError::bad_request("Failed to delete config profile"));
        }
        for (umo, target) in resources::routes(tx)? {
            if target == id {
                resources::delete_route(tx, &umo)?;
            }
        }
        Ok(())
    })?;
    Ok(Response::ok_with_message(json!({}), "删除成功"))
}

// ---------------------------------------------------------------------------------------
// UMO routing

/// A UMO is `platform:MessageType:session` (the session may contain `:`).
fn check_umo(umo: &str) -> Result<(), ApiError> {
    let mut parts = umo.splitn(3, ':');
    match (parts.next(), parts.next(), parts.next()) {
        (Some(p), Some(t), Some(s)) if !p.is_empty() && !t.is_empty() && !s.is_empty() => Ok(()),
        _ => Err(ApiError::bad_request(format!("Invalid umo: {umo}"))),
    }
}

fn routing_json(conn: &rusqlite::Connection) -> Result<Value, ApiError> {
    let map: Map<String, Value> = resources::routes(conn)?.into_iter().map(|(u, c)| (u, json!(c))).collect();
    Ok(json!({"routing": map}))
}

/// `GET /api/v1/config-routes`
pub fn list_routes(ctx: &mut Ctx<'_, '_>) -> Result<Response, ApiError> {
    Ok(Response::ok(routing_json(&*ctx.app.db.conn()?)?))
}

/// `PUT /api/v1/config-routes` with `{"routing": {umo: config_id}}`: replaces the table.
pub fn replace_routes(ctx: &mut Ctx<'_, '_>) -> Result<Response, ApiError> {
    let routing = match ctx.req.json_object()?.get("routing") {
        Some(Value::Object(m)) => m.clone(),
        _ => return Err(ApiError::bad_request("Missing key: routing")),
    };
    let mut conn = ctx.app.db.conn()?;
    write_tx(&mut conn, |tx| {
        resources::clear_routes(tx)?;
        for (umo, target) in &routing {
            check_umo(umo)?;
            let target =
                target.as_str().ok_or_else(|| ApiError::bad_request("routing values must be config ids"))?;
            if target == DEFAULT_PROFILE {
                continue;
            }
            if resources::profile(tx, target)?.is_none() {
                return Err(missing_profile(target));
            }
            resources::set_route(tx, umo, target)?;
        }
        Ok(())
    })?;
    Ok(Response::ok_with_message(routing_json(&conn)?, "更新成功"))
}

/// `PUT /api/v1/config-routes/{umo}` with `{"config_id"}`; `default` removes the route.
pub fn put_route(ctx: &mut Ctx<'_, '_>) -> Result<Response, ApiError> {
    let umo = ctx.param(0).to_owned();
    check_umo(&umo)?;
    let body = ctx.req.json_object()?;
    let target = opt_string(body, "config_id")?
        .or(opt_string(body, "conf_id")?)
        .filter(|s| !s.trim().is_empty())
        .ok_or_else(|| ApiError::bad_request("Missing key: config_id"))?;
    write_tx(&mut *ctx.app.db.conn()?, |tx| {
        if target == DEFAULT_PROFILE {
            resources::delete_route(tx, &umo)?;
        } else {
            if resources::profile(tx, &target)?.is_none() {
                return Err(missing_profile(&target));
            }
            resources::set_route(tx, &umo, &target)?;
        }
        Ok(())
    })?;
    Ok(Response::ok_with_message(json!({}), "更新成功"))
}

/// `GET /api/v1/config-routes/{umo}`: which settings apply to this UMO (beyond AstrBot):
/// its profile (routed or default), the provider and the persona a new chat would use.
pub fn get_route(ctx: &mut Ctx<'_, '_>) -> Result<Response, ApiError> {
    let umo = ctx.param(0).to_owned();
    check_umo(&umo)?;
    let conn = ctx.app.db.conn()?;
    let routed = resources::route(&conn, &umo)?;
    let e = config::effective(&conn, &umo, &config::SessionChoice::default())?;
    let provider_id = match &e.provider {
        config::ProviderChoice::Configured { id, .. } => id.clone(),
        config::ProviderChoice::Builtin => config::BUILTIN_PROVIDER.to_owned(),
    };
    Ok(Response::ok(json!({
        "umo": umo,
        "config_id": e.config_id,
        "routed": routed.is_some(),
        "provider_id": provider_id,
        "persona_id": e.persona.persona_id,
    })))
}

/// `DELETE /api/v1/config-routes/{umo}`
pub fn delete_route(ctx: &mut Ctx<'_, '_>) -> Result<Response, ApiError> {
    let umo = ctx.param(0).to_owned();
    write_tx(&mut *ctx.app.db.conn()?, |tx| resources::delete_route(tx, &umo))?;
    Ok(Response::ok_with_message(json!({}), "删除成功"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn umo_shape() {
        assert!(check_umo("webchat:FriendMessage:webchat!alice!s1").is_ok());
        assert!(check_umo("telegram:GroupMessage:-100:1").is_ok());
        assert_eq!(check_umo("nope").unwrap_err().message(), "Invalid umo: nope");
        assert!(check_umo("a::b").is_err());
    }
}
