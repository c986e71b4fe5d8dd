//! API-key administration: the `/api/v1/api-keys` routes and
//! AstrBot's legacy `/api/apikey/*` dashboard routes. Only the admin reaches these; the
//! route table refuses API keys before a handler runs.

use serde_json::Value;

use super::{opt_int, opt_string, opt_string_list};
use crate::app::Ctx;
use crate::db;
use crate::error::ApiError;
use crate::http::Response;
use crate::keys::{self, NewKey};

/// `GET /api/v1/api-keys`, `GET /api/apikey/list`
pub fn list(ctx: &mut Ctx<'_, '_>) -> Result<Response, ApiError> {
    let conn = ctx.app.db.conn()?;
    let rows = db::list_keys(&conn)?;
    let items: Vec<Value> = rows.iter().map(|r| keys::to_json(r, ctx.now)).collect();
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
    };
    let created_by = ctx.caller()?.username();
    let mut conn = ctx.app.db.conn()?;
    let (row, raw) = keys::create(&mut conn, &ctx.app.mac, &input, &created_by, ctx.now)?;
    drop(conn);
    ctx.app.keys_changed();
    log::info!("API key {} ({}) created by {created_by}", row.key_id, row.key_prefix);
    Ok(Response::ok(keys::created_json(&row, &raw, ctx.now)))
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
