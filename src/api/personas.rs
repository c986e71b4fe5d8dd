//! Personas and persona folders (scope `persona`), as AstrBot's dashboard manages them.
//! Errors are 400 envelopes with AstrBot's messages (Chinese where AstrBot's are); success
//! messages sit inside `data` as AstrBot puts them. The built-in `default` persona is not
//! in the table and is not listed.

use serde_json::{Map, Value, json};

use super::{body_or_empty, opt_int, opt_string, opt_string_list, required_query};
use crate::app::Ctx;
use crate::db::resources::{self, Folder, Persona};
use crate::db::write_tx;
use crate::error::ApiError;
use crate::http::Response;

/// AstrBot shows persona times as naive ISO strings (UTC, no offset).
fn naive_iso(micros: i64) -> String {
    crate::timefmt::iso(micros).trim_end_matches("+00:00").to_owned()
}

fn persona_json(p: &Persona, empty_lists: bool) -> Value {
    let list = |l: &Option<Vec<String>>| match l {
        Some(v) => json!(v),
        None if empty_lists => json!([]),
        None => Value::Null,
    };
    json!({
        "persona_id": p.persona_id,
        "system_prompt": p.system_prompt,
        "begin_dialogs": p.begin_dialogs,
        "tools": list(&p.tools),
        "skills": list(&p.skills),
        "custom_error_message": p.custom_error_message,
        "folder_id": p.folder_id,
        "sort_order": p.sort_order,
        "created_at": naive_iso(p.created_at),
        "updated_at": naive_iso(p.updated_at),
    })
}

fn folder_json(f: &Folder) -> Value {
    json!({
        "folder_id": f.folder_id,
        "name": f.name,
        "parent_id": f.parent_id,
        "description": f.description,
        "sort_order": f.sort_order,
        "created_at": naive_iso(f.created_at),
        "updated_at": naive_iso(f.updated_at),
    })
}

fn not_found(id: &str) -> ApiError {
    ApiError::bad_request(format!("Persona with ID {id} does not exist."))
}

/// `begin_dialogs` must alternate user and assistant turns.
fn begin_dialogs(body: &Map<String, Value>) -> Result<Option<Vec<String>>, ApiError> {
    let dialogs = match body.get("begin_dialogs") {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| match v {
                Value::String(s) => Ok(s.clone()),
                other => Ok(other.to_string()),
            })
            .collect::<Result<Vec<_>, ApiError>>()?,
        Some(_) => return Err(ApiError::bad_request("begin_dialogs must be a list")),
    };
    if dialogs.len() % 2 != 0 {
        return Err(ApiError::bad_request("预设对话数量必须为偶数（用户和助手轮流对话）"));
    }
    Ok(Some(dialogs))
}

fn custom_error(body: &Map<String, Value>) -> Result<Option<String>, ApiError> {
    Ok(opt_string(body, "custom_error_message")?.map(|s| s.trim().to_owned()).filter(|s| !s.is_empty()))
}

/// `GET /api/v1/personas[?folder_id=]`
pub fn list(ctx: &mut Ctx<'_, '_>) -> Result<Response, ApiError> {
    let folder =
        ctx.req.query_param("folder_id").map(|f| if f.is_empty() { None } else { Some(f.to_owned()) });
    let conn = ctx.app.db.conn()?;
    let items = resources::personas(&conn, folder.as_ref().map(|f| f.as_deref()))?;
    Ok(Response::ok(Value::Array(items.iter().map(|p| persona_json(p, false)).collect())))
}

/// `POST /api/v1/personas`
pub fn create(ctx: &mut Ctx<'_, '_>) -> Result<Response, ApiError> {
    let body = ctx.req.json_object()?.clone();
    let persona_id = opt_string(&body, "persona_id")?.map(|s| s.trim().to_owned()).unwrap_or_default();
    if persona_id.is_empty() {
        return Err(ApiError::bad_request("人格ID不能为空"));
    }
    let prompt = opt_string(&body, "system_prompt")?.map(|s| s.trim().to_owned()).unwrap_or_default();
    if prompt.is_empty() {
        return Err(ApiError::bad_request("系统提示词不能为空"));
    }
    let persona = Persona {
        persona_id: persona_id.clone(),
        system_prompt: prompt,
        begin_dialogs: begin_dialogs(&body)?.unwrap_or_default(),
        tools: opt_string_list(&body, "tools")?,
        skills: opt_string_list(&body, "skills")?,
        custom_error_message: custom_error(&body)?,
        folder_id: opt_string(&body, "folder_id")?.filter(|f| !f.is_empty()),
        sort_order: opt_int(&body, "sort_order")?.unwrap_or(0),
        created_at: ctx.now,
        updated_at: ctx.now,
    };
    let mut conn = ctx.app.db.conn()?;
    write_tx(&mut conn, |tx| {
        if resources::persona(tx, &persona_id)?.is_some() {
            return Err(ApiError::bad_request(format!("Persona with ID {persona_id} already exists.")));
        }
        resources::insert_persona(tx, &persona)?;
        Ok(())
    })?;
    Ok(Response::ok(json!({"message": "人格创建成功", "persona": persona_json(&persona, true)})))
}

fn get_by(ctx: &Ctx<'_, '_>, id: &str) -> Result<Response, ApiError> {
    let p = resources::persona(&*ctx.app.db.conn()?, id)?.ok_or_else(|| not_found(id))?;
    Ok(Response::ok(persona_json(&p, false)))
}

/// `GET /api/v1/personas/by-id?persona_id=`
pub fn get_query(ctx: &mut Ctx<'_, '_>) -> Result<Response, ApiError> {
    let id = required_query(ctx, "persona_id")?;
    get_by(ctx, &id)
}

/// `GET /api/v1/personas/{persona_id}`
pub fn get(ctx: &mut Ctx<'_, '_>) -> Result<Response, ApiError> {
    let id = ctx.param(0).to_owned();
    get_by(ctx, &id)
}

/// AstrBot's update rules: prompt and dialogs change when given; tools, skills and the
/// error message when their key is present (null is stored); folder and order never.
fn update_with(ctx: &Ctx<'_, '_>, body: &Map<String, Value>) -> Result<Response, ApiError> {
    let id = opt_string(body, "persona_id")?
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .ok_or_else(|| ApiError::bad_request("缺少必要参数: persona_id"))?;
    let prompt = opt_string(body, "system_prompt")?;
    let dialogs = begin_dialogs(body)?;
    let tools = opt_string_list(body, "tools")?;
    let skills = opt_string_list(body, "skills")?;
    let error = custom_error(body)?;
    let mut conn = ctx.app.db.conn()?;
    write_tx(&mut conn, |tx| {
        let mut p = resources::persona(tx, &id)?.ok_or_else(|| not_found(&id))?;
        if let Some(prompt) = &prompt {
            p.system_prompt = prompt.trim().to_owned();
        }
        if let Some(d) = &dialogs {
            p.begin_dialogs = d.clone();
        }
        if body.contains_key("tools") {
            p.tools = tools.clone();
        }
        if body.contains_key("skills") {
            p.skills = skills.clone();
        }
        if body.contains_key("custom_error_message") {
            p.custom_error_message = error.clone();
        }
        p.updated_at = ctx.now;
        resources::update_persona(tx, &p)?;
        Ok::<_, ApiError>(())
    })?;
    Ok(Response::ok(json!({"message": "人格更新成功"})))
}

/// `PUT /api/v1/personas/by-id` with `persona_id` in the body
pub fn update_body(ctx: &mut Ctx<'_, '_>) -> Result<Response, ApiError> {
    let body = ctx.req.json_object()?.clone();
    update_with(ctx, &body)
}

/// `PUT /api/v1/personas/{persona_id}`; a `persona_id` in the body overrides the path.
pub fn update(ctx: &mut Ctx<'_, '_>) -> Result<Response, ApiError> {
    let mut body = Map::new();
    body.insert("persona_id".into(), json!(ctx.param(0)));
    for (k, v) in ctx.req.json_object()? {
        body.insert(k.clone(), v.clone());
    }
    update_with(ctx, &body)
}

fn delete_by(ctx: &Ctx<'_, '_>, id: &str) -> Result<Response, ApiError> {
    if !write_tx(&mut *ctx.app.db.conn()?, |tx| resources::delete_persona(tx, id))? {
        return Err(not_found(id));
    }
    Ok(Response::ok(json!({"message": "人格删除成功"})))
}

/// `DELETE /api/v1/personas/by-id?persona_id=`
pub fn delete_query(ctx: &mut Ctx<'_, '_>) -> Result<Response, ApiError> {
    let id = required_query(ctx, "persona_id")?;
    delete_by(ctx, &id)
}

/// `DELETE /api/v1/personas/{persona_id}`
pub fn delete(ctx: &mut Ctx<'_, '_>) -> Result<Response, ApiError> {
    let id = ctx.param(0).to_owned();
    delete_by(ctx, &id)
}

/// `GET /api/v1/personas/tree`: the folders as a tree, each with its `children` folders
/// and its `personas`; `personas` at the top level are those at the root.
pub fn tree(ctx: &mut Ctx<'_, '_>) -> Result<Response, ApiError> {
    let conn = ctx.app.db.conn()?;
    let folders = resources::folders(&conn, None, true)?;
    let personas = resources::personas(&conn, None)?;
    fn node(f: &Folder, folders: &[Folder], personas: &[Persona], depth: usize) -> Value {
        let mut v = folder_json(f);
        let children: Vec<Value> = if depth > 64 {
            vec![]
        } else {
            folders
                .iter()
                .filter(|c| c.parent_id.as_deref() == Some(&f.folder_id))
                .map(|c| node(c, folders, personas, depth + 1))
                .collect()
        };
        v["children"] = Value::Array(children);
        v["personas"] = personas_in(personas, Some(&f.folder_id));
        v
    }
    fn personas_in(personas: &[Persona], folder: Option<&str>) -> Value {
        let mut list: Vec<&Persona> = personas.iter().filter(|p| p.folder_id.as_deref() == folder).collect();
        list.sort_by(|a, b| (a.sort_order, &a.persona_id).cmp(&(b.sort_order, &b.persona_id)));
        Value::Array(list.into_iter().map(|p| persona_json(p, false)).collect())
    }
    let known: Vec<&str> = folders.iter().map(|f| f.folder_id.as_str()).collect();
    let roots: Vec<Value> = folders
        .iter()
        .filter(|f| f.parent_id.as_deref().is_none_or(|p| !known.contains(&p)))
        .map(|f| node(f, &folders, &personas, 0))
        .collect();
    Ok(Response::ok(json!({"folders": roots, "personas": personas_in(&personas, None)})))
}

/// `POST /api/v1/personas/move` with `{"persona_id", "folder_id"}` (null: the root)
pub fn move_persona(ctx: &mut Ctx<'_, '_>) -> Result<Response, ApiError> {
    let body = ctx.req.json_object()?.clone();
    let id = opt_string(&body, "persona_id")?
        .filter(|s| !s.is_empty())
        .ok_or_else(|| ApiError::bad_request("缺少必要参数: persona_id"))?;
    let folder = opt_string(&body, "folder_id")?.filter(|s| !s.is_empty());
    let mut conn = ctx.app.db.conn()?;
    write_tx(&mut conn, |tx| {
        let mut p = resources::persona(tx, &id)?.ok_or_else(|| not_found(&id))?;
        if let Some(f) = &folder
            && resources::folder(tx, f)?.is_none()
        {
            return Err(ApiError::bad_request(format!("Folder with ID {f} does not exist.")));
        }
        p.folder_id = folder.clone();
        p.updated_at = ctx.now;
        resources::update_persona(tx, &p)?;
        Ok(())
    })?;
    Ok(Response::ok(json!({"message": "人格移动成功"})))
}

/// `POST /api/v1/personas/reorder` with `{"items": [{"id", "type": "persona"|"folder", "sort_order"}]}`
pub fn reorder(ctx: &mut Ctx<'_, '_>) -> Result<Response, ApiError> {
    let body = ctx.req.json_object()?.clone();
    let items = match body.get("items") {
        Some(Value::Array(items)) => items.clone(),
        _ => return Err(ApiError::bad_request("Missing key: items")),
    };
    let mut changes = Vec::new();
    for item in &items {
        let item =
            item.as_object().ok_or_else(|| ApiError::bad_request("items must be a list of objects"))?;
        let id = opt_string(item, "id")?.ok_or_else(|| ApiError::bad_request("Missing key: id"))?;
        let folder = match opt_string(item, "type")?.as_deref() {
            Some("folder") => true,
            Some("persona") | None => false,
            Some(other) => return Err(ApiError::bad_request(format!("Invalid item type: {other}"))),
        };
        let order =
            opt_int(item, "sort_order")?.ok_or_else(|| ApiError::bad_request("Missing key: sort_order"))?;
        changes.push((folder, id, order));
    }
    let mut conn = ctx.app.db.conn()?;
    write_tx(&mut conn, |tx| {
        for (folder, id, order) in &changes {
            resources::set_sort_order(tx, *folder, id, *order, ctx.now)?;
        }
        Ok::<_, ApiError>(())
    })?;
    Ok(Response::ok(json!({"message": "排序更新成功"})))
}

// ---------------------------------------------------------------------------------------
// Folders

/// `GET /api/v1/persona-folders[?parent_id=]`
pub fn list_folders(ctx: &mut Ctx<'_, '_>) -> Result<Response, ApiError> {
    let parent = ctx.req.query_param("parent_id").filter(|p| !p.is_empty()).map(str::to_owned);
    let folders = resources::folders(&*ctx.app.db.conn()?, parent.as_deref(), false)?;
    Ok(Response::ok(Value::Array(folders.iter().map(folder_json).collect())))
}

/// `POST /api/v1/persona-folders`
pub fn create_folder(ctx: &mut Ctx<'_, '_>) -> Result<Response, ApiError> {
    let body = ctx.req.json_object()?.clone();
    let name = opt_string(&body, "name")?.map(|s| s.trim().to_owned()).unwrap_or_default();
    if name.is_empty() {
        return Err(ApiError::bad_request("文件夹名称不能为空"));
    }
    let folder = Folder {
        folder_id: uuid::Uuid::new_v4().to_string(),
        name,
        parent_id: opt_string(&body, "parent_id")?.filter(|p| !p.is_empty()),
        description: opt_string(&body, "description")?,
        sort_order: opt_int(&body, "sort_order")?.unwrap_or(0),
        created_at: ctx.now,
        updated_at: ctx.now,
    };
    write_tx(&mut *ctx.app.db.conn()?, |tx| resources::insert_folder(tx, &folder))?;
    Ok(Response::ok(json!({"message": "文件夹创建成功", "folder": folder_json(&folder)})))
}

/// `PUT /api/v1/persona-folders/{folder_id}`; a body `folder_id` overrides the path.
pub fn update_folder(ctx: &mut Ctx<'_, '_>) -> Result<Response, ApiError> {
    let body = body_or_empty(ctx)?;
    let id = opt_string(&body, "folder_id")?
        .or_else(|| Some(ctx.param(0).to_owned()))
        .filter(|s| !s.is_empty())
        .ok_or_else(|| ApiError::bad_request("缺少必要参数: folder_id"))?;
    let name = opt_string(&body, "name")?;
    let parent = opt_string(&body, "parent_id")?;
    let description = opt_string(&body, "description")?;
    let order = opt_int(&body, "sort_order")?;
    if parent.as_deref() == Some(id.as_str()) {
        return Err(ApiError::bad_request("A folder cannot be its own parent"));
    }
    let mut conn = ctx.app.db.conn()?;
    write_tx(&mut conn, |tx| {
        // AstrBot answers success for an unknown folder.
        let Some(mut f) = resources::folder(tx, &id)? else { return Ok(()) };
        if let Some(n) = &name {
            f.name = n.clone();
        }
        if body.contains_key("parent_id") {
            f.parent_id = parent.clone().filter(|p| !p.is_empty());
        }
        if body.contains_key("description") {
            f.description = description.clone();
        }
        if let Some(o) = order {
            f.sort_order = o;
        }
        f.updated_at = ctx.now;
        resources::update_folder(tx, &f)?;
        Ok::<_, ApiError>(())
    })?;
    Ok(Response::ok(json!({"message": "文件夹更新成功"})))
}

/// `DELETE /api/v1/persona-folders/{folder_id}`: its personas move to the root.
pub fn delete_folder(ctx: &mut Ctx<'_, '_>) -> Result<Response, ApiError> {
    let id = ctx.param(0).to_owned();
    let mut conn = ctx.app.db.conn()?;
    write_tx(&mut conn, |tx| resources::delete_folder(tx, &id).map_err(ApiError::from))?;
    Ok(Response::ok(json!({"message": "文件夹删除成功"})))
}
