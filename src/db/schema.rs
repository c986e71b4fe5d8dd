//! The schema: one SQL script per version, applied in order under SQLite's `user_version`.
//!
//! Entry `i` of [`MIGRATIONS`] takes a database from version `i` to `i + 1`, in one
//! `IMMEDIATE` transaction; a released entry is never edited, only new ones appended. A
//! database written by a newer binary is refused rather than misread. The comments in the
//! scripts are the documentation of the tables.

use rusqlite::{Connection, TransactionBehavior};

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
    // 5: bot-bound keys and the webhook mirror (decisions 15 and 16). A key may be bound to
    // a config profile (bot_id) and carry a webhook_url. Its signing secret is never
    // stored: it is derived from the server's MAC key and webhook_nonce, which a rotation
    // replaces. webhook_dropped counts events dropped because the outbox was full.
    "
    ALTER TABLE api_keys ADD COLUMN bot_id TEXT;
    ALTER TABLE api_keys ADD COLUMN webhook_url TEXT;
    ALTER TABLE api_keys ADD COLUMN webhook_nonce TEXT;
    ALTER TABLE api_keys ADD COLUMN webhook_dropped INTEGER NOT NULL DEFAULT 0;
    -- The webhook outbox: one row per event (a keyed request and its response), in
    -- creation order (id). event_id is the webhook-id header, the same on every attempt;
    -- unique by construction (a random per-process prefix and a counter), so no index
    -- pays for it on every insert.
    -- status: pending (to deliver at next_attempt_at), delivered, or failed (gave up at
    -- deadline, created_at + 24 h unless a manual retry moved it). Delivery follows id
    -- order per key; finished rows are kept a while for the deliveries listing.
    CREATE TABLE webhook_events (
        id              INTEGER PRIMARY KEY,
        event_id        TEXT NOT NULL,
        key_id          TEXT NOT NULL,
        body            TEXT NOT NULL,
        created_at      INTEGER NOT NULL,
        status          TEXT NOT NULL DEFAULT 'pending',
        attempts        INTEGER NOT NULL DEFAULT 0,
        next_attempt_at INTEGER NOT NULL,
        deadline        INTEGER NOT NULL,
        last_attempt_at INTEGER,
        response_code   INTEGER,
        error           TEXT,
        delivered_at    INTEGER
    );
    -- Both indexes end in the rowid (id), so each key's events are in creation order.
    -- By status and key: the deliverer's heads and batches, the per-key bound of pending
    -- events, pruning by status.
    CREATE INDEX webhook_events_by_status ON webhook_events (status, key_id);
    -- By key: the deliveries listing (newest first), a key's deletion, pruning per key.
    CREATE INDEX webhook_events_by_key ON webhook_events (key_id);
    ",
    // 6: MCP servers (AstrBot's data/mcp_server.json entries), in configuration order. config
    // is the server's JSON object as AstrBot stores it (active, command/args/env or
    // url/transport/headers, ...); name is its key there.
    "
    CREATE TABLE mcp_servers (
        name     TEXT PRIMARY KEY,
        position INTEGER NOT NULL,
        config   TEXT NOT NULL
    );
    ",
    // 7: skill active flags (AstrBot's data/skills.json); a skill without a row is active.
    "
    CREATE TABLE skill_states (
        name   TEXT PRIMARY KEY,
        active INTEGER NOT NULL
    );
    ",
    // 8: plugins: enabled flags (AstrBot's preferences `inactivated_plugins`; a plugin without
    // a row is enabled), install-source records (`plugin_install_sources`, keyed by folder
    // name), and the custom plugin sources list (`custom_plugin_sources`) as one JSON row.
    "
    CREATE TABLE plugin_states (
        name    TEXT PRIMARY KEY,
        enabled INTEGER NOT NULL
    );
    CREATE TABLE plugin_install_sources (
        name   TEXT PRIMARY KEY,
        record TEXT NOT NULL
    );
    CREATE TABLE plugin_preferences (
        key   TEXT PRIMARY KEY,
        value TEXT NOT NULL
    );
    ",
];

/// The schema version this binary writes.
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// Brings a database up to [`SCHEMA_VERSION`], one transaction per version.
pub fn migrate(conn: &mut Connection) -> Result<(), String> {
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
        // The one transaction opened outside `write_tx`: a version is its own unit (a
        // failed one leaves the versions before it committed), the runner works on a
        // connection before the pool hands out any, and its errors are start-up messages
        // naming the version rather than `rusqlite` errors.
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

/// The schema version of an open connection.
#[cfg(test)]
pub fn schema_version(conn: &Connection) -> rusqlite::Result<i64> {
    conn.pragma_query_value(None, "user_version", |r| r.get(0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::{Db, temp_dir};

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
}
