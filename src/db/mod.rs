//! All SQL lives here: the schema, its versioned migrations, and typed functions over it.
//!
//! One SQLite file (`DIR/astrbot.db`) in WAL mode holds everything. Connections come from a
//! small pool, one per request at a time; writes run in `IMMEDIATE` transactions so that
//! nothing is ever half-written, and SQLite's busy timeout serialises concurrent writers
//! (the server and the CLI may write at the same time). Timestamps are integers:
//! microseconds since the epoch, UTC.
//!
//! The types hold the transaction rule: every function that writes takes the caller's
//! `&Transaction`, so a write outside a transaction does not compile, and none opens a
//! transaction of its own (only the migration runner does, see `schema`). A request, the
//! usage flush or a CLI command opens its one transaction with [`write_tx`] and passes it
//! down; reads take a `&Connection`, which a transaction derefs to.
//!
//! The pool is `pool`, the schema and its migrations `schema`; the SQL of each kind of row
//! has its own module: `keys` (API keys and usage), `admin` (the administrator and admin
//! tokens), `resources` (configuration resources, attachments, bots), `chat` (sessions and
//! messages), `kb` (the knowledge base). The pool, keys and admin functions are used by
//! their paths here (`db::Db`, `db::insert_key`); the others by module (`db::chat::...`).

mod admin;
pub mod chat;
pub mod kb;
mod keys;
pub mod mcp;
pub mod plugins;
mod pool;
pub mod resources;
mod schema;
pub mod skills;
pub mod webhooks;

pub use admin::{
    admin_exists, admin_password_hash, admin_username, create_first_admin, delete_admin_token,
    find_admin_token, insert_admin_token, set_admin_password,
};
pub use keys::{
    KeyRow, delete_key, find_active_key, get_key, insert_key, keys_generation, list_keys, revoke_key,
    save_usage, update_key, usage_count,
};
pub use pool::Db;
#[cfg(test)]
pub use pool::temp_dir;
pub use resources::bot_ids;

use rusqlite::{Connection, TransactionBehavior};

/// Runs `f` in one `IMMEDIATE` transaction, committed only if it succeeds: a write request
/// is either wholly stored or not at all. `IMMEDIATE` takes the write lock at the start,
/// so a transaction that reads before it writes never fails half-way on a lock upgrade.
/// A transaction dropped by an error (or a panic in `f`) rolls back.
pub fn write_tx<T, E: From<rusqlite::Error>>(
    conn: &mut Connection,
    f: impl FnOnce(&rusqlite::Transaction<'_>) -> Result<T, E>,
) -> Result<T, E> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let value = f(&tx)?;
    tx.commit()?;
    Ok(value)
}

/// Proves that the database takes writes: takes the write lock, which also checks that
/// the journal can be written, and releases it without writing anything.
pub fn probe_write(conn: &mut Connection) -> rusqlite::Result<()> {
    write_tx(conn, |_| Ok(()))
}

/// Moves the write-ahead log into the database file and truncates it, so that a stopped
/// server leaves one self-contained file behind (run at shutdown; a failure only leaves
/// the log for the next start to replay).
pub fn checkpoint(conn: &Connection) -> rusqlite::Result<()> {
    conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE);")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A closure that fails leaves nothing behind, even after earlier writes succeeded in
    /// it, and leaves no transaction open on the pooled connection.
    #[test]
    fn failing_write_tx_rolls_back() {
        let dir = temp_dir("write-tx");
        let db = Db::open(&dir).unwrap();
        let mut conn = db.conn().unwrap();
        let failed = write_tx(&mut conn, |tx| {
            resources::set_route(tx, "webchat:FriendMessage:a", "default")?;
            Err::<(), _>(rusqlite::Error::QueryReturnedNoRows)
        });
        assert!(failed.is_err());
        assert!(conn.is_autocommit(), "no transaction left open");
        assert_eq!(resources::route(&conn, "webchat:FriendMessage:a").unwrap(), None);
        write_tx(&mut conn, |tx| resources::set_route(tx, "webchat:FriendMessage:a", "default")).unwrap();
        assert_eq!(resources::route(&conn, "webchat:FriendMessage:a").unwrap().as_deref(), Some("default"));
    }
}
