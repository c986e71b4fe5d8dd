//! SQL of the webhook outbox: placeholder of the interface, replaced by the engine.
#![allow(dead_code)] // placeholder until the engine lands

use rusqlite::{Connection, Transaction};

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

pub fn deliveries(_conn: &Connection, _key_id: &str, _limit: i64) -> rusqlite::Result<Vec<Delivery>> {
    Ok(Vec::new())
}

pub fn retry_delivery(
    _tx: &Transaction<'_>,
    _key_id: &str,
    _id: i64,
    _now: i64,
) -> rusqlite::Result<Option<Delivery>> {
    Ok(None)
}

pub fn outbox_counts(_conn: &Connection, _key_id: &str) -> rusqlite::Result<(i64, i64)> {
    Ok((0, 0))
}
