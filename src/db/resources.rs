//! SQL for the configuration resources: provider sources, providers, config profiles and
//! routes, personas and persona folders, attachments, and the IM bots. Writes take the
//! caller's `&Transaction`, so handlers compose several into one transaction with
//! `write_tx` and a write outside one does not compile; reads take a `&Connection`, which a
//! transaction derefs to.

use rusqlite::{Connection, OptionalExtension, Transaction, params};
use serde_json::Value;

/// The tables that hold one JSON document per id, in list order.
#[derive(Debug, Clone, Copy)]
pub enum Docs {
    ProviderSources,
    Providers,
}

impl Docs {
    fn table(self) -> &'static str {
        match self {
            Docs::ProviderSources => "provider_sources",
            Docs::Providers => "providers",
        }
    }
}

fn parse(body: String) -> Value {
    serde_json::from_str(&body).unwrap_or(Value::Null)
}

/// Every document, in list order.
pub fn docs(conn: &Connection, t: Docs) -> rusqlite::Result<Vec<Value>> {
    let mut stmt = conn.prepare_cached(&format!("SELECT body FROM {} ORDER BY position, id", t.table()))?;
    let rows = stmt.query_map([], |r| r.get::<_, String>(0))?;
    rows.map(|r| r.map(parse)).collect()
}

/// One document by id.
pub fn doc(conn: &Connection, t: Docs, id: &str) -> rusqlite::Result<Option<Value>> {
    conn.prepare_cached(&format!("SELECT body FROM {} WHERE id = ?1", t.table()))?
        .query_row([id], |r| r.get::<_, String>(0))
        .optional()
        .map(|b| b.map(parse))
}

/// Stores a document under `new_id`, replacing the one at `old_id` (keeping its place in
/// the list) or appending when there is none.
pub fn put_doc(
    tx: &Transaction<'_>,
    t: Docs,
    old_id: &str,
    new_id: &str,
    body: &Value,
) -> rusqlite::Result<()> {
    let table = t.table();
    let position: Option<i64> = tx
        .query_row(&format!("SELECT position FROM {table} WHERE id = ?1"), [old_id], |r| r.get(0))
        .optional()?;
    let position = match position {
        Some(p) => {
            tx.execute(&format!("DELETE FROM {table} WHERE id = ?1"), [old_id])?;
            p
        }
        None => {
            tx.query_row(&format!("SELECT coalesce(max(position), -1) + 1 FROM {table}"), [], |r| r.get(0))?
        }
    };
    tx.execute(
        &format!("INSERT OR REPLACE INTO {table} (id, position, body) VALUES (?1, ?2, ?3)"),
        params![new_id, position, body.to_string()],
    )?;
    Ok(())
}

/// Removes a document; false if there was none.
pub fn delete_doc(tx: &Transaction<'_>, t: Docs, id: &str) -> rusqlite::Result<bool> {
    Ok(tx.execute(&format!("DELETE FROM {} WHERE id = ?1", t.table()), [id])? > 0)
}

// ---------------------------------------------------------------------------------------
// Config profiles and routes

#[derive(Debug, Clone)]
pub struct Profile {
    pub id: String,
    pub name: String,
    /// The stored document; the default profile's is merged over the defaults when read.
    pub body: Value,
}

fn profile_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Profile> {
    Ok(Profile { id: r.get(0)?, name: r.get(1)?, body: parse(r.get(2)?) })
}

/// The custom profiles in creation order (the default profile is not among them).
pub fn custom_profiles(conn: &Connection) -> rusqlite::Result<Vec<Profile>> {
    let mut stmt = conn.prepare_cached(
        "SELECT id, name, body FROM config_profiles WHERE id <> 'default' ORDER BY position, created_at",
    )?;
    let rows = stmt.query_map([], profile_row)?;
    rows.collect()
}

pub fn profile(conn: &Connection, id: &str) -> rusqlite::Result<Option<Profile>> {
    conn.prepare_cached("SELECT id, name, body FROM config_profiles WHERE id = ?1")?
        .query_row([id], profile_row)
        .optional()
}

pub fn insert_profile(
    tx: &Transaction<'_>,
    id: &str,
    name: &str,
    body: &Value,
    now: i64,
) -> rusqlite::Result<()> {
    tx.execute(
        "INSERT INTO config_profiles (id, name, position, body, created_at)
         VALUES (?1, ?2, (SELECT coalesce(max(position), 0) + 1 FROM config_profiles), ?3, ?4)",
        params![id, name, body.to_string(), now],
    )?;
    Ok(())
}

/// Replaces a profile's document; false if there is no such profile.
pub fn set_profile_body(tx: &Transaction<'_>, id: &str, body: &Value) -> rusqlite::Result<bool> {
    Ok(tx.execute("UPDATE config_profiles SET body = ?2 WHERE id = ?1", params![id, body.to_string()])? > 0)
}

pub fn rename_profile(tx: &Transaction<'_>, id: &str, name: &str) -> rusqlite::Result<bool> {
    Ok(tx.execute(
        "UPDATE config_profiles SET name = ?2 WHERE id = ?1 AND id <> 'default'",
        params![id, name],
    )? > 0)
}

pub fn delete_profile(tx: &Transaction<'_>, id: &str) -> rusqlite::Result<bool> {
    Ok(tx.execute("DELETE FROM config_profiles WHERE id = ?1 AND id <> 'default'", [id])? > 0)
}

/// The routing table: UMO to profile id, in UMO order.
pub fn routes(conn: &Connection) -> rusqlite::Result<Vec<(String, String)>> {
    let mut stmt = conn.prepare_cached("SELECT umo, config_id FROM config_routes ORDER BY umo")?;
    let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
    rows.collect()
}

pub fn route(conn: &Connection, umo: &str) -> rusqlite::Result<Option<String>> {
    conn.prepare_cached("SELECT config_id FROM config_routes WHERE umo = ?1")?
        .query_row([umo], |r| r.get(0))
        .optional()
}

pub fn set_route(tx: &Transaction<'_>, umo: &str, config_id: &str) -> rusqlite::Result<()> {
    tx.execute(
        "INSERT INTO config_routes (umo, config_id) VALUES (?1, ?2)
         ON CONFLICT (umo) DO UPDATE SET config_id = excluded.config_id",
        params![umo, config_id],
    )?;
    Ok(())
}

pub fn delete_route(tx: &Transaction<'_>, umo: &str) -> rusqlite::Result<bool> {
    Ok(tx.execute("DELETE FROM config_routes WHERE umo = ?1", [umo])? > 0)
}

pub fn clear_routes(tx: &Transaction<'_>) -> rusqlite::Result<()> {
    tx.execute("DELETE FROM config_routes", [])?;
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Personas and folders

#[derive(Debug, Clone, PartialEq)]
pub struct Persona {
    pub persona_id: String,
    pub system_prompt: String,
    pub begin_dialogs: Vec<String>,
    /// `None`: every tool.
    pub tools: Option<Vec<String>>,
    /// `None`: every skill.
    pub skills: Option<Vec<String>>,
    pub custom_error_message: Option<String>,
    pub folder_id: Option<String>,
    pub sort_order: i64,
    pub created_at: i64,
    pub updated_at: i64,
}

const PERSONA_COLUMNS: &str = "persona_id, system_prompt, begin_dialogs, tools, skills, custom_error_message, \
                               folder_id, sort_order, created_at, updated_at";

fn list_column(v: Option<String>) -> Option<Vec<String>> {
    v.and_then(|s| serde_json::from_str(&s).ok())
}

fn persona_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Persona> {
    Ok(Persona {
        persona_id: r.get(0)?,
        system_prompt: r.get(1)?,
        begin_dialogs: list_column(r.get(2)?).unwrap_or_default(),
        tools: list_column(r.get(3)?),
        skills: list_column(r.get(4)?),
        custom_error_message: r.get(5)?,
        folder_id: r.get(6)?,
        sort_order: r.get(7)?,
        created_at: r.get(8)?,
        updated_at: r.get(9)?,
    })
}

fn list_json(v: &Option<Vec<String>>) -> Option<String> {
    v.as_ref().map(|l| serde_json::to_string(l).unwrap_or_else(|_| "[]".into()))
}

/// All personas in creation order, or (with `Some(folder)`) those of one folder
/// (`Some(None)` is the root) by `sort_order, persona_id`.
pub fn personas(conn: &Connection, folder: Option<Option<&str>>) -> rusqlite::Result<Vec<Persona>> {
    match folder {
        None => {
            let mut stmt =
                conn.prepare_cached(&format!("SELECT {PERSONA_COLUMNS} FROM personas ORDER BY seq"))?;
            let rows = stmt.query_map([], persona_row)?;
            rows.collect()
        }
        Some(folder) => {
            let mut stmt = conn.prepare_cached(&format!(
                "SELECT {PERSONA_COLUMNS} FROM personas WHERE folder_id IS ?1 ORDER BY sort_order, persona_id"
            ))?;
            let rows = stmt.query_map([folder], persona_row)?;
            rows.collect()
        }
    }
}

pub fn persona(conn: &Connection, id: &str) -> rusqlite::Result<Option<Persona>> {
    conn.prepare_cached(&format!("SELECT {PERSONA_COLUMNS} FROM personas WHERE persona_id = ?1"))?
        .query_row([id], persona_row)
        .optional()
}

pub fn insert_persona(tx: &Transaction<'_>, p: &Persona) -> rusqlite::Result<()> {
    tx.execute(
        &format!("INSERT INTO personas ({PERSONA_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)"),
        params![
            p.persona_id,
            p.system_prompt,
            serde_json::to_string(&p.begin_dialogs).unwrap_or_else(|_| "[]".into()),
            list_json(&p.tools),
            list_json(&p.skills),
            p.custom_error_message,
            p.folder_id,
            p.sort_order,
            p.created_at,
            p.updated_at
        ],
    )?;
    Ok(())
}

/// Writes every field of an existing persona (the caller applies AstrBot's update rules).
pub fn update_persona(tx: &Transaction<'_>, p: &Persona) -> rusqlite::Result<bool> {
    Ok(tx.execute(
        "UPDATE personas SET system_prompt = ?2, begin_dialogs = ?3, tools = ?4, skills = ?5,
                custom_error_message = ?6, folder_id = ?7, sort_order = ?8, updated_at = ?9
         WHERE persona_id = ?1",
        params![
            p.persona_id,
            p.system_prompt,
            serde_json::to_string(&p.begin_dialogs).unwrap_or_else(|_| "[]".into()),
            list_json(&p.tools),
            list_json(&p.skills),
            p.custom_error_message,
            p.folder_id,
            p.sort_order,
            p.updated_at
        ],
    )? > 0)
}

pub fn delete_persona(tx: &Transaction<'_>, id: &str) -> rusqlite::Result<bool> {
    Ok(tx.execute("DELETE FROM personas WHERE persona_id = ?1", [id])? > 0)
}

#[derive(Debug, Clone, PartialEq)]
pub struct Folder {
    pub folder_id: String,
    pub name: String,
    pub parent_id: Option<String>,
    pub description: Option<String>,
    pub sort_order: i64,
    pub created_at: i64,
    pub updated_at: i64,
}

const FOLDER_COLUMNS: &str = "folder_id, name, parent_id, description, sort_order, created_at, updated_at";

fn folder_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Folder> {
    Ok(Folder {
        folder_id: r.get(0)?,
        name: r.get(1)?,
        parent_id: r.get(2)?,
        description: r.get(3)?,
        sort_order: r.get(4)?,
        created_at: r.get(5)?,
        updated_at: r.get(6)?,
    })
}

/// Folders under a parent (`None`: the root), or every folder with `all`.
pub fn folders(conn: &Connection, parent: Option<&str>, all: bool) -> rusqlite::Result<Vec<Folder>> {
    let sql = if all {
        format!("SELECT {FOLDER_COLUMNS} FROM persona_folders WHERE ?1 IS ?1 ORDER BY sort_order, name")
    } else {
        format!(
            "SELECT {FOLDER_COLUMNS} FROM persona_folders WHERE parent_id IS ?1 ORDER BY sort_order, name"
        )
    };
    let mut stmt = conn.prepare_cached(&sql)?;
    let rows = stmt.query_map([parent], folder_row)?;
    rows.collect()
}

pub fn folder(conn: &Connection, id: &str) -> rusqlite::Result<Option<Folder>> {
    conn.prepare_cached(&format!("SELECT {FOLDER_COLUMNS} FROM persona_folders WHERE folder_id = ?1"))?
        .query_row([id], folder_row)
        .optional()
}

pub fn insert_folder(tx: &Transaction<'_>, f: &Folder) -> rusqlite::Result<()> {
    tx.execute(
        &format!("INSERT INTO persona_folders ({FOLDER_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)"),
        params![f.folder_id, f.name, f.parent_id, f.description, f.sort_order, f.created_at, f.updated_at],
    )?;
    Ok(())
}

pub fn update_folder(tx: &Transaction<'_>, f: &Folder) -> rusqlite::Result<bool> {
    Ok(tx.execute(
        "UPDATE persona_folders SET name = ?2, parent_id = ?3, description = ?4, sort_order = ?5, updated_at = ?6
         WHERE folder_id = ?1",
        params![f.folder_id, f.name, f.parent_id, f.description, f.sort_order, f.updated_at],
    )? > 0)
}

/// Deletes a folder and moves its personas to the root; sub-folders stay as they are.
pub fn delete_folder(tx: &Transaction<'_>, id: &str) -> rusqlite::Result<bool> {
    tx.execute("UPDATE personas SET folder_id = NULL WHERE folder_id = ?1", [id])?;
    Ok(tx.execute("DELETE FROM persona_folders WHERE folder_id = ?1", [id])? > 0)
}

/// Sets the sort order of a persona or a folder; false if it does not exist.
pub fn set_sort_order(
    tx: &Transaction<'_>,
    folder: bool,
    id: &str,
    order: i64,
    now: i64,
) -> rusqlite::Result<bool> {
    let sql = if folder {
        "UPDATE persona_folders SET sort_order = ?2, updated_at = ?3 WHERE folder_id = ?1"
    } else {
        "UPDATE personas SET sort_order = ?2, updated_at = ?3 WHERE persona_id = ?1"
    };
    Ok(tx.execute(sql, params![id, order, now])? > 0)
}

// ---------------------------------------------------------------------------------------
// Attachments

#[derive(Debug, Clone, PartialEq)]
pub struct Attachment {
    pub attachment_id: String,
    /// The sanitised name shown to clients.
    pub filename: String,
    /// `image`, `record`, `video` or `file`.
    pub kind: String,
    pub mime_type: String,
    pub size: i64,
    pub created_at: i64,
}

pub fn insert_attachment(tx: &Transaction<'_>, a: &Attachment) -> rusqlite::Result<()> {
    tx.execute(
        "INSERT INTO attachments (attachment_id, filename, type, mime_type, size, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![a.attachment_id, a.filename, a.kind, a.mime_type, a.size, a.created_at],
    )?;
    Ok(())
}

pub fn attachment(conn: &Connection, id: &str) -> rusqlite::Result<Option<Attachment>> {
    conn.prepare_cached(
        "SELECT attachment_id, filename, type, mime_type, size, created_at FROM attachments WHERE attachment_id = ?1",
    )?
    .query_row([id], |r| {
        Ok(Attachment {
            attachment_id: r.get(0)?,
            filename: r.get(1)?,
            kind: r.get(2)?,
            mime_type: r.get(3)?,
            size: r.get(4)?,
            created_at: r.get(5)?,
        })
    })
    .optional()
}

/// The newest attachment with that display name.
pub fn attachment_by_name(conn: &Connection, filename: &str) -> rusqlite::Result<Option<Attachment>> {
    let id: Option<String> = conn
        .prepare_cached(
            "SELECT attachment_id FROM attachments WHERE filename = ?1 ORDER BY created_at DESC LIMIT 1",
        )?
        .query_row([filename], |r| r.get(0))
        .optional()?;
    match id {
        Some(id) => attachment(conn, &id),
        None => Ok(None),
    }
}

pub fn delete_attachment(tx: &Transaction<'_>, id: &str) -> rusqlite::Result<bool> {
    Ok(tx.execute("DELETE FROM attachments WHERE attachment_id = ?1", [id])? > 0)
}

// ---------------------------------------------------------------------------------------
// Bots

/// The ids of the configured bots, in configuration order.
pub fn bot_ids(conn: &Connection) -> rusqlite::Result<Vec<String>> {
    let mut stmt = conn.prepare_cached("SELECT id FROM bots WHERE id <> '' ORDER BY position, id")?;
    let rows = stmt.query_map([], |r| r.get(0))?;
    rows.collect()
}

/// A stored bot: its id and its whole config (AstrBot's platform dict), in order.
#[derive(Debug, Clone)]
pub struct Bot {
    pub id: String,
    pub config: Value,
}

/// Every bot, in configuration order.
pub fn bots(conn: &Connection) -> rusqlite::Result<Vec<Bot>> {
    let mut stmt = conn.prepare_cached("SELECT id, config FROM bots ORDER BY position, id")?;
    let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?;
    rows.map(|row| {
        let (id, config) = row?;
        Ok(Bot {
            id,
            config: serde_json::from_str(&config).unwrap_or_else(|_| Value::Object(Default::default())),
        })
    })
    .collect()
}

pub fn bot(conn: &Connection, id: &str) -> rusqlite::Result<Option<Bot>> {
    conn.prepare_cached("SELECT id, config FROM bots WHERE id = ?1")?
        .query_row([id], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))
        .optional()
        .map(|row| {
            row.map(|(id, config)| Bot {
                id,
                config: serde_json::from_str(&config).unwrap_or_else(|_| Value::Object(Default::default())),
            })
        })
}

/// Adds a bot at the end, or replaces one in place; `type` and `enable` are kept beside
/// the document for the listing's filters.
pub fn put_bot(tx: &Transaction<'_>, id: &str, config: &Value, now: i64) -> rusqlite::Result<()> {
    let kind = config["type"].as_str().unwrap_or_default();
    let enable = config["enable"].as_bool().unwrap_or(false);
    tx.execute(
        "INSERT INTO bots (id, position, type, enable, config, created_at)
         VALUES (?1, (SELECT COALESCE(MAX(position), -1) + 1 FROM bots), ?2, ?3, ?4, ?5)
         ON CONFLICT (id) DO UPDATE SET type = excluded.type, enable = excluded.enable, config = excluded.config",
        params![id, kind, enable, config.to_string(), now],
    )?;
    Ok(())
}

pub fn delete_bot(tx: &Transaction<'_>, id: &str) -> rusqlite::Result<bool> {
    Ok(tx.execute("DELETE FROM bots WHERE id = ?1", [id])? > 0)
}
