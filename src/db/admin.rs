//! SQL for the dashboard administrator (the argon2id hash of the password) and the admin
//! login tokens (stored by their MAC, kept a day past expiry so that they answer
//! `Token expired`, then purged).

use rusqlite::{Connection, OptionalExtension, Transaction, params};

/// The stored password hash of an administrator.
pub fn admin_password_hash(conn: &Connection, username: &str) -> rusqlite::Result<Option<String>> {
    conn.prepare_cached("SELECT password_hash FROM admins WHERE username = ?1")?
        .query_row([username], |r| r.get(0))
        .optional()
}

/// Whether any administrator exists.
pub fn admin_exists(conn: &Connection) -> rusqlite::Result<bool> {
    conn.query_row("SELECT EXISTS (SELECT 1 FROM admins)", [], |r| r.get(0))
}

/// Creates the administrator only if none exists yet (first start). True if created.
pub fn create_first_admin(
    tx: &Transaction<'_>,
    username: &str,
    phc: &str,
    now: i64,
) -> rusqlite::Result<bool> {
    let exists: bool = tx.query_row("SELECT EXISTS (SELECT 1 FROM admins)", [], |r| r.get(0))?;
    if !exists {
        tx.execute(
            "INSERT INTO admins (username, password_hash, updated_at) VALUES (?1, ?2, ?3)",
            params![username, phc, now],
        )?;
    }
    Ok(!exists)
}

/// Sets an administrator's password and ends every session of theirs.
pub fn set_admin_password(tx: &Transaction<'_>, username: &str, phc: &str, now: i64) -> rusqlite::Result<()> {
    tx.execute(
        "INSERT INTO admins (username, password_hash, updated_at) VALUES (?1, ?2, ?3)
         ON CONFLICT (username) DO UPDATE SET password_hash = ?2, updated_at = ?3",
        params![username, phc, now],
    )?;
    tx.execute("DELETE FROM admin_tokens WHERE username = ?1", [username])?;
    Ok(())
}

/// The single administrator's username, if there is one.
pub fn admin_username(conn: &Connection) -> rusqlite::Result<Option<String>> {
    conn.query_row("SELECT username FROM admins ORDER BY username LIMIT 1", [], |r| r.get(0)).optional()
}

/// Stores a new admin token and purges long-expired ones, both in the caller's
/// transaction, so that a failed purge does not leave a token stored for a failed login.
pub fn insert_admin_token(
    tx: &Transaction<'_>,
    token_hash: &[u8; 32],
    username: &str,
    now: i64,
    expires_at: i64,
) -> rusqlite::Result<()> {
    tx.execute(
        "INSERT INTO admin_tokens (token_hash, username, created_at, expires_at) VALUES (?1, ?2, ?3, ?4)",
        params![&token_hash[..], username, now, expires_at],
    )?;
    // Expired tokens are kept a day so that they answer `Token expired`, then purged.
    tx.execute(
        "DELETE FROM admin_tokens WHERE expires_at < ?1",
        [now.saturating_sub(crate::timefmt::MICROS_PER_DAY)],
    )?;
    Ok(())
}

/// `(username, expires_at)` of an admin token whose administrator still exists.
pub fn find_admin_token(conn: &Connection, token_hash: &[u8; 32]) -> rusqlite::Result<Option<(String, i64)>> {
    conn.prepare_cached(
        "SELECT t.username, t.expires_at FROM admin_tokens t JOIN admins a ON a.username = t.username
         WHERE t.token_hash = ?1",
    )?
    .query_row([&token_hash[..]], |r| Ok((r.get(0)?, r.get(1)?)))
    .optional()
}

/// Ends one admin session (logout); no error if the token was not stored.
pub fn delete_admin_token(tx: &Transaction<'_>, token_hash: &[u8; 32]) -> rusqlite::Result<()> {
    tx.execute("DELETE FROM admin_tokens WHERE token_hash = ?1", [&token_hash[..]])?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::{Db, temp_dir, write_tx};

    /// Regression: the admin token insert and the purge of expired tokens were two writes
    /// outside a transaction, so a failed purge left a token stored for a failed login.
    #[test]
    fn admin_token_insert_and_purge_are_one_transaction() {
        let dir = temp_dir("tokens");
        let db = Db::open(&dir).unwrap();
        let mut conn = db.conn().unwrap();
        assert!(write_tx(&mut conn, |tx| create_first_admin(tx, "astrbot", "phc", 0)).unwrap());
        let day = crate::timefmt::MICROS_PER_DAY;
        write_tx(&mut conn, |tx| insert_admin_token(tx, &[1; 32], "astrbot", 0, day)).unwrap();
        write_tx(&mut conn, |tx| insert_admin_token(tx, &[2; 32], "astrbot", 10 * day, 17 * day)).unwrap();
        assert!(find_admin_token(&conn, &[1; 32]).unwrap().is_none(), "purged a day after expiry");
        assert!(find_admin_token(&conn, &[2; 32]).unwrap().is_some());
        conn.execute_batch(
            "CREATE TEMP TRIGGER no_purge BEFORE DELETE ON admin_tokens BEGIN SELECT RAISE(ABORT, 'no'); END;",
        )
        .unwrap();
        assert!(
            write_tx(&mut conn, |tx| insert_admin_token(tx, &[3; 32], "astrbot", 30 * day, 37 * day))
                .is_err()
        );
        assert!(find_admin_token(&conn, &[3; 32]).unwrap().is_none(), "rolled back with the purge");
        assert!(conn.is_autocommit(), "no transaction left open");
    }
}
