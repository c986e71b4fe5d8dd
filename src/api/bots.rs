//! Bots (scope `bot`), as AstrBot's Open API manages its platform configs: list, get,
//! create, replace, enable, delete and test, with AstrBot's request mapping
//! (`BotConfigRequest.to_dashboard_config`), messages and `/by-id` variants, and the bot
//! types with their field schemas.
//!
//! Unlike AstrBot, a bot is checked whole before anything is stored (`platforms::types`:
//! a known type, required fields, ranges, a token that looks like one), and saving it
//! starts, restarts or stops its adapter at once (`platforms::manager::apply`). Every answer
//! masks the tokens; a masked Telegram token sent back keeps the stored one only while the
//! Bot API base still points at the same scheme, host and port (the token travels in
//! every URL there), and a masked OneBot token (which only we check) is always kept. Each
//! bot in a listing carries its adapter's `state` (beyond AstrBot), which is never stored.

use serde_json::{Map, Value, json};

use super::{body_or_empty, opt_bool, opt_string, parse_bool, required_query};
use crate::app::Ctx;
use crate::config;
use crate::db::resources;
use crate::db::write_tx;
use crate::error::ApiError;
use crate::http::Response;
use crate::platforms::{manager, types};

/// Bots at most: each enabled one holds a thread (and a OneBot one a port), so a runaway
/// script cannot start them without bound.
const MAX_BOTS: usize = 64;

/// Longest bot id: it is part of every UMO and session of the bot.
const MAX_ID_CHARS: usize = 128;

fn bad(message: impl Into<String>) -> ApiError {
    ApiError::bad_request(message)
}

fn not_found(id: &str) -> ApiError {
    bad(format!("Bot {id} not found"))
}

/// A stored bot as shown: tokens masked, its adapter's state added.
fn shown(ctx: &Ctx<'_, '_>, id: &str, config: &Value) -> Value {
    let mut v = config.clone();
    config::redact(&mut v);
    if let Some(map) = v.as_object_mut() {
        map.insert("state".into(), ctx.app.platforms.state(id).to_json());
    }
    v
}

/// AstrBot's `BotConfigRequest.to_dashboard_config`: the body's non-empty `config`, else
/// the body without `bot_id`, `config`, `enabled` and nulls; `id` from the path, else the
/// body, when missing; `type` from the body when missing; `enabled`, else `enable`, else
/// the config's own `enable`, else true. `state` (what a listing shows) is never stored.
fn dashboard_config(
    body: &Map<String, Value>,
    fallback_id: Option<&str>,
) -> Result<Map<String, Value>, ApiError> {
    let mut config = match body.get("config") {
        Some(Value::Object(c)) if !c.is_empty() => c.clone(),
        None | Some(Value::Null | Value::Object(_)) => body
            .iter()
            .filter(|(k, v)| !matches!(k.as_str(), "bot_id" | "config" | "enabled") && !v.is_null())
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        Some(_) => return Err(bad("config must be an object")),
    };
    config.remove("state");
    if config.get("id").is_none_or(Value::is_null) {
        let id = fallback_id.map(|s| json!(s)).or_else(|| body.get("id").filter(|v| !v.is_null()).cloned());
        if let Some(id) = id {
            config.insert("id".into(), id);
        }
    }
    if config.get("type").is_none_or(Value::is_null)
        && let Some(t) = body.get("type").filter(|v| !v.is_null())
    {
        config.insert("type".into(), t.clone());
    }
    let enable = match (opt_bool(body, "enabled")?, body.get("enable")) {
        (Some(e), _) => Some(json!(e)),
        (None, Some(e)) if !e.is_null() => Some(e.clone()),
        _ => None,
    };
    match enable {
        Some(e) => {
            config.insert("enable".into(), e);
        }
        None if config.get("enable").is_none_or(Value::is_null) => {
            config.insert("enable".into(), json!(true));
        }
        None => {}
    }
    // pydantic-lax booleans, as AstrBot's request model reads `enable`.
    if let Some(e) = config.get("enable").filter(|e| !e.is_boolean()) {
        let fixed = parse_bool(e).ok_or_else(|| bad("enable must be a boolean"))?;
        config.insert("enable".into(), json!(fixed));
    }
    Ok(config)
}

/// The id a config names: a non-empty string (numbers as their text), with `:` and `!`
/// made `_` as AstrBot's platform manager does (they separate a UMO's parts).
fn config_id(config: &Map<String, Value>) -> Result<String, ApiError> {
    let id = match config.get("id") {
        Some(Value::String(s)) if !s.trim().is_empty() => s.trim().to_owned(),
        Some(Value::Number(n)) => n.to_string(),
        Some(Value::String(_)) | None | Some(Value::Null) => {
            return Err(bad("Bot config must have an 'id' field"));
        }
        Some(_) => return Err(bad("id must be a string")),
    };
    if id.chars().count() > MAX_ID_CHARS {
        return Err(bad(format!("id must be at most {MAX_ID_CHARS} characters")));
    }
    if id.chars().any(char::is_control) {
        return Err(bad("id must not contain control characters"));
    }
    Ok(id.replace([':', '!'], "_"))
}

/// Checks a config to be stored as bot `id` (the new one, or the one replacing `stored`):
/// the type's fields, masked tokens restored where allowed, and the ports other OneBot
/// bots listen on.
fn checked(
    conn: &rusqlite::Connection,
    id: &str,
    mut config: Map<String, Value>,
    stored: Option<&Value>,
) -> Result<Value, ApiError> {
    config.insert("id".into(), json!(id));
    if id == "webchat" && config.get("type").and_then(Value::as_str) != Some("webchat") {
        return Err(bad("Bot id webchat is reserved for the built-in web chat"));
    }
    if let Some(stored) = stored {
        restore_tokens(&mut config, stored)?;
    }
    types::validate(&mut config).map_err(bad)?;
    if config.get("type").and_then(Value::as_str) == Some("aiocqhttp") {
        let port = config.get("ws_reverse_port").and_then(Value::as_i64);
        for other in resources::bots(conn)? {
            if other.id != id
                && other.config["type"] == "aiocqhttp"
                && types::with_defaults(&other.config)["ws_reverse_port"].as_i64() == port
            {
                return Err(bad(format!(
                    "ws_reverse_port {} is already used by bot {}",
                    port.unwrap_or_default(),
                    other.id
                )));
            }
        }
    }
    Ok(Value::Object(config))
}

/// Puts stored tokens back where the request sent their masks. A Telegram token goes into
/// every Bot API URL, so its mask is honoured only while `telegram_api_base_url` and
/// `telegram_file_base_url` keep their scheme, host and port.
fn restore_tokens(config: &mut Map<String, Value>, stored: &Value) -> Result<(), ApiError> {
    let old = types::with_defaults(stored);
    let new = types::with_defaults(&Value::Object(config.clone()));
    for field in ["telegram_token", "ws_reverse_token"] {
        let Some(secret) = old[field].as_str().filter(|s| !s.is_empty()) else { continue };
        if config.get(field).and_then(Value::as_str) != Some(config::mask(secret).as_str()) {
            continue;
        }
        if field == "telegram_token" {
            for base in ["telegram_api_base_url", "telegram_file_base_url"] {
                let (a, b) = (old[base].as_str().unwrap_or_default(), new[base].as_str().unwrap_or_default());
                if !config::same_url_endpoint(a, b) {
                    return Err(bad(format!("{base} changed: send the token again")));
                }
            }
        }
        config.insert(field.into(), json!(secret));
    }
    Ok(())
}

/// `GET /api/v1/bots` (`?enabled=&type=`)
pub fn list(ctx: &mut Ctx<'_, '_>) -> Result<Response, ApiError> {
    let enabled = match ctx.req.query_param("enabled").filter(|s| !s.is_empty()) {
        None => None,
        Some(v) => Some(parse_bool(&json!(v)).ok_or_else(|| bad("enabled must be a boolean"))?),
    };
    let kind = ctx.req.query_param("type").filter(|s| !s.is_empty()).map(str::to_owned);
    let bots = resources::bots(&*ctx.app.db.conn()?)?;
    let shown: Vec<Value> = bots
        .iter()
        .filter(|b| enabled.is_none_or(|e| types::enabled(&b.config) == e))
        .filter(|b| kind.as_deref().is_none_or(|k| b.config["type"].as_str() == Some(k)))
        .map(|b| shown(ctx, &b.id, &b.config))
        .collect();
    Ok(Response::ok(json!({ "bots": shown })))
}

fn get_by(ctx: &Ctx<'_, '_>, id: &str) -> Result<Response, ApiError> {
    let bot = resources::bot(&*ctx.app.db.conn()?, id)?.ok_or_else(|| not_found(id))?;
    Ok(Response::ok(json!({ "bot": shown(ctx, &bot.id, &bot.config) })))
}

/// `GET /api/v1/bots/by-id?bot_id=`
pub fn get_query(ctx: &mut Ctx<'_, '_>) -> Result<Response, ApiError> {
    let id = required_query(ctx, "bot_id")?;
    get_by(ctx, &id)
}

/// `GET /api/v1/bots/{bot_id}`
pub fn get(ctx: &mut Ctx<'_, '_>) -> Result<Response, ApiError> {
    let id = ctx.param(0).to_owned();
    get_by(ctx, &id)
}

/// `POST /api/v1/bots`
pub fn create(ctx: &mut Ctx<'_, '_>) -> Result<Response, ApiError> {
    let body = ctx.req.json_object()?.clone();
    let config = dashboard_config(&body, None)?;
    let id = config_id(&config)?;
    let mut conn = ctx.app.db.conn()?;
    let now = ctx.now;
    let stored = write_tx(&mut conn, |tx| {
        if resources::bot(tx, &id)?.is_some() {
            return Err(bad(format!("Bot {id} already exists")));
        }
        if resources::bots(tx)?.len() >= MAX_BOTS {
            return Err(bad(format!("At most {MAX_BOTS} bots")));
        }
        let config = checked(tx, &id, config, None)?;
        resources::put_bot(tx, &id, &config, now)?;
        Ok::<_, ApiError>(config)
    })?;
    drop(conn);
    log::info!("bot {id} ({}) created", stored["type"].as_str().unwrap_or_default());
    manager::apply(ctx.app, &id);
    Ok(Response::ok_with_message(json!({}), "新增平台配置成功~"))
}

/// Replaces bot `id` with `config` (AstrBot's full replacement, no merge) and restarts it.
fn update(ctx: &Ctx<'_, '_>, id: &str, config: Map<String, Value>) -> Result<Response, ApiError> {
    if let Some(new_id) = config.get("id").filter(|v| !v.is_null()) {
        let same = match new_id {
            Value::String(s) => s.trim() == id,
            Value::Number(n) => n.to_string() == id,
            _ => false,
        };
        if !same {
            return Err(bad("Bot id cannot be changed"));
        }
    }
    let mut conn = ctx.app.db.conn()?;
    let now = ctx.now;
    write_tx(&mut conn, |tx| {
        let old = resources::bot(tx, id)?.ok_or_else(|| not_found(id))?;
        let config = checked(tx, id, config, Some(&old.config))?;
        resources::put_bot(tx, id, &config, now)?;
        Ok::<_, ApiError>(())
    })?;
    drop(conn);
    log::info!("bot {id} updated");
    manager::apply(ctx.app, id);
    Ok(Response::ok_with_message(json!({}), "更新平台配置成功~"))
}

/// `PUT /api/v1/bots/by-id` (`bot_id` in the body)
pub fn update_body(ctx: &mut Ctx<'_, '_>) -> Result<Response, ApiError> {
    let body = body_or_empty(ctx)?;
    let id = opt_string(&body, "bot_id")?
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .ok_or_else(|| bad("Missing key: bot_id"))?;
    let config = dashboard_config(&body, Some(&id))?;
    update(ctx, &id, config)
}

/// `PUT /api/v1/bots/{bot_id}`
pub fn update_path(ctx: &mut Ctx<'_, '_>) -> Result<Response, ApiError> {
    let id = ctx.param(0).to_owned();
    let body = body_or_empty(ctx)?;
    let config = dashboard_config(&body, Some(&id))?;
    update(ctx, &id, config)
}

fn delete_by(ctx: &Ctx<'_, '_>, id: &str) -> Result<Response, ApiError> {
    let deleted = write_tx(&mut *ctx.app.db.conn()?, |tx| resources::delete_bot(tx, id))?;
    if !deleted {
        return Err(not_found(id));
    }
    log::info!("bot {id} deleted");
    manager::apply(ctx.app, id);
    Ok(Response::ok_with_message(json!({}), "删除平台配置成功~"))
}

/// `DELETE /api/v1/bots/by-id?bot_id=`
pub fn delete_query(ctx: &mut Ctx<'_, '_>) -> Result<Response, ApiError> {
    let id = required_query(ctx, "bot_id")?;
    delete_by(ctx, &id)
}

/// `DELETE /api/v1/bots/{bot_id}`
pub fn delete(ctx: &mut Ctx<'_, '_>) -> Result<Response, ApiError> {
    let id = ctx.param(0).to_owned();
    delete_by(ctx, &id)
}

fn set_enabled(ctx: &Ctx<'_, '_>, id: &str, enabled: bool) -> Result<Response, ApiError> {
    let mut conn = ctx.app.db.conn()?;
    let now = ctx.now;
    write_tx(&mut conn, |tx| {
        let mut config = resources::bot(tx, id)?.ok_or_else(|| not_found(id))?.config;
        config["enable"] = json!(enabled);
        resources::put_bot(tx, id, &config, now)?;
        Ok::<_, ApiError>(())
    })?;
    drop(conn);
    log::info!("bot {id} {}", if enabled { "enabled" } else { "disabled" });
    manager::apply(ctx.app, id);
    Ok(Response::ok_with_message(json!({}), "更新平台配置成功~"))
}

/// `PATCH /api/v1/bots/enabled` with `{"bot_id", "enabled"}` (a missing `enabled` is false,
/// as in AstrBot)
pub fn set_enabled_body(ctx: &mut Ctx<'_, '_>) -> Result<Response, ApiError> {
    let body = body_or_empty(ctx)?;
    let id = opt_string(&body, "bot_id")?
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .ok_or_else(|| bad("Missing key: bot_id"))?;
    let enabled = opt_bool(&body, "enabled")?.unwrap_or(false);
    set_enabled(ctx, &id, enabled)
}

/// `PATCH /api/v1/bots/{bot_id}/enabled` with `{"enabled"}` (required)
pub fn set_enabled_path(ctx: &mut Ctx<'_, '_>) -> Result<Response, ApiError> {
    let id = ctx.param(0).to_owned();
    let body = body_or_empty(ctx)?;
    let enabled = opt_bool(&body, "enabled")?.ok_or_else(|| bad("Missing key: enabled"))?;
    set_enabled(ctx, &id, enabled)
}

/// A live check of a bot's connection: the adapter's own (`getMe` for Telegram, the
/// connected accounts for OneBot), or why there is nothing to check.
fn test_by(ctx: &Ctx<'_, '_>, id: &str) -> Result<Response, ApiError> {
    let bot = resources::bot(&*ctx.app.db.conn()?, id)?.ok_or_else(|| not_found(id))?;
    let state = ctx.app.platforms.state(id);
    let mut result = match ctx.app.platforms.adapter(id) {
        Some(adapter) => adapter.test(),
        None if bot.config["type"] == "webchat" => json!({"status": "ok", "message": "webchat is built in"}),
        None if !types::enabled(&bot.config) => json!({"status": "error", "message": "the bot is disabled"}),
        None => {
            json!({"status": "error", "message": state.error.clone().unwrap_or_else(|| "the bot is not running".into())})
        }
    };
    if let Some(map) = result.as_object_mut() {
        map.insert("id".into(), json!(id));
        map.insert("state".into(), state.to_json());
    }
    Ok(Response::ok(result))
}

/// `POST /api/v1/bots/test` (`bot_id` in the body)
pub fn test_body(ctx: &mut Ctx<'_, '_>) -> Result<Response, ApiError> {
    let body = body_or_empty(ctx)?;
    let id = opt_string(&body, "bot_id")?
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .ok_or_else(|| bad("Missing key: bot_id"))?;
    test_by(ctx, &id)
}

/// `POST /api/v1/bots/{bot_id}/test`
pub fn test(ctx: &mut Ctx<'_, '_>) -> Result<Response, ApiError> {
    let id = ctx.param(0).to_owned();
    test_by(ctx, &id)
}

/// `GET /api/v1/bot-types`
pub fn bot_types(_ctx: &mut Ctx<'_, '_>) -> Result<Response, ApiError> {
    Ok(Response::ok(types::bot_types()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn request_mapping_follows_astrbot() {
        let a =
            dashboard_config(&map(json!({"id": "qq", "type": "aiocqhttp", "ws_reverse_port": 6199})), None)
                .unwrap();
        let b = dashboard_config(
            &map(json!({"type": "aiocqhttp", "enabled": true, "config": {"id": "qq", "ws_reverse_port": 6199}})),
            None,
        )
        .unwrap();
        assert_eq!(a, b);
        assert_eq!(a["enable"], true);
        let off = dashboard_config(&map(json!({"id": "x", "enable": "no"})), None).unwrap();
        assert_eq!(off["enable"], false);
        let path =
            dashboard_config(&map(json!({"type": "telegram", "state": {"status": "running"}})), Some("p"))
                .unwrap();
        assert_eq!(path["id"], "p");
        assert!(path.get("state").is_none(), "a listing's state is never stored");
        assert_eq!(config_id(&map(json!({"id": "a:b!c"}))).unwrap(), "a_b_c");
        assert!(config_id(&map(json!({"id": " "}))).is_err());
        assert!(config_id(&map(json!({"id": "x".repeat(129)}))).is_err());
        assert!(dashboard_config(&map(json!({"id": "x", "type": "webchat", "config": "no"})), None).is_err());
    }

    #[test]
    fn a_masked_telegram_token_follows_only_the_same_endpoint() {
        let stored = json!({"type": "telegram", "telegram_token": "123456:ABCDEFGHIJ", "telegram_api_base_url": "http://a:1/bot"});
        let masked = config::mask("123456:ABCDEFGHIJ");
        let mut same = map(
            json!({"type": "telegram", "telegram_token": masked, "telegram_api_base_url": "http://A:1/bot"}),
        );
        restore_tokens(&mut same, &stored).unwrap();
        assert_eq!(same["telegram_token"], "123456:ABCDEFGHIJ");
        let mut moved = map(
            json!({"type": "telegram", "telegram_token": masked, "telegram_api_base_url": "http://evil:1/bot"}),
        );
        let e = restore_tokens(&mut moved, &stored).unwrap_err();
        assert_eq!(e.message(), "telegram_api_base_url changed: send the token again");
        let mut fresh = map(
            json!({"type": "telegram", "telegram_token": "9:new", "telegram_api_base_url": "http://evil:1/bot"}),
        );
        restore_tokens(&mut fresh, &stored).unwrap();
        assert_eq!(fresh["telegram_token"], "9:new");
    }
}
