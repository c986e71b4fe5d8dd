//! API-key administration: the `/api/v1/api-keys` routes and
//! AstrBot's legacy `/api/apikey/*` dashboard routes, and beyond AstrBot the key update
//! and the webhook mirror's secret rotation and deliveries. Only the admin reaches these;
//! the route table refuses API keys before a handler runs.

use serde_json::{Map, Value, json};

use super::{opt_int, opt_string, opt_string_list};
use crate::app::Ctx;
use crate::db::{self, webhooks as outbox};
use crate::error::ApiError;
use crate::http::Response;
use crate::keys::{self, KeyPatch, NewKey};
use crate::timefmt::iso;

/// `GET /api/v1/api-keys`, `GET /api/apikey/list`
pub fn list(ctx: &mut Ctx<'_, '_>) -> Result<Response, ApiError> {
    let rows = db::list_keys(&*ctx.app.db.conn()?)?;
    let items: Vec<Value> =
        rows.iter().map(|r| keys::to_json(r, ctx.now, ctx.app.usage_today(&r.key_id, ctx.now))).collect();
    Ok(Response::ok(Value::Array(items)))
}

/// `POST /api/v1/api-keys`, `POST /api/apikey/create`
pub fn create(ctx: &mut Ctx<'_, '_>) -> Result<Response, ApiError> {
    let body = ctx.req.json_object()?;
    let input = NewKey {
        name: opt_string(body, "name")?,
        scopes: opt_string_list(body, "scopes")?,
        expires_in_days: opt_int(body, "expires_in_days")?,
        daily_limit: opt_int(body, "daily_limit")?,
        bot_id: opt_string(body, "bot_id")?.filter(|b| !b.trim().is_empty()),
        webhook_url: opt_string(body, "webhook_url")?.filter(|u| !u.trim().is_empty()),
    };
    let created_by = ctx.caller()?.username();
    let mut conn = ctx.app.db.conn()?;
    let (saved, raw) = keys::create(&mut conn, &ctx.app.mac, &input, &created_by, ctx.now)?;
    drop(conn);
    ctx.app.keys_changed();
    log::info!("API key {} ({}) created by {created_by}", saved.row.key_id, saved.row.key_prefix);
    Ok(Response::ok(keys::created_json(&saved, &raw, ctx.now)))
}

/// The fields `PATCH /api/v1/api-keys/{key_id}` reads; any other is refused, so a typo
/// does not pass for a change.
const PATCH_FIELDS: [&str; 5] = ["name", "daily_limit", "expires_in_days", "bot_id", "webhook_url"];

/// A typed reader of one body field (`opt_int`, `opt_string`).
type FieldReader<T> = fn(&Map<String, Value>, &str) -> Result<Option<T>, ApiError>;

/// A field that `null` (or an empty string) clears: `None` absent, `Some(None)` cleared.
fn clearable<T>(
    body: &Map<String, Value>,
    field: &str,
    read: FieldReader<T>,
) -> Result<Option<Option<T>>, ApiError> {
    match body.get(field) {
        None => Ok(None),
        Some(Value::Null) => Ok(Some(None)),
        Some(Value::String(s)) if s.trim().is_empty() => Ok(Some(None)),
        Some(_) => read(body, field).map(Some),
    }
}

/// `PATCH /api/v1/api-keys/{key_id}` (beyond AstrBot): name, daily limit, expiry, bot and
/// webhook URL; `null` clears a field. The answer is the key object, with the webhook
/// secret when this call set the key's first `webhook_url`.
pub fn update(ctx: &mut Ctx<'_, '_>) -> Result<Response, ApiError> {
    let key_id = ctx.param(0).to_owned();
    let body = ctx.req.json_object()?;
    if let Some(unknown) = body.keys().find(|k| !PATCH_FIELDS.contains(&k.as_str()) && !k.starts_with('_')) {
        return Err(ApiError::bad_request(format!(
            "unknown field {unknown}: a key update takes {}",
            PATCH_FIELDS.join(", ")
        )));
    }
    let patch = KeyPatch {
        name: match body.get("name") {
            Some(Value::Null) => Some(String::new()),
            _ => opt_string(body, "name")?,
        },
        daily_limit: clearable(body, "daily_limit", opt_int)?,
        expires_in_days: clearable(body, "expires_in_days", opt_int)?,
        bot_id: clearable(body, "bot_id", opt_string)?,
        webhook_url: clearable(body, "webhook_url", opt_string)?,
    };
    let mut conn = ctx.app.db.conn()?;
    let saved = keys::update(&mut conn, &ctx.app.mac, &key_id, &patch, ctx.now)?.ok_or_else(key_not_found)?;
    drop(conn);
    ctx.app.keys_changed();
    // A new or changed receiver may take what waited for it.
    ctx.app.outbox.wake();
    log::info!("API key {key_id} updated");
    Ok(Response::ok(keys::saved_json(&saved, ctx.now, ctx.app.usage_today(&key_id, ctx.now))))
}

fn key_not_found() -> ApiError {
    ApiError::NotFound("API key not found".into())
}

/// `POST /api/v1/api-keys/{key_id}/webhook/rotate`: a new signing secret, shown once.
pub fn rotate_webhook(ctx: &mut Ctx<'_, '_>) -> Result<Response, ApiError> {
    let key_id = ctx.param(0).to_owned();
    let mut conn = ctx.app.db.conn()?;
    let secret =
        keys::rotate_webhook_secret(&mut conn, &ctx.app.mac, &key_id, ctx.now)?.ok_or_else(key_not_found)?;
    drop(conn);
    ctx.app.keys_changed();
    log::info!("API key {key_id}: webhook secret rotated");
    Ok(Response::ok(json!({"key_id": key_id, "webhook_secret": secret})))
}

fn delivery_json(d: &outbox::Delivery) -> Value {
    let time = |t: Option<i64>| t.map(iso).map_or(Value::Null, Value::String);
    json!({
        "id": d.id,
        "event_id": d.event_id,
        "status": d.status,
        "attempts": d.attempts,
        "response_code": d.response_code,
        "error": d.error,
        "created_at": iso(d.created_at),
        "last_attempt_at": time(d.last_attempt_at),
        "next_attempt_at": time(d.next_attempt_at),
        "delivered_at": time(d.delivered_at),
    })
}

/// The key a webhook route names, or 404.
fn existing_key(ctx: &Ctx<'_, '_>) -> Result<String, ApiError> {
    let key_id = ctx.param(0).to_owned();
    match db::get_key(&*ctx.app.db.conn()?, &key_id)? {
        Some(_) => Ok(key_id),
        None => Err(key_not_found()),
    }
}

/// `GET /api/v1/api-keys/{key_id}/webhook/deliveries?limit=`: the newest events of the key
/// and their delivery state, with the counts of pending and dropped events.
pub fn deliveries(ctx: &mut Ctx<'_, '_>) -> Result<Response, ApiError> {
    let key_id = existing_key(ctx)?;
    let limit = match ctx.req.query_param("limit") {
        None => 50,
        Some(v) => v
            .trim()
            .parse::<i64>()
            .ok()
            .filter(|n| (1..=1000).contains(n))
            .ok_or_else(|| ApiError::bad_request("limit must be an integer from 1 to 1000"))?,
    };
    let conn = ctx.app.db.conn()?;
    let items: Vec<Value> = outbox::deliveries(&conn, &key_id, limit)?.iter().map(delivery_json).collect();
    let (pending, dropped) = outbox::outbox_counts(&conn, &key_id)?;
    Ok(Response::ok(json!({"deliveries": items, "pending": pending, "dropped": dropped})))
}

/// `POST /api/v1/api-keys/{key_id}/webhook/deliveries/{id}/retry`: delivers the event
/// again now (with the same `webhook-id`), for another 24 hours if it keeps failing.
pub fn retry_delivery(ctx: &mut Ctx<'_, '_>) -> Result<Response, ApiError> {
    let key_id = existing_key(ctx)?;
    let not_found = || ApiError::NotFound("Delivery not found".into());
    let id: i64 = ctx.param(1).parse().map_err(|_| not_found())?;
    let mut conn = ctx.app.db.conn()?;
    let delivery = db::write_tx(&mut conn, |tx| outbox::retry_delivery(tx, &key_id, id, ctx.now))?
        .ok_or_else(not_found)?;
    drop(conn);
    ctx.app.outbox.wake();
    Ok(Response::ok(delivery_json(&delivery)))
}

/// `POST /api/v1/api-keys/{key_id}/revoke`
pub fn revoke(ctx: &mut Ctx<'_, '_>) -> Result<Response, ApiError> {
    let key_id = ctx.param(0).to_owned();
    revoke_key(ctx, &key_id)
}

/// `DELETE /api/v1/api-keys/{key_id}`
pub fn delete(ctx: &mut Ctx<'_, '_>) -> Result<Response, ApiError> {
    let key_id = ctx.param(0).to_owned();
    delete_key(ctx, &key_id)
}

/// `POST /api/apikey/revoke` with `{"key_id": ...}`
pub fn legacy_revoke(ctx: &mut Ctx<'_, '_>) -> Result<Response, ApiError> {
    let key_id = legacy_key_id(ctx)?;
    revoke_key(ctx, &key_id)
}

/// `POST /api/apikey/delete` with `{"key_id": ...}`
pub fn legacy_delete(ctx: &mut Ctx<'_, '_>) -> Result<Response, ApiError> {
    let key_id = legacy_key_id(ctx)?;
    delete_key(ctx, &key_id)
}

fn legacy_key_id(ctx: &Ctx<'_, '_>) -> Result<String, ApiError> {
    match opt_string(ctx.req.json_object()?, "key_id")? {
        Some(id) if !id.is_empty() => Ok(id),
        _ => Err(ApiError::bad_request("Missing key: key_id")),
    }
}

fn revoke_key(ctx: &mut Ctx<'_, '_>, key_id: &str) -> Result<Response, ApiError> {
    let mut conn = ctx.app.db.conn()?;
    let found = db::write_tx(&mut conn, |tx| db::revoke_key(tx, key_id, ctx.now))?;
    drop(conn);
    if !found {
        return Err(ApiError::bad_request("API key not found"));
    }
    ctx.app.keys_changed();
    log::info!("API key {key_id} revoked");
    Ok(Response::ok(Value::Null))
}

fn delete_key(ctx: &mut Ctx<'_, '_>, key_id: &str) -> Result<Response, ApiError> {
    let mut conn = ctx.app.db.conn()?;
    let found = db::write_tx(&mut conn, |tx| db::delete_key(tx, key_id))?;
    drop(conn);
    if !found {
        return Err(ApiError::bad_request("API key not found"));
    }
    ctx.app.keys_changed();
    ctx.app.quota.lock().unwrap_or_else(|e| e.into_inner()).forget(key_id);
    log::info!("API key {key_id} deleted");
    Ok(Response::ok(Value::Null))
}
