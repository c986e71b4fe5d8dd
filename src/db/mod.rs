//! All SQL lives here: the schema, its versioned migrations, and typed functions over it.
//!
//! One SQLite file (`DIR/astrbot.db`) in WAL mode holds everything. Connections come from a
//! small pool, one per request at a time; writes run in `IMMEDIATE` transactions so that
//! nothing is ever half-written, and SQLite's busy timeout serialises concurrent writers
//! (the server and the CLI may write at the same time). Timestamps are integers:
//! microseconds since the epoch, UTC.
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
mod pool;
pub mod resources;
mod schema;

pub use admin::{
    admin_exists, admin_password_hash, admin_username, create_first_admin, delete_admin_token,
    find_admin_token, insert_admin_token, set_admin_password,
};
pub use keys::{
    KeyRow, delete_key, find_active_key, insert_key, keys_generation, list_keys, revoke_key, save_usage,
    usage_count,
};
pub use pool::Db;
#[cfg(test)]
pub use pool::temp_dir;
pub use resources::bot_ids;

use rusqlite::{Connection, TransactionBehavior};

/// Runs `f` in one `IMMEDIATE` transaction, committed only if it succeeds: a write request
/// is either wholly stored or not at all.
pub fn write_tx<T, E: From<rusqlite::Error>>(
    conn: &mut Connection,
    f: impl FnOnce(&rusqlite::Transaction<'_>) -> Result<T, E>,
) -> Result<T, E> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let value = f(&tx)?;
    tx.commit()?;
    Ok(value)
}

/// Moves the write-ahead log into the database file and truncates it, so that a stopped
/// server leaves one self-contained file behind (run at shutdown; a failure only leaves
/// the log for the next start to replay).
pub fn checkpoint(conn: &Connection) -> rusqlite::Result<()> {
    conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE);")
}
