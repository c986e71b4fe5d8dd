//! SQL for the MCP servers (AstrBot's `mcp_server.json` entries): one JSON config per name,
//! in configuration order. Writes take the caller's `&Transaction`.

use rusqlite::{Connection, OptionalExtension, Transaction, params};
use serde_json::Value;

/// A stored server: its name and its whole config (AstrBot's object).
#[derive(Debug, Clone, PartialEq)]
pub struct Server {
    pub name: String,
    pub config: Value,
}

fn parse(config: &str) -> Value {
    serde_json::from_str(config).unwrap_or_else(|_| Value::Object(Default::default()))
}

/// Every server, in configuration order.
pub fn servers(conn: &Connection) -> rusqlite::Result<Vec<Server>> {
    let mut stmt = conn.prepare_cached("SELECT name, config FROM mcp_servers ORDER BY position, name")?;
    let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?;
    rows.map(|row| row.map(|(name, config)| Server { config: parse(&config), name })).collect()
}

pub fn server(conn: &Connection, name: &str) -> rusqlite::Result<Option<Server>> {
    conn.prepare_cached("SELECT name, config FROM mcp_servers WHERE name = ?1")?
        .query_row([name], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))
        .optional()
        .map(|row| row.map(|(name, config)| Server { config: parse(&config), name }))
}

pub fn count(conn: &Connection) -> rusqlite::Result<usize> {
    conn.query_row("SELECT COUNT(*) FROM mcp_servers", [], |r| r.get::<_, i64>(0)).map(|n| n as usize)
}

/// Adds a server at the end, or replaces one's config in place.
pub fn put(tx: &Transaction<'_>, name: &str, config: &Value) -> rusqlite::Result<()> {
    tx.execute(
        "INSERT INTO mcp_servers (name, position, config)
         VALUES (?1, (SELECT COALESCE(MAX(position), -1) + 1 FROM mcp_servers), ?2)
         ON CONFLICT (name) DO UPDATE SET config = excluded.config",
        params![name, config.to_string()],
    )?;
    Ok(())
}

/// Renames a server in place (its position kept) and sets its config; false if `old` is gone.
pub fn rename(tx: &Transaction<'_>, old: &str, new: &str, config: &Value) -> rusqlite::Result<bool> {
    let n = tx.execute(
        "UPDATE mcp_servers SET name = ?2, config = ?3 WHERE name = ?1",
        params![old, new, config.to_string()],
    )?;
    Ok(n > 0)
}

pub fn delete(tx: &Transaction<'_>, name: &str) -> rusqlite::Result<bool> {
    Ok(tx.execute("DELETE FROM mcp_servers WHERE name = ?1", [name])? > 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::{Db, temp_dir, write_tx};
    use serde_json::json;

    #[test]
    fn servers_keep_their_order_through_replace_and_rename() {
        let db = Db::open(&temp_dir("mcp-db")).unwrap();
        let mut conn = db.conn().unwrap();
        write_tx(&mut conn, |tx| {
            put(tx, "a", &json!({"command": "node"}))?;
            put(tx, "b", &json!({"url": "http://x/", "transport": "sse"}))?;
            put(tx, "a", &json!({"command": "npx"}))?;
            assert!(rename(tx, "a", "c", &json!({"command": "uvx"}))?);
            assert!(!rename(tx, "zz", "y", &json!({}))?);
            Ok::<_, rusqlite::Error>(())
        })
        .unwrap();
        let names: Vec<String> = servers(&conn).unwrap().into_iter().map(|s| s.name).collect();
        assert_eq!(names, ["c", "b"]);
        assert_eq!(server(&conn, "c").unwrap().unwrap().config["command"], "uvx");
        assert_eq!(count(&conn).unwrap(), 2);
        assert!(write_tx(&mut conn, |tx| delete(tx, "c")).unwrap());
        assert!(server(&conn, "c").unwrap().is_none());
    }
}
