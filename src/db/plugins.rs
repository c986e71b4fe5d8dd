//! SQL for plugins: enabled flags (a plugin without a row is enabled, as in AstrBot),
//! install-source records by folder name, and plugin preferences (the custom plugin
//! sources list) as JSON texts. Writes take the caller's `&Transaction`.

use std::collections::HashMap;

use rusqlite::{Connection, OptionalExtension, Transaction, params};
use serde_json::Value;

/// Every stored enabled flag by name.
pub fn states(conn: &Connection) -> rusqlite::Result<HashMap<String, bool>> {
    let mut stmt = conn.prepare_cached("SELECT name, enabled FROM plugin_states")?;
    let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, bool>(1)?)))?;
    rows.collect()
}

pub fn set_enabled(tx: &Transaction<'_>, name: &str, enabled: bool) -> rusqlite::Result<()> {
    tx.execute(
        "INSERT INTO plugin_states (name, enabled) VALUES (?1, ?2)
         ON CONFLICT (name) DO UPDATE SET enabled = excluded.enabled",
        params![name, enabled],
    )?;
    Ok(())
}

/// The install-source record of a plugin folder.
pub fn record(conn: &Connection, name: &str) -> rusqlite::Result<Option<Value>> {
    let text: Option<String> = conn
        .query_row("SELECT record FROM plugin_install_sources WHERE name = ?1", [name], |r| r.get(0))
        .optional()?;
    Ok(text.and_then(|t| serde_json::from_str(&t).ok()))
}

pub fn set_record(tx: &Transaction<'_>, name: &str, record: &Value) -> rusqlite::Result<()> {
    tx.execute(
        "INSERT INTO plugin_install_sources (name, record) VALUES (?1, ?2)
         ON CONFLICT (name) DO UPDATE SET record = excluded.record",
        params![name, record.to_string()],
    )?;
    Ok(())
}

/// Forgets a plugin: its flag and its install record.
pub fn delete(tx: &Transaction<'_>, name: &str) -> rusqlite::Result<()> {
    tx.execute("DELETE FROM plugin_states WHERE name = ?1", [name])?;
    tx.execute("DELETE FROM plugin_install_sources WHERE name = ?1", [name])?;
    Ok(())
}

/// A preference (`custom_plugin_sources`), as stored JSON.
pub fn preference(conn: &Connection, key: &str) -> rusqlite::Result<Option<Value>> {
    let text: Option<String> = conn
        .query_row("SELECT value FROM plugin_preferences WHERE key = ?1", [key], |r| r.get(0))
        .optional()?;
    Ok(text.and_then(|t| serde_json::from_str(&t).ok()))
}

pub fn set_preference(tx: &Transaction<'_>, key: &str, value: &Value) -> rusqlite::Result<()> {
    tx.execute(
        "INSERT INTO plugin_preferences (key, value) VALUES (?1, ?2)
         ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        params![key, value.to_string()],
    )?;
    Ok(())
}
