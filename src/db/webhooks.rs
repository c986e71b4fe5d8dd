//! SQL of the webhook outbox: the `webhook_events` rows and the webhook columns of
//! `api_keys` (`webhook_url`, `webhook_nonce`, `webhook_dropped`).
//!
//! The engine in `webhooks` is the only writer of new events: its writer thread stores a
//! batch with [`insert_events`] and keeps each key's pending events under a bound with
//! [`trim_pending`]; its deliverer reads [`pending_heads`] and [`pending_batch`], and
//! stores what its attempts did with [`record_attempts`]. The HTTP side reads
//! [`deliveries`] and [`outbox_counts`] and moves an event back to pending with
//! [`retry_delivery`]. Every statement is `prepare_cached` and touches rows through the
//! two indexes of migration 5, because the writer runs at thousands of events a second.
//! No function assumes that a row read earlier is still there: the writer may trim a
//! pending event while the deliverer sends it, and a key may be deleted at any time.

use std::collections::HashMap;

use rusqlite::{Connection, OptionalExtension, Transaction, params};

/// An event as the listing shows it. `next_attempt_at` is `None` unless it is pending.
#[derive(Debug, Clone, PartialEq)]
pub struct Delivery {
    pub id: i64,
    pub event_id: String,
    pub key_id: String,
    pub status: String,
    pub attempts: i64,
    pub response_code: Option<i64>,
    pub error: Option<String>,
    pub created_at: i64,
    pub last_attempt_at: Option<i64>,
    pub next_attempt_at: Option<i64>,
    pub delivered_at: Option<i64>,
}

const DELIVERY_COLUMNS: &str = "id, event_id, key_id, status, attempts, response_code, error, created_at, \
                                last_attempt_at, CASE status WHEN 'pending' THEN next_attempt_at END, \
                                delivered_at";

fn delivery_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Delivery> {
    Ok(Delivery {
        id: r.get(0)?,
        event_id: r.get(1)?,
        key_id: r.get(2)?,
        status: r.get(3)?,
        attempts: r.get(4)?,
        response_code: r.get(5)?,
        error: r.get(6)?,
        created_at: r.get(7)?,
        last_attempt_at: r.get(8)?,
        next_attempt_at: r.get(9)?,
        delivered_at: r.get(10)?,
    })
}

/// A key's events, newest first, at most `limit`.
pub fn deliveries(conn: &Connection, key_id: &str, limit: i64) -> rusqlite::Result<Vec<Delivery>> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {DELIVERY_COLUMNS} FROM webhook_events WHERE key_id = ?1 ORDER BY id DESC LIMIT ?2"
    ))?;
    let rows = stmt.query_map(params![key_id, limit], delivery_row)?;
    rows.collect()
}

/// Makes one event of a key pending and due at `now`, whatever its status, with at least
/// a day left before its deadline. Its attempt count starts again, so a failed manual
/// retry is retried on the schedule's first steps (5 s, 30 s, ...) rather than its last.
/// `None` if the key has no such event.
pub fn retry_delivery(
    tx: &Transaction<'_>,
    key_id: &str,
    id: i64,
    now: i64,
) -> rusqlite::Result<Option<Delivery>> {
    let changed = tx
        .prepare_cached(
            "UPDATE webhook_events SET status = 'pending', attempts = 0, next_attempt_at = ?3, deadline = max(deadline, ?4)
         WHERE id = ?1 AND key_id = ?2",
        )?
        .execute(params![id, key_id, now, now + RETRY_WINDOW])?;
    if changed == 0 {
        return Ok(None);
    }
    tx.prepare_cached(&format!("SELECT {DELIVERY_COLUMNS} FROM webhook_events WHERE id = ?1"))?
        .query_row([id], delivery_row)
        .optional()
}

/// How long a manual retry keeps an event alive at least: a day, in microseconds.
const RETRY_WINDOW: i64 = 86_400 * 1_000_000;

/// A key's pending events and the count of its events dropped because the outbox was
/// full. `(0, 0)` for an unknown key.
pub fn outbox_counts(conn: &Connection, key_id: &str) -> rusqlite::Result<(i64, i64)> {
    let pending: i64 = conn
        .prepare_cached("SELECT count(*) FROM webhook_events WHERE status = 'pending' AND key_id = ?1")?
        .query_row([key_id], |r| r.get(0))?;
    let dropped: Option<i64> = conn
        .prepare_cached("SELECT webhook_dropped FROM api_keys WHERE key_id = ?1")?
        .query_row([key_id], |r| r.get(0))
        .optional()?;
    Ok((pending, dropped.unwrap_or(0)))
}

/// Pending events and dropped events over every key, for the operator's statistics.
pub fn outbox_totals(conn: &Connection) -> rusqlite::Result<(i64, i64)> {
    let pending: i64 = conn
        .prepare_cached("SELECT count(*) FROM webhook_events WHERE status = 'pending'")?
        .query_row([], |r| r.get(0))?;
    let dropped: i64 = conn
        .prepare_cached("SELECT coalesce(sum(webhook_dropped), 0) FROM api_keys")?
        .query_row([], |r| r.get(0))?;
    Ok((pending, dropped))
}

/// Deletes every event of a key; for the key's deletion (in the same transaction).
pub fn delete_key_events(tx: &Transaction<'_>, key_id: &str) -> rusqlite::Result<usize> {
    tx.prepare_cached("DELETE FROM webhook_events WHERE key_id = ?1")?.execute([key_id])
}

/// A new event as the writer stores it.
#[derive(Debug, Clone, Copy)]
pub struct NewEvent<'a> {
    pub event_id: &'a str,
    pub key_id: &'a str,
    pub body: &'a str,
    pub created_at: i64,
}

/// Stores new events as pending, due at once, given up `lifetime` microseconds after
/// their creation. Events of keys that no longer exist are skipped: a key deleted after
/// its events were pushed must not leave rows behind that nothing would ever read. An
/// event id already stored (the same batch written twice) is skipped too. Returns how
/// many were stored.
pub fn insert_events(
    tx: &Transaction<'_>,
    events: &[NewEvent<'_>],
    lifetime: i64,
) -> rusqlite::Result<usize> {
    let mut key_exists = tx.prepare_cached("SELECT 1 FROM api_keys WHERE key_id = ?1")?;
    let mut insert = tx.prepare_cached(
        "INSERT INTO webhook_events (event_id, key_id, body, created_at, next_attempt_at, deadline)
         VALUES (?1, ?2, ?3, ?4, ?4, ?5)",
    )?;
    // A batch holds the events of a handful of keys: one look-up per key, not per event.
    let mut known: HashMap<&str, bool> = HashMap::new();
    let mut stored = 0;
    for e in events {
        let exists = match known.get(e.key_id) {
            Some(&exists) => exists,
            None => {
                let exists = key_exists.exists([e.key_id])?;
                known.insert(e.key_id, exists);
                exists
            }
        };
        if exists {
            stored += insert.execute(params![
                e.event_id,
                e.key_id,
                e.body,
                e.created_at,
                e.created_at + lifetime
            ])?;
        }
    }
    Ok(stored)
}

/// Adds `n` to a key's count of dropped events (none if the key is gone).
pub fn add_dropped(tx: &Transaction<'_>, key_id: &str, n: i64) -> rusqlite::Result<()> {
    tx.prepare_cached("UPDATE api_keys SET webhook_dropped = webhook_dropped + ?2 WHERE key_id = ?1")?
        .execute(params![key_id, n])?;
    Ok(())
}

/// Keeps at most `max` pending events of a key: the oldest beyond are deleted and counted
/// into the key's `webhook_dropped`. Returns how many were dropped. A key with few
/// pending events costs one short index walk.
pub fn trim_pending(tx: &Transaction<'_>, key_id: &str, max: i64) -> rusqlite::Result<usize> {
    // The newest pending event that must go: the (max + 1)th from the newest.
    let cut: Option<i64> = tx
        .prepare_cached(
            "SELECT id FROM webhook_events WHERE status = 'pending' AND key_id = ?1
             ORDER BY id DESC LIMIT 1 OFFSET ?2",
        )?
        .query_row(params![key_id, max], |r| r.get(0))
        .optional()?;
    let Some(cut) = cut else {
        return Ok(0);
    };
    let dropped = tx
        .prepare_cached("DELETE FROM webhook_events WHERE status = 'pending' AND key_id = ?1 AND id <= ?2")?
        .execute(params![key_id, cut])?;
    add_dropped(tx, key_id, dropped as i64)?;
    Ok(dropped)
}

/// The oldest pending event of a key with pending events, and where to send it.
#[derive(Debug, Clone, PartialEq)]
pub struct Head {
    pub key_id: String,
    pub id: i64,
    pub next_attempt_at: i64,
    /// False when the key row is gone (its events outlived its deletion).
    pub key_exists: bool,
    pub webhook_url: Option<String>,
    pub webhook_nonce: Option<String>,
}

/// The head of every key's pending events, by key id, with the key's current receiver.
/// The distinct keys are found by skipping through the index (one seek per key), so the
/// cost follows the number of keys, not the number of pending events.
pub fn pending_heads(conn: &Connection) -> rusqlite::Result<Vec<Head>> {
    let mut stmt = conn.prepare_cached(
        "WITH RECURSIVE keys(key_id) AS (
             SELECT (SELECT min(key_id) FROM webhook_events WHERE status = 'pending')
             UNION ALL
             SELECT (SELECT min(key_id) FROM webhook_events WHERE status = 'pending' AND key_id > keys.key_id)
             FROM keys WHERE keys.key_id IS NOT NULL
         )
         SELECT e.key_id, e.id, e.next_attempt_at, a.key_id IS NOT NULL, a.webhook_url, a.webhook_nonce
         FROM keys
         JOIN webhook_events e
             ON e.id = (SELECT min(id) FROM webhook_events WHERE status = 'pending' AND key_id = keys.key_id)
         LEFT JOIN api_keys a ON a.key_id = e.key_id
         WHERE keys.key_id IS NOT NULL",
    )?;
    let rows = stmt.query_map([], |r| {
        Ok(Head {
            key_id: r.get(0)?,
            id: r.get(1)?,
            next_attempt_at: r.get(2)?,
            key_exists: r.get(3)?,
            webhook_url: r.get(4)?,
            webhook_nonce: r.get(5)?,
        })
    })?;
    rows.collect()
}

/// A pending event as the deliverer sends it.
#[derive(Debug, Clone, PartialEq)]
pub struct PendingEvent {
    pub id: i64,
    pub event_id: String,
    pub body: String,
    pub attempts: i64,
    pub next_attempt_at: i64,
    pub deadline: i64,
}

/// A key's oldest pending events in id order, at most `limit`.
pub fn pending_batch(conn: &Connection, key_id: &str, limit: i64) -> rusqlite::Result<Vec<PendingEvent>> {
    let mut stmt = conn.prepare_cached(
        "SELECT id, event_id, body, attempts, next_attempt_at, deadline FROM webhook_events
         WHERE status = 'pending' AND key_id = ?1 ORDER BY id LIMIT ?2",
    )?;
    let rows = stmt.query_map(params![key_id, limit], |r| {
        Ok(PendingEvent {
            id: r.get(0)?,
            event_id: r.get(1)?,
            body: r.get(2)?,
            attempts: r.get(3)?,
            next_attempt_at: r.get(4)?,
            deadline: r.get(5)?,
        })
    })?;
    rows.collect()
}

/// The state of an event after one attempt.
#[derive(Debug, Clone, PartialEq)]
pub struct AttemptResult {
    pub id: i64,
    /// `pending`, `delivered` or `failed`.
    pub status: &'static str,
    pub attempts: i64,
    pub next_attempt_at: i64,
    pub last_attempt_at: i64,
    pub response_code: Option<i64>,
    pub error: Option<String>,
    pub delivered_at: Option<i64>,
}

/// Stores the results of a batch of attempts of a key's events. An event that is no
/// longer pending (deleted with its key, moved by hand) is left as it is; one that the
/// per-key bound trimmed while it was in flight but that arrived is taken back out of the
/// key's dropped count, so that `dropped` counts only events the receiver never got.
pub fn record_attempts(
    tx: &Transaction<'_>,
    key_id: &str,
    results: &[AttemptResult],
) -> rusqlite::Result<()> {
    let mut update = tx.prepare_cached(
        "UPDATE webhook_events SET status = ?2, attempts = ?3, next_attempt_at = ?4, last_attempt_at = ?5,
                response_code = ?6, error = ?7, delivered_at = ?8
         WHERE id = ?1 AND status = 'pending'",
    )?;
    let mut exists = tx.prepare_cached("SELECT 1 FROM webhook_events WHERE id = ?1")?;
    let mut arrived_after_trim = 0;
    for r in results {
        let changed = update.execute(params![
            r.id,
            r.status,
            r.attempts,
            r.next_attempt_at,
            r.last_attempt_at,
            r.response_code,
            r.error,
            r.delivered_at
        ])?;
        if changed == 0 && r.status == "delivered" && !exists.exists([r.id])? {
            arrived_after_trim += 1;
        }
    }
    if arrived_after_trim > 0 {
        tx.prepare_cached(
            "UPDATE api_keys SET webhook_dropped = max(0, webhook_dropped - ?2) WHERE key_id = ?1",
        )?
        .execute(params![key_id, arrived_after_trim])?;
    }
    Ok(())
}

/// Gives up every pending event of a key with `error` (its receiver was removed).
/// Returns how many.
pub fn fail_pending(tx: &Transaction<'_>, key_id: &str, error: &str) -> rusqlite::Result<usize> {
    tx.prepare_cached(
        "UPDATE webhook_events SET status = 'failed', error = ?2 WHERE status = 'pending' AND key_id = ?1",
    )?
    .execute(params![key_id, error])
}

/// What pruning keeps: delivered events younger than `delivered_before`, failed ones whose
/// last attempt (or creation) is younger than `failed_before`, and at most `keep_finished`
/// finished events per key. Pending events are never pruned.
#[derive(Debug, Clone, Copy)]
pub struct Retention {
    pub delivered_before: i64,
    pub failed_before: i64,
    pub keep_finished: i64,
}

/// Deletes at most about `limit` events that `retention` does not keep, and the events of
/// keys that no longer exist. Returns how many; a caller with a large backlog calls it
/// again in a new transaction while it returns `limit` or more, so that no transaction
/// holds the write lock for long.
pub fn prune(tx: &Transaction<'_>, retention: Retention, limit: i64) -> rusqlite::Result<usize> {
    let mut deleted = tx
        .prepare_cached(
            "DELETE FROM webhook_events WHERE id IN (
                 SELECT id FROM webhook_events WHERE status = 'delivered' AND delivered_at < ?1 LIMIT ?2)",
        )?
        .execute(params![retention.delivered_before, limit])?;
    deleted += tx
        .prepare_cached(
            "DELETE FROM webhook_events WHERE id IN (
                 SELECT id FROM webhook_events
                 WHERE status = 'failed' AND coalesce(last_attempt_at, created_at) < ?1 LIMIT ?2)",
        )?
        .execute(params![retention.failed_before, limit])?;
    let keys: Vec<(String, bool)> = tx
        .prepare_cached(
            "WITH RECURSIVE keys(key_id) AS (
                 SELECT (SELECT min(key_id) FROM webhook_events)
                 UNION ALL
                 SELECT (SELECT min(key_id) FROM webhook_events WHERE key_id > keys.key_id)
                 FROM keys WHERE keys.key_id IS NOT NULL
             )
             SELECT keys.key_id, EXISTS (SELECT 1 FROM api_keys a WHERE a.key_id = keys.key_id)
             FROM keys WHERE keys.key_id IS NOT NULL",
        )?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<rusqlite::Result<_>>()?;
    let mut beyond = tx.prepare_cached(
        "DELETE FROM webhook_events WHERE id IN (
             SELECT id FROM webhook_events WHERE key_id = ?1 AND status != 'pending' AND id < (
                 SELECT id FROM webhook_events WHERE key_id = ?1 AND status != 'pending'
                 ORDER BY id DESC LIMIT 1 OFFSET ?2)
             LIMIT ?3)",
    )?;
    let mut orphans = tx.prepare_cached(
        "DELETE FROM webhook_events WHERE id IN (SELECT id FROM webhook_events WHERE key_id = ?1 LIMIT ?2)",
    )?;
    for (key_id, exists) in keys {
        if deleted as i64 >= limit {
            break;
        }
        deleted += if exists {
            beyond.execute(params![key_id, retention.keep_finished - 1, limit])?
        } else {
            orphans.execute(params![key_id, limit])?
        };
    }
    Ok(deleted)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::{Db, temp_dir, write_tx};

    /// Every query of the engine walks an index; none scans the table or sorts.
    #[test]
    fn queries_use_the_indexes() {
        let dir = temp_dir("webhooks-plans");
        let db = Db::open(&dir).unwrap();
        let conn = db.conn().unwrap();
        let plan = |sql: &str| -> String {
            let mut stmt = conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
            let rows = stmt.query_map([], |r| r.get::<_, String>(3)).unwrap();
            rows.map(|r| r.unwrap()).collect::<Vec<_>>().join("; ")
        };
        for sql in [
            "SELECT id FROM webhook_events WHERE status = 'pending' AND key_id = 'k' ORDER BY id DESC LIMIT 1 OFFSET 5",
            "SELECT id FROM webhook_events WHERE status = 'pending' AND key_id = 'k' ORDER BY id LIMIT 5",
            "SELECT id FROM webhook_events WHERE key_id = 'k' ORDER BY id DESC LIMIT 5",
            "SELECT min(key_id) FROM webhook_events WHERE status = 'pending' AND key_id > 'k'",
            "SELECT min(id) FROM webhook_events WHERE status = 'pending' AND key_id = 'k'",
            "SELECT min(key_id) FROM webhook_events WHERE key_id > 'k'",
        ] {
            let p = plan(sql);
            assert!(p.contains("USING") && p.contains("INDEX"), "{sql}: {p}");
            assert!(!p.contains("TEMP B-TREE"), "{sql}: {p}");
        }
    }

    /// An event trimmed by the per-key bound while it was in flight, and that arrived, is
    /// not counted as dropped: `dropped` counts only what the receiver never got.
    #[test]
    fn an_event_trimmed_in_flight_that_arrived_is_not_dropped() {
        let dir = temp_dir("webhooks-trim-in-flight");
        let db = Db::open(&dir).unwrap();
        let mut conn = db.conn().unwrap();
        conn.execute_batch(
            "INSERT INTO api_keys (key_id, name, key_hash, key_prefix, created_by, created_at, updated_at)
             VALUES ('k', 'k', x'01', 'abk_', 'admin', 0, 0);",
        )
        .unwrap();
        let events: Vec<NewEvent<'_>> = ["e1", "e2"]
            .iter()
            .map(|id| NewEvent { event_id: id, key_id: "k", body: "{}", created_at: 1 })
            .collect();
        write_tx(&mut conn, |tx| insert_events(tx, &events, 100)).unwrap();
        let in_flight = pending_batch(&conn, "k", 10).unwrap();
        assert_eq!(write_tx(&mut conn, |tx| trim_pending(tx, "k", 0)).unwrap(), 2);
        assert_eq!(outbox_counts(&conn, "k").unwrap(), (0, 2));
        let arrived = AttemptResult {
            id: in_flight[0].id,
            status: "delivered",
            attempts: 1,
            next_attempt_at: 2,
            last_attempt_at: 2,
            response_code: Some(200),
            error: None,
            delivered_at: Some(2),
        };
        write_tx(&mut conn, |tx| record_attempts(tx, "k", &[arrived])).unwrap();
        assert_eq!(outbox_counts(&conn, "k").unwrap(), (0, 1), "one arrived, one never did");
    }

    #[test]
    fn retry_delivery_of_an_unknown_event_is_none() {
        let dir = temp_dir("webhooks-retry-none");
        let db = Db::open(&dir).unwrap();
        let mut conn = db.conn().unwrap();
        let r = write_tx(&mut conn, |tx| retry_delivery(tx, "k", 1, 0)).unwrap();
        assert_eq!(r, None);
        assert_eq!(outbox_counts(&conn, "k").unwrap(), (0, 0));
    }

    /// Pruning deletes what retention does not keep and the events of deleted keys, a
    /// chunk at a time, and never a pending event.
    #[test]
    fn prune_keeps_pending_recent_and_the_newest_finished() {
        let dir = temp_dir("webhooks-prune");
        let db = Db::open(&dir).unwrap();
        let mut conn = db.conn().unwrap();
        conn.execute_batch(
            "INSERT INTO api_keys (key_id, name, key_hash, key_prefix, created_by, created_at, updated_at)
             VALUES ('a', 'a', x'01', 'abk_', 'admin', 0, 0), ('b', 'b', x'02', 'abk_', 'admin', 0, 0);",
        )
        .unwrap();
        // (event, key, status, created_at, last_attempt_at, delivered_at)
        type Row<'a> = (&'a str, &'a str, &'a str, i64, Option<i64>, Option<i64>);
        let rows: &[Row<'_>] = &[
            ("old_delivered", "a", "delivered", 10, Some(10), Some(10)),
            ("old_failed", "a", "failed", 10, Some(20), None),
            ("old_pending", "a", "pending", 10, Some(20), None),
            ("a1", "a", "delivered", 100, Some(100), Some(100)),
            ("a2", "a", "failed", 100, Some(100), None),
            ("a3", "a", "pending", 100, None, None),
            ("a4", "a", "delivered", 100, Some(100), Some(100)),
            ("a5", "a", "failed", 100, None, None),
            ("b1", "b", "delivered", 100, Some(100), Some(100)),
            ("orphan1", "gone", "pending", 100, None, None),
            ("orphan2", "gone", "delivered", 100, Some(100), Some(100)),
        ];
        for (event_id, key_id, status, created, last, delivered) in rows {
            conn.execute(
                "INSERT INTO webhook_events (event_id, key_id, body, created_at, status, next_attempt_at, deadline,
                                             last_attempt_at, delivered_at)
                 VALUES (?1, ?2, '{}', ?3, ?4, ?3, ?3, ?5, ?6)",
                params![event_id, key_id, created, status, last, delivered],
            )
            .unwrap();
        }
        let retention = Retention { delivered_before: 50, failed_before: 50, keep_finished: 2 };
        let mut rounds = Vec::new();
        loop {
            let n = write_tx(&mut conn, |tx| prune(tx, retention, 2)).unwrap();
            rounds.push(n);
            if n < 2 {
                break;
            }
        }
        assert!(rounds.len() > 1, "chunked: {rounds:?}");
        let left: Vec<String> = conn
            .prepare("SELECT event_id FROM webhook_events ORDER BY id")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .map(|r| r.unwrap())
            .collect();
        assert_eq!(left, ["old_pending", "a3", "a4", "a5", "b1"]);
    }
}
