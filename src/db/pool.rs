//! The connection pool: `DIR/astrbot.db` opened in WAL mode, with idle connections kept
//! for reuse (at most 16), one per request at a time.
//!
//! [`Db::open`] also brings the schema up to date (`schema`), so a `Db` always speaks
//! this binary's schema. SQLite's busy timeout serialises concurrent writers, the server's
//! and the CLI's alike.

use std::ops::{Deref, DerefMut};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use rusqlite::Connection;

use super::schema::migrate;

/// The database: the file's path and the idle connections of the pool.
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

/// A fresh data folder for a unit test, under the system's temporary folder.
#[cfg(test)]
pub fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("astrbot-db-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
