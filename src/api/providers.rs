//! Provider sources and providers (scope `provider`), as AstrBot's dashboard manages them:
//! the vendor connections and the models on them, with AstrBot's request mapping, upsert,
//! rename and cascade rules. Keys are masked in every answer; a masked key sent back in a
//! PUT keeps the stored one only while the source or provider still sends it to the same
//! scheme, host and port (and proxy); `$NAME` keys are checked when saved against the rule
//! in `config` (only `*_API_KEY` names or those in `ASTRBOT_SECRET_ENV`), so a request can
//! never read an arbitrary variable of the server's environment.

use serde_json::{Map, Value, json};

use super::{body_or_empty, opt_bool, opt_string, parse_bool, required_query};
use crate::app::Ctx;
use crate::config::{self, provider_type_of};
use crate::db::resources::{self, Docs};
use crate::db::write_tx;
use crate::error::ApiError;
use crate::http::Response;

/// The adapter types this appliance can talk to.
pub const SUPPORTED_TYPES: [&str; 2] = ["openai_chat_completion", "anthropic_chat_completion"];

fn redacted(mut v: Value) -> Value {
    config::redact(&mut v);
    v
}

/// The body without the request-only keys and without nulls, or its non-empty `config`.
fn base_config(body: &Map<String, Value>, request_keys: &[&str]) -> Map<String, Value> {
    if let Some(Value::Object(config)) = body.get("config")
        && !config.is_empty()
    {
        return config.clone();
    }
    body.iter()
        .filter(|(k, v)| !request_keys.contains(&k.as_str()) && !v.is_null())
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

fn id_of(v: &Map<String, Value>) -> Option<String> {
    match v.get("id") {
        Some(Value::String(s)) if !s.trim().is_empty() => Some(s.trim().to_owned()),
        Some(Value::Number(n)) => Some(n.to_string()),
        _ => None,
    }
}

// ---------------------------------------------------------------------------------------
// Provider sources

/// AstrBot's `ProviderSourceRequest.to_dashboard_config`.
fn source_config(body: &Map<String, Value>, fallback_id: Option<&str>) -> Map<String, Value> {
    let mut config = base_config(body, &["source_id", "config"]);
    if id_of(&config).is_none()
        && let Some(id) = id_of(body).or_else(|| fallback_id.map(str::to_owned))
    {
        config.insert("id".into(), json!(id));
    }
    config
}

fn check_source(config: &mut Map<String, Value>) -> Result<(), ApiError> {
    let kind = config.get("type").and_then(Value::as_str).unwrap_or("openai_chat_completion").to_owned();
    if !SUPPORTED_TYPES.contains(&kind.as_str()) {
        return Err(ApiError::bad_request(format!(
            "Unsupported provider source type: {kind}. Supported types: {}",
            SUPPORTED_TYPES.join(", ")
        )));
    }
    config.insert("type".into(), json!(kind));
    if !config.contains_key("provider_type") {
        config.insert("provider_type".into(), json!("chat_completion"));
    }
    if let Some(key) = config.get("key")
        && !key.is_array()
        && !key.is_null()
    {
        return Err(ApiError::bad_request("key must be a list of strings"));
    }
    // AstrBot's save-time type rules for the template's fields; a source that passes them
    // is one the listing's own schema describes.
    config::validate_source(config)
}

/// AstrBot's `upsert_provider_source`: replaces the source at `source_id` (keeping its
/// place) or appends; a changed id moves its providers along.
fn upsert_source(
    ctx: &Ctx<'_, '_>,
    source_id: Option<&str>,
    mut config: Map<String, Value>,
) -> Result<Response, ApiError> {
    let new_id = id_of(&config).or_else(|| source_id.map(|s| s.trim().to_owned())).unwrap_or_default();
    if new_id.is_empty() {
        return Err(ApiError::bad_request("Provider source config must have an 'id' field"));
    }
    config.insert("id".into(), json!(new_id));
    check_source(&mut config)?;
    let old_id = source_id.map(str::to_owned).unwrap_or_else(|| new_id.clone());
    let mut conn = ctx.app.db.conn()?;
    write_tx(&mut conn, |tx| {
        if new_id != old_id && resources::doc(tx, Docs::ProviderSources, &new_id)?.is_some() {
            return Err(ApiError::bad_request(format!(
                "Provider source ID '{new_id}' exists already, please try another ID."
            )));
        }
        let mut value = Value::Object(config);
        if let Some(stored) = resources::doc(tx, Docs::ProviderSources, &old_id)? {
            let change = config::target_change(&stored, &value);
            config::restore_secrets(&mut value, &stored, change)?;
            config::check_inheriting_providers(tx, &old_id, &stored, &value)?;
        }
        config::check_secret_refs(&value, &config::process_env)?;
        resources::put_doc(tx, Docs::ProviderSources, &old_id, &new_id, &value)?;
        if new_id != old_id {
            for mut p in resources::docs(tx, Docs::Providers)? {
                if p["provider_source_id"] == old_id.as_str() {
                    p["provider_source_id"] = json!(new_id);
                    let id = p["id"].as_str().unwrap_or_default().to_owned();
                    resources::put_doc(tx, Docs::Providers, &id, &id, &p)?;
                }
            }
        }
        Ok(())
    })?;
    Ok(Response::ok_with_message(json!({}), "更新 provider source 成功"))
}

/// `GET /api/v1/provider-sources`
pub fn list_sources(ctx: &mut Ctx<'_, '_>) -> Result<Response, ApiError> {
    let sources = resources::docs(&*ctx.app.db.conn()?, Docs::ProviderSources)?;
    Ok(Response::ok(json!({"provider_sources": sources.into_iter().map(redacted).collect::<Vec<_>>()})))
}

/// `POST /api/v1/provider-sources` (an upsert)
pub fn create_source(ctx: &mut Ctx<'_, '_>) -> Result<Response, ApiError> {
    let body = ctx.req.json_object()?.clone();
    let config = source_config(&body, None);
    upsert_source(ctx, None, config)
}

fn get_source_by(ctx: &Ctx<'_, '_>, id: &str) -> Result<Response, ApiError> {
    let source = resources::doc(&*ctx.app.db.conn()?, Docs::ProviderSources, id)?
        .ok_or_else(|| ApiError::bad_request(format!("Provider source {id} not found")))?;
    Ok(Response::ok(json!({"provider_source": redacted(source)})))
}

/// `GET /api/v1/provider-sources/by-id?source_id=`
pub fn get_source_query(ctx: &mut Ctx<'_, '_>) -> Result<Response, ApiError> {
    let id = required_query(ctx, "source_id")?;
    get_source_by(ctx, &id)
}

/// `GET /api/v1/provider-sources/{source_id}`
pub fn get_source(ctx: &mut Ctx<'_, '_>) -> Result<Response, ApiError> {
    let id = ctx.param(0).to_owned();
    get_source_by(ctx, &id)
}

/// `PUT /api/v1/provider-sources/by-id` with `source_id` in the body
pub fn update_source_body(ctx: &mut Ctx<'_, '_>) -> Result<Response, ApiError> {
    let body = ctx.req.json_object()?.clone();
    let source_id = opt_string(&body, "source_id")?
        .filter(|s| !s.trim().is_empty())
        .ok_or_else(|| ApiError::bad_request("Missing key: source_id"))?;
    let config = source_config(&body, Some(&source_id));
    upsert_source(ctx, Some(&source_id), config)
}

/// `PUT /api/v1/provider-sources/{source_id}`
pub fn update_source(ctx: &mut Ctx<'_, '_>) -> Result<Response, ApiError> {
    let source_id = ctx.param(0).to_owned();
    let body = ctx.req.json_object()?.clone();
    let config = source_config(&body, None);
    upsert_source(ctx, Some(&source_id), config)
}

fn delete_source_by(ctx: &Ctx<'_, '_>, id: &str) -> Result<Response, ApiError> {
    let mut conn = ctx.app.db.conn()?;
    write_tx(&mut conn, |tx| {
        if !resources::delete_doc(tx, Docs::ProviderSources, id)? {
            return Err(ApiError::bad_request(format!("Provider source {id} not found")));
        }
        for p in resources::docs(tx, Docs::Providers)? {
            if p["provider_source_id"] == id {
                resources::delete_doc(tx, Docs::Providers, p["id"].as_str().unwrap_or_default())?;
            }
        }
        Ok(())
    })?;
    Ok(Response::ok_with_message(json!({}), "删除 provider source 成功"))
}

/// `DELETE /api/v1/provider-sources/by-id?source_id=`
pub fn delete_source_query(ctx: &mut Ctx<'_, '_>) -> Result<Response, ApiError> {
    let id = required_query(ctx, "source_id")?;
    delete_source_by(ctx, &id)
}

/// `DELETE /api/v1/provider-sources/{source_id}`
pub fn delete_source(ctx: &mut Ctx<'_, '_>) -> Result<Response, ApiError> {
    let id = ctx.param(0).to_owned();
    delete_source_by(ctx, &id)
}

// ---------------------------------------------------------------------------------------
// Providers

/// AstrBot's `ProviderConfigRequest.to_dashboard_config`: a request body mapped to the
/// stored provider config, so clients written for AstrBot save the same fields here.
fn provider_config(
    body: &Map<String, Value>,
    fallback_id: Option<&str>,
) -> Result<Map<String, Value>, ApiError> {
    let mut config = base_config(
        body,
        &["provider_id", "source_id", "provider_config", "config", "capability", "enabled"],
    );
    if id_of(&config).is_none()
        && let Some(id) = fallback_id.map(str::to_owned).or_else(|| id_of(body))
    {
        config.insert("id".into(), json!(id));
    }
    match opt_string(body, "source_id")? {
        Some(source) => {
            config.insert("provider_source_id".into(), json!(source));
        }
        None => {
            if !config.contains_key("provider_source_id")
                && let Some(s) = body.get("provider_source_id").filter(|v| !v.is_null())
            {
                config.insert("provider_source_id".into(), s.clone());
            }
        }
    }
    let enable = opt_bool(body, "enabled")?.or(opt_bool(body, "enable")?).unwrap_or(true);
    config.insert("enable".into(), json!(enable));
    if !config.contains_key("provider_type")
        && let Some(cap) = opt_string(body, "capability")?
    {
        config.insert("provider_type".into(), json!(provider_type_of(&cap)));
    }
    if config.get("provider_source_id").and_then(Value::as_str).is_some_and(|s| !s.is_empty()) {
        config.remove("reasoning");
    }
    Ok(config)
}

fn shown_provider(conn: &rusqlite::Connection, p: Value, merged: bool) -> Result<Value, ApiError> {
    let mut v = if merged { config::merged_provider(conn, &p)? } else { p };
    config::redact(&mut v);
    Ok(v)
}

/// `GET /api/v1/providers?capability=&source_id=&enabled=`
pub fn list_providers(ctx: &mut Ctx<'_, '_>) -> Result<Response, ApiError> {
    let capability = ctx.req.query_param("capability").filter(|c| !c.is_empty()).map(provider_type_of);
    let source = ctx.req.query_param("source_id").filter(|s| !s.is_empty()).map(str::to_owned);
    let enabled = match ctx.req.query_param("enabled").filter(|s| !s.is_empty()) {
        Some(v) => {
            Some(parse_bool(&json!(v)).ok_or_else(|| ApiError::bad_request("enabled must be a boolean"))?)
        }
        None => None,
    };
    let conn = ctx.app.db.conn()?;
    let mut out = Vec::new();
    for p in resources::docs(&conn, Docs::Providers)? {
        let merged = config::merged_provider(&conn, &p)?;
        if capability.as_ref().is_some_and(|c| merged["provider_type"] != c.as_str())
            || source.as_ref().is_some_and(|s| merged["provider_source_id"] != s.as_str())
            || enabled.is_some_and(|e| merged["enable"].as_bool().unwrap_or(true) != e)
        {
            continue;
        }
        out.push(redacted(merged));
    }
    Ok(Response::ok(json!({"providers": out, "model_metadata": {}})))
}

/// `POST /api/v1/providers`
pub fn create_provider(ctx: &mut Ctx<'_, '_>) -> Result<Response, ApiError> {
    let body = ctx.req.json_object()?.clone();
    let config = provider_config(&body, None)?;
    let id =
        id_of(&config).ok_or_else(|| ApiError::bad_request("New provider config must have an 'id' field"))?;
    let mut conn = ctx.app.db.conn()?;
    write_tx(&mut conn, |tx| {
        if resources::doc(tx, Docs::Providers, &id)?.is_some() {
            return Err(ApiError::bad_request(format!("Provider ID {id} already exists")));
        }
        let mut config = config;
        config.insert("id".into(), json!(id));
        let value = Value::Object(config);
        config::check_secret_refs(&value, &config::process_env)?;
        resources::put_doc(tx, Docs::Providers, &id, &id, &value)?;
        Ok(())
    })?;
    Ok(Response::ok_with_message(json!({}), "新增服务提供商配置成功"))
}

fn merged_flag(ctx: &Ctx<'_, '_>) -> bool {
    ctx.req.query_param("merged").and_then(|v| parse_bool(&json!(v))).unwrap_or(false)
}

fn get_provider_by(ctx: &Ctx<'_, '_>, id: &str) -> Result<Response, ApiError> {
    let conn = ctx.app.db.conn()?;
    let p = resources::doc(&conn, Docs::Providers, id)?
        .ok_or_else(|| ApiError::bad_request(format!("Provider {id} not found")))?;
    let shown = shown_provider(&conn, p, merged_flag(ctx))?;
    Ok(Response::ok(json!({"provider": shown, "model_metadata": {}})))
}

/// `GET /api/v1/providers/by-id?provider_id=&merged=`
pub fn get_provider_query(ctx: &mut Ctx<'_, '_>) -> Result<Response, ApiError> {
    let id = required_query(ctx, "provider_id")?;
    get_provider_by(ctx, &id)
}

/// `GET /api/v1/providers/{provider_id}?merged=`
pub fn get_provider(ctx: &mut Ctx<'_, '_>) -> Result<Response, ApiError> {
    let id = ctx.param(0).to_owned();
    get_provider_by(ctx, &id)
}

/// Full replacement of a provider, renaming it when the config carries another id.
fn replace_provider(
    ctx: &Ctx<'_, '_>,
    old_id: &str,
    config: Map<String, Value>,
) -> Result<Response, ApiError> {
    let new_id = id_of(&config).unwrap_or_else(|| old_id.to_owned());
    let mut conn = ctx.app.db.conn()?;
    write_tx(&mut conn, |tx| {
        let stored = resources::doc(tx, Docs::Providers, old_id)?
            .ok_or_else(|| ApiError::bad_request(format!("Provider ID {old_id} not found")))?;
        if new_id != old_id && resources::doc(tx, Docs::Providers, &new_id)?.is_some() {
            return Err(ApiError::bad_request(format!("Provider ID {new_id} already exists")));
        }
        let mut value = Value::Object(config);
        value["id"] = json!(new_id);
        // The target is the merged one: a provider may take its api_base from its source,
        // and a new provider_source_id moves it as surely as a new api_base.
        let change = config::target_change(
            &config::merged_provider(tx, &stored)?,
            &config::merged_provider(tx, &value)?,
        );
        config::restore_secrets(&mut value, &stored, change)?;
        config::check_secret_refs(&value, &config::process_env)?;
        resources::put_doc(tx, Docs::Providers, old_id, &new_id, &value)?;
        Ok(())
    })?;
    Ok(Response::ok_with_message(json!({}), "更新成功，已经实时生效~"))
}

/// `PUT /api/v1/providers/by-id` with `provider_id` in the body
pub fn update_provider_body(ctx: &mut Ctx<'_, '_>) -> Result<Response, ApiError> {
    let body = ctx.req.json_object()?.clone();
    let old = opt_string(&body, "provider_id")?
        .filter(|s| !s.trim().is_empty())
        .ok_or_else(|| ApiError::bad_request("Missing key: provider_id"))?;
    let config = provider_config(&body, Some(&old))?;
    replace_provider(ctx, &old, config)
}

/// `PUT /api/v1/providers/{provider_id}`
pub fn update_provider(ctx: &mut Ctx<'_, '_>) -> Result<Response, ApiError> {
    let old = ctx.param(0).to_owned();
    let body = ctx.req.json_object()?.clone();
    let config = provider_config(&body, Some(&old))?;
    replace_provider(ctx, &old, config)
}

fn delete_provider_by(ctx: &Ctx<'_, '_>, id: &str) -> Result<Response, ApiError> {
    // AstrBot answers success for an unknown id too.
    write_tx(&mut *ctx.app.db.conn()?, |tx| resources::delete_doc(tx, Docs::Providers, id))?;
    Ok(Response::ok_with_message(json!({}), "删除成功，已经实时生效。"))
}

/// `DELETE /api/v1/providers/by-id?provider_id=`
pub fn delete_provider_query(ctx: &mut Ctx<'_, '_>) -> Result<Response, ApiError> {
    let id = required_query(ctx, "provider_id")?;
    delete_provider_by(ctx, &id)
}

/// `DELETE /api/v1/providers/{provider_id}`
pub fn delete_provider(ctx: &mut Ctx<'_, '_>) -> Result<Response, ApiError> {
    let id = ctx.param(0).to_owned();
    delete_provider_by(ctx, &id)
}

fn set_enabled(ctx: &Ctx<'_, '_>, id: &str, enabled: bool) -> Result<Response, ApiError> {
    let mut conn = ctx.app.db.conn()?;
    write_tx(&mut conn, |tx| {
        let mut p = resources::doc(tx, Docs::Providers, id)?
            .ok_or_else(|| ApiError::bad_request(format!("Provider {id} not found")))?;
        p["enable"] = json!(enabled);
        resources::put_doc(tx, Docs::Providers, id, id, &p)?;
        Ok::<_, ApiError>(())
    })?;
    Ok(Response::ok_with_message(json!({}), "更新成功，已经实时生效~"))
}

/// `PATCH /api/v1/providers/enabled` with `{"provider_id", "enabled"}` (missing: false)
pub fn set_enabled_body(ctx: &mut Ctx<'_, '_>) -> Result<Response, ApiError> {
    let body = body_or_empty(ctx)?;
    let id = opt_string(&body, "provider_id")?
        .filter(|s| !s.trim().is_empty())
        .ok_or_else(|| ApiError::bad_request("Missing key: provider_id"))?;
    let enabled = opt_bool(&body, "enabled")?.unwrap_or(false);
    set_enabled(ctx, &id, enabled)
}

/// `PATCH /api/v1/providers/{provider_id}/enabled` with `{"enabled"}` (required)
pub fn set_enabled_path(ctx: &mut Ctx<'_, '_>) -> Result<Response, ApiError> {
    let id = ctx.param(0).to_owned();
    let body = body_or_empty(ctx)?;
    let enabled = opt_bool(&body, "enabled")?.ok_or_else(|| ApiError::bad_request("Missing key: enabled"))?;
    set_enabled(ctx, &id, enabled)
}

/// The PONG probe (AstrBot's provider `test`): one short request to the provider; the
/// answer is always HTTP 200 with `status` `available` or `unavailable` and the error.
fn test_provider_by(ctx: &Ctx<'_, '_>, id: &str) -> Result<Response, ApiError> {
    let conn = ctx.app.db.conn()?;
    let stored = resources::doc(&conn, Docs::Providers, id)?
        .filter(|p| p["enable"].as_bool().unwrap_or(true))
        .ok_or_else(|| ApiError::bad_request(format!("Provider {id} not found")))?;
    let merged = config::merged_provider(&conn, &stored)?;
    drop(conn);
    let kind = merged["provider_type"].as_str().unwrap_or("chat_completion").to_owned();
    let turns = [crate::chat::provider::Turn { role: "user", content: json!("REPLY `PONG` ONLY") }];
    let result = if kind == "chat_completion" {
        let provider = crate::chat::provider::Provider::parse(&merged);
        crate::chat::adapters::generate(&provider, None, &turns, false, 0, &mut |_| {}).map(|_| ())
    } else {
        Err(format!("testing {kind} providers is not supported"))
    };
    let (status, error) = match result {
        Ok(()) => ("available", Value::Null),
        Err(e) => ("unavailable", json!(e)),
    };
    Ok(Response::ok(json!({
        "id": id,
        "model": merged["model"],
        "type": kind,
        "name": id,
        "status": status,
        "error": error,
    })))
}

/// `POST /api/v1/providers/test` with `{"provider_id"}`
pub fn test_provider_body(ctx: &mut Ctx<'_, '_>) -> Result<Response, ApiError> {
    let body = body_or_empty(ctx)?;
    let id = opt_string(&body, "provider_id")?
        .filter(|s| !s.trim().is_empty())
        .ok_or_else(|| ApiError::bad_request("Missing key: provider_id"))?;
    test_provider_by(ctx, &id)
}

/// `POST /api/v1/providers/{provider_id}/test`
pub fn test_provider(ctx: &mut Ctx<'_, '_>) -> Result<Response, ApiError> {
    let id = ctx.param(0).to_owned();
    test_provider_by(ctx, &id)
}
