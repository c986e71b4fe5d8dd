//! Skills (scope `skill`), as AstrBot's Open API has them (`api/skills.py`): list, upload
//! an archive, enable or disable, delete, list, read and write a skill's files, download
//! a skill as a zip, and Shipyard Neo's sync (`skills::neo`).
//!
//! AstrBot's error style: after authentication every failure is HTTP 200 with
//! `status: error` and no `data` (`ApiError::Soft`), except a missing by-name key and
//! invalid UTF-8 in the raw PUT (400), and the archive download, which answers real
//! statuses. Every path goes through `skills::skill_dir` and `skills::resolve`
//! (canonical paths inside the skill's folder), and names are validated everywhere,
//! delete included, where AstrBot has a traversal. Uploads stream to a temporary file in
//! the data folder under the `--max-upload-mb` cap, then unpack through `archive` with
//! its caps; a refused archive leaves the data folder as it was.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use serde_json::{Map, Value, json};

use super::{body_or_empty, parse_bool, required_query};
use crate::app::Ctx;
use crate::archive::Kind;
use crate::db::{self, write_tx};
use crate::error::ApiError;
use crate::http::Response;
use crate::skills::{self, MAX_EDIT};

fn soft(message: impl Into<String>) -> ApiError {
    ApiError::Soft(message.into())
}

fn data_dir(ctx: &Ctx<'_, '_>) -> PathBuf {
    ctx.app.settings.data_dir.clone()
}

/// `GET /api/v1/skills`
pub fn list(ctx: &mut Ctx<'_, '_>) -> Result<Response, ApiError> {
    let states = db::skills::states(&*ctx.app.db.conn()?)?;
    let items: Vec<Value> = skills::list(&data_dir(ctx))
        .into_iter()
        .map(|s| {
            json!({
                "name": s.name, "description": s.description, "path": s.path.display().to_string(),
                "active": states.get(&s.name).copied().unwrap_or(true),
                "source_type": "local_only", "source_label": "local", "local_exists": true,
                "sandbox_exists": false, "plugin_name": "", "readonly": false, "preset": false,
            })
        })
        .collect();
    Ok(Response::ok(json!({
        "skills": items,
        "runtime": "none",
        "sandbox_cache": {"exists": false, "ready": false, "count": 0, "updated_at": null},
    })))
}

/// The uploaded `file` part, streamed to `dir/.upload-*`: (path, client file name).
fn read_upload(ctx: &mut Ctx<'_, '_>, dir: &Path) -> Result<Option<(PathBuf, String)>, ApiError> {
    let boundary = ctx.req.multipart_boundary()?;
    let limit = ctx.app.settings.max_upload_bytes;
    let mut body = ctx.req.body_reader(limit)?;
    let mut saved: Option<(PathBuf, String)> = None;
    let result: Result<(), String> = (|| {
        let mut form = multipart::server::Multipart::with_body(&mut body, boundary);
        loop {
            let mut entry = match form.read_entry() {
                Ok(Some(e)) => e,
                Ok(None) => return Ok(()),
                Err(e) => return Err(e.to_string()),
            };
            let filename = entry.headers.filename.clone();
            match filename {
                Some(name) if &*entry.headers.name == "file" => {
                    if let Some((old, _)) = saved.take() {
                        let _ = fs::remove_file(old);
                    }
                    let path = dir.join(format!(
                        ".upload-{}-{}",
                        std::process::id(),
                        std::time::SystemTime::now()
                            .duration_since(std::time::UNIX_EPOCH)
                            .map(|d| d.as_nanos())
                            .unwrap_or(0)
                    ));
                    let mut out = fs::File::create(&path).map_err(|e| e.to_string())?;
                    saved = Some((path, name));
                    io::copy(&mut entry.data, &mut out).map_err(|e| e.to_string())?;
                }
                _ => {
                    io::copy(&mut entry.data, &mut io::sink()).map_err(|e| e.to_string())?;
                }
            }
        }
    })();
    let over = body.over_limit();
    let _ = body.finish();
    if let Err(e) = result {
        if let Some((p, _)) = saved.take() {
            let _ = fs::remove_file(p);
        }
        if over {
            return Err(ApiError::PayloadTooLarge(limit));
        }
        log::debug!("bad multipart skill upload: {e}");
        return Err(soft("Invalid multipart data."));
    }
    Ok(saved)
}

/// Removes the uploaded temporary file when dropped.
struct TempFile(PathBuf);

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.0);
    }
}

/// `POST /api/v1/skills`
pub fn upload(ctx: &mut Ctx<'_, '_>) -> Result<Response, ApiError> {
    let dir = data_dir(ctx);
    fs::create_dir_all(&dir)?;
    let Some((path, filename)) = read_upload(ctx, &dir)? else { return Err(soft("Missing file")) };
    let _tmp = TempFile(path.clone());
    let base = Path::new(&filename).file_name().and_then(|n| n.to_str()).unwrap_or_default().to_owned();
    let Some(kind) = Kind::from_name(&base) else { return Err(soft("Only .zip files are supported")) };
    let lower = base.to_ascii_lowercase();
    // `.zip` and `.tgz` are 4 bytes, `.tar.gz` 7 (ASCII, so the cut is on a char boundary).
    let cut = if lower.ends_with(".tar.gz") { 7 } else { 4 };
    let stem = base[..base.len() - cut].to_owned();
    let names = skills::install(&dir, &path, kind, &stem).map_err(soft)?;
    write_tx(&mut *ctx.app.db.conn()?, |tx| {
        for n in &names {
            db::skills::set_active(tx, n, true)?;
        }
        Ok::<_, ApiError>(())
    })?;
    log::info!("skills installed: {}", names.join(", "));
    Ok(Response::ok_with_message(json!({"name": names.join(", ")}), "Skill uploaded successfully."))
}

/// `POST /api/v1/skills/batch`: several `file` parts are not read by this server; one
/// archive may hold several skills, so the batch route takes the last `file` part as
/// `POST /api/v1/skills` does.
pub fn upload_batch(ctx: &mut Ctx<'_, '_>) -> Result<Response, ApiError> {
    upload(ctx)
}

/// `{enabled|active}`: `enabled` wins, `{}` is true.
fn active_of(body: &Map<String, Value>) -> Result<bool, ApiError> {
    for key in ["enabled", "active"] {
        match body.get(key) {
            None | Some(Value::Null) => {}
            Some(v) => {
                return parse_bool(v)
                    .ok_or_else(|| ApiError::bad_request(format!("{key} must be a boolean")));
            }
        }
    }
    Ok(true)
}

fn set_active(ctx: &mut Ctx<'_, '_>, name: &str, body: &Map<String, Value>) -> Result<Response, ApiError> {
    let active = active_of(body)?;
    let name = name.trim();
    if !skills::valid_name(name) {
        return Err(soft("Invalid skill name"));
    }
    write_tx(&mut *ctx.app.db.conn()?, |tx| db::skills::set_active(tx, name, active))?;
    Ok(Response::ok(json!({"name": name, "active": active})))
}

/// `PATCH /api/v1/skills/{skill_name}`
pub fn patch_path(ctx: &mut Ctx<'_, '_>) -> Result<Response, ApiError> {
    let name = ctx.req.params.first().cloned().unwrap_or_default();
    let body = body_or_empty(ctx)?;
    set_active(ctx, &name, &body)
}

fn body_name(body: &Map<String, Value>) -> Result<String, ApiError> {
    match body.get("skill_name") {
        Some(Value::String(s)) if !s.trim().is_empty() => Ok(s.trim().to_owned()),
        Some(Value::String(_)) | None | Some(Value::Null) => {
            Err(ApiError::bad_request("Missing key: skill_name"))
        }
        Some(_) => Err(ApiError::bad_request("skill_name must be a string")),
    }
}

/// `PATCH /api/v1/skills/by-name`
pub fn patch_body(ctx: &mut Ctx<'_, '_>) -> Result<Response, ApiError> {
    let body = body_or_empty(ctx)?;
    let name = body_name(&body)?;
    set_active(ctx, &name, &body)
}

fn delete_named(ctx: &mut Ctx<'_, '_>, name: &str) -> Result<Response, ApiError> {
    let name = name.trim();
    skills::delete(&data_dir(ctx), name).map_err(soft)?;
    write_tx(&mut *ctx.app.db.conn()?, |tx| db::skills::delete(tx, name))?;
    log::info!("skill {name} deleted");
    Ok(Response::ok(json!({"name": name})))
}

/// `DELETE /api/v1/skills/{skill_name}`
pub fn delete_path(ctx: &mut Ctx<'_, '_>) -> Result<Response, ApiError> {
    let name = ctx.req.params.first().cloned().unwrap_or_default();
    delete_named(ctx, &name)
}

/// `DELETE /api/v1/skills/by-name?skill_name=`
pub fn delete_query(ctx: &mut Ctx<'_, '_>) -> Result<Response, ApiError> {
    let name = required_query(ctx, "skill_name")?;
    delete_named(ctx, &name)
}

fn files_of(ctx: &Ctx<'_, '_>, name: &str, rel: &str) -> Result<Response, ApiError> {
    let dir = skills::skill_dir(&data_dir(ctx), name).map_err(soft)?;
    let (path, entries) = skills::list_files(&dir, rel).map_err(soft)?;
    Ok(Response::ok(json!({"name": name.trim(), "path": path, "entries": entries})))
}

/// `GET /api/v1/skills/{skill_name}/files?path=`
pub fn files_path(ctx: &mut Ctx<'_, '_>) -> Result<Response, ApiError> {
    let name = ctx.req.params.first().cloned().unwrap_or_default();
    let rel = ctx.req.query_param("path").unwrap_or_default().to_owned();
    files_of(ctx, &name, &rel)
}

/// `GET /api/v1/skills/files?skill_name=&path=`
pub fn files_query(ctx: &mut Ctx<'_, '_>) -> Result<Response, ApiError> {
    let name = required_query(ctx, "skill_name")?;
    let rel = ctx.req.query_param("path").unwrap_or_default().to_owned();
    files_of(ctx, &name, &rel)
}

fn read_of(ctx: &Ctx<'_, '_>, name: &str, rel: &str) -> Result<Response, ApiError> {
    let dir = skills::skill_dir(&data_dir(ctx), name).map_err(soft)?;
    let (path, content, size) = skills::read_file(&dir, rel, MAX_EDIT).map_err(soft)?;
    Ok(Response::ok(
        json!({"name": name.trim(), "path": path, "content": content, "size": size, "editable": true}),
    ))
}

/// `GET /api/v1/skills/{skill_name}/files/{file_path}`
pub fn read_path(ctx: &mut Ctx<'_, '_>) -> Result<Response, ApiError> {
    let name = ctx.req.params.first().cloned().unwrap_or_default();
    let rel = ctx.req.params.get(1).cloned().unwrap_or_default();
    read_of(ctx, &name, &rel)
}

/// `GET /api/v1/skills/file?skill_name=&path=`
pub fn read_query(ctx: &mut Ctx<'_, '_>) -> Result<Response, ApiError> {
    let name = required_query(ctx, "skill_name")?;
    let rel = required_query(ctx, "path")?;
    read_of(ctx, &name, &rel)
}

fn write_of(ctx: &Ctx<'_, '_>, name: &str, rel: &str, content: &str) -> Result<Response, ApiError> {
    let dir = skills::skill_dir(&data_dir(ctx), name).map_err(soft)?;
    let (path, size) = skills::write_file(&dir, rel, content).map_err(soft)?;
    log::info!("skill {} file {path} written ({size} bytes)", name.trim());
    Ok(Response::ok(json!({"name": name.trim(), "path": path, "size": size})))
}

/// `PUT /api/v1/skills/{skill_name}/files/{file_path}`: the raw body is the content.
pub fn write_path(ctx: &mut Ctx<'_, '_>) -> Result<Response, ApiError> {
    let name = ctx.req.params.first().cloned().unwrap_or_default();
    let rel = ctx.req.params.get(1).cloned().unwrap_or_default();
    let bytes = match ctx.req.read_body(MAX_EDIT as usize) {
        Ok(b) => b,
        Err(crate::http::BodyError::TooLarge(_)) => return Err(soft("File content is too large")),
        Err(e) => return Err(e.into()),
    };
    let content = String::from_utf8(bytes)
        .map_err(|_| ApiError::bad_request("The request body is not valid UTF-8 text"))?;
    write_of(ctx, &name, &rel, &content)
}

/// `PUT /api/v1/skills/file`: JSON `{skill_name, path, content}`.
pub fn write_body(ctx: &mut Ctx<'_, '_>) -> Result<Response, ApiError> {
    let body = body_or_empty(ctx)?;
    let name = body_name(&body)?;
    let rel = match body.get("path") {
        Some(Value::String(s)) if !s.trim().is_empty() => s.clone(),
        Some(Value::String(_)) | None | Some(Value::Null) => {
            return Err(ApiError::bad_request("Missing key: path"));
        }
        Some(_) => return Err(ApiError::bad_request("path must be a string")),
    };
    let content = match body.get("content") {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(_) => return Err(soft("Missing file content")),
    };
    write_of(ctx, &name, &rel, &content)
}

/// `GET /api/v1/skills/{skill_name}/archive`: a zip, with real statuses on failure.
pub fn download(ctx: &mut Ctx<'_, '_>) -> Result<Response, ApiError> {
    let name = ctx.req.params.first().cloned().unwrap_or_default();
    let name = name.trim().to_owned();
    if !skills::valid_name(&name) {
        return Err(ApiError::bad_request("Invalid skill name"));
    }
    let dir = skills::skill_dir(&data_dir(ctx), &name)
        .map_err(|_| ApiError::NotFound("Local skill not found".into()))?;
    let bytes = skills::archive(&dir, &name).map_err(|e| {
        log::error!("skill {name}: {e}");
        ApiError::Internal("Failed to prepare skill archive".into())
    })?;
    let mut resp = Response::new(200, "application/zip", bytes);
    resp.header("Content-Disposition", format!("attachment; filename=\"{name}.zip\""));
    Ok(resp)
}

/// `POST /api/v1/skills/neo/sync`: needs the default profile's
/// `provider_settings.sandbox.shipyard_neo_endpoint` and `shipyard_neo_access_token`
/// (AstrBot's fallback to Bay's `credentials.json` is not read); then `skills::neo`.
pub fn neo_sync(ctx: &mut Ctx<'_, '_>) -> Result<Response, ApiError> {
    let config = crate::config::system_config(&*ctx.app.db.conn()?)?;
    let sandbox = &config["provider_settings"]["sandbox"];
    let value = |k: &str| sandbox[k].as_str().map(str::trim).filter(|s| !s.is_empty()).map(str::to_owned);
    let (Some(endpoint), Some(token)) = (value("shipyard_neo_endpoint"), value("shipyard_neo_access_token"))
    else {
        return Err(soft(
            "Shipyard Neo endpoint or access token not configured. Set them in Dashboard or ensure Bay's credentials.json is accessible.",
        ));
    };
    let body = body_or_empty(ctx)?;
    let text = |k: &str| {
        body.get(k).and_then(Value::as_str).map(str::trim).filter(|s| !s.is_empty()).map(str::to_owned)
    };
    let request = skills::neo::Request {
        release_id: text("release_id"),
        skill_key: text("skill_key"),
        require_stable: body.get("require_stable").and_then(parse_bool).unwrap_or(true),
    };
    if request.release_id.is_none() && request.skill_key.is_none() {
        return Err(soft("Missing release_id or skill_key"));
    }
    let data = skills::neo::sync(&data_dir(ctx), &endpoint, &token, &request, crate::timefmt::now_micros())
        .map_err(soft)?;
    if let Some(name) = data["local_skill_name"].as_str() {
        write_tx(&mut *ctx.app.db.conn()?, |tx| db::skills::set_active(tx, name, true))?;
        log::info!("skill {name} synced from Shipyard Neo");
    }
    Ok(Response::ok(data))
}
