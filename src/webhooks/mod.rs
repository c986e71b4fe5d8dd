//! The webhook mirror (decision 16): placeholder of the engine's interface, replaced by the
//! real outbox (see /work/notes/webhooks-interface.md).
#![allow(dead_code)] // placeholder until the engine lands

use std::sync::Arc;

use crate::db::Db;
use crate::secrets::MacKey;

pub const DEFAULT_BACKOFF: [u64; 6] = [5, 30, 120, 600, 3600, 21600];

pub struct Event {
    pub event_id: String,
    pub key_id: String,
    pub created_at: i64,
    pub body: String,
}

pub fn new_event_id() -> String {
    format!("msg_{}", uuid::Uuid::new_v4().simple())
}

pub fn new_nonce() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

pub fn webhook_secret(mac: &MacKey, key_id: &str, nonce: &str) -> String {
    use base64::Engine;
    let bytes = mac.mac(&format!("webhook-secret:{key_id}:{nonce}"));
    format!("whsec_{}", base64::engine::general_purpose::STANDARD.encode(bytes))
}

pub struct Outbox {
    _db: Db,
    _mac: MacKey,
}

impl Outbox {
    pub fn new(db: Db, mac: MacKey, _backoff: Vec<std::time::Duration>) -> Outbox {
        Outbox { _db: db, _mac: mac }
    }
    pub fn start(self: &Arc<Self>) -> Result<(), String> {
        Ok(())
    }
    pub fn push(&self, _event: Event) {}
    pub fn flush(&self) {}
    pub fn stop(&self) {}
    pub fn wake(&self) {}
}
