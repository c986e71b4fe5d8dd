//! SQL for skill active flags (AstrBot's `data/skills.json`): one row per name that was
//! set; a skill without a row is active. Writes take the caller's `&Transaction`.

use std::collections::HashMap;

use rusqlite::{Connection, Transaction, params};

/// Every stored flag by name.
pub fn states(conn: &Connection) -> rusqlite::Result<HashMap<String, bool>> {
    let mut stmt = conn.prepare_cached("SELECT name, active FROM skill_states")?;
    let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, bool>(1)?)))?;
    rows.collect()
}

pub fn set_active(tx: &Transaction<'_>, name: &str, active: bool) -> rusqlite::Result<()> {
    tx.execute(
        "INSERT INTO skill_states (name, active) VALUES (?1, ?2)
         ON CONFLICT (name) DO UPDATE SET active = excluded.active",
        params![name, active],
    )?;
    Ok(())
}

pub fn delete(tx: &Transaction<'_>, name: &str) -> rusqlite::Result<()> {
    tx.execute("DELETE FROM skill_states WHERE name = ?1", [name])?;
    Ok(())
}
