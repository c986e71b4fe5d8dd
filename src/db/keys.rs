//! SQL for API keys and their usage: the `api_keys` rows (stored by the MAC of the raw
//! key, never the key), the daily counts in `key_usage`, and the `keys_generation`
//! counter that every change to the keys bumps in the same transaction, so a running
//! server notices a change made by the CLI and drops its key cache.

use rusqlite::{Connection, OptionalExtension, Transaction, params};

/// A row of `api_keys`.
#[derive(Debug, Clone)]
pub struct KeyRow {
    pub key_id: String,
    pub name: String,
    pub key_prefix: String,
    /// `None` for a legacy row whose scopes are not a JSON list.
    pub scopes: Option<Vec<String>>,
    pub created_by: String,
    pub created_at: i64,
    pub updated_at: i64,
    pub last_used_at: Option<i64>,
    pub expires_at: Option<i64>,
    pub revoked_at: Option<i64>,
    pub daily_limit: Option<i64>,
    /// The config profile the key is bound to (decision 15).
    pub bot_id: Option<String>,
    /// Where the webhook mirror sends the key's requests (decision 16).
    pub webhook_url: Option<String>,
    /// The input of the key's webhook signing secret, which is derived and never stored.
    pub webhook_nonce: Option<String>,
}

const KEY_COLUMNS: &str = "key_id, name, key_prefix, scopes, created_by, created_at, updated_at, \
                           last_used_at, expires_at, revoked_at, daily_limit, bot_id, webhook_url, \
                           webhook_nonce";

fn key_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<KeyRow> {
    let scopes: Option<String> = r.get(3)?;
    Ok(KeyRow {
        key_id: r.get(0)?,
        name: r.get(1)?,
        key_prefix: r.get(2)?,
        scopes: scopes.and_then(|s| serde_json::from_str(&s).ok()),
        created_by: r.get(4)?,
        created_at: r.get(5)?,
        updated_at: r.get(6)?,
        last_used_at: r.get(7)?,
        expires_at: r.get(8)?,
        revoked_at: r.get(9)?,
        daily_limit: r.get(10)?,
        bot_id: r.get(11)?,
        webhook_url: r.get(12)?,
        webhook_nonce: r.get(13)?,
    })
}

fn bump_keys_generation(tx: &Transaction<'_>) -> rusqlite::Result<()> {
    tx.execute("UPDATE meta SET value = value + 1 WHERE name = 'keys_generation'", [])?;
    Ok(())
}

/// Inserts a new key; `key_hash` is the MAC of the raw key.
pub fn insert_key(tx: &Transaction<'_>, row: &KeyRow, key_hash: &[u8; 32]) -> rusqlite::Result<()> {
    tx.execute(
        "INSERT INTO api_keys (key_id, name, key_hash, key_prefix, scopes, created_by, created_at,
                               updated_at, last_used_at, expires_at, revoked_at, daily_limit,
                               bot_id, webhook_url, webhook_nonce)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)",
        params![
            row.key_id,
            row.name,
            &key_hash[..],
            row.key_prefix,
            row.scopes.as_ref().map(|s| serde_json::to_string(s).unwrap_or_default()),
            row.created_by,
            row.created_at,
            row.updated_at,
            row.last_used_at,
            row.expires_at,
            row.revoked_at,
            row.daily_limit,
            row.bot_id,
            row.webhook_url,
            row.webhook_nonce,
        ],
    )?;
    bump_keys_generation(tx)
}

/// Writes the fields a key update may change (name, expiry, daily limit, bot, webhook URL
/// and nonce) from `row`. False if no such key.
pub fn update_key(tx: &Transaction<'_>, row: &KeyRow) -> rusqlite::Result<bool> {
    let n = tx.execute(
        "UPDATE api_keys SET name = ?2, expires_at = ?3, daily_limit = ?4, bot_id = ?5,
                webhook_url = ?6, webhook_nonce = ?7, updated_at = ?8
         WHERE key_id = ?1",
        params![
            row.key_id,
            row.name,
            row.expires_at,
            row.daily_limit,
            row.bot_id,
            row.webhook_url,
            row.webhook_nonce,
            row.updated_at
        ],
    )?;
    if n > 0 {
        bump_keys_generation(tx)?;
    }
    Ok(n > 0)
}

/// Every key, newest first (AstrBot orders by `created_at` descending).
pub fn list_keys(conn: &Connection) -> rusqlite::Result<Vec<KeyRow>> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {KEY_COLUMNS} FROM api_keys ORDER BY created_at DESC, inner_id DESC"
    ))?;
    let rows = stmt.query_map([], key_row)?;
    rows.collect()
}

/// One key by id, whatever its state.
pub fn get_key(conn: &Connection, key_id: &str) -> rusqlite::Result<Option<KeyRow>> {
    conn.prepare_cached(&format!("SELECT {KEY_COLUMNS} FROM api_keys WHERE key_id = ?1"))?
        .query_row([key_id], key_row)
        .optional()
}

/// The key with that MAC if it is neither revoked nor expired at `now`.
pub fn find_active_key(conn: &Connection, key_hash: &[u8; 32], now: i64) -> rusqlite::Result<Option<KeyRow>> {
    conn.prepare_cached(&format!(
        "SELECT {KEY_COLUMNS} FROM api_keys
         WHERE key_hash = ?1 AND revoked_at IS NULL AND (expires_at IS NULL OR expires_at > ?2)"
    ))?
    .query_row(params![&key_hash[..], now], key_row)
    .optional()
}

/// Sets `revoked_at` (again, if already revoked, as AstrBot does). False if no such key.
pub fn revoke_key(tx: &Transaction<'_>, key_id: &str, now: i64) -> rusqlite::Result<bool> {
    let n = tx.execute(
        "UPDATE api_keys SET revoked_at = ?2, updated_at = ?2 WHERE key_id = ?1",
        params![key_id, now],
    )?;
    if n > 0 {
        bump_keys_generation(tx)?;
    }
    Ok(n > 0)
}

/// Removes a key and its usage counts. False if no such key.
pub fn delete_key(tx: &Transaction<'_>, key_id: &str) -> rusqlite::Result<bool> {
    let n = tx.execute("DELETE FROM api_keys WHERE key_id = ?1", [key_id])?;
    tx.execute("DELETE FROM key_usage WHERE key_id = ?1", [key_id])?;
    tx.execute("DELETE FROM webhook_events WHERE key_id = ?1", [key_id])?;
    if n > 0 {
        bump_keys_generation(tx)?;
    }
    Ok(n > 0)
}

/// The counter bumped by every change to `api_keys`.
pub fn keys_generation(conn: &Connection) -> rusqlite::Result<i64> {
    conn.prepare_cached("SELECT value FROM meta WHERE name = 'keys_generation'")?.query_row([], |r| r.get(0))
}

/// Batched write-behind of usage: `last_used_at` per key and request counts per key and day.
/// Keys deleted meanwhile are skipped.
pub fn save_usage(
    tx: &Transaction<'_>,
    touched: &[(String, i64)],
    counts: &[(String, i64, i64)],
) -> rusqlite::Result<()> {
    let mut touch = tx.prepare_cached(
        "UPDATE api_keys SET last_used_at = ?2, updated_at = ?2
             WHERE key_id = ?1 AND (last_used_at IS NULL OR last_used_at < ?2)",
    )?;
    for (key_id, at) in touched {
        touch.execute(params![key_id, at])?;
    }
    let mut count = tx.prepare_cached(
        "INSERT INTO key_usage (key_id, day, count)
             SELECT ?1, ?2, ?3 WHERE EXISTS (SELECT 1 FROM api_keys WHERE key_id = ?1)
             ON CONFLICT (key_id, day) DO UPDATE SET count = max(count, excluded.count)",
    )?;
    for (key_id, day, n) in counts {
        count.execute(params![key_id, day, n])?;
    }
    tx.execute("DELETE FROM key_usage WHERE day < ?1", [counts.iter().map(|c| c.1).min().unwrap_or(0) - 1])?;
    Ok(())
}

/// Requests counted so far for a key on a UTC day.
pub fn usage_count(conn: &Connection, key_id: &str, day: i64) -> rusqlite::Result<i64> {
    conn.prepare_cached("SELECT count FROM key_usage WHERE key_id = ?1 AND day = ?2")?
        .query_row(params![key_id, day], |r| r.get(0))
        .optional()
        .map(|n| n.unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::{Db, temp_dir, write_tx};

    fn key(id: &str) -> KeyRow {
        KeyRow {
            key_id: id.into(),
            name: "k".into(),
            key_prefix: "abk_12345678".into(),
            scopes: Some(vec!["chat".into()]),
            created_by: "astrbot".into(),
            created_at: 10,
            updated_at: 10,
            last_used_at: None,
            expires_at: Some(100),
            revoked_at: None,
            daily_limit: None,
            bot_id: None,
            webhook_url: None,
            webhook_nonce: None,
        }
    }

    #[test]
    fn key_lifecycle_and_generation() {
        let dir = temp_dir("keys");
        let db = Db::open(&dir).unwrap();
        let mut conn = db.conn().unwrap();
        let g0 = keys_generation(&conn).unwrap();
        write_tx(&mut conn, |tx| insert_key(tx, &key("a"), &[1; 32])).unwrap();
        assert!(find_active_key(&conn, &[1; 32], 50).unwrap().is_some());
        assert!(find_active_key(&conn, &[1; 32], 100).unwrap().is_none(), "expired at 100");
        assert!(write_tx(&mut conn, |tx| revoke_key(tx, "a", 60)).unwrap());
        assert!(find_active_key(&conn, &[1; 32], 61).unwrap().is_none());
        assert!(!write_tx(&mut conn, |tx| revoke_key(tx, "missing", 60)).unwrap());
        write_tx(&mut conn, |tx| save_usage(tx, &[("a".into(), 70)], &[("a".into(), 5, 3)])).unwrap();
        assert_eq!(usage_count(&conn, "a", 5).unwrap(), 3);
        assert_eq!(get_key(&conn, "a").unwrap().unwrap().last_used_at, Some(70));
        assert!(write_tx(&mut conn, |tx| delete_key(tx, "a")).unwrap());
        assert_eq!(usage_count(&conn, "a", 5).unwrap(), 0);
        assert_eq!(keys_generation(&conn).unwrap(), g0 + 3);
    }
}
