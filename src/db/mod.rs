//! All SQL lives here: the schema, its versioned migrations, and typed functions over it.
//!
//! One SQLite file (`DIR/astrbot.db`) in WAL mode holds everything. Connections come from a
//! small pool, one per request at a time; writes run in `IMMEDIATE` transactions so that
//! nothing is ever half-written, and SQLite's busy timeout serialises concurrent writers
//! (the server and the CLI may write at the same time). Timestamps are integers:
//! microseconds since the epoch, UTC.

pub mod chat;
pub mod resources;

use std::ops::{Deref, DerefMut};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};

/// The schema, one entry per version. Entry `i` takes a database from version `i` to
/// `i + 1`; a released entry is never edited, only new ones appended.
const MIGRATIONS: &[&str] = &[
    // 1: the appliance core.
    "
    -- The dashboard administrator: argon2id PHC string of the password.
    CREATE TABLE admins (
        username      TEXT PRIMARY KEY,
        password_hash TEXT NOT NULL,
        updated_at    INTEGER NOT NULL
    );
    -- Admin login tokens, stored as their MAC; they expire after seven days.
    CREATE TABLE admin_tokens (
        token_hash BLOB PRIMARY KEY,
        username   TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        expires_at INTEGER NOT NULL
    );
    -- Developer API keys (AstrBot's api_keys table, plus daily_limit). key_hash is the MAC
    -- of the raw key; the raw key is never stored. scopes is a JSON list (NULL = legacy).
    CREATE TABLE api_keys (
        inner_id     INTEGER PRIMARY KEY AUTOINCREMENT,
        key_id       TEXT NOT NULL UNIQUE,
        name         TEXT NOT NULL,
        key_hash     BLOB NOT NULL UNIQUE,
        key_prefix   TEXT NOT NULL,
        scopes       TEXT,
        created_by   TEXT NOT NULL,
        created_at   INTEGER NOT NULL,
        updated_at   INTEGER NOT NULL,
        last_used_at INTEGER,
        expires_at   INTEGER,
        revoked_at   INTEGER,
        daily_limit  INTEGER
    );
    -- Requests counted per key and UTC day, for quotas that survive a restart.
    CREATE TABLE key_usage (
        key_id TEXT NOT NULL,
        day    INTEGER NOT NULL,
        count  INTEGER NOT NULL,
        PRIMARY KEY (key_id, day)
    );
    -- Bumped in the same transaction as every change to api_keys, so a running server
    -- notices a change made by the CLI and drops its key cache.
    CREATE TABLE meta (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
    INSERT INTO meta (name, value) VALUES ('keys_generation', 0);
    -- IM bots (platform configurations), in configuration order.
    CREATE TABLE bots (
        id         TEXT PRIMARY KEY,
        position   INTEGER NOT NULL,
        type       TEXT NOT NULL DEFAULT '',
        enable     INTEGER NOT NULL DEFAULT 1,
        config     TEXT NOT NULL DEFAULT '{}',
        created_at INTEGER NOT NULL DEFAULT 0
    );
    ",
    // 2: configuration resources. Provider sources, providers and config profiles are JSON
    // documents (AstrBot's shapes, which carry vendor-specific keys); position keeps the
    // order AstrBot's lists have. The default profile is the system config.
    "
    CREATE TABLE provider_sources (id TEXT PRIMARY KEY, position INTEGER NOT NULL, body TEXT NOT NULL);
    CREATE TABLE providers (id TEXT PRIMARY KEY, position INTEGER NOT NULL, body TEXT NOT NULL);
    CREATE TABLE config_profiles (
        id         TEXT PRIMARY KEY,
        name       TEXT NOT NULL,
        position   INTEGER NOT NULL,
        body       TEXT NOT NULL,
        created_at INTEGER NOT NULL
    );
    INSERT INTO config_profiles (id, name, position, body, created_at) VALUES ('default', 'default', -1, '{}', 0);
    -- Which profile applies to a unified message origin (UMO).
    CREATE TABLE config_routes (umo TEXT PRIMARY KEY, config_id TEXT NOT NULL);
    CREATE TABLE persona_folders (
        folder_id   TEXT PRIMARY KEY,
        name        TEXT NOT NULL,
        parent_id   TEXT,
        description TEXT,
        sort_order  INTEGER NOT NULL DEFAULT 0,
        created_at  INTEGER NOT NULL,
        updated_at  INTEGER NOT NULL
    );
    -- begin_dialogs is a JSON list; tools and skills are JSON lists or NULL (all).
    CREATE TABLE personas (
        seq                  INTEGER PRIMARY KEY AUTOINCREMENT,
        persona_id           TEXT NOT NULL UNIQUE,
        system_prompt        TEXT NOT NULL,
        begin_dialogs        TEXT NOT NULL DEFAULT '[]',
        tools                TEXT,
        skills               TEXT,
        custom_error_message TEXT,
        folder_id            TEXT,
        sort_order           INTEGER NOT NULL DEFAULT 0,
        created_at           INTEGER NOT NULL,
        updated_at           INTEGER NOT NULL
    );
    ",
    // 3: chat attachments. The bytes live in DIR/attachments/<attachment_id>; the name shown
    // is sanitised, the type comes from the part's Content-Type or the file's magic bytes.
    "
    CREATE TABLE attachments (
        attachment_id TEXT PRIMARY KEY,
        filename      TEXT NOT NULL,
        type          TEXT NOT NULL,
        mime_type     TEXT NOT NULL,
        size          INTEGER NOT NULL,
        created_at    INTEGER NOT NULL
    );
    ",
    // 4: chat. Sessions (AstrBot's platform_sessions) and their messages (its
    // platform_message_history); the session's own choices of provider, model and persona;
    // the knowledge base as FTS5 with the trigram tokenizer (so Chinese is searchable).
    "
    CREATE TABLE chat_sessions (
        session_id        TEXT PRIMARY KEY,
        platform_id       TEXT NOT NULL DEFAULT 'webchat',
        creator           TEXT NOT NULL,
        display_name      TEXT,
        is_group          INTEGER NOT NULL DEFAULT 0,
        selected_provider TEXT,
        selected_model    TEXT,
        persona_id        TEXT,
        created_at        INTEGER NOT NULL,
        updated_at        INTEGER NOT NULL
    );
    CREATE INDEX chat_sessions_by_creator ON chat_sessions (creator, updated_at);
    CREATE TABLE chat_messages (
        id                INTEGER PRIMARY KEY AUTOINCREMENT,
        session_id        TEXT NOT NULL,
        sender            TEXT NOT NULL,
        sender_name       TEXT NOT NULL,
        content           TEXT NOT NULL,
        llm_checkpoint_id TEXT,
        created_at        INTEGER NOT NULL
    );
    CREATE INDEX chat_messages_by_session ON chat_messages (session_id, id);
    CREATE VIRTUAL TABLE kb_chunks USING fts5(collection UNINDEXED, title, url UNINDEXED, body, tokenize = 'trigram');
    ",
];

/// The schema version this binary writes.
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

pub struct Db {
    path: PathBuf,
    idle: Mutex<Vec<Connection>>,
}

/// A pooled connection, returned to the pool on drop.
pub struct Conn<'a> {
    db: &'a Db,
    conn: Option<Connection>,
}

impl Deref for Conn<'_> {
    type Target = Connection;
    fn deref(&self) -> &Connection {
        self.conn.as_ref().expect("connection present until drop")
    }
}

impl DerefMut for Conn<'_> {
    fn deref_mut(&mut self) -> &mut Connection {
        self.conn.as_mut().expect("connection present until drop")
    }
}

impl Drop for Conn<'_> {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            let mut idle = self.db.idle.lock().unwrap_or_else(|e| e.into_inner());
            if idle.len() < 16 {
                idle.push(conn);
            }
        }
    }
}

impl Db {
    /// Opens `DIR/astrbot.db`, creating it, and brings its schema up to date. A database
    /// written by a newer binary is refused rather than misread.
    pub fn open(dir: &Path) -> Result<Db, String> {
        let path = dir.join("astrbot.db");
        let db = Db { path, idle: Mutex::new(Vec::new()) };
        let mut conn = db.open_connection().map_err(|e| format!("{}: {e}", db.path.display()))?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(|e| format!("{}: cannot enable WAL: {e}", db.path.display()))?;
        migrate(&mut conn).map_err(|e| format!("{}: {e}", db.path.display()))?;
        db.idle.lock().unwrap_or_else(|e| e.into_inner()).push(conn);
        Ok(db)
    }

    fn open_connection(&self) -> rusqlite::Result<Connection> {
        let conn = Connection::open(&self.path)?;
        conn.execute_batch(
            "PRAGMA synchronous = NORMAL;
             PRAGMA foreign_keys = ON;
             PRAGMA busy_timeout = 5000;
             PRAGMA temp_store = MEMORY;
             PRAGMA cache_size = -1024;
             PRAGMA journal_size_limit = 67108864;",
        )?;
        Ok(conn)
    }

    /// A connection from the pool, or a new one.
    pub fn conn(&self) -> rusqlite::Result<Conn<'_>> {
        let pooled = self.idle.lock().unwrap_or_else(|e| e.into_inner()).pop();
        let conn = match pooled {
            Some(c) => c,
            None => self.open_connection()?,
        };
        Ok(Conn { db: self, conn: Some(conn) })
    }
}

fn migrate(conn: &mut Connection) -> Result<(), String> {
    let version: i64 =
        conn.pragma_query_value(None, "user_version", |r| r.get(0)).map_err(|e| e.to_string())?;
    if version > SCHEMA_VERSION {
        return Err(format!(
            "the database has schema version {version}, newer than this astrbot supports \
             ({SCHEMA_VERSION}); run a newer astrbot or restore a backup"
        ));
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(version as usize) {
        let next = i as i64 + 1;
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(|e| e.to_string())?;
        // Re-read inside the lock: a CLI and a server starting together must not both migrate.
        let now: i64 =
            tx.pragma_query_value(None, "user_version", |r| r.get(0)).map_err(|e| e.to_string())?;
        if now >= next {
            continue;
        }
        tx.execute_batch(sql).map_err(|e| format!("migration to version {next} failed: {e}"))?;
        tx.pragma_update(None, "user_version", next).map_err(|e| e.to_string())?;
        tx.commit().map_err(|e| e.to_string())?;
        log::info!("database migrated to schema version {next}");
    }
    Ok(())
}

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

/// The schema version of an open connection.
#[cfg(test)]
pub fn schema_version(conn: &Connection) -> rusqlite::Result<i64> {
    conn.pragma_query_value(None, "user_version", |r| r.get(0))
}

// ---------------------------------------------------------------------------------------
// API keys

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
}

const KEY_COLUMNS: &str = "key_id, name, key_prefix, scopes, created_by, created_at, updated_at, \
                           last_used_at, expires_at, revoked_at, daily_limit";

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
    })
}

fn bump_keys_generation(conn: &Connection) -> rusqlite::Result<()> {
    conn.execute("UPDATE meta SET value = value + 1 WHERE name = 'keys_generation'", [])?;
    Ok(())
}

/// Inserts a new key; `key_hash` is the MAC of the raw key.
pub fn insert_key(conn: &mut Connection, row: &KeyRow, key_hash: &[u8; 32]) -> rusqlite::Result<()> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    tx.execute(
        "INSERT INTO api_keys (key_id, name, key_hash, key_prefix, scopes, created_by, created_at,
                               updated_at, last_used_at, expires_at, revoked_at, daily_limit)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
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
        ],
    )?;
    bump_keys_generation(&tx)?;
    tx.commit()
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
#[cfg(test)]
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
pub fn revoke_key(conn: &mut Connection, key_id: &str, now: i64) -> rusqlite::Result<bool> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let n = tx.execute(
        "UPDATE api_keys SET revoked_at = ?2, updated_at = ?2 WHERE key_id = ?1",
        params![key_id, now],
    )?;
    if n > 0 {
        bump_keys_generation(&tx)?;
    }
    tx.commit()?;
    Ok(n > 0)
}

/// Removes a key and its usage counts. False if no such key.
pub fn delete_key(conn: &mut Connection, key_id: &str) -> rusqlite::Result<bool> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let n = tx.execute("DELETE FROM api_keys WHERE key_id = ?1", [key_id])?;
    tx.execute("DELETE FROM key_usage WHERE key_id = ?1", [key_id])?;
    if n > 0 {
        bump_keys_generation(&tx)?;
    }
    tx.commit()?;
    Ok(n > 0)
}

/// The counter bumped by every change to `api_keys`.
pub fn keys_generation(conn: &Connection) -> rusqlite::Result<i64> {
    conn.prepare_cached("SELECT value FROM meta WHERE name = 'keys_generation'")?.query_row([], |r| r.get(0))
}

/// Batched write-behind of usage: `last_used_at` per key and request counts per key and day.
/// One transaction; keys deleted meanwhile are skipped.
pub fn save_usage(
    conn: &mut Connection,
    touched: &[(String, i64)],
    counts: &[(String, i64, i64)],
) -> rusqlite::Result<()> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    {
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
        tx.execute(
            "DELETE FROM key_usage WHERE day < ?1",
            [counts.iter().map(|c| c.1).min().unwrap_or(0) - 1],
        )?;
    }
    tx.commit()
}

/// Requests counted so far for a key on a UTC day.
pub fn usage_count(conn: &Connection, key_id: &str, day: i64) -> rusqlite::Result<i64> {
    conn.prepare_cached("SELECT count FROM key_usage WHERE key_id = ?1 AND day = ?2")?
        .query_row(params![key_id, day], |r| r.get(0))
        .optional()
        .map(|n| n.unwrap_or(0))
}

// ---------------------------------------------------------------------------------------
// The administrator and admin tokens

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
    conn: &mut Connection,
    username: &str,
    phc: &str,
    now: i64,
) -> rusqlite::Result<bool> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let exists: bool = tx.query_row("SELECT EXISTS (SELECT 1 FROM admins)", [], |r| r.get(0))?;
    if !exists {
        tx.execute(
            "INSERT INTO admins (username, password_hash, updated_at) VALUES (?1, ?2, ?3)",
            params![username, phc, now],
        )?;
    }
    tx.commit()?;
    Ok(!exists)
}

/// Sets an administrator's password and ends every session of theirs.
pub fn set_admin_password(
    conn: &mut Connection,
    username: &str,
    phc: &str,
    now: i64,
) -> rusqlite::Result<()> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    tx.execute(
        "INSERT INTO admins (username, password_hash, updated_at) VALUES (?1, ?2, ?3)
         ON CONFLICT (username) DO UPDATE SET password_hash = ?2, updated_at = ?3",
        params![username, phc, now],
    )?;
    tx.execute("DELETE FROM admin_tokens WHERE username = ?1", [username])?;
    tx.commit()
}

/// The single administrator's username, if there is one.
pub fn admin_username(conn: &Connection) -> rusqlite::Result<Option<String>> {
    conn.query_row("SELECT username FROM admins ORDER BY username LIMIT 1", [], |r| r.get(0)).optional()
}

/// Stores a new admin token and purges long-expired ones, in one `IMMEDIATE` transaction.
/// It takes a shared connection (the login handler holds one from the pool), so it opens
/// the transaction itself; a connection already inside one is an error, not a nesting.
pub fn insert_admin_token(
    conn: &Connection,
    token_hash: &[u8; 32],
    username: &str,
    now: i64,
    expires_at: i64,
) -> rusqlite::Result<()> {
    let tx = rusqlite::Transaction::new_unchecked(conn, TransactionBehavior::Immediate)?;
    tx.execute(
        "INSERT INTO admin_tokens (token_hash, username, created_at, expires_at) VALUES (?1, ?2, ?3, ?4)",
        params![&token_hash[..], username, now, expires_at],
    )?;
    // Expired tokens are kept a day so that they answer `Token expired`, then purged.
    tx.execute(
        "DELETE FROM admin_tokens WHERE expires_at < ?1",
        [now.saturating_sub(crate::timefmt::MICROS_PER_DAY)],
    )?;
    tx.commit()
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

pub fn delete_admin_token(conn: &Connection, token_hash: &[u8; 32]) -> rusqlite::Result<()> {
    conn.execute("DELETE FROM admin_tokens WHERE token_hash = ?1", [&token_hash[..]])?;
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Bots

/// The ids of the configured bots, in configuration order.
pub fn bot_ids(conn: &Connection) -> rusqlite::Result<Vec<String>> {
    let mut stmt = conn.prepare_cached("SELECT id FROM bots WHERE id <> '' ORDER BY position, id")?;
    let rows = stmt.query_map([], |r| r.get(0))?;
    rows.collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("astrbot-db-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

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
        }
    }

    #[test]
    fn migrates_and_refuses_newer_schema() {
        let dir = temp_dir("migrate");
        let db = Db::open(&dir).unwrap();
        assert_eq!(schema_version(&db.conn().unwrap()).unwrap(), SCHEMA_VERSION);
        db.conn().unwrap().pragma_update(None, "user_version", SCHEMA_VERSION + 1).unwrap();
        drop(db);
        let err = Db::open(&dir).err().unwrap();
        assert!(err.contains("newer than this astrbot supports"), "{err}");
    }

    #[test]
    fn key_lifecycle_and_generation() {
        let dir = temp_dir("keys");
        let db = Db::open(&dir).unwrap();
        let mut conn = db.conn().unwrap();
        let g0 = keys_generation(&conn).unwrap();
        insert_key(&mut conn, &key("a"), &[1; 32]).unwrap();
        assert!(find_active_key(&conn, &[1; 32], 50).unwrap().is_some());
        assert!(find_active_key(&conn, &[1; 32], 100).unwrap().is_none(), "expired at 100");
        assert!(revoke_key(&mut conn, "a", 60).unwrap());
        assert!(find_active_key(&conn, &[1; 32], 61).unwrap().is_none());
        assert!(!revoke_key(&mut conn, "missing", 60).unwrap());
        save_usage(&mut conn, &[("a".into(), 70)], &[("a".into(), 5, 3)]).unwrap();
        assert_eq!(usage_count(&conn, "a", 5).unwrap(), 3);
        assert_eq!(get_key(&conn, "a").unwrap().unwrap().last_used_at, Some(70));
        assert!(delete_key(&mut conn, "a").unwrap());
        assert_eq!(usage_count(&conn, "a", 5).unwrap(), 0);
        assert_eq!(keys_generation(&conn).unwrap(), g0 + 3);
    }

    /// Regression: `ensure_session` panicked (`expect("just inserted")`) when the session
    /// vanished between its insert and its read, as a concurrent delete makes it. A trigger
    /// plays the concurrent delete deterministically.
    #[test]
    fn session_deleted_during_ensure_is_an_error_not_a_panic() {
        let dir = temp_dir("ensure-race");
        let db = Db::open(&dir).unwrap();
        let mut conn = db.conn().unwrap();
        let made = write_tx(&mut conn, |tx| chat::ensure_session(tx, "s1", "alice", 1)).unwrap();
        assert_eq!((made.creator.as_str(), made.created_at), ("alice", 1));
        conn.execute_batch(
            "CREATE TEMP TRIGGER vanish AFTER INSERT ON chat_sessions
             BEGIN DELETE FROM chat_sessions WHERE session_id = NEW.session_id; END;",
        )
        .unwrap();
        let gone = write_tx(&mut conn, |tx| chat::ensure_session(tx, "s2", "alice", 2));
        assert!(matches!(gone, Err(rusqlite::Error::QueryReturnedNoRows)), "{gone:?}");
        conn.execute_batch("DROP TRIGGER vanish").unwrap();
        // A reply for a deleted session is dropped, not stored without its session.
        let content = serde_json::json!({"type": "bot"});
        assert_eq!(chat::insert_session_message(&conn, "s2", "bot", "bot", &content, None, 3).unwrap(), None);
        assert!(
            chat::insert_session_message(&conn, "s1", "bot", "bot", &content, None, 3).unwrap().is_some()
        );
        assert_eq!(chat::messages(&conn, "s2", None).unwrap(), vec![]);
    }

    #[test]
    fn session_choices_change_only_what_is_named() {
        let dir = temp_dir("choices");
        let db = Db::open(&dir).unwrap();
        let mut conn = db.conn().unwrap();
        write_tx(&mut conn, |tx| chat::ensure_session(tx, "s", "alice", 1)).unwrap();
        chat::update_session_choice(&conn, "s", Some("p1"), None, None).unwrap();
        chat::update_session_choice(&conn, "s", None, Some("m1"), None).unwrap();
        let s = chat::session(&conn, "s").unwrap().unwrap();
        assert_eq!((s.selected_provider.as_deref(), s.selected_model.as_deref()), (Some("p1"), Some("m1")));
    }

    #[test]
    fn sessions_page_beyond_any_offset_is_empty_with_the_total() {
        let dir = temp_dir("pages");
        let db = Db::open(&dir).unwrap();
        let mut conn = db.conn().unwrap();
        write_tx(&mut conn, |tx| chat::ensure_session(tx, "s", "alice", 1)).unwrap();
        let (rows, total) = chat::sessions_of(&conn, "alice", None, 20, None).unwrap();
        assert_eq!((rows.len(), total), (0, 1));
        let (rows, total) = chat::sessions_of(&conn, "alice", None, 20, Some(0)).unwrap();
        assert_eq!((rows.len(), total), (1, 1));
    }

    /// Regression: the admin token insert and the purge of expired tokens were two writes
    /// outside a transaction, so a failed purge left a token stored for a failed login.
    #[test]
    fn admin_token_insert_and_purge_are_one_transaction() {
        let dir = temp_dir("tokens");
        let db = Db::open(&dir).unwrap();
        let mut conn = db.conn().unwrap();
        assert!(create_first_admin(&mut conn, "astrbot", "phc", 0).unwrap());
        let day = crate::timefmt::MICROS_PER_DAY;
        insert_admin_token(&conn, &[1; 32], "astrbot", 0, day).unwrap();
        insert_admin_token(&conn, &[2; 32], "astrbot", 10 * day, 17 * day).unwrap();
        assert!(find_admin_token(&conn, &[1; 32]).unwrap().is_none(), "purged a day after expiry");
        assert!(find_admin_token(&conn, &[2; 32]).unwrap().is_some());
        conn.execute_batch(
            "CREATE TEMP TRIGGER no_purge BEFORE DELETE ON admin_tokens BEGIN SELECT RAISE(ABORT, 'no'); END;",
        )
        .unwrap();
        assert!(insert_admin_token(&conn, &[3; 32], "astrbot", 30 * day, 37 * day).is_err());
        assert!(find_admin_token(&conn, &[3; 32]).unwrap().is_none(), "rolled back with the purge");
        assert!(conn.is_autocommit(), "no transaction left open");
    }
}
