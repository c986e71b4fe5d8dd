//! SQL for chat sessions and their messages.
//!
//! The writes take the caller's `&Transaction`, so that a handler composes several of them
//! into one `IMMEDIATE` transaction (`db::write_tx`) and a write outside one does not
//! compile; the reads take a `&Connection`, which a transaction derefs to. None of them
//! assumes a row read earlier is still there.

use rusqlite::{Connection, OptionalExtension, Transaction, params};
use serde_json::Value;

#[derive(Debug, Clone, PartialEq)]
pub struct Session {
    pub session_id: String,
    pub platform_id: String,
    pub creator: String,
    pub display_name: Option<String>,
    pub is_group: i64,
    pub selected_provider: Option<String>,
    pub selected_model: Option<String>,
    pub persona_id: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
}

const SESSION_COLUMNS: &str = "session_id, platform_id, creator, display_name, is_group, selected_provider, \
                               selected_model, persona_id, created_at, updated_at";

fn session_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Session> {
    Ok(Session {
        session_id: r.get(0)?,
        platform_id: r.get(1)?,
        creator: r.get(2)?,
        display_name: r.get(3)?,
        is_group: r.get(4)?,
        selected_provider: r.get(5)?,
        selected_model: r.get(6)?,
        persona_id: r.get(7)?,
        created_at: r.get(8)?,
        updated_at: r.get(9)?,
    })
}

pub fn session(conn: &Connection, id: &str) -> rusqlite::Result<Option<Session>> {
    conn.prepare_cached(&format!("SELECT {SESSION_COLUMNS} FROM chat_sessions WHERE session_id = ?1"))?
        .query_row([id], session_row)
        .optional()
}

/// Creates the session if it does not exist; returns the stored row either way. A
/// concurrent delete cannot come between the insert and the read inside the transaction;
/// should the row vanish anyway (a trigger), that is an error here rather than a panic.
pub fn ensure_session(tx: &Transaction<'_>, id: &str, creator: &str, now: i64) -> rusqlite::Result<Session> {
    ensure_platform_session(tx, id, creator, "webchat", false, now)
}

/// [`ensure_session`] for a conversation of an IM bot: its platform id is the bot's id,
/// and a group chat is marked as one.
pub fn ensure_platform_session(
    tx: &Transaction<'_>,
    id: &str,
    creator: &str,
    platform_id: &str,
    is_group: bool,
    now: i64,
) -> rusqlite::Result<Session> {
    tx.execute(
        "INSERT INTO chat_sessions (session_id, platform_id, creator, is_group, created_at, updated_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?5) ON CONFLICT (session_id) DO NOTHING",
        params![id, platform_id, creator, is_group, now],
    )?;
    session(tx, id)?.ok_or(rusqlite::Error::QueryReturnedNoRows)
}

/// One page of a creator's sessions (every creator's with `None`: the admin's listing),
/// newest activity first, and the total. `offset` is `None` for a page so far out that its
/// offset does not fit an integer: it is empty.
pub fn sessions_of(
    conn: &Connection,
    creator: Option<&str>,
    platform: Option<&str>,
    limit: i64,
    offset: Option<i64>,
) -> rusqlite::Result<(Vec<Session>, i64)> {
    // Two statements rather than `?1 IS NULL OR creator = ?1`, which would keep a
    // username's listing off the creator index.
    let filter = match creator {
        Some(_) => "creator = ?1 AND (?2 IS NULL OR platform_id = ?2)",
        None => "?1 IS NULL AND (?2 IS NULL OR platform_id = ?2)",
    };
    let total: i64 = conn
        .prepare_cached(&format!("SELECT count(*) FROM chat_sessions WHERE {filter}"))?
        .query_row(params![creator, platform], |r| r.get(0))?;
    let Some(offset) = offset else { return Ok((Vec::new(), total)) };
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {SESSION_COLUMNS} FROM chat_sessions WHERE {filter}
         ORDER BY updated_at DESC, session_id LIMIT ?3 OFFSET ?4"
    ))?;
    let rows = stmt.query_map(params![creator, platform, limit, offset], session_row)?;
    Ok((rows.collect::<Result<_, _>>()?, total))
}

/// Sets the session's own choices; `None` keeps the stored one. One statement, so two
/// commands at once (`/provider` and `/model`) never undo each other.
pub fn update_session_choice(
    tx: &Transaction<'_>,
    id: &str,
    provider: Option<&str>,
    model: Option<&str>,
    persona: Option<&str>,
) -> rusqlite::Result<()> {
    tx.execute(
        "UPDATE chat_sessions SET selected_provider = coalesce(?2, selected_provider),
             selected_model = coalesce(?3, selected_model), persona_id = coalesce(?4, persona_id)
         WHERE session_id = ?1",
        params![id, provider, model, persona],
    )?;
    Ok(())
}

pub fn touch_session(
    tx: &Transaction<'_>,
    id: &str,
    display_name: Option<&str>,
    now: i64,
) -> rusqlite::Result<()> {
    tx.execute(
        "UPDATE chat_sessions SET updated_at = ?2, display_name = coalesce(display_name, ?3) WHERE session_id = ?1",
        params![id, now, display_name],
    )?;
    Ok(())
}

/// Deletes a session and its history, proactive messages waiting in it included (they are
/// rows of the history too); false if there was none. Attachments its messages name stay,
/// as they always have: a chat's parts name uploads that other messages may name too.
pub fn delete_session(tx: &Transaction<'_>, id: &str) -> rusqlite::Result<bool> {
    tx.execute("DELETE FROM chat_messages WHERE session_id = ?1", [id])?;
    Ok(tx.execute("DELETE FROM chat_sessions WHERE session_id = ?1", [id])? > 0)
}

#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    pub id: i64,
    pub session_id: String,
    /// `user` or `bot`.
    pub sender: String,
    pub sender_name: String,
    /// `{"type":"user"|"bot","message":[parts],...}`
    pub content: Value,
    pub llm_checkpoint_id: Option<String>,
    pub created_at: i64,
}

pub fn insert_message(
    tx: &Transaction<'_>,
    session_id: &str,
    sender: &str,
    sender_name: &str,
    content: &Value,
    checkpoint: Option<&str>,
    now: i64,
) -> rusqlite::Result<i64> {
    tx.execute(
        "INSERT INTO chat_messages (session_id, sender, sender_name, content, llm_checkpoint_id, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![session_id, sender, sender_name, content.to_string(), checkpoint, now],
    )?;
    Ok(tx.last_insert_rowid())
}

/// Like `insert_message`, but only while the session exists: a chat's reply whose session
/// was deleted during the run is dropped rather than left behind without a session.
pub fn insert_session_message(
    tx: &Transaction<'_>,
    session_id: &str,
    sender: &str,
    sender_name: &str,
    content: &Value,
    checkpoint: Option<&str>,
    now: i64,
) -> rusqlite::Result<Option<i64>> {
    let n = tx.execute(
        "INSERT INTO chat_messages (session_id, sender, sender_name, content, llm_checkpoint_id, created_at)
         SELECT ?1, ?2, ?3, ?4, ?5, ?6 WHERE EXISTS (SELECT 1 FROM chat_sessions WHERE session_id = ?1)",
        params![session_id, sender, sender_name, content.to_string(), checkpoint, now],
    )?;
    Ok((n > 0).then(|| tx.last_insert_rowid()))
}

/// A session's messages, oldest first; with `last`, only the last so many.
pub fn messages(conn: &Connection, session_id: &str, last: Option<i64>) -> rusqlite::Result<Vec<Message>> {
    let mut stmt = conn.prepare_cached(
        "SELECT id, session_id, sender, sender_name, content, llm_checkpoint_id, created_at FROM (
             SELECT * FROM chat_messages WHERE session_id = ?1 ORDER BY id DESC LIMIT ?2
         ) ORDER BY id",
    )?;
    let rows = stmt.query_map(params![session_id, last.unwrap_or(-1)], message_row)?;
    rows.collect()
}

/// One page of a session's messages counted from the newest (page 1 holds the newest
/// `limit`), in chronological order within the page, and the session's total. `offset` is
/// `None` for a page too far out for its offset to fit an integer: it is empty.
pub fn messages_page(
    conn: &Connection,
    session_id: &str,
    limit: i64,
    offset: Option<i64>,
) -> rusqlite::Result<(Vec<Message>, i64)> {
    let total: i64 = conn
        .prepare_cached("SELECT count(*) FROM chat_messages WHERE session_id = ?1")?
        .query_row([session_id], |r| r.get(0))?;
    let Some(offset) = offset else { return Ok((Vec::new(), total)) };
    let mut stmt = conn.prepare_cached(
        "SELECT id, session_id, sender, sender_name, content, llm_checkpoint_id, created_at FROM (
             SELECT * FROM chat_messages WHERE session_id = ?1 ORDER BY id DESC LIMIT ?2 OFFSET ?3
         ) ORDER BY id",
    )?;
    let rows = stmt.query_map(params![session_id, limit, offset], message_row)?;
    Ok((rows.collect::<Result<_, _>>()?, total))
}

fn message_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Message> {
    Ok(Message {
        id: r.get(0)?,
        session_id: r.get(1)?,
        sender: r.get(2)?,
        sender_name: r.get(3)?,
        content: serde_json::from_str(&r.get::<_, String>(4)?).unwrap_or(Value::Null),
        llm_checkpoint_id: r.get(5)?,
        created_at: r.get(6)?,
    })
}

pub fn clear_messages(tx: &Transaction<'_>, session_id: &str) -> rusqlite::Result<()> {
    tx.execute("DELETE FROM chat_messages WHERE session_id = ?1", [session_id])?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::{Db, temp_dir, write_tx};

    /// Regression: `ensure_session` panicked (`expect("just inserted")`) when the session
    /// vanished between its insert and its read, as a concurrent delete makes it. A trigger
    /// plays the concurrent delete deterministically.
    #[test]
    fn session_deleted_during_ensure_is_an_error_not_a_panic() {
        let dir = temp_dir("ensure-race");
        let db = Db::open(&dir).unwrap();
        let mut conn = db.conn().unwrap();
        let made = write_tx(&mut conn, |tx| ensure_session(tx, "s1", "alice", 1)).unwrap();
        assert_eq!((made.creator.as_str(), made.created_at), ("alice", 1));
        conn.execute_batch(
            "CREATE TEMP TRIGGER vanish AFTER INSERT ON chat_sessions
             BEGIN DELETE FROM chat_sessions WHERE session_id = NEW.session_id; END;",
        )
        .unwrap();
        let gone = write_tx(&mut conn, |tx| ensure_session(tx, "s2", "alice", 2));
        assert!(matches!(gone, Err(rusqlite::Error::QueryReturnedNoRows)), "{gone:?}");
        conn.execute_batch("DROP TRIGGER vanish").unwrap();
        // A reply for a deleted session is dropped, not stored without its session.
        let content = serde_json::json!({"type": "bot"});
        let reply = |conn: &mut rusqlite::Connection, id: &str| {
            write_tx(conn, |tx| insert_session_message(tx, id, "bot", "bot", &content, None, 3)).unwrap()
        };
        assert_eq!(reply(&mut conn, "s2"), None);
        assert!(reply(&mut conn, "s1").is_some());
        assert_eq!(messages(&conn, "s2", None).unwrap(), vec![]);
    }

    #[test]
    fn session_choices_change_only_what_is_named() {
        let dir = temp_dir("choices");
        let db = Db::open(&dir).unwrap();
        let mut conn = db.conn().unwrap();
        write_tx(&mut conn, |tx| ensure_session(tx, "s", "alice", 1)).unwrap();
        write_tx(&mut conn, |tx| update_session_choice(tx, "s", Some("p1"), None, None)).unwrap();
        write_tx(&mut conn, |tx| update_session_choice(tx, "s", None, Some("m1"), None)).unwrap();
        let s = session(&conn, "s").unwrap().unwrap();
        assert_eq!((s.selected_provider.as_deref(), s.selected_model.as_deref()), (Some("p1"), Some("m1")));
    }

    #[test]
    fn sessions_page_beyond_any_offset_is_empty_with_the_total() {
        let dir = temp_dir("pages");
        let db = Db::open(&dir).unwrap();
        let mut conn = db.conn().unwrap();
        write_tx(&mut conn, |tx| ensure_session(tx, "s", "alice", 1)).unwrap();
        let (rows, total) = sessions_of(&conn, Some("alice"), None, 20, None).unwrap();
        assert_eq!((rows.len(), total), (0, 1));
        let (rows, total) = sessions_of(&conn, Some("alice"), None, 20, Some(0)).unwrap();
        assert_eq!((rows.len(), total), (1, 1));
    }
}
