//! SQL for the knowledge base: passages in the FTS5 table `kb_chunks` (trigram tokenizer,
//! so Chinese is searchable), grouped in named collections. `kb` splits documents into
//! passages and turns a question into a query; this module only stores and searches.

use rusqlite::{Connection, Transaction, params};

#[derive(Debug, Clone, PartialEq)]
pub struct Passage {
    pub title: String,
    pub url: String,
    pub body: String,
}

/// Replaces a collection's passages, in the caller's transaction so that a search never
/// sees the collection half replaced.
pub fn replace_collection(
    tx: &Transaction<'_>,
    collection: &str,
    passages: &[Passage],
) -> rusqlite::Result<()> {
    tx.execute("DELETE FROM kb_chunks WHERE collection = ?1", [collection])?;
    let mut stmt =
        tx.prepare_cached("INSERT INTO kb_chunks (collection, title, url, body) VALUES (?1, ?2, ?3, ?4)")?;
    for p in passages {
        stmt.execute(params![collection, p.title, p.url, p.body])?;
    }
    Ok(())
}

/// The passages of one collection.
pub fn count(conn: &Connection, collection: &str) -> rusqlite::Result<i64> {
    conn.prepare_cached("SELECT count(*) FROM kb_chunks WHERE collection = ?1")?
        .query_row([collection], |r| r.get(0))
}

/// A fingerprint kept in `meta` (`name`), e.g. of the documents a collection was built from.
pub fn fingerprint(conn: &Connection, name: &str) -> rusqlite::Result<Option<i64>> {
    use rusqlite::OptionalExtension;
    conn.prepare_cached("SELECT value FROM meta WHERE name = ?1")?.query_row([name], |r| r.get(0)).optional()
}

pub fn set_fingerprint(tx: &Transaction<'_>, name: &str, value: i64) -> rusqlite::Result<()> {
    tx.execute(
        "INSERT INTO meta (name, value) VALUES (?1, ?2) ON CONFLICT (name) DO UPDATE SET value = excluded.value",
        params![name, value],
    )?;
    Ok(())
}

/// Collections and their passage counts.
pub fn collections(conn: &Connection) -> rusqlite::Result<Vec<(String, i64)>> {
    let mut stmt =
        conn.prepare("SELECT collection, count(*) FROM kb_chunks GROUP BY collection ORDER BY collection")?;
    let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
    rows.collect()
}

/// Passages containing any of `terms` (for words too short for the trigram index), in the
/// given collections (all when empty); a scan, fine at knowledge-base sizes.
pub fn search_substrings(
    conn: &Connection,
    terms: &[String],
    collections: &[String],
    limit: i64,
) -> rusqlite::Result<Vec<Passage>> {
    let terms = serde_json::to_string(terms).unwrap_or_else(|_| "[]".into());
    let filter = serde_json::to_string(collections).unwrap_or_else(|_| "[]".into());
    let mut stmt = conn.prepare_cached(
        "SELECT title, url, body FROM kb_chunks
         WHERE EXISTS (SELECT 1 FROM json_each(?1) t WHERE instr(body, t.value) > 0 OR instr(title, t.value) > 0)
           AND (json_array_length(?2) = 0 OR collection IN (SELECT value FROM json_each(?2)))
         LIMIT ?3",
    )?;
    let rows = stmt.query_map(params![terms, filter, limit], |r| {
        Ok(Passage { title: r.get(0)?, url: r.get(1)?, body: r.get(2)? })
    })?;
    rows.collect()
}

/// The best passages for an FTS5 query in the given collections (all when empty).
pub fn search(
    conn: &Connection,
    fts_query: &str,
    collections: &[String],
    limit: i64,
) -> rusqlite::Result<Vec<Passage>> {
    let filter = serde_json::to_string(collections).unwrap_or_else(|_| "[]".into());
    let mut stmt = conn.prepare_cached(
        "SELECT title, url, body FROM kb_chunks
         WHERE kb_chunks MATCH ?1
           AND (json_array_length(?2) = 0 OR collection IN (SELECT value FROM json_each(?2)))
         ORDER BY bm25(kb_chunks, 0.0, 4.0, 0.0, 1.0) LIMIT ?3",
    )?;
    let rows = stmt.query_map(params![fts_query, filter, limit], |r| {
        Ok(Passage { title: r.get(0)?, url: r.get(1)?, body: r.get(2)? })
    })?;
    rows.collect()
}
